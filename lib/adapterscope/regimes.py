"""Regime probing of one VLM with and without its adapter: the analysis behind ``05b_regime_probing``.

Inputs are tables with one row per model input. ``meta`` has columns ``item`` (0..n-1), ``regime`` ("clean" for
the clean input of an item, else a key of ``scenes.REGIMES``), ``kind``, ``suggested`` (the suggested wrong
answer of a pressure variant, else None) and, per model m, ``pred_m`` and ``correct_m``. Hidden states are
``H_NLD`` (rows of ``meta`` in order, L+1 layer outputs, width D) at the answer position.

* **Stability** (:func:`stability`): share of an item's variants whose prediction equals the clean prediction,
  averaged over items, with a percentile bootstrap CI over items; the changed ones by direction (correct ->
  wrong, wrong -> correct, wrong -> other wrong); for variants with a suggested answer, the share that lands on
  it. :func:`stability_by_kind` per condition, with the escape-route flag (stability below ``escape_below``);
  :func:`mechanisms` groups the conditions into the mechanism classes of :data:`MECHANISM`.
* **Paired differences** over items (:func:`paired_difference`): mean of a - b, sign-flip permutation p,
  paired bootstrap CI (``stats.mean_difference``).
* **Geometry per layer** (:func:`layer_geometry`): displacement d = h(varied) - h(clean), its relative size,
  the regimes' principal subspaces, their angles, overlaps and split-half separation
  (``geometry.regime_separation``), linear CKA of per-item mean displacements.
* **Held-out peak margin** (:func:`heldout_peak_margin`): the critical layer is an argmax, so "it exists"
  cannot fail; this statistic can (layer chosen on one half of the items, its margin measured on the other).
* **Cross-regime prediction** (:func:`cross_regime_prediction`): Spearman's rho across items between regimes.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from . import cka, geometry, results, scenes, stats

MODELS = ("base", "adapted")
MECHANISM = {  # mechanism classes of the escape routes, fixed before the first run
    "paraphrase": "surface rewording", "format": "surface rewording", "politeness": "surface rewording",
    "option_order": "option-order bias",
    "noise": "low-level pixel statistics", "blur": "low-level pixel statistics",
    "background": "low-level pixel statistics",
    "occlusion": "irrelevant scene content", "distractors": "irrelevant scene content",
    "suggestion": "social pressure towards a wrong answer", "assertion": "social pressure towards a wrong answer",
    "authority": "social pressure towards a wrong answer",
    "prefill": "answer scaffold (neutral prefill)", "prefill_agree": "committed agreement (prefilled wrong answer)",
}
# keys every statistic behind a finding of 05b_regime_probing carries (macros.ledger_view(d, require=FINDING_KEYS))
FINDING_KEYS = ("value", "ci_low", "ci_high", "p_value", "p_method", "n")


# ------------------------------------------------------------------------------------------ inputs
def input_rows(items: Sequence, variant_seed: int, strength: float) -> tuple[list[dict], pd.DataFrame]:
    """Every item clean and under every variant of ``scenes.REGIMES``; returns the rows (with the example
    under ``"ex"``) and ``meta`` (item, regime, kind, family, answer, suggested)."""
    rows = []
    for i, ex in enumerate(items):
        rows.append({"item": i, "regime": "clean", "kind": "clean", "ex": ex})
        for r, kinds in scenes.REGIMES.items():
            for k in kinds:
                v = scenes.regime_variant(ex, r, k, seed=variant_seed * 100003 + i, strength=strength)
                assert v.answer == ex.answer
                rows.append({"item": i, "regime": r, "kind": k, "ex": v})
    meta = pd.DataFrame([{k: v for k, v in r.items() if k != "ex"} for r in rows])
    meta["family"] = [r["ex"].question.family for r in rows]
    meta["answer"] = [r["ex"].answer for r in rows]
    meta["suggested"] = [r["ex"].prompt.suggested for r in rows]
    return rows, meta


def forward_models(vlm, pm, rows: Sequence[dict], meta: pd.DataFrame, models: Sequence[str] = MODELS, *,
                   device: str = "cpu", **score_kw) -> tuple[dict[str, np.ndarray], dict[str, list], float]:
    """Score every row (``input_rows``) with the VLM's adapter (``pm``, a peft model over ``vlm``) off
    (``base``) and on (``adapted``), one image encoding shared: fills ``meta``'s ``pred_<m>`` / ``correct_<m>`` and returns (answer-position residual states
    per model, (rows, L+1, D) float64; candidate log-probabilities per model; forward seconds)."""
    import contextlib
    import time

    from . import vlm as V

    exs = [r["ex"] for r in rows]
    feats = V.encode_images(vlm, [e.image for e in exs], device=device)
    H, logprobs, t0 = {}, {}, time.perf_counter()
    for m in models:
        with pm.disable_adapter() if m == "base" else contextlib.nullcontext():
            r = V.score(pm, None, [e.prompt for e in exs], [e.question.candidates for e in exs],
                        [e.answer for e in exs], image_features=feats, device=device, hidden_states=True, **score_kw)
        H[m] = r.pop("hidden_states").double().numpy()
        meta[f"pred_{m}"], meta[f"correct_{m}"], logprobs[m] = r["pred"], r["correct"], r["logprobs"]
    return H, logprobs, time.perf_counter() - t0


def variant_table(meta: pd.DataFrame, models: Sequence[str] = MODELS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clean, var): the clean rows indexed by item (``row`` = their position in ``meta``) and the variant rows
    (meta's index kept) with, per model m, ``clean_pred_m``, ``clean_correct_m``, ``same_m`` (prediction equals
    the clean one) and ``to_suggested_m`` (prediction equals the suggested answer)."""
    clean = meta[meta.regime == "clean"].assign(row=lambda d: d.index.to_numpy()).set_index("item")
    if not clean.index.is_unique:
        raise ValueError("one clean row per item")
    var = meta[meta.regime != "clean"].copy()
    for m in models:
        var[f"clean_pred_{m}"] = clean.loc[var.item, f"pred_{m}"].to_numpy()
        var[f"clean_correct_{m}"] = clean.loc[var.item, f"correct_{m}"].to_numpy()
        var[f"same_{m}"] = var[f"pred_{m}"] == var[f"clean_pred_{m}"]
        var[f"to_suggested_{m}"] = var[f"pred_{m}"] == var.suggested
    return clean, var


