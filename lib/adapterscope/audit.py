"""The two-axis audit of a (base model, peft LoRA adapter) pair: ``adapterscope audit``.

Auditing a fine-tune needs both axes, at two or more depths, because each adaptation regime is invisible to one
of them (reweighting barely moves the crosscoder; construction can leave next-token outputs almost unchanged).
One paired pass (the adapter switched off and on over the same rows, ``capture.iter_paired``) gives both:

* **output axis**: next-token KL(base || adapted) and top-1 agreement on base-model samples (``neutral``) and,
  with ``--text``, on the user's text; 95% bootstrap CIs over rows;
* **internal axis**: per-layer linear CKA between base and adapted residual streams (displacement 1 - CKA,
  debiased, jackknife SEs) and its depth profile (slope of log10 displacement against relative depth, with a
  bootstrap CI as in ``04_cka``); at each chosen relative depth a two-model crosscoder (``crosscoder_train``)
  with its cross/self reconstruction-error ratio and fine-tune-only latents. Beside each CKA reading, its twin
  without massive-activation tokens (``outliers``: a few attention-sink tokens can decide linear CKA alone) and
  the share of the squared norm they hold; a depth whose displacement is mostly those tokens is flagged.

And what changed (``explain``, ``latents``): the divergence hotspots and next-token shifts, the
activation-difference lens, and per crosscoder depth the latent cards (the latents most specific to the adapted
model, each with its top contexts in both streams, firing frequencies, histogram, decoder cosine and the tokens
its decoder difference promotes).

Each number is then placed against this project's own grid of adapters of the same base model (the runs in
``results/`` when there are any, else the committed ``data/reference/audit_reference.json``): its percentile
and whether it is within the reference range or beyond it, per axis. There is never one combined score.

Outputs (atomically, into ``--out``): ``audit.json`` (values + provenance like every run), ``audit.html``
(self-contained: figures embedded), ``figures/*.pdf|png``. The terminal gets a summary table.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import audit_inputs, explain, latents, paths, results
from .audit_inputs import AuditError, depth_layers, safe

REFERENCE_FILE = Path("data") / "reference" / "audit_reference.json"
DEPTHS = (0.4, 0.9)  # two of 03_crosscoder's default depths, so the reference compares like with like
NEUTRAL_ROWS, NEUTRAL_LEN = 32, 64  # 02_capture's neutral set (neutral_n, neutral_len defaults)
AXES = {"output": ("kl_neutral", "top1_neutral"), "internal": ("slope", "displacement", "ratio_ft", "n_ft_only")}


# ------------------------------------------------------------------------------------------ inputs
def check_adapter_dir(path: str | Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json``, after checking that ``path`` is a peft LoRA directory whose config
    fields are well typed and whose weights are in safetensors (a pickle is never loaded)."""
    d = Path(path)
    if not d.is_dir():
        raise AuditError(f"adapter {safe(d)} is not a directory; pass a peft adapter directory (save_pretrained "
                         "output)")
    if not (d / "adapter_config.json").is_file():
        raise AuditError(f"{safe(d)} is not a peft adapter directory (no adapter_config.json); pass the folder that "
                         "PeftModel.save_pretrained wrote")
    cfg = audit_inputs.read_config(d)
    from . import finetune

    try:
        finetune.check_safetensors(d)
    except finetune.FinetuneError as e:
        raise AuditError(safe(e)) from None
    return cfg


