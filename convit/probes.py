"""Locality probes: attention maps, nonlocality (Eq. 8), gating sigma(lambda), attention-centre distances.

These are the quantities behind the paper's Figs. 5-7 and 14-17 and the per-epoch ``log.txt`` entries of the
original code (reference sections 4.1-4.3). The engine calls :func:`locality_probes` once per epoch on a fixed
validation batch, so everything here is read-only with respect to the model: it switches to eval mode, runs
under ``torch.no_grad`` in fp32, and restores the training flag and removes its hooks before returning, even
on error. Nothing in this module is on the training path: the model's own forward is untouched and hooks
exist only for the duration of one probe call, so probing costs nothing when it is off.

Two ways to feed the attention modules (``mode``):

- ``"propagated"``: the real forward runs and each block's attention module is evaluated on the very input its
  forward received (after the previous blocks and ``norm1``). This is Eq. 8 as written, and how the paper
  obtained Fig. 7.
- ``"patch_embed"``: the original code's logging path (its issue #23): ``model.patch_embed(images)``, with no
  positional embedding, no norm, no previous blocks and no class token, is fed to *every* block's attention
  module. Kept because Fig. 5 may have been drawn from it.

Conventions (reference sections 4.1, 4.2, 7.2): tokens are the patches of a ``(rows, cols)`` grid flattened
row-major, plus optional prefix tokens (the class token) at the front; ``delta_ij`` is the offset, in patch
units, from query patch ``i`` to key patch ``j``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MAX_MAP_BYTES",
    "MODES",
    "attention_maps",
    "centre_distances",
    "gate_sigma",
    "local_attention_modules",
    "locality_probes",
    "nonlocality",
    "patch_distances",
    "probe_chunk",
    "positional_attention",
    "relative_positions",
]

#: the two ways of feeding the attention modules (see the module docstring and ``convit.spec.ProbeSpec``).
MODES = ("propagated", "patch_embed")

#: default bound on the bytes of one block's fp32 [b, H, N, N] attention map in :func:`locality_probes`: the
#: probe batch is split into chunks of images whose map fits (issue 15). A paper-scale probe (ConViT-B, 16
#: heads, 197 tokens, 2.5 MB per image) of 1000 images would otherwise hold ~2.5 GB per map, several times
#: over in GPSA's reference matrix; at cpu scale (small grids, 64 images) the batch is one chunk.
MAX_MAP_BYTES = 64 * 2**20

Grid = int | Sequence[int]


# ----------------------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------------------
def _grid(grid: Grid) -> tuple[int, int]:
    if isinstance(grid, int):
        return grid, grid
    rows, cols = (int(g) for g in grid)
    return rows, cols


def relative_positions(grid: Grid, device: torch.device | str | None = None) -> Tensor:
    """Relative encodings ``r_ij = (dx, dy, dx^2 + dy^2)`` of every (query, key) patch pair, shape [L, L, 3].

    Same channel order as the original ``get_rel_indices`` (reference 7.2: column offset, row offset, squared
    distance; delta = key - query), so ``pos_proj(relative_positions(grid))`` gives GPSA's positional logits.
    Built here rather than read from the model so the probes do not depend on how the zoo caches it.
    """
    rows, cols = _grid(grid)
    r = torch.arange(rows, device=device, dtype=torch.float32).repeat_interleave(cols)
    c = torch.arange(cols, device=device, dtype=torch.float32).repeat(rows)
    dx = c[None, :] - c[:, None]
    dy = r[None, :] - r[:, None]
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1)


def patch_distances(grid: Grid, device: torch.device | str | None = None) -> Tensor:
    """Distances ``||delta_ij||`` between all patch pairs of the grid, in patch units, shape [L, L]."""
    return relative_positions(grid, device)[..., 2].sqrt()


def positional_attention(attn: nn.Module, grid: Grid) -> Tensor:
    """The purely positional attention ``softmax_j(pos_proj(r_ij))`` of a GPSA module, shape [H, L, L].

    Computed from ``attn.pos_proj`` alone (no content, no gating), so it is what the head would attend to at
    sigma(lambda) = 1. Used for the section 4.1 reference values and for plotting the learned positional
    kernels.
    """
    proj: nn.Linear = attn.pos_proj
    rel = relative_positions(grid, proj.weight.device).to(proj.weight.dtype)
    with torch.no_grad():
        return proj(rel).permute(2, 0, 1).softmax(dim=-1)


# ----------------------------------------------------------------------------------------------------
# Eq. 8
# ----------------------------------------------------------------------------------------------------
def nonlocality(attn: Tensor, grid: Grid, *, renormalize: bool = False) -> Tensor:
    """Per-head nonlocality of Eq. 8, ``D_h = (1/L) sum_ij A_ij ||delta_ij||``, averaged over the batch: [H].

    ``attn`` is [B, H, N, N] or [H, N, N] (rows = queries, post-softmax). When N exceeds the number of patches
    L = rows x cols, the first ``N - L`` tokens are prefix tokens (the class token, at index 0 in both our
    ConViT MHSA blocks and DeiT) and are excluded: the sum runs over the patch-query / patch-key block only.

    Attention mass that a patch query puts on the class token is, by default, *left out as is* (the patch-key
    part is not renormalised). The class token has no position, so that mass contributes no distance; this
    is the literal Eq. 8 restricted to patch pairs, and it equals the original code's value whenever there is
    no class token (GPSA blocks, and every block in ``patch_embed`` mode). With ``renormalize=True`` each
    query row is rescaled to sum to one over patch keys instead, i.e. the mean distance *given* that the head
    attends to a patch. The batch mean is taken last; Eq. 8 is linear in A so the order does not matter.
    """
    rows, cols = _grid(grid)
    n_patches = rows * cols
    if attn.dim() == 3:
        attn = attn.unsqueeze(0)
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attention must be [B, H, N, N] or [H, N, N], got {tuple(attn.shape)}")
    n = attn.shape[-1]
    if n < n_patches:
        raise ValueError(f"{n} tokens cannot hold a {rows}x{cols} patch grid")
    prefix = n - n_patches
    a = attn[..., prefix:, prefix:].float()
    if renormalize:
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    dist = patch_distances((rows, cols), a.device)
    # mean over batch of (1/L) sum_ij A_ij d_ij
    return torch.einsum("bhij,ij->h", a, dist) / (n_patches * a.shape[0])


# ----------------------------------------------------------------------------------------------------
# parameters: gating and attention centres
# ----------------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module behind DDP / torch.compile wrappers (probes must not trigger their machinery)."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        else:
            return model


def _is_local(attn: nn.Module) -> bool:
    return hasattr(attn, "pos_proj")


def local_attention_modules(model: nn.Module) -> list[nn.Module]:
    """The positional (GPSA, or PSA in the Fig. 9 ablation) attention modules in block order; empty for DeiT.

    Recognised by their ``pos_proj`` (the zoo contract), so timm's ``ConVit`` works too.
    """
    return [b.attn for b in _unwrap(model).blocks if _is_local(b.attn)]


def _effective_sigma(attn: nn.Module) -> Tensor:
    """sigma(lambda_h) as the module actually applies it, [H].

    Uses the zoo's ``effective_sigma()`` (frozen gating at a fixed lambda, Table 6 content/position masking)
    when present, else sigmoid of the raw ``gating_param`` (timm). A layer without a gate (vanilla PSA)
    gives NaN: position and content are not mixed by a gate there.
    """
    effective = getattr(attn, "effective_sigma", None)
    if callable(effective):
        return effective().detach().float().reshape(-1)
    gating = getattr(attn, "gating_param", None)
    if gating is not None:
        return torch.sigmoid(gating.detach().float()).reshape(-1)
    return torch.full((attn.pos_proj.out_features,), math.nan)


def gate_sigma(model: nn.Module) -> list[list[float]]:
    """sigma(lambda_h) per GPSA layer, per head: the share of attention given to position (Figs. 6, 14, 17).

    The original code logs the raw lambda (``gating_params_{l}``); the paper plots sigma(lambda), which is
    what we log. Honours the zoo's effective gate (frozen gating, masking interventions). Layers are the
    model's positional-attention layers in block order (NaN per head for gateless PSA layers).
    """
    with torch.no_grad():
        return [_effective_sigma(attn).cpu().tolist() for attn in local_attention_modules(model)]


def centre_distances(model: nn.Module) -> list[list[float]]:
    """||Delta_h||, the distance from the query to each head's attention centre, per GPSA layer, per head.

    From the ``pos_proj`` weight rows w as in the original code (reference 4.2): ``span = -1 / w[:, 2]`` and
    ``Delta = (w[:, 0], w[:, 1]) * span / 2`` (the maximum of the quadratic positional logit). At the local
    init this gives 0 / 1 / 1.414 for 9 heads, 0.707 for 4 heads and 0.707 / 1.581 / 2.121 for 16 heads,
    whatever alpha. When ``w[:, 2] >= 0`` the logit has no maximum (the head attends to the far field) and
    the centre is undefined: we return NaN there instead of the original code's negative/infinite values.
    """
    out = []
    with torch.no_grad():
        for attn in local_attention_modules(model):
            w = attn.pos_proj.weight.detach().double()
            curvature = w[:, 2]
            span = torch.where(curvature < 0, -1.0 / curvature, torch.full_like(curvature, math.nan))
            delta = w[:, :2] * (span / 2).unsqueeze(-1)
            out.append(delta.norm(dim=-1).float().cpu().tolist())
    return out


# ----------------------------------------------------------------------------------------------------
# running the attention modules
# ----------------------------------------------------------------------------------------------------
@contextmanager
def _probe_context(model: nn.Module, images: Tensor) -> Iterator[Tensor]:
    """Eval mode, no grad, fp32 (any outer autocast disabled); the training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device_type=images.device.type, enabled=False):
            yield images.float()
    finally:
        model.train(was_training)


