"""Time limits and pending reasons without a cluster: the rule a job's time limit follows, the check against
a partition's limits, the parsing of ``scontrol``/``sinfo``/``squeue`` output, which pending reasons mean
"never", and the launcher's status line for pending jobs. Against a real SLURM: ``test_slurm_limits.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from convit import slurm_queue as sq
from convit.slurm_queue import LimitError, Partition, QueuedJob
from experiments import load_suite
from experiments.common import estimate_hours, get_scale, run_name

# what `scontrol show partition -o` and `sinfo -h -N -o '%N|%P|%G'` print on a GPU cluster (shortened)
SCONTROL = """\
PartitionName=debug AllowGroups=ALL Default=YES DefaultTime=00:30:00 MaxNodes=2 MaxTime=02:00:00 State=UP TotalNodes=4 TRES=cpu=256,gres/gpu=32
PartitionName=long AllowGroups=ALL Default=NO DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=7-00:00:00 State=UP TotalNodes=16
PartitionName=cpu Default=NO DefaultTime=NONE MaxNodes=UNLIMITED MaxTime=UNLIMITED State=DOWN TotalNodes=2
"""  # noqa: E501
SINFO = """\
gpu1|debug*|gpu:a100:8(S:0-1)
gpu2|debug*|gpu:a100:4(S:0),gpu:v100:2
gpu1|long|gpu:a100:8(S:0-1)
cpu1|cpu|(null)
"""


def partition(**changes: object) -> Partition:
    base = Partition("short", 5, 2, None, 1, 0, "UP", False)
    return dataclasses.replace(base, **changes)


def decide(**changes: object) -> sq.Decision:
    args: dict = dict(
        minutes=15, needed=2, why="estimate <1 min x 1.5, at least 15 min", nodes=1, gpus_per_node=0,
        partition=partition(), cap_min=None, max_requeues=3, signal_delay_s=20,
    )  # fmt: skip
    args.update(changes)
    return sq.decide("run-a", **args)


# ------------------------------------------------------------------------------------------------ times
@pytest.mark.parametrize(
    "text, minutes",
    [
        ("30", 30), ("5:00", 5), ("5:30", 6), ("00:05:00", 5), ("02:00:00", 120), ("1-00:00:00", 1440),
        ("2-12", 3600), ("1-02:30", 1590), ("UNLIMITED", None), ("INFINITE", None), ("NONE", None),
        ("infinite", None),
    ],
)  # fmt: skip
def test_parse_time_reads_every_slurm_layout(text: str, minutes: int | None) -> None:
    assert sq.parse_time(text) == minutes


def test_format_minutes_is_slurms_layout() -> None:
    assert [sq.format_minutes(m) for m in (5, 120, 1440, 1590, None)] == [
        "0:05:00", "2:00:00", "1-00:00:00", "1-02:30:00", "UNLIMITED",
    ]  # fmt: skip


def test_derived_limit_is_the_estimate_with_margin_rounded_up_and_floored() -> None:
    assert sq.derived_limit_min(0.0001) == (sq.FLOOR_MIN, 1)  # a smoke run: the floor
    assert sq.derived_limit_min(1.0) == (90, 90)  # 60 min x 1.5
    assert sq.derived_limit_min(1.01) == (95, 91)  # rounded up to 5 minutes
    assert sq.derived_limit_min(100.0) == (9000, 9000)


def test_launcher_derives_from_the_scales_estimate_spread_over_the_runs_devices() -> None:
    from experiments import launch as launcher

    spec = load_suite("sample_efficiency").specs("paper")[0]  # 2 nodes x 8 GPUs
    hours = estimate_hours(spec, get_scale("paper").flops_per_s)
    ask, needed, why = launcher._wanted_limit(spec, get_scale("paper").flops_per_s)
    assert needed == pytest.approx(hours / 16 * 60 * sq.TIME_MARGIN, abs=1)
    assert ask >= needed and ask % sq.ROUND_MIN == 0 and "x 1.5" in why
    own = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, timeout_min=77))
    assert launcher._wanted_limit(own, 1.0) == (77, 77, "the spec's resources.timeout_min")


# ------------------------------------------------------------------------------------------- partitions
def test_partitions_are_parsed_from_scontrol_and_sinfo() -> None:
    found = sq.parse_partitions(SCONTROL, SINFO)
    assert found["debug"] == Partition("debug", 120, 30, 2, 4, 8, "UP", True)
    assert found["long"].max_time_min == 7 * 1440 and found["long"].max_nodes is None
    assert found["long"].gpus_per_node == 8 and found["cpu"].gpus_per_node == 0
    assert found["cpu"].max_time_min is None and found["cpu"].state == "DOWN"
    assert sq.find_partition(None, found).name == "debug"  # the default one
    with pytest.raises(LimitError, match="partition 'gpu' does not exist.*cpu, debug, long"):
        sq.find_partition("gpu", found)


# -------------------------------------------------------------------------------------------- decisions
def test_a_run_that_fits_asks_for_its_limit() -> None:
    assert decide(partition=partition(max_time_min=120)).minutes == 15
    assert decide(partition=None).minutes == 15  # limits unknown: nothing to check


def test_only_the_floor_over_max_time_asks_for_max_time() -> None:
    d = decide()
    assert d.minutes == 5 and not d.note and "at most partition short's MaxTime" in d.why


def test_over_max_time_is_refused_naming_partition_limit_request_and_fix() -> None:
    with pytest.raises(LimitError) as error:
        decide(minutes=30, needed=30, why="the spec's resources.timeout_min")
    text = str(error.value)
    assert "\n" not in text
    for needle in ("run-a", "0:30:00", "partition short", "MaxTime of 0:05:00", "timeout_min: 5"):
        assert needle in text, text


def test_a_profile_timeout_caps_and_says_how_the_run_resumes() -> None:
    d = decide(minutes=30, needed=30, cap_min=5, max_requeues=20)
    assert d.minutes == 5 and "each job stops at 0:05:00" in d.note and "about 7 jobs" in d.note
    d = decide(minutes=30, needed=30, cap_min=60, max_requeues=20)  # more than the partition: MaxTime
    assert d.minutes == 5 and "partition short's MaxTime of 0:05:00" in d.note
    d = decide(minutes=30, needed=30, cap_min=10, partition=None, max_requeues=20)
    assert d.minutes == 10 and "the profile's timeout_min of 0:10:00" in d.note


def test_capping_needs_enough_requeues() -> None:
    # 60 min in 5-minute jobs less the 20 s signal delay: 13 jobs, 12 requeues
    with pytest.raises(
        LimitError, match="runs in 13 jobs.*max_requeues=3: raise max_requeues to at least 12"
    ):
        decide(minutes=60, needed=60, cap_min=5)
    assert decide(minutes=60, needed=60, cap_min=5, max_requeues=12).minutes == 5


def test_nodes_and_gpus_are_checked_against_the_partition() -> None:
    with pytest.raises(LimitError, match="asks for 2 nodes, over partition short's MaxNodes=1"):
        decide(nodes=2, partition=partition(max_nodes=1, total_nodes=4))
    with pytest.raises(LimitError, match="asks for 2 nodes, partition short has 1"):
        decide(nodes=2)
    with pytest.raises(LimitError, match="asks for 1 GPUs per node, partition short's nodes have at most 0"):
        decide(gpus_per_node=1)
    assert decide(gpus_per_node=8, partition=partition(gpus_per_node=8)).minutes == 5


def test_a_limit_shorter_than_the_signal_delay_is_refused() -> None:
    with pytest.raises(LimitError, match="leaves no time to train.*signal_delay_s=300"):
        decide(signal_delay_s=300)


# ------------------------------------------------------------------------------------------------ queue
def test_squeue_lines_are_parsed() -> None:
    text = "7_0|RUNNING|None|5:00|short\n7_1|PENDING|ReqNodeNotAvail, UnavailableNodes:vm9|5:00|short\n"
    jobs = sq.parse_queue(text)
    assert jobs["7_0"] == QueuedJob("7_0", "RUNNING", "None", "5:00", "short")
    assert jobs["7_1"].reason == "ReqNodeNotAvail, UnavailableNodes:vm9"


@pytest.mark.parametrize(
    "reason, hopeless",
    [
        ("PartitionTimeLimit", True), ("PartitionNodeLimit", True), ("PartitionConfig", True),
        ("QOSMaxWallDurationPerJobLimit", True), ("QOSMaxNodePerJobLimit", True),
        ("AssocMaxWallDurationPerJobLimit", True), ("QOSMaxGRESPerJob", True), ("InvalidAccount", True),
        ("InvalidQOS", True), ("BadConstraints", True),
        ("Resources", False), ("Priority", False), ("JobArrayTaskLimit", False), ("BeginTime", False),
        ("PartitionDown", False), ("QOSGrpCpuLimit", False), ("AssocGrpGRES", False), ("None", False),
        ("ReqNodeNotAvail, UnavailableNodes:vm", False), ("ReqNodeNotAvail, UnavailableNodes:", False),
        ("ReqNodeNotAvail, UnavailableNodes:gone7", True),
    ],
)  # fmt: skip
def test_which_pending_reasons_never_clear(reason: str, hopeless: bool) -> None:
    job = QueuedJob("7_1", "PENDING", reason, "5:00", "short")
    fix = sq.never_starts(job, lambda name: partition(max_time_min=3), lambda: {"vm"})
    assert (fix is not None) == hopeless, fix
    if reason == "PartitionTimeLimit":
        assert "5:00" in fix and "partition short's MaxTime 0:03:00" in fix and "relaunch" in fix
    assert sq.never_starts(dataclasses.replace(job, state="RUNNING")) is None


# ---------------------------------------------------------------------------------------- status lines
def test_status_line_tells_pending_from_running_with_the_reason(tmp_path: Path) -> None:
    from experiments import launch as launcher

    specs = load_suite("sample_efficiency").specs("smoke")[:6]
    dirs = [tmp_path / f"run{i}" for i in range(6)]
    names = [run_name(s) for s in specs]
    queued = {
        names[0]: QueuedJob("9_0", "RUNNING", "None", "15:00", "debug"),
        names[1]: QueuedJob("9_1", "PENDING", "Resources", "15:00", "debug"),
    }
    line = launcher._progress(list(zip(specs[:2], dirs[:2], strict=True)), queued)
    assert line == f"1 running, starting; {names[1]} pending (Resources)"
    queued = {n: QueuedJob(f"9_{i}", "PENDING", "Priority", "15:00", "debug") for i, n in enumerate(names)}
    queued[names[5]] = QueuedJob("9_5", "PENDING", "JobArrayTaskLimit", "15:00", "debug")
    assert launcher._progress(list(zip(specs, dirs, strict=True)), queued) == (
        "6 pending (Priority: 5, JobArrayTaskLimit: 1)"
    )
    queued[names[0]] = QueuedJob("9_0", "RUNNING", "None", "15:00", "debug")
    line = launcher._progress(list(zip(specs, dirs, strict=True)), queued)
    assert line.startswith("1 running, 0% of their epochs done; least advanced")
    assert line.endswith("; 5 pending (Priority: 4, JobArrayTaskLimit: 1)")


def test_status_line_says_a_suspended_job_is_paused(tmp_path: Path) -> None:
    from experiments import launch as launcher

    specs = load_suite("sample_efficiency").specs("smoke")[:2]
    dirs = [tmp_path / "run0", tmp_path / "run1"]
    names = [run_name(s) for s in specs]
    queued = {
        names[0]: QueuedJob("9_0", "SUSPENDED", "None", "15:00", "debug"),
        names[1]: QueuedJob("9_1", "RUNNING", "None", "15:00", "debug"),
    }
    line = launcher._progress(list(zip(specs, dirs, strict=True)), queued)
    assert line == f"{names[0]} SUSPENDED"  # the running one has not reported yet


def test_dry_run_without_slurm_commands_still_shows_the_limits_and_says_they_are_unchecked(
    tmp_path: Path,
) -> None:
    """On a machine without SLURM's clients (a laptop) the plan still shows each job's derived limit."""
    import os
    import shutil

    from tiny import REPO, launch

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python", "python3"):  # a PATH with no scontrol / sinfo on it
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    env = {**os.environ, "PATH": str(bin_dir)}
    profile = REPO / "slurm" / "profiles" / "local-short.yaml"
    args = ["--cluster", "slurm", "--profile", str(profile), "--dry-run", "--workdir", str(tmp_path)]
    proc = launch("sample_efficiency", "--scale", "smoke", *args, env=env)
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if line.startswith(("deit-", "convit-"))]
    assert len(runs) == 10 and all(line.split()[-1] == "0:15:00" for line in runs), runs  # the floor
    assert "note: partition limits not checked (scontrol not found" in proc.stdout
