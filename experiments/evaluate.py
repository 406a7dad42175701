"""Evaluation-only runs: a checkpoint, optionally with a test-time intervention, on a validation set.

The engine (``convit.train``) trains; masking (Tables 5/6) and the released-weights check of Table 1 only
evaluate. :class:`EvalJob` is the picklable callable the launcher submits for such entries (see
``experiments.common.eval_spec``); it writes the same run-directory files the collector reads
(``spec.json``, ``result.json``), so eval rows and training rows land in one CSV.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from convit.spec import RunSpec

__all__ = ["EvalJob", "evaluate"]


def evaluate(
    spec: RunSpec, workdir: str | Path, checkpoint: str | Path, data_root: str | Path | None = None
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` for ``spec`` (model, data, ``tags['intervention']``); write ``result.json``."""
    import torch
    from torch.utils.data import DataLoader

    from convit import data, models

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result_path = workdir / "result.json"
    spec_path = workdir / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != spec.to_dict():
        raise RuntimeError(f"{workdir} holds another spec; use another workdir")
    if result_path.exists():
        return json.loads(result_path.read_text())
    spec_path.write_text(spec.to_json())
    start = time.time()
    _, val = data.build_datasets(spec.data, spec.recipe, data_root)
    model = models.create(
        spec.model.name,
        num_classes=data.num_classes(spec.data),
        img_size=spec.data.img_size,
        **spec.model.kwargs,
    )
    models.load_weights(model, checkpoint)
    intervention = dict(spec.tags.get("intervention") or {})
    if intervention:
        model.set_intervention(**intervention)  # type: ignore[operator]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    loader = DataLoader(val, batch_size=128, shuffle=False, num_workers=spec.resources.workers)
    loss_sum = correct1 = correct5 = count = 0.0
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    with torch.no_grad():
        for images, targets in loader:
            images, targets = images.to(device), targets.to(device)
            logits = model(images).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hit = top.eq(targets[:, None])
            loss_sum += float(criterion(logits, targets))
            correct1 += float(hit[:, :1].sum())
            correct5 += float(hit.any(dim=1).sum())
            count += targets.numel()
    count = max(count, 1.0)
    result = {
        "top1": 100.0 * correct1 / count,
        "top5": 100.0 * correct5 / count,
        "loss": loss_sum / count,
        "epochs": 0,
        "wall_time_s": time.time() - start,
        "world_size": 1,
        "params": sum(p.numel() for p in model.parameters()),
        "checkpoint": str(checkpoint),
    }
    tmp = result_path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True))
    os.replace(tmp, result_path)
    return result


class EvalJob:
    """Picklable ``EvalJob(spec, workdir, checkpoint, data_root)()`` for submitit (any backend)."""

    def __init__(
        self, spec: RunSpec, workdir: str | Path, checkpoint: str | Path, data_root: str | Path | None = None
    ) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.checkpoint = Path(checkpoint)
        self.data_root = None if data_root is None else Path(data_root)

    def __repr__(self) -> str:
        return f"EvalJob(workdir={str(self.workdir)!r}, checkpoint={str(self.checkpoint)!r})"

    def __call__(self) -> dict[str, Any]:
        return evaluate(self.spec, self.workdir, self.checkpoint, self.data_root)
