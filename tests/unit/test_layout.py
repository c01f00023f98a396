"""The card's layout: top-level folders present in a clean clone, imports inside lib/adapterscope run one way
(no circle) and down its layers, and every notebook opens with what it reads, writes, how to rerun it alone and
what it feeds."""

import ast
import re
import subprocess

import pytest

import adapterscope
from adapterscope import ledger, paths

ROOT = paths.project_root()
LIB = ROOT / "lib" / "adapterscope"
FOLDERS = ("lib", "notebooks", "notebooks/profiles", "data", "results", "figures", "paper", "paper/sections",
           "tests/unit", "tests/reliability", "tests/integration", "benchmarks", ".ci")


# The layers of lib/adapterscope, bottom to top (the package docstring maps the same): a module imports only from
# its own layer or those below it. Placed by what each module imports, not by its name: ``divergence`` and
# ``geometry`` import nothing from the project (the fine-tune runner reads ``divergence``), ``findings`` reruns
# notebooks through ``pipeline`` (orchestration, beside it), ``intruders`` reads ``calibration`` (analysis).
LAYERS = {
    "pure tools": ("paths", "params", "results", "stats", "threads", "cka", "outliers", "crosscoder",
                   "crosscoder_train", "divergence", "geometry", "scenes", "power"),
    "loaders": ("models", "corpora", "textgen"),
    "model runners": ("finetune", "capture", "vlm"),
    "analysis": ("interventions", "regimes", "escapes", "decorrelation", "depth", "dose", "portability",
                 "composition", "calibration", "intruders", "explain", "latents"),
    "reporting and ledger": ("macros", "latex", "plotting", "ledger", "timings"),
    "orchestration": ("pipeline", "executors", "lab", "findings"),
    "user tools": ("audit", "audit_inputs", "cli"),
}


