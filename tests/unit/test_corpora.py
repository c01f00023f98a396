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


@pytest.mark.parametrize("name", ["dtc-ads", "instructions"])
def test_generated_corpora_are_seeded_and_varied(name):
    a = corpora.load_corpus(name, seed=0)
    b = corpora.load_corpus(name, seed=0)
    c = corpora.load_corpus(name, seed=1)
    assert a.train == b.train and a.digest == b.digest
    assert a.digest != c.digest
    docs = a.train + a.heldout
    assert len(set(docs)) == len(docs) >= 600  # hundreds of distinct documents
    vocab = {w.lower().strip('.,;:!?"()') for d in docs for w in d.split()}
    assert len(vocab) > 1500  # not a handful of templates (the Stoic quotes have about 2,400 word types)


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
