"""Causal clamping: a hand-computed edit, and a planted fine-tune whose change the crosscoder's fine-tune-only
latents decode exactly (clamping them must give back the base model; random latents and matched noise not)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from adapterscope import capture, finetune, interventions
from adapterscope.crosscoder import Crosscoder
from tests.conftest import plant_switchable

L = 1          # the planted layer of the 3-layer tiny llama
D = 32
S0, S1 = 0.5, 2.0   # crosscoder input scaling (base, ft): the edit must undo it


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box spinning threads cost 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class PlantedLayer(nn.Module):
    """A decoder layer whose "fine-tuned" output adds sum_k alpha_k u_k, alpha_k = c (1 + tanh(<h, w_k>)) >= 0,
    at positions t >= 1 only; ``enabled=False`` is the base model."""

    def __init__(self, layer, U_KD, W_KD, c):
        super().__init__()
        self.layer, self.c, self.enabled = layer, c, True
        self.register_buffer("U_KD", U_KD)
        self.register_buffer("W_KD", W_KD)

    def alpha(self, h_BTD):
        a = self.c * (1 + torch.tanh(h_BTD @ self.W_KD.T / h_BTD.norm(dim=-1, keepdim=True) * 3))
        a[:, 0] = 0
        return a

    def forward(self, *args, **kwargs):
        h = self.layer(*args, **kwargs)
        h = h[0] if isinstance(h, tuple) else h
        return h + self.alpha(h) @ self.U_KD if self.enabled else h


def _planted(tiny_llama, K=2, seed=0):
    """(model with a disable_adapter() switch, U_KD). Embeddings are scaled up so next-token
    distributions are peaked and KL is far above float32 noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tiny_llama.model.embed_tokens.weight.mul_(40)
    U_KD = torch.linalg.qr(torch.randn(D, K, generator=g))[0].T.contiguous()
    W_KD = torch.randn(K, D, generator=g)
    W_KD /= W_KD.norm(dim=-1, keepdim=True)
    ids = torch.randint(97, (4, 12), generator=g)
    out = {}
    h = tiny_llama.model.layers[L].register_forward_hook(lambda m, i, o: out.__setitem__("h", o))
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    h.remove()
    c = 0.5 * float(out["h"][:, 1:].norm(dim=-1).mean())
    plant_switchable(tiny_llama, L, PlantedLayer(tiny_llama.model.layers[L], U_KD, W_KD, c))
    return tiny_llama, U_KD


def _planted_crosscoder(U_KD, n_shared=14, seed=1):
    """Latents 0..K-1 are fine-tune-only and read/write exactly u_k (z_k = <a_ft - a_base, u_k> = alpha_k);
    the others read the mean of both activations and have nearly equal base / ft decoders."""
    K = U_KD.shape[0]
    F = K + n_shared
    g = torch.Generator().manual_seed(seed)
    cc = Crosscoder(2, D, F, k=4)
    with torch.no_grad():
        cc.scale_M.copy_(torch.tensor([S0, S1]))
        cc.threshold.fill_(0.0)
        cc.b_enc_F.zero_()
        cc.b_dec_MD.zero_()
        cc.W_enc_FMD[:K, 0] = -U_KD / S0
        cc.W_enc_FMD[:K, 1] = U_KD / S1
        cc.W_dec_FMD[:K, 0] = 0
        cc.W_dec_FMD[:K, 1] = S1 * U_KD
        V = torch.randn(n_shared, D, generator=g) / D ** 0.5
        cc.W_enc_FMD[K:, 0] = V / (2 * S0)
        cc.W_enc_FMD[K:, 1] = V / (2 * S1)
        E = torch.randn(n_shared, D, generator=g)
        E /= E.norm(dim=-1, keepdim=True)
        eps = 0.3 * torch.randn(n_shared, D, generator=g) / D ** 0.5
        cc.W_dec_FMD[K:, 0] = S0 * E
        cc.W_dec_FMD[K:, 1] = S1 * (E + eps)
    return cc


