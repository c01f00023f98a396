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
# # 05a — An embedded VLM and a VQA adapter
# The embedded vision-language model of `adapterscope.vlm`: the ImageNet EfficientNet-Lite0 (frozen, from
# its wheel) gives 16 visual tokens per 128 x 128 image (with `encoder_features="multiscale"` each token is the
# last 4 x 4 map plus the 8 x 8 map of the last 112-channel block folded into it: the last ImageNet map alone
# keeps little colour, see `benchmarks/encoder_probe.py`), a trained projector maps them into the embedding space
# of SmolLM2-135M-Instruct (frozen). The synthetic world of `adapterscope.scenes` supplies questions whose
# answers are correct by construction (colour, shape, count, position, presence; closed candidate sets).
#
# 1. **Projector.** `projector="reference"` loads the committed projector under `data/reference/vlm_projector/`
#    when its training configuration equals this notebook's `projector_*` parameters (its `meta.json` says what
#    made it); anything else (or `projector="train"`) trains one from scratch with those parameters.
# 2. **VQA adapter.** LoRA (rank 16, alpha 32, attention q/k/v/o) on the language model, trained on one
#    question family (`adapter_family`) with the projector frozen.
# 3. **Held-out accuracy** per family of the base VLM and the adapted VLM on the same held-out scenes
#    (prediction = the candidate answer with the highest log-probability; chance = 1 / number of candidates),
#    with paired bootstrap CIs of the change.
#
# **Reads** the embedded SmolLM2-135M-Instruct and EfficientNet-Lite0, the reference projector in
# `data/reference/vlm_projector/` (or trains one). **Writes** `results/05a_vlm/grid.json` (VQA accuracy base vs
# adapted), the projector (when trained) and the VQA adapter under `data/runs/05a_vlm/grid/`,
# `paper/generated/05a_vlm/`, `paper/generated/tables/vlm_accuracy.tex`, `figures/05a_vlm/`. **Rerun alone:**
# `make notebook NB=05a_vlm`. **Feeds** `05b_regime_probing` and `06_escape_routes` (the VLM and its adapter,
# read through this run's results); no finding directly.

# %% tags=["parameters"]
lm = "smollm2-135m"  # language model (embedded name)
image_size = 128  # image side in pixels, a multiple of 32 (128 gives 4 x 4 visual tokens)
encoder_features = "multiscale"  # visual tokens: final (last ImageNet map) or multiscale (+ the finer map, folded)
projector = "reference"  # reference: the committed projector if its config matches the projector_* below, else train; train: always train
projector_steps = 1500  # projector optimizer steps
projector_batch = 8  # examples per projector step
projector_lr = 0.002  # projector peak learning rate (warm-up, cosine decay to 10%)
projector_examples = 12000  # training scenes for the projector (canonical prompts; fewer than steps x batch: repeats)
projector_families = ["colour", "colour", "shape", "count", "position", "presence"]  # families in turn (colour twice: the hardest to learn)
projector_seed = 0  # seed of the projector's scenes, init and batch order
projector_stop_after = 0  # stop projector training after this many steps of the planned schedule (0: all steps)
projector_time_limit_s = 0.0  # stop projector training after this many seconds (0: no limit)
adapter_family = "count"  # question family the VQA adapter is trained on
rank = 16  # LoRA rank
alpha = 32.0  # LoRA alpha
targets = ["q_proj", "k_proj", "v_proj", "o_proj"]  # adapted projections (attention only)
lora_steps = 150  # LoRA optimizer steps
lora_batch = 8  # examples per LoRA step
lora_lr = 0.001  # LoRA peak learning rate
lora_examples = 1200  # training scenes of adapter_family for the adapter
lora_seed = 2  # seed of the adapter's scenes, LoRA init and batch order
eval_n = 250  # held-out scenes (families in turn)
eval_seed = 1  # seed of the held-out scenes (differs from every training seed)
n_boot = 2000  # bootstrap resamples for CIs
dtype = "float32"  # autocast dtype of the matmuls: auto, bfloat16, float32
device = "cpu"  # cpu | cuda | cuda:N
threads = 0  # torch CPU threads (0: torch's default)
progress = True  # show tqdm bars

