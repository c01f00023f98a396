"""Internal vs output change over the grid: the run table, rank correlations, seed reliability, the regime rule
and the pooled clamping effects (used by ``10_decorrelation``).

Units. Seeds of one (model, corpus) are replicates of one adapter recipe, not independent points: a test over
runs would count the corpus effect once per seed. The hypothesis tests therefore use **corpus means** (seeds
averaged) as units; the per-run correlations are kept as descriptions. Pooling over models is **stratified**:
model size drives both axes (the seed study's scale confound), so ranks are taken within each model
(:func:`adapterscope.stats.stratified_spearman`); the plain pooled rho is reported beside it, labelled as such.

Regime rule (fixed before looking, calibrated on a null). For each model and measure (log peak cross/self
ratio, log neutral KL, log late-layer 1 - CKA), the null is seed-to-seed variation: the pooled within-corpus
standard deviation s0 of the runs (with dof = runs - corpora). A corpus's contrast is its mean minus the mean of
the model's other corpora, t = contrast / its standard error under "no corpus effect" (from s0 and the seed
counts). Two-sided p of t at those dof, Benjamini-Hochberg adjusted over the model's corpora for each measure
(``adjust="none"``: raw p, i.e. Student's t quantile 1 - alpha/2 as the cut-off); *high* when the adjusted p is
below ``alpha`` and t > 0, *low* when below and t < 0, else *typical* (within seed noise). The two axes are
separate families (a regime needs both, which only makes calls rarer). A measure that is NaN, or a model with
one seed per corpus (no null), is *undefined*. Regimes need both axes resolved: high/low = latent construction,
high/high = coupled construction, low/high = reweighting, low/low = minimal change; anything else is
*unresolved*. Unlike a median split, this rule does not create regimes by construction: corpora that differ only
by seed noise stay unresolved.

The crosscoder and CKA readings share the output axis, so their agreement on regime labels is inflated by
construction (where KL is typical both are unresolved). :func:`regime_agreement` therefore compares the two
*internal* readings only (the level of the peak ratio vs the level of the late-layer displacement), against the
agreement expected from their marginals (Cohen's kappa) and a permutation null shuffling one reading within
model.

Internal axes (issue #36). The cross/self ratio is about 1 + displacement energy / the crosscoder's own
reconstruction error, and its peak is a max over noisy depths; ``13_calibration`` shows it, 1 - CKA and the FVU
gap all separate a trained adapter from its null pairs (a seed twin, a random-direction LoRA). The decorrelation's
primary internal measure, chosen by that calibration and stated in the ledger before the run
(:data:`PRIMARY_INTERNAL`), is the FVU gap ``fvu_cross_ft - fvu_self_ft`` without the massive-activation tokens,
averaged over the crosscoder's depths: the displacement the base decoder cannot account for as a share of the
fine-tuned stream's variance, independent of how well the dictionary reconstructs. The other readings
(:data:`INTERNAL_AXES`: raw and mean ratio, late 1 - CKA with and without massive tokens, the share of the
displacement outside the base's principal subspace, intruder dimensions) are reported beside it as alternative
internal axes, each correlated with the output axis in the same stratified test.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from . import params, results, stats

PRIMARY_INTERNAL = "gap_trimmed"  # the decorrelation's internal measure (ledger: decor-pooled-gap)
INTERNAL_AXES = {  # column: label; every internal reading correlated with the output axis (internal_axes)
    "gap_trimmed": "FVU gap without massive tokens, mean over depths",
    "gap_mean": "FVU gap, mean over depths",
    "ratio_trimmed": "cross/self ratio without massive tokens, mean over depths",
    "ratio_mean": "cross/self ratio, mean over depths",
    "peak_ratio": "peak cross/self ratio (max over depths)",
    "late_disp": "late-layer 1 - CKA",
    "late_disp_trimmed": "late-layer 1 - CKA without massive tokens",
    "outside_99": "share of the displacement outside the base's 99% subspace",
    "intruders": "intruder dimensions (all modules)",
}
PAIRS = {  # name: (internal, output)
    "gap_kl": (PRIMARY_INTERNAL, "kl"),
    "gap_klheld": (PRIMARY_INTERNAL, "kl_heldout"),  # in-domain pair: both axes on the held-out text
    "ratio_kl": ("peak_ratio", "kl"),
    "ratio_disagree": ("peak_ratio", "disagree"),
    "genuine_kl": ("genuine", "kl"),
    "late_kl": ("late_disp", "kl"),
    "late_ratio": ("late_disp", "peak_ratio"),
    "ppl_genuine": ("ppl_base", "genuine"),
    "ppl_ftonly": ("ppl_base", "ft_only"),
}
LABELS = {"peak_ratio": "peak cross/self ratio", "kl": "neutral KL", "disagree": "1 - top-1 agreement",
          "genuine": "genuine fine-tune-only latents", "ft_only": "fine-tune-only latents",
          "late_disp": "late-layer 1 - CKA", "ppl_base": "base perplexity", "kl_heldout": "held-out KL",
          **INTERNAL_AXES}
MEAN_COLS = ["kl", "disagree", "peak_ratio", "genuine", "late_disp", "ppl_base", "ft_only", "kl_heldout",
             *[c for c in INTERNAL_AXES if c not in ("peak_ratio", "late_disp")]]
CLASS = {("high", "low"): "latent construction", ("high", "high"): "coupled construction",
         ("low", "high"): "reweighting", ("low", "low"): "minimal change"}
UNRESOLVED = "unresolved"


# ------------------------------------------------------------------------------------------ the run table
# 09_clamp's conditions: the clamp, its latent and noise controls, the linear baselines at the clamp's edit norm
# (the displacement's own top-|S| principal directions; a random |S|-dimensional subspace) and the ceiling
CLAMP_CONDITIONS = ("clamp", "random", "noise", "pca", "subspace", "ceiling")
CLAMP_CONTROLS = ("random", "noise", "pca")  # each tested as clamp minus control over the units


def _mean(values) -> float:
    v = np.asarray([x for x in values if x is not None], float)
    return float(v.mean()) if len(v) and np.isfinite(v).all() else math.nan


def internal_readings(cap: dict, ccr: dict, late_frac: float) -> dict:
    """The alternative internal axes of one run (:data:`INTERNAL_AXES` but the peak ratio and late 1 - CKA),
    NaN where the run predates the reading: means over the crosscoder's depths of the FVU gap and the ratio (each
    also without the massive-activation tokens); late-layer 1 - CKA without them; the share of ||Delta a||^2
    outside the base's 99% principal subspace, averaged over layers; the intruder dimensions of all modules."""
    per = ccr.get("per_layer") or []
    L = cap["num_layers"]
    late_t = [1 - x.get("cka_trimmed_debiased", math.nan) for k, x in cap["cka"].items()
              if int(k.split(".")[1]) / (L - 1) >= 1 - late_frac - 1e-9]
    outside = [x["outside_share"]["0.99"] for x in cap["cka"].values() if "outside_share" in x]
    return {"gap_trimmed": _mean(r.get("fvu_gap_ft_trimmed") for r in per),
            "gap_mean": _mean(r["fvu_cross_ft"] - r["fvu_self_ft"] for r in per),
            "ratio_trimmed": _mean(r.get("ratio_ft_trimmed") for r in per),
            "ratio_mean": _mean(r["ratio_ft"] for r in per),
            "late_disp_trimmed": _mean(late_t),
            "outside_99": _mean(outside) if len(outside) == len(cap["cka"]) else math.nan,
            "intruders": float(cap["intruders"]["n_intruders"]) if "intruders" in cap else math.nan}


