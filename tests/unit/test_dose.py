"""The training-dose analysis of 11_dose on planted data: trends found where planted and not where absent,
the reasons for undefined values, the construction threshold, and the run table read through the results API."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from adapterscope import dose, macros, params

LEVELS = [(50, 2e-4), (50, 6e-4), (50, 2e-3), (200, 2e-3)]  # the default profile's doses: 0.01, 0.03, 0.1, 0.4


def _table(ft_only=None, kl=None, ratio=None, corpora=("meditations", "dtc-ads")):
    """2 corpora x 4 doses; each measure is a function (corpus index, dose index) -> value."""
    rows = []
    for ci, c in enumerate(corpora):
        for di, (steps, lr) in enumerate(LEVELS):
            rows.append({"model": "m", "corpus": c, "seed": 0, "steps": steps, "lr": lr, "dose": steps * lr,
                         "ft_only": (ft_only or (lambda c, d: 0))(ci, di), "genuine": 0,
                         "kl": (kl or (lambda c, d: 0.1))(ci, di), "peak_ratio": (ratio or (lambda c, d: 1.2))(ci, di),
                         "disagree": 0.1, "ppl_ft": 20.0})
    return pd.DataFrame(rows)


S = {"n_boot": 500, "n_perm": 999, "seed": 0}


def test_a_planted_monotone_trend_is_found_with_the_exact_576_ordering_null():
    # KL grows with dose in both corpora, from corpus-specific levels (the corpus effect is not the trend)
    df = _table(kl=lambda c, d: (10.0 if c else 0.01) * 2 ** d)
    r = dose.trend(df, "kl", **S)
    assert r["value"] == pytest.approx(1.0) and r["n"] == 8
    assert r["p_method"] == "exact" and r["extra"]["n_permutations"] == 576
    assert r["p_value"] == pytest.approx(2 / 576)  # |rho| = 1 only when both corpora are in order, or both reversed
    assert "reason" not in r


def test_a_measure_that_does_not_depend_on_dose_shows_no_trend():
    # the ratio is a corpus effect plus noise, unrelated to dose: the pooled rho would still be driven by corpus
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.05, size=(2, 4))
    df = _table(ratio=lambda c, d: 1.2 + 2.0 * c + noise[c, d])
    r = dose.trend(df, "peak_ratio", **S)
    assert math.isfinite(r["value"]) and abs(r["value"]) < 0.7
    assert r["p_value"] > 0.05 and r["ci_low"] < 0 < r["ci_high"]


def test_a_decreasing_trend_has_a_negative_rho():
    df = _table(ratio=lambda c, d: 3.0 - 0.3 * d + 0.1 * c)
    assert dose.trend(df, "peak_ratio", **S)["value"] == pytest.approx(-1.0)


def test_no_fine_tune_only_latents_anywhere_leaves_rho_undefined_with_a_reason():
    df = _table()
    r = dose.trends(df, **S)["rho_dose_ftonly"]
    assert math.isnan(r["value"]) and r["n"] == 8
    assert r["reason"] == "all 8 runs flag 0 fine-tune-only latents: no ordering"
    assert dose.trends(df, **S)["rho_dose_ratio"]["reason"] == \
        "all 8 runs have the same peak cross/self ratio (1.2): no ordering"
    recorded = macros.ledger_view(r)  # what 11_dose records as the finding
    assert recorded == {k: r[k] for k in ("value", "n", "p_value", "p_method", "ci_low", "ci_high", "reason")}


def test_other_undefined_cases_say_why():
    assert dose.trend(_table().iloc[:0], "kl", **S, empty_reason="no dose block in this profile")["reason"] == \
        "no dose block in this profile"
    one_each = _table(kl=lambda c, d: d + c).groupby("corpus").head(1)  # one dose per corpus: no ordering to rank
    assert "fewer than 3 runs" in dose.trend(one_each, "kl", **S)["reason"]
    between = _table(kl=lambda c, d: 0.1 + c)  # varies only between corpora
    assert "does not vary within any corpus" in dose.trend(between, "kl", **S)["reason"]


def test_fine_tune_only_latents_appearing_at_high_dose_give_a_trend_and_a_threshold():
    df = _table(ft_only=lambda c, d: [0, 0, 0, 3][d] if c == 0 else [0, 0, 1, 5][d])
    r = dose.trend(df, "ft_only", **S)
    assert r["value"] > 0.7 and "reason" not in r
    first = dose.first_construction(df, ["meditations", "dtc-ads", "seneca"])
    assert first["meditations"]["value"] == pytest.approx(0.4) and first["meditations"]["steps"] == 200
    assert first["dtc-ads"]["value"] == pytest.approx(0.1) and first["dtc-ads"]["count"] == 1
    assert first["seneca"]["value"] is None and first["seneca"]["reason"] == "no dose runs of seneca"
    none = dose.first_construction(_table(), ["meditations"])["meditations"]
    assert none["value"] is None and none["reason"] == "no run flags a fine-tune-only latent up to dose 0.4"
    assert none["doses"] == pytest.approx([0.01, 0.03, 0.1, 0.4])


def _write(root, nb, rid, values, prm=None):
    p = root / "results" / nb / f"{rid}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"values": values, "provenance": {"params": prm or {}}}))


def test_load_runs_reads_the_main_cell_and_the_dose_tagged_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(tmp_path))
    levels = [{"steps": 200, "lr": 2e-3}, {"steps": 50, "lr": 6e-4}]
    for tag, (steps, lr), n_ft in (("", (50, 2e-4), 0), ("dose-n200-lr0.002", (200, 2e-3), 4),
                                   ("dose-n50-lr0.0006", (50, 6e-4), 1)):
        rid = params.cell_run_id("m", "c", "none", 0, tag)
        _write(tmp_path, "01_finetune", rid, {"heldout_loss_ft": 3.0, "final_loss": 2.5}, {"steps": steps, "lr": lr})
        _write(tmp_path, "02_capture", rid, {"divergence": {
            "neutral": {"kl": steps * lr, "top1_agreement": 0.9},
            "heldout": {"kl": 0.2, "ppl_base": 30.0, "ppl_ft": 25.0}}})
        _write(tmp_path, "03_crosscoder", rid, {"peak_ratio_ft": 1.5, "peak_depth": 0.65, "n_ft_only_total": n_ft,
                                                "n_ft_only_genuine_total": 0})
    seen = []
    df = dose.load_runs(["m"], ["c"], [0], levels, on_input=lambda k, d: seen.append(k))
    assert list(df.dose_tag) == ["", "dose-n50-lr0.0006", "dose-n200-lr0.002"]  # sorted by dose
    assert df.dose.tolist() == pytest.approx([0.01, 0.03, 0.4]) and df.kl.tolist() == pytest.approx([0.01, 0.03, 0.4])
    assert df.ft_only.tolist() == [0, 1, 4] and df.disagree.iloc[0] == pytest.approx(0.1)
    assert math.isnan(df.heldout_loss_base.iloc[0]) and df.heldout_loss_ft.iloc[0] == 3.0
    assert len(seen) == 9 and "01/m__c__none__s0__dose-n200-lr0.002" in seen
    with pytest.raises(FileNotFoundError, match="dose-n8"):
        dose.load_runs(["m"], ["c"], [0], [{"steps": 8}])


def test_dose_tags_and_run_ids():
    assert params.dose_tag({"lr": 2e-3, "steps": 200}) == "dose-n200-lr0.002"
    assert params.dose_tag({"steps": 50, "lr": 6.0e-4}) == "dose-n50-lr0.0006"
    assert params.dose_tag({"steps": 8, "rank": 4}) == "dose-n8-rank4"
    assert params.cell_run_id("smollm2-135m", "meditations", "none", 0) == "smollm2-135m__meditations__none__s0"
    assert params.cell_run_id("smollm2-135m", "meditations", "none", 0, "dose-n200-lr0.002") == \
        "smollm2-135m__meditations__none__s0__dose-n200-lr0.002"
