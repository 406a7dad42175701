"""ConViT (d'Ascoli et al., ICML 2021): a ViT whose first layers use gated positional self-attention.

Size: ~790 lines, one architecture: the attention layers (MHSA, GPSA, PSA) and the shared
ZooModel are built together because their parameter names and order must equal timm's.

Written from the paper and the reference notes (``convit-reference.md`` sections 1, 3 and 7), not from the
official or timm source. The parameter names, shapes and order equal timm's ``ConVit`` (and therefore the
official released checkpoints), so weights move between the three with a strict ``load_state_dict`` and no
remapping.

Wiring (reference 7.4): 16x16 patch embedding, ``+ pos_embed`` ([1, N, D], no class-token slot), then
``local_up_to_layer`` pre-norm blocks whose attention is GPSA on the N patch tokens, then the class token
(no positional embedding) is concatenated at index 0 and the remaining blocks use plain multi-head self
attention (MHSA, no qkv bias) on N + 1 tokens; final LayerNorm (eps 1e-6), class-token (or mean) pooling,
linear head.

GPSA (reference 7.1, paper Eqs. 6-7), per head h with gate sigma_h = sigmoid(lambda_h)::

    A_h = (1 - sigma_h) softmax(q k^T / sqrt(d_h)) + sigma_h softmax(pos_proj(r))_h,   out = normalize(A_h) v

The row renormalisation is a no-op (a convex mix of two row-stochastic matrices), so the fast path computes
``(1 - s) * SDPA(q, k, v) + s * (P @ v)`` with the positional attention P computed once per layer and forward
instead of per image. P is never materialised: with r_ij = (dx, dy, dx^2 + dy^2) the positional logit
``w0 dx + w1 dy + w2 (dx^2 + dy^2) + b`` is a sum of a column term and a row term, so its softmax over the
keys factorises into a Kronecker product of two small row-stochastic matrices, P = P_rows (x) P_cols (each
[H, g, g] on a g x g grid), and P @ v is two contractions of g terms instead of one of g^2 (14x fewer
multiply-adds at 14 x 14 patches). ``fast=False`` keeps the reference formulation (materialised, mixed,
renormalised matrix) and the test-suite proves the two equal in value and gradient.

This module also hosts the pieces the DeiT baseline shares (:class:`ModelError`, :class:`MHSA`,
:class:`Block`, :class:`ZooModel` with the intervention API and ``no_weight_decay``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, trunc_normal_
from torch import Tensor, nn

__all__ = [
    "GPSA",
    "MHSA",
    "PSA",
    "Block",
    "ConViT",
    "ModelError",
    "ZooModel",
    "axis_features",
    "conv_init_pos_weight",
    "flush_subnormal_factors",
    "is_local_attention",
    "relative_indices",
]

LN_EPS = 1e-6


class ModelError(ValueError):
    """A model name or constructor option is invalid (unknown variant, inconsistent geometry, ...)."""


# --------------------------------------------------------------------------------------------------------
# relative positions and the convolutional init
# --------------------------------------------------------------------------------------------------------
def relative_indices(
    grid: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Relative-position features r_ij for a ``grid x grid`` patch grid, shape [N, N, 3] (N = grid**2).

    Tokens are flattened row-major (n = row * grid + col); entry [i, j] describes key j seen from query i:
    channel 0 = col_j - col_i (dx), channel 1 = row_j - row_i (dy), channel 2 = dx**2 + dy**2. This is the
    official ``get_rel_indices`` encoding (reference 7.2), i.e. Eq. 5 up to a column permutation.
    """
    n = torch.arange(grid * grid, device=device)
    row, col = n // grid, n % grid
    dx = (col[None, :] - col[:, None]).to(dtype)
    dy = (row[None, :] - row[:, None]).to(dtype)
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1)


