"""Generate ``REPRODUCTION.md``: every claim of the paper, the scale we tested it at, our numbers, the
paper's, and a verdict computed by an explicit rule.

Usage::

    python -m analysis.report [--results DIR] [--out REPRODUCTION.md] [--no-figures]

Why rules are code: a verdict must be regenerated from ``results/`` by one command and must not depend on who
reads the plots. Each :class:`Claim` states its rule in words (printed in the report) and implements exactly
that rule in its ``check`` function. Verdicts (the gate and the intervals are :mod:`analysis.gate`'s):

* ``inconclusive (under-trained)``: the claim's runs fail its competence gate (the DeiT baseline does not
  beat a linear classifier on pixels, its training loss is not well below chance, or, for gating/locality
  claims, sigma(lambda) and nonlocality did not move): the scale cannot tell, whatever the means say;
* ``reproduced``: the gate passes and every per-seed comparison of the rule has its 95% interval above 0;
* ``not reproduced``: the gate passes and some comparison has its 95% interval below 0;
* ``inconclusive (within noise)``: the gate passes but the seeds do not separate the effect from 0 (one
  seed always lands here: no interval);
* ``not yet run``: the suite has no results at any scale, or lacks the runs the rule needs.

Quantitative claims ("by 37%") are judged on direction only below ``paper`` scale, because a CIFAR-10 or
Tiny-ImageNet run cannot be expected to match ImageNet numbers; at ``paper`` scale the magnitude is checked
too, with the tolerance given in the rule. Qualitative claims are judged on direction or ordering at every
scale. Every verdict carries the scale, the seed count and a caveat; smoke-scale verdicts are meaningless
(plumbing only) and say so.

The report shows its evidence: it (re)draws, with :mod:`analysis.plots`, the figures behind each claim group
from the very results it judges, into ``analysis/figures/`` beside the report (``<folder of --out>/analysis/
figures``), and embeds each with a relative link, so the curves sit next to the verdicts on a code host.
``--no-figures`` embeds only the figure files that already exist there.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import gate, load, plots
from analysis.claims import CLAIMS, Claim, Missing
from analysis.gate import NOT_REPRODUCED, NOT_RUN, REPRODUCED, UNDER_TRAINED, VERDICTS, WITHIN_NOISE

__all__ = [
    "NOT_REPRODUCED",
    "NOT_RUN",
    "REPRODUCED",
    "UNDER_TRAINED",
    "VERDICTS",
    "WITHIN_NOISE",
    "Verdict",
    "draw_figures",
    "evidence",
    "evaluate",
    "main",
    "render",
    "summary",
    "verdict_table",
]
#: hand-written reading of the results, included verbatim in the report when it exists in the results folder
INTERPRETATION = "interpretation.md"


@dataclass(frozen=True)
class Verdict:
    """One line of the report."""

    claim_id: str
    claim: str
    where: str
    rule: str
    suite: str
    scale: str | None
    seeds: int
    ours: str
    paper: str
    verdict: str
    caveat: str
    #: the competence gate's criteria with their figures ("" when the claim was not judged)
    gate: str = ""
    #: each per-seed comparison of the rule with its mean and 95% interval over paired seeds
    gaps: str = ""


def _scale_caveat(res: load.SuiteResults) -> str:
    if res.scale == "paper":
        return "paper scale"
    if res.scale == "smoke":
        return "SMOKE scale: plumbing check only, the verdict means nothing about the paper"
    epochs = res.runs["epochs"].dropna()
    ep = f"{int(epochs.min())}-{int(epochs.max())} epochs" if len(epochs) else "epochs unknown"
    ds = ", ".join(sorted(map(str, res.runs["dataset"].dropna().unique())))
    return f"{res.scale} scale ({ds}, {ep}): direction/ordering only, not the paper's numbers"


def _source(claim: Claim, results_dir: Path | None) -> load.SuiteResults:
    """The suite results a claim is judged on (for locality claims: the first suite with probes)."""
    if not claim.sources:
        return load.load_suite(claim.suite, results_dir=results_dir)
    return load.load_locality_source(claim.sources, results_dir)


def evaluate(results_dir: str | Path | None = None) -> list[Verdict]:
    """Judge every claim in :data:`CLAIMS` on the results under ``results_dir``."""
    rdir = Path(results_dir) if results_dir is not None else None
    out = []
    for c in CLAIMS:
        res = _source(c, rdir)
        paper = c.paper()
        base = dict(claim_id=c.id, claim=c.text, where=c.where, rule=c.rule, suite=res.suite, paper=paper)
        if res.empty:
            out.append(
                Verdict(
                    **base,
                    scale=None,
                    seeds=0,
                    ours="-",
                    verdict=NOT_RUN,
                    caveat=f"suite {res.suite} has no results at any scale",
                )
            )
            continue
        try:
            o = c.check(res)
        except Missing as e:
            out.append(
                Verdict(
                    **base,
                    scale=res.scale,
                    seeds=0,
                    ours="-",
                    verdict=NOT_RUN,
                    caveat=f"{res.suite} @ {res.scale} lacks what the rule needs: {e}",
                )
            )
            continue
        caveat = "; ".join(x for x in (_scale_caveat(res), o.caveat) if x)
        if o.seeds < 2:
            caveat += "; single seed"
        g = gate.competence_gate(res, c.gate_scope, c.gate_locality, rdir)
        verdict = gate.judge(o.comparisons) if g.passed else UNDER_TRAINED
        if verdict == WITHIN_NOISE and not o.comparisons:
            caveat += "; the check states no per-seed comparison"
        rule_on_means = "holds" if o.holds else "fails"
        out.append(
            Verdict(
                **base,
                scale=res.scale,
                seeds=o.seeds,
                ours=f"{o.ours} (rule on seed means: {rule_on_means})",
                verdict=verdict,
                caveat=caveat,
                gate=g.text(),
                gaps="; ".join(x.text() for x in o.comparisons) or "-",
            )
        )
    return out


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _table(verdicts: list[Verdict]) -> list[str]:
    """The claims table: our numbers, the per-seed gaps with their intervals, the gate, the verdict."""
    lines = [
        "| id | claim | paper ref | scale | seeds | ours | gaps, 95% CI over seeds | gate | paper "
        "| verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        cells = (
            v.claim_id,
            v.claim,
            v.where,
            v.scale or "-",
            v.seeds or "-",
            v.ours,
            v.gaps or "-",
            v.gate or "-",
            v.paper,
            f"**{v.verdict}**",
        )
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines


def summary(verdicts: list[Verdict]) -> str:
    """One line counting every verdict, smoke-scale judgements apart (plumbing, never evidence)."""
    counts = pd.Series([v.verdict for v in verdicts if v.scale != "smoke" or v.verdict == NOT_RUN])
    counts = counts.value_counts()
    smoke = sum(v.scale == "smoke" and v.verdict != NOT_RUN for v in verdicts)
    return (
        "Summary: "
        + ", ".join(f"{counts.get(k, 0)} {k}" for k in VERDICTS)
        + (f"; {smoke} judged on smoke-scale runs only (plumbing, not evidence)" if smoke else "")
        + "."
    )


def verdict_table(
    suites: tuple[str, ...] | list[str] | None = None, results_dir: str | Path | None = None
) -> str:
    """The report's claims table (Markdown) restricted to claims of ``suites``, with the summary line:
    what the notebooks show beside their figures, so a figure is never read without its gate."""
    ids = {c.id for c in CLAIMS if suites is None or c.suite in suites}
    verdicts = [v for v in evaluate(results_dir) if v.claim_id in ids]
    return "\n".join([summary(verdicts), "", *_table(verdicts)]) + "\n"


#: how each claim group (a suite) is headed in the report's evidence section
GROUP_TITLES: dict[str, str] = {
    "main_table": "Model zoo (Table 1, Fig. 2b)",
    "sample_efficiency": "Sample efficiency (Table 2, Figs. 2a, 11c)",
    "ablations": "Ablations (Table 3, Figs. 8, 12)",
    "locality": "Locality and gating (Figs. 5, 6, 13, 14)",
    "masking": "Test-time masking (Tables 5, 6)",
    "psa": "PSA with convolutional init (Fig. 9)",
    "cifar100": "CIFAR-100 (Fig. 11a)",
    "distillation": "Hard distillation (Table 4)",
}


def figures_folder(out: Path) -> Path:
    """Where the report's figures live: ``analysis/figures`` beside the report (for the default ``--out``,
    this checkout's ``analysis/figures``, where the notebooks save them too)."""
    return Path(out).resolve().parent / "analysis" / "figures"


