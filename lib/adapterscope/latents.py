"""Latent cards: what a crosscoder latent reads and writes, in the base and in the adapted stream.

A model-diffing crosscoder (``crosscoder``; index 0 base, 1 adapted) trained on paired activations
(a_base, a_ft) at one layer has latents shared by both models and latents specific to one of them. A card shows
one latent the way crosscoder and SAE dashboards do: where it fires in each stream (its top-activating contexts,
the max token marked), how often, with what activations (a histogram), and what it writes (the tokens its
decoder *difference* promotes and suppresses through the final norm and unembedding).

Definitions (``cc`` a trained crosscoder with inference threshold theta; ``s_m`` its per-model input scaling,
``n_j = sum_m ||W_dec[j, m]||``; t runs over the audited tokens):

* **per-stream activation** f^m_j(t): the latent's code when the crosscoder encodes the *same-stream pair*
  (a_m(t), a_m(t)), i.e. ``pre_j = sum_m' s_m' a_m(t) . W_enc[j, m'] + b_enc[j]``, kept where
  ``relu(pre_j) * n_j > theta`` (the crosscoder's own inference rule, ``Crosscoder.encode``), else 0. The
  encoder reads both slots at once, so the joint code ``encode(a_base, a_ft)`` mixes the streams; feeding one
  stream into both slots asks what the latent reads if both models had produced that stream's activation, and
  the encoder is the same for both streams, so f^ft - f^base is the difference of the streams alone.
* **firing frequency** in stream m: the share of tokens with f^m_j(t) != 0.
* **activation shift** Delta_j = mean_t f^ft_j(t) - mean_t f^base_j(t) (crosscoder units, every token counted,
  non-firing ones as 0), and the **relative shift** (S^ft - S^base) / (S^ft + S^base) in [-1, 1] with S^m the
  summed activation (0 for a latent that never fires): +1 fires only in the adapted stream.
* **relative decoder norm** r_j = ||W_dec[j, ft]|| / (||W_dec[j, base]|| + ||W_dec[j, ft]||)
  (``crosscoder.relative_decoder_norms``; > 0.9 is "fine-tune only") and the **decoder cosine**
  cos(W_dec[j, base], W_dec[j, ft]) (``crosscoder.classify_latents``).
* **decoder difference** delta_j = W_dec[j, ft] / s_ft - W_dec[j, base] / s_base: what the latent writes in the
  adapted model's reconstruction minus the base model's, in each model's raw activation units; read through the
  final norm and unembedding (``explain.difference_lens``: centred logits) it gives the promoted and suppressed
  tokens.
* **clamp effect** (where measured): a number per latent supplied by the caller (e.g. the share of
  KL(base || adapted) removed by clamping it back to base, ``interventions``); the audit does not clamp single
  latents, so its cards carry ``null``.

Fine-tune specificity ranks latents up to four ways, each taking ``n_per`` latents among those that fire at
least ``min_fires`` times in either stream: by r_j (``"r"``); by Delta_j (``"shift"``: the latents whose
activation the adapter raises most over the text, frequent ones first); by the relative shift (``"rel_shift"``,
ties broken by the adapted-stream firing count, among latents firing ``min_fires`` times in the adapted stream:
the latents that fire in the adapted stream and not in the base, however rarely, e.g. on a trigger word); and by
the clamp effect where given (``"clamp"``). The cards are their union, each naming what selected it.

Memory: one streaming pass keeps per latent and stream a float64 sum, a firing count, the minimum firing and the
maximum activation and the top-k (activation, token key) pairs, merged batch by batch with ``torch.topk``
(O(F k), whatever the token count); a second pass over the selected latents only fills fixed histogram bins
(from the latent's smallest to its largest firing activation over both streams, known from the first pass).
Every function takes a ``device``; nothing is kept per token except the caller's (row, position) table that
turns a key into a context.

Everything is stored as numbers, token ids and their decoded strings (JSON-able), so the report and notebooks
read the same data; :func:`cards_html` escapes every string it shows. Planted tests: ``tests/unit/test_latents.py``.
"""

