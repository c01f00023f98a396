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


@contextmanager
def atomic_path(final: Path, suffix: str = ""):
    """Yield a temporary path beside ``final``; rename it onto ``final`` only if the block succeeds.

    Works for files and directories (whatever the block creates at the yielded path)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    target = tmp / ("payload" + suffix)
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target}")
        if final.is_dir() and not final.is_symlink():
            import shutil

            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            final.rename(old)
            target.rename(final)
            shutil.rmtree(old)
        else:
            os.replace(target, final)
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: Path, text: str) -> Path:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)
