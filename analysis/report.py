"""Generate ``REPRODUCTION.md``: every claim of the paper, the scale we tested it at, our numbers, the
paper's, and a verdict computed by an explicit rule.

Usage::

    python -m analysis.report [--results DIR] [--out REPRODUCTION.md]

Why rules are code: a verdict must be regenerated from ``results/`` by one command and must not depend on who
reads the plots. Each :class:`Claim` states its rule in words (printed in the report) and implements exactly
that rule in its ``check`` function. Verdicts:

* ``reproduced``: the rule holds on the seed means of our runs;
* ``not reproduced``: the data needed by the rule exists and the rule fails;
* ``not yet run``: the suite has no results at any scale, or lacks the runs the rule needs.

Quantitative claims ("by 37%") are judged on direction only below ``paper`` scale, because a CIFAR-10 or
Tiny-ImageNet run cannot be expected to match ImageNet numbers; at ``paper`` scale the magnitude is checked
too, with the tolerance given in the rule. Qualitative claims are judged on direction or ordering at every
scale. Every verdict carries the scale, the seed count and a caveat; smoke-scale verdicts are meaningless
(plumbing only) and say so.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis import load
from analysis.claims import CLAIMS, Claim, Missing

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_RUN = "not yet run"
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
        out.append(
            Verdict(
                **base,
                scale=res.scale,
                seeds=o.seeds,
                ours=o.ours,
                verdict=REPRODUCED if o.holds else NOT_REPRODUCED,
                caveat=caveat,
            )
        )
    return out


def _cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def render(verdicts: list[Verdict], results_dir: str | Path | None = None) -> str:
    """The Markdown report: a summary table, then one section per claim with its rule and caveats."""
    rdir = Path(results_dir) if results_dir is not None else load.default_results_dir()
    # Smoke-scale verdicts are plumbing checks: count them apart so the summary never reads as evidence.
    counts = pd.Series([v.verdict for v in verdicts if v.scale != "smoke"]).value_counts()
    smoke = sum(v.scale == "smoke" and v.verdict != NOT_RUN for v in verdicts)
    counts[NOT_RUN] = sum(v.verdict == NOT_RUN for v in verdicts)
    lines = [
        "# Reproduction report: ConViT (d'Ascoli et al., ICML 2021)",
        "",
        "Generated by `python -m analysis.report` from the tidy results in "
        f"`{rdir.name if rdir == load.default_results_dir() else rdir}/`; do not edit by hand. "
        "Paper numbers come from `results/paper/*.csv` (each row names its source).",
        "",
        "Verdict rules: *reproduced* = the claim's rule (below) holds on the seed means of our runs; "
        "*not reproduced* = the data exist and the rule fails; *not yet run* = no results, or not the runs "
        "the rule needs. Below `paper` scale, quantitative claims are judged on direction only and every "
        "claim on direction/ordering; a verdict at `cpu` or `reduced` scale says whether the *qualitative* "
        "effect appears there, not that the paper's numbers were matched. Smoke-scale verdicts are "
        "plumbing checks and mean nothing. Scales are chosen per suite, best available first: "
        f"{' > '.join(load.SCALES)}.",
        "",
        "Summary: "
        + ", ".join(f"{counts.get(k, 0)} {k}" for k in (REPRODUCED, NOT_REPRODUCED, NOT_RUN))
        + (f"; {smoke} judged on smoke-scale runs only (plumbing, not evidence)" if smoke else "")
        + ".",
        "",
        "## Scales used",
        "",
        "| suite | scale shown | scales available |",
        "|---|---|---|",
    ]
    for suite in load.SUITES:
        res = load.load_suite(suite, results_dir=results_dir)
        lines.append(f"| {suite} | {res.scale or 'not yet run'} | {', '.join(res.scales_available) or '-'} |")
    lines += [
        "",
        "## Claims",
        "",
        "| id | claim | paper ref | scale | seeds | ours | paper | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    v.claim_id,
                    v.claim,
                    v.where,
                    v.scale or "-",
                    v.seeds or "-",
                    v.ours,
                    v.paper,
                    f"**{v.verdict}**",
                )
            )
            + " |"
        )
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
    args = ap.parse_args(argv)
    suites = sorted({c.suite for c in CLAIMS})
    if args.results is not None and not any((args.results / s).is_dir() for s in suites):
        # judging a wrong folder would overwrite the report with "not yet run" everywhere
        ap.error(f"--results {args.results} holds none of the suite folders ({', '.join(suites)})")
    verdicts = evaluate(args.results)
    args.out.write_text(render(verdicts, args.results))
    counts = pd.Series([v.verdict for v in verdicts]).value_counts().to_dict()
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
