"""torch.distributed set-up from the environment, and the few collectives the engine needs.

The launcher (``torchrun``, or submitit's ``TorchDistributedEnvironment().export()`` under SLURM) owns the
environment variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; this
module only reads them. Keeping the set-up here (instead of inside the training loop) means the engine runs
unchanged as one CPU process, several gloo processes, or one NCCL process per GPU.

Devices. A process that was asked for GPUs (``--device cuda``, a job submitted with GPUs, or a SLURM task
whose allocation holds GPUs) either gets a GPU this torch build can drive or stops with a one-line
:class:`DeviceError` saying why (no driver, a driver older than the build's CUDA runtime, a GPU architecture
missing from the build's arch list), before anything is written to its run directory: it never falls back
to CPU/gloo and trains for days at CPU speed into a checkpoint a later GPU launch would resume. The same
checks, as data (:class:`CudaFacts`), serve ``python -m convit.doctor``.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "CudaFacts",
    "DeviceError",
    "DistContext",
    "all_reduce",
    "barrier",
    "cuda_facts",
    "cuda_problem",
    "gpus_expected",
    "kernel_for",
    "pick_device",
    "resolve_device",
    "setup",
    "teardown",
]


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

    Raises :class:`DeviceError` for a name torch does not know, a CUDA device that this machine or this torch
    build cannot drive (:func:`cuda_problem`: no driver, a driver older than the build's CUDA runtime, a GPU
    architecture the build has no kernels for), or an index past the visible devices: the CLIs print it as one
    line instead of CUDA's initialisation traceback (or a "no kernel image" error hours into a job).
    """
    try:
        dev = torch.device(requested)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise DeviceError(f"unknown device {requested!r} (use 'cpu', 'cuda' or 'cuda:N')")
    if dev.type == "cpu":
        return dev
    problem = cuda_problem(dev.index)
    if problem is not None:
        raise DeviceError(f"device {requested!r} requested but {problem}")
    return dev


# ------------------------------------------------------------------------------------------ CUDA facts
@dataclass(frozen=True)
class CudaFacts:
    """What decides whether this process can train on its GPUs; gathered by :func:`cuda_facts`.

    Kept as plain data so the checks (:func:`cuda_problem`, ``convit.doctor``) can be tested with faked facts.
    """

    #: ``torch.__version__`` (``2.14.1+cu130``)
    torch_version: str
    #: CUDA runtime the torch build ships (``torch.version.cuda``, ``"13.0"``); None: a CPU-only build.
    runtime: str | None
    #: ``torch.cuda.get_arch_list()``: ``sm_XY`` (binary kernels) and ``compute_XY`` (PTX) entries.
    arch_list: tuple[str, ...]
    #: newest CUDA version the installed NVIDIA driver supports (``cuDriverGetVersion``, ``"12.2"``);
    #: None: no driver (``libcuda.so.1`` does not load).
    driver: str | None
    #: ``torch.cuda.is_available()``
    available: bool
    #: (name, (major, minor)) of each visible GPU: from torch when it is available, else from the driver.
    devices: tuple[tuple[str, tuple[int, int]], ...]
    #: ``CUDA_VISIBLE_DEVICES`` as this process sees it (None: unset).
    visible: str | None = None
    #: what torch said while failing to initialise CUDA (its warning), if anything.
    torch_warning: str | None = None


def _libcuda() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None


def _driver_version() -> str | None:
    """The newest CUDA version the driver supports ("12.2"), from ``libcuda`` itself (no torch, no cuInit)."""
    lib = _libcuda()
    if lib is None:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _driver_devices() -> tuple[tuple[str, tuple[int, int]], ...]:
    """Visible GPUs as the driver sees them: for when torch cannot initialise CUDA and so cannot tell."""
    lib = _libcuda()
    if lib is None or lib.cuInit(0) != 0:
        return ()
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return ()
    devices = []
    for ordinal in range(count.value):
        handle, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(handle), ordinal) != 0:
            continue
        lib.cuDeviceGetName(name, len(name), handle)
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR (75) and _MINOR (76)
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)
        devices.append((name.value.decode(errors="replace"), (major.value, minor.value)))
    return tuple(devices)


def _driver_device_count() -> int:
    """GPUs the NVIDIA driver shows this process (0 without a driver): is there a GPU torch fails to use?"""
    return len(_driver_devices())


