"""adapterscope.portability on planted cases: per-character NLL of a uniform model, recovery on known sums, token
boundaries shared by two tokenizations, linear maps with a known answer, and the geometry-only transfer between
two tiny llamas that differ exactly by a rotation of the residual stream (it must transfer the function) and
between two unrelated ones (it must not)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapterscope import pipeline
from adapterscope import portability as P


class CharTok:
    """One token per printable ASCII character (ids 3..96 of a 97-token vocabulary), with offsets."""
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
        if isinstance(text, list):  # a batch (finetune.pack_documents)
            return {"input_ids": [self(t)["input_ids"] for t in text]}
        out = {"input_ids": [3 + ord(c) - 32 for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i - 3 + 32) for i in ids if 3 <= i < 97)


TEXTS = ["the quick brown fox", "jumps over the lazy dog", "stoic calm, ad copy!", "an instruction: do it"]


def _llama(seed=0, layers=3):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    m = LlamaForCausalLM(cfg).eval()
    m.config.use_cache = False
    return m


def _rotated(model, Q):
    """The same function in rotated residual coordinates (x' = x Q); exact since every RMSNorm weight is 1."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.model.embed_tokens.weight.copy_(m.model.embed_tokens.weight @ Q)
        for layer in m.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                        layer.mlp.gate_proj, layer.mlp.up_proj):
                lin.weight.copy_(lin.weight @ Q)
            for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
                lin.weight.copy_(Q.T @ lin.weight)
    return m


def _orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed)))
    return q


def test_char_nll_of_a_uniform_model_is_log_vocab_per_token():
    m = _llama()
    with torch.no_grad():
        m.model.embed_tokens.weight.zero_()  # tied head: every logit 0, every token has probability 1/97
    nats, chars = P.char_nll(m, CharTok(), TEXTS, batch_size=3)
    assert np.allclose(nats, [len(t) * math.log(97) for t in TEXTS], rtol=1e-6)
    assert chars.tolist() == [len(t) for t in TEXTS]


def test_char_nll_batched_equals_one_by_one():
    m = _llama(1)
    a, _ = P.char_nll(m, CharTok(), TEXTS, batch_size=4)
    b = np.concatenate([P.char_nll(m, CharTok(), [t], batch_size=1)[0] for t in TEXTS])
    assert np.allclose(a, b, rtol=1e-5)


def test_recovery_on_known_sums_and_its_undefined_cases():
    rng = np.random.default_rng(0)
    base = 10 + rng.random(40)
    direct = base - 2 - 0.1 * rng.random(40)
    transfer = base - 0.5 * (base - direct)
    r = P.recovery(base, transfer, direct, np.full(40, 20.0), n_boot=500)
    assert r["value"] == pytest.approx(0.5) and r["lo"] <= 0.5 <= r["hi"] and r["why"] == ""
    assert r["gain_direct_per_char"] == pytest.approx((base - direct).sum() / 800)
    worse = P.recovery(base, transfer, base + 0.1, np.full(40, 20.0))
    assert math.isnan(worse["value"]) and "does not lower" in worse["why"]
    exact = base - 2.0
    exact[0] = base[0] + 15.0  # one text where the direct adapter is worse: resamples holding it 5+ times go negative
    few_bad = P.recovery(base, base - 1.0, exact, np.full(40, 20.0), n_boot=2000)
    assert few_bad["boot_nonpositive_direct"] > 0 and math.isfinite(few_bad["value"]) and few_bad["why"] == ""
    noisy = P.recovery(base, transfer, base - rng.normal(0.01, 1.0, 40), np.full(40, 20.0))
    assert math.isnan(noisy["value"]) and ("not distinguishable" in noisy["why"] or "does not lower" in noisy["why"])
    with pytest.raises(P.PortabilityError):
        P.recovery([1.0], [1.0], [1.0], [1.0])


def test_boundary_pairs_and_matched_layers():
    a = [(0, 2), (2, 5), (5, 6), (6, 6)]  # the last: a zero-width special token
    b = [(0, 1), (1, 2), (2, 6)]
    assert P.boundary_pairs(a, b) == [(0, 1), (2, 2)]
    assert P.matched_layers(30, 18, [0.0, 0.4, 1.0]) == [(0, 0), (12, 7), (29, 17)]
    with pytest.raises(P.PortabilityError, match="outside"):
        P.matched_layers(30, 18, [1.2])


