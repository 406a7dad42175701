r"""Test-time masking: Tables 5 and 6 (reference 3.5-3.6). Evaluation only.

Commands::

    python experiments/launch.py masking --scale paper --checkpoints DIR  # convit_tiny.pth, deit_tiny.pth
    python experiments/launch.py masking --scale {reduced,cpu,smoke}      # trains the Ti pair first

Table 5: DeiT-Ti and ConViT-Ti evaluated with the positional embedding masked (not added) vs unmasked.
Table 6: ConViT-Ti with content masked (sigma(lambda) = 1) or position masked (sigma = 0) in the first k GPSA
layers, k in {3, 5, 10}. Interventions are ``ZooModel.set_intervention`` of ``convit.models``.

Paper::

    Table 5          mask pos embed   no mask        Table 6 (ConViT-Ti)   mask content   mask position
    DeiT-Ti          38.3             72.2           3 layers              62.3           63.5
    ConViT-Ti        67.1             73.1           5 layers              35.0           53.1
                                                     10 layers             1.3            46.8
                                                     (no mask: 73.1)

Checkpoints: at paper scale the released weights as local files (``convit_tiny.pth`` from the ConViT release,
``deit_tiny.pth`` = the DeiT release ``deit_tiny_patch16_224``), looked up in ``--checkpoints DIR``; at the
other scales the DeiT-Ti / ConViT-Ti runs this suite shares with another (their run directories stay in that
suite's folder), trained first when they are missing: sample_efficiency's f = 1 runs where they are the very
same training run (the cpu and smoke scales, whose sample-efficiency stand-ins are the Ti models: same spec
but for the tags), else main_table's Ti runs. So at cpu scale the masking tables read the checkpoints of the
sample-efficiency suite and cost no training of their own.

Recorded decisions (reference 9.2.8): "# layers masked" = the *first* k GPSA layers; masking the positional
embedding removes its whole contribution (for DeiT including the class-token slot). At scales with fewer GPSA
layers k is scaled by (GPSA layers / 10): {1, 2, 4} of 4 at cpu scale.

Cost: 10 evaluations of the ImageNet val set with Ti models (~0.2 GPU-hours at paper scale); reduced/cpu:
those of the two main_table Ti runs (reduced ~0.6 GPU-hours, loader-bound; cpu ~2-3 h, see sample_efficiency)
plus seconds of evaluation.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments import main_table
from experiments.common import check_scale, default_gpsa_layers, eval_spec

SUITE = "masking"
TABLE5 = {"deit": (38.3, 72.2), "convit": (67.1, 73.1)}
TABLE6 = {3: (62.3, 63.5), 5: (35.0, 53.1), 10: (1.3, 46.8)}


def specs(scale: str) -> list[RunSpec]:
    """Training runs to evaluate (non-paper scales) and the 11 evaluation entries."""
    sc = check_scale(scale)
    trains = {family: main_table.shared_train_spec(scale, family, "tiny") for family in ("deit", "convit")}
    out: list[RunSpec] = [] if scale == "paper" else list(trains.values())

    def source(family: str) -> str:
        return f"file:{family}_tiny.pth" if scale == "paper" else f"run:{trains[family].tags['variant']}"

    for family, (masked, plain) in TABLE5.items():
        for variant, intervention, paper in (
            (f"{family}_tiny-nomask", {}, plain),
            (f"{family}_tiny-mask_pos_embed", {"mask_pos_embed": True}, masked),
        ):
            out.append(
                eval_spec(
                    trains[family],
                    suite=SUITE,
                    variant=variant,
                    checkpoint=source(family),
                    intervention=intervention,
                    tags={"table": 5, "paper_top1": paper},
                )
            )
    gpsa = default_gpsa_layers(sc.total_depth) if sc.depth is not None else 10
    ks: dict[int, int] = {}
    for k in TABLE6:
        scaled = max(1, min(gpsa, int(k * gpsa / 10 + 0.5)))
        ks.setdefault(scaled, k)
    for scaled, k in ks.items():
        content, position = TABLE6[k]
        for what, paper in (("content", content), ("position", position)):
            out.append(
                eval_spec(
                    trains["convit"],
                    suite=SUITE,
                    variant=f"convit_tiny-mask_{what}-k{scaled}",
                    checkpoint=source("convit"),
                    intervention={f"mask_{what}_layers": scaled},
                    tags={"table": 6, "layers_masked": scaled, "paper_layers": k, "paper_top1": paper},
                )
            )
    return out
