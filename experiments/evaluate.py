"""Evaluation-only runs: a checkpoint, optionally with a test-time intervention, on a validation set.

The engine (``convit.train``) trains; masking (Tables 5/6) and the released-weights check of Table 1 only
evaluate. :class:`EvalJob` is the picklable callable the launcher submits for such entries (see
``experiments.common.eval_spec``, which gives them one device); it writes the same run-directory files the
collector reads (``spec.json``, ``result.json``, and ``env.json``), so eval rows and training rows land in
one CSV.

The numbers are the engine's: the same evaluation function (:mod:`convit.evaluation`), batch size and
precision rule (the spec's ``recipe.amp`` on a GPU, float32 on CPU; :mod:`convit.cudaconf`), so evaluating a
run's final checkpoint reproduces its last ``val_top1``/``val_loss`` (bit for bit on CPU). Launched as several
tasks (``WORLD_SIZE > 1``) the ranks share the validation set and rank 0 alone writes the files; every JSON is
written atomically, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from convit.spec import RunSpec

__all__ = ["EvalJob", "evaluate"]


def evaluate(
    spec: RunSpec,
    workdir: str | Path,
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    *,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` for ``spec`` (model, data, ``tags['intervention']``); write ``result.json``.

    ``device`` is as for ``convit.train.run`` (default: the GPU when there is one).
    """
    from convit import checkpoint as ckpt
    from convit import cudaconf, data, distributed, evaluation, models
    from convit.rundir import env_info

    workdir = Path(workdir)
    result_path = workdir / "result.json"
    spec_path = workdir / "spec.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != spec.to_dict():
        raise RuntimeError(f"{workdir} holds another spec; use another workdir")
    if result_path.exists():
        return json.loads(result_path.read_text())
    start = time.time()
    with cudaconf.Numerics(spec.resources.deterministic) as numerics:
        ctx = distributed.setup(device)
        try:
            numerics.apply(ctx.device)
            if ctx.is_main:
                workdir.mkdir(parents=True, exist_ok=True)
                if not spec_path.exists():
                    ckpt.write_text_atomic(spec_path, spec.to_json() + "\n")
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
            model.to(ctx.device)
            amp = cudaconf.amp_choice(spec.recipe.amp, ctx.device)
            cuda_notes = [amp.reason] if ctx.device.type == "cuda" and amp.reason else []
            for note in numerics.notes + cuda_notes if ctx.is_main else []:
                print(f"warning: {note}", file=sys.stderr, flush=True)
            # the engine's batch: 1.5 x its per-device training batch
            per_device = spec.resources.per_device_batch or max(1, spec.recipe.batch_size // ctx.world_size)
            loader = evaluation.make_loader(
                val, ctx, evaluation.eval_batch_size(per_device), spec.resources.workers
            )
            metrics = evaluation.evaluate(
                model, loader, ctx, lambda: evaluation.autocast(ctx.device, amp.dtype)
            )
            result = {
                "top1": metrics["top1"],
                "top5": metrics["top5"],
                "loss": metrics["loss"],
                "epochs": 0,
                "wall_time_s": time.time() - start,
                "world_size": ctx.world_size,
                "params": sum(p.numel() for p in model.parameters()),
                "checkpoint": str(checkpoint),
            }
            if ctx.is_main:
                env = env_info(ctx)
                env["numerics"] = {**numerics.record(), "amp": amp.record()}
                ckpt.write_json_atomic(workdir / "env.json", env)
                ckpt.write_json_atomic(result_path, result)
            distributed.barrier(ctx)  # nobody reports done before rank 0 has written the result
            return result
        finally:
            distributed.teardown(ctx)


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
        from convit import jobs

        # several tasks (a spec that asks for more than eval_spec's one device): one process group, the ranks
        # share the validation set and rank 0 writes, instead of N copies racing on the same files; SLURM's
        # CUDA_VISIBLE_DEVICES is kept (the same export as training jobs)
        jobs.export_distributed_env()
        return evaluate(self.spec, self.workdir, self.checkpoint, self.data_root)
