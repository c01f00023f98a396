"""Escape routes of a VLM adapter (notebook ``06_escape_routes``): where output stability breaks, whether the
breaks fall into classes by their internal signature alone, whether a break can be predicted from the
*unperturbed* item, and whether two models that give one answer get there by different internal routes.

Inputs are the tables of :func:`adapterscope.regimes.variant_table` (one row per item x condition, a condition
being one variant kind of one regime, with ``same_<model>``: the answer equals the clean one) and the residual
stream at the answer position, ``H`` of shape (rows, L+1, D), rows as in ``meta``.

Every statistic here returns a dict with ``value``, ``ci_low``, ``ci_high``, ``p_value``, ``p_method``, ``n``
(and ``reason`` when it is undefined), the ledger's view of a finding. Resampling is by *item*: conditions of one
item are not independent."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_rand_score, roc_auc_score, silhouette_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from . import cka, geometry, regimes, results, scenes, stats

CONDITIONS = tuple(k for r in scenes.REGIMES for k in scenes.REGIMES[r])  # kind names are unique across regimes
REGIME_OF = {k: r for r, ks in scenes.REGIMES.items() for k in ks}


def _undefined(reason: str, n: int = 0, **extra) -> dict:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "p_method": "",
            "n": int(n), "reason": reason, **extra}


def _pval(null: np.ndarray, obs: float) -> float:
    """One-sided Monte Carlo p (null >= observed), with the +1 correction (never 0)."""
    null = np.asarray(null, float)
    return float((1 + np.sum(null >= obs - 1e-12)) / (1 + len(null)))


def _ci(draws) -> tuple[float, float]:
    """Percentile 95% interval of resampled values (NaNs when there are none)."""
    return tuple(float(q) for q in np.quantile(draws, [0.025, 0.975])) if len(draws) else (math.nan, math.nan)


def _item_resamples(items: np.ndarray, n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of ``n_boot`` bootstrap resamples of the distinct items (an item drawn twice counts twice)."""
    uniq = np.unique(items)
    by_item = {u: np.flatnonzero(items == u) for u in uniq}
    return [np.concatenate([by_item[u] for u in rng.choice(uniq, len(uniq))]) for _ in range(n_boot)]


# ------------------------------------------------------------------------------------------ 1. breakability
def flip_matrix(var: pd.DataFrame, model: str, conditions: Sequence[str] = CONDITIONS) -> pd.DataFrame:
    """Items x conditions, 1.0 where the model's answer under the condition differs from its clean answer."""
    m = (~var[f"same_{model}"].astype(bool)).astype(float)
    F = pd.DataFrame({"item": var.item.to_numpy(), "kind": var.kind.to_numpy(), "flip": m.to_numpy()})
    F = F.pivot_table(index="item", columns="kind", values="flip", aggfunc="mean")
    missing = [c for c in conditions if c not in F.columns]
    if missing:
        raise ValueError(f"conditions {missing} have no rows in the variant table")
    if F[list(conditions)].isna().any().any():
        raise ValueError("every item needs every condition (a complete item x condition design)")
    return F[list(conditions)]


def condition_table(var: pd.DataFrame, models: Sequence[str], escape_below: float, n_boot: int, seed: int,
                    conditions: Sequence[str] = CONDITIONS) -> pd.DataFrame:
    """Per model and condition: stability (share of items whose answer is unchanged) with a bootstrap 95% CI
    over items, the CI half-width, and the call: ``escape`` when the CI's upper end is below ``escape_below``,
    ``holds`` when its lower end is at or above it, ``unclear`` otherwise."""
    out = []
    for m in models:
        F = flip_matrix(var, m, conditions)
        for c in conditions:
            ci = stats.mean_ci(1.0 - F[c].to_numpy(), n_boot, seed)
            s, lo, hi = ci.value, ci.ci_low, ci.ci_high
            call = "escape" if hi < escape_below else "holds" if lo >= escape_below else "unclear"
            out.append({"model": m, "regime": REGIME_OF.get(c, ""), "condition": c, "stability": s, "lo": lo,
                        "hi": hi, "halfwidth": (hi - lo) / 2, "n_items": len(F), "call": call})
    return pd.DataFrame(out)


