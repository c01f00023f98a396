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
# # 10 — Internal vs output change: the scatter, its statistics, regimes, perplexity, clamping
# **Measures** whether internal change (the primary reading, chosen by `13_calibration` and stated in the
# ledger before the run: the crosscoder's FVU gap without massive-activation tokens, averaged over depths; beside
# it the peak cross/self ratio, fine-tune-only latents, CKA's late-layer displacement, the share of the
# displacement outside the base's principal subspace and intruder dimensions, each as an alternative axis) and output change (next-token KL(base||ft) and 1 - top-1 agreement
# on neutral text) go together across the grid's adapters; classifies corpora into regimes; pools the clamping
# effects of `09_clamp` (against its latent and noise controls, the rank-matched PCA baseline and the ceiling).
#
# The analysis is `adapterscope.decorrelation` (its docstring states the units, the stratified pooling and the
# regime rule, fixed before the run): tests use corpus means over seeds as units; pooling over models ranks within
# each model; regimes are called only where a corpus differs from the model's other corpora by more than seed
# noise (a t test at `regime_alpha` against the seed-to-seed null).
#
# **Reads** every main-grid cell's `results/01_finetune`, `02_capture`, `03_crosscoder` and `09_clamp` runs.
# **Writes** `results/10_decorrelation/grid.json`, `paper/generated/10_decorrelation/`,
# `paper/generated/tables/{decorrelation_stats,regimes,crosscoder,seed_reference}.tex`, `figures/10_decorrelation/`.
# **Rerun alone:** `make notebook NB=10_decorrelation` (after the grid). **Feeds** findings `decor-pooled-gap`,
# `decor-in-domain`, `decor-pooled`,
# `decor-smollm2`, `decor-gemma3`, `ppl-novel`, `clamp-vs-random`, `clamp-vs-noise`, `clamp-vs-pca`.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
layer_controls = ["none"]  # layer controls of the grid (the first one is analysed)
seeds = [0, 1]  # seeds of the grid
seeds_by_model = {}  # model -> its seeds where they differ by model (the profile's grid.seeds mapping); else `seeds`
profile = "default"  # profile name (printed in the paper)
late_frac = 0.3  # the final share of layers that counts as late for CKA displacement
regime_alpha = 0.05  # two-sided level of the per-corpus, per-axis t test against the seed-to-seed null
regime_adjust = "bh"  # multiplicity over a model's corpora per axis: bh (Benjamini-Hochberg) | none
n_boot = 2000  # bootstrap resamples for CIs
n_perm = 9999  # Monte Carlo permutations where exact enumeration is too large
boot_seed = 0  # seed of bootstraps and permutations

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from adapterscope import decorrelation as dc
from adapterscope import macros, plotting, results

plotting.setup()
NB = "10_decorrelation"
run = results.Run(NB, "grid", params=P, seed=boot_seed)
seeds_for = lambda m: seeds_by_model.get(m, seeds)  # noqa: E731
df = dc.load_runs(model_names, corpus_names, layer_controls[0], seeds_for, late_frac, on_input=run.add_input)
means = dc.corpus_means(df)
per_depth = dc.load_per_depth(model_names, corpus_names, layer_controls[0], seeds_for)
df[["model", "corpus", "seed", "kl", "disagree", dc.PRIMARY_INTERNAL, "peak_ratio", "genuine", "late_disp", "outside_99",
    "intruders"]]

# %% [markdown]
# ## Rank correlations, seed reliability, regimes, clamping

# %%
S = {"n_boot": n_boot, "n_perm": n_perm, "seed": boot_seed}
corrs = dc.correlation_grid(df, means, model_names, **S)
reliab = dc.reliability(df, sorted({s for m in model_names for s in seeds_for(m)}), **S)
regimes = dc.classify_regimes(df, alpha=regime_alpha, adjust=regime_adjust)
agreement = dc.regime_agreement(regimes, n_perm=n_perm, seed=boot_seed)
clamp = dc.clamp_effects(df, **S)
clamped_set = dc.clamped_set_description(df)
ctab = pd.DataFrame([{"unit": u, "scope": s, "pair": p, "rho": r["value"], "n": r["n"], "p": r["p_value"],
                      "ci_low": r["ci_low"], "ci_high": r["ci_high"], "reason": r.get("reason", "")}
                     for (u, s, p), r in corrs.items()])
