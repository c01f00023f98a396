"""Where in depth an adapter moves the representation: depth profiles, their slopes, and tests over runs.

Used by ``04_cka`` (CKA displacement profiles, the equal-step control, agreement with the crosscoder) and
``08_divergence`` (late/early activation change). A *run* is one model x corpus x layer control x seed; its layers
l = 0..L-1 sit at relative depth l / (L - 1).

Definitions:
  displacement      1 - CKA_l (debiased, unbiased HSIC), clipped below at 1e-9 so its logarithm exists; the
                    slope fit floors each layer at its own jackknife SE instead (:func:`resolution_floor`) and
                    counts the floored layers (``n_floored``).
  late / early      mean over the layers with depth >= 1 - late_frac (late) and depth <= late_frac (early),
                    with 1e-9 slack so that a layer at exactly 1 - late_frac counts as late.
  slope             least-squares slope of log10 displacement against relative depth (decades per unit depth);
                    positive means change concentrates near the output.
  slope CI          parametric bootstrap over token samples: each layer's debiased CKA redrawn from a normal with
                    its jackknife standard error (from ``02_capture``), the slope refitted; percentile 2.5 / 97.5.
                    One generator seeded ``seed`` draws every run's samples in run order (model, corpus, layer
                    control, seed), so a run's CI depends on the runs before it only through the generator.
  control diff      slope(equal-step) - slope(standard) of one model x corpus x seed; its CI from the difference
                    of the two runs' (independent) bootstrap draws.

Tests over runs (:func:`mean_over_units`): the layers of one run are not independent samples, so every test takes
one number per run (a slope, a difference, a rank correlation) and asks whether their mean differs from 0:
value = the mean, 95% CI = percentile bootstrap over runs, p = two-sided sign-flip permutation p over runs
(``stats.mean_difference`` against 0, paired; exact enumeration of the 2^n sign patterns when n is small).
The null is that each run's number is symmetric about 0. Fewer than two runs: value NaN with a ``reason``.

Agreement with the crosscoder (:func:`crosscoder_agreement`): per run, Spearman's rho between displacement and
the crosscoder's cross/self ratio over the crosscoder's layers; the mean of the per-run rhos is tested over runs
as above. (It replaces a p-value that pooled within-run layer ranks over runs as if every layer pair were an
independent observation.) The pooled rho of within-run ranks is kept as a description only.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import scipy.stats

from . import params, results, stats

EPS = 1e-9
RUN_KEYS = ["model", "corpus", "layer_control", "seed"]


# ------------------------------------------------------------------------------------------ profiles
def displacement(cka) -> np.ndarray:
    """1 - CKA, clipped below at 1e-9."""
    return np.clip(1 - np.asarray(cka, float), EPS, None)


def late_mask(depth, late_frac: float) -> np.ndarray:
    return np.asarray(depth, float) >= 1 - late_frac - EPS


def early_mask(depth, late_frac: float) -> np.ndarray:
    return np.asarray(depth, float) <= late_frac + EPS


def late_early(depth, values, late_frac: float) -> tuple[float, float]:
    """(mean of ``values`` over late layers, mean over early layers); NaN where a side has no layer."""
    v = np.asarray(values, float)
    lm, em = late_mask(depth, late_frac), early_mask(depth, late_frac)
    return (float(v[lm].mean()) if lm.any() else math.nan, float(v[em].mean()) if em.any() else math.nan)


def late_over_early(frame: pd.DataFrame, value: str, by: str | list[str], late_frac: float) -> pd.Series:
    """Per group of ``by``: mean ``value`` over the rows at late depth over the mean at early depth (rows of all
    runs and layers of the group pooled; ``frame`` needs a ``depth`` column)."""
    late = frame[late_mask(frame.depth, late_frac)].groupby(by)[value].mean()
    early = frame[early_mask(frame.depth, late_frac)].groupby(by)[value].mean()
    return late / early


def resolution_floor(se) -> np.ndarray:
    """Per layer, the smallest displacement the fit reads: the layer's own standard error (never below 1e-9).
    Debiased CKA can exceed 1 (a displacement of zero or below, i.e. no resolvable change); a floor of 1e-9 in
    its place puts log10 = -9 into the fit and drives the slope by noise, while one standard error is the
    displacement such a layer is measured to be at most."""
    return np.maximum(np.nan_to_num(np.asarray(se, float), nan=EPS), EPS)


def log_slope(depth, disp, floor=EPS) -> float:
    """Least-squares slope of log10(max(disp, floor)) against depth (``floor``: a number or one per layer)."""
    d = np.asarray(depth, float)
    return float(np.polyfit(d, np.log10(np.maximum(np.asarray(disp, float), np.broadcast_to(floor, d.shape))), 1)[0])


def bootstrap_slopes(depth, cka, se, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) slopes of log10(max(1 - CKA*, floor)) against depth, CKA* ~ N(cka, se^2) independently per
    layer, floor = :func:`resolution_floor` (se)."""
    d = np.asarray(depth, float)
    draws = rng.normal(np.asarray(cka, float)[None], np.asarray(se, float)[None], size=(n_boot, len(d)))
    disp = np.maximum(1 - draws, resolution_floor(se)[None])
    X = np.vstack([d, np.ones_like(d)]).T
    return np.linalg.lstsq(X, np.log10(disp).T, rcond=None)[0][0]