# ------------------------------------------------------------------------------------------ stability
def stability(var: pd.DataFrame, clean: pd.DataFrame, regimes: Sequence[str], n_boot: int, seed: int,
              models: Sequence[str] = MODELS) -> pd.DataFrame:
    """One row per (model, regime or "all"): stability (mean over items of the share of an item's variants
    unchanged) with its CI over items, changed variants by direction, accuracy, share on the suggested answer
    (all variants with one; ``changed_to_suggested``: among those that changed)."""
    out = []
    for m in models:
        same, corr, sug_hit = f"same_{m}", f"correct_{m}", f"to_suggested_{m}"
        for r in list(regimes) + ["all"]:
            g = var if r == "all" else var[var.regime == r]
            per_item = g.groupby("item")[same].mean()
            ci = stats.mean_ci(per_item, n_boot, seed)
            est, lo, hi = ci.value, ci.ci_low, ci.ci_high
            ch = g[~g[same]]
            cw = int((ch[f"clean_correct_{m}"] & ~ch[corr]).sum())
            wc = int((~ch[f"clean_correct_{m}"] & ch[corr]).sum())
            sug = g[g.suggested.notna()]
            out.append({"model": m, "regime": r, "stability": est, "lo": lo, "hi": hi, "n_items": int(len(per_item)),
                        "n_variants": int(len(g)), "n_changed": len(ch), "correct_to_wrong": cw,
                        "wrong_to_correct": wc, "wrong_to_wrong": len(ch) - cw - wc,
                        "accuracy": float(g[corr].mean()), "clean_accuracy": float(clean[corr].mean()),
                        "to_suggested": float(sug[sug_hit].mean()) if len(sug) else np.nan,
                        "changed_to_suggested": float(sug[~sug[same]][sug_hit].mean())
                        if (~sug[same]).any() else np.nan})
    return pd.DataFrame(out)


