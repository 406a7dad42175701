r"""Hard distillation from a RegNetY-16GF teacher: Table 4, Fig. 10 (reference 3.3).

Command::

    python experiments/launch.py distillation --scale paper --checkpoints DIR   # DIR/regnety_160.pth

DeiT-S, DeiT-B and ConViT-S+ trained for 300 epochs with DeiT's hard distillation (the teacher's argmax as a
second target) from a RegNetY-16GF (84M) teacher given as a local checkpoint file (timm ``regnety_160``; the
DeiT release's ``regnety_160-a5fe301d.pth``), beside the undistilled runs of Table 1 (shared with
main_table). Fig. 10 is the nonlocality of DeiT-S with and without distillation, read from the probes of
these runs.

Paper (Table 4)::

                        DeiT-S (22M)   DeiT-B (86M)   ConViT-S+ (48M)
    No distillation     79.8           81.8           82.2
    Hard distillation   80.9           83.0           82.9

What the engine does (``convit.train``; the official ConViT code has no distillation, the paper's runs used
DeiT's code): for a spec tagged ``distillation="hard"`` it builds ``timm.create_model(tags["teacher_model"],
num_classes=<dataset classes>)``, loads the teacher file strictly (a missing file or a classifier of another
size stops the run with one line naming the file), freezes it, and trains on
``loss = 0.5 * criterion(student, targets) + 0.5 * cross_entropy(student, teacher(x).argmax(-1))``, where
``criterion`` is the recipe's own loss (soft-target CE on the mixup/cutmix targets, label smoothing) and the
teacher term has no smoothing. The teacher is not part of the spec: the launcher resolves ``tags["teacher"]``
(``file:<name>``) against ``--checkpoints DIR`` (default ``$CONVIT_CHECKPOINTS``) before submitting anything
and hands the path to the job; a resumed run reloads it from that file (it is never saved into the student's
checkpoint). ``env.json`` records the teacher file's path and SHA-256, ``result.json`` its name.

Recorded decisions: the students are the plain models (no distillation token; DeiT's distilled models add
one, but Table 4's ConViT-S+ has the same parameter count as undistilled and a dist token is not mentioned);
the teacher sees the student's augmented (mixed) batch at the student's resolution, under the same autocast
(as DeiT).

Teachers per scale (``TEACHER_MODELS``; the file name is ``teacher_file(scale)``)::

    paper     regnety_160   DIR/regnety_160.pth                 (DeiT's ImageNet teacher)
    reduced   regnety_160   DIR/regnety_160-tiny-imagenet.pth
    cpu       regnety_160   DIR/regnety_160-cifar10.pth
    smoke     regnety_002   DIR/regnety_002-cifar10-fixture.pth (tests only: a 2.8M RegNetY, any weights)

At reduced / cpu scale no RegNetY-16GF trained on Tiny-ImageNet / CIFAR-10 exists: the teacher is a
checkpoint of timm's ``regnety_160`` architecture trained on that data, supplied by the user (the launcher's
error names the expected file when it is missing). The teacher is only worth distilling from when it beats
the undistilled students; at these scales that has to be checked, it is not given. Smoke scale swaps in
``regnety_002`` because ``regnety_160`` (84M parameters) is too slow for tests; its numbers mean nothing.

Cost: paper ~1,670 V100-hours for the 6 runs (3 distilled) plus the teacher's forward (~16 GMAC per image,
+~30%); reduced ~4 GPU-hours, the teacher adding ~30% to the distilled runs as at paper scale; cpu (Ti
heads at half width) ~20 min for the undistilled pair, while each distilled run takes ~2-3x its baseline:
``regnety_160`` at 32 px is 0.33 GMAC per image forward, more than the students' whole training step (3 x
0.05-0.08 GMAC). The ``--dry-run`` estimates do not count the teacher. Smoke: seconds.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments import main_table
from experiments.common import check_scale, make_spec

SUITE = "distillation"
#: (family, paper size, no-distillation top-1, hard-distillation top-1)
STUDENTS = (("deit", "small", 79.8, 80.9), ("deit", "base", 81.8, 83.0), ("convit", "small_plus", 82.2, 82.9))
#: the teacher's timm architecture per scale (smoke: a small RegNetY, so tests can run a teacher)
TEACHER_MODELS = {
    "paper": "regnety_160",
    "reduced": "regnety_160",
    "cpu": "regnety_160",
    "smoke": "regnety_002",
}


def teacher_model(scale: str) -> str:
    """The teacher's timm architecture name at ``scale``."""
    check_scale(scale)
    return TEACHER_MODELS[scale]


def teacher_file(scale: str) -> str:
    """The teacher checkpoint's file name under ``--checkpoints`` (architecture and dataset, but at paper
    scale the name DeiT's release suggests)."""
    sc = check_scale(scale)
    model = teacher_model(scale)
    return f"{model}.pth" if scale == "paper" else f"{model}-{sc.dataset}.pth"


def specs(scale: str) -> list[RunSpec]:
    """Per student: the undistilled Table 1 run (shared) and the hard-distilled run."""
    sc = check_scale(scale)
    out: list[RunSpec] = []
    seen: set[str] = set()
    for family, size, _plain, distilled in STUDENTS:
        used = sc.size(size)
        key = f"{family}_{used}"
        if key in seen:
            continue
        seen.add(key)
        out.append(main_table.train_spec(scale, family, used))
        out.append(
            make_spec(
                sc,
                suite=SUITE,
                variant=f"{key}-hard_distill",
                family=family,
                size=size,  # the paper's size: make_spec shrinks it and tags what it stands for
                tags={
                    "distillation": "hard",
                    "teacher": f"file:{teacher_file(scale)}",
                    "teacher_model": teacher_model(scale),
                    "paper_top1": distilled,
                },
            )
        )
    return out
