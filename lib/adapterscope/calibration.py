"""Calibration of the internal-axis instruments at the scale they run: what could the crosscoder have seen?

A null ("no fine-tune-only latent") means something only beside what the detector can see. This module plants
known features into *real* paired activations and asks the exact crosscoder protocol to find them, and builds
the null adapters every grid reading is stated against.

**Planted features.** ``n`` unit directions ``v_i`` orthogonal to each other and to the base stream's top
principal subspace (the directions that carry ``pc_variance`` of its variance), so a planted feature is new
geometry, not a reweighting of what the base already represents. Feature ``i`` fires on each token with
probability ``f_i`` (seeded Bernoulli), and where it fires the fine-tuned stream gets ``+ m_i u v_i``, with
``m_i = alpha_i`` times the median token norm of the fine-tuned stream and ``u ~ Uniform(0.5, 1.5)`` (features
vary in strength). A planted feature's per-token RMS contribution, relative to the median norm, is therefore
``alpha sqrt(f (1 + 1/12))``: the axis on which it is compared with the real adapter's displacement spectrum
(:func:`displacement_spectrum`).

**Detection.** After the crosscoder is trained, each planted direction is matched to the latent whose
fine-tuned decoder row has the largest cosine with it (:func:`match_planted`). It counts as *learned* when that
cosine is at least ``cos_min`` (0.7), as *fine-tune-only* when the latent is also classed fine-tune-only by the
relative decoder norm (r > 0.9, ``crosscoder.classify_latents``), and as *genuine* when Latent Scaling also
calls it genuine. The minimum detectable effect (:func:`minimum_detectable`) is the smallest planted magnitude
whose detection rate over replicates reaches one half.

**Null adapters.** :func:`randomise_lora` replaces an adapter's LoRA factors by random ones with the same
per-module ``||Delta W||_F`` (so the displacement has the trained adapter's size, but nothing was learned);
:func:`iter_adapter_pairs` streams the activations of two adapters of one base on the same rows (e.g. the
seed-0 and seed-1 adapters of one corpus: the same training, other noise).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .intruders import principal_basis, principal_basis_of_cov  # noqa: F401 (re-exported)

COS_MIN = 0.7  # decoder cosine at which a planted direction counts as learned
PROFILE_ROWS = 32  # held-out rows of the depth profiles (trained vs random LoRA), about 2k tokens
UNIFORM_VAR = 1.0 / 12.0  # variance of the Uniform(0.5, 1.5) strength factor


# ------------------------------------------------------------------------------------------ planting
def orthogonal_directions(x_ND: torch.Tensor, n: int, pc_variance: float = 0.9, seed: int = 0
                          ) -> tuple[torch.Tensor, int]:
    """(n, D) orthonormal random directions, each orthogonal to the top principal subspace of ``x`` that holds
    ``pc_variance`` of its variance; and that subspace's dimension."""
    P = principal_basis(x_ND, pc_variance)
    D, k = P.shape
    if n + k > D:
        raise ValueError(f"{n} directions do not fit beside the {k}-dimensional principal subspace in D = {D}")
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(D, n, generator=g, dtype=torch.float64)
    Pd = P.double()
    G -= Pd @ (Pd.T @ G)
    Q, _ = torch.linalg.qr(G)
    Q -= Pd @ (Pd.T @ Q)  # once more, against rounding
    Q, _ = torch.linalg.qr(Q)
    return Q.T.float().contiguous(), k


def median_norm(x_ND: torch.Tensor) -> float:
    return float(x_ND.float().norm(dim=-1).median())


def plant(x_NMD: torch.Tensor, V_nD: torch.Tensor, magnitudes: Sequence[float], freqs: Sequence[float],
          seed: int, model: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """A copy of ``x`` with feature ``i`` (direction ``V[i]``, absolute magnitude ``magnitudes[i]``) added to
    model ``model``'s stream on a seeded ``freqs[i]`` share of tokens, each firing scaled by Uniform(0.5, 1.5);
    and the (n, N) boolean firing mask."""
    n, N = len(V_nD), len(x_NMD)
    if not (len(magnitudes) == len(freqs) == n):
        raise ValueError(f"need one magnitude and one frequency per direction ({n}), got {len(magnitudes)} and "
                         f"{len(freqs)}")
    bad = [f for f in freqs if not 0 < f <= 1]
    if bad:
        raise ValueError(f"firing frequencies must be in (0, 1], got {bad}")
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, N, generator=g) < torch.tensor(freqs, dtype=torch.float32)[:, None]
    strength = torch.rand(n, N, generator=g) + 0.5
    coef = mask * strength * torch.tensor(magnitudes, dtype=torch.float32)[:, None]  # (n, N)
    out = x_NMD.clone()
    out[:, model] += (coef.T @ V_nD.float()).to(out.dtype)
    return out, mask


