"""adapterscope.latents on a planted crosscoder: latent 0 reads a direction u that only the adapted stream holds,
and only at one token (TARGET); its adapted decoder writes along token PROMOTED's unembedding row. Its card must
show TARGET as its top adapted-stream context, no base-stream firing, a high specificity, and PROMOTED first
among the tokens its decoder difference promotes. Also: the per-stream codes equal the crosscoder's own encode of
the same-stream pair, the streaming top-k merge equals a brute-force top-k whatever the batch size, the
histograms count every token, and the report escapes what it shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adapterscope import crosscoder, latents

D, F, TARGET, PROMOTED = 32, 8, 50, 42


class _Tok:
    """Token i decodes to ``<i>``; token 7 to a string that must be escaped."""

    def decode(self, ids):
        return "".join('<script>&"\n\x1b' if i == 7 else f"<{i}>" for i in ids)


def _planted(model):
    """(crosscoder, x_NMD, where, rows): 12 rows of 16 tokens; a_base = E[id], a_ft = a_base + 4 u at TARGET."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, 97, (12, 16), generator=g)
    ids[ids == TARGET] = 9
    for r in range(0, 12, 2):
        ids[r, 3 + r % 10] = TARGET  # 6 TARGET tokens, never at position 0
    ids[1, 4] = 7
    u = torch.zeros(D)
    u[-1] = 1.0
    E = torch.randn(97, D, generator=g)
    E[:, -1] = 0  # no token's base activation holds u
    a_b = E[ids[:, 1:]].reshape(-1, D)  # position 0 dropped, as the audit's tokens
    a_f = a_b + 4.0 * u * (ids[:, 1:].reshape(-1, 1) == TARGET)
    x = torch.stack([a_b, a_f], 1)
    where = torch.stack(torch.meshgrid(torch.arange(12), torch.arange(1, 16), indexing="ij"), -1).reshape(-1, 2)
    rows = [{"set": "text", "row": r, "ids": ids[r].tolist()} for r in range(12)]
    cc = crosscoder.Crosscoder(2, D, F, k=2, seed=0)
    W_U = model.get_output_embeddings().weight.detach()
    with torch.no_grad():
        w = torch.randn(F, D, generator=g)
        w[:, -1] = 0
        cc.W_enc_FMD[:] = w[:, None, :] / 2  # shared latents: the same encoder and decoder in both slots
        cc.W_dec_FMD[:] = w[:, None, :] / w.norm(dim=-1)[:, None, None]
        cc.b_enc_F.fill_(-1.0)
        cc.W_enc_FMD[0] = 0
        cc.W_enc_FMD[0, 1] = u  # latent 0 reads u (pre = 4 - 1 at TARGET in the adapted stream, -1 elsewhere)
        cc.W_dec_FMD[0, 0] = 0.01 * W_U[PROMOTED] / W_U[PROMOTED].norm()
        cc.W_dec_FMD[0, 1] = 2.0 * W_U[PROMOTED] / W_U[PROMOTED].norm()
        cc.threshold.fill_(0.05)
    return cc, x, where, rows, ids


def _batches(x, size):
    return lambda: latents.paired_chunks(x, size)


