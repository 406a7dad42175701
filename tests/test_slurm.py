"""Integration tests on a real SLURM (``bash slurm/cluster.sh start``): smoke run, world size 2, USR2 requeue.

They talk to the scheduler through submitit exactly as the launcher does (``convit.jobs.submit`` with
``slurm/profiles/local.yaml``), skipped with the reason when no cluster answers. Each test submits into
its own fresh folder: job ids restart when the scheduler's state is reset, and a stale result pickle in a
reused folder would be returned as a new job's result.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from convit import jobs
from convit.spec import RunSpec

from tiny import slurm_cluster_problem, tiny_spec

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "slurm" / "profiles" / "local.yaml"
#: keys of result.json that must not depend on interruptions (wall_time_s does).
RESULT_KEYS = ("top1", "top5", "loss", "epochs", "world_size", "params")


@pytest.fixture(scope="module", autouse=True)
def _cluster() -> None:
    problem = slurm_cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def profile() -> jobs.Profile:
    return jobs.load_profile(PROFILE)


def smoke_spec(epochs: int = 2, seed: int = 0, eval_every: int = 1) -> RunSpec:
    """A run of a few seconds: the shared tiny run on 4 classes of the CIFAR-10 fixture (80 images)."""
    return tiny_spec(classes=4, suite="test_slurm", epochs=epochs, seed=seed, eval_every=eval_every)


def _sacct_states(job_id: str) -> list[str]:
    """States of every attempt of a job (``sacct -D`` lists each requeued attempt), batch steps excluded."""
    out = subprocess.run(
        ["sacct", "-D", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [line.split("|")[1] for line in out.stdout.splitlines() if "|" in line]


def _comparable(result: dict) -> dict:
    return {key: result[key] for key in RESULT_KEYS}


def _metrics(workdir: Path) -> list[dict]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    keep = ("epoch", "step", "train_loss", "lr", "val_top1", "val_top5", "val_loss")
    return [{k: v for k, v in json.loads(line).items() if k in keep} for line in lines if line.strip()]


def test_smoke_job_completes(tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile) -> None:
    workdir = tmp_path / "run"
    job = jobs.TrainJob(smoke_spec(), workdir, fixture_data_root)
    [submitted] = jobs.submit(
        [job],
        cluster="slurm",
        folder=tmp_path / "submitit",
        profile=profile,
        timeout_min=5,
        name="test-smoke",
    )
    [result] = jobs.wait([submitted], timeout_s=180)
    stored = json.loads((workdir / "result.json").read_text())
    assert stored == result
    assert result["epochs"] == 2 and result["world_size"] == 1
    assert (workdir / "spec.json").exists()


def test_two_tasks_train_with_world_size_two(
    tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile
) -> None:
    workdir = tmp_path / "run"
    job = jobs.TrainJob(smoke_spec(epochs=1), workdir, fixture_data_root)
    [submitted] = jobs.submit(
        [job],
        cluster="slurm",
        folder=tmp_path / "submitit",
        profile=profile,
        tasks_per_node=2,
        timeout_min=5,
        name="test-ddp",
    )
    [result] = jobs.wait([submitted], timeout_s=180)
    assert result["world_size"] == 2
    assert json.loads((workdir / "result.json").read_text())["world_size"] == 2
    assert json.loads((workdir / "env.json").read_text())["world_size"] == 2


def test_usr2_requeues_and_matches_uninterrupted_run(
    tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile
) -> None:
    # Two identical specs in one array: member 0 is signalled mid-training, member 1 runs straight through.
    spec = smoke_spec(epochs=4, eval_every=4)  # evaluate only at the end: less time, same comparison
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    submitted = jobs.submit(
        [
            jobs.TrainJob(spec, interrupted, fixture_data_root),
            jobs.TrainJob(spec, reference, fixture_data_root),
        ],
        cluster="slurm",
        folder=tmp_path / "submitit",
        profile=profile,
        timeout_min=5,
        name="test-requeue",
    )
    victim = submitted[0]
    assert victim.job_id.endswith("_0") and submitted[1].job_id.endswith("_1"), "expected one job array"

    # Signal once the first epoch is logged: three epochs remain, so the signal lands mid-training.
    metrics = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 150
    while not (metrics.exists() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "the job logged no epoch in time"
        assert not (interrupted / "result.json").exists(), "the run finished before it could be signalled"
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR2", victim.job_id], check=True, timeout=30)

    results = jobs.wait(submitted, timeout_s=240)
    assert _comparable(results[0]) == _comparable(results[1])
    assert _metrics(interrupted) == _metrics(reference)

    log = victim.stderr() or ""
    assert "caught SIGUSR2" in log and "stop requested: saved" in (victim.stdout() or "") + log
    deadline = time.monotonic() + 60
    while "COMPLETED" not in (states := _sacct_states(victim.job_id)):  # accounting lags the result file
        assert time.monotonic() < deadline, f"sacct states {states}"
        time.sleep(1)
    assert "REQUEUED" in states, f"no requeued attempt in sacct: {states}"


@pytest.mark.slow
def test_scontrol_requeue_resumes_from_the_run_directory(
    tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile
) -> None:
    # 'scontrol requeue' sends SIGTERM then SIGKILL and never calls checkpoint(): the job saves at the next
    # step on SIGTERM, waits to be killed, and the restarted job resumes from its run directory by itself.
    spec = smoke_spec(epochs=4, eval_every=4)
    requeued, reference = tmp_path / "requeued", tmp_path / "reference"
    submitted = jobs.submit(
        [jobs.TrainJob(spec, requeued, fixture_data_root), jobs.TrainJob(spec, reference, fixture_data_root)],
        cluster="slurm",
        folder=tmp_path / "submitit",
        profile=profile,
        timeout_min=5,
        name="test-scontrol",
    )
    metrics = requeued / "metrics.jsonl"
    deadline = time.monotonic() + 150
    while not (metrics.exists() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "the job logged no epoch in time"
        assert not (requeued / "result.json").exists(), "the run finished before it could be requeued"
        time.sleep(0.5)
    subprocess.run(["scontrol", "requeue", submitted[0].job_id], check=True, timeout=30)

    results = jobs.wait(submitted, timeout_s=240)
    assert _comparable(results[0]) == _comparable(results[1])
    assert _metrics(requeued) == _metrics(reference)
    assert "caught SIGTERM" in (submitted[0].stderr() or "")


def _submit_one(tmp_path: Path, data_root: Path, profile: jobs.Profile, epochs: int, name: str):
    (job,) = jobs.submit(
        [jobs.TrainJob(smoke_spec(epochs=epochs, eval_every=epochs), tmp_path / "run", data_root)],
        cluster="slurm",
        folder=tmp_path / "submitit",
        profile=profile,
        timeout_min=5,
        name=name,
    )
    return job


def _suspend(job) -> None:
    """``scontrol suspend`` the job, wait until sacct shows it, and check that submitit's cache (refreshed as
    its watcher does every few seconds) says SUSPENDED while jobs.done still says not done."""
    subprocess.run(["scontrol", "suspend", job.job_id], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while "SUSPENDED" not in _sacct_states(job.job_id):
        assert time.monotonic() < deadline, f"sacct never showed SUSPENDED: {_sacct_states(job.job_id)}"
        time.sleep(1)
    job.done(force_check=True)
    assert job.state == "SUSPENDED" and not jobs.done(job)


def test_a_suspended_job_is_waited_for_not_reported_failed(
    tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile
) -> None:
    # submitit's watcher counts SUSPENDED as final (its list of unfinished states lacks it): job.done() turns
    # true and job.result() raises "has not produced any output". jobs.done must keep waiting, and the job,
    # resumed, must end as if never paused.
    job = _submit_one(tmp_path, fixture_data_root, profile, epochs=4, name="test-suspend")
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 150
    while not (metrics.exists() and metrics.read_text().strip()):
        assert time.monotonic() < deadline, "the job logged no epoch in time"
        assert not (tmp_path / "run" / "result.json").exists(), "the run ended before it could be suspended"
        time.sleep(0.5)
    try:
        _suspend(job)
    finally:
        subprocess.run(["scontrol", "resume", job.job_id], check=True, timeout=30)
    (result,) = jobs.wait([job], timeout_s=240)
    assert result["epochs"] == 4 and result["top1"] is not None


def test_a_suspended_job_that_is_cancelled_is_reported_not_waited_for_forever(
    tmp_path: Path, fixture_data_root: Path, profile: jobs.Profile
) -> None:
    # Once submitit's watcher has read SUSPENDED it never polls the job again (it counts the state final),
    # so its cached state stays SUSPENDED after an scancel: jobs.done must ask the scheduler and end.
    job = _submit_one(tmp_path, fixture_data_root, profile, epochs=50, name="test-suspend-cancel")
    deadline = time.monotonic() + 150
    while "RUNNING" not in _sacct_states(job.job_id):
        assert time.monotonic() < deadline, f"the job never ran: {_sacct_states(job.job_id)}"
        time.sleep(0.5)
    _suspend(job)
    subprocess.run(["scancel", job.job_id], check=True, timeout=30)
    deadline = time.monotonic() + 60
    while not jobs.done(job):
        assert time.monotonic() < deadline, (
            f"still waiting on a cancelled job: squeue says {jobs.state(job)!r}"
        )
        time.sleep(1)
    assert job.state == "SUSPENDED"  # submitit's cache never moved: the answer came from the scheduler
    assert "CANCELLED" in jobs.state(job) or jobs.state(job) == "SUSPENDED"  # squeue, or purged from it
    with pytest.raises(jobs.JobError):
        jobs.wait([job], timeout_s=60)


def test_launcher_runs_the_smoke_suite_through_slurm(tmp_path: Path, fixture_data_root: Path) -> None:
    """What a user types: ``launch.py SUITE --cluster slurm --profile ...`` -> one job array -> CSV."""
    import csv
    import sys

    runs, results = tmp_path / "runs", tmp_path / "results"
    cmd = [
        sys.executable, str(REPO / "experiments" / "launch.py"), "sample_efficiency", "--scale", "smoke",
        "--cluster", "slurm", "--profile", str(PROFILE), "--only", "*f0.5*",
        "--data-root", str(fixture_data_root), "--workdir", str(runs), "--results", str(results),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (results / "sample_efficiency" / "smoke.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["model"] for r in rows) == ["convit_tiny", "deit_tiny"]
    assert all(r["status"] == "done" and float(r["fraction"]) == 0.5 and r["top1"] for r in rows)
    # both runs went out as one array job: their run directories were written by tasks of the same array
    env = [json.loads(p.read_text()) for p in runs.glob("sample_efficiency/smoke/*/env.json")]
    assert len(env) == 2 and all(e["slurm_job_id"] for e in env)
    assert env[0]["slurm_array"] is not None and env[0]["slurm_array"] == env[1]["slurm_array"]


def test_the_queue_state_of_a_job_it_does_not_hold_is_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """squeue answers "Invalid job id" for a job purged after MinJobAge (or never this cluster's): that is
    "left the queue", not an error; a missing squeue is an error the caller handles."""
    from convit import slurm_queue

    assert slurm_queue.job_state("987654321") == ""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(slurm_queue.QueueError, match="squeue not found"):
        slurm_queue.job_state("1")