def axis_features(
    grid: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The r_ij features of one grid axis, shape [2, g, g, 3]: [0] along columns, [1] along rows.

    Entry [0, a, b] is (b - a, 0, (b - a)**2) (a key ``b - a`` columns away in the same row), entry [1, a, b]
    is (0, b - a, (b - a)**2). ``pos_proj`` applied to them gives the column and row parts of the positional
    logit, whose softmaxes are the two Kronecker factors of the positional attention (see the module doc).
    """
    a = torch.arange(grid, device=device, dtype=dtype)
    d = a[None, :] - a[:, None]
    zero = torch.zeros_like(d)
    cols = torch.stack([d, zero, d * d], dim=-1)
    rows = torch.stack([zero, d, d * d], dim=-1)
    return torch.stack([cols, rows])


def conv_init_pos_weight(num_heads: int, locality_strength: float = 1.0) -> Tensor:
    """The convolutional-init ``pos_proj.weight`` [H, 3] (reference 7.3); needs a perfect-square H.

    With k = sqrt(H) and c the grid centre ((k-1)/2), head p = h1 + k*h2 gets the row
    alpha * [2(h2 - c), 2(h1 - c), -1], so its logit is -alpha * ||delta - Delta_p||^2 + const and its
    positional attention is centred on the offset Delta_p = (dx, dy) = (h2 - c, h1 - c): {-1,0,1}^2 for
    9 heads, (+-0.5, +-0.5) for 4 heads (2x2 blocks, not Fig. 3c's +-1), {+-0.5, +-1.5}^2 for 16 heads.
    """
    k = math.isqrt(num_heads)
    if k * k != num_heads:
        raise ModelError(
            f"convolutional init needs a perfect-square number of heads (4, 9, 16, ...), got {num_heads}; "
            "pass use_conv_init=False or a square num_heads"
        )
    centre = (k - 1) / 2
    weight = torch.zeros(num_heads, 3)
    for h1 in range(k):
        for h2 in range(k):
            p = h1 + k * h2
            weight[p, 0] = 2 * (h2 - centre)
            weight[p, 1] = 2 * (h1 - centre)
            weight[p, 2] = -1.0
    return weight * locality_strength


def flush_subnormal_factors(p: Tensor) -> bool:
    """Whether GPSA zeroes the subnormal entries of its positional factors ``p`` before the two GEMMs.

    A conv-init factor has subnormal tails (exp(-alpha * r^2)), and x86 CPUs run matmuls on subnormal
    operands several times slower (``convit.bench``'s history: part of the 0.59 -> 0.81 step of ConViT-Ti);
    zeroing them changes an fp32 output by less than 1e-38 per term. Only on a CPU and only for fp32, bf16
    and fp64, whose subnormals are the slow ones. Not on a GPU: subnormals cost nothing there and the
    flush would be a compare and a masked_fill per layer and forward for nothing. Never for fp16: its
    smallest normal is 6.1e-5, so the flush would zero real attention weights (168 of ConViT-Ti's 1568
    factor entries at init), and CPUs compute fp16 matmuls in fp32, where fp16 subnormals are normal.
    """
    return p.device.type == "cpu" and p.dtype != torch.float16


def conv_init_offsets(num_heads: int) -> Tensor:
    """Attention centres Delta_h = (dx, dy) in patch units of the convolutional init, shape [H, 2]."""
    w = conv_init_pos_weight(num_heads, 1.0)
    return w[:, :2] / 2


# --------------------------------------------------------------------------------------------------------
# attention modules
# --------------------------------------------------------------------------------------------------------
class MHSA(nn.Module):
    """Plain multi-head self-attention (ConViT's non-local layers; DeiT's attention with ``qkv_bias``).

    ``qkv`` is one Linear(D, 3D) laid out [q | k | v], each split into heads, as in timm. The forward runs
    through ``scaled_dot_product_attention``; :meth:`attention_map` materialises softmax(q k^T / sqrt(d)).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        qkv_bias: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # one stacked gradient in backward, not three zero-filled ones (see GPSA)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        p = self.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def attention_map(self, x: Tensor) -> Tensor:
        """Post-softmax attention [B, H, N, N] for the (normalised) input ``x`` of this module; no dropout."""
        q, k, _ = self._qkv(x)
        return ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)


class _LocalAttention(nn.Module):
    """Shared body of GPSA and PSA: content projections ``qk`` / ``v``, ``pos_proj``, relative positions.

    Only sees the N patch tokens of a square grid. ``rel_indices`` ([N, N, 3], the reference path's
    features) and ``axis_feats`` ([2, g, g, 3], the fast path's, see :func:`axis_features`) are
    non-persistent buffers built for the construction-time grid and rebuilt when a different N arrives.
    They are functions of the grid alone (small integers, exact in every float dtype), never of a
    parameter, so they cannot go stale after an optimiser step; as buffers they follow ``.to()`` (device
    and dtype) and ``deepcopy``, stay out of the state_dict (timm and checkpoint compatibility) and are cast
    to ``pos_proj``'s dtype when used (a no-op unless autocast or a partial cast made them differ).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        grid_size: int,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        locality_strength: float = 1.0,
        use_conv_init: bool = True,
        fast: bool = True,
        gating_init: float = 1.0,
        train_gating: bool = True,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.locality_strength = locality_strength
        self.use_conv_init = use_conv_init
        self.fast = fast
        #: test-time intervention (Table 6): None, "content" (sigma = 1) or "position" (sigma = 0).
        self.mask: str | None = None
        self._make_gate(num_heads, gating_init, train_gating)
        self.qk = nn.Linear(dim, dim * 2, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("rel_indices", relative_indices(grid_size), persistent=False)
        self.register_buffer("axis_feats", axis_features(grid_size), persistent=False)

    def _make_gate(self, num_heads: int, gating_init: float, train_gating: bool) -> None:
        """Hook for GPSA's gate; registered first so the parameter order equals timm's."""

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, fast={self.fast}, mask={self.mask}"

    # --- initialisation ----------------------------------------------------------------------------------
    def local_init(self) -> None:
        """Convolutional init (reference 7.3): W_val = I and conv-kernel pos_proj rows scaled by alpha.

        q/k keep their trunc_normal init; the pos_proj bias keeps its zero init.
        """
        with torch.no_grad():
            self.v.weight.copy_(torch.eye(self.v.weight.shape[0]))
            w = conv_init_pos_weight(self.num_heads, self.locality_strength)
            self.pos_proj.weight.copy_(w)

    def init_non_persistent_buffers(self) -> None:
        """Recompute ``rel_indices`` and ``axis_feats`` (needed after ``to_empty`` materialises a meta-device
        model)."""
        grid = math.isqrt(self.rel_indices.shape[0])
        self.rel_indices = relative_indices(grid, device=self.pos_proj.weight.device)
        self.axis_feats = axis_features(self.axis_feats.shape[1], device=self.pos_proj.weight.device)

    # --- pieces ------------------------------------------------------------------------------------------
    def _rel(self, n: int) -> Tensor:
        if self.rel_indices.shape[0] != n:
            grid = math.isqrt(n)
            if grid * grid != n:
                raise ModelError(f"{type(self).__name__} needs a square patch grid, got {n} tokens")
            self.rel_indices = relative_indices(grid, device=self.pos_proj.weight.device)
        return self.rel_indices

    def positional_logits(self, n: int) -> Tensor:
        """pos_proj(r_ij) per head, [H, N, N]: independent of the batch."""
        rel = self._rel(n).to(self.pos_proj.weight.dtype)
        return self.pos_proj(rel).permute(2, 0, 1)

    def positional_attention(self, n: int) -> Tensor:
        """softmax over keys of the positional logits, [H, N, N] (computed once, shared by all images)."""
        return self.positional_logits(n).softmax(dim=-1)

    def positional_factors(self, n: int) -> Tensor:
        """The Kronecker factors of :meth:`positional_attention`, [2, H, g, g]: [0] columns, [1] rows.

        softmax_j(pos_proj(r_ij)) = P_cols[c_i, c_j] * P_rows[row_i, row_j] because the logit
        ``w0 dx + w1 dy + w2 (dx^2 + dy^2) + b`` splits into a column term and a row term. The bias b enters
        both factors' logits and cancels in each softmax, exactly as it cancels in the full one; it stays
        in the graph so that DDP (find_unused_parameters=False) sees a gradient for it.
        """
        grid = math.isqrt(n)
        if grid * grid != n:
            raise ModelError(f"{type(self).__name__} needs a square patch grid, got {n} tokens")
        if self.axis_feats.shape[1] != grid:
            self.axis_feats = axis_features(grid, device=self.pos_proj.weight.device)
        feats = self.axis_feats.to(self.pos_proj.weight.dtype)
        return self.pos_proj(feats).softmax(dim=2).permute(0, 3, 1, 2)

    def _positional_values(self, v: Tensor) -> Tensor:
        """P @ v for the whole batch without forming P ([H, N, N]), through its two Kronecker factors.

        With v viewed as [B, H, rows, cols, d]: first the rows (``P_rows @ v`` on [B, H, g, g * d], one small
        GEMM per image and head; v arrives as a transposed view of its projection, so this reshape is the
        path's one copy), then the columns (``P_cols`` broadcast over images and rows, one [g, g] @ [g, d]
        GEMM each, so the intermediate is never transposed either way). That is 2 g multiply-adds
        per output element instead of g^2, measured ~3x faster than ``P @ v`` for ConViT-Ti at 224 px,
        forward + backward, on a CPU (``python -m convit.bench``). On a CPU, factor entries below the smallest
        normal float are set to 0 (:func:`flush_subnormal_factors`).
        """
        b, h, n, d = v.shape
        grid = math.isqrt(n)
        p = self.positional_factors(n).to(v.dtype)
        if flush_subnormal_factors(p):
            p = p.masked_fill(p < torch.finfo(p.dtype).tiny, 0.0)
        p_cols, p_rows = p
        t = p_rows.unsqueeze(0) @ v.reshape(b, h, grid, grid * d)  # [B, H, rows, cols * d]
        out = p_cols.view(1, h, 1, grid, grid) @ t.view(b, h, grid, grid, d)  # [B, H, rows, cols, d]
        return out.view(b, h, n, d)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        # unbind, not qk[0] / qk[1]: its backward stacks the two gradients into one buffer, where each
        # select's backward zero-fills a full-size buffer and the two are then added (2 extra passes)
        q, k = self.qk(x).reshape(b, n, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        v = self.v(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def _use_fast(self) -> bool:
        # Attention dropout on the *mixed* matrix cannot be split into the two branches with the same mask,
        # so training with attn_drop > 0 falls back to the reference path (identical sampling semantics).
        return self.fast and not (self.training and self.attn_drop.p > 0)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self._qkv(x)
        if self._use_fast():
            out = self._fast(q, k, v)
        else:
            out = self.attn_drop(self._reference_matrix(q, k)) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def attention_map(self, x: Tensor) -> Tensor:
        """Full attention [B, H, N, N] (post-softmax, post-mix, interventions applied, no dropout)."""
        q, k, _ = self._qkv(x)
        return self._reference_matrix(q, k)

    def _fast(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError

    def _reference_matrix(self, q: Tensor, k: Tensor) -> Tensor:
        raise NotImplementedError


class GPSA(_LocalAttention):
    """Gated positional self-attention (paper Eqs. 6-7; reference 7.1).

    Parameters (timm/official names): ``gating_param`` (raw lambda, [H], init ``gating_init`` = 1),
    ``qk`` (no bias), ``v`` (no bias), ``proj``, ``pos_proj`` (Linear(3, H)). ``train_gating=False`` keeps
    lambda fixed (Table 3 rows b, d use lambda = 0, i.e. sigma = 0.5). :meth:`effective_sigma` gives the
    gate actually used, after the test-time ``mask`` intervention (content -> 1, position -> 0).
    """

    def _make_gate(self, num_heads: int, gating_init: float, train_gating: bool) -> None:
        self.gating_param = nn.Parameter(torch.full((num_heads,), float(gating_init)))
        self.gating_param.requires_grad_(train_gating)

    def effective_sigma(self) -> Tensor:
        """sigma(lambda_h) per head [H], or the constant imposed by a masking intervention."""
        if self.mask == "content":
            return torch.ones_like(self.gating_param)
        if self.mask == "position":
            return torch.zeros_like(self.gating_param)
        return torch.sigmoid(self.gating_param)

    def _fast(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.mask == "position":
            return F.scaled_dot_product_attention(q, k, v)
        pos = self._positional_values(v)
        if self.mask == "content":
            return pos
        s = torch.sigmoid(self.gating_param).to(v.dtype).view(1, -1, 1, 1)
        content = F.scaled_dot_product_attention(q, k, v)
        # (1 - s) * content + s * pos in one fused op. Folding s into P's row factor and mixing with addcmul
        # saves ~3 passes over [B, H, N, d] in backward, but the gate's gradient then comes as the difference
        # of two separately rounded sums, 3x less accurate under bf16 autocast (test_models): not taken.
        return torch.lerp(content, pos, s)

    def _reference_matrix(self, q: Tensor, k: Tensor) -> Tensor:
        b, _, n, _ = q.shape
        content = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        pos = self.positional_attention(n).unsqueeze(0).expand(b, -1, -1, -1)
        s = self.effective_sigma().view(1, -1, 1, 1)
        attn = (1.0 - s) * content + s * pos
        return attn / attn.sum(dim=-1, keepdim=True)


class PSA(_LocalAttention):
    """Vanilla positional self-attention (paper Eq. 4, Fig. 9): one softmax over summed logits.

    A_h = softmax(q k^T / sqrt(d_h) + pos_proj(r)_h). No gate (so no ``gating_param``: this module's
    state_dict is not timm-compatible, by design). Same conv init as GPSA. The fast path passes the
    positional logits to ``scaled_dot_product_attention`` as an additive float mask (broadcast over the
    batch). Interventions: ``mask="content"`` drops the content logits, ``"position"`` the positional ones.
    """

    def _fast(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        n = q.shape[-2]
        if self.mask == "position":
            return F.scaled_dot_product_attention(q, k, v)
        if self.mask == "content":
            return self._positional_values(v)
        bias = self.positional_logits(n).to(q.dtype).unsqueeze(0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    def _reference_matrix(self, q: Tensor, k: Tensor) -> Tensor:
        n = q.shape[-2]
        logits = torch.zeros((), dtype=q.dtype, device=q.device)
        if self.mask != "content":
            logits = (q @ k.transpose(-2, -1)) * self.scale
        if self.mask != "position":
            logits = logits + self.positional_logits(n).unsqueeze(0)
        return logits.softmax(dim=-1)


def is_local_attention(module: nn.Module) -> bool:
    """True for the positional attention modules (GPSA, PSA), False for MHSA / DeiT attention."""
    return isinstance(module, _LocalAttention)


# --------------------------------------------------------------------------------------------------------
# block and shared model base
# --------------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(attn(norm1(x))), then x + DropPath(mlp(norm2(x)))."""

    def __init__(
        self, dim: int, attn: nn.Module, *, mlp_ratio: float = 4.0, drop: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _init_weights(module: nn.Module) -> None:
    """Linear: trunc_normal(0.02), zero bias; LayerNorm: (1, 0). The patch Conv2d keeps PyTorch's init."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def check_common(
    *,
    img_size: int,
    patch_size: int,
    num_heads: int,
    head_dim: int | None,
    embed_dim: int | None,
    depth: int,
    num_classes: int,
    global_pool: str,
    mlp_ratio: float,
) -> int:
    """Validate the options ConViT and DeiT share; return the total width D (raises :class:`ModelError`)."""
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ModelError(f"num_classes must be a non-negative int, got {num_classes!r}")
    if global_pool not in ("token", "avg"):
        raise ModelError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
    if not isinstance(mlp_ratio, (int, float)) or mlp_ratio <= 0:
        raise ModelError(f"mlp_ratio must be positive, got {mlp_ratio!r}")
    for key, value in (("img_size", img_size), ("patch_size", patch_size), ("num_heads", num_heads)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelError(f"{key} must be a positive int, got {value!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ModelError(f"depth must be a positive int, got {depth!r}")
    if img_size % patch_size:
        raise ModelError(f"img_size {img_size} is not divisible by patch_size {patch_size}")
    if embed_dim is not None:
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ModelError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if embed_dim % num_heads:
            raise ModelError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if head_dim is not None and head_dim * num_heads != embed_dim:
            raise ModelError(
                f"embed_dim {embed_dim} != head_dim {head_dim} x num_heads {num_heads}; give only one of them"
            )
        return embed_dim
    if not isinstance(head_dim, int) or head_dim < 1:
        raise ModelError(f"head_dim must be a positive int, got {head_dim!r}")
    return head_dim * num_heads


def check_rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ModelError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


class ZooModel(nn.Module):
    """What every zoo model shares: pooling + head, ``no_weight_decay`` and the test-time interventions.

    Interventions (reference 3.5-3.6) are forward-time switches, not part of the weights:

    * ``mask_pos_embed``: the positional embedding is not added (its whole contribution, including the
      class-token slot of DeiT, is removed; identical to zeroing ``pos_embed``). Table 5.
    * ``mask_content_layers=k``: sigma = 1 (pure positional attention) in the first k local (GPSA/PSA)
      layers; ``mask_position_layers=k``: sigma = 0 (pure content attention) there. Table 6.

    Use :meth:`set_intervention` (replaces the whole state), :meth:`clear_interventions`, or the context
    manager :meth:`intervention` which restores the previous state on exit.
    """

    num_prefix_tokens = 1

    def __init__(self) -> None:
        super().__init__()
        self.mask_pos_embed = False

    # subclasses set: num_classes, embed_dim, num_heads, depth, global_pool, patch_embed, blocks, norm, head

    def no_weight_decay(self) -> set[str]:
        """Parameters exempt from weight decay (the DeiT/ConViT convention)."""
        return {"pos_embed", "cls_token"}

    def local_layers(self) -> list[int]:
        """Indices of the blocks whose attention is positional (GPSA or PSA)."""
        return [i for i, blk in enumerate(self.blocks) if is_local_attention(blk.attn)]

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (fine-tuning / transfer); ``num_classes=0`` gives an identity head."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            _init_weights(self.head)

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool the normalised tokens (class token or mean of patch tokens) and apply the head."""
        if self.global_pool == "avg":
            x = x[:, self._num_prefix_in_output() :].mean(dim=1)
        else:
            x = x[:, 0]
        return x if pre_logits else self.head(x)

    def _num_prefix_in_output(self) -> int:
        return self.num_prefix_tokens

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # --- interventions -----------------------------------------------------------------------------------
    def intervention_state(self) -> dict[str, Any]:
        """The current test-time interventions, in :meth:`set_intervention`'s keywords."""
        masks = [self.blocks[i].attn.mask for i in self.local_layers()]
        return {
            "mask_pos_embed": self.mask_pos_embed,
            "mask_content_layers": sum(m == "content" for m in masks),
            "mask_position_layers": sum(m == "position" for m in masks),
        }

    def set_intervention(
        self, *, mask_pos_embed: bool = False, mask_content_layers: int = 0, mask_position_layers: int = 0
    ) -> None:
        """Set all test-time interventions at once (anything not given is switched off)."""
        local = self.local_layers()
        requested = {"mask_content_layers": mask_content_layers, "mask_position_layers": mask_position_layers}
        for key, k in requested.items():
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= len(local):
                raise ModelError(f"{key} must be an int in [0, {len(local)}] (local layers), got {k!r}")
        if mask_content_layers and mask_position_layers:
            raise ModelError("mask content or position in the first k layers, not both (sigma is 1 or 0)")
        self.mask_pos_embed = bool(mask_pos_embed)
        for rank, i in enumerate(local):
            attn = self.blocks[i].attn
            attn.mask = None
            if rank < mask_content_layers:
                attn.mask = "content"
            elif rank < mask_position_layers:
                attn.mask = "position"

    def clear_interventions(self) -> None:
        """Back to the unmodified model."""
        self.set_intervention()

    @contextlib.contextmanager
    def intervention(self, **kwargs: Any) -> Iterator[ZooModel]:
        """``with model.intervention(mask_content_layers=3): ...`` then restore the previous state."""
        previous = self.intervention_state()
        self.set_intervention(**kwargs)
        try:
            yield self
        finally:
            self.set_intervention(**previous)


# --------------------------------------------------------------------------------------------------------
# ConViT
# --------------------------------------------------------------------------------------------------------
class ConViT(ZooModel):
    """ConViT with every ablation switch of the paper as a constructor option.

    Geometry: ``num_heads`` and ``head_dim`` (per-head width, the paper's D_emb/N_h: 48 for Ti/S/B, 64 for
    "+"); or ``embed_dim`` = the *total* width D (must equal head_dim x num_heads if both are given). Note
    that timm's ``ConVit(embed_dim=...)`` and the official ``--embed_dim`` mean the per-head width, i.e. our
    ``head_dim``.

    Ablations:

    * ``local_up_to_layer``: number of leading positional-attention blocks (10; 0 = none, a DeiT-like ViT
      without qkv bias whose class token joins before block 0; = depth needs ``global_pool="avg"``).
    * ``locality_strength``: alpha of the conv init (scales pos_proj.weight).
    * ``use_conv_init``: False keeps the random (trunc_normal 0.02) init of ``v`` and ``pos_proj``.
    * ``gating_init`` (lambda at init, 1.0) and ``train_gating`` (False freezes lambda at ``gating_init``;
      Table 3 b/d: ``train_gating=False, gating_init=0.0`` so sigma = 0.5).
    * ``freeze_gpsa``: Table 3 rows f/g, "only the FFNs of the first 10 blocks are trained". We freeze the
      whole attention branch of every local block: ``attn.{gating_param, qk, v, pos_proj, proj}`` and, with
      ``freeze_gpsa_norm1=True`` (default), ``norm1`` too, since its affine only feeds the frozen attention;
      ``norm2`` and ``mlp`` train. Frozen tensors get ``requires_grad=False`` (re-apply with
      :meth:`apply_freezing` after anything that resets it). The gate stays at ``gating_init``.
    * ``attention``: ``"gpsa"`` (default) or ``"psa"`` (vanilla PSA, Eq. 4; no gate parameter).
    * ``global_pool``: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens after the final norm).
    * ``fast``: use the batched/SDPA GPSA path (default) or the materialised reference formulation.

    Dropout: ``drop_rate`` is the official meaning (after pos_embed, attention proj and MLP), not timm's
    head dropout; ``attn_drop_rate`` on the mixed attention matrix; ``drop_path_rate`` linear over depth.
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        num_heads: int = 9,
        head_dim: int | None = None,
        embed_dim: int | None = None,
        depth: int = 12,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        local_up_to_layer: int = 10,
        locality_strength: float = 1.0,
        use_conv_init: bool = True,
        attention: str = "gpsa",
        gating_init: float = 1.0,
        train_gating: bool = True,
        freeze_gpsa: bool = False,
        freeze_gpsa_norm1: bool = True,
        fast: bool = True,
    ) -> None:
        super().__init__()
        if head_dim is None and embed_dim is None:
            head_dim = 48
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
        if not isinstance(local_up_to_layer, int) or not 0 <= local_up_to_layer <= depth:
            raise ModelError(
                f"local_up_to_layer must be an int in [0, depth={depth}], got {local_up_to_layer!r}"
            )
        if local_up_to_layer == depth and global_pool == "token":
            raise ModelError(
                "with every block local the class token never joins the sequence; use global_pool='avg' "
                "or local_up_to_layer < depth"
            )
        if attention not in ("gpsa", "psa"):
            raise ModelError(f"attention must be 'gpsa' or 'psa', got {attention!r}")
        if isinstance(locality_strength, bool) or not isinstance(locality_strength, (int, float)):
            raise ModelError(f"locality_strength must be a number, got {locality_strength!r}")
        if not (math.isfinite(locality_strength) and locality_strength >= 0):
            raise ModelError(f"locality_strength must be finite and >= 0, got {locality_strength!r}")
        if use_conv_init and local_up_to_layer > 0 and math.isqrt(num_heads) ** 2 != num_heads:
            raise ModelError(
                f"convolutional init needs a perfect-square num_heads (4, 9, 16, ...), got {num_heads}; "
                "pass use_conv_init=False or change num_heads"
            )
        if isinstance(gating_init, bool) or not isinstance(gating_init, (int, float)):
            raise ModelError(f"gating_init must be a number, got {gating_init!r}")
        drop_rate = check_rate("drop_rate", drop_rate)
        attn_drop_rate = check_rate("attn_drop_rate", attn_drop_rate)
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)

        self.num_classes = num_classes
        self.embed_dim = dim
        self.num_features = dim
        self.num_heads = num_heads
        self.depth = depth
        self.global_pool = global_pool
        self.local_up_to_layer = local_up_to_layer
        self.locality_strength = float(locality_strength)
        self.use_conv_init = use_conv_init
        self.attention = attention
        self.freeze_gpsa = freeze_gpsa
        self.freeze_gpsa_norm1 = freeze_gpsa_norm1
        self.train_gating = train_gating

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim
        )
        grid = img_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linspace, no tensor
        local_cls = GPSA if attention == "gpsa" else PSA
        blocks = []
        for i in range(depth):
            if i < local_up_to_layer:
                attn: nn.Module = local_cls(
                    dim,
                    num_heads,
                    grid_size=grid,
                    attn_drop=attn_drop_rate,
                    proj_drop=drop_rate,
                    locality_strength=float(locality_strength),
                    use_conv_init=use_conv_init,
                    fast=fast,
                    gating_init=float(gating_init),
                    train_gating=train_gating,
                )
            else:
                attn = MHSA(dim, num_heads, qkv_bias=False, attn_drop=attn_drop_rate, proj_drop=drop_rate)
            blocks.append(Block(dim, attn, mlp_ratio=mlp_ratio, drop=drop_rate, drop_path=rates[i]))
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)
        if use_conv_init:
            for i in self.local_layers():
                self.blocks[i].attn.local_init()
        self.apply_freezing()

    @property
    def fast(self) -> bool:
        """Whether the local layers use the fast path (settable; switches every local layer)."""
        return all(self.blocks[i].attn.fast for i in self.local_layers())

    @fast.setter
    def fast(self, value: bool) -> None:
        for i in self.local_layers():
            self.blocks[i].attn.fast = bool(value)

    def apply_freezing(self) -> None:
        """(Re)apply ``train_gating`` / ``freeze_gpsa``: ``requires_grad=False`` on the tensors concerned."""
        for i in self.local_layers():
            blk = self.blocks[i]
            if self.freeze_gpsa:
                blk.attn.requires_grad_(False)
                if self.freeze_gpsa_norm1:
                    blk.norm1.requires_grad_(False)
            elif not self.train_gating and hasattr(blk.attn, "gating_param"):
                blk.attn.gating_param.requires_grad_(False)

    def _num_prefix_in_output(self) -> int:
        return 1 if self.local_up_to_layer < self.depth else 0

    def forward_features(self, x: Tensor) -> Tensor:
        """Tokens after the final norm: [B, 1 + N, D] (class token first), or [B, N, D] if all local."""
        x = self.patch_embed(x)
        if not self.mask_pos_embed:
            x = x + self.pos_embed
        x = self.pos_drop(x)
        for i, blk in enumerate(self.blocks):
            if i == self.local_up_to_layer:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = blk(x)
        return self.norm(x)
