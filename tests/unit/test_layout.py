"""The card's layout: top-level folders present in a clean clone, imports inside lib/adapterscope run one way
(no circle), and every notebook opens with what it reads, writes, how to rerun it alone and what it feeds."""

import ast
import re
import subprocess

import pytest

from adapterscope import ledger, paths

ROOT = paths.project_root()
LIB = ROOT / "lib" / "adapterscope"
FOLDERS = ("lib", "notebooks", "notebooks/profiles", "data", "results", "figures", "paper", "paper/sections",
           "tests/unit", "tests/reliability", "tests/integration", "benchmarks", ".ci")


def import_graph(pkg_dir) -> dict[str, set[str]]:
    """module -> the package modules it imports (``from . import x``, ``from .x import y``, at any depth)."""
    mods = {p.stem for p in pkg_dir.glob("*.py")}
    g = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((pkg_dir / f"{m}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps |= {n for n in names if n in mods and n != m}
        g[m] = deps
    return g


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
    for part in ("**Reads**", "**Writes**", "**Feeds**"):
        assert part in h, f"{nb.name}: header lacks {part}"
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
