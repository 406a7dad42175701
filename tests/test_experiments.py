"""Experiment specs, the launcher CLI and the collector.

Every suite x scale must build valid, uniquely named specs that the model zoo and the data module accept; the
launcher must print a plan without touching data, refuse bad input in one line, and run the smoke suite end to
end (train -> CSVs -> relaunch skips). Runs are tiny (cifar10-fixture, depth 2, 1-2 epochs).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from convit import models
from convit.data import dataset_info
from convit.spec import RunSpec
from experiments import SUITES, load_suite
from experiments.collect import CURVE_COLUMNS, LOCALITY_COLUMNS, RUN_COLUMNS
from experiments.common import (
    SCALES,
    estimate_hours,
    get_scale,
    is_eval,
    run_name,
    train_images,
    with_seeds,
)

from tiny import launch


# ------------------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("suite", list(SUITES))
def test_specs_are_valid(suite: str, scale: str) -> None:
    specs = load_suite(suite).specs(scale)
    assert specs, f"{suite}/{scale} has no runs"
    names = [run_name(s) for s in specs]
    assert len(set(names)) == len(names), "run names must be unique"
    known = set(models.names())
    for spec in specs:
        assert RunSpec.from_json(spec.to_json()) == spec
        assert spec.model.name in known
        assert 0.0 < spec.data.fraction <= 1.0
        dataset_info(spec.data.name)
        for key in ("suite", "scale", "variant", "task"):
            assert key in spec.tags
        assert spec.tags["scale"] == scale
        assert estimate_hours(spec, get_scale(scale).flops_per_s) >= 0
        if not is_eval(spec):
            # the engine computes steps from the global batch: it must fit the (subsampled) training set
            sc = get_scale(scale)
            assert spec.recipe.batch_size <= sc.batch_size
        else:
            assert spec.tags["checkpoint"].split(":")[0] in ("run", "file")


def test_models_build_at_smoke_scale() -> None:
    """Every distinct smoke model (with its ablation switches) is accepted by the zoo."""
    seen = set()
    for suite in SUITES:
        for spec in load_suite(suite).specs("smoke"):
            key = (spec.model.name, json.dumps(spec.model.kwargs, sort_keys=True))
            if key in seen:
                continue
            seen.add(key)
            models.create(spec.model.name, num_classes=10, img_size=spec.data.img_size, **spec.model.kwargs)


@pytest.mark.parametrize("scale", SCALES)
def test_sample_efficiency_epochs_scale_with_one_over_f(scale: str) -> None:
    specs = load_suite("sample_efficiency").specs(scale)
    base = get_scale(scale).base_epochs
    fractions = sorted({s.data.fraction for s in specs})
    assert fractions == [0.05, 0.1, 0.3, 0.5, 1.0]
    for spec in specs:
        assert spec.recipe.epochs == max(1, round(base / spec.data.fraction))
        assert spec.recipe.warmup_epochs == get_scale(scale).warmup_epochs  # fixed in epochs (decision)
    assert {s.tags["variant"] for s in specs} == {"deit", "convit"}
    if scale == "paper":
        assert sorted(s.recipe.epochs for s in specs if s.tags["variant"] == "convit") == [
            300,
            600,
            1000,
            3000,
            6000,
        ]
        assert {s.model.name for s in specs} == {"deit_small", "convit_small"}


def test_cpu_scale_keeps_head_counts_at_half_width_and_equal_steps() -> None:
    """The cpu miniature: the paper's heads at half the per-head width, about the same steps for every f."""
    specs = load_suite("sample_efficiency").specs("cpu")
    for spec in specs:
        model = models.create(spec.model.name, num_classes=10, img_size=32, **spec.model.kwargs)
        heads = {"convit_tiny": 4, "deit_tiny": 3}[spec.model.name]
        assert (model.num_heads, model.embed_dim) == (heads, 96), spec.model.name
        assert spec.model.kwargs["depth"] == 6
    steps = [s.recipe.epochs * (train_images(s) // s.recipe.batch_size) for s in specs]
    assert max(steps) <= 1.15 * min(steps) and min(steps) > 1400, steps  # 1.4-1.6k steps per run, whatever f
    plus = {s.model.name: s for s in load_suite("ablations").specs("cpu")}
    for name in ("convit_tiny_plus", "deit_tiny_plus"):
        model = models.create(name, num_classes=10, img_size=32, **plus[name].model.kwargs)
        assert (model.num_heads, model.embed_dim) == (4, 128), name


def test_paper_scale_recipes() -> None:
    main = {s.tags["variant"]: s for s in load_suite("main_table").specs("paper") if not is_eval(s)}
    assert len(main) == 12
    base, plus = main["convit_small"], main["convit_small_plus"]
    assert (base.recipe.batch_size, base.recipe.peak_lr()) == (1024, pytest.approx(1e-3))
    assert (base.resources.nodes, base.resources.gpus_per_node) == (2, 8)
    assert base.recipe.base_lr == pytest.approx(5e-4) and base.recipe.epochs == 300
    assert (plus.recipe.batch_size, plus.recipe.base_lr, plus.recipe.peak_lr()) == (512, 4e-4, 4e-4)
    assert (plus.resources.nodes, plus.resources.gpus_per_node) == (1, 8)
    assert base.data.name == "imagenet" and base.data.img_size == 224 and base.model.kwargs == {}


@pytest.mark.parametrize("scale", SCALES)
def test_ablations_use_the_plus_recipe(scale: str) -> None:
    specs = load_suite("ablations").specs(scale)
    sc = get_scale(scale)
    table3 = [s for s in specs if s.tags["variant"].startswith("table3-")]
    assert sorted({s.tags["row"] for s in table3}) == list("abcdefg")
    assert len(table3) == 14
    for spec in specs:
        assert spec.recipe.batch_size == sc.batch_size // 2
        assert spec.recipe.peak_lr() == pytest.approx(4e-4)
        assert spec.model.name.endswith("_plus")
    tenth = [s for s in table3 if s.data.fraction == 0.1]
    assert all(s.recipe.epochs == max(1, round(sc.base_epochs / 0.1)) for s in tenth)  # 300/f decision
    e = [s for s in table3 if s.tags["row"] == "e"]
    assert all(s.model.name.startswith("deit_") for s in e)
    if scale == "paper":
        grid = [s for s in specs if s.tags["variant"].startswith("grid-")]
        assert len(grid) == 10 and all(s.data.num_classes == 100 for s in grid)
        assert sorted({s.tags["gpsa_layers"] for s in grid}) == [0, 3, 6, 9]


HOMES = ("main_table", "sample_efficiency")


def test_shared_runs_have_identical_specs() -> None:
    """locality, masking and psa reuse other suites' runs: same spec, same directory, trained once.

    Where sample_efficiency's f = 1 run is the same training run as main_table's Ti (cpu, smoke), locality and
    masking read it instead, so nothing is trained twice."""
    for scale in SCALES:
        homes = {home: {run_name(s): s for s in load_suite(home).specs(scale)} for home in HOMES}
        for suite in ("locality", "psa", "masking"):
            trains = [s for s in load_suite(suite).specs(scale) if s.tags["suite"] != suite]
            if scale == "paper" and suite == "masking":
                assert not trains  # released weights
                continue
            assert trains, (suite, scale)
            for spec in trains:
                assert homes[spec.tags["suite"]][run_name(spec)] == spec
        shared = {s.tags["suite"] for s in load_suite("locality").specs(scale)}
        # cpu/smoke: the sample-efficiency stand-ins are the Ti models, so all of locality is read from there
        assert shared == {"sample_efficiency"} if scale in ("cpu", "smoke") else "main_table" in shared, scale


def test_only_with_several_globs_keeps_their_order() -> None:
    """``--only 'a,b,*'``: the runs a long queue needs first come first, the rest after, none twice."""
    from experiments.common import run_name, select

    specs = load_suite("sample_efficiency").specs("cpu")
    names = [run_name(s) for s in select(specs, "convit-s0-*, *-f0.05-*,*")]
    assert names[0].startswith("convit-s0-") and len(names) == len(set(names)) == len(specs) == 10
    assert [n.split("-")[1] for n in names[1:3]] == ["f0.05", "f0.05"]
    assert names[3:] == [run_name(s) for s in specs if run_name(s) not in names[:3]]  # the rest, suite order
    assert select(specs, "deit-f0.1-*") == [s for s in specs if run_name(s).startswith("deit-f0.1-")]


def test_changed_spec_changes_the_name() -> None:
    import dataclasses

    spec = load_suite("sample_efficiency").specs("smoke")[0]
    other = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, epochs=spec.recipe.epochs + 1))
    assert run_name(spec) != run_name(other)
    assert run_name(spec).rsplit("-", 1)[0] == run_name(other).rsplit("-", 1)[0]


