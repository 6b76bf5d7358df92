"""MMCL: Memory-based Multi-label Classification Loss (MLCR Eqs. 16-17), vectorised over the batch.

Per anchor i (batch image, memory slot `batch_index[i]`), with scores c_ij = <f_i, M[j]> (Eq. 3):
    l_i = δ/|P*_i| Σ_{p ∈ P*_i} (c_ip − 1)²  +  1/|N_i| Σ_{s ∈ N_i} (c_is + 1)²          (Eqs. 16-17)
N_i = the |N_i| = max(1, ⌊r · (N − |P*_i|)⌋) negatives with the highest current score c_ij (spec
ambiguity 7; the max(1, ·) only matters when r · #negatives < 1). The loss is the batch mean of l_i
(spec ambiguity 8). The memory is a constant: gradients reach only `features` (spec item 18).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mprd.core.positive_sets import PositiveSets
from mprd.methods.mprd.losses import memory_scores


def hard_negative_counts(num_negatives: Tensor, r: float) -> Tensor:
    """|N_i| = max(1, ⌊r · n_neg⌋) for n_neg > 0, else 0.

    The 1e-9 guards the floor against binary rounding (0.29 · 100 = 28.999…); for r = 0.01 it equals the
    release's int(r · n) for every n below 40,000.
    """
    count = torch.floor(num_negatives.double() * r + 1e-9).long()
    count = torch.clamp(count, min=1)
    return torch.where(num_negatives > 0, count, torch.zeros_like(count))


def _check_args(features: Tensor, memory: Tensor, batch_index: Tensor, positives: PositiveSets, r: float) -> None:
    if features.dim() != 2 or memory.dim() != 2 or features.shape[1] != memory.shape[1]:
        raise ValueError(
            f"mmcl_loss: expected features (B, d) and memory (N, d), got {tuple(features.shape)} and "
            f"{tuple(memory.shape)}"
        )
    if batch_index.numel() != features.shape[0]:
        raise ValueError(f"mmcl_loss: batch_index has {batch_index.numel()} entries for {features.shape[0]} features")
    if len(positives) != memory.shape[0]:
        raise ValueError(f"mmcl_loss: positives cover {len(positives)} slots but the memory has {memory.shape[0]}")
    if not (0.0 < r <= 1.0) or math.isnan(r):
        raise ValueError(f"mmcl_loss: r is the hard-negative fraction in (0, 1] (1 % = 0.01), got {r}")


def mmcl_terms(
    features: Tensor, memory: Tensor, batch_index: Tensor, positives: PositiveSets, r: float = 0.01
) -> tuple[Tensor, Tensor]:
    """Per-anchor terms of Eq. 17, each (B,): mean (c − 1)² over P*_i and mean (c + 1)² over N_i."""
    _check_args(features, memory, batch_index, positives, r)
    scores = memory_scores(features, memory)  # (B, N) classification scores, Eq. 3; fp32 under autocast too
    pos_mask = positives.batch_mask(batch_index, memory.shape[0], device=scores.device)
    pos_size = pos_mask.sum(dim=1)
    pos_term = ((scores - 1).pow(2) * pos_mask).sum(dim=1) / pos_size.clamp(min=1)

    hard = hard_negative_counts(memory.shape[0] - pos_size, r)
    h_max = int(hard.max())
    if h_max == 0:  # every slot is positive for every anchor: no negative term
        return pos_term, torch.zeros_like(pos_term)
    # rank negatives by the current score (spec §3.3), positives pushed below every negative
    ranked = scores.detach().masked_fill(pos_mask, float("-inf"))
    top = torch.topk(ranked, h_max, dim=1).indices
    in_n = torch.arange(h_max, device=scores.device).unsqueeze(0) < hard.unsqueeze(1)
    neg_scores = scores.gather(1, top)
    neg_term = ((neg_scores + 1).pow(2) * in_n).sum(dim=1) / hard.clamp(min=1)
    return pos_term, neg_term


def mmcl_loss(
    features: Tensor,
    memory: Tensor,
    batch_index: Tensor,
    positives: PositiveSets,
    delta: float = 5.0,
    r: float = 0.01,
) -> Tensor:
    """Eq. 17 averaged over the batch: mean_i [δ · pos_i + neg_i] (terms from `mmcl_terms`).

    `features` (B x d): L2-normalised current features (with grad); `memory` (N x d): the bank before this
    batch's write (treated as a constant); `positives`: P*_i for all N slots (row i contains i).
    """
    pos_term, neg_term = mmcl_terms(features, memory, batch_index, positives, r)
    return (delta * pos_term + neg_term).mean()
