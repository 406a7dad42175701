"""Never lose work: SIGKILL and resume, preemption mid-epoch, corrupt checkpoints, spec mismatch, NaN.

Every resumed run must end with exactly the metrics of the uninterrupted reference (bit for bit on CPU):
augmentation is keyed by (seed, epoch, sample position), the main process reseeds per micro-batch, and the
checkpoint carries the partial-epoch loss sums, so only timing fields may differ.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from convit import checkpoint, models, train
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec


def resume_spec(workers: int = 0) -> RunSpec:
    """Three 3-step epochs (100 images, rounded to the batch) of the full recipe, EMA on."""
    return RunSpec(
        model=ModelSpec(
            "convit_tiny",
            {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8},
        ),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=RecipeSpec(epochs=3, warmup_epochs=1.0, batch_size=32, amp="none", ema=True, ema_decay=0.9),
        resources=ResourceSpec(workers=workers),
        probes=ProbeSpec(every=2, batch=8),
    )


def _strip(entries: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in train.TIMING_KEYS} for e in entries]


def _outcome(workdir: Path) -> tuple[dict, list[dict]]:
    result = json.loads((workdir / "result.json").read_text())
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return _strip([result])[0], _strip(lines)


def _cli(spec_path: Path, workdir: Path, data_root: Path) -> list[str]:
    # pinned to the CPU: these runs must match bit for bit, which a GPU (atomics in SDPA and cuDNN backward)
    # only promises with resources.deterministic
    return [
        sys.executable, "-m", "convit.train", str(spec_path), str(workdir),
        "--data-root", str(data_root), "--device", "cpu",
    ]  # fmt: skip


def _same_threads_env() -> dict[str, str]:
    """Child env with this process's intra-op thread count: CPU results are bit-exact only for equal counts
    (float reductions are split across threads), and in-process runs here use ``torch.get_num_threads()``."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fixture_data_root) -> tuple[Path, dict, list[dict]]:
    """The uninterrupted run, in a child process with one DataLoader worker."""
    root = tmp_path_factory.mktemp("reference")
    spec_path = root / "spec.json"
    spec_path.write_text(resume_spec(workers=1).to_json())
    proc = subprocess.run(
        _cli(spec_path, root / "run", fixture_data_root),
        capture_output=True,
        text=True,
        timeout=600,
        env=_same_threads_env(),
    )
    assert proc.returncode == 0, proc.stderr
    result, lines = _outcome(root / "run")
    assert [e["epoch"] for e in lines] == [1, 2, 3]
    return root / "run", result, lines


@pytest.mark.slow
def test_sigkill_then_relaunch_matches_the_uninterrupted_run(tmp_path, fixture_data_root, reference):
    _, ref_result, ref_lines = reference
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(resume_spec(workers=1).to_json())
    workdir = tmp_path / "run"
    cmd = _cli(spec_path, workdir, fixture_data_root)

    env = _same_threads_env()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while not (workdir / checkpoint.CHECKPOINT).exists():
        assert child.poll() is None, "child finished before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.2)  # land somewhere inside epoch 2
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (workdir / "result.json").exists()

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from checkpoint" in proc.stdout
    result, lines = _outcome(workdir)
    assert lines == ref_lines  # no duplicated or missing epochs, identical numbers
    assert result == ref_result


def test_should_stop_mid_epoch_then_resume_matches(tmp_path, fixture_data_root, reference):
    """Two preemptions inside epochs (in-process, no workers) end exactly like the reference (1 worker)."""
    _, ref_result, ref_lines = reference
    spec = resume_spec(workers=0)
    workdir = tmp_path / "run"

    def stop_after(n: int):
        calls = {"n": 0}

        def should_stop() -> bool:
            calls["n"] += 1
            return calls["n"] >= n

        return should_stop

    with pytest.raises(train.Preempted) as info:
        train.run(spec, workdir, data_root=fixture_data_root, should_stop=stop_after(3), device="cpu")
    assert (info.value.epoch, info.value.step) == (0, 3)  # 3 steps per epoch: the last step of epoch 0
    state = checkpoint.load(workdir / checkpoint.CHECKPOINT)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 3, 3)
    assert (workdir / "metrics.jsonl").read_text() == ""  # epoch 0 not finished (not evaluated) yet

    with pytest.raises(train.Preempted) as info:
        train.run(spec, workdir, data_root=fixture_data_root, should_stop=stop_after(4), device="cpu")
    assert (info.value.epoch, info.value.step) == (2, 1)  # global step 7, mid-epoch
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2

    result = train.run(spec, workdir, data_root=fixture_data_root, device="cpu")
    got_result, lines = _outcome(workdir)
    assert lines == ref_lines
    assert got_result == ref_result
    assert result["top1"] == ref_result["top1"] and result["ema_top1"] == ref_result["ema_top1"]


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, fixture_data_root, reference, capsys
):
    ref_dir, ref_result, ref_lines = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    (workdir / "result.json").unlink()
    # spec identity: the reference used one worker
    latest = workdir / checkpoint.CHECKPOINT
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated mid-write

    spec = resume_spec(workers=1)
    train.run(spec, workdir, data_root=fixture_data_root, device="cpu")
    captured = capsys.readouterr()
    assert "checkpoint.pth is unreadable" in captured.err
    assert "resumed from checkpoint.prev.pth: epoch 2" in captured.out
    result, lines = _outcome(workdir)
    assert lines == ref_lines  # the third line was rewritten, not duplicated
    assert result == ref_result


