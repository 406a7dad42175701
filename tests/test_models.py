"""The model zoo: exact sizes, timm interchange and parity, GPSA fast == reference, ablations, interventions.

Big models are only counted on the meta device; timm references are built on the meta device and receive
our weights with ``assign=True`` (no second random init), which keeps the file fast on a 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math

import pytest
import timm
import torch
from timm.models.convit import ConVit
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from convit import models
from convit.models import GPSA, MHSA, PSA, ModelError
from convit.models.convit import conv_init_offsets, conv_init_pos_weight, relative_indices

CONVIT = [
    "convit_tiny",
    "convit_tiny_plus",
    "convit_small",
    "convit_small_plus",
    "convit_base",
    "convit_base_plus",
]
DEIT = ["deit_tiny", "deit_tiny_plus", "deit_small", "deit_small_plus", "deit_base", "deit_base_plus"]

PARAMS = {
    "convit_tiny": 5_710_512,
    "convit_tiny_plus": 9_972_912,
    "convit_small": 27_777_322,
    "convit_small_plus": 48_979_882,
    "convit_base": 86_540_040,
    "convit_base_plus": 153_134_856,
    "deit_tiny": 5_717_416,
    "deit_tiny_plus": 9_982_184,
    "deit_small": 22_050_664,
    "deit_small_plus": 49_000_744,
    "deit_base": 86_567_656,
    "deit_base_plus": 153_171_944,
}

#: small geometry used for per-variant forward/backward and parity (16 patch tokens, 1 GPSA + 1 MHSA).
SMALL = {"img_size": 32, "patch_size": 8, "num_classes": 10, "depth": 2}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def small_overrides(name: str) -> dict:
    return {**SMALL, "local_up_to_layer": 1} if name.startswith("convit") else dict(SMALL)


@functools.cache
def small_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return models.create(name, **small_overrides(name))


def timm_twin(name: str, ours: torch.nn.Module, **geometry) -> torch.nn.Module:
    """timm's model of the same configuration, built on meta and given our weights (strict, assign)."""
    cfg = models.default_config(name)
    cfg.update(geometry)
    with torch.device("meta"):
        if name.startswith("convit"):
            ref = ConVit(
                img_size=cfg["img_size"],
                patch_size=cfg["patch_size"],
                num_classes=cfg["num_classes"],
                embed_dim=cfg["head_dim"],  # timm: per-head width
                depth=cfg["depth"],
                num_heads=cfg["num_heads"],
                local_up_to_layer=cfg["local_up_to_layer"],
                locality_strength=1.0,
            )
        else:
            ref = VisionTransformer(
                img_size=cfg["img_size"],
                patch_size=cfg["patch_size"],
                num_classes=cfg["num_classes"],
                embed_dim=cfg["head_dim"] * cfg["num_heads"],
                depth=cfg["depth"],
                num_heads=cfg["num_heads"],
                qkv_bias=True,
            )
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)
    return ref.eval()


# ---------------------------------------------------------------------------------------------------------
# registry, sizes, shapes
# ---------------------------------------------------------------------------------------------------------
def test_names() -> None:
    assert models.names() == CONVIT + DEIT
    assert sorted(models.names()) == sorted(PARAMS)


@pytest.mark.parametrize("name", list(PARAMS))
def test_exact_param_count(name: str) -> None:
    with torch.device("meta"):
        model = models.create(name)
    assert n_params(model) == PARAMS[name]
    assert model.num_classes == 1000
    assert model.embed_dim == model.num_heads * (
        48 if name in ("convit_tiny", "convit_small", "convit_base") else 64
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [("convit_tiny", 5_710_312), ("convit_small", 27_776_872), ("convit_base", 86_539_240)],
)
def test_no_gpsa_param_count(name: str, expected: int) -> None:
    """local_up_to_layer=0: the reference's 'same code with local_up_to_layer=0' column (-5H per layer)."""
    with torch.device("meta"):
        model = models.create(name, local_up_to_layer=0)
    assert n_params(model) == expected
    assert model.local_layers() == []
    assert all(isinstance(b.attn, MHSA) for b in model.blocks)


