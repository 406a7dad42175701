"""Which samples each rank trains on, in which order, with which seed: the epoch plan of a run.

- :class:`Plan` is the batch arithmetic (global batch = world x per-device batch x accumulation), the single
  source of steps per epoch and warm-up steps.
- Repeated augmentation uses timm's ``RepeatAugSampler`` (3 repeats, epochs of floor(N / ra_round) * ra_round
  samples) and calls ``set_epoch`` every epoch, also in single-process runs (the original code did not, so a
  plain ``python main.py`` run saw the same third of the data every epoch; reference 8.2 item 2). The sampler
  key is ``epoch + 1_000_003 * seed``: seed 0 gives the original data order, other seeds a different one (the
  original order ignored the seed, which would make multi-seed error bars miss data-order noise).
- Every random draw is a function of (seed, rank, epoch, step) or (seed, epoch, sample position) through
  :func:`mix`: per-sample augmentation is seeded inside :class:`SeededSamples` from the sample's *global*
  position in the epoch (so neither DataLoader workers nor the world size change it). A mid-epoch resume
  slices the epoch's index list (:func:`epoch_batches`) instead of loading skipped batches.
"""

from __future__ import annotations

import hashlib
import math
import random
import struct
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from convit.distributed import DistContext
from convit.spec import RunSpec
from convit.train_errors import TrainError

__all__ = [
    "PROBE_DOMAIN",
    "RA_REPEATS",
    "SAMPLE_DOMAIN",
    "STEP_DOMAIN",
    "BatchList",
    "Plan",
    "SeededSamples",
    "epoch_batches",
    "make_sampler",
    "mix",
    "seed_everything",
]

#: Repeats per image in repeated augmentation (DeiT/ConViT RASampler).
RA_REPEATS = 3


def mix(*parts: int) -> int:
    """A 63-bit seed from integers: stable across processes and Python runs (unlike ``hash``)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def seed_everything(seed: int) -> None:
    """Seed torch, ``random`` and numpy of this process (augmentation draws from all three)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


#: first argument of :func:`mix`, so the three uses never share a seed: per-sample augmentation,
#: per-micro-batch draws (mixup, drop path), the probe batch
SAMPLE_DOMAIN = 1
STEP_DOMAIN = 2
PROBE_DOMAIN = 3


class SeededSamples(Dataset):
    """Wraps a dataset so ``ds[(index, seed)]`` draws that sample's augmentation from ``seed``.

    The seed travels with the index from the main process, so the augmentation of a sample depends only on
    (run seed, epoch, position in the epoch), never on which worker process loads it or in what order.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        seed_everything(seed)
        return self.base[index]


class BatchList:
    """A batch sampler whose batches are replaced each epoch (works with persistent DataLoader workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class Plan:
    """Derived batch arithmetic: printed at start, and the single source of steps/epoch and warm-up."""

    def __init__(self, spec: RunSpec, ctx: DistContext, n_train: int, say: Callable[[str], Any]):
        recipe, res = spec.recipe, spec.resources
        self.world = ctx.world_size
        self.global_batch = recipe.batch_size
        if res.per_device_batch is None:
            if self.global_batch % self.world:
                raise TrainError(
                    f"global batch {self.global_batch} is not divisible by world size {self.world}; "
                    "set resources.per_device_batch"
                )
            self.per_device = self.global_batch // self.world
        else:
            self.per_device = res.per_device_batch
        denom = self.per_device * self.world
        if self.global_batch % denom:
            raise TrainError(
                f"global batch {self.global_batch} is not a multiple of per-device batch {self.per_device} x "
                f"world size {self.world}: gradient accumulation must be integral"
            )
        self.accum = self.global_batch // denom
        self.peak_lr = recipe.peak_lr()
        self.n_train = n_train
        self.ra_round = recipe.ra_round
        if recipe.repeated_aug and n_train < recipe.ra_round:
            say(
                f"note: {n_train} training images < ra_round {recipe.ra_round}: repeated-augmentation epochs "
                f"are rounded to the global batch ({self.global_batch}) instead"
            )
            self.ra_round = self.global_batch
        if recipe.repeated_aug:
            usable = n_train // self.ra_round * self.ra_round
            per_rank = usable // self.world
        else:
            per_rank = math.ceil(n_train / self.world)
        self.samples_per_rank = per_rank
        self.steps_per_epoch = per_rank // (self.per_device * self.accum)
        if self.steps_per_epoch < 1:
            raise TrainError(
                f"{n_train} training images give no full optimiser step at global batch {self.global_batch}"
            )
        self.total_steps = recipe.epochs * self.steps_per_epoch
        self.warmup_steps = int(round(recipe.warmup_epochs * self.steps_per_epoch))

    def describe(self) -> str:
        """The plan as the one line a run prints at start."""
        return (
            f"global batch {self.global_batch} = {self.world} device(s) x per-device batch "
            f"{self.per_device} x "
            f"{self.accum} accumulation step(s); peak lr {self.peak_lr:.3g}; {self.n_train} train images; "
            f"{self.steps_per_epoch} steps/epoch; {self.total_steps} total steps; "
            f"{self.warmup_steps} warm-up steps"
        )


def make_sampler(spec: RunSpec, plan: Plan, ctx: DistContext, train_ds: Dataset) -> Any:
    """timm's ``RepeatAugSampler`` (repeated augmentation) or torch's ``DistributedSampler``, this rank's."""
    if spec.recipe.repeated_aug:
        from timm.data.distributed_sampler import RepeatAugSampler

        return RepeatAugSampler(
            train_ds,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            num_repeats=RA_REPEATS,
            selected_round=plan.ra_round,
        )
    return DistributedSampler(
        train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=spec.seed, drop_last=False
    )


def epoch_batches(
    spec: RunSpec, plan: Plan, ctx: DistContext, sampler: Any, epoch: int, start_step: int
) -> list[list[tuple[int, int]]]:
    """This rank's micro-batches of ``epoch`` from optimiser step ``start_step`` on, as (index, seed) keys.

    Samplers give rank r the positions r, r + W, r + 2W ... of one global order, so position j on rank r is
    global position j * W + r; seeding by that makes a sample's augmentation independent of the world size.
    """
    if spec.recipe.repeated_aug:
        sampler.set_epoch(epoch + 1_000_003 * spec.seed)
    else:
        sampler.set_epoch(epoch)
    indices = list(sampler)
    micro = plan.per_device
    first = start_step * plan.accum
    last = plan.steps_per_epoch * plan.accum
    batches = []
    for m in range(first, last):
        batch = []
        for j in range(m * micro, (m + 1) * micro):
            position = j * ctx.world_size + ctx.rank
            batch.append((indices[j], mix(SAMPLE_DOMAIN, spec.seed, epoch, position)))
        batches.append(batch)
    return batches
