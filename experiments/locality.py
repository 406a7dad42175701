r"""Locality over training: Figs. 5, 6, 7, 13, 14, 15-17 (reference 4).

Command::

    python experiments/launch.py locality --scale {paper,reduced,cpu,smoke}

The runs are Table 1's DeiT and ConViT at Ti, S and B (identical specs, so they live in and are shared with
``runs/main_table/SCALE/``: launching this suite after ``main_table`` trains nothing new). Where
sample_efficiency's f = 1 runs are the very same training runs (cpu and smoke scales: its stand-ins are the Ti
models), those are read instead (``main_table.shared_train_spec``), so the locality claims at cpu scale come
from the sample-efficiency suite's own runs and cost no training. Every evaluation
also logs the probes of ``convit.probes`` into ``metrics.jsonl``, which the collector writes to
``results/locality/SCALE_locality.csv`` (run, epoch, layer, head, nonlocality, gate_sigma,
centre_distance):

* Fig. 5 (S), Fig. 13 (Ti, B): nonlocality D_loc (Eq. 8) per layer over epochs, DeiT vs ConViT;
* Fig. 6 (S), Fig. 14 (Ti, B): sigma(lambda_h) per head and GPSA layer over epochs;
* Figs. 7, 15-17: attention maps of the final checkpoints (``convit.probes.attention_maps``; analysis/).

Recorded decision (reference 9.2.4): the probes follow Eq. 8 as written, on layer-by-layer *propagated*
activations of a fixed validation batch (1024 images at paper scale, as the Fig. 5 caption), mode
``propagated``. The official code's shortcut (raw patch embeddings fed to every block, issue #23) is the
probe mode ``patch_embed`` and can be recomputed on any checkpoint with ``convit.probes``.

Paper: curve-only figures; facts to check (reference 4.3): sigma(lambda) -> 0 in GPSA layers 6-10 of ConViT-S
(head average); position still used in layers 1-4 (Ti), 1-5 (S), 1-6 (B) at the end; ConViT's nonlocality
grows in every GPSA layer but ends below DeiT's; DeiT's drops early in every layer, then rises in upper
layers.

Cost: the six runs of main_table at Ti, S, B (paper ~1,250 V100-hours; reduced ~3 GPU-hours, the Ti and S
pairs at their loaders' pace; cpu the Ti pair only, ~2-3 h with ``--parallel 2`` at the redefined cpu scale's
~5e5 images per run; smoke seconds), nothing extra when main_table has run.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments import main_table
from experiments.common import check_scale

SUITE = "locality"
SIZES = ("tiny", "small", "base")


def specs(scale: str) -> list[RunSpec]:
    """DeiT and ConViT at Ti, S, B: main_table's runs (deduplicated after the scale's shrinking)."""
    sc = check_scale(scale)
    distinct = list(dict.fromkeys(sc.size(size) for size in SIZES))
    families = ("deit", "convit")
    return [main_table.shared_train_spec(scale, family, size) for size in distinct for family in families]
