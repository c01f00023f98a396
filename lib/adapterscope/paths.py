"""Where things live: the project root and its data/results/figures folders.

Pure module (stdlib only). The root is ``$ADAPTERSCOPE_HOME`` when set, else the nearest folder above the
current directory (or above this file) holding ``pyproject.toml`` with ``name = "adapterscope"``.
All generated bulk goes under ``data/`` (git-ignored); caches can be moved with ``$ADAPTERSCOPE_CACHE``.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _is_root(p: Path) -> bool:
    f = p / "pyproject.toml"
    try:
        return f.is_file() and 'name = "adapterscope"' in f.read_text()
    except OSError:
        return False


def project_root() -> Path:
    env = os.environ.get("ADAPTERSCOPE_HOME")
    if env:
        return Path(env).resolve()
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for p in (start, *start.parents):
            if _is_root(p):
                return p
    return Path.cwd()


def data_dir() -> Path:
    return project_root() / "data"


def cache_dir(kind: str) -> Path:
    """A cache folder (``models``, ``corpora``, ``neutral``, ...), created on demand."""
    base = os.environ.get("ADAPTERSCOPE_CACHE")
    root = Path(base) if base else data_dir() / "cache"
    d = root / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def results_dir() -> Path:
    return project_root() / "results"


def figures_dir() -> Path:
    return project_root() / "figures"


def runs_dir() -> Path:
    """Adapters, activation shards and other per-run artefacts."""
    return data_dir() / "runs"


def macros_dir() -> Path:
    return project_root() / "paper" / "generated"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), exchange) == 0


def replace_dir(new: Path, final: Path) -> None:
    """Put ``new`` (a folder, or a file) in place of ``final`` (which may exist): one atomic exchange where the
    system has it, so a reader (or a kill) never finds ``final`` missing or half-replaced; the old contents are
    deleted after."""
    new, final = Path(new), Path(final)
    if not final.exists():
        new.rename(final)
        return
    if not final.is_symlink() and _exchange(new, final):
        _remove(new)  # now holds the old contents
        return
    old = final.with_name(f".{final.name}.old")
    if old.exists() or old.is_symlink():
        _remove(old)
    final.rename(old)
    new.rename(final)
    _remove(old)


def _remove(p: Path) -> None:
    import shutil

    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()


def temp_beside(final: Path, tag: str) -> Path:
    """The hidden temporary ``.<name>.<tag>.tmp`` beside ``final``: :func:`atomic_path`'s naming with a fixed middle
    instead of a random one, for a writer that fills it over several calls and must find a killed run's leftovers
    again to replace them (``capture.ShardWriter``: ``tag="partial"``). Swap it in with :func:`replace_dir`."""
    final = Path(final)
    return final.with_name(f".{final.name}.{tag}.tmp")


@contextmanager
def atomic_path(final: Path, suffix: str = ""):
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Works for files and directories (whatever the block creates at the yielded path). Every atomic write of the
    project goes through here (or :func:`temp_beside` + :func:`replace_dir`), so a kill leaves only a hidden
    ``.<name>.*.tmp`` (and, where the system cannot exchange two paths, ``.<name>.old``)."""
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / ("payload" + suffix)
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target}")
        if target.is_dir() or (final.is_dir() and not final.is_symlink()):
            replace_dir(target, final)  # a folder, or a file taking a folder's place
        else:
            os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# hidden temporaries that atomic writes leave when the process is killed mid-write: atomic_path's and temp_beside's
# ``.<name>.*.tmp``, and replace_dir's ``.<name>.old`` (its two-rename fallback)
_TEMP_PATTERNS = (".*.tmp", ".*.old")
# what earlier versions left, no longer written but still cleaned, so that a run killed before an upgrade leaves no
# garbage after it: Crosscoder.save's and CrosscoderTrainer.save_checkpoint's ``.<name>.tmp-<hex>`` and
# capture.ShardWriter's ``.<name>.partial`` (both until #39), the old crosscoder folder swap's ``.<name>.old-<hex>``
_LEGACY_TEMP_PATTERNS = (".*.tmp-*", ".*.partial", ".*.old-*")


def _newest_mtime(p: Path) -> float:
    """The latest modification time of ``p`` or of anything under it."""
    t = p.lstat().st_mtime
    if p.is_dir() and not p.is_symlink():
        for q in p.rglob("*"):
            try:
                t = max(t, q.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return t


def _remove_stale(candidates, min_age_s: float) -> list[Path]:
    """Remove each candidate path unless anything in it (at any depth) changed within ``min_age_s``."""
    import time

    now, removed = time.time(), []
    for q in candidates:
        try:
            if now - _newest_mtime(q) < min_age_s:
                continue
            _remove(q)
            removed.append(q)
        except FileNotFoundError:
            continue
    return removed


def clean_stale_temporaries(min_age_s: float = 60.0) -> list[Path]:
    """Delete the hidden temporaries (``.<name>.*.tmp``, ``.<name>.old``, and those of earlier versions) that killed
    runs left under results/, figures/, paper/generated/ and data/runs/, and beside the PDF in paper/; one in which anything (at any depth) changed
    within ``min_age_s`` is kept (an interactive kernel may be writing it). Returns what was removed. The pipeline
    calls it under its lock."""
    removed = []
    tops = [(d, True) for d in (results_dir(), figures_dir(), macros_dir(), runs_dir())]
    tops.append((project_root() / "paper", False))  # the PDF copy's temporary sits beside paper/adapterscope.pdf
    for top, deep in tops:
        if not top.is_dir():
            continue
        for pat in _TEMP_PATTERNS + _LEGACY_TEMP_PATTERNS:
            removed += _remove_stale(sorted(top.rglob(pat) if deep else top.glob(pat)), min_age_s)
    return removed


def clean_temporaries_beside(final: Path, min_age_s: float = 60.0) -> list[Path]:
    """Delete the hidden temporaries that an interrupted ``atomic_path(final)`` left beside ``final``
    (``.<name>.*.tmp``, ``.<name>.old``), keeping any that changed within ``min_age_s``."""
    import glob

    final = Path(final)
    if not final.parent.is_dir():
        return []
    pats = (f".{glob.escape(final.name)}.*.tmp", f".{glob.escape(final.name)}.old")
    return _remove_stale(sorted({q for pat in pats for q in final.parent.glob(pat)}), min_age_s)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)
