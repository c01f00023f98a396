"""Small-sample statistics: rank correlations with exact / permutation p-values, bootstrap CIs, effect sizes.

Pure tool: numpy / scipy only, imports nothing from the project.

Conventions:
  * Two-sided rank-correlation p-values are ``P(|r_perm| >= |r_obs|)`` under the null of exchangeable pairings
    (y permuted against a fixed x). For ``n <= exact_max_n`` (default 9, i.e. 9! = 362,880 orderings) every
    permutation is enumerated and the p-value is exact: n=4 with rho=-0.8 gives 8/24 = 1/3. Above that it is
    a seeded Monte Carlo permutation p-value ``(1 + #{|r_perm| >= |r_obs|}) / (1 + n_resamples)``
    (scipy.stats.permutation_test). Ties use average ranks (Spearman) and tau-b (Kendall).
  * Bootstrap CIs resample whole pairs (paired) with scipy.stats.bootstrap, seeded. Resamples on which the
    statistic is undefined (e.g. all x equal, so rho is nan) are *degenerate*: they are dropped and the
    percentile CI is taken over the rest; their share is reported as ``extra["degenerate_fraction"]``.
    :func:`mean_ci` is the one bootstrap CI of a mean (one value per unit) every module uses.
  * Every function returns a :class:`Result` (``as_dict()`` gives a JSON-able dict).

  * Stratified correlation (:func:`stratified_spearman`): when a third variable (the model) drives both x and y,
    a pooled rho mostly measures it. Ranks are taken within each stratum and centred there, so only the
    within-stratum orderings count; the null permutes y *within* strata (exact when the strata allow few enough
    orderings), and the bootstrap resamples within strata.

Public API: ``Result``, ``spearman``, ``kendall``, ``rank_correlation``, ``stratified_spearman``,
``bootstrap_ci``, ``mean_ci``, ``mean_difference``, ``binomial_rate``, ``spearman_rho``, ``kendall_tau``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

EXACT_MAX_N = 9


@dataclass
class Result:
    """A point estimate with its p-value and confidence interval (nan where not computed)."""
    statistic: str            # "spearman_rho", "kendall_tau", "mean_difference", ...
    value: float
    n: int                    # pairs (correlation, paired difference) or total observations (independent)
    p_value: float = math.nan
    p_method: str = ""        # "exact", "permutation", "" (not computed)
    ci_low: float = math.nan
    ci_high: float = math.nan
    level: float = 0.95
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["extra"] = {k: _jsonable(v) for k, v in self.extra.items()}
        return {k: _jsonable(v) for k, v in d.items()}


def _jsonable(v):
    if isinstance(v, (np.floating, float)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


# ------------------------------------------------------------------------------------------ statistics
def _pearson(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    den = np.sqrt((a * a).sum(axis) * (b * b).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis) / np.where(den > 0, den, 1.0), np.nan)


def spearman_rho(x, y, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorised; average ranks for ties; nan when x or y is constant)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return _pearson(_st.rankdata(x, axis=axis), _st.rankdata(y, axis=axis), axis)


def kendall_tau(x, y, axis: int = -1) -> np.ndarray:
    """Kendall's tau-b along ``axis`` (vectorised over leading dims; nan when x or y is constant)."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    x, y = np.broadcast_arrays(x, y)
    sx = np.sign(x[..., :, None] - x[..., None, :])
    sy = np.sign(y[..., :, None] - y[..., None, :])
    num = (sx * sy).sum((-1, -2))
    den = np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


_CORR: dict[str, Callable] = {"spearman": spearman_rho, "kendall": kendall_tau}


