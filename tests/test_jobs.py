"""convit.jobs without SLURM: profiles, the picklable job, its signal handling, debug and local executors."""

from __future__ import annotations

import dataclasses
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


# ------------------------------------------------------------------------------------------------ CPUs, srun
def test_too_few_cpus_per_task_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = smoke_spec()
    hungry = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, workers=8))
    profile = jobs.load_profile(PROFILES / "local.yaml")  # 1 CPU per task
    with pytest.raises(
        jobs.JobError, match=r"gives 1 CPU\(s\) per task.* 8 DataLoader worker\(s\).* need 9"
    ) as info:
        jobs.submit(
            [jobs.TrainJob(hungry, tmp_path / "run")], cluster="slurm", folder=tmp_path, profile=profile
        )
    assert "\n" not in str(info.value) and "local.yaml" in str(info.value)
    with pytest.raises(jobs.JobError, match="gives 4 CPU"):
        jobs.submit(
            [jobs.TrainJob(hungry, tmp_path / "run")], cluster="slurm", folder=tmp_path, cpus_per_task=4
        )
    assert not any(tmp_path.iterdir())  # refused before any submitit folder was made
    assert jobs.cpus_needed([jobs.TrainJob(hungry, tmp_path / "run"), jobs.TrainJob(spec, tmp_path)]) == 9


def test_example_profile_feeds_the_paper_scale_workers() -> None:
    from experiments.common import get_scale

    profile = jobs.load_profile(PROFILES / "example.yaml")
    assert profile.cpus_per_gpu >= get_scale("paper").workers + 1
    assert profile.cpus_per_gpu >= get_scale("reduced").workers + 1


def test_srun_gets_the_cpus_and_kill_on_bad_exit() -> None:
    assert jobs.srun_args(11, 1) == ["--cpus-per-task=11"]
    assert jobs.srun_args(11, 16) == ["--cpus-per-task=11", "--kill-on-bad-exit=1"]


# ------------------------------------------------------------------------------------------------ GPUs
class _EnvProbe:
    """A submitted callable that reports what its process sees (after sleeping, to hold its GPUs a while)."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        self.sleep_s = sleep_s

    def __call__(self) -> dict:
        import time

        time.sleep(self.sleep_s)
        return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


class _EnvJob(jobs.TrainJob):
    """A TrainJob whose engine reports the environment each task trains in instead of training."""

    def _engine(self):  # type: ignore[override]
        def run(spec, workdir, *, data_root=None, should_stop=None, device=None):
            return {
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "local_rank": os.environ.get("LOCAL_RANK"),
                "world_size": os.environ.get("WORLD_SIZE"),
                "device": device,
            }

        return run, _FakeStop


@pytest.fixture
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local jobs unpickle callables defined in this module: let their processes import it."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(REPO / "tests") + (os.pathsep + path if path else ""))


def test_visible_gpus_reads_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6,7")
    assert jobs.visible_gpus() == [4, 6, 7]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,-1,2")  # CUDA stops at the first invalid entry
    assert jobs.visible_gpus() == [0, 1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert jobs.visible_gpus() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f6a1c2e-0000")
    with pytest.raises(jobs.JobError, match="by UUID"):
        jobs.visible_gpus()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)  # faked: a 3-GPU workstation
    assert jobs.visible_gpus() == [0, 1, 2]
    assert jobs._local_slots(3, 1) == [(0,), (1,), (2,)]
    assert jobs._local_slots(1, 2) == [(0, 1)]
    with pytest.raises(jobs.JobError, match=r"2 local run\(s\) x 2 GPU\(s\) need 4 free GPU\(s\): 3 visible"):
        jobs._local_slots(2, 2)


@pytest.mark.slow
def test_local_slots_get_their_own_gpus(tmp_path: Path, monkeypatch, importable_tests) -> None:
    """Real local jobs: each slot sees its own GPU out of the user's CUDA_VISIBLE_DEVICES (submitit alone
    gives every job CUDA_VISIBLE_DEVICES=0), and a slot is handed out again once its job has ended."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    first = jobs.submit(
        [_EnvProbe(8.0), _EnvProbe(8.0)], cluster="local", folder=tmp_path, gpus_per_node=1, timeout_min=5
    )
    with pytest.raises(jobs.JobError, match="held by running local jobs; lower --parallel"):
        jobs.submit([_EnvProbe()], cluster="local", folder=tmp_path, gpus_per_node=1, timeout_min=5)
    assert [r["visible"] for r in jobs.wait(first, poll_s=0.5, timeout_s=120)] == ["3", "5"]
    again = jobs.submit([_EnvProbe()], cluster="local", folder=tmp_path, gpus_per_node=1, timeout_min=5)
    assert jobs.wait(again, poll_s=0.5, timeout_s=120)[0]["visible"] == "3"
    cpu = jobs.submit([_EnvProbe()], cluster="local", folder=tmp_path, timeout_min=5)
    assert jobs.wait(cpu, poll_s=0.5, timeout_s=120)[0]["visible"] == ""  # no GPUs asked: none visible


