"""Model-diffing crosscoder: a sparse dictionary trained jointly on paired activations.

Pure tool: imports only torch / numpy / safetensors / stdlib and ``paths`` (itself stdlib only; for the atomic
folder exchange). Training: ``crosscoder_train``.

Shapes are carried in names: B tokens, M models (0 = base, 1 = fine-tuned), D model
dimension, F latents.  Inputs are ``x_BMD`` (B, M, D) raw activations.

Model (Lindsey et al. 2024; Minder et al. 2025, arXiv:2504.02922)::

    xs_m   = s_m * x_m                                  per-model scalar scaling (buffer)
    pre_f  = sum_m xs_m . W_enc[f, m] + b_enc[f]        one shared latent layer
    n_f    = sum_m ||W_dec[f, m]||                      decoder norm of latent f
    v_f    = relu(pre_f) * n_f                          norm-weighted activation
    z      = BatchTopK(v)  (training: top k*B of v over the whole batch, value pre_f)
           | 1[v_f > theta] * pre_f   (inference: learned global threshold theta)
           | relu(pre_f)              (sparsity="l1" baseline)
    xhat_m = (sum_f z_f W_dec[f, m] + b_dec[m]) / s_m    reconstruction in raw space

Public API: ``Crosscoder`` (encode / decode / forward / save / load), ``batch_topk_flat``,
``estimate_scaling_factors``, ``StreamingMoments``, ``evaluate``, ``relative_decoder_norms``,
``classify_latents``, ``latent_scaling``, ``reconstruction_ratio``.  All metrics take any
iterable of (B, M, D) batches and accumulate in float64.

Parameters are stored latent-major (``W_enc_FMD``, ``W_dec_FMD``: (F, M, D)), which makes
the sparse gathers of training contiguous; ``W_enc_MDF`` / ``W_dec_MFD`` are views.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from .paths import atomic_path

FORMAT = "adapterscope.crosscoder/1"
SPARSITIES = ("batchtopk", "l1")


# ----------------------------------------------------------------------------- selection
def batch_topk_flat(v_BF: torch.Tensor, K: int) -> torch.Tensor:
    """Flat indices (ascending) of the K largest *positive* entries of ``v_BF``.

    Exact BatchTopK without a full sort: a strided sample of ``v`` gives a threshold
    guess that keeps ~1.25K candidates; the K-th largest candidate is then found
    with ``kthvalue`` (ties broken towards the lowest flat index).  Falls back to
    lower guesses, and finally to "all positives", so the result is always exact.
    Returns fewer than K indices only when fewer than K entries are positive.
    """
    assert v_BF.ndim == 2
    B, F = v_BF.shape
    flat = v_BF.reshape(-1)
    N = flat.numel()
    K = int(K)
    if K <= 0:
        return torch.zeros(0, dtype=torch.long, device=v_BF.device)
    if N <= 1 << 18:  # small: a plain top-k is cheapest
        vals, idx = torch.topk(flat.float(), min(K, N), sorted=False)
        return torch.sort(idx[vals > 0]).values
    step = max(1, N // 65536)
    while math.gcd(step, F) != 1:  # sample lattice must cycle through all columns
        step += 1
    sample = flat[::step].float()
    S = sample.numel()
    idx = None
    for rho in (1.25, 3.0):
        c = int(math.ceil(rho * K * S / N)) + 8
        if c >= S:
            break
        t = float(torch.kthvalue(sample, S - c).values)
        if t <= 0.0:
            break
        cand = torch.nonzero(flat >= t).squeeze(1)
        if cand.numel() >= K:
            idx = cand
            break
    if idx is None:
        idx = torch.nonzero(flat > 0).squeeze(1)
    if idx.numel() > K:
        vals = flat[idx].float()
        kth = torch.kthvalue(vals, idx.numel() - K + 1).values
        keep = vals > kth
        need = K - int(keep.sum())
        if need > 0:
            keep[torch.nonzero(vals == kth).squeeze(1)[:need]] = True
        idx = idx[keep]
    return idx


# ----------------------------------------------------------------------------- model
class Crosscoder(nn.Module):
    """Crosscoder over M models (M=1 is an ordinary SAE).

    Args:
        n_models, d_model, n_latents: M, D, F.
        k: mean active latents per token for BatchTopK (ignored by ``l1``).
        sparsity: ``"batchtopk"`` (default) or ``"l1"`` (ReLU encoder + norm-weighted L1).
        dec_init_norm: norm of each per-model decoder row at init; encoder = decoder^T.
        seed: seed of the initialisation (a private generator; global RNG untouched).
        hparams: JSON-able dict saved verbatim (training configuration).
    """

    def __init__(self, n_models: int, d_model: int, n_latents: int, k: int = 32,
                 sparsity: str = "batchtopk", *, dec_init_norm: float = 0.1, seed: int = 0,
                 device: torch.device | str | None = None, hparams: dict | None = None):
        super().__init__()
        if sparsity not in SPARSITIES:
            raise ValueError(f"sparsity must be one of {SPARSITIES}, got {sparsity!r}")
        M, D, F = int(n_models), int(d_model), int(n_latents)
        self.M, self.D, self.F, self.k, self.sparsity = M, D, F, int(k), sparsity
        self.hparams = dict(hparams or {})
        g = torch.Generator().manual_seed(int(seed))
        W_dec_FMD = torch.randn(F, M, D, generator=g)
        W_dec_FMD *= dec_init_norm / W_dec_FMD.norm(dim=-1, keepdim=True)
        self.W_enc_FMD = nn.Parameter(W_dec_FMD.clone())
        self.b_enc_F = nn.Parameter(torch.zeros(F))
        self.W_dec_FMD = nn.Parameter(W_dec_FMD)
        self.b_dec_MD = nn.Parameter(torch.zeros(M, D))
        self.register_buffer("scale_M", torch.ones(M))
        # norm-weighted activation threshold for inference; < 0 means "not learned yet"
        self.register_buffer("threshold", torch.tensor(-1.0))
        if device is not None:
            self.to(device)

    # -- views ---------------------------------------------------------------------
    @property
    def W_enc_MDF(self) -> torch.Tensor:
        return self.W_enc_FMD.permute(1, 2, 0)

    @property
    def W_dec_MFD(self) -> torch.Tensor:
        return self.W_dec_FMD.permute(1, 0, 2)

    @property
    def device(self) -> torch.device:
        return self.W_enc_FMD.device

    def decoder_norms_FM(self) -> torch.Tensor:
        return self.W_dec_FMD.norm(dim=-1)

    def decoder_norm_F(self) -> torch.Tensor:
        """n_f = sum over models of ||W_dec[f, m]|| (the BatchTopK / L1 weighting)."""
        return self.decoder_norms_FM().sum(-1)

    # -- initialisation from data -------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x_BMD: torch.Tensor, estimate_scale: bool = True) -> None:
        """Set scaling factors (mean ||s_m x_m|| = sqrt(D)), b_dec = mean of the scaled
        batch, and b_enc = -b_dec . W_enc so that initially pre = (xs - b_dec) . W_enc."""
        x = x_BMD.to(self.device, torch.float32)
        assert x.ndim == 3 and x.shape[1:] == (self.M, self.D), x.shape
        if estimate_scale:
            self.scale_M.copy_(scaling_factors_from_norms(x.norm(dim=-1).double().mean(0), self.D))
        xs = x * self.scale_M[None, :, None]
        self.b_dec_MD.copy_(xs.mean(0))
        self.b_enc_F.copy_(-(self.W_enc_FMD * self.b_dec_MD[None]).sum((1, 2)))

    # -- encode / decode -----------------------------------------------------------
    def scale_in(self, x_BMD: torch.Tensor) -> torch.Tensor:
        assert x_BMD.ndim == 3 and x_BMD.shape[1:] == (self.M, self.D), x_BMD.shape
        return x_BMD.to(self.W_enc_FMD.dtype) * self.scale_M[None, :, None]

    def pre_activations(self, xs_BMD: torch.Tensor) -> torch.Tensor:
        """pre_BF from *scaled* inputs."""
        B = xs_BMD.shape[0]
        W = self.W_enc_FMD.reshape(self.F, self.M * self.D)
        pre_BF = torch.addmm(self.b_enc_F, xs_BMD.reshape(B, -1), W.t())
        assert pre_BF.shape == (B, self.F)
        return pre_BF

    def encode(self, x_BMD: torch.Tensor, use_threshold: bool = True, k: int | None = None,
               scaled: bool = False) -> torch.Tensor:
        """Dense latent codes z_BF of raw activations (scaled inputs if ``scaled``).

        BatchTopK: ``use_threshold=True`` keeps pre_f where relu(pre_f) * n_f > theta
        (per token, batch-independent); ``False`` keeps the top k*B norm-weighted values
        over the batch (the training rule).  L1: relu(pre)."""
        xs = x_BMD if scaled else self.scale_in(x_BMD)
        pre = self.pre_activations(xs)
        if self.sparsity == "l1":
            return torch.relu(pre)
        v = torch.relu(pre) * self.decoder_norm_F()
        if use_threshold:
            thr = float(self.threshold)
            if thr < 0:
                raise ValueError("threshold not learned yet: use use_threshold=False")
            return torch.where(v > thr, pre, torch.zeros((), device=pre.device, dtype=pre.dtype))
        idx = batch_topk_flat(v, (k or self.k) * pre.shape[0])
        z = torch.zeros_like(pre)
        z.view(-1)[idx] = pre.reshape(-1)[idx]
        return z

    def decode(self, z_BF: torch.Tensor, unscale: bool = True) -> torch.Tensor:
        """Reconstruction (B, M, D): raw activation space if ``unscale`` else scaled."""
        B = z_BF.shape[0]
        assert z_BF.shape == (B, self.F), z_BF.shape
        W = self.W_dec_FMD.reshape(self.F, self.M * self.D)
        rec = torch.addmm(self.b_dec_MD.reshape(1, -1), z_BF.to(W.dtype), W).view(B, self.M, self.D)
        return rec / self.scale_M[None, :, None] if unscale else rec

    def forward(self, x_BMD: torch.Tensor, use_threshold: bool = True) -> torch.Tensor:
        return self.decode(self.encode(x_BMD, use_threshold=use_threshold))

    # -- persistence ---------------------------------------------------------------
    def config_dict(self) -> dict:
        return {"format": FORMAT, "n_models": self.M, "d_model": self.D, "n_latents": self.F,
                "k": self.k, "sparsity": self.sparsity,
                "scaling_factors": [float(s) for s in self.scale_M.cpu()],
                "threshold": float(self.threshold), "hparams": self.hparams}

    def save(self, directory: str | os.PathLike, provenance: dict | None = None) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (+ ``provenance.json``) atomically, through
        :func:`paths.atomic_path`: everything goes to a hidden temporary beside ``directory`` (``.<name>.*.tmp``)
        which then takes its place in one exchange."""
        from safetensors.torch import save_file
        out = Path(directory)
        with atomic_path(out) as tmp:
            tmp.mkdir()
            tensors = {n: t.detach().to("cpu").contiguous() for n, t in self.state_dict().items()}
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
            (tmp / "config.json").write_text(json.dumps(self.config_dict(), indent=2))
            if provenance is not None:
                (tmp / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str))
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike, device: torch.device | str = "cpu") -> "Crosscoder":
        from safetensors.torch import load_file
        d = Path(directory)
        cfg = json.loads((d / "config.json").read_text())
        if cfg.get("format") != FORMAT:
            raise ValueError(f"{d}: not a {FORMAT} artefact")
        cc = cls(cfg["n_models"], cfg["d_model"], cfg["n_latents"], cfg["k"], cfg["sparsity"],
                 hparams=cfg.get("hparams"))
        cc.load_state_dict(load_file(str(d / "model.safetensors"), device="cpu"))
        return cc.to(device)