def selective_breakability(F: np.ndarray, n_perm: int, n_boot: int, seed: int, n_inner: int = 20) -> dict:
    """Is stability selective across conditions? ``F``: items x conditions flip indicators.

    Statistic: the standard deviation across conditions of per-condition stability, minus its mean under the
    null that conditions are exchangeable within an item (each item's flips shuffled across its conditions,
    which keeps how fragile every item is). ``value`` > 0: some conditions break more than the others beyond
    what item-level sampling explains. p: one-sided, ``n_perm`` within-item permutations. CI: percentile
    bootstrap over items of the same excess, each resample against its own null mean (``n_inner``
    permutations of the resample), so that the sampling spread a resample adds is subtracted on both sides."""
    F = np.asarray(F, float)
    n, c = F.shape
    if n < 3 or c < 2:
        return _undefined(f"needs >= 3 items and >= 2 conditions, got {n} x {c}", n)
    if F.min() == F.max():
        return _undefined("no variation: every condition flips " + ("all" if F.max() else "no") + " items", n)
    rng = np.random.default_rng(seed)
    sd = lambda M: float(np.std(1.0 - M.mean(0)))
    obs = sd(F)
    null = np.array([sd(rng.permuted(F, axis=1)) for _ in range(n_perm)])
    base = float(null.mean())
    boot = []
    for _ in range(n_boot):
        Fb = F[rng.integers(0, n, n)]
        boot.append(sd(Fb) - np.mean([sd(rng.permuted(Fb, axis=1)) for _ in range(n_inner)]))
    lo, hi = _ci(boot)
    s = 1.0 - F.mean(0)
    return {"value": obs - base, "ci_low": float(lo), "ci_high": float(hi), "p_value": _pval(null, obs),
            "p_method": "permutation", "n": int(n), "observed_sd": obs, "null_sd": base,
            "n_perm": int(n_perm), "n_boot": int(n_boot), "min_stability": float(s.min()),
            "max_stability": float(s.max()), "n_conditions": int(c)}


# ------------------------------------------------------------------------------------------ 2. clustering
def signatures(H: np.ndarray, var: pd.DataFrame, clean_row: Mapping[int, int] | pd.Series,
               layers: Sequence[int]) -> np.ndarray:
    """Internal signature of each variant row of ``var`` (meta's index = rows of ``H``): the displacement of the
    residual stream from the item's clean input, h(varied) - h(clean), at each of ``layers``, each layer's
    block divided by the RMS norm of the clean states at that layer (so that layers weigh alike)."""
    rows = var.index.to_numpy()
    crow = np.asarray([clean_row[i] for i in var.item.to_numpy()])
    blocks = []
    for layer in layers:
        Hc = H[np.unique(crow), layer]
        scale = float(np.sqrt((Hc ** 2).sum(1).mean())) or 1.0
        blocks.append((H[rows, layer] - H[crow, layer]) / scale)
    return np.concatenate(blocks, axis=1)


def _embed(X: np.ndarray, dims: int) -> np.ndarray:
    d = int(min(dims, X.shape[0] - 1, X.shape[1]))
    return PCA(d, svd_solver="full").fit_transform(X - X.mean(0)) if d >= 1 else X - X.mean(0)