def test_the_planted_latent_card(tiny_llama):
    cc, x, where, rows, ids = _planted(tiny_llama)
    block = latents.latent_cards(cc, _batches(x, 37), where, rows, tiny_llama, _Tok(), k=4, n_per=2)
    json.dumps(block, allow_nan=False)  # JSON-able, every number finite
    assert block["n_tokens"] == len(x) == 12 * 15 and block["n_ft_only_live"] == 1
    c = block["cards"][0]
    assert c["latent"] == 0 and c["selected_by"] == ["r", "shift", "rel_shift"]
    assert c["r"] > 0.99 and c["rel_shift"] == 1.0 and c["shift"] > 0
    assert c["n_fires_base"] == 0 and c["freq_base"] == 0 and c["n_fires_ft"] == 6
    assert c["freq_ft"] == pytest.approx(6 / (12 * 15))
    assert c["contexts"]["base"] == [] and len(c["contexts"]["ft"]) == 4
    for ctx in c["contexts"]["ft"]:  # every kept adapted-stream context is at TARGET, marked
        assert ctx["ids"][ctx["mark"]] == TARGET and ctx["tokens"][ctx["mark"]] == f"<{TARGET}>"
        assert rows[ctx["row"]]["ids"][ctx["pos"]] == TARGET and ctx["value"] == pytest.approx(3.0)
        lo = max(0, ctx["pos"] - latents.BEFORE)
        assert ctx["ids"] == ids[ctx["row"], lo:ctx["pos"] + latents.AFTER + 1].tolist()
    assert c["promoted"][0]["id"] == PROMOTED and c["promoted"][0]["token"] == f"<{PROMOTED}>"
    assert c["decoder_cosine"] == pytest.approx(1.0, abs=1e-5)  # both decoders along W_U[PROMOTED]
    assert c["clamp_effect"] is None and not block["selection"]["clamp_measured"]
    for card in block["cards"]:  # histograms: counts of firing tokens plus the non-firing ones = every token
        h = card["histogram"]
        hi = max(card["max_base"], card["max_ft"])
        assert len(h["edges"]) == latents.N_BINS + 1 and h["edges"][-1] == pytest.approx(hi)
        assert h["edges"][0] == pytest.approx(card["min_active"] if card["min_active"] < hi else 0)
        for s in ("base", "ft"):
            assert sum(h[s]["counts"]) + h[s]["zero"] == block["n_tokens"]
            assert sum(h[s]["counts"]) == card[f"n_fires_{s}"]
    assert sum(c["histogram"]["ft"]["counts"]) == 6 and c["histogram"]["ft"]["counts"][-1] == 6
    shared = [card for card in block["cards"] if card["latent"] != 0]
    assert shared and all(card["r"] == pytest.approx(0.5) and card["shift"] == pytest.approx(0, abs=1e-6)
                          for card in shared)


def test_a_clamp_effect_where_measured_selects_and_is_shown(tiny_llama):
    cc, x, where, rows, _ = _planted(tiny_llama)
    block = latents.latent_cards(cc, _batches(x, 64), where, rows, tiny_llama, _Tok(), n_per=1,
                                 clamp_effect={3: 0.4, 0: 0.1, 99: 5.0})
    got = {c["latent"]: c for c in block["cards"]}
    assert got[0]["selected_by"] == ["r", "shift", "rel_shift"] and got[0]["clamp_effect"] == 0.1
    assert got[3]["selected_by"] == ["clamp"] and got[3]["clamp_effect"] == 0.4
    assert block["selection"]["clamp_measured"] and 99 not in got


def test_stream_codes_are_the_crosscoders_own_code_of_the_same_stream_pair():
    torch.manual_seed(0)
    cc = crosscoder.Crosscoder(2, 16, 40, k=4, seed=1)
    with torch.no_grad():
        cc.scale_M.copy_(torch.tensor([0.7, 1.9]))
        cc.b_enc_F.normal_(0, 0.1)
        cc.threshold.fill_(0.02)
    x = torch.randn(50, 2, 16)
    zb, zf = latents.stream_codes(cc, x)
    for m, z in ((0, zb), (1, zf)):
        ref = cc.encode(torch.stack([x[:, m], x[:, m]], 1))
        torch.testing.assert_close(z, ref, atol=1e-5, rtol=1e-5)
    J = [5, 2, 31]
    zb_J, _ = latents.stream_codes(cc, x, J)
    torch.testing.assert_close(zb_J, zb[:, J])
    assert (zb != 0).any() and (zb == 0).any()
    with torch.no_grad():
        cc.threshold.fill_(-1.0)
    with pytest.raises(ValueError, match="threshold"):
        latents.stream_codes(cc, x)


def test_the_streaming_top_k_and_sums_match_a_brute_force_pass_whatever_the_batch_size():
    g = torch.Generator().manual_seed(3)
    zb = torch.relu(torch.randn(300, 12, generator=g) - 1)
    zf = torch.relu(torch.randn(300, 12, generator=g) - 0.5)
    keys = torch.arange(1000, 1300)
    for size in (1, 7, 300):
        st = latents.LatentStats(12, k=5)
        for i in range(0, 300, size):
            st.update(zb[i:i + size], zf[i:i + size], keys[i:i + size])
        assert st.top_val.shape == (2, 5, 12) and st.n == 300  # O(F k), not O(N)
        for m, z in enumerate((zb, zf)):
            torch.testing.assert_close(st.sum[m], z.double().sum(0))
            assert st.fires[m].tolist() == (z != 0).sum(0).tolist()
            for j in range(12):
                v, i = torch.topk(z[:, j], 5)
                want = [(float(a), int(keys[b])) for a, b in zip(v, i) if a > 0]
                got = st.top(m, j)
                assert [a for a, _ in got] == pytest.approx([a for a, _ in want])
                assert all(float(z[k - 1000, j]) == pytest.approx(a) for a, k in got)


