"""Planted-truth tests of adapterscope.regimes: stability and flip accounting, escape routes, paired
differences, layer geometry, the held-out peak margin and cross-regime prediction."""

import numpy as np
import pandas as pd
import pytest

from adapterscope import geometry, macros, scenes
from adapterscope import regimes as R

# --------------------------------------------------------------------------------- planted predictions
# 4 items, answer "a". Clean base predictions: a a b b (items 0, 1 correct; 2, 3 wrong).
# prompt kinds (paraphrase, format), pressure kinds (suggestion: suggests "c"; prefill: no suggestion).
CLEAN = ["a", "a", "b", "b"]
PRED = {  # item -> base predictions for paraphrase, format, suggestion, prefill
    0: ["a", "a", "c", "a"],   # prompt 2/2 same; pressure: suggestion to c (correct -> wrong)
    1: ["a", "c", "c", "c"],   # format c->w; suggestion c->w; prefill c->w
    2: ["b", "a", "b", "b"],   # format w->c
    3: ["c", "b", "c", "a"],   # paraphrase w->w; suggestion w->w (to c); prefill w->c (pressure 0/2)
}
KINDS = [("prompt", "paraphrase"), ("prompt", "format"), ("pressure", "suggestion"), ("pressure", "prefill")]
MECH = {"paraphrase": "rewording", "format": "rewording", "suggestion": "social", "prefill": "scaffold"}


def _meta():
    rows = []
    for i in range(4):
        rows.append({"item": i, "regime": "clean", "kind": "clean", "suggested": None, "pred_base": CLEAN[i]})
        for (r, k), p in zip(KINDS, PRED[i]):
            rows.append({"item": i, "regime": r, "kind": k, "suggested": "c" if k == "suggestion" else None,
                         "pred_base": p})
    meta = pd.DataFrame(rows)
    meta["pred_adapted"] = meta.item.map(dict(enumerate(CLEAN)))  # the adapted model never changes its answer
    for m in R.MODELS:
        meta[f"correct_{m}"] = meta[f"pred_{m}"] == "a"
    return meta


def test_stability_and_flip_directions_planted():
    clean, var = R.variant_table(_meta())
    assert list(clean.row) == [0, 5, 10, 15] and len(var) == 16
    st = R.stability(var, clean, ["prompt", "pressure"], n_boot=500, seed=0).set_index(["model", "regime"])
    p, q, a = st.loc[("base", "prompt")], st.loc[("base", "pressure")], st.loc[("base", "all")]
    assert p.stability == pytest.approx((1 + .5 + .5 + .5) / 4)
    assert (p.n_changed, p.correct_to_wrong, p.wrong_to_correct, p.wrong_to_wrong) == (3, 1, 1, 1)
    assert q.stability == pytest.approx((.5 + 0 + 1 + 0) / 4)
    assert (q.n_changed, q.correct_to_wrong, q.wrong_to_correct, q.wrong_to_wrong) == (5, 3, 1, 1)
    assert q.to_suggested == pytest.approx(3 / 4) and q.changed_to_suggested == pytest.approx(1.0)
    assert np.isnan(p.to_suggested)
    assert a.stability == pytest.approx((3 + 1 + 3 + 1) / 16) and a.n_variants == 16 and a.n_items == 4
    assert q.clean_accuracy == pytest.approx(0.5) and q.accuracy == pytest.approx(2 / 8)
    assert p.lo < p.stability < p.hi and q.lo < q.stability < q.hi
    ad = st.loc[("adapted", "pressure")]
    assert (ad.stability, ad.lo, ad.hi, ad.n_changed) == (1.0, 1.0, 1.0, 0)


