# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 05 — Regime probing: one VLM, one adapter, three kinds of input variation
# The same held-out items (a scene, a question, its true answer) under three regimes of variation, each of
# which keeps the true answer (`adapterscope.scenes.REGIMES`):
#
# * **prompt**: paraphrase, formatting, politeness, order of the options;
# * **visual**: pixel noise, blur, occlusion of empty regions, distractor objects that do not match the question,
#   background colour jitter;
# * **pressure** (text only, the image is untouched): a suggested wrong answer, a confident wrong assertion, an
#   authority cue, a neutral prefilled answer prefix, a prefix agreeing with a suggested wrong answer.
#
# For the base VLM (adapter off) and the adapted VLM (the VQA adapter of `05_vlm`, adapter on; same backbone):
#
# 1. **Output stability**: share of variants whose predicted answer equals the prediction on the clean input;
#    flip direction among the changed ones (correct -> wrong, wrong -> correct, wrong -> other wrong; for
#    pressure, the share that lands on the suggested answer). 95% CIs by bootstrap over items.
# 2. **Geometry at every layer** (decoder layer outputs; the last one after the final norm), at the answer position (the last prompt token, whose next token is the
#    answer): displacement d = h(varied) - h(clean) per variant; its relative size ||d|| / ||h(clean)||; the
#    principal subspace of each regime's displacements (top `subspace_k` right singular vectors, uncentred);
#    principal angles and overlap (mean squared cosine) between regimes; linear CKA (`adapterscope.cka`)
#    between the regimes' per-item mean displacements.
# 3. **Critical layer (criterion stated before looking).** At each layer, *separation* = mean split-half
#    overlap of a regime's subspace with itself (over random halves of the items) minus mean overlap of
#    different regimes' subspaces (same halves, same sample sizes; `geometry.regime_separation`). The critical
#    layer is the layer with the largest separation, excluding the embedding output (layer 0), where text-only
#    and pixel-only changes cannot meet at the answer position. It is located on the base VLM and reported
#    for the adapted one too.
# 4. **Escape routes**: conditions (regime x kind) whose stability falls below `escape_below`, grouped into
#    mechanism classes fixed in advance (below).
# 5. **Cross-regime prediction**: across items, does an item's stability (share of its variants unchanged) or
#    displacement (mean relative displacement at the critical layer) in one regime predict it in another?
#    Spearman's rho with permutation p and bootstrap CI (`adapterscope.stats`).

# %% tags=["parameters"]
vlm_run = "grid"  # run id of 05_vlm whose projector and adapter are probed
n_items = 48  # held-out items (families in turn)
item_seed = 3  # seed of the items (differs from 05_vlm's training and evaluation seeds)
variant_seed = 0  # seed of the variants
visual_strength = 1.0  # strength of noise, blur and occlusion
subspace_k = 4  # dimension of each regime's principal subspace
n_splits = 20  # random split halves for the separation criterion
escape_below = 0.8  # a condition whose stability is below this is an escape route
n_boot = 2000  # bootstrap resamples for CIs
batch_size = 32  # rows per forward
dtype = "float32"  # autocast dtype of the matmuls: auto, bfloat16, float32
device = "cpu"  # cpu | cuda | cuda:N
threads = 0  # torch CPU threads (0: torch's default)
seed = 0  # seed of bootstraps, permutations and split halves
progress = True  # show tqdm bars

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: threaded LAPACK on small matrices is slow here
from adapterscope import latex, params

P = params.check(globals())  # a typo'd or mistyped papermill parameter stops the run here

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from adapterscope import cka, finetune, geometry, paths, plotting, results, scenes, stats
from adapterscope import vlm as V

plotting.setup()
NB = "05_regime_probing"
RUN_ID = "grid"
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
t_start = time.perf_counter()
if threads:
    torch.set_num_threads(threads)
up = results.load("05_vlm", vlm_run)
run.add_input(f"05_vlm/{vlm_run}", results.sha256_file(results.results_path("05_vlm", vlm_run)))
upp = up["provenance"]["params"]
if item_seed in (upp["projector_seed"], upp["lora_seed"], upp["eval_seed"]):
    raise ValueError(f"item_seed {item_seed} was used by 05_vlm {vlm_run}; pick an unseen seed")
