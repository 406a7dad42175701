"""Two CPU processes over gloo train like one process at the same global batch, and evaluate each image once.

Why the two runs can agree: both samplers hand rank r the positions r, r + 2, r + 4 ... of one global
order, so global step k covers the same 32 images in both runs, and every image's augmentation is seeded by
its global position. With mixup/cutmix and drop path off (their draws are per rank and per batch layout, so
they cannot match a single process), the only difference left is float32 summation order: the mean over 32
samples versus the average of two means over 16 (DDP's gradient all-reduce), plus different matmul blocking
with 1 thread per process. Those are ~1e-7 relative per step; after 6 AdamW steps at lr <= 3e-5 the
parameters differed by at most 1.6e-7 when measured (relative differences are large only for entries near
zero), so we allow atol 1e-5 on parameters and 1e-5 relative on losses: tight enough to catch a wrong batch,
a missing gradient average or a double-counted sample (all of which are >1e-3 effects here).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import Subset

from convit import checkpoint, data, distributed, models, rundir, sampling, train
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec

TINY = {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8}


def ddp_spec() -> RunSpec:
    return RunSpec(
        model=ModelSpec("convit_tiny", dict(TINY)),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=RecipeSpec(
            epochs=2, warmup_epochs=1.0, batch_size=32, amp="none", mixup=0.0, cutmix=0.0, drop_path=0.0
        ),
        resources=ResourceSpec(workers=0),
        probes=ProbeSpec(every=0),
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _evaluate_checkpoint(
    ckpt_path: Path, val: torch.utils.data.Dataset, ctx: distributed.DistContext
) -> dict:
    model = models.create("convit_tiny", num_classes=10, img_size=32, **TINY)
    model.load_state_dict(checkpoint.load(ckpt_path)["model"])
    return train._evaluate(model, val, ctx, 16, 0, contextlib.nullcontext)


def _worker(rank: int, world: int, ports: tuple[int, int], spec_json: str, workdir: str, root: str) -> None:
    """One rank: train through run() (which initialises gloo from the environment), then check evaluation."""
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(ports[0]),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    spec = RunSpec.from_json(spec_json)
    result = train.run(spec, workdir, data_root=root, device="cpu")
    assert not torch.distributed.is_initialized()  # run() created the group, so it destroyed it

    # a caller-owned group is reused: evaluate 99 images (odd, so the shards are 50 + 49) on both ranks
    os.environ["MASTER_PORT"] = str(ports[1])
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    ctx = distributed.setup("cpu")
    assert not ctx.owns_group and ctx.world_size == world
    _, val = data.build_datasets(spec.data, spec.recipe, root)
    metrics = _evaluate_checkpoint(Path(workdir) / checkpoint.CHECKPOINT, Subset(val, range(99)), ctx)
    if rank == 0:
        (Path(workdir) / "ddp_check.json").write_text(json.dumps({"result": result, "eval99": metrics}))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, fixture_data_root):
    spec = ddp_spec()
    single = train.run(spec, tmp_path / "single", data_root=fixture_data_root, device="cpu")

    ddp_dir = tmp_path / "ddp"
    mp.start_processes(
        _worker,
        args=(2, (_free_port(), _free_port()), spec.to_json(), str(ddp_dir), str(fixture_data_root)),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    check = json.loads((ddp_dir / "ddp_check.json").read_text())
    result = check["result"]
    assert result["world_size"] == 2 and single["world_size"] == 1
    assert json.loads((ddp_dir / "env.json").read_text())["world_size"] == 2
    assert sorted(p.name for p in ddp_dir.iterdir()) == sorted(
        [
            ".lock",
            "checkpoint.pth",
            "checkpoint.prev.pth",
            "ddp_check.json",
            "env.json",
            "metrics.jsonl",
            "progress.json",
            "result.json",
            "spec.json",
            "tensorboard",
        ]
    )  # only rank 0 wrote files, and no stray temporaries
    assert len(list((ddp_dir / "tensorboard").iterdir())) == 1  # one event file: rank 0's

    a = checkpoint.load(tmp_path / "single" / checkpoint.CHECKPOINT)
    b = checkpoint.load(ddp_dir / checkpoint.CHECKPOINT)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-5, msg=key)

    single_lines = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    ddp_lines = [json.loads(x) for x in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in ddp_lines] == [1, 2]
    for s, d in zip(single_lines, ddp_lines, strict=True):
        assert d["step"] == s["step"] and d["lr"] == s["lr"]
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-5)  # reduced over both ranks
        assert d["val_loss"] == pytest.approx(s["val_loss"], rel=1e-5)
        assert d["val_top1"] == s["val_top1"] and d["val_top5"] == s["val_top5"]  # 100 images, no padding

    # distributed evaluation of the same weights on 99 images: every image counted exactly once
    ctx1 = distributed.DistContext(0, 1, 0, torch.device("cpu"), owns_group=False)
    _, val = data.build_datasets(spec.data, spec.recipe, fixture_data_root)
    ref = _evaluate_checkpoint(ddp_dir / checkpoint.CHECKPOINT, Subset(val, range(99)), ctx1)
    got = check["eval99"]
    assert got["count"] == ref["count"] == 99
    assert got["top1"] == ref["top1"] and got["top5"] == ref["top5"]
    assert got["loss"] == pytest.approx(ref["loss"], rel=1e-6)


def test_uneven_accumulation_and_world_size_arithmetic_is_refused(tmp_path, fixture_data_root, monkeypatch):
    """World size 3 cannot split a global batch of 32: a clear error before any process group is needed."""
    spec = replace(ddp_spec(), resources=ResourceSpec(workers=0))
    ctx = distributed.DistContext(0, 3, 0, torch.device("cpu"), owns_group=False)
    with pytest.raises(train.TrainError, match="not divisible by world size 3"):
        sampling.Plan(spec, ctx, 100, rundir.Printer(False))
