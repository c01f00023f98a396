"""Rank correlations, permutation p-values, bootstrap CIs and effect sizes against scipy and hand enumeration."""

import itertools
import json
import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from adapterscope import stats


def _enumerated_p(x, y, f):
    """Two-sided exact p by brute force: share of all orderings of y with |r| >= |r_obs|."""
    obs = abs(f(x, y))
    hits = [abs(f(x, np.array(p))) >= obs - 1e-12 for p in itertools.permutations(y)]
    return sum(hits) / len(hits)


def test_seed_study_n4_rho_minus_080_has_exact_p_one_third():
    x, y = [1, 2, 3, 4], [4, 2, 3, 1]
    r = stats.spearman(x, y, n_boot=0)
    assert r.value == pytest.approx(-0.8)
    assert r.p_method == "exact" and r.extra["n_permutations"] == 24
    assert r.p_value == pytest.approx(1 / 3, abs=1e-12)
    # by hand: 8 of the 24 orderings have |rho| >= 0.8 (rho = +-1 once each, +-0.8 three times each)
    rhos = [st.spearmanr(x, p).statistic for p in itertools.permutations(y)]
    assert sum(abs(v) >= 0.8 - 1e-12 for v in rhos) == 8


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_point_estimates_match_scipy_with_ties(method):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 25).astype(float)    # many ties
    y = x + rng.integers(0, 3, 25)
    ref = st.spearmanr(x, y).statistic if method == "spearman" else st.kendalltau(x, y).statistic
    r = stats.rank_correlation(x, y, method, n_boot=0, n_permutations=99)
    assert r.value == pytest.approx(ref, abs=1e-12)
    # vectorised form agrees row by row
    X = rng.normal(size=(4, 7))
    Y = rng.normal(size=(4, 7))
    f = stats.spearman_rho if method == "spearman" else stats.kendall_tau
    g = st.spearmanr if method == "spearman" else st.kendalltau
    assert np.allclose(f(X, Y), [g(a, b).statistic for a, b in zip(X, Y)])


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_exact_p_equals_brute_force_enumeration(method):
    rng = np.random.default_rng(3)
    x = rng.normal(size=6)
    y = np.round(x + rng.normal(size=6), 0)   # ties in y
    f = stats.spearman_rho if method == "spearman" else stats.kendall_tau
    r = stats.rank_correlation(x, y, method, n_boot=0)
    assert r.p_method == "exact"
    assert r.p_value == pytest.approx(_enumerated_p(x, y, lambda a, b: float(f(a, b))), abs=1e-12)


def test_kendall_exact_p_matches_scipy_exact_without_ties():
    x, y = [1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6]
    r = stats.kendall(x, y, n_boot=0)
    assert r.p_value == pytest.approx(st.kendalltau(x, y, method="exact").pvalue, abs=1e-12)


def test_n9_is_exact_and_n10_is_seeded_permutation():
    rng = np.random.default_rng(1)
    x9, y9 = rng.normal(size=9), rng.normal(size=9)
    r9 = stats.spearman(x9, y9, n_boot=0)
    assert r9.p_method == "exact" and r9.extra["n_permutations"] == math.factorial(9)
    # exact p is a multiple of 1/9!, up to ties in |rho|
    x, y = rng.normal(size=30), rng.normal(size=30)
    y = y + 0.6 * x
    a = stats.spearman(x, y, n_boot=0, seed=5)
    b = stats.spearman(x, y, n_boot=0, seed=5)
    c = stats.spearman(x, y, n_boot=0, seed=6, n_permutations=4999)
    assert a.p_method == "permutation" and a.p_value == b.p_value
    assert a.p_value >= 1 / 10000                         # the observed ordering counts
    # Monte Carlo p near the asymptotic t-test p (n = 30) and near another seed's
    assert a.p_value == pytest.approx(st.spearmanr(x, y).pvalue, abs=0.01)
    assert a.p_value == pytest.approx(c.p_value, abs=0.01)


