"""Plot helpers and the figures themselves, shared by the notebooks and the report.

Why a module: every figure must put the paper and our runs side by side, name the families, colour them and
label the axes the same way in every panel, say the scale and the seeds behind each point, and still draw
something sensible when a suite has no results. Doing that once here keeps the notebooks to load -> show,
lets ``python -m analysis.report`` draw the very figures it embeds from the results it judges, and lets the
tests inspect the figure objects the notebooks save.

One vocabulary for every figure:

* families: :data:`FAMILY_ORDER`, :data:`FAMILY_NAME` (display names), :data:`FAMILY_COLOR` (their colours);
  :func:`family_label` maps any spelling of the data (``convit``, ``ConViT-S``, ``deit``) to the display name,
  and :data:`PALETTE` / :data:`HUE_ORDER` are what seaborn's ``palette`` / ``hue_order`` take;
* axis labels: the ``*_LABEL`` constants (each with its unit);
* titles: :func:`scale_title` (the scale, the data and the seeds per point, counted from the runs drawn).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import to_rgb
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

from analysis import load

FIGURES = Path(__file__).resolve().parent / "figures"


def figures_dir() -> Path:
    """``$CONVIT_FIGURES`` if set (tests point it at a temporary folder), else ``analysis/figures``."""
    env = os.environ.get("CONVIT_FIGURES")
    return Path(env) if env else FIGURES


# --- one vocabulary: families, colours, axis labels ----------------------------------------------------

#: families in the order every legend lists them
FAMILY_ORDER: tuple[str, ...] = ("convit", "deit", "psa", "other")
#: how a family is written in every legend, tick and title
FAMILY_NAME: dict[str, str] = {"convit": "ConViT", "deit": "DeiT", "psa": "PSA (conv init)", "other": "other"}
#: one colour per family, in every panel and notebook
FAMILY_COLOR: dict[str, str] = {"convit": "tab:red", "deit": "tab:blue", "psa": "tab:green", "other": "0.45"}
#: seaborn ``palette`` / ``hue_order`` for a ``family`` column written with :func:`family_label`
PALETTE: dict[str, str] = {FAMILY_NAME[f]: FAMILY_COLOR[f] for f in FAMILY_ORDER}
HUE_ORDER: list[str] = [FAMILY_NAME[f] for f in FAMILY_ORDER]
#: colours for series that are neither ConViT nor DeiT (Fig. 2b's other architectures, ablation rows):
#: never red or blue, so nothing else reads as one of the two families
OTHER_COLORS: tuple[str, ...] = (
    "tab:purple",
    "tab:brown",
    "tab:olive",
    "tab:cyan",
    "tab:pink",
    "0.3",
    "gold",
)
#: one marker per family, largest first drawn: where two families share a point, both stay visible
FAMILY_MARKER: dict[str, tuple[str, float]] = {"convit": ("o", 10.0), "deit": ("s", 6.0), "psa": ("^", 7.0)}
#: test-time masks (Tables 5 and 6)
MASK_COLOR: dict[str, str] = {"none": "0.35", "content": "tab:purple", "position": "tab:orange"}

TOP1_LABEL = "top-1 accuracy (%)"
VAL_TOP1_LABEL = "validation top-1 (%)"
EPOCH_LABEL = "epoch"
FRACTION_LABEL = "training images used (% of each class)"
PARAMS_LABEL = "parameters (millions)"
GAIN_LABEL = "ConViT gain over DeiT (% of DeiT top-1)"
GAIN_BARS_LABEL = "bars: gain over DeiT (%)"
SIGMA_LABEL = "gating σ(λ) (1 = positional)"
NONLOCALITY_LABEL = "nonlocality (patches)"
LAYER_LABEL = "layer (1 = first)"
GPSA_LAYERS_LABEL = "GPSA layers (the first k blocks)"
ALPHA_LABEL = "locality strength α"
MASKED_LABEL = "GPSA layers masked at test time (the first k)"


def family_label(name: object) -> str:
    """The display name of a family, from any spelling the data use (``convit``, ``ConViT-S``, ``DeiT``)."""
    s = str(name).strip().lower()
    for fam in ("psa", "convit", "deit"):
        if s.startswith(fam) or (fam == "psa" and "psa" in s):
            return FAMILY_NAME[fam]
    return str(name) if s not in FAMILY_NAME else FAMILY_NAME[s]


def with_family_labels(df: pd.DataFrame, column: str = "family") -> pd.DataFrame:
    """``df`` with ``column`` rewritten as display names (a copy)."""
    return df.assign(**{column: df[column].map(family_label)})


def hue_order(values: Iterable[object]) -> list[str]:
    """The families present in ``values`` (display names), in :data:`FAMILY_ORDER`; others follow, sorted."""
    present = {family_label(v) for v in values}
    return [h for h in HUE_ORDER if h in present] + sorted(present - set(HUE_ORDER))


def series_palette(names: Iterable[str]) -> dict[str, str]:
    """Colours for paper series (Fig. 2b): ConViT and DeiT in their family colours, the rest from
    :data:`OTHER_COLORS`."""
    out, others = {}, iter(OTHER_COLORS * 3)
    for n in names:
        fam = family_label(n)
        out[n] = PALETTE[fam] if fam in ("ConViT", "DeiT") else next(others)
    return out


def fraction_palette(fractions: Iterable[float]) -> dict[str, tuple[float, float, float]]:
    """One colour per data fraction (keys ``f=0.1``...), dark = little data; no yellow end that vanishes on
    white, and neither family colour."""
    fs = sorted({float(f) for f in fractions})
    colors = sns.color_palette("crest", max(len(fs), 2))
    return {fraction_text(f): colors[i] for i, f in enumerate(fs)}


def fraction_text(f: float) -> str:
    return f"f={float(f):g}"


def setup() -> None:
    """One seaborn theme for every figure so the notebooks look alike."""
    sns.set_theme(style="whitegrid", context="notebook")


def save(fig: plt.Figure, name: str, folder: Path | None = None) -> Path:
    """Save ``fig`` as ``NAME.png`` in ``folder`` (default :func:`figures_dir`, created on demand)."""
    folder = Path(folder) if folder is not None else figures_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def placeholder(ax: plt.Axes, message: str) -> None:
    """Mark a panel whose data do not exist yet, instead of leaving it silently blank."""
    ax.text(
        0.5,
        0.5,
        message,
        ha="center",
        va="center",
        transform=ax.transAxes,
        fontsize=11,
        color="0.35",
        wrap=True,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def legend_outside(ax: plt.Axes, title: str | None = None, **kw: object) -> None:
    """The axes' legend to the right of the panel, where it covers no data."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    ax.legend(
        handles,
        labels,
        title=title,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0,
        frameon=False,
        **kw,
    )


