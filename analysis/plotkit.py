"""The plotting vocabulary every figure shares: families, colours, labels, titles, panels.

Why a module: every figure must put the paper and our runs side by side, name the families, colour them and
label the axes the same way in every panel, say the scale and the seeds behind each point, and still draw
something sensible when a suite has no results. Doing that once here keeps each figure function (the
``analysis/plots_<artefact>.py`` modules) to its data and layout, and keeps the notebooks to load -> show.

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
from matplotlib.ticker import MaxNLocator

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


def curves_panel(
    ax: plt.Axes,
    data: pd.DataFrame,
    hue: str,
    *,
    hue_order: list,
    palette: dict,
    errorbar: str | None = "sd",
    markersize: float | None = None,
    ylabel: str = VAL_TOP1_LABEL,
) -> None:
    """One panel of learning curves (validation top-1 over epochs), one line per ``hue`` value, drawn as every
    learning-curve panel is: markers, family markers, whole-number epochs, labelled axes (no legend: each
    figure places its own)."""
    sizes = {} if markersize is None else {"markersize": markersize}
    sns.lineplot(
        data=data,
        x="epoch",
        y="val_top1",
        hue=hue,
        hue_order=hue_order,
        palette=palette,
        errorbar=errorbar,
        marker="o",
        ax=ax,
        **sizes,
    )
    family_markers(ax)
    integer_ticks(ax)
    ax.set_xlabel(EPOCH_LABEL)
    ax.set_ylabel(ylabel)


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


def family_runs(res: load.SuiteResults, families: tuple[str, ...] = ("convit", "deit")) -> pd.DataFrame:
    return with_family_labels(res.runs[res.runs["family"].isin(families)])


def family_curves(res: load.SuiteResults, families: tuple[str, ...] = ("convit", "deit")) -> pd.DataFrame:
    c = res.curves.dropna(subset=["val_top1"])
    return with_family_labels(c[c["family"].isin(families)])
