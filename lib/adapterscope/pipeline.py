"""Run notebooks headlessly (jupytext -> papermill), skip runs whose content digest is unchanged, build the paper.

    python -m adapterscope.pipeline paper --profile smoke      # the grid of a profile, then the PDF
    python -m adapterscope.pipeline run 01_finetune -p corpus=seneca -p steps=10
    python -m adapterscope.pipeline grid --profile default      # notebooks only, no PDF

A run is skipped when its results JSON records the same content digest: sha256 over the notebook source, the
sources of the lib modules it imports (transitively), its parameters, the lock file and the digests of the
runs it reads. File times are never used. Executed notebooks go to ``data/executed/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from . import executors, ledger, params, paths, results, timings

LOCK_FILE = "requirements.lock"
# Which notebooks a grid cell runs, in order, and which earlier notebook each reads.
CELL_NOTEBOOKS = ("01_finetune", "02_capture", "03_crosscoder", "09_clamp")
UPSTREAM = {"02_capture": ["01_finetune"], "03_crosscoder": ["01_finetune", "02_capture"],
            "09_clamp": ["01_finetune", "02_capture", "03_crosscoder"]}
# Cell notebooks that run only for the main grid, not for the depth-profile control runs.
MAIN_ONLY = ("03_crosscoder", "09_clamp")
# The main grid's layer control (the adapters trained without one): the grid blocks that read main-grid cells
# (dose, portability, composition, calibration) read those of this layer control, and a dose cell runs with it.
MAIN_LAYER_CONTROL = "none"
# What a training-dose cell (grid.dose) runs: its lowest dose is the main grid's cell.
DOSE_NOTEBOOKS = ("01_finetune", "02_capture", "03_crosscoder")
# Notebooks run once per profile after the grid, in this order, with the grid's lists as parameters.
SUMMARY_NOTEBOOKS = ("08_divergence", "04_cka", "05a_vlm", "05b_regime_probing", "06_escape_routes",
                     "10_decorrelation", "11_dose", "07_portability", "12_composition", "13_calibration",
                     "14_explanations")
# The cell notebooks each summary notebook reads (its digest covers their runs over the grid) and the summary
# notebooks it reads.
SUMMARY_READS = {"08_divergence": ["01_finetune", "02_capture"],
                 "04_cka": ["01_finetune", "02_capture", "03_crosscoder"],
                 "10_decorrelation": ["01_finetune", "02_capture", "03_crosscoder", "09_clamp"],
                 "11_dose": ["01_finetune", "02_capture", "03_crosscoder"],  # dose cells + their main-grid cells
                 "07_portability": ["01_finetune"],  # grid.portability's source adapters (and targets' own)
                 "12_composition": ["01_finetune"],  # the corpus adapters grid.composition composes
                 "13_calibration": ["01_finetune"],  # the adapters grid.calibration plants into and pairs
                 "14_explanations": ["02_capture"],  # the first seed's run of each model x corpus
                 "05a_vlm": [], "05b_regime_probing": [],  # the VLM notebooks do not read the language grid
                 "06_escape_routes": []}
SUMMARY_AFTER: dict[str, list[str]] = {"05b_regime_probing": ["05a_vlm"],
                                       "06_escape_routes": ["05a_vlm", "05b_regime_probing"]}


class PipelineError(RuntimeError):
    pass


class ProfileError(PipelineError):
    """A profile's grid that cannot run as written (:func:`check_grid`); the message names the key and the fix."""


def notebook_path(name: str) -> Path:
    p = paths.project_root() / "notebooks" / f"{name}.py"
    if not p.is_file():
        avail = sorted(q.stem for q in (paths.project_root() / "notebooks").glob("[0-9]*.py"))
        raise PipelineError(f"no notebook {name!r}; available: {', '.join(avail)}")
    return p


