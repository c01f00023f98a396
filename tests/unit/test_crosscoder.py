"""Crosscoder tests on planted truth (small dims; whole file well under 90 s on 2 cores)."""

import fnmatch
import itertools
import json
import math
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from adapterscope.crosscoder import (Crosscoder, StreamingMoments, batch_topk_flat, calibrate_threshold,
                                     classify_latents,
                                     estimate_scaling_factors, evaluate, latent_scaling,
                                     reconstruction_ratio, relative_decoder_norms)
from adapterscope import paths
from adapterscope.crosscoder_train import CrosscoderConfig, CrosscoderTrainer, train_crosscoder
from adapterscope.threads import num_threads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny ops on 2 shared cores are faster (and far less noisy) single-threaded
    with num_threads(1):
        yield


# ----------------------------------------------------------------------------- planted data
D = 32
KINDS = ["shared"] * 24 + ["base_only"] * 8 + ["ft_only"] * 8


def planted_atoms(seed=0, rot=0.1):
    """Unit atoms (C, D) for the base and fine-tuned model; shared atoms slightly rotated in
    the fine-tuned model, base-only atoms zero in ft, ft-only atoms zero in base."""
    g = torch.Generator().manual_seed(seed)
    C = len(KINDS)
    A = torch.randn(C, D, generator=g)
    A /= A.norm(dim=1, keepdim=True)
    R = torch.randn(24, D, generator=g)
    A_ft = A.clone()
    A_ft[:24] += rot * R / R.norm(dim=1, keepdim=True)
    A_ft /= A_ft.norm(dim=1, keepdim=True)
    base, ft = A.clone(), A_ft
    base[32:] = 0
    ft[24:32] = 0
    return base, ft


def planted_batches(base, ft, B, n, seed, p=3 / 40, noise=0.01):
    """Sparse non-negative codes (~3 atoms per token); x_base = codes @ base, x_ft = codes @ ft."""
    g = torch.Generator().manual_seed(seed)
    C = base.shape[0]
    for _ in range(n):
        codes = (torch.rand(B, C, generator=g) < p).float() * (0.5 + 1.5 * torch.rand(B, C, generator=g))
        yield torch.stack([codes @ base, codes @ ft], 1) + noise * torch.randn(B, 2, D, generator=g)


ATOMS = planted_atoms()


@pytest.fixture(scope="module")
def trained():
    base, ft = ATOMS
    cfg = CrosscoderConfig(2, D, 128, k=3, batch_size=512, total_steps=700, lr=3e-3,
                           dead_after_tokens=512 * 50, threshold_ema=0.99, seed=1)
    tr = CrosscoderTrainer(cfg)
    cc = tr.fit(planted_batches(base, ft, 512, 10_000, seed=1), progress=False)
    assert tr.step == 700
    return cc


def eval_batches(n=4, B=1024, seed=2):
    return planted_batches(*ATOMS, B, n, seed)


# ----------------------------------------------------------------------------- hand-set
def tiny_crosscoder():
    cc = Crosscoder(n_models=2, d_model=2, n_latents=3, k=1)
    with torch.no_grad():
        cc.W_enc_FMD.copy_(torch.tensor([[[1.0, 0], [0, 0]], [[0, 0], [0, 1]], [[0.5, 0], [0.5, 0]]]))
        cc.b_enc_F.copy_(torch.tensor([0.0, -1.0, 0.0]))
        cc.W_dec_FMD.copy_(torch.tensor([[[1.0, 0], [0, 0]], [[0, 0], [0, 2]], [[0, 1], [0, 1]]]))
        cc.b_dec_MD.copy_(torch.tensor([[0.1, 0], [0, 0.1]]))
        cc.threshold.fill_(2.5)
    return cc


X_TINY = torch.tensor([[[3.0, 0], [1, 2]], [[1, 1], [0, 4]]])  # (B=2, M=2, D=2)