def test_edit_matches_hand_computation():
    cc = Crosscoder(2, 4, 3, sparsity="l1")
    with torch.no_grad():
        cc.scale_M.copy_(torch.tensor([2.0, 0.5]))
        for p in (cc.W_enc_FMD, cc.W_dec_FMD, cc.b_enc_F, cc.b_dec_MD):
            p.zero_()
        for j in range(3):
            cc.W_enc_FMD[j, 1, j] = 1 / 0.5          # z_j = relu(a_ft[j])
        cc.W_dec_FMD[0, 0] = torch.tensor([1.0, 0, 0, 0])
        cc.W_dec_FMD[0, 1] = torch.tensor([0, 2.0, 0, 0])
        cc.W_dec_FMD[1, :] = torch.tensor([0, 0, 1.0, 0])
        cc.W_dec_FMD[2, 1] = torch.tensor([0, 0, 0, 4.0])
    a_base = torch.zeros(1, 2, 4)
    a_ft = torch.tensor([[[9.0, 9, 9, 9], [1.0, 2, 3, 0.5]]])   # position 0 is BOS: never edited
    z = interventions.latent_codes(cc, a_base, a_ft)
    assert torch.equal(z[0, 1], torch.tensor([1.0, 2.0, 3.0]))
    delta = interventions.latent_edit(z, interventions.edit_directions(cc), [0, 2])
    # by hand: 1 * ([1,0,0,0]/2 - [0,2,0,0]/0.5) + 3 * (0 - [0,0,0,4]/0.5)
    assert torch.equal(a_ft + delta, torch.tensor([[[9.0, 9, 9, 9], [1.5, -2.0, 3.0, -23.5]]]))
    # latent 1 has equal decoder rows in *scaled* space, so in raw units it still moves: z_1 (1/2 - 1/0.5) e_2
    assert torch.allclose(interventions.latent_edit(z, interventions.edit_directions(cc), [1])[0, 1],
                          torch.tensor([0, 0, 2 * (0.5 - 2.0), 0]))
    noise = interventions.matched_noise(delta, torch.Generator().manual_seed(0))
    assert torch.allclose(noise.norm(dim=-1), delta.norm(dim=-1)) and torch.equal(noise[0, 0], torch.zeros(4))


def test_random_latent_sets_are_seeded_distinct_and_from_the_pool():
    sets = interventions.random_latent_sets([3, 5, 7, 9, 11, 13], 3, 6, seed=2)
    assert len(sets) == 6 and all(len(set(s)) == 3 and set(s) <= {3, 5, 7, 9, 11, 13} for s in sets)
    again = interventions.random_latent_sets([3, 5, 7, 9, 11, 13], 3, 6, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(sets, again))
    with pytest.raises(ValueError, match="cannot draw"):
        interventions.random_latent_sets([1, 2], 3, 1)


def test_frequency_matched_random_sets_fire_like_the_clamped_set():
    # planted: 200 latents, ids 0..9 rare (1-3 firings), the rest frequent (500+); S = 3 rare latents
    counts = np.r_[np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 2]), 500 + np.arange(190)]
    S = np.array([0, 1, 2])
    pool = np.setdiff1d(np.flatnonzero(counts > 0), S)
    uniform = interventions.random_latent_sets(pool, 3, 20, seed=0)
    matched = interventions.random_latent_sets(pool, 3, 20, seed=0, counts=counts, targets=S, k_nearest=4)
    assert np.median(counts[np.concatenate(uniform)]) > 400           # uniform draws are mostly frequent latents
    assert all(len(set(m)) == 3 and set(m) <= set(range(3, 10)) for m in matched)   # matched: only rare ones
    assert len({tuple(m) for m in matched}) > 1                        # still random
    again = interventions.random_latent_sets(pool, 3, 20, seed=0, counts=counts, targets=S, k_nearest=4)
    assert all(np.array_equal(a, b) for a, b in zip(matched, again))
    with pytest.raises(ValueError, match="target latents"):
        interventions.random_latent_sets(pool, 3, 1, counts=counts, targets=[0, 1])


