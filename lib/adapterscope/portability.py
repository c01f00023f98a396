"""Portability: does an adapter's function transfer to another architecture while its geometry does not?

Building blocks of ``07_portability`` (issue 22), each tested on planted cases in ``tests/unit/test_portability.py``:

* **Per-character NLL** (:func:`char_nll`): the two models' tokenizers differ, so held-out loss is compared per
  character of the same strings (each text is cut to the same characters for every model, scored after one start
  token, all of its tokens predicted).
* **Recovery** (:func:`recovery`): ``(L_base - L_transfer) / (L_base - L_direct)`` on per-character NLL summed
  over texts (ratio of sums), with a bootstrap CI over texts; undefined, with the reason, when the direct
  adapter's own gain is not positive.
* **Distillation through text** (:func:`generate_texts`): the source model with its adapter writes continuations of
  seed prompts (sampled, seeded); a fresh LoRA on the target is trained on those strings, never on the corpus.
* **Matching residual spaces** (:func:`boundary_pairs`, :func:`paired_residuals`, :func:`fit_map`): positions where
  both tokenizers end a token at the same character of the same text are paired, and a linear map between the two
  models' residual streams at matched relative depths (:func:`matched_layers`) is fitted by least squares or by a
  semi-orthogonal Procrustes solution.
* **The geometry-only transfer** (:func:`fit_edit`, :func:`transport_edit`, :func:`residual_edit`): the source
  adapter's residual displacement at a layer, fitted as a reduced-rank linear function of the base residual
  (``delta ~= h B``), carried into the target's coordinates through the fitted maps and added to the target's
  residual stream at the matched layer, with no training on the target. It transfers exactly when the two models
  differ by a linear change of residual coordinates and the adapter's displacement is linear (the planted
  success); it has no reason to work between unrelated models (the planted failure).
* **Pooled over cases** (:func:`pooled_recovery`, :func:`shift_correlation`, :func:`geometry_excess`): the
  ledger's statistics of ``07_portability``: mean recovery with a within-case text bootstrap, the per-text
  correlation of the source's and the transfer's gains (stratified Spearman), and the mean excess of displacement
  CKA over its shuffled null with a permutation p of that mean.
* **The notebook's cases** (:func:`case_specs`, :func:`run_spec`, :func:`case_table`, :func:`geometry_table`):
  a source cell's adapter and protocol read from its ``01_finetune`` run, and the tables of the results.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import models
from .divergence import lse


class PortabilityError(ValueError):
    """Inputs a transfer cannot use; the message says why."""


# ------------------------------------------------------------------------------------------ function axis
def start_id(tokenizer) -> int:
    """The token every scored text starts after: BOS where the tokenizer has one, else EOS."""
    t = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if t is None:
        raise PortabilityError("the tokenizer has neither a BOS nor an EOS token to start a scored text with")
    return int(t)


def cut_texts(texts: Sequence[str], max_chars: int) -> list[str]:
    """Each text cut to at most ``max_chars`` characters (the same strings for every model); empty ones dropped."""
    out = [t[:max_chars] for t in texts if t and t[:max_chars].strip()]
    if not out:
        raise PortabilityError("no non-empty text to score")
    return out


@torch.no_grad()
def char_nll(model, tokenizer, texts: Sequence[str], device: str = "cpu", batch_size: int = 8,
             dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """(nats, characters) per text: the summed next-token NLL of all of the text's tokens after one start token,
    and the text's length in characters. Their ratio of sums is the per-character NLL that compares models with
    different tokenizers on the same strings."""
    from .finetune import autocast

    s = start_id(tokenizer)
    ids = [[s] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    nats = np.zeros(len(texts))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else s
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths together: little padding
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        T = max(len(ids[i]) for i in idx)
        x = torch.full((len(idx), T), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            x[r, :len(ids[i])] = torch.tensor(ids[i])
            mask[r, :len(ids[i])] = 1
        x, mask = x.to(device), mask.to(device)
        with autocast(device, dtype):
            logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits.float()
        nll = lse(logits)[:, :-1] - logits[:, :-1].gather(-1, x[:, 1:, None]).squeeze(-1).double()
        nll = (nll * mask[:, 1:]).sum(1).cpu().numpy()
        for r, i in enumerate(idx):
            nats[i] = nll[r]
    chars = np.array([len(t) for t in texts], dtype=float)
    return nats, chars


def recovery(nats_base, nats_transfer, nats_direct, chars, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Share of the direct adapter's per-character NLL gain that a transferred adapter recovers, over the same
    texts: ``(sum base - sum transfer) / (sum base - sum direct)`` (characters cancel), with a 95% percentile
    bootstrap CI over texts (over the resamples whose direct gain is positive; how many were not is reported).
    Undefined (``value`` NaN, ``why`` set) when the direct gain is not positive, or when the lower end of its own
    95% bootstrap interval is not (the ratio then has no stable denominator)."""
    b, t, d, c = (np.asarray(x, dtype=float) for x in (nats_base, nats_transfer, nats_direct, chars))
    if not (len(b) == len(t) == len(d) == len(c)) or len(b) < 2:
        raise PortabilityError("recovery needs the same >= 2 texts scored by the three models")
    gain_d, gain_t = b - d, b - t
    out = {"n": len(b), "gain_direct_per_char": float(gain_d.sum() / c.sum()),
           "gain_transfer_per_char": float(gain_t.sum() / c.sum()), "value": float("nan"), "lo": float("nan"),
           "hi": float("nan"), "why": ""}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(b), size=(n_boot, len(b)))
    den = gain_d[idx].sum(1)
    if gain_d.sum() <= 0:
        out["why"] = "the directly trained adapter does not lower the held-out NLL"
        return out
    out["boot_nonpositive_direct"] = int((den <= 0).sum())
    if np.percentile(den, 2.5) <= 0:
        out["why"] = "the direct adapter's gain is not distinguishable from zero over text resamples"
        return out
    ok = den > 0
    boot = gain_t[idx[ok]].sum(1) / den[ok]
    out.update(value=float(gain_t.sum() / gain_d.sum()), lo=float(np.percentile(boot, 2.5)),
               hi=float(np.percentile(boot, 97.5)))
    return out


