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
# # 02 — Paired capture and output divergence
# Loads ONE backbone with the adapter from `01_finetune`, and for every batch runs it twice through nnsight:
# adapter off (exactly the base model) and adapter on. From the paired stream it measures
# * output divergence on a **neutral set** (seeded samples from the base model, so the mean next-token
#   KL(base||ft) estimates divergence under the base distribution) and on **held-out in-domain text**:
#   KL, top-1 agreement, perplexity of both models;
# * the per-layer relative activation change ||a_ft - a_base|| / ||a_base|| at each site;
# * exact linear CKA between base and fine-tuned residual streams at every captured layer, biased and debiased,
#   streamed over all tokens of both sets (BOS excluded), with a delete-one-block jackknife CI; and its trimmed
#   twin without the massive-activation tokens (`outliers.TrimmedCKA`), which otherwise decide the reading;
# * construction without a dictionary: per residual layer, the share of ||a_ft - a_base||^2 outside the base
#   stream's principal subspace holding 90% / 99% of its variance, both without the massive-activation tokens
#   (`intruders.OutsideShare`), and the adapter's
#   intruder dimensions (`intruders.adapter_intruders`: new directions among the adapted weights' strongest);
# * what changed, shown (`adapterscope.explain`, as in the audit): the positions of largest KL with their context
#   and both models' top next tokens, the next tokens the adapter promotes and suppresses over every position,
#   and the activation-difference lens at every residual layer, over the tokens that are not massive activations
#   (read by `14_explanations`).
#
# Optionally writes the paired activations as safetensors shards for later notebooks.
#
# **Reads** `results/01_finetune/<run id>.json` and its adapter. **Writes** `results/02_capture/<run id>.json`
# (output divergence, per-layer change and CKA) a figure in `figures/02_capture/`, and activation shards under
# `data/runs/02_capture/<run id>/`. **Rerun alone:** `make notebook NB=02_capture ARGS="-p corpus=seneca"` (after
# the same cell's `01_finetune`). **Feeds** `03_crosscoder`, `09_clamp`, `04_cka`, `08_divergence`,
# `10_decorrelation`; no finding directly.

# %% tags=["parameters"]
model = "smollm2-135m"  # base model of the adapter (must match the 01_finetune run)
corpus = "meditations"  # corpus of the adapter (selects the 01_finetune run)
layer_control = "none"  # layer control of the adapter run
seed = 0  # seed of the adapter run; also seeds the neutral samples
layers = []  # layers to capture; empty means every layer
sites = ["resid_post", "mlp_out"]  # resid_post (decoder layer output) and/or mlp_out
neutral_n = 32  # neutral sequences sampled from the base model
neutral_len = 64  # tokens per neutral sequence
heldout_rows = 32  # at most this many held-out in-domain rows
seq_len = 64  # tokens per held-out row
batch_size = 8  # rows per paired forward
dtype = "float32"  # capture precision (autocast); float32 for exact base activations
heldout_frac = 0.1  # must match the 01_finetune split
write_shards = False  # also write paired activations as safetensors shards
cka_blocks = 5  # token blocks (whole batches) for the jackknife CI of per-layer CKA
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars
dose_tag = ""  # appended to the run id by the grid's dose block (e.g. dose-n200-lr0.002); empty: main grid

# %%
from adapterscope import params

P = params.check(globals())

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from adapterscope import (capture, corpora, divergence, explain, finetune, intruders, models, outliers, paths,
                          plotting, results, stats)

plotting.setup()
NB = "02_capture"
RUN_ID = params.cell_run_id(model, corpus, layer_control, seed, dose_tag)
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
upstream = results.load("01_finetune", RUN_ID)
adapter_dir = paths.project_root() / upstream["values"]["adapter_dir"]
run.add_input("adapter", adapter_dir)
run.add_input("model", models.fingerprint(model))

# %%
base, tok = models.load_model(model, device=device)
pm = finetune.load_adapter(base, adapter_dir, model_name=model)
L = models.num_layers(pm)
layer_list = models.check_layers(pm, layers or list(range(L)))
data = corpora.load_corpus(corpus, heldout_frac=heldout_frac, seed=seed)
run.add_input("corpus", data.digest)
with pm.disable_adapter():
    neutral = corpora.neutral_samples(pm, tok, n=neutral_n, length=neutral_len, seed=seed, device=device,
                                      cache_key=f"{model}__{models.fingerprint(model)[:12]}")
held = finetune.pack_documents(tok, data.heldout, seq_len)[:heldout_rows]
sets = {"neutral": neutral, "heldout": held}
print({k: tuple(v.shape) for k, v in sets.items()})

# %% [markdown]
# ## The paired stream

