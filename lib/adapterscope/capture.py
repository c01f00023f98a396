"""Paired activations from ONE loaded backbone: the adapter switched off (base) and on (fine-tuned).

Each batch runs two nnsight traces over the same peft model: one inside ``disable_adapter()`` (exactly the
base model) and one with the adapter on. Activations at the requested (layer, site) pairs and, optionally,
the logits are saved and handed to the consumer batch by batch, so nothing larger than one batch is held.
Optionally the activations are written as safetensors shards with a metadata sidecar.

For a base model served by NDIF (remote execution), :func:`iter_paired_traced` gives the same batches without
peft: the adapter runs as interventions on the plain base model inside the second trace, and ``remote=False``
runs those very traces locally (the dry path the tests check against :func:`iter_paired`).
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


# ------------------------------------------------------------------ the adapter as interventions (NDIF-ready)
# Within one decoder layer, the order in which the adapted projections and the read sites execute (llama and
# gemma3 blocks: attention q, k, v, o, then the MLP's gate, up, down, then the layer's output).
_EXEC_ORDER = {"q_proj": 0, "k_proj": 1, "v_proj": 2, "o_proj": 3, "gate_proj": 4, "up_proj": 5, "down_proj": 6}
_SITE_ORDER = {"mlp_out": 7, "resid_post": 8}
_PEFT_PREFIX = "base_model.model."


class RemoteError(RuntimeError):
    """A traced capture that cannot run as asked; the message says why."""


def lora_factors(peft_model, adapter: str = "default") -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """``{module path in the plain base model: (A (r, in), B (out, r), scaling)}`` of one LoRA adapter of a
    loaded peft model, so that the adapted output is ``out + scaling * (x A^T) B^T``."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for n, m in peft_model.named_modules():
        if isinstance(m, LoraLayer) and adapter in m.lora_A:
            path = n[len(_PEFT_PREFIX):] if n.startswith(_PEFT_PREFIX) else n
            out[path] = (m.lora_A[adapter].weight.detach().float().cpu(),
                         m.lora_B[adapter].weight.detach().float().cpu(), float(m.scaling[adapter]))
    if not out:
        raise RemoteError(f"the model has no LoRA module holding an adapter named {adapter!r}")
    return out


