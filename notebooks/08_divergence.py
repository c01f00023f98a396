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
# # 08 — Output divergence across the grid
# Draws the paper's spine figures from every `01_finetune` and `02_capture` run of the grid (through the results
# API): loss curves, KL(base||ft) and top-1 agreement per corpus x model, and the per-layer activation change
# (and its late/early ratio per model: mean relative change over the final `late_frac` share of layers over the
# first `late_frac` share, `adapterscope.depth.late_over_early`); beside them a LaTeX table and the macros the
# text quotes.
#
# **Reads** every main-grid cell's `results/01_finetune` and `02_capture` runs. **Writes**
# `results/08_divergence/grid.json`, `paper/generated/08_divergence/`, `paper/generated/tables/{divergence,corpora}.tex`,
# `figures/08_divergence/`. **Rerun alone:** `make notebook NB=08_divergence` (after the grid). **Feeds** the
# output-change table of the results section; no finding directly.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
layer_controls = ["none"]  # layer controls of the grid
seeds = [0]  # seeds of the grid
seeds_by_model = {}  # model -> its seeds where they differ by model (the profile's grid.seeds mapping); else `seeds`
profile = "default"  # name of the profile that produced the runs (printed in the paper)
eval_set = "neutral"  # neutral | heldout: which set the headline numbers use
late_frac = 0.3  # the final share of layers that counts as late (and the first share as early), as in 04 and 08

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from adapterscope import depth, plotting, results

plotting.setup()
NB = "08_divergence"
run = results.Run(NB, "grid", params=P, seed=None)
rows, curves, layer_rows = [], [], []
for m in model_names:
    for c in corpus_names:
        for lc in layer_controls:
            for s in seeds_by_model.get(m, seeds):
                rid = params.run_key(m, c, lc, f"s{s}")
                ft, cap = results.load("01_finetune", rid), results.load("02_capture", rid)
                run.add_input(f"01/{rid}", results.sha256_file(results.results_path("01_finetune", rid)))
                run.add_input(f"02/{rid}", results.sha256_file(results.results_path("02_capture", rid)))
                for set_name, d in cap["values"]["divergence"].items():
                    rows.append({"model": m, "corpus": c, "layer_control": lc, "seed": s, "set": set_name,
                                 "kl": d["kl"], "kl_lo": d["kl_ci95"][0], "kl_hi": d["kl_ci95"][1],
                                 "top1": d["top1_agreement"], "ppl_base": d["ppl_base"], "ppl_ft": d["ppl_ft"],
                                 "final_loss": ft["values"]["final_loss"]})
                curves += [{"model": m, "corpus": c, "layer_control": lc, "seed": s, "step": i + 1, "loss": v}
                           for i, v in enumerate(ft["values"]["losses"])]
                L = cap["values"]["num_layers"]
                for key, v in cap["values"]["layer_change"][eval_set].items():
                    layer = int(key.split(".")[1])
                    layer_rows.append({"model": m, "corpus": c, "layer_control": lc, "seed": s,
                                       "site": key.split("hook_")[1], "layer": layer,
                                       "depth": layer / max(L - 1, 1), "rel_change": v})
df, curves, layers = pd.DataFrame(rows), pd.DataFrame(curves), pd.DataFrame(layer_rows)
main = df[(df.set == eval_set) & (df.layer_control == layer_controls[0])]
main.groupby(["model", "corpus"])[["kl", "top1", "ppl_base", "ppl_ft"]].mean()

# %% [markdown]
# ## Figures

# %%
g = sns.relplot(curves, x="step", y="loss", hue="corpus", col="model", kind="line", height=2.6, aspect=1.3,
                facet_kws={"sharey": False}, errorbar=None)
g.set_axis_labels("optimizer step", "training loss (nats/token)")
run.figures += plotting.save(g.figure, NB, "loss_curves")
plt.close(g.figure)

fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.8))
summ = main.groupby(["model", "corpus"], as_index=False).agg(kl=("kl", "mean"), top1=("top1", "mean"))
sns.barplot(main, x="corpus", y="kl", hue="model", ax=axes[0], errorbar=("ci", 95) if len(seeds) > 1 else None)
axes[0].set_ylabel(r"KL(base $\|$ ft), nats/token")
sns.barplot(main, x="corpus", y="top1", hue="model", ax=axes[1], errorbar=("ci", 95) if len(seeds) > 1 else None)
axes[1].set_ylabel("top-1 agreement with base")
axes[1].set_ylim(0, 1)
for ax in axes:
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=20)
axes[1].get_legend().remove()
run.figures += plotting.save(fig, NB, "kl_top1")
plt.close(fig)

sub = layers[(layers.site == "resid_post") & (layers.layer_control == layer_controls[0])]
g = sns.relplot(sub, x="depth", y="rel_change", hue="corpus", col="model", kind="line", height=2.6, aspect=1.3,
                errorbar=None, marker="o", markersize=3)
g.set_axis_labels("relative depth (layer / (L-1))", r"$\|a_{ft}-a_{base}\|/\|a_{base}\|$")
run.figures += plotting.save(g.figure, NB, "layer_change")
plt.close(g.figure)

# %% [markdown]
# ## Export: a table and the macros the text quotes

# %%
def fmt(x, d=3):
    return results.format_number(x, d)


tab = main.groupby(["model", "corpus"], as_index=False).agg(
    kl=("kl", "mean"), kl_lo=("kl_lo", "mean"), kl_hi=("kl_hi", "mean"), top1=("top1", "mean"),
    ppl_base=("ppl_base", "mean"), ppl_ft=("ppl_ft", "mean"))
tab_rows = []
for r in tab.itertuples():
    tab_rows.append(f"{results.tex_escape(r.model)} & {results.tex_escape(r.corpus)} & {fmt(r.kl)} "
                     f"[{fmt(r.kl_lo)}, {fmt(r.kl_hi)}] & {fmt(100 * r.top1)} & {fmt(r.ppl_base)} & {fmt(r.ppl_ft)}")
latex.write_table("divergence", "llrrrr", r"model & corpus & KL (95\% CI) & top-1 (\%) & ppl base & ppl ft", tab_rows)

# where each named corpus comes from (read at run time, never committed): kind, source, licence, size, digest
from adapterscope import corpora  # noqa: E402

prov = corpora.provenance_table([c for c in corpus_names if c in corpora.CORPUS_INFO])
for r in prov:
    run.add_input(f"corpus/{r['name']}", r["sha256"])
latex.write_table("corpora", "llp{5.2cm}p{3.2cm}rr", r"corpus & kind & source & licence & documents & characters",
                  [f"{results.tex_escape(r['name'])} & {results.tex_escape(r['kind'])} & "
                   f"{results.tex_escape(r['source'])} & {results.tex_escape(r['licence'])} & {fmt(r['documents'])} & "
                   f"{fmt(r['characters'])}" for r in prov])

top = tab.sort_values("kl").iloc[-1]
low = tab.sort_values("kl").iloc[0]
late_over_early = depth.late_over_early(sub, "rel_change", "model", late_frac)
run.values.update({"table": tab.to_dict("records"), "late_over_early": late_over_early.to_dict(),
                   "corpora": prov,
                   "n_runs": int(len(main))})
run.macro("NRuns", int(len(main)))
run.macro("NModels", len(model_names))
run.macro("NCorpora", len(corpus_names))
run.macro("MaxKL", top.kl)
run.macro("MaxKLModel", results.tex_escape(top.model), raw=True)
run.macro("MaxKLCorpus", results.tex_escape(top.corpus), raw=True)
run.macro("MinKL", low.kl)
run.macro("MinKLModel", results.tex_escape(low.model), raw=True)
run.macro("MinKLCorpus", results.tex_escape(low.corpus), raw=True)
run.macro("MinTopOne", 100 * tab.top1.min())
run.macro("MaxTopOne", 100 * tab.top1.max())
run.macro("LateOverEarlyMin", float(late_over_early.min()))
run.macro("LateOverEarlyMax", float(late_over_early.max()))
run.macro("Profile", results.tex_escape(profile), raw=True)
print(run.write())