# ------------------------------------------------------------------------------------------ bootstrap
def bootstrap_ci(data: Sequence, statistic: Callable, *, paired: bool = True, n_resamples: int = 9999,
                 level: float = 0.95, seed: int = 0, method: str = "percentile",
                 nan_policy: str = "omit") -> tuple[float, float, float]:
    """(low, high, degenerate_fraction) of a seeded bootstrap CI (scipy.stats.bootstrap).

    ``statistic(*samples, axis=-1)`` must be vectorised along ``axis`` and may return nan on degenerate
    resamples. ``nan_policy="omit"`` (the default): those are dropped and a percentile CI is taken over the
    others (``numpy.quantile``; ``method`` is then ignored). ``nan_policy="propagate"``: scipy's own interval
    over every resample, as ``scipy.stats.bootstrap`` reports it (``scipy.stats.quantile``: nan when any
    resample is nan; otherwise equal to "omit" up to the last bit or two of floating-point rounding).
    ``paired=True`` resamples the same indices in every sample (pairs stay together; for one sample the
    resamples are the same either way)."""
    if nan_policy not in ("omit", "propagate"):
        raise ValueError(f"nan_policy must be 'omit' or 'propagate', got {nan_policy!r}")
    data = tuple(np.asarray(d, float) for d in data)
    if min(len(d) for d in data) < 2:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=paired,
                            confidence_level=level, method="percentile",
                            rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, float)
    bad = ~np.isfinite(dist)
    degenerate = float(bad.mean())
    if nan_policy == "propagate" and method == "percentile":
        return float(res.confidence_interval.low), float(res.confidence_interval.high), degenerate
    if nan_policy == "omit":
        if degenerate == 1.0:
            return math.nan, math.nan, 1.0
        if degenerate > 0 or method == "percentile":
            alpha = (1 - level) / 2
            lo, hi = np.quantile(dist[~bad], [alpha, 1 - alpha])
            return float(lo), float(hi), degenerate
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=paired,
                            confidence_level=level, method=method, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), degenerate


def mean_ci(values, n_boot: int, seed: int = 0, *, level: float = 0.95, constant_point: bool = False,
            nan_policy: str = "omit") -> Result:
    """The mean of ``values`` (1-D, one value per unit) with a seeded percentile bootstrap CI over the units:
    :func:`bootstrap_ci` of ``np.mean`` with ``n_boot`` resamples. ``value`` is the mean (nan when there are no
    values), ``n`` the number of values; the CI is nan with fewer than two values.

    ``constant_point=True``: fewer than two values, or values all ``np.allclose`` to the first, get the point
    interval (mean, mean) (nan for no values) instead of a bootstrap (``extra["constant"]``). ``nan_policy``: see
    :func:`bootstrap_ci` (``"propagate"``: a nan among the values makes the CI nan)."""
    v = np.asarray(values, float)
    n = len(v)
    value = float(v.mean()) if n else math.nan
    out = Result("mean", value, n, level=level)
    if constant_point and (n < 2 or np.allclose(v, v[0])):
        out.ci_low = out.ci_high = value
        out.extra["constant"] = True
        return out
    lo, hi, deg = bootstrap_ci((v,), np.mean, n_resamples=n_boot, level=level, seed=seed, nan_policy=nan_policy)
    out.ci_low, out.ci_high = lo, hi
    out.extra.update(n_boot=int(n_boot), degenerate_fraction=deg)
    return out


# ------------------------------------------------------------------------------------------ correlation
def rank_correlation(x, y, method: str = "spearman", *, exact_max_n: int = EXACT_MAX_N, n_permutations: int = 9999,
                     n_boot: int = 9999, level: float = 0.95, seed: int = 0) -> Result:
    """Rank correlation of paired samples with a two-sided permutation p-value and a paired bootstrap CI.

    p is exact (all n! orderings of y) for n <= ``exact_max_n``, else Monte Carlo with ``n_permutations``
    seeded draws. CI: percentile bootstrap over pairs (``n_boot`` resamples, ``n_boot=0`` skips it)."""
    if method not in _CORR:
        raise ValueError(f"method must be one of {sorted(_CORR)}, got {method!r}")
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    n = len(x)
    f = _CORR[method]
    name = {"spearman": "spearman_rho", "kendall": "kendall_tau"}[method]
    r = float(f(x, y)) if n >= 2 else math.nan
    out = Result(name, r, n, level=level, extra={"method": method})
    if n < 3 or not math.isfinite(r):
        return out
    exact = n <= exact_max_n
    perm = _st.permutation_test((y,), lambda yp, axis=-1: np.abs(f(x, yp, axis=axis)), permutation_type="pairings",
                                vectorized=True, n_resamples=np.inf if exact else n_permutations,
                                alternative="greater", batch=40320, rng=np.random.default_rng(seed))
    out.p_value = float(perm.pvalue)
    out.p_method = "exact" if exact else "permutation"
    out.extra["n_permutations"] = math.factorial(n) if exact else int(n_permutations)
    if n_boot > 0:
        lo, hi, deg = bootstrap_ci((x, y), lambda a, b, axis=-1: f(a, b, axis=axis), paired=True,
                                   n_resamples=n_boot, level=level, seed=seed)
        out.ci_low, out.ci_high = lo, hi
        out.extra.update(n_boot=int(n_boot), degenerate_fraction=deg)
    return out


