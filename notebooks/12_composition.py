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
# # 12 — Composition: merging adapters' weights vs composing them at decoding time
# The grid trains one adapter per corpus. Here every subset of two or more of one model's corpus adapters is
# composed, each constituent at weight 1, by weight merging of their exact deltas (task arithmetic, TIES,
# DARE-linear: peft's own `merge_utils`), by core-parameter isolation (each adapter's top-q share of |delta W|
# keeps its own value where cores do not collide; task arithmetic on the rest) and at decoding time (base
# logits plus each adapter's logit shift, proxy-tuning's arithmetic; no weight touched), the latter twice: at unit
# weights (`decoding_time`: every shift at full strength, the logit-space twin of task arithmetic) and normalised
# (`decoding_time_norm`: weights 1/k for k adapters, the mean of the tuned models' logits). For each composition
# and constituent: the share of that adapter's own held-out NLL gain the composition keeps (retention),
# interference = 1 - retention, and the composition's next-token KL from the base on neutral text. Alignment of
# each pair: delta cosine, core overlap (Jaccard), sign conflicts on shared core entries, and the principal-angle
# overlap of their output subspaces. The analysis is `adapterscope.composition`; the hypotheses were written into
# `paper/findings.yml` before the first run (`comp-merge-interference`, `comp-interference-alignment`,
# `comp-core-isolation`, `comp-decoding-vs-merge`; the last moved to the normalised composition on 2026-12-08,
# after the unit-weight one had been run, as its entry says).
#
# Seeds (`comp_seeds`) are replicates: each seed composes that seed's adapters; the unit of every test stays the
# subset (the pair for the alignment test), valued at its mean over seeds; p-values permute units and, with
# several seeds, the bootstrap CIs resample units and the seeds within them.
#
# Cross-model decoding-time composition (a small tuned/untuned pair steering the other model) is not run: the
# two embedded models share no vocabulary (49k vs 262k tokens) and a token mapping is not built here.
#
# **Reads** `results/01_finetune` of the block's cells (adapters, their corpus split and packing). **Writes**
# `results/12_composition/grid.json`, `figures/12_composition/`, `paper/generated/12_composition/` and the tables
# `composition*`. **Rerun alone:** `make notebook NB=12_composition` (after those cells). **Feeds** the findings
# above.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
seeds = [0, 1]  # seeds of the grid
profile = "default"  # profile name (printed in the paper)
comp_models = ["smollm2-135m"]  # models whose corpus adapters are composed (grid.composition)
comp_corpora = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora whose adapters are composed
comp_seeds = [0]  # seeds of the adapters
sizes = [2, 3, 4]  # how many adapters a composition combines (every subset of each size)
merges = ["task_arithmetic", "ties", "dare_linear"]  # weight merges (peft merge_utils)
density = 0.2  # share of entries TIES and DARE keep
core_qs = [0.01]  # core shares of core-parameter isolation (CPI-FT: top 1% of |update|)
align_q = 0.01  # core share of the alignment measures
weight = 1.0  # weight of every constituent
eval_rows = 16  # held-out rows per corpus (the adapter's own split; seneca has 31 at seq_len 64)
neutral_n = 8  # neutral base-model samples for the collateral KL
neutral_len = 64  # tokens per neutral sample
batch_size = 4  # rows per forward pass
n_boot = 2000  # bootstrap resamples (CIs over subsets or pairs)
boot_seed = 0  # seed of bootstraps, permutations and DARE's drop
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars

# %%
from adapterscope import params

P = params.check(globals())

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from adapterscope import composition, latex, macros, plotting, results

plotting.setup()
NB = "12_composition"
run = results.Run(NB, "grid", params=P, seed=boot_seed, device=device)
cfg = composition.CompositionConfig(sizes=tuple(sizes), merges=tuple(merges), density=density,
                                    core_qs=tuple(core_qs), align_q=align_q, weight=weight, batch_size=batch_size,
                                    seed=boot_seed)
