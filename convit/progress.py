"""Progress inside an epoch: a bar on a terminal, lines in a log, and ``progress.json`` for the launcher.

Why: a training epoch at the ``cpu`` scale takes ~6 minutes and at the paper scale tens of minutes, and a
run under submitit or SLURM writes to a log file, where a tqdm bar is disabled. Without this the log and
``launch.py`` said nothing between "run ... started" and the first epoch line. So, on rank 0:

* on a terminal, a tqdm bar (as before);
* otherwise, one line every ``every_s`` seconds (``epoch 1/2 step 400/1560 (26%) | loss ... | img/s,
  waited on data 3% | epoch ends in ~5 min``). "Waited on data" is the share of the time the training loop
  blocked on the DataLoader: near 0 the run is compute-bound, a large share means more loader workers
  (CPUs per GPU) would speed it up;
* in both cases ``progress.json`` in the run directory, rewritten atomically at the same interval, which
  ``launch.py`` reads to show where each running job is (:func:`describe`). It is a hint for humans only:
  nothing resumes from it (checkpoints and ``metrics.jsonl`` are the run's record).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["PROGRESS_FILE", "EpochProgress", "describe", "read_progress"]

PROGRESS_FILE = "progress.json"


class EpochProgress:
    """Progress of one epoch on the main rank; create it with ``enabled=False`` on the other ranks."""

    def __init__(
        self,
        workdir: Path,
        *,
        epoch: int,
        epochs: int,
        steps: int,
        start_step: int,
        global_batch: int,
        every_s: float = 60.0,
        enabled: bool = True,
    ) -> None:
        self.workdir = workdir
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.step = start_step
        self.start_step = start_step
        self.global_batch = global_batch
        self.every_s = every_s
        self.enabled = enabled
        self.t0 = self.last = time.monotonic()
        self.loss_sum = 0.0  # since the last report: the line shows the recent loss, not the epoch's so far
        self.loss_count = 0
        self.lr = 0.0
        self.data_wait_s = 0.0
        self.recent_loss: float | None = None  # the last report's, for close() right after a report
        self.bar = None
        if enabled and sys.stdout.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps,
                initial=start_step,
                desc=f"epoch {epoch + 1}/{epochs}",
                leave=False,
                dynamic_ncols=True,
                mininterval=1.0,
            )

    def update(self, loss: float, lr: float, data_wait_s: float = 0.0) -> None:
        """One optimiser step done, with its (mean over micro-batches) loss, learning rate, and the seconds
        the loop has blocked on the data loader since the epoch (or the resume) began."""
        if not self.enabled:
            return
        self.step += 1
        self.data_wait_s = data_wait_s
        self.loss_sum += loss
        self.loss_count += 1
        self.lr = lr
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._report(now)

    def close(self) -> None:
        """End of the epoch (or a stop): the bar goes, and progress.json gets the final position, so every
        run directory that trained a step has one (whatever the epoch's length against ``every_s``)."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.enabled and self.step > self.start_step:
            self._write(time.monotonic())

    def _write(self, now: float) -> dict[str, Any]:
        done = self.step - self.start_step
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        state = {
            "epoch": self.epoch + 1,
            "epochs": self.epochs,
            "step": self.step,
            "steps": self.steps,
            "loss": self.loss_sum / self.loss_count if self.loss_count else self.recent_loss,
            "lr": self.lr,
            "images_per_s": rate * self.global_batch,
            "data_wait_share": self.data_wait_s / elapsed if elapsed > 0 else 0.0,
            "epoch_left_s": (self.steps - self.step) / rate if rate > 0 else None,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = self.workdir / f".{PROGRESS_FILE}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
        os.replace(tmp, self.workdir / PROGRESS_FILE)
        return state

    def _report(self, now: float) -> None:
        state = self._write(now)
        if self.bar is None:
            left = state["epoch_left_s"]
            eta = f" | epoch ends in ~{_duration(left)}" if left is not None else ""
            print(
                f"epoch {self.epoch + 1}/{self.epochs} step {self.step}/{self.steps} "
                f"({100 * self.step / self.steps:.0f}%) | loss {state['loss']:.4f} "
                f"| lr {self.lr:.3g} | {state['images_per_s']:.0f} img/s, "
                f"waited on data {100 * state['data_wait_share']:.0f}%{eta}",
                flush=True,
            )
        self.recent_loss = state["loss"]
        self.loss_sum, self.loss_count = 0.0, 0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_progress(workdir: Path) -> dict[str, Any] | None:
    """The last ``progress.json`` of a run directory, or None (absent, or unreadable mid-write on NFS)."""
    try:
        return json.loads((workdir / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def describe(workdir: Path, epochs: int) -> tuple[str, float]:
    """(``"ep 2/300 41%"``-style text, fraction of the run's steps done) from ``metrics.jsonl`` and
    ``progress.json``; the text is empty before the first report of the first epoch."""
    finished = 0
    metrics = workdir / "metrics.jsonl"
    if metrics.is_file():
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
        if lines:
            try:
                finished = int(json.loads(lines[-1]).get("epoch", 0))
            except (ValueError, TypeError, AttributeError):
                finished = 0
    state = read_progress(workdir)
    if state is not None and int(state.get("epoch", 0)) > finished and state.get("steps"):
        part = min(1.0, int(state["step"]) / int(state["steps"]))
        return f"ep {state['epoch']}/{epochs} {100 * part:.0f}%", (int(state["epoch"]) - 1 + part) / epochs
    if finished:
        return f"ep {finished}/{epochs} done", finished / epochs
    return "", 0.0