# ---------------------------------------------------------------------------------------------- dry run
def test_dry_run_prints_one_line_per_run_and_a_total(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no data root: dry-run must not need one
    proc = launch("sample_efficiency", "--scale", "paper", "--dry-run", "--workdir", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln and not ln.startswith("#")]
    runs = [ln for ln in lines if not ln.startswith(("total", "note"))]
    assert len(runs) == 10
    assert any("convit_small" in ln and "6000 ep" in ln and "2x8" in ln for ln in runs)
    total = [ln for ln in lines if ln.startswith("total:")]
    assert len(total) == 1 and "10 run(s)" in total[0]
    assert not (tmp_path / "sample_efficiency").exists()


def test_dry_run_seeds_only_and_distillation_note(tmp_path: Path) -> None:
    proc = launch("ablations", "--scale", "cpu", "--dry-run", "--seeds", "2", "--only", "table3-*")
    assert proc.returncode == 0, proc.stderr
    assert "total: 28 run(s)" in proc.stdout
    proc = launch("distillation", "--scale", "paper", "--dry-run")
    assert proc.returncode == 0 and "[distilled from regnety_160.pth]" in proc.stdout


def test_list_and_help() -> None:
    proc = launch("list")
    assert proc.returncode == 0 and all(s in proc.stdout for s in SUITES) and "smoke" in proc.stdout
    # the cost table: one row per suite, one "hours (runs)" cell per scale, the runs as --dry-run counts them
    rows = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    for suite in SUITES:
        cells = re.findall(r"(\S+ (?:h|min)) \((\d+)\)", rows[suite])
        assert [int(n) for _, n in cells] == [len(load_suite(suite).specs(scale)) for scale in SCALES]
    proc = launch("--help")
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "--seeds" in proc.stdout


# -------------------------------------------------------------------------------------------- bad input
def _bad_profile(tmp_path: Path) -> str:
    path = tmp_path / "p.yaml"
    path.write_text("partition: debug\ngpus_per_node: 0\n")
    return str(path)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["nope"], "unknown suite"),
        (["masking", "--scale", "huge"], "unknown scale"),
        (["masking", "--scale", "smoke", "--cluster", "cloud"], "unknown cluster"),
        (["main_table", "--scale", "smoke", "--set", "model.name=convit_huge"], "unknown model"),
        (["main_table", "--scale", "smoke", "--set", "data.fraction=1.5"], "fraction"),
        (["main_table", "--scale", "smoke", "--profile", "/nonexistent/p.yaml"], "not found"),
        (["main_table", "--scale", "smoke", "--profile", "BAD"], "missing required field"),
        (["main_table", "--scale", "smoke", "--data-root", "EMPTY"], "not prepared"),
        (["main_table", "--scale", "smoke", "--bogus"], "unrecognized"),
        (["collect", "nope"], "unknown suite"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    args = [_bad_profile(tmp_path) if a == "BAD" else a for a in args]
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(empty) if a == "EMPTY" else a for a in args]
    if "--data-root" not in args:
        args += ["--data-root", str(empty)]
    if args[0] == "collect":
        args = args[:2]
    proc = launch(*args, "--workdir", str(tmp_path / "runs")) if args[0] != "collect" else launch(*args)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert needle in err[0], err[0]


