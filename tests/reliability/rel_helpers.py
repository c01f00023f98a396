"""Helpers of the reliability tier (imported by its test modules): run a project CLI in an isolated copy of the
project and check that a fault ends in one clear error, a non-zero exit and no half-written artefact."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Where a run writes (what a failed command must leave as it found it).
WRITTEN = ("results", "figures", "paper/generated", "data/runs", "data/executed")


def snapshot(root: Path) -> dict[str, int]:
    """Every file under the written folders (hidden temporaries included), with its size."""
    out = {}
    for top in WRITTEN:
        d = root / top
        for f in d.rglob("*") if d.is_dir() else []:
            if f.is_file():
                out[str(f.relative_to(root))] = f.stat().st_size
    return out


def cli(root: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 300):
    """``python -m <args>`` inside the project copy ``root`` (its lib first on the path)."""
    full = {**os.environ, "ADAPTERSCOPE_HOME": str(root), "PYTHONPATH": str(root / "lib"), **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], cwd=root, env=full, capture_output=True, text=True,
                          timeout=timeout)


def assert_refused(proc, message: str, root: Path, before: dict[str, int], code: int = 2) -> None:
    """Exit ``code``, ``message`` in stderr as the project's one-line error (no traceback), nothing written."""
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err[-2000:])
    assert message in err, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert err.count("error: ") == 1, err[-2000:]
    assert snapshot(root) == before


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A folder that resolves as a local model: a 3-layer llama config.json (no weights are read by the checks
    that use it)."""
    from transformers import LlamaConfig

    d = tmp_path / "tiny-model"
    LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2).save_pretrained(d)
    return d
