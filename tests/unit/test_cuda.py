"""The CUDA paths of the hot loops against their CPU results (`make gpu-check` runs them; skipped without CUDA):
a crosscoder training step (float32 and the bf16 path), paired capture and a 10-step LoRA. StreamingCKA's CUDA
test is in test_cka.py."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from adapterscope import capture, finetune
from adapterscope.crosscoder_train import CrosscoderConfig, CrosscoderTrainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _data(B=512, M=2, D=64, F=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(F, M * D, generator=g)
    codes = (torch.rand(3, B, F, generator=g) < 8 / F).float()
    return [(c @ atoms).view(B, M, D) + 0.05 * torch.randn(B, M, D, generator=g) for c in codes]


def _trainer(device, dtype=torch.float32):
    cfg = CrosscoderConfig(2, 64, 256, k=16, batch_size=512, total_steps=100, k_anneal_frac=0.0, seed=3)
    return CrosscoderTrainer(cfg, device=device, dtype=dtype)


def test_crosscoder_step_on_cuda_matches_cpu():
    data = _data()
    runs = {}
    for dev in ("cpu", "cuda"):
        tr = _trainer(dev)
        tr.init_from_data(data[0])
        stats = [tr.train_step(x) for x in data]
        runs[dev] = (stats, {k: v.detach().cpu() for k, v in tr.cc.state_dict().items()})
    (s_cpu, w_cpu), (s_gpu, w_gpu) = runs["cpu"], runs["cuda"]
    for a, b in zip(s_cpu, s_gpu):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
    for k in w_cpu:
        if w_cpu[k].is_floating_point():
            assert torch.allclose(w_gpu[k], w_cpu[k], rtol=1e-3, atol=1e-4), k


def test_crosscoder_bf16_path_on_cuda_trains_close_to_float32():
    data = _data(seed=1)
    losses = {}
    for dt in (torch.float32, torch.bfloat16):
        tr = _trainer("cuda", dt)
        tr.init_from_data(data[0])
        losses[dt] = [tr.train_step(x)["loss"] for x in data * 4]
    assert all(math.isfinite(x) for x in losses[torch.bfloat16])
    assert losses[torch.bfloat16][9] < losses[torch.bfloat16][0]  # steps 0 and 9 see the same batch
    assert losses[torch.bfloat16][-1] == pytest.approx(losses[torch.float32][-1], rel=0.05)


def test_paired_capture_on_cuda_matches_cpu(tiny_llama):
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=2, batch_size=4, seq_len=16, lr=1e-2, dtype="float32")
    pm = finetune.add_lora(tiny_llama, cfg)
    rows = torch.randint(97, (8, 16), generator=torch.Generator().manual_seed(0))
    finetune.train(pm, rows, cfg, progress=False)
    rows = rows[:4]
    cpu = list(capture.iter_paired(pm, rows, layers=[0, 2], batch_size=2, progress=False))
    gpu_model = copy.deepcopy(pm).to("cuda")
    gpu = list(capture.iter_paired(gpu_model, rows, layers=[0, 2], batch_size=2, device="cuda", progress=False))
    for a, b in zip(cpu, gpu):
        for k in a.base:
            assert torch.allclose(b.base[k].cpu(), a.base[k], atol=1e-4), k
            assert torch.allclose(b.ft[k].cpu(), a.ft[k], atol=1e-4), k
        assert torch.allclose(b.logits_ft.cpu(), a.logits_ft, atol=1e-4)


def test_ten_step_lora_on_cuda(tiny_llama):
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=10, batch_size=4, seq_len=16, lr=1e-2, dtype="bfloat16")
    pm = finetune.add_lora(tiny_llama.to("cuda"), cfg)
    rows = torch.randint(97, (16, 16), generator=torch.Generator().manual_seed(0))
    res = finetune.train(pm, rows, cfg, device="cuda", progress=False)
    assert len(res.losses) == 10 and all(math.isfinite(x) for x in res.losses)
    assert res.losses[-1] < res.losses[0]
    assert all(p.device.type == "cuda" for n, p in pm.named_parameters() if "lora_" in n)
