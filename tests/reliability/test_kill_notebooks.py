"""Reliability matrix, case 8 on the real notebooks: SIGKILL of ``01_finetune`` in the middle of its fine-tuning
loop, of ``02_capture`` in the middle of its paired capture and of ``03_crosscoder`` in the middle of its
crosscoder training, then the same command again.

Each killed run is the pipeline CLI (``python -m adapterscope.pipeline run NB -p ...``) started in its own process
group; the test waits until the notebook's kernel is verifiably inside the phase, then SIGKILLs the pipeline's
process group and the kernel's (jupyter_client starts the kernel in a session of its own, so killing the pipeline's
group alone would leave it running). What the kill must leave: a non-zero exit, no results JSON (or the earlier one
byte for byte), nothing new under a final name but whole artefacts that downstream refuses (they have no record),
hidden temporaries aside. The same command again must redo the run ("[run ]", never "[skip]"), exit 0, and give
the values and artefact bytes of an undisturbed run of the same command in a second, clean project copy.

How the test sees the phase: a ``sitecustomize`` put on the killed run's PYTHONPATH (the kernel inherits it) makes
every ``tqdm.auto`` bar append ``pid, desc, event`` lines to a file (``open``; ``i<k>`` before item k of an
iterated bar; ``n<k>`` after updates totalling k; ``end`` when the iteration is done; ``close``). The bars are the
notebooks' own ("LoRA steps", "paired capture", "crosscoder"); nothing computed changes, and the rerun and the
reference run without it. After the kill the same file proves the kill landed inside the phase (the bar never
ended).

Parameters: the smoke profile's (notebooks/profiles/smoke.yml) cut to seconds per run (02 with write_shards, so a
capture has artefacts to leave), one thread per process (OMP_NUM_THREADS=1: the results are bitwise reproducible at
a fixed thread count), 01's dtype pinned to float32. Ten notebook runs in all, three of them killed: about three
minutes on a 2-core CPU beside other work."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from adapterscope import capture, crosscoder, models, results
from rel_helpers import WRITTEN, cli
from tests.conftest import copy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RID = "smollm2-135m__meditations__none__s0"  # the smoke grid's main cell (the notebooks' default identity)
# smoke.yml's parameters, with fewer steps / rows / tokens; enough loop iterations that a kill lands inside
FT = ["-p", "steps=3", "-p", "eval_rows=4", "-p", "batch_size=2", "-p", "seq_len=32", "-p", "dtype=float32"]
FT_EARLIER = ["-p", "steps=1", *FT[2:]]  # an earlier completed run of the same run id, other parameters
CAP = ["-p", "neutral_n=4", "-p", "neutral_len=32", "-p", "heldout_rows=6", "-p", "seq_len=64", "-p",
       "sites=[resid_post]", "-p", "cka_blocks=2", "-p", "batch_size=2", "-p", "write_shards=true"]
CC = ["-p", "train_rows=8", "-p", "eval_rows=4", "-p", "epochs=8", "-p", "batch_tokens=32", "-p", "expansion=2",
      "-p", "depths=[0.2, 0.8]"]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}

HOOK = r'''"""Test instrumentation (tests/reliability/test_kill_notebooks.py): each tqdm.auto bar of this process
appends "pid<TAB>desc<TAB>event" lines to $ADAPTERSCOPE_TEST_PROGRESS. Computations are untouched."""
import os
import sys

_LOG = os.environ.get("ADAPTERSCOPE_TEST_PROGRESS")
if _LOG:
    import importlib.abc
    import importlib.util

    def _mark(bar, event):
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()}\t{getattr(bar, 'desc', '')}\t{event}\n")

    def _logged(base):
        class Logged(base):
            def __init__(self, *a, **k):
                super().__init__(*a, **k)
                self._kt_count, self._kt_closed = 0, False
                _mark(self, "open")

            def __iter__(self):
                for i, x in enumerate(super().__iter__()):
                    _mark(self, f"i{i}")
                    yield x
                _mark(self, "end")

            def update(self, n=1):
                out = super().update(n)
                self._kt_count = getattr(self, "_kt_count", 0) + n
                _mark(self, f"n{self._kt_count}")
                return out

            def close(self):
                if not getattr(self, "_kt_closed", True):
                    self._kt_closed = True
                    _mark(self, "close")
                return super().close()

        Logged.__name__ = Logged.__qualname__ = base.__name__
        return Logged

    class _AfterTqdmAuto(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "tqdm.auto":
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                module.tqdm = _logged(module.tqdm)

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _AfterTqdmAuto())
'''


def _determinism():
    spec = importlib.util.spec_from_file_location("determinism", REPO / "benchmarks" / "determinism.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def kp(tmp_path_factory):
    """Two project copies sharing the model cache: ``killed`` (the kills and reruns) and ``ref`` (the same commands
    undisturbed); ``hook`` holds the sitecustomize of the killed runs; ``notes`` carries facts between tests."""
    base = tmp_path_factory.mktemp("kill")
    (base / "hook").mkdir()
    (base / "hook" / "sitecustomize.py").write_text(HOOK)
    env = {**ENV, "ADAPTERSCOPE_CACHE": os.environ.get("ADAPTERSCOPE_CACHE", str(REPO / "data" / "cache"))}
    return SimpleNamespace(base=base, hook=base / "hook", env=env, notes={},
                           killed=copy_project(base / "killed"), ref=copy_project(base / "ref"))


# ------------------------------------------------------------------------------------------------ helpers
def _run(kp, root: Path, nb: str, args: list[str]):
    """The pipeline CLI, undisturbed; must exit 0."""
    p = cli(root, "adapterscope.pipeline", "run", nb, *args, env=kp.env, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def _bars(log: Path) -> dict[str, list[list[str]]]:
    """desc -> one event list per bar (in the order the bars were opened)."""
    out: dict[str, list[list[str]]] = {}
    for line in log.read_text().splitlines() if log.is_file() else []:
        parts = line.split("\t")
        if len(parts) != 3:
            continue  # a line being written
        _, desc, event = parts
        if event == "open" or desc not in out:
            out.setdefault(desc, []).append([])
        out[desc][-1].append(event)
    return out


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[int(d)] = (int(fields[1]), fields[0])
    return out


def _descendants(pid: int) -> list[int]:
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for p, (pp, _) in table.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kill_tree(pid: int) -> dict[int, str]:
    """SIGKILL the process group of ``pid`` and that of each of its descendants (the kernel runs in its own);
    returns pid -> command line of what was killed, after waiting until none of it runs any more."""
    procs = {p: _cmdline(p) for p in _descendants(pid)}
    groups = []
    for p in procs:
        try:
            g = os.getpgid(p)
        except ProcessLookupError:
            continue
        if g not in groups:
            groups.append(g)
    for g in groups:
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while True:
        table = _proc_table()
        alive = [p for p in procs if p != pid and p in table and table[p][1] != "Z"]
        if not alive:
            return procs
        assert time.time() < deadline, f"still running after SIGKILL: {[procs[p] for p in alive]}"
        time.sleep(0.05)


def _kill_inside(kp, root: Path, nb: str, args: list[str], inside) -> SimpleNamespace:
    """Start ``pipeline run nb args`` in its own process group, wait until ``inside(bars)`` holds, SIGKILL it and
    its kernel. Returns the exit code, the output and the bars as the kill left them."""
    log = kp.base / f"{root.name}-{nb}.progress"
    log.unlink(missing_ok=True)
    env = {**os.environ, **kp.env, "ADAPTERSCOPE_HOME": str(root), "ADAPTERSCOPE_TEST_PROGRESS": str(log),
           "PYTHONPATH": os.pathsep.join([str(kp.hook), str(root / "lib")])}
    with open(kp.base / f"{root.name}-{nb}.out", "w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "adapterscope.pipeline", "run", nb, *args], cwd=root,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        killed = {}
        try:
            deadline = time.time() + 600
            while not inside(_bars(log)):
                if proc.poll() is not None:
                    out.seek(0)
                    pytest.fail(f"{nb} exited ({proc.returncode}) before reaching the kill point; bars "
                                f"{ {k: [len(b) for b in v] for k, v in _bars(log).items()} }:\n{out.read()[-3000:]}")
                assert time.time() < deadline, f"{nb} never reached the kill point"
                time.sleep(0.02)
            killed = _kill_tree(proc.pid)
        finally:
            if proc.poll() is None:
                _kill_tree(proc.pid)
            proc.wait(timeout=60)
        out.seek(0)
        text = out.read()
    bars = _bars(log)
    kernels = {int(line.split("\t")[0]) for line in log.read_text().splitlines() if line.count("\t") == 2}
    assert any("ipykernel" in c for c in killed.values()), killed  # the kernel was in the tree and was killed
    assert kernels <= set(killed), (kernels, killed)  # the process that showed the phase was one of them
    return SimpleNamespace(returncode=proc.returncode, output=text, bars=bars)


def _visible(root: Path) -> dict[str, str]:
    """sha256 of every file under the folders a run writes, hidden temporaries (any dot-named part) and the
    executed-notebook logs (data/executed, papermill's progress copy, read by nothing) left out."""
    out = {}
    for top in WRITTEN:
        if top == "data/executed":
            continue
        d = root / top
        for f in sorted(d.rglob("*")) if d.is_dir() else []:
            rel = f.relative_to(root)
            if f.is_file() and not any(part.startswith(".") for part in rel.parts):
                out[str(rel)] = results.sha256_file(f)
    return out


def _record(root: Path, nb: str) -> dict:
    return json.loads((root / "results" / nb / f"{RID}.json").read_text())


def _assert_same_values(kp, nb: str) -> None:
    """The rerun's values equal the undisturbed run's (benchmarks/determinism.py: provenance and timings aside)."""
    c = _determinism().compare(_record(kp.killed, nb)["values"], _record(kp.ref, nb)["values"], tol=0.0)
    assert c["n_values"] > 5 and c["n_differ"] == 0, c


def _assert_redone(p, nb: str) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"[run ] {nb} {RID}" in p.stdout and "[skip]" not in p.stdout, p.stdout


def _assert_killed(k) -> None:
    assert k.returncode == -signal.SIGKILL, (k.returncode, k.output[-3000:])
    assert "[done]" not in k.output, k.output[-3000:]


def _entries(root: Path, nb: str, hidden: bool = False) -> list[str]:
    """The artefacts (or, ``hidden``, the hidden temporaries) in the run's artefact folder."""
    d = root / "data" / "runs" / nb / RID
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".") == hidden) if d.is_dir() else []


