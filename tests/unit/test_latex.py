from adapterscope import latex, paths


def test_tabular_layout():
    t = latex.tabular("lr", "a & b", ["x & 1", "y & 2"])
    assert t.splitlines() == [r"\begin{tabular}{lr}", r"\toprule", r"a & b \\", r"\midrule", r"x & 1 \\",
                              r"y & 2 \\", r"\bottomrule", r"\end{tabular}"]
    assert latex.tabular("l", "h", []).count(r"\\") == 1
    assert r"\addlinespace" + "\n" in latex.tabular("l", "h", ["a", r"\addlinespace", "b"])


def test_write_table_is_atomic_and_in_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "macros_dir", lambda: tmp_path / "generated")
    p = latex.write_table("t1", "l", "h", ["r"])
    assert p == tmp_path / "generated" / "tables" / "t1.tex" and p.read_text().startswith(r"\begin{tabular}{l}")
    assert not list(p.parent.glob("*.tmp*"))