def _grid_of(model: nn.Module, n_tokens: int) -> tuple[int, int]:
    """The patch grid: ``patch_embed.grid_size`` when available, else a square root of the token count."""
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None:
        return _grid(tuple(grid))
    side = math.isqrt(n_tokens)  # the excess over a square is prefix tokens (class token)
    if n_tokens - side * side > 8:
        raise ValueError(f"cannot infer a square patch grid from {n_tokens} tokens")
    return side, side


def _run_attention(
    model: nn.Module, images: Tensor, mode: str, fn: Callable[[int, nn.Module, Tensor], Any]
) -> list[Any]:
    """Call ``fn(block_index, attn_module, attn_input)`` for every block; return the results in block order.

    In ``propagated`` mode a forward pre-hook on each ``block.attn`` hands ``fn`` the exact input of the
    attention module during one real forward; the hooks are removed in ``finally``. ``fn`` runs inside the
    hook so each block's [B, H, N, N] map can be reduced and freed before the next block (memory stays at
    one map).
    """
    if mode not in MODES:
        raise ValueError(f"probe mode must be one of {MODES}, got {mode!r}")
    blocks = list(model.blocks)
    results: list[Any] = [None] * len(blocks)
    if mode == "patch_embed":
        x = model.patch_embed(images)
        if x.dim() == 4:  # NHWC patch embeddings (timm's flatten=False); tokens are row-major either way
            x = x.flatten(1, 2)
        for i, block in enumerate(blocks):
            results[i] = fn(i, block.attn, x)
        return results

    handles = []
    busy = [False]  # guards against re-entry if attention_map itself calls the module's forward

    def make_hook(i: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if busy[0]:
                return
            busy[0] = True
            try:
                results[i] = fn(i, module, args[0])
            finally:
                busy[0] = False

        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(block.attn.register_forward_pre_hook(make_hook(i)))
        features = getattr(model, "forward_features", None)
        (features if callable(features) else model)(images)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"the forward did not call the attention module of blocks {missing}")
    return results


