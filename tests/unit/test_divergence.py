"""KL, top-1 agreement, perplexity and activation change against direct computations on hand-made logits."""

import math

import numpy as np
import pytest
import torch

from adapterscope import divergence


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_kl_top1_ppl_match_direct_computation():
    # 2 rows x 3 positions x 4-token vocabulary, values chosen by hand
    lb = torch.tensor([[[2.0, 0.0, 0.0, -1.0], [0.0, 1.0, 0.0, 0.0], [5.0, 5.0, 0.0, 0.0]],
                       [[0.0, 0.0, 3.0, 0.0], [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
    lf = torch.tensor([[[0.0, 2.0, 0.0, -1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 9.0]],
                       [[0.0, 0.0, 3.0, 0.5], [4.0, 3.0, 2.0, 1.0], [1.0, 0.0, 0.0, 0.0]]])
    ids = torch.tensor([[0, 1, 3], [2, 3, 0]])
    acc = divergence.DivergenceAccumulator()
    acc.update(lb, lf, ids)
    r = acc.result()
    pb, pf = _softmax(lb.numpy()[:, :-1].astype(np.float64)), _softmax(lf.numpy()[:, :-1].astype(np.float64))
    kl = (pb * (np.log(pb) - np.log(pf))).sum(-1)
    assert r["kl"] == pytest.approx(kl.mean(), rel=1e-5)
    # position (0,1) has identical logits -> KL exactly 0 there
    assert kl[0, 1] == pytest.approx(0.0, abs=1e-12)
    # argmaxes: base [0,1 | 2,3], ft [1,1 | 2,0] -> 2 of 4 agree
    assert r["top1_agreement"] == pytest.approx(0.5)
    tgt = ids.numpy()[:, 1:]
    nll_b = -np.log(np.take_along_axis(pb, tgt[..., None], -1)).mean()
    nll_f = -np.log(np.take_along_axis(pf, tgt[..., None], -1)).mean()
    assert r["ppl_base"] == pytest.approx(math.exp(nll_b), rel=1e-5)
    assert r["ppl_ft"] == pytest.approx(math.exp(nll_f), rel=1e-5)
    assert r["n_tokens"] == 4 and r["n_rows"] == 2
    assert acc.row_kl == pytest.approx(kl.mean(-1).tolist(), rel=1e-5)


def test_kl_is_zero_for_identical_and_streaming_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    lb = torch.randn(6, 5, 11, generator=g)
    lf = lb + 0.3 * torch.randn(6, 5, 11, generator=g)
    ids = torch.randint(11, (6, 5), generator=g)
    same = divergence.DivergenceAccumulator()
    same.update(lb, lb.clone(), ids)
    assert same.result()["kl"] == pytest.approx(0.0, abs=1e-7) and same.result()["top1_agreement"] == 1.0
    one, two = divergence.DivergenceAccumulator(), divergence.DivergenceAccumulator()
    one.update(lb, lf, ids)
    two.update(lb[:2], lf[:2], ids[:2])
    two.update(lb[2:], lf[2:], ids[2:])
    for k in ("kl", "top1_agreement", "ppl_base", "ppl_ft"):
        assert one.result()[k] == pytest.approx(two.result()[k], rel=1e-9)
    assert divergence.next_token_kl(lb, lf).min() >= -1e-6


def test_accumulator_rejects_mismatch_and_empty():
    acc = divergence.DivergenceAccumulator()
    with pytest.raises(ValueError, match="no tokens"):
        acc.result()
    with pytest.raises(ValueError, match="shape mismatch"):
        acc.update(torch.zeros(1, 3, 4), torch.zeros(1, 3, 5), torch.zeros(1, 3, dtype=torch.long))


def test_activation_change_skips_bos_and_matches_direct():
    b = torch.randn(2, 4, 3, dtype=torch.float64)
    f = b.clone()
    f[:, 0] += 1000.0  # BOS position: must be ignored
    f[:, 1:] += 0.5
    ch = divergence.ActivationChange()
    ch.update("k", b[:1], f[:1])
    ch.update("k", b[1:], f[1:])
    want = torch.linalg.norm(f[:, 1:] - b[:, 1:]) / torch.linalg.norm(b[:, 1:])
    assert ch.result()["k"] == pytest.approx(float(want), rel=1e-12)


def test_base_kl_matches_the_definition_in_float64():
    """BaseKL (base terms once, one logsumexp and one p-weighted sum per model) == KL from two log-softmaxes in
    float64, for every row of a repeated / permuted batch, on logits with a large offset and spread."""
    g = torch.Generator().manual_seed(0)
    xb = 3.0 * torch.randn(3, 7, 60000, generator=g) + 20.0   # a big vocabulary: float32 p sums to 1 +- 1e-5
    xq = torch.cat([xb + 0.3 * torch.randn(3, 7, 60000, generator=g), xb[:1]])   # the last row: q == base
    rows = torch.tensor([0, 1, 2, 0])

    def oracle(p_logits, q_logits):
        lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
        return (lp.exp() * (lp - lq)).sum(-1)[:, 1:-1].mean(-1)

    kl = divergence.BaseKL(xb, skip_first=1).row_kl(xq, rows)
    want = oracle(xb[rows], xq)
    assert kl.dtype == torch.float64 and torch.allclose(kl, want, atol=3e-7, rtol=0)
    assert want[:3].min() > 1e-2 and abs(float(kl[3])) < 3e-7
    assert torch.allclose(divergence.BaseKL(xb).row_kl(xq[:3], torch.arange(3)), want[:3], atol=3e-7, rtol=0)
    with pytest.raises(ValueError, match="do not match"):
        divergence.BaseKL(xb).row_kl(xq[:, :-1])
    # the accumulator (whole rows: positions 0..T-2) on the same logits, against float64
    ids = torch.randint(60000, (3, 7), generator=g)
    acc = divergence.DivergenceAccumulator()
    acc.update(xb, xq[:3], ids)
    lp, lq = torch.log_softmax(xb.double(), -1), torch.log_softmax(xq[:3].double(), -1)
    kl_pos = (lp.exp() * (lp - lq)).sum(-1)[:, :-1]
    nll = lambda l: float(-l[:, :-1].gather(-1, ids[:, 1:, None]).mean())   # noqa: E731
    r = acc.result()
    assert r["kl"] == pytest.approx(float(kl_pos.mean()), abs=3e-7)
    assert acc.row_kl == pytest.approx(kl_pos.mean(-1).tolist(), abs=3e-7)
    assert math.log(r["ppl_base"]) == pytest.approx(nll(lp), abs=1e-6)
    assert math.log(r["ppl_ft"]) == pytest.approx(nll(lq), abs=1e-6)
