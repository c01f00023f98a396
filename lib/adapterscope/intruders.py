"""Construction without a dictionary: intruder dimensions of the adapted weights, and the share of the
displacement that leaves the base model's principal subspace.

A crosscoder can only call a feature new if it learns and classes it (``13_calibration`` measures how often it
does). Two measures need no dictionary:

* **Intruder dimensions** (Shuttleworth et al. 2024, "LoRA vs full fine-tuning: an illusion of equivalence"): the
  top-``k`` left singular vectors of an adapted weight ``W + Delta W`` whose largest absolute cosine with *every*
  left singular vector of the base weight ``W`` is below ``eps``: output directions the adapter put among the
  weight's strongest that the base weight did not have. Reweighting (scaling what ``W`` already does) moves
  singular values, not vectors, and yields none.
* **Outside share** (:func:`outside_share`): the share of ``||Delta a||^2`` (``a_adapted - a_base`` over tokens)
  outside the base activations' top-``k`` principal subspace, ``k`` holding 90% and 99% of the base variance:
  how much of the change moves the stream into directions the base barely uses.

Planted tests (``tests/unit/test_intruders.py``): a large rank-one update along a random direction makes an
intruder dimension; the same update along the base's top singular vector (reweighting) and a small one do not;
a displacement inside the principal subspace has outside share 0, one orthogonal to it 1.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

EPS = 0.5  # cosine below which a fine-tuned singular vector matches no base singular vector
TOP_K = 10  # the adapted weight's singular vectors examined


def principal_basis(x_ND: torch.Tensor, variance: float) -> torch.Tensor:
    """(D, k) orthonormal top principal directions of ``x`` (centred) holding at least ``variance`` of its
    variance (k >= 1)."""
    x = x_ND.double()
    c = x - x.mean(0)
    return principal_basis_of_cov(c.T @ c / max(len(c) - 1, 1), variance)


def principal_basis_of_cov(cov_DD: torch.Tensor, variance: float) -> torch.Tensor:
    """(D, k) orthonormal top eigenvectors of a covariance matrix holding at least ``variance`` of its trace."""
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1], got {variance}")
    evals, evecs = torch.linalg.eigh(cov_DD.double())
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    share = torch.cumsum(evals, 0) / evals.sum().clamp_min(1e-300)
    k = int(torch.searchsorted(share, torch.tensor(variance, dtype=share.dtype) - 1e-12)) + 1
    return evecs[:, : min(k, cov_DD.shape[0])].float()


@torch.no_grad()
def intruder_dimensions(W: torch.Tensor, dW: torch.Tensor, k: int = TOP_K, eps: float = EPS) -> dict[str, Any]:
    """Intruder dimensions of ``W + dW`` against ``W`` (both (out, in)): ``n`` of the top ``k`` left singular
    vectors of the adapted weight, ``max_cos`` (each one's largest |cosine| with a base left singular vector),
    and ``sigma_share`` (the share of the adapted weight's top-``k`` singular value mass they carry)."""
    W0 = W.double()
    U0 = torch.linalg.svd(W0, full_matrices=False)[0]
    U1, S1, _ = torch.linalg.svd(W0 + dW.double(), full_matrices=False)
    k = min(k, U1.shape[1])
    max_cos = (U0.T @ U1[:, :k]).abs().max(dim=0).values
    intr = max_cos < eps
    top = S1[:k]
    return {"n": int(intr.sum()), "k": k, "max_cos": max_cos.tolist(),
            "sigma_share": float(top[intr].sum() / top.sum()) if top.sum() > 0 else 0.0}


@torch.no_grad()
def adapter_intruders(peft_model, adapter: str = "default", k: int = TOP_K, eps: float = EPS
                      ) -> list[dict[str, Any]]:
    """:func:`intruder_dimensions` of every LoRA module of ``adapter`` (its exact delta from peft's
    ``get_delta_weight``), one row per module with its name."""
    rows = []
    for name, mod in peft_model.named_modules():
        if not (hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {})):
            continue
        r = intruder_dimensions(mod.get_base_layer().weight, mod.get_delta_weight(adapter), k, eps)
        rows.append({"module": name, **{key: v for key, v in r.items() if key != "max_cos"},
                     "min_max_cos": min(r["max_cos"])})
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Totals over modules: intruder dimensions, modules with any, and the mean singular-value share."""
    n = [r["n"] for r in rows]
    return {"n_intruders": int(sum(n)), "n_modules": len(rows), "modules_with_intruders": int(sum(x > 0 for x in n)),
            "sigma_share_mean": float(sum(r["sigma_share"] for r in rows) / len(rows)) if rows else float("nan")}


@torch.no_grad()
def outside_share(base_ND: torch.Tensor, delta_ND: torch.Tensor, variances: Sequence[float] = (0.9, 0.99)
                  ) -> dict[str, float]:
    """Share of ``||delta||^2`` outside the top principal subspace of ``base`` holding each of ``variances``
    (keys ``"0.9"``, ``"0.99"``), and that subspace's dimension (``"k_0.9"``, ...)."""
    d = delta_ND.double()
    total = float((d ** 2).sum())
    out: dict[str, float] = {}
    for v in variances:
        P = principal_basis(base_ND, v).double()
        inside = float(((d @ P) ** 2).sum())
        out[f"{v:g}"] = 1.0 - inside / total if total > 0 else float("nan")
        out[f"k_{v:g}"] = int(P.shape[1])
    return out


class OutsideShare:
    """:func:`outside_share` streamed over batches: the base activations' covariance (from running sums) and
    the displacement's second moment ``sum delta delta^T``, in float64, so ``result`` equals
    :func:`outside_share` over the concatenated batches (to rounding). Memory: two (D, D) float64 matrices."""

    def __init__(self, dim: int, device=None):
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.xx = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.dd = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, base_ND: torch.Tensor, delta_ND: torch.Tensor) -> "OutsideShare":
        x, d = base_ND.to(self.xx.device, torch.float64), delta_ND.to(self.xx.device, torch.float64)
        if x.shape != d.shape or x.shape[1] != self.xx.shape[0]:
            raise ValueError(f"base and delta must both be (N, {self.xx.shape[0]}), got {tuple(x.shape)} and "
                             f"{tuple(d.shape)}")
        self.n += len(x)
        self.sum += x.sum(0)
        self.xx += x.T @ x
        self.dd += d.T @ d
        return self

    @torch.no_grad()
    def result(self, variances: Sequence[float] = (0.9, 0.99)) -> dict[str, float]:
        if self.n < 2:
            raise ValueError(f"OutsideShare needs at least two tokens, got {self.n}")
        mean = self.sum / self.n
        cov = (self.xx - self.n * torch.outer(mean, mean)) / (self.n - 1)
        total = float(torch.trace(self.dd))
        out: dict[str, float] = {}
        for v in variances:
            P = principal_basis_of_cov(cov, v).double()
            inside = float(torch.trace(P.T @ self.dd @ P))
            out[f"{v:g}"] = 1.0 - inside / total if total > 0 else float("nan")
            out[f"k_{v:g}"] = int(P.shape[1])
        return out