def slope_table(per_layer: pd.DataFrame, *, late_frac: float, n_boot: int, seed: int
                ) -> tuple[pd.DataFrame, dict[tuple, np.ndarray]]:
    """One row per run: slope with its parametric-bootstrap CI, late displacement and late/early; and the bootstrap
    draws per run key (model, corpus, layer_control, seed). ``per_layer`` has the run keys and layer, depth,
    cka_debiased, se (its jackknife SE) and disp columns."""
    rng = np.random.default_rng(seed)
    rows, boots = [], {}
    for key, g in per_layer.groupby(RUN_KEYS):
        g = g.sort_values("layer")
        b = bootstrap_slopes(g.depth.to_numpy(), g.cka_debiased.to_numpy(), g.se.to_numpy(), n_boot, rng)
        boots[key] = b
        late, early = late_early(g.depth, g.disp, late_frac)
        floor = resolution_floor(g.se.to_numpy())
        raw = 1 - g.cka_debiased.to_numpy(float)
        rows.append({**dict(zip(RUN_KEYS, key)), "slope": log_slope(g.depth, raw, floor),
                     "n_floored": int((raw < floor).sum()),
                     "slope_lo": float(np.quantile(b, 0.025)), "slope_hi": float(np.quantile(b, 0.975)),
                     "late_disp": late, "late_over_early": late / early})
    return pd.DataFrame(rows), boots


def control_table(slopes: pd.DataFrame, boots: dict[tuple, np.ndarray], control: str,
                  pairs: Iterable[tuple[str, str, int]], standard: str = "none") -> pd.DataFrame:
    """Standard vs control slope for every (model, corpus, seed) of ``pairs`` that has both runs, in that order:
    both slopes with their CIs, the difference (control minus standard) with the CI of the difference of the
    bootstrap draws, and whether the control's CI lies above 0."""
    idx = slopes.set_index(RUN_KEYS)
    rows = []
    for m, c, s in pairs:
        a, b = boots.get((m, c, standard, s)), boots.get((m, c, control, s))
        if a is None or b is None:
            continue
        sa, sb = idx.loc[(m, c, standard, s)], idx.loc[(m, c, control, s)]
        diff = b - a
        rows.append({"model": m, "corpus": c, "seed": s, "slope_none": sa.slope, "none_lo": sa.slope_lo,
                     "none_hi": sa.slope_hi, "slope_ctl": sb.slope, "ctl_lo": sb.slope_lo, "ctl_hi": sb.slope_hi,
                     "diff": sb.slope - sa.slope, "diff_lo": float(np.quantile(diff, 0.025)),
                     "diff_hi": float(np.quantile(diff, 0.975)), "ctl_positive": bool(sb.slope_lo > 0)})
    cols = ["model", "corpus", "seed", "slope_none", "none_lo", "none_hi", "slope_ctl", "ctl_lo", "ctl_hi", "diff",
            "diff_lo", "diff_hi", "ctl_positive"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------------ tests over runs
P_TESTS = ("sign-flip", "t")


def mean_over_units(values, *, unit: str = "runs", n_boot: int = 9999, n_perm: int = 9999, seed: int = 0,
                    p_test: str = "sign-flip") -> dict:
    """Mean of one number per unit with a percentile bootstrap CI over units and a two-sided p: the sign-flip
    permutation p (H0: each unit's number is symmetric about 0), or with ``p_test="t"`` the one-sample t-test's
    (H0: mean 0, units normal), which has no floor: the sign-flip p cannot fall below 2 / 2^n (0.0078 at n = 8),
    too coarse to pass a Holm correction in a family of eight. Both p-values are kept (``p_sign_flip``,
    ``p_t``). NaN values are dropped (counted in ``n_dropped``); fewer than two units left: value NaN with a
    ``reason``."""
    if p_test not in P_TESTS:
        raise ValueError(f"p_test must be one of {P_TESTS}, got {p_test!r}")
    v = np.asarray(values, float).ravel()
    keep = np.isfinite(v)
    v = v[keep]
    name = "two-sided sign-flip permutation p" if p_test == "sign-flip" else "two-sided one-sample t-test p"
    out = {"n": int(len(v)), "n_dropped": int((~keep).sum()), "unit": unit,
           "test": f"mean over {unit}; {name} and 95% percentile bootstrap CI over {unit}"}
    if len(v) < 2:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "p_method": "",
                **out, "reason": f"fewer than two {unit} ({len(v)})"}
    r = stats.mean_difference(v, np.zeros_like(v), paired=True, n_boot=n_boot, n_permutations=n_perm, seed=seed)
    p_t = float(scipy.stats.ttest_1samp(v, 0.0).pvalue) if np.ptp(v) > 0 else (1.0 if v[0] == 0 else 0.0)
    p, method = (r.p_value, r.p_method) if p_test == "sign-flip" else (p_t, "one-sample t-test")
    return {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "p_value": p, "p_method": method,
            "p_sign_flip": r.p_value, "p_t": p_t, **out}


