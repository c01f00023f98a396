"""Reliability matrix, cases 6-8 and 10-12 (docs/reliability.md): kills, corruption, concurrency, a full disk,
divergence and determinism.

Kills and artefact checks run through the real pipeline (papermill, a real kernel) on two probe notebooks written
into an isolated project copy: ``90_probe`` writes an artefact and can SIGKILL its own kernel between writing the
artefact and writing its results JSON (the window in which a killed fine-tune, capture or crosscoder run leaves a
new artefact beside an old record); ``91_probe_down`` reads that artefact the way 02/03/09 read 01's adapter."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from adapterscope import capture, finetune, paths, pipeline, results
from rel_helpers import assert_refused, cli, snapshot

HEADER = """# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
# ---
"""
PROBE = HEADER + '''
# %% tags=["parameters"]
steps = 2  # what the artefact records (a stand-in for a fine-tune's step count)
kill = False  # SIGKILL this kernel after the artefact is written, before the results JSON

# %%
import os
import signal

from adapterscope import params, paths, results

P = params.check(globals())
run = results.Run("90_probe", "r0", params=P)
with paths.atomic_path(results.artefact_dir("90_probe", "r0") / "adapter") as tmp:
    tmp.mkdir()
    (tmp / "weights.txt").write_text("w" * steps)
if kill:
    os.kill(os.getpid(), signal.SIGKILL)
run.values["steps"] = steps
run.write()
'''
DOWN = HEADER + '''
# %% tags=["parameters"]
note = ""  # unused

# %%
from adapterscope import params, results

P = params.check(globals())
run = results.Run("91_probe_down", "r0", params=P)
art = results.artefact_dir("90_probe", "r0") / "adapter"
run.add_input("adapter", art)  # refuses an artefact that differs from 90_probe's record
run.values["read"] = (art / "weights.txt").read_text()
run.write()
'''


@pytest.fixture
def probes(project):
    (project / "notebooks" / "90_probe.py").write_text(PROBE)
    (project / "notebooks" / "91_probe_down.py").write_text(DOWN)
    return project


def _probe(steps=2, kill=False, log=None):
    return pipeline.run_notebook("90_probe", {"steps": steps, "kill": kill}, "r0", log=log or (lambda m: None))


def _weights(root):
    return (root / "data" / "runs" / "90_probe" / "r0" / "adapter" / "weights.txt").read_text()


# ------------------------------------------------------------------------------------------------ case 8
@pytest.mark.integration
def test_kill_between_artefact_and_record_is_redone_not_skipped(probes):
    """A run killed after writing its artefact and before its JSON: the rerun of the recorded setting must redo it
    (the digest skip alone accepted the killed run's artefact), then give the undisturbed run's artefact."""
    rec = _probe(steps=2)
    assert rec["provenance"]["outputs"]["adapter"] == results.sha256_tree(results.artefact_dir("90_probe", "r0") / "adapter")
    with pytest.raises(pipeline.PipelineError, match="the kernel died"):
        _probe(steps=8, kill=True)
    assert _weights(probes) == "w" * 8  # the killed run's artefact beside the steps=2 record
    assert results.load("90_probe", "r0")["values"]["steps"] == 2
    lines = []
    _probe(steps=2, log=lines.append)
    assert any(line.startswith("[redo] 90_probe r0") for line in lines), lines
    assert _weights(probes) == "w" * 2
    lines = []
    again = _probe(steps=2, log=lines.append)
    assert any(line.startswith("[skip]") for line in lines) and again["values"]["steps"] == 2
    assert not list((probes / "data" / "runs" / "90_probe" / "r0").glob(".*"))  # no hidden temporaries left


@pytest.mark.integration
def test_downstream_refuses_an_artefact_that_differs_from_its_record(probes):
    _probe(steps=2)
    (probes / "data" / "runs" / "90_probe" / "r0" / "adapter" / "weights.txt").write_text("tampered")
    before = snapshot(probes)
    with pytest.raises(pipeline.PipelineError, match=r"do not match its record \(adapter: changed\)"):
        pipeline.run_notebook("91_probe_down", {}, "r0", upstream=[("90_probe", "r0")], log=lambda m: None)
    assert snapshot(probes) == before
    # read outside the pipeline (an interactive kernel): the same record check, in add_input
    run = results.Run("91_probe_down", "r0", params={})
    with pytest.raises(results.ResultsError, match="differs from what 90_probe run r0 recorded"):
        run.add_input("adapter", results.artefact_dir("90_probe", "r0") / "adapter")
    # the pipeline redoes the upstream (its artefact does not match), then the downstream reads the good one
    _probe(steps=2)
    out = pipeline.run_notebook("91_probe_down", {}, "r0", upstream=[("90_probe", "r0")], log=lambda m: None)
    assert out["values"]["read"] == "ww"


def test_artefact_without_a_record_is_refused(project):
    """An artefact left by a run that never wrote its JSON (the first run of a cell, killed)."""
    d = results.artefact_dir("01_finetune", "x") / "adapter"
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text("{}")
    with pytest.raises(results.ResultsError, match="has no results record"):
        results.Run("02_capture", "x", params={}).add_input("adapter", d)
    results.Run("01_finetune", "x", params={}).add_input("adapter_written", d)  # its own run may read it


def test_redone_upstream_with_other_bytes_reruns_downstream(project):
    """The downstream digest covers the upstream's artefact digests, not only its content digest."""
    rec = results.Run("90_probe", "r0", params={"steps": 2})
    a = results.artefact_dir("90_probe", "r0") / "adapter"
    a.mkdir(parents=True)
    (a / "weights.txt").write_text("ww")
    rec.write()
    first = results.load("90_probe", "r0")
    (a / "weights.txt").write_text("www")
    rec.write()
    second = results.load("90_probe", "r0")
    assert first["provenance"]["content_digest"] == second["provenance"]["content_digest"]
    assert pipeline.upstream_digest(first) != pipeline.upstream_digest(second)


def test_summary_run_alone_covers_the_grid_runs_present(project):
    """`pipeline run 08_divergence` outside a profile: its upstream is every matching grid run present."""
    for model in ("smollm2-135m", "other-model"):
        r = results.Run("01_finetune", f"{model}__c__none__s0", params={"model": model, "corpus": "meditations"})
        r.write()
    ups = pipeline.present_upstream("08_divergence", {"model_names": ["smollm2-135m"],
                                                      "corpus_names": ["meditations"]})
    assert ups == [("01_finetune", "smollm2-135m__c__none__s0")]
    _, single = pipeline.single_run("08_divergence", {"model_names": ["smollm2-135m", "other-model"],
                                                      "corpus_names": ["meditations"]})
    assert len(single) == 2


# ------------------------------------------------------------------------------------------------ case 6
def test_pickle_adapter_is_refused_and_never_unpickled(tmp_path, monkeypatch, tiny_llama):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}))
    torch.save({"x": torch.zeros(1)}, d / "adapter_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    with pytest.raises(finetune.FinetuneError, match="only as a pickle"):
        finetune.load_adapter(tiny_llama, d)


def test_truncated_adapter_is_refused(tmp_path, tiny_llama):
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=1, batch_size=2, seq_len=8, dtype="float32")
    pm = finetune.add_lora(tiny_llama, cfg)
    out = finetune.save_adapter(pm, tmp_path / "adapter", {"model": "tiny"})
    f = out / "adapter_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(finetune.FinetuneError, match="truncated or damaged"):
        finetune.load_adapter(tiny_llama, out)


