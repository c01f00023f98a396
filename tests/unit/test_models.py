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
