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
    assert side == ["05a_vlm", "05b_regime_probing", "06_escape_routes"]
    for nb in side:
        assert pipeline.SUMMARY_READS[nb] == []
        assert all(u in side[:side.index(nb)] for u in pipeline.SUMMARY_AFTER.get(nb, []))
    prof = params.load_profile(pipeline.paths.project_root() / "notebooks" / "profiles" / "smoke.yml")
    assert pipeline.summary_upstream("05b_regime_probing", prof) == [("05a_vlm", "grid")]
    assert pipeline.summary_upstream("05a_vlm", prof) == []


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
    assert pipeline.summary_params("p", {"grid": {**g, "seeds": [3], "control": {**g["control"], "seeds": [3]}}}
                                   )["seeds_by_model"] == {}
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
    from adapterscope import findings, ledger

    prof = {"grid": {"models": ["a", "b"], "corpora": ["x"], "layer_controls": ["none"],
                     "seeds": {"a": [0, 1], "b": [0]}}}
    f = ledger.Finding(id="t", hypothesis="c " * 8, notebook="10_decorrelation", key="k", tolerance=0.1,
                       scope={"models": ["b"]})
    g = findings.scoped_profile(f, prof)["grid"]
    assert g["models"] == ["b"] and g["seeds"] == {"b": [0]}
    f.scope = {"seeds": [1]}
    g = findings.scoped_profile(f, prof)["grid"]
    assert g["seeds"] == {"a": [1], "b": []}
    with pytest.raises(ledger.FindingError, match="not in the profile's grid"):
        f.scope = {"seeds": [5]}
        findings.scoped_profile(f, prof)


def test_single_run_ids():
    """`pipeline run` outside a profile: cell notebooks are named by their parameters, summary notebooks write
    the run `grid` (the id their code uses), with their upstream runs."""
    rid, ups = pipeline.single_run("02_capture", {"model": "m", "corpus": "c", "layer_control": "none", "seed": 1})
    assert rid == "m__c__none__s1" and ups == [("01_finetune", rid)]
    assert pipeline.single_run("05a_vlm", {"lm": "smollm2-135m"}) == ("grid", [])
    assert pipeline.single_run("05b_regime_probing", {}) == ("grid", [("05a_vlm", "grid")])
    assert pipeline.single_run("05a_vlm", {}, "grid")[0] == "grid"
    # the notebook names its results: another id would run it and then find no results under that name
    with pytest.raises(pipeline.PipelineError, match="writes the run 'grid'"):
        pipeline.single_run("05a_vlm", {}, "mine")
    with pytest.raises(pipeline.PipelineError, match="m__c__none__s1"):
        pipeline.single_run("02_capture", {"model": "m", "corpus": "c", "layer_control": "none", "seed": 1}, "x")


def _dose_grid(**dose):
    return {"models": ["a", "b"], "corpora": ["x", "y"], "layer_controls": ["none"], "seeds": [0, 1],
            "control": {"layer_control": "equal_step", "models": ["a"], "corpora": ["x"], "seeds": [0]},
            "dose": {"models": ["a"], "corpora": ["x", "y"], "seeds": [0],
                     "levels": [{"steps": 50, "lr": 6.0e-4}, {"steps": 200, "lr": 2.0e-3}], **dose}}


