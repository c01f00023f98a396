"""Shared fixtures: a tiny randomly initialised llama (no downloads) and an isolated project root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    monkeypatch.delenv("ADAPTERSCOPE_ALLOW_HUB", raising=False)


@pytest.fixture
def tiny_llama():
    """A 3-layer llama with d=32 and a 97-token vocabulary, random weights (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    model.config.use_cache = False
    return model


def plant_switchable(model, index: int, layer) -> None:
    """Put ``layer`` (a module with an ``enabled`` flag, wrapping decoder layer ``index``) into ``model`` and give
    the model peft's ``disable_adapter()`` switch for it: off is the base model, on the "fine-tuned" one."""
    import contextlib

    model.model.layers[index] = layer

    @contextlib.contextmanager
    def disable_adapter():
        layer.enabled = False
        try:
            yield
        finally:
            layer.enabled = True

    model.disable_adapter = disable_adapter


def copy_project(root: Path) -> Path:
    """The checkout's tracked and untracked-but-not-ignored files, copied under ``root``; returns ``root``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (REPO / f).is_file():
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, root / f)
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An isolated copy of the project's tracked files as ADAPTERSCOPE_HOME (results/figures land there).

    Model and corpus caches stay shared (ADAPTERSCOPE_CACHE) so models are converted once per machine."""
    root = copy_project(tmp_path / "proj")
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(root))
    monkeypatch.setenv("ADAPTERSCOPE_CACHE", os.environ.get("ADAPTERSCOPE_CACHE", str(REPO / "data" / "cache")))
    return root
