"""Launch a suite of paper experiments, skip what is done, resume what is not, and collect the results.

Size: ~900 lines, one command: planning, time limits, validation, submission and waiting
are the launcher's steps on the same arguments, in the order they run.

    python experiments/launch.py SUITE [--scale S] [--cluster local|debug|slurm] [--profile FILE] ...
    python experiments/launch.py collect SUITE [--scale S]
    python experiments/launch.py list

Each run's directory is ``<workdir>/<suite>/<scale>/<slug>-<spec digest>``: a finished run (``result.json``)
is skipped, an unfinished one resumes (the engine does that), and a changed spec has another digest, hence
another directory, so it never silently continues an old run. Runs with the same resources go out as one
submitit array (one SLURM job array). Machine facts come from options or the environment
(``CONVIT_RUNS``, ``CONVIT_DATA_ROOT``, ``CONVIT_CHECKPOINTS``), never from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a script from the repository root (``python experiments/launch.py``) and as a module.
_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any, NoReturn  # noqa: E402

from convit.spec import RunSpec, SpecError  # noqa: E402
from experiments import SUITES, SuiteError, load_suite  # noqa: E402
from experiments.collect import collect, collected_done, run_dir  # noqa: E402
from experiments.common import (  # noqa: E402
    SCALES,
    ScaleError,
    estimate_hours,
    get_scale,
    is_eval,
    run_name,
    select,
    with_seeds,
)

CLUSTERS = ("local", "debug", "slurm")
#: time limit of local and debug jobs, minutes (unless the spec sets one): no scheduler to pack them, so a
#: limit could only interrupt a run; SLURM jobs get one derived from the run's estimate (convit.slurm_queue).
LOCAL_TIMEOUT_MIN = 24 * 60
#: without a profile: convit.jobs's default requeues and submitit's default signal delay (slurm.py, 90 s)
DEFAULT_MAX_REQUEUES = 3
SUBMITIT_SIGNAL_DELAY_S = 90
#: seconds between progress lines when nothing moved (runs report every minute; see convit.progress)
HEARTBEAT_S = 300.0
DEFAULT_SCALE = "cpu"


class UsageError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump), so every bad input looks the same."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see --help)")


# --------------------------------------------------------------------------------------------- arguments
def _launch_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="launch.py",
        description="Run one suite of ConViT paper experiments (see 'launch.py list'), then collect CSVs.",
        epilog="Also: 'launch.py collect SUITE [--scale S]' and 'launch.py list'.",
    )
    p.add_argument("suite", help=f"the paper artefact to reproduce: {', '.join(SUITES)}")
    p.add_argument(
        "--scale",
        default=DEFAULT_SCALE,
        help=f"budget: {', '.join(SCALES)} (default {DEFAULT_SCALE}; 'paper' = the paper's exact settings)",
    )
    p.add_argument(
        "--cluster",
        default="local",
        help="where runs execute: local (submitit subprocesses on this machine, default), debug (in this "
        "process, one after the other; a failure opens pdb), slurm (a job array; give --profile)",
    )
    p.add_argument(
        "--profile", help="cluster profile YAML (slurm/profiles/*.yaml: partition, GPUs, requeues)"
    )
    p.add_argument("--partition", help="override the profile's SLURM partition")
    p.add_argument(
        "--workdir",
        default=os.environ.get("CONVIT_RUNS", "runs"),
        help="root of the run directories (default $CONVIT_RUNS or ./runs)",
    )
    p.add_argument("--results", default="results", help="root of the collected CSVs (default ./results)")
    p.add_argument("--data-root", help="prepared datasets (default $CONVIT_DATA_ROOT)")
    p.add_argument(
        "--checkpoints",
        default=os.environ.get("CONVIT_CHECKPOINTS"),
        help="folder with the checkpoint files that eval-only entries name (released weights, a "
        "distillation teacher); default $CONVIT_CHECKPOINTS",
    )
    p.add_argument(
        "--only",
        metavar="GLOB[,GLOB...]",
        help="keep runs whose name or variant matches a GLOB ('table3-*'); several: run in the globs' order",
    )
    p.add_argument("--max-runs", type=int, metavar="N", help="launch at most N runs (after --only)")
    p.add_argument("--seeds", type=int, default=1, metavar="N", help="replicate every run over seeds 0..N-1")
    p.add_argument(
        "--tasks-per-node",
        type=int,
        metavar="N",
        help="processes per node on CPU-only nodes (DDP over gloo); GPU runs always use one task per GPU",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="local cluster only: runs at once on this machine, a new one starting as each ends "
        "(default 1; they share its cores)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field in every run, e.g. --set recipe.epochs=5 --set data.fraction=0.2 "
        "(VALUE is JSON, else a string); changes the run names",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and cost; touch no data, no GPU")
    p.add_argument(
        "--check",
        action="store_true",
        help="preflight only (python -m convit.doctor): can this machine and profile run it? exit 1 if not",
    )
    p.add_argument("--no-collect", action="store_true", help="do not write the CSVs at the end")
    p.add_argument(
        "--skip-collected",
        action="store_true",
        help="also skip runs whose row in --results is done (trained on another machine); an evaluation "
        "that needs one's checkpoint still trains it here",
    )
    return p


def _collect_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch.py collect", description="Gather a suite's run directories into results/ CSVs.")
    p.add_argument("suite", help=f"one of {', '.join(SUITES)}")
    p.add_argument("--scale", default=DEFAULT_SCALE, help=f"one of {', '.join(SCALES)}")
    p.add_argument("--workdir", default=os.environ.get("CONVIT_RUNS", "runs"), help="root of the run dirs")
    p.add_argument("--results", default="results", help="root of the CSVs (default ./results)")
    p.add_argument("--seeds", type=int, default=1, help=argparse.SUPPRESS)
    return p


# ------------------------------------------------------------------------------------------------ specs
def _apply_set(spec: RunSpec, assignments: Sequence[str]) -> RunSpec:
    if not assignments:
        return spec
    data = spec.to_dict()
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE (e.g. recipe.epochs=5), got {item!r}")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise UsageError(f"--set {key}: {part!r} is not a section of a run spec")
            node = node[part]
        if parts[-1] not in node and parts[-2:-1] != ["kwargs"] and parts[-2:-1] != ["tags"]:
            raise UsageError(f"--set {key}: unknown field {parts[-1]!r}; valid: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    try:
        return RunSpec.from_dict(data)
    except SpecError as exc:
        raise UsageError(f"--set: {exc}") from None


def _specs(suite: str, scale: str, args: argparse.Namespace) -> list[RunSpec]:
    try:
        module = load_suite(suite)
        get_scale(scale)
        specs = module.specs(scale)
    except (SuiteError, ScaleError) as exc:
        raise UsageError(str(exc)) from None
    specs = [_apply_set(s, getattr(args, "set", [])) for s in specs]
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    return with_seeds(specs, args.seeds)


def _source_run(spec: RunSpec, specs: Sequence[RunSpec]) -> RunSpec | None:
    """The training spec an eval entry with ``checkpoint='run:<variant>'`` evaluates (same seed)."""
    target = str(spec.tags["checkpoint"])[len("run:") :]
    for s in specs:
        if not is_eval(s) and s.tags.get("variant") == target and s.seed == spec.seed:
            return s
    return None


# ------------------------------------------------------------------------------------------------ plan
def _describe(spec: RunSpec, flops: float, limit: str = "") -> str:
    d = spec.data
    data = d.name + (f"[:{d.num_classes}cls]" if d.num_classes else "") + f"@{d.img_size}px"
    data += f" f={d.fraction:g}"
    if is_eval(spec):
        what = f"eval {spec.tags.get('checkpoint')}"
        inter = spec.tags.get("intervention") or {}
        if inter:
            what += " " + ",".join(f"{k}={v}" for k, v in sorted(inter.items()))
        shape = "1x1"
    else:
        what = f"{spec.recipe.epochs} ep, batch {spec.recipe.batch_size}, peak lr {spec.recipe.peak_lr():.3g}"
        shape = f"{spec.resources.nodes}x{spec.resources.gpus_per_node}"
    note = ""
    hours = estimate_hours(spec, flops)
    if hours > estimate_hours(spec, flops, loader=False):
        note += f"  [loader-bound at {spec.resources.workers} workers]"
    if _is_distilled(spec):
        note += f"  [distilled from {_teacher_ref(spec)}]"
    return (
        f"{run_name(spec):44s} {spec.model.name:18s} {data:34s} {what:42s} {shape:>5s} {hours:10.2f} h "
        f"{limit:>11s}{note}"
    )


def _print_plan(
    suite: str,
    scale: str,
    specs: Sequence[RunSpec],
    workdir: str,
    checkpoints: str | None = None,
    limits: _Limits | None = None,
) -> None:
    from convit.slurm_queue import format_minutes

    sc = get_scale(scale)
    print(f"# {suite} at scale {scale}: {len(specs)} run(s); estimated device-hours on {sc.device}")
    print(
        f"# {'run':42s} {'model':18s} {'data':34s} {'what':42s} {'nodes x GPUs':>5s} {'est':>10s} "
        f"{'time limit':>11s}"
    )
    total = 0.0
    for spec in specs:
        state = ""
        d = run_dir(workdir, spec)
        if (d / "result.json").is_file():
            state = "  (done)"
        elif d.exists():
            state = f"  (resumes{_last_report(spec, d)})"
        limit = "refused"
        if limits is not None and run_name(spec) in limits.decisions:
            limit = format_minutes(limits.decisions[run_name(spec)].minutes)
        print(_describe(spec, sc.flops_per_s, limit) + state)
        total += estimate_hours(spec, sc.flops_per_s)
    print(f"total: {len(specs)} run(s), {total:.2f} estimated device-hours on {sc.device}")
    if limits is not None:
        for line in limits.lines():
            print(f"note: {line}")
        for line in limits.errors:
            print(f"refused at launch: {line}")
    teachers = sorted({_teacher_ref(s) for s in specs if _is_distilled(s)})
    for name in teachers:
        if checkpoints:
            path = Path(checkpoints) / name
            where = f"{path} ({'found' if path.is_file() else 'missing'})"
        else:
            where = f"{name} (no --checkpoints given)"
        print(f"note: distilled runs read their teacher from --checkpoints DIR: {where}")


# ------------------------------------------------------------------------------------------ time limits
@dataclasses.dataclass
class _Limits:
    """Each run's time limit (by run name), where it goes, what was capped, and what does not fit."""

    decisions: dict[str, Any]
    where: str = ""
    notes: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    #: capped runs by the note that says how: (note -> run names)
    capped: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        """What the launch output says about the limits: where, how each limit was found, what was capped."""
        out = [self.where] if self.where else []
        out += self.notes
        for note, runs in self.capped.items():
            names = ", ".join(runs[:2]) + (f" and {len(runs) - 2} more" if len(runs) > 2 else "")
            out.append(f"capped: {len(runs)} run(s) ({names}) {note}")
        return out