def stability_by_kind(var: pd.DataFrame, escape_below: float, n_boot: int, seed: int,
                      mechanism: Mapping[str, str] = MECHANISM, models: Sequence[str] = MODELS) -> pd.DataFrame:
    """One row per (model, regime, kind) in the order of ``var``: stability with its CI over items, accuracy,
    share on the suggested answer, mechanism class and ``escape`` (stability below ``escape_below``)."""
    out = []
    for m in models:
        for (r, k), g in var.groupby(["regime", "kind"], sort=False):
            ci = stats.mean_ci(g[f"same_{m}"].to_numpy(float), n_boot, seed)
            est, lo, hi = ci.value, ci.ci_low, ci.ci_high
            out.append({"model": m, "regime": r, "kind": k, "mechanism": mechanism[k], "stability": est, "lo": lo,
                        "hi": hi, "accuracy": float(g[f"correct_{m}"].mean()),
                        "to_suggested": float(g[f"to_suggested_{m}"].mean()) if g.suggested.notna().any() else np.nan,
                        "escape": bool(est < escape_below)})
    return pd.DataFrame(out)


def mechanisms(kinds: pd.DataFrame) -> pd.DataFrame:
    """Escape routes grouped by mechanism class, per model: mean and lowest stability of the class's
    conditions, their names and the number of escape routes among them."""
    return (kinds.groupby(["model", "mechanism"], sort=False)
            .agg(regime=("regime", "first"), stability=("stability", "mean"), min_stability=("stability", "min"),
                 conditions=("kind", lambda s: ", ".join(s)), escapes=("escape", "sum"))
            .reset_index())


# ------------------------------------------------------------------------------------------ paired differences
def paired_difference(a, b, n_boot: int, seed: int) -> dict:
    """mean(a - b) over items (``stats.mean_difference``, paired): the full result dict, whose
    value, ci_low, ci_high, p_value, p_method (sign-flip, exact or permutation) and n make a finding."""
    return stats.mean_difference(np.asarray(a, float), np.asarray(b, float), paired=True, n_boot=n_boot,
                                 n_permutations=n_boot, seed=seed).as_dict()


def per_item_stability(var: pd.DataFrame, regime: str, model: str) -> pd.Series:
    """Share of an item's variants of ``regime`` whose answer is unchanged, indexed by item (sorted)."""
    return var[var.regime == regime].groupby("item")[f"same_{model}"].mean()


def adapter_stability_change(var: pd.DataFrame, regimes: Sequence[str], n_boot: int, seed: int) -> dict:
    """{regime: paired difference of per-item stability, adapted minus base}."""
    return {r: paired_difference(per_item_stability(var, r, "adapted"), per_item_stability(var, r, "base"),
                                 n_boot, seed) for r in regimes}


def regime_gap(var: pd.DataFrame, a: str, b: str, model: str, n_boot: int, seed: int) -> dict:
    """Paired difference of per-item stability, regime ``a`` minus regime ``b``, for one model."""
    sa, sb = per_item_stability(var, a, model), per_item_stability(var, b, model)
    if not sa.index.equals(sb.index):
        raise ValueError(f"regimes {a} and {b} cover different items")
    return paired_difference(sa, sb, n_boot, seed)


