"""UGA §3.2, inter-camera learning: tracklet centres (Eq. 3), which replace the classifier weights, and the
graph-weighted cross-camera loss with the self-camera term (Eqs. 7-9); the centres are then trained by
ordinary gradient descent (Eqs. 10-12 with the sign fixed, spec §5)."""

from __future__ import annotations

import torch
from torch import Tensor

from mprd.methods.uga.cvg import CrossViewGraph
from mprd.methods.uga.intra_camera import branch_logsumexp


def tracklet_centres(features: Tensor, tracklet: Tensor, num_tracklets: int) -> Tensor:
    """c_t^i = mean of the features of the tracklet's images (Eq. 3), (M, D)."""
    sums = torch.zeros(num_tracklets, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, tracklet, features)
    counts = torch.bincount(tracklet, minlength=num_tracklets).clamp(min=1).to(features)
    return sums / counts[:, None]


def inter_camera_loss(logits: Tensor, tracklet: Tensor, branch_of_tracklet: Tensor, graph: CrossViewGraph,
                      columns: Tensor, valid: Tensor, *, self_weight: float = 1.0, uniform: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """Eq. 8 per image of tracklet s, as (self term, cross term):

    self = α ℓ_ce(I, s) and cross = Σ_{a ∈ N(s) \\ s} e(c_s, c_a) ℓ_ce(I, a), each ℓ_ce (Eq. 7) a softmax over
    the target's own camera; `uniform` uses e = 1 (Eq. 7). Eq. 9 is the batch mean of their sum.
    """
    z = logits.float()
    lse = branch_logsumexp(z, columns, valid)  # (B, T)
    own = branch_of_tracklet[tracklet]
    self_term = self_weight * (lse.gather(1, own[:, None]).squeeze(1) - z.gather(1, tracklet[:, None]).squeeze(1))
    nb = graph.neighbors[tracklet]  # (B, T, K): slot m holds neighbours in camera m
    has = nb >= 0
    weight = has.to(z) if uniform else graph.weights[tracklet].to(z)
    target = z.gather(1, nb.clamp(min=0).flatten(1)).view_as(nb).to(z)
    ce = lse[:, :, None] - target
    cross = torch.where(has, weight * ce, torch.zeros_like(ce)).sum(dim=(1, 2))
    return self_term, cross
