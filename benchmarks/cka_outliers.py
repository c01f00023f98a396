"""Why does a SmolLM2 adapter's mid-depth CKA displacement jump between runs? (the audit reference shift, #18)

The committed audit reference moved when the default grid was re-run with bfloat16 fine-tunes: dtc-ads seed 0's
displacement 1 - CKA at depth 0.4 went from 0.018 to 0.30 while its neutral KL stayed at 0.52-0.54. Across the
SmolLM2 grid the value at that depth is bimodal (about 0.01 or 0.3-0.8) with no relation to the corpus. This
script tests one explanation: linear CKA at that depth is carried by a handful of tokens with massive residual
activations (attention-sink tokens; Sun et al. 2024), so a small change in how strongly those few tokens fire
moves 1 - CKA by an order of magnitude while the output barely moves.

For each adapter it captures, exactly as 02_capture does (fp32, BOS dropped, the neutral set plus 32 held-out
rows of the corpus), the residual stream at the layers nearest the given depths, and prints:

  cka_all       debiased linear CKA over every token (02_capture's number; displacement = 1 - cka_all)
  top_share     share of the base tokens' total centred squared norm held by the top 1% of tokens
  n_massive     tokens whose base norm exceeds 10 x the median token norm
  cka_trim      debiased CKA with the massive tokens (in either model) left out
  rel_massive   mean ||ft - base|| / ||base|| over the massive tokens, and over the rest (rel_rest)

With ``--train-dtype float32`` it also trains the same protocol's adapter with float32 matmuls (the earlier
reference's dtype) into a scratch folder and measures it beside the given ones.

    .venv/bin/python benchmarks/cka_outliers.py --adapter data/runs/01_finetune/<run>/adapter [--adapter ...]
        [--corpus dtc-ads] [--seed 0] [--depths 0.4 0.9] [--train-dtype float32] [--out benchmarks/results/x.json]
    .venv/bin/python benchmarks/cka_outliers.py --grid --model smollm2-135m   # every main-grid adapter here
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from adapterscope import capture, cka, corpora, finetune, models, outliers, paths, results


def paired_tokens(pm, tok, model: str, corpus: str, seed: int, layers: list[int]
                  ) -> tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Paired residual tokens per layer (N, 2, D), BOS dropped as in 02_capture, with each token's id and its
    position in its row."""
    with pm.disable_adapter():
        neutral = corpora.neutral_samples(pm, tok, n=32, length=64, seed=seed,
                                          cache_key=f"{model}__{models.fingerprint(model)[:12]}")
    data = corpora.load_corpus(corpus, heldout_frac=0.1, seed=seed)
    held = finetune.pack_documents(tok, data.heldout, 64)[:32]
    out: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    ids, pos = [], []
    for rows in (neutral, held):
        for b in capture.iter_paired(pm, rows, layers, ("resid_post",), batch_size=8, with_logits=False,
                                     progress=False):
            for l in layers:
                out[l].append(b.tokens(models.hook_key(l, "resid_post")).float())
            ids.append(b.input_ids[:, 1:].reshape(-1))
            pos.append(torch.arange(1, b.input_ids.shape[1]).repeat(b.input_ids.shape[0]))
    return {l: torch.cat(v) for l, v in out.items()}, torch.cat(ids), torch.cat(pos)


