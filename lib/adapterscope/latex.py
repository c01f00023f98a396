"""LaTeX tables for the paper, written atomically under ``paper/generated/tables/``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from . import paths


def tabular(colspec: str, header: str, rows: Iterable[str]) -> str:
    """A booktabs ``tabular``: ``header`` and each row are cells joined by ``&``, without the trailing ``\\\\``;
    a row that is a bare LaTeX command (``\\addlinespace``, ``\\midrule``) is kept as it is."""
    lines = [rf"\begin{{tabular}}{{{colspec}}}", r"\toprule", header + r" \\", r"\midrule"]
    lines += [r if r.startswith("\\") and "&" not in r else r + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(name: str, colspec: str, header: str, rows: Iterable[str]) -> Path:
    """``paper/generated/tables/<name>.tex`` (see :func:`tabular`); returns its path."""
    return paths.write_text_atomic(paths.macros_dir() / "tables" / f"{name}.tex", tabular(colspec, header, rows))
