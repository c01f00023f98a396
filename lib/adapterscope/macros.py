"""Paper macros of statistics, written alike by every summary notebook: a number that is NaN prints as a dash,
and a statistic dict (value, n, p_value, ci_low, ci_high, reason) gives ``<Name>``, ``<Name>N``, ``<Name>P``,
``<Name>Lo``, ``<Name>Hi`` and ``<Name>Why`` (the reason it is undefined, or empty)."""

from __future__ import annotations

import math
from typing import Any

from . import results

DASH = r"\text{--}"
# what the findings ledger reads of a statistic dict (paper/findings.yml); ``reason`` only when undefined
LEDGER_KEYS = ("value", "n", "p_value", "p_method", "ci_low", "ci_high", "reason")


def ledger_view(r: dict, extra: tuple[str, ...] = (), require: tuple[str, ...] = ()) -> dict:
    """The findings ledger's view of a statistic dict: the :data:`LEDGER_KEYS` (and ``extra`` keys) it has.
    ``require``: keys that must be present (a KeyError naming them otherwise), for producers whose statistics
    always carry a test."""
    missing = [k for k in require if k not in r]
    if missing:
        raise KeyError(f"statistic lacks {missing} (has {sorted(r)})")
    return {k: r[k] for k in (*LEDGER_KEYS, *extra) if k in r}


def key(s: str) -> str:
    """A macro key from a snake/kebab name: ``rho_ratio_kl`` -> ``RhoRatioKl``."""
    return "".join(w.capitalize() for w in s.replace("-", "_").split("_"))


def number(run: results.Run, name: str, value: Any, digits: int = 3) -> str:
    """``run.macro`` of a number; NaN (not computable in this profile) prints as a dash, also in math mode."""
    if isinstance(value, float) and math.isnan(value):
        return run.macro(name, DASH, raw=True)
    return run.macro(name, value, digits=digits)


def stat(run: results.Run, name: str, f: dict, digits: int = 2) -> None:
    """The macros of one statistic dict (only the fields it has, and always ``Why``)."""
    number(run, name, f["value"], digits=digits)
    for suffix, k in (("N", "n"), ("P", "p_value"), ("Lo", "ci_low"), ("Hi", "ci_high")):
        if k in f:
            number(run, name + suffix, f[k], digits=digits if suffix != "N" else 3)
    run.macro(name + "Why", results.tex_escape(str(f.get("reason", ""))), raw=True)