print("clamped:", clamped_set, "\nregime agreement:", agreement)
ctab[ctab.pair.isin(["gap_kl", "gap_klheld", "ratio_kl", "ppl_ftonly"]) & (ctab.unit == "corpus_means")]

# %% [markdown]
# ## Every internal reading against the output axis (corpus means, ranks within model)

# %%
axes_kl = dc.internal_axes(means, "kl", **S)
axes_held = dc.internal_axes(means, "kl_heldout", **S)
axes_kl

# %%
regimes

# %% [markdown]
# ## Figures

# %%
PANELS = [("gap_kl", "FVU gap without massive tokens", "neutral KL(base||ft) [nats]"),
          ("ratio_kl", "peak cross/self ratio", "neutral KL(base||ft) [nats]"),
          ("ratio_disagree", "peak cross/self ratio", "1 - top-1 agreement"),
          ("genuine_kl", "fine-tune-only latents (genuine)", "neutral KL(base||ft) [nats]")]
fig, axes = plt.subplots(1, len(PANELS), figsize=(3.3 * len(PANELS), 3.0))
for ax, (pair, xl, yl) in zip(axes, PANELS):
    x, y = dc.PAIRS[pair]
    sns.scatterplot(df, x=x, y=y, hue="corpus", style="model", ax=ax, s=36)
    ax.set(xlabel=xl, ylabel=yl, yscale="log")
    if x == "genuine":
        plotting.count_axis(ax, df[x], "x")
    elif (df[x] > 0).all():
        ax.set_xscale("log")
    plotting.tidy_log(ax)
    ax.set_title(plotting.rho_title(corrs[("corpus_means", "pooled", pair)], "within-model", with_p=False), fontsize=8)
    ax.legend_.remove()
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
fig.tight_layout()
run.figures += plotting.save(fig, NB, "scatter")
plt.close(fig)

fig, axes = plt.subplots(1, len(model_names), figsize=(3.7 * len(model_names), 2.8), squeeze=False)
for ax, m in zip(axes[0], model_names):
    sns.scatterplot(df[df.model == m], x="peak_ratio", y="kl", hue="corpus", hue_order=corpus_names, ax=ax, s=36,
                    legend=ax is axes[0][-1])
    ax.set(xscale="log", yscale="log", xlabel="peak cross/self ratio", ylabel="neutral KL [nats]")
    ax.set_title(plotting.rho_title(corrs[("corpus_means", m, "ratio_kl")], f"{m}, corpus means:"), fontsize=8)
    plotting.tidy_log(ax)