@torch.no_grad()
def generate_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, seed: int,
                   temperature: float = 1.0, device: str = "cpu", batch_size: int = 64) -> list[str]:
    """One continuation per prompt (prompt included, decoded to a string) from ``model``, sampled at
    ``temperature`` (greedy at 0): the transfer data of distillation through text, and the greedy continuations
    compared as strings. Prompts run ``batch_size`` at a time, left-padded, with a KV cache (one forward per new
    token for the whole batch, not per prompt: on a CPU the per-token overhead of a small model dominates, so
    48 prompts x 96 tokens one prompt at a time cost minutes). A row stops at its end-of-sequence token. Seeded:
    the same seed, prompts and batch size give the same strings; a greedy row is the one-prompt-at-a-time
    decoding up to float rounding (padding is masked, positions count from each row's first real token)."""
    s = start_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else s
    eos = tokenizer.eos_token_id
    g = torch.Generator(device="cpu").manual_seed(seed)
    p_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    news: list[list[int]] = [[] for _ in prompts]
    for b0 in range(0, len(prompts), batch_size):
        rows = list(range(b0, min(b0 + batch_size, len(prompts))))
        seqs = [[s] + p_ids[i] for i in rows]
        T = max(len(q) for q in seqs)
        x = torch.full((len(rows), T), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for r, q in enumerate(seqs):  # left padding: every row's next token is at the last position
            x[r, T - len(q):] = torch.tensor(q)
            mask[r, T - len(q):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        x, mask, pos = x.to(device), mask.to(device), pos.to(device)
        done = [False] * len(rows)
        past, inp, inp_pos = None, x, pos
        for _ in range(max_new_tokens):
            o = model(input_ids=inp, attention_mask=mask, position_ids=inp_pos, past_key_values=past, use_cache=True)
            past = o.past_key_values
            logits = o.logits[:, -1].float().cpu()
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)[:, 0]
            for r, i in enumerate(rows):
                if not done[r]:
                    if int(nxt[r]) == eos:
                        done[r] = True
                    else:
                        news[i].append(int(nxt[r]))
            if all(done):
                break
            inp = nxt[:, None].to(device)
            inp_pos = inp_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], 1)
    out = []
    for p, ids, new in zip(prompts, p_ids, news):
        # decoded together with the prompt, then cut after the prompt's own decoding: a SentencePiece decoder
        # drops the leading space of a sequence's first token, which would glue the continuation to the prompt
        full = tokenizer.decode(ids + new, skip_special_tokens=True)
        head = tokenizer.decode(ids, skip_special_tokens=True)
        out.append(p + (full[len(head):] if full.startswith(head) else tokenizer.decode(new, skip_special_tokens=True)))
    return out


# ------------------------------------------------------------------------------------------ geometry axis
def matched_layers(n_a: int, n_b: int, depths: Sequence[float]) -> list[tuple[int, int]]:
    """(layer of a, layer of b) at each relative depth: ``round(depth * (n - 1))`` in each model."""
    bad = [d for d in depths if not 0 <= d <= 1]
    if bad:
        raise PortabilityError(f"depths {bad} are outside [0, 1]")
    return [(int(round(d * (n_a - 1))), int(round(d * (n_b - 1)))) for d in depths]


