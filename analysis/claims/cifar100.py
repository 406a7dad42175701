"""Fig. 11a / SM C: ConViT against DeiT on CIFAR-100 (Table 1's rule); suite ``cifar100``."""

from __future__ import annotations

from analysis import load
from analysis.claims.base import (
    Claim,
)
from analysis.claims.main_table import check_t1


def _paper_cifar() -> str:
    t = load.load_paper("cifar100")
    return "; ".join(f"{r.model} {r.top1:.1f}" for r in t.itertuples()) + " (other points only in Fig. 11a)"


CLAIMS: list[Claim] = [
    Claim(
        "C100",
        "ConViT beats DeiT on CIFAR-100 at every size",
        "Fig. 11a, SM C",
        "cifar100",
        "As T1-all, on the cifar100 suite.",
        _paper_cifar,
        check_t1(False),
    ),
]
