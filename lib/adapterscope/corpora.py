"""Corpora: the seed study's four by name, user sources, deterministic splits, and the neutral eval set.

Names:
  ``meditations``, ``seneca``   Marcus Aurelius / Seneca quotes read from the SQLite file that the ``kathekon``
                                package installs (the text is read at run time and never committed).
  ``dtc-ads``, ``instructions``  seeded generators written in this project (:mod:`adapterscope.textgen`): no
                                offline source of ad copy or Alpaca data exists.
  ``file:PATH``                 .txt (documents separated by blank lines), .jsonl/.json (``text`` field, or
                                Alpaca ``instruction``/``input``/``output`` records).
  ``url:URL[#sha256=HEX]``      downloaded once into ``data/cache/corpora/`` and checksummed (pinned if given).
  ``hf:NAME[:SPLIT]``           a Hugging Face dataset (needs the ``datasets`` package and ADAPTERSCOPE_ALLOW_HUB=1),
                                e.g. ``hf:tatsu-lab/alpaca``.

Splits are by a hash of each document's text, so they do not depend on order or on the other documents.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import paths
from .results import sha256_bytes, sha256_file, write_sidecar

NAMED = ("meditations", "seneca", "dtc-ads", "instructions")
KATHEKON_AUTHORS = {"meditations": "Marcus Aurelius", "seneca": "Seneca"}
GENERATED_SIZE = 800  # documents drawn from a seeded generator

ALPACA_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n{output}")


class CorpusError(ValueError):
    pass


@dataclass
class Corpus:
    name: str
    train: list[str]
    heldout: list[str]
    digest: str                       # sha256 over all documents (order-independent)
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.train) + len(self.heldout)


# ------------------------------------------------------------------------------------------------ sources
def kathekon_db() -> Path:
    spec = importlib.util.find_spec("kathekon")
    if spec is None or not spec.submodule_search_locations:
        raise CorpusError("the kathekon package is not installed; run `make venv` (or `pip install kathekon`)")
    p = Path(list(spec.submodule_search_locations)[0]) / "data" / "quotes.db"
    if not p.is_file():
        raise CorpusError(f"kathekon's quote database is missing at {p}; reinstall kathekon")
    return p


def _kathekon(author: str) -> list[str]:
    con = sqlite3.connect(f"file:{kathekon_db()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT text FROM quotes WHERE author = ? ORDER BY id", (author,)).fetchall()
    finally:
        con.close()
    return [r[0].strip() for r in rows if r[0] and r[0].strip()]


def _alpaca(rec: dict[str, Any]) -> str:
    inp = (rec.get("input") or "").strip()
    tpl = ALPACA_WITH_INPUT if inp else ALPACA_NO_INPUT
    return tpl.format(instruction=rec["instruction"].strip(), input=inp, output=rec["output"].strip())


def _records_to_docs(records: Sequence[Any], where: str) -> list[str]:
    docs = []
    for i, r in enumerate(records):
        if isinstance(r, str):
            docs.append(r)
        elif isinstance(r, dict) and "text" in r:
            docs.append(str(r["text"]))
        elif isinstance(r, dict) and {"instruction", "output"} <= set(r):
            docs.append(_alpaca(r))
        else:
            raise CorpusError(f"{where}: record {i} has neither a 'text' field nor Alpaca "
                              "'instruction'/'output' fields")
    return docs


def read_file(path: str | Path) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise CorpusError(f"corpus file {p} not found")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        return _records_to_docs([json.loads(line) for line in text.splitlines() if line.strip()], str(p))
    if p.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("data") or data.get("documents") or []
        return _records_to_docs(data, str(p))
    return [b.strip() for b in text.replace("\r\n", "\n").split("\n\n") if b.strip()]


def fetch_url(url: str) -> Path:
    """Download ``url`` once into the corpus cache; ``#sha256=HEX`` pins its content."""
    import urllib.request

    url, _, frag = url.partition("#")
    want = frag.split("=", 1)[1] if frag.startswith("sha256=") else None
    suffix = Path(url.split("?")[0]).suffix or ".txt"
    target = paths.cache_dir("corpora") / f"url-{sha256_bytes(url.encode())[:16]}{suffix}"
    if not target.is_file():
        try:
            with urllib.request.urlopen(url, timeout=60) as r, paths.atomic_path(target) as tmp:
                tmp.write_bytes(r.read())
        except OSError as e:
            raise CorpusError(f"could not download {url}: {e}. Offline? Download it elsewhere and use file:PATH") from e
        write_sidecar(target, {"url": url, "sha256": sha256_file(target)})
    got = sha256_file(target)
    if want and got != want:
        raise CorpusError(f"{url}: sha256 {got} does not match the pinned {want}; delete {target} to refetch")
    return target


