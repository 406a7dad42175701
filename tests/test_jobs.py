"""convit.jobs without SLURM: profiles, the picklable job, its signal handling, debug and local executors."""

from __future__ import annotations

import json
import os
import pickle
import signal
from pathlib import Path

import cloudpickle
import pytest
import submitit

from convit import jobs
from convit.spec import RunSpec

from tiny import tiny_spec

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "slurm" / "profiles"
LOCAL_PROFILE = """\
partition: debug
gpus_per_node: 0
cpus_per_gpu: 1
max_requeues: 20
signal_delay_s: 20
timeout_min: null
"""


def smoke_spec(epochs: int = 1) -> RunSpec:
    """Seconds on a CPU: the shared tiny run on 2 classes of the CIFAR-10 fixture (40 images)."""
    return tiny_spec(classes=2, suite="test_jobs", epochs=epochs)


def _write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------------------ profiles
@pytest.mark.parametrize("name", ["local.yaml", "example.yaml"])
def test_committed_profiles_load(name: str) -> None:
    profile = jobs.load_profile(PROFILES / name)
    assert profile.source.endswith(name)
    assert profile.max_requeues >= 1 and profile.signal_delay_s > 0


def test_local_profile_fits_the_test_cluster() -> None:
    profile = jobs.load_profile(PROFILES / "local.yaml")
    assert profile.partition == "debug" and profile.gpus_per_node == 0 and profile.cpus_per_gpu == 1


