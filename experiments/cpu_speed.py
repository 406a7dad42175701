"""Is ``torch.compile`` worth it for the cpu scale's models? A paired measurement of one training step.

Command (pause other work on the machine first: the numbers are per-thread throughput)::

    OMP_NUM_THREADS=1 python experiments/cpu_speed.py --rounds 8 --iters 5 \
        [--csv results/cpu_budget/compile.csv]

What it measures: the exact models of ``sample_efficiency --scale cpu`` (ConViT-Ti and DeiT-Ti at depth 6,
96 wide, patch 4, 32 px, built from the suite's own specs), one optimiser step each (forward, label-smoothed
loss, backward, AdamW step) at the scale's batch (64) on one thread, as each of the two side-by-side runs of
``--parallel 2`` gets. Eager and ``torch.compile`` (inductor) versions of each model are timed in interleaved
rounds, so machine noise hits both alike; the verdict is the median of the per-round ratios with its range.
Compilation happens in the untimed warm-up and its wall time is printed separately: a run of ~7.8k steps
amortises it only if the per-step gain times 7.8k exceeds it.

``--tensorboard`` instead measures what the engine's TensorBoard logging (``convit.tboard``) adds per
optimiser step: the engine calls ``Board.steps`` once per ``SYNC_EVERY`` steps with that many (step, loss,
lr) triples and ``Board.epoch`` once per epoch (with ConViT-Ti's probes), so the cost per step is timed on
exactly those calls, writing to a temporary folder, and printed beside the eager training step it rides on.

Why it exists: issue 20 asks whether the engine should compile these small models on CPU. The answer is
this script's output, recorded in ``results/cpu_budget/compile.csv`` and in the cpu scale's docstring.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convit import models  # noqa: E402
from experiments import sample_efficiency  # noqa: E402


def _specs() -> dict[str, object]:
    """One f = 1 spec per family from the suite itself (so the geometry cannot drift from the real runs)."""
    out = {}
    for spec in sample_efficiency.specs("cpu"):
        if spec.data.fraction == 1.0 and spec.seed == 0:
            out[spec.model.name] = spec
    return out


class _Step:
    def __init__(self, spec: object, compiled: bool, batch: int) -> None:
        torch.manual_seed(0)
        self.eager = models.create(
            spec.model.name,
            num_classes=10,
            img_size=spec.data.img_size,
            drop_path_rate=spec.recipe.drop_path,
            **spec.model.kwargs,
        )
        self.model = torch.compile(self.eager) if compiled else self.eager
        self.opt = torch.optim.AdamW(self.eager.parameters(), lr=1e-4, weight_decay=0.05)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, spec.data.img_size, spec.data.img_size, generator=gen)
        self.y = torch.randint(0, 10, (batch,), generator=gen)

    def __call__(self) -> None:
        self.model.train()
        loss = F.cross_entropy(self.model(self.x), self.y, label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--tensorboard", action="store_true", help="time the TensorBoard logging per step")
    args = parser.parse_args(argv)
    if args.tensorboard:
        return _tensorboard_cost(args)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}")
    rows = []
    for name, spec in _specs().items():
        steps = {}
        for compiled in (False, True):
            t0 = time.perf_counter()
            step = _Step(spec, compiled, args.batch)
            for _ in range(args.warmup):
                step()
            warm = time.perf_counter() - t0
            steps[compiled] = step
            kind = "compiled" if compiled else "eager"
            print(f"{name} {kind}: build + {args.warmup} warm-up steps {warm:.1f} s")
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for compiled, step in steps.items():
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    step()
                times[compiled].append((time.perf_counter() - t0) / args.iters)
        ratios = sorted(e / c for e, c in zip(times[False], times[True], strict=True))
        row = {
            "model": name,
            "eager_ms": round(1e3 * statistics.median(times[False]), 1),
            "compiled_ms": round(1e3 * statistics.median(times[True]), 1),
            "speedup_median": round(statistics.median(ratios), 3),
            "speedup_min": round(ratios[0], 3),
            "speedup_max": round(ratios[-1], 3),
            "eager_img_s": round(args.batch / statistics.median(times[False]), 1),
            "threads": torch.get_num_threads(),
            "batch": args.batch,
            "torch": torch.__version__,
        }
        rows.append(row)
        print(
            f"{name}: eager {row['eager_ms']} ms/step ({row['eager_img_s']} img/s), "
            f"compiled {row['compiled_ms']} ms; speed-up {row['speedup_median']} "
            f"[{row['speedup_min']}-{row['speedup_max']}] over {args.rounds} rounds"
        )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")
    return 0


def _tensorboard_cost(args: argparse.Namespace) -> int:
    """Per-step cost of the engine's TensorBoard calls, against one eager ConViT-Ti step (same process)."""
    import tempfile

    from convit import tboard
    from convit.train import SYNC_EVERY

    spec = _specs()["convit_tiny"]
    step = _Step(spec, False, args.batch)
    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.iters):
        step()
    step_s = (time.perf_counter() - t0) / args.iters
    depth, gpsa, heads = spec.model.kwargs["depth"], len(step.eager.local_layers()), step.eager.num_heads
    entry = {
        "epoch": 1, "step": 781, "train_loss": 2.0, "lr": 1e-3, "val_top1": 40.0, "val_top5": 80.0,
        "val_loss": 1.5, "images_per_s": 80.0, "data_wait_s": 1.0, "train_time_s": 600.0,
        "gate_sigma": [[0.7] * heads] * gpsa, "nonlocality": [[3.0] * heads] * depth,
        "centre_distance": [[1.0] * heads] * gpsa,
    }  # fmt: skip
    steps_per_epoch, epochs = 781, 3
    with tempfile.TemporaryDirectory() as tmp:
        board = tboard.Board(tmp)
        t0 = time.perf_counter()
        global_step = 0
        for _ in range(epochs):
            for _ in range(0, steps_per_epoch, SYNC_EVERY):
                records = [(global_step + i + 1, 2.0, 1e-3) for i in range(SYNC_EVERY)]
                board.steps(records)
                global_step += SYNC_EVERY
            board.epoch({**entry, "step": global_step})
            board.flush()
        board.close()
        log_s = (time.perf_counter() - t0) / global_step
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    print(
        f"TensorBoard logging: {1e6 * log_s:.1f} us per optimiser step (incl. per-epoch flush) against an "
        f"eager ConViT-Ti step of {1e3 * step_s:.0f} ms: {100 * log_s / step_s:.4f}% overhead; "
        f"event file {size / global_step:.0f} bytes per step"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