def cuda_facts() -> CudaFacts:
    """This process's CUDA facts (cheap: the driver is asked only when torch cannot use CUDA)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    said = [str(w.message) for w in caught if "CUDA" in str(w.message)]
    if available:
        devices = tuple(
            (torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
            for i in range(torch.cuda.device_count())
        )
    else:
        devices = _driver_devices()
    return CudaFacts(
        torch_version=torch.__version__,
        runtime=torch.version.cuda,
        arch_list=tuple(torch.cuda.get_arch_list()) if torch.version.cuda else (),
        driver=_driver_version(),
        available=available,
        devices=devices,  # type: ignore[arg-type]
        visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
        torch_warning=" ".join(said[0].split()) if said else None,
    )


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def kernel_for(capability: tuple[int, int], arch_list: Sequence[str]) -> str | None:
    """The entry of a torch build's arch list whose code a GPU of ``capability`` runs, or None.

    The rules checked (NVIDIA's CUDA compatibility guide):

    - ``sm_XY`` (a binary cubin) runs on compute capability X.Z for Z >= Y, same major only: sm_80 runs on
      8.0, 8.6 and 8.9, never on 9.0 and never on 7.x (so a build of sm_75..sm_120 cannot drive a V100, 7.0).
      ``sm_XYf`` (family-specific) follows the same rule; ``sm_XYa`` (architecture-specific) runs on X.Y only.
    - ``compute_XY`` (PTX) is compiled by the driver at load time for any capability >= X.Y (later majors
      too), provided the driver is at least as new as the CUDA the build was made with; ``compute_XYa`` runs
      on X.Y only.
    """
    major, minor = capability
    best: tuple[tuple[bool, tuple[int, int]], str] | None = None
    for entry in arch_list:
        kind, _, code = entry.partition("_")
        suffix = code[-1] if code and code[-1] in "af" else ""
        digits = code[: len(code) - len(suffix)]
        if kind not in ("sm", "compute") or len(digits) < 2 or not digits.isdigit():
            continue
        cap = (int(digits[:-1]), int(digits[-1]))
        if suffix == "a":
            ok = cap == capability
        elif kind == "sm":
            ok = cap[0] == major and cap[1] <= minor
        else:
            ok = cap <= capability
        # as the CUDA loader does: a binary before PTX, and the newest architecture that fits
        rank = (kind == "sm", cap)
        if ok and (best is None or rank > best[0]):
            best = (rank, entry)
    return None if best is None else best[1]


def _arch_summary(arch_list: Sequence[str]) -> str:
    return " ".join(arch_list) if arch_list else "no architectures"


def cuda_problem(index: int | None = None, facts: CudaFacts | None = None) -> str | None:
    """Why CUDA cannot train here, as one clause ("torch sees no CUDA GPU here: ..."), or None when it can.

    Checks, in order: a CUDA build of torch; an NVIDIA driver; the driver's CUDA major version against the
    build's runtime (CUDA's minor-version compatibility lets a 13.0 runtime run on any 13.x driver, never on a
    12.x one); a visible GPU; device ``index`` (every visible one when None) against the build's arch list
    (:func:`kernel_for`). ``facts`` defaults to :func:`cuda_facts` (tests pass faked ones).
    """
    f = cuda_facts() if facts is None else facts
    build = f"torch {f.torch_version}"
    fix = "install a torch build for this cluster (README, Installing)"
    if f.runtime is None:
        return f"this torch build ({f.torch_version}) has no CUDA support; {fix}"
    if f.driver is None and not f.available:
        return "torch sees no CUDA GPU here: no NVIDIA driver (libcuda.so.1) on this machine"
    if f.driver is not None and _version(f.driver)[0] < _version(f.runtime)[0]:
        return (
            f"torch sees no CUDA GPU here: the NVIDIA driver supports CUDA up to {f.driver} but {build} "
            f"needs the CUDA {f.runtime} runtime; update the driver or {fix}"
        )
    if not f.available or not f.devices:
        if f.visible is not None and not f.visible.strip():
            why = "CUDA_VISIBLE_DEVICES is empty"
        elif not f.devices:
            why = f"no GPU visible (CUDA_VISIBLE_DEVICES={f.visible!r})" if f.visible else "no GPU visible"
        else:
            why = f.torch_warning or "CUDA failed to initialise"
        return f"torch sees no CUDA GPU here: {why}"
    if index is not None and index >= len(f.devices):
        return f"only {len(f.devices)} CUDA device(s) are visible"
    for i in range(len(f.devices)) if index is None else (index,):
        name, cap = f.devices[i]
        entry = kernel_for(cap, f.arch_list)
        if entry is None:
            want = f"sm_{cap[0]}{cap[1]}"
            return (
                f"GPU {i} ({name}) has compute capability {cap[0]}.{cap[1]} and {build} has no kernels for "
                f"it (arch list: {_arch_summary(f.arch_list)}); {fix}, one whose arch list covers {want}"
            )
        if entry.startswith("compute_") and f.driver is not None and _version(f.driver) < _version(f.runtime):
            return (
                f"GPU {i} ({name}, {cap[0]}.{cap[1]}) needs {build}'s PTX ({entry}), which a driver for CUDA "
                f"{f.driver} cannot compile (CUDA {f.runtime} PTX); update the driver or {fix}"
            )
    return None


def gpus_expected(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this process must run on GPUs (its SLURM allocation holds some), or None.

    SLURM sets these in a task whose job asked for GPUs (``--gres=gpu:N``, ``--gpus*``): then a CPU
    fallback would train at CPU speed into the real run directory, so :func:`setup` refuses instead.
    """
    env = os.environ if environ is None else environ
    for name in _SLURM_GPU_VARIABLES:
        value = (env.get(name) or "").strip()
        if not value or value.lower() in ("none", "(null)"):
            continue
        if name in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS"):  # GPU indices: "0" is GPU 0
            return f"this SLURM task holds GPUs ({name}={value})"
        count = value.rsplit(":", 1)[-1]  # counts: "2", "gpu:2", "a100:2"
        if not count.isdigit() or int(count) > 0:
            return f"this SLURM task holds GPUs ({name}={value})"
    return None