def test_hand_set_encode_decode_topk():
    cc = tiny_crosscoder()
    assert cc.W_enc_MDF.shape == (2, 2, 3) and cc.W_dec_MFD.shape == (2, 3, 2)
    xs = cc.scale_in(X_TINY)
    # pre = [[3, 1, 2], [1, 3, 0.5]];  n = [1, 2, 2];  v = relu(pre) * n = [[3, 2, 4], [1, 6, 1]]
    assert torch.equal(cc.pre_activations(xs), torch.tensor([[3.0, 1, 2], [1, 3, 0.5]]))
    assert torch.equal(cc.decoder_norm_F(), torch.tensor([1.0, 2, 2]))
    # BatchTopK, k=1, B=2: the 2 largest v over the batch are 6 (t1, l1) and 4 (t0, l2)
    z = cc.encode(X_TINY, use_threshold=False)
    assert torch.equal(z, torch.tensor([[0, 0, 2.0], [0, 3.0, 0]]))
    # k=2: 6, 4, 3, 2 -> adds (t0, l0) and (t0, l1)
    assert torch.equal(cc.encode(X_TINY, use_threshold=False, k=2), torch.tensor([[3.0, 1, 2], [0, 3, 0]]))
    # threshold 2.5 on v: t0 keeps l0 (3), l2 (4); t1 keeps l1 (6)
    z_thr = cc.encode(X_TINY)
    assert torch.equal(z_thr, torch.tensor([[3.0, 0, 2], [0, 3, 0]]))
    rec = cc.decode(z)
    expect = torch.tensor([[[0.1, 2.0], [0, 2.1]], [[0.1, 0], [0, 6.1]]])
    assert torch.allclose(rec, expect, atol=1e-6)
    # scaling lives inside: halve the raw base input with s_base = 2 -> same codes, base recon / 2
    with torch.no_grad():
        cc.scale_M.copy_(torch.tensor([2.0, 1.0]))
    x2 = X_TINY.clone()
    x2[:, 0] /= 2
    assert torch.equal(cc.encode(x2, use_threshold=False), z)
    rec2 = cc.decode(z)
    assert torch.allclose(rec2[:, 0], expect[:, 0] / 2) and torch.allclose(rec2[:, 1], expect[:, 1])
    cc.threshold.fill_(-1)
    with pytest.raises(ValueError):
        cc.encode(X_TINY)


def test_l1_encoder_is_relu():
    cc = tiny_crosscoder()
    cc.sparsity = "l1"
    assert torch.equal(cc.encode(X_TINY), torch.tensor([[3.0, 1, 2], [1, 3, 0.5]]))


@pytest.mark.parametrize("shape", [(64, 256), (2048, 4608)])
def test_batch_topk_flat_is_exact(shape):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(shape, generator=g) * torch.rand(shape[1], generator=g) * 3
    K = 32 * shape[0]
    idx = batch_topk_flat(v, K)
    ref = torch.topk(v.view(-1), K).indices.sort().values
    assert torch.equal(idx, ref)
    # bf16 (many ties): exactly K indices and every kept value >= every dropped one
    vb = v.bfloat16()
    idx = batch_topk_flat(vb, K)
    assert idx.numel() == K and torch.all(idx[1:] > idx[:-1])
    keep = torch.zeros(v.numel(), dtype=torch.bool)
    keep[idx] = True
    assert vb.view(-1)[keep].min() >= vb.view(-1)[~keep].max()
    # fewer positives than K: all positives, nothing else
    w = -v.abs()
    w.view(-1)[:5] = 1.0
    assert torch.equal(batch_topk_flat(w, K), torch.arange(5))


# ----------------------------------------------------------------------------- statistics
def test_streaming_moments_random_splits():
    rng = np.random.default_rng(0)
    x = rng.normal(1e3, 2.0, size=(1000, 2, 5)) * rng.uniform(0.1, 3, size=(1, 2, 5))
    for trial in range(3):
        cuts = np.sort(rng.choice(np.arange(1, 1000), size=7, replace=False))
        sm = StreamingMoments((2, 5))
        for part in np.split(x, cuts):
            sm.update(torch.from_numpy(part).float() if trial == 2 else torch.from_numpy(part))
        ref = x.astype(np.float32).astype(np.float64) if trial == 2 else x
        assert sm.n == 1000
        np.testing.assert_allclose(sm.mean.numpy(), ref.mean(0), rtol=1e-12)
        np.testing.assert_allclose(sm.var.numpy(), ref.var(0), rtol=1e-9)
        assert math.isclose(sm.sst, ((ref - ref.mean(0)) ** 2).sum(), rel_tol=1e-9)