def load_pair(base: str, adapter_dir: str | Path, device: str = "cpu"):
    """(peft model, tokenizer): the base model with the adapter attached; a pair that does not fit is refused
    with one error naming both."""
    from . import finetune, models

    cfg = check_adapter_dir(adapter_dir)
    model, tok = models.load_model(base, device=device)
    made_for = cfg.get("base_model_name_or_path") or "an unnamed base"
    try:
        pm = finetune.load_adapter(model, adapter_dir)
    except (RuntimeError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise AuditError(f"adapter {safe(adapter_dir)} (made for {safe(made_for)}) does not fit base model "
                         f"{safe(base)!r}: {safe(first)}; pass the base model the adapter was trained on") from None
    n_lora = sum(1 for n, _ in pm.named_modules() if n.endswith("lora_A"))
    if n_lora == 0:
        raise AuditError(f"adapter {safe(adapter_dir)} attached no LoRA module to {safe(base)!r} (target modules "
                         f"{safe(cfg.get('target_modules'))} not found); pass the base model it was trained on")
    return pm.to(device), tok


# ------------------------------------------------------------------------------------------ measurement
CKA_MEMORY = 3 * 2**28  # 768 MiB: bytes of CKA accumulators held at once; more layers than fit are measured in further passes


def cka_layer_groups(n_layers: int, width: int, n_blocks: int = 5, budget: int = CKA_MEMORY) -> list[list[int]]:
    """Consecutive layer groups whose CKA accumulators (per layer: two jackknifed readings, each ``n_blocks``
    float64 sets of three ``width`` x ``width`` matrices) fit in ``budget`` bytes; at least one layer a group."""
    per_layer = 2 * n_blocks * 3 * width * width * 8
    size = max(1, budget // per_layer)
    return [list(range(i, min(i + size, n_layers))) for i in range(0, n_layers, size)]


def measure(pm, sets: dict[str, Any], depths: Sequence[float] = DEPTHS, *, device: str = "cpu",
            expansion: int = 4, k: int = 32, epochs: int = 8, batch_tokens: int = 1024, n_boot: int = 1000,
            seed: int = 0, progress: bool = True, cka_memory: int = CKA_MEMORY, tok=None) -> dict[str, Any]:
    """Both axes from paired passes over each set of rows (``sets``: name -> (rows, T) token ids; the first
    set also trains the crosscoders, 80/20 by row, with every other set's rows on the training side).

    The first pass gives the output axis, the crosscoders' tokens and the CKA of the first layer group; each
    further group of layers (as many as ``cka_memory`` holds, :func:`cka_layer_groups`) gets a pass of its own
    that stops at its deepest layer. Every accumulator sees the same rows in the same order whatever the
    grouping, so the numbers do not depend on it; a group's readings are taken and its accumulators freed
    before the next. With the tokenizer ``tok``, also what changed (``explain``): the divergence hotspots and
    token shifts of every set, the activation-difference lens at the crosscoder depths and the last layer, and
    per crosscoder depth the latent cards (``latents``: the most fine-tune-specific latents with their contexts
    over every crosscoder token, training and held-out side) under ``explain.latent_cards``."""
    import torch

    from . import capture, crosscoder_train, depth, divergence, explain, models, outliers, stats

    L = models.num_layers(pm)
    cc_layers = depth_layers(L, depths)
    width = int(getattr(getattr(pm.config, "text_config", pm.config), "hidden_size"))
    groups = cka_layer_groups(L, width, budget=cka_memory)
    out: dict[str, Any] = {"output": {}, "layers": L, "cka_passes": len(groups)}
    cc_train, cc_eval = {k_: [] for k_ in cc_layers}, {k_: [] for k_ in cc_layers}
    cc_rows: list[dict[str, Any]] = []  # every row the crosscoders see: its set, index in the set and token ids
    where_train, where_eval = [], []  # per crosscoder token, in cc_train / cc_eval order: (index in cc_rows, pos)
    prof = []
    hot = explain.HotspotAccumulator()
    delta_sums: dict[int, torch.Tensor] = {}
    delta_counts: dict[int, int] = {}
    for gi, group in enumerate(groups):
        first_pass = gi == 0
        keys = [models.hook_key(l, "resid_post") for l in group]
        ckas = {k_: outliers.TrimmedCKA(n_blocks=5) for k_ in keys}
        read = sorted(set(group) | set(cc_layers)) if first_pass else group
        for si, (name, rows) in enumerate(sets.items()):
            acc = divergence.DivergenceAccumulator()
            n_train = int(round(0.8 * len(rows))) if si == 0 else len(rows)
            seen = 0  # rows of this set before the batch
            for b in capture.iter_paired(pm, rows, read, ["resid_post"], batch_size=8, device=device,
                                         with_logits=first_pass, progress=progress):
                n_b = len(b.input_ids)
                if first_pass:
                    acc.update(b.logits_base, b.logits_ft, b.input_ids)
                    if tok is not None:
                        hot.update(b.logits_base, b.logits_ft, b.input_ids, name, seen)
                    for l in cc_layers:
                        per_row = b.tokens(models.hook_key(l, "resid_post")).reshape(n_b, -1, 2, width)
                        for r in range(n_b):
                            (cc_train if seen + r < n_train else cc_eval)[l].append(per_row[r])
                    if tok is not None:  # the latent cards place each crosscoder token in its row
                        T = b.input_ids.shape[1]
                        for r in range(n_b):
                            pos = torch.arange(1, T)  # iter_paired's tokens() drops position 0
                            (where_train if seen + r < n_train else where_eval).append(
                                torch.stack([torch.full_like(pos, len(cc_rows)), pos], 1))
                            cc_rows.append({"set": name, "row": seen + r, "ids": b.input_ids[r].tolist()})
                for l, key in zip(group, keys):  # row by row, so that the jackknife's blocks fill even from a
                    pair = b.tokens(key)               # few batches
                    for rp in pair.reshape(n_b, -1, 2, width):
                        ckas[key].update(rp[:, 0], rp[:, 1])
                    d = (pair[:, 1] - pair[:, 0]).double().sum(0).cpu()
                    delta_sums[l] = delta_sums[l] + d if l in delta_sums else d
                    delta_counts[l] = delta_counts.get(l, 0) + len(pair)
                seen += n_b
            if first_pass:
                r = acc.result()
                kl_ci = stats.mean_ci(acc.row_kl, n_boot, seed, constant_point=True, nan_policy="propagate")
                top1_ci = stats.mean_ci(acc.row_agree, n_boot, seed, constant_point=True, nan_policy="propagate")
                lo, hi, tlo, thi = kl_ci.ci_low, kl_ci.ci_high, top1_ci.ci_low, top1_ci.ci_high
                out["output"][name] = {"kl": r["kl"], "kl_lo": lo, "kl_hi": hi, "top1": r["top1_agreement"],
                                       "top1_lo": tlo, "top1_hi": thi, "n_tokens": r["n_tokens"],
                                       "n_rows": r["n_rows"]}
        for l, key in zip(group, keys):
            j = ckas.pop(key).result(debiased=True)  # the accumulator (and its jackknife copies) go with it
            disp = float(depth.displacement([j["cka"]])[0])
            disp_t = float(depth.displacement([j["cka_trimmed"]])[0])
            prof.append({"layer": l, "depth": l / max(L - 1, 1), "cka": j["cka"], "se": j["cka_se"],
                         "displacement": disp, "cka_trimmed": j["cka_trimmed"], "se_trimmed": j["cka_trimmed_se"],
                         "displacement_trimmed": disp_t, "n_massive": j["n_massive"], "n_tokens": j["n_tokens"],
                         "massive_share": j["massive_share"],
                         "carried_by_massive": outliers.carried_by_massive(disp, disp_t, se=j["cka_se"])})
    out["profile"] = prof
    d = np.array([p["depth"] for p in prof])
    c, se = np.array([p["cka"] for p in prof]), np.array([p["se"] for p in prof])
    floor = depth.resolution_floor(se)
    boots = depth.bootstrap_slopes(d, c, se, n_boot, np.random.default_rng(seed))
    out["slope"] = {"value": depth.log_slope(d, depth.displacement(c), floor),
                    "ci_low": float(np.quantile(boots, 0.025)), "ci_high": float(np.quantile(boots, 0.975))}
    out["crosscoder"] = []
    cards = []
    where = torch.cat(where_train + where_eval) if tok is not None and cc_rows else None
    dtype = models.compute_dtype("auto", device)
    for l in cc_layers:
        tr, ev = torch.cat(cc_train[l]), torch.cat(cc_eval[l])
        if len(tr) < 64 or len(ev) < 16:
            raise AuditError(f"too few tokens for a crosscoder at layer {l} ({len(tr)} train, {len(ev)} eval); "
                             "raise --tokens")
        cfg = crosscoder_train.fit_config(len(tr), tr.shape[-1], expansion=expansion, k=k, epochs=epochs,
                                          batch_tokens=batch_tokens, lr=1e-3, seed=seed)
        fit = crosscoder_train.fit_and_measure(tr, ev, cfg, stream_seed=seed + l, device=device, dtype=dtype,
                                               progress=progress)
        row = {key: fit.row[key] for key in ("ratio_ft", "ratio_base", "n_ft_only", "fve_base", "fve_ft", "l0",
                                             "dead_fraction", "train_tokens") if key in fit.row}
        out["crosscoder"].append({"layer": l, "depth": l / max(L - 1, 1), **row})
        if where is not None:  # every audited token, training side then held-out side (``where``'s order)
            def batches(tr=tr, ev=ev):
                return itertools.chain(latents.paired_chunks(tr), latents.paired_chunks(ev, first_key=len(tr)))

            t_cards = time.perf_counter()
            block = latents.latent_cards(fit.cc, batches, where, cc_rows, pm, tok, device=device)
            cards.append({"layer": l, "depth": l / max(L - 1, 1), **block,
                          "wall_s": time.perf_counter() - t_cards})
        del fit
    out["displacement_at"] = {str(l): prof[l]["displacement"] for l in cc_layers}
    if tok is not None:
        out["explain"] = explain.explanations(pm, tok, hot, delta_sums, delta_counts, sorted({*cc_layers, L - 1}))
        out["explain"]["latent_cards"] = cards
    return out


# ------------------------------------------------------------------------------------------ reference
def _nearest(rows: list[dict], depth_: float, key: str) -> float:
    if not rows:
        return math.nan
    r = min(rows, key=lambda r: abs(r["depth"] - depth_))
    return float(r.get(key, math.nan))


def summarise(m: dict[str, Any], depths: Sequence[float]) -> dict[str, float]:
    """The audit's comparable numbers: neutral KL and top-1, the depth slope, and per depth the displacement,
    the cross/self ratio and the fine-tune-only count."""
    s = {"kl_neutral": m["output"]["neutral"]["kl"], "top1_neutral": m["output"]["neutral"]["top1"],
         "slope": m["slope"]["value"]}
    for dd in depths:
        s[f"displacement@{dd:g}"] = _nearest(m["profile"], dd, "displacement")
        s[f"ratio_ft@{dd:g}"] = _nearest(m["crosscoder"], dd, "ratio_ft")
        s[f"n_ft_only@{dd:g}"] = _nearest(m["crosscoder"], dd, "n_ft_only")
    return s


def massive_notes(m: dict[str, Any], depths: Sequence[float]) -> list[dict[str, Any]]:
    """Per audited depth (the layer nearest it): 1 - CKA over every token and without the massive-activation
    tokens, how many tokens were flagged and the share of the squared norm they hold, and whether the reading
    is carried by them (``outliers.carried_by_massive``)."""
    out = []
    for dd in depths:
        if not m["profile"]:
            continue
        r = min(m["profile"], key=lambda r: abs(r["depth"] - dd))
        if "displacement_trimmed" not in r:
            continue
        out.append({"depth": dd, "layer": r["layer"], "displacement": r["displacement"],
                    "displacement_trimmed": r["displacement_trimmed"], "n_massive": r["n_massive"],
                    "n_tokens": r["n_tokens"], "massive_share": r["massive_share"],
                    "carried_by_massive": r["carried_by_massive"]})
    return out


def massive_lines(notes: list[dict[str, Any]]) -> list[str]:
    """One warning line per depth whose displacement is carried by a few massive-activation tokens."""
    return [f"note: 1 - CKA at depth {n['depth']:g} (layer {n['layer']}) is {n['displacement']:.3g} over every token "
            f"but {n['displacement_trimmed']:.3g} without the {n['n_massive']} massive-activation token(s) of "
            f"{n['n_tokens']} ({100 * n['massive_share']:.0f}% of the squared norm): it measures how the adapter "
            "moved those few tokens; read the trimmed value for the rest of the stream"
            for n in notes if n["carried_by_massive"]]


def reference_from_results(model: str, depths: Sequence[float] = DEPTHS) -> list[dict[str, Any]]:
    """One row per main-grid adapter of ``model`` in ``results/`` (02_capture and, where it ran, 03_crosscoder)."""
    from . import depth

    out = []
    for cap in results.find("02_capture", model=model):
        p = cap["provenance"]["params"]
        if p.get("layer_control") != "none" or p.get("dose_tag"):
            continue
        rid = cap["provenance"]["run_id"]
        cl = cap["values"].get("cka") or {}
        prof = []
        L = max((int(k.split(".")[1]) for k in cl), default=0)
        for k, v in cl.items():
            l = int(k.split(".")[1])
            prof.append({"layer": l, "depth": l / max(L, 1), "cka": v["cka_debiased"], "se": v["cka_debiased_se"],
                         "displacement": float(depth.displacement([v["cka_debiased"]])[0])})
        prof.sort(key=lambda r: r["layer"])
        d = np.array([r["depth"] for r in prof])
        slope = (depth.log_slope(d, [r["displacement"] for r in prof], depth.resolution_floor([r["se"] for r in prof]))
                 if len(prof) > 2 else math.nan)
        try:
            cc = results.load("03_crosscoder", rid)["values"]["per_layer"]
        except FileNotFoundError:
            cc = []
        neutral = cap["values"]["divergence"]["neutral"]
        m = {"output": {"neutral": {"kl": neutral["kl"], "top1": neutral["top1_agreement"]}}, "profile": prof,
             "slope": {"value": slope}, "crosscoder": cc}
        out.append({"run_id": rid, "corpus": p.get("corpus"), "seed": p.get("seed"),
                    "git_sha": (cap["provenance"].get("git") or {}).get("sha"), **summarise(m, depths)})
    return out


def load_reference(model: str, depths: Sequence[float] = DEPTHS, root: Path | None = None) -> dict[str, Any]:
    """The reference adapters of ``model``: from ``results/`` when the grid ran here, else from the committed
    ``data/reference/audit_reference.json``; ``{"source", "runs"}`` (``runs`` empty when neither has any)."""
    runs = reference_from_results(model, depths)
    if runs:
        return {"source": "results/ (this checkout's grid)", "runs": runs}
    f = (root or paths.project_root()) / REFERENCE_FILE
    if f.is_file():
        ref = json.loads(f.read_text())
        if list(ref.get("depths", [])) == list(depths):
            runs = ref.get("models", {}).get(model, [])
            return {"source": f"{REFERENCE_FILE} (recorded {ref.get('recorded_utc', '?')}, git "
                              f"{str(ref.get('git_sha', '?'))[:10]})", "runs": runs}
    return {"source": "none", "runs": []}


def reference_model(base: str) -> tuple[str | None, str]:
    """(the embedded model whose reference applies to ``base``, how it was matched): an embedded name is itself;
    a local folder is matched to an embedded model whose converted cache holds the same weights (the same
    ``model.safetensors`` bytes: sizes first, then sha256), e.g. the converted cache folder itself or a copy of
    it; otherwise (None, why no reference applies)."""
    from . import models

    if base in models.EMBEDDED:
        return base, "embedded name"
    p = Path(base).expanduser()
    w = p / "model.safetensors"
    if not w.is_file():
        return None, ("not an embedded model, and not a local folder with one model.safetensors to match against "
                      "the embedded models' weights")
    size, digest = w.stat().st_size, None
    for name in sorted(models.EMBEDDED):
        cw = models.cache_path(name) / "model.safetensors"
        if not cw.is_file() or cw.stat().st_size != size:
            continue
        digest = digest or results.sha256_file(w)
        if results.sha256_file(cw) == digest:
            return name, f"local folder with the weights of the converted {name} (sha256 of model.safetensors)"
    return None, "a local folder whose weights match no converted embedded model, so no reference adapter exists"


def write_reference(models_: Sequence[str], depths: Sequence[float] = DEPTHS) -> Path:
    """Record the reference of each model from ``results/`` into ``data/reference/audit_reference.json``."""
    from datetime import datetime, timezone

    data = {"depths": list(depths), "recorded_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "git_sha": results.git_state().get("sha"),  # of the recording; each run keeps the sha it ran at
            "models": {m: reference_from_results(m, depths) for m in models_}}
    if not any(data["models"].values()):
        raise AuditError(f"no grid runs of {list(models_)} in results/: run `make paper` first")
    return paths.write_text_atomic(paths.project_root() / REFERENCE_FILE, json.dumps(data, indent=1) + "\n")


def place(value: float, ref: Sequence[float]) -> dict[str, Any]:
    """Where ``value`` falls among the reference values: percentile (share of references at or below it, ties
    counted half), range, and the call ``within`` / ``above`` / ``below`` the reference range (or ``no
    reference`` / ``undefined``)."""
    r = np.asarray([x for x in ref if x is not None and np.isfinite(x)], float)
    out = {"value": float(value), "n_ref": int(len(r)), "ref_min": float(r.min()) if len(r) else math.nan,
           "ref_max": float(r.max()) if len(r) else math.nan, "percentile": math.nan}
    if not np.isfinite(value):
        return {**out, "call": "undefined"}
    if not len(r):
        return {**out, "call": "no reference"}
    out["percentile"] = float(100 * ((r < value).sum() + 0.5 * (r == value).sum()) / len(r))
    out["call"] = "above" if value > r.max() else "below" if value < r.min() else "within"
    if len(r) > 1 and r.min() == r.max() == value:  # every adapter, this one too, reads the same
        out["call"] = f"uninformative (every reference adapter reads {r.min():.3g})"
        out["percentile"] = math.nan
    return out


def placements(summary: dict[str, float], ref_runs: list[dict],
               massive: Sequence[dict[str, Any]] = ()) -> dict[str, dict[str, Any]]:
    """:func:`place` for every summary number; a depth's 1 - CKA carried by massive-activation tokens
    (``massive``: :func:`massive_notes`) says so in its call, with the trimmed reading beside it."""
    out = {k: place(v, [r.get(k, math.nan) for r in ref_runs]) for k, v in summary.items()}
    for n in massive:
        p = out.get(f"displacement@{n['depth']:g}")
        if p is not None and n["carried_by_massive"]:
            p["call"] += (f"; carried by {n['n_massive']} massive token(s): without them "
                          f"{n['displacement_trimmed']:.3g}")
    return out


# ------------------------------------------------------------------------------------------ report
LABELS = {"kl_neutral": "KL(base||adapted), neutral text", "top1_neutral": "top-1 agreement, neutral text",
          "slope": "depth slope of log10(1 - CKA)", "displacement": "1 - CKA", "ratio_ft": "crosscoder cross/self",
          "n_ft_only": "fine-tune-only latents"}


def axis_of(key: str) -> str:
    return "output" if key.split("@")[0] in AXES["output"] else "internal"


def label(key: str) -> str:
    base, _, dd = key.partition("@")
    return LABELS[base] + (f" at depth {dd}" if dd else "")


def figures(m: dict[str, Any], ref_runs: list[dict], summary: dict[str, float], out_dir: Path) -> dict[str, Path]:
    """Two figures, written as PDF and PNG: the depth profile (internal axis) and the placement of every
    number among the reference adapters (both axes, side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plotting

    plotting.setup()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    fig, ax = plt.subplots(figsize=(5, 3.2))
    d = [p["depth"] for p in m["profile"]]
    ax.errorbar(d, [p["displacement"] for p in m["profile"]], yerr=[p["se"] for p in m["profile"]], marker="o",
                ms=3, label="audited adapter, every token")
    if m["profile"] and "displacement_trimmed" in m["profile"][0]:
        ax.errorbar(d, [p["displacement_trimmed"] for p in m["profile"]],
                    yerr=[p["se_trimmed"] for p in m["profile"]], marker="s", ms=3, ls="--",
                    label="without massive-activation tokens")
    ax.set_yscale("log")
    for c in m["crosscoder"]:
        ax.axvline(c["depth"], ls=":", c="grey", lw=0.8)
    ax.set_xlabel("relative depth")
    ax.set_ylabel("displacement 1 - CKA (debiased)")
    ax.set_title(f"Depth profile, slope {m['slope']['value']:.2f} decades/depth")
    ax.legend(fontsize=7)
    fig.tight_layout()
    files["profile"] = _save(fig, out_dir / "profile")
    keys = list(summary)
    fig, axes = plt.subplots(1, len(keys), figsize=(1.6 * len(keys), 3.0))
    for ax, k in zip(np.atleast_1d(axes), keys):
        ref = [r.get(k, math.nan) for r in ref_runs]
        ref = [x for x in ref if x is not None and np.isfinite(x)]
        ax.scatter(np.zeros(len(ref)) + np.random.default_rng(0).uniform(-0.15, 0.15, len(ref)), ref, s=10,
                   c="grey", alpha=0.6, label="reference adapters")
        ax.scatter([0], [summary[k]], s=40, c="C3" if axis_of(k) == "output" else "C0", marker="D",
                   label="audited", zorder=3)
        ax.set_xticks([])
        ax.set_title(f"{axis_of(k)}\n{label(k)}", fontsize=6)
    h, lab = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    files["placement"] = _save(fig, out_dir / "placement")
    return files


def _save(fig, stem: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(stem.with_suffix(".pdf"))
    fig.savefig(stem.with_suffix(".png"), dpi=130)
    plt.close(fig)
    return stem.with_suffix(".png")


def summary_rows(rep: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(axis, measure, value, reference range (n), call) per number, output axis first."""
    rows = []
    for k, p in sorted(rep["placement"].items(), key=lambda kv: (axis_of(kv[0]) != "output", kv[0])):
        rng = (f"{p['ref_min']:.3g} - {p['ref_max']:.3g} (n={p['n_ref']})" if p["n_ref"] else "none")
        call = p["call"] + (f" (percentile {p['percentile']:.0f})" if np.isfinite(p["percentile"]) else "")
        rows.append((axis_of(k), label(k), f"{p['value']:.4g}", rng, call))
    return rows


def terminal_table(rep: dict[str, Any]) -> str:
    rows = [("axis", "measure", "value", "reference range", "call")] + summary_rows(rep)
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
    return "\n".join([lines[0], "  ".join("-" * x for x in w), *lines[1:]])


def massive_html(rep: dict[str, Any]) -> str:
    """The massive-activation table of the report: per audited depth, both readings and the flag."""
    e = html.escape
    notes = rep.get("massive") or []
    if not notes:
        return ""
    trs = "".join(f"<tr><td>{n['depth']:g} (layer {n['layer']})</td><td>{n['displacement']:.4g}</td>"
                  f"<td>{n['displacement_trimmed']:.4g}</td><td>{n['n_massive']} of {n['n_tokens']}</td>"
                  f"<td>{100 * n['massive_share']:.0f}%</td>"
                  f"<td class='call'>{'carried by them' if n['carried_by_massive'] else 'no'}</td></tr>"
                  for n in notes)
    return (f"<h2 id='massive'>Massive-activation tokens</h2><p>Linear CKA weighs each token by its squared norm, "
            f"and a few attention-sink tokens can have norms 10-1000 times the median, so they can decide 1 - CKA "
            f"alone. Tokens above {e(str(rep.get('massive_factor', '10')))} x the median token norm (in either "
            f"model) are left out of the second reading. The reference adapters' values are over every token, "
            f"as placed above.</p><table><tr><th>depth</th><th>1 - CKA, every token</th><th>without massive "
            f"tokens</th><th>massive tokens</th><th>their share of the squared norm</th><th>displacement carried "
            f"by them</th></tr>{trs}</table>")


def render_html(rep: dict[str, Any], pngs: dict[str, Path]) -> str:
    """A self-contained page: the two axes side by side, the figures embedded as data URIs, how to read it."""
    e = html.escape
    img = {k: "data:image/png;base64," + base64.b64encode(Path(p).read_bytes()).decode() for k, p in pngs.items()}
    cols = {}
    for ax_ in ("output", "internal"):
        trs = "".join(f"<tr><td>{e(m)}</td><td>{e(v)}</td><td>{e(r)}</td><td class='call'>{e(c)}</td></tr>"
                      for a, m, v, r, c in summary_rows(rep) if a == ax_)
        cols[ax_] = (f"<div class='axis' id='{ax_}'><h2>{ax_} axis</h2><table><tr><th>measure</th><th>value</th>"
                     f"<th>reference range</th><th>call</th></tr>{trs}</table></div>")
    out = rep["measure"]["output"]
    outrows = "".join(f"<tr><td>{e(n)}</td><td>{o['kl']:.4g} [{o['kl_lo']:.3g}, {o['kl_hi']:.3g}]</td>"
                      f"<td>{o['top1']:.3f} [{o['top1_lo']:.3f}, {o['top1_hi']:.3f}]</td><td>{o['n_tokens']}</td></tr>"
                      for n, o in out.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>adapterscope audit</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;}} .axes{{display:flex;gap:2em}}
.axis{{flex:1}} table{{border-collapse:collapse}} td,th{{border-bottom:1px solid #ddd;padding:3px 6px;font-size:13px}}
.call{{font-weight:bold}} img{{max-width:100%}} .tok{{font-family:monospace;background:#f3f3f3}}
.ctx{{font-family:monospace;font-size:12px;max-width:420px}} .tops{{font-size:11px}}
mark{{background:#ffd54f}}</style></head><body>
<h1>Two-axis audit</h1>
<p>base <code>{e(rep['base'])}</code>, adapter <code>{e(str(rep['adapter']))}</code>; reference:
{e(rep['reference']['source'])} ({len(rep['reference']['runs'])} adapters of the same base;
{e(rep['reference'].get('matched', ''))}).</p>
<div class="axes">{cols['output']}{cols['internal']}</div>
<h2>Output change per text (95% CI over rows)</h2>
<table><tr><th>text</th><th>KL(base||adapted)</th><th>top-1 agreement</th><th>tokens</th></tr>{outrows}</table>
{massive_html(rep)}
{explain.explain_html(rep["measure"].get("explain"))}
{latents.cards_html((rep["measure"].get("explain") or {}).get("latent_cards"))}
<h2>Figures</h2>
<figure><img alt="depth profile" src="{img['profile']}"><figcaption>Internal axis by depth: displacement
1 - CKA between base and adapted residual streams per layer (jackknife SE), over every token and without the
massive-activation tokens; dotted: the crosscoder depths.
</figcaption></figure>
<figure><img alt="placement" src="{img['placement']}"><figcaption>Every number (diamond) among this project's
reference adapters of the same base (grey), output axis in red, internal axis in blue.</figcaption></figure>
<h2>How to read this</h2>
<ul><li>Read the two axes separately; there is no combined score. An adapter can be far beyond the reference on
one axis and ordinary on the other: reweighting existing circuitry moves outputs with little new internal
structure; construction adds features (fine-tune-only latents, a high cross/self ratio) that next-token outputs
may barely show.</li>
<li><b>within</b> / <b>above</b> / <b>below</b>: the value against the range of the reference adapters (LoRA rank
16 on q/k/v/o, 50 steps, on contrasting corpora); the percentile is the share of references at or below it.
The references saw other text and a different token budget; treat small differences as noise.</li>
<li>Crosscoder numbers depend on the token budget (<code>--tokens</code>); the reference used about 12k
training tokens per depth.</li></ul>
<p style="font-size:11px">git {e(str(rep['provenance']['git'].get('sha', '?'))[:12])}, {e(rep['provenance']['device'])},
wall time {rep['wall_s']:.0f} s.</p></body></html>
"""


# ------------------------------------------------------------------------------------------ entry point
def run_audit(base: str, adapter: str | Path, out: str | Path, *, text: str | None = None, tokens: int = 4096,
              seq_len: int = 64, depths: Sequence[float] = DEPTHS, device: str = "cpu", seed: int = 0,
              n_boot: int = 1000, epochs: int = 8, progress: bool = True, log=print) -> dict[str, Any]:
    """Audit one pair and write ``out/audit.json``, ``out/audit.html`` and ``out/figures/`` (atomically: a
    failed audit leaves no partial report). Every input is checked before any model loads (``audit_inputs``):
    the options, ``out`` (never a place holding the user's files), the adapter's config and weights against the
    base model's safetensors headers, and the user's text (read lazily, only the rows the budget takes)."""
    from . import corpora, models, outliers

    t0 = time.time()
    audit_inputs.check_options(tokens, seq_len, seed, epochs, depths)
    models.check_device(device)  # ModelError: the CLI's exit 2
    cfg = check_adapter_dir(adapter)
    if text is not None:
        audit_inputs.check_text_source(text)
    base_dir = models.resolve(base)  # an embedded model converts here, once
    n_layers = models.config_num_layers(base)
    if n_layers:
        depth_layers(n_layers, depths)
    audit_inputs.check_seq_len(seq_len, base_dir)
    local_base = Path(base_dir) if Path(base_dir).is_dir() else None
    out = audit_inputs.check_out(out, {"--adapter": Path(adapter), "the base model's folder": local_base})
    audit_inputs.check_weights(Path(adapter), cfg, local_base)
    extra = (tokens - NEUTRAL_ROWS * NEUTRAL_LEN) // seq_len
    if text is not None and extra < 1:
        raise AuditError(f"--tokens {tokens} leaves no row for --text; raise it above "
                         f"{NEUTRAL_ROWS * NEUTRAL_LEN + seq_len}")
    text_set = None
    if text is not None:
        text_set = audit_inputs.text_rows(models.load_tokenizer(base), text, extra, seq_len)
    paths.clean_temporaries_beside(out)  # what a killed audit left beside this report
    params = {"base": base, "adapter": str(adapter), "text": text, "tokens": tokens, "seq_len": seq_len,
              "depths": list(depths), "seed": seed, "n_boot": n_boot, "epochs": epochs}
    run = results.Run("audit", "audit", params=params, seed=seed, device=device)
    log(f"[1/4] loading {safe(base)} with the adapter {safe(adapter)}")
    pm, tok = load_pair(base, adapter, device)
    run.add_input("adapter", adapter)
    # the output axis's neutral set is the grid's own (02_capture: 32 x 64 tokens, same seed, same cache), so
    # an adapter of the grid audited with seed 0 reproduces its reference KL; the rest of the budget is the
    # user's text, or more base-model samples (another seed) that feed the internal axis
    key = f"{base}__{models.fingerprint(base)[:12]}" if base in models.EMBEDDED else None
    log(f"[2/4] base-model samples: {NEUTRAL_ROWS} neutral rows" + ("" if text_set or extra < 1 else
                                                                    f" and {extra} more for the internal axis"))
    with pm.disable_adapter():  # samples of the base model, as 02_capture draws them (and shares its cache)
        sets = {"neutral": corpora.neutral_samples(pm, tok, n=NEUTRAL_ROWS, length=NEUTRAL_LEN, seed=seed,
                                                   device=device, cache_key=key, progress=progress)}
        if text_set is not None:
            sets["text"] = text_set[0]
            run.add_input("text", text_set[1])
        elif extra > 0:
            sets["neutral_extra"] = corpora.neutral_samples(pm, tok, n=extra, length=seq_len, seed=seed + 1,
                                                            device=device, progress=progress)
    log(f"[3/4] paired pass and crosscoders: {sum(len(r) for r in sets.values())} rows x {seq_len} tokens, "
        f"depths {list(depths)}")
    m = measure(pm, sets, depths, device=device, epochs=epochs, n_boot=n_boot, seed=seed, progress=progress, tok=tok)
    summ = summarise(m, depths)
    ref_name, matched = reference_model(base)
    ref = load_reference(ref_name, depths) if ref_name else {"source": "none", "runs": []}
    ref["matched"] = matched
    if not ref["runs"]:
        log(f"note: no reference adapters for this base ({safe(matched)}): every number is reported without a "
            "placement")
    rep = {"base": base, "adapter": str(adapter), "measure": m, "summary": summ, "reference": ref,
           "placement": placements(summ, ref["runs"], massive_notes(m, depths)), "massive": massive_notes(m, depths),
           "massive_factor": outliers.FACTOR}
    log(f"[4/4] writing the report to {safe(out)}")
    with paths.atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        pngs = figures(m, ref["runs"], summ, tmp / "figures")
        rep["wall_s"] = time.time() - t0
        rep["provenance"] = run.provenance()
        (tmp / "audit.json").write_text(json.dumps(results._jsonable(rep), indent=1, allow_nan=True) + "\n")
        (tmp / "audit.html").write_text(render_html(rep, pngs))
        audit_inputs.write_marker(tmp, {"base": base, "adapter": str(adapter)})
    log(terminal_table(rep))
    for line in (massive_lines(rep["massive"]) + explain.explain_lines(m.get("explain"))
                 + latents.cards_lines((m.get("explain") or {}).get("latent_cards"))):
        log(line)
    log(f"report: {safe(out / 'audit.html')}")
    return rep
