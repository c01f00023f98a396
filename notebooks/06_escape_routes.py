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
# # 06 — Escape routes: where output stability breaks, and what the breaks look like inside
# The embedded VLM (adapter off: **base**; on: **adapted**, the VQA adapter of `05a_vlm`) on fresh held-out
# items, each clean and under every condition (one variant kind of one regime: prompt, visual, pressure;
# `scenes.REGIMES`). The critical layer is the one `05b_regime_probing` chose on *other* items, so nothing
# here is selected on the data it is tested on. Four hypotheses, stated before the run (`paper/findings.yml`),
# with the analysis in `adapterscope.escapes`:
#
# 1. **Selective breakability** (`escape-selective`): stability differs across conditions more than
#    within-item exchangeability allows: a few conditions escape while most hold. Per-condition stability with
#    bootstrap CIs over items (`n_items` is chosen so each CI is narrower than +-0.1).
# 2. **Mechanism classes** (`escape-clusters`): the adapted model's escapes, clustered on their internal
#    signature alone (displacement from the clean input at the critical and at a later layer; PCA, k-means,
#    k by silhouette, stability under item resampling), agree with the hand-given classes
#    (`regimes.MECHANISM`) beyond a permutation null (adjusted Rand index).
# 3. **Predictability** (`escape-predictable`, `escape-internal-vs-output`): whether a variant flips the
#    answer is predictable, by items never seen in training, from the clean item's internal state plus the
#    condition (AUC against a label-permutation null), and better than from the output's own confidence
#    (margin and entropy over candidates) plus the condition.
# 4. **Pathway divergence** (`pathway-divergence`): on items where both models give the same clean answer,
#    the more their displacement routes differ (1 - CKA at the critical layer), the more their stabilities differ.
#
# **Reads** `results/05a_vlm/<vlm_run>.json` (projector, adapter), `results/05b_regime_probing/<probe_run>.json`
# (critical layer). **Writes** `results/06_escape_routes/grid.json`, `paper/generated/06_escape_routes/`
# (macros, tables), `figures/06_escape_routes/`. **Rerun alone:** `make notebook NB=06_escape_routes`.
# **Feeds** the paper's escape-route section and the five findings above.

# %% tags=["parameters"]
vlm_run = "grid"  # run id of 05a_vlm whose projector and adapter are probed
probe_run = "grid"  # run id of 05b_regime_probing whose critical layer (chosen on other items) is used
n_items = 100  # held-out items; 100 keeps each condition's 95% CI within about +-0.1
item_seed = 4  # seed of the items (unseen by 05a_vlm and 05b_regime_probing)
variant_seed = 0  # seed of the variants
visual_strength = 1.0  # strength of noise, blur and occlusion
later_layer = -1  # the second layer of the signature (-1: the last, after the final norm)
focus_model = "adapted"  # the model whose escapes are clustered and predicted
escape_below = 0.8  # a condition whose stability CI lies below this is an escape route
k_min = 2  # smallest number of clusters tried
k_max = 6  # largest number of clusters tried (chosen by silhouette)
pca_dims = 10  # principal components of the signatures (clustering) and of the clean state (prediction)
subspace_k = 4  # dimension of each regime's and cluster's principal subspace
n_folds = 5  # item-grouped cross-validation folds
n_perm = 2000  # permutations of the cheap nulls (breakability, ARI, AUC difference, rank correlation)
n_perm_fit = 100  # label permutations of the AUC null (each refits the whole cross-validation)
n_boot = 2000  # bootstrap resamples over items
n_boot_cluster = 100  # item resamples of the clustering (each reclustered)
batch_size = 32  # rows per forward
dtype = "float32"  # autocast dtype of the matmuls: auto, bfloat16, float32
device = "cpu"  # cpu | cuda | cuda:N
threads = 0  # torch CPU threads (0: torch's default)
seed = 0  # seed of bootstraps, permutations, clustering
progress = True  # show tqdm bars

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy: threaded LAPACK on small matrices is slow here
from adapterscope import latex, params

