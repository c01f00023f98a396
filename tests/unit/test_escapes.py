"""Escape-route analysis (adapterscope.escapes) on planted ground truth: selective conditions found and
exchangeable ones not, planted clusters recovered, a planted predictive feature found and a null one at AUC ~0.5,
item grouping respected, and route dissimilarity that tracks a stability difference detected."""

import math

import numpy as np
import pandas as pd
import pytest

from adapterscope import escapes as E
from adapterscope import regimes

C = E.CONDITIONS


def design(flip_base: np.ndarray, flip_adapted: np.ndarray | None = None, clean_same: np.ndarray | None = None):
    """(meta, clean, var) of a complete items x conditions design with the given flip indicators."""
    n = flip_base.shape[0]
    flip_adapted = flip_base if flip_adapted is None else flip_adapted
    clean_same = np.ones(n, bool) if clean_same is None else clean_same
    rows = []
    for i in range(n):
        ca, cb = "a", "a" if clean_same[i] else "b"
        rows.append({"item": i, "regime": "clean", "kind": "clean", "pred_base": ca, "pred_adapted": cb,
                     "correct_base": True, "correct_adapted": clean_same[i], "suggested": None})
        for j, k in enumerate(C):
            rows.append({"item": i, "regime": E.REGIME_OF[k], "kind": k,
                         "pred_base": "z" if flip_base[i, j] else ca, "pred_adapted": "z" if flip_adapted[i, j] else cb,
                         "correct_base": not flip_base[i, j], "correct_adapted": not flip_adapted[i, j],
                         "suggested": None})
    meta = pd.DataFrame(rows)
    clean, var = regimes.variant_table(meta)
    return meta, clean, var


def test_flip_matrix_is_items_by_conditions_and_rejects_an_incomplete_design():
    F = (np.random.default_rng(0).random((5, len(C))) < 0.3)
    _, _, var = design(F)
    M = E.flip_matrix(var, "base")
    assert M.shape == (5, len(C)) and list(M.columns) == list(C)
    np.testing.assert_array_equal(M.to_numpy(), F.astype(float))
    with pytest.raises(ValueError, match="no rows"):
        E.flip_matrix(var[var.kind != "blur"], "base")


def test_condition_table_calls_escapes_and_holds_with_ci_narrower_than_a_tenth_at_100_items():
    rng = np.random.default_rng(1)
    F = rng.random((100, len(C))) < 0.03
    F[:, C.index("suggestion")] = rng.random(100) < 0.7
    _, _, var = design(F)
    t = E.condition_table(var, ["base"], 0.8, 500, 0)
    calls = t.set_index("condition").call
    assert calls["suggestion"] == "escape"
    assert (calls.drop("suggestion") == "holds").all()
    assert (t.halfwidth < 0.1).all()


def test_selective_breakability_finds_a_planted_selective_condition():
    rng = np.random.default_rng(2)
    F = rng.random((60, len(C))) < 0.05
    F[:, [C.index("suggestion"), C.index("prefill_agree")]] = rng.random((60, 2)) < 0.6
    r = E.selective_breakability(F, 300, 300, 0)
    assert r["value"] > 0 and r["p_value"] < 0.01 and r["ci_low"] > 0


@pytest.mark.parametrize("seed", [3, 4])
def test_selective_breakability_is_null_when_conditions_are_exchangeable_even_with_fragile_items(seed):
    rng = np.random.default_rng(seed)
    fragility = rng.beta(1, 3, size=(60, 1))  # items differ a lot; conditions do not
    F = rng.random((60, len(C))) < fragility
    r = E.selective_breakability(F, 300, 300, 0)
    assert r["p_value"] > 0.05 and r["ci_low"] <= 0 <= r["ci_high"]


def test_selective_breakability_undefined_without_variation():
    r = E.selective_breakability(np.zeros((10, len(C))), 50, 50, 0)
    assert math.isnan(r["value"]) and "no variation" in r["reason"]