def _wanted_limit(spec: RunSpec, flops: float) -> tuple[int, int, str]:
    """(limit to ask for, minutes needed, how it was found): the spec's own ``resources.timeout_min``, else
    the estimate on the scale's device, spread over the run's devices, with the margin and the floor."""
    from convit.slurm_queue import FLOOR_MIN, TIME_MARGIN, derived_limit_min

    if spec.resources.timeout_min is not None:
        minutes = spec.resources.timeout_min
        return minutes, minutes, "the spec's resources.timeout_min"
    devices = spec.resources.nodes * max(1, spec.resources.gpus_per_node)
    hours = estimate_hours(spec, flops) / devices
    ask, needed = derived_limit_min(hours)
    why = f"estimate {_hours(hours)} x {TIME_MARGIN:g}"
    if ask == FLOOR_MIN and needed < FLOOR_MIN:
        why += f", at least {FLOOR_MIN} min"
    return ask, needed, why


def _time_limits(specs: Sequence[RunSpec], args: argparse.Namespace, profile: Any) -> _Limits:
    """The time limit of every run's job, checked against the target partition on SLURM.

    Local and debug jobs get the spec's limit or :data:`LOCAL_TIMEOUT_MIN`. SLURM jobs: the spec's, else
    the estimate with its margin and floor (``convit.slurm_queue``); each is checked against the partition's
    MaxTime, MaxNodes and GPUs per node (``scontrol show partition``, ``sinfo``): a run over a limit lands in
    ``errors`` (the launch refuses it before submitting anything), or, when the profile sets
    ``timeout_min``, is capped (a run in several jobs that resume after each requeue).
    """
    from convit import slurm_queue
    from convit.slurm_queue import Decision, LimitError, format_minutes

    if args.cluster != "slurm":
        return _Limits({run_name(s): Decision(s.resources.timeout_min or LOCAL_TIMEOUT_MIN) for s in specs})
    limits = _Limits({})
    flops = get_scale(args.scale).flops_per_s
    partition = None
    name = profile.partition if profile is not None else None
    try:
        partition = slurm_queue.find_partition(name, slurm_queue.partitions())
    except slurm_queue.QueueError as exc:
        limits.notes.append(f"partition limits not checked ({exc})")
    except LimitError as exc:
        limits.errors.append(str(exc))
        return limits
    if partition is not None:
        limits.where = (
            f"partition {partition.name}: MaxTime {format_minutes(partition.max_time_min)}, "
            f"MaxNodes {partition.max_nodes or 'UNLIMITED'} ({partition.total_nodes} node(s)), "
            f"{partition.gpus_per_node} GPU(s) per node"
            + ("" if partition.state == "UP" else f", state {partition.state}: jobs wait until it is UP")
        )
    cap = profile.timeout_min if profile is not None else None
    for spec in specs:
        nodes, gpus, _ = _resources(spec, args, profile)
        ask, needed, why = _wanted_limit(spec, flops)
        try:
            decision = slurm_queue.decide(
                run_name(spec),
                minutes=ask,
                needed=needed,
                why=why,
                nodes=nodes,
                gpus_per_node=gpus,
                partition=partition,
                cap_min=cap,
                max_requeues=profile.max_requeues if profile is not None else DEFAULT_MAX_REQUEUES,
                signal_delay_s=profile.signal_delay_s if profile is not None else SUBMITIT_SIGNAL_DELAY_S,
            )
        except LimitError as exc:
            limits.errors.append(str(exc))
            continue
        limits.decisions[run_name(spec)] = decision
        if decision.note:
            limits.capped.setdefault(decision.note, []).append(run_name(spec))
    return limits


