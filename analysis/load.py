"""The shared loader: tidy DataFrames from ``results/`` and the paper's own numbers from ``results/paper/``.

Why one module: notebooks and the report must agree on which runs they look at. This module decides

* which scale a suite is shown at (the best one that has results, in the order ``paper > reduced > cpu >
  smoke``, unless a scale is asked for explicitly),
* what the columns mean and that they are all there (a collector change that drops a column fails here,
  loudly, instead of silently producing an empty plot),
* how a run is classified as "ConViT" or "DeiT" across suites whose ``variant`` strings differ,
* which committed runs still belong to the suite: a run's name ends with its spec's digest, so a row whose
  digest the suite's *current* specs at that scale do not produce was made by an earlier definition of the
  scale (or with ``--set`` overrides) and is set aside, never judged as if it were today's experiment
  (:func:`current_run_names`).

The file layout is the collector's (ARCHITECTURE.md, "Results"): ``results/SUITE/SCALE.csv`` (one row per
run), ``SCALE_curves.csv`` (one row per run and epoch) and ``SCALE_locality.csv`` (one row per run, epoch,
layer, head). Everything here is read-only.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import collect as _collect

# the columns of ``results/cpu_budget/gating.csv``, as its writer (``cpu_budget.py --collect``) defines them
from experiments.cpu_budget import GATING_FIELDS as BUDGET_GATING_COLUMNS

__all__ = [
    "CURVE_COLUMNS",
    "LOCALITY_COLUMNS",
    "RUN_COLUMNS",
    "SCALES",
    "SUITES",
    "ResultsSchemaError",
    "SuiteResults",
    "available_scales",
    "current_run_names",
    "default_results_dir",
    "family",
    "load_locality_source",
    "load_paper",
    "load_suite",
    "paper_tables",
    "seed_summary",
]

#: Scales from most to least faithful; the loader falls back along this order.
SCALES: tuple[str, ...] = ("paper", "reduced", "cpu", "smoke")

#: Suites written by ``experiments/`` (one folder each under ``results/``).
SUITES: tuple[str, ...] = (
    "main_table",
    "sample_efficiency",
    "ablations",
    "locality",
    "masking",
    "psa",
    "cifar100",
    "distillation",
)

# The results schema belongs to its writer (``experiments/collect.py``); the loader checks files against it.
#: Columns every ``SCALE.csv`` must have (suite-specific tag columns may follow).
RUN_COLUMNS: tuple[str, ...] = tuple(_collect.RUN_COLUMNS)
CURVE_COLUMNS: tuple[str, ...] = tuple(_collect.CURVE_COLUMNS)
LOCALITY_COLUMNS: tuple[str, ...] = tuple(_collect.LOCALITY_COLUMNS)

_NUMERIC_RUN = (
    "fraction",
    "num_classes",
    "img_size",
    "seed",
    "epochs",
    "top1",
    "top5",
    "loss",
    "params",
    "wall_time_s",
    "world_size",
)

#: What each scale means, for figure labels (the dataset and resolution come from the runs themselves).
SCALE_NOTES: dict[str, str] = {
    "paper": "paper scale (ImageNet-1k, 224 px, paper recipe)",
    "reduced": "reduced scale (Tiny-ImageNet-200, 64 px, one GPU)",
    "cpu": "cpu scale (CIFAR-10, 32 px, 2-core CPU): qualitative only",
    "smoke": "SMOKE scale (a few steps on a tiny fixture): plumbing check, numbers meaningless",
}

REPO = Path(__file__).resolve().parents[1]


class ResultsSchemaError(ValueError):
    """A results CSV lacks a documented column (the collector and this loader disagree)."""


def default_results_dir() -> Path:
    """``$CONVIT_RESULTS`` if set, else ``results/`` of this checkout (so notebooks work from any cwd)."""
    env = os.environ.get("CONVIT_RESULTS")
    return Path(env) if env else REPO / "results"


def _dir(results_dir: str | Path | None) -> Path:
    return Path(results_dir) if results_dir is not None else default_results_dir()


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    """An empty frame with the documented columns, so code downstream of "not yet run" needs no branches."""
    text = {"suite", "scale", "run", "model", "variant", "dataset", "family"}
    return pd.DataFrame({c: pd.Series(dtype="object" if c in text else "float64") for c in columns})


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read one CSV and check its schema; a missing file is an empty frame with the documented columns."""
    if not path.is_file():
        return _empty(required)
    df = pd.read_csv(path)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ResultsSchemaError(f"{path}: missing column(s) {missing}; see results/README.md")
    return df


