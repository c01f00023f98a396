"""LoRA fine-tuning with peft: the seed protocol (rank 16, alpha 32, q/k/v/o, 50 steps, lr 2e-4) by default.

``layer_control="equal_step"`` is the depth-profile control of Billa (2026, arXiv:2604.17177): after every
optimizer step each layer's accumulated LoRA update dW_l = (alpha/r) B_l A_l is rescaled (through B_l, which
dW is linear in) so that the relative update ||dW_l||_F / ||W_l||_F is the same for every layer; the common
value is the mean of the layers' ratios before rescaling, so the total amount of change is kept while its
depth profile is flattened. Norms are taken over all adapted projections of a layer together.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import models, paths
from .divergence import lse
from .results import write_sidecar

LAYER_CONTROLS = ("none", "equal_step")


class FinetuneError(ValueError):
    pass


@dataclass
class FinetuneConfig:
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    steps: int = 50
    lr: float = 2e-4
    batch_size: int = 8
    seq_len: int = 128
    seed: int = 0
    dtype: str = "auto"       # autocast dtype of the matmuls (auto: bfloat16 where fast); LoRA weights stay float32
    layer_control: str = "none"
    dropout: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        if self.layer_control not in LAYER_CONTROLS:
            raise FinetuneError(f"layer_control {self.layer_control!r} not in {LAYER_CONTROLS}")
        if self.dtype not in models.COMPUTE_DTYPES:
            raise FinetuneError(f"dtype {self.dtype!r} not in {models.COMPUTE_DTYPES}")
        for k in ("rank", "steps", "batch_size", "seq_len"):
            if getattr(self, k) <= 0:
                raise FinetuneError(f"{k} must be positive, got {getattr(self, k)}")


# ------------------------------------------------------------------------------------------------- data
def pack_documents(tokenizer, docs: Sequence[str], seq_len: int) -> torch.Tensor:
    """Concatenate documents (each followed by EOS) and cut into rows of ``seq_len`` tokens.

    Each row starts with the tokenizer's BOS token when it has one (Gemma needs it), so every row is a
    well-formed sequence; the tail that does not fill a row is dropped. Returns LongTensor (n_rows, seq_len)."""
    if not docs:
        raise FinetuneError("the corpus is empty: nothing to train or evaluate on")
    bos = tokenizer.bos_token_id
    eos = tokenizer.eos_token_id
    body = seq_len - (1 if bos is not None else 0)
    if body < 2:
        raise FinetuneError(f"seq_len {seq_len} too short")
    stream: list[int] = []
    for ids in tokenizer(list(docs), add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        if eos is not None:
            stream.append(eos)
    n = len(stream) // body
    if n == 0:
        raise FinetuneError(f"the corpus has {len(stream)} tokens, fewer than one row of {seq_len}; "
                            "use a shorter seq_len or more documents")
    rows = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


def batch_order(n_rows: int, batch_size: int, steps: int, seed: int) -> list[torch.Tensor]:
    """Row indices per step: epochs of seeded permutations, so every row is seen before any repeats."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(torch.randperm(n_rows, generator=g).tolist())
    return [torch.tensor(order[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]


# ------------------------------------------------------------------------------------------------- LoRA
def add_lora(model, cfg: FinetuneConfig):
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.targets if t not in names]
    if missing:
        raise FinetuneError(f"target module(s) {missing} not in this model; it has e.g. "
                            f"{sorted(n for n in names if n.endswith('proj'))}")
    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.targets),
                      lora_dropout=cfg.dropout, bias="none", task_type="CAUSAL_LM")
    torch.manual_seed(cfg.seed)
    return get_peft_model(model, lcfg)


def _lora_modules_by_layer(peft_model) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for i, block in enumerate(models.decoder_layers(peft_model)):
        mods = [m for m in block.modules() if hasattr(m, "lora_A") and "default" in getattr(m, "lora_A", {})]
        if mods:
            out[i] = mods
    return out


@torch.no_grad()
def layer_update_ratios(peft_model, adapter: str = "default") -> dict[int, float]:
    """||dW_l||_F / ||W_l||_F per layer, dW = scaling * B A summed over the layer's adapted projections.

    Uses ||BA||_F^2 = sum((B^T B) * (A A^T)), r x r products only."""
    out = {}
    for layer, mods in _lora_modules_by_layer(peft_model).items():
        num = 0.0
        den = 0.0
        for m in mods:
            A = m.lora_A[adapter].weight.float()
            B = m.lora_B[adapter].weight.float()
            s = m.scaling[adapter]
            num += float((s * s) * ((B.T @ B) * (A @ A.T)).sum())
            den += float(m.base_layer.weight.float().pow(2).sum())
        out[layer] = math.sqrt(max(num, 0.0)) / math.sqrt(den)
    return out


