"""What a SLURM partition allows and what the queue says about a job: the time limit a run asks for, the
partition's limits (``scontrol show partition``, ``sinfo``), job states and pending reasons (``squeue``).

Why: SLURM accepts a job that exceeds its partition's MaxTime or MaxNodes (``EnforcePartLimits=NO``, the
default on many clusters) and leaves it ``PENDING`` for ever with a reason such as ``PartitionTimeLimit``;
submitit only sees "not done", so a launcher that waits for results waits for ever. So a request is checked
against the partition before anything is submitted (:func:`decide`), and a job whose pending reason cannot
clear by waiting is recognised (:func:`never_starts`).

The time limit of a job (:func:`derived_limit_min`): the run's estimated wall time (``estimate_hours`` from
FLOPs for the scale's device, divided over its devices) times :data:`TIME_MARGIN`, rounded up to
:data:`ROUND_MIN` minutes and at least :data:`FLOOR_MIN`. A spec's ``resources.timeout_min`` replaces the
estimate. Above the partition's MaxTime the request is refused, unless the profile sets ``timeout_min``: then
jobs are capped at ``min(profile timeout_min, MaxTime)`` and a run goes in pieces, each stopped by submitit's
signal ``signal_delay_s`` before the limit, checkpointed and requeued; the run resumes (``convit.jobs``).

submitit facts this relies on (read from submitit 1.5's source, ``core/job_environment.py``): the signal comes
``signal_delay_s`` before the limit; a signal after ``min(0.8 T, T - 10 min)`` of run time counts as a
time-out, every other one as a preemption; after ``slurm_max_num_timeout`` (the profile's ``max_requeues``)
time-outs submitit stops requeueing ("timed-out too many times"). So a run in ``k`` pieces needs
``max_requeues >= k - 1``, which :func:`decide` checks.
"""

from __future__ import annotations

import getpass
import math
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "FLOOR_MIN",
    "ROUND_MIN",
    "TIME_MARGIN",
    "LimitError",
    "Partition",
    "QueueError",
    "QueuedJob",
    "cancel",
    "decide",
    "derived_limit_min",
    "format_minutes",
    "known_nodes",
    "never_starts",
    "parse_time",
    "partitions",
    "queue",
]

#: a job asks for this multiple of its run's estimated wall time: the estimate counts FLOPs at an assumed
#: sustained rate (and the loader's measured pace), not start-up, evaluation variance or checkpoint writes.
TIME_MARGIN = 1.5
#: and never less than this many minutes: start-up (imports, the dataset, the first evaluation) takes minutes
#: even for a smoke run, and submitit counts every signal in a job of <= 10 minutes as a time-out. Where the
#: partition's MaxTime is shorter than the floor while the estimate fits, the job asks for MaxTime.
FLOOR_MIN = 15
#: requests are rounded up to a multiple of this many minutes (readable, and as good for backfill).
ROUND_MIN = 5
#: seconds a SLURM client command may take before we give up on it.
_COMMAND_TIMEOUT_S = 30


class QueueError(RuntimeError):
    """A SLURM client command is missing or failed (the message says which and why, in one line)."""


class LimitError(ValueError):
    """A request that does not fit the partition: one line naming the run, the limit, the request, the fix."""


