"""What datasets exist and how a prepared one looks on disk: the layer below loading and preparing.

:mod:`convit.data` (datasets and loaders) and :mod:`convit.prepare` (putting data in place) both need these
facts, so they live here, importing neither: the registry (:class:`DatasetInfo`, :func:`dataset_info`), the
data root (:func:`resolve_data_root`), the completion marker and :func:`is_prepared`, the class-folder scan
every ImageFolder split goes through, and :class:`DataError`, the one error class of both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_ARCHIVES",
    "ENV_DATA_ROOT",
    "IMG_EXTENSIONS",
    "MARKER",
    "DataError",
    "DatasetInfo",
    "dataset_info",
    "dataset_names",
    "find_classes",
    "is_image",
    "is_prepared",
    "resolve_data_root",
    "scan_class",
]

ENV_DATA_ROOT = "CONVIT_DATA_ROOT"
ENV_ARCHIVES = "CONVIT_DATA_ARCHIVES"
#: the original code's IMG_EXTENSIONS (matched case-insensitively).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MARKER = ".convit-prepared.json"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """A data problem the user can fix (unknown dataset, data not prepared, missing archive, bad checksum)."""


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset; ``folder`` is its directory under the data root."""

    name: str
    num_classes: int
    #: native image side in pixels; None for variable-size images (ImageNet).
    image_size: int | None
    #: normalisation used by the transforms (ImageNet statistics everywhere, as the original code).
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    folder: str
    splits: tuple[str, ...] = ("train", "val")
    #: expected image counts per split (checked by prepare); None: not checked.
    num_train: int | None = None
    num_val: int | None = None


def _info(name: str, k: int, size: int | None, n_train: int | None, n_val: int | None) -> DatasetInfo:
    return DatasetInfo(name, k, size, _IMAGENET_MEAN, _IMAGENET_STD, name, ("train", "val"), n_train, n_val)


_DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        _info("imagenet", 1000, None, 1_281_167, 50_000),
        _info("tiny-imagenet", 200, 64, 100_000, 10_000),
        _info("cifar10", 10, 32, 50_000, 10_000),
        _info("cifar100", 100, 32, 50_000, 10_000),
        _info("cifar10-fixture", 10, 32, 200, 100),
        _info("tiny-imagenet-fixture", 10, 64, 200, 100),
    )
}


def dataset_names() -> list[str]:
    """Names accepted by :func:`dataset_info`, :func:`prepare` and ``DataSpec.name``."""
    return list(_DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Facts about dataset ``name``; an unknown name raises :class:`DataError` listing the valid ones."""
    try:
        return _DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(_DATASETS)}") from None


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$CONVIT_DATA_ROOT``; paths never come from the code."""
    value = explicit if explicit not in (None, "") else os.environ.get(ENV_DATA_ROOT)
    if not value:
        raise DataError(
            f"no data root given: pass --root DIR (data_root=...) or set {ENV_DATA_ROOT}=DIR "
            "(the folder that holds the prepared datasets)"
        )
    return Path(value).expanduser()


def is_prepared(name: str, root: str | Path) -> bool:
    """True when ``<root>/<folder>`` is complete.

    That is: it has prepare's completion marker, or it is a user's ImageFolder root (a symlink, or any folder
    for ImageNet, which is never extracted by us) with all its split folders.
    """
    path = Path(root) / dataset_info(name).folder
    if (path / MARKER).is_file():
        return True
    linked = path.is_symlink() or name == "imagenet"
    return linked and all((path / s).is_dir() for s in dataset_info(name).splits)


# ----------------------------------------------------------------------------------------------------
# The on-disk ImageFolder layout
# ----------------------------------------------------------------------------------------------------
def is_image(path: str) -> bool:
    """Whether ``path`` has one of :data:`IMG_EXTENSIONS` (any case), as the original code decides."""
    return path.lower().endswith(IMG_EXTENSIONS)


def scan_class(class_dir: Path) -> tuple[list[str], int]:
    """All files under ``class_dir`` (relative paths) and its entry count, in one pass over the folder."""
    files: list[str] = []
    entries = 0
    for dirpath, dirs, names in os.walk(class_dir, followlinks=True):
        rel = os.path.relpath(dirpath, class_dir)
        if rel == ".":
            entries = len(dirs) + len(names)  # == len(os.listdir(class_dir)), without a second scan
            files.extend(names)
        else:
            files.extend(os.path.join(rel, n) for n in names)
    return files, entries


def find_classes(split_dir: Path) -> list[str]:
    """The sorted class folders of an ImageFolder split; a missing or empty split is a :class:`DataError`."""
    if not split_dir.is_dir():
        raise DataError(f"missing split folder {split_dir}")
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir(follow_symlinks=True))
    if not classes:
        raise DataError(f"no class folders in {split_dir}")
    return classes
