"""UGA §3.2, the cross-view graph (CVG): cross-camera mutual K-NN tracklet centres with cos > λ (Eqs. 4-6),
and its edge precision / recall against the hidden pids (diagnostics only; UGA Fig. 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class CrossViewGraph:
    """The CVG as fixed-size tables: slot (s, m, k) holds the k-th kept neighbour of tracklet s in camera
    branch m (or -1) and its edge weight e (Eq. 5); own-camera slots stay empty (self edges live in the loss)."""

    neighbors: Tensor  # (M, T, K) long
    weights: Tensor  # (M, T, K) float

    def edges(self) -> tuple[Tensor, Tensor, Tensor]:
        """Directed edges (src, dst, weight); every undirected edge appears in both directions."""
        src = torch.arange(self.neighbors.shape[0], device=self.neighbors.device)[:, None, None]
        keep = self.neighbors >= 0
        return src.expand_as(self.neighbors)[keep], self.neighbors[keep], self.weights[keep]

    def to_state(self) -> dict[str, Tensor]:
        return {"neighbors": self.neighbors.cpu(), "weights": self.weights.cpu()}

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> CrossViewGraph:
        return cls(state["neighbors"].long(), state["weights"].float())

    def to(self, device: torch.device | str) -> CrossViewGraph:
        return CrossViewGraph(self.neighbors.to(device), self.weights.to(device))


@torch.no_grad()
def build_cvg(centres: Tensor, branch_of_tracklet: Tensor, *, k: int = 1, threshold: float = 0.65,
              mutual: bool = True) -> CrossViewGraph:
    """Eqs. 4-5: for every camera pair, keep (c_t^i, c_m^j) when each is among the other's K nearest centres in
    the other camera (mutual) and cos > λ; the edge weight is the cosine. One matmul per camera pair.

    `mutual=False` drops Eq. 4's symmetry (UGA Fig. 4, "without the symmetry constraint"): slot (i, m) keeps
    i's own K nearest centres of camera m with cos > λ, so the tables are no longer symmetric.
    """
    num, branches = centres.shape[0], int(branch_of_tracklet.max()) + 1
    unit = F.normalize(centres.float(), dim=1)
    neighbors = torch.full((num, branches, k), -1, dtype=torch.long, device=centres.device)
    weights = torch.zeros(num, branches, k, device=centres.device)
    members = [torch.nonzero(branch_of_tracklet == t).flatten() for t in range(branches)]
    for t in range(branches):
        for m in range(t + 1, branches):
            a, b = members[t], members[m]
            if a.numel() == 0 or b.numel() == 0:
                continue
            sim = unit[a] @ unit[b].t()  # (M_t, M_m) cosines
            k_row, k_col = min(k, b.numel()), min(k, a.numel())
            row_top = sim.topk(k_row, dim=1).indices  # {c_t^i}^m_K
            col_top = sim.topk(k_col, dim=0).indices  # {c_m^j}^t_K
            in_row = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, row_top, True)
            in_col = torch.zeros_like(sim, dtype=torch.bool).scatter_(0, col_top, True)
            above = sim > threshold  # Eq. 5
            keep = in_row & in_col & above  # Eq. 4 (mutual) and Eq. 5 (threshold)
            kept = keep.gather(1, row_top) if mutual else above.gather(1, row_top)
            neighbors[a, m, :k_row] = torch.where(kept, b[row_top], -1)
            weights[a, m, :k_row] = torch.where(kept, sim.gather(1, row_top), 0.0)
            kept = keep.gather(0, col_top) if mutual else above.gather(0, col_top)
            neighbors[b, t, :k_col] = torch.where(kept, a[col_top], -1).t()
            weights[b, t, :k_col] = torch.where(kept, sim.gather(0, col_top), 0.0).t()
    return CrossViewGraph(neighbors, weights)


def undirected_edges(graph: CrossViewGraph) -> Tensor:
    """(E, 2) distinct undirected edges (i < j) of the graph: an edge of either direction counts once."""
    src, dst, _ = graph.edges()
    pairs = torch.stack([torch.minimum(src, dst), torch.maximum(src, dst)], 1)
    return torch.unique(pairs, dim=0) if pairs.numel() else pairs.reshape(0, 2)


def edge_precision_recall(pairs: Tensor, pid_of_tracklet: Tensor, branch_of_tracklet: Tensor) -> tuple[float, float]:
    """Diagnostic only (hidden pids): precision = fraction of the undirected edges `pairs` (E, 2) that join two
    tracklets of one pid (NaN without edges); recall = those correct edges over all cross-camera tracklet pairs
    of one pid."""
    pid = pid_of_tracklet.to(pairs.device)
    correct = float((pid[pairs[:, 0]] == pid[pairs[:, 1]]).sum()) if pairs.numel() else 0.0
    known = pid >= 0
    cells = torch.unique(torch.stack([pid[known], branch_of_tracklet.to(pid.device)[known]], 1), dim=0,
                         return_counts=True)
    per_pid = torch.zeros(int(pid.max()) + 1 if known.any() else 0, dtype=torch.float64, device=pid.device)
    per_pid.index_add_(0, cells[0][:, 0], cells[1].double())  # tracklets per pid
    squares = torch.zeros_like(per_pid).index_add_(0, cells[0][:, 0], cells[1].double() ** 2)
    true_pairs = float(((per_pid**2 - squares) / 2).sum())  # pairs of one pid in two different cameras
    precision = correct / pairs.shape[0] if pairs.shape[0] else math.nan
    return precision, (correct / true_pairs if true_pairs else 0.0)


def cvg_statistics(graph: CrossViewGraph, pid_of_tracklet: Tensor | None,
                   branch_of_tracklet: Tensor | None = None) -> dict[str, float]:
    """#edges (undirected), mean weight, node coverage and — against the hidden pids, diagnostic only — the
    precision and recall of the edges over all true cross-camera tracklet pairs (`edge_precision_recall`;
    without `branch_of_tracklet`, every tracklet of a pid is taken to lie in its own camera)."""
    src, _, w = graph.edges()
    pairs = undirected_edges(graph)
    num = graph.neighbors.shape[0]
    stats = {
        "cvg/edges": float(pairs.shape[0]),
        "cvg/mean_weight": float(w.mean()) if w.numel() else 0.0,
        "cvg/node_coverage": float(torch.unique(src).numel() / max(num, 1)),
    }
    if pid_of_tracklet is not None:
        branch = branch_of_tracklet if branch_of_tracklet is not None else torch.arange(num)
        precision, stats["cvg/recall"] = edge_precision_recall(pairs, pid_of_tracklet, branch)
        stats["cvg/precision"] = precision if pairs.shape[0] else 0.0  # logged: 0 for an empty graph
    return stats


def cvg_curve(centres: Tensor, branch_of_tracklet: Tensor, pid_of_tracklet: Tensor, thresholds: Sequence[float],
              *, k: int = 1) -> list[dict[str, float]]:
    """UGA Fig. 4: CVG edge precision and recall (hidden pids, diagnostic only) for every λ, with and without
    the mutual-NN constraint (Eq. 4), from one set of tracklet centres. One record per (mutual, λ)."""
    rows = []
    for mutual in (True, False):
        for lam in thresholds:
            graph = build_cvg(centres, branch_of_tracklet, k=k, threshold=float(lam), mutual=mutual)
            pairs = undirected_edges(graph)
            precision, recall = edge_precision_recall(pairs, pid_of_tracklet, branch_of_tracklet)
            rows.append({"mutual": mutual, "lambda": float(lam), "edges": int(pairs.shape[0]),
                         "precision": precision, "recall": recall})
    return rows