def _centred_ranks(v: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Ranks within each group (average ranks for ties), centred on the group's mean rank; last axis."""
    out = np.empty(v.shape, float)
    for g in groups:
        r = _st.rankdata(v[..., g], axis=-1)
        out[..., g] = r - r.mean(-1, keepdims=True)
    return out


def _stratified_rho(x: np.ndarray, y: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    cx, cy = _centred_ranks(x, groups), _centred_ranks(y, groups)
    den = np.sqrt((cx * cx).sum(-1) * (cy * cy).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (cx * cy).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def stratified_spearman(x, y, strata, *, exact_max: int = 100_000, n_permutations: int = 9999, n_boot: int = 9999,
                        level: float = 0.95, seed: int = 0) -> Result:
    """Spearman's rho on within-stratum ranks, pooled over strata, with a within-stratum permutation p-value.

    Statistic: the Pearson correlation of x's and y's ranks taken and centred within each stratum (with equal
    strata and no ties, the mean of the within-stratum rhos). p (two-sided, P(|r_perm| >= |r_obs|)): y permuted
    within each stratum, every combination enumerated when there are at most ``exact_max`` of them (two strata of
    four: 4!^2 = 576), else ``n_permutations`` seeded draws. CI: percentile bootstrap resampling pairs within
    each stratum. A stratum of one pair, or one where x or y is constant, carries no ordering and is dropped
    (``extra["n_dropped"]`` pairs in ``extra["n_strata_dropped"]`` strata): kept, it would add nothing to the
    covariance but its variance to one side, and pull rho towards 0."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    strata = np.asarray(strata).ravel()
    if not (x.shape == y.shape == strata.shape):
        raise ValueError(f"x, y and strata differ in length: {len(x)}, {len(y)}, {len(strata)}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    keep = np.ones(len(x), bool)
    n_strata_dropped = 0
    for s in np.unique(strata):
        m = strata == s
        if m.sum() < 2 or np.ptp(x[m]) == 0 or np.ptp(y[m]) == 0:
            keep &= ~m
            n_strata_dropped += 1
    n_dropped = int((~keep).sum())
    x, y, strata = x[keep], y[keep], strata[keep]
    labels = list(dict.fromkeys(strata.tolist()))
    groups = [np.flatnonzero(strata == s) for s in labels]
    n = len(x)
    r = float(_stratified_rho(x, y, groups)) if groups else math.nan
    out = Result("stratified_spearman_rho", r, n, level=level,
                 extra={"strata": [str(s) for s in labels], "n_per_stratum": [len(g) for g in groups],
                        "n_dropped": n_dropped, "n_strata_dropped": n_strata_dropped})
    if n < 3 or not math.isfinite(r):
        return out
    n_total = math.prod(math.factorial(len(g)) for g in groups)
    rng = np.random.default_rng(seed)
    if n_total <= exact_max:
        per = [list(itertools.permutations(g)) for g in groups]
        idx = np.empty((n_total, n), int)
        for i, combo in enumerate(itertools.product(*per)):
            for g, perm_g in zip(groups, combo):
                idx[i, g] = perm_g
        exact = True
    else:
        idx = np.tile(np.arange(n), (n_permutations, 1))
        for g in groups:
            idx[:, g] = g[rng.permuted(np.tile(np.arange(len(g)), (n_permutations, 1)), axis=1)]
        exact = False
    null = np.abs(_stratified_rho(np.broadcast_to(x, idx.shape), y[idx], groups))
    hits = int((null >= abs(r) - 1e-12).sum())
    out.p_value = hits / n_total if exact else (1 + hits) / (1 + n_permutations)
    out.p_method = "exact" if exact else "permutation"
    out.extra["n_permutations"] = int(n_total if exact else n_permutations)
    if n_boot > 0:
        bidx = np.concatenate([g[rng.integers(0, len(g), size=(n_boot, len(g)))] for g in groups], axis=1)
        bgroups, start = [], 0
        for g in groups:
            bgroups.append(np.arange(start, start + len(g)))
            start += len(g)
        dist = _stratified_rho(x[bidx], y[bidx], bgroups)
        bad = ~np.isfinite(dist)
        if not bad.all():
            a = (1 - level) / 2
            out.ci_low, out.ci_high = (float(q) for q in np.quantile(dist[~bad], [a, 1 - a]))
        out.extra.update(n_boot=int(n_boot), degenerate_fraction=float(bad.mean()))
    return out


def spearman(x, y, **kw) -> Result:
    """Spearman's rho (see :func:`rank_correlation`)."""
    return rank_correlation(x, y, "spearman", **kw)


def kendall(x, y, **kw) -> Result:
    """Kendall's tau-b (see :func:`rank_correlation`)."""
    return rank_correlation(x, y, "kendall", **kw)


# ------------------------------------------------------------------------------------------ differences
def _mean_diff_paired(a, b, axis=-1):
    return np.mean(a - b, axis=axis)


def _mean_diff_indep(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def mean_difference(a, b, *, paired: bool = False, n_permutations: int = 9999, n_boot: int = 9999,
                    level: float = 0.95, seed: int = 0) -> Result:
    """mean(a) - mean(b) with a two-sided permutation p-value P(|T_perm| >= |T_obs|), a bootstrap CI and a
    standardised effect size.

    paired: sign-flip permutation test over pairs, pairs resampled together, effect size d_z =
    mean(a-b) / sd(a-b). Independent: label-shuffle permutation test, each group resampled separately,
    effect size Cohen's d with the pooled sd (ddof=1). scipy enumerates all permutations (exact p) whenever
    there are no more than ``n_permutations`` of them; ``extra["p_exact"]`` says which."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if paired and a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if len(a) < 1 or len(b) < 1:
        raise ValueError("empty sample")
    stat = _mean_diff_paired if paired else _mean_diff_indep
    value = float(stat(a, b))
    n = len(a) if paired else len(a) + len(b)
    out = Result("mean_difference", value, n, level=level,
                 extra={"paired": paired, "mean_a": float(a.mean()), "mean_b": float(b.mean())})
    if paired:
        d = a - b
        sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
        out.extra["effect_size"] = value / sd if sd > 0 else math.nan
        out.extra["effect_size_kind"] = "d_z"
    else:
        na, nb = len(a), len(b)
        if na + nb > 2:
            pooled = math.sqrt(((na - 1) * (a.var(ddof=1) if na > 1 else 0.0)
                                + (nb - 1) * (b.var(ddof=1) if nb > 1 else 0.0)) / (na + nb - 2))
        else:
            pooled = math.nan
        out.extra["effect_size"] = value / pooled if pooled > 0 else math.nan
        out.extra["effect_size_kind"] = "cohen_d"
    if n >= 2 and (not paired or len(a) >= 2):
        ptype = "samples" if paired else "independent"
        perm = _st.permutation_test((a, b), lambda u, v, axis=-1: np.abs(stat(u, v, axis=axis)),
                                    permutation_type=ptype, vectorized=True, n_resamples=n_permutations,
                                    alternative="greater", rng=np.random.default_rng(seed))
        n_total = 2 ** len(a) if paired else math.comb(len(a) + len(b), len(a))
        out.p_value = float(perm.pvalue)
        out.p_method = "exact" if n_total <= n_permutations else "permutation"
        out.extra["p_exact"] = out.p_method == "exact"
    if n_boot > 0 and min(len(a), len(b)) >= 2:
        lo, hi, deg = bootstrap_ci((a, b), stat, paired=paired, n_resamples=n_boot, level=level, seed=seed)
        out.ci_low, out.ci_high = lo, hi
        out.extra.update(n_boot=int(n_boot), degenerate_fraction=deg)
    return out


def binomial_rate(k: int, n: int, null: float = 0.5, level: float = 0.95) -> Result:
    """A success rate ``k / n`` with the exact two-sided binomial p against ``null`` and the exact
    (Clopper-Pearson) interval, both from ``scipy.stats.binomtest``; value nan and no test when ``n`` is 0."""
    if n <= 0:
        return Result("binomial_rate", math.nan, 0, extra={"k": 0, "null": null})
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    t = _st.binomtest(int(k), int(n), null)
    ci = t.proportion_ci(confidence_level=level, method="exact")
    return Result("binomial_rate", k / n, int(n), p_value=float(t.pvalue), p_method="exact", ci_low=float(ci.low),
                  ci_high=float(ci.high), level=level, extra={"k": int(k), "null": null})
