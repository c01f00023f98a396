"""Results JSON + macros: provenance, LaTeX names, atomic writes."""

import json

import pytest

from adapterscope import paths, results


def test_tex_name_and_numbers():
    assert results.tex_name("08_divergence", "grid", "max_kl") == "ZeroEightDivergenceGridMaxKl"
    name = results.tex_name("01_finetune", "smollm2-135m__meditations__none__s0", "final_loss")
    assert name == "ZeroOneFinetuneSmollmTwoOneThreeFiveMMeditationsNoneSZeroFinalLoss"
    assert results.format_number(0.000123456) == "0.000123"
    assert results.format_number(3) == "3"
    assert results.tex_escape("a_b&c%") == r"a\_b\&c\%"


def test_run_writes_json_and_macros(project):
    run = results.Run("01_finetune", "m__c__none__s0", params={"steps": 3}, seed=0)
    f = project / "input.txt"
    f.write_text("hello")
    run.add_input("corpus", f)
    run.values["final_loss"] = 1.25
    mname = run.macro("final_loss", 1.25)
    out = run.write()
    rec = json.loads(out.read_text())
    assert rec["values"]["final_loss"] == 1.25
    prov = rec["provenance"]
    for k in ("git", "params", "inputs", "libraries", "device", "seed", "wall_time_s", "content_digest"):
        assert k in prov
    assert prov["inputs"]["corpus"] == results.sha256_file(f)
    assert prov["libraries"]["torch"]
    tex = (paths.macros_dir() / "01_finetune" / "m__c__none__s0.tex").read_text()
    assert f"\\newcommand{{\\{mname}}}{{1.25}}" in tex
    assert results.load("01_finetune", "m__c__none__s0")["values"] == rec["values"]
    with pytest.raises(FileNotFoundError):
        results.load("01_finetune", "nope")


def test_bad_run_id():
    with pytest.raises(ValueError, match="run_id"):
        results.Run("01_finetune", "a b/c", params={})


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with paths.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    d = tmp_path / "adir"
    with pytest.raises(RuntimeError):
        with paths.atomic_path(d) as tmp:
            tmp.mkdir()
            (tmp / "x").write_text("1")
            raise RuntimeError("boom")
    assert not d.exists()
    with paths.atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "x").write_text("2")
    assert (d / "x").read_text() == "2" and sorted(p.name for p in tmp_path.iterdir()) == ["adir", "out.json"]


def test_a_record_without_output_digests_vouches_for_no_artefact(tmp_path, monkeypatch):
    """An upstream artefact is read only against its run's recorded digest: a record lacking
    ``provenance.outputs`` (from before outputs were recorded) is refused, naming the run to redo."""
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    art = results.artefact_dir("01_finetune", "m__c__none__s0") / "adapter"
    art.mkdir(parents=True)
    (art / "weights.bin").write_bytes(b"weights")
    rp = results.Run("01_finetune", "m__c__none__s0", params={}, seed=0).write()
    rec = json.loads(rp.read_text())
    assert rec["provenance"]["outputs"] == {"adapter": results.sha256_tree(art)}
    down = results.Run("02_capture", "m__c__none__s0", params={}, seed=0)
    assert down.add_input("adapter", art) == rec["provenance"]["outputs"]["adapter"]  # a record with digests vouches
    del rec["provenance"]["outputs"]
    rp.write_text(json.dumps(rec))
    for path in (art, art / "weights.bin"):
        with pytest.raises(results.ResultsError, match=r"records no output digests.*redo 01_finetune run "
                                                       r"m__c__none__s0 \(`python -m adapterscope.pipeline run "
                                                       r"01_finetune --force`"):
            down.add_input("adapter", path)
        with pytest.raises(results.ResultsError, match="records no output digests"):
            results.check_artefact(path)
    results.check_artefact(art, exclude=("01_finetune", "m__c__none__s0"))  # the run's own artefacts are its own
