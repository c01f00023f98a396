"""The findings ledger's data and verdicts, without the machinery that reruns notebooks (``findings``): the
hypotheses of ``paper/findings.yml``, the measured value of each from the current results files, its verdict,
the comparison with the recorded value, the power of its test at a stated effect, and the paper's view (the ledger
table and ``\\Verdict<Id>`` macros).

Power. An entry may state ``power: {test: <kind>, effect: <number>, n: <units>, strata: <k>}``: its test as one
of :data:`adapterscope.power.KINDS` (``spearman``, ``stratified_spearman`` with ``strata``, ``sign_flip``,
``two_sample``, ``binomial``), the effect at which its power is computed (rho, a standardised d, or a rate; signed,
on the predicted side of the null) and its unit count (default: the ``n`` of its recorded value, required where
the record has none). :func:`finding_power` simulates that test at the finding's alpha and direction; a finding
whose power is below :data:`ESTIMATE_BELOW` has its verdict labelled an estimate (:func:`verdict_label`), the
verdict itself unchanged. An entry whose test is none of these kinds has no ``power`` (``n/a`` in the table).

Imports run one way: ``pipeline`` and ``findings`` import this module; it imports neither (a finding's notebook
is checked against ``notebooks/<name>.py``, not against the pipeline's tables).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths, power, results

LEDGER = Path("paper") / "findings.yml"
RECORDED = Path("paper") / "findings_recorded.json"
SCOPE_KEYS = {"models": "models", "corpora": "corpora", "seeds": "seeds"}
DIRECTIONS = ("greater", "less", "two-sided")
VERDICTS = ("supported", "contradicted", "inconclusive", "undefined")
REQUIRED = {"id", "hypothesis", "direction", "test", "notebook", "key", "tolerance", "family"}
OPTIONAL = {"run_id", "scope", "null", "alpha", "power"}
POWER_KEYS = ("test", "effect", "n", "strata")
# a verdict whose test has less power than this at its stated effect is labelled an estimate
ESTIMATE_BELOW = 0.5
# primary: the one test that decides a claim of the seed studies (Holm within this family); check: manipulation
# checks, expected trends, calibrations and secondary tests (Benjamini-Hochberg q over every finding with a p)
FAMILIES = ("primary", "check")


class FindingError(ValueError):
    pass


@dataclass(frozen=True)
class PowerSpec:
    """A finding's ``power`` entry with its unit count resolved (``n_from``: "ledger" or "recorded")."""
    test: str
    effect: float
    n: int
    strata: int | None = None
    n_from: str = "ledger"


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
    family: str = "check"
    power: PowerSpec | None = None


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 1


def power_spec(e: dict, recorded: dict | None = None, where: str = "") -> PowerSpec:
    """The checked ``power`` entry of one raw ledger entry ``e`` (its ``direction``, ``null`` and ``alpha`` are
    read too); ``recorded``: that finding's recorded value, whose ``n`` is the default unit count. A
    :class:`FindingError` names what is wrong."""
    where = where or f"entry {e.get('id')!r}"
    p = e.get("power")
    if not isinstance(p, dict):
        raise FindingError(f"{where}: power must be a mapping {{test, effect, n, strata}}, got {p!r}")
    extra = set(p) - set(POWER_KEYS)
    if extra:
        raise FindingError(f"{where}: power has unknown field(s) {sorted(map(str, extra))}; "
                           f"allowed: {list(POWER_KEYS)}")
    if p.get("test") not in power.KINDS:
        raise FindingError(f"{where}: power.test must be one of {list(power.KINDS)}, got {p.get('test')!r}")
    test, effect = p["test"], p.get("effect")
    if isinstance(effect, bool) or not isinstance(effect, (int, float)) or not math.isfinite(effect):
        raise FindingError(f"{where}: power.effect must be a number, got {effect!r}")
    n, n_from = p.get("n"), "ledger"
    if n is None:
        n, n_from = (recorded or {}).get("n"), "recorded"
        if not _count(n):
            raise FindingError(f"{where}: power.n is required (the recorded value carries no unit count: "
                               f"n={n!r})")
    elif not _count(n):
        raise FindingError(f"{where}: power.n must be a positive integer, got {n!r}")
    strata = p.get("strata")
    if test == "stratified_spearman" and not _count(strata):
        raise FindingError(f"{where}: power.strata (a positive integer) is required for stratified_spearman, "
                           f"got {strata!r}")
    if test != "stratified_spearman" and strata is not None:
        raise FindingError(f"{where}: power.strata applies to stratified_spearman only, not {test}")
    null = float(e.get("null", 0.0))
    if test != "binomial" and null != 0:
        raise FindingError(f"{where}: power.test {test} tests against 0, but the finding's null is {null:g}")
    direction = e.get("direction")
    if (direction == "greater" and not effect > null) or (direction == "less" and not effect < null):
        raise FindingError(f"{where}: power.effect {effect:g} is not on the predicted side ({direction} than "
                           f"{null:g})")
    try:  # the checks the power function itself makes (ranges, strata that fill them)
        power.check_args(test, float(effect), int(n), strata, float(e.get("alpha", 0.05)), direction,
                         null if test == "binomial" else 0.5)
    except ValueError as err:
        raise FindingError(f"{where}: power: {err}") from None
    return PowerSpec(test=test, effect=float(effect), n=int(n), strata=strata, n_from=n_from)


