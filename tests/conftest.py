"""Shared test fixtures: real image data prepared once per session from the offline archives.

The archives live in ``../shared/datasets`` beside the repository on our machines (override with
``CONVIT_DATA_ARCHIVES``). Tests never download anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def archives_dir() -> Path:
    """Folder holding the dataset archives (see ../shared/datasets/README.md)."""
    path = Path(os.environ.get("CONVIT_DATA_ARCHIVES", REPO.parent / "shared" / "datasets"))
    if not path.is_dir():
        pytest.skip(f"dataset archives not found at {path} (set CONVIT_DATA_ARCHIVES)")
    return path


@pytest.fixture(scope="session")
def fixture_data_root(tmp_path_factory: pytest.TempPathFactory, archives_dir: Path) -> Path:
    """A data root with both image fixtures prepared (cifar10-fixture, tiny-imagenet-fixture)."""
    from convit.prepare import prepare

    root = tmp_path_factory.mktemp("data")
    for name in ("cifar10-fixture", "tiny-imagenet-fixture"):
        prepare(name, root, archives=archives_dir)
    return root


@pytest.fixture(autouse=True)
def _no_thread_count_leak():
    """Fail a test that leaves torch's intra-op thread count changed.

    Later tests compare in-process runs bit for bit with runs in child processes, which holds only at equal
    thread counts (a leaked ``set_num_threads(1)`` once made the resume tests fail depending on test order).
    """
    import torch

    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"the test changed torch's thread count from {before} to {after}"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``).

    Small-model tests run faster single-threaded on a shared 2-core machine, where OpenMP spinning makes
    two threads 10-20x slower; the count is restored after the module.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
