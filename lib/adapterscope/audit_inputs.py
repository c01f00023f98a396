"""What ``adapterscope audit`` checks before any model loads: the options, the output folder, the adapter's
config and weights against the base model's own safetensors headers, and the user's text (read lazily).

The audit faces input the project has never seen, so every check here ends in one :class:`AuditError` whose
message names the file or option and the fix, and none of them loads a model (the base model's weights are
read only as safetensors headers). Text that comes from the user's files goes through :func:`safe` before it
reaches a terminal line.

``--out`` is never a place the audit deletes a user's files: it must be absent, an empty folder, or a report
this command wrote earlier (its marker file present and nothing else beside the report's own entries), and it
may not be, hold or sit inside the adapter or the base model's folder.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

MARKER = ".adapterscope-audit"  # written into every report folder; a folder without it is never replaced
REPORT_ENTRIES = frozenset({"audit.json", "audit.html", "figures", MARKER})
MIN_TOKENS, MAX_TOKENS = 2048, 262_144  # the neutral set's 32 x 64; about an hour on 2 cores at the top
MIN_SEQ_LEN, MAX_SEQ_LEN = 8, 4096
MAX_EPOCHS = 1000
MAX_SEED = 2**32 - 1  # numpy's generators take seeds in [0, 2^32) as the audit uses them
LORA_SUFFIXES = ("lora_A.weight", "lora_B.weight", "lora_magnitude_vector", "lora_magnitude_vector.weight",
                 "lora_embedding_A", "lora_embedding_B")
PEFT_PREFIX = "base_model.model."


class AuditError(ValueError):
    """Bad input to an audit: the message names the file or option and the fix."""


def safe(text: Any) -> str:
    """``text`` with every control character (newline, escape, ...) written as its escape sequence, so a name
    from a user's file can neither forge a second terminal line nor move the cursor."""
    s = str(text)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


