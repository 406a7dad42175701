"""Figures of locality: the Fig. 8 / 12 left sweep, nonlocality (Figs. 5, 13), sigma(lambda) (Figs. 6, 14),
and the cpu scale's gating-budget measurement (how far sigma(lambda) moves with 1x and 2x the images).

Drawn with the shared vocabulary of :mod:`analysis.plotkit`; :mod:`analysis.plots` is the registry the
notebooks and the report call.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from analysis import gate, load
from analysis.plotkit import (
    ALPHA_LABEL,
    EPOCH_LABEL,
    FAMILY_COLOR,
    GPSA_LAYERS_LABEL,
    NONLOCALITY_LABEL,
    PALETTE,
    SIGMA_LABEL,
    TOP1_LABEL,
    curves_panel,
    family_label,
    hue_order,
    integer_ticks,
    legend_outside,
    nonlocality_frame,
    paper_and_ours,
    placeholder,
    require,
    scale_title,
    sigma_frame,
    with_family_labels,
)


def _sweep(res: load.SuiteResults) -> pd.DataFrame:
    if res.empty or not {"gpsa_layers", "locality_strength"} <= set(res.runs.columns):
        return res.runs.iloc[0:0]
    return res.runs[res.runs["gpsa_layers"].notna()]


def fig8_left_locality_sweep(res: load.SuiteResults) -> plt.Figure:
    """Fig. 8 left: top-1 over the grid of #GPSA layers x locality strength alpha."""

    def draw_paper(ax: plt.Axes) -> None:
        placeholder(ax, "paper: figure only (top-1 77-81 %,\nrises with α and with #GPSA layers)")

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        r = require(_sweep(res), "gpsa_layers x locality_strength grid")
        r = require(r.dropna(subset=["locality_strength"]), "gpsa_layers x locality_strength grid")
        s = load.seed_summary(r, ["gpsa_layers", "locality_strength"])
        grid = s.pivot_table(index="gpsa_layers", columns="locality_strength", values="mean")
        sns.heatmap(grid, annot=True, fmt=".1f", cmap="crest", cbar_kws={"label": TOP1_LABEL}, ax=ax)
        ax.set_xlabel(ALPHA_LABEL)
        ax.set_ylabel(GPSA_LAYERS_LABEL)
        ax.set_xticklabels([f"{float(t.get_text()):g}" for t in ax.get_xticklabels()])
        return r

    return paper_and_ours(
        draw_paper, draw_ours, res, "Fig. 8 left: top-1 vs locality strength and #GPSA layers"
    )


def fig12_left_gpsa_layers_curves(res: load.SuiteResults) -> plt.Figure:
    """Fig. 8 right / 12 left: learning curves by #GPSA layers at the default locality strength (alpha = 1;
    0 layers = no GPSA, no alpha)."""

    def draw_paper(ax: plt.Axes) -> None:
        placeholder(ax, "paper: figure only (more GPSA layers:\nhigher top-1 early in training)")

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        r = require(_sweep(res), "gpsa_layers x locality_strength sweep")
        alpha = pd.to_numeric(r["locality_strength"], errors="coerce")
        r = require(r[alpha.isna() | np.isclose(alpha.fillna(1.0), 1.0)], "sweep runs at α = 1")
        c = require(res.curves.dropna(subset=["val_top1"]), "sweep curves")
        c = c[c["run"].isin(set(r["run"]))].assign(gpsa=lambda d: d["gpsa_layers"].astype(int))
        c = require(c, "sweep curves")
        layers = sorted(c["gpsa"].unique())
        colors = sns.color_palette("crest", max(len(layers), 2))
        curves_panel(ax, c, "gpsa", hue_order=layers, palette=dict(zip(layers, colors, strict=False)))
        legend_outside(ax, "GPSA layers (α = 1)")
        return c

    return paper_and_ours(
        draw_paper, draw_ours, res, "Fig. 8 right / Fig. 12 left: learning curves by #GPSA layers"
    )