@pytest.mark.parametrize("name", list(PARAMS))
def test_forward_backward_shapes(name: str) -> None:
    model = small_model(name).train()
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.zero_grad(set_to_none=True)
    feats = model.forward_features(x.detach())
    assert feats.shape == (2, 1 + 16, model.embed_dim)
    assert model.patch_embed(x.detach()).shape == (2, 16, model.embed_dim)
    assert model.no_weight_decay() == {"pos_embed", "cls_token"}
    kinds = [type(b.attn) for b in model.blocks]
    assert kinds == ([GPSA, MHSA] if name.startswith("convit") else [models.Attention] * 2)


@pytest.mark.parametrize("name", list(PARAMS))
def test_small_config_timm_parity(name: str) -> None:
    """Every variant's head layout, small geometry: same keys (in order), strict load, same logits."""
    ours = small_model(name).eval()
    ref = timm_twin(name, ours, **small_overrides(name))
    assert list(ref.state_dict()) == list(ours.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("name", "timm_name"),
    [
        ("convit_tiny", "convit_tiny"),
        ("convit_small", "convit_small"),
        ("deit_tiny", "deit_tiny_patch16_224"),
        ("deit_small", "deit_small_patch16_224"),
    ],
)
def test_timm_interchange_and_logits_224(name: str, timm_name: str) -> None:
    torch.manual_seed(0)
    ours = models.create(name).eval()
    with torch.device("meta"):
        ref = timm.create_model(timm_name)
    ref.eval()
    assert {k: v.shape for k, v in ref.state_dict().items()} == {
        k: v.shape for k, v in ours.state_dict().items()
    }
    ref.load_state_dict(ours.state_dict(), strict=True, assign=True)  # ours -> timm
    ours.load_state_dict(ref.state_dict(), strict=True)  # timm -> ours
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------
# GPSA fast path vs reference formulation
# ---------------------------------------------------------------------------------------------------------
def _fast_and_reference(attention: str = "gpsa", **kw) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(1)
    cfg = {
        "img_size": 32,
        "patch_size": 4,
        "num_classes": 7,
        "depth": 3,
        "local_up_to_layer": 2,
        "head_dim": 8,
    }
    fast = models.create("convit_tiny", attention=attention, **{**cfg, **kw}).double()
    with torch.no_grad():  # move the gates off their init so both mixing weights matter per head
        for i in fast.local_layers():
            if hasattr(fast.blocks[i].attn, "gating_param"):
                fast.blocks[i].attn.gating_param.copy_(torch.linspace(-1.5, 1.5, 4))
    ref = copy.deepcopy(fast)
    ref.fast = False
    assert fast.fast and not ref.fast
    return fast, ref


@pytest.mark.parametrize("attention", ["gpsa", "psa"])
@pytest.mark.parametrize("mask", [{}, {"mask_content_layers": 1}, {"mask_position_layers": 2}])
def test_fast_path_equals_reference_forward_backward(attention: str, mask: dict) -> None:
    fast, ref = _fast_and_reference(attention)
    fast.set_intervention(**mask)
    ref.set_intervention(**mask)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
    xf, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    of, orf = fast(xf), ref(xr)
    torch.testing.assert_close(of, orf, atol=1e-12, rtol=1e-10)
    w = torch.randn_like(of)
    (of * w).sum().backward()
    (orf * w).sum().backward()
    torch.testing.assert_close(xf.grad, xr.grad, atol=1e-12, rtol=1e-10)
    for (name, pf), (_, pr) in zip(fast.named_parameters(), ref.named_parameters(), strict=True):
        # a masked branch is skipped by the fast path (grad None) and multiplied by 0 in the reference
        gf = pf.grad if pf.grad is not None else torch.zeros_like(pf)
        gr = pr.grad if pr.grad is not None else torch.zeros_like(pr)
        torch.testing.assert_close(gf, gr, atol=1e-12, rtol=1e-10, msg=name)
    if mask.get("mask_content_layers"):
        assert fast.blocks[0].attn.qk.weight.grad is None  # content skipped, not computed and zeroed