def draw_figures(results_dir: str | Path | None, folder: Path) -> dict[str, Path]:
    """Draw every figure of :data:`analysis.plots.FIGURES_OF` from ``results_dir`` into ``folder``."""
    return plots.draw_all(results_dir, folder)


def _caption(name: str) -> str:
    """A figure's caption: the docstring's first paragraph of the function that draws it."""
    doc = (plots.FIGURES_OF[name][1].__doc__ or name).strip().split("\n\n")[0]
    return " ".join(doc.split())


def evidence(verdicts: list[Verdict], folder: Path, report_dir: Path) -> list[str]:
    """The report's evidence section: per claim group, its verdicts in one line and the figures behind them,
    embedded with links relative to ``report_dir``, each only if its file exists in ``folder``."""
    lines = ["## Evidence: the figure behind each claim group", ""]
    lines.append(
        "Drawn by `analysis/plots.py` from the same results as the verdicts above (the notebooks save the "
        "same figures). In every figure ConViT is red and DeiT blue; each panel of ours names its scale and "
        "the seeds behind each point."
    )
    lines.append("")
    groups = list(dict.fromkeys(c.suite for c in CLAIMS))
    for suite in groups:
        vs = [v for v in verdicts if next(c for c in CLAIMS if c.id == v.claim_id).suite == suite]
        if not vs:
            continue
        lines += [f"### {GROUP_TITLES.get(suite, suite)}", ""]
        lines.append("; ".join(f"{v.claim_id}: **{v.verdict}**" for v in vs) + ".")
        lines.append("")
        shown = 0
        for name in plots.figures_for(suite):
            path = Path(folder) / f"{name}.png"
            if path.is_file():
                link = Path(os.path.relpath(path.resolve(), Path(report_dir).resolve())).as_posix()
                lines += [f"![{name}]({link})", "", f"*{_caption(name)}*", ""]
                shown += 1
        if not shown:
            lines += ["(no figure for this group" + (" drawn yet)" if plots.figures_for(suite) else ")"), ""]
    return lines


