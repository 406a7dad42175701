"""Plot helpers shared by the notebooks: paper-beside-ours panels, saving, and "not yet run" placeholders.

Why a module: every notebook must put the paper and our runs side by side, label the scale, and still draw
something sensible when a suite has no results. Doing that once here keeps the notebooks to load -> reshape ->
plot, and lets the test suite exercise the same code the figures use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from analysis import load

FIGURES = Path(__file__).resolve().parent / "figures"


def figures_dir() -> Path:
    """``$CONVIT_FIGURES`` if set (tests point it at a temporary folder), else ``analysis/figures``."""
    env = os.environ.get("CONVIT_FIGURES")
    return Path(env) if env else FIGURES


PALETTE = {
    "convit": "tab:red",
    "deit": "tab:blue",
    "psa": "tab:green",
    "other": "tab:gray",
    "ConViT": "tab:red",
    "DeiT": "tab:blue",
}


def setup() -> None:
    """One seaborn theme for every figure so the notebooks look alike."""
    sns.set_theme(style="whitegrid", context="notebook")


def save(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``NAME.png`` in :func:`figures_dir` (created on demand), close it, return the path."""
    folder = figures_dir()
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


def paper_and_ours(
    draw_paper: Callable[[plt.Axes], None],
    draw_ours: Callable[[plt.Axes], None],
    res: load.SuiteResults,
    title: str,
    figsize: tuple[float, float] = (11, 4),
) -> plt.Figure:
    """Two panels: the paper's values (left) and ours (right, titled with the scale, or "not yet run")."""
    fig, (left, right) = plt.subplots(1, 2, figsize=figsize)
    draw_paper(left)
    left.set_title("paper")
    if res.empty:
        placeholder(right, f"{res.suite}: not yet run")
        right.set_title("ours: not yet run")
    else:
        try:
            draw_ours(right)
        except NoData as e:
            placeholder(right, f"{res.suite} @ {res.scale}: {e}")
        right.set_title(f"ours ({res.scale} scale, {res.n_seeds} seed(s) max)")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class NoData(Exception):  # noqa: N818 - a signal for paper_and_ours
    """A draw function found the suite ran but not the runs this figure needs."""


def require(df: pd.DataFrame, what: str) -> pd.DataFrame:
    """Raise :class:`NoData` (-> a labelled placeholder panel) when ``df`` is empty."""
    if df.empty:
        raise NoData(f"no {what}")
    return df


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
