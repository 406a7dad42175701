"""experiments/cpu_budget.py: the baseline's learning curves that choose the cpu scale's regularisation.

The run at the strength the scale adopts must *be* the sample-efficiency suite's run (same spec, same run
directory), so the launcher skips or resumes it instead of training it twice; the other strength differs in
the recipe's regularisation only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from experiments import sample_efficiency  # noqa: E402
from experiments.collect import run_dir  # noqa: E402
from experiments.common import CPU_REGULARISATION, get_scale  # noqa: E402
from experiments.cpu_budget import budget_spec, collect  # noqa: E402


def _suite_deit(fraction: float):
    (spec,) = [
        s
        for s in sample_efficiency.specs("cpu")
        if s.tags["variant"] == "deit" and s.data.fraction == fraction
    ]
    return spec


def test_the_adopted_strength_is_the_suites_own_run() -> None:
    adopted = [k for k, v in CPU_REGULARISATION.items() if v == get_scale("cpu").recipe_overrides]
    assert adopted, "the cpu scale uses one of CPU_REGULARISATION's strengths"
    spec = budget_spec(adopted[0], 1.0)
    assert spec == _suite_deit(1.0)
    assert run_dir("R", spec) == run_dir("R", _suite_deit(1.0))


def test_other_strengths_differ_in_regularisation_only() -> None:
    suite = _suite_deit(1.0)
    for strength, fields in CPU_REGULARISATION.items():
        spec = budget_spec(strength, 1.0)
        assert dataclasses.replace(spec, recipe=suite.recipe) == suite
        for key, value in fields.items():
            assert getattr(spec.recipe, key) == value
    assert budget_spec("none", 1.0).digest() != budget_spec("light", 1.0).digest()


def _suite_run(family: str, fraction: float):
    (spec,) = [
        s
        for s in sample_efficiency.specs("cpu")
        if s.tags["variant"] == family and s.data.fraction == fraction
    ]
    return spec


def test_a_gating_budget_run_is_the_suites_run_with_more_images_only() -> None:
    suite = _suite_run("convit", 1.0)
    assert budget_spec("none", 1.0, family="convit") == suite  # 1x: the launcher skips or resumes it
    spec = budget_spec("none", 1.0, family="convit", images=2)
    assert spec.recipe.epochs == 2 * suite.recipe.epochs
    assert spec.eval_every == suite.eval_every == 1 and spec.probes.every == suite.probes.every
    # same warm-up, lr, regularisation, model, data, seed: only the length of the schedule differs
    same = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, epochs=suite.recipe.epochs))
    assert same == suite
    assert run_dir("R", spec) != run_dir("R", suite)
    with pytest.raises(ValueError, match="whole multiple"):
        budget_spec("none", 1.0, family="convit", images=0)


def test_collect_writes_the_curves_so_far(tmp_path: Path) -> None:
    spec = budget_spec("light", 1.0)
    d = run_dir(tmp_path, spec)
    d.mkdir(parents=True)
    lines = [
        {"epoch": 1, "step": 781, "train_loss": 2.14, "val_top1": 28.9, "val_top5": 81.7, "val_loss": 1.91},
        {"epoch": 2, "step": 1562, "train_loss": 2.04, "val_top1": 35.5, "val_top5": 87.2, "val_loss": 1.75},
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    conv = run_dir(tmp_path, budget_spec("none", 1.0, family="convit", images=2))
    conv.mkdir(parents=True)
    rec = {
        "epoch": 1,
        "step": 781,
        "lr": 9.8e-4,
        "train_loss": 1.9,
        "gate_sigma": [[0.70, 0.72], [0.75, 0.74]],
    }
    (conv / "metrics.jsonl").write_text(json.dumps(rec) + "\n")
    # "none" x1 has not started: no rows for it
    assert collect(str(tmp_path), tmp_path / "out") == (3, 4)
    rows = list(csv.DictReader((tmp_path / "out" / "curves.csv").open()))
    assert [(r["family"], r["strength"], r["images"]) for r in rows] == [("deit", "light", "1")] * 2 + [
        ("convit", "none", "2")
    ]
    assert [int(r["images_seen"]) for r in rows] == [781 * 64, 1562 * 64, 781 * 64]
    assert float(rows[1]["val_top1"]) == 35.5 and rows[2]["val_top1"] == ""
    gating = list(csv.DictReader((tmp_path / "out" / "gating.csv").open()))
    assert [(int(g["layer"]), int(g["head"]), float(g["gate_sigma"])) for g in gating] == [
        (1, 1, 0.70),
        (1, 2, 0.72),
        (2, 1, 0.75),
        (2, 2, 0.74),
    ]
    assert {g["run"] for g in gating} == {conv.name}


def test_collect_on_another_machine_keeps_the_longer_record(tmp_path: Path) -> None:
    """A machine that holds a shorter record of a measured run (or none: a fresh machine) must not erase the
    epochs collected elsewhere; once its own record is as long, it is the one written."""
    spec = budget_spec("none", 1.0, family="convit", images=2)

    def record(workdir: Path, epochs: int) -> None:
        d = run_dir(workdir, spec)
        d.mkdir(parents=True, exist_ok=True)
        recs = [
            {"epoch": e, "step": 781 * e, "train_loss": 2.0 - e / 10, "gate_sigma": [[0.7 - e / 100]]}
            for e in range(1, epochs + 1)
        ]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    out = tmp_path / "out"
    record(tmp_path / "old", 3)
    assert collect(str(tmp_path / "old"), out) == (3, 3)
    before = (out / "curves.csv").read_text(), (out / "gating.csv").read_text()
    (tmp_path / "fresh").mkdir()
    assert collect(str(tmp_path / "fresh"), out) == (3, 3)
    assert ((out / "curves.csv").read_text(), (out / "gating.csv").read_text()) == before
    record(tmp_path / "new", 2)  # restarted here, behind
    assert collect(str(tmp_path / "new"), out) == (3, 3)
    record(tmp_path / "new", 4)  # past it
    assert collect(str(tmp_path / "new"), out) == (4, 4)
    sigma = [float(g["gate_sigma"]) for g in csv.DictReader((out / "gating.csv").open())]
    assert sigma == [0.69, 0.68, 0.67, 0.66]


def test_skip_collected_does_not_retrain_a_finished_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a fresh machine, a measurement whose every epoch is committed is not trained again; one that
    is committed only in part would be (here: the attempt to start it is what the test sees)."""
    from experiments import cpu_budget

    spec = budget_spec("none", 1.0, family="convit", images=2)
    name = run_dir(tmp_path, spec).name
    results = tmp_path / "results"
    results.mkdir()
    key = {"family": "convit", "strength": "none", "images": 2, "run": name}
    rows = [{**key, "epoch": e} for e in range(1, 20)]
    cpu_budget._write(results / "curves.csv", cpu_budget.CURVE_FIELDS, rows)

    def no_training(*_args: object) -> None:
        raise RuntimeError("would train")

    monkeypatch.setattr(cpu_budget.mp, "get_context", no_training)
    argv = ["--family", "convit", "--strength", "none", "--images", "2", "--workdir", str(tmp_path / "runs")]
    argv += ["--results", str(results), "--skip-collected"]
    with pytest.raises(RuntimeError, match="would train"):  # 19 of its 20 epochs: not finished
        cpu_budget.main(argv)
    rows.append({**rows[-1], "epoch": 20})
    cpu_budget._write(results / "curves.csv", cpu_budget.CURVE_FIELDS, rows)
    assert cpu_budget.main(argv) == 0
    assert "not trained here" in capsys.readouterr().out


