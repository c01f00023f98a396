"""Where the time of a build goes: ``make timings`` (``python -m adapterscope.timings``).

Built from what the runs themselves recorded, never from estimates:

* each results JSON's ``provenance.wall_time_s`` (from the notebook's ``results.Run`` to its write: the work,
  model loading included) and any ``phase_s`` mapping inside its values (wall seconds per phase, written by the
  notebooks that time their phases: ``07_portability``'s cases, ``13_calibration``'s studies);
* the pipeline's own log ``data/logs/timings.jsonl``: one line per executed run with the seconds from the
  pipeline's start of it to its end (``pipeline_s``), so ``pipeline_s - wall_time_s`` is what the run cost
  outside the notebook's timed part: kernel start-up, imports, papermill.

Rows are summed by notebook and by model; runs skipped by content digest keep the time of the run that made
them (the log says which runs this checkout executed).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

from . import paths

LOG = Path("logs") / "timings.jsonl"  # under data/


def log_path() -> Path:
    return paths.data_dir() / LOG


def log_run(notebook: str, run_id: str, pipeline_s: float, wall_time_s: float | None) -> None:
    """Append one executed run's timing to ``data/logs/timings.jsonl`` (an append, so a kill loses at most it)."""
    import time

    p = log_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a") as fh:
        fh.write(json.dumps({"notebook": notebook, "run_id": run_id, "pipeline_s": round(pipeline_s, 3),
                             "wall_time_s": wall_time_s, "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                             time.gmtime())}) + "\n")


def _phases(x: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every ``phase_s`` mapping anywhere inside a results value tree, as (phase, seconds); a phase named
    ``total`` is left out (it is the sum of the others)."""
    if isinstance(x, dict):
        for k, v in x.items():
            if k == "phase_s" and isinstance(v, dict):
                for name, s in v.items():
                    if name != "total" and isinstance(s, (int, float)) and math.isfinite(s):
                        yield name, float(s)
            else:
                yield from _phases(v)
    elif isinstance(x, list):
        for v in x:
            yield from _phases(v)


def collect(results_dir: Path | None = None, log_file: Path | None = None) -> list[dict[str, Any]]:
    """One row per results file: notebook, run id, model, wall seconds, the pipeline's seconds for the run
    (the latest logged execution of that run, NaN when this checkout's log has none) and its phases."""
    log: dict[tuple[str, str], float] = {}
    lf = log_file or log_path()
    if lf.is_file():
        for line in lf.read_text().splitlines():
            try:
                e = json.loads(line)
                log[(e["notebook"], e["run_id"])] = float(e["pipeline_s"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a kill
    rows = []
    for f in sorted((results_dir or paths.results_dir()).glob("*/*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        prov = rec.get("provenance", {})
        nb, rid = f.parent.name, prov.get("run_id", f.stem)
        phases: dict[str, float] = {}
        for name, s in _phases(rec.get("values", {})):
            phases[name] = phases.get(name, 0.0) + s
        rows.append({"notebook": nb, "run_id": rid, "model": str(prov.get("params", {}).get("model", "all")),
                     "wall_s": float(prov.get("wall_time_s") or 0.0), "pipeline_s": log.get((nb, rid), math.nan),
                     "phases": phases, "device": str(prov.get("device", "?"))})
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals by notebook and model, by notebook, by phase, and the overhead outside the timed parts."""
    by: dict[tuple[str, str], dict[str, float]] = {}
    phases: dict[tuple[str, str], float] = {}
    for r in rows:
        b = by.setdefault((r["notebook"], r["model"]), {"runs": 0, "wall_s": 0.0, "overhead_s": 0.0, "logged": 0})
        b["runs"] += 1
        b["wall_s"] += r["wall_s"]
        if math.isfinite(r["pipeline_s"]):
            b["overhead_s"] += max(r["pipeline_s"] - r["wall_s"], 0.0)
            b["logged"] += 1
        for name, s in r["phases"].items():
            phases[(r["notebook"], name)] = phases.get((r["notebook"], name), 0.0) + s
    return {"by_notebook_model": [{"notebook": nb, "model": m, **v} for (nb, m), v in sorted(by.items())],
            "phases": [{"notebook": nb, "phase": p, "s": s} for (nb, p), s in sorted(phases.items())],
            "total_wall_s": sum(r["wall_s"] for r in rows),
            "total_overhead_s": sum(v["overhead_s"] for v in by.values()),
            "devices": sorted({r["device"] for r in rows})}


def format_report(s: dict[str, Any]) -> str:
    """The plain-text table ``make timings`` prints."""
    out = [f"{'notebook':<22}{'model':<22}{'runs':>5}{'work [min]':>12}{'overhead [min]':>16}{'logged':>8}"]
    for r in s["by_notebook_model"]:
        out.append(f"{r['notebook']:<22}{r['model']:<22}{r['runs']:>5}{r['wall_s'] / 60:>12.1f}"
                   f"{r['overhead_s'] / 60:>16.1f}{r['logged']:>8}")
    out.append(f"{'all':<44}{sum(r['runs'] for r in s['by_notebook_model']):>5}{s['total_wall_s'] / 60:>12.1f}"
               f"{s['total_overhead_s'] / 60:>16.1f}")
    if s["phases"]:
        out += ["", f"{'notebook':<22}{'phase':<30}{'[min]':>8}"]
        out += [f"{p['notebook']:<22}{p['phase']:<30}{p['s'] / 60:>8.1f}" for p in s["phases"]]
    out += ["", "work: provenance wall time (model loading included); overhead: the pipeline's time for the run "
            "minus that (kernel start-up, imports), for the runs this checkout's log has; summed over runs, so "
            "parallel jobs add up to more than the wall clock.", "devices: " + "; ".join(s["devices"])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    rows = collect()
    if not rows:
        print("no results yet: run `make paper` (or a notebook) first", file=sys.stderr)
        return 1
    print(format_report(summarise(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
