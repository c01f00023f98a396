"""Composition of adapters: merging their weights vs composing them at decoding time (issue 23, first part).

Building blocks of the composition notebook, tested on planted cases in ``tests/unit/test_composition.py``:

* **Exact deltas** (:func:`lora_deltas`): each LoRA module's ``delta W`` from peft itself
  (``LoraLayer.get_delta_weight``: ``B A`` times its scaling), keyed by module name.
* **Weight merging** (:func:`merge_deltas`) on those dense deltas with peft's own merge functions
  (``peft.utils.merge_utils``: task arithmetic, TIES, DARE-linear, DARE-TIES, magnitude pruning), so the merge is
  exact (no re-factorisation into low rank; peft's ``add_weighted_adapter`` ``linear`` type instead scales A and B
  separately and adds cross terms). Applied to a model with :func:`applied_deltas` (base weights plus the merged
  delta, restored afterwards).
* **Core-parameter isolation** (:func:`core_masks`, :func:`core_isolated_merge`): each adapter's core is the
  top-``q`` share of its ``|delta W|`` entries over all its modules (CPI-FT's magnitude rule); entries in exactly
  one core keep that adapter's own value, the rest are merged.
* **Decoding-time composition** (:func:`proxy_logits`, :func:`decoding_time_logits`): ``base + sum_i w_i (ft_i -
  base)`` on the logits of one backbone with each adapter switched on in turn; no weight is touched.
* **Alignment** (:func:`alignment`): cosine of the flattened deltas, overlap of the two core sets (Jaccard) and
  their sign-conflict rate, and the principal-angle overlap of the adapters' output subspaces (columns of B).
* **Retention** (:func:`retention`): the share of one adapter's own held-out loss improvement that a composition
  keeps.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Sequence

import numpy as np
import torch

MERGES = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune")


class CompositionError(ValueError):
    """Adapters or parameters a composition cannot use; the message says why."""


def _lora_modules(pm, adapter: str):
    from peft.tuners.lora import LoraLayer

    out = [(n, m) for n, m in pm.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A]
    if not out:
        raise CompositionError(f"the model has no LoRA module holding an adapter named {adapter!r}")
    return out


@torch.no_grad()
def lora_deltas(pm, adapter: str) -> dict[str, torch.Tensor]:
    """``{module name: delta W}`` (float32, on the CPU) of one adapter of a peft model, from peft's
    ``get_delta_weight``."""
    return {n: m.get_delta_weight(adapter).detach().float().cpu() for n, m in _lora_modules(pm, adapter)}


def merge_deltas(deltas: Sequence[dict[str, torch.Tensor]], weights: Sequence[float], method: str = "task_arithmetic",
                 density: float | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Merge several adapters' dense deltas module by module with peft's merge function ``method`` (one of
    :data:`MERGES`; ``density``: the share kept by TIES / DARE / magnitude pruning). A module that only some
    adapters adapt is merged over those. DARE's random drop is seeded."""
    from peft.utils import merge_utils

    if method not in MERGES:
        raise CompositionError(f"merge method {method!r}; choose from {', '.join(MERGES)}")
    if len(deltas) != len(weights) or not deltas:
        raise CompositionError(f"{len(deltas)} adapters but {len(weights)} weights")
    if method != "task_arithmetic" and not (density is not None and 0 < density <= 1):
        raise CompositionError(f"{method} needs a density in (0, 1], got {density!r}")
    fn = getattr(merge_utils, method)
    keys = sorted({k for d in deltas for k in d})
    out = {}
    with torch.random.fork_rng():  # DARE's draws are seeded without touching the caller's generator
        torch.manual_seed(seed)
        for k in keys:
            have = [(d[k], w) for d, w in zip(deltas, weights) if k in d]
            ts, ws = [t for t, _ in have], torch.tensor([w for _, w in have], dtype=torch.float32)
            out[k] = fn(ts, ws) if method == "task_arithmetic" else fn(ts, ws, density)
    return out


def core_masks(delta: dict[str, torch.Tensor], q: float) -> dict[str, torch.Tensor]:
    """The adapter's core: entries whose ``|delta W|`` is in its top-``q`` share over all of its modules (one
    threshold for the whole adapter, as CPI-FT's top-1%-of-update rule)."""
    if not 0 < q < 1:
        raise CompositionError(f"core share q must be in (0, 1), got {q}")
    names = list(delta)
    flat = torch.cat([delta[n].abs().flatten() for n in names])
    k = max(1, int(round(q * flat.numel())))
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[torch.topk(flat, k).indices] = True  # exactly k entries, ties broken by position
    out, i = {}, 0
    for n in names:
        m = delta[n].numel()
        out[n] = mask[i:i + m].view(delta[n].shape)
        i += m
    return out


