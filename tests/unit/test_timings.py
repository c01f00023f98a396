"""adapterscope.timings: the build's time from the runs' provenance, their recorded phases and the pipeline's log."""

import json
import math

import pytest

from adapterscope import timings


def _rec(d, nb, rid, model, wall, values=None):
    (d / nb).mkdir(parents=True, exist_ok=True)
    (d / nb / f"{rid}.json").write_text(json.dumps({
        "provenance": {"run_id": rid, "wall_time_s": wall, "params": {"model": model} if model else {},
                       "device": "cpu (test)"}, "values": values or {}}))


def test_collect_and_summarise_sum_work_overhead_and_phases(tmp_path):
    res, log = tmp_path / "results", tmp_path / "timings.jsonl"
    _rec(res, "01_finetune", "a", "m1", 60)
    _rec(res, "01_finetune", "b", "m1", 120)
    _rec(res, "13_calibration", "grid", None, 300,
         {"studies": [{"phase_s": {"capture": 100, "fits": 150, "total": 250}},
                      {"phase_s": {"capture": 20}}]})
    log.write_text(json.dumps({"notebook": "01_finetune", "run_id": "a", "pipeline_s": 75}) + "\n"
                   + json.dumps({"notebook": "01_finetune", "run_id": "a", "pipeline_s": 70}) + "\n"  # latest wins
                   + '{"notebook": "13_calib')  # a line cut by a kill
    rows = timings.collect(res, log)
    assert [(r["notebook"], r["model"]) for r in rows] == [("01_finetune", "m1"), ("01_finetune", "m1"),
                                                           ("13_calibration", "all")]
    assert rows[0]["pipeline_s"] == 70 and math.isnan(rows[1]["pipeline_s"])
    s = timings.summarise(rows)
    ft = s["by_notebook_model"][0]
    assert (ft["runs"], ft["wall_s"], ft["overhead_s"], ft["logged"]) == (2, 180, 10, 1)
    assert {(p["notebook"], p["phase"]): p["s"] for p in s["phases"]} == {("13_calibration", "capture"): 120,
                                                                         ("13_calibration", "fits"): 150}
    assert s["total_wall_s"] == 480 and s["total_overhead_s"] == 10 and s["devices"] == ["cpu (test)"]
    text = timings.format_report(s)
    assert "13_calibration" in text and "capture" in text and "overhead" in text


def test_log_run_appends_one_line_per_executed_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    timings.log_run("02_capture", "x", 12.5, 10.0)
    timings.log_run("02_capture", "y", 3.0, None)
    lines = [json.loads(l) for l in timings.log_path().read_text().splitlines()]
    assert [l["run_id"] for l in lines] == ["x", "y"] and lines[0]["pipeline_s"] == pytest.approx(12.5)
