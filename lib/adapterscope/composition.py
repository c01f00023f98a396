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
  base)`` on the logits of one backbone with each adapter switched on in turn; no weight is touched. Two weightings
  (:func:`decoding_weights`): unit (``w_i = 1``: every logit shift at full strength, the logit-space counterpart
  of task arithmetic) and normalised (``w_i = 1 / k`` for ``k`` adapters: the mean of the tuned models' logits, a
  log-linear pool that never extrapolates past its constituents; ``k`` copies of one adapter give that adapter).
* **Alignment** (:func:`alignment`): cosine of the flattened deltas, overlap of the two core sets (Jaccard) and
  their sign-conflict rate, and the principal-angle overlap of the adapters' output subspaces (columns of B).
* **Retention** (:func:`retention`): the share of one adapter's own held-out loss improvement that a composition
  keeps.
* **The study** (:func:`run_composition`, :func:`run_grid_model`): every subset of a model's corpus adapters
  under every method, scored on each constituent's own held-out rows and on neutral text; and its statistics
  (:func:`interference_vs_alignment`, :func:`per_subset`, :func:`best_merge`, :func:`paired_comparison`,
  :func:`replicate_mean`), the ledger's tests of ``12_composition``.
* **Seeds as replicates**: rows carry the training seed of their adapters. The unit of every test stays the subset
  (or the pair); a unit's value is its mean over seeds, the p-values permute units, and with several seeds the
  bootstrap CIs resample units and, within each drawn unit, its seeds (:func:`two_stage_ci`). With one seed every
  statistic is the one-stage one (:func:`adapterscope.stats.mean_ci`, :func:`adapterscope.stats.mean_difference`,
  :func:`adapterscope.stats.spearman`), number for number.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

MERGES = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune")
DECODING = ("decoding_time", "decoding_time_norm")  # decoding-time compositions: unit and normalised weights


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


def decoding_weights(k: int, weight: float = 1.0, normalised: bool = False) -> list[float]:
    """The constituents' weights of a ``k``-adapter decoding-time composition: ``weight`` each (unit: the sum of
    the ``k`` logit shifts) or ``weight / k`` each (normalised: with ``weight`` 1 the composition is the mean of
    the tuned models' logits, ``base + mean_i (ft_i - base)``)."""
    if k < 1:
        raise CompositionError(f"a composition needs at least one adapter, got k={k}")
    return [weight / k if normalised else weight] * k


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


# ------------------------------------------------------------------------------------------ the whole study
@dataclass
class CompositionConfig:
    """What the composition notebook composes and how (weights equal for every constituent)."""

    sizes: tuple[int, ...] = (2, 3, 4)  # how many adapters each composition combines (every subset of that size)
    merges: tuple[str, ...] = ("task_arithmetic", "ties", "dare_linear")  # weight merges (peft's merge_utils)
    density: float = 0.2  # share kept by TIES / DARE
    core_qs: tuple[float, ...] = (0.01,)  # core shares of core-parameter isolation (task arithmetic on the rest)
    align_q: float = 0.01  # core share used by the alignment measures
    weight: float = 1.0  # weight of every constituent (1: each adapter at full strength; decoding_time_norm: / k)
    batch_size: int = 4  # rows per forward pass of the decoding-time composition (its logits are V wide)
    seed: int = 0  # DARE's random drop


def subsets(names: Sequence[str], sizes: Sequence[int]) -> list[tuple[str, ...]]:
    """Every subset of ``names`` of each size in ``sizes`` (sizes above len(names) are skipped)."""
    import itertools

    return [s for k in sizes if 2 <= k <= len(names) for s in itertools.combinations(names, k)]


def method_names(cfg: CompositionConfig) -> list[str]:
    """The compositions compared, weight merges first: ``core_q<q>`` is core isolation at share q,
    ``decoding_time`` the logit arithmetic at unit weights, ``decoding_time_norm`` at weights ``1 / k``."""
    return [*cfg.merges, *[f"core_q{q:g}" for q in cfg.core_qs], *DECODING]


