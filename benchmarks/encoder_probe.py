"""Which of the image encoder's visual tokens carry an object's colour and shape? (linear probes)

For seeded scenes (adapterscope.scenes), every object's colour and shape is read from the visual token of the
grid cell that holds its centre, by a multinomial logistic regression (L-BFGS, L2) trained on the objects of
the first scenes and scored on the objects of the rest. Prints held-out accuracy for:

  final       the last ImageNet feature map (1280 channels, S/32 grid: the "final" encoder features),
  finer       the last block output at S/16 (112 channels) folded 2 x 2 into each S/32 token (448),
  multiscale  both concatenated (1728: the "multiscale" encoder features of adapterscope.vlm).

Chance: 1/6 for colour, 1/3 for shape. This is why 05a_vlm uses encoder_features="multiscale": with the last
map alone the projector never learned colour questions (held-out colour accuracy near chance). Multiscale tokens
were not enough on their own: the projector also needed a longer schedule with colour questions weighted up
(benchmarks/vlm_oracle.py and README.md).

    .venv/bin/python benchmarks/encoder_probe.py [--scenes 1500] [--train 1000] [--seed 7]
"""

from __future__ import annotations

import argparse
import time

import torch

from adapterscope import scenes
from adapterscope import vlm as V


def tokens_by_kind(px: torch.Tensor, batch: int = 50) -> dict[str, torch.Tensor]:
    enc = V.load_encoder(px.shape[-1], "multiscale")
    out = []
    with torch.no_grad():
        for j in range(0, len(px), batch):
            out.append(enc(px[j:j + batch]))
    ms = torch.cat(out)
    return {"final": ms[..., :1280], "finer": ms[..., 1280:], "multiscale": ms}


def object_rows(exs, F: torch.Tensor, n_train: int):
    g = int(round(F.shape[1] ** 0.5))
    cell = exs[0].scene.size / g
    cols, shapes = list(scenes.COLOURS), list(scenes.SHAPES)
    X, yc, ys, tr = [], [], [], []
    for n, e in enumerate(exs):
        for o in e.scene.objects:
            t = int(min(g - 1, o.y // cell)) * g + int(min(g - 1, o.x // cell))
            X.append(F[n, t])
            yc.append(cols.index(o.colour))
            ys.append(shapes.index(o.shape))
            tr.append(n < n_train)
    return torch.stack(X).double(), torch.tensor(yc), torch.tensor(ys), torch.tensor(tr)


def probe(X: torch.Tensor, y: torch.Tensor, tr: torch.Tensor, l2: float = 1e-3) -> float:
    """Held-out accuracy of an L2-regularised multinomial logistic regression on standardised inputs."""
    mu, sd = X[tr].mean(0), X[tr].std(0) + 1e-5
    X = (X - mu) / sd
    k = int(y.max()) + 1
    W = torch.zeros(X.shape[1], k, dtype=X.dtype, requires_grad=True)
    b = torch.zeros(k, dtype=X.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(X[tr] @ W + b, y[tr]) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((X[~tr] @ W + b).argmax(1) == y[~tr]).double().mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=1500)
    ap.add_argument("--train", type=int, default=1000, help="scenes whose objects train the probes")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--image-size", type=int, default=128)
    a = ap.parse_args()
    if not 0 < a.train < a.scenes:
        raise SystemExit("--train must be between 0 and --scenes")
    t0 = time.perf_counter()
    exs = scenes.make_examples(a.scenes, seed=a.seed, size=a.image_size)
    feats = tokens_by_kind(V.to_pixels([e.image for e in exs]))
    print(f"{a.scenes} scenes (seed {a.seed}), probes trained on the objects of the first {a.train}")
    print(f"{'tokens':<11} {'dim':>5} {'objects':>8} {'colour':>7} {'shape':>6}   (chance 0.17 / 0.33)")
    for kind, F in feats.items():
        X, yc, ys, tr = object_rows(exs, F, a.train)
        print(f"{kind:<11} {F.shape[-1]:>5} {len(X):>8} {probe(X, yc, tr):>7.2f} {probe(X, ys, tr):>6.2f}", flush=True)
    print(f"({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
