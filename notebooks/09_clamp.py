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
# # 09 — Causal clamping: does moving the fine-tune-only latents back to base undo the output shift?
# For one adapter (`01_finetune`) and its crosscoders (`03_crosscoder`), picks one layer, takes the crosscoder's
# fine-tune-only latents S there (relative decoder norm r > 0.9, live on the measured rows; where none is live,
# the top-r set: the `fallback_top_r` live latents of largest r, and the results say so), and during the
# fine-tuned model's forward pass replaces each latent's fine-tuned contribution to the residual stream by its
# base contribution:
#
# $$a_{ft}' = a_{ft} + \sum_{j\in S} z_j\,(d^{base}_j - d^{ft}_j)$$
#
# at every position but BOS (`adapterscope.interventions`). Measured on held-out in-domain rows: the fraction of
# KL(base||ft) removed, against two controls — `n_random` sets of |S| random live latents (same edit formula),
# matched to S in firing frequency (each member of S partnered with one of the live latents nearest it in log
# firing count) and each draw's edit rescaled by one factor so that its mean per-token norm equals the clamped set's (both norms
# are reported), and `n_noise` draws of Gaussian noise rescaled per token to the clamp edit's norm — with paired
# bootstrap CIs over rows and the paired clamp-vs-control effects. Since the clamped edit is the crosscoder's own
# low-rank model of the displacement, it is also set against linear baselines at the same edit norm (the
# displacement projected on its own top-|S| principal directions, and on a random |S|-dimensional subspace) and
# against the ceiling: the full patch of the layer's activation back to base.
#
# **Reads** `results/01_finetune`, `02_capture` and `03_crosscoder` of the same cell (adapter, activations,
# crosscoder). **Writes** `results/09_clamp/<run id>.json` (KL removed by clamping vs random-latent and noise
# controls, the linear baselines and the ceiling, edit norms). **Rerun alone:** `make notebook NB=09_clamp ARGS="-p corpus=seneca"` (after the cell's
# `01`-`03`). **Feeds** `10_decorrelation` (the clamping units of its clamp findings); no finding directly.

# %% tags=["parameters"]
model = "smollm2-135m"  # base model of the adapter (selects the upstream runs)
corpus = "meditations"  # corpus of the adapter
layer_control = "none"  # layer control of the adapter run
seed = 0  # seed of the adapter run; also seeds the random-latent and noise controls
layer_choice = "most_ft_only"  # most_ft_only | peak_ratio | a layer index that 03_crosscoder trained, as text ("21")
latent_set = "ft_only"  # ft_only (r > 0.9) | top_r:N (the N live latents of largest r; for small crosscoders)
fallback_top_r = 32  # with latent_set ft_only and no live ft-only latent: clamp the N live latents of largest r (0: none)
rows_from = "heldout"  # heldout | neutral: the rows on which KL is measured
n_rows = 32  # rows of seq_len tokens
seq_len = 64  # tokens per held-out row (must match 03_crosscoder)
n_random = 5  # random-latent control draws
n_noise = 5  # matched-noise control draws
baselines = True  # also the ceiling (full patch a_ft -> a_base) and the rank-|S| linear baselines (PCA, random)
pca_rows = 32  # training rows whose displacement gives the PCA directions (apart from the measured rows)
batch_size = 8  # rows per forward pass
n_boot = 2000  # bootstrap resamples for the CIs
dtype = "float32"  # forward precision (autocast)
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars

# %%
from adapterscope import params

P = params.check(globals())

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np

from adapterscope import corpora, crosscoder, finetune, interventions, models, paths, plotting, results

plotting.setup()
NB = "09_clamp"
RUN_ID = params.run_key(model, corpus, layer_control, f"s{seed}")
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
up_ft = results.load("01_finetune", RUN_ID)
up_cap = results.load("02_capture", RUN_ID)
up_cc = results.load("03_crosscoder", RUN_ID)
interventions.parse_latent_set(latent_set)
clamp_cfg = interventions.ClampConfig(n_random=n_random, n_noise=n_noise, ceiling=baselines, seed=seed,
                                      batch_size=batch_size, device=device, dtype=dtype, progress=progress)
if rows_from not in ("heldout", "neutral"):
    raise params.ParameterError(f"rows_from must be 'heldout' or 'neutral', got {rows_from!r}")
adapter_dir = paths.project_root() / up_ft["values"]["adapter_dir"]
run.add_input("adapter", adapter_dir)
run.add_input("model", models.fingerprint(model))
t_start = time.perf_counter()

# %% [markdown]
# ## The layer and its fine-tune-only latents
# `most_ft_only`: the crosscoder layer with the most live fine-tune-only latents (ties: the deeper layer);
# `peak_ratio`: the layer of the peak cross/self ratio (`interventions.choose_layer`). The clamped set and its name
# in words come from `interventions.choose_latents`: `clamped_set` is `ft_only`, `top_r` (requested, or the
# fallback when no fine-tune-only latent is live) or `none`.

# %%
layer = interventions.choose_layer(up_cc["values"]["per_layer"], layer_choice, up_cc["values"]["peak_layer"])
cc_dir = paths.project_root() / up_cc["values"]["crosscoders"][str(layer)]
run.add_input("crosscoder", cc_dir)
cc = crosscoder.Crosscoder.load(cc_dir, device=device)
cls = crosscoder.classify_latents(cc)

base, tok = models.load_model(model, device=device)
pm = finetune.load_adapter(base, adapter_dir, model_name=model)
cp = up_cap["provenance"]["params"]
data = corpora.load_corpus(corpus, heldout_frac=up_ft["provenance"]["params"]["heldout_frac"], seed=seed)
run.add_input("corpus", data.digest)
if rows_from == "heldout":
    rows = finetune.pack_documents(tok, data.heldout, seq_len)[:n_rows]