def test_escape_routes_selected_and_grouped():
    _, var = R.variant_table(_meta())
    kinds = R.stability_by_kind(var, escape_below=0.6, n_boot=200, seed=0, mechanism=MECH)
    kb = kinds[kinds.model == "base"].set_index("kind")
    assert kb.stability.to_dict() == pytest.approx({"paraphrase": .75, "format": .5, "suggestion": .25,
                                                     "prefill": .5})
    assert kb.escape.to_dict() == {"paraphrase": False, "format": True, "suggestion": True, "prefill": True}
    assert not kinds[kinds.model == "adapted"].escape.any()
    mech = R.mechanisms(kinds).set_index(["model", "mechanism"])
    rw = mech.loc[("base", "rewording")]
    assert (rw.conditions, rw.escapes, rw.regime) == ("paraphrase, format", 1, "prompt")
    assert rw.stability == pytest.approx(.625) and rw.min_stability == pytest.approx(.5)
    assert mech.loc[("adapted", "social")].escapes == 0
    rows = R.escape_tex_rows(R.mechanisms(kinds), MECH)
    assert len(rows) == 3 and rows[0].startswith("rewording & prompt & paraphrase, format & 50$^{\\ast}$ & 100")


def test_paired_differences_carry_the_ledger_keys():
    _, var = R.variant_table(_meta())
    gap = R.regime_gap(var, "prompt", "pressure", "base", n_boot=200, seed=0)
    assert gap["value"] == pytest.approx(0.625 - 0.375) and gap["n"] == 4 and gap["p_method"] == "exact"
    ad = R.adapter_stability_change(var, ["prompt", "pressure"], n_boot=200, seed=0)
    assert ad["pressure"]["value"] == pytest.approx(1 - 0.375) and ad["prompt"]["value"] == pytest.approx(0.375)
    for d in (gap, ad["pressure"]):
        f = macros.ledger_view(d, require=R.FINDING_KEYS)  # as 05b_regime_probing records a finding
        assert set(f) == set(R.FINDING_KEYS) and f["ci_low"] <= f["value"] <= f["ci_high"] and 0 < f["p_value"] <= 1
    none = R.adapter_stability_change(var.assign(same_adapted=var.same_base), ["prompt"], n_boot=200, seed=0)
    assert none["prompt"]["value"] == 0 and none["prompt"]["p_value"] == 1.0


def test_mechanism_classes_cover_every_kind_and_inputs_keep_answers():
    assert set(R.MECHANISM) == {k for ks in scenes.REGIMES.values() for k in ks}
    rows, meta = R.input_rows(scenes.make_examples(2, seed=3), variant_seed=0, strength=1.0)
    n_var = sum(len(ks) for ks in scenes.REGIMES.values())
    assert len(rows) == len(meta) == 2 * (1 + n_var)
    assert (meta.groupby("item").answer.nunique() == 1).all()
    assert meta[meta.kind == "suggestion"].suggested.notna().all()


# --------------------------------------------------------------------------------- planted geometry
REG = ["prompt", "visual", "pressure"]


def _planted_states(n_items=16, n_kinds=3, L1=7, d=24, crit=4, plateau=False, signal=True, noise=0.0, seed=0,
                    ramp=False):
    """Hidden states (rows = meta order, L1 layers, d) where at layer ``crit`` (every layer with ``plateau``)
    regime r moves each item along its own 2-D subspace U_r (U_r mutually orthogonal; plus isotropic
    ``noise``), and elsewhere every regime moves along isotropic noise. The relative displacement of every
    variant is 0.1 at every layer."""
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    U = {r: Q[:, 2 * j:2 * j + 2] for j, r in enumerate(REG)}
    meta, H = [], []
    for i in range(n_items):
        h0 = rng.normal(size=(L1, d))
        h0 *= 10 / np.linalg.norm(h0, axis=1, keepdims=True)
        meta.append({"item": i, "regime": "clean", "kind": "clean"})
        H.append(h0)
        for r in REG:
            for k in range(n_kinds):
                dl = rng.normal(size=(L1, d))
                for l in range(L1):
                    if signal and (plateau or ramp or l == crit):
                        nz = 6.0 * (1 - l / (L1 - 1)) if ramp else noise  # ramp: cleaner with depth
                        dl[l] = U[r] @ rng.normal(size=2) + nz * rng.normal(size=d) / np.sqrt(d)
                dl *= 1.0 / np.linalg.norm(dl, axis=1, keepdims=True)
                meta.append({"item": i, "regime": r, "kind": f"{r}{k}"})
                H.append(h0 + dl)
    return pd.DataFrame(meta), np.stack(H)


