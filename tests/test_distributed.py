"""convit.distributed's device choice: no silent CPU fallback, the right GPU per rank, CUDA facts judged.

This machine has no GPU; GPU facts (a visible device count, a capability, a driver version) are faked by
monkeypatching ``torch.cuda`` and the driver probe, with environment variables as SLURM sets them. The run
directory tests are real: ``convit.train.run`` and its CLI on this CPU machine, in a task that "holds" GPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from convit import distributed
from convit.distributed import CudaFacts, DeviceError, cuda_problem, gpus_expected, kernel_for

from tiny import tiny_spec

REPO = Path(__file__).resolve().parents[1]
#: the pinned wheel's arch list (torch 2.14.1+cu130)
WHEEL_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
SLURM_GPU_VARS = (
    "SLURM_STEP_GPUS",
    "SLURM_JOB_GPUS",
    "SLURM_GPUS_ON_NODE",
    "SLURM_GPUS_PER_TASK",
    "SLURM_GPUS_PER_NODE",
    "SLURM_GPUS",
)


def facts(**overrides) -> CudaFacts:
    """An H100 node with a driver for CUDA 13.0 and the pinned wheel, unless overridden."""
    base = dict(
        torch_version="2.14.1+cu130",
        runtime="13.0",
        arch_list=WHEEL_ARCHS,
        driver="13.0",
        available=True,
        devices=(("NVIDIA H100 80GB HBM3", (9, 0)),),
    )
    return CudaFacts(**(base | overrides))


@pytest.fixture(autouse=True)
def _no_slurm_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SLURM_GPU_VARS:
        monkeypatch.delenv(name, raising=False)


def fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int, capability=(9, 0), driver: str = "13.0") -> None:
    """Make torch and the driver probe report ``count`` visible GPUs of ``capability``."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {capability}")
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(WHEEL_ARCHS))
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(distributed, "_driver_version", lambda: driver)
    monkeypatch.setattr(distributed, "_driver_devices", lambda: ())


# ------------------------------------------------------------------------------------------------ arch rules
@pytest.mark.parametrize(
    ("capability", "archs", "expected"),
    [
        ((7, 0), WHEEL_ARCHS, None),  # V100: the wheel has no sm_70 and no PTX
        ((7, 5), WHEEL_ARCHS, "sm_75"),
        ((8, 6), WHEEL_ARCHS, "sm_86"),  # the newest cubin that fits (sm_80 would run too)
        ((8, 9), ("sm_80", "sm_90"), "sm_80"),  # a binary runs on later minors of its major
        ((9, 0), ("sm_80", "sm_86"), None),  # ... never on a later major
        ((8, 0), ("sm_86",), None),  # ... nor on an earlier minor
        ((7, 0), ("sm_75", "compute_70"), "compute_70"),  # PTX compiles for any capability >= its own
        ((12, 0), ("sm_90", "compute_90"), "compute_90"),
        ((8, 6), ("compute_90",), None),
        ((9, 0), ("sm_90a",), "sm_90a"),  # architecture-specific: that capability only
        ((10, 3), ("sm_100a",), None),
        ((10, 3), ("sm_100f",), "sm_100f"),  # family-specific: later minors of the family
        ((12, 1), ("sm_120",), "sm_120"),  # three-digit codes: major 12, minor 0
    ],
)
def test_kernel_for_follows_cuda_compatibility(capability, archs, expected) -> None:
    assert kernel_for(capability, archs) == expected


# ------------------------------------------------------------------------------------------------ CUDA facts
def test_usable_gpu_has_no_problem() -> None:
    assert cuda_problem(facts=facts()) is None
    assert cuda_problem(facts=facts(driver="13.2")) is None


def test_v100_with_the_pinned_wheel_is_named() -> None:
    problem = cuda_problem(facts=facts(devices=(("Tesla V100-SXM2-32GB", (7, 0)),)))
    assert problem is not None and "\n" not in problem
    assert "Tesla V100-SXM2-32GB" in problem and "7.0" in problem and "sm_70" in problem
    assert "sm_75 sm_80 sm_86 sm_90 sm_100 sm_120" in problem


