"""The training engine on real fixture images: run directory format, recipe wiring, accumulation, CLI errors.

Models are tiny (ConViT with 2 blocks, 4 heads of width 8, 32 px images, 8 px patches) so each run takes
seconds on 2 shared CPU cores.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from convit import models, train
from convit.recipe import set_lr
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec

TINY_MODEL = {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8}


def tiny_spec(**recipe: object) -> RunSpec:
    """Two short epochs of the full DeiT recipe (mixup, cutmix, RandAugment, RA, drop path) on CIFAR."""
    base = RecipeSpec(epochs=2, warmup_epochs=1.0, batch_size=32, amp="none")
    return RunSpec(
        model=ModelSpec("convit_tiny", dict(TINY_MODEL)),
        data=DataSpec("cifar10-fixture", img_size=32),
        recipe=replace(base, **recipe),
        resources=ResourceSpec(workers=0),
        probes=ProbeSpec(every=1, batch=8),
        tags={"suite": "test"},
    )


def tiny_model() -> torch.nn.Module:
    return models.create("convit_tiny", num_classes=10, img_size=32, **TINY_MODEL)


# --------------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------------
def test_smoke_run_writes_documented_run_directory(tmp_path, fixture_data_root, capsys):
    spec = tiny_spec(ema=True, ema_decay=0.9)
    result = train.run(spec, tmp_path / "run", data_root=fixture_data_root)
    out = capsys.readouterr().out
    run = tmp_path / "run"

    # derived quantities printed at start: 200 images < ra_round 256 -> rounded to the batch: 192 / 32 = 6
    assert "global batch 32 = 1 device(s) x per-device batch 32 x 1 accumulation step(s)" in out
    assert "6 steps/epoch; 12 total steps; 6 warm-up steps" in out
    assert "peak lr 3.12e-05" in out or "peak lr 3.13e-05" in out
    assert "rounded to the global batch" in out

    assert (run / "spec.json").read_text().strip() == spec.to_json()
    assert RunSpec.from_json((run / "spec.json").read_text()) == spec
    env = json.loads((run / "env.json").read_text())
    assert {"python", "torch", "timm", "torchvision", "world_size", "device"} <= set(env)
    assert env["world_size"] == 1

    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert [m["step"] for m in lines] == [6, 12]
    for m in lines:
        assert {
            "train_loss",
            "lr",
            "val_top1",
            "val_top5",
            "val_loss",
            "images_per_s",
            "train_time_s",
            "data_wait_s",
            "epoch_time_s",
        } <= set(m)
        assert {"ema_val_top1", "nonlocality", "gate_sigma", "centre_distance"} <= set(m)
        assert math.isfinite(m["train_loss"]) and m["images_per_s"] > 0
        assert 0 <= m["data_wait_s"] < m["train_time_s"] <= m["epoch_time_s"]
        assert 0 <= m["val_top1"] <= m["val_top5"] <= 100
        assert len(m["nonlocality"]) == 2 and all(len(row) == 4 for row in m["nonlocality"])
        assert len(m["gate_sigma"]) == 1 and len(m["gate_sigma"][0]) == 4  # one GPSA layer, 4 heads

    # the logged lr is the one the epoch's last step used (per-step cosine, warm-up over 6 steps)
    peak = spec.recipe.peak_lr()
    cos = spec.recipe.min_lr + 0.5 * (peak - spec.recipe.min_lr) * (1 + math.cos(math.pi * 11 / 12))
    assert lines[1]["lr"] == pytest.approx(cos, rel=1e-9)
    assert lines[0]["lr"] == pytest.approx(spec.recipe.warmup_lr + 5 * (peak - spec.recipe.warmup_lr) / 6)

    stored = json.loads((run / "result.json").read_text())
    assert stored == result
    assert {"top1", "top5", "loss", "epochs", "wall_time_s", "world_size", "params", "ema_top1"} <= set(
        result
    )
    assert result["epochs"] == 2 and result["world_size"] == 1
    assert result["top1"] == lines[-1]["val_top1"] and result["ema_top1"] == lines[-1]["ema_val_top1"]
    assert result["params"] == sum(p.numel() for p in tiny_model().parameters())

    state = torch.load(run / "checkpoint.pth", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["step_in_epoch"] == 0 and state["global_step"] == 12
    assert state["ema"] is not None and json.loads(state["spec"]) == spec.to_dict()
    assert (run / "checkpoint.prev.pth").exists()

    # a finished run returns its stored result without training again
    again = train.run(spec, run, data_root=fixture_data_root)
    assert again == result
    assert "epoch 1/2" not in capsys.readouterr().out


def test_progress_inside_an_epoch_goes_to_the_log_and_progress_json(tmp_path, fixture_data_root, capsys):
    """Under a scheduler stdout is a file (no tqdm bar): the run still reports inside each epoch, and leaves
    progress.json for launch.py. ``progress_every_s=0`` reports after every step."""
    from convit.progress import describe, read_progress

    run = tmp_path / "run"
    train.run(tiny_spec(), run, data_root=fixture_data_root, progress_every_s=0)
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if re.match(r"epoch \d+/\d+ step \d+/\d+ ", line)]
    # 6 steps per epoch (see the test above), 2 epochs: one line per step, in order
    heads = [line.split(" | ")[0] for line in steps]
    assert heads == [f"epoch {e}/2 step {s}/6 ({100 * s / 6:.0f}%)" for e in (1, 2) for s in range(1, 7)]
    assert all("loss " in line and "waited on data " in line and "epoch ends in ~" in line for line in steps)
    ends = [line for line in out.splitlines() if line.startswith("epoch ") and " | step " in line]
    assert len(ends) == 2 and all(re.search(r"waited on data \d+%$", line) for line in ends)
    state = read_progress(run)
    assert state is not None
    assert (state["epoch"], state["epochs"], state["step"], state["steps"]) == (2, 2, 6, 6)
    assert state["images_per_s"] > 0 and math.isfinite(state["loss"]) and 0 <= state["data_wait_share"] < 1
    # launch.py's view: the last epoch is in metrics.jsonl, so the run reads as done, not "at 100%"
    assert describe(run, 2) == ("ep 2/2 done", 1.0)


def test_one_process_per_run_directory(tmp_path, fixture_data_root):
    """A second process for a run directory in use (a duplicate launch) waits for the lock, then either finds
    the run finished and returns its result without training, or stops with an error naming the holder."""
    import os
    import threading

    from convit import runlock

    run = tmp_path / "run"
    with runlock.hold(run):
        assert f"pid {os.getpid()}" in (runlock.holder(run) or "")
        with pytest.raises(train.RunInUse, match=f"in use by pid {os.getpid()} on "):
            train.run(tiny_spec(epochs=1), run, data_root=fixture_data_root, lock_wait_s=0.5)
    assert runlock.holder(run) is None  # released with the block

    first: dict = {}
    owner = threading.Thread(
        target=lambda: first.update(train.run(tiny_spec(epochs=1), run, data_root=fixture_data_root))
    )
    owner.start()
    while runlock.holder(run) is None and owner.is_alive():
        time.sleep(0.01)
    assert owner.is_alive()  # the duplicate below really starts while the run is being trained
    duplicate = train.run(tiny_spec(epochs=1), run, data_root=fixture_data_root, lock_wait_s=300)
    owner.join()
    assert duplicate == first and first["epochs"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # trained once


# --------------------------------------------------------------------------------------------------
# recipe wiring
# --------------------------------------------------------------------------------------------------
def test_weight_decay_groups_follow_the_paper_and_the_ddp_variant():
    model = tiny_model()
    decayed, plain = train.weight_decay_names(model)
    assert {"pos_embed", "cls_token"} <= set(plain)
    assert "blocks.0.attn.gating_param" in plain  # 1-D
    assert "blocks.0.norm1.weight" in plain and "head.bias" in plain
    assert {"blocks.0.attn.qk.weight", "blocks.0.attn.v.weight", "blocks.0.attn.pos_proj.weight"} <= set(
        decayed
    )
    assert {"patch_embed.proj.weight", "head.weight", "blocks.1.attn.qkv.weight"} <= set(decayed)
    assert not any(n.endswith(".bias") for n in decayed)

    decayed_ddp, plain_ddp = train.weight_decay_names(model, decay_pos_embed=True)
    assert set(decayed_ddp) == set(decayed) | {"pos_embed", "cls_token"}
    assert set(plain_ddp) == set(plain) - {"pos_embed", "cls_token"}

    # the optimiser groups are exactly these sets
    names = {id(p): n for n, p in model.named_parameters()}
    for flag, expect in ((False, decayed), (True, decayed_ddp)):
        recipe = RecipeSpec(weight_decay=0.05, decay_pos_embed=flag)
        opt = train.build_optimizer(model, recipe, lr=1e-3)
        assert isinstance(opt, torch.optim.AdamW)
        got = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
        assert got == set(expect)
        zero = {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0.0 for p in g["params"]}
        assert zero | got == set(names.values())
        assert all(g["eps"] == recipe.opt_eps for g in opt.param_groups)


def _reference_lr(recipe: RecipeSpec, t: float, warmup_t: float, total_t: float) -> float:
    """The DeiT/timm cosine with linear warm-up from warmup_lr, no warm-up prefix (reference section 6)."""
    peak = recipe.peak_lr()
    if t < warmup_t:
        return recipe.warmup_lr + t * (peak - recipe.warmup_lr) / warmup_t
    return recipe.min_lr + 0.5 * (peak - recipe.min_lr) * (1 + math.cos(math.pi * t / total_t))


def test_lr_per_step_schedule():
    recipe = RecipeSpec(epochs=10, warmup_epochs=2, batch_size=1024, lr_schedule="step")
    opt = train.build_optimizer(tiny_model(), recipe, recipe.peak_lr())
    sched = train.build_scheduler(opt, recipe, steps_per_epoch=5)
    assert recipe.peak_lr() == pytest.approx(1e-3)
    for step in (0, 1, 9, 10, 11, 25, 49):
        set_lr(sched, recipe, epoch=step // 5, global_step=step)
        for group in opt.param_groups:
            assert group["lr"] == pytest.approx(_reference_lr(recipe, step, 10, 50), rel=1e-12)
    set_lr(sched, recipe, epoch=0, global_step=0)
    assert opt.param_groups[0]["lr"] == recipe.warmup_lr


def test_lr_epoch_lagged_schedule_reproduces_the_original_one_epoch_lag():
    recipe = RecipeSpec(epochs=10, warmup_epochs=5, batch_size=512, lr_schedule="epoch_lagged")
    opt = train.build_optimizer(tiny_model(), recipe, recipe.peak_lr())
    sched = train.build_scheduler(opt, recipe, steps_per_epoch=7)
    seen = []
    for epoch in range(10):
        set_lr(sched, recipe, epoch=epoch, global_step=epoch * 7 + 3)  # mid-epoch: constant in epoch
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == seen[1] == recipe.warmup_lr  # epochs 0 and 1 both at 1e-6
    for epoch in range(1, 10):
        assert seen[epoch] == pytest.approx(_reference_lr(recipe, epoch - 1, 5, 10), rel=1e-12)
    assert seen[6] == pytest.approx(_reference_lr(recipe, 5, 5, 10))  # first cosine value one epoch late


def test_gradient_accumulation_equals_the_bigger_batch(tmp_path, fixture_data_root):
    """Deterministic config (no mixup/cutmix/drop path): per-sample augmentation is keyed by position, so
    2 x 16 accumulated and 1 x 32 see the same images; only float summation order differs."""
    spec = tiny_spec(epochs=1, mixup=0.0, cutmix=0.0, drop_path=0.0)
    spec = replace(spec, probes=ProbeSpec(every=0))
    big = train.run(spec, tmp_path / "big", data_root=fixture_data_root)
    acc_spec = replace(spec, resources=ResourceSpec(workers=0, per_device_batch=16))
    acc = train.run(acc_spec, tmp_path / "acc", data_root=fixture_data_root)
    a = torch.load(tmp_path / "big" / "checkpoint.pth", weights_only=True)
    b = torch.load(tmp_path / "acc" / "checkpoint.pth", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    ma = json.loads((tmp_path / "big" / "metrics.jsonl").read_text())
    mb = json.loads((tmp_path / "acc" / "metrics.jsonl").read_text())
    assert mb["train_loss"] == pytest.approx(ma["train_loss"], rel=1e-5)
    assert mb["lr"] == ma["lr"]
    assert acc["loss"] == pytest.approx(big["loss"], rel=1e-4)


def test_non_integral_accumulation_is_refused(tmp_path, fixture_data_root):
    spec = replace(tiny_spec(), resources=ResourceSpec(workers=0, per_device_batch=12))
    with pytest.raises(train.TrainError, match="accumulation must be integral"):
        train.run(spec, tmp_path / "run", data_root=fixture_data_root)


def test_spec_json_round_trip_through_the_run_directory(tmp_path):
    spec = replace(
        tiny_spec(lr_schedule="epoch_lagged", decay_pos_embed=True, clip_grad=1.0),
        tags={"suite": "t", "variant": [1, 2]},
        seed=3,
    )
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    again = RunSpec.from_json(path.read_text())
    assert again == spec and again.to_json() == spec.to_json() and again.digest() == spec.digest()


def test_cli_reports_user_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"recipe": {"epochs": 0}}))
    proc = subprocess.run(
        [sys.executable, "-m", "convit.train", str(bad), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "epochs must be >= 1" in proc.stderr
    assert train.main([str(tmp_path / "nope.json"), str(tmp_path / "run")]) == 2  # missing file
    assert not Path(tmp_path / "run").exists()
    # a device this machine lacks: one line, before any data or model work
    good = tmp_path / "good.json"
    good.write_text(json.dumps({}))
    missing = "cuda:99" if torch.cuda.is_available() else "cuda"
    for device, needle in (("tpu", "unknown device 'tpu'"), (missing, f"device '{missing}' requested but")):
        proc = subprocess.run(
            [sys.executable, "-m", "convit.train", str(good), str(tmp_path / "run2"), "--device", device],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and needle in proc.stderr