def slope_finding(slopes: pd.DataFrame, layer_control: str = "none", **kw) -> dict:
    """Mean slope of the runs with ``layer_control``, tested over model x corpus units (:func:`mean_over_units`):
    seeds of one (model, corpus) are replicates, so their slopes are averaged first (``n_runs`` says how many
    runs went in)."""
    sub = slopes.loc[slopes.layer_control == layer_control]
    units = sub.groupby(["model", "corpus"], sort=False).slope.mean() if len(sub) else pd.Series(dtype=float)
    return {**mean_over_units(units, unit="model x corpus units (seeds averaged)", **kw), "n_runs": int(len(sub))}


def control_diff_finding(ctl: pd.DataFrame, **kw) -> dict:
    """Mean of slope(equal-step) - slope(standard) over model x corpus units (the seeds of a unit averaged
    first), tested over those units (:func:`mean_over_units`; ``p_test`` chooses the p)."""
    units = ctl.groupby(["model", "corpus"], sort=False)["diff"].mean() if len(ctl) else []
    return {**mean_over_units(units, unit="model x corpus units (control pairs, seeds averaged)", **kw),
            "n_pairs": int(len(ctl))}


def trimmed(per_layer: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table with the trimmed readings (without the massive-activation tokens) in the columns
    :func:`slope_table` reads (``cka_debiased``, ``se``, ``disp``), for the runs that recorded them."""
    if "cka_trimmed" not in per_layer:
        return per_layer.iloc[0:0]
    t = per_layer.dropna(subset=["cka_trimmed", "se_trimmed"]).copy()
    t["cka_debiased"], t["se"] = t.cka_trimmed, t.se_trimmed
    t["disp"] = (1 - t.cka_debiased).clip(lower=EPS)
    return t


# ------------------------------------------------------------------------------------------ crosscoder agreement
def crosscoder_agreement(per_layer: pd.DataFrame, ratios: dict[tuple, pd.DataFrame], **kw
                         ) -> tuple[pd.DataFrame, dict]:
    """Per run with a crosscoder: Spearman's rho between displacement and the cross/self ratio over the
    crosscoder's layers; and the summary: the mean of per-run rhos, averaged over seeds per model x corpus and
    tested over those units (:func:`mean_over_units`),
    plus the descriptive pooled rho of within-run ranks (``rho_pooled``; no p-value: its layer pairs are not
    independent). ``ratios`` maps a run key (model, corpus, layer_control, seed) to a frame with ``layer`` and
    ``ratio_ft``; ``per_layer`` has the run keys, layer and disp. A run whose rho is undefined (fewer than two
    layers, or a constant column) is kept in the table and dropped from the mean."""
    runs = {key: g.set_index("layer").disp for key, g in per_layer.groupby(RUN_KEYS)}
    rows, pairs = [], []
    for key, per in ratios.items():
        disp = per.layer.map(runs.get(key, pd.Series(dtype=float))).to_numpy(float)
        ratio = per.ratio_ft.to_numpy(float)
        ok = np.isfinite(disp) & np.isfinite(ratio)
        rho = float(stats.spearman_rho(disp[ok], ratio[ok])) if ok.sum() >= 2 else math.nan
        rows.append({**dict(zip(RUN_KEYS, key)), "n_layers": int(ok.sum()), "rho": rho})
        pairs.append(pd.DataFrame({"run": [str(key)] * int(ok.sum()), "disp": disp[ok], "ratio": ratio[ok]}))
    table = pd.DataFrame(rows, columns=[*RUN_KEYS, "n_layers", "rho"])
    units = (table.groupby(["model", "corpus", "layer_control"], sort=False).rho.mean() if len(table)
             else pd.Series(dtype=float))  # seeds are replicates: averaged per model x corpus (x layer control)
    summary = mean_over_units(units, unit="model x corpus units (seeds averaged)", **kw)
    pooled = math.nan
    if pairs and sum(len(p) for p in pairs) >= 2:
        allp = pd.concat(pairs, ignore_index=True)
        pooled = float(stats.spearman_rho(allp.groupby("run").disp.rank(), allp.groupby("run").ratio.rank()))
    summary.update(rho_pooled=pooled, n_pairs=int(table.n_layers.sum()), n_runs=int(len(table)))
    return table, summary


# ------------------------------------------------------------------------------------------ loading
def run_cells(model_names: Sequence[str], corpus_names: Sequence[str], layer_controls: Sequence[str],
              seeds_for: Callable[[str], Sequence[int]], control: str = "", control_models: Sequence[str] = (),
              control_corpora: Sequence[str] = (), control_seeds: Sequence[int] = ()) -> list[tuple]:
    """Run keys of the main grid, then of the control runs not already in it."""
    cells = [(m, c, lc, s) for m in model_names for c in corpus_names for lc in layer_controls for s in seeds_for(m)]
    if control:
        cells += [(m, c, control, s) for m in control_models for c in control_corpora for s in control_seeds
                  if (m, c, control, s) not in cells]
    return cells


def load_cka(cells: Iterable[tuple], on_input: Callable[[str, str], None] | None = None
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-layer CKA of every run, per-layer relative weight update of every run) from ``02_capture`` and
    ``01_finetune`` through the results API. Adds ``disp`` (debiased) and ``disp_biased``."""
    rows, wrows = [], []
    for m, c, lc, s in cells:
        rid = params.run_key(m, c, lc, f"s{s}")
        cap, ft = results.load("02_capture", rid), results.load("01_finetune", rid)
        if on_input:
            on_input(f"02/{rid}", results.sha256_file(results.results_path("02_capture", rid)))
        L = cap["values"]["num_layers"]
        run = {"model": m, "corpus": c, "layer_control": lc, "seed": s}
        for key, v in cap["values"]["cka"].items():
            layer = int(key.split(".")[1])
            rows.append({**run, "layer": layer, "depth": layer / (L - 1), "L": L, "cka": v["cka"],
                         "cka_se": v["cka_se"], "cka_debiased": v["cka_debiased"], "se": v["cka_debiased_se"],
                         "n_tokens": v["n_tokens"], "cka_trimmed": v.get("cka_trimmed_debiased", math.nan),
                         "se_trimmed": v.get("cka_trimmed_debiased_se", math.nan)})
        wrows += [{**run, "layer": layer, "depth": layer / (L - 1), "update_ratio": r}
                  for layer, r in enumerate(ft["values"]["layer_update_ratio"])]
    df = pd.DataFrame(rows)
    df["disp"] = (1 - df.cka_debiased).clip(lower=EPS)
    df["disp_biased"] = (1 - df.cka).clip(lower=EPS)
    return df, pd.DataFrame(wrows)


def load_crosscoder_ratios(cells: Iterable[tuple], on_input: Callable[[str, str], None] | None = None
                           ) -> dict[tuple, pd.DataFrame]:
    """Run key -> ``03_crosscoder``'s per-layer table (layer, ratio_ft, ...) for the runs that have one."""
    out = {}
    for m, c, lc, s in cells:
        rid = params.run_key(m, c, lc, f"s{s}")
        path = results.results_path("03_crosscoder", rid)
        if not path.exists():
            continue
        if on_input:
            on_input(f"03/{rid}", results.sha256_file(path))
        out[(m, c, lc, s)] = pd.DataFrame(results.load("03_crosscoder", rid)["values"]["per_layer"])
    return out
