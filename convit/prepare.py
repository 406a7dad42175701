"""Putting a dataset in place under the data root: ``python -m convit.data prepare NAME``.

Sources: a user's ImageFolder tree (``source``, linked, never copied; the only way for ImageNet), else an
offline archive in the archives folder (``archives`` or ``$CONVIT_DATA_ARCHIVES``; the accepted files and
their MD5s are listed below), else the official download (CIFAR, Tiny-ImageNet). Why it is built this way:
several jobs of one array may start on one node at once, so preparation takes a file lock, builds in a
hidden temporary folder beside the final one, verifies class and image counts, writes the completion
marker (:data:`convit.datasets.MARKER`, recording the source) and only then renames the folder into place.
A half-built tree is never mistaken for a prepared one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from convit import runlock
from convit.datasets import (
    ENV_ARCHIVES,
    MARKER,
    DataError,
    DatasetInfo,
    dataset_info,
    find_classes,
    is_image,
    is_prepared,
    scan_class,
)

__all__ = ["prepare"]


@dataclass(frozen=True)
class _Archive:
    """One acceptable local archive for a dataset, as a path relative to the archives folder."""

    relpath: str
    md5: str | None
    #: "imagefolder": tar with train/ and val/ (or test/); "cifar10-python" / "cifar100-python": the
    #: official pickles; "tiny-official": the cs231n zip with its own val layout.
    kind: str


_CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
_TINY_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"

_ARCHIVES: dict[str, tuple[_Archive, ...]] = {
    "cifar10": (
        _Archive(
            "cifar10-jpeg/CIFAR-10-images_jpeg.tar.gz", "1dbfebf4d362f3dcbce335f99bd32fe3", "imagefolder"
        ),
        _Archive("cifar-10-python.tar.gz", _CIFAR10_MD5, "cifar10-python"),
        _Archive("cifar10/cifar-10-python.tar.gz", _CIFAR10_MD5, "cifar10-python"),
    ),
    "cifar100": (
        _Archive("cifar-100-python.tar.gz", _CIFAR100_MD5, "cifar100-python"),
        _Archive("cifar100/cifar-100-python.tar.gz", _CIFAR100_MD5, "cifar100-python"),
    ),
    "tiny-imagenet": (
        _Archive(
            "tiny-imagenet-200/tiny-imagenet-200_imagefolder_trainval.tar.gz",
            "be258f771f7b0418993ee4858365a142",
            "imagefolder",
        ),
        _Archive("tiny-imagenet-200.zip", _TINY_MD5, "tiny-official"),
        _Archive("tiny-imagenet-200/tiny-imagenet-200.zip", _TINY_MD5, "tiny-official"),
    ),
    "cifar10-fixture": (
        _Archive("fixtures/cifar10-jpeg-fixture.tar.gz", "60b97a94d94101fc9683a01ced7e81d0", "imagefolder"),
    ),
    "tiny-imagenet-fixture": (
        _Archive(
            "fixtures/tiny-imagenet-fixture-10cls.tar.gz", "44b9839aa38a4b8acaea9e1d204cd0b4", "imagefolder"
        ),
    ),
    "imagenet": (),
}


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _say(msg: str) -> None:
    print(f"[convit.data] {msg}", file=sys.stderr, flush=True)


def _count_split(split_dir: Path) -> tuple[int, int]:
    """(classes, images) of an assembled split."""
    classes = find_classes(split_dir)
    images = sum(sum(1 for f in scan_class(split_dir / c)[0] if is_image(f)) for c in classes)
    return len(classes), images


def _verify(info: DatasetInfo, out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for split, expected in (("train", info.num_train), ("val", info.num_val)):
        n_cls, n_img = _count_split(out / split)
        if n_cls != info.num_classes or (expected is not None and n_img != expected):
            raise DataError(
                f"{info.name} {split}: found {n_cls} classes / {n_img} images, expected {info.num_classes} / "
                f"{expected}; the source is incomplete or not {info.name}"
            )
        counts[split] = n_img
    return counts


def _split_base(raw: Path) -> Path:
    """The folder of an extracted archive that holds train/ (the archive root or its single top folder)."""
    for cand in [raw, *sorted(p for p in raw.iterdir() if p.is_dir())]:
        if (cand / "train").is_dir():
            return cand
    raise DataError(f"archive has no train/ folder (top level: {sorted(p.name for p in raw.iterdir())})")


def _assemble_imagefolder(raw: Path, out: Path) -> None:
    base = _split_base(raw)
    val = base / "val" if (base / "val").is_dir() else base / "test"  # CIFAR-10 JPEG: test/ is the val split
    if not val.is_dir():
        raise DataError(f"archive has neither val/ nor test/ beside train/ in {base.name}")
    out.mkdir()
    (base / "train").rename(out / "train")
    val.rename(out / "val")
    if (base / "meta").is_dir():
        (base / "meta").rename(out / "meta")


def _assemble_tiny_official(raw: Path, out: Path) -> None:
    """The cs231n zip -> ImageFolder: train/<wnid>/images/* up one level, val/ sorted by val_annotations.txt.

    Bounding-box files move to meta/ so class folders hold images only (same layout as the offline archive).
    """
    base = next((p for p in [raw, raw / "tiny-imagenet-200"] if (p / "wnids.txt").is_file()), None)
    if base is None:
        raise DataError("not a Tiny-ImageNet archive: wnids.txt not found")
    (out / "train").mkdir(parents=True)
    (out / "val").mkdir()
    (out / "meta" / "train_boxes").mkdir(parents=True)
    for wnid in (base / "wnids.txt").read_text().split():
        src = base / "train" / wnid
        (src / "images").rename(out / "train" / wnid)
        for boxes in src.glob("*_boxes.txt"):
            boxes.rename(out / "meta" / "train_boxes" / boxes.name)
    annotations = base / "val" / "val_annotations.txt"
    for line in annotations.read_text().splitlines():
        if not line.strip():
            continue
        fname, wnid = line.split("\t")[:2]
        (out / "val" / wnid).mkdir(exist_ok=True)
        (base / "val" / "images" / fname).rename(out / "val" / wnid / fname)
    for meta in ("wnids.txt", "words.txt"):
        if (base / meta).is_file():
            (base / meta).rename(out / "meta" / meta)
    annotations.rename(out / "meta" / "val_annotations.txt")


def _export_cifar(dataset: Any, split_dir: Path) -> None:
    """Write a torchvision CIFAR split (``data`` N x 32 x 32 x 3, ``targets``, ``classes``) as lossless PNGs.

    File ``k`` of a class is its k-th image in official order, the naming of the offline JPEG copy.
    """
    seen = [0] * len(dataset.classes)
    for cls in dataset.classes:
        (split_dir / cls).mkdir(parents=True)
    for array, target in zip(dataset.data, dataset.targets, strict=True):
        name = f"{seen[target]:04d}.png"
        seen[target] += 1
        Image.fromarray(array).save(split_dir / dataset.classes[target] / name, compress_level=1)


def _assemble_cifar_python(kind: str, download_dir: Path, out: Path) -> None:
    """Official CIFAR pickles (already in ``download_dir`` or fetched by torchvision) -> PNG ImageFolder."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if kind == "cifar10-python" else datasets.CIFAR100
    for split, train in (("train", True), ("val", False)):
        # download=True verifies the md5 of an archive already in download_dir, else fetches the official one.
        _export_cifar(cls(str(download_dir), train=train, download=True), out / split)


def _extract(archive: Path, raw: Path) -> None:
    raw.mkdir()
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(raw)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(raw, filter="data")


def _download(url: str, dest: Path, md5: str | None) -> None:
    _say(f"downloading {url}")
    last = [0.0]

    def hook(blocks: int, block_size: int, total: int) -> None:
        now = time.monotonic()
        if total > 0 and now - last[0] > 5:
            last[0] = now
            _say(f"  {min(100.0, 100 * blocks * block_size / total):.0f}% of {total / 1e6:.0f} MB")

    urllib.request.urlretrieve(url, dest, hook)
    if md5 is not None and _md5(dest) != md5:
        raise DataError(f"download of {url} is corrupt (md5 mismatch); try again")


def _find_archive(name: str, archives: Path) -> _Archive | None:
    return next((a for a in _ARCHIVES[name] if (archives / a.relpath).is_file()), None)


def _link_from(info: DatasetInfo, source: Path, final: Path) -> Path:
    source = source.expanduser().resolve()
    missing = [s for s in info.splits if not (source / s).is_dir()]
    if missing:
        raise DataError(
            f"{source} is not an ImageFolder root for {info.name}: "
            f"missing {', '.join(f'{m}/' for m in missing)}"
        )
    n_cls = len(find_classes(source / "train"))
    if n_cls != info.num_classes:
        _say(f"warning: {source}/train has {n_cls} class folders, {info.name} has {info.num_classes}")
    final.symlink_to(source, target_is_directory=True)
    _say(f"{final} -> {source}")
    return final


def prepare(
    name: str,
    root: str | Path,
    archives: str | Path | None = None,
    force: bool = False,
    *,
    source: str | Path | None = None,
) -> Path:
    """Put dataset ``name`` in place as ``<root>/<name>/{train,val}/<class>/`` and return that folder.

    Idempotent: a folder with the completion marker is returned as is (``force`` rebuilds it). Work happens in
    a hidden temporary folder under ``root`` that is renamed into place only once complete and verified (class
    and image counts, archive md5), so an interrupted prepare never leaves a folder that looks complete.
    Source: ``source`` (an existing ImageFolder root, linked; the only way for ImageNet), else ``archives``
    (or ``$CONVIT_DATA_ARCHIVES``), else the official download (CIFAR via torchvision, Tiny-ImageNet's zip).
    """
    info = dataset_info(name)
    root = Path(root).expanduser()
    final = root / info.folder
    if is_prepared(name, root) and not force:
        return final  # before any write: the root may be a read-only shared copy
    root.mkdir(parents=True, exist_ok=True)
    # several jobs of one array may prepare on one node at once: the first does the work, the others wait
    with runlock.exclusive(root / f".{info.folder}.lock"):
        if is_prepared(name, root) and not force:
            return final  # another process finished it while we waited
        for stale in root.glob(f".{info.folder}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed prepare's (its owner held this lock)
        if final.exists() or final.is_symlink():
            if not force:
                raise DataError(
                    f"{final} exists but is not a completed prepare (no {MARKER}); "
                    "re-run with --force to replace it"
                )
            if final.is_symlink():
                final.unlink()
        if source is not None:
            if final.exists():
                shutil.rmtree(final)
            return _link_from(info, Path(source), final)
        archive_dir = archives if archives not in (None, "") else os.environ.get(ENV_ARCHIVES) or None
        if name == "imagenet":
            if archive_dir and (Path(archive_dir) / "imagenet" / "train").is_dir():
                return _link_from(info, Path(archive_dir) / "imagenet", final)
            hint = f"python -m convit.data prepare imagenet --from /path/to/imagenet --root {root}"
            raise DataError(
                "ImageNet cannot be downloaded (licence): get ILSVRC-2012 from image-net.org as an "
                f"ImageFolder root with train/<wnid>/ and val/<wnid>/, then run: {hint} "
                f"(or symlink it to {final})"
            )
        tmp = Path(tempfile.mkdtemp(prefix=f".{info.folder}.partial-", dir=root))
        try:
            record = _build(info, Path(archive_dir) if archive_dir else None, tmp)
            out = tmp / "out"
            record["counts"] = _verify(info, out)
            record.update(name=name, prepared_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), format=1)
            (out / MARKER).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            if final.exists():
                final.rename(tmp / "old")  # the final folder is briefly absent, never half-built
            out.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = record["counts"]
    _say(f"prepared {name} in {final} ({counts['train']} train / {counts['val']} val images)")
    return final


def _build(info: DatasetInfo, archives: Path | None, tmp: Path) -> dict[str, Any]:
    """Fill ``tmp/out`` from the first available source; returns the provenance for the marker."""
    out = tmp / "out"
    if archives is not None:
        if not archives.is_dir():
            raise DataError(f"archives folder {archives} does not exist")
        arc = _find_archive(info.name, archives)
        if arc is None:
            looked = ", ".join(a.relpath for a in _ARCHIVES[info.name])
            raise DataError(
                f"no archive for {info.name} in {archives} (looked for {looked}); omit --archives and unset "
                f"{ENV_ARCHIVES} to download it from the official source"
            )
        path = archives / arc.relpath
        if arc.md5 is not None:
            if _md5(path) != arc.md5:
                raise DataError(f"{path} is corrupt: md5 differs from {arc.md5}")
        _say(f"preparing {info.name} from {path}")
        if arc.kind in ("cifar10-python", "cifar100-python"):
            (tmp / "dl").mkdir()
            (tmp / "dl" / path.name).symlink_to(path.resolve())
            _assemble_cifar_python(arc.kind, tmp / "dl", out)
        else:
            _extract(path, tmp / "raw")
            (_assemble_tiny_official if arc.kind == "tiny-official" else _assemble_imagefolder)(
                tmp / "raw", out
            )
        return {"source": str(path), "md5": arc.md5, "kind": arc.kind}
    if info.name in ("cifar10", "cifar100"):
        _say(f"downloading {info.name} with torchvision (official CIFAR pickles, exported as PNG)")
        kind = f"{info.name}-python"
        _assemble_cifar_python(kind, tmp / "dl", out)
        return {"source": "torchvision download", "kind": kind}
    if info.name == "tiny-imagenet":
        zpath = tmp / "tiny-imagenet-200.zip"
        _download(_TINY_URL, zpath, _TINY_MD5)
        _extract(zpath, tmp / "raw")
        _assemble_tiny_official(tmp / "raw", out)
        return {"source": _TINY_URL, "md5": _TINY_MD5, "kind": "tiny-official"}
    raise DataError(
        f"{info.name} has no download; pass --archives DIR (a folder holding "
        f"{_ARCHIVES[info.name][0].relpath}) or set {ENV_ARCHIVES}"
    )