def family_markers(ax: plt.Axes) -> None:
    """Give every line drawn in a family colour that family's marker and size (:data:`FAMILY_MARKER`), so a
    DeiT square on the same point as a ConViT circle does not hide it; call before making the legend."""
    by_color = {to_rgb(FAMILY_COLOR[f]): m for f, m in FAMILY_MARKER.items()}
    for line in ax.get_lines():
        if line.get_marker() in (None, "None", "", " "):
            continue
        m = by_color.get(to_rgb(line.get_color()))
        if m is not None:
            line.set_marker(m[0])
            line.set_markersize(m[1])
            line.set_zorder(2 + (10.0 - m[1]) / 10)  # the smaller marker on top


def legend_below(ax: plt.Axes) -> None:
    """The axes' legend in one row under its x label (for panels whose right side holds a second axis)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        drop = 0.2 + 0.08 * ax.get_xlabel().count("\n")
        ax.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.5, -drop), ncol=len(handles), frameon=False
        )


def integer_ticks(ax: plt.Axes, axis: str = "x") -> None:
    """Whole-number ticks (epochs, layers): no "1.5 epochs", also when every point sits at one value."""
    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))
    lo, hi = ax.get_xlim() if axis == "x" else ax.get_ylim()
    if hi - lo < 1:  # one value only (one epoch): whole numbers around it, not 0.95 ... 1.05
        mid = round((lo + hi) / 2)
        (ax.set_xlim if axis == "x" else ax.set_ylim)(mid - 1, mid + 1)


# --- titles: the scale and the seeds ---------------------------------------------------------------------


def _config_keys(runs: pd.DataFrame) -> list[str]:
    keys = [c for c in runs.columns if c not in load.RUN_COLUMNS or c in ("model", "variant", "fraction")]
    return [c for c in keys if c not in ("seed", "status", "family")]


def seeds_text(runs: pd.DataFrame) -> str:
    """Seeds per configuration among ``runs`` (a row per run): "2 seeds per point", "1-2 seeds per point"."""
    if runs.empty:
        return "no runs"
    n = runs.groupby(_config_keys(runs), dropna=False)["seed"].nunique()
    lo, hi = int(n.min()), int(n.max())
    count = f"{hi}" if lo == hi else f"{lo}-{hi}"
    return f"{count} seed{'s' if hi > 1 else ''} per point"


def scale_title(res: load.SuiteResults, drawn: pd.DataFrame | None = None) -> str:
    """ "cpu scale (cifar10, 32 px), 2 seeds per point": the scale and data of ``res``, and the seeds behind
    the runs ``drawn`` (any frame with a ``run`` column; default all of ``res``'s runs)."""
    if res.empty:
        return "not yet run"
    runs = res.runs
    if drawn is not None and "run" in drawn.columns:
        runs = runs[runs["run"].isin(set(drawn["run"].astype(str)))]
    data = ", ".join(sorted(map(str, runs["dataset"].dropna().unique()))) or "?"
    sizes = "/".join(f"{int(s)}" for s in sorted(runs["img_size"].dropna().unique()))
    return f"{res.scale} scale ({data}, {sizes} px), {seeds_text(runs)}"


# --- panels ----------------------------------------------------------------------------------------------


class NoData(Exception):  # noqa: N818 - a signal for paper_and_ours
    """A draw function found the suite ran but not the runs this figure needs."""


def require(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Raise :class:`NoData` (-> a labelled placeholder panel) when ``df`` is empty."""
    if df.empty:
        raise NoData(f"no {what}")
    return df


def ours_panel(
    ax: plt.Axes,
    draw_ours: Callable[[plt.Axes], pd.DataFrame | None],
    res: load.SuiteResults,
    prefix: str = "ours",
) -> None:
    """Draw our panel, or a labelled placeholder, and title it with the scale and the seeds of what it drew
    (``draw_ours`` returns the frame it plotted)."""
    if res.empty:
        placeholder(ax, f"{res.suite}: not yet run")
        ax.set_title(f"{prefix}: not yet run")
        return
    try:
        drawn = draw_ours(ax)
    except NoData as e:
        placeholder(ax, f"{res.suite} @ {res.scale}: {e}")
        ax.set_title(f"{prefix}: {res.scale} scale")
        return
    ax.set_title(f"{prefix}: {scale_title(res, drawn)}", fontsize=11)


def paper_and_ours(
    draw_paper: Callable[[plt.Axes], None],
    draw_ours: Callable[[plt.Axes], pd.DataFrame | None],
    res: load.SuiteResults,
    title: str,
    figsize: tuple[float, float] = (13, 4.3),
    paper_title: str = "paper (ImageNet-1k, 224 px)",
) -> plt.Figure:
    """Two panels: the paper's values (left) and ours (right, titled with the scale and the seeds per point,
    or "not yet run")."""
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    draw_paper(left)
    left.set_title(paper_title, fontsize=11)
    ours_panel(right, draw_ours, res)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def side_table(paper: pd.DataFrame, ours: pd.DataFrame, on: list[str], value: str = "top1") -> pd.DataFrame:
    """Paper and ours in one table: ``on`` keys, ``paper``, ``ours`` (seed mean), ``std``, ``seeds``.

    Rows present only in the paper keep NaN for ours, so a missing run is visible, not dropped.
    """
    p = paper[[*on, value]].rename(columns={value: "paper"})
    if ours.empty:
        return p.assign(ours=float("nan"), std=float("nan"), seeds=0)
    s = load.seed_summary(ours, on, value).rename(columns={"mean": "ours", "n": "seeds"})
    return p.merge(s, on=on, how="outer")


def nonlocality_frame(res: load.SuiteResults) -> pd.DataFrame:
    """Head-mean nonlocality per run, epoch and layer (layers numbered from 1, as in the paper)."""
    loc = res.locality.dropna(subset=["nonlocality"])
    if loc.empty:
        return loc
    keys = [c for c in ("run", "family", "model", "epoch", "layer") if c in loc.columns]
    out = loc.groupby(keys, dropna=False)["nonlocality"].mean().reset_index()
    out["layer"] = out["layer"].astype(int) + 1
    return out


def sigma_frame(res: load.SuiteResults) -> pd.DataFrame:
    """Gate sigma per run, epoch, GPSA layer and head (layers and heads numbered from 1)."""
    loc = res.locality.dropna(subset=["gate_sigma"])
    if loc.empty:
        return loc
    out = loc.copy()
    out["layer"] = out["layer"].astype(int) + 1
    out["head"] = out["head"].astype(int) + 1
    return out


def with_mask(runs: pd.DataFrame) -> pd.DataFrame:
    """Mask kind (``none``, ``pos_embed``, ``content``, ``position``) from a ``mask`` tag or the variant
    (``convit_tiny-nomask``, ``...-mask_content-k3``); evaluation runs only when the suite has them."""
    if "task" in runs and (runs["task"] == "eval").any():
        runs = runs[runs["task"] == "eval"]
    v = (runs["mask"] if "mask" in runs else runs["variant"]).astype(str).str.lower()
    kind = v.str.extract(r"(pos_embed|content|position)", expand=False)
    return runs.assign(mask=kind.where(kind.notna(), np.where(v.str.contains("no"), "none", None)))


def _family_runs(res: load.SuiteResults, families: tuple[str, ...] = ("convit", "deit")) -> pd.DataFrame:
    return with_family_labels(res.runs[res.runs["family"].isin(families)])


def _family_curves(res: load.SuiteResults, families: tuple[str, ...] = ("convit", "deit")) -> pd.DataFrame:
    c = res.curves.dropna(subset=["val_top1"])
    return with_family_labels(c[c["family"].isin(families)])


# --- the figures -----------------------------------------------------------------------------------------


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
        runs = require(_family_runs(res), "ConViT/DeiT runs").assign(pct=lambda d: d["fraction"] * 100)
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
    curves = _family_curves(res) if not res.empty else res.curves
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
        sns.lineplot(
            data=c,
            x="epoch",
            y="val_top1",
            hue="family",
            hue_order=hue_order(c["family"]),
            palette=PALETTE,
            errorbar="sd",
            marker="o",
            markersize=4,
            ax=ax,
        )
        family_markers(ax)
        integer_ticks(ax)
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(VAL_TOP1_LABEL)
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
            sns.lineplot(
                data=d,
                x="epoch",
                y="val_top1",
                hue="row_label",
                hue_order=order,
                palette={k: pal[k.split(":")[0]] for k in order},
                errorbar=None,
                marker="o",
                markersize=3,
                ax=ax,
            )
            family_markers(ax)  # row a is the ConViT, row e the DeiT
            integer_ticks(ax)
            ax.set_xlabel(EPOCH_LABEL)
            ax.set_ylabel(VAL_TOP1_LABEL + " (seed mean)")
            legend_outside(ax, "Table 3 row", fontsize=8)
            return d

        ours_panel(ax, draw, res, "ours" if f is None else f"ours, f={f:g}")
    fig.suptitle("Fig. 12 right: ablation learning curves (paper: curves only; final values in Table 3)")
    fig.tight_layout()
    return fig


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
        sns.lineplot(
            data=c,
            x="epoch",
            y="val_top1",
            hue="gpsa",
            hue_order=layers,
            palette=dict(zip(layers, colors, strict=False)),
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        integer_ticks(ax)
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(VAL_TOP1_LABEL)
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
        placeholder(ax, f"{res.suite}: gating probes not yet run (paper: curves only)")
        fig.suptitle(f"Figs. 6 / 14: gating σ(λ) ({scale_title(res)})")
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
        runs = require(_family_runs(res), "ConViT/DeiT runs")
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
        c = require(_family_curves(res, ("psa", "deit", "convit")), "learning curves")
        sns.lineplot(
            data=c,
            x="epoch",
            y="val_top1",
            hue="family",
            hue_order=hue_order(c["family"]),
            palette=PALETTE,
            marker="o",
            errorbar="sd",
            ax=ax,
        )
        family_markers(ax)
        integer_ticks(ax)
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(VAL_TOP1_LABEL)
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
        c = require(_family_curves(res), "learning curves")
        c = c.assign(label=c["family"] + " " + c["model"].astype(str))
        order = sorted(c["label"].unique(), key=lambda s: (HUE_ORDER.index(family_label(s)), s))
        pal = {lab: PALETTE[family_label(lab)] for lab in order}
        sns.lineplot(
            data=c,
            x="epoch",
            y="val_top1",
            hue="label",
            hue_order=order,
            palette=pal,
            marker="o",
            errorbar="sd",
            ax=ax,
        )
        family_markers(ax)
        integer_ticks(ax)
        ax.set_xlabel(EPOCH_LABEL)
        ax.set_ylabel(VAL_TOP1_LABEL)
        legend_outside(ax)
        return c

    return paper_and_ours(
        draw_paper, draw_ours, res, "Fig. 11a: CIFAR-100", paper_title="paper (CIFAR-100, SM C)"
    )


# --- which figure shows which suite's claims -------------------------------------------------------------

#: figure name -> (the suite whose claims it shows, the function drawing it); the report embeds them per
#: claim group and draws them from the results it judges
FIGURES_OF: dict[str, tuple[str, Callable[[load.SuiteResults], plt.Figure]]] = {
    "fig2b_params_vs_top1": ("main_table", fig2b_params_vs_top1),
    "fig2a_sample_efficiency": ("sample_efficiency", fig2a_sample_efficiency),
    "fig11c_sample_efficiency_curves": ("sample_efficiency", fig11c_sample_efficiency_curves),
    "table3_ablations": ("ablations", table3_ablations),
    "fig12_right_ablation_curves": ("ablations", fig12_right_ablation_curves),
    "fig8_left_locality_sweep": ("ablations", fig8_left_locality_sweep),
    "fig12_left_gpsa_layers_curves": ("ablations", fig12_left_gpsa_layers_curves),
    "fig5_fig13_nonlocality": ("locality", fig5_fig13_nonlocality),
    "fig6_fig14_gate_sigma": ("locality", fig6_fig14_gate_sigma),
    "gate_sigma_final": ("locality", gate_sigma_final),
    "table6_masking": ("masking", table6_masking),
    "fig9_psa_vs_deit": ("psa", fig9_psa_vs_deit),
    "fig11a_cifar100": ("cifar100", fig11a_cifar100),
}


def figures_for(suite: str) -> list[str]:
    """Names of the figures that show ``suite``'s claims, in drawing order."""
    return [name for name, (s, _) in FIGURES_OF.items() if s == suite]


def suite_results(suite: str, results_dir: str | Path | None = None) -> load.SuiteResults:
    """The results a suite's figures draw (locality: the first suite with probes, as its claims use)."""
    if suite == "locality":
        return load.load_locality_source(results_dir=results_dir)
    return load.load_suite(suite, results_dir=results_dir)


def draw(name: str, results_dir: str | Path | None = None) -> plt.Figure:
    """Draw figure ``name`` (a key of :data:`FIGURES_OF`) from the results under ``results_dir``."""
    suite, fn = FIGURES_OF[name]
    return fn(suite_results(suite, results_dir))


def draw_all(results_dir: str | Path | None = None, folder: Path | None = None) -> dict[str, Path]:
    """Draw and save every figure of :data:`FIGURES_OF` into ``folder``; name -> saved path."""
    setup()
    out = {}
    for name in FIGURES_OF:
        fig = draw(name, results_dir)
        out[name] = save(fig, name, folder)
        plt.close(fig)
    return out
