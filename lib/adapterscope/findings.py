"""The findings ledger: each finding's hypothesis and test, where its number comes from, and its recorded value.

``paper/findings.yml`` (hand-written, committed) lists the findings::

    findings:
      - id: decor-pooled
        hypothesis: One sentence: what is expected, in which direction, stated before the run.
        direction: greater                  # greater | less | two-sided: the sign the hypothesis predicts
        null: 0                             # the value of no effect (default 0)
        test: two-sided p and 95% CI ...    # how value, CI and p are computed (one line)
        alpha: 0.05                         # significance level, fixed in advance (default 0.05)
        notebook: 10_decorrelation          # the notebook run that computes it
        run_id: grid                        # "grid" for summary notebooks, a cell id for cell notebooks
        key: findings.rho_ratio_kl_pooled   # dotted path into that run's ``values``: a number or a dict with
                                            # value / ci_low / ci_high / n / p_value
        scope: {models: [smollm2-135m]}     # optional: the part of the grid it needs (models, corpora, seeds)
        tolerance: 0.15                     # |reproduced - recorded| allowed on ``value``

Each finding gets a verdict computed from its value, CI and p (:func:`verdict`): *supported* (significant in the
predicted direction: p < alpha where there is a p, and the 95% CI excludes the null where there is a CI),
*contradicted* (significant the other way), *inconclusive* (not significant: p >= alpha or the CI spans the null), or
*undefined* (the value is not a number, with the reason the notebook gives, or there is no test statistic).

``paper/findings_recorded.json`` (committed) holds the values recorded from a full profile run
(``python -m adapterscope.findings record --profile default``) with the git SHA and profile they came from.

``python -m adapterscope.findings reproduce ID`` (``make finding F=ID``) reruns, in a scratch copy of the project
(``ADAPTERSCOPE_HOME`` = a temporary folder; model/corpus caches shared), only the notebooks and grid cells the
finding needs, with ``--force`` so nothing is reused, and prints reproduced vs recorded. Exit code 0 when within
tolerance and with the same verdict, 1 when not, 2 on bad input. ``check`` compares the current results with the
recorded values without rerunning anything (:func:`check`: exit 1 only when a current value of the recorded profile
is off its record; ``--complete`` also when a finding has no such value); ``list`` prints the ledger, each
verdict beside the power of its test (``ledger.finding_power``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import params, paths, pipeline, results
from .ledger import (RECORDED, SCOPE_KEYS, Finding, FindingError, adjusted_p, adjusted_verdict, compare, describe,
                     finding_power, get, is_estimate, load_ledger, load_recorded, measured, power_text, verdict,
                     verdict_label, written_dates)


def compute_dtypes(f: Finding, prof: dict[str, Any]) -> list[str]:
    """The compute dtypes (``01_finetune``'s ``compute_dtype``) of the fine-tunes behind a finding, from the
    current results. ``dtype=auto`` picks bfloat16 or float32 by the machine, and a rank correlation over a few
    runs can move by more than its tolerance between the two, so the record keeps them beside the value."""
    seen = set()
    for nb, rid, _ in plan(f, scoped_profile(f, prof)):
        if nb == "01_finetune":
            try:
                seen.add(results.load(nb, rid)["values"].get("compute_dtype"))
            except FileNotFoundError:
                continue
    return sorted(x for x in seen if x)


def _profile_of(v: dict) -> dict[str, Any] | None:
    """The profile a measured value's run names, or None (no profile, or none of that name on disk)."""
    name = v.get("profile")
    try:
        return {**pipeline.load_profile(name), "_name": name} if name else None
    except FileNotFoundError:
        return None


def record(ids: list[str] | None = None) -> Path:
    ledger = load_ledger()
    rec = load_recorded()
    for fid in ids or list(ledger):
        f = get(ledger, fid)
        v = measured(f)
        prof = _profile_of(v)
        dts = compute_dtypes(f, prof) if prof else []
        rec[fid] = {**v, **({"compute_dtypes": dts} if dts else {}),
                    "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = paths.project_root() / RECORDED
    return paths.write_text_atomic(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")


def scoped_profile(f: Finding, prof: dict[str, Any]) -> dict[str, Any]:
    """The profile restricted to what the finding needs: its scope, no control runs unless its notebook reads
    them (04_cka), no training-dose runs unless it is 11_dose's (whose dose block is then scoped too), no
    portability block unless it is 07_portability's, no composition block unless it is 12_composition's and no
    calibration block unless it is 13_calibration's."""
    g = dict(prof["grid"])
    by_model = g["seeds"] if isinstance(g["seeds"], dict) else None  # per-model seeds (see pipeline.grid_cells)
    if by_model is not None:
        g["seeds"] = pipeline.all_seeds(g)
    for k, gk in SCOPE_KEYS.items():
        if k in f.scope:
            unknown = [x for x in f.scope[k] if x not in g[gk]]
            if unknown:
                raise FindingError(f"{f.id}: scope {k} {unknown} not in the profile's grid {g[gk]}")
            g[gk] = list(f.scope[k])
    if by_model is not None:  # the mapping, restricted to the scoped models and seeds
        g["seeds"] = {m: [s for s in by_model[m] if s in g["seeds"]] for m in g["models"]}
    if f.notebook != "04_cka":
        g.pop("control", None)
    if f.notebook != "07_portability":
        g.pop("portability", None)
    if f.notebook != "12_composition":
        g.pop("composition", None)
    if f.notebook != "13_calibration":
        g.pop("calibration", None)
    if f.notebook != "11_dose" and "__dose-" not in f.run_id:  # a dose cell's own run keeps its block
        g.pop("dose", None)
    elif g.get("dose"):
        d = dict(g["dose"])
        for k in ("models", "corpora", "seeds"):
            if k in d and k in f.scope:
                d[k] = [x for x in d[k] if x in f.scope[k]]
        g["dose"] = d
    return {**prof, "grid": g}


def plan(f: Finding, prof: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """(notebook, run id, overrides) to run, in order, for one finding."""
    per_nb = prof.get("notebooks", {}) or {}
    steps = []
    if f.notebook in pipeline.CELL_NOTEBOOKS:
        cells = [c for c in pipeline.grid_cells(prof, "all") if pipeline.cell_id(c) == f.run_id]
        if not cells:
            raise FindingError(f"{f.id}: run {f.run_id!r} is not a cell of the profile's grid")
        for nb in pipeline.cell_closure([f.notebook]):
            steps.append((nb, f.run_id, pipeline.cell_overrides(cells[0], nb, per_nb)))
        return steps
    main = pipeline.grid_cells(prof, "main")
    needs = pipeline.cell_closure(pipeline.SUMMARY_READS.get(f.notebook, list(pipeline.CELL_NOTEBOOKS)))
    for cell in pipeline.summary_cells(f.notebook, prof):
        for nb in needs:
            if nb in pipeline.cell_notebooks(cell, main):
                steps.append((nb, pipeline.cell_id(cell), pipeline.cell_overrides(cell, nb, per_nb)))
    for nb in [*pipeline.SUMMARY_AFTER.get(f.notebook, []), f.notebook]:
        declared = params.parse_parameters_cell(pipeline.notebook_path(nb))
        ov = {k: v for k, v in pipeline.summary_params(prof.get("_name", "default"), prof).items() if k in declared}
        ov.update(per_nb.get(nb) or {})
        steps.append((nb, "grid", ov))
    return steps


def _scratch_copy(dst: Path) -> None:
    """Tracked and untracked-not-ignored files of the project (no results, caches or venvs)."""
    src = paths.project_root()
    proc = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=src, capture_output=True, text=True)
    if proc.returncode != 0:  # not a git checkout (e.g. an unpacked archive): sources only, no generated output
        skip = shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.pdf")
        for name in ("lib", "notebooks", "paper", "data/reference", "pyproject.toml", "requirements.lock"):
            p = src / name
            if p.is_dir():
                shutil.copytree(p, dst / name, ignore=skip, dirs_exist_ok=True)
            elif p.is_file():
                (dst / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dst / name)
        for gen in ("paper/generated", "paper/build"):
            shutil.rmtree(dst / gen, ignore_errors=True)
        return
    for rel in proc.stdout.split():
        p = src / rel
        if p.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / rel)


def reproduce(fid: str, profile: str = "default", keep: bool = False, log=print) -> int:
    root = paths.project_root()
    ledger = load_ledger(root)
    f = get(ledger, fid)
    recorded = load_recorded(root)
    if fid not in recorded:
        raise FindingError(f"{fid}: nothing recorded in {RECORDED}; run `python -m adapterscope.findings record` "
                           "after a full profile run")
    prof = scoped_profile(f, {**pipeline.load_profile(profile), "_name": profile})
    steps = plan(f, prof)
    log(f"{fid}: {f.hypothesis}")
    log(f"test: {f.test} (direction {f.direction}, alpha {f.alpha:g})")
    log(f"reruns {len(steps)} notebook run(s) in a scratch copy (profile {profile}, scope {f.scope or 'whole grid'})")
    scratch = Path(tempfile.mkdtemp(prefix=f"finding-{fid}-"))
    old_env = {k: os.environ.get(k) for k in ("ADAPTERSCOPE_HOME", "ADAPTERSCOPE_CACHE")}
    try:
        _scratch_copy(scratch)
        os.environ["ADAPTERSCOPE_CACHE"] = old_env["ADAPTERSCOPE_CACHE"] or str(root / "data" / "cache")
        os.environ["ADAPTERSCOPE_HOME"] = str(scratch)
        for nb, rid, ov in steps:
            ups = ([(u, rid) for u in pipeline.UPSTREAM.get(nb, [])] if rid != "grid"
                   else pipeline.summary_upstream(nb, prof))
            pipeline.run_notebook(nb, ov, rid, upstream=ups, force=True, log=log)
        new = measured(f)
        new_dts = compute_dtypes(f, prof)
    finally:
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"scratch copy kept at {scratch}")
    old = recorded[fid]
    ok, diff = compare(f, new, old)
    log(f"recorded   : {describe(old)}  (git {str(old.get('git_sha'))[:10]}, profile {old.get('profile')})")
    log(f"reproduced : {describe(new)}")
    (v_old, _), (v_new, why_new) = verdict(f, old), verdict(f, new)
    log(f"verdict    : recorded {v_old}, reproduced {v_new} ({why_new})")
    if v_old != v_new:  # a value within tolerance whose p crossed alpha is not the same finding
        ok = False
        log("the verdict differs between the recorded and the reproduced value")
    log(f"|difference| = {diff:.4g}, tolerance {f.tolerance:g}: {'REPRODUCED' if ok else 'NOT REPRODUCED'}")
    old_dts = old.get("compute_dtypes")
    if old_dts and new_dts and old_dts != new_dts:
        log(f"note: recorded with fine-tunes in {'/'.join(old_dts)}, rerun in {'/'.join(new_dts)} (dtype=auto "
            "follows the machine); pass the recorded dtype to 01_finetune to compare like with like")
    return 0 if ok else 1


def check(log=print, complete: bool = False) -> int:
    """Compare the current results (no reruns) with the recorded values: 1 when a current value is off its
    record (outside the tolerance, or with another verdict), else 0.

    Only a value computed in the profile its record names (or where either names none) is compared. A finding
    without a current value (its notebook not run in this checkout, as in a clean clone or after ``make
    finding``, which reruns in a scratch copy), with a value from another profile (smoke results beside a
    default record) or with nothing recorded yet is listed as such and cannot be off its record.
    ``complete=True`` (``check --complete``, after a full run of the recorded profile) counts those as
    failures too. The last line tallies each kind."""
    ledger, rec = load_ledger(), load_recorded()
    tally = dict.fromkeys(("ok", "differ", "without a current value", "from another profile", "not recorded"), 0)
    for fid, f in ledger.items():
        try:
            new = measured(f)
        except (FileNotFoundError, FindingError) as e:
            log(f"{fid:28s} no current value: {e}")
            tally["without a current value"] += 1
            continue
        if fid not in rec:
            log(f"{fid:28s} {describe(new)}  (nothing recorded: python -m adapterscope.findings record {fid})")
            tally["not recorded"] += 1
            continue
        old = rec[fid]
        if new.get("profile") and old.get("profile") and new["profile"] != old["profile"]:
            log(f"{fid:28s} {describe(new)} in profile {new['profile']}, recorded in profile {old['profile']}: "
                "not compared")
            tally["from another profile"] += 1
            continue
        ok, diff = compare(f, new, old)
        ok = ok and verdict(f, new)[0] == verdict(f, old)[0]
        tally["ok" if ok else "differ"] += 1
        log(f"{fid:28s} {describe(new)} vs recorded {describe(old)}: {'ok' if ok else 'DIFFERS'} ({diff:.3g}); "
            f"verdict {verdict(f, new)[0]}")
    log(f"{len(ledger)} findings: " + ", ".join(f"{c} {k}" for k, c in tally.items() if c or k in ("ok", "differ"))
        + (" (--complete: each finding needs a current value of its recorded profile)" if complete else ""))
    unmatched = len(ledger) - tally["ok"] - tally["differ"]
    return 1 if tally["differ"] or (complete and unmatched) else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapterscope.findings", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="print the ledger")
    s = sub.add_parser("record", help="store current values as the recorded ones")
    s.add_argument("ids", nargs="*")
    s = sub.add_parser("check", help="current results vs recorded values, no reruns; exit 1 when one is off")
    s.add_argument("--complete", action="store_true",
                   help="also exit 1 when a finding has no current value of its recorded profile")
    s = sub.add_parser("reproduce", help="rerun what one finding needs and compare")
    s.add_argument("id")
    s.add_argument("--profile", default="default")
    s.add_argument("--keep", action="store_true", help="keep the scratch copy")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "list":
            rec, ledger = load_recorded(), load_ledger()
            adj = adjusted_p(ledger, {fid: rec.get(fid) for fid in ledger})
            written = written_dates()
            for fid, f in ledger.items():
                r = f"recorded {describe(rec[fid])}" if fid in rec else "not recorded"
                word = verdict(f, rec[fid])[0] if fid in rec else "-"
                aword, awhy = adjusted_verdict(f, rec[fid], adj.get(fid)) if fid in rec else ("-", "")
                pw = finding_power(f)
                how = (" (no power entry in the ledger)" if pw is None else
                       f" ({f.power.test}, n from the {'record' if f.power.n_from == 'recorded' else 'ledger'}"
                       + (f"; smallest reachable p {pw.p_floor:.2g})" if pw.method != "floor" else ")"))
                print(f"{fid} [{f.family}; written {written.get(fid, 'now (not committed)')}]\n  hypothesis: {f.hypothesis}\n  test: {f.test} (direction {f.direction}, "
                      f"alpha {f.alpha:g})\n  {f.notebook}/{f.run_id}: {f.key}; tolerance {f.tolerance:g}; {r}; "
                      f"verdict (recorded) {verdict_label(word, pw)}, adjusted {aword}"
                      + (" (estimate)" if is_estimate(aword, pw) else "") + (f" ({awhy})" if awhy else "")
                      + f"\n  {power_text(pw)}{how}")
            return 0
        if a.cmd == "record":
            print(record(a.ids or None))
            return 0
        if a.cmd == "check":
            return check(complete=a.complete)
        return reproduce(a.id, a.profile, a.keep)
    except (FindingError, pipeline.PipelineError, params.ParameterError, results.ResultsError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
