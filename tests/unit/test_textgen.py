"""Tests for adapterscope.textgen: determinism, distinctness, diversity, Alpaca format and answer correctness."""

from __future__ import annotations

import itertools
import random
import re
import time

import pytest

from adapterscope import textgen
from adapterscope.textgen import GENERATORS, INSTRUCTION_FAMILIES, generate_dtc_ads, generate_instructions

N = 1000


@pytest.fixture(scope="module")
def ads() -> list[str]:
    return generate_dtc_ads(N, seed=0)


@pytest.fixture(scope="module")
def inst() -> list[tuple[str, str]]:
    return generate_instructions(N, seed=0, return_family=True)


ALPACA = re.compile(
    r"\ABelow is an instruction that describes a task\. Write a response that appropriately completes the request\.\n\n"
    r"### Instruction:\n(?P<ins>(?:(?!\n\n### ).)+)\n\n### Response:\n(?P<resp>.+)\Z", re.S)
ALPACA_IN = re.compile(
    r"\ABelow is an instruction that describes a task, paired with an input that provides further context\. "
    r"Write a response that appropriately completes the request\.\n\n"
    r"### Instruction:\n(?P<ins>(?:(?!\n\n### ).)+)\n\n### Input:\n(?P<inp>(?:(?!\n\n### ).)+)\n\n### Response:\n(?P<resp>.+)\Z", re.S)


def parse(doc: str) -> tuple[str, str, str]:
    m = ALPACA_IN.match(doc) or ALPACA.match(doc)
    assert m, f"not Alpaca-formatted:\n{doc}"
    d = m.groupdict()
    return d["ins"], d.get("inp") or "", d["resp"]


def body(doc: str) -> str:
    """Instruction docs without the shared preamble and section headers (those would inflate every overlap measure)."""
    return " ".join(parse(doc)) if doc.startswith("Below is") else doc


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


# ------------------------------------------------------------------------------------------------ shared contract
@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_seeded_and_prefix_stable(name):
    gen = GENERATORS[name]
    a = gen(300, seed=7)
    assert a == gen(300, seed=7)
    assert gen(120, seed=7) == a[:120]
    assert gen(1, seed=7) == a[:1]
    other = gen(300, seed=8)
    assert len(set(a) & set(other)) < 15  # a few short docs (e.g. "Is 97 prime?") may coincide across seeds
    assert a[0] != other[0]


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_does_not_touch_global_random_state(name):
    random.seed(123)
    expected = random.random()
    random.seed(123)
    GENERATORS[name](50, seed=1)
    assert random.random() == expected


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_all_distinct_and_fast(name):
    t0 = time.perf_counter()
    docs = GENERATORS[name](2000, seed=3)
    assert time.perf_counter() - t0 < 2.5
    assert len(docs) == len(set(docs)) == 2000


@pytest.mark.parametrize("name", sorted(GENERATORS))
@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-5, ValueError), (2.0, TypeError), ("10", TypeError), (None, TypeError),
                                      (True, TypeError)])
def test_bad_n(name, bad, exc):
    with pytest.raises(exc, match="n must be"):
        GENERATORS[name](bad)


def test_bad_seed():
    with pytest.raises(TypeError, match="seed must be"):
        generate_dtc_ads(3, seed="x")


def test_exhausted_space_raises_clear_error(monkeypatch):
    monkeypatch.setattr(textgen, "_MAX_MISSES", 50)
    with pytest.raises(ValueError, match="could only generate 2 distinct"):
        textgen._collect(5, 0, lambda r: ("x", r.choice(["a", "b"])), "toy")


# ------------------------------------------------------------------------------------------------ diversity
# Why these measures and bounds: a slot-filling generator (a few fixed templates, slots filled from the same rich word
# lists) repeats its frame words in every document. TEMPLATE_ADS below is such a baseline; on 1000 ads it scores a
# distinct-4-gram share of ~0.27, a mean pairwise Jaccard of ~0.22 and 1 layout skeleton per template, while the real
# generator scores ~0.49, ~0.11 and hundreds of skeletons (seed 0). The bounds sit between the two with margin on both
# sides, and the test asserts the baseline fails them, so the thresholds are shown to discriminate. (Openings of 8
# words are distinct for the baseline too, because a brand name appears early; that bound is a sanity check only.)
TEMPLATE_ADS = [
    "Meet the {ns} from {brand}. It {b1}. Made with {m1}, it {b2}. Only ${price}. Use code {code} for {pct}% off your first "
    "order. Free shipping on orders over $50. Shop now and join thousands of happy customers who love their new {ns}.",
    "Introducing {brand}: the {ns} that {b1}. We use {m1} and {m2}, so it {b2}. Get yours today for just ${price}. Use code "
    "{code} for {pct}% off. Free returns, always. Join 40,000+ happy customers and try it risk-free for 30 days.",
    "Tired of {p1}? The {brand} {ns} {b1} and {b2}. Crafted from {m1}. Now only ${price}. Save {pct}% with code {code}. "
    "Hurry, this offer ends soon. Order now and see why everyone is talking about {brand}.",
]
NGRAM_MIN, JACCARD_MAX = 0.40, 0.15


