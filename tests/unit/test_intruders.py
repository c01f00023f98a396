"""adapterscope.intruders on planted weights and activations: construction (a new direction among the
weight's strongest) makes an intruder dimension, reweighting and small updates do not; the outside share reads a
displacement inside (0) and orthogonal to (1) the base's principal subspace."""

import pytest
import torch

from adapterscope import intruders


def _base(seed=0, d=64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5, g


def test_a_large_update_along_a_new_direction_is_an_intruder_and_reweighting_is_not():
    W, g = _base()
    U0, S0, Vh0 = torch.linalg.svd(W)
    u = torch.nn.functional.normalize(torch.randn(64, generator=g, dtype=torch.float64), dim=0)
    v = torch.nn.functional.normalize(torch.randn(64, generator=g, dtype=torch.float64), dim=0)
    big = 3 * float(S0[0])
    new = intruders.intruder_dimensions(W, big * torch.outer(u, v))
    assert new["n"] == 1 and new["max_cos"][0] < intruders.EPS  # the new direction is the strongest one
    assert new["sigma_share"] > 0.25  # its singular value, about 3x the base top, among the top ten
    reweight = intruders.intruder_dimensions(W, big * torch.outer(U0[:, 0], Vh0[0]))  # scale the top direction
    assert reweight["n"] == 0 and min(reweight["max_cos"]) > 0.99
    small = intruders.intruder_dimensions(W, 0.01 * float(S0[0]) * torch.outer(u, v))
    assert small["n"] == 0
    assert intruders.intruder_dimensions(W, torch.zeros_like(W), k=5) == {
        "n": 0, "k": 5, "max_cos": pytest.approx([1.0] * 5), "sigma_share": 0.0}


def test_adapter_intruders_reads_every_lora_module(tiny_llama):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    pm = get_peft_model(tiny_llama, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
    rows = intruders.adapter_intruders(pm)
    assert len(rows) == 6 and all(r["module"].endswith(("q_proj", "v_proj")) for r in rows)
    s = intruders.summary(rows)
    assert s["n_modules"] == 6 and s["n_intruders"] == sum(r["n"] for r in rows)
    assert 0 <= s["sigma_share_mean"] <= 1


def test_outside_share_inside_and_orthogonal_to_the_principal_subspace():
    g = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    base = (torch.randn(4000, 4, generator=g, dtype=torch.float64) * torch.tensor([10.0, 8, 6, 4])) @ Q[:, :4].T
    base += 0.01 * torch.randn(4000, 32, generator=g, dtype=torch.float64)
    inside = torch.randn(500, 4, generator=g, dtype=torch.float64) @ Q[:, :4].T
    outside = torch.randn(500, 28, generator=g, dtype=torch.float64) @ Q[:, 4:].T
    s_in = intruders.outside_share(base, inside)
    s_out = intruders.outside_share(base, outside)
    assert s_in["k_0.9"] <= 4 and s_in["k_0.99"] == 4
    assert s_in["0.99"] == pytest.approx(0.0, abs=1e-3) and s_out["0.99"] == pytest.approx(1.0, abs=1e-3)


def test_streamed_outside_share_equals_the_one_shot_reading():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(900, 16, generator=g, dtype=torch.float64) * torch.linspace(5, 0.1, 16)
    delta = torch.randn(900, 16, generator=g, dtype=torch.float64) * torch.linspace(0.1, 1, 16)
    acc = intruders.OutsideShare(16)
    for i in range(0, 900, 128):  # uneven last batch
        acc.update(base[i:i + 128].float(), delta[i:i + 128].float())
    want = intruders.outside_share(base.float(), delta.float())
    got = acc.result()
    assert got["k_0.9"] == want["k_0.9"] and got["k_0.99"] == want["k_0.99"]
    assert got["0.9"] == pytest.approx(want["0.9"], abs=1e-5) and got["0.99"] == pytest.approx(want["0.99"], abs=1e-5)
    assert 0.3 < got["0.9"] < 1  # most of this delta lies in the base's weak directions
    with pytest.raises(ValueError, match="both be"):
        acc.update(base[:4, :8], delta[:4, :8])