def package_imports(pkg_dir, package: str = "adapterscope") -> list[tuple[str, str, int]]:
    """(module, imported package module, line) for every import of one module of ``pkg_dir`` by another, at any
    depth (inside functions too): ``from . import x``, ``from .x import y``, ``from adapterscope import x``,
    ``from adapterscope.x import y`` and ``import adapterscope.x``. A name of the package that is no module
    (``from . import __version__``) counts as an import of ``__init__``."""
    mods = {p.stem for p in pkg_dir.glob("*.py")}
    out = []
    for m in sorted(mods):
        for node in ast.walk(ast.parse((pkg_dir / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 or node.module == package:
                    sub = node.module if node.level else None
                elif (node.module or "").startswith(package + "."):
                    sub = node.module[len(package) + 1:]
                else:
                    continue
                names = [sub.split(".")[0]] if sub else [a.name if a.name in mods else "__init__" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith(package + ".")]
            else:
                continue
            out += [(m, n, node.lineno) for n in names if n != m]
    return out


def import_graph(pkg_dir) -> dict[str, set[str]]:
    """module -> the package modules it imports (:func:`package_imports`)."""
    g = {p.stem: set() for p in pkg_dir.glob("*.py")}
    for m, dep, _ in package_imports(pkg_dir):
        g[m].add(dep)
    return g


def layering_violations(pkg_dir, layers: dict[str, tuple[str, ...]]) -> list[str]:
    """Each import of a module from a higher layer (``__init__`` sits below every layer and imports nothing of
    the package), and each module the layers do not place."""
    rank = {m: i for i, mods in enumerate(layers.values()) for m in mods}
    name = {i: layer for i, layer in enumerate(layers)}
    rank["__init__"] = -1
    out = [f"{p.stem}.py has no layer: place it in LAYERS (and in the package docstring)"
           for p in sorted(pkg_dir.glob("*.py")) if p.stem not in rank]
    for m, dep, line in package_imports(pkg_dir):
        if m in rank and dep in rank and rank[dep] > rank[m]:
            out.append(f"{m}.py:{line} ({name.get(rank[m], 'package')}) imports {dep} ({name[rank[dep]]})")
    return out


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by depth-first search (one path per back edge)."""
    out, state, stack = [], {}, []

    def visit(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(g.get(u, ())):
            if state.get(v) == 1:
                out.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for u in sorted(g):
        if u not in state:
            visit(u)
    return out


def test_cycle_finder_on_planted_graphs():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"a"}, "x": set()}) == [["a", "b", "a"]]


def test_lib_imports_run_one_way():
    g = import_graph(LIB)
    assert {"pipeline", "findings", "ledger"} <= set(g)
    assert "findings" not in g["pipeline"] and "ledger" in g["pipeline"] and "pipeline" not in g["ledger"]
    assert cycles(g) == [], f"import circles in lib/adapterscope: {cycles(g)}"


def test_layer_checker_on_a_planted_package(tmp_path):
    """Lazy imports inside functions and absolute imports count; a module may import its own layer and below."""
    files = {"__init__.py": '__version__ = "0"\n',
             "low.py": "from . import __version__\n",
             "low2.py": "from .low import x\n",                                   # own layer
             "mid.py": "import adapterscope.low\n\ndef f():\n    from . import low2\n",
             "top.py": "from adapterscope.mid import f\n",
             "bad.py": "import os\n\ndef f():\n    from .top import g\n",         # lazy, from above
             "bad2.py": "def f():\n    from adapterscope import mid, low\n"}     # absolute, from above
    for name, src in files.items():
        (tmp_path / name).write_text(src)
    layers = {"bottom": ("low", "low2", "bad2"), "middle": ("mid", "bad"), "top": ("top",)}
    assert layering_violations(tmp_path, layers) == ["bad.py:4 (middle) imports top (top)",
                                                     "bad2.py:2 (bottom) imports mid (middle)"]
    assert layering_violations(tmp_path, {"all": ("low", "low2", "mid", "top", "bad", "bad2")}) == []
    assert layering_violations(tmp_path, {"some": ("low", "low2", "mid", "top", "bad")}) == [
        "bad2.py has no layer: place it in LAYERS (and in the package docstring)"]
    assert import_graph(tmp_path)["mid"] == {"low", "low2"} and import_graph(tmp_path)["low"] == {"__init__"}


def test_every_module_has_one_layer_and_the_package_docstring_maps_the_same():
    placed = [m for mods in LAYERS.values() for m in mods]
    assert len(placed) == len(set(placed)), "a module in two layers"
    assert set(placed) == {p.stem for p in LIB.glob("*.py")} - {"__init__"}
    doc, layer = {}, None
    for line in adapterscope.__doc__.splitlines():
        head = re.match(r"(\d) (.+?):", line)
        entry = re.match(r" {4}(\w+)\s", line)
        if head:
            layer = head.group(2)
            assert int(head.group(1)) == list(LAYERS).index(layer) + 1, line
        elif entry:
            assert entry.group(1) not in doc, f"{entry.group(1)} twice in the package docstring"
            doc[entry.group(1)] = layer
    assert doc == {m: layer for layer, mods in LAYERS.items() for m in mods}


def test_imports_follow_the_layers():
    """A module imports only from its own layer or lower ones, at the top or inside a function."""
    bad = layering_violations(LIB, LAYERS)
    assert bad == [], "imports against the layers of lib/adapterscope (see its __init__ docstring):\n" + "\n".join(bad)
    assert not [d for m, d, _ in package_imports(LIB) if m == "__init__"], "the package's __init__ imports nothing"


@pytest.mark.parametrize("folder", FOLDERS)
def test_the_cards_top_level_folders_are_tracked(folder):
    out = subprocess.run(["git", "ls-files", "--", folder], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    assert out.stdout.strip(), f"{folder}/ has no tracked file: a clean clone would lack it"


def _notebooks():
    return sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]*_*.py"))


def _header(p) -> str:
    s = p.read_text()
    i = s.index("# %% [markdown]")
    j = s.index("# %%", i + 5)
    return " ".join(l[1:].strip() for l in s[i:j].splitlines()[1:])


@pytest.mark.parametrize("nb", _notebooks(), ids=lambda p: p.stem)
def test_each_notebook_opens_with_reads_writes_rerun_and_feeds(nb):
    h = _header(nb)
    assert re.match(r"# \d\d[ab]? — ", h), "the first cell starts with '# NN — title'"
    for part in ("**Reads**", "**Writes**", "**Rerun alone:**", "**Feeds**"):
        assert h.count(part) == 1, f"{nb.name}: header says {part} {h.count(part)} times, not once"
    assert f"**Rerun alone:** `make notebook NB={nb.stem}" in h, f"{nb.name}: no rerun command for itself"
    ids = [f.id for f in ledger.load_ledger().values() if f.notebook == nb.stem]
    assert all(f"`{i}`" in h for i in ids) if ids else "no finding directly" in h, \
        f"{nb.name}: the header must name its ledger findings {ids} (or say 'no finding directly')"
    assert "kernelspec:" in nb.read_text().split("# ---")[1], "the jupytext header names the project kernel"


def test_notebook_numbers_follow_the_cards_order():
    stems = [p.stem for p in _notebooks()]
    card = ["01_finetune", "02_capture", "03_crosscoder", "04_cka", "05a_vlm", "05b_regime_probing",
            "06_escape_routes", "07_portability"]
    assert stems[:len(card)] == card
    assert all(int(s[:2]) >= 8 for s in stems[len(card):]), "summary notebooks come after 07 (portability)"