def test_histograms_count_every_token_into_fixed_bins():
    cc = crosscoder.Crosscoder(2, 4, 3, k=1, sparsity="l1", seed=0)
    with torch.no_grad():
        cc.W_enc_FMD.zero_()
        cc.W_enc_FMD[:, 0, 0] = 1.0  # s = 1: (a, a) gives pre = a[0] for every latent
        cc.b_enc_F.zero_()
    x = torch.zeros(10, 2, 4)
    x[:, 0, 0] = torch.tensor([0, 0, 0.1, 0.5, 0.99, 1.0, 2.0, -1, 0.25, 0.75])
    x[:, 1, 0] = 3.0
    h = latents.histograms(cc, latents.paired_chunks(x, 3), [0, 2], hi=[1.0, 4.0], n_bins=4)
    assert h["edges"].shape == (2, 5) and h["edges"][0].tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert h["counts"][0, 0].tolist() == [1, 1, 1, 4] and h["zero"][0, 0] == 3  # >= hi: the last bin
    assert h["counts"][1, 1].tolist() == [0, 0, 0, 10] and h["zero"][1, 1] == 0
    assert (h["counts"].sum(-1) + h["zero"] == 10).all()


def test_select_takes_live_latents_by_each_ranking():
    spec = {"r": np.array([0.99, 0.95, 0.5, 0.2, 1.0, 0.6]), "shift": np.array([0.0, 0.3, 0.5, -0.1, 9.0, 0.01]),
            "rel_shift": np.array([0.0, 0.1, 0.2, -0.3, 1.0, 1.0]),
            "n_fires_base": np.array([0, 3, 5, 5, 0, 0]), "n_fires_ft": np.array([4, 3, 5, 5, 1, 2])}
    assert latents.select(spec, n_per=2) == [(0, ["r"]), (1, ["r", "shift"]), (2, ["shift", "rel_shift"]),
                                             (5, ["rel_shift"])]  # 4 fires once: not live
    # live at one firing; of two latents firing only in the adapted stream, the more frequent comes first
    assert latents.select(spec, n_per=1, min_fires=1) == [(4, ["r", "shift"]), (5, ["rel_shift"])]
    spec["n_fires_ft"][4] = 3
    assert latents.select(spec, n_per=1, min_fires=1) == [(4, ["r", "shift", "rel_shift"])]


def test_the_cards_escape_every_string_and_mark_the_max_token(tiny_llama):
    cc, x, where, rows, _ = _planted(tiny_llama)
    block = latents.latent_cards(cc, _batches(x, 64), where, rows, tiny_llama, _Tok(), n_per=8)
    ctxs = [c for card in block["cards"] for s in ("base", "ft") for c in card["contexts"][s]]
    assert any('<script>&"\n\x1b' in c["tokens"] for c in ctxs)  # stored as decoded, unescaped
    card = block["cards"][0]
    card["promoted"][0]["token"] = "<script>&"
    card["contexts"]["ft"][0]["set"] = "<i>set"
    page = latents.cards_html([{"layer": 1, "depth": 0.5, **block}])
    assert "<script>" not in page and "<i>" not in page and "\x1b" not in page
    assert "&lt;script&gt;&amp;&quot;\u21b5\\x1b" in page and "&#x27;&lt;script&gt;&amp;&#x27;" in page
    assert f"<mark>&lt;{TARGET}&gt;</mark>" in page and page.count("<mark>") == len(ctxs)
    assert page.count("<details class='card'") == len(block["cards"]) and "id='latent-cards'" in page
    lines = latents.cards_lines([{"layer": 1, "depth": 0.5, **block}])
    assert len(lines) == 1 and f"[[<{TARGET}>]]" in lines[0] and "\x1b" not in "".join(lines)  # first of each
    assert "latent 0 (top by relative decoder norm, activation shift, relative activation shift)" in lines[0]
    assert latents.cards_html(None) == "" and latents.cards_lines(None) == []
    assert latents.visible("a\nb\tc\x1bd\u202e") == "a\u21b5b\u2192c\\x1bd\\u202e"