# %%
from adapterscope import latex, params

P = params.check(globals())  # a typo'd or mistyped papermill parameter stops the run here

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from adapterscope import finetune, models, paths, plotting, results, scenes, stats
from adapterscope import vlm as V

plotting.setup()
NB = "05a_vlm"
RUN_ID = "grid"
run = results.Run(NB, RUN_ID, params=P, seed=lora_seed, device=device)
t_start = time.perf_counter()
if threads:
    torch.set_num_threads(threads)
if not projector_families or set(projector_families) - set(scenes.FAMILIES):
    raise ValueError(f"projector_families must be a non-empty list from {scenes.FAMILIES}, got {projector_families!r}")
if adapter_family not in scenes.FAMILIES:
    raise ValueError(f"adapter_family must be one of {scenes.FAMILIES}, got {adapter_family!r}")
if projector not in ("reference", "train"):
    raise ValueError(f"projector must be 'reference' or 'train', got {projector!r}")
if len({projector_seed, lora_seed, eval_seed}) < 3:
    raise ValueError("projector_seed, lora_seed and eval_seed must differ (held-out scenes must be unseen)")

# %% [markdown]
# ## Model and projector

# %%
vlm = V.load_vlm(lm, device=device, image_size=image_size, seed=projector_seed, features=encoder_features)
run.add_input("lm", models.fingerprint(lm))
run.add_input("encoder", V.encoder_fingerprint())
proj_cfg = V.TrainConfig(steps=projector_steps, batch_size=projector_batch, lr=projector_lr,
                         warmup_steps=V.PROJECTOR_WARMUP,
                         seed=projector_seed, dtype=dtype, time_limit_s=projector_time_limit_s,
                         stop_after=projector_stop_after)
recipe = V.projector_recipe(proj_cfg, projector_examples, projector_seed, image_size, lm, encoder_features,
                            projector_families)

ref_dir = V.default_projector_dir()
use_ref, why = V.reference_matches(ref_dir, recipe) if projector == "reference" else (False, "projector='train'")
print(f"reference projector: {why}")
proj_meta: dict = {}
if use_ref:
    vlm.projector = V.load_projector(ref_dir, vlm)
    proj_dir = ref_dir
    proj_meta = V.projector_meta(ref_dir)
    proj_train_s = 0.0
    proj_losses = []
else:
    t0 = time.perf_counter()
    res_p, proj_meta = V.train_projector(vlm, proj_cfg, n_examples=projector_examples, data_seed=projector_seed,
                                         families=projector_families, device=device, progress=progress)
    proj_train_s = time.perf_counter() - t0
    proj_losses = res_p.losses
    proj_dir = results.artefact_dir(NB, RUN_ID) / "projector"
    V.save_projector(vlm, proj_dir, {**proj_meta, "notebook": NB, "run_id": RUN_ID, "train_s": proj_train_s})
    proj_meta = V.projector_meta(proj_dir)
    print(f"projector: {len(res_p.losses)} steps in {proj_train_s:.0f}s, final loss {res_p.losses[-1]:.3f}")
run.add_input("projector", proj_dir)

# %% [markdown]
# ## Base VLM on held-out scenes

# %%
held = scenes.make_examples(eval_n, seed=eval_seed, size=image_size)
held_feats = V.encode_images(vlm, [e.image for e in held], device=device)
t0 = time.perf_counter()
ev_base = V.evaluate(vlm, held, image_features=held_feats, device=device, dtype=dtype, progress=progress)
eval_s = time.perf_counter() - t0
pd.DataFrame(ev_base["families"]).T

# %% [markdown]
# ## The VQA adapter (LoRA on one family)

