"""Benchmark adapterscope.cka (exact streaming linear CKA) against its floor and PyPI peers.

Prints, from ONE run:
  (a) our StreamingCKA on N x D paired float64 activations (default 100,000 x 576)
      vs the three float64 matrix products it needs (X^T X, Y^T Y, X^T Y), timed
      interleaved in the same process: ratio = ours / products (goal <= 1.3);
  (b) ours vs CKA packages from PyPI that take activation matrices, at n = 20,000:
      same value to 1e-5 for the same estimator, speedup = peer_time / ours (goal >= 10),
      peak memory. A peer whose predicted peak memory does not fit in the memory
      available now (or whose predicted time exceeds --max-peer-seconds) is not run:
      the script prints the memory / time it would need, extrapolated from a probe
      run at a small n.

Every measurement runs in a fresh subprocess so that its peak resident memory
(VmHWM; torch's allocations are invisible to tracemalloc) is its own.

Run it in the separate benchmark venv (see benchmarks/README.md):
    PYTHONPATH=lib .venv-bench-cka/bin/python benchmarks/bench_cka.py
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

SEED = 0

# peer name -> (import name, estimators it implements that match one of ours,
#               time exponent in n for extrapolation)
PEERS = {
    "pytorch-cka": ("cka", ("debiased",), 2),
    "ckatorch": ("ckatorch", ("biased", "debiased"), 2),
    "repsim": ("repsim", ("biased",), 3),
}
NOT_MEASURED = {
    "torch-cka": "API takes two nn.Modules and a DataLoader (hooks), not activation matrices; "
                 "it computes minibatch-averaged HSIC_1 (a different estimator) and K @ L products (O(n^3))",
    "cka-pytorch": "API takes two nn.Modules and a DataLoader (hooks), not activation matrices; "
                   "imports the `lightning` package at import time (not installed here)",
}


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


def _mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 << 30


def _gib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB"


def _data(n: int, d: int, dtype_name: str = "float64"):
    """Correlated activations: Y = 0.8 X W / sqrt(d) + 0.6 noise (seeded, same for every worker)."""
    import torch
    g = torch.Generator().manual_seed(SEED)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    W = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    Y = 0.8 * X @ W + 0.6 * torch.randn(n, d, generator=g, dtype=torch.float64)
    dt = getattr(torch, dtype_name)
    return X.to(dt), Y.to(dt)


# ----------------------------------------------------------------------------- worker side


def _ours(X, Y, estimator: str) -> float:
    from adapterscope.cka import StreamingCKA
    return StreamingCKA().update(X, Y).value(debiased=estimator == "debiased")


def _peer(name: str, X, Y, estimator: str) -> float:
    debiased = estimator == "debiased"
    if name == "pytorch-cka":
        import cka  # pytorch-cka's public API: cka.cka_from_features (HSIC_1, i.e. debiased)
        assert debiased
        return float(cka.cka_from_features(X, Y).reshape(-1)[0])
    if name == "ckatorch":
        import ckatorch  # public API: ckatorch.cka_base(x, y, kernel, unbiased, method)
        return float(ckatorch.cka_base(X, Y, kernel="linear", unbiased=debiased, method="fro_norm"))
    if name == "repsim":
        import repsim  # public API: repsim.cka(mats, kernel_type, estimator) -> M x M matrix
        assert not debiased  # 'gretton' = biased HSIC_0 in numerator and denominator
        return float(repsim.cka([X.numpy(), Y.numpy()], kernel_type="linear", estimator="gretton")[0, 1])
    raise ValueError(name)


def worker(task: dict) -> dict:
    import torch
    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    kind, n, d, reps = task["kind"], task["n"], task["d"], task["repeats"]
    X, Y = _data(n, d, task.get("dtype", "float64"))
    reset = _reset_peak()  # so that the peak below is the method's, not the data generation's
    rss0 = _mem_kib("VmRSS") * 1024
    out = {"kind": kind, "n": n, "d": d, "rss_data": rss0, "threads": torch.get_num_threads(),
           "peak_is_own": reset}
    if kind == "floor":
        # (a): three float64 products vs ours, `reps` rounds in ABBA order (drift cancels)
        from adapterscope.cka import StreamingCKA

        def products():
            t = time.perf_counter()
            X.T @ X
            Y.T @ Y
            X.T @ Y
            return time.perf_counter() - t

        def ours():
            t = time.perf_counter()
            acc = StreamingCKA().update(X, Y)
            v = (acc.value(), acc.value(debiased=True))
            return time.perf_counter() - t, v

        tb, to = [], []
        for k in range(reps):
            if k % 2 == 0:
                tb.append(products())
                dt, (vb, vd) = ours()
            else:
                dt, (vb, vd) = ours()
                tb.append(products())
            to.append(dt)
        out["peak_rss"] = _mem_kib("VmHWM") * 1024  # before the one-shot reference (it copies X, Y)
        from adapterscope.cka import cka_features
        t = time.perf_counter()
        ref = cka_features(X, Y)
        t_ref = time.perf_counter() - t
        out.update(products=tb, ours=to, biased=vb, debiased=vd, one_shot=ref, one_shot_s=t_ref)
    else:
        fn = (lambda: _ours(X, Y, task["estimator"])) if kind == "ours" else (
            lambda: _peer(kind, X, Y, task["estimator"]))
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            v = fn()
            times.append(time.perf_counter() - t)
        out.update(value=v, times=times)
    out.setdefault("peak_rss", _mem_kib("VmHWM") * 1024)
    return out


# ----------------------------------------------------------------------------- driver side


def run_worker(task: dict, timeout: float | None = None) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(task)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {p.returncode}: " + " | ".join(tail)}
    return json.loads(lines[-1])


def _fmt_s(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s:.3f} s" if s < 100 else f"{s:.0f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="tokens for part (a)")
    ap.add_argument("--d", type=int, default=576, help="width of X and Y")
    ap.add_argument("--peer-n", type=int, default=20_000, help="tokens for part (b)")
    ap.add_argument("--probe-n", type=int, default=2_000, help="small n used to extrapolate peers' memory/time")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds for part (a); ours in (b) runs 3")
    ap.add_argument("--peers", default=",".join(PEERS), help="comma-separated subset of " + ",".join(PEERS))
    ap.add_argument("--peer-dtypes", default="float64,float32",
                    help="input dtypes to give pytorch-cka (the others upcast to float64 themselves)")
    ap.add_argument("--max-peer-seconds", type=float, default=600.0, help="skip a peer predicted to take longer")
    ap.add_argument("--mem-fraction", type=float, default=0.7,
                    help="run a peer only if its predicted peak fits in this fraction of MemAvailable")
    ap.add_argument("--skip-a", action="store_true")
    ap.add_argument("--skip-b", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0

    import torch
    print(f"bench_cka: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"MemAvailable {_gib(_mem_available_bytes())}")
    ok = True

    # ---------------------------------------------------------------- (a)
    if not args.skip_a:
        print(f"\n(a) exact streaming CKA vs its three float64 products, n={args.n:,}, d={args.d}, "
              f"{args.repeats} interleaved rounds")
        r = run_worker({"kind": "floor", "n": args.n, "d": args.d, "repeats": args.repeats})
        if "error" in r:
            print("  FAILED:", r["error"])
            return 1
        tb, to = min(r["products"]), min(r["ours"])
        med = statistics.median(o / b for o, b in zip(r["ours"], r["products"]))
        ratio = to / tb
        print(f"  three products X'X, Y'Y, X'Y : {_fmt_s(tb)}  (rounds: {', '.join(f'{t:.3f}' for t in r['products'])})")
        print(f"  ours (update + biased + debiased value) : {_fmt_s(to)}  "
              f"(rounds: {', '.join(f'{t:.3f}' for t in r['ours'])})")
        print(f"  ratio = ours / products = {ratio:.3f} (best/best), median per round {med:.3f}  "
              f"[goal <= 1.3: {'PASS' if ratio <= 1.3 else 'FAIL'}]")
        diff = abs(r["biased"] - r["one_shot"])
        print(f"  CKA biased {r['biased']:.12f}, debiased {r['debiased']:.12f}; one-shot float64 "
              f"{r['one_shot']:.12f} (|diff| {diff:.1e})")
        print(f"  peak RSS {_gib(r['peak_rss'])} with the data X, Y ({_gib(r['rss_data'])} before timing): "
              f"ours and the products add {_gib(r['peak_rss'] - r['rss_data'])}")
        ok &= ratio <= 1.3 and diff < 1e-10

    # ---------------------------------------------------------------- (b)
    if not args.skip_b:
        n, d = args.peer_n, args.d
        print(f"\n(b) vs PyPI CKA packages that take activation matrices, n={n:,}, d={d}")
        ours = {}
        for est in ("biased", "debiased"):
            r = run_worker({"kind": "ours", "n": n, "d": d, "repeats": 3, "estimator": est})
            if "error" in r:
                print("  ours FAILED:", r["error"])
                return 1
            ours[est] = r
            print(f"  ours ({est:8s}) : {_fmt_s(min(r['times']))}, CKA {r['value']:.10f}, "
                  f"peak RSS {_gib(r['peak_rss'])} (+{_gib(r['peak_rss'] - r['rss_data'])} over the data)")
        data_bytes = 2 * n * d * 8
        best = None
        for name in [p for p in args.peers.split(",") if p]:
            if name not in PEERS:
                print(f"  {name}: unknown peer")
                continue
            mod, ests, expo = PEERS[name]
            try:
                __import__(mod)
            except Exception as exc:  # noqa: BLE001
                print(f"  {name}: not importable here ({type(exc).__name__}: {exc})")
                continue
            dtypes = args.peer_dtypes.split(",") if name == "pytorch-cka" else ["float64"]
            for est in ests:
                for dt in dtypes:
                    label = f"{name} [{est}{', ' + dt if name == 'pytorch-cka' else ''}]"
                    pn = min(args.probe_n, n)
                    probe = run_worker({"kind": name, "n": pn, "d": d, "repeats": 1, "estimator": est,
                                        "dtype": dt}, timeout=args.max_peer_seconds)
                    if "error" in probe:
                        print(f"  {label}: probe at n={pn} failed: {probe['error']}")
                        continue
                    scale = (n / pn)
                    extra = max(probe["peak_rss"] - probe["rss_data"], 0)
                    need_mem = probe["rss_data"] + extra * scale**2 + data_bytes * (scale - 1)
                    need_s = min(probe["times"]) * scale**expo
                    avail = _mem_available_bytes()
                    if need_mem > args.mem_fraction * avail or need_s > args.max_peer_seconds:
                        why = []
                        if need_mem > args.mem_fraction * avail:
                            why.append(f"would need ~{_gib(need_mem)} peak memory (available now {_gib(avail)})")
                        if need_s > args.max_peer_seconds:
                            why.append(f"would take ~{_fmt_s(need_s)} (O(n^{expo}) from "
                                       f"{_fmt_s(min(probe['times']))} at n={pn:,})")
                        ours_s = min(ours[est]["times"])
                        print(f"  {label}: NOT RUN at n={n:,}: {'; '.join(why)}; "
                              f"predicted speedup ~{need_s / ours_s:,.0f}x")
                        pdiff = abs(probe["value"] - _probe_ours(pn, d, est))
                        print(f"      value check at probe n={pn:,}: |peer - ours| = {pdiff:.1e} "
                              f"[{'PASS' if pdiff <= 1e-5 else 'FAIL'}]")
                        continue
                    r = run_worker({"kind": name, "n": n, "d": d, "repeats": 1, "estimator": est, "dtype": dt},
                                   timeout=max(4 * need_s, 120.0))
                    if "error" in r:
                        print(f"  {label}: FAILED at n={n:,}: {r['error']} "
                              f"(predicted peak ~{_gib(need_mem)})")
                        continue
                    t_peer, t_ours = min(r["times"]), min(ours[est]["times"])
                    diff = abs(r["value"] - ours[est]["value"])
                    sp = t_peer / t_ours
                    same = diff <= 1e-5
                    print(f"  {label}: {_fmt_s(t_peer)}, CKA {r['value']:.10f}, |peer - ours| = {diff:.1e} "
                          f"[{'PASS' if same else 'FAIL'} 1e-5], peak RSS {_gib(r['peak_rss'])} "
                          f"(+{_gib(r['peak_rss'] - r['rss_data'])}), speedup = peer_time / ours = {sp:.1f}x")
                    if dt == "float64":
                        ok &= same
                    # the goal is judged against the fastest peer that gets the same value
                    if same and (best is None or t_peer < best[1]):
                        best = (label, t_peer, sp)
        for name, why in NOT_MEASURED.items():
            print(f"  {name}: not measured: {why}")
        if best is not None:
            print(f"  fastest peer with the same value (1e-5) at n={n:,}: {best[0]} {_fmt_s(best[1])}; "
                  f"speedup = peer_time / ours = {best[2]:.1f}x [goal >= 10: {'PASS' if best[2] >= 10 else 'FAIL'}]")
            ok &= best[2] >= 10
    print("\nbench_cka:", "all goals met" if ok else "SOME GOALS NOT MET")
    return 0 if ok else 1


_PROBE_CACHE: dict = {}


def _probe_ours(n: int, d: int, est: str) -> float:
    key = (n, d, est)
    if key not in _PROBE_CACHE:
        X, Y = _data(n, d)
        _PROBE_CACHE[key] = _ours(X, Y, est)
    return _PROBE_CACHE[key]


if __name__ == "__main__":
    sys.exit(main())