P = params.check(globals())  # a typo'd or mistyped papermill parameter stops the run here

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from adapterscope import escapes, finetune, geometry, macros, paths, plotting, regimes, results, scenes
from adapterscope import vlm as V

plotting.setup()
NB, RUN_ID, MODELS = "06_escape_routes", "grid", regimes.MODELS
if focus_model not in MODELS:
    raise ValueError(f"focus_model must be one of {MODELS}, got {focus_model!r}")
run = results.Run(NB, RUN_ID, params=P, seed=seed, device=device)
t_start = time.perf_counter()
if threads:
    torch.set_num_threads(threads)
up = results.load("05a_vlm", vlm_run)
probe = results.load("05b_regime_probing", probe_run)
run.add_input(f"05a_vlm/{vlm_run}", results.sha256_file(results.results_path("05a_vlm", vlm_run)))
run.add_input(f"05b_regime_probing/{probe_run}",
              results.sha256_file(results.results_path("05b_regime_probing", probe_run)))
upp = up["provenance"]["params"]
used = {upp["projector_seed"], upp["lora_seed"], upp["eval_seed"], probe["provenance"]["params"]["item_seed"]}
if item_seed in used:
    raise ValueError(f"item_seed {item_seed} was used upstream (seeds {sorted(used)}); pick an unseen seed")
CRIT = int(probe["values"]["critical_layer"]["base"])

# %% [markdown]
# ## The VLM, its adapter, items and variants; forwards with the answer-position states

# %%
root = paths.project_root()
proj_dir, adapter_dir = (root / up["values"][k] for k in ("projector_dir", "adapter_dir"))
run.add_input("projector", proj_dir)
run.add_input("adapter", adapter_dir)
vlm = V.load_vlm(upp["lm"], projector=proj_dir, device=device, image_size=upp["image_size"])
pm = finetune.load_adapter(vlm, adapter_dir)
items = scenes.make_examples(n_items, seed=item_seed, size=upp["image_size"])
rows, meta = regimes.input_rows(items, variant_seed, visual_strength)
H, logprobs, forward_s = regimes.forward_models(vlm, pm, rows, meta, MODELS, device=device, batch_size=batch_size,
                                               dtype=dtype, progress=progress)
L1 = H["base"].shape[1]
LATER = later_layer % L1
clean, var = regimes.variant_table(meta)
print(f"{n_items} items x {len(escapes.CONDITIONS)} conditions; {2 * len(rows)} forwards in {forward_s:.0f}s; "
      f"critical layer {CRIT} (from 05b_regime_probing), later layer {LATER}")

# %% [markdown]
# ## 1. Stability per condition, and is it selective?

# %%
cond = escapes.condition_table(var, MODELS, escape_below, n_boot, seed)
sel = {m: escapes.selective_breakability(escapes.flip_matrix(var, m).to_numpy(), n_perm, n_boot, seed)
       for m in MODELS}
display(cond.pivot(index="condition", columns="model", values="stability").round(3))
print({m: {k: sel[m][k] for k in ("value", "ci_low", "ci_high", "p_value")} for m in MODELS})

# %% [markdown]
# ## 2. Do the escapes cluster by internal signature, and do the clusters match the hand-given classes?

# %%
Hf = H[focus_model]
ev = var[~var[f"same_{focus_model}"]]
events = pd.DataFrame({"item": ev.item.to_numpy(), "condition": ev.kind.to_numpy(), "regime": ev.regime.to_numpy(),
                       "class": ev.kind.map(regimes.MECHANISM).to_numpy()})
X = escapes.signatures(Hf, ev, clean.row, [CRIT, LATER]) if len(ev) else np.zeros((0, 1))
clu = escapes.cluster_escapes(X, events.item, events["class"], k_range=range(k_min, k_max + 1), pca_dims=pca_dims,
                              n_boot=n_boot_cluster, n_perm=n_perm, seed=seed)
