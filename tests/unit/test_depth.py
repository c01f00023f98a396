"""Depth profiles on planted data: exact slopes and late/early ratios, bootstrap CIs that cover the planted slope,
tests over runs (sign-flip p, bootstrap CI, undefined with a reason), the equal-step comparison, and the
crosscoder agreement tested over runs instead of over pooled layer ranks."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from adapterscope import depth

L = 11  # layers per planted run: depths 0, 0.1, ..., 1


def _run(model="m", corpus="c", lc="none", seed=0, slope=1.0, level=-3.0, se=1e-6, noise=0.0, rng=None):
    """One run's per-layer rows with log10(1 - CKA) = level + slope * depth (+ noise in log10)."""
    d = np.arange(L) / (L - 1)
    e = rng.normal(0, noise, L) if noise else 0.0
    disp = 10 ** (level + slope * d + e)
    return pd.DataFrame({"model": model, "corpus": corpus, "layer_control": lc, "seed": seed, "layer": np.arange(L),
                         "depth": d, "cka_debiased": 1 - disp, "se": se, "disp": disp})


def test_an_unresolved_layer_is_floored_at_its_standard_error_not_at_1e_9():
    # planted slope 2 from 1e-3; the first layer's debiased CKA overshoots 1 (no resolvable change), se 1e-3
    g = _run(slope=2.0, se=1e-3)
    g.loc[0, "cka_debiased"] = 1 + 2e-4
    g.loc[0, "disp"] = depth.displacement(g.loc[0, "cka_debiased"])
    (row,) = depth.slope_table(g, late_frac=0.3, n_boot=300, seed=0)[0].to_dict("records")
    assert row["n_floored"] == 1
    assert row["slope"] == pytest.approx(2.0, abs=0.05)          # the floor (1e-3) is where the planted line starts
    assert row["slope_lo"] > 1.5 and row["slope_hi"] < 2.5
    # the old floor would read log10(1e-9) = -9 at depth 0 and report a slope several times too steep
    assert depth.log_slope(g.depth, 1 - g.cka_debiased, depth.EPS) > 4


def test_slope_and_late_early_are_exact_on_a_planted_profile():
    g = _run(slope=2.0)
    slopes, boots = depth.slope_table(g, late_frac=0.3, n_boot=300, seed=0)
    (row,) = slopes.to_dict("records")
    assert row["slope"] == pytest.approx(2.0, abs=1e-9)
    assert row["slope_lo"] == pytest.approx(2.0, abs=1e-3) and row["slope_hi"] == pytest.approx(2.0, abs=1e-3)
    # late: depths 0.7, 0.8, 0.9, 1.0 (0.7 counts despite float rounding); early: 0, 0.1, 0.2, 0.3
    late = np.mean(10 ** (-3 + 2.0 * np.array([0.7, 0.8, 0.9, 1.0])))
    early = np.mean(10 ** (-3 + 2.0 * np.array([0.0, 0.1, 0.2, 0.3])))
    assert row["late_disp"] == pytest.approx(late) and row["late_over_early"] == pytest.approx(late / early)
    assert boots[("m", "c", "none", 0)].shape == (300,)


