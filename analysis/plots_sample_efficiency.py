"""Figures of the sample-efficiency and ablation suites (Figs. 2a, 11c, 12 right; Table 3).

Drawn with the shared vocabulary of :mod:`analysis.plotkit`; :mod:`analysis.plots` is the registry the
notebooks and the report call.
"""

from __future__ import annotations

from collections.abc import Iterable

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis import load
from analysis.plotkit import (
    FAMILY_COLOR,
    FRACTION_LABEL,
    GAIN_BARS_LABEL,
    GAIN_LABEL,
    OTHER_COLORS,
    PALETTE,
    TOP1_LABEL,
    VAL_TOP1_LABEL,
    curves_panel,
    family_curves,
    family_label,
    family_markers,
    family_runs,
    fraction_palette,
    fraction_text,
    hue_order,
    legend_below,
    legend_outside,
    ours_panel,
    paper_and_ours,
    require,
    scale_title,
    with_family_labels,
)


def fig2a_sample_efficiency(res: load.SuiteResults) -> plt.Figure:
    """Fig. 2a: top-1 against the share of images kept, ConViT and DeiT, with the relative gain as bars
    behind the lines (on their own axis)."""
    f2a = load.load_paper("fig2").query("figure == 'fig2a'")

    def draw(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, gain: pd.Series, errorbar: str | None) -> None:
        ax2 = ax.twinx()
        ax2.bar(gain.index, gain.values, width=np.asarray(gain.index) * 0.3, color="0.8", zorder=0)
        ax2.axhline(0, color="0.6", lw=0.8)
        ax2.set_ylabel(GAIN_BARS_LABEL, color="0.4")
        ax2.grid(False)
        ax.set_zorder(ax2.get_zorder() + 1)  # lines and markers in front of the bars
        ax.patch.set_visible(False)
        order = hue_order(df["family"])
        sns.lineplot(
            data=df,
            x=x,
            y=y,
            hue="family",
            hue_order=order,
            palette=PALETTE,
            marker="o",
            errorbar=errorbar,
            ax=ax,
        )
        family_markers(ax)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(sorted(df[x].unique()))
        ax.set_xlabel(FRACTION_LABEL)
        ax.set_ylabel(TOP1_LABEL)
        legend_below(ax)

    def draw_paper(ax: plt.Axes) -> None:
        lines = f2a[f2a["series"].isin(["ConViT-S", "DeiT-S"])].assign(family=lambda d: d["series"])
        gain = f2a[f2a["series"] == "relative_gain_pct"].set_index("x")["y"]
        draw(ax, with_family_labels(lines), "x", "y", gain, None)

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        runs = require(family_runs(res), "ConViT/DeiT runs").assign(pct=lambda d: d["fraction"] * 100)
        w = runs.pivot_table(index="pct", columns="family", values="top1")
        have = {"ConViT", "DeiT"} <= set(w)
        gain = ((w["ConViT"] - w["DeiT"]) / w["DeiT"] * 100).dropna() if have else pd.Series(dtype=float)
        draw(ax, runs, "pct", "top1", gain, "sd")
        sns.scatterplot(
            data=runs, x="pct", y="top1", hue="family", palette=PALETTE, s=16, alpha=0.7, legend=False, ax=ax
        )
        ax.set_xlabel(FRACTION_LABEL + "\nline: seed mean; band: ±1 sd; dots: seeds")
        legend_below(ax)
        return runs

    return paper_and_ours(draw_paper, draw_ours, res, "Fig. 2a: sample efficiency, ConViT vs DeiT")


def fig11c_sample_efficiency_curves(res: load.SuiteResults) -> plt.Figure:
    """Fig. 11c: the paper's relative improvement per data fraction, then our learning curves, one panel per
    fraction (ConViT and DeiT in their colours, seed mean and ±1 sd band)."""
    t2 = load.load_paper("table2")
    p = t2.assign(family=t2["family"].map(family_label)).pivot_table(
        index="fraction", columns="family", values="top1"
    )
    gap = (p["ConViT"] - p["DeiT"]) / p["DeiT"] * 100
    curves = family_curves(res) if not res.empty else res.curves
    fractions = sorted(curves["fraction"].dropna().unique()) if not curves.empty else []
    ncols = 3
    nrows = 1 + (len(fractions) + 1) // ncols if fractions else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(14, 3.6 * nrows), squeeze=False)
    ax = axes[0, 0]
    sns.barplot(x=[f"{f:g}" for f in gap.index], y=gap.values, color="0.55", ax=ax)
    ax.set_xlabel("data fraction f (share of each class kept)")
    ax.set_ylabel(GAIN_LABEL)
    ax.set_title("paper (Table 2, ImageNet-1k)", fontsize=11)
    panels = [a for a in axes.flat][1:]
    if not fractions:
        ours_panel(panels[0], lambda a: require(curves, "learning curves"), res)
    for f, ax in zip(fractions, panels, strict=False):
        c = curves[curves["fraction"] == f]
        curves_panel(ax, c, "family", hue_order=hue_order(c["family"]), palette=PALETTE, markersize=4)
        ax.legend(title=None, loc="lower right", framealpha=0.9)
        ax.set_title(f"ours, f={f:g}: {scale_title(res, c)}", fontsize=10)
    for ax in panels[max(len(fractions), 1) :]:
        ax.set_visible(False)
    fig.suptitle("Fig. 11c: training on a fraction f of the data (same number of steps)")
    fig.tight_layout()
    return fig


