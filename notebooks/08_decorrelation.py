# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 08 — Internal vs output change: the scatter, its statistics, regimes, perplexity, clamping
# Reads every run of the grid (`02_capture`, `03_crosscoder`, `07_clamp`) and reports
# * **internal change**: the crosscoder's peak cross/self ratio over depth, and its count of fine-tune-only
#   latents after Latent Scaling ("genuine"); CKA's late-layer displacement as an independent cross-check;
# * **output change**: next-token KL(base||ft) on the neutral set (base-model samples) and 1 - top-1 agreement;
# * Spearman's rho within each model and pooled, per run and on corpus means over seeds, each with n, a two-sided
#   exact (n <= 9) or permutation p-value and a percentile bootstrap CI (`adapterscope.stats`, scipy.stats);
# * the seed study's reference values beside ours, labelled as theirs;
# * a stated regime rule (below) and its table; base perplexity against novel latents; the clamping effects
#   pooled over runs;
# * `values["findings"]`: the entries the findings ledger (`paper/findings.yml`) points at.
#
# **Regime rule.** Per model, on corpus means over seeds: internal change is *high* when the corpus's peak
# cross/self ratio is above the model's median over corpora, output change is *high* when its neutral KL is above
# the model's median. High/low = *latent construction*; high/high = *coupled construction*; low/high =
# *reweighting*; low/low = *minimal change*. The same rule with CKA's late-layer displacement in place of the
# ratio gives the CKA reading; the two readings agree or not, corpus by corpus. The rule is relative (within a
# model): it orders corpora, it does not say that any change is large in absolute terms.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
layer_controls = ["none"]  # layer controls of the grid (the first one is analysed)
seeds = [0, 1]  # seeds of the grid
seeds_by_model = {}  # model -> its seeds where they differ by model (the profile's grid.seeds mapping); else `seeds`
profile = "default"  # profile name (printed in the paper)
late_frac = 0.3  # the final share of layers that counts as late for CKA displacement
n_boot = 2000  # bootstrap resamples for CIs
n_perm = 9999  # Monte Carlo permutations for p-values with more than 9 pairs (up to 9: exact enumeration)
boot_seed = 0  # seed of bootstraps and permutations

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from adapterscope import paths, plotting, results, stats

plotting.setup()


def tidy_log(ax):
    """Log axes spanning less than a decade: four plain ticks instead of overlapping minor-tick labels."""
    import matplotlib.ticker as mt

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and lim[0] > 0 and lim[1] / lim[0] < 10:
            axis.set_major_locator(mt.MaxNLocator(4))
            axis.set_major_formatter(mt.FormatStrFormatter("%.4g"))
            axis.set_minor_formatter(mt.NullFormatter())


def count_axis(ax, values, which):
    """A latent-count axis: linear with integer ticks while the counts are small (all zero: one line at 0, not a
    symlog axis spanning +-0.05), symlog beyond."""
    v = np.asarray(values, dtype=float)
    top = float(np.nanmax(v)) if np.isfinite(v).any() else 0.0
    if top < 10:
        getattr(ax, f"set_{which}lim")(-0.5, top + 0.5)
        getattr(ax, f"set_{which}ticks")(range(int(top) + 1))
    else:
        getattr(ax, f"set_{which}scale")("symlog", linthresh=1)