def random_crosscoder(seed=0, M=2, Dm=8, F=16, k=2):
    cc = Crosscoder(M, Dm, F, k=k, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cc.W_enc_FMD.copy_(torch.randn(F, M, Dm, generator=g) * 0.3)
        cc.b_enc_F.copy_(torch.randn(F, generator=g) * 0.1)
        cc.W_dec_FMD.copy_(torch.randn(F, M, Dm, generator=g) * 0.3)
        cc.b_dec_MD.copy_(torch.randn(M, Dm, generator=g))
        cc.scale_M.copy_(torch.tensor([0.7, 1.3])[:M])
        cc.threshold.fill_(0.3)
    return cc


def test_evaluate_streaming_matches_one_shot():
    cc = random_crosscoder()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(600, 2, 8, generator=g) * 2 + 3
    splits = [torch.split(x, s) for s in (600, 97, 250)]
    xd = x.double()
    with torch.no_grad():
        z = cc.encode(x)
        rec = cc.decode(z).double()
    fve = 1 - ((xd - rec) ** 2).sum((0, 2)) / ((xd - xd.mean(0)) ** 2).sum((0, 2))
    l0 = float((z != 0).sum()) / 600
    dead = float(((z != 0).sum(0) == 0).double().mean())
    for parts in splits:
        ev = evaluate(cc, parts)
        np.testing.assert_allclose(ev["fve"], fve.numpy(), rtol=1e-5)
        assert ev["l0"] == pytest.approx(l0) and ev["dead_fraction"] == pytest.approx(dead)
        assert ev["n_tokens"] == 600
    assert 0 < l0 < 16


def test_estimate_scaling_factors():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 2, 16, generator=g) * torch.tensor([3.0, 0.5])[None, :, None]
    s = estimate_scaling_factors(torch.split(x, 100))
    norms = (x * s[None, :, None]).norm(dim=-1).mean(0)
    np.testing.assert_allclose(norms.numpy(), [4.0, 4.0], rtol=1e-5)