def test_fit_map_recovers_planted_maps():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(400, 8, generator=g)
    A = torch.randn(8, 12, generator=g)
    f = P.fit_map(X, X @ A + 3.0, "lstsq", ridge=1e-9)
    assert torch.allclose(f["W"], A, atol=1e-4) and f["r2"] > 0.9999
    Q = torch.linalg.qr(torch.randn(12, 12, generator=g))[0][:8]  # 8 -> 12, orthonormal rows
    f = P.fit_map(X, 2.0 * X @ Q, "procrustes")
    assert torch.allclose(f["W"], 2.0 * Q, atol=1e-4) and f["r2"] > 0.9999
    noise = P.fit_map(X, torch.randn(400, 12, generator=g), "lstsq")
    assert noise["r2"] < 0.1
    with pytest.raises(P.PortabilityError, match="method"):
        P.fit_map(X, X, "cca")


def test_fit_edit_recovers_a_planted_low_rank_edit():
    g = torch.Generator().manual_seed(1)
    H = torch.randn(500, 16, generator=g)
    B = torch.randn(16, 2, generator=g) @ torch.randn(2, 16, generator=g)
    e = P.fit_edit(H, (H - H.mean(0)) @ B + 0.5, rank=2, ridge=1e-9)
    assert torch.allclose(e["B"], B, atol=1e-3) and e["r2"] > 0.9999
    assert torch.linalg.matrix_rank(e["B"].double(), tol=1e-6) == 2


def _edit_setup(target):
    """A planted linear 'adapter' on the source at layer 1, fitted from its displacement, carried to ``target``."""
    src = _llama(0)
    tok = CharTok()
    g = torch.Generator().manual_seed(5)
    planted = {"B": 0.3 * torch.randn(32, 2, generator=g) @ torch.randn(2, 32, generator=g) / 32 ** 0.5,
               "mean_h": torch.zeros(32), "mean_d": torch.zeros(32), "rank": 2}
    H, D = [], []
    for t in TEXTS:
        ids = P.text_ids(tok, t)
        h0 = P.layer_outputs(src, ids, [1])[1][0]
        with P.residual_edit(src, 1, planted):
            h1 = P.layer_outputs(src, ids, [1])[1][0]
        H.append(h0)
        D.append(h1 - h0)
    edit = P.fit_edit(torch.cat(H), torch.cat(D), rank=2, ridge=1e-9)
    pairs = P.paired_residuals(target, tok, src, tok, TEXTS, [(1, 1)])[(1, 1)]  # (target, source)
    to_src = P.fit_map(pairs[0], pairs[1], "lstsq", ridge=1e-9)
    to_tgt = P.fit_map(pairs[1], pairs[0], "lstsq", ridge=1e-9)
    moved = P.transport_edit(edit, to_src, to_tgt)
    shifts = []
    for model, e in ((src, planted), (target, moved)):
        ids = P.text_ids(tok, " ".join(TEXTS))
        with torch.no_grad():
            base = model(input_ids=ids).logits
            with P.residual_edit(model, 1, e):
                shifts.append((model(input_ids=ids).logits - base).flatten())
    return edit, to_src, shifts


def test_geometry_transfer_succeeds_between_models_that_differ_by_a_rotation():
    src = _llama(0)
    Q = _orthogonal(32, 7)
    tgt = _rotated(src, Q)
    ids = P.text_ids(CharTok(), TEXTS[0])
    with torch.no_grad():
        assert torch.allclose(src(input_ids=ids).logits, tgt(input_ids=ids).logits, atol=1e-4)  # same function
    edit, to_src, (s_shift, t_shift) = _edit_setup(tgt)
    assert edit["r2"] > 0.999 and to_src["r2"] > 0.999
    assert torch.allclose(to_src["W"], Q.T, atol=1e-3)  # target -> source undoes the rotation
    assert torch.allclose(t_shift, s_shift, atol=1e-3 * float(s_shift.abs().max()) + 1e-5)


def test_geometry_transfer_fails_between_unrelated_models():
    edit, to_src, (s_shift, t_shift) = _edit_setup(_llama(123))
    cos = float(torch.nn.functional.cosine_similarity(s_shift, t_shift, dim=0))
    assert abs(cos) < 0.5, cos


def test_generate_texts_is_seeded():
    m, tok = _llama(2), CharTok()
    a = P.generate_texts(m, tok, ["hello", "stoic"], max_new_tokens=12, seed=3)
    assert a == P.generate_texts(m, tok, ["hello", "stoic"], max_new_tokens=12, seed=3)
    assert a != P.generate_texts(m, tok, ["hello", "stoic"], max_new_tokens=12, seed=4)
    assert all(t.startswith(p) for t, p in zip(a, ["hello", "stoic"]))