REGIMES = list(scenes.REGIMES)
MECHANISM = {  # mechanism classes of the escape routes, fixed before the run
    "paraphrase": "surface rewording", "format": "surface rewording", "politeness": "surface rewording",
    "option_order": "option-order bias",
    "noise": "low-level pixel statistics", "blur": "low-level pixel statistics",
    "background": "low-level pixel statistics",
    "occlusion": "irrelevant scene content", "distractors": "irrelevant scene content",
    "suggestion": "social pressure towards a wrong answer", "assertion": "social pressure towards a wrong answer",
    "authority": "social pressure towards a wrong answer",
    "prefill": "answer scaffold (neutral prefill)", "prefill_agree": "committed agreement (prefilled wrong answer)",
}
assert set(MECHANISM) == {k for ks in scenes.REGIMES.values() for k in ks}

# %% [markdown]
# ## Items and variants

# %%
root = paths.project_root()
proj_dir = root / up["values"]["projector_dir"] if not up["values"]["projector_dir"].startswith("/") else up["values"]["projector_dir"]
adapter_dir = root / up["values"]["adapter_dir"]
vlm = V.load_vlm(upp["lm"], projector=proj_dir, device=device, image_size=upp["image_size"])
pm = finetune.load_adapter(vlm, adapter_dir)
run.add_input("projector", proj_dir)
run.add_input("adapter", adapter_dir)

items = scenes.make_examples(n_items, seed=item_seed, size=upp["image_size"])
rows = []  # one row per (item, condition): the clean input and every variant
for i, ex in enumerate(items):
    rows.append({"item": i, "regime": "clean", "kind": "clean", "ex": ex})
    for r in REGIMES:
        for k in scenes.REGIMES[r]:
            v = scenes.regime_variant(ex, r, k, seed=variant_seed * 100003 + i, strength=visual_strength)
            assert v.answer == ex.answer
            rows.append({"item": i, "regime": r, "kind": k, "ex": v})
meta = pd.DataFrame([{k: v for k, v in r.items() if k != "ex"} for r in rows])
meta["family"] = [r["ex"].question.family for r in rows]
meta["answer"] = [r["ex"].answer for r in rows]
meta["suggested"] = [r["ex"].prompt.suggested for r in rows]
print(f"{n_items} items x {len(rows) // n_items} conditions = {len(rows)} inputs per model")

# %% [markdown]
# ## Predictions and answer-position states, adapter off and on

# %%
exs = [r["ex"] for r in rows]
feats = V.encode_images(vlm, [e.image for e in exs], device=device)
out, hs = {}, {}
t0 = time.perf_counter()
for model in ("base", "adapted"):
    def go():
        return V.score(pm, None, [e.prompt for e in exs], [e.question.candidates for e in exs], [e.answer for e in exs],
                       image_features=feats, batch_size=batch_size, device=device, dtype=dtype,
                       progress=progress, hidden_states=True)
    if model == "base":
        with pm.disable_adapter():
            r = go()
    else:
        r = go()
    out[model] = r
    hs[model] = r.pop("hidden_states").double().numpy()  # (rows, L+1, D)
    meta[f"pred_{model}"] = r["pred"]
    meta[f"correct_{model}"] = r["correct"]
forward_s = time.perf_counter() - t0
L1 = hs["base"].shape[1]  # embedding output + one per decoder layer
print(f"forwards: {forward_s:.0f}s for {2 * len(rows)} inputs; {L1 - 1} decoder layers")

# %% [markdown]
# ## 1. Output stability

# %%
clean = meta[meta.regime == "clean"].set_index("item")
var = meta[meta.regime != "clean"].copy()
for m in ("base", "adapted"):
    var[f"clean_pred_{m}"] = clean.loc[var.item, f"pred_{m}"].to_numpy()
    var[f"clean_correct_{m}"] = clean.loc[var.item, f"correct_{m}"].to_numpy()
    var[f"same_{m}"] = var[f"pred_{m}"] == var[f"clean_pred_{m}"]
    var[f"to_suggested_{m}"] = var[f"pred_{m}"] == var.suggested


