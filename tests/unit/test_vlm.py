"""The VLM wrapper on a tiny random llama + tiny CNN (byte-level tokenizer, so answers are multi-token);
the real EfficientNet-Lite0 + SmolLM2 only in the slow tests."""

import json

import pytest
import torch
from torch import nn

from adapterscope import models, scenes, vlm as V

SIZE = 64


@pytest.fixture(scope="module")
def byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models as tm, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tk = Tokenizer(tm.BPE({c: i for i, c in enumerate(alphabet)}, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  additional_special_tokens=["<|im_start|>", "<image>"])
    return tok


@pytest.fixture
def tiny_vlm(byte_tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(byte_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, initializer_range=0.2)  # large enough that inputs steer outputs
    lm = LlamaForCausalLM(cfg).eval()
    lm.config.use_cache = False
    net = nn.Sequential(nn.Conv2d(3, 8, 5, stride=4, padding=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
    enc = V.ImageEncoder(net, SIZE, channels=8, grid=2).requires_grad_(False)
    proj = V.Projector(8, 32, 4, hidden=16)
    nn.init.normal_(proj.pos_ND, std=0.02)
    return V.VLM(enc, proj, lm, byte_tokenizer, lm_name="tiny").requires_grad_(False).eval()


@pytest.fixture(scope="module")
def exs():
    return scenes.make_examples(10, seed=0, size=SIZE)


def test_batch_shapes_and_image_tokens(tiny_vlm, exs):
    prompts = [e.prompt for e in exs[:3]]
    out = V.forward_batch(tiny_vlm, [e.image for e in exs[:3]], prompts)
    B, T = out["input_ids"].shape
    assert out["logits"].shape == (3, T, len(tiny_vlm.tokenizer))
    assert len(out["hidden_states"]) == 4 and out["hidden_states"][2].shape == (3, T, 32)
    assert out["image_mask"].sum(1).tolist() == [4, 4, 4]
    lens = [len(V.prompt_ids(tiny_vlm, p)) for p in prompts]
    assert out["attention_mask"].sum(1).tolist() == lens and max(lens) == T  # left padding
    assert V.to_pixels([e.image for e in exs[:2]]).shape == (2, 3, SIZE, SIZE)
    with pytest.raises(V.VLMError, match="images must be"):
        V.forward_batch(tiny_vlm, [exs[0].image[:32, :32]], prompts[:1])


def test_left_padding_and_features_match_single_rows(tiny_vlm, exs):
    imgs, prompts = [e.image for e in exs[:4]], [e.prompt for e in exs[:4]]
    together = V.forward_batch(tiny_vlm, imgs, prompts, hidden_states=False)["logits"][:, -1]
    for i in range(4):
        alone = V.forward_batch(tiny_vlm, imgs[i:i + 1], prompts[i:i + 1], hidden_states=False)["logits"][:, -1]
        assert torch.allclose(together[i], alone[0], atol=1e-5)
    feats = V.encode_images(tiny_vlm, imgs)
    b = V.make_batch(tiny_vlm, None, prompts)
    with torch.no_grad():
        via_feats = tiny_vlm(**b, image_features=feats).logits[:, -1]
    assert torch.allclose(via_feats, together, atol=1e-6)


def test_answer_tokens_follow_prefix(tiny_vlm, exs):
    q = exs[0].question
    plain, pre = scenes.canonical_prompt(q), scenes.pressure_variant(q, "prefill", 0)
    dec = tiny_vlm.tokenizer.decode
    assert dec(V.answer_ids(tiny_vlm, plain, "red")) == "red"
    assert dec(V.answer_ids(tiny_vlm, pre, "red")) == " red"
    b = V.make_batch(tiny_vlm, None, [plain], ["red"])
    lab = b["labels"][0]
    assert dec(lab[lab != -100]) == "red<|im_end|>"


def test_answer_loss_matches_full_forward(tiny_vlm, exs):
    b = V.make_batch(tiny_vlm, [e.image for e in exs[:3]], [e.prompt for e in exs[:3]], [e.answer for e in exs[:3]])
    with torch.no_grad():
        logits = tiny_vlm(b["input_ids"], b["pixel_values"], attention_mask=b["attention_mask"]).logits
        ref = nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), b["labels"][:, 1:].reshape(-1))
        assert V.answer_loss(tiny_vlm, b) == pytest.approx(float(ref), rel=1e-5)


def test_score_matches_brute_force(tiny_vlm, exs):
    ex = [exs[1], exs[3], exs[4]]  # shape, position, presence: byte-level answers of 2-8 tokens
    prompts = [e.prompt for e in ex[:2]] + [scenes.pressure_variant(ex[2].question, "prefill", 0)]
    cands = [e.question.candidates for e in ex]
    r = V.score(tiny_vlm, [e.image for e in ex], prompts, cands, [e.answer for e in ex], batch_size=5)
    for i, e in enumerate(ex):
        for c in cands[i]:
            t = V.answer_ids(tiny_vlm, prompts[i], c)
            b = V.make_batch(tiny_vlm, [e.image], [prompts[i]], [c])
            ids = b["input_ids"][:, :-1]  # drop <|im_end|>
            with torch.no_grad():
                lp = torch.log_softmax(tiny_vlm(ids, b["pixel_values"]).logits[0], -1)
            P = ids.shape[1] - len(t)
            want = sum(float(lp[P - 1 + k, t[k]]) for k in range(len(t)))
            assert r["logprobs"][i][c] == pytest.approx(want, abs=1e-4)
            if c == e.answer:
                greedy = all(int(lp[P - 1 + k].argmax()) == t[k] for k in range(len(t)))
                assert r["exact"][i] == greedy
        assert r["pred"][i] == max(r["logprobs"][i], key=r["logprobs"][i].get)


def test_score_hidden_states_at_answer_position(tiny_vlm, exs):
    """A mixed batch (different images; canonical, reworded, pressured and prefilled prompts of different
    lengths): the states returned with the scores equal each row's own forward at its last prompt token."""
    base = exs[:4]
    varied = [scenes.regime_variant(base[0], "prompt", "politeness", 1),
              scenes.regime_variant(base[1], "pressure", "prefill_agree", 2),
              scenes.regime_variant(base[2], "visual", "noise", 3), base[3]]
    prompts = [e.prompt for e in varied]
    r = V.score(tiny_vlm, [e.image for e in varied], prompts, [e.question.candidates for e in varied],
                [e.answer for e in varied], batch_size=3, hidden_states=True)
    hs = r["hidden_states"]
    assert hs.shape == (4, 4, 32) and hs.dtype == torch.float32
    for i, e in enumerate(varied):
        alone = V.forward_batch(tiny_vlm, [e.image], [prompts[i]])
        want = torch.stack([h[0, -1] for h in alone["hidden_states"]])
        assert torch.allclose(hs[i], want, atol=1e-5)
    plain = V.score(tiny_vlm, [e.image for e in varied], prompts, [e.question.candidates for e in varied])
    assert plain["pred"] == r["pred"] and "hidden_states" not in plain
    with pytest.raises(V.VLMError, match="as many"):
        V.score(tiny_vlm, [varied[0].image], prompts[:1], [])


def test_projector_training_lowers_loss_and_touches_only_projector(tiny_vlm):
    exs = scenes.make_examples(8, seed=1, size=SIZE, families=["presence"])
    frozen = {k: v.clone() for k, v in tiny_vlm.state_dict().items() if not k.startswith("projector.")}
    tiny_vlm.freeze_for_projector()
    res = V.train(tiny_vlm, exs, V.TrainConfig(steps=20, batch_size=4, lr=1e-2, warmup_steps=2, dtype="float32"),
                  progress=False)
    assert sum(res.losses[-5:]) / 5 < 0.9 * sum(res.losses[:5]) / 5, res.losses
    assert res.dtype == "float32" and len(res.step_s) == 20
    assert all(torch.equal(v, tiny_vlm.state_dict()[k]) for k, v in frozen.items())
    assert not tiny_vlm.encoder.training  # BatchNorm statistics stay frozen
    short = V.train(tiny_vlm, exs, V.TrainConfig(steps=20, stop_after=3, batch_size=4, lr=1e-2, warmup_steps=2,
                                                 dtype="float32"), progress=False)
    assert len(short.losses) == 3 and short.stopped_early and short.lrs[2] == pytest.approx(res.lrs[2])


def test_projector_save_load_exact(tiny_vlm, tmp_path):
    tiny_vlm.freeze_for_projector()
    with torch.no_grad():
        for p in tiny_vlm.projector.parameters():
            p.add_(torch.randn_like(p))
    out = V.save_projector(tiny_vlm, tmp_path / "proj", {"steps": 3})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dims"] == {"feature_dim": 8, "d_model": 32, "n_tokens": 4, "hidden": 16} and meta["steps"] == 3
    assert meta["lm_identity"]["hidden_size"] == 32 and len(meta["encoder_sha256"]) == 64
    back = V.load_projector(out, tiny_vlm)
    a, b = tiny_vlm.projector.state_dict(), back.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    meta["lm_identity"]["hidden_size"] = 64
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(V.VLMError, match="trained for"):
        V.load_projector(out, tiny_vlm)
    with pytest.raises(V.VLMError, match="has no"):
        V.load_projector(tmp_path, tiny_vlm)


def test_nnsight_layers_and_lora(tiny_vlm, exs, tmp_path):
    from nnsight import NNsight

    from adapterscope import finetune

    layers = models.decoder_layers(tiny_vlm)
    assert layers is tiny_vlm.language_model.model.layers
    b = V.make_batch(tiny_vlm, [e.image for e in exs[:2]], [e.prompt for e in exs[:2]])
    with torch.no_grad():
        ref = tiny_vlm(**b, output_hidden_states=True)
    wrapped = NNsight(tiny_vlm)
    with torch.no_grad(), wrapped.trace(**b):
        h1 = wrapped.language_model.model.layers[1].output.save()
        logits = wrapped.output.logits.save()
    h1 = h1[0] if isinstance(h1, tuple) else h1
    assert torch.allclose(h1, ref.hidden_states[2], atol=1e-6) and torch.allclose(logits, ref.logits, atol=1e-6)
    assert models.site_module(tiny_vlm, 1, "mlp_out") is layers[1].mlp

    pm = V.add_lora(tiny_vlm, rank=2, alpha=4)
    assert models.decoder_layers(pm) is layers
    lora = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert lora and all("language_model" in n and "lora_" in n for n in lora)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        on = pm(**b).logits
        with pm.disable_adapter():
            off = pm(**b).logits
    assert torch.allclose(off, ref.logits, atol=1e-6) and not torch.allclose(on, ref.logits, atol=1e-3)
    finetune.save_adapter(pm, tmp_path / "lora", {"model": "tiny"})
    pm.unload()  # strip the LoRA layers from tiny_vlm again
    back = finetune.load_adapter(tiny_vlm, tmp_path / "lora")
    with torch.no_grad():
        assert torch.allclose(back(**b).logits, on, atol=1e-6)


@pytest.mark.slow
def test_real_encoder_and_smollm2():
    m = V.load_vlm("smollm2-135m")
    assert m.n_image_tokens == 16 and m.tokenizer.convert_ids_to_tokens(m.image_token_id) == "<empty_output>"
    exs = scenes.make_examples(5, seed=0)
    feats = V.encode_images(m, [e.image for e in exs[:2]])
    assert feats.shape == (2, 16, 1280) and float(feats.min()) >= 0 and float(feats.max()) <= 6  # ReLU6 head
    ref = V.default_projector_dir()
    if (ref / V.PROJECTOR_FILE).is_file():  # the committed projector brings its encoder features with it
        feats_kind = V.projector_meta(ref).get("encoder_features", "final")
        if feats_kind != "final":
            with pytest.raises(V.VLMError, match=f"features={feats_kind!r}"):
                V.load_projector(ref, m)
        m = V.load_vlm("smollm2-135m", projector=ref)
        assert m.encoder.features == feats_kind
    r = V.evaluate(m, exs)
    assert r["families"]["all"]["n"] == 5 and 0 <= r["families"]["all"]["accuracy"] <= 1
    assert models.decoder_layers(m) is m.language_model.model.layers and len(models.decoder_layers(m)) == 30


def test_space_to_depth_layout():
    m = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    out = V.space_to_depth(m, 2)
    assert out.shape == (2, 12, 2, 3)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(out[:, c * 4 + dy * 2 + dx], m[:, c, dy::2, dx::2])


@pytest.mark.slow
def test_multiscale_encoder_folds_the_finer_map():
    """Multiscale tokens = the final map's tokens, then the 2x finer block output folded per token: checked
    against an independent hook on every block (planted layout: token (i, j) holds finer cells (2i+dy, 2j+dx))."""
    final, ms = V.load_encoder(128), V.load_encoder(128, "multiscale")
    assert (final.channels, ms.channels, ms.n_tokens, ms.tap) == (1280, 1728, 16, 10)
    seen = {}
    hook = ms.net._blocks[ms.tap].register_forward_hook(lambda m, i, o: seen.__setitem__("mid", o))
    px = V.to_pixels([e.image for e in scenes.make_examples(3, seed=0)])
    with torch.no_grad():
        a, b = final(px), ms(px)
    hook.remove()
    mid = seen["mid"]  # (3, 112, 8, 8)
    assert mid.shape == (3, 112, 8, 8) and b.shape == (3, 16, 1728)
    assert torch.equal(b[..., :1280], a)
    for i, j, c, dy, dx in [(0, 0, 0, 0, 0), (1, 2, 5, 1, 0), (3, 3, 111, 1, 1), (2, 1, 40, 0, 1)]:
        assert b[:, i * 4 + j, 1280 + c * 4 + dy * 2 + dx].tolist() == mid[:, c, 2 * i + dy, 2 * j + dx].tolist()
    with pytest.raises(V.VLMError, match="unknown encoder features"):
        V.load_encoder(128, "middle")


def test_projector_refuses_other_encoder_features(tiny_vlm, tmp_path):
    out = V.save_projector(tiny_vlm, tmp_path / "proj")
    assert json.loads((out / "meta.json").read_text())["encoder_features"] == "final"
    meta = json.loads((out / "meta.json").read_text())
    meta["encoder_features"] = "multiscale"
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(V.VLMError, match="features='multiscale'"):
        V.load_projector(out, tiny_vlm)


def test_committed_projector_matches_05a_vlm_defaults():
    """Every profile that keeps 05a_vlm's projector_* defaults must load the committed projector, not retrain it
    (1500 steps: about 50 min on 2 cores, far beyond the smoke budget)."""
    from adapterscope import params, paths

    p = params.parse_parameters_cell(paths.project_root() / "notebooks" / "05a_vlm.py")
    assert p["projector"] == "reference"
    cfg = V.TrainConfig(steps=p["projector_steps"], batch_size=p["projector_batch"], lr=p["projector_lr"],
                        warmup_steps=V.PROJECTOR_WARMUP, seed=p["projector_seed"], stop_after=p["projector_stop_after"])
    recipe = V.projector_recipe(cfg, p["projector_examples"], p["projector_seed"], p["image_size"], p["lm"],
                                p["encoder_features"], p["projector_families"])
    ok, why = V.reference_matches(V.default_projector_dir(), recipe)
    assert ok, why
    assert not V.reference_matches(V.default_projector_dir(), {**recipe, "steps": recipe["steps"] + 1})[0]
    other = ["colour"] * 2 + list(scenes.FAMILIES)
    assert not V.reference_matches(V.default_projector_dir(), {**recipe, "families": other})[0]
    for prof in ("smoke", "default", "full"):
        over = params.load_profile(paths.project_root() / "notebooks" / "profiles" / f"{prof}.yml")
        assert not any(k.startswith(("projector", "encoder_features", "image_size", "lm"))
                       for k in (over.get("notebooks") or {}).get("05a_vlm", {})), prof
