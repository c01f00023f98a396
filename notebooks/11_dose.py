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
# # 11 — Training dose: does construction appear when the adapter is trained harder?
# **Measures** how the fine-tune-only latent count (all and genuine), the crosscoder's peak cross/self ratio,
# neutral KL(base||ft), 1 - top-1 agreement and the held-out perplexity grow with training dose = steps x lr, and
# per corpus the lowest dose at which a fine-tune-only latent first appears.
#
# The analysis is `adapterscope.dose` (its docstring states the test, fixed before the runs): Spearman between
# dose and each measure with ranks within each corpus's dose series, exact within-corpus permutation null.
# A profile without a dose block writes NaN findings with the reason "no dose block in this profile" and
# placeholder tables and figure.
#
# **Reads** `results/01_finetune`, `02_capture` and `03_crosscoder` of the profile's `grid.dose` cells (run id =
# the main-grid cell's id + `__dose-...`) and of the main-grid cells they start from (the lowest dose).
# **Writes** `results/11_dose/grid.json`, the macros in `paper/generated/11_dose/`, the tables
# `paper/generated/tables/dose.tex` (runs) and `dose_trends.tex` (statistics), and the figure
# `figures/11_dose/dose.{pdf,png}`. **Rerun alone:** `make notebook NB=11_dose` (after the dose cells and the
# main-grid cells they start from). **Feeds** findings `dose-ftonly`, `dose-ratio`, `dose-kl`
# (`findings.rho_dose_ftonly`, `findings.rho_dose_ratio`, `findings.rho_dose_kl`); the construction thresholds
# (`findings.first_construction_dose.<corpus>`, `findings.first_genuine_dose.<corpus>`) are recorded for the
# paper's text, not as ledger findings.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
seeds = [0, 1]  # seeds of the grid
profile = "default"  # profile name (printed in the paper)
dose_models = ["smollm2-135m"]  # models of the grid's dose block (empty: the profile has none)
dose_corpora = ["meditations", "dtc-ads"]  # corpora of the dose block
dose_seeds = [0]  # seeds of the dose block
dose_levels = [{"steps": 50, "lr": 0.0006}, {"steps": 50, "lr": 0.002}, {"steps": 200, "lr": 0.002}]  # 01_finetune
# overrides of the dose runs; the lowest dose is the main grid's own cell (50 steps, lr 2e-4), not listed here
n_boot = 2000  # bootstrap resamples for CIs
n_perm = 9999  # Monte Carlo permutations where exact enumeration is too large
boot_seed = 0  # seed of bootstraps and permutations

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import math
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from adapterscope import dose, macros, plotting, results

plotting.setup()
NB = "11_dose"
run = results.Run(NB, "grid", params=P, seed=boot_seed)
NO_BLOCK = "no dose block in this profile"
has_block = bool(dose_levels and dose_models and dose_corpora and dose_seeds)
alien = [c for c in dose_corpora if c not in corpus_names] + [m for m in dose_models if m not in model_names]
assert not alien, f"dose block names {alien}, which are not in the grid"
df = (dose.load_runs(dose_models, dose_corpora, dose_seeds, dose_levels, on_input=run.add_input) if has_block
      else dose.load_runs([], [], [], []))
df[["corpus", "seed", "steps", "lr", "dose", "kl", "disagree", "peak_ratio", "ft_only", "genuine", "ppl_ft"]]

# %% [markdown]
# ## Trends with dose and the construction threshold

# %%
trends = dose.trends(df, n_boot=n_boot, n_perm=n_perm, seed=boot_seed, empty_reason=NO_BLOCK)
first = dose.first_construction(df, dose_corpora if has_block else [])
first_genuine = dose.first_construction(df, dose_corpora if has_block else [], col="genuine")
pd.DataFrame(trends).T[["value", "n", "p_value", "p_method", "ci_low", "ci_high"]]

# %% [markdown]
# ## Figure: each measure against dose

# %%
fmt, esc = results.format_number, results.tex_escape
g = lambda v: f"{v:g}"  # noqa: E731


def panel_title(r):
    if not math.isfinite(r["value"]):
        return textwrap.fill(f"rho undefined: {r.get('reason', '')}", 48, break_on_hyphens=False)
    return rf"within corpus $\rho$={r['value']:+.2f}, p={fmt(r['p_value'], 2)} (n={r['n']})"


fig, axes = plt.subplots(2, 3, figsize=(9.6, 5.6))
if not len(df):
    fig.clear()
    fig.set_size_inches(6, 1.2)
    fig.text(0.5, 0.5, NO_BLOCK, ha="center", va="center")
else:
    for ax, (key, (col, name, label)) in zip(axes.flat, dose.MEASURES.items()):
        sns.lineplot(df, x="dose", y=col, hue="corpus", hue_order=dose_corpora, style="model" if len(dose_models) > 1
                     else None, marker="o", errorbar=None, ax=ax, legend=ax is axes.flat[0])
        ax.set_xscale("log")
        ax.set_xticks(sorted(df.dose.unique()), [g(x) for x in sorted(df.dose.unique())])
        ax.xaxis.set_minor_locator(plt.NullLocator())
        if col in dose.COUNTS:
            plotting.count_axis(ax, df[col], "y")
        elif col == "kl":
            ax.set_yscale("log")
            plotting.tidy_log(ax)
        ax.set(xlabel=r"dose = steps $\times$ lr", ylabel=label)
        ax.set_title(panel_title(trends[f"rho_dose_{key}"]), fontsize=7)
    sns.move_legend(axes.flat[0], "best", fontsize=6)
    fig.tight_layout()
