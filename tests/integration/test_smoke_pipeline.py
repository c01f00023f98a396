"""End to end: the smoke profile through papermill (cells 01 -> 02 -> 03 -> 09; summaries 08, 04, 10, 11, 07, 12, 13 and the VLM chain), the PDF,
and one finding reproduced from a scratch copy.

Runs in an isolated copy of the project (the ``project`` fixture); the model cache is shared. Asserts on the
results JSONs the runs wrote, never on cell outputs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from adapterscope import escapes
from tests.conftest import REPO, copy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pipeline(root, *args, timeout=1800):
    env = {**os.environ, "ADAPTERSCOPE_HOME": str(root), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "adapterscope.pipeline", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run shared by the tests of this module."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("smoke") / "proj"
    copy_project(root)
    mp.setenv("ADAPTERSCOPE_CACHE", os.environ.get("ADAPTERSCOPE_CACHE", str(REPO / "data" / "cache")))
    if shutil.which("latexmk") is None:
        pytest.fail("latexmk is missing: `make test` installs TeX as root; otherwise apt-get install latexmk ...")
    proc = _pipeline(root, "paper", "--profile", "smoke")
    yield root, proc
    mp.undo()


def _load(root, nb, rid):
    return json.loads((root / "results" / nb / f"{rid}.json").read_text())


def test_smoke_profile_runs_and_builds_the_pdf(smoke):
    root, proc = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pdf = root / "paper" / "adapterscope.pdf"
    assert pdf.is_file() and pdf.stat().st_size > 50_000
    log = (root / "paper" / "build" / "main.log").read_text(errors="replace")
    undefined = re.findall(r"(?:Citation|Reference) `[^']*' on page \S+ undefined", log)
    assert not undefined, f"undefined citations or references in the paper: {undefined[:5]}"
    assert "There were undefined" not in log, "undefined citations or references in the paper"
    assert "Undefined control sequence" not in log
    # every finding of the ledger has a computed verdict macro, and the counts add up
    import yaml

    ids = [e["id"] for e in yaml.safe_load((root / "paper" / "findings.yml").read_text())["findings"]]
    ledger = (root / "paper" / "generated" / "findings" / "ledger.tex").read_text()
    verdicts = re.findall(r"\\newcommand\{\\(Verdict[A-Za-z]+)\}\{\\emph\{(\w+)\}\}", ledger)
    raw = [w for name, w in verdicts if not name.endswith("Adj")]
    adjusted = [w for name, w in verdicts if name.endswith("Adj")]  # after Holm / BH
    assert len(raw) == len(adjusted) == len(ids)
    assert set(raw) | set(adjusted) <= {"supported", "contradicted", "inconclusive", "undefined"}
    assert f"\\newcommand{{\\NFindings}}{{{len(ids)}}}" in ledger and "\\NPrimarySupported" in ledger


def _pdf_pages(log_file):
    m = re.findall(r"Output written on \S+ \((\d+) pages?", log_file.read_text(errors="replace"))
    return int(m[-1]) if m else None


def _pdflatex_writing_a_pdf(pgid, paper):
    """Whether a pdflatex of process group ``pgid`` holds a PDF under ``paper/`` open (the pass it is in writes it:
    pdfTeX opens its output at the first page and closes it at the end of the pass)."""
    for d in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{d}/stat").read() if d.isdigit() else ""
            if not stat or stat.split("(", 1)[1].rsplit(")", 1)[0] != "pdflatex" \
                    or int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            targets = [os.readlink(f"/proc/{d}/fd/{fd}") for fd in os.listdir(f"/proc/{d}/fd")]
        except (OSError, IndexError, ValueError):
            continue
        if any(t.startswith(str(paper) + os.sep) and t.endswith(".pdf") for t in targets):
            return True
    return False


def test_pdf_build_killed_midway_keeps_the_old_pdf_and_a_rerun_builds_it(smoke):
    """Reliability case 8, the PDF: `pipeline pdf` with a new profile name (PROFILE, as `make pdf` passes it: a
    change to generated/all.tex that latexmk must rebuild for) SIGKILLed, its process group with latexmk and
    pdflatex, while pdflatex writes its PDF. The previous paper/adapterscope.pdf stays byte for byte and nothing
    appears beside it. Then the build the old PDF came from (the smoke profile's name) again, whose sources are
    those of latexmk's record of its last complete build: a whole PDF with the old page count (before the fix
    latexmk took the killed pass's files for up to date: bibtex failed on its truncated main.aux at every rerun, or
    its truncated main.pdf was published). Then the killed command again: a whole PDF with its profile name."""
    import signal

    root, proc = smoke
    assert proc.returncode == 0
    paper = root / "paper"
    final = paper / "adapterscope.pdf"
    old, pages = final.read_bytes(), _pdf_pages(paper / "build" / "main.log")
    assert old.startswith(b"%PDF-") and old.rstrip().endswith(b"%%EOF") and pages

    def pdf(profile):
        env = {**os.environ, "ADAPTERSCOPE_HOME": str(root), "PYTHONUNBUFFERED": "1", "PROFILE": profile}
        return subprocess.Popen([sys.executable, "-m", "adapterscope.pipeline", "pdf"], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def whole(profile):
        p = pdf(profile)
        out = p.communicate(timeout=900)[0].decode(errors="replace")
        assert p.returncode == 0, out[-3000:]
        new = final.read_bytes()
        assert new.startswith(b"%PDF-") and new.rstrip().endswith(b"%%EOF"), (len(new), new[-200:])
        assert new == (paper / "build" / "main.pdf").read_bytes()
        log = (paper / "build" / "main.log").read_text(errors="replace")
        assert _pdf_pages(paper / "build" / "main.log") == pages
        assert not re.search(r"(?:Citation|Reference) `[^']*' on page \S+ undefined|There were undefined", log)
        assert f"\\newcommand{{\\ProfileName}}{{{profile}}}" in (paper / "generated" / "all.tex").read_text()
        assert sorted(f.name for f in paper.iterdir() if "pdf" in f.name) == ["adapterscope.pdf"]

    killed = f"killed-midway-{time.time_ns()}"  # a name no build had: latexmk must rebuild
    p = pdf(killed)
    try:
        deadline = time.time() + 300
        while not _pdflatex_writing_a_pdf(p.pid, paper):
            assert p.poll() is None, f"pdf ended ({p.returncode}) before the kill:\n{p.stdout.read()[-3000:]}"
            assert time.time() < deadline, "pdflatex never wrote its PDF"
            time.sleep(0.02)
        os.killpg(p.pid, signal.SIGKILL)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        out = p.communicate(timeout=60)[0].decode(errors="replace")
    assert p.returncode == -signal.SIGKILL and "paper:" not in out, out[-3000:]
    assert final.read_bytes() == old  # the previous PDF, whole
    assert sorted(f.name for f in paper.iterdir() if "pdf" in f.name) == ["adapterscope.pdf"], list(paper.iterdir())
    whole("smoke")
    whole(killed)


@pytest.mark.parametrize("corpus", ["meditations", "instructions"])
def test_results_have_values_and_provenance(smoke, corpus):
    root, proc = smoke
    assert proc.returncode == 0
    rid = f"smollm2-135m__{corpus}__none__s0"
    ft = _load(root, "01_finetune", rid)
    v = ft["values"]
    assert len(v["losses"]) == 4 and all(math.isfinite(x) for x in v["losses"])
    assert v["compute_dtype"] in ("float32", "bfloat16")
    assert (root / v["adapter_dir"] / "adapter_model.safetensors").is_file()
    assert (root / v["adapter_dir"] / "meta.json").is_file()
    prov = ft["provenance"]
    assert prov["params"]["steps"] == 4 and prov["params"]["corpus"] == corpus
    assert prov["content_digest"] and prov["libraries"]["torch"].startswith("2.13.0") and prov["wall_time_s"] > 0
    assert prov["executor"] == "pipeline"
    assert set(prov["inputs"]) >= {"corpus", "model"}
    cap = _load(root, "02_capture", rid)["values"]
    for split in ("neutral", "heldout"):
        d = cap["divergence"][split]
        assert d["kl"] > 0 and math.isfinite(d["kl"])
        assert 0 < d["top1_agreement"] <= 1
        assert d["ppl_base"] > 1 and d["ppl_ft"] > 1
    change = cap["layer_change"]["neutral"]
    assert len(change) == 30 and all(x > 0 for x in change.values())
    assert set(change) == {f"blocks.{i}.hook_resid_post" for i in range(30)}


def test_summary_macros_and_rerun_is_skipped(smoke):
    root, proc = smoke
    assert proc.returncode == 0
    grid = _load(root, "08_divergence", "grid")
    assert grid["values"]["n_runs"] == 2
    cka = _load(root, "04_cka", "grid")["values"]
    assert cka["n_runs"] == 3 and len(cka["control"]) == 1  # two standard runs + one equal-step control
    assert all(math.isfinite(r["slope"]) for r in cka["slopes"])
    cc = _load(root, "03_crosscoder", "smollm2-135m__meditations__none__s0")["values"]
    assert len(cc["per_layer"]) == 2 and cc["peak_ratio_ft"] > 0
    assert not (root / "results" / "03_crosscoder" / "smollm2-135m__meditations__equal_step__s0.json").exists()
    allm = (root / "paper" / "generated" / "all.tex").read_text()
    assert "\\ProfileName" in allm
    tex = (root / "paper" / "generated" / "08_divergence" / "grid.tex").read_text()
    assert "\\newcommand{\\ZeroEightDivergenceGridMaxKL}" in tex
    again = _pipeline(root, "grid", "--profile", "smoke")
    assert again.returncode == 0, again.stderr[-2000:]
    # 2 main cells x (01, 02, 03, 09) + 1 control cell x (01, 02) + 1 dose cell x (01, 02, 03) + 11 summary notebooks
    assert again.stdout.count("[skip]") == 24 and "[run ]" not in again.stdout


def test_dose_cell_and_summary(smoke):
    root, proc = smoke
    assert proc.returncode == 0
    rid = "smollm2-135m__meditations__none__s0__dose-n8-lr0.002"
    ft = _load(root, "01_finetune", rid)
    assert ft["provenance"]["params"]["steps"] == 8 and ft["provenance"]["params"]["lr"] == 0.002
    assert _load(root, "03_crosscoder", rid)["values"]["peak_ratio_ft"] > 0
    assert not (root / "results" / "09_clamp" / f"{rid}.json").exists()  # dose cells stop at the crosscoder
    d = _load(root, "11_dose", "grid")["values"]
    assert len(d["runs"]) == 2  # the main cell (4 steps) and the dose level
    f = d["findings"]["rho_dose_kl"]
    assert math.isnan(f["value"]) and f["reason"]  # n = 2 runs: undefined, with its reason


def test_portability_case(smoke):
    """The smoke portability case (SmolLM2's meditations adapter -> Gemma-3): every measure present, the target
    LoRAs trained on the source's protocol, and each pooled statistic a number or undefined with a reason."""
    root, proc = smoke
    assert proc.returncode == 0
    v = _load(root, "07_portability", "grid")
    case, = v["values"]["cases"]
    assert case["source_run"] == "smollm2-135m__meditations__none__s0" and case["target"] == "gemma3-270m"
    assert case["lora"]["steps"] == 4 and case["n_eval_texts"] == 6 and case["n_transfer_texts"] == 6
    assert all(math.isfinite(x) and x > 0 for x in case["per_char_nll"].values())
    assert [g["depth"] for g in case["geometry"]] == [0.5, 1.0]
    assert "adapter/smollm2-135m__meditations__none__s0" in v["provenance"]["inputs"]
    for key, f in v["values"]["findings"].items():
        assert math.isfinite(f["value"]) or f["reason"], key
    assert (root / "figures" / "07_portability" / "portability.pdf").is_file()
    assert (root / "paper" / "generated" / "tables" / "portability.tex").is_file()


def test_composition_of_the_two_smoke_adapters(smoke):
    """One pair (meditations + instructions): every method scored on both constituents, the alignment measured,
    and the pair-level tests undefined with their reasons (one pair, one subset)."""
    root, proc = smoke
    assert proc.returncode == 0
    v = _load(root, "12_composition", "grid")
    block, = v["values"]["blocks"]
    assert block["subsets"] == ["meditations+instructions"] and block["eval_rows"] == {"meditations": 4,
                                                                                     "instructions": 4}
    assert {(r["method"], r["corpus"]) for r in block["rows"]} == {
        (m, c) for m in block["methods"] for c in ("meditations", "instructions")}
    assert all(math.isfinite(r["loss"]) and r["kl_neutral"] >= 0 for r in block["rows"])
    a, = block["alignment"]
    assert -1 <= a["cosine"] <= 1 and 0 <= a["core_jaccard"] <= 1
    f = v["values"]["findings"]
    assert math.isnan(f["interference_alignment"]["value"]) and "needs 3" in f["interference_alignment"]["reason"]
    assert math.isnan(f["core_vs_ta"]["value"]) and f["core_vs_ta"]["reason"]
    assert "adapter/smollm2-135m__instructions__none__s0" in v["provenance"]["inputs"]
    assert (root / "figures" / "12_composition" / "composition.pdf").is_file()


def test_calibration_plants_finds_and_reports_its_nulls(smoke):
    """13_calibration at smoke size: every planted feature matched in the one fit, rates and the minimum detectable
    effect per frequency, both findings carry a binomial test, the nulls without a second seed are the trained
    pair and the random LoRA, and the figure and tables exist."""
    root, proc = smoke
    assert proc.returncode == 0
    v = _load(root, "13_calibration", "grid")
    s, = v["values"]["studies"]
    assert (s["model"], s["corpus"], s["seeds"]) == ("smollm2-135m", "meditations", [0])
    assert len(s["planted"]) == 2 * 1 * 2 + 2 and all(0 <= r["cosine"] <= 1 + 1e-6 for r in s["planted"])
    assert {(r["alpha"], r["freq"]) for r in s["rates"]} == {(0.3, 0.05), (1.0, 0.05)}
    assert [r["freq"] for r in s["mde"]] == [0.05]
    assert s["spectrum"]["rms_top"][0] > 0 and s["alpha_matched"] > 0
    for k in ("detect_strong", "detect_matched"):
        f = v["values"]["findings"][k]
        assert f["n"] == 2 and 0 <= f["ci_low"] <= f["value"] <= f["ci_high"] <= 1 and 0 < f["p_value"] <= 1
    assert [n["pair"] for n in s["nulls"]] == ["trained", "random LoRA"]
    assert all(math.isfinite(n["ratio_ft"]) and n["displacement"] >= -1e-6 for n in s["nulls"])
    assert "adapter/smollm2-135m__meditations__none__s0" in v["provenance"]["inputs"]
    assert (root / "figures" / "13_calibration" / "calibration_detection.pdf").is_file()
    assert (root / "paper" / "generated" / "tables" / "calibration_nulls.tex").is_file()


def test_vlm_notebooks_ran(smoke):
    root, proc = smoke
    assert proc.returncode == 0
    v = _load(root, "05a_vlm", "grid")["values"]
    assert v["projector_source"] == "reference"  # the committed projector matches the default projector_* params
    assert len(v["lora_losses"]) == 4 and all(math.isfinite(x) for x in v["lora_losses"])
    assert (root / v["adapter_dir"] / "adapter_model.safetensors").is_file()
    acc = {r["family"]: r for r in v["accuracy"]}
    assert set(acc) == {"colour", "shape", "count", "position", "presence", "all"} and acc["all"]["n"] == 20
    r = _load(root, "05b_regime_probing", "grid")["values"]
    assert r["n_items"] == 8 and r["n_inputs"] == 8 * 15 and r["num_layers"] == 30
    assert all(1 <= c <= 30 for c in r["critical_layer"].values())
    stab = {(s["model"], s["regime"]): s["stability"] for s in r["stability"]}
    assert all(0 <= stab[(m, g)] <= 1 for m in ("base", "adapted") for g in ("prompt", "visual", "pressure"))
    assert (root / "paper" / "generated" / "tables" / "regime_stability.tex").is_file()
    e = _load(root, "06_escape_routes", "grid")["values"]
    assert e["n_items"] == 12 and e["critical_layer"] == r["critical_layer"]["base"]  # chosen on 05b's items
    assert {c["condition"] for c in e["conditions"]} == set(escapes.CONDITIONS) and len(e["conditions"]) == 28
    for key in ("escape_selective", "escape_clusters", "escape_predictable", "escape_internal_vs_output",
                "pathway_divergence"):
        f = e["findings"][key]
        assert math.isfinite(f["value"]) or f.get("reason"), key  # a number, or undefined with its reason
    assert all((root / "figures" / "06_escape_routes" / f"{n}.pdf").is_file() for n in ("conditions", "pathways"))


def test_bad_inputs_fail_clearly_without_artefacts(smoke):
    root, _ = smoke
    p = _pipeline(root, "run", "01_finetune", "-p", "stepz=3")
    assert p.returncode == 2 and "unknown parameter(s) 'stepz' (did you mean 'steps'?)" in p.stderr
    p = _pipeline(root, "run", "01_finetune", "-p", "steps=three")
    assert p.returncode == 2 and "parameter 'steps' must be int" in p.stderr
    p = _pipeline(root, "run", "01_finetune", "-p", "corpus=stoics", "-p", "steps=1")
    assert p.returncode == 2 and "unknown corpus 'stoics'" in p.stderr
    assert not (root / "results" / "01_finetune" / "smollm2-135m__stoics__none__s0.json").exists()
    p = _pipeline(root, "run", "02_capture", "-p", "corpus=meditations", "-p", "layers=[99]")
    assert p.returncode == 2 and "layers [99] are out of range" in p.stderr
    p = _pipeline(root, "paper", "--profile", "nope")
    assert p.returncode == 2 and "available: default, full, seed, smoke" in p.stderr


def test_summary_decorrelation_and_clamp(smoke):
    root, proc = smoke
    assert proc.returncode == 0
    dec = _load(root, "10_decorrelation", "grid")["values"]
    assert len(dec["runs"]) == 2 and len(dec["regimes"]) == 2
    assert "rho_ratio_kl_pooled" in dec["findings"] and dec["findings"]["rho_ratio_kl_pooled"]["n"] == 2
    for corpus in ("meditations", "instructions"):
        cl = _load(root, "09_clamp", f"smollm2-135m__{corpus}__none__s0")["values"]
        assert cl["n_rows"] == 8 and cl["layer"] in _load(root, "03_crosscoder", f"smollm2-135m__{corpus}__none__s0")["values"]["layers"]
        s = cl["clamp"]  # the smoke profile clamps the 8 live latents of largest r (latent_set top_r:8)
        assert cl["n_clamped"] == 8 and s["n_latents"] == 8 and s["n_random"] == 2 and s["n_noise"] == 2
        assert s["kl_ft"] > 0 and math.isfinite(s["frac_removed_clamp"]["value"])
        assert len(s["frac_removed_random_draws"]) == 2
    for t in ("decorrelation_stats", "seed_reference", "regimes"):
        assert (root / "paper" / "generated" / "tables" / f"{t}.tex").is_file()


def test_finding_is_reproduced_from_a_scratch_copy(smoke):
    """A one-cell finding (the fine-tune's final loss) recorded from the smoke run, then rerun from scratch:
    only 01_finetune of that cell reruns, and the value matches; a tampered record is reported NOT reproduced."""
    root, proc = smoke
    assert proc.returncode == 0
    # tolerance 0.05: on a bf16 box the scratch rerun (two threads) and the grid's run (one thread per cell) sum the
    # bf16 matmuls in another order; measured |difference| 0.0017 (2026-12-02) and 0.013 (2026-12-04, an idle 2-core
    # EPYC with AVX-512-BF16) on a loss of 4.4. The tampered record below is off by 1.0.
    (root / "paper" / "findings.yml").write_text(
        "findings:\n  - id: loss-med\n    hypothesis: The smoke fine-tune's final loss.\n    direction: less\n"
        "    test: none, a descriptive value whose verdict is undefined\n    notebook: 01_finetune\n"
        "    run_id: smollm2-135m__meditations__none__s0\n    key: final_loss\n    family: check\n    tolerance: 0.05\n")
    env = {**os.environ, "ADAPTERSCOPE_HOME": str(root)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "adapterscope.findings", *a], cwd=root, env=env,
                                    capture_output=True, text=True, timeout=900)  # noqa: E731
    assert run("record").returncode == 0
    p = run("reproduce", "loss-med", "--profile", "smoke")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "REPRODUCED" in p.stdout and p.stdout.count("[run ] 01_finetune") == 1 and "02_capture" not in p.stdout
    rec = json.loads((root / "paper" / "findings_recorded.json").read_text())
    rec["loss-med"]["value"] += 1.0
    (root / "paper" / "findings_recorded.json").write_text(json.dumps(rec))
    assert run("check").returncode == 1
    p = run("reproduce", "nope", "--profile", "smoke")
    assert p.returncode == 2 and "unknown finding 'nope'" in p.stderr


