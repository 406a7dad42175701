"""The training engine: ``run(spec, workdir)`` trains any :class:`~convit.spec.RunSpec` and never loses work.

One pure entry point serves the CLI (``python -m convit.train SPEC.json WORKDIR``), the submitit jobs and the
tests. The recipe is the DeiT recipe used by ConViT (reference section 6), built from timm's components.

Faithful-vs-original choices (each selectable where a paper number could depend on it):
- ``recipe.lr_schedule="step"`` (default): cosine with warm-up evaluated at every optimiser step, as the paper
  describes. ``"epoch_lagged"`` reproduces the original code: the lr is set once per epoch *after* the
  epoch, so epochs 0 and 1 both run at ``warmup_lr`` and epoch e >= 1 runs at lr(e - 1). Both use timm's
  ``CosineLRScheduler`` without warm-up prefix (timm 0.3.2 behaviour: the cosine is not shifted by warm-up).
- ``recipe.decay_pos_embed=False`` (default): ``pos_embed``/``cls_token`` (``model.no_weight_decay()``), every
  1-D parameter and every bias get no weight decay. ``True`` reproduces the original DDP runs, where the
  optimiser was built from the DDP wrapper and only 1-D parameters/biases were exempt (reference 8.2 item 5).
- Repeated augmentation uses timm's ``RepeatAugSampler`` (3 repeats, epochs of floor(N / ra_round) * ra_round
  samples) and calls ``set_epoch`` every epoch, also in single-process runs (the original code did not, so a
  plain ``python main.py`` run saw the same third of the data every epoch; reference 8.2 item 2). The sampler
  key is ``epoch + 1_000_003 * seed``: seed 0 gives the original data order, other seeds a different one (the
  original order ignored the seed, which would make multi-seed error bars miss data-order noise).
- Evaluation shards the validation set ``rank::world_size`` and sums counts across ranks, so every image is
  counted exactly once whatever the world size (no padding duplicates, DeiT issue #24).
- EMA (timm ``ModelEmaV3``, constant decay like DeiT's ``ModelEma``) is off by default, as in ConViT.
- Hard distillation (Table 4; the official ConViT code has none, the paper used DeiT's): a spec tagged
  ``distillation="hard"`` trains the plain student (no distillation token) on
  ``0.5 * criterion(student, targets) + 0.5 * cross_entropy(student, teacher.argmax(-1))``
  (:func:`hard_distillation_loss`). The teacher is timm's ``tags["teacher_model"]`` with the dataset's class
  count, loaded from the file passed as ``run(..., teacher=PATH)``: a runtime input like ``data_root``, not
  part of the spec, so moving the file changes no digest. It is frozen (eval mode, no gradients), runs under
  the student's autocast on the student's augmented (mixed) batch, is never saved into the student's
  checkpoint and is reloaded from the file on resume. Undistilled runs take exactly the code path they took
  before distillation existed.

Determinism: every random draw is a function of (seed, rank, epoch, step) or (seed, epoch, sample position):
per-sample augmentation is seeded inside a dataset wrapper from the sample's *global* position in the epoch
(so neither DataLoader workers nor the world size change it), and the main process reseeds torch/numpy/random
before each micro-batch's mixup/drop-path. Resuming from any checkpoint therefore reproduces the uninterrupted
run bit for bit on CPU; a mid-epoch resume slices the epoch's index list instead of loading skipped batches.
On a GPU that needs ``resources.deterministic`` (:mod:`convit.cudaconf`, which also sets TF32, cuDNN
autotuning and the autocast dtype, bf16 falling back to fp16 on GPUs without it, and records them in
``env.json``).

GPU path: the step loop reads nothing from the device per step; each step's loss stays there and a batch of
them is read every :data:`SYNC_EVERY` steps (one host sync, see there). Evaluation is
:mod:`convit.evaluation`, shared with eval-only jobs, on a loader built once per run. DDP re-broadcasts
buffers before each forward only when the model has persistent ones (:func:`_buffers_need_sync`).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from convit import checkpoint as ckpt
from convit import cudaconf, distributed, evaluation, runlock, tboard
from convit.distributed import DistContext
from convit.progress import EpochProgress
from convit.spec import RunSpec, SpecError

__all__ = [
    "SUPPORTS_DISTILLATION",
    "NonFiniteLoss",
    "Preempted",
    "RunInUse",
    "SpecMismatch",
    "TIMING_KEYS",
    "TrainError",
    "build_optimizer",
    "build_scheduler",
    "hard_distillation_loss",
    "main",
    "run",
    "weight_decay_names",
]

#: Repeats per image in repeated augmentation (DeiT/ConViT RASampler).
RA_REPEATS = 3
CHECKPOINT_FORMAT = 1
#: The engine trains ``tags["distillation"] == "hard"`` specs (the launcher checks this before submitting).
SUPPORTS_DISTILLATION = True
#: Optimiser steps between host reads of the training loss. Reading a CUDA value stalls the host until the GPU
#: has caught up, which empties the queue of launched work; the loop instead keeps each step's loss on the
#: device and reads a batch of them (one sync) every this many steps, at the end of an epoch, and before any
#: save. A NaN/inf loss is still found (and named by its step) before a checkpoint could hold it; a single
#: process acts on a stop request at the step it arrives; a distributed run agrees on it at the next read,
#: i.e. within this many steps (the cluster profile's signal_delay_s must cover them plus a save).
SYNC_EVERY = 16


class TrainError(RuntimeError):
    """A run cannot proceed for a reason the user can fix (bad batch arithmetic, wrong workdir ...)."""


class SpecMismatch(TrainError):
    """The workdir belongs to a different spec: relaunching there would silently mix two experiments."""

    def __init__(self, workdir: Path, keys: Sequence[str]):
        self.workdir = workdir
        self.keys = list(keys)
        shown = ", ".join(self.keys[:10]) + (" ..." if len(self.keys) > 10 else "")
        super().__init__(
            f"{workdir} holds a run with a different spec (differing keys: {shown}); "
            "use a new workdir for a new spec"
        )


class RunInUse(TrainError):
    """Another process is training in this run directory (a duplicate launch); see :mod:`convit.runlock`."""


class NonFiniteLoss(TrainError):
    """The training loss became NaN/inf; the last good checkpoint is left untouched."""

    def __init__(self, epoch: int, step: int, global_step: int):
        self.epoch, self.step, self.global_step = epoch, step, global_step
        super().__init__(
            f"non-finite training loss at epoch {epoch} (0-based), step {step} of the epoch "
            f"(global step {global_step}); the last good checkpoint is kept"
        )


class Preempted(Exception):  # noqa: N818 - a signal to the job wrapper, not an error
    """``should_stop()`` turned true: a mid-epoch checkpoint was saved; relaunch to resume."""

    def __init__(self, epoch: int, step: int, path: Path):
        self.epoch, self.step, self.path = epoch, step, path
        super().__init__(f"preempted at epoch {epoch} step {step}; checkpoint saved to {path}")


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------
def _mix(*parts: int) -> int:
    """A 63-bit seed from integers: stable across processes and Python runs (unlike ``hash``)."""
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}q", *parts), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (1 << 32))


_SAMPLE_DOMAIN = 1
_STEP_DOMAIN = 2
_PROBE_DOMAIN = 3

#: metrics.jsonl / result.json fields that measure the machine, not the run: they differ between a resumed run
#: and an uninterrupted one (and between two identical runs); every other field is reproducible bit for bit.
TIMING_KEYS = frozenset({"images_per_s", "train_time_s", "data_wait_s", "epoch_time_s", "wall_time_s"})


def _sha256(path: Path) -> str:
    """The file's SHA-256, recorded in env.json: a teacher file name alone does not say which weights."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if not data and prefix:
            out[prefix] = {}
        return out
    return {prefix: data}


