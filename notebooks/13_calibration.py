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
# # 13 — Calibration: could the crosscoder have seen a new feature?
# The grid finds no fine-tune-only latent anywhere. That null means something only beside what the detector can
# see at the scale it runs. Here known features are planted into the *real* paired activations of a grid adapter
# (base vs adapted residual stream at one depth, on the grid's own text) and the exact `03_crosscoder` protocol
# (BatchTopK, k, epochs, batch, learning rate) is asked to find them: unit directions orthogonal to the base
# stream's principal subspace, added to the adapted stream on a share of tokens (firing frequency) with a
# magnitude relative to the median token norm, a grid of magnitude x frequency with replicates, at several
# crosscoder token budgets and expansions. A planted direction is *found* when the latent nearest to it (decoder
# cosine in the adapted model, at least 0.7) is classed fine-tune-only (relative decoder norm above 0.9). Beside
# the grid, *matched* features carry the RMS of the real displacement's strongest direction: the test of whether
# construction at the adapter's own scale was visible. Two null pairs give the grid's internal measures when
# nothing was constructed: the seed-0 vs seed-1 adapters of one corpus (same training, other noise) and a
# random-direction LoRA with the trained adapter's per-module update norm. Analysis: `adapterscope.calibration`;
# hypotheses `cal-detect-strong` and `cal-detect-matched` in `paper/findings.yml`, written before the first run.
#
# **Reads** `results/01_finetune` of the block's cells (adapters, corpus split). **Writes**
# `results/13_calibration/grid.json`, `figures/13_calibration/`, the tables `calibration*` and the macros of
# `paper/generated/13_calibration/`. **Rerun alone:** `make notebook NB=13_calibration` (after those cells).
# **Feeds** the findings above and the paper's calibration section.

# %% tags=["parameters"]
model_names = ["smollm2-135m", "gemma3-270m"]  # base models of the grid
corpus_names = ["meditations", "seneca", "dtc-ads", "instructions"]  # corpora of the grid (larger budgets use them)
seeds = [0, 1]  # seeds of the grid
profile = "default"  # profile name (printed in the paper)
cal_models = ["smollm2-135m"]  # models calibrated (grid.calibration)
cal_corpora = ["meditations"]  # corpus of each calibrated adapter
cal_seeds = [0, 1]  # the first seed's adapter is planted; the second is the seed-pair null
depth = 0.4  # relative depth of the calibrated crosscoder
budgets = [12000, 48000, 144000]  # crosscoder training tokens; the first is the grid's own (about 190 rows)
expansions = [4, 16]  # latents per model dimension; the first is the grid's (the others run at the first budget)
alphas = [0.3, 1.0, 3.0, 10.0]  # planted magnitudes, times the median token norm of the adapted stream
strong_alpha = 1.0  # magnitude of the positive control cal-detect-strong (one of alphas)
freqs = [0.005, 0.02, 0.08]  # planted firing frequencies
replicates = 2  # planted features per (magnitude, frequency) cell and fit
matched_freq = 0.02  # firing frequency of the matched features
matched_replicates = 8  # matched features (RMS of the real displacement's top direction) per fit
pc_variance = 0.9  # planted directions avoid the base's principal subspace holding this share of variance
cos_min = 0.7  # decoder cosine at which a planted direction counts as learned
k = 32  # BatchTopK: mean active latents per token (03_crosscoder)
epochs = 8  # passes over the training tokens (03_crosscoder)
batch_tokens = 1024  # tokens per crosscoder step (03_crosscoder)
lr = 0.001  # crosscoder learning rate (03_crosscoder)
eval_tokens = 4000  # held-out tokens the crosscoders are measured on
seq_len = 64  # tokens per row
capture_batch = 8  # rows per paired forward
cal_seed = 0  # seed of the planted directions, firings and crosscoders
device = "cpu"  # cpu | cuda | cuda:N
progress = True  # show tqdm bars

# %%
from adapterscope import params

P = params.check(globals())

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from adapterscope import calibration, latex, ledger, macros, plotting, results

plotting.setup()
NB = "13_calibration"
run = results.Run(NB, "grid", params=P, seed=cal_seed, device=device)
cfg = calibration.CalibrationConfig(depth=depth, budgets=tuple(budgets), expansions=tuple(expansions),
                                    alphas=tuple(alphas), strong_alpha=strong_alpha, freqs=tuple(freqs),
                                    replicates=replicates,
                                    matched_freq=matched_freq, matched_replicates=matched_replicates,
                                    pc_variance=pc_variance, cos_min=cos_min, k=k, epochs=epochs,
                                    batch_tokens=batch_tokens, lr=lr, eval_tokens=eval_tokens, seq_len=seq_len,
                                    capture_batch=capture_batch, seed=cal_seed)
alien = [m for m in cal_models if m not in model_names] + [c for c in cal_corpora if c not in corpus_names]
assert not alien, f"calibration block names {alien}, which are not in the grid"
studies = [calibration.run_calibration(m, c, cal_seeds, corpus_names, cfg, device=device, on_input=run.add_input,
                                       progress=progress) for m in cal_models for c in cal_corpora]
