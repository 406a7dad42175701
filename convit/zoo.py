"""Table 1 columns for every variant of the zoo: parameters, FLOPs and throughput beside the paper's values.

Command (console script ``convit-zoo``)::

    python -m convit.zoo [--models convit_small,deit_small] [--device cpu|cuda] [--batch N] [--iters N]
                         [--warmup N] [--no-throughput] [--csv PATH]

Conventions (reference sections 1.3 and 1.4):

- **Size**: the paper's column is the parameter count *without* the classification head, in millions; we print
  both with and without the head (1000 classes, 224 px).
- **FLOPs**: counted with ``torch.utils.flop_counter.FlopCounterMode`` for one 224 px image in eval mode, as
  multiply-accumulates (MACs = counted flops / 2), on a meta-device copy of the model (shapes only: same
  counts, instant). "full" counts every matmul/convolution/attention op; "no attn" subtracts the two
  attention matmuls (q k^T and A v), which the counter sees as ``bmm``/``baddbmm`` or as a fused
  scaled-dot-product-attention op. The paper's FLOPs column matches "no attn" (ConViT-S 5.35 G, printed
  5.4; DeiT-S 4.24 G, printed 4.3). Softmax, gating, norms and GELU are not counted (the counter ignores
  elementwise ops, as did the tools behind the paper's and timm's numbers).
- **Speed**: the original ``compute_throughput`` protocol: ``randn`` input, fp32, ``model.eval()``, no grad,
  3 warm-up then 30 timed iterations at batch 128, synchronising after each, images/s = batch / mean time.
  The paper measured on a Quadro GP100, so only ratios between rows are comparable across machines. On CPU
  the default is batch 4 with 1 warm-up and 3 timed iterations (the full protocol would take many minutes
  on a laptop); the table says which protocol was used.
"""

from __future__ import annotations

import argparse
import csv
import gc
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "PAPER_TABLE1",
    "ZooRow",
    "count_macs",
    "count_params",
    "format_table",
    "main",
    "measure",
    "throughput",
]

#: Paper Table 1 (reference 1.1): Size (M params), FLOPs (G), Speed (img/s on a GP100, batch 128), Top-1 (%).
PAPER_TABLE1: dict[str, tuple[float, float, float, float]] = {
    "deit_tiny": (6, 1, 1442, 72.2),
    "convit_tiny": (6, 1, 734, 73.1),
    "deit_tiny_plus": (10, 2, 1036, 75.9),
    "convit_tiny_plus": (10, 2, 625, 76.7),
    "deit_small": (22, 4.3, 587, 79.8),
    "convit_small": (27, 5.4, 305, 81.3),
    "deit_small_plus": (48, 10, 480, 79.0),
    "convit_small_plus": (48, 10, 382, 82.2),
    "deit_base": (86, 17, 187, 81.8),
    "convit_base": (86, 17, 141, 82.4),
    "deit_base_plus": (152, 30, 114, 77.5),
    "convit_base_plus": (152, 30, 96, 82.5),
}

#: ops that implement the two attention matmuls (q k^T, A v): batched matmuls and fused attention kernels.
#: Linear layers reach the counter as mm/addmm, the patch embedding as a convolution.
_ATTENTION_OPS = {
    "aten.bmm",
    "aten.baddbmm",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_cudnn_attention",
    "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._flash_attention_forward",
    "aten._efficient_attention_forward",
    "flex_attention",
}


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU fused attention kernel, which torch's counter does not register (it would count 0)."""
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


_CUSTOM_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


@dataclass
class ZooRow:
    """One line of the report: our measurements and the paper's Table 1 values for one variant."""

    model: str
    params: int
    params_no_head: int
    gmacs: float
    gmacs_no_attn: float
    img_per_s: float | None
    batch: int | None
    device: str
    paper_size_m: float | None
    paper_gflops: float | None
    paper_img_per_s: float | None
    paper_top1: float | None


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, parameters without the classification head): the paper's Size is the latter."""
    total = sum(p.numel() for p in model.parameters())
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "head", None)
    in_head = sum(p.numel() for p in head.parameters()) if isinstance(head, nn.Module) else 0
    return total, total - in_head


def count_macs(
    model: nn.Module, img_size: int = 224, device: str | torch.device = "cpu"
) -> tuple[float, float]:
    """(GMACs full, GMACs without the attention matmuls) of one image, eval mode, fp32.

    Per-image numbers from a batch-1 forward: everything in these models is linear in the batch, so this is
    exact, and it keeps the B+ models to about a second on a laptop CPU. Modules with a ``fast`` switch (our
    GPSA) are counted on their reference formulation, which is the paper's arithmetic.
    """
    was_training = model.training
    model.eval()
    x = torch.randn(1, 3, img_size, img_size, device=device)
    # Count the model's maths, not our fast path's: GPSA's fast path runs softmax(qk) v through SDPA and
    # P v as a separate matmul, i.e. three attention-sized matmuls where the formulation has two.
    fast = [m for m in model.modules() if isinstance(getattr(m, "fast", None), bool)]
    saved = [m.fast for m in fast]
    try:
        for m in fast:
            m.fast = False
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS) as counter:
            model(x)
    finally:
        for m, flag in zip(fast, saved, strict=True):
            m.fast = flag
        model.train(was_training)
    per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    total = sum(per_op.values())
    attention = sum(n for op, n in per_op.items() if op in _ATTENTION_OPS)
    return total / 2e9, (total - attention) / 2e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(
    model: nn.Module,
    batch: int,
    *,
    warmup: int = 3,
    iters: int = 30,
    img_size: int = 224,
    device: str = "cpu",
) -> float:
    """Images/s with the original ``compute_throughput`` protocol (fp32, eval, no grad, randn input).

    Every iteration is synchronised and timed on its own; the mean iteration time is used, as in the
    original code (the median is more robust, but we keep the paper's estimator for comparability).
    """
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + iters):
                _sync(dev)
                start = time.perf_counter()
                model(x)
                _sync(dev)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return batch / statistics.fmean(times)