def attention_maps(model: nn.Module, images: Tensor, mode: str = "propagated") -> list[Tensor]:
    """Per-block post-softmax (post-gating for GPSA) attention maps, each [B, H, N, N], fp32.

    N is the token count the block sees: patches only for ConViT's GPSA blocks and for every block in
    ``patch_embed`` mode, patches + class token (index 0) for MHSA/DeiT blocks in ``propagated`` mode. For a
    batch of B images this holds ``depth * B * H * N^2`` floats; use :func:`locality_probes` for the reduced
    numbers. The model's training flag is restored afterwards.
    """
    model = _unwrap(model)
    with _probe_context(model, images) as x:
        return _run_attention(model, x, mode, lambda i, attn, inp: attn.attention_map(inp).float())


def probe_chunk(model: nn.Module, batch: int, max_map_bytes: int | None = MAX_MAP_BYTES) -> int:
    """Images per chunk such that one block's fp32 attention map of a chunk stays within ``max_map_bytes``.

    Per image a block's map is H x N x N floats, N = patches + prefix tokens (the class token of the MHSA
    blocks); the bound uses the largest H of the model. At least one image; the whole batch when
    ``max_map_bytes`` is None or the model's geometry is unknown (no ``patch_embed.grid_size``).
    """
    model = _unwrap(model)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if max_map_bytes is None or grid is None:
        return batch
    rows, cols = _grid(tuple(grid))
    tokens = rows * cols + int(getattr(model, "num_prefix_tokens", 1))
    heads = max((int(getattr(b.attn, "num_heads", 1)) for b in model.blocks), default=1)
    per_image = heads * tokens * tokens * 4
    return max(1, min(batch, max_map_bytes // per_image))


def locality_probes(
    model: nn.Module, images: Tensor, mode: str = "propagated", *, max_map_bytes: int | None = MAX_MAP_BYTES
) -> dict[str, list[list[float]]]:
    """Everything the engine logs per epoch, as plain lists (JSON-ready).

    Returns ``{"nonlocality": [[D_h for each head] for each block], "gate_sigma": [[sigma(lambda_h)] per GPSA
    layer], "centre_distance": [[||Delta_h||] per GPSA layer]}``; the last two are empty lists for models
    without GPSA (DeiT). Nonlocality follows :func:`nonlocality` (class token excluded, its mass not
    renormalised). One forward of the batch plus one attention map per block, reduced as it is produced.

    Memory: the batch runs in chunks of :func:`probe_chunk` images (one block's map within
    ``max_map_bytes``; ``None``: one chunk), so the peak does not grow with the probe batch. Nonlocality is
    a batch mean, linear in the maps, so the chunks' means weighted by their sizes give the same number up
    to fp32 rounding (accumulated in float64); a batch that fits one chunk takes the unchunked path
    exactly. In eval mode each image's forward is independent of the others (no batch statistics).
    """
    model = _unwrap(model)
    chunk = probe_chunk(model, images.shape[0], max_map_bytes)
    with _probe_context(model, images) as x:

        def reduce(i: int, attn: nn.Module, inp: Tensor) -> Tensor:
            amap = attn.attention_map(inp)
            n_tokens = amap.shape[-1]
            grid = _grid_of(model, n_tokens)
            return nonlocality(amap, grid)

        if chunk >= x.shape[0]:
            nonloc = [d.cpu().tolist() for d in _run_attention(model, x, mode, reduce)]
        else:
            sums: list[Tensor] | None = None
            for part in x.split(chunk):
                means = _run_attention(model, part, mode, reduce)
                weighted = [m.double() * part.shape[0] for m in means]
                sums = weighted if sums is None else [a + w for a, w in zip(sums, weighted, strict=True)]
                del means, weighted
            assert sums is not None
            nonloc = [(total / x.shape[0]).float().cpu().tolist() for total in sums]
    return {
        "nonlocality": nonloc,
        "gate_sigma": gate_sigma(model),
        "centre_distance": centre_distances(model),
    }
