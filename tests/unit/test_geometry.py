"""Oracle and planted-truth tests of adapterscope.geometry."""

import numpy as np
import pytest

from adapterscope import geometry as G


def _rot(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_principal_angles_oracle():
    e = np.eye(4)
    A = e[:, [0, 1]]
    th = 0.3
    B = np.stack([e[:, 0], np.cos(th) * e[:, 1] + np.sin(th) * e[:, 2]], 1)
    assert np.allclose(G.principal_angles(A, B), [0.0, th], atol=1e-9)
    assert G.overlap(A, B) == pytest.approx((1 + np.cos(th) ** 2) / 2)
    assert G.overlap(A, e[:, [2, 3]]) == pytest.approx(0.0, abs=1e-12)
    assert G.overlap(A, e[:, [1]]) == pytest.approx(1.0)  # the smaller inside the larger
    R = _rot(4, 3)  # rotation invariance
    assert np.allclose(G.principal_angles(R @ A, R @ B), [0.0, th], atol=1e-9)
    with pytest.raises(ValueError, match="orthonormal"):
        G.principal_angles(2 * A, B)


def test_principal_subspace_energy_and_basis():
    rng = np.random.default_rng(0)
    d = 20
    dirs = _rot(d)[:, :3]
    X = rng.normal(size=(200, 3)) * [5.0, 3.0, 1.0] @ dirs.T + 1e-3 * rng.normal(size=(200, d))
    B, share = G.principal_subspace(X, energy=0.999)
    assert B.shape == (d, 3) and np.allclose(B.T @ B, np.eye(3)) and share.sum() == pytest.approx(1.0)
    assert G.overlap(B, dirs) > 0.9999 and G.captured_energy(X, B) > 0.999
    assert G.principal_subspace(X, k=1)[0].shape == (d, 1)
    assert G.principal_subspace(X, energy=0.999, max_k=2)[0].shape == (d, 2)
    with pytest.raises(ValueError, match="all zeros"):
        G.principal_subspace(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        G.principal_subspace(np.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        G.displacements(np.zeros((2, 3)), np.zeros((3, 3)))


def test_chance_overlap_matches_random_subspaces():
    rng = np.random.default_rng(1)
    d, k = 64, 4
    vals = [G.overlap(np.linalg.qr(rng.normal(size=(d, k)))[0], np.linalg.qr(rng.normal(size=(d, k)))[0])
            for _ in range(400)]
    assert np.mean(vals) == pytest.approx(G.chance_overlap(d, k, k), rel=0.1)


def _planted(n=60, d=48, seed=0, shared=0):
    """Three regimes moving items along known directions: a (e0..e2), b (e3..e5), c = a's directions.
    ``shared`` of b's three directions are taken from a's."""
    rng = np.random.default_rng(seed)
    R = _rot(d, seed)
    dirs_a = R[:, 0:3]
    dirs_b = np.concatenate([R[:, 0:shared], R[:, 3 + shared:6]], 1)
    noise = 0.05
    mk = lambda D: rng.normal(size=(n, D.shape[1])) * 2.0 @ D.T + noise * rng.normal(size=(n, d))
    return {"a": mk(dirs_a), "b": mk(dirs_b), "c": mk(dirs_a)}, dirs_a, dirs_b


def test_planted_regimes_overlap_recovered():
    disp, dirs_a, dirs_b = _planted()
    Sa, Sb, Sc = (G.principal_subspace(disp[r], k=3)[0] for r in "abc")
    assert G.overlap(Sa, dirs_a) > 0.99 and G.overlap(Sb, dirs_b) > 0.99
    assert G.overlap(Sa, Sc) > 0.99            # same directions -> same subspace
    assert G.overlap(Sa, Sb) < 0.02            # orthogonal directions -> no overlap
    assert G.captured_energy(disp["b"], Sa) < 0.02
    # one shared direction of three: overlap 1/3, one principal angle near 0 and two near 90 degrees
    disp1, *_ = _planted(shared=1, seed=2)
    Sa1, Sb1 = (G.principal_subspace(disp1[r], k=3)[0] for r in "ab")
    assert G.overlap(Sa1, Sb1) == pytest.approx(1 / 3, abs=0.03)
    ang = np.degrees(G.principal_angles(Sa1, Sb1))
    assert ang[0] < 5 and ang[1] > 80


def test_regime_separation_planted():
    disp, *_ = _planted(n=80)
    sep = G.regime_separation(disp, k=3, n_splits=10, seed=0)
    assert min(sep["within"].values()) > 0.98
    assert sep["across"]["a|c"] > 0.98 and sep["across"]["a|b"] < 0.03 and sep["across"]["b|c"] < 0.03
    assert sep["separation"] == pytest.approx(sep["within_mean"] - sep["across_mean"])
    assert 0.6 < sep["separation"] < 0.7     # 2 of the 3 pairs are orthogonal
    same = G.regime_separation({"a": disp["a"], "c": disp["c"]}, k=3, n_splits=5)
    assert abs(same["separation"]) < 0.02
    with pytest.raises(ValueError, match="same"):
        G.regime_separation({"a": disp["a"], "b": disp["b"][:10]}, k=3)


def test_critical_layer():
    assert G.critical_layer([9.0, 0.1, 0.5, 0.5, 0.2]) == 2
    assert G.critical_layer([0.0, 0.1, 0.5], skip_first=0) == 2
    with pytest.raises(ValueError):
        G.critical_layer([1.0])


def test_regime_separation_with_several_rows_per_item():
    disp, *_ = _planted(n=60)
    # 3 rows per item for regime a (20 items), 2 per item for b (30 items): halves split by item id
    items = {"a": np.repeat(np.arange(20), 3), "b": np.repeat(np.arange(30), 2)}
    sep = G.regime_separation({"a": disp["a"], "b": disp["b"]}, k=3, n_splits=5, items=items)
    assert sep["n_items"] == 30 and sep["within"]["a"] > 0.98 and sep["across"]["a|b"] < 0.05
    with pytest.raises(ValueError, match="label every row"):
        G.regime_separation({"a": disp["a"], "b": disp["b"]}, k=3, items={"a": [0, 1], "b": items["b"]})


def test_batched_subspaces_and_layered_separation_match_single():
    disp, *_ = _planted(n=40)
    X = np.stack([disp["a"], disp["b"]])                     # two "layers"
    Bs = G.principal_subspaces(X, 3)
    for l in range(2):
        assert G.overlap(Bs[l], G.principal_subspace(X[l], k=3)[0]) > 1 - 1e-9
    tall = np.random.default_rng(0).normal(size=(1, 50, 6))  # n > d branch
    assert G.overlap(G.principal_subspaces(tall, 2)[0], G.principal_subspace(tall[0], k=2)[0]) > 1 - 1e-9
    layered = G.regime_separation({r: np.stack([disp[r], disp[r][:, ::-1]]) for r in "abc"}, k=3, n_splits=4)
    single = G.regime_separation(disp, k=3, n_splits=4)
    assert layered["separation"].shape == (2,)
    assert layered["separation"][0] == pytest.approx(single["separation"])
    assert layered["across"]["a|b"][0] == pytest.approx(single["across"]["a|b"])
