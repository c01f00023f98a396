"""One results JSON per notebook run: values plus provenance; LaTeX macros; content digests.

Pure module (stdlib only; library versions are read through importlib.metadata).

Layout (all generated, git-ignored)::

    results/<notebook>/<run_id>.json        values + provenance
    paper/generated/<notebook>/<run_id>.tex  \\newcommand macros (one per reported number)
    data/runs/<notebook>/<run_id>/           heavy artefacts (adapters, shards), each with a sidecar JSON

A later notebook reads an earlier one only through :func:`load` / :func:`find` / :func:`artefact_dir`.

Each results JSON records the digest of every artefact its run left in its artefact folder
(``provenance.outputs``). The pipeline re-checks them before it skips a run, and :meth:`Run.add_input` checks an
upstream artefact against its run's record, so an adapter or shard that a killed run half-replaced, or that was
damaged on disk, is refused with the command that remakes it instead of being read.
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


class ResultsError(ValueError):
    """A results record or artefact that cannot be trusted: the message names the file and the fix."""


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
        """Record an input by content digest (a path is digested; a string of 64 hex digits is taken as is).

        A path inside another run's artefact folder must match that run's recorded output digest
        (:func:`check_artefact`): a damaged or half-replaced upstream artefact raises :class:`ResultsError`."""
        s = str(path_or_digest)
        if re.fullmatch(r"[0-9a-f]{64}", s):
            digest = s
        else:
            digest = sha256_tree(s)
            check_artefact(s, exclude=(self.notebook, self.run_id), digest=digest)  # hashed once, not twice
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
        """Write the macro file, then the results JSON, each atomically; returns the JSON path. The JSON comes
        last: it is what the pipeline's skip trusts, so a run killed between the two is redone."""
        record = {"values": _jsonable(self.values), "macros": self.macros, "figures": self.figures,
                  "provenance": {**self.provenance(), "outputs": output_digests(self.notebook, self.run_id)}}
        lines = [f"% generated by {self.notebook} run {self.run_id}; do not edit"]
        lines += [f"\\newcommand{{\\{k}}}{{{v}}}" for k, v in sorted(self.macros.items())]
        paths.write_text_atomic(paths.macros_dir() / self.notebook / f"{self.run_id}.tex", "\n".join(lines) + "\n")
        out = results_path(self.notebook, self.run_id)
        paths.write_text_atomic(out, json.dumps(record, indent=1, sort_keys=False, allow_nan=True) + "\n")
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


def read_record(p: str | Path) -> dict[str, Any]:
    """A results JSON, checked to be a record (values + provenance); garbage raises :class:`ResultsError`
    naming the file and the fix."""
    p = Path(p)
    try:
        rec = json.loads(p.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"{p} is not valid JSON ({type(e).__name__}: {e}); delete it and rerun its notebook "
                           f"(`make notebook NB={p.parent.name} ...` or `make paper`)") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("values"), dict) \
            or not isinstance(rec.get("provenance"), dict):
        raise ResultsError(f"{p} is not a results record (needs 'values' and 'provenance' mappings); delete it "
                           f"and rerun its notebook (`make notebook NB={p.parent.name} ...` or `make paper`)")
    return rec


def load(notebook: str, run_id: str) -> dict[str, Any]:
    p = results_path(notebook, run_id)
    if not p.is_file():
        raise FileNotFoundError(
            f"no results for {notebook} run {run_id!r} ({p}); run it first, e.g. "
            f"`make notebook NB={notebook} ARGS='...'` or `make paper`"
        )
    return read_record(p)


# --------------------------------------------------------------------------------- artefact integrity
def output_digests(notebook: str, run_id: str) -> dict[str, str]:
    """Digest of each artefact (top-level entry, hidden temporaries aside) in a run's artefact folder."""
    d = artefact_dir(notebook, run_id)
    if not d.is_dir():
        return {}
    return {q.name: sha256_tree(q) for q in sorted(d.iterdir()) if not q.name.startswith(".")}


def verify_outputs(record: Mapping[str, Any]) -> list[str]:
    """What no longer matches a record's artefacts on disk (``name: missing`` / ``name: changed``); empty when
    all match, or for a record from before outputs were recorded."""
    prov = record.get("provenance", {})
    outs = prov.get("outputs")
    if not outs:
        return []
    d = artefact_dir(prov.get("notebook", ""), prov.get("run_id", ""))
    bad = []
    for name, digest in outs.items():
        q = d / name
        if not q.exists():
            bad.append(f"{name}: missing")
        elif sha256_tree(q) != digest:
            bad.append(f"{name}: changed")
    return bad


def check_artefact(path: str | Path, exclude: tuple[str, str] | None = None, digest: str | None = None) -> None:
    """Refuse a path inside a run's artefact folder (``data/runs/<notebook>/<run_id>/<artefact>...``) whose
    artefact differs from the digest its run recorded, whose run has no record (an unfinished run), or whose
    record has no output digests (``provenance.outputs``: such a record cannot vouch for any artefact).
    Paths elsewhere, and the run ``exclude`` (the caller's own), pass. ``digest``: the path's own
    :func:`sha256_tree`, when the caller has it (used only when the path is the artefact itself)."""
    try:
        rel = Path(path).resolve().relative_to(paths.runs_dir().resolve())
    except ValueError:
        return
    if len(rel.parts) < 3 or (exclude and tuple(rel.parts[:2]) == tuple(exclude)):
        return
    nb, rid, name = rel.parts[:3]
    fix = (f"rerun that run (`make paper`, or `python -m adapterscope.pipeline run {nb}` with its parameters): "
           "the pipeline redoes a run whose artefacts do not match its record")
    rp = results_path(nb, rid)
    if not rp.is_file():
        raise ResultsError(f"{paths.runs_dir() / nb / rid / name} has no results record ({rp}): it is left from "
                           f"an unfinished {nb} run; {fix}")
    outs = read_record(rp)["provenance"].get("outputs")
    art = paths.runs_dir() / nb / rid / name
    if not isinstance(outs, dict):
        raise ResultsError(f"{art} cannot be checked: {rp} records no output digests (provenance.outputs; a record "
                           f"from before they were recorded), so it vouches for none of its artefacts; redo {nb} "
                           f"run {rid} (`python -m adapterscope.pipeline run {nb} --force` with its parameters, or "
                           f"delete {rp} and run `make paper`)")
    if name not in outs:
        raise ResultsError(f"{art} is not among the artefacts {nb} run {rid} recorded ({sorted(outs)}); {fix}")
    same = digest is not None and Path(path).resolve() == art.resolve()
    if not art.exists() or (digest if same else sha256_tree(art)) != outs[name]:
        raise ResultsError(f"{art} differs from what {nb} run {rid} recorded (rewritten by a killed run, or "
                           f"damaged); {fix}")


def find(notebook: str, **match: Any) -> list[dict[str, Any]]:
    """All results of ``notebook`` whose parameters equal ``match`` (sorted by run id)."""
    d = paths.results_dir() / notebook
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        rec = read_record(p)
        params = rec["provenance"].get("params", {})
        if all(params.get(k) == v for k, v in match.items()):
            out.append(rec)
    return out


def write_sidecar(artefact: str | Path, meta: Mapping[str, Any]) -> Path:
    """``<artefact>.meta.json`` (file) or ``<dir>/meta.json`` (directory): what made this artefact."""
    a = Path(artefact)
    side = a / "meta.json" if a.is_dir() else a.with_name(a.name + ".meta.json")
    paths.write_text_atomic(side, json.dumps(_jsonable(dict(meta)), indent=1, default=str) + "\n")
    return side
