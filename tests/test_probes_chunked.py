"""Locality probes in chunks of the batch (issue 15, item 14): the same numbers, a bounded peak.

The peak is measured for real: a TorchDispatchMode books every storage an op creates and a weakref
finalizer un-books it when torch frees it, so its maximum is the peak of the probe's own live tensors
(tracemalloc does not see torch's allocator)."""

from __future__ import annotations

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from convit import models
from convit.probes import MAX_MAP_BYTES, locality_probes, probe_chunk


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages created while the mode is active and still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        inputs = tree_flatten((args, kwargs))[0]
        # a view or in-place op returns an input's storage: not an allocation
        seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key, size = storage.data_ptr(), storage.nbytes()
                if size and key not in self.live and key not in seen:
                    self.live[key] = size
                    self.current += size
                    self.peak = max(self.peak, self.current)
                    weakref.finalize(storage, self._free, key)
        return out


def _model(name: str = "convit_tiny", **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    geometry = {"img_size": 64, "patch_size": 8, "depth": 3, "num_classes": 10, **kw}
    if name.startswith("convit"):
        geometry.setdefault("local_up_to_layer", 2)
    model = models.create(name, **geometry)
    with torch.no_grad():  # a trained-looking gate and content, not just the init
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _per_image(model: torch.nn.Module) -> int:
    return model.num_heads * (64 + 1) ** 2 * 4


@pytest.mark.parametrize("mode", ["propagated", "patch_embed"])
@pytest.mark.parametrize("name", ["convit_tiny", "deit_tiny"])
def test_chunked_probes_equal_unchunked(name: str, mode: str) -> None:
    model = _model(name)
    images = torch.randn(7, 3, 64, 64)
    whole = locality_probes(model, images, mode, max_map_bytes=None)
    for chunk in (1, 3):
        assert probe_chunk(model, 7, chunk * _per_image(model)) == chunk
        parts = locality_probes(model, images, mode, max_map_bytes=chunk * _per_image(model))
        assert parts["gate_sigma"] == whole["gate_sigma"]
        assert parts["centre_distance"] == whole["centre_distance"]
        torch.testing.assert_close(
            torch.tensor(parts["nonlocality"]), torch.tensor(whole["nonlocality"]), rtol=2e-6, atol=1e-6
        )


def test_one_chunk_is_the_unchunked_path_exactly() -> None:
    model = _model()
    images = torch.randn(5, 3, 64, 64)
    assert probe_chunk(model, 5) == 5  # the default bound holds this batch whole
    assert locality_probes(model, images) == locality_probes(model, images, max_map_bytes=None)


def test_chunk_size_for_paper_scale_models() -> None:
    """ConViT-B at 224 px: 16 heads x 197^2 tokens x 4 B = 2.48 MB per image and block: 27 images a chunk
    under the 64 MiB default (a 1000-image probe would hold 2.5 GB per map in one piece)."""
    with torch.device("meta"):
        model = models.create("convit_base")
    assert probe_chunk(model, 1000) == MAX_MAP_BYTES // (16 * 197 * 197 * 4) == 27
    assert probe_chunk(model, 10) == 10 and probe_chunk(model, 1000, 1) == 1
    assert probe_chunk(model, 1000, None) == 1000


def test_chunking_bounds_the_peak_memory() -> None:
    """64 images: unchunked, the probe's live tensors peak at ~8 full [64, H, N, N] maps (35 MB: GPSA's
    reference matrix is built from several map-sized temporaries); in chunks of 4 images at ~8 chunk maps
    (2.2 MB), 16x lower."""
    model = _model(depth=2, local_up_to_layer=1)
    images = torch.randn(64, 3, 64, 64)
    full_map = 64 * _per_image(model)
    bound = 4 * _per_image(model)
    peaks = {}
    for key, limit in (("whole", None), ("chunked", bound)):
        meter = _LiveBytes()
        with meter:
            locality_probes(model, images, max_map_bytes=limit)
        peaks[key] = meter.peak
    assert peaks["whole"] >= full_map, peaks
    assert peaks["chunked"] <= 10 * bound, (peaks, bound)
    assert peaks["chunked"] * 10 < peaks["whole"], peaks
