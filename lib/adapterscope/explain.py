"""What an adapter changed, shown: divergence hotspots, next-token shifts, and the activation-difference lens.

The audit's numbers say *how much* an adapter moved a model; these say *what*:

* **Divergence hotspots** (:class:`HotspotAccumulator`): the positions of the audited text with the largest
  next-token KL(base || adapted), each with its context, the actual next token and the top next tokens and
  probabilities under both models; and, over every position, which next tokens the adapter promotes or
  suppresses most (the mean shift of their probability, adapted minus base).
* **Activation-difference lens** (:func:`difference_lens`, Minder et al. 2025): per layer, the mean of
  ``a_adapted - a_base`` over positions, read through the model's final norm and unembedding (the logit lens):
  the tokens the mean difference promotes and suppresses. Narrow fine-tunes leave readable traces here.

Everything is stored as token ids with their decoded strings, so a report and a notebook read the same data;
strings are shown through ``html.escape`` in the report. Planted tests: a change written along one token's
unembedding row puts that token first in both the hotspot aggregation and the lens
(``tests/unit/test_explain.py``).
"""

from __future__ import annotations

import heapq
from typing import Any, Sequence

import torch

CONTEXT = 12  # tokens of context shown before a hotspot


class HotspotAccumulator:
    """Streams paired logits: keeps the ``k`` positions of largest KL(base || adapted) and the summed
    next-token probability shift over every position (BOS's prediction included, the last position, which
    predicts nothing here, left out)."""

    def __init__(self, k: int = 20, top: int = 5, context: int = CONTEXT):
        self.k, self.top, self.context = k, top, context
        self._heap: list[tuple[float, int, dict]] = []
        self._seq = 0  # tie-breaker: first seen first
        self.shift_V: torch.Tensor | None = None
        self.n = 0

    @torch.no_grad()
    def update(self, logits_base: torch.Tensor, logits_ft: torch.Tensor, input_ids: torch.Tensor,
               set_name: str = "", row_offset: int = 0) -> "HotspotAccumulator":
        for b in range(len(input_ids)):  # a row at a time: the (T, V) probabilities of a batch are large
            self._row(logits_base[b, :-1], logits_ft[b, :-1], input_ids[b].tolist(), set_name, row_offset + b)
        return self

    def _row(self, logits_base_TV, logits_ft_TV, ids: list[int], set_name: str, row: int) -> None:
        lb = torch.log_softmax(logits_base_TV.float(), -1)
        lf = torch.log_softmax(logits_ft_TV.float(), -1)
        pb, pf = lb.exp(), lf.exp()
        kl = (pb * (lb - lf)).sum(-1)  # (T-1,)
        shift = (pf - pb).sum(0).double().cpu()
        self.shift_V = shift if self.shift_V is None else self.shift_V + shift
        self.n += kl.numel()
        for t in torch.topk(kl, min(self.k, kl.numel())).indices.tolist():
            v = float(kl[t])
            if len(self._heap) >= self.k and v <= self._heap[0][0]:
                break  # the rest of this row's positions are smaller still
            hb, hf = torch.topk(pb[t], self.top), torch.topk(pf[t], self.top)
            item = {"kl": v, "set": set_name, "row": row, "pos": t,
                    "context_ids": ids[max(0, t + 1 - self.context):t + 1], "next_id": ids[t + 1],
                    "base_top": list(zip(hb.indices.tolist(), hb.values.tolist())),
                    "ft_top": list(zip(hf.indices.tolist(), hf.values.tolist())),
                    "p_next_base": float(pb[t, ids[t + 1]]), "p_next_ft": float(pf[t, ids[t + 1]])}
            self._seq += 1
            entry = (v, -self._seq, item)
            if len(self._heap) < self.k:
                heapq.heappush(self._heap, entry)
            else:
                heapq.heapreplace(self._heap, entry)

    def hotspots(self) -> list[dict[str, Any]]:
        """The kept positions, largest KL first."""
        return [e[2] for e in sorted(self._heap, key=lambda e: (-e[0], -e[1]))]

    def token_shifts(self, n: int = 15) -> dict[str, list[tuple[int, float]]]:
        """The ``n`` next tokens whose probability the adapter raises (``promoted``) and lowers (``suppressed``)
        most, as (token id, mean probability shift per position)."""
        if self.shift_V is None or self.n == 0:
            return {"promoted": [], "suppressed": []}
        mean = self.shift_V / self.n
        up, down = torch.topk(mean, n), torch.topk(-mean, n)
        return {"promoted": list(zip(up.indices.tolist(), up.values.tolist())),
                "suppressed": list(zip(down.indices.tolist(), (-down.values).tolist()))}


def final_norm_and_head(model):
    """(final norm module, unembedding module) of a (possibly peft-wrapped) causal LM."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = m.get_output_embeddings()
    inner = getattr(m, "model", m)
    for path in ("norm", "language_model.norm", "final_layernorm", "ln_f"):
        obj = inner
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj, head
        except AttributeError:
            continue
    raise ValueError(f"cannot find the final norm of {type(m).__name__}")


@torch.no_grad()
def difference_lens(model, delta_D: torch.Tensor, n: int = 10) -> dict[str, list[tuple[int, float]]]:
    """The logit lens of one mean activation difference: ``unembed(final_norm(delta))``; the ``n`` tokens it
    promotes and suppresses most, as (token id, logit). The norm makes the reading independent of the
    difference's scale; the logits are centred (mean over the vocabulary removed)."""
    norm, head = final_norm_and_head(model)
    p = next(head.parameters())
    x = norm(delta_D.to(p.device, p.dtype)[None, None, :])
    logits = head(x)[0, 0].float()
    logits = logits - logits.mean()
    up, down = torch.topk(logits, n), torch.topk(-logits, n)
    return {"promoted": list(zip(up.indices.tolist(), up.values.tolist())),
            "suppressed": list(zip(down.indices.tolist(), (-down.values).tolist()))}


