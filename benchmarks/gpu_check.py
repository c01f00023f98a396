"""make gpu-check: the CUDA paths of the hot loops, measured in one run on one GPU (a few minutes).

1. the CUDA-marked tests (``pytest -m gpu``: StreamingCKA, the crosscoder step on CUDA vs CPU, its bf16 path,
   paired capture, a 10-step LoRA);
2. crosscoder training throughput (``crosscoder_train.benchmark_throughput``, the paired case M=2 at d=576,
   dictionary 4608, k=32, batch 2048) on CUDA in float32 and bfloat16 against the same on this machine's CPU,
   printed as ratios;
3. StreamingCKA over 2^17 tokens x d=576 on CUDA (float64 and float32 accumulation), as a multiple of its GEMM
   floor (the three Gram products X^T X, Y^T Y, Y^T X on the same device and dtype, timed alone);
4. a 10-step LoRA fine-tune of the embedded SmolLM2-135M on CUDA (tokens/s), when its cache is present.

Without a CUDA device it says so, measures nothing and exits 0 (``--require`` makes that exit 1): the CPU
figures live in the other benchmarks. With one, it prints every ratio and writes them with the device's name to
``--out`` (default ``benchmarks/results/gpu_check.json``), to be committed.

    PYTHONPATH=lib .venv/bin/python benchmarks/gpu_check.py [--require] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))


def _cuda_time(fn, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` on CUDA (synchronised), after one warm-up call."""
    import torch

    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def gpu_tests() -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "lib")})
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-300:]
    return {"exit": proc.returncode, "summary": tail, "wall_s": round(time.perf_counter() - t, 1)}


def crosscoder_ratios(steps: int) -> dict:
    from adapterscope.crosscoder_train import benchmark_throughput

    cpu = benchmark_throughput(n_models=2, device="cpu", steps=max(2, steps // 8))
    out = {"cpu_float32_tokens_per_s": cpu["tokens_per_s"], "cpu_threads": cpu["threads"]}
    for dt in ("float32", "bfloat16"):
        g = benchmark_throughput(n_models=2, device="cuda", dtype=dt, steps=steps)
        out[f"cuda_{dt}_tokens_per_s"] = g["tokens_per_s"]
        out[f"cuda_{dt}_over_cpu"] = g["tokens_per_s"] / cpu["tokens_per_s"]
    return out


def cka_ratios(n: int = 1 << 17, d: int = 576) -> dict:
    import torch

    from adapterscope.cka import StreamingCKA

    g = torch.Generator(device="cuda").manual_seed(0)
    X = torch.randn(n, d, device="cuda", generator=g)
    Y = X @ torch.randn(d, d, device="cuda", generator=g) + torch.randn(n, d, device="cuda", generator=g)
    out = {"tokens": n, "d": d}
    for dt in (torch.float64, torch.float32):
        name = str(dt).replace("torch.", "")
        Xd, Yd = X.to(dt), Y.to(dt)
        floor = _cuda_time(lambda: (Xd.T @ Xd, Yd.T @ Yd, Yd.T @ Xd))
        full = _cuda_time(lambda: StreamingCKA(device="cuda", dtype=dt).update(X, Y).value())
        out[f"{name}_s"] = full
        out[f"{name}_gemm_floor_s"] = floor
        out[f"{name}_over_floor"] = full / floor
    return out


def lora_throughput(steps: int = 10) -> dict:
    import torch

    from adapterscope import finetune, models, paths

    if not (paths.cache_dir("models") / "smollm2-135m" / "model.safetensors").is_file():
        return {"skipped": "no SmolLM2 cache (make models)"}
    model, _ = models.load_model("smollm2-135m", device="cuda")
    cfg = finetune.FinetuneConfig(steps=steps, batch_size=8, seq_len=256, dtype="bfloat16")
    pm = finetune.add_lora(model, cfg)
    rows = torch.randint(0, 49152, (64, 256), generator=torch.Generator().manual_seed(0))
    torch.cuda.synchronize()
    t = time.perf_counter()
    res = finetune.train(pm, rows, cfg, device="cuda", progress=False)
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    return {"steps": steps, "tokens_per_s": res.tokens_seen / s, "final_loss": res.losses[-1]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--require", action="store_true", help="exit 1 when there is no CUDA device")
    ap.add_argument("--steps", type=int, default=40, help="crosscoder steps timed on CUDA")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_check.json"))
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing was measured (run it on a GPU box: make gpu-check)")
        return 1 if a.require else 0
    t0 = time.perf_counter()
    rec = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
           "host": platform.node(), "cpu_count": os.cpu_count(), "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name, fn in (("tests", gpu_tests), ("crosscoder", lambda: crosscoder_ratios(a.steps)),
                     ("cka", cka_ratios), ("lora", lora_throughput)):
        print(f"[gpu-check] {name} ...", flush=True)
        rec[name] = fn()
        print(json.dumps(rec[name], indent=1), flush=True)
    rec["wall_s"] = round(time.perf_counter() - t0, 1)
    c, k = rec["crosscoder"], rec["cka"]
    print(f"crosscoder M=2 tokens/s: CUDA fp32 {c['cuda_float32_over_cpu']:.1f}x, bf16 {c['cuda_bfloat16_over_cpu']:.1f}x "
          f"the CPU ({c['cpu_threads']} threads); StreamingCKA {k['float64_over_floor']:.2f}x its float64 GEMM floor, "
          f"{k['float32_over_floor']:.2f}x in float32; GPU tests: {rec['tests']['summary']}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(rec, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"written {out}")
    return 0 if rec["tests"]["exit"] == 0 else 1  # 5 (no test collected) on a CUDA machine is a failure too


if __name__ == "__main__":
    sys.exit(main())
