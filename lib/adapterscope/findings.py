"""The findings ledger: each finding's hypothesis and test, where its number comes from, and its recorded value.

``paper/findings.yml`` (hand-written, committed) lists the findings::

    findings:
      - id: decor-pooled
        hypothesis: One sentence: what is expected, in which direction, stated before the run.
        direction: greater                  # greater | less | two-sided: the sign the hypothesis predicts
        null: 0                             # the value of no effect (default 0)
        test: two-sided p and 95% CI ...    # how value, CI and p are computed (one line)
        alpha: 0.05                         # significance level, fixed in advance (default 0.05)
        notebook: 08_decorrelation          # the notebook run that computes it
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
tolerance and with the same verdict, 1 when not, 2 on bad input. ``check`` compares the current results with the recorded values without
rerunning anything; ``list`` prints the ledger.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import latex, params, paths, pipeline, results

LEDGER = Path("paper") / "findings.yml"
RECORDED = Path("paper") / "findings_recorded.json"
SCOPE_KEYS = {"models": "models", "corpora": "corpora", "seeds": "seeds"}
DIRECTIONS = ("greater", "less", "two-sided")
VERDICTS = ("supported", "contradicted", "inconclusive", "undefined")
REQUIRED = {"id", "hypothesis", "direction", "test", "notebook", "key", "tolerance"}
OPTIONAL = {"run_id", "scope", "null", "alpha"}


class FindingError(ValueError):
    pass


@dataclass
class Finding:
    id: str
    hypothesis: str
    notebook: str
    key: str
    tolerance: float
    run_id: str = "grid"
    scope: dict[str, list] = field(default_factory=dict)
    direction: str = "two-sided"
    test: str = ""
    null: float = 0.0
    alpha: float = 0.05


def load_ledger(root: Path | None = None) -> dict[str, Finding]:
    import yaml

    path = (root or paths.project_root()) / LEDGER
    if not path.is_file():
        raise FindingError(f"no findings ledger at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    out: dict[str, Finding] = {}
    for i, e in enumerate(raw.get("findings") or []):
        missing = REQUIRED - set(e)
        if missing:
            raise FindingError(f"{path}: entry {i} lacks {sorted(missing)}")
        extra = set(e) - REQUIRED - OPTIONAL
        if extra:
            raise FindingError(f"{path}: entry {e['id']!r} has unknown field(s) {sorted(extra)}")
        bad = set(e.get("scope") or {}) - set(SCOPE_KEYS)
        if bad:
            raise FindingError(f"{path}: entry {e['id']!r}: scope keys must be among {sorted(SCOPE_KEYS)}, got {sorted(bad)}")
        if e["id"] in out:
            raise FindingError(f"{path}: duplicate id {e['id']!r}")
        if e["notebook"] not in pipeline.CELL_NOTEBOOKS + pipeline.SUMMARY_NOTEBOOKS:
            raise FindingError(f"{path}: entry {e['id']!r}: unknown notebook {e['notebook']!r}")
        if e["direction"] not in DIRECTIONS:
            raise FindingError(f"{path}: entry {e['id']!r}: direction must be one of {list(DIRECTIONS)}, "
                               f"got {e['direction']!r}")
        alpha = float(e.get("alpha", 0.05))
        if not 0 < alpha < 1:
            raise FindingError(f"{path}: entry {e['id']!r}: alpha must be in (0, 1), got {alpha}")
        out[e["id"]] = Finding(id=e["id"], hypothesis=" ".join(str(e["hypothesis"]).split()), notebook=e["notebook"],
                               key=e["key"], tolerance=float(e["tolerance"]), run_id=str(e.get("run_id", "grid")),
                               scope=dict(e.get("scope") or {}), direction=e["direction"],
                               test=" ".join(str(e["test"]).split()), null=float(e.get("null", 0.0)), alpha=alpha)
    return out


def get(ledger: dict[str, Finding], fid: str) -> Finding:
    if fid not in ledger:
        raise FindingError(f"unknown finding {fid!r}; known: {', '.join(sorted(ledger))} (see `make findings`)")
    return ledger[fid]


def _dig(values: dict, key: str) -> Any:
    cur: Any = values
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise FindingError(f"results have no value at {key!r} (missing {part!r})")
        cur = cur[part]
    return cur


def measured(f: Finding) -> dict[str, Any]:
    """The finding's current value from its results file: a dict with at least ``value``."""
    rec = results.load(f.notebook, f.run_id)
    v = _dig(rec["values"], f.key)
    out = dict(v) if isinstance(v, dict) else {"value": v}
    if "value" not in out:
        raise FindingError(f"{f.id}: {f.key} is a dict without 'value'")
    out["git_sha"] = rec["provenance"]["git"].get("sha")
    out["profile"] = rec["provenance"]["params"].get("profile")
    return out