def fig5_fig13_nonlocality(res: load.SuiteResults) -> plt.Figure:
    """Figs. 5 / 13: nonlocality per layer over training, one panel per family (rows: model sizes)."""
    nl = nonlocality_frame(res)
    if nl.empty:
        fig, ax = plt.subplots(figsize=(9, 3))
        placeholder(ax, f"{res.suite}: locality probes not yet run (paper: curves only)")
        fig.suptitle(f"Figs. 5 / 13: nonlocality ({scale_title(res)})")
        return fig
    nl = with_family_labels(nl).assign(
        size=nl["model"].astype(str).str.replace(r"^(convit|deit)_", "", regex=True)
    )
    fams = hue_order(nl["family"])
    sizes = sorted(nl["size"].unique())
    layers = sorted(nl["layer"].unique())
    colors = dict(zip(layers, sns.color_palette("crest", max(len(layers), 2)), strict=False))
    fig, axes = plt.subplots(
        len(sizes), len(fams), figsize=(5 * len(fams) + 1.5, 3.4 * len(sizes)), squeeze=False, sharey=True
    )
    for i, size in enumerate(sizes):
        for j, fam in enumerate(fams):
            ax, d = axes[i, j], nl[(nl["size"] == size) & (nl["family"] == fam)]
            if d.empty:
                placeholder(ax, f"no {fam} {size} probes")
                continue
            sns.lineplot(
                data=d,
                x="epoch",
                y="nonlocality",
                hue="layer",
                hue_order=layers,
                palette=colors,
                errorbar=None,
                marker="o",
                markersize=4,
                ax=ax,
                legend=(j == len(fams) - 1),
            )
            integer_ticks(ax)
            ax.set_xlabel(EPOCH_LABEL)
            ax.set_ylabel(NONLOCALITY_LABEL if j == 0 else "")
            ax.set_title(f"{fam} ({size}), seed mean", color=PALETTE.get(fam, "k"), fontsize=11)
            if j == len(fams) - 1:
                legend_outside(ax, "layer")
    fig.suptitle(f"Figs. 5 / 13: nonlocality per layer; ours: {scale_title(res, nl)}")
    fig.tight_layout()
    return fig


def fig6_fig14_gate_sigma(res: load.SuiteResults) -> plt.Figure:
    """Figs. 6 / 14: sigma(lambda) of every head of every GPSA layer over training (ConViT), the layer mean
    as a thick grey line behind the heads."""
    sg = sigma_frame(res)
    if sg.empty:
        fig, ax = plt.subplots(figsize=(9, 3))
        if res.empty:
            placeholder(ax, f"{res.suite}: gating probes not yet run (paper: curves only)")
            fig.suptitle(f"Figs. 6 / 14: gating σ(λ) ({scale_title(res)})")
        else:  # runs exist, but none with GPSA probes yet (DeiT finished first, ConViT still training)
            placeholder(ax, f"{res.suite}: no finished ConViT run with gating probes yet (paper: curves)")
            fig.suptitle(f"Figs. 6 / 14: gating σ(λ); ours: {scale_title(res)}")
        return fig
    conv = sg[sg["family"] == "convit"] if (sg["family"] == "convit").any() else sg
    model = conv["model"].iloc[0]
    conv = conv[conv["model"] == model]
    layers = sorted(conv["layer"].unique())
    heads = sorted(conv["head"].unique())
    ncols = min(len(layers), 5)
    nrows = (len(layers) + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols + 1.5, 2.9 * nrows), squeeze=False, sharey=True)
    hcolors = dict(zip(heads, sns.color_palette("colorblind", len(heads)), strict=False))
    for ax, layer in zip(axes.flat, layers, strict=False):
        d = conv[conv["layer"] == layer]
        m = d.groupby("epoch")["gate_sigma"].mean()
        ax.plot(m.index, m.values, color="k", lw=4, alpha=0.25, zorder=1, label="layer mean")
        for h in heads:
            hh = d[d["head"] == h].groupby("epoch")["gate_sigma"].mean()
            ax.plot(
                hh.index, hh.values, color=hcolors[h], lw=1.3, marker="o", ms=3, zorder=2, label=f"head {h}"
            )
        ax.set_ylim(-0.02, 1.02)
        integer_ticks(ax)
        ax.set_title(f"GPSA layer {layer}", fontsize=10)
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(SIGMA_LABEL if ax in axes[:, 0] else "", fontsize=9)
    for ax in list(axes.flat)[len(layers) :]:
        ax.set_visible(False)
    legend_outside(axes.flat[len(layers) - 1], None, fontsize=8)
    fig.suptitle(
        f"Figs. 6 / 14: gating σ(λ) per head, {family_label(model)} {model}; "
        f"ours: {scale_title(res, conv)}, mean over seeds"
    )
    fig.tight_layout()
    return fig


