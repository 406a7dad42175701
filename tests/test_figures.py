"""Tests for the figures (analysis/plots.py) as a reader sees them, and for the report's embedded figures.

Each figure is drawn by the same function the notebooks and ``python -m analysis.report`` call, from the
committed results and from the fixture, and its matplotlib objects are inspected: family names and colours
from the one palette in every panel, titles naming the scale and the seeds behind the points, axis labels
with units instead of column names, legends off the data, lines in front of bars.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from analysis import plots, report  # noqa: E402

FIXTURE = Path(__file__).parent / "data" / "results_fixture"
REPO = Path(__file__).resolve().parents[1]
SOURCES = {"committed": REPO / "results", "fixture": FIXTURE}


@pytest.fixture(scope="module")
def drawn() -> dict[tuple[str, str], plt.Figure]:
    """Every figure drawn once from each results tree (and drawn on a canvas, for display geometry)."""
    plots.setup()
    out = {}
    for source, rdir in SOURCES.items():
        for name in plots.FIGURES_OF:
            fig = plots.draw(name, rdir)
            fig.canvas.draw()
            out[(source, name)] = fig
    yield out
    plt.close("all")


pytestmark = pytest.mark.filterwarnings("ignore:More than 20 figures:RuntimeWarning")


def _legends(fig: plt.Figure) -> list[matplotlib.legend.Legend]:
    return [leg for ax in fig.axes if (leg := ax.get_legend()) is not None] + list(fig.legends)


def _handle_color(handle: object) -> tuple[float, float, float]:
    if hasattr(handle, "get_color") and not hasattr(handle, "get_facecolor"):
        return to_rgb(handle.get_color())
    if hasattr(handle, "get_facecolor"):
        fc = handle.get_facecolor()
        fc = fc[0] if len(fc) and hasattr(fc[0], "__len__") else fc
        return to_rgb(tuple(fc[:3]))
    return to_rgb(handle.get_color())


def _texts(fig: plt.Figure) -> list[str]:
    """Every piece of text a reader sees: titles, labels, ticks, legend entries, annotations."""
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        out += [t.get_text() for t in ax.texts]
    for leg in _legends(fig):
        out += [t.get_text() for t in leg.get_texts()] + [leg.get_title().get_text()]
    return [t for t in out if t]


def _is_placeholder(ax: plt.Axes) -> bool:
    return not len(ax.get_xticks()) and not len(ax.get_yticks())


@pytest.mark.parametrize("source", list(SOURCES))
def test_families_have_one_name_order_and_colour_in_every_panel(
    drawn: dict[tuple[str, str], plt.Figure], source: str
) -> None:
    """A legend entry naming a family is spelled as FAMILY_NAME spells it, in FAMILY_COLOR's colour, listed
    in FAMILY_ORDER (Fig. 2a's panels once said ConViT/DeiT in one order and colour, convit/deit in
    another)."""
    seen = set()
    for (src, name), fig in drawn.items():
        if src != source:
            continue
        for text in _texts(fig):
            for word in re.findall(r"\b(convit|deit|Convit|Deit|CONVIT|DEIT)\b(?!_)", text):
                pytest.fail(
                    f"{name}: family written {word!r} in {text!r}, not as plots.FAMILY_NAME writes it"
                )
        for leg in _legends(fig):
            families = []
            for handle, t in zip(leg.legend_handles, leg.get_texts(), strict=True):
                label = t.get_text()
                fam = plots.family_label(label)
                if fam not in plots.HUE_ORDER or not label.startswith(fam):
                    continue
                families.append(fam)
                key = next(f for f in plots.FAMILY_ORDER if plots.FAMILY_NAME[f] == fam)
                assert _handle_color(handle) == pytest.approx(to_rgb(plots.FAMILY_COLOR[key]), abs=0.02), (
                    f"{name}: legend entry {label!r} is not in the palette's {fam} colour"
                )
                seen.add(fam)
            order = [plots.HUE_ORDER.index(f) for f in dict.fromkeys(families)]
            assert order == sorted(order), f"{name}: families listed {families}, not in plots.FAMILY_ORDER"
        for ax in fig.axes:  # a marker per family, so a DeiT point on a ConViT point does not hide it
            for line in [x for x in ax.get_lines() if len(x.get_xydata()) and x.get_visible()]:
                for fam, (marker, size) in plots.FAMILY_MARKER.items():
                    if line.get_marker() not in ("None", None, "") and to_rgb(line.get_color()) == to_rgb(
                        plots.FAMILY_COLOR[fam]
                    ):
                        assert (line.get_marker(), line.get_markersize()) == (marker, size), name
    if source == "committed":
        assert {"ConViT", "DeiT"} <= seen


def test_family_label_maps_every_spelling() -> None:
    psa = "PSA (conv init)"
    spellings = [("convit", "ConViT"), ("ConViT-S", "ConViT"), ("deit", "DeiT"), ("DeiT-S", "DeiT"),
                 ("convit_psa", psa), ("psa", psa), ("other", "other")]  # fmt: skip
    for spelling, name in spellings:
        assert plots.family_label(spelling) == name
    assert plots.hue_order(["deit", "convit", "psa"]) == ["ConViT", "DeiT", "PSA (conv init)"]
    assert plots.series_palette(["DeiT", "ResNet", "ConViT"])["DeiT"] == plots.FAMILY_COLOR["deit"]
    assert plots.series_palette(["ResNet"])["ResNet"] not in (
        plots.FAMILY_COLOR["convit"],
        plots.FAMILY_COLOR["deit"],
    )


@pytest.mark.parametrize("source", list(SOURCES))
def test_our_panels_name_their_scale_and_seeds(drawn: dict[tuple[str, str], plt.Figure], source: str) -> None:
    """Every panel of ours that shows runs says the scale and the seeds per point in its title (or the
    figure's title); a suite without runs says "not yet run"."""
    for (src, name), fig in drawn.items():
        if src != source:
            continue
        suite = plots.FIGURES_OF[name][0]
        res = plots.suite_results(suite, SOURCES[source])
        titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and not _is_placeholder(ax)]
        titles += [fig._suptitle.get_text()] if fig._suptitle is not None else []
        if res.empty:
            assert any("not yet run" in t for t in _texts(fig)), f"{name}: {suite} has no runs, not said"
            continue
        ours = [t for t in titles if "ours" in t]
        assert ours or any(ax.get_title().startswith("ours") for ax in fig.axes), (
            f"{name}: which panel is ours?"
        )
        for t in ours:
            if res.empty or "not yet run" in t:
                assert res.empty or "not yet run" not in t, f"{name}: {t!r} but {suite} has runs"
                continue
            if f"{res.scale} scale" not in t:
                continue  # a placeholder panel ("... : no sweep runs") of a suite that ran other runs
            assert re.search(r"\d+(-\d+)? seeds? per point", t), f"{name}: {t!r} does not give the seeds"


