"""Power of the ledger's tests (adapterscope.power): closed forms where they exist (exact binomial, Student's t
for the sign-flip and two-sample permutation tests), the floor of each test, power -> alpha at no effect, and
monotone in the effect and in n."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from adapterscope import power as P


@pytest.mark.parametrize("n, rate", [(6, 0.8), (8, 0.8), (20, 0.7), (30, 0.65)])
def test_binomial_power_is_the_exact_closed_form(n, rate):
    """Against 0.5 the two-sided exact binomial p of k > n/2 successes is min(1, 2 P(K >= k)); the power is the
    binomial probability of the k with p < alpha (here on the predicted side, above 0.5)."""
    ks = np.arange(n + 1)
    reject = (ks > n / 2) & (np.minimum(1.0, 2 * st.binom.sf(ks - 1, n, 0.5)) < 0.05)
    closed = st.binom.pmf(ks[reject], n, rate).sum()
    pw = P.power("binomial", rate, n, null=0.5)
    assert pw.method == "exact" and pw.se == 0 and pw.power == pytest.approx(closed, abs=1e-12)
    if n == 8:
        assert pw.power == pytest.approx(rate ** 8)  # k = 8 alone: p = 2/256; k = 7 gives 18/256 = 0.07


def test_binomial_at_the_null_rate_is_the_tests_size():
    pw = P.power("binomial", 0.5, 20, direction="two-sided", null=0.5)
    assert 0.02 < pw.power <= 0.05  # exact and discrete: the size is at most alpha (0.041 at n = 20)
    assert P.power("binomial", 0.2, 20, direction="less", null=0.5).power > 0.5


def test_sign_flip_power_matches_the_paired_t_test_at_moderate_n():
    """At n = 16 the sign-flip test of the mean difference is about as powerful as the paired t-test on normal
    differences (the permutation test's asymptotic relative efficiency is 1): within 0.05 (3.6 simulation
    standard errors at 1000 simulations)."""
    from statsmodels.stats.power import TTestPower

    pw = P.power("sign_flip", 0.7, 16, n_sim=1000)
    t = TTestPower().power(effect_size=0.7, nobs=16, alpha=0.05, alternative="two-sided")
    assert pw.method == "simulated" and abs(pw.power - t) < 0.05, (pw.power, t)


def test_two_sample_permutation_power_matches_the_independent_t_test():
    """Two groups of 10 at Cohen's d = 1.2 against statsmodels' two-sample t power, within 0.07 (3 standard
    errors at 400 simulations)."""
    from statsmodels.stats.power import TTestIndPower

    pw = P.power("two_sample", 1.2, 20, n_sim=400)
    t = TTestIndPower().power(effect_size=1.2, nobs1=10, alpha=0.05, ratio=1.0, alternative="two-sided")
    assert abs(pw.power - t) < 0.07, (pw.power, t)


@pytest.mark.parametrize("test, n, strata, floor", [
    ("spearman", 4, None, 2 / 24),                   # exact Spearman at n = 4: 2 of 4! orderings
    ("spearman", 2, None, 1.0),                      # too few pairs for any test
    ("stratified_spearman", 6, 2, 2 / 36),           # two strata of three: 2 of 3!^2
    ("sign_flip", 4, None, 2 / 16),                  # every difference of one sign: 2 of 2^4
    ("sign_flip", 5, None, 2 / 32),
    ("two_sample", 6, None, 2 / 20),                 # three against three: 2 of C(6, 3)
    ("binomial", 4, None, 2 / 16),
])
def test_a_floor_above_alpha_gives_power_zero_without_simulating(test, n, strata, floor):
    effect = 0.95 if test == "binomial" else 0.9
    assert P.p_floor(test, n, strata=strata) == pytest.approx(floor)
    pw = P.power(test, effect, n, strata=strata)
    assert pw.power == 0 and pw.method == "floor" and pw.n_sim == 0 and pw.p_floor == pytest.approx(floor)
    assert "cannot fall below" in pw.describe()


def test_floors_below_alpha():
    assert P.p_floor("spearman", 5) == pytest.approx(2 / 120)
    assert P.p_floor("stratified_spearman", 8, strata=2) == pytest.approx(2 / 576)
    assert P.p_floor("sign_flip", 8) == pytest.approx(2 / 256)  # the ledger's 0.0078
    assert P.p_floor("spearman", 30) < 0.001  # Monte Carlo p: 1 / (1 + 9999)
    assert P.p_floor("binomial", 10, direction="greater", null=0.2) < P.p_floor("binomial", 10, direction="less",
                                                                                   null=0.2)


@pytest.mark.parametrize("test, n, strata", [("spearman", 7, None), ("sign_flip", 9, None)])
def test_power_tends_to_alpha_at_no_effect(test, n, strata):
    """Two-sided at effect 0 the power is the test's size: about alpha (at most alpha for an exact test, less
    the discreteness); one-sided, about half of it."""
    two = P.power(test, 0.0, n, strata=strata, direction="two-sided", n_sim=1000)
    assert abs(two.power - 0.05) < 0.021, two  # 3 standard errors
    one = P.power(test, 0.0, n, strata=strata, direction="greater", n_sim=1000)
    assert abs(one.power - 0.025) < 0.015, one


def test_power_at_no_effect_is_the_exact_size_of_the_pooled_test_at_two_by_four():
    """Two strata of four: p takes few values (2/576, 14/576, 36/576, ...), so the test's size at alpha 0.05 is
    14/576 = 0.024, counted here over all 576 within-stratum orderings; the simulated power at rho = 0 matches
    it within 3 standard errors."""
    import itertools

    from adapterscope import stats

    x, lab = np.tile(np.arange(4.0), 2), np.repeat([0, 1], 4)
    ps = [stats.stratified_spearman(x, np.array(a + b, float), lab, n_boot=0).p_value
          for a in itertools.permutations(range(4)) for b in itertools.permutations(range(4))]
    size = float(np.mean(np.array(ps) < 0.05))
    assert size == pytest.approx(14 / 576)
    pw = P.power("stratified_spearman", 0.0, 8, strata=2, direction="two-sided", n_sim=1000)
    assert abs(pw.power - size) < 3 * math.sqrt(size * (1 - size) / 1000), pw


def test_power_grows_with_the_effect_and_with_n():
    rho = [P.power("spearman", e, 7, n_sim=300).power for e in (0.0, 0.3, 0.6, 0.9)]
    assert rho == sorted(rho) and rho[-1] > 0.7 and rho[0] < 0.05
    d = [P.power("sign_flip", e, 8, n_sim=300).power for e in (0.0, 0.5, 1.0, 1.5)]
    assert d == sorted(d) and d[-1] > 0.8
    by_n = [P.power("spearman", 0.6, n, n_sim=300).power for n in (5, 7, 12, 20)]
    assert by_n == sorted(by_n) and by_n[-1] > 0.8
    by_m = [P.power("stratified_spearman", 0.7, 2 * m, strata=2).power for m in (3, 4, 5)]
    assert by_m == sorted(by_m) and by_m[0] == 0  # two strata of three: floor 2/36 > 0.05


def test_the_predicted_side_counts():
    """A strong effect on the other side never supports a one-sided finding; 'less' mirrors 'greater'."""
    assert P.power("spearman", 0.8, 8, direction="less").power == 0
    up = P.power("stratified_spearman", 0.7, 8, strata=2, direction="greater").power
    down = P.power("stratified_spearman", -0.7, 8, strata=2, direction="less").power
    assert abs(up - down) < 0.08
    assert P.power("sign_flip", -1.0, 8, direction="two-sided").power > 0.4


def test_exact_rank_tests_cache_p_by_statistic_without_changing_the_answer():
    """The cached path (one exact test per distinct statistic) equals running the test on every data set."""
    for test, sizes in (("spearman", (6,)), ("stratified_spearman", (4, 4))):
        args = (test, 0.5, sizes, 0.05, "greater")
        assert P._simulated(*args, True, 200, 3, 999) == P._simulated(*args, False, 200, 3, 999)


def test_the_pooled_decorrelation_test_needs_eight_corpora_per_model():
    """The issue's numbers: 2 models x 4 corpora has power about 0.19 at rho = 0.7; 8 per model reach 0.7."""
    four = P.power("stratified_spearman", 0.7, 8, strata=2)
    assert 0.12 < four.power < 0.26 and four.describe().startswith("power 0.")
    m, pw = P.units_for_power(0.7, 0.7, 2)
    assert m == 8 and pw.n == 16 and pw.power >= 0.7


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="test must be one of"):
        P.power("wilcoxon", 0.5, 10)
    with pytest.raises(ValueError, match="needs strata"):
        P.power("stratified_spearman", 0.5, 10)
    with pytest.raises(ValueError, match="strata applies to stratified_spearman only"):
        P.power("spearman", 0.5, 10, strata=2)
    with pytest.raises(ValueError, match=r"\(-1, 1\)"):
        P.power("spearman", 1.0, 10)
    with pytest.raises(ValueError, match="cannot fill"):
        P.power("stratified_spearman", 0.5, 5, strata=3)
    with pytest.raises(ValueError, match="positive integer"):
        P.power("sign_flip", 0.5, 0)


def test_cli_prints_the_two_designs(capsys):
    assert P.main(["--corpora", "4", "8", "--n-sim", "500"]) == 0
    out = capsys.readouterr().out
    assert "2 models x 4 corpora: power 0.19 at rho=0.7, n=8" in out
    assert "2 models x 8 corpora: power 0.7" in out and "fewest corpora per model with power >= 0.7: 8" in out
    assert not math.isnan(P.power("stratified_spearman", 0.7, 16, strata=2).se)


def test_t_test_power_is_the_closed_form_and_has_no_floor():
    from statsmodels.stats.power import TTestPower

    from adapterscope import power

    got = power.power("t_test", 1.0, 8, direction="two-sided")
    assert got.power == pytest.approx(TTestPower().power(effect_size=1.0, nobs=8, alpha=0.05,
                                                         alternative="two-sided"))
    assert got.p_floor == 0.0 and 0.5 < got.power < 0.9
    assert power.p_floor("sign_flip", 8) == pytest.approx(2 / 256)  # what the t-test avoids
    assert power.power("t_test", 1.0, 1).power == 0.0  # one unit: no test