alien = [m for m in comp_models if m not in model_names] + [c for c in comp_corpora if c not in corpus_names]
assert not alien, f"composition block names {alien}, which are not in the grid"
blocks = [composition.run_grid_model(m, comp_corpora, s, cfg, eval_rows, neutral_n, neutral_len, device=device,
                                     on_input=run.add_input, progress=progress)
          for m in comp_models for s in comp_seeds]
rows = [r for b in blocks for r in b["rows"]]
align = [a for b in blocks for a in b["alignment"]]
methods = composition.method_names(cfg)
weight_methods = [m for m in methods if m not in composition.DECODING]
df = pd.DataFrame(rows, columns=["model", "seed", "subset", "size", "method", "corpus", "loss", "retention",
                                 "interference", "kl_neutral"])
singles = pd.DataFrame([{"model": b["model"], "seed": b["seed"], "corpus": c, **v}
                        for b in blocks for c, v in b["singles"].items()])
singles

# %% [markdown]
# ## Retention per method and size

# %%
summary = (df.groupby(["method", "size"]).retention.agg(["mean", "min", "count"]).reset_index()
           if len(df) else pd.DataFrame(columns=["method", "size", "mean", "min", "count"]))
summary

# %% [markdown]
# ## The four tests of the ledger, and the described comparisons
# Units are subsets (pairs for the alignment test), each valued at its mean over the seeds composed; with several
# seeds the CIs resample subsets and seeds. `decoding_norm_vs_best_merge` is the test of `comp-decoding-vs-merge`;
# `decoding_unit_vs_best_merge` (its test until 2026-12-08) and `decoding_norm_vs_unit` are described beside it.

# %%
core_m = f"core_q{core_qs[0]:g}" if core_qs else ""
by_seed = dict(by_seed=True)  # {subset: {seed: value}}: seeds as replicates of a subset
ta_mean = composition.per_subset(rows, "task_arithmetic", "mean", **by_seed) if "task_arithmetic" in merges else {}
best = composition.best_merge(rows, weight_methods, "min", **by_seed)
dec_min = {m: composition.per_subset(rows, m, "min", **by_seed) for m in composition.DECODING}
stats = {
    "ta_retention": composition.replicate_mean(ta_mean, n_boot, boot_seed),
    "interference_alignment": composition.interference_vs_alignment(rows, align, "task_arithmetic", "core_jaccard",
                                                                     n_boot, boot_seed),
    "interference_sign_conflict": composition.interference_vs_alignment(rows, align, "task_arithmetic",
                                                                        "sign_conflict", n_boot, boot_seed),
    "interference_subspace": composition.interference_vs_alignment(rows, align, "task_arithmetic",
                                                                   "subspace_overlap", n_boot, boot_seed),
    "core_vs_ta": composition.paired_comparison(composition.per_subset(rows, core_m, "mean", **by_seed)
                                                if core_m else {}, ta_mean, n_boot, boot_seed),
    "decoding_norm_vs_best_merge": composition.paired_comparison(dec_min["decoding_time_norm"], best, n_boot,
                                                                 boot_seed),
    "decoding_unit_vs_best_merge": composition.paired_comparison(dec_min["decoding_time"], best, n_boot, boot_seed),
    "decoding_norm_vs_unit": composition.paired_comparison(dec_min["decoding_time_norm"], dec_min["decoding_time"],
                                                           n_boot, boot_seed),
}
if not blocks:
    for v in stats.values():
        v["reason"] = "no composition block in this profile"
pd.DataFrame(stats).T.reindex(columns=["value", "n", "n_seeds", "ci_low", "ci_high", "ci_over", "p_value", "reason"])

# %% [markdown]
# ## Figures: retention per method; interference vs alignment

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.4))
if not len(df):
    fig.clear()
    fig.set_size_inches(6, 1.2)
    fig.text(0.5, 0.5, "no composition block in this profile", ha="center", va="center")