def test_planted_clamping_removes_the_kl_and_controls_do_not(tiny_llama):
    model, U_KD = _planted(tiny_llama)
    cc = _planted_crosscoder(U_KD)
    rows = torch.randint(97, (6, 12), generator=torch.Generator().manual_seed(3))
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1],
                                         interventions.ClampConfig(n_random=5, n_noise=5, batch_size=4, progress=False))
    s = res.summary(n_boot=200)
    assert res.kl_ft_R.shape == (6,) and res.kl_random_NR.shape == (5, 6) and res.kl_noise_NR.shape == (5, 6)
    assert s["kl_ft"] > 1e-2
    assert s["frac_removed_clamp"]["value"] > 0.999
    assert s["edit_norm"]["ft_minus_base_after_clamp"] < 1e-4 * s["edit_norm"]["ft_minus_base"]
    assert all(f < 0.5 for f in s["frac_removed_random_draws"])
    assert all(f < 0.5 for f in s["frac_removed_noise_draws"])
    assert s["edit_norm"]["noise"] == pytest.approx([s["edit_norm"]["clamp"]] * 5, rel=1e-5)
    assert all(set(R).isdisjoint({0, 1}) for R in res.random_sets)
    assert s["effect_random_minus_clamp"]["value"] > 0 and s["effect_noise_minus_clamp"]["value"] > 0
    json.dumps(s)  # the summary goes straight into a results JSON


def test_clamped_model_is_the_base_model(tiny_llama):
    """Exactness inside the model: after the clamp, the fine-tuned logits equal the base logits."""
    model, U_KD = _planted(tiny_llama)
    cc = _planted_crosscoder(U_KD)
    rows = torch.randint(97, (3, 10), generator=torch.Generator().manual_seed(4))
    from nnsight import NNsight

    (b,) = list(capture.iter_paired(model, rows, [L], batch_size=3, progress=False))
    key = f"blocks.{L}.hook_resid_post"
    z = interventions.latent_codes(cc, b.base[key], b.ft[key])
    delta = interventions.latent_edit(z, interventions.edit_directions(cc), [0, 1])
    assert torch.allclose(b.ft[key] + delta, b.base[key], atol=1e-5)
    logits = interventions.edited_logits(NNsight(model), f"model.layers.{L}", rows, delta)
    assert torch.allclose(logits, b.logits_base, atol=1e-4)
    assert not torch.allclose(b.logits_ft, b.logits_base, atol=1e-2)


def test_lora_zero_edit_reproduces_ft_kl(tiny_llama):
    """With a real peft adapter: clamping no latents changes nothing, and KL_ft is the paired capture's."""
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=4, seq_len=12, lr=3e-2, dtype="float32")
    pm = finetune.add_lora(tiny_llama, cfg)
    g = torch.Generator().manual_seed(0)
    finetune.train(pm, torch.randint(97, (8, 12), generator=g), cfg, progress=False)
    cc = Crosscoder(2, D, 24, sparsity="l1", seed=0)
    rows = torch.randint(97, (5, 12), generator=g)
    res = interventions.clamp_experiment(pm, cc, rows, 2, [],
                                         interventions.ClampConfig(n_random=2, n_noise=1, batch_size=3, progress=False))
    assert np.allclose(res.kl_clamp_R, res.kl_ft_R, atol=1e-7) and np.allclose(res.kl_noise_NR, res.kl_ft_R, atol=1e-7)
    ref = np.concatenate([interventions.row_kl(b.logits_base, b.logits_ft).numpy()
                          for b in capture.iter_paired(pm, rows, [2], batch_size=2, progress=False)])
    assert np.allclose(res.kl_ft_R, ref, atol=1e-6) and res.kl_ft_R.min() > 0   # float32 rounding
    # a non-empty clamp of a random crosscoder runs end to end with a pool computed from the data
    cfg2 = interventions.ClampConfig(n_random=2, n_noise=2, batch_size=4, progress=False)
    res2 = interventions.clamp_experiment(pm, cc, rows, 2, [0, 1, 2], cfg2)
    assert res2.meta["pool_size"] > 0 and np.isfinite(res2.kl_clamp_R).all()
    with pytest.raises(TypeError, match="peft model"):
        interventions.clamp_experiment(nn.Linear(2, 2), cc, rows, 2, [0])