def template_ads(n: int, seed: int) -> list[str]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        c = textgen._ad_context(r)
        out.append(r.choice(TEMPLATE_ADS).format(**textgen._fill(r, c)))
    return out


def distinct_ngram_share(docs: list[str], n: int = 4) -> float:
    grams = [tuple(w[i:i + n]) for w in map(words, docs) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams)


def mean_pairwise_jaccard(docs: list[str]) -> float:
    sets = [set(words(d)) for d in docs]
    return sum(len(a & b) / len(a | b) for a, b in itertools.combinations(sets, 2)) / (len(sets) * (len(sets) - 1) / 2)


def skeleton(doc: str) -> tuple[str, ...]:
    """Each line as a shape class: blank, list-like (bullet, Q/A, table row, numbered), short (< 8 words) or paragraph."""
    return tuple("b" if not ln else "l" if re.match(r"^(?:[•\-✓→*✗✅✨💧🔥🌿👉💛|]|Q:|A:|\d+\.)", ln) else "s" if len(ln.split()) < 8
                 else "p" for ln in doc.split("\n"))


def test_ads_diversity(ads):
    assert distinct_ngram_share(ads) > NGRAM_MIN  # measured ~0.49
    assert mean_pairwise_jaccard(ads[:200]) < JACCARD_MAX  # measured ~0.11
    assert len({tuple(words(d)[:8]) for d in ads}) / len(ads) > 0.85  # measured ~0.92
    assert len({tuple(words(d)[:2]) for d in ads}) > 200  # measured ~345 distinct two-word starts


def test_diversity_bounds_reject_a_template_generator():
    base = template_ads(N, seed=0)
    assert distinct_ngram_share(base) < NGRAM_MIN
    assert mean_pairwise_jaccard(base[:200]) > JACCARD_MAX
    assert len({skeleton(d) for d in base}) <= len(TEMPLATE_ADS)


def test_ads_layouts_vary(ads):
    """Structure, not only wording, varies: hundreds of distinct line skeletons, and every layout family shows up."""
    assert len({skeleton(d) for d in ads}) > 200
    kinds = {"Subject:": 0, "#": 0, "Q: ": 0, "| ": 0, '"': 0, "\n- ": 0}
    for d in ads:
        for k in kinds:
            kinds[k] += k in d
    assert all(v >= 30 for v in kinds.values()), kinds  # email, social, FAQ, comparison, testimonial, bullets all present


def test_ads_length_and_register(ads):
    for d in ads:
        assert 60 <= len(d.split()) <= 200, d
        assert "{" not in d and "}" not in d, d  # no unfilled slots
        assert not re.search(r"\ba (?!one)[aeio]", d, re.I), d  # article agreement
    assert sum("$" in d for d in ads) > 0.4 * N  # measured ~0.46
    assert sum(bool(re.search(r"\$|\d+%", d)) for d in ads) > 0.6 * N  # price or discount: measured ~0.68
    cats = {c for c in textgen._CATS if any(any(ns in d for ns, _ in textgen._CATS[c]["n"]) for d in ads)}
    assert len(cats) >= 15


def test_instructions_diversity(inst):
    """Instruction texts vary beyond their slots: after masking quoted text, numbers and capitalised names, a template
    generator with one or two phrasings per family has at most ~50 distinct instruction frames; this one has ~440."""
    docs = [body(d) for _, d in inst]
    frames = {re.sub(r'"[^"]*"|\$?\d[\d,.]*|\b[A-Z][a-z]+\b', "#", parse(d)[0]) for _, d in inst}
    assert len(frames) > 250  # measured ~440
    assert distinct_ngram_share(docs) > 0.5  # measured ~0.60
    assert len({parse(d)[0] for _, d in inst}) / len(inst) > 0.6  # distinct instruction strings, measured ~0.71
    assert mean_pairwise_jaccard(docs[:200]) < 0.08  # measured ~0.05


