r"""Vanilla PSA with convolutional init vs DeiT: Fig. 9 (reference 3.4).

Command::

    python experiments/launch.py psa --scale {paper,reduced,cpu,smoke}

ConViT-B whose 10 GPSA layers are replaced by vanilla positional self-attention (content and position
logits summed before one softmax, Eq. 4; ``attention="psa"`` in ``convit.models``) with the convolutional
init, against DeiT-B, 300 epochs on ImageNet; the GPSA ConViT-B is added as the reference curve. DeiT-B and
ConViT-B are Table 1's runs (shared with ``main_table``: no extra cost once it has run).

Paper: curves only (top-1 vs epochs). The PSA model leads DeiT-B early (the conv init is a head start), then
stays convolutional, ignores content, and DeiT-B catches up and overtakes it. Read it from
``results/psa/SCALE_curves.csv``.

Recorded decision (reference 9.2.9): "vanilla PSA with conv init" is PSA with the same local init of
``pos_proj`` (alpha = 1) and W_val = I as GPSA, no gate.

Cost: paper ~450 V100-hours per B run (3 runs, ~1,360 in all; 1 new); reduced ~1 GPU-hour per run at 64
tokens; cpu (Ti widths, depth 6) ~15 min for the 3 runs; smoke seconds.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments import main_table
from experiments.common import check_scale, make_spec

SUITE = "psa"


def specs(scale: str) -> list[RunSpec]:
    """DeiT-B and ConViT-B (shared with main_table) and ConViT-B with vanilla PSA."""
    sc = check_scale(scale)
    size = sc.size("base")
    psa = make_spec(
        sc,
        suite=SUITE,
        variant="convit_psa",
        family="convit",
        size="base",
        model_kwargs={"attention": "psa"},
    )
    return [main_table.train_spec(scale, "deit", size), main_table.train_spec(scale, "convit", size), psa]