run.figures += plotting.save(fig, NB, "dose")
plt.close(fig)

# %% [markdown]
# ## Tables: the runs and the statistics

# %%
run_rows = [f"{esc(r.corpus)} & {r.seed} & {r.steps} & {g(r.lr)} & {g(r.dose)}{'' if r.dose_tag else ' (main)'} & "
            f"{fmt(r.kl, 3)} & {fmt(r.disagree, 2)} & {fmt(r.peak_ratio, 3)} & {int(r.ft_only)} ({int(r.genuine)}) & "
            f"{fmt(r.ppl_ft, 3)}" for r in df.itertuples()]
latex.write_table("dose", "lrrrrrrrrl", r"corpus & seed & steps & lr & dose & KL & $1-$top-1 & peak ratio & "
                  r"FT-only (genuine) & ppl$_{ft}$", run_rows or [rf"\multicolumn{{10}}{{l}}{{{NO_BLOCK}}} \\"])


def stat_cells(r):
    if not math.isfinite(r["value"]):
        return rf"{r['n']} & \multicolumn{{3}}{{l}}{{undefined: {esc(r.get('reason', ''))}}}"
    p = fmt(r["p_value"], 2) + (r"$^{e}$" if r.get("p_method") == "exact" else "")
    return f"{r['n']} & {fmt(r['value'], 2)} & {p} & [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"


latex.write_table("dose_trends", "lrrrl", r"dose vs & $n$ & $\rho$ & $p$ & 95\% CI",
                  [f"{esc(name)} & {stat_cells(trends[f'rho_dose_{k}'])}"
                   for k, (_, name, _) in dose.MEASURES.items()])

# %% [markdown]
# ## Export: findings, values and macros

# %%
findings = {k: macros.ledger_view(v) for k, v in trends.items()}
findings["first_construction_dose"] = first
findings["first_genuine_dose"] = first_genuine
run.values.update({"runs": df.to_dict("records"), "trends": trends, "findings": findings,
                   "has_dose_block": has_block, "reason": "" if has_block else NO_BLOCK,
                   "unit": "runs; ranks within each corpus's dose series"})


for key, f in trends.items():
    macros.stat(run, macros.key(key), f)


def threshold_text(fc):
    return "; ".join(f"{c}: {g(r['value']) if r['value'] is not None else 'none up to ' + g(r['max_dose'])}"
                     for c, r in fc.items()) or NO_BLOCK


for c in dict.fromkeys([*corpus_names, *dose_corpora]):  # every grid corpus, so the paper's macros always exist
    r = first.get(c, {"value": None, "reason": f"{c} is not in the dose block" if has_block else NO_BLOCK})
    run.macro(f"FirstConstructionDose{macros.key(c)}", r"\text{--}" if r["value"] is None else g(r["value"]), raw=True)
    run.macro(f"FirstConstructionDose{macros.key(c)}Why", esc(r.get("reason", "")), raw=True)
run.macro("FirstConstructionDoses", esc(threshold_text(first)), raw=True)
run.macro("FirstGenuineDoses", esc(threshold_text(first_genuine)), raw=True)
run.macro("DoseModels", esc(", ".join(dose_models) or "--"), raw=True)
run.macro("DoseCorpora", esc(", ".join(dose_corpora) or "--"), raw=True)
levels = dict.fromkeys(f"{r.steps} steps at lr {g(r.lr)}" for r in df.sort_values("dose").itertuples())
run.macro("DoseLevels", esc("; ".join(levels) or "--"), raw=True)
run.macro("DoseWhy", "" if has_block else NO_BLOCK, raw=True)
for k, v in {"NDoseRuns": len(df), "NDoseLevels": df.dose_tag.nunique(), "NDoseCorpora": df.corpus.nunique(),
             "NDoseRunsWithFtOnly": (df.ft_only > 0).sum(), "NDoseRunsWithGenuine": (df.genuine > 0).sum()}.items():
    macros.number(run, k, int(v))
for k, col in {"DoseFtOnlyMax": "ft_only", "DoseGenuineMax": "genuine", "DoseStepsMax": "steps"}.items():
    macros.number(run, k, int(df[col].max()) if len(df) else math.nan)
for k, v in {"DoseMin": df.dose.min(), "DoseMax": df.dose.max()}.items():  # exact, as in the table
    run.macro(k, g(v) if len(df) else r"\text{--}", raw=True)
for k, v in {"DoseKlMin": df.kl.min(), "DoseKlMax": df.kl.max(),
             "DosePeakRatioMin": df.peak_ratio.min(), "DosePeakRatioMax": df.peak_ratio.max()}.items():
    macros.number(run, k, float(v))
print(run.write())
