"""The training engine: ``run(spec, workdir)`` trains any :class:`~convit.spec.RunSpec` and never loses work.

Size: over 600 lines because the loop, the state it checkpoints and resumes, and the CLI driving it are one
concept (bit-exact resume depends on all three); everything else is in the modules listed below.

One pure entry point serves the CLI (``python -m convit.train SPEC.json WORKDIR``), the submitit jobs and the
tests. This module is the loop and the run's state (build, checkpoint, resume, epochs); each other concept has
its own room, re-exported here where callers used to find it:

- :mod:`convit.recipe`: the DeiT recipe from timm's components (weight-decay groups, optimiser, lr schedule,
  loss and mixup, hard distillation loss) and its faithful-vs-original switches;
- :mod:`convit.sampling`: the batch arithmetic (:class:`~convit.sampling.Plan`), repeated augmentation, the
  per-sample seeds and each epoch's batches;
- :mod:`convit.rundir`: the run directory (spec check, ``env.json``, metrics lines, the lock, the console);
- :mod:`convit.teacher`: the distillation teacher; :mod:`convit.evaluation`: validation and the probes;
- :mod:`convit.train_errors`: what a run raises.

Other faithful-vs-original choices made here:
- Evaluation shards the validation set ``rank::world_size`` and sums counts across ranks, so every image is
  counted exactly once whatever the world size (no padding duplicates, DeiT issue #24).
- EMA (timm ``ModelEmaV3``, constant decay like DeiT's ``ModelEma``) is off by default, as in ConViT.
- Hard distillation (Table 4; :mod:`convit.teacher`): a spec tagged ``distillation="hard"`` trains the plain
  student on ``0.5 * criterion(student, targets) + 0.5 * cross_entropy(student, teacher.argmax(-1))``
  (:func:`hard_distillation_loss`), the teacher given as ``run(..., teacher=PATH)``, never part of the spec.

Determinism: every random draw is a function of (seed, rank, epoch, step) or (seed, epoch, sample position)
(:mod:`convit.sampling`), and the main process reseeds torch/numpy/random before each micro-batch's
mixup/drop-path. Resuming from any checkpoint therefore reproduces the uninterrupted run bit for bit on CPU;
a mid-epoch resume slices the epoch's index list instead of loading skipped batches. On a GPU that needs
``resources.deterministic`` (:mod:`convit.cudaconf`, which also sets TF32, cuDNN autotuning and the autocast
dtype, bf16 falling back to fp16 on GPUs without it, and records them in ``env.json``).

GPU path: the step loop reads nothing from the device per step; each step's loss stays there and a batch of
them is read every :data:`SYNC_EVERY` steps (one host sync, see there). Evaluation is
:mod:`convit.evaluation`, shared with eval-only jobs, on a loader built once per run. DDP re-broadcasts
buffers before each forward only when the model has persistent ones (:func:`_buffers_need_sync`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from convit import checkpoint as ckpt
from convit import cudaconf, distributed, evaluation, rundir, sampling, tboard
from convit import teacher as teachers
from convit.distributed import DistContext
from convit.progress import EpochProgress
from convit.recipe import (
    build_criterion,
    build_optimizer,
    build_scheduler,
    hard_distillation_loss,
    set_lr,
    weight_decay_names,
)
from convit.spec import RunSpec, SpecError
from convit.train_errors import NonFiniteLoss, Preempted, RunInUse, SpecMismatch, TrainError

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


#: metrics.jsonl / result.json fields that measure the machine, not the run: they differ between a resumed run
#: and an uninterrupted one (and between two identical runs); every other field is reproducible bit for bit.
TIMING_KEYS = frozenset({"images_per_s", "train_time_s", "data_wait_s", "epoch_time_s", "wall_time_s"})


class _StepRecord(NamedTuple):
    """One optimiser step whose loss (a device scalar: sum over micro-batches) has not been read yet."""

    step: int  # in the epoch, 0-based
    global_step: int  # after the step
    loss: torch.Tensor
    lr: float
    data_wait: float  # the epoch's loader wait so far, for the progress line


# --------------------------------------------------------------------------------------------------
# evaluation (one-off; the engine keeps its loader for the run)
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
    done = rundir.check_workdir(spec, workdir)
    if done is not None:
        return done
    teacher_path = teachers.check_teacher(spec, teacher)
    # numerics first: the deterministic switch must be set before cuBLAS and NCCL start (convit.cudaconf)
    with cudaconf.Numerics(spec.resources.deterministic) as numerics:
        ctx = distributed.setup(device)
        try:
            numerics.apply(ctx.device)
            with rundir.exclusive(workdir, ctx, lock_wait_s):
                # a duplicate that waited for the lock finds it done
                done = rundir.check_workdir(spec, workdir)
                if done is not None:
                    return done
                engine = _Engine(spec, workdir, ctx, data_root, should_stop, teacher_path, progress_every_s)
                engine.numerics = numerics
                return engine.fit()
        finally:
            distributed.teardown(ctx)


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
        self.say = rundir.Printer(ctx.is_main)
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
        self.plan = sampling.Plan(spec, ctx, len(self.train_ds), self.say)

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

        self.mixup, self.criterion = build_criterion(recipe, self.plan.per_device, self.num_classes)

        self.sampler = sampling.make_sampler(spec, self.plan, ctx, self.train_ds)
        self.batches = sampling.BatchList()
        workers = spec.resources.workers
        self.loader = DataLoader(
            sampling.SeededSamples(self.train_ds),
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
        )
        self.eval_batch = evaluation.eval_batch_size(self.plan.per_device)
        self.val_loader = evaluation.make_loader(self.val_ds, ctx, self.eval_batch, workers)
        self.probe_images = None
        if ctx.is_main and spec.probes.every > 0:
            self.probe_images = evaluation.probe_batch(self.val_ds, spec)
        self.teacher = self._build_teacher() if self.teacher_path is not None else None

    def _build_teacher(self) -> nn.Module:
        """The frozen teacher from ``self.teacher_path`` (:func:`convit.teacher.load_teacher`)."""
        assert self.teacher_path is not None
        name = str(self.spec.tags["teacher_model"])
        return teachers.load_teacher(
            self.teacher_path, name, self.num_classes, self.spec.data.name, self.ctx.device
        )

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
        diff = rundir.spec_diff(stored, self.spec.to_dict())
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
            rundir.write_spec(self.workdir, spec)
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
        hosts = rundir.hostnames(ctx)  # every rank takes part
        if ctx.is_main:
            numerics = self.numerics.record() if self.numerics is not None else {}
            rundir.write_env(
                self.workdir,
                ctx,
                hosts=hosts,
                resumed_at_epoch=start_epoch if (start_epoch or start_step) else None,
                numerics={**numerics, "amp": self.amp.record()},
                teacher_path=self.teacher_path,
                teacher_model=self.spec.tags["teacher_model"] if self.teacher_path is not None else None,
            )
            rundir.write_metrics(self.workdir, self.history)  # the checkpoint's history is the truth

        epochs = self.recipe.epochs
        try:
            for epoch in range(start_epoch, epochs):
                self._train_epoch(epoch, start_step if epoch == start_epoch else 0)
        finally:
            self.board.close()  # flushes what was logged, on preemption and errors too

        result = rundir.result_record(
            self.history[-1], self._wall_time(), ctx.world_size, self.params, self.teacher_path
        )
        if ctx.is_main:
            ckpt.write_json_atomic(self.workdir / "result.json", result)
            say(f"done: top1 {result['top1']:.2f} top5 {result['top5']:.2f} in {result['wall_time_s']:.1f} s")
        distributed.barrier(ctx)
        return result

    def _train_epoch(self, epoch: int, start_step: int) -> None:
        spec, plan, ctx, recipe = self.spec, self.plan, self.ctx, self.recipe
        self.batches.batches = sampling.epoch_batches(spec, plan, ctx, self.sampler, epoch, start_step)
        set_lr(self.scheduler, recipe, epoch, self.global_step)
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
                sampling.seed_everything(
                    sampling.mix(sampling.STEP_DOMAIN, spec.seed, ctx.rank, epoch, step, micro)
                )
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
            # what the original does after the epoch; set_lr reapplies it on resume
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
            probes = evaluation.run_probes(
                self.model, self.probe_images.to(ctx.device), spec.probes.mode, self.say.warn
            )
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
            rundir.append_metrics(self.workdir, entry)
        self.board.epoch(entry)
        self.board.flush()
        self.say(rundir.epoch_line(entry, self.recipe.epochs))

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
