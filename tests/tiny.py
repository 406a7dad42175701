"""What several test modules share (a helper module, not a test file): the tiny training spec of the job and
SLURM tests, and the launcher CLI runner of the experiment and distillation tests.

Seconds on a CPU: a 2-block ConViT-Ti (1 GPSA + 1 MHSA, patch 8) on the first ``classes`` classes of the
CIFAR-10 fixture (20 images each) at 32 px, without repeated augmentation or loader workers, so a run's cost
is dominated by process start-up, which is what the scheduler tests exercise.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec


def tiny_spec(*, classes: int, suite: str, epochs: int = 1, seed: int = 0, eval_every: int = 1) -> RunSpec:
    """A few-second run; ``suite`` tags it with the test module that owns it."""
    return RunSpec(
        model=ModelSpec("convit_tiny", {"depth": 2, "patch_size": 8, "local_up_to_layer": 1}),
        data=DataSpec("cifar10-fixture", img_size=32, num_classes=classes),
        recipe=RecipeSpec(epochs=epochs, warmup_epochs=1.0, batch_size=16, repeated_aug=False, amp="none"),
        resources=ResourceSpec(workers=0, timeout_min=5),
        probes=ProbeSpec(every=1000),
        seed=seed,
        eval_every=eval_every,
        tags={"suite": suite},
    )


REPO = Path(__file__).resolve().parents[1]


def launch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python experiments/launch.py ARGS`` from the repo root, as a user types it (no stdin, 5 min cap)."""
    return subprocess.run(
        [sys.executable, str(REPO / "experiments" / "launch.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env,
        timeout=300,
    )


def slurm_cluster_problem() -> str | None:
    """Why the single-node SLURM tests (``slurm/cluster.sh``) cannot run here, or None when a node is up."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: start the test cluster with `bash slurm/cluster.sh start`"
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"sinfo failed ({error}): run `bash slurm/cluster.sh start`"
    if out.returncode != 0:
        return f"no SLURM controller answers ({out.stderr.strip()}): run `bash slurm/cluster.sh start`"
    states = out.stdout.split()
    if not any(s.rstrip("*") in ("idle", "mixed", "allocated", "completing") for s in states):
        return f"no usable SLURM node (states: {states}): run `bash slurm/cluster.sh start`"
    return None
