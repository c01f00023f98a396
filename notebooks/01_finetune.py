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
# # 01 — LoRA fine-tune
# One LoRA fine-tune of one model on one corpus, with the seed study's protocol by default (rank 16,
# alpha 32, attention q/k/v/o, 50 steps, lr 2e-4). `layer_control="equal_step"` is the depth-profile
# control of Billa (2026): every layer's update is rescaled to the same ||dW||/||W|| after each step.
#
# **Reads** the base model (`data/cache/models/`, converted once by `make models`) and one corpus
# (`adapterscope.corpora`). **Writes** `results/01_finetune/<model>__<corpus>__<layer_control>__s<seed>.json`
# (losses, update norms per layer, provenance), its macros in `paper/generated/01_finetune/`, the loss curve
# `figures/01_finetune/<run id>_loss.{pdf,png}`, and the peft adapter directory (+ `meta.json`) under
# `data/runs/01_finetune/<run id>/`. **Rerun alone:** `make notebook NB=01_finetune ARGS="-p corpus=seneca -p
# steps=10"`. **Feeds** `02_capture`, `03_crosscoder`, `09_clamp` (the adapter), `04_cka` (update norms, equal-step
# control), `11_dose`; no finding directly.

# %% tags=["parameters"]
model = "smollm2-135m"  # embedded name (smollm2-135m, gemma3-270m), a local HF directory, or a hub id
corpus = "meditations"  # meditations | seneca | dtc-ads | instructions | file:PATH | url:URL | hf:NAME
rank = 16  # LoRA rank
alpha = 32.0  # LoRA alpha; the update is scaled by alpha / rank
targets = ["q_proj", "k_proj", "v_proj", "o_proj"]  # adapted projections (attention only)
steps = 50  # optimizer steps
lr = 0.0002  # AdamW learning rate (constant)
batch_size = 4  # sequences per step
seq_len = 64  # tokens per packed sequence
seed = 0  # seeds LoRA init, batch order and the generated corpora
dtype = "auto"  # autocast dtype of the matmuls: auto (bfloat16 where measured fast, else float32), bfloat16, float32
layer_control = "none"  # none | equal_step (Billa 2026 control)
heldout_frac = 0.1  # share of documents held out (hash split)
eval_rows = 32  # held-out rows scored before/after for the held-out loss
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars
dose_tag = ""  # appended to the run id by the grid's dose block (e.g. dose-n200-lr0.002); empty: main grid

# %%
from adapterscope import params

P = params.check(globals())  # a typo'd or mistyped papermill parameter stops the run here

# %%
import time

import matplotlib.pyplot as plt
import torch

from adapterscope import corpora, finetune, models, paths, plotting, results

plotting.setup()
NB = "01_finetune"
RUN_ID = params.cell_run_id(model, corpus, layer_control, seed, dose_tag)
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
torch.manual_seed(seed)

# %% [markdown]
# ## Data and model

# %%
cfg = finetune.FinetuneConfig(rank=rank, alpha=alpha, targets=tuple(targets), steps=steps, lr=lr,
                              batch_size=batch_size, seq_len=seq_len, seed=seed, dtype=dtype,
                              layer_control=layer_control)
data = corpora.load_corpus(corpus, heldout_frac=heldout_frac, seed=seed)
run.add_input("corpus", data.digest)
base, tok = models.load_model(model, device=device)
run.add_input("model", models.fingerprint(model))
train_rows = finetune.pack_documents(tok, data.train, seq_len)
held_rows = finetune.pack_documents(tok, data.heldout, seq_len)[:eval_rows]
print(f"{corpus}: {len(data.train)} train / {len(data.heldout)} held-out documents -> "
      f"{len(train_rows)} train rows of {seq_len} tokens")
loss_before = finetune.mean_loss(base, held_rows, device=device)

# %% [markdown]
# ## Train

# %%
peft_model = finetune.add_lora(base, cfg)
t0 = time.perf_counter()
res = finetune.train(peft_model, train_rows, cfg, device=device, progress=progress)
train_s = time.perf_counter() - t0
loss_after = finetune.mean_loss(peft_model, held_rows, device=device)
print(f"final train loss {res.losses[-1]:.3f}; held-out loss {loss_before:.3f} -> {loss_after:.3f}; "
      f"{res.tokens_seen / train_s:.0f} tokens/s")

# %%
adapter_dir = results.artefact_dir(NB, RUN_ID) / "adapter"
finetune.save_adapter(peft_model, adapter_dir, {
    "model": model, "corpus": corpus, "corpus_digest": data.digest, "config": finetune.config_dict(cfg),
    "notebook": NB, "run_id": RUN_ID, "final_loss": res.losses[-1]})
run.add_input("adapter_written", adapter_dir)

# %% [markdown]
# ## Loss curve

# %%
fig, ax = plt.subplots(figsize=(4.2, 2.8))
ax.plot(range(1, len(res.losses) + 1), res.losses, lw=1.5)
ax.set_xlabel("optimizer step")
ax.set_ylabel("training loss (nats/token)")
ax.set_title(f"{model} on {corpus} ({layer_control})")
run.figures += plotting.save(fig, NB, f"{RUN_ID}_loss")
plt.close(fig)

# %% [markdown]
# ## Export

# %%
ratios = [res.layer_ratios[k] for k in sorted(res.layer_ratios)]
run.values.update({
    "adapter_dir": str(adapter_dir.relative_to(paths.project_root())),
    "losses": res.losses, "final_loss": res.losses[-1], "heldout_loss_base": loss_before,
    "heldout_loss_ft": loss_after, "tokens_seen": res.tokens_seen, "train_s": train_s,
    "tokens_per_s": res.tokens_seen / train_s, "compute_dtype": res.dtype, "mean_step_s": sum(res.step_s) / len(res.step_s),
    "layer_update_ratio": ratios, "n_train_docs": len(data.train), "n_heldout_docs": len(data.heldout),
    "n_train_rows": len(train_rows), "corpus_source": data.source, "num_layers": models.num_layers(peft_model),
})
run.macro("FinalLoss", res.losses[-1])
run.macro("HeldoutLossBase", loss_before)
run.macro("HeldoutLossFt", loss_after)
run.macro("TokensPerSecond", round(res.tokens_seen / train_s))
print(run.write())