# ----------------------------------------------------------------------------- fast gradients
@pytest.mark.parametrize("sddmm", ["sparse", "dense"])
def test_fast_gradients_match_autograd(sddmm):
    B, M, Dm, F, k = 64, 2, 8, 32, 3
    cfg = CrosscoderConfig(M, Dm, F, k=k, total_steps=10, auxk_coeff=0.5, k_aux=4, dead_after_tokens=50,
                           k_anneal_frac=0.0, sddmm=sddmm)
    tr = CrosscoderTrainer(cfg)
    tr.debug = True
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, M, Dm, generator=g) * 3 + 1
    tr.init_from_data(x)
    tr.tokens_since_fired[:10] = 100  # ten latents count as dead -> AuxK active
    tr._grads_batchtopk(x)
    fast = {n: p.grad.clone() for n, p in tr.cc.named_parameters()}
    cc, idx, dead = tr.cc, tr.last["idx"], tr.last["dead"]
    assert idx.numel() == k * B and dead.numel() == 10
    for p in cc.parameters():
        p.grad = None
    xs = (x * cc.scale_M[None, :, None]).reshape(B, -1)
    pre = xs @ cc.W_enc_FMD.reshape(F, -1).t() + cc.b_enc_F
    mask = torch.zeros(B * F, dtype=torch.bool)
    mask[idx] = True
    z = torch.where(mask.view(B, F), pre, torch.zeros(()))
    W_dec = cc.W_dec_FMD.reshape(F, -1)
    rec = z @ W_dec + cc.b_dec_MD.reshape(1, -1)
    loss = ((rec - xs) ** 2).sum() / (B * Dm)
    e = (xs - rec).detach()
    v = torch.relu(pre.detach()) * cc.W_dec_FMD.norm(dim=-1).sum(-1).detach()
    vd = v[:, dead]
    loc = torch.topk(vd, 4, dim=1).indices
    amask = torch.zeros_like(vd, dtype=torch.bool).scatter_(1, loc, True) & (vd > 0)
    aux_rec = torch.where(amask, pre[:, dead], torch.zeros(())) @ W_dec[dead]
    aux = ((aux_rec - e) ** 2).sum() / B / (((e - e.mean(0)) ** 2).sum() / B)
    (loss + 0.5 * aux).backward()
    for n, p in cc.named_parameters():
        assert p.grad.abs().max() > 1e-4, n
        torch.testing.assert_close(fast[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


# ----------------------------------------------------------------------------- planted recovery
def best_matches(cc):
    base, ft = ATOMS
    W = torch.cat([cc.W_dec_FMD[:, 0] / cc.scale_M[0], cc.W_dec_FMD[:, 1] / cc.scale_M[1]], 1).detach()
    T = torch.cat([base, ft], 1)
    cos = torch.nn.functional.normalize(T, dim=1) @ torch.nn.functional.normalize(W, dim=1).t()
    return cos.max(1)


def test_planted_atoms_recovered_and_classified(trained):
    best, arg = best_matches(trained)
    assert (best > 0.9).float().mean() >= 0.8
    cl = classify_latents(trained)
    labels = cl["labels"][arg.numpy()]
    acc = np.mean([lab == kind for lab, kind in zip(labels, KINDS)])
    assert acc >= 0.9, list(zip(KINDS, labels))
    for kind in ("base_only", "ft_only"):  # each exclusive class found at least 6 of 8 times
        assert sum(lab == kind == kd for lab, kd in zip(labels, KINDS)) >= 6
    shared_lat = arg.numpy()[:24]
    assert np.median(cl["cosine"][shared_lat]) > 0.95  # rotation of 0.1 -> cos ~ 0.995
    r = relative_decoder_norms(trained).numpy()
    assert np.all(r[arg.numpy()[24:32]] < 0.1) and np.all(r[arg.numpy()[32:]] > 0.9)
    ev = evaluate(trained, eval_batches())
    assert min(ev["fve"]) > 0.98 and 2.5 < ev["l0"] < 3.6


def test_threshold_encoder_agrees_with_batchtopk(trained):
    assert float(trained.threshold) > 0
    agree, n_topk, n_thr = 0, 0, 0
    for x in eval_batches():
        zt = trained.encode(x, use_threshold=False) != 0
        zh = trained.encode(x, use_threshold=True) != 0
        agree += int((zt & zh).sum())
        n_topk += int(zt.sum())
        n_thr += int(zh.sum())
    assert agree / n_topk > 0.9
    assert abs(n_thr / n_topk - 1) < 0.2
    # per-token: the threshold code of a token does not depend on its batch
    x = next(eval_batches(1, 64))
    assert torch.equal(trained.encode(x[:10]), trained.encode(x)[:10])


def test_calibrate_threshold_hand_set():
    # v = [[3, 2, 4], [1, 6, 1]]: k=1 over 2 tokens keeps the 2 largest (6, 4): theta between 4 and 3
    cc = tiny_crosscoder()
    out = calibrate_threshold(cc, [X_TINY], k=1)
    assert out["threshold_ema"] == 2.5 and out["threshold"] == pytest.approx(3.5) and out["tokens"] == 2
    assert torch.equal(cc.encode(X_TINY) != 0, cc.encode(X_TINY, use_threshold=False) != 0)
    # k=3 needs 6 positives, there are exactly 6: keep all of them
    assert calibrate_threshold(cc, [X_TINY], k=3)["threshold"] == 0.0
    with pytest.raises(ValueError, match="at least one token"):
        calibrate_threshold(cc, [])


def test_calibrate_threshold_gives_mean_l0_k(trained):
    old = float(trained.threshold)
    try:
        out = calibrate_threshold(trained, eval_batches(), k=3)
        ev = evaluate(trained, eval_batches())
        assert ev["l0"] == pytest.approx(3.0, abs=0.01)
        # a different k moves the threshold the right way
        assert calibrate_threshold(trained, eval_batches(), k=5)["threshold"] < out["threshold"]
    finally:
        trained.threshold.fill_(old)


def test_reconstruction_ratio_planted(trained):
    rr = reconstruction_ratio(trained, eval_batches())
    assert rr["ratio_ft"] > 20 and rr["ratio_base"] > 20  # exclusive atoms missing from other decoder
    assert rr["mse_self_ft"] < rr["mse_cross_ft"]
    assert rr["fvu_cross_ft"] / rr["fvu_self_ft"] == pytest.approx(rr["ratio_ft"])


def test_trimmed_ratio_equals_the_ratio_without_the_massive_tokens(trained):
    batches = [x.clone() for x in eval_batches()]
    for x in batches:  # a few massive tokens, moved in the fine-tuned stream only
        x[:3] *= 60.0
        x[:3, 1] += 5.0 * x[:3, 1].norm(dim=-1, keepdim=True) / D ** 0.5
    rr = reconstruction_ratio(trained, batches)
    assert rr["n_massive"] == 3 * len(batches)
    kept = reconstruction_ratio(trained, [x[3:] for x in batches], massive_factor=None)
    assert "ratio_ft_trimmed" not in kept and "n_massive" not in kept
    assert rr["ratio_ft_trimmed"] == pytest.approx(kept["ratio_ft"], rel=1e-9)
    assert rr["fvu_gap_ft_trimmed"] == pytest.approx(kept["fvu_gap_ft"], rel=1e-9)
    assert rr["fvu_gap_ft"] == pytest.approx(rr["fvu_cross_ft"] - rr["fvu_self_ft"])
    assert abs(rr["ratio_ft"] - kept["ratio_ft"]) > 0.05 * kept["ratio_ft"]  # the massive tokens move the raw one


def test_reconstruction_ratio_identical_models():
    base, _ = ATOMS
    cfg = CrosscoderConfig(2, D, 64, k=3, batch_size=512, total_steps=250, lr=3e-3,
                           dead_after_tokens=512 * 20, threshold_ema=0.99)
    cc = CrosscoderTrainer(cfg).fit(planted_batches(base, base, 512, 250, 1, noise=0.05), progress=False)
    rr = reconstruction_ratio(cc, planted_batches(base, base, 1024, 2, 2, noise=0.05))
    assert rr["fvu_self_ft"] < 0.1
    assert 0.9 < rr["ratio_ft"] < 1.1 and 0.9 < rr["ratio_base"] < 1.1


# ----------------------------------------------------------------------------- latent scaling
def scaling_setup():
    """Orthonormal directions e0..e3 in D=8.  Data (codes c_i >= 0):
        base = 0.6 c1 e1 + c2 e2 + c3 e3,   ft = c0 e0 + c1 e1 + c2 e2 + c3 e3   (+ noise)
    Hand-set crosscoder; latents 0, 1, 2 all have a fine-tune-only decoder (r = 1):
        0: e0 (truly ft-only)
        1: e1 (false: complete shrinkage; e1 is in the base data, base error keeps 0.6 c1 e1)
        2: e2 (false: latent decoupling; latent 3 reconstructs e2 in the base)
        3: base-only decoder e2 (reads c2 from the base), 4: shared e3."""
    Dm = 8
    E = torch.eye(Dm)
    cc = Crosscoder(2, Dm, 5, k=2)
    W_enc = torch.zeros(5, 2, Dm)
    W_dec = torch.zeros(5, 2, Dm)
    for j, c in enumerate([0, 1, 2]):
        W_enc[j, 1], W_dec[j, 1] = E[c], E[c]
    W_enc[3, 0], W_dec[3, 0] = E[2], E[2]
    W_enc[4, 1], W_dec[4, 0], W_dec[4, 1] = E[3], E[3], E[3]
    with torch.no_grad():
        cc.W_enc_FMD.copy_(W_enc)
        cc.W_dec_FMD.copy_(W_dec)
        cc.b_enc_F.zero_()
        cc.b_dec_MD.zero_()
        cc.threshold.fill_(0.0)

    def data(n_batches, B=256, seed=0):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n_batches):
            c = (torch.rand(B, 4, generator=g) < 0.3) * torch.rand(B, 4, generator=g) * 2
            base = 0.6 * c[:, 1:2] * E[1] + c[:, 2:3] * E[2] + c[:, 3:4] * E[3]
            ft = c[:, 0:1] * E[0] + c[:, 1:2] * E[1] + c[:, 2:3] * E[2] + c[:, 3:4] * E[3]
            yield torch.stack([base, ft], 1) + 0.02 * torch.randn(B, 2, Dm, generator=g)

    return cc, data


def brute_force_betas(cc, x, j):
    """Literal definition: build each target explicitly and solve the 1-d least squares."""
    xs = cc.scale_in(x).double().detach()
    z = cc.encode(x).double().detach()
    W = cc.W_dec_FMD.double().detach()
    rec = [z @ W[:, m] + cc.b_dec_MD[m].double().detach() for m in (0, 1)]
    f, d = z[:, j], W[j, 1]
    X = f[:, None] * d[None]
    targets = [xs[:, 0] - rec[0] + f[:, None] * W[j, 0], xs[:, 1] - rec[1] + f[:, None] * W[j, 1], rec[0], rec[1]]
    return [float((X * y).sum() / (X * X).sum()) for y in targets]


def test_latent_scaling_separates_false_exclusives():
    cc, data = scaling_setup()
    cl = classify_latents(cc)
    assert list(cl["labels"][:3]) == ["ft_only"] * 3  # decoder norms alone cannot tell them apart
    ls = latent_scaling(cc, data(8))
    assert list(ls["genuine_ft_only"][:3]) == [True, False, False]
    np.testing.assert_allclose(ls["nu_eps"][:3], [0.0, 0.6, 0.0], atol=0.05)
    np.testing.assert_allclose(ls["nu_rec"][:3], [0.0, 0.0, 1.0], atol=0.05)
    np.testing.assert_allclose(ls["beta_eps_ft"][:3], 1.0, atol=0.05)
    # streaming closed form == literal per-latent least squares (random batch splits)
    x = torch.cat(list(data(8)))
    for parts in (torch.split(x, 333), torch.split(x, 2048)):
        ls2 = latent_scaling(cc, parts, latents=[0, 1, 2, 4], dtype=torch.float64)
        for col, j in enumerate([0, 1, 2, 4]):
            bf = brute_force_betas(cc, x, j)
            got = [ls2[k][col] for k in ("beta_eps_base", "beta_eps_ft", "beta_rec_base", "beta_rec_ft")]
            np.testing.assert_allclose(got, bf, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- persistence
def test_save_load_roundtrip(trained, tmp_path):
    prov = {"base": "smollm2-135m", "adapter": "lora-r8", "layer": 12}
    out = trained.save(tmp_path / "cc", provenance=prov)
    trained.save(tmp_path / "cc", provenance=prov)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cc"]  # no temp dirs left
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "provenance.json"]
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["n_models"], cfg["d_model"], cfg["n_latents"], cfg["k"], cfg["sparsity"]) == (2, D, 128, 3, "batchtopk")
    assert cfg["threshold"] == pytest.approx(float(trained.threshold))
    assert cfg["scaling_factors"] == pytest.approx(trained.scale_M.tolist())
    assert cfg["hparams"]["lr"] == 3e-3 and cfg["hparams"]["total_steps"] == 700
    assert json.loads((out / "provenance.json").read_text()) == prov
    cc2 = Crosscoder.load(out)
    x = next(eval_batches(1, 256))
    for a, b in [(trained.encode(x), cc2.encode(x)), (trained(x), cc2(x)),
                 (trained.encode(x, use_threshold=False), cc2.encode(x, use_threshold=False))]:
        assert torch.equal(a, b)


