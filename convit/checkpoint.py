"""Atomic, complete, ``weights_only``-loadable checkpoints, and the RNG state they carry.

Why this shape:
- A run may be killed at any instant (SIGKILL, node failure). The new checkpoint is written to a temporary
  file, fsynced, and only then renamed over the old one (``os.replace`` is atomic on POSIX); the previous
  checkpoint is kept as ``checkpoint.prev.pth``. At every moment at least one complete checkpoint exists.
- Checkpoints hold only tensors, plain containers and primitives (the spec as a JSON string), so they load
  with ``torch.load(weights_only=True)`` on any torch version: no pickled objects (the original code's
  pickled ``argparse.Namespace`` no longer loads on torch >= 2.6, reference section 8.2 item 4).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKPOINT",
    "PREVIOUS",
    "load",
    "load_latest",
    "rng_state",
    "save_atomic",
    "set_rng_state",
    "write_json_atomic",
    "write_text_atomic",
]

CHECKPOINT = "checkpoint.pth"
PREVIOUS = "checkpoint.prev.pth"


def _fsync_dir(path: Path) -> None:
    """Make the renames durable (the directory entry must reach the disk too)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_atomic(state: dict[str, Any], workdir: Path) -> Path:
    """Write ``state`` as ``workdir/checkpoint.pth``; the former latest becomes ``checkpoint.prev.pth``."""
    workdir = Path(workdir)
    final = workdir / CHECKPOINT
    tmp = workdir / f".{CHECKPOINT}.tmp{os.getpid()}"
    with open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    if final.exists():
        os.replace(final, workdir / PREVIOUS)
    os.replace(tmp, final)
    _fsync_dir(workdir)
    return final


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that a reader sees the old file or the new one, never a part.

    A temporary file beside it (same directory, so the rename stays on one filesystem), flushed and fsynced,
    then renamed over ``path``. Every small file of a run directory that another process may read while it
    is written (``spec.json`` by a launcher or a second task, ``result.json`` by the collector) goes through
    here.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """:func:`write_text_atomic` of ``data`` as indented, key-sorted JSON with a final newline."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, Any]:
    """Load one checkpoint on CPU with ``weights_only=True`` (fails on pickled objects, by design)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a checkpoint dictionary")
    return state


def load_latest(
    workdir: Path, validate: Callable[[dict[str, Any]], None] | None = None
) -> tuple[dict[str, Any] | None, Path | None, list[str]]:
    """The newest loadable checkpoint in ``workdir``: ``(state, path, warnings)``.

    Tries ``checkpoint.pth`` then ``checkpoint.prev.pth``; an unreadable, truncated or invalid file
    (``validate`` raising ``ValueError``/``KeyError``) is skipped with a warning instead of crashing the
    resume. Returns ``(None, None, warnings)`` when nothing usable is there (the caller restarts anew).
    """
    warnings: list[str] = []
    for name in (CHECKPOINT, PREVIOUS):
        path = Path(workdir) / name
        if not path.exists():
            continue
        try:
            state = load(path)
            if validate is not None:
                validate(state)
        except (ValueError, KeyError, TypeError) as exc:
            warnings.append(f"checkpoint {path} is invalid ({exc}); trying an older one")
            continue
        except Exception as exc:  # noqa: BLE001 - any unpickling/zip error means a corrupt file
            warnings.append(
                f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); trying an older one"
            )
            continue
        return state, path, warnings
    return None, None, warnings


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors/plain data (weights_only-safe)."""
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