def test_matched_norm_random_control_has_the_clamp_edit_norm_and_removes_less_kl(tiny_llama):
    """Planted: the fine-tune's whole change is alpha_k u_k, which latents 0 and 1 decode exactly, so clamping them
    removes all of KL. The random control's own edits (shared latents, nearly equal decoders) are far smaller; matched,
    each draw's mean per-token edit norm equals the clamp's, and it still removes much less KL."""
    model, U_KD = _planted(tiny_llama)
    cc = _planted_crosscoder(U_KD)
    rows = torch.randint(97, (6, 12), generator=torch.Generator().manual_seed(3))
    cfg = interventions.ClampConfig(n_random=4, n_noise=0, batch_size=4, progress=False, seed=2)
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1], cfg)
    raw = interventions.clamp_experiment(model, cc, rows, L, [0, 1], dataclasses.replace(cfg, match_random_norm=False))
    s, s_raw = res.summary(n_boot=200), raw.summary(n_boot=200)
    # the same random sets, their own edits much smaller than the clamp's; matched: equal mean per-token norms
    assert all(np.array_equal(a, b) for a, b in zip(res.random_sets, raw.random_sets))
    assert s["edit_norm_random_natural"] == pytest.approx(s_raw["edit_norm_random"], rel=1e-5)
    assert s["edit_norm_random_natural"] < 0.5 * s["edit_norm_clamp"]
    assert s["edit_norm"]["random"] == pytest.approx([s["edit_norm_clamp"]] * 4, rel=1e-4)
    assert s["edit_norm_random"] == pytest.approx(s["edit_norm_clamp"], rel=1e-4)
    assert res.meta["random_scale"] == pytest.approx([s["edit_norm_clamp"] / n for n in s["edit_norm"]["random_natural"]])
    assert res.meta["n_random_unmatched"] == 0 and min(res.meta["random_scale"]) > 1
    # a hand check of one draw's matched norm: the scale times its own mean per-token edit norm
    (nat,) = interventions.edit_norm_means(model, cc, rows, L, [res.random_sets[0]], batch_size=4)
    assert nat * res.meta["random_scale"][0] == pytest.approx(s["edit_norm_clamp"], rel=1e-4)
    # the clamp undoes the planted change; norm-matched random edits do not, and the scaled edit moves KL more
    assert s["frac_removed_clamp"]["value"] > 0.999
    assert max(s["frac_removed_random_draws"]) < 0.5
    assert s["effect_random_minus_clamp"]["value"] > 0
    assert np.abs(res.kl_random_NR - res.kl_ft_R).mean() > np.abs(raw.kl_random_NR - raw.kl_ft_R).mean()
    json.dumps(s)


def test_choose_layer():
    per = [{"layer": 3, "n_ft_only_alive": 2}, {"layer": 9, "n_ft_only_alive": 5}, {"layer": 15, "n_ft_only_alive": 5},
           {"layer": 21, "n_ft_only_alive": 0}]
    assert interventions.choose_layer(per, "most_ft_only", 3) == 15      # ties go to the deeper layer
    assert interventions.choose_layer(per, "peak_ratio", 21) == 21
    assert interventions.choose_layer(per, "9", 21) == 9
    none = [{"layer": 3, "n_ft_only_alive": 0}, {"layer": 9, "n_ft_only_alive": 0}]
    assert interventions.choose_layer(none, "most_ft_only", 3) == 9
    from adapterscope.params import ParameterError
    with pytest.raises(ParameterError, match="trained layers"):
        interventions.choose_layer(per, "4", 3)
    with pytest.raises(ParameterError, match="layer_choice must be"):
        interventions.choose_layer(per, "deepest", 3)


