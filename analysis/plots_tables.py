"""Figures of Table 1 (Fig. 2b), Table 6 (masking), Fig. 9 (PSA) and Fig. 11a (CIFAR-100).

Drawn with the shared vocabulary of :mod:`analysis.plotkit`; :mod:`analysis.plots` is the registry the
notebooks and the report call.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from analysis import load
from analysis.plotkit import (
    HUE_ORDER,
    MASK_COLOR,
    MASKED_LABEL,
    PALETTE,
    PARAMS_LABEL,
    TOP1_LABEL,
    curves_panel,
    family_curves,
    family_label,
    family_markers,
    family_runs,
    hue_order,
    integer_ticks,
    legend_outside,
    paper_and_ours,
    placeholder,
    require,
    series_palette,
    with_mask,
)


def fig2b_params_vs_top1(res: load.SuiteResults) -> plt.Figure:
    """Fig. 2b: top-1 against parameters, ConViT and DeiT in their colours (other architectures in others)."""
    f2b = load.load_paper("fig2").query("figure == 'fig2b'").rename(columns={"x": "params_m", "y": "top1"})

    def params_axis(ax: plt.Axes, x: pd.Series) -> None:
        if x.max() / max(x.min(), 1e-9) > 3:
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%.4g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(PARAMS_LABEL)
        ax.set_ylabel(TOP1_LABEL)

    def draw_paper(ax: plt.Axes) -> None:
        series = list(dict.fromkeys(f2b["series"]))
        order = sorted(series, key=lambda s: (family_label(s) not in ("ConViT", "DeiT"), family_label(s), s))
        sns.lineplot(
            data=f2b,
            x="params_m",
            y="top1",
            hue="series",
            hue_order=order,
            palette=series_palette(series),
            marker="o",
            ax=ax,
        )
        family_markers(ax)
        params_axis(ax, f2b["params_m"])
        legend_outside(ax, None, fontsize=9)

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        runs = require(family_runs(res), "ConViT/DeiT runs")
        runs = runs.assign(params_m=runs["params"] / 1e6)
        sns.lineplot(
            data=runs.sort_values("params_m"),
            x="params_m",
            y="top1",
            hue="family",
            hue_order=hue_order(runs["family"]),
            palette=PALETTE,
            marker="o",
            errorbar="sd",
            err_style="bars",
            ax=ax,
        )
        family_markers(ax)
        for _, r in load.seed_summary(runs, ["family", "model", "params_m"]).iterrows():
            ax.annotate(
                str(r["model"]),
                (r["params_m"], r["mean"]),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
                color=PALETTE.get(r["family"], "k"),
            )
        params_axis(ax, runs["params_m"])
        ax.set_xlabel(PARAMS_LABEL + "; dot: seed mean, line: ±1 sd")
        legend_outside(ax, None)
        return runs

    return paper_and_ours(draw_paper, draw_ours, res, "Fig. 2b: parameter efficiency")


def table6_masking(res: load.SuiteResults) -> plt.Figure:
    """Table 6: top-1 when content or position attention is masked at test time in the first k GPSA layers;
    the unmasked model as a dashed reference."""
    t6 = load.load_paper("table6")

    def draw(ax: plt.Axes, df: pd.DataFrame, errorbar: str | None) -> None:
        masked = df[df["mask"].isin(["content", "position"])]
        sns.lineplot(
            data=masked,
            x="layers_masked",
            y="top1",
            hue="mask",
            hue_order=["content", "position"],
            palette=MASK_COLOR,
            marker="o",
            errorbar=errorbar,
            ax=ax,
        )
        none = df[df["mask"] == "none"]["top1"]
        if len(none):
            ax.axhline(none.mean(), color=MASK_COLOR["none"], ls="--", label="no mask")
        integer_ticks(ax)
        ax.set_xlabel(MASKED_LABEL)
        ax.set_ylabel(TOP1_LABEL)
        legend_outside(ax, "masked attention")

    def draw_paper(ax: plt.Axes) -> None:
        draw(ax, t6, None)
        ax.set_ylim(0, 80)

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        r = require(res.runs if "layers_masked" in res.runs else res.runs.iloc[0:0], "masking runs")
        r = with_mask(r)
        r = r[r["family"] == "convit"].assign(
            layers_masked=lambda d: pd.to_numeric(d["layers_masked"], errors="coerce")
        )
        r = require(r[r["mask"].isin(["content", "position", "none"])], "content/position masking runs")
        draw(ax, r, "sd")
        return r

    return paper_and_ours(
        draw_paper, draw_ours, res, "Table 6: ConViT-Ti, test-time masking in the first k GPSA layers"
    )


def fig9_psa_vs_deit(res: load.SuiteResults) -> plt.Figure:
    """Fig. 9: learning curves of PSA with convolutional init against DeiT (and ConViT)."""

    def draw_paper(ax: plt.Axes) -> None:
        placeholder(ax, "paper: curves only (PSA leads early,\nDeiT catches up and overtakes)")

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        c = require(family_curves(res, ("psa", "deit", "convit")), "learning curves")
        curves_panel(ax, c, "family", hue_order=hue_order(c["family"]), palette=PALETTE)
        legend_outside(ax)
        return c

    return paper_and_ours(draw_paper, draw_ours, res, "Fig. 9: PSA + convolutional init vs DeiT")


def fig11a_cifar100(res: load.SuiteResults) -> plt.Figure:
    """Fig. 11a: CIFAR-100 learning curves, ConViT and DeiT (the paper gives one final number)."""
    paper_c = load.load_paper("cifar100")

    def draw_paper(ax: plt.Axes) -> None:
        d = paper_c.assign(family=paper_c["model"].map(family_label))
        sns.barplot(data=d, x="model", y="top1", hue="family", palette=PALETTE, legend=False, ax=ax)
        ax.set_xlabel("model (the only number the paper gives)")
        ax.set_ylabel(TOP1_LABEL + ", final")

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        c = require(family_curves(res), "learning curves")
        c = c.assign(label=c["family"] + " " + c["model"].astype(str))
        order = sorted(c["label"].unique(), key=lambda s: (HUE_ORDER.index(family_label(s)), s))
        pal = {lab: PALETTE[family_label(lab)] for lab in order}
        curves_panel(ax, c, "label", hue_order=order, palette=pal)
        legend_outside(ax)
        return c

    return paper_and_ours(
        draw_paper, draw_ours, res, "Fig. 11a: CIFAR-100", paper_title="paper (CIFAR-100, SM C)"
    )
