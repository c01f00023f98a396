"""Are two pipeline runs from scratch the same run? Compares the ``values`` of every results JSON of two checkouts.

Provenance (timestamps, wall times, host, git dirtiness) is left out; every other value is compared exactly:
numbers by their difference (NaN equals NaN), strings, booleans and structure by equality. Prints one line per
results file (identical, or how many values differ and the largest absolute difference with its path) and exits
non-zero when any file is missing on one side or differs.

    .venv/bin/python benchmarks/determinism.py RUN_A RUN_B [--tol 0] [--out benchmarks/results/determinism.json]

where RUN_A and RUN_B are project roots (each with ``results/``), e.g. two clones that each ran
``python -m adapterscope.pipeline paper --profile smoke`` from nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

SKIP_KEYS = {"provenance", "seconds"}  # and every key ending in _s: timings differ between any two runs


def leaves(x: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(x, dict):
        for k in sorted(x):
            if k in SKIP_KEYS or k.endswith("_s"):
                continue
            yield from leaves(x[k], f"{path}.{k}" if path else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, x


def compare(a: Any, b: Any, tol: float = 0.0) -> dict[str, Any]:
    la, lb = dict(leaves(a)), dict(leaves(b))
    diffs, worst, worst_path = 0, 0.0, None
    for p in sorted(set(la) | set(lb)):
        if p not in la or p not in lb:
            diffs += 1
            worst_path = worst_path or f"{p} (on one side only)"
            continue
        x, y = la[p], lb[p]
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(x - y) if math.isfinite(x) and math.isfinite(y) else (0.0 if x == y else math.inf)
            if d > tol:
                diffs += 1
                if d > worst:
                    worst, worst_path = d, p
        elif x != y:
            diffs += 1
            worst_path = worst_path or p
    return {"n_values": len(la), "n_differ": diffs, "max_abs_diff": worst, "where": worst_path}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--tol", type=float, default=0.0, help="absolute tolerance on numbers (default exact)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    files = sorted({p.relative_to(r / "results") for r in (a.a, a.b) for p in (r / "results").rglob("*.json")})
    if not files:
        print(f"no results JSON under {a.a}/results or {a.b}/results", file=sys.stderr)
        return 2
    rows, bad = [], 0
    for f in files:
        fa, fb = a.a / "results" / f, a.b / "results" / f
        if not (fa.is_file() and fb.is_file()):
            rows.append({"file": str(f), "missing_in": str(a.a if not fa.is_file() else a.b)})
            bad += 1
            print(f"{str(f):60s} missing in {rows[-1]['missing_in']}")
            continue
        c = compare(json.loads(fa.read_text()).get("values"), json.loads(fb.read_text()).get("values"), a.tol)
        rows.append({"file": str(f), **c})
        bad += c["n_differ"] > 0
        print(f"{str(f):60s} " + ("identical" if not c["n_differ"] else
                                  f"{c['n_differ']} of {c['n_values']} values differ, max |diff| "
                                  f"{c['max_abs_diff']:.3g} at {c['where']}") + f" ({c['n_values']} values)")
    print(f"{len(files) - bad} of {len(files)} results files identical (tolerance {a.tol:g})")
    if a.out:
        tmp = a.out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"a": str(a.a), "b": str(a.b), "tol": a.tol, "files": rows,
                                   "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
        os.replace(tmp, a.out)
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