def read_hf(spec: str) -> list[str]:
    name, _, split = spec.partition(":")
    if os.environ.get("ADAPTERSCOPE_ALLOW_HUB", "0") in ("", "0", "false", "no"):
        raise CorpusError(f"hf:{spec} needs the hub; set ADAPTERSCOPE_ALLOW_HUB=1 (with internet) or use file:PATH")
    if importlib.util.find_spec("datasets") is None:
        raise CorpusError("hf: sources need the `datasets` package: pip install datasets")
    import datasets

    ds = datasets.load_dataset(name, split=split or "train")
    return _records_to_docs(list(ds), f"hf:{spec}")


def raw_documents(name: str, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """The documents of a corpus source, and a description of where they came from."""
    if name in KATHEKON_AUTHORS:
        db = kathekon_db()
        return _kathekon(KATHEKON_AUTHORS[name]), {"kind": "kathekon", "author": KATHEKON_AUTHORS[name],
                                                   "db_sha256": sha256_file(db)}
    if name in ("dtc-ads", "instructions"):
        from .textgen import GENERATORS

        return GENERATORS[name](GENERATED_SIZE, seed=seed), {"kind": "generator", "generator": name,
                                                             "n": GENERATED_SIZE, "seed": seed}
    if name.startswith("file:"):
        p = Path(name[5:]).expanduser()
        return read_file(p), {"kind": "file", "path": str(p), "sha256": sha256_file(p) if p.is_file() else None}
    if name.startswith("url:"):
        p = fetch_url(name[4:])
        return read_file(p), {"kind": "url", "url": name[4:], "sha256": sha256_file(p)}
    if name.startswith("hf:"):
        return read_hf(name[3:]), {"kind": "hf", "dataset": name[3:]}
    raise CorpusError(f"unknown corpus {name!r}: use one of {', '.join(NAMED)}, file:PATH, url:URL or hf:NAME")


def check_name(name: str) -> None:
    """Raise :class:`CorpusError` now if ``name`` is neither a named corpus nor a file:/url:/hf: source."""
    if name in NAMED:
        return
    if name.startswith("file:"):
        f = Path(name[5:]).expanduser()
        if not f.is_file():
            raise CorpusError(f"corpus file {name[5:]} not found")
        if not f.read_bytes().strip():
            raise CorpusError(f"corpus file {name[5:]} is empty: give it documents (blank-line separated text, or "
                              "JSON lines with a 'text' field)")
        return
    if name.startswith(("url:", "hf:")):
        return
    raise CorpusError(f"unknown corpus {name!r}: use one of {', '.join(NAMED)}, file:PATH, url:URL or hf:NAME")


# ------------------------------------------------------------------------------------------------- splits
def heldout_fraction_of(doc: str, salt: str = "") -> float:
    h = hashlib.sha256((salt + doc).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split(docs: Sequence[str], heldout_frac: float = 0.1, salt: str = "") -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split by a hash of each document (duplicates removed, order kept)."""
    if not 0 < heldout_frac < 1:
        raise CorpusError(f"heldout_frac must be in (0, 1), got {heldout_frac}")
    seen: set[str] = set()
    train, held = [], []
    for d in docs:
        if d in seen:
            continue
        seen.add(d)
        (held if heldout_fraction_of(d, salt) < heldout_frac else train).append(d)
    return train, held


def load_corpus(name: str, heldout_frac: float = 0.1, seed: int = 0) -> Corpus:
    docs, source = raw_documents(name, seed=seed)
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise CorpusError(f"corpus {name!r} is empty: no documents to train on")
    train, held = split(docs, heldout_frac)
    if not train or not held:
        raise CorpusError(f"corpus {name!r} has {len(docs)} document(s): too few for a train/held-out split")
    digest = sha256_bytes("\n".join(sorted(hashlib.sha256(d.encode()).hexdigest() for d in set(docs))).encode())
    return Corpus(name=name, train=train, heldout=held, digest=digest, source=source)


# -------------------------------------------------------------------------------------------- neutral set
NEUTRAL_OPENERS = ("The", "In", "A", "It", "When", "This", "We", "There", "On", "After", "For", "My", "One",
                   "If", "Today", "Most", "As", "She", "He", "They", "Some", "Why", "How", "At")


def neutral_samples(model, tokenizer, n: int = 32, length: int = 64, seed: int = 0, device: str = "cpu",
                    cache_key: str | None = None, batch_size: int = 16, progress: bool = False):
    """Seeded samples from the *base* model (temperature 1, no truncation): rows of exactly ``length`` tokens.

    Each row is [BOS] + one neutral opener word + sampled continuation (EOS suppressed), so the mean
    next-token KL(base || ft) over these rows is an honest estimate of divergence under the base
    distribution. Cached (safetensors + sidecar) when ``cache_key`` names the model. A peft model must be
    passed inside ``disable_adapter()``. ``progress`` shows a bar over the generated batches."""
    import torch
    from safetensors.torch import load_file, save_file

    path = None
    if cache_key:
        path = paths.cache_dir("neutral") / f"{cache_key}__n{n}_len{length}_s{seed}.safetensors"
        if path.is_file():
            return load_file(str(path))["input_ids"]
    g = torch.Generator().manual_seed(seed)
    bos = tokenizer.bos_token_id
    prefixes = []
    for _ in range(n):
        word = NEUTRAL_OPENERS[int(torch.randint(len(NEUTRAL_OPENERS), (1,), generator=g))]
        ids = tokenizer(word, add_special_tokens=False)["input_ids"][:1]
        prefixes.append(([bos] if bos is not None else []) + ids)
    plen = len(prefixes[0])
    new = length - plen
    if new < 1:
        raise CorpusError(f"neutral sample length {length} is too short")
    rows = []
    torch.manual_seed(seed)
    bad = [[tokenizer.eos_token_id]] if tokenizer.eos_token_id is not None else None
    from tqdm.auto import tqdm

    with torch.no_grad():
        for i in tqdm(range(0, n, batch_size), desc="base-model samples", unit="batch", disable=not progress):
            inp = torch.tensor(prefixes[i:i + batch_size], device=device)
            out = model.generate(input_ids=inp, attention_mask=torch.ones_like(inp), do_sample=True,
                                 temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                                 bad_words_ids=bad, use_cache=True, pad_token_id=tokenizer.pad_token_id)
            rows.append(out[:, :length].cpu())
    ids = torch.cat(rows)
    if ids.shape != (n, length):
        raise CorpusError(f"generation returned {tuple(ids.shape)}, expected {(n, length)}")
    if path is not None:
        with paths.atomic_path(path) as tmp:
            save_file({"input_ids": ids.contiguous()}, str(tmp))
        write_sidecar(path, {"model": cache_key, "n": n, "length": length, "seed": seed,
                             "openers": list(NEUTRAL_OPENERS), "temperature": 1.0})
    return ids