def boundary_pairs(offsets_a: Sequence[tuple[int, int]], offsets_b: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(token index in a, token index in b) for every character position where both tokenizations of the same
    text end a token: there the two models have read exactly the same characters. Tokens of zero width (special
    tokens) are ignored."""
    end_a = {e: i for i, (s, e) in enumerate(offsets_a) if e > s}
    return [(end_a[e], j) for j, (s, e) in enumerate(offsets_b) if e > s and e in end_a]


def _offsets(tokenizer, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


@torch.no_grad()
def layer_outputs(model, input_ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """The residual stream each decoder layer in ``layers`` writes (its output, before any final norm), for one
    forward pass over ``input_ids`` (B, T); float32 on the CPU."""
    blocks = models.decoder_layers(model)
    got: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(_mod, _inp, out):
            got[layer] = (out[0] if isinstance(out, tuple) else out).detach().float().cpu()
        return hook

    hooks = [blocks[layer].register_forward_hook(keep(layer)) for layer in sorted(set(layers))]
    try:
        model(input_ids=input_ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return got


def text_ids(tokenizer, text: str, device: str = "cpu") -> torch.Tensor:
    """(1, T): the start token, then the text's tokens (as :func:`char_nll` scores them)."""
    return torch.tensor([[start_id(tokenizer)] + tokenizer(text, add_special_tokens=False)["input_ids"]],
                        device=device)


@torch.no_grad()
def paired_residuals(model_a, tok_a, model_b, tok_b, texts: Sequence[str], layers: Sequence[tuple[int, int]],
                     device: str = "cpu", max_positions: int | None = None) -> dict[tuple[int, int], tuple]:
    """For each (layer of a, layer of b): both models' residual streams at the token positions where both have
    read the same characters of the same text (:func:`boundary_pairs`), as float32 (N, d_a), (N, d_b)."""
    acc: dict[tuple[int, int], tuple[list, list]] = {lp: ([], []) for lp in layers}
    for t in texts:
        pairs = boundary_pairs(_offsets(tok_a, t), _offsets(tok_b, t))
        if not pairs:
            continue
        ia = torch.tensor([i + 1 for i, _ in pairs])  # +1: the start token comes first
        ib = torch.tensor([j + 1 for _, j in pairs])
        ha = layer_outputs(model_a, text_ids(tok_a, t, device), [la for la, _ in layers])
        hb = layer_outputs(model_b, text_ids(tok_b, t, device), [lb for _, lb in layers])
        for la, lb in layers:
            acc[(la, lb)][0].append(ha[la][0, ia])
            acc[(la, lb)][1].append(hb[lb][0, ib])
    out = {}
    for lp, (xa, xb) in acc.items():
        if not xa:
            raise PortabilityError("no character position is a token boundary of both tokenizers in these texts")
        out[lp] = (torch.cat(xa)[:max_positions], torch.cat(xb)[:max_positions])
    return out


def fit_map(X: torch.Tensor, Y: torch.Tensor, method: str = "lstsq", ridge: float = 1e-3) -> dict[str, Any]:
    """A linear map ``W`` (d_x, d_y) with ``X W ~= Y`` on centred data, and its held-in R^2.

    ``lstsq``: ridge-regularised least squares (``ridge`` times the mean eigenvalue of X^T X). ``procrustes``: the
    best semi-orthogonal map times one scale (orthogonal Procrustes through the SVD of X^T Y), which keeps
    geometry (angles, relative norms) instead of fitting anything linear."""
    X = torch.as_tensor(X, dtype=torch.float64)
    Y = torch.as_tensor(Y, dtype=torch.float64)
    if X.shape[0] != Y.shape[0] or X.shape[0] < 2:
        raise PortabilityError(f"fit_map needs the same >= 2 rows on both sides, got {X.shape[0]} and {Y.shape[0]}")
    mx, my = X.mean(0), Y.mean(0)
    Xc, Yc = X - mx, Y - my
    if method == "lstsq":
        G = Xc.T @ Xc
        lam = ridge * float(torch.diagonal(G).mean())
        W = torch.linalg.solve(G + lam * torch.eye(G.shape[0], dtype=G.dtype), Xc.T @ Yc)
    elif method == "procrustes":
        U, S, Vh = torch.linalg.svd(Xc.T @ Yc, full_matrices=False)
        R = U @ Vh
        scale = float(S.sum() / (Xc ** 2).sum())
        W = scale * R
    else:
        raise PortabilityError(f"fit_map method must be lstsq or procrustes, got {method!r}")
    resid = Yc - Xc @ W
    r2 = 1.0 - float((resid ** 2).sum() / (Yc ** 2).sum())
    return {"W": W.float(), "mean_x": mx.float(), "mean_y": my.float(), "r2": r2, "method": method}


def fit_edit(H: torch.Tensor, D: torch.Tensor, rank: int, ridge: float = 1e-3) -> dict[str, Any]:
    """The displacement an adapter causes at one layer as a reduced-rank linear function of the base residual:
    ``D ~= (H - mean_h) B + mean_d`` with ``rank(B) <= rank`` (least squares, then the best rank-``rank``
    approximation of the fitted values), and its R^2."""
    f = fit_map(H, D, "lstsq", ridge)
    Hc = torch.as_tensor(H, dtype=torch.float64) - f["mean_x"].double()
    W = f["W"].double()
    U, S, Vh = torch.linalg.svd(Hc @ W, full_matrices=False)
    P = Vh[:rank].T @ Vh[:rank]  # project the fitted values onto their top-`rank` output directions
    B = W @ P
    Dc = torch.as_tensor(D, dtype=torch.float64) - f["mean_y"].double()
    r2 = 1.0 - float(((Dc - Hc @ B) ** 2).sum() / (Dc ** 2).sum())
    return {"B": B.float(), "mean_h": f["mean_x"], "mean_d": f["mean_y"], "rank": int(rank), "r2": r2}


def transport_edit(edit: dict[str, Any], to_src: dict[str, Any], to_tgt: dict[str, Any]) -> dict[str, Any]:
    """The source edit in the target's residual coordinates: a target residual ``h_t`` is mapped to the source
    (``to_src``: target -> source, from :func:`fit_map`), edited there, and the displacement mapped back
    (``to_tgt``: source -> target, linear part only, since a displacement is a difference)."""
    Wt_s, Ws_t = to_src["W"].double(), to_tgt["W"].double()
    B = edit["B"].double()
    # delta_t(h_t) = ((h_t - m_t) Wt_s + m_s' - mean_h) B Ws_t + mean_d Ws_t
    shift_src = to_src["mean_y"].double() - edit["mean_h"].double()
    return {"B": (Wt_s @ B @ Ws_t).float(), "mean_h": to_src["mean_x"].float(),
            "mean_d": ((shift_src @ B + edit["mean_d"].double()) @ Ws_t).float(), "rank": edit["rank"]}


def apply_edit(h: torch.Tensor, edit: dict[str, Any]) -> torch.Tensor:
    """``h`` plus the edit's displacement ``(h - mean_h) B + mean_d``."""
    B, mh, md = (edit[k].to(h.device, h.dtype) for k in ("B", "mean_h", "mean_d"))
    return h + (h - mh) @ B + md


@contextmanager
def residual_edit(model, layer: int, edit: dict[str, Any]):
    """Inside the block, decoder layer ``layer``'s output residual gets :func:`apply_edit` (a forward hook)."""
    block = models.decoder_layers(model)[layer]

    def hook(_mod, _inp, out):
        if isinstance(out, tuple):
            return (apply_edit(out[0], edit),) + tuple(out[1:])
        return apply_edit(out, edit)

    h = block.register_forward_hook(hook)
    try:
        yield model
    finally:
        h.remove()


def displacement_cka(Da: torch.Tensor, Db: torch.Tensor, n_perm: int = 200, seed: int = 0) -> dict[str, Any]:
    """Linear CKA between two adapters' displacements on the same paired positions (rows), against a shuffled
    null (the rows of ``Db`` permuted: the same two clouds with the pairing broken): value, the null's mean and
    SD, z = (value - mean) / SD, and the permutation p of value >= null (with the +1 correction)."""
    from .cka import cka_features

    Da = torch.as_tensor(Da, dtype=torch.float64)
    Db = torch.as_tensor(Db, dtype=torch.float64)
    if Da.shape[0] != Db.shape[0] or Da.shape[0] < 4:
        raise PortabilityError(f"displacement_cka needs the same >= 4 rows, got {Da.shape[0]} and {Db.shape[0]}")
    value = cka_features(Da, Db)
    # A row permutation leaves the column means and both self-similarity terms as they are: only the cross term
    # ||Yc[perm]^T Xc||_F^2 changes, one n x d_a x d_b product a shuffle instead of cka_features' three (the same
    # null; a Gram-matrix form, <K, L[perm][:, perm]>, was slower here: its n^2 gathers are memory-bound)
    x, y = Da - Da.mean(0), Db - Db.mean(0)
    den = float(torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y))
    g = torch.Generator().manual_seed(seed)
    perms = [torch.randperm(len(Db), generator=g) for _ in range(n_perm)]
    null = np.array([float(torch.linalg.matrix_norm(y[q].T @ x) ** 2) / den if den > 0 else float("nan")
                     for q in perms])
    sd = float(null.std(ddof=1))
    return {"value": float(value), "null_mean": float(null.mean()), "null_sd": sd,
            "z": float((value - null.mean()) / sd) if sd > 0 else float("nan"),
            "p": float((1 + (null >= value).sum()) / (1 + n_perm)), "n": int(Da.shape[0]),
            "null": [float(x) for x in null]}


