"""`make lab`: a headless JupyterLab serves notebooks/ with the jupytext sources as notebooks and the project
kernel as the default; the kernelspec and settings land under the given prefix."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from adapterscope import lab, paths

pytest.importorskip("jupyterlab", reason="jupyterlab is in requirements.lock: `make venv` installs it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_kernelspec_and_settings_land_under_the_prefix(tmp_path):
    spec = json.loads(lab.install_kernelspec(tmp_path).read_text())
    assert spec["argv"][0] == sys.executable and spec["argv"][1:3] == ["-m", "ipykernel_launcher"]
    assert "{connection_file}" in spec["argv"] and spec["language"] == "python"
    s = json.loads(lab.write_settings(tmp_path).read_text())
    assert s["@jupyterlab/docmanager-extension:plugin"]["defaultViewers"]["python"] == "Jupytext Notebook"
    argv = lab.lab_argv(paths.project_root(), 9999, browser=False)
    assert f"--ServerApp.root_dir={paths.project_root() / 'notebooks'}" in argv and "--no-browser" in argv


def _get(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_headless_server_lists_the_notebooks_and_the_project_kernel(tmp_path):
    prefix = tmp_path / "prefix"
    lab.install_kernelspec(prefix)
    port, token = _free_port(), "adapterscope-test"
    env = {**os.environ, "JUPYTER_PATH": str(prefix / "share" / "jupyter"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    argv = lab.lab_argv(paths.project_root(), port, browser=False,
                        extra=[f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1"])
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/api"
    try:
        listing = None
        for _ in range(120):
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                listing = _get(f"{base}/contents?token={token}")
                break
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "the server did not answer within 60 s"
        kinds = {c["name"]: c["type"] for c in listing["content"]}
        sources = sorted(p.name for p in (paths.project_root() / "notebooks").glob("[0-9][0-9]*_*.py"))
        assert sources and all(kinds.get(n) == "notebook" for n in sources), kinds
        specs = _get(f"{base}/kernelspecs?token={token}")
        assert specs["default"] == lab.KERNEL_NAME and lab.KERNEL_NAME in specs["kernelspecs"]
        nb = _get(f"{base}/contents/{sources[0]}?token={token}&content=1")
        assert nb["type"] == "notebook" and nb["content"]["cells"]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert proc.returncode is not None
