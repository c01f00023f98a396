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
# What a training-dose cell (grid.dose) runs, and its layer control: its lowest dose is the main grid's cell.
DOSE_NOTEBOOKS = ("01_finetune", "02_capture", "03_crosscoder")
DOSE_LAYER_CONTROL = "none"
# Notebooks run once per profile after the grid, in this order, with the grid's lists as parameters.
SUMMARY_NOTEBOOKS = ("08_divergence", "04_cka", "05a_vlm", "05b_regime_probing", "06_escape_routes",
                     "10_decorrelation", "11_dose", "07_portability", "12_composition", "13_calibration")
# The cell notebooks each summary notebook reads (its digest covers their runs over the grid) and the summary
# notebooks it reads.
SUMMARY_READS = {"08_divergence": ["01_finetune", "02_capture"],
                 "04_cka": ["01_finetune", "02_capture", "03_crosscoder"],
                 "10_decorrelation": ["01_finetune", "02_capture", "03_crosscoder", "09_clamp"],
                 "11_dose": ["01_finetune", "02_capture", "03_crosscoder"],  # dose cells + their main-grid cells
                 "07_portability": ["01_finetune"],  # grid.portability's source adapters (and targets' own)
                 "12_composition": ["01_finetune"],  # the corpus adapters grid.composition composes
                 "13_calibration": ["01_finetune"],  # the adapters grid.calibration plants into and pairs
                 "05a_vlm": [], "05b_regime_probing": [],  # the VLM notebooks do not read the language grid
                 "06_escape_routes": []}
SUMMARY_AFTER: dict[str, list[str]] = {"05b_regime_probing": ["05a_vlm"],
                                       "06_escape_routes": ["05a_vlm", "05b_regime_probing"]}


class PipelineError(RuntimeError):
    pass


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


def preflight(merged: dict[str, Any]) -> None:
    """Fail before a kernel starts on what cannot work: names that cannot resolve (model, corpus, lists of them),
    a CUDA device where there is none, a site that does not exist, a relative depth outside [0, 1], and layer
    indices outside the model (read from its config.json, without loading weights)."""
    from . import corpora, models

    try:
        if isinstance(merged.get("device"), str):
            models.check_device(merged["device"])
        for key in ("model", "model_names"):
            for m in ([merged[key]] if isinstance(merged.get(key), str) else merged.get(key) or []):
                models.check_name(m)
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


def grid_cells(profile: dict[str, Any], which: str = "all") -> list[dict[str, Any]]:
    """The (model, corpus, layer_control, seed) cells of a profile.

    ``grid`` is a product of ``models x corpora x layer_controls x seeds``; an optional ``grid.control``
    (``{layer_control, models, corpora, seeds}``) adds the depth-profile control runs (default: for every model
    and corpus of the grid). An optional ``grid.dose`` (``{models, corpora, seeds, levels}``) adds training-dose
    runs: each level is a mapping of 01_finetune parameters (e.g. ``{steps: 200, lr: 2.0e-3}``), run with
    layer_control none for every model x corpus x seed of the block; a dose cell also holds ``dose_tag``
    (:func:`params.dose_tag`, appended to its run id) and ``dose`` (the level). Its lowest dose is the main grid's
    own cell, so a level equal to the main grid's 01_finetune parameters is refused.
    ``which``: ``main``, ``control``, ``dose`` or ``all``."""
    g = profile.get("grid", {})
    keys = ("models", "corpora", "layer_controls", "seeds")
    missing = [k for k in keys if k not in g]
    if missing:
        raise PipelineError(f"profile grid lacks {missing}")
    blocks = ["control", "dose", "portability", "composition", "calibration"]
    extra = set(g) - set(keys) - set(blocks)
    if extra:
        raise PipelineError(f"profile grid: unknown key(s) {sorted(extra)}; allowed: {list(keys) + blocks}")
    if g.get("portability"):
        portability_block(g)
    if g.get("composition"):
        composition_block(g)
    if g.get("calibration"):
        calibration_block(g)
    by_model = seeds_by_model(g)
    main = [{"model": m, "corpus": c, "layer_control": lc, "seed": s}
            for m, c, lc in itertools.product(g["models"], g["corpora"], g["layer_controls"]) for s in by_model[m]]
    ctl = []
    if g.get("control"):
        c = g["control"]
        bad = set(c) - {"layer_control", "models", "corpora", "seeds"}
        if bad or "layer_control" not in c:
            raise PipelineError("grid.control needs layer_control and may have models, corpora and seeds; "
                                f"got {sorted(c)}")
        if isinstance(g["seeds"], dict) and "seeds" not in c:
            raise PipelineError("grid.control needs its own seeds when grid.seeds is a per-model mapping")
        alien = [m for m in c.get("models", []) if m not in g["models"]]
        if alien:
            raise PipelineError(f"grid.control.models {alien} are not in grid.models {g['models']}")
        ctl = [{"model": m, "corpus": co, "layer_control": c["layer_control"], "seed": s}
               for m in c.get("models", g["models"]) for co in c.get("corpora", g["corpora"])
               for s in c.get("seeds", by_model[m])]
        ctl = [x for x in ctl if x not in main]
    dose = dose_cells(g, by_model, (profile.get("notebooks") or {}).get("01_finetune") or {}) if g.get("dose") else []
    if which not in ("main", "control", "dose", "all"):
        raise PipelineError(f"grid_cells: which must be main, control, dose or all, got {which!r}")
    return {"main": main, "control": ctl, "dose": dose, "all": main + ctl + dose}[which]