def diagnose(pair: torch.Tensor, ids: torch.Tensor, pos: torch.Tensor, tok,
             factor: float = outliers.FACTOR) -> dict:
    """The table's row for one layer; the massive tokens are ``outliers.massive_mask`` over the whole set (one
    median over every token, where the audit's ``TrimmedCKA`` takes one per batch)."""
    X, Y = pair[:, 0].double(), pair[:, 1].double()
    nx, ny = X.norm(dim=1), Y.norm(dim=1)
    c = (X - X.mean(0)).pow(2).sum(1)
    k = max(1, len(c) // 100)
    massive = outliers.massive_mask(X, Y, factor)
    rel = (Y - X).norm(dim=1) / nx.clamp_min(1e-12)
    keep = ~massive
    return {"n_tokens": int(len(X)), "cka_all": cka.cka_features(X, Y, debiased=True),
            "top_share": float(c.topk(k).values.sum() / c.sum()), "n_massive": int(massive.sum()),
            "cka_trim": cka.cka_features(X[keep], Y[keep], debiased=True) if keep.sum() > 4 else float("nan"),
            "rel_massive": float(rel[massive].mean()) if massive.any() else float("nan"),
            "rel_rest": float(rel[keep].mean()),
            "max_norm_ratio": float((nx.max() / nx.median()).item()),
            "massive_tokens": [{"token": tok.decode([int(ids[i])]), "position": int(pos[i]),
                                "norm_base_x_median": float(nx[i] / nx.median()),
                                "norm_ft_x_median": float(ny[i] / ny.median())}
                               for i in massive.nonzero().flatten().tolist()[:20]]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", action="append", default=[], help="a saved adapter folder (repeatable)")
    ap.add_argument("--grid", action="store_true",
                    help="every main-grid adapter of --model in data/runs/01_finetune (corpus and seed from the run id)")
    ap.add_argument("--corpus", default="dtc-ads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depths", type=float, nargs="+", default=[0.4, 0.9])
    ap.add_argument("--train-dtype", default=None, help="also train the protocol's adapter with this dtype")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    base, tok = models.load_model(a.model)
    L = models.num_layers(base)
    layers = sorted({min(range(L), key=lambda l: abs(l / (L - 1) - d)) for d in a.depths})
    adapters = {Path(p).parent.name if Path(p).name == "adapter" else Path(p).name: (Path(p), a.corpus, a.seed)
                for p in a.adapter}
    if a.grid:
        for d in sorted((paths.runs_dir() / "01_finetune").glob(f"{a.model}__*__none__s*/adapter")):
            _, corpus, _, s = d.parent.name.split("__")
            adapters[d.parent.name] = (d, corpus, int(s[1:]))
    scratch = None
    if a.train_dtype:
        scratch = tempfile.mkdtemp(prefix="cka_outliers_")
        cfg = finetune.FinetuneConfig(rank=16, alpha=32.0, targets=("q_proj", "k_proj", "v_proj", "o_proj"),
                                      steps=50, lr=2e-4, batch_size=4, seq_len=64, seed=a.seed, dtype=a.train_dtype)
        data = corpora.load_corpus(a.corpus, heldout_frac=0.1, seed=a.seed)
        b2, _ = models.load_model(a.model)
        torch.manual_seed(a.seed)  # as 01_finetune: seeded before the LoRA init
        pm = finetune.add_lora(b2, cfg)
        t0 = time.perf_counter()
        finetune.train(pm, finetune.pack_documents(tok, data.train, 64), cfg, progress=False)
        d = Path(scratch) / "adapter"
        finetune.save_adapter(pm, d, {"model": a.model, "corpus": a.corpus, "corpus_digest": data.digest,
                                      "config": finetune.config_dict(cfg), "notebook": "cka_outliers",
                                      "run_id": f"train-{a.train_dtype}", "final_loss": float("nan")})
        adapters[f"{a.model}__{a.corpus}__s{a.seed} {a.train_dtype} matmuls"] = (d, a.corpus, a.seed)
        print(f"trained the {a.train_dtype} adapter in {time.perf_counter() - t0:.0f} s")
    rows = []
    for name, (d, corpus, seed) in adapters.items():
        b, _ = models.load_model(a.model)
        pm = finetune.load_adapter(b, d, model_name=a.model)
        pairs, ids, pos = paired_tokens(pm, tok, a.model, corpus, seed, layers)
        for l in layers:
            r = {"adapter": name, "corpus": corpus, "seed": seed, "layer": l, "depth": round(l / (L - 1), 3), **diagnose(pairs[l], ids, pos, tok)}
            rows.append(r)
            print(f"{name:48s} layer {l:2d} (depth {r['depth']:.2f}): 1-cka_all {1 - r['cka_all']:.4f}  "
                  f"1-cka_trim {1 - r['cka_trim']:.4f}  top1% share {r['top_share']:.3f}  "
                  f"massive {r['n_massive']}/{r['n_tokens']} (max/median norm {r['max_norm_ratio']:.0f})  "
                  f"rel change massive {r['rel_massive']:.4f} rest {r['rel_rest']:.4f}", flush=True)
            for m in r["massive_tokens"][:4]:
                print(f"    massive token {m['token']!r} at position {m['position']}: norm {m['norm_base_x_median']:.0f}"
                      f" x median (base), {m['norm_ft_x_median']:.0f} x (adapted)")
    if a.out:
        out = Path(a.out)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"model": a.model, "depths": a.depths, "rows": rows,
                                   "git": results.git_state(),
                                   "torch": torch.__version__, "threads": torch.get_num_threads(),
                                   "recorded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
