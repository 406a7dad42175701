"""Experiment specs, one module per paper artefact, and the launcher (``python experiments/launch.py``).

Each suite module exposes ``specs(scale) -> list[RunSpec]`` and documents, big_vision style, the exact
command, what it reproduces, the paper's numbers, its cost per scale and why the reduced scales are sized as
they are. ``experiments.common`` holds the scales and the decisions shared by all suites.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["SUITES", "SuiteError", "load_suite"]

#: suite name -> what it reproduces (``launch.py list`` prints this).
SUITES = {
    "main_table": "Table 1: 12 models (DeiT/ConViT Ti..B+) + released-weights eval",
    "sample_efficiency": "Table 2, Fig. 2a, Fig. 11c: DeiT-S vs ConViT-S on f of each class, 300/f epochs",
    "ablations": "Table 3 rows a-g (full, 10%), Fig. 12; Fig. 8 grid (locality strength x GPSA layers)",
    "locality": "Figs. 5, 6, 7, 13, 14: nonlocality and gating over training (main_table's runs)",
    "masking": "Tables 5, 6: test-time masking of positional embedding / content / position",
    "psa": "Fig. 9: vanilla PSA + conv init vs DeiT-B",
    "cifar100": "Fig. 11a: ConViT vs DeiT Ti+/S+/B+ on CIFAR-100",
    "distillation": "Table 4, Fig. 10: hard distillation from RegNetY-16GF",
}


class SuiteError(ValueError):
    """An unknown suite name."""


def load_suite(name: str) -> ModuleType:
    """The module of suite ``name`` (``experiments.<name>``)."""
    if name not in SUITES:
        raise SuiteError(f"unknown suite {name!r}; choose one of {', '.join(SUITES)} (see 'launch.py list')")
    return importlib.import_module(f"experiments.{name}")
