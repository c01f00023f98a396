# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: adapterscope
#     language: python
#     name: adapterscope
# ---

# %% [markdown]
# # 05b — Regime probing: one VLM, one adapter, three kinds of input variation
# The same held-out items (a scene, a question, its true answer) under three regimes of variation, each of
# which keeps the true answer (`adapterscope.scenes.REGIMES`): **prompt** (paraphrase, formatting, politeness,
# order of the options), **visual** (pixel noise, blur, occlusion of empty regions, distractor objects that do
# not match the question, background colour jitter) and **pressure** (text only: a suggested wrong answer, a
# confident wrong assertion, an authority cue, a neutral prefilled answer prefix, a prefix agreeing with a
# suggested wrong answer). For the base VLM (adapter off) and the adapted VLM (the VQA adapter of `05a_vlm`,
# adapter on; same backbone), with the analysis in `adapterscope.regimes`:
#
# 1. **Output stability**: share of variants whose answer equals the clean prediction; flip directions; for
#    pressure, the share landing on the suggested answer. 95% CIs by bootstrap over items.
# 2. **Escape routes**: conditions whose stability is below `escape_below`, in mechanism classes fixed in
#    advance (`regimes.MECHANISM`); descriptive here, tested on more items in `06_escape_routes`, which also
#    reuses this notebook's critical layer.
# 3. **Geometry at every layer** (decoder layer outputs; the last after the final norm) at the answer position:
#    displacement d = h(varied) - h(clean), its relative size, each regime's principal subspace (top
#    `subspace_k` right singular vectors, uncentred), principal angles, overlap, linear CKA of per-item means.
# 4. **Critical layer (criterion stated before looking)**: the layer with the largest *separation* (split-half
#    within-regime overlap minus across-regime overlap, `geometry.regime_separation`), layer 0 excluded. Being
#    an argmax it always exists, so we also report the **held-out peak margin**: the layer chosen on one half
#    of the items, its separation minus the median of the other layers measured on the other half, with a
#    bootstrap CI over items and a regime-label permutation p (`regimes.heldout_peak_margin`).
# 5. **Cross-regime prediction**: across items, does stability or displacement (at the critical layer) in one
#    regime predict it in another? Spearman's rho with permutation p and bootstrap CI.
#
# **Reads** `results/05a_vlm/<vlm_run>.json` (projector, adapter). **Writes**
# `results/05b_regime_probing/grid.json`, `paper/generated/05b_regime_probing/`,
# `paper/generated/tables/regime_*.tex`, `figures/05b_regime_probing/`. **Rerun alone:** `make notebook
# NB=05b_regime_probing` (after `05a_vlm`). **Feeds** the paper's VLM section and `06_escape_routes` (the critical
# layer); findings `vlm-pressure-gap`, `vlm-adapter-pressure`, `vlm-critical-layer`.

# %% tags=["parameters"]
vlm_run = "grid"  # run id of 05a_vlm whose projector and adapter are probed
n_items = 48  # held-out items (families in turn)
item_seed = 3  # seed of the items (differs from 05a_vlm's training and evaluation seeds)
variant_seed = 0  # seed of the variants
visual_strength = 1.0  # strength of noise, blur and occlusion
subspace_k = 4  # dimension of each regime's principal subspace
n_splits = 20  # random split halves for the separation criterion (and quarterings for its held-out margin)
escape_below = 0.8  # a condition whose stability is below this is an escape route
n_boot = 2000  # bootstrap resamples for CIs
n_boot_layer = 200  # item resamples of the held-out peak margin (each reruns select-then-evaluate)
n_perm_layer = 100  # regime-label permutations for the p of the held-out margin (0: p from the bootstrap)
pred_alpha = 0.05  # uncorrected level at which a cross-regime correlation is counted
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
from IPython.display import display

from adapterscope import finetune, macros, paths, plotting, regimes, results, scenes
from adapterscope import vlm as V

plotting.setup()
NB, RUN_ID, MODELS = "05b_regime_probing", "grid", regimes.MODELS
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
t_start = time.perf_counter()
if threads:
    torch.set_num_threads(threads)
up = results.load("05a_vlm", vlm_run)
run.add_input(f"05a_vlm/{vlm_run}", results.sha256_file(results.results_path("05a_vlm", vlm_run)))
upp = up["provenance"]["params"]
if item_seed in (upp["projector_seed"], upp["lora_seed"], upp["eval_seed"]):
    raise ValueError(f"item_seed {item_seed} was used by 05a_vlm {vlm_run}; pick an unseen seed")
REGIMES = list(scenes.REGIMES)

# %% [markdown]
# ## Load the VLM and its adapter; items and variants

# %%
root = paths.project_root()
proj_dir, adapter_dir = (root / up["values"][k] for k in ("projector_dir", "adapter_dir"))  # absolute stays
run.add_input("projector", proj_dir)
run.add_input("adapter", adapter_dir)
vlm = V.load_vlm(upp["lm"], projector=proj_dir, device=device, image_size=upp["image_size"])
pm = finetune.load_adapter(vlm, adapter_dir)
items = scenes.make_examples(n_items, seed=item_seed, size=upp["image_size"])
rows, meta = regimes.input_rows(items, variant_seed, visual_strength)  # one row per (item, condition)
n_variants = len(rows) // n_items - 1
print(f"{n_items} items x (clean + {n_variants} variants) = {len(rows)} inputs per model")