def measure(
    name: str,
    *,
    device: str = "cpu",
    batch: int | None = 4,
    warmup: int = 3,
    iters: int = 30,
    img_size: int = 224,
) -> ZooRow:
    """Build ``name`` once (1000 classes); measure params, MACs and, unless ``batch`` is None, throughput."""
    from convit import models

    # Parameter and FLOP counts only need shapes: a meta-device model gives the same numbers as a real one
    # (tested) in well under a second even for B+, where building and running a real one takes ~20 s.
    with torch.device("meta"):
        shapes_only = models.create(name, num_classes=1000, img_size=img_size)
    params, params_no_head = count_params(shapes_only)
    gmacs, gmacs_no_attn = count_macs(shapes_only, img_size, "meta")
    del shapes_only
    speed = None
    if batch is not None:
        model = models.create(name, num_classes=1000, img_size=img_size).to(device)
        speed = throughput(model, batch, warmup=warmup, iters=iters, img_size=img_size, device=device)
        del model
        gc.collect()
    paper = PAPER_TABLE1.get(name, (None, None, None, None))
    return ZooRow(name, params, params_no_head, gmacs, gmacs_no_attn, speed, batch, device, *paper)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(rows: Sequence[ZooRow]) -> str:
    """An aligned text table: ours beside the paper's for each Table 1 column."""
    header = [
        "model",
        "params",
        "no head",
        "paper Size",
        "GMACs",
        "no attn",
        "paper FLOPs",
        "img/s",
        "paper img/s",
        "paper top-1",
    ]
    lines = [header]
    for r in rows:
        lines.append(
            [
                r.model,
                f"{r.params / 1e6:.2f}M",
                f"{r.params_no_head / 1e6:.2f}M",
                _fmt(r.paper_size_m, "g") + ("M" if r.paper_size_m is not None else ""),
                f"{r.gmacs:.2f}",
                f"{r.gmacs_no_attn:.2f}",
                _fmt(r.paper_gflops, "g"),
                _fmt(r.img_per_s, ".1f"),
                _fmt(r.paper_img_per_s, "g"),
                _fmt(r.paper_top1, ".1f"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for k, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _default_order(names: Sequence[str]) -> list[str]:
    """Table 1 order (DeiT then ConViT for each size), then any other registered name."""
    known = [n for n in PAPER_TABLE1 if n in names]
    return known + sorted(n for n in names if n not in PAPER_TABLE1)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``convit-zoo``: print (and optionally save) Table 1 columns for all variants."""
    parser = argparse.ArgumentParser(prog="convit-zoo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated names (default: all registered)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--batch", type=int, default=None, help="throughput batch (paper: 128; CPU default 4)"
    )
    parser.add_argument("--iters", type=int, default=None, help="timed iterations (paper: 30; CPU default 3)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="warm-up iterations (paper: 3; CPU default 1)"
    )
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--no-throughput", action="store_true", help="only params and FLOPs (fast)")
    parser.add_argument("--csv", type=Path, default=None, help="also write the rows as CSV")
    args = parser.parse_args(argv)

    from convit import models
    from convit.distributed import DeviceError, resolve_device

    names = args.models.split(",") if args.models else _default_order(models.names())
    unknown = [n for n in names if n not in models.names()]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; valid names: {', '.join(models.names())}")
    try:
        resolve_device(args.device)
    except DeviceError as err:
        parser.error(f"--device: {err}")
    cpu = torch.device(args.device).type == "cpu"
    batch = args.batch or (4 if cpu else 128)
    iters = args.iters or (3 if cpu else 30)
    warmup = args.warmup if args.warmup is not None else (1 if cpu else 3)
    if args.no_throughput:
        protocol = "throughput not measured (--no-throughput)"
    else:
        protocol = (
            f"throughput: batch {batch}, fp32, eval, {warmup} warm-up + {iters} timed iterations"
            f" on {args.device}"
        )
        if (batch, iters, warmup) != (128, 30, 3):
            protocol += " (NOT the paper's protocol: batch 128, 3 + 30 iterations, Quadro GP100)"
    print(
        f"convit-zoo: Table 1 columns, {args.img_size} px, 1000 classes; MACs from FlopCounterMode, batch 1"
    )
    print(protocol, flush=True)

    rows = []
    start = time.perf_counter()
    for name in names:
        rows.append(
            measure(
                name,
                device=args.device,
                batch=None if args.no_throughput else batch,
                warmup=warmup,
                iters=iters,
                img_size=args.img_size,
            )
        )
        print(f"  measured {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print()
    print(format_table(rows))
    print(
        "\nSize = params without head (M); paper FLOPs ~ GMACs without the attention matmuls (reference 1.3);"
        "\npaper speeds are Quadro GP100 img/s at batch 128 (compare ratios between rows, not absolutes)."
    )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with args.csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(ZooRow)])
            writer.writeheader()
            for row in rows:
                writer.writerow(asdict(row))
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