# ------------------------------------------------------------------------------------------- validation
def _validate(specs: Sequence[RunSpec], args: argparse.Namespace) -> Path | None:
    from convit import data, models

    known = set(models.names())
    for spec in specs:
        if spec.model.name not in known:
            raise UsageError(f"unknown model {spec.model.name!r}; valid names: {', '.join(models.names())}")
    if any(_is_distilled(s) for s in specs):
        from convit import train

        if not getattr(train, "SUPPORTS_DISTILLATION", False):
            raise UsageError(
                "distillation runs need engine support that convit.train does not have yet; "
                "run the undistilled baselines with 'launch.py main_table' (see experiments/distillation.py)"
            )
    try:
        root = data.resolve_data_root(args.data_root)
    except data.DataError as exc:
        raise UsageError(f"{exc} (or pass --data-root DIR)") from None
    for name in sorted({s.data.name for s in specs}):
        try:
            data.dataset_info(name)
            prepared = data.is_prepared(name, root)
        except data.DataError as exc:
            raise UsageError(str(exc)) from None
        if not prepared:
            how = (
                "python -m convit.data prepare imagenet --from /path/to/imagenet"
                if name == "imagenet"
                else f"python -m convit.data prepare {name}"
            )
            raise UsageError(f"dataset {name} is not prepared under {root}; run: {how} --root {root}")
    for spec in specs:
        ref = str(spec.tags.get("checkpoint", ""))
        if is_eval(spec) and ref.startswith("file:") and _checkpoint_file(ref, args) is None:
            raise UsageError(
                f"{run_name(spec)} evaluates {ref[5:]}: pass --checkpoints DIR (or set CONVIT_CHECKPOINTS) "
                f"with that file in it"
            )
    for spec in specs:
        if _is_distilled(spec) and not (run_dir(args.workdir, spec) / "result.json").is_file():
            _teacher_path(spec, args)  # a finished run needs no teacher
    return root


