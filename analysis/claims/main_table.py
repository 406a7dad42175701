"""Table 1 (and Fig. 11b): ConViT against the DeiT of the same size; suite ``main_table``."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from analysis import load
from analysis.claims.base import (
    Claim,
    Missing,
    Outcome,
    _convit_vs_deit,
    _diff,
    _fmt,
    _get,
    _seeds,
)
from analysis.gate import Comparison, paired


def _pairs_by_size(res: load.SuiteResults, only_plus: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pair ConViT and DeiT runs of the same size by model name (``convit_small`` <-> ``deit_small``):
    seed means side by side (sorted by parameters) and the per-seed top-1 table by (size, family)."""
    runs = res.runs[res.runs["family"].isin(["convit", "deit"])].copy()
    if "task" in runs.columns:  # released-weights evaluations are not training results
        runs = runs[runs["task"].fillna("train") != "eval"]
    runs["size"] = runs["model"].astype(str).str.replace(r"^(convit|deit)_?", "", regex=True)
    if only_plus:
        runs = runs[runs["size"].str.contains("plus|\\+", regex=True)]
    s = load.seed_summary(runs, ["size", "family"])
    if s.empty:
        raise Missing("no ConViT/DeiT runs" + (" of the + family" if only_plus else ""))
    out = _convit_vs_deit(
        s, "size", "needs ConViT and DeiT of the same size", "no size has both a ConViT and a DeiT run"
    )
    params = runs.groupby("size")["params"].max()
    out["params"] = params.reindex(out.index)
    out["gain_pct"] = (out["convit"] - out["deit"]) / out["deit"] * 100
    return out.sort_values("params"), _seeds(runs, ["size", "family"])


def _paper_table1(only_plus: bool) -> str:
    t = load.load_paper("table1")
    order = list(dict.fromkeys(t["size"]))
    t = t.pivot_table(index="size", columns="family", values="top1").reindex(order)
    if only_plus:
        t = t[t.index.str.endswith("+")]
    return "; ".join(
        f"{s}: {r['ConViT']:.1f} vs {r['DeiT']:.1f} ({(r['ConViT'] / r['DeiT'] - 1) * 100:+.2f}%)"
        for s, r in t.iterrows()
    )


def check_t1(only_plus: bool) -> Callable[[load.SuiteResults], Outcome]:
    def check(res: load.SuiteResults) -> Outcome:
        p, t = _pairs_by_size(res, only_plus)
        ours = "; ".join(
            f"{s}: {_fmt(r['convit'])} vs {_fmt(r['deit'])} ({r['gain_pct']:+.2f}%)" for s, r in p.iterrows()
        )
        comps = tuple(_diff(t, (s, "convit"), (s, "deit"), f"{s}: ConViT - DeiT") for s in p.index)
        return Outcome(bool((p["convit"] > p["deit"]).all()), ours, int(p["n"].min()), comparisons=comps)

    return check


def check_t1_growth(res: load.SuiteResults) -> Outcome:
    p, t = _pairs_by_size(res, only_plus=True)
    if len(p) < 2:
        raise Missing("needs at least two + sizes")
    gains = list(p["gain_pct"])
    holds = all(b > a for a, b in zip(gains, gains[1:], strict=False))
    ours = "gain %: " + ", ".join(f"{s} {g:+.2f}" for s, g in zip(p.index, gains, strict=True))
    per_seed = {
        s: (_get(t, (s, "convit")) - _get(t, (s, "deit"))) / _get(t, (s, "deit")) * 100 for s in p.index
    }
    sizes = list(p.index)
    comps = tuple(
        Comparison(f"gain {b} - gain {a}", paired(per_seed[b], per_seed[a]), "% rel.")
        for a, b in zip(sizes, sizes[1:], strict=False)
    )
    return Outcome(holds, ours, int(p["n"].min()), comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "T1-all",
        "ConViT beats the DeiT of the same size (Ti, S, B, Ti+, S+, B+)",
        "Table 1",
        "main_table",
        "Pair runs by model name without the family prefix (convit_small <-> deit_small); reproduced iff "
        "ConViT's seed-mean top-1 exceeds DeiT's for every pair tested.",
        lambda: _paper_table1(False),
        check_t1(False),
    ),
    Claim(
        "T1-plus",
        "ConViT-Ti+/S+/B+ beat DeiT-Ti+/S+/B+",
        "Table 1",
        "main_table",
        "As T1-all, restricted to the + (64 dims per head) pairs.",
        lambda: _paper_table1(True),
        check_t1(True),
    ),
    Claim(
        "T1-plus-growth",
        "The relative gain of ConViT+ over DeiT+ grows with model size",
        "Table 1, Fig. 11b",
        "main_table",
        "Relative gain (ConViT-DeiT)/DeiT strictly increases with parameter count over the "
        "+ pairs tested (at least two).",
        lambda: _paper_table1(True),
        check_t1_growth,
    ),
]