# ------------------------------------------------------------------------------------------- end to end
def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_smoke_launch_end_to_end_then_skip(tmp_path: Path, fixture_data_root: Path) -> None:
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = [
        "--scale", "smoke", "--cluster", "debug", "--data-root", str(fixture_data_root),
        "--workdir", str(runs), "--results", str(results),
    ]  # fmt: skip
    # masking at smoke scale, Table 5 only: trains the DeiT-Ti / ConViT-Ti pair (1 epoch each, pulled in by
    # the evaluations that need them), then evaluates both with the positional embedding masked
    proc = launch("masking", *common, "--only", "*mask_pos_embed*")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = _rows(results / "masking" / "smoke.csv")
    assert list(table[0])[: len(RUN_COLUMNS)] == RUN_COLUMNS
    assert len(table) == 4 and all(r["status"] == "done" and r["top1"] for r in table)
    # the suite's TensorBoard line names the folder holding the trained runs' event files
    lines = proc.stdout.splitlines()
    logdirs = [line.split("--logdir ", 1)[1] for line in lines if "tensorboard --logdir" in line]
    assert len(logdirs) == 1
    assert len(list(Path(logdirs[0]).glob("*/tensorboard/events.out.tfevents.*"))) == 2
    evals = [r for r in table if r["task"] == "eval"]
    assert len(evals) == 2 and {r["epochs"] for r in evals} == {"0"}
    assert all(json.loads(r["intervention"]) == {"mask_pos_embed": True} for r in evals)
    curves = _rows(results / "masking" / "smoke_curves.csv")
    assert curves and list(curves[0]) == CURVE_COLUMNS
    locality = _rows(results / "masking" / "smoke_locality.csv")
    assert locality and list(locality[0]) == LOCALITY_COLUMNS
    assert any(r["gate_sigma"] for r in locality)  # ConViT's GPSA layer

    again = launch("masking", *common, "--only", "*mask_pos_embed*")
    assert again.returncode == 0, again.stderr
    assert "4 run(s), 4 already done, 0 to train, 0 to evaluate" in again.stdout
    assert _rows(results / "masking" / "smoke.csv") == table

    collected = launch(
        "collect", "masking", "--scale", "smoke", "--workdir", str(runs), "--results", str(results)
    )
    assert collected.returncode == 0 and _rows(results / "masking" / "smoke.csv") == table


