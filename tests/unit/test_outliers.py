"""adapterscope.outliers on planted streams: a few massive tokens decide linear CKA; the trimmed reading sees the
rest of the stream; the mask finds exactly the planted tokens."""

import pytest
import torch

from adapterscope import cka, outliers


def _stream(n=600, d=24, seed=0, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = X + noise * torch.randn(n, d, generator=g, dtype=torch.float64)  # the adapter barely moves the stream
    return X, Y


def _plant(X, Y, idx, scale=200.0):
    """Massive tokens along one direction (attention-sink-like); the adapter keeps the odd ones (and grows them by
    a third) and damps the even ones to a twentieth: a change in a few tokens' size, as measured in SmolLM2."""
    u = torch.zeros(X.shape[1], dtype=X.dtype)
    u[0] = 1.0
    X, Y = X.clone(), Y.clone()
    for j, i in enumerate(idx):
        X[i] = scale * (1 + j) * u
        Y[i] = X[i] * (4 / 3 if j % 2 else 0.05)
    return X, Y


def test_mask_finds_exactly_the_planted_tokens():
    X, Y = _stream()
    idx = [5, 300, 599]
    Xm, Ym = _plant(X, Y, idx)
    m = outliers.massive_mask(Xm, Ym)
    assert m.nonzero().flatten().tolist() == idx
    assert not outliers.massive_mask(X, Y).any()  # a Gaussian stream has no token at 10 x the median norm
    # massive in the adapted model only is flagged too
    Y2 = Y.clone()
    Y2[42] *= 100
    assert outliers.massive_mask(X, Y2).nonzero().flatten().tolist() == [42]


def test_a_few_massive_tokens_decide_cka_and_the_trimmed_reading_does_not_see_them():
    X, Y = _stream()
    clean = cka.cka_features(X, Y, debiased=True)
    assert clean > 0.99
    Xm, Ym = _plant(X, Y, [10, 200])
    planted = cka.cka_features(Xm, Ym, debiased=True)
    assert 1 - planted > 10 * (1 - clean)  # two tokens of 600 move the reading by an order of magnitude
    acc = outliers.TrimmedCKA(n_blocks=4)
    for i in range(0, len(Xm), 50):
        acc.update(Xm[i:i + 50], Ym[i:i + 50])
    r = acc.result()
    assert r["n_massive"] == 2 and r["n_tokens"] == 600
    assert r["cka"] == pytest.approx(planted, abs=1e-9)  # the untrimmed twin is the plain reading
    keep = torch.ones(600, dtype=torch.bool)
    keep[[10, 200]] = False
    assert r["cka_trimmed"] == pytest.approx(cka.cka_features(X[keep], Y[keep], debiased=True), abs=1e-9)
    assert r["massive_share"] > 0.9
    assert outliers.carried_by_massive(1 - r["cka"], 1 - r["cka_trimmed"])


def test_without_massive_tokens_the_two_readings_are_the_same():
    X, Y = _stream(seed=3, noise=0.8)
    acc = outliers.TrimmedCKA(n_blocks=3)
    for i in range(0, len(X), 60):
        acc.update(X[i:i + 60], Y[i:i + 60])
    r = acc.result()
    assert r["n_massive"] == 0 and r["massive_share"] == 0
    assert r["cka_trimmed"] == pytest.approx(r["cka"], abs=1e-12)
    assert r["cka_trimmed_se"] == pytest.approx(r["cka_se"], abs=1e-12)
    assert not outliers.carried_by_massive(1 - r["cka"], 1 - r["cka_trimmed"])


def test_bad_input_is_refused():
    X = torch.randn(10, 4)
    with pytest.raises(ValueError, match="factor"):
        outliers.massive_mask(X, factor=1.0)
    with pytest.raises(ValueError, match="same tokens"):
        outliers.massive_mask(X, torch.randn(9, 4))
    with pytest.raises(ValueError, match="tokens, features"):
        outliers.massive_mask(torch.randn(2, 3, 4))


def test_carried_by_massive_needs_a_ratio_and_a_resolved_gap():
    assert not outliers.carried_by_massive(0.02, 0.005, se=0.01)  # ratio 4, but 0.015 apart is within 2 SE
    assert outliers.carried_by_massive(0.02, 0.005, se=0.001)  # the same ratio, resolved: flagged (#37)
    assert not outliers.carried_by_massive(0.0009, 0.0001)  # ratio 9 but a gap below the 1e-3 floor
    assert outliers.carried_by_massive(0.30, 0.02)
    assert not outliers.carried_by_massive(0.30, 0.15)  # ratio 2
    assert not outliers.carried_by_massive(float("nan"), 0.1)
