# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 07 — Causal clamping: does moving the fine-tune-only latents back to base undo the output shift?
# For one adapter (`01_finetune`) and its crosscoders (`03_crosscoder`), picks one layer, takes the crosscoder's
# fine-tune-only latents S there (relative decoder norm r > 0.9, live on the training tokens), and during the
# fine-tuned model's forward pass replaces each latent's fine-tuned contribution to the residual stream by its
# base contribution:
#
# $$a_{ft}' = a_{ft} + \sum_{j\in S} z_j\,(d^{base}_j - d^{ft}_j)$$
#
# at every position but BOS (`adapterscope.interventions`). Measured on held-out in-domain rows: the fraction of
# KL(base||ft) removed, against two controls — `n_random` sets of |S| random live latents (same edit formula) and
# `n_noise` draws of Gaussian noise rescaled per token to the clamp edit's norm — with paired bootstrap CIs over
# rows and the paired clamp-vs-control effects.

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
import pandas as pd
import torch

from adapterscope import corpora, crosscoder, finetune, interventions, models, paths, plotting, results

plotting.setup()
NB = "07_clamp"
RUN_ID = params.run_key(model, corpus, layer_control, f"s{seed}")
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
up_ft = results.load("01_finetune", RUN_ID)
up_cap = results.load("02_capture", RUN_ID)
up_cc = results.load("03_crosscoder", RUN_ID)
if not (latent_set == "ft_only" or (latent_set.startswith("top_r:") and latent_set[6:].isdigit())):
    raise params.ParameterError(f"latent_set must be 'ft_only' or 'top_r:N', got {latent_set!r}")
if rows_from not in ("heldout", "neutral"):
    raise params.ParameterError(f"rows_from must be 'heldout' or 'neutral', got {rows_from!r}")
adapter_dir = paths.project_root() / up_ft["values"]["adapter_dir"]
run.add_input("adapter", adapter_dir)
run.add_input("model", models.fingerprint(model))
t_start = time.perf_counter()

# %% [markdown]
# ## The layer and its fine-tune-only latents
# `most_ft_only`: the crosscoder layer with the most live fine-tune-only latents (ties: the deeper layer);
# `peak_ratio`: the layer of the peak cross/self ratio.

# %%
per_layer = pd.DataFrame(up_cc["values"]["per_layer"])
if layer_choice.isdigit():
    layer = int(layer_choice)
    if layer not in set(per_layer.layer):
        raise params.ParameterError(f"layer_choice={layer}: 03_crosscoder trained layers {list(per_layer.layer)}")
elif layer_choice == "most_ft_only":
    layer = int(per_layer.sort_values(["n_ft_only_alive", "layer"]).iloc[-1].layer)
elif layer_choice == "peak_ratio":
    layer = int(up_cc["values"]["peak_layer"])
else:
    raise params.ParameterError(f"layer_choice must be most_ft_only, peak_ratio or a layer index, got {layer_choice!r}")
cc_dir = paths.project_root() / up_cc["values"]["crosscoders"][str(layer)]
run.add_input("crosscoder", cc_dir)
cc = crosscoder.Crosscoder.load(cc_dir, device=device)
cls = crosscoder.classify_latents(cc)

base, tok = models.load_model(model, device=device)
pm = finetune.load_adapter(base, adapter_dir, model_name=model)
cp = up_cap["provenance"]["params"]
if rows_from == "heldout":
    data = corpora.load_corpus(corpus, heldout_frac=up_ft["provenance"]["params"]["heldout_frac"], seed=seed)
    run.add_input("corpus", data.digest)
    rows = finetune.pack_documents(tok, data.heldout, seq_len)[:n_rows]
else:
    with pm.disable_adapter():
        rows = corpora.neutral_samples(pm, tok, n=cp["neutral_n"], length=cp["neutral_len"], seed=seed,
                                       device=device, cache_key=f"{model}__{models.fingerprint(model)[:12]}")[:n_rows]
fires = interventions.fire_counts(pm, cc, rows, layer, batch_size=batch_size, device=device, dtype=dtype,
                                  progress=progress)
live = fires > 0
def top_r(n):
    order = np.argsort(-np.where(live, cls["r"], -np.inf), kind="stable")
    return np.sort(order[:min(n, int(live.sum()))])


clamped_set = latent_set
if latent_set == "ft_only":
    S = np.flatnonzero((cls["labels"] == "ft_only") & live)
    if len(S) == 0 and fallback_top_r > 0:
        S, clamped_set = top_r(fallback_top_r), f"top_r:{fallback_top_r} (no live ft-only latent)"
else:
    S = top_r(int(latent_set[6:]))
r_clamped = (float(cls["r"][S].min()), float(cls["r"][S].max())) if len(S) else (math.nan, math.nan)
print(f"clamped set: {clamped_set}; r of the clamped latents in [{r_clamped[0]:.3f}, {r_clamped[1]:.3f}]")
print(f"layer {layer}: {int((cls['labels'] == 'ft_only').sum())} fine-tune-only latents, {len(S)} live on these "
      f"rows; {int(live.sum())} live latents in all; {len(rows)} rows")

# %% [markdown]
# ## Clamp and controls

# %%
if len(S) == 0:
    summary = None
    print("no live fine-tune-only latents at this layer: nothing to clamp (recorded as such)")
else:
    res = interventions.clamp_experiment(pm, cc, rows, layer, S, n_random=n_random, n_noise=n_noise,
                                         pool=live, batch_size=batch_size, device=device, dtype=dtype,
                                         seed=seed, progress=progress)
    summary = res.summary(n_boot=n_boot, seed=seed)
    print({k: summary[k] for k in ("n_rows", "n_latents", "kl_ft", "kl_clamp", "kl_random", "kl_noise")})
    for name in ("clamp", "random", "noise"):
        f = summary[f"frac_removed_{name}"]
        print(f"{name:>6}: fraction of KL removed {f['value']:+.3f} [{f['ci_low']:+.3f}, {f['ci_high']:+.3f}]")

# %% [markdown]
# ## Figure

# %%
if summary is not None:
    names = ["clamp", "random", "noise"]
    kind = "FT-only" if clamped_set == "ft_only" else "top-r"
    labels = [f"clamp {kind}\n|S|={len(S)}", f"random latents\n({n_random} draws)", f"matched noise\n({n_noise} draws)"]
    vals = [summary[f"frac_removed_{n}"]["value"] for n in names]
    err = np.array([[v - summary[f"frac_removed_{n}"]["ci_low"], summary[f"frac_removed_{n}"]["ci_high"] - v]
                    for n, v in zip(names, vals)]).T
    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    ax.bar(labels, vals, yerr=err, capsize=3, color=["C3", "C0", "0.6"])
    for i, n in enumerate(names[1:], start=1):
        draws = summary[f"frac_removed_{n}_draws"]
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
                   "clamped_set": clamped_set, "r_clamped": list(r_clamped), "rows_from": rows_from, "n_rows": int(len(rows)),
                   "n_ft_only": int((cls["labels"] == "ft_only").sum()), "n_clamped": int(len(S)),
                   "n_live": int(live.sum()), "clamp": summary, "wall_s": time.perf_counter() - t_start})
run.macro("ClampLayer", layer)
run.macro("NClamped", int(len(S)))
if summary is not None:
    for name in ("clamp", "random", "noise"):
        run.macro(f"FracRemoved{name.capitalize()}", summary[f"frac_removed_{name}"]["value"])
print(run.write())