def test_optional_fields_default_to_none(tmp_path: Path) -> None:
    profile = jobs.load_profile(_write(tmp_path, LOCAL_PROFILE))
    assert profile.account is None and profile.qos is None and profile.mem_per_gpu_gb is None
    assert profile.setup == ()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (LOCAL_PROFILE + "partiton: gpu\n", "unknown field 'partiton'"),
        (LOCAL_PROFILE.replace("max_requeues: 20\n", ""), "missing required field 'max_requeues'"),
        (LOCAL_PROFILE.replace("cpus_per_gpu: 1", "cpus_per_gpu: two"), "'cpus_per_gpu' must be int"),
        (LOCAL_PROFILE.replace("cpus_per_gpu: 1", "cpus_per_gpu: true"), "'cpus_per_gpu' must be int"),
        (LOCAL_PROFILE.replace("gpus_per_node: 0", "gpus_per_node: null"), "'gpus_per_node' may not be null"),
        (LOCAL_PROFILE + "setup: echo hi\n", "'setup' must be a list of strings"),
        (LOCAL_PROFILE.replace("signal_delay_s: 20", "signal_delay_s: -1"), "signal_delay_s must be >= 0"),
        ("- just\n- a list\n", "expected a mapping"),
        ("partition: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_profiles_give_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(jobs.ProfileError, match=match) as info:
        jobs.load_profile(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(jobs.ProfileError, match="not found"):
        jobs.load_profile(tmp_path / "nope.yaml")


# ------------------------------------------------------------------------------------------------ the job
def test_train_job_pickles(tmp_path: Path) -> None:
    job = jobs.TrainJob(smoke_spec(), tmp_path / "run", tmp_path / "data")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        again = loads(dumps(job))
        assert again == job and again is not job
        assert again.spec.to_json() == job.spec.to_json()


def test_checkpoint_returns_an_equal_fresh_job(tmp_path: Path) -> None:
    job = jobs.TrainJob(smoke_spec(), tmp_path / "run")
    delayed = job.checkpoint()
    assert isinstance(delayed, submitit.helpers.DelayedSubmission)
    assert delayed.function == job and delayed.function is not job
    assert delayed.args == () and delayed.kwargs == {}
    # Requeueing twice gives the same job again: nothing accumulates (the original rescaled lr each time).
    assert delayed.function.checkpoint().function == job


class _FakeStop(Exception):
    pass


class _SignallingJob(jobs.TrainJob):
    """A job whose engine sends itself a signal, then polls should_stop like the real engine does."""

    sent = signal.SIGUSR2

    def _engine(self):  # type: ignore[override]
        def run(spec, workdir, *, data_root=None, should_stop=None):
            assert should_stop is not None and not should_stop()
            os.kill(os.getpid(), self.sent)
            for _ in range(1000):  # "optimiser steps": the handler only sets the flag
                if should_stop():
                    raise _FakeStop("saved at a step boundary")
            raise AssertionError("should_stop never turned true")

        return run, _FakeStop


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_sets_flag_then_hands_over_and_restores(tmp_path: Path, sig: signal.Signals) -> None:
    calls: list[int] = []

    def submitit_like(signum, frame):  # stands for submitit's checkpoint_and_try_requeue
        calls.append(signum)

    previous_usr2 = signal.signal(signal.SIGUSR2, submitit_like)
    previous_term = signal.getsignal(signal.SIGTERM)
    try:
        job = _SignallingJob(smoke_spec(), tmp_path / "run")
        job.sent = sig
        with pytest.raises(_FakeStop):  # outside SLURM the stop propagates: relaunch to resume
            job()
        # Only USR2 means "requeue": it reaches submitit's handler after the save, never during a step.
        assert calls == ([signal.SIGUSR2] if sig == signal.SIGUSR2 else [])
        assert signal.getsignal(signal.SIGUSR2) is submitit_like
        assert signal.getsignal(signal.SIGTERM) is previous_term
    finally:
        signal.signal(signal.SIGUSR2, previous_usr2)


# ------------------------------------------------------------------------------------------------ submit
def test_submit_refuses_bad_requests(tmp_path: Path) -> None:
    job = [jobs.TrainJob(smoke_spec(), tmp_path / "run")]
    with pytest.raises(jobs.JobError, match="unknown cluster 'slrum'"):
        jobs.submit(job, cluster="slrum", folder=tmp_path)
    with pytest.raises(jobs.JobError, match="one task per GPU"):
        jobs.submit(job, cluster="slurm", folder=tmp_path, gpus_per_node=2, tasks_per_node=1)
    with pytest.raises(jobs.JobError, match="nodes must be 1"):
        jobs.submit(job, cluster="local", folder=tmp_path, nodes=2)
    profile = jobs.load_profile(PROFILES / "local.yaml")
    with pytest.raises(jobs.JobError, match="profile .* has 0"):
        jobs.submit(job, cluster="slurm", folder=tmp_path, profile=profile, gpus_per_node=1, tasks_per_node=1)


def test_fresh_folder_is_new_each_time(tmp_path: Path) -> None:
    first, second = jobs.fresh_folder(tmp_path), jobs.fresh_folder(tmp_path)
    assert first != second and first.is_dir() and second.is_dir() and not any(first.iterdir())


def test_profile_becomes_sbatch_options() -> None:
    profile = jobs.load_profile(PROFILES / "example.yaml")
    params = jobs._slurm_profile_parameters(profile, count=3)
    assert params["slurm_partition"] == "gpu" and params["slurm_signal_delay_s"] == 120
    assert params["slurm_array_parallelism"] == 3  # never more than the array has members
    assert "slurm_account" not in params  # null: the cluster default applies


def test_debug_executor_runs_a_smoke_job(tmp_path: Path, fixture_data_root: Path) -> None:
    workdir = tmp_path / "run"
    submitted = jobs.submit(
        [jobs.TrainJob(smoke_spec(), workdir, fixture_data_root)], cluster="debug", folder=tmp_path / "sub"
    )
    [result] = jobs.wait(submitted, poll_s=0.1)
    assert result == json.loads((workdir / "result.json").read_text())
    assert result["epochs"] == 1 and result["world_size"] == 1


@pytest.mark.slow
def test_local_executor_runs_an_array(tmp_path: Path, fixture_data_root: Path) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    submitted = jobs.submit(
        [jobs.TrainJob(smoke_spec(), run, fixture_data_root) for run in runs],
        cluster="local",
        folder=tmp_path / "sub",
        timeout_min=5,
    )
    results = jobs.wait(submitted, poll_s=0.5, timeout_s=300)
    assert results[0] == results[1] | {"wall_time_s": results[0]["wall_time_s"]}
    assert all((run / "result.json").exists() for run in runs)


def test_failed_job_raises_with_its_log(tmp_path: Path) -> None:
    # No data prepared under this root: the job fails and the error carries the job's stderr tail.
    submitted = jobs.submit(
        [jobs.TrainJob(smoke_spec(), tmp_path / "run", tmp_path / "no-data")],
        cluster="local",
        folder=tmp_path / "sub",
        timeout_min=5,
    )
    with pytest.raises(jobs.JobError, match=r"failed") as info:
        jobs.wait(submitted, poll_s=0.5, timeout_s=300)
    assert "stderr tail" in str(info.value) and "cifar10-fixture" in str(info.value)