def available_scales(
    suite: str, results_dir: str | Path | None = None, *, include_stale: bool = False
) -> list[str]:
    """Scales of ``suite`` that have at least one run of its current specs (any run with ``include_stale``),
    best first (order of :data:`SCALES`)."""
    return _available(_scan(suite, _dir(results_dir) / suite), include_stale)


def _available(scan: dict[str, tuple[int, list[str]]], include_stale: bool) -> list[str]:
    return [scale for scale, (n, stale) in scan.items() if include_stale or len(stale) < n]


def _scan(suite: str, base: Path) -> dict[str, tuple[int, list[str]]]:
    """scale -> (rows, names of the rows today's specs do not produce), for each non-empty ``SCALE.csv``,
    best scale first: one read of each file serves both the fallback order and the set-aside list."""
    out = {}
    for scale in SCALES:
        path = base / f"{scale}.csv"
        if not path.is_file():
            continue
        try:
            runs = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            continue
        if len(runs):
            has_names = "run" in runs.columns  # a file without it fails the schema check when loaded
            stale = runs.loc[_stale_mask(runs, suite, scale), "run"].astype(str).tolist() if has_names else []
            out[scale] = (len(runs), stale)
    return out


#: A collected run name ends with ``-<8 hex digits>``, the digest of its full spec (``common.run_name``).
_DIGEST = re.compile(r"-[0-9a-f]{8}$")


@functools.cache
def current_run_names(suite: str, scale: str, seeds: int) -> frozenset[str] | None:
    """The run names ``suite``'s specs give today at ``scale`` for seeds ``0..seeds-1``; None when the specs
    cannot be built in this checkout (an unknown scale), so nothing is set aside that cannot be checked."""
    from experiments import load_suite as _suite_module
    from experiments.common import run_name, with_seeds

    try:
        specs = _suite_module(suite).specs(scale)
    except ValueError:  # SuiteError / ScaleError: a results folder this checkout does not define
        return None
    return frozenset(run_name(s) for s in with_seeds(specs, max(seeds, 1)))


def _stale_mask(runs: pd.DataFrame, suite: str, scale: str) -> pd.Series:
    """True for rows whose name carries a spec digest the suite's current specs do not give.

    Names without a digest (hand-made fixtures, pre-digest collections) cannot be checked and are kept.
    """
    names = runs["run"].astype(str)
    seeds = pd.to_numeric(runs.get("seed"), errors="coerce")
    n_seeds = int(seeds.max()) + 1 if seeds is not None and seeds.notna().any() else 1
    current = current_run_names(suite, scale, n_seeds)
    if current is None:
        return pd.Series(False, index=runs.index)
    return names.str.contains(_DIGEST) & ~names.isin(current)


@dataclass
class SuiteResults:
    """One suite at one scale: runs, per-epoch curves and locality probes (tidy), plus where they came from.

    ``scale`` is None when the suite has no results at any scale; the frames are then empty but still carry
    the documented columns, so downstream code needs no special case beyond checking :attr:`empty`.
    """

    suite: str
    scale: str | None
    runs: pd.DataFrame
    curves: pd.DataFrame
    locality: pd.DataFrame
    scales_available: list[str] = field(default_factory=list)
    #: scale -> names of committed runs set aside there because today's specs do not produce them
    stale: dict[str, list[str]] = field(default_factory=dict)
    #: the results folder they were read from (figures that also read a measurement beside the suites)
    results_dir: Path | None = None

    @property
    def empty(self) -> bool:
        return self.scale is None or self.runs.empty

    @property
    def n_seeds(self) -> int:
        """Largest number of seeds behind any one configuration (0 when nothing ran)."""
        if self.empty:
            return 0
        keys = [c for c in self.runs.columns if c not in RUN_COLUMNS or c in ("model", "variant", "fraction")]
        keys = [c for c in keys if c not in ("seed", "status")]
        return int(self.runs.groupby(keys, dropna=False)["seed"].nunique().max())

    def label(self) -> str:
        """One line for figure titles and the report: which scale, which data, how many seeds."""
        if self.empty:
            return f"{self.suite}: not yet run (paper values only)"
        datasets = ", ".join(sorted(map(str, self.runs["dataset"].dropna().unique())))
        sizes = ", ".join(f"{int(s)} px" for s in sorted(self.runs["img_size"].dropna().unique()))
        note = SCALE_NOTES.get(self.scale, self.scale)
        runs = f"{len(self.runs)} runs, up to {self.n_seeds} seed(s)"
        return f"{self.suite} @ {note}; data: {datasets} ({sizes}); {runs}"