NB = "08_decorrelation"
run = results.Run(NB, "grid", params=P, seed=boot_seed)
lc0 = layer_controls[0]
rows = []
for m in model_names:
    for c in corpus_names:
        for s in seeds_by_model.get(m, seeds):
            rid = params.run_key(m, c, lc0, f"s{s}")
            cap, ccr = results.load("02_capture", rid), results.load("03_crosscoder", rid)
            for nb in ("02_capture", "03_crosscoder"):
                run.add_input(f"{nb[:2]}/{rid}", results.sha256_file(results.results_path(nb, rid)))
            clamp = None
            if results.results_path("07_clamp", rid).exists():
                clamp = results.load("07_clamp", rid)["values"]
                run.add_input(f"07/{rid}", results.sha256_file(results.results_path("07_clamp", rid)))
            v, cv = cap["values"], ccr["values"]
            L = v["num_layers"]
            disp = {int(k.split(".")[1]): 1 - x["cka_debiased"] for k, x in v["cka"].items()}
            late = [d for l, d in disp.items() if l / (L - 1) >= 1 - late_frac - 1e-9]
            row = {"model": m, "corpus": c, "seed": s, "run_id": rid,
                   "kl": v["divergence"]["neutral"]["kl"], "disagree": 1 - v["divergence"]["neutral"]["top1_agreement"],
                   "kl_heldout": v["divergence"]["heldout"]["kl"],
                   "ppl_base": v["divergence"]["heldout"]["ppl_base"], "ppl_ft": v["divergence"]["heldout"]["ppl_ft"],
                   "peak_ratio": cv["peak_ratio_ft"], "peak_depth": cv["peak_depth"],
                   "ft_only": cv["n_ft_only_total"], "genuine": cv["n_ft_only_genuine_total"],
                   "late_disp": float(np.mean(late)) if late else math.nan}
            if clamp and clamp.get("clamp"):
                cs = clamp["clamp"]
                row.update(clamp_layer=clamp["layer"], n_clamped=clamp["n_clamped"],
                           clamp_ft_only=clamp.get("clamped_set", "ft_only") == "ft_only",
                           **{f"fr_{k}": cs[f"frac_removed_{k}"]["value"] for k in ("clamp", "random", "noise")},
                           **{f"fr_{k}_lo": cs[f"frac_removed_{k}"]["ci_low"] for k in ("clamp", "random", "noise")},
                           **{f"fr_{k}_hi": cs[f"frac_removed_{k}"]["ci_high"] for k in ("clamp", "random", "noise")})
            rows.append(row)
df = pd.DataFrame(rows)
df[["model", "corpus", "seed", "kl", "disagree", "peak_ratio", "genuine", "late_disp", "ppl_base"]]

# %% [markdown]
# ## Rank correlations: internal vs output, per model and pooled

# %%
PAIRS = {  # name: (internal, output)
    "ratio_kl": ("peak_ratio", "kl"),
    "ratio_disagree": ("peak_ratio", "disagree"),
    "genuine_kl": ("genuine", "kl"),
    "late_kl": ("late_disp", "kl"),
    "late_ratio": ("late_disp", "peak_ratio"),
}
means = df.groupby(["model", "corpus"], as_index=False)[
    ["kl", "disagree", "peak_ratio", "genuine", "late_disp", "ppl_base", "ft_only"]].mean()


def corr(d, x, y):
    d = d[np.isfinite(d[x]) & np.isfinite(d[y])]
    r = stats.spearman(d[x].to_numpy(), d[y].to_numpy(), n_boot=n_boot, n_permutations=n_perm, seed=boot_seed)
    return r.as_dict()


corrs = {}
for unit, data in (("runs", df), ("corpus_means", means)):
    for scope in [*model_names, "pooled"]:
        sub = data if scope == "pooled" else data[data.model == scope]
        for name, (x, y) in PAIRS.items():
            corrs[(unit, scope, name)] = corr(sub, x, y)
        corrs[(unit, scope, "ppl_genuine")] = corr(sub, "ppl_base", "genuine")
        corrs[(unit, scope, "ppl_ftonly")] = corr(sub, "ppl_base", "ft_only")
