"""Causal clamping: a hand-computed edit, and a planted fine-tune whose change the crosscoder's fine-tune-only
latents decode exactly (clamping them must give back the base model; random latents and matched noise not)."""

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
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1], n_random=5, n_noise=5, batch_size=4,
                                         progress=False)
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
    res = interventions.clamp_experiment(pm, cc, rows, 2, [], n_random=2, n_noise=1, batch_size=3, progress=False)
    assert np.allclose(res.kl_clamp_R, res.kl_ft_R, atol=1e-7) and np.allclose(res.kl_noise_NR, res.kl_ft_R, atol=1e-7)
    ref = np.concatenate([interventions.row_kl(b.logits_base, b.logits_ft).numpy()
                          for b in capture.iter_paired(pm, rows, [2], batch_size=2, progress=False)])
    assert np.allclose(res.kl_ft_R, ref, atol=1e-6) and res.kl_ft_R.min() > 0   # float32 rounding
    # a non-empty clamp of a random crosscoder runs end to end with a pool computed from the data
    res2 = interventions.clamp_experiment(pm, cc, rows, 2, [0, 1, 2], n_random=2, n_noise=2, batch_size=4,
                                          progress=False)
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
    kw = dict(n_random=4, n_noise=0, batch_size=4, progress=False, seed=2)
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1], **kw)
    raw = interventions.clamp_experiment(model, cc, rows, L, [0, 1], match_random_norm=False, **kw)
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
    res = interventions.clamp_experiment(model, cc, rows, L, [0, 1], n_random=2, n_noise=1, batch_size=4,
                                         subspaces={"pca": U_pca, "subspace": U_rand}, ceiling=True, progress=False)
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