def _geometry(meta, H, k=2):
    var = meta[meta.regime != "clean"]
    clean_rows = meta.index[meta.regime == "clean"].to_numpy()
    return R.layer_geometry(H, var, clean_rows, REG, k=k, n_splits=6, seed=0, model="base")


def test_layer_geometry_finds_the_planted_layer():
    meta, H = _planted_states(crit=4)
    g = _geometry(meta, H)
    assert R.critical_layer(g["separation"]) == 4
    sep = g["geo"][g["geo"].regime == "separation"].set_index("layer")
    assert sep.loc[4, "within"] > 0.9 and sep.loc[4, "across"] < 0.05 and sep.loc[4, "separation"] > 0.85
    assert (sep.drop(4).separation.abs() < 0.2).all()
    disp_rows = g["geo"][g["geo"].regime != "separation"]
    assert np.allclose(disp_rows.rel_disp, 0.1) and set(disp_rows.layer) == set(range(1, 7))
    assert np.allclose(g["rel_disp"].to_numpy(), 0.1)
    pr = g["pairs"][(g["pairs"].layer == 4) & g["pairs"].cka.notna()]
    assert (pr.overlap < 1e-6).all() and (pr.min_angle > 89.9).all() and len(pr) == 3
    assert g["disp"]["visual"].shape == (6, 16 * 3, 24) and list(g["items"]["visual"][:4]) == [0, 0, 0, 1]


def test_gram_space_subspaces_match_feature_space():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3, 40, 16)) * np.linspace(3, 0.2, 16)
    G = X @ X.transpose(0, 2, 1)
    a, b = np.arange(0, 12), np.arange(20, 35)
    Ca, Cb = R.gram_basis(G, a, 3), R.gram_basis(G, b, 3)
    Va, Vb = geometry.principal_subspaces(X[:, a], 3), geometry.principal_subspaces(X[:, b], 3)
    for l in range(3):
        Ba = X[l, a].T @ Ca[l]
        assert np.allclose(Ba.T @ Ba, np.eye(3), atol=1e-8) and geometry.overlap(Ba, Va[l]) == pytest.approx(1)
    want = [geometry.overlap(Va[l], Vb[l]) for l in range(3)]
    assert np.allclose(R.gram_overlap(G, a, Ca, b, Cb), want, atol=1e-10)
    # a row of weight 2 is the same as that row twice
    dup = np.r_[a, a[:4]]
    Cw = R.gram_basis(G, a, 3, weights=np.r_[np.full(4, 2.0), np.ones(8)])
    assert np.allclose(R.gram_overlap(G, a, Cw, b, Cb), R.gram_overlap(G, dup, R.gram_basis(G, dup, 3), b, Cb))


def _heldout(meta, H, **kw):
    g = _geometry(meta, H)
    kw = {"k": 2, "n_splits": 5, "seed": 0, "n_boot": 40, "n_perm": 40, "layers": range(1, 7), **kw}
    return g, R.heldout_peak_margin(g["disp"], g["items"], **kw)


def test_heldout_margin_detects_a_planted_peak():
    g, out = _heldout(*_planted_states(crit=4))
    assert out["value"] > 0.7 and out["ci_low"] > 0.5 and out["p_value"] == pytest.approx(1 / 41)
    assert out["modal_layer"] == 4 and out["stability"] == 1.0 and out["n"] == 16
    assert out["p_method"] == "label_permutation" and out["n_selections"] == 30 and abs(out["null_mean"]) < 0.1
    assert set(R.FINDING_KEYS) <= set(out)


def test_peak_margin_needs_both_sides():
    assert R.peak_margin(np.array([0.1, 0.2, 0.9, 0.3, 0.2]), 2) == pytest.approx(0.9 - 0.25)
    assert R.peak_margin(np.array([0.1, 0.2, 0.3, 0.4, 0.9]), 4) == 0.0  # an end: at most 0
    assert R.peak_margin(np.array([0.9, 0.2, 0.3]), 0) == 0.0
    assert R.peak_margin(np.array([0.5, 0.2, 0.9, 0.1]), 1) == pytest.approx(0.2 - 0.5)