def test_no_usable_checkpoint_means_restart(tmp_path):
    (tmp_path / checkpoint.CHECKPOINT).write_bytes(b"not a zip file")
    (tmp_path / checkpoint.PREVIOUS).write_bytes(b"")
    state, path, warnings = checkpoint.load_latest(tmp_path)
    assert state is None and path is None and len(warnings) == 2


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    checkpoint.save_atomic({"a": torch.ones(2), "meta": {"spec": "{}", "n": 1}}, tmp_path)
    checkpoint.save_atomic({"a": torch.zeros(2), "meta": {"spec": "{}", "n": 2}}, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {checkpoint.CHECKPOINT, checkpoint.PREVIOUS}
    assert checkpoint.load(tmp_path / checkpoint.CHECKPOINT)["meta"]["n"] == 2
    assert checkpoint.load(tmp_path / checkpoint.PREVIOUS)["meta"]["n"] == 1
    torch.save({"bad": Path("/x")}, tmp_path / "pickled.pth")  # a pickled object is refused
    with pytest.raises(Exception, match="(?i)weights.only|unsupported global"):
        checkpoint.load(tmp_path / "pickled.pth")
    # RNG state round trip through a weights_only file
    before = checkpoint.rng_state()
    checkpoint.save_atomic({"rng": before}, tmp_path)
    expect = (torch.rand(3), __import__("random").random())
    checkpoint.set_rng_state(checkpoint.load(tmp_path / checkpoint.CHECKPOINT)["rng"])
    assert torch.equal(torch.rand(3), expect[0]) and __import__("random").random() == expect[1]


def test_spec_mismatch_is_refused_and_a_finished_run_returns_its_result(tmp_path, reference):
    ref_dir, ref_result, _ = reference
    workdir = tmp_path / "run"
    shutil.copytree(ref_dir, workdir)
    changed = replace(resume_spec(workers=1), seed=1, recipe=replace(resume_spec().recipe, base_lr=1e-3))
    with pytest.raises(train.SpecMismatch) as info:
        train.run(changed, workdir, device="cpu")
    assert info.value.keys == ["recipe.base_lr", "seed"]
    assert "recipe.base_lr" in str(info.value) and "seed" in str(info.value)

    t0 = time.monotonic()
    stored = train.run(resume_spec(workers=1), workdir, device="cpu")
    assert time.monotonic() - t0 < 1.0
    assert {k: v for k, v in stored.items() if k not in train.TIMING_KEYS} == ref_result


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, fixture_data_root, monkeypatch):
    """Poison the 5th training forward (epoch 1, step 1): the run stops, naming it; the checkpoint stays."""
    real_create = models.create

    def poisoned_create(name, **kwargs):
        model = real_create(name, **kwargs)
        calls = {"n": 0}

        def hook(module, args, output):
            if not module.training:
                return output
            calls["n"] += 1
            return output * float("nan") if calls["n"] >= 5 else output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(models, "create", poisoned_create)
    spec = replace(resume_spec(), probes=ProbeSpec(every=0))
    workdir = tmp_path / "run"
    with pytest.raises(train.NonFiniteLoss, match=r"epoch 1 \(0-based\), step 1 of the epoch"):
        train.run(spec, workdir, data_root=fixture_data_root, device="cpu")
    state = checkpoint.load(workdir / checkpoint.CHECKPOINT)
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 0, 3)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (workdir / checkpoint.PREVIOUS).exists()
    assert not (workdir / "result.json").exists()
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and math.isfinite(json.loads(lines[0])["train_loss"])