def _has(bars: dict, desc: str, index: int, event: str) -> bool:
    """Whether bar number ``index`` (0-based, in opening order) of those named ``desc`` logged ``event``."""
    b = bars.get(desc, [])
    return len(b) > index and event in b[index]


# --------------------------------------------------------------------------------------------------- 01
def test_kill_01_mid_finetune_beside_an_earlier_record(kp, monkeypatch):
    """01_finetune killed in its LoRA loop while an earlier run of the same run id (steps=1) has its record and
    adapter: both stay whole; the same command again redoes the steps=3 run (its digest differs from the record's)
    and matches an undisturbed steps=3 run, adapter bytes included."""
    root = kp.killed
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(root))
    _run(kp, root, "01_finetune", FT_EARLIER)
    earlier = _record(root, "01_finetune")
    kp.notes["earlier_adapter"] = earlier["provenance"]["outputs"]["adapter"]
    before = _visible(root)
    k = _kill_inside(kp, root, "01_finetune", FT, lambda b: _has(b, "LoRA steps", 0, "i1"))
    _assert_killed(k)
    assert "end" not in k.bars["LoRA steps"][0], k.bars  # killed before the loop ended
    assert _visible(root) == before  # the steps=1 record, macros, figures and adapter, byte for byte; nothing new
    assert _entries(root, "01_finetune") == ["adapter"]
    assert results.verify_outputs(_record(root, "01_finetune")) == []  # the earlier adapter matches its record
    again = _run(kp, root, "01_finetune", FT)
    _assert_redone(again, "01_finetune")
    rec = _record(root, "01_finetune")
    assert rec["provenance"]["params"]["steps"] == 3 and len(rec["values"]["losses"]) == 3
    assert rec["provenance"]["outputs"]["adapter"] != kp.notes["earlier_adapter"]
    assert _entries(root, "01_finetune") == ["adapter"] and _entries(root, "01_finetune", hidden=True) == []
    _run(kp, kp.ref, "01_finetune", FT)
    _assert_same_values(kp, "01_finetune")
    assert rec["provenance"]["outputs"] == _record(kp.ref, "01_finetune")["provenance"]["outputs"]


