"""The model zoo: ConViT (Ti/S/B and "+") and the timm-style DeiT baselines, by name.

``create(name, **overrides)`` builds a registered variant; ``names()`` lists them; ``default_config(name)``
gives the constructor arguments a name stands for. Variants (reference 1.1-1.2):

=================  ========  =========  =======  ==================================
name               heads     head_dim   D        notes
=================  ========  =========  =======  ==================================
convit_tiny        4         48         192      10 GPSA + 2 MHSA, no qkv bias
convit_small       9         48         432
convit_base        16        48         768
convit_*_plus      4/9/16    64         256/576/1024
deit_tiny/small/base  3/6/12 64         192/384/768  qkv bias, pos_embed on cls token
deit_*_plus        4/9/16    64         256/576/1024
=================  ========  =========  =======  ==================================

Overrides are the model constructors' keywords (:class:`ConViT`, :class:`DeiT`): ``num_classes``,
``img_size``, ``patch_size``, ``in_chans``, ``depth``, ``num_heads``, ``head_dim`` (per-head width; keeps
the paper's D = heads x head_dim when ``num_heads`` changes) or ``embed_dim`` (total width), ``mlp_ratio``,
``drop_rate``, ``attn_drop_rate``, ``drop_path_rate``, ``global_pool``; ConViT only: ``local_up_to_layer``,
``locality_strength``, ``use_conv_init``, ``attention`` ("gpsa"/"psa"), ``gating_init``, ``train_gating``,
``freeze_gpsa``, ``freeze_gpsa_norm1``, ``fast``. Anything else raises :class:`ModelError`.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from .convit import GPSA, MHSA, PSA, Block, ConViT, ModelError, ZooModel, is_local_attention
from .deit import Attention, DeiT
from .weights import load_weights, read_state_dict

__all__ = [
    "GPSA",
    "MHSA",
    "PSA",
    "Attention",
    "Block",
    "ConViT",
    "DeiT",
    "ModelError",
    "ZooModel",
    "create",
    "default_config",
    "is_local_attention",
    "load_weights",
    "names",
    "read_state_dict",
]

_SIZES = {"tiny": (4, 3), "small": (9, 6), "base": (16, 12)}  # (ConViT heads, DeiT heads)


def _registry() -> dict[str, tuple[type[ZooModel], dict[str, Any]]]:
    reg: dict[str, tuple[type[ZooModel], dict[str, Any]]] = {}
    for size, (convit_heads, deit_heads) in _SIZES.items():
        reg[f"convit_{size}"] = (ConViT, {"num_heads": convit_heads, "head_dim": 48, "local_up_to_layer": 10})
        reg[f"convit_{size}_plus"] = (
            ConViT,
            {"num_heads": convit_heads, "head_dim": 64, "local_up_to_layer": 10},
        )
        reg[f"deit_{size}"] = (DeiT, {"num_heads": deit_heads, "head_dim": 64})
        reg[f"deit_{size}_plus"] = (DeiT, {"num_heads": convit_heads, "head_dim": 64})
    common = {"img_size": 224, "patch_size": 16, "num_classes": 1000, "depth": 12}
    return {name: (cls, {**common, **cfg}) for name, (cls, cfg) in reg.items()}


_REGISTRY = _registry()
_ORDER = [f"{fam}_{size}{plus}" for fam in ("convit", "deit") for size in _SIZES for plus in ("", "_plus")]


def names() -> list[str]:
    """Registered variant names (ConViT first, then DeiT; Ti, Ti+, S, S+, B, B+)."""
    return list(_ORDER)


def _lookup(name: str) -> tuple[type[ZooModel], dict[str, Any]]:
    if name not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return _REGISTRY[name]


def default_config(name: str) -> dict[str, Any]:
    """The constructor arguments ``name`` stands for (before overrides)."""
    return dict(_lookup(name)[1])


def create(name: str, **overrides: Any) -> nn.Module:
    """Build the variant ``name`` with constructor ``overrides`` (see the module docstring).

    Giving ``embed_dim`` (total width) without ``head_dim`` replaces the variant's per-head width.
    Bad names, unknown keywords and inconsistent values raise :class:`ModelError`.
    """
    cls, config = _lookup(name)
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        valid = ", ".join(sorted(allowed))
        raise ModelError(f"{name}: unknown override(s) {unknown}; valid keywords: {valid}")
    if "embed_dim" in overrides and "head_dim" not in overrides:
        config = {k: v for k, v in config.items() if k != "head_dim"}
    try:
        return cls(**{**config, **overrides})
    except ModelError as exc:
        raise ModelError(f"{name}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{name}: invalid override value ({exc})") from exc