def core_isolated_merge(deltas: Sequence[dict[str, torch.Tensor]], weights: Sequence[float], q: float,
                        method: str = "task_arithmetic", density: float | None = None,
                        seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Core-parameter isolation: every entry in exactly one adapter's core keeps that adapter's own value; all
    other entries (no core, or the cores of several adapters) are merged by ``method``. Returns the merged deltas
    and the counts (core entries, collisions)."""
    masks = [core_masks(d, q) for d in deltas]
    merged = merge_deltas(deltas, weights, method, density, seed)
    n_core = n_coll = 0
    for k in merged:
        owners = [i for i, m in enumerate(masks) if k in m]
        hits = torch.stack([masks[i][k] for i in owners]).sum(0)
        for i in owners:
            alone = masks[i][k] & (hits == 1)
            merged[k] = torch.where(alone, deltas[i][k], merged[k])
        n_core += int((hits >= 1).sum())
        n_coll += int((hits >= 2).sum())
    return merged, {"core_entries": n_core, "colliding_entries": n_coll, "q": q}


@contextmanager
def applied_deltas(pm, deltas: dict[str, torch.Tensor]):
    """Inside the block the base weights of the named LoRA modules carry ``+ delta`` (use with the adapters
    switched off, ``pm.disable_adapter()``, to evaluate a merged model); the originals are restored after."""
    mods = dict(pm.named_modules())
    missing = sorted(set(deltas) - set(mods))
    if missing:
        raise CompositionError(f"no module {missing[0]!r} in this model ({len(missing)} missing)")
    saved = {}
    try:
        with torch.no_grad():
            for k, d in deltas.items():
                w = mods[k].base_layer.weight
                saved[k] = w.detach().clone()
                w.add_(d.to(w.device, w.dtype))
        yield pm
    finally:
        with torch.no_grad():
            for k, w0 in saved.items():
                mods[k].base_layer.weight.copy_(w0)


def proxy_logits(base: torch.Tensor, tuned: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Decoding-time composition (proxy-tuning's arithmetic): ``base + sum_i w_i (tuned_i - base)``."""
    if len(tuned) != len(weights):
        raise CompositionError(f"{len(tuned)} tuned logits but {len(weights)} weights")
    out = base.clone()
    for t, w in zip(tuned, weights):
        out += w * (t - base)
    return out


@torch.no_grad()
def decoding_time_logits(pm, input_ids: torch.Tensor, adapters: Sequence[str], weights: Sequence[float],
                         **kw) -> torch.Tensor:
    """Composed next-token logits of one backbone: the base (adapters off) plus each adapter's logit shift, each
    adapter switched on alone (``set_adapter``). The active adapter is restored after."""
    active = pm.active_adapter
    grads = {n: p.requires_grad for n, p in pm.named_parameters()}  # set_adapter changes them: restored below
    with pm.disable_adapter():
        base = pm(input_ids=input_ids, **kw).logits.float()
    tuned = []
    try:
        for a in adapters:
            pm.set_adapter(a, inference_mode=True)
            tuned.append(pm(input_ids=input_ids, **kw).logits.float())
    finally:
        pm.set_adapter(active, inference_mode=True)
        for n, p in pm.named_parameters():
            p.requires_grad_(grads[n])
    return proxy_logits(base, tuned, weights)


def alignment(delta_a: dict[str, torch.Tensor], delta_b: dict[str, torch.Tensor], q: float,
              b_a: dict[str, torch.Tensor] | None = None, b_b: dict[str, torch.Tensor] | None = None) -> dict:
    """How two adapters line up over their shared modules: cosine of the flattened deltas, Jaccard overlap of
    their core sets (:func:`core_masks` at ``q``), the sign-conflict rate on the entries in both cores, and, given
    their ``lora_B`` matrices per module, the mean squared cosine of the principal angles between their output
    subspaces (1: the same subspace; about r / d for random ones)."""
    from scipy.linalg import subspace_angles

    keys = sorted(set(delta_a) & set(delta_b))
    if not keys:
        raise CompositionError("the two adapters share no module")
    va = torch.cat([delta_a[k].flatten() for k in keys]).double()
    vb = torch.cat([delta_b[k].flatten() for k in keys]).double()
    ma, mb = core_masks({k: delta_a[k] for k in keys}, q), core_masks({k: delta_b[k] for k in keys}, q)
    fa = torch.cat([ma[k].flatten() for k in keys])
    fb = torch.cat([mb[k].flatten() for k in keys])
    both = fa & fb
    out = {"cosine": float(va @ vb / (va.norm() * vb.norm())) if va.norm() > 0 and vb.norm() > 0 else float("nan"),
           "core_jaccard": float(both.sum() / (fa | fb).sum()),
           "sign_conflict": float(((torch.sign(va) != torch.sign(vb)) & both).sum() / both.sum())
           if both.any() else float("nan"), "modules": len(keys)}
    if b_a is not None and b_b is not None:
        ov = [float(np.mean(np.cos(subspace_angles(b_a[k].double().numpy(), b_b[k].double().numpy())) ** 2))
              for k in keys if k in b_a and k in b_b]
        out["subspace_overlap"] = float(np.mean(ov)) if ov else float("nan")
    return out


def lora_b(pm, adapter: str) -> dict[str, torch.Tensor]:
    """``{module name: lora_B weight}`` (out, r) of one adapter: the basis of its output subspace."""
    return {n: m.lora_B[adapter].weight.detach().float().cpu() for n, m in _lora_modules(pm, adapter)}


def retention(loss_base: float, loss_single: float, loss_comp: float) -> float:
    """``(base - composed) / (base - single)``: the share of one adapter's own held-out loss improvement a
    composition keeps (1: all of it, 0: none, < 0: worse than the base); NaN when the adapter alone does not
    improve on the base."""
    gain = loss_base - loss_single
    return float((loss_base - loss_comp) / gain) if gain > 0 else float("nan")
