"""Paired-capture throughput vs a plain forward, and the bf16-vs-fp32 LoRA step speed, measured in one run.

    .venv/bin/python benchmarks/bench_capture.py              # ~2 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_capture.py --device cuda --batch 32 --seq 512

(a) Paired capture: ``capture.iter_paired`` runs the batch twice through ONE backbone (adapter off, adapter on)
    under nnsight, saving the residual stream at every layer and both sets of logits. Throughput counts each
    token once, so two passes can reach at most 0.5x a plain single forward of the same batch (no nnsight, no
    saving). Goal: >= 0.45x. Timings are interleaved (plain, paired, plain, paired, ...) and the ratio is the
    median over repeats, so machine noise hits both sides alike.
(b) The fine-tuning step (forward + backward + AdamW on the LoRA weights) with bf16 autocast vs float32.
Exit code 0 only when (a) meets its goal.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from adapterscope import capture, finetune, models


def _timeit(fn, sync):
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtype", default="float32", help="capture precision (autocast)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--step-batch", type=int, default=4)
    ap.add_argument("--step-seq", type=int, default=64)
    ap.add_argument("--skip-steps", action="store_true", help="skip (b)")
    a = ap.parse_args(argv)
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {a.device}, "
          f"load average {os.getloadavg()[0]:.2f}")

    base, tok = models.load_model(a.model, device=a.device)
    cfg = finetune.FinetuneConfig()
    pm = finetune.add_lora(base, cfg)
    with torch.no_grad():  # a non-zero adapter, as after training
        for n, p in pm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 1e-3)
    pm.eval()
    L = models.num_layers(pm)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, tok.vocab_size if tok.vocab_size else 30000, (a.batch, a.seq), generator=g).to(a.device)
    n_tok = ids.numel()

    def plain():
        with torch.no_grad(), finetune.autocast(a.device, a.dtype):
            pm(input_ids=ids, use_cache=False).logits.sum()

    def paired():
        for b in capture.iter_paired(pm, ids, layers=list(range(L)), sites=["resid_post"], batch_size=a.batch,
                                     device=a.device, dtype=a.dtype, progress=False):
            b.logits_ft.sum()

    plain(); paired()  # warm-up
    tp, tq = [], []
    for _ in range(a.repeats):
        tp.append(_timeit(plain, sync))
        tq.append(_timeit(paired, sync))
    ratios = [p / q for p, q in zip(tp, tq)]
    ratio = statistics.median(ratios)
    print(f"\n(a) paired capture, {a.model}, batch {a.batch} x {a.seq} tokens, {L} layers resid_post + logits, "
          f"{a.dtype}")
    print(f"    plain forward   {n_tok / statistics.median(tp):9.0f} tok/s  (median of {a.repeats})")
    print(f"    paired capture  {n_tok / statistics.median(tq):9.0f} tok/s  (both passes, each token once)")
    print(f"    ratio {ratio:.3f}x  (per repeat: {', '.join(f'{r:.3f}' for r in ratios)}; "
          f"limit for two passes 0.5; goal >= 0.45) -> {'PASS' if ratio >= 0.45 else 'FAIL'}")

    if not a.skip_steps:
        rows = torch.randint(100, 30000, (a.step_batch * 4, a.step_seq), generator=g)
        print(f"\n(b) LoRA step (r16, q/k/v/o), batch {a.step_batch} x {a.step_seq}:")
        res = {}
        for dt in ("float32", "bfloat16"):
            m2, _ = models.load_model(a.model, device=a.device)
            c = finetune.FinetuneConfig(steps=3, batch_size=a.step_batch, seq_len=a.step_seq, dtype=dt)
            p2 = finetune.add_lora(m2, c)
            tr = finetune.train(p2, rows, c, device=a.device, progress=False)
            res.setdefault(dt, []).extend(tr.step_s[1:])  # first step is warm-up
            del m2, p2
        f32, b16 = statistics.median(res["float32"]), statistics.median(res["bfloat16"])
        print(f"    float32  {f32:.2f} s/step   bfloat16 autocast  {b16:.2f} s/step   speed-up {f32 / b16:.2f}x")
        print(f"    dtype='auto' picks {models.compute_dtype('auto', a.device)} here "
              f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")
    return 0 if ratio >= 0.45 else 1


if __name__ == "__main__":
    sys.exit(main())
