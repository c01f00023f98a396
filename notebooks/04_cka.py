# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # 04 — CKA and the depth profile, with the equal-step control
# Reads the per-layer linear CKA between base and fine-tuned residual streams that `02_capture` streamed
# (exact, over all tokens of its neutral and held-out sets, with delete-one-block jackknife standard errors)
# for every adapter of the grid, and asks where in depth the adapter moves the representation.
#
# * **Displacement** at layer l: 1 - CKA_l (debiased CKA, unbiased HSIC; the biased value is kept too).
# * **Late-layer displacement**: mean displacement over the final 30% of layers.
# * **Depth-profile slope**: least-squares slope of log10 displacement against relative depth l / (L - 1),
#   in decades per unit depth; positive means change concentrates near the output. CIs by a parametric
#   bootstrap over token samples: each layer's CKA is redrawn from a normal with its jackknife standard error.
# * **The control of Billa (2026)**: the same fine-tunes with `layer_control=equal_step` (every layer's relative
#   weight update ||dW_l|| / ||W_l|| equalised after every optimizer step). If the profile stays steep under
#   equal steps, the concentration near the output is not an artefact of larger late-layer gradient steps.
# * Where `03_crosscoder` ran, the rank agreement between displacement and the crosscoder's cross/self ratio
#   across the crosscoder's layers.

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
n_boot = 2000  # parametric bootstrap draws for slope CIs
boot_seed = 0  # seed of the bootstrap

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from scipy import stats as sps

from adapterscope import paths, plotting, results

plotting.setup()
NB = "04_cka"
run = results.Run(NB, "grid", params=P, seed=boot_seed)
cells = [(m, c, lc, s) for m in model_names for c in corpus_names for lc in layer_controls for s in seeds_by_model.get(m, seeds)]
if control:
    cells += [(m, c, control, s) for m in control_models for c in control_corpora for s in control_seeds
              if (m, c, control, s) not in cells]
rows, wrows = [], []
for m, c, lc, s in cells:
    rid = params.run_key(m, c, lc, f"s{s}")
    cap = results.load("02_capture", rid)
    ft = results.load("01_finetune", rid)
    run.add_input(f"02/{rid}", results.sha256_file(results.results_path("02_capture", rid)))
    L = cap["values"]["num_layers"]
    for key, v in cap["values"]["cka"].items():
        layer = int(key.split(".")[1])
        rows.append({"model": m, "corpus": c, "layer_control": lc, "seed": s, "layer": layer,
                     "depth": layer / (L - 1), "L": L, "cka": v["cka"], "cka_se": v["cka_se"],
                     "cka_debiased": v["cka_debiased"], "se": v["cka_debiased_se"], "n_tokens": v["n_tokens"]})
    for layer, r in enumerate(ft["values"]["layer_update_ratio"]):
        wrows.append({"model": m, "corpus": c, "layer_control": lc, "seed": s, "layer": layer,
                      "depth": layer / (L - 1), "update_ratio": r})
df = pd.DataFrame(rows)
df["disp"] = (1 - df.cka_debiased).clip(lower=1e-9)
df["disp_biased"] = (1 - df.cka).clip(lower=1e-9)
weights = pd.DataFrame(wrows)
df.groupby(["model", "layer_control"]).disp.describe()

# %% [markdown]
# ## Slopes with parametric-bootstrap CIs over token samples

# %%
rng = np.random.default_rng(boot_seed)


def slope(depth, disp):
    return float(np.polyfit(depth, np.log10(np.clip(disp, 1e-9, None)), 1)[0])


def boot_slopes(g):
    d = g.depth.to_numpy()
    draws = rng.normal(g.cka_debiased.to_numpy()[None], g.se.to_numpy()[None], size=(n_boot, len(g)))
    disp = np.clip(1 - draws, 1e-9, None)
    X = np.vstack([d, np.ones_like(d)]).T
    coef = np.linalg.lstsq(X, np.log10(disp).T, rcond=None)[0][0]
    return coef


srows, boots = [], {}
for (m, c, lc, s), g in df.groupby(["model", "corpus", "layer_control", "seed"]):
    g = g.sort_values("layer")
    b = boot_slopes(g)
    boots[(m, c, lc, s)] = b
    late = g[g.depth >= 1 - late_frac - 1e-9].disp.mean()
    early = g[g.depth <= late_frac + 1e-9].disp.mean()
    srows.append({"model": m, "corpus": c, "layer_control": lc, "seed": s, "slope": slope(g.depth, g.disp),
                  "slope_lo": float(np.quantile(b, 0.025)), "slope_hi": float(np.quantile(b, 0.975)),
                  "late_disp": float(late), "late_over_early": float(late / early)})
slopes = pd.DataFrame(srows)
slopes

# %% [markdown]
# ## Standard vs equal-step: does change still concentrate near the output?

