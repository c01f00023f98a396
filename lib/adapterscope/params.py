"""Notebook parameters: typed literals in one tagged cell, strictly checked overrides, YAML profiles.

Pure module (stdlib + PyYAML). papermill only *warns* about unknown parameters; here a typo'd or mistyped
override fails the run. Two entry points share one rule (:func:`validate`):

* the pipeline calls :func:`parse_parameters_cell` on the notebook source and validates overrides before a
  kernel starts;
* inside the notebook, the first cell after the parameters cell calls ``P = check(globals())``, which reads the
  kernel's input history (``In``): the parameters cell must be the notebook's first code cell, and papermill's
  injected cell (source starting ``# Parameters``) comes right after it.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

PAPERMILL_HEADER = "# Parameters"


class ParameterError(ValueError):
    """An override that the notebook does not declare, or of the wrong type."""


def _literals(source: str, what: str) -> dict[str, Any]:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:  # pragma: no cover - a broken notebook
        raise ParameterError(f"{what} is not valid Python: {e}") from e
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParameterError(
                f"{what} may hold only `name = literal` lines; found: {ast.unparse(node)[:80]!r}. "
                "Move derived values below the parameters cell."
            )
        try:
            out[node.targets[0].id] = ast.literal_eval(node.value)
        except ValueError as e:
            raise ParameterError(
                f"{what}: {node.targets[0].id} must be a literal (str, int, float, bool, list, dict, None), "
                f"not {ast.unparse(node.value)!r}"
            ) from e
    return out


def parse_parameters_cell(notebook_py: str | Path) -> dict[str, Any]:
    """The declared defaults of a jupytext percent notebook (its one ``tags=["parameters"]`` cell)."""
    text = Path(notebook_py).read_text()
    cells = text.split("\n# %%")
    tagged = [c for c in cells if c.split("\n", 1)[0].find('"parameters"') >= 0]
    if len(tagged) != 1:
        raise ParameterError(f"{notebook_py} must have exactly one parameters cell, found {len(tagged)}")
    body = tagged[0].split("\n", 1)[1] if "\n" in tagged[0] else ""
    return _literals(body, f"{notebook_py}: parameters cell")


def _type_ok(default: Any, value: Any) -> bool:
    if default is None:
        return value is None or isinstance(value, (str, int, float))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        if default:
            return all(_type_ok(default[0], v) for v in value)
        return True
    if isinstance(default, dict):
        return isinstance(value, dict)
    return type(value) is type(default)


def validate(declared: Mapping[str, Any], overrides: Mapping[str, Any], where: str = "notebook") -> dict[str, Any]:
    """Merge ``overrides`` into ``declared``; raise :class:`ParameterError` on unknown names or wrong types."""
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, list(declared), n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ParameterError(
            f"{where}: unknown parameter(s) {', '.join(hints)}. Declared: {', '.join(sorted(declared))}."
        )
    merged = dict(declared)
    for k, v in overrides.items():
        d = declared[k]
        if not _type_ok(d, v):
            raise ParameterError(
                f"{where}: parameter {k!r} must be {type(d).__name__} like its default {d!r}, "
                f"got {type(v).__name__} {v!r}"
            )
        if isinstance(d, float) and isinstance(v, int):
            v = float(v)
        merged[k] = v
    return merged


def check(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Inside a notebook: validate what papermill injected against the parameters cell; return the parameters.

    Outside IPython (the .py run as a script) nothing can be injected, so the declared values are returned."""
    history = namespace.get("In")
    if not history or len(history) < 2:
        return {}
    declared = _literals(history[1], "the parameters cell (the first code cell)")
    overrides: dict[str, Any] = {}
    if len(history) > 2 and history[2].lstrip().startswith(PAPERMILL_HEADER):
        overrides = _literals(history[2], "papermill's injected cell")
    merged = validate(declared, overrides)
    for k in declared:  # what the kernel holds must be what was checked
        if k in namespace and namespace[k] != merged[k]:
            raise ParameterError(f"parameter {k!r} changed between injection and check")
    return merged


def load_profile(path: str | Path) -> dict[str, Any]:
    """A papermill profile (YAML): ``grid`` (what runs) and per-notebook parameter overrides."""
    import yaml

    p = Path(path)
    if not p.is_file():
        avail = sorted(q.stem for q in p.parent.glob("*.yml")) or ["none"]
        raise FileNotFoundError(f"profile {p.stem!r} not found; available: {', '.join(avail)} ({p.parent})")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ParameterError(f"profile {p} is not valid YAML{at} ({getattr(e, 'problem', None) or e}); fix it "
                             f"(`git checkout -- {p.name}` in {p.parent} restores a committed profile)") from None
    if not isinstance(data, dict):
        raise ParameterError(f"profile {p} must be a mapping")
    known = {"description", "grid", "notebooks", "resources"}
    extra = set(data) - known
    if extra:
        raise ParameterError(f"profile {p}: unknown top-level key(s) {sorted(extra)}; allowed: {sorted(known)}")
    return data


def run_key(*parts: object) -> str:
    """A file-safe run id from parameter values, e.g. ``smollm2-135m__meditations__none__s0``."""
    import re

    clean = [re.sub(r"[^A-Za-z0-9.=+-]+", "-", str(p)).strip("-") or "x" for p in parts]
    return "__".join(clean)


def dose_tag(level: Mapping[str, Any]) -> str:
    """The tag of a training-dose level (01_finetune overrides): ``{steps: 200, lr: 0.002}`` -> ``dose-n200-lr0.002``;
    steps first, then lr, then any other key alphabetically as name + value."""
    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    order = [k for k in ("steps", "lr") if k in level] + sorted(k for k in level if k not in ("steps", "lr"))
    short = {"steps": "n", "lr": "lr"}
    return "dose-" + "-".join(short.get(k, k) + fmt(level[k]) for k in order)


def cell_run_id(model: str, corpus: str, layer_control: str, seed: int, dose_tag: str = "") -> str:
    """The run id of a grid cell's notebooks, e.g. ``smollm2-135m__meditations__none__s0``; a training-dose
    cell appends its tag (``...__s0__dose-n200-lr0.002``), and an empty tag leaves the main grid's id as it is."""
    return run_key(model, corpus, layer_control, f"s{seed}", *([dose_tag] if dose_tag else []))