def _fake_run(workdir: Path, spec: RunSpec, top1: float | None, epochs: int) -> None:
    """A run directory as the engine leaves it: spec.json, metrics.jsonl, result.json once finished."""
    from experiments.collect import run_dir

    d = run_dir(workdir, spec)
    d.mkdir(parents=True)
    (d / "spec.json").write_text(spec.to_json())
    lines = [
        {"epoch": e, "train_loss": 2.0 - e / 10, "val_top1": 10.0 * e, "nonlocality": [[1.0]]}
        for e in range(1, epochs + 1)
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if top1 is not None:
        (d / "result.json").write_text(json.dumps({"top1": top1, "epochs": epochs}))


def test_collect_keeps_what_another_machine_collected(tmp_path: Path) -> None:
    """Collecting on a machine that holds some of a suite's runs must not erase the rows another machine
    collected into results/: they are kept (curves and probes too) while they are still the suite's runs; a
    row whose spec changed drops out; a run finished here replaces its row, a rerun in progress does not."""
    import dataclasses

    from experiments.collect import collect

    specs = load_suite("sample_efficiency").specs("smoke")
    a, b, c = specs[0], specs[1], dataclasses.replace(specs[0], seed=1)
    results = tmp_path / "results"
    _fake_run(tmp_path / "A", a, 40.0, 2)
    _fake_run(tmp_path / "A", b, None, 1)  # still training on machine A
    collect("sample_efficiency", "smoke", specs, tmp_path / "A", results)
    table = results / "sample_efficiency" / "smoke.csv"
    curves = results / "sample_efficiency" / "smoke_curves.csv"
    locality = results / "sample_efficiency" / "smoke_locality.csv"
    first = _rows(table)
    assert [(r["run"], r["status"]) for r in first] == [(run_name(a), "done"), (run_name(b), "incomplete")]

    # a stale row (a spec that no longer exists: another digest) sits in the committed table
    stale = {**first[0], "run": run_name(a)[:-8] + "00000000"}
    with table.open("a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=list(first[0]), lineterminator="\n").writerow(stale)

    # machine B: b finished there, c (seed 1) too; it never held a
    _fake_run(tmp_path / "B", b, 50.0, 3)
    _fake_run(tmp_path / "B", c, 45.0, 2)
    collect("sample_efficiency", "smoke", with_seeds(specs, 2), tmp_path / "B", results)
    rows = {r["run"]: r for r in _rows(table)}
    assert set(rows) == {run_name(a), run_name(b), run_name(c)}
    assert rows[run_name(a)] == first[0]  # kept as committed, cell for cell
    assert (rows[run_name(b)]["status"], rows[run_name(b)]["top1"]) == ("done", "50.0")
    per_run = [r["run"] for r in _rows(curves)]
    assert per_run.count(run_name(a)) == 2 and per_run.count(run_name(b)) == 3
    assert [r["run"] for r in _rows(locality)].count(run_name(a)) == 2

    # machine C reruns a and is at epoch 1: the committed finished run stays
    _fake_run(tmp_path / "C", a, None, 1)
    collect("sample_efficiency", "smoke", specs, tmp_path / "C", results)
    rows = {r["run"]: r for r in _rows(table)}
    assert rows[run_name(a)] == first[0]
    assert [r["run"] for r in _rows(curves)].count(run_name(a)) == 2


def test_skip_collected_trains_only_what_results_lack(tmp_path: Path) -> None:
    """--skip-collected: a fresh machine does not retrain a run another machine finished and collected, but
    an evaluation that reads such a run's checkpoint still gets it trained here."""
    from experiments.collect import collect

    specs = load_suite("sample_efficiency").specs("smoke")
    done, results = specs[0], tmp_path / "results"
    _fake_run(tmp_path / "elsewhere", done, 40.0, 1)
    collect("sample_efficiency", "smoke", specs, tmp_path / "elsewhere", results)
    common = ["--scale", "smoke", "--dry-run", "--workdir", str(tmp_path / "here"), "--results", str(results)]
    proc = launch("sample_efficiency", *common, "--skip-collected")
    assert proc.returncode == 0, proc.stderr
    assert "1 run(s) already done in" in proc.stdout
    planned = [line.split()[0] for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    assert run_name(done) not in planned and run_name(specs[1]) in planned
    assert run_name(done) in launch("sample_efficiency", *common).stdout  # opt-in only

    # masking reads the f = 1 Ti runs' checkpoints: collected or not, they are trained where it evaluates
    masking = load_suite("masking").specs("smoke")
    sources = [s for s in masking if not is_eval(s)]
    for source in sources:
        _fake_run(tmp_path / "elsewhere", source, 50.0, 1)
    collect("sample_efficiency", "smoke", specs, tmp_path / "elsewhere", results)
    proc = launch("masking", *common, "--skip-collected")
    assert proc.returncode == 0, proc.stderr
    assert all(run_name(s) in proc.stdout for s in sources)


def test_local_parallel_is_a_pool_refilled_as_each_run_ends(tmp_path: Path) -> None:
    """``--parallel 2`` keeps two runs going: the third starts when the short first one ends, not when
    the long second one (the rest of its "wave") does. Real local submitit jobs that record start and end."""
    import argparse
    import functools
    import subprocess

    from experiments import launch as launcher

    specs = load_suite("sample_efficiency").specs("smoke")[:3]
    items = []
    for i, (spec, seconds) in enumerate(zip(specs, (0.5, 8.0, 0.5), strict=True)):
        stamp = tmp_path / f"times{i}"
        command = f"date +%s.%N > {stamp}; sleep {seconds}; date +%s.%N >> {stamp}"
        items.append((spec, tmp_path / f"run{i}", functools.partial(subprocess.run, ["sh", "-c", command])))
    args = argparse.Namespace(cluster="local", parallel=2, tasks_per_node=None)
    assert launcher._run_batch(items, args, None, tmp_path / "_submitit", "pool-test") == []
    times = [[float(t) for t in (tmp_path / f"times{i}").read_text().split()] for i in range(3)]
    start, end = [t[0] for t in times], [t[1] for t in times]
    assert start[2] >= end[0]  # never more than two at once
    assert start[2] < end[1]  # ... but the third did not wait for the long one


def test_launcher_progress_reads_what_running_jobs_report(tmp_path: Path) -> None:
    """``launch.py``'s status line comes from each run's metrics.jsonl (finished epochs) and progress.json
    (inside the current epoch, written by the trainer's :class:`EpochProgress`); many runs are summarised."""
    from convit.progress import EpochProgress
    from experiments import launch as launcher

    specs = load_suite("sample_efficiency").specs("smoke")[:5]
    dirs = [tmp_path / f"run{i}" for i in range(5)]
    for d in dirs:
        d.mkdir()
    epochs = specs[0].recipe.epochs
    # run0: epoch 1 finished, 3 of 10 steps into epoch 2 (reported after every step)
    (dirs[0] / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 2.0}) + "\n")
    progress = EpochProgress(
        dirs[0], epoch=1, epochs=epochs, steps=10, start_step=0, global_batch=8, every_s=0
    )
    for _ in range(3):
        progress.update(2.0, 1e-3)
    progress.close()
    name0, name1 = run_name(specs[0]), run_name(specs[1])
    line = launcher._progress([(specs[0], dirs[0]), (specs[1], dirs[1])])
    assert line == f"{name0} ep 2/{epochs} 30%"  # run1 has reported nothing yet: not listed
    assert launcher._progress([(specs[1], dirs[1])]) == "1 running, starting"
    summary = launcher._progress(list(zip(specs, dirs, strict=True)))
    share = round(100 * (1.3 / epochs) / 5)
    assert summary == f"5 running, {share}% of their epochs done; least advanced {name1} starting"


def test_estimates_are_bounded_by_the_loader_where_its_rate_is_measured() -> None:
    """At the reduced scale small models train faster than 8 loader cores can augment, so their estimate is
    the loader's time; bigger models and the cpu scale stay compute-bound; ImageNet has no measured rate."""
    from experiments.common import LOADER_IMAGES_PER_CORE_S, loader_hours

    reduced = get_scale("reduced").flops_per_s
    by_model = {s.model.name: s for s in load_suite("main_table").specs("reduced")}
    ti, base_plus = by_model["convit_tiny"], by_model["deit_base_plus"]
    rate = LOADER_IMAGES_PER_CORE_S[("tiny-imagenet", 64)]
    expected = train_images(ti) * ti.recipe.epochs / (rate * ti.resources.workers) / 3600
    assert loader_hours(ti) == pytest.approx(expected)
    assert estimate_hours(ti, reduced) == pytest.approx(expected)
    assert expected > 2 * estimate_hours(ti, reduced, loader=False)
    assert estimate_hours(base_plus, reduced) == estimate_hours(base_plus, reduced, loader=False)
    cpu = get_scale("cpu").flops_per_s
    for spec in load_suite("sample_efficiency").specs("cpu"):
        assert estimate_hours(spec, cpu) == estimate_hours(spec, cpu, loader=False)
    paper = load_suite("main_table").specs("paper")[0]
    assert loader_hours(paper) is None
    proc = launch("main_table", "--scale", "reduced", "--dry-run")
    flagged = [line.split()[0] for line in proc.stdout.splitlines() if "[loader-bound at 8 workers]" in line]
    assert run_name(ti) in flagged and run_name(base_plus) not in flagged


def test_dry_run_shows_where_a_started_run_is(tmp_path: Path) -> None:
    from convit.progress import EpochProgress
    from experiments.collect import run_dir

    spec = load_suite("sample_efficiency").specs("smoke")[0]
    d = run_dir(tmp_path, spec)
    d.mkdir(parents=True)
    progress = EpochProgress(d, epoch=0, epochs=spec.recipe.epochs, steps=4, start_step=0, global_batch=8)
    progress.update(2.3, 1e-3)
    progress.close()  # the epoch was cut short by a stop: progress.json says 1 of 4 steps
    proc = launch("sample_efficiency", "--scale", "smoke", "--dry-run", "--workdir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(run_name(spec)))
    assert re.search(rf"\(resumes, ep 1/{spec.recipe.epochs} 25%, reported 0:0\d:\d\d ago\)$", line), line


def test_launch_leaves_a_run_being_trained_elsewhere_to_its_owner(
    tmp_path: Path, fixture_data_root: Path
) -> None:
    """Relaunching a suite while another launch still trains one of its runs does not start a duplicate."""
    import os

    from convit import runlock
    from experiments.collect import run_dir

    spec = load_suite("sample_efficiency").specs("smoke")[0]
    runs = tmp_path / "runs"
    with runlock.hold(run_dir(runs, spec)):
        proc = launch(
            "sample_efficiency", "--scale", "smoke", "--cluster", "debug", "--only", run_name(spec),
            "--data-root", str(fixture_data_root), "--workdir", str(runs), "--results", str(tmp_path / "r"),
        )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 being trained by another launch, 0 to train" in proc.stdout
    assert f"{run_name(spec)}: left to pid {os.getpid()} on " in proc.stderr
    assert not (run_dir(runs, spec) / "spec.json").exists()  # nothing started there
