"""Where does the embedded VLM lose a question family? An oracle ladder for one family (default: colour).

Each rung trains a fresh projector (SmolLM2 frozen, projector only, ``--steps`` steps of 8 questions of the one
family, lr 2e-3, float32) on different visual tokens, and scores held-out questions of that family (120 scenes,
seed 1; prediction = the candidate with the highest log-probability, as in ``vlm.evaluate``):

  text        no image: the frozen LM reads the scene's description (``scenes.describe``) in the prompt
              (zero-shot: is the LM able to bind "the circle" to its colour at all?)
  oracle      16 tokens that say exactly what is in each 32 x 32 cell: one-hot colour and shape of the objects
              whose centre lies in it (the information, cleanly coded: can the projector + frozen LM learn the
              question in this many steps when the tokens are perfect?)
  pixels      each cell's 4 x 4 block means of RGB (48 channels: colour is there, but must be found)
  final       the encoder's last ImageNet map (``encoder_features="final"``)
  multiscale  the encoder features 05a_vlm uses (``encoder_features="multiscale"``)

With the same steps, a gap between ``oracle`` and ``multiscale`` is the price of the real features; a gap between
``text``/``oracle`` and chance says what the frozen LM can do. ``benchmarks/encoder_probe.py`` asks the
complementary question (is the attribute linearly readable from the object's own token at all?).
About 4 minutes per trained rung at 100 steps on one core of a 2-core CPU box.

    .venv/bin/python benchmarks/vlm_oracle.py [--family colour] [--steps 100] [--rungs text,oracle,multiscale]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import torch

from adapterscope import models, scenes
from adapterscope import vlm as V

RUNGS = ("text", "oracle", "pixels", "final", "multiscale")


def oracle_tokens(exs, grid: int = 4) -> torch.Tensor:
    """(B, grid^2, 16): per cell, the summed one-hot colour (channels 0-5) and shape (8-10) of the objects centred
    in it; the other channels stay zero."""
    cols, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    F = torch.zeros(len(exs), grid * grid, 16)
    for n, e in enumerate(exs):
        cell = e.scene.size / grid
        for o in e.scene.objects:
            t = int(min(grid - 1, o.y // cell)) * grid + int(min(grid - 1, o.x // cell))
            F[n, t, cols.index(o.colour)] += 1.0
            F[n, t, 8 + shapes.index(o.shape)] += 1.0
    return F


def pixel_tokens(exs, grid: int = 4, blocks: int = 4) -> torch.Tensor:
    """(B, grid^2, 3 * blocks^2): mean RGB of blocks x blocks sub-squares of each cell, order (rgb, dy, dx)."""
    px = V.to_pixels([e.image for e in exs])
    pooled = torch.nn.functional.avg_pool2d(px, px.shape[-1] // (grid * blocks))
    return V.space_to_depth(pooled, blocks).flatten(2).transpose(1, 2)


def text_rung(exs) -> tuple[float, Counter]:
    lm, tok = models.load_model("smollm2-135m", dtype="float32", device="cpu")
    preds, ok = Counter(), 0
    for e in exs:
        text = (f"{V.USER_HEAD}Image: {scenes.describe(e.scene)}\n{e.prompt.user}{V.ASSISTANT_HEAD}")
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            lp = torch.log_softmax(lm(ids).logits[0, -1].float(), -1)
        # log-probability of each candidate summed over its tokens, tokenized as it continues the prompt (as
        # vlm.score does through answer_ids)
        sc = {}
        for c in e.question.candidates:
            cid = V.continuation_ids(tok, text, c)
            if len(cid) > 1:
                full = torch.cat([ids, torch.tensor([cid[:-1]], dtype=torch.long)], 1)
                with torch.no_grad():
                    lps = torch.log_softmax(lm(full).logits[0, -len(cid):].float(), -1)
                sc[c] = float(sum(lps[k, cid[k]] for k in range(len(cid))))
            else:
                sc[c] = float(lp[cid[0]])
        p = max(sc, key=sc.get)
        preds[p] += 1
        ok += p == e.answer
    return ok / len(exs), preds


def trained_rung(rung: str, train, held, steps: int, lr: float) -> tuple[float, Counter, float, float]:
    vlm = V.load_vlm(features="multiscale" if rung == "multiscale" else "final")
    if rung in ("final", "multiscale"):
        tf = V.encode_images(vlm, [e.image for e in train])
        hf = V.encode_images(vlm, [e.image for e in held])
    else:
        make = oracle_tokens if rung == "oracle" else pixel_tokens
        tf, hf = make(train), make(held)
        vlm.projector = V.fresh_projector(vlm.language_model, tf.shape[-1], tf.shape[1], vlm.projector.hidden)
    vlm.freeze_for_projector()
    res = V.train(vlm, train, V.TrainConfig(steps=steps, batch_size=8, lr=lr, warmup_steps=10, dtype="float32"),
                  image_features=tf, progress=True)
    r = V.evaluate(vlm, held, image_features=hf)
    fam = held[0].question.family
    k = min(10, len(res.losses))
    return (r["families"][fam]["accuracy"], Counter(r["per_example"]["pred"]),
            sum(res.losses[:k]) / k, sum(res.losses[-k:]) / k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="colour", choices=scenes.FAMILIES)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--held", type=int, default=120)
    ap.add_argument("--rungs", default="text,oracle,multiscale", help=f"comma-separated, from {RUNGS}")
    a = ap.parse_args()
    rungs = [r.strip() for r in a.rungs.split(",") if r.strip()]
    bad = [r for r in rungs if r not in RUNGS]
    if bad or a.steps < 1 or a.held < 1:
        raise SystemExit(f"unknown rungs {bad}; choose from {RUNGS}" if bad
                         else "--steps and --held must be at least 1")
    held = scenes.make_examples(a.held, seed=1, families=(a.family,))
    train = scenes.make_examples(a.steps * 8, seed=7, families=(a.family,))
    chance = 1 / len(held[0].question.candidates)
    print(f"family {a.family}: {a.held} held-out questions (chance {chance:.2f}); {a.steps} projector steps x 8")
    for rung in rungs:
        t0 = time.perf_counter()
        if rung == "text":
            acc, preds = text_rung(held)
            loss = "zero-shot"
        else:
            acc, preds, l0, l1 = trained_rung(rung, train, held, a.steps, a.lr)
            loss = f"loss {l0:.2f} -> {l1:.2f}"
        top = ", ".join(f"{k} {v}" for k, v in preds.most_common(3))
        print(f"{rung:<11} accuracy {acc:.2f}  ({loss}; top predictions: {top}; {time.perf_counter() - t0:.0f}s)",
              flush=True)


if __name__ == "__main__":
    main()
