"""Causal clamping: move a crosscoder's fine-tune-only latents back to base inside the fine-tuned model.

Setting: one peft model (adapter off = base exactly, adapter on = fine-tuned) and a crosscoder with M=2
(index 0 base, 1 fine-tuned) trained on paired activations at one (layer, site). For every batch of rows:

  1. base pass (adapter off): base logits and a_base at the site;            } capture.iter_paired,
  2. fine-tuned pass (adapter on): fine-tuned logits and a_ft at the site;   } one backbone
  3. fine-tuned passes with an edit added to the site's output, for every condition at once (the rows are
     repeated once per condition and run in chunks of ``batch_size`` rows).

The edit ("clamp S back to base"): z = encode(a_base, a_ft) (the crosscoder's own input scaling applies),
and, with each model's decoder row in that model's activation units, d_m,j = W_dec[j, m] / s_m,

    a_ft' = a_ft + sum_{j in S} z_j (d_base,j - d_ft,j)        at positions t >= skip_first (default 1: BOS kept)

i.e. latent j's fine-tuned contribution to the reconstruction is replaced by its base contribution. Because
only the site's output is edited and the layers below it run unedited, a_ft in pass 3 equals a_ft of pass 2.

Measured per row: mean over positions skip_first..T-2 of next-token KL(base || model) (the positions the edit
can reach; positions before skip_first are untouched by construction, so they are left out of every number
here, unlike divergence.py's headline KL which includes position 0). Conditions:
  ft       no edit;  clamp   the edit above;
  random   n_random seeded sets of |S| latents drawn uniformly from ``pool`` (latents that fire on the data,
           S excluded), same edit formula, *matched in edit norm* (``ClampConfig.match_random_norm``, on by default):
           draw i's edit is multiplied by one factor c_i = mean per-token norm of the clamp's edit / mean
           per-token norm of draw i's own edit (both over every edited position of every row; a pre-pass over
           the rows computes them), so the two mean per-token edit norms are equal while the random edit keeps
           its own directions and spread over tokens. Why one factor per draw: rescaling per token cannot work for
           a few random latents, which are silent on most tokens (no direction to rescale) and would get huge
           factors where they barely fire; selecting natural draws within a tolerance rarely finds any, because
           random live latents are mostly shared latents whose two decoders nearly agree, so their natural edits
           are far smaller than the clamped set's. A draw whose own edit is zero everywhere keeps c_i = 1
           (counted in ``meta["n_random_unmatched"]``). Both the natural and the matched norms are reported;
  noise    n_noise draws of Gaussian noise rescaled per token to the clamp edit's norm at that token.
Fraction of KL removed = 1 - mean_rows(KL_edit) / mean_rows(KL_ft) (a ratio of means; every row has the same
number of positions). Per-row arrays are kept so :meth:`ClampResult.summary` can attach paired bootstrap CIs.

Choosing what to clamp (``09_clamp``): :func:`choose_layer` (the crosscoder layer with the most live
fine-tune-only latents, the peak cross/self layer, or a given one) and :func:`choose_latents` (the live
fine-tune-only latents, or the top-r live latents by relative decoder norm, requested or as the fallback when no
fine-tune-only latent fires), which also names the set in words for the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import capture, models, params, stats
from .crosscoder import Crosscoder
from .divergence import BaseKL
from .finetune import autocast


# ----------------------------------------------------------------------------------------- the edit (pure)
@torch.no_grad()
def edit_directions(cc: Crosscoder, base: int = 0, ft: int = 1) -> torch.Tensor:
    """dir_FD = W_dec[:, base] / s_base - W_dec[:, ft] / s_ft: moving latent f back to base, per unit of z_f,
    in raw activation units (float32, on the crosscoder's device)."""
    W = cc.W_dec_FMD.float()
    return W[:, base] / cc.scale_M[base].float() - W[:, ft] / cc.scale_M[ft].float()


@torch.no_grad()
def latent_codes(cc: Crosscoder, a_base_BTD: torch.Tensor, a_ft_BTD: torch.Tensor, base: int = 0, ft: int = 1,
                 use_threshold: bool = True) -> torch.Tensor:
    """z_BTF = encode of the paired activations, token by token (raw activations in; float32, cc's device).

    ``use_threshold=False`` (BatchTopK without a learned threshold) makes z depend on the batch's tokens."""
    B, T, D = a_base_BTD.shape
    x = torch.empty(B * T, cc.M, D, device=cc.device, dtype=torch.float32)
    x[:, base] = a_base_BTD.reshape(B * T, D).to(cc.device, torch.float32)
    x[:, ft] = a_ft_BTD.reshape(B * T, D).to(cc.device, torch.float32)
    return cc.encode(x, use_threshold=use_threshold).reshape(B, T, cc.F)


@torch.no_grad()
def latent_edit(z_BTF: torch.Tensor, dir_FD: torch.Tensor, latents, skip_first: int = 1) -> torch.Tensor:
    """delta_BTD = sum_{j in latents} z_j dir_j, zero at positions < skip_first."""
    S = torch.as_tensor(np.asarray(latents, dtype=np.int64), device=z_BTF.device).reshape(-1)
    delta = z_BTF[..., S].float() @ dir_FD[S].to(z_BTF.device).float()
    delta[:, :skip_first] = 0
    return delta


@torch.no_grad()
def matched_noise(delta_BTD: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian directions with, at every token, the same L2 norm as ``delta_BTD`` (zero where it is zero).
    ``generator`` lives on the CPU so draws do not depend on the device."""
    g = torch.randn(delta_BTD.shape, generator=generator, dtype=torch.float32).to(delta_BTD.device)
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return g * delta_BTD.float().norm(dim=-1, keepdim=True)


@torch.no_grad()
def subspace_edit(a_base_BTD: torch.Tensor, a_ft_BTD: torch.Tensor, U_Dr: torch.Tensor | None,
                  skip_first: int = 1) -> torch.Tensor:
    """delta_BTD = the displacement back to base, ``a_base - a_ft``, projected onto the columns of ``U_Dr``
    (orthonormal), zero at positions < skip_first; ``U_Dr`` None: the whole displacement (the full patch
    ``a_ft -> a_base``, the ceiling of any edit at this site)."""
    d = (a_base_BTD.float() - a_ft_BTD.float())
    if U_Dr is not None:
        U = U_Dr.to(d.device, torch.float32)
        d = (d @ U) @ U.T
    d[:, :skip_first] = 0
    return d


@torch.no_grad()
def pca_basis(delta_ND: torch.Tensor, r: int) -> torch.Tensor:
    """(D, r) top right singular vectors of the displacement rows ``delta_ND`` (uncentred: the mean
    displacement is part of what an edit must undo), float32."""
    if not 1 <= r <= min(delta_ND.shape):
        raise ValueError(f"r must be in [1, {min(delta_ND.shape)}], got {r}")
    _, _, Vh = torch.linalg.svd(delta_ND.double(), full_matrices=False)
    return Vh[:r].T.float().contiguous()


def random_basis(D: int, r: int, seed: int) -> torch.Tensor:
    """(D, r) orthonormal columns spanning a seeded uniformly random r-dimensional subspace."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, r, generator=g, dtype=torch.float64))
    return Q.float().contiguous()


@torch.no_grad()
def displacement_rows(peft_model, rows: torch.Tensor, layer: int, site: str = "resid_post", batch_size: int = 8,
                      device: str = "cpu", dtype: str = "float32", skip_first: int = 1) -> torch.Tensor:
    """(N, D) float32 CPU: ``a_base - a_ft`` at (layer, site) for every position >= skip_first of ``rows``, the
    rows a :func:`pca_basis` is fitted on (take them apart from the rows the clamp is measured on)."""
    key = models.hook_key(layer, site)
    out = [(b.base[key] - b.ft[key])[:, skip_first:].reshape(-1, b.ft[key].shape[-1]).float().cpu()
           for b in capture.iter_paired(peft_model, rows, [layer], [site], batch_size=batch_size, device=device,
                                        dtype=dtype, with_logits=False, progress=False)]
    return torch.cat(out)


K_NEAREST = 8  # frequency matching: a clamped latent's partner is drawn from this many nearest live latents


def random_latent_sets(pool, size: int, n_draws: int, seed: int = 0, *, counts=None, targets=None,
                       k_nearest: int = K_NEAREST) -> list[np.ndarray]:
    """``n_draws`` sorted sets of ``size`` distinct latents drawn (seeded) from ``pool``.

    Without ``counts``: uniformly. With ``counts`` (firing counts indexed by latent id) and ``targets`` (the
    clamped set S, ``size`` latents): *frequency-matched*, each member of S gets a partner drawn uniformly from
    the ``k_nearest`` unused pool latents closest to it in log firing count, so a draw fires about as often as S
    does (S's latents are rare by construction: uniform draws from the live pool are mostly frequent latents)."""
    pool = np.unique(np.asarray(pool, dtype=np.int64))
    if size > len(pool):
        raise ValueError(f"cannot draw {size} latents from a pool of {len(pool)}")
    rng = np.random.default_rng(seed)
    if counts is None:
        return [np.sort(rng.choice(pool, size=size, replace=False)) for _ in range(n_draws)]
    counts = np.asarray(counts, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if len(targets) != size:
        raise ValueError(f"frequency matching needs the {size} target latents, got {len(targets)}")
    if k_nearest < 1:
        raise ValueError(f"k_nearest must be >= 1, got {k_nearest}")
    log_pool = np.log1p(counts[pool])
    out = []
    for _ in range(n_draws):
        free = np.ones(len(pool), dtype=bool)
        chosen = []
        for j in rng.permutation(targets):          # random order: no member of S always picks first
            idx = np.flatnonzero(free)
            gap = np.abs(log_pool[idx] - np.log1p(counts[j]))
            near = idx[np.argsort(gap, kind="stable")[:k_nearest]]
            pick = int(rng.choice(near))
            free[pick] = False
            chosen.append(pool[pick])
        out.append(np.sort(np.asarray(chosen, dtype=np.int64)))
    return out


# ----------------------------------------------------------------------------------------- what to clamp (pure)
def choose_layer(per_layer: Sequence[dict], layer_choice: str, peak_layer: int) -> int:
    """The clamp layer among the crosscoder's layers (``per_layer``: 03_crosscoder's per-layer records with
    ``layer`` and ``n_ft_only_alive``). ``most_ft_only``: the most live fine-tune-only latents, ties to the deeper
    layer; ``peak_ratio``: ``peak_layer``; a layer index as text ("21"): that layer, which must have a crosscoder."""
    trained = [int(r["layer"]) for r in per_layer]
    if layer_choice.isdigit():
        layer = int(layer_choice)
        if layer not in trained:
            raise params.ParameterError(f"layer_choice={layer}: 03_crosscoder trained layers {trained}")
        return layer
    if layer_choice == "most_ft_only":
        return max((int(r["n_ft_only_alive"]), int(r["layer"])) for r in per_layer)[1]
    if layer_choice == "peak_ratio":
        return int(peak_layer)
    raise params.ParameterError(f"layer_choice must be most_ft_only, peak_ratio or a layer index, got {layer_choice!r}")


def parse_latent_set(latent_set: str) -> int | None:
    """None for ``ft_only``, N for ``top_r:N``; anything else is a parameter error."""
    if latent_set == "ft_only":
        return None
    if latent_set.startswith("top_r:") and latent_set[6:].isdigit():
        return int(latent_set[6:])
    raise params.ParameterError(f"latent_set must be 'ft_only' or 'top_r:N', got {latent_set!r}")


def top_r_latents(r_F, live_F, n: int) -> np.ndarray:
    """The (at most) ``n`` live latents of largest relative decoder norm r, ties to the lower index; sorted."""
    live = np.asarray(live_F, bool)
    order = np.argsort(-np.where(live, np.asarray(r_F, float), -np.inf), kind="stable")
    return np.sort(order[:min(int(n), int(live.sum()))])


@dataclass
class ClampedSet:
    latents: np.ndarray      # S, sorted
    kind: str                # "ft_only" | "top_r" | "none" (nothing to clamp)
    label: str               # what S is, in words (for the paper)
    fallback: bool           # top_r because no fine-tune-only latent was live (not requested)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def choose_latents(labels_F, r_F, live_F, latent_set: str = "ft_only", fallback_top_r: int = 32) -> ClampedSet:
    """S for ``latent_set``: ``ft_only`` gives the live fine-tune-only latents (label ``ft_only``), or, when none
    is live and ``fallback_top_r`` > 0, the ``fallback_top_r`` live latents of largest r; ``top_r:N`` gives the
    N live latents of largest r. ``live_F``: fired on the measured rows."""
    labels, live = np.asarray(labels_F), np.asarray(live_F, bool)
    n_req = parse_latent_set(latent_set)
    ft = labels == "ft_only"
    n_ft, n_ft_live = int(ft.sum()), int((ft & live).sum())
    if n_req is None:
        S = np.flatnonzero(ft & live)
        if len(S):
            return ClampedSet(S, "ft_only", f"the {_plural(len(S), 'fine-tune-only latent', 'fine-tune-only latents')}"
                                            " (relative decoder norm above 0.9, live on the measured rows)", False)
        why = ("no fine-tune-only latent exists" if n_ft == 0 else
               f"none of the {_plural(n_ft, 'fine-tune-only latent', 'fine-tune-only latents')} fires on the "
               "measured rows")
        if fallback_top_r <= 0:
            return ClampedSet(S, "none", f"nothing clamped ({why}; the top-r fallback is off)", False)
        S = top_r_latents(r_F, live, fallback_top_r)
        return ClampedSet(S, "top_r", f"the {_plural(len(S), 'latent', 'latents')} with the highest relative "
                                      f"decoder norm ({why})", True)
    S = top_r_latents(r_F, live, n_req)
    ft_note = ("no fine-tune-only latent exists" if n_ft == 0 else
               f"{n_ft_live} of {_plural(n_ft, 'fine-tune-only latent', 'fine-tune-only latents')} live")
    return ClampedSet(S, "top_r", f"the {_plural(len(S), 'latent', 'latents')} with the highest relative decoder "
                                  f"norm (the top-r set was requested; {ft_note})", False)


# ----------------------------------------------------------------------------------------- model passes
def _envoy(wrapped, path: str):
    e = wrapped
    for part in path.split("."):
        e = e[int(part)] if part.isdigit() else getattr(e, part)
    return e


def _site_path(peft_model, layer: int, site: str) -> str:
    target = models.site_module(peft_model, layer, site)
    for name, mod in peft_model.named_modules():
        if mod is target:
            return name
    raise models.ModelError(f"no module path for layer {layer} site {site}")


@torch.no_grad()
def edited_logits(wrapped, path: str, ids_BT: torch.Tensor, delta_BTD: torch.Tensor, device: str = "cpu",
                  dtype: str = "float32") -> torch.Tensor:
    """Logits of the model wrapped in ``wrapped`` (NNsight) with ``delta_BTD`` added to the output of the
    module at ``path`` (the adapter state is whatever the caller set)."""
    saved: list = []
    with autocast(device, dtype):
        with wrapped.trace(ids_BT.to(device)):
            env = _envoy(wrapped, path)
            out = env.output
            if isinstance(out, tuple):
                env.output = (out[0] + delta_BTD.to(out[0].device, out[0].dtype),) + tuple(out[1:])
            else:
                env.output = out + delta_BTD.to(out.device, out.dtype)
            saved.append(wrapped.output.logits.save())
    return saved[0]


def row_kl(logits_base_BTV: torch.Tensor, logits_BTV: torch.Tensor, skip_first: int = 1) -> torch.Tensor:
    """Per-row mean next-token KL(base || model) over positions skip_first..T-2, float64 on the CPU.

    The direct definition; :class:`~adapterscope.divergence.BaseKL` computes the same numbers faster when one
    base is compared with many models."""
    lb = torch.log_softmax(logits_base_BTV[:, skip_first:-1].float(), -1)
    lq = torch.log_softmax(logits_BTV[:, skip_first:-1].float(), -1)
    return (lb.exp() * (lb - lq)).sum(-1).double().mean(-1).cpu()


# ----------------------------------------------------------------------------------------- experiment
@dataclass
class ClampResult:
    """Per-row KLs (float64, one entry per row) of every condition, plus what made them."""
    latents: np.ndarray                  # S
    random_sets: list[np.ndarray]        # the control sets, one per draw
    kl_ft_R: np.ndarray                  # KL(base || ft), no edit
    kl_clamp_R: np.ndarray               # KL(base || ft with S clamped to base)
    kl_random_NR: np.ndarray             # (n_random, R)
    kl_noise_NR: np.ndarray              # (n_noise, R)
    kl_subspace: dict = field(default_factory=dict)  # name -> (R,): the displacement projected on a subspace
    kl_ceiling_R: np.ndarray | None = None  # the full patch a_ft -> a_base at the site (nothing more can go)
    edit_norm: dict = field(default_factory=dict)   # mean per-token L2 norms over edited positions
    meta: dict = field(default_factory=dict)

    @staticmethod
    def fraction_removed(kl_ft_R, kl_edit_R) -> float:
        return float(1.0 - np.mean(kl_edit_R) / np.mean(kl_ft_R))

    def summary(self, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
        """Means, fractions of KL removed with paired (over rows) percentile bootstrap CIs, the clamp-vs-control
        paired effects (per-row KL of the control, averaged over draws, minus the clamp's), and the mean per-token
        edit norms: ``edit_norm_clamp``, ``edit_norm_random`` (the control as applied, averaged over draws) and
        ``edit_norm_random_natural`` (the random sets' own edits before matching)."""
        def frac(ft, ed, axis=-1):
            return 1.0 - ed.mean(axis) / ft.mean(axis)

        def frac_ci(kl_edit_R):
            lo, hi, _ = stats.bootstrap_ci((self.kl_ft_R, kl_edit_R), frac, paired=True, n_resamples=n_boot,
                                           level=level, seed=seed)
            return {"value": self.fraction_removed(self.kl_ft_R, kl_edit_R), "ci_low": lo, "ci_high": hi}

        en = self.edit_norm
        out = {"n_rows": int(len(self.kl_ft_R)), "n_latents": int(len(self.latents)),
               "kl_ft": float(self.kl_ft_R.mean()), "kl_clamp": float(self.kl_clamp_R.mean()),
               "frac_removed_clamp": frac_ci(self.kl_clamp_R), "edit_norm": dict(en),
               "edit_norm_clamp": float(en.get("clamp", math.nan)),
               "edit_norm_random": float(np.mean(en["random"])) if en.get("random") else math.nan,
               "edit_norm_random_natural": (float(np.mean(en["random_natural"])) if en.get("random_natural")
                                            else math.nan), **self.meta}
        conditions = [("random", self.kl_random_NR), ("noise", self.kl_noise_NR),
                      *((name, kl[None]) for name, kl in self.kl_subspace.items())]
        for name, arr in conditions:
            if len(arr) == 0:
                continue
            out[f"kl_{name}"] = float(arr.mean())
            out[f"frac_removed_{name}"] = frac_ci(arr.mean(0))
            out[f"frac_removed_{name}_draws"] = [self.fraction_removed(self.kl_ft_R, a) for a in arr]
            eff = stats.mean_difference(arr.mean(0), self.kl_clamp_R, paired=True, n_boot=n_boot, level=level,
                                        seed=seed)
            out[f"effect_{name}_minus_clamp"] = eff.as_dict()
        if self.kl_ceiling_R is not None:
            out["kl_ceiling"] = float(self.kl_ceiling_R.mean())
            out["frac_removed_ceiling"] = frac_ci(self.kl_ceiling_R)
            ceil = out["frac_removed_ceiling"]["value"]
            out["clamp_over_ceiling"] = out["frac_removed_clamp"]["value"] / ceil if ceil > 0 else math.nan
        return out


@torch.no_grad()
def edit_norm_means(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, sets: Sequence[Sequence[int]], *,
                    subspaces: Sequence[torch.Tensor] = (), site: str = "resid_post", batch_size: int = 8,
                    device: str = "cpu", dtype: str = "float32", use_threshold: bool = True, skip_first: int = 1,
                    base: int = 0, ft: int = 1) -> list[float]:
    """Mean per-token L2 norm of each set's clamp edit (:func:`latent_edit`), then of each subspace's edit
    (:func:`subspace_edit`), over positions >= skip_first of ``rows``: one paired sweep (no logits)."""
    key = models.hook_key(layer, site)
    dir_FD = edit_directions(cc, base, ft)
    sums, n_tok = torch.zeros(len(sets) + len(subspaces), dtype=torch.float64), 0
    for b in capture.iter_paired(peft_model, rows, [layer], [site], batch_size=batch_size, device=device,
                                 dtype=dtype, with_logits=False, progress=False):
        z = latent_codes(cc, b.base[key], b.ft[key], base, ft, use_threshold)
        edits = [latent_edit(z, dir_FD, R, skip_first) for R in sets]
        edits += [subspace_edit(b.base[key], b.ft[key], U, skip_first) for U in subspaces]
        for i, e in enumerate(edits):
            sums[i] += float(e[:, skip_first:].norm(dim=-1).double().sum())
        n_tok += z.shape[0] * (z.shape[1] - skip_first)
    return (sums / max(n_tok, 1)).tolist()


@torch.no_grad()
def fire_counts(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, site: str = "resid_post",
                batch_size: int = 8, device: str = "cpu", dtype: str = "float32", use_threshold: bool = True,
                skip_first: int = 1, progress: bool = True) -> np.ndarray:
    """(F,) number of tokens (positions >= skip_first) on which each latent is non-zero over ``rows``."""
    key = models.hook_key(layer, site)
    counts = torch.zeros(cc.F, dtype=torch.float64)
    batches = capture.iter_paired(peft_model, rows, [layer], [site], batch_size=batch_size, device=device,
                                  dtype=dtype, with_logits=False, progress=False)
    for b in tqdm(batches, total=math.ceil(len(rows) / batch_size), desc="latent firing", disable=not progress):
        z = latent_codes(cc, b.base[key], b.ft[key], use_threshold=use_threshold)[:, skip_first:]
        counts += (z != 0).sum((0, 1)).double().cpu()
    return counts.numpy().astype(np.int64)


@dataclass(frozen=True)
class ClampConfig:
    """How :func:`clamp_experiment` runs; what it clamps (the layer and S), on which rows and against which pool
    and subspaces are its arguments. The defaults and the checks of every setting live here.

    ``n_random``: random-latent control draws (sets of |S| latents drawn with ``seed``); ``n_noise``: matched-noise
    draws (draw i from a CPU generator seeded ``seed + 1000 + i``); ``match_random_norm``: scale each random draw's
    edit to the clamp's mean per-token edit norm (module docstring), False applies the random sets' own edits;
    ``ceiling``: also run the full patch ``a_ft -> a_base`` at the site (unscaled): what any edit there can remove,
    with the adapter still acting in the layers above; ``site``: the activation the edit is added to;
    ``skip_first``: leading positions neither edited nor measured (1: BOS); ``use_threshold``: encode with the
    crosscoder's learned threshold (False: BatchTopK over the batch); ``base``, ``ft``: the crosscoder's model
    indices; ``batch_size``: the rows in any one forward pass; ``device``, ``dtype``: of the forwards;
    ``progress``: tqdm bars."""
    n_random: int = 5
    n_noise: int = 5
    match_random_norm: bool = True
    ceiling: bool = False
    seed: int = 0
    site: str = "resid_post"
    skip_first: int = 1
    use_threshold: bool = True
    base: int = 0
    ft: int = 1
    batch_size: int = 8
    device: str = "cpu"
    dtype: str = "float32"
    progress: bool = True

    def __post_init__(self):
        for name, low in (("n_random", 0), ("n_noise", 0), ("seed", 0), ("skip_first", 0), ("batch_size", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"ClampConfig.{name} must be an integer >= {low}, got {v!r}")
        if self.site not in models.SITES:
            raise ValueError(f"ClampConfig.site must be one of {models.SITES}, got {self.site!r}")
        if {self.base, self.ft} != {0, 1}:
            raise ValueError(f"ClampConfig.base and .ft index the crosscoder's two models: 0 and 1 in either order, "
                             f"got base={self.base!r}, ft={self.ft!r}")


@dataclass
class Controls:
    """The control conditions of one clamping run (:func:`choose_controls`)."""
    random_sets: list[np.ndarray]       # one sorted set of |S| latents per random draw
    pool_size: int                      # latents the draws came from (S excluded); 0 without random draws
    fire_counts_F: np.ndarray | None    # firing counts the draws were frequency-matched on; None: uniform draws
    noise_seeds: list[int]              # one CPU generator seed per matched-noise draw


@dataclass
class EditScales:
    """The factors the scaled conditions are applied with (:func:`measure_edit_norms`)."""
    natural: list[float] | None         # mean per-token norms of the own edits of S, each random set, each subspace
    random_scale: list[float]           # one factor per random draw (1.0: unmatched)
    subspace_scale: list[float]         # one factor per subspace, to the clamp's mean per-token edit norm


def _checked_inputs(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, latents, cfg: ClampConfig
                    ) -> tuple[int, np.ndarray]:
    """(layer as a non-negative index, S sorted and unique) after the checks of the model, crosscoder and rows."""
    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError("clamp_experiment needs a peft model (base + adapter); load one with finetune.load_adapter")
    if cc.M != 2:
        raise ValueError(f"clamping needs a crosscoder over 2 models, got M={cc.M}")
    (layer,) = models.check_layers(peft_model, [layer])
    if rows.ndim != 2 or rows.shape[1] < cfg.skip_first + 2:
        raise ValueError(f"rows must be (n, T) with T >= skip_first + 2, got {tuple(rows.shape)}")
    S = np.unique(np.asarray(latents, dtype=np.int64).reshape(-1))
    if len(S) and (S.min() < 0 or S.max() >= cc.F):
        raise ValueError(f"latent indices must lie in [0, {cc.F})")
    return layer, S


@torch.no_grad()
def choose_controls(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, S: np.ndarray, cfg: ClampConfig,
                    *, pool: Sequence[int] | None = None, fire_counts_F: Sequence[int] | None = None) -> Controls:
    """The random-latent sets and the noise seeds. ``pool``: the latents the random sets may draw from (ids or a
    boolean mask; S is removed from it); None: the latents of ``fire_counts_F`` that fire, or without it those that
    fire on ``rows`` (one paired sweep, :func:`fire_counts`). ``fire_counts_F`` given: each draw is also matched to
    S in firing frequency (:func:`random_latent_sets`)."""
    counts = np.asarray(fire_counts_F) if fire_counts_F is not None else None
    random_sets, pool_size = [], 0
    if cfg.n_random > 0:
        if pool is None and counts is not None:
            pool = counts > 0
        if pool is None:
            pool = np.flatnonzero(fire_counts(peft_model, cc, rows, layer, cfg.site, cfg.batch_size, cfg.device,
                                              cfg.dtype, cfg.use_threshold, cfg.skip_first, cfg.progress) > 0)
        pool = np.asarray(pool)
        pool = np.flatnonzero(pool) if pool.dtype == bool else pool.astype(np.int64)
        pool = np.setdiff1d(pool, S)
        random_sets = random_latent_sets(pool, len(S), cfg.n_random, cfg.seed, counts=counts,
                                         targets=S if counts is not None else None)
        pool_size = int(len(pool))
    return Controls(random_sets, pool_size, counts, [cfg.seed + 1000 + i for i in range(cfg.n_noise)])


@torch.no_grad()
def measure_edit_norms(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, S: np.ndarray,
                       controls: Controls, cfg: ClampConfig, subspaces: dict[str, torch.Tensor] | None = None
                       ) -> EditScales:
    """The factors of the scaled conditions, from the mean per-token norms of every set's and subspace's own edit
    over ``rows`` (one paired sweep, :func:`edit_norm_means`; skipped when nothing is scaled): random draw i gets
    ``clamp norm / its own norm`` with ``match_random_norm`` (1.0 where its own edit is zero everywhere, or without
    matching), each subspace the same ratio with its own edit's norm."""
    sets, bases = controls.random_sets, list((subspaces or {}).values())
    natural = edit_norm_means(peft_model, cc, rows, layer, [S, *sets], subspaces=bases, site=cfg.site,
                              batch_size=cfg.batch_size, device=cfg.device, dtype=cfg.dtype,
                              use_threshold=cfg.use_threshold, skip_first=cfg.skip_first, base=cfg.base, ft=cfg.ft
                              ) if ((sets and cfg.match_random_norm) or bases) else None
    n_sets = 1 + len(sets)
    if natural is not None and cfg.match_random_norm:
        scales = [natural[0] / n if n > 0 else 1.0 for n in natural[1:n_sets]]
    else:
        scales = [1.0] * len(sets)
    sub_scales = [natural[0] / n if n > 0 else 1.0 for n in natural[n_sets:]] if bases else []
    return EditScales(natural, scales, sub_scales)


@torch.no_grad()
def run_edited(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, S: np.ndarray, controls: Controls,
               scales: EditScales, cfg: ClampConfig, subspaces: dict[str, torch.Tensor] | None = None) -> ClampResult:
    """The edited forwards, one paired sweep: per batch of rows the base and fine-tuned passes, then the fine-tuned
    model with each condition's edit added at the site (clamp, random draws scaled by ``scales``, matched noise,
    subspaces, the ceiling), every condition at once in chunks of ``batch_size`` rows; the per-row KLs of every
    condition, the mean per-token edit norms and what made them, as a :class:`ClampResult`."""
    from nnsight import NNsight

    sk, device, dtype, batch_size = cfg.skip_first, cfg.device, cfg.dtype, cfg.batch_size
    subspaces = dict(subspaces or {})
    bases, random_sets, natural = list(subspaces.values()), controls.random_sets, scales.natural
    noise_gens = [torch.Generator().manual_seed(s) for s in controls.noise_seeds]
    n_noise, n_sets = len(noise_gens), 1 + len(random_sets)
    key = models.hook_key(layer, cfg.site)
    path = _site_path(peft_model, layer, cfg.site)
    dir_FD = edit_directions(cc, cfg.base, cfg.ft)
    wrapped = NNsight(peft_model)
    peft_model.eval()
    K = 1 + len(random_sets) + n_noise + len(bases) + int(cfg.ceiling)  # edited conditions per row
    kl_ft, kl_edit = [], []                                  # per batch: (B,), (K, B)
    norm_sum = torch.zeros(K, dtype=torch.float64)
    diff_sum, resid_sum, n_tok = 0.0, 0.0, 0
    batches = capture.iter_paired(peft_model, rows, [layer], [cfg.site], batch_size=batch_size, device=device,
                                  dtype=dtype, with_logits=True, progress=False)
    for b in tqdm(batches, total=math.ceil(len(rows) / batch_size), desc="clamp", disable=not cfg.progress):
        a_base, a_ft = b.base[key], b.ft[key]
        B, T, D = a_ft.shape
        z = latent_codes(cc, a_base, a_ft, cfg.base, cfg.ft, cfg.use_threshold)
        d_clamp = latent_edit(z, dir_FD, S, sk).to(device)
        deltas = [d_clamp] + [(c * latent_edit(z, dir_FD, R, sk)).to(device)
                              for c, R in zip(scales.random_scale, random_sets)]
        deltas += [matched_noise(d_clamp, g) for g in noise_gens]
        deltas += [(c * subspace_edit(a_base, a_ft, U, sk)).to(device) for c, U in zip(scales.subspace_scale, bases)]
        if cfg.ceiling:
            deltas.append(subspace_edit(a_base, a_ft, None, sk).to(device))
        delta_KB = torch.stack(deltas)                      # (K, B, T, D)
        norm_sum += delta_KB[:, :, sk:].float().norm(dim=-1).double().sum((1, 2)).cpu()
        diff = (a_ft - a_base)[:, sk:].float().to(device)
        diff_sum += float(diff.norm(dim=-1).double().sum())
        resid_sum += float((diff + d_clamp[:, sk:]).norm(dim=-1).double().sum())
        n_tok += B * (T - sk)
        # all edited conditions in chunks of batch_size rows, adapter on
        ids = b.input_ids.repeat(K, 1)
        flat = delta_KB.reshape(K * B, T, D)
        kl_base = BaseKL(b.logits_base, sk)   # base terms once; flat row r compares with base row r % B
        kls = [kl_base.row_kl(edited_logits(wrapped, path, ids[i:i + batch_size], flat[i:i + batch_size], device,
                                            dtype), torch.arange(i, min(i + batch_size, K * B)) % B)
               for i in range(0, K * B, batch_size)]
        kl_edit.append(torch.cat(kls).reshape(K, B))
        kl_ft.append(kl_base.row_kl(b.logits_ft))
    kl_edit_KR = torch.cat(kl_edit, dim=1).numpy()
    norms = (norm_sum / max(n_tok, 1)).tolist()
    i_sub = 1 + len(random_sets) + n_noise
    edit_norm = {"clamp": norms[0], "random": norms[1:1 + len(random_sets)], "noise": norms[1 + len(random_sets):i_sub],
                 "random_natural": (natural[1:n_sets] if natural is not None else norms[1:1 + len(random_sets)]),
                 **{name: norms[i_sub + j] for j, name in enumerate(subspaces)},
                 **{f"{name}_natural": natural[n_sets + j] for j, name in enumerate(subspaces)},
                 **({"ceiling": norms[-1]} if cfg.ceiling else {}),
                 "ft_minus_base": diff_sum / max(n_tok, 1), "ft_minus_base_after_clamp": resid_sum / max(n_tok, 1)}
    counts = controls.fire_counts_F
    meta = {"layer": layer, "site": cfg.site, "skip_first": sk, "use_threshold": cfg.use_threshold, "seed": cfg.seed,
            "n_random": len(random_sets), "n_noise": n_noise, "pool_size": controls.pool_size, "n_tokens": n_tok,
            "random_norm_match": ("one factor per draw: mean per-token edit norm equal to the clamp's"
                                  if cfg.match_random_norm else "none: the random sets' own edits"),
            "random_scale": [float(c) for c in scales.random_scale],
            "random_freq_match": (f"each latent of S partnered with one of the {K_NEAREST} unused live latents nearest "
                                  "it in log firing count" if counts is not None else "none: uniform over the pool"),
            "fire_median_clamped": float(np.median(counts[S])) if counts is not None and len(S) else math.nan,
            "fire_median_random": (float(np.median(counts[np.concatenate(random_sets)]))
                                   if counts is not None and random_sets else math.nan),
            "n_random_unmatched": (int(sum(n <= 0 for n in natural[1:n_sets])) if natural is not None
                                   and cfg.match_random_norm else 0),
            "subspace_rank": {name: int(U.shape[1]) for name, U in subspaces.items()},
            "subspace_scale": {name: float(c) for name, c in zip(subspaces, scales.subspace_scale)}}
    return ClampResult(latents=S, random_sets=random_sets, kl_ft_R=torch.cat(kl_ft).numpy(),
                       kl_clamp_R=kl_edit_KR[0], kl_random_NR=kl_edit_KR[1:1 + len(random_sets)],
                       kl_noise_NR=kl_edit_KR[1 + len(random_sets):i_sub],
                       kl_subspace={name: kl_edit_KR[i_sub + j] for j, name in enumerate(subspaces)},
                       kl_ceiling_R=kl_edit_KR[-1] if cfg.ceiling else None, edit_norm=edit_norm, meta=meta)


@torch.no_grad()
def clamp_experiment(peft_model, cc: Crosscoder, rows: torch.Tensor, layer: int, latents: Sequence[int],
                     cfg: ClampConfig = ClampConfig(), *, pool: Sequence[int] | None = None,
                     fire_counts_F: Sequence[int] | None = None, subspaces: dict[str, torch.Tensor] | None = None
                     ) -> ClampResult:
    """The clamping experiment on ``rows`` (n, T) as ``cfg`` sets it up: per-row KLs of every condition.

    ``latents``: S, e.g. ``np.flatnonzero(classify_latents(cc)["labels"] == "ft_only")``. Three steps:
    :func:`choose_controls` (the random sets, drawn from ``pool``, frequency-matched when ``fire_counts_F`` is
    given; pass e.g. ``evaluate(cc, ...)["fire_counts"] > 0`` from the training activations to skip the sweep that
    finds the live latents), :func:`measure_edit_norms` (the factors of the norm-matched conditions) and
    :func:`run_edited` (the edited forwards and the KLs).
    ``subspaces``: name -> (D, r) orthonormal basis; each is a linear baseline that moves the activations back
    towards base along that subspace only (:func:`subspace_edit`), rescaled by one factor to the clamp's mean
    per-token edit norm (e.g. :func:`pca_basis` of the displacement with r = |S|, and :func:`random_basis`)."""
    layer, S = _checked_inputs(peft_model, cc, rows, layer, latents, cfg)
    controls = choose_controls(peft_model, cc, rows, layer, S, cfg, pool=pool, fire_counts_F=fire_counts_F)
    scales = measure_edit_norms(peft_model, cc, rows, layer, S, controls, cfg, subspaces)
    return run_edited(peft_model, cc, rows, layer, S, controls, scales, cfg, subspaces)
