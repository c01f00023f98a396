"""Paired capture: one backbone, adapter off == the base model exactly, adapter on == the fine-tuned model."""

import pytest
import torch

from adapterscope import capture, finetune


@pytest.fixture
def peft_tiny(tiny_llama):
    base_ref = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=4, seq_len=16, lr=3e-2, dtype="float32")
    pm = finetune.add_lora(tiny_llama, cfg)
    g = torch.Generator().manual_seed(0)
    finetune.train(pm, torch.randint(97, (8, 16), generator=g), cfg, progress=False)
    return pm, base_ref


def _hooked(model, modules):
    acts = {}
    hs = [m.register_forward_hook(lambda mod, i, o, k=k: acts.__setitem__(k, o[0] if isinstance(o, tuple) else o))
          for k, m in modules.items()]
    return acts, hs


def test_paired_capture_matches_separate_models(peft_tiny):
    from transformers import LlamaForCausalLM

    pm, base_ref = peft_tiny
    rows = torch.randint(97, (5, 10), generator=torch.Generator().manual_seed(1))
    batches = list(capture.iter_paired(pm, rows, layers=[0, 2], sites=["resid_post", "mlp_out"], batch_size=2,
                                       progress=False))
    assert [b.input_ids.shape[0] for b in batches] == [2, 2, 1]
    # reference: a plain copy of the base weights, and the merged fine-tuned model
    base = LlamaForCausalLM(pm.base_model.model.config)
    base.load_state_dict(base_ref)
    base.eval()
    mods = {"blocks.0.hook_resid_post": base.model.layers[0], "blocks.2.hook_mlp_out": base.model.layers[2].mlp}
    acts, hs = _hooked(base, mods)
    with torch.no_grad():
        logits = base(input_ids=rows[:2]).logits
    for h in hs:
        h.remove()
    b0 = batches[0]
    for k in mods:
        assert torch.equal(b0.base[k], acts[k]), k
    assert torch.allclose(b0.logits_base, logits, atol=1e-6)
    with torch.no_grad():
        ft_logits = pm(input_ids=rows[:2]).logits
    assert torch.allclose(b0.logits_ft, ft_logits, atol=1e-6)
    assert not torch.allclose(b0.logits_ft, b0.logits_base, atol=1e-4)  # the adapter does something
    pairs = b0.tokens("blocks.2.hook_resid_post")
    assert pairs.shape == (2 * 9, 2, 32)


def test_capture_without_logits_stops_after_deepest_target(peft_tiny):
    """with_logits=False gives the same activations and never runs the layers after the deepest target nor the
    vocabulary head (for Gemma-3's 262k-token head that is most of a forward pass)."""
    pm, _ = peft_tiny
    rows = torch.randint(97, (4, 8), generator=torch.Generator().manual_seed(3))
    full = list(capture.iter_paired(pm, rows, layers=[0, 1], sites=["resid_post"], batch_size=2, progress=False))
    inner = pm.base_model.model
    calls = {"last_layer": 0, "lm_head": 0}

    def count(name):
        return lambda *a: calls.__setitem__(name, calls[name] + 1)

    hs = [inner.model.layers[-1].register_forward_hook(count("last_layer")),
          inner.lm_head.register_forward_hook(count("lm_head"))]
    try:
        short = list(capture.iter_paired(pm, rows, layers=[0, 1], sites=["resid_post"], batch_size=2,
                                         with_logits=False, progress=False))
    finally:
        for h in hs:
            h.remove()
    assert len(inner.model.layers) > 2 and calls == {"last_layer": 0, "lm_head": 0}
    for a, b in zip(full, short):
        assert b.logits_base is None and b.logits_ft is None
        for k in a.base:
            assert torch.equal(a.base[k], b.base[k]) and torch.equal(a.ft[k], b.ft[k]), k


