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
# # 04 — CKA and the depth profile, with the equal-step control
# Takes the per-layer linear CKA between base and fine-tuned residual streams that `02_capture` streamed
# (exact, over all tokens of its neutral and held-out sets, with delete-one-block jackknife standard errors)
# for every adapter of the grid, and asks where in depth the adapter moves the representation.
#
# * **Displacement** at layer l: 1 - CKA_l (debiased CKA, unbiased HSIC; the biased value is kept too).
# * **Late-layer displacement**: mean displacement over the final `late_frac` share of layers (default 30%).
# * **Depth-profile slope**: least-squares slope of log10 displacement against relative depth l / (L - 1),
#   in decades per unit depth; positive means change concentrates near the output. CIs by a parametric
#   bootstrap over token samples: each layer's CKA is redrawn from a normal with its jackknife standard error.
# * **The control of Billa (2026)**: the same fine-tunes with `layer_control=equal_step` (every layer's relative
#   weight update ||dW_l|| / ||W_l|| equalised after every optimizer step). If the profile stays steep under
#   equal steps, the concentration near the output is not an artefact of larger late-layer gradient steps.
# * Where `03_crosscoder` ran, the rank agreement between displacement and the crosscoder's cross/self ratio
#   across the crosscoder's layers: Spearman's rho per run, and their mean over runs.
# * Tests over runs (the units; a run's layers are not independent): the mean per-run slope (finding
#   `depth-slope`), the mean equal-step-minus-standard slope difference over control pairs, and the mean per-run
#   agreement rho, each with a 95% bootstrap CI over runs and a two-sided sign-flip permutation p
#   (`adapterscope.depth`).
# * **Trimmed**: massive-activation tokens (a few separators with norms 10-1000x the median) carry most of
#   1 - CKA in most SmolLM2 runs, so every slope is also read without them (`02_capture`'s trimmed CKA): the
#   trimmed mean slope (finding `depth-slope-trimmed`) and the trimmed equal-step-minus-standard difference over
#   model x corpus units, tested with a one-sample t-test (no floor; the sign-flip p beside it), which decides the
#   seed's question (finding `depth-equal-step`).
#
# **Reads** every grid cell's `results/01_finetune`, `02_capture` and `03_crosscoder` runs (standard and
# equal-step). **Writes** `results/04_cka/grid.json`, `paper/generated/04_cka/`, `paper/generated/tables/cka_*.tex`,
# `figures/04_cka/`. **Rerun alone:** `make notebook NB=04_cka` (after the grid). **Feeds** the depth-profile
# results; findings `depth-slope`, `depth-slope-trimmed`, `depth-equal-step`.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the main grid
layer_controls = ["none"]  # layer controls of the main grid
seeds = [0]  # seeds of the main grid
seeds_by_model = {}  # model -> its seeds where they differ by model (the profile's grid.seeds mapping); else `seeds`
control = "equal_step"  # layer control of the control runs; empty string for none
control_models = ["smollm2-135m", "gemma3-270m"]  # models that also have control runs
control_corpora = ["meditations", "dtc-ads"]  # corpora that also have control runs
control_seeds = [0]  # seeds of the control runs
profile = "default"  # profile name (printed in the paper)
late_frac = 0.3  # the final share of layers that counts as late
n_boot = 2000  # parametric bootstrap draws for slope CIs; also the bootstrap resamples of the over-runs CIs
n_perm = 9999  # sign-flip permutations of the over-runs tests (all sign patterns when there are fewer)
boot_seed = 0  # seed of the bootstraps and permutations

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from adapterscope import depth, plotting, results

plotting.setup()
NB = "04_cka"
run = results.Run(NB, "grid", params=P, seed=boot_seed)
cells = depth.run_cells(model_names, corpus_names, layer_controls, lambda m: seeds_by_model.get(m, seeds),
                        control, control_models, control_corpora, control_seeds)
df, weights = depth.load_cka(cells, on_input=run.add_input)
df.groupby(["model", "layer_control"]).disp.describe()

# %% [markdown]
# ## Slopes with parametric-bootstrap CIs over token samples, and the mean slope tested over runs