from __future__ import annotations

import html
import unicodedata
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch

from . import crosscoder as _cc
from . import explain

BEFORE, AFTER = 12, 4  # tokens of context shown before and after the max token
TOP_K = 8              # top-activating contexts kept per latent and stream
N_BINS = 20            # histogram bins over the firing activations
N_PER = 4              # latents per specificity ranking
RANKINGS = {"r": "relative decoder norm", "shift": "activation shift", "rel_shift": "relative activation shift",
            "clamp": "clamp effect"}
STREAMS = ("base", "ft")


# ------------------------------------------------------------------------------------------ codes
@torch.no_grad()
def stream_codes(cc: _cc.Crosscoder, x_NMD: torch.Tensor, latents: Sequence[int] | torch.Tensor | None = None,
                 base: int = 0, ft: int = 1, device: str | torch.device | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(f^base, f^ft): the per-stream codes (N, J) of the tokens ``x_NMD`` (raw paired activations, (N, M, D))
    for the latents ``latents`` (default all F), as defined in the module docstring: the code of the pair
    (a_m, a_m) under the crosscoder's inference rule. Equal to ``cc.encode`` of the stacked same-stream pair,
    computed with one (N, D) x (D, J) product per stream. Returned on ``device`` (default the crosscoder's)."""
    dev = cc.device if device is None else torch.device(device)
    J = (torch.arange(cc.F, device=cc.device) if latents is None
         else torch.as_tensor(latents, dtype=torch.long).reshape(-1).to(cc.device))
    W = cc.W_enc_FMD[J].float()                                   # (J, M, D)
    w_JD = (W * cc.scale_M.float()[None, :, None]).sum(1)         # s_m folded in: (a, a) . W_enc = a . sum_m s_m W_m
    b_J = cc.b_enc_F[J].float()
    n_J = cc.decoder_norm_F()[J].float()
    if cc.sparsity != "l1" and float(cc.threshold) < 0:
        raise ValueError("the crosscoder's inference threshold is not set (calibrate_threshold)")
    out = []
    for m in (base, ft):
        a = x_NMD[:, m].to(cc.device, torch.float32)
        pre = torch.addmm(b_J, a, w_JD.t())
        if cc.sparsity == "l1":
            z = torch.relu(pre)
        else:
            z = torch.where(torch.relu(pre) * n_J > float(cc.threshold), pre, torch.zeros((), device=pre.device))
        out.append(z.to(dev))
    return out[0], out[1]


def paired_chunks(x_NMD: torch.Tensor, size: int = 2048, first_key: int = 0
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(chunk, keys) over consecutive ``size``-row slices of an in-memory (N, M, D) tensor; a token's key is its
    index in the tensor plus ``first_key``."""
    for i in range(0, len(x_NMD), size):
        c = x_NMD[i:i + size]
        yield c, torch.arange(first_key + i, first_key + i + len(c))


# ------------------------------------------------------------------------------------------ streaming statistics
class LatentStats:
    """Per latent and stream, streamed over batches of per-stream codes: the summed activation (float64), the
    firing count, the smallest firing and the largest activation, and the top-``k`` (activation, token key)
    pairs (a ``torch.topk`` merge of the running top-k with each batch's). Memory O(F k) on ``device``, whatever
    the number of tokens."""

    def __init__(self, n_latents: int, k: int = TOP_K, device: str | torch.device = "cpu"):
        self.F, self.k, self.device = int(n_latents), int(k), torch.device(device)
        self.sum = torch.zeros(2, self.F, dtype=torch.float64, device=self.device)
        self.fires = torch.zeros(2, self.F, dtype=torch.long, device=self.device)
        self.max = torch.zeros(2, self.F, device=self.device)
        self.min = torch.full((2, self.F), float("inf"), device=self.device)  # smallest non-zero activation
        self.top_val = torch.zeros(2, self.k, self.F, device=self.device)
        self.top_key = torch.full((2, self.k, self.F), -1, dtype=torch.long, device=self.device)
        self.n = 0

    @torch.no_grad()
    def update(self, z_base_NF: torch.Tensor, z_ft_NF: torch.Tensor, keys_N: torch.Tensor) -> "LatentStats":
        """Add a batch: the two streams' codes (N, F) (non-negative, 0 = not firing) and each token's key (N,)."""
        keys = torch.as_tensor(keys_N, dtype=torch.long).to(self.device)
        for m, z in enumerate((z_base_NF, z_ft_NF)):
            z = z.to(self.device, torch.float32)
            assert z.shape == (len(keys), self.F), (z.shape, len(keys), self.F)
            self.sum[m] += z.double().sum(0)
            self.fires[m] += (z != 0).sum(0)
            if len(z):
                self.max[m] = torch.maximum(self.max[m], z.max(0).values)
                nz = torch.where(z != 0, z, torch.full((), float("inf"), device=z.device))
                self.min[m] = torch.minimum(self.min[m], nz.min(0).values)
                v, i = torch.topk(z, min(self.k, len(z)), dim=0)  # (k', F)
                vals = torch.cat([self.top_val[m], v])
                kk = torch.cat([self.top_key[m], keys[i]])
                v2, i2 = torch.topk(vals, self.k, dim=0)
                self.top_val[m], self.top_key[m] = v2, torch.gather(kk, 0, i2)
        self.n += len(keys)
        return self

    def top(self, m: int, j: int) -> list[tuple[float, int]]:
        """Stream ``m``'s kept (activation, key) pairs of latent ``j``, largest first, firing ones only."""
        v, k = self.top_val[m, :, j].tolist(), self.top_key[m, :, j].tolist()
        return [(a, b) for a, b in zip(v, k) if a > 0 and b >= 0]


@torch.no_grad()
def collect(cc: _cc.Crosscoder, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], k: int = TOP_K,
            device: str | torch.device | None = None, base: int = 0, ft: int = 1) -> LatentStats:
    """One streaming pass: :class:`LatentStats` of every latent over ``batches`` of (x_NMD, keys_N)."""
    dev = cc.device if device is None else torch.device(device)
    st = LatentStats(cc.F, k, dev)
    for x, keys in batches:
        zb, zf = stream_codes(cc, x, base=base, ft=ft, device=dev)
        st.update(zb, zf, keys)
    return st


@torch.no_grad()
def histograms(cc: _cc.Crosscoder, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], latents: Sequence[int],
               hi: Sequence[float], lo: Sequence[float] | None = None, n_bins: int = N_BINS,
               device: str | torch.device | None = None, base: int = 0, ft: int = 1) -> dict[str, np.ndarray]:
    """Fixed-bin histograms of the per-stream activations of ``latents``: latent j's bins split [lo_j, hi_j]
    (``lo`` default 0) into ``n_bins`` equal parts (a firing value below lo_j goes to the first bin, one at or
    above hi_j to the last). Tokens where the latent does not fire are counted apart (``zero``), so
    ``counts.sum(-1) + zero`` is the number of tokens. Returns ``edges`` (J, n_bins + 1), ``counts``
    (2, J, n_bins) and ``zero`` (2, J) (stream 0 base, 1 adapted)."""
    dev = cc.device if device is None else torch.device(device)
    J = list(int(j) for j in latents)
    hi_J = torch.as_tensor(np.asarray(hi, float), dtype=torch.float64, device=dev).reshape(-1)
    lo_J = (torch.zeros_like(hi_J) if lo is None
            else torch.as_tensor(np.asarray(lo, float), dtype=torch.float64, device=dev).reshape(-1))
    lo_J = torch.where(torch.isfinite(lo_J) & (lo_J < hi_J), lo_J, torch.zeros_like(lo_J))
    counts = torch.zeros(2, len(J), n_bins, dtype=torch.long, device=dev)
    zero = torch.zeros(2, len(J), dtype=torch.long, device=dev)
    width = torch.where(hi_J > lo_J, hi_J - lo_J, torch.ones_like(hi_J))
    offs = torch.arange(len(J), device=dev) * n_bins
    for x, _ in batches:
        if not J:
            break
        for m, z in enumerate(stream_codes(cc, x, J, base=base, ft=ft, device=dev)):
            fired = z != 0
            zero[m] += (~fired).sum(0)
            b = ((z.double() - lo_J) / width * n_bins).floor().long().clamp(0, n_bins - 1)  # (N, J)
            flat = (b + offs)[fired]
            counts[m] += torch.bincount(flat, minlength=len(J) * n_bins).view(len(J), n_bins)
    t = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64, device=dev)[None]
    edges = (lo_J[:, None] + (hi_J - lo_J)[:, None] * t).cpu().numpy()
    return {"edges": edges, "counts": counts.cpu().numpy(), "zero": zero.cpu().numpy()}


# ------------------------------------------------------------------------------------------ specificity
@torch.no_grad()
def specificity(cc: _cc.Crosscoder, st: LatentStats, base: int = 0, ft: int = 1) -> dict[str, np.ndarray]:
    """Per latent (arrays of length F): relative decoder norm ``r``, ``decoder_cosine``, per-stream mean
    activation, firing count and frequency, smallest firing and largest activation, the activation ``shift``
    (mean f^ft - mean f^base) and ``rel_shift`` (module docstring)."""
    cls = _cc.classify_latents(cc, base, ft)
    s = st.sum.cpu().numpy()
    n = max(st.n, 1)
    tot = s[0] + s[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(tot > 0, (s[1] - s[0]) / np.where(tot > 0, tot, 1.0), 0.0)
    f = st.fires.cpu().numpy()
    mx = st.max.cpu().numpy()
    mn = st.min.cpu().numpy()
    return {"r": np.asarray(cls["r"], float), "decoder_cosine": np.asarray(cls["cosine"], float),
            "mean_base": s[0] / n, "mean_ft": s[1] / n, "shift": (s[1] - s[0]) / n, "rel_shift": rel,
            "n_fires_base": f[0], "n_fires_ft": f[1], "freq_base": f[0] / n, "freq_ft": f[1] / n,
            "max_base": mx[0], "max_ft": mx[1], "min_base": mn[0], "min_ft": mn[1]}


def select(spec: Mapping[str, np.ndarray], n_per: int = N_PER, clamp_effect: Mapping[int, float] | None = None,
           min_fires: int = 2) -> list[tuple[int, list[str]]]:
    """The card latents: the ``n_per`` largest by relative decoder norm (``"r"``), by activation shift
    (``"shift"``, positive only), by relative shift (``"rel_shift"``, positive only, ties broken by the
    adapted-stream firing count, among latents firing ``min_fires`` times in the adapted stream) and, where
    ``clamp_effect`` gives latents, by clamp effect (``"clamp"``), among latents firing at least ``min_fires``
    times in either stream; their union in that order, each with the rankings that chose it. A latent that never
    fires has no contexts to show and is never chosen."""
    live = (spec["n_fires_base"] + spec["n_fires_ft"]) >= min_fires
    idx = np.flatnonzero(live)
    rankings: list[tuple[str, list[int]]] = []
    for name in ("r", "shift"):
        order = idx[np.argsort(-spec[name][idx], kind="stable")]
        if name == "shift":
            order = order[spec["shift"][order] > 0]
        rankings.append((name, [int(j) for j in order[:n_per]]))
    ft_live = idx[spec["n_fires_ft"][idx] >= min_fires]
    order = ft_live[np.lexsort((-spec["n_fires_ft"][ft_live], -spec["rel_shift"][ft_live]))]
    rankings.append(("rel_shift", [int(j) for j in order[spec["rel_shift"][order] > 0][:n_per]]))
    if clamp_effect:
        live_set = set(idx.tolist())
        ce = [(float(v), int(j)) for j, v in clamp_effect.items() if int(j) in live_set and np.isfinite(v)]
        rankings.append(("clamp", [j for _, j in sorted(ce, key=lambda t: (-t[0], t[1]))[:n_per]]))
    out: dict[int, list[str]] = {}
    for name, js in rankings:
        for j in js:
            out.setdefault(j, []).append(name)
    return list(out.items())


@torch.no_grad()
def decoder_difference(cc: _cc.Crosscoder, latents: Sequence[int], base: int = 0, ft: int = 1) -> torch.Tensor:
    """(J, D) raw-unit decoder differences W_dec[j, ft] / s_ft - W_dec[j, base] / s_base (CPU, float32)."""
    J = torch.as_tensor(list(latents), dtype=torch.long, device=cc.device)
    W = cc.W_dec_FMD[J].float()
    s = cc.scale_M.float()
    return (W[:, ft] / s[ft] - W[:, base] / s[base]).cpu()


# ------------------------------------------------------------------------------------------ contexts
def context_window(ids: Sequence[int], pos: int, before: int = BEFORE, after: int = AFTER) -> tuple[list[int], int]:
    """(the ids from ``before`` tokens before ``pos`` to ``after`` after it, index of ``pos`` in them)."""
    lo = max(0, pos - before)
    return [int(i) for i in ids[lo:pos + after + 1]], pos - lo


def decode_context(tok, ids: Sequence[int], pos: int, before: int = BEFORE, after: int = AFTER) -> dict[str, Any]:
    """A context window as ``ids``, per-token decoded ``tokens`` and the index ``mark`` of the max token."""
    w, mark = context_window(ids, pos, before, after)
    return {"ids": w, "tokens": [tok.decode([i]) for i in w], "mark": mark}


# ------------------------------------------------------------------------------------------ the cards
def _f(x) -> float:
    return float(x)


@torch.no_grad()
def latent_cards(cc: _cc.Crosscoder, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                 where: torch.Tensor | np.ndarray, rows: Sequence[Mapping[str, Any]], model, tok, *,
                 k: int = TOP_K, n_per: int = N_PER, n_bins: int = N_BINS, lens_n: int = 10,
                 clamp_effect: Mapping[int, float] | None = None, min_fires: int = 2, before: int = BEFORE,
                 after: int = AFTER, device: str | torch.device | None = None, base: int = 0, ft: int = 1
                 ) -> dict[str, Any]:
    """The cards of one crosscoder (one layer).

    ``batches()`` returns a fresh iterable of (x_NMD, keys_N) over the audited tokens (it is called twice: the
    statistics of every latent, then the histograms of the chosen ones); ``where[key] = (row, pos)`` places a
    token, and ``rows[row]`` is a mapping with the row's token ``ids`` (and optionally its ``set`` name and
    ``row`` index within the set, copied into each context). ``model``: the causal LM whose final norm and
    unembedding read the decoder differences (``explain.difference_lens``); ``tok``: its tokenizer (``decode``).

    Returns a JSON-able block: ``n_tokens``, ``n_latents``, ``n_live`` (firing ``min_fires`` times in either
    stream), ``n_ft_only_live`` (of those, r > 0.9), ``selection`` (the rankings) and ``cards``, each with
    the numbers of the module docstring, ``min_active`` (its smallest firing activation in either stream),
    ``selected_by``, ``histogram`` ({edges, base/ft: {counts, zero}}; edges from ``min_active``, or 0 when
    every firing activation is the same, to the largest),
    ``contexts`` ({base, ft}: lists of {value, set, row, pos, ids, tokens, mark}), and ``promoted`` /
    ``suppressed`` ({id, token, value}) with ``decoder_diff_norm``."""
    st = collect(cc, batches(), k=k, device=device, base=base, ft=ft)
    spec = specificity(cc, st, base, ft)
    chosen = select(spec, n_per, clamp_effect, min_fires)
    J = [j for j, _ in chosen]
    hi = [max(float(spec["max_base"][j]), float(spec["max_ft"][j])) for j in J]
    lo = [min(float(spec["min_base"][j]), float(spec["min_ft"][j])) for j in J]
    hist = histograms(cc, batches(), J, hi, lo, n_bins, device=device, base=base, ft=ft)
    where = np.asarray(where)
    deltas = decoder_difference(cc, J, base, ft) if J else torch.zeros(0, cc.D)
    cards = []
    for c, (j, why) in enumerate(chosen):
        ctx = {}
        for m, name in enumerate(STREAMS):
            ctx[name] = []
            for v, key in st.top(m, j):
                r, p = (int(t) for t in where[key])
                meta = rows[r]
                ctx[name].append({"value": v, "set": meta.get("set", ""), "row": int(meta.get("row", r)), "pos": p,
                                  **decode_context(tok, meta["ids"], p, before, after)})
        lens = explain.difference_lens(model, deltas[c], lens_n)
        ce = None if clamp_effect is None or j not in clamp_effect else _f(clamp_effect[j])
        cards.append({
            "latent": int(j), "selected_by": why,
            **{key: _f(spec[key][j]) for key in ("r", "decoder_cosine", "shift", "rel_shift", "mean_base",
                                                   "mean_ft", "freq_base", "freq_ft", "max_base", "max_ft")},
            "n_fires_base": int(spec["n_fires_base"][j]), "n_fires_ft": int(spec["n_fires_ft"][j]),
            "min_active": lo[c], "clamp_effect": ce,
            "histogram": {"edges": hist["edges"][c].tolist(),
                          **{name: {"counts": hist["counts"][m, c].tolist(), "zero": int(hist["zero"][m, c])}
                             for m, name in enumerate(STREAMS)}},
            "contexts": ctx, "decoder_diff_norm": float(deltas[c].norm()),
            "promoted": explain.decode_pairs(tok, lens["promoted"]),
            "suppressed": explain.decode_pairs(tok, lens["suppressed"])})
    live = (spec["n_fires_base"] + spec["n_fires_ft"]) >= min_fires
    return {"n_tokens": int(st.n), "n_latents": int(cc.F), "n_live": int(live.sum()),
            "n_ft_only_live": int((live & (spec["r"] > 0.9)).sum()),
            "threshold": float(cc.threshold),
            "selection": {"n_per": n_per, "min_fires": min_fires, "rankings": ["r", "shift", "rel_shift"] + (
                ["clamp"] if clamp_effect else []), "clamp_measured": bool(clamp_effect)},
            "cards": cards}


# ------------------------------------------------------------------------------------------ showing them
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def visible(s: str) -> str:
    """``s`` with whitespace made visible (newline as a return arrow, tab as an arrow) and every other control or
    bidirectional-override character written as its escape, so a token can neither break a line of the terminal
    nor reorder the text around it. (HTML escaping is separate: :func:`cards_html`.)"""
    out = []
    for ch in s:
        if ch == "\n":
            out.append("\u21b5")
        elif ch == "\t":
            out.append("\u2192")
        elif ch in _BIDI or unicodedata.category(ch) == "Cc":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)


def context_text(c: Mapping[str, Any], left: str = "[[", right: str = "]]") -> str:
    """A context as one line of text, the max token between ``left`` and ``right`` (not escaped for HTML)."""
    t = [visible(x) for x in c["tokens"]]
    i = c["mark"]
    return "".join(t[:i]) + left + t[i] + right + "".join(t[i + 1:])


def _context_html(c: Mapping[str, Any]) -> str:
    e = html.escape
    t = [e(visible(x), quote=True) for x in c["tokens"]]
    i = c["mark"]
    where = e(f"{c.get('set', '')} row {c.get('row', '?')}, pos {c.get('pos', '?')}", quote=True)
    return (f"<tr><td>{c['value']:.3g}</td><td class='ctx' title='{where}'>{''.join(t[:i])}<mark>{t[i]}</mark>"
            f"{''.join(t[i + 1:])}</td></tr>")


def _hist_svg(h: Mapping[str, Any], w: int = 260, hgt: int = 60) -> str:
    """Both streams' firing-activation histograms as one inline SVG (base grey, adapted orange); the tokens where
    the latent does not fire are stated below it, not drawn."""
    nb = len(h["base"]["counts"])
    top = max([1, *h["base"]["counts"], *h["ft"]["counts"]])
    bw = w / max(nb, 1)
    rects = []
    for m, (name, col) in enumerate((("base", "#9e9e9e"), ("ft", "#ef6c00"))):
        for i, c in enumerate(h[name]["counts"]):
            if c:
                bh = max(1.0, hgt * c / top)
                rects.append(f"<rect x='{i * bw + m * bw / 2:.1f}' y='{hgt - bh:.1f}' width='{bw / 2:.1f}' "
                             f"height='{bh:.1f}' fill='{col}'><title>{name}: {int(c)} in [{h['edges'][i]:.3g}, "
                             f"{h['edges'][i + 1]:.3g})</title></rect>")
    return (f"<svg width='{w}' height='{hgt + 14}' role='img' aria-label='activation histogram'>{''.join(rects)}"
            f"<text x='0' y='{hgt + 12}' font-size='9'>{h['edges'][0]:.3g}</text>"
            f"<text x='{w}' y='{hgt + 12}' font-size='9' text-anchor='end'>{h['edges'][-1]:.3g}</text></svg>")


def _tokens(entries: Sequence[Mapping[str, Any]], k: int = 8) -> str:
    return " ".join(f"<span class='tok'>{html.escape(repr(x['token']), quote=True)}</span>&nbsp;{x['value']:+.2f}"
                    for x in entries[:k]) or "none"


def _pct(x: float) -> str:
    return f"{100 * x:.2g}%"


def card_html(card: Mapping[str, Any], layer: int | str = "") -> str:
    """One card: its numbers, the histogram, the top contexts in both streams and the decoder-difference tokens
    (every string escaped; the max token of each context in a ``<mark>``)."""
    h = card["histogram"]
    ce = "not measured" if card.get("clamp_effect") is None else f"{card['clamp_effect']:.3g}"
    cols = "".join(f"<div class='cardcol'><b>top contexts, {label}</b><table>"
                   f"{''.join(_context_html(c) for c in card['contexts'][name]) or '<tr><td>never fires</td></tr>'}"
                   f"</table></div>" for name, label in (("base", "base stream"), ("ft", "adapted stream")))
    why = html.escape(", ".join(RANKINGS.get(w, w) for w in card["selected_by"]))
    return (f"<details class='card' open><summary><b>latent {card['latent']}</b> (layer {html.escape(str(layer))}) "
            f"&mdash; r {card['r']:.2f}, shift {card['shift']:+.3g} (relative {card['rel_shift']:+.2f}), fires "
            f"{_pct(card['freq_base'])} base / {_pct(card['freq_ft'])} adapted; chosen by {why}</summary>"
            f"<table class='nums'><tr><th>relative decoder norm</th><td>{card['r']:.3f}</td>"
            f"<th>decoder cosine</th><td>{card['decoder_cosine']:.3f}</td><th>clamp effect</th><td>{ce}</td></tr>"
            f"<tr><th>mean activation base / adapted</th><td>{card['mean_base']:.3g} / {card['mean_ft']:.3g}</td>"
            f"<th>fires (tokens) base / adapted</th><td>{card['n_fires_base']} / {card['n_fires_ft']}</td>"
            f"<th>max base / adapted</th><td>{card['max_base']:.3g} / {card['max_ft']:.3g}</td></tr></table>"
            f"<div class='cardrow'><div>{_hist_svg(h)}<br><span class='tops'>activation histogram (firing tokens; "
            f"grey base, orange adapted); not firing: {h['base']['zero']} base, {h['ft']['zero']} adapted</span>"
            f"</div>{cols}</div>"
            f"<p class='tops'>decoder difference (adapted - base, norm {card['decoder_diff_norm']:.3g}) through the "
            f"unembedding: promotes {_tokens(card['promoted'])}<br>suppresses {_tokens(card['suppressed'])}</p>"
            f"</details>")


CSS = (".card{border:1px solid #ddd;padding:4px 8px;margin:6px 0} .cardrow{display:flex;gap:1em;flex-wrap:wrap}"
       " .cardcol{flex:1;min-width:280px} .card .ctx{white-space:pre-wrap} .nums th{font-weight:normal;"
       "color:#555;text-align:left}")


def cards_html(blocks: Sequence[Mapping[str, Any]] | None) -> str:
    """The report's "Latent cards" section: per crosscoder depth, its cards (:func:`card_html`)."""
    if not blocks:
        return ""
    parts = [f"<style>{CSS}</style><h2 id='latent-cards'>Latent cards</h2><p>For each crosscoder depth, the "
             f"latents most specific to the adapted model: the largest relative decoder norm r (1: a decoder in the "
             f"adapted model only), the largest activation shift (mean activation in the adapted stream minus "
             f"the base stream, each stream encoded as the pair (a, a)) and the largest relative shift (+1: fires "
             f"in the adapted stream only), among latents that fire; the clamp effect where measured. Each card "
             f"shows the latent's top-activating contexts in each stream (the max token marked), how often it "
             f"fires, its activation histogram, the cosine of its two decoders and the tokens its decoder "
             f"difference promotes and suppresses through the final norm and unembedding.</p>"]
    for b in blocks:
        parts.append(f"<h3>Layer {int(b['layer'])} (depth {float(b['depth']):.2f})</h3><p class='tops'>"
                     f"{b['n_tokens']} tokens, {b['n_live']} of {b['n_latents']} latents fire, "
                     f"{b.get('n_ft_only_live', '?')} of them fine-tune only (r &gt; 0.9); clamp effect "
                     f"{'measured' if b['selection'].get('clamp_measured') else 'not measured here'}.</p>")
        parts += [card_html(c, b["layer"]) for c in b["cards"]] or ["<p>no latent fires</p>"]
    return "".join(parts)


def cards_lines(blocks: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Terminal lines: per depth, the first card of each ranking (what chose it, r, frequencies, the top
    adapted-stream context with its max token in [[ ]], and the top promoted tokens), control characters made
    inert."""
    out = []
    for b in blocks or []:
        firsts = []
        for name in b["selection"].get("rankings", RANKINGS):
            c = next((c for c in b["cards"] if name in c["selected_by"]), None)
            if c is not None and c not in firsts:
                firsts.append(c)
        for c in firsts:
            ctx = (c["contexts"]["ft"] or c["contexts"]["base"] or [None])[0]
            where = "adapted" if c["contexts"]["ft"] else "base"
            txt = f"{where} context {context_text(ctx)!r}" if ctx else "no context"
            out.append(f"latent card, layer {b['layer']} latent {c['latent']} (top by "
                       f"{', '.join(RANKINGS.get(w, w) for w in c['selected_by'])}): r {c['r']:.2f}, fires "
                       f"{_pct(c['freq_base'])} base / {_pct(c['freq_ft'])} adapted; {txt}; decoder difference "
                       f"promotes {explain.top_tokens_line(c['promoted'], 4)}")
    return out