ctab = pd.DataFrame([{"unit": u, "scope": s, "pair": p, "rho": r["value"], "n": r["n"], "p": r["p_value"],
                      "p_method": r["p_method"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                     for (u, s, p), r in corrs.items()])
ctab[ctab.pair.isin(["ratio_kl", "genuine_kl", "ppl_genuine"])]

# %% [markdown]
# ## Seed-to-seed reliability of each measure
# Spearman across (model, corpus) between seed 0 and seed 1 runs: a measure that does not rank corpora the same
# way under a different seed cannot carry a correlation with anything else.

# %%
reliab = {}
if len(seeds) >= 2:
    a, b = (df[df.seed == seeds[0]].set_index(["model", "corpus"]), df[df.seed == seeds[1]].set_index(["model", "corpus"]))
    for col in ("kl", "disagree", "peak_ratio", "genuine", "late_disp"):
        j = a[[col]].join(b[[col]], rsuffix="_b").dropna()
        reliab[col] = stats.spearman(j[col], j[col + "_b"], n_boot=n_boot, n_permutations=n_perm,
                                     seed=boot_seed).as_dict()
pd.DataFrame(reliab).T[["value", "n", "p_value", "ci_low", "ci_high"]] if reliab else None

# %% [markdown]
# ## Regimes (the rule stated at the top)

# %%
CLASS = {(True, False): "latent construction", (True, True): "coupled construction",
         (False, True): "reweighting", (False, False): "minimal change"}
reg = []
for m, g in means.groupby("model"):
    for r in g.itertuples():
        hi_int = r.peak_ratio > g.peak_ratio.median()
        hi_out = r.kl > g.kl.median()
        hi_cka = r.late_disp > g.late_disp.median()
        reg.append({"model": m, "corpus": r.corpus, "peak_ratio": r.peak_ratio, "genuine": r.genuine,
                    "late_disp": r.late_disp, "kl": r.kl, "regime": CLASS[(hi_int, hi_out)],
                    "regime_cka": CLASS[(hi_cka, hi_out)], "agree": CLASS[(hi_int, hi_out)] == CLASS[(hi_cka, hi_out)]})
regimes = pd.DataFrame(reg)
regimes

# %% [markdown]
# ## Causal clamping, pooled over runs
# Per run (`07_clamp`): fraction of KL(base||ft) removed by clamping the fine-tune-only latents, by random latents
# of the same count (mean over draws) and by matched noise. Pooled: the paired mean difference clamp - control
# over runs, with a sign-flip permutation p-value and a bootstrap CI.

# %%
cl = df.dropna(subset=["fr_clamp"]) if "fr_clamp" in df else df.iloc[:0]
clamp_eff = {}
for ctl in ("random", "noise"):
    if len(cl) >= 2:
        clamp_eff[ctl] = stats.mean_difference(cl.fr_clamp, cl[f"fr_{ctl}"], paired=True, n_boot=n_boot,
                                               n_permutations=n_perm, seed=boot_seed).as_dict()
clamp_mean = (stats.bootstrap_ci((cl.fr_clamp.to_numpy(),), np.mean, n_resamples=n_boot, seed=boot_seed)
              if len(cl) >= 2 else (math.nan, math.nan, math.nan))
print(f"{len(cl)} runs with a clamp; effects {clamp_eff}")

# %% [markdown]
# ## Figures

# %%
def rho_title(r, label="pooled", with_p=True):
    """Figure title for a correlation; rho is undefined when one side is constant (e.g. no FT-only latent)."""
    if not math.isfinite(r["value"]):
        return rf"{label}: $\rho$ undefined, one side constant (n={r['n']})"
    return rf"{label} $\rho$={r['value']:+.2f}" + (f", p={r['p_value']:.2f}" if with_p else "") + f" (n={r['n']})"


PANELS = [("ratio_kl", "peak cross/self ratio", "neutral KL(base||ft) [nats]"),
          ("ratio_disagree", "peak cross/self ratio", "1 - top-1 agreement"),
          ("genuine_kl", "fine-tune-only latents (genuine)", "neutral KL(base||ft) [nats]")]
fig, axes = plt.subplots(1, len(PANELS), figsize=(3.3 * len(PANELS), 3.0))
for ax, (pair, xl, yl) in zip(axes, PANELS):
    x, y = PAIRS[pair]
    sns.scatterplot(df, x=x, y=y, hue="corpus", style="model", ax=ax, s=36)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_yscale("log")
    if x == "genuine":
        count_axis(ax, df[x], "x")
    else:
        ax.set_xscale("log")
    tidy_log(ax)
    ax.set_title(rho_title(corrs[("runs", "pooled", pair)], "pooled", with_p=False), fontsize=8)
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
    ax.set_xscale("log")
    ax.set_yscale("log")
    r = corrs[("runs", m, "ratio_kl")]
    ax.set_title(rho_title(r, f"{m}:"), fontsize=8)
    ax.set_xlabel("peak cross/self ratio")
    ax.set_ylabel("neutral KL [nats]")
    tidy_log(ax)
if axes[0][-1].legend_ is not None:
    sns.move_legend(axes[0][-1], "center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
fig.tight_layout()
run.figures += plotting.save(fig, NB, "scatter_per_model")
plt.close(fig)

depth_rows = []
for m in model_names:
    for c in corpus_names:
        for s_ in seeds_by_model.get(m, seeds):
            rid = params.run_key(m, c, lc0, f"s{s_}")
            for r in results.load("03_crosscoder", rid)["values"]["per_layer"]:
                depth_rows.append({"model": m, "corpus": c, "seed": s_, "depth": r["depth"], "ratio": r["ratio_ft"],
                                   "fve": (r["fve_base"] + r["fve_ft"]) / 2, "l0": r["l0"],
                                   "dead": r["dead_fraction"], "ft_only": r["n_ft_only"],
                                   "genuine": r["n_ft_only_genuine"], "n_latents": r["n_latents"]})
per_depth = pd.DataFrame(depth_rows)
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
count_axis(ax, df["ft_only"], "y")
tidy_log(ax)
ax.set_xlabel("base perplexity on held-out corpus text")
ax.set_ylabel("fine-tune-only latents")
rp = corrs[("runs", "pooled", "ppl_ftonly")]
ax.set_title(rho_title(rp), fontsize=8)
ax.legend(fontsize=6, loc="best")
run.figures += plotting.save(fig, NB, "perplexity")
plt.close(fig)

if not len(cl):
    fig, ax = plt.subplots(figsize=(7.4, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, "no run had live fine-tune-only latents to clamp", ha="center", va="center")
    run.figures += plotting.save(fig, NB, "clamping")
    plt.close(fig)
else:
    long = []
    for r in cl.itertuples():
        for k, lab in (("clamp", "clamp S"), ("random", "random latents"), ("noise", "matched noise")):
            long.append({"run": f"{r.model.split('-')[0]}/{r.corpus}/s{r.seed}", "condition": lab,
                         "frac": getattr(r, f"fr_{k}"), "lo": getattr(r, f"fr_{k}_lo"), "hi": getattr(r, f"fr_{k}_hi")})
    long = pd.DataFrame(long)
    fig, ax = plt.subplots(figsize=(7.4, 3.0))
    runs_ = long.run.unique()
    conds = long.condition.unique()
    w = 0.8 / len(conds)
    for i, cnd in enumerate(conds):
        sub = long[long.condition == cnd].set_index("run").loc[runs_]
        xs = np.arange(len(runs_)) + (i - (len(conds) - 1) / 2) * w
        ax.bar(xs, sub.frac, width=w, label=cnd, yerr=[sub.frac - sub.lo, sub.hi - sub.frac], capsize=1.5,
               error_kw={"lw": 0.6})
    ax.set_xticks(np.arange(len(runs_)), runs_, rotation=60, ha="right", fontsize=6)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_ylabel("fraction of KL removed")
    ax.legend(fontsize=7)
    fig.tight_layout()
    run.figures += plotting.save(fig, NB, "clamping")
    plt.close(fig)

# %% [markdown]
# ## Tables: statistics, the seed study beside ours, regimes

# %%
fmt = results.format_number


def ci(r):
    return f"[{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"


def pstr(r):
    return fmt(r["p_value"], 2) + (r"$^{e}$" if r["p_method"] == "exact" else "")


LAB = {"ratio_kl": r"peak ratio vs KL", "ratio_disagree": r"peak ratio vs $1-$top-1",
       "genuine_kl": r"genuine FT-only latents vs KL", "late_kl": r"late $1-$CKA vs KL",
       "late_ratio": r"late $1-$CKA vs peak ratio", "ppl_ftonly": r"base ppl vs FT-only latents"}
tab_rows = []
for pair, lab in LAB.items():
    tab_rows += [r"\addlinespace"] if tab_rows else []
    for scope in [*model_names, "pooled"]:
        r = corrs[("runs", scope, pair)]
        tab_rows.append(f"{lab} & {results.tex_escape(scope)} & {r['n']} & {fmt(r['value'], 2)} & {pstr(r)} & {ci(r)}")
latex.write_table("decorrelation_stats", "llrrrl", r"pair & scope & $n$ & $\rho$ & $p$ & 95\% CI", tab_rows)

# The seed study's values (Blackwell & Holman; blog posts and podcast, no paper): theirs, quoted, not measured here.
SEED = {"pooled": ("+0.71", "12", "all runs, Llama 3B/8B/70B"),
        "within": ("-0.80", "4", "within 70B; exact $p=0.33$"),
        "ppl": ("-0.80", "4", "70B, base ppl vs novel features")}
rp_, rw_ = corrs[("runs", "pooled", "ratio_kl")], corrs[("corpus_means", model_names[-1], "ratio_kl")]
rpl = corrs[("runs", "pooled", "ppl_ftonly")]
latex.write_table("seed_reference", "lllll",
                  r"statistic & seed study $\rho$ ($n$) & their scope & ours $\rho$ ($n$, $p$) & our scope", [
         rf"internal vs output & {SEED['pooled'][0]} ({SEED['pooled'][1]}) & {SEED['pooled'][2]} & "
         rf"{fmt(rp_['value'], 2)} ({rp_['n']}, {pstr(rp_)}) & all runs, both models",
         rf"internal vs output, largest model & {SEED['within'][0]} ({SEED['within'][1]}) & {SEED['within'][2]} & "
         rf"{fmt(rw_['value'], 2)} ({rw_['n']}, {pstr(rw_)}) & {results.tex_escape(model_names[-1])}, corpus means",
         rf"perplexity vs novel latents & {SEED['ppl'][0]} ({SEED['ppl'][1]}) & {SEED['ppl'][2]} & "
         rf"{fmt(rpl['value'], 2)} ({rpl['n']}, {pstr(rpl)}) & all runs"])

tab_rows = []
for r in regimes.itertuples():
    tab_rows.append(f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & {fmt(r.peak_ratio, 3)} & "
                     f"{fmt(r.genuine, 3)} & {fmt(r.late_disp, 2)} & {fmt(r.kl, 2)} & {r.regime} & {r.regime_cka}")
latex.write_table("regimes", "llrrrrll",
                  r"model & corpus & peak ratio & genuine & late $1-$CKA & KL & regime (crosscoder) & regime (CKA)", tab_rows)

cc_tab = per_depth.groupby(["model", "corpus"], as_index=False).agg(
    fve=("fve", "mean"), l0=("l0", "mean"), dead=("dead", "mean"), n_latents=("n_latents", "first"))
cc_tab = cc_tab.merge(means[["model", "corpus", "peak_ratio", "ft_only", "genuine"]], on=["model", "corpus"])
peak_depth = df.groupby(["model", "corpus"]).peak_depth.mean().rename("peak_depth").reset_index()
cc_tab = cc_tab.merge(peak_depth, on=["model", "corpus"])
tab_rows = []
for r in cc_tab.itertuples():
    tab_rows.append(f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & {int(r.n_latents)} & "
                     f"{fmt(r.fve, 3)} & {fmt(r.l0, 3)} & {fmt(r.dead, 2)} & {fmt(r.ft_only, 3)} & {fmt(r.genuine, 3)} & "
                     f"{fmt(r.peak_ratio, 3)} ({fmt(r.peak_depth, 2)})")
latex.write_table("crosscoder", "llrrrrrrr",
                  r"model & corpus & latents & FVE & $L_0$ & dead & FT-only & genuine & peak ratio (depth)", tab_rows)

# %% [markdown]
# ## Export: findings, values and macros

# %%
def finding(r):
    return {k: r[k] for k in ("value", "n", "p_value", "p_method", "ci_low", "ci_high") if k in r}


findings = {"rho_ratio_kl_pooled": finding(corrs[("runs", "pooled", "ratio_kl")]),
            "rho_ppl_ftonly_pooled": finding(corrs[("runs", "pooled", "ppl_ftonly")]),
            "regime_agreement": {"value": float(regimes.agree.mean()), "n": int(len(regimes))}}
for m in model_names:
    findings[f"rho_ratio_kl_{m}"] = finding(corrs[("runs", m, "ratio_kl")])
    findings[f"rho_ratio_kl_{m}_means"] = finding(corrs[("corpus_means", m, "ratio_kl")])
NAN = {"value": math.nan, "n": int(len(cl)), "p_value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
for ctl in ("random", "noise"):  # always present (nan when fewer than two runs had latents to clamp)
    findings[f"clamp_minus_{ctl}"] = finding(clamp_eff[ctl]) if ctl in clamp_eff else dict(NAN)
findings["frac_removed_clamp_mean"] = {"value": float(cl.fr_clamp.mean()) if len(cl) else math.nan,
                                       "n": int(len(cl)), "ci_low": clamp_mean[0], "ci_high": clamp_mean[1]}
for ctl in ("random", "noise"):
    findings[f"frac_removed_{ctl}_mean"] = {"value": float(cl[f"fr_{ctl}"].mean()) if len(cl) else math.nan,
                                            "n": int(len(cl))}

run.values.update({
    "runs": df.to_dict("records"), "corpus_means": means.to_dict("records"),
    "correlations": [{"unit": u, "scope": s, "pair": p, **r} for (u, s, p), r in corrs.items()],
    "reliability": reliab, "regimes": regimes.to_dict("records"), "clamp_effects": clamp_eff,
    "findings": findings, "regime_rule": "within-model median split of corpus means (peak ratio or late 1-CKA; KL)",
})


def macro(name, value, digits=3):
    """A number macro; NaN (not computable in this profile, e.g. one seed) prints as a text dash, also in math."""
    if isinstance(value, float) and math.isnan(value):
        return run.macro(name, r"\text{--}", raw=True)
    return run.macro(name, value, digits=digits)


def tex_key(s):
    return "".join(w.capitalize() for w in s.replace("-", "_").split("_"))


# Macros: model-independent findings, and the within-model ones of the largest model (the last in model_names)
# under a fixed name, so the paper's text compiles for every profile; per-model values are in the tables.
largest = model_names[-1]
macro_findings = {k: f for k, f in findings.items() if not any(k.endswith(m) or k.endswith(m + "_means")
                                                                for m in model_names)}
macro_findings["rho_ratio_kl_largest"] = findings[f"rho_ratio_kl_{largest}"]
macro_findings["rho_ratio_kl_largest_means"] = findings[f"rho_ratio_kl_{largest}_means"]
run.macro("LargestModel", results.tex_escape(largest), raw=True)
for key, f in macro_findings.items():
    name = tex_key(key)
    macro(name, f["value"], digits=2)
    if "n" in f:
        macro(name + "N", f["n"])
    if "p_value" in f:
        macro(name + "P", f["p_value"], digits=2)
    if "ci_low" in f:
        macro(name + "Lo", f["ci_low"], digits=2)
        macro(name + "Hi", f["ci_high"], digits=2)
macro("NRuns", int(len(df)))
macro("NModels", len(model_names))
macro("NCorpora", len(corpus_names))
macro("NSeeds", len(seeds))
n_seeds = {m: len(seeds_by_model.get(m, seeds)) for m in model_names}
grid_desc = f"{len(model_names)} models $\\times$ {len(corpus_names)} corpora $\\times$ "
if len(set(n_seeds.values())) == 1:
    grid_desc += f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}"
else:
    grid_desc += "seeds: " + ", ".join(f"{n} for {results.tex_escape(m)}" for m, n in n_seeds.items())
run.macro("GridDesc", grid_desc, raw=True)
macro("NClampRuns", int(len(cl)))
macro("NClampFtOnly", int(cl.clamp_ft_only.sum()) if len(cl) else 0)
macro("NClampTopR", int((~cl.clamp_ft_only.astype(bool)).sum()) if len(cl) else 0)
macro("PeakRatioMax", float(df.peak_ratio.max()))
macro("PeakRatioMin", float(df.peak_ratio.min()))
macro("KlMax", float(df.kl.max()))
macro("KlMin", float(df.kl.min()))
macro("FveMin", float(per_depth.fve.min()))
macro("FveMax", float(per_depth.fve.max()))
macro("DeadMax", float(per_depth.dead.max()))
macro("LZeroMean", float(per_depth.l0.mean()))
macro("NDepths", int(per_depth.groupby(["model", "corpus", "seed"]).size().min()))
macro("FtOnlyTotal", int(df.ft_only.sum()))
macro("GenuineTotal", int(df.genuine.sum()))
macro("NRunsWithGenuine", int((df.genuine > 0).sum()))
macro("PeakDepthMedian", float(df.peak_depth.median()))
macro("NRegimeAgree", int(regimes.agree.sum()))
macro("NRegimeRows", int(len(regimes)))
for col in ("kl", "disagree", "peak_ratio", "genuine", "late_disp"):  # nan (a dash) with one seed
    r = reliab.get(col, {"value": math.nan, "p_value": math.nan})
    macro(f"Reliab{tex_key(col)}", r["value"], digits=2)
    macro(f"Reliab{tex_key(col)}P", r["p_value"], digits=2)
for key in ("rho_ratio_kl_pooled",):
    f = findings[key]
    sig = f["p_value"] < 0.05
    verdict = ("without a p-value (fewer than 3 runs)" if not math.isfinite(f["p_value"])
               else "significant at 0.05" if sig else "not significant at 0.05")
    run.macro(tex_key(key) + "Verdict", verdict, raw=True)
    run.macro(tex_key(key) + "Sign", "positive" if f["value"] > 0 else "negative" if f["value"] < 0 else "zero",
              raw=True)
# the perplexity correlation is undefined (a dash) when one side does not vary: say so instead of leaving a dash
ppl_rows = df[np.isfinite(df.ppl_base) & np.isfinite(df.ft_only)]
ft_counts = sorted({int(v) for v in ppl_rows.ft_only})
ppl_note = ""
if not math.isfinite(findings["rho_ppl_ftonly_pooled"]["value"]):
    if len(ppl_rows) < 2:
        ppl_note = " The correlation is undefined here (fewer than two runs)."
    elif len(ft_counts) == 1:
        ppl_note = (f" The correlation is undefined here: all {len(ppl_rows)} runs flag {ft_counts[0]} "
                    "fine-tune-only latents, so there is no ranking to correlate with perplexity.")
    else:
        ppl_note = " The correlation is undefined here: base perplexity does not vary across runs."
run.macro("PplFtonlyNote", ppl_note, raw=True)
print(run.write())
