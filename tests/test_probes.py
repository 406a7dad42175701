"""Locality probes against the reference values of convit-reference.md sections 4.1-4.2.

Small models (few blocks, small images) keep this file at a few seconds; the reference values themselves
need the paper's 14x14 grid and are computed on single GPSA layers or at batch 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from convit import models, probes

SQRT2 = math.sqrt(2)


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(name: str = "convit_tiny", **kw):
    """A cheap model of the zoo: 4 blocks (2 GPSA + 2 MHSA for ConViT) on a 4x4 patch grid."""
    cfg = {"img_size": 64, "depth": 4, "num_classes": 10}
    if name.startswith("convit"):
        cfg["local_up_to_layer"] = 2
    cfg.update(kw)
    torch.manual_seed(0)
    return models.create(name, **cfg)


# ---------------------------------------------------------------------------------------------------------
# Eq. 8 itself
# ---------------------------------------------------------------------------------------------------------
def test_uniform_attention_on_14x14_grid_is_7_281():
    uniform = torch.full((2, 3, 196, 196), 1 / 196)
    d = probes.nonlocality(uniform, 14)
    assert d.shape == (3,)
    assert torch.allclose(d, torch.full((3,), 7.281), atol=1e-3)
    assert torch.allclose(probes.nonlocality(uniform[0], (14, 14)), d)  # [H, N, N] input


def test_class_token_is_excluded_without_renormalising():
    # uniform over 197 tokens: patch rows put 1/197 on the class token, which carries no distance
    uniform = torch.full((1, 2, 197, 197), 1 / 197)
    as_is = probes.nonlocality(uniform, 14)
    assert torch.allclose(as_is, torch.full((2,), 7.281 * 196 / 197), atol=1e-3)
    renorm = probes.nonlocality(uniform, 14, renormalize=True)
    assert torch.allclose(renorm, torch.full((2,), 7.281), atol=1e-3)


def test_identity_attention_is_fully_local_and_bad_shapes_raise():
    eye = torch.eye(16).expand(1, 2, 16, 16)
    assert torch.allclose(probes.nonlocality(eye, 4), torch.zeros(2))
    with pytest.raises(ValueError):
        probes.nonlocality(torch.ones(2, 3, 10, 10), 4)  # 10 tokens cannot hold 16 patches
    with pytest.raises(ValueError):
        probes.nonlocality(torch.ones(4, 5), 2)


def test_relative_positions_follow_the_official_encoding():
    rel = probes.relative_positions(3)
    # token 0 is (row 0, col 0); token 5 is (row 1, col 2): delta = key - query = (dx 2, dy 1)
    assert rel[0, 5].tolist() == [2.0, 1.0, 5.0]
    assert rel[5, 0].tolist() == [-2.0, -1.0, 5.0]
    assert probes.patch_distances((2, 3)).shape == (6, 6)


# ---------------------------------------------------------------------------------------------------------
# section 4.1 reference values
# ---------------------------------------------------------------------------------------------------------
POSITIONAL_REFERENCE = {
    # heads: {alpha: per-head expected values, grouped by conv-init role}
    4: {0.5: [1.289] * 4, 1.0: [0.986] * 4, 2.0: [0.829] * 4},
    9: {0.5: (1.152, 1.415, 1.652), 1.0: (0.759, 1.166, 1.485), 2.0: (0.377, 1.021, 1.41)},
    16: {0.5: (1.289, 1.752, 2.141), 1.0: (0.986, 1.600, 2.059), 2.0: (0.829, 1.543, 2.03)},
}


def _role_values(heads: int, values):
    """Expand (centre, edge, corner) / (inner, edge, corner) values to per-head ones via the init offsets."""
    if heads == 4:
        return list(values)
    k = math.isqrt(heads)
    c = (k - 1) / 2
    out = []
    for h in range(heads):  # head p = h1 + k * h2 has offset (h2 - c, h1 - c)
        h1, h2 = h % k, h // k
        n_edge = (abs(h1 - c) == c) + (abs(h2 - c) == c)
        out.append(values[n_edge])
    return out


@pytest.mark.parametrize("heads,name", [(4, "convit_tiny"), (9, "convit_small"), (16, "convit_base")])
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_positional_attention_nonlocality_matches_reference(heads, name, alpha):
    torch.manual_seed(0)
    model = models.create(
        name, depth=1, local_up_to_layer=1, global_pool="avg", locality_strength=alpha, num_classes=0
    )
    attn = model.blocks[0].attn
    got = probes.nonlocality(probes.positional_attention(attn, 14), 14)
    expected = torch.tensor(_role_values(heads, POSITIONAL_REFERENCE[heads][alpha]))
    assert torch.allclose(got, expected, atol=2e-3), (got, expected)


def test_zoo_attention_map_with_content_masked_is_the_positional_attention():
    model = models.create("convit_small", depth=1, local_up_to_layer=1, global_pool="avg", num_classes=0)
    model.set_intervention(mask_content_layers=1)
    x = torch.randn(1, 3, 224, 224)
    maps = probes.attention_maps(model, x, mode="patch_embed")
    assert torch.allclose(maps[0][0], probes.positional_attention(model.blocks[0].attn, 14), atol=1e-6)
    got = probes.locality_probes(model, x, mode="patch_embed")
    assert got["nonlocality"][0] == pytest.approx(
        [1.485, 1.166, 1.485, 1.166, 0.759] + [1.166, 1.485] * 2, abs=2e-3
    )
    assert got["gate_sigma"] == [[1.0] * 9]


def test_convit_small_layer0_at_init_code_metric():
    """The original code's logged values at init (reference 4.1): patch_embed mode, random input."""
    torch.manual_seed(0)
    model = models.create("convit_small")
    result = probes.locality_probes(model, torch.randn(2, 3, 224, 224), mode="patch_embed")
    expected = [3.043, 2.81, 3.043, 2.81, 2.513, 2.811, 3.044, 2.811, 3.043]
    assert result["nonlocality"][0] == pytest.approx(expected, abs=0.05)
    assert len(result["nonlocality"]) == 12 and all(len(h) == 9 for h in result["nonlocality"])


