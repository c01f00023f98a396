"""Output divergence and activation change between a base and a fine-tuned model, accumulated by batch.

Definitions (positions t = 0..T-2 of each row predict token t+1; all in float64 sums):
  KL(base || ft)  mean over positions of sum_v p_base(v) (log p_base(v) - log p_ft(v))
  top-1 agreement share of positions where argmax p_base == argmax p_ft
  perplexity      exp(mean next-token negative log-likelihood), for each model
Activation change at a site (positions 1..T-1; position 0, the attention-sink BOS, is excluded because its
norm is orders of magnitude larger than the rest):
  rel_change = sqrt(sum_t ||a_ft,t - a_base,t||^2) / sqrt(sum_t ||a_base,t||^2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


def next_token_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position from logits (..., V), computed in float32 log-space."""
    lp = torch.log_softmax(logits_p.float(), -1)
    lq = torch.log_softmax(logits_q.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@dataclass
class DivergenceAccumulator:
    kl_sum: float = 0.0
    agree: int = 0
    nll_base: float = 0.0
    nll_ft: float = 0.0
    n: int = 0
    row_kl: list[float] = field(default_factory=list)   # per-row mean KL, for bootstrap CIs

    @torch.no_grad()
    def update(self, logits_base: torch.Tensor, logits_ft: torch.Tensor, input_ids: torch.Tensor) -> None:
        if logits_base.shape != logits_ft.shape or logits_base.shape[:2] != input_ids.shape:
            raise ValueError(f"shape mismatch: base {tuple(logits_base.shape)}, ft {tuple(logits_ft.shape)}, "
                             f"ids {tuple(input_ids.shape)}")
        lb = logits_base[:, :-1].float()
        lf = logits_ft[:, :-1].float()
        tgt = input_ids[:, 1:].to(lb.device)
        lpb = torch.log_softmax(lb, -1)
        lpf = torch.log_softmax(lf, -1)
        kl = (lpb.exp() * (lpb - lpf)).sum(-1)             # (B, T-1)
        self.kl_sum += float(kl.double().sum())
        self.row_kl.extend(kl.double().mean(-1).tolist())
        self.agree += int((lb.argmax(-1) == lf.argmax(-1)).sum())
        self.nll_base += float(-lpb.gather(-1, tgt[..., None]).double().sum())
        self.nll_ft += float(-lpf.gather(-1, tgt[..., None]).double().sum())
        self.n += kl.numel()

    def result(self) -> dict[str, float]:
        if self.n == 0:
            raise ValueError("no tokens accumulated")
        return {"kl": self.kl_sum / self.n, "top1_agreement": self.agree / self.n,
                "ppl_base": math.exp(self.nll_base / self.n), "ppl_ft": math.exp(self.nll_ft / self.n),
                "n_tokens": self.n, "n_rows": len(self.row_kl)}


@dataclass
class ActivationChange:
    """Per-site relative activation change, streamed."""
    diff_sq: dict[str, float] = field(default_factory=dict)
    base_sq: dict[str, float] = field(default_factory=dict)
    n: dict[str, int] = field(default_factory=dict)

    @torch.no_grad()
    def update(self, key: str, a_base: torch.Tensor, a_ft: torch.Tensor, skip_first: int = 1) -> None:
        b = a_base[:, skip_first:].double()
        f = a_ft[:, skip_first:].double()
        self.diff_sq[key] = self.diff_sq.get(key, 0.0) + float((f - b).pow(2).sum())
        self.base_sq[key] = self.base_sq.get(key, 0.0) + float(b.pow(2).sum())
        self.n[key] = self.n.get(key, 0) + b.shape[0] * b.shape[1]

    def result(self) -> dict[str, float]:
        return {k: math.sqrt(self.diff_sq[k]) / math.sqrt(self.base_sq[k]) for k in self.diff_sq}


def bootstrap_mean_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy.stats.bootstrap)."""
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2 or np.allclose(v, v[0]):
        return (float(v.mean()), float(v.mean())) if len(v) else (math.nan, math.nan)
    r = stats.bootstrap((v,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                        random_state=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)
