r"""Table 1: the 12 models (DeiT and ConViT at Ti, Ti+, S, S+, B, B+) trained from scratch (reference 1).

Commands::

    python experiments/launch.py main_table --scale {paper,reduced,cpu,smoke}
    python experiments/launch.py main_table --scale paper --only 'released-*' --checkpoints DIR
    python -m convit.zoo            # the params / FLOPs / throughput columns beside the paper's

Training rows: the DeiT recipe for 300 epochs; base models at global batch 1024 (lr 5e-4 x 1024/512) on
2 nodes x 8 GPUs, "+" models at batch 512, lr 4e-4 on 1 x 8 GPUs. Locality probes (nonlocality, sigma(lambda),
attention-centre distances; Eq. 8 on propagated activations) are logged at every evaluation, so these runs
also make Figs. 5, 6, 13, 14 (``experiments/locality.py`` reuses them) and the DeiT-B / ConViT-B curves of
Fig. 9 (``experiments/psa.py``).

Eval-only rows (``released-*``, paper scale only): the released ConViT-Ti/S/B weights and the DeiT-Ti/S/B
release, given as local files in ``--checkpoints DIR`` (``convit_tiny.pth`` ..., ``deit_tiny.pth`` ...; the
launcher never downloads). Golden numbers (timm results-imagenet.csv): ConViT 73.14 / 81.41 / 82.30, DeiT
72.19 / 79.86 / 81.98. This is the dataset check: a wrong ImageNet copy shows up here first.

Paper top-1 (Table 1)::

            Ti     Ti+    S      S+     B      B+
    DeiT    72.2   75.9   79.8   79.0   81.8   77.5
    ConViT  73.1   76.7   81.3   82.2   82.4   82.5

Cost: paper ~3,500 V100-hours for the 12 runs (B+ alone ~800; calibrated on DeiT-B's reported 53 h on 8 V100,
i.e. ~420 GPU-h); reduced (Tiny-ImageNet 64 px / patch 8, 100 epochs, one GPU) ~8 GPU-hours, B+ being the
largest (~1.7 h), the Ti and S runs at their 8 loader workers' pace (``common.loader_hours``); cpu only
the Ti and Ti+ pairs (S/B collapse onto them after shrinking), 4 runs, ~35 min; smoke seconds.
``--dry-run`` prints per-run estimates.
"""

from __future__ import annotations

import dataclasses

from convit.spec import DataSpec, ModelSpec, RunSpec
from experiments.common import check_scale, eval_spec, make_spec

SUITE = "main_table"
SIZES = ("tiny", "tiny_plus", "small", "small_plus", "base", "base_plus")

PAPER_TOP1 = {
    "deit_tiny": 72.2, "deit_tiny_plus": 75.9, "deit_small": 79.8, "deit_small_plus": 79.0,
    "deit_base": 81.8, "deit_base_plus": 77.5,
    "convit_tiny": 73.1, "convit_tiny_plus": 76.7, "convit_small": 81.3, "convit_small_plus": 82.2,
    "convit_base": 82.4, "convit_base_plus": 82.5,
}  # fmt: skip

#: released checkpoints and their measured top-1 (timm results-imagenet.csv).
RELEASED_TOP1 = {
    "convit_tiny": 73.14, "convit_small": 81.412, "convit_base": 82.296,
    "deit_tiny": 72.19, "deit_small": 79.856, "deit_base": 81.98,
}  # fmt: skip


def train_spec(scale: str, family: str, size: str) -> RunSpec:
    """The Table 1 training run of ``family``/``size`` at ``scale`` (shared by locality and psa)."""
    sc = check_scale(scale)
    variant = f"{family}_{size}"
    return make_spec(
        sc,
        suite=SUITE,
        variant=variant,
        family=family,
        size=size,
        tags={"paper_top1": PAPER_TOP1[variant]},
    )


def _untagged(spec: RunSpec) -> str:
    return dataclasses.replace(spec, tags={}).to_json()


def shared_train_spec(scale: str, family: str, size: str) -> RunSpec:
    """The run another suite (locality, masking) reads for ``family``/``size``: sample_efficiency's f = 1 run
    when it is the very same training run (spec equal but for the tags: the cpu and smoke scales, whose
    sample-efficiency stand-ins are the Ti models), so that no run is trained twice; else :func:`train_spec`.

    Table 1 itself keeps its own runs (its rows carry Table 1's variants and paper numbers).
    """
    from experiments import sample_efficiency

    spec = train_spec(scale, family, size)
    for twin in sample_efficiency.specs(scale):
        same_role = twin.data.fraction == 1.0 and twin.tags.get("variant") == family
        if same_role and _untagged(twin) == _untagged(spec):
            return twin
    return spec


def specs(scale: str) -> list[RunSpec]:
    """The 12 training runs (deduplicated after shrinking) and, at paper scale, the released-weights evals."""
    sc = check_scale(scale)
    out: list[RunSpec] = []
    # at cpu/smoke scale S and B shrink to Ti widths: keep only the rows that are really distinct
    distinct = list(dict.fromkeys(sc.size(size) for size in SIZES))
    for family in ("deit", "convit"):
        out.extend(train_spec(scale, family, size) for size in distinct)
    if scale == "paper":
        for name, top1 in RELEASED_TOP1.items():
            out.append(
                eval_spec(
                    None,
                    suite=SUITE,
                    variant=f"released-{name}",
                    checkpoint=f"file:{name}.pth",
                    model=ModelSpec(name=name),
                    data=DataSpec(name=sc.dataset, img_size=sc.img_size),
                    scale=scale,
                    tags={"paper_top1": PAPER_TOP1[name], "expected_top1": top1},
                )
            )
    return out