def lora_factors_from_dir(adapter_dir: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """:func:`lora_factors` read from a saved peft adapter (``adapter_config.json`` + safetensors), without
    loading its base model: what a remote capture needs, where the base lives on the NDIF server."""
    from safetensors.torch import load_file

    from .finetune import check_safetensors

    d = Path(adapter_dir)
    cfg_p = d / "adapter_config.json"
    if not cfg_p.is_file():
        raise RemoteError(f"{d} is not a peft adapter directory (no adapter_config.json)")
    cfg = json.loads(cfg_p.read_text())
    if cfg.get("peft_type", "LORA") != "LORA" or cfg.get("use_dora") or cfg.get("rank_pattern") or \
            cfg.get("alpha_pattern"):
        raise RemoteError(f"{d}: only plain LoRA adapters (one rank and alpha, no DoRA) run as interventions")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / (r ** 0.5) if cfg.get("use_rslora") else alpha / r
    w = load_file(str(check_safetensors(d)))
    out = {}
    for k, a in w.items():
        if ".lora_A." in k:
            path = k.split(".lora_A.")[0]
            path = path[len(_PEFT_PREFIX):] if path.startswith(_PEFT_PREFIX) else path
            b = w[k.replace(".lora_A.", ".lora_B.")]
            out[path] = (a.float(), b.float(), scale)
    if not out:
        raise RemoteError(f"{d} holds no lora_A / lora_B weights")
    return out


def _layer_rank(path: str) -> tuple[int, int]:
    parts = path.split(".")
    idx = [i for i, p in enumerate(parts) if p == "layers" and i + 1 < len(parts) and parts[i + 1].isdigit()]
    if not idx or parts[-1] not in _EXEC_ORDER:
        raise RemoteError(f"cannot place {path!r} in the forward order (known: decoder-layer projections "
                          f"{sorted(_EXEC_ORDER)})")
    return int(parts[idx[0] + 1]), _EXEC_ORDER[parts[-1]]


def iter_paired_traced(wrapped, factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]], rows: torch.Tensor,
                       layers: Sequence[int], sites: Sequence[str] = ("resid_post",), batch_size: int = 8,
                       device: str = "cpu", with_logits: bool = True, remote: bool = False,
                       progress: bool = True) -> Iterator[PairedBatch]:
    """:func:`iter_paired` without peft: ``wrapped`` is an nnsight wrapper of the *plain* base model (``NNsight``
    locally, or a ``LanguageModel`` of a hub id for NDIF) and the adapter runs as interventions inside the second
    trace (each adapted projection's output plus ``scaling * (x A^T) B^T``, from :func:`lora_factors` or
    :func:`lora_factors_from_dir`). ``remote=True`` sends both traces to NDIF (needs a ``LanguageModel``, network
    access and an NDIF API key); ``remote=False`` builds and runs the very same traces locally: the dry path,
    tested against the peft capture on a tiny model."""
    model = getattr(wrapped, "_module", None)
    if model is None:
        raise RemoteError("iter_paired_traced needs an nnsight-wrapped base model (nnsight.NNsight or LanguageModel)")
    if hasattr(model, "disable_adapter"):
        raise RemoteError("wrap the plain base model: the adapter is applied as interventions, not by peft")
    if remote:
        from nnsight import CONFIG, LanguageModel

        if not isinstance(wrapped, LanguageModel):
            raise RemoteError("remote=True needs an nnsight LanguageModel built from a hub id that NDIF serves")
        if not getattr(CONFIG.API, "APIKEY", None):
            raise RemoteError("remote=True needs an NDIF API key: nnsight.CONFIG.set_default_api_key(...) or "
                              "the NDIF_API_KEY environment variable")
    layers = models.check_layers(model, list(layers))
    names = {mod: n for n, mod in model.named_modules()}
    reads = [(L, _SITE_ORDER.get(s, 9), models.hook_key(L, s), names[models.site_module(model, L, s)])
             for L in layers for s in sites]
    edits = sorted(((*_layer_rank(p), p) for p in factors), key=lambda t: (t[0], t[1]))
    missing = [p for *_, p in edits if p not in names.values()]
    if missing:
        raise RemoteError(f"the adapter names modules this model lacks, e.g. {missing[0]!r}: a base/adapter mismatch")
    steps_ft = sorted([(L, r, "edit", p) for L, r, p in edits] + [(L, r, "read", (k, p)) for L, r, k, p in reads],
                      key=lambda t: (t[0], t[1]))
    steps_base = [(L, r, "read", (k, p)) for L, r, k, p in sorted(reads, key=lambda t: (t[0], t[1]))]
    if not with_logits:  # the trace stops after the deepest read: edits below it would never run
        deepest = max((L, r) for L, r, _, _ in reads)
        steps_ft = [t for t in steps_ft if (t[0], t[1]) <= deepest]
    kw = {"remote": True} if remote else {}
    fac = {p: (a.to(device), b.to(device), s) for p, (a, b, s) in factors.items()}
    bar = tqdm(range(0, len(rows), batch_size), desc="paired capture (traced)", disable=not progress)
    for i in bar:
        ids = rows[i:i + batch_size].to(device)
        runs = {}
        for which, steps in (("base", steps_base), ("ft", steps_ft)):
            saved: dict = {}
            logits: list = []
            with torch.no_grad(), wrapped.trace(ids, **kw) as tracer:
                for _, _, kind, what in steps:  # modules in execution order
                    if kind == "edit":
                        env = _envoy(wrapped, what)
                        a, b, s = fac[what]
                        x = env.input
                        env.output = env.output + s * ((x @ a.T) @ b.T)
                    else:
                        key, path = what
                        saved[key] = _output_tensor(_envoy(wrapped, path).output).save()
                if with_logits:
                    logits.append(wrapped.output.logits.save())
                else:
                    tracer.stop()
            runs[which] = ({k: saved[k] for _, _, k, _ in reads}, logits[0] if logits else None)
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
        # atomic_path's .<name>.*.tmp naming, but a fixed name (not a random one, nor one with-block): shards are
        # appended over many calls, and a rerun must find (and replace) the shards a killed capture left
        self.tmp = paths.temp_beside(self.final, "partial")
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
