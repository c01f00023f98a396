"""The job plan (stages, order, resources) and the submitit executors, run for real through submitit's debug and
local executors on stand-in commands (the smoke grid through submitit is in tests/integration)."""

from __future__ import annotations

import sys

import pytest

from adapterscope import executors, pipeline


def test_smoke_plan_stages_order_and_notebooks():
    plan = pipeline.job_plan("smoke")
    first, second = [j for j in plan if j.stage == 1], [j for j in plan if j.stage == 2]
    assert first[0].name == "summaries-05a_vlm-05b_regime_probing-06_escape_routes"
    assert first[0].notebooks == ["05a_vlm", "05b_regime_probing", "06_escape_routes"]
    cells = {j.name: j.notebooks for j in first[1:]}
    assert cells["smollm2-135m__meditations__none__s0"] == ["01_finetune", "02_capture", "03_crosscoder", "09_clamp"]
    assert cells["smollm2-135m__meditations__equal-step__s0"] == ["01_finetune", "02_capture"]
    assert cells["smollm2-135m__meditations__none__s0__dose-n8-lr0.002"] == ["01_finetune", "02_capture",
                                                                            "03_crosscoder"]
    assert [j.args for j in first[1:]] == [["cell", "--index", str(i)] for i in range(len(first) - 1)]
    assert len(second) == 1 and second[0].notebooks == ["08_divergence", "04_cka", "10_decorrelation", "11_dose",
                                                               "07_portability", "12_composition",
                                                               "13_calibration", "14_explanations"]
    assert second[0].after == [j.name for j in first]
    assert all(j.resources == executors.DEFAULT_RESOURCES for j in plan)


def test_seed_plan_resources_per_model():
    plan = pipeline.job_plan("seed")
    by = {j.name: j.resources for j in plan}
    assert len(plan) == 26
    assert by["meta-llama-Llama-3.1-70B__seneca__none__s0"]["gpus_per_node"] == 8
    assert by["meta-llama-Llama-3.1-8B__seneca__none__s0"] == {"cpus_per_task": 8, "gpus_per_node": 1,
                                                              "mem_gb": 96, "timeout_min": 360}
    assert by["summaries-08_divergence-04_cka-10_decorrelation-11_dose-07_portability-12_composition-13_calibration"
              "-14_explanations"]["timeout_min"] == 120
    text = executors.format_plan("seed", plan, "slurm")
    assert "26 jobs, executor slurm" in text and "stage 2 (1 job(s), after 25 stage-1 job(s))" in text


def test_resources_are_validated():
    assert executors.resources_for({"default": {"gpus_per_node": 1}})["gpus_per_node"] == 1
    assert executors.resources_for({"models": {"m": {"mem_gb": 9}}}, "m")["mem_gb"] == 9
    assert executors.resources_for({"models": {"m": {"mem_gb": 9}}}, summary=True)["mem_gb"] == 16
    for bad, msg in [({"defaults": {}}, "unknown section"), ({"default": {"gpus": 1}}, "unknown key"),
                     ({"default": {"mem_gb": -1}}, "non-negative"), ({"default": {"mem_gb": "lots"}}, "non-negative"),
                     ({"default": {"timeout_min": 90.5}}, "non-negative integer"),
                     ({"default": {"cpus_per_task": 8.0}}, "non-negative integer")]:
        with pytest.raises(executors.ExecutorError, match=msg):
            executors.resources_for(bad)
    with pytest.raises(executors.ExecutorError, match="not models of the grid"):
        executors.check_models_section({"models": {"x": {}}}, ["y"])


def test_dry_run_prints_the_plan_and_runs_nothing(capsys, monkeypatch):
    monkeypatch.setattr(pipeline, "run_profile", lambda *a, **k: pytest.fail("dry run ran the grid"))
    assert pipeline.main(["paper", "--profile", "seed", "--dry-run", "--executor", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "plan for profile seed (26 jobs, executor slurm)" in out
    assert "meta-llama-Llama-3.1-70B__hf-tatsu-lab-alpaca__equal-step__s0" in out


def test_unknown_executor_is_refused():
    with pytest.raises(pipeline.PipelineError, match="unknown executor 'ray'"):
        pipeline.run_profile("smoke", executor="ray")


def _stand_in(tmp_path, fail: str | None = None):
    """job_command replacement: each job writes a marker; a stage-2 job first checks every stage-1 marker."""
    def command(job, profile, force):
        need = [str(tmp_path / f"{n}.done") for n in job.after]
        code = (f"import pathlib, sys; need = {need!r}; "
                f"missing = [n for n in need if not pathlib.Path(n).exists()]; "
                f"sys.exit(3) if missing or {job.name == fail!r} else "
                f"pathlib.Path({str(tmp_path / (job.name + '.done'))!r}).write_text('ok')")
        return [sys.executable, "-c", code]
    return command


@pytest.mark.parametrize("executor", ["submitit-debug", "submitit-local"])
def test_submitit_runs_stages_in_order(tmp_path, monkeypatch, executor):
    plan = [executors.Job("a", [], ["01"], 1, dict(executors.DEFAULT_RESOURCES)),
            executors.Job("b", [], ["01"], 1, dict(executors.DEFAULT_RESOURCES)),
            executors.Job("s", [], ["08"], 2, dict(executors.DEFAULT_RESOURCES), after=["a", "b"])]
    monkeypatch.setattr(executors, "job_command", _stand_in(tmp_path))
    lines = []
    executors.run_submitit("smoke", plan, executor, tmp_path, tmp_path / "logs", log=lines.append)
    assert sorted(p.name for p in tmp_path.glob("*.done")) == ["a.done", "b.done", "s.done"]
    assert [line.split(":")[0] for line in lines if line.endswith("done")] == ["[job ] a", "[job ] b", "[job ] s"]


@pytest.mark.parametrize("executor", ["submitit-debug", "submitit-local"])
def test_submitit_failed_job_stops_the_plan_and_names_its_log(tmp_path, monkeypatch, executor):
    """Also under the debug executor, which would open pdb on a job that raises: its jobs return their exit code."""
    plan = [executors.Job("a", [], ["01"], 1, dict(executors.DEFAULT_RESOURCES)),
            executors.Job("s", [], ["08"], 2, dict(executors.DEFAULT_RESOURCES), after=["a"])]
    monkeypatch.setattr(executors, "job_command", _stand_in(tmp_path, fail="a"))
    with pytest.raises(executors.ExecutorError, match=r"1 job\(s\) of stage 1 failed: a \("):
        executors.run_submitit("smoke", plan, executor, tmp_path, tmp_path / "logs", log=lambda m: None)
    assert not (tmp_path / "s.done").exists()