# ---------------------------------------------------------------------------------------------------------
# section 4.2: gates and centre distances
# ---------------------------------------------------------------------------------------------------------
CENTRES = {
    "convit_tiny": [SQRT2 / 2] * 4,
    "convit_small": [SQRT2, 1, SQRT2, 1, 0, 1, SQRT2, 1, SQRT2],
}


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_centre_distances_at_init_do_not_depend_on_alpha(alpha):
    for name, expected in CENTRES.items():
        model = _tiny(name, locality_strength=alpha)
        dist = probes.centre_distances(model)
        assert len(dist) == 2
        assert dist[0] == pytest.approx(expected, abs=1e-6)
    base = models.create(
        "convit_base", depth=1, local_up_to_layer=1, global_pool="avg", num_classes=0, locality_strength=alpha
    )
    got = sorted(probes.centre_distances(base)[0])
    want = sorted([SQRT2 / 2] * 4 + [math.hypot(0.5, 1.5)] * 8 + [math.hypot(1.5, 1.5)] * 4)
    assert got == pytest.approx(want, abs=1e-6)
    assert sorted({round(v, 3) for v in got}) == [0.707, 1.581, 2.121]


def test_centre_distance_is_nan_without_a_maximum():
    model = _tiny("convit_small")
    with torch.no_grad():
        model.blocks[1].attn.pos_proj.weight[3, 2] = 0.0
        model.blocks[1].attn.pos_proj.weight[4, 2] = 0.5
    dist = probes.centre_distances(model)
    assert math.isnan(dist[1][3]) and math.isnan(dist[1][4])
    assert dist[1][5] == pytest.approx(1.0)


def test_gate_sigma_follows_init_freezing_and_interventions():
    model = _tiny("convit_tiny")
    assert probes.gate_sigma(model) == [[pytest.approx(1 / (1 + math.exp(-1)))] * 4] * 2
    frozen = _tiny("convit_tiny", gating_init=0.0, train_gating=False)
    assert probes.gate_sigma(frozen) == [[0.5] * 4] * 2
    with model.intervention(mask_position_layers=1):
        assert probes.gate_sigma(model)[0] == [0.0] * 4
        assert probes.gate_sigma(model)[1] == [pytest.approx(0.731, abs=1e-3)] * 4


# ---------------------------------------------------------------------------------------------------------
# the probe runner
# ---------------------------------------------------------------------------------------------------------
def test_attention_maps_shapes_and_modes():
    model = _tiny("convit_tiny")
    x = torch.randn(3, 3, 64, 64)
    prop = probes.attention_maps(model, x)
    assert [tuple(m.shape) for m in prop] == [(3, 4, 16, 16)] * 2 + [(3, 4, 17, 17)] * 2
    raw = probes.attention_maps(model, x, mode="patch_embed")
    assert [tuple(m.shape) for m in raw] == [(3, 4, 16, 16)] * 4
    for m in prop + raw:
        assert torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)
    assert torch.allclose(prop[0], raw[0]) is False  # propagated input has pos_embed and norm1
    with pytest.raises(ValueError):
        probes.attention_maps(model, x, mode="nope")


def test_propagated_maps_are_those_of_the_real_activations():
    model = _tiny("convit_tiny").eval()
    x = torch.randn(2, 3, 64, 64)
    maps = probes.attention_maps(model, x)
    with torch.no_grad():
        h = model.patch_embed(x) + model.pos_embed
        for i in range(2):  # the GPSA blocks: patch tokens only
            blk = model.blocks[i]
            assert torch.allclose(maps[i], blk.attn.attention_map(blk.norm1(h)), atol=1e-6)
            h = blk(h)


def test_deit_probes_and_model_state_is_restored():
    model = _tiny("deit_tiny")
    model.train()
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = probes.locality_probes(model, x)
    assert set(result) == {"nonlocality", "gate_sigma", "centre_distance"}
    assert result["gate_sigma"] == [] and result["centre_distance"] == []
    assert len(result["nonlocality"]) == 4 and all(len(h) == 3 for h in result["nonlocality"])
    assert all(isinstance(v, float) for h in result["nonlocality"] for v in h)
    assert model.training
    assert all(not b.attn._forward_pre_hooks for b in model.blocks)


def test_convit_probes_structure_and_hooks_removed_on_error():
    model = _tiny("convit_tiny")
    x = torch.randn(2, 3, 64, 64)
    result = probes.locality_probes(model, x)
    assert len(result["nonlocality"]) == 4
    assert len(result["gate_sigma"]) == 2 and len(result["centre_distance"]) == 2
    assert all(0 < v < 2 * math.sqrt(2) * 4 for h in result["nonlocality"] for v in h)

    class Boom(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.blocks[3].mlp = Boom()
    with pytest.raises(RuntimeError, match="boom"):
        probes.locality_probes(model, x)
    assert all(not b.attn._forward_pre_hooks for b in model.blocks)
    assert model.training


def test_probes_need_no_gradients():
    model = _tiny("convit_tiny")
    x = torch.randn(1, 3, 64, 64)
    probes.locality_probes(model, x)
    assert all(p.grad is None for p in model.parameters())
    maps = probes.attention_maps(model, x)
    assert not any(m.requires_grad for m in maps)
