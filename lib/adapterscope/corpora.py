"""Corpora: the named corpora, user sources, deterministic splits, and the neutral eval set.

Named corpora (:data:`NAMED`; :func:`provenance_table` lists them with their sources and licences):
  ``meditations``, ``seneca``   Marcus Aurelius / Seneca quotes read from the SQLite file that the ``kathekon``
                                package installs (the text is read at run time and never committed).
  ``stdlib-docs``               docstrings of a fixed list of pure-Python standard-library modules, read statically
                                (``ast``) from the running interpreter's own source files.
  ``stdlib-code``               the code and comments (docstrings removed) of a second, disjoint list of modules.
  ``licences``                  licence files shipped in the ``.dist-info`` folders of the packages pinned in
                                ``requirements.lock``, paragraphs deduplicated.
  ``dtc-ads``, ``instructions``, ``weather``, ``recipes``
                                seeded generators written in this project (:mod:`adapterscope.textgen`): no
                                offline source of such text exists.
  ``file:PATH``                 .txt (documents separated by blank lines), .jsonl/.json (``text`` field, or
                                Alpaca ``instruction``/``input``/``output`` records).
  ``url:URL[#sha256=HEX]``      downloaded once into ``data/cache/corpora/`` and checksummed (pinned if given).
  ``hf:NAME[:SPLIT]``           a Hugging Face dataset (needs the ``datasets`` package and ADAPTERSCOPE_ALLOW_HUB=1),
                                e.g. ``hf:tatsu-lab/alpaca``.

Every named corpus is the same list of documents on every run in the same environment: the real-text ones read
sorted, fixed inputs (the digest in their provenance covers the files read, and the Python or package versions are
recorded); none depends on process state (the stdlib corpora parse source files rather than introspect live
modules, which a notebook kernel patches, e.g. ipykernel replaces ``builtins.input``).

Splits are by a hash of each document's text, so they do not depend on order or on the other documents.
"""

from __future__ import annotations

import ast
import csv
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sqlite3
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import paths
from .results import sha256_bytes, sha256_file, write_sidecar

NAMED = ("meditations", "seneca", "dtc-ads", "instructions", "stdlib-docs", "stdlib-code", "licences", "weather",
         "recipes")
KATHEKON_AUTHORS = {"meditations": "Marcus Aurelius", "seneca": "Seneca"}
GENERATED = ("dtc-ads", "instructions", "weather", "recipes")  # names of adapterscope.textgen.GENERATORS
GENERATED_SIZE = 800  # documents drawn from a seeded generator

# Pure-Python standard-library modules that current CPython releases ship (one that is missing is skipped and named in
# the provenance), resolved inside the interpreter's stdlib folder
# (never through sys.path, which a local file could shadow). The two lists are disjoint, so the two corpora share no
# text: stdlib-docs takes the docstrings of the first, stdlib-code the code and comments of the second.
STDLIB_DOC_MODULES = (
    "argparse", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv", "dataclasses", "difflib",
    "enum", "fractions", "functools", "gzip", "heapq", "hmac", "ipaddress", "json", "json.decoder", "json.encoder",
    "logging", "logging.handlers", "pathlib", "pprint", "queue", "random", "shlex", "shutil", "statistics", "string",
    "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest.case", "urllib.parse", "uuid",
    "warnings", "weakref", "zipfile")
STDLIB_CODE_MODULES = (
    "bdb", "cmd", "code", "colorsys", "configparser", "email.feedparser", "email.utils", "filecmp", "fileinput",
    "fnmatch", "getopt", "gettext", "glob", "graphlib", "http.cookies", "linecache", "mimetypes", "netrc", "optparse",
    "pkgutil", "plistlib", "pstats", "quopri", "reprlib", "sched", "selectors", "shelve", "socketserver", "tabnanny",
    "tokenize", "trace", "traceback", "wave", "zipapp")