# %%
slopes, boots = depth.slope_table(df, late_frac=late_frac, n_boot=n_boot, seed=boot_seed)
over_runs = {"n_boot": n_boot, "n_perm": n_perm, "seed": boot_seed}
slope_mean = depth.slope_finding(slopes, layer_controls[0], **over_runs)
print("mean slope over runs:", slope_mean)
slopes

# %% [markdown]
# ## Standard vs equal-step: does change still concentrate near the output?

# %%
pairs = [(m, c, s) for m in control_models for c in control_corpora for s in control_seeds] if control else []
ctl = depth.control_table(slopes, boots, control, pairs)
control_diff = depth.control_diff_finding(ctl, **over_runs)
print("equal-step minus standard, over pairs:", control_diff)
ctl

# %% [markdown]
# ## The same without the massive-activation tokens (the runs that recorded trimmed CKA)

# %%
df_t = depth.trimmed(df)
if len(df_t):
    slopes_t, boots_t = depth.slope_table(df_t, late_frac=late_frac, n_boot=n_boot, seed=boot_seed)
else:
    slopes_t, boots_t = slopes.iloc[0:0], {}
slope_mean_t = depth.slope_finding(slopes_t, layer_controls[0], **over_runs)
ctl_t = depth.control_table(slopes_t, boots_t, control, pairs)
control_diff_t = depth.control_diff_finding(ctl_t, p_test="t", **over_runs)
print("trimmed mean slope:", slope_mean_t)
print("trimmed equal-step minus standard, over model x corpus units:", control_diff_t)
ctl_t

# %% [markdown]
# ## Agreement with the crosscoder (where it ran): per-run rank correlation, tested over runs

# %%
agree_runs, agreement = depth.crosscoder_agreement(df, depth.load_crosscoder_ratios(cells, run.add_input),
                                                   **over_runs)
print(agreement)
agree_runs

# %% [markdown]
# ## Figures

# %%
main = df[df.layer_control == layer_controls[0]]
g = sns.relplot(main, x="depth", y="disp", hue="corpus", col="model", kind="line", marker="o", markersize=3,
                height=2.6, aspect=1.3, errorbar=None)
g.set(yscale="log")
g.set_axis_labels("relative depth (layer / (L-1))", r"displacement $1-\mathrm{CKA}$ (debiased)")
run.figures += plotting.save(g.figure, NB, "displacement")
plt.close(g.figure)

if control and len(ctl):
    sub = df[df.corpus.isin(control_corpora) & df.seed.isin(control_seeds)]
    g = sns.relplot(sub, x="depth", y="disp", hue="corpus", style="layer_control", col="model", kind="line",
                    marker="o", markersize=3, height=2.6, aspect=1.3, errorbar=None)
    g.set(yscale="log")
    g.set_axis_labels("relative depth", r"$1-\mathrm{CKA}$")
    run.figures += plotting.save(g.figure, NB, "control_displacement")
    plt.close(g.figure)
    wsub = weights[weights.corpus.isin(control_corpora) & weights.seed.isin(control_seeds)]
    g = sns.relplot(wsub, x="depth", y="update_ratio", hue="corpus", style="layer_control", col="model",
                    kind="line", height=2.4, aspect=1.3, errorbar=None)
    g.set_axis_labels("relative depth", r"$\|\Delta W_l\|_F / \|W_l\|_F$")
    run.figures += plotting.save(g.figure, NB, "control_update_ratio")
    plt.close(g.figure)

# %% [markdown]
# ## Export: tables and macros

# %%
fmt = results.format_number
tab_rows = []
for r in slopes[slopes.layer_control == layer_controls[0]].groupby(["model", "corpus"], as_index=False).mean(
        numeric_only=True).itertuples():
    tab_rows.append(f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & {fmt(r.late_disp)} & "
                     f"{fmt(r.late_over_early)} & {fmt(r.slope)} [{fmt(r.slope_lo)}, {fmt(r.slope_hi)}]")
latex.write_table("cka_slopes", "llrrl", r"model & corpus & late $1-\mathrm{CKA}$ & late/early & slope (95\% CI)", tab_rows)