# --------------------------------------------------------------------------------------------------- 02
def test_kill_02_mid_capture(kp, monkeypatch):
    """02_capture (write_shards) killed while capturing its second set: the first set's shards, finished, are under
    their final name but have no record (downstream refuses them), the second's only in a hidden .partial.tmp; no JSON.
    The same command again redoes it, reads the new adapter, and matches an undisturbed run (shard bytes too)."""
    root = kp.killed
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(root))
    _run(kp, root, "01_finetune", FT)  # a skip when the 01 test ran
    before = _visible(root)
    k = _kill_inside(kp, root, "02_capture", CAP, lambda b: _has(b, "paired capture", 1, "i1"))
    _assert_killed(k)
    assert "end" not in k.bars["paired capture"][1], k.bars  # killed inside the held-out set's capture
    art = root / "data" / "runs" / "02_capture" / RID
    after = _visible(root)
    assert {f: h for f, h in after.items() if f in before} == before
    new = sorted(set(after) - set(before))
    prefix = f"data/runs/02_capture/{RID}/shards_neutral/"
    assert new and all(f.startswith(prefix) for f in new), new
    assert not (root / "results" / "02_capture" / f"{RID}.json").exists()
    assert _entries(root, "02_capture") == ["shards_neutral"]  # no shards_heldout, not even an empty one
    assert _entries(root, "02_capture", hidden=True) == [".shards_heldout.partial.tmp"]  # where its shards went
    meta = json.loads((art / "shards_neutral" / "meta.json").read_text())
    n = sum(len(b) for b in capture.iter_shards(art / "shards_neutral", models.hook_key(0, "resid_post")))
    assert n == meta["n_tokens"] > 0  # whole: every shard its meta.json lists, checksums matching
    with pytest.raises(results.ResultsError, match="has no results record"):
        results.check_artefact(art / "shards_neutral")  # what 03/09 would do with it
    again = _run(kp, root, "02_capture", CAP)
    _assert_redone(again, "02_capture")
    assert _entries(root, "02_capture") == ["shards_heldout", "shards_neutral"]
    assert _entries(root, "02_capture", hidden=True) == []  # the killed run's .partial.tmp went with the redo
    rec = _record(root, "02_capture")
    assert sorted(rec["provenance"]["outputs"]) == ["shards_heldout", "shards_neutral"]
    assert results.verify_outputs(rec) == []
    adapter = _record(root, "01_finetune")["provenance"]["outputs"]["adapter"]
    assert rec["provenance"]["inputs"]["adapter"] == adapter  # the adapter of the redone steps=3 run ...
    assert adapter != kp.notes.get("earlier_adapter")  # ... not the earlier steps=1 one
    _run(kp, kp.ref, "01_finetune", FT)
    _run(kp, kp.ref, "02_capture", CAP)
    _assert_same_values(kp, "02_capture")
    for s in ("shards_neutral", "shards_heldout"):  # meta.json names its project's adapter path; shards are equal
        sums = [json.loads((r / "data" / "runs" / "02_capture" / RID / s / "meta.json").read_text())["sha256"]
                for r in (root, kp.ref)]
        assert sums[0] == sums[1] and sums[0]