def _kmeans(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    return KMeans(k, n_init=10, random_state=seed).fit_predict(Z)


def cluster_escapes(X: np.ndarray, items: Sequence, classes: Sequence | None = None, *, k_range=range(2, 7),
                    pca_dims: int = 10, n_boot: int = 100, n_perm: int = 1000, seed: int = 0) -> dict:
    """Unsupervised clusters of escape events (rows of ``X``: their internal signatures; ``items``: the item of
    each, the unit of resampling).

    The events are centred and reduced to ``pca_dims`` principal components, k-means is fitted for every k in
    ``k_range`` and the k of the largest silhouette is chosen (the criterion stated before the run).
    Stability: the mean adjusted Rand index (ARI) between the clustering of a bootstrap resample of items
    (reduced and clustered again, same k) and the full clustering, on the events they share, with a 95% CI.
    With ``classes`` (the mechanism class given by hand to each event's condition): ``value`` is the ARI
    between clusters and classes, p from a permutation null (classes shuffled over events), CI over item
    resamples (each reclustered). Returns the dict plus ``labels``, ``k``, ``silhouette`` (by k)."""
    X = np.asarray(X, float)
    items = np.asarray(items)
    n = len(X)
    ks = [k for k in k_range if 2 <= k < n]
    if n < 4 or not ks:
        return _undefined(f"{n} escape events: too few to cluster (needs >= 4)", n, labels=[], k=0,
                          silhouette={})
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):
        Z = _embed(X, pca_dims)
        sil, labs = {}, {}
        for k in ks:
            labs[k] = _kmeans(Z, k, seed)
            sil[k] = float(silhouette_score(Z, labs[k])) if len(set(labs[k])) > 1 else -1.0
        k = max(sil, key=sil.get)
        lab = labs[k]
        cls = None if classes is None else pd.factorize(np.asarray(classes))[0]
        stab, boot_ari = [], []
        for idx in _item_resamples(items, n_boot, rng):
            idx = np.unique(idx)  # an event drawn twice would weigh twice in k-means but not in the ARI
            if len(idx) <= k:
                continue
            lb = _kmeans(_embed(X[idx], pca_dims), k, seed)
            stab.append(adjusted_rand_score(lab[idx], lb))
            if cls is not None:
                boot_ari.append(adjusted_rand_score(cls[idx], lb))
    slo, shi = _ci(stab)
    out = {"k": int(k), "silhouette": sil, "labels": lab.tolist(), "n": int(n), "n_items": int(len(set(items))),
           "stability": float(np.mean(stab)) if stab else math.nan,
           "stability_lo": slo, "stability_hi": shi, "n_boot": len(stab)}
    if cls is None:
        return {**out, **{k_: v for k_, v in _undefined("no classes given").items() if k_ not in out}}
    if len(set(cls)) < 2:
        return {**out, **{k_: v for k_, v in _undefined("all escapes are of one mechanism class: no comparison")
                          .items() if k_ not in out}}
    ari = float(adjusted_rand_score(cls, lab))
    null = np.array([adjusted_rand_score(rng.permutation(cls), lab) for _ in range(n_perm)])
    lo, hi = _ci(boot_ari)
    return {**out, "value": ari, "ci_low": float(lo), "ci_high": float(hi), "p_value": _pval(null, ari),
            "p_method": "permutation", "null_ari_mean": float(null.mean()),
            "null_ari_q95": float(np.quantile(null, 0.95)), "n_perm": int(n_perm), "n_classes": int(len(set(cls)))}


def cluster_profiles(events: pd.DataFrame, rel_disp: np.ndarray, disp_crit: np.ndarray,
                     regime_bases: Mapping[str, np.ndarray], k: int = 4) -> pd.DataFrame:
    """Per cluster (``events.cluster``): size, its most common mechanism class and condition with their shares,
    the share of each regime, the layer of largest mean relative displacement (``rel_disp``: events x layers),
    and the overlap of the cluster's principal subspace (top ``k`` of its displacements at the critical layer,
    ``disp_crit``: events x D) with each regime's subspace (``regime_bases``: D x k each)."""
    out = []
    for c, g in events.groupby("cluster"):
        idx = g.index.to_numpy()
        prof = rel_disp[idx].mean(0)
        row = {"cluster": int(c), "n": len(g), "class": g["class"].mode().iloc[0],
               "class_share": float((g["class"] == g["class"].mode().iloc[0]).mean()),
               "condition": g.condition.mode().iloc[0],
               "condition_share": float((g.condition == g.condition.mode().iloc[0]).mean()),
               "peak_layer": int(np.argmax(prof[1:]) + 1), "profile": prof.tolist()}
        for r in scenes.REGIMES:
            row[f"share_{r}"] = float((g.regime == r).mean())
        try:
            B, _ = geometry.principal_subspace(disp_crit[idx], k=min(k, len(idx)))
        except ValueError:  # a cluster of rank < k (e.g. one event repeated): its rank instead
            B, _ = geometry.principal_subspace(disp_crit[idx], energy=1.0)
        for r, Br in regime_bases.items():
            row[f"overlap_{r}"] = geometry.overlap(B, Br)
        out.append(row)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------ 3. prediction
def output_features(logprobs: Sequence[Mapping[str, float]]) -> np.ndarray:
    """(n, 2): the margin (log-probability of the best candidate minus the runner-up) and the entropy of the
    softmax over candidates, per input: the output-only description of how sure the model is."""
    out = []
    for d in logprobs:
        v = np.sort(np.asarray(list(d.values()), float))[::-1]
        p = np.exp(v - v.max())
        p /= p.sum()
        out.append((v[0] - v[1] if len(v) > 1 else 0.0, float(-(p * np.log(np.clip(p, 1e-300, None))).sum())))
    return np.asarray(out)