def control_rows(t):  # one row per control pair: both slopes and their difference, each with its 95% CI
    return [f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & "
            f"{fmt(r.slope_none)} [{fmt(r.none_lo)}, {fmt(r.none_hi)}] & "
            f"{fmt(r.slope_ctl)} [{fmt(r.ctl_lo)}, {fmt(r.ctl_hi)}] & "
            f"{fmt(r.diff)} [{fmt(r.diff_lo)}, {fmt(r.diff_hi)}]" for r in t.itertuples()]


latex.write_table("cka_control", "lllll", r"model & corpus & slope, standard & slope, equal-step & difference",
                  control_rows(ctl))
latex.write_table("cka_control_trimmed", "lllll",
                  r"model & corpus & trimmed slope, standard & trimmed slope, equal-step & difference",
                  control_rows(ctl_t))

std = slopes[slopes.layer_control == layer_controls[0]]
run.values.update({"slopes": slopes.to_dict("records"), "control": ctl.to_dict("records"),
                   "agreement": {**agreement, "rho": agreement["rho_pooled"], "p": agreement["p_value"],
                                 "per_run": agree_runs.to_dict("records")},
                   "slopes_trimmed": slopes_t.to_dict("records"), "control_trimmed": ctl_t.to_dict("records"),
                   "per_layer": df.to_dict("records"), "n_runs": int(len(slopes)), "n_tokens_min": int(df.n_tokens.min()),
                   "findings": {
                       "slope_min": {"value": float(std.slope.min()), "n": int(len(std))},
                       "slope_mean": slope_mean, "control_slope_diff": control_diff, "agreement_rho_mean": agreement,
                       "slope_mean_trimmed": slope_mean_t, "control_slope_diff_trimmed": control_diff_t,
                       "n_positive_slope": {"value": int((std.slope_lo > 0).sum()), "n": int(len(std))},
                       "n_control_positive": {"value": int(ctl.ctl_positive.sum()), "n": int(len(ctl))}}})
run.macro("NRuns", int(len(slopes)))
run.macro("NTokensMin", int(df.n_tokens.min()))
run.macro("SlopeMin", float(std.slope.min()))
run.macro("SlopeMax", float(std.slope.max()))
run.macro("NPositiveSlope", int((std.slope_lo > 0).sum()))
run.macro("NStdRuns", int(len(std)))
run.macro("NFlooredLayers", int(slopes.n_floored.sum()))  # layers read at their jackknife SE (unresolved)
run.macro("NLayersFitted", int(len(df)))
run.macro("LateOverEarlyMedian", float(std.late_over_early.median()))
for m in model_names:
    mm = results.tex_name(m)
    sm, cm = std[std.model == m], ctl[ctl.model == m]
    run.macro(f"{mm}SlopeMean", float(sm.slope.mean()) if len(sm) else float("nan"))
    run.macro(f"{mm}CtlSlopeMean", float(cm.slope_ctl.mean()) if len(cm) else float("nan"))
    run.macro(f"{mm}StdSlopeMeanCtlCorpora", float(cm.slope_none.mean()) if len(cm) else float("nan"))
run.macro("NControl", int(len(ctl)))
run.macro("NControlPositive", int(ctl.ctl_positive.sum()))
run.macro("NControlTrimmed", int(len(ctl_t)))
for name, f in (("SlopeMean", slope_mean), ("ControlSlopeDiff", control_diff), ("AgreeRhoMean", agreement),
                ("SlopeMeanTrimmed", slope_mean_t), ("ControlSlopeDiffTrimmed", control_diff_t)):
    run.macro(name, f["value"])
    run.macro(f"{name}Lo", f["ci_low"])
    run.macro(f"{name}Hi", f["ci_high"])
    run.macro(f"{name}P", f["p_value"])
    run.macro(f"{name}N", f["n"])
run.macro("AgreeRho", agreement["rho_pooled"])  # pooled within-run ranks: a description, no p-value of its own
run.macro("AgreeP", agreement["p_value"])        # the over-runs p of the mean per-run rho (AgreeRhoMeanP)
run.macro("AgreeNRuns", agreement["n_runs"])
run.macro("AgreePairs", agreement["n_pairs"])
print(run.write())