def test_bootstrap_ci_matches_scipy_and_handles_degenerate_resamples():
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    r = stats.spearman(x, y, n_boot=2000, seed=3, n_permutations=99)
    ref = st.bootstrap((x, y), lambda a, b, axis=-1: stats.spearman_rho(a, b, axis), paired=True, vectorized=True,
                       n_resamples=2000, method="percentile", rng=np.random.default_rng(3))
    assert (r.ci_low, r.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert r.ci_low < r.value < r.ci_high and r.extra["degenerate_fraction"] == 0
    # n = 4 with a repeated x: some resamples have constant x (rho undefined); they are dropped, not nan
    d = stats.spearman([0, 0, 1, 2], [1, 0, 2, 3], n_boot=999)
    assert 0 < d.extra["degenerate_fraction"] < 1
    assert np.isfinite([d.ci_low, d.ci_high]).all() and -1 <= d.ci_low <= d.ci_high <= 1
    # BCa path (no degenerate resamples) is scipy's
    lo, hi, deg = stats.bootstrap_ci((x,), lambda a, axis=-1: a.mean(axis), method="BCa", n_resamples=999, seed=0)
    ref = st.bootstrap((x,), np.mean, n_resamples=999, method="BCa", rng=np.random.default_rng(0))
    assert (lo, hi, deg) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high, 0.0))


# ---------------------------------------------------------------- mean_ci: the three CIs of a mean it replaced
# Reference oracles: the three deleted duplicates and stats.bootstrap_ci as it was before issue #39, copied
# verbatim but for their names (prefixed _old_), scipy.stats spelled ``st`` and the oracles calling _old_bootstrap_ci.
def _old_bootstrap_ci(data, statistic, *, paired: bool = True, n_resamples: int = 9999,
                      level: float = 0.95, seed: int = 0, method: str = "percentile") -> tuple[float, float, float]:
    """(low, high, degenerate_fraction) of a seeded bootstrap CI (scipy.stats.bootstrap)."""
    data = tuple(np.asarray(d, float) for d in data)
    if min(len(d) for d in data) < 2:
        return math.nan, math.nan, math.nan
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = st.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=paired,
                           confidence_level=level, method="percentile",
                           rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, float)
    bad = ~np.isfinite(dist)
    degenerate = float(bad.mean())
    if degenerate == 1.0:
        return math.nan, math.nan, 1.0
    if degenerate > 0 or method == "percentile":
        alpha = (1 - level) / 2
        lo, hi = np.quantile(dist[~bad], [alpha, 1 - alpha])
        return float(lo), float(hi), degenerate
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = st.bootstrap(data, statistic, n_resamples=n_resamples, vectorized=True, paired=paired,
                           confidence_level=level, method=method, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high), 0.0