# ------------------------------------------------------------------------------------------ options
def _int_in(name: str, value: Any, lo: int, hi: int, why: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AuditError(f"{name} {safe(value)} is out of range: give an integer in [{lo}, {hi}] ({why})")
    return value


def check_options(tokens: int, seq_len: int, seed: int, epochs: int, depths: Sequence[float]) -> None:
    """Every numeric option in range (before anything is read or loaded)."""
    _int_in("--tokens", tokens, MIN_TOKENS, MAX_TOKENS, f"at least the {MIN_TOKENS} neutral tokens every audit "
            f"measures; {MAX_TOKENS} takes about an hour on 2 CPU cores")
    _int_in("--seq-len", seq_len, MIN_SEQ_LEN, MAX_SEQ_LEN, "tokens per row; the reference used 64")
    _int_in("--seed", seed, 0, MAX_SEED, "a non-negative 32-bit integer")
    _int_in("--epochs", epochs, 1, MAX_EPOCHS, "crosscoder passes over the training tokens; the reference used 8")
    _check_depths(depths)


def _check_depths(depths: Sequence[float]) -> None:
    """At least two distinct finite depths in [0, 1]."""
    bad = [d for d in depths if not (isinstance(d, (int, float)) and math.isfinite(d) and 0 <= d <= 1)]
    if bad:
        raise AuditError(f"--depths must lie in [0, 1], got {[safe(d) for d in bad]}")
    if len(set(depths)) < 2:
        raise AuditError("--depths: the audit needs at least two distinct depths (each regime hides from one); "
                         "the default is 0.4 0.9")


def depth_layers(n_layers: int, depths: Sequence[float]) -> list[int]:
    """round(depth * (L - 1)) for each depth in [0, 1], sorted; depths that land on one layer are refused."""
    _check_depths(depths)
    by_layer: dict[int, list[float]] = {}
    for d in depths:
        by_layer.setdefault(int(round(d * (n_layers - 1))), []).append(d)
    same = {l: ds for l, ds in by_layer.items() if len(set(ds)) > 1}
    if same:
        l, ds = min(same.items())
        raise AuditError(f"--depths {' '.join(f'{d:g}' for d in ds)} all land on layer {l} of this {n_layers}-layer "
                         f"model; give depths at least {1 / max(n_layers - 1, 1):.3f} apart")
    return sorted(by_layer)


def check_seq_len(seq_len: int, base_dir: str | Path) -> None:
    """``--seq-len`` within the base model's context (its config.json's ``max_position_embeddings``)."""
    cfg_p = Path(base_dir) / "config.json"
    if not cfg_p.is_file():
        return
    cfg = _json_object(cfg_p, "re-save the base model with save_pretrained")
    n = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings")
    if isinstance(n, int) and seq_len > n:
        raise AuditError(f"--seq-len {seq_len} is longer than the base model's context ({n} positions); lower it")


def check_text_source(text: str) -> None:
    """``--text`` names something readable (a file is only opened, not read: it is read lazily later)."""
    from . import corpora

    if text.startswith("file:"):
        p = Path(text[5:]).expanduser()
        if not p.is_file():
            raise AuditError(f"--text: file {safe(p)} not found; give file:PATH of a .txt, .jsonl or .json file")
        if p.stat().st_size == 0:
            raise AuditError(f"--text: file {safe(p)} is empty; give it documents (blank-line separated text, or "
                             "JSON lines with a 'text' field)")
        try:
            with open(p, "rb"):
                pass
        except OSError as e:
            raise AuditError(f"--text: file {safe(p)} cannot be read ({safe(e.strerror or e)})") from None
        return
    try:
        corpora.check_name(text)
    except corpora.CorpusError as e:
        raise AuditError(f"--text: {safe(e)}") from None


# ------------------------------------------------------------------------------------------ output folder
def _within(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def check_out(out: str | Path, protected: dict[str, Path | None]) -> Path:
    """``out`` as an absolute path, after checking that writing the report there deletes nothing of the user's.

    ``protected`` maps a label (``--adapter``, ``the base model``) to a folder the report may neither be, hold,
    nor sit inside. The nearest existing folder above ``out`` must let us create (and remove) a folder."""
    raw = Path(out).expanduser()
    if raw.is_symlink():
        raise AuditError(f"--out {safe(raw)} is a symbolic link; give a folder path that is not a link")
    o = raw.resolve()
    for what, folder in protected.items():
        if folder is None:
            continue
        f = Path(folder).expanduser().resolve()
        if _within(f, o):
            raise AuditError(f"--out {safe(raw)} is or holds {what} ({safe(f)}); replacing it would delete it: "
                             "give a new folder for the report, e.g. --out report/")
        if _within(o, f):
            raise AuditError(f"--out {safe(raw)} lies inside {what} ({safe(f)}); a report there would change it: "
                             "give a folder outside it, e.g. --out report/")
    if o.exists():
        if not o.is_dir():
            raise AuditError(f"--out {safe(raw)} is an existing file; the audit writes a folder and never replaces "
                             "a file: give a new folder path")
        entries = sorted(p.name for p in o.iterdir())
        if entries:
            if MARKER not in entries or not (o / MARKER).is_file():
                raise AuditError(f"--out {safe(raw)} is a folder with {len(entries)} "
                                 f"{'entry' if len(entries) == 1 else 'entries'} that no audit wrote "
                                 f"(first: {safe(entries[0])!r}); the audit replaces only an empty folder or an "
                                 "earlier report: give a new folder path")
            foreign = [e for e in entries if e not in REPORT_ENTRIES]
            figs = o / "figures"
            if figs.is_dir():
                foreign += [f"figures/{p.name}" for p in sorted(figs.iterdir())
                            if not (p.is_file() and p.suffix in (".pdf", ".png"))]
            elif figs.exists():
                foreign.append("figures")
            if foreign:
                raise AuditError(f"--out {safe(raw)} holds an earlier report and also {safe(foreign[0])!r}, "
                                 "which no audit wrote; move it out of the folder or give a new folder path")
    parent = next(p for p in (o.parent, *o.parent.parents) if p.exists())
    if not parent.is_dir():
        raise AuditError(f"--out {safe(raw)}: {safe(parent)} is a file, not a folder; give a folder path")
    try:
        probe = Path(tempfile.mkdtemp(prefix=".adapterscope-write-test.", dir=parent))
    except OSError as e:
        raise AuditError(f"--out {safe(raw)} cannot be written ({safe(e.strerror or e)} in {safe(parent)}); give a "
                         "folder you can write to") from None
    probe.rmdir()
    return o


def write_marker(folder: Path, params: dict[str, Any]) -> None:
    (Path(folder) / MARKER).write_text(json.dumps({"written_by": "adapterscope audit", **params}, indent=1) + "\n")


# ------------------------------------------------------------------------------------------ adapter
def _json_object(p: Path, fix: str) -> dict[str, Any]:
    try:
        data = json.loads(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise AuditError(f"{safe(p)} is not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise AuditError(f"{safe(p)} is not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise AuditError(f"{safe(p)} cannot be read ({safe(e.strerror or e)}); {fix}") from None
    if not isinstance(data, dict):
        raise AuditError(f"{safe(p)} holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


_FIX = "re-save the adapter with PeftModel.save_pretrained"


def read_config(d: Path) -> dict[str, Any]:
    """``d/adapter_config.json`` after checking the fields the audit relies on (types, a LoRA that is not the
    identity) and ``d/meta.json`` (when present) for being a JSON object."""
    cfg_p = d / "adapter_config.json"
    cfg = _json_object(cfg_p, _FIX)
    kind = str(cfg.get("peft_type", "")).upper()
    if kind != "LORA":
        raise AuditError(f"{safe(d)} holds a peft {safe(kind) or 'unknown'} adapter, not LoRA; audit reads LoRA "
                         "adapters only")
    r = cfg.get("r", 8)  # peft's defaults where a field is absent
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise AuditError(f"{safe(cfg_p)}: field 'r' is {safe(repr(r))}, not a positive integer; {_FIX}")
    alpha = cfg.get("lora_alpha", 8)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise AuditError(f"{safe(cfg_p)}: field 'lora_alpha' is {safe(repr(alpha))}, not a finite number; {_FIX}")
    if alpha == 0:
        raise AuditError(f"{safe(cfg_p)}: lora_alpha is 0, so the adapter's scaling is 0 and it changes nothing "
                         "(the adapted model is the base model); check the adapter's training config")
    tm = cfg.get("target_modules")  # None: peft's default targets for the model type
    if tm is not None and not (isinstance(tm, str) or (isinstance(tm, list) and tm and all(isinstance(t, str) for t in tm))):
        raise AuditError(f"{safe(cfg_p)}: field 'target_modules' is {safe(repr(tm))}, not a module name list or "
                         f"pattern; {_FIX}")
    mts = cfg.get("modules_to_save")
    if mts is not None and not (isinstance(mts, list) and all(isinstance(t, str) for t in mts)):
        raise AuditError(f"{safe(cfg_p)}: field 'modules_to_save' is {safe(repr(mts))}, not a list of module "
                         f"names; {_FIX}")
    base = cfg.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise AuditError(f"{safe(cfg_p)}: field 'base_model_name_or_path' is {safe(repr(base))}, not a string; "
                         f"{_FIX}")
    for flag in ("use_dora", "use_rslora"):
        if flag in cfg and not isinstance(cfg[flag], bool):
            raise AuditError(f"{safe(cfg_p)}: field {flag!r} is {safe(repr(cfg[flag]))}, not true/false; {_FIX}")
    if (d / "meta.json").is_file():
        _json_object(d / "meta.json", "delete meta.json (the audit does not need it) or rerun 01_finetune")
    return cfg


def base_weight_shapes(base_dir: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape from the base model folder's safetensors headers (no weight is read); None where
    the folder has none (a hub id)."""
    from safetensors import SafetensorError, safe_open

    d = Path(base_dir)
    if not d.is_dir():
        return None
    files = sorted(d.glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    shapes[k] = tuple(fh.get_slice(k).get_shape())
        except (SafetensorError, OSError) as e:
            raise AuditError(f"base model weights {safe(f)} are not readable safetensors ({safe(e)}); re-save or "
                             "re-convert the base model") from None
    return shapes


def _module_of(key: str) -> tuple[str, str]:
    """(module path in the base model, LoRA tensor suffix or '') of an adapter tensor name."""
    k = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else key
    for suf in LORA_SUFFIXES:
        if k.endswith("." + suf):
            return k[: -len(suf) - 1], suf
    return k, ""


def _base_param(param: str, base: dict[str, tuple[int, ...]]) -> str | None:
    """The base checkpoint's name of parameter ``param`` (``<module>.weight``, ``<module>.bias``) as the adapter
    names it on the loaded model, whose prefix the checkpoint may lack or add (``model.``)."""
    cands = [param, param.removeprefix("model."), "model." + param]
    mod, _, leaf = param.rpartition(".")
    if mod.rsplit(".", 1)[-1] == "lm_head":  # a head tied to the embeddings is stored only as those
        cands += [f"{mod[: -len('lm_head')]}model.embed_tokens.{leaf}", f"model.embed_tokens.{leaf}"]
    return next((c for c in cands if c in base), None)


def check_weights(d: Path, cfg: dict[str, Any], base_dir: str | Path | None) -> dict[str, Any]:
    """Every adapter tensor finite, and (where the base folder has safetensors) every LoRA tensor attached to a
    base module of matching shape, every module that ``target_modules`` names in the base covered, nothing
    extra. Returns ``{"n_tensors", "n_modules", "checked_against_base"}``."""
    from safetensors import SafetensorError, safe_open

    f = d / "adapter_model.safetensors"
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                t = fh.get_tensor(k)
                shapes[k] = tuple(t.shape)
                if t.is_floating_point() and not bool(t.isfinite().all()):
                    n_bad = int((~t.isfinite()).sum())
                    raise AuditError(f"{safe(f)}: tensor {safe(k)!r} has {n_bad} NaN or infinite value(s); the "
                                     "adapter's training diverged: retrain it (lower the learning rate)")
    except (SafetensorError, OSError) as e:
        raise AuditError(f"{safe(f)} is not a readable safetensors file ({safe(e)}); re-save the adapter") from None
    base = base_weight_shapes(base_dir) if base_dir is not None else None
    modules = {_module_of(k)[0] for k in shapes}
    info = {"n_tensors": len(shapes), "n_modules": len(modules), "checked_against_base": base is not None}
    if base is None:
        return info
    lora: dict[str, dict[str, tuple[int, ...]]] = {}
    for k, shp in shapes.items():
        mod, suf = _module_of(k)  # a tensor without a LoRA suffix is a whole saved parameter (modules_to_save)
        bname = _base_param(mod + ".weight" if suf else mod, base)
        if bname is None:
            raise AuditError(f"{safe(f)}: tensor {safe(k)!r} belongs to module {safe(mod)!r}, which the base model "
                             f"({safe(base_dir)}) does not have; the adapter was made for another base model: pass "
                             f"the one it was trained on ({safe(cfg.get('base_model_name_or_path') or 'unnamed')})")
        want = base[bname]
        if suf == "lora_A.weight" and (len(shp) != 2 or len(want) != 2 or shp[1] != want[1]):
            raise AuditError(_shape_msg(f, k, shp, bname, want, cfg))
        if suf == "lora_B.weight" and (len(shp) != 2 or len(want) != 2 or shp[0] != want[0]):
            raise AuditError(_shape_msg(f, k, shp, bname, want, cfg))
        if suf == "" and shp != want:
            raise AuditError(_shape_msg(f, k, shp, bname, want, cfg))
        if suf:
            lora.setdefault(mod, {})[suf] = shp
    half = sorted(m for m, s in lora.items() if ("lora_A.weight" in s) != ("lora_B.weight" in s))
    if half:
        raise AuditError(f"{safe(f)}: module {safe(half[0])!r} has only one of its lora_A / lora_B tensors; the "
                         "file is incomplete: re-save the adapter")
    missing = _missing_targets(cfg, base, set(lora))
    if missing:
        raise AuditError(f"{safe(f)}: target_modules {safe(cfg.get('target_modules'))} name {len(missing)} module(s) "
                         f"of the base model with no LoRA tensor in the file (first: {safe(missing[0])!r}); peft would "
                         "leave them untrained at random: re-save the adapter, or pass the base it was trained on")
    return info


def _shape_msg(f: Path, key: str, shp, bname: str, want, cfg: dict[str, Any]) -> str:
    return (f"{safe(f)}: tensor {safe(key)!r} has shape {list(shp)}, which does not fit the base model's "
            f"{safe(bname)!r} of shape {list(want)}; the adapter was made for another base model: pass the one it "
            f"was trained on ({safe(cfg.get('base_model_name_or_path') or 'unnamed')})")


def _missing_targets(cfg: dict[str, Any], base: dict[str, tuple[int, ...]], have: set[str]) -> list[str]:
    """Base modules (2-D weights) that the adapter's ``target_modules`` select, by peft's own matching rule,
    and that the file has no LoRA tensor for."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    if cfg.get("target_modules") is None:  # peft's defaults for the model type: nothing named to check
        return []
    keep = {k: cfg[k] for k in ("target_modules", "layers_to_transform", "layers_pattern", "exclude_modules",
                                "r", "lora_alpha") if cfg.get(k) is not None}
    try:
        lc = LoraConfig(**keep)
    except (TypeError, ValueError) as e:
        raise AuditError(f"adapter_config.json: peft refuses its target fields ({safe(e)}); {_FIX}") from None
    have_norm = {h.removeprefix("model.") for h in have}
    missing = []
    for name, shp in base.items():
        if not name.endswith(".weight") or len(shp) != 2:
            continue
        mod = name[: -len(".weight")]
        if "embed" in mod.split(".")[-1] or mod.split(".")[-1] == "lm_head":
            continue  # embeddings and heads are targeted only by name and saved under their own keys
        if check_target_module_exists(lc, mod) and mod.removeprefix("model.") not in have_norm:
            missing.append(mod)
    return sorted(missing)


# ------------------------------------------------------------------------------------------ text
def _file_documents(p: Path, max_chars: int) -> Iterator[str]:
    """Documents of a .txt (blank-line separated), .jsonl or .json file, read lazily (a .json array is read
    whole: give large text as .jsonl). A document is cut at ``max_chars`` characters."""
    from . import corpora

    def record(r: Any, where: str) -> str:
        try:
            return corpora._records_to_docs([r], where)[0]
        except corpora.CorpusError as e:
            raise AuditError(f"--text {e}; give records with a 'text' field") from None

    try:
        with open(p, encoding="utf-8", newline=None) as fh:
            if p.suffix == ".json":
                head = fh.read(64 * 2**20 + 1)
                if len(head) > 64 * 2**20:
                    raise AuditError(f"--text {safe(p)} is a JSON file over 64 MB; give it as JSON lines (.jsonl), "
                                     "which is read lazily")
                data = json.loads(head)
                if isinstance(data, dict):
                    data = data.get("data") or data.get("documents") or []
                if not isinstance(data, list):
                    raise AuditError(f"--text {safe(p)} holds a JSON {type(data).__name__}; give a list of records "
                                     "or {\"data\": [...]}")
                for i, r in enumerate(data):
                    yield record(r, f"{p} record {i}")[:max_chars]
                return
            if p.suffix == ".jsonl":
                for i, line in enumerate(iter(lambda: fh.readline(max_chars * 4 + 1), "")):
                    if not line.strip():
                        continue
                    if not line.endswith("\n") and len(line) > max_chars * 4:
                        raise AuditError(f"--text {safe(p)} line {i + 1} is a JSON line over {max_chars * 4} "
                                         "characters; split the record")
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise AuditError(f"--text {safe(p)} line {i + 1} is not valid JSON ({e}); give one JSON "
                                         "object per line") from None
                    yield record(r, f"{p} line {i + 1}")[:max_chars]
                return
            doc: list[str] = []
            size = 0
            for line in iter(lambda: fh.readline(max_chars + 1), ""):
                if line.strip():
                    if size < max_chars:
                        doc.append(line)
                        size += len(line)
                elif doc:
                    yield "".join(doc).strip()[:max_chars]
                    doc, size = [], 0
            if doc:
                yield "".join(doc).strip()[:max_chars]
    except UnicodeDecodeError as e:
        raise AuditError(f"--text {safe(p)} is not UTF-8 text ({e.reason}); convert it to UTF-8 (e.g. iconv -t "
                         "utf-8)") from None
    except json.JSONDecodeError as e:
        raise AuditError(f"--text {safe(p)} is not valid JSON ({e}); give a list of records or use .jsonl") from None
    except OSError as e:
        raise AuditError(f"--text {safe(p)} cannot be read ({safe(e.strerror or e)})") from None


def documents(text: str, max_chars: int) -> Iterator[str]:
    """The documents of ``--text``: a file read lazily, any other source (a named corpus, ``url:``, ``hf:``)
    as :mod:`corpora` reads it."""
    from . import corpora

    if text.startswith("file:"):
        yield from _file_documents(Path(text[5:]).expanduser(), max_chars)
        return
    try:
        yield from corpora.raw_documents(text)[0]
    except corpora.CorpusError as e:
        raise AuditError(f"--text: {e}") from None


def text_rows(tok, text: str, n_rows: int, seq_len: int):
    """The first ``n_rows`` rows of ``seq_len`` tokens packed from ``--text`` (documents in file order, each
    followed by EOS, as ``finetune.pack_documents`` packs them), reading and tokenising only the documents
    those rows use; and a digest of those documents."""
    import hashlib

    import torch

    from . import finetune

    need = n_rows * seq_len
    docs, n_tok, seen = [], 0, set()
    for doc in documents(text, max_chars=max(need * 16, 4096)):
        if not doc.strip() or doc in seen:
            continue
        seen.add(doc)
        docs.append(doc)
        n_tok += len(tok(doc, add_special_tokens=False)["input_ids"]) + 1
        if n_tok >= need + seq_len:
            break
    if not docs:
        raise AuditError(f"--text {safe(text)} holds no document; give blank-line separated text or JSON lines "
                         "with a 'text' field")
    try:
        rows = finetune.pack_documents(tok, docs, seq_len)
    except finetune.FinetuneError:
        rows = torch.zeros((0, seq_len), dtype=torch.long)
    if len(rows) == 0:
        raise AuditError(f"--text {safe(text)} packs into no row of {seq_len} tokens; give more text or lower "
                         "--seq-len")
    h = hashlib.sha256()
    for d in docs:
        h.update(hashlib.sha256(d.encode()).digest())
    return rows[:n_rows], h.hexdigest()