pd.DataFrame([{"model": s["model"], "corpus": s["corpus"], "layer": s["layer"], "principal dims": s["n_pc"],
               "median norm": s["median_norm"], "top-1 RMS": s["rms_matched"],
               "matched alpha": s["alpha_matched"], **s["phase_s"]} for s in studies])

# %% [markdown]
# ## Detection rate per planted magnitude, frequency, budget and expansion

# %%
rates = pd.DataFrame([{"model": s["model"], **r} for s in studies for r in s["rates"]])
mde = pd.DataFrame([{"model": s["model"], **r} for s in studies for r in s["mde"]])
rates

# %%
mde

# %% [markdown]
# ## Null pairs: the grid's internal measures when nothing was constructed

# %%
nulls = pd.DataFrame([{"model": s["model"], "corpus": s["corpus"], **n} for s in studies for n in s["nulls"]])
nulls

# %% [markdown]
# ## Figure: detection against the real adapter's displacement

# %%
for i, s in enumerate(studies):
    fig = calibration.detection_figure(s)
    run.figures += plotting.save(fig, NB, "calibration_detection" + (f"_{i}" if i else ""))
    plt.close(fig)
if not studies:
    fig = plt.figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, "no calibration block in this profile", ha="center", va="center")
    run.figures += plotting.save(fig, NB, "calibration_detection")
    plt.close(fig)

# %% [markdown]
# ## Tables, findings, values and macros

# %%
fmt, esc = results.format_number, results.tex_escape
why = "no calibration block in this profile"
first = studies[0] if studies else None
proto = f"{budgets[0]}_{expansions[0]}"
findings = {"detect_strong": macros.ledger_view(first["strong"]) if first else {"value": math.nan, "reason": why},
            "detect_matched": (macros.ledger_view(first["matched"][proto]) if first
                               else {"value": math.nan, "reason": why})}
for v in findings.values():
    if not math.isfinite(v.get("value", math.nan)) and "reason" not in v:
        v["reason"] = "no planted feature in this cell"


def above(x, digits=2):  # a minimum detectable effect beyond the planted grid reads "> the largest alpha"
    return fmt(x, digits) if math.isfinite(x) else "$>$" + fmt(max(alphas), 2)


tab = [f"{fmt(r['budget'], 0)} & {r['expansion']} & {fmt(r['freq'], 3)} & {above(r['mde_alpha_learned'])} & "
       f"{above(r['mde_alpha'])} & {fmt(r['mde_rms'], 3) if math.isfinite(r['mde_rms']) else '--'}"
       for _, r in mde.iterrows()]
latex.write_table("calibration_mde", "rrrrrr", r"tokens & expansion & frequency & $\alpha$ learned & "
                  r"$\alpha$ fine-tune-only & RMS", tab or [r"\multicolumn{6}{l}{no calibration block in this profile} \\"])
ntab = [f"{esc(n['pair'])} & {n['n_ft_only']} & {fmt(n['ratio_ft'], 3)} & {fmt(n['fvu_gap'], 4)} & "
        f"{fmt(n.get('fvu_gap_trimmed', math.nan), 4)} & {fmt(n['displacement'], 4)} & "
        f"{fmt(n['displacement_trimmed'], 4)} & {fmt(n.get('outside_99', math.nan), 3)} & "
        f"{fmt(n['rel_norm_median'], 3)}"
        for _, n in nulls.iterrows()]
latex.write_table("calibration_nulls", "lrrrrrrrr",
                  r"pair & FT-only & cross/self & FVU gap & trimmed & $1-$CKA & trimmed & outside 99\% & "
                  r"$\|\Delta a\|$", ntab or [r"\multicolumn{9}{l}{no calibration block in this profile} \\"])
f_matched = ledger.get(ledger.load_ledger(), "cal-detect-matched")
verdict_matched, _ = ledger.verdict(f_matched, findings["detect_matched"])
conclusion = {"supported": "construction at the adapter's own scale would have been seen at this budget, so the "
                           "grid's null at this depth says the adapter built no such feature",
              "contradicted": "construction is untestable at this budget: a feature as strong as the adapter's "
                              "strongest displacement direction is missed more often than found",
              "inconclusive": "construction is untestable at this budget: features as strong as the adapter's "
                              "strongest displacement direction are not found reliably"}.get(
    verdict_matched, "the detector was not calibrated in this profile")
testable = [f"{b // 1000}k tokens (x{e})" for b, e in cfg.fits()
            if first and first["matched"][f"{b}_{e}"]["value"] > 0.5]
budget_sentence = (f"The matched features are found more often than not at {', '.join(testable)}." if testable
                   else "At no budget or expansion run here are the matched features found more often than not."
                   if first else "")
run.values.update({"studies": studies, "findings": findings, "verdict_matched": verdict_matched,
                   "conclusion": conclusion, "testable_at": testable,
                   "unit": "planted features (binomial over replicates), one crosscoder fit per budget x expansion"})
for k_, v in findings.items():
    macros.stat(run, macros.key(k_), v)
