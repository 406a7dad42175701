"""Submitit glue: cluster profiles, the picklable training job, array submission and waiting.

Size: ~650 lines, one concept (submitit glue): the profile, the job callable, submission
and waiting are the four parts of getting a run onto a backend and back.

One callable, :class:`TrainJob`, runs a :class:`~convit.spec.RunSpec` through ``convit.train.run`` on every
submitit backend: ``debug`` (in this process), ``local`` (subprocesses on this machine) and ``slurm``. Cluster
facts (partition, account, ...) live in small YAML profiles (``slurm/profiles/*.yaml``), never in code.

Preemption and time limits. Submitit's own USR2 handler calls ``checkpoint()``, requeues and exits at once,
wherever the main thread happens to be, which can cut an optimiser step or a checkpoint write in half.
:class:`TrainJob` therefore swaps in a handler that only raises a flag; ``run()`` polls the flag after each
optimiser step, saves a checkpoint at that step boundary and raises ``Preempted``; only then is submitit's
original handler invoked, so submitit still decides between requeue and "timed out too many times" and counts
timeouts as it always does. Any other restart (``scontrol requeue``, a node failure) resumes from the run
directory because ``run()`` always resumes from its latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import sys
import threading
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from convit.spec import RunSpec

__all__ = [
    "CLUSTERS",
    "JobError",
    "Profile",
    "ProfileError",
    "TrainJob",
    "check_cpus",
    "cpus_needed",
    "failure_line",
    "fresh_folder",
    "load_profile",
    "srun_args",
    "submit",
    "visible_gpus",
    "wait",
]

#: submitit backends a launch may use.
CLUSTERS = ("debug", "local", "slurm")
#: requeues allowed when no profile says otherwise (submitit's own default).
DEFAULT_MAX_REQUEUES = 3
#: how long a rank that has saved and handed over waits to be killed by the requeue before giving up.
_AWAIT_KILL_S = 300.0


class ProfileError(ValueError):
    """A cluster profile is missing, unreadable, or has an unknown, missing or mistyped field."""


class JobError(RuntimeError):
    """A submission was refused or a submitted job failed (the message carries its log tail)."""


# ------------------------------------------------------------------------------------------------ profiles
@dataclass(frozen=True)
class Profile:
    """Where and how jobs run on one cluster. ``None`` means "do not pass it": the cluster default applies.

    Required fields must appear in the file (they may be ``null`` where the type allows), so every profile
    states the decisions that matter; optional ones default to ``None``.
    """

    #: SLURM partition (``--partition``).
    partition: str | None
    #: GPUs in one node of this partition; a request for more per node is refused before submission.
    gpus_per_node: int
    #: CPUs per task; there is one task per GPU (and per process on CPU-only nodes).
    cpus_per_gpu: int
    #: how many times submitit may requeue a job after a time limit (``slurm_max_num_timeout``).
    max_requeues: int
    #: seconds between submitit's USR2 and the time limit: enough for one optimiser step plus a save.
    signal_delay_s: int
    #: the partition's wall-clock limit in minutes; a job asks for min(its own timeout, this).
    timeout_min: int | None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    #: host memory per task (per GPU), GB.
    mem_per_gpu_gb: float | None = None
    #: at most this many array members run at once (``--array=...%N``).
    array_parallelism: int | None = None
    #: shell lines for sbatch to run before ``srun`` (``module load ...``, ``source .venv/bin/activate``).
    setup: tuple[str, ...] = ()
    #: the file this profile came from (filled by :func:`load_profile`, not read from YAML).
    source: str = dataclasses.field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("gpus_per_node", "max_requeues", "signal_delay_s"):
            if getattr(self, name) < 0:
                raise ProfileError(f"{self.source or 'profile'}: {name} must be >= 0")
        for name in ("cpus_per_gpu", "timeout_min", "array_parallelism", "mem_per_gpu_gb"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ProfileError(f"{self.source or 'profile'}: {name} must be positive")


_INTERNAL_FIELDS = {"source"}


def load_profile(path: str | Path) -> Profile:
    """Read and validate a YAML profile; any mistake is a one-line :class:`ProfileError` (field, file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile {path} not found (see slurm/profiles/example.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ProfileError(f"{path}: not valid YAML ({first})") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of field: value, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(Profile) if f.name not in _INTERNAL_FIELDS}
    hints = typing.get_type_hints(Profile)
    unknown = sorted(str(key) for key in data if key not in fields)
    if unknown:
        raise ProfileError(f"{path}: unknown field {unknown[0]!r}; valid fields are {', '.join(fields)}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in data:
            raise ProfileError(f"{path}: missing required field {name!r} (null means the cluster default)")
    values = {name: _check_field(name, hints[name], value, path) for name, value in data.items()}
    return Profile(**values, source=str(path))


def _check_field(name: str, hint: Any, value: Any, path: Path) -> Any:
    """Coerce one YAML value to the field's type, or raise a one-line error naming field and file."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ProfileError(f"{path}: field {name!r} may not be null")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if typing.get_origin(base) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ProfileError(f"{path}: field {name!r} must be a list of strings, got {value!r}")
        return tuple(value)
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            return float(value)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base)
    if not ok:
        raise ProfileError(f"{path}: field {name!r} must be {base.__name__}, got {value!r}")
    return value


# ------------------------------------------------------------------------------------------------ the job
class _StopFlag:
    """Signal handlers that only record a stop request, so training stops at an optimiser-step boundary.

    USR2 (submitit's preemption/time-limit signal, ``SUBMITIT_PREEMPT_SIGNAL``) means "save and requeue":
    after the save, submitit's original handler takes over. SIGTERM (from ``scancel``, ``scontrol requeue``,
    plain preemption, before SIGKILL) means "save, SLURM decides what comes next": we save and then wait to be
    killed, never requeue ourselves (a cancelled job must stay cancelled) and never write a result (a
    requeued job's result would otherwise read as a failure to the waiting client).
    """

    def __init__(self, usr_sig: signal.Signals) -> None:
        self.usr_sig = usr_sig
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return bool(self.received)

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        self.received.append(signum)
        print(
            f"[convit.jobs] caught {signal.Signals(signum).name}: stopping after the current optimiser step",
            file=sys.stderr,
            flush=True,
        )

    def install(self) -> bool:
        """Swap the handlers in; False (and nothing changed) outside the main thread, where Python cannot."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in (self.usr_sig, signal.SIGTERM):
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return True

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def original_usr_handler(self) -> Callable[[int, types.FrameType | None], Any] | None:
        handler = self._previous.get(self.usr_sig)
        return handler if callable(handler) else None


def _job_environment() -> submitit.JobEnvironment | None:
    """The submitit environment this process runs in, or None outside submitit (plain Python, tests)."""
    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None


def export_distributed_env() -> bool:
    """In a multi-task submitit job, export what ``init_process_group("env://")`` reads; True if it did.

    RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT, but not CUDA_VISIBLE_DEVICES: submitit's
    ``export()`` would set it to str(LOCAL_RANK), i.e. physical GPU r for rank r whatever GPUs SLURM gave the
    job (4-7, say), and no GPU at all for ranks >= 1 of a task that sees one; SLURM's own assignment stays,
    and convit.distributed picks cuda:LOCAL_RANK in it. Every job kind (training, eval-only) calls this.
    """
    env = _job_environment()
    if env is None or env.num_tasks <= 1:
        return False
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


class TrainJob:
    """A picklable, submitit-compatible training run: ``TrainJob(spec, workdir, data_root, teacher)()``.

    It holds only its constructor arguments and never changes them, so what submitit pickles, requeues and
    pickles again is always the run the user asked for (the original code rescaled lr in place on each
    requeue). Resuming is ``run()``'s job: it finds the latest checkpoint in ``workdir``. ``teacher`` is the
    distillation teacher's checkpoint file (distilled specs only): a path on the machine, like ``data_root``,
    so it travels with the job rather than in the spec.
    """

    #: class-level defaults: a job pickled before ``teacher`` / ``device`` existed unpickles as an undistilled
    #: job that picks its device itself
    teacher: Path | None = None
    device: str | None = None

    def __init__(
        self,
        spec: RunSpec,
        workdir: str | Path,
        data_root: str | Path | None = None,
        teacher: str | Path | None = None,
        device: str | None = None,
    ) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.data_root = None if data_root is None else Path(data_root)
        self.teacher = None if teacher is None else Path(teacher)
        #: ``run()``'s device; :func:`submit` sets ``"cuda"`` on the jobs it submits with GPUs, so a job whose
        #: GPUs turn out unusable stops with a DeviceError instead of training on the CPU.
        self.device = device

    def __repr__(self) -> str:
        extra = "" if self.teacher is None else f", teacher={str(self.teacher)!r}"
        extra += "" if self.device is None else f", device={self.device!r}"
        return f"TrainJob(workdir={str(self.workdir)!r}, spec={self.spec.digest()}{extra})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.spec == self.spec  # type: ignore[attr-defined]
            and other.workdir == self.workdir  # type: ignore[attr-defined]
            and other.data_root == self.data_root  # type: ignore[attr-defined]
            and other.teacher == self.teacher  # type: ignore[attr-defined]
            and other.device == self.device  # type: ignore[attr-defined]
        )

    def __hash__(self) -> int:
        return hash(
            (self.spec.to_json(), str(self.workdir), str(self.data_root), str(self.teacher), self.device)
        )

    # Subclasses (tests) may swap the engine; the real one is imported lazily so that submitting does not
    # need torch in the submitting process's hot path.
    def _engine(self) -> tuple[Callable[..., dict], type[BaseException]]:
        from convit import train

        return train.run, train.Preempted

    def __call__(self) -> dict:
        env = _job_environment()
        export_distributed_env()
        run, preempted = self._engine()
        flag = _StopFlag(submitit.JobEnvironment._usr_sig())
        installed = flag.install()
        # teacher=/device= only when set: engines that predate them (and test doubles) keep working
        extra: dict[str, Any] = {} if self.teacher is None else {"teacher": self.teacher}
        if self.device is not None:
            extra["device"] = self.device
        try:
            return run(
                self.spec,
                self.workdir,
                data_root=self.data_root,
                should_stop=flag if installed else None,
                **extra,
            )
        except preempted:
            # The state is saved at a step boundary on every rank; now let SLURM/submitit do the rest.
            self._after_preemption(flag, env)
            raise
        finally:
            flag.restore()

    def _after_preemption(self, flag: _StopFlag, env: submitit.JobEnvironment | None) -> None:
        """Hand over to submitit (USR2) or wait to be killed (SIGTERM); return only when nobody will act."""
        original = flag.original_usr_handler()
        if flag.usr_sig in flag.received and original is not None:
            # submitit's SignalHandler.checkpoint_and_try_requeue: on global rank 0 it calls our checkpoint(),
            # counts a timeout when the signal came late, runs 'scontrol requeue' and sys.exit()s; when
            # requeues are exhausted it raises UncompletedJobError (the job then ends with that error). On
            # other ranks it only logs and returns: they wait below for the requeue to kill them.
            original(flag.usr_sig, None)
        if env is not None and env.cluster == "slurm":
            # Writing a result now would tell the waiting client the job ended while SLURM is requeueing
            # or cancelling it; SLURM kills this process within KillWait seconds.
            deadline = time.monotonic() + _AWAIT_KILL_S
            while time.monotonic() < deadline:
                time.sleep(1.0)
        # Outside SLURM (or if nothing killed us) Preempted propagates: the run can simply be relaunched.

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Called by submitit on preemption or time-out: an identical fresh job; run() resumes by itself."""
        return submitit.helpers.DelayedSubmission(
            type(self)(self.spec, self.workdir, self.data_root, self.teacher, self.device)
        )


# ------------------------------------------------------------------------------------------------ submission
def fresh_folder(root: str | Path) -> Path:
    """A new, empty submitit folder under ``root``, unique per launch.

    submitit names files by job id; a reused folder can hand an old ``<id>_0_result.pkl`` to a new job with
    the same id (ids restart when a scheduler's state is reset), so every launch gets its own folder.
    """
    root = Path(root)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        folder = root / f"{stamp}-{secrets.token_hex(3)}"
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue


def submit(
    jobs: Sequence[TrainJob],
    *,
    cluster: str,
    folder: str | Path,
    profile: Profile | None = None,
    tasks_per_node: int = 1,
    nodes: int = 1,
    gpus_per_node: int = 0,
    timeout_min: int = 60,
    name: str = "convit",
    cpus_per_task: int | None = None,
) -> list[submitit.Job]:
    """Submit ``jobs`` through submitit; several jobs on SLURM go out as ONE job array.

    ``folder`` is a root for submitit's logs and pickles: each call makes a fresh subfolder in it (see
    :func:`fresh_folder`; ``jobs[0].paths.folder`` tells where). One task per GPU; on CPU-only nodes
    (``gpus_per_node=0``) ``tasks_per_node`` processes share the node's CPUs and train over gloo.

    CPUs (SLURM): ``cpus_per_task`` defaults to the profile's ``cpus_per_gpu``, or without a profile to what
    the jobs need, their DataLoader workers + 1 (the training process); fewer than that is refused here in one
    line, and the number is passed to ``srun`` too (srun does not inherit sbatch's ``--cpus-per-task`` on
    SLURM 22.05-23.02, so the step would get 1 CPU per task). A job with several tasks runs under
    ``srun --kill-on-bad-exit=1``: one crashed rank ends the step instead of leaving the others blocked in a
    collective until the NCCL timeout.

    GPUs: :class:`TrainJob` s submitted with ``gpus_per_node > 0`` are sent with ``device="cuda"``, so an
    unusable GPU is a one-line DeviceError in the job rather than a silent CPU run. On the ``local``
    executor every job gets its own ``gpus_per_node`` GPUs out of the visible ones (``CUDA_VISIBLE_DEVICES``,
    else all of them), away from the GPUs of local jobs this process submitted that are still running;
    submitit alone would put every job on GPUs 0..N-1 and ignore the user's ``CUDA_VISIBLE_DEVICES``.
    """
    if cluster not in CLUSTERS:
        raise JobError(f"unknown cluster {cluster!r}; choose one of {', '.join(CLUSTERS)}")
    if not jobs:
        return []
    if tasks_per_node < 1 or nodes < 1 or gpus_per_node < 0 or timeout_min < 1:
        raise JobError("tasks_per_node and nodes must be >= 1, gpus_per_node >= 0, timeout_min >= 1")
    if gpus_per_node and tasks_per_node != gpus_per_node:
        raise JobError(f"one task per GPU: tasks_per_node ({tasks_per_node}) must equal gpus_per_node")
    if cluster != "slurm" and nodes != 1:
        raise JobError(f"the {cluster} executor runs on this machine only: nodes must be 1, got {nodes}")
    if cluster == "debug" and tasks_per_node != 1:
        raise JobError("the debug executor runs one task in this process: use --cluster local for several")
    if profile is not None and profile.gpus_per_node < gpus_per_node:
        raise JobError(
            f"{gpus_per_node} GPUs per node requested, profile {profile.source} has {profile.gpus_per_node}"
        )
    max_requeues = profile.max_requeues if profile is not None else DEFAULT_MAX_REQUEUES
    if profile is not None and profile.timeout_min is not None:
        timeout_min = min(timeout_min, profile.timeout_min)
    cpus = cpus_per_task or (profile.cpus_per_gpu if profile is not None else cpus_needed(jobs))
    if cluster == "slurm":
        check_cpus(jobs, cpus, profile if cpus_per_task is None else None)
    if gpus_per_node:
        jobs = [_with_device(job, "cuda") for job in jobs]
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": timeout_min,
        "nodes": nodes,
        "tasks_per_node": tasks_per_node,
        "cpus_per_task": cpus,
    }
    if cluster == "local":
        return _submit_local(jobs, fresh_folder(folder), params, gpus_per_node, max_requeues)

    executor = submitit.AutoExecutor(
        folder=fresh_folder(folder),
        cluster=cluster,
        slurm_max_num_timeout=max_requeues,
        local_max_num_timeout=max_requeues,
    )
    if cluster == "slurm":
        if gpus_per_node:
            params["slurm_gres"] = f"gpu:{gpus_per_node}"
        params["slurm_srun_args"] = srun_args(cpus, nodes * tasks_per_node)
        if profile is not None:
            params.update(_slurm_profile_parameters(profile, len(jobs)))
            if profile.mem_per_gpu_gb is not None:
                params["mem_gb"] = profile.mem_per_gpu_gb * tasks_per_node
    executor.update_parameters(**params)

    if len(jobs) == 1:
        return [executor.submit(jobs[0])]
    submitted = []
    with executor.batch():
        for job in jobs:
            submitted.append(executor.submit(job))
    return submitted


def srun_args(cpus_per_task: int, num_tasks: int) -> list[str]:
    """The options submitit's ``srun`` line needs: the CPUs per task (not inherited from sbatch on SLURM
    22.05-23.02) and, for several tasks, ``--kill-on-bad-exit=1`` (a crashed rank ends the whole step)."""
    args = [f"--cpus-per-task={cpus_per_task}"]
    if num_tasks > 1:
        args.append("--kill-on-bad-exit=1")
    return args


def cpus_needed(jobs: Sequence[Any]) -> int:
    """CPUs one task of these jobs needs: its DataLoader workers + 1 for the training process itself."""
    workers = [job.spec.resources.workers for job in jobs if isinstance(getattr(job, "spec", None), RunSpec)]
    return max(workers, default=0) + 1


def check_cpus(jobs: Sequence[Any], cpus_per_task: int, profile: Profile | None = None) -> None:
    """Refuse CPUs per task that cannot feed the jobs' DataLoader workers (workers + 1), in one line."""
    need = cpus_needed(jobs)
    if cpus_per_task >= need:
        return
    source = f"profile {profile.source} (cpus_per_gpu)" if profile is not None else "the submission"
    raise JobError(
        f"{source} gives {cpus_per_task} CPU(s) per task, but these runs use {need - 1} DataLoader worker(s) "
        f"per task and need {need} (workers + 1); raise the CPUs per task or use a scale with fewer workers"
    )


def _with_device(job: Any, device: str) -> Any:
    """A copy of a :class:`TrainJob` that must run on ``device`` (other callables are sent as they are)."""
    if not isinstance(job, TrainJob) or job.device is not None:
        return job
    return type(job)(job.spec, job.workdir, job.data_root, job.teacher, device)


# Local GPU slots: the GPUs each still-running local job of this process holds (so a refilled slot of
# ``launch.py --parallel N`` gets GPUs no running job uses).
_LOCAL_GPUS: list[tuple[submitit.Job, tuple[int, ...]]] = []
_LOCAL_GPUS_LOCK = threading.Lock()


def visible_gpus() -> list[int]:
    """Indices of the GPUs this process may hand to local jobs: ``CUDA_VISIBLE_DEVICES`` if set (as CUDA
    reads it: up to the first negative entry), else every GPU torch sees."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        import torch

        return list(range(torch.cuda.device_count()))
    indices: list[int] = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        try:
            index = int(entry)
        except ValueError:
            raise JobError(
                f"CUDA_VISIBLE_DEVICES={value!r} names GPUs by UUID; the local executor hands out GPU "
                "indices: list them by index (nvidia-smi -L shows both)"
            ) from None
        if index < 0:
            break
        indices.append(index)
    return indices


def _local_slots(count: int, gpus_per_node: int) -> list[tuple[int, ...]]:
    """GPUs for ``count`` new local jobs of ``gpus_per_node`` GPUs each, none held by a running local job."""
    with _LOCAL_GPUS_LOCK:
        _LOCAL_GPUS[:] = [(job, gpus) for job, gpus in _LOCAL_GPUS if not done(job)]
        busy = {g for _, gpus in _LOCAL_GPUS for g in gpus}
    visible = visible_gpus()
    free = [g for g in visible if g not in busy]
    if len(free) < count * gpus_per_node:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f"CUDA_VISIBLE_DEVICES={shown!r}" if shown is not None else "torch.cuda.device_count()"
        raise JobError(
            f"{count} local run(s) x {gpus_per_node} GPU(s) need {count * gpus_per_node} free GPU(s): "
            f"{len(visible)} visible ({where}), {len(visible) - len(free)} held by running local jobs; "
            "lower --parallel"
        )
    return [tuple(free[i * gpus_per_node : (i + 1) * gpus_per_node]) for i in range(count)]


def _submit_local(
    jobs: Sequence[Any], folder: Path, params: dict[str, Any], gpus_per_node: int, max_requeues: int
) -> list[submitit.Job]:
    """One local job per callable, each with its own GPUs (submitit's ``visible_gpus``, which AutoExecutor
    does not pass through, hence the LocalExecutor itself)."""
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=max_requeues)
    slots = _local_slots(len(jobs), gpus_per_node) if gpus_per_node else [()] * len(jobs)
    submitted = []
    for job, gpus in zip(jobs, slots, strict=True):
        executor.update_parameters(**params, gpus_per_node=gpus_per_node, visible_gpus=gpus)
        handle = executor.submit(job)
        if gpus:
            with _LOCAL_GPUS_LOCK:
                _LOCAL_GPUS.append((handle, gpus))
        submitted.append(handle)
    return submitted


def _slurm_profile_parameters(profile: Profile, count: int) -> dict[str, Any]:
    """The sbatch options a profile sets; None fields are left out so the cluster's defaults apply."""
    params: dict[str, Any] = {"slurm_signal_delay_s": profile.signal_delay_s}
    optional = {
        "slurm_partition": profile.partition,
        "slurm_account": profile.account,
        "slurm_qos": profile.qos,
        "slurm_constraint": profile.constraint,
        "slurm_setup": list(profile.setup) or None,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    if profile.array_parallelism is not None:
        params["slurm_array_parallelism"] = min(profile.array_parallelism, max(count, 1))
    return params


# ------------------------------------------------------------------------------------------------ waiting
def wait(
    jobs: Sequence[submitit.Job],
    *,
    poll_s: float = 2.0,
    timeout_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Any]:
    """Wait for every job, report state changes, and return their results in order.

    A failed job raises :class:`JobError` naming the job and ending with the tail of its stderr, so a
    failure can be read without opening submitit's folder. ``progress`` receives one line per change
    (default: stderr).
    """

    def say(line: str) -> None:
        if progress is not None:
            progress(line)
        else:
            print(line, file=sys.stderr, flush=True)

    start = time.monotonic()
    last: str | None = None
    pending = list(jobs)
    while pending:
        pending = [job for job in pending if not done(job)]
        waiting = {id(job) for job in pending}
        counts: dict[str, int] = {}
        for job in jobs:
            state = _state(job) if id(job) in waiting else "DONE"
            counts[state] = counts.get(state, 0) + 1
        line = f"[convit.jobs] {len(jobs)} job(s): " + ", ".join(
            f"{n} {s}" for s, n in sorted(counts.items())
        )
        if line != last:
            say(line)
            last = line
        if not pending:
            break
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise JobError(
                f"timed out after {timeout_s:.0f} s waiting for {', '.join(j.job_id for j in pending)}"
            )
        time.sleep(poll_s)

    results = []
    for job in jobs:
        try:
            results.append(job.results()[0] if job.num_tasks > 1 else job.result())
        except Exception as error:  # noqa: BLE001 - any job failure becomes one JobError with its log
            raise JobError(_failure_message(job, error)) from error
    return results


#: SLURM job states that are not final but that submitit's watcher counts as final: its list of unfinished
#: states (``SlurmInfoWatcher.is_done``, submitit 1.5: READY, PENDING, RUNNING, UNKNOWN, REQUEUED, COMPLETING,
#: PREEMPTED) lacks these, so ``job.done()`` turns true for a job that SLURM only paused. A SUSPENDED job
#: (``scontrol suspend``, or a partition with PreemptMode=SUSPEND) resumes where it stopped; a held requeue
#: waits for ``scontrol release``; the others are transitions of a live job (squeue(1) "JOB STATE CODES").
UNFINISHED_STATES = frozenset(
    {
        "SUSPENDED",
        "STOPPED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "CONFIGURING",
        "SIGNALING",
        "STAGE_OUT",
        "RESV_DEL_HOLD",
    }
)


#: Final states after which SLURM requeues a job that allows it (JobRequeue=1, the default, or sbatch
#: --requeue): a node failure. Accounting shows the failed attempt's NODE_FAIL for ~2 s (measured on
#: slurm/multinode.sh's cluster) before the requeued attempt's PENDING; a watcher poll in that window takes
#: the job for failed, and submitit's watcher never polls a job again once it has read a final state.
REQUEUED_AFTER = frozenset({"NODE_FAIL"})

#: states of a job still in the queue: submitit's own unfinished list (``InfoWatcher.is_done``) and ours
_LIVE_STATES = UNFINISHED_STATES | {
    "READY",
    "PENDING",
    "RUNNING",
    "UNKNOWN",
    "REQUEUED",
    "COMPLETING",
    "PREEMPTED",
}


def state(job: submitit.Job) -> str:
    """The job's state: submitit's (its watcher reads sacct), except where that may be frozen wrongly.

    Submitit's watcher stops polling a job once it has read a state it counts as final. For a job that was
    only paused (:data:`UNFINISHED_STATES`) or failed on a node and was requeued (:data:`REQUEUED_AFTER`),
    that cached state would never change again, so without a result the scheduler is asked (squeue): a
    suspended job that is then cancelled ends, a requeued one is PENDING, then RUNNING."""
    cached = _state(job).strip()
    live = _live_state(job, cached)
    return live if live else cached


def _live_state(job: submitit.Job, cached: str) -> str | None:
    """squeue's state of ``job`` when its cached state may be frozen wrongly: "" once it left the queue,
    None when there is nothing to ask (not frozen, a result exists, not SLURM) or squeue cannot answer."""
    frozen = _first_word(cached) in UNFINISHED_STATES | REQUEUED_AFTER
    if not frozen or not isinstance(job, submitit.SlurmJob) or job.paths.result_pickle.exists():
        return None
    from convit import slurm_queue

    try:
        return slurm_queue.job_state(job.job_id)
    except slurm_queue.QueueError:
        return None


def done(job: submitit.Job) -> bool:
    """Whether ``job`` has finished: submitit's ``job.done()``, except that a job SLURM only paused
    (:data:`UNFINISHED_STATES`) or requeued after a node failure (:data:`REQUEUED_AFTER`) is not done while
    the scheduler still holds it (:func:`state`). Taking such a job for a finished one would report a run
    that is merely paused, or about to resume on another node, as failed and collect without it."""
    if not job.done():
        return False
    if job.paths.result_pickle.exists():
        return True
    cached = _state(job)
    if _first_word(cached) not in UNFINISHED_STATES | REQUEUED_AFTER:
        return True  # a final state submitit reads right
    live = _live_state(job, cached)
    if live is None:  # squeue cannot answer: a pause is waited for, a node failure stands
        return _first_word(cached) in REQUEUED_AFTER
    return not live or _first_word(live) not in _LIVE_STATES


def _first_word(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``."""
    return state.split()[0].upper() if state.strip() else ""


def _state(job: submitit.Job) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001 - a transient sacct failure must not abort the wait
        return "UNKNOWN"


def failure_line(error: BaseException) -> str:
    """The one line that says why a submitted job failed: for submitit's FailedJobError, the last line of
    the job's traceback (``convit.distributed.DeviceError: ...``), not the log paths its message ends with."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    separators = [i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"-"}]
    if len(separators) >= 2 and separators[1] > separators[0] + 1:
        return lines[separators[1] - 1].strip()
    return lines[-1].strip() if lines else type(error).__name__


def _failure_message(job: submitit.Job, error: BaseException, lines: int = 30) -> str:
    summary = failure_line(error)
    tail = ""
    try:
        text = job.stderr() or ""
        tail = "\n".join(text.rstrip().splitlines()[-lines:])
    except Exception:  # noqa: BLE001 - the log may be missing on a dead node
        pass
    where = f"logs: {job.paths.stderr}"
    return f"job {job.job_id} failed: {summary} ({where})" + (
        f"\n--- stderr tail ---\n{tail}" if tail else ""
    )
