"""Parameter cells, strict overrides and profiles."""

from pathlib import Path

import pytest

from adapterscope import params

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9]*.py"))
PROFILES = sorted((Path(__file__).resolve().parents[2] / "notebooks" / "profiles").glob("*.yml"))


def test_there_are_notebooks_and_profiles():
    assert len(NOTEBOOKS) >= 3 and {p.stem for p in PROFILES} >= {"smoke", "default", "seed"}


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_exactly_one_parameters_cell_and_it_is_the_first_code_cell(nb):
    import jupytext

    note = jupytext.read(nb)
    code = [c for c in note.cells if c.cell_type == "code"]
    tagged = [c for c in note.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{nb.name}: {len(tagged)} parameters cells"
    assert code[0] is tagged[0], f"{nb.name}: the parameters cell must be the first code cell"
    assert "params.check(globals())" in code[1].source, f"{nb.name}: second code cell must check parameters"
    declared = params.parse_parameters_cell(nb)
    assert declared and all(not k.startswith("_") for k in declared)
    # papermill warns about '=' in parameter comments; keep them parseable
    for line in tagged[0].source.splitlines():
        if "#" in line:
            assert "=" not in line.split("#", 1)[1], f"{nb.name}: '=' in a parameters comment: {line!r}"


def test_validate_rejects_unknown_with_suggestion():
    with pytest.raises(params.ParameterError, match=r"unknown parameter.*'stepz'.*did you mean 'steps'"):
        params.validate({"steps": 50, "lr": 2e-4}, {"stepz": 10})


@pytest.mark.parametrize("override", [{"steps": "10"}, {"steps": 1.5}, {"steps": True}, {"lr": "fast"},
                                      {"targets": "q_proj"}, {"targets": [1, 2]}, {"flag": 1}])
def test_validate_rejects_mistyped(override):
    declared = {"steps": 50, "lr": 2e-4, "targets": ["q_proj"], "flag": False}
    with pytest.raises(params.ParameterError, match="must be"):
        params.validate(declared, override)


def test_validate_merges_and_widens_int_to_float():
    out = params.validate({"steps": 50, "lr": 2e-4, "layers": []}, {"lr": 1, "layers": [3, 4]})
    assert out == {"steps": 50, "lr": 1.0, "layers": [3, 4]} and isinstance(out["lr"], float)


def test_check_reads_kernel_history():
    cell = 'steps = 50\nmodel = "smollm2-135m"\n'
    injected = '# Parameters\nsteps = 3\n'
    ns = {"In": ["", cell, injected, "P = params.check(globals())"], "steps": 3, "model": "smollm2-135m"}
    assert params.check(ns) == {"steps": 3, "model": "smollm2-135m"}
    bad = {"In": ["", cell, '# Parameters\nstepz = 3\n', "x"], "steps": 50, "model": "smollm2-135m"}
    with pytest.raises(params.ParameterError, match="stepz"):
        params.check(bad)
    typo = {"In": ["", cell, '# Parameters\nsteps = "3"\n', "x"], "steps": "3", "model": "smollm2-135m"}
    with pytest.raises(params.ParameterError, match="must be int"):
        params.check(typo)


def test_parameters_cell_must_hold_literals(tmp_path):
    nb = tmp_path / "x.py"
    nb.write_text('# %% [markdown]\n# hi\n\n# %% tags=["parameters"]\nsteps = 2 * 25\n')
    with pytest.raises(params.ParameterError, match="literal"):
        params.parse_parameters_cell(nb)
    nb.write_text('# %% tags=["parameters"]\na = 1\n\n# %% tags=["parameters"]\nb = 2\n')
    with pytest.raises(params.ParameterError, match="exactly one parameters cell"):
        params.parse_parameters_cell(nb)


@pytest.mark.parametrize("prof", PROFILES, ids=lambda p: p.stem)
def test_profiles_validate_against_notebooks(prof):
    from adapterscope import pipeline

    data = params.load_profile(prof)
    cells = pipeline.grid_cells(data)
    assert cells
    for nb, ov in (data.get("notebooks") or {}).items():
        declared = params.parse_parameters_cell(pipeline.notebook_path(nb))
        params.validate(declared, ov or {}, where=f"{prof.stem}:{nb}")
    for nb in pipeline.CELL_NOTEBOOKS:
        declared = params.parse_parameters_cell(pipeline.notebook_path(nb))
        for cell in cells:
            params.validate(declared, {k: v for k, v in cell.items() if k in declared}, where=nb)


def test_seed_profile_is_the_seed_study_grid():
    from adapterscope import corpora, models

    data = params.load_profile(Path(PROFILES[0]).parent / "seed.yml")
    g = data["grid"]
    assert len(g["models"]) == 3 and all("Llama" in m for m in g["models"])
    assert len(g["corpora"]) == 4
    for m in g["models"]:  # hub ids: refused offline with a clear message, accepted when allowed
        with pytest.raises(models.ModelError, match="ADAPTERSCOPE_ALLOW_HUB"):
            models.resolve(m)
        assert models.resolve(m, allow_hub=True) == m
    for c in g["corpora"]:
        assert c in corpora.NAMED or c.startswith(("hf:", "url:", "file:"))
    assert data["notebooks"]["01_finetune"]["device"] == "cuda"


def test_unknown_profile_and_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="available: none"):
        params.load_profile(tmp_path / "nope.yml")
    with pytest.raises(FileNotFoundError, match="available: default, full, seed, smoke"):
        params.load_profile(Path(PROFILES[0]).parent / "nope.yml")
    p = tmp_path / "x.yml"
    p.write_text("grid: {}\nnotebok: {}\n")
    with pytest.raises(params.ParameterError, match="unknown top-level"):
        params.load_profile(p)


def test_run_key_is_file_safe():
    assert params.run_key("smollm2-135m", "file:/a b/c.txt", "none", "s0") == "smollm2-135m__file-a-b-c.txt__none__s0"


def test_papermill_parses_every_declared_parameter_of_every_notebook():
    """papermill's own parser (which only warns) must see the same names as ours in every parameters cell."""
    from papermill.translators import PythonTranslator

    from adapterscope import pipeline

    for nb in sorted(pipeline.paths.project_root().joinpath("notebooks").glob("[0-9][0-9]_*.py")):
        src = nb.read_text()
        start = src.index('# %% tags=["parameters"]')
        cell = src[start:src.index("# %%", start + 5)].split("\n", 1)[1]
        ours = set(params.parse_parameters_cell(nb))
        theirs = {p.name for p in PythonTranslator.inspect({"source": cell})}
        assert ours == theirs, f"{nb.name}: papermill cannot parse {sorted(ours - theirs)}"