@pytest.mark.slow
def test_multi_task_job_keeps_the_assigned_gpus(tmp_path: Path, monkeypatch, importable_tests) -> None:
    """submitit's real TorchDistributedEnvironment().export() in a real 2-task job: every rank still sees
    the job's GPUs (export() would have set CUDA_VISIBLE_DEVICES to its LOCAL_RANK), and the job is sent
    with device="cuda" because it was submitted with GPUs."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    job = _EnvJob(smoke_spec(), tmp_path / "run")
    [submitted] = jobs.submit(
        [job], cluster="local", folder=tmp_path / "sub", gpus_per_node=2, tasks_per_node=2, timeout_min=5
    )
    submitted.wait()
    results = submitted.results()
    assert [r["visible"] for r in results] == ["6,7", "6,7"]
    assert sorted(r["local_rank"] for r in results) == ["0", "1"] and results[0]["world_size"] == "2"
    assert {r["device"] for r in results} == {"cuda"}
    assert job.device is None  # the caller's job is left as it was


class _EnvEvalJob:
    """A real EvalJob whose evaluation (in the job's own process) reports the environment it would run in."""

    def __init__(self, spec: RunSpec, workdir: Path) -> None:
        from experiments.evaluate import EvalJob

        self.job = EvalJob(spec, workdir, workdir / "checkpoint.pth")

    def __call__(self) -> dict:
        import experiments.evaluate as evaluate

        evaluate.evaluate = lambda *a, **k: {  # the job's process only; EvalJob.__call__ itself is real
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "local_rank": os.environ.get("LOCAL_RANK"),
            "world_size": os.environ.get("WORLD_SIZE"),
        }
        return self.job()


@pytest.mark.slow
def test_multi_task_eval_job_keeps_the_assigned_gpus(tmp_path: Path, monkeypatch, importable_tests) -> None:
    """Eval-only jobs export the process group the same way as training jobs: SLURM's (here the local
    executor's) CUDA_VISIBLE_DEVICES survives submitit's export() in every rank of a real 2-task job."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{os.environ['PYTHONPATH']}")  # experiments.*
    [submitted] = jobs.submit(
        [_EnvEvalJob(smoke_spec(), tmp_path / "run")],
        cluster="local",
        folder=tmp_path / "sub",
        gpus_per_node=2,
        tasks_per_node=2,
        timeout_min=5,
    )
    submitted.wait()
    results = submitted.results()
    assert [r["visible"] for r in results] == ["6,7", "6,7"]  # export() alone would give "0" and "1"
    assert sorted(r["local_rank"] for r in results) == ["0", "1"] and results[0]["world_size"] == "2"


@pytest.mark.slow
def test_gpu_job_without_usable_cuda_fails_in_one_line(
    tmp_path: Path, monkeypatch, fixture_data_root
) -> None:
    """A job submitted with a GPU on a machine whose CUDA cannot run: it stops before touching its run
    directory, and the failure's summary line is the DeviceError (not submitit's log paths)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    workdir = tmp_path / "run"
    submitted = jobs.submit(
        [jobs.TrainJob(smoke_spec(), workdir, fixture_data_root)],
        cluster="local",
        folder=tmp_path / "sub",
        gpus_per_node=1,
        timeout_min=5,
    )
    with pytest.raises(jobs.JobError) as info:
        jobs.wait(submitted, poll_s=0.5, timeout_s=300)
    first = str(info.value).splitlines()[0]
    assert "DeviceError: device 'cuda' requested but torch sees no CUDA GPU here" in first
    assert not workdir.exists()


def test_failure_line_finds_the_exception_in_submitits_message() -> None:
    error = submitit.core.utils.FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent "
        'call last):\n  File "x.py", line 1\nconvit.distributed.DeviceError: no GPU\n\n'
        "----------------------\n"
        "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n  - /a.err\n  - /a.out"
    )
    assert jobs.failure_line(error) == "convit.distributed.DeviceError: no GPU"
    assert jobs.failure_line(RuntimeError("plain\nlast line")) == "last line"