# %%
crow = []
if control:
    for m in control_models:
        for c in control_corpora:
            for s in control_seeds:
                a, b = boots.get((m, c, "none", s)), boots.get((m, c, control, s))
                if a is None or b is None:
                    continue
                sa = slopes.query("model == @m and corpus == @c and seed == @s and layer_control == 'none'").iloc[0]
                sb = slopes.query("model == @m and corpus == @c and seed == @s and layer_control == @control").iloc[0]
                diff = b - a
                crow.append({"model": m, "corpus": c, "seed": s, "slope_none": sa.slope, "none_lo": sa.slope_lo,
                             "none_hi": sa.slope_hi, "slope_ctl": sb.slope, "ctl_lo": sb.slope_lo,
                             "ctl_hi": sb.slope_hi, "diff": sb.slope - sa.slope,
                             "diff_lo": float(np.quantile(diff, 0.025)), "diff_hi": float(np.quantile(diff, 0.975)),
                             "ctl_positive": bool(sb.slope_lo > 0)})
ctl = pd.DataFrame(crow)
ctl

# %% [markdown]
# ## Agreement with the crosscoder (where it ran)

# %%
arows = []
for m, c, lc, s in cells:
    rid = params.run_key(m, c, lc, f"s{s}")
    try:
        cc = results.load("03_crosscoder", rid)
    except FileNotFoundError:
        continue
    run.add_input(f"03/{rid}", results.sha256_file(results.results_path("03_crosscoder", rid)))
    per = pd.DataFrame(cc["values"]["per_layer"])
    g = df[(df.model == m) & (df.corpus == c) & (df.layer_control == lc) & (df.seed == s)].set_index("layer")
    per["disp"] = per.layer.map(g.disp)
    arows += [{"model": m, "corpus": c, "seed": s, "layer": r.layer, "disp": r.disp, "ratio_ft": r.ratio_ft}
              for r in per.itertuples()]
agree = pd.DataFrame(arows)
if len(agree):
    # within-run ranks across the crosscoder's layers, pooled over runs (each run contributes its layer order)
    agree["disp_rank"] = agree.groupby(["model", "corpus", "seed"]).disp.rank()
    agree["ratio_rank"] = agree.groupby(["model", "corpus", "seed"]).ratio_ft.rank()
    rho, p = sps.spearmanr(agree.disp_rank, agree.ratio_rank)
    agreement = {"rho": float(rho), "p": float(p), "n_pairs": int(len(agree)),
                 "n_runs": int(agree.groupby(["model", "corpus", "seed"]).ngroups)}
else:
    agreement = {"rho": float("nan"), "p": float("nan"), "n_pairs": 0, "n_runs": 0}
agreement

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

tab_rows = []
for r in ctl.itertuples():
    tab_rows.append(f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & "
                     f"{fmt(r.slope_none)} [{fmt(r.none_lo)}, {fmt(r.none_hi)}] & "
                     f"{fmt(r.slope_ctl)} [{fmt(r.ctl_lo)}, {fmt(r.ctl_hi)}] & "
                     f"{fmt(r.diff)} [{fmt(r.diff_lo)}, {fmt(r.diff_hi)}]")
latex.write_table("cka_control", "lllll", r"model & corpus & slope, standard & slope, equal-step & difference", tab_rows)

std = slopes[slopes.layer_control == layer_controls[0]]
run.values.update({"slopes": slopes.to_dict("records"), "control": ctl.to_dict("records"),
                   "agreement": agreement, "per_layer": df.to_dict("records"),
                   "n_runs": int(len(slopes)), "n_tokens_min": int(df.n_tokens.min()),
                   "findings": {
                       "slope_min": {"value": float(std.slope.min()), "n": int(len(std))},
                       "n_positive_slope": {"value": int((std.slope_lo > 0).sum()), "n": int(len(std))},
                       "n_control_positive": {"value": int(ctl.ctl_positive.sum()) if len(ctl) else 0,
                                              "n": int(len(ctl))}}})
run.macro("NRuns", int(len(slopes)))
run.macro("NTokensMin", int(df.n_tokens.min()))
run.macro("SlopeMin", float(std.slope.min()))
run.macro("SlopeMax", float(std.slope.max()))
run.macro("NPositiveSlope", int((std.slope_lo > 0).sum()))
run.macro("NStdRuns", int(len(std)))
run.macro("LateOverEarlyMedian", float(std.late_over_early.median()))
for m in model_names:
    mm = results.tex_name(m)
    sm = std[std.model == m]
    run.macro(f"{mm}SlopeMean", float(sm.slope.mean()) if len(sm) else float("nan"))
    cm = ctl[ctl.model == m] if len(ctl) else ctl
    run.macro(f"{mm}CtlSlopeMean", float(cm.slope_ctl.mean()) if len(cm) else float("nan"))
    run.macro(f"{mm}StdSlopeMeanCtlCorpora", float(cm.slope_none.mean()) if len(cm) else float("nan"))
run.macro("NControl", int(len(ctl)))
run.macro("NControlPositive", int(ctl.ctl_positive.sum()) if len(ctl) else 0)
run.macro("AgreeRho", agreement["rho"])
run.macro("AgreeP", agreement["p"])
run.macro("AgreeNRuns", agreement["n_runs"])
run.macro("AgreePairs", agreement["n_pairs"])
print(run.write())