def item_ci(values_by_item) -> tuple[float, float, float]:
    x = np.asarray(values_by_item, float)
    lo, hi, _ = stats.bootstrap_ci((x,), np.mean, n_resamples=n_boot, seed=seed)
    return float(x.mean()), lo, hi


srows = []
for m in ("base", "adapted"):
    for r in REGIMES + ["all"]:
        g = var if r == "all" else var[var.regime == r]
        per_item = g.groupby("item")[f"same_{m}"].mean()
        est, lo, hi = item_ci(per_item)
        ch = g[~g[f"same_{m}"]]
        n_ch = len(ch)
        cw = int((ch[f"clean_correct_{m}"] & ~ch[f"correct_{m}"]).sum())
        wc = int((~ch[f"clean_correct_{m}"] & ch[f"correct_{m}"]).sum())
        ww = n_ch - cw - wc
        sug = g[g.suggested.notna()]
        srows.append({"model": m, "regime": r, "stability": est, "lo": lo, "hi": hi, "n_items": int(len(per_item)),
                      "n_variants": int(len(g)), "n_changed": n_ch, "correct_to_wrong": cw, "wrong_to_correct": wc,
                      "wrong_to_wrong": ww, "accuracy": float(g[f"correct_{m}"].mean()),
                      "clean_accuracy": float(clean[f"correct_{m}"].mean()),
                      "to_suggested": float(sug[f"to_suggested_{m}"].mean()) if len(sug) else np.nan,
                      "changed_to_suggested": float(sug[~sug[f"same_{m}"]][f"to_suggested_{m}"].mean())
                      if (~sug[f"same_{m}"]).any() else np.nan})
stab = pd.DataFrame(srows)
# does the adapter change stability? paired over items
adiff = {}
for r in REGIMES:
    g = var[var.regime == r].groupby("item")[["same_base", "same_adapted"]].mean()
    adiff[r] = stats.mean_difference(g.same_adapted, g.same_base, paired=True, n_boot=n_boot,
                                     n_permutations=n_boot, seed=seed).as_dict()
stab

# %% [markdown]
# ## Escape routes: conditions where stability breaks, by mechanism class

# %%
krows = []
for m in ("base", "adapted"):
    for (r, k), g in var.groupby(["regime", "kind"], sort=False):
        est, lo, hi = item_ci(g[f"same_{m}"].to_numpy(float))
        krows.append({"model": m, "regime": r, "kind": k, "mechanism": MECHANISM[k], "stability": est, "lo": lo,
                      "hi": hi, "accuracy": float(g[f"correct_{m}"].mean()),
                      "to_suggested": float(g[f"to_suggested_{m}"].mean()) if g.suggested.notna().any() else np.nan,
                      "escape": bool(est < escape_below)})
kinds = pd.DataFrame(krows)
mech = (kinds.groupby(["model", "mechanism"], sort=False)
        .agg(regime=("regime", "first"), stability=("stability", "mean"), min_stability=("stability", "min"),
             conditions=("kind", lambda s: ", ".join(s)), escapes=("escape", "sum"))
        .reset_index())
mech

# %% [markdown]
# ## 2. Geometry per layer

