"""What a claim is (:class:`Claim`, :class:`Outcome`, :class:`Missing`) and the helpers several artefacts'
checks share: seed tables, per-seed differences, Kendall tau. The claims themselves are one module per paper
artefact beside this one, named as the suites in ``experiments/``; :mod:`analysis.claims` lists them in order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load
from analysis.gate import Comparison, paired

LOCALITY_SOURCES = load.LOCALITY_SOURCES


@dataclass(frozen=True)
class Outcome:
    """What a check found: whether the rule holds on the seed means, our numbers as text, seeds behind them,
    extra caveat, and the rule as per-seed comparisons (each must be positive for the rule to hold), from
    which :func:`analysis.gate.judge` decides whether the seeds allow a verdict."""

    holds: bool
    ours: str
    seeds: int
    caveat: str = ""
    comparisons: tuple[Comparison, ...] = ()


class Missing(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a check when the suite ran but lacks the runs its rule needs (-> "not yet run")."""


@dataclass(frozen=True)
class Claim:
    """A claim of the paper with the rule that judges it.

    ``check`` receives the suite's :class:`analysis.load.SuiteResults` (never empty) and returns an
    :class:`Outcome`, or raises :class:`Missing`. ``paper`` returns the paper's numbers as text, read from
    ``results/paper/`` so no number is typed twice.
    """

    id: str
    text: str
    where: str
    suite: str
    rule: str
    paper: Callable[[], str]
    check: Callable[[load.SuiteResults], Outcome]
    #: for locality claims: look through these suites for probes instead of only ``suite``.
    sources: tuple[str, ...] = ()
    #: the claim's largest fraction, where the gate judges the baseline: "largest" (the suite's) or
    #: "smallest_below_1" (claims judged at the reduced-data fraction only)
    gate_scope: str = "largest"
    #: gating/locality claims: the families whose sigma(lambda) / nonlocality must have moved
    gate_locality: tuple[str, ...] = ()


def _fmt(x: float, nd: int = 1) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.{nd}f}"


def _min_seeds(summary: pd.DataFrame) -> int:
    return int(summary["n"].min()) if len(summary) else 0


def _seeds(runs: pd.DataFrame, keys: list[str], value: str = "top1") -> pd.DataFrame:
    """Per-seed values: one row per seed, one column per configuration ``keys`` (mean over duplicate runs).

    The comparisons of :mod:`analysis.gate` pair seeds across configurations with these tables (seed s of
    ConViT against seed s of DeiT). A run without a seed counts as seed -1.
    """
    if runs.empty:
        return pd.DataFrame()
    runs = runs.assign(seed=pd.to_numeric(runs["seed"], errors="coerce").fillna(-1))
    return runs.pivot_table(index="seed", columns=keys, values=value, aggfunc="mean")


def _get(table: pd.DataFrame, key: object) -> pd.Series:
    """A column of a :func:`_seeds` table, or an empty series when that configuration has no run."""
    return table[key] if key in table.columns else pd.Series(dtype=float)


def _diff(table: pd.DataFrame, a: object, b: object, label: str, unit: str = "pts") -> Comparison:
    """The comparison "column a - column b > 0", paired by seed."""
    return Comparison(label, paired(_get(table, a), _get(table, b)), unit)


def _per_seed_tau(table: pd.DataFrame) -> dict[float, float]:
    """Kendall's tau between the column labels (numbers) and each seed's values, per seed (>= 2 values)."""
    out = {}
    for seed, row in table.iterrows():
        row = row.dropna()
        if len(row) >= 2:
            out[float(seed)] = _kendall_tau([float(c) for c in row.index], list(row.values))
    return out


def _convit_vs_deit(summary: pd.DataFrame, index: str, no_family: str, no_overlap: str) -> pd.DataFrame:
    """Seed means side by side per ``index`` value: columns convit, deit, n (the smaller seed count).

    Raises :class:`Missing` with ``no_family`` when a family is absent, ``no_overlap`` when no index value
    has both.
    """
    wide = summary.pivot_table(index=index, columns="family", values=["mean", "n"])
    if ("mean", "convit") not in wide.columns or ("mean", "deit") not in wide.columns:
        raise Missing(no_family)
    out = pd.DataFrame(
        {
            "convit": wide[("mean", "convit")],
            "deit": wide[("mean", "deit")],
            "n": wide[[("n", "convit"), ("n", "deit")]].min(axis=1),
        }
    ).dropna()
    if out.empty:
        raise Missing(no_overlap)
    return out


def _kendall_tau(x: list[float], y: list[float]) -> float:
    """Kendall's tau-a (no scipy dependency): +1 when y rises with x in every pair, -1 when it falls."""
    n, s = len(x), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += int(np.sign(x[j] - x[i]) * np.sign(y[j] - y[i]))
    return s / (n * (n - 1) / 2) if n > 1 else float("nan")


def _text(s: str) -> Callable[[], str]:
    return lambda: s
