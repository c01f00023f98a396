"""Tests for adapterscope.cka: streaming exact linear CKA vs explicit Gram-space references."""

import math
import statistics

import numpy as np
import pytest
import torch

from adapterscope.cka import (CKAMatrix, StreamingCKA, cka_features, cka_gram, cka_matrix, diagonal_cka,
                              hsic_gram)
from adapterscope.threads import num_threads

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # small matrices on 2 shared cores: single-threaded is faster and less noisy
    with num_threads(1):
        yield


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _pair(n, d, e, seed=0, mix=0.7, offset=3.0):
    """Correlated X (n x d), Y (n x e), with non-zero means."""
    g = _gen(seed)
    X = torch.randn(n, d, generator=g, dtype=F64) * torch.linspace(0.5, 2.0, d, dtype=F64) + offset
    W = torch.randn(d, e, generator=g, dtype=F64) / math.sqrt(d)
    Y = mix * X @ W + torch.randn(n, e, generator=g, dtype=F64) - offset / 2
    return X, Y


def _stream(X, Y, splits, **kw):
    acc = StreamingCKA(**kw)
    lo = 0
    for hi in list(splits) + [X.shape[0]]:
        acc.update(X[lo:hi], Y[lo:hi])
        lo = hi
    return acc


DEB = [False, True]


# ----------------------------------------------------------------------------- references agree


@pytest.mark.parametrize("debiased", DEB)
@pytest.mark.parametrize("n,d,e", [(50, 7, 13), (120, 40, 9), (300, 25, 60), (60, 90, 70)])
def test_gram_equals_features_equals_streaming(n, d, e, debiased):
    X, Y = _pair(n, d, e, seed=n + d)
    ref = cka_gram(X, Y, debiased)
    assert 0.0 < abs(ref) < 1.0
    # the Gram-space HSIC_1 sums uncentred n x n entries: ~1e-12 cancellation error
    feat = cka_features(X, Y, debiased)
    assert feat == pytest.approx(ref, abs=1e-9)
    assert StreamingCKA().update(X, Y).value(debiased) == pytest.approx(feat, abs=1e-12)


def test_blocked_symmetric_gram_path():
    # widths >= 384 take the upper-blocks-only Gram update on CPU
    X, Y = _pair(300, 420, 390, seed=3)
    acc = _stream(X, Y, [100, 101, 250], chunk_rows=64)
    assert acc._e._bounds[0] is not None and acc._e._bounds[1] is not None
    for deb in DEB:
        assert acc.value(deb) == pytest.approx(cka_gram(X, Y, deb), abs=1e-9)
        assert acc.value(deb) == pytest.approx(cka_features(X, Y, deb), abs=1e-12)


@pytest.mark.parametrize("debiased", DEB)
def test_hsic_values_match_gram_formulas(debiased):
    X, Y = _pair(80, 11, 6, seed=5)
    K, L = X @ X.T, Y @ Y.T
    hxy, hxx, hyy = StreamingCKA().update(X, Y).hsic(debiased)
    for got, (A, B) in zip((hxy, hxx, hyy), ((K, L), (K, K), (L, L))):
        assert got == pytest.approx(hsic_gram(A, B, debiased), rel=1e-10)


def test_hsic_gram_formulas_by_hand():
    # biased HSIC_0 = tr(KHLH)/(n-1)^2 and Song et al.'s HSIC_1, written out elementwise
    X, Y = _pair(12, 3, 4, seed=9)
    K, L = (X @ X.T).numpy(), (Y @ Y.T).numpy()
    n = K.shape[0]
    H = np.eye(n) - 1.0 / n
    assert hsic_gram(K, L) == pytest.approx(np.trace(K @ H @ L @ H) / (n - 1) ** 2, rel=1e-12)
    Kt, Lt = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    s = 0.0
    for i in range(n):  # tr(K~ L~), elementwise
        for j in range(n):
            s += Kt[i, j] * Lt[i, j]
    one = np.ones(n)
    h1 = (s + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ Kt @ Lt @ one) / (
        n * (n - 3))
    assert hsic_gram(K, L, debiased=True) == pytest.approx(h1, rel=1e-12)