def test_submitit_executor_redoes_a_missing_run_and_skips_the_rest(smoke):
    """The smoke grid through submitit's local executor (one job per cell, the summaries after them): the one run
    whose results were removed is redone inside its job, everything else is skipped by digest."""
    root, _ = smoke
    rid = "smollm2-135m__instructions__none__s0"
    (root / "results" / "09_clamp" / f"{rid}.json").unlink()
    p = _pipeline(root, "grid", "--profile", "smoke", "--executor", "submitit-local")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("submitted (submitit-local job") == 6 and p.stdout.count(": done") == 6
    assert (root / "results" / "09_clamp" / f"{rid}.json").is_file()
    logs = "\n".join(f.read_text() for f in (root / "data" / "logs" / "smoke" / "submitit").glob("*_log.out"))
    assert f"[run ] 09_clamp {rid}" in logs and logs.count("[run ]") == 1 and logs.count("[skip]") == 23


def test_a_notebook_run_interactively_on_the_project_kernel_writes_the_pipelines_run(tmp_path, monkeypatch):
    """What `make lab` does when a researcher opens 01_finetune and runs all cells with its defaults: the
    project kernel, the notebooks folder as working directory; the same run id as the pipeline's cell."""
    import jupytext
    import nbclient

    from adapterscope import lab, params, pipeline

    root = tmp_path / "proj"
    copy_project(root)
    lab.install_kernelspec(tmp_path / "prefix")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "prefix" / "share" / "jupyter"))
    monkeypatch.setenv("ADAPTERSCOPE_HOME", str(root))
    monkeypatch.setenv("ADAPTERSCOPE_CACHE", os.environ.get("ADAPTERSCOPE_CACHE", str(REPO / "data" / "cache")))
    for k in ("ADAPTERSCOPE_EXECUTOR", "ADAPTERSCOPE_CONTENT_DIGEST"):
        monkeypatch.delenv(k, raising=False)
    src = root / "notebooks" / "01_finetune.py"
    note = jupytext.read(src)
    assert note.metadata["kernelspec"]["name"] == lab.KERNEL_NAME
    nbclient.NotebookClient(note, kernel_name=lab.KERNEL_NAME, timeout=1800,
                            resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    d = params.parse_parameters_cell(src)
    rid = pipeline.cell_id({k: d[k] for k in ("model", "corpus", "layer_control", "seed")})
    rec = _load(root, "01_finetune", rid)
    assert rec["provenance"]["executor"] == "interactive" and rec["provenance"]["content_digest"] is None
    assert rec["provenance"]["params"]["steps"] == d["steps"] and len(rec["values"]["losses"]) == d["steps"]


def test_explanations_show_what_each_smoke_adapter_changed(smoke):
    """02_capture records the explanations on its paired stream (promoted tokens, a lens per layer, hotspots),
    13's depth profiles and the new internal readings are there, and 14_explanations tabulates both corpora."""
    root, proc = smoke
    assert proc.returncode == 0
    cap = _load(root, "02_capture", "smollm2-135m__meditations__none__s0")["values"]
    ex = cap["explain"]
    assert len(ex["promoted"]) == 10 and len(ex["lens"]) == cap["num_layers"] and ex["hotspots"]
    assert all("cka_trimmed_debiased" in v and "outside_share" in v for v in cap["cka"].values())
    assert cap["intruders"]["n_modules"] > 0
    per = _load(root, "03_crosscoder", "smollm2-135m__meditations__none__s0")["values"]["per_layer"]
    assert all("fvu_gap_ft_trimmed" in r and "ratio_ft_trimmed" in r for r in per)
    cal, = _load(root, "13_calibration", "grid")["values"]["studies"]
    assert set(cal["depth_profiles"]) == {"trained", "random LoRA"}
    v = _load(root, "14_explanations", "grid")["values"]
    assert v["n_shown"] == 2 and [r["corpus"] for r in v["explanations"]] == ["meditations", "instructions"]
    assert (root / "paper" / "generated" / "tables" / "explanations.tex").is_file()
    assert (root / "figures" / "14_explanations" / "promoted_tokens.pdf").is_file()