def _ablation_runs(res: load.SuiteResults) -> pd.DataFrame:
    runs = res.runs.assign(row=res.runs["row"] if "row" in res.runs else res.runs["variant"])
    return runs[runs["row"].notna()].assign(row=lambda d: d["row"].astype(str))


def _row_labels() -> dict[str, str]:
    t3 = load.load_paper("table3")
    return dict(zip(t3["row"].astype(str), t3["label"].astype(str), strict=False))


def row_palette(rows: Iterable[str]) -> dict[str, str]:
    """Table 3 rows: a (the ConViT) and e (the DeiT) in their family colours, the others elsewhere."""
    others = iter(OTHER_COLORS)
    return {
        r: FAMILY_COLOR["convit"] if r == "a" else FAMILY_COLOR["deit"] if r == "e" else next(others)
        for r in sorted(set(rows))
    }


def table3_ablations(res: load.SuiteResults) -> plt.Figure:
    """Table 3: top-1 of each ablation row at f = 1 and f = 0.1 (rows named by what they change)."""
    t3 = load.load_paper("table3")
    labels = _row_labels()
    rows = sorted(labels)
    ticks = [f"{r}\n{labels[r]}" for r in rows]
    fpal = fraction_palette(t3["fraction"])
    forder = sorted(fpal, key=lambda s: -float(s[2:]))

    def bars(ax: plt.Axes, df: pd.DataFrame, errorbar: str | None) -> None:
        df = df.assign(data=df["fraction"].map(fraction_text), row=pd.Categorical(df["row"], rows))
        sns.barplot(
            data=df,
            x="row",
            y="top1",
            hue="data",
            hue_order=[h for h in forder if h in set(df["data"])],
            palette=fpal,
            errorbar=errorbar,
            order=rows,
            ax=ax,
        )
        ax.set_xticks(range(len(rows)), ticks, fontsize=7)
        ax.set_xlabel("Table 3 row (a = ConViT, e = DeiT)")
        ax.set_ylabel(TOP1_LABEL)
        legend_outside(ax, "data used")

    def draw_paper(ax: plt.Axes) -> None:
        bars(ax, t3, None)
        ax.set_ylim(40, 85)

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        r = require(_ablation_runs(res).dropna(subset=["top1"]), "ablation runs")
        r = r[r["row"].isin(rows)]
        bars(ax, r, "sd")
        sns.stripplot(
            data=r.assign(data=r["fraction"].map(fraction_text)),
            x="row",
            y="top1",
            hue="data",
            hue_order=[h for h in forder if h in set(r["fraction"].map(fraction_text))],
            order=rows,
            dodge=True,
            color="k",
            palette=["k"] * 2,
            size=3,
            legend=False,
            ax=ax,
        )
        # zoom on the spread between rows (the paper panel is zoomed too): a zero baseline would hide it
        ax.set_ylim(max(0, r["top1"].min() - 5), r["top1"].max() + 3)
        ax.set_xlabel("Table 3 row; bar: seed mean, line: ±1 sd, dots: seeds")
        return r

    return paper_and_ours(draw_paper, draw_ours, res, "Table 3: ablations of ConViT-S+", figsize=(15, 4.6))


def fig12_right_ablation_curves(res: load.SuiteResults) -> plt.Figure:
    """Fig. 12 right: learning curves of the Table 3 rows, one panel per data fraction (the paper gives
    curves only; its final values are Table 3)."""
    runs = _ablation_runs(res) if not res.empty else res.runs.iloc[0:0].assign(row=pd.Series(dtype=str))
    c = res.curves.dropna(subset=["val_top1"])
    c = c[c["run"].isin(set(runs["run"]))].merge(
        runs[["run", "row"]], on="run", how="left", suffixes=("_orig", "")
    )
    fractions = sorted(c["fraction"].dropna().unique(), reverse=True) if not c.empty else [None]
    fig, axes = plt.subplots(1, len(fractions), figsize=(6.5 * len(fractions) + 1.5, 4.2), squeeze=False)
    labels = _row_labels()
    pal = row_palette(c["row"]) if not c.empty else {}
    for f, ax in zip(fractions, axes[0], strict=True):

        def draw(ax: plt.Axes, f: float | None = f) -> pd.DataFrame:
            d = require(c if f is None else c[c["fraction"] == f], "ablation learning curves")
            d = d.assign(row_label=d["row"].map(lambda r: f"{r}: {labels.get(r, r)}"))
            order = sorted(d["row_label"].unique())
            curves_panel(  # row a is the ConViT, row e the DeiT: family markers
                ax,
                d,
                "row_label",
                hue_order=order,
                palette={k: pal[k.split(":")[0]] for k in order},
                errorbar=None,
                markersize=3,
                ylabel=VAL_TOP1_LABEL + " (seed mean)",
            )
            legend_outside(ax, "Table 3 row", fontsize=8)
            return d

        ours_panel(ax, draw, res, "ours" if f is None else f"ours, f={f:g}")
    fig.suptitle("Fig. 12 right: ablation learning curves (paper: curves only; final values in Table 3)")
    fig.tight_layout()
    return fig