def scaling_factors_from_norms(mean_norm_M: torch.Tensor, d_model: int) -> torch.Tensor:
    return (math.sqrt(d_model) / mean_norm_M.clamp_min(1e-12)).float()


@torch.no_grad()
def estimate_scaling_factors(batches: Iterable[torch.Tensor], n_batches: int | None = None) -> torch.Tensor:
    """s_M with mean_i ||s_m x_{i,m}|| = sqrt(D) over (the first n_batches of) a stream."""
    tot, n, D = None, 0, None
    for i, x in enumerate(batches):
        if n_batches is not None and i >= n_batches:
            break
        x = torch.as_tensor(x)
        D = x.shape[-1]
        s = x.double().norm(dim=-1).sum(0)
        tot = s if tot is None else tot + s
        n += x.shape[0]
    if tot is None:
        raise ValueError("empty stream")
    return scaling_factors_from_norms(tot.cpu() / n, D)


# ----------------------------------------------------------------------------- statistics
class StreamingMoments:
    """Per-coordinate mean / variance of a stream, exact in float64 (Chan et al. merge).

    ``update(x)`` takes x of shape (N, *shape).  ``m2`` is the sum of squared deviations
    about the running mean, so ``m2.sum()`` is the total sum of squares SST."""

    def __init__(self, shape: tuple[int, ...] | int = ()):
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.n = 0
        self.mean = torch.zeros(self.shape, dtype=torch.float64)
        self.m2 = torch.zeros(self.shape, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> "StreamingMoments":
        x = torch.as_tensor(x).detach().to("cpu", torch.float64)
        assert tuple(x.shape[1:]) == self.shape, (x.shape, self.shape)
        nb = x.shape[0]
        if nb == 0:
            return self
        mb = x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        n = self.n + nb
        delta = mb - self.mean
        self.m2 += m2b + delta ** 2 * (self.n * nb / n)
        self.mean += delta * (nb / n)
        self.n = n
        return self

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / max(self.n, 1)

    @property
    def sst(self) -> float:
        return float(self.m2.sum())


def _iter_dev(batches, cc: Crosscoder, max_batches: int | None):
    for i, x in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        x = torch.as_tensor(x).to(cc.device, torch.float32)
        assert x.ndim == 3 and x.shape[1:] == (cc.M, cc.D), x.shape
        yield x


@torch.no_grad()
def calibrate_threshold(cc: Crosscoder, batches: Iterable[torch.Tensor], k: int | None = None,
                        max_tokens: int = 16384) -> dict:
    """Set the inference threshold theta so that the mean L0 over the given tokens is ``k`` (default: the
    crosscoder's k), i.e. theta sits between the (k*N)-th and (k*N+1)-th largest norm-weighted activation of
    those N tokens (at most ``max_tokens``).  The EMA of the batch minimum learned during training estimates the
    same quantity but lags while the code distribution still moves; calibrating afterwards on data makes a
    token's code batch-independent *and* as sparse as trained.  Returns the old and new threshold and N."""
    if cc.sparsity == "l1":
        raise ValueError("calibrate_threshold applies to BatchTopK crosscoders, not L1")
    k = int(k or cc.k)
    vals, n = [], 0
    for x in _iter_dev(batches, cc, None):
        x = x[: max_tokens - n]
        v = torch.relu(cc.pre_activations(cc.scale_in(x))) * cc.decoder_norm_F()
        vals.append(v[v > 0].float().cpu())
        n += x.shape[0]
        if n >= max_tokens:
            break
    if n == 0:
        raise ValueError("calibrate_threshold needs at least one token")
    v = torch.cat(vals)
    m = k * n
    old = float(cc.threshold)
    if v.numel() <= m:  # fewer positive activations than k per token: keep every positive one
        new = 0.0
    else:
        top = torch.topk(v, m + 1).values
        new = float((top[m - 1] + top[m]) / 2)
    cc.threshold.fill_(new)
    return {"threshold_ema": old, "threshold": new, "tokens": n, "k": k}


@torch.no_grad()
def evaluate(cc: Crosscoder, batches: Iterable[torch.Tensor], use_threshold: bool = True,
             max_batches: int | None = None) -> dict:
    """Streaming reconstruction/sparsity metrics (float64 accumulation, raw space).

    fve[m] = 1 - SSE_m / SST_m with SSE_m = sum_i ||x_im - xhat_im||^2 and
    SST_m = sum_i ||x_im - mean_m||^2 (per-dimension mean over the whole stream).
    l0 = mean number of non-zero latents per token; dead_fraction = fraction of
    latents that never fired over the stream."""
    moms = StreamingMoments((cc.M, cc.D))
    sse = torch.zeros(cc.M, dtype=torch.float64)
    fires = torch.zeros(cc.F, dtype=torch.float64)
    nnz, n = 0.0, 0
    for x in _iter_dev(batches, cc, max_batches):
        z = cc.encode(x, use_threshold=use_threshold)
        rec = cc.decode(z)
        sse += ((x - rec).double() ** 2).sum((0, 2)).cpu()
        active = z != 0
        fires += active.sum(0).double().cpu()
        nnz += float(active.sum())
        n += x.shape[0]
        moms.update(x)
    sst = moms.m2.sum(-1)
    fve = (1 - sse / sst).tolist()
    return {"fve": fve, "fve_mean": float(np.mean(fve)), "mse": (sse / max(n, 1)).tolist(),
            "l0": nnz / max(n, 1), "dead_fraction": float((fires == 0).double().mean()),
            "fire_counts": fires.numpy(), "n_tokens": n}


# ----------------------------------------------------------------------------- diffing
@torch.no_grad()
def relative_decoder_norms(cc: Crosscoder, base: int = 0, ft: int = 1) -> torch.Tensor:
    """r_f = ||d_ft,f|| / (||d_base,f|| + ||d_ft,f||) in the crosscoder's (scaled) space."""
    n = cc.decoder_norms_FM().float().cpu()
    return n[:, ft] / (n[:, base] + n[:, ft]).clamp_min(1e-12)


@torch.no_grad()
def classify_latents(cc: Crosscoder, base: int = 0, ft: int = 1, base_only_max: float = 0.1,
                     ft_only_min: float = 0.9, shared_range: tuple[float, float] = (0.3, 0.7)) -> dict:
    """Relative-decoder-norm classes: 'base_only' (r < base_only_max), 'ft_only'
    (r > ft_only_min), 'shared' (lo <= r <= hi), 'other'.  ``cosine`` is the cosine of the
    base and fine-tuned decoder rows of every latent (reported mean over shared)."""
    r = relative_decoder_norms(cc, base, ft)
    lo, hi = shared_range
    labels = np.full(cc.F, "other", dtype=object)
    labels[(r < base_only_max).numpy()] = "base_only"
    labels[(r > ft_only_min).numpy()] = "ft_only"
    labels[((r >= lo) & (r <= hi)).numpy()] = "shared"
    W = cc.W_dec_FMD.float().cpu()
    cos = torch.nn.functional.cosine_similarity(W[:, base], W[:, ft], dim=-1, eps=1e-12)
    shared = labels == "shared"
    return {"r": r.numpy(), "labels": labels, "cosine": cos.numpy(),
            "counts": {c: int((labels == c).sum()) for c in ("base_only", "ft_only", "shared", "other")},
            "shared_cosine_mean": float(cos.numpy()[shared].mean()) if shared.any() else float("nan")}


@torch.no_grad()
def latent_scaling(cc: Crosscoder, batches: Iterable[torch.Tensor], latents=None, base: int = 0,
                   ft: int = 1, use_threshold: bool = True, include_bias: bool = True,
                   nu_eps_max: float = 0.2, nu_rec_max: float = 0.5,
                   max_batches: int | None = None, dtype: torch.dtype = torch.float32) -> dict:
    """Latent Scaling (Minder et al. 2025, arXiv:2504.02922), closed form, streaming.

    Everything lives in the crosscoder's scaled space (xs_m = s_m x_m, where the decoders
    live).  For latent j with activation f_j(x) and fine-tuned decoder d_j = W_dec[j, ft],
    and a target y(x) in model m's space::

        beta_j(y) = sum_i f_j(x_i) <d_j, y(x_i)> / (||d_j||^2 sum_i f_j(x_i)^2)

    (least squares of y on f_j d_j).  With xhat_m = sum_f f_f W_dec[f, m] + b_dec[m]:

        error target          y^eps_m = xs_m - xhat_m + f_j W_dec[j, m]
                              (residual of the reconstruction *without* latent j)
        reconstruction target y^rec_m = xhat_m   (full reconstruction; latent j's own
                              contribution included, b_dec[m] only if include_bias)

        nu_eps = beta(y^eps_base) / beta(y^eps_ft),   nu_rec = beta(y^rec_base) / beta(y^rec_ft)

    (as in the authors' public code).  For a truly fine-tune-only latent both are ~0;
    a high nu_eps means the base activation still contains d_j (Complete Shrinkage),
    a high nu_rec that other latents reconstruct d_j in the base (Latent Decoupling).
    ``genuine_ft_only = (nu_eps < nu_eps_max) & (nu_rec < nu_rec_max) & n_active > 0``;
    it is meant for latents already fine-tune-only by relative decoder norm (pass them
    as ``latents``, e.g. ``np.flatnonzero(classify_latents(cc)["labels"] == "ft_only")``).
    """
    if cc.M < 2:
        raise ValueError("latent scaling needs M >= 2")
    J = torch.arange(cc.F) if latents is None else torch.as_tensor(latents, dtype=torch.long).reshape(-1)
    Jd = J.to(cc.device)
    W = cc.W_dec_FMD.to(dtype)
    d_JD = W[Jd, ft]
    num = torch.zeros(4, len(J), dtype=torch.float64)
    ff = torch.zeros(len(J), dtype=torch.float64)
    n_active = torch.zeros(len(J), dtype=torch.float64)
    for x in _iter_dev(batches, cc, max_batches):
        xs = cc.scale_in(x).to(dtype)
        z = cc.encode(xs.float(), use_threshold=use_threshold, scaled=True).to(dtype)
        zJ = z[:, Jd]
        rec_b = z @ W[:, base] + cc.b_dec_MD[base].to(dtype)
        rec_f = z @ W[:, ft] + cc.b_dec_MD[ft].to(dtype)
        Y = torch.stack([xs[:, base] - rec_b, xs[:, ft] - rec_f, rec_b, rec_f])
        if not include_bias:
            Y[2] -= cc.b_dec_MD[base].to(dtype)
            Y[3] -= cc.b_dec_MD[ft].to(dtype)
        P = Y @ d_JD.t()  # (4, B, J)
        num += (zJ[None] * P).double().sum(1).cpu()
        ff += (zJ.double() ** 2).sum(0).cpu()
        n_active += (zJ != 0).sum(0).double().cpu()
    dd = d_JD.double().cpu()
    num[0] += ff * (dd * W[Jd, base].double().cpu()).sum(-1)
    num[1] += ff * (dd * dd).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = (num / (ff * (dd * dd).sum(-1))[None]).numpy()
        nu_eps, nu_rec = beta[0] / beta[1], beta[2] / beta[3]
    genuine = (nu_eps < nu_eps_max) & (nu_rec < nu_rec_max) & (n_active.numpy() > 0)
    return {"latents": J.numpy(), "beta_eps_base": beta[0], "beta_eps_ft": beta[1],
            "beta_rec_base": beta[2], "beta_rec_ft": beta[3], "nu_eps": nu_eps, "nu_rec": nu_rec,
            "n_active": n_active.numpy(), "genuine_ft_only": genuine}


@torch.no_grad()
def reconstruction_ratio(cc: Crosscoder, batches: Iterable[torch.Tensor], base: int = 0, ft: int = 1,
                         use_threshold: bool = True, max_batches: int | None = None,
                         massive_factor: float | None = 10.0) -> dict:
    """Cross / self reconstruction errors from the same joint latents, raw space.

    z = encode(a_base, a_ft);  dec_m(z) = (sum_f z_f W_dec[f, m] + b_dec[m]) / s_m.
    Over tokens i (means of squared L2 errors)::

        self_ft   = mean_i ||a_ft,i   - dec_ft(z_i)||^2    cross_ft   = mean_i ||a_ft,i   - dec_base(z_i)||^2
        self_base = mean_i ||a_base,i - dec_base(z_i)||^2  cross_base = mean_i ||a_base,i - dec_ft(z_i)||^2
        ratio_ft = cross_ft / self_ft,   ratio_base = cross_base / self_base

    Normalised variants: fvu_* = error sum / SST of that model's activations (SST about
    the per-dimension mean), rel_* = mean_i ||err_i||^2 / ||a_i||^2 (per-token relative).
    ratio_ft >> 1 when the fine-tuned model has directions the base decoder lacks.

    The ratio is about 1 + (displacement energy) / self_ft: it grows with any displacement of a_ft from a_base
    and with a better self reconstruction, so ``fvu_gap_ft = fvu_cross_ft - fvu_self_ft`` (the displacement the
    base decoder cannot account for, as a share of the fine-tuned stream's variance) is reported beside it. With
    ``massive_factor`` set, the ``*_trimmed`` twins of the fine-tuned side (``fvu_self_ft_trimmed``,
    ``fvu_cross_ft_trimmed``, ``fvu_gap_ft_trimmed``, ``ratio_ft_trimmed``) leave out the massive-activation
    tokens (:func:`adapterscope.outliers.massive_mask` per batch, in either stream; ``n_massive`` of them), whose
    squared norms otherwise decide the sums."""
    if cc.M < 2:
        raise ValueError("reconstruction_ratio needs M >= 2")
    from .outliers import massive_mask

    sums = {key: 0.0 for key in ("self_ft", "cross_ft", "self_base", "cross_base")}
    rel = dict(sums)
    trim = {"self_ft": 0.0, "cross_ft": 0.0}
    moms = {m: StreamingMoments(cc.D) for m in (base, ft)}
    mom_trim = StreamingMoments(cc.D)
    n = n_massive = 0
    for x in _iter_dev(batches, cc, max_batches):
        z = cc.encode(x, use_threshold=use_threshold)
        rec = cc.decode(z, unscale=False)
        dec = {m: (rec[:, m] / cc.scale_M[m]).double() for m in (base, ft)}
        a = {m: x[:, m].double() for m in (base, ft)}
        keep = ~massive_mask(x[:, base], x[:, ft], massive_factor) if massive_factor else None
        pairs = {"self_ft": (ft, ft), "cross_ft": (ft, base), "self_base": (base, base), "cross_base": (base, ft)}
        for key, (ma, md) in pairs.items():
            e = ((a[ma] - dec[md]) ** 2).sum(-1)
            sums[key] += float(e.sum())
            rel[key] += float((e / (a[ma] ** 2).sum(-1).clamp_min(1e-30)).sum())
            if keep is not None and key in trim:
                trim[key] += float(e[keep].sum())
        for m in (base, ft):
            moms[m].update(x[:, m])
        if keep is not None:
            n_massive += int((~keep).sum())
            if keep.any():
                mom_trim.update(x[keep][:, ft])
        n += x.shape[0]
    out = {f"mse_{k_}": v / n for k_, v in sums.items()}
    out.update({f"rel_{k_}": v / n for k_, v in rel.items()})
    for k_, v in sums.items():
        out[f"fvu_{k_}"] = v / moms[ft if k_.endswith("_ft") else base].sst
    out["ratio_ft"] = sums["cross_ft"] / sums["self_ft"]
    out["ratio_base"] = sums["cross_base"] / sums["self_base"]
    out["fvu_gap_ft"] = out["fvu_cross_ft"] - out["fvu_self_ft"]
    if massive_factor:
        sst = mom_trim.sst if mom_trim.n > 1 else math.nan
        for k_, v in trim.items():
            out[f"fvu_{k_}_trimmed"] = v / sst
        out["fvu_gap_ft_trimmed"] = out["fvu_cross_ft_trimmed"] - out["fvu_self_ft_trimmed"]
        out["ratio_ft_trimmed"] = trim["cross_ft"] / trim["self_ft"] if trim["self_ft"] > 0 else math.nan
        out["n_massive"] = n_massive
    out["n_tokens"] = n
    return out