def load_ledger(root: Path | None = None) -> dict[str, Finding]:
    import yaml

    root_ = root or paths.project_root()
    path = root_ / LEDGER
    if not path.is_file():
        raise FindingError(f"no findings ledger at {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    rec = load_recorded(root_)
    out: dict[str, Finding] = {}
    for i, e in enumerate(raw.get("findings") or []):
        missing = REQUIRED - set(e)
        if missing:
            raise FindingError(f"{path}: entry {i} lacks {sorted(missing)}")
        extra = set(e) - REQUIRED - OPTIONAL
        if None in extra:
            raise FindingError(f"{path}: entry {e.get('id')!r} has a key YAML reads as null: write it quoted, "
                               '"null": <value>')
        if extra:
            raise FindingError(f"{path}: entry {e['id']!r} has unknown field(s) {sorted(extra)}")
        bad = set(e.get("scope") or {}) - set(SCOPE_KEYS)
        if bad:
            raise FindingError(f"{path}: entry {e['id']!r}: scope keys must be among {sorted(SCOPE_KEYS)}, got {sorted(bad)}")
        if e["id"] in out:
            raise FindingError(f"{path}: duplicate id {e['id']!r}")
        if not (root_ / "notebooks" / f"{e['notebook']}.py").is_file():
            raise FindingError(f"{path}: entry {e['id']!r}: unknown notebook {e['notebook']!r}")
        if e["direction"] not in DIRECTIONS:
            raise FindingError(f"{path}: entry {e['id']!r}: direction must be one of {list(DIRECTIONS)}, "
                               f"got {e['direction']!r}")
        if e["family"] not in FAMILIES:
            raise FindingError(f"{path}: entry {e['id']!r}: family must be one of {list(FAMILIES)}, "
                               f"got {e['family']!r}")
        alpha = float(e.get("alpha", 0.05))
        if not 0 < alpha < 1:
            raise FindingError(f"{path}: entry {e['id']!r}: alpha must be in (0, 1), got {alpha}")
        spec = power_spec(e, rec.get(e["id"]), f"{path}: entry {e['id']!r}") if "power" in e else None
        out[e["id"]] = Finding(id=e["id"], hypothesis=" ".join(str(e["hypothesis"]).split()), notebook=e["notebook"],
                               key=e["key"], tolerance=float(e["tolerance"]), run_id=str(e.get("run_id", "grid")),
                               scope=dict(e.get("scope") or {}), direction=e["direction"],
                               test=" ".join(str(e["test"]).split()), null=float(e.get("null", 0.0)), alpha=alpha,
                               family=e["family"], power=spec)
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


def adjusted_p(ledger: dict[str, Finding], values: dict[str, dict | None]) -> dict[str, dict[str, float]]:
    """Multiplicity control over the findings that have a value and a p (statsmodels' ``multipletests``):
    ``p_holm``, Holm's step-down adjustment within the primary family, and ``q_bh``, Benjamini-Hochberg q over
    every finding; ``p_adjusted`` is the one a finding's adjusted verdict uses (Holm for a primary finding, BH
    for a check). Findings without a p are left out (their verdict rests on a CI alone)."""
    from statsmodels.stats.multitest import multipletests

    have = {fid: _num(v, "p_value") for fid, v in values.items()
            if v is not None and math.isfinite(_num(v, "value")) and math.isfinite(_num(v, "p_value"))}
    out: dict[str, dict[str, float]] = {fid: {} for fid in have}
    if have:
        q = multipletests(list(have.values()), method="fdr_bh")[1]
        for fid, qi in zip(have, q):
            out[fid]["q_bh"] = float(qi)
    prim = [fid for fid in have if ledger[fid].family == "primary"]
    if prim:
        ph = multipletests([have[fid] for fid in prim], method="holm")[1]
        for fid, pi in zip(prim, ph):
            out[fid]["p_holm"] = float(pi)
    for fid, d in out.items():
        d["p_adjusted"] = d["p_holm"] if ledger[fid].family == "primary" else d["q_bh"]
        d["m"] = len(prim) if ledger[fid].family == "primary" else len(have)
    return out


def adjusted_verdict(f: Finding, v: dict | None, adj: dict[str, float] | None) -> tuple[str, str]:
    """The verdict with the finding's adjusted p (:func:`adjusted_p`) in place of its own; a finding without
    a p keeps its verdict."""
    if v is None or not adj:
        return verdict(f, v)
    word, why = verdict(f, {**v, "p_value": adj["p_adjusted"]})
    kind = "Holm" if f.family == "primary" else "BH"
    return word, f"{kind}-adjusted over {adj['m']}: {why}"


def finding_power(f: Finding) -> power.Power | None:
    """The power of the finding's test at its stated effect (its ``power`` entry), at its alpha and direction
    (:func:`adapterscope.power.power`, cached per design); None without a ``power`` entry."""
    s = f.power
    if s is None:
        return None
    return power.power(s.test, s.effect, s.n, strata=s.strata, alpha=f.alpha, direction=f.direction,
                       **({"null": f.null} if s.test == "binomial" else {}))


def is_estimate(word: str, pw: power.Power | None) -> bool:
    """Whether a verdict is reported as an estimate: its test has less than :data:`ESTIMATE_BELOW` power at
    its stated effect (an *undefined* verdict has no number to estimate; a finding without power is not
    labelled)."""
    return pw is not None and word in VERDICTS and word != "undefined" and pw.power < ESTIMATE_BELOW


def verdict_label(word: str, pw: power.Power | None) -> str:
    """The verdict as printed beside its power: ``word``, or e.g. ``inconclusive (estimate: power 0.19)``
    when :func:`is_estimate`. The verdict itself (:func:`verdict`) is the same either way."""
    return word + _estimate_note(word, pw)


def _estimate_note(word: str, pw: power.Power | None) -> str:
    return f" (estimate: power {pw.power:.2f})" if is_estimate(word, pw) else ""


def power_text(pw: power.Power | None) -> str:
    """``power 0.19 at rho=0.7, n=8 (2 strata)``, or ``power n/a`` for a test the power function does not
    simulate."""
    return pw.describe() if pw is not None else "power n/a"


def power_tex(pw: power.Power | None) -> str:
    """:func:`power_text` in LaTeX (math for the effect and n)."""
    return "power n/a" if pw is None else pw.describe(tex=True)


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


def verdict_macro(fid: str) -> str:
    """The LaTeX command that prints a finding's verdict, e.g. ``\\VerdictDecorPooled``."""
    return "\\" + results.tex_name("verdict", fid)


def written_dates(root: Path | None = None) -> dict[str, str]:
    """Finding id -> the date (YYYY-MM-DD) of the commit that first added it to the ledger, from git's history
    of ``paper/findings.yml`` (one ``git log -p`` pass); empty where there is no history (a copy without .git).
    An entry whose id is not committed yet has no date: it is being written now, before its first recorded
    run."""
    import re
    import subprocess

    root_ = root or paths.project_root()
    try:
        out = subprocess.run(["git", "log", "--reverse", "--format=@@%as", "-p", "--", str(LEDGER)], cwd=root_,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    if out.returncode != 0:
        return {}
    dates: dict[str, str] = {}
    day = ""
    for line in out.stdout.splitlines():
        if line.startswith("@@") and not line.startswith("@@ "):
            day = line[2:]
            continue
        m = re.match(r"\+\s*-\s*(?:\{\s*)?id:\s*([A-Za-z0-9_.-]+)", line)
        if m and m.group(1) not in dates:
            dates[m.group(1)] = day
    return dates


def write_outputs() -> tuple[Path, Path]:
    """The paper's view of the ledger, from the current results files:

    * ``paper/generated/tables/findings.tex``: per finding its id, hypothesis and test, value, n, 95% CI, p and
      verdict (raw and adjusted), with the power of its test at its stated effect below them; a verdict whose
      power is below :data:`ESTIMATE_BELOW` is labelled an estimate; an entry the profile did not compute shows
      a dash and the verdict *undefined*;
    * ``paper/generated/findings/ledger.tex``: ``\\Verdict<Id>`` (the verdict word) and ``\\Verdict<Id>Why``
      (its reason) for every finding, ``\\Verdict<Id>Power`` (its power, or "power n/a") and
      ``\\Verdict<Id>Label`` (the verdict, followed by "(estimate: power 0.19)" where it is one), and
      ``\\NFindings``, ``\\NFindingsSupported``, ..., ``\\NFindingsEstimate``, so that a sentence of the
      paper can print a verdict instead of asserting an effect.
    """
    fmt = results.format_number
    rows, macros, counts = [], [], {k: 0 for k in VERDICTS}
    primary = {k: 0 for k in VERDICTS}
    ledger = load_ledger()
    values: dict[str, dict | None] = {}
    for fid, f in ledger.items():
        try:
            values[fid] = measured(f)
        except (FileNotFoundError, FindingError):
            values[fid] = None
    adj = adjusted_p(ledger, values)
    written = written_dates()
    estimates = 0
    for fid, f in ledger.items():
        v = values[fid]
        word, why = verdict(f, v)
        aword, awhy = adjusted_verdict(f, v, adj.get(fid))
        pw = finding_power(f)
        estimates += is_estimate(word, pw)
        counts[word] += 1
        if f.family == "primary":
            primary[aword] += 1
        name = verdict_macro(fid)
        macros += [f"\\newcommand{{{name}}}{{\\emph{{{word}}}}}",
                   f"\\newcommand{{{name}Why}}{{{results.tex_escape(why)}}}",
                   f"\\newcommand{{{name}Adj}}{{\\emph{{{aword}}}}}",
                   f"\\newcommand{{{name}AdjWhy}}{{{results.tex_escape(awhy)}}}",
                   f"\\newcommand{{{name}Power}}{{{power_tex(pw)}}}",
                   f"\\newcommand{{{name}Label}}{{{name}{{}}{_estimate_note(word, pw)}}}"]
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
        a = adj.get(fid, {})
        padj = fmt(a["p_adjusted"], 2) if "p_adjusted" in a else "--"
        when = f", written {written[fid]}" if fid in written else ""
        est, aest = _estimate_note(word, pw), " (estimate)" if is_estimate(aword, pw) else ""
        rows.append(f"\\texttt{{{tid}}} \\newline {{\\footnotesize {f.family}{when}}} & {hyp} & {val} & {n} & {ci} & {p} & "
                    f"{padj} & \\emph{{{word}}}{est} \\newline \\emph{{{aword}}}{aest} \\newline "
                    f"{{\\footnotesize {power_tex(pw)}}}")
    head = (r"finding & hypothesis (stated before the run) and test & value & $n$ & 95\% CI & $p$ & $p_\text{adj}$ & "
            r"verdict: raw, adjusted; power \\")
    table = "\n".join([r"\begin{longtable}{>{\raggedright\arraybackslash}p{0.12\linewidth}"
                       r">{\raggedright\arraybackslash}p{0.31\linewidth}rrlrr>{\raggedright\arraybackslash}p{0.12\linewidth}}",
                       r"\toprule", head, r"\midrule", r"\endfirsthead", r"\toprule", head, r"\midrule", r"\endhead",
                       r"\bottomrule", r"\endlastfoot", *[r + r" \\" for r in rows], r"\end{longtable}"]) + "\n"
    macros.append(f"\\newcommand{{\\NFindings}}{{{sum(counts.values())}}}")
    macros += [f"\\newcommand{{\\NFindings{k.capitalize()}}}{{{c}}}" for k, c in counts.items()]
    macros.append(f"\\newcommand{{\\NFindingsEstimate}}{{{estimates}}}")  # verdicts with power below 0.5
    macros.append(f"\\newcommand{{\\NPrimary}}{{{sum(primary.values())}}}")  # adjusted (Holm) verdicts
    macros += [f"\\newcommand{{\\NPrimary{k.capitalize()}}}{{{c}}}" for k, c in primary.items()]
    gen = paths.macros_dir()
    t = paths.write_text_atomic(gen / "tables" / "findings.tex", table)
    m = paths.write_text_atomic(gen / "findings" / "ledger.tex",
                                "% generated by adapterscope.findings; do not edit\n" + "\n".join(macros) + "\n")
    return t, m
