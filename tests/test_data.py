"""Tests of convit.data and convit.prepare: preparation, subsampling, transforms, image decoding, errors, CLI.

They run on the real image fixtures (``fixture_data_root``) and on tiny images made in ``tmp_path``;
nothing is downloaded.
"""

from __future__ import annotations

import copy
import io
import json
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convit import data
from convit import prepare as prep
from convit.spec import DataSpec, RecipeSpec

FIXTURES = ("cifar10-fixture", "tiny-imagenet-fixture")


def _write_jpeg(path: Path, mode: str = "RGB", size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {"RGB": (200, 30, 90), "L": 128, "CMYK": (10, 200, 30, 0)}[mode]
    Image.new(mode, (size, size), colour).save(path, format="JPEG")


def _make_imagefolder(base: Path, classes: list[str], per_class: int) -> None:
    for split in ("train", "val"):
        for cls in classes:
            for i in range(per_class):
                _write_jpeg(base / split / cls / f"{i:03d}.jpg")


# --- prepare ---
def test_prepare_layout_and_marker(fixture_data_root: Path) -> None:
    for name in FIXTURES:
        base = fixture_data_root / name
        marker = json.loads((base / data.MARKER).read_text())
        assert marker["counts"] == {"train": 200, "val": 100}
        assert marker["md5"] and marker["name"] == name
        for split in ("train", "val"):
            assert len([p for p in (base / split).iterdir() if p.is_dir()]) == 10
        assert data.is_prepared(name, fixture_data_root)
    assert not [p for p in fixture_data_root.iterdir() if ".partial-" in p.name]


def test_prepare_is_idempotent(fixture_data_root: Path, archives_dir: Path) -> None:
    marker = fixture_data_root / "cifar10-fixture" / data.MARKER
    before = marker.stat().st_mtime_ns
    assert prep.prepare("cifar10-fixture", fixture_data_root, archives=archives_dir) == marker.parent
    assert marker.stat().st_mtime_ns == before


def test_prepare_force_rebuilds(tmp_path: Path, archives_dir: Path) -> None:
    path = prep.prepare("tiny-imagenet-fixture", tmp_path, archives=archives_dir)
    (path / "train" / "stray.txt").write_text("x")
    prep.prepare("tiny-imagenet-fixture", tmp_path, archives=archives_dir, force=True)
    assert not (path / "train" / "stray.txt").exists()
    assert data.is_prepared("tiny-imagenet-fixture", tmp_path)


def test_prepare_missing_archive_is_clear(tmp_path: Path) -> None:
    empty = tmp_path / "archives"
    empty.mkdir()
    with pytest.raises(data.DataError, match="fixtures/cifar10-jpeg-fixture.tar.gz"):
        prep.prepare("cifar10-fixture", tmp_path / "root", archives=empty)
    with pytest.raises(data.DataError, match="does not exist"):
        prep.prepare("cifar10-fixture", tmp_path / "root", archives=tmp_path / "nowhere")
    assert not (tmp_path / "root" / "cifar10-fixture").exists()
    assert not [p for p in (tmp_path / "root").iterdir() if ".partial-" in p.name]


def test_prepare_rejects_corrupt_archive(tmp_path: Path) -> None:
    fake = tmp_path / "archives" / "fixtures" / "cifar10-jpeg-fixture.tar.gz"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the archive")
    with pytest.raises(data.DataError, match="md5"):
        prep.prepare("cifar10-fixture", tmp_path / "root", archives=tmp_path / "archives")
    assert not (tmp_path / "root" / "cifar10-fixture").exists()


def test_interrupted_prepare_leaves_no_complete_looking_folder(
    tmp_path: Path, archives_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_verify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare("cifar10-fixture", tmp_path, archives=archives_dir)
    assert not (tmp_path / "cifar10-fixture").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert not data.is_prepared("cifar10-fixture", tmp_path)
    # a SIGKILLed prepare cannot clean up: the next prepare removes its leftovers and succeeds
    (tmp_path / ".cifar10-fixture.partial-dead" / "out" / "train").mkdir(parents=True)
    monkeypatch.undo()
    prep.prepare("cifar10-fixture", tmp_path, archives=archives_dir)
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert data.is_prepared("cifar10-fixture", tmp_path)


def test_unmarked_folder_needs_force(tmp_path: Path, archives_dir: Path) -> None:
    (tmp_path / "cifar10-fixture" / "train").mkdir(parents=True)
    with pytest.raises(data.DataError, match="--force"):
        prep.prepare("cifar10-fixture", tmp_path, archives=archives_dir)
    with pytest.raises(data.DataError, match="is incomplete"):
        data.build_datasets(DataSpec(name="cifar10-fixture", img_size=32), RecipeSpec(), tmp_path)
    prep.prepare("cifar10-fixture", tmp_path, archives=archives_dir, force=True)
    assert data.is_prepared("cifar10-fixture", tmp_path)


def test_imagenet_from_user_root(tmp_path: Path) -> None:
    user = tmp_path / "my-imagenet"
    _make_imagefolder(user, ["n001", "n002", "n003"], 4)
    with pytest.raises(data.DataError, match="--from"):
        prep.prepare("imagenet", tmp_path / "root")
    path = prep.prepare("imagenet", tmp_path / "root", source=user)
    assert path.is_symlink() and data.is_prepared("imagenet", tmp_path / "root")
    train, val = data.build_datasets(
        DataSpec(name="imagenet", img_size=32, num_classes=2, fraction=0.5), RecipeSpec(), tmp_path / "root"
    )
    assert train.classes == ["n001", "n002"] and len(train) == 4 and len(val) == 8
    with pytest.raises(data.DataError, match="missing val/"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "train").mkdir()
        prep.prepare("imagenet", tmp_path / "root2", source=tmp_path / "half")


def test_tiny_imagenet_official_zip_layout(tmp_path: Path) -> None:
    """The cs231n zip (what the download gets) is re-sorted into the same layout as the offline archive."""
    base = tmp_path / "raw" / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (base).mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tone\nn02\ttwo\n")
    lines = []
    for w in wnids:
        for i in range(3):
            _write_jpeg(base / "train" / w / "images" / f"{w}_{i}.JPEG")
        (base / "train" / w / f"{w}_boxes.txt").write_text("boxes")
    for i, w in enumerate(["n01", "n02", "n01"]):
        _write_jpeg(base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t8\t8")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    prep._assemble_tiny_official(tmp_path / "raw", out)
    assert sorted(p.name for p in (out / "train" / "n01").iterdir()) == [f"n01_{i}.JPEG" for i in range(3)]
    assert sorted(p.name for p in (out / "val" / "n01").iterdir()) == ["val_0.JPEG", "val_2.JPEG"]
    assert [p.name for p in (out / "val" / "n02").iterdir()] == ["val_1.JPEG"]
    assert (out / "meta" / "train_boxes" / "n02_boxes.txt").is_file()
    assert (out / "meta" / "val_annotations.txt").is_file()


def test_cifar_export_is_lossless_and_ordered(tmp_path: Path) -> None:
    class FakeCifar:
        classes = ["cat", "dog"]
        data = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
        targets = [1, 0, 1, 1, 0]

    prep._export_cifar(FakeCifar, tmp_path / "train")
    assert sorted(p.name for p in (tmp_path / "train" / "dog").iterdir()) == [
        "0000.png",
        "0001.png",
        "0002.png",
    ]
    # file k of a class is its k-th image in official order
    assert np.array_equal(np.asarray(Image.open(tmp_path / "train" / "dog" / "0001.png")), FakeCifar.data[2])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "train" / "cat" / "0001.png")), FakeCifar.data[4])