# %% [markdown]
# ## Predictions and answer-position states, adapter off and on

# %%
hs, _, forward_s = regimes.forward_models(vlm, pm, rows, meta, MODELS, device=device, batch_size=batch_size,
                                          dtype=dtype, progress=progress)  # (rows, L+1, D) per model
L1, width = hs["base"].shape[1:]  # embedding output + one per decoder layer; residual width
print(f"forwards: {forward_s:.0f}s for {2 * len(rows)} inputs; {L1 - 1} decoder layers, width {width}")

# %% [markdown]
# ## 1. Output stability, and 2. escape routes by mechanism class

# %%
clean, var = regimes.variant_table(meta)
stab = regimes.stability(var, clean, REGIMES, n_boot, seed)
adiff = regimes.adapter_stability_change(var, REGIMES, n_boot, seed)  # adapted minus base, paired over items
gap = regimes.regime_gap(var, "prompt", "pressure", "base", n_boot, seed)
kinds = regimes.stability_by_kind(var, escape_below, n_boot, seed)
mech = regimes.mechanisms(kinds)
display(stab, mech)

# %% [markdown]
# ## 3. Geometry per layer and 4. the critical layer with its held-out margin

# %%
t0 = time.perf_counter()
geom = {m: regimes.layer_geometry(hs[m], var, clean.row.to_numpy(), REGIMES, subspace_k, n_splits, seed, m)
        for m in MODELS}
geometry_s = time.perf_counter() - t0
geo = pd.concat([geom[m]["geo"] for m in MODELS], ignore_index=True)
pairs = pd.concat([geom[m]["pairs"] for m in MODELS], ignore_index=True)
crit = {m: regimes.critical_layer(geom[m]["separation"]) for m in MODELS}
CRIT = crit["base"]
t0 = time.perf_counter()
held = regimes.heldout_peak_margin(geom["base"]["disp"], geom["base"]["items"], subspace_k, n_splits=n_splits,
                                   seed=seed, n_boot=n_boot_layer, n_perm=n_perm_layer, layers=range(1, L1),
                                   workers=torch.get_num_threads())
heldout_s = time.perf_counter() - t0
print("critical layer (largest separation):", crit, "| held-out margin (base):",
      {k: held[k] for k in ("value", "ci_low", "ci_high", "p_value", "stability", "modal_layer")})
pairs[pairs.layer == CRIT]

# %% [markdown]
# ## 5. Does one regime predict another? (across items, at the critical layer)

# %%
pred = regimes.cross_regime_prediction(var, {m: geom[m]["rel_disp"] for m in MODELS}, CRIT, REGIMES, n_boot, seed)
pred

# %% [markdown]
# ## Figures

# %%
fig = regimes.stability_figure(stab, kinds, REGIMES, escape_below)
run.figures += plotting.save(fig, NB, "stability")
plt.show()
plt.close(fig)

# %%
fig = regimes.layer_geometry_figure(geo, pairs, CRIT, REGIMES)
run.figures += plotting.save(fig, NB, "layer_geometry")
plt.show()
plt.close(fig)

# %% [markdown]
# ## Export

# %%
wall_s = time.perf_counter() - t_start
name = {"prompt": "Prompt", "visual": "Visual", "pressure": "Pressure", "all": "All"}
mk = {"base": "Base", "adapted": "Adapted"}
for s in stab.itertuples():
    M, G = mk[s.model], name[s.regime]
    for key, v in (("Stab", s.stability), ("StabLo", s.lo), ("StabHi", s.hi)):
        run.macro(f"{key}{M}{G}", 100 * v, digits=2)
    for key, v in (("Changed", s.n_changed), ("CorrectToWrong", s.correct_to_wrong),
                   ("WrongToCorrect", s.wrong_to_correct)):
        run.macro(f"{key}{M}{G}", v)
    if s.regime == "pressure":
        run.macro(f"ToSuggested{M}", 100 * s.to_suggested, digits=2)
    if s.regime == "all":
        run.macro(f"CleanAcc{M}", 100 * s.clean_accuracy, digits=2)
for r in REGIMES:
    for key, k in (("", "value"), ("Lo", "ci_low"), ("Hi", "ci_high")):
        run.macro(f"StabDiff{key}{name[r]}", 100 * adiff[r][k], digits=2)
    run.macro(f"StabDiffP{name[r]}", adiff[r]["p_value"], digits=2)
for key, k in (("", "value"), ("Lo", "ci_low"), ("Hi", "ci_high")):
    run.macro(f"PromptPressureGap{key}", 100 * gap[k], digits=2)