def _checkpoint_file(ref: str, args: argparse.Namespace) -> Path | None:
    if not args.checkpoints:
        return None
    path = Path(args.checkpoints) / ref[len("file:") :]
    return path if path.is_file() else None


def _is_distilled(spec: RunSpec) -> bool:
    return bool(spec.tags.get("distillation")) and not is_eval(spec)


def _teacher_ref(spec: RunSpec) -> str:
    """The teacher's file name (``tags["teacher"]`` without its ``file:`` prefix)."""
    return str(spec.tags.get("teacher", "")).removeprefix("file:")


def _teacher_path(spec: RunSpec, args: argparse.Namespace) -> Path:
    """The teacher file of a distilled run, resolved against ``--checkpoints`` like eval-only entries'
    ``file:`` checkpoints; a missing folder or file is one line saying what is expected where."""
    ref = str(spec.tags.get("teacher", ""))
    if not ref.startswith("file:") or not ref[5:]:
        raise UsageError(f"{run_name(spec)}: tags.teacher must be 'file:<name>', got {ref!r}")
    name, model = ref[5:], spec.tags.get("teacher_model", "teacher")
    found = _checkpoint_file(ref, args)
    if found is not None:
        return found
    if not args.checkpoints:
        raise UsageError(
            f"{run_name(spec)} distils from the teacher file {name} ({model}): pass --checkpoints DIR "
            f"(or set CONVIT_CHECKPOINTS) with {name} in it"
        )
    folder = Path(args.checkpoints)
    missing = "which does not exist" if folder.is_dir() else f"but there is no folder {folder}"
    raise UsageError(
        f"{run_name(spec)} distils from {folder / name}, {missing}: put the {model} checkpoint there "
        f"or pass --checkpoints DIR with {name} in it"
    )


# --------------------------------------------------------------------------------------------- running
def _resources(spec: RunSpec, args: argparse.Namespace, profile: Any) -> tuple[int, int, int]:
    """(nodes, gpus_per_node, tasks_per_node) for this machine or cluster."""
    gpus = spec.resources.gpus_per_node
    if args.cluster in ("local", "debug"):
        import torch

        gpus = min(gpus, torch.cuda.device_count())
    elif profile is not None and profile.gpus_per_node == 0:
        gpus = 0
    nodes = spec.resources.nodes
    if args.cluster != "slurm" and nodes > 1:
        raise UsageError(
            f"{run_name(spec)} needs {nodes} nodes: use --cluster slurm --profile FILE (or a smaller --scale)"
        )
    tasks = gpus if gpus else (args.tasks_per_node or 1)
    return nodes, gpus, tasks


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _last_report(spec: RunSpec, d: Path) -> str:
    """``", ep 2/300 41%, reported 3 min ago"`` for a started run (a dry run shows where each run is)."""
    from convit.progress import PROGRESS_FILE, describe

    text, _ = describe(d, spec.recipe.epochs)
    if not text:
        return ""
    marker = d / PROGRESS_FILE if (d / PROGRESS_FILE).is_file() else d / "metrics.jsonl"
    try:
        age = time.time() - marker.stat().st_mtime
    except OSError:
        return f", {text}"
    return f", {text}, reported {_elapsed(age)} ago"