def planted_rms(alpha: float, freq: float) -> float:
    """Per-token RMS of a planted feature relative to the median token norm: ``alpha sqrt(f E[u^2])``."""
    return float(alpha * math.sqrt(freq * (1.0 + UNIFORM_VAR)))


def plant_grid(alphas: Sequence[float], freqs: Sequence[float], replicates: int) -> list[dict[str, Any]]:
    """One entry per planted feature: every (alpha, freq) cell ``replicates`` times, in a fixed order."""
    return [{"alpha": float(a), "freq": float(f), "replicate": r} for a in alphas for f in freqs
            for r in range(replicates)]


# ------------------------------------------------------------------------------------------ detection
def match_planted(W_dec_FD: torch.Tensor, V_nD: torch.Tensor, labels: Sequence[str], cos_min: float = COS_MIN,
                  r_F: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """For each planted direction: the latent whose (fine-tuned) decoder row is closest in cosine, that cosine
    (absolute: a latent may learn ``-v``), its class label (and relative decoder norm ``r`` when ``r_F`` is
    given), and whether the direction is ``learned`` (cosine at least ``cos_min``) and learned as a
    fine-tune-only latent (``ft_only``)."""
    W = torch.nn.functional.normalize(W_dec_FD.detach().float(), dim=-1)
    V = torch.nn.functional.normalize(V_nD.float(), dim=-1)
    cos = (V @ W.T).abs()  # (n, F)
    best_cos, best = cos.max(dim=1)
    out = []
    for i in range(len(V)):
        j, c = int(best[i]), float(best_cos[i])
        out.append({"latent": j, "cosine": c, "label": str(labels[j]), "learned": c >= cos_min,
                    "ft_only": c >= cos_min and str(labels[j]) == "ft_only",
                    **({"r": float(r_F[j])} if r_F is not None else {})})
    return out


def detection_rates(rows: Sequence[dict[str, Any]], by: Sequence[str] = ("alpha", "freq"),
                    flags: Sequence[str] = ("learned", "ft_only", "genuine")) -> list[dict[str, Any]]:
    """Share of planted features with each flag, per group of ``by`` keys (in first-seen order), with counts."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        row["n"] = len(rs)
        for fl in flags:
            row[fl] = float(np.mean([bool(r.get(fl, False)) for r in rs]))
        out.append(row)
    return out


def minimum_detectable(rates: Sequence[dict[str, Any]], flag: str = "ft_only", by: Sequence[str] = ("freq",),
                       level: float = 0.5) -> list[dict[str, Any]]:
    """Per group of ``by`` keys: the smallest ``alpha`` whose ``flag`` rate reaches ``level`` with every larger
    alpha of the group reaching it too (monotone from there), as ``mde_alpha`` and its RMS (``mde_rms``);
    ``inf`` when no planted magnitude is detected that often."""
    groups: dict[tuple, list[dict]] = {}
    for r in rates:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["alpha"])
        mde = math.inf
        for i in range(len(rs) - 1, -1, -1):
            if rs[i][flag] >= level:
                mde = rs[i]["alpha"]
            else:
                break
        row = dict(zip(by, key))
        row.update({"flag": flag, "level": level, "mde_alpha": mde,
                    "mde_rms": planted_rms(mde, row["freq"]) if "freq" in row and math.isfinite(mde) else math.inf})
        out.append(row)
    return out


def displacement_spectrum(x_NMD: torch.Tensor, top: int = 10, base: int = 0, ft: int = 1) -> dict[str, Any]:
    """The real adapter's displacement ``Delta a = a_ft - a_base`` on the same axis as a planted feature's RMS:
    per-token norms relative to the median token norm of the fine-tuned stream (median and 90th percentile),
    and the RMS along each of its top singular directions, ``sigma_i / sqrt(N)`` over the median norm."""
    d = (x_NMD[:, ft] - x_NMD[:, base]).double()
    m = median_norm(x_NMD[:, ft])
    rel = d.norm(dim=-1) / m
    s = torch.linalg.svdvals(d)
    rms = (s / math.sqrt(len(d)) / m)[:top]
    return {"median_norm": m, "rel_norm_median": float(rel.median()), "rel_norm_p90": float(rel.quantile(0.9)),
            "rms_top": rms.tolist(), "energy_share_top": float((s[:top] ** 2).sum() / (s ** 2).sum().clamp_min(1e-300)),
            "n_tokens": int(len(d))}


# ------------------------------------------------------------------------------------------ null adapters
@torch.no_grad()
def randomise_lora(peft_model, adapter: str, seed: int) -> dict[str, float]:
    """Replace ``adapter``'s LoRA factors in place by seeded Gaussian ones rescaled so that every module's
    ``||scaling B A||_F`` is the trained one's; returns module -> that norm. The random adapter moves each
    module's output by as much as the trained adapter, in directions nothing learned."""
    g = torch.Generator().manual_seed(seed)
    norms = {}
    for name, mod in peft_model.named_modules():
        if not (hasattr(mod, "lora_A") and adapter in getattr(mod, "lora_A", {})):
            continue
        A, B = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight
        s = float(mod.scaling[adapter])
        target = float((s * (B.double() @ A.double())).norm())
        A_new = torch.randn(A.shape, generator=g, dtype=torch.float64)
        B_new = torch.randn(B.shape, generator=g, dtype=torch.float64)
        got = float((s * (B_new @ A_new)).norm())
        B_new *= target / got if got > 0 else 0.0
        A.copy_(A_new.to(A.dtype))
        B.copy_(B_new.to(B.dtype))
        norms[name] = target
    if not norms:
        raise ValueError(f"adapter {adapter!r} has no LoRA module in this model")
    return norms


@torch.no_grad()
def iter_adapter_pairs(peft_model, rows: torch.Tensor, layer: int, adapters: tuple[str, str],
                       batch_size: int = 8, device: str = "cpu") -> Iterator[torch.Tensor]:
    """(B*T', 2, D) residual-stream outputs of decoder layer ``layer`` with adapter ``adapters[0]`` and then
    ``adapters[1]`` active, on the same rows, per batch, position 0 dropped (as ``stack_tokens`` drops it);
    the previously active adapter is restored."""
    from . import models

    mod = models.site_module(peft_model, layer, "resid_post")
    before = peft_model.active_adapter
    grabbed: list[torch.Tensor] = []

    class _Done(Exception):
        pass

    def hook(_m, _inp, out):  # keep the layer's output and skip the rest of the forward
        grabbed.append((out[0] if isinstance(out, tuple) else out).detach())
        raise _Done

    h = mod.register_forward_hook(hook)
    try:
        peft_model.eval()
        for i in range(0, len(rows), batch_size):
            ids = rows[i:i + batch_size].to(device)
            pair = []
            for a in adapters:
                peft_model.set_adapter(a)
                grabbed.clear()
                try:
                    peft_model(input_ids=ids)
                except _Done:
                    pass
                pair.append(grabbed[0][:, 1:].reshape(-1, grabbed[0].shape[-1]).float().cpu())
            yield torch.stack(pair, dim=1)
    finally:
        h.remove()
        peft_model.set_adapter(before)


# ------------------------------------------------------------------------------------------ the study
@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    """One calibration study at one depth; the crosscoder protocol fields are 03_crosscoder's."""
    depth: float = 0.4
    budgets: tuple[int, ...] = (12_000, 48_000, 144_000)  # training tokens; the first is the grid's (~190 rows)
    expansions: tuple[int, ...] = (4, 16)  # the first is the grid's; the others run at the first budget only
    alphas: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)  # planted magnitudes, times the median token norm
    strong_alpha: float = 1.0  # the positive control's magnitude (one of alphas)
    freqs: tuple[float, ...] = (0.005, 0.02, 0.08)  # firing frequencies
    replicates: int = 2  # planted features per (alpha, freq) cell and fit
    matched_freq: float = 0.02  # the matched features fire this often ...
    matched_replicates: int = 8  # ... this many of them, with the RMS of the real displacement's top direction
    pc_variance: float = 0.9  # planted directions avoid the base's principal subspace holding this variance
    cos_min: float = COS_MIN
    k: int = 32
    epochs: int = 8
    batch_tokens: int = 1024
    lr: float = 1e-3
    eval_tokens: int = 4000
    seq_len: int = 64
    capture_batch: int = 8
    seed: int = 0

    def fits(self) -> list[tuple[int, int]]:
        """(budget, expansion) of each planted fit: every expansion at the first budget, every further budget
        at the first expansion."""
        return [(self.budgets[0], e) for e in self.expansions] + [(b, self.expansions[0]) for b in self.budgets[1:]]