# %%
layers = list(range(1, L1))  # decoder layer outputs (layer 0, the embeddings, is excluded: see the criterion)
clean_idx = np.array([meta.index[(meta.regime == "clean") & (meta.item == it)][0] for it in range(n_items)])
grows, pair_rows = [], []
sep_by_model = {}
rel_disp = {}  # model -> (variant rows, L1) relative displacement, rows in var's order
t0 = time.perf_counter()
for m in ("base", "adapted"):
    H = hs[m]
    rel_disp[m] = pd.DataFrame(np.nan, index=var.index, columns=range(L1))
    disp, ids, item_mean = {}, {}, {}
    for r in REGIMES:
        idx = var.index[var.regime == r].to_numpy()
        it = var.loc[idx, "item"].to_numpy()
        D = H[idx] - H[clean_idx[it]]                                  # (rows_r, L1, D)
        rel = np.linalg.norm(D, axis=-1) / np.linalg.norm(H[clean_idx[it]], axis=-1)
        rel_disp[m].loc[idx] = rel
        disp[r] = np.ascontiguousarray(D[:, 1:].transpose(1, 0, 2))     # (layers, rows_r, D), layer 0 dropped
        ids[r] = it
        item_mean[r] = np.stack([D[it == i].mean(0) for i in range(n_items)])  # (items, L1, D)
        for l in layers:
            grows.append({"model": m, "regime": r, "layer": l, "rel_disp": float(rel[:, l].mean())})
    sep = geometry.regime_separation(disp, k=subspace_k, n_splits=n_splits, seed=seed, items=ids)
    sep_by_model[m] = sep["separation"]
    full = {r: geometry.principal_subspaces(disp[r], subspace_k) for r in REGIMES}  # (layers, D, k)
    for j, l in enumerate(layers):
        for a_i, a in enumerate(REGIMES):
            for b in REGIMES[a_i + 1:]:
                ang = np.degrees(geometry.principal_angles(full[a][j], full[b][j]))
                ck = cka.cka_features(item_mean[a][:, l], item_mean[b][:, l])
                pair_rows.append({"model": m, "layer": l, "pair": f"{a}|{b}", "overlap": geometry.overlap(full[a][j], full[b][j]),
                                  "split_overlap": float(sep["across"][f"{a}|{b}"][j]), "min_angle": float(ang[0]),
                                  "max_angle": float(ang[-1]), "cka": ck})
        for r in REGIMES:
            pair_rows.append({"model": m, "layer": l, "pair": f"{r}|{r}", "overlap": np.nan,
                              "split_overlap": float(sep["within"][r][j]), "min_angle": np.nan, "max_angle": np.nan,
                              "cka": np.nan})
        grows.append({"model": m, "regime": "separation", "layer": l, "rel_disp": np.nan,
                      "separation": float(sep["separation"][j]), "within": float(sep["within_mean"][j]),
                      "across": float(sep["across_mean"][j]), "chance": sep["chance"]})
geometry_s = time.perf_counter() - t0
geo = pd.DataFrame(grows)
pairs = pd.DataFrame(pair_rows)
# separation indexed by layer (entry 0, the embeddings, is excluded by skip_first=1)
crit = {m: geometry.critical_layer(np.r_[np.nan, sep_by_model[m]], skip_first=1) for m in sep_by_model}
CRIT = crit["base"]
print("critical layer (largest separation):", crit)
pairs[pairs.layer == CRIT]

# %% [markdown]
# ## 3. Does one regime predict another? (across items, at the critical layer)

# %%
prow = []
for m in ("base", "adapted"):
    per_item = {}
    for r in REGIMES:
        g = var[var.regime == r].groupby("item")
        per_item[("stability", r)] = g[f"same_{m}"].mean().reindex(range(n_items)).to_numpy(float)
        per_item[("displacement", r)] = (rel_disp[m].loc[var.regime == r, CRIT].groupby(var.item).mean()
                                         .reindex(range(n_items)).to_numpy(float))
    for measure in ("stability", "displacement"):
        for a_i, a in enumerate(REGIMES):
            for b in REGIMES[a_i + 1:]:
                x, y = per_item[(measure, a)], per_item[(measure, b)]
                if np.ptp(x) == 0 or np.ptp(y) == 0:
                    res = {"value": np.nan, "n": int(len(x)), "p_value": np.nan, "ci_low": np.nan, "ci_high": np.nan}
                else:
                    res = stats.spearman(x, y, n_boot=n_boot, n_permutations=n_boot, seed=seed).as_dict()
                prow.append({"model": m, "measure": measure, "pair": f"{a}|{b}", "rho": res["value"], "n": res["n"],
                             "p": res["p_value"], "lo": res["ci_low"], "hi": res["ci_high"]})
pred = pd.DataFrame(prow)
pred

# %% [markdown]
# ## Figures