def planted_clusters(n_per=30, d=40, k=3, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * sep
    lab = np.repeat(np.arange(k), n_per)
    X = centres[lab] + rng.normal(size=(len(lab), d))
    items = rng.integers(0, 40, len(lab))
    return X, lab, items


def test_cluster_escapes_recovers_planted_clusters_and_matches_their_classes():
    X, lab, items = planted_clusters()
    r = E.cluster_escapes(X, items, classes=np.array(["u", "v", "w"])[lab], n_boot=20, n_perm=200, seed=0)
    assert r["k"] == 3
    assert r["value"] > 0.95 and r["p_value"] < 0.01 and r["ci_low"] > 0.9
    assert r["stability"] > 0.9
    assert r["null_ari_q95"] < 0.1


def test_cluster_escapes_against_unrelated_classes_is_at_the_null():
    X, lab, items = planted_clusters(seed=1)
    cls = np.random.default_rng(5).choice(["u", "v", "w"], len(lab))
    r = E.cluster_escapes(X, items, classes=cls, n_boot=10, n_perm=300, seed=0)
    assert abs(r["value"]) < 0.1 and r["p_value"] > 0.05


def test_cluster_escapes_undefined_when_too_few_or_one_class():
    r = E.cluster_escapes(np.zeros((3, 5)), [0, 1, 2], classes=["a", "b", "a"])
    assert math.isnan(r["value"]) and "too few" in r["reason"]
    X, lab, items = planted_clusters(n_per=10)
    r = E.cluster_escapes(X, items, classes=["a"] * len(lab), n_boot=5, n_perm=10)
    assert r["k"] == 3 and math.isnan(r["value"]) and "one mechanism class" in r["reason"]


def test_signatures_are_scaled_displacements_per_layer():
    rng = np.random.default_rng(0)
    F = np.zeros((4, len(C)), bool)
    meta, clean, var = design(F)
    H = rng.normal(size=(len(meta), 3, 6))
    S = E.signatures(H, var, clean.row, [1, 2])
    assert S.shape == (len(var), 12)
    r0 = var.index[0]
    c0 = clean.loc[var.item.iloc[0], "row"]
    scale = np.sqrt((H[clean.row.to_numpy(), 1] ** 2).sum(1).mean())
    np.testing.assert_allclose(S[0, :6], (H[r0, 1] - H[c0, 1]) / scale)


def test_cluster_profiles_find_each_clusters_peak_layer_and_class():
    rng = np.random.default_rng(0)
    n = 40
    ev = pd.DataFrame({"cluster": np.repeat([0, 1], n // 2), "class": np.repeat(["x", "y"], n // 2),
                       "condition": np.repeat(["noise", "suggestion"], n // 2),
                       "regime": np.repeat(["visual", "pressure"], n // 2)})
    rel = np.full((n, 6), 0.1)
    rel[: n // 2, 2] = 1.0
    rel[n // 2:, 5] = 1.0
    D = rng.normal(size=(n, 16))
    bases = {r: np.linalg.qr(rng.normal(size=(16, 2)))[0] for r in ("prompt", "visual", "pressure")}
    p = E.cluster_profiles(ev, rel, D, bases, k=2).set_index("cluster")
    assert p.loc[0, "peak_layer"] == 2 and p.loc[1, "peak_layer"] == 5
    assert p.loc[0, "class"] == "x" and p.loc[1, "class_share"] == 1.0 and p.loc[1, "share_pressure"] == 1.0
    assert p[[f"overlap_{r}" for r in bases]].to_numpy().max() <= 1.0


def test_output_features_margin_and_entropy():
    f = E.output_features([{"a": 0.0, "b": -math.log(3)}, {"a": math.log(0.5), "b": math.log(0.5)}])
    np.testing.assert_allclose(f[0, 0], math.log(3))
    np.testing.assert_allclose(f[1], [0.0, math.log(2)])


def test_predict_flips_finds_a_planted_feature_and_a_null_feature_stays_at_chance():
    rng = np.random.default_rng(0)
    n_items, per = 80, 6
    groups = np.repeat(np.arange(n_items), per)
    x = rng.normal(size=len(groups))
    y = (x + 0.5 * rng.normal(size=len(groups)) > 0.3).astype(int)
    null = rng.normal(size=(len(groups), 5))
    r = E.predict_flips(y, groups, {"planted": (np.c_[x, null], None), "null": (null, None)},
                        n_folds=5, pca_dims=0, n_perm=60, n_boot=200, seed=0)
    assert r["planted"]["value"] > 0.85 and r["planted"]["p_value"] < 0.05 and r["planted"]["ci_low"] > 0.75
    assert abs(r["null"]["value"] - 0.5) < 0.1 and r["null"]["p_value"] > 0.05
    d = E.compare_auc(y, groups, r["scores"]["planted"], r["scores"]["null"], n_perm=300, n_boot=200)
    assert d["value"] > 0.25 and d["p_value"] < 0.01 and d["ci_low"] > 0
    same = E.compare_auc(y, groups, r["scores"]["null"], r["scores"]["null"], n_perm=50, n_boot=50)
    assert same["value"] == 0 and same["p_value"] == 1.0


def test_predict_flips_keeps_items_out_of_their_own_training_folds():
    # each item has its own random feature vector and its own label: memorisable across rows of one item,
    # unpredictable for an unseen item. Group folds must give chance; row folds would give ~1.
    rng = np.random.default_rng(1)
    n_items, per = 60, 8
    groups = np.repeat(np.arange(n_items), per)
    feat = np.repeat(rng.normal(size=(n_items, 20)), per, axis=0)
    y = np.repeat(rng.random(n_items) < 0.5, per).astype(int)
    r = E.predict_flips(y, groups, {"item": (feat, None)}, n_folds=5, pca_dims=0, n_perm=0, n_boot=50)
    assert r["item"]["value"] < 0.7


def test_predict_flips_pca_and_passthrough_and_undefined_outcome():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(40), 4)
    onehot = np.tile(np.eye(4), (40, 1))
    y = (onehot[:, 0] == 1).astype(int) | (rng.random(160) < 0.05)
    r = E.predict_flips(y, groups, {"cond": (None, onehot), "both": (rng.normal(size=(160, 30)), onehot)},
                        pca_dims=3, n_perm=20, n_boot=50)
    assert r["cond"]["value"] > 0.9 and r["both"]["value"] > 0.85
    u = E.predict_flips(np.zeros(160), groups, {"cond": (None, onehot)})
    assert math.isnan(u["cond"]["value"]) and "one class" in u["cond"]["reason"]


def pathway_design(n=40, coupled=True, seed=0):
    rng = np.random.default_rng(seed)
    t = rng.random(n)  # how far the adapted route departs from the base route
    k = len(C)
    Fb = np.zeros((n, k), bool)
    drop = np.round(t * k * 0.6).astype(int) if coupled else rng.permutation(np.round(t * k * 0.6).astype(int))
    Fa = np.zeros((n, k), bool)
    for i in range(n):
        Fa[i, :drop[i]] = True
    clean_same = np.ones(n, bool)
    clean_same[:4] = False
    meta, clean, var = design(Fb, Fa, clean_same)
    D = 24
    Hb, Ha = np.zeros((len(meta), 2, D)), np.zeros((len(meta), 2, D))
    for i in range(n):
        g = var[var.item == i].index.to_numpy()
        R = rng.normal(size=(k, D))
        Hb[g, 1] = R
        Ha[g, 1] = (1 - t[i]) * R + t[i] * rng.normal(size=(k, D)) * 1.5
    return Hb, Ha, var, clean


def test_pathway_divergence_detects_route_dissimilarity_that_tracks_the_stability_gap():
    Hb, Ha, var, clean = pathway_design()
    r, tab = E.pathway_divergence(Hb, Ha, var, clean, layer=1, n_boot=300, n_perm=999)
    assert r["n_same"] == 36 and len(tab) == 36
    assert r["value"] > 0.6 and r["p_value"] < 0.01 and r["ci_low"] > 0.3
    assert 0 < r["share_split"] <= r["share_differ"] <= 1


def test_pathway_divergence_null_when_uncoupled_and_undefined_without_variation():
    Hb, Ha, var, clean = pathway_design(coupled=False, seed=3)
    r, _ = E.pathway_divergence(Hb, Ha, var, clean, layer=1, n_boot=200, n_perm=999)
    assert r["p_value"] > 0.05
    var2 = var.assign(same_adapted=True)
    r2, _ = E.pathway_divergence(Hb, Ha, var2, clean, layer=1)
    assert math.isnan(r2["value"]) and "no variation" in r2["reason"]


def test_tex_rows_and_figures(tmp_path):
    rng = np.random.default_rng(0)
    F = rng.random((20, len(C))) < 0.2
    _, _, var = design(F)
    t = E.condition_table(var, ["base", "adapted"], 0.8, 100, 0)
    rows = E.condition_tex_rows(t)
    assert len(rows) == len(C) and all(r.count("&") == 4 and not r.endswith("\\") for r in rows)
    tr = E.tests_tex_rows([("x", {"value": 0.5, "ci_low": 0.1, "ci_high": 0.9, "p_value": 0.01, "n": 3}),
                           ("y", {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0})])
    assert "0.50 (0.10, 0.90) & 0.010 & 3" in tr[0] and tr[1].startswith("y & -- &")
    fig = E.condition_figure(t, 0.8)
    assert fig.axes[0].get_ylabel()
    ev = pd.DataFrame({"cluster": [0, 0, 1], "class": ["a", "b", "a"]})
    prof = pd.DataFrame({"cluster": [0, 1], "n": [2, 1], "profile": [[0.1, 0.2], [0.3, 0.1]]})
    fig2 = E.cluster_figure(prof, ev, 1)
    assert fig2.axes[0].get_xlabel() == "layer"