def test_heldout_margin_fails_without_signal_and_on_a_plateau():
    _, noise = _heldout(*_planted_states(signal=False, seed=1))
    assert noise["ci_low"] < 0 < noise["ci_high"] and noise["p_value"] > 0.1 and abs(noise["value"]) < 0.1
    assert noise["stability"] < 0.6
    # regimes well separated at every layer: the argmax still names a layer, the held-out margin does not
    g, flat = _heldout(*_planted_states(plateau=True, noise=0.5, seed=2))
    assert (np.asarray(g["separation"]) > 0.5).all() and 1 <= R.critical_layer(g["separation"]) <= 6
    assert flat["ci_low"] < 0 < flat["ci_high"] and flat["p_value"] > 0.1 and abs(flat["value"]) < 0.1
    # separation rising to the last layer: the argmax is the last layer, but that is a ramp, not a peak
    g, ramp = _heldout(*_planted_states(ramp=True, seed=4))
    sep = np.asarray(g["separation"])[1:]
    assert np.argmax(sep) == len(sep) - 1 and sep[-1] - sep[0] > 0.3
    assert ramp["value"] <= 0.05 and ramp["ci_low"] <= 0  # no verdict of "supported": the CI reaches 0
    _, bs = _heldout(*_planted_states(crit=4), n_perm=0)
    assert bs["p_method"] == "bootstrap_share" and bs["p_value"] == 0.0


def test_heldout_margin_does_not_depend_on_threads():
    state = _planted_states(signal=False, seed=3)
    one, two = _heldout(*state, n_boot=8, n_perm=8)[1], _heldout(*state, n_boot=8, n_perm=8, workers=2)[1]
    assert one == two


def test_heldout_margin_rejects_bad_input():
    with pytest.raises(ValueError, match="two regimes"):
        R.heldout_peak_margin({"a": np.zeros((2, 8, 3))}, {"a": np.arange(8)}, k=1)
    with pytest.raises(ValueError, match="4 items"):
        R.heldout_peak_margin({"a": np.ones((2, 3, 3)), "b": np.ones((2, 3, 3))},
                              {"a": np.arange(3), "b": np.arange(3)}, k=1, n_boot=0, n_perm=0)


# --------------------------------------------------------------------------------- cross-regime prediction
def test_cross_regime_prediction_planted():
    n = 10
    rng = np.random.default_rng(0)
    c = rng.permutation(np.arange(n))               # prompt: c of an item's 10 variants unchanged
    rows = []
    for i in range(n):
        for v in range(10):
            rows.append({"item": i, "regime": "prompt", "same_base": v < c[i]})
            rows.append({"item": i, "regime": "visual", "same_base": True})                  # constant
            rows.append({"item": i, "regime": "pressure", "same_base": v < c[i] + 1})  # same ranks
    var = pd.DataFrame(rows)
    var["same_adapted"] = var.same_base
    disp = pd.DataFrame({3: np.where(var.regime == "visual", -1.0, 1.0) * (1 + var.item.to_numpy())}, index=var.index)
    pred = R.cross_regime_prediction(var, {"base": disp, "adapted": disp}, 3, REG, n_boot=200, seed=0)
    p = pred[pred.model == "base"].set_index(["measure", "pair"])
    assert p.loc[("stability", "prompt|pressure"), "rho"] == pytest.approx(1.0)
    assert p.loc[("stability", "prompt|pressure"), "p"] < 0.01
    assert np.isnan(p.loc[("stability", "prompt|visual"), "rho"])
    assert p.loc[("displacement", "prompt|visual"), "rho"] == pytest.approx(-1.0)
    assert p.loc[("displacement", "prompt|pressure"), "rho"] == pytest.approx(1.0)
    assert len(pred) == 12 and (pred.n == n).all() and len(R.prediction_tex_rows(pred)) == 12
