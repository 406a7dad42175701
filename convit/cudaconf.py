"""How a run drives a CUDA device: TF32, cuDNN autotuning, deterministic algorithms and the autocast dtype.

One place for the numerics switches that the training engine and the eval-only jobs share, so a checkpoint is
evaluated under the rules it was trained with, and ``env.json`` says which were in force (``numerics``).

Defaults on CUDA (``ResourceSpec.deterministic = False``):

- **TF32** for float32 matmuls (``torch.backends.cuda.matmul.fp32_precision = "tf32"``) and cuDNN
  convolutions (``torch.backends.cudnn.conv.fp32_precision``): the float32 work autocast leaves alone
  (locality probes, an ``amp="none"`` run or evaluation, a distillation teacher's NCHW convolutions) runs on
  tensor cores, with 10-bit mantissa products and float32 accumulation. We set the per-backend flags (torch
  2.14's API), not ``torch.set_float32_matmul_precision("high")``: that one also sets
  ``torch.backends.mkldnn.matmul.fp32_precision = "tf32"``, i.e. changes CPU matmuls, and CPU runs must stay
  bit-identical. (torch raises when the legacy ``allow_tf32`` getters are used after the new setters, so
  nothing here reads those.)
- **cuDNN autotuning** (``cudnn.benchmark = True``): cuDNN times its algorithms for each new convolution shape
  and keeps the fastest. The choice may differ between two runs, so it is off in deterministic mode.

``ResourceSpec.deterministic = True`` on CUDA makes a run bit-reproducible on the same hardware and software
(and its resume exact, as on CPU):

- ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (cuBLAS's fixed workspace; ``:16:8`` is kept if set). cuBLAS reads it
  when it creates its handle, i.e. at the first CUDA matmul of the process, so it must be in the environment
  before that: :class:`Numerics` sets it before the process group and the model exist (``run()`` and
  ``experiments/evaluate.py`` enter it first), and warns when CUDA was already initialised in this process
  (a caller that used the GPU before calling ``run()``): then export it before starting Python.
- ``torch.use_deterministic_algorithms(True)``, also before the process group: ``ProcessGroupNCCL`` reads it
  when it is constructed and then keeps NCCL off its NVLS algorithms, whose reductions are not deterministic.
  An op without a deterministic implementation then raises instead of silently varying.
- ``cudnn.deterministic = True``, ``cudnn.benchmark = False``.
- scaled-dot-product attention on the **math** backend only. torch's own rules (``sdp_utils.cpp``,
  ``attention_backward.cu``): the cuDNN backend is never chosen in deterministic mode, the flash backward runs
  FlashAttention-2's deterministic variant and the memory-efficient backward drops its key splits. The math
  backend (explicit matmuls and a softmax) is the one whose backward is deterministic by construction, on
  every torch version and GPU, so that is the one we allow.

Cost (not measured here: the development machine has no GPU): the math SDPA materialises the [B, H, N, N]
attention matrix in forward and backward (DeiT-S at 224 px: 197 tokens, ~1.5 MB per image and layer in bf16)
and is slower than the fused kernels; cuDNN runs its deterministic convolution algorithms without
autotuning; deterministic ``index_add``/``scatter`` paths are slower. The MHSA blocks (all of DeiT, the last
two of ConViT) pay most of it; ConViT's GPSA blocks never call SDPA. Measure with ``python -m convit.bench``
before a long deterministic run. CPU runs are deterministic without the switch, and it changes nothing there.

Autocast dtype (:func:`amp_choice`): the spec's ``recipe.amp`` on CUDA, float32 on CPU. bf16 on a GPU without
native bf16 (compute capability < 8.0, e.g. V100, T4) falls back to fp16 with a GradScaler, the precision the
original DeiT/ConViT runs used, with one warning and a record in ``env.json``:
``torch.cuda.is_bf16_supported()`` says True on such GPUs by default (``including_emulation=True``: it only
checks that a bf16 tensor can be created), and emulated bf16 matmuls run far slower than fp16 ones.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["CUBLAS_WORKSPACE_CONFIG", "AmpChoice", "Numerics", "amp_choice"]

#: cuBLAS's deterministic workspace setting (NVIDIA's documented values are ``:4096:8`` and ``:16:8``).
CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


@dataclass(frozen=True)
class AmpChoice:
    """The autocast dtype a run uses (``None``: float32) and, when it is not the spec's, why."""

    requested: str
    used: str
    dtype: torch.dtype | None
    reason: str | None = None

    def record(self) -> dict[str, Any]:
        """The ``env.json`` form."""
        return {"requested": self.requested, "used": self.used, "reason": self.reason}


