r"""Exact linear CKA, streamed over tokens, biased and debiased.

Pure tool: imports only ``torch``, ``numpy``, the standard library and ``threads`` (torch only; a thread cap).

Definitions
-----------
Rows are tokens. ``X`` is ``n x d`` and ``Y`` is ``n x e`` (the widths may
differ); ``x_i`` and ``y_i`` are their rows, ``K = X X^T`` and ``L = Y Y^T``
the linear-kernel Gram matrices, ``H = I - 11^T/n`` the centering matrix.

**Linear CKA** (Kornblith et al. 2019, arXiv:1905.00414, eq. for the linear
kernel), with ``X_c = H X`` and ``Y_c = H Y`` (column-centred)::

    HSIC_0(K, L) = tr(K H L H) / (n - 1)^2 = ||Y_c^T X_c||_F^2 / (n - 1)^2

    CKA(X, Y) = HSIC_0(K, L) / sqrt(HSIC_0(K, K) HSIC_0(L, L))
              = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)

**Debiased linear CKA** (Nguyen, Raghu & Kornblith 2021, arXiv:2010.15327)
replaces HSIC_0 by the unbiased estimator HSIC_1 of Song et al. (2012, JMLR
13, "Feature selection via dependence maximization"), with ``K~`` and ``L~``
equal to ``K`` and ``L`` with their diagonals set to zero (n >= 4)::

    HSIC_1(K, L) = [ tr(K~ L~)
                     + (1^T K~ 1)(1^T L~ 1) / ((n - 1)(n - 2))
                     - 2/(n - 2) * 1^T K~ L~ 1 ] / (n (n - 3))

    CKA_1(X, Y) = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))

HSIC_1 is invariant to translating the rows of X (or Y), so it may be
evaluated on centred features; with ``a_i = ||x_i - xbar||^2``,
``b_i = ||y_i - ybar||^2``, ``A = sum_i a_i``, ``B = sum_i b_i`` (this is the
feature-space form of Kornblith et al.'s reference code)::

    n(n-3) HSIC_1(K, L) = ||Y_c^T X_c||_F^2 - n/(n-2) sum_i a_i b_i
                          + A B / ((n - 1)(n - 2))

Streaming (what :class:`StreamingCKA` accumulates)
---------------------------------------------------
Rows are first shifted by a fixed per-column reference ``c`` (the mean of the
first batch; every quantity below is translation invariant, the shift only
keeps float64 sums well conditioned): ``z_i = x_i - c_x``, ``w_i = y_i - c_y``,
``p_i = ||z_i||^2``, ``q_i = ||w_i||^2``. Over all batches the accumulator
sums, in float64::

    n,  s_x = sum z_i,  s_y = sum w_i,
    G = sum z_i z_i^T (d x d),  J = sum w_i w_i^T (e x e),  C = sum z_i w_i^T (d x e),
    P1 = sum p_i,  Q1 = sum q_i,  P2 = sum p_i^2,  Q2 = sum q_i^2,  PQ = sum p_i q_i,
    u = sum p_i z_i,  v = sum q_i w_i,  a = sum q_i z_i,  b = sum p_i w_i.

Memory is O(d^2 + e^2 + d e) whatever the number of tokens. At the end the
statistics are translated exactly to the sample mean (``_translate_side`` /
``_translate_cross``; the same maps put shards with different shifts on a
common footing in :meth:`StreamingCKA.merge`) and then, for any shift::

    biased:    X_c^T X_c = G - s_x s_x^T / n,   X_c^T Y_c = C - s_x s_y^T / n

    debiased:  tr(K~ L~)     = ||C||_F^2 - PQ
               1^T K~ 1      = ||s_x||^2 - P1
               1^T K~ L~ 1   = s_x^T C s_y - s_x . a - s_y . b + PQ
               tr(K~ K~)     = ||G||_F^2 - P2
               1^T K~ K~ 1   = s_x^T G s_x - 2 s_x . u + P2

(from ``(K~ 1)_i = z_i . s_x - p_i`` and ``K~_ij = z_i . z_j`` for i != j).
The result is the exact estimator on all tokens seen, up to float64 rounding.

Public API
----------
:class:`StreamingCKA` (one pair), :class:`CKAMatrix` (all layer pairs of two
models from one pass, or only the diagonal), :func:`cka_matrix`,
:func:`diagonal_cka` (one-shot wrappers), :func:`cka_features` (one-shot
feature space), :func:`cka_gram` and :func:`hsic_gram` (explicit n x n Gram
matrices; the reference for small n).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import torch

from .threads import num_threads

__all__ = [
    "StreamingCKA",
    "CKAMatrix",
    "cka_matrix",
    "diagonal_cka",
    "cka_features",
    "cka_gram",
    "hsic_gram",
]

ArrayLike = Union[torch.Tensor, np.ndarray]
Activations = Union[Mapping[str, ArrayLike], Sequence[ArrayLike], torch.Tensor]

# Elements (not bytes) of one shifted row chunk; bounds the scratch memory of
# an update to a few times 8 * _CHUNK_ELEMENTS bytes per representation.
_CHUNK_ELEMENTS = 1 << 22
# Minimum column block of the symmetric (upper-blocks-only) Gram update on CPU.
_SYM_BLOCK = 192


# --------------------------------------------------------------------------
# input checking
# --------------------------------------------------------------------------


def _as_matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """Return ``x`` as a 2-D real torch tensor (no copy when possible)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor: {exc}") from exc
    if t.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D (tokens x features) matrix, got shape {tuple(t.shape)} "
            f"(flatten batch and sequence dimensions to one token dimension first)"
        )
    if t.is_complex():
        raise ValueError(f"{name} must be real, got dtype {t.dtype}")
    if t.dtype == torch.bool:
        t = t.to(torch.float64)
    if t.shape[1] == 0:
        raise ValueError(f"{name} has zero features (shape {tuple(t.shape)})")
    return t


def _check_same_n(named: Sequence[tuple[str, torch.Tensor]]) -> int:
    n = named[0][1].shape[0]
    for name, t in named[1:]:
        if t.shape[0] != n:
            raise ValueError(
                f"all activations must cover the same tokens: {named[0][0]} has {n} rows "
                f"but {name} has {t.shape[0]}"
            )
    return n