def _ce(logits: torch.Tensor, ids: torch.Tensor) -> tuple[float, int]:
    from .divergence import lse

    nll = lse(logits)[:, :-1] - logits[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1).double()
    return float(nll.sum()), nll.numel()


@torch.no_grad()
def _logits(pm, ids: torch.Tensor, device: str) -> torch.Tensor:
    return pm(input_ids=ids.to(device), use_cache=False).logits.float().cpu()


@torch.no_grad()
def _eval(pm, rows: torch.Tensor, neutral: torch.Tensor, base_neutral: list[torch.Tensor], cfg, device: str):
    """(held-out mean NLL on ``rows``, mean next-token KL(base || model) on ``neutral``) of the model as it is."""
    from .divergence import next_token_kl

    tot = n = 0
    for i in range(0, len(rows), cfg.batch_size):
        t, k = _ce(_logits(pm, rows[i:i + cfg.batch_size], device), rows[i:i + cfg.batch_size])
        tot, n = tot + t, n + k
    kl = [next_token_kl(b, _logits(pm, neutral[j * cfg.batch_size:(j + 1) * cfg.batch_size], device))[:, 1:]
          for j, b in enumerate(base_neutral)]
    return (tot / n if n else float("nan")), (float(torch.cat([x.flatten() for x in kl]).mean()) if kl else float("nan"))


@torch.no_grad()
def _decoding_time(pm, rows: torch.Tensor, names: Sequence[str], subsets_: Sequence[tuple[str, ...]], weight: float,
                   batch_size: int, device: str, base_neutral: list[torch.Tensor] | None = None) -> dict:
    """Per decoding-time method (:data:`DECODING`) and subset: mean NLL on ``rows`` of the composition (base logits
    plus each constituent's logit shift, :func:`proxy_logits`, at the weights of :func:`decoding_weights`), or,
    with ``base_neutral``, its mean KL(base || composition). Both weightings share one forward pass per adapter."""
    from .divergence import next_token_kl

    acc = {m: {s: [0.0, 0] for s in subsets_} for m in DECODING}
    active = pm.active_adapter
    try:
        for j, i in enumerate(range(0, len(rows), batch_size)):
            ids = rows[i:i + batch_size]
            with pm.disable_adapter():
                base = _logits(pm, ids, device)
            tuned = {}
            for a in names:
                pm.set_adapter(a)
                tuned[a] = _logits(pm, ids, device)
            for s in subsets_:
                for m in DECODING:
                    ws = decoding_weights(len(s), weight, normalised=m == "decoding_time_norm")
                    comp = proxy_logits(base, [tuned[a] for a in s], ws)
                    if base_neutral is None:
                        t, k = _ce(comp, ids)
                    else:
                        kl = next_token_kl(base_neutral[j], comp)[:, 1:]
                        t, k = float(kl.sum()), kl.numel()
                    acc[m][s][0] += t
                    acc[m][s][1] += k
    finally:
        pm.set_adapter(active)
    return {m: {s: t / k for s, (t, k) in a.items()} for m, a in acc.items()}


