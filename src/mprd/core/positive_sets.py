"""Ragged positive sets P_i in CSR form (offsets + indices), the currency of every pseudo-label generator.

An N x N mask would be 1.3 GB at MSMT17 scale; CSR stores only the positives. Row i always contains i
itself (MPRD spec §3.7: Algorithm 1 starts from P_i = {i}; Eq. 2 is undefined for an empty P_i).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PositiveSets:
    """P_i for i = 0..N-1: the positives of row i are `indices[offsets[i]:offsets[i+1]]` (sorted, unique)."""

    offsets: Tensor  # (N + 1,) int64
    indices: Tensor  # (nnz,) int64

    def __post_init__(self) -> None:
        if self.offsets.dim() != 1 or self.offsets.numel() < 1:
            raise ValueError("PositiveSets.offsets must be a 1-D tensor of length N + 1")
        if int(self.offsets[-1]) != self.indices.numel():
            raise ValueError(
                f"PositiveSets: offsets[-1] = {int(self.offsets[-1])} but there are {self.indices.numel()} indices"
            )

    # ----------------------------------------------------------------------------------------- builders
    @classmethod
    def from_mask_rows(cls, rows: Tensor, cols: Tensor, num: int) -> PositiveSets:
        """From COO pairs (row i, col j) meaning j in P_i. Self is added; duplicates are merged."""
        rows = rows.reshape(-1).long().cpu()
        cols = cols.reshape(-1).long().cpu()
        ar = torch.arange(num, dtype=torch.long)
        rows = torch.cat([rows, ar])
        cols = torch.cat([cols, ar])
        # unique over (row, col) keys, sorted by row then col
        keys = torch.unique(rows * num + cols)
        r, c = keys // num, keys % num
        counts = torch.bincount(r, minlength=num)
        offsets = torch.zeros(num + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(offsets, c)

    @classmethod
    def singletons(cls, num: int) -> PositiveSets:
        """P_i = {i}: the Single baseline and Algorithm 1's initialisation."""
        return cls(torch.arange(num + 1, dtype=torch.long), torch.arange(num, dtype=torch.long))

    @classmethod
    def from_labels(cls, labels: Tensor) -> PositiveSets:
        """P_i = {j : labels[j] == labels[i]} (ground truth for `super`, or any clustering)."""
        labels = labels.reshape(-1).long().cpu()
        num = labels.numel()
        order = torch.argsort(labels, stable=True)
        sorted_labels = labels[order]
        _, group_sizes = torch.unique_consecutive(sorted_labels, return_counts=True)
        group_start = torch.cumsum(group_sizes, 0) - group_sizes
        group_of_sorted = torch.repeat_interleave(torch.arange(group_sizes.numel()), group_sizes)
        group_of = torch.empty(num, dtype=torch.long)
        group_of[order] = group_of_sorted
        sizes = group_sizes[group_of]
        offsets = torch.zeros(num + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(sizes, 0)
        # row i's members are order[group_start[g] : group_start[g] + size], sorted by index
        starts = group_start[group_of]
        within = torch.arange(int(offsets[-1])) - torch.repeat_interleave(offsets[:-1], sizes)
        members = order[torch.repeat_interleave(starts, sizes) + within]
        # sort within each row: order within a group is ascending index already (stable argsort)
        return cls(offsets, members)

    @classmethod
    def from_neighbors(cls, neighbors: Tensor, keep: Tensor | None = None) -> PositiveSets:
        """P_i = {i} ∪ {neighbors[i, c] : keep[i, c]}; entries < 0 are padding and ignored."""
        num = neighbors.shape[0]
        valid = neighbors >= 0
        if keep is not None:
            valid = valid & keep.to(valid.device)
        rows = torch.arange(num, device=neighbors.device).unsqueeze(1).expand_as(neighbors)
        return cls.from_mask_rows(rows[valid], neighbors[valid], num)

    # ---------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return self.offsets.numel() - 1

    @property
    def sizes(self) -> Tensor:
        """|P_i| per row."""
        return self.offsets[1:] - self.offsets[:-1]

    def row(self, i: int) -> Tensor:
        return self.indices[self.offsets[i] : self.offsets[i + 1]]

    def batch_pairs(self, batch_index: Tensor) -> tuple[Tensor, Tensor]:
        """COO of the positives of a batch: (position in batch b, memory slot j) for every j in P_{batch[b]}."""
        batch_index = batch_index.reshape(-1).long().cpu()
        starts = self.offsets[batch_index]
        sizes = self.offsets[batch_index + 1] - starts
        b = torch.repeat_interleave(torch.arange(batch_index.numel()), sizes)
        within = torch.arange(int(sizes.sum())) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        j = self.indices[torch.repeat_interleave(starts, sizes) + within]
        return b, j

    def batch_mask(self, batch_index: Tensor, num: int | None = None, device: torch.device | None = None) -> Tensor:
        """Dense (B, N) bool mask of the batch rows: B x N is small (B = batch size)."""
        num = len(self) if num is None else num
        b, j = self.batch_pairs(batch_index)
        mask = torch.zeros(batch_index.numel(), num, dtype=torch.bool)
        mask[b, j] = True
        return mask if device is None else mask.to(device)

    def pair_precision_recall(self, labels: Tensor) -> tuple[float, float]:
        """Pair precision/recall of the off-diagonal positives against hidden ground-truth labels.

        A diagnostic only: it never feeds training. Precision = true pairs / predicted pairs;
        recall = true pairs / all same-label pairs. Both count ordered pairs (i, j), i != j.
        """
        labels = labels.reshape(-1).long().cpu()
        rows = torch.repeat_interleave(torch.arange(len(self)), self.sizes)
        off = rows != self.indices
        predicted = int(off.sum())
        true = int((labels[rows[off]] == labels[self.indices[off]]).sum())
        counts = torch.bincount(labels - labels.min())
        all_true = int((counts * (counts - 1)).sum())
        precision = true / predicted if predicted else 1.0
        recall = true / all_true if all_true else 1.0
        return precision, recall

    def to_state(self) -> dict[str, Tensor]:
        return {"offsets": self.offsets.clone(), "indices": self.indices.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> PositiveSets:
        return cls(state["offsets"].long(), state["indices"].long())
