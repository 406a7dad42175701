"""Run specifications: typed, frozen, JSON-serialisable descriptions of one training run.

A :class:`RunSpec` is the whole identity of a run (model, data, recipe, schedule, seed, resources, probes).
The run directory stores it as ``spec.json``; relaunching with an identical spec resumes, a different spec is
refused. Machine facts (data root, output root, cluster) are deliberately *not* part of a spec, so the same
spec means the same experiment on a laptop and on a cluster.

Defaults are the paper's ImageNet recipe (DeiT recipe as used by ConViT, reference section 6); experiment
modules derive other scales with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DataSpec",
    "ModelSpec",
    "ProbeSpec",
    "RecipeSpec",
    "ResourceSpec",
    "RunSpec",
    "SpecError",
]


class SpecError(ValueError):
    """A spec is malformed (unknown key, wrong type, value out of range)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which network to build: a name from ``convit.models`` plus constructor overrides.

    ``num_classes`` and ``img_size`` are not given here: the engine takes them from :class:`DataSpec`, so
    they cannot disagree with the data. ``kwargs`` holds everything else (``patch_size``, ablation switches
    such as ``local_up_to_layer``, ``locality_strength``, ``use_conv_init`` ...).
    """

    name: str = "convit_small"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """Which images: a dataset name, the paper's per-class subsampling, optional first-k classes.

    ``fraction`` keeps the first ``floor(fraction * n_c)`` files of each class in sorted filename order,
    training split only (reference section 2.1). ``num_classes`` keeps the first k classes in sorted order
    for both splits ("first 100 classes", reference section 3.2).
    """

    name: str = "imagenet"
    fraction: float = 1.0
    num_classes: int | None = None
    img_size: int = 224
    #: eval resize ratio (crop_pct): Resize(img_size / crop_pct) then CenterCrop(img_size).
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if not (0.0 < self.fraction <= 1.0):
            raise SpecError(f"data fraction must be in (0, 1], got {self.fraction}")
        if self.num_classes is not None and self.num_classes < 1:
            raise SpecError(f"num_classes must be positive, got {self.num_classes}")
        if self.img_size < 8:
            raise SpecError(f"img_size must be at least 8, got {self.img_size}")


@dataclass(frozen=True)
class RecipeSpec:
    """The DeiT training recipe (reference section 6). Values are the paper's defaults.

    ``batch_size`` is the *global* batch (all devices, after gradient accumulation). The peak learning
    rate is ``base_lr * batch_size / 512`` (linear scaling rule of DeiT/ConViT main.py), computed by the
    engine and printed, never written back into the spec.
    """

    epochs: int = 300
    warmup_epochs: float = 5.0
    batch_size: int = 1024
    base_lr: float = 5e-4
    min_lr: float = 1e-5
    warmup_lr: float = 1e-6
    weight_decay: float = 0.05
    opt_eps: float = 1e-8
    clip_grad: float | None = None
    smoothing: float = 0.1
    mixup: float = 0.8
    cutmix: float = 1.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    mixup_mode: str = "batch"
    rand_augment: str | None = "rand-m9-mstd0.5-inc1"
    color_jitter: float = 0.4
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    #: repeated augmentation (timm RepeatAugSampler, 3 repeats); an epoch is floor(N / ra_round) * ra_round
    #: samples (DeiT/ConViT convention).
    repeated_aug: bool = True
    ra_round: int = 256
    drop_path: float = 0.1
    ema: bool = False
    ema_decay: float = 0.99996
    #: "bf16" | "fp16" | "none"; only used on GPU (CPU always trains in fp32).
    amp: str = "bf16"
    #: "step": cosine with warm-up updated every optimiser step (faithful to the paper's description).
    #: "epoch_lagged": the original code's per-epoch update with its one-epoch lag (reference section 6).
    lr_schedule: str = "step"
    #: False: pos_embed / cls_token get no weight decay (intended behaviour). True: the original code's DDP
    #: behaviour, where they are decayed (reference section 8.2 item 5).
    decay_pos_embed: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise SpecError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise SpecError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.amp not in ("bf16", "fp16", "none"):
            raise SpecError(f"amp must be 'bf16', 'fp16' or 'none', got {self.amp!r}")
        if self.lr_schedule not in ("step", "epoch_lagged"):
            raise SpecError(f"lr_schedule must be 'step' or 'epoch_lagged', got {self.lr_schedule!r}")

    def peak_lr(self) -> float:
        """Learning rate after the linear scaling rule (base_lr x global batch / 512)."""
        return self.base_lr * self.batch_size / 512


@dataclass(frozen=True)
class ResourceSpec:
    """How the run is spread: nodes x GPUs per node, per-device batch (the rest is gradient accumulation)."""

    nodes: int = 1
    gpus_per_node: int = 1
    #: None: global batch / world size (no accumulation).
    per_device_batch: int | None = None
    workers: int = 8
    #: wall-clock limit of one SLURM job (it requeues past it). None: the launcher derives it from the run's
    #: estimated duration (or takes the cluster profile's), and checks it against the partition's limit.
    timeout_min: int | None = None
    #: True: deterministic GPU algorithms (``torch.use_deterministic_algorithms``, no cuDNN autotuning, math
    #: SDPA backward), so a GPU run is bit-reproducible and resumes exactly, at a measured speed cost (see
    #: README). CPU runs are deterministic either way.
    deterministic: bool = False

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise SpecError("nodes and gpus_per_node must be >= 1")
        if self.timeout_min is not None and self.timeout_min < 1:
            raise SpecError(f"timeout_min must be >= 1 or null, got {self.timeout_min}")


@dataclass(frozen=True)
class ProbeSpec:
    """Locality probes logged each ``every`` epochs (nonlocality, sigma(lambda), attention-centre distances).

    ``mode``: "propagated" feeds each block the activations of the previous ones (Eq. 8 as written);
    "patch_embed" feeds raw patch embeddings to every block, as the original code does (its issue #23).
    """

    every: int = 1
    batch: int = 64
    mode: str = "propagated"

    def __post_init__(self) -> None:
        if self.mode not in ("propagated", "patch_embed"):
            raise SpecError(f"probe mode must be 'propagated' or 'patch_embed', got {self.mode!r}")


@dataclass(frozen=True)
class RunSpec:
    """One training run: everything that determines its result."""

    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    recipe: RecipeSpec = field(default_factory=RecipeSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    probes: ProbeSpec = field(default_factory=ProbeSpec)
    seed: int = 0
    #: evaluate every N epochs (the last epoch is always evaluated).
    eval_every: int = 1
    #: free-form labels for the collector (suite, scale, variant, ...); part of the identity.
    tags: dict[str, Any] = field(default_factory=dict)

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal specs give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return _from_dict(cls, data, "spec")

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    def digest(self, length: int = 8) -> str:
        """Short content hash of the full spec: part of a run's name, so a changed spec gets a new name."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:length]


def _from_dict(cls: type, data: Any, where: str) -> Any:
    """Build dataclass ``cls`` from plain data; unknown or mistyped keys raise :class:`SpecError`."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise SpecError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(names)}")
    values = {}
    for key, value in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _from_dict(hint, value, f"{where}.{key}")
        else:
            values[key] = _check_type(hint, value, f"{where}.{key}")
    return cls(**values)


def _check_type(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(arg, value, where)
            except SpecError:
                continue
        raise SpecError(f"{where}: {value!r} does not match {hint}")
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise SpecError(f"{where}: expected an object, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int or hint is bool or hint is str:
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise SpecError(f"{where}: expected {hint.__name__}, got {value!r}")
        return value
    return value
