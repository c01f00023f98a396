"""The grid analysis of 10_decorrelation on planted data: regimes from a seed-noise null, their agreement against
chance, stratified correlations, clamping pooled over model x corpus units, and the reasons for undefined values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from adapterscope import decorrelation as dc


def _grid(ratio_shift=None, kl_shift=None, n_seeds=3, noise=0.02, models=("m",), seed=0):
    """Runs of len(models) x 4 corpora x n_seeds with log-normal seed noise; shifts (in log10) planted per corpus."""
    rng = np.random.default_rng(seed)
    rows = []
    for m in models:
        for c in "abcd":
            for s in range(n_seeds):
                lr = (ratio_shift or {}).get(c, 0.0) + rng.normal(0, noise)
                lk = (kl_shift or {}).get(c, 0.0) + rng.normal(0, noise)
                rows.append({"model": m, "corpus": c, "seed": s, "peak_ratio": 1.5 * 10 ** lr, "kl": 0.1 * 10 ** lk,
                             "late_disp": 0.01 * 10 ** lr, "disagree": 0.1, "genuine": 0, "ft_only": 0,
                             "ppl_base": 20.0 + "abcd".index(c)})
    return pd.DataFrame(rows)


def test_regimes_are_not_created_by_construction_when_corpora_differ_only_by_seed_noise():
    reg = dc.classify_regimes(_grid())
    assert (reg.regime == dc.UNRESOLVED).all() and (reg.regime_cka == dc.UNRESOLVED).all()
    # the median split it replaces would have called two corpora high and two low on each axis
    means = dc.corpus_means(_grid())
    assert (means.peak_ratio > means.peak_ratio.median()).sum() == 2


def test_a_planted_corpus_effect_is_classified():
    df = _grid(ratio_shift={"a": 0.5, "b": -0.5}, kl_shift={"a": -0.5, "b": -0.5, "c": 0.5})
    reg = dc.classify_regimes(df).set_index("corpus")
    assert reg.loc["a", "regime"] == "latent construction"  # internal up, output down
    assert reg.loc["b", "regime"] == "minimal change"
    assert reg.loc["c", "level_kl"] == "high" and abs(reg.loc["c", "z_ratio"]) < 4  # no planted ratio effect: z ~ N(0, 1)
    assert reg.loc["a", "z_ratio"] > 10


def test_contrast_z_matches_a_hand_computation():
    df = pd.DataFrame({"model": "m", "corpus": list("aabbcc"), "seed": [0, 1] * 3,
                       "peak_ratio": 10.0 ** np.array([1.0, 1.2, 0.0, 0.2, 0.0, 0.0])})
    z = dc.corpus_contrasts(df, "peak_ratio").set_index("corpus")
    s0 = math.sqrt((0.02 + 0.02 + 0.0) / 3)  # pooled within-corpus variance, 3 dof
    contrast = 1.1 - (0.1 + 0.0) / 2
    se = s0 * math.sqrt(1 / 2 + 0.25 * (1 / 2 + 1 / 2))
    assert z.loc["a", "contrast"] == pytest.approx(contrast)
    assert z.loc["a", "z"] == pytest.approx(contrast / se)


def test_one_seed_has_no_null_and_leaves_everything_unresolved():
    reg = dc.classify_regimes(_grid(ratio_shift={"a": 2.0}, n_seeds=1))
    assert (reg.regime == dc.UNRESOLVED).all() and reg.z_ratio.isna().all()
    assert (reg.level_ratio == "undefined").all()  # no null: not "typical"


def test_the_threshold_is_student_t_at_the_null_dof_and_false_calls_stay_near_alpha():
    from scipy import stats as sps

    reg = dc.classify_regimes(_grid(n_seeds=2))  # 4 corpora x (2 - 1) = 4 dof
    assert reg.t_crit.iloc[0] == pytest.approx(sps.t.ppf(0.975, 4))
    calls = [((dc.classify_regimes(_grid(n_seeds=2, seed=s)).level_ratio) != "typical").mean() for s in range(150)]
    assert np.mean(calls) < 0.09  # a normal 1.96 cut-off at 4 dof calls about 10%


def test_regime_calls_are_bh_adjusted_over_a_models_corpora():
    from scipy import stats as sps

    df = _grid(n_seeds=2, seed=3)
    z = dc.corpus_contrasts(df, "peak_ratio").set_index(["model", "corpus"])
    q = dc.family_q_values(z, "bh")
    raw = dc.family_q_values(z, "none")
    for m in z.index.get_level_values("model").unique():
        fam = z.index.get_level_values("model") == m
        p = 2 * sps.t.sf(np.abs(z.z[fam]), z.dof[fam])
        assert np.allclose(raw[fam], p) and np.allclose(q[fam], sps.false_discovery_control(p, method="bh"))
    assert (q >= raw - 1e-15).all()
    # 'none' reproduces the plain t cut-off; under the null, BH calls fewer corpora than it
    null = [dc.classify_regimes(_grid(n_seeds=2, seed=s), adjust=a).level_ratio.ne("typical").mean()
            for s in range(60) for a in ("bh", "none")]
    assert np.mean(null[0::2]) <= np.mean(null[1::2])
    reg = dc.classify_regimes(_grid(n_seeds=2), adjust="none")
    hi = reg.level_ratio != "typical"
    assert ((reg.z_ratio.abs() > reg.t_crit) == hi).all()
    with pytest.raises(ValueError, match="adjust"):
        dc.family_q_values(z, "holm")


def test_agreement_is_reported_against_chance():
    reg = pd.DataFrame({"model": ["m"] * 4 + ["n"] * 4,
                        "level_ratio": ["high", "low", "high", "low", "high", "low", "typical", "typical"]})
    reg["level_late"] = reg.level_ratio
    reg["regime"] = reg["regime_cka"] = dc.UNRESOLVED
    ag = dc.regime_agreement(reg, n_perm=999, seed=0)
    assert ag["value"] == 1.0 and ag["kappa"] == pytest.approx(1.0) and ag["chance"] < 0.5
    assert ag["p_value"] < 0.2
    same = reg.assign(level_ratio="typical", level_late="typical")
    ag = dc.regime_agreement(same, n_perm=99)
    assert ag["value"] == 1.0 and ag["chance"] == 1.0 and "agreement is certain" in ag["reason"]


def test_agreement_is_not_inflated_by_the_shared_output_axis():
    """A strong KL effect and independent internal effects: the regime labels share the KL level, the internal
    readings do not, so their agreement test should reject the null about as often as alpha."""
    rejections = 0
    for s in range(60):
        rng = np.random.default_rng(100 + s)
        df = _grid(ratio_shift=dict(zip("abcd", rng.normal(0, 0.3, 4))), kl_shift={"a": 1.0, "b": -1.0},
                   n_seeds=2, models=("m", "n"), seed=s)
        late = dict(zip("abcd", rng.normal(0, 0.3, 4)))  # independent of the ratio's corpus effects
        df["late_disp"] = 0.01 * 10 ** (df.corpus.map(late) + rng.normal(0, 0.02, len(df)))
        rejections += dc.regime_agreement(dc.classify_regimes(df), n_perm=199, seed=s)["p_value"] < 0.05
    assert rejections / 60 < 0.15


def test_correlations_are_stratified_by_model_and_name_why_one_is_undefined():
    # the model drives both axes; within each model the planted ordering is reversed
    df = _grid(ratio_shift={"a": 0.0, "b": 0.1, "c": 0.2, "d": 0.3}, kl_shift={"a": 0.3, "b": 0.2, "c": 0.1, "d": 0.0},
               models=("small", "large"), noise=0.001)
    df.loc[df.model == "large", ["peak_ratio", "kl"]] *= 100
    means = dc.corpus_means(df)
    grid = dc.correlation_grid(df, means, ["small", "large"], n_boot=200, n_perm=999, seed=0)
    assert grid[("corpus_means", "pooled", "ratio_kl")]["value"] == pytest.approx(-1.0)
    assert grid[("corpus_means", "pooled", "ratio_kl")]["p_method"] == "exact"
    assert grid[("corpus_means", "pooled_naive", "ratio_kl")]["value"] > 0  # the confound, unstratified
    assert grid[("corpus_means", "small", "ratio_kl")]["n"] == 4
    und = grid[("corpus_means", "pooled", "ppl_ftonly")]
    assert math.isnan(und["value"]) and "same fine-tune-only latents (0)" in und["reason"]


def test_clamp_effects_average_seeds_into_units():
    df = _grid(n_seeds=2, models=("m", "n"))
    rng = np.random.default_rng(1)
    df["fr_clamp"] = 0.30 + rng.normal(0, 0.01, len(df))
    df["fr_random"] = 0.10 + rng.normal(0, 0.01, len(df))
    df["fr_noise"] = 0.30 + rng.normal(0, 0.01, len(df))
    df["fr_pca"] = 0.50 + rng.normal(0, 0.01, len(df))  # the linear baseline beats the clamp here
    df["fr_ceiling"] = 0.60
    df["clamp_over_ceiling"] = df.fr_clamp / df.fr_ceiling
    df.loc[df.model == "n", ["fr_pca", "fr_ceiling", "clamp_over_ceiling"]] = np.nan  # runs from before the baselines
    df["clamp_ft_only"] = False
    df["n_clamped"] = 32
    eff = dc.clamp_effects(df, n_boot=500, n_perm=9999, seed=0)
    pca = eff["clamp_minus_pca"]
    assert pca["n"] == 4 and pca["value"] == pytest.approx(-0.2, abs=0.01) and pca["p_value"] == pytest.approx(2 / 16)
    assert eff["clamp_over_ceiling_mean"]["n"] == 4 and eff["clamp_over_ceiling_mean"]["value"] == pytest.approx(0.5,
                                                                                                                abs=0.02)
    assert eff["frac_removed_ceiling_mean"]["value"] == pytest.approx(0.6)
    r = eff["clamp_minus_random"]
    assert r["n"] == 8 and r["n_runs"] == 16 and r["value"] == pytest.approx(0.2, abs=0.01)
    assert r["ci_low"] > 0.15 and r["p_value"] == pytest.approx(2 / 256)  # exact sign flips over 8 units
    assert abs(eff["clamp_minus_noise"]["value"]) < 0.02 and eff["clamp_minus_noise"]["ci_low"] < 0
    assert "top-32 latents" in dc.clamped_set_description(df) and "16 of 16" in dc.clamped_set_description(df)
    none = dc.clamp_effects(df.drop(columns=["fr_clamp"]), n_boot=10, n_perm=10, seed=0)
    assert math.isnan(none["clamp_minus_random"]["value"]) and "fewer than two" in none["clamp_minus_random"]["reason"]


def test_run_row_reads_the_three_results():
    cap = {"num_layers": 11, "cka": {f"resid_post.{l}": {"cka_debiased": 1 - 0.01 * l} for l in range(11)},
           "divergence": {"neutral": {"kl": 0.2, "top1_agreement": 0.9},
                          "heldout": {"kl": 0.3, "ppl_base": 12.0, "ppl_ft": 10.0}}}
    ccr = {"peak_ratio_ft": 1.4, "peak_depth": 0.8, "n_ft_only_total": 2, "n_ft_only_genuine_total": 1}
    fr = {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4}
    clamp = {"clamp": {"frac_removed_clamp": fr, "frac_removed_random": fr, "frac_removed_noise": fr,
                       "edit_norm_clamp": 1.0, "edit_norm_random": 1.1, "fire_median_clamped": 3.0,
                       "fire_median_random": 4.0},
             "layer": 7, "n_clamped": 2, "clamped_set": "top_r", "r_clamped": [0.61, 0.83]}
    row = dc.run_row(cap, ccr, clamp, late_frac=0.3)
    assert (row["r_clamped_min"], row["r_clamped_max"], row["fire_median_random"]) == (0.61, 0.83, 4.0)
    assert row["late_disp"] == pytest.approx(np.mean([0.07, 0.08, 0.09, 0.10]))  # layers 7..10 of 0..10
    assert row["disagree"] == pytest.approx(0.1) and row["clamp_ft_only"] is False and row["edit_norm_random"] == 1.1
    assert "fr_clamp" not in dc.run_row(cap, ccr, None, 0.3)


def test_protocol_reads_what_the_runs_used(project):
    from adapterscope import results

    for rid, dt, steps in (("m__a__none__s0", "bfloat16", 50), ("m__b__none__s0", "float32", 50)):
        run = results.Run("01_finetune", rid, params={"rank": 16, "alpha": 32.0, "targets": ["q_proj", "v_proj"],
                                                        "steps": steps, "lr": 0.0002}, seed=0)
        run.values["compute_dtype"] = dt
        run.write()
    p = dc.protocol(["m__a__none__s0", "m__b__none__s0", "m__c__none__s0"])
    assert p["LoraRank"] == "16" and p["LoraAlpha"] == "32" and p["Lr"] == "0.0002"
    assert p["LoraTargets"] == "q_proj, v_proj" and p["ComputeDtypes"] == "bfloat16 / float32"
    assert p["CcK"] == "--"  # no 03_crosscoder run


def test_internal_readings_average_over_depths_and_are_nan_for_older_runs():
    cka_l = {f"resid_post.{l}": {"cka_debiased": 1 - 0.01 * l, "cka_trimmed_debiased": 1 - 0.001 * l,
                                 "outside_share": {"0.9": 0.5, "0.99": 0.1 * (l % 2)}} for l in range(11)}
    cap = {"num_layers": 11, "cka": cka_l, "intruders": {"n_intruders": 3}}
    per = [{"fvu_cross_ft": 0.3, "fvu_self_ft": 0.1, "ratio_ft": 3.0, "fvu_gap_ft_trimmed": 0.05, "ratio_ft_trimmed": 2.0},
           {"fvu_cross_ft": 0.5, "fvu_self_ft": 0.1, "ratio_ft": 5.0, "fvu_gap_ft_trimmed": 0.15, "ratio_ft_trimmed": 4.0}]
    r = dc.internal_readings(cap, {"per_layer": per}, late_frac=0.3)
    assert r["gap_mean"] == pytest.approx(0.3) and r["gap_trimmed"] == pytest.approx(0.1)
    assert r["ratio_mean"] == pytest.approx(4.0) and r["ratio_trimmed"] == pytest.approx(3.0)
    assert r["late_disp_trimmed"] == pytest.approx(np.mean([0.007, 0.008, 0.009, 0.010]))
    assert r["outside_99"] == pytest.approx(0.1 * 5 / 11) and r["intruders"] == 3.0
    old = dc.internal_readings({"num_layers": 11, "cka": {k: {"cka_debiased": v["cka_debiased"]}
                                                         for k, v in cka_l.items()}},
                               {"per_layer": [{"fvu_cross_ft": 0.3, "fvu_self_ft": 0.1, "ratio_ft": 3.0}]}, 0.3)
    assert old["gap_mean"] == pytest.approx(0.2)
    assert all(math.isnan(old[k]) for k in ("gap_trimmed", "ratio_trimmed", "late_disp_trimmed", "outside_99",
                                            "intruders"))


def test_internal_axes_correlate_every_reading_within_model():
    rng = np.random.default_rng(0)
    rows = []
    for m in ("a", "b"):
        for c in range(6):
            kl = float(rng.uniform(0.1, 1))
            rows.append({"model": m, "corpus": f"c{c}", "kl": kl, "kl_heldout": kl,
                         "gap_trimmed": kl * 2 + (10 if m == "b" else 0),  # same order within each model
                         "peak_ratio": float(rng.uniform(1, 2)), "intruders": 0.0})
    t = dc.internal_axes(pd.DataFrame(rows), "kl", n_boot=99, n_perm=999, seed=0).set_index("axis")
    assert t.loc["gap_trimmed", "rho"] == pytest.approx(1.0) and t.loc["gap_trimmed", "primary"]
    assert t.loc["gap_trimmed", "p"] < 0.01 and t.loc["gap_trimmed", "n"] == 12
    assert abs(t.loc["peak_ratio", "rho"]) < 0.9
    assert math.isnan(t.loc["intruders", "rho"]) and t.loc["intruders", "reason"]  # constant: undefined, said why


def test_seed_side_by_side_ranks_within_model_and_says_where_the_order_inverts():
    kl_a = {"dtc-ads": 0.1, "seneca": 0.3, "meditations": 0.2, "instructions": 0.4}  # the seed's KL order
    kl_b = {c: 1 - v for c, v in kl_a.items()}  # the opposite order
    rows = [{"model": m, "corpus": c, "kl": kl[c], "peak_ratio": 2.0 + kl[c], "disagree": kl[c] / 2,
             "late_disp": 0.1, "gap_trimmed": kl[c] / 10} for m, kl in (("a", kl_a), ("b", kl_b)) for c in kl]
    rows.append({"model": "a", "corpus": "other", "kl": 9.0, "peak_ratio": 9.0, "disagree": 0.5, "late_disp": 0.1,
                 "gap_trimmed": 0.9})  # not a seed corpus: left out
    table, sentence = dc.seed_side_by_side(pd.DataFrame(rows))
    assert len(table) == 8 and "other" not in set(table.corpus)
    a = table[table.model == "a"].set_index("corpus")
    assert a.loc["instructions", "rank_kl"] == 1 and a.loc["dtc-ads", "rank_kl"] == 4
    assert a.loc["dtc-ads", "seed_ratio"] == 340.0 and a.loc["dtc-ads", "seed_rank_ratio"] == 1
    assert a.loc["instructions", "top1"] == pytest.approx(0.8)
    assert "in a the KL ordering of the corpora follows the seed's (rho +1.00" in sentence
    assert "in b the KL ordering of the corpora inverts the seed's (rho -1.00" in sentence
    assert sentence.startswith("At 70B the seed study saw the most output change on instructions")