def token_pool(tok, corpus: str, others: Sequence[str], heldout_frac: float, seq_len: int, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows): ``corpus``'s packed training rows in a seeded order, then the other
    corpora's (each in a seeded order, interleaved row by row), so the first rows are in-domain as in
    ``03_crosscoder`` and larger budgets add the grid's other text; held-out rows likewise from the held-out
    splits."""
    from . import corpora, finetune

    def rows(names, held):
        parts = []
        for i, c in enumerate(names):
            d = corpora.load_corpus(c, heldout_frac=heldout_frac, seed=seed)
            r = finetune.pack_documents(tok, d.heldout if held else d.train, seq_len)
            parts.append(r[torch.randperm(len(r), generator=torch.Generator().manual_seed(seed + i))])
        return parts

    def interleave(parts):
        out, i = [], 0
        while any(i < len(p) for p in parts):
            out += [p[i] for p in parts if i < len(p)]
            i += 1
        return torch.stack(out) if out else torch.zeros((0, seq_len), dtype=torch.long)

    rest = [c for c in others if c != corpus]
    tr_own, *tr_rest = rows([corpus, *rest], held=False)
    ho_own, *ho_rest = rows([corpus, *rest], held=True)
    return torch.cat([tr_own, interleave(tr_rest)]), torch.cat([ho_own, interleave(ho_rest)])


def _fit(train, evals, cfg: CalibrationConfig, expansion: int, stream_seed: int, device: str, progress: bool):
    from . import crosscoder_train, models

    c = crosscoder_train.fit_config(len(train), train.shape[-1], expansion=expansion, k=cfg.k, epochs=cfg.epochs,
                                    batch_tokens=cfg.batch_tokens, lr=cfg.lr, seed=cfg.seed)
    return crosscoder_train.fit_and_measure(train, evals, c, stream_seed=stream_seed, device=device,
                                            dtype=models.compute_dtype("auto", device), progress=progress)


def _reading(fit, pair_x: torch.Tensor, name: str) -> dict[str, Any]:
    """The grid's internal measures of one unplanted pair: fine-tune-only latents, cross/self ratio, the FVU
    gap (``fvu_cross_ft - fvu_self_ft``; both also without the massive-activation tokens), 1 - CKA (and trimmed),
    the share of the displacement outside the base's 99% principal subspace (trimmed) and the per-token
    displacement."""
    from . import cka, intruders, outliers

    r = fit.row
    x = pair_x.double()
    keep = ~outliers.massive_mask(x[:, 0], x[:, 1])
    return {"pair": name, "n_ft_only": r["n_ft_only"], "n_ft_only_genuine": r["n_ft_only_genuine"],
            "ratio_ft": r["ratio_ft"], "fvu_gap": r["fvu_cross_ft"] - r["fvu_self_ft"],
            "fvu_gap_trimmed": r["fvu_gap_ft_trimmed"], "ratio_trimmed": r["ratio_ft_trimmed"],
            "outside_99": intruders.outside_share(x[keep, 0], x[keep, 1] - x[keep, 0], (0.99,))["0.99"],
            "fve_ft": r["fve_ft"], "displacement": 1 - cka.cka_features(x[:, 0], x[:, 1]),
            "displacement_trimmed": 1 - cka.cka_features(x[keep, 0], x[keep, 1]),
            "rel_norm_median": displacement_spectrum(pair_x, top=1)["rel_norm_median"]}


@torch.no_grad()
def depth_profile(peft_model, rows: torch.Tensor, adapter: str, batch_size: int = 8, device: str = "cpu"
                  ) -> dict[str, Any]:
    """Trimmed 1 - CKA (debiased, without massive-activation tokens) between the base and ``adapter`` streams at
    every layer, and the least-squares slope of its log10 against relative depth (:func:`adapterscope.depth.log_slope`,
    layers below their jackknife resolution read at it): for a random-direction LoRA with the trained adapter's
    per-module norms, the depth slope that accumulation through the residual stream gives on its own."""
    from . import capture, depth, models, outliers

    L = models.num_layers(peft_model)
    peft_model.set_adapter(adapter)
    if len(rows) < 2:
        raise ValueError(f"depth_profile needs at least two rows (one jackknife block each), got {len(rows)}")
    batch_size = max(1, min(batch_size, -(-len(rows) // 2)))  # at least two batches: two jackknife blocks
    n_blocks = min(4, -(-len(rows) // batch_size))  # one block per batch, at most four
    accs = [outliers.TrimmedCKA(n_blocks=n_blocks) for _ in range(L)]
    for b in capture.iter_paired(peft_model, rows, list(range(L)), batch_size=batch_size, device=device,
                                 with_logits=False, progress=False):
        for layer in range(L):
            pair = b.tokens(models.hook_key(layer, "resid_post"))
            accs[layer].update(pair[:, 0], pair[:, 1])
    res = [a.result(debiased=True) for a in accs]
    d = np.arange(L) / (L - 1)
    disp = np.array([1 - r["cka_trimmed"] for r in res])
    se = np.array([r["cka_trimmed_se"] for r in res])
    ok = np.isfinite(disp) & np.isfinite(se)
    slope = depth.log_slope(d[ok], disp[ok], depth.resolution_floor(se[ok])) if ok.sum() >= 2 else float("nan")
    return {"adapter": adapter, "depth": d.tolist(), "disp_trimmed": disp.tolist(), "se": se.tolist(),
            "slope": float(slope)}


def run_calibration(model: str, corpus: str, seeds: Sequence[int], corpus_names: Sequence[str],
                    cfg: CalibrationConfig, *, device: str = "cpu", on_input=None, progress: bool = True,
                    log=print) -> dict[str, Any]:
    """The calibration study on the main grid's adapters of ``model`` x ``corpus`` (01_finetune, layer control
    none): the first seed's adapter is the real pair, planted and unplanted; a second seed, when given, is the
    seed-to-seed null; a random-direction copy of the first (:func:`randomise_lora`) is the other null."""
    import time

    from . import capture, crosscoder, crosscoder_train, finetune, models, outliers, params, paths, results, stats

    if cfg.strong_alpha not in cfg.alphas:
        raise CalibrationError(f"strong_alpha {cfg.strong_alpha} is not one of alphas {list(cfg.alphas)}")
    t_all, phase = time.perf_counter(), {}
    runs, dirs = {}, {}
    for s in seeds[:2]:
        rid = params.cell_run_id(model, corpus, "none", s)
        try:
            runs[s] = results.load("01_finetune", rid)
        except FileNotFoundError:
            raise CalibrationError(f"no 01_finetune run {rid}: run the grid first (`make paper`)") from None
        dirs[f"s{s}"] = paths.project_root() / runs[s]["values"]["adapter_dir"]
        if on_input:
            on_input(f"01/{rid}", results.sha256_file(results.results_path("01_finetune", rid)))
            on_input(f"adapter/{rid}", dirs[f"s{s}"])
    if on_input:
        on_input(f"model/{model}", models.fingerprint(model))
    s0 = f"s{seeds[0]}"
    base, tok = models.load_model(model, device=device)
    pm = finetune.load_adapters(base, {**dirs, "random": dirs[s0]}, model_name=model)
    randomise_lora(pm, "random", seed=cfg.seed + 1000)
    L = models.num_layers(pm)
    layer = int(round(cfg.depth * (L - 1)))
    p0 = runs[seeds[0]]["provenance"]["params"]
    train_rows, eval_rows = token_pool(tok, corpus, corpus_names, p0["heldout_frac"], cfg.seq_len, p0["seed"])
    per_row = cfg.seq_len - 1
    n_train = -(-max(cfg.budgets) // per_row)
    n_eval = -(-cfg.eval_tokens // per_row)
    if len(train_rows) < n_train or len(eval_rows) < n_eval:
        raise CalibrationError(f"the corpora hold {len(train_rows)} training and {len(eval_rows)} held-out rows; "
                               f"the budgets need {n_train} and {n_eval}: lower budgets or eval_tokens")
    train_rows, eval_rows = train_rows[:n_train], eval_rows[:n_eval]
    key = models.hook_key(layer, "resid_post")

    def paired(rows, adapter):
        pm.set_adapter(adapter)
        return crosscoder_train.stack_tokens(capture.iter_paired(pm, rows, [layer], batch_size=cfg.capture_batch,
                                                                 device=device, with_logits=False,
                                                                 progress=progress), [key])[key]

    t0 = time.perf_counter()
    log(f"capture: layer {layer}, {len(train_rows)} + {len(eval_rows)} rows, base vs {s0}")
    x_tr, x_ev = paired(train_rows, s0), paired(eval_rows, s0)
    phase["capture"] = time.perf_counter() - t0
    b0 = cfg.budgets[0]
    spectrum = displacement_spectrum(x_tr[:b0])
    m = median_norm(x_tr[:, 1])
    cells = plant_grid(cfg.alphas, cfg.freqs, cfg.replicates)
    alpha_matched = spectrum["rms_top"][0] / math.sqrt(cfg.matched_freq * (1 + UNIFORM_VAR))
    cells += [{"alpha": alpha_matched, "freq": cfg.matched_freq, "replicate": r, "matched": True}
              for r in range(cfg.matched_replicates)]
    keep = ~outliers.massive_mask(x_tr[:b0, 0], x_tr[:b0, 1])  # a few sink tokens would own the top components
    V, n_pc = orthogonal_directions(x_tr[:b0, 0][keep], len(cells), cfg.pc_variance, seed=cfg.seed)
    mags = [c["alpha"] * m for c in cells]
    fq = [c["freq"] for c in cells]
    planted_tr, _ = plant(x_tr, V, mags, fq, seed=cfg.seed)
    planted_ev, _ = plant(x_ev, V, mags, fq, seed=cfg.seed + 1)
    rows, fits = [], []
    t0 = time.perf_counter()
    for budget, expansion in cfg.fits():
        log(f"planted fit: {budget} tokens, expansion {expansion}")
        fit = _fit(planted_tr[:budget], planted_ev, cfg, expansion, cfg.seed + layer, device, progress)
        cls = crosscoder.classify_latents(fit.cc)
        match = match_planted(fit.cc.W_dec_FMD[:, 1], V, cls["labels"], cfg.cos_min, r_F=cls["r"])
        ft_lat = sorted({r_["latent"] for r_ in match if r_["ft_only"]})
        genuine = set()
        if ft_lat:
            ls = crosscoder.latent_scaling(fit.cc, crosscoder_train.chunks(planted_tr[:budget]), latents=ft_lat)
            genuine = {int(j) for j, g in zip(ls["latents"], ls["genuine_ft_only"]) if g}
        for c, r_ in zip(cells, match):
            rows.append({"budget": budget, "expansion": expansion, **c, "matched": bool(c.get("matched")),
                         "rms": planted_rms(c["alpha"], c["freq"]), **r_, "genuine": r_["ft_only"]
                         and r_["latent"] in genuine})
        fits.append({"budget": budget, "expansion": expansion, **{k_: fit.row[k_] for k_ in (
            "fve_base", "fve_ft", "l0", "dead_fraction", "n_ft_only", "ratio_ft", "fvu_gap_ft", "fvu_gap_ft_trimmed",
            "ratio_ft_trimmed", "train_s", "train_tokens")}})
    phase["planted_fits"] = time.perf_counter() - t0
    grid_rows = [r_ for r_ in rows if not r_["matched"]]
    rates = detection_rates(grid_rows, by=("budget", "expansion", "alpha", "freq"))
    mde = [{**a, "mde_alpha_learned": b["mde_alpha"], "mde_rms_learned": b["mde_rms"]}
           for a, b in zip(minimum_detectable(rates, by=("budget", "expansion", "freq")),
                           minimum_detectable(rates, flag="learned", by=("budget", "expansion", "freq")))]
    matched = {}
    for budget, expansion in cfg.fits():
        hits = [r_["ft_only"] for r_ in rows if r_["matched"] and r_["budget"] == budget
                and r_["expansion"] == expansion]
        matched[f"{budget}_{expansion}"] = stats.binomial_rate(sum(hits), len(hits)).as_dict()
    strong = [r_["ft_only"] for r_ in grid_rows if r_["budget"] == b0 and r_["expansion"] == cfg.expansions[0]
              and r_["alpha"] == cfg.strong_alpha]
    t0 = time.perf_counter()
    nulls, null_rows = [], train_rows[: -(-b0 // per_row)]  # the nulls need the first budget's rows only
    for name, adapter in [("trained", s0), *([("seed pair", None)] if len(seeds) > 1 else []),
                          ("random LoRA", "random")]:
        log(f"null fit: {name}")
        if adapter is None:
            pair_tr = torch.cat(list(iter_adapter_pairs(pm, null_rows, layer, (s0, f"s{seeds[1]}"),
                                                        cfg.capture_batch, device)))
            pair_ev = torch.cat(list(iter_adapter_pairs(pm, eval_rows, layer, (s0, f"s{seeds[1]}"),
                                                        cfg.capture_batch, device)))
        elif adapter == s0:
            pair_tr, pair_ev = x_tr, x_ev
        else:
            pair_tr, pair_ev = paired(null_rows, adapter), paired(eval_rows, adapter)
        fit = _fit(pair_tr[:b0], pair_ev, cfg, cfg.expansions[0], cfg.seed + layer, device, progress)
        nulls.append(_reading(fit, pair_tr[:b0], name))
    phase["null_fits"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    log("depth profiles: trained vs random LoRA (the propagation null)")
    profiles = {name: depth_profile(pm, eval_rows[:min(n_eval, PROFILE_ROWS)], adapter, cfg.capture_batch, device)
                for name, adapter in (("trained", s0), ("random LoRA", "random"))}
    phase["depth_profiles"] = time.perf_counter() - t0
    phase["total"] = time.perf_counter() - t_all
    pm.set_adapter(s0)
    return {"model": model, "corpus": corpus, "seeds": list(seeds[:2]), "layer": layer, "depth": layer / (L - 1),
            "n_layers": L, "n_pc": n_pc, "median_norm": m, "spectrum": spectrum, "alpha_matched": alpha_matched,
            "rms_matched": spectrum["rms_top"][0], "planted": rows, "rates": rates, "mde": mde, "fits": fits,
            "matched": matched, "strong": stats.binomial_rate(sum(strong), len(strong)).as_dict(),
            "nulls": nulls, "depth_profiles": profiles, "train_tokens": len(x_tr), "eval_tokens": len(x_ev), "phase_s": phase,
            "config": dataclasses.asdict(cfg)}


class CalibrationError(ValueError):
    """A calibration that cannot run as asked: the message names the fix."""


def detection_figure(study: dict[str, Any]):
    """Two panels for one study: the share of planted features *learned* as a latent (decoder cosine at least
    ``cos_min``, any class) and *found as fine-tune-only*, against their per-token RMS, one line per (budget,
    expansion); grey lines: the RMS of the real displacement's ten strongest directions (the strongest solid);
    black diamonds: the matched features with their 95% CIs (in the right panel: the ledger's test)."""
    import matplotlib.pyplot as plt
    import pandas as pd

    r = pd.DataFrame(study["planted"])
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.4), sharey=True)
    for ax, flag, title in zip(axes, ("learned", "ft_only"), ("learned as a latent (any class)",
                                                               "found as a fine-tune-only latent (r > 0.9)")):
        g = r[~r.matched].groupby(["budget", "expansion", "rms"])[flag].mean().reset_index()
        for (b, e), d in g.groupby(["budget", "expansion"]):
            ax.plot(d.rms, d[flag], marker="o", ms=3, label=f"{b // 1000}k tokens, x{e}")
        for j, v in enumerate(study["spectrum"]["rms_top"][:10]):
            ax.axvline(v, color="0.35", lw=1.2 if j == 0 else 0.4, ls="-" if j == 0 else ":",
                       label="real displacement, top directions" if j == 0 else None)
        m = r[r.matched].groupby(["budget", "expansion"])[flag].agg(["sum", "count"]).reset_index()
        for _, row in m.iterrows():
            from . import stats

            t = stats.binomial_rate(int(row["sum"]), int(row["count"]))
            ax.errorbar([study["rms_matched"]], [t.value], yerr=[[t.value - t.ci_low], [t.ci_high - t.value]],
                        fmt="D", ms=4, color="k", capsize=2)
        ax.set_xscale("log")
        ax.set(xlabel="planted feature RMS / median token norm", ylim=(-0.05, 1.05), title=title)
    axes[0].set_ylabel("share of planted features")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"{study['model']}, {study['corpus']}, layer {study['layer']}", fontsize=9)
    fig.tight_layout()
    return fig
