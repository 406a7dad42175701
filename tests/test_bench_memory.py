"""convit.bench's peak GPU memory is each model's own (issue 15, defect 4), checked against a fake CUDA
allocator: ``torch.cuda``'s memory functions are replaced by a ledger in which building a model allocates
its weights for good and a training step peaks at an activation amount above what is allocated."""

from __future__ import annotations

import pytest
import torch

from convit import bench

MB = 2**20
#: bytes a model keeps allocated once built (weights, optimiser state, batch) and its step's extra peak
KEEP = {"convit_tiny": 300 * MB, "deit_tiny": 200 * MB, "timm:convit_tiny": 500 * MB}
TRAIN_PEAK = {"convit_tiny": 70 * MB, "deit_tiny": 50 * MB, "timm:convit_tiny": 110 * MB}
INFER_PEAK = {"convit_tiny": 7 * MB, "deit_tiny": 5 * MB, "timm:convit_tiny": 11 * MB}


class _FakeAllocator:
    def __init__(self) -> None:
        self.allocated = 123 * MB  # the CUDA context, other tensors: present before the first model
        self.peak = self.allocated

    def bump(self, extra: int) -> None:
        self.peak = max(self.peak, self.allocated + extra)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> _FakeAllocator:
    ledger = _FakeAllocator()
    monkeypatch.setattr(bench, "_cuda_memory_stats", lambda device: True)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: ledger.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: ledger.peak)

    def reset(device=None) -> None:  # noqa: ANN001 - torch's semantics: the peak restarts at the current use
        ledger.peak = ledger.allocated

    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", reset)

    def build(name: str, **kwargs):  # noqa: ANN202 - shallow real models; the ledger books their weights
        extra = {"local_up_to_layer": 1} if "convit" in name else {}
        model = bench.build(name, depth=2, **extra, **kwargs)
        ledger.allocated += KEEP[name]
        return model

    monkeypatch.setattr(bench, "_build", build)
    train, infer = bench._Runner.train_step, bench._Runner.infer_step

    def train_step(self) -> None:  # noqa: ANN001
        train(self)
        ledger.bump(TRAIN_PEAK[self.name])

    def infer_step(self) -> None:  # noqa: ANN001
        infer(self)
        ledger.bump(INFER_PEAK[self.name])

    monkeypatch.setattr(bench._Runner, "train_step", train_step)
    monkeypatch.setattr(bench._Runner, "infer_step", infer_step)
    return ledger


def test_peak_memory_is_each_models_own_not_the_earlier_ones(fake_cuda: _FakeAllocator, tmp_path) -> None:
    """With the models built in turn and kept alive, each reported peak is (allocated at the peak) minus
    (allocated before that model was built): its own weights, state and batch plus its step's peak, the
    same whatever its position in --models (the raw peak of the third model would include 500 MB of the
    two before it)."""
    argv = ["--models", "deit_tiny,convit_tiny,timm:convit_tiny", "--img-size", "32", "--batch", "2"]
    argv += ["--rounds", "1", "--iters", "1", "--warmup", "1", "--device", "cpu", "--threads", "1"]
    results = bench.run_benchmark(bench.parse_args(argv), log=lambda msg: None)
    got = {r.name: (r.peak_train_mb, r.peak_infer_mb) for r in results}
    want = {
        name: ((KEEP[name] + TRAIN_PEAK[name]) / MB, (KEEP[name] + INFER_PEAK[name]) / MB) for name in KEEP
    }
    assert got == want
    # and the ratio the targets are about: ConViT over DeiT, independent of the order of --models
    by_name = {r.name: r for r in results}
    assert bench.compare(by_name["convit_tiny"], by_name["deit_tiny"]).peak_train == pytest.approx(370 / 250)


def test_peak_memory_does_not_depend_on_the_order(fake_cuda: _FakeAllocator) -> None:
    figures = []
    for order in ("deit_tiny,convit_tiny", "convit_tiny,deit_tiny"):
        argv = ["--models", order, "--img-size", "32", "--batch", "2", "--rounds", "1", "--iters", "1"]
        argv += ["--warmup", "1", "--device", "cpu", "--threads", "1"]
        results = bench.run_benchmark(bench.parse_args(argv), log=lambda msg: None)
        figures.append({r.name: r.peak_train_mb for r in results})
    assert figures[0] == figures[1]


def test_no_peak_figures_without_cuda_statistics(tmp_path) -> None:
    """On a CPU the GPU columns stay empty (None), not zero or a host figure."""
    argv = ["--models", "deit_tiny", "--img-size", "32", "--batch", "2", "--rounds", "1", "--iters", "1"]
    argv += ["--warmup", "1", "--device", "cpu", "--threads", "1"]
    bench_args = bench.parse_args(argv)
    orig = bench._build
    try:
        bench._build = lambda name, **kw: bench.build(name, depth=1, **kw)
        (result,) = bench.run_benchmark(bench_args, log=lambda msg: None)
    finally:
        bench._build = orig
    assert result.peak_train_mb is None and result.peak_infer_mb is None and result.activation_mb > 0


def test_depth_option_keeps_the_gpsa_share_and_is_validated() -> None:
    """``--depth`` (the GPU check's quick mode): ConViT keeps round(10 D / 12) GPSA blocks, at least one and
    with an MHSA block after them; DeiT only gets the depth; below 2 blocks is a one-line usage error."""
    assert bench._depth_overrides("convit_small", None) == {}
    assert bench._depth_overrides("convit_small", 12) == {"depth": 12, "local_up_to_layer": 10}
    assert bench._depth_overrides("timm:convit_tiny", 2) == {"depth": 2, "local_up_to_layer": 1}
    assert bench._depth_overrides("deit_small", 3) == {"depth": 3}
    with pytest.raises(SystemExit):
        bench.parse_args(["--models", "convit_tiny", "--depth", "1", "--device", "cpu"])
    model = bench._build("convit_tiny", img_size=32, **bench._depth_overrides("convit_tiny", 3))
    assert len(model.blocks) == 3 and model.local_layers() == [0, 1]
