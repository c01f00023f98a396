"""Massive-activation tokens and the linear CKA they carry.

Linear CKA is a ratio of squared Frobenius norms of token-by-token cross-covariances, so a token whose residual
norm is a hundred times the median weighs about 10^4 times as much as an ordinary one (its share of the centred
squared norm), and a handful of such tokens can decide it alone. Language models have them: attention-sink
tokens (the first token, a document separator, the token right after one) carry residual norms 10-1000 times
the median from the early-middle layers on (Sun et al. 2024, "Massive activations in large language models").
Measured here (``benchmarks/cka_outliers.py``): in SmolLM2-135M at depth 0.4, 2 of 4,032 tokens (an
``<|im_end|>`` separator and the token after it) hold 88% of the centred squared norm, and 1 - CKA over every
token is 0.52 while over the other 4,030 it is 0.02. Whether an adapter happens to move those few tokens decides
the reading, not what it does to the rest of the stream.

This module flags such tokens (norm above ``factor`` times the median token norm of the same batch, in either
model) and keeps a second CKA accumulator that leaves them out, so that every CKA reading can be given with
its trimmed twin and the share of the squared norm the flagged tokens hold.
"""

from __future__ import annotations

from typing import Any

import torch

from . import cka

FACTOR = 10.0  # a token is "massive" above this multiple of the median token norm (of its batch, per model)


def massive_mask(X: torch.Tensor, Y: torch.Tensor | None = None, factor: float = FACTOR) -> torch.Tensor:
    """Boolean (N,) mask of tokens whose L2 norm exceeds ``factor`` x the median token norm of ``X`` (and, when
    ``Y`` is given, of ``Y``: a token is flagged when it is massive in either). Rows are tokens."""
    if factor <= 1:
        raise ValueError(f"factor must exceed 1 (a multiple of the median token norm), got {factor}")
    if X.ndim != 2:
        raise ValueError(f"expected (tokens, features), got shape {tuple(X.shape)}")
    nx = X.double().norm(dim=1)
    m = nx > factor * nx.median()
    if Y is not None:
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X and Y need the same tokens, got {X.shape[0]} and {Y.shape[0]}")
        ny = Y.double().norm(dim=1)
        m = m | (ny > factor * ny.median())
    return m


class TrimmedCKA:
    """Two blocked CKA accumulators fed from the same batches: every token (``all``) and every token except the
    massive ones (``trimmed``); plus the count of flagged tokens and the share of the squared norm they hold
    (in the base side ``X``, uncentred)."""

    def __init__(self, n_blocks: int = 5, factor: float = FACTOR, device=None):
        self.all = cka.BlockedCKA(n_blocks=n_blocks, device=device)
        self.trimmed = cka.BlockedCKA(n_blocks=n_blocks, device=device)
        self.factor = factor
        self.n_massive = 0
        self._sq_massive = 0.0
        self._sq_all = 0.0

    def update(self, X: torch.Tensor, Y: torch.Tensor) -> "TrimmedCKA":
        m = massive_mask(X, Y, self.factor)
        self.all.update(X, Y)
        keep = ~m
        if keep.any():
            self.trimmed.update(X[keep], Y[keep])
        sq = X.double().pow(2).sum(1)
        self.n_massive += int(m.sum())
        self._sq_massive += float(sq[m].sum())
        self._sq_all += float(sq.sum())
        return self

    @property
    def n(self) -> int:
        return self.all.n

    def result(self, debiased: bool = True) -> dict[str, Any]:
        """``cka``/``cka_se`` over every token, ``cka_trimmed``/``cka_trimmed_se`` without the massive ones
        (jackknife over blocks filled in the same order; an update whose every token is massive adds nothing to
        the trimmed side, so from then on the two sides' blocks are offset by one), ``n_massive``, ``n_tokens`` and ``massive_share`` (their share of the
        base side's squared norm)."""
        a = self.all.jackknife(debiased=debiased)
        try:
            t = self.trimmed.jackknife(debiased=debiased)
        except ValueError:  # a block with no kept token: too few tokens for a trimmed reading
            t = {"value": float("nan"), "se": float("nan")}
        return {"cka": a["value"], "cka_se": a["se"], "cka_trimmed": t["value"], "cka_trimmed_se": t["se"],
                "n_massive": self.n_massive, "n_tokens": self.n,
                "massive_share": self._sq_massive / self._sq_all if self._sq_all > 0 else float("nan")}


def carried_by_massive(displacement: float, displacement_trimmed: float, ratio: float = 3.0, se: float = 0.0,
                       floor: float = 1e-3) -> bool:
    """True when 1 - CKA over every token is more than ``ratio`` times 1 - CKA without the massive tokens, and
    the gap is resolved: above twice the every-token reading's jackknife SE ``se`` and above ``floor``. The
    reading is then mostly the few flagged tokens' change. (An absolute gap of 0.05 was required before, which
    left small readings 5-10x above their trimmed twins unflagged.)"""
    if not (displacement == displacement and displacement_trimmed == displacement_trimmed):  # NaN
        return False
    se = se if se == se else 0.0
    gap = displacement - displacement_trimmed
    return displacement > ratio * max(displacement_trimmed, 1e-12) and gap > max(2 * se, floor)