def test_dose_cells_ids_overrides_and_notebooks():
    prof = {"grid": _dose_grid(),
            "notebooks": {"01_finetune": {"steps": 4, "eval_rows": 4}, "02_capture": {"seq_len": 8}}}
    main, dose = pipeline.grid_cells(prof, "main"), pipeline.grid_cells(prof, "dose")
    assert len(main) == 8 and len(dose) == 4
    assert pipeline.grid_cells(prof, "all") == main + pipeline.grid_cells(prof, "control") + dose
    ids = [pipeline.cell_id(c) for c in dose]
    assert ids == ["a__x__none__s0__dose-n50-lr0.0006", "a__x__none__s0__dose-n200-lr0.002",
                   "a__y__none__s0__dose-n50-lr0.0006", "a__y__none__s0__dose-n200-lr0.002"]
    assert pipeline.cell_id(main[0]) == "a__x__none__s0"  # the main grid's ids do not change
    per_nb = prof["notebooks"]
    c = dose[1]
    # the level wins over the profile's per-notebook steps; only 01_finetune gets it
    assert pipeline.cell_overrides(c, "01_finetune", per_nb) == {
        "model": "a", "corpus": "x", "layer_control": "none", "seed": 0, "dose_tag": "dose-n200-lr0.002",
        "steps": 200, "eval_rows": 4, "lr": 2e-3}
    assert pipeline.cell_overrides(c, "02_capture", per_nb) == {
        "model": "a", "corpus": "x", "layer_control": "none", "seed": 0, "dose_tag": "dose-n200-lr0.002", "seq_len": 8}
    assert pipeline.cell_overrides(main[0], "01_finetune", per_nb) == {**main[0], **per_nb["01_finetune"]}
    ctl = pipeline.grid_cells(prof, "control")[0]
    assert pipeline.cell_notebooks(c, main) == ["01_finetune", "02_capture", "03_crosscoder"]  # no 09_clamp
    assert pipeline.cell_notebooks(main[0], main) == list(pipeline.CELL_NOTEBOOKS)
    assert pipeline.cell_notebooks(ctl, main) == ["01_finetune", "02_capture"]
    for nb in pipeline.DOSE_NOTEBOOKS:  # every notebook a dose cell runs declares its tag
        assert "dose_tag" in params.parse_parameters_cell(pipeline.notebook_path(nb)), nb
    for nb in pipeline.CELL_NOTEBOOKS:
        declared = params.parse_parameters_cell(pipeline.notebook_path(nb))
        for cell in dose:
            if nb in pipeline.cell_notebooks(cell, main):
                params.validate(declared, pipeline.cell_overrides(cell, nb, per_nb), where=nb)


def test_dose_summary_reads_its_cells_and_the_main_cells_they_start_from():
    prof = {"grid": _dose_grid()}
    ups = pipeline.summary_upstream("11_dose", prof)
    rids = list(dict.fromkeys(r for _, r in ups))
    assert rids == ["a__x__none__s0", "a__y__none__s0", "a__x__none__s0__dose-n50-lr0.0006",
                    "a__x__none__s0__dose-n200-lr0.002", "a__y__none__s0__dose-n50-lr0.0006",
                    "a__y__none__s0__dose-n200-lr0.002"]
    assert {nb for nb, _ in ups} == {"01_finetune", "02_capture", "03_crosscoder"}
    # the other summary notebooks do not read (or wait for) the dose runs
    assert not any("dose" in r for _, r in pipeline.summary_upstream("10_decorrelation", prof))
    sp = pipeline.summary_params("p", prof)
    assert sp["dose_models"] == ["a"] and sp["dose_corpora"] == ["x", "y"] and sp["dose_seeds"] == [0]
    assert sp["dose_levels"] == prof["grid"]["dose"]["levels"]
    declared = params.parse_parameters_cell(pipeline.notebook_path("11_dose"))
    assert {k for k in sp if k.startswith("dose_")} <= set(declared)
    params.validate(declared, {k: v for k, v in sp.items() if k in declared}, where="11_dose")
    # a profile without a dose block: 11_dose reads nothing and gets empty dose lists
    bare = {"grid": {k: v for k, v in prof["grid"].items() if k != "dose"}}
    assert pipeline.grid_cells(bare, "dose") == [] and pipeline.summary_upstream("11_dose", bare) == []
    sp = pipeline.summary_params("p", bare)
    assert sp["dose_models"] == sp["dose_levels"] == [] and "11_dose" in pipeline.SUMMARY_NOTEBOOKS
    params.validate(declared, {k: v for k, v in sp.items() if k in declared}, where="11_dose")
    assert pipeline.SUMMARY_NOTEBOOKS.index("11_dose") == pipeline.SUMMARY_NOTEBOOKS.index("10_decorrelation") + 1