# ------------------------------------------------------------------------------------------ geometry per layer
def layer_geometry(H_NLD: np.ndarray, var: pd.DataFrame, clean_rows: Sequence[int], regimes: Sequence[str],
                   k: int, n_splits: int, seed: int, model: str) -> dict:
    """Displacements of every variant from its item's clean input at every layer, and their geometry.

    ``clean_rows[i]`` is the row of item i's clean input in ``H_NLD``; ``var``'s index gives each variant's
    row. Returns ``geo`` (rows: per regime and layer the mean relative displacement ``||d|| / ||h(clean)||``;
    per layer the separation, within and across overlaps and chance), ``pairs`` (per layer and regime pair:
    overlap and principal angles of the full-sample subspaces, split-half overlap, linear CKA of per-item
    mean displacements; "r|r" rows: within-regime split-half overlap), ``separation`` (layers 1..L; layer 0,
    the embeddings, is excluded), ``rel_disp`` (variants x layers 0..L), ``disp`` {regime: (L, rows, D)} and
    ``items`` {regime: item id per row} (layers 1..L)."""
    H = np.asarray(H_NLD, np.float64)
    clean_rows = np.asarray(clean_rows)
    L1, n_items = H.shape[1], len(clean_rows)
    layers = list(range(1, L1))
    rel_disp = pd.DataFrame(np.nan, index=var.index, columns=range(L1))
    disp, ids, item_mean, grows, pair_rows = {}, {}, {}, [], []
    for r in regimes:
        idx = var.index[var.regime == r].to_numpy()
        it = var.loc[idx, "item"].to_numpy()
        D = H[idx] - H[clean_rows[it]]                                   # (rows_r, L1, D)
        rel = np.linalg.norm(D, axis=-1) / np.linalg.norm(H[clean_rows[it]], axis=-1)
        rel_disp.loc[idx] = rel
        disp[r] = np.ascontiguousarray(D[:, 1:].transpose(1, 0, 2))      # (layers, rows_r, D), layer 0 dropped
        ids[r] = it
        item_mean[r] = np.stack([D[it == i].mean(0) for i in range(n_items)])  # (items, L1, D)
        grows += [{"model": model, "regime": r, "layer": l, "rel_disp": float(rel[:, l].mean())} for l in layers]
    sep = geometry.regime_separation(disp, k=k, n_splits=n_splits, seed=seed, items=ids)
    full = {r: geometry.principal_subspaces(disp[r], k) for r in regimes}  # (layers, D, k)
    for j, l in enumerate(layers):
        for a_i, a in enumerate(regimes):
            for b in regimes[a_i + 1:]:
                ang = np.degrees(geometry.principal_angles(full[a][j], full[b][j]))
                pair_rows.append({"model": model, "layer": l, "pair": f"{a}|{b}",
                                  "overlap": geometry.overlap(full[a][j], full[b][j]),
                                  "split_overlap": float(sep["across"][f"{a}|{b}"][j]), "min_angle": float(ang[0]),
                                  "max_angle": float(ang[-1]),
                                  "cka": cka.cka_features(item_mean[a][:, l], item_mean[b][:, l])})
        for r in regimes:
            pair_rows.append({"model": model, "layer": l, "pair": f"{r}|{r}", "overlap": np.nan,
                              "split_overlap": float(sep["within"][r][j]), "min_angle": np.nan, "max_angle": np.nan,
                              "cka": np.nan})
        grows.append({"model": model, "regime": "separation", "layer": l, "rel_disp": np.nan,
                      "separation": float(sep["separation"][j]), "within": float(sep["within_mean"][j]),
                      "across": float(sep["across_mean"][j]), "chance": sep["chance"]})
    return {"geo": pd.DataFrame(grows), "pairs": pd.DataFrame(pair_rows), "separation": sep["separation"],
            "rel_disp": rel_disp, "disp": disp, "items": ids}


def critical_layer(separation_layers_1_to_L: Sequence[float]) -> int:
    """The layer (numbered from 1, the first decoder layer) with the largest separation (ties: earliest)."""
    return geometry.critical_layer(np.r_[np.nan, np.asarray(separation_layers_1_to_L, float)], skip_first=1)


# ------------------------------------------------------------------------------------------ held-out peak margin
_PAIRINGS = (((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2)))  # the three ways to pair four quarters


def _basis_coefs(g_LNN: np.ndarray, s: np.ndarray, k: int) -> np.ndarray:
    """Coefficients of the top-k subspace from the Gram block ``g`` of rows with sqrt-weights ``s``."""
    lam, vec = np.linalg.eigh(g_LNN * s[None, :, None] * s[None, None, :])
    lam, vec = lam[:, ::-1][:, :k], vec[:, :, ::-1][:, :, :k]
    ok = lam > 1e-12 * np.maximum(lam[:, :1], 1e-300)
    inv = np.where(ok, 1.0 / np.sqrt(np.where(ok, lam, 1.0)), 0.0)
    return vec * s[None, :, None] * inv[:, None, :]


def gram_basis(G_LNN: np.ndarray, rows, k: int, weights=None) -> np.ndarray:
    """Coefficients ``C`` (L, n, k) such that ``X[:, rows]^T C`` is an orthonormal basis of the top-k principal
    subspace (uncentred, as ``geometry.principal_subspaces``) of the displacements ``X[:, rows]``, each row
    counted ``weights`` times, from the Gram matrices ``G = X X^T`` (L, N, N) alone. Directions beyond the
    rank get zero coefficients."""
    rows = np.asarray(rows)
    s = np.ones(len(rows)) if weights is None else np.sqrt(np.asarray(weights, float))
    return _basis_coefs(G_LNN[:, rows][:, :, rows], s, k)


def gram_overlap(G_LNN: np.ndarray, rows_a, C_a: np.ndarray, rows_b, C_b: np.ndarray) -> np.ndarray:
    """``geometry.overlap`` per layer of two subspaces given by :func:`gram_basis` (same k) -> (L,)."""
    m = C_a.transpose(0, 2, 1) @ G_LNN[:, np.asarray(rows_a)][:, :, np.asarray(rows_b)] @ C_b
    return (m ** 2).sum((1, 2)) / C_a.shape[2]


