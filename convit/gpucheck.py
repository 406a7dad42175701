"""The GPU acceptance check (issue 15): one command, under 8 minutes on one GPU, one report.

Size: ~750 lines, one procedure: the check's steps share its Config/Check/StepResult and
run as child processes of the same CLI; each step is a short function, listed in order.

Command (``make gpu-check``; on a machine without the shared datasets folder, copy the archives the check
needs into the working tree and point ``ARCHIVES`` at them)::

    python -m convit.gpucheck [--device cuda] [--archives DIR] [--data-root DIR] [--out results/bench]
        [--budget-s 470] [--steps env,data,...] [--quick]

Steps, each run in its own Python process with its own time limit (a hung or crashed step costs its limit,
never the rest), each recorded as pass / fail / skip with its numbers, the report rewritten after every
step (``OUT/gpu-check.md`` and ``OUT/gpu-check.json``), so an interrupted check leaves what it measured:

- ``env``: torch, CUDA, the device and whether it does bf16.
- ``data``: prepares ``cifar10-fixture`` and ``tiny-imagenet-fixture`` (and ``tiny-imagenet`` when its
  archive is there) from the archives folder into the data root.
- ``smoke-bf16``, ``smoke-fp16``: tiny ConViT runs through ``convit.train.run`` under that autocast dtype
  (fp16 with the engine's GradScaler, whose state must be in the checkpoint): a run preempted mid-epoch
  (``should_stop``) and resumed, which must finish with finite losses, ``checkpoint.pth`` and
  ``result.json``; with ``ResourceSpec.deterministic`` its result must equal, bit for bit, that of the same
  run done in one go; a run whose forward is poisoned with NaN must stop with ``NonFiniteLoss`` and keep its
  last good, finite checkpoint and no result.
- ``eval-only``: ``experiments/evaluate.py`` on the uninterrupted bf16 smoke run's final checkpoint: the
  same top-1 and loss as that run's last in-training evaluation.
- ``bench``: ``convit.bench`` with ConViT-S, DeiT-S and timm's ``convit_small`` (bf16, batch 128): issue 6's
  targets, ConViT-S training >= 0.80 x DeiT-S and >= 1.5 x timm's, peak training memory <= 1.15 x DeiT-S.
- ``compile``: ``convit.bench`` with ``convit_small+compile`` beside ``convit_small`` (bf16, batch 128):
  compiled training must not be slower (the upper quartile of the paired per-round ratios >= 1).
- ``loader``: ConViT-Ti and ConViT-S of the ``reduced`` scale (main_table's specs: Tiny-ImageNet 64 px,
  8 workers, batch 256) trained for one epoch on a quarter of Tiny-ImageNet, and the loader alone
  (``convit.data.bench``): the share of training time spent waiting on data, and loader against training
  images/s. A measurement, not a target: it says whether that scale is input-bound on this machine (the
  launcher's estimate assumes so for the Ti models). Without the Tiny-ImageNet archive it runs on the
  fixture and is reported as skipped (plumbing only).

Data: only the fixture archives are needed for everything but ``loader`` (0.5 MB, ``fixtures/`` of
``../shared/datasets``); ``loader`` needs ``tiny-imagenet-200/tiny-imagenet-200_imagefolder_trainval.tar.gz``
(151 MB). Nothing is synthesised or downloaded.

``--device cpu --quick`` runs every step's plumbing on a CPU in a couple of minutes (2-block models, the
fixtures, tiny benchmarks with the ``aot_eager`` compile backend, no inductor code generation); the targets
are then reported, with their numbers, as skipped (they are about a GPU).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["STEPS", "Check", "StepResult", "main", "render_markdown", "run_check"]

REPO = Path(__file__).resolve().parents[1]

#: step name -> (time limit in seconds on a GPU, what it checks); the order is the running order.
STEPS: dict[str, tuple[int, str]] = {
    "env": (60, "torch, CUDA and the device"),
    "data": (90, "fixtures (and Tiny-ImageNet) prepared from the archives"),
    "smoke-bf16": (
        75,
        "bf16 training: finite loss, checkpoint, preempt + resume (exact when deterministic), NaN guard",
    ),
    "smoke-fp16": (75, "fp16 + GradScaler training: the same checks"),
    "eval-only": (45, "experiments/evaluate.py on a trained checkpoint = the in-training evaluation"),
    "bench": (90, "issue 6's targets at bf16 batch 128"),
    "compile": (150, "torch.compile on/off: compiled ConViT-S trains no slower"),
    "loader": (120, "data loader against training at the reduced scale (waited-on-data share)"),
}
#: what a step needs from an earlier one (skipped, naming it, when that one did not pass)
NEEDS = {"smoke-bf16": "data", "smoke-fp16": "data", "loader": "data"}

TARGETS = {"train_vs_deit": 0.80, "train_vs_timm": 1.5, "peak_mem_vs_deit": 1.15}


@dataclass
class Check:
    """One assertion of a step: ``ok`` None means not applicable here (reported, not judged)."""

    name: str
    ok: bool | None
    detail: str = ""


@dataclass
class StepResult:
    name: str
    status: str  # "pass" | "fail" | "skip"
    seconds: float = 0.0
    checks: list[Check] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @classmethod
    def from_checks(
        cls, name: str, checks: list[Check], numbers: dict[str, Any], note: str = ""
    ) -> StepResult:
        judged = [c.ok for c in checks if c.ok is not None]
        if not judged:
            status = "skip"
        else:
            status = "pass" if all(judged) else "fail"
        return cls(name, status, checks=checks, numbers=numbers, note=note)


@dataclass(frozen=True)
class Config:
    device: str
    quick: bool
    work: str
    data_root: str
    archives: str | None
    out: str

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


# ----------------------------------------------------------------------------------------------------
# the steps (each runs in a child process: python -m convit.gpucheck --step NAME --config JSON)
# ----------------------------------------------------------------------------------------------------
def _step_env(cfg: Config) -> StepResult:
    import timm
    import torch

    numbers: dict[str, Any] = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
    }
    checks = []
    if cfg.on_gpu:
        ok = torch.cuda.is_available()
        checks.append(Check("CUDA available", ok, f"{torch.cuda.device_count()} device(s)"))
        if ok:
            dev = torch.device(cfg.device)
            numbers["device"] = torch.cuda.get_device_name(dev)
            numbers["capability"] = ".".join(map(str, torch.cuda.get_device_capability(dev)))
            numbers["memory_gib"] = round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1)
            checks.append(Check("bf16 supported", torch.cuda.is_bf16_supported()))
    else:
        numbers["device"] = "cpu"
        checks.append(Check("device", None, "cpu: a plumbing run, the GPU facts are not checked"))
    numbers["cpus"] = os.cpu_count()
    return StepResult.from_checks("env", checks, numbers)


def _step_data(cfg: Config) -> StepResult:
    from convit.data import DataError, is_prepared
    from convit.prepare import prepare

    checks, numbers = [], {}
    names = ["cifar10-fixture", "tiny-imagenet-fixture"] + ([] if cfg.quick else ["tiny-imagenet"])
    for name in names:
        if is_prepared(name, cfg.data_root):
            checks.append(Check(f"{name} prepared", True, "already in the data root"))
            continue
        t0 = time.perf_counter()
        try:
            prepare(name, cfg.data_root, archives=cfg.archives)
        except DataError as err:
            optional = name == "tiny-imagenet"
            checks.append(Check(f"{name} prepared", None if optional else False, str(err).splitlines()[0]))
            continue
        numbers[f"{name}_s"] = round(time.perf_counter() - t0, 1)
        checks.append(Check(f"{name} prepared", True))
    return StepResult.from_checks("data", checks, numbers)


def _smoke_spec(cfg: Config, amp: str, deterministic: bool, epochs: int | None = None) -> Any:
    """A tiny ConViT (1 GPSA + 1 MHSA block) with the full DeiT recipe on the CIFAR-10 fixture: 200 images,
    6 steps an epoch, 3 epochs (quick: 2 classes, 40 images, batch 8, 2 epochs)."""
    from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec

    classes, batch = (2, 8) if cfg.quick else (10, 32)
    epochs = epochs or (2 if cfg.quick else 3)
    return RunSpec(
        model=ModelSpec("convit_tiny", {"depth": 2, "patch_size": 8, "local_up_to_layer": 1}),
        data=DataSpec("cifar10-fixture", img_size=32, num_classes=classes),
        recipe=RecipeSpec(epochs=epochs, warmup_epochs=1.0, batch_size=batch, repeated_aug=False, amp=amp),
        resources=ResourceSpec(workers=0 if cfg.quick else 2, timeout_min=5, deterministic=deterministic),
        probes=ProbeSpec(every=1, batch=4 if cfg.quick else 16),
        tags={"suite": "gpu-check", "check": f"smoke-{amp}"},
    )


def _metrics(workdir: Path) -> list[dict[str, Any]]:
    path = workdir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _guarded(checks: list[Check], label: str, part: Callable[[], None]) -> None:
    """Run one part of a step; an exception becomes a failed check naming it, and the next part still runs."""
    try:
        part()
    except Exception as exc:  # noqa: BLE001 - reported in the check, the step goes on
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        checks.append(Check(label, False, f"{type(exc).__name__}: {first}"))


def _smoke(cfg: Config, amp: str) -> StepResult:
    import torch

    from convit import checkpoint, models, train

    name = f"smoke-{amp}"
    base = Path(cfg.work) / name
    checks: list[Check] = []
    numbers: dict[str, Any] = {}
    spec = _smoke_spec(cfg, amp, deterministic=True)
    resumed_dir, straight_dir = base / "resumed", base / "straight"
    fast_spec = _smoke_spec(cfg, amp, deterministic=False, epochs=2)  # 2 epochs: the NaN run needs them
    done: dict[str, dict[str, Any]] = {}

    def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in m.items() if k not in train.TIMING_KEYS} for m in rows]

    def preempt_and_resume() -> None:
        """Preempted mid-epoch through should_stop (deterministic numerics), then resumed to the end."""
        calls = {"n": 0}
        stop_at = 3 if cfg.quick else 8  # a step inside the first (quick) or the second epoch

        def stop_after() -> bool:
            calls["n"] += 1
            return calls["n"] >= stop_at

        t0 = time.perf_counter()
        try:
            train.run(spec, resumed_dir, data_root=cfg.data_root, device=cfg.device, should_stop=stop_after)
            checks.append(Check("preempted by should_stop", False, "the run finished instead"))
        except train.Preempted:
            state = checkpoint.load(resumed_dir / checkpoint.CHECKPOINT)
            at = (state["epoch"], state["step_in_epoch"], state["global_step"])
            checks.append(
                Check("preempted by should_stop, checkpoint saved", True, f"epoch/step/global {at}")
            )
            if amp == "fp16":  # the engine's GradScaler runs on a GPU only (a CPU trains in fp32)
                scale = (state.get("scaler") or {}).get("scale")
                ok = (scale is not None) if cfg.on_gpu else None
                checks.append(Check("GradScaler state in the checkpoint", ok, f"scale {scale}"))
        done["resumed"] = result = train.run(spec, resumed_dir, data_root=cfg.data_root, device=cfg.device)
        numbers["resumed_run_s"] = round(time.perf_counter() - t0, 1)
        lines = _metrics(resumed_dir)
        losses = [m["train_loss"] for m in lines]
        checks.append(
            Check(
                "resumed run finished: one line per epoch, finite losses",
                [m["epoch"] for m in lines] == list(range(1, spec.recipe.epochs + 1))
                and all(math.isfinite(x) for x in losses),
                f"losses {[round(x, 4) for x in losses]}",
            )
        )
        checks.append(
            Check(
                "checkpoint.pth and result.json",
                (resumed_dir / checkpoint.CHECKPOINT).exists() and (resumed_dir / "result.json").exists(),
                f"top1 {result.get('top1')}",
            )
        )
        device_name = str(json.loads((resumed_dir / "env.json").read_text()).get("device", ""))
        checks.append(
            Check("trained on the requested device", device_name.startswith("cpu") != cfg.on_gpu, device_name)
        )

    def straight() -> None:
        """The same run in one go: equal to the resumed one, bit for bit (deterministic numerics)."""
        t0 = time.perf_counter()
        done["straight"] = got = train.run(spec, straight_dir, data_root=cfg.data_root, device=cfg.device)
        numbers["straight_run_s"] = round(time.perf_counter() - t0, 1)
        numbers["top1"], numbers["loss"] = got.get("top1"), got.get("loss")
        numbers["images_per_s"] = _metrics(straight_dir)[-1].get("images_per_s")
        if "resumed" not in done:
            return
        resumed = done["resumed"]
        same = all(got[k] == resumed[k] for k in got if k not in train.TIMING_KEYS)
        same_curves = without_timing(_metrics(straight_dir)) == without_timing(_metrics(resumed_dir))
        checks.append(
            Check(
                "resume is exact (deterministic): result and curves equal the uninterrupted run",
                same and same_curves,
                f"top1 {got.get('top1')} vs {resumed.get('top1')}, "
                f"loss {got.get('loss')} vs {resumed.get('loss')}",
            )
        )

    def default_numerics() -> None:
        """The default (fast, nondeterministic) numerics: a plain run trains."""
        fast_dir = base / "fast"
        fast = train.run(fast_spec, fast_dir, data_root=cfg.data_root, device=cfg.device)
        fast_losses = [m["train_loss"] for m in _metrics(fast_dir)]
        checks.append(
            Check(
                "default numerics: finite losses and result",
                all(map(math.isfinite, fast_losses)) and math.isfinite(fast["loss"]),
                f"losses {[round(x, 4) for x in fast_losses]}",
            )
        )

    def nan_guard() -> None:
        """The 2nd training forward of the 2nd epoch returns NaN (after the first epoch's checkpoint): the run
        stops naming it and keeps that checkpoint, finite, and writes no result."""
        nan_dir = base / "nan"
        real_create = models.create
        poison_at = (5 if cfg.quick else 6) + 2  # steps per epoch: 40 // 8 (quick) or 200 // 32, plus 2

        def poisoned(model_name: str, **kwargs: Any) -> torch.nn.Module:
            model = real_create(model_name, **kwargs)
            seen = {"n": 0}

            def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
                if not module.training:
                    return output
                seen["n"] += 1
                return output * float("nan") if seen["n"] >= poison_at else output

            model.register_forward_hook(hook)
            return model

        models.create = poisoned  # train.py looks it up on the module at run time
        try:
            nan_spec = replace(fast_spec, tags={**fast_spec.tags, "check": f"{name}-nan"})
            train.run(nan_spec, nan_dir, data_root=cfg.data_root, device=cfg.device)
            checks.append(Check("NaN guard stops the run", False, "the poisoned run finished"))
        except train.NonFiniteLoss as err:
            path = nan_dir / checkpoint.CHECKPOINT
            state = checkpoint.load(path) if path.exists() else None
            finite = state is not None and all(
                torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point()
            )
            ok = finite and not (nan_dir / "result.json").exists()
            checks.append(Check("NaN guard stops the run, last checkpoint finite, no result", ok, str(err)))
        finally:
            models.create = real_create

    _guarded(checks, "preempt + resume", preempt_and_resume)
    _guarded(checks, "uninterrupted deterministic run", straight)
    _guarded(checks, "default numerics", default_numerics)
    _guarded(checks, "NaN guard", nan_guard)
    return StepResult.from_checks(name, checks, numbers)


def _step_eval_only(cfg: Config) -> StepResult:
    sys.path.insert(0, str(REPO))
    import inspect

    from convit import checkpoint
    from experiments.evaluate import evaluate

    run_dir = Path(cfg.work) / "smoke-bf16" / "straight"
    if not (run_dir / "result.json").exists():  # smoke-bf16 not run, or it failed before that run finished
        return StepResult("eval-only", "skip", note=f"no finished smoke-bf16 run in {run_dir}")
    spec = _smoke_spec(cfg, "bf16", deterministic=True)
    last = _metrics(run_dir)[-1]
    workdir = Path(cfg.work) / "eval-only"
    kwargs = {"device": cfg.device} if "device" in inspect.signature(evaluate).parameters else {}
    if not kwargs and not cfg.on_gpu:
        return StepResult("eval-only", "skip", note="experiments.evaluate.evaluate takes no device= here")
    got = evaluate(spec, workdir, run_dir / checkpoint.CHECKPOINT, cfg.data_root, **kwargs)
    numbers = {
        "eval_top1": got["top1"],
        "train_val_top1": last.get("val_top1"),
        "eval_loss": got["loss"],
        "train_val_loss": last.get("val_loss"),
    }
    d_loss = abs(got["loss"] - last["val_loss"])
    checks = [
        Check(
            "top-1 equals the in-training evaluation",
            got["top1"] == last["val_top1"],
            f"{got['top1']} vs {last['val_top1']}",
        ),
        Check(
            "loss equals it (|diff| <= 1e-5 relative)",
            d_loss <= 1e-5 * max(1.0, abs(last["val_loss"])),
            f"diff {d_loss:.3g}",
        ),
    ]
    return StepResult.from_checks("eval-only", checks, numbers)


def _bench_argv(cfg: Config, models: str, reference: str, csv_path: Path) -> list[str]:
    argv = ["--models", models, "--reference", reference, "--device", cfg.device, "--csv", str(csv_path)]
    if cfg.quick:
        argv += ["--dtype", "bf16", "--batch", "4", "--img-size", "32", "--depth", "2", "--rounds", "3"]
        argv += ["--iters", "1", "--warmup", "1", "--compile-backend", "aot_eager"]
    else:
        argv += ["--dtype", "bf16", "--batch", "128", "--rounds", "10", "--iters", "3", "--warmup", "2"]
    return argv


def _bench_rows(cfg: Config, models: str, reference: str, csv_name: str) -> dict[str, dict[str, str]]:
    from convit import bench

    csv_path = Path(cfg.out) / csv_name
    code = bench.main(_bench_argv(cfg, models, reference, csv_path))
    if code != 0:
        raise RuntimeError(f"convit.bench exited with {code}")
    return {row["model"]: row for row in csv.DictReader(csv_path.open())}


def _num(row: dict[str, str], key: str) -> float | None:
    value = row.get(key, "")
    return float(value) if value not in ("", "None") else None


def _target(name: str, value: float | None, ok: bool | None, on_gpu: bool, detail: str) -> Check:
    if value is None:
        return Check(name, None, "not measured on this device")
    return Check(
        name, ok if on_gpu else None, detail + ("" if on_gpu else " (a GPU target; cpu: not judged)")
    )


def _sizes(cfg: Config) -> tuple[str, str]:
    return ("tiny", "timm:convit_tiny") if cfg.quick else ("small", "timm:convit_small")


def _step_compile(cfg: Config) -> StepResult:
    size, _ = _sizes(cfg)
    eager = f"convit_{size}"
    rows = _bench_rows(cfg, f"{eager}+compile,{eager}", eager, "gpu-check-compile.csv")
    mid, q1, q3 = (_num(rows[f"{eager}+compile"], f"train_vs_{eager}{s}") for s in ("", "_q1", "_q3"))
    numbers = {
        "compiled_vs_eager_train": mid,
        "iqr": [q1, q3],
        "compiled_train_img_s": _num(rows[f"{eager}+compile"], "train_img_s"),
        "eager_train_img_s": _num(rows[eager], "train_img_s"),
    }
    detail = f"{mid:.3f} [{q1:.3f}-{q3:.3f}]" if mid is not None else ""
    check = _target(
        "compiled training no slower (IQR upper end >= 1)",
        mid,
        q3 is not None and q3 >= 1.0,
        cfg.on_gpu,
        detail,
    )
    return StepResult.from_checks("compile", [check], numbers)


def _step_bench(cfg: Config) -> StepResult:
    size, timm_name = _sizes(cfg)
    ours, deit = f"convit_{size}", f"deit_{size}"
    rows = _bench_rows(cfg, f"{ours},{deit},{timm_name}", f"{deit},{timm_name}", "gpu-check-bench.csv")
    row = rows[ours]
    vs_deit, vs_timm = _num(row, f"train_vs_{deit}"), _num(row, f"train_vs_{timm_name}")
    mem = _num(row, f"peak_mem_vs_{deit}")
    numbers = {
        f"{ours}_train_img_s": _num(row, "train_img_s"),
        f"{deit}_train_img_s": _num(rows[deit], "train_img_s"),
        f"{timm_name}_train_img_s": _num(rows[timm_name], "train_img_s"),
        "train_vs_deit": vs_deit,
        "train_vs_deit_iqr": [_num(row, f"train_vs_{deit}_q1"), _num(row, f"train_vs_{deit}_q3")],
        "train_vs_timm": vs_timm,
        "peak_mem_vs_deit": mem,
        f"{ours}_peak_train_mb": _num(row, "peak_train_mb"),
        f"{deit}_peak_train_mb": _num(rows[deit], "peak_train_mb"),
    }
    checks = [
        _target(
            f"{ours} training >= {TARGETS['train_vs_deit']} x {deit}",
            vs_deit,
            vs_deit is not None and vs_deit >= TARGETS["train_vs_deit"],
            cfg.on_gpu,
            f"{vs_deit:.3f}",
        ),
        _target(
            f"{ours} training >= {TARGETS['train_vs_timm']} x {timm_name}",
            vs_timm,
            vs_timm is not None and vs_timm >= TARGETS["train_vs_timm"],
            cfg.on_gpu,
            f"{vs_timm:.3f}",
        ),
        _target(
            f"peak training memory <= {TARGETS['peak_mem_vs_deit']} x {deit}",
            mem,
            mem is not None and mem <= TARGETS["peak_mem_vs_deit"],
            cfg.on_gpu,
            f"{mem:.3f}" if mem is not None else "",
        ),
    ]
    return StepResult.from_checks("bench", checks, numbers)


def _step_loader(cfg: Config) -> StepResult:
    sys.path.insert(0, str(REPO))
    from convit import data, train
    from convit.spec import ProbeSpec
    from experiments import main_table

    real = data.is_prepared("tiny-imagenet", cfg.data_root) and not cfg.quick
    wanted = ("convit_tiny",) if cfg.quick else ("convit_tiny", "convit_small")
    specs = [s for s in main_table.specs("reduced") if s.model.name in wanted]
    numbers: dict[str, Any] = {"dataset": "tiny-imagenet" if real else "tiny-imagenet-fixture"}
    checks = []
    for spec in specs:
        recipe = replace(spec.recipe, epochs=1, warmup_epochs=0.0)
        dataset = (
            replace(spec.data, fraction=0.25) if real else replace(spec.data, name="tiny-imagenet-fixture")
        )
        model, resources = spec.model, spec.resources
        if cfg.quick:  # plumbing: 2 blocks, small batch, 2 workers
            model = replace(model, kwargs={**model.kwargs, "depth": 2, "local_up_to_layer": 1})
            recipe = replace(recipe, batch_size=32)
            resources = replace(resources, workers=2)
        spec = replace(
            spec,
            recipe=recipe,
            data=dataset,
            model=model,
            resources=resources,
            probes=ProbeSpec(every=0),
            tags={**spec.tags, "check": "gpu-check-loader"},
        )
        workdir = Path(cfg.work) / "loader" / spec.model.name
        train.run(spec, workdir, data_root=cfg.data_root, device=cfg.device)
        line = _metrics(workdir)[-1]
        share = line["data_wait_s"] / line["train_time_s"] if line.get("train_time_s") else None
        key = spec.model.name
        numbers[f"{key}_train_img_s"] = line.get("images_per_s")
        numbers[f"{key}_data_wait_share"] = None if share is None else round(share, 3)
        verdict = "input-bound" if share is not None and share > 0.1 else "compute-bound"
        checks.append(
            Check(
                f"{key}: waited-on-data share measured",
                True if real else None,
                f"{share:.1%} of training time ({verdict}); {line.get('images_per_s')} img/s",
            )
        )
    loader_rate = data.bench(
        numbers["dataset"],
        cfg.data_root,
        img_size=64,
        batch=specs[0].recipe.batch_size if not cfg.quick else 32,
        workers=specs[0].resources.workers if not cfg.quick else 2,
        seconds=3.0 if cfg.quick else 15.0,
        fraction=0.25 if real else 1.0,
    )
    numbers["loader_alone_img_s"] = round(loader_rate, 1)
    note = (
        ""
        if real
        else "Tiny-ImageNet is not prepared (quick mode, or no archive): ran on the fixture, plumbing only"
    )
    return StepResult.from_checks("loader", checks, numbers, note)


_STEP_FUNCS: dict[str, Callable[[Config], StepResult]] = {
    "env": _step_env,
    "data": _step_data,
    "smoke-bf16": lambda cfg: _smoke(cfg, "bf16"),
    "smoke-fp16": lambda cfg: _smoke(cfg, "fp16"),
    "eval-only": _step_eval_only,
    "compile": _step_compile,
    "bench": _step_bench,
    "loader": _step_loader,
}


def _run_step_here(name: str, cfg: Config, result_path: Path) -> int:
    """Child-process side: run one step, write its StepResult as JSON (a failure is a result too)."""
    t0 = time.perf_counter()
    shutil.rmtree(Path(cfg.work) / name, ignore_errors=True)  # the step's run directories: a fresh start
    try:
        result = _STEP_FUNCS[name](cfg)
    except Exception as exc:  # noqa: BLE001 - the report names it; the next step still runs
        traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        result = StepResult(name, "fail", note=f"{type(exc).__name__}: {first}")
    result.seconds = round(time.perf_counter() - t0, 1)
    result_path.write_text(json.dumps(asdict(result), indent=1, default=str))
    return 0


# ----------------------------------------------------------------------------------------------------
# the parent: one child per step, a budget, the report
# ----------------------------------------------------------------------------------------------------
def _from_json(payload: dict[str, Any]) -> StepResult:
    checks = [Check(**c) for c in payload.pop("checks", [])]
    return StepResult(checks=checks, **payload)


def _run_child(name: str, cfg: Config, limit_s: float, log_dir: Path) -> StepResult:
    result_path = log_dir / f"{name}.json"
    result_path.unlink(missing_ok=True)
    log_path = log_dir / f"{name}.log"
    cmd = [sys.executable, "-m", "convit.gpucheck", "--step", name, "--config", json.dumps(asdict(cfg))]
    t0 = time.perf_counter()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if cfg.quick and not cfg.on_gpu:
        env["OMP_NUM_THREADS"] = "1"  # tiny models on a shared CPU: one thread is faster than two fighting
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                cmd,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=limit_s,
                env=env,
            )
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    seconds = round(time.perf_counter() - t0, 1)
    if result_path.exists():
        result = _from_json(json.loads(result_path.read_text()))
        result.seconds = seconds
        return result
    why = f"timed out after {limit_s:.0f} s" if code is None else f"the step's process exited with {code}"
    tail = log_path.read_text().strip().splitlines()[-1:] if log_path.exists() else []
    return StepResult(name, "fail", seconds, note=f"{why}; log {log_path}" + (f": {tail[0]}" if tail else ""))


def render_markdown(results: list[StepResult], meta: dict[str, Any]) -> str:
    """The human report: a table of steps, then each step's checks and numbers."""
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    lines = [
        "# GPU acceptance check (`make gpu-check`)",
        "",
        ", ".join(f"{k}: {v}" for k, v in meta.items()),
        "",
        f"**{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped** "
        f"of {len(results)} steps run.",
        "",
        "| step | status | seconds | what |",
        "|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.status.upper()} | {r.seconds:.0f} | {STEPS.get(r.name, (0, ''))[1]} |")
    for r in results:
        lines += ["", f"## {r.name}: {r.status}"]
        if r.note:
            lines.append(f"_{r.note}_")
        for c in r.checks:
            mark = {True: "pass", False: "FAIL", None: "n/a"}[c.ok]
            lines.append(f"- [{mark}] {c.name}" + (f": {c.detail}" if c.detail else ""))
        if r.numbers:
            lines.append("- numbers: " + ", ".join(f"{k}={v}" for k, v in r.numbers.items()))
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a reader never sees half a report


def _write_report(out: Path, results: list[StepResult], meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "steps": [asdict(r) for r in results]}
    _write_atomic(out / "gpu-check.json", json.dumps(payload, indent=1, default=str) + "\n")
    _write_atomic(out / "gpu-check.md", render_markdown(results, meta))


def run_check(
    cfg: Config, steps: list[str], budget_s: float, log: Callable[[str], None] = print
) -> list[StepResult]:
    """Run ``steps`` in order, each in a child with min(its limit, what is left of ``budget_s``); never stop
    at a failure (a step whose prerequisite did not pass is skipped, naming it); rewrite the report after
    each step."""
    out, log_dir = Path(cfg.out), Path(cfg.work) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": cfg.device,
        "quick": cfg.quick,
        "budget_s": budget_s,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "work": cfg.work,
    }
    results: list[StepResult] = []
    start = time.monotonic()
    for name in steps:
        left = budget_s - (time.monotonic() - start)
        need = NEEDS.get(name)
        done = {r.name: r.status for r in results}
        if need in done and done[need] == "fail":
            result = StepResult(name, "skip", note=f"needs {need}, which failed")
        elif left < 10:
            result = StepResult(name, "skip", note=f"the {budget_s:.0f} s budget is spent")
        else:
            limit = STEPS[name][0] * (3 if not cfg.on_gpu else 1)
            log(f"gpu-check: {name} (limit {min(limit, left):.0f} s) ...")
            result = _run_child(name, cfg, min(limit, left), log_dir)
        note = f" - {result.note}" if result.note else ""
        log(f"gpu-check: {name}: {result.status} ({result.seconds:.0f} s){note}")
        results.append(result)
        meta["elapsed_s"] = round(time.monotonic() - start, 1)
        _write_report(out, results, meta)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m convit.gpucheck", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny everything: the plumbing, on any device")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench", help="where the report goes")
    parser.add_argument(
        "--work", type=Path, default=REPO / "runs" / "gpu-check", help="run directories and step logs"
    )
    parser.add_argument(
        "--data-root", default=None, help="prepared datasets (default: $CONVIT_DATA_ROOT or ./data)"
    )
    parser.add_argument("--archives", default=None, help="dataset archives (default: $CONVIT_DATA_ARCHIVES)")
    parser.add_argument("--budget-s", type=float, default=470.0, help="the whole check's time limit")
    parser.add_argument(
        "--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}"
    )
    parser.add_argument("--step", default=None, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.steps = [s for s in args.steps.split(",") if s]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; known: {', '.join(STEPS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Parent: run the steps and write the report; exit 0 when no step failed, 1 otherwise."""
    args = parse_args(argv)
    if args.step is not None:
        cfg = Config(**json.loads(args.config))
        return _run_step_here(args.step, cfg, Path(cfg.work) / "logs" / f"{args.step}.json")
    archives = args.archives or os.environ.get("CONVIT_DATA_ARCHIVES") or None
    data_root = args.data_root or os.environ.get("CONVIT_DATA_ROOT") or str(REPO / "data")
    work = args.work
    cfg = Config(
        args.device,
        args.quick,
        str(Path(work).resolve()),
        str(Path(data_root).resolve()),
        str(Path(archives).resolve()) if archives else None,
        str(Path(args.out).resolve()),
    )
    results = run_check(cfg, args.steps, args.budget_s)
    print(f"gpu-check: report in {Path(cfg.out) / 'gpu-check.md'}")
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