def _progress(pending: Sequence[tuple[RunSpec, Path]], queued: dict[str, Any] | None = None) -> str:
    """Where the jobs are: running ones from ``metrics.jsonl`` and ``progress.json`` (:mod:`convit.progress`),
    pending ones with SLURM's reason (``queued``: run name -> ``slurm_queue.QueuedJob``; None: all running).

    Up to 4 jobs are listed by name; more (a SLURM array) are summarised, with the least advanced one named
    and the pending ones counted by reason.
    """
    from convit import jobs
    from convit.progress import describe

    waiting: dict[str, str] = {}
    paused: dict[str, str] = {}  # SUSPENDED and the like (jobs.UNFINISHED_STATES): alive, not training
    for spec, _ in pending:
        job = (queued or {}).get(run_name(spec))
        if job is not None and job.state == "PENDING":
            waiting[run_name(spec)] = "" if job.reason in ("None", "") else job.reason
        elif job is not None and job.state in jobs.UNFINISHED_STATES:
            paused[run_name(spec)] = job.state
    states = [(run_name(s), *describe(d, s.recipe.epochs)) for s, d in pending if run_name(s) not in waiting]
    for i, (name, text, frac) in enumerate(states):
        if name in paused:
            states[i] = (name, f"{text} ({paused[name]})" if text else paused[name], frac)
    parts = []
    if len(pending) <= 4:
        running = [f"{name} {text}" for name, text, _ in states if text]
        if running:
            parts.append("; ".join(running))
        elif states:
            parts.append(f"{len(states)} running, starting")
        parts += [f"{name} pending" + (f" ({why})" if why else "") for name, why in waiting.items()]
        return "; ".join(parts)
    if states:
        mean = sum(frac for _, _, frac in states) / len(states)
        name, text, _ = min(states, key=lambda s: s[2])
        slowest = f"{name} {text or 'starting'}"
        done = f"{100 * mean:.0f}% of their epochs done"
        parts.append(f"{len(states)} running, {done}; least advanced {slowest}")
    if waiting:
        reasons: dict[str, int] = {}
        for why in waiting.values():
            reasons[why or "not yet scheduled"] = reasons.get(why or "not yet scheduled", 0) + 1
        counts = ", ".join(f"{why}: {n}" for why, n in sorted(reasons.items(), key=lambda r: -r[1]))
        parts.append(f"{len(waiting)} pending ({counts})")
    return "; ".join(parts)


def _never_starting(
    pending: Sequence[tuple[tuple[RunSpec, Path, Any], Any]],
) -> tuple[dict[str, Any], list[tuple[tuple[RunSpec, Path, Any], Any, str, str]]]:
    """SLURM's view of the pending jobs: (run name -> queue entry, jobs that can never start).

    Each hopeless one comes as (item, job, reason, fix). A failing ``squeue`` is no verdict: nothing is
    hopeless then, and the status line shows no pending jobs.
    """
    from convit import slurm_queue

    try:
        entries = slurm_queue.queue()
    except slurm_queue.QueueError:
        return {}, []
    cache: dict[str, Any] = {}

    def partition(name: str) -> Any:
        if "all" not in cache:
            try:
                cache["all"] = slurm_queue.partitions()
            except slurm_queue.QueueError:
                cache["all"] = {}
        return cache["all"].get(name)

    queued, hopeless = {}, []
    for item, job in pending:
        entry = entries.get(str(job.job_id))
        if entry is None:
            continue
        queued[run_name(item[0])] = entry
        fix = slurm_queue.never_starts(entry, partition, slurm_queue.known_nodes)
        if fix is not None:
            hopeless.append((item, job, entry.reason, fix))
    return queued, hopeless