# %%
div = {}
change = {}
writer = None
t0 = time.perf_counter()
n_tok = 0
resid_keys = [models.hook_key(l, "resid_post") for l in layer_list] if "resid_post" in sites else []
ckas = {k: outliers.TrimmedCKA(n_blocks=cka_blocks) for k in resid_keys}
outside = {}
hot = explain.HotspotAccumulator()
delta_sums, delta_counts = {}, {}
for name, rows in sets.items():
    acc, act = divergence.DivergenceAccumulator(), divergence.ActivationChange()
    if write_shards:
        keys = [models.hook_key(l, s) for l in layer_list for s in sites]
        writer = capture.ShardWriter(results.artefact_dir(NB, RUN_ID) / f"shards_{name}", keys,
                                     meta={"model": model, "adapter": str(adapter_dir), "set": name})
    seen = 0
    for b in capture.iter_paired(pm, rows, layer_list, sites, batch_size=batch_size, device=device, dtype=dtype,
                                 progress=progress):
        acc.update(b.logits_base, b.logits_ft, b.input_ids)
        hot.update(b.logits_base, b.logits_ft, b.input_ids, name, seen)
        seen += len(b.input_ids)
        for k in b.base:
            act.update(k, b.base[k], b.ft[k])
        for k in resid_keys:
            pair = b.tokens(k)  # (N, 2, D), BOS dropped
            ckas[k].update(pair[:, 0], pair[:, 1])
            keep = ~outliers.massive_mask(pair[:, 0], pair[:, 1])  # the base's subspace, not its attention sinks
            layer = int(k.split(".")[1])  # the lens reads the mean difference over the same kept tokens
            d = (pair[keep, 1] - pair[keep, 0]).double().sum(0)
            delta_sums[layer] = delta_sums[layer] + d if layer in delta_sums else d
            delta_counts[layer] = delta_counts.get(layer, 0) + int(keep.sum())
            outside.setdefault(k, intruders.OutsideShare(pair.shape[-1])).update(pair[keep, 0],
                                                                                 pair[keep, 1] - pair[keep, 0])
        if writer:
            writer.add(b)
        n_tok += b.input_ids.numel()
    if writer:
        writer.close()
    r = acc.result()
    kl_ci = stats.mean_ci(acc.row_kl, 2000, seed, constant_point=True, nan_policy="propagate")  # CI over rows
    r["kl_ci95"] = (kl_ci.ci_low, kl_ci.ci_high)
    div[name] = r
    change[name] = act.result()
capture_s = time.perf_counter() - t0
cka_layers = {}
for k, acc in ckas.items():
    jb, jd, t = acc.all.jackknife(debiased=False), acc.all.jackknife(debiased=True), acc.result(debiased=True)
    cka_layers[k] = {"cka": jb["value"], "cka_se": jb["se"], "cka_debiased": jd["value"],
                     "cka_debiased_se": jd["se"], "n_tokens": acc.n,
                     "cka_trimmed_debiased": t["cka_trimmed"], "cka_trimmed_debiased_se": t["cka_trimmed_se"],
                     "n_massive": t["n_massive"], "massive_share": t["massive_share"],
                     "outside_share": outside[k].result()}
explained = explain.explanations(pm, tok, hot, delta_sums, delta_counts, sorted(delta_sums))
print("promoted next tokens:", explain.top_tokens_line(explained["promoted"]))
t0 = time.perf_counter()
intr_rows = intruders.adapter_intruders(pm)
intr = {**intruders.summary(intr_rows), "modules": intr_rows, "seconds": time.perf_counter() - t0}
print(f"intruder dimensions: {intr['n_intruders']} in {intr['n_modules']} modules ({intr['seconds']:.0f}s); "
      "outside share (99%) by layer:",
      [round(v["outside_share"]["0.99"], 3) for v in cka_layers.values()])
pd.DataFrame(div).T

# %% [markdown]
# ## Per-layer activation change

# %%
recs = [{"set": s, "layer": int(k.split(".")[1]), "site": k.split("hook_")[1], "rel_change": v}
        for s, d in change.items() for k, v in d.items()]
df = pd.DataFrame(recs)
fig, ax = plt.subplots(figsize=(4.8, 3.0))
sns.lineplot(df, x="layer", y="rel_change", hue="site", style="set", marker="o", ax=ax)
ax.set_xlabel("layer")
ax.set_ylabel(r"$\|a_{ft}-a_{base}\| / \|a_{base}\|$")
ax.set_title(f"{model} / {corpus}")
run.figures += plotting.save(fig, NB, f"{RUN_ID}_layer_change")
plt.close(fig)

# %% [markdown]
# ## Export

# %%
run.values.update({"divergence": div, "layer_change": change, "cka": cka_layers, "intruders": intr, "explain": explained,
                   "layers": layer_list, "num_layers": L,
                   "capture_s": capture_s, "paired_tokens_per_s": n_tok / capture_s})
for s in sets:
    run.macro(f"{s}Kl", div[s]["kl"])
    run.macro(f"{s}TopOne", 100 * div[s]["top1_agreement"])
    run.macro(f"{s}PplBase", div[s]["ppl_base"])
    run.macro(f"{s}PplFt", div[s]["ppl_ft"])
print(run.write())
