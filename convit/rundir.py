"""The run directory and what a run writes: spec check, ``env.json``, metrics lines, the lock, the console.

Layout (ARCHITECTURE.md, "Run directory"): ``spec.json`` (written once; a different spec in the same folder is
:class:`~convit.train_errors.SpecMismatch`), ``env.json`` (versions, git commit, every rank's host, numerics,
the teacher file), ``metrics.jsonl`` (one line per epoch, rewritten from the checkpoint's history on resume),
``result.json`` and the ``.lock`` rank 0 holds while every rank trains (:func:`exclusive`). Checkpoints are
:mod:`convit.checkpoint`; what goes into them is the engine's (:mod:`convit.train`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convit import checkpoint as ckpt
from convit import distributed, runlock
from convit.distributed import DistContext
from convit.spec import RunSpec
from convit.train_errors import RunInUse, SpecMismatch, TrainError

__all__ = [
    "Printer",
    "append_metrics",
    "check_workdir",
    "env_info",
    "epoch_line",
    "exclusive",
    "git_info",
    "hostnames",
    "result_record",
    "sha256",
    "spec_diff",
    "write_env",
    "write_metrics",
    "write_spec",
]


def sha256(path: Path) -> str:
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


def spec_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted keys where two spec dicts differ: what :class:`SpecMismatch` names."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in set(a) | set(b) if a.get(k, object()) != b.get(k, object()))


class Printer:
    """Rank-0 console output: info to stdout, warnings to stderr (other ranks stay quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        """A ``warning:`` line on stderr (rank 0 only)."""
        if self.enabled:
            print(f"warning: {message}", file=sys.stderr, flush=True)


def git_info() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (empty outside a git checkout)."""
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


def hostnames(ctx: DistContext) -> list[str]:
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


def env_info(ctx: DistContext) -> dict[str, Any]:
    """The machine facts of ``env.json``: versions, host, SLURM job, world size, device, start, git."""
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
        **git_info(),
    }


def check_workdir(spec: RunSpec, workdir: Path) -> dict[str, Any] | None:
    """Refuse a workdir of another spec; return the stored result of a finished run of this spec."""
    spec_path = workdir / "spec.json"
    if spec_path.exists():
        try:
            stored = json.loads(spec_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise TrainError(f"{spec_path} is unreadable ({exc}); remove it or use another workdir") from exc
        diff = spec_diff(stored, spec.to_dict())
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


@contextlib.contextmanager
def exclusive(workdir: Path, ctx: DistContext, wait_s: float) -> Iterator[None]:
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


def write_spec(workdir: Path, spec: RunSpec) -> None:
    """Rank 0, before anything else: the folder and its ``spec.json`` (kept if it exists: it was checked)."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path = workdir / "spec.json"
    if not spec_path.exists():
        ckpt.write_text_atomic(spec_path, spec.to_json() + "\n")


def write_env(
    workdir: Path,
    ctx: DistContext,
    *,
    hosts: list[str],
    resumed_at_epoch: int | None,
    numerics: dict[str, Any],
    teacher_path: Path | None,
    teacher_model: Any = None,
) -> None:
    """Rank 0: ``env.json`` for this (re)start: :func:`env_info`, the hosts, numerics and the teacher file."""
    env = env_info(ctx)
    env["hosts"] = hosts
    env["resumed_at_epoch"] = resumed_at_epoch
    env["numerics"] = numerics
    if teacher_path is not None:
        env["teacher"] = {
            "file": str(teacher_path.resolve()),
            "sha256": sha256(teacher_path),
            "model": teacher_model,
        }
    ckpt.write_json_atomic(workdir / "env.json", env)


def write_metrics(workdir: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rank 0 on (re)start: the checkpoint's history is the truth: drop lines of epochs it does not cover,
    restore missing ones."""
    text = "".join(json.dumps(entry, sort_keys=True) + "\n" for entry in history)
    ckpt.write_text_atomic(workdir / "metrics.jsonl", text)


def append_metrics(workdir: Path, entry: dict[str, Any]) -> None:
    """Rank 0 after an epoch's checkpoint (which carries the history): its line, on disk before returning."""
    with open(workdir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def epoch_line(entry: dict[str, Any], epochs: int) -> str:
    """The console line of a finished epoch (a ``metrics.jsonl`` entry), rank 0."""
    parts = [
        f"epoch {entry['epoch']}/{epochs}",
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


def result_record(
    final: dict[str, Any], wall_time_s: float, world_size: int, params: int, teacher_path: Path | None
) -> dict[str, Any]:
    """``result.json`` from the last epoch's entry: its validation numbers and the run's size and cost."""
    result = {
        "top1": final["val_top1"],
        "top5": final["val_top5"],
        "loss": final["val_loss"],
        "epochs": final["epoch"],
        "wall_time_s": wall_time_s,
        "world_size": world_size,
        "params": params,
    }
    if "ema_val_top1" in final:
        result["ema_top1"] = final["ema_val_top1"]
        result["ema_top5"] = final["ema_val_top5"]
    if teacher_path is not None:
        result["teacher"] = teacher_path.name
    return result