# %%
COL = dict(zip(REGIMES, plt.rcParams["axes.prop_cycle"].by_key()["color"][:3]))
fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.0), gridspec_kw={"width_ratios": [1, 2.2]})
ax = axes[0]
x = np.arange(len(REGIMES))
for j, m in enumerate(("base", "adapted")):
    s = stab[(stab.model == m) & stab.regime.isin(REGIMES)].set_index("regime").loc[REGIMES]
    ax.bar(x + (j - 0.5) * 0.38, s.stability, 0.38, yerr=[s.stability - s.lo, s.hi - s.stability], capsize=2,
           label=m, color=["#888888", "#d55e00"][j])
ax.set_xticks(x, REGIMES)
ax.set_ylim(0, 1.05)
ax.set_ylabel("answers unchanged (share)")
ax.legend(fontsize=8, loc="lower left")
ax = axes[1]
order = [k for r in REGIMES for k in scenes.REGIMES[r]]
for j, m in enumerate(("base", "adapted")):
    s = kinds[kinds.model == m].set_index("kind").loc[order]
    ax.errorbar(np.arange(len(order)) + (j - 0.5) * 0.25, s.stability, yerr=[s.stability - s.lo, s.hi - s.stability],
                fmt="o", ms=4, capsize=2, color=["#888888", "#d55e00"][j], label=m)
ax.axhline(escape_below, color="k", ls=":", lw=1)
ax.set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
ax.set_ylim(0, 1.05)
ax.set_ylabel("unchanged (share)")
run.figures += plotting.save(fig, NB, "stability")
plt.show()
plt.close(fig)

# %%
fig, axes = plt.subplots(1, 3, figsize=(11, 3.1))
ax = axes[0]
for r in REGIMES:
    for m, ls in (("base", "-"), ("adapted", "--")):
        g = geo[(geo.model == m) & (geo.regime == r)]
        ax.plot(g.layer, g.rel_disp, ls=ls, color=COL[r], label=f"{r} ({m})" if m == "base" else None)
ax.set_yscale("log")
ax.set_xlabel("layer")
ax.set_ylabel(r"$\|h_{varied}-h_{clean}\| / \|h_{clean}\|$")
ax.legend(fontsize=7)
ax = axes[1]
for m, ls in (("base", "-"), ("adapted", "--")):
    g = geo[(geo.model == m) & (geo.regime == "separation")]
    ax.plot(g.layer, g.within, ls=ls, color="#0072b2", label="within regime (split halves)" if m == "base" else None)
    ax.plot(g.layer, g.across, ls=ls, color="#cc79a7", label="across regimes" if m == "base" else None)
    ax.plot(g.layer, g.separation, ls=ls, color="k", label="separation" if m == "base" else None)
ax.axhline(geo.chance.dropna().iloc[0], color="grey", ls=":", lw=1, label="chance overlap")
ax.axvline(CRIT, color="#d55e00", lw=1.2)
ax.text(CRIT, 1.0, f" critical layer {CRIT}", color="#d55e00", fontsize=8, va="top")
ax.set_ylim(0, 1.05)
ax.set_xlabel("layer")
ax.set_ylabel("subspace overlap")
ax.legend(fontsize=7, loc="center right")
ax = axes[2]
for p_i, p in enumerate([f"{a}|{b}" for i, a in enumerate(REGIMES) for b in REGIMES[i + 1:]]):
    for m, ls in (("base", "-"), ("adapted", "--")):
        g = pairs[(pairs.model == m) & (pairs.pair == p)]
        ax.plot(g.layer, g.cka, ls=ls, color=f"C{p_i + 3}", label=p.replace("|", " vs ") if m == "base" else None)
ax.axvline(CRIT, color="#d55e00", lw=1.2)
ax.set_ylim(0, 1.05)
ax.set_xlabel("layer")
ax.set_ylabel("linear CKA of per-item displacements")
ax.legend(fontsize=7)
fig.tight_layout()
run.figures += plotting.save(fig, NB, "layer_geometry")
plt.show()
plt.close(fig)

# %% [markdown]
# ## Export