def test_imagefolder_archive_with_test_split(tmp_path: Path) -> None:
    """The CIFAR-10 JPEG archive has train/ and test/ at its top level: test/ becomes val/."""
    src = tmp_path / "src"
    for split in ("train", "test"):
        _write_jpeg(src / split / "a" / "0000.jpg")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for split in ("train", "test"):
            tf.add(src / split, arcname=split)
    prep._extract(archive, tmp_path / "raw")
    prep._assemble_imagefolder(tmp_path / "raw", tmp_path / "out")
    assert (tmp_path / "out" / "val" / "a" / "0000.jpg").is_file()


# --- subsampling ---
def test_subsample_counts_order_and_nesting() -> None:
    files = {
        "b": [f"{i:02d}.jpg" for i in range(10)],
        "a": [f"img{i}.JPEG" for i in range(7)],
        "c": [f"{i}.png" for i in range(3)],
    }
    shuffled = {k: random.Random(1).sample(v, len(v)) for k, v in files.items()}
    previous: dict[str, list[str]] | None = None
    for f in (0.05, 0.1, 0.3, 0.5, 1.0):
        kept = data.subsample(shuffled, f)
        assert list(kept) == ["a", "b", "c"]
        for cls, names in kept.items():
            assert len(names) == int(len(files[cls]) * f)
            assert names == sorted(files[cls])[: len(names)]
            if previous is not None:  # nested: the smaller fraction's files are a prefix
                assert names[: len(previous[cls])] == previous[cls]
        assert kept == data.subsample(files, f)  # deterministic, independent of input order
        previous = kept
    assert data.subsample(files, 1.0, num_classes=2).keys() == {"a", "b"}


