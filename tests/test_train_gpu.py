"""The engine's GPU path checked on a CPU machine: numerics switches, bf16 fallback, host syncs, DDP buffers.

CUDA facts this machine lacks (a GPU's compute capability, bf16 support) are faked by monkeypatching the
``torch.cuda`` functions torch itself consults; the flags ``convit.cudaconf`` sets are real torch globals, so
they are read back as they are. The host-sync count is measured on a real CPU run by counting the calls of the
tensor methods that read a value to the host (on a GPU each one stalls the host until the GPU catches up),
made from the engine's own code. The DDP test is a real 2-process gloo run.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from convit import checkpoint, cudaconf, distributed, train
from convit.spec import DataSpec, ModelSpec, ProbeSpec, RecipeSpec, ResourceSpec, RunSpec

TINY = {"patch_size": 8, "depth": 2, "local_up_to_layer": 1, "num_heads": 4, "head_dim": 8}


def small_spec(batch: int = 32, **resources: object) -> RunSpec:
    return RunSpec(
        model=ModelSpec("convit_tiny", dict(TINY)),
        data=DataSpec("cifar10-fixture", img_size=32),
        recipe=RecipeSpec(epochs=1, warmup_epochs=1.0, batch_size=batch, amp="bf16", repeated_aug=False),
        resources=ResourceSpec(workers=0, **resources),  # type: ignore[arg-type]
        probes=ProbeSpec(every=0),
        tags={"suite": "test"},
    )


def _outcome(workdir: Path) -> tuple[dict, list[dict]]:
    result = json.loads((workdir / "result.json").read_text())
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    strip = lambda d: {k: v for k, v in d.items() if k not in train.TIMING_KEYS}  # noqa: E731
    return strip(result), [strip(e) for e in lines]


# --------------------------------------------------------------------------------------------------
# precision rule and the bf16 trap
# --------------------------------------------------------------------------------------------------
def _fake_gpu(monkeypatch: pytest.MonkeyPatch, major: int, minor: int, name: str) -> None:
    """A visible GPU of compute capability major.minor on which a bf16 tensor can be made (as on a V100)."""
    props = types.SimpleNamespace(major=major, minor=minor, name=name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    monkeypatch.setattr(torch.version, "hip", None)


def test_bf16_on_a_gpu_without_it_falls_back_to_fp16_and_says_so(monkeypatch):
    cuda = torch.device("cuda", 0)
    _fake_gpu(monkeypatch, 7, 0, "Tesla V100-SXM2-32GB")
    # torch's default answer is the trap: emulation counts as support
    assert torch.cuda.is_bf16_supported() is True
    assert torch.cuda.is_bf16_supported(including_emulation=False) is False
    choice = cudaconf.amp_choice("bf16", cuda)
    assert (choice.used, choice.dtype) == ("fp16", torch.float16)
    assert "V100" in choice.reason and "7.0" in choice.reason and "GradScaler" in choice.reason
    assert choice.record() == {"requested": "bf16", "used": "fp16", "reason": choice.reason}
    assert cudaconf.amp_choice("fp16", cuda).dtype is torch.float16  # fp16 asked: nothing to fall back from

    _fake_gpu(monkeypatch, 8, 0, "NVIDIA A100-SXM4-80GB")
    choice = cudaconf.amp_choice("bf16", cuda)
    assert (choice.used, choice.dtype, choice.reason) == ("bf16", torch.bfloat16, None)
    # the precision rule: the spec's amp on a GPU, float32 on CPU
    cpu = cudaconf.amp_choice("bf16", torch.device("cpu"))
    assert (cpu.used, cpu.dtype) == ("none", None) and "float32" in cpu.reason
    assert cudaconf.amp_choice("none", cuda).dtype is None


# --------------------------------------------------------------------------------------------------
# TF32, autotuning, deterministic mode
# --------------------------------------------------------------------------------------------------
def _flags() -> dict[str, object]:
    b = torch.backends
    return {
        "matmul": b.cuda.matmul.fp32_precision,
        "conv": b.cudnn.conv.fp32_precision,
        "mkldnn": b.mkldnn.matmul.fp32_precision,
        "benchmark": b.cudnn.benchmark,
        "cudnn_det": b.cudnn.deterministic,
        "algorithms": torch.are_deterministic_algorithms_enabled(),
        "sdpa": cudaconf._sdpa_flags(),
        "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def test_cuda_defaults_are_tf32_and_autotuning_and_everything_is_put_back(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _flags()
    with cudaconf.Numerics(deterministic=False) as numerics:
        record = numerics.apply(torch.device("cuda", 0))
        now = _flags()
        assert (now["matmul"], now["conv"], now["benchmark"]) == ("tf32", "tf32", True)
        assert now["mkldnn"] == before["mkldnn"]  # CPU matmuls untouched
        assert now["sdpa"] == before["sdpa"] and not now["algorithms"]
    assert record == {
        "deterministic_requested": False,
        "deterministic_algorithms": False,
        "cublas_workspace_config": None,
        "tf32": True,
        "cudnn_benchmark": True,
        "sdpa_backends": sorted(k for k, on in before["sdpa"].items() if on),
    }
    assert _flags() == before


def test_deterministic_mode_on_cuda_and_on_cpu(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _flags()
    with cudaconf.Numerics(deterministic=True) as numerics:
        # set on entry, i.e. before distributed.setup creates the NCCL group and before any cuBLAS handle
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled()
        record = numerics.apply(torch.device("cuda", 0))
        now = _flags()
        assert (now["benchmark"], now["cudnn_det"], now["algorithms"]) == (False, True, True)
        assert now["sdpa"] == {"flash": False, "mem_efficient": False, "cudnn": False, "math": True}
        assert (now["matmul"], now["conv"]) == ("tf32", "tf32")  # TF32 is deterministic; only slower ops go
    assert record["sdpa_backends"] == ["math"] and record["cublas_workspace_config"] == ":4096:8"
    assert record["deterministic_algorithms"] is True and record["cudnn_benchmark"] is False
    assert _flags() == before

    with cudaconf.Numerics(deterministic=True) as numerics:
        record = numerics.apply(torch.device("cpu"))
        now = _flags()
        # CPU: the switch is taken back, the TF32 flags never touched
        assert not now["algorithms"] and (now["matmul"], now["conv"]) == (before["matmul"], before["conv"])
    assert record["deterministic_requested"] is True and record["deterministic_algorithms"] is False
    assert record["tf32"] is False and record["sdpa_backends"] is None
    assert _flags() == before

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the other deterministic value is kept
    with cudaconf.Numerics(deterministic=True) as numerics:
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8" and not numerics.notes
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with cudaconf.Numerics(deterministic=True) as numerics:
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and "not deterministic" in numerics.notes[0]
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":0:0"
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # the caller used the GPU already
    with cudaconf.Numerics(deterministic=True) as numerics:
        assert "export it before starting Python" in numerics.notes[0]


def test_deterministic_switch_precedes_process_group_and_leaves_cpu_runs_identical(
    tmp_path, fixture_data_root, monkeypatch
):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seen = {}
    real_setup = distributed.setup

    def setup(device=None):
        seen.update(algorithms=torch.are_deterministic_algorithms_enabled())
        seen.update(cublas=os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
        return real_setup(device)

    monkeypatch.setattr(distributed, "setup", setup)
    spec = small_spec()
    plain = train.run(spec, tmp_path / "plain", data_root=fixture_data_root, device="cpu")
    assert seen == {"algorithms": False, "cublas": None}
    det_spec = replace(spec, resources=replace(spec.resources, deterministic=True))
    det = train.run(det_spec, tmp_path / "det", data_root=fixture_data_root, device="cpu")
    assert seen == {"algorithms": True, "cublas": ":4096:8"}
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert _outcome(tmp_path / "det") == _outcome(tmp_path / "plain")  # CPU: the switch changes nothing
    assert det["top1"] == plain["top1"]
    env = json.loads((tmp_path / "det" / "env.json").read_text())["numerics"]
    assert env["deterministic_requested"] is True and env["deterministic_algorithms"] is False
    assert env["amp"] == {
        "requested": "bf16",
        "used": "none",
        "reason": "cpu runs in float32 (autocast is for CUDA)",
    }


# --------------------------------------------------------------------------------------------------
# host syncs per step
# --------------------------------------------------------------------------------------------------
_SYNC_METHODS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "__format__", "cpu")
_ENGINE_FILES = (f"convit{os.sep}train.py", f"convit{os.sep}evaluation.py")


def test_the_step_loop_reads_the_device_once_per_sync_every_steps(tmp_path, fixture_data_root, monkeypatch):
    """Each call of a value-reading tensor method from the engine's code is a host sync on a GPU (the host
    waits for every launched kernel). The loop used to make 4 per step (isfinite.item, flags.tolist and
    float(loss) twice); now it reads a batch of losses every SYNC_EVERY steps, plus a few per run."""
    calls: list[str] = []

    def counting(name: str):
        real = getattr(torch.Tensor, name)

        def method(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith(_ENGINE_FILES):
                calls.append(name)
            return real(self, *args, **kwargs)

        return method

    for name in _SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    spec = small_spec(batch=8)  # 200 images: 25 optimiser steps in the epoch
    train.run(spec, tmp_path / "run", data_root=fixture_data_root, device="cpu")
    monkeypatch.undo()
    steps = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())["step"]
    assert steps == 25
    drains = math.ceil(steps / train.SYNC_EVERY)  # 2
    # the lock's busy flag, the drains, and one read of the evaluation's sums
    assert len(calls) <= 1 + drains + 1, calls
    assert len(calls) < steps / 4


# --------------------------------------------------------------------------------------------------
# DDP buffers
# --------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, port: int, spec_json: str, workdir: str, root: str, broadcast: bool) -> None:
    """One rank of a real gloo run; counts the bytes DDP broadcasts (its buffer sync and its init sync)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    sent = {"bytes": 0, "calls": 0}
    real = torch.distributed._broadcast_coalesced

    def counting(group, tensors, buffer_size, src):
        sent["bytes"] += sum(t.numel() * t.element_size() for t in tensors)
        sent["calls"] += 1
        return real(group, tensors, buffer_size, src)

    torch.distributed._broadcast_coalesced = counting
    if broadcast:  # the old behaviour: DDP's default, rank 0's buffers broadcast before every forward
        train._buffers_need_sync = lambda model: True
    train.run(RunSpec.from_json(spec_json), workdir, data_root=root, device="cpu")
    if rank == 0:
        (Path(workdir) / "broadcast.json").write_text(json.dumps(sent))