def run_composition(pm, names: Sequence[str], held: dict[str, torch.Tensor], neutral: torch.Tensor,
                    cfg: CompositionConfig, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Every composition of the adapters ``names`` loaded in one peft model ``pm`` (each under its own name),
    evaluated on the held-out rows of each constituent's own corpus (``held[name]``) and on neutral rows.

    Returns ``rows`` (one per subset x method x constituent: held-out NLL, retention = share of the constituent's
    own gain kept, interference = 1 - retention, the composition's neutral KL vs base), ``singles`` (each
    adapter alone: base and own NLL, neutral KL), ``alignment`` (per pair: cosine, core Jaccard, sign conflict,
    subspace overlap) and ``cores`` (core-isolation counts per subset and share)."""
    from tqdm.auto import tqdm

    names = list(names)
    missing = [n for n in names if n not in pm.peft_config]
    if missing:
        raise CompositionError(f"adapters {missing} are not loaded in the model ({sorted(pm.peft_config)})")
    if any(n not in held for n in names):
        raise CompositionError(f"held-out rows missing for {[n for n in names if n not in held]}")
    deltas = {n: lora_deltas(pm, n) for n in names}
    bmats = {n: lora_b(pm, n) for n in names}
    with pm.disable_adapter():
        base_neutral = [_logits(pm, neutral[i:i + cfg.batch_size], device)
                        for i in range(0, len(neutral), cfg.batch_size)]
        base_loss = {n: _eval(pm, held[n], neutral[:0], [], cfg, device)[0] for n in names}
    singles = {}
    active = pm.active_adapter
    for n in names:
        pm.set_adapter(n)
        loss, kl = _eval(pm, held[n], neutral, base_neutral, cfg, device)
        singles[n] = {"loss_base": base_loss[n], "loss_single": loss, "kl_neutral": kl,
                      "gain": base_loss[n] - loss}
    pm.set_adapter(active)
    subs = subsets(names, cfg.sizes)
    rows, cores = [], []

    def add(s, method, losses, kl):
        for c in s:
            r = retention(base_loss[c], singles[c]["loss_single"], losses[c])
            rows.append({"subset": "+".join(s), "size": len(s), "method": method, "corpus": c, "loss": losses[c],
                         "retention": r, "interference": 1 - r, "kl_neutral": kl})

    bar = tqdm(total=len(subs) * len(method_names(cfg)), desc="compositions", disable=not progress)
    for s in subs:
        ds, ws = [deltas[a] for a in s], [cfg.weight] * len(s)
        merged = {m: merge_deltas(ds, ws, m, None if m == "task_arithmetic" else cfg.density, cfg.seed)
                  for m in cfg.merges}
        for q in cfg.core_qs:
            merged[f"core_q{q:g}"], counts = core_isolated_merge(ds, ws, q, seed=cfg.seed)
            cores.append({"subset": "+".join(s), **counts})
        for m, dm in merged.items():
            with pm.disable_adapter(), applied_deltas(pm, dm):
                ev = {c: _eval(pm, held[c], neutral[:0], [], cfg, device)[0] for c in s}
                _, kl = _eval(pm, held[s[0]][:0], neutral, base_neutral, cfg, device)
            add(s, m, ev, kl)
            bar.update()
        del merged
    dec = {c: _decoding_time(pm, held[c], names, [s for s in subs if c in s], cfg.weight, cfg.batch_size, device)
           for c in names}
    dec_kl = _decoding_time(pm, neutral, names, subs, cfg.weight, cfg.batch_size, device, base_neutral)
    for m in DECODING:
        for s in subs:
            add(s, m, {c: dec[c][m][s] for c in s}, dec_kl[m][s])
            bar.update()
    bar.close()
    import itertools

    align = [{"a": a, "b": b, **alignment(deltas[a], deltas[b], cfg.align_q, bmats[a], bmats[b])}
             for a, b in itertools.combinations(names, 2)]
    return {"rows": rows, "singles": singles, "alignment": align, "cores": cores, "subsets": ["+".join(s) for s in subs],
            "methods": method_names(cfg)}


# ------------------------------------------------------------------------------------------ statistics
def _seed(r: dict) -> int:
    """The training seed of a row's (or an alignment's) adapters; 0 for rows written before seeds were kept."""
    return int(r.get("seed", 0))


def _units(values: dict) -> dict[str, dict[int, float]]:
    """``{unit: {seed: value}}`` from ``{unit: value}`` (one replicate, seed 0) or ``{unit: {seed: value}}``."""
    return {k: (dict(v) if isinstance(v, dict) else {0: v}) for k, v in values.items()}


def two_stage_ci(units: Sequence, statistic, n_boot: int, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """``(low, high, degenerate fraction)`` of a seeded percentile bootstrap CI that resamples units and, within
    each drawn unit, its replicates (seeds). ``units[i]``: unit i's replicates, one value each (1-D) or ``d``
    values each (``(replicates, d)``). A resample draws ``n`` units with replacement, then as many replicates of
    each drawn unit as it has, with replacement, and applies ``statistic`` to the drawn units' replicate means (a
    length-``n`` vector, or an ``(n, d)`` array). Resamples on which the statistic is not finite are dropped (their
    share is returned); nan below two units. With one replicate per unit it is the ordinary bootstrap over units
    (other draws than scipy's)."""
    us = [np.asarray(u, float).reshape(len(u), -1) for u in units]
    n = len(us)
    if n < 2 or n_boot < 1:
        return math.nan, math.nan, math.nan
    flat = us[0].shape[1] == 1
    rng = np.random.default_rng(seed)
    dist = np.empty(n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        for b in range(n_boot):
            m = np.stack([us[i][rng.integers(len(us[i]), size=len(us[i]))].mean(0) for i in rng.integers(n, size=n)])
            dist[b] = statistic(m[:, 0] if flat else m)
    ok = np.isfinite(dist)
    if not ok.any():
        return math.nan, math.nan, 1.0
    alpha = (1 - level) / 2
    lo, hi = np.quantile(dist[ok], [alpha, 1 - alpha])
    return float(lo), float(hi), float(1 - ok.mean())


def interference_vs_alignment(rows: Sequence[dict], align: Sequence[dict], method: str = "task_arithmetic",
                              measure: str = "core_jaccard", n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Over the pairs of adapters: Spearman's rho between their alignment ``measure`` and the interference of
    their two-adapter ``method`` composition (mean of 1 - retention over the two constituents); each pair's two
    numbers are means over the seeds (rows' and alignments' ``seed``) that define both. Exact two-sided p (n <= 9
    pairs); bootstrap CI over pairs, with several seeds over pairs and the seeds within them (:func:`two_stage_ci`).
    Undefined with the reason when fewer than 3 pairs are defined."""
    from .stats import spearman, spearman_rho

    by: dict[tuple[str, int], list] = {}
    for r in rows:
        if r["size"] == 2 and r["method"] == method and np.isfinite(r["interference"]):
            by.setdefault((r["subset"], _seed(r)), []).append(r["interference"])
    per: dict[str, list] = {}  # pair -> [(alignment, interference)] over its seeds
    for a in align:
        key = (f"{a['model']}:" if "model" in a else "") + f"{a['a']}+{a['b']}"
        k = (key, _seed(a))
        if k in by and len(by[k]) == 2 and np.isfinite(a.get(measure, np.nan)):
            per.setdefault(key, []).append((float(a[measure]), float(np.mean(by[k]))))
    x = [float(np.mean([p[0] for p in v])) for v in per.values()]
    y = [float(np.mean([p[1] for p in v])) for v in per.values()]
    n_seeds = max((len(v) for v in per.values()), default=0)
    out = {"value": float("nan"), "n": len(x), "n_seeds": n_seeds, "measure": measure, "method": method,
           "reason": "", "x": x, "y": y}
    if len(x) < 3:
        out["reason"] = f"{len(x)} pair(s) with a defined interference and {measure}: a rank correlation needs 3"
        return out
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        out["reason"] = f"{'the alignment' if np.ptp(x) == 0 else 'the interference'} is the same for every pair"
        return out
    r = spearman(x, y, n_boot=n_boot, seed=seed).as_dict()
    out.update(value=r["value"], p_value=r["p_value"], p_method=r["p_method"], ci_low=r["ci_low"],
               ci_high=r["ci_high"], ci_over="pairs")
    if n_seeds > 1:
        lo, hi, _ = two_stage_ci([np.array(v) for v in per.values()],
                                 lambda m: float(spearman_rho(m[:, 0], m[:, 1])), n_boot, seed)
        out.update(ci_low=lo, ci_high=hi, ci_over="pairs and seeds")
    return out


def per_subset(rows: Sequence[dict], method: str, how: str = "mean", by_seed: bool = False) -> dict:
    """Per subset, the mean (``how="mean"``) or minimum (``"min"``) retention of its constituents under
    ``method``, per seed of the adapters (rows' ``seed``; 0 when absent); a (subset, seed) with an undefined
    retention is left out. ``by_seed``: ``{subset: {seed: value}}``; otherwise ``{subset: mean over its seeds}``."""
    f = {"mean": np.mean, "min": np.min}[how]
    by: dict[str, dict[int, list]] = {}
    for r in rows:
        if r["method"] == method:
            by.setdefault(r["subset"], {}).setdefault(_seed(r), []).append(r["retention"])
    out = {s: {k: float(f(v)) for k, v in sorted(d.items()) if np.all(np.isfinite(v))} for s, d in by.items()}
    out = {s: d for s, d in out.items() if d}
    return out if by_seed else {s: float(np.mean(list(d.values()))) for s, d in out.items()}


def replicate_mean(values: dict, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """The mean over units (subsets) of their values, each unit's value its mean over seeds (``values``:
    ``{unit: value}`` or ``{unit: {seed: value}}``): ``value``, ``n`` (units), ``n_seeds`` (the most seeds of a
    unit) and a 95% percentile bootstrap CI over units (:func:`adapterscope.stats.mean_ci`) or, with several
    seeds, over units and the seeds within them (:func:`two_stage_ci`). Undefined, with the reason, below 2 units."""
    from .stats import mean_ci

    u = _units(values)
    n_seeds = max((len(d) for d in u.values()), default=0)
    r = mean_ci([float(np.mean(list(d.values()))) for d in u.values()], n_boot, seed)
    if r.n < 2:
        return {"value": math.nan, "n": r.n, "n_seeds": n_seeds,
                "reason": f"{r.n} subset(s) with a defined retention: a CI needs 2"}
    out = {"value": r.value, "n": r.n, "n_seeds": n_seeds, "reason": "", "ci_low": r.ci_low, "ci_high": r.ci_high,
           "ci_over": "subsets"}
    if n_seeds > 1:
        out["ci_low"], out["ci_high"], _ = two_stage_ci([list(d.values()) for d in u.values()], np.mean, n_boot, seed)
        out["ci_over"] = "subsets and seeds"
    return out


def paired_comparison(a: dict, b: dict, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """mean(a - b) over the subsets both define, paired by subset and, within it, by seed (``a``, ``b``:
    ``{subset: value}`` or ``{subset: {seed: value}}``; a subset's difference is its mean over the seeds both
    define): two-sided sign-flip permutation p over subsets (exact for few subsets) and a bootstrap CI over subsets
    (:func:`stats.mean_difference`), with several seeds over subsets and the seeds within them
    (:func:`two_stage_ci`). Subsets are the units; they share constituents, so the p treats overlapping subsets as
    independent (stated with the finding)."""
    from .stats import mean_difference

    ua, ub = _units(a), _units(b)
    pairs = {}
    for k in ua:
        common = sorted(set(ua[k]) & set(ub.get(k, {})))
        if common:
            pairs[k] = (np.array([ua[k][s] for s in common]), np.array([ub[k][s] for s in common]))
    n_seeds = max((len(v[0]) for v in pairs.values()), default=0)
    out = {"value": float("nan"), "n": len(pairs), "n_seeds": n_seeds, "reason": ""}
    if len(pairs) < 2:
        out["reason"] = f"{len(pairs)} subset(s) defined under both methods: a paired test needs 2"
        return out
    r = mean_difference([float(x.mean()) for x, _ in pairs.values()], [float(y.mean()) for _, y in pairs.values()],
                        paired=True, n_boot=n_boot, seed=seed).as_dict()
    out.update(value=r["value"], p_value=r["p_value"], p_method=r["p_method"], ci_low=r["ci_low"],
               ci_high=r["ci_high"], mean_a=r["extra"]["mean_a"], mean_b=r["extra"]["mean_b"], ci_over="subsets")
    if n_seeds > 1:
        lo, hi, _ = two_stage_ci([x - y for x, y in pairs.values()], np.mean, n_boot, seed)
        out.update(ci_low=lo, ci_high=hi, ci_over="subsets and seeds")
    return out


def best_merge(rows: Sequence[dict], merges: Sequence[str], how: str = "min", by_seed: bool = False) -> dict:
    """Per subset and seed, the best weight merge's ``how`` retention (the maximum over ``merges``): chosen per
    subset and seed after the fact, which favours the merges in any comparison against them. ``by_seed``:
    ``{subset: {seed: value}}``; otherwise ``{subset: mean over its seeds}``."""
    per = [per_subset(rows, m, how, by_seed=True) for m in merges]
    out = {}
    for s in (set.intersection(*(set(p) for p in per)) if per else set()):
        seeds = sorted(set.intersection(*(set(p[s]) for p in per)))
        if seeds:
            out[s] = {k: max(p[s][k] for p in per) for k in seeds}
    return out if by_seed else {s: float(np.mean(list(d.values()))) for s, d in out.items()}


def run_grid_model(model: str, corpora: Sequence[str], seed: int, cfg: CompositionConfig, eval_rows: int,
                   neutral_n: int, neutral_len: int, device: str = "cpu", on_input=None,
                   progress: bool = True) -> dict[str, Any]:
    """:func:`run_composition` on the main grid's adapters of one model and seed (``01_finetune``, layer_control
    none), one per corpus: each adapter is scored on the first ``eval_rows`` held-out rows of its own corpus split
    (the split and packing of its own run) and every composition on ``neutral_n`` seeded base-model samples.
    Subsets carry the model name; rows, alignments and core counts the model and the seed (the statistics treat
    seeds as replicates of a subset)."""
    from . import corpora as corpora_mod
    from . import finetune, models, params, paths, results

    dirs, ft = {}, {}
    for c in corpora:
        rid = params.cell_run_id(model, c, "none", seed)
        try:
            ft[c] = results.load("01_finetune", rid)
        except FileNotFoundError:
            raise CompositionError(f"no 01_finetune run {rid}: run the grid first (`make paper`, or `python -m "
                                   f"adapterscope.pipeline run 01_finetune -p model={model} -p corpus={c} "
                                   f"-p seed={seed}`)") from None
        dirs[c] = paths.project_root() / ft[c]["values"]["adapter_dir"]
        if on_input:
            on_input(f"01/{rid}", results.sha256_file(results.results_path("01_finetune", rid)))
            on_input(f"adapter/{rid}", dirs[c])
    if on_input:
        on_input(f"model/{model}", models.fingerprint(model))
    base, tok = models.load_model(model, device=device)
    pm = finetune.load_adapters(base, dirs, model_name=model)
    held = {}
    for c in corpora:
        p = ft[c]["provenance"]["params"]
        data = corpora_mod.load_corpus(c, heldout_frac=p["heldout_frac"], seed=p["seed"])
        held[c] = finetune.pack_documents(tok, data.heldout, p["seq_len"])[:eval_rows]
    with pm.disable_adapter():
        neutral = corpora_mod.neutral_samples(pm, tok, n=neutral_n, length=neutral_len, seed=seed, device=device)
    out = run_composition(pm, list(corpora), held, neutral, cfg, device=device, progress=progress)
    for r in out["rows"]:
        r["model"], r["seed"] = model, seed
        r["subset"] = f"{model}:{r['subset']}"
    for r in out["alignment"] + out["cores"]:
        r["model"], r["seed"] = model, seed
    out["model"], out["seed"] = model, seed
    out["eval_rows"] = {c: int(len(h)) for c, h in held.items()}
    return out
