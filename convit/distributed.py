"""torch.distributed set-up from the environment, and the few collectives the engine needs.

The launcher (``torchrun``, or submitit's ``TorchDistributedEnvironment().export()`` under SLURM) owns the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; this
module only reads them. Keeping the set-up here (instead of inside the training loop) means the engine runs
unchanged as one CPU process, several gloo processes, or one NCCL process per GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DeviceError", "DistContext", "all_reduce", "barrier", "resolve_device", "setup", "teardown"]


class DeviceError(RuntimeError):
    """The requested device does not exist here (a user mistake: one line, no traceback, in the CLIs)."""


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, its device, and whether we own the process group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    #: True when :func:`setup` created the process group (so :func:`teardown` must destroy it); False
    #: when the caller had already initialised one, or when the run is a single process.
    owns_group: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}={value!r} is not an integer") from exc


def resolve_device(requested: str) -> torch.device:
    """An explicit device name (``cpu``, ``cuda``, ``cuda:N``) checked against this machine.

    Raises :class:`DeviceError` for a name torch does not know, a CUDA device without a GPU, or an index
    past the visible devices: the CLIs print it as one line instead of CUDA's initialisation traceback.
    """
    try:
        dev = torch.device(requested)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {requested!r} (use 'cpu', 'cuda' or 'cuda:N')")
    if dev.type == "cpu":
        return dev
    if not torch.cuda.is_available():
        raise DeviceError(f"device {requested!r} requested but torch sees no CUDA GPU here (use 'cpu')")
    count = torch.cuda.device_count()
    if (dev.index or 0) >= count:
        raise DeviceError(f"device {requested!r} requested but only {count} CUDA device(s) are visible")
    return dev


def _pick_device(requested: str | None, local_rank: int) -> torch.device:
    """The device for this rank: ``cuda:LOCAL_RANK`` when CUDA is there, else CPU.

    submitit's ``export()`` restricts each task to a single visible GPU, so with one visible device we use
    ``cuda:0`` whatever the local rank is; with several visible devices (torchrun) the local rank picks one.
    An explicit ``cpu`` or ``cuda:N`` is used as given (after :func:`resolve_device`'s checks).
    """
    if requested is None and not torch.cuda.is_available():
        return torch.device("cpu")
    if requested is not None:
        dev = resolve_device(requested)
        if dev.type == "cpu" or dev.index is not None:
            return dev
    count = torch.cuda.device_count()
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise DeviceError(f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def setup(device: str | None = None) -> DistContext:
    """Initialise the process group from the environment when ``WORLD_SIZE > 1`` (gloo on CPU, nccl on GPU).

    An already initialised group (a caller that set it up itself) is reused and left alone at teardown.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = _env_int("LOCAL_RANK", 0)
        dev = _pick_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return DistContext(rank, world, local_rank, dev, owns_group=False)

    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = _pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistContext(0, 1, local_rank, dev, owns_group=False)
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise RuntimeError(f"WORLD_SIZE={world} but {name} is not set (launch with torchrun or submitit)")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    kwargs = {"device_id": dev} if dev.type == "cuda" else {}
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world, **kwargs)
    return DistContext(rank, world, local_rank, dev, owns_group=True)


def teardown(ctx: DistContext) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(tensor: torch.Tensor, ctx: DistContext, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum`` or ``max``) across ranks; a no-op for a single process."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (used around checkpoint loading so rank 0 never overwrites a file being read)."""
    if ctx.distributed:
        dist.barrier()