LICENCE_FILE = re.compile(r"(?:^|/)(?:licen[cs]e|copying|notice|copyright)[^/]*$", re.I)
DOC_MIN_CHARS, DOC_MAX_CHARS = 400, 1600  # real-text sources are cut into documents of about this many characters

# What :func:`provenance_table` prints for each named corpus (documents and characters are counted at run time).
CORPUS_INFO: dict[str, dict[str, str]] = {
    "meditations": {"kind": "kathekon", "source": "Marcus Aurelius quotes in the SQLite file of the kathekon package",
                    "licence": "kathekon is MIT-licensed; quotes of an ancient author in English translation, read at "
                               "run time, never committed"},
    "seneca": {"kind": "kathekon", "source": "Seneca quotes in the SQLite file of the kathekon package",
               "licence": "as meditations"},
    "dtc-ads": {"kind": "generator", "source": "adapterscope.textgen.generate_dtc_ads (seeded)",
                "licence": "written for this project (MIT)"},
    "instructions": {"kind": "generator",
                     "source": "adapterscope.textgen.generate_instructions (seeded, Alpaca format)",
                     "licence": "written for this project (MIT)"},
    "stdlib-docs": {"kind": "python-stdlib", "source": f"docstrings of {len(STDLIB_DOC_MODULES)} pure-Python standard-"
                                                       "library modules of the running interpreter (parsed with ast)",
                    "licence": "CPython source, PSF License 2.0; read at run time, never committed"},
    "stdlib-code": {"kind": "python-stdlib", "source": f"code and comments (docstrings removed) of "
                                                       f"{len(STDLIB_CODE_MODULES)} other pure-Python standard-library "
                                                       "modules of the running interpreter",
                    "licence": "CPython source, PSF License 2.0; read at run time, never committed"},
    "licences": {"kind": "licence-files", "source": "LICENSE/COPYING/NOTICE files in the .dist-info folders of the "
                                                    "packages pinned in requirements.lock, paragraphs deduplicated",
                 "licence": "each file under its own terms (licence texts may be copied verbatim); read at run time, "
                            "never committed"},
    "weather": {"kind": "generator", "source": "adapterscope.textgen.generate_weather (seeded weather bulletins)",
                "licence": "written for this project (MIT)"},
    "recipes": {"kind": "generator", "source": "adapterscope.textgen.generate_recipes (seeded recipes)",
                "licence": "written for this project (MIT)"},
}

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


# ------------------------------------------------------------------------------ real text read at run time
def _split_long(text: str, hi: int) -> list[str]:
    """``text`` in pieces of at most ``hi`` characters, cut at blank lines, then at line ends, then at spaces."""
    if len(text) <= hi:
        return [text]
    if "\n" not in text:  # one long line: cut at the last space before hi (or at hi)
        out = []
        while len(text) > hi:
            cut = text.rfind(" ", 0, hi + 1)
            cut = cut if cut > 0 else hi
            out.append(text[:cut].rstrip())
            text = text[cut:].lstrip()
        return out + ([text] if text else [])
    blank = re.search(r"\n[ \t]*\n", text) is not None
    sep = "\n\n" if blank else "\n"
    out, cur = [], ""
    for part in (re.split(r"\n[ \t]*\n", text) if blank else text.split("\n")):
        for piece in _split_long(part, hi):
            if cur and len(cur) + len(sep) + len(piece) > hi:
                out.append(cur)
                cur = ""
            cur = f"{cur}{sep}{piece}" if cur else piece
    if cur:
        out.append(cur)
    return [x for x in out if x.strip()]