def test_driver_older_than_the_runtime_is_named() -> None:
    problem = cuda_problem(facts=facts(driver="12.2", available=False, devices=(("Tesla V100", (7, 0)),)))
    assert problem is not None and "CUDA up to 12.2" in problem and "CUDA 13.0 runtime" in problem


def test_minor_version_compatibility_is_not_a_problem_but_ptx_needs_a_new_driver() -> None:
    # a 13.0 runtime runs on a 13.x driver (minor-version compatibility)...
    assert cuda_problem(facts=facts(runtime="13.2", driver="13.0")) is None
    # ...except that the driver cannot compile PTX newer than itself
    ptx = facts(runtime="13.2", driver="13.0", arch_list=("sm_80", "compute_80"), devices=(("G", (9, 0)),))
    assert "compute_80" in (cuda_problem(facts=ptx) or "")


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (dict(runtime=None, torch_version="2.14.1+cpu", arch_list=()), "has no CUDA support"),
        (dict(driver=None, available=False, devices=()), "no NVIDIA driver"),
        (dict(available=False, devices=(), visible=""), "CUDA_VISIBLE_DEVICES is empty"),
        (dict(available=False, devices=(), visible="7"), "no GPU visible (CUDA_VISIBLE_DEVICES='7')"),
    ],
)
def test_other_problems_are_one_line(overrides, needle) -> None:
    problem = cuda_problem(facts=facts(**overrides))
    assert problem is not None and needle in problem and "\n" not in problem


def test_index_past_the_visible_devices() -> None:
    assert "only 1 CUDA device(s)" in (cuda_problem(3, facts=facts()) or "")


def test_this_machine_reports_no_driver() -> None:
    """The real probe on this CPU machine (no libcuda): what the CPU-only path of doctor relies on."""
    real = distributed.cuda_facts()
    assert real.runtime == torch.version.cuda and real.arch_list == tuple(torch.cuda.get_arch_list())
    if not torch.cuda.is_available():
        assert real.devices == () and cuda_problem(facts=real) is not None


# ---------------------------------------------------------------------------------- who wants GPUs
@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"SLURM_JOB_ID": "7", "SLURM_CPUS_ON_NODE": "2"}, False),
        ({"SLURM_JOB_GPUS": "4,5,6,7"}, True),
        ({"SLURM_STEP_GPUS": "0"}, True),
        ({"SLURM_GPUS_ON_NODE": "8"}, True),
        ({"SLURM_GPUS_ON_NODE": "0"}, False),
        ({"SLURM_GPUS_PER_NODE": "a100:2"}, True),
        ({"SLURM_GPUS_PER_TASK": "1"}, True),
        ({"SLURM_GPUS": ""}, False),
    ],
)
def test_gpus_expected_reads_slurm_variables(env, wanted) -> None:
    reason = gpus_expected(env)
    assert (reason is not None) == wanted
    if wanted:
        name, value = next(iter(env.items()))
        assert f"{name}={value}" in reason


# --------------------------------------------------------------------------------- device per rank
@pytest.mark.parametrize(
    ("count", "local_rank", "index"),
    [(4, 0, 0), (4, 3, 3), (1, 2, 0), (8, 5, 5)],  # one visible GPU per task (--gpus-per-task): cuda:0
)
def test_rank_picks_its_gpu_among_the_visible(monkeypatch, count, local_rank, index) -> None:
    fake_gpus(monkeypatch, count)
    assert distributed._pick_device(None, local_rank) == torch.device("cuda", index)
    assert distributed._pick_device("cuda", local_rank) == torch.device("cuda", index)
    monkeypatch.setenv("SLURM_JOB_GPUS", "4,5,6,7")
    assert distributed._pick_device(None, local_rank) == torch.device("cuda", index)