def test_debiased_differs_from_biased():
    X, Y = _pair(40, 30, 30, seed=1, mix=0.3)
    assert abs(cka_features(X, Y) - cka_features(X, Y, True)) > 0.05


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("debiased", DEB)
def test_invariant_to_orthogonal_scaling_translation(debiased):
    X, Y = _pair(150, 20, 12, seed=11)
    g = _gen(12)
    Q, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=F64))
    P, _ = torch.linalg.qr(torch.randn(12, 12, generator=g, dtype=F64))
    ref = cka_features(X, Y, debiased)
    X2 = 3.7 * X @ Q + torch.randn(20, generator=g, dtype=F64) * 50
    Y2 = 0.01 * Y @ P - 7.0
    assert StreamingCKA().update(X2, Y2).value(debiased) == pytest.approx(ref, abs=1e-10)
    # (the uncentred Gram-space oracle itself loses digits under a translation this large)
    assert cka_gram(3.7 * X @ Q, 0.01 * Y @ P, debiased) == pytest.approx(ref, abs=1e-9)
    # symmetric in its arguments
    assert StreamingCKA().update(Y, X).value(debiased) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("debiased", DEB)
def test_not_invariant_to_general_invertible_maps(debiased):
    X, Y = _pair(150, 20, 12, seed=13)
    g = _gen(14)
    A = torch.randn(20, 20, generator=g, dtype=F64) @ torch.diag(torch.logspace(-2, 1, 20, dtype=F64))
    assert torch.linalg.matrix_rank(A) == 20
    ref = cka_features(X, Y, debiased)
    changed = StreamingCKA().update(X @ A, Y).value(debiased)
    assert abs(changed - ref) > 0.02


@pytest.mark.parametrize("debiased", DEB)
def test_self_similarity_is_one(debiased):
    X, _ = _pair(64, 10, 5, seed=2)
    assert StreamingCKA().update(X, X).value(debiased) == pytest.approx(1.0, abs=1e-12)
    assert StreamingCKA().update(X, -2 * X + 5).value(debiased) == pytest.approx(1.0, abs=1e-12)
    assert cka_gram(X, X, debiased) == pytest.approx(1.0, abs=1e-12)


# ----------------------------------------------------------------------------- streaming, merging


