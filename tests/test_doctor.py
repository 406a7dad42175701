"""python -m convit.doctor: the preflight, on this CPU machine's real facts and on faked GPU facts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convit import doctor
from convit.distributed import CudaFacts

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "slurm" / "profiles"
WHEEL_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120")
PROFILE = """\
partition: gpu
gpus_per_node: {gpus}
cpus_per_gpu: {cpus}
max_requeues: {requeues}
signal_delay_s: 120
timeout_min: {timeout}
"""


def gpu_facts(
    *devices: tuple[str, tuple[int, int]], driver: str | None = "13.0", available=True
) -> CudaFacts:
    return CudaFacts("2.14.1+cu130", "13.0", WHEEL_ARCHS, driver, available, tuple(devices))


NO_GPU = CudaFacts("2.14.1+cu130", "13.0", WHEEL_ARCHS, None, False, ())
H100 = gpu_facts(("NVIDIA H100", (9, 0)))
V100 = gpu_facts(("Tesla V100-SXM2-32GB", (7, 0)))


def profile(tmp_path: Path, gpus=8, cpus=11, requeues=10, timeout=1440) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE.format(gpus=gpus, cpus=cpus, requeues=requeues, timeout=timeout))
    return path


def by_topic(findings, topic: str) -> list[doctor.Finding]:
    return [f for f in findings if f.topic == topic]


def blocked(findings, topic: str) -> bool:
    return any(f.blocker for f in by_topic(findings, topic))


@pytest.fixture
def folders(tmp_path: Path) -> dict:
    return {"workdir": tmp_path / "runs", "results": tmp_path / "results"}


def test_every_finding_is_one_line(tmp_path, folders) -> None:
    for findings in (
        doctor.check(**folders),
        doctor.check("main_table", "paper", profile(tmp_path), **folders, facts=V100, data_root=tmp_path),
        doctor.check("nope", "cpu", **folders),
    ):
        assert findings and all("\n" not in str(f) for f in findings)


def test_this_cpu_machine_without_a_suite_has_no_blocker(folders) -> None:
    findings = doctor.check(**folders, facts=NO_GPU)
    assert not any(f.blocker for f in findings), findings
    assert "CPU only" in str(by_topic(findings, "cuda")[0])


def test_gpu_scale_locally_without_a_gpu_is_a_blocker(folders, fixture_data_root) -> None:
    local = doctor.check("sample_efficiency", "reduced", **folders, facts=NO_GPU, data_root=fixture_data_root)
    assert blocked(local, "gpus") and blocked(local, "cuda")
    # the cpu scale is fine on this machine (its data aside)
    cpu = doctor.check("sample_efficiency", "cpu", **folders, facts=NO_GPU, data_root=fixture_data_root)
    assert not blocked(cpu, "gpus") and not blocked(cpu, "cuda")


def test_targeting_slurm_makes_login_node_gpu_facts_informational(tmp_path, folders) -> None:
    findings = doctor.check("sample_efficiency", "reduced", profile(tmp_path), **folders, facts=NO_GPU)
    cuda = by_topic(findings, "cuda")
    assert cuda and not any(f.blocker for f in cuda) and "login node" in str(cuda[0])
    assert not blocked(findings, "gpus") and not blocked(findings, "cpus")


def test_v100_with_the_pinned_wheel_is_a_blocker_locally(folders) -> None:
    findings = doctor.check("sample_efficiency", "reduced", **folders, facts=V100)
    gpu = by_topic(findings, "gpu")
    assert gpu[0].blocker and "capability 7.0" in gpu[0].text and "no kernels" in gpu[0].text
    assert blocked(findings, "cuda") and "sm_70" in str(by_topic(findings, "cuda")[0])


def test_paper_scale_warns_that_the_wheel_cannot_drive_its_v100(tmp_path, folders) -> None:
    findings = doctor.check("main_table", "paper", profile(tmp_path), **folders, facts=NO_GPU)
    assert any(f.level == doctor.WARN and "sm_70" in f.text for f in by_topic(findings, "torch"))


def test_usable_gpu_and_driver_too_old(folders) -> None:
    good = doctor.check(**folders, facts=H100)
    assert not any(f.blocker for f in good)
    assert "kernels sm_90, bf16" in str(by_topic(good, "gpu")[0])
    old = doctor.check(
        "sample_efficiency", "reduced", **folders, facts=gpu_facts(driver="12.2", available=False)
    )
    assert blocked(old, "cuda") and "CUDA up to 12.2" in str(by_topic(old, "cuda")[-1])


def test_bf16_on_a_pre_ampere_gpu_is_a_warning(folders) -> None:
    t4 = gpu_facts(("Tesla T4", (7, 5)))
    findings = doctor.check("sample_efficiency", "reduced", **folders, facts=t4)
    assert [f.level for f in by_topic(findings, "bf16")] == [doctor.WARN]
    assert "no native bf16" in str(by_topic(findings, "gpu")[0])


def test_profile_cpus_gpus_and_time(tmp_path, folders) -> None:
    ok = doctor.check("main_table", "paper", profile(tmp_path), **folders, facts=NO_GPU)
    assert not any(blocked(ok, t) for t in ("cpus", "gpus", "time", "profile"))
    few_cpus = doctor.check("main_table", "paper", profile(tmp_path, cpus=10), **folders, facts=NO_GPU)
    assert blocked(few_cpus, "cpus") and "need 11 (workers + 1)" in str(by_topic(few_cpus, "cpus")[0])
    few_gpus = doctor.check("main_table", "paper", profile(tmp_path, gpus=4), **folders, facts=NO_GPU)
    assert blocked(few_gpus, "gpus")
    short = doctor.check(
        "main_table", "paper", profile(tmp_path, requeues=0, timeout=60), **folders, facts=NO_GPU
    )
    assert blocked(short, "time") and "60 min x 1 attempts" in str(by_topic(short, "time")[0])
    cpu_cluster = doctor.check("main_table", "paper", PROFILES / "local.yaml", **folders, facts=NO_GPU)
    assert blocked(cpu_cluster, "gpus")  # a GPU scale on the CPU-only test cluster


def test_bad_inputs_are_blockers_not_tracebacks(tmp_path, folders) -> None:
    assert blocked(doctor.check("nope", "cpu", **folders), "suite")
    assert blocked(doctor.check("main_table", "huge", **folders), "suite")
    assert blocked(doctor.check("main_table", "cpu", tmp_path / "missing.yaml", **folders), "profile")
    assert blocked(doctor.check(cluster="slurm", **folders), "profile")


def test_datasets(tmp_path, folders, fixture_data_root) -> None:
    ready = doctor.check("sample_efficiency", "smoke", **folders, facts=NO_GPU, data_root=fixture_data_root)
    assert [f.level for f in by_topic(ready, "data")] == [doctor.OK]
    assert not any(f.blocker for f in ready), ready
    empty = doctor.check("sample_efficiency", "smoke", **folders, facts=NO_GPU, data_root=tmp_path / "none")
    [data] = by_topic(empty, "data")
    assert data.blocker and "python -m convit.data prepare cifar10-fixture" in data.text


def test_folders(tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    findings = doctor.check(workdir=a_file / "runs", results=tmp_path / "new" / "results", facts=NO_GPU)
    runs, results = by_topic(findings, "folders")
    assert runs.blocker and "not a folder" in runs.text
    assert not results.blocker and "created on first use" in results.text
    assert not (tmp_path / "new").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_exit_status(tmp_path) -> None:
    env = os.environ | {"CONVIT_RUNS": str(tmp_path / "runs")}
    base = [sys.executable, "-m", "convit.doctor", "--results", str(tmp_path / "results")]
    machine = subprocess.run(base, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert machine.returncode == 0, machine.stdout + machine.stderr
    assert machine.stdout.strip().splitlines()[-1] == "no blockers" and "Traceback" not in machine.stderr
    bad = subprocess.run(base + ["nope"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert bad.returncode == 1 and "BLOCK suite: unknown suite 'nope'" in bad.stdout
    assert doctor.main(["--cluster", "slurm", "--results", str(tmp_path)]) == 1


def test_an_unusable_gpu_blocks_even_a_cpu_scale_locally(tmp_path, folders) -> None:
    """Training refuses a present-but-unusable GPU (no silent CPU fallback), so doctor must say so too."""
    cpu_scale = doctor.check("sample_efficiency", "cpu", **folders, facts=V100)
    assert blocked(cpu_scale, "cuda") and blocked(cpu_scale, "gpu")
    assert blocked(doctor.check(**folders, facts=V100), "cuda")
    on_slurm = doctor.check("sample_efficiency", "cpu", profile(tmp_path), **folders, facts=V100)
    assert not blocked(on_slurm, "cuda") and not blocked(on_slurm, "gpu")