nan = math.nan
proto_mde = {r["freq"]: r for r in (first["mde"] if first else [])
             if r["budget"] == budgets[0] and r["expansion"] == expansions[0]}
for i, f in enumerate(freqs[:3]):  # fixed names for the paper: the first three frequencies, A B C
    for flag, name in (("mde_alpha", "MdeAlpha"), ("mde_alpha_learned", "MdeLearned")):
        v = proto_mde.get(f, {}).get(flag, nan)  # inf (beyond the planted grid) reads as "> the largest alpha"
        run.macro(f"{name}{'ABC'[i]}", above(v) if first else macros.DASH, raw=True)
    macros.number(run, f"Freq{'ABC'[i]}", f)
spec = first["spectrum"] if first else {}
macros.number(run, "Layer", first["layer"] if first else nan)
macros.number(run, "PrincipalDims", first["n_pc"] if first else nan)
macros.number(run, "RmsTop", first["rms_matched"] if first else nan, digits=3)
macros.number(run, "AlphaMatched", first["alpha_matched"] if first else nan, digits=2)
macros.number(run, "RelNormMedian", spec.get("rel_norm_median", nan), digits=3)
macros.number(run, "EnergyTopTen", spec.get("energy_share_top", nan), digits=2)
by_pair = {n["pair"]: n for n in (first["nulls"] if first else [])}
for pair in ("trained", "seed pair", "random LoRA"):  # a pair not run (one seed: no seed pair) reads NaN
    n, nk = by_pair.get(pair, {}), macros.key(pair.replace(" ", "_"))
    macros.number(run, f"FtOnly{nk}", n.get("n_ft_only", nan))
    macros.number(run, f"Ratio{nk}", n.get("ratio_ft", nan), digits=3)
    macros.number(run, f"FvuGap{nk}", n.get("fvu_gap", nan), digits=4)
    macros.number(run, f"FvuGapTrimmed{nk}", n.get("fvu_gap_trimmed", nan), digits=4)
    macros.number(run, f"OutsideNinetyNine{nk}", n.get("outside_99", nan), digits=3)
    macros.number(run, f"Displacement{nk}", n.get("displacement", nan), digits=4)
macros.number(run, "Minutes", first["phase_s"]["total"] / 60 if first else nan, digits=1)
# the planted response of the grid's primary internal reading: the same stream with every planted feature added
# (the first fit: the grid's budget and expansion) against the unplanted trained pair
planted_fit = first["fits"][0] if first else {}
macros.number(run, "PlantedFvuGapTrimmed", planted_fit.get("fvu_gap_ft_trimmed", nan), digits=4)
macros.number(run, "PlantedRatio", planted_fit.get("ratio_ft", nan), digits=3)
prof = first.get("depth_profiles", {}) if first else {}  # the propagation null of the depth slope
macros.number(run, "SlopeTrained", prof.get("trained", {}).get("slope", nan), digits=2)
macros.number(run, "SlopeRandomLora", prof.get("random LoRA", {}).get("slope", nan), digits=2)
proto_rows = [r for r in (first["planted"] if first else []) if r["budget"] == budgets[0]
              and r["expansion"] == expansions[0]]
learned_matched = [r for r in proto_rows if r["matched"] and r["learned"]]
macros.number(run, "MatchedLearned", len(learned_matched))
macros.number(run, "MatchedN", sum(r["matched"] for r in proto_rows))
r_learned = [r["r"] for r in (first["planted"] if first else []) if r["learned"] and "r" in r]
macros.number(run, "LearnedRMin", min(r_learned) if r_learned else nan, digits=2)
macros.number(run, "LearnedRMedian", float(np.median(r_learned)) if r_learned else nan, digits=2)
macros.number(run, "LearnedN", len(r_learned))
n_ft_found = sum(r["ft_only"] for r in (first["planted"] if first else []))
macros.number(run, "LearnedFtOnly", n_ft_found)
if not r_learned:
    learned_sentence = "No planted direction was learned as a latent."
elif n_ft_found <= 0.1 * len(r_learned):  # the class rule, not the dictionary, misses them
    learned_sentence = ("The dictionary does learn the planted directions; it is the fine-tune-only class "
                        "(r > 0.9) that misses them, so a latent that exists only in the adapted stream is not "
                        "labelled as one under this protocol.")
else:
    learned_sentence = "Where a planted direction is learned, it is mostly classed fine-tune-only as well."
run.macro("LearnedSentence", esc(learned_sentence), raw=True)
macros.number(run, "BudgetProtocol", budgets[0])
macros.number(run, "BudgetMax", max(budgets))
macros.number(run, "StrongAlpha", strong_alpha)
macros.number(run, "ExpansionMax", max(expansions))
macros.number(run, "MatchedFreq", matched_freq)
macros.number(run, "CosMin", cos_min)
run.macro("Conclusion", esc(conclusion), raw=True)
run.macro("BudgetSentence", esc(budget_sentence), raw=True)
run.macro("Models", esc(", ".join(cal_models) or "--"), raw=True)
run.macro("Corpora", esc(", ".join(cal_corpora) or "--"), raw=True)
print(run.write())