def test_the_evidence_driver_queues_what_it_says() -> None:
    """experiments/cpu_evidence.sh: its first sample-efficiency launch holds every pair of f = 0.05, 1, 0.5
    and 0.1 (both families of one fraction and seed next to each other, so that the two slots train a pair
    side by side), the headline fractions first; every launch skips what results/ holds, so a new machine
    does not retrain what an earlier one committed; the gating-budget run comes first, alone; the masking
    retrain keeps out of the sample-efficiency run folder; the third seed is last and whole. A glob typo
    would silently queue nothing (or everything)."""
    import re

    from experiments.common import run_name, select, with_seeds

    script = (REPO / "experiments" / "cpu_evidence.sh").read_text()
    (globs,) = re.findall(r"launch sample_efficiency --only '([^']+)'", script)
    specs = with_seeds(sample_efficiency.specs("cpu"), 2)
    queued = select(specs, globs)
    pairs = [(s.data.fraction, s.seed) for s in queued]
    assert len(queued) == 16 and len(set(pairs)) == 8
    assert all(pairs[i] == pairs[i + 1] for i in range(0, 16, 2))
    assert [run_name(s).split("-")[0] for s in queued] == ["deit", "convit"] * 8
    assert {f for f, _ in pairs[:8]} == {0.05, 1.0} and {f for f, _ in pairs[8:]} == {0.5, 0.1}
    lines = script.splitlines()
    launches = [i for i, line in enumerate(lines) if re.match(r"([A-Z_]+=\S+ )*launch ", line)]
    assert len(launches) == 6
    body = script[script.index("launch() {") : script.index("\n}", script.index("launch() {"))]
    assert "--skip-collected" in body and '--seeds "${SEEDS:-2}"' in body
    # the masking retrain trains in a run folder of its own (it must not replace the collected f = 1 rows),
    # and the third seed comes last, over every fraction (no --only: no fraction picked by its results)
    masking = next(line for line in lines if "launch masking" in line)
    assert masking.startswith("CONVIT_RUNS=$CONVIT_RUNS/") and lines.index(masking) in launches
    assert lines[launches[-1]] == "SEEDS=3 launch sample_efficiency"
    budget = next(i for i, line in enumerate(lines) if "cpu_budget.py --family" in line)
    assert budget < launches[0] and "--skip-collected" in lines[budget]