else:
    with pm.disable_adapter():
        rows = corpora.neutral_samples(pm, tok, n=cp["neutral_n"], length=cp["neutral_len"], seed=seed,
                                       device=device, cache_key=f"{model}__{models.fingerprint(model)[:12]}")[:n_rows]
fires = interventions.fire_counts(pm, cc, rows, layer, batch_size=batch_size, device=device, dtype=dtype,
                                  progress=progress)
live = fires > 0
chosen = interventions.choose_latents(cls["labels"], cls["r"], live, latent_set, fallback_top_r)
S = chosen.latents
r_clamped = (float(cls["r"][S].min()), float(cls["r"][S].max())) if len(S) else (math.nan, math.nan)
print(f"clamped set ({chosen.kind}): {chosen.label}; r in [{r_clamped[0]:.3f}, {r_clamped[1]:.3f}]")
print(f"layer {layer}: {int((cls['labels'] == 'ft_only').sum())} fine-tune-only latents; {int(live.sum())} live "
      f"latents in all; {len(rows)} rows")

# %% [markdown]
# ## Clamp, controls, linear baselines and the ceiling
# At the same mean per-token edit norm as the clamp: the displacement back to base projected on its own top-|S|
# principal directions (fitted on `pca_rows` training rows, not the measured rows) and on a random |S|-dimensional
# subspace. The ceiling patches the whole activation back to base at the layer (unscaled): what any edit there can
# remove while the adapter still acts in the layers above.

# %%
subspaces = {}
if baselines and len(S):
    delta = interventions.displacement_rows(pm, finetune.pack_documents(tok, data.train, seq_len)[:pca_rows], layer,
                                            batch_size=batch_size, device=device, dtype=dtype)
    subspaces = {"pca": interventions.pca_basis(delta, min(len(S), *delta.shape)),
                 "subspace": interventions.random_basis(delta.shape[1], len(S), seed)}
if len(S) == 0:
    summary = None
    print(f"{chosen.label} (recorded as such)")
else:
    res = interventions.clamp_experiment(pm, cc, rows, layer, S, clamp_cfg, fire_counts_F=fires, subspaces=subspaces)
    summary = res.summary(n_boot=n_boot, seed=seed)
    print({k: summary[k] for k in ("n_rows", "n_latents", "kl_ft", "kl_clamp", "kl_random", "kl_noise",
                                   "edit_norm_clamp", "edit_norm_random", "edit_norm_random_natural")})
    for name in ("clamp", "random", "noise", "pca", "subspace", "ceiling"):
        f = summary.get(f"frac_removed_{name}")
        if f:
            print(f"{name:>8}: fraction of KL removed {f['value']:+.3f} [{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]")

# %% [markdown]
# ## Figure

# %%
if summary is not None:
    kind = "FT-only" if chosen.kind == "ft_only" else "top-r"
    bars = {"clamp": (f"clamp {kind}\n|S|={len(S)}", "C3"),
            "random": (f"random latents\n({n_random} draws)", "C0"), "noise": (f"matched noise\n({n_noise} draws)", "0.6"),
            "pca": (f"PCA of $\\Delta a$\nrank {len(S)}", "C2"), "subspace": (f"random\nsubspace", "C1"),
            "ceiling": ("ceiling\n(full patch)", "0.3")}
    names = [n for n in bars if f"frac_removed_{n}" in summary]
    vals = [summary[f"frac_removed_{n}"]["value"] for n in names]
    err = np.array([[v - summary[f"frac_removed_{n}"]["ci_low"], summary[f"frac_removed_{n}"]["ci_high"] - v]
                    for n, v in zip(names, vals)]).T
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 1.2, 2.8))
    ax.bar([bars[n][0] for n in names], vals, yerr=err, capsize=3, color=[bars[n][1] for n in names])
    ax.tick_params(axis="x", labelsize=6)
    for i, n in enumerate(names):
        draws = summary.get(f"frac_removed_{n}_draws", [])
        if len(draws) > 1:
            ax.scatter([i] * len(draws), draws, color="k", s=6, zorder=3)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylabel("fraction of KL(base||ft) removed")
    ax.set_title(f"{model} / {corpus}, layer {layer}")
    run.figures += plotting.save(fig, NB, f"{RUN_ID}_clamp")
    plt.close(fig)

# %% [markdown]
# ## Export

# %%
run.values.update({"layer": layer, "layer_choice": layer_choice, "latent_set": latent_set,
                   "clamped_set": chosen.kind, "clamped_set_label": chosen.label, "clamped_set_fallback": chosen.fallback,
                   "r_clamped": list(r_clamped), "rows_from": rows_from, "n_rows": int(len(rows)),
                   "n_ft_only": int((cls["labels"] == "ft_only").sum()), "n_clamped": int(len(S)),
                   "n_live": int(live.sum()), "clamp": summary, "wall_s": time.perf_counter() - t_start})
run.macro("ClampLayer", layer)
run.macro("NClamped", int(len(S)))
run.macro("ClampedSetLabel", results.tex_escape(chosen.label), raw=True)
if summary is not None:
    for name in ("clamp", "random", "noise", "pca", "subspace", "ceiling"):
        if f"frac_removed_{name}" in summary:
            run.macro(f"FracRemoved{name.capitalize()}", summary[f"frac_removed_{name}"]["value"])
    run.macro("EditNormClamp", summary["edit_norm_clamp"])
    run.macro("EditNormRandom", summary["edit_norm_random"])
    run.macro("EditNormRandomNatural", summary["edit_norm_random_natural"])
print(run.write())
