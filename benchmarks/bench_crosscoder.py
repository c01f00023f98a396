"""Benchmark adapterscope's crosscoder training throughput against two PyPI BatchTopK trainers.

Prints, from ONE run, for two cases at d=576, dictionary 4608, k=32, batch 2048:
  n=1  one model (an ordinary BatchTopK SAE);
  n=2  the paired case (a crosscoder over two d=576 models), against each peer trained on
       the concatenated pair (an SAE of width 1152);
for every contender: training throughput (tokens/s, median step time after the first
--skip steps), fraction of variance explained on the same held-out batches after the same
number of training tokens, and peak resident memory (VmHWM of its own fresh subprocess).

Contenders:
  ours-float32   adapterscope.crosscoder_train.CrosscoderTrainer.train_step
  ours-bfloat16  the same with bf16 encoder matmuls, only if bf16 matmuls are measured
                 faster than float32 on this machine (--bf16 auto; emulated bf16 on CPUs
                 without AVX-512 is ~100x slower)
  sae-lens       sae_lens.SAETrainer.step on a BatchTopKTrainingSAE (its training step)
  dictionary-learning  dictionary_learning BatchTopKTrainer.update (its training step)

Same for all: the synthetic activations (a planted sparse dictionary plus noise, float32,
mean norm ~ sqrt(d) so that no contender needs input normalisation), the number of steps
and tokens, Adam with the same peak lr, linear warm-up and linear decay to 0 over the
same steps, gradient clipping at 1, AuxK at each tool's own defaults, k annealing off.
FVE = 1 - SSE_m / SST_m per model m (SST about the held-out per-dimension mean), averaged
over models; every contender encodes the held-out batches with its BatchTopK training rule
(top k*B over each batch of B=2048), and the peers' concatenated reconstructions are split
back per model.  Goals per case: ours / faster peer >= 2.5 in tokens/s, and our FVE >= the
best peer FVE - --fve-tol.

Each measurement runs in a fresh subprocess (the peers in their own venvs, see
benchmarks/README.md); --repeats rounds run every contender once, in rotating order, so
that load from other processes hits all sides alike; throughput = median over rounds.

    PYTHONPATH=lib .venv-bench-dl/bin/python benchmarks/bench_crosscoder.py
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 0
D, F, K, B = 576, 4608, 32, 2048
N_ATOMS = 4096          # planted dictionary size (per model)
ACTIVE = 16             # planted atoms per token
PEERS = ("sae-lens", "dictionary-learning")


# ----------------------------------------------------------------------------- helpers (both sides)


def _mem_kib(key: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    if key == "VmHWM":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return 0


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def planted_atoms(M: int, seed: int = SEED):
    """(N_ATOMS, M*D) unit-norm-per-model atoms.  M=2: 80% shared atoms (the second model's
    copy rotated by ~0.3 rad), 10% base-only, 10% fine-tuned-only."""
    import torch
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N_ATOMS, M, D, generator=g)
    if M == 2:
        A[:, 1] = A[:, 0] + 0.3 * torch.randn(N_ATOMS, D, generator=g)
        n_sh = int(0.8 * N_ATOMS)
        n_ex = (N_ATOMS - n_sh) // 2
        A[n_sh:n_sh + n_ex, 1] = 0      # base-only
        A[n_sh + n_ex:, 0] = 0          # fine-tuned-only
    A /= A.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    # power-law atom frequencies (a few common, many rare features)
    p = 1.0 / (torch.arange(N_ATOMS, dtype=torch.float64) + 20.0) ** 0.7
    perm = torch.randperm(N_ATOMS, generator=g)
    return A.reshape(N_ATOMS, M * D), (p / p.sum())[perm]


def make_batch(atoms, probs, M: int, stream: int, i: int):
    """Batch i of a stream, (B, M, D) float32: ACTIVE atoms per token with log-normal
    magnitudes (mean square ~ 30) plus Gaussian noise (sigma 0.3); deterministic in (stream, i)."""
    import torch
    import torch.nn.functional as Fn
    g = torch.Generator().manual_seed(1_000_003 * (stream + 1) + i)
    idx = torch.multinomial(probs, B * ACTIVE, replacement=True, generator=g).view(B, ACTIVE)
    w = 5.0 * torch.exp(0.3 * torch.randn(B, ACTIVE, generator=g))
    x = Fn.embedding_bag(idx, atoms, per_sample_weights=w, mode="sum")
    x += 0.3 * torch.randn(B, M * D, generator=g)
    return x.view(B, M, D)


def fve_per_model(x_BMD, rec_BMD) -> list[float]:
    """1 - SSE_m / SST_m (float64), SST about the per-dimension mean of x."""
    x, r = x_BMD.double(), rec_BMD.double()
    sse = ((x - r) ** 2).sum((0, 2))
    sst = ((x - x.mean(0)) ** 2).sum((0, 2))
    return (1 - sse / sst).tolist()


# ----------------------------------------------------------------------------- worker side


def _import_dictionary_learning():
    """dictionary_learning/__init__ imports its ActivationBuffer, which imports `nnsight`
    (which pulls torchvision + diffusers).  The trainer does not use it: when nnsight is
    absent, register an empty stand-in so that the package imports."""
    try:
        import nnsight  # noqa: F401
    except ImportError:
        stub = types.ModuleType("nnsight")
        stub.LanguageModel = object
        sys.modules["nnsight"] = stub
    from dictionary_learning.trainers.batch_top_k import BatchTopKTrainer
    return BatchTopKTrainer


class _Ours:
    def __init__(self, M, steps, lr, warmup, decay, seed, dtype):
        from adapterscope.crosscoder_train import CrosscoderConfig, CrosscoderTrainer
        cfg = CrosscoderConfig(M, D, F, k=K, batch_size=B, total_steps=steps, lr=lr, warmup_steps=warmup,
                               decay_frac=decay / steps, k_anneal_frac=0.0, seed=seed, log_every=10**9)
        self.tr = CrosscoderTrainer(cfg, dtype=dtype)

    def step(self, i, x):
        self.tr.train_step(x)

    def reconstruct(self, x):
        cc = self.tr.cc
        return cc.decode(cc.encode(x, use_threshold=False))


class _SAELens:
    def __init__(self, M, steps, lr, warmup, decay, seed, dtype):
        import torch
        from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig, SAETrainer
        from sae_lens.config import SAETrainerConfig
        torch.manual_seed(seed)
        self.M = M
        cfg = BatchTopKTrainingSAEConfig(d_in=M * D, d_sae=F, k=K, dtype="float32", device="cpu")
        self.sae = BatchTopKTrainingSAE(cfg)
        tcfg = SAETrainerConfig(total_training_samples=steps * B, train_batch_size_samples=B, lr=lr, lr_end=lr,
                                lr_scheduler_name="constant", lr_warm_up_steps=warmup, lr_decay_steps=decay,
                                device="cpu", autocast=False, logger=LoggingConfig(log_to_wandb=False))
        self.trainer = SAETrainer(tcfg, self.sae, data_provider=iter(()))

    def step(self, i, x):
        self.trainer.step(x.reshape(B, -1))   # SAETrainer.fit's loop body, minus logging
        self.trainer.n_training_steps += 1

    def reconstruct(self, x):
        return self.sae(x.reshape(x.shape[0], -1)).view_as(x)


class _DictionaryLearning:
    def __init__(self, M, steps, lr, warmup, decay, seed, dtype):
        BatchTopKTrainer = _import_dictionary_learning()
        self.tr = BatchTopKTrainer(steps=steps, activation_dim=M * D, dict_size=F, k=K, layer=0,
                                   lm_name="synthetic", lr=lr, warmup_steps=warmup, decay_start=steps - decay,
                                   threshold_start_step=steps, seed=seed, device="cpu")

    def step(self, i, x):
        self.tr.update(i, x.reshape(B, -1))

    def reconstruct(self, x):
        ae = self.tr.ae
        return ae.decode(ae.encode(x.reshape(x.shape[0], -1), use_threshold=False)).view_as(x)


CONTENDERS = {"ours": _Ours, "sae-lens": _SAELens, "dictionary-learning": _DictionaryLearning}


def bf16_probe(reps: int = 3) -> dict:
    """Best-of time of the encoder matmul (B x D) @ (D x F) in float32 and in bfloat16."""
    import torch
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(B, D, generator=g), torch.randn(D, F, generator=g)
    out = {}
    for dt in (torch.float32, torch.bfloat16):
        a2, w2 = a.to(dt), w.to(dt)
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            a2 @ w2
            ts.append(time.perf_counter() - t)
        out[str(dt).replace("torch.", "")] = min(ts)
    return out


def worker(task: dict) -> dict:
    import torch
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    if task["kind"] == "bf16_probe":
        return bf16_probe()
    M, steps, skip = task["M"], task["steps"], task["skip"]
    atoms, probs = planted_atoms(M)
    held = [make_batch(atoms, probs, M, stream=1, i=j) for j in range(task["eval_batches"])]
    reset = _reset_peak()
    rss0 = _mem_kib("VmRSS") * 1024
    cls = CONTENDERS[task["kind"]]
    model = cls(M, steps, task["lr"], task["warmup"], task["decay"], SEED, task.get("dtype", "float32"))
    times = []
    for i in range(steps):
        x = make_batch(atoms, probs, M, stream=0, i=i)   # data generation is not timed
        t = time.perf_counter()
        model.step(i, x)
        times.append(time.perf_counter() - t)
    peak = _mem_kib("VmHWM") * 1024
    with torch.no_grad():
        per = [fve_per_model(x, model.reconstruct(x).float()) for x in held]
    fve_m = [statistics.fmean(p[m] for p in per) for m in range(M)]   # equal-size batches
    timed = times[skip:]
    return {"kind": task["kind"], "dtype": task.get("dtype", "float32"), "M": M, "threads": torch.get_num_threads(),
            "times": times, "median_step_s": statistics.median(timed), "mean_step_s": statistics.fmean(timed),
            "fve_per_model": fve_m, "fve": statistics.fmean(fve_m), "rss_base": rss0, "peak_rss": peak,
            "peak_is_own": reset}


# ----------------------------------------------------------------------------- driver side


def run_worker(python: str, task: dict, timeout: float | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "lib")] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("WANDB_MODE", "disabled")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cmd = [python, os.path.abspath(__file__), "--worker", json.dumps(task)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def _python_ok(python: str, module: str) -> str | None:
    """None if `python` can import `module`, else the reason."""
    if not Path(python).exists():
        return f"{python} not found"
    code = (f"import sys, types\nm = types.ModuleType('nnsight'); m.LanguageModel = object\n"
            f"try:\n    import nnsight\nexcept ImportError:\n    sys.modules['nnsight'] = m\nimport {module}")
    p = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip().splitlines() or ["?"])[-1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="1,2", help="comma-separated n_models cases (1, 2)")
    ap.add_argument("--steps", type=int, default=64, help="training steps per run (tokens = steps * 2048)")
    ap.add_argument("--skip", type=int, default=4, help="first steps left out of the throughput (warm-up, init)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds (fresh subprocess each)")
    ap.add_argument("--lr", type=float, default=4e-4, help="peak Adam lr, the same for every contender")
    ap.add_argument("--warmup", type=int, default=8, help="linear warm-up steps (all contenders)")
    ap.add_argument("--decay", type=int, default=12, help="linear decay to 0 over the last steps (all)")
    ap.add_argument("--eval-batches", type=int, default=4, help="held-out batches of 2048 for FVE")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per worker (0 = torch default)")
    ap.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                    help="also run ours with bf16 matmuls: auto = only if bf16 matmuls are faster here")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--ours-python", default=sys.executable, help="interpreter for ours (PYTHONPATH=lib is set)")
    ap.add_argument("--sae-python", default=str(REPO / ".venv-bench-sae/bin/python"), help="interpreter with sae-lens")
    ap.add_argument("--dl-python", default=str(REPO / ".venv-bench-dl/bin/python"),
                    help="interpreter with dictionary-learning")
    ap.add_argument("--goal", type=float, default=2.5, help="required ours / faster-peer throughput ratio")
    ap.add_argument("--fve-tol", type=float, default=0.002, help="our FVE may trail the best peer's by this much")
    ap.add_argument("--json", help="also write all raw results to this file")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch
    print(f"bench_crosscoder: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"d={D}, dictionary {F}, k={K}, batch {B}, {args.steps} steps = {args.steps * B:,} tokens per run, "
          f"lr {args.lr:g} (warm-up {args.warmup}, decay {args.decay} steps), {args.repeats} interleaved rounds")
    pythons = {"ours": args.ours_python, "sae-lens": args.sae_python, "dictionary-learning": args.dl_python}
    modules = {"ours": "adapterscope.crosscoder_train", "sae-lens": "sae_lens",
               "dictionary-learning": "dictionary_learning.trainers.batch_top_k"}
    contenders = [("ours", "float32")]
    probe = run_worker(args.ours_python, {"kind": "bf16_probe", "threads": args.threads})
    if "error" in probe:
        print("  bf16 probe FAILED:", probe["error"])
        probe = {"float32": 1.0, "bfloat16": math.inf}
    fast = probe["bfloat16"] < probe["float32"]
    print(f"  encoder matmul {B}x{D}x{F}: float32 {probe['float32'] * 1e3:.1f} ms, bfloat16 "
          f"{probe['bfloat16'] * 1e3:.1f} ms -> bf16 {'faster' if fast else 'slower'} here")
    if args.bf16 == "yes" or (args.bf16 == "auto" and fast):
        contenders.append(("ours", "bfloat16"))
    else:
        print("  ours-bfloat16 not run (bf16 matmuls are slower than float32 on this machine; --bf16 yes forces it)")
    for name in [p for p in args.peers.split(",") if p]:
        why = _python_ok(pythons[name], modules[name]) if name in pythons else "unknown peer"
        if why:
            print(f"  {name}: not available ({why}); see benchmarks/README.md")
        else:
            contenders.append((name, "float32"))
    for name in ("ours",):
        why = _python_ok(pythons[name], modules[name])
        if why:
            print(f"  ours not importable with {pythons[name]}: {why}")
            return 1

    ok = True
    results: dict = {}
    for M in [int(c) for c in args.cases.split(",") if c]:
        label_case = "n=1 (one model, d=576)" if M == 1 else \
            f"n={M} (paired, d=576 each; peers on the concatenated pair, d={M * D})"
        print(f"\n{label_case}")
        runs: dict = {c: [] for c in contenders}
        for r in range(args.repeats):
            order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
            if r % 2 == 1:
                order = order[::-1]
            for c in order:
                name, dt = c
                task = {"kind": name, "dtype": dt, "M": M, "steps": args.steps, "skip": args.skip, "lr": args.lr,
                        "warmup": args.warmup, "decay": args.decay, "eval_batches": args.eval_batches,
                        "threads": args.threads}
                res = run_worker(pythons[name], task)
                if "error" in res:
                    print(f"  {name} [{dt}] round {r + 1} FAILED: {res['error']}")
                runs[c].append(res)
        rows = {}
        for c, rs in runs.items():
            good = [x for x in rs if "error" not in x]
            if not good:
                continue
            step_s = statistics.median(x["median_step_s"] for x in good)
            rows[c] = {"tok_s": B / step_s, "step_ms": step_s * 1e3,
                       "rounds": [B / x["median_step_s"] for x in good],
                       "fve": good[0]["fve"], "fve_per_model": good[0]["fve_per_model"],
                       "peak_rss": max(x["peak_rss"] for x in good),
                       "peak_extra": max(x["peak_rss"] - x["rss_base"] for x in good)}
        results[f"n={M}"] = {f"{n}[{d}]": v for (n, d), v in rows.items()}
        peers = [(c, v) for c, v in rows.items() if c[0] != "ours"]
        fastest = max(peers, key=lambda cv: cv[1]["tok_s"]) if peers else None
        best_fve = max(v["fve"] for _, v in peers) if peers else None
        print(f"  {'contender':30s} {'tokens/s':>9s} {'step ms':>8s}  {'vs faster peer':>14s}  "
              f"{'FVE (per model)':>24s}  {'peak RSS (+training)':>22s}  rounds tok/s")
        for c, v in sorted(rows.items(), key=lambda cv: -cv[1]["tok_s"]):
            name, dt = c
            lbl = f"{name} [{dt}]" + (f" (concat d={M * D})" if name != "ours" and M > 1 else "")
            ratio = f"{v['tok_s'] / fastest[1]['tok_s']:.2f}x" if fastest else "-"
            fpm = "/".join(f"{f:.4f}" for f in v["fve_per_model"])
            fve_s = f"{v['fve']:.4f}" + (f" ({fpm})" if M > 1 else "")
            print(f"  {lbl:30s} {v['tok_s']:9.0f} {v['step_ms']:8.1f}  {ratio:>14s}  {fve_s:>24s}  "
                  f"{_gib(v['peak_rss']):>9s} (+{_gib(v['peak_extra'])})  "
                  f"{', '.join(f'{t:.0f}' for t in v['rounds'])}")
        ours = rows.get(("ours", "float32"))
        best_ours = max((v for c, v in rows.items() if c[0] == "ours"), key=lambda v: v["tok_s"], default=None)
        if best_ours is None or fastest is None:
            print("  goal not judged: ours or every peer failed / missing")
            ok = False
            continue
        ratio = best_ours["tok_s"] / fastest[1]["tok_s"]
        fve_ok = best_ours["fve"] >= best_fve - args.fve_tol
        print(f"  throughput: ours {best_ours['tok_s']:.0f} tokens/s vs faster peer {fastest[0][0]} "
              f"{fastest[1]['tok_s']:.0f} -> {ratio:.2f}x  [goal >= {args.goal}: {'PASS' if ratio >= args.goal else 'FAIL'}]")
        print(f"  FVE after {args.steps * B:,} tokens: ours {best_ours['fve']:.4f} vs best peer {best_fve:.4f}  "
              f"[goal >= best peer - {args.fve_tol}: {'PASS' if fve_ok else 'FAIL'}]")
        ok &= ratio >= args.goal and fve_ok and ours is not None
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("bench_crosscoder:", "all goals met" if ok else "SOME GOALS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