@torch.no_grad()
def paired_displacements(src, tok_s, tgts: dict[str, Any], tok_t, texts: Sequence[str],
                         layers: Sequence[tuple[int, int]], device: str = "cpu") -> dict[tuple[int, int], dict]:
    """Each adapter's displacement (adapter on minus off, on the same text) at matched layers, on the positions
    where the source's and the target's tokenizers have read the same characters: for every (source layer,
    target layer), ``{"source": (N, d_s), name: (N, d_t) for each peft target model in tgts}``."""
    acc: dict[tuple[int, int], dict[str, list]] = {lp: {"source": [], **{k: [] for k in tgts}} for lp in layers}

    def disp(pm, tok, t, idx, want):
        ids = text_ids(tok, t, device)
        with pm.disable_adapter():
            off = layer_outputs(pm, ids, want)
        on = layer_outputs(pm, ids, want)
        return {layer: (on[layer] - off[layer])[0, idx] for layer in want}

    for t in texts:
        pairs = boundary_pairs(_offsets(tok_s, t), _offsets(tok_t, t))
        if not pairs:
            continue
        i_s = torch.tensor([i + 1 for i, _ in pairs])
        i_t = torch.tensor([j + 1 for _, j in pairs])
        ds = disp(src, tok_s, t, i_s, [a for a, _ in layers])
        dt = {k: disp(pm, tok_t, t, i_t, [b for _, b in layers]) for k, pm in tgts.items()}
        for a, b in layers:
            acc[(a, b)]["source"].append(ds[a])
            for k in tgts:
                acc[(a, b)][k].append(dt[k][b])
    if not acc[layers[0]]["source"]:
        raise PortabilityError("no character position is a token boundary of both tokenizers in these texts")
    return {lp: {k: torch.cat(v) for k, v in d.items()} for lp, d in acc.items()}


