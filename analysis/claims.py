"""The paper's claims as data: each :class:`Claim` names its table or figure, the suite that tests it, the
rule in words and a ``check`` that implements exactly that rule on tidy results (see :mod:`analysis.report`,
which judges them all and writes ``REPRODUCTION.md``).

Adding a claim: write ``check_*`` (raise :class:`Missing` when the runs it needs are absent; state the rule
as per-seed :class:`analysis.gate.Comparison` s, each a quantity that must be positive), read the paper's
numbers from ``results/paper/`` in a ``_paper_*`` function, and append a :class:`Claim` to :data:`CLAIMS`
(with its gate scope: the fraction its baseline is judged at, and for gating/locality claims the families
whose probes must have moved; see :mod:`analysis.gate`).
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


# --- helpers -------------------------------------------------------------------------------------------


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


def _family_means(res: load.SuiteResults, keys: list[str]) -> pd.DataFrame:
    runs = res.runs[res.runs["family"].isin(["convit", "deit"])]
    return load.seed_summary(runs, [*keys, "family"])


def _fraction_seeds(res: load.SuiteResults) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-seed top-1 by (fraction, family) and the per-seed relative gap (ConViT - DeiT) / DeiT in % by
    fraction, for the ConViT and DeiT runs."""
    runs = res.runs[res.runs["family"].isin(["convit", "deit"])]
    t = _seeds(runs, ["fraction", "family"])
    gaps = {}
    for f in sorted({k[0] for k in t.columns}):
        c, d = _get(t, (f, "convit")), _get(t, (f, "deit"))
        gaps[f] = (c - d) / d * 100
    return t, pd.DataFrame(gaps)


def _gaps_by_fraction(res: load.SuiteResults) -> pd.DataFrame:
    """ConViT vs DeiT seed means per fraction, with the relative gap (ConViT - DeiT) / DeiT in percent."""
    s = _family_means(res, ["fraction"])
    if s.empty:
        raise Missing("no ConViT/DeiT runs")
    out = _convit_vs_deit(
        s, "fraction", "needs both ConViT and DeiT runs", "no fraction has both ConViT and DeiT runs"
    )
    out["gap_pct"] = (out["convit"] - out["deit"]) / out["deit"] * 100
    return out.sort_index()


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


def _noise_caveat(summary: pd.DataFrame, key: str, pairs: list[tuple[str, str]]) -> str:
    """Name the adjacent pairs of an ordering whose difference is below the larger seed std (when known)."""
    by = summary.set_index(key)
    close = []
    for a, b in pairs:
        if a in by.index and b in by.index:
            sd = np.nanmax([by.at[a, "std"], by.at[b, "std"]]) if by["n"].min() > 1 else np.nan
            if np.isfinite(sd) and abs(by.at[a, "mean"] - by.at[b, "mean"]) < sd:
                close.append(f"{a} vs {b}")
    return f"within seed noise: {', '.join(close)}" if close else ""


