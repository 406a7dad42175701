"""``launch.py SUITE --check``: the preflight (``convit.doctor``) for exactly what the launch would run.

Run as a user types it (``python experiments/launch.py ...``): the exit status says whether anything blocks,
each finding is one line, and nothing is trained or written.
"""

from __future__ import annotations

import os
from pathlib import Path

from tiny import launch


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(extra)
    return env


def test_check_passes_where_the_suite_can_run(tmp_path: Path, fixture_data_root: Path) -> None:
    proc = launch(
        "sample_efficiency", "--scale", "smoke", "--check", "--data-root", str(fixture_data_root),
        "--workdir", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
        env=_env(CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "preflight: nothing blocks this launch" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # a preflight trains nothing and creates no run directory


def test_check_blocks_an_unprepared_dataset_and_a_gpu_scale_without_gpus(tmp_path: Path) -> None:
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = launch(
        "sample_efficiency", "--scale", "reduced", "--check", "--data-root", str(empty),
        "--workdir", str(tmp_path / "runs"), "--results", str(tmp_path / "results"),
        env=_env(CUDA_VISIBLE_DEVICES=""),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    blocks = [line for line in proc.stdout.splitlines() if line.startswith("BLOCK")]
    assert any("tiny-imagenet" in line for line in blocks), proc.stdout  # the dataset the suite needs
    assert any("GPU" in line for line in blocks), proc.stdout  # reduced is costed on a GPU; none here
    assert "Traceback" not in proc.stderr