if axes[0][-1].legend_ is not None:
    sns.move_legend(axes[0][-1], "center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
fig.tight_layout()
run.figures += plotting.save(fig, NB, "scatter_per_model")
plt.close(fig)

g = sns.relplot(per_depth, x="depth", y="ratio", hue="corpus", col="model", kind="line",
                marker="o", markersize=3, height=2.6, aspect=1.3, errorbar=None)
g.set(yscale="log")
for ax in g.axes.flat:
    ax.axhline(1, color="0.6", lw=0.6, ls=":")
g.set_axis_labels("relative depth", "cross/self ratio (fine-tuned side)")
run.figures += plotting.save(g.figure, NB, "ratio_depth")
plt.close(g.figure)

fig, ax = plt.subplots(figsize=(3.8, 2.8))
sns.scatterplot(df, x="ppl_base", y="ft_only", hue="corpus", style="model", ax=ax, s=36)
ax.set_xscale("log")
plotting.count_axis(ax, df["ft_only"], "y")
plotting.tidy_log(ax)
ax.set(xlabel="base perplexity on held-out corpus text", ylabel="fine-tune-only latents")
ax.set_title(plotting.rho_title(corrs[("corpus_means", "pooled", "ppl_ftonly")], "within-model"), fontsize=7)
ax.legend(fontsize=6, loc="best")
run.figures += plotting.save(fig, NB, "perplexity")
plt.close(fig)

cl = df.dropna(subset=["fr_clamp"]) if "fr_clamp" in df else df.iloc[:0]
fig = dc.clamp_figure(cl)
fig.tight_layout()
run.figures += plotting.save(fig, NB, "clamping")
plt.close(fig)

# %% [markdown]
# ## Tables: statistics, the seed study beside ours, regimes, crosscoders

# %%
fmt, esc = results.format_number, results.tex_escape


def stat_cells(r):
    if not math.isfinite(r["value"]):
        return rf"{r['n']} & \multicolumn{{3}}{{l}}{{undefined: {esc(r.get('reason', ''))}}}"
    p = fmt(r["p_value"], 2) + (r"$^{e}$" if r.get("p_method") == "exact" else "")
    return f"{r['n']} & {fmt(r['value'], 2)} & {p} & [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"


LAB = {"gap_kl": r"FVU gap (trimmed) vs KL", "gap_klheld": r"FVU gap (trimmed) vs held-out KL",
       "ratio_kl": r"peak ratio vs KL", "ratio_disagree": r"peak ratio vs $1-$top-1",
       "genuine_kl": r"genuine FT-only latents vs KL", "late_kl": r"late $1-$CKA vs KL",
       "late_ratio": r"late $1-$CKA vs peak ratio", "ppl_ftonly": r"base ppl vs FT-only latents"}
SCOPES = [*[(m, "corpus_means", esc(m) + ", corpus means") for m in model_names],
          ("pooled", "corpus_means", "within-model, corpus means"), ("pooled_naive", "runs", "naive pooled, runs")]
tab_rows = []
for pair, lab in LAB.items():
    tab_rows += [r"\addlinespace"] if tab_rows else []
    tab_rows += [f"{lab} & {slab} & {stat_cells(corrs[(unit, scope, pair)])}" for scope, unit, slab in SCOPES]
latex.write_table("decorrelation_stats", "llrrrl", r"pair & scope & $n$ & $\rho$ & $p$ & 95\% CI", tab_rows)

# The seed study's values (Blackwell & Holman; blog posts and podcast, no paper): theirs, quoted, not measured here.
SEED = {"pooled": ("+0.71", "12", "all runs, Llama 3B/8B/70B, pooled"),
        "within": ("-0.80", "4", "within 70B; exact $p=0.33$"), "ppl": ("-0.80", "4", "70B, base ppl vs novel features")}
largest = model_names[-1]
ours = [(corrs[("runs", "pooled_naive", "ratio_kl")], "all runs, both models, pooled"),
        (corrs[("corpus_means", largest, "ratio_kl")], f"{esc(largest)}, corpus means"),
        (corrs[("corpus_means", "pooled", "ppl_ftonly")], "corpus means, within model")]
latex.write_table("seed_reference", "lllrrrl",
                  r"statistic & seed study $\rho$ ($n$) & their scope & $n$ & ours $\rho$ & $p$ & 95\% CI", [
    rf"{lab} & {SEED[k][0]} ({SEED[k][1]}) & {SEED[k][2]} & {stat_cells(r)}"
    for k, lab, (r, _) in zip(SEED, ["internal vs output", "internal vs output, largest model",
                                     "perplexity vs novel latents"], ours)])

side, side_sentence = dc.seed_side_by_side(means)
print(side_sentence)


def seed_cell(v, digits=3, pct=False):
    return "--" if v is None or not math.isfinite(v) else (f"{100 * v:.0f}\\%" if pct else fmt(v, digits))


latex.write_table("seed_side_by_side", "llrrrrrr|rrrr",
                  r"model & corpus & peak ratio (rank) & FVU gap & KL (rank) & top-1 & late $1-$CKA & & "
                  r"seed ratio (rank) & seed KL (rank) & seed top-1 & seed ppl",
                  [f"{esc(r.model)} & {esc(r.corpus)} & {fmt(r.peak_ratio, 3)} ({r.rank_peak_ratio:.0f}) & "
                   f"{fmt(getattr(r, dc.PRIMARY_INTERNAL), 3)} & {fmt(r.kl, 3)} ({r.rank_kl:.0f}) & "
                   f"{seed_cell(r.top1, pct=True)} & {fmt(r.late_disp, 3)} & & {fmt(r.seed_ratio, 3)} "
                   f"({r.seed_rank_ratio:.0f}) & {fmt(r.seed_kl, 3)} ({r.seed_rank_kl:.0f}) & "
                   f"{seed_cell(r.seed_top1, pct=True)} & {seed_cell(r.seed_ppl, 2)}" for r in side.itertuples()])

latex.write_table("internal_axes", "lrrrl",
                  r"internal reading & $n$ & $\rho$ vs KL & $p$ & $\rho$ vs held-out KL",
                  [f"{esc(r.label)}{' (primary)' if r.primary else ''} & {r.n} & {fmt(r.rho, 2)} "
                   f"[{fmt(r.ci_low, 2)}, {fmt(r.ci_high, 2)}] & {fmt(r.p, 2)} & {fmt(h.rho, 2)}"
                   for r, h in zip(axes_kl.itertuples(), axes_held.itertuples())])

latex.write_table("regimes", "llrrrrrrll",
                  r"model & corpus & peak ratio & $z$ & late $1-$CKA & $z$ & KL & $z$ & regime (crosscoder) & regime (CKA)",
                  [f"{esc(r.model)} & {esc(r.corpus)} & {fmt(r.peak_ratio, 3)} & {fmt(r.z_ratio, 2)} & "
                   f"{fmt(r.late_disp, 2)} & {fmt(r.z_late, 2)} & {fmt(r.kl, 2)} & {fmt(r.z_kl, 2)} & {r.regime} & "
                   f"{r.regime_cka}" for r in regimes.itertuples()])

cc = per_depth.groupby(["model", "corpus"], as_index=False, sort=False).agg(
    fve=("fve", "mean"), l0=("l0", "mean"), dead=("dead", "mean"), n_latents=("n_latents", "first"))
cc = cc.merge(means[["model", "corpus", "peak_ratio", "ft_only", "genuine"]], on=["model", "corpus"])
cc = cc.merge(df.groupby(["model", "corpus"], as_index=False).peak_depth.mean(), on=["model", "corpus"])
latex.write_table("crosscoder", "llrrrrrrr",
                  r"model & corpus & latents & FVE & $L_0$ & dead & FT-only & genuine & peak ratio (depth)",
                  [f"{esc(r.model)} & {esc(r.corpus)} & {int(r.n_latents)} & {fmt(r.fve, 3)} & {fmt(r.l0, 3)} & "
                   f"{fmt(r.dead, 2)} & {fmt(r.ft_only, 3)} & {fmt(r.genuine, 3)} & {fmt(r.peak_ratio, 3)} "
                   f"({fmt(r.peak_depth, 2)})" for r in cc.itertuples()])

# %% [markdown]
# ## Export: findings, values and macros

# %%
extra = dc.FINDING_EXTRA  # the ledger's view of a statistic keeps the clamp's run counts and unit too
findings = {"rho_gap_kl_pooled": macros.ledger_view(corrs[("corpus_means", "pooled", "gap_kl")], extra=extra),
            "rho_gap_klheld_pooled": macros.ledger_view(corrs[("corpus_means", "pooled", "gap_klheld")], extra=extra),
            "rho_ratio_kl_pooled": macros.ledger_view(corrs[("corpus_means", "pooled", "ratio_kl")], extra=extra),
            "rho_ratio_kl_pooled_naive": macros.ledger_view(corrs[("runs", "pooled_naive", "ratio_kl")], extra=extra),
            "rho_ppl_ftonly_pooled": macros.ledger_view(corrs[("corpus_means", "pooled", "ppl_ftonly")], extra=extra),
            "regime_agreement": agreement,
            **{k: macros.ledger_view(v, extra=extra) for k, v in clamp.items()}}
for m in model_names:
    findings[f"rho_ratio_kl_{m}"] = macros.ledger_view(corrs[("runs", m, "ratio_kl")], extra=extra)
    findings[f"rho_ratio_kl_{m}_means"] = macros.ledger_view(corrs[("corpus_means", m, "ratio_kl")], extra=extra)
findings["rho_ratio_kl_largest_means"] = findings[f"rho_ratio_kl_{largest}_means"]
run.values.update({
    "runs": df.to_dict("records"), "corpus_means": means.to_dict("records"),
    "correlations": [{"unit": u, "scope": s, "pair": p, **r} for (u, s, p), r in corrs.items()],
    "internal_axes": {"kl": axes_kl.to_dict("records"), "kl_heldout": axes_held.to_dict("records"),
                      "primary": dc.PRIMARY_INTERNAL},
    "reliability": reliab, "regimes": regimes.to_dict("records"), "clamp_effects": clamp, "findings": findings,
    "clamped_set": clamped_set, "seed_side_by_side": side.to_dict("records"), "seed_side_sentence": side_sentence,
    "regime_rule": f"t test of each corpus against the model's other corpora, seed-noise null, alpha {regime_alpha}, "
                   f"adjusted over corpora: {regime_adjust}"})
for key, f in findings.items():  # per-model values are in the tables; the largest model's under a fixed name
    if not any(key.endswith(m) or key.endswith(m + "_means") for m in model_names):
        macros.stat(run, macros.key(key), f)
run.macro("LargestModel", esc(largest), raw=True)
run.macro("ClampedSet", esc(clamped_set), raw=True)
run.macro("SeedSideSentence", esc(side_sentence), raw=True)
run.macro("RegimeAgreementChance", fmt(agreement["chance"], 2), raw=True)
run.macro("RegimeAgreementKappa", fmt(agreement["kappa"], 2), raw=True)
run.macro("GridDesc", f"{len(model_names)} models $\\times$ {len(corpus_names)} corpora $\\times$ " + (
    f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}" if len({len(seeds_for(m)) for m in model_names}) == 1 else
    "seeds: " + ", ".join(f"{len(seeds_for(m))} for {esc(m)}" for m in model_names)), raw=True)
