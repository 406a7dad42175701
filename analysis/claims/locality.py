"""Figs. 5-7 (and 13, 14, 17): gating sigma(lambda) and nonlocality over training, from the probes of any
suite that has them.
"""

from __future__ import annotations

import pandas as pd

from analysis import load
from analysis.claims.base import (
    LOCALITY_SOURCES,
    Claim,
    Missing,
    Outcome,
    _get,
    _seeds,
    _text,
)
from analysis.gate import Comparison, paired


def _paper_sigma() -> str:
    t = load.load_paper("gate_sigma")
    f7 = t[t["figure"] == "fig7"].groupby("layer")["gate_sigma"].agg(["mean", "max"])
    return "Fig. 6: head-mean sigma ~0 in layers 6-10, some heads high in 1-5; Fig. 7 (Ti): " + ", ".join(
        f"layer {int(k)} mean {r['mean']:.2f} max {r['max']:.2f}" for k, r in f7.iterrows()
    )


def _final_locality(res: load.SuiteResults, fam: str) -> pd.DataFrame:
    loc = res.locality[res.locality["family"] == fam]
    if loc.empty:
        raise Missing(f"no locality probes for {fam}")
    if "fraction" in loc.columns and loc["fraction"].notna().any():
        loc = loc[loc["fraction"] == loc["fraction"].max()]
    return loc


def _gpsa_layers(loc: pd.DataFrame) -> list[int]:
    return sorted(loc.loc[loc["gate_sigma"].notna(), "layer"].unique())


def check_f6_sigma(res: load.SuiteResults) -> Outcome:
    loc = _final_locality(res, "convit")
    layers = _gpsa_layers(loc)
    if len(layers) < 2:
        raise Missing("needs gate_sigma for at least two GPSA layers")
    last = loc[loc["epoch"] == loc.groupby("run")["epoch"].transform("max")].dropna(subset=["gate_sigma"])
    per_head = last.groupby(["layer", "head"])["gate_sigma"].mean()  # mean over seeds
    head_mean = per_head.groupby("layer").mean()
    half = len(layers) // 2
    early, late = layers[:half], layers[half:]
    late_max = float(head_mean.loc[late].max())
    early_best = float(per_head.loc[early].max())
    holds = late_max <= 0.1 and early_best >= 0.5
    ours = (
        f"final epoch {int(last['epoch'].max())}: head-mean sigma in later GPSA layers "
        f"{late[0] + 1}-{late[-1] + 1}: max {late_max:.2f}; max single-head sigma in layers "
        f"{early[0] + 1}-{early[-1] + 1}: {early_best:.2f}"
    )
    seed_head = _seeds(last, ["layer", "head"], "gate_sigma")  # seed x (layer, head)
    comps = [
        Comparison(
            f"0.1 - sigma L{layer + 1}",
            {float(s): 0.1 - v for s, v in seed_head[layer].mean(axis=1).dropna().items()},
            "",
        )
        for layer in late
    ]
    best = seed_head[[c for c in seed_head.columns if c[0] in early]].max(axis=1).dropna()
    comps.append(
        Comparison(
            f"max sigma L{early[0] + 1}-{early[-1] + 1} - 0.5",
            {float(s): v - 0.5 for s, v in best.items()},
            "",
        )
    )
    return Outcome(
        holds,
        ours,
        int(last["run"].nunique()),
        "layers numbered from 1; later half of GPSA layers",
        tuple(comps),
    )


def _nonloc_per_layer(loc: pd.DataFrame, when: str) -> pd.Series:
    ep = loc.groupby("run")["epoch"].transform("max" if when == "last" else "min")
    sel = loc[loc["epoch"] == ep].dropna(subset=["nonlocality"])
    return sel.groupby(["run", "layer"])["nonlocality"].mean().groupby("layer").mean()


def _nonloc_seeds(loc: pd.DataFrame, when: str) -> pd.DataFrame:
    """Head-mean nonlocality at each run's first or last probe: one row per seed, one column per layer."""
    ep = loc.groupby("run")["epoch"].transform("max" if when == "last" else "min")
    return _seeds(loc[loc["epoch"] == ep].dropna(subset=["nonlocality"]), ["layer"], "nonlocality")


def _diff_frames(a: pd.DataFrame, b: pd.DataFrame, key: object, label: str, unit: str) -> Comparison:
    """The comparison "a[key] - b[key] > 0" between two per-seed tables, paired by seed."""
    return Comparison(label, paired(_get(a, key), _get(b, key)), unit)


def check_f5_end(res: load.SuiteResults) -> Outcome:
    conv, deit = _final_locality(res, "convit"), _final_locality(res, "deit")
    c, d = _nonloc_per_layer(conv, "last").mean(), _nonloc_per_layer(deit, "last").mean()
    seeds = int(min(conv["run"].nunique(), deit["run"].nunique()))
    cs, ds = _nonloc_seeds(conv, "last").mean(axis=1), _nonloc_seeds(deit, "last").mean(axis=1)
    comps = (Comparison("DeiT - ConViT layer-mean nonlocality", paired(ds, cs), "patches"),)
    return Outcome(
        bool(c < d),
        f"layer-mean nonlocality at the last epoch: ConViT {c:.2f} vs DeiT {d:.2f}",
        seeds,
        comparisons=comps,
    )


def check_f5_grow(res: load.SuiteResults) -> Outcome:
    conv = _final_locality(res, "convit")
    layers = _gpsa_layers(conv)
    if not layers:
        raise Missing("no GPSA layers in the probes")
    first, last = _nonloc_per_layer(conv, "first"), _nonloc_per_layer(conv, "last")
    if conv["epoch"].nunique() < 2:
        raise Missing("needs probes at two epochs at least")
    grew = [layer for layer in layers if last[layer] > first[layer]]
    ours = (
        f"grew in {len(grew)}/{len(layers)} GPSA layers ("
        + ", ".join(f"L{layer + 1} {first[layer]:.2f}->{last[layer]:.2f}" for layer in layers)
        + ")"
    )
    fs, ls = _nonloc_seeds(conv, "first"), _nonloc_seeds(conv, "last")
    comps = tuple(_diff_frames(ls, fs, layer, f"L{layer + 1} last - first", "patches") for layer in layers)
    return Outcome(len(grew) == len(layers), ours, int(conv["run"].nunique()), comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "F6-sigma",
        "sigma(lambda) reaches ~0 in the later GPSA layers while early layers keep positional heads",
        "Fig. 6, 7, 14, 17",
        "locality",
        "At the last probed epoch (ConViT, largest fraction), the head-mean "
        "sigma of every GPSA layer in the later half is <= 0.1, and some head in the earlier half has "
        "sigma >= 0.5.",
        _paper_sigma,
        check_f6_sigma,
        LOCALITY_SOURCES,
        gate_locality=("convit",),
    ),
    Claim(
        "F5-end",
        "ConViT's nonlocality ends below DeiT's",
        "Fig. 5, 13",
        "locality",
        "At the last probed epoch, the layer-mean nonlocality (mean over heads, layers, seeds) of ConViT < "
        "DeiT's.",
        _text("curves only (y 3-7 patches)"),
        check_f5_end,
        LOCALITY_SOURCES,
        gate_locality=("convit", "deit"),
    ),
    Claim(
        "F5-grow",
        "ConViT's nonlocality grows during training in every GPSA layer",
        "Fig. 5",
        "locality",
        "Head-mean nonlocality at the last probed epoch > at the first, in every GPSA layer.",
        _text("curves only"),
        check_f5_grow,
        LOCALITY_SOURCES,
        gate_locality=("convit",),
    ),
]