def _spec_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


class _Printer:
    """Rank-0 console output: info to stdout, warnings to stderr (other ranks stay quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        if self.enabled:
            print(f"warning: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# recipe components (public so tests and analysis can check the wiring)
# --------------------------------------------------------------------------------------------------
def _no_wd_list(model: nn.Module, decay_pos_embed: bool) -> list[str]:
    if decay_pos_embed:
        # The original DDP runs built the optimiser from the DDP wrapper, which has no no_weight_decay():
        # only the 1-D/bias rule applied, so pos_embed and cls_token were decayed.
        return []
    fn = getattr(model, "no_weight_decay", None)
    return sorted(fn()) if callable(fn) else []


def weight_decay_names(model: nn.Module, decay_pos_embed: bool = False) -> tuple[list[str], list[str]]:
    """``(decayed, not_decayed)`` parameter names, by the same rule :func:`build_optimizer` uses."""
    from timm.optim._param_groups import _matches_pattern

    skip = _no_wd_list(model, decay_pos_embed)
    decayed, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or _matches_pattern(name, skip):
            plain.append(name)
        else:
            decayed.append(name)
    return decayed, plain


def build_optimizer(model: nn.Module, recipe: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW with timm's no-weight-decay groups (1-D, biases, ``no_weight_decay()`` unless decay_pos_embed).

    The groups are built from the bare model (never a DDP wrapper), so the rule is the same on 1 or N devices.
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    groups = param_groups_weight_decay(
        model, recipe.weight_decay, no_weight_decay_list=_no_wd_list(model, recipe.decay_pos_embed)
    )
    return create_optimizer_v2(
        groups, opt="adamw", lr=lr, weight_decay=recipe.weight_decay, eps=recipe.opt_eps
    )


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Any, steps_per_epoch: int) -> Any:
    """timm ``CosineLRScheduler`` in optimiser steps (``"step"``) or in epochs (``"epoch_lagged"``)."""
    from timm.scheduler import CosineLRScheduler

    if recipe.lr_schedule == "step":
        t_initial = recipe.epochs * steps_per_epoch
        warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
        t_in_epochs = False
    else:
        t_initial = recipe.epochs
        warmup = recipe.warmup_epochs
        t_in_epochs = True
    return CosineLRScheduler(
        optimizer,
        t_initial=t_initial,
        lr_min=recipe.min_lr,
        warmup_t=warmup,
        warmup_lr_init=recipe.warmup_lr,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=t_in_epochs,
    )


def _set_lr(scheduler: Any, recipe: Any, epoch: int, global_step: int) -> None:
    """Put the lr for (epoch, global_step) into the optimiser; timm's scheduler is stateless in t."""
    if recipe.lr_schedule == "step":
        scheduler.step_update(global_step)
    elif epoch == 0:
        # The scheduler's constructor value: warmup_lr with warm-up, else the peak.
        scheduler.update_groups(recipe.warmup_lr if scheduler.warmup_t else scheduler.base_values)
    else:
        scheduler.step(epoch - 1)  # the original one-epoch lag


