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
# # 07 — Portability: does an adapter's function transfer to another architecture while its geometry does not?
# For each case of the profile's `grid.portability` block (a source model's main-grid adapter on one corpus, and
# a target model of another architecture), `adapterscope.portability.run_case` measures:
# * **function**: held-out per-character NLL (the two tokenizers differ, so loss is per character of the same
#   strings) of the target base (floor), a LoRA trained on the corpus on the target (ceiling, same protocol as the
#   source adapter), a LoRA trained only on text the adapted source wrote from neutral prompts (distillation through
#   text, Trans-LoRA style: the corpus is never seen), and the target base with the source adapter's residual edit
#   carried through least-squares maps between the two residual spaces (geometry only, no training); recovery =
#   (L_base - L_transfer) / (L_base - L_direct), with a bootstrap CI over texts;
# * **geometry**: linear CKA between the source adapter's displacement (adapter on minus off) and each target
#   adapter's, on positions where both tokenizers have read the same characters, per matched relative depth,
#   against a null that shuffles the pairing;
# * **output agreement**: greedy continuations of each target against the adapted source's (string similarity).
#
# The hypotheses were fixed in `paper/findings.yml` before the first run (`port-distill`, `port-geometry-edit`,
# `port-shift`, `port-geometry-cka`); the pooled statistics are `portability.pooled_recovery`,
# `portability.shift_correlation` and `portability.geometry_excess`. A profile without a portability block writes
# undefined findings with the reason "no portability case in this profile".
#
# **Reads** `results/01_finetune` of each case's source cell (its adapter and its protocol; the corpus split is
# the source adapter's own, so held-out texts were never trained on). **Writes** `results/07_portability/grid.json`,
# `figures/07_portability/`, `paper/generated/07_portability/` and the tables `portability*`. **Rerun alone:**
# `make notebook NB=07_portability` (after the source cells' `01_finetune`). **Feeds** the findings above.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
seeds = [0, 1]  # seeds of the grid
profile = "default"  # profile name (printed in the paper)
port_pairs = [["smollm2-135m", "gemma3-270m"]]  # [source, target] pairs: the source's main-grid adapter moves to
# the target base (the target need not be in the grid)
port_corpora = ["meditations", "dtc-ads"]  # corpora whose adapters are transferred
port_seeds = [0]  # seeds of the source adapters (and of each case's sampling)
eval_texts = 48  # held-out documents scored per case
eval_chars = 300  # characters each scored text is cut to (the same strings for every model)
transfer_prompts = 48  # neutral prompts (the source base's own samples) the adapted source continues
prompt_tokens = 8  # tokens per neutral prompt
transfer_new_tokens = 96  # tokens the adapted source writes per prompt: the distillation data
temperature = 1.0  # sampling temperature of the distillation data
edit_depth = 0.75  # relative depth of the geometry-only transfer's residual edit
edit_rank = 16  # rank of the fitted residual edit
depths = [0.25, 0.5, 0.75, 1.0]  # relative depths where displacement geometry is compared
agree_prompts = 16  # prompts whose greedy continuations are compared as strings
agree_tokens = 32  # tokens per greedy continuation
n_boot = 2000  # bootstrap resamples (texts within case)
n_perm = 200  # shuffles of the CKA null per (case, depth)
n_perm_rho = 9999  # permutations of the shift correlation's null
boot_seed = 0  # seed of bootstraps and permutations
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
from tqdm.auto import tqdm

from adapterscope import latex, macros, plotting, portability, results

plotting.setup()
NB = "07_portability"
run = results.Run(NB, "grid", params=P, seed=boot_seed, device=device)
cc = portability.CaseConfig(eval_texts=eval_texts, eval_chars=eval_chars, transfer_prompts=transfer_prompts,
                            prompt_tokens=prompt_tokens, transfer_new_tokens=transfer_new_tokens,
                            temperature=temperature, edit_depth=edit_depth, edit_rank=edit_rank,
                            depths=tuple(depths), agree_prompts=agree_prompts, agree_tokens=agree_tokens,
                            n_boot=n_boot, n_perm=n_perm, seed=boot_seed)
