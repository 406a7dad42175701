"""Tests for analysis/: the loader's fallback order and schema checks, and that every notebook executes
headlessly (the report's verdicts: tests/test_report.py and tests/test_gate.py).

The results fixture under tests/data/results_fixture/ is synthetic (see its make_fixture.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import load

FIXTURE = Path(__file__).parent / "data" / "results_fixture"
REPO = Path(__file__).resolve().parents[1]


# --- loader -------------------------------------------------------------------------------------------------


def test_fallback_prefers_best_available_scale() -> None:
    assert load.available_scales("sample_efficiency", FIXTURE) == ["cpu", "smoke"]
    res = load.load_suite("sample_efficiency", results_dir=FIXTURE)
    assert res.scale == "cpu" and set(res.runs["scale"]) == {"cpu"}
    assert res.n_seeds == 2
    smoke = load.load_suite("sample_efficiency", scale="smoke", results_dir=FIXTURE)
    assert smoke.scale == "smoke" and len(smoke.runs) == 2
    assert "SMOKE" in smoke.label()


def test_reduced_beats_cpu_and_paper_beats_all(tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "sample_efficiency", root / "sample_efficiency")
    cpu = pd.read_csv(root / "sample_efficiency" / "cpu.csv")
    for scale in ("reduced", "paper"):
        cpu.assign(scale=scale).to_csv(root / "sample_efficiency" / f"{scale}.csv", index=False)
        assert load.load_suite("sample_efficiency", results_dir=root).scale == scale
    # an empty (header-only) file does not count as available
    cpu.iloc[0:0].to_csv(root / "sample_efficiency" / "paper.csv", index=False)
    assert load.load_suite("sample_efficiency", results_dir=root).scale == "reduced"


def test_whole_number_tags_some_runs_lack_stay_integers(tmp_path: Path) -> None:
    """A tag only some runs carry (the grid's gpsa_layers beside Table 3's rows) reads as float because of the
    gaps; the loader gives whole numbers back as integers (figures say 3, not 3.0), and leaves other tags."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "sample_efficiency", root / "sample_efficiency")
    cpu = pd.read_csv(root / "sample_efficiency" / "cpu.csv")
    layers = [3 if i % 2 else None for i in range(len(cpu))]
    strength = [0.1 if i % 2 else None for i in range(len(cpu))]
    cpu.assign(gpsa_layers=layers, locality_strength=strength, row="a").to_csv(
        root / "sample_efficiency" / "cpu.csv", index=False
    )
    runs = load.load_suite("sample_efficiency", results_dir=root).runs
    assert str(runs["gpsa_layers"].dtype) == "Int64" and runs["gpsa_layers"].dropna().tolist()[0] == 3
    assert runs["gpsa_layers"].isna().sum() == len(cpu) // 2
    assert runs["locality_strength"].dtype == float and runs["row"].tolist()[0] == "a"