def _quartering_margins(G, rows, lab, item, w, k, n_regimes, rng):
    """One random quartering of the items of ``rows`` (indices into G, lab, item, w): for each of the 3
    pairings of quarters into halves A|B and both directions, the layer with the largest separation on one
    half and its margin on the other. Returns (margins (6,), chosen layer indices (6,)), or None when fewer
    than 4 items are present."""
    it = item[rows]
    uniq = np.unique(it)
    if len(uniq) < 4:
        return None
    quarter = np.empty(len(uniq), int)
    quarter[np.searchsorted(uniq, rng.permutation(uniq))] = np.arange(len(uniq)) % 4  # shuffled, dealt out
    q = quarter[np.searchsorted(uniq, it)]
    sub = {(r, j): rows[(lab[rows] == r) & (q == j)] for r in range(n_regimes) for j in range(4)}
    kk = min([k] + [len(s) for s in sub.values()])
    if kk < 1:
        return None
    C, Y = {}, {}
    for key, rows_s in sub.items():
        g = G[:, rows_s]                                     # (L, n_s, N): contiguous rows of G
        C[key] = _basis_coefs(g[:, :, rows_s], np.sqrt(w[rows_s]), kk)
        Y[key] = C[key].transpose(0, 2, 1) @ g               # (L, kk, N) = C^T G[rows_s, :]
    ov = lambda a, b: ((Y[a][:, :, sub[b]] @ C[b]) ** 2).sum((1, 2)) / kk  # noqa: E731  gram_overlap

    def sep(qa, qb):  # regime_separation of one half, on its split (qa | qb)
        within = np.mean([ov((r, qa), (r, qb)) for r in range(n_regimes)], axis=0)
        across = np.mean([0.5 * (ov((a, qa), (b, qb)) + ov((a, qb), (b, qa)))
                          for a in range(n_regimes) for b in range(a + 1, n_regimes)], axis=0)
        return within - across

    margins, chosen = [], []
    for h1, h2 in _PAIRINGS:
        s1, s2 = sep(*h1), sep(*h2)
        for sel, ev in ((s1, s2), (s2, s1)):
            l = int(np.argmax(sel))
            margins.append(peak_margin(ev, l))
            chosen.append(l)
    return np.array(margins), np.array(chosen)


def peak_margin(ev: np.ndarray, l: int) -> float:
    """How far ``ev[l]`` stands above the curve on *both* sides: min over the layers below and above of
    ev[l] - their median. A layer at either end has one side only and scores at most 0, so a curve that rises
    to the last layer (a ramp, no peak) does not count as a critical layer."""
    parts = [float(ev[l] - np.median(side)) for side in (ev[:l], ev[l + 1:]) if len(side)]
    if len(parts) < 2:
        parts.append(0.0)
    return min(parts)


def _procedure(G, rows, lab, item, w, k, n_regimes, n_quarterings, rng):
    got = [_quartering_margins(G, rows, lab, item, w, k, n_regimes, rng) for _ in range(n_quarterings)]
    got = [g for g in got if g is not None]
    if not got:
        return np.array([]), np.array([], int)
    return np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got])


