"""One results JSON per notebook run: values plus provenance; LaTeX macros; content digests.

Pure module (stdlib only; library versions are read through importlib.metadata).

Layout (all generated, git-ignored)::

    results/<notebook>/<run_id>.json        values + provenance
    paper/generated/<notebook>/<run_id>.tex  \\newcommand macros (one per reported number)
    data/runs/<notebook>/<run_id>/           heavy artefacts (adapters, shards), each with a sidecar JSON

A later notebook reads an earlier one only through :func:`load` / :func:`find` / :func:`artefact_dir`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping

from . import paths

TRACKED_LIBRARIES = (
    "torch", "transformers", "peft", "nnsight", "accelerate", "safetensors", "numpy", "scipy",
    "pandas", "matplotlib", "seaborn", "papermill", "jupytext", "gguf",
)
_DIGITS = "Zero One Two Three Four Five Six Seven Eight Nine".split()


# ----------------------------------------------------------------------------------------------- digests
def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Digest of a file, or of a directory's files (relative names and contents), order-independent."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode())


# -------------------------------------------------------------------------------------------- provenance
def git_state(root: Path | None = None) -> dict[str, Any]:
    root = root or paths.project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "lib", "notebooks", "pyproject.toml", "requirements.lock"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"sha": None, "dirty": None}


def library_versions(names: Iterable[str] = TRACKED_LIBRARIES) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def device_description(device: str) -> str:
    desc = f"{device}; {platform.machine()}; {os.cpu_count()} logical CPUs"
    if str(device).startswith("cuda"):
        try:
            import torch

            desc += f"; {torch.cuda.get_device_name(torch.device(device))}"
        except Exception:  # pragma: no cover - no CUDA here
            pass
    return desc


# ------------------------------------------------------------------------------------------------ macros
def tex_name(*parts: str) -> str:
    """A LaTeX command name from free-form parts: letters only, CamelCase, digits spelled out.

    >>> tex_name("02_capture", "smollm2-135m", "KL")
    'ZeroTwoCaptureSmollmTwoOneThreeFiveMKL'
    """
    words: list[str] = []
    for part in parts:
        for tok in re.findall(r"[A-Za-z]+|\d", str(part)):
            words.append(_DIGITS[int(tok)] if tok.isdigit() else tok[:1].upper() + tok[1:])
    name = "".join(words)
    if not name:
        raise ValueError(f"no letters or digits in macro parts {parts!r}")
    return name


def format_number(value: Any, digits: int = 3) -> str:
    """Significant-figure formatting for the paper (thousands get a thin space; NaN shows as --)."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}".replace(",", "\\,")
    v = float(value)
    if math.isnan(v):
        return "--"
    if v == 0:
        return "0"
    mag = math.floor(math.log10(abs(v)))
    decimals = max(0, digits - 1 - mag)
    s = f"{v:,.{decimals}f}"
    return s.replace(",", "\\,")


def tex_escape(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(c, c) for c in s)


# ------------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    """A notebook run: collects inputs, values, macros and figures; :meth:`write` makes the results JSON.

    ``run_id`` names the run inside its notebook (e.g. ``smollm2-135m__meditations__s0``)."""

    notebook: str
    run_id: str
    params: dict[str, Any]
    seed: int | None = None
    device: str = "cpu"
    inputs: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    macros: dict[str, str] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.=+-]+", self.run_id):
            raise ValueError(f"run_id {self.run_id!r} may contain only letters, digits and _.=+-")

    def add_input(self, name: str, path_or_digest: str | Path) -> str:
        """Record an input by content digest (a path is digested; a string of 64 hex digits is taken as is)."""
        s = str(path_or_digest)
        digest = s if re.fullmatch(r"[0-9a-f]{64}", s) else sha256_tree(s)
        self.inputs[name] = digest
        return digest

    def macro(self, key: str, value: Any, digits: int = 3, raw: bool = False) -> str:
        """Register ``\\<Notebook><RunId><Key>`` for the paper; returns the macro name."""
        name = tex_name(self.notebook, self.run_id, key)
        self.macros[name] = str(value) if raw else format_number(value, digits)
        return name

    def provenance(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "run_id": self.run_id,
            "git": git_state(),
            "params": self.params,
            "params_digest": sha256_json(self.params),
            "inputs": self.inputs,
            "libraries": library_versions(),
            "device": device_description(self.device),
            "seed": self.seed,
            "started_utc": datetime.fromtimestamp(self.started, timezone.utc).isoformat(),
            "wall_time_s": round(time.time() - self.started, 3),
            "content_digest": os.environ.get("ADAPTERSCOPE_CONTENT_DIGEST"),
            # "pipeline" (papermill, headless) or "interactive" (JupyterLab, `make lab`, any other kernel)
            "executor": os.environ.get("ADAPTERSCOPE_EXECUTOR", "interactive"),
            "argv": sys.argv[:1],
        }

    def write(self) -> Path:
        """Write the results JSON and the macro file atomically; returns the JSON path."""
        record = {"values": _jsonable(self.values), "macros": self.macros, "figures": self.figures,
                  "provenance": self.provenance()}
        out = results_path(self.notebook, self.run_id)
        paths.write_text_atomic(out, json.dumps(record, indent=1, sort_keys=False, allow_nan=True) + "\n")
        lines = [f"% generated by {self.notebook} run {self.run_id}; do not edit"]
        lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted(self.macros.items())]
        paths.write_text_atomic(paths.macros_dir() / self.notebook / f"{self.run_id}.tex", "\n".join(lines) + "\n")
        return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):
        return x.tolist()
    if hasattr(x, "item"):
        return x.item()
    return x


def results_path(notebook: str, run_id: str) -> Path:
    return paths.results_dir() / notebook / f"{run_id}.json"


def artefact_dir(notebook: str, run_id: str) -> Path:
    return paths.runs_dir() / notebook / run_id


def load(notebook: str, run_id: str) -> dict[str, Any]:
    p = results_path(notebook, run_id)
    if not p.is_file():
        raise FileNotFoundError(
            f"no results for {notebook} run {run_id!r} ({p}); run it first, e.g. "
            f"`make notebook NB={notebook} ARGS='...'` or `make paper`"
        )
    return json.loads(p.read_text())


def find(notebook: str, **match: Any) -> list[dict[str, Any]]:
    """All results of ``notebook`` whose parameters equal ``match`` (sorted by run id)."""
    d = paths.results_dir() / notebook
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        rec = json.loads(p.read_text())
        params = rec["provenance"]["params"]
        if all(params.get(k) == v for k, v in match.items()):
            out.append(rec)
    return out


def write_sidecar(artefact: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<artefact>.meta.json`` (file) or ``<dir>/meta.json`` (directory): what made this artefact."""
    a = Path(artefact)
    side = a / "meta.json" if a.is_dir() else a.with_name(a.name + ".meta.json")
    paths.write_text_atomic(side, json.dumps(_jsonable(dict(meta)), indent=1, default=str) + "\n")
    return side
