"""Tests for analysis/: the loader's fallback order and schema checks, the report's verdict rules, and that
every notebook executes headlessly.

The results fixture under tests/data/results_fixture/ is synthetic (see its make_fixture.py); verdict cases
that need a specific ordering are built in temporary folders from it, so each rule is seen both holding and
failing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from analysis import load, report

FIXTURE = Path(__file__).parent / "data" / "results_fixture"


def _verdicts(results: Path) -> dict[str, report.Verdict]:
    return {v.claim_id: v for v in report.evaluate(results)}


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


# --- report -------------------------------------------------------------------------------------------------


def test_report_verdicts_on_fixture() -> None:
    v = _verdicts(FIXTURE)
    # ConViT ahead everywhere and the gap shrinks -> reproduced (cpu scale, 2 seeds)
    for cid in ("T2-smallest", "T2-every", "T2-shrink"):
        assert v[cid].verdict == report.REPRODUCED, v[cid]
        assert v[cid].scale == "cpu" and v[cid].seeds == 2
    # b beats a at the small fraction -> the ordering a > b > d > e fails
    assert v["T3-small-gating"].verdict == report.NOT_REPRODUCED
    assert v["T3-small-conv"].verdict == report.REPRODUCED
    assert "SMOKE" in v["T3-small-gating"].caveat
    # locality probes
    for cid in ("F6-sigma", "F5-end", "F5-grow"):
        assert v[cid].verdict == report.REPRODUCED, v[cid]
    # no results at all -> not yet run
    for cid in ("T5", "T6-order", "T6-depth", "F9", "C100", "T4", "T1-all", "T1-plus"):
        assert v[cid].verdict == report.NOT_RUN and v[cid].scale is None
    # suite ran but lacks the sweep the rule needs -> not yet run
    assert v["F8-alpha"].verdict == report.NOT_RUN and v["F8-alpha"].scale == "smoke"


def test_report_flips_when_ordering_fails(tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    se = pd.read_csv(root / "sample_efficiency" / "cpu.csv")
    # make DeiT win at the smallest fraction: the gap no longer shrinks and ConViT is not ahead everywhere
    se.loc[(se["variant"] == "deit") & (se["fraction"] == 0.1), "top1"] = 55.0
    se.to_csv(root / "sample_efficiency" / "cpu.csv", index=False)
    loc = pd.read_csv(root / "locality" / "reduced_locality.csv")
    loc.loc[loc["gate_sigma"].notna(), "gate_sigma"] = 0.6  # nothing collapses
    loc.to_csv(root / "locality" / "reduced_locality.csv", index=False)
    abl = pd.read_csv(root / "ablations" / "smoke.csv")
    abl.loc[(abl["row"] == "b") & (abl["fraction"] == 0.1), "top1"] = 49.0  # now a > b > d > e holds
    abl.to_csv(root / "ablations" / "smoke.csv", index=False)
    v = _verdicts(root)
    assert v["T2-smallest"].verdict == report.NOT_REPRODUCED
    assert v["T2-every"].verdict == report.NOT_REPRODUCED
    assert v["T2-shrink"].verdict == report.NOT_REPRODUCED
    assert v["F6-sigma"].verdict == report.NOT_REPRODUCED
    assert v["T3-small-gating"].verdict == report.REPRODUCED


def test_report_masking_and_main_table(tmp_path: Path) -> None:
    """Constructed masking / main-table results: the Table 5, 6 and Table 1 rules in both directions."""
    base = pd.read_csv(FIXTURE / "sample_efficiency" / "cpu.csv").iloc[:1]

    def rows(suite: str, specs: list[dict]) -> pd.DataFrame:
        out = pd.concat([base.assign(suite=suite, run=f"{suite}-{i}", **s) for i, s in enumerate(specs)])
        return out.reset_index(drop=True)

    root = tmp_path / "results"
    (root / "masking").mkdir(parents=True)
    (root / "main_table").mkdir()
    masking = rows(
        "masking",
        [
            dict(model="convit_tiny", variant="convit", mask="none", layers_masked=0, top1=70.0),
            dict(model="convit_tiny", variant="convit", mask="pos_embed", layers_masked=0, top1=65.0),
            dict(model="deit_tiny", variant="deit", mask="none", layers_masked=0, top1=69.0),
            dict(model="deit_tiny", variant="deit", mask="pos_embed", layers_masked=0, top1=40.0),
            *[
                dict(model="convit_tiny", variant="convit", mask=m, layers_masked=k, top1=t)
                for k, c, p in ((3, 60.0, 62.0), (5, 40.0, 50.0), (10, 5.0, 45.0))
                for m, t in (("content", c), ("position", p))
            ],
        ],
    )
    masking.to_csv(root / "masking" / "cpu.csv", index=False)
    main = rows(
        "main_table",
        [
            dict(model="convit_tiny_plus", variant="convit", top1=60.0, params=1e6),
            dict(model="deit_tiny_plus", variant="deit", top1=59.0, params=1e6),
            dict(model="convit_small_plus", variant="convit", top1=62.0, params=3e6),
            dict(model="deit_small_plus", variant="deit", top1=63.0, params=3e6),
        ],
    )
    main.to_csv(root / "main_table" / "cpu.csv", index=False)
    v = _verdicts(root)
    assert v["T5"].verdict == report.REPRODUCED
    assert v["T6-order"].verdict == report.REPRODUCED
    assert v["T6-depth"].verdict == report.REPRODUCED
    assert v["T1-plus"].verdict == report.NOT_REPRODUCED  # S+ loses
    assert v["T1-plus-growth"].verdict == report.NOT_REPRODUCED


def test_report_cli_writes_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "REPRODUCTION.md"
    out.write_text("a report worth keeping\n")
    for wrong in (tmp_path / "nowhere", tmp_path):  # a typo, or a folder without suites: refused, not judged
        with pytest.raises(SystemExit) as info:
            report.main(["--results", str(wrong), "--out", str(out)])
        assert info.value.code == 2 and "holds none of the suite folders" in capsys.readouterr().err
    assert out.read_text() == "a report worth keeping\n"
    assert report.main(["--results", str(FIXTURE), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| T2-shrink |" in text and "**reproduced**" in text and "**not yet run**" in text
    assert "Rule:" in text and "## Scales used" in text
    assert "written by hand" not in text  # the fixture has no interpretation file


def test_report_includes_the_hand_written_reading_verbatim(tmp_path: Path) -> None:
    """``interpretation.md`` beside the results goes into the report as written, before the rules."""
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    (results / report.INTERPRETATION).write_text("At cpu scale sigma(lambda) moves by 0.01 in 1.5k steps.\n")
    out = tmp_path / "REPRODUCTION.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    heading = text.index("## Reading these results (written by hand in `results/interpretation.md`)")
    assert (
        heading
        < text.index("At cpu scale sigma(lambda) moves by 0.01 in 1.5k steps.")
        < text.index("## Rules and caveats")
    )


# --- notebooks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("results", ["committed", pytest.param("fixture", marks=pytest.mark.slow)])
def test_notebooks_execute(results: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every notebook runs headlessly, on the committed results/ and on the fixture (figures to tmp)."""
    pytest.importorskip("nbclient")
    from analysis import run_notebooks

    monkeypatch.setenv("CONVIT_FIGURES", str(tmp_path / "figures"))
    rdir = None if results == "committed" else FIXTURE
    for nb in run_notebooks.NOTEBOOKS:
        run_notebooks.execute(nb, results_dir=rdir, timeout=120)
    assert len(list((tmp_path / "figures").glob("*.png"))) >= 10
