"""The distillation teacher (Table 4): which file a distilled spec needs, and loading it frozen.

The official ConViT code has no distillation; the paper used DeiT's. A spec tagged ``distillation="hard"``
trains the plain student (no distillation token) on :func:`convit.recipe.hard_distillation_loss`. The
teacher is timm's ``tags["teacher_model"]`` with the dataset's class count, loaded from the file passed as
``run(..., teacher=PATH)``: a runtime input like ``data_root``, not part of the spec, so moving the file
changes no digest. It is frozen (eval mode, no gradients), runs under the student's autocast on the student's
augmented (mixed) batch, is never saved into the student's checkpoint and is reloaded from the file on resume.
Undistilled runs take exactly the code path they took before distillation existed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from convit.spec import RunSpec
from convit.train_errors import TrainError

__all__ = ["check_teacher", "load_teacher"]


def check_teacher(spec: RunSpec, teacher: str | Path | None) -> Path | None:
    """The teacher file a distilled spec needs (None for an undistilled one), checked before any work.

    A missing file is a user mistake found in milliseconds here, instead of after the datasets are built.
    """
    kind = spec.tags.get("distillation")
    if not kind:
        if teacher is not None:
            raise TrainError(
                f"a teacher ({teacher}) was given but the spec asks for no distillation "
                "(tags.distillation is unset): drop the teacher or use a distilled spec"
            )
        return None
    if kind != "hard":
        raise TrainError(f"tags.distillation={kind!r} is not supported; the engine does 'hard' distillation")
    model = spec.tags.get("teacher_model")
    if not model:
        raise TrainError("a distilled spec needs tags.teacher_model (the teacher's timm architecture name)")
    wanted = str(spec.tags.get("teacher", "a teacher checkpoint")).removeprefix("file:")
    if teacher is None:
        raise TrainError(
            f"the spec distils from {wanted} ({model}) but no teacher file was given: pass its path "
            "(run(..., teacher=PATH), python -m convit.train ... --teacher PATH, "
            "or launch.py --checkpoints DIR)"
        )
    path = Path(teacher)
    if not path.is_file():
        raise TrainError(
            f"distillation teacher {path} not found: put the {model} checkpoint ({wanted}) there "
            "or give the right path (launch.py: --checkpoints DIR)"
        )
    return path


def load_teacher(path: Path, name: str, num_classes: int, dataset: str, device: torch.device) -> nn.Module:
    """The frozen teacher ``name`` from ``path`` on ``device``; each user mistake is one :class:`TrainError`.

    Built last and under a forked RNG: its random init (overwritten by the file) must not shift anything
    the student's run draws. The classifier size is checked before the strict load so a teacher trained
    on another dataset is named as such, not as a key-by-key shape mismatch.
    """
    import timm

    from convit.models import ModelError
    from convit.models.weights import load_state_checked, read_state_dict

    try:
        state = read_state_dict(path)
    except ModelError as exc:
        # torch's unpickling errors run over many lines: name the file, the cause and the fix in one
        why = f"torch.load failed: {type(exc.__cause__).__name__}" if exc.__cause__ else str(exc)
        raise TrainError(
            f"cannot use the distillation teacher {path} ({why.splitlines()[0]}): it must be a timm "
            f"{name} state dict, e.g. torch.save(model.state_dict(), path)"
        ) from None
    with torch.random.fork_rng(devices=[]):
        try:
            teacher = timm.create_model(name, num_classes=num_classes, pretrained=False)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise TrainError(f"tags.teacher_model {name!r} is not a timm model ({exc})") from None
    head = teacher.get_classifier() if hasattr(teacher, "get_classifier") else None
    head_key = next((f"{n}.weight" for n, m in teacher.named_modules() if m is head and n), None)
    if head_key is not None and head_key in state and state[head_key].shape[0] != num_classes:
        raise TrainError(
            f"teacher {path} has a {state[head_key].shape[0]}-way classifier ({head_key}) but {dataset} "
            f"has {num_classes} classes: give a {name} trained on {dataset}"
        )
    try:
        load_state_checked(teacher, state, path)
    except ModelError as exc:
        raise TrainError(f"{exc} (the teacher file must hold a timm {name} state dict)") from None
    teacher.to(device).eval().requires_grad_(False)
    return teacher
