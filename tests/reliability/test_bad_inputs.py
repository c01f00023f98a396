"""Reliability matrix, cases 1-5 and 9 (docs/reliability.md): bad names, parameters, corpora, layers, sites,
devices, profiles, findings and upstream records given to the CLIs. Each case must end in the project's
one-line error naming the fix, exit 2, and nothing written under results/, figures/, paper/generated/ or
data/ (runs, executed notebooks). No model is loaded: every check runs before a kernel starts."""

from __future__ import annotations

import pytest
import torch

from adapterscope import params
from rel_helpers import assert_refused, cli, snapshot, tiny_model_dir  # noqa: F401  (fixture)

RID = params.cell_run_id("smollm2-135m", "meditations", "none", 0)


def _pipeline(root, *args):
    return cli(root, "adapterscope.pipeline", *args)


CASES = {  # id: (argv after `pipeline`, message the error must contain)
    # 1. models
    "unknown-model": (["run", "01_finetune", "-p", "model=nosuch-model"], "unknown model 'nosuch-model'"),
    "hub-id-hub-off": (["run", "01_finetune", "-p", "model=someorg/some-model"], "hub access is off"),
    "owner-less-hub-id": (["run", "01_finetune", "-p", "model=gpt2"], "hub access is off"),
    "missing-model-dir": (["run", "01_finetune", "-p", "model=./no/such/dir"], "no such directory"),
    # 2. parameters
    "misspelt-param": (["run", "01_finetune", "-p", "stepz=2"], "unknown parameter(s) 'stepz' (did you mean 'steps'?)"),
    "steps-abc": (["run", "01_finetune", "-p", "steps=abc"], "parameter 'steps' must be int"),
    "steps-float": (["run", "01_finetune", "-p", "steps=2.5"], "parameter 'steps' must be int"),
    "steps-list": (["run", "01_finetune", "-p", "steps=[1, 2]"], "parameter 'steps' must be int"),
    "malformed-value": (["run", "01_finetune", "-p", "steps=[1,"], "is not a literal"),
    "no-equals": (["run", "01_finetune", "-p", "steps"], "must look like name=value"),
    # 3. corpora
    "unknown-corpus": (["run", "01_finetune", "-p", "corpus=nosuch"], "unknown corpus 'nosuch'"),
    "missing-corpus-file": (["run", "01_finetune", "-p", "corpus=file:/no/such/corpus.txt"], "not found"),
    # 4. layers, depths, sites
    "depth-above-one": (["run", "03_crosscoder", "-p", "depths=[0.5, 1.5]"], "outside [0, 1]"),
    "depth-negative": (["run", "03_crosscoder", "-p", "depths=[-0.1]"], "outside [0, 1]"),
    "unknown-site": (["run", "02_capture", "-p", "sites=[resid_pre]"], "unknown site 'resid_pre'"),
    # 5. upstream
    "upstream-missing": (["run", "02_capture"], f"needs 01_finetune {RID} first"),
    "summary-upstream-missing": (["run", "06_escape_routes"], "needs 05a_vlm grid first"),
    # 9. device, profile, notebook
    "unknown-profile": (["paper", "--profile", "nosuch"], "profile 'nosuch' not found"),
    "unknown-notebook": (["run", "99_nosuch"], "no notebook '99_nosuch'"),
    "run-id-mismatch": (["run", "01_finetune", "--run-id", "other"], "writes the run"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refused_before_any_kernel(project, case):
    argv, msg = CASES[case]
    before = snapshot(project)
    assert_refused(_pipeline(project, *argv), msg, project, before)


def test_cuda_without_cuda(project):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = snapshot(project)
    assert_refused(_pipeline(project, "run", "01_finetune", "-p", "device=cuda"), "CUDA", project, before)


def test_local_dir_that_is_not_a_model(project, tmp_path):
    (tmp_path / "notamodel").mkdir()
    before = snapshot(project)
    proc = _pipeline(project, "run", "01_finetune", "-p", f"model={tmp_path / 'notamodel'}")
    assert_refused(proc, "a directory without config.json", project, before)


def test_layer_out_of_range(project, tiny_model_dir):
    before = snapshot(project)
    proc = _pipeline(project, "run", "02_capture", "-p", f"model={tiny_model_dir}", "-p", "layers=[0, 3]")
    assert_refused(proc, "layers [3] are out of range", project, before)
    proc = _pipeline(project, "run", "02_capture", "-p", f"model={tiny_model_dir}", "-p", "layers=[-4]")
    assert_refused(proc, "layers [-4] are out of range", project, before)


@pytest.mark.parametrize("content", ["", "  \n\n \n"])
def test_empty_corpus_file(project, tmp_path, content):
    f = tmp_path / "empty.txt"
    f.write_text(content)
    before = snapshot(project)
    assert_refused(_pipeline(project, "run", "01_finetune", "-p", f"corpus=file:{f}"), "is empty", project, before)


@pytest.mark.parametrize("garbage,msg", [("{not json", "is not valid JSON"), ("", "is not valid JSON"),
                                         (b"\xff\xfe\x00garbage", "is not valid JSON"),
                                         ("[1, 2]", "is not a results record"),
                                         ('{"values": {}}', "is not a results record")])
def test_upstream_record_edited_into_garbage(project, garbage, msg):
    rec = project / "results" / "01_finetune" / f"{RID}.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_bytes(garbage if isinstance(garbage, bytes) else garbage.encode())
    before = snapshot(project)
    proc = _pipeline(project, "run", "02_capture")
    assert_refused(proc, msg, project, before)
    assert str(rec) in proc.stderr  # names the file


def test_broken_profile_yaml(project):
    (project / "notebooks" / "profiles" / "broken.yml").write_text("grid: [models, \n  corpora: {\n")
    before = snapshot(project)
    assert_refused(_pipeline(project, "paper", "--profile", "broken"), "is not valid YAML at line", project, before)


def test_unknown_finding(project):
    before = snapshot(project)
    proc = cli(project, "adapterscope.findings", "reproduce", "no-such-finding")
    assert_refused(proc, "no-such-finding", project, before)


def test_findings_check_on_garbage_result(project):
    """`make findings` on a results file edited into garbage: the file named, exit 2, not a traceback."""
    from adapterscope import ledger

    first = next(iter(ledger.load_ledger(project).values()))
    f = project / "results" / first.notebook / f"{first.run_id}.json"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("{garbage")
    before = snapshot(project)
    proc = cli(project, "adapterscope.findings", "check")
    assert_refused(proc, "is not valid JSON", project, before)
    assert str(f) in proc.stderr


def test_model_dir_with_a_broken_config(project, tmp_path):
    d = tmp_path / "broken-model"
    d.mkdir()
    (d / "config.json").write_text("{oops")
    before = snapshot(project)
    proc = _pipeline(project, "run", "02_capture", "-p", f"model={d}", "-p", "layers=[0]")
    assert_refused(proc, "config.json is not valid JSON", project, before)