run.macro("PromptPressureGapP", gap["p_value"], digits=2)
for m in MODELS:
    M, g = mk[m], geo[(geo.model == m) & (geo.regime == "separation")].set_index("layer").loc[crit[m]]
    run.macro(f"CriticalLayer{M}", int(crit[m]))
    for key in ("Separation", "Within", "Across"):
        run.macro(f"{key}{M}", g[key.lower()], digits=2)
    worst = kinds[kinds.model == m].sort_values("stability").iloc[0]
    run.macro(f"WorstKind{M}", results.tex_escape(worst.kind), raw=True)
    run.macro(f"WorstKindStab{M}", 100 * worst.stability, digits=2)
    run.macro(f"Escapes{M}", int(kinds[kinds.model == m].escape.sum()))
    run.macro(f"EscapeClasses{M}", int(((mech.model == m) & (mech.escapes > 0)).sum()))
    for r in REGIMES:  # at the base critical layer, for both models
        rd = geo[(geo.model == m) & (geo.regime == r) & (geo.layer == CRIT)].rel_disp.iloc[0]
        run.macro(f"RelDisp{M}{name[r]}", rd, digits=2)
for key, k in (("", "value"), ("Lo", "ci_low"), ("Hi", "ci_high"), ("P", "p_value")):
    run.macro(f"CriticalMarginBase{key}", held[k], digits=2)
run.macro("CriticalLayerStability", 100 * held["stability"], digits=2)
run.macro("CriticalModalLayer", held["modal_layer"])
pc = pairs[(pairs.layer == CRIT) & (pairs.model == "base") & pairs.cka.notna()]
for key, v in (("CKAMinBase", pc.cka.min()), ("CKAMaxBase", pc.cka.max()), ("OverlapMinBase", pc.overlap.min()),
               ("OverlapMaxBase", pc.overlap.max()), ("OverlapChance", geo.chance.dropna().iloc[0]),
               ("EscapeBelow", 100 * escape_below), ("WallMinutes", wall_s / 60)):
    run.macro(key, v, digits=2)
run.macro("PredAlpha", f"{pred_alpha:g}", raw=True)
n_per_regime = var.groupby("regime").size()
for key, v in (("SubspaceK", subspace_k), ("NItems", n_items), ("NInputs", len(rows)), ("NumLayers", L1 - 1),
               ("NVariants", n_variants), ("Width", width), ("MaxRegimeRows", int(n_per_regime.max())),
               ("NSplits", n_splits), ("NBoot", n_boot), ("NBootLayer", n_boot_layer), ("NPermLayer", n_perm_layer),
               ("PredSignificant", int((pred.p < pred_alpha).sum())), ("PredTotal", len(pred))):
    run.macro(key, int(v))
run.macro("PredMaxAbsRho", float(np.nanmax(np.abs(pred.rho))) if pred.rho.notna().any() else float("nan"), digits=2)
latex.write_table("regime_stability", "llrrrrr", r"regime & model & unchanged, \% (95\% CI) & changed & c$\to$w & "
                  r"w$\to$c & to suggested, \%", regimes.stability_tex_rows(stab, REGIMES))
latex.write_table("regime_prediction", "lllrrl", r"measure & regimes & model & $n$ & Spearman $\rho$ (95\% CI) & $p$",
                  regimes.prediction_tex_rows(pred))
latex.write_table("regime_escapes", "lllrr", r"mechanism class & regime & conditions & base, \% & adapted, \%",
                  regimes.escape_tex_rows(mech))

# findings ledger entries (paper/findings.yml): value, CI, p, n
sb = stab.set_index(["model", "regime"])
findings = {f"stability_{m}_{r}": {"value": float(sb.loc[(m, r), "stability"]), "ci_low": float(sb.loc[(m, r), "lo"]),
                                   "ci_high": float(sb.loc[(m, r), "hi"]), "n": int(sb.loc[(m, r), "n_items"])}
            for m in MODELS for r in REGIMES}
findings["prompt_minus_pressure_base"] = macros.ledger_view(gap, require=regimes.FINDING_KEYS)
findings["adapter_stability_change_pressure"] = macros.ledger_view(adiff["pressure"], require=regimes.FINDING_KEYS)
findings["critical_layer_base"] = {"value": int(crit["base"]), "n": n_items}
findings["critical_layer_heldout_margin"] = macros.ledger_view(held, require=regimes.FINDING_KEYS)
run.values.update({
    "findings": findings,
    "stability": stab.to_dict("records"), "stability_by_kind": kinds.to_dict("records"),
    "mechanisms": mech.to_dict("records"), "adapter_stability_change": adiff,
    "geometry": geo.to_dict("records"), "pairs": pairs.to_dict("records"), "critical_layer": crit,
    "critical_layer_heldout": held, "separation": {m: geom[m]["separation"].tolist() for m in MODELS},
    "prediction": pred.to_dict("records"), "n_items": n_items, "n_inputs": len(rows), "num_layers": L1 - 1,
    "width": int(width), "forward_s": forward_s, "wall_s": wall_s, "geometry_s": geometry_s, "heldout_s": heldout_s,
    "torch_threads": torch.get_num_threads(), "adapter_family": up["values"]["adapter_family"],
})
print(f"wall time {wall_s:.0f}s")
print(run.write())
