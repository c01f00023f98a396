"""``make lab``: JupyterLab on ``notebooks/`` with the project's kernel, the jupytext ``.py`` sources opening as
notebooks.

The kernel ``adapterscope`` is this interpreter (the project's venv), installed into ``sys.prefix`` so it is
visible to this JupyterLab only. The server's contents manager is jupytext's, so ``notebooks/NN_slug.py`` is
listed, opened and saved as a notebook (the ``.py`` stays the only source; no ``.ipynb`` is written beside it).
A notebook run there writes the same results files as ``pipeline run`` with its defaults (same run ids); its
provenance says ``executor: interactive`` and it has no content digest, so the next ``make paper`` reruns it.

    python -m adapterscope.lab [--port 8888] [--no-browser] [extra jupyter lab arguments]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from . import paths

KERNEL_NAME = "adapterscope"
CONTENTS_MANAGER = "jupytext.TextFileContentsManager"


def kernel_dir(prefix: str | Path = sys.prefix) -> Path:
    return Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL_NAME


def install_kernelspec(prefix: str | Path = sys.prefix) -> Path:
    """Write the ``adapterscope`` kernelspec (this interpreter) under ``prefix``; returns its kernel.json."""
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"adapterscope (Python {sys.version_info.major}.{sys.version_info.minor})",
            "language": "python", "metadata": {"debugger": True},
            "env": {"OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}}
    path = kernel_dir(prefix) / "kernel.json"
    return paths.write_text_atomic(path, json.dumps(spec, indent=1) + "\n")


def write_settings(prefix: str | Path = sys.prefix) -> Path:
    """JupyterLab overrides under ``prefix``: a double-clicked ``.py`` opens as a notebook (jupytext's viewer)."""
    s = {"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}}}
    path = Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    return paths.write_text_atomic(path, json.dumps(s, indent=1) + "\n")


def lab_argv(root: Path, port: int | None = None, browser: bool = True, extra: list[str] = ()) -> list[str]:
    """The ``jupyter lab`` command line serving ``root/notebooks`` with the project kernel and jupytext."""
    argv = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root / 'notebooks'}",
            f"--ServerApp.contents_manager_class={CONTENTS_MANAGER}",
            f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}"]
    if port is not None:
        argv.append(f"--ServerApp.port={port}")
    if not browser:
        argv.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # containers and CI boxes run as root
    return argv + list(extra)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m adapterscope.lab", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=None)
    ap.add_argument("--no-browser", action="store_true")
    a, extra = ap.parse_known_args(argv)
    missing = [m for m in ("jupyterlab", "jupytext") if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not installed in {sys.prefix}; run `make venv` (requirements.lock "
                 "pins them)")
    root = paths.project_root()
    install_kernelspec()
    write_settings()
    cmd = lab_argv(root, a.port, not a.no_browser, extra)
    print("serving", root / "notebooks", "with kernel", KERNEL_NAME, flush=True)
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