def _greedy_one_by_one(m, tok, prompt, n):
    """The reference: greedy decoding of one prompt, no padding, no cache (the whole sequence every step)."""
    ids = [P.start_id(tok)] + tok(prompt)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(m(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    return prompt + tok.decode(new)


def test_batched_greedy_generation_equals_one_prompt_at_a_time():
    """Left padding, position ids and the KV cache change nothing: prompts of different lengths, batched, give the
    continuations each gives alone without a cache."""
    m, tok = _llama(4), CharTok()
    prompts = ["a", "stoic calm", "the quick brown fox jumps", "ad"]
    want = [_greedy_one_by_one(m, tok, p, 10) for p in prompts]
    assert P.generate_texts(m, tok, prompts, 10, seed=0, temperature=0.0, batch_size=4) == want
    assert P.generate_texts(m, tok, prompts, 10, seed=0, temperature=0.0, batch_size=3) == want


def test_batched_sampling_stops_rows_at_their_end_token():
    m, tok = _llama(5), CharTok()
    with torch.no_grad():
        m.lm_head.weight[tok.eos_token_id] += 2.0  # an end token likely enough to end some rows early
    out = P.generate_texts(m, tok, ["x", "yy", "zzz", "w"] * 4, 40, seed=1, batch_size=16)
    lens = [len(t) for t in out]
    assert min(lens) < max(lens)  # rows ended at different steps, each at its own end token
    assert out == P.generate_texts(m, tok, ["x", "yy", "zzz", "w"] * 4, 40, seed=1, batch_size=16)


def test_displacement_cka_against_its_shuffled_null():
    g = torch.Generator().manual_seed(2)
    Da = torch.randn(300, 10, generator=g)
    related = P.displacement_cka(Da, Da @ torch.randn(10, 14, generator=g) + 0.1 * torch.randn(300, 14, generator=g),
                                 n_perm=99)
    assert related["value"] > 0.6 and related["z"] > 10  # CKA is not invariant to a non-orthogonal map
    assert related["p"] == pytest.approx(0.01)  # no shuffle reaches it: (1 + 0) / (1 + 99)
    unrelated = P.displacement_cka(Da, torch.randn(300, 14, generator=g), n_perm=99)
    assert abs(unrelated["z"]) < 3 and unrelated["p"] > 0.01


def test_paired_displacements_are_zero_for_a_fresh_lora_and_not_after_training():
    from adapterscope import finetune

    tok = CharTok()
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=4, seq_len=16, lr=5e-2, dtype="float32")
    src = finetune.add_lora(_llama(0), cfg)
    tgt = finetune.add_lora(_llama(1, layers=4), cfg)
    d = P.paired_displacements(src, tok, {"fresh": tgt}, tok, TEXTS, [(1, 2)])[(1, 2)]
    n = sum(len(t) for t in TEXTS)
    assert d["source"].shape == (n, 32) and d["fresh"].shape == (n, 32)
    assert float(d["fresh"].abs().max()) == 0.0  # LoRA's B starts at zero: no displacement
    finetune.train(tgt, torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(0)), cfg, progress=False)
    d = P.paired_displacements(src, tok, {"trained": tgt}, tok, TEXTS, [(1, 2)])[(1, 2)]
    assert float(d["trained"].abs().max()) > 0


def test_string_agreement():
    s = P.string_agreement(["abcd", "abcd", ""], ["abcd", "wxyz", "x"])
    assert s.tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(P.PortabilityError):
        P.string_agreement(["a"], [])


