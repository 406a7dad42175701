"""The paper's claims as data: each :class:`Claim` names its table or figure, the suite that tests it, the
rule in words and a ``check`` that implements exactly that rule on tidy results (see :mod:`analysis.report`,
which judges them all and writes ``REPRODUCTION.md``).

Adding a claim: write ``check_*`` (raise :class:`Missing` when the runs it needs are absent; state the rule
as per-seed :class:`analysis.gate.Comparison` s, each a quantity that must be positive), read the paper's
numbers from ``results/paper/`` in a ``_paper_*`` function, and append a :class:`Claim` to the ``CLAIMS`` of
its artefact's module (which :data:`CLAIMS` here concatenates)
(with its gate scope: the fraction its baseline is judged at, and for gating/locality claims the families
whose probes must have moved; see :mod:`analysis.gate`).

One module per paper artefact, named as the suites in ``experiments/`` (:mod:`analysis.claims.main_table`,
``sample_efficiency``, ``ablations``, ``locality``, ``masking``, ``psa``, ``cifar100``, ``distillation``),
each with its checks, its paper numbers and its claims; :mod:`analysis.claims.base` holds what they share.
:data:`CLAIMS` lists every claim in the report's order.
"""

from __future__ import annotations

from analysis.claims import (
    ablations,
    cifar100,
    distillation,
    locality,
    main_table,
    masking,
    psa,
    sample_efficiency,
)
from analysis.claims.base import LOCALITY_SOURCES, Claim, Missing, Outcome

__all__ = ["CLAIMS", "LOCALITY_SOURCES", "Claim", "Missing", "Outcome"]

#: every claim, in the report's order (grouped by artefact, as the suites run)
CLAIMS: list[Claim] = [
    *main_table.CLAIMS,
    *sample_efficiency.CLAIMS,
    *ablations.CLAIMS,
    *locality.CLAIMS,
    *masking.CLAIMS,
    *psa.CLAIMS,
    *cifar100.CLAIMS,
    *distillation.CLAIMS,
]