def _layers(acts: Activations, side: str) -> tuple[list[str], list[torch.Tensor]]:
    """Normalise per-layer activations to (names, 2-D tensors)."""
    if isinstance(acts, Mapping):
        names = [str(k) for k in acts.keys()]
        mats = list(acts.values())
    elif isinstance(acts, torch.Tensor) or isinstance(acts, np.ndarray):
        if acts.ndim != 3:
            raise ValueError(
                f"{side}: a single tensor must be a (layers x tokens x features) stack, got shape "
                f"{tuple(acts.shape)}; pass a list or dict of 2-D matrices instead"
            )
        names = [str(i) for i in range(acts.shape[0])]
        mats = [acts[i] for i in range(acts.shape[0])]
    elif isinstance(acts, Sequence) and not isinstance(acts, (str, bytes)):
        names = [str(i) for i in range(len(acts))]
        mats = list(acts)
    else:
        raise ValueError(f"{side}: expected a dict or list of 2-D activation matrices, got {type(acts).__name__}")
    if not mats:
        raise ValueError(f"{side}: no layers given")
    return names, [_as_matrix(m, f"{side}[{nm!r}]") for nm, m in zip(names, mats)]


def _resolve_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype not in (torch.float64, torch.float32):
        raise ValueError(f"accumulation dtype must be torch.float64 or torch.float32, got {dtype}")
    return dtype


# --------------------------------------------------------------------------
# exact translation of the streamed statistics (rows z -> z + delta)
# --------------------------------------------------------------------------


def _translate_side(n, s, G, p1, p2, u, d):
    """Statistics of ``z_i + d`` from those of ``z_i`` (one representation).

    With ``t_i = z_i . d`` and ``c = ||d||^2``::

        s'  = s + n d
        G'  = G + s d^T + d s^T + n d d^T
        P1' = P1 + 2 s.d + n c
        P2' = P2 + 4 d^T G d + n c^2 + 4 u.d + 2 c P1 + 4 c s.d
        u'  = u + P1 d + 2 G d + 2 (s.d) d + c s + n c d
    """
    Gd = G @ d
    sd = torch.dot(s, d)
    c = torch.dot(d, d)
    dGd = torch.dot(d, Gd)
    ud = torch.dot(u, d)
    s_new = s + n * d
    G_new = G + torch.outer(s, d) + torch.outer(d, s) + n * torch.outer(d, d)
    p1_new = p1 + 2 * sd + n * c
    p2_new = p2 + 4 * dGd + n * c * c + 4 * ud + 2 * c * p1 + 4 * c * sd
    u_new = u + p1 * d + 2 * Gd + 2 * sd * d + c * s + n * c * d
    return s_new, G_new, p1_new, p2_new, u_new


def _translate_cross(n, sx, sy, C, p1, q1, pq, a, b, d, e):
    """Cross statistics of ``(z_i + d, w_i + e)`` from those of ``(z_i, w_i)``.

    Uses the *old* side statistics ``sx, sy, p1, q1``. With ``c = ||d||^2``,
    ``k = ||e||^2``::

        C'  = C + s_x e^T + d s_y^T + n d e^T
        a'  = a + Q1 d + 2 C e + 2 (s_y.e) d + k s_x + n k d        (a = sum q_i z_i)
        b'  = b + P1 e + 2 C^T d + 2 (s_x.d) e + c s_y + n c e      (b = sum p_i w_i)
        PQ' = PQ + 2 b.e + k P1 + 2 a.d + 4 d^T C e + 2 k s_x.d + c Q1 + 2 c s_y.e + n c k
    """
    Ce = C @ e
    Ctd = C.T @ d
    c = torch.dot(d, d)
    k = torch.dot(e, e)
    sxd = torch.dot(sx, d)
    sye = torch.dot(sy, e)
    C_new = C + torch.outer(sx, e) + torch.outer(d, sy) + n * torch.outer(d, e)
    a_new = a + q1 * d + 2 * Ce + 2 * sye * d + k * sx + n * k * d
    b_new = b + p1 * e + 2 * Ctd + 2 * sxd * e + c * sy + n * c * e
    pq_new = (
        pq
        + 2 * torch.dot(b, e)
        + k * p1
        + 2 * torch.dot(a, d)
        + 4 * torch.dot(d, Ce)
        + 2 * k * sxd
        + c * q1
        + 2 * c * sye
        + n * c * k
    )
    return C_new, pq_new, a_new, b_new


def _fro2(M: torch.Tensor) -> torch.Tensor:
    return torch.dot(M.reshape(-1), M.reshape(-1))


class _SideFinal:
    """Per-layer quantities at the end, after translation to the mean."""

    __slots__ = ("s", "G", "p1", "p2", "u", "h0", "h1", "old_s", "old_p1", "delta")

    def __init__(self, n, s, G, p1, p2, u):
        self.old_s, self.old_p1 = s, p1
        self.delta = -s / n
        s, G, p1, p2, u = _translate_side(n, s, G, p1, p2, u, self.delta)
        self.s, self.G, self.p1, self.p2, self.u = s, G, p1, p2, u
        # biased: ||X_c^T X_c||_F^2
        self.h0 = _fro2(G - torch.outer(s, s) / n).item()
        # debiased: n(n-3) HSIC_1(K, K)
        if n >= 4:
            tr = _fro2(G) - p2
            one_k_one = torch.dot(s, s) - p1
            one_kk_one = torch.dot(s, G @ s) - 2 * torch.dot(s, u) + p2
            self.h1 = (tr + one_k_one * one_k_one / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_kk_one).item()
        else:
            self.h1 = math.nan