def _model(n_dense: int, n_pass: int, pca_dims: int, seed: int):
    parts = []
    if n_dense:
        red = [StandardScaler()] + ([PCA(pca_dims, random_state=seed)] if pca_dims and pca_dims < n_dense else [])
        parts.append(("dense", make_pipeline(*red), list(range(n_dense))))
    if n_pass:
        parts.append(("pass", "passthrough", list(range(n_dense, n_dense + n_pass))))
    return make_pipeline(ColumnTransformer(parts), LogisticRegression(C=1.0, max_iter=2000))


def _oof(X: np.ndarray, y: np.ndarray, folds, n_dense: int, pca_dims: int, seed: int) -> np.ndarray:
    p = np.full(len(y), np.nan)
    for tr, te in folds:
        if len(set(y[tr])) < 2:
            p[te] = y[tr].mean()
            continue
        m = _model(n_dense, X.shape[1] - n_dense, pca_dims, seed).fit(X[tr], y[tr])
        p[te] = m.predict_proba(X[te])[:, 1]
    return p


def predict_flips(y: Sequence, groups: Sequence, feature_sets: Mapping[str, tuple[np.ndarray | None, np.ndarray]], *,
                  n_folds: int = 5, pca_dims: int = 10, n_perm: int = 200, n_boot: int = 1000,
                  seed: int = 0) -> dict:
    """Out-of-fold prediction of ``y`` (1 = the variant flipped the answer) from each feature set,
    cross-validated by group (``groups`` = item: no item of a test fold is seen in training).

    ``feature_sets``: name -> (dense, passthrough): ``dense`` (n x f, or None) is standardised and reduced to
    ``pca_dims`` components inside each training fold; ``passthrough`` (n x g, e.g. the condition's one-hot)
    enters as is. The model is an L2 logistic regression. Per set: AUC of the out-of-fold scores, a 95% CI over
    item resamples of those scores, and a one-sided p against a label-permutation null (labels shuffled over
    rows, the whole cross-validation refitted ``n_perm`` times). Returns {name: result dict, "scores": {name:
    out-of-fold scores}}; the scores feed :func:`compare_auc`."""
    y = np.asarray(y, int)
    groups = np.asarray(groups)
    n = len(y)
    k = min(n_folds, len(np.unique(groups)))
    out: dict = {"scores": {}}
    if k < 2 or len(set(y)) < 2:
        why = "only one class of outcome (no flips, or only flips)" if len(set(y)) < 2 else "fewer than 2 items"
        for name in feature_sets:
            out[name] = _undefined(why, n)
        return out
    folds = list(GroupKFold(k).split(np.zeros(n), y, groups))
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):
        for name, (dense, pas) in feature_sets.items():
            dense = np.zeros((n, 0)) if dense is None else np.asarray(dense, float)
            pas = np.zeros((n, 0)) if pas is None else np.asarray(pas, float)
            X = np.concatenate([dense, pas], 1)
            s = _oof(X, y, folds, dense.shape[1], pca_dims, seed)
            auc = float(roc_auc_score(y, s))
            null = np.array([roc_auc_score(yp, _oof(X, yp, folds, dense.shape[1], pca_dims, seed))
                             for yp in (rng.permutation(y) for _ in range(n_perm))])
            boot = [roc_auc_score(y[i], s[i]) for i in _item_resamples(groups, n_boot, rng) if len(set(y[i])) > 1]
            lo, hi = _ci(boot)
            out[name] = {"value": auc, "ci_low": float(lo), "ci_high": float(hi),
                         "p_value": _pval(null, auc) if n_perm else math.nan,
                         "p_method": "permutation" if n_perm else "", "n": int(n),
                         "n_items": int(len(np.unique(groups))), "n_flips": int(y.sum()), "n_folds": int(k),
                         "null_auc_mean": float(null.mean()) if n_perm else math.nan,
                         "n_features": int(X.shape[1])}
            out["scores"][name] = s
    return out