def string_agreement(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Per pair of strings, difflib's similarity ratio (2 x matched characters / total characters, in [0, 1]):
    agreement of two models' continuations without comparing token distributions (their vocabularies differ)."""
    import difflib

    if len(a) != len(b):
        raise PortabilityError(f"string_agreement needs as many strings on both sides, got {len(a)} and {len(b)}")
    return np.array([difflib.SequenceMatcher(None, x, y, autojunk=False).ratio() for x, y in zip(a, b)])


# ------------------------------------------------------------------------------------------------ one case
@dataclass
class CaseConfig:
    """What one transfer case (source adapter -> target base, one corpus) uses besides the LoRA protocol."""

    eval_texts: int = 48  # held-out documents scored (each cut to eval_chars characters)
    eval_chars: int = 300
    transfer_prompts: int = 48  # neutral prompts (the source base model's own samples, decoded)
    prompt_tokens: int = 8  # tokens per neutral prompt (start token and opener word included)
    transfer_new_tokens: int = 96  # tokens the adapted source writes per prompt (the distillation data)
    temperature: float = 1.0
    edit_depth: float = 0.75  # relative depth of the geometry-only transfer's residual edit
    edit_rank: int = 16
    depths: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)  # where the displacement geometry is compared
    agree_prompts: int = 16  # prompts whose greedy continuations are compared as strings
    agree_tokens: int = 32
    n_boot: int = 2000
    n_perm: int = 200
    seed: int = 0


def neutral_prompts(model, tokenizer, n: int, tokens: int, seed: int, device: str = "cpu") -> list[str]:
    """``n`` corpus-free prompts: the base model's own seeded samples (:func:`corpora.neutral_samples`), decoded."""
    from .corpora import neutral_samples

    rows = neutral_samples(model, tokenizer, n=n, length=tokens, seed=seed, device=device)
    out = [tokenizer.decode(r.tolist(), skip_special_tokens=True).strip() for r in rows]
    return [p if p else "The" for p in out]