def test_run_case_end_to_end_on_tiny_models():
    """The whole case on two tiny llamas of different depth (3 vs 4 layers): every measure present and well
    formed (the numbers of random models mean nothing; the planted tests above check the measures)."""
    from adapterscope import finetune

    tok = CharTok()
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=2, seq_len=16, lr=1e-2, dtype="float32")
    src = finetune.add_lora(_llama(0), cfg)
    finetune.train(src, torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(0)), cfg,
                   progress=False)
    tgt = _llama(1, layers=4)
    before = {k: v.clone() for k, v in tgt.state_dict().items()}
    docs = [t * 3 for t in TEXTS] * 2
    cc = P.CaseConfig(eval_texts=4, eval_chars=40, transfer_prompts=4, prompt_tokens=3, transfer_new_tokens=20,
                      edit_rank=2, depths=(0.5, 1.0), agree_prompts=2, agree_tokens=6, n_boot=50, n_perm=20)
    out = P.run_case(src, tok, tgt, tok, docs, docs, cfg, cc, progress=False, log=lambda m: None)
    assert all(torch.equal(v, tgt.state_dict()[k]) for k, v in before.items())  # the target base is untouched
    assert set(out["per_char_nll"]) == {"target_base", "direct", "distilled", "geometry", "source_base", "source_ft"}
    assert all(math.isfinite(v) for v in out["per_char_nll"].values())
    for r in out["recovery"].values():
        assert math.isfinite(r["value"]) or r["why"]
    assert [(g["source_layer"], g["target_layer"]) for g in out["geometry"]] == [(1, 2), (2, 3)]
    assert all(0 <= g["distilled"]["p"] <= 1 for g in out["geometry"])
    assert set(out["agreement_with_source"]) == {"target_base", "direct", "distilled", "geometry"}
    assert out["edit"]["source_layer"] == 2 and out["edit"]["target_layer"] == 2  # round(0.75 * 2), round(0.75 * 3)
    assert len(out["chars"]) == out["n_eval_texts"] and set(out["nats"]) == set(out["per_char_nll"])
    for fn in (P.pooled_recovery([out], "distilled", n_boot=20), P.geometry_excess([out]),
               P.shift_correlation([out], n_perm=20, n_boot=20)):  # the pooled statistics take run_case's output
        assert math.isfinite(fn["value"]) or fn["reason"]


def _case(rec_target, n=40, noise=0.0, seed=0):
    """A run_case-shaped result whose transfer recovers ``rec_target`` of a direct gain of 1 nat per text."""
    rng = np.random.default_rng(seed)
    b = 50 + rng.normal(0, 1, n)
    gain = 1 + rng.normal(0, noise, n)
    d = b - gain
    t = b - rec_target * gain + rng.normal(0, noise, n)
    r = P.recovery(b, t, d, np.full(n, 100.0), n_boot=200)
    return {"nats": {"target_base": b, "direct": d, "distilled": t}, "recovery": {"distilled": r},
            "chars": np.full(n, 100.0)}


def test_pooled_recovery_is_the_mean_of_case_recoveries_with_a_within_case_bootstrap():
    r = P.pooled_recovery([_case(0.5), _case(1.0)], "distilled", n_boot=300)
    assert r["value"] == pytest.approx(0.75) and r["n"] == 2
    assert r["ci_low"] == pytest.approx(0.75) and r["ci_high"] == pytest.approx(0.75)  # no noise: every resample
    noisy = P.pooled_recovery([_case(0.5, noise=0.3, seed=1), _case(0.9, noise=0.3, seed=2)], "distilled", n_boot=500)
    assert noisy["ci_low"] < noisy["value"] < noisy["ci_high"] and 0.5 < noisy["value"] < 0.9
    assert noisy["ci_high"] - noisy["ci_low"] < 0.4


def test_pooled_recovery_skips_undefined_cases_and_says_so():
    bad = _case(0.5)
    bad["nats"]["direct"] = bad["nats"]["target_base"] + 1  # the direct adapter makes things worse
    bad["recovery"]["distilled"] = P.recovery(bad["nats"]["target_base"], bad["nats"]["distilled"],
                                              bad["nats"]["direct"], bad["chars"])
    r = P.pooled_recovery([_case(0.5), bad], "distilled", n_boot=100)
    assert r["value"] == pytest.approx(0.5) and r["n"] == 1 and r["n_undefined"] == 1 and "does not lower" in r["reason"]
    none = P.pooled_recovery([bad], "distilled", n_boot=100)
    assert math.isnan(none["value"]) and "does not lower" in none["reason"]
    assert "no portability case" in P.pooled_recovery([], "distilled")["reason"]


def _geo(values, null_mean, rng, n_perm=199):
    return {"geometry": [{"distilled": {"value": v, "null": list(rng.normal(null_mean, 0.02, n_perm))}}
                         for v in values]}


def test_geometry_excess_finds_a_planted_excess_and_not_a_planted_null():
    rng = np.random.default_rng(0)
    hit = P.geometry_excess([_geo([0.4, 0.5], 0.1, rng), _geo([0.45], 0.1, rng)])
    assert hit["value"] == pytest.approx(0.35, abs=0.01) and hit["p_value"] == pytest.approx(1 / 200) and hit["n"] == 3
    null = P.geometry_excess([_geo(list(rng.normal(0.1, 0.02, 4)), 0.1, rng) for _ in range(3)])
    assert abs(null["value"]) < 0.03 and null["p_value"] > 0.05
    assert math.isnan(P.geometry_excess([])["value"])