def portability_block(g: dict[str, Any]) -> dict[str, Any]:
    """``grid.portability`` validated: ``pairs`` (a list of [source model, target model], each source a model of
    the grid, the target any model name, never the source), and optional ``corpora`` and ``seeds`` (of the grid;
    default its corpora and its first seed). 07_portability transfers the main grid's adapter of each source x
    corpus x seed (layer_control none) to each pair's target."""
    d = g["portability"]
    if not isinstance(d, dict) or set(d) - {"pairs", "corpora", "seeds"} or not d.get("pairs"):
        raise PipelineError("grid.portability needs pairs (a list of [source model, target model]) and may have "
                            f"corpora and seeds; got {sorted(d) if isinstance(d, dict) else d!r}")
    pairs = d["pairs"]
    if not all(isinstance(p, (list, tuple)) and len(p) == 2 and p[0] != p[1] for p in pairs):
        raise PipelineError(f"grid.portability.pairs: each pair is [source, target] with two different models; "
                            f"got {pairs!r}")
    alien = [p[0] for p in pairs if p[0] not in g["models"]]
    if alien:
        raise PipelineError(f"grid.portability: sources {alien} are not in grid.models {g['models']} (a source's "
                            "adapter comes from the main grid)")
    if DOSE_LAYER_CONTROL not in g["layer_controls"]:
        raise PipelineError(f"grid.portability needs layer_control {DOSE_LAYER_CONTROL!r} in grid.layer_controls")
    corpora = d.get("corpora", g["corpora"])
    alien = [c for c in corpora if c not in g["corpora"]]
    if alien:
        raise PipelineError(f"grid.portability.corpora {alien} are not in grid.corpora {g['corpora']}")
    by_model = seeds_by_model(g)
    seeds = d.get("seeds", [min(all_seeds(g))])
    for m in dict.fromkeys(p[0] for p in pairs):
        alien = [s for s in seeds if s not in by_model[m]]
        if alien:
            raise PipelineError(f"grid.portability.seeds {alien} are not seeds of {m} in the grid ({by_model[m]})")
    return {"pairs": [list(p) for p in pairs], "corpora": list(corpora), "seeds": list(seeds)}


def grid_subset(g: dict[str, Any], block: str, defaults: dict[str, list]) -> dict[str, Any]:
    """``grid.<block>`` as a part of the main grid, validated: optional ``models``, ``corpora`` and ``seeds``
    (``defaults`` where absent), each of the grid; seeds each of its models has; and the main grid's layer
    control none (the block reads those cells' adapters)."""
    d = g[block]
    if not isinstance(d, dict) or set(d) - {"models", "corpora", "seeds"}:
        raise PipelineError(f"grid.{block} may have models, corpora and seeds; "
                            f"got {sorted(d) if isinstance(d, dict) else d!r}")
    out = {k: list(d.get(k, v)) for k, v in defaults.items()}
    for key in ("models", "corpora"):
        alien = [x for x in out[key] if x not in g[key]]
        if alien:
            raise PipelineError(f"grid.{block}.{key} {alien} are not in grid.{key} {g[key]}")
    if DOSE_LAYER_CONTROL not in g["layer_controls"]:
        raise PipelineError(f"grid.{block} needs layer_control {DOSE_LAYER_CONTROL!r} in grid.layer_controls")
    by_model = seeds_by_model(g)
    for m in out["models"]:
        alien = [s for s in out["seeds"] if s not in by_model[m]]
        if alien:
            raise PipelineError(f"grid.{block}.seeds {alien} are not seeds of {m} in the grid ({by_model[m]})")
    return out


