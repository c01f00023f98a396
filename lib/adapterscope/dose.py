"""Training dose: how an adapter's internal and output change grow with how hard it was trained (used by
``11_dose``).

Dose is ``steps x lr`` of the 01_finetune run (constant learning rate, so the summed step sizes). The runs are
the profile's ``grid.dose`` cells (layer_control none, run id = the main cell's id + ``__<dose tag>``) and the
main-grid cells they start from: the lowest dose of each series is the main grid's own fine-tune, read, not
rerun. Steps and lr are read from each 01_finetune run's recorded parameters, never from the profile.

Test (fixed before the runs). Per measure, Spearman's rho between dose and the measure with ranks taken within
each dose series (stratum = model/corpus; one model in the profiles, so the corpus): corpora differ in how much
any dose changes the model, and only the ordering by dose within a corpus is the question. The null permutes the
measure within strata, enumerated exactly when few enough orderings exist (two corpora x four doses: 4!^2 = 576),
else Monte Carlo; the CI resamples runs within strata (:func:`adapterscope.stats.stratified_spearman`). A measure
with no ordering to test (all runs equal, e.g. no run flags a fine-tune-only latent) gets NaN and a ``reason``.
The construction threshold of a corpus is the lowest dose at which any of its runs flags a fine-tune-only latent
(None when none does up to the highest dose tried).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from . import params, results, stats

LAYER_CONTROL = "none"
# finding key suffix: (run-table column, name in a sentence, axis label)
MEASURES = {
    "ftonly": ("ft_only", "fine-tune-only latents", "fine-tune-only latents"),
    "genuine": ("genuine", "genuine fine-tune-only latents", "genuine FT-only latents"),
    "ratio": ("peak_ratio", "peak cross/self ratio", "peak cross/self ratio"),
    "kl": ("kl", "neutral KL", "neutral KL(base||ft) [nats]"),
    "disagree": ("disagree", "1 - top-1 agreement", "1 - top-1 agreement (neutral)"),
    "pplft": ("ppl_ft", "held-out perplexity of the fine-tuned model", "held-out perplexity (fine-tuned)"),
}
COUNTS = ("ft_only", "genuine")
COLUMNS = ["model", "corpus", "seed", "dose_tag", "run_id", "steps", "lr", "dose", "kl", "disagree", "kl_heldout",
           "ppl_base", "ppl_ft", "heldout_loss_base", "heldout_loss_ft", "final_loss", "peak_ratio", "peak_depth",
           "ft_only", "genuine"]


def run_row(ft: dict, cap: dict, ccr: dict) -> dict:
    """One run's dose and measures from its 01_finetune record (parameters and values), 02_capture and
    03_crosscoder values; a value a run lacks is NaN."""
    p, v = ft["provenance"]["params"], ft["values"]
    div = cap["divergence"]
    return {"steps": int(p["steps"]), "lr": float(p["lr"]), "dose": int(p["steps"]) * float(p["lr"]),
            "kl": div["neutral"]["kl"], "disagree": 1 - div["neutral"]["top1_agreement"],
            "kl_heldout": div["heldout"]["kl"], "ppl_base": div["heldout"].get("ppl_base", math.nan),
            "ppl_ft": div["heldout"].get("ppl_ft", math.nan),
            **{k: v.get(k, math.nan) for k in ("heldout_loss_base", "heldout_loss_ft", "final_loss")},
            "peak_ratio": ccr["peak_ratio_ft"], "peak_depth": ccr["peak_depth"], "ft_only": ccr["n_ft_only_total"],
            "genuine": ccr["n_ft_only_genuine_total"]}


def load_runs(models: list[str], corpora: list[str], seeds: list[int], levels: list[dict],
              on_input: Callable[[str, str], None] | None = None) -> pd.DataFrame:
    """The dose table: one row per model x corpus x seed x dose (in the block's order, by dose within a series;
    the main-grid cell has ``dose_tag`` ""), read through the results API; ``on_input(name, sha256)`` is called
    for every results file read."""
    rows = []
    tags = [""] + [params.dose_tag(lev) for lev in levels]
    for m in models:
        for c in corpora:
            for s in seeds:
                series = []
                for tag in tags:
                    rid = params.cell_run_id(m, c, LAYER_CONTROL, s, tag)
                    recs = {}
                    for nb in ("01_finetune", "02_capture", "03_crosscoder"):
                        recs[nb] = results.load(nb, rid)
                        if on_input:
                            on_input(f"{nb[:2]}/{rid}", results.sha256_file(results.results_path(nb, rid)))
                    series.append({"model": m, "corpus": c, "seed": s, "dose_tag": tag, "run_id": rid,
                                   **run_row(recs["01_finetune"], recs["02_capture"]["values"],
                                             recs["03_crosscoder"]["values"])})
                rows += sorted(series, key=lambda r: r["dose"])
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.3g}"


def undefined(n: int, why: str) -> dict:
    return {"value": math.nan, "n": int(n), "p_value": math.nan, "p_method": "", "ci_low": math.nan,
            "ci_high": math.nan, "reason": why}


def trend(df: pd.DataFrame, col: str, *, name: str | None = None, n_boot: int, n_perm: int, seed: int,
          empty_reason: str = "no dose runs") -> dict:
    """Spearman's rho of dose vs ``df[col]`` within dose series (module docstring), as a JSON-able dict with
    value, n, p_value, p_method, ci_low, ci_high and, where undefined, ``reason``."""
    name = name or col
    d = df[np.isfinite(df["dose"].astype(float)) & np.isfinite(df[col].astype(float))]
    if not len(d):
        return undefined(0, empty_reason)
    vals = sorted(set(np.round(d[col].to_numpy(float), 12)))
    if len(vals) == 1:
        what = f"flag {_num(vals[0])} {name}" if col in COUNTS else f"have the same {name} ({_num(vals[0])})"
        return undefined(len(d), f"all {len(d)} runs {what}: no ordering")
    strata = (d["model"] + "/" + d["corpus"]).to_numpy()
    sizes = pd.Series(strata).value_counts()
    n_used = int(sizes[sizes >= 2].sum())
    if n_used < 3:
        return undefined(n_used, f"fewer than 3 runs in corpora with two or more doses ({n_used})")
    r = stats.stratified_spearman(d["dose"], d[col], strata, n_boot=n_boot, n_permutations=n_perm, seed=seed)
    out = r.as_dict()
    if not math.isfinite(out["value"]):
        out["reason"] = f"the {name} or the dose does not vary within any corpus: no ordering"
    return out


def trends(df: pd.DataFrame, *, n_boot: int, n_perm: int, seed: int,
           empty_reason: str = "no dose runs") -> dict[str, dict]:
    """``rho_dose_<key>`` for every measure of :data:`MEASURES` (see :func:`trend`)."""
    return {f"rho_dose_{k}": trend(df, col, name=name, n_boot=n_boot, n_perm=n_perm, seed=seed,
                                   empty_reason=empty_reason) for k, (col, name, _) in MEASURES.items()}


def first_construction(df: pd.DataFrame, corpora: list[str], col: str = "ft_only") -> dict[str, dict]:
    """Per corpus: the lowest dose at which any of its runs flags ``col`` > 0 (``value``; None when none does,
    with a ``reason``), with that run's steps and lr, its count, and the doses tried."""
    out = {}
    for c in corpora:
        d = df[df.corpus == c].sort_values("dose", kind="stable")
        hit = d[d[col] > 0]
        rec = {"n_runs": int(len(d)), "max_dose": float(d.dose.max()) if len(d) else math.nan,
               "doses": sorted({float(x) for x in d.dose})}
        if len(hit):
            h = hit.iloc[0]
            rec.update(value=float(h.dose), steps=int(h.steps), lr=float(h.lr), count=int(h[col]))
        else:
            one = "genuine fine-tune-only latent" if col == "genuine" else "fine-tune-only latent"
            rec.update(value=None, reason=(f"no run flags a {one} up to dose {_num(rec['max_dose'])}" if len(d)
                                           else f"no dose runs of {c}"))
        out[c] = rec
    return out