@pytest.mark.slow
def test_ddp_no_longer_broadcasts_derived_buffers_and_trains_identically(tmp_path, fixture_data_root):
    spec = replace(
        small_spec(batch=32),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=replace(small_spec().recipe, amp="none", mixup=0.0, cutmix=0.0, drop_path=0.0),
    )
    runs = {}
    for broadcast in (True, False):
        workdir = tmp_path / ("old" if broadcast else "new")
        mp.start_processes(
            _ddp_worker,
            args=(_free_port(), spec.to_json(), str(workdir), str(fixture_data_root), broadcast),
            nprocs=2,
            join=True,
            start_method="spawn",
        )
        runs[broadcast] = workdir
    old = json.loads((runs[True] / "broadcast.json").read_text())
    new = json.loads((runs[False] / "broadcast.json").read_text())

    from convit import models

    model = models.create("convit_tiny", num_classes=10, img_size=32, **TINY)
    buffers = {name: b.numel() * b.element_size() for name, b in model.named_buffers()}
    # rel_indices ([N, N, 3]) and whatever else GPSA derives from its grid: all non-persistent
    assert "blocks.0.attn.rel_indices" in buffers and not set(buffers) & set(model.state_dict())
    init = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(buffers.values())
    forwards = json.loads((runs[False] / "metrics.jsonl").read_text())["step"]  # 1 micro-batch per step
    assert forwards == 3
    assert new["bytes"] == init  # parameters and buffers once, at construction; nothing per forward
    assert old["bytes"] == init + forwards * sum(buffers.values())  # what every forward used to send
    a = checkpoint.load(runs[True] / checkpoint.CHECKPOINT)["model"]
    b = checkpoint.load(runs[False] / checkpoint.CHECKPOINT)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical training
    assert _outcome(runs[True]) == _outcome(runs[False])


