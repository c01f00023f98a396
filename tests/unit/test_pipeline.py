"""Scheduling logic of the pipeline (no notebooks run here)."""

import pytest

from adapterscope import params, pipeline


def test_resolve_jobs():
    assert pipeline.resolve_jobs(3) == 3 and pipeline.resolve_jobs("1") == 1
    assert pipeline.resolve_jobs("auto") in (1, 2)
    for bad in (0, -1, "two", 1.5j):
        with pytest.raises(pipeline.PipelineError, match="positive integer or 'auto'"):
            pipeline.resolve_jobs(bad)


def test_independent_summaries_read_no_grid_and_keep_their_order():
    side = pipeline.independent_summaries()
    assert side == ["05_vlm", "05_regime_probing"]
    for nb in side:
        assert pipeline.SUMMARY_READS[nb] == []
        assert all(u in side[:side.index(nb)] for u in pipeline.SUMMARY_AFTER.get(nb, []))
    prof = params.load_profile(pipeline.paths.project_root() / "notebooks" / "profiles" / "smoke.yml")
    assert pipeline.summary_upstream("05_regime_probing", prof) == [("05_vlm", "grid")]
    assert pipeline.summary_upstream("05_vlm", prof) == []


def test_run_cell_and_summaries_reject_bad_names():
    with pytest.raises(pipeline.PipelineError, match="no index 99"):
        pipeline.run_cell("smoke", 99)
    with pytest.raises(pipeline.PipelineError, match="not a summary notebook"):
        pipeline.run_summaries("smoke", ["01_finetune"])


def test_parallel_runner_reports_failures_and_relays_lines(tmp_path, monkeypatch):
    """Every task runs even after one fails; the failure names the task and its log."""
    import subprocess
    import sys

    monkeypatch.setattr(pipeline.paths, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(pipeline.paths, "project_root", lambda: tmp_path)
    calls = []

    def fake_run(cmd, env, stdout, stderr, cwd):
        calls.append(cmd)
        ok = "good" in cmd
        stdout.write(f"[skip] x {cmd[-3]}\n" if ok else "Traceback: boom\n")
        stdout.flush()
        assert env["OMP_NUM_THREADS"] == "1"
        return subprocess.CompletedProcess(cmd, 0 if ok else 1)

    monkeypatch.setattr(pipeline.subprocess, "run", fake_run)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    lines = []
    with pytest.raises(pipeline.PipelineError, match="1 task\\(s\\) failed: b"):
        pipeline._run_parallel("smoke", [("a", ["good"]), ("b", ["bad"]), ("c", ["good"])], 2, False, lines.append)
    assert len(calls) == 3 and all(c[:3] == [sys.executable, "-m", "adapterscope.pipeline"] for c in calls)
    assert sum(line.startswith("[skip]") for line in lines) == 2
    assert any(line.startswith("[fail] b") and "boom" in line for line in lines)


def test_per_model_seed_mapping():
    g = {"models": ["a", "b"], "corpora": ["x"], "layer_controls": ["none"], "seeds": {"a": [0, 1], "b": [0]},
         "control": {"layer_control": "equal_step", "corpora": ["x"], "seeds": [0]}}
    main = pipeline.grid_cells({"grid": g}, "main")
    assert [(c["model"], c["seed"]) for c in main] == [("a", 0), ("a", 1), ("b", 0)]
    assert len(pipeline.grid_cells({"grid": g}, "control")) == 2
    sp = pipeline.summary_params("p", {"grid": g})
    assert sp["seeds"] == [0, 1] and sp["seeds_by_model"] == {"a": [0, 1], "b": [0]}
    assert pipeline.summary_params("p", {"grid": {**g, "seeds": [3]}})["seeds_by_model"] == {}
    with pytest.raises(pipeline.PipelineError, match="missing \\['b'\\], unknown \\['c'\\]"):
        pipeline.grid_cells({"grid": {**g, "seeds": {"a": [0], "c": [1]}}})
    with pytest.raises(pipeline.PipelineError, match="control needs its own seeds"):
        pipeline.grid_cells({"grid": {**g, "control": {"layer_control": "equal_step"}}})


def test_control_runs_for_a_subset_of_models():
    g = {"models": ["a", "b"], "corpora": ["x", "y"], "layer_controls": ["none"], "seeds": [0],
         "control": {"layer_control": "equal_step", "models": ["a"], "corpora": ["y"]}}
    ctl = pipeline.grid_cells({"grid": g}, "control")
    assert [(c["model"], c["corpus"], c["layer_control"], c["seed"]) for c in ctl] == [("a", "y", "equal_step", 0)]
    assert pipeline.summary_params("p", {"grid": g})["control_models"] == ["a"]
    g2 = {**g, "control": {"layer_control": "equal_step"}}
    assert pipeline.summary_params("p", {"grid": g2})["control_models"] == ["a", "b"]
    assert len(pipeline.grid_cells({"grid": g2}, "control")) == 4
    with pytest.raises(pipeline.PipelineError, match="not in grid.models"):
        pipeline.grid_cells({"grid": {**g, "control": {"layer_control": "equal_step", "models": ["c"]}}})


def test_findings_scope_narrows_a_seed_mapping():
    from adapterscope import findings

    prof = {"grid": {"models": ["a", "b"], "corpora": ["x"], "layer_controls": ["none"],
                     "seeds": {"a": [0, 1], "b": [0]}}}
    f = findings.Finding(id="t", hypothesis="c " * 8, notebook="08_decorrelation", key="k", tolerance=0.1,
                         scope={"models": ["b"]})
    g = findings.scoped_profile(f, prof)["grid"]
    assert g["models"] == ["b"] and g["seeds"] == {"b": [0]}
    f.scope = {"seeds": [1]}
    g = findings.scoped_profile(f, prof)["grid"]
    assert g["seeds"] == {"a": [1], "b": []}
    with pytest.raises(findings.FindingError, match="not in the profile's grid"):
        f.scope = {"seeds": [5]}
        findings.scoped_profile(f, prof)


def test_single_run_ids():
    """`pipeline run` outside a profile: cell notebooks are named by their parameters, summary notebooks write
    the run `grid` (the id their code uses), with their upstream runs."""
    rid, ups = pipeline.single_run("02_capture", {"model": "m", "corpus": "c", "layer_control": "none", "seed": 1})
    assert rid == "m__c__none__s1" and ups == [("01_finetune", rid)]
    assert pipeline.single_run("05_vlm", {"lm": "smollm2-135m"}) == ("grid", [])
    assert pipeline.single_run("05_regime_probing", {}) == ("grid", [("05_vlm", "grid")])
    assert pipeline.single_run("05_vlm", {}, "grid")[0] == "grid"
    # the notebook names its results: another id would run it and then find no results under that name
    with pytest.raises(pipeline.PipelineError, match="writes the run 'grid'"):
        pipeline.single_run("05_vlm", {}, "mine")
    with pytest.raises(pipeline.PipelineError, match="m__c__none__s1"):
        pipeline.single_run("02_capture", {"model": "m", "corpus": "c", "layer_control": "none", "seed": 1}, "x")