def pack_units(units: Sequence[str], lo: int = DOC_MIN_CHARS, hi: int = DOC_MAX_CHARS) -> list[str]:
    """Consecutive text units (paragraphs, docstrings, definitions) joined into documents of ``lo``..``hi``
    characters where the units allow; a unit longer than ``hi`` is cut (:func:`_split_long`)."""
    out: list[str] = []
    cur = ""
    for unit in units:
        for piece in _split_long(unit.strip("\n").rstrip(), hi):
            if cur and len(cur) + 2 + len(piece) > hi:
                out.append(cur)
                cur = ""
            cur = f"{cur}\n\n{piece}" if cur else piece
            if len(cur) >= lo:
                out.append(cur)
                cur = ""
    if cur:
        out.append(cur)
    return out


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _stdlib_sources(modules: Sequence[str]) -> tuple[list[tuple[str, str]], list[str], str]:
    """``(module, source)`` for each module found in the stdlib folder (in the given order), the missing ones, and a
    sha256 over the relative paths and contents read."""
    root = stdlib_dir()
    found, missing, h = [], [], hashlib.sha256()
    for mod in modules:
        rel = mod.replace(".", "/")
        f = next((p for p in (root / f"{rel}.py", root / rel / "__init__.py") if p.is_file()), None)
        if f is None:
            missing.append(mod)
            continue
        data = f.read_bytes()
        h.update(f"{f.relative_to(root).as_posix()}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        found.append((mod, data.decode("utf-8", errors="replace")))
    if not found:
        raise CorpusError(f"none of the standard-library source files were found under {root}: this Python ships "
                          "without its .py sources (install the full interpreter, or use file:PATH)")
    return found, missing, h.hexdigest()


def _stdlib_provenance(part: str, modules: Sequence[str], missing: list[str], digest: str,
                       docs: list[str]) -> dict[str, Any]:
    return {"kind": "python-stdlib", "part": part, "source": str(stdlib_dir()),
            "python": platform.python_version(), "implementation": sys.implementation.name,
            "modules": len(modules) - len(missing), "missing": missing, "sha256": digest,
            "documents": len(docs), "characters": sum(map(len, docs))}


def _public(name: str) -> bool:
    return not name.startswith("_") or name == "__init__"


@functools.lru_cache(maxsize=256)  # a pure function of its arguments: parsing is most of a load's time
def _docstring_units(mod: str, source: str) -> tuple[str, ...]:
    """The module's docstring, then those of its public classes, functions and methods, in source order, each headed
    by its qualified name."""
    tree = ast.parse(source)
    units = []

    def add(qual: str, node: ast.AST) -> None:
        doc = ast.get_docstring(node, clean=True)
        if doc and doc.strip():
            units.append(f"{qual}\n\n{doc.strip()}")

    add(mod, tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _public(node.name):
            add(f"{mod}.{node.name}", node)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public(sub.name):
                        add(f"{mod}.{node.name}.{sub.name}", sub)
    return tuple(units)


def _stdlib_docs() -> tuple[list[str], dict[str, Any]]:
    found, missing, digest = _stdlib_sources(STDLIB_DOC_MODULES)
    seen: set[str] = set()
    docs = []
    for mod, src in found:
        units = []
        for u in _docstring_units(mod, src):
            body = u.split("\n\n", 1)[1]
            if body not in seen:  # a docstring repeated verbatim (e.g. an alias) is kept once
                seen.add(body)
                units.append(u)
        docs.extend(pack_units(units))
    docs = list(dict.fromkeys(docs))
    return docs, _stdlib_provenance("docstrings", STDLIB_DOC_MODULES, missing, digest, docs)


def _docstring_lines(tree: ast.Module, lines: list[str]) -> tuple[set[int], dict[int, str]]:
    """1-based line numbers of docstrings that stand on lines of their own, and ``...`` placeholders for bodies
    that were nothing but a docstring (keyed by the docstring's first line)."""
    drop: set[int] = set()
    placeholder: dict[int, str] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
            continue
        first = node.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            continue
        a, b = first.lineno, first.end_lineno or first.lineno
        if lines[a - 1][:first.col_offset].strip() or lines[b - 1][first.end_col_offset:].strip():
            continue  # shares a line with other code (``def f(): "doc"``): leave it
        drop.update(range(a, b + 1))
        if len(node.body) == 1 and not isinstance(node, ast.Module):
            placeholder[a] = " " * first.col_offset + "..."
    return drop, placeholder


@functools.lru_cache(maxsize=256)
def _code_units(source: str) -> tuple[str, ...]:
    """Top-level statements with the comments above them, docstrings removed; a class longer than a document is cut
    into its header and its methods."""
    tree = ast.parse(source)
    lines = source.splitlines()
    drop, placeholder = _docstring_lines(tree, lines)

    def text(a: int, b: int) -> str:  # 1-based inclusive line range, docstrings removed, blank runs collapsed
        kept = [placeholder.get(i, lines[i - 1].rstrip()) for i in range(a, b + 1) if i not in drop or i in placeholder]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")

    def start(node: ast.stmt) -> int:
        return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])

    units, prev = [], 0
    body = [n for n in tree.body if n.lineno not in drop]
    for node in body:
        a, b = prev + 1, node.end_lineno or node.lineno
        if isinstance(node, ast.ClassDef) and len(text(a, b)) > DOC_MAX_CHARS and len(node.body) > 1:
            inner = [n for n in node.body if n.lineno not in drop]
            units.append(text(a, start(inner[0]) - 1) if start(inner[0]) > a else "")
            p = start(inner[0]) - 1
            for sub in inner:
                units.append(text(p + 1, sub.end_lineno or sub.lineno))
                p = sub.end_lineno or sub.lineno
        else:
            units.append(text(a, b))
        prev = b
    if prev < len(lines):
        units.append(text(prev + 1, len(lines)))
    return tuple(u for u in units if u.strip())