def test_only_persistent_buffers_need_the_per_forward_broadcast():
    from convit import models

    convit = models.create("convit_tiny", num_classes=10, img_size=32, **TINY)
    assert not train._buffers_need_sync(convit)  # rel_indices: non-persistent, a function of the config
    assert not train._buffers_need_sync(models.create("deit_tiny", num_classes=10, img_size=32, patch_size=8))
    assert train._buffers_need_sync(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)))


def _stop_worker(
    rank: int, ports: tuple[int, int], spec_json: str, workdir: str, root: str, stop_rank: int
) -> None:
    """One rank; only rank ``stop_rank`` is asked to stop (at its first step), then the run is resumed."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    train.SYNC_EVERY = 2  # the agreement point comes at the second step, not the first
    spec = RunSpec.from_json(spec_json)
    stopped = None
    if stop_rank >= 0:
        try:
            train.run(spec, workdir, data_root=root, device="cpu", should_stop=lambda: rank == stop_rank)
        except train.Preempted as exc:
            stopped = [exc.epoch, exc.step]
        os.environ["MASTER_PORT"] = str(ports[1])  # a fresh rendezvous, as a relaunched job gets
    train.run(spec, workdir, data_root=root, device="cpu")
    Path(workdir, f"stop{rank}.json").write_text(json.dumps(stopped))


@pytest.mark.slow
def test_a_stop_request_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, fixture_data_root):
    spec = replace(
        small_spec(batch=32),
        data=DataSpec("cifar10-fixture", img_size=32, fraction=0.5),
        recipe=replace(small_spec().recipe, epochs=2, amp="none", mixup=0.0, cutmix=0.0, drop_path=0.0),
    )
    for name, stop_rank in (("reference", -1), ("stopped", 1)):
        ports = (_free_port(), _free_port())
        mp.start_processes(
            _stop_worker,
            args=(ports, spec.to_json(), str(tmp_path / name), str(fixture_data_root), stop_rank),
            nprocs=2,
            join=True,
            start_method="spawn",
        )
    stops = [json.loads((tmp_path / "stopped" / f"stop{r}.json").read_text()) for r in (0, 1)]
    assert stops == [[0, 2], [0, 2]]  # rank 0 was never asked, yet stops with rank 1 at the agreed step
    assert _outcome(tmp_path / "stopped") == _outcome(tmp_path / "reference")  # and the resume is exact
