"""Loading weights from local files: official ConViT releases, timm checkpoints, our training checkpoints.

The official ``convit_{tiny,small,base}.pth`` files are bare state dicts (reference 1.5); timm and our engine
wrap the weights in a dict under ``model`` / ``state_dict`` / ``model_ema``. Files are read with
``torch.load(weights_only=True)`` (no pickled code runs; the official training checkpoints' pickled argparse
Namespace is exactly what that refuses, reference 8.2 item 4) or with safetensors. Loading is strict: our
keys equal timm's and the official ones, so any mismatch is a real error and is reported key by key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from .convit import ModelError

__all__ = ["load_state_checked", "load_weights", "read_state_dict"]

#: wrapper keys tried in this order when ``key`` is not given.
WRAPPER_KEYS = ("model", "state_dict", "model_ema")


def read_state_dict(path: str | Path, *, key: str | None = None) -> dict[str, Tensor]:
    """Read a state dict from ``path`` (``.pth``/``.pt``/``.bin`` via torch, ``.safetensors``).

    ``key`` picks a wrapper entry explicitly (e.g. ``"model_ema"``); otherwise a bare state dict is used
    as is and a wrapped one is unwrapped with the first of ``model``, ``state_dict``, ``model_ema``
    present. A uniform ``module.`` prefix (a DistributedDataParallel save) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors ships with timm
            raise ModelError("reading .safetensors needs the 'safetensors' package") from exc
        obj: object = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"could not read {path} with torch.load(weights_only=True): {exc}. Save the state dict alone "
                "(torch.save(model.state_dict(), path)) or re-save the checkpoint without pickled objects"
            ) from exc
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path} holds a {type(obj).__name__}, not a state dict")
    if key is not None:
        if key not in obj:
            raise ModelError(f"{path} has no entry {key!r}; top-level keys: {sorted(map(str, obj))[:20]}")
        obj = obj[key]
    elif not _is_state_dict(obj):
        for wrapper in WRAPPER_KEYS:
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
        else:
            raise ModelError(
                f"{path} is neither a bare state dict nor a checkpoint with one of {list(WRAPPER_KEYS)}; "
                f"top-level keys: {sorted(map(str, obj))[:20]}"
            )
    if not _is_state_dict(obj):
        raise ModelError(f"{path}: the selected entry is not a mapping of names to tensors")
    state = dict(obj)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def load_weights(model: nn.Module, path: str | Path, *, key: str | None = None) -> nn.Module:
    """Load weights from ``path`` into ``model`` strictly and return the model.

    Raises :class:`ModelError` naming the missing keys, unexpected keys and shape mismatches, so a wrong
    variant (e.g. a ConViT-S file into ConViT-Ti) is diagnosed at once rather than as a torch traceback.
    """
    return load_state_checked(model, read_state_dict(path, key=key), path)


def load_state_checked(model: nn.Module, state: Mapping[str, Tensor], source: str | Path) -> nn.Module:
    """Load an already read ``state`` into ``model`` strictly, with :func:`load_weights`' diagnostics.

    Split from :func:`load_weights` so a caller that has to inspect the file first (the training engine
    checks a distillation teacher's classifier size) reads a large file once; ``source`` names it in errors.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatch": shapes}
        for label, items in found.items():
            if items:
                shown = ", ".join(items[:12]) + (f", ... ({len(items)} in all)" if len(items) > 12 else "")
                parts.append(f"{label}: {shown}")
        raise ModelError(f"weights in {source} do not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(dict(state), strict=True)
    return model