def _old_divergence_bootstrap_mean_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0):
    """Percentile bootstrap CI of the mean (scipy.stats.bootstrap)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.allclose(v, v[0]):
        return (float(v.mean()), float(v.mean())) if len(v) else (math.nan, math.nan)
    r = st.bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                     random_state=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def _old_regimes_mean_ci(x, n_boot: int, seed: int):
    """(mean, low, high): percentile bootstrap 95% CI of the mean of ``x`` (one value per item)."""
    x = np.asarray(x, float)
    lo, hi, _ = _old_bootstrap_ci((x,), np.mean, n_resamples=n_boot, seed=seed)
    return float(x.mean()), lo, hi


def _old_composition_mean_ci(values: dict, n_boot: int = 2000, seed: int = 0) -> dict:
    """The mean over subsets with a 95% percentile bootstrap CI over subsets (the ledger's form)."""
    bootstrap_ci = _old_bootstrap_ci

    v = np.asarray(list(values.values()), float)
    out = {"value": float("nan"), "n": len(v), "reason": ""}
    if len(v) < 2:
        out["reason"] = f"{len(v)} subset(s) with a defined retention: a CI needs 2"
        return out
    lo, hi, _ = bootstrap_ci((v,), lambda x, axis=-1: np.mean(x, axis=axis), n_resamples=n_boot, seed=seed)
    out.update(value=float(v.mean()), ci_low=lo, ci_high=hi)
    return out


def _samples():
    """Seeded inputs of every shape the callers pass: row means, 0/1 shares, retentions; ties, constants,
    near-constants (np.allclose but not equal), one value, none, a nan."""
    rng = np.random.default_rng(39)
    out = [rng.normal(1.0, 0.3, size=n) for n in (2, 3, 7, 24, 61)]
    out += [rng.exponential(0.5, size=40), rng.integers(0, 2, size=30).astype(float),
            rng.integers(0, 5, size=12) / 4, rng.uniform(-1, 2, size=9)]
    out += [np.full(5, 0.1), [2.0, 2.0], [1.0, 1.0 + 1e-10, 1.0 - 1e-10], [0.3], [], [1.0, np.nan, 2.0, 0.5],
            [0.0, 1.0]]
    return [np.asarray(v, float) for v in out]


def _same(a, b):
    """Bit-identical floats (nan equal to nan)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


@pytest.mark.filterwarnings("ignore:The BCa confidence interval cannot be calculated")  # the old one, on a nan
@pytest.mark.parametrize("n_boot,seed", [(2000, 0), (999, 7), (200, 3)])
def test_mean_ci_reproduces_each_deleted_duplicate_bit_for_bit(n_boot, seed):
    """Issue #39: ``stats.mean_ci`` at each former caller's options gives the very numbers of the function it
    replaced: divergence.bootstrap_mean_ci (02_capture, audit: constant_point, nan_policy="propagate", scipy's
    own quantile), regimes.mean_ci (regimes, escapes) and composition.mean_ci (12_composition's form)."""
    for v in _samples():
        c = stats.mean_ci(v, n_boot, seed, constant_point=True, nan_policy="propagate")
        assert _same((c.ci_low, c.ci_high), _old_divergence_bootstrap_mean_ci(v, n_boot=n_boot, seed=seed)), v
        if len(v):
            r = stats.mean_ci(v, n_boot, seed)
            assert _same((r.value, r.ci_low, r.ci_high), _old_regimes_mean_ci(v, n_boot, seed)), v
        ta = stats.mean_ci(v, n_boot, seed)  # as 12_composition builds ta_retention
        new = ({"value": ta.value, "n": ta.n, "reason": "", "ci_low": ta.ci_low, "ci_high": ta.ci_high}
               if ta.n >= 2 else {"value": math.nan, "n": ta.n,
                                  "reason": f"{ta.n} subset(s) with a defined retention: a CI needs 2"})
        old = _old_composition_mean_ci({f"s{i}": x for i, x in enumerate(v)}, n_boot, seed)
        assert list(new) == list(old) and new["n"] == old["n"] and new["reason"] == old["reason"], v
        nums = [k for k in old if k not in ("n", "reason")]
        assert _same([new[k] for k in nums], [old[k] for k in nums]), v


def test_bootstrap_ci_default_path_is_unchanged_by_the_nan_policy_option():
    rng = np.random.default_rng(5)
    x = rng.normal(size=25)
    y = x + rng.normal(size=25)
    rho = lambda a, b, axis=-1: stats.spearman_rho(a, b, axis)  # noqa: E731
    cases = [((x,), np.mean, {}), ((x,), np.mean, {"method": "BCa", "n_resamples": 999}),
             ((x, y), rho, {"n_resamples": 999, "seed": 4}), (([0, 0, 1, 2], [1, 0, 2, 3]), rho, {"n_resamples": 999}),
             (([0, 0, 1, 2], [1, 0, 2, 3]), rho, {"n_resamples": 999, "method": "BCa"}), (([1.0], ), np.mean, {})]
    for data, f, kw in cases:
        assert _same(stats.bootstrap_ci(data, f, **kw), _old_bootstrap_ci(data, f, **kw)), kw


def test_mean_ci_options_and_why_the_capture_form_keeps_scipy_quantiles():
    v = np.random.default_rng(0).normal(1.0, 0.2, size=200)
    c = stats.mean_ci(v, 2000, constant_point=True, nan_policy="propagate")
    assert c.ci_low < v.mean() < c.ci_high and c.ci_high - c.ci_low < 0.1 and c.n == 200
    assert c.value == float(v.mean()) and c.extra == {"n_boot": 2000, "degenerate_fraction": 0.0}
    two = stats.mean_ci([2.0, 2.0], 2000, constant_point=True)
    assert (two.ci_low, two.ci_high) == (2.0, 2.0) and two.extra == {"constant": True}
    assert math.isnan(stats.mean_ci([0.3], 2000).ci_low) and stats.mean_ci([0.3], 2000).value == 0.3
    assert math.isnan(stats.mean_ci([], 2000, constant_point=True).value)
    # "omit" drops a resample whose mean is nan, "propagate" (scipy's interval) turns the CI nan
    w = [1.0, np.nan, 2.0, 0.5]
    assert np.isfinite([stats.mean_ci(w, 999).ci_low]).all()
    assert math.isnan(stats.mean_ci(w, 999, nan_policy="propagate").ci_low)
    # numpy's and scipy's linear quantiles round differently: the two policies differ in the last bits, so the
    # capture form must keep "propagate" to reproduce recorded numbers exactly
    diffs = []
    for s in range(20):
        x = np.random.default_rng(s).normal(1, 0.3, size=30)
        a, b = stats.mean_ci(x, 2000, s), stats.mean_ci(x, 2000, s, nan_policy="propagate")
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high), rel=1e-12, abs=1e-15)
        diffs.append((a.ci_low, a.ci_high) != (b.ci_low, b.ci_high))
    assert any(diffs)
    with pytest.raises(ValueError, match="nan_policy"):
        stats.bootstrap_ci((v,), np.mean, nan_policy="raise")