class _Batch:
    def __init__(self, t):
        self.t = t

    def tokens(self, key, skip_first=1):
        return self.t


def _shards(d, n=3, tokens=64, width=16):
    w = capture.ShardWriter(d, ["k"], tokens_per_shard=tokens, dtype=torch.float32)
    for i in range(n):
        w.add(_Batch(torch.randn(tokens, 2, width, generator=torch.Generator().manual_seed(i))))
    return w.close()


def test_corrupted_shard_is_refused(tmp_path):
    d = _shards(tmp_path / "shards")
    assert sum(len(b) for b in capture.iter_shards(d, "k")) == 3 * 64
    f = d / "shard_00001.safetensors"
    b = bytearray(f.read_bytes())
    b[200:200 + 1024] = b"\xff" * 1024  # inside the tensor data: loads as NaNs without a checksum
    f.write_bytes(bytes(b))
    with pytest.raises(capture.ShardError, match="differs from the checksum"):
        list(capture.iter_shards(d, "k"))
    meta = json.loads((d / "meta.json").read_text())
    meta.pop("sha256")  # a shard folder without checksums: the non-finite values are still refused
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(capture.ShardError, match="non-finite"):
        list(capture.iter_shards(d, "k"))
    (d / "shard_00002.safetensors").unlink()
    meta["sha256"] = {"shard_00000.safetensors": "x", "shard_00001.safetensors": "y", "shard_00002.safetensors": "z"}
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(capture.ShardError, match="but its meta.json lists"):
        list(capture.iter_shards(d, "k"))


