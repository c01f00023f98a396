"""benchmarks/gpu_check.py (`make gpu-check`) on a machine without CUDA: says so, measures and writes nothing,
exits 0 (1 with --require)."""

import os
import subprocess
import sys

from adapterscope import paths

SCRIPT = paths.project_root() / "benchmarks" / "gpu_check.py"


def _run(tmp_path, *args):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # hides any GPU: the skip path on every machine
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu.json"), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_gpu_check_without_cuda_measures_nothing(tmp_path):
    p = _run(tmp_path)
    assert p.returncode == 0, p.stderr
    assert "no CUDA device on this machine; nothing was measured" in p.stdout
    assert not (tmp_path / "gpu.json").exists()
    p = _run(tmp_path, "--require")
    assert p.returncode == 1 and not (tmp_path / "gpu.json").exists()