def heldout_peak_margin(disp: Mapping[str, np.ndarray], items: Mapping[str, Sequence[int]], k: int,
                        n_splits: int = 20, seed: int = 0, n_boot: int = 200, n_perm: int = 100,
                        draw_splits: int = 1, layers: Sequence[int] | None = None, level: float = 0.95,
                        workers: int = 1) -> dict:
    """Held-out peak margin of the regimes' separation curve: can "a critical layer exists" fail?

    ``disp[regime]`` is (L, rows, D) over the candidate layers (``layers`` names them; default 0..L-1),
    ``items[regime]`` the item id of each row. One *split* deals the items at random into four quarters; each
    of the three pairings of quarters into halves A = (q1, q2), B = (q3, q4) gives a separation curve per half,
    computed on that half only exactly as ``geometry.regime_separation`` does for one split-half (q1 | q2)
    (subspaces of the same k, via Gram matrices: :func:`gram_basis`). The layer l* = argmax sep_A (ties:
    earliest) is chosen on A and scored on B: margin = :func:`peak_margin` of sep_B at l* (sep_B(l*) minus the
    median of sep_B below l*, or above it, whichever is less; at most 0 at either end); and the same with A and B
    swapped. ``value`` is the mean margin over 6 x ``n_splits`` selections. It is near
    zero, or negative, when no layer stands out reproducibly (a flat curve, however high, noise, or a ramp that
    rises to the last layer).

    * CI: percentile bootstrap over items (``n_boot`` draws); each draw resamples the items with replacement
      and reruns the whole select-then-evaluate procedure (a drawn item's copies stay in one quarter, so no
      item is both in the choosing and the scoring half), with ``draw_splits`` splits per draw.
    * p: label-permutation null (``n_perm`` draws; ``p_method`` "label_permutation"): within each item the
      regime labels of its rows are shuffled (the rows per regime and item stay as many), which makes every
      regime's displacements exchangeable, and the procedure is rerun with ``draw_splits`` splits;
      p = (1 + #{null >= value}) / (1 + draws), one-sided. With ``n_perm=0``: p = share of bootstrap draws
      <= 0 (``p_method`` "bootstrap_share").
      Draws average fewer splits than ``value`` does, so their spread also carries split noise: the CI is
      wider and p larger than with all ``n_splits`` splits per draw (conservative, and far cheaper).
    * ``stability``: share of the selections that chose the modal layer ``modal_layer``.

    Every draw has its own seed (spawned from ``seed``), so the result does not depend on ``workers``
    (threads running draws at once).
    """
    names = list(disp)
    if len(names) < 2:
        raise ValueError("need at least two regimes")
    X = np.concatenate([np.asarray(disp[r], np.float64) for r in names], axis=1)   # (L, N, D)
    L = X.shape[0]
    if L < 2:
        raise ValueError(f"need at least two candidate layers, got {L}")
    layer_names = np.arange(L) if layers is None else np.asarray(layers)
    if len(layer_names) != L:
        raise ValueError(f"layers names {len(layer_names)} layers, disp has {L}")
    lab = np.concatenate([np.full(np.shape(disp[r])[1], j) for j, r in enumerate(names)])
    item = np.concatenate([np.asarray(items[r]) for r in names])
    if len(item) != X.shape[1]:
        raise ValueError("items[regime] must label every row of disp[regime]")
    G = X @ X.transpose(0, 2, 1)                                                      # (L, N, N)
    del X
    ones, every = np.ones(len(item)), np.arange(len(item))
    ss_split, ss_boot, ss_perm = np.random.SeedSequence(seed).spawn(3)
    margins, chosen = _procedure(G, every, lab, item, ones, k, len(names), n_splits,
                                 np.random.default_rng(ss_split))
    if not len(margins):
        raise ValueError("need at least 4 items")
    value = float(margins.mean())

    uniq, by_item = np.unique(item), np.argsort(item, kind="stable")

    def boot_draw(ss):  # items resampled with replacement; a drawn item's copies weigh its rows
        rng = np.random.default_rng(ss)
        drawn, mult = np.unique(rng.choice(uniq, size=len(uniq), replace=True), return_counts=True)
        keep = np.flatnonzero(np.isin(item, drawn))
        w = np.zeros(len(item))
        w[keep] = mult[np.searchsorted(drawn, item[keep])]
        m, _ = _procedure(G, keep, lab, item, w, k, len(names), draw_splits, rng)
        return m.mean() if len(m) else np.nan

    def perm_draw(ss):  # regime labels shuffled within each item
        rng = np.random.default_rng(ss)
        lab_p = lab.copy()
        lab_p[by_item] = lab[np.lexsort((rng.random(len(item)), item))]
        m, _ = _procedure(G, every, lab_p, item, ones, k, len(names), draw_splits, rng)
        return m.mean()

    with ThreadPoolExecutor(max(1, workers)) as pool:  # LAPACK releases the GIL; every draw has its own seed
        boot = np.asarray(list(pool.map(boot_draw, ss_boot.spawn(n_boot))), float)
        null = list(pool.map(perm_draw, ss_perm.spawn(n_perm)))
    null = np.asarray(null, float)
    alpha = (1 - level) / 2
    ok = boot[np.isfinite(boot)]
    lo, hi = (np.quantile(ok, [alpha, 1 - alpha]) if len(ok) else (math.nan, math.nan))
    if n_perm > 0:
        p, p_method = (1 + int((null >= value).sum())) / (1 + len(null)), "label_permutation"
    else:
        p, p_method = (float((ok <= 0).mean()) if len(ok) else math.nan), "bootstrap_share"
    named = layer_names[chosen]
    vals, counts = np.unique(named, return_counts=True)
    return {"value": value, "ci_low": float(lo), "ci_high": float(hi), "p_value": float(p), "p_method": p_method,
            "n": int(len(uniq)), "level": level, "stability": float(counts.max() / len(named)),
            "modal_layer": int(vals[np.argmax(counts)]), "n_splits": n_splits, "n_boot": n_boot, "n_perm": n_perm,
            "draw_splits": draw_splits, "n_selections": int(len(named)), "margins": margins.tolist(),
            "chosen_layers": named.tolist(), "boot_degenerate": float(1 - len(ok) / max(len(boot), 1)),
            "null_mean": float(null.mean()) if len(null) else math.nan}


