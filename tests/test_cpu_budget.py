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


def test_collect_writes_the_curves_so_far(tmp_path: Path) -> None:
    spec = budget_spec("light", 1.0)
    d = run_dir(tmp_path, spec)
    d.mkdir(parents=True)
    lines = [
        {"epoch": 1, "step": 781, "train_loss": 2.14, "val_top1": 28.9, "val_top5": 81.7, "val_loss": 1.91},
        {"epoch": 2, "step": 1562, "train_loss": 2.04, "val_top1": 35.5, "val_top5": 87.2, "val_loss": 1.75},
    ]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "curves.csv"
    assert collect(["none", "light"], 1.0, 0, str(tmp_path), out) == 2  # "none" has not started: no rows
    rows = list(csv.DictReader(out.open()))
    assert [r["strength"] for r in rows] == ["light", "light"]
    assert [int(r["images_seen"]) for r in rows] == [781 * 64, 1562 * 64]
    assert float(rows[1]["val_top1"]) == 35.5
