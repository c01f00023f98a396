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