#: SLURM's variables for the GPUs of a job, step or task (sbatch/srun output environment).
_SLURM_GPU_VARIABLES = (
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
    "SLURM_GPUS_ON_NODE",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS",
)


def _pick_device(requested: str | None, local_rank: int) -> torch.device:
    """The device for this rank, and never a silent CPU fallback when GPUs were asked for.

    - ``cpu`` or ``cuda:N``: used as given (after :func:`resolve_device`'s checks, :func:`cuda_problem`'s
      included).
    - ``cuda``, or ``None`` inside a SLURM task that holds GPUs (:func:`gpus_expected`): CUDA must work
      (else :class:`DeviceError` naming why); the GPU is ``cuda:LOCAL_RANK`` among the visible devices, or
      ``cuda:0`` when this task sees exactly one (``srun --gpus-per-task``, device cgroups).
    - ``None`` elsewhere: CUDA when it works; CPU when this machine has no usable NVIDIA GPU at all; a GPU
      that is there but that this torch build cannot drive is a :class:`DeviceError` (``--device cpu``
      trains on the CPU anyway), not hours of training at CPU speed.
    """
    if requested is None:
        reason = gpus_expected()
        if reason is None and not torch.cuda.is_available() and _driver_device_count() == 0:
            return torch.device("cpu")  # no NVIDIA GPU at all: the CPU is what this machine has
        problem = cuda_problem()
        if problem is not None:
            if reason is not None:
                raise DeviceError(f"{reason}, but {problem}; refusing to fall back to the CPU")
            raise DeviceError(
                f"{problem} (to train on the CPU anyway: --device cpu, or CUDA_VISIBLE_DEVICES= to hide it)"
            )
        requested = "cuda"
    dev = resolve_device(requested)
    if dev.type == "cpu" or dev.index is not None:
        return dev
    count = torch.cuda.device_count()
    index = 0 if count == 1 else local_rank
    if index >= count:
        raise DeviceError(f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible")
    return torch.device("cuda", index)


def pick_device(requested: str | None = None, local_rank: int | None = None) -> torch.device:
    """The device a process of this job should use (``LOCAL_RANK`` from the environment by default), by the
    rules of :func:`setup`, for callers that need a device but no process group (evaluation jobs)."""
    return _pick_device(requested, _env_int("LOCAL_RANK", 0) if local_rank is None else local_rank)


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
