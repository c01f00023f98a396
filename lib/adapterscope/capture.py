"""Paired activations from ONE loaded backbone: the adapter switched off (base) and on (fine-tuned).

Each batch runs two nnsight traces over the same peft model: one inside ``disable_adapter()`` (exactly the
base model) and one with the adapter on. Activations at the requested (layer, site) pairs and, optionally,
the logits are saved and handed to the consumer batch by batch, so nothing larger than one batch is held.
Optionally the activations are written as safetensors shards with a metadata sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from . import models, paths
from .finetune import autocast
from .results import sha256_file, write_sidecar


class ShardError(ValueError):
    """An activation shard that does not match its checksum or holds non-finite values."""


@dataclass
class PairedBatch:
    input_ids: torch.Tensor                 # (B, T)
    base: dict[str, torch.Tensor]           # key -> (B, T, D)
    ft: dict[str, torch.Tensor]
    logits_base: torch.Tensor | None = None  # (B, T, V)
    logits_ft: torch.Tensor | None = None

    def tokens(self, key: str, skip_first: int = 1) -> torch.Tensor:
        """Paired token activations (N, 2, D): index 0 base, 1 fine-tuned; BOS positions dropped."""
        b = self.base[key][:, skip_first:]
        f = self.ft[key][:, skip_first:]
        return torch.stack([b.reshape(-1, b.shape[-1]), f.reshape(-1, f.shape[-1])], dim=1)


def _envoy(wrapped, path: str):
    e = wrapped
    for part in path.split("."):
        e = e[int(part)] if part.isdigit() else getattr(e, part)
    return e


def _output_tensor(proxy):
    return proxy[0] if isinstance(proxy, tuple) else proxy


def iter_paired(peft_model, rows: torch.Tensor, layers: Sequence[int], sites: Sequence[str] = ("resid_post",),
                batch_size: int = 8, device: str = "cpu", dtype: str = "float32", with_logits: bool = True,
                progress: bool = True) -> Iterator[PairedBatch]:
    """Yield :class:`PairedBatch` for consecutive row batches. Keys are ``blocks.{L}.hook_{site}``."""
    from nnsight import NNsight

    if not hasattr(peft_model, "disable_adapter"):
        raise TypeError("iter_paired needs a peft model (base + adapter); load one with finetune.load_adapter")
    layers = models.check_layers(peft_model, list(layers))
    names = {mod: n for n, mod in peft_model.named_modules()}
    # nnsight reads modules in execution order: by layer, and inside a layer the MLP before the layer's output
    order = {"mlp_out": 0, "resid_post": 1}
    pairs = sorted({(L, s) for L in layers for s in sites}, key=lambda ls: (ls[0], order.get(ls[1], 2)))
    targets = [(models.hook_key(L, s), names[models.site_module(peft_model, L, s)]) for L, s in pairs]
    wrapped = NNsight(peft_model)
    peft_model.eval()
    bar = tqdm(range(0, len(rows), batch_size), desc="paired capture", disable=not progress)
    for i in bar:
        ids = rows[i:i + batch_size].to(device)
        runs = {}
        for which in ("base", "ft"):
            saved: list = []
            logits: list = []
            ctx = peft_model.disable_adapter() if which == "base" else _null()
            with torch.no_grad(), autocast(device, dtype), ctx:
                with wrapped.trace(ids) as tracer:
                    for _, path in targets:  # modules in execution order
                        saved.append(_output_tensor(_envoy(wrapped, path).output).save())
                    if with_logits:
                        logits.append(wrapped.output.logits.save())
                    else:  # nothing after the deepest target is needed: skip the later layers and the vocab head
                        tracer.stop()
            runs[which] = ({k: t for (k, _), t in zip(targets, saved)}, logits[0] if logits else None)
        yield PairedBatch(ids, runs["base"][0], runs["ft"][0], runs["base"][1], runs["ft"][1])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


class ShardWriter:
    """Writes paired token activations as ``shard_{i:05d}.safetensors`` (key -> (N, 2, D)) plus meta.json."""

    def __init__(self, out_dir: str | Path, keys: Sequence[str], tokens_per_shard: int = 65536,
                 dtype: torch.dtype = torch.bfloat16, meta: dict | None = None):
        self.final = Path(out_dir)
        self.tmp = self.final.with_name(f".{self.final.name}.partial")
        if self.tmp.exists():
            import shutil

            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.keys, self.per, self.dtype, self.meta = list(keys), tokens_per_shard, dtype, dict(meta or {})
        self.buf: dict[str, list[torch.Tensor]] = {k: [] for k in self.keys}
        self.count = 0
        self.shards = 0
        self.total = 0
        self.sha256: dict[str, str] = {}

    def add(self, batch: PairedBatch, skip_first: int = 1) -> None:
        for k in self.keys:
            self.buf[k].append(batch.tokens(k, skip_first).to(self.dtype).cpu())
        self.count += self.buf[self.keys[0]][-1].shape[0]
        if self.count >= self.per:
            self._flush()

    def _flush(self) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        if self.count == 0:
            return
        f = self.tmp / f"shard_{self.shards:05d}.safetensors"
        try:
            save_file({k: torch.cat(v).contiguous() for k, v in self.buf.items()}, str(f))
        except (OSError, SafetensorError) as e:  # disk full, quota (safetensors raises its own error type)
            import shutil

            shutil.rmtree(self.tmp, ignore_errors=True)
            raise ShardError(f"writing {f.name} for {self.final} failed ({e}); nothing was kept (the previous "
                             f"shards, if any, are untouched). Free space under {self.final.parent} and rerun, "
                             "or capture with write_shards=false") from None
        self.sha256[f.name] = sha256_file(f)
        self.total += self.count
        self.shards += 1
        self.buf = {k: [] for k in self.keys}
        self.count = 0

    def close(self) -> Path:
        self._flush()
        write_sidecar(self.tmp, {**self.meta, "keys": self.keys, "n_tokens": self.total, "shards": self.shards,
                                 "layout": "(N, 2, D): index 0 base, 1 fine-tuned", "dtype": str(self.dtype),
                                 "sha256": self.sha256})
        paths.replace_dir(self.tmp, self.final)  # one exchange: the old shards stay readable until it
        return self.final


def iter_shards(shard_dir: str | Path, key: str, batch_tokens: int = 4096) -> Iterator[torch.Tensor]:
    """Stream (N, 2, D) float32 batches of one key back from shards."""
    from safetensors import safe_open

    d = Path(shard_dir)
    meta = json.loads((d / "meta.json").read_text())
    if key not in meta["keys"]:
        raise KeyError(f"{key!r} not captured in {d}; captured: {meta['keys']}")
    fix = "rerun 02_capture for this run (with write_shards=true)"
    sums = meta.get("sha256")
    files = sorted(d.glob("shard_*.safetensors"))
    if sums is not None and sorted(sums) != [f.name for f in files]:
        raise ShardError(f"{d} holds shards {[f.name for f in files]} but its meta.json lists {sorted(sums)}; {fix}")
    for f in files:
        if sums is not None and sha256_file(f) != sums[f.name]:
            raise ShardError(f"{f} differs from the checksum its meta.json recorded (damaged on disk); {fix}")
        with safe_open(str(f), framework="pt") as s:
            t = s.get_tensor(key)
        if not torch.isfinite(t).all():
            raise ShardError(f"{f} holds non-finite activations for {key}; {fix}")
        for i in range(0, len(t), batch_tokens):
            yield t[i:i + batch_tokens].float()
