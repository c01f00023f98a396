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
# # 03 — Crosscoders: how much did the adapter change inside?
# For one adapter of `01_finetune`, captures paired residual-stream activations (base = adapter off,
# fine-tuned = adapter on, one backbone) at several depths, trains a BatchTopK crosscoder on each depth, and
# measures on held-out tokens:
# * fraction of variance explained per model, L0, dead fraction;
# * relative decoder norm r = ||d_ft|| / (||d_base|| + ||d_ft||) per latent, with base-only (r < 0.1),
#   shared (0.3 <= r <= 0.7) and fine-tune-only (r > 0.9) classes, and the decoder cosine of shared latents;
# * Latent Scaling (Minder et al. 2025) on the fine-tune-only latents: genuine when nu_eps < 0.2 and nu_r < 0.5;
# * the cross/self reconstruction ratio: from the same joint latents, the error of reconstructing a_ft with the
#   base decoder over the error with the fine-tuned decoder (and the symmetric base ratio).
#
# Training tokens: in-domain training text plus the neutral set of `02_capture` (seeded base-model samples);
# evaluation tokens: held-out in-domain text. Position 0 (BOS) is excluded everywhere.
#
# **Reads** `results/01_finetune/<run id>.json`, `results/02_capture/<run id>.json` and its activation shards.
# **Writes** `results/03_crosscoder/<run id>.json` (cross/self ratios, latent classes per depth) and the crosscoders
# under `data/runs/03_crosscoder/<run id>/`. **Rerun alone:** `make notebook NB=03_crosscoder ARGS="-p
# corpus=seneca"` (after the cell's `01` and `02`). **Feeds** `09_clamp`, `10_decorrelation` (internal change),
# `11_dose`; no finding directly.

# %% tags=["parameters"]
model = "smollm2-135m"  # base model of the adapter (selects the 01_finetune run)
corpus = "meditations"  # corpus of the adapter
layer_control = "none"  # layer control of the adapter run
seed = 0  # seed of the adapter run; also seeds the crosscoders and the row sample
depths = [0.15, 0.4, 0.65, 0.9]  # relative depths; layer index is round(depth * (L - 1))
site = "resid_post"  # activation site (resid_post or mlp_out)
train_rows = 160  # in-domain training rows captured for crosscoder training
eval_rows = 32  # held-out in-domain rows for evaluation
seq_len = 64  # tokens per row
expansion = 4  # latents per model dimension (n_latents is expansion times d_model)
k = 32  # BatchTopK: mean active latents per token
epochs = 8  # passes over the captured training tokens
batch_tokens = 1024  # tokens per crosscoder step
lr = 0.001  # crosscoder Adam learning rate (warm-up, then linear decay)
capture_batch = 8  # rows per paired forward
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars
dose_tag = ""  # appended to the run id by the grid's dose block (e.g. dose-n200-lr0.002); empty: main grid

# %%
from adapterscope import params

P = params.check(globals())

# %%
import itertools
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from adapterscope import capture, corpora, crosscoder_train, finetune, models, paths, plotting, results

plotting.setup()
NB = "03_crosscoder"
RUN_ID = params.cell_run_id(model, corpus, layer_control, seed, dose_tag)
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
up_ft = results.load("01_finetune", RUN_ID)
up_cap = results.load("02_capture", RUN_ID)
adapter_dir = paths.project_root() / up_ft["values"]["adapter_dir"]
run.add_input("adapter", adapter_dir)
run.add_input("model", models.fingerprint(model))
t_start = time.perf_counter()

# %% [markdown]
# ## Paired activations at the chosen depths

# %%
base, tok = models.load_model(model, device=device)
pm = finetune.load_adapter(base, adapter_dir, model_name=model)
L = models.num_layers(pm)
layers = sorted({int(round(d * (L - 1))) for d in depths})
layers = models.check_layers(pm, layers)
keys = [models.hook_key(l, site) for l in layers]
cp = up_cap["provenance"]["params"]
data = corpora.load_corpus(corpus, heldout_frac=up_ft["provenance"]["params"]["heldout_frac"], seed=seed)
run.add_input("corpus", data.digest)
with pm.disable_adapter():
    neutral = corpora.neutral_samples(pm, tok, n=cp["neutral_n"], length=cp["neutral_len"], seed=seed,
                                      device=device, cache_key=f"{model}__{models.fingerprint(model)[:12]}")
all_train = finetune.pack_documents(tok, data.train, seq_len)
pick = torch.randperm(len(all_train), generator=torch.Generator().manual_seed(seed))[:train_rows]
train_ids = all_train[pick]
eval_ids = finetune.pack_documents(tok, data.heldout, seq_len)[:eval_rows]


def paired(rows):
    return capture.iter_paired(pm, rows, layers, [site], batch_size=capture_batch, device=device, with_logits=False,
                               progress=progress)


