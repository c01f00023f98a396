"""Corpora: named sources, user files, deterministic splits, clear errors."""

import json

import pytest

from adapterscope import corpora


@pytest.mark.parametrize("name,author_n", [("meditations", 680), ("seneca", 747)])
def test_kathekon_corpora(name, author_n):
    docs, src = corpora.raw_documents(name)
    assert len(docs) == author_n and src["kind"] == "kathekon" and len(src["db_sha256"]) == 64
    c = corpora.load_corpus(name)
    assert 0.05 < len(c.heldout) / len(c) < 0.15
    assert not set(c.train) & set(c.heldout)


# word types at seed 0 (measured): dtc-ads ~2,650, instructions ~2,750, weather ~1,870 (many are numbers and invented
# place names), recipes ~1,000 (a narrow domain: ingredients and kitchen verbs); the Stoic quotes have about 2,400
@pytest.mark.parametrize("name,min_vocab", [("dtc-ads", 1500), ("instructions", 1500), ("weather", 1200),
                                            ("recipes", 800)])
def test_generated_corpora_are_seeded_and_varied(name, min_vocab):
    a = corpora.load_corpus(name, seed=0)
    b = corpora.load_corpus(name, seed=0)
    c = corpora.load_corpus(name, seed=1)
    assert a.train == b.train and a.digest == b.digest
    assert a.digest != c.digest
    docs = a.train + a.heldout
    assert len(set(docs)) == len(docs) >= 600  # hundreds of distinct documents
    vocab = {w.lower().strip('.,;:!?"()') for d in docs for w in d.split()}
    assert len(vocab) > min_vocab  # not a handful of templates


NEW = ("stdlib-docs", "stdlib-code", "licences", "weather", "recipes")
REAL = ("stdlib-docs", "stdlib-code", "licences")


def test_named_corpora_are_listed_everywhere():
    from adapterscope.textgen import GENERATORS

    assert len(corpora.NAMED) >= 8 and len(set(corpora.NAMED)) == len(corpora.NAMED)
    assert set(corpora.CORPUS_INFO) == set(corpora.NAMED)
    assert set(corpora.GENERATED) == set(GENERATORS) and set(corpora.REAL_TEXT) == set(REAL)
    assert set(corpora.NAMED) == set(corpora.KATHEKON_AUTHORS) | set(corpora.GENERATED) | set(REAL)
    assert not set(corpora.STDLIB_DOC_MODULES) & set(corpora.STDLIB_CODE_MODULES)
    for name in corpora.NAMED:
        corpora.check_name(name)
    for bad in ("stdlib", "licenses", "Weather"):
        with pytest.raises(corpora.CorpusError,
                           match="unknown corpus.*stdlib-docs, stdlib-code, licences, weather, recipes"):
            corpora.check_name(bad)
        with pytest.raises(corpora.CorpusError, match="licences"):
            corpora.load_corpus(bad)


@pytest.fixture(scope="module")
def meditations():
    return corpora.load_corpus("meditations")


