"""Pairwise neighbourhood structures G_ij (MPRD Eq. 4) with DRNL node labels (SEAL), batched and dense.

For a pair (i, j) the structure holds the nodes {i, j} ∪ NN_k(i) ∪ NN_k(j) (duplicates merged). Node order
inside a structure: i at position 0, j at position 1, then the remaining node ids in ascending order (a
by-product of the sort-based dedup; the GCN is permutation-invariant over them). Structures are padded to the
largest node count of the batch (at most 2 + 2W for a neighbour table of width W); padding has node id -1,
mask False, no edges and DRNL label 0.

Adjacency (`topology`):
- 'pair' (default, Eq. 4 read literally): each endpoint b ∈ {i, j} is linked to every a ∈ NN_k(b); a "double
  star". Symmetric.
- 'induced' (the introduction's "connecting every image with its neighbours"): additionally every node of the
  structure is linked to those of its own neighbours that lie inside the structure. Symmetric.

The i–j edge (`target_edge`, spec §6.9): 'always' (default) inserts it for every pair, so edge presence cannot
leak the label of training pairs; 'never' removes it; 'natural' keeps whatever the topology produced.

DRNL (Zhang & Chen, NeurIPS 2018): f(v) = 1 + min(d_i, d_j) + (d//2)·(d//2 + d%2 − 1), d = d_i + d_j, where d_i
is the shortest-path distance to i in the graph with j removed (and vice versa). Endpoints get 1; a node that
cannot reach one of the endpoints gets 0. Removing the opposite endpoint removes the i–j edge from both BFS
runs, so DRNL does not depend on `target_edge` (the "target edge removed" rule of SEAL). Labels above
`max_label` are clipped to `max_label`.

Everything is tensor code (gather / sort / scatter / batched matmul BFS); no Python loop over pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Topology = Literal["pair", "induced"]
TargetEdge = Literal["always", "never", "natural"]
TOPOLOGIES = ("pair", "induced")
TARGET_EDGES = ("always", "never", "natural")


@dataclass
class PairStructures:
    """A padded batch of P pairwise neighbourhood structures G_ij = (A_ij, V_ij) (Eq. 4).

    node_ids: (P, n) long, node_ids[:, 0] = i, node_ids[:, 1] = j, -1 = padding.
    mask:     (P, n) bool, True for real nodes.
    adj:      (P, n, n) float {0, 1}, symmetric, zero diagonal, zero rows/cols at padding.
    drnl:     (P, n) long DRNL labels in [0, max_label] (0 at padding).
    """

    node_ids: Tensor
    mask: Tensor
    adj: Tensor
    drnl: Tensor

    def __len__(self) -> int:
        return int(self.node_ids.shape[0])

    @property
    def num_nodes(self) -> int:
        """Padded node count n."""
        return int(self.node_ids.shape[1])

    def to(self, device: torch.device | str) -> PairStructures:
        return PairStructures(
            self.node_ids.to(device), self.mask.to(device), self.adj.to(device), self.drnl.to(device)
        )

    def pad_to(self, n: int) -> PairStructures:
        """Append padding nodes up to n (no-op when already n wide)."""
        extra = n - self.num_nodes
        if extra < 0:
            raise ValueError(f"PairStructures.pad_to: cannot shrink {self.num_nodes} nodes to {n}")
        if extra == 0:
            return self
        return PairStructures(
            F.pad(self.node_ids, (0, extra), value=-1),
            F.pad(self.mask, (0, extra), value=False),
            F.pad(self.adj, (0, extra, 0, extra), value=0.0),
            F.pad(self.drnl, (0, extra), value=0),
        )

    def __getitem__(self, index: Tensor | slice) -> PairStructures:
        return PairStructures(self.node_ids[index], self.mask[index], self.adj[index], self.drnl[index])

    @staticmethod
    def cat(parts: list[PairStructures]) -> PairStructures:
        """Concatenate batches, padding all to the widest one."""
        if not parts:
            raise ValueError("PairStructures.cat: need at least one batch")
        n = max(p.num_nodes for p in parts)
        parts = [p.pad_to(n) for p in parts]
        return PairStructures(
            torch.cat([p.node_ids for p in parts]),
            torch.cat([p.mask for p in parts]),
            torch.cat([p.adj for p in parts]),
            torch.cat([p.drnl for p in parts]),
        )


# ------------------------------------------------------------------------------------------------ checks
def _check_inputs(
    neighbors: Tensor, left: Tensor, right: Tensor, topology: str, target_edge: str, max_label: int
) -> None:
    if topology not in TOPOLOGIES:
        raise ValueError(f"structures: topology={topology!r}; expected one of {TOPOLOGIES}")
    if target_edge not in TARGET_EDGES:
        raise ValueError(f"structures: target_edge={target_edge!r}; expected one of {TARGET_EDGES}")
    if max_label < 1:
        raise ValueError(f"structures: max_label={max_label}; expected >= 1 (endpoints carry label 1)")
    if neighbors.dim() != 2 or neighbors.dtype != torch.long:
        raise ValueError(
            f"structures: neighbors must be a 2-D int64 table (N_nodes, W) padded with -1, "
            f"got {neighbors.dtype} {tuple(neighbors.shape)}"
        )
    if left.dim() != 1 or right.shape != left.shape:
        raise ValueError(
            f"structures: left/right must be 1-D of equal length, got {tuple(left.shape)}, {tuple(right.shape)}"
        )
    num = neighbors.shape[0]
    if left.numel():
        lo = min(int(left.min()), int(right.min()))
        hi = max(int(left.max()), int(right.max()))
        if lo < 0 or hi >= num:
            raise ValueError(f"structures: pair node ids must lie in [0, {num}) (rows of neighbors), got [{lo}, {hi}]")
        if bool((left == right).any()):
            raise ValueError("structures: a pair (i, i) has no structure; left and right must differ")
    if neighbors.numel() and (int(neighbors.min()) < -1 or int(neighbors.max()) >= num):
        raise ValueError(f"structures: neighbor ids must lie in [0, {num}) or be -1 (padding)")


# ------------------------------------------------------------------------------------------------ nodes
def _merge_nodes(neighbors: Tensor, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
    """Dedup NN(i) ∪ NN(j) \\ {i, j} with one sort per pair.

    Returns (rest, pos): rest (P, R) the sorted unique ids padded with the sentinel N; pos (P, 2W) the position
    in the structure (i = 0, j = 1, rest = 2 + rank) of each entry of [NN(i) ‖ NN(j)], or n = 2 + R (a dummy
    slot) for -1 padding.
    """
    sentinel = neighbors.shape[0]
    cand = torch.cat([neighbors[left], neighbors[right]], dim=1)
    num_pairs, width = cand.shape
    drop = (cand < 0) | (cand == left[:, None]) | (cand == right[:, None])
    key, perm = cand.masked_fill(drop, sentinel).sort(dim=1)
    valid = key < sentinel
    first = valid.clone()
    first[:, 1:] &= key[:, 1:] != key[:, :-1]  # first copy of each id in the sorted row
    rank = first.long().cumsum(dim=1) - 1  # a duplicate shares the rank of its first copy
    r = int(first.sum(dim=1).max()) if cand.numel() else 0
    rest = torch.full((num_pairs, r + 1), sentinel, dtype=cand.dtype, device=cand.device)
    rest.scatter_(1, torch.where(first, rank, r), key)  # column r absorbs non-first entries
    n = 2 + r
    pos_sorted = torch.where(valid, rank + 2, n)
    pos = torch.empty_like(pos_sorted).scatter_(1, perm, pos_sorted)  # back to the order of cand
    pos = torch.where(cand == left[:, None], 0, pos)
    pos = torch.where(cand == right[:, None], 1, pos)
    return rest[:, :r].contiguous(), pos


def _positions(values: Tensor, rest: Tensor, left: Tensor, right: Tensor, dummy: int) -> Tensor:
    """Position of each id of `values` (P, m) inside its structure; `dummy` where absent or -1."""
    pos = torch.full_like(values, dummy)
    if rest.shape[1] > 0:
        idx = torch.searchsorted(rest, values.contiguous()).clamp_(max=rest.shape[1] - 1)
        found = rest.gather(1, idx) == values
        pos = torch.where(found, idx + 2, pos)
    pos = torch.where(values == left[:, None], 0, pos)
    pos = torch.where(values == right[:, None], 1, pos)
    return torch.where(values < 0, dummy, pos)


# ------------------------------------------------------------------------------------------------ edges
def _pair_adjacency(pos: Tensor, n: int) -> Tensor:
    """Eq. 4 double star: rows 0 (i) and 1 (j) from the positions of NN(i), NN(j); symmetric, bool (P, n, n)."""
    num_pairs, width = pos.shape[0], pos.shape[1] // 2
    rows = torch.zeros(num_pairs, 2, n + 1, dtype=torch.bool, device=pos.device)
    rows[:, 0].scatter_(1, pos[:, :width], True)
    rows[:, 1].scatter_(1, pos[:, width:], True)
    rows = rows[:, :, :n]
    adj = torch.zeros(num_pairs, n, n, dtype=torch.bool, device=pos.device)
    adj[:, :2, :] = rows
    adj[:, :, :2] |= rows.transpose(1, 2)
    return adj


def _induced_adjacency(neighbors: Tensor, left: Tensor, right: Tensor, node_ids: Tensor, rest: Tensor) -> Tensor:
    """Every node linked to its own neighbours inside the structure; symmetric, bool (P, n, n)."""
    num_pairs, n = node_ids.shape
    rows_nbrs = neighbors[node_ids.clamp(min=0)].masked_fill(node_ids[:, :, None] < 0, -1)  # (P, n, W)
    width = rows_nbrs.shape[2]
    # one extra "dummy" column absorbs every absent neighbour, then is cut off
    cols = _positions(rows_nbrs.reshape(num_pairs, n * width), rest, left, right, n).reshape(num_pairs, n, width)
    adj = torch.zeros(num_pairs, n, n + 1, dtype=torch.bool, device=node_ids.device)
    adj.scatter_(2, cols, True)
    adj = adj[:, :, :n]
    return adj | adj.transpose(1, 2)


def _finish_adjacency(adj: Tensor, target_edge: str) -> Tensor:
    adj.diagonal(dim1=1, dim2=2).fill_(False)  # a table row holding its own id must not add a self-loop
    if target_edge != "natural":
        value = target_edge == "always"
        adj[:, 0, 1] = value
        adj[:, 1, 0] = value
    return adj


# ------------------------------------------------------------------------------------------------ DRNL
def bfs_distances(adj: Tensor, max_steps: int | None = None) -> tuple[Tensor, Tensor]:
    """SEAL distances (d_i, d_j), each (P, n) long with -1 = unreachable.

    d_i is measured from position 0 with position 1 removed, d_j from position 1 with position 0 removed.
    Frontier expansion with one batched matmul per step for both sources; a blocked node is never entered,
    which is the same as deleting it from the graph.
    """
    num_pairs, n, _ = adj.shape
    a = adj.to(torch.float32)
    blocked = torch.zeros(num_pairs, 2, n, dtype=torch.bool, device=adj.device)
    blocked[:, 0, 1] = True
    blocked[:, 1, 0] = True
    frontier = torch.zeros_like(blocked)
    frontier[:, 0, 0] = True
    frontier[:, 1, 1] = True
    visited = frontier | blocked
    dist = torch.full((num_pairs, 2, n), -1, dtype=torch.long, device=adj.device)
    dist[frontier] = 0
    steps = n - 1 if max_steps is None else max_steps
    for step in range(1, steps + 1):
        new = (torch.bmm(frontier.to(a.dtype), a) > 0) & ~visited
        if not bool(new.any()):
            break
        dist[new] = step
        visited |= new
        frontier = new
    return dist[:, 0], dist[:, 1]


def drnl_from_distances(d_i: Tensor, d_j: Tensor, max_label: int) -> Tensor:
    """DRNL label per node from (d_i, d_j) with -1 = unreachable; positions 0/1 are the endpoints (label 1)."""
    d = d_i + d_j
    half, odd = d // 2, d % 2
    label = 1 + torch.minimum(d_i, d_j) + half * (half + odd - 1)
    label = torch.where((d_i < 0) | (d_j < 0), torch.zeros_like(label), label)
    label[:, :2] = 1
    return label.clamp_(max=max_label)


def drnl_labels(adj: Tensor, mask: Tensor, max_label: int = 10) -> Tensor:
    """DRNL labels (P, n) for structures whose endpoints sit at positions 0 and 1; 0 at padding."""
    d_i, d_j = bfs_distances(adj)
    return drnl_from_distances(d_i, d_j, max_label).masked_fill_(~mask, 0)


# ------------------------------------------------------------------------------------------------ builders
def _build_chunk(
    neighbors: Tensor, left: Tensor, right: Tensor, topology: str, target_edge: str, max_label: int
) -> PairStructures:
    rest, pos = _merge_nodes(neighbors, left, right)
    rest_ids = rest.masked_fill(rest == neighbors.shape[0], -1)
    node_ids = torch.cat([left[:, None], right[:, None], rest_ids], dim=1)
    mask = node_ids >= 0
    if topology == "pair":
        adj = _finish_adjacency(_pair_adjacency(pos, node_ids.shape[1]), target_edge)
        # closed form of DRNL on a double star: with j removed, i reaches exactly NN(i) at distance 1 and no
        # further (only endpoints have edges); so common neighbours get (1, 1) -> 2, all others are cut off -> 0
        drnl = torch.zeros_like(node_ids)
        drnl[:, 2:] = 2 * (adj[:, 0, 2:] & adj[:, 1, 2:]).long()
        drnl[:, :2] = 1
        drnl = drnl.clamp_(max=max_label)
    else:
        adj = _finish_adjacency(_induced_adjacency(neighbors, left, right, node_ids, rest), target_edge)
        drnl = drnl_labels(adj, mask, max_label)
    return PairStructures(node_ids, mask, adj.to(torch.float32), drnl)


def build_pair_structures(
    neighbors: Tensor,
    left: Tensor,
    right: Tensor,
    *,
    topology: Topology = "pair",
    target_edge: TargetEdge = "always",
    max_label: int = 10,
    chunk_size: int | None = None,
) -> PairStructures:
    """Structures G_ij (Eq. 4) + DRNL labels for the pairs (left[p], right[p]).

    `neighbors` (N_nodes, W) holds NN_{k_v}(v) in row v, padded with -1 (e.g. `adaptive_knn`'s idx, possibly
    extended with rows for virtual nodes such as a perturbed copy x'_i). Work happens on `neighbors.device`.
    `chunk_size` bounds peak memory of the intermediate tensors; the result is padded to the widest chunk.
    """
    left = left.reshape(-1).to(device=neighbors.device, dtype=torch.long)
    right = right.reshape(-1).to(device=neighbors.device, dtype=torch.long)
    _check_inputs(neighbors, left, right, topology, target_edge, max_label)
    size = chunk_size or max(1, left.numel())
    parts = [
        _build_chunk(neighbors, left[s : s + size], right[s : s + size], topology, target_edge, max_label)
        for s in range(0, max(1, left.numel()), size)
    ]
    return PairStructures.cat(parts)


def iter_structure_chunks(
    neighbors: Tensor,
    left: Tensor,
    right: Tensor,
    *,
    chunk_size: int = 4096,
    sort_by_size: bool = True,
    topology: Topology = "pair",
    target_edge: TargetEdge = "always",
    max_label: int = 10,
) -> Iterator[tuple[Tensor, PairStructures]]:
    """Yield (pair positions, structures) chunk by chunk, e.g. for inference over all N·k candidates.

    With `sort_by_size`, pairs are ordered by |NN(i)| + |NN(j)| first so each chunk is padded only to the
    widest structure among similar-sized ones (adaptive k makes widths vary a lot).
    """
    left = left.reshape(-1).to(device=neighbors.device, dtype=torch.long)
    right = right.reshape(-1).to(device=neighbors.device, dtype=torch.long)
    _check_inputs(neighbors, left, right, topology, target_edge, max_label)
    if chunk_size < 1:
        raise ValueError(f"iter_structure_chunks: chunk_size={chunk_size}; expected >= 1")
    order = torch.arange(left.numel(), device=neighbors.device)
    if sort_by_size:
        k = (neighbors >= 0).sum(dim=1)
        order = torch.argsort(k[left] + k[right], stable=True)
    for s in range(0, left.numel(), chunk_size):
        idx = order[s : s + chunk_size]
        yield idx, _build_chunk(neighbors, left[idx], right[idx], topology, target_edge, max_label)