def _num(v: dict, k: str) -> float:
    x = v.get(k)
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def verdict(f: Finding, v: dict | None) -> tuple[str, str]:
    """(verdict, reason) of one finding from its measured dict (``value``, optional ``ci_low``/``ci_high``,
    ``p_value``, ``reason``). Significant means p < alpha where a p is given and the 95% CI excludes the null
    where a CI is given (at least one of the two is required); the side is the CI's where there is one, else the
    value's. See the module docstring for the four verdicts."""
    if v is None:
        return "undefined", "not computed in this profile"
    value = _num(v, "value")
    if not math.isfinite(value):
        return "undefined", str(v.get("reason") or "the value is not a number")
    p, lo, hi = _num(v, "p_value"), _num(v, "ci_low"), _num(v, "ci_high")
    has_p, has_ci = math.isfinite(p), math.isfinite(lo) and math.isfinite(hi)
    if not (has_p or has_ci):
        return "undefined", str(v.get("reason") or "no test statistic (neither a p-value nor a CI)")
    sig = (not has_p or p < f.alpha) and (not has_ci or lo > f.null or hi < f.null)
    if not sig:
        why = []
        if has_p:
            why.append(f"p={p:.3g} >= {f.alpha:g}" if p >= f.alpha else f"p={p:.3g}")
        if has_ci and lo <= f.null <= hi:
            why.append(f"95% CI [{lo:.3g}, {hi:.3g}] spans {f.null:g}")
        return "inconclusive", "; ".join(why)
    side = (1 if lo > f.null else -1) if has_ci else (1 if value > f.null else -1 if value < f.null else 0)
    if f.direction == "two-sided" or (f.direction == "greater") == (side > 0):
        return "supported", f"significant, {'above' if side > 0 else 'below'} {f.null:g}"
    return "contradicted", f"significant in the other direction ({'above' if side > 0 else 'below'} {f.null:g})"


def compare(f: Finding, new: dict, old: dict) -> tuple[bool, float]:
    """(reproduced, |difference|). Two numbers reproduce within the tolerance; an undefined value reproduces
    only as undefined for the same stated reason (difference 0 then, NaN otherwise)."""
    a, b = _num(new, "value"), _num(old, "value")
    if math.isnan(a) or math.isnan(b):
        same = (math.isnan(a) and math.isnan(b) and bool(new.get("reason"))
                and new.get("reason") == old.get("reason"))
        return same, 0.0 if same else math.nan
    diff = abs(a - b)
    return bool(diff <= f.tolerance), diff


def describe(v: dict) -> str:
    if not math.isfinite(_num(v, "value")):
        return f"undefined ({v.get('reason') or 'no reason given'})"
    s = results.format_number(v["value"], 3)
    if "ci_low" in v and v["ci_low"] is not None:
        s += f" [{results.format_number(v['ci_low'], 3)}, {results.format_number(v['ci_high'], 3)}]"
    if "n" in v:
        s += f" (n={v['n']}"
        s += f", p={results.format_number(v['p_value'], 3)})" if "p_value" in v else ")"
    return s


def load_recorded(root: Path | None = None) -> dict[str, dict]:
    p = (root or paths.project_root()) / RECORDED
    return json.loads(p.read_text()) if p.is_file() else {}


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
    them (04_cka), and no training-dose runs unless it is 09_dose's (whose dose block is then scoped too)."""
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
    if f.notebook != "09_dose" and "__dose-" not in f.run_id:  # a dose cell's own run keeps its block
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


def check(log=print) -> int:
    """Compare the current results (no reruns) with the recorded values; 0 when all are within tolerance."""
    ledger, rec = load_ledger(), load_recorded()
    bad = 0
    for fid, f in ledger.items():
        try:
            new = measured(f)
        except (FileNotFoundError, FindingError) as e:
            log(f"{fid:28s} missing: {e}")
            bad += 1
            continue
        if fid not in rec:
            log(f"{fid:28s} {describe(new)}  (nothing recorded)")
            bad += 1
            continue
        ok, diff = compare(f, new, rec[fid])
        ok = ok and verdict(f, new)[0] == verdict(f, rec[fid])[0]
        bad += not ok
        log(f"{fid:28s} {describe(new)} vs recorded {describe(rec[fid])}: {'ok' if ok else 'DIFFERS'} ({diff:.3g}); "
            f"verdict {verdict(f, new)[0]}")
    return 0 if bad == 0 else 1


