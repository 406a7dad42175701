"""Datasets for the ConViT reproduction: registry, the paper's subsampling, DeiT transforms, loader, CLI.

Every dataset lives under a *data root* as an ImageFolder tree, ``<root>/<name>/{train,val}/<class>/<files>``,
so ImageNet, Tiny-ImageNet, CIFAR and the test fixtures share one code path (the original ConViT code only
subsamples its ImageFolder ImageNet path; reference section 2.1). The data root is a machine fact, never part
of a spec: it comes from an argument or ``CONVIT_DATA_ROOT``.

The registry and the on-disk layout (:class:`DatasetInfo`, :func:`dataset_info`, :class:`DataError`, the
completion marker) are :mod:`convit.datasets`, re-exported here; preparation (archives, downloads, the
atomic build) is :mod:`convit.prepare`. Commands::

    python -m convit.data prepare NAME [--root R] [--archives A] [--from PATH] [--force]
    python -m convit.data bench NAME --img-size S --batch B --workers W [--root R] [--seconds T]
    python -m convit.data list [--root R]

Decisions (all faithful to the original ``datasets.py`` unless said otherwise):

* Subsampling (``fraction``) applies to the training split only. For each class, in sorted class-folder
  order, ``n_c`` is the number of *entries* of the class folder (``len(os.listdir)``, non-images included,
  as the original), and the first ``int(n_c * fraction)`` *valid image files* in sorted filename order are
  kept. On the prepared datasets class folders hold images only, so ``n_c`` is also the image count.
  ``num_classes=k`` keeps the first k sorted classes on both splits.
* Normalisation uses the ImageNet mean/std for every dataset: the original calls ``create_transform``
  without mean/std and normalises its evaluation transform with ImageNet statistics, CIFAR included.
* At ``img_size <= 32`` the original swaps RandomResizedCrop for ``RandomCrop(img_size, padding=4)`` and
  evaluates without resizing (its ``resize_im`` switch); we do the same (a no-op Resize keeps other native
  sizes working). Above 32 px (64 px Tiny-ImageNet, CIFAR-100 upsampled to 224 px as in reference section
  5.1) it is the DeiT pipeline: RandomResizedCrop at ``img_size`` for training, and
  ``Resize(int(img_size / crop_pct))`` + ``CenterCrop(img_size)`` for evaluation.
* The CIFAR-10 copy in the offline archives is JPEG (quality 75); CIFAR prepared from the official pickles
  (download or ``cifar-10-python.tar.gz``) is exported losslessly as PNG. File ``k`` of a class is the k-th
  image of that class in official order either way. The completion marker records which source was used.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from convit.datasets import (  # the registry and layout below this module and convit.prepare, re-exported
    ENV_ARCHIVES,
    ENV_DATA_ROOT,
    IMG_EXTENSIONS,
    MARKER,  # noqa: F401  (re-exported: convit.data.MARKER)
    DataError,
    DatasetInfo,
    dataset_info,
    dataset_names,
    find_classes,
    is_image,
    is_prepared,
    resolve_data_root,
    scan_class,
)
from convit.prepare import prepare
from convit.spec import DataSpec, RecipeSpec

__all__ = [
    "ENV_ARCHIVES",
    "ENV_DATA_ROOT",
    "IMG_EXTENSIONS",
    "CorruptImageError",
    "DataError",
    "DatasetInfo",
    "ImageFolderDataset",
    "bench",
    "build_datasets",
    "build_transform",
    "dataset_info",
    "dataset_names",
    "is_prepared",
    "list_images",
    "load_image",
    "main",
    "num_classes",
    "resolve_data_root",
    "subsample",
]


class CorruptImageError(DataError):
    """An image file that PIL cannot decode; the message names the file so it can be replaced or removed."""


# ----------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------
def num_classes(data: DataSpec) -> int:
    """Classes the model must output for ``data`` (its ``num_classes`` if set, else the dataset's)."""
    info = dataset_info(data.name)
    if data.num_classes is not None and data.num_classes > info.num_classes:
        raise DataError(f"{data.name} has {info.num_classes} classes, cannot keep {data.num_classes}")
    return data.num_classes or info.num_classes


def _prepare_command(name: str, root: Path | None) -> str:
    where = f" --root {root}" if root is not None else ""
    if name == "imagenet":
        return f"python -m convit.data prepare imagenet --from /path/to/imagenet{where}"
    return f"python -m convit.data prepare {name}{where} [--archives DIR]"


# ----------------------------------------------------------------------------------------------------
# Listing and the paper's subsampling
# ----------------------------------------------------------------------------------------------------
def _walk_key(relpath: str) -> tuple[str, str]:
    # The original iterates sorted(os.walk(class_dir)) (folders by path, the class folder first) and
    # sorted(fnames) inside each folder; (dirname, basename) reproduces that order for relative paths.
    return os.path.dirname(relpath), os.path.basename(relpath)


def subsample(
    files_by_class: Mapping[str, Sequence[str]],
    fraction: float = 1.0,
    num_classes: int | None = None,
    entry_counts: Mapping[str, int] | None = None,
) -> dict[str, list[str]]:
    """The paper's per-class subsampling (reference 2.1), as a pure function of file names.

    ``files_by_class`` maps a class name to the files of its folder (paths relative to the class folder, any
    order, non-images allowed). Classes are taken in sorted order, the first ``num_classes`` only; each keeps
    its first ``int(n_c * fraction)`` image files in the original's walk order (sorted names). ``n_c`` is
    ``entry_counts[c]`` when given (the original's ``len(os.listdir(class_dir))``), else the number of names
    given for the class. There is no randomness, so the subsets are nested across fractions.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    classes = sorted(files_by_class)
    if num_classes is not None:
        classes = classes[:num_classes]
    kept: dict[str, list[str]] = {}
    for cls in classes:
        files = files_by_class[cls]
        n_c = entry_counts[cls] if entry_counts is not None else len(files)
        quota = int(n_c * fraction)  # the original's int(len(os.listdir()) * sampling_ratio)
        images = [f for f in sorted(files, key=_walk_key) if is_image(f)]
        kept[cls] = images[:quota]
    return kept


def list_images(
    split_dir: str | Path,
    fraction: float = 1.0,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[list[str], list[tuple[str, int]]]:
    """Scan an ImageFolder split once and apply :func:`subsample`: returns (classes, [(path, target)])."""
    split_dir = Path(split_dir)
    all_classes = list(classes) if classes is not None else find_classes(split_dir)
    chosen = sorted(all_classes)[:num_classes] if num_classes is not None else sorted(all_classes)
    files: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for cls in chosen:
        if not (split_dir / cls).is_dir():
            raise DataError(f"class folder {split_dir / cls} is missing")
        files[cls], counts[cls] = scan_class(split_dir / cls)
    kept = subsample(files, fraction, None, counts)
    samples = [(str(split_dir / cls / f), idx) for idx, cls in enumerate(chosen) for f in kept[cls]]
    return chosen, samples


# ----------------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------------
_RGB = 3  # torchvision.io.ImageReadMode.RGB.value


@functools.cache
def _jpeg_decoder() -> Callable[..., torch.Tensor] | None:
    """torchvision's JPEG op (no partial results on error), or None where the image extension is missing.

    We call the op under ``torchvision.io.decode_jpeg`` directly: the wrapper only adds a per-call
    deprecation warning (torchvision 0.29 moves decoding to TorchCodec) and API-usage logging.
    """
    try:
        import torchvision.io.image  # noqa: F401  (loads the image extension)

        return torch.ops.image.decode_jpeg
    except (ImportError, AttributeError, RuntimeError):
        return None


def load_image(path: str | Path) -> Image.Image:
    """Decode an image as RGB (greyscale, CMYK, palette and alpha images are converted).

    JPEGs go through torchvision's libjpeg-turbo decoder, about twice as fast as PIL's for small images
    (PIL's Python header parsing dominates at 32-64 px) and pixel-identical to PIL on the CIFAR-10 and
    Tiny-ImageNet files we checked; anything it rejects falls back to PIL. Any decoding failure becomes
    :class:`CorruptImageError` naming the file: a bare PIL error inside a DataLoader worker does not say
    which of a million files is bad.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CorruptImageError(f"cannot read image {path}: {exc}") from exc
    decoder = _jpeg_decoder()
    if decoder is not None and raw[:3] == b"\xff\xd8\xff":
        try:
            pixels = decoder(torch.frombuffer(bytearray(raw), dtype=torch.uint8), _RGB, False)
            return Image.fromarray(pixels.permute(1, 2, 0).numpy())
        except RuntimeError:
            pass  # PIL decides, and names the file if it fails too
    try:
        return Image.open(io.BytesIO(raw)).convert("RGB")  # convert() forces the full decode here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CorruptImageError(f"cannot decode image {path}: {exc}") from exc


class ImageFolderDataset(Dataset):
    """An ImageFolder split with the paper's subsampling, scanned once at construction.

    ``samples`` (list of (path, target)), ``targets`` and ``classes`` are plain lists so samplers and tests
    can use them without touching the files.
    """

    def __init__(
        self,
        split_dir: str | Path,
        transform: Callable[[Image.Image], Any] | None = None,
        fraction: float = 1.0,
        num_classes: int | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(split_dir)
        self.transform = transform
        self.fraction = fraction
        self.classes, self.samples = list_images(self.root, fraction, num_classes, classes)
        if not self.samples:
            raise DataError(f"no image files found under {self.root} (fraction={fraction})")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, target = self.samples[index]
        img = load_image(path)
        return (self.transform(img) if self.transform is not None else img), target

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, "
            f"classes={len(self.classes)}, fraction={self.fraction})"
        )


# ----------------------------------------------------------------------------------------------------
# Transforms
# ----------------------------------------------------------------------------------------------------
def _posterize_compat(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize with the old Pillow semantics for 0 bits (a black image) instead of a ValueError.

    RandAugment ``inc1`` maps magnitude 10 to 0 bits, reached whenever m=9 plus its N(0, 0.5) noise clips at
    10 (~2 % of posterize draws). Pillow >= 11 rejects bits=0 and crashes the DataLoader mid-epoch; the Pillow
    of timm 0.3.2's era returned zeros, which is what the original runs trained with.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def _patch_posterize(transform: Any) -> None:
    """Point every timm posterize op inside ``transform`` at :func:`_posterize_compat` (no global patch)."""
    from timm.data import auto_augment

    for t in getattr(transform, "transforms", []):
        for op in getattr(t, "ops", []):
            if getattr(op, "aug_fn", None) is auto_augment.posterize:
                op.aug_fn = _posterize_compat


def build_transform(
    is_training: bool,
    data: DataSpec,
    recipe: RecipeSpec | None = None,
    *,
    small_input_crop: bool | None = None,
) -> Callable[[Image.Image], Any]:
    """The DeiT/ConViT transform for ``data`` (reference section 6), built from timm and torchvision.

    ``small_input_crop`` (default: ``img_size <= 32``, the original's ``not resize_im``) trains with
    ``RandomCrop(img_size, padding=4)`` instead of RandomResizedCrop and evaluates without the crop_pct
    resize.
    """
    from timm.data import create_transform
    from torchvision import transforms

    info = dataset_info(data.name)
    recipe = recipe if recipe is not None else RecipeSpec()
    size = data.img_size
    small = size <= 32 if small_input_crop is None else small_input_crop
    bicubic = transforms.InterpolationMode.BICUBIC
    if is_training:
        tf = create_transform(
            input_size=size,
            is_training=True,
            auto_augment=recipe.rand_augment,
            color_jitter=recipe.color_jitter,  # timm ignores it when RandAugment is on, as timm 0.3.2 did
            interpolation="bicubic",
            re_prob=recipe.reprob,
            re_mode=recipe.remode,
            re_count=recipe.recount,
            mean=info.mean,
            std=info.std,
        )
        _patch_posterize(tf)
        if small:
            # Resize is a no-op at the native size; it only matters for larger images at a small img_size.
            tf.transforms[0] = transforms.Compose(
                [transforms.Resize(size, interpolation=bicubic), transforms.RandomCrop(size, padding=4)]
            )
        return tf
    resize = size if small else int(size / data.crop_pct)  # int(img_size / 0.875) == original int(256/224*s)
    return transforms.Compose(
        [
            transforms.Resize(resize, interpolation=bicubic),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(info.mean, info.std),
        ]
    )


def build_datasets(
    data: DataSpec, recipe: RecipeSpec, data_root: str | Path | None = None
) -> tuple[ImageFolderDataset, ImageFolderDataset]:
    """(train, val) for a spec: training transform and subsampling on train, eval transform on the full val.

    Val uses train's (first-k) class list so labels agree between splits.
    """
    info = dataset_info(data.name)
    k = num_classes(data)
    try:
        root = resolve_data_root(data_root)
    except DataError as exc:
        raise DataError(f"{exc}; then prepare the data with: {_prepare_command(info.name, None)}") from None
    base = root / info.folder
    if not is_prepared(info.name, root):
        state = "is incomplete" if base.exists() else "is not prepared"
        raise DataError(f"dataset {info.name} {state} under {root}; run: {_prepare_command(info.name, root)}")
    classes = find_classes(base / "train")
    if classes != find_classes(base / "val"):
        raise DataError(
            f"class folders of {base / 'train'} and {base / 'val'} differ; re-run prepare --force"
        )
    if len(classes) < k:
        raise DataError(f"{base / 'train'} has {len(classes)} class folders, fewer than the {k} requested")
    train_tf, val_tf = build_transform(True, data, recipe), build_transform(False, data, recipe)
    train = ImageFolderDataset(base / "train", train_tf, data.fraction, data.num_classes, classes)
    val = ImageFolderDataset(base / "val", val_tf, 1.0, data.num_classes, classes)
    return train, val


# ----------------------------------------------------------------------------------------------------
# Loader benchmark and CLI
# ----------------------------------------------------------------------------------------------------
def bench(
    name: str,
    root: str | Path | None = None,
    img_size: int = 224,
    batch: int = 256,
    workers: int = 8,
    seconds: float = 30.0,
    max_batches: int = 300,
    fraction: float = 1.0,
) -> float:
    """Loader images/s with the training transform, through a DataLoader as training uses it.

    Two warm-up batches (worker start-up) are not timed; it stops after ``max_batches`` or ``seconds``.
    Also prints images per CPU-second of the loading processes (main + workers, from ``getrusage``), which
    does not depend on how busy a shared machine is: multiply by the cores given to loading to predict it.
    """
    import resource

    def cpu_seconds() -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # workers count once they have exited
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    spec = DataSpec(name=name, img_size=img_size, fraction=fraction)
    train, _ = build_datasets(spec, RecipeSpec(), root)
    threads = torch.get_num_threads()
    if workers == 0:
        torch.set_num_threads(1)  # as inside a DataLoader worker (restored below: no global side effect)
    try:
        loader = torch.utils.data.DataLoader(
            train,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=False,
        )
        images, start, done, cpu0, warm_images = 0, 0.0, 0, cpu_seconds(), 0
        iterator = iter(loader)
        for i, (x, _y) in enumerate(iterator):
            if i < 2:  # ignore worker start-up
                warm_images += x.shape[0]
                start = time.perf_counter()
                continue
            images += x.shape[0]
            done += 1
            if done >= max_batches or time.perf_counter() - start > seconds:
                break
        elapsed = time.perf_counter() - start
        del iterator  # shuts the workers down so their CPU time is counted
    finally:
        torch.set_num_threads(threads)
    if not images:
        raise DataError(f"{name} has too few images for a benchmark at batch {batch}")
    rate = images / elapsed
    # CPU time covers warm-up and all prefetched batches too: count every image the workers decoded.
    prefetched = min(len(loader) - 2 - done, 2 * max(workers, 1)) if workers else 0
    per_cpu = (warm_images + images + prefetched * batch) / max(cpu_seconds() - cpu0, 1e-9)
    print(
        f"{name} img_size={img_size} batch={batch} workers={workers}: {rate:.0f} images/s "
        f"({images} images in {elapsed:.1f} s; {per_cpu:.0f} images per CPU-second; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})"
    )
    return rate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m convit.data", description="Prepare datasets and benchmark the loader.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    pp = sub.add_parser("prepare", help="put a dataset in place under the data root")
    pp.add_argument("name", help=f"one of: {', '.join(dataset_names())}")
    pp.add_argument("--root", help=f"data root (default ${ENV_DATA_ROOT})")
    pp.add_argument("--archives", help=f"offline archive folder (default ${ENV_ARCHIVES}; none: download)")
    pp.add_argument("--from", dest="source", help="an existing ImageFolder root with train/ and val/ to link")
    pp.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    pb = sub.add_parser("bench", help="loader images/s with the training transform")
    pb.add_argument("name")
    pb.add_argument("--root")
    pb.add_argument("--img-size", type=int, default=224)
    pb.add_argument("--batch", type=int, default=256)
    pb.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    pb.add_argument("--seconds", type=float, default=30.0)
    pb.add_argument("--batches", type=int, default=300)
    pb.add_argument("--fraction", type=float, default=1.0)
    pl = sub.add_parser("list", help="datasets and whether they are prepared")
    pl.add_argument("--root")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point of ``python -m convit.data`` and ``convit-prepare`` (where ``NAME`` alone = prepare).

    User mistakes print one ``error:`` line to stderr and return a non-zero status, without a traceback.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in ("prepare", "bench", "list") and not args_list[0].startswith("-"):
        args_list.insert(0, "prepare")
    args = _parser().parse_args(args_list)
    try:
        if args.cmd == "prepare":
            dataset_info(args.name)
            print(
                prepare(
                    args.name, resolve_data_root(args.root), args.archives, args.force, source=args.source
                )
            )
        elif args.cmd == "bench":
            bench(args.name, args.root, args.img_size, args.batch, args.workers, args.seconds, args.batches)
        else:
            root = resolve_data_root(args.root)
            for n in dataset_names():
                print(f"{n:24s} {'prepared' if is_prepared(n, root) else '-'}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # DataError is convit.datasets.DataError in this __main__ copy too (the class convit.prepare raises), so
    # running this module's own main catches it
    sys.exit(main())
