"""Hard distillation (Table 4): the loss, the teacher's effect, resume, unchanged undistilled runs, launcher.

Students are the smoke-scale specs of ``experiments/distillation.py`` (DeiT-Ti widths, depth 2, 32 px, one
epoch of 25 steps at batch 8 on cifar10-fixture); teachers are random or hand-set ``regnety_002`` state dicts
written by the tests, so nothing is downloaded.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from convit import checkpoint, jobs, models, train
from convit.spec import RunSpec
from experiments import distillation, main_table

from tiny import launch

pytestmark = pytest.mark.usefixtures("one_thread")

TEACHER_FILE = distillation.teacher_file("smoke")
CONSTANT_CLASS = 3


def _distilled_spec() -> RunSpec:
    (spec,) = [s for s in distillation.specs("smoke") if s.tags["variant"] == "deit_tiny-hard_distill"]
    return spec


def _teacher_state(num_classes: int = 10, constant: int | None = None) -> dict[str, torch.Tensor]:
    """A random-init ``regnety_002``; with ``constant``, its classifier always answers that class."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        teacher = timm.create_model("regnety_002", num_classes=num_classes, pretrained=False)
    if constant is not None:
        with torch.no_grad():
            teacher.head.fc.weight.zero_()
            teacher.head.fc.bias.zero_()
            teacher.head.fc.bias[constant] = 10.0
    return teacher.state_dict()


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --checkpoints folder holding the smoke teacher (random weights, plain state dict)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.save(_teacher_state(), folder / TEACHER_FILE)
    return folder


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory, fixture_data_root: Path) -> Path:
    """The undistilled twin of the distilled smoke student (main_table's deit_tiny), run without teacher=."""
    workdir = tmp_path_factory.mktemp("plain") / "run"
    train.run(main_table.train_spec("smoke", "deit", "tiny"), workdir, data_root=fixture_data_root)
    return workdir


def _outcome(workdir: Path) -> tuple[dict, list[dict]]:
    result = json.loads((workdir / "result.json").read_text())
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in e.items() if k not in train.TIMING_KEYS} for e in [result, *lines]]
    return strip[0], strip[1:]


def _class_probability(workdir: Path, images: torch.Tensor, cls: int) -> float:
    """Mean softmax probability of ``cls`` under the run's final student weights."""
    spec = RunSpec.from_json((workdir / "spec.json").read_text())
    model = models.create(spec.model.name, num_classes=10, img_size=spec.data.img_size, **spec.model.kwargs)
    model.load_state_dict(checkpoint.load(workdir / checkpoint.CHECKPOINT)["model"])
    with torch.no_grad():
        return float(model.eval()(images).softmax(-1)[:, cls].mean())


# --------------------------------------------------------------------------------------------------- loss
@pytest.mark.parametrize("mixed", [False, True])
def test_hard_distillation_loss_is_half_base_half_teacher_argmax(mixed: bool) -> None:
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g)
    teacher = torch.randn(6, 5, generator=g)
    logp = student.log_softmax(-1)
    if mixed:  # mixup-style soft targets: two smoothed one-hots blended with per-batch lambda 0.7
        a, b = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([4, 3, 2, 1, 0, 1])
        smooth = lambda y: F.one_hot(y, 5).float() * 0.9 + 0.1 / 5  # noqa: E731
        targets = 0.7 * smooth(a) + 0.3 * smooth(b)
        criterion: torch.nn.Module = SoftTargetCrossEntropy()
        base = -(targets * logp).sum(-1).mean()
    else:
        targets = torch.tensor([0, 1, 2, 3, 4, 0])
        criterion = LabelSmoothingCrossEntropy(smoothing=0.1)
        base = (0.9 * -logp.gather(1, targets[:, None]).squeeze(1) - 0.1 * logp.mean(-1)).mean()
    hard = teacher.argmax(-1)
    expected = 0.5 * base + 0.5 * -logp[torch.arange(6), hard].mean()  # no smoothing on the teacher term

    got = train.hard_distillation_loss(criterion, student, targets, teacher)
    torch.testing.assert_close(got, expected)
    # only the teacher's decision matters, not its confidence
    torch.testing.assert_close(train.hard_distillation_loss(criterion, student, targets, 50 * teacher), got)
    # and it is not the undistilled loss
    assert not torch.allclose(got, criterion(student, targets))