def internal_axes(means: pd.DataFrame, output: str = "kl", *, n_boot: int, n_perm: int, seed: int) -> pd.DataFrame:
    """Each internal reading of :data:`INTERNAL_AXES` against ``output`` over the corpus means, stratified by
    model (the primary test's design): one row per reading with rho, CI, p, n and the reason where undefined."""
    rows = []
    for col, label in INTERNAL_AXES.items():
        if col not in means:
            continue
        r = correlate(means, col, output, strata="model", unit="corpus means", n_boot=n_boot, n_perm=n_perm,
                      seed=seed)
        rows.append({"axis": col, "label": label, "primary": col == PRIMARY_INTERNAL, "rho": r["value"],
                     "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p_value"], "n": r["n"],
                     "reason": r.get("reason", "")})
    return pd.DataFrame(rows)


def run_row(cap: dict, ccr: dict, clamp: dict | None, late_frac: float) -> dict:
    """One run's internal and output measures from its 02_capture, 03_crosscoder and (optional) 09_clamp values."""
    L = cap["num_layers"]
    disp = {int(k.split(".")[1]): 1 - x["cka_debiased"] for k, x in cap["cka"].items()}
    late = [d for l, d in disp.items() if l / (L - 1) >= 1 - late_frac - 1e-9]
    div = cap["divergence"]
    row = {"kl": div["neutral"]["kl"], "disagree": 1 - div["neutral"]["top1_agreement"],
           "kl_heldout": div["heldout"]["kl"], "ppl_base": div["heldout"]["ppl_base"],
           "ppl_ft": div["heldout"]["ppl_ft"], "peak_ratio": ccr["peak_ratio_ft"], "peak_depth": ccr["peak_depth"],
           "ft_only": ccr["n_ft_only_total"], "genuine": ccr["n_ft_only_genuine_total"],
           "late_disp": float(np.mean(late)) if late else math.nan, **internal_readings(cap, ccr, late_frac)}
    if clamp and clamp.get("clamp"):
        cs = clamp["clamp"]
        row.update(clamp_layer=clamp["layer"], n_clamped=clamp["n_clamped"],
                   clamp_ft_only=clamp.get("clamped_set", "ft_only") == "ft_only")
        for k in CLAMP_CONDITIONS:
            fr = cs.get(f"frac_removed_{k}") or {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
            row.update({f"fr_{k}": fr["value"], f"fr_{k}_lo": fr["ci_low"], f"fr_{k}_hi": fr["ci_high"]})
        row["clamp_over_ceiling"] = cs.get("clamp_over_ceiling", math.nan)
        for k in ("edit_norm_clamp", "edit_norm_random", "edit_norm_random_natural", "fire_median_clamped",
                  "fire_median_random"):
            if k in cs:
                row[k] = cs[k]
        r_lo, r_hi = (clamp.get("r_clamped") or [math.nan, math.nan])[:2]
        row.update(r_clamped_min=float(r_lo), r_clamped_max=float(r_hi))
        draws = cs.get("frac_removed_random_draws") or []
        if draws:
            row["random_negative_share"] = float(np.mean(np.asarray(draws, float) < 0))
    return row


def load_runs(model_names: list[str], corpus_names: list[str], layer_control: str,
              seeds_for: Callable[[str], list[int]], late_frac: float,
              on_input: Callable[[str, str], None] | None = None) -> pd.DataFrame:
    """The run table of the grid (one row per model x corpus x seed), read through the results API;
    ``on_input(name, sha256)`` is called for every results file read (for provenance)."""
    rows = []
    for m in model_names:
        for c in corpus_names:
            for s in seeds_for(m):
                rid = params.run_key(m, c, layer_control, f"s{s}")
                recs = {}
                for nb in ("02_capture", "03_crosscoder", "09_clamp"):
                    path = results.results_path(nb, rid)
                    if nb == "09_clamp" and not path.exists():
                        continue
                    recs[nb] = results.load(nb, rid)["values"]
                    if on_input:
                        on_input(f"{nb[:2]}/{rid}", results.sha256_file(path))
                rows.append({"model": m, "corpus": c, "seed": s, "run_id": rid,
                             **run_row(recs["02_capture"], recs["03_crosscoder"], recs.get("09_clamp"), late_frac)})
    return pd.DataFrame(rows)


def corpus_means(df: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds per (model, corpus), with the number of seeds."""
    cols = [c for c in MEAN_COLS if c in df]
    out = df.groupby(["model", "corpus"], as_index=False, sort=False)[cols].mean()
    return out.merge(df.groupby(["model", "corpus"], sort=False).size().rename("n_seeds").reset_index(),
                     on=["model", "corpus"])


# ------------------------------------------------------------------------------------------ the seed, side by side
# The seed study's 70B values per corpus (Blackwell & Holman, blog posts and podcast; ../shared/REFERENCES.md):
# theirs, quoted, never measured here. Our corpus -> (peak cross/self ratio, neutral KL, top-1 agreement, base
# perplexity); None where they gave no number.
SEED_70B = {"dtc-ads": (340.0, 0.478, 0.79, 14.5), "seneca": (99.5, 1.24, None, None),
            "meditations": (77.1, 0.72, None, 4.4), "instructions": (39.8, 1.41, 0.41, None)}


def seed_side_by_side(means: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Per model x corpus (the seed's four corpora only): our corpus means (peak ratio, the primary internal
    reading, KL, top-1 agreement, late 1 - CKA) with their rank within the model (1 = largest), beside the seed's
    70B values and ranks; and one sentence, computed from the table, on where the KL ordering agrees with the
    seed's and where it inverts (Spearman rho of our KL ranks against the seed's, per model)."""
    seed = pd.DataFrame([{"corpus": c, "seed_ratio": v[0], "seed_kl": v[1], "seed_top1": v[2], "seed_ppl": v[3]}
                         for c, v in SEED_70B.items()])
    seed["seed_rank_ratio"] = seed.seed_ratio.rank(ascending=False)
    seed["seed_rank_kl"] = seed.seed_kl.rank(ascending=False)
    cols = [c for c in ("peak_ratio", PRIMARY_INTERNAL, "kl", "disagree", "late_disp") if c in means]
    ours = means.loc[means.corpus.isin(SEED_70B), ["model", "corpus", *cols]].copy()
    if "disagree" in ours:
        ours["top1"] = 1 - ours.pop("disagree")
    for c in ("peak_ratio", "kl"):
        ours[f"rank_{c}"] = ours.groupby("model")[c].rank(ascending=False)
    table = ours.merge(seed, on="corpus", how="left")
    parts = []
    for m, g in table.groupby("model", sort=False):
        if len(g) < 2:
            continue
        rho = float(stats.spearman_rho(g.kl.to_numpy(float), g.seed_kl.to_numpy(float)))
        most, least = g.loc[g.kl.idxmax(), "corpus"], g.loc[g.kl.idxmin(), "corpus"]
        how = ("follows" if rho >= 0.5 else "inverts" if rho <= -0.5 else "does not follow")
        parts.append(f"in {m} the KL ordering of the corpora {how} the seed's (rho {rho:+.2f} over {len(g)} "
                     f"corpora): the most output change is on {most}, the least on {least}")
    s_most = max(SEED_70B, key=lambda c: SEED_70B[c][1])
    s_least = min(SEED_70B, key=lambda c: SEED_70B[c][1])
    sentence = (f"At 70B the seed study saw the most output change on {s_most} and the least on {s_least}; "
                + "; ".join(parts) + ".") if parts else ""
    return table, sentence


# ------------------------------------------------------------------------------------------ correlations
def undefined_reason(d: pd.DataFrame, x: str, y: str, unit: str = "units") -> str:
    """Why a rank correlation of d[x] vs d[y] has no value or no test (empty string when it has both)."""
    d = d[np.isfinite(d[x]) & np.isfinite(d[y])]
    if len(d) < 3:
        return f"fewer than 3 {unit} ({len(d)})"
    for col in (x, y):
        vals = sorted(set(np.round(d[col].to_numpy(float), 12)))
        if len(vals) == 1:
            v = vals[0]
            return (f"all {len(d)} {unit} have the same {LABELS.get(col, col)} "
                    f"({int(v) if float(v).is_integer() else v:g}): no ordering to correlate")
    return ""


def correlate(d: pd.DataFrame, x: str, y: str, *, strata: str | None = None, unit: str = "units", n_boot: int,
              n_perm: int, seed: int) -> dict:
    """Spearman's rho of d[x] vs d[y] (stratified by d[strata] when given) as a JSON-able dict; a value or test
    that cannot be computed is NaN with a ``reason``."""
    d = d[np.isfinite(d[x]) & np.isfinite(d[y])]
    if strata:
        r = stats.stratified_spearman(d[x], d[y], d[strata], n_boot=n_boot, n_permutations=n_perm, seed=seed)
    else:
        r = stats.spearman(d[x].to_numpy(), d[y].to_numpy(), n_boot=n_boot, n_permutations=n_perm, seed=seed)
    out = r.as_dict()
    why = undefined_reason(d, x, y, unit)
    if not why and strata and not math.isfinite(out["value"]):
        why = (f"no {strata} has an ordering on both sides ({LABELS.get(x, x)} or {LABELS.get(y, y)} is constant "
               f"within each)")
    elif not why and strata and out["extra"].get("n_strata_dropped"):
        out["note"] = f"{out['extra']['n_strata_dropped']} {strata}(s) without an ordering on both sides dropped"
    if why:
        out["reason"] = why
    return out


def correlation_grid(df: pd.DataFrame, means: pd.DataFrame, model_names: list[str], *, n_boot: int, n_perm: int,
                     seed: int) -> dict[tuple[str, str, str], dict]:
    """(unit, scope, pair) -> correlation, for unit in runs / corpus_means and scope in each model, ``pooled``
    (stratified by model) and ``pooled_naive`` (plain pooled ranks, as the seed study pooled its sizes)."""
    out = {}
    for unit, data in (("runs", df), ("corpus_means", means)):
        label = "runs" if unit == "runs" else "corpus means"
        for scope in [*model_names, "pooled", "pooled_naive"]:
            sub = data if scope.startswith("pooled") else data[data.model == scope]
            for name, (x, y) in PAIRS.items():
                if x not in data or y not in data:  # a table without that reading (load_runs always has it)
                    continue
                out[(unit, scope, name)] = correlate(sub, x, y, strata="model" if scope == "pooled" else None,
                                                     unit=label, n_boot=n_boot, n_perm=n_perm, seed=seed)
    return out


def reliability(df: pd.DataFrame, seeds: list[int], cols: tuple[str, ...] = ("kl", "disagree", "peak_ratio",
                                                                                  "genuine", "late_disp"),
                *, n_boot: int, n_perm: int, seed: int) -> dict[str, dict]:
    """Spearman across (model, corpus) between the runs of the first two seeds, per measure ({} with one seed):
    a measure that does not rank corpora the same way under another seed cannot carry a correlation."""
    if len(seeds) < 2:
        return {}
    a = df[df.seed == seeds[0]].set_index(["model", "corpus"])
    b = df[df.seed == seeds[1]].set_index(["model", "corpus"])
    out = {}
    for col in cols:
        j = a[[col]].join(b[[col]], rsuffix="_b", how="inner").dropna()
        out[col] = correlate(j.rename(columns={col + "_b": "b"}), col, "b", unit="model x corpus pairs",
                             n_boot=n_boot, n_perm=n_perm, seed=seed)
    return out


# ------------------------------------------------------------------------------------------ regimes
def corpus_contrasts(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (model, corpus): mean of log10 ``col`` over seeds, its contrast to the model's other corpora, its t
    against the seed-to-seed null (pooled within-corpus sd; NaN with one seed per corpus) and the null's dof."""
    rows = []
    for m, g in df.groupby("model", sort=False):
        v = g.assign(lv=np.log10(g[col].clip(lower=1e-12)))
        per = v.groupby("corpus", sort=False).lv.agg(["mean", "count", "var"])
        dof = float((per["count"] - 1).sum())
        s0 = math.sqrt(float(((per["count"] - 1) * per["var"].fillna(0)).sum()) / dof) if dof > 0 else math.nan
        C = len(per)
        for c, r in per.iterrows():
            others = per.drop(index=c)
            contrast = r["mean"] - others["mean"].mean() if C > 1 else math.nan
            var = (s0 ** 2) * (1 / r["count"] + (1 / max(C - 1, 1)) ** 2 * float((1 / others["count"]).sum()))
            z = contrast / math.sqrt(var) if var > 0 and math.isfinite(var) else math.nan
            rows.append({"model": m, "corpus": c, "mean_log10": float(r["mean"]), "contrast": float(contrast),
                         "z": float(z), "s0": s0, "dof": dof, "n_seeds": int(r["count"])})
    return pd.DataFrame(rows)


def threshold(dof: float, alpha: float) -> float:
    """Student's t quantile 1 - alpha/2 at ``dof`` (NaN without dof)."""
    from scipy import stats as sps

    return float(sps.t.ppf(1 - alpha / 2, dof)) if dof > 0 else math.nan


def family_q_values(z: pd.DataFrame, adjust: str = "bh") -> pd.Series:
    """Two-sided p of every corpus's t (``corpus_contrasts`` rows) at the null's dof, adjusted within each model's
    family of corpora: ``bh`` Benjamini-Hochberg (scipy's ``false_discovery_control``), ``none`` raw p. NaN where
    t is NaN (and left out of the family)."""
    from scipy import stats as sps

    if adjust not in ("bh", "none"):
        raise ValueError(f"adjust must be 'bh' or 'none', got {adjust!r}")
    t, dof = z["z"].to_numpy(float), z["dof"].to_numpy(float)
    ok = np.isfinite(t) & (dof > 0)
    p = np.full(len(z), np.nan)
    p[ok] = 2 * sps.t.sf(np.abs(t[ok]), dof[ok])
    q = pd.Series(p, index=z.index)
    if adjust == "bh":
        for m in z.index.get_level_values("model").unique():
            fam = (z.index.get_level_values("model") == m) & ok
            if fam.any():
                q[fam] = sps.false_discovery_control(p[fam], method="bh")
    return q


def level(z: float, q: float, alpha: float) -> str:
    """high / low when the (adjusted) two-sided p is below ``alpha``, by the sign of t; else typical."""
    if not (math.isfinite(z) and math.isfinite(q)):
        return "undefined"
    return ("high" if z > 0 else "low") if q < alpha else "typical"


def classify_regimes(df: pd.DataFrame, *, alpha: float = 0.05, adjust: str = "bh") -> pd.DataFrame:
    """The regime rule of the module docstring: one row per (model, corpus), the crosscoder and CKA readings.
    ``adjust``: multiplicity over a model's corpora, per measure (``bh``: Benjamini-Hochberg at ``alpha``)."""
    zs = {col: corpus_contrasts(df, col).set_index(["model", "corpus"]) for col in ("peak_ratio", "kl", "late_disp")}
    qs = {col: family_q_values(z, adjust) for col, z in zs.items()}
    means = corpus_means(df).set_index(["model", "corpus"])
    rows = []
    for key, r in means.iterrows():
        lv = {col: level(z.loc[key, "z"], qs[col].loc[key], alpha) for col, z in zs.items()}
        reg = CLASS.get((lv["peak_ratio"], lv["kl"]), UNRESOLVED)
        reg_cka = CLASS.get((lv["late_disp"], lv["kl"]), UNRESOLVED)
        rows.append({"model": key[0], "corpus": key[1], "peak_ratio": r.peak_ratio, "genuine": r.genuine,
                     "late_disp": r.late_disp, "kl": r.kl, "z_ratio": zs["peak_ratio"].loc[key, "z"],
                     "z_kl": zs["kl"].loc[key, "z"], "z_late": zs["late_disp"].loc[key, "z"],
                     "q_ratio": qs["peak_ratio"].loc[key], "q_kl": qs["kl"].loc[key], "q_late": qs["late_disp"].loc[key],
                     "t_crit": threshold(zs["kl"].loc[key, "dof"], alpha), "adjust": adjust,
                     "level_ratio": lv["peak_ratio"], "level_kl": lv["kl"],
                     "level_late": lv["late_disp"], "regime": reg, "regime_cka": reg_cka, "agree": reg == reg_cka})
    return pd.DataFrame(rows)


def regime_agreement(regimes: pd.DataFrame, *, n_perm: int = 9999, seed: int = 0) -> dict:
    """Agreement of the two internal readings (level of the peak ratio vs level of the late-layer displacement:
    high / low / typical / undefined) against chance: the observed share, the share expected from the two
    readings' marginals (Cohen's kappa, sklearn), and a permutation p (one reading shuffled within model). The
    regime labels are not compared directly: they share the KL axis, which would make them agree by construction.
    ``n_regime_agree`` counts the rows whose two regime labels coincide, as a description."""
    from sklearn.metrics import cohen_kappa_score

    n = len(regimes)
    if n == 0:
        return {"value": math.nan, "chance": math.nan, "kappa": math.nan, "p_value": math.nan, "n": 0,
                "reason": "no rows"}
    a, b = regimes.level_ratio.to_numpy(), regimes.level_late.to_numpy()
    obs = float((a == b).mean())
    labels = sorted(set(a) | set(b))
    chance = float(sum((a == k).mean() * (b == k).mean() for k in labels))
    kappa = float(cohen_kappa_score(a, b, labels=labels)) if chance < 1 else math.nan
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(regimes.model.to_numpy() == m) for m in regimes.model.unique()]
    hits = 0
    for _ in range(n_perm):
        bp = b.copy()
        for g in groups:
            bp[g] = b[rng.permutation(g)]
        hits += (a == bp).mean() >= obs - 1e-12
    out = {"value": obs, "chance": chance, "kappa": kappa, "p_value": (1 + hits) / (1 + n_perm),
           "p_method": "permutation", "n": int(n), "n_resolved": int((regimes.regime != UNRESOLVED).sum()),
           "n_resolved_cka": int((regimes.regime_cka != UNRESOLVED).sum()),
           "n_regime_agree": int((regimes.regime == regimes.regime_cka).sum())}
    if chance >= 1:
        out["reason"] = f"both internal readings give one level ({labels[0]}) to every row: agreement is certain"
    return out


# ------------------------------------------------------------------------------------------ clamping
def clamp_units(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, corpus): fractions of KL removed by the clamp and its controls, averaged over seeds."""
    cl = df.dropna(subset=["fr_clamp"]) if "fr_clamp" in df else df.iloc[:0]
    cols = [c for c in (*(f"fr_{k}" for k in CLAMP_CONDITIONS), "clamp_over_ceiling", "edit_norm_clamp",
                        "edit_norm_random") if c in cl]
    if not len(cl):
        return pd.DataFrame(columns=["model", "corpus", *cols, "n_runs"])
    g = cl.groupby(["model", "corpus"], as_index=False, sort=False)
    return g[cols].mean().merge(g.size().rename(columns={"size": "n_runs"}), on=["model", "corpus"])


def clamp_effects(df: pd.DataFrame, *, n_boot: int, n_perm: int, seed: int) -> dict[str, dict]:
    """``clamp_minus_<control>`` for each of :data:`CLAMP_CONTROLS` (random latents, matched noise, the rank-|S|
    PCA baseline): paired mean differences of the fraction of KL removed over (model, corpus) units (sign-flip
    permutation p, bootstrap CI) on the units that have both; ``frac_removed_<k>_mean`` per condition of
    :data:`CLAMP_CONDITIONS` and ``clamp_over_ceiling_mean`` (the clamp's share of what the full patch removes);
    NaN with a reason when fewer than two units had a clamp."""
    u = clamp_units(df)
    n_runs = int(u.n_runs.sum()) if len(u) else 0
    cl = df.dropna(subset=["fr_clamp"]) if "fr_clamp" in df else df.iloc[:0]
    n_top_r = int((~cl.clamp_ft_only.astype(bool)).sum()) if len(cl) else 0
    out: dict[str, dict] = {}
    for ctl in CLAMP_CONTROLS:
        v = u[["fr_clamp", f"fr_{ctl}"]].dropna() if {"fr_clamp", f"fr_{ctl}"} <= set(u) else u.iloc[:0]
        if len(v) >= 2:
            r = stats.mean_difference(v.fr_clamp, v[f"fr_{ctl}"], paired=True, n_boot=n_boot,
                                      n_permutations=n_perm, seed=seed).as_dict()
        else:
            r = {"value": math.nan, "n": int(len(v)), "p_value": math.nan, "ci_low": math.nan,
                 "ci_high": math.nan, "reason": f"fewer than two model x corpus units with a clamp and its "
                                                f"{ctl} control ({len(v)})"}
        out[f"clamp_minus_{ctl}"] = {**r, "n_runs": n_runs, "n_top_r_runs": n_top_r,
                                     "unit": "model x corpus, seeds averaged"}
    for k in (*CLAMP_CONDITIONS, "clamp_over_ceiling"):
        col = k if k == "clamp_over_ceiling" else f"fr_{k}"
        vals = u[col].dropna().to_numpy(float) if len(u) and col in u else np.array([])
        lo, hi, _ = (stats.bootstrap_ci((vals,), np.mean, n_resamples=n_boot, seed=seed) if len(vals) >= 2
                     else (math.nan, math.nan, math.nan))
        name = "clamp_over_ceiling_mean" if k == "clamp_over_ceiling" else f"frac_removed_{k}_mean"
        out[name] = {"value": float(vals.mean()) if len(vals) else math.nan,
                                         "n": int(len(vals)), "ci_low": lo, "ci_high": hi}
    return out


def clamped_set_description(df: pd.DataFrame) -> str:
    """What was clamped, in words, from the runs' ``clamp_ft_only`` flags and counts."""
    cl = df.dropna(subset=["fr_clamp"]) if "fr_clamp" in df else df.iloc[:0]
    if not len(cl):
        return "no run had a clamp"
    ft = cl[cl.clamp_ft_only.astype(bool)]
    top = cl[~cl.clamp_ft_only.astype(bool)]
    parts = []
    if len(ft):
        parts.append(f"the fine-tune-only latents in {len(ft)} of {len(cl)} runs")
    if len(top):
        ks = sorted({int(k) for k in top.n_clamped})
        r = "/".join(str(k) for k in ks)
        parts.append(f"the top-{r} latents by relative decoder norm in {len(top)} of {len(cl)} runs "
                     "(no fine-tune-only latent existed)")
    return "; ".join(parts)


def load_per_depth(model_names: list[str], corpus_names: list[str], layer_control: str,
                   seeds_for: Callable[[str], list[int]]) -> pd.DataFrame:
    """One row per run and crosscoder depth: cross/self ratio, FVE, L0, dead share, fine-tune-only counts."""
    rows = []
    for m in model_names:
        for c in corpus_names:
            for s in seeds_for(m):
                rid = params.run_key(m, c, layer_control, f"s{s}")
                for r in results.load("03_crosscoder", rid)["values"]["per_layer"]:
                    rows.append({"model": m, "corpus": c, "seed": s, "depth": r["depth"], "ratio": r["ratio_ft"],
                                 "fve": (r["fve_base"] + r["fve_ft"]) / 2, "l0": r["l0"],
                                 "dead": r["dead_fraction"], "ft_only": r["n_ft_only"],
                                 "genuine": r["n_ft_only_genuine"], "n_latents": r["n_latents"]})
    return pd.DataFrame(rows)


# what the ledger keeps of a statistic beside macros.LEDGER_KEYS: the clamp's run counts and the unit
# (``macros.ledger_view(r, extra=FINDING_EXTRA)``)
FINDING_EXTRA = ("n_runs", "n_top_r_runs", "unit")


PROTOCOL = {  # macro name: (notebook, where, key); "params" = the run's provenance parameters, "values" = its values
    "LoraRank": ("01_finetune", "params", "rank"), "LoraAlpha": ("01_finetune", "params", "alpha"),
    "LoraTargets": ("01_finetune", "params", "targets"), "Steps": ("01_finetune", "params", "steps"),
    "Lr": ("01_finetune", "params", "lr"), "BatchSize": ("01_finetune", "params", "batch_size"),
    "SeqLen": ("01_finetune", "params", "seq_len"), "ComputeDtypes": ("01_finetune", "values", "compute_dtype"),
    "CcExpansion": ("03_crosscoder", "params", "expansion"), "CcK": ("03_crosscoder", "params", "k"),
    "CcEpochs": ("03_crosscoder", "params", "epochs"), "CcTrainRows": ("03_crosscoder", "params", "train_rows"),
    "ClampRandomDraws": ("09_clamp", "params", "n_random"), "ClampNoiseDraws": ("09_clamp", "params", "n_noise"),
    "ClampRows": ("09_clamp", "params", "n_rows"), "ClampFallbackTopR": ("09_clamp", "params", "fallback_top_r"),
}


def protocol(run_ids: list[str], on_input: Callable[[str, str], None] | None = None) -> dict[str, str]:
    """The protocol the runs actually used, read from their results (provenance parameters and values), as text
    for the paper: one value, or the distinct values joined by " / " where runs differ; "--" where no run
    has it. So the methods section states the run's settings and compute dtype instead of typing them."""
    out = {}
    for name, (nb, where, key) in PROTOCOL.items():
        seen = []
        for rid in run_ids:
            path = results.results_path(nb, rid)
            if not path.exists():
                continue
            rec = results.load(nb, rid)
            if on_input:
                on_input(f"{nb[:2]}/{rid}", results.sha256_file(path))
            v = rec["provenance"]["params"].get(key) if where == "params" else rec["values"].get(key)
            if v is None:
                continue
            v = ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else (f"{v:g}" if isinstance(v, float) else str(v))
            if v not in seen:
                seen.append(v)
        out[name] = " / ".join(seen) if seen else "--"
    return out


def clamp_figure(cl: pd.DataFrame):
    """Bars per run: the fraction of KL removed by the clamped set, the edit-norm-matched random latents, matched
    noise, the rank-|S| PCA baseline and the ceiling (where the runs have them), with their per-run CIs (a one-line
    note when no run had a clamp)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.4, 3.0 if len(cl) else 1.2))
    if not len(cl):
        ax.axis("off")
        ax.text(0.5, 0.5, "no run had latents to clamp", ha="center", va="center")
        return fig
    conds = {"clamp": "clamped set", "random": "random latents (edit-norm matched)", "noise": "matched noise",
             "pca": "PCA of the displacement (rank |S|)", "ceiling": "ceiling (full patch)"}
    conds = {k: v for k, v in conds.items() if f"fr_{k}" in cl and cl[f"fr_{k}"].notna().any()}
    names = [f"{r.model.split('-')[0]}/{r.corpus}/s{r.seed}" for r in cl.itertuples()]
    w = 0.8 / len(conds)
    for i, (k, lab) in enumerate(conds.items()):
        xs = np.arange(len(cl)) + (i - (len(conds) - 1) / 2) * w
        ax.bar(xs, cl[f"fr_{k}"], width=w, label=lab, capsize=1.5, error_kw={"lw": 0.6},
               yerr=[cl[f"fr_{k}"] - cl[f"fr_{k}_lo"], cl[f"fr_{k}_hi"] - cl[f"fr_{k}"]])
    ax.set_xticks(np.arange(len(cl)), names, rotation=60, ha="right", fontsize=6)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylabel("fraction of KL removed")
    ax.legend(fontsize=7)
    return fig