@pytest.mark.parametrize("dose, match", [
    ({"layer_control": "none"}, r"unknown key\(s\) 'layer_control'; grid.dose may have levels, models, corpora"),
    ({"levels": []}, "grid.dose needs levels"),
    ({"models": ["c"]}, r"grid.dose.models \['c'\] are not in grid.models"),
    ({"corpora": ["z"]}, r"grid.dose.corpora \['z'\] are not in grid.corpora"),
    ({"seeds": [7]}, r"grid.dose.seeds \[7\] are not seeds of a"),
    ({"levels": [{"stpes": 10}]}, "unknown parameter.*'stpes'.*did you mean 'steps'"),
    ({"levels": [{"steps": "10"}]}, "parameter 'steps' must be int"),
    ({"levels": [{"corpus": "x"}]}, "non-empty mapping of 01_finetune parameters other than"),
    ({"levels": [{}]}, "non-empty mapping"),
    ({"levels": [{"steps": 50, "lr": 2.0e-4}]}, "main grid's own 01_finetune setting"),
    ({"levels": [{"steps": 9}, {"steps": 9}]}, r"repeat \['dose-n9'\]"),
])
def test_dose_block_validation(dose, match):
    with pytest.raises(pipeline.PipelineError, match=match):
        pipeline.grid_cells({"grid": _dose_grid(**dose)})
    g = _dose_grid()
    with pytest.raises(pipeline.PipelineError, match="grid.dose needs its own seeds"):
        pipeline.grid_cells({"grid": {**g, "seeds": {"a": [0], "b": [0]}, "control": {"layer_control": "equal_step",
                             "seeds": [0]}, "dose": {"levels": [{"steps": 9}]}}})
    with pytest.raises(pipeline.PipelineError, match="layer_control 'none'"):
        pipeline.grid_cells({"grid": {**g, "layer_controls": ["equal_step"], "control": None}})


def test_a_level_equal_to_the_profiles_own_setting_is_refused():
    """The main grid's 01_finetune setting is the declared default overridden by the profile (smoke: 4 steps)."""
    g = _dose_grid(levels=[{"steps": 4}])
    with pytest.raises(pipeline.PipelineError, match="main grid's own"):
        pipeline.grid_cells({"grid": g, "notebooks": {"01_finetune": {"steps": 4, "lr": 2.0e-4}}})
    assert len(pipeline.grid_cells({"grid": g}, "dose")) == 2  # 4 steps is a dose level when the main grid has 50


def test_dose_cells_in_findings_plans_and_single_runs():
    from adapterscope import findings, ledger

    prof = {"grid": _dose_grid(), "notebooks": {"01_finetune": {"steps": 4}}, "_name": "p"}
    f = ledger.Finding(id="t", hypothesis="h", notebook="11_dose", key="findings.rho_dose_kl", tolerance=0.1,
                       scope={"corpora": ["y"]})
    sp = findings.scoped_profile(f, prof)
    assert sp["grid"]["dose"]["corpora"] == ["y"] and "control" not in sp["grid"]
    steps = findings.plan(f, sp)
    assert [(nb, rid) for nb, rid, _ in steps] == [
        *[(nb, rid) for rid in ("a__y__none__s0", "a__y__none__s0__dose-n50-lr0.0006",
                                "a__y__none__s0__dose-n200-lr0.002")
          for nb in ("01_finetune", "02_capture", "03_crosscoder")], ("11_dose", "grid")]
    assert steps[3][2]["steps"] == 50 and steps[3][2]["dose_tag"] == "dose-n50-lr0.0006"
    assert steps[0][2]["steps"] == 4 and "dose_tag" not in steps[0][2]
    assert steps[-1][2]["dose_corpora"] == ["y"]
    f8 = ledger.Finding(id="t8", hypothesis="h", notebook="10_decorrelation", key="k", tolerance=0.1)
    sp8 = findings.scoped_profile(f8, prof)
    assert "dose" not in sp8["grid"] and not any("dose" in rid for _, rid, _ in findings.plan(f8, sp8))
    fc = ledger.Finding(id="tc", hypothesis="h", notebook="03_crosscoder", key="k", tolerance=0.1,
                        run_id="a__x__none__s0__dose-n200-lr0.002")
    plan = findings.plan(fc, findings.scoped_profile(fc, prof))
    assert [nb for nb, _, _ in plan] == ["01_finetune", "02_capture", "03_crosscoder"] and plan[0][2]["lr"] == 2e-3
    rid, ups = pipeline.single_run("02_capture", {"model": "m", "corpus": "c", "layer_control": "none", "seed": 0,
                                                  "dose_tag": "dose-n8"})
    assert rid == "m__c__none__s0__dose-n8" and ups == [("01_finetune", rid)]