def _grads_vs_truth(model: torch.nn.Module, x: Tensor, w: Tensor, bf16: bool) -> dict[str, Tensor]:
    """Output, input gradient and parameter gradients of ``(model(x) * w).sum()``, as float64."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    (out.float() * w).sum().backward()
    got = {"output": out.double(), "input.grad": x.grad.double()}
    # pos_proj.bias is left out: it cancels in every softmax, so its exact gradient is 0
    got |= {n: p.grad.double() for n, p in model.named_parameters() if "pos_proj.bias" not in n}
    return got


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("attention", ["gpsa", "psa"])
def test_fast_path_as_accurate_as_reference_in_fp32_and_bf16(attention: str, bf16: bool) -> None:
    """In float32 and under bf16 autocast, the fast path is as close to the float64 truth as the reference.

    The two paths round at different points (fused SDPA softmax, two Kronecker GEMMs vs one materialised
    matrix), so they cannot agree bit for bit; what must hold is that the fast path loses no accuracy.
    Tolerances, per tensor (output, input gradient, every parameter gradient), as relative Frobenius error
    against float64: fp32 (unit roundoff 6e-8) both paths below 1e-5 (observed <= 1.5e-6 over seeds);
    bf16 (unit roundoff 2^-9 = 2e-3) both below 0.1 and the fast path within 3x the reference's error
    or 3 bf16 epsilons (observed ratio <= 2.9; the gate gradient, a difference of two similar terms, is
    the least accurate in both paths).
    """
    truth_model, _ = _fast_and_reference(attention)
    for seed in range(3):
        torch.manual_seed(100 + seed)
        x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
        w = torch.randn(4, 7, dtype=torch.float64)
        truth = _grads_vs_truth(truth_model, x, w, bf16=False)
        err = {}
        for path in ("fast", "reference"):
            model = copy.deepcopy(truth_model).float()
            model.fast = path == "fast"
            got = _grads_vs_truth(model, x.float(), w.float(), bf16=bf16)
            err[path] = {n: ((got[n] - t).norm() / t.norm()).item() for n, t in truth.items()}
        bound = 0.1 if bf16 else 1e-5
        for name in truth:
            fast, ref = err["fast"][name], err["reference"][name]
            assert fast < bound and ref < bound, (seed, name, fast, ref)
            if bf16:
                assert fast <= 3 * max(ref, 2**-8), (seed, name, fast, ref)


def test_fast_path_with_attention_dropout_matches_reference() -> None:
    """attn_drop > 0 in training: the fast flag falls back to the reference maths (one mask on the mix)."""
    fast, ref = _fast_and_reference(attn_drop_rate=0.2)
    fast.train()
    ref.train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    torch.manual_seed(5)
    of = fast(x)
    torch.manual_seed(5)
    orf = ref(x)
    torch.testing.assert_close(of, orf)
    fast.eval()
    ref.eval()
    torch.testing.assert_close(fast(x), ref(x), atol=1e-12, rtol=1e-10)


def test_positional_attention_once_per_layer_forward() -> None:
    """The fast path evaluates pos_proj once per layer and forward, on the [2, g, g, 3] axis features only
    (no batch dimension, and never the [N, N, 3] grid: P is not materialised)."""
    fast, _ = _fast_and_reference()
    calls: list[tuple[int, ...]] = []
    for i in fast.local_layers():
        fast.blocks[i].attn.pos_proj.register_forward_hook(lambda m, a, o: calls.append(tuple(a[0].shape)))
    fast(torch.randn(5, 3, 32, 32, dtype=torch.float64))
    assert calls == [(2, 8, 8, 3)] * 2


@pytest.mark.parametrize("attention", ["mhsa", "deit", "gpsa", "psa"])
def test_fused_projection_is_split_with_unbind(attention: str) -> None:
    """q, k (and v) leave the fused projection through ``unbind``, whose backward writes their gradients into
    one stacked buffer. Indexing (``qkv[0]``, ...) zero-fills a full-size buffer per slice in backward and
    adds them up: DeiT-Ti trained 3% slower that way (``convit.bench`` docstring)."""
    from convit.models.deit import Attention

    modules = {
        "mhsa": lambda: MHSA(16, 2),
        "deit": lambda: Attention(16, 2),
        "gpsa": lambda: GPSA(16, 4, grid_size=2),
        "psa": lambda: PSA(16, 4, grid_size=2),
    }
    q, k, v = modules[attention]()._qkv(torch.randn(2, 4, 16))
    fused = [q, k, v] if attention in ("mhsa", "deit") else [q, k]
    assert [t.grad_fn.name() for t in fused] == ["UnbindBackward0"] * len(fused)


@pytest.mark.parametrize("heads,grid", [(4, 3), (9, 8), (16, 14)])
def test_positional_attention_is_the_kronecker_product_of_its_axis_factors(heads: int, grid: int) -> None:
    """softmax_j(pos_proj(r_ij)) = P_cols (x) P_rows for any pos_proj weights and bias, value and gradient."""
    torch.manual_seed(heads)
    attn = GPSA(heads * 8, heads, grid_size=grid).double()
    with torch.no_grad():
        attn.pos_proj.weight.normal_(0.0, 1.0)
        attn.pos_proj.bias.normal_(0.0, 1.0)
    n = grid * grid
    full = attn.positional_attention(n)  # [H, N, N] from the [N, N, 3] relative indices
    cols, rows = attn.positional_factors(n)  # [H, g, g] each
    # token index = row * grid + col, so P[(r, c), (r', c')] = rows[r, r'] * cols[c, c']
    kron = torch.einsum("hab,hcd->hacbd", rows, cols).reshape(heads, n, n)
    torch.testing.assert_close(kron, full, atol=1e-13, rtol=1e-12)
    v = torch.randn(3, heads, n, 8, dtype=torch.float64)
    got, want = attn._positional_values(v), full.unsqueeze(0) @ v
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    g_got = torch.autograd.grad(got.square().sum(), attn.pos_proj.weight)[0]
    g_want = torch.autograd.grad(want.square().sum(), attn.pos_proj.weight)[0]
    torch.testing.assert_close(g_got, g_want, atol=1e-9, rtol=1e-9)
    # the bias cancels in both softmaxes but stays in the graph (DDP needs a gradient for every parameter)
    attn._positional_values(v).sum().backward()
    assert attn.pos_proj.bias.grad is not None and attn.pos_proj.bias.grad.abs().max() < 1e-9


def test_reference_matrix_is_mixed_and_row_stochastic() -> None:
    _, ref = _fast_and_reference()
    attn = ref.blocks[0].attn
    x = torch.randn(2, 64, ref.embed_dim, dtype=torch.float64)
    amap = attn.attention_map(x)
    assert amap.shape == (2, 4, 64, 64)
    torch.testing.assert_close(amap.sum(-1), torch.ones(2, 4, 64, dtype=torch.float64))
    q, k, _ = attn._qkv(x)
    content = ((q @ k.transpose(-2, -1)) * attn.head_dim**-0.5).softmax(-1)
    pos = attn.positional_attention(64)
    s = torch.sigmoid(attn.gating_param).view(1, -1, 1, 1)
    torch.testing.assert_close(amap, (1 - s) * content + s * pos)


# ---------------------------------------------------------------------------------------------------------
# relative positions, conv init, locality strength
# ---------------------------------------------------------------------------------------------------------
def test_relative_indices_layout_and_buffer() -> None:
    rel = relative_indices(3)
    # query 0 = (row 0, col 0); key 5 = (row 1, col 2): dx = 2, dy = 1, d2 = 5
    assert rel[0, 5].tolist() == [2.0, 1.0, 5.0]
    assert rel[5, 0].tolist() == [-2.0, -1.0, 5.0]
    model = small_model("convit_tiny")
    attn = model.blocks[0].attn
    assert "blocks.0.attn.rel_indices" in dict(model.named_buffers())
    assert not any("rel_indices" in k for k in model.state_dict())
    assert attn.rel_indices.shape == (16, 16, 3)
    attn(torch.randn(1, 25, model.embed_dim))  # a 5x5 grid: the fast path needs only the axis factors
    attn.attention_map(torch.randn(1, 25, model.embed_dim))  # the reference path rebuilds for the new N
    assert attn.rel_indices.shape == (25, 25, 3)
    for path in (attn, attn.attention_map):
        with pytest.raises(ModelError, match="square"):
            path(torch.randn(1, 24, model.embed_dim))
    attn.attention_map(torch.randn(1, 16, model.embed_dim))
    assert attn.rel_indices.shape == (16, 16, 3)


def test_dtype_follows_model() -> None:
    model = copy.deepcopy(small_model("convit_tiny")).eval().to(torch.bfloat16)
    assert model.blocks[0].attn.rel_indices.dtype == torch.bfloat16
    out = model(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_meta_build_then_materialise() -> None:
    with torch.device("meta"):
        model = models.create("convit_tiny", **small_overrides("convit_tiny"))
    model = model.to_empty(device="cpu")
    for i in model.local_layers():
        model.blocks[i].attn.init_non_persistent_buffers()
    torch.testing.assert_close(model.blocks[0].attn.rel_indices, relative_indices(4))


def test_convit_small_init_matches_reference_matrix() -> None:
    """Reference section 7.3: ConViT-S (9 heads) pos_proj.weight at init, columns [dx, dy, d2], bias 0."""
    expected = torch.tensor(
        [
            [-2, -2, -1],
            [-2, 0, -1],
            [-2, 2, -1],
            [0, -2, -1],
            [0, 0, -1],
            [0, 2, -1],
            [2, -2, -1],
            [2, 0, -1],
            [2, 2, -1],
        ],
        dtype=torch.float32,
    )
    model = models.create(
        "convit_small", img_size=32, patch_size=16, depth=1, local_up_to_layer=1, global_pool="avg"
    )
    attn = model.blocks[0].attn
    torch.testing.assert_close(attn.pos_proj.weight, expected)
    torch.testing.assert_close(attn.pos_proj.bias, torch.zeros(9))
    torch.testing.assert_close(attn.v.weight, torch.eye(model.embed_dim))
    torch.testing.assert_close(attn.gating_param, torch.ones(9))
    torch.testing.assert_close(attn.effective_sigma(), torch.full((9,), 1 / (1 + math.exp(-1))))
    assert attn.qk.weight.std().item() == pytest.approx(0.02, rel=0.15)  # q, k are not zeroed
    torch.testing.assert_close(conv_init_pos_weight(9, 2.0), 2 * expected)


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        (4, [(dx, dy) for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]),
        (9, [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]),
        (16, [(dx, dy) for dx in (-1.5, -0.5, 0.5, 1.5) for dy in (-1.5, -0.5, 0.5, 1.5)]),
    ],
)
def test_conv_init_attention_centres(heads: int, expected: list[tuple[float, float]]) -> None:
    """Positional attention of a query at the centre of a 14x14 grid: centre of mass = documented offset."""
    attn = GPSA(heads * 4, heads, grid_size=14)
    attn.local_init()
    with torch.no_grad():
        pos = attn.positional_attention(196)  # [H, N, N]
    rel = relative_indices(14)
    query = 7 * 14 + 7
    centres = torch.einsum("hk,kc->hc", pos[:, query], rel[query, :, :2])
    torch.testing.assert_close(centres, torch.tensor(expected, dtype=torch.float32), atol=1e-4, rtol=0)
    torch.testing.assert_close(centres, conv_init_offsets(heads), atol=1e-4, rtol=0)
    if heads == 9:  # a proper 3x3 kernel: the argmax is the offset itself, peak 0.318, 4-neighbours 0.117
        arg = pos[:, query].argmax(-1)
        torch.testing.assert_close(rel[query, arg, :2], conv_init_offsets(9))
        assert pos[4, query].max().item() == pytest.approx(0.318, abs=1e-3)
        assert pos[4, query, query + 1].item() == pytest.approx(0.117, abs=1e-3)
    else:  # 2x2 blocks: four equal maxima of 0.193
        assert pos[:, query].max(-1).values.tolist() == pytest.approx([0.193] * heads, abs=1e-3)


def test_locality_strength_scales_init_and_sharpens() -> None:
    sharp = models.create("convit_small", **small_overrides("convit_small"), locality_strength=2.0)
    soft = models.create("convit_small", **small_overrides("convit_small"), locality_strength=0.5)
    torch.testing.assert_close(sharp.blocks[0].attn.pos_proj.weight, conv_init_pos_weight(9, 2.0))
    torch.testing.assert_close(soft.blocks[0].attn.pos_proj.weight, conv_init_pos_weight(9, 0.5))
    with torch.no_grad():
        p_sharp = sharp.blocks[0].attn.positional_attention(16)[4, 5, 5]
        p_soft = soft.blocks[0].attn.positional_attention(16)[4, 5, 5]
    assert p_sharp > p_soft


# ---------------------------------------------------------------------------------------------------------
# ablation switches
# ---------------------------------------------------------------------------------------------------------
def test_no_conv_init_differs_from_conv_init() -> None:
    torch.manual_seed(0)
    plain = models.create("convit_tiny", **small_overrides("convit_tiny"), use_conv_init=False)
    attn = plain.blocks[0].attn
    assert not torch.allclose(attn.pos_proj.weight, conv_init_pos_weight(4))
    assert not torch.allclose(attn.v.weight, torch.eye(plain.embed_dim))
    assert attn.v.weight.std().item() == pytest.approx(0.02, rel=0.15)
    conv = small_model("convit_tiny")
    torch.testing.assert_close(conv.blocks[0].attn.pos_proj.weight, conv_init_pos_weight(4))
    # non-square heads are fine without conv init
    odd = models.create("convit_tiny", **small_overrides("convit_tiny"), num_heads=5, use_conv_init=False)
    assert odd.embed_dim == 5 * 48


def test_frozen_gating_gets_no_grad_and_sigma_half() -> None:
    model = models.create(
        "convit_tiny", **small_overrides("convit_tiny"), train_gating=False, gating_init=0.0
    )
    attn = model.blocks[0].attn
    assert not attn.gating_param.requires_grad
    torch.testing.assert_close(attn.effective_sigma(), torch.full((4,), 0.5))
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert attn.gating_param.grad is None
    assert attn.qk.weight.grad is not None and attn.pos_proj.weight.grad is not None
    trainable = small_model("convit_tiny").blocks[0].attn.gating_param
    assert trainable.requires_grad


@pytest.mark.parametrize("freeze_norm1", [True, False])
def test_frozen_gpsa_trains_only_ffn_of_local_blocks(freeze_norm1: bool) -> None:
    model = models.create(
        "convit_tiny", **small_overrides("convit_tiny"), freeze_gpsa=True, freeze_gpsa_norm1=freeze_norm1
    )
    local = model.blocks[0]
    assert all(not p.requires_grad for p in local.attn.parameters())
    assert all(p.requires_grad != freeze_norm1 for p in local.norm1.parameters())
    assert all(p.requires_grad for p in [*local.mlp.parameters(), *local.norm2.parameters()])
    assert all(p.requires_grad for p in model.blocks[1].parameters())  # the MHSA block trains
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    after = dict(model.named_parameters())
    for key in ("blocks.0.attn.qk.weight", "blocks.0.attn.v.weight", "blocks.0.attn.pos_proj.weight"):
        torch.testing.assert_close(after[key], before[key])
    assert not torch.equal(after["blocks.0.mlp.fc1.weight"], before["blocks.0.mlp.fc1.weight"])
    assert not torch.equal(after["blocks.1.attn.qkv.weight"], before["blocks.1.attn.qkv.weight"])


def test_psa_is_a_single_softmax_and_differs_from_gpsa() -> None:
    torch.manual_seed(0)
    psa = models.create("convit_tiny", **small_overrides("convit_tiny"), attention="psa")
    gpsa = models.create("convit_tiny", **small_overrides("convit_tiny"))
    gpsa.load_state_dict(psa.state_dict(), strict=False)
    attn = psa.blocks[0].attn
    assert isinstance(attn, PSA) and not hasattr(attn, "gating_param")
    assert set(gpsa.state_dict()) - set(psa.state_dict()) == {"blocks.0.attn.gating_param"}
    x = torch.randn(2, 16, psa.embed_dim)
    q, k, _ = attn._qkv(x)
    logits = (q @ k.transpose(-2, -1)) * attn.head_dim**-0.5 + attn.pos_proj(relative_indices(4)).permute(
        2, 0, 1
    )
    with torch.no_grad():
        torch.testing.assert_close(attn.attention_map(x), logits.softmax(-1))
        assert not torch.allclose(attn.attention_map(x), gpsa.blocks[0].attn.attention_map(x), atol=1e-3)
        img = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(psa(img), gpsa(img))
    torch.testing.assert_close(attn.pos_proj.weight, conv_init_pos_weight(4))


def test_local_up_to_layer_and_pooling() -> None:
    model = models.create("convit_tiny", **{**SMALL, "depth": 4}, local_up_to_layer=3)
    assert model.local_layers() == [0, 1, 2]
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 17, 192)
    avg = models.create("convit_tiny", **{**SMALL, "depth": 2}, local_up_to_layer=2, global_pool="avg")
    assert avg.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 16, 192)
    assert avg(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    deit = models.create("deit_tiny", **SMALL, global_pool="avg")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(deit(x), deit.head(deit.forward_features(x)[:, 1:].mean(1)))


def test_small_geometry_overrides() -> None:
    m = models.create("convit_small", img_size=64, patch_size=8, num_classes=5, depth=2, local_up_to_layer=1)
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    assert models.create("convit_small", embed_dim=9 * 16, depth=1, local_up_to_layer=0).embed_dim == 144
    assert models.create("convit_small", head_dim=16, depth=1, local_up_to_layer=0).embed_dim == 144
    assert models.create("convit_tiny", num_heads=9, depth=1, local_up_to_layer=0).embed_dim == 9 * 48
    assert models.create("deit_small", embed_dim=96, depth=1).num_heads == 6
    m = models.create("convit_tiny", drop_path_rate=0.1, **SMALL, local_up_to_layer=1)
    assert m.blocks[1].drop_path.drop_prob == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------------------
# test-time interventions
# ---------------------------------------------------------------------------------------------------------
def _intervention_model() -> torch.nn.Module:
    torch.manual_seed(3)
    return models.create("convit_tiny", **{**SMALL, "depth": 4}, local_up_to_layer=3).eval()


def test_mask_content_sets_sigma_one_in_first_k_layers() -> None:
    model = _intervention_model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model(x)
        with model.intervention(mask_content_layers=2):
            assert model.intervention_state()["mask_content_layers"] == 2
            sig = [model.blocks[i].attn.effective_sigma() for i in range(3)]
            assert torch.equal(sig[0], torch.ones(4)) and torch.equal(sig[1], torch.ones(4))
            torch.testing.assert_close(sig[2], torch.sigmoid(model.blocks[2].attn.gating_param))
            tokens = torch.randn(2, 16, 192)
            amap = model.blocks[1].attn.attention_map(tokens)
            torch.testing.assert_close(
                amap, model.blocks[1].attn.positional_attention(16).expand(2, -1, -1, -1)
            )
            masked = model(x)
        assert model.intervention_state() == {
            "mask_pos_embed": False,
            "mask_content_layers": 0,
            "mask_position_layers": 0,
        }
        torch.testing.assert_close(model(x), base)
    assert not torch.allclose(masked, base)


def test_mask_position_sets_sigma_zero() -> None:
    model = _intervention_model()
    model.set_intervention(mask_position_layers=3)
    attn = model.blocks[2].attn
    assert torch.equal(attn.effective_sigma(), torch.zeros(4))
    tokens = torch.randn(2, 16, 192)
    q, k, _ = attn._qkv(tokens)
    with torch.no_grad():
        torch.testing.assert_close(
            attn.attention_map(tokens), ((q @ k.transpose(-2, -1)) * attn.head_dim**-0.5).softmax(-1)
        )
    model.clear_interventions()
    assert attn.mask is None


@pytest.mark.parametrize("name", ["convit_tiny", "deit_tiny"])
def test_mask_pos_embed_removes_its_contribution(name: str) -> None:
    model = copy.deepcopy(small_model(name)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        base = model(x)
        model.set_intervention(mask_pos_embed=True)
        masked = model(x)
        model.clear_interventions()
        model.pos_embed.zero_()
        torch.testing.assert_close(masked, model(x))
    assert not torch.allclose(masked, base)


def test_intervention_errors() -> None:
    model = _intervention_model()
    with pytest.raises(ModelError, match="not both"):
        model.set_intervention(mask_content_layers=1, mask_position_layers=1)
    with pytest.raises(ModelError, match=r"\[0, 3\]"):
        model.set_intervention(mask_content_layers=4)
    with pytest.raises(ModelError):
        small_model("deit_tiny").set_intervention(mask_content_layers=1)


# ---------------------------------------------------------------------------------------------------------
# probe contract
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["convit_tiny", "deit_small"])
def test_attention_map_contract(name: str) -> None:
    model = small_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert isinstance(model.blocks, torch.nn.ModuleList)
    for blk in model.blocks:
        n = 16 if isinstance(blk.attn, GPSA) else 17
        inp = blk.norm1(tokens if n == 16 else torch.cat([model.cls_token.expand(2, -1, -1), tokens], 1))
        with torch.no_grad():
            amap = blk.attn.attention_map(inp)
        assert amap.shape == (2, model.num_heads, n, n)
        torch.testing.assert_close(amap.sum(-1), torch.ones(2, model.num_heads, n))
    if name.startswith("convit"):
        attn = model.blocks[0].attn
        assert attn.gating_param.shape == (4,)
        assert isinstance(attn.pos_proj, torch.nn.Linear) and attn.pos_proj.in_features == 3


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------
def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ModelError, match="convit_tiny.*deit_base_plus"):
        models.create("convit_huge")


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("convit_tiny", {"num_heads": 5}, "perfect-square"),
        ("convit_tiny", {"bogus": 1}, "unknown override"),
        ("deit_tiny", {"local_up_to_layer": 3}, "unknown override"),
        ("convit_small", {"embed_dim": 100}, "not divisible"),
        ("convit_tiny", {"embed_dim": 192, "head_dim": 64}, "head_dim"),
        ("deit_tiny", {"img_size": 30}, "divisible by patch_size"),
        ("convit_tiny", {"local_up_to_layer": 13}, "local_up_to_layer"),
        ("convit_tiny", {"depth": 2, "local_up_to_layer": 2}, "global_pool='avg'"),
        ("convit_tiny", {"attention": "linear"}, "attention"),
        ("convit_tiny", {"global_pool": "max"}, "global_pool"),
        ("convit_tiny", {"drop_path_rate": 1.5}, "drop_path_rate"),
        ("convit_tiny", {"locality_strength": -1.0}, "locality_strength"),
    ],
)
def test_bad_overrides(name: str, overrides: dict, match: str) -> None:
    with pytest.raises(ModelError, match=match):
        with torch.device("meta"):
            models.create(name, **overrides)


# ---------------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------------
def _timm_small_convit() -> torch.nn.Module:
    torch.manual_seed(7)
    return ConVit(
        img_size=32, patch_size=8, num_classes=10, embed_dim=48, depth=2, num_heads=4, local_up_to_layer=1
    ).eval()


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "model_ema", "module.", "safetensors"])
def test_load_weights_formats(tmp_path, wrapper: str | None) -> None:
    ref = _timm_small_convit()
    state = ref.state_dict()
    path = tmp_path / "w.pth"
    if wrapper is None:
        torch.save(state, path)
    elif wrapper == "module.":
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif wrapper == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({wrapper: state, "epoch": 3}, path)
    ours = models.create("convit_tiny", **small_overrides("convit_tiny"))
    assert models.load_weights(ours, path) is ours
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), ref(x), atol=1e-5, rtol=0)


def test_load_weights_explicit_key_and_mismatch_errors(tmp_path) -> None:
    ref = _timm_small_convit()
    path = tmp_path / "ckpt.pth"
    zeros = {k: torch.zeros_like(v) for k, v in ref.state_dict().items()}
    torch.save({"model": zeros, "model_ema": ref.state_dict()}, path)
    ours = models.create("convit_tiny", **small_overrides("convit_tiny"))
    models.load_weights(ours, path, key="model_ema")
    torch.testing.assert_close(ours.pos_embed, ref.pos_embed)
    models.load_weights(ours, path)  # default prefers "model"
    assert torch.count_nonzero(ours.pos_embed) == 0

    wrong = models.create("convit_small", **small_overrides("convit_small"))
    with pytest.raises(ModelError, match=r"shape mismatch: .*blocks\.0\.attn\.gating_param"):
        models.load_weights(wrong, path)
    deeper = models.create("convit_tiny", **{**SMALL, "depth": 3}, local_up_to_layer=1)
    with pytest.raises(ModelError, match=r"missing keys: blocks\.2\."):
        models.load_weights(deeper, path)
    no_gpsa = models.create("convit_tiny", **SMALL, local_up_to_layer=0)
    with pytest.raises(ModelError, match=r"unexpected keys: .*blocks\.0\.attn\.gating_param"):
        models.load_weights(no_gpsa, path)

    pickled = tmp_path / "pickled.pth"
    torch.save({"model": ref.state_dict(), "args": argparse.Namespace(lr=1e-3)}, pickled)
    with pytest.raises(ModelError, match="weights_only"):
        models.load_weights(ours, pickled)
    with pytest.raises(ModelError, match="not found"):
        models.load_weights(ours, tmp_path / "nope.pth")
