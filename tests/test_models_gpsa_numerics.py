"""GPSA's positional path by device and dtype (issue 15, defect 13): the subnormal flush only where it helps,
and the axis features cached as a geometry-only buffer that follows the module and never goes stale.

CPU fp32 numerics are guarded bit for bit by test_models' parity tests; here: what changes off the CPU and
under fp16, observed through real computations (fp16 GEMMs on the CPU, the op stream on the meta device).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from convit import models
from convit.models import GPSA
from convit.models import convit as convit_module
from convit.models.convit import axis_features, flush_subnormal_factors


class _OpLog(TorchDispatchMode):
    """Records the name of every aten op that runs (the real op stream of a forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _conv_init_gpsa(heads: int = 4, grid: int = 14, **kw) -> GPSA:
    torch.manual_seed(0)
    attn = GPSA(heads * 48, heads, grid_size=grid, **kw)
    attn.local_init()
    return attn.eval()


def test_flush_applies_on_cpu_fp32_bf16_only() -> None:
    assert flush_subnormal_factors(torch.ones(1))
    assert flush_subnormal_factors(torch.ones(1, dtype=torch.bfloat16))
    assert not flush_subnormal_factors(torch.ones(1, dtype=torch.float16))
    assert not flush_subnormal_factors(torch.ones(1, device="meta"))


def test_fp16_positional_attention_zeroes_no_real_entry() -> None:
    """ConViT-Ti's conv-init factors in fp16 have 168 of 1568 entries between fp16's smallest subnormal and
    its smallest normal (6.1e-5). The fp16 positional path must use them: with v = identity, P @ v is P
    itself, and it must equal the Kronecker product of the fp16 factors (computed in fp32, rounded once),
    not a version with those entries zeroed (~1e-5 of row mass lost, the defect)."""
    attn = _conv_init_gpsa().half()
    n, h = 196, 4
    factors = attn.positional_factors(n).detach()
    assert factors.dtype == torch.float16
    tiny = torch.finfo(torch.float16).tiny
    assert int(((factors > 0) & (factors < tiny)).sum()) == 168  # the entries at stake exist
    v = torch.eye(n, dtype=torch.float16).expand(1, h, n, n).contiguous()
    with torch.no_grad():
        got = attn._positional_values(v)[0].float()  # [H, N, N] = P
    cols, rows = factors.float()
    want = torch.einsum("hab,hcd->hacbd", rows, cols).reshape(h, n, n).half().float()
    torch.testing.assert_close(got, want, atol=0, rtol=2e-3)  # fp16 rounding of each product, nothing else
    assert int(((got == 0) & (want > 0)).sum()) == 0
    torch.testing.assert_close(got.sum(-1), torch.ones(h, n), atol=2e-3, rtol=0)


def test_fp32_cpu_still_flushes_the_subnormal_tails() -> None:
    """The CPU optimisation stays: at alpha = 5 fp32 factors have subnormal tails; the path zeroes them."""
    attn = _conv_init_gpsa(heads=4, grid=14, locality_strength=5.0)
    factors = attn.positional_factors(196).detach()
    sub = (factors > 0) & (factors < torch.finfo(torch.float32).tiny)
    assert sub.any()
    log = _OpLog()
    v = torch.randn(1, 4, 196, 48)
    with torch.no_grad(), log:
        attn._positional_values(v)
    assert "masked_fill" in log.ops and "lt" in log.ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_no_flush_ops_off_the_cpu(dtype: torch.dtype) -> None:
    """Off the CPU (the meta device stands in for a GPU: same code path, device type not "cpu") a GPSA
    forward runs no compare / masked_fill on its factors, in any dtype."""
    with torch.device("meta"):
        attn = GPSA(64, 4, grid_size=4).to(dtype)
    x = torch.empty(2, 16, 64, device="meta", dtype=dtype)
    log = _OpLog()
    with torch.no_grad(), log:
        attn(x)
    assert "masked_fill" not in log.ops and "lt" not in log.ops
    assert "bmm" in log.ops  # the factor GEMMs did run


def test_axis_features_are_cached_not_rebuilt_per_forward(monkeypatch) -> None:
    attn = _conv_init_gpsa(grid=4)
    calls = []
    real = axis_features
    monkeypatch.setattr(convit_module, "axis_features", lambda *a, **k: calls.append(a) or real(*a, **k))
    x = torch.randn(2, 16, attn.v.in_features)
    for _ in range(3):
        attn(x)
    assert calls == []
    torch.testing.assert_close(attn.axis_feats, real(4), atol=0, rtol=0)
    attn(torch.randn(1, 25, attn.v.in_features))  # another grid: rebuilt once, then cached again
    attn(torch.randn(1, 25, attn.v.in_features))
    assert calls == [(5,)] and attn.axis_feats.shape == (2, 5, 5, 3)


def test_axis_cache_follows_to_and_never_goes_stale_after_a_step() -> None:
    """The cache holds geometry only: after an optimiser step the positional factors are those of the new
    pos_proj weights (equal to a fresh module's given the same weights), and the buffer follows .to()."""
    attn = _conv_init_gpsa(grid=4)
    x = torch.randn(2, 16, attn.v.in_features)
    before = attn.positional_factors(16).detach().clone()
    opt = torch.optim.SGD(attn.parameters(), lr=0.5)
    attn.train()
    attn(x).square().sum().backward()
    opt.step()
    after = attn.positional_factors(16).detach()
    assert not torch.equal(before, after)
    fresh = GPSA(attn.v.in_features, 4, grid_size=4)
    fresh.load_state_dict(attn.state_dict())
    assert torch.equal(after, fresh.positional_factors(16).detach())
    assert "axis_feats" not in attn.state_dict()
    double = copy.deepcopy(attn).double()
    assert double.axis_feats.dtype == torch.float64
    assert double.positional_factors(16).dtype == torch.float64
    with torch.device("meta"):
        meta = GPSA(64, 4, grid_size=4)
    meta = meta.to_empty(device="cpu")
    meta.init_non_persistent_buffers()
    assert torch.equal(meta.axis_feats, axis_features(4))


def test_model_half_forward_uses_fp16_factors() -> None:
    """A whole ConViT cast to fp16 runs (CPU fp16 GEMMs) with fp16 axis features and a finite output."""
    torch.manual_seed(0)
    model = models.create("convit_tiny", depth=2, local_up_to_layer=1, img_size=32, patch_size=8).half()
    assert model.blocks[0].attn.axis_feats.dtype == torch.float16
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 32, 32, dtype=torch.float16))
    assert torch.isfinite(out.float()).all()