def _pair_hsic(n, fx: _SideFinal, fy: _SideFinal, C, pq, a, b, debiased: bool) -> float:
    """Unnormalised cross HSIC term for one pair (see module docstring)."""
    C, pq, a, b = _translate_cross(n, fx.old_s, fy.old_s, C, fx.old_p1, fy.old_p1, pq, a, b, fx.delta, fy.delta)
    sx, sy = fx.s, fy.s
    if not debiased:
        return _fro2(C - torch.outer(sx, sy) / n).item()
    tr = _fro2(C) - pq
    kx = torch.dot(sx, sx) - fx.p1
    ly = torch.dot(sy, sy) - fy.p1
    kl = torch.dot(sx, C @ sy) - torch.dot(sx, a) - torch.dot(sy, b) + pq
    return (tr + kx * ly / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl).item()


def _ratio(hxy: float, hxx: float, hyy: float) -> float:
    den = hxx * hyy
    if not (den > 0.0) or not math.isfinite(den):
        return math.nan
    return hxy / math.sqrt(den)


# --------------------------------------------------------------------------
# the accumulator shared by StreamingCKA and CKAMatrix
# --------------------------------------------------------------------------


class _Layout:
    __slots__ = ("names", "dims", "offsets", "total")

    def __init__(self, names: Sequence[str], dims: Sequence[int]):
        self.names = tuple(names)
        self.dims = tuple(int(d) for d in dims)
        offs, o = [], 0
        for d in self.dims:
            offs.append(o)
            o += d
        self.offsets = tuple(offs)
        self.total = o

    def block(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i] + self.dims[i])

    def __len__(self) -> int:
        return len(self.dims)

    def __eq__(self, other) -> bool:
        return isinstance(other, _Layout) and self.names == other.names and self.dims == other.dims