# %%
fmt = results.format_number
wall_s = time.perf_counter() - t_start
name = {"prompt": "Prompt", "visual": "Visual", "pressure": "Pressure", "all": "All"}
for s in stab.itertuples():
    mk = "Base" if s.model == "base" else "Adapted"
    run.macro(f"Stab{mk}{name[s.regime]}", 100 * s.stability, digits=2)
    run.macro(f"StabLo{mk}{name[s.regime]}", 100 * s.lo, digits=2)
    run.macro(f"StabHi{mk}{name[s.regime]}", 100 * s.hi, digits=2)
    run.macro(f"Changed{mk}{name[s.regime]}", s.n_changed)
    run.macro(f"CorrectToWrong{mk}{name[s.regime]}", s.correct_to_wrong)
    run.macro(f"WrongToCorrect{mk}{name[s.regime]}", s.wrong_to_correct)
    if s.regime == "pressure":
        run.macro(f"ToSuggested{mk}", 100 * s.to_suggested, digits=2)
    if s.regime == "all":
        run.macro(f"CleanAcc{mk}", 100 * s.clean_accuracy, digits=2)
for r in REGIMES:
    d = adiff[r]
    run.macro(f"StabDiff{name[r]}", 100 * d["value"], digits=2)
    run.macro(f"StabDiffLo{name[r]}", 100 * d["ci_low"], digits=2)
    run.macro(f"StabDiffHi{name[r]}", 100 * d["ci_high"], digits=2)
    run.macro(f"StabDiffP{name[r]}", d["p_value"], digits=2)
for m in ("base", "adapted"):
    mk = "Base" if m == "base" else "Adapted"
    run.macro(f"CriticalLayer{mk}", int(crit[m]))
    g = geo[(geo.model == m) & (geo.regime == "separation")].set_index("layer")
    run.macro(f"Separation{mk}", g.loc[crit[m], "separation"], digits=2)
    run.macro(f"Within{mk}", g.loc[crit[m], "within"], digits=2)
    run.macro(f"Across{mk}", g.loc[crit[m], "across"], digits=2)
    worst = kinds[kinds.model == m].sort_values("stability").iloc[0]
    run.macro(f"WorstKind{mk}", results.tex_escape(worst.kind), raw=True)
    run.macro(f"WorstKindStab{mk}", 100 * worst.stability, digits=2)
    run.macro(f"Escapes{mk}", int(kinds[(kinds.model == m)].escape.sum()))
    run.macro(f"EscapeClasses{mk}", int(mech[(mech.model == m) & (mech.escapes > 0)].shape[0]))
run.macro("OverlapChance", geo.chance.dropna().iloc[0], digits=2)
run.macro("SubspaceK", subspace_k)
run.macro("NItems", n_items)
run.macro("NInputs", len(rows))
run.macro("NumLayers", L1 - 1)
run.macro("EscapeBelow", 100 * escape_below, digits=2)
run.macro("WallMinutes", wall_s / 60, digits=2)
ge = geo[geo.regime != "separation"]
for r in REGIMES:
    for m in ("base", "adapted"):
        v = ge[(ge.model == m) & (ge.regime == r) & (ge.layer == CRIT)].rel_disp.iloc[0]
        run.macro(f"RelDisp{'Base' if m == 'base' else 'Adapted'}{name[r]}", v, digits=2)
pc = pairs[(pairs.layer == CRIT) & (pairs.model == "base") & pairs.cka.notna()]
run.macro("CKAMinBase", pc.cka.min(), digits=2)
run.macro("CKAMaxBase", pc.cka.max(), digits=2)
run.macro("OverlapMinBase", pc.overlap.min(), digits=2)
run.macro("OverlapMaxBase", pc.overlap.max(), digits=2)
sig = pred[(pred.p < 0.05)]
run.macro("PredSignificant", int(len(sig)))
run.macro("PredTotal", int(len(pred)))
run.macro("PredMaxAbsRho", float(np.nanmax(np.abs(pred.rho))) if pred.rho.notna().any() else float("nan"), digits=2)

tab_rows = []
for s in stab[stab.regime.isin(REGIMES)].sort_values(["regime", "model"], key=lambda c: c.map(
        {**{r: i for i, r in enumerate(REGIMES)}, "base": 0, "adapted": 1})).itertuples():
    ts = "--" if np.isnan(s.to_suggested) else fmt(100 * s.to_suggested, 2)
    tab_rows.append(f"{s.regime} & {s.model} & {fmt(100 * s.stability, 2)} [{fmt(100 * s.lo, 2)}, {fmt(100 * s.hi, 2)}] & "
                     f"{s.n_changed}/{s.n_variants} & {s.correct_to_wrong} & {s.wrong_to_correct} & {ts}")