def test_subsample_counts_non_images_like_the_original() -> None:
    # n_c = len(os.listdir()) counts the text file, but only image files are kept
    files = {"a": ["0.jpg", "1.jpg", "2.jpg", "notes.txt"]}
    assert data.subsample(files, 0.5) == {"a": ["0.jpg", "1.jpg"]}
    assert data.subsample(files, 1.0) == {"a": ["0.jpg", "1.jpg", "2.jpg"]}
    assert data.subsample(files, 0.5, entry_counts={"a": 3}) == {"a": ["0.jpg"]}


def test_list_images_walks_like_the_original(tmp_path: Path) -> None:
    cls = tmp_path / "train" / "a"
    for name in ("b.jpg", "a.jpg", "sub/c.jpg", "z.txt"):
        _write_jpeg(cls / name) if name.endswith(".jpg") else (cls / name).write_text("x")
    classes, samples = data.list_images(tmp_path / "train", fraction=0.75)  # 4 entries -> 3 images
    assert classes == ["a"]
    assert [Path(p).relative_to(cls).as_posix() for p, _ in samples] == ["a.jpg", "b.jpg", "sub/c.jpg"]


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 1.0])
def test_fixture_subsampling_train_only(fixture_data_root: Path, fraction: float) -> None:
    spec = DataSpec(name="tiny-imagenet-fixture", img_size=64, fraction=fraction)
    train, val = data.build_datasets(spec, RecipeSpec(), fixture_data_root)
    per_class = int(20 * fraction)
    assert len(train) == 10 * per_class and len(val) == 100
    assert train.targets == [t for t, _ in enumerate(train.classes) for _ in range(per_class)]
    first_class = sorted((fixture_data_root / "tiny-imagenet-fixture" / "train" / train.classes[0]).iterdir())
    assert [Path(p).name for p, _ in train.samples[:per_class]] == [p.name for p in first_class[:per_class]]


def test_first_k_classes_on_both_splits(fixture_data_root: Path) -> None:
    spec = DataSpec(name="cifar10-fixture", img_size=32, num_classes=3, fraction=0.5)
    train, val = data.build_datasets(spec, RecipeSpec(), fixture_data_root)
    assert train.classes == val.classes == ["airplane", "automobile", "bird"]
    assert set(train.targets) == set(val.targets) == {0, 1, 2}
    assert len(train) == 30 and len(val) == 30
    assert data.num_classes(spec) == 3
    with pytest.raises(data.DataError, match="cannot keep"):
        data.num_classes(DataSpec(name="cifar10", num_classes=11))


# --- transforms and decoding ---
@pytest.mark.parametrize(
    ("name", "size"), [("cifar10-fixture", 32), ("tiny-imagenet-fixture", 64), ("cifar10-fixture", 224)]
)
def test_transform_shapes(fixture_data_root: Path, name: str, size: int) -> None:
    train, val = data.build_datasets(DataSpec(name=name, img_size=size), RecipeSpec(), fixture_data_root)
    torch.manual_seed(0)
    for ds in (train, val):
        x, y = ds[0]
        assert x.shape == (3, size, size) and x.dtype == torch.float32 and isinstance(y, int)
    first = type(train.transform.transforms[0]).__name__
    assert (first == "Compose") == (size <= 32)  # Resize + RandomCrop(pad 4) at <= 32 px, as the original
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8, shuffle=True)))
    assert batch[0].shape == (8, 3, size, size)