def _stdlib_code() -> tuple[list[str], dict[str, Any]]:
    found, missing, digest = _stdlib_sources(STDLIB_CODE_MODULES)
    docs = []
    for _, src in found:
        docs.extend(pack_units(_code_units(src)))
    docs = list(dict.fromkeys(docs))  # a few short chunks (e.g. the same import block) recur across modules
    return docs, _stdlib_provenance("code", STDLIB_CODE_MODULES, missing, digest, docs)


def lock_file() -> Path:
    return paths.project_root() / "requirements.lock"


def _pinned(lock: Path) -> list[tuple[str, str]]:
    out = []
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, ver = line.split("==", 1)
            out.append((re.sub(r"[-_.]+", "-", name.split("[", 1)[0].strip()).lower(), ver.split(";", 1)[0].strip()))
    return sorted(set(out))


def _name_version(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    """Normalised name and version from the METADATA header (read directly: the email parser behind
    ``dist.metadata`` took most of a second over a full environment)."""
    head = (dist.read_text("METADATA") or dist.read_text("PKG-INFO") or "").split("\n\n", 1)[0]
    name = re.search(r"^Name:[ \t]*(\S.*?)\s*$", head, re.M)
    version = re.search(r"^Version:[ \t]*(\S.*?)\s*$", head, re.M)
    return (re.sub(r"[-_.]+", "-", name[1]).lower() if name else "", version[1] if version else "")


def _licences() -> tuple[list[str], dict[str, Any]]:
    lock = lock_file()
    if not lock.is_file():
        raise CorpusError(f"the licences corpus reads the packages pinned in {lock}, which is missing; run from the "
                          "project folder (or set ADAPTERSCOPE_HOME)")
    installed: dict[str, tuple[importlib.metadata.Distribution, str]] = {}
    for dist in importlib.metadata.distributions():  # one scan of sys.path; the first of a name wins, as in import
        name, version = _name_version(dist)
        installed.setdefault(name, (dist, version))
    seen: set[str] = set()
    units, files, missing, mismatched, versions = [], 0, [], {}, {}
    h = hashlib.sha256()
    for name, pinned in _pinned(lock):
        if name not in installed:
            missing.append(name)
            continue
        dist, versions[name] = installed[name]
        if versions[name] != pinned:
            mismatched[name] = versions[name]
        record = csv.reader((dist.read_text("RECORD") or "").splitlines())
        rels = sorted({row[0] for row in record if row and ".dist-info/" in row[0] and LICENCE_FILE.search(row[0])})
        for rel in rels:
            p = Path(dist.locate_file(rel))
            if not p.is_file():
                continue
            data = p.read_bytes()
            files += 1
            h.update(f"{name}/{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode())
            text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\f", "\n")
            for para in re.split(r"\n\s*\n", text):
                para = "\n".join(line.rstrip() for line in para.strip("\n").splitlines())
                key = " ".join(para.split())
                if key and key not in seen:  # the same MIT / Apache / BSD paragraph in many packages: kept once
                    seen.add(key)
                    units.append(para)
    docs = list(dict.fromkeys(pack_units(units)))  # one stream in package order: a short licence joins its neighbours
    if not docs:
        raise CorpusError(f"no licence files were found for the packages pinned in {lock}: install them (make venv)")
    return docs, {"kind": "licence-files", "source": str(lock), "lock_sha256": sha256_file(lock),
                  "packages": len(versions), "missing": missing, "version_differs_from_lock": mismatched,
                  "files": files, "paragraphs": len(seen), "sha256": h.hexdigest(), "documents": len(docs),
                  "characters": sum(map(len, docs))}


REAL_TEXT = {"stdlib-docs": _stdlib_docs, "stdlib-code": _stdlib_code, "licences": _licences}


def raw_documents(name: str, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """The documents of a corpus source, and a description of where they came from."""
    if name in KATHEKON_AUTHORS:
        db = kathekon_db()
        return _kathekon(KATHEKON_AUTHORS[name]), {"kind": "kathekon", "author": KATHEKON_AUTHORS[name],
                                                   "db_sha256": sha256_file(db)}
    if name in REAL_TEXT:
        return REAL_TEXT[name]()
    if name in GENERATED:
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


def provenance_table(names: Sequence[str] = NAMED, seed: int = 0, tokenizer=None) -> list[dict[str, Any]]:
    """One row per named corpus for the paper and the docs: name, kind, source, licence, documents, characters,
    sha256 (the corpus digest of :func:`load_corpus`) and the recorded provenance; with a ``tokenizer``, also
    ``tokens`` (the documents' tokens without special tokens). Reads every corpus (about 2 s for all)."""
    rows = []
    for name in names:
        if name not in CORPUS_INFO:
            raise CorpusError(f"{name!r} is not a named corpus: use one of {', '.join(NAMED)}")
        docs, source = raw_documents(name, seed=seed)
        docs = list(dict.fromkeys(d for d in docs if d.strip()))
        row = {"name": name, **CORPUS_INFO[name], "documents": len(docs), "characters": sum(map(len, docs)),
               "sha256": _digest(docs), "provenance": source}
        if tokenizer is not None:
            row["tokens"] = sum(len(ids) for ids in tokenizer(docs, add_special_tokens=False)["input_ids"])
        rows.append(row)
    return rows


def provenance_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`provenance_table` rows as a Markdown table."""
    cols = ["name", "kind", "source", "licence", "documents", "characters"]
    cols += ["tokens"] if rows and "tokens" in rows[0] else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"`{r[c]}`" if c == "name" else f"{r[c]:,}" if isinstance(r[c], int)
                                       else str(r[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


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
    return Corpus(name=name, train=train, heldout=held, digest=_digest(docs), source=source)


def _digest(docs: Sequence[str]) -> str:
    """sha256 over the set of documents (order- and duplicate-independent)."""
    return sha256_bytes("\n".join(sorted(hashlib.sha256(d.encode()).hexdigest() for d in set(docs))).encode())


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