def test_choose_latents_names_the_set_and_falls_back_to_top_r():
    labels = np.array(["shared", "ft_only", "other", "ft_only", "base_only", "shared"], dtype=object)
    r = np.array([0.5, 0.95, 0.8, 0.99, 0.05, 0.6])
    live = np.array([True, True, True, False, True, True])
    c = interventions.choose_latents(labels, r, live, "ft_only", 3)
    assert c.kind == "ft_only" and c.latents.tolist() == [1] and not c.fallback
    assert c.label.startswith("the 1 fine-tune-only latent ")
    # no fine-tune-only latent at all: the top-r live latents by r (latent 3 would rank first but is dead)
    c = interventions.choose_latents(np.where(labels == "ft_only", "other", labels), r, live, "ft_only", 3)
    assert c.kind == "top_r" and c.fallback and c.latents.tolist() == [1, 2, 5]
    assert c.label == "the 3 latents with the highest relative decoder norm (no fine-tune-only latent exists)"
    # fine-tune-only latents exist but none is live
    c = interventions.choose_latents(labels, r, live & (labels != "ft_only"), "ft_only", 2)
    assert c.kind == "top_r" and c.latents.tolist() == [2, 5]
    assert "none of the 2 fine-tune-only latents fires" in c.label
    c = interventions.choose_latents(labels, r, live & (labels != "ft_only"), "ft_only", 0)
    assert c.kind == "none" and len(c.latents) == 0 and "nothing clamped" in c.label
    # the top-r set requested: never more than the live latents, and named as the top-r set
    c = interventions.choose_latents(labels, r, live, "top_r:10")
    assert c.kind == "top_r" and not c.fallback and c.latents.tolist() == [0, 1, 2, 4, 5]
    assert c.label == ("the 5 latents with the highest relative decoder norm (the top-r set was requested; "
                       "1 of 2 fine-tune-only latents live)")
    c = interventions.choose_latents(np.where(labels == "ft_only", "other", labels), r, live, "top_r:1")
    assert c.latents.tolist() == [1] and c.label.endswith("(the top-r set was requested; no fine-tune-only latent exists)")
    from adapterscope.params import ParameterError
    with pytest.raises(ParameterError, match="latent_set"):
        interventions.choose_latents(labels, r, live, "top_r:x")


def test_pca_baseline_equals_the_clamp_when_the_change_is_exactly_low_rank_and_the_ceiling_removes_all(tiny_llama):
    """The planted change lives in span(U) (rank 2): the top-2 principal directions of the displacement on other
    rows span it, so projecting the displacement onto them undoes it exactly, as the clamp does; a random 2-d
    subspace at the same edit norm does not; the full patch (the ceiling) removes every bit of KL."""
    model, U_KD = _planted(tiny_llama)
    cc = _planted_crosscoder(U_KD)
    key = f"blocks.{L}.hook_resid_post"
    train = torch.randint(97, (8, 12), generator=torch.Generator().manual_seed(5))
    (b,) = list(capture.iter_paired(model, train, [L], batch_size=8, progress=False))
    U_pca = interventions.pca_basis((b.base[key] - b.ft[key])[:, 1:].reshape(-1, D), 2)
    cosines = torch.linalg.svdvals(U_pca.T @ U_KD.T)  # principal angles between the two planes
    assert cosines.min() > 1 - 1e-5
    U_rand = interventions.random_basis(D, 2, seed=0)
    assert torch.allclose(U_rand.T @ U_rand, torch.eye(2), atol=1e-6)
    rows = torch.randint(97, (6, 12), generator=torch.Generator().manual_seed(3))
    cfg = interventions.ClampConfig(n_random=2, n_noise=1, batch_size=4, ceiling=True, progress=False)
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1], cfg, subspaces={"pca": U_pca, "subspace": U_rand})
    s = res.summary(n_boot=200)
    assert set(res.kl_subspace) == {"pca", "subspace"} and res.kl_ceiling_R.shape == (6,)
    assert s["frac_removed_pca"]["value"] == pytest.approx(s["frac_removed_clamp"]["value"], abs=1e-4)
    assert s["frac_removed_ceiling"]["value"] > 0.999 and s["clamp_over_ceiling"] == pytest.approx(1, abs=1e-3)
    assert s["frac_removed_subspace"]["value"] < 0.5
    assert s["edit_norm"]["pca"] == pytest.approx(s["edit_norm"]["clamp"], rel=1e-4)
    assert s["edit_norm"]["subspace"] == pytest.approx(s["edit_norm"]["clamp"], rel=1e-4)
    assert s["edit_norm"]["subspace_natural"] < 0.5 * s["edit_norm"]["clamp"]  # rescaled up to the clamp's norm
    assert s["effect_subspace_minus_clamp"]["value"] > 0
    assert res.meta["subspace_rank"] == {"pca": 2, "subspace": 2}
    json.dumps(s)
    with pytest.raises(ValueError, match="r must be"):
        interventions.pca_basis(torch.zeros(3, D), 4)