def test_shards_round_trip(peft_tiny, tmp_path):
    pm, _ = peft_tiny
    rows = torch.randint(97, (6, 9), generator=torch.Generator().manual_seed(2))
    keys = ["blocks.1.hook_resid_post"]
    w = capture.ShardWriter(tmp_path / "shards", keys, tokens_per_shard=20, dtype=torch.float32, meta={"x": 1})
    direct = []
    for b in capture.iter_paired(pm, rows, layers=[1], batch_size=2, with_logits=False, progress=False):
        w.add(b)
        direct.append(b.tokens(keys[0]))
    out = w.close()
    assert sorted(p.name for p in out.iterdir())[:2] == ["meta.json", "shard_00000.safetensors"]
    back = torch.cat(list(capture.iter_shards(out, keys[0], batch_tokens=7)))
    assert torch.equal(back, torch.cat(direct))
    with pytest.raises(KeyError, match="not captured"):
        next(capture.iter_shards(out, "blocks.0.hook_mlp_out"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # its .shards.partial.tmp went with the swap


def test_capture_refuses_plain_model_and_bad_layer(tiny_llama, peft_tiny):
    from adapterscope import models

    with pytest.raises(TypeError, match="peft model"):
        next(capture.iter_paired(tiny_llama, torch.zeros(1, 4, dtype=torch.long), layers=[0]))
    pm, _ = peft_tiny
    with pytest.raises(models.ModelError, match="out of range"):
        next(capture.iter_paired(pm, torch.zeros(1, 4, dtype=torch.long), layers=[7]))


@pytest.mark.parametrize("with_logits", [True, False])
def test_traced_capture_of_the_plain_base_equals_the_peft_capture(peft_tiny, tmp_path, with_logits):
    """The dry path of the NDIF capture: the adapter as interventions on the plain base model (the traces a remote
    run sends) gives the peft capture's activations and logits, from the loaded adapter and from its saved folder."""
    from nnsight import NNsight
    from transformers import LlamaForCausalLM

    pm, base_ref = peft_tiny
    rows = torch.randint(97, (3, 9), generator=torch.Generator().manual_seed(5))
    want = list(capture.iter_paired(pm, rows, layers=[0, 2], sites=["mlp_out", "resid_post"], batch_size=2,
                                    with_logits=with_logits, progress=False))
    base = LlamaForCausalLM(pm.base_model.model.config)
    base.load_state_dict(base_ref)
    base.eval()
    fac = capture.lora_factors(pm)
    assert len(fac) == 3 * 4 and all(s == 2.0 for _, _, s in fac.values())  # alpha 8 / rank 4
    saved = finetune.save_adapter(pm, tmp_path / "adapter", {"model": "tiny"})
    from_dir = capture.lora_factors_from_dir(saved)
    assert set(from_dir) == set(fac) and all(torch.equal(from_dir[k][1], fac[k][1]) for k in fac)
    got = list(capture.iter_paired_traced(NNsight(base), from_dir, rows, layers=[0, 2],
                                          sites=["mlp_out", "resid_post"], batch_size=2, with_logits=with_logits,
                                          progress=False))
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        for k in w.base:
            assert torch.allclose(g.base[k], w.base[k], atol=1e-6), k
            assert torch.allclose(g.ft[k], w.ft[k], atol=1e-5), k
            assert not torch.allclose(g.ft[k], g.base[k], atol=1e-4) or k.startswith("blocks.0.hook_mlp")
        if with_logits:
            assert torch.allclose(g.logits_ft, w.logits_ft, atol=1e-5)
        else:
            assert g.logits_ft is None


def test_traced_capture_refuses_what_cannot_run(peft_tiny, tiny_llama):
    from nnsight import NNsight

    pm, _ = peft_tiny
    fac = capture.lora_factors(pm)
    rows = torch.randint(97, (1, 5))
    with pytest.raises(capture.RemoteError, match="plain base model"):
        next(capture.iter_paired_traced(NNsight(pm), fac, rows, layers=[0], progress=False))
    with pytest.raises(capture.RemoteError, match="nnsight-wrapped"):
        next(capture.iter_paired_traced(pm.base_model.model, fac, rows, layers=[0], progress=False))
    with pytest.raises(capture.RemoteError, match="LanguageModel"):
        next(capture.iter_paired_traced(NNsight(pm.base_model.model), fac, rows, layers=[0], remote=True,
                                        progress=False))
    bad = {"model.layers.7.self_attn.q_proj": next(iter(fac.values()))}
    with pytest.raises(capture.RemoteError, match="base/adapter mismatch"):
        next(capture.iter_paired_traced(NNsight(pm.base_model.model), bad, rows, layers=[0], progress=False))
    with pytest.raises(capture.RemoteError, match="forward order"):
        next(capture.iter_paired_traced(NNsight(pm.base_model.model), {"lm_head": next(iter(fac.values()))}, rows,
                                        layers=[0], progress=False))
