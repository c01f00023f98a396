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
# # 14 — What each adapter changed, shown
# The grid's numbers say *how much* each adapter moved its model; this notebook shows *what*, per corpus, from
# the explanations `02_capture` recorded on its paired stream (`adapterscope.explain`, the same as the audit's):
# * the next tokens the adapter promotes and suppresses most, summed over every position of the neutral and
#   held-out sets (probability shift, adapted minus base);
# * the activation-difference lens (Minder et al. 2025): the mean of a_ft - a_base over the tokens that are not
#   massive activations, read through the final norm and unembedding, at the last layer and at the layer
#   nearest `mid_depth` of the depth;
# * the position of largest KL(base || ft), with its context and both models' top next tokens.
#
# **Reads** the first seed's `results/02_capture` run of every main-grid model x corpus. **Writes**
# `results/14_explanations/grid.json`, `paper/generated/tables/explanations.tex`, `figures/14_explanations/`.
# **Rerun alone:** `make notebook NB=14_explanations` (after the grid). **Feeds** the paper's "what changed"
# table; no finding directly.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid
layer_controls = ["none"]  # layer controls of the grid (the first one is shown)
seeds = [0]  # seeds of the grid (the first one is shown)
seeds_by_model = {}  # model -> its seeds where they differ by model (the profile's grid.seeds mapping); else `seeds`
profile = "default"  # name of the profile that produced the runs (printed in the paper)
n_tokens = 5  # tokens per list in the table
mid_depth = 0.67  # relative depth of the second lens column

# %%
from adapterscope import latex, params

P = params.check(globals())

# %%
import matplotlib.pyplot as plt
import pandas as pd

from adapterscope import explain, macros, plotting, results

plotting.setup()
NB = "14_explanations"
run = results.Run(NB, "grid", params=P, seed=None)
esc = results.tex_escape
rows = []
for m in model_names:
    s = seeds_by_model.get(m, seeds)[0]
    for c in corpus_names:
        rid = params.run_key(m, c, layer_controls[0], f"s{s}")
        cap = results.load("02_capture", rid)["values"]
        run.add_input(f"02/{rid}", results.sha256_file(results.results_path("02_capture", rid)))
        ex = cap.get("explain")
        if not ex:
            rows.append({"model": m, "corpus": c, "seed": s, "reason": "02_capture recorded no explanations "
                                                                      "(a run older than 2026-12-08)"})
            continue
        lens = ex["lens"]
        last = lens[-1] if lens else None
        L = cap["num_layers"]
        mid = min(lens, key=lambda e: abs(e["layer"] / (L - 1) - mid_depth)) if lens else None
        hot = ex["hotspots"][0] if ex["hotspots"] else None
        rows.append({"model": m, "corpus": c, "seed": s, "promoted": ex["promoted"][:n_tokens],
                     "suppressed": ex["suppressed"][:n_tokens], "n_positions": ex["n_positions"],
                     "lens_last": last, "lens_mid": mid, "hotspot": hot, "reason": ""})
table = pd.DataFrame(rows)
for r in rows:
    if not r["reason"]:
        print(f"{r['model']} / {r['corpus']}: promotes {explain.top_tokens_line(r['promoted'])}; "
              f"lens (layer {r['lens_last']['layer']}) {explain.top_tokens_line(r['lens_last']['promoted'])}")

# %% [markdown]
# ## Figure: the most promoted next tokens per corpus

# %%
shown = [r for r in rows if not r["reason"]]
if shown:
    n_cols = min(3, len(shown))
    n_rows = -(-len(shown) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 1.9 * n_rows), squeeze=False)
    for ax, r in zip(axes.flat, shown):
        toks = [repr(e["token"])[1:-1].replace("$", r"\$") or "(empty)" for e in r["promoted"]][::-1]  # no mathtext
        vals = [e["value"] for e in r["promoted"]][::-1]
        ax.barh(range(len(vals)), vals, color="C0")
        ax.set_yticks(range(len(vals)), toks, fontsize=6)
        ax.set_title(f"{r['model']} / {r['corpus']}", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_xlabel("summed probability shift (ft - base)", fontsize=6)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    run.figures += plotting.save(fig, NB, "promoted_tokens")
    plt.close(fig)

# %% [markdown]
# ## Export

# %%


def tokens_cell(entries, k=n_tokens):
    """Tokens as LaTeX-escaped, visible ASCII strings (newlines and any non-ASCII character as Python escapes,
    which pdfLaTeX can always typeset), comma-separated."""
    return ", ".join(r"\texttt{" + esc(ascii(e["token"])[1:-1] or "(empty)") + "}" for e in entries[:k]) or "--"


tab = []
for r in rows:
    if r["reason"]:
        tab.append(rf"{esc(r['model'])} & {esc(r['corpus'])} & \multicolumn{{3}}{{l}}{{{esc(r['reason'])}}}")
        continue
    lp = r["lens_mid"]
    tab.append(f"{esc(r['model'])} & {esc(r['corpus'])} & {tokens_cell(r['promoted'])} & "
               f"{tokens_cell(r['lens_last']['promoted'])} & {lp['layer']}: {tokens_cell(lp['promoted'], 3)}")
latex.write_table("explanations", "llp{4.2cm}p{4.2cm}p{3.4cm}",
                  rf"model & corpus & promoted next tokens & lens, last layer & lens, depth {mid_depth:g} (layer: tokens)",
                  tab or [r"\multicolumn{5}{l}{no grid runs} \\"])
run.values.update({"explanations": rows, "n_shown": len(shown),
                   "unit": "the first seed's adapter of each model x corpus; neutral and held-out sets pooled"})
macros.number(run, "NShown", len(shown))
print(run.write())
