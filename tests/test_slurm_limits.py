"""Time limits and pending reasons on a real SLURM (``bash slurm/cluster.sh start``): the launcher as a user
runs it, against the test cluster's partitions ``short`` (MaxTime 5 min, one CPU a node) and ``single``.

* a request over the partition's MaxTime, MaxNodes or GPUs is refused before anything is submitted, in one
  line naming the partition, its limit and the request; with a profile ``timeout_min`` it is capped, said,
  and runs;
* a job SLURM will never start (the partition's MaxTime lowered under a queued job: ``PartitionTimeLimit``,
  as SLURM really reports it) ends the launcher's wait for it with one line naming the job, the reason and
  the fix, while the job that fits runs to the end; the exit status is non-zero.

Smoke-scale runs of one epoch on 10 images: seconds each. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tiny import REPO, launch, slurm_cluster_problem

pytestmark = pytest.mark.slurm

SHORT = REPO / "slurm" / "profiles" / "local-short.yaml"
CAPPED = REPO / "slurm" / "profiles" / "local-short-capped.yaml"
SUBMITTED = re.compile(r"^submitted (\S+) -> .* \(job (\S+), time limit (\S+)\)$")


def _scontrol_partition(name: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "show", "partition", name, "-o"], capture_output=True, text=True, timeout=30
    )
    return dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> None:
    problem = slurm_cluster_problem()
    if problem:
        pytest.skip(problem)
    for name, key, value in (("short", "MaxCPUsPerNode", "1"), ("single", "MaxNodes", "1")):
        if _scontrol_partition(name).get(key) != value:
            pytest.skip(
                f"the test cluster has no partition {name} with {key}={value}: rerun slurm/cluster.sh start"
            )


def _common(tmp_path: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "sample_efficiency", "--scale", "smoke", "--cluster", "slurm", "--set", "recipe.epochs=1",
        "--only", "*f0.05*", "--data-root", str(data_root), "--workdir", str(tmp_path / "runs"),
        "--results", str(tmp_path / "results"), *extra,
    ]  # fmt: skip


def _sacct_timelimit(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "Timelimit"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout.strip()


def _squeue() -> dict[str, str]:
    out = subprocess.run(
        ["squeue", "--me", "-h", "-r", "-o", "%i|%T"], capture_output=True, text=True, timeout=30
    )
    return dict(line.split("|", 1) for line in out.stdout.split())


# --------------------------------------------------------------------------------------------- at launch
def test_dry_run_shows_each_jobs_time_limit_against_the_partition(tmp_path: Path) -> None:
    args = ["sample_efficiency", "--scale", "smoke", "--cluster", "slurm", "--profile", str(SHORT)]
    proc = launch(*args, "--dry-run", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if line.startswith(("deit-", "convit-"))]
    # the floor (15 min) is over short's MaxTime while the estimate (seconds) fits: MaxTime
    assert len(runs) == 10 and all(line.split()[-1] == "0:05:00" for line in runs), runs
    assert "note: partition short: MaxTime 0:05:00" in proc.stdout

    proc = launch(*args, "--set", "resources.timeout_min=30", "--dry-run", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    runs = [line for line in proc.stdout.splitlines() if line.startswith(("deit-", "convit-"))]
    assert all(line.split()[-1] == "refused" for line in runs), runs
    refused = [line for line in proc.stdout.splitlines() if line.startswith("refused at launch:")]
    assert len(refused) == 10 and all("0:30:00" in line and "MaxTime of 0:05:00" in line for line in refused)
    assert not (tmp_path / "_submitit").exists()


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--set", "resources.timeout_min=30"], ["partition short", "MaxTime of 0:05:00", "0:30:00"]),
        (["--partition", "single", "--set", "resources.nodes=2"], ["single", "MaxNodes=1", "2 nodes"]),
        (["GPU"], ["partition short", "at most 0", "1 GPUs per node"]),
    ],
    ids=["time", "nodes", "gpus"],
)  # fmt: skip
def test_a_request_over_the_partitions_limits_is_refused_in_one_line(
    tmp_path: Path, fixture_data_root: Path, extra: list[str], needles: list[str]
) -> None:
    profile = SHORT
    if extra == ["GPU"]:  # a profile that claims GPUs the partition's nodes do not have
        profile = tmp_path / "gpu.yaml"
        profile.write_text(SHORT.read_text().replace("gpus_per_node: 0", "gpus_per_node: 1"))
        extra = []
    before = set(_squeue())
    proc = launch(*_common(tmp_path, fixture_data_root, "--profile", str(profile), *extra))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert all(needle in err[0] for needle in needles), err[0]
    assert "submitted" not in proc.stdout and not (tmp_path / "runs" / "_submitit").exists()
    assert set(_squeue()) <= before  # nothing reached the queue


def test_a_profile_timeout_caps_the_request_says_so_and_the_run_completes(
    tmp_path: Path, fixture_data_root: Path
) -> None:
    proc = launch(
        *_common(tmp_path, fixture_data_root, "--profile", str(CAPPED), "--set", "resources.timeout_min=30"),
        "--max-runs",
        "1",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    capped = [line for line in proc.stdout.splitlines() if line.startswith("capped: 1 run(s)")]
    assert len(capped) == 1 and "ask 0:30:00" in capped[0] and "each job stops at 0:05:00" in capped[0]
    [(run, job_id, limit)] = [m.groups() for m in map(SUBMITTED.match, proc.stdout.splitlines()) if m]
    assert limit == "0:05:00" and _sacct_timelimit(job_id) == "00:05:00"
    assert next((tmp_path / "runs").glob(f"sample_efficiency/smoke/{run}/result.json"), None) is not None


# ------------------------------------------------------------------------------------------ in the queue
def _trainer_pids(job_id: str) -> list[int]:
    """The python processes of array task ``job_id`` (``41_0``), found by the environment SLURM gave them."""
    array, task = job_id.split("_")
    want = {f"SLURM_ARRAY_JOB_ID={array}", f"SLURM_ARRAY_TASK_ID={task}"}
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            env = set((proc / "environ").read_bytes().decode(errors="replace").split("\0"))
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):
            continue
        if want <= env and "python" in cmdline.split("\0")[0]:
            pids.append(int(proc.name))
    return pids


def test_a_job_slurm_will_never_start_is_reported_and_the_job_that_fits_runs(
    tmp_path: Path, fixture_data_root: Path
) -> None:
    """Two runs on 'short' (one CPU a node): one runs, the other waits (Resources). Then the partition's
    MaxTime drops to 3 minutes, under the waiting job's 5: SLURM itself switches its reason to
    PartitionTimeLimit, and it would pend for ever. The launcher reports it in one line while the other job
    still runs (its trainer is held with SIGSTOP until then, so the order does not depend on the machine's
    speed), and that job then runs to the end: cancelling the pending task while its sibling runs would have
    made submitit read the whole array as CANCELLED (``_cancel_doomed``)."""
    original = _scontrol_partition("short")["MaxTime"]
    cmd = [sys.executable, str(REPO / "experiments" / "launch.py"), *_common(tmp_path, fixture_data_root)]
    cmd += ["--profile", str(SHORT)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    jobs: dict[str, str] = {}
    stopped: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while True:  # until one job's trainer runs and the other job waits
            assert time.monotonic() < deadline, "\n".join(lines)
            assert proc.poll() is None, "the launcher ended early:\n" + "\n".join(lines)
            jobs = {m.group(2): m.group(1) for m in map(SUBMITTED.match, list(lines)) if m}
            states = _squeue()
            if len(jobs) == 2 and sorted(states.get(j, "") for j in jobs) == ["PENDING", "RUNNING"]:
                runner = next(j for j in jobs if states[j] == "RUNNING")
                stopped = _trainer_pids(runner)
                if stopped:
                    break
            time.sleep(0.2)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        waiting = next(j for j in jobs if j != runner)
        lower = ["scontrol", "update", "PartitionName=short", "MaxTime=00:03:00"]
        subprocess.run(lower, check=True, timeout=30)
        deadline = time.monotonic() + 90
        while not any(line.startswith("NEVER STARTS") for line in list(lines)):
            assert time.monotonic() < deadline, "no NEVER STARTS line:\n" + "\n".join(lines)
            time.sleep(0.5)
        assert _squeue().get(runner) == "RUNNING"
        assert not any(ln.startswith((f"done {jobs[runner]}", f"FAILED {jobs[runner]}")) for ln in lines)
        assert _squeue().get(waiting) == "PENDING"  # cancelled only once its sibling is done
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped = []
        rc = proc.wait(timeout=400)
        reader.join(timeout=30)
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        subprocess.run(["scontrol", "update", "PartitionName=short", f"MaxTime={original}"], timeout=30)
        if proc.poll() is None:
            proc.kill()
        leftover = [j for j in jobs if j in _squeue()]
        if leftover:
            subprocess.run(["scancel", *leftover], timeout=30)
    output = "\n".join(lines)
    assert rc == 1, output
    never = [line for line in lines if line.startswith("NEVER STARTS")]
    assert len(never) == 1, output
    for needle in (jobs[waiting], f"job {waiting}", "PartitionTimeLimit", "MaxTime 0:03:00", "relaunch"):
        assert needle in never[0], never[0]
    assert waiting not in _squeue()  # cancelled, not left pending
    # the job that fits ran to the end, with the limit the launcher chose (MaxTime: the floor is over it)
    assert f"done {jobs[runner]}" in output and lines.index(never[0]) < lines.index(f"done {jobs[runner]}")
    assert _sacct_timelimit(runner) == "00:05:00"
    assert (tmp_path / "runs" / "sample_efficiency" / "smoke" / jobs[runner] / "result.json").is_file()
    assert not (tmp_path / "runs" / "sample_efficiency" / "smoke" / jobs[waiting] / "result.json").exists()
    summary = output[output.index("1 run(s) not done:") :]
    assert jobs[waiting] in summary and "PartitionTimeLimit" in summary
