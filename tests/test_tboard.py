"""TensorBoard event files (issue 18): what a run logs; a resumed run's log reads like an uninterrupted one.

The runs are real (the fixture CIFAR images, the full recipe, probes on); the event files are read back raw
(``tboard.read_scalars``, no purging rules) and through TensorBoard's own loader, so a duplicated step would
show in either.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from convit import tboard, train
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec


def _spec() -> RunSpec:
    """Three 3-step epochs of the full recipe with probes every epoch (as test_resume, probes denser)."""
    return RunSpec(
        model=ModelSpec(
            "convit_tiny",
            {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8},
        ),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=RecipeSpec(epochs=3, warmup_epochs=1.0, batch_size=32, amp="none"),
        resources=ResourceSpec(workers=0),
        probes=ProbeSpec(every=1, batch=8),
    )


def _stop_after(n: int):
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= n

    return should_stop


def _accumulated(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard itself shows (its loader applies purge_step and out-of-order rules)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, fixture_data_root) -> Path:
    workdir = tmp_path_factory.mktemp("tb") / "run"
    train.run(_spec(), workdir, data_root=fixture_data_root, device="cpu")
    return workdir


def test_a_run_logs_loss_lr_eval_speed_and_probes(uninterrupted):
    scalars = tboard.read_scalars(uninterrupted / tboard.SUBDIR)
    history = [json.loads(line) for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    steps = [step for step, _ in scalars["train/loss"]]
    assert steps == list(range(1, 10))  # every optimiser step once, in order
    assert [s for s, _ in scalars["train/lr"]] == steps
    assert all(value > 0 for _, value in scalars["train/lr"])
    for tag, key in (("val/top1", "val_top1"), ("val/top5", "val_top5"), ("val/loss", "val_loss")):
        assert scalars[tag] == [(e["step"], pytest.approx(e[key], rel=1e-6)) for e in history]
    assert [s for s, _ in scalars["perf/images_per_s"]] == [3, 6, 9]
    assert all(0 <= v <= 1 for _, v in scalars["perf/data_wait_share"])
    # one GPSA layer with 4 heads, two blocks: sigma(lambda) per layer and head, nonlocality per block
    assert {f"probes/gate_sigma/layer00/head{h:02d}" for h in range(4)} <= set(scalars)
    assert scalars["probes/gate_sigma/layer00/head02"][-1][1] == pytest.approx(
        history[-1]["gate_sigma"][0][2]
    )
    assert {"probes/nonlocality/block00", "probes/nonlocality/block01", "probes/gate_sigma/layer00"} <= set(
        scalars
    )


def test_resumed_run_logs_each_step_once_and_matches_the_uninterrupted_run(
    tmp_path, fixture_data_root, uninterrupted
):
    spec, workdir = _spec(), tmp_path / "run"
    logdir = workdir / tboard.SUBDIR
    with pytest.raises(train.Preempted):
        train.run(spec, workdir, data_root=fixture_data_root, should_stop=_stop_after(5), device="cpu")
    # mid-epoch 1 (global step 5): now fake what a kill after the checkpoint would have left behind,
    # steps logged past it (per-step and per-epoch tags), as a real SIGKILL between a flush and the next save
    from torch.utils.tensorboard import SummaryWriter

    ghost = SummaryWriter(str(logdir), filename_suffix=".ghost")
    ghost.add_scalar("train/loss", 99.0, 6)
    ghost.add_scalar("train/loss", 98.0, 7)
    ghost.add_scalar("val/top1", 1.0, 6)
    ghost.close()
    with pytest.raises(train.Preempted):
        train.run(spec, workdir, data_root=fixture_data_root, should_stop=_stop_after(3), device="cpu")
    train.run(spec, workdir, data_root=fixture_data_root, device="cpu")

    ref = tboard.read_scalars(uninterrupted / tboard.SUBDIR)
    got = tboard.read_scalars(logdir)
    assert len(list(logdir.glob("events.out.tfevents.*"))) >= 2  # really written by several processes
    assert set(got) == set(ref)
    for tag in ref:
        steps = [step for step, _ in got[tag]]
        assert len(steps) == len(set(steps)), f"{tag}: duplicated steps {steps}"
        assert sorted(steps) == [step for step, _ in ref[tag]], tag
    # CPU resume is exact, so the per-step losses are the uninterrupted run's (timing tags aside)
    assert sorted(got["train/loss"]) == ref["train/loss"]
    assert sorted(got["val/top1"]) == ref["val/top1"]
    # and TensorBoard's own loader shows the same single copy of each step
    shown = _accumulated(logdir)
    assert [s for s, _ in shown["train/loss"]] == list(range(1, 10))
    assert [s for s, _ in shown["val/top1"]] == [3, 6, 9]


def test_scrub_keeps_per_step_tags_up_to_the_resume_step_and_drops_epoch_tags(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    for step in range(1, 7):
        writer.add_scalar("train/loss", float(step), step)
    writer.add_scalar("val/top1", 50.0, 3)
    writer.close()
    assert tboard.scrub(tmp_path, 4) == 3  # steps 5, 6 and the epoch tag
    assert tboard.read_scalars(tmp_path) == {"train/loss": [(s, float(s)) for s in range(1, 5)]}
    assert tboard.scrub(tmp_path, 4) == 0  # idempotent: nothing left to drop


def test_off_switch_writes_no_event_files(tmp_path, fixture_data_root, monkeypatch):
    monkeypatch.setenv("CONVIT_TENSORBOARD", "0")
    spec = replace(_spec(), recipe=replace(_spec().recipe, epochs=1))
    train.run(spec, tmp_path / "run", data_root=fixture_data_root, device="cpu")
    assert not (tmp_path / "run" / tboard.SUBDIR).exists()
