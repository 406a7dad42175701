"""When a scale cannot tell: the competence gate and the seed intervals behind every verdict of the report.

A rule of :mod:`analysis.claims` compares seed means. Two things can make that comparison empty, and the
report (:mod:`analysis.report`) must say so instead of calling a claim "not reproduced":

1. **The runs never left the start of training** (:func:`competence_gate`). Then every model is close to its
   initialisation and the comparison says nothing about what the paper claims. The gate is measured, per
   claim, from the runs' own logs (``SCALE.csv``, ``SCALE_curves.csv``, ``SCALE_locality.csv``) and from
   the committed pixel linear-probe reference (``results/reference/pixel_linear_probe.csv``, written by
   ``python -m analysis.pixel_probe``). Its criteria, all on the *baseline* (the DeiT runs of the claim's
   suite at the claim's largest fraction), because the question is whether the scale (data, steps, recipe)
   trains the reference model at all; a ConViT variant that fails to learn where DeiT learns is a finding,
   not an under-trained scale:

   * **beats pixels**: DeiT's seed-mean top-1 exceeds the pixel linear probe's on the same dataset, image
     size and fraction (the probe at fraction 1, a higher bar, when that fraction was not measured);
   * **loss below chance**: DeiT's seed-mean final training loss is at most :data:`LOSS_SHARE_OF_CHANCE`
     (0.8) x ln K (see :data:`LOSS_SHARE_OF_CHANCE` for why ln K is chance under every recipe and why 0.8);
   * **locality moved** (gating and locality claims, F5 and F6 only): between the first and the last probed
     epoch, some GPSA head's seed-mean sigma(lambda) moved by at least :data:`SIGMA_MOVE` (0.1), and for
     every family the claim compares, some layer's head-mean nonlocality moved by at least
     :data:`NONLOCALITY_MOVE` (10%) of its first value.

2. **The effect is within seed noise** (:func:`judge`). A check states its rule as *comparisons*: signed
   per-seed quantities that must all be positive for the rule to hold (ConViT - DeiT at a fraction, a - b
   in an ordering, 0.1 - sigma of a late layer, Kendall's tau of one seed's sweep). Seeds are paired by
   their ``seed`` value (seed s of ConViT against seed s of DeiT: same data order and subset). Each
   comparison gets a two-sided 95% Student t interval over its paired seed values:

   * **reproduced**: every comparison's interval lies above 0;
   * **not reproduced**: some comparison's interval lies below 0 (one clear failure refutes a conjunction);
   * **inconclusive (within noise)**: otherwise; in particular whenever a comparison has a single seed. One
     run cannot separate an effect from the seed-to-seed spread (measured at up to 3.1 points at cpu scale,
     as large as the effects), and we do not borrow a spread measured elsewhere; this holds at every scale.

   Why t and not the bootstrap: with the 2-5 seeds a suite can afford, a percentile bootstrap has at most
   a few dozen distinct resamples and its interval is about the range of the seeds, far narrower than the
   uncertainty; the t interval is exact for normal seed noise and honestly wide for few seeds (with two
   seeds its half-width is 6.4 x their difference). Each comparison is tested at 95% on its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import load

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
UNDER_TRAINED = "inconclusive (under-trained)"
WITHIN_NOISE = "inconclusive (within noise)"
NOT_RUN = "not yet run"
#: every verdict the report can give, in the order its summary lists them
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, UNDER_TRAINED, WITHIN_NOISE, NOT_RUN)

CONFIDENCE = 0.95

#: A run passes the loss criterion when its final training loss is at most this share of ln K.
#:
#: Why ln K is chance under every recipe: label smoothing, Mixup and CutMix change the *targets* only, and
#: every target is a distribution over the K classes; the cross-entropy of the uniform prediction against
#: any distribution is exactly ln K. So ln K is what a model that has learnt nothing scores, whatever the
#: recipe.
#:
#: Why 0.8: the lowest loss a recipe allows is the entropy of its targets. For K = 10 with label smoothing
#: 0.1 that is 0.50 nats (0.22 ln K); Mixup (alpha 0.8) and CutMix (alpha 1) add the entropy of the mixing
#: weight, about 0.4 nats on average, so ~0.9 nats (0.4 ln K). A gate at 0.8 ln K (1.84 nats for K = 10)
#: asks the model to have covered about a third of the way from chance to the floor of the heaviest
#: recipe (a quarter of the way to the floor of plain smoothed labels): an easy bar for a model that is
#: learning, and one that runs stuck at the start of training do not pass (the first cpu runs ended at
#: 0.93-0.96 ln 10, with top-1 below the pixel probe). The loss is each run's last logged epoch mean.
LOSS_SHARE_OF_CHANCE = 0.8

#: Smallest move of a GPSA head's seed-mean sigma(lambda) between the first and last probe that counts as
#: "the gates moved". sigma lies in (0, 1) and starts at sigmoid(1) = 0.73; the paper's later layers go to
#: ~0 (a move of ~0.7, Figs. 6-7) and F6's rule asks for <= 0.1. A move of 0.1 is a seventh of that; the
#: first cpu runs (top-1 below the pixel probe's) kept every head within 0.04 of 0.73 and moved it by at
#: most 0.004 between their two probes.
SIGMA_MOVE = 0.1

#: Smallest relative move of a layer's head-mean nonlocality (seed mean) between the first and last probe.
#: The paper's nonlocality changes by tens of percent (ConViT's GPSA layers grow from ~3 to 5-7 patches,
#: DeiT's layers fall from ~7 towards 4-5, Fig. 5); 10% is a fraction of that and ~10x what the first cpu
#: runs moved (ConViT 0.5%, DeiT 1.3% between their two probes).
NONLOCALITY_MOVE = 0.10

#: where the pixel linear-probe reference lives, relative to a results folder
REFERENCE = Path("reference") / "pixel_linear_probe.csv"


# --- intervals --------------------------------------------------------------------------------------------


def _t_two_sided_mass(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (closed form, Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    if df % 2 == 1:
        total, term = 0.0, c  # c + (2/3) c^3 + (2*4)/(3*5) c^5 + ... up to c^(df-2)
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return 2 / math.pi * (theta + s * total) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0  # 1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ... up to c^(df-2)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student t critical value: P(|T_df| <= q) = ``confidence`` (bisection on the exact CDF;
    no scipy dependency). ``t_quantile(0.95, 1)`` is 12.71, ``(0.95, 30)`` 2.04."""
    if df < 1 or not 0 < confidence < 1:
        raise ValueError(f"need df >= 1 and 0 < confidence < 1, got df={df}, confidence={confidence}")
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < confidence:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_two_sided_mass(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` paired seed values with its two-sided t interval (NaN bounds when ``n`` < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def above(self) -> bool:
        return self.n >= 2 and self.lo > 0

    @property
    def below(self) -> bool:
        return self.n >= 2 and self.hi < 0

    def text(self, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        if self.n < 2:
            return f"{self.mean:+.2f}{u} (1 seed, no interval)" if self.n else "no paired seeds"
        return f"{self.mean:+.2f}{u} [{self.lo:+.2f}, {self.hi:+.2f}]"


def interval(values: Iterable[float], confidence: float = CONFIDENCE) -> Interval:
    """The t interval of the mean of ``values`` (finite ones only)."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(x.mean())
    if n < 2:
        return Interval(m, float("nan"), float("nan"), 1)
    half = t_quantile(confidence, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


@dataclass(frozen=True)
class Comparison:
    """One signed quantity a rule needs to be positive, per seed: ``values`` maps seed -> value.

    ``label`` says what is subtracted from what ("f=0.05: ConViT - DeiT"); ``unit`` is for the report.
    """

    label: str
    values: Mapping[float, float]
    unit: str = "pts"

    @property
    def interval(self) -> Interval:
        return interval(self.values.values())

    def text(self) -> str:
        return f"{self.label} {self.interval.text(self.unit)}"


def paired(a: pd.Series, b: pd.Series) -> dict[float, float]:
    """Seed-paired differences ``a - b`` of two per-seed series (seeds present in both only)."""
    d = (a - b).dropna()
    return {float(k): float(v) for k, v in d.items()}


def judge(comparisons: Sequence[Comparison]) -> str:
    """REPRODUCED when every comparison's interval is above 0, NOT_REPRODUCED when some interval is below 0,
    else WITHIN_NOISE (also when there is no comparison at all)."""
    if not comparisons:
        return WITHIN_NOISE
    ivs = [c.interval for c in comparisons]
    if any(iv.below for iv in ivs):
        return NOT_REPRODUCED
    if all(iv.above for iv in ivs):
        return REPRODUCED
    return WITHIN_NOISE


# --- the competence gate ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """One gate criterion: whether it passed and its figures in words."""

    name: str
    passed: bool
    figure: str


@dataclass(frozen=True)
class Gate:
    """All criteria of one claim's gate; it passes when every criterion does."""

    criteria: tuple[Criterion, ...] = field(default_factory=tuple)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.criteria)

    def text(self) -> str:
        """``pass``/``FAIL`` per criterion with its figures, for the report's gate column."""
        return "; ".join(f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.figure}" for c in self.criteria)


def reference_path(results_dir: str | Path | None = None) -> Path:
    """The pixel-probe reference of ``results_dir`` when it has one, else the checkout's committed one."""
    own = (Path(results_dir) if results_dir is not None else load.default_results_dir()) / REFERENCE
    return own if own.is_file() else load.REPO / "results" / REFERENCE


def pixel_probe(
    dataset: str, img_size: int, fraction: float, results_dir: str | Path | None = None
) -> tuple[float, float] | None:
    """(top-1, fraction measured) of the pixel linear probe for this dataset, size and fraction.

    The exact fraction when it was measured, else the probe at fraction 1 (trained on more images, so a
    higher bar); None when the reference has neither.
    """
    path = reference_path(results_dir)
    if not path.is_file():
        return None
    ref = pd.read_csv(path)
    ref = ref[(ref["dataset"].astype(str) == str(dataset)) & (ref["img_size"] == img_size)]
    for f in (fraction, 1.0):
        hit = ref[np.isclose(ref["fraction"], f)]
        if len(hit):
            return float(hit["top1"].iloc[0]), float(f)
    return None


def _train_runs(runs: pd.DataFrame) -> pd.DataFrame:
    if "task" in runs.columns:
        trained = runs[runs["task"].fillna("train") != "eval"]
        if len(trained):
            return trained
        # evaluation entries only (released weights): the unmasked evaluations stand for the trained models
        for col in ("mask", "intervention"):
            if col in runs.columns:
                v = runs[col].astype(str).str.strip().str.lower()
                runs = runs[runs[col].isna() | v.isin(["", "none", "nan", "no"])]
    return runs


def gate_fraction(runs: pd.DataFrame, scope: str) -> float | None:
    """The claim's largest fraction: the suite's largest (``scope="largest"``) or, for claims judged at the
    reduced-data fraction only (``"smallest_below_1"``), the smallest fraction below 1."""
    fr = sorted(pd.to_numeric(runs["fraction"], errors="coerce").dropna().unique())
    if not fr:
        return None
    if scope == "smallest_below_1":
        small = [f for f in fr if f < 1]
        return float(small[0]) if small else float(fr[-1])
    if scope != "largest":
        raise ValueError(f"unknown gate scope {scope!r}")
    return float(fr[-1])


def _moves(loc: pd.DataFrame, value: str, by: list[str], relative: bool) -> tuple[float, int, int]:
    """Largest seed-mean move of ``value`` (mean over heads when ``by`` is per layer) between each run's first
    and last probe: (move, first epoch, last epoch)."""
    loc = loc.dropna(subset=[value])
    first = loc[loc["epoch"] == loc.groupby("run")["epoch"].transform("min")]
    last = loc[loc["epoch"] == loc.groupby("run")["epoch"].transform("max")]
    a = first.groupby(["run", *by])[value].mean().groupby(by).mean()
    b = last.groupby(["run", *by])[value].mean().groupby(by).mean()
    move = (b - a).abs() / (a.abs() if relative else 1.0)
    return float(move.max()), int(first["epoch"].min()), int(last["epoch"].max())


def _locality_criteria(res: load.SuiteResults, fraction: float, families: Sequence[str]) -> list[Criterion]:
    loc = res.locality
    if "fraction" in loc.columns and loc["fraction"].notna().any():
        loc = loc[np.isclose(pd.to_numeric(loc["fraction"], errors="coerce"), fraction)]
    out = []
    if "convit" in families:
        conv = loc[(loc["family"] == "convit") & loc["gate_sigma"].notna()]
        if conv.empty or conv["epoch"].nunique() < 2:
            need = "ConViT gate_sigma needs probes at two epochs at least"
            out.append(Criterion("sigma moved", False, need))
        else:
            m, e0, e1 = _moves(conv, "gate_sigma", ["layer", "head"], relative=False)
            out.append(
                Criterion(
                    "sigma moved",
                    m >= SIGMA_MOVE,
                    f"largest head move {m:.3f} from epoch {e0} to {e1} (gate >= {SIGMA_MOVE:g})",
                )
            )
    parts, ok = [], True
    for fam in families:
        sub = loc[(loc["family"] == fam) & loc["nonlocality"].notna()]
        name = {"convit": "ConViT", "deit": "DeiT"}.get(fam, fam)
        if sub.empty or sub["epoch"].nunique() < 2:
            parts.append(f"{name}: needs probes at two epochs at least")
            ok = False
            continue
        m, e0, e1 = _moves(sub, "nonlocality", ["layer"], relative=True)
        ok = ok and m >= NONLOCALITY_MOVE
        parts.append(f"{name} largest layer move {m * 100:.1f}% (epoch {e0} to {e1})")
    if families:
        out.append(
            Criterion("nonlocality moved", ok, ", ".join(parts) + f" (gate >= {NONLOCALITY_MOVE * 100:.0f}%)")
        )
    return out


def competence_gate(
    res: load.SuiteResults,
    scope: str = "largest",
    locality: Sequence[str] = (),
    results_dir: str | Path | None = None,
) -> Gate:
    """The gate of a claim judged on ``res`` (see the module docstring): criteria with their figures.

    ``scope`` picks the claim's largest fraction (:func:`gate_fraction`); ``locality`` names the families
    whose probes must have moved (empty for claims that are not about gating or locality).
    """
    runs = _train_runs(res.runs)
    fraction = gate_fraction(runs, scope)
    base = runs[runs["family"] == "deit"]
    if fraction is not None:
        base = base[np.isclose(base["fraction"], fraction)]
    where = f"f={fraction:g}" if fraction is not None else "no fraction"
    if base.empty:
        crit = [Criterion("baseline", False, f"no DeiT baseline run at {where}")]
        if locality:
            crit += _locality_criteria(res, fraction if fraction is not None else 1.0, locality)
        return Gate(tuple(crit))
    crit = []
    # beats pixels
    dataset = str(base["dataset"].iloc[0])
    size = int(base["img_size"].iloc[0])
    top1 = float(base.groupby("seed", dropna=False)["top1"].mean().mean())
    ref = pixel_probe(dataset, size, float(fraction), results_dir)
    if ref is None:
        crit.append(
            Criterion(
                "beats pixels",
                False,
                f"DeiT {top1:.1f} at {where}; no pixel-probe reference for {dataset} {size} px "
                f"(python -m analysis.pixel_probe {dataset} --img-size {size})",
            )
        )
    else:
        probe, pf = ref
        at = "" if np.isclose(pf, fraction) else f", probe at f={pf:g}"
        crit.append(
            Criterion(
                "beats pixels", top1 > probe, f"DeiT {top1:.1f} at {where} vs pixel probe {probe:.1f}{at}"
            )
        )
    # loss below chance
    k = int(pd.to_numeric(base["num_classes"], errors="coerce").max())
    chance = math.log(k) if k > 1 else float("nan")
    trained = "task" not in base.columns or (base["task"].fillna("train") != "eval").any()
    curves = res.curves[res.curves["run"].isin(base["run"])].dropna(subset=["train_loss"])
    if not trained:
        crit.append(Criterion("loss", True, "not measured: evaluations of trained weights, no curves"))
    elif curves.empty:
        crit.append(Criterion("loss", False, "no training curves for the DeiT baseline"))
    else:
        final = curves[curves["epoch"] == curves.groupby("run")["epoch"].transform("max")]
        loss = float(final.groupby("seed", dropna=False)["train_loss"].mean().mean())
        share = loss / chance
        crit.append(
            Criterion(
                "loss",
                bool(share <= LOSS_SHARE_OF_CHANCE),
                f"DeiT final train loss {loss:.2f} = {share:.2f} ln {k} "
                f"(gate <= {LOSS_SHARE_OF_CHANCE:g} ln {k} = {LOSS_SHARE_OF_CHANCE * chance:.2f})",
            )
        )
    if locality:
        crit += _locality_criteria(res, float(fraction), locality)
    return Gate(tuple(crit))