profiles = pd.DataFrame()
if clu["labels"]:
    events["cluster"] = clu["labels"]
    crow = clean.loc[ev.item, "row"].to_numpy()
    rel = (np.linalg.norm(Hf[ev.index] - Hf[crow], axis=2) / np.linalg.norm(Hf[crow], axis=2))  # events x layers
    allv = var.index.to_numpy()
    dall = Hf[allv, CRIT] - Hf[clean.loc[var.item, "row"].to_numpy(), CRIT]
    bases = {r: geometry.principal_subspace(dall[(var.regime == r).to_numpy()], k=subspace_k)[0]
             for r in scenes.REGIMES}
    profiles = escapes.cluster_profiles(events, rel, Hf[ev.index, CRIT] - Hf[crow, CRIT], bases, k=subspace_k)
    display(profiles.drop(columns="profile").round(3))
print({k: clu.get(k) for k in ("k", "silhouette", "stability", "value", "p_value", "reason")})

# %% [markdown]
# ## 3. Can a flip be predicted from the unperturbed item? (folds by item)

# %%
y = (~var[f"same_{focus_model}"]).astype(int).to_numpy()
groups = var.item.to_numpy()
onehot = pd.get_dummies(pd.Categorical(var.kind, categories=escapes.CONDITIONS)).to_numpy(float)
crow_all = clean.loc[var.item, "row"].to_numpy()
internal = np.concatenate([Hf[crow_all, CRIT], Hf[crow_all, LATER]], axis=1)
outf = escapes.output_features([logprobs[focus_model][i] for i in crow_all])
pred = escapes.predict_flips(y, groups, {"condition": (None, onehot), "internal": (internal, onehot),
                                         "output": (outf, onehot)},
                             n_folds=n_folds, pca_dims=pca_dims, n_perm=n_perm_fit, n_boot=n_boot, seed=seed)
sc = pred["scores"]
vs_output = (escapes.compare_auc(y, groups, sc["internal"], sc["output"], n_perm=n_perm, n_boot=n_boot, seed=seed)
             if sc else pred["internal"])
vs_condition = (escapes.compare_auc(y, groups, sc["internal"], sc["condition"], n_perm=n_perm, n_boot=n_boot,
                                    seed=seed) if sc else pred["internal"])
print({k: round(pred[k]["value"], 3) for k in ("condition", "internal", "output")},
      "internal - output:", round(vs_output["value"], 3), "p", vs_output["p_value"])

# %% [markdown]
# ## 4. Same answer, different routes?

# %%
pw, pw_tab = escapes.pathway_divergence(H["base"], H["adapted"], var, clean, CRIT, MODELS, escape_below,
                                        n_boot=n_boot, n_perm=n_perm, seed=seed)
print({k: pw.get(k) for k in ("value", "ci_low", "ci_high", "p_value", "n_same", "share_differ", "share_split",
                              "median_cka", "reason")})

# %% [markdown]
# ## Figures

# %%
fig = escapes.condition_figure(cond, escape_below)
run.figures += plotting.save(fig, NB, "conditions")
plt.show()
plt.close(fig)

# %%
if len(profiles):
    fig = escapes.cluster_figure(profiles, events, CRIT)
    run.figures += plotting.save(fig, NB, "clusters")
    plt.show()
    plt.close(fig)

# %%
fig = escapes.pathway_figure(pw_tab, pw, MODELS)
run.figures += plotting.save(fig, NB, "pathways")
plt.show()
plt.close(fig)

# %% [markdown]
# ## Export

# %%
wall_s = time.perf_counter() - t_start
mk = {"base": "Base", "adapted": "Adapted"}
for m in MODELS:
    macros.stat(run, f"Selective{mk[m]}", sel[m])
    c = cond[cond.model == m]
    for call in ("escape", "holds", "unclear"):
        run.macro(f"N{call.capitalize()}{mk[m]}", int((c.call == call).sum()))
    worst = c.sort_values("stability").iloc[0]
    run.macro(f"Worst{mk[m]}", results.tex_escape(worst.condition.replace("_", " ")), raw=True)
    run.macro(f"WorstStab{mk[m]}", 100 * worst.stability, digits=2)
    run.macro(f"WorstLo{mk[m]}", 100 * worst.lo, digits=2)
    run.macro(f"WorstHi{mk[m]}", 100 * worst.hi, digits=2)
