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


def tidy_log(ax) -> None:
    """Log axes spanning less than a decade: four plain ticks instead of overlapping minor-tick labels."""
    import matplotlib.ticker as mt

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if axis.get_scale() == "log" and lim[0] > 0 and lim[1] / lim[0] < 10:
            axis.set_major_locator(mt.MaxNLocator(4))
            axis.set_major_formatter(mt.FormatStrFormatter("%.4g"))
            axis.set_minor_formatter(mt.NullFormatter())


def count_axis(ax, values, which: str) -> None:
    """A count axis ("x" or "y"): linear with integer ticks while the counts are small (all zero: one line at 0,
    not a symlog axis spanning +-0.05), symlog beyond."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    top = float(np.nanmax(v)) if np.isfinite(v).any() else 0.0
    if top < 10:
        getattr(ax, f"set_{which}lim")(-0.5, top + 0.5)
        getattr(ax, f"set_{which}ticks")(range(int(top) + 1))
    else:
        getattr(ax, f"set_{which}scale")("symlog", linthresh=1)


def rho_title(r: dict, label: str = "pooled", with_p: bool = True) -> str:
    """A figure title for a correlation dict (value, n, p_value); says why rho is undefined when it is."""
    import math

    if not math.isfinite(r["value"]):
        return rf"{label}: $\rho$ undefined ({r.get('reason') or 'one side constant'})"
    return rf"{label} $\rho$={r['value']:+.2f}" + (f", p={r['p_value']:.2f}" if with_p else "") + f" (n={r['n']})"
