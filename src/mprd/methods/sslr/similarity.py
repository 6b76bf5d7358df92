"""SSLR §3.3, similarity estimation with auxiliary information: part features and the part distance
(Eq. 5), the cross-camera encouragement (Eq. 6), the overall dissimilarity D (Eq. 7) and, from D, each
image's reliable set (its k smallest-D images, §3.2), computed in row blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mprd.core.neighbors import knn


def part_features(feature_map: Tensor, parts: int) -> Tensor:
    """p horizontal stripes of a (B, C, H, W) map, average-pooled and L2-normalised -> (B, p, C) (Eq. 5).

    Adaptive pooling, so any p works (Fig. 4(f) sweeps 1..10); p = 1 is the normalised pool-5 feature.
    """
    if parts < 1:
        raise ValueError(f"method.similarity.parts={parts}: expected >= 1 horizontal stripes")
    pooled = F.adaptive_avg_pool2d(feature_map, (parts, 1)).squeeze(-1)  # (B, C, p)
    return F.normalize(pooled.transpose(1, 2), dim=2)


def _euclidean_into(out: Tensor, a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """out <- ||a_r - b_c|| for all (r, c), from one matmul, in place (no extra b x N buffer)."""
    torch.mm(a, b.T, out=out)
    return out.mul_(-2.0).add_(a_sq.unsqueeze(1)).add_(b_sq.unsqueeze(0)).clamp_(min=0.0).sqrt_()


def add_part_distance_(out: Tensor, start: int, stop: int, part_feats: Tensor, part_sq: Tensor,
                       weight: float) -> None:
    """out += weight d_part (Eq. 5) for rows [start, stop): the mean Euclidean distance of corresponding parts.

    One (b x N) matmul per stripe, accumulated in place; each stripe of `part_feats` (N, p, C) is upcast to
    `out`'s dtype for its matmul (float16 storage halves the memory; `.to()` is a no-op for fp32), so one
    (N x C) upcast copy lives at a time.
    """
    parts = part_feats.shape[1]
    tmp = torch.empty_like(out)
    for i in range(parts):
        _euclidean_into(tmp, part_feats[start:stop, i].to(out.dtype), part_feats[:, i].to(out.dtype),
                        part_sq[start:stop, i], part_sq[:, i])
        out.add_(tmp, alpha=weight / parts)
    del tmp


def add_cce_(out: Tensor, start: int, stop: int, camids: Tensor, lambda_c: float) -> None:
    """out += CCE (Eq. 6) for rows [start, stop): lambda_c on same-camera pairs, 0 across cameras.

    An in-place rank-(#cameras) update lambda_c 1[c_a = c_b]: no (b x N) mask or copy.
    """
    onehot = F.one_hot(torch.unique(camids, return_inverse=True)[1]).to(out.dtype)  # (N, #cameras), exact 0/1
    out.addmm_(onehot[start:stop], onehot.T, alpha=lambda_c)


def dissimilarity_rows(
    start: int,
    stop: int,
    global_feats: Tensor,
    part_feats: Tensor | None,
    camids: Tensor,
    lambda_p: float,
    lambda_c: float,
    squared_norms: tuple[Tensor, Tensor | None] | None = None,
) -> Tensor:
    """Rows [start, stop) of D (Eq. 7) against all N images, (stop - start, N).

    D = (1 - lambda_p) d + lambda_p d_part + CCE: d is the Euclidean distance of the global features,
    d_part (Eq. 5, `add_part_distance_`) that of the parts (`part_feats` (N, p, C), float16 allowed), CCE
    (Eq. 6, `add_cce_`) adds lambda_c to same-camera pairs. `squared_norms`: precomputed
    `_squared_norms(global_feats, part_feats)` (computed here when None).
    """
    g = global_feats
    g_sq, p_sq = squared_norms if squared_norms is not None else _squared_norms(global_feats, part_feats)
    out = torch.empty(stop - start, g.shape[0], device=g.device, dtype=g.dtype)
    _euclidean_into(out, g[start:stop], g, g_sq[start:stop], g_sq)
    if part_feats is not None and lambda_p > 0:
        assert p_sq is not None
        out.mul_(1.0 - lambda_p)
        add_part_distance_(out, start, stop, part_feats, p_sq, lambda_p)
    if lambda_c:
        add_cce_(out, start, stop, camids, lambda_c)
    return out


def _squared_norms(global_feats: Tensor, part_feats: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """||g_i||^2 (N,) and ||part_i^s||^2 (N, p): exact distances even for an all-zero (unnormalisable) row.

    Part norms are taken stripe by stripe in the global dtype (of the stored values, fp16 included): never an
    N x p x C temporary."""
    dtype = global_feats.dtype
    parts = None
    if part_feats is not None:
        parts = torch.stack([torch.linalg.vector_norm(part_feats[:, i].to(dtype), dim=1)
                             for i in range(part_feats.shape[1])], dim=1).square_()
    return torch.linalg.vector_norm(global_feats, dim=1).square_(), parts


def default_block_rows(num: int, budget_elements: int = 2**26) -> int:
    """Rows per block so one (rows x N) fp32 buffer stays near 256 MB (3 buffers live at once)."""
    return max(1, min(num, budget_elements // max(num, 1)))


@torch.no_grad()
def reliable_sets(
    global_feats: Tensor,
    part_feats: Tensor | None,
    camids: Tensor,
    k: int,
    *,
    lambda_p: float = 0.5,
    lambda_c: float = 0.02,
    block_rows: int | None = None,
) -> Tensor:
    """X_i^reliable for every i: the k images with the smallest D(x_i, .) (Eq. 7), self excluded -> (N, k).

    Sorted by increasing D. Computed in row blocks, never an N x N matrix. Without part and camera terms
    D is the global Euclidean distance, whose order on unit vectors is the cosine order: the suite's kNN.
    Memory: the features, 2-3 (block x N) buffers and, for float16 parts, one upcast (N x C) stripe; at
    MSMT17 scale (N = 32,621, p = 8, C = 2048) float16 parts halve the 2.1 GB of fp32 part features.
    """
    num = global_feats.shape[0]
    if not 1 <= k < num:
        raise ValueError(f"method.soft.k={k}: expected 1 <= k < N = {num} (the reliable set excludes the image)")
    if camids.numel() != num:
        raise ValueError(f"reliable_sets: {camids.numel()} camera ids for {num} features")
    use_parts = part_feats is not None and lambda_p > 0
    if not use_parts and lambda_c == 0:
        backend = "torch" if global_feats.is_cuda else "auto"
        return knn(global_feats, global_feats, k, exclude_self=True, backend=backend)[1]
    block = block_rows or default_block_rows(num)
    camids = camids.to(global_feats.device)
    parts = part_feats if use_parts else None
    norms = _squared_norms(global_feats, parts)
    out = torch.empty(num, k, dtype=torch.long, device=global_feats.device)
    for start in range(0, num, block):
        stop = min(start + block, num)
        d = dissimilarity_rows(start, stop, global_feats, parts, camids, lambda_p, lambda_c, norms)
        rows = torch.arange(stop - start, device=d.device)
        d[rows, rows + start] = math.inf  # the image itself is never its own reliable image
        out[start:stop] = torch.topk(d, k, dim=1, largest=False).indices
        del d  # else the old block stays alive while the next one is built
    return out