# SIGKILLs itself inside a save, once the weights (save) or the trainer state (checkpoint) are on disk
KILLED_SAVE = r"""
import os, signal, sys
import safetensors.torch as st
import torch
from adapterscope.crosscoder import Crosscoder
from adapterscope.crosscoder_train import CrosscoderConfig, CrosscoderTrainer

what, out = sys.argv[1], sys.argv[2]
mod, name = (st, "save_file") if what == "save" else (torch, "save")
real = getattr(mod, name)


def killed(*a, **k):
    real(*a, **k)
    os.kill(os.getpid(), signal.SIGKILL)


setattr(mod, name, killed)
cc = Crosscoder(2, 8, 16, k=2)
if what == "save":
    cc.save(out, provenance={"run": 2})
else:
    CrosscoderTrainer(CrosscoderConfig(2, 8, 16, k=2, total_steps=1), crosscoder=cc).save_checkpoint(out)
"""


@pytest.mark.parametrize("what", ["save", "checkpoint"])
def test_killed_save_leaves_only_a_tmp_that_the_cleaner_removes(what, tmp_path, monkeypatch):
    """Crosscoder.save and save_checkpoint write through paths.atomic_path: a SIGKILL mid-write leaves the earlier
    folder byte for byte and only a hidden ``.<name>.*.tmp`` beside it, which clean_stale_temporaries removes."""
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    d = paths.runs_dir() / "03_crosscoder" / "r"
    out = d / "cc"
    torch.manual_seed(0)
    cc = Crosscoder(2, 8, 16, k=2)
    if what == "save":
        cc.save(out, provenance={"run": 1})
    else:
        CrosscoderTrainer(CrosscoderConfig(2, 8, 16, k=2, total_steps=1), crosscoder=cc).save_checkpoint(out)
    files = lambda: {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    earlier = files()
    r = subprocess.run([sys.executable, "-c", KILLED_SAVE, what, str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = sorted(p.name for p in d.iterdir() if p.name != "cc")
    assert len(left) == 1 and fnmatch.fnmatch(left[0], ".cc.*.tmp"), left  # the killed write's only trace
    assert any((d / left[0]).rglob("*.safetensors")), "the kill came after the weights were written"
    assert files() == earlier  # the earlier save, untouched
    assert paths.clean_stale_temporaries(min_age_s=0) == [d / left[0]]
    assert sorted(p.name for p in d.iterdir()) == ["cc"]


def _stream(n, seed=5):
    return planted_batches(*ATOMS, 256, n, seed)


def test_checkpoint_resume_is_bitwise(tmp_path):
    cfg = CrosscoderConfig(2, D, 48, k=3, batch_size=256, total_steps=40, lr=3e-3, warmup_steps=5,
                           dead_after_tokens=256 * 4, threshold_ema=0.9, n_scale_batches=3, seed=3)
    ref = CrosscoderTrainer(cfg)
    ref.fit(_stream(100), progress=False)
    ck = tmp_path / "ck"
    first = CrosscoderTrainer(cfg)
    first.fit(itertools.islice(_stream(100), 17), progress=False, checkpoint_dir=ck)  # interrupted
    assert first.step == 17
    torch.manual_seed(999)  # resume must restore RNG state itself
    cc = train_crosscoder(cfg, _stream(100), progress=False, checkpoint_dir=ck, out_dir=tmp_path / "final")
    res = CrosscoderTrainer.from_checkpoint(ck)
    assert res.step == 40
    for (n, a), b in zip(ref.cc.state_dict().items(), cc.state_dict().values()):
        assert torch.equal(a, b), n
    assert torch.equal(ref.tokens_since_fired, res.tokens_since_fired)
    assert float(ref.cc.threshold) > 0
    assert torch.equal(Crosscoder.load(tmp_path / "final").W_dec_FMD, ref.cc.W_dec_FMD)


# ----------------------------------------------------------------------------- variants
def test_l1_variant_trains():
    base, ft = ATOMS
    cfg = CrosscoderConfig(2, D, 64, sparsity="l1", batch_size=512, total_steps=300, lr=3e-3, l1_coeff=0.5,
                           dead_after_tokens=512 * 20)
    tr = CrosscoderTrainer(cfg)
    stats = [tr.train_step(x) for x in planted_batches(base, ft, 512, 300, 1)]
    assert stats[-1]["loss"] < 0.2 * stats[0]["loss"]
    assert stats[-1]["l1"] > 0 and stats[-1]["l0"] < 16
    ev = evaluate(tr.cc, eval_batches(2))
    assert min(ev["fve"]) > 0.9 and ev["l0"] < 16
    # the L1 penalty is norm-weighted: doubling decoder norms doubles the penalty term
    cc = tr.cc
    x = next(eval_batches(1, 128))
    z = cc.encode(x)
    assert torch.allclose((z * cc.decoder_norm_F()).sum(), (z * cc.decoder_norms_FM().sum(-1)).sum())


def _revived(auxk_coeff):
    base, ft = ATOMS
    cfg = CrosscoderConfig(2, D, 64, k=3, batch_size=512, total_steps=250, lr=3e-3, dead_after_tokens=512 * 5,
                           auxk_coeff=auxk_coeff, k_anneal_frac=0.0, seed=4)
    tr = CrosscoderTrainer(cfg)
    data = planted_batches(base, ft, 512, 250, 1)
    tr.init_from_data(next(data))
    with torch.no_grad():  # latents 0..31 can never win the top-k: dead from the start
        tr.cc.W_enc_FMD[:32] *= 0.01
        tr.cc.b_enc_F[:32] *= 0.01
    first = tr.train_step(next(data))
    assert first["l0"] == 3 and tr.tokens_since_fired[:32].min() > 0
    for x in data:
        tr.train_step(x)
    fires = sum((tr.cc.encode(x, use_threshold=False) != 0).sum(0) for x in eval_batches(2))
    return int((fires[:32] > 0).sum())


def test_auxk_revives_dead_latents():
    with_aux, without = _revived(1 / 32), _revived(0.0)
    assert with_aux >= 8 and with_aux >= without + 6, (with_aux, without)


def test_bf16_training_matches_fp32_quality():
    base, ft = ATOMS
    cfg = CrosscoderConfig(2, D, 64, k=3, batch_size=512, total_steps=250, lr=3e-3, dead_after_tokens=512 * 20,
                           threshold_ema=0.99)
    fve = {}
    for dt in ("float32", "bfloat16"):
        cc = CrosscoderTrainer(cfg, dtype=dt).fit(planted_batches(base, ft, 512, 250, 1), progress=False)
        fve[dt] = evaluate(cc, eval_batches(2))["fve_mean"]
    assert fve["float32"] > 0.9 and abs(fve["bfloat16"] - fve["float32"]) < 0.01, fve


def test_m1_is_an_sae():
    base, _ = ATOMS
    cfg = CrosscoderConfig(1, D, 64, k=3, batch_size=512, total_steps=200, lr=3e-3, threshold_ema=0.99)
    cc = CrosscoderTrainer(cfg).fit((x[:, :1] for x in planted_batches(base, base, 512, 200, 1)), progress=False)
    ev = evaluate(cc, (x[:, :1] for x in eval_batches(2)))
    assert len(ev["fve"]) == 1 and ev["fve"][0] > 0.9
    with pytest.raises(ValueError):
        reconstruction_ratio(cc, [])


def test_sparse_threads_cap_same_step_and_restores_threads():
    """The thread cap of the sparse part changes no result and restores the thread count."""
    base, ft = ATOMS
    x = next(planted_batches(base, ft, 256, 1, seed=3))
    grads, stats = {}, {}
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for st in (1, None):
            cfg = CrosscoderConfig(2, D, 64, k=3, batch_size=256, total_steps=10, k_anneal_frac=0.0, sparse_threads=st)
            tr = CrosscoderTrainer(cfg)
            tr.init_from_data(x)
            stats[st] = tr._grads_batchtopk(x)
            assert torch.get_num_threads() == 2
            grads[st] = {name: p.grad.clone() for name, p in tr.cc.named_parameters()}
    finally:
        torch.set_num_threads(n)
    for name in grads[1]:
        torch.testing.assert_close(grads[1][name], grads[None][name], rtol=1e-5, atol=1e-7, msg=name)
    assert stats[1]["mse"] == pytest.approx(stats[None]["mse"], rel=1e-6)


# ----------------------------------------------------------------------------- 03_crosscoder's per-depth protocol
def test_stack_tokens_shuffled_batches_and_chunks():
    from adapterscope.capture import PairedBatch
    from adapterscope.crosscoder_train import chunks, shuffled_batches, stack_tokens

    g = torch.Generator().manual_seed(0)
    bs = [PairedBatch(torch.zeros(2, 4, dtype=torch.long), {"k": torch.randn(2, 4, 3, generator=g)},
                      {"k": torch.randn(2, 4, 3, generator=g)}) for _ in range(3)]
    x = stack_tokens(iter(bs), ["k"])["k"]
    assert x.shape == (3 * 2 * 3, 2, 3)                                 # BOS dropped: 3 positions per row
    assert torch.equal(x[:6, 0], bs[0].base["k"][:, 1:].reshape(6, 3)) and torch.equal(x[-6:, 1], bs[2].ft["k"][:, 1:].reshape(6, 3))
    rows = torch.arange(10.0)[:, None, None]
    out = list(shuffled_batches(rows, steps=7, batch_size=3, seed=4))
    assert len(out) == 7 and all(b.shape == (3, 1, 1) for b in out)
    for epoch in (out[0:3], out[3:6]):                                   # 3 full batches per epoch, distinct rows
        seen = torch.cat(epoch).flatten().tolist()
        assert len(set(seen)) == 9
    again = list(shuffled_batches(rows, steps=7, batch_size=3, seed=4))
    assert all(torch.equal(a, b) for a, b in zip(out, again))
    assert torch.equal(torch.cat(list(chunks(rows, 4))), rows) and [len(c) for c in chunks(rows, 4)] == [4, 4, 2]
    with pytest.raises(ValueError, match="exceeds"):
        next(shuffled_batches(rows, 1, 11, 0))


def test_fit_config_sizes_the_run():
    from adapterscope.crosscoder_train import fit_config

    cfg = fit_config(5000, 32, expansion=4, k=3, epochs=8, batch_tokens=1024, lr=1e-3, seed=2)
    assert (cfg.n_latents, cfg.batch_size, cfg.total_steps, cfg.warmup_steps) == (128, 1024, 39, 1)
    assert cfg.dead_after_tokens == 5000 and cfg.seed == 2
    small = fit_config(300, 32, expansion=2, k=3, epochs=1, batch_tokens=1024, lr=1e-3, seed=0)
    assert small.batch_size == 300 and small.total_steps == 1


def test_fit_and_measure_finds_the_planted_exclusive_latents():
    """Planted: 8 fine-tune-only and 8 base-only atoms among 40. The per-depth protocol must train a crosscoder
    that reconstructs both models, counts about 8 latents of each exclusive class and sees a large cross/self
    ratio; identical models give no fine-tune-only latent and a ratio near 1."""
    from adapterscope.crosscoder_train import fit_and_measure, fit_config

    base, ft = ATOMS
    train = torch.cat(list(planted_batches(base, ft, 1024, 8, seed=11)))
    held = torch.cat(list(planted_batches(base, ft, 1024, 2, seed=12)))
    cfg = fit_config(len(train), D, expansion=4, k=3, epochs=40, batch_tokens=512, lr=3e-3, seed=1)
    fit = fit_and_measure(train, held, cfg, stream_seed=5)
    row = fit.row
    assert min(row["fve_base"], row["fve_ft"]) > 0.9 and row["l0"] == pytest.approx(3, abs=0.6)
    assert 6 <= row["n_ft_only"] <= 12 and 6 <= row["n_base_only"] <= 12, row
    assert row["ratio_ft"] > 5 and row["n_ft_only_genuine"] >= 6 and row["train_tokens"] == cfg.steps * cfg.batch_size
    assert fit.r_F.shape == (128,) and fit.alive_F.shape == (128,)
    assert row["threshold"] > 0 and set(row) >= {"n_ft_only_alive", "n_ft_only_genuine", "shared_cosine"}
    same = torch.cat(list(planted_batches(base, base, 1024, 4, seed=13)))
    cfg2 = fit_config(len(same), D, expansion=2, k=3, epochs=20, batch_tokens=512, lr=3e-3, seed=1)
    row2 = fit_and_measure(same, torch.cat(list(planted_batches(base, base, 1024, 1, seed=14))), cfg2,
                           stream_seed=5).row
    assert row2["n_ft_only"] == 0 and 0.8 < row2["ratio_ft"] < 1.25, row2