# %%
train_exs = scenes.make_examples(lora_examples, seed=lora_seed, families=[adapter_family], size=image_size)
train_feats = V.encode_images(vlm, [e.image for e in train_exs], device=device)
pm = V.add_lora(vlm, rank=rank, alpha=alpha, targets=targets, seed=lora_seed)
lora_cfg = V.TrainConfig(steps=lora_steps, batch_size=lora_batch, lr=lora_lr, warmup_steps=min(10, lora_steps // 5 + 1),
                         seed=lora_seed, dtype=dtype)
t0 = time.perf_counter()
res_l = V.train(pm, train_exs, lora_cfg, device=device, image_features=train_feats, progress=progress)
lora_train_s = time.perf_counter() - t0
ev_ad = V.evaluate(pm, held, image_features=held_feats, device=device, dtype=dtype, progress=progress)
print(f"LoRA: {lora_steps} steps in {lora_train_s:.0f}s; loss {res_l.losses[0]:.3f} -> {np.mean(res_l.losses[-5:]):.3f}")

adapter_dir = results.artefact_dir(NB, RUN_ID) / "adapter"
finetune.save_adapter(pm, adapter_dir, {
    "kind": "vlm_vqa_lora", "lm": lm, "projector_dir": str(proj_dir), "projector_sha256": results.sha256_tree(proj_dir),
    "family": adapter_family, "config": V.config_dict(lora_cfg), "rank": rank, "alpha": alpha,
    "targets": list(targets), "examples": lora_examples, "data_seed": lora_seed, "notebook": NB, "run_id": RUN_ID})
run.add_input("adapter_written", adapter_dir)

# %% [markdown]
# ## Base vs adapted, per family (paired over the same held-out scenes)

# %%
fams = list(scenes.FAMILIES)
rows = []
cb, ca = np.array(ev_base["per_example"]["correct"], float), np.array(ev_ad["per_example"]["correct"], float)
fam_of = np.array([e.question.family for e in held])
for f in fams + ["all"]:
    m = np.ones(len(held), bool) if f == "all" else fam_of == f
    diff = stats.mean_difference(ca[m], cb[m], paired=True, n_boot=n_boot, n_permutations=n_boot, seed=lora_seed)
    lo_b, hi_b, _ = stats.bootstrap_ci((cb[m],), np.mean, n_resamples=n_boot, seed=lora_seed)
    lo_a, hi_a, _ = stats.bootstrap_ci((ca[m],), np.mean, n_resamples=n_boot, seed=lora_seed)
    rows.append({"family": f, "n": int(m.sum()), "chance": ev_base["families"][f]["chance"],
                 "base": float(cb[m].mean()), "base_lo": lo_b, "base_hi": hi_b,
                 "adapted": float(ca[m].mean()), "adapted_lo": lo_a, "adapted_hi": hi_a,
                 "diff": diff.value, "diff_lo": diff.ci_low, "diff_hi": diff.ci_high, "diff_p": diff.p_value,
                 "base_exact": ev_base["families"][f]["exact_match"], "adapted_exact": ev_ad["families"][f]["exact_match"]})
acc = pd.DataFrame(rows)
acc

# %%
fig, axes = plt.subplots(1, 2, figsize=(8.4, 2.9), gridspec_kw={"width_ratios": [3, 1.3]})
ax = axes[0]
x = np.arange(len(fams))
sub = acc.set_index("family").loc[fams]
for j, (col, lab) in enumerate([("base", "base VLM"), ("adapted", f"+ LoRA on {adapter_family}")]):
    ax.bar(x + (j - 0.5) * 0.38, sub[col], 0.38, label=lab,
           yerr=[sub[col] - sub[f"{col}_lo"], sub[f"{col}_hi"] - sub[col]], capsize=2)
for i, c in enumerate(sub.chance):
    ax.plot([i - 0.42, i + 0.42], [c, c], color="k", ls=":", lw=1.2, label="chance" if i == 0 else None)
ax.set_xticks(x, fams)
ax.set_ylim(0, 1.05)
ax.set_ylabel("held-out accuracy")
ax.legend(fontsize=8, loc="upper left", ncol=3)
ax = axes[1]
ax.plot(range(1, len(res_l.losses) + 1), res_l.losses, lw=1.2)
ax.set_xlabel("LoRA step")
ax.set_ylabel("answer loss (nats)")
run.figures += plotting.save(fig, NB, "vqa_accuracy")
plt.show()
plt.close(fig)

# %% [markdown]
# ## Export

# %%
wall_s = time.perf_counter() - t_start
run.values.update({
    "projector_dir": str(proj_dir.relative_to(paths.project_root())) if proj_dir.is_relative_to(paths.project_root()) else str(proj_dir),
    "projector_source": "reference" if use_ref else "trained", "projector_reason": why,
    "projector_meta": proj_meta, "projector_train_s": proj_train_s, "projector_losses": proj_losses,
    "adapter_dir": str(adapter_dir.relative_to(paths.project_root())), "adapter_family": adapter_family,
    "lora_losses": res_l.losses, "lora_train_s": lora_train_s, "lora_step_s": float(np.median(res_l.step_s)),
    "compute_dtype": res_l.dtype, "eval_s": eval_s, "accuracy": acc.to_dict("records"),
    "families_base": ev_base["families"], "families_adapted": ev_ad["families"],
    "pred_base": ev_base["per_example"]["pred"], "pred_adapted": ev_ad["per_example"]["pred"],
    "eval_n": eval_n, "wall_s": wall_s, "torch_threads": torch.get_num_threads(),
    "num_layers": models.num_layers(vlm.language_model),
})
run.macro("AdapterFamily", adapter_family, raw=True)
run.macro("EvalN", eval_n)
run.macro("LoraSteps", lora_steps)
for key, v in (("ImageSize", image_size), ("NVisualTokens", vlm.encoder.n_tokens), ("TokenDim", vlm.encoder.channels),
               ("LoraRank", rank), ("LoraAlpha", f"{alpha:g}"), ("LoraTargets", ", ".join(targets))):
    run.macro(key, results.tex_escape(v) if isinstance(v, str) else v, raw=isinstance(v, str))
run.macro("LoraTrainSeconds", round(lora_train_s))
run.macro("WallMinutes", wall_s / 60, digits=2)
run.macro("ProjectorSteps", int(proj_meta.get("train", {}).get("steps_done", projector_steps)))
run.macro("ProjectorSource", "committed reference" if use_ref else "trained in this run", raw=True)
ptrain = proj_meta.get("train", {})
if ptrain.get("median_step_s"):
    run.macro("ProjectorStepSeconds", ptrain["median_step_s"], digits=2)
    run.macro("ProjectorTrainMinutes", ptrain["median_step_s"] * ptrain["steps_done"] / 60, digits=2)
for r in acc.itertuples():
    key = r.family.capitalize()
    run.macro(f"AccBase{key}", 100 * r.base, digits=2)
    run.macro(f"AccAdapted{key}", 100 * r.adapted, digits=2)
    run.macro(f"AccDiff{key}", 100 * r.diff, digits=2)
    run.macro(f"AccDiffLo{key}", 100 * r.diff_lo, digits=2)
    run.macro(f"AccDiffHi{key}", 100 * r.diff_hi, digits=2)
    run.macro(f"Chance{key}", 100 * r.chance, digits=2)
    run.macro(f"N{key}", int(r.n))
# families whose base accuracy is not above chance (95% CI reaches chance): the paper names them
at_chance = [r.family for r in acc.itertuples() if r.family != "all" and r.base_lo <= r.chance]
run.values["at_chance_base"] = at_chance
run.macro("AtChanceBase", ", ".join(at_chance) if at_chance else "none", raw=True)
run.macro("NAtChanceBase", len(at_chance))

fmt = results.format_number
tab_rows = []
for r in acc.itertuples():
    name = r.family + (" (adapter)" if r.family == adapter_family else "")
    tab_rows.append(f"{name} & {r.n} & {fmt(100 * r.chance, 2)} & {fmt(100 * r.base, 2)} & {fmt(100 * r.adapted, 2)} & "
                     f"{fmt(100 * r.diff, 2)} [{fmt(100 * r.diff_lo, 2)}, {fmt(100 * r.diff_hi, 2)}]")
latex.write_table("vlm_accuracy", "lrrrrl", r"family & $n$ & chance & base & adapted & change (95\% CI)", tab_rows)
print(f"wall time {wall_s:.0f}s")
print(run.write())