def test_parametric_bootstrap_covers_the_planted_slope_and_is_seeded():
    rows = [_run(corpus=f"c{i}", slope=1.5, level=-1.6, se=0.005, noise=0.0) for i in range(3)]
    df = pd.concat(rows, ignore_index=True)
    # CKA redrawn with se 0.005 around 1 - disp (0.025 .. 0.8, every layer resolved): the CI must cover 1.5
    slopes, _ = depth.slope_table(df, late_frac=0.3, n_boot=500, seed=1)
    assert (slopes.n_floored == 0).all()
    assert (slopes.slope_lo < 1.5).all() and (slopes.slope_hi > 1.5).all()
    again, _ = depth.slope_table(df, late_frac=0.3, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(slopes, again)
    other, _ = depth.slope_table(df, late_frac=0.3, n_boot=500, seed=2)
    assert not np.allclose(other.slope_lo, slopes.slope_lo)


def test_mean_over_runs_sign_flip_p_and_ci():
    # six positive slopes: the exact two-sided sign-flip p is 2 / 2^6 (all +, all -)
    out = depth.mean_over_units([0.8, 1.1, 0.9, 1.3, 1.0, 1.2], n_boot=999, n_perm=9999)
    assert out["value"] == pytest.approx(1.05) and out["n"] == 6
    assert out["p_value"] == pytest.approx(2 / 64) and out["p_method"] == "exact"
    assert 0.8 < out["ci_low"] < out["value"] < out["ci_high"] < 1.3
    # three positive runs cannot reach 0.05: p = 2/8
    assert depth.mean_over_units([1.0, 2.0, 3.0], n_boot=99)["p_value"] == pytest.approx(0.25)
    # values symmetric about 0: no effect
    null = depth.mean_over_units([-1.0, 1.0, -0.5, 0.5, -2.0, 2.0], n_boot=999)
    assert null["value"] == pytest.approx(0.0) and null["p_value"] == pytest.approx(1.0)
    assert null["ci_low"] < 0 < null["ci_high"]
    # one run: undefined, with the reason
    one = depth.mean_over_units([2.0, math.nan])
    assert math.isnan(one["value"]) and one["reason"] == "fewer than two runs (1)" and one["n_dropped"] == 1


def test_the_t_test_p_has_no_floor_and_matches_scipy():
    import scipy.stats

    v = [0.8, 1.1, 0.9, 1.3, 1.0, 1.2, 0.95, 1.05]  # eight positive units: the sign-flip floor is 2/256
    flip = depth.mean_over_units(v, n_boot=99)
    t = depth.mean_over_units(v, n_boot=99, p_test="t")
    assert flip["p_value"] == pytest.approx(2 / 256) and t["p_sign_flip"] == pytest.approx(2 / 256)
    assert t["p_value"] == pytest.approx(scipy.stats.ttest_1samp(v, 0).pvalue) and t["p_value"] < 1e-6
    assert t["p_method"] == "one-sample t-test" and "t-test" in t["test"]
    null = depth.mean_over_units([-1.0, 1.0, -0.5, 0.5], n_boot=99, p_test="t")
    assert null["p_value"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="p_test"):
        depth.mean_over_units(v, p_test="wilcoxon")


def test_trimmed_view_reads_the_trimmed_columns_of_the_runs_that_have_them():
    df = pd.concat([_run(corpus="a", slope=1.0), _run(corpus="b", slope=2.0)], ignore_index=True)
    assert len(depth.trimmed(df)) == 0  # no trimmed readings recorded
    df["cka_trimmed"] = 1 - 0.5 * (1 - df.cka_debiased)  # half the displacement everywhere: same log slope
    df["se_trimmed"] = df.se
    df.loc[df.corpus == "b", "cka_trimmed"] = math.nan  # b recorded none
    t = depth.trimmed(df)
    assert set(t.corpus) == {"a"} and (t.disp.to_numpy() == pytest.approx(0.5 * df[df.corpus == "a"].disp.to_numpy()))
    slopes, _ = depth.slope_table(t, late_frac=0.3, n_boot=50, seed=0)
    full, _ = depth.slope_table(df[df.corpus == "a"], late_frac=0.3, n_boot=50, seed=0)
    assert slopes.slope.iloc[0] == pytest.approx(full.slope.iloc[0], abs=0.05)


def test_slope_finding_uses_the_main_grid_only():
    df = pd.concat([_run(corpus="a", slope=1.0), _run(corpus="b", slope=3.0),
                    _run(corpus="a", lc="equal_step", slope=-5.0)], ignore_index=True)
    slopes, _ = depth.slope_table(df, late_frac=0.3, n_boot=50, seed=0)
    f = depth.slope_finding(slopes, "none", n_boot=99)
    assert f["value"] == pytest.approx(2.0) and f["n"] == 2 and f["unit"].startswith("model x corpus")
    assert f["p_value"] == pytest.approx(0.5)  # two units, both positive: 2/4
    # a second seed of corpus a is a replicate: averaged into a's unit, not a third point
    df2 = pd.concat([df, _run(corpus="a", slope=5.0, seed=1)], ignore_index=True)
    slopes2, _ = depth.slope_table(df2, late_frac=0.3, n_boot=50, seed=0)
    f2 = depth.slope_finding(slopes2, "none", n_boot=99)
    assert f2["n"] == 2 and f2["n_runs"] == 3 and f2["value"] == pytest.approx((3.0 + 3.0) / 2)


def test_control_table_and_difference_over_pairs():
    df = pd.concat([_run(corpus="a", slope=2.0), _run(corpus="a", lc="equal_step", slope=1.5),
                    _run(corpus="b", slope=2.0), _run(corpus="b", lc="equal_step", slope=2.5),
                    _run(corpus="z", slope=1.0)], ignore_index=True)  # z has no control run: skipped
    slopes, boots = depth.slope_table(df, late_frac=0.3, n_boot=200, seed=0)
    ctl = depth.control_table(slopes, boots, "equal_step", [("m", "a", 0), ("m", "b", 0), ("m", "z", 0)])
    assert list(ctl.corpus) == ["a", "b"]
    assert ctl["diff"].to_numpy() == pytest.approx([-0.5, 0.5], abs=1e-9)
    assert (ctl.diff_lo <= ctl["diff"] + 1e-3).all() and (ctl.diff_hi >= ctl["diff"] - 1e-3).all()
    assert ctl.ctl_positive.all()
    f = depth.control_diff_finding(ctl, n_boot=99)
    assert f["value"] == pytest.approx(0.0, abs=1e-9) and f["n"] == 2 and f["unit"].startswith("model x corpus")
    assert f["n_pairs"] == 2
    single = depth.control_diff_finding(ctl.iloc[:1])
    assert math.isnan(single["value"]) and single["reason"].startswith("fewer than two model x corpus")
    empty = depth.control_diff_finding(depth.control_table(slopes, boots, "equal_step", []))
    assert math.isnan(empty["value"]) and empty["n"] == 0


def _agreement_inputs(rhos_sign, n_layers=2, seed=0):
    """Runs whose crosscoder ratio is ordered with (+1) or against (-1) displacement over n_layers layers."""
    rng = np.random.default_rng(seed)
    per, ratios = [], {}
    for i, sgn in enumerate(rhos_sign):
        g = _run(corpus=f"c{i}", slope=1.0)
        per.append(g)
        layers = np.sort(rng.choice(L, n_layers, replace=False))
        disp = g.set_index("layer").disp[layers].to_numpy()
        ratios[("m", f"c{i}", "none", 0)] = pd.DataFrame({"layer": layers, "ratio_ft": 1 + sgn * disp})
    return pd.concat(per, ignore_index=True), ratios


def test_agreement_is_tested_over_runs_not_over_pooled_layer_pairs():
    per, ratios = _agreement_inputs([-1, -1])
    table, s = depth.crosscoder_agreement(per, ratios, n_boot=99)
    assert table.rho.tolist() == [-1.0, -1.0] and table.n_layers.tolist() == [2, 2]
    assert s["value"] == -1.0 and s["n_runs"] == 2 and s["n_pairs"] == 4 and s["rho_pooled"] == pytest.approx(-1.0)
    # two runs can give at best p = 2/4 over runs; the pooled within-run ranks gave p ~ 0 from four "pairs"
    assert s["p_value"] == pytest.approx(0.5)
    pooled_p = sps.spearmanr([1, 2, 1, 2], [2, 1, 2, 1]).pvalue
    assert pooled_p < 1e-6


def test_agreement_planted_over_many_runs_and_its_null():
    per, ratios = _agreement_inputs([1] * 7, n_layers=4)
    _, s = depth.crosscoder_agreement(per, ratios, n_boot=199)
    assert s["value"] == pytest.approx(1.0) and s["p_value"] == pytest.approx(2 / 2 ** 7)
    per, ratios = _agreement_inputs([1, -1] * 4, n_layers=4)
    _, s = depth.crosscoder_agreement(per, ratios, n_boot=199)
    assert s["value"] == pytest.approx(0.0) and s["p_value"] == pytest.approx(1.0)
    # a run with one crosscoder layer has no rho: kept in the table, dropped from the mean
    per, ratios = _agreement_inputs([1, 1, 1], n_layers=3)
    key = next(iter(ratios))
    ratios[key] = ratios[key].iloc[:1]
    table, s = depth.crosscoder_agreement(per, ratios, n_boot=99)
    assert table.rho.isna().sum() == 1 and s["n"] == 2 and s["n_dropped"] == 1 and s["n_runs"] == 3


def test_late_over_early_by_model_with_late_frac():
    frame = pd.DataFrame({"model": ["a"] * 4 + ["b"] * 4, "depth": [0.0, 0.3, 0.7, 1.0] * 2,
                          "rel_change": [1.0, 3.0, 10.0, 30.0, 2.0, 2.0, 4.0, 4.0]})
    r = depth.late_over_early(frame, "rel_change", "model", 0.3)
    assert r["a"] == pytest.approx(20.0 / 2.0) and r["b"] == pytest.approx(2.0)
    r2 = depth.late_over_early(frame, "rel_change", "model", 0.0)  # only depth 0 and 1
    assert r2["a"] == pytest.approx(30.0) and r2["b"] == pytest.approx(2.0)


def test_run_cells_adds_control_runs_once():
    cells = depth.run_cells(["m"], ["a", "b"], ["none"], lambda m: [0, 1], "equal_step", ["m"], ["a"], [0])
    assert cells == [("m", "a", "none", 0), ("m", "a", "none", 1), ("m", "b", "none", 0), ("m", "b", "none", 1),
                     ("m", "a", "equal_step", 0)]
    assert depth.run_cells(["m"], ["a"], ["none"], lambda m: [0], "", ["m"], ["a"], [0]) == [("m", "a", "none", 0)]