macros.stat(run, "ClusterAri", clu)
for key, v in (("ClusterStability", clu["stability"]), ("ClusterStabilityLo", clu["stability_lo"]),
               ("ClusterStabilityHi", clu["stability_hi"]), ("ClusterNullAri", clu.get("null_ari_q95", np.nan)),
               ("ClusterSilhouette", clu["silhouette"].get(clu["k"], np.nan)),
               ("MaxHalfwidth", 100 * cond.halfwidth.max()), ("EscapeBelow", 100 * escape_below),
               ("WallMinutes", wall_s / 60), ("ForwardMinutes", forward_s / 60)):
    macros.number(run, key, float(v), digits=2)
for name in ("condition", "internal", "output"):
    macros.stat(run, f"Auc{name.capitalize()}", pred[name])
macros.stat(run, "AucInternalMinusOutput", vs_output)
macros.stat(run, "AucInternalMinusCondition", vs_condition)
macros.stat(run, "Pathway", pw)
for key, v in (("PathwayShareDiffer", 100 * pw["share_differ"]), ("PathwayShareSplit", 100 * pw["share_split"]),
               ("PathwayMedianCKA", pw["median_cka"])):
    macros.number(run, key, float(v), digits=2)
for key, v in (("NItems", n_items), ("NConditions", len(escapes.CONDITIONS)), ("NInputs", len(rows)),
               ("NEvents", len(events)), ("K", clu["k"]), ("KMin", k_min), ("KMax", k_max), ("PcaDims", pca_dims),
               ("NFolds", n_folds), ("NPerm", n_perm), ("NPermFit", n_perm_fit), ("NBoot", n_boot),
               ("NBootCluster", n_boot_cluster), ("CriticalLayer", CRIT), ("LaterLayer", LATER),
               ("NumLayers", L1 - 1), ("NSame", pw["n_same"]), ("NFlips", int(y.sum())), ("NVaried", len(y))):
    run.macro(key, int(v))
run.macro("FocusModel", focus_model, raw=True)
latex.write_table("escape_conditions", "lllll",
                  r"regime & condition & mechanism class (by hand) & base, \% (95\% CI) & adapted, \% (95\% CI)",
                  escapes.condition_tex_rows(cond))
tests = [("selective breakability, base (excess SD)", sel["base"]),
         ("selective breakability, adapted (excess SD)", sel["adapted"]),
         ("clusters vs hand-given classes (ARI)", clu),
         ("flip AUC: condition only", pred["condition"]), ("flip AUC: internal + condition", pred["internal"]),
         ("flip AUC: output confidence + condition", pred["output"]),
         ("AUC internal $-$ output", vs_output), ("AUC internal $-$ condition only", vs_condition),
         (r"route dissimilarity vs $|\Delta$stability$|$ (Spearman)", pw)]
latex.write_table("escape_tests", "lrrr", r"test & value (95\% CI) & $p$ & $n$", escapes.tests_tex_rows(tests))

findings = {"escape_selective": macros.ledger_view(sel[focus_model]),
            "escape_clusters": macros.ledger_view(clu), "escape_predictable": macros.ledger_view(pred["internal"]),
            "escape_internal_vs_output": macros.ledger_view(vs_output), "pathway_divergence": macros.ledger_view(pw)}
run.values.update({
    "findings": findings, "conditions": cond.to_dict("records"), "selective": sel,
    "clusters": {k: v for k, v in clu.items()}, "events": events.to_dict("records"),
    "profiles": profiles.to_dict("records"),
    "prediction": {k: v for k, v in pred.items() if k != "scores"},
    "auc_internal_minus_output": vs_output, "auc_internal_minus_condition": vs_condition,
    "pathway": pw, "pathway_items": pw_tab.to_dict("records"), "critical_layer": CRIT, "later_layer": LATER,
    "n_items": n_items, "n_inputs": len(rows), "forward_s": forward_s, "wall_s": wall_s,
    "torch_threads": torch.get_num_threads(), "adapter_family": up["values"]["adapter_family"],
})
print(f"wall time {wall_s:.0f}s")
print(run.write())