# ------------------------------------------------------------------------------------------------ instructions
def test_alpaca_format_and_lengths(inst):
    with_input = 0
    for _, d in inst:
        ins, inp, resp = parse(d)
        with_input += bool(inp)
        assert ins and resp and ins.strip() == ins and resp.strip() == resp and inp.strip() == inp, d
        assert 20 <= len(d.split()) <= 400, d
        assert not re.search(r"\{[a-z_0-9]+\}", ins + inp + resp), d  # no unfilled template slots
    assert 0.25 * len(inst) < with_input < 0.75 * len(inst)


def test_families(inst):
    assert len(INSTRUCTION_FAMILIES) >= 20
    seen = {f for f, _ in inst}
    assert len(seen) >= 20 and seen <= set(INSTRUCTION_FAMILIES)
    # plain and tagged calls give the same documents
    assert [d for _, d in inst[:50]] == generate_instructions(50, seed=0)


def test_several_phrasings_per_family(inst):
    """Each family words its instruction several ways (first three words after removing numbers/quoted parts)."""
    openings: dict[str, set] = {}
    for f, d in inst:
        ins = re.sub(r'"[^"]*"|\d[\d,.]*', "#", parse(d)[0])
        openings.setdefault(f, set()).add(" ".join(ins.split()[:3]))
    few = {f: len(v) for f, v in openings.items() if len(v) < 2}
    assert not few, few


def _fams(inst, name):
    docs = [parse(d) for f, d in inst if f == name]
    assert len(docs) >= 15, name
    return docs


def _last_int(text: str) -> int:
    return int(re.findall(r"-?\d+", text.replace(",", "").replace("$", ""))[-1])


def test_arithmetic_correct(inst):
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "×": lambda a, b: a * b, "÷": lambda a, b: a / b}
    for ins, _, resp in _fams(inst, "arithmetic"):
        m = re.search(r"(\d+) ([+\-×÷]) (\d+)", ins)
        if m:
            a, op, b = int(m[1]), m[2], int(m[3])
        else:
            a, b = map(int, re.findall(r"\d+", ins))
            op = "+" if re.search(r"sum|Add", ins) else "×"
        want = ops[op](a, b)
        assert want == int(want) and _last_int(resp) == want, (ins, resp)


