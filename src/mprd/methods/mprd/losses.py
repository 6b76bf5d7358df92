"""MPRD's losses: the CNN's binomial deviance against the memory (Eq. 2, corrected bracketing) with hard
negatives (Eq. 3), and the GCN's per-anchor balanced BCE (Eq. 6, corrected) mixed by η (Eq. 10).

Eq. 6 as printed has (1 − log g) in the negative term; the spec (§3.6, fix 1) restores log(1 − g):
    L = −1/n' Σ_i [ 1/|P_g^i| Σ_{G_ij ∈ P_g^i} log g_ij + 1/|N_g^i| Σ_{G_ij ∈ N_g^i} log(1 − g_ij) ]
n' counts the anchors present in the batch; an anchor without positives (negatives) skips that term.
Log-probabilities use logsigmoid on the logits: log g = logsigmoid(x), log(1 − g) = logsigmoid(−x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mprd.core.positive_sets import PositiveSets


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


# ------------------------------------------------------------------------------ GCN loss (Eqs. 6, 10)


def _check(logits: Tensor, labels: Tensor, anchor: Tensor) -> None:
    if logits.dim() != 1 or labels.shape != logits.shape or anchor.shape != logits.shape:
        raise ValueError(
            f"gcn loss: logits, labels and anchor must be 1-D of equal length, got "
            f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(anchor.shape)}"
        )
    if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("gcn loss: labels must be 0 (negative pair) or 1 (positive pair)")


def pair_bce(logits: Tensor, labels: Tensor, anchor: Tensor, weight: Tensor | None = None) -> Tensor:
    """Corrected Eq. 6 over P structures: logits (P,), labels (P,) in {0, 1}, anchor (P,) ids of any kind.

    `weight` (P,), optional, turns each per-anchor mean into a weighted mean (Σ w·log / Σ w); a group whose
    weights sum to 0 is skipped like an empty one. An empty batch gives 0 (still attached to `logits`).
    """
    _check(logits, labels, anchor)
    if logits.numel() == 0:
        return logits.sum() * 0.0
    _, group = torch.unique(anchor, return_inverse=True)
    num_anchors = int(group.max()) + 1
    pos = labels.to(torch.bool)
    w = torch.ones_like(logits) if weight is None else weight.to(logits.dtype)
    if w.shape != logits.shape:
        raise ValueError(f"pair_bce: weight must have shape {tuple(logits.shape)}, got {tuple(w.shape)}")
    # log g for positives, log(1 - g) for negatives, each weighted
    logp = torch.where(pos, torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)) * w
    # slot 2a holds anchor a's positives, slot 2a+1 its negatives
    slot = group * 2 + (~pos).long()
    sums = torch.zeros(2 * num_anchors, dtype=logits.dtype, device=logits.device).index_add(0, slot, logp)
    mass = torch.zeros(2 * num_anchors, dtype=logits.dtype, device=logits.device).index_add(0, slot, w)
    present = mass > 0
    terms = torch.where(present, sums / mass.clamp(min=torch.finfo(logits.dtype).tiny), torch.zeros_like(sums))
    return -terms.sum() / num_anchors


def mixed_gcn_loss(
    logits: Tensor, labels: Tensor, anchor: Tensor, is_meta: Tensor, eta: float | Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 10: L = L^u + η·L^m, so ∂L/∂Θ = ∂L^u/∂Θ + η ∂L^m/∂Θ. Returns (total, L^u, L^m).

    `is_meta` (P,) bool marks structures built from meta data (Z); each part is Eq. 6 over its own anchors and
    is 0 when it has no structures.
    """
    _check(logits, labels, anchor)
    if is_meta.shape != logits.shape:
        raise ValueError(f"mixed_gcn_loss: is_meta must have shape {tuple(logits.shape)}, got {tuple(is_meta.shape)}")
    is_meta = is_meta.to(torch.bool)
    loss_u = pair_bce(logits[~is_meta], labels[~is_meta], anchor[~is_meta])
    loss_m = pair_bce(logits[is_meta], labels[is_meta], anchor[is_meta])
    return loss_u + eta * loss_m, loss_u, loss_m


def eta_from_counts(num_meta_structures: int, num_unlabeled_structures: int, cap: float = 1.0) -> float:
    """η = #meta structures / #unlabeled structures in the mini-batch (spec §3.8; not clipped).

    With no unlabeled structures L^u is 0 and η only scales the meta loss, so `cap` (default 1.0: plain
    meta training, e.g. for "MPRD w/o") is returned instead of an infinite ratio.
    """
    if num_meta_structures < 0 or num_unlabeled_structures < 0:
        raise ValueError(
            f"eta_from_counts: counts must be >= 0, got {num_meta_structures}, {num_unlabeled_structures}"
        )
    if num_unlabeled_structures == 0:
        return float(cap)
    return num_meta_structures / num_unlabeled_structures
