"""adapterscope.audit without models: input checks, placement against a reference, the reference read from a
grid's results files, the terminal table and the self-contained HTML (the end-to-end audit of real adapters is
in tests/integration/test_audit_end_to_end.py)."""

import json
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from adapterscope import audit, cli, results


def _adapter(d, peft_type="LORA", weights="adapter_model.safetensors"):
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": peft_type, "base_model_name_or_path": "x"}))
    if weights and weights.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2)}, str(d / weights))
    elif weights:
        (d / weights).write_bytes(b"\0")
    return d


def _truncated(d):
    """A real safetensors file cut in half beside the pickle: the truncated file is refused, the pickle unread."""
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(64)}, str(d / "adapter_model.safetensors"))
    b = (d / "adapter_model.safetensors").read_bytes()
    (d / "adapter_model.safetensors").write_bytes(b[: len(b) // 2])
    return d


def test_check_adapter_dir_refuses_what_is_not_a_safetensors_lora(tmp_path):
    assert audit.check_adapter_dir(_adapter(tmp_path / "ok"))["peft_type"] == "LORA"
    cases = [(tmp_path / "missing", "is not a directory"),
             (tmp_path, "no adapter_config.json"),
             (_adapter(tmp_path / "prefix", peft_type="PREFIX_TUNING"), "PREFIX_TUNING adapter, not LoRA"),
             (_adapter(tmp_path / "pickle", weights="adapter_model.bin"), "only as a pickle (adapter_model.bin), which is never loaded"),
             (_adapter(tmp_path / "none", weights=None), "no adapter_model.safetensors"),
             (_adapter(tmp_path / "trunc", weights="adapter_model.bin") and
              _truncated(tmp_path / "trunc"), "truncated or damaged")]
    for d, msg in cases:
        with pytest.raises(audit.AuditError, match=re.escape(msg)):
            audit.check_adapter_dir(d)
    bad = tmp_path / "badjson"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{nope")
    with pytest.raises(audit.AuditError, match="not valid JSON"):
        audit.check_adapter_dir(bad)


def test_depth_layers():
    assert audit.depth_layers(30, (0.4, 0.9)) == [12, 26]
    with pytest.raises(audit.AuditError, match=r"\[0, 1\]"):
        audit.depth_layers(30, (0.4, 1.5))
    with pytest.raises(audit.AuditError, match="at least two distinct depths"):
        audit.depth_layers(30, (0.5,))


def test_place_percentile_range_and_call():
    ref = [1.0, 2.0, 3.0, 4.0]
    p = audit.place(2.0, ref)
    assert p["percentile"] == pytest.approx(37.5) and p["call"] == "within" and p["n_ref"] == 4
    assert audit.place(9.0, ref)["call"] == "above" and audit.place(9.0, ref)["percentile"] == 100
    assert audit.place(0.5, ref)["call"] == "below" and audit.place(0.5, ref)["percentile"] == 0
    assert audit.place(2.0, [])["call"] == "no reference"
    assert audit.place(math.nan, ref)["call"] == "undefined"
    assert audit.place(2.0, [math.nan, 1.0, None, 3.0])["n_ref"] == 2
    # a measure on which every reference adapter, and this one, reads the same cannot place it
    same = audit.place(0.0, [0.0, 0.0, 0.0])
    assert same["call"].startswith("uninformative") and math.isnan(same["percentile"])
    assert audit.place(3.0, [0.0, 0.0, 0.0])["call"] == "above"


def test_a_displacement_carried_by_massive_tokens_is_flagged_by_ratio_and_its_placement_says_so():
    from adapterscope import outliers

    assert outliers.carried_by_massive(0.01, 0.001, se=0.001)  # 10x, a resolved gap (no 0.05 needed)
    assert not outliers.carried_by_massive(0.01, 0.001, se=0.01)  # the gap is within the noise
    assert not outliers.carried_by_massive(0.004, 0.0035)  # no ratio
    assert not outliers.carried_by_massive(float("nan"), 0.001)
    note = {"depth": 0.4, "layer": 12, "displacement": 0.01, "displacement_trimmed": 0.001, "n_massive": 2,
            "n_tokens": 4000, "massive_share": 0.8, "carried_by_massive": True}
    p = audit.placements({"displacement@0.4": 0.01}, [{"displacement@0.4": x} for x in (0.02, 0.03)], [note])
    assert p["displacement@0.4"]["call"] == "below; carried by 2 massive token(s): without them 0.001"


def _fake_measure(L=10, slope_up=True):
    prof = [{"layer": l, "depth": l / (L - 1), "cka": 1 - 10 ** (-3 + 2 * l / (L - 1)), "se": 1e-4,
             "displacement": 10 ** (-3 + 2 * l / (L - 1))} for l in range(L)]
    return {"output": {"neutral": {"kl": 0.05, "kl_lo": 0.04, "kl_hi": 0.06, "top1": 0.9, "top1_lo": 0.88,
                                   "top1_hi": 0.92, "n_tokens": 630, "n_rows": 10}},
            "profile": prof, "slope": {"value": 2.0, "ci_low": 1.9, "ci_high": 2.1}, "layers": L,
            "crosscoder": [{"layer": 4, "depth": 4 / 9, "ratio_ft": 1.1, "n_ft_only": 0},
                           {"layer": 8, "depth": 8 / 9, "ratio_ft": 1.4, "n_ft_only": 3}]}


def test_summarise_reads_the_nearest_layer_of_each_depth():
    s = audit.summarise(_fake_measure(), (0.4, 0.9))
    assert s["kl_neutral"] == 0.05 and s["slope"] == 2.0
    assert s["ratio_ft@0.4"] == 1.1 and s["ratio_ft@0.9"] == 1.4 and s["n_ft_only@0.9"] == 3
    assert s["displacement@0.9"] == pytest.approx(10 ** (-3 + 2 * 8 / 9))


def _with_massive(m, layer=4, every=0.30, trimmed=0.02):
    """The fake profile with trimmed twins: equal everywhere except ``layer``, whose reading is carried by 2
    massive tokens."""
    for r in m["profile"]:
        t = trimmed if r["layer"] == layer else r["displacement"]
        if r["layer"] == layer:
            r["displacement"], r["cka"] = every, 1 - every
        r.update({"displacement_trimmed": t, "cka_trimmed": 1 - t, "se_trimmed": 1e-4, "n_tokens": 630,
                  "n_massive": 2 if r["layer"] == layer else 0, "massive_share": 0.88 if r["layer"] == layer else 0.0,
                  "carried_by_massive": r["layer"] == layer})
    return m


def test_massive_notes_flag_the_depth_whose_displacement_a_few_tokens_carry():
    m = _with_massive(_fake_measure())
    notes = audit.massive_notes(m, (0.4, 0.9))
    assert [n["layer"] for n in notes] == [4, 8]
    assert notes[0]["carried_by_massive"] and not notes[1]["carried_by_massive"]
    lines = audit.massive_lines(notes)
    assert len(lines) == 1 and "depth 0.4 (layer 4)" in lines[0] and "0.3" in lines[0] and "0.02" in lines[0]
    assert audit.massive_notes(_fake_measure(), (0.4, 0.9)) == []  # a measure without trimmed readings: none


def _write(root, nb, rid, values, params):
    d = root / "results" / nb
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{rid}.json").write_text(json.dumps({"values": values, "provenance": {"run_id": rid, "params": params}}))


def test_reference_from_a_grids_results_skips_controls_and_dose_cells(project):
    for i, (lc, tag) in enumerate([("none", ""), ("none", ""), ("equal_step", ""), ("none", "dose-n200")]):
        rid = f"smollm2-135m__c{i}__{lc}__s0" + (f"__{tag}" if tag else "")
        cl = {f"blocks.{l}.hook_resid_post": {"cka_debiased": 1 - 10 ** (-3 + 2 * l / 9) * (i + 1),
                                              "cka_debiased_se": 1e-5} for l in range(10)}
        _write(project, "02_capture", rid, {"divergence": {"neutral": {"kl": 0.01 * (i + 1), "top1_agreement": 0.9}},
                                            "cka": cl},
               {"model": "smollm2-135m", "corpus": f"c{i}", "layer_control": lc, "seed": 0, "dose_tag": tag})
        _write(project, "03_crosscoder", rid, {"per_layer": [{"layer": 4, "depth": 4 / 9, "ratio_ft": 1.0 + i,
                                                             "n_ft_only": i}]}, {})
    _write(project, "02_capture", "gemma3-270m__c0__none__s0", {"divergence": {"neutral": {"kl": 9, "top1_agreement": 0}},
                                                                "cka": {}},
           {"model": "gemma3-270m", "layer_control": "none", "seed": 0})
    ref = audit.reference_from_results("smollm2-135m")
    assert [r["corpus"] for r in ref] == ["c0", "c1"]
    assert [r["kl_neutral"] for r in ref] == [0.01, 0.02]
    assert ref[1]["ratio_ft@0.4"] == 2.0 and ref[0]["slope"] == pytest.approx(2.0, abs=1e-6)
    loaded = audit.load_reference("smollm2-135m")
    assert loaded["source"].startswith("results/") and len(loaded["runs"]) == 2
    path = audit.write_reference(["smollm2-135m"])
    rec = json.loads(path.read_text())
    assert rec["depths"] == [0.4, 0.9] and len(rec["models"]["smollm2-135m"]) == 2
    import shutil

    shutil.rmtree(project / "results")  # a clean clone: the committed reference is read instead
    fallback = audit.load_reference("smollm2-135m")
    assert fallback["source"].startswith(str(audit.REFERENCE_FILE)) and len(fallback["runs"]) == 2
    assert audit.load_reference("smollm2-135m", depths=(0.2, 0.8))["runs"] == []  # other depths: not comparable
    with pytest.raises(audit.AuditError, match="run `make paper` first"):
        audit.write_reference(["smollm2-135m"])


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.ids = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if "id" in a:
            self.ids.append(a["id"])


def test_report_figures_table_and_self_contained_html(tmp_path, project):
    m = _with_massive(_fake_measure())
    summ = audit.summarise(m, (0.4, 0.9))
    ref = [{**{k: v * f for k, v in summ.items()}, "kl_neutral": x} for x, f in ((0.01, 0.9), (0.02, 1.0),
                                                                                 (0.03, 1.1))]
    card = {"latent": 3, "selected_by": ["r"], "r": 0.95, "decoder_cosine": 0.1, "shift": 0.2, "rel_shift": 0.9,
            "mean_base": 0.01, "mean_ft": 0.21, "freq_base": 0.001, "freq_ft": 0.05, "max_base": 0.5, "max_ft": 2.0,
            "n_fires_base": 1, "n_fires_ft": 30, "clamp_effect": None, "decoder_diff_norm": 1.0,
            "histogram": {"edges": [0, 1, 2], "base": {"counts": [1, 0], "zero": 599},
                          "ft": {"counts": [10, 20], "zero": 570}},
            "contexts": {"base": [], "ft": [{"value": 2.0, "set": "neutral", "row": 0, "pos": 2, "ids": [5, 6, 7],
                                             "tokens": ["a", "<b>", "c"], "mark": 1}]},
            "promoted": [{"id": 1, "token": "x", "value": 1.0}], "suppressed": []}
    m["explain"] = {"n_positions": 600, "promoted": [], "suppressed": [], "lens": [], "hotspots": [],
                    "latent_cards": [{"layer": 4, "depth": 4 / 9, "n_tokens": 600, "n_latents": 64, "n_live": 40,
                                      "threshold": 0.1, "selection": {"clamp_measured": False}, "cards": [card]}]}
    rep = {"base": "smollm2-135m", "adapter": "a/b", "measure": m, "summary": summ,
           "reference": {"source": "test", "runs": ref}, "placement": audit.placements(summ, ref), "wall_s": 3.0,
           "massive": audit.massive_notes(m, (0.4, 0.9)), "massive_factor": 10.0,
           "provenance": results.Run("audit", "audit", params={}).provenance()}
    assert rep["placement"]["kl_neutral"]["call"] == "above"
    pngs = audit.figures(m, ref, summ, tmp_path / "fig")
    assert {p.name for p in (tmp_path / "fig").iterdir()} == {"profile.pdf", "profile.png", "placement.pdf",
                                                             "placement.png"}
    t = audit.terminal_table(rep)
    first = t.splitlines()[2]
    assert first.startswith("output") and "above" in t and "within" in t
    page = audit.render_html(rep, pngs)
    p = _Imgs()
    p.feed(page)
    assert len(p.imgs) == 2 and all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in p.imgs)
    assert {"output", "internal", "massive"} <= set(p.ids) and "How to read this" in page
    assert "carried by them" in page and "without massive" in page
    assert {"what-changed", "latent-cards"} <= set(p.ids) and "<mark>&lt;b&gt;</mark>" in page


def test_cli_help_and_bad_input_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["audit", "--help"])
    assert e.value.code == 0 and "--adapter" in capsys.readouterr().out
    rc = cli.main(["audit", "--base", "smollm2-135m", "--adapter", str(tmp_path / "nope"), "--out",
                   str(tmp_path / "rep")])
    assert rc == 2 and "is not a directory" in capsys.readouterr().err and not (tmp_path / "rep").exists()
    rc = cli.main(["audit", "--base", "smollm2-135m", "--adapter", str(_adapter(tmp_path / "a")), "--depths", "0.5",
                   "--out", str(tmp_path / "rep")])
    assert rc == 2 and "two distinct depths" in capsys.readouterr().err
    rc = cli.main(["audit", "--base", "smollm2-135m", "--adapter", str(tmp_path / "a"), "--text", "file:/no/such",
                   "--out", str(tmp_path / "rep")])
    assert rc == 2 and "--text" in capsys.readouterr().err and not (tmp_path / "rep").exists()
    assert np.isfinite(audit.place(1.0, [1.0])["percentile"])


def test_cka_layer_groups_fit_the_budget_and_the_grouping_changes_no_number(tiny_llama):
    from peft import LoraConfig, get_peft_model

    # SmolLM2: 80 MB of accumulators a layer, 10 layers in 768 MiB
    assert audit.cka_layer_groups(30, 576, budget=3 * 2**28) == [list(range(0, 10)), list(range(10, 20)),
                                                                 list(range(20, 30))]
    assert audit.cka_layer_groups(3, 32, budget=1) == [[0], [1], [2]]  # at least one layer a group
    torch.manual_seed(0)
    pm = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    g = torch.Generator().manual_seed(0)
    sets = {"a": torch.randint(3, 97, (20, 16), generator=g), "b": torch.randint(3, 97, (6, 16), generator=g)}
    kw = dict(depths=(0.4, 0.9), epochs=1, n_boot=50, progress=False, batch_tokens=64)
    one = audit.measure(pm, sets, cka_memory=2**40, **kw)
    per_layer = audit.measure(pm, sets, cka_memory=1, **kw)
    assert (one["cka_passes"], per_layer["cka_passes"]) == (1, 3)
    assert one["profile"] == per_layer["profile"] and one["output"] == per_layer["output"]
    assert one["crosscoder"] == per_layer["crosscoder"]


class _Tok:
    def decode(self, ids):
        return "".join(f"<{i}>" for i in ids)


def test_measure_with_a_tokenizer_stores_latent_cards_whose_contexts_point_at_the_audited_tokens(tiny_llama):
    from peft import LoraConfig, get_peft_model

    from adapterscope import latents

    torch.manual_seed(0)
    pm = get_peft_model(tiny_llama, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    g = torch.Generator().manual_seed(0)
    sets = {"a": torch.randint(3, 97, (20, 16), generator=g), "b": torch.randint(3, 97, (6, 12), generator=g)}
    m = audit.measure(pm, sets, depths=(0.4, 0.9), epochs=1, n_boot=50, progress=False, batch_tokens=64, tok=_Tok())
    blocks = m["explain"]["latent_cards"]
    json.dumps(blocks, allow_nan=False)
    assert [b["layer"] for b in blocks] == [c["layer"] for c in m["crosscoder"]]
    n_tokens = 20 * 15 + 6 * 11  # every row the crosscoders saw, training and held-out, position 0 dropped
    seen = set()
    for b in blocks:
        assert b["n_tokens"] == n_tokens and b["cards"]
        for c in b["cards"]:
            for s in ("base", "ft"):
                assert sum(c["histogram"][s]["counts"]) + c["histogram"][s]["zero"] == n_tokens
                for ctx in c["contexts"][s]:
                    tid = int(sets[ctx["set"]][ctx["row"], ctx["pos"]])
                    assert ctx["ids"][ctx["mark"]] == tid and ctx["tokens"][ctx["mark"]] == f"<{tid}>"
                    seen.add(ctx["set"])
    assert seen == {"a", "b"}  # the held-out side and the second set are placed too
    assert "latent card, layer" in latents.cards_lines(blocks)[0]
    assert "latent_cards" not in (audit.measure(pm, sets, depths=(0.4, 0.9), epochs=1, n_boot=50, progress=False,
                                                batch_tokens=64).get("explain") or {})


def test_a_local_base_folder_finds_its_reference_by_its_weights(tmp_path, monkeypatch, tiny_llama):
    from adapterscope import models

    monkeypatch.setenv("ADAPTERSCOPE_CACHE", str(tmp_path / "cache"))
    conv = models.cache_path("smollm2-135m")  # stands in for the converted embedded model
    tiny_llama.save_pretrained(conv, safe_serialization=True)
    copy = tmp_path / "my_base"
    tiny_llama.save_pretrained(copy, safe_serialization=True)
    assert audit.reference_model("smollm2-135m") == ("smollm2-135m", "embedded name")
    name, how = audit.reference_model(str(copy))
    assert name == "smollm2-135m" and "sha256" in how
    with torch.no_grad():
        tiny_llama.model.norm.weight.add_(1.0)  # other weights, same size
    other = tmp_path / "other_base"
    tiny_llama.save_pretrained(other, safe_serialization=True)
    name, how = audit.reference_model(str(other))
    assert name is None and "match no converted embedded model" in how
    assert audit.reference_model(str(tmp_path / "nowhere"))[0] is None