def test_word_problems_correct(inst):
    for ins, _, resp in _fams(inst, "word_problem"):
        a, b = map(int, re.findall(r"\d+", ins))
        op = "÷" if "equally" in ins else "-" if " left" in ins else "×" if "each" in ins else "+"
        assert op != "+" or "more" in ins, ins
        want = {"+": a + b, "-": a - b, "×": a * b, "÷": a // b}[op]
        assert op != "÷" or a % b == 0
        eq = re.search(r"(\d+) ([+\-×÷]) \$?(\d+) = \$?(\d+)", resp)
        assert eq and eq[2] == op and {int(eq[1]), int(eq[3])} == {a, b} and int(eq[4]) == want, (ins, resp)
        assert want >= 0 and _last_int(resp) == want, (ins, resp)


def _data(ins: str, inp: str) -> str:
    return inp if inp else ins.rsplit(": ", 1)[1]


def test_sort_correct(inst):
    for ins, inp, resp in _fams(inst, "sort"):
        items = _data(ins, inp).split(", ")
        desc = bool(re.search(r"descending|largest to smallest|highest to lowest|reverse alphabetical|Z to A", ins))
        numeric = all(re.fullmatch(r"-?\d+", x) for x in items)
        want = sorted(items, key=int if numeric else str.lower, reverse=desc)
        assert ", ".join(want) in resp, (ins, inp, resp)


def test_reverse_correct(inst):
    for ins, inp, resp in _fams(inst, "reverse"):
        if "order" in ins:
            sent = _data(ins, inp)
            assert resp == " ".join(reversed(sent.split())), (ins, resp)
        else:
            word = re.search(r'"([^"]+)"', ins)[1]
            assert f'"{word[::-1]}"' in resp, (ins, resp)


def test_count_correct(inst):
    for ins, inp, resp in _fams(inst, "count"):
        got = int(re.search(r"\d+", resp)[0])
        quoted = re.findall(r'"([^"]+)"', ins)
        if "vowel" in ins:
            want = sum(ch in "aeiou" for ch in quoted[-1])
        elif len(quoted) == 2:  # a letter and a word
            letter, word = (quoted if len(quoted[0]) == 1 else quoted[::-1])
            want = word.count(letter)
        else:
            sent = inp or ins.split(": ", 1)[1].strip('"')
            want = len(sent.split())
        assert got == want, (ins, inp, resp)


def test_other_families_spot_checks(inst):
    for ins, _, resp in _fams(inst, "roman"):
        n = int(re.search(r"= (\d+)", resp)[1])
        assert textgen._roman(n) in resp and str(n) in resp
    for ins, inp, resp in _fams(inst, "case"):
        src = _data(ins, inp)
        if "uppercase" in ins or "capital letters" in ins:
            assert resp == src.upper()
        elif "lowercase" in ins:
            assert resp == src.lower()
    for ins, _, resp in _fams(inst, "yes_no"):
        assert resp.startswith(("Yes. ", "No. "))
        m = re.fullmatch(r"Is (\d+) (?:a )?prime(?: number)?\?", ins)
        if m:
            n = int(m[1])
            assert resp.startswith("Yes") == all(n % k for k in range(2, int(n ** 0.5) + 1))
    for ins, _, resp in _fams(inst, "percent"):
        p, x = map(int, re.findall(r"\d+", ins.replace("$", ""))[:2])
        assert f"{x * p // 100}" in resp
    for ins, inp, resp in _fams(inst, "email"):
        m = re.search(r"under (\d+) words", ins)
        assert not m or len(resp.split()) < int(m[1])
        assert ("Subject:" in resp) >= ("subject line" in ins)


UNITS = {  # independent conversion factors (exact definitions where they exist)
    ("kilometers", "miles"): 1 / 1.609344, ("miles", "kilometers"): 1.609344, ("kilograms", "pounds"): 1 / 0.45359237,
    ("pounds", "kilograms"): 0.45359237, ("inches", "centimeters"): 2.54, ("centimeters", "inches"): 1 / 2.54,
    ("liters", "US gallons"): 1 / 3.785411784, ("meters", "feet"): 1 / 0.3048, ("feet", "meters"): 0.3048,
    ("hours", "minutes"): 60, ("minutes", "seconds"): 60, ("days", "hours"): 24, ("kilograms", "grams"): 1000,
    ("meters", "centimeters"): 100, ("weeks", "days"): 7,
}


def test_unit_conversions_and_weekdays_correct(inst):
    plural = {"foot": "feet", "inch": "inches", "degree Celsius": "degrees Celsius", "degree Fahrenheit": "degrees Fahrenheit"}
    for ins, _, resp in _fams(inst, "unit_conversion"):
        m = re.fullmatch(r"(?:Convert|What is|Express) ([\d.]+) (.+?) (?:to|in) (.+?)[.?]", ins)
        v, src, dst = (float(m[1]), m[2], m[3]) if m else (lambda h: (float(h[2]), h[3], h[1]))(
            re.fullmatch(r"How many (.+?) are in ([\d.]+) (.+?)\?", ins))
        src = plural.get(src, src if src.endswith("s") or src in plural.values() else src + "s")
        got = float(re.search(r" is (?:about )?(-?[\d,]+(?:\.\d+)?)", resp)[1].replace(",", ""))
        if "Celsius" in src + dst:
            want = v * 9 / 5 + 32 if src == "degrees Celsius" else (v - 32) * 5 / 9
            assert abs(got - want) <= 0.05 + 1e-9, (ins, resp)
        else:
            want = v * UNITS[src, dst]
            assert abs(got - want) <= 0.005 + 1e-5 * want, (ins, resp)  # rounded to 2 decimals; tiny factor-precision slack
    days = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
    for ins, _, resp in _fams(inst, "weekday"):
        day, k = re.search(r"\b(" + "|".join(days) + r")\b", ins)[1], int(re.search(r"(\d+) days", ins)[1])
        want = days[(days.index(day) + (-k if "ago" in ins else k)) % 7]
        assert resp.endswith(f"the answer is {want}.") or f"{want} again" in resp, (ins, resp)


# ------------------------------------------------------------------------------------------------ weather bulletins
@pytest.fixture(scope="module")
def weather() -> list[tuple[str, str]]:
    return textgen._collect(N, 0, textgen._make_weather, "weather")


def test_weather_layouts_lengths_and_slots(weather):
    layouts = {tag for tag, _ in weather}
    assert layouts == {f.__name__[3:] for f in textgen._W_LAYOUTS}
    assert [d for _, d in weather[:50]] == textgen.generate_weather(50, seed=0)
    for _, d in weather:
        assert 30 <= len(d.split()) <= 260, d
        assert "{" not in d and "}" not in d, d
        assert all("  " not in line for line in d.split("\n")), d
    assert sum("°C" in d for _, d in weather) > 0.6 * N
    assert len({tuple(words(d)[:3]) for _, d in weather}) > 60  # many headings, not one template


def test_weather_numbers_agree(weather):
    for tag, d in weather:
        pairs = re.findall(r"high (-?\d+) °C, low (-?\d+) °C", d) + re.findall(r": .*?(-?\d+) °C / (-?\d+) °C", d)
        for hi, lo in pairs:
            assert int(lo) < int(hi), d
        for sky, pct in re.findall(r"^\w{3} \d+: (.+)\. -?\d+ °C / .*Chance of rain (\d+)%\.$", d, re.M) + \
                re.findall(r"^\w+: (.+), high -?\d+ °C, .*rain chance (\d+)%$", d, re.M):
            assert (int(pct) >= 50) == bool(textgen._W_WET.search(sky.lower())), (sky, pct, d)
        assert not re.search(r"\d\.\d{3,}", d), d  # no float artefacts such as 0.7999999999999998
        for x, y in re.findall(r"\b(\d+)-(\d+) (?:mm|cm|m|km/h|°C)\b", d):  # ranges run upwards
            assert int(x) < int(y), d
        for mean, gust in re.findall(r"winds \w+ (\d+) (?:km/h|mph), gusts of (\d+)", d):
            assert int(gust) > int(mean), d
        m = re.search(r"Chance of cloud-free summits: (\d+)%", d)
        if m and re.search(r"cloud-free summits likely|a fine day for the hills", d, re.I):
            assert int(m[1]) >= 70, d
        if tag == "climate":
            hi, lo = map(float, re.findall(r"highest temperature, (-?[\d.]+) °C.*lowest, (-?[\d.]+) °C", d, re.S)[0])
            assert lo < hi, d


def test_weather_register_is_not_the_ads_register(weather, ads):
    """A genre of its own: little vocabulary shared with the ad copy beyond function words."""
    wv = {w for _, d in weather for w in words(d)}
    av = {w for d in ads for w in words(d)}
    assert len(wv & av) / len(wv) < 0.4


# ------------------------------------------------------------------------------------------------ recipes
@pytest.fixture(scope="module")
def recipes() -> list[tuple[str, str]]:
    return textgen._collect(N, 0, textgen._make_recipe, "recipes")


def test_recipes_families_layouts_and_shape(recipes):
    fams = {t.split("/")[0] for t, _ in recipes}
    lays = {t.split("/")[1] for t, _ in recipes}
    assert fams == set(textgen._R_SAVOURY) | set(textgen._R_SWEET)
    assert lays == {f.__name__[3:] for f in textgen._R_LAYOUTS}
    assert [d for _, d in recipes[:50]] == textgen.generate_recipes(50, seed=0)
    for tag, d in recipes:
        assert 60 <= len(d.split()) <= 320, d
        assert "{" not in d and "}" not in d, d
        assert re.search(r"Serves \d+|Makes \d+", d), d
        steps = [int(x) for x in re.findall(r"^(\d+)\. ", d, re.M)]
        assert steps == list(range(1, len(steps) + 1)), d  # numbered steps count up from 1
        assert not re.search(r"\b1 (?:red onions|leeks|carrots|courgettes|spring onions)\b", d), d  # number agreement


def test_recipes_use_one_measuring_system(recipes):
    n_us = n_metric = 0
    for _, d in recipes:
        d = re.sub(r"Per serving: .*", "", d)  # nutrition is given in grams whatever the system
        us = bool(re.search(r"\d (?:cups?|oz|lb)\b", d)) and not re.search(r"\d+ (?:g|ml) \(", d)
        metric = bool(re.search(r"\b\d+ (?:g|ml)\b", d))
        assert not (us and metric) or "900 g (2 lb) loaf tin" in d, d
        if "°F" in d:
            assert "°C" not in d.replace("75 °C in the thickest part", ""), d
        n_us += us
        n_metric += metric
    assert n_us > 0.1 * N and n_metric > 0.4 * N


def test_recipes_mention_what_they_list(recipes):
    """The main ingredient of the title is in the ingredients, and the method cooks it."""
    for tag, d in recipes:
        if tag.split("/")[0] in textgen._R_SAVOURY:
            low = d.lower()
            first = re.search(r"^(?:- |you will need )(.+)", low, re.M)[1]  # the main is the first ingredient
            main = next(m for m in sorted(textgen._R_MAINS, key=len, reverse=True) if m in first)
            assert low.count(main) >= 3, (main, d)  # title or intro, ingredients, method