def compare_auc(y: Sequence, groups: Sequence, a: np.ndarray, b: np.ndarray, *, n_perm: int = 2000,
                n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC(a) - AUC(b) of two out-of-fold score vectors for the same rows: CI over item resamples (paired),
    two-sided p from a paired swap null (for each item, its rows' scores from a and b swapped with
    probability 1/2). Both are probabilities from the same model family, so a swap is meaningful."""
    y, groups = np.asarray(y, int), np.asarray(groups)
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(set(y)) < 2:
        return _undefined("only one class of outcome", len(y))
    d = float(roc_auc_score(y, a) - roc_auc_score(y, b))
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    null = []
    for _ in range(n_perm):
        sw = rng.random(len(uniq))[inv] < 0.5
        null.append(roc_auc_score(y, np.where(sw, b, a)) - roc_auc_score(y, np.where(sw, a, b)))
    boot = [roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i])
            for i in _item_resamples(groups, n_boot, rng) if len(set(y[i])) > 1]
    lo, hi = _ci(boot)
    p = float((1 + np.sum(np.abs(null) >= abs(d) - 1e-12)) / (1 + n_perm))
    return {"value": d, "ci_low": float(lo), "ci_high": float(hi), "p_value": p, "p_method": "permutation",
            "n": int(len(y)), "n_items": int(len(uniq)), "n_perm": int(n_perm)}


# ------------------------------------------------------------------------------------------ 4. pathways
def pathway_divergence(H_a: np.ndarray, H_b: np.ndarray, var: pd.DataFrame, clean: pd.DataFrame, layer: int,
                       models: tuple[str, str] = ("base", "adapted"), escape_below: float = 0.8,
                       n_boot: int = 2000, n_perm: int = 9999, seed: int = 0) -> tuple[dict, pd.DataFrame]:
    """Items on which the two models give the same clean answer: does the dissimilarity of their internal
    routes predict how differently stable they are?

    Per such item: the route of each model is its displacement matrix at ``layer`` (conditions x D: h(varied) -
    h(clean)); route dissimilarity = 1 - linear CKA between the two models' matrices (over conditions);
    stability = share of conditions whose answer is unchanged. Returns the Spearman rho between dissimilarity
    and |stability difference| (two-sided permutation p, bootstrap CI over items; ``stats.spearman``) with the
    shares of same-answer items whose stabilities differ at all and that *split* (one model at or above
    ``escape_below``, the other below), and the per-item table."""
    ma, mb = models
    same = clean[f"pred_{ma}"] == clean[f"pred_{mb}"]
    rows = []
    for i in clean.index[same.to_numpy()]:
        g = var[var.item == i]
        r, c = g.index.to_numpy(), int(clean.loc[i, "row"])
        Da, Db = H_a[r, layer] - H_a[c, layer], H_b[r, layer] - H_b[c, layer]
        sa, sb = float(g[f"same_{ma}"].mean()), float(g[f"same_{mb}"].mean())
        sim = cka.cka_features(Da, Db) if len(r) >= 3 else math.nan
        rows.append({"item": int(i), "cka": sim, "dissimilarity": 1.0 - sim, f"stability_{ma}": sa,
                     f"stability_{mb}": sb, "abs_diff": abs(sa - sb),
                     "split": (sa >= escape_below) != (sb >= escape_below)})
    tab = pd.DataFrame(rows, columns=["item", "cka", "dissimilarity", f"stability_{ma}", f"stability_{mb}",
                                      "abs_diff", "split"])
    ok = tab.dropna(subset=["dissimilarity"])
    extra = {"n_items": int(len(clean)), "n_same": int(len(tab)),
             "share_differ": float((tab.abs_diff > 0).mean()) if len(tab) else math.nan,
             "share_split": float(tab.split.mean()) if len(tab) else math.nan,
             "median_cka": float(ok.cka.median()) if len(ok) else math.nan}
    if len(ok) < 3:
        return _undefined(f"{len(ok)} items with the same clean answer: too few for a rank correlation",
                          len(ok), **extra), tab
    if ok.abs_diff.nunique() < 2 or ok.dissimilarity.nunique() < 2:
        return _undefined("no variation in the stability difference (or in route dissimilarity) across "
                          "same-answer items", len(ok), **extra), tab
    r = stats.spearman(ok.dissimilarity, ok.abs_diff, n_permutations=n_perm, n_boot=n_boot, seed=seed).as_dict()
    return {**{k: r[k] for k in ("value", "ci_low", "ci_high", "p_value", "p_method", "n")}, **extra}, tab


# ------------------------------------------------------------------------------------------ paper and figures
def condition_tex_rows(cond: pd.DataFrame, mechanism: Mapping[str, str] = regimes.MECHANISM) -> list[str]:
    """Rows (cells joined by ``&``, for :func:`latex.tabular`) of the per-condition stability table: regime,
    condition, class, then per model stability % (CI)."""
    piv = {m: g.set_index("condition") for m, g in cond.groupby("model")}
    models = list(dict.fromkeys(cond.model))
    out = []
    for c in dict.fromkeys(cond.condition):
        cells = [results.tex_escape(REGIME_OF.get(c, "")), results.tex_escape(c.replace("_", " ")),
                 results.tex_escape(mechanism.get(c, ""))]
        for m in models:
            s = piv[m].loc[c]
            mark = {"escape": r"$^\dagger$", "holds": "", "unclear": r"$^?$"}[s.call]
            cells.append(f"{100 * s.stability:.0f} ({100 * s.lo:.0f}--{100 * s.hi:.0f}){mark}")
        out.append(" & ".join(cells))
    return out


def _fmt(v: float, d: int = 2) -> str:
    return "--" if not np.isfinite(v) else f"{v:.{d}f}"


def tests_tex_rows(tests: Sequence[tuple[str, dict]]) -> list[str]:
    """Rows (for :func:`latex.tabular`) of the tests table: name, value (95% CI), p, n."""
    out = []
    for name, r in tests:
        ci = f" ({_fmt(r['ci_low'])}, {_fmt(r['ci_high'])})" if np.isfinite(r.get("ci_low", math.nan)) else ""
        p = r.get("p_value", math.nan)
        out.append(f"{name} & {_fmt(r['value'])}{ci} & {_fmt(p, 3)} & {r['n']}")
    return out


def condition_figure(cond: pd.DataFrame, escape_below: float):
    """Stability per condition (points with 95% CIs), one colour per model, conditions grouped by regime."""
    import matplotlib.pyplot as plt

    conds = list(dict.fromkeys(cond.condition))
    models = list(dict.fromkeys(cond.model))
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    x = np.arange(len(conds))
    for j, m in enumerate(models):
        g = cond[cond.model == m].set_index("condition").loc[conds]
        off = (j - (len(models) - 1) / 2) * 0.25
        ax.errorbar(x + off, 100 * g.stability, yerr=[100 * (g.stability - g.lo), 100 * (g.hi - g.stability)],
                    fmt="o", ms=4, capsize=2, label=m)
    ax.axhline(100 * escape_below, ls="--", c="grey", lw=0.8, label=f"escape below {100 * escape_below:.0f}%")
    for b in np.flatnonzero([REGIME_OF[a] != REGIME_OF[b] for a, b in zip(conds, conds[1:])]):
        ax.axvline(b + 0.5, c="lightgrey", lw=0.8)
    ax.set_xticks(x, [c.replace("_", " ") for c in conds], rotation=45, ha="right")
    ax.set_ylabel("answer unchanged, % of items")
    ax.set_xlabel("condition (prompt | visual | pressure)")
    ax.set_title("Output stability per condition (95% CI over items)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def cluster_figure(profiles: pd.DataFrame, events: pd.DataFrame, critical: int):
    """Left: each cluster's mean relative displacement by layer (the critical layer marked). Right: the
    mechanism-class composition of each cluster."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.3), gridspec_kw={"width_ratios": [1.2, 1]})
    for p in profiles.itertuples():
        a.plot(np.arange(len(p.profile)), p.profile, label=f"cluster {p.cluster} (n={p.n})")
    a.axvline(critical, ls="--", c="grey", lw=0.8)
    a.set_xlabel("layer")
    a.set_ylabel("||h(var) - h(clean)|| / ||h(clean)||")
    a.set_title("Internal signature by cluster")
    a.legend(fontsize=7)
    comp = pd.crosstab(events.cluster, events["class"], normalize="index")
    comp.plot.barh(stacked=True, ax=b, legend=False, width=0.8)
    b.set_xlabel("share of the cluster's escapes")
    b.set_ylabel("cluster")
    b.set_title("Hand-given mechanism class")
    b.legend(fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    fig.tight_layout()
    return fig


def pathway_figure(tab: pd.DataFrame, r: Mapping, models: tuple[str, str] = ("base", "adapted")):
    """Route dissimilarity (1 - CKA of the two models' displacements) against the stability difference, one
    point per item on which both models give the same clean answer; split items (one stable, one fragile) in
    colour."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.4))
    for split, g in tab.groupby("split"):
        ax.scatter(g.dissimilarity, g.abs_diff, s=14, alpha=0.7,
                   label="one stable, one fragile" if split else "both on one side")
    rho = r.get("value", math.nan)
    ax.set_title(f"Same answer, different routes? rho = {rho:.2f}" if np.isfinite(rho) else
                 "Same answer, different routes? (undefined)", fontsize=9)
    ax.set_xlabel(f"route dissimilarity, 1 - CKA({models[0]}, {models[1]})")
    ax.set_ylabel("|stability difference|")
    if len(tab):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
