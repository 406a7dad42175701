"""Table 4: hard distillation improves every model; suite ``distillation``."""

from __future__ import annotations

from analysis import load
from analysis.claims.base import (
    Claim,
    Missing,
    Outcome,
    _diff,
    _min_seeds,
    _seeds,
)


def _paper_t4() -> str:
    t = load.load_paper("table4").pivot_table(index="model", columns="distillation", values="top1")
    return "; ".join(f"{m}: {r['none']:.1f} -> {r['hard']:.1f}" for m, r in t.iterrows())


def check_t4(res: load.SuiteResults) -> Outcome:
    runs = res.runs
    col = "distillation" if "distillation" in runs.columns else "variant"
    kind = (
        runs[col]
        .astype(str)
        .str.lower()
        .map(
            lambda v: "hard" if "hard" in v else ("none" if v in ("none", "nan", "", "no", "baseline") else v)
        )
    )
    s = load.seed_summary(runs.assign(kind=kind), ["model", "kind"])
    w = s.pivot_table(index="model", columns="kind", values="mean")
    if not {"hard", "none"} <= set(w.columns):
        raise Missing("needs distilled and non-distilled runs")
    w = w[["none", "hard"]].dropna()
    if w.empty:
        raise Missing("no model has both")
    ours = "; ".join(f"{m}: {r['none']:.1f} -> {r['hard']:.1f}" for m, r in w.iterrows())
    t = _seeds(runs.assign(kind=kind), ["model", "kind"])
    comps = tuple(_diff(t, (m, "hard"), (m, "none"), f"{m}: distilled - not") for m in w.index)
    return Outcome(bool((w["hard"] > w["none"]).all()), ours, _min_seeds(s), comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "T4",
        "Hard distillation improves every model",
        "Table 4",
        "distillation",
        "For every model with both runs, distilled seed-mean top-1 > non-distilled.",
        _paper_t4,
        check_t4,
    ),
]
