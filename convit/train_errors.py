"""What a training run raises: the user-fixable :class:`TrainError` family and the :class:`Preempted` signal.

Below every room of the engine (:mod:`convit.recipe`, :mod:`convit.sampling`, :mod:`convit.rundir`,
:mod:`convit.teacher`, :mod:`convit.train`) so each can raise them without importing the engine;
:mod:`convit.train` re-exports them, which is where callers catch them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["NonFiniteLoss", "Preempted", "RunInUse", "SpecMismatch", "TrainError"]


class TrainError(RuntimeError):
    """A run cannot proceed for a reason the user can fix (bad batch arithmetic, wrong workdir ...)."""


class SpecMismatch(TrainError):
    """The workdir belongs to a different spec: relaunching there would silently mix two experiments."""

    def __init__(self, workdir: Path, keys: Sequence[str]):
        self.workdir = workdir
        self.keys = list(keys)
        shown = ", ".join(self.keys[:10]) + (" ..." if len(self.keys) > 10 else "")
        super().__init__(
            f"{workdir} holds a run with a different spec (differing keys: {shown}); "
            "use a new workdir for a new spec"
        )


class RunInUse(TrainError):
    """Another process is training in this run directory (a duplicate launch); see :mod:`convit.runlock`."""


class NonFiniteLoss(TrainError):
    """The training loss became NaN/inf; the last good checkpoint is left untouched."""

    def __init__(self, epoch: int, step: int, global_step: int):
        self.epoch, self.step, self.global_step = epoch, step, global_step
        super().__init__(
            f"non-finite training loss at epoch {epoch} (0-based), step {step} of the epoch "
            f"(global step {global_step}); the last good checkpoint is kept"
        )


class Preempted(Exception):  # noqa: N818 - a signal to the job wrapper, not an error
    """``should_stop()`` turned true: a mid-epoch checkpoint was saved; relaunch to resume."""

    def __init__(self, epoch: int, step: int, path: Path):
        self.epoch, self.step, self.path = epoch, step, path
        super().__init__(f"preempted at epoch {epoch} step {step}; checkpoint saved to {path}")