def test_mean_difference_paired_exact_and_effect_size():
    a = np.array([1.0, 2.5, 3.0, 4.5, 2.0])
    b = np.array([0.5, 2.0, 3.2, 3.0, 1.0])
    r = stats.mean_difference(a, b, paired=True, n_boot=999)
    d = a - b
    assert r.value == pytest.approx(d.mean())
    assert r.extra["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    # exact sign-flip p by hand: 2^5 = 32 sign patterns
    flips = [abs((np.array(s) * d).mean()) >= abs(d.mean()) - 1e-12 for s in itertools.product([1, -1], repeat=5)]
    assert r.p_method == "exact" and r.p_value == pytest.approx(sum(flips) / 32)
    assert r.ci_low <= r.value <= r.ci_high


def test_mean_difference_independent_matches_hand_values():
    a = np.array([3.0, 4.0, 5.0, 6.0])
    b = np.array([1.0, 2.0, 2.5])
    r = stats.mean_difference(a, b, n_boot=999)
    assert r.value == pytest.approx(4.5 - 5.5 / 3)
    pooled = math.sqrt((3 * a.var(ddof=1) + 2 * b.var(ddof=1)) / 5)
    assert r.extra["effect_size"] == pytest.approx(r.value / pooled)
    # exact label-shuffle p by hand: C(7, 4) = 35 splits
    pool = np.concatenate([a, b])
    hits = [abs(pool[list(i)].mean() - np.delete(pool, list(i)).mean()) >= abs(r.value) - 1e-12
            for i in itertools.combinations(range(7), 4)]
    assert r.p_method == "exact" and r.p_value == pytest.approx(sum(hits) / 35)
    ref = st.bootstrap((a, b), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis), n_resamples=999,
                       method="percentile", rng=np.random.default_rng(0))
    assert (r.ci_low, r.ci_high) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))