def run_case(src_pm, tok_s, tgt_base, tok_t, train_docs: Sequence[str], heldout_docs: Sequence[str], lora_cfg,
             cc: CaseConfig, device: str = "cpu", progress: bool = True, log=print,
             direct: tuple[Any, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One transfer case, both axes. ``src_pm``: the source base with its adapter (peft); ``tgt_base``: the target
    base (left unchanged: each target LoRA trains on a copy). ``direct``: an already trained ceiling, (peft model on
    a copy of the target base, its info), e.g. the target's own grid adapter of the same corpus, seed and protocol
    (:func:`run_spec` finds it); trained here on ``train_docs`` when None.

    Function axis: per-character NLL on held-out text of the target base (floor), a LoRA trained on the corpus
    directly (ceiling), a LoRA trained only on the adapted source's generated text (distillation) and the target
    base with the source's residual edit carried over (geometry only, no training); recovery of each transfer.
    Geometry axis: CKA between the source adapter's displacement and each target adapter's, per relative depth,
    against a shuffled null. Output agreement: greedy continuations of each target vs the adapted source's."""
    import copy
    import time

    from . import finetune

    t0 = time.time()
    phase_s: dict[str, float] = {}  # wall seconds of each phase, so a profile's cost can be read off its results
    tick = [time.time()]

    def lap(name: str) -> None:
        now = time.time()
        phase_s[name] = round(now - tick[0], 2)
        tick[0] = now

    texts = cut_texts(heldout_docs, cc.eval_chars)[:cc.eval_texts]
    with src_pm.disable_adapter():
        prompts = neutral_prompts(src_pm, tok_s, cc.transfer_prompts, cc.prompt_tokens, cc.seed, device)
    transfer = generate_texts(src_pm, tok_s, prompts, cc.transfer_new_tokens, cc.seed, cc.temperature, device)
    n_chars = sum(len(t) for t in transfer)
    log(f"distillation data: {len(transfer)} texts, {n_chars} characters")
    lap("generate_transfer")

    adapters = {}
    if direct is not None:
        adapters["direct"] = direct
    for name, docs in (("direct", train_docs), ("distilled", transfer)):
        if name in adapters:
            continue
        rows = finetune.pack_documents(tok_t, docs, lora_cfg.seq_len)
        pm = finetune.add_lora(copy.deepcopy(tgt_base), lora_cfg)
        res = finetune.train(pm, rows, lora_cfg, device=device, progress=progress)
        adapters[name] = (pm, {"rows": len(rows), "final_loss": res.losses[-1], "compute_dtype": res.dtype,
                               "reused_run": ""})
        lap(f"train_{name}")

    n_s, n_t = models.num_layers(src_pm), models.num_layers(tgt_base)
    (ls, lt), = matched_layers(n_s, n_t, [cc.edit_depth])
    H, D = [], []
    for t in transfer:
        ids = text_ids(tok_s, t, device)
        with src_pm.disable_adapter():
            off = layer_outputs(src_pm, ids, [ls])[ls][0]
        on = layer_outputs(src_pm, ids, [ls])[ls][0]
        H.append(off)
        D.append(on - off)
    edit = fit_edit(torch.cat(H), torch.cat(D), cc.edit_rank)
    with src_pm.disable_adapter():
        T, S = paired_residuals(tgt_base, tok_t, src_pm, tok_s, transfer, [(lt, ls)], device)[(lt, ls)]
    to_src, to_tgt = fit_map(T, S, "lstsq"), fit_map(S, T, "lstsq")
    moved = transport_edit(edit, to_src, to_tgt)
    lap("fit_geometry_edit")

    nll = {"target_base": char_nll(tgt_base, tok_t, texts, device)}
    for name, (pm, _) in adapters.items():
        nll[name] = char_nll(pm, tok_t, texts, device)
    with residual_edit(tgt_base, lt, moved):
        nll["geometry"] = char_nll(tgt_base, tok_t, texts, device)
    with src_pm.disable_adapter():
        nll["source_base"] = char_nll(src_pm, tok_s, texts, device)
    nll["source_ft"] = char_nll(src_pm, tok_s, texts, device)
    chars = nll["target_base"][1]
    per_char = {k: float(v[0].sum() / v[1].sum()) for k, v in nll.items()}
    rec = {k: recovery(nll["target_base"][0], nll[k][0], nll["direct"][0], chars, cc.n_boot, cc.seed)
           for k in ("distilled", "geometry")}
    lap("score_nll")

    layers = matched_layers(n_s, n_t, cc.depths)
    depth_of = {}
    for lp, dep in zip(layers, cc.depths):
        depth_of.setdefault(lp, float(dep))  # two depths may meet at one layer pair in a shallow model
    disp = paired_displacements(src_pm, tok_s, {k: v[0] for k, v in adapters.items()}, tok_t, texts, layers, device)
    geometry = []
    for (a, b), d in disp.items():
        row = {"depth": depth_of[(a, b)], "source_layer": a, "target_layer": b, "n": int(d["source"].shape[0])}
        for k in ("direct", "distilled"):
            row[k] = displacement_cka(d["source"], d[k], cc.n_perm, cc.seed)
        row["direct_vs_distilled"] = displacement_cka(d["direct"], d["distilled"], cc.n_perm, cc.seed)
        geometry.append(row)
    lap("displacement_cka")

    ap = prompts[:cc.agree_prompts]
    src_greedy = generate_texts(src_pm, tok_s, ap, cc.agree_tokens, cc.seed, 0.0, device)
    greedy = {"target_base": generate_texts(tgt_base, tok_t, ap, cc.agree_tokens, cc.seed, 0.0, device)}
    for name, (pm, _) in adapters.items():
        greedy[name] = generate_texts(pm, tok_t, ap, cc.agree_tokens, cc.seed, 0.0, device)
    with residual_edit(tgt_base, lt, moved):
        greedy["geometry"] = generate_texts(tgt_base, tok_t, ap, cc.agree_tokens, cc.seed, 0.0, device)
    strip = lambda xs: [x[len(p):] for x, p in zip(xs, ap)]  # compare the continuations, not the shared prompt
    agreement = {k: float(string_agreement(strip(src_greedy), strip(v)).mean()) for k, v in greedy.items()}
    lap("greedy_agreement")

    return {"n_eval_texts": len(texts), "n_transfer_texts": len(transfer), "transfer_chars": n_chars,
            "nats": {k: [float(x) for x in v[0]] for k, v in nll.items()}, "chars": [float(x) for x in chars],
            "per_char_nll": per_char, "recovery": rec, "geometry": geometry, "agreement_with_source": agreement,
            "edit": {"source_layer": ls, "target_layer": lt, "rank": cc.edit_rank, "fit_r2": edit["r2"],
                     "map_r2_to_source": to_src["r2"], "map_r2_to_target": to_tgt["r2"], "positions": int(len(T))},
            "adapters": {k: v[1] for k, v in adapters.items()}, "wall_s": time.time() - t0, "phase_s": phase_s,
            "example_transfer_text": transfer[0][:200]}


# ------------------------------------------------------------------------------------ pooled over cases
def pooled_recovery(cases: Sequence[dict[str, Any]], method: str, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The mean over cases of one transfer method's recovery (:func:`recovery`, from each :func:`run_case`
    result's per-text ``nats``), with a 95% percentile CI from a bootstrap that resamples texts within each case
    (each replicate: every case's ratio of sums on its resample, then their mean). Cases whose recovery is
    undefined are left out and counted (``n_undefined``, their reasons in ``reason``); undefined when none is
    left. In the ledger's form: ``value``, ``ci_low``, ``ci_high``, ``n`` (cases used), ``reason``."""
    used, why = [], []
    for c in cases:
        r = c["recovery"][method]
        if math.isfinite(r["value"]):
            used.append(c)
        else:
            why.append(r["why"])
    out = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": len(used), "n_cases": len(cases),
           "n_undefined": len(why), "reason": "; ".join(dict.fromkeys(why)), "method": method}
    if not cases:
        out["reason"] = "no portability case in this profile"
        return out
    if not used:
        return out
    rng = np.random.default_rng(seed)
    boots = np.zeros(n_boot)
    for c in used:
        b, t, d = (np.asarray(c["nats"][k]) for k in ("target_base", method, "direct"))
        idx = rng.integers(0, len(b), size=(n_boot, len(b)))
        den = (b - d)[idx].sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            boots += np.where(den > 0, (b - t)[idx].sum(1) / den, np.nan)
    boots /= len(used)
    ok = np.isfinite(boots)
    out.update(value=float(np.mean([c["recovery"][method]["value"] for c in used])),
               ci_low=float(np.percentile(boots[ok], 2.5)), ci_high=float(np.percentile(boots[ok], 97.5)),
               boot_dropped=int((~ok).sum()))
    return out


def geometry_excess(cases: Sequence[dict[str, Any]], comparison: str = "distilled") -> dict[str, Any]:
    """How far the displacement CKA of ``comparison`` (``direct``, ``distilled`` or ``direct_vs_distilled``) lies
    above its shuffled-pairing null, averaged over every (case, matched depth): ``value`` = mean of
    ``CKA - null mean``; one-sided permutation ``p_value`` of that mean (the k-th null draw of every cell
    averaged is one draw of the mean's null, since the cells' shuffles are independent), with the +1 correction.
    No CI: the p is the test (the ledger needs one of the two)."""
    cells = [row[comparison] for c in cases for row in c["geometry"]]
    out = {"value": math.nan, "p_value": math.nan, "n": len(cells), "comparison": comparison, "reason": ""}
    if not cells:
        out["reason"] = "no portability case in this profile"
        return out
    nulls = np.array([cl["null"] for cl in cells])  # (cells, n_perm)
    means = nulls.mean(1, keepdims=True)
    obs = float(np.mean([cl["value"] - m for cl, m in zip(cells, means[:, 0])]))
    null_mean = (nulls - means).mean(0)
    out.update(value=obs, p_value=float((1 + (null_mean >= obs - 1e-12).sum()) / (1 + nulls.shape[1])),
               p_method="permutation", cka_mean=float(np.mean([cl["value"] for cl in cells])),
               null_mean=float(means.mean()))
    return out


def shift_correlation(cases: Sequence[dict[str, Any]], method: str = "distilled", n_perm: int = 9999,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Does a transfer move the same texts the source adapter moves? Per held-out text, the source adapter's
    per-character NLL gain (source base minus adapted source) against the transfer's gain on the target (target
    base minus ``method``): Spearman's rho on within-case ranks (strata = cases; :func:`stats.stratified_spearman`),
    two-sided permutation p within case, bootstrap CI within case. The shared strings are the mapping between the
    two vocabularies."""
    from .stats import stratified_spearman

    if not cases:
        return {"value": math.nan, "n": 0, "reason": "no portability case in this profile"}
    x, y, g = [], [], []
    for i, c in enumerate(cases):
        ch = np.asarray(c["chars"])
        n = c["nats"]
        x += list((np.asarray(n["source_base"]) - np.asarray(n["source_ft"])) / ch)
        y += list((np.asarray(n["target_base"]) - np.asarray(n[method])) / ch)
        g += [i] * len(ch)
    r = stratified_spearman(x, y, g, n_permutations=n_perm, n_boot=n_boot, seed=seed).as_dict()
    return {"value": r["value"], "p_value": r["p_value"], "p_method": r["p_method"], "ci_low": r["ci_low"],
            "ci_high": r["ci_high"], "n": r["n"], "method": method,
            "reason": "" if math.isfinite(r["value"]) else "no text ordering to correlate (constant gains)"}


# ------------------------------------------------------------------------------- the notebook's cases
# The layer control of a case's source adapter: the main grid's (``pipeline.MAIN_LAYER_CONTROL``, which this
# layer cannot import; a test keeps the two equal).
SOURCE_LAYER_CONTROL = "none"


def case_specs(pairs: Sequence[Sequence[str]], corpora: Sequence[str], seeds: Sequence[int],
               model_names: Sequence[str] = (), corpus_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The cases of a portability block: every [source, target] pair x corpus x seed, each source adapter being
    the main grid's (:data:`SOURCE_LAYER_CONTROL`) cell of that source, corpus and seed.

    The block is checked where profiles are, once (``pipeline.check_grid``: a profile's ``grid.portability``, and
    the ``port_*`` parameters of a run of 07_portability on its own before its kernel starts, targets' names
    included); ``model_names`` and ``corpus_names`` (the grid's) are accepted for the notebook's call and not
    checked again here."""
    short = lambda m: m.split("-")[0]  # noqa: E731
    return [{"source": s, "target": t, "corpus": c, "seed": int(sd), "case": f"{s} to {t}, {c}, s{sd}",
             "label": f"{c} ({short(s)} to {short(t)})" + (f" s{sd}" if len(seeds) > 1 else "")}
            for s, t in pairs for c in corpora for sd in seeds]


# what a ceiling must share with the source adapter to be reused rather than trained again
PROTOCOL_KEYS = ("corpus", "rank", "alpha", "targets", "steps", "lr", "batch_size", "seq_len", "seed", "dtype",
                 "layer_control", "heldout_frac")


def target_own_run(spec: dict[str, Any], source_record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(run id, record) of the target model's own ``01_finetune`` run of the case's corpus and seed when it is the
    ceiling the case would train: the same LoRA protocol and corpus digest as the source adapter's record, and
    artefacts that match its record. None otherwise (the case then trains its ceiling)."""
    from . import params, results

    rid_t = params.cell_run_id(spec["target"], spec["corpus"], SOURCE_LAYER_CONTROL, spec["seed"])
    try:
        rec = results.load("01_finetune", rid_t)
    except (FileNotFoundError, results.ResultsError):
        return None
    p_s, p_t = source_record["provenance"]["params"], rec["provenance"]["params"]
    same = all(p_s.get(k) == p_t.get(k) for k in PROTOCOL_KEYS)
    same_data = source_record["provenance"]["inputs"].get("corpus") == rec["provenance"]["inputs"].get("corpus")
    if not (same and same_data and p_t.get("model") == spec["target"]) or results.verify_outputs(rec):
        return None
    return rid_t, rec


def run_spec(spec: dict[str, Any], cc: CaseConfig, device: str = "cpu", on_input=None, progress: bool = True,
             log=print) -> dict[str, Any]:
    """One case of :func:`case_specs`: loads the source cell's adapter and protocol from its ``01_finetune`` run
    (refusing a corpus that changed since), the source and target bases, and runs :func:`run_case` with the
    source's LoRA protocol for the target's LoRAs and the source adapter's own train / held-out split."""
    import gc

    from . import corpora, finetune, params, paths, results

    rid = params.cell_run_id(spec["source"], spec["corpus"], SOURCE_LAYER_CONTROL, spec["seed"])
    try:
        up = results.load("01_finetune", rid)
    except FileNotFoundError:
        raise PortabilityError(f"no 01_finetune run {rid}: run the source cell first (`make paper`, or "
                               f"`python -m adapterscope.pipeline run 01_finetune -p model={spec['source']} "
                               f"-p corpus={spec['corpus']} -p seed={spec['seed']}`)") from None
    p = up["provenance"]["params"]

    def adapter_of(run_id: str, rec: dict[str, Any]) -> Path:
        """A 01_finetune run's adapter folder, the run's record and the adapter declared as inputs."""
        d = paths.project_root() / rec["values"]["adapter_dir"]
        if on_input:
            on_input(f"01/{run_id}", results.sha256_file(results.results_path("01_finetune", run_id)))
            on_input(f"adapter/{run_id}", d)
        return d

    adapter_dir = adapter_of(rid, up)
    if on_input:
        for m in (spec["source"], spec["target"]):
            on_input(f"model/{m}", models.fingerprint(m))
    data = corpora.load_corpus(spec["corpus"], heldout_frac=p["heldout_frac"], seed=p["seed"])
    if data.digest != up["provenance"]["inputs"].get("corpus", data.digest):
        raise PortabilityError(f"corpus {spec['corpus']} differs from the one adapter {rid} was trained on: rerun "
                               "its 01_finetune")
    cfg = finetune.FinetuneConfig(rank=p["rank"], alpha=p["alpha"], targets=tuple(p["targets"]), steps=p["steps"],
                                  lr=p["lr"], batch_size=p["batch_size"], seq_len=p["seq_len"], seed=p["seed"],
                                  dtype=p["dtype"], layer_control=SOURCE_LAYER_CONTROL)
    base, tok_s = models.load_model(spec["source"], device=device)
    src = finetune.load_adapter(base, adapter_dir, model_name=spec["source"])
    tgt, tok_t = models.load_model(spec["target"], device=device)
    direct = None
    own = target_own_run(spec, up)
    if own is not None:
        import copy

        rid_t, rec_t = own
        own_dir = adapter_of(rid_t, rec_t)
        log(f"ceiling: the target's own adapter {rid_t} (same corpus split, seed and LoRA protocol), not retrained")
        v = rec_t["values"]
        direct = (finetune.load_adapter(copy.deepcopy(tgt), own_dir, model_name=spec["target"]),
                  {"rows": v.get("n_train_rows"), "final_loss": v.get("final_loss"),
                   "compute_dtype": v.get("compute_dtype"), "reused_run": rid_t})
    try:
        out = run_case(src, tok_s, tgt, tok_t, data.train, data.heldout, cfg, cc, device=device, progress=progress,
                       log=log, direct=direct)
    finally:
        del src, base, tgt, direct
        gc.collect()
    return {**spec, "source_run": rid, "lora": finetune.config_dict(cfg), **out}


_TABLE = ["case", "label", "source", "target", "corpus", "seed", "nll_target_base", "nll_direct", "nll_distilled",
          "nll_geometry", "nll_source_base", "nll_source_ft", "rec_distilled", "rec_distilled_lo", "rec_distilled_hi",
          "rec_geometry", "rec_geometry_lo", "rec_geometry_hi", "agree_target_base", "agree_direct",
          "agree_distilled", "agree_geometry", "transfer_chars", "edit_fit_r2", "map_r2_to_target", "wall_s"]


def case_table(cases: Sequence[dict[str, Any]]):
    """One row per case: per-character NLLs, recoveries with their CIs, output agreements, fit quality."""
    import pandas as pd

    rows = []
    for c in cases:
        r = {k: c[k] for k in ("case", "label", "source", "target", "corpus", "seed", "transfer_chars", "wall_s")}
        r.update({f"nll_{k}": v for k, v in c["per_char_nll"].items()})
        for m in ("distilled", "geometry"):
            x = c["recovery"][m]
            r.update({f"rec_{m}": x["value"], f"rec_{m}_lo": x["lo"], f"rec_{m}_hi": x["hi"]})
        r.update({f"agree_{k}": v for k, v in c["agreement_with_source"].items()})
        r.update(edit_fit_r2=c["edit"]["fit_r2"], map_r2_to_target=c["edit"]["map_r2_to_target"])
        rows.append(r)
    return pd.DataFrame(rows, columns=_TABLE)


def geometry_table(cases: Sequence[dict[str, Any]]):
    """One row per case x matched depth x comparison (source vs direct, source vs distilled, direct vs
    distilled): CKA, the shuffled null's mean, z and p."""
    import pandas as pd

    names = {"direct": "source vs direct", "distilled": "source vs distilled",
             "direct_vs_distilled": "direct vs distilled"}
    rows = [{"case": c["case"], "label": c["label"], "depth": g["depth"], "source_layer": g["source_layer"],
             "target_layer": g["target_layer"], "comparison": name, "cka": g[k]["value"],
             "null_mean": g[k]["null_mean"], "z": g[k]["z"], "p": g[k]["p"]}
            for c in cases for g in c["geometry"] for k, name in names.items()]
    return pd.DataFrame(rows, columns=["case", "label", "depth", "source_layer", "target_layer", "comparison", "cka",
                                       "null_mean", "z", "p"])
