"""Geometry of displacements: principal subspaces, principal angles, subspace overlap, regime separation.

Pure tool: numpy only, imports nothing from the project. Used by ``05b_regime_probing`` on hidden states at
one position (the answer position), but nothing here knows about models.

Conventions (shapes in names: N rows = items or variants, D = width, K = subspace dimension):

* A *displacement* is ``varied - clean`` for the same item at one layer (:func:`displacements`).
* The *principal subspace* of a set of displacements ``X_ND`` is spanned by the top right singular vectors of
  the **uncentred** matrix (the directions that carry most of the displacement energy ``||X||_F^2``, the mean
  direction included): :func:`principal_subspace`. ``k`` fixed, or the smallest k reaching ``energy`` of
  ``||X||_F^2``.
* *Principal angles* between subspaces A (D, Ka) and B (D, Kb) with orthonormal columns: ``arccos`` of the
  singular values of ``A^T B`` (:func:`principal_angles`, radians, ascending).
* *Overlap* = ``||A^T B||_F^2 / min(Ka, Kb)`` = mean squared cosine of the principal angles, in [0, 1]: 1 when
  the smaller subspace lies inside the larger, 0 when orthogonal. Two independent uniformly random subspaces
  have expected overlap ``max(Ka, Kb) / D`` (:func:`chance_overlap`).
* *Captured energy* of X in B: share of ``||X||_F^2`` inside span(B) (asymmetric; :func:`captured_energy`).
* *Separation* of regimes (:func:`regime_separation`): random split halves of the items, a subspace per
  regime and half; ``within`` = mean overlap of the same regime's two halves (how reproducible a regime's
  subspace is at this sample size), ``across`` = mean overlap of different regimes' halves (same sample sizes),
  ``separation = within - across``. Large separation: the regimes move the representation along different,
  reproducible directions.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _matrix(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, width), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a


def displacements(clean_ND, varied_ND) -> np.ndarray:
    """``varied - clean`` row by row (float64); shapes must match."""
    c, v = _matrix(clean_ND, "clean"), _matrix(varied_ND, "varied")
    if c.shape != v.shape:
        raise ValueError(f"clean {c.shape} and varied {v.shape} must have the same shape")
    return v - c


def principal_subspace(X_ND, k: int | None = None, energy: float = 0.9,
                       max_k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal basis ``(D, K)`` of the top-K right singular vectors of the uncentred ``X`` and the share of
    ``||X||_F^2`` each of them carries (length ``min(N, D)``, descending). ``k=None``: the smallest K whose cumulative share
    reaches ``energy`` (capped at ``max_k``)."""
    X = _matrix(X_ND, "X")
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    n, d = X.shape
    # eigen-decomposition of the smaller Gram matrix (LAPACK's SVD is slow here and nothing needs U)
    lam, vec = np.linalg.eigh(X @ X.T if n <= d else X.T @ X)
    lam, vec = np.clip(lam[::-1], 0.0, None), vec[:, ::-1]
    tot = float(lam.sum())
    if tot <= 0:
        raise ValueError("X is all zeros: no displacement, no subspace")
    share = lam / tot
    if k is None:
        k = int(np.searchsorted(np.cumsum(share), energy - 1e-12) + 1)
        if max_k is not None:
            k = min(k, max_k)
    rank = int((lam > 1e-12 * lam[0]).sum())
    if not 1 <= k <= rank:
        raise ValueError(f"k must be in 1..{rank} (the rank of X {X.shape}), got {k}")
    if n <= d:  # right singular vectors from the left ones: v = X^T u / sigma
        basis = X.T @ vec[:, :k] / np.sqrt(lam[:k])
        basis, _ = np.linalg.qr(basis)  # re-orthonormalise against rounding
    else:
        basis = vec[:, :k].copy()
    return basis, share


def _basis(B, name: str) -> np.ndarray:
    b = _matrix(B, name)
    if b.shape[1] > b.shape[0]:
        raise ValueError(f"{name} must be (D, K) with K <= D, got {b.shape}")
    if not np.allclose(b.T @ b, np.eye(b.shape[1]), atol=1e-6):
        raise ValueError(f"{name} must have orthonormal columns (use principal_subspace or orthonormalize)")
    return b