def verdict_macro(fid: str) -> str:
    """The LaTeX command that prints a finding's verdict, e.g. ``\\VerdictDecorPooled``."""
    return "\\" + results.tex_name("verdict", fid)


def write_outputs() -> tuple[Path, Path]:
    """The paper's view of the ledger, from the current results files:

    * ``paper/generated/tables/findings.tex``: per finding its id, hypothesis and test, value, n, 95% CI, p and
      verdict; an entry the profile did not compute shows a dash and the verdict *undefined*;
    * ``paper/generated/findings/ledger.tex``: ``\\Verdict<Id>`` (the verdict word) and ``\\Verdict<Id>Why``
      (its reason) for every finding, and ``\\NFindings``, ``\\NFindingsSupported``, ..., so that a sentence
      of the paper can print a verdict instead of asserting an effect.
    """
    fmt = results.format_number
    rows, macros, counts = [], [], {k: 0 for k in VERDICTS}
    for fid, f in load_ledger().items():
        try:
            v = measured(f)
        except (FileNotFoundError, FindingError):
            v = None
        word, why = verdict(f, v)
        counts[word] += 1
        name = verdict_macro(fid)
        macros += [f"\\newcommand{{{name}}}{{\\emph{{{word}}}}}",
                   f"\\newcommand{{{name}Why}}{{{results.tex_escape(why)}}}"]
        if v is None or not math.isfinite(_num(v, "value")):
            val = n = ci = p = "--"
        else:
            val = fmt(v["value"], 3)
            n = str(v.get("n", "--"))
            ci = (f"[{fmt(v['ci_low'], 2)}, {fmt(v['ci_high'], 2)}]"
                  if math.isfinite(_num(v, "ci_low")) and math.isfinite(_num(v, "ci_high")) else "--")
            p = fmt(v["p_value"], 2) if math.isfinite(_num(v, "p_value")) else "--"
        hyp = (f"{results.tex_escape(f.hypothesis)} \\newline {{\\footnotesize\\itshape test: "
               f"{results.tex_escape(f.test)}}}")
        tid = results.tex_escape(fid).replace("-", "-{}\\allowbreak ")  # ids break at hyphens in the narrow column
        rows.append(f"\\texttt{{{tid}}} & {hyp} & {val} & {n} & {ci} & {p} & \\emph{{{word}}}")
    head = (r"finding & hypothesis (stated before the run) and test & value & $n$ & 95\% CI & $p$ & verdict \\")
    table = "\n".join([r"\begin{longtable}{>{\raggedright\arraybackslash}p{0.12\linewidth}"
                       r">{\raggedright\arraybackslash}p{0.39\linewidth}rrlrl}",
                       r"\toprule", head, r"\midrule", r"\endfirsthead", r"\toprule", head, r"\midrule", r"\endhead",
                       r"\bottomrule", r"\endlastfoot", *[r + r" \\" for r in rows], r"\end{longtable}"]) + "\n"
    macros.append(f"\\newcommand{{\\NFindings}}{{{sum(counts.values())}}}")
    macros += [f"\\newcommand{{\\NFindings{k.capitalize()}}}{{{c}}}" for k, c in counts.items()]
    gen = paths.macros_dir()
    t = paths.write_text_atomic(gen / "tables" / "findings.tex", table)
    m = paths.write_text_atomic(gen / "findings" / "ledger.tex",
                                "% generated by adapterscope.findings; do not edit\n" + "\n".join(macros) + "\n")
    return t, m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapterscope.findings", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="print the ledger")
    s = sub.add_parser("record", help="store current values as the recorded ones")
    s.add_argument("ids", nargs="*")
    sub.add_parser("check", help="current results vs recorded values, no reruns")
    s = sub.add_parser("reproduce", help="rerun what one finding needs and compare")
    s.add_argument("id")
    s.add_argument("--profile", default="default")
    s.add_argument("--keep", action="store_true", help="keep the scratch copy")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "list":
            rec = load_recorded()
            for fid, f in load_ledger().items():
                r = f"recorded {describe(rec[fid])}" if fid in rec else "not recorded"
                word = verdict(f, rec[fid])[0] if fid in rec else "-"
                print(f"{fid}\n  hypothesis: {f.hypothesis}\n  test: {f.test} (direction {f.direction}, alpha "
                      f"{f.alpha:g})\n  {f.notebook}/{f.run_id}: {f.key}; tolerance {f.tolerance:g}; {r}; "
                      f"verdict (recorded) {word}")
            return 0
        if a.cmd == "record":
            print(record(a.ids or None))
            return 0
        if a.cmd == "check":
            return check()
        return reproduce(a.id, a.profile, a.keep)
    except (FindingError, pipeline.PipelineError, params.ParameterError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