class _Engine:
    """Streams the statistics listed in the module docstring for layer pairs.

    Storage (R = 1 + L1 + L2 rows; row 0 is the all-ones column, rows
    1..L1 the per-layer squared row norms p of side X, the rest q of Y)::

        ww = U^T U        (R x R)   n, P1, Q1, P2, Q2, PQ
        rx = U^T Zcat     (R x D1)  s_x, u (diagonal blocks), a
        ry = U^T Wcat     (R x D2)  s_y, b, v (diagonal blocks)
        gx[i], gy[j]                per-layer Grams
        cross                       all X_i^T Y_j as one D1 x D2 matrix, or per pair
    """

    def __init__(self, pairs, device, dtype, chunk_rows):
        self._pairs_spec = pairs
        self.device = None if device is None else torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        if chunk_rows is not None and int(chunk_rows) < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        self.chunk_rows = None if chunk_rows is None else int(chunk_rows)
        self.n = 0
        self.lx: _Layout | None = None
        self.ly: _Layout | None = None

    # ---- layout -----------------------------------------------------------

    def _resolve_pairs(self, lx: _Layout, ly: _Layout):
        spec = self._pairs_spec
        if isinstance(spec, str):
            if spec == "all":
                return None
            if spec == "diagonal":
                if len(lx) != len(ly):
                    raise ValueError(
                        f"pairs='diagonal' needs as many layers on both sides, got {len(lx)} and {len(ly)}"
                    )
                return [(i, i) for i in range(len(lx))]
            raise ValueError(f"pairs must be 'all', 'diagonal' or a list of (i, j) pairs, got {spec!r}")
        out = []
        for pr in spec:
            if len(pr) != 2:
                raise ValueError(f"each pair must be (layer_a, layer_b), got {pr!r}")
            ij = []
            for key, lay, side in ((pr[0], lx, "a"), (pr[1], ly, "b")):
                if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                    if not 0 <= int(key) < len(lay):
                        raise ValueError(f"pair {pr!r}: layer index {key} out of range for side {side}")
                    ij.append(int(key))
                elif str(key) in lay.names:
                    ij.append(lay.names.index(str(key)))
                else:
                    raise ValueError(f"pair {pr!r}: unknown layer {key!r} on side {side}")
            out.append(tuple(ij))
        if not out:
            raise ValueError("pairs is empty")
        return sorted(set(out))

    def _init(self, names_x, xs, names_y, ys):
        if self.device is None:
            self.device = xs[0].device
        lx = _Layout(names_x, [t.shape[1] for t in xs])
        ly = _Layout(names_y, [t.shape[1] for t in ys])
        self.pairs = self._resolve_pairs(lx, ly)
        self.lx, self.ly = lx, ly
        L1, L2 = len(lx), len(ly)
        R = self.R = 1 + L1 + L2
        kw = dict(device=self.device, dtype=self.dtype)
        self.shift_x = torch.zeros(lx.total, **kw)
        self.shift_y = torch.zeros(ly.total, **kw)
        self.gx = [torch.zeros(d, d, **kw) for d in lx.dims]
        self.gy = [torch.zeros(d, d, **kw) for d in ly.dims]
        self._bounds = [self._block_bounds(g.shape[0]) for g in self.gx + self.gy]
        self._synced = True
        self.ww = torch.zeros(R, R, **kw)
        self.rx = torch.zeros(R, lx.total, **kw)
        self.ry = torch.zeros(R, ly.total, **kw)
        if self.pairs is None:
            self.cross = torch.zeros(lx.total, ly.total, **kw)
        else:
            self.cross = {(i, j): torch.zeros(lx.dims[i], ly.dims[j], **kw) for i, j in self.pairs}

    def _block_bounds(self, w: int):
        """Column blocks for a symmetric Gram update (CPU only; None = one GEMM).

        Only the diagonal and upper blocks are accumulated (about 2/3 of the
        flops of a full ``Z^T Z`` for 3 blocks); :meth:`_sync` mirrors the rest.
        """
        nb = min(8, w // _SYM_BLOCK) if self.device.type == "cpu" else 1
        if nb < 2:
            return None
        # block edges on multiples of 32 columns (BLAS kernels prefer them)
        return [0] + [32 * round(k * w / nb / 32) for k in range(1, nb)] + [w]

    def _tensors(self) -> list[torch.Tensor]:
        """All accumulated tensors (for merging)."""
        cross = [self.cross] if self.pairs is None else [self.cross[k] for k in sorted(self.cross)]
        return [self.ww, self.rx, self.ry, *self.gx, *self.gy, *cross]

    def _sync(self) -> None:
        """Mirror the upper blocks of the blocked symmetric Grams to the lower ones."""
        if self._synced:
            return
        for g, bounds in zip(self.gx + self.gy, self._bounds):
            if bounds is None:
                continue
            for a in range(len(bounds) - 1):
                for b in range(a + 1, len(bounds) - 1):
                    ra, rb = slice(bounds[a], bounds[a + 1]), slice(bounds[b], bounds[b + 1])
                    g[rb, ra] = g[ra, rb].T
        self._synced = True

    @staticmethod
    def _gram_add(g: torch.Tensor, z: torch.Tensor, bounds) -> None:
        if bounds is None:
            g.addmm_(z.T, z)
            return
        for a in range(len(bounds) - 1):
            za = z[:, bounds[a] : bounds[a + 1]]
            for b in range(a, len(bounds) - 1):
                zb = z[:, bounds[b] : bounds[b + 1]]
                g[bounds[a] : bounds[a + 1], bounds[b] : bounds[b + 1]].addmm_(za.T, zb)

    def _check_layout(self, names_x, xs, names_y, ys):
        for lay, names, ts, side in ((self.lx, names_x, xs, "a"), (self.ly, names_y, ys, "b")):
            dims = tuple(t.shape[1] for t in ts)
            if tuple(names) != lay.names or dims != lay.dims:
                raise ValueError(
                    f"side {side}: layers/widths changed between updates: expected "
                    f"{list(zip(lay.names, lay.dims))}, got {list(zip(names, dims))}"
                )

    # ---- streaming ------------------------------------------------------

    def update(self, names_x, xs, names_y, ys) -> None:
        m = _check_same_n(
            [(f"a[{nm!r}]", t) for nm, t in zip(names_x, xs)] + [(f"b[{nm!r}]", t) for nm, t in zip(names_y, ys)]
        )
        if self.lx is None:
            self._init(names_x, xs, names_y, ys)
        else:
            self._check_layout(names_x, xs, names_y, ys)
        if m == 0:
            return
        width = max(self.lx.total, self.ly.total)
        chunk = self.chunk_rows or max(64, _CHUNK_ELEMENTS // width)
        chunk = min(chunk, m)
        kw = dict(device=self.device, dtype=self.dtype)
        zbuf = torch.empty(chunk, self.lx.total, **kw)
        wbuf = torch.empty(chunk, self.ly.total, **kw)
        ubuf = torch.empty(self.R, chunk, **kw)
        self._synced = False
        for lo in range(0, m, chunk):
            hi = min(m, lo + chunk)
            if self.n == 0:
                self._set_shift(self.shift_x, self.lx, xs, lo, hi)
                self._set_shift(self.shift_y, self.ly, ys, lo, hi)
            z = self._fill(zbuf[: hi - lo], self.lx, xs, self.shift_x, lo, hi)
            w = self._fill(wbuf[: hi - lo], self.ly, ys, self.shift_y, lo, hi)
            self._accumulate(z, w, ubuf[:, : hi - lo])
            self.n += hi - lo

    def _src(self, t: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        s = t[lo:hi]
        if s.device != self.device:
            # asynchronous only host -> accelerator (safe); device -> host must block
            s = s.to(self.device, non_blocking=self.device.type != "cpu")
        return s

    def _set_shift(self, shift, lay, ts, lo, hi):
        for i, t in enumerate(ts):
            shift[lay.block(i)] = self._src(t, lo, hi).to(torch.float64).mean(0).to(self.dtype)

    def _fill(self, buf, lay, ts, shift, lo, hi) -> torch.Tensor:
        if len(lay) == 1:
            torch.sub(self._src(ts[0], lo, hi), shift, out=buf)
        else:
            for i, t in enumerate(ts):
                blk = lay.block(i)
                torch.sub(self._src(t, lo, hi), shift[blk], out=buf[:, blk])
        return buf

    def _accumulate(self, z: torch.Tensor, w: torch.Tensor, ut: torch.Tensor) -> None:
        # ut = U^T, rows [1, p_1..p_L1, q_1..q_L2] (squared row norms per layer)
        ut[0] = 1.0
        r = 1
        for lay, zz in ((self.lx, z), (self.ly, w)):
            for i in range(len(lay)):
                zi = zz if len(lay) == 1 else zz[:, lay.block(i)]
                torch.linalg.vector_norm(zi, dim=1, out=ut[r])
                r += 1
        ut[1:].square_()
        grams = self.gx + self.gy
        k = 0
        for lay, zz in ((self.lx, z), (self.ly, w)):
            for i in range(len(lay)):
                zi = zz if len(lay) == 1 else zz[:, lay.block(i)]
                self._gram_add(grams[k], zi, self._bounds[k])
                k += 1
        # (measured: folding U into the cross product as extra columns is no faster on CPU)
        self.ww.addmm_(ut, ut.T)
        self.rx.addmm_(ut, z)
        self.ry.addmm_(ut, w)
        if self.pairs is None:
            self.cross.addmm_(z.T, w)
        else:
            for (i, j), c in self.cross.items():
                c.addmm_(z[:, self.lx.block(i)].T, w[:, self.ly.block(j)])

    # ---- views of the statistics --------------------------------------

    def _iter_pairs(self):
        if self.pairs is None:
            return [(i, j) for i in range(len(self.lx)) for j in range(len(self.ly))]
        return self.pairs

    def _cross_block(self, i, j) -> torch.Tensor:
        if self.pairs is None:
            return self.cross[self.lx.block(i), self.ly.block(j)]
        return self.cross[(i, j)]

    def _side_stats(self, side: str, i: int):
        L1 = len(self.lx)
        if side == "x":
            blk, r, rmat, g = self.lx.block(i), 1 + i, self.rx, self.gx[i]
        else:
            blk, r, rmat, g = self.ly.block(i), 1 + L1 + i, self.ry, self.gy[i]
        return rmat[0, blk], g, self.ww[0, r], self.ww[r, r], rmat[r, blk]

    def _pair_stats(self, i: int, j: int):
        L1 = len(self.lx)
        bi, bj = self.lx.block(i), self.ly.block(j)
        ri, rj = 1 + i, 1 + L1 + j
        return self._cross_block(i, j), self.ww[ri, rj], self.rx[rj, bi], self.ry[ri, bj]

    # ---- results -----------------------------------------------------------

    def _check_ready(self, debiased: bool) -> None:
        if self.n == 0:
            raise ValueError("empty accumulator: call update() with at least one token before asking for CKA")
        need = 4 if debiased else 2
        if self.n < need:
            raise ValueError(
                f"{'debiased' if debiased else 'biased'} CKA needs at least {need} tokens, got {self.n}"
            )
        if not (bool(torch.isfinite(self.ww).all()) and bool(torch.isfinite(self.rx).all())
                and bool(torch.isfinite(self.ry).all())):
            raise ValueError("non-finite values (NaN/Inf) were accumulated; check the activations")

    def _finals(self):
        n = self.n
        fx = [_SideFinal(n, *self._side_stats("x", i)) for i in range(len(self.lx))]
        fy = [_SideFinal(n, *self._side_stats("y", j)) for j in range(len(self.ly))]
        return fx, fy

    def hsic_table(self, debiased: bool):
        """{(i, j): (h_xy, h_xx, h_yy)} normalised as HSIC_0 or HSIC_1."""
        self._check_ready(debiased)
        self._sync()
        n = self.n
        fx, fy = self._finals()
        norm = (n - 1) ** 2 if not debiased else n * (n - 3)
        out = {}
        for i, j in self._iter_pairs():
            hxy = _pair_hsic(n, fx[i], fy[j], *self._pair_stats(i, j), debiased)
            hxx = fx[i].h1 if debiased else fx[i].h0
            hyy = fy[j].h1 if debiased else fy[j].h0
            out[(i, j)] = (hxy / norm, hxx / norm, hyy / norm)
        return out

    def cka_table(self, debiased: bool):
        return {ij: _ratio(*h) for ij, h in self.hsic_table(debiased).items()}

    # ---- merging ----------------------------------------------------------

    def _compatible(self, other: "_Engine") -> None:
        if not isinstance(other, _Engine):
            raise ValueError(f"can only merge an accumulator of the same kind, got {type(other).__name__}")
        if other.lx is None:
            return
        if self.lx is None:
            if self._resolve_pairs(other.lx, other.ly) != other.pairs:
                raise ValueError("cannot merge accumulators over different layer pairs")
            return
        if not (self.lx == other.lx and self.ly == other.ly):
            raise ValueError("cannot merge accumulators over different layers or widths")
        if self.pairs != other.pairs:
            raise ValueError("cannot merge accumulators over different layer pairs")

    def merge(self, other: "_Engine") -> None:
        self._compatible(other)
        if other.lx is None or other.n == 0:
            return
        if self.lx is None or self.n == 0:
            dev, dt, chunk = self.device, self.dtype, self.chunk_rows
            self.__dict__.update(copy.deepcopy(other.__dict__))
            self.chunk_rows = chunk
            self._to(dev if dev is not None else other.device, dt)
            return
        self._sync()
        other._sync()
        o = copy.deepcopy(other)
        o._to(self.device, self.dtype)
        o._translate(o.shift_x - self.shift_x, o.shift_y - self.shift_y)
        self.n += o.n
        for t, u in zip(self._tensors(), o._tensors()):
            t += u
        self._zero_unused()

    def _to(self, device, dtype) -> None:
        if self.lx is not None:
            self._sync()
        self.device, self.dtype = torch.device(device), dtype
        if self.lx is None:
            return
        mv = lambda t: t.to(device=self.device, dtype=dtype)  # noqa: E731
        for k in ("shift_x", "shift_y", "ww", "rx", "ry"):
            setattr(self, k, mv(getattr(self, k)))
        self.gx = [mv(g) for g in self.gx]
        self.gy = [mv(g) for g in self.gy]
        self.cross = mv(self.cross) if self.pairs is None else {k: mv(v) for k, v in self.cross.items()}
        self._bounds = [self._block_bounds(g.shape[0]) for g in self.gx + self.gy]

    def _translate(self, dx: torch.Tensor, dy: torch.Tensor) -> None:
        """Re-express all statistics for rows shifted by (+dx, +dy), in place."""
        self._sync()
        n, L1 = self.n, len(self.lx)
        old_x = [tuple(t.clone() for t in self._side_stats("x", i)) for i in range(L1)]
        old_y = [tuple(t.clone() for t in self._side_stats("y", j)) for j in range(len(self.ly))]
        for i, j in self._iter_pairs():
            C, pq, a, b = self._pair_stats(i, j)
            sx, _, p1, _, _ = old_x[i]
            sy, _, q1, _, _ = old_y[j]
            di, ej = dx[self.lx.block(i)], dy[self.ly.block(j)]
            C2, pq2, a2, b2 = _translate_cross(n, sx, sy, C, p1, q1, pq, a, b, di, ej)
            C.copy_(C2)
            a.copy_(a2)
            b.copy_(b2)
            ri, rj = 1 + i, 1 + L1 + j
            self.ww[ri, rj] = pq2
            self.ww[rj, ri] = pq2
        for side, lay, olds, delta, base in (("x", self.lx, old_x, dx, 1), ("y", self.ly, old_y, dy, 1 + L1)):
            rmat = self.rx if side == "x" else self.ry
            for i, st in enumerate(olds):
                blk, r = lay.block(i), base + i
                s2, G2, p12, p22, u2 = _translate_side(n, *st, delta[blk])
                rmat[0, blk] = s2
                (self.gx if side == "x" else self.gy)[i].copy_(G2)
                self.ww[0, r] = p12
                self.ww[r, 0] = p12
                self.ww[r, r] = p22
                rmat[r, blk] = u2
            (self.shift_x if side == "x" else self.shift_y).sub_(delta)
        self._zero_unused()

    def _zero_unused(self) -> None:
        """Zero the entries that no pair uses (they cannot be translated)."""
        L1, L2 = len(self.lx), len(self.ly)
        if L1 == 1 and L2 == 1:
            return
        R = 1 + L1 + L2
        keep_w = torch.zeros(R, R, dtype=torch.bool, device=self.device)
        keep_x = torch.zeros(R, self.lx.total, dtype=torch.bool, device=self.device)
        keep_y = torch.zeros(R, self.ly.total, dtype=torch.bool, device=self.device)
        keep_w[0, :] = True
        keep_w[:, 0] = True
        keep_x[0, :] = True
        keep_y[0, :] = True
        for i in range(L1):
            keep_w[1 + i, 1 + i] = True
            keep_x[1 + i, self.lx.block(i)] = True
        for j in range(L2):
            keep_w[1 + L1 + j, 1 + L1 + j] = True
            keep_y[1 + L1 + j, self.ly.block(j)] = True
        for i, j in self._iter_pairs():
            keep_w[1 + i, 1 + L1 + j] = keep_w[1 + L1 + j, 1 + i] = True
            keep_x[1 + L1 + j, self.lx.block(i)] = True
            keep_y[1 + i, self.ly.block(j)] = True
        for t, keep in ((self.ww, keep_w), (self.rx, keep_x), (self.ry, keep_y)):
            t.masked_fill_(~keep, 0.0)


# --------------------------------------------------------------------------
# public classes
# --------------------------------------------------------------------------


class StreamingCKA:
    r"""Exact linear CKA between two representations of the same tokens, streamed.

    ``update(X, Y)`` takes a batch of ``n_b`` tokens, ``X`` of shape
    ``(n_b, d)`` and ``Y`` of shape ``(n_b, e)`` (``d != e`` allowed; torch
    tensors on any device or numpy arrays; float16/bfloat16/float32 inputs are
    upcast chunk by chunk). The sufficient statistics listed in the module
    docstring are accumulated on ``device`` in ``dtype`` (float64 by default),
    so memory is O(d^2 + e^2 + d e) for any number of tokens, and
    :meth:`value` returns, up to float64 rounding, exactly::

        biased    CKA   = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)
        debiased  CKA_1 = HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))

    over all tokens seen, where HSIC_1 is the unbiased estimator of Song et
    al. (2012) on the linear Grams ``K = X X^T``, ``L = Y Y^T`` (see the module
    docstring for the formula). Accumulators of shards of the same token
    stream combine exactly with :meth:`merge`.

    Args:
        device: where the statistics live (default: the device of the first
            batch). Inputs on another device are moved chunk by chunk.
        dtype: accumulation dtype, ``torch.float64`` (default) or
            ``torch.float32`` (faster on GPUs, less exact; not advised for the
            debiased estimator).
        chunk_rows: rows per internal chunk (default: about 4M elements per
            chunk, e.g. 7281 rows for d = 576).
    """

    def __init__(self, device=None, dtype: torch.dtype = torch.float64, chunk_rows: int | None = None):
        self._e = _Engine("all", device, dtype, chunk_rows)

    @property
    def n(self) -> int:
        """Number of tokens accumulated so far."""
        return self._e.n

    @property
    def device(self):
        return self._e.device

    def update(self, X: ArrayLike, Y: ArrayLike) -> "StreamingCKA":
        """Accumulate one batch of paired activations ``X (n_b, d)``, ``Y (n_b, e)``."""
        x = _as_matrix(X, "X")
        y = _as_matrix(Y, "Y")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"X and Y must hold the same tokens: X has {x.shape[0]} rows, Y has {y.shape[0]}"
            )
        try:
            self._e.update(["X"], [x], ["Y"], [y])
        except ValueError as exc:
            if "widths changed" in str(exc):
                raise ValueError(
                    f"feature widths changed between updates: expected X (*, {self._e.lx.dims[0]}) and "
                    f"Y (*, {self._e.ly.dims[0]}), got X {tuple(x.shape)} and Y {tuple(y.shape)}"
                ) from None
            raise
        return self

    def hsic(self, debiased: bool = False) -> tuple[float, float, float]:
        """``(HSIC(K, L), HSIC(K, K), HSIC(L, L))`` as HSIC_0 (biased) or HSIC_1 (debiased)."""
        return self._e.hsic_table(debiased)[(0, 0)]

    def value(self, debiased: bool = False) -> float:
        """Linear CKA over all tokens seen (``debiased=True``: the HSIC_1 version).

        Raises ValueError if nothing (or too little: 2 tokens biased, 4
        debiased) was accumulated. Returns NaN if a representation is constant.
        """
        return _ratio(*self.hsic(debiased))

    def merge(self, other: "StreamingCKA") -> "StreamingCKA":
        """Add another accumulator's tokens to this one (exact; in place; returns self)."""
        if not isinstance(other, StreamingCKA):
            raise ValueError(f"can only merge a StreamingCKA, got {type(other).__name__}")
        self._e.merge(other._e)
        return self

    def __repr__(self) -> str:
        if self._e.lx is None:
            return "StreamingCKA(empty)"
        return f"StreamingCKA(n={self.n}, d={self._e.lx.dims[0]}, e={self._e.ly.dims[0]}, device={self.device})"


class CKAMatrix:
    r"""Linear CKA for many layer pairs of two models from one pass over tokens.

    ``update(acts_a, acts_b)`` takes the activations of model A and model B on
    the *same* batch of tokens: each a dict ``{layer_name: (n_b, d_l)}``, a
    list of 2-D matrices, or a ``(layers, n_b, d)`` stack. Per layer the Gram
    ``X_i^T X_i`` and row-norm moments are accumulated once and shared by all
    pairs; per pair only ``X_i^T Y_j`` (and O(d) vectors) is added. With
    ``pairs="all"`` the cross products of all pairs come from one
    ``(sum d_i) x (sum e_j)`` matrix product per chunk.

    Args:
        pairs: ``"all"`` (full L1 x L2 matrix; memory ~ 8 (sum d_i)(sum e_j)
            bytes), ``"diagonal"`` (layer i of A vs layer i of B, e.g. base vs
            fine-tuned), or an explicit list of ``(layer_a, layer_b)`` pairs
            (indices or names).
        device, dtype, chunk_rows: as for :class:`StreamingCKA`.

    :meth:`value` returns an ``L1 x L2`` float64 CPU tensor (NaN where a pair
    was not requested); :meth:`diagonal` the vector of ``(i, i)`` entries.
    Every entry equals :class:`StreamingCKA` on that pair alone.
    """

    def __init__(self, pairs="all", device=None, dtype: torch.dtype = torch.float64, chunk_rows: int | None = None):
        self._e = _Engine(pairs, device, dtype, chunk_rows)

    @property
    def n(self) -> int:
        return self._e.n

    @property
    def names_a(self) -> tuple[str, ...]:
        return () if self._e.lx is None else self._e.lx.names

    @property
    def names_b(self) -> tuple[str, ...]:
        return () if self._e.ly is None else self._e.ly.names

    def update(self, acts_a: Activations, acts_b: Activations) -> "CKAMatrix":
        """Accumulate one batch of per-layer activations of models A and B."""
        na, xa = _layers(acts_a, "acts_a")
        nb, xb = _layers(acts_b, "acts_b")
        self._e.update(na, xa, nb, xb)
        return self

    def hsic(self, debiased: bool = False) -> dict[tuple[int, int], tuple[float, float, float]]:
        """``{(i, j): (HSIC(K_i, L_j), HSIC(K_i, K_i), HSIC(L_j, L_j))}`` for the requested pairs."""
        return self._e.hsic_table(debiased)

    def value(self, debiased: bool = False) -> torch.Tensor:
        """``L1 x L2`` float64 CPU tensor of CKA values (NaN for pairs not requested)."""
        table = self._e.cka_table(debiased)
        out = torch.full((len(self._e.lx), len(self._e.ly)), math.nan, dtype=torch.float64)
        for (i, j), v in table.items():
            out[i, j] = v
        return out

    def diagonal(self, debiased: bool = False) -> torch.Tensor:
        """CKA of layer i of A with layer i of B, for i < min(L1, L2) (float64 CPU vector)."""
        if self._e.lx is None:
            raise ValueError("empty accumulator: call update() with at least one token before asking for CKA")
        L = min(len(self._e.lx), len(self._e.ly))
        pairs = self._e._iter_pairs()
        missing = [i for i in range(L) if (i, i) not in set(pairs)]
        if missing:
            raise ValueError(f"diagonal pairs {missing} were not accumulated (pairs={self._e._pairs_spec!r})")
        return torch.diagonal(self.value(debiased)[:L, :L]).clone()

    def merge(self, other: "CKAMatrix") -> "CKAMatrix":
        """Add another accumulator's tokens to this one (exact; in place; returns self)."""
        if not isinstance(other, CKAMatrix):
            raise ValueError(f"can only merge a CKAMatrix, got {type(other).__name__}")
        self._e.merge(other._e)
        return self

    def __repr__(self) -> str:
        if self._e.lx is None:
            return "CKAMatrix(empty)"
        return f"CKAMatrix(n={self.n}, layers={len(self._e.lx)}x{len(self._e.ly)}, device={self._e.device})"


def cka_matrix(acts_a: Activations, acts_b: Activations, debiased: bool = False, device=None,
               chunk_rows: int | None = None) -> torch.Tensor:
    """One-shot ``L1 x L2`` cross-layer linear CKA matrix (see :class:`CKAMatrix`)."""
    return CKAMatrix("all", device=device, chunk_rows=chunk_rows).update(acts_a, acts_b).value(debiased)


def diagonal_cka(acts_a: Activations, acts_b: Activations, debiased: bool = False, device=None,
                 chunk_rows: int | None = None) -> torch.Tensor:
    """One-shot same-layer CKA (layer i of A vs layer i of B), a float64 CPU vector."""
    return CKAMatrix("diagonal", device=device, chunk_rows=chunk_rows).update(acts_a, acts_b).diagonal(debiased)


# --------------------------------------------------------------------------
# one-shot references
# --------------------------------------------------------------------------


def _pair_inputs(X, Y, device):
    x = _as_matrix(X, "X")
    y = _as_matrix(Y, "Y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must hold the same tokens: X has {x.shape[0]} rows, Y has {y.shape[0]}")
    dev = x.device if device is None else torch.device(device)
    return x.to(dev, torch.float64), y.to(dev, torch.float64), x.shape[0]


def _min_n(n: int, debiased: bool) -> None:
    need = 4 if debiased else 2
    if n < need:
        raise ValueError(f"{'debiased' if debiased else 'biased'} CKA needs at least {need} tokens, got {n}")


def cka_features(X: ArrayLike, Y: ArrayLike, debiased: bool = False, device=None) -> float:
    r"""One-shot linear CKA in feature space, in float64 (O(n (d + e)) extra memory).

    Centres the columns, then (``a_i = ||x_i - xbar||^2``, ``b_i = ||y_i - ybar||^2``)::

        biased:   ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)
        debiased: h(X, Y) / sqrt(h(X, X) h(Y, Y)) with
                  h(X, Y) = ||Y_c^T X_c||_F^2 - n/(n-2) sum_i a_i b_i + (sum a)(sum b)/((n-1)(n-2))
                  (= n(n-3) HSIC_1 of Song et al. 2012)
    """
    x, y, n = _pair_inputs(X, Y, device)
    _min_n(n, debiased)
    x = x - x.mean(0)
    y = y - y.mean(0)
    xy, xx, yy = _fro2(y.T @ x).item(), _fro2(x.T @ x).item(), _fro2(y.T @ y).item()
    if debiased:
        a = (x * x).sum(1)
        b = (y * y).sum(1)
        A, B = a.sum().item(), b.sum().item()
        f = n / (n - 2)
        g = 1.0 / ((n - 1) * (n - 2))
        xy = xy - f * torch.dot(a, b).item() + A * B * g
        xx = xx - f * torch.dot(a, a).item() + A * A * g
        yy = yy - f * torch.dot(b, b).item() + B * B * g
    return _ratio(xy, xx, yy)


def hsic_gram(K: ArrayLike, L: ArrayLike, debiased: bool = False) -> float:
    r"""HSIC from two ``n x n`` Gram matrices, in float64.

    ``debiased=False``: ``HSIC_0 = tr(K H L H) / (n-1)^2`` with ``H = I - 11^T/n``.
    ``debiased=True``: Song et al. (2012) unbiased estimator, with ``K~``, ``L~``
    the Grams with zeroed diagonals::

        HSIC_1 = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1)/((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))
    """
    k = _as_matrix(K, "K").to(torch.float64)
    l_ = _as_matrix(L, "L").to(k.device, torch.float64)
    n = k.shape[0]
    if k.shape != (n, n) or l_.shape != (n, n):
        raise ValueError(f"K and L must be square and of the same size, got {tuple(k.shape)} and {tuple(l_.shape)}")
    _min_n(n, debiased)
    if not debiased:
        H = torch.eye(n, dtype=torch.float64, device=k.device) - 1.0 / n
        return (torch.trace(H @ k @ H @ l_) / (n - 1) ** 2).item()
    kt = k.clone()
    lt = l_.clone()
    kt.fill_diagonal_(0.0)
    lt.fill_diagonal_(0.0)
    one = torch.ones(n, dtype=torch.float64, device=k.device)
    tr = torch.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return ((tr + term2 - term3) / (n * (n - 3))).item()


def cka_gram(X: ArrayLike, Y: ArrayLike, debiased: bool = False, device=None) -> float:
    r"""Linear CKA through explicit ``n x n`` Gram matrices (reference for small n).

    ``K = X X^T``, ``L = Y Y^T`` in float64, then
    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with :func:`hsic_gram`
    (biased HSIC_0 via the centering matrix, or the unbiased HSIC_1 of Song
    et al. 2012). O(n^2) memory and O(n^3) time: use only for small n.
    """
    x, y, n = _pair_inputs(X, Y, device)
    _min_n(n, debiased)
    K = x @ x.T
    L = y @ y.T
    return _ratio(hsic_gram(K, L, debiased), hsic_gram(K, K, debiased), hsic_gram(L, L, debiased))


class BlockedCKA:
    r"""Streaming linear CKA with a delete-one-block jackknife over token blocks.

    Batches go round-robin into ``n_blocks`` :class:`StreamingCKA` accumulators, so updating costs the same as
    one accumulator (each token is accumulated once) while memory grows ``n_blocks``-fold. ``value`` merges all
    blocks (exactly the CKA over every token); ``jackknife`` recomputes CKA leaving out each block in turn::

        theta_(b) = CKA(all tokens except block b),   theta_. = mean_b theta_(b)
        se = sqrt((B - 1) / B * sum_b (theta_(b) - theta_.)^2)

    and returns the full-sample value with a normal-approximation interval ``value +- z * se``. Blocks are
    batches of whole sequences, so the interval reflects between-sequence variation.
    """

    def __init__(self, n_blocks: int = 5, device=None, dtype: torch.dtype = torch.float64):
        if n_blocks < 2:
            raise ValueError("n_blocks must be at least 2 for a jackknife")
        self.blocks = [StreamingCKA(device=device, dtype=dtype) for _ in range(n_blocks)]
        self._next = 0
        self._cache: tuple | None = None

    @property
    def n(self) -> int:
        return sum(b.n for b in self.blocks)

    def update(self, X: ArrayLike, Y: ArrayLike) -> "BlockedCKA":
        self.blocks[self._next].update(X, Y)
        self._next = (self._next + 1) % len(self.blocks)
        self._cache = None
        return self

    def _combined(self) -> tuple[list[int], StreamingCKA, list[StreamingCKA]]:
        """(block indices used, all tokens, leave-one-block-out accumulators), built once per state.

        Every non-empty block is re-expressed about the first block's shift (one translation each), so the
        accumulators are plain sums about one origin: the total is their sum and leaving block b out is the
        total minus block b, exactly (no pairwise merges)."""
        if self._cache is not None:
            return self._cache
        import copy

        used = [i for i, b in enumerate(self.blocks) if b.n > 0]
        if not used:
            raise ValueError("no tokens accumulated")
        ref = self.blocks[used[0]]._e
        ref._sync()
        aligned = []
        for i in used:
            e = copy.deepcopy(self.blocks[i]._e)
            e._sync()
            if i != used[0]:
                e._to(ref.device, ref.dtype)
                e._translate(e.shift_x - ref.shift_x, e.shift_y - ref.shift_y)
                e.shift_x, e.shift_y = ref.shift_x.clone(), ref.shift_y.clone()
            aligned.append(e)
        total = copy.deepcopy(aligned[0])
        for e in aligned[1:]:
            total.n += e.n
            for t, u in zip(total._tensors(), e._tensors()):
                t += u
        total._zero_unused()
        loo = []
        for e in aligned:
            r = copy.deepcopy(total)
            r.n -= e.n
            for t, u in zip(r._tensors(), e._tensors()):
                t -= u
            r._zero_unused()
            loo.append(r)

        def wrap(engine):
            acc = StreamingCKA.__new__(StreamingCKA)
            acc._e = engine
            return acc

        self._cache = (used, wrap(total), [wrap(r) for r in loo])
        return self._cache

    def _merged(self, skip: int | None = None) -> StreamingCKA:
        used, total, loo = self._combined()
        if skip is None:
            return total
        if skip not in used:
            return total
        return loo[used.index(skip)]

    def value(self, debiased: bool = False) -> float:
        return self._merged().value(debiased)

    def jackknife(self, debiased: bool = False, level: float = 0.95) -> dict[str, float]:
        """``{"value", "se", "ci_low", "ci_high", "n_blocks"}``; needs every block non-empty."""
        from statistics import NormalDist

        with num_threads(1):  # O(d^2) finalisation ops: too small to gain from more threads
            return self._jackknife(debiased, level, NormalDist)

    def _jackknife(self, debiased, level, NormalDist):
        if any(b.n == 0 for b in self.blocks):
            raise ValueError(f"every block needs tokens: sizes {[b.n for b in self.blocks]}; feed at least "
                             f"{len(self.blocks)} batches")
        full = self.value(debiased)
        loo = np.array([self._merged(skip=i).value(debiased) for i in range(len(self.blocks))])
        B = len(loo)
        se = float(np.sqrt((B - 1) / B * ((loo - loo.mean()) ** 2).sum()))
        z = NormalDist().inv_cdf(0.5 + level / 2)
        return {"value": full, "se": se, "ci_low": full - z * se, "ci_high": full + z * se, "n_blocks": B}