def test_constant_teacher_pulls_the_student_toward_its_class(
    tmp_path: Path, fixture_data_root: Path, plain_run: Path
) -> None:
    """A teacher that always answers class 3 must raise the student's probability of class 3 on held-out
    images above the undistilled run from the same seed (same init, same batches, same mixup draws)."""
    from convit import data

    path = tmp_path / "constant.pth"
    torch.save(_teacher_state(constant=CONSTANT_CLASS), path)
    spec = _distilled_spec()
    workdir = tmp_path / "run"
    train.run(spec, workdir, data_root=fixture_data_root, teacher=path)

    _, val = data.build_datasets(spec.data, spec.recipe, fixture_data_root)
    images = torch.stack([val[i][0] for i in range(len(val))])
    distilled = _class_probability(workdir, images, CONSTANT_CLASS)
    plain = _class_probability(plain_run, images, CONSTANT_CLASS)
    assert distilled > plain + 0.05, (distilled, plain)
    # half of every step's loss points at class 3: it should be the student's commonest answer
    assert distilled > 0.2, distilled


# ---------------------------------------------------------------------------------------------- end to end
def test_distilled_run_trains_records_the_teacher_and_resumes_exactly(
    tmp_path: Path, fixture_data_root: Path, teacher_dir: Path
) -> None:
    spec = _distilled_spec()
    teacher = teacher_dir / TEACHER_FILE
    ref = tmp_path / "ref"
    result = train.run(spec, ref, data_root=fixture_data_root, teacher=teacher, device="cpu")
    assert result["teacher"] == TEACHER_FILE and result["epochs"] == 1
    assert json.loads((ref / "result.json").read_text()) == result
    env = json.loads((ref / "env.json").read_text())
    assert env["teacher"]["file"] == str(teacher.resolve()) and len(env["teacher"]["sha256"]) == 64
    assert env["teacher"]["model"] == "regnety_002"

    calls = {"n": 0}

    def stop_after_10() -> bool:
        calls["n"] += 1
        return calls["n"] >= 10

    workdir = tmp_path / "run"
    with pytest.raises(train.Preempted) as info:
        train.run(
            spec,
            workdir,
            data_root=fixture_data_root,
            should_stop=stop_after_10,
            teacher=teacher,
            device="cpu",
        )
    assert (info.value.epoch, info.value.step) == (0, 10)
    state = checkpoint.load(workdir / checkpoint.CHECKPOINT)
    student_keys = set(
        models.create("deit_tiny", num_classes=10, img_size=32, **spec.model.kwargs).state_dict()
    )
    assert set(state["model"]) == student_keys  # the teacher is not saved with the student
    assert not any("teacher" in key for key in state)

    with pytest.raises(train.TrainError, match="no teacher file was given"):
        train.run(spec, workdir, data_root=fixture_data_root)  # a resume reloads the teacher: it is needed
    train.run(spec, workdir, data_root=fixture_data_root, teacher=teacher, device="cpu")  # exact: on the CPU
    assert _outcome(workdir) == _outcome(ref)


def test_undistilled_run_is_unchanged_by_teacher_none(
    tmp_path: Path, fixture_data_root: Path, plain_run: Path
) -> None:
    spec = main_table.train_spec("smoke", "deit", "tiny")
    train.run(spec, tmp_path / "run", data_root=fixture_data_root, teacher=None)
    assert _outcome(tmp_path / "run") == _outcome(plain_run)
    assert "teacher" not in json.loads((tmp_path / "run" / "env.json").read_text())
    with pytest.raises(train.TrainError, match="asks for no distillation"):
        train.run(spec, tmp_path / "other", data_root=fixture_data_root, teacher=tmp_path / "t.pth")