specs = portability.case_specs(port_pairs, port_corpora, port_seeds, model_names, corpus_names)
print(f"{len(specs)} case(s):", ", ".join(s["case"] for s in specs) or "none (no portability block)")

# %% [markdown]
# ## The cases (each: two target LoRAs trained, the source's text generated, every model scored)

# %%
cases = []
for spec in tqdm(specs, desc="portability cases", disable=not progress):
    case = portability.run_spec(spec, cc, device=device, on_input=run.add_input, progress=progress)
    print(f"{spec['case']}: {case['wall_s'] / 60:.1f} min; recovery distilled "
          f"{case['recovery']['distilled']['value']:.3f}, geometry {case['recovery']['geometry']['value']:.3f}")
    cases.append(case)
df = portability.case_table(cases)
df

# %% [markdown]
# ## Pooled over cases: the four tests of the ledger

# %%
stats = {"recovery_distilled": portability.pooled_recovery(cases, "distilled", n_boot, boot_seed),
         "recovery_geometry": portability.pooled_recovery(cases, "geometry", n_boot, boot_seed),
         "shift_rho_distilled": portability.shift_correlation(cases, "distilled", n_perm_rho, n_boot, boot_seed),
         "cka_excess_distilled": portability.geometry_excess(cases, "distilled"),
         "cka_excess_direct": portability.geometry_excess(cases, "direct"),
         "cka_excess_direct_vs_distilled": portability.geometry_excess(cases, "direct_vs_distilled")}
pd.DataFrame(stats).T.reindex(columns=["value", "n", "ci_low", "ci_high", "p_value", "reason"])

# %% [markdown]
# ## Figure: function recovered vs geometry shared

# %%
geo = portability.geometry_table(cases)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.0, 3.4))
if not cases:
    fig.clear()
    fig.set_size_inches(6, 1.2)
    fig.text(0.5, 0.5, "no portability case in this profile", ha="center", va="center")
else:
    ys = range(len(df))
    for k, (m, label) in enumerate([("distilled", "distilled (text)"), ("geometry", "geometry only")]):
        x, lo, hi = df[f"rec_{m}"], df[f"rec_{m}_lo"], df[f"rec_{m}_hi"]
        ax1.errorbar(x, [y + (k - 0.5) * 0.3 for y in ys], xerr=[x - lo, hi - x], fmt="o", capsize=2, lw=1,
                     color=sns.color_palette()[k], label=label)
    ax1.set_yticks(list(ys), list(df.label), fontsize=7)
    ax1.set_ylim(len(df) - 0.5, -0.5)
    ax1.axvline(0, color="0.5", lw=0.8)
    ax1.axvline(1, color="0.5", lw=0.8, ls=":")
    ax1.axvline(0.8, color="C3", lw=0.8, ls="--", label="0.8 (Trans-LoRA target)")
    ax1.set(xlabel="recovery of the direct adapter's NLL gain (95% CI)", ylabel="")
    ax1.legend(fontsize=6, loc="best")
    # colour = comparison, line style = case (solid, dashed, ...), thin dotted = that line's shuffled null;
    # the legend is built by hand so that each case shows its own line style
    from matplotlib.lines import Line2D

    colours = dict(zip(geo.comparison.unique(), sns.color_palette()))
    styles = dict(zip(geo.label.unique(), ["-", "--", "-.", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1))] * 4))
    for (comp, lab), g in geo.groupby(["comparison", "label"], sort=False):
        ax2.plot(g.depth, g.cka, ls=styles[lab], marker="o", ms=3, lw=1.2, color=colours[comp])
        ax2.plot(g.depth, g.null_mean, ls=":", lw=0.8, color=colours[comp], alpha=0.7)
    handles = ([Line2D([], [], color=c, lw=1.5, label=k) for k, c in colours.items()]
               + [Line2D([], [], color="0.3", ls=st, lw=1.2, label=k) for k, st in styles.items()]
               + [Line2D([], [], color="0.3", ls=":", lw=0.8, label="shuffled null")])
    ax2.legend(handles=handles, fontsize=6, loc="best")
    ax2.set(xlabel="relative depth", ylabel="displacement CKA", ylim=(0, None))
    fig.tight_layout()
