"""Fast crosscoder training (BatchTopK + AuxK, or the L1 baseline).

Pure tool: imports torch / numpy / tqdm / stdlib, ``crosscoder``, ``paths`` (stdlib only, for the atomic folder
write) and ``threads`` (torch only, the thread cap).

The BatchTopK step uses hand-written sparse gradients instead of autograd: the only dense
operation is the encoder matmul (bf16 when ``dtype=torch.bfloat16``); decoding and every
gradient touch only the k*B selected (token, latent) pairs:

    recon = embedding_bag(latents, W_dec, per token, weights=z)        (sparse decode)
    dz    = <dL/drecon_b, W_dec[f]>  for selected (b, f)               (SDDMM)
    dW_dec[f] = sum_b z_bf dL/drecon_b,  dW_enc[f] = sum_b dz_bf xs_b  (embedding_bag by latent)

Loss (scaled space where ||xs_m|| ~ sqrt(D); means over tokens), divided by D so that
the reconstruction term is ~ sum_m (1 - FVE_m) as in Gao et al.'s normalised MSE:

    batchtopk:  sum_m ||xs_m - xhat_m||^2 / D
                + auxk_coeff * ||e - e_aux||^2 / ||e - mean(e)||^2     (AuxK, Gao et al. 2024;
                  e = xs - xhat held constant, e_aux = decode of the top-k_aux dead latents)
    l1:         (sum_m ||xs_m - xhat_m||^2 + lambda_t * sum_f relu(pre_f) * sum_m ||W_dec[f, m]||) / D

Decoder norms are unconstrained: BatchTopK selects on relu(pre_f) * n_f and the L1 penalty is
norm-weighted, so rescaling a decoder row cannot buy sparsity.  Optimiser: fused Adam, linear
warm-up, linear decay to 0 over the last ``decay_frac`` of steps, global-norm clipping.
Mixed precision: with ``dtype=torch.bfloat16`` the dense matmuls (encoder; AuxK's
dead-subset products; the L1 variant's autocast region) run in bf16; parameters, optimiser
state, losses, threshold and statistics stay float32/float64.

Usage::

    cfg = CrosscoderConfig(n_models=2, d_model=576, n_latents=4608, k=32, total_tokens=50_000_000)
    cc = train_crosscoder(cfg, batches, dtype=torch.bfloat16, checkpoint_dir="ck", out_dir="cc")
    # or: tr = CrosscoderTrainer(cfg); stats = tr.train_step(x_BMD)

The per-depth protocol of ``03_crosscoder`` (in-memory paired tokens): :func:`stack_tokens` gathers a stream of
paired batches into (N, 2, D) tensors, :func:`fit_config` sizes the run from the token count, and
:func:`fit_and_measure` trains on seeded shuffled batches (:func:`shuffled_batches`), calibrates the inference
threshold on the training tokens (mean L0 = k), and measures on held-out tokens: FVE, L0, dead share, the
relative-decoder-norm classes, Latent Scaling of the fine-tune-only latents (on the training tokens) and the
cross/self reconstruction ratio.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as Fn
from tqdm.auto import tqdm

from . import crosscoder as _cc
from .crosscoder import Crosscoder, batch_topk_flat
from .paths import atomic_path
from .threads import num_threads

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


@dataclasses.dataclass
class CrosscoderConfig:
    n_models: int
    d_model: int
    n_latents: int
    k: int = 32
    sparsity: str = "batchtopk"
    batch_size: int = 2048
    total_tokens: int | None = None
    total_steps: int | None = None          # overrides total_tokens
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup_steps: int | None = None         # default min(1000, 5% of steps)
    decay_frac: float = 0.2                 # linear decay to 0 over the last 20%
    grad_clip: float = 1.0
    k_anneal_mult: float = 4.0              # k starts at k_anneal_mult * k ...
    k_anneal_frac: float = 0.1              # ... and reaches k after this fraction
    auxk_coeff: float = 1 / 32
    k_aux: int | None = None                # default min(512, M*D // 2)
    dead_after_tokens: int = 5_000_000
    threshold_ema: float = 0.999
    threshold_start_frac: float | None = None  # default: when k annealing ends
    l1_coeff: float = 2.0
    l1_warmup_frac: float = 0.05
    dec_init_norm: float = 0.1
    seed: int = 0
    n_scale_batches: int = 8
    scaling_factors: list[float] | None = None
    sddmm: str = "auto"                     # "sparse" | "dense" | "auto"
    sparse_threads: int | None = 1          # CPU threads for the sparse part of a step (None: all)
    log_every: int = 25

    @property
    def steps(self) -> int:
        if self.total_steps is not None:
            return int(self.total_steps)
        if self.total_tokens is None:
            raise ValueError("set total_tokens or total_steps")
        return max(1, math.ceil(self.total_tokens / self.batch_size))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CrosscoderConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


def _as_dtype(dtype) -> torch.dtype:
    return _DTYPES[dtype] if isinstance(dtype, str) else dtype


class CrosscoderTrainer:
    """Owns a Crosscoder, its Adam optimiser and the training state.

    ``train_step(batch)`` performs one optimisation step on a (B, M, D) batch and
    returns a dict of floats; ``fit(batches)`` runs the schedule with a tqdm bar,
    checkpointing and resuming.  ``dtype`` is the compute dtype of the big matmuls
    (parameters, optimiser and statistics stay float32/float64)."""

    def __init__(self, cfg: CrosscoderConfig, device: torch.device | str = "cpu",
                 dtype: torch.dtype | str = torch.float32, crosscoder: Crosscoder | None = None):
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = _as_dtype(dtype)
        torch.manual_seed(cfg.seed)
        hp = dict(cfg.to_dict(), compute_dtype=str(self.dtype).replace("torch.", ""))
        self.cc = crosscoder if crosscoder is not None else Crosscoder(
            cfg.n_models, cfg.d_model, cfg.n_latents, cfg.k, cfg.sparsity,
            dec_init_norm=cfg.dec_init_norm, seed=cfg.seed, hparams=hp)
        self.cc.to(self.device)
        self.initialized = crosscoder is not None
        kw = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        self.opt = torch.optim.Adam(self.cc.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                                    eps=cfg.adam_eps, **kw)
        self.step = 0
        self.tokens = 0
        self.tokens_since_fired = torch.zeros(cfg.n_latents, dtype=torch.long, device=self.device)
        self.thr_ema, self.thr_count = 0.0, 0
        self.debug = False
        self.last: dict = {}
        S = cfg.steps
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else max(1, min(1000, S // 20))
        self.decay_start = int(S * (1 - cfg.decay_frac))
        self.anneal_steps = int(S * cfg.k_anneal_frac)
        tsf = cfg.threshold_start_frac
        self.threshold_start = self.anneal_steps if tsf is None else int(S * tsf)
        M, D = cfg.n_models, cfg.d_model
        self.k_aux = cfg.k_aux if cfg.k_aux is not None else min(512, M * D // 2)
        sd = cfg.sddmm
        self.sddmm = ("dense" if self.device.type == "cuda" else "sparse") if sd == "auto" else sd

    # -- schedules -------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        S, lr = self.cfg.steps, self.cfg.lr
        f = min(1.0, (step + 1) / self.warmup)
        if step >= self.decay_start:
            f = min(f, max(0.0, (S - step) / max(1, S - self.decay_start)))
        return lr * f

    def k_at(self, step: int) -> int:
        k = self.cfg.k
        if step >= self.anneal_steps:
            return k
        k0 = self.cfg.k_anneal_mult * k
        return int(round(k0 + (k - k0) * step / self.anneal_steps))

    def l1_at(self, step: int) -> float:
        w = max(1, int(self.cfg.steps * self.cfg.l1_warmup_frac))
        return self.cfg.l1_coeff * min(1.0, (step + 1) / w)

    # -- one step --------------------------------------------------------------------
    def init_from_data(self, x_BMD: torch.Tensor) -> None:
        sf = self.cfg.scaling_factors
        if sf is not None:
            self.cc.scale_M.copy_(torch.as_tensor(sf, dtype=torch.float32))
        self.cc.init_from_data(x_BMD.to(self.device), estimate_scale=sf is None)
        self.initialized = True

    def train_step(self, batch: torch.Tensor) -> dict:
        x = torch.as_tensor(batch).to(self.device, torch.float32, non_blocking=True)
        cfg = self.cfg
        assert x.ndim == 3 and x.shape[1:] == (cfg.n_models, cfg.d_model), x.shape
        if not self.initialized:
            self.init_from_data(x)
        lr = self.lr_at(self.step)
        for g in self.opt.param_groups:
            g["lr"] = lr
        if cfg.sparsity == "batchtopk":
            stats = self._grads_batchtopk(x)
        else:
            stats = self._grads_l1(x)
        stats["grad_norm"] = self._clip()
        self.opt.step()
        self.step += 1
        self.tokens += x.shape[0]
        stats.update(lr=lr, step=self.step)
        return stats

    def _clip(self) -> float:
        grads = [p.grad for p in self.cc.parameters() if p.grad is not None]
        norms = torch._foreach_norm(grads)
        total = float(torch.linalg.vector_norm(torch.stack(norms)))
        if self.cfg.grad_clip and total > self.cfg.grad_clip:
            torch._foreach_mul_(grads, self.cfg.grad_clip / (total + 1e-6))
        return total

    def _dead_update(self, fired_F: torch.Tensor, B: int) -> None:
        self.tokens_since_fired += B
        self.tokens_since_fired[fired_F] = 0

    @torch.no_grad()
    def _grads_batchtopk(self, x: torch.Tensor) -> dict:
        cc, cfg = self.cc, self.cfg
        B, M, D = x.shape
        F, MD = cc.F, M * D
        xs = (x * cc.scale_M[None, :, None]).reshape(B, MD)
        W_enc = cc.W_enc_FMD.detach().reshape(F, MD)
        W_dec = cc.W_dec_FMD.detach().reshape(F, MD)
        n_F = cc.W_dec_FMD.detach().norm(dim=-1).sum(-1).clamp_min(1e-12)
        # norm-weighted pre-activations in one matmul: v = pre * n_F  (n_F > 0)
        cdt = self.dtype
        W_sel = (W_enc * n_F[:, None]).to(cdt)
        v_BF = torch.addmm((cc.b_enc_F.detach() * n_F).to(cdt), xs.to(cdt), W_sel.t())
        k_t = self.k_at(self.step)
        with self._sparse_threads():
            (idx, vals, b_idx, f_idx, z, xs, G, sse, g_dec, g_enc, g_benc, g_bdec,
             cnt_F) = self._sparse_part(x, xs, W_dec, n_F, v_BF, k_t)
        stats = {}
        dead = torch.nonzero(self.tokens_since_fired >= cfg.dead_after_tokens).squeeze(1)
        stats["dead"] = int(dead.numel())
        if cfg.auxk_coeff > 0 and dead.numel() > 0:
            stats["aux_loss"] = self._auxk(v_BF, dead, n_F, G * (-B * D / 2.0), xs, W_dec, g_dec, g_enc, g_benc)
        cc.W_enc_FMD.grad = g_enc.view(F, M, D)
        cc.W_dec_FMD.grad = g_dec.view(F, M, D)
        cc.b_enc_F.grad = g_benc
        cc.b_dec_MD.grad = g_bdec.view(M, D)
        if self.step >= self.threshold_start and idx.numel() > 0:
            beta = cfg.threshold_ema
            self.thr_ema = beta * self.thr_ema + (1 - beta) * float(vals.min())
            self.thr_count += 1
            cc.threshold.fill_(self.thr_ema / (1 - beta ** self.thr_count))
        self._dead_update(cnt_F > 0, B)
        if self.debug:
            self.last = {"idx": idx, "dead": dead, "xs": xs}
        with self._sparse_threads():
            sst = float((xs - xs.mean(0)).pow(2).sum())
        stats.update(loss=sse / (B * D) + cfg.auxk_coeff * stats.get("aux_loss", 0.0), mse=sse / B,
                     fve=1 - sse / max(sst, 1e-30), l0=idx.numel() / B, k=k_t)
        return stats

    def _sparse_threads(self):
        """Cap torch's intra-op threads for the sparse part of a step (selection, sparse
        decode, SDDMM, scatter-gradients).  Its ops are small and many: on a CPU shared with
        other processes each parallel region waits for a descheduled thread, which made the
        step ~4x slower with 2 threads than with 1; quiet, the cap costs a few ms."""
        n = self.cfg.sparse_threads
        if self.device.type != "cpu" or not n:
            return contextlib.nullcontext()
        return num_threads(n)  # no change where torch already runs n threads or fewer

    def _sparse_part(self, x, xs, W_dec, n_F, v_BF, k_t):
        B, F = v_BF.shape
        MD = xs.shape[1]
        D = MD // self.cc.M
        cc = self.cc
        idx = batch_topk_flat(v_BF, k_t * B)
        vals = v_BF.view(-1)[idx].float()
        b_idx = torch.div(idx, F, rounding_mode="floor")
        f_idx = idx - b_idx * F
        z = vals / n_F[f_idx]
        cnt_B = torch.bincount(b_idx, minlength=B)
        crow = torch.zeros(B + 1, dtype=torch.long, device=x.device)
        torch.cumsum(cnt_B, 0, out=crow[1:])
        # sparse decode + error
        err = Fn.embedding_bag(f_idx, W_dec, crow[:-1], mode="sum", per_sample_weights=z)
        err += cc.b_dec_MD.detach().reshape(1, MD)
        err -= xs
        sse = float(err.pow(2).sum())
        G = err.mul_(2.0 / (B * D))  # dL/drecon  (err no longer needed)
        dz = self._sddmm(G, W_dec, b_idx, f_idx, crow, idx)
        cnt_F = torch.bincount(f_idx, minlength=F)
        offs_F = torch.cumsum(cnt_F, 0) - cnt_F
        perm = torch.sort(f_idx, stable=True).indices
        bT = b_idx[perm]
        g_dec = Fn.embedding_bag(bT, G, offs_F, mode="sum", per_sample_weights=z[perm])
        g_enc = Fn.embedding_bag(bT, xs, offs_F, mode="sum", per_sample_weights=dz[perm])
        g_benc = torch.zeros(F, device=x.device).index_add_(0, f_idx, dz)
        g_bdec = G.sum(0)
        return idx, vals, b_idx, f_idx, z, xs, G, sse, g_dec, g_enc, g_benc, g_bdec, cnt_F

    def _sddmm(self, G, W_dec, b_idx, f_idx, crow, idx) -> torch.Tensor:
        """dz_p = <G[b_p], W_dec[f_p]> for the selected pairs."""
        B, F = G.shape[0], W_dec.shape[0]
        if self.sddmm == "dense":
            cdt = self.dtype
            return (G.to(cdt) @ W_dec.to(cdt).t()).view(-1)[idx].float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            S = torch.sparse_csr_tensor(crow, f_idx, G.new_zeros(f_idx.numel()), (B, F),
                                        check_invariants=False)
        return torch.sparse.sampled_addmm(S, G, W_dec.t(), beta=0.0).values()

    def _auxk(self, v_BF, dead, n_F, e, xs, W_dec, g_dec, g_enc, g_benc) -> float:
        """AuxK on the dead subset (dense over the n_dead columns); adds its gradients.
        ``e`` = xs - xhat (B, M*D), a constant target."""
        B = e.shape[0]
        kk = min(self.k_aux, dead.numel())
        v_dead = v_BF[:, dead].float().clamp_min_(0)
        top, loc = torch.topk(v_dead, kk, dim=1)
        z_aux = torch.zeros_like(v_dead).scatter_(1, loc, top) / n_F[dead]
        denom = float((e - e.mean(0)).pow(2).sum()) / B
        if denom <= 0:
            return 0.0
        cdt = self.dtype

        def mm(a, b):  # the four (B x n_dead x MD) matmuls run in the compute dtype
            return (a.to(cdt) @ b.to(cdt)).float()

        Wd = W_dec[dead]
        diff = mm(z_aux, Wd) - e
        aux = float(diff.pow(2).sum()) / B / denom
        Ga = diff.mul_(self.cfg.auxk_coeff * 2.0 / (B * denom))
        dz = mm(Ga, Wd.t()) * (z_aux > 0)
        g_dec.index_add_(0, dead, mm(z_aux.t(), Ga))
        g_enc.index_add_(0, dead, mm(dz.t(), xs))
        g_benc.index_add_(0, dead, dz.sum(0))
        return aux

    def _grads_l1(self, x: torch.Tensor) -> dict:
        cc, cfg = self.cc, self.cfg
        B, M, D = x.shape
        F, MD = cc.F, M * D
        for p in cc.parameters():
            p.grad = None
        xs = (x * cc.scale_M[None, :, None]).reshape(B, MD)
        W_enc = cc.W_enc_FMD.reshape(F, MD)
        W_dec = cc.W_dec_FMD.reshape(F, MD)
        bf16 = self.dtype == torch.bfloat16
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            z = torch.relu(Fn.linear(xs, W_enc, cc.b_enc_F))
            rec = torch.addmm(cc.b_dec_MD.reshape(1, MD), z, W_dec)
        z = z.float()
        mse = (rec.float() - xs).pow(2).sum() / B
        n_F = cc.W_dec_FMD.norm(dim=-1).sum(-1)
        l1 = (z * n_F).sum() / B
        lam = self.l1_at(self.step)
        loss = (mse + lam * l1) / D
        loss.backward()
        with torch.no_grad():
            active = z > 0
            self._dead_update(active.any(0), B)
            sst = float((xs - xs.mean(0)).pow(2).sum())
            return {"loss": float(loss), "mse": float(mse), "l1": float(l1), "l1_coeff": lam,
                    "fve": 1 - float(mse) * B / max(sst, 1e-30), "l0": float(active.sum()) / B,
                    "dead": int((self.tokens_since_fired >= cfg.dead_after_tokens).sum())}

    # -- loop ------------------------------------------------------------------------
    def fit(self, batches: Iterable[torch.Tensor], progress: bool = True,
            checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
            skip_consumed: bool = True) -> Crosscoder:
        """Train until ``cfg.steps`` or the stream ends.  When resuming (step > 0) and
        ``skip_consumed``, the first ``step`` batches of ``batches`` are skipped, so the
        same stream from its start reproduces an uninterrupted run."""
        it = iter(batches)
        if self.step > 0 and skip_consumed:
            for _ in itertools.islice(it, self.step):
                pass
        if not self.initialized:
            head = list(itertools.islice(it, max(1, self.cfg.n_scale_batches)))
            if not head:
                raise ValueError("empty batch stream")
            self.init_from_data(torch.cat([torch.as_tensor(h, dtype=torch.float32) for h in head]))
            it = itertools.chain(head, it)
        S = self.cfg.steps
        bar = tqdm(total=S, initial=self.step, disable=not progress, desc="crosscoder", dynamic_ncols=True)
        try:
            for x in it:
                if self.step >= S:
                    break
                st = self.train_step(x)
                bar.update(1)
                if self.step % self.cfg.log_every == 0 or self.step == S:
                    bar.set_postfix(loss=f"{st['loss']:.4g}", fve=f"{st['fve']:.3f}", l0=f"{st['l0']:.1f}",
                                    dead=st["dead"], lr=f"{st['lr']:.2e}")
                if checkpoint_dir is not None and checkpoint_every and self.step % checkpoint_every == 0:
                    self.save_checkpoint(checkpoint_dir)
        finally:
            bar.close()
        if checkpoint_dir is not None:
            self.save_checkpoint(checkpoint_dir)
        return self.cc

    # -- checkpointing ---------------------------------------------------------------
    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(),
               "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()]}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"step": self.step, "tokens": self.tokens, "optimizer": self.opt.state_dict(),
                "tokens_since_fired": self.tokens_since_fired.cpu(), "thr_ema": self.thr_ema,
                "thr_count": self.thr_count, "initialized": self.initialized, "rng": rng}

    def save_checkpoint(self, directory: str | os.PathLike) -> Path:
        """Atomic checkpoint: crosscoder/ (safetensors), trainer_state.pt, train_config.json."""
        out = Path(directory)
        with atomic_path(out) as tmp:  # a killed save leaves only a hidden .<name>.*.tmp beside ``out``
            tmp.mkdir()
            self.cc.save(tmp / "crosscoder")
            torch.save(self.state_dict(), tmp / "trainer_state.pt")
            meta = {"cfg": self.cfg.to_dict(), "dtype": str(self.dtype).replace("torch.", "")}
            (tmp / "train_config.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike, device: torch.device | str = "cpu",
                        dtype: torch.dtype | str | None = None) -> "CrosscoderTrainer":
        d = Path(directory)
        meta = json.loads((d / "train_config.json").read_text())
        cfg = CrosscoderConfig.from_dict(meta["cfg"])
        cc = Crosscoder.load(d / "crosscoder", device=device)
        tr = cls(cfg, device=device, dtype=dtype or meta["dtype"], crosscoder=cc)
        st = torch.load(d / "trainer_state.pt", map_location="cpu", weights_only=True)
        tr.opt.load_state_dict(st["optimizer"])
        tr.step, tr.tokens = int(st["step"]), int(st["tokens"])
        tr.tokens_since_fired = st["tokens_since_fired"].to(tr.device)
        tr.thr_ema, tr.thr_count = float(st["thr_ema"]), int(st["thr_count"])
        tr.initialized = bool(st["initialized"])
        rng = st["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(_tuplify(rng["python"]))
        npst = rng["numpy"]
        np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), *npst[2:]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        return tr


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def has_checkpoint(directory: str | os.PathLike | None) -> bool:
    return directory is not None and (Path(directory) / "trainer_state.pt").exists()


def train_crosscoder(cfg: CrosscoderConfig, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu",
                     dtype: torch.dtype | str = torch.float32, progress: bool = True,
                     checkpoint_dir: str | os.PathLike | None = None, checkpoint_every: int | None = None,
                     resume: bool = True, out_dir: str | os.PathLike | None = None,
                     provenance: dict | None = None) -> Crosscoder:
    """Train a crosscoder on a stream of (B, M, D) batches; resumes from ``checkpoint_dir``
    when it holds a checkpoint (``batches`` must then restart from the stream's beginning:
    consumed batches are skipped).  Saves to ``out_dir`` (with ``provenance``) if given."""
    if resume and has_checkpoint(checkpoint_dir):
        tr = CrosscoderTrainer.from_checkpoint(checkpoint_dir, device=device, dtype=dtype)
    else:
        tr = CrosscoderTrainer(cfg, device=device, dtype=dtype)
    cc = tr.fit(batches, progress=progress, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every)
    if out_dir is not None:
        cc.save(out_dir, provenance=provenance)
    return cc


# ----------------------------------------------------------------------------- the per-depth protocol
def stack_tokens(batches: Iterable, keys: list[str], skip_first: int = 1) -> dict[str, torch.Tensor]:
    """key -> (N, 2, D) float32 CPU tensor of paired token activations, concatenated over ``batches`` (anything
    with ``tokens(key, skip_first)``, e.g. ``capture.iter_paired``'s batches), in stream order."""
    out: dict[str, list[torch.Tensor]] = {k_: [] for k_ in keys}
    for b in batches:
        for k_ in keys:
            out[k_].append(b.tokens(k_, skip_first).float().cpu())
    return {k_: torch.cat(v) for k_, v in out.items()}


def shuffled_batches(x_NMD: torch.Tensor, steps: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch_size`` rows: epoch after epoch, a fresh permutation (one CPU generator seeded
    ``seed``) cut into full batches; an epoch's last partial batch is dropped."""
    g = torch.Generator().manual_seed(seed)
    done = 0
    while done < steps:
        perm = torch.randperm(len(x_NMD), generator=g)
        if len(perm) < batch_size:
            raise ValueError(f"batch_size {batch_size} exceeds the {len(perm)} rows")
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            yield x_NMD[perm[i:i + batch_size]]
            done += 1
            if done >= steps:
                return


def chunks(x_NMD: torch.Tensor, size: int = 4096) -> Iterator[torch.Tensor]:
    """Consecutive slices of ``size`` rows (the last may be shorter), in order."""
    for i in range(0, len(x_NMD), size):
        yield x_NMD[i:i + size]


def fit_config(n_tokens: int, d_model: int, *, expansion: int, k: int, epochs: int, batch_tokens: int, lr: float,
               seed: int) -> CrosscoderConfig:
    """A two-model BatchTopK run over ``n_tokens`` training tokens: batch min(batch_tokens, n_tokens), ``epochs``
    passes (at least one step), 5% warm-up, a latent dead after one pass without firing."""
    bs = min(batch_tokens, n_tokens)
    steps = max(1, epochs * n_tokens // bs)
    return CrosscoderConfig(n_models=2, d_model=d_model, n_latents=expansion * d_model, k=k, batch_size=bs,
                            total_steps=steps, lr=lr, warmup_steps=max(1, steps // 20),
                            dead_after_tokens=max(bs, n_tokens), seed=seed)


@dataclasses.dataclass
class DepthFit:
    """One depth's crosscoder and what was measured on it."""
    cc: Crosscoder
    cfg: CrosscoderConfig
    row: dict               # the per-layer metrics (03_crosscoder's per_layer table, without layer/depth)
    r_F: np.ndarray         # relative decoder norm of every latent
    alive_F: np.ndarray     # fired on the held-out tokens


def fit_and_measure(train_x_NMD: torch.Tensor, eval_x_NMD: torch.Tensor, cfg: CrosscoderConfig, *, stream_seed: int,
                    device: torch.device | str = "cpu", dtype: torch.dtype | str = torch.float32,
                    progress: bool = False) -> DepthFit:
    """Train on :func:`shuffled_batches` of the training tokens (seeded ``stream_seed``), set the inference
    threshold to give mean L0 = k on the training tokens (the training EMA is kept as ``threshold_ema``), and
    measure on the held-out tokens (see the module docstring)."""
    t0 = time.perf_counter()
    cc = train_crosscoder(cfg, shuffled_batches(train_x_NMD, cfg.steps, cfg.batch_size, stream_seed), device=device,
                          dtype=dtype, progress=progress)
    train_s = time.perf_counter() - t0
    n_train = len(train_x_NMD)
    cal = _cc.calibrate_threshold(cc, chunks(train_x_NMD), max_tokens=n_train)
    ev = _cc.evaluate(cc, chunks(eval_x_NMD))
    cls = _cc.classify_latents(cc)
    ft_only = np.flatnonzero(cls["labels"] == "ft_only")
    ls = _cc.latent_scaling(cc, chunks(train_x_NMD), latents=ft_only) if len(ft_only) else None
    rr = _cc.reconstruction_ratio(cc, chunks(eval_x_NMD))
    alive = ev["fire_counts"] > 0
    row = {"fve_base": ev["fve"][0], "fve_ft": ev["fve"][1], "l0": ev["l0"], "dead_fraction": ev["dead_fraction"],
           "n_latents": cc.F, "n_ft_only": int(len(ft_only)),
           "n_ft_only_alive": int(alive[ft_only].sum()) if len(ft_only) else 0,
           "n_ft_only_genuine": int(ls["genuine_ft_only"].sum()) if ls else 0,
           "n_base_only": cls["counts"]["base_only"], "n_shared": cls["counts"]["shared"],
           "shared_cosine": cls["shared_cosine_mean"], "ratio_ft": rr["ratio_ft"], "ratio_base": rr["ratio_base"],
           "mse_self_ft": rr["mse_self_ft"], "mse_cross_ft": rr["mse_cross_ft"], "fvu_self_ft": rr["fvu_self_ft"],
           "fvu_cross_ft": rr["fvu_cross_ft"], "fvu_gap_ft": rr["fvu_gap_ft"],
           "fvu_gap_ft_trimmed": rr["fvu_gap_ft_trimmed"], "ratio_ft_trimmed": rr["ratio_ft_trimmed"],
           "n_massive_eval": rr["n_massive"], "train_s": train_s, "train_tokens": cfg.steps * cfg.batch_size,
           "threshold": cal["threshold"], "threshold_ema": cal["threshold_ema"]}
    return DepthFit(cc=cc, cfg=cfg, row=row, r_F=np.asarray(cls["r"]), alive_F=alive)


def benchmark_throughput(n_models: int = 1, d_model: int = 576, n_latents: int = 4608, k: int = 32,
                         batch_size: int = 2048, dtype: torch.dtype | str = torch.float32,
                         steps: int = 10, device: torch.device | str = "cpu", seed: int = 0) -> dict:
    """Median tokens/s of ``train_step`` after k-annealing, on synthetic sparse data."""
    import time
    g = torch.Generator().manual_seed(seed)
    M, D, B = n_models, d_model, batch_size
    atoms = torch.randn(n_latents, M * D, generator=g)
    codes = (torch.rand(4, B, atoms.shape[0], generator=g) < 8 / atoms.shape[0]).float()
    data = [(c @ atoms).view(B, M, D) + 0.1 * torch.randn(B, M, D, generator=g) for c in codes]
    cfg = CrosscoderConfig(M, D, n_latents, k=k, batch_size=B, total_steps=10**6, k_anneal_frac=0.0)
    tr = CrosscoderTrainer(cfg, device=device, dtype=dtype)
    tr.init_from_data(data[0])
    times = []
    for i in range(steps + 2):
        x = data[i % 4].to(device)
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        tr.train_step(x)
        if tr.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    med = float(np.median(times[2:]))
    return {"n_models": M, "dtype": str(tr.dtype), "threads": torch.get_num_threads(),
            "step_ms": med * 1e3, "tokens_per_s": B / med}


if __name__ == "__main__":  # python -m adapterscope.crosscoder_train [M] [dtype]
    import sys
    a = sys.argv[1:]
    print(benchmark_throughput(int(a[0]) if a else 1, dtype=a[1] if len(a) > 1 else "float32"))