# -------------------------------------------------------------------------------------------------- times
def parse_time(text: str) -> int | None:
    """Minutes in a SLURM time (``30``, ``5:00``, ``02:00:00``, ``1-12``, ``7-00:00:00``); None for
    ``UNLIMITED``/``INFINITE``/``NONE``/``N/A``. Seconds round up: a limit of 90 s is 2 minutes."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A", "") or text.upper().startswith("("):
        return None
    days = 0
    if "-" in text:
        head, text = text.split("-", 1)
        days = int(head)
        parts = [int(p) for p in text.split(":")]
        hours, minutes, seconds = (parts + [0, 0])[:3]  # D-H, D-H:M, D-H:M:S
    else:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 1:  # minutes
            hours, minutes, seconds = 0, parts[0], 0
        elif len(parts) == 2:  # minutes:seconds
            hours, minutes, seconds = 0, parts[0], parts[1]
        else:
            hours, minutes, seconds = parts[:3]
    return days * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def format_minutes(minutes: int | None) -> str:
    """``0:05:00``, ``2:00:00``, ``1-00:00:00`` (SLURM's own layout); ``UNLIMITED`` for None."""
    if minutes is None:
        return "UNLIMITED"
    days, rest = divmod(int(minutes), 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours}:{mins:02d}:00"


def derived_limit_min(wall_hours: float) -> tuple[int, int]:
    """(time limit to ask for, minutes the run needs) for an estimated wall time: the need is the estimate
    times :data:`TIME_MARGIN`; the limit is that rounded up to :data:`ROUND_MIN`, at least
    :data:`FLOOR_MIN`."""
    needed = max(1, math.ceil(wall_hours * 60 * TIME_MARGIN))
    return max(FLOOR_MIN, math.ceil(needed / ROUND_MIN) * ROUND_MIN), needed


# ------------------------------------------------------------------------------------------- partitions
@dataclass(frozen=True)
class Partition:
    """The limits of one partition that decide whether a job can ever start there."""

    name: str
    #: MaxTime in minutes; None: unlimited.
    max_time_min: int | None
    #: DefaultTime in minutes (what a job without --time gets); None: MaxTime.
    default_time_min: int | None
    #: MaxNodes a job; None: unlimited.
    max_nodes: int | None
    total_nodes: int
    #: the most GPUs one node of the partition has (gres ``gpu``), 0 on CPU-only partitions.
    gpus_per_node: int
    state: str
    default: bool


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise QueueError(f"{cmd[0]} not found: is this a SLURM login node?") from None
    except subprocess.TimeoutExpired:
        raise QueueError(f"'{' '.join(cmd)}' did not answer in {_COMMAND_TIMEOUT_S} s") from None
    if out.returncode != 0:
        first = (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[0]
        raise QueueError(f"'{' '.join(cmd)}' failed: {first}")
    return out.stdout


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S*)", line))


def _gpus(gres: str) -> int:
    """GPUs in a node's gres string (``gpu:8``, ``gpu:a100:4(S:0-1)``, ``gpu:a:2,gpu:b:1``, ``(null)``)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        parts = item.strip().split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_partitions(scontrol: str, sinfo: str) -> dict[str, Partition]:
    """Partitions from ``scontrol show partition -o`` and ``sinfo -h -N -o '%N|%P|%G'`` output."""
    gpus: dict[str, int] = {}
    for line in sinfo.splitlines():
        cells = line.split("|")
        if len(cells) >= 3:
            name = cells[1].rstrip("*")
            gpus[name] = max(gpus.get(name, 0), _gpus(cells[2]))
    found = {}
    for line in scontrol.splitlines():
        f = _fields(line)
        if "PartitionName" not in f:
            continue
        name = f["PartitionName"]
        max_nodes = f.get("MaxNodes", "UNLIMITED")
        found[name] = Partition(
            name=name,
            max_time_min=parse_time(f.get("MaxTime", "UNLIMITED")),
            default_time_min=parse_time(f.get("DefaultTime", "NONE")),
            max_nodes=None if not max_nodes.isdigit() else int(max_nodes),
            total_nodes=int(f.get("TotalNodes", "0") or 0),
            gpus_per_node=gpus.get(name, 0),
            state=f.get("State", "UNKNOWN"),
            default=f.get("Default", "NO") == "YES",
        )
    return found


def partitions() -> dict[str, Partition]:
    """Every partition of the cluster this machine submits to (raises :class:`QueueError`)."""
    return parse_partitions(
        _run(["scontrol", "show", "partition", "-o"]), _run(["sinfo", "-h", "-N", "-o", "%N|%P|%G"])
    )


def known_nodes() -> set[str]:
    """Names of the cluster's nodes (``sinfo -N``)."""
    return {line.split("|")[0] for line in _run(["sinfo", "-h", "-N", "-o", "%N|"]).split()}


def find_partition(name: str | None, known: dict[str, Partition]) -> Partition | None:
    """The partition a job goes to: ``name``, or the cluster's default one for None (None if it has none)."""
    if name is None:
        return next((p for p in known.values() if p.default), None)
    if name not in known:
        raise LimitError(
            f"partition {name!r} does not exist on this cluster; its partitions: {', '.join(sorted(known))} "
            f"(set 'partition' in the profile or pass --partition)"
        )
    return known[name]


# --------------------------------------------------------------------------------------------- decisions
@dataclass(frozen=True)
class Decision:
    """The time limit a job asks for, how it was found, and when it was capped what that means (else "")."""

    minutes: int
    why: str = ""
    note: str = ""


def decide(
    run: str,
    *,
    minutes: int,
    needed: int,
    why: str,
    nodes: int,
    gpus_per_node: int,
    partition: Partition | None,
    cap_min: int | None,
    max_requeues: int,
    signal_delay_s: int,
) -> Decision:
    """Check one job against its partition and choose its time limit, or raise :class:`LimitError`.

    ``minutes`` is what the run would ask (the derived limit, or the spec's own), ``needed`` what it needs
    (the estimate with its margin, without the floor; the spec's own value when it sets one) and ``why`` how
    that was found. ``cap_min`` is the profile's ``timeout_min``: its presence allows runs longer than a job
    (pieces that resume after each requeue). ``partition`` None: its limits are unknown, nothing is checked.
    """
    name = partition.name if partition is not None else None
    if partition is not None:
        if partition.max_nodes is not None and nodes > partition.max_nodes:
            raise LimitError(
                f"{run} asks for {nodes} nodes, over partition {name}'s MaxNodes={partition.max_nodes} a "
                f"job: choose a partition with more nodes (--partition) or a smaller --scale"
            )
        if nodes > partition.total_nodes:
            raise LimitError(
                f"{run} asks for {nodes} nodes, partition {name} has {partition.total_nodes}: choose a "
                f"partition with more nodes (--partition) or a smaller --scale"
            )
        if gpus_per_node > partition.gpus_per_node:
            raise LimitError(
                f"{run} asks for {gpus_per_node} GPUs per node, partition {name}'s nodes have at most "
                f"{partition.gpus_per_node} (sinfo -p {name} -o %G): set gpus_per_node in the profile to "
                f"what its nodes have, or choose a GPU partition (--partition)"
            )
    hard = partition.max_time_min if partition is not None else None
    ask = minutes
    note = ""
    by = f"partition {name}'s MaxTime"
    if cap_min is not None:
        piece = cap_min if hard is None else min(cap_min, hard)
        if hard is None or cap_min <= hard:
            by = "the profile's timeout_min"
        if minutes > piece:
            ask = piece
            if needed > piece:
                usable = piece - signal_delay_s / 60
                pieces = math.ceil(needed / usable) if usable > 0 else math.inf
                if pieces - 1 > max_requeues:
                    raise LimitError(
                        f"{run} needs {format_minutes(needed)} ({why}); capped at {by} of "
                        f"{format_minutes(piece)} it runs in {pieces} jobs, but the profile allows "
                        f"max_requeues={max_requeues}: raise max_requeues to at least {pieces - 1}"
                    )
                note = (
                    f"ask {format_minutes(minutes)} ({why}), over {by} of {format_minutes(piece)}: each job "
                    f"stops at {format_minutes(piece)} and the run resumes after a requeue (about {pieces} "
                    f"jobs a run; max_requeues {max_requeues})"
                )
    elif hard is not None and minutes > hard:
        if needed > hard:
            raise LimitError(
                f"{run} asks for a time limit of {format_minutes(minutes)} ({why}), over partition {name}'s "
                f"MaxTime of {format_minutes(hard)}: set timeout_min: {hard} in the profile to run it in "
                f"jobs of that length that resume after each requeue, or choose a partition with a longer "
                f"MaxTime (--partition)"
            )
        ask = hard
    if ask * 60 <= signal_delay_s + 60:
        raise LimitError(
            f"{run}: a time limit of {format_minutes(ask)} leaves no time to train before submitit's signal, "
            f"which the profile sends signal_delay_s={signal_delay_s} s before it: lower signal_delay_s or "
            f"choose a partition with a longer MaxTime"
        )
    if ask != minutes and not note:
        why = f"{why}, at most {by}"  # only the floor was over it: the run itself fits
    return Decision(ask, why, note)


# ------------------------------------------------------------------------------------------------- queue
@dataclass(frozen=True)
class QueuedJob:
    """One line of ``squeue``: an array task is one job (``123_4``)."""

    job_id: str
    state: str
    reason: str
    time_limit: str
    partition: str


def parse_queue(text: str) -> dict[str, QueuedJob]:
    """``squeue -h -r -o '%i|%T|%r|%l|%P'`` output by job id."""
    jobs = {}
    for line in text.splitlines():
        cells = line.split("|")
        if len(cells) >= 5:
            job = QueuedJob(*(c.strip() for c in cells[:5]))
            jobs[job.job_id] = job
    return jobs


def queue() -> dict[str, QueuedJob]:
    """This user's queued and running jobs, array tasks one by one (raises :class:`QueueError`).

    ``-u USER`` rather than ``--me``, which SLURM before 20.11 lacks."""
    user = getpass.getuser()
    return parse_queue(_run(["squeue", "-u", user, "-h", "-r", "-o", "%i|%T|%r|%l|%P"]))


def job_state(job_id: str) -> str:
    """The scheduler's own state of one job now (``squeue -j``, not accounting); "" once the job has left
    the queue (squeue keeps a finished job for MinJobAge, 300 s by default). Raises :class:`QueueError`
    when squeue cannot answer.

    Why not sacct: after a node failure accounting shows the failed attempt's NODE_FAIL for a few seconds
    before the requeued attempt's PENDING, and submitit's watcher freezes the first final state it reads;
    the scheduler itself goes from RUNNING (or COMPLETING) straight to PENDING."""
    try:
        out = _run(["squeue", "-h", "-j", job_id, "-o", "%T"])
    except QueueError as error:
        if "Invalid job id" in str(error):  # purged after MinJobAge
            return ""
        raise
    states = [line.strip() for line in out.splitlines() if line.strip()]
    return states[0] if states else ""


def cancel(job_ids: list[str]) -> None:
    """``scancel`` these jobs (array tasks by ``ARRAY_TASK`` id); a job already gone is not an error."""
    if job_ids:
        try:
            _run(["scancel", *job_ids])
        except QueueError:
            pass


#: pending reasons that no amount of waiting clears, with what to do about each. Keys are SLURM's reason
#: names; ``{p}`` is the partition, ``{limit}`` the job's time limit, ``{max_time}`` the partition's MaxTime.
_HOPELESS = {
    "PartitionTimeLimit": "its time limit {limit} is over partition {p}'s MaxTime {max_time}: relaunch "
    "(the launcher then fits the limit to the partition), or set timeout_min in the profile",
    "PartitionNodeLimit": "it asks for more nodes than partition {p} allows a job (MaxNodes, MinNodes): "
    "choose a partition with more nodes (--partition) or a smaller --scale",
    "PartitionConfig": "it asks for more than partition {p}'s configuration allows (scontrol show partition "
    "{p}): change the profile or --partition",
    "QOSMaxWallDurationPerJobLimit": "its time limit {limit} is over its QOS's MaxWall (sacctmgr show qos): "
    "set timeout_min in the profile at or below MaxWall, or another qos",
    "InvalidAccount": "its account is not valid for this user (sacctmgr show assoc user=$USER): fix "
    "'account' in the profile",
    "InvalidQOS": "its QOS is not valid for this user (sacctmgr show assoc user=$USER format=qos): fix 'qos' "
    "in the profile",
    "AccountNotAllowed": "partition {p} does not allow its account (AllowAccounts): fix 'account' or choose "
    "another partition",
    "QOSNotAllowed": "partition {p} does not allow its QOS (AllowQos): fix 'qos' or choose another partition",
    "BadConstraints": "no node of partition {p} has what it asks for (features, GPUs, memory, CPUs: sinfo -p "
    "{p} -o '%N %f %G %m %c'): fix constraint / gpus_per_node / mem_per_gpu_gb in the profile",
    "DependencyNeverSatisfied": "a job it depends on did not succeed: cancel it and resubmit",
}
#: per-job limits of a QOS or an association (``QOSMaxNodePerJobLimit``, ``AssocMaxWallDurationPerJobLimit``,
#: ``QOSMaxGRESPerJob``, ...): a job over one never starts; the Grp*/per-user ones clear as other jobs end.
_PER_JOB = re.compile(r"^(QOS|Assoc)Max\w*PerJob\w*$")


def never_starts(
    job: QueuedJob,
    partition: Callable[[str], Partition | None] | None = None,
    nodes: Callable[[], set[str]] | None = None,
) -> str | None:
    """Why a pending job can never start, with the fix, or None while waiting may still help.

    ``partition`` looks a partition up (its current MaxTime goes into the message); ``nodes`` gives the
    cluster's node names, for ``ReqNodeNotAvail`` naming a node that does not exist (a node that exists but is
    down, drained or reserved may come back: that reason is not hopeless).
    """
    if job.state != "PENDING":
        return None
    reason = job.reason.split(",")[0].strip()
    info = partition(job.partition) if partition is not None else None
    values = {
        "p": job.partition,
        "limit": job.time_limit,
        "max_time": format_minutes(info.max_time_min) if info is not None else "?",
    }
    if reason in _HOPELESS:
        return _HOPELESS[reason].format(**values)
    if _PER_JOB.match(reason):
        return (
            f"it exceeds a per-job limit of its {'QOS' if reason.startswith('QOS') else 'association'} "
            f"(sacctmgr show qos / show assoc): ask for less (time, nodes, GPUs) or another qos/account"
        )
    if reason == "ReqNodeNotAvail" and nodes is not None:
        match = re.search(r"UnavailableNodes:(\S*)", job.reason)
        # plain names only: a hostlist expression (vm[1-3]) cannot be told apart without expanding it
        named = [n for n in (match.group(1).split(",") if match else []) if n and not set("[]") & set(n)]
        try:
            missing = [n for n in named if n not in nodes()]
        except QueueError:
            missing = []
        if missing:
            return f"it asks for node(s) {', '.join(missing)}, which this cluster does not have: fix the job"
    return None