def test_shift_correlation_follows_the_texts_the_source_moves():
    rng = np.random.default_rng(0)

    def case(follow):
        n = 30
        src_gain = rng.gamma(2, 0.5, n)
        tgt_gain = src_gain if follow else rng.permutation(src_gain)
        b = np.full(n, 100.0)
        return {"chars": np.full(n, 50.0), "nats": {"source_base": b, "source_ft": b - src_gain, "target_base": b,
                                                    "distilled": b - tgt_gain}}

    same = P.shift_correlation([case(True), case(True)], n_perm=999, n_boot=200)
    assert same["value"] == pytest.approx(1.0) and same["p_value"] < 0.01 and same["n"] == 60
    rand = P.shift_correlation([case(False), case(False)], n_perm=999, n_boot=200)
    assert abs(rand["value"]) < 0.4 and rand["ci_low"] < 0 < rand["ci_high"]


def test_case_specs_and_tables():
    specs = P.case_specs([["smollm2-135m", "gemma3-270m"]], ["x", "y"], [0], ["smollm2-135m"], ["x", "y", "z"])
    assert [s["case"] for s in specs] == ["smollm2-135m to gemma3-270m, x, s0", "smollm2-135m to gemma3-270m, y, s0"]
    assert specs[0]["label"] == "x (smollm2 to gemma3)"
    two = P.case_specs([["smollm2-135m", "gemma3-270m"], ["gemma3-270m", "smollm2-135m"]], ["x"], [0, 1])
    assert [s["case"] for s in two] == ["smollm2-135m to gemma3-270m, x, s0", "smollm2-135m to gemma3-270m, x, s1",
                                        "gemma3-270m to smollm2-135m, x, s0", "gemma3-270m to smollm2-135m, x, s1"]
    assert two[1]["label"] == "x (smollm2 to gemma3) s1"
    # the block's refusals (a source outside the grid, a pair of one model, an unknown target, ...) are the
    # pipeline's, checked once where profiles are: tests/unit/test_pipeline.py (check_grid, check_summary_params)
    assert P.SOURCE_LAYER_CONTROL == pipeline.MAIN_LAYER_CONTROL
    assert P.case_table([]).empty and list(P.case_table([]).columns)[:2] == ["case", "label"]
    cka = {"value": 0.3, "null_mean": 0.1, "z": 4.0, "p": 0.01, "null": [0.1]}
    case = {**specs[0], "transfer_chars": 100, "wall_s": 1.0,
            "per_char_nll": {k: 1.0 for k in ("target_base", "direct", "distilled", "geometry", "source_base",
                                              "source_ft")},
            "recovery": {m: {"value": 0.5, "lo": 0.4, "hi": 0.6} for m in ("distilled", "geometry")},
            "agreement_with_source": {k: 0.5 for k in ("target_base", "direct", "distilled", "geometry")},
            "edit": {"fit_r2": 0.9, "map_r2_to_target": 0.8},
            "geometry": [{"depth": 0.5, "source_layer": 1, "target_layer": 2, "direct": cka, "distilled": cka,
                          "direct_vs_distilled": cka}]}
    t = P.case_table([case])
    assert t.loc[0, "rec_distilled_lo"] == 0.4 and t.loc[0, "agree_geometry"] == 0.5 and not t.isna().any().any()
    g = P.geometry_table([case])
    assert list(g.comparison) == ["source vs direct", "source vs distilled", "direct vs distilled"]