def composition_block(g: dict[str, Any]) -> dict[str, Any]:
    """``grid.composition`` validated (:func:`grid_subset`; default: the grid's first model, all its corpora, its
    first seed), with at least two corpora. 12_composition composes the main grid's corpus adapters (layer_control
    none) of each model and seed."""
    out = grid_subset(g, "composition", {"models": g["models"][:1], "corpora": g["corpora"],
                                         "seeds": [min(all_seeds(g))]})
    if len(out["corpora"]) < 2:
        raise PipelineError(f"grid.composition needs at least two corpora to compose, got {out['corpora']}")
    return out


def calibration_block(g: dict[str, Any]) -> dict[str, Any]:
    """``grid.calibration`` validated (:func:`grid_subset`; default: the grid's first model, its first corpus,
    its first two seeds), with one or two seeds. 13_calibration plants features into the main grid's adapter of
    each model x corpus at the first seed; the second seed's adapter is the seed-pair null (none with one seed)."""
    out = grid_subset(g, "calibration", {"models": g["models"][:1], "corpora": g["corpora"][:1],
                                         "seeds": all_seeds(g)[:2]})
    if not 1 <= len(out["seeds"]) <= 2:
        raise PipelineError(f"grid.calibration.seeds: one or two seeds (the planted adapter, then the seed-pair "
                            f"null), got {out['seeds']}")
    return out


def dose_cells(g: dict[str, Any], by_model: dict[str, list[int]], ft_overrides: dict[str, Any]) -> list[dict]:
    """The cells of ``grid.dose`` (see :func:`grid_cells`), validated: known keys, models / corpora / seeds of the
    grid, levels that are distinct, non-empty mappings of 01_finetune parameters other than the main grid's."""
    d = g["dose"]
    if not isinstance(d, dict) or set(d) - {"models", "corpora", "seeds", "levels"} or not d.get("levels"):
        raise PipelineError("grid.dose needs levels (a list of 01_finetune parameter mappings) and may have "
                            f"models, corpora and seeds; got {sorted(d) if isinstance(d, dict) else d!r}")
    if isinstance(g["seeds"], dict) and "seeds" not in d:
        raise PipelineError("grid.dose needs its own seeds when grid.seeds is a per-model mapping")
    if DOSE_LAYER_CONTROL not in g["layer_controls"]:
        raise PipelineError(f"grid.dose needs layer_control {DOSE_LAYER_CONTROL!r} in grid.layer_controls "
                            "(its lowest dose is that main-grid cell)")
    for key in ("models", "corpora"):
        alien = [x for x in d.get(key, []) if x not in g[key]]
        if alien:
            raise PipelineError(f"grid.dose.{key} {alien} are not in grid.{key} {g[key]}")
    models = d.get("models", g["models"])
    for m in models:
        alien = [s for s in d.get("seeds", []) if s not in by_model[m]]
        if alien:
            raise PipelineError(f"grid.dose.seeds {alien} are not seeds of {m} in the grid ({by_model[m]})")
    declared = params.parse_parameters_cell(notebook_path("01_finetune"))
    main_ft = params.validate(declared, ft_overrides, where="01_finetune")
    identity = {"model", "corpus", "layer_control", "seed", "dose_tag"}
    tags = []
    for lev in d["levels"]:
        if not isinstance(lev, dict) or not lev or identity & set(lev):
            raise PipelineError(f"grid.dose.levels: each level is a non-empty mapping of 01_finetune parameters "
                                f"other than {sorted(identity)}; got {lev!r}")
        try:
            params.validate(declared, lev, where="grid.dose.levels (01_finetune parameters)")
        except params.ParameterError as e:
            raise PipelineError(str(e)) from None
        if all(main_ft[k] == v for k, v in lev.items()):
            raise PipelineError(f"grid.dose level {lev} is the main grid's own 01_finetune setting: the dose "
                                "analysis takes that cell as its lowest dose; drop the level")
        tags.append(params.dose_tag(lev))
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise PipelineError(f"grid.dose.levels repeat {dup}")
    return [{"model": m, "corpus": c, "layer_control": DOSE_LAYER_CONTROL, "seed": s, "dose_tag": tag,
             "dose": dict(lev)}
            for m in models for c in d.get("corpora", g["corpora"]) for s in d.get("seeds", by_model[m])
            for tag, lev in zip(tags, d["levels"])]