def test_result_as_dict_is_json_and_inputs_are_checked():
    r = stats.spearman([1, 2, 3, 4, 5], [2, 1, 3, 5, 4], n_boot=99)
    d = json.loads(json.dumps(r.as_dict()))
    assert d["statistic"] == "spearman_rho" and d["n"] == 5 and set(d) >= {"p_value", "ci_low", "ci_high", "extra"}
    with pytest.raises(ValueError, match="differ in length"):
        stats.spearman([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="method"):
        stats.rank_correlation([1, 2, 3], [1, 2, 3], "pearson")
    const = stats.spearman([1, 1, 1, 1], [1, 2, 3, 4])
    assert math.isnan(const.value) and math.isnan(const.p_value)


def test_stratified_spearman_removes_a_confound_that_drives_both_axes():
    """Model size (the stratum) shifts both x and y: the plain pooled rho is large, the stratified one sees only
    the within-model orderings, which are planted to be opposite (rho -1 in each stratum)."""
    x = np.array([1.0, 2, 3, 4, 11, 12, 13, 14])
    y = np.array([4.0, 3, 2, 1, 14, 13, 12, 11])
    strata = ["small"] * 4 + ["large"] * 4
    assert stats.spearman(x, y, n_boot=0).value > 0.5
    r = stats.stratified_spearman(x, y, strata, n_boot=500, seed=0)
    assert r.value == pytest.approx(-1.0)
    assert r.p_method == "exact" and r.extra["n_permutations"] == 576
    assert r.p_value == pytest.approx(2 / 576)  # only the two all-reversed / all-aligned pairings reach |rho| = 1
    assert r.ci_high <= -0.9


def test_stratified_spearman_equals_the_mean_within_rho_for_equal_strata_and_no_signal_gives_large_p():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=12), rng.normal(size=12)
    strata = np.repeat([0, 1, 2], 4)
    r = stats.stratified_spearman(x, y, strata, n_boot=0)
    within = [stats.spearman_rho(x[strata == s], y[strata == s]) for s in range(3)]
    assert r.value == pytest.approx(np.mean(within))
    assert r.p_method == "exact"  # 4!^3 = 13824 orderings, enumerated; force Monte Carlo below
    r2 = stats.stratified_spearman(x, y, strata, n_boot=0, exact_max=10)
    assert r2.p_method == "permutation" and r2.p_value > 0.05  # independent normals: no signal (seeded)
    # a single-pair stratum is dropped, not counted as an ordering
    r3 = stats.stratified_spearman(np.r_[x, 5.0], np.r_[y, 5.0], np.r_[strata, 9], n_boot=0)
    assert r3.n == 12 and r3.extra["n_dropped"] == 1 and r3.value == pytest.approx(r.value)


def test_stratified_spearman_drops_a_stratum_without_an_ordering():
    """A stratum whose x is constant (e.g. 0 fine-tune-only latents at every dose) would pull rho towards 0
    (perfect order elsewhere gave 0.71); it is dropped and the perfect stratum gives 1."""
    x = np.array([1.0, 2, 3, 4, 0, 0, 0, 0])
    y = np.array([1.0, 2, 3, 4, 5, 7, 6, 8])
    r = stats.stratified_spearman(x, y, ["a"] * 4 + ["b"] * 4, n_boot=0)
    assert r.value == pytest.approx(1.0) and r.n == 4 and r.extra["n_strata_dropped"] == 1
    r = stats.stratified_spearman(np.zeros(8), y, ["a"] * 4 + ["b"] * 4, n_boot=0)
    assert math.isnan(r.value) and r.n == 0


def test_stratified_spearman_exact_p_matches_brute_force():
    import itertools

    x = np.array([0.3, 1.2, 0.7, 2.0, 5.0, 4.1, 6.3])
    y = np.array([1.0, 0.2, 0.9, 1.5, 3.0, 2.2, 2.5])
    strata = np.array([0, 0, 0, 0, 1, 1, 1])
    r = stats.stratified_spearman(x, y, strata, n_boot=0)
    obs, hits, total = abs(r.value), 0, 0
    for p0 in itertools.permutations(range(4)):
        for p1 in itertools.permutations(range(4, 7)):
            yp = y[list(p0) + list(p1)]
            hits += abs(stats.stratified_spearman(x, yp, strata, n_boot=0, exact_max=0, n_permutations=1).value) >= obs - 1e-12
            total += 1
    assert r.p_method == "exact" and r.p_value == pytest.approx(hits / total)


def test_binomial_rate_against_closed_forms():
    r = stats.binomial_rate(12, 12)  # every trial a success: p = 2 * 0.5^12, CI low = 0.025^(1/12)
    assert r.value == 1.0 and r.p_value == pytest.approx(2 * 0.5**12) and r.p_method == "exact"
    assert r.ci_low == pytest.approx(0.025 ** (1 / 12)) and r.ci_high == 1.0
    r = stats.binomial_rate(3, 6)
    assert r.p_value == pytest.approx(1.0) and r.ci_low < 0.5 < r.ci_high
    r = stats.binomial_rate(0, 8)
    assert r.value == 0.0 and r.ci_high == pytest.approx(1 - 0.025 ** (1 / 8)) and r.p_value == pytest.approx(2 / 256)
    assert math.isnan(stats.binomial_rate(0, 0).value)
    with pytest.raises(ValueError):
        stats.binomial_rate(5, 4)