def test_a_reused_ceiling_equals_the_one_the_case_would_train(monkeypatch):
    """run_case with ``direct`` given (the target's own grid adapter) trains only the distilled LoRA, and gives the
    same numbers as a case that trains the ceiling itself when that adapter was trained by the same protocol."""
    import copy

    from adapterscope import finetune

    tok = CharTok()
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=2, seq_len=16, lr=1e-2, dtype="float32",
                                  seed=3)
    src = finetune.add_lora(_llama(0), cfg)
    finetune.train(src, torch.randint(3, 97, (8, 16), generator=torch.Generator().manual_seed(0)), cfg,
                   progress=False)
    tgt = _llama(1, layers=4)
    docs = [t * 3 for t in TEXTS] * 2
    cc = P.CaseConfig(eval_texts=4, eval_chars=40, transfer_prompts=4, prompt_tokens=3, transfer_new_tokens=20,
                      edit_rank=2, depths=(0.5, 1.0), agree_prompts=2, agree_tokens=6, n_boot=50, n_perm=20)
    trained = P.run_case(src, tok, tgt, tok, docs, docs, cfg, cc, progress=False, log=lambda m: None)
    own = finetune.add_lora(copy.deepcopy(tgt), cfg)  # what 01_finetune on the target would have made
    finetune.train(own, finetune.pack_documents(tok, docs, cfg.seq_len), cfg, progress=False)
    calls = []
    real_train = finetune.train
    monkeypatch.setattr(finetune, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    reused = P.run_case(src, tok, tgt, tok, docs, docs, cfg, cc, progress=False, log=lambda m: None,
                        direct=(own, {"rows": 0, "final_loss": 0.0, "compute_dtype": "float32", "reused_run": "t"}))
    assert len(calls) == 1  # the distilled LoRA only
    assert reused["adapters"]["direct"]["reused_run"] == "t" and trained["adapters"]["direct"]["reused_run"] == ""
    assert reused["nats"]["direct"] == pytest.approx(trained["nats"]["direct"], rel=1e-5)
    assert reused["recovery"]["distilled"]["value"] == pytest.approx(trained["recovery"]["distilled"]["value"],
                                                                     rel=1e-4)
    assert set(reused["phase_s"]) == {"generate_transfer", "train_distilled", "fit_geometry_edit", "score_nll",
                                      "displacement_cka", "greedy_agreement"}
    assert "train_direct" in trained["phase_s"]


def test_target_own_run_is_reused_only_with_the_same_protocol(monkeypatch):
    from adapterscope import results

    proto = {"corpus": "y", "rank": 16, "alpha": 32.0, "targets": ["q_proj"], "steps": 50, "lr": 2e-4,
             "batch_size": 4, "seq_len": 64, "seed": 0, "dtype": "auto", "layer_control": "none",
             "heldout_frac": 0.1}
    src = {"provenance": {"params": {**proto, "model": "a"}, "inputs": {"corpus": "d1"}}}
    recs = {}
    monkeypatch.setattr(results, "load", lambda nb, rid: recs[rid] if rid in recs else (_ for _ in ()).throw(
        FileNotFoundError(rid)))
    monkeypatch.setattr(results, "verify_outputs", lambda rec: rec.get("bad", []))
    spec = {"source": "a", "target": "b", "corpus": "y", "seed": 0}
    assert P.target_own_run(spec, src) is None  # no such run: the case trains its ceiling
    recs["b__y__none__s0"] = {"provenance": {"params": {**proto, "model": "b"}, "inputs": {"corpus": "d1"}}}
    assert P.target_own_run(spec, src)[0] == "b__y__none__s0"
    for change in ({"steps": 8}, {"lr": 1e-3}, {"seed": 1}, {"dtype": "float32"}, {"rank": 8}):
        recs["b__y__none__s0"]["provenance"]["params"] = {**proto, "model": "b", **change}
        assert P.target_own_run(spec, src) is None, change
    recs["b__y__none__s0"]["provenance"]["params"] = {**proto, "model": "b"}
    recs["b__y__none__s0"]["provenance"]["inputs"]["corpus"] = "d2"  # the corpus changed since
    assert P.target_own_run(spec, src) is None
    recs["b__y__none__s0"]["provenance"]["inputs"]["corpus"] = "d1"
    recs["b__y__none__s0"]["bad"] = ["adapter differs"]  # a killed or damaged run
    assert P.target_own_run(spec, src) is None


def test_displacement_cka_null_equals_cka_of_each_shuffle():
    from adapterscope.cka import cka_features

    g = torch.Generator().manual_seed(0)
    Da = torch.randn(300, 12, generator=g)
    Db = Da[:, :8] @ torch.randn(8, 9, generator=g) + torch.randn(300, 9, generator=g)
    out = P.displacement_cka(Da, Db, n_perm=30, seed=5)
    g = torch.Generator().manual_seed(5)
    want = [cka_features(Da.double(), Db.double()[torch.randperm(300, generator=g)]) for _ in range(30)]
    np.testing.assert_allclose(out["null"], want, rtol=1e-9)
    assert out["value"] == pytest.approx(cka_features(Da.double(), Db.double()))