def load_suite(
    suite: str,
    scale: str | None = None,
    results_dir: str | Path | None = None,
    *,
    include_incomplete: bool = False,
    include_stale: bool = False,
) -> SuiteResults:
    """Load ``suite`` at ``scale``, or at the best available scale when ``scale`` is None.

    Runs the collector marked ``incomplete`` (and their curves and probes) are left out unless
    ``include_incomplete``: every figure and verdict is about finished runs. Runs the suite's current specs
    do not produce (see the module docstring) are left out unless ``include_stale``, and listed per scale in
    :attr:`SuiteResults.stale`, so that a scale redefined since its results were committed shows as not yet
    run instead of lending its old numbers to the new definition.

    Runs get an added ``family`` column (see :func:`family`); curves and locality frames are restricted to
    the loaded runs and get ``model``, ``variant``, ``family`` (and the tag columns) merged in, so plots can
    facet on them without joining.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    if scale is not None and scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    base = _dir(results_dir) / suite
    scan = _scan(suite, base)
    available = _available(scan, include_stale)
    stale = {} if include_stale else {sc: names for sc, (_, names) in scan.items() if names}
    chosen = scale if scale is not None else (available[0] if available else None)
    if chosen is None or chosen not in available:
        return SuiteResults(
            suite,
            None,
            _empty((*RUN_COLUMNS, "family")),
            _empty(CURVE_COLUMNS),
            _empty(LOCALITY_COLUMNS),
            available,
            stale,
            _dir(results_dir),
        )
    runs = _read(base / f"{chosen}.csv", RUN_COLUMNS)
    if stale.get(chosen):
        runs = runs[~runs["run"].astype(str).isin(stale[chosen])].reset_index(drop=True)
    if "status" in runs.columns and not include_incomplete:
        # A run stopped mid-training (a suite collected while it ran, a session's end) has no top-1 and
        # curves / probes that end early: mixed with finished runs it would pose as a "last epoch".
        runs = runs[runs["status"].fillna("done") == "done"].reset_index(drop=True)
    for col in _NUMERIC_RUN:
        runs[col] = pd.to_numeric(runs[col], errors="coerce")
    runs["run"] = runs["run"].astype(str)
    runs["variant"] = runs["variant"].astype("object").where(runs["variant"].notna(), None)
    for col in [c for c in runs.columns if c not in RUN_COLUMNS]:
        # a numeric tag only some runs have (gpsa_layers: the Fig. 8 grid, not Table 3) reads as float
        # because of the gaps; whole numbers go back to (nullable) integers so figures say 3, not 3.0
        values = pd.to_numeric(runs[col], errors="coerce")
        if values.notna().sum() == runs[col].notna().sum() > 0 and (values.dropna() % 1 == 0).all():
            runs[col] = values.astype("Int64")
    runs["family"] = family(runs)
    curves = _read(base / f"{chosen}_curves.csv", CURVE_COLUMNS)
    locality = _read(base / f"{chosen}_locality.csv", LOCALITY_COLUMNS)
    tags = [c for c in runs.columns if c not in RUN_COLUMNS or c in ("model", "variant", "fraction", "seed")]
    meta = runs[["run", *[t for t in tags if t != "run"]]]
    for name, frame in (("curves", curves), ("locality", locality)):
        frame["run"] = frame["run"].astype(str)
        unknown = set(frame["run"]) - set(runs["run"])
        if unknown:
            # A curve without its run row means the collector wrote inconsistent files: say so, keep going.
            frame = frame[~frame["run"].isin(unknown)]
        merged = frame.merge(meta, on="run", how="left")
        if name == "curves":
            curves = merged
        else:
            locality = merged
    return SuiteResults(suite, chosen, runs, curves, locality, available, stale, _dir(results_dir))


def family(runs: pd.DataFrame) -> pd.Series:
    """Classify each run as ``convit``, ``deit``, ``psa`` or ``other`` across suites' naming conventions.

    Why: suites tag runs differently (``variant`` "convit"/"deit" in sample_efficiency, ablation rows
    "a".."g", GPSA-layer and locality-strength sweeps), yet several claims only compare "the ConViT" with
    "the DeiT".
    Rules, first match wins: ablation row a -> convit, e -> deit, other rows -> other; a variant containing
    "psa"; a variant starting with convit/deit; a sweep with ``gpsa_layers`` 0 -> deit, the largest GPSA
    count at the default locality strength (1 or missing) -> convit; finally the model name prefix.
    """
    out = pd.Series("other", index=runs.index, dtype="object")
    decided = pd.Series(False, index=runs.index)

    def assign(mask: pd.Series, value: str | pd.Series) -> None:
        nonlocal decided
        m = mask.fillna(False).astype(bool) & ~decided
        if isinstance(value, pd.Series):
            out[m] = value[m]
        else:
            out[m] = value
        decided = decided | m

    if "row" in runs.columns:
        row = (
            runs["row"]
            .astype("object")
            .where(runs["row"].notna(), None)
            .map(lambda r: None if r is None else str(r).strip().lower())
        )
        assign(row.notna(), row.map({"a": "convit", "e": "deit"}).fillna("other"))
    variant = (
        runs["variant"].map(
            lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).lower()
        )
        if "variant" in runs.columns
        else None
    )
    if variant is not None:
        assign(variant.str.contains("psa"), "psa")  # e.g. "convit_psa" (Fig. 9) is not the ConViT
        for fam in ("convit", "deit"):
            assign(variant.str.startswith(fam), fam)
    if "gpsa_layers" in runs.columns:
        g = pd.to_numeric(runs["gpsa_layers"], errors="coerce")
        alpha = (
            pd.to_numeric(runs["locality_strength"], errors="coerce")
            if "locality_strength" in runs.columns
            else pd.Series(np.nan, index=runs.index)
        )
        default_alpha = alpha.isna() | np.isclose(alpha.fillna(1.0), 1.0)
        assign(g == 0, "deit")
        if g.notna().any():
            assign((g == g.max()) & default_alpha, "convit")
        assign(g.notna(), "other")
    model = runs["model"].astype(str).str.lower()
    for fam in ("convit", "deit", "psa"):
        assign(model.str.startswith(fam), fam)
    return out


def seed_summary(df: pd.DataFrame, keys: list[str], value: str = "top1") -> pd.DataFrame:
    """Mean, standard deviation and seed count of ``value`` per configuration ``keys`` (1 seed: NaN std)."""
    if df.empty:
        return pd.DataFrame(columns=[*keys, "mean", "std", "n"])
    g = df.groupby(keys, dropna=False)[value]
    return g.agg(mean="mean", std="std", n="count").reset_index()


#: suites whose locality probes can serve Figs. 5, 6, 13, 14, most specific first.
LOCALITY_SOURCES: tuple[str, ...] = ("locality", "main_table", "sample_efficiency")


def load_locality_source(
    suites: tuple[str, ...] = LOCALITY_SOURCES, results_dir: str | Path | None = None
) -> SuiteResults:
    """The first suite (in ``suites`` order) whose best scale has locality probes.

    Why: the probes are logged by whichever suite enabled them; the locality figures want the most specific
    one. When none has probes, the first suite's (possibly empty) results come back, so labels still say
    which suite was expected.
    """
    first = None
    for suite in suites:
        res = load_suite(suite, results_dir=results_dir)
        first = first or res
        if not res.empty and not res.locality.empty:
            return res
    assert first is not None
    return first


# --- the paper's numbers ----------------------------------------------------------------------------------


def paper_tables(paper_dir: str | Path | None = None) -> list[str]:
    """Names of the paper tables available (file stems under ``results/paper/``)."""
    base = Path(paper_dir) if paper_dir is not None else REPO / "results" / "paper"
    return sorted(p.stem for p in base.glob("*.csv"))


def load_paper(name: str, paper_dir: str | Path | None = None) -> pd.DataFrame:
    """One of the paper's tables (``table1`` ... ``table6``, ``fig2``, ``checkpoints``, ``gate_sigma``,
    ``cifar100``) as a DataFrame; every row carries its ``source``.

    The paper's numbers are always read from the committed ``results/paper/`` of this checkout (not from a
    ``--results`` override), because they are data about the paper, not about our runs.
    """
    base = Path(paper_dir) if paper_dir is not None else REPO / "results" / "paper"
    path = base / f"{name}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no paper table {name!r} in {base} (have: {', '.join(paper_tables(base))})")
    df = pd.read_csv(path)
    if "source" not in df.columns or df["source"].isna().any():
        raise ResultsSchemaError(f"{path}: every paper number needs a source")
    return df


def load_budget_gating(results_dir: str | Path | None = None) -> pd.DataFrame:
    """The cpu scale's gating-budget measurement: sigma(lambda) per probe, GPSA layer and head (from 1) of
    ConViT-Ti at f = 1 trained on 1x and Kx the scale's images (``images``), finished or not.

    Why here and not a suite: it measures the scale (what budget the competence gate's sigma criterion
    needs), it is judged by nobody; an empty frame with the columns when it has not been collected."""
    path = _dir(results_dir) / "cpu_budget" / "gating.csv"
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype="object") for c in BUDGET_GATING_COLUMNS})
    df = pd.read_csv(path)
    missing = set(BUDGET_GATING_COLUMNS) - set(df.columns)
    if missing:
        raise ResultsSchemaError(f"{path}: missing columns {sorted(missing)}")
    return df
