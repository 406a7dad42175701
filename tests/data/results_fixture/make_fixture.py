"""Write the synthetic results fixture used by tests/test_analysis.py (plausible, hand-chosen numbers).

Why synthetic: the loader and the report must be tested before any real run exists, and on cases built to
give a known verdict. Nothing here is a result of ours; it lives under tests/ and is never copied to results/.

Layout and intended verdicts:
* sample_efficiency: ``cpu`` (2 seeds, ConViT beats DeiT, gap shrinks with the fraction -> reproduced) and a
  ``smoke`` file that must be ignored because cpu is better (fallback order).
* ablations: ``smoke`` only; at the small fraction b beats a, so "a > b > d > e" -> not reproduced.
* locality: ``reduced``; sigma(lambda) collapses in the later GPSA layers, early layers keep a positional
  head, ConViT ends less nonlocal than DeiT -> reproduced.
* masking, psa, cifar100, distillation, main_table: absent -> not yet run.

Run ``python tests/data/results_fixture/make_fixture.py`` to regenerate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
BASE = [
    "suite",
    "scale",
    "run",
    "model",
    "variant",
    "dataset",
    "fraction",
    "num_classes",
    "img_size",
    "seed",
    "epochs",
    "top1",
    "top5",
    "loss",
    "params",
    "wall_time_s",
    "world_size",
]


def _row(
    suite: str,
    scale: str,
    run: str,
    model: str,
    variant: str,
    fraction: float,
    seed: int,
    top1: float,
    **tags: object,
) -> dict:
    dataset = {"cpu": "cifar10", "smoke": "cifar10-fixture", "reduced": "tiny-imagenet-200"}[scale]
    size = {"cpu": 32, "smoke": 32, "reduced": 64}[scale]
    return {
        "suite": suite,
        "scale": scale,
        "run": run,
        "model": model,
        "variant": variant,
        "dataset": dataset,
        "fraction": fraction,
        "num_classes": 10 if scale != "reduced" else 200,
        "img_size": size,
        "seed": seed,
        "epochs": round(30 / fraction),
        "top1": top1,
        "top5": min(99.9, top1 + 25),
        "loss": round(3 - top1 / 40, 3),
        "params": 1_000_000,
        "wall_time_s": 120.0,
        "world_size": 1,
        **tags,
    }


def sample_efficiency() -> None:
    rows = []
    means = {0.1: (50.0, 40.0), 0.5: (70.0, 65.0), 1.0: (80.0, 78.5)}
    for f, (conv, deit) in means.items():
        for seed in (0, 1):
            jitter = 0.3 if seed else -0.3
            rows.append(
                _row(
                    "sample_efficiency",
                    "cpu",
                    f"se-convit-{f}-s{seed}",
                    "convit_tiny",
                    "convit",
                    f,
                    seed,
                    conv + jitter,
                )
            )
            rows.append(
                _row(
                    "sample_efficiency",
                    "cpu",
                    f"se-deit-{f}-s{seed}",
                    "deit_tiny",
                    "deit",
                    f,
                    seed,
                    deit - jitter,
                )
            )
    df = pd.DataFrame(rows, columns=BASE)
    df.to_csv(HERE / "sample_efficiency" / "cpu.csv", index=False)
    curves = []
    for r in rows:
        for epoch in range(1, 4):
            curves.append(
                {
                    "run": r["run"],
                    "epoch": epoch,
                    "train_loss": 2.5 - 0.3 * epoch,
                    "lr": 1e-3,
                    "val_top1": r["top1"] * epoch / 3,
                    "val_top5": r["top5"] * epoch / 3,
                    "val_loss": 2.4 - 0.3 * epoch,
                }
            )
    pd.DataFrame(curves).to_csv(HERE / "sample_efficiency" / "cpu_curves.csv", index=False)
    smoke = [
        _row("sample_efficiency", "smoke", "se-smoke-convit", "convit_tiny", "convit", 1.0, 0, 11.0),
        _row("sample_efficiency", "smoke", "se-smoke-deit", "deit_tiny", "deit", 1.0, 0, 12.0),
    ]
    pd.DataFrame(smoke, columns=BASE).to_csv(HERE / "sample_efficiency" / "smoke.csv", index=False)


def ablations() -> None:
    small = {"a": 50.0, "b": 52.0, "c": 48.0, "d": 45.0, "e": 40.0, "f": 44.0, "g": 35.0}  # b > a: fails
    full = {"a": 80.0, "b": 79.6, "c": 79.0, "d": 79.2, "e": 77.0, "f": 76.5, "g": 70.0}
    rows = []
    for f, table in ((0.1, small), (1.0, full)):
        for row, acc in table.items():
            rows.append(
                _row("ablations", "smoke", f"abl-{row}-{f}", "convit_small_plus", row, f, 0, acc, row=row)
            )
    pd.DataFrame(rows).to_csv(HERE / "ablations" / "smoke.csv", index=False)


def locality() -> None:
    rows, loc = [], []
    epochs = [0, 5, 10]
    for model, variant, gpsa in (("convit_tiny", "convit", 10), ("deit_tiny", "deit", 0)):
        run = f"loc-{variant}"
        rows.append(
            _row(
                "locality",
                "reduced",
                run,
                model,
                variant,
                1.0,
                0,
                60.0 if gpsa else 55.0,
                gpsa_layers=gpsa,
                locality_strength=1.0,
            )
        )
        for epoch in epochs:
            t = epoch / epochs[-1]
            for layer in range(12):
                for head in range(4):
                    if layer < gpsa:
                        late = layer >= gpsa // 2
                        sigma = 0.731 * (1 - t) + t * (0.02 if late else (0.8 if head == 0 else 0.1))
                        nonloc = 2.5 + t * (1.0 + 0.1 * layer)  # grows, ends ~3.5-4.4
                        dist = 1.0 + t
                    else:
                        sigma = dist = np.nan
                        nonloc = 7.28 - t * 1.5 if not gpsa else 5.0 + t
                    loc.append(
                        {
                            "run": run,
                            "epoch": epoch,
                            "layer": layer,
                            "head": head,
                            "nonlocality": round(nonloc, 4),
                            "gate_sigma": sigma,
                            "centre_distance": dist,
                        }
                    )
    pd.DataFrame(rows).to_csv(HERE / "locality" / "reduced.csv", index=False)
    pd.DataFrame(loc).to_csv(HERE / "locality" / "reduced_locality.csv", index=False)


if __name__ == "__main__":
    for sub in ("sample_efficiency", "ablations", "locality"):
        (HERE / sub).mkdir(exist_ok=True)
    sample_efficiency()
    ablations()
    locality()