def test_parameter_overrides_read_standard_float_notation():
    kv = pipeline._parse_kv(["lr=1e-3", "scale=2E5", "xs=[1e-3, 2, .5e-2]", "name=abc", "n=3", "f=0.5"])
    assert kv == {"lr": 1e-3, "scale": 2e5, "xs": [1e-3, 2, 5e-3], "name": "abc", "n": 3, "f": 0.5}
    assert isinstance(kv["n"], int) and isinstance(kv["lr"], float)
    with pytest.raises(pipeline.PipelineError, match="must look like name=value"):
        pipeline._parse_kv(["lr"])
    with pytest.raises(pipeline.PipelineError, match="is not a literal"):
        pipeline._parse_kv(["xs=[1, 2"])


def test_preflight_refuses_a_cuda_device_that_is_not_there(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(pipeline.PipelineError, match="device=cuda: no CUDA device on this machine; use device=cpu"):
        pipeline.preflight({"device": "cuda", "model": "smollm2-135m"})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(pipeline.PipelineError, match="has 1 CUDA device"):
        pipeline.preflight({"device": "cuda:3"})
    pipeline.preflight({"device": "cuda:0"})
    pipeline.preflight({"device": "cpu"})


def _port_grid(**port):
    return {"models": ["a", "b"], "corpora": ["x", "y"], "layer_controls": ["none"], "seeds": [0, 1],
            "portability": {"pairs": [["a", "c"]], **port}}


def test_portability_block_cells_params_and_findings_plan():
    from adapterscope import findings, ledger

    prof = {"grid": _port_grid(corpora=["y"]), "_name": "p"}
    assert [pipeline.cell_id(c) for c in pipeline.summary_cells("07_portability", prof)] == ["a__y__none__s0"]
    assert pipeline.summary_upstream("07_portability", prof) == [("01_finetune", "a__y__none__s0")]
    sp = pipeline.summary_params("p", prof)
    assert sp["port_pairs"] == [["a", "c"]] and sp["port_corpora"] == ["y"] and sp["port_seeds"] == [0]
    declared = params.parse_parameters_cell(pipeline.notebook_path("07_portability"))
    assert {k for k in sp if k.startswith("port_")} <= set(declared)
    f = ledger.Finding(id="t", hypothesis="h", notebook="07_portability", key="findings.recovery_distilled",
                       tolerance=0.1)
    assert [(nb, rid) for nb, rid, _ in findings.plan(f, findings.scoped_profile(f, prof))] == [
        ("01_finetune", "a__y__none__s0"), ("07_portability", "grid")]
    other = ledger.Finding(id="o", hypothesis="h", notebook="10_decorrelation", key="k", tolerance=0.1,
                           scope={"corpora": ["x"]})
    assert "portability" not in findings.scoped_profile(other, prof)["grid"]  # a scope never trips its check
    bare = {"grid": {k: v for k, v in prof["grid"].items() if k != "portability"}}
    assert pipeline.summary_cells("07_portability", bare) == [] and pipeline.summary_params("p", bare)["port_pairs"] == []
    # a target that is in the grid: its own adapter of the case's corpus and seed is read too (the reused ceiling)
    both = {"grid": _port_grid(pairs=[["a", "b"]], corpora=["y"]), "_name": "p"}
    assert pipeline.summary_upstream("07_portability", both) == [("01_finetune", "a__y__none__s0"),
                                                                 ("01_finetune", "b__y__none__s0")]


@pytest.mark.parametrize("port, match", [
    ({"pairs": []}, "grid.portability needs pairs"),
    ({"target": "c"}, "unknown key\\(s\\) 'target'; grid.portability may have pairs, corpora and seeds"),
    ({"pairs": [["a", "a"]]}, "two different models"),
    ({"pairs": [["a"]]}, r"\['a'\] is not a \[source, target\] pair"),
    ({"pairs": [["c", "a"]]}, r"sources \['c'\] are not in grid.models"),
    ({"corpora": ["z"]}, r"grid.portability.corpora \['z'\] are not in grid.corpora"),
    ({"seeds": [7]}, r"grid.portability.seeds \[7\] are not seeds of a"),
])
def test_portability_block_validation(port, match):
    with pytest.raises(pipeline.PipelineError, match=match):
        pipeline.grid_cells({"grid": _port_grid(**port)})


def test_calibration_block_cells_params_and_validation():
    g = {"models": ["a", "b"], "corpora": ["x", "y"], "layer_controls": ["none"], "seeds": [0, 1, 2],
         "calibration": {"models": ["b"], "corpora": ["y"]}}
    prof = {"grid": g}
    assert [pipeline.cell_id(c) for c in pipeline.summary_cells("13_calibration", prof)] == [
        "b__y__none__s0", "b__y__none__s1"]  # the first two seeds by default
    sp = pipeline.summary_params("p", prof)
    assert (sp["cal_models"], sp["cal_corpora"], sp["cal_seeds"]) == (["b"], ["y"], [0, 1])
    declared = params.parse_parameters_cell(pipeline.notebook_path("13_calibration"))
    assert {k for k in sp if k.startswith("cal_")} <= set(declared)
    assert pipeline.summary_cells("13_calibration", {"grid": {**g, "calibration": None}}) == []
    for bad, match in [({"models": ["c"]}, r"grid.calibration.models \['c'\]"),
                       ({"seeds": [0, 1, 2]}, "one or two seeds"), ({"seeds": [5]}, "not seeds of"),
                       ({"depth": 1}, "may have models, corpora and seeds")]:
        with pytest.raises(pipeline.PipelineError, match=match):
            pipeline.grid_cells({"grid": {**g, "calibration": bad}})


def test_composition_block_cells_params_and_validation():
    g = {"models": ["a", "b"], "corpora": ["x", "y", "z"], "layer_controls": ["none"], "seeds": [0, 1],
         "composition": {"models": ["b"]}}
    prof = {"grid": g}
    assert [pipeline.cell_id(c) for c in pipeline.summary_cells("12_composition", prof)] == [
        "b__x__none__s0", "b__y__none__s0", "b__z__none__s0"]
    sp = pipeline.summary_params("p", prof)
    assert sp["comp_models"] == ["b"] and sp["comp_corpora"] == ["x", "y", "z"] and sp["comp_seeds"] == [0]
    declared = params.parse_parameters_cell(pipeline.notebook_path("12_composition"))
    assert {k for k in sp if k.startswith("comp_")} <= set(declared)
    for bad, match in [({"models": ["c"]}, r"grid.composition.models \['c'\]"),
                       ({"corpora": ["x"]}, "at least two corpora"), ({"seeds": [5]}, "not seeds of"),
                       ({"levels": 1}, "may have models, corpora and seeds")]:
        with pytest.raises(pipeline.PipelineError, match=match):
            pipeline.grid_cells({"grid": {**g, "composition": bad}})



def _grid(**over):
    """A valid grid with every block; ``over`` replaces keys (None drops one)."""
    g = {"models": ["a", "b"], "corpora": ["x", "y"], "layer_controls": ["none"], "seeds": [0, 1],
         "control": {"layer_control": "equal_step", "corpora": ["x"]},
         "dose": {"models": ["a"], "levels": [{"steps": 9}]},
         "portability": {"pairs": [["a", "c"]]}, "composition": {"models": ["b"]}, "calibration": {"corpora": ["y"]}}
    g.update(over)
    return {"grid": {k: v for k, v in g.items() if v is not None}}


def test_check_grid_normalises_every_block():
    g = pipeline.check_grid(_grid())
    assert g["models"] == ["a", "b"] and g["seeds"] == {"a": [0, 1], "b": [0, 1]}
    assert g["control"] == {"layer_control": "equal_step", "models": ["a", "b"], "corpora": ["x"], "seeds": None}
    assert g["dose"] == {"levels": [{"steps": 9}], "models": ["a"], "corpora": ["x", "y"], "seeds": None,
                         "tags": ["dose-n9"]}
    assert g["portability"] == {"pairs": [["a", "c"]], "corpora": ["x", "y"], "seeds": [0]}
    assert g["composition"] == {"models": ["b"], "corpora": ["x", "y"], "seeds": [0]}
    assert g["calibration"] == {"models": ["a"], "corpora": ["y"], "seeds": [0, 1]}
    bare = pipeline.check_grid(_grid(control=None, dose={}, portability=None, composition=None, calibration=None))
    assert all(bare[k] is None for k in pipeline.GRID_BLOCKS)
    assert pipeline.MAIN_LAYER_CONTROL == "none" and issubclass(pipeline.ProfileError, pipeline.PipelineError)


# One entry per mistake: the profile (as _grid overrides, or a whole profile) and the message, which names the fix.
PROFILE_MISTAKES = [
    ({"whole": {"description": "no grid"}}, r"the profile needs a grid mapping with models, corpora, layer_controls "
                                            r"and seeds, got None: add `grid:`"),
    ({"seeds": None}, r"profile grid lacks \['seeds'\]: add them"),
    ({"portabilty": {"pairs": [["a", "c"]]}}, r"unknown key\(s\) 'portabilty' \(did you mean 'portability'\?\); "
                                              r"allowed: \['models'"),
    ({"models": "a"}, r"grid.models must be a non-empty list of names, got 'a': write it as \[a, b\]"),
    ({"corpora": []}, r"grid.corpora must be a non-empty list of names, got \[\]"),
    ({"layer_controls": ["none", "none"]}, r"grid.layer_controls repeats \['none'\]: list each once"),
    ({"seeds": ["0"]}, r"grid.seeds must be a non-empty list of integer seeds, got \['0'\]: write it as \[0, 1\]"),
    ({"seeds": {"a": [0], "c": [1]}, "control": {"layer_control": "equal_step", "seeds": [0]}, "dose": None},
     r"missing \['b'\], unknown \['c'\]: give each model of grid.models its list of seeds"),
    ({"seeds": {"a": [], "b": []}, "control": None, "dose": None}, "gives no model a seed: list at least one"),
    ({"control": "equal_step"}, r"grid.control \(the depth-profile control runs\) must be a mapping with "
                                r"layer_control, models, corpora and seeds, got 'equal_step'"),
    ({"dose": {"level": [{"steps": 9}]}}, r"grid.dose: unknown key\(s\) 'level' \(did you mean 'levels'\?\); "
                                          "grid.dose may have levels, models, corpora and seeds"),
    ({"control": {"models": ["a"]}}, r"grid.control needs layer_control \(the control runs' layer control, e.g. "
                                     r"equal_step\), got None: add it, or drop grid.control"),
    ({"control": {"layer_control": ["equal_step"]}}, r"grid.control needs layer_control .*got \['equal_step'\]"),
    ({"dose": {"levels": []}}, r"grid.dose needs levels \(a non-empty list of 01_finetune parameter mappings\)"),
    ({"layer_controls": ["equal_step"], "control": None, "dose": None, "portability": None, "composition": None},
     r"grid.calibration reads the main grid's layer_control 'none' cells: add 'none' to grid.layer_controls, or "
     r"drop grid.calibration"),
    ({"seeds": {"a": [0], "b": [0]}, "control": {"layer_control": "equal_step"}, "dose": None},
     "grid.control needs its own seeds when grid.seeds is a per-model mapping: add grid.control.seeds"),
    ({"composition": {"models": ["c"]}}, r"grid.composition.models \['c'\] are not in grid.models \['a', 'b'\]: "
                                         r"add them to grid.models, or drop them from grid.composition.models"),
    ({"control": {"layer_control": "equal_step", "corpora": ["q"]}}, r"grid.control.corpora \['q'\] are not in "
                                                                     r"grid.corpora"),
    ({"calibration": {"corpora": "x"}}, r"grid.calibration.corpora must be a list of names, got 'x'"),
    ({"portability": {"pairs": [["a", "c"]], "seeds": [7]}}, r"grid.portability.seeds \[7\] are not seeds of a in "
                                                             r"the grid \(\[0, 1\]\): use seeds grid.seeds gives a"),
    ({"control": {"layer_control": "equal_step", "seeds": [5]}}, r"grid.control.seeds \[5\] are not seeds of a"),
    ({"portability": {"pairs": "a c"}}, r"grid.portability needs pairs \(a non-empty list of \[source model, target "
                                        r"model\]\), got 'a c'"),
    ({"portability": {"pairs": [["a", "c", "b"]]}},
     r"grid.portability.pairs: \['a', 'c', 'b'\] is not a \[source, target\] pair: write each pair as \[source model, "
     r"target model\]"),
    ({"portability": {"pairs": [["b", "b"]]}}, r"\['b', 'b'\] transfers a model to itself: a pair names two "
                                               "different models"),
    ({"portability": {"pairs": [["c", "a"], ["c", "b"]]}}, r"grid.portability: sources \['c'\] are not in "
                                                           r"grid.models \['a', 'b'\] .*add them to grid.models, "
                                                           "or drop those pairs"),
    ({"composition": {"corpora": ["x"]}}, r"grid.composition needs at least two corpora to compose, got \['x'\]: "
                                          "list two or more"),
    ({"calibration": {"seeds": []}}, r"grid.calibration.seeds: one or two seeds .*got \[\]"),
    ({"dose": {"levels": {"steps": 9}}}, "grid.dose.levels must be a list of 01_finetune parameter mappings"),
    ({"dose": {"levels": [{"seed": 3}]}}, "each level is a non-empty mapping of 01_finetune parameters other than"),
    ({"dose": {"levels": [{"stpes": 9}]}}, "unknown parameter.*'stpes'.*did you mean 'steps'"),
    ({"dose": {"levels": [{"steps": 50}]}}, "is the main grid's own 01_finetune setting: .*drop the level"),
    ({"dose": {"levels": [{"steps": 9}, {"steps": 9}]}}, r"grid.dose.levels repeat \['dose-n9'\]: list each level "
                                                         "once"),
    ({"whole": {"grid": _grid()["grid"], "notebooks": {"01_finetune": {"stpes": 4}}}},
     "profile notebooks.01_finetune: .*'stpes'"),
]


@pytest.mark.parametrize("over, match", PROFILE_MISTAKES, ids=range(len(PROFILE_MISTAKES)))
def test_each_profile_mistake_has_one_error_naming_the_fix(over, match):
    prof = over["whole"] if "whole" in over else _grid(**over)
    with pytest.raises(pipeline.ProfileError, match=match):
        pipeline.check_grid(prof)
    with pytest.raises(pipeline.ProfileError, match=match):  # every reader goes through check_grid
        pipeline.grid_cells(prof)
    with pytest.raises(pipeline.ProfileError, match=match):
        pipeline.summary_params("p", prof)
    with pytest.raises(pipeline.ProfileError, match=match):
        pipeline.summary_cells("10_decorrelation", prof)


def test_a_profile_file_with_a_mistake_is_refused_on_load_and_by_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    (tmp_path / "notebooks" / "profiles").mkdir(parents=True)
    (tmp_path / "notebooks" / "profiles" / "bad.yml").write_text(
        "grid: {models: [a], corpora: [x, y], layer_controls: [none], seeds: [0], composition: {corpora: [x]}}\n")
    with pytest.raises(pipeline.ProfileError, match="grid.composition needs at least two corpora"):
        pipeline.load_profile("bad")
    assert pipeline.main(["grid", "--profile", "bad", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("error: grid.composition needs at least two corpora to compose")

def test_a_summary_notebook_run_alone_has_its_block_checked_the_same_way(monkeypatch):
    """`pipeline run 07_portability -p port_pairs=...` (no profile): the port_* / comp_* / cal_* parameters are
    checked as the grid block they stand for, before a kernel starts; so are the targets' names."""
    for nb in ("07_portability", "12_composition", "13_calibration"):  # the notebooks' own defaults pass
        pipeline.preflight(params.parse_parameters_cell(pipeline.notebook_path(nb)))
    port = params.parse_parameters_cell(pipeline.notebook_path("07_portability"))
    for bad, match in [({"port_pairs": [["smollm2-135m", "smollm2-135m"]]}, "transfers a model to itself"),
                       ({"port_pairs": [["qwen2.5-coder-0.5b", "gemma3-270m"]]}, "sources .* are not in grid.models"),
                       ({"port_corpora": ["seneca", "nope"]}, r"grid.portability.corpora \['nope'\]"),
                       ({"port_seeds": [4]}, r"grid.portability.seeds \[4\] are not seeds")]:
        with pytest.raises(pipeline.ProfileError, match=match + ".*this run's parameters read as a profile grid"):
            pipeline.preflight({**port, **bad})
    comp = params.parse_parameters_cell(pipeline.notebook_path("12_composition"))
    with pytest.raises(pipeline.ProfileError, match="at least two corpora"):
        pipeline.check_summary_params({**comp, "comp_corpora": ["seneca"]})
    cal = params.parse_parameters_cell(pipeline.notebook_path("13_calibration"))
    with pytest.raises(pipeline.ProfileError, match="one or two seeds"):
        pipeline.check_summary_params({**cal, "seeds": [0, 1, 2], "cal_seeds": [0, 1, 2]})
    pipeline.check_summary_params({**port, "port_pairs": []})  # no block: nothing to check
    monkeypatch.delenv("ADAPTERSCOPE_ALLOW_HUB", raising=False)
    with pytest.raises(pipeline.PipelineError, match="no-such-model"):
        pipeline.preflight({**port, "port_pairs": [["smollm2-135m", "no-such-model"]]})


@pytest.mark.parametrize("name", ["default", "full", "seed", "smoke"])
def test_every_profile_passes_the_check_and_plans(name):
    prof = pipeline.load_profile(name)
    g = pipeline.check_grid(prof)
    assert g["models"] == prof["grid"]["models"] and pipeline.grid_cells(prof, "main")
    assert pipeline.job_plan(name)
    for nb in pipeline.SUMMARY_NOTEBOOKS:  # what a profile hands its summary notebooks passes the same check
        declared = params.parse_parameters_cell(pipeline.notebook_path(nb))
        merged = params.validate(declared, {k: v for k, v in pipeline.summary_params(name, prof).items()
                                            if k in declared}, where=nb)
        pipeline.check_summary_params(merged)

def _plant_lib(root, files):
    """A project under ``root`` whose lib/adapterscope holds ``files`` (relative path -> source)."""
    for rel, src in files.items():
        p = root / "lib" / "adapterscope" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(src)
    return root / "lib" / "adapterscope"


def test_lib_closure_follows_sub_packages_relative_and_lazy_imports(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    lib = _plant_lib(tmp_path, {
        "__init__.py": '__version__ = "0"\n',
        "a.py": "def f():\n    from . import b\n",           # lazy, inside a function
        "b.py": "X = 1\n",
        "unused.py": "from . import b\n",
        "sub/__init__.py": "from .. import b\n",
        "sub/c.py": "from .d import Y\nfrom ..b import X\n",
        "sub/d.py": "Y = 2\n",
    })
    nb = ("import numpy\nfrom adapterscope import a, __version__\nfrom adapterscope.sub.c import Y\n"
          "import adapterscope\n")
    assert pipeline.lib_closure(nb) == [lib / "a.py", lib / "b.py", lib / "sub" / "__init__.py",
                                        lib / "sub" / "c.py", lib / "sub" / "d.py", lib / "__init__.py"]
    assert pipeline.lib_closure("from adapterscope import sub") == [lib / "b.py", lib / "sub" / "__init__.py",
                                                                    lib / "__init__.py"]
    assert pipeline.lib_closure("import json") == [lib / "__init__.py"]


@pytest.mark.parametrize("where, source, line, stmt", [
    ("notebook", "import os\nfrom adapterscope import d\n", 2, "from adapterscope import d"),  # d moved into sub/
    ("notebook", "import adapterscope.sub.gone\n", 1, "import adapterscope.sub.gone"),
    ("notebook", "from adapterscope.sub import nope\n", 1, "from adapterscope.sub import nope"),  # not in sub/
    ("notebook", "from adapterscope.a.b import X\n", 1, "from adapterscope.a.b import X"),  # a is no package
    ("a.py", "import os\n\ndef f():\n    from .renamed import g\n", 4, "from .renamed import g"),  # lazy
    ("sub/c.py", "from ...b import X\n", 1, "from ...b import X"),  # beyond the top-level package
])
def test_lib_closure_refuses_an_import_it_cannot_resolve_naming_it_and_its_file(tmp_path, monkeypatch, where,
                                                                                  source, line, stmt):
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    files = {"__init__.py": "", "a.py": "X = 0\n", "sub/__init__.py": "", "sub/c.py": "X = 1\n", "sub/d.py": ""}
    nb = "from adapterscope import a\nfrom adapterscope.sub import c\n"
    if where == "notebook":
        nb = source
    else:
        files[where] = source
    lib = _plant_lib(tmp_path, files)
    origin = tmp_path / "notebooks" / "99_planted.py"
    with pytest.raises(pipeline.PipelineError) as e:
        pipeline.lib_closure(nb, origin=origin)
    file = origin if where == "notebook" else lib / where
    assert str(e.value).startswith(f"{file}, line {line}: `{stmt}`: an adapterscope import that resolves to no file")


def test_lib_closure_of_every_notebook_resolves():
    from adapterscope import paths

    for nb in sorted((paths.project_root() / "notebooks").glob("[0-9]*.py")):
        closure = pipeline.lib_closure(nb.read_text(), origin=nb)
        assert closure[-1].name == "__init__.py" and all(f.is_file() for f in closure), nb.name