def gate_sigma_final(res: load.SuiteResults) -> plt.Figure:
    """Final sigma(lambda) of every head per GPSA layer: the paper's ConViT (Figs. 7, 17) beside ours (the
    ConViT models probed, in the ConViT red; several models in shades of it)."""
    paper_sigma = load.load_paper("gate_sigma")
    sg = sigma_frame(res)
    red = FAMILY_COLOR["convit"]

    def draw_paper(ax: plt.Axes) -> None:
        d = paper_sigma.assign(source=paper_sigma["figure"].str.replace("fig", "Fig. "))
        sources = sorted(d["source"].unique())
        shades = [red, "darkred", "salmon"][: len(sources)]
        sns.stripplot(
            data=d,
            x="layer",
            y="gate_sigma",
            hue="source",
            hue_order=sources,
            palette=shades,
            dodge=True,
            ax=ax,
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("GPSA layer")
        ax.set_ylabel(SIGMA_LABEL)
        legend_outside(ax, "ConViT, paper")

    def draw_ours(ax: plt.Axes) -> pd.DataFrame:
        s = require(sg, "gating probes")
        last = s[s["epoch"] == s.groupby("run")["epoch"].transform("max")]
        models = sorted(last["model"].astype(str).unique())
        shades = [red] if len(models) == 1 else sns.color_palette("Reds_r", len(models) + 1)[: len(models)]
        sns.stripplot(
            data=last.assign(model=last["model"].astype(str)),
            x="layer",
            y="gate_sigma",
            hue="model",
            hue_order=models,
            palette=dict(zip(models, shades, strict=True)),
            dodge=len(models) > 1,
            ax=ax,
        )
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("GPSA layer")
        ax.set_ylabel(SIGMA_LABEL + ", last epoch")
        legend_outside(ax, "ConViT, ours")
        return last

    return paper_and_ours(
        draw_paper, draw_ours, res, "Final gating σ(λ) per head and GPSA layer (dots = heads)"
    )


def gating_budget(res: load.SuiteResults) -> plt.Figure:
    """Gating budget of the cpu scale: how far each GPSA head's sigma(lambda) moves from its first probe in
    ConViT-Ti at f = 1 with the scale's images (solid) and twice them (dashed); the competence gate asks
    some head to move by 0.1 (dotted lines). A measurement of the scale (``experiments/cpu_budget.py``), not
    of a suite."""
    g = load.load_budget_gating(res.results_dir)
    g = g[g["family"] == "convit"] if not g.empty else g
    if g.empty:
        fig, ax = plt.subplots(figsize=(9, 3))
        what = "not yet run" if res.empty else "not yet measured"  # "not yet run" is said of suites
        placeholder(ax, f"gating budget {what} (experiments/cpu_budget.py --images 2)")
        fig.suptitle("Gating budget (cpu scale); ours: " + what)
        return fig
    g = g.sort_values("epoch").copy()
    g["move"] = g["gate_sigma"] - g.groupby(["images", "layer", "head"])["gate_sigma"].transform("first")
    g["mimages"] = g["images_seen"] / 1e6
    layers = sorted(g["layer"].unique())
    heads = sorted(g["head"].unique())
    budgets = sorted(g["images"].unique())
    styles = dict(zip(budgets, ["-", "--", ":", "-."], strict=False))
    hcolors = dict(zip(heads, sns.color_palette("colorblind", len(heads)), strict=False))
    fig, axes = plt.subplots(1, len(layers), figsize=(3 * len(layers) + 1.5, 3.1), squeeze=False, sharey=True)
    lim = max(gate.SIGMA_MOVE * 1.25, float(g["move"].abs().max()) * 1.1)
    for ax, layer in zip(axes.flat, layers, strict=False):
        for k in budgets:
            for h in heads:
                d = g[(g["layer"] == layer) & (g["head"] == h) & (g["images"] == k)].sort_values("epoch")
                ax.plot(d["mimages"], d["move"], styles[k], color=hcolors[h], lw=1.3, marker="o", ms=2.5)
        for y in (-gate.SIGMA_MOVE, gate.SIGMA_MOVE):
            ax.axhline(y, color="0.3", ls=":", lw=1)
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_ylim(-lim, lim)
        ax.set_title(f"GPSA layer {layer}", fontsize=10)
        ax.set_xlabel("training images seen (millions)")
    axes[0, 0].set_ylabel("σ(λ) − σ(λ) at first probe", fontsize=9)
    handles = [plt.Line2D([], [], color=hcolors[h], lw=1.3, label=f"head {h}") for h in heads]
    handles += [plt.Line2D([], [], color="0.2", ls=styles[k], label=f"{k}x images") for k in budgets]
    handles.append(plt.Line2D([], [], color="0.3", ls=":", label=f"gate ±{gate.SIGMA_MOVE:g}"))
    axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    seen = {int(k): int(g[g["images"] == k]["epoch"].max()) for k in budgets}
    done = ", ".join(f"{k}x: {e} epoch(s) probed" for k, e in seen.items())
    fig.suptitle(f"Gating budget; ours: cpu scale, ConViT-Ti at f = 1, 1 seed per point (seed 0); {done}")
    fig.tight_layout()
    return fig
