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


def test_the_evidence_driver_queues_what_it_says() -> None:
    """experiments/cpu_evidence.sh: its first launch and the first single-thread lane hold the 8 headline
    runs (f = 0.05 and 1, 2 seeds), the lanes beside the gating-budget run hold the f = 0.5 pairs; a glob typo
    would silently queue nothing (or everything)."""
    import re

    from experiments.common import run_name, select, with_seeds

    script = (REPO / "experiments" / "cpu_evidence.sh").read_text()
    globs = re.findall(r"(?:launch|lane) (?:sample_efficiency )?--only '([^']+)'", script)
    assert len(globs) == 4, globs
    specs = with_seeds(sample_efficiency.specs("cpu"), 2)
    # in the script's order: the pairs, the budget run's lane (seed 1), then the other lane
    first, lane_s1, lane_f005, lane_s0 = (select(specs, g) for g in globs)
    headline = first + lane_f005
    assert len(first) == 7 and len(headline) == 8 and {s.data.fraction for s in headline} == {0.05, 1.0}
    assert sorted(s.seed for s in headline) == [0] * 4 + [1] * 4
    assert [run_name(s).split("-")[0] for s in lane_f005] == ["convit"]
    for lane, seed in ((lane_s0, 0), (lane_s1, 1)):
        assert sorted(run_name(s).split("-")[0] for s in lane) == ["convit", "deit"]
        assert {(s.data.fraction, s.seed) for s in lane} == {(0.5, seed)}
    assert "(python experiments/cpu_budget.py --family convit --strength none --images 2; lane" in script