def hard_distillation_loss(
    base_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
) -> torch.Tensor:
    """DeiT's hard distillation: half the run's usual loss, half cross-entropy on the teacher's argmax.

    ``base_criterion`` is the engine's criterion unchanged (soft-target CE on mixup/cutmix targets with label
    smoothing, or plain / smoothed CE), so distillation adds a term without altering the recipe's own loss.
    The teacher term takes the teacher's decision on the same (mixed) image as one hard label with no
    smoothing: that is what makes it *hard* distillation, and why a teacher can supply a label where mixup
    made the ground truth ambiguous.
    """
    teacher_labels = teacher_logits.argmax(dim=-1)
    distill = nn.functional.cross_entropy(student_logits, teacher_labels)
    return 0.5 * base_criterion(student_logits, targets) + 0.5 * distill


# --------------------------------------------------------------------------------------------------
# data plumbing
# --------------------------------------------------------------------------------------------------
class _SeededSamples(Dataset):
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
        _seed_everything(seed)
        return self.base[index]


class _StepRecord(NamedTuple):
    """One optimiser step whose loss (a device scalar: sum over micro-batches) has not been read yet."""

    step: int  # in the epoch, 0-based
    global_step: int  # after the step
    loss: torch.Tensor
    lr: float
    data_wait: float  # the epoch's loader wait so far, for the progress line