# ------------------------------------------------------------------------------------------ cross-regime prediction
def cross_regime_prediction(var: pd.DataFrame, rel_disp: Mapping[str, pd.DataFrame], layer: int,
                            regimes: Sequence[str], n_boot: int, seed: int,
                            models: Sequence[str] = MODELS) -> pd.DataFrame:
    """Across items, Spearman's rho (permutation p, bootstrap CI; ``stats.spearman``) between two regimes of an
    item's stability (share of its variants unchanged) and of its displacement (mean relative displacement at
    ``layer``). One row per (model, measure, regime pair); nan where one side is constant over items."""
    items = np.sort(var.item.unique())
    out = []
    for m in models:
        per_item = {}
        for r in regimes:
            sel = var.regime == r
            per_item[("stability", r)] = per_item_stability(var, r, m).reindex(items).to_numpy(float)
            per_item[("displacement", r)] = (rel_disp[m].loc[sel, layer].groupby(var.item[sel]).mean()
                                             .reindex(items).to_numpy(float))
        for measure in ("stability", "displacement"):
            for a_i, a in enumerate(regimes):
                for b in regimes[a_i + 1:]:
                    x, y = per_item[(measure, a)], per_item[(measure, b)]
                    if np.ptp(x) == 0 or np.ptp(y) == 0:
                        res = {"value": np.nan, "n": int(len(x)), "p_value": np.nan, "ci_low": np.nan,
                               "ci_high": np.nan}
                    else:
                        res = stats.spearman(x, y, n_boot=n_boot, n_permutations=n_boot, seed=seed).as_dict()
                    out.append({"model": m, "measure": measure, "pair": f"{a}|{b}", "rho": res["value"],
                                "n": res["n"], "p": res["p_value"], "lo": res["ci_low"], "hi": res["ci_high"]})
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ LaTeX table rows
def stability_tex_rows(stab: pd.DataFrame, regimes: Sequence[str]) -> list[str]:
    """Rows of the stability table: regime, model, stability [CI] %, changed/variants, c->w, w->c, to suggested %."""
    fmt = results.format_number
    order = {**{r: i for i, r in enumerate(regimes)}, **{m: i for i, m in enumerate(MODELS)}}
    rows = []
    for s in stab[stab.regime.isin(regimes)].sort_values(["regime", "model"], key=lambda c: c.map(order)).itertuples():
        ts = "--" if np.isnan(s.to_suggested) else fmt(100 * s.to_suggested, 2)
        rows.append(f"{s.regime} & {s.model} & {fmt(100 * s.stability, 2)} [{fmt(100 * s.lo, 2)}, "
                    f"{fmt(100 * s.hi, 2)}] & {s.n_changed}/{s.n_variants} & {s.correct_to_wrong} & "
                    f"{s.wrong_to_correct} & {ts}")
    return rows


def prediction_tex_rows(pred: pd.DataFrame) -> list[str]:
    """Rows of the cross-regime prediction table: measure, regimes, model, n, rho [CI], p."""
    fmt = results.format_number
    rows = []
    for s in pred.itertuples():
        rho = "--" if np.isnan(s.rho) else f"{fmt(s.rho, 2)} [{fmt(s.lo, 2)}, {fmt(s.hi, 2)}]"
        rows.append(f"{s.measure} & {s.pair.replace('|', ' vs ')} & {s.model} & {s.n} & {rho} & "
                    f"{'--' if np.isnan(s.p) else fmt(s.p, 2)}")
    return rows