@pytest.mark.parametrize("debiased", DEB)
def test_streaming_batch_size_one(debiased):
    X, Y = _pair(30, 6, 4, seed=21)
    acc = _stream(X, Y, range(1, 30))
    assert acc.n == 30
    assert acc.value(debiased) == pytest.approx(cka_features(X, Y, debiased), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_random_uneven_splits_and_chunks(seed):
    X, Y = _pair(257, 33, 17, seed=30 + seed)
    rng = np.random.default_rng(seed)
    splits = sorted(set(rng.integers(1, 257, size=9).tolist()))
    acc = _stream(X, Y, splits, chunk_rows=int(rng.integers(1, 50)))
    for deb in DEB:
        assert acc.value(deb) == pytest.approx(cka_features(X, Y, deb), abs=1e-12)


def test_streaming_handles_large_offsets():
    # mean 1e4, std 1: a naive uncentred float64 sum would lose ~8 digits
    X, Y = _pair(400, 16, 12, seed=40, offset=0.0)
    X, Y = X + 1e4, Y - 3e4
    acc = _stream(X, Y, [1, 2, 50, 399])
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    for deb in DEB:
        assert acc.value(deb) == pytest.approx(cka_features(Xc, Yc, deb), abs=1e-10)


@pytest.mark.parametrize("debiased", DEB)
def test_merge_of_shards_equals_one_pass(debiased):
    X, Y = _pair(210, 18, 25, seed=50)
    # shards with very different first-batch means (so different internal shifts)
    X = X.clone()
    X[100:] += 40.0
    shards = [(0, 1), (1, 100), (100, 100), (100, 210)]
    accs = [StreamingCKA(chunk_rows=17).update(X[a:b], Y[a:b]) for a, b in shards]
    total = StreamingCKA()
    for a in accs:
        total.merge(a)
    assert total.n == 210
    assert total.value(debiased) == pytest.approx(cka_features(X, Y, debiased), abs=1e-12)
    # merging does not change the shards, and merged accumulators keep streaming
    assert accs[3].n == 110
    more_X, more_Y = _pair(20, 18, 25, seed=51)
    total.update(more_X, more_Y)
    ref = cka_features(torch.cat([X, more_X]), torch.cat([Y, more_Y]), debiased)
    assert total.value(debiased) == pytest.approx(ref, abs=1e-12)


def test_float32_and_numpy_inputs():
    X, Y = _pair(100, 12, 8, seed=60)
    X32, Y32 = X.float(), Y.float()
    want = cka_features(X32.double(), Y32.double())
    assert StreamingCKA().update(X32, Y32).value() == pytest.approx(want, abs=1e-12)
    assert StreamingCKA().update(X32.numpy(), Y.numpy()).value() == pytest.approx(
        cka_features(X32.double(), Y), abs=1e-12)
    acc = StreamingCKA(device="cpu", dtype=torch.float32).update(X, Y)
    assert acc.value() == pytest.approx(cka_features(X, Y), abs=1e-4)


# ----------------------------------------------------------------------------- estimator behaviour


def test_debiased_removes_bias_for_independent_gaussians():
    g = _gen(70)
    biased, debiased = [], []
    for _ in range(40):
        X = torch.randn(32, 64, generator=g, dtype=F64)
        Y = torch.randn(32, 64, generator=g, dtype=F64)
        acc = StreamingCKA().update(X, Y)
        biased.append(acc.value())
        debiased.append(acc.value(debiased=True))
    # measured: biased mean ~0.67, debiased mean ~0.00 (sd ~0.04 per draw)
    assert statistics.mean(biased) > 0.15
    assert abs(statistics.mean(debiased)) < 0.03
    assert statistics.mean(abs(v) for v in debiased) < 0.06


# ----------------------------------------------------------------------------- many layer pairs


def _layers(n=90, seed=80):
    g = _gen(seed)
    A = {f"a{k}": torch.randn(n, w, generator=g, dtype=F64) + k for k, w in enumerate((8, 15, 11))}
    base = A["a1"]
    B = [base[:, :6] + 0.5 * torch.randn(n, 6, generator=g, dtype=F64),
         base @ torch.randn(15, 9, generator=g, dtype=F64),
         torch.randn(n, 13, generator=g, dtype=F64),
         A["a0"] * 2 + 1]
    return A, B


@pytest.mark.parametrize("debiased", DEB)
def test_cross_layer_matrix_equals_pairwise(debiased):
    A, B = _layers()
    acc = CKAMatrix(chunk_rows=13)
    acc.update({k: v[:40] for k, v in A.items()}, [b[:40] for b in B])
    acc.update({k: v[40:] for k, v in A.items()}, [b[40:] for b in B])
    M = acc.value(debiased)
    assert M.shape == (3, 4) and M.dtype == F64
    assert acc.names_a == ("a0", "a1", "a2") and acc.names_b == ("0", "1", "2", "3")
    for i, x in enumerate(A.values()):
        for j, y in enumerate(B):
            single = StreamingCKA().update(x, y).value(debiased)
            assert M[i, j].item() == pytest.approx(single, abs=1e-12)
            assert M[i, j].item() == pytest.approx(cka_gram(x, y, debiased), abs=1e-9)
    assert torch.allclose(cka_matrix(A, B, debiased), M, atol=1e-12, rtol=0)
    # a (layers, tokens, features) stack is accepted too
    stack = torch.stack([A["a0"], A["a0"] * 3])
    S = cka_matrix(stack, B, debiased)
    assert torch.allclose(S[0], S[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("debiased", DEB)
def test_diagonal_and_explicit_pairs(debiased):
    A, B = _layers()
    B3 = B[:3]
    diag = diagonal_cka(A, B3, debiased)
    want = [cka_features(x, y, debiased) for x, y in zip(A.values(), B3)]
    assert torch.allclose(diag, torch.tensor(want, dtype=F64), atol=1e-12, rtol=0)
    full = CKAMatrix().update(A, B3)
    assert torch.allclose(full.diagonal(debiased), diag, atol=1e-12, rtol=0)

    acc = CKAMatrix(pairs=[("a2", 3), (0, "1")]).update(A, B)
    M = acc.value(debiased)
    assert M[2, 3].item() == pytest.approx(cka_features(A["a2"], B[3], debiased), abs=1e-12)
    assert M[0, 1].item() == pytest.approx(cka_features(A["a0"], B[1], debiased), abs=1e-12)
    assert int(torch.isnan(M).sum()) == 10


@pytest.mark.parametrize("pairs", ["all", "diagonal"])
def test_matrix_merge(pairs):
    A, B = _layers(n=120)
    B = B[:3]
    for v in A.values():  # later shards start far from the first shard's mean
        v[60:] += 40.0
    ref = CKAMatrix(pairs).update(A, B)
    parts = [CKAMatrix(pairs, chunk_rows=11).update({k: v[a:b] for k, v in A.items()}, [y[a:b] for y in B])
             for a, b in ((0, 7), (7, 80), (80, 120))]
    merged = CKAMatrix(pairs)
    for p in parts:
        merged.merge(p)
    for deb in DEB:
        want, got = ref.value(deb), merged.value(deb)
        assert torch.equal(torch.isnan(want), torch.isnan(got))
        ok = ~torch.isnan(want)
        assert torch.allclose(got[ok], want[ok], atol=1e-12, rtol=0)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_value_errors():
    X, Y = _pair(20, 5, 4)
    with pytest.raises(ValueError, match="same tokens"):
        StreamingCKA().update(X, Y[:19])
    with pytest.raises(ValueError, match="same tokens"):
        cka_gram(X, Y[:19])
    with pytest.raises(ValueError, match="same tokens"):
        cka_features(X[:3], Y)
    with pytest.raises(ValueError, match="2-D"):
        StreamingCKA().update(X[0], Y[0])
    with pytest.raises(ValueError, match="2-D"):
        StreamingCKA().update(X[None], Y[None])
    with pytest.raises(ValueError, match="2-D"):
        cka_features(X.reshape(-1), Y)
    with pytest.raises(ValueError, match="empty accumulator"):
        StreamingCKA().value()
    with pytest.raises(ValueError, match="empty accumulator"):
        StreamingCKA().update(X[:0], Y[:0]).value()
    with pytest.raises(ValueError, match="at least 4 tokens"):
        StreamingCKA().update(X[:3], Y[:3]).value(debiased=True)
    acc = StreamingCKA().update(X, Y)
    with pytest.raises(ValueError, match="widths changed"):
        acc.update(X[:, :3], Y)
    with pytest.raises(ValueError, match="different layers or widths"):
        acc.merge(StreamingCKA().update(X[:, :3], Y))
    with pytest.raises(ValueError, match="non-finite"):
        StreamingCKA().update(X, Y * float("nan")).value()

    A, B = _layers()
    with pytest.raises(ValueError, match="same tokens"):
        CKAMatrix().update(A, [b[:10] for b in B])
    with pytest.raises(ValueError, match="diagonal"):
        CKAMatrix("diagonal").update(A, B)
    with pytest.raises(ValueError, match="unknown layer"):
        CKAMatrix([("nope", 0)]).update(A, B)
    with pytest.raises(ValueError, match="2-D"):
        CKAMatrix().update({"a": X[0]}, [Y])
    with pytest.raises(ValueError, match="changed between updates"):
        CKAMatrix().update(A, B).update(A, B[:2])
    with pytest.raises(ValueError, match="empty accumulator"):
        CKAMatrix().value()
    with pytest.raises(ValueError, match="different layer pairs"):
        CKAMatrix("all").update(A, B[:3]).merge(CKAMatrix("diagonal").update(A, B[:3]))


def test_constant_representation_gives_nan():
    X, _ = _pair(20, 5, 4)
    assert math.isnan(StreamingCKA().update(X, torch.ones(20, 3, dtype=F64)).value())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X, Y = _pair(500, 64, 48, seed=90)
    acc = StreamingCKA(device="cuda").update(X, Y)  # CPU inputs moved chunk by chunk
    assert acc.device.type == "cuda"
    for deb in DEB:
        assert acc.value(deb) == pytest.approx(cka_features(X, Y, deb), abs=1e-12)
    M = CKAMatrix(device="cuda").update([X.cuda(), X[:, :10].cuda()], [Y])
    assert M.value()[0, 0].item() == pytest.approx(cka_features(X, Y), abs=1e-12)
    cpu = StreamingCKA().update(X[:200], Y[:200])
    cpu.merge(StreamingCKA(device="cuda").update(X[200:], Y[200:]))
    assert cpu.value() == pytest.approx(cka_features(X, Y), abs=1e-12)


def test_blocked_cka_value_and_jackknife_match_direct():
    from adapterscope.cka import BlockedCKA, cka_features

    g = torch.Generator().manual_seed(3)
    X = torch.randn(300, 12, generator=g, dtype=torch.float64)
    Y = X @ torch.randn(12, 9, generator=g, dtype=torch.float64) + 0.5 * torch.randn(300, 9, generator=g,
                                                                                    dtype=torch.float64)
    bl = BlockedCKA(n_blocks=3)
    batches = [slice(i, i + 50) for i in range(0, 300, 50)]  # 6 batches -> blocks get batches (0,3), (1,4), (2,5)
    for s in batches:
        bl.update(X[s], Y[s])
    for deb in (False, True):
        assert bl.value(deb) == pytest.approx(cka_features(X, Y, debiased=deb), abs=1e-10)
        jk = bl.jackknife(deb)
        loo = []
        for b in range(3):
            keep = torch.cat([torch.arange(300)[batches[i]] for i in range(6) if i % 3 != b])
            loo.append(cka_features(X[keep], Y[keep], debiased=deb))
        loo = np.array(loo)
        se = np.sqrt(2 / 3 * ((loo - loo.mean()) ** 2).sum())
        assert jk["se"] == pytest.approx(se, rel=1e-8) and jk["ci_low"] < jk["value"] < jk["ci_high"]
    with pytest.raises(ValueError, match="every block needs tokens"):
        BlockedCKA(n_blocks=4).update(X[:10], Y[:10]).jackknife()


def test_blocked_leave_one_out_equals_direct_accumulation():
    """Each leave-one-block-out value (total minus block, about one origin) equals CKA accumulated directly
    over the other blocks' batches, biased and debiased; the cache is dropped on update."""
    g = torch.Generator().manual_seed(5)
    xs = [torch.randn(40, 12, generator=g, dtype=torch.float64) + i for i in range(7)]
    ys = [x @ torch.randn(12, 9, generator=g, dtype=torch.float64) + 0.5 * torch.randn(40, 9, generator=g,
                                                                                     dtype=torch.float64) - 3
          for x in xs]
    from adapterscope.cka import BlockedCKA

    blk = BlockedCKA(n_blocks=3)
    for x, y in zip(xs, ys):
        blk.update(x, y)
    for skip in range(3):
        direct = StreamingCKA()
        for i, (x, y) in enumerate(zip(xs, ys)):
            if i % 3 != skip:
                direct.update(x, y)
        for deb in (False, True):
            assert blk._merged(skip).value(deb) == pytest.approx(direct.value(deb), abs=1e-12)
    before = blk.value(True)
    blk.update(xs[0] * 2, ys[0])
    assert blk.value(True) != pytest.approx(before, abs=1e-9)


def test_thread_cap_lowers_never_raises_and_restores():
    """threads.num_threads, the one thread cap (BlockedCKA.jackknife and the crosscoder's sparse step use it)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with num_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with num_threads(4):  # a cap: never more threads than before
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with num_threads(1):
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