def _lib_imports(source: str, package: str = "adapterscope") -> list[tuple[str, str | None, str]]:
    """The ``adapterscope`` imports of a source, at any depth (inside functions too): ``(module, name, statement)``
    each, ``module`` absolute and dotted (``adapterscope.x``), ``name`` what ``from module import name`` takes
    (None for ``import module``) and ``statement`` the import as written, with its line. Relative imports resolve
    in ``package``, the source's own package (a notebook's count as the top-level package's)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level > 0:
                base = package.split(".")
                up = len(base) - (node.level - 1)
                mod = (".".join(base[:up] + ([node.module] if node.module else [])) if up > 0
                       else "." * node.level + (node.module or ""))  # beyond the top-level package: no file
            elif node.module == "adapterscope" or (node.module or "").startswith("adapterscope."):
                mod = node.module
            else:
                continue
            out += [(mod, a.name, f"line {node.lineno}: `{ast.unparse(node)}`") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None, f"line {node.lineno}: `{ast.unparse(node)}`") for a in node.names
                    if a.name == "adapterscope" or a.name.startswith("adapterscope.")]
    return out


def _bound_names(tree: ast.Module) -> set[str]:
    """The names a module binds outside its functions and classes (definitions, assignments, imports)."""
    names, todo = set(), list(tree.body)
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in n.names)
        else:
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                names.add(n.id)
            todo.extend(ast.iter_child_nodes(n))
    return names


def _lib_files(lib: Path, module: str, name: str | None) -> list[Path] | str:
    """The files ``import module`` (``from module import name``) runs under ``lib`` (the ``adapterscope``
    package's folder): each package's ``__init__.py`` on the way, the module's own file, and ``name``'s where it
    is a submodule; or, where one is not a file there, what is missing."""
    parts = module.split(".")
    if parts[0] != "adapterscope":
        return f"{module} is not inside the adapterscope package"
    files, here = [lib / "__init__.py"], lib
    for i, part in enumerate(parts[1:], 2):
        if (here / part / "__init__.py").is_file():
            here = here / part
            files.append(here / "__init__.py")
        elif i == len(parts) and (here / f"{part}.py").is_file():
            return files + [here / f"{part}.py"]  # a module: ``name`` is one of its attributes
        else:
            return f"{'.'.join(parts[:i])} is neither {here / part}.py nor a package {here / part}/"
    if name is None or name == "*":
        return files
    if (here / name / "__init__.py").is_file():
        return files + [here / name / "__init__.py"]
    if (here / f"{name}.py").is_file():
        return files + [here / f"{name}.py"]
    bound = _bound_names(ast.parse((here / "__init__.py").read_text()))
    if name in bound or "__getattr__" in bound:
        return files
    return (f"{module}.{name} is neither a module ({here / name}.py or {here / name}/) nor a name "
            f"{here / '__init__.py'} defines")


def lib_closure(source: str, origin: str | Path = "the source") -> list[Path]:
    """The lib files a source imports, transitively (imports inside functions count): its modules, sorted, then
    ``lib/adapterscope/__init__.py``; a sub-package's ``__init__.py`` comes with the modules imported from it.

    ``origin`` names the source (the notebook) in errors. An ``adapterscope`` import that resolves to no file under
    ``lib/adapterscope`` (a module moved or renamed, a name the package does not define) raises
    :class:`PipelineError` naming the import and the file that holds it: it never drops silently out of a digest."""
    lib = paths.project_root() / "lib" / "adapterscope"
    init = lib / "__init__.py"
    seen = {init}
    todo = [(source, str(origin), "adapterscope")] + ([(init.read_text(), str(init), "adapterscope")]
                                                        if init.is_file() else [])
    while todo:
        src, where, package = todo.pop()
        for module, name, stmt in _lib_imports(src, package):
            files = _lib_files(lib, module, name)
            if isinstance(files, str):
                raise PipelineError(f"{where}, {stmt}: an adapterscope import that resolves to no file ({files}); "
                                    "a module moved or renamed? Fix the import: a content digest must cover every "
                                    "module a notebook runs")
            for f in files:
                if f not in seen:
                    seen.add(f)
                    pkg = ".".join(("adapterscope", *f.relative_to(lib).parent.parts))
                    todo.append((f.read_text(), str(f), pkg))
    return sorted(seen - {init}, key=lambda f: f.relative_to(lib).with_suffix("").parts) + [init]


def content_digest(nb: str, run_params: dict[str, Any], upstream_digests: list[str]) -> str:
    src = notebook_path(nb).read_text()
    h = [results.sha256_bytes(src.encode())]
    h += [results.sha256_file(f) for f in lib_closure(src, origin=notebook_path(nb))]
    lock = paths.project_root() / LOCK_FILE
    h.append(results.sha256_file(lock) if lock.is_file() else "no-lock")
    h.append(results.sha256_json(run_params))
    h += upstream_digests
    return results.sha256_bytes("|".join(h).encode())


def to_ipynb(nb: str, out: Path) -> Path:
    """jupytext percent .py -> .ipynb with a plain python3 kernelspec (papermill needs one)."""
    import jupytext
    import nbformat

    note = jupytext.read(notebook_path(nb))
    note.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    note.metadata["language_info"] = {"name": "python"}
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(note, out)
    return out


# A summary notebook's parameters that carry a grid block (see summary_params): block -> (prefix, keys).
SUMMARY_BLOCK_PARAMS = {"portability": ("port", ("pairs", "corpora", "seeds")),
                        "composition": ("comp", ("models", "corpora", "seeds")),
                        "calibration": ("cal", ("models", "corpora", "seeds"))}


def check_summary_params(merged: dict[str, Any]) -> None:
    """A summary notebook's grid-block parameters (``port_*``, ``comp_*``, ``cal_*``) through :func:`check_grid`, as
    the grid they stand for: ``model_names``, ``corpus_names``, ``seeds`` (``seeds_by_model`` where given) and
    ``layer_controls`` (default the main grid's) are its grid, and each block whose first list is not empty is its
    block. A profile's runs get these values from :func:`summary_params`, already checked; a run on its own
    (``pipeline run 07_portability -p port_pairs=...``) is checked here, before its kernel starts."""
    blocks = {name: {k: merged[f"{prefix}_{k}"] for k in keys if f"{prefix}_{k}" in merged}
              for name, (prefix, keys) in SUMMARY_BLOCK_PARAMS.items() if merged.get(f"{prefix}_{keys[0]}")}
    if not blocks or not all(k in merged for k in ("model_names", "corpus_names", "seeds")):
        return
    grid = {"models": merged["model_names"], "corpora": merged["corpus_names"],
            "layer_controls": merged.get("layer_controls") or [MAIN_LAYER_CONTROL],
            "seeds": merged.get("seeds_by_model") or merged["seeds"], **blocks}
    try:
        check_grid({"grid": grid})
    except ProfileError as e:
        raise ProfileError(f"{e} (this run's parameters read as a profile grid: model_names, corpus_names and seeds "
                           "are grid.models, grid.corpora and grid.seeds, port_*, comp_* and cal_* the keys of "
                           "grid.portability, grid.composition and grid.calibration)") from None


def preflight(merged: dict[str, Any]) -> None:
    """Fail before a kernel starts on what cannot work: a summary notebook's grid blocks that a profile would refuse
    (:func:`check_summary_params`), names that cannot resolve (model, corpus, lists of them, portability targets),
    a CUDA device where there is none, a site that does not exist, a relative depth outside [0, 1], and layer
    indices outside the model (read from its config.json, without loading weights)."""
    from . import corpora, models

    check_summary_params(merged)
    try:
        if isinstance(merged.get("device"), str):
            models.check_device(merged["device"])
        for key in ("model", "model_names"):
            for m in ([merged[key]] if isinstance(merged.get(key), str) else merged.get(key) or []):
                models.check_name(m)
        for pair in merged.get("port_pairs") or []:  # a target need not be a model of the grid
            if isinstance(pair, (list, tuple)) and len(pair) == 2:
                models.check_name(pair[1])
        for key in ("corpus", "corpus_names"):
            for c in ([merged[key]] if isinstance(merged.get(key), str) else merged.get(key) or []):
                corpora.check_name(c)
        for site in merged.get("sites") or []:
            models.hook_key(0, site)
        bad = [d for d in merged.get("depths") or [] if not 0 <= d <= 1]
        if bad:
            raise PipelineError(f"depths {bad} are outside [0, 1]: a depth is a fraction of the model's layers "
                                "(0 first, 1 last)")
        if merged.get("layers") and isinstance(merged.get("model"), str):
            n = models.config_num_layers(merged["model"])
            out = [layer for layer in merged["layers"] if n is not None and not -n <= layer < n]
            if out:
                raise PipelineError(f"layers {out} are out of range: {merged['model']} has {n} layers "
                                    f"(0..{n - 1}; negatives count from the end)")
    except (models.ModelError, corpora.CorpusError) as e:
        raise PipelineError(str(e)) from None


def upstream_digest(record: dict[str, Any]) -> str:
    """What a downstream digest takes from a run it reads: that run's content digest and its artefacts' digests
    (a redone upstream whose artefacts came out different reruns what reads it)."""
    prov = record["provenance"]
    return (prov.get("content_digest") or "") + ":" + results.sha256_json(prov.get("outputs") or {})


def run_notebook(nb: str, overrides: dict[str, Any], run_id: str, upstream: list[tuple[str, str]] = (),
                 force: bool = False, log=print) -> dict[str, Any]:
    """Execute one notebook run unless its content digest is unchanged; returns its results record."""
    import papermill
    from nbclient.exceptions import DeadKernelError

    declared = params.parse_parameters_cell(notebook_path(nb))
    merged = params.validate(declared, overrides, where=nb)
    preflight(merged)
    ups = []
    for up_nb, up_id in upstream:
        try:
            up = results.load(up_nb, up_id)
        except FileNotFoundError as e:
            raise PipelineError(f"{nb} {run_id} needs {up_nb} {up_id} first: {e}") from e
        bad = results.verify_outputs(up)
        if bad:
            raise PipelineError(f"{nb} {run_id} reads {up_nb} {up_id}, whose artefacts do not match its record "
                                f"({'; '.join(bad)}): a killed or damaged run. Rerun {up_nb} with its parameters "
                                "(or `make paper`): the pipeline redoes it")
        ups.append(upstream_digest(up))
    digest = content_digest(nb, merged, ups)
    target = results.results_path(nb, run_id)
    if target.is_file() and not force:
        try:
            old = results.read_record(target)
        except results.ResultsError as e:
            old = None
            log(f"[redo] {nb} {run_id}: {e}")
        if old is not None and old["provenance"].get("content_digest") == digest:
            bad = results.verify_outputs(old)
            if not bad:
                log(f"[skip] {nb} {run_id}: unchanged (digest {digest[:12]})")
                return old
            log(f"[redo] {nb} {run_id}: its artefacts do not match its record ({'; '.join(bad)})")
    exe = paths.data_dir() / "executed" / nb
    src = to_ipynb(nb, exe / f"{run_id}.input.ipynb")
    out = exe / f"{run_id}.ipynb"
    log(f"[run ] {nb} {run_id} {overrides}")
    t0 = time.time()
    os.environ["ADAPTERSCOPE_CONTENT_DIGEST"] = digest
    os.environ["ADAPTERSCOPE_EXECUTOR"] = "pipeline"  # the kernel inherits it; results.Run records who ran it
    os.environ.setdefault("TQDM_MININTERVAL", "5")
    try:
        papermill.execute_notebook(str(src), str(out), parameters=overrides, kernel_name="python3",
                                   cwd=str(paths.project_root()), progress_bar=False, log_output=False)
    except papermill.PapermillExecutionError as e:
        raise PipelineError(f"{nb} {run_id} failed in cell {e.exec_count}: {e.ename}: {e.evalue}\n"
                            f"  executed notebook: {out}") from None
    except DeadKernelError:
        raise PipelineError(f"{nb} {run_id}: the kernel died (killed, or out of memory) before the run finished; "
                            "nothing of it was recorded. Run the same command again: the unfinished run is redone"
                            ) from None
    finally:
        os.environ.pop("ADAPTERSCOPE_CONTENT_DIGEST", None)
        os.environ.pop("ADAPTERSCOPE_EXECUTOR", None)
    rec = results.load(nb, run_id)
    if rec["provenance"].get("content_digest") != digest:
        raise PipelineError(f"{nb} {run_id} did not write its results JSON")
    log(f"[done] {nb} {run_id} in {time.time() - t0:.0f}s")
    timings.log_run(nb, run_id, time.time() - t0, rec["provenance"].get("wall_time_s"))
    return rec


GRID_KEYS = ("models", "corpora", "layer_controls", "seeds")
# The optional blocks of a grid: (what the block is, its required keys, its optional keys).
GRID_BLOCKS = {
    "control": ("the depth-profile control runs", ("layer_control",), ("models", "corpora", "seeds")),
    "dose": ("the training-dose runs", ("levels",), ("models", "corpora", "seeds")),
    "portability": ("07_portability's transfers", ("pairs",), ("corpora", "seeds")),
    "composition": ("12_composition's corpus adapters", (), ("models", "corpora", "seeds")),
    "calibration": ("13_calibration's planted adapters", (), ("models", "corpora", "seeds")),
}
BLOCK_NEEDS = {"layer_control": "the control runs' layer control, e.g. equal_step",
               "levels": "a non-empty list of 01_finetune parameter mappings",
               "pairs": "a non-empty list of [source model, target model]"}


def _and(names) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def _unknown(keys, allowed) -> str:
    """``'x' (did you mean 'y'?), 'z'`` for the keys not allowed."""
    import difflib

    out = []
    for k in sorted(set(keys) - set(allowed), key=str):
        close = difflib.get_close_matches(str(k), list(allowed), n=1)
        out.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ", ".join(out)


def _name_list(where: str, v: Any, kind: str = "names", empty: bool = False) -> list:
    """``v`` as a list without repeats of names (``kind="seeds"``: of integer seeds), non-empty unless ``empty``
    (a finding's scope can leave a block or a model's seeds empty), else the error naming the fix."""
    ints = kind == "seeds"
    if (not isinstance(v, list) or not (v or empty)
            or not all(isinstance(x, int) and not isinstance(x, bool) if ints else isinstance(x, str) for x in v)):
        what = "integer seeds" if ints else "names"
        raise ProfileError(f"{where} must be a {'' if empty else 'non-empty '}list of {what}, got {v!r}: write it "
                           f"as {'[0, 1]' if ints else '[a, b]'}")
    dup = sorted({x for x in v if v.count(x) > 1})
    if dup:
        raise ProfileError(f"{where} repeats {dup}: list each once")
    return list(v)


def seeds_by_model(g: dict[str, Any]) -> dict[str, list[int]]:
    """``grid.seeds`` is a list (every model) or a mapping model -> list (e.g. fewer seeds for a slower model)."""
    seeds = g["seeds"]
    if isinstance(seeds, dict):
        missing, extra = set(g["models"]) - set(seeds), set(seeds) - set(g["models"])
        if missing or extra:
            raise ProfileError(f"grid.seeds as a mapping needs exactly the grid's models as keys; missing "
                               f"{sorted(missing)}, unknown {sorted(extra)}: give each model of grid.models its "
                               "list of seeds, and no other model")
        return {m: _name_list(f"grid.seeds.{m}", seeds[m], "seeds", empty=True) for m in g["models"]}
    return {m: _name_list("grid.seeds", seeds, "seeds") for m in g["models"]}


def all_seeds(g: dict[str, Any]) -> list[int]:
    """Every seed of the grid, over all models (the union when ``grid.seeds`` is a per-model mapping)."""
    return sorted({s for v in seeds_by_model(g).values() for s in v})


def _block(g: dict[str, Any], name: str, defaults: dict[str, list]) -> dict:
    """``grid.<name>`` checked by the rules every block shares: a mapping of its own keys with the required ones;
    for a block that reads the main grid's cells (all but control), the main grid's layer control in the grid; its
    own seeds when ``grid.seeds`` is a per-model mapping (unless it has a default of its own); lists of models and
    corpora of the grid. Returns the block with ``defaults`` filled in (None for seeds without a default: each
    model's own); :func:`_block_seeds` checks the seeds against the block's models."""
    what, required, optional = GRID_BLOCKS[name]
    d = g[name]
    if not isinstance(d, dict):
        raise ProfileError(f"grid.{name} ({what}) must be a mapping with {_and(required + optional)}, got {d!r}")
    bad = _unknown(d, required + optional)
    if bad:
        raise ProfileError(f"grid.{name}: unknown key(s) {bad}; grid.{name} may have {_and(required + optional)}")
    for key in required:
        if not d.get(key) or (key == "layer_control") != isinstance(d[key], str):
            raise ProfileError(f"grid.{name} needs {key} ({BLOCK_NEEDS[key]}), got {d.get(key)!r}: add it, or "
                               f"drop grid.{name}")
    if name != "control" and MAIN_LAYER_CONTROL not in g["layer_controls"]:
        raise ProfileError(f"grid.{name} reads the main grid's layer_control {MAIN_LAYER_CONTROL!r} cells: add "
                           f"{MAIN_LAYER_CONTROL!r} to grid.layer_controls, or drop grid.{name}")
    if isinstance(g["seeds"], dict) and "seeds" in optional and "seeds" not in d and "seeds" not in defaults:
        raise ProfileError(f"grid.{name} needs its own seeds when grid.seeds is a per-model mapping: add "
                           f"grid.{name}.seeds")
    out = {k: d[k] for k in required}
    for key in ("models", "corpora", "seeds"):
        if key not in optional:
            continue
        if key in d:
            out[key] = _name_list(f"grid.{name}.{key}", d[key], key, empty=True)
        else:
            out[key] = list(defaults[key]) if key in defaults else None
        if key != "seeds" and out[key] is not None:
            alien = [x for x in out[key] if x not in g[key]]
            if alien:
                raise ProfileError(f"grid.{name}.{key} {alien} are not in grid.{key} {g[key]}: add them to "
                                   f"grid.{key}, or drop them from grid.{name}.{key}")
    return out


def _block_seeds(name: str, out: dict[str, Any], block_models, by_model: dict[str, list[int]]) -> None:
    """Each of the block's seeds is a seed of each of its models in the grid."""
    for m in dict.fromkeys(block_models):
        alien = [s for s in out["seeds"] if s not in by_model[m]]
        if alien:
            raise ProfileError(f"grid.{name}.seeds {alien} are not seeds of {m} in the grid ({by_model[m]}): use "
                               f"seeds grid.seeds gives {m}")


def check_grid(profile: dict[str, Any]) -> dict[str, Any]:
    """A profile's ``grid``, checked in this one place (every reader of a grid goes through here:
    :func:`load_profile`, :func:`grid_cells`, :func:`summary_cells`, :func:`summary_params` and, for a summary
    notebook run on its own, :func:`preflight`), each mistake a :class:`ProfileError` naming the fix.

    ``grid`` is a product of ``models x corpora x layer_controls x seeds`` (``seeds`` a list, or a mapping model ->
    list). Optional blocks, each absent when empty (see :data:`GRID_BLOCKS`): ``control`` (``layer_control``, and
    ``models``, ``corpora``, ``seeds`` of the grid, default all of them: the depth-profile control runs);
    ``dose`` (``levels``: distinct, non-empty mappings of 01_finetune parameters, none the main grid's own setting
    (``profile["notebooks"]["01_finetune"]`` over the notebook's defaults), none naming a cell's identity; and
    ``models``, ``corpora``, ``seeds`` of the grid, default all); ``portability`` (``pairs`` of [source, target],
    two different models, each source a model of the grid; ``corpora`` and ``seeds`` of the grid, default its
    corpora and its first seed); ``composition`` (``models``, ``corpora``, ``seeds`` of the grid, default its first
    model, all its corpora, its first seed; two corpora at least); ``calibration`` (the same keys, default its first
    model, its first corpus, its first two seeds; one or two seeds). The dose, portability, composition and
    calibration blocks read main-grid cells of layer control :data:`MAIN_LAYER_CONTROL`, which the grid must have.

    Returns the grid normalised: ``models``, ``corpora``, ``layer_controls``, ``seeds`` (model -> list), and each
    block with its defaults filled in (``dose`` also with its levels' ``tags``), or None where absent."""
    g = profile.get("grid") if isinstance(profile, dict) else None
    if not isinstance(g, dict):
        raise ProfileError(f"the profile needs a grid mapping with {_and(GRID_KEYS)}, got {g!r}: add `grid:` "
                           "(notebooks/profiles/smoke.yml is a small example)")
    missing = [k for k in GRID_KEYS if k not in g]
    if missing:
        raise ProfileError(f"profile grid lacks {missing}: add them (a grid is models x corpora x layer_controls x "
                           "seeds)")
    bad = _unknown(g, GRID_KEYS + tuple(GRID_BLOCKS))
    if bad:
        raise ProfileError(f"profile grid: unknown key(s) {bad}; allowed: {list(GRID_KEYS) + list(GRID_BLOCKS)}")
    out = {k: _name_list(f"grid.{k}", g[k]) for k in ("models", "corpora", "layer_controls")}
    by_model = out["seeds"] = seeds_by_model(g)
    if not any(by_model.values()):
        raise ProfileError(f"grid.seeds {g['seeds']!r} gives no model a seed: list at least one")
    first = min(all_seeds(g))
    blocks = {"control": {"models": g["models"], "corpora": g["corpora"]},
              "dose": {"models": g["models"], "corpora": g["corpora"]},
              "portability": {"corpora": g["corpora"], "seeds": [first]},
              "composition": {"models": g["models"][:1], "corpora": g["corpora"], "seeds": [first]},
              "calibration": {"models": g["models"][:1], "corpora": g["corpora"][:1], "seeds": all_seeds(g)[:2]}}
    for name, defaults in blocks.items():
        if not g.get(name):
            out[name] = None
            continue
        b = out[name] = _block(g, name, defaults)
        if name == "portability":
            for p in b["pairs"]:
                if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p)):
                    raise ProfileError(f"grid.portability.pairs: {p!r} is not a [source, target] pair: write each "
                                       "pair as [source model, target model]")
                if p[0] == p[1]:
                    raise ProfileError(f"grid.portability.pairs: {list(p)} transfers a model to itself: a pair "
                                       "names two different models")
            b["pairs"] = [list(p) for p in b["pairs"]]
            alien = list(dict.fromkeys(p[0] for p in b["pairs"] if p[0] not in g["models"]))
            if alien:
                raise ProfileError(f"grid.portability: sources {alien} are not in grid.models {g['models']} (a "
                                   "source's adapter comes from the main grid): add them to grid.models, or drop "
                                   "those pairs")
        block_models = [p[0] for p in b["pairs"]] if name == "portability" else b["models"]
        if b["seeds"] is not None:
            _block_seeds(name, b, block_models, by_model)
        if name == "composition" and len(b["corpora"]) < 2:
            raise ProfileError(f"grid.composition needs at least two corpora to compose, got {b['corpora']}: "
                               "list two or more in grid.composition.corpora (or in grid.corpora)")
        if name == "calibration" and not 1 <= len(b["seeds"]) <= 2:
            raise ProfileError(f"grid.calibration.seeds: one or two seeds (the planted adapter, then the seed-pair "
                               f"null), got {b['seeds']}")
        if name == "dose":
            b["tags"] = _dose_tags(b["levels"], (profile.get("notebooks") or {}).get("01_finetune") or {})
    return out


def _dose_tags(levels: Any, ft_overrides: dict[str, Any]) -> list[str]:
    """The tags of ``grid.dose.levels``, each level checked: a non-empty mapping of 01_finetune parameters (none of
    a cell's identity), valid for the notebook, not the main grid's own setting, no two the same."""
    if not isinstance(levels, list):
        raise ProfileError(f"grid.dose.levels must be a list of 01_finetune parameter mappings, got {levels!r}")
    declared = params.parse_parameters_cell(notebook_path("01_finetune"))
    try:
        main_ft = params.validate(declared, ft_overrides, where="01_finetune")
    except params.ParameterError as e:
        raise ProfileError(f"profile notebooks.01_finetune: {e}") from None
    identity = {"model", "corpus", "layer_control", "seed", "dose_tag"}
    tags = []
    for lev in levels:
        if not isinstance(lev, dict) or not lev or identity & set(lev):
            raise ProfileError(f"grid.dose.levels: each level is a non-empty mapping of 01_finetune parameters "
                               f"other than {sorted(identity)}; got {lev!r}")
        try:
            params.validate(declared, lev, where="grid.dose.levels (01_finetune parameters)")
        except params.ParameterError as e:
            raise ProfileError(str(e)) from None
        if all(main_ft[k] == v for k, v in lev.items()):
            raise ProfileError(f"grid.dose level {lev} is the main grid's own 01_finetune setting: the dose "
                               "analysis takes that cell as its lowest dose; drop the level")
        tags.append(params.dose_tag(lev))
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise ProfileError(f"grid.dose.levels repeat {dup}: list each level once")
    return tags


def grid_cells(profile: dict[str, Any], which: str = "all") -> list[dict[str, Any]]:
    """The (model, corpus, layer_control, seed) cells of a profile (checked by :func:`check_grid`): the main grid
    (``models x corpora x layer_controls x seeds``), the depth-profile control runs of ``grid.control`` (those not
    already main cells) and the training-dose runs of ``grid.dose``: each level for every model x corpus x seed of
    the block, with layer control :data:`MAIN_LAYER_CONTROL`; a dose cell also holds ``dose_tag``
    (:func:`params.dose_tag`, appended to its run id) and ``dose`` (the level). Its lowest dose is the main grid's
    own cell. ``which``: ``main``, ``control``, ``dose`` or ``all``."""
    if which not in ("main", "control", "dose", "all"):
        raise PipelineError(f"grid_cells: which must be main, control, dose or all, got {which!r}")
    g = check_grid(profile)
    by_model = g["seeds"]
    main = [{"model": m, "corpus": c, "layer_control": lc, "seed": s}
            for m, c, lc in itertools.product(g["models"], g["corpora"], g["layer_controls"]) for s in by_model[m]]
    ctl, dose = [], []
    if g["control"]:
        c = g["control"]
        ctl = [{"model": m, "corpus": co, "layer_control": c["layer_control"], "seed": s}
               for m in c["models"] for co in c["corpora"] for s in (c["seeds"] or by_model[m])]
        ctl = [x for x in ctl if x not in main]
    if g["dose"]:
        d = g["dose"]
        dose = [{"model": m, "corpus": c, "layer_control": MAIN_LAYER_CONTROL, "seed": s, "dose_tag": tag,
                 "dose": dict(lev)}
                for m in d["models"] for c in d["corpora"] for s in (d["seeds"] or by_model[m])
                for tag, lev in zip(d["tags"], d["levels"])]
    return {"main": main, "control": ctl, "dose": dose, "all": main + ctl + dose}[which]


def cell_id(cell: dict[str, Any]) -> str:
    return params.cell_run_id(cell["model"], cell["corpus"], cell["layer_control"], cell["seed"],
                              cell.get("dose_tag", ""))


def cell_notebooks(cell: dict[str, Any], main: list[dict[str, Any]]) -> list[str]:
    """The notebooks a cell runs, in order: all for a main cell, 01-03 for a dose cell, 01-02 for a control."""
    if cell.get("dose_tag"):
        return list(DOSE_NOTEBOOKS)
    return [nb for nb in CELL_NOTEBOOKS if cell in main or nb not in MAIN_ONLY]


def cell_overrides(cell: dict[str, Any], nb: str, per_nb: dict[str, Any]) -> dict[str, Any]:
    """The parameters one notebook of a cell gets: the cell's identity (with its dose tag), the profile's
    per-notebook overrides, and for 01_finetune of a dose cell the dose level on top."""
    ov = {k: cell[k] for k in ("model", "corpus", "layer_control", "seed")}
    if cell.get("dose_tag"):
        ov["dose_tag"] = cell["dose_tag"]
    ov.update(per_nb.get(nb) or {})
    if nb == "01_finetune":
        ov.update(cell.get("dose") or {})
    return ov


def summary_params(profile_name: str, prof: dict[str, Any]) -> dict[str, Any]:
    """Everything a summary notebook may declare about the grid (each takes the names it declares), from the
    checked grid (:func:`check_grid`): empty lists for a block the profile does not have."""
    g = check_grid(prof)
    seeds = sorted({s for v in g["seeds"].values() for s in v})
    c, d = g["control"], g["dose"]

    def block(prefix: str, b: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
        return {f"{prefix}_{k}": (b[k] if b[k] is not None else seeds) if b else [] for k in keys}

    return {"model_names": g["models"], "corpus_names": g["corpora"], "layer_controls": g["layer_controls"],
            "seeds": seeds, "seeds_by_model": g["seeds"] if isinstance(prof["grid"]["seeds"], dict) else {},
            "profile": profile_name, "control": c["layer_control"] if c else "",
            **block("control", c, ("models", "corpora", "seeds")),
            **block("dose", d, ("models", "corpora", "seeds", "levels")),
            **block("port", g["portability"], ("pairs", "corpora", "seeds")),
            **block("comp", g["composition"], ("models", "corpora", "seeds")),
            **block("cal", g["calibration"], ("models", "corpora", "seeds"))}


def single_run(nb: str, declared: dict[str, Any], run_id: str | None = None) -> tuple[str, list[tuple[str, str]]]:
    """(run id, upstream runs) of one notebook run outside a profile: a cell notebook's id comes from its
    model / corpus / layer_control / seed parameters, a summary notebook writes the run ``grid``. The notebook
    itself names the results it writes, so a ``run_id`` other than that one is refused before anything runs."""
    if nb in SUMMARY_NOTEBOOKS:
        rid, ups = "grid", present_upstream(nb, declared) + [(u, "grid") for u in SUMMARY_AFTER.get(nb, [])]
    else:
        rid = params.cell_run_id(declared.get("model", "x"), declared.get("corpus", "x"),
                                 declared.get("layer_control", "x"), declared.get("seed", 0),
                                 declared.get("dose_tag", ""))
        ups = [(u, rid) for u in UPSTREAM.get(nb, [])]
    if run_id is not None and run_id != rid:
        raise PipelineError(f"{nb} writes the run {rid!r} (its parameters name it), not {run_id!r}: drop --run-id, "
                            f"or copy results/{nb}/{rid}.json aside before a variant run overwrites it")
    return rid, ups


def present_upstream(nb: str, declared: dict[str, Any]) -> list[tuple[str, str]]:
    """(notebook, run id) of the grid runs present under results/ that a summary notebook run on its own may read:
    those of the cell notebooks it reads whose model and corpus are in its ``model_names`` / ``corpus_names`` (when
    it declares them). Its digest covers them, so a replaced or redone upstream run reruns it."""
    out = []
    for u in SUMMARY_READS.get(nb, []):
        for rec in results.find(u):
            p = rec["provenance"].get("params", {})
            if any(key in declared and p.get(field) not in declared[key]
                   for key, field in (("model_names", "model"), ("corpus_names", "corpus"))):
                continue
            out.append((u, rec["provenance"]["run_id"]))
    return out


def cell_closure(notebooks) -> list[str]:
    """The cell notebooks that ``notebooks`` need, with their upstreams, in pipeline order."""
    need, todo = set(), list(notebooks)
    while todo:
        nb = todo.pop()
        if nb not in need:
            need.add(nb)
            todo += UPSTREAM.get(nb, [])
    return [nb for nb in CELL_NOTEBOOKS if nb in need]


def summary_cells(nb: str, prof: dict[str, Any]) -> list[dict[str, Any]]:
    """The grid cells a summary notebook reads: 11_dose the dose cells and the main-grid cells they start from
    (their lowest dose), every other one the main and control cells."""
    main = grid_cells(prof, "main")
    if nb == "11_dose":
        dose = grid_cells(prof, "dose")
        starts = {(c["model"], c["corpus"], c["seed"]) for c in dose}
        base = [c for c in main if c["layer_control"] == MAIN_LAYER_CONTROL
                and (c["model"], c["corpus"], c["seed"]) in starts]
        return base + dose
    if nb == "07_portability":
        pb = check_grid(prof)["portability"]
        if not pb:
            return []
        # the sources' adapters, and the targets' own adapters of the same corpus and seed where the target is in
        # the grid: a case reuses that one as its ceiling (the direct LoRA) instead of training it again
        case_models = {m for p in pb["pairs"] for m in p}
        return [c for c in main if c["layer_control"] == MAIN_LAYER_CONTROL and c["model"] in case_models
                and c["corpus"] in pb["corpora"] and c["seed"] in pb["seeds"]]
    subset = {"12_composition": "composition", "13_calibration": "calibration"}  # blocks that read a part of it
    if nb in subset:
        cb = check_grid(prof)[subset[nb]]
        if not cb:
            return []
        return [c for c in main if c["layer_control"] == MAIN_LAYER_CONTROL and c["model"] in cb["models"]
                and c["corpus"] in cb["corpora"] and c["seed"] in cb["seeds"]]
    return main + grid_cells(prof, "control")


def summary_upstream(nb: str, prof: dict[str, Any]) -> list[tuple[str, str]]:
    """(notebook, run id) of every run a summary notebook reads over the profile's grid."""
    main = grid_cells(prof, "main")
    reads = SUMMARY_READS.get(nb, list(CELL_NOTEBOOKS))
    ups = [(u, cell_id(c)) for c in summary_cells(nb, prof) for u in reads if u in cell_notebooks(c, main)]
    return ups + [(u, "grid") for u in SUMMARY_AFTER.get(nb, [])]


def load_profile(profile_name: str) -> dict[str, Any]:
    """``notebooks/profiles/<profile_name>.yml``, its grid checked (:func:`check_grid`)."""
    prof = params.load_profile(paths.project_root() / "notebooks" / "profiles" / f"{profile_name}.yml")
    check_grid(prof)
    return prof


def run_cell(profile_name: str, index: int, force: bool = False, log=print) -> None:
    """The notebooks of one grid cell (``grid_cells(profile)[index]``), in order."""
    prof = load_profile(profile_name)
    per_nb = prof.get("notebooks", {}) or {}
    cells, main = grid_cells(prof, "all"), grid_cells(prof, "main")
    if not 0 <= index < len(cells):
        raise PipelineError(f"profile {profile_name} has {len(cells)} cells; no index {index}")
    cell = cells[index]
    rid = cell_id(cell)
    for nb in cell_notebooks(cell, main):
        run_notebook(nb, cell_overrides(cell, nb, per_nb), rid, upstream=[(u, rid) for u in UPSTREAM.get(nb, [])],
                     force=force, log=log)


def resolve_jobs(jobs: int | str | None) -> int:
    """``auto``: two cells at a time on a CPU with at least two cores (measured on 2 cores: two one-thread
    processes fine-tune 1.3-1.6x faster than one two-thread process), else one."""
    if jobs in (None, "", "auto"):
        return 2 if (os.cpu_count() or 1) >= 2 else 1
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        raise PipelineError(f"jobs must be a positive integer or 'auto', got {jobs!r}") from None
    if n < 1:
        raise PipelineError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    return n


def independent_summaries() -> list[str]:
    """Summary notebooks that read no grid run (only each other): they can run beside the grid."""
    out: list[str] = []
    for nb in SUMMARY_NOTEBOOKS:
        if SUMMARY_READS.get(nb, True) == [] and all(u in out for u in SUMMARY_AFTER.get(nb, [])):
            out.append(nb)
    return out


def run_summaries(profile_name: str, names: list[str], force: bool = False, log=print) -> None:
    """Summary notebooks, in the given order, with the grid's lists as parameters."""
    prof = load_profile(profile_name)
    per_nb = prof.get("notebooks", {}) or {}
    for nb in names:
        if nb not in SUMMARY_NOTEBOOKS:
            raise PipelineError(f"{nb!r} is not a summary notebook; those are {', '.join(SUMMARY_NOTEBOOKS)}")
        declared = params.parse_parameters_cell(notebook_path(nb))
        ov = {k: v for k, v in summary_params(profile_name, prof).items() if k in declared}
        ov.update(per_nb.get(nb) or {})
        run_notebook(nb, ov, "grid", upstream=summary_upstream(nb, prof), force=force, log=log)


def _run_parallel(profile_name: str, tasks: list[tuple[str, list[str]]], jobs: int, force: bool, log) -> None:
    """Each task (name, ``pipeline`` sub-command) in its own process (own environment, so no shared state
    between kernels), ``jobs`` at a time, the CPU's threads split between them; output to
    data/logs/<profile>/<name>.log, whose [skip]/[run ]/[done] lines are relayed when the task ends."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    logs = paths.data_dir() / "logs" / profile_name
    logs.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []

    def one(task: tuple[str, list[str]]) -> None:
        name, args = task  # a failed task does not stop the others: an hour-long grid keeps what it can
        lf = logs / f"{name}.log"
        log(f"[task] {name} started ({threads} thread(s); log {lf.relative_to(paths.project_root())})")
        t0 = time.time()
        cmd = [sys.executable, "-m", "adapterscope.pipeline", *args, "--profile", profile_name]
        with open(lf, "w") as fh:
            rc = subprocess.run(cmd + (["--force"] if force else []), env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=paths.project_root()).returncode
        out = lf.read_text(errors="replace").splitlines()
        for line in out:
            if line.startswith(("[skip]", "[run ]", "[done]")):
                log(line)
        if rc != 0:
            failed.append(name)
            tail = "\n".join(out[-15:])
            log(f"[fail] {name} (exit {rc}); last lines of {lf}:\n{tail}")
        else:
            log(f"[task] {name} done in {time.time() - t0:.0f}s")

    with ThreadPoolExecutor(max_workers=jobs) as ex:
        list(ex.map(one, tasks))
    if failed:
        raise PipelineError(f"{len(failed)} task(s) failed: {', '.join(failed)} (logs in {logs})")


def job_plan(profile_name: str) -> list[executors.Job]:
    """The profile's jobs for any executor (see :mod:`adapterscope.executors`): stage 1 the grid-independent
    summaries (one job) and one job per grid cell, stage 2 the other summaries (one job, after all of stage 1);
    each job with its resources from the profile's ``resources`` section."""
    prof = load_profile(profile_name)
    cells, main = grid_cells(prof, "all"), grid_cells(prof, "main")
    res = prof.get("resources")
    executors.check_models_section(res, prof["grid"]["models"])
    side = independent_summaries()
    first = [executors.Job("summaries-" + "-".join(side), ["summary", *side], list(side), 1,
                           executors.resources_for(res, summary=True))] if side else []
    first += [executors.Job(cell_id(c), ["cell", "--index", str(i)], cell_notebooks(c, main), 1,
                            executors.resources_for(res, c["model"])) for i, c in enumerate(cells)]
    rest = [nb for nb in SUMMARY_NOTEBOOKS if nb not in side]
    second = [executors.Job("summaries-" + "-".join(rest), ["summary", *rest], rest, 2,
                            executors.resources_for(res, summary=True), after=[j.name for j in first])] if rest else []
    return first + second


def run_profile(profile_name: str, force: bool = False, log=print, jobs: int | str = 1, executor: str = "local",
                partition: str | None = None) -> None:
    """Every job of the profile's plan. ``local``: stage 1 as ``jobs`` processes at a time (or in this process),
    stage 2 here; a submitit executor: each job through submitit, stage by stage."""
    if executor not in executors.EXECUTORS:
        raise PipelineError(f"unknown executor {executor!r}; choose from {', '.join(executors.EXECUTORS)}")
    plan = job_plan(profile_name)
    t0 = time.time()
    if executor != "local":
        executors.run_submitit(profile_name, plan, executor, paths.project_root(),
                               paths.data_dir() / "logs" / profile_name, force=force, partition=partition, log=log)
        log(f"profile {profile_name}: notebooks done in {time.time() - t0:.0f}s ({executor})")
        return
    first = [j for j in plan if j.stage == 1]
    n = min(resolve_jobs(jobs), len(first))
    if n > 1:  # the grid-independent summaries (the VLM chain) first: the longest task runs beside the cells
        _run_parallel(profile_name, [(j.name, j.args) for j in first], n, force, log)
    else:
        prof = load_profile(profile_name)
        for i in range(len(grid_cells(prof, "all"))):
            run_cell(profile_name, i, force=force, log=log)
        run_summaries(profile_name, independent_summaries(), force=force, log=log)
    for j in plan:
        if j.stage == 2:
            run_summaries(profile_name, j.notebooks, force=force, log=log)
    log(f"profile {profile_name}: notebooks done in {time.time() - t0:.0f}s")


def write_macro_index(profile_name: str) -> Path:
    """paper/generated/all.tex: \\input of every macro file, plus the profile's name."""
    gen = paths.macros_dir()
    files = sorted(p for p in gen.rglob("*.tex") if p.name != "all.tex" and p.parent != gen / "tables")
    git = results.git_state()
    sha = (git["sha"] or "unknown") + ("-dirty" if git["dirty"] else "")
    lines = ["% generated by adapterscope.pipeline; do not edit",
             f"\\newcommand{{\\ProfileName}}{{{results.tex_escape(profile_name)}}}",
             f"\\newcommand{{\\GitSha}}{{{sha}}}", f"\\newcommand{{\\GitShaShort}}{{{sha[:10]}}}"]
    lines += [f"\\input{{generated/{p.relative_to(gen).with_suffix('')}}}" for p in files]
    return paths.write_text_atomic(gen / "all.tex", "\n".join(lines) + "\n")


def build_pdf(log=print) -> Path:
    if shutil.which("latexmk") is None:
        raise PipelineError("latexmk is not installed. As root run: apt-get install -y --no-install-recommends "
                            "texlive-latex-base texlive-latex-recommended latexmk texlive-science "
                            "texlive-pictures lmodern (or `make tex`)")
    paper = paths.project_root() / "paper"
    # latexmk trusts its record of the last complete build (build/main.fdb_latexmk): after a build killed midway,
    # with the sources of that record it takes the killed pass's truncated main.pdf as up to date (copied below, a
    # half-written PDF would replace the good one) or hands its truncated main.aux to bibtex, which then fails on
    # every rerun. The marker lives from before latexmk until the PDF is in place; found, the build starts afresh.
    unfinished = paper / "build" / ".unfinished"
    if unfinished.exists():
        shutil.rmtree(paper / "build")
        log("paper: the previous build did not finish (killed or failed); building from scratch")
    unfinished.parent.mkdir(parents=True, exist_ok=True)
    unfinished.touch()
    proc = subprocess.run(["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-outdir=build",
                           "main.tex"], cwd=paper, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise PipelineError(f"latexmk failed:\n{tail}")
    pdf = paper / "build" / "main.pdf"
    final = paper / "adapterscope.pdf"
    with paths.atomic_path(final) as tmp:  # a reader never sees a half-copied PDF
        shutil.copyfile(pdf, tmp)
    unfinished.unlink()
    log(f"paper: {final}")
    return final


_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _floats(v: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot in the mantissa) as a string: standard float notation becomes a float."""
    if isinstance(v, str) and _EXP_FLOAT.fullmatch(v.strip()):
        return float(v)
    if isinstance(v, list):
        return [_floats(x) for x in v]
    if isinstance(v, dict):
        return {k: _floats(x) for k, x in v.items()}
    return v


def _parse_kv(items: list[str]) -> dict[str, Any]:
    """``-p name=value`` overrides, each value read as YAML (``1e-3`` is a float, as in Python)."""
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise PipelineError(f"parameter {it!r} must look like name=value")
        k, v = it.split("=", 1)
        try:
            out[k] = _floats(yaml.safe_load(v))
        except yaml.YAMLError as e:
            raise PipelineError(f"parameter {k}: value {v!r} is not a literal ({str(e).splitlines()[0]}); "
                                "quote strings, write lists as [a, b]") from None
    return out


def _findings_table() -> None:
    ledger.write_outputs()
    write_timing_table()


def write_timing_table(profile_name: str | None = None) -> Path:
    """paper/generated/tables/timing.tex: work and overhead per notebook and model over the results present
    (``adapterscope.timings``: each run's provenance wall time, and the pipeline's log for kernel start-up and
    imports), with the devices they ran on: how long this build took, measured, not estimated."""
    s = timings.summarise(timings.collect())
    fmt = results.format_number
    lines = [r"\begin{tabular}{llrrr}", r"\toprule", r"notebook & model & runs & work [min] & overhead [min] \\",
             r"\midrule"]
    for r in s["by_notebook_model"]:
        over = fmt(r["overhead_s"] / 60, 2) if r["logged"] else "--"
        lines.append(f"{results.tex_escape(r['notebook'])} & {results.tex_escape(r['model'])} & {r['runs']} & "
                     f"{fmt(r['wall_s'] / 60, 3)} & {over} \\\\")
    n = sum(r["runs"] for r in s["by_notebook_model"])
    lines += [r"\midrule", f"all & & {n} & {fmt(s['total_wall_s'] / 60, 3)} & {fmt(s['total_overhead_s'] / 60, 3)} \\\\",
              r"\bottomrule", r"\end{tabular}", f"% devices: {'; '.join(s['devices']) or 'none'}"]
    return paths.write_text_atomic(paths.macros_dir() / "tables" / "timing.tex", "\n".join(lines) + "\n")


def pipeline_lock():
    """An exclusive lock on ``data/pipeline.lock`` for this process's life (released when it exits, also when it
    is killed): a second pipeline in the same checkout is refused instead of interleaving its writes."""
    import fcntl

    f = paths.data_dir() / "pipeline.lock"
    f.parent.mkdir(parents=True, exist_ok=True)
    fh = open(f, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise PipelineError(f"another pipeline is running in this checkout (pid {holder}, lock {f}); wait for it "
                            "to finish, or run from another clone") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def main(argv: list[str] | None = None) -> int:
    # Kernels inherit this: OpenMP threads sleep while waiting instead of spinning (see the Makefile).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = argparse.ArgumentParser(prog="python -m adapterscope.pipeline", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("paper", "grid"):
        s = sub.add_parser(name)
        s.add_argument("--profile", default="default")
        s.add_argument("--force", action="store_true", help="rerun even when the digest is unchanged")
        s.add_argument("--jobs", default=os.environ.get("JOBS", "auto"),
                       help="grid cells run at once, each in its own process with the CPU's threads split "
                            "between them (auto: 2 on a CPU with >= 2 cores; use 1 on a GPU)")
        s.add_argument("--executor", default=os.environ.get("EXECUTOR") or "local", choices=executors.EXECUTORS,
                       help="where the jobs run: local processes (default), slurm (submitit), submitit-local, "
                            "submitit-debug")
        s.add_argument("--partition", default=os.environ.get("SLURM_PARTITION") or None,
                       help="slurm partition (executor slurm)")
        s.add_argument("--dry-run", action="store_true",
                       help="print the jobs, their resources and their order; run nothing")
    s = sub.add_parser("cell", help="the notebooks of one grid cell (used by --jobs)")
    s.add_argument("--profile", default="default")
    s.add_argument("--index", type=int, required=True)
    s.add_argument("--force", action="store_true")
    s = sub.add_parser("summary", help="summary notebooks of a profile, in the given order (used by --jobs)")
    s.add_argument("notebooks", nargs="+")
    s.add_argument("--profile", default="default")
    s.add_argument("--force", action="store_true")
    s = sub.add_parser("run", help="one notebook with parameters")
    s.add_argument("notebook")
    s.add_argument("-p", "--param", action="append", default=[], help="name=value (YAML literal)")
    s.add_argument("--run-id", default=None, help="must equal the id the notebook writes (checked before running)")
    s.add_argument("--force", action="store_true")
    sub.add_parser("pdf", help="only rebuild the PDF from existing results")
    a = ap.parse_args(argv)
    try:
        # one pipeline per checkout: the cells and summaries it starts (cell / summary) run under its lock
        if a.cmd in ("paper", "grid") and a.dry_run:
            print(executors.format_plan(a.profile, job_plan(a.profile), a.executor))
            return 0
        lock = pipeline_lock() if a.cmd in ("paper", "grid", "run", "pdf") else None
        if lock is not None:
            removed = paths.clean_stale_temporaries()
            if removed:
                print(f"removed {len(removed)} temporary folder(s) left by killed runs", file=sys.stderr)
        if a.cmd in ("paper", "grid"):
            run_profile(a.profile, force=a.force, jobs=a.jobs, executor=a.executor, partition=a.partition)
            if a.cmd == "paper":
                _findings_table()  # before the index: it writes generated/findings/ledger.tex
                write_macro_index(a.profile)
                build_pdf()
        elif a.cmd == "summary":
            run_summaries(a.profile, a.notebooks, force=a.force)
        elif a.cmd == "cell":
            run_cell(a.profile, a.index, force=a.force)
        elif a.cmd == "run":
            ov = _parse_kv(a.param)
            declared = params.validate(params.parse_parameters_cell(notebook_path(a.notebook)), ov, a.notebook)
            rid, ups = single_run(a.notebook, declared, a.run_id)
            run_notebook(a.notebook, ov, rid, upstream=ups, force=a.force)
        elif a.cmd == "pdf":
            _findings_table()
            write_macro_index(os.environ.get("PROFILE", "default"))
            build_pdf()
    except (PipelineError, params.ParameterError, results.ResultsError, executors.ExecutorError,
            FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
