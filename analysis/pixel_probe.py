"""The pixel linear-probe reference: a linear classifier on raw pixels, per dataset, image size and fraction.

Usage::

    python -m analysis.pixel_probe cifar10 --img-size 32 [--fractions 0.05,0.1,0.3,0.5,1] [--root DIR]
        [--out results/reference/pixel_linear_probe.csv]

Why: the competence gate of the report (:mod:`analysis.gate`) asks whether the baseline of a claim has left
the start of training. A model that does not beat a linear map from pixels to classes on the same images has
learnt less than a least-squares-sized model with no hidden layer; its comparisons with another model say
nothing about inductive biases. The reference is measured, committed beside the results, and read by the
gate; no accuracy is a constant in code.

What exactly is measured (deterministic: zero initialisation, batches from a generator seeded 0, one
thread):

* images: the prepared dataset's decoded pixels at ``img_size`` (the evaluation transform, no
  augmentation), training subset chosen by :func:`convit.data.list_images` with the suites' per-class
  subsampling (fraction f is exactly the files the runs of fraction f train on); scored on the full val
  split;
* features: the flattened pixels, standardised per feature with the training subset's mean and std;
* model: multinomial logistic regression, weights and bias from zero, mean cross-entropy plus
  ``l2 * |W|^2 / 2``, Adam for :data:`STEPS` steps of batch :data:`BATCH` (cosine learning rate);
* ``l2``: chosen on a held-out tenth of the *training* subset (every 10th image of each class) from a
  grid that starts at :data:`L2_GRID` and grows past a winning end (:func:`choose_l2`), then refit on the
  whole subset; the val split is touched once, by the chosen model, so the
  reference is not selected on the images it is scored on.

Cost, measured for CIFAR-10 32 px at the five fractions: 6.3 CPU-minutes (user + sys; 15 min of wall time on
a shared 2-core VM): decoding the 60k images, then 4-5 fits of 1000 steps (~10 ms each) per fraction.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from convit.data import (
    DataError,
    build_transform,
    dataset_info,
    is_prepared,
    list_images,
    load_image,
    resolve_data_root,
)
from convit.spec import DataSpec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "reference" / "pixel_linear_probe.csv"
COLUMNS = (
    "dataset",
    "img_size",
    "fraction",
    "num_classes",
    "train_images",
    "val_images",
    "top1",
    "l2",
    "steps",
    "method",
    "command",
)
L2_GRID = (1e-3, 1e-2, 1e-1)
L2_LIMITS = (1e-6, 1e2)
STEPS = 1000
BATCH = 256


def _load(split_dir: Path, data: DataSpec) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Decode a whole split: (paths, pixels [N, C*H*W] float32, targets [N]).

    At the dataset's native size the pixels are the decoded bytes: the evaluation transform's per-channel
    normalisation is affine, and the per-feature standardisation of :func:`probe` removes any affine map,
    so skipping it changes nothing but the time. At other sizes the evaluation transform resizes.
    """
    _, samples = list_images(split_dir, 1.0, data.num_classes)
    if not samples:
        raise DataError(f"no images under {split_dir}")
    native = dataset_info(data.name).image_size == data.img_size
    tf = None if native else build_transform(False, data)
    x = torch.empty((len(samples), 3 * data.img_size * data.img_size), dtype=torch.float32)
    for i, (path, _) in enumerate(samples):
        img = load_image(path)
        if tf is None:
            x[i] = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1).reshape(-1))
        else:
            x[i] = tf(img).reshape(-1)
    y = torch.tensor([t for _, t in samples], dtype=torch.long)
    return [p for p, _ in samples], x, y


def fit(x: torch.Tensor, y: torch.Tensor, k: int, l2: float, steps: int = STEPS) -> torch.Tensor:
    """Multinomial logistic regression, weights and bias from zero: W [D + 1, K] (last row: the bias).

    Adam (lr 1e-3, cosine to 0) on mean cross-entropy + ``l2 * |W|^2 / 2`` for a fixed number of steps of
    batch :data:`BATCH`, whatever the training-set size (equal optimisation effort at every fraction); the
    batches come from a generator seeded 0, so the fit is a function of (x, y, l2).
    """
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    w = torch.zeros(xb.shape[1], k, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = torch.Generator().manual_seed(0)
    pos = len(xb)  # forces a shuffle before the first batch
    batch = min(BATCH, len(xb))
    for _ in range(steps):
        if pos + batch > len(xb):
            # one reordered copy per epoch, then contiguous slices (a gather per batch costs like a step)
            order = torch.randperm(len(xb), generator=g)
            xs, ys, pos = xb[order], y[order], 0
        xi, yi = xs[pos : pos + batch], ys[pos : pos + batch]
        pos += batch
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xi @ w, yi) + 0.5 * l2 * (w[:-1] ** 2).sum()
        loss.backward()
        opt.step()
        sched.step()
    return w.detach()


