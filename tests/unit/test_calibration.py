"""adapterscope.calibration: planted directions, planting, matching, the minimum detectable effect, the
displacement spectrum, the random-direction null adapter and the two-adapter capture; and the detector itself on
planted data: a strong planted feature is found as a fine-tune-only latent, a weak one is missed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapterscope import calibration as cal
from adapterscope import crosscoder as cc_mod
from adapterscope import crosscoder_train


def _lowrank(N=4000, D=48, k=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(D, k, generator=g))
    x = (torch.randn(N, k, generator=g) * torch.linspace(10, 5, k)) @ basis.T + 0.05 * torch.randn(N, D, generator=g)
    return x, basis


def test_directions_are_orthonormal_and_outside_the_principal_subspace():
    x, basis = _lowrank()
    P = cal.principal_basis(x, 0.99)
    assert P.shape == (48, 6)  # the six planted components hold > 99% of the variance
    V, k = cal.orthogonal_directions(x, 10, pc_variance=0.99, seed=3)
    assert k == 6 and V.shape == (10, 48)
    assert torch.allclose(V @ V.T, torch.eye(10), atol=1e-5)
    assert (V @ P).abs().max() < 1e-5  # orthogonal to the estimated subspace exactly
    assert (V @ basis).abs().max() < 1e-2  # and to the planted one up to its estimation noise
    V2, _ = cal.orthogonal_directions(x, 10, pc_variance=0.99, seed=3)
    assert torch.equal(V, V2)
    with pytest.raises(ValueError, match="do not fit"):
        cal.orthogonal_directions(x, 43, pc_variance=0.99)


def test_plant_adds_each_feature_on_its_share_of_tokens_to_one_stream_only():
    x = torch.randn(20000, 2, 16)
    V = torch.eye(16)[:3]
    out, mask = cal.plant(x, V, magnitudes=[2.0, 5.0, 1.0], freqs=[0.01, 0.1, 0.5], seed=0)
    assert torch.equal(out[:, 0], x[:, 0])
    rates = mask.float().mean(1)
    assert np.allclose(rates.numpy(), [0.01, 0.1, 0.5], atol=0.01)
    added = out[:, 1] - x[:, 1]
    assert torch.allclose(added[:, 3:], torch.zeros_like(added[:, 3:]), atol=1e-6)
    fired = added[mask[1], 1]
    assert fired.min() >= 2.5 - 1e-5 and fired.max() <= 7.5 + 1e-5  # 5 x Uniform(0.5, 1.5)
    assert (added[~mask[1], 1].abs() < 1e-6).all()
    rms = added[:, 1].pow(2).mean().sqrt() / 1.0
    assert abs(float(rms) - cal.planted_rms(5.0, 0.1)) < 0.05 * cal.planted_rms(5.0, 0.1)
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        cal.plant(x, V, [1, 1, 1], [0.1, 0.0, 0.1], seed=0)


def test_match_planted_and_the_minimum_detectable_effect_on_hand_set_values():
    V = torch.eye(8)[:2]
    W = torch.zeros(5, 8)
    W[3, 0] = -2.0  # learned with the opposite sign: still learned
    W[1, 1] = 1.0
    W[1, 2] = 1.5  # cosine 0.55 with e1: not learned
    rows = cal.match_planted(W, V, labels=["shared", "other", "x", "ft_only", "y"], r_F=[0.5, 0.6, 0.7, 0.95, 0.1])
    assert rows[0] == {"latent": 3, "cosine": pytest.approx(1.0), "label": "ft_only", "learned": True, "ft_only": True,
                       "r": 0.95}
    assert rows[1]["latent"] == 1 and not rows[1]["learned"] and not rows[1]["ft_only"]
    rates = [{"alpha": 0.1, "freq": 0.01, "ft_only": 0.0}, {"alpha": 0.3, "freq": 0.01, "ft_only": 0.67},
             {"alpha": 1.0, "freq": 0.01, "ft_only": 1.0}, {"alpha": 0.1, "freq": 0.1, "ft_only": 0.67},
             {"alpha": 0.3, "freq": 0.1, "ft_only": 0.33}, {"alpha": 1.0, "freq": 0.1, "ft_only": 1.0},
             {"alpha": 0.1, "freq": 0.5, "ft_only": 0.0}, {"alpha": 1.0, "freq": 0.5, "ft_only": 0.0}]
    mde = {r["freq"]: r for r in cal.minimum_detectable(rates)}
    assert mde[0.01]["mde_alpha"] == 0.3 and mde[0.01]["mde_rms"] == pytest.approx(cal.planted_rms(0.3, 0.01))
    assert mde[0.1]["mde_alpha"] == 1.0  # 0.1 reaches 0.5 but 0.3 does not: not monotone from there
    assert mde[0.5]["mde_alpha"] == math.inf and mde[0.5]["mde_rms"] == math.inf
    det = cal.detection_rates([{"alpha": 1, "freq": 0.1, "learned": True, "ft_only": False},
                               {"alpha": 1, "freq": 0.1, "learned": True, "ft_only": True, "genuine": True}])
    assert det == [{"alpha": 1, "freq": 0.1, "n": 2, "learned": 1.0, "ft_only": 0.5, "genuine": 0.5}]


def test_displacement_spectrum_reads_a_planted_rank_one_displacement():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(5000, 32, generator=g) * 3
    v = torch.nn.functional.normalize(torch.randn(32, generator=g), dim=0)
    ft = base + 0.6 * v  # every token moves by 0.6 along v
    s = cal.displacement_spectrum(torch.stack([base, ft], 1), top=3)
    m = s["median_norm"]
    assert s["rms_top"][0] == pytest.approx(0.6 / m, rel=1e-6) and s["rms_top"][1] < 1e-6
    assert s["rel_norm_median"] == pytest.approx(0.6 / m, rel=1e-6) and s["energy_share_top"] == pytest.approx(1.0)


def _fit(x_NMD, seed=0, expansion=4, epochs=20):
    n = len(x_NMD)
    tr, ev = x_NMD[: int(0.85 * n)], x_NMD[int(0.85 * n):]
    cfg = crosscoder_train.fit_config(len(tr), x_NMD.shape[-1], expansion=expansion, k=8, epochs=epochs,
                                      batch_tokens=512, lr=3e-3, seed=seed)
    return crosscoder_train.fit_and_measure(tr, ev, cfg, stream_seed=seed)


def test_the_detector_finds_a_strong_planted_feature_as_fine_tune_only_and_misses_a_weak_one():
    """Shared sparse features in both streams (as the base and a barely moved adapter share them), then two
    new directions planted in the fine-tuned stream only: one at the median token norm firing on 5% of tokens
    (found), one at 2% of the median norm (missed: below the reconstruction noise)."""
    g = torch.Generator().manual_seed(0)
    N, D, n_atoms = 12000, 48, 40
    atoms = torch.nn.functional.normalize(torch.randn(n_atoms, D, generator=g), dim=-1)
    codes = (torch.rand(N, n_atoms, generator=g) < 0.08) * (torch.rand(N, n_atoms, generator=g) + 0.5) * 3
    shared = codes @ atoms + 0.05 * torch.randn(N, D, generator=g)
    x = torch.stack([shared, shared + 0.02 * torch.randn(N, D, generator=g)], 1)
    V, _ = cal.orthogonal_directions(shared, 2, pc_variance=0.6, seed=1)
    m = cal.median_norm(x[:, 1])
    planted, mask = cal.plant(x, V, magnitudes=[1.0 * m, 0.02 * m], freqs=[0.05, 0.05], seed=2)
    fit = _fit(planted)
    labels = cc_mod.classify_latents(fit.cc)["labels"]
    rows = cal.match_planted(fit.cc.W_dec_FMD[:, 1], V, labels)
    assert rows[0]["ft_only"] and rows[0]["cosine"] > 0.9, rows[0]
    assert not rows[1]["learned"], rows[1]
    # the same detector on the unplanted pair finds neither direction
    clean = cal.match_planted(_fit(x).cc.W_dec_FMD[:, 1], V, labels)
    assert not any(r["learned"] for r in clean)


def _two_adapters(tiny_llama):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    pm = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                        adapter_name="one")
    pm.add_adapter("two", LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    return pm


def test_randomise_lora_keeps_each_modules_update_norm_and_is_seeded(tiny_llama):
    pm = _two_adapters(tiny_llama)

    def deltas(name):
        return {n: float((m.scaling[name] * (m.lora_B[name].weight @ m.lora_A[name].weight)).norm())
                for n, m in pm.named_modules() if hasattr(m, "lora_A") and name in m.lora_A}

    before = deltas("two")
    A0 = {n: m.lora_A["two"].weight.clone() for n, m in pm.named_modules() if hasattr(m, "lora_A") and "two" in m.lora_A}
    norms = cal.randomise_lora(pm, "two", seed=5)
    after = deltas("two")
    assert set(norms) == set(before) == set(after) and len(norms) == 6
    for n in before:
        assert after[n] == pytest.approx(before[n], rel=1e-5) and norms[n] == pytest.approx(before[n], rel=1e-6)
    A1 = {n: m.lora_A["two"].weight.clone() for n, m in pm.named_modules() if hasattr(m, "lora_A") and "two" in m.lora_A}
    assert all(not torch.allclose(A0[n], A1[n]) for n in A0)
    cal.randomise_lora(pm, "two", seed=5)
    assert all(torch.equal(A1[n], m.lora_A["two"].weight) for n, m in pm.named_modules()
               if hasattr(m, "lora_A") and "two" in m.lora_A)
    with pytest.raises(ValueError, match="no LoRA module"):
        cal.randomise_lora(pm, "nope", seed=0)


def test_iter_adapter_pairs_reads_each_adapters_layer_output_and_restores_the_active_one(tiny_llama):
    from adapterscope import capture, models

    pm = _two_adapters(tiny_llama)
    pm.set_adapter("one")
    rows = torch.randint(3, 97, (5, 9), generator=torch.Generator().manual_seed(0))
    got = torch.cat(list(cal.iter_adapter_pairs(pm, rows, layer=1, adapters=("one", "two"), batch_size=2)))
    assert got.shape == (5 * 8, 2, 32) and pm.active_adapter == "one"
    key = models.hook_key(1, "resid_post")
    with_a = torch.cat([b.tokens(key)[:, 1] for b in capture.iter_paired(pm, rows, [1], batch_size=5,
                                                                          progress=False)])
    assert torch.allclose(got[:, 0], with_a, atol=1e-5)  # the adapter-on side, BOS dropped, same order
    assert not torch.allclose(got[:, 0], got[:, 1], atol=1e-3)
    same = torch.cat(list(cal.iter_adapter_pairs(pm, rows, layer=1, adapters=("two", "two"))))
    assert torch.equal(same[:, 0], same[:, 1])


def test_depth_profile_reads_every_layer_and_a_stronger_adapter_moves_more(tiny_llama):
    from adapterscope import models

    pm = _two_adapters(tiny_llama)
    rows = torch.randint(3, 97, (12, 16), generator=torch.Generator().manual_seed(1))
    prof = cal.depth_profile(pm, rows, "one", batch_size=4)
    L = models.num_layers(pm)
    assert len(prof["disp_trimmed"]) == L == len(prof["se"]) and prof["depth"][0] == 0 and prof["depth"][-1] == 1
    assert math.isfinite(prof["slope"]) and prof["adapter"] == "one"
    for n, m in pm.named_modules():  # ten times the update everywhere: more displacement at the last layer
        if hasattr(m, "lora_B") and "one" in m.lora_B:
            m.lora_B["one"].weight.data *= 10
    big = cal.depth_profile(pm, rows, "one", batch_size=4)
    assert big["disp_trimmed"][-1] > prof["disp_trimmed"][-1]


def test_depth_profile_splits_a_single_batch_into_two_jackknife_blocks(tiny_llama):
    pm = _two_adapters(tiny_llama)
    rows = torch.randint(3, 97, (3, 16), generator=torch.Generator().manual_seed(2))
    prof = cal.depth_profile(pm, rows, "one", batch_size=8)  # one batch of 8 would leave a block empty
    assert all(math.isfinite(v) for v in prof["disp_trimmed"])
    with pytest.raises(ValueError, match="at least two rows"):
        cal.depth_profile(pm, rows[:1], "one")
