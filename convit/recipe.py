"""The training recipe: weight-decay groups, optimiser, lr schedule, loss (with mixup) and hard distillation.

The recipe is the DeiT recipe used by ConViT (reference section 6), built from timm's components; the engine
(:mod:`convit.train`) only calls these. They are public so tests and analysis can check the wiring.

Faithful-vs-original choices (each selectable where a paper number could depend on it):
- ``recipe.lr_schedule="step"`` (default): cosine with warm-up evaluated at every optimiser step, as the paper
  describes. ``"epoch_lagged"`` reproduces the original code: the lr is set once per epoch *after* the
  epoch, so epochs 0 and 1 both run at ``warmup_lr`` and epoch e >= 1 runs at lr(e - 1). Both use timm's
  ``CosineLRScheduler`` without warm-up prefix (timm 0.3.2 behaviour: the cosine is not shifted by warm-up).
- ``recipe.decay_pos_embed=False`` (default): ``pos_embed``/``cls_token`` (``model.no_weight_decay()``), every
  1-D parameter and every bias get no weight decay. ``True`` reproduces the original DDP runs, where the
  optimiser was built from the DDP wrapper and only 1-D parameters/biases were exempt (reference 8.2 item 5).
- Hard distillation (Table 4): :func:`hard_distillation_loss`; the teacher itself is :mod:`convit.teacher`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from convit.train_errors import TrainError

__all__ = [
    "build_criterion",
    "build_optimizer",
    "build_scheduler",
    "hard_distillation_loss",
    "set_lr",
    "weight_decay_names",
]


def _no_wd_list(model: nn.Module, decay_pos_embed: bool) -> list[str]:
    if decay_pos_embed:
        # The original DDP runs built the optimiser from the DDP wrapper, which has no no_weight_decay():
        # only the 1-D/bias rule applied, so pos_embed and cls_token were decayed.
        return []
    fn = getattr(model, "no_weight_decay", None)
    return sorted(fn()) if callable(fn) else []


def weight_decay_names(model: nn.Module, decay_pos_embed: bool = False) -> tuple[list[str], list[str]]:
    """``(decayed, not_decayed)`` parameter names, by the same rule :func:`build_optimizer` uses."""
    from timm.optim._param_groups import _matches_pattern

    skip = _no_wd_list(model, decay_pos_embed)
    decayed, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or _matches_pattern(name, skip):
            plain.append(name)
        else:
            decayed.append(name)
    return decayed, plain


def build_optimizer(model: nn.Module, recipe: Any, lr: float) -> torch.optim.Optimizer:
    """AdamW with timm's no-weight-decay groups (1-D, biases, ``no_weight_decay()`` unless decay_pos_embed).

    The groups are built from the bare model (never a DDP wrapper), so the rule is the same on 1 or N devices.
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    groups = param_groups_weight_decay(
        model, recipe.weight_decay, no_weight_decay_list=_no_wd_list(model, recipe.decay_pos_embed)
    )
    return create_optimizer_v2(
        groups, opt="adamw", lr=lr, weight_decay=recipe.weight_decay, eps=recipe.opt_eps
    )


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Any, steps_per_epoch: int) -> Any:
    """timm ``CosineLRScheduler`` in optimiser steps (``"step"``) or in epochs (``"epoch_lagged"``)."""
    from timm.scheduler import CosineLRScheduler

    if recipe.lr_schedule == "step":
        t_initial = recipe.epochs * steps_per_epoch
        warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
        t_in_epochs = False
    else:
        t_initial = recipe.epochs
        warmup = recipe.warmup_epochs
        t_in_epochs = True
    return CosineLRScheduler(
        optimizer,
        t_initial=t_initial,
        lr_min=recipe.min_lr,
        warmup_t=warmup,
        warmup_lr_init=recipe.warmup_lr,
        warmup_prefix=False,
        cycle_limit=1,
        t_in_epochs=t_in_epochs,
    )


def set_lr(scheduler: Any, recipe: Any, epoch: int, global_step: int) -> None:
    """Put the lr for (epoch, global_step) into the optimiser; timm's scheduler is stateless in t."""
    if recipe.lr_schedule == "step":
        scheduler.step_update(global_step)
    elif epoch == 0:
        # The scheduler's constructor value: warmup_lr with warm-up, else the peak.
        scheduler.update_groups(recipe.warmup_lr if scheduler.warmup_t else scheduler.base_values)
    else:
        scheduler.step(epoch - 1)  # the original one-epoch lag


def hard_distillation_loss(
    base_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
) -> torch.Tensor:
    """DeiT's hard distillation: half the run's usual loss, half cross-entropy on the teacher's argmax.

    ``base_criterion`` is the engine's criterion unchanged (soft-target CE on mixup/cutmix targets with label
    smoothing, or plain / smoothed CE), so distillation adds a term without altering the recipe's own loss.
    The teacher term takes the teacher's decision on the same (mixed) image as one hard label with no
    smoothing: that is what makes it *hard* distillation, and why a teacher can supply a label where mixup
    made the ground truth ambiguous.
    """
    teacher_labels = teacher_logits.argmax(dim=-1)
    distill = nn.functional.cross_entropy(student_logits, teacher_labels)
    return 0.5 * base_criterion(student_logits, targets) + 0.5 * distill


def build_criterion(recipe: Any, per_device_batch: int, num_classes: int) -> tuple[Any, nn.Module]:
    """``(mixup, criterion)``: timm's Mixup/CutMix (None when both are off) and the loss fitting its targets.

    Soft-target cross-entropy on mixed (label-smoothed) targets; without mixing, label-smoothed or plain CE.
    """
    mixup_on = recipe.mixup > 0 or recipe.cutmix > 0
    mixup = None
    if mixup_on:
        from timm.data import Mixup
        from timm.loss import SoftTargetCrossEntropy

        if per_device_batch % 2:
            raise TrainError(f"Mixup/CutMix needs an even per-device batch, got {per_device_batch}")
        mixup = Mixup(
            mixup_alpha=recipe.mixup,
            cutmix_alpha=recipe.cutmix,
            prob=recipe.mixup_prob,
            switch_prob=recipe.mixup_switch_prob,
            mode=recipe.mixup_mode,
            label_smoothing=recipe.smoothing,
            num_classes=num_classes,
        )
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif recipe.smoothing > 0:
        from timm.loss import LabelSmoothingCrossEntropy

        criterion = LabelSmoothingCrossEntropy(smoothing=recipe.smoothing)
    else:
        criterion = nn.CrossEntropyLoss()
    return mixup, criterion