# ----------------------------------------------------------------------------------------------- case 11
@pytest.mark.parametrize("error", ["oserror", "safetensor"])
def test_disk_full_while_writing_a_shard(tmp_path, monkeypatch, error):
    """safetensors reports a failed write as its own SafetensorError (not an OSError): both are caught."""
    import safetensors.torch as st
    from safetensors import SafetensorError

    d = _shards(tmp_path / "shards", n=2)
    old = sorted(p.name for p in d.iterdir())
    real, calls = st.save_file, []

    def full(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) > 1:
            with open(path, "wb") as f:
                f.write(b"half a shard")
            if error == "oserror":
                raise OSError(errno.ENOSPC, "No space left on device")
            raise SafetensorError("Error while serializing: IoError(No space left on device (os error 28))")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(capture.ShardError, match="No space left on device.*nothing was kept"):
        _shards(tmp_path / "shards", n=3)
    assert sorted(p.name for p in d.iterdir()) == old  # the previous capture is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no partial folder


def test_disk_full_in_an_atomic_write(tmp_path, monkeypatch):
    f = tmp_path / "results" / "x.json"
    paths.write_text_atomic(f, "old")
    real = type(f).write_text

    def full(self, *a, **k):
        real(self, "half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(f), "write_text", full)
    with pytest.raises(OSError, match="No space"):
        paths.write_text_atomic(f, "new")
    assert real is not None and f.read_text() == "old"
    assert sorted(p.name for p in f.parent.iterdir()) == ["x.json"]


def test_directory_replacement_is_one_exchange(tmp_path, monkeypatch):
    """The old artefact stays whole until the new one is in place: no moment where the folder is missing."""
    final = tmp_path / "adapter"
    with paths.atomic_path(final) as t:
        t.mkdir()
        (t / "a").write_text("old")
    seen = []
    real = paths._exchange

    def spy(a, b):
        seen.append((final / "a").read_text())  # still the old content, at its place
        ok = real(a, b)
        seen.append(ok)
        return ok

    monkeypatch.setattr(paths, "_exchange", spy)
    with paths.atomic_path(final) as t:
        t.mkdir()
        (t / "a").write_text("new")
    if sys.platform.startswith("linux"):
        assert real(tmp_path / "nonexistent-a", tmp_path / "nonexistent-b") is False
        assert seen == ["old", True]  # the exchange itself did it, not the two-rename fallback
    assert seen[0] == "old" and (final / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_stale_temporaries_are_cleaned_young_ones_kept(project):
    old = paths.figures_dir() / "08_divergence" / ".fig.pdf.abc.tmp"
    young = paths.results_dir() / "01_finetune" / ".x.json.def.tmp"
    part = paths.runs_dir() / "02_capture" / "r" / ".shards_neutral.partial.tmp"  # capture.ShardWriter's
    pdf_copy = paths.project_root() / "paper" / ".adapterscope.pdf.ghi.tmp"  # a killed PDF copy
    swap = paths.runs_dir() / "03_crosscoder" / "r" / ".cc.old"  # replace_dir's two-rename fallback
    # what versions before #39 left (Crosscoder.save / save_checkpoint, ShardWriter, the old crosscoder swap):
    # still cleaned, so that a run killed before an upgrade leaves nothing behind after it
    legacy = [paths.runs_dir() / "03_crosscoder" / "r" / n for n in (".cc.tmp-1a2b3c4d", ".cc.old-5e6f7a8b")]
    legacy.append(paths.runs_dir() / "02_capture" / "r" / ".shards_heldout.partial")
    for d in (old, young, part, pdf_copy, swap, *legacy):
        d.mkdir(parents=True, exist_ok=True)
        (d / "payload").write_text("half")
    past = time.time() - 3600
    for d in (old, part, pdf_copy, swap, *legacy):
        os.utime(d / "payload", (past, past))
        os.utime(d, (past, past))
    removed = paths.clean_stale_temporaries()
    assert sorted(removed) == sorted([old, part, pdf_copy, swap, *legacy]) and young.exists() and not old.exists()


# ----------------------------------------------------------------------------------------------- case 10
def test_second_pipeline_in_the_same_checkout_is_refused(project):
    lock = pipeline.pipeline_lock()
    try:
        before = snapshot(project)
        proc = cli(project, "adapterscope.pipeline", "pdf")
        assert_refused(proc, f"another pipeline is running in this checkout (pid {os.getpid()}", project, before)
    finally:
        lock.close()
    holder = subprocess.Popen([sys.executable, "-c", "import time; from adapterscope import pipeline; "
                               "l = pipeline.pipeline_lock(); print('held', flush=True); time.sleep(60)"],
                              env={**os.environ, "PYTHONPATH": str(project / "lib")}, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(pipeline.PipelineError, match="another pipeline"):
            pipeline.pipeline_lock()
    finally:
        holder.kill()  # a killed holder releases the lock with its process
        holder.wait()
    pipeline.pipeline_lock().close()


# ----------------------------------------------------------------------------------------------- case 7
def test_diverging_fine_tune_stops_at_the_first_non_finite_step(tiny_llama):
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=6, batch_size=4, seq_len=16, lr=1e30, dtype="float32",
                                  max_grad_norm=0.0)
    pm = finetune.add_lora(tiny_llama, cfg)
    rows = torch.randint(0, 97, (8, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(finetune.FinetuneError, match="lower lr"):
        finetune.train(pm, rows, cfg, progress=False)


def test_weights_that_overflow_in_the_last_step_are_refused(tiny_llama):
    """The last step's loss is finite (it is computed before the update), the update makes the weights inf."""
    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=1, batch_size=4, seq_len=16, lr=float("inf"),
                                  dtype="float32", max_grad_norm=0.0)
    pm = finetune.add_lora(tiny_llama, cfg)
    rows = torch.randint(0, 97, (8, 16), generator=torch.Generator().manual_seed(0))
    with pytest.raises(finetune.FinetuneError, match="became non-finite in the last step"):
        finetune.train(pm, rows, cfg, progress=False)


def test_results_json_is_written_after_the_macros(project, monkeypatch):
    """The JSON is the commit marker a skip trusts: a kill between the two writes must leave the old JSON."""
    order = []
    real = paths.write_text_atomic
    monkeypatch.setattr(paths, "write_text_atomic", lambda p, t: (order.append(p.suffix), real(p, t))[1])
    results.Run("90_probe", "r0", params={}).write()
    assert order == [".tex", ".json"]


def test_file_replacing_a_folder_and_folder_replacing_a_file(tmp_path):
    f = tmp_path / "x"
    f.mkdir()
    (f / "old").write_text("old")
    paths.write_text_atomic(f, "now a file")
    assert f.read_text() == "now a file"
    with paths.atomic_path(f) as t:
        t.mkdir()
        (t / "new").write_text("a folder again")
    assert (f / "new").read_text() == "a folder again" and sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_a_temporary_still_being_written_deep_inside_is_kept(project):
    d = paths.runs_dir() / "02_capture" / "r" / ".shards_neutral.partial.tmp"
    d.mkdir(parents=True)
    (d / "shard_00000.safetensors").write_text("old shard")
    past = time.time() - 3600
    os.utime(d / "shard_00000.safetensors", (past, past))
    os.utime(d, (past, past))
    (d / "meta.json").write_text("{}")  # written just now...
    os.utime(d, (past, past))  # ...without the folder's own time moving (as a rewrite of a file in place)
    assert paths.clean_stale_temporaries() == [] and d.exists()


# ----------------------------------------------------------------------------------------------- case 12
def test_identical_fine_tunes_write_identical_adapter_bytes(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    digests = []
    for i in range(2):
        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
        cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=4, seq_len=16, lr=1e-2, dtype="float32")
        pm = finetune.add_lora(m, cfg)
        rows = torch.randint(0, 97, (8, 16), generator=torch.Generator().manual_seed(0))
        finetune.train(pm, rows, cfg, progress=False)
        out = finetune.save_adapter(pm, tmp_path / f"a{i}", {"model": "tiny"})
        digests.append(results.sha256_file(out / "adapter_model.safetensors"))
    assert digests[0] == digests[1]


# ---------------------------------------------------------------------------------------------- PDF build
def test_pdf_copy_killed_midway_leaves_the_old_pdf(project, monkeypatch):
    paper = project / "paper"
    (paper / "build").mkdir(exist_ok=True)
    (paper / "build" / "main.pdf").write_bytes(b"%PDF new")
    (paper / "adapterscope.pdf").write_bytes(b"%PDF old")
    monkeypatch.setattr(pipeline.shutil, "which", lambda name: "/bin/true")
    monkeypatch.setattr(pipeline.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))

    def killed(src, dst):
        with open(dst, "wb") as f:
            f.write(b"%PD")
        raise KeyboardInterrupt  # stands in for the signal that stops the copy

    monkeypatch.setattr(pipeline.shutil, "copyfile", killed)
    with pytest.raises(KeyboardInterrupt):
        pipeline.build_pdf(log=lambda m: None)
    assert (paper / "adapterscope.pdf").read_bytes() == b"%PDF old"
    assert not [p for p in paper.iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------------ case 3
class _CharTokenizer:
    """One token per character (enough for packing)."""
    bos_token_id, eos_token_id = 1, 2

    def __call__(self, docs, add_special_tokens=False):
        return {"input_ids": [[3 + (ord(c) % 90) for c in d] for d in docs]}


def test_corpus_too_short_for_one_row():
    rows = finetune.pack_documents(_CharTokenizer(), ["x" * 40], seq_len=16)
    assert rows.shape == (2, 16)
    with pytest.raises(finetune.FinetuneError, match="fewer than one row of 64; use a shorter seq_len"):
        finetune.pack_documents(_CharTokenizer(), ["short", "docs"], seq_len=64)
    with pytest.raises(finetune.FinetuneError, match="the corpus is empty"):
        finetune.pack_documents(_CharTokenizer(), [], seq_len=64)