# --------------------------------------------------------------------------------------------------- 03
def test_kill_03_mid_crosscoder_training(kp, monkeypatch):
    """03_crosscoder killed while training its second depth's crosscoder: the first depth's crosscoder, saved, has
    no record (downstream refuses it), no JSON. The same command again redoes it and matches an undisturbed run,
    crosscoder weights included."""
    root = kp.killed
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(root))
    _run(kp, root, "01_finetune", FT)
    _run(kp, root, "02_capture", CAP)
    before = _visible(root)
    k = _kill_inside(kp, root, "03_crosscoder", CC, lambda b: _has(b, "crosscoder", 1, "n1"))
    _assert_killed(k)
    assert "close" not in k.bars["crosscoder"][1] and "close" in k.bars["crosscoder"][0], k.bars
    after = _visible(root)
    assert {f: h for f, h in after.items() if f in before} == before
    new = sorted(set(after) - set(before))
    first = root / "data" / "runs" / "03_crosscoder" / RID / "crosscoder_L6"  # depth 0.2 of 30 layers
    assert new == sorted(str((first / n).relative_to(root)) for n in ("config.json", "model.safetensors",
                                                                     "provenance.json")), new
    assert not (root / "results" / "03_crosscoder" / f"{RID}.json").exists()
    assert _entries(root, "03_crosscoder") == ["crosscoder_L6"]
    assert crosscoder.Crosscoder.load(first).F == 2 * 576  # whole
    with pytest.raises(results.ResultsError, match="has no results record"):
        results.check_artefact(first)  # what 09_clamp would do with it
    again = _run(kp, root, "03_crosscoder", CC)
    _assert_redone(again, "03_crosscoder")
    rec = _record(root, "03_crosscoder")
    assert sorted(rec["provenance"]["outputs"]) == ["crosscoder_L23", "crosscoder_L6"]
    assert results.verify_outputs(rec) == []
    assert _entries(root, "03_crosscoder", hidden=True) == []
    for nb, args in (("01_finetune", FT), ("02_capture", CAP), ("03_crosscoder", CC)):
        _run(kp, kp.ref, nb, args)
    _assert_same_values(kp, "03_crosscoder")
    for layer in ("crosscoder_L6", "crosscoder_L23"):  # provenance.json names its project's paths; weights equal
        digests = [results.sha256_file(r / "data" / "runs" / "03_crosscoder" / RID / layer / "model.safetensors")
                   for r in (root, kp.ref)]
        assert digests[0] == digests[1]
