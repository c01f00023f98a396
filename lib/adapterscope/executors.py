"""Where a profile's jobs run: this machine's processes (``local``, the default) or submitit -- ``slurm`` on a
cluster, ``submitit-local`` (submitit's own local subprocesses) and ``submitit-debug`` (in the driver's process,
for tests). No scheduler is written here: submitit submits, tracks and collects the jobs.

The plan (:func:`adapterscope.pipeline.job_plan`) is the same for every executor: stage 1 holds the
grid-independent summaries (the VLM chain, one job, its notebooks in order) and one job per grid cell (its
notebooks in order, 01 -> 02 -> 03 -> 09, each reading the one before); stage 2 holds the remaining summary
notebooks, in order, as one job, started when every stage-1 job has finished. Each job is one
``python -m adapterscope.pipeline cell|summary ...`` command, so inside a job a finished run is skipped by its
content digest exactly as on one machine, and the job's log is its own (submitit's ``<job id>_0_log.out`` under
``data/logs/<profile>/submitit/`` for the submitit executors).

Resources (``cpus_per_task``, ``gpus_per_node``, ``mem_gb``, ``timeout_min``: submitit's names) come from the
profile's optional ``resources`` section -- ``default``, per-model overrides under ``models``, and ``summaries``
for the summary jobs -- over :data:`DEFAULT_RESOURCES`.

Pure orchestration: imports only the standard library (and submitit when a submitit executor runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

EXECUTORS = ("local", "slurm", "submitit-local", "submitit-debug")
_SUBMITIT_CLUSTER = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}
RESOURCE_KEYS = ("cpus_per_task", "gpus_per_node", "mem_gb", "timeout_min")
DEFAULT_RESOURCES = {"cpus_per_task": 2, "gpus_per_node": 0, "mem_gb": 16, "timeout_min": 240}


class ExecutorError(RuntimeError):
    """A plan or executor that cannot run; the message names the fix."""


@dataclass
class Job:
    """One job of a plan: a pipeline sub-command (``cell --index i`` or ``summary nb ...``)."""

    name: str
    args: list[str]
    notebooks: list[str]
    stage: int
    resources: dict[str, Any] = field(default_factory=dict)
    after: list[str] = field(default_factory=list)  # the jobs that must finish first (every earlier stage)


def resources_for(section: dict[str, Any] | None, model: str | None = None, summary: bool = False) -> dict[str, Any]:
    """A job's resources: :data:`DEFAULT_RESOURCES`, then the profile's ``resources.default``, then
    ``resources.models[model]`` (a cell) or ``resources.summaries`` (a summary job); unknown keys refused."""
    section = section or {}
    bad = set(section) - {"default", "models", "summaries"}
    if bad:
        raise ExecutorError(f"profile resources: unknown section(s) {sorted(bad)}; allowed: default, models, summaries")
    out = dict(DEFAULT_RESOURCES)
    layers = [section.get("default") or {}]
    layers.append((section.get("summaries") or {}) if summary else ((section.get("models") or {}).get(model) or {}))
    for layer in layers:
        unknown = set(layer) - set(RESOURCE_KEYS)
        if unknown:
            raise ExecutorError(f"profile resources: unknown key(s) {sorted(unknown)}; allowed: {list(RESOURCE_KEYS)}")
        for k, v in layer.items():
            kinds = (int, float) if k == "mem_gb" else (int,)  # submitit takes whole CPUs, GPUs and minutes
            if not isinstance(v, kinds) or isinstance(v, bool) or v < 0:
                what = "a non-negative number" if k == "mem_gb" else "a non-negative integer"
                raise ExecutorError(f"profile resources: {k} must be {what}, got {v!r}")
            out[k] = v
    return out


def check_models_section(section: dict[str, Any] | None, models: list[str]) -> None:
    alien = sorted(set((section or {}).get("models") or {}) - set(models))
    if alien:
        raise ExecutorError(f"profile resources.models names {alien}, which are not models of the grid {models}")


def format_plan(profile_name: str, jobs: list[Job], executor: str) -> str:
    """The plan as text: stage, job, resources, what it waits for, its notebooks."""
    lines = [f"plan for profile {profile_name} ({len(jobs)} jobs, executor {executor}):"]
    for stage in sorted({j.stage for j in jobs}):
        js = [j for j in jobs if j.stage == stage]
        waits = f"after {len(js[0].after)} stage-{stage - 1} job(s)" if js[0].after else "at once"
        lines.append(f"stage {stage} ({len(js)} job(s), {waits}):")
        for j in js:
            r = j.resources
            lines.append(f"  {j.name:62s} cpus {r['cpus_per_task']:<3g} gpus {r['gpus_per_node']:<2g} "
                         f"mem {r['mem_gb']:g} GB  {r['timeout_min']:g} min  {' -> '.join(j.notebooks)}")
    lines.append("then: the findings table, the macro index and the PDF, on this machine")
    return "\n".join(lines)


def job_command(job: Job, profile_name: str, force: bool) -> list[str]:
    return [sys.executable, "-m", "adapterscope.pipeline", *job.args, "--profile", profile_name] \
        + (["--force"] if force else [])


def run_job(cmd: list[str], root: str, env: dict[str, str], raise_on_failure: bool = True) -> int:
    """The function a submitit job runs: one pipeline sub-command in the project ``root``; a failure fails the
    job (its log holds the pipeline's error). ``raise_on_failure=False`` returns the exit code instead (the debug
    executor would open pdb on a raised error)."""
    rc = subprocess.run(cmd, cwd=root, env={**os.environ, **env, "ADAPTERSCOPE_HOME": root}).returncode
    if rc != 0 and raise_on_failure:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {rc}")
    return rc


def thread_env(threads: int) -> dict[str, str]:
    t = str(max(1, int(threads)))
    return {"OMP_NUM_THREADS": t, "MKL_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t}


def run_submitit(profile_name: str, jobs: list[Job], executor: str, root: Path, log_dir: Path, force: bool = False,
                 partition: str | None = None, log: Callable[[str], None] = print) -> None:
    """Submit the plan stage by stage through submitit and wait for each stage; a failed job stops the plan
    after its stage, naming each failed job and its log."""
    if executor not in _SUBMITIT_CLUSTER:
        raise ExecutorError(f"executor {executor!r} is not a submitit one; choose from {list(_SUBMITIT_CLUSTER)}")
    try:
        import submitit
    except ImportError:
        raise ExecutorError("the submitit executors need submitit: run `make venv` (it is pinned in "
                            "requirements.lock) or `pip install submitit`") from None
    cluster = _SUBMITIT_CLUSTER[executor]
    folder = log_dir / "submitit"
    folder.mkdir(parents=True, exist_ok=True)
    for stage in sorted({j.stage for j in jobs}):
        running = []
        for j in (x for x in jobs if x.stage == stage):
            ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            params: dict[str, Any] = {"name": f"adapterscope-{j.name}"[:120], **j.resources}
            if cluster != "slurm":
                params.pop("mem_gb", None)  # the local executors do not reserve memory
            if cluster == "slurm" and partition:
                params["slurm_partition"] = partition
            ex.update_parameters(**params)
            env = thread_env(j.resources["cpus_per_task"])
            job = ex.submit(run_job, job_command(j, profile_name, force), str(root), env, cluster != "debug")
            log(f"[job ] {j.name}: submitted ({executor} job {job.job_id})")
            running.append((j, job))
        failed = []
        for j, job in running:
            out = getattr(getattr(job, "paths", None), "stdout", None)
            try:
                rc = job.result()
            except Exception as e:  # submitit raises its own FailedJobError / UncompletedJobError
                failed.append(f"{j.name} ({type(e).__name__}; log {out})")
                continue
            if rc != 0:  # the debug executor's jobs return their exit code
                failed.append(f"{j.name} (exit {rc}; log {out})")
            else:
                log(f"[job ] {j.name}: done")
        if failed:
            raise ExecutorError(f"{len(failed)} job(s) of stage {stage} failed: " + "; ".join(failed))