def decode_pairs(tok, pairs: Sequence[tuple[int, float]]) -> list[dict[str, Any]]:
    """(token id, number) pairs with each token's decoded string."""
    return [{"id": int(i), "token": tok.decode([int(i)]), "value": float(v)} for i, v in pairs]


def decode_hotspot(tok, h: dict[str, Any]) -> dict[str, Any]:
    """A hotspot with its context, next token and top tokens decoded."""
    return {**h, "context": tok.decode(h["context_ids"]), "next": tok.decode([h["next_id"]]),
            "base_top": decode_pairs(tok, h["base_top"]), "ft_top": decode_pairs(tok, h["ft_top"])}


def explanations(model, tok, hot: HotspotAccumulator, delta_sums: dict[int, torch.Tensor],
                 delta_counts: dict[int, int], lens_layers: Sequence[int], n: int = 10) -> dict[str, Any]:
    """The audit's ``explain`` block: decoded hotspots, token shifts, and the difference lens at
    ``lens_layers`` (from per-layer sums of ``a_adapted - a_base`` and their token counts)."""
    shifts = hot.token_shifts(n)
    lens = []
    for layer in lens_layers:
        if delta_counts.get(layer):
            mean = delta_sums[layer] / delta_counts[layer]
            r = difference_lens(model, mean, n)
            lens.append({"layer": int(layer), "norm": float(mean.norm()),
                         "promoted": decode_pairs(tok, r["promoted"]),
                         "suppressed": decode_pairs(tok, r["suppressed"])})
    return {"hotspots": [decode_hotspot(tok, h) for h in hot.hotspots()],
            "promoted": decode_pairs(tok, shifts["promoted"]), "suppressed": decode_pairs(tok, shifts["suppressed"]),
            "n_positions": hot.n, "lens": lens}


def top_tokens_line(entries: Sequence[dict[str, Any]], k: int = 6) -> str:
    """``'tok' (+0.012), ...`` for a terminal line (tokens shown with repr, so control characters stay inert)."""
    return ", ".join(f"{e['token']!r} ({e['value']:+.3g})" for e in entries[:k]) or "none"


def _tokens_cell(entries: Sequence[dict[str, Any]], fmt: str = "{:+.3g}") -> str:
    import html

    return " ".join(f"<span class='tok'>{html.escape(repr(e['token']))}</span>&nbsp;{fmt.format(e['value'])}"
                    for e in entries)


def explain_html(block: dict[str, Any] | None) -> str:
    """The report's "What changed" section: the token shifts, the difference lens per layer and the hotspots
    with their contexts (every string escaped; tokens shown with repr, so whitespace and control characters
    are visible and inert)."""
    import html

    if not block:
        return ""
    e = html.escape
    lens = "".join(f"<tr><td>{x['layer']}</td><td>{_tokens_cell(x['promoted'], '{:+.2f}')}</td>"
                   f"<td>{_tokens_cell(x['suppressed'], '{:+.2f}')}</td></tr>" for x in block["lens"])
    hots = []
    for h in block["hotspots"]:
        tops = "<br>".join(f"{name}: " + ", ".join(f"{e(repr(t['token']))} {t['value']:.2f}" for t in h[key])
                           for name, key in (("base", "base_top"), ("adapted", "ft_top")))
        hots.append(f"<tr><td>{h['kl']:.3g}</td><td>{e(h['set'])} row {h['row']}, pos {h['pos']}</td>"
                    f"<td class='ctx'>{e(h['context'])}<mark>{e(h['next'])}</mark></td>"
                    f"<td>{h['p_next_base']:.2f} &rarr; {h['p_next_ft']:.2f}</td><td class='tops'>{tops}</td></tr>")
    return (f"<h2 id='what-changed'>What changed</h2>"
            f"<p>Over {block['n_positions']} positions, the next tokens whose probability the adapter raises and "
            f"lowers most (mean shift per position, adapted minus base):</p>"
            f"<table><tr><th>promoted</th><td>{_tokens_cell(block['promoted'])}</td></tr>"
            f"<tr><th>suppressed</th><td>{_tokens_cell(block['suppressed'])}</td></tr></table>"
            f"<h3>Activation-difference lens</h3><p>The mean of a<sub>adapted</sub> - a<sub>base</sub> over "
            f"positions at a layer, read through the final norm and unembedding (centred logits): the tokens the "
            f"adapter's average push at that layer points to.</p><table><tr><th>layer</th><th>promoted</th>"
            f"<th>suppressed</th></tr>{lens}</table>"
            f"<h3>Divergence hotspots</h3><p>The positions with the largest KL(base||adapted): the context up to "
            f"the position (the actual next token marked), its probability under both models, and each model's "
            f"top next tokens.</p><table><tr><th>KL</th><th>where</th><th>context</th><th>p(next)</th>"
            f"<th>top next tokens</th></tr>{''.join(hots)}</table>")


def explain_lines(block: dict[str, Any] | None) -> list[str]:
    """Terminal lines: the tokens promoted and suppressed, and the lens at the last layer read."""
    if not block:
        return []
    out = [f"what changed: next tokens promoted most: {top_tokens_line(block['promoted'])}",
           f"              suppressed most: {top_tokens_line(block['suppressed'])}"]
    if block["lens"]:
        x = block["lens"][-1]
        out.append(f"              difference lens at layer {x['layer']}: promotes {top_tokens_line(x['promoted'])}")
    return out
