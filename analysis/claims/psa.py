"""Fig. 9: vanilla PSA with conv init against DeiT over training; suite ``psa``."""

from __future__ import annotations

from analysis import load
from analysis.claims.base import (
    Claim,
    Missing,
    Outcome,
    _diff,
    _seeds,
    _text,
)


def check_f9(res: load.SuiteResults) -> Outcome:
    c = res.curves.dropna(subset=["val_top1"])
    c = c[c["family"].isin(["psa", "deit"])]
    w = c.groupby(["epoch", "family"])["val_top1"].mean().unstack()
    if not {"psa", "deit"} <= set(w.columns):
        raise Missing("needs PSA and DeiT learning curves")
    w = w.dropna()
    if len(w) < 2:
        raise Missing("needs at least two common evaluated epochs")
    e0, e1 = w.index.min(), w.index.max()
    holds = w.at[e0, "psa"] > w.at[e0, "deit"] and w.at[e1, "deit"] > w.at[e1, "psa"]
    ours = (
        f"epoch {int(e0)}: PSA {w.at[e0, 'psa']:.1f} vs DeiT {w.at[e0, 'deit']:.1f}; epoch {int(e1)}: "
        f"PSA {w.at[e1, 'psa']:.1f} vs DeiT {w.at[e1, 'deit']:.1f}"
    )
    t = _seeds(c, ["epoch", "family"], "val_top1")
    comps = (
        _diff(t, (e0, "psa"), (e0, "deit"), f"epoch {int(e0)}: PSA - DeiT"),
        _diff(t, (e1, "deit"), (e1, "psa"), f"epoch {int(e1)}: DeiT - PSA"),
    )
    return Outcome(bool(holds), ours, int(c.groupby("family")["run"].nunique().min()), comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "F9",
        "Vanilla PSA + conv init leads DeiT early, then DeiT catches up and overtakes",
        "Fig. 9",
        "psa",
        "At the first common evaluated epoch PSA's mean val top-1 > DeiT's, and at the last DeiT's > PSA's.",
        _text("curves only"),
        check_f9,
    ),
]