def orthonormalize(B_DK) -> np.ndarray:
    """An orthonormal basis of span(B) (QR; rank-deficient columns are dropped)."""
    b = _matrix(B_DK, "B")
    q, r = np.linalg.qr(b)
    keep = np.abs(np.diag(r)) > 1e-10 * max(1.0, float(np.abs(r).max()))
    return q[:, keep]


def principal_angles(A_DK, B_DK) -> np.ndarray:
    """Principal angles (radians, ascending) between span(A) and span(B); min(Ka, Kb) of them."""
    a, b = _basis(A_DK, "A"), _basis(B_DK, "B")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"subspaces live in different widths: {a.shape[0]} vs {b.shape[0]}")
    m = a.T @ b
    small = m.T @ m if m.shape[1] <= m.shape[0] else m @ m.T   # singular values of m = sqrt(eig of the small Gram)
    cos = np.sqrt(np.clip(np.linalg.eigvalsh(small), 0.0, 1.0))
    return np.sort(np.arccos(cos))


def overlap(A_DK, B_DK) -> float:
    """Mean squared cosine of the principal angles: ``||A^T B||_F^2 / min(Ka, Kb)`` in [0, 1]."""
    return float(np.mean(np.cos(principal_angles(A_DK, B_DK)) ** 2))


def chance_overlap(d: int, ka: int, kb: int) -> float:
    """Expected :func:`overlap` of two independent uniformly random subspaces of dims ka, kb in R^d."""
    return max(ka, kb) / d


def captured_energy(X_ND, B_DK) -> float:
    """Share of ``||X||_F^2`` that lies in span(B)."""
    X, b = _matrix(X_ND, "X"), _basis(B_DK, "B")
    tot = float((X ** 2).sum())
    if tot <= 0:
        raise ValueError("X is all zeros")
    return float(((X @ b) ** 2).sum() / tot)


def principal_subspaces(X_LND, k: int) -> np.ndarray:
    """Batched :func:`principal_subspace` with fixed ``k`` over a leading axis: ``(L, N, D)`` -> ``(L, D, k)``.

    One stacked eigen-decomposition of the ``L`` small Gram matrices. Where a slice has rank below ``k`` the
    extra columns are arbitrary (but orthonormal) directions."""
    X = np.asarray(X_LND, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"X must be 3-D (layers, rows, width), got shape {X.shape}")
    L, n, d = X.shape
    if not 1 <= k <= min(n, d):
        raise ValueError(f"k must be in 1..{min(n, d)}, got {k}")
    if n <= d:
        lam, vec = np.linalg.eigh(X @ X.transpose(0, 2, 1))
        lam, vec = lam[:, ::-1][:, :k], vec[:, :, ::-1][:, :, :k]
        basis = X.transpose(0, 2, 1) @ vec / np.sqrt(np.clip(lam, 1e-300, None))[:, None, :]
        return np.linalg.qr(basis)[0]
    lam, vec = np.linalg.eigh(X.transpose(0, 2, 1) @ X)
    return vec[:, :, ::-1][:, :, :k].copy()


def _overlaps(A_LDK: np.ndarray, B_LDK: np.ndarray) -> np.ndarray:
    """:func:`overlap` of matching slices: ``||A^T B||_F^2 / min(Ka, Kb)`` -> (L,)."""
    m = A_LDK.transpose(0, 2, 1) @ B_LDK
    return (m ** 2).sum((1, 2)) / min(A_LDK.shape[2], B_LDK.shape[2])


