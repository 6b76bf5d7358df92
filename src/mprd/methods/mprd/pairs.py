"""§4.2 of MPRD: the labelled pairs the GCN trains on.

Unlabeled data (L^u): at the first iteration each x_i with its perturbed copy x'_i (positive) and random
negatives; later, pairs inside the previous P_i that pass the kNN test (positives) and hard negatives N*_i
(Eq. 3). Meta data Z (L^m): same-identity positives, other-identity and (z, x) negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mprd.core.neighbors import knn
from mprd.core.positive_sets import PositiveSets


@dataclass
class PairSet:
    """Labelled pairs for the GCN: (left, right) node ids, label (1 = same identity), anchor, meta flag."""

    left: Tensor
    right: Tensor
    label: Tensor
    anchor: Tensor
    is_meta: Tensor

    @staticmethod
    def make(left: Tensor, right: Tensor, label: float, anchor: Tensor, is_meta: bool) -> PairSet:
        n = left.numel()
        return PairSet(
            left.long(), right.long(), torch.full((n,), float(label)), anchor.long(), torch.full((n,), is_meta)
        )

    @staticmethod
    def cat(parts: list[PairSet]) -> PairSet:
        parts = [p for p in parts if p.left.numel()] or [
            PairSet.make(*(torch.empty(0),) * 2, 0.0, torch.empty(0), False)
        ]
        return PairSet(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("left", "right", "label", "anchor", "is_meta"))
        )

    def select(self, mask: Tensor) -> PairSet:
        return PairSet(self.left[mask], self.right[mask], self.label[mask], self.anchor[mask], self.is_meta[mask])

    def __len__(self) -> int:
        return self.left.numel()


def _randint_below(high: Tensor, gen: torch.Generator) -> Tensor:
    """One uniform integer in [0, high_i) per entry (high_i >= 1)."""
    return torch.floor(torch.rand(high.shape, generator=gen) * high.double()).long().clamp(max=high - 1)


def perturbation_pairs(
    anchors: Tensor, virtual_ids: Tensor, num_slots: int, num_neg: int, gen: torch.Generator
) -> PairSet:
    """First iteration (§4.2, 1): (x_i, x'_i) positives and `num_neg` random (x_i, x_j ≠ x_i) negatives each."""
    pos = PairSet.make(anchors, virtual_ids, 1.0, anchors, False)
    neg_anchor = anchors.repeat_interleave(num_neg)
    offset = 1 + torch.floor(torch.rand(neg_anchor.shape, generator=gen) * (num_slots - 1)).long()
    neg = PairSet.make(neg_anchor, (neg_anchor + offset) % num_slots, 0.0, neg_anchor, False)
    return PairSet.cat([pos, neg])


def positive_set_pairs(anchors: Tensor, positives: PositiveSets, neighbors: Tensor, gen: torch.Generator) -> PairSet:
    """Later iterations (§4.2, 1): x_{r_i} drawn from P_i; (x_{r_i}, x_{r_j}) is positive iff x_{r_j} ∈ NN_k(x_{r_i}).

    Pairs failing the test are dropped, not used as negatives (spec §3.8). Anchors need |P_i| > 1.
    """
    sizes = positives.sizes[anchors]
    r_i = positives.indices[positives.offsets[anchors] + _randint_below(sizes, gen)]
    b, r_j = positives.batch_pairs(anchors)
    left = r_i[b]
    in_nn = (neighbors[left] == r_j.unsqueeze(1)).any(dim=1)
    keep = (r_j != left) & in_nn
    return PairSet.make(left[keep], r_j[keep], 1.0, anchors[b][keep], False)


def hard_negative_pairs(
    anchors: Tensor, counts: Tensor, hard: Tensor, hard_counts: Tensor, gen: torch.Generator
) -> PairSet:
    """Later iterations (§4.2, 1): |P_i| images drawn (with replacement) from N*_i, each paired with x_i."""
    a = anchors.repeat_interleave(counts)
    pick = _randint_below(hard_counts[a], gen)
    return PairSet.make(a, hard[a, pick], 0.0, a, False)


def hard_negative_table(
    memory: Tensor, positives: PositiveSets, ratio: float, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """N*_i per Eq. 3 on memory features: the r_i = ⌊ratio (N − |P_i|)⌋ most similar non-positives.

    Returns (table (N, r_max) of slot ids, valid count r_i per row). Positives are removed by searching
    r_max + max|P_i| neighbours and masking the members of P_i.
    """
    num = memory.shape[0]
    sizes = positives.sizes
    r = torch.clamp(torch.floor(ratio * (num - sizes).double()).long(), min=1)
    r_max, p_max = int(r.max()), int(sizes.max())
    width = min(num, r_max + p_max)
    _, idx = knn(memory, memory, width)
    idx = idx.cpu()
    pos_pad = torch.full((num, p_max), -1, dtype=torch.long)
    b, j = positives.batch_pairs(torch.arange(num))
    col = torch.arange(j.numel()) - positives.offsets[b]
    pos_pad[b, col] = j
    valid = torch.cat(
        [~(idx[s : s + chunk, :, None] == pos_pad[s : s + chunk, None, :]).any(-1) for s in range(0, num, chunk)]
    )
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)[:, :r_max]  # valid columns first, in rank order
    table = torch.gather(idx, 1, order)
    return table, torch.minimum(r, valid.sum(1))


def meta_pairs(
    meta_images: Tensor,
    pids: Tensor,
    pool: Tensor,
    zx_negatives: bool,
    gen: torch.Generator,
    anchors: Tensor | None = None,
    zx_images: Tensor | None = None,
) -> PairSet:
    """§4.2, 2 (L^m): per meta anchor z (default: every meta image) one same-identity positive and one
    other-meta-identity negative, partners drawn from `meta_images`; with `zx_negatives`, one (z_j, x_i)
    negative per x_i of `zx_images` with z_j drawn at random (Algorithm 1 lines 3-4: "for each x_i, randomly
    select z_j"); without `zx_images`, one random image of `pool` (non-meta identities, spec §3.8) per anchor.

    Called once per GCN step, so every step sees freshly drawn meta pairs (not one fixed set per epoch).
    """
    z = meta_images if anchors is None else anchors
    if z.numel() == 0:
        return PairSet.cat([])
    zp, mp = pids[z], pids[meta_images]
    same = zp.unsqueeze(1) == mp.unsqueeze(0)
    not_self = z.unsqueeze(1) != meta_images.unsqueeze(0)
    parts = []
    for mask, label in ((same & not_self, 1.0), (~same, 0.0)):
        has = mask.any(1)
        if not has.any():
            continue
        partner = torch.multinomial(mask[has].float(), 1, generator=gen).squeeze(1)
        parts.append(PairSet.make(z[has], meta_images[partner], label, z[has], True))
    if zx_negatives:
        if zx_images is None:
            zx_images = (
                pool[torch.floor(torch.rand(z.shape, generator=gen) * pool.numel()).long()] if pool.numel() else pool
            )
        if zx_images.numel():
            zj = meta_images[torch.floor(torch.rand(zx_images.shape, generator=gen) * meta_images.numel()).long()]
            parts.append(PairSet.make(zj, zx_images, 0.0, zj, True))
    return PairSet.cat(parts)


def meta_candidate_pairs(anchors: Tensor, neighbors: Tensor, pids: Tensor, meta_images: Tensor) -> PairSet:
    """(z, j) for every j ∈ NN_k(z) of each meta anchor z, labelled from the meta identities alone: positive iff
    j is a meta image of z's identity. A non-meta j is a negative without reading its identity (it belongs to no
    meta identity), as in the (z, x) negatives. These pairs have the distribution Eq. 7 scores (an image and its
    own kNN candidates), unlike random meta pairs, which are mostly easy.
    """
    nbr = neighbors[anchors]
    valid = nbr >= 0
    left = anchors.unsqueeze(1).expand_as(nbr)[valid]
    right = nbr[valid]
    is_meta = torch.zeros(int(neighbors.shape[0]), dtype=torch.bool)
    is_meta[meta_images] = True
    same = is_meta[right] & (pids[left] == pids[right.clamp(max=pids.numel() - 1)])
    pos = PairSet.make(left[same], right[same], 1.0, left[same], True)
    neg = PairSet.make(left[~same], right[~same], 0.0, left[~same], True)
    return PairSet.cat([pos, neg])
