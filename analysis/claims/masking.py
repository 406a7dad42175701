"""Tables 5 and 6: masking the positional embedding, or the content / position terms of the first k GPSA
layers, at test time; suite ``masking``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import load
from analysis.claims.base import (
    Claim,
    Missing,
    Outcome,
    _diff,
    _get,
    _min_seeds,
    _seeds,
)
from analysis.gate import Comparison, paired


def _paper_t5() -> str:
    t = load.load_paper("table5").pivot_table(index="model", columns="mask", values="top1")
    return "; ".join(
        f"{m}: {r['pos_embed']:.1f} masked vs {r['none']:.1f} ({(1 - r['pos_embed'] / r['none']) * 100:.0f}% "
        "rel. drop)"
        for m, r in t.iterrows()
    )


def _paper_t6() -> str:
    t = load.load_paper("table6").pivot_table(index="layers_masked", columns="mask", values="top1")
    return "; ".join(
        f"k={k}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in t.iterrows()
    )


def _mask_kind(series: pd.Series) -> pd.Series:
    aliases = {
        "none": "none",
        "no": "none",
        "": "none",
        "nan": "none",
        "pos_embed": "pos_embed",
        "pos": "pos_embed",
        "pos_emb": "pos_embed",
        "position_embedding": "pos_embed",
        "content": "content",
        "position": "position",
    }
    return series.astype(str).str.strip().str.lower().map(lambda s: aliases.get(s, s))


def _with_mask(runs: pd.DataFrame) -> pd.DataFrame:
    """Add a normalised ``mask`` column: from a ``mask`` tag, else parsed from the variant
    (``convit_tiny-nomask``, ``..-mask_pos_embed``, ``..-mask_content-k3``); evaluation entries only when the
    suite also holds training runs (``task`` column)."""
    if "task" in runs.columns and (runs["task"] == "eval").any():
        runs = runs[runs["task"] == "eval"]
    if "mask" in runs.columns:
        return runs.assign(mask=_mask_kind(runs["mask"]))
    v = runs["variant"].astype(str).str.lower()
    kind = v.str.extract(r"mask_(pos_embed|content|position)", expand=False)
    kind = kind.where(kind.notna(), np.where(v.str.contains("nomask"), "none", None))
    return runs.assign(mask=kind)


def check_t5(res: load.SuiteResults) -> Outcome:
    runs = _with_mask(res.runs)
    if runs["mask"].isna().all():
        raise Missing("no masking evaluations")
    runs = runs[runs["mask"].isin(["none", "pos_embed"]) & runs["family"].isin(["convit", "deit"])]
    if "layers_masked" in runs.columns:
        lm = pd.to_numeric(runs["layers_masked"], errors="coerce")
        runs = runs[lm.isna() | (lm == 0) | (runs["mask"] == "pos_embed")]
    s = load.seed_summary(runs, ["family", "mask"])
    w = s.pivot_table(index="family", columns="mask", values="mean")
    if not {"none", "pos_embed"} <= set(w.columns) or not {"convit", "deit"} <= set(w.index):
        raise Missing("needs masked and unmasked evaluations of ConViT and DeiT")
    drop = 1 - w["pos_embed"] / w["none"]
    ours = "; ".join(
        f"{f}: {w.at[f, 'pos_embed']:.1f} masked vs {w.at[f, 'none']:.1f} ({drop[f] * 100:.0f}% rel. drop)"
        for f in ("convit", "deit")
    )
    t = _seeds(runs, ["family", "mask"])
    drops = {f: (1 - _get(t, (f, "pos_embed")) / _get(t, (f, "none"))) * 100 for f in ("convit", "deit")}
    comps = (Comparison("DeiT drop - ConViT drop", paired(drops["deit"], drops["convit"]), "% rel."),)
    return Outcome(bool(drop["convit"] < drop["deit"]), ours, _min_seeds(s), comparisons=comps)


def _t6_table(res: load.SuiteResults) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    runs = res.runs
    if "layers_masked" not in runs.columns:
        raise Missing("no layers_masked column")
    runs = _with_mask(runs)
    runs = runs.assign(k=pd.to_numeric(runs["layers_masked"], errors="coerce"))
    runs = runs[runs["mask"].isin(["content", "position"]) & (runs["k"] > 0)]
    s = load.seed_summary(runs, ["k", "mask"])
    w = s.pivot_table(index="k", columns="mask", values="mean").dropna()
    if w.empty or not {"content", "position"} <= set(w.columns):
        raise Missing("needs content- and position-masked evaluations")
    return w.sort_index(), _min_seeds(s), _seeds(runs, ["k", "mask"])


def check_t6_order(res: load.SuiteResults) -> Outcome:
    w, n, t = _t6_table(res)
    ours = "; ".join(
        f"k={int(k)}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in w.iterrows()
    )
    comps = tuple(
        _diff(t, (k, "position"), (k, "content"), f"k={int(k)}: position - content") for k in w.index
    )
    return Outcome(bool((w["content"] < w["position"]).all()), ours, n, comparisons=comps)


def check_t6_depth(res: load.SuiteResults) -> Outcome:
    w, n, t = _t6_table(res)
    if len(w) < 2:
        raise Missing("needs at least two values of k")
    holds = bool((w["content"].diff().dropna() < 0).all() and (w["position"].diff().dropna() < 0).all())
    ours = "; ".join(
        f"k={int(k)}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in w.iterrows()
    )
    ks = list(w.index)
    comps = tuple(
        _diff(t, (a, m), (b, m), f"{m}: k={int(a)} - k={int(b)}")
        for m in ("content", "position")
        for a, b in zip(ks, ks[1:], strict=False)
    )
    return Outcome(holds, ours, n, comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "T5",
        "Masking the positional embedding at test time hurts DeiT-Ti far more than ConViT-Ti",
        "Table 5",
        "masking",
        "Relative drop 1 - masked/unmasked of ConViT < DeiT's.",
        _paper_t5,
        check_t5,
    ),
    Claim(
        "T6-order",
        "In the first k GPSA layers, masking content hurts more than masking position",
        "Table 6",
        "masking",
        "Content-masked top-1 < position-masked top-1 for every k tested.",
        _paper_t6,
        check_t6_order,
    ),
    Claim(
        "T6-depth",
        "Masking more GPSA layers hurts more",
        "Table 6",
        "masking",
        "Both content- and position-masked top-1 strictly decrease as k grows (at least two k).",
        _paper_t6,
        check_t6_depth,
    ),
]
