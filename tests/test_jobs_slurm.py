"""convit.jobs on the real SLURM test cluster (``bash slurm/cluster.sh start``): what reaches ``srun``.

A crashed rank of a multi-task job ends the step at once (``srun --kill-on-bad-exit=1``) instead of leaving
the other ranks blocked in a collective until the NCCL timeout; the CPUs per task are on the srun line as
well as in ``#SBATCH`` (srun does not inherit them on SLURM 22.05-23.02). Skipped when no cluster answers.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import submitit

from convit import jobs

from tiny import slurm_cluster_problem

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profiles" / "local.yaml"
#: how long the surviving rank would sleep without kill-on-bad-exit
SURVIVOR_SLEEP_S = 150.0


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> None:
    problem = slurm_cluster_problem()
    if problem:
        pytest.skip(problem)


class CrashOneRank:
    """Rank 1 fails at once; rank 0 stands for a rank waiting in an all-reduce (it sleeps)."""

    def __call__(self) -> str:
        if submitit.JobEnvironment().global_rank == 1:
            raise RuntimeError("rank 1 crashed")
        time.sleep(SURVIVOR_SLEEP_S)
        return "rank 0 slept its full time"


def test_a_crashed_rank_ends_the_whole_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = os.environ.get("PYTHONPATH")  # the job unpickles CrashOneRank from this module
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests") + (os.pathsep + path if path else ""))
    profile = jobs.load_profile(PROFILE)
    [job] = jobs.submit(
        [CrashOneRank()], cluster="slurm", folder=tmp_path, profile=profile, tasks_per_node=2, timeout_min=5
    )
    script = job.paths.submission_file.read_text()
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun and f"--cpus-per-task={profile.cpus_per_gpu}" in srun
    assert f"#SBATCH --cpus-per-task={profile.cpus_per_gpu}" in script
    deadline = time.monotonic() + 600  # the shared test node may be busy: pending time is not counted
    while not job.done() and time.monotonic() < deadline:
        time.sleep(2.0)
    assert job.done(), f"job {job.job_id} still {job.state}"
    # How long the job ran, from SLURM's accounting. Without --kill-on-bad-exit rank 0 sleeps its full
    # SURVIVOR_SLEEP_S (measured: 149 s); with it, srun kills it as soon as rank 1 dies.
    elapsed = subprocess.run(
        ["sacct", "-j", job.job_id, "-X", "-n", "-P", "-o", "ElapsedRaw,State"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    seconds, state = int(elapsed[0].split("|")[0]), elapsed[0].split("|")[1]
    assert seconds < SURVIVOR_SLEEP_S / 2, f"the job ran {seconds} s ({state})"
    assert state == "FAILED"