@pytest.mark.parametrize("name", NEW)
def test_new_corpora_load_deterministically(name, meditations):
    a = corpora.load_corpus(name)
    b = corpora.load_corpus(name)
    assert a.train == b.train and a.heldout == b.heldout and a.digest == b.digest and a.source == b.source
    assert len(a.digest) == 64
    assert not set(a.train) & set(a.heldout)
    assert len(set(a.train)) == len(a.train) and len(set(a.heldout)) == len(a.heldout)
    assert 0.05 < len(a.heldout) / len(a) < 0.16
    docs = a.train + a.heldout
    assert all(d.strip() and d == d.rstrip() and not d.startswith("\n") for d in docs)  # code may start indented
    # size floor: at least the smallest seed corpus, in characters and documents' worth of held-out text
    chars = sum(map(len, docs))
    assert chars >= sum(map(len, meditations.train + meditations.heldout))
    assert sum(map(len, a.heldout)) > 20_000  # >= 32 held-out rows of 64 tokens need ~8,000 characters of prose
    assert len(a) >= 300
    if name in REAL:
        src = a.source
        assert src["kind"] == corpora.CORPUS_INFO[name]["kind"] and len(src["sha256"]) == 64
        assert src["documents"] == len(corpora.raw_documents(name)[0]) and src["characters"] >= chars
        assert all(len(d) <= corpora.DOC_MAX_CHARS for d in docs)
        assert sorted(map(len, docs))[len(docs) // 2] >= corpora.DOC_MIN_CHARS  # typical document: a few hundred tokens
    else:
        assert a.source == {"kind": "generator", "generator": name, "n": corpora.GENERATED_SIZE, "seed": 0}
        assert corpora.load_corpus(name, seed=1).digest != a.digest


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The SmolLM2 tokenizer from the converted model cache; skipped where ``make models`` has not run (the unit tier
    converts no model)."""
    from adapterscope import models

    d = models.cache_path("smollm2-135m")
    if not (d / "meta.json").is_file():
        pytest.skip("smollm2-135m is not converted yet (make models)")
    return models.load_tokenizer("smollm2-135m")


@pytest.mark.parametrize("name", NEW)
def test_new_corpora_supply_the_rows_the_notebooks_draw(name, meditations, smollm2_tokenizer):
    """At least meditations' tokens; 01_finetune and 03_crosscoder pack rows of 64 tokens and draw 160 training rows
    and 32 held-out rows (the default profile's largest draws)."""
    from adapterscope import finetune

    tok = smollm2_tokenizer

    def n_tokens(docs):
        return sum(len(ids) for ids in tok(docs, add_special_tokens=False)["input_ids"])

    c = corpora.load_corpus(name)
    assert n_tokens(c.train + c.heldout) >= n_tokens(meditations.train + meditations.heldout)
    assert len(finetune.pack_documents(tok, c.train, 64)) >= 160
    assert len(finetune.pack_documents(tok, c.heldout, 64)) >= 40


def test_new_corpora_are_the_same_in_another_process():
    """Another interpreter with another string-hash seed (so any set or dict order would differ) and another working
    directory gives the same documents."""
    import os
    import subprocess
    import sys

    code = ("import json; from adapterscope import corpora; "
            f"print(json.dumps({{n: corpora.load_corpus(n).digest for n in {list(NEW)!r}}}))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "ADAPTERSCOPE_HOME": str(corpora.paths.project_root())}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd="/", capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {n: corpora.load_corpus(n).digest for n in NEW}


def test_stdlib_corpora_do_not_depend_on_process_state(monkeypatch, tmp_path):
    """Parsed from the interpreter's files, not introspected: a notebook kernel's patches (ipykernel replaces
    builtins.input; logging.captureWarnings replaces warnings.showwarning) and a shadowing module on sys.path or in
    the working directory change nothing."""
    import builtins
    import warnings

    before = {n: corpora.load_corpus(n).digest for n in ("stdlib-docs", "stdlib-code")}
    monkeypatch.setattr(builtins, "input", lambda prompt="": "patched", raising=True)
    monkeypatch.setattr(warnings, "showwarning", lambda *a, **k: None)
    (tmp_path / "argparse.py").write_text('"""A shadowing module."""\n')
    (tmp_path / "cmd.py").write_text("x = 1  # shadow\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert {n: corpora.load_corpus(n).digest for n in before} == before


def test_stdlib_docs_and_code_are_complementary():
    docs, src = corpora.raw_documents("stdlib-docs")
    assert src["python"] and src["modules"] + len(src["missing"]) == len(corpora.STDLIB_DOC_MODULES)
    assert any(d.startswith("argparse\n\n") for d in docs)  # the module docstring, headed by its name
    assert any("json.dumps\n\n" in d for d in docs)
    code, src = corpora.raw_documents("stdlib-code")
    assert src["modules"] + len(src["missing"]) == len(corpora.STDLIB_CODE_MODULES)
    assert sum(d.count("def ") for d in code) > 500 and sum(d.count("# ") for d in code) > 500  # code and comments
    assert sum(d.count('"""') for d in code) < 0.05 * sum(d.count("def ") for d in code)  # docstrings removed


def test_code_units_strip_docstrings_and_keep_comments():
    src = '''"""Module docstring."""

import os  # why we need os


# a helper, with a comment above it
@decorator
def f(x):
    """Docstring of f,
    over two lines."""
    return x + 1  # add one


def g(): "inline docstring stays"


class A:
    """Class docstring."""

    def m(self):
        """Only a docstring."""
'''
    units = corpora._code_units(src)
    text = "\n\n".join(units)
    assert "Module docstring" not in text and "Docstring of f" not in text and "Class docstring" not in text
    assert "over two lines" not in text and "Only a docstring" not in text
    assert "# why we need os" in text and "# a helper, with a comment above it\n@decorator\ndef f(x):" in text
    assert "return x + 1  # add one" in text and 'def g(): "inline docstring stays"' in text
    assert "    def m(self):\n        ..." in text
    assert [u.splitlines()[-1].strip() for u in units][:2] == ["import os  # why we need os", "return x + 1  # add one"]


def test_docstring_units_take_public_names_in_source_order():
    src = '''"""Mod."""
def _private():
    """Hidden."""
class C:
    """Class C."""
    def __init__(self):
        """Init."""
    def _p(self):
        """Hidden too."""
    def run(self):
        """Run it."""
def h():
    pass
'''
    assert corpora._docstring_units("m", src) == ("m\n\nMod.", "m.C\n\nClass C.", "m.C.__init__\n\nInit.",
                                                  "m.C.run\n\nRun it.")


def test_pack_units_bounds_and_keeps_text():
    units = [f"para {i} " + "word " * (i * 37 % 90) for i in range(200)] + ["x" * 5000, "a " * 3000]
    docs = corpora.pack_units(units, lo=300, hi=800)
    assert all(0 < len(d) <= 800 for d in docs)
    assert sorted(map(len, docs))[len(docs) // 2] >= 300
    assert "".join("".join(docs).split()) == "".join("".join(units).split())  # nothing lost, only whitespace changed
    assert corpora.pack_units(["short", "units"], lo=300, hi=800) == ["short\n\nunits"]


def test_licences_corpus_reads_the_pinned_packages(monkeypatch, tmp_path):
    docs, src = corpora.raw_documents("licences")
    assert src["packages"] >= 100 and src["files"] >= 100 and not src["missing"]
    # dozens of packages ship the MIT text; paragraphs identical up to whitespace are kept once (measured: 7 variants
    # remain, differing in quotes or wording)
    assert 1 <= sum(d.count("Permission is hereby granted, free of charge") for d in docs) <= 12
    lock = tmp_path / "requirements.lock"
    lock.write_text("# a comment\nkathekon==0.0.8\nNo_Such.Package==1.0\n")
    monkeypatch.setattr(corpora, "lock_file", lambda: lock)
    docs, src = corpora.raw_documents("licences")
    assert src["packages"] == 1 and src["missing"] == ["no-such-package"] and src["files"] >= 1
    assert "MIT License" in docs[0] and "Jan Thomas" in docs[0]
    lock.unlink()
    with pytest.raises(corpora.CorpusError, match="requirements.lock.*missing"):
        corpora.load_corpus("licences")


def test_provenance_table_lists_every_named_corpus():
    rows = corpora.provenance_table()
    assert [r["name"] for r in rows] == list(corpora.NAMED)
    for r in rows:
        assert r["kind"] and r["source"] and r["licence"] and r["documents"] >= 300 and r["characters"] >= 80_000
        assert r["sha256"] == corpora.load_corpus(r["name"]).digest
    md = corpora.provenance_markdown(rows)
    assert md.count("\n") == len(rows) + 1 and "| `licences` | licence-files |" in md
    with pytest.raises(corpora.CorpusError, match="not a named corpus"):
        corpora.provenance_table(["file:x.txt"])


def test_split_is_order_independent_and_deterministic():
    docs = [f"document number {i} about virtue" for i in range(500)]
    tr, he = corpora.split(docs, 0.2)
    tr2, he2 = corpora.split(list(reversed(docs)), 0.2)
    assert set(tr) == set(tr2) and set(he) == set(he2)
    assert 0.14 < len(he) / 500 < 0.26
    # adding documents never moves an existing one across the split
    tr3, he3 = corpora.split(docs + [f"extra {i}" for i in range(100)], 0.2)
    assert set(he) <= set(he3) and set(tr) <= set(tr3)
    with pytest.raises(corpora.CorpusError, match="heldout_frac"):
        corpora.split(docs, 1.5)


def test_file_sources(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("\n\n".join(f"Paragraph {i}. Some words here." for i in range(60)))
    c = corpora.load_corpus(f"file:{txt}")
    assert len(c) == 60 and c.source["sha256"]
    jl = tmp_path / "a.jsonl"
    jl.write_text("\n".join(json.dumps({"instruction": f"Do {i}", "input": "" if i % 2 else "ctx",
                                        "output": f"Done {i}"}) for i in range(40)))
    c = corpora.load_corpus(f"file:{jl}")
    assert len(c) == 40 and all("### Instruction:" in d for d in c.train)


def test_bad_corpora_give_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(corpora.CorpusError, match="unknown corpus 'stoics'.*meditations"):
        corpora.load_corpus("stoics")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    with pytest.raises(corpora.CorpusError, match="is empty"):
        corpora.load_corpus(f"file:{empty}")
    with pytest.raises(corpora.CorpusError, match="not found"):
        corpora.load_corpus(f"file:{tmp_path / 'missing.txt'}")
    one = tmp_path / "one.txt"
    one.write_text("just one document")
    with pytest.raises(corpora.CorpusError, match="too few"):
        corpora.load_corpus(f"file:{one}")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n')
    with pytest.raises(corpora.CorpusError, match="neither a 'text' field"):
        corpora.load_corpus(f"file:{bad}")
    with pytest.raises(corpora.CorpusError, match="ADAPTERSCOPE_ALLOW_HUB"):
        corpora.load_corpus("hf:tatsu-lab/alpaca")


def test_url_source_is_cached_and_checksummed(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTERSCOPE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "remote.txt"
    src.write_text("\n\n".join(f"Remote paragraph {i}." for i in range(30)))
    url = src.as_uri()
    c = corpora.load_corpus(f"url:{url}")
    assert len(c) == 30 and len(c.source["sha256"]) == 64
    src.unlink()  # second load comes from the cache
    assert corpora.load_corpus(f"url:{url}").digest == c.digest
    with pytest.raises(corpora.CorpusError, match="does not match the pinned"):
        corpora.load_corpus(f"url:{url}#sha256={'0' * 64}")


def test_neutral_samples_are_seeded_base_samples(tiny_llama):
    class Tok:  # minimal tokenizer: one id per word
        bos_token_id, eos_token_id, pad_token_id = 1, 2, 2

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [3 + (sum(map(ord, text)) % 90)]}

    a = corpora.neutral_samples(tiny_llama, Tok(), n=5, length=12, seed=0)
    b = corpora.neutral_samples(tiny_llama, Tok(), n=5, length=12, seed=0)
    c = corpora.neutral_samples(tiny_llama, Tok(), n=5, length=12, seed=1)
    assert a.shape == (5, 12) and (a[:, 0] == 1).all()
    assert (a == b).all() and not (a == c).all()
    assert not (a[:, 2:] == 2).any()  # EOS suppressed