def seeds_by_model(g: dict[str, Any]) -> dict[str, list[int]]:
    """``grid.seeds`` is a list (every model) or a mapping model -> list (e.g. fewer seeds for a slower model)."""
    seeds = g["seeds"]
    if isinstance(seeds, dict):
        missing, extra = set(g["models"]) - set(seeds), set(seeds) - set(g["models"])
        if missing or extra:
            raise PipelineError(f"grid.seeds as a mapping needs exactly the grid's models as keys; "
                                f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return {m: list(seeds[m]) for m in g["models"]}
    return {m: list(seeds) for m in g["models"]}


def all_seeds(g: dict[str, Any]) -> list[int]:
    """Every seed of the grid, over all models (the union when ``grid.seeds`` is a per-model mapping)."""
    return sorted({s for v in seeds_by_model(g).values() for s in v})


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
    """Everything a summary notebook may declare about the grid (each takes the names it declares)."""
    g = prof["grid"]
    c, d = g.get("control") or {}, g.get("dose") or {}
    return {"model_names": g["models"], "corpus_names": g["corpora"], "layer_controls": g["layer_controls"],
            "seeds": all_seeds(g), "seeds_by_model": seeds_by_model(g) if isinstance(g["seeds"], dict) else {},
            "profile": profile_name,
            "control": c.get("layer_control", ""), "control_models": c.get("models", g["models"] if c else []),
            "control_corpora": c.get("corpora", g["corpora"] if c else []),
            "control_seeds": c.get("seeds", all_seeds(g) if c else []),
            "dose_models": d.get("models", g["models"] if d else []),
            "dose_corpora": d.get("corpora", g["corpora"] if d else []),
            "dose_seeds": d.get("seeds", all_seeds(g) if d else []), "dose_levels": d.get("levels", []),
            **({f"port_{k}": v for k, v in portability_block(g).items()} if g.get("portability")
               else {"port_pairs": [], "port_corpora": [], "port_seeds": []}),
            **({f"comp_{k}": v for k, v in composition_block(g).items()} if g.get("composition")
               else {"comp_models": [], "comp_corpora": [], "comp_seeds": []}),
            **({f"cal_{k}": v for k, v in calibration_block(g).items()} if g.get("calibration")
               else {"cal_models": [], "cal_corpora": [], "cal_seeds": []})}


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
        base = [c for c in main if c["layer_control"] == DOSE_LAYER_CONTROL
                and (c["model"], c["corpus"], c["seed"]) in starts]
        return base + dose
    if nb == "07_portability":
        if not prof["grid"].get("portability"):
            return []
        pb = portability_block(prof["grid"])
        # the sources' adapters, and the targets' own adapters of the same corpus and seed where the target is in
        # the grid: a case reuses that one as its ceiling (the direct LoRA) instead of training it again
        case_models = {m for p in pb["pairs"] for m in p}
        return [c for c in main if c["layer_control"] == DOSE_LAYER_CONTROL and c["model"] in case_models
                and c["corpus"] in pb["corpora"] and c["seed"] in pb["seeds"]]
    subset = {"12_composition": ("composition", composition_block),  # blocks that read a part of the main grid
              "13_calibration": ("calibration", calibration_block)}
    if nb in subset:
        key, block = subset[nb]
        if not prof["grid"].get(key):
            return []
        cb = block(prof["grid"])
        return [c for c in main if c["layer_control"] == DOSE_LAYER_CONTROL and c["model"] in cb["models"]
                and c["corpus"] in cb["corpora"] and c["seed"] in cb["seeds"]]
    return main + grid_cells(prof, "control")


def summary_upstream(nb: str, prof: dict[str, Any]) -> list[tuple[str, str]]:
    """(notebook, run id) of every run a summary notebook reads over the profile's grid."""
    main = grid_cells(prof, "main")
    reads = SUMMARY_READS.get(nb, list(CELL_NOTEBOOKS))
    ups = [(u, cell_id(c)) for c in summary_cells(nb, prof) for u in reads if u in cell_notebooks(c, main)]
    return ups + [(u, "grid") for u in SUMMARY_AFTER.get(nb, [])]


def load_profile(profile_name: str) -> dict[str, Any]:
    return params.load_profile(paths.project_root() / "notebooks" / "profiles" / f"{profile_name}.yml")


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