def test_seeds_in_titles_are_counted_from_the_runs_drawn(tmp_path: Path) -> None:
    """The seed count comes from the data behind the panel, not the suite's maximum: drop seed 1 of one
    configuration and Fig. 2a says 1-2 seeds per point; the Fig. 8 grid of the committed cpu runs
    is one seed per cell although Table 3's rows have two."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "sample_efficiency", root / "sample_efficiency")
    fig = plots.draw("fig2a_sample_efficiency", root)
    assert "cpu scale" in fig.axes[1].get_title() and "2 seeds per point" in fig.axes[1].get_title()
    runs = pd.read_csv(root / "sample_efficiency" / "cpu.csv")
    drop = runs.index[(runs["seed"] == 1)][:1]
    runs.drop(index=drop).to_csv(root / "sample_efficiency" / "cpu.csv", index=False)
    fig = plots.draw("fig2a_sample_efficiency", root)
    assert "1-2 seeds per point" in fig.axes[1].get_title()
    plt.close("all")

    one = pd.DataFrame({"run": ["a", "b", "c"], "model": "m", "variant": ["x", "x", "y"], "fraction": 1.0,
                        "seed": [0, 1, 0]})  # fmt: skip
    assert plots.seeds_text(one) == "1-2 seeds per point"
    assert plots.seeds_text(one[one["variant"] == "y"]) == "1 seed per point"


@pytest.mark.parametrize("source", list(SOURCES))
def test_axes_are_labelled_with_units_not_column_names(
    drawn: dict[tuple[str, str], plt.Figure], source: str
) -> None:
    for (src, name), fig in drawn.items():
        if src != source:
            continue
        for ax in fig.axes:
            if not ax.get_visible() or _is_placeholder(ax) or ax.get_label() == "<colorbar>":
                continue
            for label in (ax.get_xlabel(), ax.get_ylabel()):
                assert not re.search(r"\w_\w", label), f"{name}: axis label {label!r} is a column name"
                if re.search(r"top-?1|accuracy|gain", label):
                    assert "%" in label, f"{name}: {label!r} has no unit"
            twins = [a for a in fig.axes if a.bbox.bounds == ax.bbox.bounds]  # twinx: one x label for both
            assert any(a.get_xlabel() for a in twins), f"{name}: an x axis without a label"


def _data_points(fig: plt.Figure) -> list[tuple[float, float]]:
    """Display coordinates of every plotted point (lines' vertices, scatter dots) of the figure."""
    pts = []
    for ax in fig.axes:
        for line in ax.get_lines():
            xy = line.get_xydata()
            if len(xy) and line.get_visible() and line.get_label() != "_nolegend_":
                d = line.get_transform().transform(xy)
                d = d[np.isfinite(d).all(axis=1)]
                # the segments too (a legend across a line hides it even between markers)
                for a, b in zip(d[:-1], d[1:], strict=True):
                    pts += [tuple(a + t * (b - a)) for t in np.linspace(0, 1, 25)]
                pts += [tuple(p) for p in d]
        for coll in ax.collections:
            offsets = coll.get_offsets()
            if len(offsets) and coll.get_visible():
                pts += [tuple(p) for p in coll.get_offset_transform().transform(offsets)]
    return pts


@pytest.mark.parametrize("source", list(SOURCES))
def test_legends_cover_no_data(drawn: dict[tuple[str, str], plt.Figure], source: str) -> None:
    """No plotted point (line vertex or dot, of any panel) lies under a legend box."""
    for (src, name), fig in drawn.items():
        if src != source:
            continue
        pts = _data_points(fig)
        for leg in _legends(fig):
            box = leg.get_window_extent()
            under = [p for p in pts if box.contains(*p)]
            assert not under, (
                f"{name}: legend {[t.get_text() for t in leg.get_texts()]} covers {len(under)} points"
            )


def test_fig2a_lines_are_drawn_in_front_of_the_gain_bars(drawn: dict[tuple[str, str], plt.Figure]) -> None:
    # the fixture: it always has ConViT/DeiT pairs, hence gain bars (committed results may not, mid-suite)
    fig = drawn[("fixture", "fig2a_sample_efficiency")]
    for lines_ax in (a for a in fig.axes if a.get_lines() and not a.patches):
        twins = [a for a in fig.axes if a is not lines_ax and a.bbox.bounds == lines_ax.bbox.bounds]
        assert twins and all(a.patches for a in twins)
        assert all(lines_ax.get_zorder() > a.get_zorder() for a in twins)
        assert not lines_ax.patch.get_visible()  # its background would hide the bars


# --- the report shows its figures ---------------------------------------------------------------------------

EMBED = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def test_report_embeds_the_figures_it_draws(tmp_path: Path) -> None:
    """``python -m analysis.report`` draws each claim group's figures beside the report and links them
    relatively; every link resolves to a file drawn from the judged results."""
    out = tmp_path / "REPRODUCTION.md"
    assert report.main(["--results", str(FIXTURE), "--out", str(out)]) == 0
    text = out.read_text()
    links = EMBED.findall(text)
    assert len(links) == len(plots.FIGURES_OF)
    for link in links:
        assert not Path(link).is_absolute() and link.startswith("analysis/figures/"), link
        assert (out.parent / link).is_file(), link
    section = text[text.index("## Evidence") : text.index("## Rules and caveats")]
    for suite in {c.suite for c in report.CLAIMS}:
        for name in plots.figures_for(suite):
            assert f"analysis/figures/{name}.png" in section
    assert section.index("### Sample efficiency") < section.index("fig2a_sample_efficiency.png")
    assert "T2-shrink: **reproduced**" in section


def test_report_embeds_only_existing_figures(tmp_path: Path) -> None:
    """With --no-figures nothing is drawn: only figure files already beside the report are embedded."""
    out = tmp_path / "REPRODUCTION.md"
    assert report.main(["--results", str(FIXTURE), "--out", str(out), "--no-figures"]) == 0
    assert EMBED.findall(out.read_text()) == [] and "(no figure for this group drawn yet)" in out.read_text()
    folder = tmp_path / "analysis" / "figures"
    plots.save(plots.draw("table3_ablations", FIXTURE), "table3_ablations", folder)
    plt.close("all")
    assert report.main(["--results", str(FIXTURE), "--out", str(out), "--no-figures"]) == 0
    assert EMBED.findall(out.read_text()) == ["analysis/figures/table3_ablations.png"]


def test_committed_report_links_resolve() -> None:
    """The committed REPRODUCTION.md embeds figures, and each link points to a committed file."""
    text = (REPO / "REPRODUCTION.md").read_text()
    links = EMBED.findall(text)
    assert links, "REPRODUCTION.md embeds no figure"
    for link in links:
        assert (REPO / link).is_file(), link


def test_gating_budget_draws_each_heads_move_from_its_first_probe(tmp_path: Path) -> None:
    """The gating-budget figure plots sigma(lambda) minus the head's own first probe, per budget (1x solid,
    2x dashed), against the images seen, with the gate's +-0.1; missing data is said, a malformed file is
    refused."""
    from analysis import gate, load

    rows = []
    for images, sigmas in ((1, [0.70, 0.72, 0.75]), (2, [0.71, 0.65])):
        for epoch, sigma in enumerate(sigmas, start=1):
            for head in (1, 2):
                rows.append({"family": "convit", "strength": "none", "images": images, "run": f"r{images}",
                             "epoch": epoch, "images_seen": epoch * 1000, "layer": 1, "head": head,
                             "gate_sigma": sigma + 0.01 * head})  # fmt: skip
    (tmp_path / "cpu_budget").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "cpu_budget" / "gating.csv", index=False)
    res = load.load_suite("locality", results_dir=tmp_path)
    assert res.results_dir == tmp_path
    fig = plots.gating_budget(res)
    ax = fig.axes[0]
    data = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]  # the heads' (axhlines have no marker)
    by_style = {s: [ln for ln in data if ln.get_linestyle() == s] for s in ("-", "--")}
    assert len(by_style["-"]) == 2 and len(by_style["--"]) == 2
    assert list(by_style["-"][0].get_ydata()) == pytest.approx([0.0, 0.02, 0.05])
    assert list(by_style["--"][1].get_ydata()) == pytest.approx([0.0, -0.06])
    assert list(by_style["-"][0].get_xdata()) == pytest.approx([0.001, 0.002, 0.003])  # millions of images
    gates = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":")
    assert gates == pytest.approx([-gate.SIGMA_MOVE, gate.SIGMA_MOVE])
    assert "1x: 3 epoch(s) probed, 2x: 2 epoch(s) probed" in fig._suptitle.get_text()
    plt.close(fig)

    (tmp_path / "cpu_budget" / "gating.csv").unlink()
    fig = plots.gating_budget(res)
    assert "not yet" in " ".join(_texts(fig))
    plt.close(fig)
    pd.DataFrame(rows).drop(columns="head").to_csv(tmp_path / "cpu_budget" / "gating.csv", index=False)
    with pytest.raises(load.ResultsSchemaError, match="head"):
        load.load_budget_gating(tmp_path)