else:
    sns.boxplot(df, x="retention", y="method", hue="size", order=methods, fliersize=2, ax=ax1)
    ax1.axvline(1, color="0.5", lw=0.8, ls=":")
    ax1.axvline(0, color="0.5", lw=0.8)
    ax1.set(xlabel="retention of each constituent's own gain", ylabel="")
    sns.move_legend(ax1, "best", fontsize=6, title="adapters")
    ia = stats["interference_alignment"]
    ax2.scatter(ia["x"], ia["y"], s=18)
    ax2.set(xlabel=f"core overlap (Jaccard, top {align_q:g} share)", ylabel="interference (1 - retention), pairs")
    ax2.set_title(rf"$\rho$={ia['value']:+.2f}, p={results.format_number(ia.get('p_value', math.nan), 2)} "
                  f"(n={ia['n']})" if math.isfinite(ia["value"]) else f"rho undefined: {ia['reason']}"[:60],
                  fontsize=7)
    fig.tight_layout()
run.figures += plotting.save(fig, NB, "composition")
plt.close(fig)

# %% [markdown]
# ## Tables, findings, values and macros

# %%
fmt, esc = results.format_number, results.tex_escape
tab = [f"{esc(r.method)} & {int(r['size'])} & {fmt(r['mean'], 2)} & {fmt(r['min'], 2)} & {int(r['count'])}"
       for _, r in summary.iterrows()]
latex.write_table("composition", "lrrrr", r"method & adapters & mean retention & min retention & $n$",
                  tab or [r"\multicolumn{5}{l}{no composition block in this profile} \\"])
tag = (lambda a: f" (seed {a['seed']})") if len(comp_seeds) > 1 else (lambda a: "")
atab = [f"{esc(a['a'])} + {esc(a['b'])}{tag(a)} & {fmt(a['cosine'], 3)} & {fmt(a['core_jaccard'], 3)} & "
        f"{fmt(a['sign_conflict'], 2)} & {fmt(a.get('subspace_overlap', math.nan), 3)}" for a in align]
latex.write_table("composition_alignment", "lrrrr", r"pair & cosine & core Jaccard & sign conflict & subspace",
                  atab or [r"\multicolumn{5}{l}{no composition block in this profile} \\"])

findings = {k: macros.ledger_view(v) for k, v in stats.items()}
run.values.update({"blocks": blocks, "stats": stats, "findings": findings, "summary": summary.to_dict("records"),
                   "unit": "subsets of adapters (they share constituents), each its mean over seeds; pairs for the "
                           "alignment test"})
for k, v in stats.items():
    macros.stat(run, macros.key(k), v)
by = {m: df[df.method == m].retention for m in methods}
for m, v in by.items():
    macros.number(run, macros.key("mean_retention_" + m), float(v.mean()) if len(v) else math.nan, digits=2)
    macros.number(run, macros.key("min_retention_" + m), float(v.min()) if len(v) else math.nan, digits=2)
for m in methods:
    kl = df[df.method == m].kl_neutral
    macros.number(run, macros.key("mean_kl_" + m), float(kl.mean()) if len(kl) else math.nan, digits=3)
for k, m in (("Core", core_m), ("Ta", "task_arithmetic"), ("Ties", "ties"), ("Dare", "dare_linear"),
             ("Decoding", "decoding_time"), ("DecodingNorm", "decoding_time_norm")):  # fixed names for the paper
    v = by.get(m, pd.Series(dtype=float))
    macros.number(run, f"MeanRetention{k}", float(v.mean()) if len(v) else math.nan, digits=2)
    macros.number(run, f"MinRetention{k}", float(v.min()) if len(v) else math.nan, digits=2)
macros.number(run, "NSubsets", int(df.subset.nunique()) if len(df) else 0)
macros.number(run, "NPairs", len({(a["model"], a["a"], a["b"]) for a in align}))
macros.number(run, "NSeeds", len(comp_seeds))
macros.number(run, "Density", density)
macros.number(run, "CoreQ", core_qs[0] if core_qs else math.nan)
macros.number(run, "EvalRows", eval_rows)
run.macro("Models", esc(", ".join(comp_models) or "--"), raw=True)
run.macro("Corpora", esc(", ".join(comp_corpora) or "--"), raw=True)
run.macro("Seeds", esc(", ".join(map(str, comp_seeds)) or "--"), raw=True)
print(run.write())