def amp_choice(amp: str, device: torch.device) -> AmpChoice:
    """The one precision rule: ``amp`` on CUDA (bf16 without native support -> fp16), float32 on CPU."""
    if amp not in _DTYPES:
        raise ValueError(f"unknown amp {amp!r}; use one of {', '.join(_DTYPES)}")
    if device.type != "cuda":
        reason = None if amp == "none" else f"{device.type} runs in float32 (autocast is for CUDA)"
        return AmpChoice(amp, "none", None, reason)
    if amp == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        props = torch.cuda.get_device_properties(device)
        return AmpChoice(
            amp,
            "fp16",
            torch.float16,
            f"{getattr(props, 'name', 'this GPU')} (compute capability {props.major}.{props.minor}) has no "
            "native bf16 (torch would emulate it, far slower): fp16 autocast with a GradScaler instead",
        )
    return AmpChoice(amp, amp, _DTYPES[amp])


def _sdpa_flags() -> dict[str, bool]:
    cuda = torch.backends.cuda
    return {
        "flash": cuda.flash_sdp_enabled(),
        "mem_efficient": cuda.mem_efficient_sdp_enabled(),
        "cudnn": cuda.cudnn_sdp_enabled(),
        "math": cuda.math_sdp_enabled(),
    }


def _set_sdpa(flags: dict[str, bool]) -> None:
    cuda = torch.backends.cuda
    cuda.enable_flash_sdp(flags["flash"])
    cuda.enable_mem_efficient_sdp(flags["mem_efficient"])
    cuda.enable_cudnn_sdp(flags["cudnn"])
    cuda.enable_math_sdp(flags["math"])


class Numerics:
    """The numerics settings of one run, set on entry and put back as they were on exit.

    Enter it before :func:`convit.distributed.setup` (the deterministic switch must precede cuBLAS and NCCL),
    then call :meth:`apply` with the device ``setup`` chose. ``notes`` are lines for the run's log;
    :meth:`record` is the ``env.json`` entry.
    """

    def __init__(self, deterministic: bool) -> None:
        self.deterministic = bool(deterministic)
        self.notes: list[str] = []
        self._record: dict[str, Any] = {}

    def __enter__(self) -> Numerics:
        backends = torch.backends
        self._cuda_applied = False
        self._saved = {
            "matmul_precision": backends.cuda.matmul.fp32_precision,
            "conv_precision": backends.cudnn.conv.fp32_precision,
            "benchmark": backends.cudnn.benchmark,
            "cudnn_deterministic": backends.cudnn.deterministic,
            "algorithms": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "sdpa": _sdpa_flags(),
            "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        }
        if self.deterministic:
            current = self._saved["cublas"]
            if current not in _DETERMINISTIC_CUBLAS:
                if current is not None:
                    self.notes.append(
                        f"deterministic: CUBLAS_WORKSPACE_CONFIG={current} is not deterministic; "
                        f"using {CUBLAS_WORKSPACE_CONFIG}"
                    )
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
                if torch.cuda.is_initialized():
                    self.notes.append(
                        "deterministic: CUDA was initialised in this process before the run set "
                        f"CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE_CONFIG}; cuBLAS may not have seen it: "
                        "export it before starting Python"
                    )
            torch.use_deterministic_algorithms(True)
        return self

    def apply(self, device: torch.device) -> dict[str, Any]:
        """Settle the settings for ``device`` and return the ``env.json`` record."""
        backends = torch.backends
        cuda = device.type == "cuda"
        if not cuda and self.deterministic:
            # CPU runs are deterministic already; the switch would only fill new tensors with NaN (its
            # fill_uninitialized_memory) and refuse a few ops, so CPU runs keep exactly their usual path
            torch.use_deterministic_algorithms(self._saved["algorithms"], warn_only=self._saved["warn_only"])
        if cuda:
            self._cuda_applied = True
            backends.cuda.matmul.fp32_precision = "tf32"
            backends.cudnn.conv.fp32_precision = "tf32"
            backends.cudnn.benchmark = not self.deterministic
            backends.cudnn.deterministic = self.deterministic
            if self.deterministic:
                _set_sdpa({"flash": False, "mem_efficient": False, "cudnn": False, "math": True})
        deterministic = cuda and self.deterministic
        self._record = {
            "deterministic_requested": self.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG") if deterministic else None,
            "tf32": cuda
            and backends.cuda.matmul.fp32_precision == "tf32"
            and backends.cudnn.conv.fp32_precision == "tf32",
            "cudnn_benchmark": cuda and backends.cudnn.benchmark,
            "sdpa_backends": sorted(k for k, on in _sdpa_flags().items() if on) if cuda else None,
        }
        return dict(self._record)

    def record(self) -> dict[str, Any]:
        """What :meth:`apply` returned (empty before it was called)."""
        return dict(self._record)

    def __exit__(self, *exc: object) -> None:
        saved = self._saved
        backends = torch.backends
        if self._cuda_applied:  # CPU runs never touch the TF32 flags (see the module docstring)
            backends.cuda.matmul.fp32_precision = saved["matmul_precision"]
            backends.cudnn.conv.fp32_precision = saved["conv_precision"]
        backends.cudnn.benchmark = saved["benchmark"]
        backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.use_deterministic_algorithms(saved["algorithms"], warn_only=saved["warn_only"])
        _set_sdpa(saved["sdpa"])
        if saved["cublas"] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved["cublas"]