def _run_batch(
    items: Sequence[tuple[RunSpec, Path, Any]],
    args: argparse.Namespace,
    profile: Any,
    folder: Path,
    name: str,
    limits: dict[str, Any] | None = None,
) -> list[str]:
    """Submit ``items`` (spec, workdir, callable) grouped by resources and time limit (``limits``: run name
    -> ``slurm_queue.Decision``; default the spec's or :data:`LOCAL_TIMEOUT_MIN`), wait, and return failure
    lines. On SLURM a job whose pending reason cannot clear is cancelled and reported; the others go on."""

    def minutes(spec: RunSpec) -> int:
        if limits is not None and run_name(spec) in limits:
            return int(limits[run_name(spec)].minutes)
        return spec.resources.timeout_min or LOCAL_TIMEOUT_MIN

    groups: dict[tuple[int, int, int, int], list[tuple[RunSpec, Path, Any]]] = {}
    for item in items:
        key = (*_resources(item[0], args, profile), minutes(item[0]))
        groups.setdefault(key, []).append(item)
    failures: list[str] = []
    doomed: list[Any] = []  # jobs that will never start, cancelled once the rest of their array is done
    try:
        return _wait_groups(groups, args, profile, folder, name, failures, doomed)
    finally:
        _cancel_doomed(doomed, [])


def _array_of(job: Any) -> str:
    return str(job.job_id).split("_")[0]


def _cancel_doomed(doomed: list[Any], pending: Sequence[tuple[Any, Any]]) -> None:
    """scancel the jobs in ``doomed`` (removing them) whose array has no other job still waited for.

    Not at once: cancelling a pending task of an array makes sacct report the array's record CANCELLED over
    the whole index range, which submitit reads as the state of every task, so a running sibling would look
    cancelled and its result be lost to the launcher (seen on SLURM 22.05 with submitit 1.5).
    """
    from convit import slurm_queue

    busy = {_array_of(job) for _, job in pending}
    ready = [job for job in doomed if _array_of(job) not in busy]
    if ready:
        slurm_queue.cancel([str(job.job_id) for job in ready])
        doomed[:] = [job for job in doomed if job not in ready]


def _wait_groups(
    groups: dict[tuple[int, int, int, int], list[tuple[RunSpec, Path, Any]]],
    args: argparse.Namespace,
    profile: Any,
    folder: Path,
    name: str,
    failures: list[str],
    doomed: list[Any],
) -> list[str]:
    """The submit-and-wait loop of :func:`_run_batch`, one resource group after the other."""
    from convit import jobs, slurm_queue

    for (nodes, gpus, tasks, timeout), group in groups.items():
        # SLURM: the whole group at once (one array; the scheduler and the profile's array_parallelism
        # pace it). Local: a pool of --parallel slots, refilled as soon as a run ends, so a short run
        # does not leave its core idle until the longest of its wave is done.
        slots = len(group) if args.cluster == "slurm" else max(1, args.parallel)
        todo = list(group)
        pending: list[tuple[tuple[RunSpec, Path, Any], Any]] = []
        start = last_print = time.monotonic()
        last = ""
        while todo or pending:
            free = slots - len(pending)
            if todo and free > 0:
                chunk, todo = todo[:free], todo[free:]
                try:
                    submitted = jobs.submit(
                        [c[2] for c in chunk],
                        cluster=args.cluster,
                        folder=folder,
                        profile=profile,
                        tasks_per_node=tasks,
                        nodes=nodes,
                        gpus_per_node=gpus,
                        timeout_min=timeout,
                        name=name,
                    )
                except jobs.JobError as exc:  # CPUs per task below workers + 1, no free local GPU, ...
                    if not pending:
                        raise UsageError(str(exc)) from None
                    for spec, _, _ in chunk + todo:  # others are running: report these, let those finish
                        failures.append(f"{run_name(spec)}: not submitted: {exc}")
                    todo = []
                    continue
                for (spec, d, _), job in zip(chunk, submitted, strict=True):
                    where = f"job {job.job_id}, " if args.cluster == "slurm" else ""
                    limit = slurm_queue.format_minutes(timeout)
                    print(f"submitted {run_name(spec)} -> {d} ({where}time limit {limit})", flush=True)
                pending += list(zip(chunk, submitted, strict=True))
            still = []
            for item, job in pending:
                if jobs.done(job):
                    try:
                        job.results() if getattr(job, "num_tasks", 1) > 1 else job.result()
                    except Exception as exc:  # noqa: BLE001 - report every failed run, go on
                        why = jobs.failure_line(exc)  # the job's own error, not submitit's log paths
                        failures.append(f"{run_name(item[0])}: {why} (logs: {job.paths.stderr})")
                        print(f"FAILED {run_name(item[0])}: {why}", file=sys.stderr, flush=True)
                    else:
                        print(f"done {run_name(item[0])}", flush=True)
                else:
                    still.append((item, job))
            pending = still
            queued: dict[str, Any] | None = None
            if args.cluster == "slurm" and pending:
                queued, hopeless = _never_starting(pending)
                for item, job, reason, fix in hopeless:
                    line = f"{run_name(item[0])}: SLURM will never start job {job.job_id} ({reason}): {fix}"
                    failures.append(f"{line} (cancelled)")
                    print(f"NEVER STARTS {line}; cancelling it", file=sys.stderr, flush=True)
                    doomed.append(job)
                gone = {id(job) for _, job, _, _ in hopeless}
                pending = [(item, job) for item, job in pending if id(job) not in gone]
            _cancel_doomed(doomed, pending)
            if pending and (not todo or len(pending) >= slots):
                # a line when something moved (each run reports every minute), else a heartbeat
                line = _progress([(it[0], it[1]) for it, _ in pending], queued)
                now = time.monotonic()
                if line != last or now - last_print >= HEARTBEAT_S:
                    print(f"[launch {_elapsed(now - start)}] {line}", flush=True)
                    last, last_print = line, now
                time.sleep(5.0)
    return failures