def render(
    verdicts: list[Verdict],
    results_dir: str | Path | None = None,
    figures: Path | None = None,
    report_dir: Path | None = None,
) -> str:
    """The Markdown report: a summary table, the figures behind each claim group (when ``figures``, the
    folder holding them, is given; links relative to ``report_dir``), then one section per claim with its
    rule and caveats."""
    rdir = Path(results_dir) if results_dir is not None else load.default_results_dir()
    lines = [
        "# Reproduction report: ConViT (d'Ascoli et al., ICML 2021)",
        "",
        "Generated by `python -m analysis.report` from the tidy results in "
        f"`{rdir.name if rdir == load.default_results_dir() else rdir}/`; do not edit by hand. "
        "Paper numbers come from `results/paper/*.csv` (each row names its source).",
        "",
        "Verdicts (rules in `analysis/gate.py`): first the claim's runs must pass a **competence gate**, "
        "measured from their own logs: the DeiT baseline at the claim's largest fraction beats a linear "
        "classifier on raw pixels of the same data (`results/reference/pixel_linear_probe.csv`, "
        "`python -m analysis.pixel_probe`), its final training loss is at most "
        f"{gate.LOSS_SHARE_OF_CHANCE:g} ln K (ln K is the loss at chance under any label smoothing or "
        f"Mixup), and for gating/locality claims sigma(lambda) moved by >= {gate.SIGMA_MOVE:g} in some "
        f"GPSA head and nonlocality by >= {gate.NONLOCALITY_MOVE * 100:.0f}% in some layer between the "
        "first and last probe; otherwise **inconclusive (under-trained)**, with the gate's figures in the "
        "row. Past the gate, each rule is a set of per-seed comparisons (ConViT - DeiT, a - b, ...) that "
        "must all be positive, each with a 95% Student t interval over paired seeds: *reproduced* = every "
        "interval above 0; *not reproduced* = some interval below 0; **inconclusive (within noise)** = "
        "neither (always so with one seed: no interval). *not yet run* = no results, or not the runs the "
        "rule needs. Below `paper` scale, quantitative claims are judged on direction only and every claim "
        "on direction/ordering: a verdict at `cpu` or `reduced` scale says whether the *qualitative* effect "
        "appears there, not that the paper's numbers were matched. Smoke-scale verdicts are plumbing checks "
        f"and mean nothing. Scales are chosen per suite, best available first: {' > '.join(load.SCALES)}.",
        "",
        summary(verdicts),
        "",
        "## Scales used",
        "",
        "Committed runs whose name (which ends with the digest of the run's spec) today's specs do not give "
        "were made by an earlier definition of their scale, or with `--set` overrides: they are set aside, "
        "never judged as today's experiment (`analysis/load.py`).",
        "",
        "| suite | scale shown | scales available | runs set aside (not today's specs) |",
        "|---|---|---|---|",
    ]
    for suite in load.SUITES:
        res = load.load_suite(suite, results_dir=results_dir)
        aside = ", ".join(f"{scale}: {len(names)}" for scale, names in res.stale.items()) or "-"
        lines.append(
            f"| {suite} | {res.scale or 'not yet run'} | {', '.join(res.scales_available) or '-'} | {aside} |"
        )
    lines += ["", "## Claims", "", *_table(verdicts)]
    if figures is not None:
        lines += ["", *evidence(verdicts, figures, report_dir if report_dir is not None else load.REPO)]
    notes = rdir / INTERPRETATION
    if notes.is_file():
        # Why a claim fails at a scale (too few steps, noise, recipe) is a judgement, not a rule: written
        # by hand next to the results it reads, and included verbatim so that it travels with them.
        lines += ["", f"## Reading these results (written by hand in `{rdir.name}/{INTERPRETATION}`)", ""]
        lines += notes.read_text().strip().splitlines()
    lines += ["", "## Rules and caveats", ""]
    for v in verdicts:
        lines += [
            f"### {v.claim_id}: {v.claim}",
            "",
            f"- Suite: `{v.suite}`; scale: {v.scale or 'none'}; seeds: {v.seeds}",
            f"- Rule: {v.rule}",
            f"- Gate: {v.gate or '-'}",
            f"- Gaps (95% CI over paired seeds): {v.gaps or '-'}",
            f"- Verdict: **{v.verdict}**",
            f"- Caveat: {v.caveat or '-'}",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: evaluate, render, write, and print the one-line summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--results", type=Path, default=None, help="results folder (default: results/ of this checkout)"
    )
    ap.add_argument("--out", type=Path, default=load.REPO / "REPRODUCTION.md", help="report path")
    ap.add_argument(
        "--no-figures",
        action="store_true",
        help="do not (re)draw the figures; embed those already in analysis/figures beside the report",
    )
    args = ap.parse_args(argv)
    suites = sorted({c.suite for c in CLAIMS})
    if args.results is not None and not any((args.results / s).is_dir() for s in suites):
        # judging a wrong folder would overwrite the report with "not yet run" everywhere
        ap.error(f"--results {args.results} holds none of the suite folders ({', '.join(suites)})")
    verdicts = evaluate(args.results)
    folder = figures_folder(args.out)
    if not args.no_figures:
        draw_figures(args.results, folder)
    args.out.write_text(render(verdicts, args.results, folder, args.out.resolve().parent))
    print(f"wrote {args.out}: {summary(verdicts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