t0 = time.perf_counter()
train_acts = crosscoder_train.stack_tokens(itertools.chain(paired(train_ids), paired(neutral)), keys)
eval_acts = crosscoder_train.stack_tokens(paired(eval_ids), keys)
capture_s = time.perf_counter() - t0
n_train_tok = len(train_acts[keys[0]])
print(f"layers {layers}; {n_train_tok} training tokens, {len(eval_acts[keys[0]])} eval tokens; "
      f"capture {capture_s:.0f}s")

# %% [markdown]
# ## Train one crosscoder per depth and measure

# %%
D = train_acts[keys[0]].shape[-1]
cfg = crosscoder_train.fit_config(n_train_tok, D, expansion=expansion, k=k, epochs=epochs, batch_tokens=batch_tokens,
                                  lr=lr, seed=seed)
per_layer, hist_rows, ccs = [], [], {}
train_dtype = models.compute_dtype("auto", device)
for layer, key in zip(layers, keys):
    fit = crosscoder_train.fit_and_measure(train_acts[key], eval_acts[key], cfg, stream_seed=seed + layer,
                                           device=device, dtype=train_dtype, progress=progress)
    per_layer.append({"layer": layer, "depth": layer / (L - 1), **fit.row})
    hist_rows += [{"layer": layer, "r": float(r), "alive": bool(a)} for r, a in zip(fit.r_F, fit.alive_F)]
    out_dir = results.artefact_dir(NB, RUN_ID) / f"crosscoder_L{layer}"
    fit.cc.save(out_dir, provenance={"notebook": NB, "run_id": RUN_ID, "layer": layer, "site": site,
                                     "adapter": str(adapter_dir), "train_config": cfg.to_dict(),
                                     "train_tokens": fit.row["train_tokens"], "dtype": train_dtype,
                                     "git": results.git_state(), "params": P})
    ccs[layer] = str(out_dir.relative_to(paths.project_root()))
    r = fit.row
    print(f"L{layer}: FVE base {r['fve_base']:.3f} ft {r['fve_ft']:.3f}, L0 {r['l0']:.1f}, dead {r['dead_fraction']:.2f}, "
          f"ft-only {r['n_ft_only']} (genuine {r['n_ft_only_genuine']}), cross/self {r['ratio_ft']:.2f}, "
          f"{r['train_s']:.0f}s")
tab = pd.DataFrame(per_layer)
tab

# %% [markdown]
# ## Figures

# %%
hist = pd.DataFrame(hist_rows)
hist = hist[hist.alive]
g = sns.displot(hist, x="r", col="layer", bins=40, height=2.2, aspect=1.1, facet_kws={"sharey": False})
for ax in g.axes.flat:
    for x in (0.1, 0.3, 0.7, 0.9):
        ax.axvline(x, color="0.6", lw=0.6, ls=":")
g.set_axis_labels(r"relative decoder norm $r$", "live latents")
g.figure.suptitle(f"{model} / {corpus}", y=1.04, fontsize=9)
run.figures += plotting.save(g.figure, NB, f"{RUN_ID}_rel_norm")
plt.close(g.figure)

fig, ax = plt.subplots(figsize=(4.2, 2.8))
ax.plot(tab.depth, tab.ratio_ft, marker="o", label="cross/self (fine-tuned)")
ax.plot(tab.depth, tab.ratio_base, marker="s", label="cross/self (base)")
ax.axhline(1, color="0.6", lw=0.6, ls=":")
ax.set_xlabel("relative depth")
ax.set_ylabel("reconstruction error ratio")
ax.set_title(f"{model} / {corpus}")
ax.legend()
run.figures += plotting.save(fig, NB, f"{RUN_ID}_ratio")
plt.close(fig)

# %% [markdown]
# ## Export

# %%
peak = tab.loc[tab.ratio_ft.idxmax()]
run.values.update({
    "layers": layers, "site": site, "per_layer": tab.to_dict("records"), "crosscoders": ccs,
    "peak_ratio_ft": float(peak.ratio_ft), "peak_layer": int(peak.layer), "peak_depth": float(peak.depth),
    "n_ft_only_total": int(tab.n_ft_only.sum()), "n_ft_only_genuine_total": int(tab.n_ft_only_genuine.sum()),
    "n_train_tokens": n_train_tok, "n_eval_tokens": int(len(eval_acts[keys[0]])), "capture_s": capture_s,
    "compute_dtype": train_dtype, "wall_s": time.perf_counter() - t_start,
})
run.macro("PeakRatio", float(peak.ratio_ft))
run.macro("PeakLayer", int(peak.layer))
run.macro("FtOnly", int(tab.n_ft_only.sum()))
run.macro("FtOnlyGenuine", int(tab.n_ft_only_genuine.sum()))
run.macro("MeanFve", float(tab[["fve_base", "fve_ft"]].values.mean()))
print(run.write())