def _drop_collected(
    specs: list[RunSpec], everything: list[RunSpec], results: str
) -> tuple[list[RunSpec], int]:
    """``specs`` less the runs whose row in ``results`` is done, and how many those are. Why: a suite's runs
    may be trained on several machines (or on one that was replaced), each collecting into the same
    committed results/; this machine need not train again what another one finished. A training run that
    one of the remaining evaluations reads stays: its checkpoint is not in results/."""
    done = collected_done(results, specs)
    evals = [s for s in specs if is_eval(s) and run_name(s) not in done]
    needed = {run_name(src) for s in evals if (src := _source_run(s, everything)) is not None}
    kept = [s for s in specs if run_name(s) not in done or run_name(s) in needed]
    return kept, len(specs) - len(kept)


def _launch(args: argparse.Namespace) -> int:
    if args.cluster not in CLUSTERS:
        raise UsageError(f"unknown cluster {args.cluster!r}; choose one of {', '.join(CLUSTERS)}")
    if args.max_runs is not None and args.max_runs < 1:
        raise UsageError(f"--max-runs must be >= 1, got {args.max_runs}")
    if args.parallel < 1:
        raise UsageError(f"--parallel must be >= 1, got {args.parallel}")
    if args.cluster == "local" and args.parallel > 1 and "OMP_NUM_THREADS" not in os.environ:
        # Runs side by side must split the cores: two OpenMP teams of 2 threads on 2 cores spin at every
        # barrier and train ~10x slower (measured). Local jobs inherit this environment.
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        print(f"{args.parallel} runs at once on {os.cpu_count()} cores: {threads} thread(s) each")
    specs = select(_specs(args.suite, args.scale, args), args.only)
    if not specs:
        raise UsageError(f"--only {args.only!r} matches no run of {args.suite} at scale {args.scale}")
    # an eval entry needs its training run: keep it even when --only / --max-runs would drop it
    if args.max_runs is not None:
        specs = specs[: args.max_runs]
    everything = _specs(args.suite, args.scale, args)
    for spec in list(specs):
        if is_eval(spec) and str(spec.tags.get("checkpoint", "")).startswith("run:"):
            source = _source_run(spec, everything)
            if source is not None and source not in specs:
                specs.insert(0, source)

    if args.skip_collected:
        specs, collected = _drop_collected(specs, everything, args.results)
        if collected:
            print(f"{collected} run(s) already done in {args.results}/ (--skip-collected): not trained here")
        if not specs:
            print(f"{args.suite} at scale {args.scale}: nothing left to run")
            return 0

    profile = None
    if args.profile:
        from convit import jobs

        try:
            profile = jobs.load_profile(args.profile)
        except jobs.ProfileError as exc:
            raise UsageError(str(exc)) from None
        if args.partition:
            profile = dataclasses.replace(profile, partition=args.partition)
    elif args.cluster == "slurm" and args.partition:
        raise UsageError("--partition needs --profile FILE (see slurm/profiles/example.yaml)")

    if args.check:
        from convit import doctor

        findings = doctor.check(
            suite=args.suite,
            scale=args.scale,
            profile=profile,
            workdir=args.workdir,
            results=args.results,
            data_root=args.data_root,
            cluster=args.cluster,
        )
        for finding in findings:
            print(finding, flush=True)
        blockers = sum(f.blocker for f in findings)
        print(f"preflight: {blockers} blocker(s)" if blockers else "preflight: nothing blocks this launch")
        return 1 if blockers else 0

    if args.dry_run:
        limits = _time_limits(specs, args, profile)
        _print_plan(args.suite, args.scale, specs, args.workdir, args.checkpoints, limits)
        return 0

    # every job's time limit, checked against the partition before anything else (cheap, no torch import)
    todo = [s for s in specs if not (run_dir(args.workdir, s) / "result.json").is_file()]
    limits = _time_limits(todo, args, profile)
    if limits.errors:
        more = len(limits.errors) - 1
        raise UsageError(limits.errors[0] + (f" (and {more} more run(s) that do not fit)" if more else ""))
    data_root = _validate(specs, args)
    for line in limits.lines():
        print(line, flush=True)

    from convit import runlock
    from convit.jobs import TrainJob
    from experiments.evaluate import EvalJob

    workdir = Path(args.workdir)
    folder = workdir / "_submitit" / args.suite / args.scale
    trains, evals, elsewhere = [], [], []
    skipped = 0
    for spec in specs:
        d = run_dir(workdir, spec)
        if (d / "result.json").is_file():
            skipped += 1
            continue
        if is_eval(spec):
            evals.append(spec)
            continue
        busy = runlock.holder(d)
        if busy is not None:  # a duplicate would only wait for the lock and fail: leave the run to its owner
            elsewhere.append(f"{run_name(spec)}: left to {busy}, which is training it; relaunch when it ends")
            continue
        teacher = _teacher_path(spec, args) if _is_distilled(spec) else None
        trains.append((spec, d, TrainJob(spec, d, data_root, teacher)))
    busy_note = f", {len(elsewhere)} being trained by another launch" if elsewhere else ""
    print(
        f"{args.suite} at scale {args.scale}: {len(specs)} run(s), {skipped} already done{busy_note}, "
        f"{len(trains)} to train, {len(evals)} to evaluate ({args.cluster})",
        flush=True,
    )
    # every run writes event files on rank 0 (convit.tboard): one logdir shows a suite's runs side by side
    # (runs shared with another suite live under that suite's folder, hence possibly several)
    for board_dir in dict.fromkeys(d.parent for _, d, _ in trains):
        print(f"watch it live: tensorboard --logdir {shlex.quote(str(board_dir))}", flush=True)
    failures = (
        _run_batch(trains, args, profile, folder, f"convit-{args.suite}", limits.decisions) if trains else []
    )
    failures += elsewhere

    eval_items = []
    for spec in evals:
        ref = str(spec.tags["checkpoint"])
        if ref.startswith("run:"):
            source = _source_run(spec, everything)
            if source is None:
                failures.append(f"{run_name(spec)}: no training run {ref[4:]!r} in this suite")
                continue
            ckpt = run_dir(workdir, source) / "checkpoint.pth"
            if not (run_dir(workdir, source) / "result.json").is_file() or not ckpt.is_file():
                failures.append(f"{run_name(spec)}: training run {run_name(source)} has not finished")
                continue
        else:
            found = _checkpoint_file(ref, args)
            assert found is not None  # checked by _validate
            ckpt = found
        d = run_dir(workdir, spec)
        eval_items.append((spec, d, EvalJob(spec, d, ckpt, data_root)))
    if eval_items:
        failures += _run_batch(
            eval_items, args, profile, folder, f"convit-{args.suite}-eval", limits.decisions
        )

    if not args.no_collect:
        path = collect(args.suite, args.scale, everything, workdir, args.results)
        print(f"collected {path}", flush=True)
    if failures:
        print(f"{len(failures)} run(s) not done:", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


def _collect(argv: Sequence[str]) -> int:
    args = _collect_parser().parse_args(argv)
    specs = _specs(args.suite, args.scale, args)
    path = collect(args.suite, args.scale, specs, args.workdir, args.results)
    print(f"collected {path}")
    return 0


def _list() -> int:
    print("suites:")
    for name, what in SUITES.items():
        print(f"  {name:18s} {what}")
    print("scales:")
    for name in SCALES:
        sc = get_scale(name)
        print(
            f"  {name:8s} {sc.dataset} at {sc.img_size}px, patch {sc.patch_size or 16}, "
            f"depth {sc.total_depth}, "
            f"{sc.base_epochs} base epochs (x 1/f), batch {sc.batch_size}, {sc.device}"
        )
    # the cost of every suite at every scale, from the same estimate as --dry-run (one place, not prose)
    print("estimated device-hours (runs) on each scale's device, one seed; --dry-run itemises them:")
    print(f"  {'':18s}" + "".join(f"{name:>16s}" for name in SCALES))
    for suite in SUITES:
        module, cells = load_suite(suite), []
        for name in SCALES:
            specs = module.specs(name)
            hours = sum(estimate_hours(spec, get_scale(name).flops_per_s) for spec in specs)
            cells.append(f"{_hours(hours)} ({len(specs)})")
        print(f"  {suite:18s}" + "".join(f"{cell:>16s}" for cell in cells))
    return 0


def _hours(hours: float) -> str:
    if hours >= 100:
        return f"{hours:,.0f} h"
    if hours >= 0.1:
        return f"{hours:.1f} h"
    return f"{60 * hours:.0f} min" if hours >= 1 / 60 else "<1 min"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "list":
            return _list()
        if argv and argv[0] == "collect":
            return _collect(argv[1:])
        return _launch(_launch_parser().parse_args(argv))
    except UsageError as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("launch.py: interrupted; relaunch the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (launch.py ... --dry-run | head): not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - so that the interpreter's final flush is quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
