"""The figures, shared by the notebooks and the report: one name space and the registry of which figure
shows which suite.

The vocabulary lives in :mod:`analysis.plotkit`, the figures in ``analysis/plots_<artefact>.py``; this module
re-exports both, so a notebook needs ``from analysis import plots`` only.

Why one place for all of them: ``python -m analysis.report`` draws the very figures it embeds (``draw``,
``draw_all``, :data:`FIGURES_OF`) from the results it judges, the notebooks show the same ones, and the tests
inspect the figure objects. Why the vocabulary matters, and what it holds: :mod:`analysis.plotkit`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analysis import load
from analysis.plotkit import (  # noqa: F401 - re-exported: notebooks use plots.NAME
    ALPHA_LABEL,
    EPOCH_LABEL,
    FAMILY_COLOR,
    FAMILY_MARKER,
    FAMILY_NAME,
    FAMILY_ORDER,
    FIGURES,
    FRACTION_LABEL,
    GAIN_BARS_LABEL,
    GAIN_LABEL,
    GPSA_LAYERS_LABEL,
    HUE_ORDER,
    LAYER_LABEL,
    MASK_COLOR,
    MASKED_LABEL,
    NONLOCALITY_LABEL,
    OTHER_COLORS,
    PALETTE,
    PARAMS_LABEL,
    SIGMA_LABEL,
    TOP1_LABEL,
    VAL_TOP1_LABEL,
    NoData,
    curves_panel,
    family_curves,
    family_label,
    family_markers,
    family_runs,
    figures_dir,
    fraction_palette,
    fraction_text,
    hue_order,
    integer_ticks,
    legend_below,
    legend_outside,
    nonlocality_frame,
    ours_panel,
    paper_and_ours,
    placeholder,
    require,
    save,
    scale_title,
    seeds_text,
    series_palette,
    setup,
    side_table,
    sigma_frame,
    with_family_labels,
    with_mask,
)
from analysis.plots_locality import (  # noqa: F401 - re-exported
    fig5_fig13_nonlocality,
    fig6_fig14_gate_sigma,
    fig8_left_locality_sweep,
    fig12_left_gpsa_layers_curves,
    gate_sigma_final,
    gating_budget,
)
from analysis.plots_sample_efficiency import (  # noqa: F401 - re-exported
    fig2a_sample_efficiency,
    fig11c_sample_efficiency_curves,
    fig12_right_ablation_curves,
    row_palette,
    table3_ablations,
)
from analysis.plots_tables import (  # noqa: F401 - re-exported
    fig2b_params_vs_top1,
    fig9_psa_vs_deit,
    fig11a_cifar100,
    table6_masking,
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
    "gating_budget": ("locality", gating_budget),
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
    np.random.seed(0)  # seaborn's strip jitter draws from numpy's global RNG: same results, same PNG bytes
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
