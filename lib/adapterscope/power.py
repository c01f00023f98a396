"""Power of the ledger's tests: the probability that a finding's own test, at its own unit count, reaches
p < alpha on the predicted side when the effect has a stated size.

Pure tool: numpy / scipy and :mod:`adapterscope.stats` only. The tests are those of ``stats``, called as the
notebooks call them (two-sided p, predicted side read from the sign of the estimate); this module only draws
data under the effect and counts how often they succeed.

Kinds of test (:data:`KINDS`) and what the effect means for each:

  * ``spearman``: :func:`stats.spearman` over ``n`` pairs (exact p for n <= ``stats.EXACT_MAX_N``, else a
    seeded Monte Carlo p). Effect: the population Spearman rho; pairs are bivariate normal with Pearson
    correlation 2 sin(pi rho / 6), whose Spearman correlation is rho.
  * ``stratified_spearman``: :func:`stats.stratified_spearman` over ``n`` pairs in ``strata`` near-equal strata
    (the pooled within-model test). Effect: rho within every stratum, drawn as above.
  * ``sign_flip``: :func:`stats.mean_difference` with ``paired=True`` over ``n`` pairs. Effect: the standardised
    mean difference d_z; differences are normal with mean d and sd 1.
  * ``two_sample``: :func:`stats.mean_difference` with ``paired=False`` over ``n`` observations split into two
    near-equal groups. Effect: Cohen's d between two unit-variance normals.
  * ``binomial``: :func:`stats.binomial_rate` over ``n`` trials against ``null``. Effect: the true success
    rate. Exact: every k in 0..n is tested once and weighted by its binomial probability.
  * ``t_test``: the one-sample t-test over ``n`` units (``depth.mean_over_units(p_test="t")``), whose p has no
    floor. Effect: the standardised mean d; closed form (noncentral t, ``statsmodels`` ``TTestPower``).

Conventions:
  * ``effect`` is signed, on the statistic's own scale (a rate for ``binomial``); ``direction`` is the
    finding's (greater | less | two-sided). Success is p < alpha and, for a one-sided direction, an estimate
    on the predicted side of the null (0, or ``null`` for ``binomial``). The verdict also asks a bootstrap CI
    to exclude the null; the power here is that of the p-value alone.
  * The floor (:func:`p_floor`) is the smallest p the test can return at that design: the test run on
    perfectly ordered data (identical ranks within every stratum, every difference of one sign, separated
    groups, k = n successes), e.g. exact Spearman at n = 4: 2/4! = 0.083. A floor at or above alpha gives power
    0 without simulating.
  * An exact rank test's p is a function of its statistic alone (continuous draws have no ties), so each
    distinct statistic's p is computed once, by the test itself, and cached (:data:`_P_CACHE`). Other tests run
    once per simulated data set: exact where the test is exact at its defaults, else with ``n_permutations``
    Monte Carlo draws (999 by default, against the notebooks' 9,999: the p's resolution near alpha, not its
    distribution, changes).
  * ``n_sim`` simulated data sets (500 by default: standard error at most 0.022) from
    ``numpy.random.default_rng(seed)``; results are cached per argument set, so a ledger that repeats a design
    pays once.

``python -m adapterscope.power`` prints the pooled decorrelation test's power at rho = 0.7 for 2 models x 4
corpora and 2 models x 8 corpora, and the fewest corpora per model that reach power 0.7.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

from . import stats

KINDS = ("spearman", "stratified_spearman", "sign_flip", "two_sample", "binomial", "t_test")
EFFECT_NAMES = {"spearman": "rho", "stratified_spearman": "rho", "sign_flip": "d", "two_sample": "d",
                "binomial": "rate", "t_test": "d"}
DIRECTIONS = ("greater", "less", "two-sided")
RANK_KINDS = ("spearman", "stratified_spearman")
N_SIM = 500
SIM_PERMUTATIONS = 999
# p of an exact rank test by (kind, stratum sizes, statistic rounded to 10 places)
_P_CACHE: dict[tuple, float] = {}


@dataclass(frozen=True)
class Power:
    """The power of one test at one design and effect; ``se`` is the simulation's standard error (0 when exact
    or decided by the floor)."""
    test: str
    effect: float
    n: int
    alpha: float
    direction: str
    power: float
    p_floor: float
    method: str               # "simulated", "exact" (binomial) or "floor" (p_floor >= alpha: power 0)
    n_sim: int = 0
    se: float = 0.0
    strata: int | None = None
    null: float | None = None  # binomial only

    def describe(self, tex: bool = False) -> str:
        """One line, e.g. ``power 0.19 at rho=0.7, n=8 (2 strata)``; a floor says why the power is 0. With
        ``tex``, the same in LaTeX (math for the effect, n and the floor)."""
        name = EFFECT_NAMES[self.test]
        if tex:
            sym = {"rho": r"\rho", "d": "d", "rate": r"\text{rate}"}[name]
            s = f"power {self.power:.2f} at ${sym}={self.effect:g}$, $n={self.n}$"
        else:
            s = f"power {self.power:.2f} at {name}={self.effect:g}, n={self.n}"
        if self.strata:
            s += f" ({self.strata} strata)"
        if self.method == "floor":
            s += (f"; $p \\geq {self.p_floor:.2g}$" if tex else
                  f"; p cannot fall below {self.p_floor:.2g} >= alpha {self.alpha:g}")
        return s

    def as_dict(self) -> dict:
        return asdict(self)


def strata_sizes(n: int, strata: int | None) -> tuple[int, ...]:
    """``n`` units in ``strata`` near-equal strata (the first ones one larger where it does not divide)."""
    k = strata or 1
    return tuple(n // k + (i < n % k) for i in range(k))


def _labels(sizes: tuple[int, ...]) -> np.ndarray:
    return np.repeat(np.arange(len(sizes)), sizes)


def check_args(test: str, effect: float, n: int, strata: int | None = None, alpha: float = 0.05,
               direction: str = "greater", null: float = 0.5) -> None:
    """A ValueError naming the first argument of :func:`power` that is out of range (the ledger checks a
    finding's ``power`` entry with it when it loads)."""
    if test not in KINDS:
        raise ValueError(f"test must be one of {list(KINDS)}, got {test!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not math.isfinite(effect):
        raise ValueError(f"effect must be a finite number, got {effect!r}")
    if test in RANK_KINDS and not -1 < effect < 1:
        raise ValueError(f"a rank correlation's effect must lie in (-1, 1), got {effect}")
    if test == "binomial" and not (0 <= effect <= 1 and 0 < null < 1):
        raise ValueError(f"binomial: need a rate in [0, 1] and a null in (0, 1), got {effect} and {null}")
    if test == "stratified_spearman":
        if not (isinstance(strata, (int, np.integer)) and strata >= 1):
            raise ValueError(f"stratified_spearman needs strata (a positive integer), got {strata!r}")
        if n < 2 * strata:
            raise ValueError(f"stratified_spearman: {n} units cannot fill {strata} strata of at least 2")
    elif strata not in (None, 1):
        raise ValueError(f"strata applies to stratified_spearman only, not {test}")


def _test(test: str, a: np.ndarray, b: np.ndarray, sizes: tuple[int, ...], **kw) -> stats.Result:
    """The ledger's test of that kind on one data set (no bootstrap CI: only its p and estimate count)."""
    if test == "spearman":
        return stats.spearman(a, b, n_boot=0, **kw)
    if test == "stratified_spearman":
        return stats.stratified_spearman(a, b, _labels(sizes), n_boot=0, **kw)
    return stats.mean_difference(a, b, paired=test == "sign_flip", n_boot=0, **kw)


def _extreme(test: str, sizes: tuple[int, ...], sign: int) -> tuple[np.ndarray, np.ndarray]:
    """The data on which the test's p is smallest, on the side ``sign``."""
    if test in RANK_KINDS:
        x = np.concatenate([np.arange(m, dtype=float) for m in sizes])
        return x, sign * x
    if test == "sign_flip":
        return np.full(sizes[0], float(sign)), np.zeros(sizes[0])
    return np.full(sizes[0], float(sign)), np.zeros(sizes[1])


def _sizes(test: str, n: int, strata: int | None) -> tuple[int, ...]:
    if test == "two_sample":
        return (n - n // 2, n // 2)
    return strata_sizes(n, strata if test == "stratified_spearman" else 1)


@functools.lru_cache(maxsize=None)
def _floor(test: str, n: int, strata: int | None, direction: str, null: float) -> tuple[float, bool]:
    """(the smallest p the test can reach, whether the test is exact at this design)."""
    sides = {"greater": (1,), "less": (-1,), "two-sided": (1, -1)}[direction]
    if test == "binomial":
        return min(stats.binomial_rate(n if s > 0 else 0, n, null).p_value for s in sides), True
    if test == "t_test":  # no floor from two units on (a constant sample of one sign has p -> 0)
        return (1.0 if n < 2 else 0.0), True
    sizes = _sizes(test, n, strata)
    if test == "two_sample" and min(sizes) < 1:
        return 1.0, True
    ps, exact = [], True
    for s in sides:
        r = _test(test, *_extreme(test, sizes, s), sizes)
        ps.append(r.p_value if math.isfinite(r.p_value) else 1.0)  # no test at all (too few units): never p < alpha
        exact = exact and r.p_method in ("exact", "")
    return min(ps), exact


def p_floor(test: str, n: int, *, strata: int | None = None, direction: str = "two-sided",
            null: float = 0.5) -> float:
    """The smallest p ``test`` can return over ``n`` units (on the predicted side of ``direction``): the test
    run on perfectly ordered data. 1.0 where there are too few units for any test."""
    check_args(test, 0.5 if test == "binomial" else 0.0, n, strata, 0.5, direction, null)
    return _floor(test, n, strata, direction, float(null))[0]


def _on_side(value: np.ndarray, direction: str, null: float) -> np.ndarray:
    if direction == "greater":
        return value > null
    if direction == "less":
        return value < null
    return np.ones(np.shape(value), bool)


def _draw(test: str, effect: float, sizes: tuple[int, ...], rng: np.random.Generator,
          n_sim: int) -> tuple[np.ndarray, np.ndarray]:
    """``n_sim`` data sets under the effect: (a, b) arrays with one data set per row."""
    if test in RANK_KINDS:
        r = 2 * math.sin(math.pi * effect / 6)  # Pearson r of the bivariate normal whose Spearman rho is effect
        x = rng.standard_normal((n_sim, sum(sizes)))
        return x, r * x + math.sqrt(max(0.0, 1 - r * r)) * rng.standard_normal(x.shape)
    if test == "sign_flip":
        return effect + rng.standard_normal((n_sim, sizes[0])), np.zeros((n_sim, sizes[0]))
    return effect + rng.standard_normal((n_sim, sizes[0])), rng.standard_normal((n_sim, sizes[1]))


def _statistic(test: str, a: np.ndarray, b: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """The rank test's statistic per data set, as the test computes it (no p)."""
    if test == "spearman":
        return stats.spearman_rho(a, b, axis=-1)
    lab = _labels(sizes)  # exact_max=0 and one permutation: the statistic without the exact enumeration
    return np.array([stats.stratified_spearman(x, y, lab, exact_max=0, n_permutations=1, n_boot=0).value
                     for x, y in zip(a, b)])


def _simulated(test: str, effect: float, sizes: tuple[int, ...], alpha: float, direction: str, exact: bool,
               n_sim: int, seed: int, n_permutations: int) -> float:
    a, b = _draw(test, effect, sizes, np.random.default_rng(seed), n_sim)
    if exact and test in RANK_KINDS:
        value = _statistic(test, a, b, sizes)
        p = np.full(n_sim, np.nan)
        keys = np.round(value, 10)
        for key in np.unique(keys[np.isfinite(keys)]):
            rows = np.flatnonzero(keys == key)
            ck = (test, sizes, float(key))
            if ck not in _P_CACHE:
                _P_CACHE[ck] = _test(test, a[rows[0]], b[rows[0]], sizes).p_value
            p[rows] = _P_CACHE[ck]
    else:
        kw = {} if exact else {"n_permutations": n_permutations}  # exact: the test's own enumeration
        res = [_test(test, x, y, sizes, **kw) for x, y in zip(a, b)]
        value = np.array([r.value for r in res])
        p = np.array([r.p_value for r in res])
    with np.errstate(invalid="ignore"):
        hit = (p < alpha) & _on_side(value, direction, 0.0)
    return float(hit.mean())


def _binomial(effect: float, n: int, alpha: float, direction: str, null: float) -> float:
    ks = np.arange(n + 1)
    p = np.array([stats.binomial_rate(int(k), n, null).p_value for k in ks])
    hit = (p < alpha) & _on_side(ks / n, direction, null)
    return float(_st.binom.pmf(ks, n, effect)[hit].sum())


@functools.lru_cache(maxsize=None)
def _power(test, effect, n, strata, alpha, direction, null, n_sim, seed, n_permutations) -> Power:
    floor, exact = _floor(test, n, strata, direction, null)
    common = dict(test=test, effect=effect, n=n, alpha=alpha, direction=direction, p_floor=floor,
                  strata=strata if test == "stratified_spearman" else None,
                  null=null if test == "binomial" else None)
    if floor >= alpha:
        return Power(power=0.0, method="floor", **common)
    if test == "binomial":
        return Power(power=_binomial(effect, n, alpha, direction, null), method="exact", **common)
    if test == "t_test":
        from statsmodels.stats.power import TTestPower

        alt = {"greater": "larger", "less": "smaller", "two-sided": "two-sided"}[direction]
        pw = float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative=alt))
        return Power(power=pw, method="exact", **common)
    pw = _simulated(test, effect, _sizes(test, n, strata), alpha, direction, exact, n_sim, seed, n_permutations)
    return Power(power=pw, method="simulated", n_sim=n_sim, se=math.sqrt(pw * (1 - pw) / n_sim), **common)


def power(test: str, effect: float, n: int, *, strata: int | None = None, alpha: float = 0.05,
          direction: str = "greater", null: float = 0.5, n_sim: int = N_SIM, seed: int = 0,
          n_permutations: int = SIM_PERMUTATIONS) -> Power:
    """The probability that ``test`` over ``n`` units reaches p < ``alpha`` on the side ``direction`` predicts
    when the effect is ``effect`` (see the module docstring for the kinds, the effect's meaning and the
    floor). ``strata``: the number of strata of ``stratified_spearman`` (n split near-equally); ``null``: the
    null rate of ``binomial``. Deterministic for a given ``seed``; cached."""
    check_args(test, float(effect), n, strata, alpha, direction, float(null))
    return _power(test, float(effect), int(n), None if strata is None else int(strata), float(alpha), direction,
                  float(null), int(n_sim), int(seed), int(n_permutations))


def units_for_power(target: float = 0.7, effect: float = 0.7, strata: int = 2, *,
                    test: str = "stratified_spearman", alpha: float = 0.05, direction: str = "greater",
                    max_per_stratum: int = 30, **kw) -> tuple[int, Power]:
    """The fewest units per stratum (n = strata x m, m = 2, 3, ...) at which ``test`` has power >= ``target``
    at ``effect``, with that power; ``(0, power at max_per_stratum)`` when none up to ``max_per_stratum``
    does. For the pooled decorrelation test: corpora per model, with one stratum per model."""
    if not 0 < target < 1:
        raise ValueError(f"target must be in (0, 1), got {target}")
    pw = None
    for m in range(2, max_per_stratum + 1):
        pw = power(test, effect, strata * m, strata=strata if test == "stratified_spearman" else None,
                   alpha=alpha, direction=direction, **kw)
        if pw.power >= target:
            return m, pw
    return 0, pw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m adapterscope.power", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effect", type=float, default=0.7, help="Spearman rho within each model (default 0.7)")
    ap.add_argument("--models", type=int, default=2, help="strata (default 2)")
    ap.add_argument("--corpora", type=int, nargs="+", default=[4, 8], help="corpora per model (default 4 8)")
    ap.add_argument("--target", type=float, default=0.7, help="power wanted (default 0.7)")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--n-sim", type=int, default=N_SIM)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"pooled within-model Spearman (stratified_spearman), {a.models} models, rho={a.effect:g} within each, "
          f"direction greater, alpha {a.alpha:g}, {a.n_sim} simulations:")
    for c in a.corpora:
        pw = power("stratified_spearman", a.effect, a.models * c, strata=a.models, alpha=a.alpha,
                   n_sim=a.n_sim, seed=a.seed)
        print(f"  {a.models} models x {c} corpora: {pw.describe()} (se {pw.se:.2f}; p floor {pw.p_floor:.2g})")
    m, pw = units_for_power(a.target, a.effect, a.models, alpha=a.alpha, n_sim=a.n_sim, seed=a.seed)
    if m:
        print(f"  fewest corpora per model with power >= {a.target:g}: {m} ({pw.describe()})")
    else:
        print(f"  no corpus count up to 30 per model reaches power {a.target:g} ({pw.describe()})")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
