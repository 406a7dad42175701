"""Tests for analysis/gate.py: the competence gate and the seed intervals behind the report's verdicts.

The results here are small synthetic frames written to temporary results folders (analysis inputs in the
collector's schema, judged by the real report), each built so one verdict is expected: a failing gate gives
"inconclusive (under-trained)", a clear gap with tight seeds "reproduced" (or "not reproduced" when it is
negative), overlapping seeds or a single seed "inconclusive (within noise)".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import gate, report

RUN_COLUMNS = (
    "suite scale run model variant dataset fraction num_classes img_size seed epochs top1 top5 loss params "
    "wall_time_s world_size status task"
).split()


def write_reference(root: Path, rows: list[tuple[str, int, float, float]]) -> None:
    """A pixel-probe reference for this results folder: (dataset, img_size, fraction, top1) rows."""
    (root / "reference").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [dict(dataset=d, img_size=s, fraction=f, num_classes=10, top1=t) for d, s, f, t in rows]
    ).to_csv(root / gate.REFERENCE, index=False)


def write_suite(
    root: Path,
    suite: str,
    runs: list[dict],
    *,
    scale: str = "cpu",
    final_loss: float | dict[str, float] = 1.2,
    locality: list[dict] | None = None,
) -> None:
    """Write ``results/SUITE/SCALE{,_curves,_locality}.csv``; each run's training loss falls to
    ``final_loss`` (one value, or per run name) over three epochs."""
    rows = []
    for i, r in enumerate(runs):
        row = dict(
            suite=suite,
            scale=scale,
            run=r.get("run", f"{suite}-{i}"),
            dataset="cifar10",
            fraction=1.0,
            num_classes=10,
            img_size=32,
            epochs=3,
            top5=90.0,
            loss=1.0,
            params=1e6,
            wall_time_s=1.0,
            world_size=1,
            status="done",
            task="train",
        )
        row.update(r)
        rows.append(row)
    df = pd.DataFrame(rows)
    cols = [c for c in RUN_COLUMNS if c in df.columns] + [c for c in df.columns if c not in RUN_COLUMNS]
    (root / suite).mkdir(parents=True, exist_ok=True)
    df[cols].to_csv(root / suite / f"{scale}.csv", index=False)
    curves = []
    for r in rows:
        end = final_loss[r["run"]] if isinstance(final_loss, dict) else final_loss
        for epoch in (1, 2, 3):
            curves.append(
                dict(
                    run=r["run"],
                    epoch=epoch,
                    train_loss=end + (3 - epoch) * 0.3,
                    lr=1e-3,
                    val_top1=r["top1"],
                    val_top5=90.0,
                    val_loss=1.0,
                )
            )
    pd.DataFrame(curves).to_csv(root / suite / f"{scale}_curves.csv", index=False)
    if locality is not None:
        pd.DataFrame(locality).to_csv(root / suite / f"{scale}_locality.csv", index=False)


def sample_efficiency(pairs: dict[float, list[tuple[float, float]]]) -> list[dict]:
    """Runs of the sample-efficiency suite: per fraction, one (ConViT, DeiT) top-1 pair per seed."""
    runs = []
    for f, seeds in pairs.items():
        for seed, (conv, deit) in enumerate(seeds):
            for fam, top1 in (("convit", conv), ("deit", deit)):
                runs.append(
                    dict(
                        run=f"{fam}-f{f}-s{seed}",
                        model=f"{fam}_tiny",
                        variant=fam,
                        fraction=f,
                        seed=seed,
                        top1=top1,
                    )
                )
    return runs


def verdicts(root: Path) -> dict[str, report.Verdict]:
    return {v.claim_id: v for v in report.evaluate(root)}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = tmp_path / "results"
    write_reference(root, [("cifar10", 32, 1.0, 39.0), ("cifar10", 32, 0.1, 30.0)])
    return root


# --- intervals ---------------------------------------------------------------------------------------------


def test_t_quantile_matches_the_tables() -> None:
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 10: 2.228, 30: 2.042}
    for df, q in table.items():
        assert gate.t_quantile(0.95, df) == pytest.approx(q, abs=1e-3)
    assert gate.t_quantile(0.99, 4) == pytest.approx(4.604, abs=1e-3)
    with pytest.raises(ValueError):
        gate.t_quantile(0.95, 0)


def test_t_quantile_agrees_with_scipy_where_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 41):
        for conf in (0.8, 0.95, 0.99):
            assert gate.t_quantile(conf, df) == pytest.approx(stats.t.ppf((1 + conf) / 2, df), rel=1e-6)


def test_interval_is_the_t_interval_of_the_mean() -> None:
    iv = gate.interval([1.0, 2.0])
    half = 12.7062 * math.sqrt(0.5) / math.sqrt(2)
    assert (iv.mean, iv.n) == (1.5, 2)
    assert iv.lo == pytest.approx(1.5 - half, abs=1e-3) and iv.hi == pytest.approx(1.5 + half, abs=1e-3)
    one = gate.interval([3.0, float("nan")])
    assert one.n == 1 and np.isnan(one.lo) and not one.above and not one.below
    assert "no interval" in one.text("pts")


def test_judge() -> None:
    tight_up = gate.Comparison("up", {0: 10.0, 1: 10.4, 2: 9.8})
    tight_down = gate.Comparison("down", {0: -5.0, 1: -5.2})
    wide = gate.Comparison("wide", {0: 3.0, 1: -2.0})
    single = gate.Comparison("one", {0: 25.0})
    assert gate.judge([tight_up]) == gate.REPRODUCED
    assert gate.judge([tight_up, tight_down]) == gate.NOT_REPRODUCED  # one clear failure refutes the rule
    assert gate.judge([tight_up, wide]) == gate.WITHIN_NOISE
    assert gate.judge([single]) == gate.WITHIN_NOISE  # one seed: no interval, whatever the size
    assert gate.judge([]) == gate.WITHIN_NOISE


def test_paired_uses_common_seeds_only() -> None:
    a = pd.Series({0: 5.0, 1: 6.0, 2: 7.0})
    b = pd.Series({1: 1.0, 2: 2.0, 3: 3.0})
    assert gate.paired(a, b) == {1.0: 5.0, 2.0: 5.0}


# --- verdicts through the report ---------------------------------------------------------------------------


def test_clear_gap_with_tight_seeds_is_reproduced(results: Path) -> None:
    pairs = {0.1: [(50.0, 40.0), (50.4, 40.1), (49.8, 39.9)], 1.0: [(80.0, 78.0), (80.3, 78.1), (79.9, 77.8)]}
    write_suite(results, "sample_efficiency", sample_efficiency(pairs))
    v = verdicts(results)
    for cid in ("T2-smallest", "T2-every", "T2-shrink"):
        assert v[cid].verdict == report.REPRODUCED, v[cid]
        assert "FAIL" not in v[cid].gate and "pass beats pixels" in v[cid].gate
    assert "f=0.1: ConViT - DeiT +10.07 pts [" in v["T2-smallest"].gaps
    assert "vs pixel probe 39.0" in v["T2-smallest"].gate


def test_clear_negative_gap_is_not_reproduced(results: Path) -> None:
    pairs = {0.1: [(40.0, 50.0), (40.2, 50.1)], 1.0: [(78.0, 80.0), (78.1, 80.2)]}
    write_suite(results, "sample_efficiency", sample_efficiency(pairs))
    v = verdicts(results)
    assert v["T2-smallest"].verdict == report.NOT_REPRODUCED
    assert v["T2-every"].verdict == report.NOT_REPRODUCED


def test_overlapping_seeds_are_within_noise(results: Path) -> None:
    # seed means favour ConViT at both fractions, but the seeds disagree on the sign
    pairs = {0.1: [(52.0, 45.0), (44.0, 47.0)], 1.0: [(80.0, 78.0), (78.0, 79.0)]}
    write_suite(results, "sample_efficiency", sample_efficiency(pairs))
    v = verdicts(results)
    for cid in ("T2-smallest", "T2-every"):
        assert v[cid].verdict == report.WITHIN_NOISE, v[cid]
        assert "rule on seed means: holds" in v[cid].ours


def test_a_single_seed_is_within_noise_however_large_the_gap(results: Path) -> None:
    write_suite(results, "sample_efficiency", sample_efficiency({0.1: [(60.0, 40.0)], 1.0: [(80.0, 70.0)]}))
    v = verdicts(results)
    assert v["T2-smallest"].verdict == report.WITHIN_NOISE
    assert "1 seed, no interval" in v["T2-smallest"].gaps


def test_baseline_below_the_pixel_probe_is_under_trained(results: Path) -> None:
    """The cpu runs as first committed: DeiT below a linear probe on pixels; a clear gap changes nothing."""
    pairs = {0.1: [(36.0, 26.0), (36.2, 26.1)], 1.0: [(40.0, 34.0), (40.1, 34.2)]}
    write_suite(results, "sample_efficiency", sample_efficiency(pairs))
    v = verdicts(results)
    for cid in ("T2-smallest", "T2-every", "T2-shrink"):
        assert v[cid].verdict == report.UNDER_TRAINED, v[cid]
    assert "FAIL beats pixels: DeiT 34.1 at f=1 vs pixel probe 39.0" in v["T2-smallest"].gate
    assert "pass loss" in v["T2-smallest"].gate


def test_training_loss_near_chance_is_under_trained(results: Path) -> None:
    pairs = {0.1: [(50.0, 40.0), (50.4, 40.1)], 1.0: [(80.0, 78.0), (80.3, 78.1)]}
    write_suite(results, "sample_efficiency", sample_efficiency(pairs), final_loss=2.15)
    v = verdicts(results)
    assert v["T2-every"].verdict == report.UNDER_TRAINED
    share = 2.15 / math.log(10)
    assert f"FAIL loss: DeiT final train loss 2.15 = {share:.2f} ln 10 (gate <= 0.8 ln 10 = 1.84)" in (
        v["T2-every"].gate
    )
    # exactly at the rule's edge: 0.8 ln 10 passes
    write_suite(results, "sample_efficiency", sample_efficiency(pairs), final_loss=0.8 * math.log(10))
    assert verdicts(results)["T2-every"].verdict == report.REPRODUCED


def test_no_pixel_probe_reference_is_under_trained(results: Path) -> None:
    runs = [r | {"img_size": 48} for r in sample_efficiency({1.0: [(80.0, 70.0), (80.1, 70.2)]})]
    write_suite(results, "sample_efficiency", runs)
    v = verdicts(results)["T2-every"]
    assert v.verdict == report.UNDER_TRAINED
    assert "no pixel-probe reference for cifar10 48 px (python -m analysis.pixel_probe cifar10" in v.gate


def test_an_unmeasured_fraction_is_held_to_the_full_data_probe(results: Path) -> None:
    # DeiT at 0.5 (36) beats nothing measured at 0.5; the f=1 probe (39) is the bar
    write_suite(results, "sample_efficiency", sample_efficiency({0.5: [(45.0, 36.0), (45.2, 36.1)]}))
    v = verdicts(results)["T2-every"]
    assert v.verdict == report.UNDER_TRAINED and "pixel probe 39.0, probe at f=1" in v.gate


def test_reduced_data_claims_gate_their_baseline_at_their_own_fraction(results: Path) -> None:
    """Table 3 at 10%: row e below the 10% probe (30): the 10% claims are under-trained; full data passes."""
    small = {"a": 29.0, "b": 28.0, "c": 27.0, "d": 26.0, "e": 25.0, "f": 24.0, "g": 20.0}
    full = {"a": 60.0, "b": 59.0, "c": 58.0, "d": 57.5, "e": 55.0, "f": 54.0, "g": 50.0}
    runs = [
        dict(run=f"{row}-{f}-s{seed}", model="convit_tiny_plus", variant=row, row=row, fraction=f, seed=seed,
             top1=acc + 0.2 * seed)
        for f, table in ((0.1, small), (1.0, full))
        for row, acc in table.items()
        for seed in (0, 1)
    ]  # fmt: skip
    write_suite(results, "ablations", runs)
    v = verdicts(results)
    for cid in ("T3-small-gating", "T3-small-conv"):
        assert v[cid].verdict == report.UNDER_TRAINED, v[cid]
        assert "DeiT 25.1 at f=0.1 vs pixel probe 30.0" in v[cid].gate
    assert v["T3-full"].verdict == report.REPRODUCED, v["T3-full"]
    assert "DeiT 55.1 at f=1 vs pixel probe 39.0" in v["T3-full"].gate


def _probes(moved: bool) -> tuple[list[dict], list[dict]]:
    """Locality runs (ConViT and DeiT, two seeds) and probes at epochs 1-3: with ``moved``, ConViT's later
    GPSA layers' sigma collapses, an early head stays positional and nonlocality grows 40%; DeiT's falls
    25%. Without, everything stays at its first value (+- 0.01)."""
    runs, loc = [], []
    for seed in (0, 1):
        for fam, top1 in (("convit", 62.0), ("deit", 60.0)):
            run = f"{fam}-s{seed}"
            runs.append(dict(run=run, model=f"{fam}_tiny", variant=fam, seed=seed, top1=top1 + seed * 0.1))
            for epoch in (1, 2, 3):
                t = (epoch - 1) / 2 if moved else 0.0
                for layer in range(4):
                    for head in range(4):
                        gpsa = fam == "convit" and layer < 3
                        if gpsa:
                            end = 0.02 if layer >= 1 else (0.8 if head == 0 else 0.3)
                            sigma = 0.73 + t * (end - 0.73) + 0.01 * seed
                            nonloc = 2.0 * (1 + 0.4 * t) + 0.01 * seed
                        else:
                            sigma = float("nan")
                            nonloc = 4.0 * (1 - 0.25 * t) + 0.01 * seed
                        loc.append(
                            dict(run=run, epoch=epoch, layer=layer, head=head, nonlocality=nonloc,
                                 gate_sigma=sigma, centre_distance=float("nan"))
                        )  # fmt: skip
    return runs, loc


def test_locality_claims_need_sigma_and_nonlocality_to_move(results: Path) -> None:
    runs, loc = _probes(moved=False)
    write_suite(results, "locality", runs, locality=loc)
    v = verdicts(results)
    for cid in ("F6-sigma", "F5-end", "F5-grow"):
        assert v[cid].verdict == report.UNDER_TRAINED, v[cid]
        assert "pass beats pixels" in v[cid].gate and "FAIL nonlocality moved" in v[cid].gate
    assert "FAIL sigma moved: largest head move 0.000 from epoch 1 to 3 (gate >= 0.1)" in v["F6-sigma"].gate
    assert "DeiT largest layer move 0.0%" in v["F5-end"].gate  # F5-end needs DeiT's probes to move too
    runs, loc = _probes(moved=True)
    write_suite(results, "locality", runs, locality=loc)
    v = verdicts(results)
    for cid in ("F6-sigma", "F5-end", "F5-grow"):
        assert v[cid].verdict == report.REPRODUCED, v[cid]
        assert "FAIL" not in v[cid].gate
    assert "pass sigma moved: largest head move 0.710" in v["F6-sigma"].gate


def test_committed_results_have_no_verdict_their_gate_does_not_support() -> None:
    """The committed results/ regenerated: a reproduced / not reproduced verdict only past a passed gate,
    and every judged claim shows its gate."""
    for v in report.evaluate():
        if v.verdict == report.NOT_RUN:
            continue
        assert v.gate, v
        if v.verdict in (report.REPRODUCED, report.NOT_REPRODUCED):
            assert "FAIL" not in v.gate, v
        if "FAIL" in v.gate:
            assert v.verdict == report.UNDER_TRAINED, v


def test_summary_counts_the_verdicts(results: Path, tmp_path: Path) -> None:
    write_suite(results, "sample_efficiency", sample_efficiency({0.1: [(50.0, 40.0), (50.4, 40.1)]}))
    main = [
        dict(run="c", model="convit_tiny", variant="convit", seed=0, top1=9.0),
        dict(run="d", model="deit_tiny", variant="deit", seed=0, top1=9.0),
    ]
    write_suite(results, "main_table", main)
    out = tmp_path / "R.md"
    assert report.main(["--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    line = next(x for x in text.splitlines() if x.startswith("Summary: "))
    assert line.startswith(
        "Summary: 2 reproduced, 0 not reproduced, 1 inconclusive (under-trained), 0 inconclusive (within "
        "noise), 19 not yet run"
    )
    assert "| gaps, 95% CI over seeds | gate |" in text and "- Gate: FAIL beats pixels" in text


# --- the pixel linear-probe reference ----------------------------------------------------------------------


def test_pixel_probe_is_deterministic_on_the_suites_subsets(fixture_data_root: Path, tmp_path: Path) -> None:
    """On the real cifar10-fixture images: two runs write the same reference, fraction 0.5 trains on the
    suites' own half (10 of 20 images per class), and rows of other datasets in the file are kept."""
    from analysis import pixel_probe

    out = tmp_path / "ref.csv"
    pd.DataFrame([dict(dataset="other", img_size=64, fraction=1.0, top1=5.0)]).to_csv(out, index=False)
    argv = ["cifar10-fixture", "--img-size", "32", "--fractions", "0.5,1", "--steps", "40"]
    argv += ["--root", str(fixture_data_root), "--out", str(out)]
    assert pixel_probe.main(argv) == 0
    first = out.read_text()
    assert pixel_probe.main(argv) == 0
    assert out.read_text() == first
    ref = pd.read_csv(out)
    assert list(ref["dataset"]) == ["cifar10-fixture", "cifar10-fixture", "other"]
    fix = ref[ref["dataset"] == "cifar10-fixture"].set_index("fraction")
    assert fix.at[0.5, "train_images"] == 100 and fix.at[1.0, "train_images"] == 200
    assert (fix["val_images"] == 100).all() and fix["top1"].between(0, 100).all()
    assert fix["l2"].between(*pixel_probe.L2_LIMITS).all() and "--steps 40" in fix.at[1.0, "command"]


def test_pixel_probe_unprepared_data_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis import pixel_probe

    out = tmp_path / "r.csv"
    rc = pixel_probe.main(["cifar10", "--img-size", "32", "--root", str(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: dataset cifar10 is not prepared") and err.count("\n") == 1
    assert not out.exists()


def test_pixel_probe_l2_grid_grows_past_a_winning_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The choice of l2 is never an edge of the grid: a winner at either end adds the next power of 10
    (scores here are a function of l2 alone, peaking at 1, so the grid must grow from 0.1 to 10)."""
    from analysis import pixel_probe

    monkeypatch.setattr(pixel_probe, "fit", lambda x, y, k, l2, steps: l2)
    monkeypatch.setattr(pixel_probe, "accuracy", lambda w, x, y: -abs(math.log10(w)))
    best, scores = pixel_probe.choose_l2(None, None, None, None, 10, 1)
    assert best == 1.0 and sorted(scores) == [1e-3, 1e-2, 1e-1, 1.0, 10.0]
    monkeypatch.setattr(pixel_probe, "accuracy", lambda w, x, y: -w)  # smaller is always better
    best, scores = pixel_probe.choose_l2(None, None, None, None, 10, 1)
    assert best == pixel_probe.L2_LIMITS[0] == min(scores)
