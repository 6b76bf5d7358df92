"""UGA §3.1, intra-camera learning: the multi-branch classifier (one softmax per camera branch, all branches
rows of one (M, D) weight matrix) and the per-camera cross-entropy (Eqs. 1-2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def branch_columns(branch_of_tracklet: Tensor, num_branches: int) -> tuple[Tensor, Tensor]:
    """(T, max M_t) tracklet ids of each branch, padded with 0, and the mask of real entries."""
    counts = torch.bincount(branch_of_tracklet, minlength=num_branches)
    order = torch.argsort(branch_of_tracklet, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    branch = branch_of_tracklet[order]
    position = torch.arange(order.numel(), device=order.device) - starts[branch]
    columns = torch.zeros(num_branches, int(counts.max()), dtype=torch.long, device=order.device)
    valid = torch.zeros_like(columns, dtype=torch.bool)
    columns[branch, position] = order
    valid[branch, position] = True
    return columns, valid


def class_logits(features: Tensor, weights: Tensor, mode: str, scale: float) -> Tensor:
    """(B, M) logits against every tracklet: W^T φ (linear / raw) or s · cos(W, φ) (cosine)."""
    if mode in ("linear", "raw"):
        return features @ weights.t()
    return scale * (F.normalize(features, dim=1) @ F.normalize(weights, dim=1).t())


def branch_logsumexp(logits: Tensor, columns: Tensor, valid: Tensor) -> Tensor:
    """(B, T) log-partition of every camera branch: the softmax of Eqs. 1 and 7 runs over one camera only."""
    z = logits.float()[:, columns].masked_fill(~valid, float("-inf"))  # (B, T, max M_t)
    return torch.logsumexp(z, dim=2)


def intra_camera_loss(logits: Tensor, tracklet: Tensor, branch_of_tracklet: Tensor, columns: Tensor,
                      valid: Tensor) -> Tensor:
    """Per-image CE through its own camera's branch, target = its tracklet (Eq. 1); Eq. 2 is the mean."""
    lse = branch_logsumexp(logits, columns, valid)
    own = branch_of_tracklet[tracklet]
    return lse.gather(1, own[:, None]).squeeze(1) - logits.float().gather(1, tracklet[:, None]).squeeze(1)