def test_clamp_config_defaults_and_refusals():
    cfg = interventions.ClampConfig()
    assert (cfg.n_random, cfg.n_noise, cfg.match_random_norm, cfg.ceiling, cfg.seed, cfg.site, cfg.skip_first,
            cfg.use_threshold, cfg.base, cfg.ft, cfg.batch_size, cfg.device, cfg.dtype) == (
        5, 5, True, False, 0, "resid_post", 1, True, 0, 1, 8, "cpu", "float32")
    for bad, match in [({"n_random": -1}, "n_random must be an integer >= 0"), ({"n_noise": 1.5}, "n_noise"),
                       ({"batch_size": 0}, "batch_size must be an integer >= 1"), ({"seed": -3}, "seed"),
                       ({"skip_first": True}, "skip_first"), ({"site": "attn"}, "site must be one of"),
                       ({"base": 1}, "0 and 1 in either order")]:
        with pytest.raises(ValueError, match=match):
            interventions.ClampConfig(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_random = 2


# Stored from the planted model (n_random=3 frequency-matched, n_noise=2, two subspaces, the ceiling, seed 1) when
# clamp_experiment became a config and three steps; that refactor was checked bit for bit against the old
# 20-parameter function on the planted and the LoRA models under eight settings before the old one was deleted.
STORED_SETS = [[7, 12], [2, 14], [6, 7]]
STORED = {
    "kl_ft_R": [0.0222604312, 0.0018565557, 0.2258962979, 0.2533819569, 0.2309383663, 0.0039269253],
    "kl_random_NR": [[0.0810864395, 0.0047442872, 1.0371923636, 0.1570091602, 0.2614036525, 0.031175878],
                     [0.9883637769, 0.0874020948, 0.1179400386, 0.615177338, 0.4367679722, 0.1658613289],
                     [0.5123715896, 0.1098732149, 0.1761828546, 0.1780211552, 0.2706754312, 1.7020322606]],
    "kl_noise_NR": [[0.5474954595, 0.0181832377, 0.0368120708, 0.2335684737, 0.0432897009, 0.0735523841],
                    [0.2706644753, 0.7454295979, 0.1472274109, 0.631551921, 0.0227004291, 0.2719629876]],
    "pca": [0.5612398132, 0.167654011, 0.2598281505, 0.4349513283, 0.2546306224, 0.2637830169],
    "subspace": [0.3579257942, 0.0218329485, 0.1203566483, 0.1440183771, 0.1231258919, 0.2141235939],
}
STORED_NORMS = {"clamp": 3.1543648170702383, "random_natural": [0.17462099027453046, 0.24085328306043238,
                                                                0.3079947584280462],
                "pca_natural": 1.0339495593851262, "subspace_natural": 0.7102168109832387,
                "ft_minus_base": 3.1543651168996636}
STORED_META = {"layer": 1, "site": "resid_post", "skip_first": 1, "use_threshold": True, "seed": 1, "n_random": 3,
               "n_noise": 2, "pool_size": 14, "n_tokens": 66, "fire_median_clamped": 66.0, "fire_median_random": 41.5,
               "n_random_unmatched": 0, "subspace_rank": {"pca": 2, "subspace": 2}}


def test_clamp_experiment_reproduces_its_stored_values_and_is_its_three_steps(tiny_llama):
    model, U_KD = _planted(tiny_llama)
    cc = _planted_crosscoder(U_KD)
    rows = torch.randint(97, (6, 12), generator=torch.Generator().manual_seed(3))
    fires = interventions.fire_counts(model, cc, rows, L, batch_size=4, progress=False)
    assert fires.tolist() == [66, 66, 45, 37, 36, 34, 47, 36, 30, 30, 33, 18, 38, 42, 48, 20]
    cfg = interventions.ClampConfig(n_random=3, n_noise=2, batch_size=4, seed=1, ceiling=True, progress=False)
    subspaces = {"pca": interventions.random_basis(D, 2, seed=5), "subspace": interventions.random_basis(D, 2, seed=0)}
    res = interventions.clamp_experiment(model, cc, rows, L, [1, 0, 1], cfg, fire_counts_F=fires, subspaces=subspaces)
    assert res.latents.tolist() == [0, 1] and [r.tolist() for r in res.random_sets] == STORED_SETS
    for name in ("kl_ft_R", "kl_random_NR", "kl_noise_NR"):
        assert getattr(res, name) == pytest.approx(np.array(STORED[name]), rel=1e-4, abs=1e-7), name
    for name in ("pca", "subspace"):
        assert res.kl_subspace[name] == pytest.approx(np.array(STORED[name]), rel=1e-4, abs=1e-7), name
    assert np.abs(res.kl_clamp_R).max() < 1e-8 and np.abs(res.kl_ceiling_R).max() < 1e-8   # the planted change undone
    en = res.edit_norm
    assert list(en) == ["clamp", "random", "noise", "random_natural", "pca", "subspace", "pca_natural",
                        "subspace_natural", "ceiling", "ft_minus_base", "ft_minus_base_after_clamp"]
    for k, v in STORED_NORMS.items():
        assert en[k] == pytest.approx(v, rel=1e-5), k
    assert en["random"] + en["noise"] + [en["pca"], en["subspace"]] == pytest.approx([en["clamp"]] * 7, rel=1e-5)
    assert en["ceiling"] == pytest.approx(en["ft_minus_base"], rel=1e-6) and en["ft_minus_base_after_clamp"] < 1e-5
    assert {k: res.meta[k] for k in STORED_META} == STORED_META
    assert res.meta["random_scale"] == pytest.approx([en["clamp"] / n for n in en["random_natural"]])
    assert res.meta["subspace_scale"] == pytest.approx({"pca": en["clamp"] / en["pca_natural"],
                                                        "subspace": en["clamp"] / en["subspace_natural"]})
    # the entry point is exactly its three steps
    S = np.array([0, 1])
    controls = interventions.choose_controls(model, cc, rows, L, S, cfg, fire_counts_F=fires)
    assert [r.tolist() for r in controls.random_sets] == STORED_SETS and controls.noise_seeds == [1001, 1002]
    assert controls.pool_size == 14
    scales = interventions.measure_edit_norms(model, cc, rows, L, S, controls, cfg, subspaces)
    assert scales.random_scale == res.meta["random_scale"] and scales.natural[1:4] == en["random_natural"]
    again = interventions.run_edited(model, cc, rows, L, S, controls, scales, cfg, subspaces)
    for name in ("kl_ft_R", "kl_clamp_R", "kl_random_NR", "kl_noise_NR", "kl_ceiling_R"):
        assert np.array_equal(getattr(again, name), getattr(res, name)), name
    assert again.edit_norm == res.edit_norm and again.meta.keys() == res.meta.keys()
    # nothing scaled (no random draws, no subspaces): no norm sweep, every factor 1
    bare = dataclasses.replace(cfg, n_random=0)
    none = interventions.measure_edit_norms(model, cc, rows, L, S, interventions.choose_controls(
        model, cc, rows, L, S, bare), bare)
    assert none.natural is None and none.random_scale == [] and none.subspace_scale == []
