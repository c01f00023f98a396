"""`adapterscope audit` end to end on SmolLM2-135M: an adapter trained here with plain peft + transformers (not
by this project) and one trained by the project's own fine-tune code both give audit.json and a self-contained
audit.html with every figure; a mismatched pair fails with one clear error and exit 2, leaving no report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TEXT = ["The harbour wall held against the winter storms, and the fishermen mended their nets on the quay.",
        "A good lantern is cleaned each evening, its wick trimmed and its glass wiped free of soot.",
        "She wrote the accounts in a green ledger and checked every column twice before closing the shop."] * 8


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "adapterscope.cli", *args], capture_output=True, text=True,
                          timeout=1800, env={**os.environ, **(env or {})})


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs).get("src", ""))


@pytest.fixture(scope="module")
def base_dir():
    from adapterscope import models

    return models.convert_embedded("smollm2-135m")


def _plain_peft_adapter(base_dir: Path, out: Path) -> Path:
    """Three AdamW steps of a rank-4 q/v LoRA with nothing but transformers and peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=5e-3)
    batch = tok(TEXT[:4], return_tensors="pt", padding=True)
    for _ in range(3):
        loss = pm(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    pm.save_pretrained(out)
    assert (out / "adapter_model.safetensors").is_file()
    return out


def _check_report(out: Path, proc):
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rep = json.loads((out / "audit.json").read_text())
    assert set(rep["measure"]["output"]) >= {"neutral"} and rep["measure"]["output"]["neutral"]["kl"] > 0
    assert len(rep["measure"]["crosscoder"]) == 2 and len(rep["measure"]["profile"]) == 30
    assert {"kl_neutral", "top1_neutral", "slope", "ratio_ft@0.4", "ratio_ft@0.9"} <= set(rep["placement"])
    assert rep["provenance"]["git"] and rep["provenance"]["params"]["tokens"] in (2048, 2560)
    assert rep["measure"]["output"]["neutral"]["n_rows"] == 32  # the grid's neutral set
    page = _Page()
    page.feed((out / "audit.html").read_text())
    assert len(page.imgs) == 2 and all(s.startswith("data:image/png;base64,") for s in page.imgs)
    assert "output" in proc.stdout and "internal" in proc.stdout  # the terminal summary table
    ex = rep["measure"]["explain"]  # what changed: hotspots, token shifts, the difference lens
    assert len(ex["hotspots"]) == 20 and ex["hotspots"][0]["kl"] >= ex["hotspots"][-1]["kl"] > 0
    assert all(h["context"] and "next" in h and len(h["ft_top"]) == 5 for h in ex["hotspots"])
    assert len(ex["promoted"]) == len(ex["suppressed"]) == 10 and ex["promoted"][0]["value"] > 0
    assert [x["layer"] for x in ex["lens"]] == [12, 26, 29] and all(len(x["promoted"]) == 10 for x in ex["lens"])
    assert "id='what-changed'" in (out / "audit.html").read_text() and "what changed:" in proc.stdout
    return rep


def test_audit_of_an_external_plain_peft_adapter_with_user_text(tmp_path, base_dir):
    adapter = _plain_peft_adapter(base_dir, tmp_path / "external")
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(f"Entry {i}: {t}" for i, t in enumerate(TEXT * 3)))  # distinct documents
    out = tmp_path / "report"
    proc = _cli("audit", "--base", "smollm2-135m", "--adapter", str(adapter), "--text", f"file:{text}",
                "--tokens", "2560", "--epochs", "2", "--out", str(out), "--no-progress")
    rep = _check_report(out, proc)
    assert "text" in rep["measure"]["output"]


def test_audit_of_a_project_adapter(tmp_path, base_dir):
    from adapterscope import audit_inputs, corpora, finetune, models

    model, tok = models.load_model("smollm2-135m")
    cfg = finetune.FinetuneConfig(steps=2, seq_len=64, batch_size=4, dtype="float32")
    pm = finetune.add_lora(model, cfg)
    rows = finetune.pack_documents(tok, corpora.load_corpus("meditations").train[:60], 64)
    finetune.train(pm, rows, cfg, progress=False)
    adapter = finetune.save_adapter(pm, tmp_path / "grid_adapter", {"model": "smollm2-135m"})
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)  # an earlier report of this command: replaced whole
    (out / "figures" / "old.png").write_bytes(b"old")
    (out / "audit.json").write_text("{}")
    audit_inputs.write_marker(out, {"base": "earlier"})
    _check_report(out, _cli("audit", "--base", "smollm2-135m", "--adapter", str(adapter), "--tokens", "2048",
                            "--epochs", "2", "--out", str(out), "--no-progress"))
    assert not (out / "figures" / "old.png").exists()
    assert json.loads((out / audit_inputs.MARKER).read_text())["adapter"] == str(adapter)


def test_a_mismatched_pair_fails_clearly_and_writes_nothing(tmp_path, tiny_llama):
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    pm.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "report"
    proc = _cli("audit", "--base", "smollm2-135m", "--adapter", str(tmp_path / "tiny"), "--out", str(out))
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "[2, 32], which does not fit the base model's" in err[0] and "[576, 576]" in err[0]
    assert not out.exists() and "[1/4] loading" not in proc.stdout  # refused from the headers, no model loaded
