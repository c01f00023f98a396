"""Figures: one seaborn style for the project; every figure saved as PDF (for LaTeX) and PNG."""

from __future__ import annotations

from pathlib import Path

from . import paths


def setup() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    sns.set_theme(context="paper", style="whitegrid", palette="colorblind", font_scale=1.1)
    matplotlib.rcParams.update({"figure.dpi": 110, "savefig.dpi": 200, "savefig.bbox": "tight",
                                "pdf.fonttype": 42, "axes.titlesize": "medium"})


def save(fig, notebook: str, name: str) -> list[str]:
    """Write ``figures/<notebook>/<name>.{pdf,png}`` atomically; returns the paths relative to the root."""
    out = []
    for ext in ("pdf", "png"):
        target = paths.figures_dir() / notebook / f"{name}.{ext}"
        with paths.atomic_path(target, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, format=ext)
        out.append(str(target.relative_to(paths.project_root())))
    return out
