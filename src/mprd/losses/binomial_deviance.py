"""Binomial-deviance loss against the memory (MPRD Eq. 2, corrected bracketing) with hard negatives (Eq. 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mprd.pseudo_labels.positive_sets import PositiveSets


def memory_scores(features: Tensor, memory: Tensor) -> Tensor:
    """s_ij = <f_i, M[j]> (B x N) in fp32 whatever autocast says (gradient reaches `features`).

    Under bf16/fp16 autocast the matmul would round s_ij to 8 (bf16) or 11 (fp16) bits: an error of up to
    ~4e-3 (bf16) near s = 1, the size of the gaps between the hard-negative candidates that Eq. 3 ranks and
    comparable to what α(s − λ) is meant to resolve. One B x N x d product in fp32 is cheap next to the body.
    """
    dtype = torch.promote_types(torch.promote_types(features.dtype, memory.dtype), torch.float32)  # fp64 stays
    with torch.autocast(device_type=features.device.type, enabled=False):
        return features.to(dtype) @ memory.detach().to(dtype).T


def num_hard_negatives(num_slots: int, positive_sizes: Tensor, ratio: float = 0.01) -> Tensor:
    """r_i = max(1, ⌊ratio · (N − |P_i|)⌋) (MPRD spec ambiguity 4, MLCR's definition); 0 when no negative exists."""
    negatives = (num_slots - positive_sizes).long()
    r = torch.floor(ratio * negatives.double() + 1e-9).long()
    return torch.where(negatives > 0, r.clamp(min=1), torch.zeros_like(r))


def hard_negative_mask(scores: Tensor, positive_mask: Tensor, r: Tensor) -> Tensor:
    """Eq. 3: N*_i = the r_i non-positive slots most similar to the current feature (B x N bool)."""
    ranked = scores.detach().masked_fill(positive_mask, float("-inf"))
    r_max = int(r.max())
    if r_max == 0:
        return torch.zeros_like(positive_mask)
    top = torch.topk(ranked, r_max, dim=1).indices
    keep = torch.arange(r_max, device=scores.device).unsqueeze(0) < r.to(scores.device).unsqueeze(1)
    mask = torch.zeros_like(positive_mask)
    rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(top)
    mask[rows[keep], top[keep]] = True
    return mask


def binomial_deviance_loss(
    features: Tensor,
    memory: Tensor,
    batch_index: Tensor,
    positives: PositiveSets,
    *,
    delta: float = 5.0,
    alpha: float = 4.0,
    margin_pos: float = 0.2,
    margin_neg: float = 0.2,
    neg_ratio: float = 0.01,
    exclude_slots: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 2: 1/n Σ_i [ δ/|P_i| Σ_{P_i} ζ(α(λ1 − s_ij)) + 1/|N*_i| Σ_{N*_i} ζ(α(s_ij − λ2)) ], ζ = softplus.

    `features` (B x d) are the L2-normalised current features (with grad); `memory` (N x d) is M̃
    (no grad). `exclude_slots` (N bool) removes slots from every P_i and N*_i (MPRD's "X without the meta
    images" reading; the caller drops those anchors). Returns the loss and its two terms (batch means).
    """
    memory = memory.detach()
    scores = memory_scores(features, memory)  # s_ij = <F̃(x_i), M̃[j]>, fp32 (so are the margins and the ranking)
    pos_mask = positives.batch_mask(batch_index, memory.shape[0], device=scores.device)
    num = memory.shape[0]
    if exclude_slots is not None:
        excluded = exclude_slots.to(scores.device).bool()
        pos_mask &= ~excluded
        num -= int(excluded.sum())
        # excluded slots rank as positives do (never a hard negative); they are off the positive mask
        blocked = pos_mask | excluded
    else:
        blocked = pos_mask
    pos_size = pos_mask.sum(1)
    r = num_hard_negatives(num, pos_size, neg_ratio)
    neg_mask = hard_negative_mask(scores, blocked, r)
    pos_term = (F.softplus(alpha * (margin_pos - scores)) * pos_mask).sum(1) / pos_size.clamp(min=1)
    neg_term = (F.softplus(alpha * (scores - margin_neg)) * neg_mask).sum(1) / neg_mask.sum(1).clamp(min=1)
    loss = (delta * pos_term + neg_term).mean()
    return loss, {"loss_pos": pos_term.mean().detach(), "loss_neg": neg_term.mean().detach()}
