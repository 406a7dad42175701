"""DeiT baselines (Touvron et al. 2020) as used for the ConViT comparisons: timm-style ViTs.

Written independently; parameter names, shapes and order equal timm's ``VisionTransformer`` as built by
``deit_{tiny,small,base}_patch16_224`` (class token, ``pos_embed`` [1, 1 + N, D] covering the class token,
qkv bias, LayerNorm eps 1e-6, class-token pooling), so weights interchange strictly and logits match.

The paper does not say how its DeiT "+" baselines were built (reference 1.4, 9.2 item 1); we build them the
timm way with 64 dims per head and 4 / 9 / 16 heads, which reproduces the reference's parameter counts
5,717,416 / 9,982,184 / 22,050,664 / 49,000,744 / 86,567,656 / 153,171,944.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import Tensor, nn

from .convit import (
    LN_EPS,
    MHSA,
    Block,
    ZooModel,
    _init_weights,
    check_common,
    check_rate,
)

__all__ = ["Attention", "DeiT"]


class Attention(MHSA):
    """DeiT multi-head self-attention: :class:`MHSA` with a qkv bias (``attention_map`` as in MHSA)."""

    def __init__(self, dim: int, num_heads: int, *, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias=True, attn_drop=attn_drop, proj_drop=proj_drop)


class DeiT(ZooModel):
    """A DeiT / ViT classifier.

    Geometry: ``num_heads`` with ``head_dim`` (64) or ``embed_dim`` (total width). ``drop_rate`` is the
    DeiT meaning (after pos_embed, attention proj, MLP); ``global_pool="avg"`` averages the patch tokens
    after the final norm (timm instead swaps in an ``fc_norm``; our keys stay the token-pooling ones).

    Init follows the DeiT code: trunc_normal(0.02) for pos_embed, cls_token and Linear weights, zero
    biases, LayerNorm (1, 0), PyTorch default for the patch Conv2d.

    Interventions: only ``mask_pos_embed`` applies (no positional-attention layers).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        num_heads: int = 6,
        head_dim: int | None = None,
        embed_dim: int | None = None,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
    ) -> None:
        super().__init__()
        if head_dim is None and embed_dim is None:
            head_dim = 64
        dim = check_common(
            img_size=img_size,
            patch_size=patch_size,
            num_heads=num_heads,
            head_dim=head_dim,
            embed_dim=embed_dim,
            depth=depth,
            num_classes=num_classes,
            global_pool=global_pool,
            mlp_ratio=mlp_ratio,
        )
        drop_rate = check_rate("drop_rate", drop_rate)
        attn_drop_rate = check_rate("attn_drop_rate", attn_drop_rate)
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)

        self.num_classes = num_classes
        self.embed_dim = dim
        self.num_features = dim
        self.num_heads = num_heads
        self.depth = depth
        self.global_pool = global_pool
        self.local_up_to_layer = 0

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim
        )
        num_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace, no tensor
        self.blocks = nn.ModuleList(
            Block(
                dim,
                Attention(dim, num_heads, attn_drop=attn_drop_rate, proj_drop=drop_rate),
                mlp_ratio=mlp_ratio,
                drop=drop_rate,
                drop_path=rates[i],
            )
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens after the final norm, [B, 1 + N, D] with the class token first."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if not self.mask_pos_embed:
            x = x + self.pos_embed
        x = self.pos_drop(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)