run.figures += plotting.save(fig, NB, "portability")
plt.close(fig)

# %% [markdown]
# ## Tables, findings, values and macros

# %%
fmt, esc = results.format_number, results.tex_escape


def ci(v, lo, hi, d=2):
    return f"{fmt(v, d)} [{fmt(lo, d)}, {fmt(hi, d)}]" if math.isfinite(v) else "undefined"


rows = [f"{esc(r.source)} $\\to$ {esc(r.target)} & {esc(r.corpus)} & {fmt(r.nll_target_base, 3)} & "
        f"{fmt(r.nll_direct, 3)} & {fmt(r.nll_distilled, 3)} & {fmt(r.nll_geometry, 3)} & "
        f"{ci(r.rec_distilled, r.rec_distilled_lo, r.rec_distilled_hi)} & "
        f"{ci(r.rec_geometry, r.rec_geometry_lo, r.rec_geometry_hi)} & {fmt(r.agree_distilled, 2)} & "
        f"{fmt(r.agree_target_base, 2)}" for r in df.itertuples()]
latex.write_table("portability", "llrrrrllrr", r"source $\to$ target & corpus & base & direct & distilled & "
                  r"geometry & rec.\ distilled & rec.\ geometry & agr.\ dist. & agr.\ base",
                  rows or [r"\multicolumn{10}{l}{no portability case in this profile} \\"])
geo_rows = [f"{esc(r.label)} & {r.depth:g} & {r.source_layer}/{r.target_layer} & {esc(r.comparison)} & "
            f"{fmt(r.cka, 3)} & {fmt(r.null_mean, 3)} & {fmt(r.z, 1)} & {fmt(r.p, 2)}" for r in geo.itertuples()]
latex.write_table("portability_geometry", "lrllrrrr", r"case & depth & layers & comparison & CKA & null & $z$ & $p$",
                  geo_rows or [r"\multicolumn{8}{l}{no portability case in this profile} \\"])

findings = {k: macros.ledger_view(v) for k, v in stats.items()}
run.values.update({"cases": cases, "stats": stats, "findings": findings, "table": df.to_dict("records"),
                   "geometry_table": geo.to_dict("records"), "n_cases": len(cases),
                   "unit": "cases (source adapter x target); texts resampled within case"})
for k, v in stats.items():
    macros.stat(run, macros.key(k), v)
macros.number(run, "NCases", len(cases))
macros.number(run, "NEvalTexts", eval_texts)
macros.number(run, "EvalChars", eval_chars)
macros.number(run, "TransferPrompts", transfer_prompts)
macros.number(run, "TransferNewTokens", transfer_new_tokens)
macros.number(run, "EditDepth", edit_depth)
macros.number(run, "EditRank", edit_rank)
run.macro("Pairs", esc("; ".join(f"{s} to {t}" for s, t in port_pairs) or "--"), raw=True)
run.macro("Corpora", esc(", ".join(port_corpora) or "--"), raw=True)
for k in ("transfer_chars", "wall_s"):
    macros.number(run, macros.key("mean_" + k), float(df[k].mean()) if len(df) else math.nan, digits=0)
for k in ("edit_fit_r2", "map_r2_to_target", "agree_distilled", "agree_geometry", "agree_direct", "agree_target_base"):
    macros.number(run, macros.key("mean_" + k), float(df[k].mean()) if len(df) else math.nan, digits=2)
print(run.write())