def escape_tex_rows(mech: pd.DataFrame, mechanism: Mapping[str, str] = MECHANISM) -> list[str]:
    """Rows of the escape-route table: class, regime, conditions, lowest stability % base and adapted
    (starred where the class holds an escape route)."""
    fmt = results.format_number
    mb = mech.set_index(["model", "mechanism"])
    flag = lambda row: fmt(100 * row.min_stability, 2) + (r"$^{\ast}$" if row.escapes else "")  # noqa: E731
    rows = []
    for mc in dict.fromkeys(mechanism.values()):
        b, a = mb.loc[("base", mc)], mb.loc[("adapted", mc)]
        rows.append(f"{mc} & {b.regime} & {results.tex_escape(b.conditions)} & {flag(b)} & {flag(a)}")
    return rows


# ------------------------------------------------------------------------------------------ figures
_MCOL, _LS = {"base": "#888888", "adapted": "#d55e00"}, {"base": "-", "adapted": "--"}


def stability_figure(stab: pd.DataFrame, kinds: pd.DataFrame, regimes: Sequence[str], escape_below: float):
    """Answers unchanged per regime (bars, left) and per condition (right, dotted: the escape threshold)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.0), gridspec_kw={"width_ratios": [1, 2.2]})
    order = [k for r in regimes for k in scenes.REGIMES[r]]
    for j, m in enumerate(MODELS):
        s = stab[(stab.model == m) & stab.regime.isin(regimes)].set_index("regime").loc[list(regimes)]
        axes[0].bar(np.arange(len(regimes)) + (j - 0.5) * 0.38, s.stability, 0.38, capsize=2, label=m,
                    yerr=[s.stability - s.lo, s.hi - s.stability], color=_MCOL[m])
        s = kinds[kinds.model == m].set_index("kind").loc[order]
        axes[1].errorbar(np.arange(len(order)) + (j - 0.5) * 0.25, s.stability, fmt="o", ms=4, capsize=2,
                         yerr=[s.stability - s.lo, s.hi - s.stability], color=_MCOL[m], label=m)
    axes[0].set_xticks(range(len(regimes)), regimes)
    axes[0].set_ylabel("answers unchanged (share)")
    axes[0].legend(fontsize=8, loc="lower left")
    axes[1].axhline(escape_below, color="k", ls=":", lw=1)
    axes[1].set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
    axes[1].set_ylabel("unchanged (share)")
    for ax in axes:
        ax.set_ylim(0, 1.05)
    return fig


def layer_geometry_figure(geo: pd.DataFrame, pairs: pd.DataFrame, critical: int, regimes: Sequence[str]):
    """Per layer (solid: base, dashed: adapted): relative displacement per regime; within / across overlap and
    separation with the critical layer marked; linear CKA of the regimes' per-item mean displacements."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.1))
    sep = geo[geo.regime == "separation"]
    for m in MODELS:
        lab = (lambda s: s) if m == "base" else (lambda s: None)  # noqa: E731  one legend entry per line style
        for j, r in enumerate(regimes):
            g = geo[(geo.model == m) & (geo.regime == r)]
            axes[0].plot(g.layer, g.rel_disp, ls=_LS[m], color=f"C{j}", label=lab(f"{r} ({m})"))
        g = sep[sep.model == m]
        for col, c, name in (("within", "#0072b2", "within regime (split halves)"),
                             ("across", "#cc79a7", "across regimes"), ("separation", "k", "separation")):
            axes[1].plot(g.layer, g[col], ls=_LS[m], color=c, label=lab(name))
        for p_i, p in enumerate(f"{a}|{b}" for i, a in enumerate(regimes) for b in regimes[i + 1:]):
            g = pairs[(pairs.model == m) & (pairs.pair == p)]
            axes[2].plot(g.layer, g.cka, ls=_LS[m], color=f"C{p_i + 3}", label=lab(p.replace("|", " vs ")))
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\|h_{varied}-h_{clean}\| / \|h_{clean}\|$")
    axes[1].axhline(sep.chance.iloc[0], color="grey", ls=":", lw=1, label="chance overlap")
    axes[1].text(critical, 1.0, f" critical layer {critical}", color="#d55e00", fontsize=8, va="top")
    axes[1].set_ylabel("subspace overlap")
    axes[2].set_ylabel("linear CKA of per-item displacements")
    for ax in axes:
        ax.set_xlabel("layer")
        ax.legend(fontsize=7, loc="center right" if ax is axes[1] else "best")
    for ax in axes[1:]:
        ax.axvline(critical, color="#d55e00", lw=1.2)
        ax.set_ylim(0, 1.05)
    fig.tight_layout()
    return fig