@torch.no_grad()
def equalise_layer_updates(peft_model, adapter: str = "default") -> dict[int, float]:
    """Rescale each layer's B matrices so every layer has the mean relative update; returns the factors."""
    ratios = layer_update_ratios(peft_model, adapter)
    nonzero = [r for r in ratios.values() if r > 0]
    if not nonzero:
        return {k: 1.0 for k in ratios}
    target = sum(ratios.values()) / len(ratios)
    factors = {}
    for layer, mods in _lora_modules_by_layer(peft_model).items():
        f = target / ratios[layer] if ratios[layer] > 0 else 1.0
        for m in mods:
            m.lora_B[adapter].weight.mul_(f)
        factors[layer] = f
    return factors


# ---------------------------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    layer_ratios: dict[int, float] = field(default_factory=dict)
    tokens_seen: int = 0
    dtype: str = ""            # the compute dtype actually used ("auto" resolved)


def autocast(device: str, dtype: str):
    dtype = models.compute_dtype(dtype, device)
    if dtype == "float32":
        return contextlib.nullcontext()
    dev = torch.device(device).type
    return torch.autocast(device_type=dev, dtype=models.torch_dtype(dtype))


def train(peft_model, rows: torch.Tensor, cfg: FinetuneConfig, device: str = "cpu",
          progress: bool = True) -> TrainResult:
    """Train the LoRA parameters of ``peft_model`` on packed ``rows`` (n, seq_len) for ``cfg.steps`` steps."""
    if rows.ndim != 2 or rows.shape[1] != cfg.seq_len:
        raise FinetuneError(f"rows must be (n, {cfg.seq_len}), got {tuple(rows.shape)}")
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else 1.0)
    res = TrainResult(dtype=models.compute_dtype(cfg.dtype, device))
    torch.manual_seed(cfg.seed)
    bar = tqdm(batch_order(len(rows), cfg.batch_size, cfg.steps, cfg.seed), desc="LoRA steps",
               disable=not progress)
    for idx in bar:
        t0 = time.perf_counter()
        ids = rows[idx].to(device)
        with autocast(device, res.dtype):
            out = peft_model(input_ids=ids, labels=ids, use_cache=False)
        loss = out.loss.float()
        if not torch.isfinite(loss):
            raise FinetuneError(f"loss became {loss.item()} at step {len(res.losses)}; lower lr or use float32")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        if cfg.layer_control == "equal_step":
            equalise_layer_updates(peft_model)
        res.losses.append(loss.item())
        res.lrs.append(opt.param_groups[0]["lr"])
        res.step_s.append(time.perf_counter() - t0)
        res.tokens_seen += ids.numel()
        bar.set_postfix(loss=f"{res.losses[-1]:.3f}")
    peft_model.eval()
    bad = [n for n, p in peft_model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
    if bad:  # the last step's update can overflow after a finite loss
        raise FinetuneError(f"the adapter's weights became non-finite in the last step ({bad[0]} and "
                            f"{len(bad) - 1} more); lower lr or use float32")
    res.layer_ratios = layer_update_ratios(peft_model)
    return res


@torch.no_grad()
def mean_loss(model, rows: torch.Tensor, batch_size: int = 8, device: str = "cpu", dtype: str = "float32") -> float:
    """Mean next-token cross-entropy of ``model`` on packed rows (token-weighted): lse(logits) - logit of the
    next token, lse in float64 (:func:`divergence.lse`), on whole rows (no copy of the vocabulary-wide logits)."""
    tot, n = 0.0, 0
    for i in range(0, len(rows), batch_size):
        ids = rows[i:i + batch_size].to(device)
        with autocast(device, dtype):
            logits = model(input_ids=ids, use_cache=False).logits.float()
        nll = lse(logits)[:, :-1] - logits[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1).double()
        tot += float(nll.sum())
        n += nll.numel()
    return tot / n


# ------------------------------------------------------------------------------------------ save / load
def save_adapter(peft_model, out_dir: str | Path, meta: dict[str, Any]) -> Path:
    """A standard peft adapter directory (adapter_config.json + adapter_model.safetensors) plus meta.json."""
    out = Path(out_dir)
    with paths.atomic_path(out) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        # peft writes its set-valued fields (target_modules) in set order, which follows the process's string hash
        # seed: sorted, identical fine-tunes write identical folders (one digest, so a redo reruns nothing below)
        sets = {k for c in peft_model.peft_config.values() for k, v in c.to_dict().items() if isinstance(v, set)}
        for f in sorted(tmp.rglob("adapter_config.json")) if sets else []:
            conf = json.loads(f.read_text())
            conf.update({k: sorted(conf[k], key=str) for k in sets if isinstance(conf.get(k), list)})
            f.write_text(json.dumps(conf, indent=2, sort_keys=True))
        write_sidecar(tmp, {**meta, "base_identity": models.model_identity(peft_model)})
    return out


def check_safetensors(d: str | Path) -> Path:
    """``d/adapter_model.safetensors``, refusing an adapter folder that holds only a pickle (``adapter_model.bin``,
    which peft would otherwise unpickle) or no weights, and a safetensors file whose header does not parse (a
    truncated or damaged file)."""
    from safetensors import SafetensorError, safe_open

    d = Path(d)
    f = d / "adapter_model.safetensors"
    if not f.is_file():
        if any((d / n).is_file() for n in ("adapter_model.bin", "adapter_model.pt", "pytorch_model.bin")):
            raise FinetuneError(f"{d} holds its weights only as a pickle (adapter_model.bin), which is never loaded: "
                                "re-save the adapter with save_pretrained(..., safe_serialization=True)")
        raise FinetuneError(f"{d} has no adapter_model.safetensors; re-save the adapter with save_pretrained")
    try:
        with safe_open(str(f), framework="pt") as fh:  # parses the header, checks the file covers it
            names = list(fh.keys())
    except (SafetensorError, OSError, ValueError) as e:
        raise FinetuneError(f"{f} is not a readable safetensors file ({e}); it is truncated or damaged: rerun the "
                            "run that wrote it (01_finetune, or re-save the adapter)") from None
    if not names:
        raise FinetuneError(f"{f} holds no tensors; rerun the run that wrote it (01_finetune)")
    return f


def load_adapter(model, adapter_dir: str | Path, model_name: str | None = None):
    """Attach a saved adapter to ``model``; refuse one made for another base model."""
    from peft import PeftModel

    d = check_adapter(model, adapter_dir, model_name)
    pm = PeftModel.from_pretrained(model, str(d), is_trainable=False)
    pm.eval()
    return pm


def load_adapters(model, adapter_dirs: dict[str, str | Path], model_name: str | None = None):
    """Several saved adapters on one base model, each under its own name (the keys of ``adapter_dirs``), each
    checked as :func:`load_adapter` checks one; the first is active."""
    from peft import PeftModel

    if not adapter_dirs:
        raise FinetuneError("no adapter to load")
    checked = {name: check_adapter(model, d, model_name) for name, d in adapter_dirs.items()}
    first, *rest = checked
    pm = PeftModel.from_pretrained(model, str(checked[first]), adapter_name=first, is_trainable=False)
    for name in rest:
        pm.load_adapter(str(checked[name]), adapter_name=name, is_trainable=False)
    pm.set_adapter(first)
    pm.eval()
    return pm


def check_adapter(model, adapter_dir: str | Path, model_name: str | None = None) -> Path:
    """``adapter_dir`` as a Path after the checks every load makes: a peft directory with readable safetensors
    weights, made for this base model."""
    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise FinetuneError(f"{d} is not a peft adapter directory (no adapter_config.json); run 01_finetune first")
    check_safetensors(d)
    meta_p = d / "meta.json"
    if meta_p.is_file():
        meta = json.loads(meta_p.read_text())
        want = meta.get("base_identity")
        have = models.model_identity(model)
        if want and want != have:
            raise FinetuneError(f"adapter {d} was made for {meta.get('model')} {want}, not this model {have}; "
                                "load the base model it was trained on")
        if model_name and meta.get("model") and meta["model"] != model_name:
            raise FinetuneError(f"adapter {d} was made for base model {meta['model']!r}, not {model_name!r}")
    return d


def config_dict(cfg: FinetuneConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["targets"] = list(cfg.targets)
    return d
