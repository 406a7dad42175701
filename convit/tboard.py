"""TensorBoard event files for a run: watch training live, offline, with the tool researchers already use.

Rank 0 writes ``WORKDIR/tensorboard/events.out.tfevents.*``; ``tensorboard --logdir $CONVIT_RUNS/SUITE/SCALE``
shows every run of a suite side by side (``launch.py`` prints that line). Tags:

* ``train/loss`` and ``train/lr`` at every optimiser step (rank 0's loss; the engine reads losses to the
  host in batches of ``SYNC_EVERY`` steps and logs them there, so TensorBoard costs no extra host sync, and
  a resumed run logs exactly the uninterrupted run's points, which interval means would not: a preemption
  cuts an interval short);
* ``val/top1``, ``val/top5`` (percent), ``val/loss``, ``train/epoch_loss`` at each evaluated epoch;
* ``perf/images_per_s`` and ``perf/data_wait_share`` (of training time, blocked on the loader) per epoch;
* ``probes/gate_sigma/layerLL`` (mean over heads) and ``probes/gate_sigma/layerLL/headHH`` (sigma(lambda) of
  each GPSA layer and head), ``probes/nonlocality/blockLL`` (mean over heads), when probes ran.

The x axis is the optimiser step (``global_step``), the same for every tag.

**Resume without duplicated steps.** A run resumed from a checkpoint at step G replays nothing it saved,
but it may have *logged* steps after G before it died (the interval logs, the epoch's scalars). So
:func:`scrub` rewrites the run's existing event files before the new writer opens: per-interval tags
(``train/loss``, ``train/lr``) keep steps <= G, and every per-epoch tag is dropped and written again from
the checkpoint's history (the checkpoint is the truth, as for ``metrics.jsonl``). The event log of a
resumed run therefore reads like one uninterrupted run, for TensorBoard and for any other reader of the
files. The writer is also opened with ``purge_step`` = G + 1, TensorBoard's own marker for the same rule.

``CONVIT_TENSORBOARD=0`` turns the event files off (used to measure their cost; see ``bench_overhead``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: per-interval tags; every other tag is per epoch and re-derived from the checkpoint's history on resume
INTERVAL_TAGS = ("train/loss", "train/lr")
SUBDIR = "tensorboard"


def enabled() -> bool:
    """Event files are on unless ``CONVIT_TENSORBOARD`` is 0/false/no/off."""
    return os.environ.get("CONVIT_TENSORBOARD", "1").strip().lower() not in {"0", "false", "no", "off"}


def _event_files(logdir: Path) -> list[Path]:
    return sorted(p for p in logdir.glob("events.out.tfevents.*") if p.is_file())


def _events(path: Path) -> Iterable[Any]:
    """The file's events as written (the raw records parsed; TensorBoard's EventFileLoader would rewrite
    ``simple_value`` scalars into tensors on the way)."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    for record in RawEventFileLoader(str(path)).Load():
        yield event_pb2.Event.FromString(record)


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a run's event files, ``{tag: [(step, value), ...]}`` in file then write order.

    Reads the raw files (no purging rules applied), so it shows exactly what any reader would see.
    """
    logdir = Path(logdir)
    out: dict[str, list[tuple[int, float]]] = {}
    for path in _event_files(logdir):
        for event in _events(path):
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out


def _keep(event: Any, resume_step: int) -> bool:
    if not event.HasField("summary"):
        return True  # file version, session markers
    tags = {value.tag for value in event.summary.value}
    return tags <= set(INTERVAL_TAGS) and event.step <= resume_step


def scrub(logdir: str | Path, resume_step: int) -> int:
    """Drop from ``logdir``'s event files what a resume at ``resume_step`` will write again; return the count.

    Each file is rewritten beside itself and renamed into place (a crash leaves the old or the new file,
    never half of one); files left with no scalar are removed.
    """
    from tensorboard.summary.writer.record_writer import RecordWriter

    logdir = Path(logdir)
    dropped = 0
    for path in _event_files(logdir):
        events = list(_events(path))
        kept = [event for event in events if _keep(event, resume_step)]
        if len(kept) == len(events):
            continue
        dropped += len(events) - len(kept)
        if not any(event.HasField("summary") for event in kept):
            path.unlink()
            continue
        tmp = path.with_name(f".scrub-{path.name}.tmp")
        with open(tmp, "wb") as handle:
            writer = RecordWriter(handle)
            for event in kept:
                writer.write(event.SerializeToString())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    return dropped


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def epoch_scalars(entry: Mapping[str, Any]) -> dict[str, float]:
    """The per-epoch scalars of one ``metrics.jsonl`` entry, by tag."""
    out: dict[str, float] = {"train/epoch_loss": entry["train_loss"]}
    for key, tag in (("val_top1", "val/top1"), ("val_top5", "val/top5"), ("val_loss", "val/loss")):
        if key in entry:
            out[tag] = entry[key]
    for key, tag in (("ema_val_top1", "val_ema/top1"), ("ema_val_loss", "val_ema/loss")):
        if key in entry:
            out[tag] = entry[key]
    if "images_per_s" in entry:
        out["perf/images_per_s"] = entry["images_per_s"]
    if entry.get("train_time_s"):
        out["perf/data_wait_share"] = entry["data_wait_s"] / entry["train_time_s"]
    for layer, heads in enumerate(entry.get("gate_sigma") or []):
        out[f"probes/gate_sigma/layer{layer:02d}"] = _mean(heads)
        for head, value in enumerate(heads):
            out[f"probes/gate_sigma/layer{layer:02d}/head{head:02d}"] = value
    for block, heads in enumerate(entry.get("nonlocality") or []):
        out[f"probes/nonlocality/block{block:02d}"] = _mean(heads)
    return out


class Board:
    """The run's TensorBoard writer (a no-op off rank 0 or with ``CONVIT_TENSORBOARD=0``).

    ``Board(workdir, resume_step, history)`` scrubs what the resume will rewrite, opens the writer and
    re-emits the checkpoint's per-epoch history; then :meth:`steps` and :meth:`epoch` log as training
    goes. Writes are queued and flushed by the writer's thread (every 30 s and at :meth:`close`), so the
    training loop does not wait on the disk.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        resume_step: int = 0,
        history: Sequence[Mapping[str, Any]] = (),
        active: bool = True,
    ) -> None:
        self.writer = None
        if not (active and enabled()):
            return
        from torch.utils.tensorboard import SummaryWriter

        logdir = Path(workdir) / SUBDIR
        logdir.mkdir(parents=True, exist_ok=True)
        scrub(logdir, resume_step)
        self.writer = SummaryWriter(
            str(logdir), purge_step=resume_step + 1 if resume_step else None, flush_secs=30, max_queue=100
        )
        for entry in history:
            self.epoch(entry)

    def steps(self, records: Iterable[tuple[int, float, float]]) -> None:
        """``(global_step, loss, lr)`` of optimiser steps just read to the host."""
        if self.writer is not None:
            now = time.time()
            for step, loss, lr in records:
                self.writer.add_scalar("train/loss", loss, step, walltime=now)
                self.writer.add_scalar("train/lr", lr, step, walltime=now)

    def epoch(self, entry: Mapping[str, Any]) -> None:
        """An epoch's evaluation, speed and probes (a ``metrics.jsonl`` entry), at its last step."""
        if self.writer is not None:
            for tag, value in epoch_scalars(entry).items():
                self.writer.add_scalar(tag, value, entry["step"])

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
