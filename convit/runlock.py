"""One training process per run directory: an exclusive ``flock`` on ``<run>/.lock`` while it trains.

Why: the run directory is the run's identity and relaunching resumes it, so launching a suite twice (a second
terminal, or a relaunch after the first launcher died while its SLURM jobs still run or wait in the queue)
would otherwise start a second trainer in the same directory. Both would resume the same checkpoint and
overwrite each other's checkpoints and ``metrics.jsonl``: a silently corrupted run. With the lock the second
process waits (a requeued job may start before the NFS server has noticed that its dead predecessor's lock
is gone: leases last ~90 s), then stops with an error naming the holder; a duplicate that gets the lock after
the first finished finds ``result.json`` and returns it. The lock dies with its process (the kernel drops it
on exit, a crash or SIGKILL included), so there is no stale lock to clean up. ``flock`` on NFS is forwarded
to the server as a POSIX lock on Linux, so it also excludes processes on other nodes. Where the file system
refuses locks the run goes ahead with a warning. The file's text (pid, host, time) is informational only.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_FILE", "RunDirBusy", "exclusive", "holder", "hold"]

LOCK_FILE = ".lock"


class RunDirBusy(RuntimeError):
    """Another process trains in this run directory."""


def _try_lock(fd: int) -> bool | None:
    """True: locked; False: held elsewhere; None: this file system cannot lock (or no fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK and friends: a file system without locking
        return None
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text().strip() or "a process that has not written its name yet"
    except OSError:
        return "an unknown process"


@contextlib.contextmanager
def exclusive(
    path: Path, wait_s: float = math.inf, poll_s: float = 2.0, busy: str | None = None
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``path`` (created) for the ``with`` block, writing who holds it
    into the file; raise :class:`RunDirBusy` when another process still holds it after ``wait_s`` seconds,
    with ``busy`` as the message (``{holder}`` in it replaced). ``convit.prepare`` serialises with it too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while (locked := _try_lock(fd)) is False and time.monotonic() < deadline:
            time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))
        if locked is False:
            raise RunDirBusy((busy or f"{path} is locked by {{holder}}").replace("{holder}", _read(path)))
        if locked is None:
            print(f"warning: cannot lock {path}; nothing stops a second process here", file=sys.stderr)
        else:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def hold(workdir: Path, wait_s: float = 180.0, poll_s: float = 2.0) -> contextlib.AbstractContextManager:
    """Hold ``workdir``'s lock for the duration of the ``with`` block; raise :class:`RunDirBusy` when another
    process still holds it after ``wait_s`` seconds."""
    busy = (
        f"{workdir} is in use by {{holder}}: another launch is training this run. Let it finish (or stop it) "
        "before relaunching; its results will be collected like any other"
    )
    return exclusive(workdir / LOCK_FILE, wait_s, poll_s, busy)


def holder(workdir: Path) -> str | None:
    """Who trains in ``workdir`` right now (the lock file's text), or None when nobody holds its lock."""
    path = workdir / LOCK_FILE
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        return _read(path) if _try_lock(fd) is False else None
    finally:
        os.close(fd)