def regime_separation(disp: Mapping[str, np.ndarray], k: int, n_splits: int = 20, seed: int = 0,
                      items: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Within-regime (split-half) vs across-regime subspace overlap for displacement sets of the same items.

    ``disp[regime]`` is ``(N_r, D)``, or ``(L, N_r, D)`` for L layers at once (then every value returned is an
    array over layers). Without ``items`` row i is item i in every regime (N_r equal); with ``items[regime]``
    (length N_r) a row belongs to that item id (several variants per item allowed). Each split divides the
    item ids in two random halves, the same halves for every regime, so all of an item's rows fall in one half.
    Returns ``within`` {regime: mean overlap}, ``across`` {"a|b": mean overlap}, ``within_mean``,
    ``across_mean``, ``separation`` = within_mean - across_mean, ``k`` and ``chance``."""
    names = list(disp)
    if len(names) < 2:
        raise ValueError("need at least two regimes")
    raw = {r: np.asarray(disp[r], dtype=np.float64) for r in names}
    layered = raw[names[0]].ndim == 3
    mats = {r: (m if layered else m[None]) for r, m in raw.items()}
    for r, m in mats.items():
        if m.ndim != 3 or not np.isfinite(m).all():
            raise ValueError(f"disp[{r!r}] must be finite, 2-D (rows, width) or 3-D (layers, rows, width); "
                             f"got shape {raw[r].shape}")
    L, _, d = mats[names[0]].shape
    if items is None:
        n = mats[names[0]].shape[1]
        if any(m.shape != (L, n, d) for m in mats.values()):
            raise ValueError(f"every regime needs the same (items, width) without `items`; got "
                             f"{ {r: raw[r].shape for r in names} }")
        ids = {r: np.arange(n) for r in names}
    else:
        ids = {r: np.asarray(items[r]) for r in names}
        if any(len(ids[r]) != mats[r].shape[1] or mats[r].shape[::2] != (L, d) for r in names):
            raise ValueError("items[regime] must label every row of disp[regime]; layers and widths must agree")
    uniq = np.unique(np.concatenate([ids[r] for r in names]))
    if len(uniq) < 4:
        raise ValueError(f"need at least 4 items for split halves, got {len(uniq)}")
    rng = np.random.default_rng(seed)
    within: dict[str, list] = {r: [] for r in names}
    across: dict[str, list] = {f"{a}|{b}": [] for i, a in enumerate(names) for b in names[i + 1:]}
    kk = k
    for _ in range(n_splits):
        perm = rng.permutation(uniq)
        halves = (perm[: len(uniq) // 2], perm[len(uniq) // 2:])
        rows = {(r, j): mats[r][:, np.isin(ids[r], halves[j])] for r in names for j in (0, 1)}
        kk = min([k, d] + [m.shape[1] for m in rows.values()])
        sub = {key: principal_subspaces(m, kk) for key, m in rows.items()}
        for r in names:
            within[r].append(_overlaps(sub[(r, 0)], sub[(r, 1)]))
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                across[f"{a}|{b}"].append(0.5 * (_overlaps(sub[(a, 0)], sub[(b, 1)]) + _overlaps(sub[(a, 1)], sub[(b, 0)])))
    out = lambda v: np.mean(v, axis=0) if layered else float(np.mean(v))  # noqa: E731
    w = {r: out(v) for r, v in within.items()}
    x = {p: out(v) for p, v in across.items()}
    wm = np.mean(list(w.values()), axis=0) if layered else float(np.mean(list(w.values())))
    xm = np.mean(list(x.values()), axis=0) if layered else float(np.mean(list(x.values())))
    return {"k": kk, "within": w, "across": x, "within_mean": wm, "across_mean": xm, "separation": wm - xm,
            "chance": chance_overlap(d, kk, kk), "n_items": int(len(uniq)), "n_splits": n_splits}


def critical_layer(separation_by_layer: Sequence[float], skip_first: int = 1) -> int:
    """The layer with the largest separation (ties: the earliest), ignoring the first ``skip_first`` entries
    (the embedding output, where text-only changes and pixel-only changes touch disjoint token positions)."""
    s = np.asarray(separation_by_layer, dtype=np.float64)
    if len(s) <= skip_first:
        raise ValueError(f"need more than {skip_first} layers, got {len(s)}")
    return int(np.argmax(s[skip_first:]) + skip_first)
