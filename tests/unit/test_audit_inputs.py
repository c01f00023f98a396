"""adapterscope.audit_inputs and the audit CLI on bad input: ``--out`` never deletes a user's files, and every
bad option, config, weight file or text ends in one ``error:`` line, exit 2, before any model loads.

The base model is a tiny llama saved as a local model folder (config.json + model.safetensors), so these tests
load no real model; ``load_pair`` is replaced by a function that fails the test if a refusal comes too late."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from adapterscope import audit, audit_inputs, cli, paths
from adapterscope.audit_inputs import AuditError


@pytest.fixture
def base_dir(tmp_path, tiny_llama):
    d = tmp_path / "base"
    tiny_llama.save_pretrained(d, safe_serialization=True)
    return d


def _lora(model, out: Path, **kw) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    pm = get_peft_model(model, LoraConfig(**{"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"],
                                             "task_type": "CAUSAL_LM", "init_lora_weights": False, **kw}))
    pm.save_pretrained(out)
    pm.unload()  # the fixture's model back without LoRA layers, for the next adapter
    return out


@pytest.fixture
def adapter(tmp_path, tiny_llama):
    return _lora(tiny_llama, tmp_path / "adapter")


@pytest.fixture
def no_model_load(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.setattr(audit, "load_pair", boom)


def _tree(p: Path) -> dict[str, bytes | None]:
    if p.is_file():
        return {"": p.read_bytes()}
    return {str(q.relative_to(p)): (q.read_bytes() if q.is_file() else None) for q in sorted(p.rglob("*"))}


def _edit_tensors(d: Path, fn) -> Path:
    from safetensors.torch import load_file, save_file

    f = d / "adapter_model.safetensors"
    t = load_file(str(f))
    save_file(fn(dict(t)), str(f))
    return d


def _edit_config(d: Path, **kw) -> Path:
    p = d / "adapter_config.json"
    cfg = json.loads(p.read_text())
    cfg.update(kw)
    p.write_text(json.dumps(cfg))
    return d


def _audit(capsys, *args) -> tuple[int, str]:
    rc = cli.main(["audit", "--no-progress", *map(str, args)])
    err = capsys.readouterr().err
    return rc, err


# ------------------------------------------------------------------------------------------ --out
def test_out_refuses_a_file_a_foreign_folder_the_adapter_and_the_base_and_deletes_nothing(
        tmp_path, base_dir, adapter, capsys, no_model_load):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "a.txt").write_text("a")
    (mine / "sub" / "b.txt").write_text("b")
    cases = [(notes, "is an existing file"),
             (mine, "a folder with 2 entries that no audit wrote"),
             (adapter, "is or holds --adapter"),
             (tmp_path, "is or holds --adapter"),  # a folder above the adapter
             (adapter / "report", "lies inside --adapter"),
             (base_dir, "is or holds the base model's folder"),
             (base_dir / "report", "lies inside the base model's folder")]
    before = {p: _tree(p) for p, _ in cases if p.exists()}
    for out, msg in cases:
        rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", out)
        assert rc == 2 and msg in err, (out, err)
        assert err.count("\n") == 1 and err.startswith("error: --out ")
    for p, tree in before.items():
        assert _tree(p) == tree, p
    assert not (adapter / "report").exists() and not (base_dir / "report").exists()


def test_out_accepts_absent_empty_and_an_earlier_report_only(tmp_path):
    assert audit_inputs.check_out(tmp_path / "new" / "report", {}) == (tmp_path / "new" / "report").resolve()
    assert not (tmp_path / "new").exists()  # checked, not created
    empty = tmp_path / "empty"
    empty.mkdir()
    audit_inputs.check_out(empty, {})
    rep = tmp_path / "rep"
    (rep / "figures").mkdir(parents=True)
    for f in ("audit.json", "audit.html", "figures/profile.png", "figures/profile.pdf"):
        (rep / f).write_text("x")
    with pytest.raises(AuditError, match="no audit wrote"):  # no marker: not ours
        audit_inputs.check_out(rep, {})
    audit_inputs.write_marker(rep, {"base": "b"})
    audit_inputs.check_out(rep, {})
    (rep / "figures" / "keep.txt").write_text("mine")
    with pytest.raises(AuditError, match="'figures/keep.txt', which no audit wrote"):
        audit_inputs.check_out(rep, {})
    (rep / "figures" / "keep.txt").unlink()
    (rep / "thesis.tex").write_text("mine")
    with pytest.raises(AuditError, match="'thesis.tex', which no audit wrote"):
        audit_inputs.check_out(rep, {})


def test_out_refuses_a_link_a_path_under_a_file_and_an_unwritable_place(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(AuditError, match="symbolic link"):
        audit_inputs.check_out(tmp_path / "link", {})
    (tmp_path / "f").write_text("x")
    with pytest.raises(AuditError, match="is a file, not a folder"):
        audit_inputs.check_out(tmp_path / "f" / "report", {})
    with pytest.raises(AuditError, match="cannot be written"):
        audit_inputs.check_out(Path("/proc/adapterscope-report"), {})
    assert not list(tmp_path.glob(".adapterscope-write-test.*"))  # the probe is removed


def test_sigterm_inside_the_report_write_leaves_no_temporary_and_stale_ones_are_cleaned(tmp_path):
    out = tmp_path / "report"
    old = signal.signal(signal.SIGTERM, cli._interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            with paths.atomic_path(out) as tmp:
                tmp.mkdir()
                (tmp / "audit.json").write_text("{}")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".report.abc123.tmp"  # what a SIGKILL leaves
    (stale / "payload").mkdir(parents=True)
    fresh = tmp_path / ".report.def456.tmp"
    fresh.mkdir()
    other = tmp_path / ".other.abc.tmp"
    other.mkdir()
    past = time.time() - 3600
    for p in (stale, stale / "payload", other):
        os.utime(p, (past, past))
    assert paths.clean_temporaries_beside(out) == [stale]
    assert fresh.exists() and other.exists()


# ------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("args, msg", [
    (["--seq-len", "0"], "--seq-len 0 is out of range"),
    (["--seq-len", "5000"], "--seq-len 5000 is out of range"),
    (["--seed", "-1"], "--seed -1 is out of range"),
    (["--epochs", "0"], "--epochs 0 is out of range"),
    (["--tokens", "100"], "--tokens 100 is out of range"),
    (["--tokens", "10000000"], "--tokens 10000000 is out of range"),
    (["--device", "tpu"], "device='tpu' is not a device"),
    (["--depths", "0.4", "nan"], "--depths must lie in [0, 1]"),
    (["--depths", "0.4", "0.41"], "--depths 0.4 0.41 all land on layer 1 of this 3-layer model"),
    (["--seq-len", "256"], "longer than the base model's context (128 positions)"),
])
def test_every_option_is_checked_before_any_model_loads(base_dir, adapter, tmp_path, capsys, no_model_load,
                                                       args, msg):
    rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep", *args)
    assert rc == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "rep").exists()


# ------------------------------------------------------------------------------------------ adapter
def test_config_and_meta_that_do_not_parse_or_are_mistyped_are_refused(adapter, base_dir, tmp_path, capsys,
                                                                      no_model_load):
    cfg_p = adapter / "adapter_config.json"
    good = cfg_p.read_bytes()
    cases = [(b"\xff\xfe\x00garbage", "is not UTF-8 text"),
             (b"[1, 2]", "holds a JSON list, not an object"),
             (b"{nope", "is not valid JSON")]
    for raw, msg in cases:
        cfg_p.write_bytes(raw)
        rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
        assert rc == 2 and msg in err and "adapter_config.json" in err, err
    for field, value, msg in [("r", "16", "field 'r' is '16', not a positive integer"),
                              ("lora_alpha", "32", "field 'lora_alpha' is '32', not a finite number"),
                              ("lora_alpha", 0, "lora_alpha is 0"),
                              ("target_modules", 5, "field 'target_modules' is 5"),
                              ("use_dora", "yes", "field 'use_dora' is 'yes'")]:
        cfg_p.write_bytes(good)
        _edit_config(adapter, **{field: value})
        rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
        assert rc == 2 and msg in err, err
    cfg_p.write_bytes(good)
    (adapter / "meta.json").write_bytes(b"\x80not json")
    rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
    assert rc == 2 and "meta.json is not UTF-8 text" in err, err


def test_weights_are_checked_against_the_base_models_safetensors_header(tmp_path, tiny_llama, base_dir):
    cfg = lambda d: json.loads((d / "adapter_config.json").read_text())  # noqa: E731
    ok = _lora(tiny_llama, tmp_path / "ok")
    info = audit_inputs.check_weights(ok, cfg(ok), base_dir)
    assert info == {"n_tensors": 12, "n_modules": 6, "checked_against_base": True}
    key_a = "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"
    nan = _edit_tensors(_lora(tiny_llama, tmp_path / "nan"), lambda t: {**t, key_a: t[key_a] * float("nan")})
    with pytest.raises(AuditError, match=r"tensor '.*layers.1.self_attn.q_proj.lora_A.weight' has 64 NaN"):
        audit_inputs.check_weights(nan, cfg(nan), base_dir)
    inf = _edit_tensors(_lora(tiny_llama, tmp_path / "inf"), lambda t: {**t, key_a: t[key_a] / 0})
    with pytest.raises(AuditError, match="NaN or infinite"):
        audit_inputs.check_weights(inf, cfg(inf), None)  # refused even with no base header to compare with
    missing = _edit_tensors(_lora(tiny_llama, tmp_path / "missing"),
                            lambda t: {k: v for k, v in t.items() if ".layers.2.self_attn.v_proj." not in k})
    with pytest.raises(AuditError, match=r"name 1 module\(s\) of the base model with no LoRA tensor in the file "
                                         r"\(first: 'model.layers.2.self_attn.v_proj'\)"):
        audit_inputs.check_weights(missing, cfg(missing), base_dir)
    half = _edit_tensors(_lora(tiny_llama, tmp_path / "half"), lambda t: {k: v for k, v in t.items() if k != key_a})
    with pytest.raises(AuditError, match="has only one of its lora_A / lora_B"):
        audit_inputs.check_weights(half, cfg(half), base_dir)
    extra = _edit_tensors(_lora(tiny_llama, tmp_path / "extra"),
                          lambda t: {**t, "base_model.model.model.layers.0.mlp.router.lora_A.weight": torch.zeros(2, 32)})
    with pytest.raises(AuditError, match="belongs to module 'model.layers.0.mlp.router', which the base model"):
        audit_inputs.check_weights(extra, cfg(extra), base_dir)


def test_an_adapter_of_another_base_is_refused_from_the_headers_naming_both_shapes(tmp_path, base_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    wider = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
    other = _lora(wider, tmp_path / "other")
    cfg = json.loads((other / "adapter_config.json").read_text())
    with pytest.raises(AuditError, match=r"tensor '.*layers.0.self_attn.q_proj.lora_A.weight' has shape \[2, 48\], "
                                         r"which does not fit the base model's 'model.layers.0.self_attn.q_proj"
                                         r".weight' of shape \[32, 32\]"):
        audit_inputs.check_weights(other, cfg, base_dir)


def test_dora_rslora_and_a_saved_tied_head_pass_the_weight_check(tmp_path, tiny_llama, base_dir):
    for name, kw in [("dora", {"use_dora": True}), ("rslora", {"use_rslora": True,
                                                                "target_modules": ["q_proj", "up_proj", "down_proj"]}),
                     ("head", {"modules_to_save": ["lm_head"]}), ("all", {"target_modules": "all-linear"})]:
        d = _lora(tiny_llama, tmp_path / name, **kw)
        cfg = audit_inputs.read_config(d)
        assert audit_inputs.check_weights(d, cfg, base_dir)["checked_against_base"], name


def test_a_forged_line_or_terminal_escape_in_a_config_never_reaches_the_terminal(adapter, base_dir, tmp_path,
                                                                               capsys, no_model_load):
    _edit_config(adapter, base_model_name_or_path="x\nerror: all is fine\x1b[2J", r="16")
    rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
    assert rc == 2 and "\x1b" not in err and err.count("\n") == 1
    _edit_config(adapter, r=2)
    _edit_tensors(adapter, lambda t: {**t, "base_model.model.model.layers.0.bogus.lora_A.weight": torch.zeros(2, 3)})
    rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
    assert rc == 2 and err.count("\n") == 1 and "\x1b" not in err and "(x\\nerror: all is fine\\x1b[2J)" in err


def test_an_internal_error_is_one_line_exit_1_and_a_traceback_only_on_request(adapter, base_dir, tmp_path, capsys,
                                                                             monkeypatch):
    def broken(*a, **k):
        raise ZeroDivisionError("deep inside")

    monkeypatch.setattr(audit, "load_pair", broken)
    rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--out", tmp_path / "rep")
    assert rc == 1 and err.count("\n") == 1 and "ZeroDivisionError: deep inside" in err and "ADAPTERSCOPE_DEBUG" in err
    monkeypatch.setenv("ADAPTERSCOPE_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["audit", "--base", str(base_dir), "--adapter", str(adapter), "--out", str(tmp_path / "rep")])


# ------------------------------------------------------------------------------------------ text
class _CharTok:
    """A character-level tokenizer with BOS 1 and EOS 2, enough for packing."""
    bos_token_id, eos_token_id = 1, 2

    def __init__(self):
        self.calls = 0

    def __call__(self, text, add_special_tokens=False):
        texts = [text] if isinstance(text, str) else list(text)
        self.calls += len(texts)
        ids = [[3 + (ord(c) % 90) for c in t] for t in texts]
        return {"input_ids": ids[0] if isinstance(text, str) else ids}


def test_text_is_read_lazily_only_as_far_as_the_rows_need(tmp_path):
    f = tmp_path / "big.txt"
    with open(f, "wb") as fh:
        fh.write(("\n\n".join(f"document {i} " + "word " * 20 for i in range(500))).encode())  # 57 kB, past the reader's buffer
        fh.write(b"\n\n\xff\xfe broken bytes far beyond what the rows need\n")
        fh.write(b"x" * (8 << 20))  # 8 MB more that must never be read
    tok = _CharTok()
    rows, digest = audit_inputs.text_rows(tok, f"file:{f}", n_rows=4, seq_len=32)
    assert rows.shape == (4, 32) and (rows[:, 0] == 1).all() and len(digest) == 64
    assert tok.calls < 20  # a handful of documents tokenised, not the file
    with pytest.raises(AuditError, match="is not UTF-8 text"):
        audit_inputs.text_rows(_CharTok(), f"file:{f}", n_rows=10_000, seq_len=32)


@pytest.mark.parametrize("name, content, msg", [
    ("t.jsonl", b'{"text": "fine"}\n{"text": \n', "line 2 is not valid JSON"),
    ("t.jsonl", b'{"body": "no text field"}\n', "has neither a 'text' field"),
    ("t.json", b"42", "holds a JSON int"),
    ("t.json", b"[1, 2", "is not valid JSON"),
    ("t.txt", b"\n\n\n", "holds no document"),
    ("t.txt", b"\xc3\x28 not utf-8", "is not UTF-8 text"),
])
def test_malformed_text_files_are_one_error(tmp_path, name, content, msg):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(AuditError, match=msg):
        audit_inputs.text_rows(_CharTok(), f"file:{f}", n_rows=2, seq_len=16)


def test_text_source_is_checked_without_reading_the_file(tmp_path, adapter, base_dir, capsys, no_model_load):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for spec, msg in [(f"file:{tmp_path / 'none.txt'}", "not found"), (f"file:{empty}", "is empty"),
                      ("no-such-corpus", "unknown corpus")]:
        rc, err = _audit(capsys, "--base", base_dir, "--adapter", adapter, "--text", spec, "--out", tmp_path / "r")
        assert rc == 2 and msg in err and err.startswith("error: --text"), err