def accuracy(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 in percent of the fitted linear map on (x, y)."""
    logits = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1) @ w
    return float((logits.argmax(1) == y).double().mean() * 100)


def choose_l2(
    fit_x: torch.Tensor, fit_y: torch.Tensor, held_x: torch.Tensor, held_y: torch.Tensor, k: int, steps: int
) -> tuple[float, dict[float, float]]:
    """The l2 with the best held-out top-1 (ties: the larger penalty, the simpler model), and every score.

    The grid starts at :data:`L2_GRID` and grows by a factor of 10 past whichever end wins, within
    :data:`L2_LIMITS`, so the choice is not an edge of the grid: small subsets want far more penalty than
    the full set (CIFAR-10 at f = 0.05 chose the top of a 1e-4..1e-1 grid).
    """
    scores: dict[float, float] = {}
    grid = list(L2_GRID)
    while True:
        for l2 in grid:
            if l2 not in scores:
                scores[l2] = accuracy(fit(fit_x, fit_y, k, l2, steps), held_x, held_y)
        best = max(scores, key=lambda v: (scores[v], v))
        lo, hi = min(scores), max(scores)
        if best == hi and hi * 10 <= L2_LIMITS[1]:
            grid.append(float(f"{hi * 10:.0e}"))
        elif best == lo and lo / 10 >= L2_LIMITS[0]:
            grid.append(float(f"{lo / 10:.0e}"))
        else:
            return best, scores


def probe(
    name: str,
    img_size: int,
    fraction: float,
    train: tuple[list[str], torch.Tensor, torch.Tensor],
    val: tuple[list[str], torch.Tensor, torch.Tensor],
    split_dir: Path,
    steps: int = STEPS,
) -> dict:
    """One reference row: the fraction's training subset (the suites' own subsampling), ``l2`` chosen on a
    held-out tenth of it, a refit on all of it, scored once on val."""
    paths, x_all, y_all = train
    _, kept = list_images(split_dir, fraction)
    index = {p: i for i, p in enumerate(paths)}
    sel = torch.tensor([index[p] for p, _ in kept], dtype=torch.long)
    x, y = x_all[sel], y_all[sel]
    _, xv, yv = val
    k = int(y_all.max()) + 1
    # every 10th image of each class is held out for choosing l2 (samples are grouped by class, in order)
    pos = torch.zeros_like(y)
    for c in range(k):
        idx = (y == c).nonzero().squeeze(1)
        pos[idx] = torch.arange(len(idx))
    held = pos % 10 == 9

    def standardise(fit_on: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
        mu, sd = fit_on.mean(0), fit_on.std(0).clamp_min(1e-6)
        return [(t - mu) / sd for t in (fit_on, *others)]

    fit_x, held_x = standardise(x[~held], x[held])
    chosen, _ = choose_l2(fit_x, y[~held], held_x, y[held], k, steps)
    all_x, val_x = standardise(x, xv)
    w = fit(all_x, y, k, chosen, steps)
    return {
        "dataset": name,
        "img_size": img_size,
        "fraction": fraction,
        "num_classes": k,
        "train_images": len(y),
        "val_images": len(yv),
        "top1": round(accuracy(w, val_x, yv), 2),
        "l2": chosen,
        "steps": steps,
        "method": f"multinomial logistic regression on standardised pixels, Adam {steps} steps of batch "
        f"{BATCH}, l2 chosen on a held-out tenth of the training subset",
    }


def write(rows: list[dict], out: Path) -> None:
    """Merge ``rows`` into ``out`` (replacing rows of the same dataset, size and fraction), sorted."""
    old = []
    if out.is_file():
        with out.open() as fh:
            old = list(csv.DictReader(fh))
    new_keys = {(r["dataset"], str(r["img_size"]), f"{float(r['fraction']):g}") for r in rows}
    kept = [r for r in old if (r["dataset"], r["img_size"], f"{float(r['fraction']):g}") not in new_keys]
    merged = kept + [{c: r.get(c, "") for c in COLUMNS} for r in rows]
    merged.sort(key=lambda r: (r["dataset"], int(r["img_size"]), float(r["fraction"])))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=COLUMNS)
        wr.writeheader()
        wr.writerows(merged)


def main(argv: list[str] | None = None) -> int:
    """CLI: measure the reference for one dataset and size at the given fractions, merge into the CSV."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--img-size", type=int, required=True)
    ap.add_argument("--fractions", default="1", help="comma-separated training fractions (default: 1)")
    ap.add_argument("--root", default=None, help="data root (default: $CONVIT_DATA_ROOT)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps per fit (default {STEPS})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
    except ValueError:
        fractions = []
    if args.steps < 1:
        ap.error(f"--steps must be positive, got {args.steps}")
    if not fractions or not all(0 < f <= 1 for f in fractions):
        ap.error(f"--fractions must be comma-separated numbers in (0, 1], got {args.fractions!r}")
    threads = torch.get_num_threads()
    try:
        root = resolve_data_root(args.root)
        info = dataset_info(args.dataset)
        if not is_prepared(args.dataset, root):
            raise DataError(
                f"dataset {args.dataset} is not prepared under {root}; run: "
                f"python -m convit.data prepare {args.dataset} --root {root}"
            )
        torch.set_num_threads(1)  # one thread: the same sums in the same order on every machine
        data = DataSpec(name=args.dataset, img_size=args.img_size)
        t0 = time.perf_counter()
        train = _load(root / info.folder / "train", data)
        val = _load(root / info.folder / "val", data)
        took = time.perf_counter() - t0
        print(f"decoded {len(train[2])} + {len(val[2])} images in {took:.0f} s", flush=True)
        command = (
            f"python -m analysis.pixel_probe {args.dataset} --img-size {args.img_size} "
            f"--fractions {','.join(f'{f:g}' for f in fractions)}"
            + (f" --steps {args.steps}" if args.steps != STEPS else "")
        )
        rows = []
        for f in fractions:
            t0 = time.perf_counter()
            row = probe(args.dataset, args.img_size, f, train, val, root / info.folder / "train", args.steps)
            rows.append(row | {"command": command})
            print(
                f"{args.dataset} {args.img_size} px f={f:g}: top-1 {row['top1']:.2f} "
                f"(l2 {row['l2']:g}, {row['train_images']} train images, {time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)
    write(rows, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
