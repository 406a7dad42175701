r"""Hard distillation from a RegNetY-16GF teacher: Table 4, Fig. 10 (reference 3.3). ENGINE SUPPORT PENDING.

Command::

    python experiments/launch.py distillation --scale paper --checkpoints DIR   # DIR/regnety_160.pth

DeiT-S, DeiT-B and ConViT-S+ trained for 300 epochs with DeiT's hard distillation (the teacher's argmax as a
second target, loss = (CE(student, y) + CE(student, teacher argmax)) / 2) from a RegNetY-16GF (84M) teacher
given as a local checkpoint file (timm ``regnety_160``; the DeiT release's ``regnety_160-a5fe301d.pth``),
beside the undistilled runs of Table 1 (shared with main_table). Fig. 10 is the nonlocality of DeiT-S with
and without distillation, read from the probes of these runs.

Paper (Table 4)::

                        DeiT-S (22M)   DeiT-B (86M)   ConViT-S+ (48M)
    No distillation     79.8           81.8           82.2
    Hard distillation   80.9           83.0           82.9

**Status**: ``convit.train`` has no distillation yet (the official ConViT code has none either; the
paper's runs used DeiT's code). The specs below are complete (the teacher and the distillation type are
tags, part of the run's identity) and ``--dry-run`` lists them, but launching a distilled run stops with an
error until the engine sets ``convit.train.SUPPORTS_DISTILLATION = True`` and reads
``spec.tags["distillation"]`` / ``spec.tags["teacher"]``. The undistilled baselines are main_table's runs
and can run now (``launch.py main_table``, or ``--only 'deit_*[!l]'``-style globs here).

Recorded decisions: the students are the plain models (no distillation token; DeiT's distilled models add
one, but Table 4's ConViT-S+ has the same parameter count as undistilled and a dist token is not mentioned);
the teacher sees the student's augmented batch at the student's resolution (as DeiT).

At reduced / cpu / smoke scale no RegNetY-16GF trained on Tiny-ImageNet / CIFAR-10 exists: the teacher is a
checkpoint of timm's ``regnety_160`` architecture trained on that data, supplied by the user as
``DIR/regnety_160-<dataset>.pth`` (stated in the error when missing).

Cost: paper ~1,670 V100-hours for the 6 runs (3 distilled) plus the teacher's forward
(~16 GMAC per image, +~30%); reduced ~3 GPU-hours; cpu (Ti widths) ~20 min; smoke seconds.
"""

from __future__ import annotations

from convit.spec import RunSpec
from experiments import main_table
from experiments.common import check_scale, make_spec

SUITE = "distillation"
#: (family, paper size, no-distillation top-1, hard-distillation top-1)
STUDENTS = (("deit", "small", 79.8, 80.9), ("deit", "base", 81.8, 83.0), ("convit", "small_plus", 82.2, 82.9))
TEACHER_MODEL = "regnety_160"


def teacher_file(scale: str) -> str:
    """The teacher checkpoint's file name under ``--checkpoints``."""
    sc = check_scale(scale)
    return f"{TEACHER_MODEL}.pth" if scale == "paper" else f"{TEACHER_MODEL}-{sc.dataset}.pth"


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
                size=used if used != size else size,
                tags={
                    "distillation": "hard",
                    "teacher": f"file:{teacher_file(scale)}",
                    "teacher_model": TEACHER_MODEL,
                    "paper_top1": distilled,
                },
            )
        )
    return out
