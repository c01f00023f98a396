"""adapterscope.composition on planted cases: deltas against B A x scaling, the single-adapter round trip, two
adapters on disjoint parameters merging without interference, two whose cores collide losing a core under a
linear merge and keeping it under core isolation, decoding-time composition equal to its arithmetic on a tiny
model (k copies of one adapter: the normalised composition is that adapter, the unit-weight one k times its
offset), alignment measures with known answers, and the statistics that treat seeds as replicates (one seed: the
one-stage numbers exactly; seed-to-seed variance only: the two-stage CI's closed-form width)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adapterscope import composition as C
from adapterscope import finetune


def _two_adapters(tiny_llama):
    from peft import LoraConfig

    cfg = finetune.FinetuneConfig(rank=4, alpha=8, steps=3, batch_size=4, seq_len=16, lr=3e-2, dtype="float32",
                                  seed=0)
    pm = finetune.add_lora(tiny_llama, cfg)  # adapter "default"
    g = torch.Generator().manual_seed(0)
    finetune.train(pm, torch.randint(97, (8, 16), generator=g), cfg, progress=False)
    pm.add_adapter("other", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                       lora_dropout=0.0))
    pm.set_adapter("other")
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_B.other" in n or "lora_A.other" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.set_adapter("default")
    pm.eval()
    return pm


def test_deltas_match_b_a_scaling_and_a_single_merge_round_trips(tiny_llama):
    pm = _two_adapters(tiny_llama)
    d = C.lora_deltas(pm, "default")
    name, mod = next((n, m) for n, m in pm.named_modules() if n in d)
    ref = mod.lora_B["default"].weight @ mod.lora_A["default"].weight * mod.scaling["default"]
    assert torch.allclose(d[name], ref.detach(), atol=1e-7)
    merged = C.merge_deltas([d], [1.0])
    assert max(float((merged[k] - d[k]).abs().max()) for k in d) < 1e-6
    ids = torch.randint(97, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with pm.disable_adapter():
            base_before = pm(input_ids=ids).logits
        want = pm(input_ids=ids).logits
        with pm.disable_adapter(), C.applied_deltas(pm, merged):
            got = pm(input_ids=ids).logits
        with pm.disable_adapter():
            base_again = pm(input_ids=ids).logits
        pm.set_adapter("default")
    assert torch.allclose(got, want, atol=1e-5)
    with torch.no_grad(), pm.disable_adapter():
        assert not torch.allclose(base_again, want, atol=1e-4)
    assert torch.equal(base_again, base_before)  # the base weights are restored exactly
    with pytest.raises(C.CompositionError, match="no LoRA module"):
        C.lora_deltas(pm, "nosuch")


def _planted(shape=(8, 8)):
    """Two deltas: a's core C1 (4 large entries), b's core C2 (4 other large entries); b also carries moderate
    opposite values on C1, which a plain average halves-and-cancels."""
    a = {"m": torch.full(shape, 0.01)}
    b = {"m": torch.full(shape, -0.01)}
    c1 = [(0, 0), (1, 1), (2, 2), (3, 3)]
    c2 = [(4, 4), (5, 5), (6, 6), (7, 7)]
    for i, j in c1:
        a["m"][i, j] = 1.0
        b["m"][i, j] = -0.5
    for i, j in c2:
        b["m"][i, j] = 1.0
    return a, b, c1, c2


def test_disjoint_adapters_merge_without_interference():
    a = {"q": torch.randn(6, 6), "v": torch.zeros(6, 6)}
    b = {"q": torch.zeros(6, 6), "v": torch.randn(6, 6)}
    m = C.merge_deltas([a, b], [1.0, 1.0])
    assert torch.equal(m["q"], a["q"]) and torch.equal(m["v"], b["v"])
    iso, counts = C.core_isolated_merge([a, b], [1.0, 1.0], q=0.2)
    assert torch.equal(iso["q"], a["q"]) and torch.equal(iso["v"], b["v"]) and counts["colliding_entries"] == 0
    only = C.merge_deltas([{"q": a["q"]}, {"v": b["v"]}], [0.5, 0.5])  # a module only one adapter adapts
    assert torch.allclose(only["q"], 0.5 * a["q"]) and set(only) == {"q", "v"}


def test_colliding_core_is_lost_by_linear_merge_and_kept_by_isolation():
    a, b, c1, c2 = _planted()
    lin = C.merge_deltas([a, b], [0.5, 0.5])["m"]
    assert all(lin[i, j] == pytest.approx(0.25) for i, j in c1)  # a's core: 1.0 -> 0.25
    iso, counts = C.core_isolated_merge([a, b], [0.5, 0.5], q=4 / 64)
    assert all(iso["m"][i, j] == pytest.approx(1.0) for i, j in c1)  # kept exactly
    assert all(iso["m"][i, j] == pytest.approx(1.0) for i, j in c2)
    assert iso["m"][0, 1] == pytest.approx(0.0) and counts == {"core_entries": 8, "colliding_entries": 0, "q": 4 / 64}
    assert sorted(map(tuple, C.core_masks(a, 4 / 64)["m"].nonzero().tolist())) == c1
    ties = C.merge_deltas([a, b], [1.0, 1.0], "ties", density=0.2)["m"]
    assert torch.isfinite(ties).all()
    with pytest.raises(C.CompositionError, match="density"):
        C.merge_deltas([a, b], [1.0, 1.0], "ties")
    with pytest.raises(C.CompositionError, match="merge method"):
        C.merge_deltas([a, b], [1.0, 1.0], "average")


def test_core_is_exactly_the_top_share_even_with_ties():
    d = {"a": torch.zeros(6, 6), "b": torch.zeros(4, 4)}  # 52 entries, all tied at 0 but three
    d["a"][0, 0], d["b"][1, 1], d["b"][2, 2] = 3.0, -2.0, 1.0
    m = C.core_masks(d, q=0.1)  # round(0.1 * 52) = 5 entries
    assert sum(int(v.sum()) for v in m.values()) == 5
    assert m["a"][0, 0] and m["b"][1, 1] and m["b"][2, 2]
    state = torch.random.get_rng_state()
    C.merge_deltas([d, d], [1.0, 1.0], "dare_linear", density=0.5, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's generator is untouched


def test_dare_is_seeded():
    a, b, _, _ = _planted()
    x = C.merge_deltas([a, b], [1.0, 1.0], "dare_linear", density=0.5, seed=3)["m"]
    assert torch.equal(x, C.merge_deltas([a, b], [1.0, 1.0], "dare_linear", density=0.5, seed=3)["m"])
    assert not torch.equal(x, C.merge_deltas([a, b], [1.0, 1.0], "dare_linear", density=0.5, seed=4)["m"])


def test_decoding_time_composition_is_its_arithmetic(tiny_llama):
    pm = _two_adapters(tiny_llama)
    ids = torch.randint(97, (2, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits
        pm.set_adapter("default")
        l1 = pm(input_ids=ids).logits
        pm.set_adapter("other")
        l2 = pm(input_ids=ids).logits
        pm.set_adapter("default")
    got = C.decoding_time_logits(pm, ids, ["default", "other"], [0.7, 0.3])
    assert torch.allclose(got, base + 0.7 * (l1 - base) + 0.3 * (l2 - base), atol=1e-5)
    assert torch.allclose(C.decoding_time_logits(pm, ids, ["other"], [1.0]), l2, atol=1e-5)
    assert pm.active_adapter == "default"
    grads = {n: p.requires_grad for n, p in pm.named_parameters()}
    for p in pm.parameters():
        p.requires_grad_(False)  # a frozen (inference) model stays frozen
    C.decoding_time_logits(pm, ids, ["default", "other"], [0.5, 0.5])
    assert not any(p.requires_grad for p in pm.parameters())
    for n, p in pm.named_parameters():
        p.requires_grad_(grads[n])


def test_alignment_known_answers():
    g = torch.Generator().manual_seed(0)
    d = {"m": torch.randn(16, 16, generator=g)}
    B = {"m": torch.randn(16, 4, generator=g)}
    same = C.alignment(d, d, q=0.1, b_a=B, b_b={"m": B["m"] @ torch.randn(4, 4, generator=g)})
    assert same["cosine"] == pytest.approx(1.0) and same["core_jaccard"] == 1.0 and same["sign_conflict"] == 0.0
    assert same["subspace_overlap"] == pytest.approx(1.0)  # the same column space
    Q = torch.linalg.qr(torch.randn(16, 16, generator=g))[0]
    far = C.alignment(d, {"m": -d["m"]}, q=0.1, b_a={"m": Q[:, :4]}, b_b={"m": Q[:, 4:8]})
    assert far["cosine"] == pytest.approx(-1.0) and far["sign_conflict"] == 1.0
    assert far["subspace_overlap"] == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(C.CompositionError, match="share no module"):
        C.alignment(d, {"x": d["m"]}, q=0.1)


def test_retention():
    assert C.retention(3.0, 2.0, 2.5) == pytest.approx(0.5)
    assert C.retention(3.0, 2.0, 3.5) == pytest.approx(-0.5)
    assert math.isnan(C.retention(3.0, 3.1, 2.0))


def _three_adapters(tiny_llama):
    """default (trained), other (random) and zero (lora_B = 0: no change at all)."""
    from peft import LoraConfig

    pm = _two_adapters(tiny_llama)
    pm.add_adapter("zero", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                      lora_dropout=0.0))  # peft initialises lora_B to zero
    pm.set_adapter("default")
    pm.eval()
    return pm


def test_run_composition_on_planted_adapters(tiny_llama):
    pm = _three_adapters(tiny_llama)
    g = torch.Generator().manual_seed(3)
    held = {n: torch.randint(97, (4, 12), generator=g) for n in ("default", "other", "zero")}
    neutral = torch.randint(97, (3, 12), generator=g)
    cfg = C.CompositionConfig(sizes=(2, 3), core_qs=(0.05,), batch_size=2)
    out = C.run_composition(pm, ["default", "other", "zero"], held, neutral, cfg, progress=False)
    assert out["subsets"] == ["default+other", "default+zero", "other+zero", "default+other+zero"]
    assert out["methods"] == ["task_arithmetic", "ties", "dare_linear", "core_q0.05", "decoding_time",
                              "decoding_time_norm"]
    assert len(out["rows"]) == (2 + 2 + 2 + 3) * 6
    rows = {(r["subset"], r["method"], r["corpus"]): r for r in out["rows"]}
    # the zero adapter changes nothing: composed with it, an adapter keeps exactly its own loss (retention 1 where
    # it has a gain), under task arithmetic and at decoding time, and the zero adapter's own retention is undefined
    for m in ("task_arithmetic", "decoding_time"):
        for a in ("default", "other"):
            r = rows[(f"{a}+zero" if a == "default" else "other+zero", m, a)]
            assert r["loss"] == pytest.approx(out["singles"][a]["loss_single"], abs=1e-5)
            if out["singles"][a]["gain"] > 0:
                assert r["retention"] == pytest.approx(1.0, abs=1e-4)
        assert math.isnan(rows[("default+zero", m, "zero")]["retention"])
    assert out["singles"]["zero"]["kl_neutral"] == pytest.approx(0.0, abs=1e-6)
    # decoding time equals its arithmetic, computed here by hand for one subset and one corpus
    ids = held["default"]
    with torch.no_grad():
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits.float()
        parts = []
        for a in ("default", "other"):
            pm.set_adapter(a)
            parts.append(pm(input_ids=ids).logits.float())
        pm.set_adapter("default")
    comp = C.proxy_logits(base, parts, [1.0, 1.0])
    want = torch.nn.functional.cross_entropy(comp[:, :-1].reshape(-1, comp.shape[-1]), ids[:, 1:].reshape(-1))
    assert rows[("default+other", "decoding_time", "default")]["loss"] == pytest.approx(float(want), abs=1e-5)
    half = C.proxy_logits(base, parts, [0.5, 0.5])  # normalised: the mean of the two tuned models' logits
    want = torch.nn.functional.cross_entropy(half[:, :-1].reshape(-1, half.shape[-1]), ids[:, 1:].reshape(-1))
    assert rows[("default+other", "decoding_time_norm", "default")]["loss"] == pytest.approx(float(want), abs=1e-5)
    # the base weights are untouched after every merge
    with torch.no_grad(), pm.disable_adapter():
        again = pm(input_ids=ids).logits.float()
    assert torch.equal(again, base)
    assert {(a["a"], a["b"]) for a in out["alignment"]} == {("default", "other"), ("default", "zero"),
                                                           ("other", "zero")}
    assert len(out["cores"]) == 4 and all(c["q"] == 0.05 for c in out["cores"])
    with pytest.raises(C.CompositionError, match="not loaded"):
        C.run_composition(pm, ["default", "nosuch"], held, neutral, cfg, progress=False)


def test_interference_vs_alignment_and_paired_comparisons_on_planted_rows():
    names = ["a", "b", "c", "d"]
    import itertools

    pairs = list(itertools.combinations(names, 2))
    align = [{"a": x, "b": y, "core_jaccard": 0.1 * i} for i, (x, y) in enumerate(pairs)]
    rows = [{"subset": f"{x}+{y}", "size": 2, "method": "task_arithmetic", "corpus": c, "retention": 1 - 0.2 * i,
             "interference": 0.2 * i} for i, (x, y) in enumerate(pairs) for c in (x, y)]
    r = C.interference_vs_alignment(rows, align, n_boot=200)
    assert r["value"] == pytest.approx(1.0) and r["n"] == 6 and r["p_value"] == pytest.approx(2 / 720)
    flat = [{**a, "core_jaccard": 0.3} for a in align]
    assert "same for every pair" in C.interference_vs_alignment(rows, flat)["reason"]
    assert "needs 3" in C.interference_vs_alignment(rows[:4], align)["reason"]
    # per subset mean / min retention, the best merge and a paired difference with a known answer
    rows3 = [{"subset": s, "size": 2, "method": m, "corpus": c, "retention": v}
             for s, m, c, v in [("x", "ta", 1, 0.2), ("x", "ta", 2, 0.6), ("x", "ties", 1, 0.5), ("x", "ties", 2, 0.3),
                                ("y", "ta", 1, 0.4), ("y", "ta", 2, 0.4), ("y", "ties", 1, 0.1), ("y", "ties", 2, 0.9),
                                ("z", "ta", 1, 0.5), ("z", "ta", 2, float("nan")), ("z", "ties", 1, 0.5),
                                ("z", "ties", 2, 0.5)]]
    assert C.per_subset(rows3, "ta", "min") == pytest.approx({"x": 0.2, "y": 0.4})  # z has an undefined constituent
    assert C.per_subset(rows3, "ties", "mean") == pytest.approx({"x": 0.4, "y": 0.5, "z": 0.5})
    assert C.best_merge(rows3, ["ta", "ties"], "min") == pytest.approx({"x": 0.3, "y": 0.4})
    d = C.paired_comparison({"x": 1.0, "y": 2.0, "w": 5.0}, {"x": 0.5, "y": 1.0})
    assert d["value"] == pytest.approx(0.75) and d["n"] == 2 and d["p_value"] == pytest.approx(0.5)
    assert "needs 2" in C.paired_comparison({"x": 1.0}, {"x": 0.0})["reason"]


# ------------------------------------------------------------------------------------------ normalised weights
def test_decoding_weights():
    assert C.decoding_weights(4) == [1.0] * 4 and C.decoding_weights(4, normalised=True) == [0.25] * 4
    assert C.decoding_weights(2, weight=0.6, normalised=True) == [0.3, 0.3]
    with pytest.raises(C.CompositionError, match="at least one"):
        C.decoding_weights(0)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_k_identical_offsets_normalised_is_one_unit_is_k_times(k):
    g = torch.Generator().manual_seed(k)
    base, off = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    tuned = [base + off] * k
    norm = C.proxy_logits(base, tuned, C.decoding_weights(k, normalised=True))
    unit = C.proxy_logits(base, tuned, C.decoding_weights(k))
    assert torch.allclose(norm, base + off, atol=1e-5)
    assert torch.allclose(unit, base + k * off, atol=1e-5)


def _copies(tiny_llama, k):
    """The trained adapter "default" plus k - 1 exact copies of it (c1, c2, ...) in one peft model."""
    from peft import LoraConfig

    pm = _two_adapters(tiny_llama)
    names = ["default"] + [f"c{i}" for i in range(1, k)]
    state = {n: p.detach().clone() for n, p in pm.named_parameters() if ".default." in n}
    for c in names[1:]:
        pm.add_adapter(c, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                     lora_dropout=0.0))
    params = dict(pm.named_parameters())
    with torch.no_grad():
        for n, v in state.items():
            for c in names[1:]:
                params[n.replace(".default.", f".{c}.")].copy_(v)
    pm.set_adapter("default")
    pm.eval()
    return pm, names


def test_k_copies_of_one_adapter_on_a_model(tiny_llama):
    """On a real (tiny) peft model: composing k copies of one adapter at weights 1/k gives that adapter's logits
    back, at weight 1 the base plus k times its logit shift; and in the study the normalised composition keeps
    exactly the adapter's own loss, gain and neutral KL (retention 1), the unit-weight one scores the k-fold shift."""
    k = 3
    pm, names = _copies(tiny_llama, k)
    ids = torch.randint(97, (2, 10), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        with pm.disable_adapter():
            base = pm(input_ids=ids).logits.float()
        one = pm(input_ids=ids).logits.float()
    assert not torch.allclose(one, base, atol=1e-4)
    norm = C.decoding_time_logits(pm, ids, names, C.decoding_weights(k, normalised=True))
    unit = C.decoding_time_logits(pm, ids, names, C.decoding_weights(k))
    assert torch.allclose(norm, one, atol=1e-5)
    assert torch.allclose(unit, base + k * (one - base), atol=1e-4)

    g = torch.Generator().manual_seed(6)
    rows = torch.randint(97, (4, 12), generator=g)
    held = {n: rows for n in names}
    neutral = torch.randint(97, (3, 12), generator=g)
    cfg = C.CompositionConfig(sizes=(2, 3), merges=("task_arithmetic",), core_qs=(), batch_size=2)
    out = C.run_composition(pm, names, held, neutral, cfg, progress=False)
    got = {(r["subset"], r["method"], r["corpus"]): r for r in out["rows"]}
    single = out["singles"]["default"]
    assert all(s["loss_single"] == pytest.approx(single["loss_single"], abs=1e-6) for s in out["singles"].values())
    full = "+".join(names)
    for s in ("default+c1", full):
        for c in s.split("+"):
            r = got[(s, "decoding_time_norm", c)]
            assert r["loss"] == pytest.approx(single["loss_single"], abs=1e-5)
            assert r["kl_neutral"] == pytest.approx(single["kl_neutral"], abs=1e-5)
            if single["gain"] > 0:
                assert r["retention"] == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():
        with pm.disable_adapter():
            b = pm(input_ids=rows).logits.float()
        o = pm(input_ids=rows).logits.float()
    kfold = b + k * (o - b)
    want = torch.nn.functional.cross_entropy(kfold[:, :-1].reshape(-1, kfold.shape[-1]), rows[:, 1:].reshape(-1))
    assert got[(full, "decoding_time", "c2")]["loss"] == pytest.approx(float(want), abs=1e-4)


# ------------------------------------------------------------------------------------------ seeds as replicates
def _pair_rows(interf: dict, seed: int | None = None, method: str = "task_arithmetic") -> list[dict]:
    out = []
    for key, v in interf.items():
        for c in key.split("+"):
            r = {"subset": key, "size": 2, "method": method, "corpus": c, "retention": 1 - v, "interference": v}
            if seed is not None:
                r["seed"] = seed
            out.append(r)
    return out


def test_one_seed_gives_the_one_stage_numbers_exactly():
    from adapterscope import stats

    g = np.random.default_rng(0)
    a = {f"s{i}": float(x) for i, x in enumerate(g.normal(0.3, 1, 9))}
    b = {f"s{i}": float(x) for i, x in enumerate(g.normal(0.0, 1, 9))}
    flat = C.paired_comparison(a, b, n_boot=500)
    nested = C.paired_comparison({k: {0: v} for k, v in a.items()}, {k: {0: v} for k, v in b.items()}, n_boot=500)
    ref = stats.mean_difference(list(a.values()), list(b.values()), paired=True, n_boot=500, seed=0)
    for k in ("value", "p_value", "ci_low", "ci_high"):
        assert flat[k] == nested[k] == getattr(ref, k)
    assert flat["n"] == 9 and flat["n_seeds"] == 1 and flat["ci_over"] == "subsets"
    m = C.replicate_mean({k: {3: v} for k, v in a.items()}, 500)
    ref = stats.mean_ci(list(a.values()), 500, 0)
    assert (m["value"], m["ci_low"], m["ci_high"], m["n"]) == (ref.value, ref.ci_low, ref.ci_high, 9)
    assert "needs 2" in C.replicate_mean({"x": {0: 1.0, 1: 2.0}}, 100)["reason"]


def test_seed_to_seed_variance_widens_the_ci_by_its_closed_form():
    """Every subset's mean over seeds is 0, its two seeds +-1: the p has nothing to reject and a bootstrap over
    subsets alone gives the point interval [0, 0]; resampling the seeds too, a drawn subset's mean is -1, 0 or +1
    with probabilities 1/4, 1/2, 1/4 (variance 1/2), so the mean of n = 20 has sd sqrt(1 / 40) = 0.158 and the
    95% interval is about +-0.31."""
    n = 20
    diff = {f"s{i}": {0: 1.0, 1: -1.0} for i in range(n)}
    zero = {f"s{i}": {0: 0.0, 1: 0.0} for i in range(n)}
    r = C.paired_comparison(diff, zero, n_boot=4000)
    assert r["value"] == pytest.approx(0.0) and r["n"] == n and r["n_seeds"] == 2
    assert r["ci_over"] == "subsets and seeds" and r["p_value"] == pytest.approx(1.0)
    half = 1.96 * math.sqrt(0.5 / n)
    assert r["ci_low"] == pytest.approx(-half, abs=0.06) and r["ci_high"] == pytest.approx(half, abs=0.06)
    m = C.replicate_mean(diff, 4000)
    assert m["value"] == pytest.approx(0.0) and m["ci_low"] == pytest.approx(-half, abs=0.06)
    one = C.paired_comparison({k: 0.0 for k in diff}, {k: 0.0 for k in diff})  # the seed means alone
    assert one["ci_low"] == one["ci_high"] == 0.0 and one["ci_over"] == "subsets"  # no spread


def test_two_identical_seeds_match_the_one_seed_analysis():
    """Seed 1 a copy of seed 0: the value and p are the one-seed ones and the CI agrees up to bootstrap noise
    (resampling identical replicates changes nothing)."""
    g = np.random.default_rng(1)
    v = {f"s{i}": float(x) for i, x in enumerate(g.normal(0.5, 0.3, 11))}
    one = C.replicate_mean(v, 4000)
    two = C.replicate_mean({k: {0: x, 1: x} for k, x in v.items()}, 4000)
    assert two["value"] == pytest.approx(one["value"]) and two["n_seeds"] == 2
    assert two["ci_low"] == pytest.approx(one["ci_low"], abs=0.03)
    assert two["ci_high"] == pytest.approx(one["ci_high"], abs=0.03)
    lo, hi, deg = C.two_stage_ci([[x] for x in v.values()], np.mean, 4000)
    assert (lo, hi) == pytest.approx((one["ci_low"], one["ci_high"]), abs=0.03) and deg == 0.0
    assert math.isnan(C.two_stage_ci([[1.0, 2.0]], np.mean, 100)[0])  # one unit


def test_rows_of_two_seeds_are_replicates_of_a_subset():
    """per_subset / best_merge per (subset, seed), then averaged over seeds; interference_vs_alignment averages each
    pair's alignment and interference over its seeds (rows of two seeds used to make every pair undefined)."""
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.2)):
        for s, m, c, v in [("x", "ta", 1, 0.2), ("x", "ta", 2, 0.6), ("x", "ties", 1, 0.5), ("x", "ties", 2, 0.3),
                           ("y", "ta", 1, 0.4), ("y", "ta", 2, 0.4), ("y", "ties", 1, 0.1), ("y", "ties", 2, 0.9)]:
            rows.append({"subset": s, "size": 2, "method": m, "corpus": c, "retention": v + shift, "seed": seed})
    rows.append({"subset": "z", "size": 2, "method": "ta", "corpus": 1, "retention": float("nan"), "seed": 1})
    rows.append({"subset": "z", "size": 2, "method": "ta", "corpus": 1, "retention": 0.5, "seed": 0})
    got = C.per_subset(rows, "ta", "min", by_seed=True)
    want = {"x": {0: 0.2, 1: 0.4}, "y": {0: 0.4, 1: 0.6}, "z": {0: 0.5}}  # z's seed 1 is undefined
    assert set(got) == set(want) and all(got[k] == pytest.approx(want[k]) for k in want)
    assert C.per_subset(rows, "ta", "min") == pytest.approx({"x": 0.3, "y": 0.5, "z": 0.5})
    assert C.best_merge(rows, ["ta", "ties"], "min") == pytest.approx({"x": 0.4, "y": 0.5})

    import itertools

    pairs = ["+".join(p) for p in itertools.combinations("abcd", 2)]
    interf0 = {p: 0.1 * i for i, p in enumerate(pairs)}
    interf1 = {p: 0.1 * i + 0.4 for i, p in enumerate(pairs)}
    al = [{"a": p[0], "b": p[2], "core_jaccard": 0.05 * i, "seed": s} for s in (0, 1) for i, p in enumerate(pairs)]
    rows2 = _pair_rows(interf0, 0) + _pair_rows(interf1, 1)
    r = C.interference_vs_alignment(rows2, al, n_boot=300)
    assert r["n"] == 6 and r["n_seeds"] == 2 and r["value"] == pytest.approx(1.0)
    assert r["y"] == pytest.approx([0.1 * i + 0.2 for i in range(6)]) and r["ci_over"] == "pairs and seeds"
    assert r["p_value"] == pytest.approx(2 / 720)
    one = C.interference_vs_alignment(_pair_rows(interf0), [{k: v for k, v in a.items() if k != "seed"}
                                                            for a in al[:6]], n_boot=300)
    assert one["value"] == pytest.approx(1.0) and one["n_seeds"] == 1 and one["ci_over"] == "pairs"
