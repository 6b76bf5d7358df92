"""GCN loss: per-anchor balanced BCE (MPRD Eq. 6, corrected) and the meta/unlabeled mixing of Eq. 10.

Eq. 6 as printed has (1 − log g) in the negative term; the spec (§3.6, fix 1) restores log(1 − g):
    L = −1/n' Σ_i [ 1/|P_g^i| Σ_{G_ij ∈ P_g^i} log g_ij + 1/|N_g^i| Σ_{G_ij ∈ N_g^i} log(1 − g_ij) ]
n' counts the anchors present in the batch; an anchor without positives (negatives) skips that term.
Log-probabilities use logsigmoid on the logits: log g = logsigmoid(x), log(1 − g) = logsigmoid(−x).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