counts = {"NRuns": len(df), "NModels": len(model_names), "NCorpora": len(corpus_names), "NSeeds": len(seeds),
          "NUnits": len(means), "NClampRuns": len(cl), "NBoot": n_boot, "NPerm": n_perm,
          "NClampFtOnly": int(cl.clamp_ft_only.sum()) if len(cl) else 0,
          "NClampTopR": int((~cl.clamp_ft_only.astype(bool)).sum()) if len(cl) else 0,
          "NDepths": int(per_depth.groupby(["model", "corpus", "seed"]).size().min()),
          "FtOnlyTotal": int(df.ft_only.sum()), "GenuineTotal": int(df.genuine.sum()),
          "NRunsWithGenuine": int((df.genuine > 0).sum()), "NRegimeAgree": int(regimes.agree.sum()),
          "NInternalAgree": int((regimes.level_ratio == regimes.level_late).sum()),
          "NRegimeRows": len(regimes), "NRegimeResolved": int((regimes.regime != dc.UNRESOLVED).sum()),
          "NRegimeResolvedCka": int((regimes.regime_cka != dc.UNRESOLVED).sum())}
for k, v in counts.items():
    macros.number(run, k, int(v))
for k, v in {"PeakRatioMax": df.peak_ratio.max(), "PeakRatioMin": df.peak_ratio.min(), "KlMax": df.kl.max(),
             "KlMin": df.kl.min(), "FveMin": per_depth.fve.min(), "FveMax": per_depth.fve.max(),
             "DeadMax": per_depth.dead.max(), "LZeroMin": per_depth.l0.min(), "LZeroMax": per_depth.l0.max(),
             "LZeroMean": per_depth.l0.mean(), "PeakDepthMedian": df.peak_depth.median(),
             "RegimeAlpha": regime_alpha, "RegimeTCrit": regimes.t_crit.iloc[0] if len(regimes) else math.nan,
             "EditNormClampMean": df.get("edit_norm_clamp", pd.Series(dtype=float)).mean(),
             "EditNormRandomMean": df.get("edit_norm_random", pd.Series(dtype=float)).mean(),
             "EditNormRandomNaturalMean": df.get("edit_norm_random_natural", pd.Series(dtype=float)).mean(),
             "RandomNegativeShare": df.get("random_negative_share", pd.Series(dtype=float)).mean(),
             # the clamped sets' relative decoder norms (r > 0.9: fine-tune-only) and firing counts vs the control's
             "RClampedMin": df.get("r_clamped_min", pd.Series(dtype=float)).min(),
             "RClampedMax": df.get("r_clamped_max", pd.Series(dtype=float)).max(),
             "FireMedianClamped": df.get("fire_median_clamped", pd.Series(dtype=float)).median(),
             "FireMedianRandom": df.get("fire_median_random", pd.Series(dtype=float)).median()}.items():
    macros.number(run, k, float(v))
for k, v in dc.protocol(list(df.run_id), on_input=run.add_input).items():  # the settings the runs used
    run.macro(k, esc(v), raw=True)
run.macro("LateFracPct", f"{100 * late_frac:g}", raw=True)
for col in ("kl", "disagree", "peak_ratio", "genuine", "late_disp"):  # a dash with one seed
    r = reliab.get(col, {"value": math.nan, "p_value": math.nan})
    macros.number(run, f"Reliab{macros.key(col)}", r["value"], digits=2)
    macros.number(run, f"Reliab{macros.key(col)}P", r["p_value"], digits=2)
print(run.write())
