"""adapterscope.explain on a planted change: a tiny llama whose "adapted" layer 1 adds a push along token 42's
unembedding row; the hotspot aggregation and the activation-difference lens must both name token 42 first,
the hotspots must be the largest-KL positions, and the report section must escape what it shows."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from adapterscope import capture, explain
from tests.conftest import plant_switchable

TARGET = 42


class _Push(nn.Module):
    def __init__(self, layer, u, c):
        super().__init__()
        self.layer, self.c, self.enabled = layer, c, True
        self.register_buffer("u", u)

    def forward(self, *args, **kwargs):
        h = self.layer(*args, **kwargs)
        h = h[0] if isinstance(h, tuple) else h
        return h + self.c * self.u if self.enabled else h


@pytest.fixture
def planted(tiny_llama):
    """(model with disable_adapter(), rows): the adapted model adds c * W_U[42] / ||W_U[42]|| at layer 1."""
    W = tiny_llama.get_output_embeddings().weight.detach()
    u = W[TARGET] / W[TARGET].norm()
    plant_switchable(tiny_llama, 1, _Push(tiny_llama.model.layers[1], u, c=6.0))
    rows = torch.randint(3, 97, (6, 16), generator=torch.Generator().manual_seed(0))
    return tiny_llama, rows


class _Tok:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_hotspots_and_token_shifts_name_the_planted_token(planted):
    model, rows = planted
    hot = explain.HotspotAccumulator(k=5, top=3, context=4)
    kls = []
    for i, b in enumerate(capture.iter_paired(model, rows, [1], batch_size=3, progress=False)):
        hot.update(b.logits_base, b.logits_ft, b.input_ids, "text", row_offset=3 * i)
        lb = torch.log_softmax(b.logits_base[:, :-1].float(), -1)
        lf = torch.log_softmax(b.logits_ft[:, :-1].float(), -1)
        kls.append((lb.exp() * (lb - lf)).sum(-1))
    kl = torch.cat(kls)
    shifts = hot.token_shifts(3)
    assert shifts["promoted"][0][0] == TARGET and shifts["promoted"][0][1] > 0
    assert all(v < 0 for _, v in shifts["suppressed"])
    hs = hot.hotspots()
    assert [round(h["kl"], 5) for h in hs] == [round(float(v), 5) for v in torch.topk(kl.flatten(), 5).values]
    h = hs[0]
    r, t = h["row"], h["pos"]
    assert h["kl"] == pytest.approx(float(kl[r, t]), rel=1e-5) and h["next_id"] == int(rows[r, t + 1])
    assert h["context_ids"] == rows[r, max(0, t - 3):t + 1].tolist()
    assert TARGET in [i for i, _ in h["ft_top"]]  # the planted push shows at the worst position
    assert hot.n == 6 * 15


def test_the_difference_lens_reads_the_planted_push(planted):
    model, rows = planted
    d = sum((b.ft["blocks.1.hook_resid_post"] - b.base["blocks.1.hook_resid_post"])[:, 1:].reshape(-1, 32).sum(0)
            for b in capture.iter_paired(model, rows, [1], batch_size=6, progress=False))
    lens = explain.difference_lens(model, d / (6 * 15), n=3)
    assert lens["promoted"][0][0] == TARGET
    assert lens["suppressed"][0][1] < 0 < lens["promoted"][0][1]
    block = explain.explanations(model, _Tok(), explain.HotspotAccumulator(), {1: d}, {1: 90}, [1, 2])
    assert [x["layer"] for x in block["lens"]] == [1]  # a layer without sums is left out
    assert block["lens"][0]["promoted"][0] == {"id": TARGET, "token": f"<{TARGET}>",
                                               "value": pytest.approx(lens["promoted"][0][1])}


def test_the_report_section_escapes_tokens_and_contexts():
    block = {"n_positions": 10,
             "promoted": [{"id": 1, "token": "<script>alert(1)</script>", "value": 0.5}],
             "suppressed": [{"id": 2, "token": "\x1b[2J", "value": -0.5}],
             "lens": [{"layer": 3, "norm": 1.0, "promoted": [{"id": 1, "token": "<b>", "value": 2.0}],
                       "suppressed": [{"id": 2, "token": "&amp;", "value": -1.0}]}],
             "hotspots": [{"kl": 1.5, "set": "text<i>", "row": 0, "pos": 4, "context": "a <img src=x onerror=y>",
                           "next": "</td>", "p_next_base": 0.1, "p_next_ft": 0.9,
                           "base_top": [{"id": 1, "token": "<", "value": 0.3}],
                           "ft_top": [{"id": 2, "token": ">", "value": 0.6}]}]}
    page = explain.explain_html(block)
    for raw in ("<script>", "<img", "<mark></td>", "<b>", "<i>"):
        assert raw not in page
    assert "&lt;script&gt;" in page and "<mark>&lt;/td&gt;</mark>" in page and "\x1b" not in page and "&amp;amp;" in page
    assert explain.explain_html(None) == "" and explain.explain_lines(None) == []
    lines = explain.explain_lines(block)
    assert len(lines) == 3 and "\x1b" not in "".join(lines) and "layer 3" in lines[2]