def test_eval_transform_matches_deit() -> None:
    names = [type(t).__name__ for t in data.build_transform(False, DataSpec(name="cifar100")).transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    tf = data.build_transform(False, DataSpec(name="cifar100", img_size=224))
    assert tf.transforms[0].size == 256 and tf.transforms[1].size == (224, 224)
    assert data.build_transform(False, DataSpec(name="tiny-imagenet", img_size=64)).transforms[0].size == 73


def test_randaugment_posterize_zero_bits_does_not_crash() -> None:
    """RandAugment inc1 at magnitude 10 asks for 0 bits; Pillow >= 11 raises, old Pillow gave black."""
    from timm.data.auto_augment import RandAugment

    tf = data.build_transform(True, DataSpec(name="cifar10", img_size=32))
    ra = next(t for t in tf.transforms if isinstance(t, RandAugment))
    op = copy.copy(next(o for o in ra.ops if o.name == "PosterizeIncreasing"))
    op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0
    img = Image.new("RGB", (32, 32), (200, 100, 50))
    assert op(img).getpixel((0, 0)) == (0, 0, 0)
    assert data._posterize_compat(img, 2).getpixel((0, 0)) == (192, 64, 0)
    assert data._posterize_compat(img, 8) is img


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_greyscale_and_cmyk_become_rgb(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"img_{mode}.jpg"
    _write_jpeg(path, mode)
    assert Image.open(path).mode == mode
    img = data.load_image(path)
    assert img.mode == "RGB"
    x = data.build_transform(True, DataSpec(name="cifar10", img_size=32))(img)
    assert x.shape == (3, 32, 32)


def test_fast_jpeg_decode_matches_pil(fixture_data_root: Path) -> None:
    for name in FIXTURES:
        for path in sorted((fixture_data_root / name / "train").rglob("*"))[::7]:
            if path.is_file():
                expected = np.asarray(Image.open(path).convert("RGB"))
                assert np.array_equal(np.asarray(data.load_image(path)), expected), path


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path / "ds", ["a"], 2)
    bad = tmp_path / "ds" / "train" / "a" / "000.jpg"
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, format="JPEG")
    bad.write_bytes(good.getvalue()[:200])  # truncated JPEG
    dataset = data.ImageFolderDataset(tmp_path / "ds" / "train")
    with pytest.raises(data.CorruptImageError, match="000.jpg"):
        dataset[0]
    bad.write_bytes(b"garbage")
    with pytest.raises(data.CorruptImageError, match=str(bad)):
        data.load_image(bad)
    assert dataset[1][0].mode == "RGB"


# --- errors and CLI ---
def test_missing_data_says_how_to_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DataSpec(name="cifar10", img_size=32)
    with pytest.raises(data.DataError, match="python -m convit.data prepare cifar10 --root"):
        data.build_datasets(spec, RecipeSpec(), tmp_path)
    monkeypatch.delenv(data.ENV_DATA_ROOT, raising=False)
    with pytest.raises(data.DataError, match=data.ENV_DATA_ROOT):
        data.build_datasets(spec, RecipeSpec())
    monkeypatch.setenv(data.ENV_DATA_ROOT, str(tmp_path))
    assert data.resolve_data_root() == tmp_path
    assert data.resolve_data_root(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(data.DataError, match="unknown dataset"):
        data.dataset_info("imagenet21k")
    assert data.dataset_info("tiny-imagenet").num_classes == 200
    assert set(data.dataset_names()) >= {"imagenet", "tiny-imagenet", "cifar10", "cifar100"}


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare", "nope", "--root", "R"],
        ["prepare", "cifar10-fixture"],
        ["nope"],
        ["prepare"],
        ["bench", "x"],
    ],
)
def test_cli_bad_input_one_line(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(data.ENV_DATA_ROOT, raising=False)
    argv = [str(tmp_path) if a == "R" else a for a in argv]
    try:
        code = data.main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "error" in err and "Traceback" not in err


def test_cli_subprocess_and_bench(fixture_data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "convit.data", "prepare", "imagenet2", "--root", str(fixture_data_root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "unknown dataset" in proc.stderr
    # an error raised inside convit.prepare, through the real `python -m convit.data` entry point
    elsewhere = fixture_data_root.parent
    proc = subprocess.run(
        [sys.executable, "-m", "convit.data", "prepare", "cifar10", "--root", str(elsewhere / "x"),
         "--archives", str(elsewhere / "no-archives")],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "archives folder" in proc.stderr and "does not exist" in proc.stderr
    assert data.main(["cifar10-fixture", "--root", str(fixture_data_root), "--archives", "unused"]) == 0
    rate = data.bench("cifar10-fixture", fixture_data_root, img_size=32, batch=16, workers=0, max_batches=2)
    assert rate > 0 and "images/s" in capsys.readouterr().out