def test_incomplete_runs_are_left_out_unless_asked(tmp_path: Path) -> None:
    """A run the collector marked incomplete (stopped mid-training) is not in runs, curves or verdicts."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "sample_efficiency", root / "sample_efficiency")
    cpu = pd.read_csv(root / "sample_efficiency" / "cpu.csv")
    curves = pd.read_csv(root / "sample_efficiency" / "cpu_curves.csv")
    stopped = cpu.iloc[:1].assign(run="se-convit-0.1-s9", seed=9, top1=float("nan"), status="incomplete")
    cpu = pd.concat([cpu.assign(status="done"), stopped], ignore_index=True)
    cpu.to_csv(root / "sample_efficiency" / "cpu.csv", index=False)
    early = curves[curves["run"] == "se-convit-0.1-s0"].head(1).assign(run="se-convit-0.1-s9")
    pd.concat([curves, early]).to_csv(root / "sample_efficiency" / "cpu_curves.csv", index=False)

    res = load.load_suite("sample_efficiency", results_dir=root)
    assert "se-convit-0.1-s9" not in set(res.runs["run"]) and "se-convit-0.1-s9" not in set(res.curves["run"])
    assert len(res.runs) == len(cpu) - 1 and res.n_seeds == 2
    everything = load.load_suite("sample_efficiency", results_dir=root, include_incomplete=True)
    assert "se-convit-0.1-s9" in set(everything.runs["run"]) and everything.n_seeds == 3
    assert "se-convit-0.1-s9" in set(everything.curves["run"])


def test_runs_of_an_earlier_scale_definition_are_set_aside(tmp_path: Path) -> None:
    """A committed row whose name ends with a spec digest today's specs do not give (the scale was redefined
    after it was collected) is neither loaded nor judged; the report lists it; a scale left with only such
    rows is not available, so the suite falls back (here to smoke) instead of showing old numbers."""
    from analysis import report
    from experiments import load_suite as suite_module
    from experiments.common import run_name

    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "sample_efficiency", root / "sample_efficiency")
    path = root / "sample_efficiency" / "cpu.csv"
    cpu = pd.read_csv(path)
    today = run_name(suite_module("sample_efficiency").specs("cpu")[0])
    rows = [cpu.iloc[:1].assign(run=today), cpu.iloc[1:2].assign(run="deit-s0-0badd00d")]
    pd.concat([*rows, cpu.iloc[2:]], ignore_index=True).to_csv(path, index=False)

    res = load.load_suite("sample_efficiency", results_dir=root)
    names = set(res.runs["run"])
    assert today in names and "deit-s0-0badd00d" not in names
    assert len(res.runs) == len(cpu) - 1  # the fixture's digest-less names cannot be checked: kept
    assert res.stale == {"cpu": ["deit-s0-0badd00d"]}
    kept = load.load_suite("sample_efficiency", results_dir=root, include_stale=True)
    assert "deit-s0-0badd00d" in set(kept.runs["run"]) and kept.stale == {}

    text = report.render(report.evaluate(root), root)
    assert "| sample_efficiency | cpu | cpu, smoke | cpu: 1 |" in text

    # every cpu row from an earlier definition: cpu is not available any more
    old = [f"r{i}-s0-0badd00{i % 10}" for i in range(len(cpu))]
    pd.read_csv(path).assign(run=old).to_csv(path, index=False)
    assert load.available_scales("sample_efficiency", root) == ["smoke"]
    assert load.available_scales("sample_efficiency", root, include_stale=True) == ["cpu", "smoke"]
    res = load.load_suite("sample_efficiency", results_dir=root)
    assert res.scale == "smoke" and len(res.stale["cpu"]) == len(cpu)


def test_missing_suite_is_empty_with_schema() -> None:
    res = load.load_suite("masking", results_dir=FIXTURE)
    assert res.empty and res.scale is None and res.n_seeds == 0
    assert set(load.RUN_COLUMNS) <= set(res.runs.columns)
    assert list(res.curves.columns) == list(load.CURVE_COLUMNS)
    assert list(res.locality.columns) == list(load.LOCALITY_COLUMNS)
    assert "not yet run" in res.label()


def test_schema_violation_is_loud(tmp_path: Path) -> None:
    (tmp_path / "ablations").mkdir()
    pd.read_csv(FIXTURE / "ablations" / "smoke.csv").drop(columns=["top1"]).to_csv(
        tmp_path / "ablations" / "smoke.csv", index=False
    )
    with pytest.raises(load.ResultsSchemaError, match="top1"):
        load.load_suite("ablations", results_dir=tmp_path)


def test_curves_and_locality_carry_run_tags() -> None:
    res = load.load_suite("locality", results_dir=FIXTURE)
    assert res.scale == "reduced"
    assert {"family", "model", "gpsa_layers"} <= set(res.locality.columns)
    assert set(res.locality["family"]) == {"convit", "deit"}
    se = load.load_suite("sample_efficiency", results_dir=FIXTURE)
    assert {"fraction", "family"} <= set(se.curves.columns) and not se.curves["family"].isna().any()


def test_family_rules() -> None:
    runs = pd.DataFrame(
        {
            "model": ["convit_small_plus"] * 3
            + ["convit_small", "deit_small", "x", "convit_tiny", "convit_tiny"],
            "variant": ["a", "e", "b", None, None, "psa_conv", None, None],
            "row": ["a", "e", "b", None, None, None, None, None],
            "gpsa_layers": [None, None, None, None, None, None, 0, 10],
            "locality_strength": [None] * 6 + [1.0, 1.0],
        }
    )
    assert list(load.family(runs)) == ["convit", "deit", "other", "convit", "deit", "psa", "deit", "convit"]


def test_paper_tables_have_sources() -> None:
    for name in load.paper_tables():
        df = load.load_paper(name)
        assert not df["source"].isna().any(), name
    t2 = load.load_paper("table2")
    assert len(t2) == 10 and set(t2["fraction"]) == {0.05, 0.1, 0.3, 0.5, 1.0}
    fig2 = load.load_paper("fig2")
    assert set(fig2["figure"]) == {"fig2a", "fig2b"}


# --- notebooks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("results", "where"), [("committed", "repo"), pytest.param("fixture", "analysis", marks=pytest.mark.slow)]
)
def test_notebooks_execute_as_a_researcher_runs_them(results: str, where: str, tmp_path: Path) -> None:
    """Every notebook runs unchanged under ``jupyter nbconvert --to notebook --execute`` (a subprocess, so
    the kernel starts in the notebook's own folder, as Jupyter starts it), invoked from the repository root
    (committed results) and from ``analysis/`` (the fixture), with no PYTHONPATH: ``analysis`` imports
    because it is installed, not because a test put the repository on sys.path."""
    pytest.importorskip("nbconvert")
    import subprocess
    import sys

    from analysis import run_notebooks

    cwd = REPO if where == "repo" else REPO / "analysis"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CONVIT_RESULTS")}
    env["CONVIT_FIGURES"] = str(tmp_path / "figures")
    if results == "fixture":
        env["CONVIT_RESULTS"] = str(FIXTURE.resolve())
    names = [str(nb.relative_to(cwd)) for nb in run_notebooks.NOTEBOOKS]
    proc = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", *names,
         "--output-dir", str(tmp_path / "out"), "--ExecutePreprocessor.timeout=120"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "out").glob("*.ipynb"))) == len(names)
    assert len(list((tmp_path / "figures").glob("*.png"))) >= 10