def test_teacher_mistakes_are_one_line_errors_naming_the_file(
    tmp_path: Path, fixture_data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _distilled_spec()
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.to_json())
    missing = tmp_path / "nope.pth"
    args = [str(spec_path), str(tmp_path / "a"), "--data-root", str(fixture_data_root)]
    assert train.main([*args, "--teacher", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0] and "not found" in err[0], err

    wrong = tmp_path / "five.pth"
    torch.save(_teacher_state(num_classes=5), wrong)
    with pytest.raises(train.TrainError, match=r"five\.pth has a 5-way classifier .* 10 classes"):
        train.run(spec, tmp_path / "b", data_root=fixture_data_root, teacher=wrong)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    assert train.main([*args, "--teacher", str(garbage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(garbage) in err[0] and "state dict" in err[0], err


# ------------------------------------------------------------------------------------------------- the job
_CALLS: list[dict] = []


class _Recording(jobs.TrainJob):
    """A job whose engine records the keyword arguments ``run`` gets."""

    def _engine(self):  # type: ignore[override]
        def run(spec, workdir, **kwargs):
            _CALLS.append(kwargs)
            return {}

        return run, train.Preempted


def test_train_job_carries_the_teacher_through_pickling_requeue_and_call(tmp_path: Path) -> None:
    import pickle

    _CALLS.clear()
    spec = _distilled_spec()
    job = _Recording(spec, tmp_path / "run", tmp_path / "data", teacher=str(tmp_path / "t.pth"))
    assert job.teacher == tmp_path / "t.pth"
    again = pickle.loads(pickle.dumps(job))
    assert again == job and hash(again) == hash(job)
    assert job != _Recording(spec, tmp_path / "run", tmp_path / "data")  # the teacher is part of the job
    assert job.checkpoint().function == job  # a requeued job keeps its teacher
    job()
    _Recording(spec, tmp_path / "run")()
    assert _CALLS[0]["teacher"] == tmp_path / "t.pth"
    assert "teacher" not in _CALLS[1]  # old engines (no teacher argument) keep working for undistilled jobs


# ------------------------------------------------------------------------------------------------ launcher


def _env() -> dict[str, str]:
    """This environment without CONVIT_CHECKPOINTS (the launcher's default folder)."""
    return {k: v for k, v in os.environ.items() if k != "CONVIT_CHECKPOINTS"}


def test_launcher_dry_run_needs_no_teacher_and_names_it() -> None:
    proc = launch("distillation", "--scale", "smoke", "--dry-run", env=_env())
    assert proc.returncode == 0, proc.stderr
    distilled = [ln for ln in proc.stdout.splitlines() if "hard_distill" in ln]
    assert len(distilled) == 2 and all(f"[distilled from {TEACHER_FILE}]" in ln for ln in distilled)
    assert "pending" not in proc.stdout


def test_launcher_resolves_the_teacher_or_stops_in_one_line(
    tmp_path: Path, fixture_data_root: Path, teacher_dir: Path
) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = [
        "distillation", "--scale", "smoke", "--cluster", "debug", "--data-root", str(fixture_data_root),
        "--workdir", str(runs), "--results", str(results),
    ]  # fmt: skip
    for extra, needle in (
        ([], TEACHER_FILE),
        (["--checkpoints", str(tmp_path)], str(tmp_path / TEACHER_FILE)),
        (["--checkpoints", str(tmp_path / "nowhere")], "no folder"),
    ):
        proc = launch(*common, *extra, env=_env())
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "--checkpoints DIR" in err[0], proc.stderr
        assert not runs.exists()  # refused before submitting anything

    proc = launch(*common, "--checkpoints", str(teacher_dir), env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with (results / "distillation" / "smoke.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and all(r["status"] == "done" and r["top1"] for r in rows)
    assert sorted(r["distillation"] for r in rows) == ["", "", "hard", "hard"]
    digest = hashlib.sha256((teacher_dir / TEACHER_FILE).read_bytes()).hexdigest()
    assert sorted(r["teacher_sha256"] for r in rows) == ["", "", digest, digest]  # the file actually read
    distilled = [d for d in (runs / "distillation" / "smoke").iterdir() if "hard_distill" in d.name]
    assert len(distilled) == 2
    assert all(json.loads((d / "result.json").read_text())["teacher"] == TEACHER_FILE for d in distilled)

    # finished distilled runs need no teacher: relaunching without --checkpoints only collects
    again = launch(*common, env=_env())
    assert again.returncode == 0, again.stderr
    assert "4 run(s), 4 already done" in again.stdout


@pytest.mark.parametrize("scale", ["paper", "cpu", "smoke"])
def test_distilled_specs_say_what_they_stand_for_and_cost_the_teacher_forward(scale: str) -> None:
    """A shrunk student is tagged with the paper model it stands for (as in every other suite), and the
    plan's estimate counts the teacher's forward pass (RegNetY-16GF is ~3.5x DeiT-S's forward at 224 px)."""
    from experiments.common import estimate_hours, get_scale, teacher_macs

    flops = get_scale(scale).flops_per_s
    for spec in distillation.specs(scale):
        if "teacher" not in spec.tags:
            assert teacher_macs(spec) == 0
            continue
        student = spec.tags["variant"].removesuffix("-hard_distill")
        assert spec.model.name == student
        if scale == "paper":
            assert "stands_for" not in spec.tags
        elif scale == "cpu":  # cpu shrinks S/B/S+ to Ti/Ti+
            assert spec.tags["stands_for"] in {"deit_small", "deit_base", "convit_small_plus"}
        undistilled = dataclasses.replace(spec, tags={k: v for k, v in spec.tags.items() if k != "teacher"})
        assert teacher_macs(spec) > 0
        assert estimate_hours(spec, flops, loader=False) > estimate_hours(undistilled, flops, loader=False)