latex.write_table("regime_stability", "llrrrrr", r"regime & model & unchanged, \% (95\% CI) & changed & c$\to$w & w$\to$c & to suggested, \%", tab_rows)

tab_rows = []
for s in pred.itertuples():
    rho = "--" if np.isnan(s.rho) else f"{fmt(s.rho, 2)} [{fmt(s.lo, 2)}, {fmt(s.hi, 2)}]"
    tab_rows.append(f"{s.measure} & {s.pair.replace('|', ' vs ')} & {s.model} & {s.n} & {rho} & "
                     f"{'--' if np.isnan(s.p) else fmt(s.p, 2)}")
latex.write_table("regime_prediction", "lllrrl", r"measure & regimes & model & $n$ & Spearman $\rho$ (95\% CI) & $p$", tab_rows)

tab_rows = []
mb = mech.set_index(["model", "mechanism"])
for mc in dict.fromkeys(MECHANISM.values()):
    b, a = mb.loc[("base", mc)], mb.loc[("adapted", mc)]
    flag = lambda row: fmt(100 * row.min_stability, 2) + (r"$^{\ast}$" if row.escapes else "")
    tab_rows.append(f"{mc} & {b.regime} & {results.tex_escape(b.conditions)} & {flag(b)} & {flag(a)}")
latex.write_table("regime_escapes", "lllrr", r"mechanism class & regime & conditions & base, \% & adapted, \%", tab_rows)

# findings ledger entries (paper/findings.yml): value, CI, n
sb = stab.set_index(["model", "regime"])
pp = adiff["pressure"]
findings = {f"stability_{m}_{r}": {"value": float(sb.loc[(m, r), "stability"]), "ci_low": float(sb.loc[(m, r), "lo"]),
                                   "ci_high": float(sb.loc[(m, r), "hi"]), "n": int(sb.loc[(m, r), "n_items"])}
            for m in ("base", "adapted") for r in REGIMES}
per_item = var[var.regime.isin(["prompt", "pressure"])].groupby(["regime", "item"]).same_base.mean().unstack(0)
gd = stats.mean_difference(per_item["prompt"], per_item["pressure"], paired=True, n_boot=n_boot,
                           n_permutations=n_boot, seed=seed).as_dict()
findings["prompt_minus_pressure_base"] = {"value": gd["value"], "ci_low": gd["ci_low"], "ci_high": gd["ci_high"],
                                          "n": int(len(per_item)), "p_value": gd["p_value"]}
for key, v in (("", gd["value"]), ("Lo", gd["ci_low"]), ("Hi", gd["ci_high"])):
    run.macro(f"PromptPressureGap{key}", 100 * v, digits=2)
run.macro("PromptPressureGapP", gd["p_value"], digits=2)
findings["adapter_stability_change_pressure"] = {"value": pp["value"], "ci_low": pp["ci_low"], "ci_high": pp["ci_high"],
                                                 "n": pp.get("n", n_items), "p_value": pp["p_value"]}
findings["critical_layer_base"] = {"value": int(crit["base"]), "n": n_items}
run.values.update({
    "findings": findings,
    "stability": stab.to_dict("records"), "stability_by_kind": kinds.to_dict("records"),
    "mechanisms": mech.to_dict("records"), "adapter_stability_change": adiff,
    "geometry": geo.to_dict("records"), "pairs": pairs.to_dict("records"), "critical_layer": crit,
    "separation": {m: s.tolist() for m, s in sep_by_model.items()}, "prediction": pred.to_dict("records"),
    "n_items": n_items, "n_inputs": len(rows), "num_layers": L1 - 1, "forward_s": forward_s, "wall_s": wall_s,
    "geometry_s": geometry_s,
    "torch_threads": torch.get_num_threads(), "adapter_family": up["values"]["adapter_family"],
})
print(f"wall time {wall_s:.0f}s")
print(run.write())