class _BatchList:
    """A batch sampler whose batches are replaced each epoch (works with persistent DataLoader workers)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Plan:
    """Derived batch arithmetic: printed at start, and the single source of steps/epoch and warm-up."""

    def __init__(self, spec: RunSpec, ctx: DistContext, n_train: int, say: _Printer):
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
        return (
            f"global batch {self.global_batch} = {self.world} device(s) x per-device batch "
            f"{self.per_device} x "
            f"{self.accum} accumulation step(s); peak lr {self.peak_lr:.3g}; {self.n_train} train images; "
            f"{self.steps_per_epoch} steps/epoch; {self.total_steps} total steps; "
            f"{self.warmup_steps} warm-up steps"
        )


def _make_sampler(spec: RunSpec, plan: _Plan, ctx: DistContext, train_ds: Dataset) -> Any:
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


def _epoch_batches(
    spec: RunSpec, plan: _Plan, ctx: DistContext, sampler: Any, epoch: int, start_step: int
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
            batch.append((indices[j], _mix(_SAMPLE_DOMAIN, spec.seed, epoch, position)))
        batches.append(batch)
    return batches


# --------------------------------------------------------------------------------------------------
# evaluation and probes
# --------------------------------------------------------------------------------------------------
def _evaluate(
    model: nn.Module,
    val_ds: Dataset,
    ctx: DistContext,
    batch_size: int,
    workers: int,
    autocast: Callable[[], Any],
) -> dict[str, float]:
    """One-off :func:`convit.evaluation.evaluate` of ``val_ds`` (the engine keeps its loader for the run)."""
    return evaluation.evaluate(model, evaluation.make_loader(val_ds, ctx, batch_size, workers), ctx, autocast)


def _probe_batch(val_ds: Dataset, spec: RunSpec) -> torch.Tensor:
    """A fixed probe batch: the first images of a seeded shuffle of the val set (not just class 0)."""
    g = torch.Generator().manual_seed(_mix(_PROBE_DOMAIN, spec.seed))
    order = torch.randperm(len(val_ds), generator=g)[: spec.probes.batch].tolist()  # type: ignore[arg-type]
    return torch.stack([val_ds[i][0] for i in order])


def _run_probes(model: nn.Module, images: torch.Tensor, mode: str, say: _Printer) -> dict[str, Any] | None:
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
        say.warn(f"locality probes failed ({type(exc).__name__}: {exc}); continuing without them")
        return None


# --------------------------------------------------------------------------------------------------
# run directory
# --------------------------------------------------------------------------------------------------
def _git_info() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {}


def _hostnames(ctx: DistContext) -> list[str]:
    """Every rank's hostname in rank order, for env.json: which machines a multi-node run really used.

    A collective (all ranks must call it); rank 0's own ``hostname`` alone cannot show that a 2-node job
    was not packed onto one node.
    """
    name = platform.node()
    if not ctx.distributed:
        return [name]
    names: list[Any] = [None] * ctx.world_size
    torch.distributed.all_gather_object(names, name)
    return [str(n) for n in names]


def _env_info(ctx: DistContext) -> dict[str, Any]:
    import timm
    import torchvision

    if ctx.device.type == "cuda":
        device_name = torch.cuda.get_device_name(ctx.device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "hostname": platform.node(),
        # SLURM provenance (None outside SLURM): which job/array task wrote this run, for sacct look-ups.
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_array": os.environ.get("SLURM_ARRAY_JOB_ID"),
        "world_size": ctx.world_size,
        "device": device_name,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **_git_info(),
    }


def _check_workdir(spec: RunSpec, workdir: Path) -> dict[str, Any] | None:
    """Refuse a workdir of another spec; return the stored result of a finished run of this spec."""
    spec_path = workdir / "spec.json"
    if spec_path.exists():
        try:
            stored = json.loads(spec_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"{spec_path} is unreadable ({exc}); remove it or use another workdir") from exc
        diff = _spec_diff(stored, spec.to_dict())
        if diff:
            raise SpecMismatch(workdir, diff)
        result_path = workdir / "result.json"
        if result_path.exists():
            try:
                return json.loads(result_path.read_text())
            except (OSError, json.JSONDecodeError):
                return None  # rewritten from the final checkpoint
    elif (workdir / ckpt.CHECKPOINT).exists() or (workdir / "result.json").exists():
        raise TrainError(
            f"{workdir} has run files but no spec.json; refusing to guess which run it belongs to"
        )
    return None


def _check_distillation(spec: RunSpec, teacher: str | Path | None) -> Path | None:
    """The teacher file a distilled spec needs (None for an undistilled one), checked before any work.

    A missing file is a user mistake found in milliseconds here, instead of after the datasets are built.
    """
    kind = spec.tags.get("distillation")
    if not kind:
        if teacher is not None:
            raise TrainError(
                f"a teacher ({teacher}) was given but the spec asks for no distillation "
                "(tags.distillation is unset): drop the teacher or use a distilled spec"
            )
        return None
    if kind != "hard":
        raise TrainError(f"tags.distillation={kind!r} is not supported; the engine does 'hard' distillation")
    model = spec.tags.get("teacher_model")
    if not model:
        raise TrainError("a distilled spec needs tags.teacher_model (the teacher's timm architecture name)")
    wanted = str(spec.tags.get("teacher", "a teacher checkpoint")).removeprefix("file:")
    if teacher is None:
        raise TrainError(
            f"the spec distils from {wanted} ({model}) but no teacher file was given: pass its path "
            "(run(..., teacher=PATH), python -m convit.train ... --teacher PATH, "
            "or launch.py --checkpoints DIR)"
        )
    path = Path(teacher)
    if not path.is_file():
        raise TrainError(
            f"distillation teacher {path} not found: put the {model} checkpoint ({wanted}) there "
            "or give the right path (launch.py: --checkpoints DIR)"
        )
    return path


# --------------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------------
def run(
    spec: RunSpec,
    workdir: str | Path,
    *,
    data_root: str | Path | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | None = None,
    teacher: str | Path | None = None,
    progress_every_s: float = 60.0,
    lock_wait_s: float = 180.0,
) -> dict[str, Any]:
    """Train ``spec`` in ``workdir`` (resuming whatever is there) and return the ``result.json`` content.

    ``teacher`` is the checkpoint file of the distillation teacher, required by (and only allowed for) specs
    tagged ``distillation="hard"``; like ``data_root`` it is a machine fact, not part of the run's identity.
    ``progress_every_s``: seconds between in-epoch progress reports (a log line when stdout is not a
    terminal, and ``progress.json``; see :mod:`convit.progress`). Only one process trains in a ``workdir``
    at a time: another one waits up to ``lock_wait_s`` seconds for it, then raises :class:`RunInUse`.

    Raises :class:`Preempted` after saving a checkpoint when ``should_stop()`` turns true,
    :class:`NonFiniteLoss` on a NaN/inf loss, :class:`SpecMismatch` when ``workdir`` belongs to another spec.
    """
    if not isinstance(spec, RunSpec):
        raise TypeError(f"spec must be a RunSpec, got {type(spec).__name__}")
    workdir = Path(workdir)
    done = _check_workdir(spec, workdir)
    if done is not None:
        return done
    teacher_path = _check_distillation(spec, teacher)
    # numerics first: the deterministic switch must be set before cuBLAS and NCCL start (convit.cudaconf)
    with cudaconf.Numerics(spec.resources.deterministic) as numerics:
        ctx = distributed.setup(device)
        try:
            numerics.apply(ctx.device)
            with _exclusive(workdir, ctx, lock_wait_s):
                done = _check_workdir(spec, workdir)  # a duplicate that waited for the lock finds it done
                if done is not None:
                    return done
                engine = _Engine(spec, workdir, ctx, data_root, should_stop, teacher_path, progress_every_s)
                engine.numerics = numerics
                return engine.fit()
        finally:
            distributed.teardown(ctx)


@contextlib.contextmanager
def _exclusive(workdir: Path, ctx: DistContext, wait_s: float) -> Iterator[None]:
    """Rank 0 holds the run directory's lock (:mod:`convit.runlock`) while every rank trains; if another
    process holds it, every rank raises :class:`RunInUse`."""
    with contextlib.ExitStack() as stack:
        error: runlock.RunDirBusy | None = None
        if ctx.is_main:
            try:
                stack.enter_context(runlock.hold(workdir, wait_s))
            except runlock.RunDirBusy as exc:
                error = exc
        busy = torch.tensor([float(error is not None)], device=ctx.device)
        distributed.all_reduce(busy, ctx, op="max")
        if busy.item():
            raise RunInUse(str(error) if error is not None else f"{workdir} is in use (rank 0 says by whom)")
        yield


def _buffers_need_sync(model: nn.Module) -> bool:
    """Whether DDP must re-broadcast rank 0's buffers before every forward (its default).

    That broadcast exists for buffers that training changes and ranks could disagree on (BatchNorm running
    statistics), which are persistent: they are in the state dict, and the checkpoint carries them. The zoo's
    non-persistent buffers are functions of the config, identical on every rank by construction: ConViT's
    ``rel_indices`` ([N, N, 3] relative positions per GPSA layer, 10 x 461 kB for ConViT-S at 224 px, i.e.
    ~4.6 MB broadcast per forward, which its fast path never reads). So the broadcast is kept only when a
    persistent buffer exists; DDP's one broadcast at construction still aligns every buffer once.
    """
    persistent = set(model.state_dict())
    return any(name in persistent for name, _ in model.named_buffers())


class _Engine:
    """One run's state; a class only to keep ``fit`` readable (it is created and used once by :func:`run`)."""

    def __init__(
        self,
        spec: RunSpec,
        workdir: Path,
        ctx: DistContext,
        data_root: str | Path | None,
        should_stop: Callable[[], bool] | None,
        teacher_path: Path | None = None,
        progress_every_s: float = 60.0,
    ):
        self.spec = spec
        self.workdir = workdir
        self.ctx = ctx
        self.data_root = data_root
        self.teacher_path = teacher_path
        self.should_stop = should_stop or (lambda: False)
        self.say = _Printer(ctx.is_main)
        self.recipe = spec.recipe
        self.progress_every_s = progress_every_s
        self.numerics: cudaconf.Numerics | None = None  # set by run(): what env.json records

    # ---- construction --------------------------------------------------------------------------
    def _build(self) -> None:
        from convit import data, models

        spec, recipe, ctx = self.spec, self.recipe, self.ctx
        reserved = {"num_classes", "img_size", "drop_path_rate"} & set(spec.model.kwargs)
        if reserved:
            raise TrainError(
                f"model.kwargs may not set {sorted(reserved)}: they come from data.num_classes, "
                "data.img_size and recipe.drop_path"
            )
        self.train_ds, self.val_ds = data.build_datasets(spec.data, recipe, self.data_root)
        self.num_classes = spec.data.num_classes or data.dataset_info(spec.data.name).num_classes
        self.plan = _Plan(spec, ctx, len(self.train_ds), self.say)

        torch.manual_seed(spec.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
        model = models.create(
            spec.model.name,
            num_classes=self.num_classes,
            img_size=spec.data.img_size,
            drop_path_rate=recipe.drop_path,
            **spec.model.kwargs,
        )
        model.to(ctx.device)
        self.model = model
        self.params = sum(p.numel() for p in model.parameters())
        self.optimizer = build_optimizer(model, recipe, self.plan.peak_lr)
        self.scheduler = build_scheduler(self.optimizer, recipe, self.plan.steps_per_epoch)
        cuda = ctx.device.type == "cuda"
        self.amp = cudaconf.amp_choice(recipe.amp, ctx.device)
        if cuda and self.amp.reason:
            self.say.warn(self.amp.reason)
        self.amp_dtype = self.amp.dtype
        self.scaler = torch.amp.GradScaler("cuda" if cuda else "cpu", enabled=self.amp_dtype is torch.float16)
        self.ema = None
        if recipe.ema:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=recipe.ema_decay)
        if ctx.distributed:
            self.ddp: nn.Module = nn.parallel.DistributedDataParallel(
                model,
                device_ids=[ctx.device.index] if cuda else None,
                forward_sync_buffers=_buffers_need_sync(model),
            )
        else:
            self.ddp = model

        mixup_on = recipe.mixup > 0 or recipe.cutmix > 0
        self.mixup = None
        if mixup_on:
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            if self.plan.per_device % 2:
                raise TrainError(f"Mixup/CutMix needs an even per-device batch, got {self.plan.per_device}")
            self.mixup = Mixup(
                mixup_alpha=recipe.mixup,
                cutmix_alpha=recipe.cutmix,
                prob=recipe.mixup_prob,
                switch_prob=recipe.mixup_switch_prob,
                mode=recipe.mixup_mode,
                label_smoothing=recipe.smoothing,
                num_classes=self.num_classes,
            )
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif recipe.smoothing > 0:
            from timm.loss import LabelSmoothingCrossEntropy

            self.criterion = LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()

        self.sampler = _make_sampler(spec, self.plan, ctx, self.train_ds)
        self.batches = _BatchList()
        workers = spec.resources.workers
        self.loader = DataLoader(
            _SeededSamples(self.train_ds),
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
        )
        self.eval_batch = evaluation.eval_batch_size(self.plan.per_device)
        self.val_loader = evaluation.make_loader(self.val_ds, ctx, self.eval_batch, workers)
        self.probe_images = None
        if ctx.is_main and spec.probes.every > 0:
            self.probe_images = _probe_batch(self.val_ds, spec)
        self.teacher = self._build_teacher() if self.teacher_path is not None else None

    def _build_teacher(self) -> nn.Module:
        """The frozen teacher from ``self.teacher_path``; every user mistake is one :class:`TrainError`.

        Built last and under a forked RNG: its random init (overwritten by the file) must not shift anything
        the student's run draws. The classifier size is checked before the strict load so a teacher trained
        on another dataset is named as such, not as a key-by-key shape mismatch.
        """
        import timm

        from convit.models import ModelError
        from convit.models.weights import load_state_checked, read_state_dict

        path, name = self.teacher_path, str(self.spec.tags["teacher_model"])
        assert path is not None
        dataset = self.spec.data.name
        try:
            state = read_state_dict(path)
        except ModelError as exc:
            # torch's unpickling errors run over many lines: name the file, the cause and the fix in one
            why = f"torch.load failed: {type(exc.__cause__).__name__}" if exc.__cause__ else str(exc)
            raise TrainError(
                f"cannot use the distillation teacher {path} ({why.splitlines()[0]}): it must be a timm "
                f"{name} state dict, e.g. torch.save(model.state_dict(), path)"
            ) from None
        with torch.random.fork_rng(devices=[]):
            try:
                teacher = timm.create_model(name, num_classes=self.num_classes, pretrained=False)
            except RuntimeError as exc:  # timm: "Unknown model (...)"
                raise TrainError(f"tags.teacher_model {name!r} is not a timm model ({exc})") from None
        head = teacher.get_classifier() if hasattr(teacher, "get_classifier") else None
        head_key = next((f"{n}.weight" for n, m in teacher.named_modules() if m is head and n), None)
        if head_key is not None and head_key in state and state[head_key].shape[0] != self.num_classes:
            raise TrainError(
                f"teacher {path} has a {state[head_key].shape[0]}-way classifier ({head_key}) but {dataset} "
                f"has {self.num_classes} classes: give a {name} trained on {dataset}"
            )
        try:
            load_state_checked(teacher, state, path)
        except ModelError as exc:
            raise TrainError(f"{exc} (the teacher file must hold a timm {name} state dict)") from None
        teacher.to(self.ctx.device).eval().requires_grad_(False)
        return teacher

    def _distilled_loss(
        self, output: torch.Tensor, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The hard-distillation loss of one micro-batch; the teacher sees exactly the student's input."""
        assert self.teacher is not None
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        return hard_distillation_loss(self.criterion, output, targets, teacher_logits)

    def _autocast(self) -> Any:
        return evaluation.autocast(self.ctx.device, self.amp_dtype)

    # ---- checkpoints ---------------------------------------------------------------------------
    def _state(self, epoch: int, step_in_epoch: int) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.to_json(),
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "rng": ckpt.rng_state(),
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "last_lr": self.last_lr,
            "wall_time_s": self._wall_time(),
            "history": self.history,
            "world_size": self.ctx.world_size,
        }

    def _validate(self, state: dict[str, Any]) -> None:
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"unknown checkpoint format {state.get('format')!r}")
        stored = json.loads(state["spec"])
        diff = _spec_diff(stored, self.spec.to_dict())
        if diff:
            raise SpecMismatch(self.workdir, diff)
        for key in ("epoch", "step_in_epoch", "global_step", "model", "optimizer", "history"):
            if key not in state:
                raise KeyError(f"checkpoint lacks {key!r}")

    def _save(self, epoch: int, step_in_epoch: int) -> Path:
        """Rank 0 writes; every rank waits so nobody runs ahead of a checkpoint being written."""
        path = self.workdir / ckpt.CHECKPOINT
        if self.ctx.is_main:
            ckpt.save_atomic(self._state(epoch, step_in_epoch), self.workdir)
        distributed.barrier(self.ctx)
        return path

    def _resume(self) -> tuple[int, int]:
        """Load the newest good checkpoint; returns (epoch, step_in_epoch) to continue from."""
        state, path, warnings = ckpt.load_latest(self.workdir, self._validate)
        for message in warnings:
            self.say.warn(message)
        if state is None:
            if warnings:
                self.say.warn("no usable checkpoint: restarting from scratch")
            return 0, 0
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
        ckpt.set_rng_state(state["rng"])
        self.global_step = int(state["global_step"])
        self.loss_sum = float(state["loss_sum"]) if self.ctx.is_main else 0.0
        self.loss_count = int(state["loss_count"]) if self.ctx.is_main else 0
        self.wall_before = float(state["wall_time_s"])
        self.last_lr = float(state.get("last_lr", self.optimizer.param_groups[0]["lr"]))
        self.history = list(state["history"])
        epoch, step = int(state["epoch"]), int(state["step_in_epoch"])
        self.say(
            f"resumed from {path.name}: epoch {epoch}, step {step} of the epoch "
            f"(global step {self.global_step})"
        )
        return epoch, step

    def _wall_time(self) -> float:
        return self.wall_before + (time.monotonic() - self.t_start)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        spec, ctx, say = self.spec, self.ctx, self.say
        self.t_start = time.monotonic()
        self.wall_before = 0.0
        self.global_step = 0
        self.loss_sum = 0.0  # global (all ranks) sum of per-micro-batch mean losses for the current epoch
        self.loss_count = 0
        self.last_lr = 0.0  # lr of the latest optimiser step (logged; restored on resume)
        self.history: list[dict[str, Any]] = []
        if ctx.is_main:
            self.workdir.mkdir(parents=True, exist_ok=True)
            spec_path = self.workdir / "spec.json"
            if not spec_path.exists():
                ckpt.write_text_atomic(spec_path, spec.to_json() + "\n")
        distributed.barrier(ctx)

        self._build()
        say(f"run {self.workdir} | model {spec.model.name} ({self.params / 1e6:.2f}M params) on {ctx.device}")
        say(self.plan.describe())
        for note in self.numerics.notes if self.numerics is not None else []:
            say.warn(note)

        start_epoch, start_step = self._resume()
        distributed.barrier(ctx)  # nobody writes a new checkpoint before every rank has read the old one
        # rank 0's event files: what the checkpoint does not cover is dropped, its history written again
        self.board = tboard.Board(
            self.workdir, resume_step=self.global_step, history=self.history, active=ctx.is_main
        )
        hosts = _hostnames(ctx)  # every rank takes part
        if ctx.is_main:
            env = _env_info(ctx)
            env["hosts"] = hosts
            env["resumed_at_epoch"] = start_epoch if (start_epoch or start_step) else None
            numerics = self.numerics.record() if self.numerics is not None else {}
            env["numerics"] = {**numerics, "amp": self.amp.record()}
            if self.teacher_path is not None:
                env["teacher"] = {
                    "file": str(self.teacher_path.resolve()),
                    "sha256": _sha256(self.teacher_path),
                    "model": self.spec.tags["teacher_model"],
                }
            ckpt.write_json_atomic(self.workdir / "env.json", env)
            # the checkpoint's history is the truth: drop lines of epochs it does not cover, restore
            # missing ones
            text = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in self.history)
            ckpt.write_text_atomic(self.workdir / "metrics.jsonl", text)

        epochs = self.recipe.epochs
        try:
            for epoch in range(start_epoch, epochs):
                self._train_epoch(epoch, start_step if epoch == start_epoch else 0)
        finally:
            self.board.close()  # flushes what was logged, on preemption and errors too

        result = self._result()
        if ctx.is_main:
            ckpt.write_json_atomic(self.workdir / "result.json", result)
            say(f"done: top1 {result['top1']:.2f} top5 {result['top5']:.2f} in {result['wall_time_s']:.1f} s")
        distributed.barrier(ctx)
        return result

    def _train_epoch(self, epoch: int, start_step: int) -> None:
        spec, plan, ctx, recipe = self.spec, self.plan, self.ctx, self.recipe
        self.batches.batches = _epoch_batches(spec, plan, ctx, self.sampler, epoch, start_step)
        _set_lr(self.scheduler, recipe, epoch, self.global_step)
        self.ddp.train()
        t0 = time.monotonic()
        progress = EpochProgress(
            self.workdir,
            epoch=epoch,
            epochs=recipe.epochs,
            steps=plan.steps_per_epoch,
            start_step=start_step,
            global_batch=plan.global_batch,
            every_s=self.progress_every_s,
            enabled=ctx.is_main,
        )
        it = iter(self.loader)
        steps_done = 0
        data_wait = 0.0  # seconds the loop blocked on the loader: its share of train time says input-bound
        pending: list[_StepRecord] = []  # steps whose loss is still on the device (read by _drain)
        requested = False  # a stop request seen on this rank (single process: acted on at once)
        for step in range(start_step, plan.steps_per_epoch):
            lr = self.last_lr = self.optimizer.param_groups[0]["lr"]
            step_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
            for micro in range(plan.accum):
                waited = time.perf_counter()
                images, targets = next(it)
                data_wait += time.perf_counter() - waited
                images = images.to(ctx.device, non_blocking=True)
                targets = targets.to(ctx.device, non_blocking=True)
                _seed_everything(_mix(_STEP_DOMAIN, spec.seed, ctx.rank, epoch, step, micro))
                if self.mixup is not None:
                    images, targets = self.mixup(images, targets)
                sync = micro == plan.accum - 1 or not ctx.distributed
                with contextlib.nullcontext() if sync else self.ddp.no_sync():  # type: ignore[operator]
                    with self._autocast():
                        output = self.ddp(images)
                        if self.teacher is None:
                            loss = self.criterion(output, targets)
                        else:
                            loss = self._distilled_loss(output, images, targets)
                    self.scaler.scale(loss / plan.accum).backward()
                step_loss += loss.detach().double()
            if recipe.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.global_step += 1
            if self.ema is not None:
                self.ema.update(self.model)
            if recipe.lr_schedule == "step":
                self.scheduler.step_update(self.global_step)

            pending.append(_StepRecord(step, self.global_step, step_loss, lr, data_wait))
            steps_done += 1
            requested = requested or bool(self.should_stop())
            due = len(pending) >= SYNC_EVERY or step + 1 == plan.steps_per_epoch
            if due or (requested and not ctx.distributed):
                stop = self._drain(pending, epoch, requested, progress)
                pending = []
                if stop:
                    self._reduce_loss_sums()
                    path = self._save(epoch, step + 1)
                    progress.close()
                    self.say(f"stop requested: saved epoch {epoch} step {step + 1} to {path.name}")
                    raise Preempted(epoch, step + 1, path)
        progress.close()
        train_time = time.monotonic() - t0
        self._reduce_loss_sums()
        train_loss = self.loss_sum / max(self.loss_count, 1)
        images_per_s = steps_done * plan.global_batch / train_time if train_time > 0 else 0.0
        if recipe.lr_schedule == "epoch_lagged":
            # what the original does after the epoch; _set_lr reapplies it on resume
            self.scheduler.step(epoch)

        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "train_loss": train_loss,
            "lr": self.last_lr,
        }
        last = epoch + 1 == recipe.epochs
        if last or (spec.eval_every > 0 and (epoch + 1) % spec.eval_every == 0):
            metrics = evaluation.evaluate(self.model, self.val_loader, ctx, self._autocast)
            entry.update(val_top1=metrics["top1"], val_top5=metrics["top5"], val_loss=metrics["loss"])
            if self.ema is not None:
                ema_metrics = evaluation.evaluate(self.ema.module, self.val_loader, ctx, self._autocast)
                entry.update(
                    ema_val_top1=ema_metrics["top1"],
                    ema_val_top5=ema_metrics["top5"],
                    ema_val_loss=ema_metrics["loss"],
                )
        if self.probe_images is not None and (epoch + 1) % spec.probes.every == 0:
            probes = _run_probes(self.model, self.probe_images.to(ctx.device), spec.probes.mode, self.say)
            if probes is not None:
                entry.update(probes)
        entry["images_per_s"] = images_per_s
        entry["data_wait_s"] = data_wait
        entry["train_time_s"] = train_time
        entry["epoch_time_s"] = time.monotonic() - t0
        self.history.append(entry)
        self.loss_sum, self.loss_count = 0.0, 0
        # checkpoint first (it carries the history), then the log line: a kill in between is repaired
        # on resume
        self._save(epoch + 1, 0)
        if ctx.is_main:
            with open(self.workdir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        self.board.epoch(entry)
        self.board.flush()
        self.say(self._epoch_line(entry))

    def _drain(
        self, pending: list[_StepRecord], epoch: int, requested: bool, progress: EpochProgress
    ) -> bool:
        """Read the pending steps' losses to the host (one sync), stop on a non-finite one, log the rest.

        Returns whether every rank stops now. In a distributed run one all-reduce (max) agrees on a stop
        request of any rank and on the first non-finite step of any rank, so all ranks raise or stop together.
        Nothing is saved between a non-finite step and its drain (every save drains first), so the last good
        checkpoint stays; the error names the first bad step, not the step that noticed it.
        """
        ctx, n = self.ctx, len(pending)
        losses = torch.stack([record.loss for record in pending])
        if ctx.distributed:
            position = torch.arange(n, dtype=torch.float64, device=ctx.device)
            first_bad = torch.where(torch.isfinite(losses), float(n), position).min()
            stop_flag = torch.full((), float(requested), dtype=torch.float64, device=ctx.device)
            flags = torch.stack([stop_flag, n - first_bad])
            distributed.all_reduce(flags, ctx, op="max")
            stop_value, bad_value, *values = torch.cat([flags, losses]).tolist()
            first, stop = n - int(bad_value), bool(stop_value)
        else:
            values = losses.tolist()
            first = next((i for i, value in enumerate(values) if not math.isfinite(value)), n)
            stop = requested
        if first < n:
            bad = pending[first]
            raise NonFiniteLoss(epoch, bad.step, bad.global_step)
        for record, value in zip(pending, values, strict=True):
            self.loss_sum += value
            self.loss_count += self.plan.accum
            progress.update(value / self.plan.accum, record.lr, record.data_wait)
        accum = self.plan.accum
        self.board.steps((r.global_step, v / accum, r.lr) for r, v in zip(pending, values, strict=True))
        return stop

    def _reduce_loss_sums(self) -> None:
        """Sum the partial-epoch loss over ranks into rank 0 (other ranks keep 0: a later sum stays right)."""
        if not self.ctx.distributed:
            return
        sums = torch.tensor(
            [self.loss_sum, float(self.loss_count)], dtype=torch.float64, device=self.ctx.device
        )
        distributed.all_reduce(sums, self.ctx)
        total, count = sums.tolist()
        if self.ctx.is_main:
            self.loss_sum, self.loss_count = total, int(count)
        else:
            self.loss_sum, self.loss_count = 0.0, 0

    def _epoch_line(self, entry: dict[str, Any]) -> str:
        parts = [
            f"epoch {entry['epoch']}/{self.recipe.epochs}",
            f"step {entry['step']}",
            f"loss {entry['train_loss']:.4f}",
            f"lr {entry['lr']:.3g}",
        ]
        if "val_top1" in entry:
            parts.append(
                f"top1 {entry['val_top1']:.2f} top5 {entry['val_top5']:.2f} val_loss {entry['val_loss']:.4f}"
            )
        if "ema_val_top1" in entry:
            parts.append(f"ema_top1 {entry['ema_val_top1']:.2f}")
        parts.append(f"{entry['images_per_s']:.0f} img/s {entry['epoch_time_s']:.1f} s")
        if entry.get("train_time_s"):
            parts.append(f"waited on data {100 * entry['data_wait_s'] / entry['train_time_s']:.0f}%")
        return " | ".join(parts)

    def _result(self) -> dict[str, Any]:
        final = self.history[-1]
        result = {
            "top1": final["val_top1"],
            "top5": final["val_top5"],
            "loss": final["val_loss"],
            "epochs": final["epoch"],
            "wall_time_s": self._wall_time(),
            "world_size": self.ctx.world_size,
            "params": self.params,
        }
        if "ema_val_top1" in final:
            result["ema_top1"] = final["ema_val_top1"]
            result["ema_top5"] = final["ema_val_top5"]
        if self.teacher_path is not None:
            result["teacher"] = self.teacher_path.name
        return result


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user can fix (one line, no traceback). Looked up lazily: a typo'd path should not pay for
    importing timm, and data/model errors can only exist once those modules were imported."""
    errors: list[type[BaseException]] = [TrainError, SpecError, OSError, distributed.DeviceError]
    for module, name in (("convit.data", "DataError"), ("convit.models", "ModelError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m convit.train SPEC.json WORKDIR [--data-root R] [--device D] [--teacher F] [...]``.

    SIGTERM/SIGUSR2 request a stop: the run saves a mid-epoch checkpoint and exits with status 3, and the same
    command resumes it.
    """
    parser = argparse.ArgumentParser(prog="python -m convit.train", description=main.__doc__)
    parser.add_argument("spec", type=Path, help="a RunSpec JSON file")
    parser.add_argument("workdir", type=Path, help="the run directory (created; resumed when it exists)")
    parser.add_argument("--data-root", default=None, help="data root (default: CONVIT_DATA_ROOT)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--teacher", default=None, help="teacher checkpoint file (distilled specs only)")
    parser.add_argument(
        "--progress-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="seconds between progress lines inside an epoch when stdout is not a terminal (default 60)",
    )
    args = parser.parse_args(argv)
    if not args.progress_every > 0:
        parser.error(f"--progress-every must be positive, got {args.progress_every}")

    stop = {"flag": False}

    def _request_stop(signum: int, frame: Any) -> None:
        stop["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, _request_stop)

    try:
        spec = RunSpec.from_json(args.spec.read_text())
        result = run(
            spec,
            args.workdir,
            data_root=args.data_root,
            should_stop=lambda: stop["flag"],
            device=args.device,
            teacher=args.teacher,
            progress_every_s=args.progress_every,
        )
    except Preempted as exc:
        print(f"convit.train: {exc}", file=sys.stderr)
        return 3
    except json.JSONDecodeError as exc:
        print(f"convit.train: {args.spec} is not valid JSON: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not isinstance(exc, _user_errors()):
            raise
        print(f"convit.train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