def test_local_rank_past_the_visible_gpus(monkeypatch) -> None:
    fake_gpus(monkeypatch, 2)
    with pytest.raises(DeviceError, match="LOCAL_RANK=3 but only 2"):
        distributed._pick_device("cuda", 3)


def test_unsupported_gpu_is_an_error_even_unasked(monkeypatch) -> None:
    """A V100 with the pinned wheel: torch.cuda.is_available() is True, yet no kernel would run."""
    fake_gpus(monkeypatch, 1, capability=(7, 0))
    assert torch.cuda.is_available()
    for requested in (None, "cuda", "cuda:0"):
        with pytest.raises(DeviceError, match=r"compute capability 7\.0") as info:
            distributed._pick_device(requested, 0)
        assert "\n" not in str(info.value)
        if requested is None:  # nobody asked for the GPU: say how to train on the CPU (CLIs without --device)
            assert "CUDA_VISIBLE_DEVICES= to hide it" in str(info.value)
    assert distributed._pick_device("cpu", 0) == torch.device("cpu")  # asked for explicitly: fine


def test_driver_too_old_is_an_error_when_a_gpu_is_there(monkeypatch) -> None:
    fake_gpus(monkeypatch, 0, driver="12.2")
    monkeypatch.setattr(distributed, "_driver_devices", lambda: (("Tesla V100", (7, 0)),))
    with pytest.raises(DeviceError, match=r"CUDA up to 12\.2 .* CUDA 13\.0 runtime"):
        distributed._pick_device(None, 0)


def test_slurm_gpu_task_without_usable_cuda_never_falls_back(monkeypatch) -> None:
    fake_gpus(monkeypatch, 0, driver=None)
    assert distributed._pick_device(None, 0) == torch.device("cpu")  # no GPU anywhere, none asked: CPU
    monkeypatch.setenv("SLURM_JOB_GPUS", "4")
    with pytest.raises(DeviceError, match="SLURM_JOB_GPUS=4.*refusing to fall back to the CPU"):
        distributed._pick_device(None, 0)
    # setup() refuses before any process group exists (the real thing, not just the helper)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(DeviceError):
        distributed.setup()
    assert not torch.distributed.is_initialized()


def test_this_cpu_machine_still_trains_on_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert distributed._pick_device(None, 0) == torch.device("cpu")
    ctx = distributed.setup()
    assert ctx.device == torch.device("cpu") and ctx.world_size == 1


# ----------------------------------------------------------------------------------- run directory
def test_run_in_a_gpu_task_without_cuda_touches_nothing(tmp_path, monkeypatch, fixture_data_root) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from convit import train

    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    workdir = tmp_path / "run"
    spec = tiny_spec(classes=2, suite="test_distributed")
    with pytest.raises(DeviceError, match="SLURM_JOB_GPUS=0"):
        train.run(spec, workdir, data_root=fixture_data_root)
    assert not workdir.exists()
    with pytest.raises(DeviceError, match="device 'cuda' requested"):
        train.run(spec, workdir, data_root=fixture_data_root, device="cuda")
    assert not workdir.exists()


def test_train_cli_in_a_gpu_task_says_one_line(tmp_path, fixture_data_root) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(tiny_spec(classes=2, suite="test_distributed").to_json())
    env = {k: v for k, v in os.environ.items() if k not in SLURM_GPU_VARS} | {"SLURM_GPUS_ON_NODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "convit.train", str(spec_file), str(tmp_path / "run")]
        + ["--data-root", str(fixture_data_root)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "SLURM_GPUS_ON_NODE=1" in proc.stderr and "refusing to fall back" in proc.stderr
    assert not (tmp_path / "run").exists()
    assert json.loads(spec_file.read_text())  # untouched input


def test_pick_device_reads_local_rank(monkeypatch) -> None:
    fake_gpus(monkeypatch, 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert distributed.pick_device() == torch.device("cuda", 2)
    assert distributed.pick_device("cpu") == torch.device("cpu")
    assert distributed.pick_device(local_rank=1) == torch.device("cuda", 1)
