"""The one evaluation path: the engine's per-epoch validation and ``experiments/evaluate.py`` both call it.

Two callers that computed top-1 differently (fp32 here, the spec's autocast there; another batch size) gave
the same checkpoint two numbers. Now both build their loader with :func:`make_loader`, their batch with
:func:`eval_batch_size`, their autocast from :func:`convit.cudaconf.amp_choice` through :func:`autocast`, and
count with :func:`evaluate`: on CPU an eval-only job reproduces the engine's last ``val_top1``/``val_loss``
bit for bit.

The validation set is sharded ``rank::world_size`` and the counts are summed across ranks, so every image is
counted exactly once whatever the world size (no padding duplicates, DeiT issue #24). The loader keeps its
worker processes between evaluations (``persistent_workers``): the engine builds it once per run instead of
forking ``workers`` processes at every evaluation.

Between epochs the engine also runs the locality probes (:mod:`convit.probes`) on one fixed validation batch
(:func:`probe_batch`, :func:`run_probes`): they are measured on the validation set like the accuracy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset

from convit import distributed
from convit.distributed import DistContext
from convit.sampling import PROBE_DOMAIN, mix
from convit.spec import RunSpec

__all__ = ["autocast", "eval_batch_size", "evaluate", "make_loader", "probe_batch", "run_probes"]


def eval_batch_size(per_device_batch: int) -> int:
    """1.5 x the per-device training batch (no activations are kept for a backward pass)."""
    return max(1, int(1.5 * per_device_batch))


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for ``dtype`` on ``device`` (``None``: float32, no autocast)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_loader(val_ds: Dataset, ctx: DistContext, batch_size: int, workers: int) -> DataLoader:
    """This rank's shard (``rank::world_size``) in order; workers persist across evaluations."""
    shard = Subset(val_ds, list(range(ctx.rank, len(val_ds), ctx.world_size)))  # type: ignore[arg-type]
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=ctx.device.type == "cuda",
        persistent_workers=workers > 0,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    ctx: DistContext,
    autocast_context: Callable[[], contextlib.AbstractContextManager[Any]],
) -> dict[str, float]:
    """Top-1/top-5 (percent), mean cross-entropy and image count over every rank's shard.

    The sums stay on the device until the single all-reduce and read at the end (no host sync per batch).
    """
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=ctx.device)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    for images, targets in loader:
        images = images.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True)
        with autocast_context():
            logits = model(images)
        logits = logits.float()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(targets[:, None])
        sums[0] += criterion(logits, targets).double()
        sums[1] += hit[:, :1].sum()
        sums[2] += hit.any(dim=1).sum()
        sums[3] += targets.numel()
    distributed.all_reduce(sums, ctx)
    loss, c1, c5, n = sums.tolist()
    return {
        "top1": 100.0 * c1 / max(n, 1.0),
        "top5": 100.0 * c5 / max(n, 1.0),
        "loss": loss / max(n, 1.0),
        "count": n,
    }


# the engine's between-epoch locality probes
def probe_batch(val_ds: Dataset, spec: RunSpec) -> torch.Tensor:
    """A fixed probe batch: the first images of a seeded shuffle of the val set (not just class 0)."""
    g = torch.Generator().manual_seed(mix(PROBE_DOMAIN, spec.seed))
    order = torch.randperm(len(val_ds), generator=g)[: spec.probes.batch].tolist()  # type: ignore[arg-type]
    return torch.stack([val_ds[i][0] for i in order])


def run_probes(
    model: nn.Module, images: torch.Tensor, mode: str, warn: Callable[[str], None]
) -> dict[str, Any] | None:
    """Locality probes, guarded: a model the probes do not understand costs a warning, not the run."""
    try:
        from convit.probes import locality_probes

        was_training = model.training
        model.eval()
        with torch.no_grad():
            out = locality_probes(model, images, mode)
        model.train(was_training)
        return {
            key: [[float(v) for v in row] for row in out.get(key, [])]
            for key in ("nonlocality", "gate_sigma", "centre_distance")
        }
    except Exception as exc:  # noqa: BLE001 - probes are diagnostics; training must go on
        warn(f"locality probes failed ({type(exc).__name__}: {exc}); continuing without them")
        return None