def _pairs_by_size(res: load.SuiteResults, only_plus: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pair ConViT and DeiT runs of the same size by model name (``convit_small`` <-> ``deit_small``):
    seed means side by side (sorted by parameters) and the per-seed top-1 table by (size, family)."""
    runs = res.runs[res.runs["family"].isin(["convit", "deit"])].copy()
    if "task" in runs.columns:  # released-weights evaluations are not training results
        runs = runs[runs["task"].fillna("train") != "eval"]
    runs["size"] = runs["model"].astype(str).str.replace(r"^(convit|deit)_?", "", regex=True)
    if only_plus:
        runs = runs[runs["size"].str.contains("plus|\\+", regex=True)]
    s = load.seed_summary(runs, ["size", "family"])
    if s.empty:
        raise Missing("no ConViT/DeiT runs" + (" of the + family" if only_plus else ""))
    out = _convit_vs_deit(
        s, "size", "needs ConViT and DeiT of the same size", "no size has both a ConViT and a DeiT run"
    )
    params = runs.groupby("size")["params"].max()
    out["params"] = params.reindex(out.index)
    out["gain_pct"] = (out["convit"] - out["deit"]) / out["deit"] * 100
    return out.sort_values("params"), _seeds(runs, ["size", "family"])


# --- paper numbers (read from results/paper) -----------------------------------------------------------


def _paper_table2_gaps() -> pd.DataFrame:
    t = load.load_paper("table2").pivot_table(index="fraction", columns="family", values="top1")
    t["gap_pct"] = (t["ConViT"] - t["DeiT"]) / t["DeiT"] * 100
    return t


def _paper_t2_smallest() -> str:
    t = _paper_table2_gaps()
    f = t.index.min()
    r = t.loc[f]
    return f"{f:g}: ConViT-S {r['ConViT']:.1f} vs DeiT-S {r['DeiT']:.1f} (+{r['gap_pct']:.1f}% rel.)"


def _paper_t2_gaps() -> str:
    t = _paper_table2_gaps()
    return "gap %: " + ", ".join(f"{f:g}: {g:.1f}" for f, g in t["gap_pct"].items())


def _paper_t2_every() -> str:
    t = _paper_table2_gaps()
    return "; ".join(f"{f:g}: {r['ConViT']:.1f} vs {r['DeiT']:.1f}" for f, r in t.iterrows())


def _paper_table1(only_plus: bool) -> str:
    t = load.load_paper("table1")
    order = list(dict.fromkeys(t["size"]))
    t = t.pivot_table(index="size", columns="family", values="top1").reindex(order)
    if only_plus:
        t = t[t.index.str.endswith("+")]
    return "; ".join(
        f"{s}: {r['ConViT']:.1f} vs {r['DeiT']:.1f} ({(r['ConViT'] / r['DeiT'] - 1) * 100:+.2f}%)"
        for s, r in t.iterrows()
    )


def _paper_table3(fraction: float, rows: str) -> Callable[[], str]:
    def text() -> str:
        t = load.load_paper("table3")
        t = t[np.isclose(t["fraction"], fraction)].set_index("row")["top1"]
        return f"{'10%' if fraction < 1 else 'full'}: " + ", ".join(f"{r} {t[r]:.1f}" for r in rows)

    return text


def _paper_t3_frozen() -> str:
    t = load.load_paper("table3").pivot_table(index="row", columns="fraction", values="top1")
    return "; ".join(
        f"{'10%' if f < 1 else 'full'}: f {t.at['f', f]:.1f}, g {t.at['g', f]:.1f}, e {t.at['e', f]:.1f}"
        for f in t.columns
    )


def _paper_t5() -> str:
    t = load.load_paper("table5").pivot_table(index="model", columns="mask", values="top1")
    return "; ".join(
        f"{m}: {r['pos_embed']:.1f} masked vs {r['none']:.1f} ({(1 - r['pos_embed'] / r['none']) * 100:.0f}% "
        "rel. drop)"
        for m, r in t.iterrows()
    )


def _paper_t6() -> str:
    t = load.load_paper("table6").pivot_table(index="layers_masked", columns="mask", values="top1")
    return "; ".join(
        f"k={k}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in t.iterrows()
    )


def _paper_t4() -> str:
    t = load.load_paper("table4").pivot_table(index="model", columns="distillation", values="top1")
    return "; ".join(f"{m}: {r['none']:.1f} -> {r['hard']:.1f}" for m, r in t.iterrows())


def _paper_cifar() -> str:
    t = load.load_paper("cifar100")
    return "; ".join(f"{r.model} {r.top1:.1f}" for r in t.itertuples()) + " (other points only in Fig. 11a)"


def _paper_sigma() -> str:
    t = load.load_paper("gate_sigma")
    f7 = t[t["figure"] == "fig7"].groupby("layer")["gate_sigma"].agg(["mean", "max"])
    return "Fig. 6: head-mean sigma ~0 in layers 6-10, some heads high in 1-5; Fig. 7 (Ti): " + ", ".join(
        f"layer {int(k)} mean {r['mean']:.2f} max {r['max']:.2f}" for k, r in f7.iterrows()
    )


def _text(s: str) -> Callable[[], str]:
    return lambda: s


# --- checks ----------------------------------------------------------------------------------------------


def check_t2_smallest(res: load.SuiteResults) -> Outcome:
    g = _gaps_by_fraction(res)
    f = g.index.min()
    r = g.loc[f]
    t, gaps = _fraction_seeds(res)
    comps = [_diff(t, (f, "convit"), (f, "deit"), f"f={f:g}: ConViT - DeiT")]
    holds = r["gap_pct"] > 0
    caveat = ""
    if res.scale == "paper":
        paper = _paper_table2_gaps()
        if np.isclose(f, paper.index.min()):
            target = paper["gap_pct"].iloc[0]
            holds = holds and abs(r["gap_pct"] - target) <= 10
            caveat = f"paper-scale magnitude check: |gap - {target:.1f}| <= 10 points"
            per_seed = _get(gaps, f).dropna()
            comps.append(
                Comparison(
                    f"10 - |rel. gap - {target:.1f}|",
                    {float(s): 10 - abs(v - target) for s, v in per_seed.items()},
                    "pts",
                )
            )
        else:
            caveat = "smallest fraction differs from the paper's 5%: direction only"
    else:
        caveat = f"tested at fraction {f:g} (the paper's is 0.05)" if not np.isclose(f, 0.05) else ""
    ours = f"{f:g}: ConViT {_fmt(r['convit'])} vs DeiT {_fmt(r['deit'])} ({r['gap_pct']:+.1f}% rel.)"
    return Outcome(bool(holds), ours, int(r["n"]), caveat, tuple(comps))


def check_t2_every(res: load.SuiteResults) -> Outcome:
    g = _gaps_by_fraction(res)
    t, _ = _fraction_seeds(res)
    comps = tuple(_diff(t, (f, "convit"), (f, "deit"), f"f={f:g}: ConViT - DeiT") for f in g.index)
    ours = "; ".join(f"{f:g}: {_fmt(r['convit'])} vs {_fmt(r['deit'])}" for f, r in g.iterrows())
    return Outcome(bool((g["convit"] > g["deit"]).all()), ours, int(g["n"].min()), comparisons=comps)


def check_t2_shrink(res: load.SuiteResults) -> Outcome:
    g = _gaps_by_fraction(res)
    if len(g) < 2:
        raise Missing("needs at least two fractions")
    tau = _kendall_tau(list(g.index), list(g["gap_pct"]))
    holds = g["gap_pct"].iloc[0] > g["gap_pct"].iloc[-1] and tau < 0
    _, gaps = _fraction_seeds(res)
    gaps = gaps[[f for f in g.index if f in gaps.columns]]
    lo, hi = g.index[0], g.index[-1]
    comps = (
        _diff(gaps, lo, hi, f"rel. gap f={lo:g} - f={hi:g}", "% rel."),
        Comparison("-(Kendall tau of fraction vs gap)", {s: -v for s, v in _per_seed_tau(gaps).items()}, ""),
    )
    ours = (
        "gap %: "
        + ", ".join(f"{f:g}: {v:+.1f}" for f, v in g["gap_pct"].items())
        + f" (Kendall tau {tau:+.2f})"
    )
    return Outcome(bool(holds), ours, int(g["n"].min()), comparisons=comps)


def _ablation_means(res: load.SuiteResults, which: str) -> tuple[pd.DataFrame, float, pd.DataFrame]:
    """Seed summary by ablation row at the small (< 1) or full fraction, the fraction, and its per-seed
    top-1 table (columns: rows)."""
    runs = res.runs
    if "row" not in runs.columns:
        runs = runs.assign(row=runs["variant"])
    runs = runs[runs["row"].notna()]
    runs = runs.assign(row=runs["row"].astype(str).str.strip().str.lower())
    fractions = sorted(runs["fraction"].dropna().unique())
    if which == "small":
        small = [f for f in fractions if f < 1]
        if not small:
            raise Missing("no reduced-data ablation runs (fraction < 1)")
        f = small[0]
    else:
        if not fractions or not np.isclose(fractions[-1], 1.0):
            raise Missing("no full-data ablation runs (fraction 1)")
        f = fractions[-1]
    at = runs[np.isclose(runs["fraction"], f)]
    return load.seed_summary(at, ["row"]), f, _seeds(at, ["row"])


def _ordering(chain: str, which: str) -> Callable[[load.SuiteResults], Outcome]:
    """Check the strict ordering ``chain`` (e.g. "abde" means a > b > d > e) on seed means."""

    def check(res: load.SuiteResults) -> Outcome:
        s, f, t = _ablation_means(res, which)
        by = s.set_index("row")
        absent = [r for r in chain if r not in by.index]
        if absent:
            raise Missing(f"rows {', '.join(absent)} missing at fraction {f:g}")
        means = [by.at[r, "mean"] for r in chain]
        holds = all(x > y for x, y in zip(means, means[1:], strict=False))
        ours = f"fraction {f:g}: " + ", ".join(f"{r} {_fmt(m)}" for r, m in zip(chain, means, strict=True))
        pairs = list(zip(chain, chain[1:], strict=False))
        comps = tuple(_diff(t, a, b, f"{a} - {b}") for a, b in pairs)
        return Outcome(
            holds, ours, int(by.loc[list(chain), "n"].min()), _noise_caveat(s, "row", pairs), comps
        )

    return check


def check_t3_full(res: load.SuiteResults) -> Outcome:
    s, f, t = _ablation_means(res, "full")
    by = s.set_index("row")
    need = list("abcde")
    absent = [r for r in need if r not in by.index]
    if absent:
        raise Missing(f"rows {', '.join(absent)} missing at full data")
    m = by["mean"]
    holds = m["a"] == m[need].max() and all(m[r] > m["e"] for r in "abcd")
    ours = "full: " + ", ".join(f"{r} {_fmt(m[r])}" for r in need)
    comps = tuple(_diff(t, "a", r, f"a - {r}") for r in "bcde") + tuple(
        _diff(t, r, "e", f"{r} - e") for r in "bcd"
    )
    return Outcome(
        bool(holds),
        ours,
        int(by.loc[need, "n"].min()),
        _noise_caveat(s, "row", [("a", "b"), ("d", "e")]),
        comps,
    )


def check_t3_frozen(res: load.SuiteResults) -> Outcome:
    small, fs, ts = _ablation_means(res, "small")
    full, ff, tf = _ablation_means(res, "full")
    ms, mf = small.set_index("row"), full.set_index("row")
    for frame, f in ((ms, fs), (mf, ff)):
        absent = [r for r in "efg" if r not in frame.index]
        if absent:
            raise Missing(f"rows {', '.join(absent)} missing at fraction {f:g}")
    holds = (
        ms.at["f", "mean"] > ms.at["g", "mean"]
        and mf.at["f", "mean"] > mf.at["g", "mean"]
        and ms.at["f", "mean"] > ms.at["e", "mean"]
    )
    ours = "; ".join(
        f"{f:g}: f {_fmt(m.at['f', 'mean'])}, g {_fmt(m.at['g', 'mean'])}, e {_fmt(m.at['e', 'mean'])}"
        for m, f in ((ms, fs), (mf, ff))
    )
    seeds = int(min(ms.loc[list("efg"), "n"].min(), mf.loc[list("efg"), "n"].min()))
    comps = (
        _diff(ts, "f", "g", f"{fs:g}: f - g"),
        _diff(tf, "f", "g", f"{ff:g}: f - g"),
        _diff(ts, "f", "e", f"{fs:g}: f - e"),
    )
    return Outcome(bool(holds), ours, seeds, comparisons=comps)


def check_t1(only_plus: bool) -> Callable[[load.SuiteResults], Outcome]:
    def check(res: load.SuiteResults) -> Outcome:
        p, t = _pairs_by_size(res, only_plus)
        ours = "; ".join(
            f"{s}: {_fmt(r['convit'])} vs {_fmt(r['deit'])} ({r['gain_pct']:+.2f}%)" for s, r in p.iterrows()
        )
        comps = tuple(_diff(t, (s, "convit"), (s, "deit"), f"{s}: ConViT - DeiT") for s in p.index)
        return Outcome(bool((p["convit"] > p["deit"]).all()), ours, int(p["n"].min()), comparisons=comps)

    return check


def check_t1_growth(res: load.SuiteResults) -> Outcome:
    p, t = _pairs_by_size(res, only_plus=True)
    if len(p) < 2:
        raise Missing("needs at least two + sizes")
    gains = list(p["gain_pct"])
    holds = all(b > a for a, b in zip(gains, gains[1:], strict=False))
    ours = "gain %: " + ", ".join(f"{s} {g:+.2f}" for s, g in zip(p.index, gains, strict=True))
    per_seed = {
        s: (_get(t, (s, "convit")) - _get(t, (s, "deit"))) / _get(t, (s, "deit")) * 100 for s in p.index
    }
    sizes = list(p.index)
    comps = tuple(
        Comparison(f"gain {b} - gain {a}", paired(per_seed[b], per_seed[a]), "% rel.")
        for a, b in zip(sizes, sizes[1:], strict=False)
    )
    return Outcome(holds, ours, int(p["n"].min()), comparisons=comps)


def _sweep(res: load.SuiteResults, axis: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed summary of top-1 along ``axis`` of the Fig. 8 grid, and its per-seed table (columns: axis)."""
    runs = res.runs
    if "gpsa_layers" not in runs.columns or "locality_strength" not in runs.columns:
        raise Missing("needs gpsa_layers and locality_strength tag columns")
    g = pd.to_numeric(runs["gpsa_layers"], errors="coerce")
    a = pd.to_numeric(runs["locality_strength"], errors="coerce")
    if axis == "gpsa_layers":
        sel = runs[a.isna() | np.isclose(a.fillna(1.0), 1.0) | (g == 0)]
    else:
        sel = runs[(g == g.max()) & a.notna()]
    sel = sel.assign(**{axis: pd.to_numeric(sel[axis], errors="coerce").astype(float)}).dropna(subset=[axis])
    s = load.seed_summary(sel, [axis])
    if len(s) < 2:
        raise Missing(f"needs at least two values of {axis}")
    return s.sort_values(axis), _seeds(sel, [axis])


def check_f8(axis: str) -> Callable[[load.SuiteResults], Outcome]:
    def check(res: load.SuiteResults) -> Outcome:
        s, t = _sweep(res, axis)
        tau = _kendall_tau(list(s[axis]), list(s["mean"]))
        ours = ", ".join(f"{v:g}: {_fmt(m)}" for v, m in zip(s[axis], s["mean"], strict=True))
        comps = (Comparison(f"Kendall tau ({axis} vs top-1)", _per_seed_tau(t), ""),)
        return Outcome(
            tau > 0, f"{axis} -> top-1: {ours} (Kendall tau {tau:+.2f})", _min_seeds(s), comparisons=comps
        )

    return check


def check_f8_early(res: load.SuiteResults) -> Outcome:
    if "gpsa_layers" not in res.runs.columns or res.curves.empty:
        raise Missing("needs gpsa_layers and per-epoch curves")
    runs = res.runs.assign(g=pd.to_numeric(res.runs["gpsa_layers"], errors="coerce"))
    a = pd.to_numeric(runs.get("locality_strength"), errors="coerce") if "locality_strength" in runs else None
    if a is not None:
        runs = runs[a.isna() | np.isclose(a.fillna(1.0), 1.0) | (runs["g"] == 0)]
    lo, hi = runs["g"].min(), runs["g"].max()
    if not (np.isfinite(lo) and hi > lo):
        raise Missing("needs runs with different GPSA layer counts")
    c = res.curves.dropna(subset=["val_top1"]).merge(runs[["run", "g", "epochs"]], on="run")
    c = c[c["epoch"] >= np.ceil(c["epochs"] * 20 / 300)]
    first = c.groupby("g")["epoch"].min()
    if lo not in first.index or hi not in first.index:
        raise Missing("no evaluated epoch for the extreme GPSA counts")
    epoch = max(first[lo], first[hi])
    at = c[c["epoch"] == epoch].groupby("g")["val_top1"].agg(["mean", "count"])
    if lo not in at.index or hi not in at.index:
        raise Missing("no common evaluated epoch")
    ratio = at.at[hi, "mean"] / at.at[lo, "mean"] if at.at[lo, "mean"] > 0 else float("inf")
    ours = (
        f"epoch {int(epoch)}: {int(hi)} GPSA {_fmt(at.at[hi, 'mean'])} vs {int(lo)} GPSA "
        f"{_fmt(at.at[lo, 'mean'])} (x{ratio:.2f})"
    )
    t = _seeds(c[c["epoch"] == epoch], ["g"], "val_top1")
    comps = (_diff(t, hi, lo, f"epoch {int(epoch)}: {int(hi)} GPSA - {int(lo)} GPSA"),)
    return Outcome(
        bool(at.at[hi, "mean"] > at.at[lo, "mean"]), ours, int(at["count"].min()), comparisons=comps
    )


def _final_locality(res: load.SuiteResults, fam: str) -> pd.DataFrame:
    loc = res.locality[res.locality["family"] == fam]
    if loc.empty:
        raise Missing(f"no locality probes for {fam}")
    if "fraction" in loc.columns and loc["fraction"].notna().any():
        loc = loc[loc["fraction"] == loc["fraction"].max()]
    return loc


def _gpsa_layers(loc: pd.DataFrame) -> list[int]:
    return sorted(loc.loc[loc["gate_sigma"].notna(), "layer"].unique())


def check_f6_sigma(res: load.SuiteResults) -> Outcome:
    loc = _final_locality(res, "convit")
    layers = _gpsa_layers(loc)
    if len(layers) < 2:
        raise Missing("needs gate_sigma for at least two GPSA layers")
    last = loc[loc["epoch"] == loc.groupby("run")["epoch"].transform("max")].dropna(subset=["gate_sigma"])
    per_head = last.groupby(["layer", "head"])["gate_sigma"].mean()  # mean over seeds
    head_mean = per_head.groupby("layer").mean()
    half = len(layers) // 2
    early, late = layers[:half], layers[half:]
    late_max = float(head_mean.loc[late].max())
    early_best = float(per_head.loc[early].max())
    holds = late_max <= 0.1 and early_best >= 0.5
    ours = (
        f"final epoch {int(last['epoch'].max())}: head-mean sigma in later GPSA layers "
        f"{late[0] + 1}-{late[-1] + 1}: max {late_max:.2f}; max single-head sigma in layers "
        f"{early[0] + 1}-{early[-1] + 1}: {early_best:.2f}"
    )
    seed_head = _seeds(last, ["layer", "head"], "gate_sigma")  # seed x (layer, head)
    comps = [
        Comparison(
            f"0.1 - sigma L{layer + 1}",
            {float(s): 0.1 - v for s, v in seed_head[layer].mean(axis=1).dropna().items()},
            "",
        )
        for layer in late
    ]
    best = seed_head[[c for c in seed_head.columns if c[0] in early]].max(axis=1).dropna()
    comps.append(
        Comparison(
            f"max sigma L{early[0] + 1}-{early[-1] + 1} - 0.5",
            {float(s): v - 0.5 for s, v in best.items()},
            "",
        )
    )
    return Outcome(
        holds,
        ours,
        int(last["run"].nunique()),
        "layers numbered from 1; later half of GPSA layers",
        tuple(comps),
    )


def _nonloc_per_layer(loc: pd.DataFrame, when: str) -> pd.Series:
    ep = loc.groupby("run")["epoch"].transform("max" if when == "last" else "min")
    sel = loc[loc["epoch"] == ep].dropna(subset=["nonlocality"])
    return sel.groupby(["run", "layer"])["nonlocality"].mean().groupby("layer").mean()


def _nonloc_seeds(loc: pd.DataFrame, when: str) -> pd.DataFrame:
    """Head-mean nonlocality at each run's first or last probe: one row per seed, one column per layer."""
    ep = loc.groupby("run")["epoch"].transform("max" if when == "last" else "min")
    return _seeds(loc[loc["epoch"] == ep].dropna(subset=["nonlocality"]), ["layer"], "nonlocality")


def _diff_frames(a: pd.DataFrame, b: pd.DataFrame, key: object, label: str, unit: str) -> Comparison:
    """The comparison "a[key] - b[key] > 0" between two per-seed tables, paired by seed."""
    return Comparison(label, paired(_get(a, key), _get(b, key)), unit)


def check_f5_end(res: load.SuiteResults) -> Outcome:
    conv, deit = _final_locality(res, "convit"), _final_locality(res, "deit")
    c, d = _nonloc_per_layer(conv, "last").mean(), _nonloc_per_layer(deit, "last").mean()
    seeds = int(min(conv["run"].nunique(), deit["run"].nunique()))
    cs, ds = _nonloc_seeds(conv, "last").mean(axis=1), _nonloc_seeds(deit, "last").mean(axis=1)
    comps = (Comparison("DeiT - ConViT layer-mean nonlocality", paired(ds, cs), "patches"),)
    return Outcome(
        bool(c < d),
        f"layer-mean nonlocality at the last epoch: ConViT {c:.2f} vs DeiT {d:.2f}",
        seeds,
        comparisons=comps,
    )


def check_f5_grow(res: load.SuiteResults) -> Outcome:
    conv = _final_locality(res, "convit")
    layers = _gpsa_layers(conv)
    if not layers:
        raise Missing("no GPSA layers in the probes")
    first, last = _nonloc_per_layer(conv, "first"), _nonloc_per_layer(conv, "last")
    if conv["epoch"].nunique() < 2:
        raise Missing("needs probes at two epochs at least")
    grew = [layer for layer in layers if last[layer] > first[layer]]
    ours = (
        f"grew in {len(grew)}/{len(layers)} GPSA layers ("
        + ", ".join(f"L{layer + 1} {first[layer]:.2f}->{last[layer]:.2f}" for layer in layers)
        + ")"
    )
    fs, ls = _nonloc_seeds(conv, "first"), _nonloc_seeds(conv, "last")
    comps = tuple(_diff_frames(ls, fs, layer, f"L{layer + 1} last - first", "patches") for layer in layers)
    return Outcome(len(grew) == len(layers), ours, int(conv["run"].nunique()), comparisons=comps)


def _mask_kind(series: pd.Series) -> pd.Series:
    aliases = {
        "none": "none",
        "no": "none",
        "": "none",
        "nan": "none",
        "pos_embed": "pos_embed",
        "pos": "pos_embed",
        "pos_emb": "pos_embed",
        "position_embedding": "pos_embed",
        "content": "content",
        "position": "position",
    }
    return series.astype(str).str.strip().str.lower().map(lambda s: aliases.get(s, s))


def _with_mask(runs: pd.DataFrame) -> pd.DataFrame:
    """Add a normalised ``mask`` column: from a ``mask`` tag, else parsed from the variant
    (``convit_tiny-nomask``, ``..-mask_pos_embed``, ``..-mask_content-k3``); evaluation entries only when the
    suite also holds training runs (``task`` column)."""
    if "task" in runs.columns and (runs["task"] == "eval").any():
        runs = runs[runs["task"] == "eval"]
    if "mask" in runs.columns:
        return runs.assign(mask=_mask_kind(runs["mask"]))
    v = runs["variant"].astype(str).str.lower()
    kind = v.str.extract(r"mask_(pos_embed|content|position)", expand=False)
    kind = kind.where(kind.notna(), np.where(v.str.contains("nomask"), "none", None))
    return runs.assign(mask=kind)


def check_t5(res: load.SuiteResults) -> Outcome:
    runs = _with_mask(res.runs)
    if runs["mask"].isna().all():
        raise Missing("no masking evaluations")
    runs = runs[runs["mask"].isin(["none", "pos_embed"]) & runs["family"].isin(["convit", "deit"])]
    if "layers_masked" in runs.columns:
        lm = pd.to_numeric(runs["layers_masked"], errors="coerce")
        runs = runs[lm.isna() | (lm == 0) | (runs["mask"] == "pos_embed")]
    s = load.seed_summary(runs, ["family", "mask"])
    w = s.pivot_table(index="family", columns="mask", values="mean")
    if not {"none", "pos_embed"} <= set(w.columns) or not {"convit", "deit"} <= set(w.index):
        raise Missing("needs masked and unmasked evaluations of ConViT and DeiT")
    drop = 1 - w["pos_embed"] / w["none"]
    ours = "; ".join(
        f"{f}: {w.at[f, 'pos_embed']:.1f} masked vs {w.at[f, 'none']:.1f} ({drop[f] * 100:.0f}% rel. drop)"
        for f in ("convit", "deit")
    )
    t = _seeds(runs, ["family", "mask"])
    drops = {f: (1 - _get(t, (f, "pos_embed")) / _get(t, (f, "none"))) * 100 for f in ("convit", "deit")}
    comps = (Comparison("DeiT drop - ConViT drop", paired(drops["deit"], drops["convit"]), "% rel."),)
    return Outcome(bool(drop["convit"] < drop["deit"]), ours, _min_seeds(s), comparisons=comps)


def _t6_table(res: load.SuiteResults) -> tuple[pd.DataFrame, int, pd.DataFrame]:
    runs = res.runs
    if "layers_masked" not in runs.columns:
        raise Missing("no layers_masked column")
    runs = _with_mask(runs)
    runs = runs.assign(k=pd.to_numeric(runs["layers_masked"], errors="coerce"))
    runs = runs[runs["mask"].isin(["content", "position"]) & (runs["k"] > 0)]
    s = load.seed_summary(runs, ["k", "mask"])
    w = s.pivot_table(index="k", columns="mask", values="mean").dropna()
    if w.empty or not {"content", "position"} <= set(w.columns):
        raise Missing("needs content- and position-masked evaluations")
    return w.sort_index(), _min_seeds(s), _seeds(runs, ["k", "mask"])


def check_t6_order(res: load.SuiteResults) -> Outcome:
    w, n, t = _t6_table(res)
    ours = "; ".join(
        f"k={int(k)}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in w.iterrows()
    )
    comps = tuple(
        _diff(t, (k, "position"), (k, "content"), f"k={int(k)}: position - content") for k in w.index
    )
    return Outcome(bool((w["content"] < w["position"]).all()), ours, n, comparisons=comps)


def check_t6_depth(res: load.SuiteResults) -> Outcome:
    w, n, t = _t6_table(res)
    if len(w) < 2:
        raise Missing("needs at least two values of k")
    holds = bool((w["content"].diff().dropna() < 0).all() and (w["position"].diff().dropna() < 0).all())
    ours = "; ".join(
        f"k={int(k)}: content {r['content']:.1f}, position {r['position']:.1f}" for k, r in w.iterrows()
    )
    ks = list(w.index)
    comps = tuple(
        _diff(t, (a, m), (b, m), f"{m}: k={int(a)} - k={int(b)}")
        for m in ("content", "position")
        for a, b in zip(ks, ks[1:], strict=False)
    )
    return Outcome(holds, ours, n, comparisons=comps)


def check_f9(res: load.SuiteResults) -> Outcome:
    c = res.curves.dropna(subset=["val_top1"])
    c = c[c["family"].isin(["psa", "deit"])]
    w = c.groupby(["epoch", "family"])["val_top1"].mean().unstack()
    if not {"psa", "deit"} <= set(w.columns):
        raise Missing("needs PSA and DeiT learning curves")
    w = w.dropna()
    if len(w) < 2:
        raise Missing("needs at least two common evaluated epochs")
    e0, e1 = w.index.min(), w.index.max()
    holds = w.at[e0, "psa"] > w.at[e0, "deit"] and w.at[e1, "deit"] > w.at[e1, "psa"]
    ours = (
        f"epoch {int(e0)}: PSA {w.at[e0, 'psa']:.1f} vs DeiT {w.at[e0, 'deit']:.1f}; epoch {int(e1)}: "
        f"PSA {w.at[e1, 'psa']:.1f} vs DeiT {w.at[e1, 'deit']:.1f}"
    )
    t = _seeds(c, ["epoch", "family"], "val_top1")
    comps = (
        _diff(t, (e0, "psa"), (e0, "deit"), f"epoch {int(e0)}: PSA - DeiT"),
        _diff(t, (e1, "deit"), (e1, "psa"), f"epoch {int(e1)}: DeiT - PSA"),
    )
    return Outcome(bool(holds), ours, int(c.groupby("family")["run"].nunique().min()), comparisons=comps)


def check_t4(res: load.SuiteResults) -> Outcome:
    runs = res.runs
    col = "distillation" if "distillation" in runs.columns else "variant"
    kind = (
        runs[col]
        .astype(str)
        .str.lower()
        .map(
            lambda v: "hard" if "hard" in v else ("none" if v in ("none", "nan", "", "no", "baseline") else v)
        )
    )
    s = load.seed_summary(runs.assign(kind=kind), ["model", "kind"])
    w = s.pivot_table(index="model", columns="kind", values="mean")
    if not {"hard", "none"} <= set(w.columns):
        raise Missing("needs distilled and non-distilled runs")
    w = w[["none", "hard"]].dropna()
    if w.empty:
        raise Missing("no model has both")
    ours = "; ".join(f"{m}: {r['none']:.1f} -> {r['hard']:.1f}" for m, r in w.iterrows())
    t = _seeds(runs.assign(kind=kind), ["model", "kind"])
    comps = tuple(_diff(t, (m, "hard"), (m, "none"), f"{m}: distilled - not") for m in w.index)
    return Outcome(bool((w["hard"] > w["none"]).all()), ours, _min_seeds(s), comparisons=comps)


CLAIMS: list[Claim] = [
    Claim(
        "T1-all",
        "ConViT beats the DeiT of the same size (Ti, S, B, Ti+, S+, B+)",
        "Table 1",
        "main_table",
        "Pair runs by model name without the family prefix (convit_small <-> deit_small); reproduced iff "
        "ConViT's seed-mean top-1 exceeds DeiT's for every pair tested.",
        lambda: _paper_table1(False),
        check_t1(False),
    ),
    Claim(
        "T1-plus",
        "ConViT-Ti+/S+/B+ beat DeiT-Ti+/S+/B+",
        "Table 1",
        "main_table",
        "As T1-all, restricted to the + (64 dims per head) pairs.",
        lambda: _paper_table1(True),
        check_t1(True),
    ),
    Claim(
        "T1-plus-growth",
        "The relative gain of ConViT+ over DeiT+ grows with model size",
        "Table 1, Fig. 11b",
        "main_table",
        "Relative gain (ConViT-DeiT)/DeiT strictly increases with parameter count over the "
        "+ pairs tested (at least two).",
        lambda: _paper_table1(True),
        check_t1_growth,
    ),
    Claim(
        "T2-smallest",
        "ConViT-S beats DeiT-S by 37% relative top-1 at 5% of ImageNet",
        "Table 2, Fig. 2a",
        "sample_efficiency",
        "At the smallest fraction tested: ConViT seed-mean top-1 > DeiT's. At paper "
        "scale and fraction 0.05 only, the relative gap must also lie within 10 points of the paper's.",
        _paper_t2_smallest,
        check_t2_smallest,
    ),
    Claim(
        "T2-every",
        "ConViT-S beats DeiT-S at every training-set fraction",
        "Table 2",
        "sample_efficiency",
        "ConViT seed-mean top-1 > DeiT's at every fraction tested.",
        _paper_t2_every,
        check_t2_every,
    ),
    Claim(
        "T2-shrink",
        "The relative gap shrinks as the training set grows",
        "Table 2, Fig. 2a, Fig. 11c",
        "sample_efficiency",
        "Relative gap at the smallest fraction > at the largest, and Kendall tau between "
        "fraction and gap < 0 (at least two fractions).",
        _paper_t2_gaps,
        check_t2_shrink,
    ),
    Claim(
        "T3-small-gating",
        "Ablations at 10% data: a > b > d > e (conv init and GPSA each help)",
        "Table 3",
        "ablations",
        "Strict ordering of seed-mean top-1 of rows a, b, d, e at the smallest fraction < 1.",
        _paper_table3(0.1, "abde"),
        _ordering("abde", "small"),
        gate_scope="smallest_below_1",
    ),
    Claim(
        "T3-small-conv",
        "Ablations at 10% data: a > c > d (gating helps)",
        "Table 3",
        "ablations",
        "Strict ordering of seed-mean top-1 of rows a, c, d at the smallest fraction < 1.",
        _paper_table3(0.1, "acd"),
        _ordering("acd", "small"),
        gate_scope="smallest_below_1",
    ),
    Claim(
        "T3-full",
        "Full data: ConViT (a) is best and every trainable-GPSA variant (a-d) beats DeiT (e)",
        "Table 3",
        "ablations",
        "At fraction 1: a has the highest seed mean among a-e, and a, b, c, d each exceed e.",
        _paper_table3(1.0, "abcde"),
        check_t3_full,
    ),
    Claim(
        "T3-frozen",
        "Frozen GPSA: conv init rescues it (f > g) and beats DeiT at 10% (f > e)",
        "Table 3",
        "ablations",
        "f > g at the smallest fraction and at full data, and f > e at the smallest fraction "
        "(the paper's full-data f < e, -0.5, is not judged: within run-to-run noise).",
        _paper_t3_frozen,
        check_t3_frozen,
    ),
    Claim(
        "F8-gpsa",
        "Top-1 increases with the number of GPSA layers",
        "Fig. 8, Fig. 12 left",
        "ablations",
        "At the default locality strength (1), Kendall tau between #GPSA layers and seed-mean top-1 > 0.",
        _text("curves only (axis 0/3/6/9 layers, top-1 77-81)"),
        check_f8("gpsa_layers"),
    ),
    Claim(
        "F8-alpha",
        "Top-1 increases with the locality strength alpha",
        "Fig. 8 left",
        "ablations",
        "At the largest #GPSA layers, Kendall tau between alpha and seed-mean top-1 > 0.",
        _text("curves only (alpha 0.01-1)"),
        check_f8("locality_strength"),
    ),
    Claim(
        "F8-early",
        "Head start: early in training more GPSA layers give higher accuracy",
        "Fig. 8 right",
        "ablations",
        "At the first evaluated epoch >= 20/300 of the schedule, the run with the most GPSA layers "
        "has higher top-1 than the one with 0 (the paper's 'almost doubles' is reported, not judged).",
        _text("after 20 of 300 epochs, 9 GPSA layers almost double top-1"),
        check_f8_early,
    ),
    Claim(
        "F6-sigma",
        "sigma(lambda) reaches ~0 in the later GPSA layers while early layers keep positional heads",
        "Fig. 6, 7, 14, 17",
        "locality",
        "At the last probed epoch (ConViT, largest fraction), the head-mean "
        "sigma of every GPSA layer in the later half is <= 0.1, and some head in the earlier half has "
        "sigma >= 0.5.",
        _paper_sigma,
        check_f6_sigma,
        LOCALITY_SOURCES,
        gate_locality=("convit",),
    ),
    Claim(
        "F5-end",
        "ConViT's nonlocality ends below DeiT's",
        "Fig. 5, 13",
        "locality",
        "At the last probed epoch, the layer-mean nonlocality (mean over heads, layers, seeds) of ConViT < "
        "DeiT's.",
        _text("curves only (y 3-7 patches)"),
        check_f5_end,
        LOCALITY_SOURCES,
        gate_locality=("convit", "deit"),
    ),
    Claim(
        "F5-grow",
        "ConViT's nonlocality grows during training in every GPSA layer",
        "Fig. 5",
        "locality",
        "Head-mean nonlocality at the last probed epoch > at the first, in every GPSA layer.",
        _text("curves only"),
        check_f5_grow,
        LOCALITY_SOURCES,
        gate_locality=("convit",),
    ),
    Claim(
        "T5",
        "Masking the positional embedding at test time hurts DeiT-Ti far more than ConViT-Ti",
        "Table 5",
        "masking",
        "Relative drop 1 - masked/unmasked of ConViT < DeiT's.",
        _paper_t5,
        check_t5,
    ),
    Claim(
        "T6-order",
        "In the first k GPSA layers, masking content hurts more than masking position",
        "Table 6",
        "masking",
        "Content-masked top-1 < position-masked top-1 for every k tested.",
        _paper_t6,
        check_t6_order,
    ),
    Claim(
        "T6-depth",
        "Masking more GPSA layers hurts more",
        "Table 6",
        "masking",
        "Both content- and position-masked top-1 strictly decrease as k grows (at least two k).",
        _paper_t6,
        check_t6_depth,
    ),
    Claim(
        "F9",
        "Vanilla PSA + conv init leads DeiT early, then DeiT catches up and overtakes",
        "Fig. 9",
        "psa",
        "At the first common evaluated epoch PSA's mean val top-1 > DeiT's, and at the last DeiT's > PSA's.",
        _text("curves only"),
        check_f9,
    ),
    Claim(
        "C100",
        "ConViT beats DeiT on CIFAR-100 at every size",
        "Fig. 11a, SM C",
        "cifar100",
        "As T1-all, on the cifar100 suite.",
        _paper_cifar,
        check_t1(False),
    ),
    Claim(
        "T4",
        "Hard distillation improves every model",
        "Table 4",
        "distillation",
        "For every model with both runs, distilled seed-mean top-1 > non-distilled.",
        _paper_t4,
        check_t4,
    ),
]
