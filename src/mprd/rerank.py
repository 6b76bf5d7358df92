"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on neighbour lists, with bounded memory.

The textbook implementation (person-re-ranking's `re_ranking.py`, as torchreid ships it) builds dense
(q+g)^2 matrices: the original distance, the argsort, V and the Jaccard distance. At MSMT17 scale
(11,659 + 82,161 images) one such float32 matrix takes 35 GB. This module computes the same result from:

1. one chunked pass over the (q+g) x (q+g) similarities, keeping each item's k1 + 1 nearest neighbours and
   its largest distance (the textbook normalises every row of the distance matrix by its maximum);
2. k-reciprocal sets R(i, k1), their expansion by R(c, round(k1/2)) and the weights exp(-d) on padded
   (N, k1 + 1) index tensors, stored as a sparse matrix V (about k1 + k1^2/2 entries per row at most);
3. local query expansion V <- mean of the k2 nearest rows of V (a sparse product);
4. the Jaccard distance 1 - S / (2 - S), S(i, j) = sum_k min(V_ik, V_jk), per chunk of queries through an
   inverted index of the gallery rows of V, combined with the original distance:
   d* = (1 - lambda) d_J + lambda d.

The original distance follows torchreid: d = the metric's distance (cosine: 1 - cos; euclidean: squared
Euclidean), squared, then divided by its row maximum over all q + g items. Defaults k1 = 20, k2 = 6,
lambda = 0.3 (the paper's). `rerank_distance` returns the dense q x g result for small sets (tests);
`RerankScorer` yields it chunk by chunk as scores (higher = closer) for `mprd.core.evaluation.evaluate`.
Equal distances rank by item index (a stable sort; the textbook's default quicksort leaves that open).
Peak memory: the features plus O(N (k1 + k1^2/2 k2)) sparse entries plus one chunk of queries x gallery.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = ["RerankParams", "RerankScorer", "rerank_distance"]

_CHUNK_ELEMENTS = 1 << 23  # rows x columns of one similarity / Jaccard chunk (~32 MB of float32)
_PAIR_CHUNK = 1 << 22  # (row, col) pairs gathered at once to compute distances / Jaccard minima


@dataclass(frozen=True)
class RerankParams:
    """k1: size of the k-reciprocal neighbourhood; k2: query-expansion neighbours; lambda_value: weight of
    the original distance in the final one."""

    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3

    def __post_init__(self) -> None:
        if self.k1 < 1 or self.k2 < 1:
            raise ValueError(f"rerank: k1 and k2 must be >= 1, got k1={self.k1}, k2={self.k2}")
        if self.k2 > self.k1 + 1:
            raise ValueError(f"rerank: k2={self.k2} must be <= k1 + 1 = {self.k1 + 1}")
        if not 0.0 <= self.lambda_value <= 1.0:
            raise ValueError(f"rerank: lambda_value must lie in [0, 1], got {self.lambda_value}")


def _distance(scores: Tensor, sq_norms_rows: Tensor | None) -> Tensor:
    """Metric distance from prepared scores (see `mprd.core.evaluation.pairwise_scores`), clamped at 0.

    cosine: 1 - cos. euclidean: scores are x.y - |y|^2/2, so |x - y|^2 = |x|^2 - 2 * score.
    """
    if sq_norms_rows is None:
        return (1.0 - scores).clamp_(min=0.0)
    return (sq_norms_rows.unsqueeze(1) - 2.0 * scores).clamp_(min=0.0)


class _Features:
    """All q + g features prepared for one metric, with pairwise distances on demand."""

    def __init__(self, feats: Tensor, metric: str) -> None:
        """`feats`: a float32 (N, d) tensor this object may own and modify (cosine: rows normalised in place)."""
        if metric not in ("cosine", "euclidean"):
            raise ValueError(f"rerank: metric must be 'cosine' or 'euclidean', got {metric!r}")
        self.x = feats
        sq = torch.cat([(b * b).sum(1) for b in feats.split(1 << 14)])
        if metric == "cosine":  # as torch.nn.functional.normalize (eps 1e-12), without a second copy
            self.x.div_(sq.sqrt().clamp_(min=1e-12).unsqueeze(1))
            self.half = self.sq = None
        else:
            self.half, self.sq = -0.5 * sq, sq

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def block(self, rows: slice, cols: slice | None = None) -> Tensor:
        """Distances d(rows, cols) (cols: all items when None)."""
        from mprd.core.evaluation import pairwise_scores

        c = self.x if cols is None else self.x[cols]
        h = None if self.half is None else (self.half if cols is None else self.half[cols])
        return _distance(pairwise_scores(self.x[rows], c, h), None if self.sq is None else self.sq[rows])

    def pairs(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Distances d(rows[p], cols[p]) for index vectors (chunked gathers)."""
        out = torch.empty(rows.numel(), dtype=torch.float32)
        step = max(1, _PAIR_CHUNK // max(1, self.x.shape[1]))
        for s in range(0, rows.numel(), step):
            r, c = rows[s : s + step], cols[s : s + step]
            dot = (self.x[r] * self.x[c]).sum(1)
            if self.sq is None:
                out[s : s + step] = (1.0 - dot).clamp_(min=0.0)
            else:
                out[s : s + step] = (self.sq[r] + self.sq[c] - 2.0 * dot).clamp_(min=0.0)
        return out


def _neighbours(feats: _Features, k: int) -> tuple[Tensor, Tensor]:
    """(N, k) nearest items of every item (itself included, nearest first) and each row's max of d^2.

    Works on the scores (higher = closer): the distance is a decreasing function of them, so the top-k
    scores are the k nearest items and the lowest score gives the row's largest distance.
    """
    from mprd.core.evaluation import pairwise_scores

    n = len(feats)
    k = min(k, n)
    nbr = torch.empty(n, k, dtype=torch.long)
    row_max = torch.empty(n, dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // n)
    for s in range(0, n, step):
        scores = pairwise_scores(feats.x[s : s + step], feats.x, feats.half)
        top = torch.topk(scores, k, dim=1, largest=True, sorted=False).indices
        # topk does not promise an order among equal scores; the textbook's sort ranks ties by index
        nbr[s : s + step] = _stable_ties(-scores, top)
        lowest = scores.amin(1, keepdim=True)
        row_max[s : s + step] = _distance(lowest, None if feats.sq is None else feats.sq[s : s + step])[:, 0].square()
    return nbr, row_max


def _stable_ties(d: Tensor, order: Tensor) -> Tensor:
    """Reorder each row of `order` by (distance, index), as a stable sort of the full row would."""
    idx = torch.sort(order, dim=1).values
    perm = torch.argsort(d.gather(1, idx), dim=1, stable=True)
    return idx.gather(1, perm)


def _reciprocal(nbr: Tensor, k: int) -> Tensor:
    """R(i, k): nbr[i, :k+1] entries j whose own nbr[j, :k+1] holds i; others set to -1. Shape (N, k+1)."""
    head = nbr[:, : k + 1]
    n = head.shape[0]
    out = torch.full_like(head, -1)
    step = max(1, _CHUNK_ELEMENTS // (head.shape[1] ** 2))
    for s in range(0, n, step):
        h = head[s : s + step]
        rows = torch.arange(s, s + h.shape[0]).view(-1, 1, 1)
        back = (head[h] == rows).any(-1)
        out[s : s + step] = torch.where(back, h, torch.full_like(h, -1))
    return out


def _expanded_sets(r_full: Tensor, r_half: Tensor) -> tuple[Tensor, Tensor]:
    """COO (row, col) of each item's expanded k-reciprocal set, rows ascending, no duplicates.

    R*(i) = R(i, k1) united with every R(c, k1/2), c in R(i, k1), that shares more than 2/3 of its members
    with R(i, k1) (the textbook's test, evaluated in float64 as it is there).
    """
    n, kf = r_full.shape
    kh = r_half.shape[1]
    rows_out, cols_out = [], []
    step = max(1, _CHUNK_ELEMENTS // (kf * kh * kf))
    for s in range(0, n, step):
        ri = r_full[s : s + step]  # (b, kf)
        cand = r_half[ri.clamp(min=0)]  # (b, kf, kh)
        cand = torch.where((ri >= 0).unsqueeze(-1), cand, torch.full_like(cand, -1))
        valid = cand >= 0
        inter = ((cand.unsqueeze(-1) == ri.view(ri.shape[0], 1, 1, kf)).any(-1) & valid).sum(-1)
        size = valid.sum(-1)
        accept = (ri >= 0) & (inter.double() > (2.0 / 3.0) * size.double())
        extra = torch.where(accept.unsqueeze(-1), cand, torch.full_like(cand, -1)).flatten(1)
        members = torch.sort(torch.cat([ri, extra], 1), dim=1).values
        keep = members >= 0
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]
        r, c = keep.nonzero(as_tuple=True)
        rows_out.append(r + s)
        cols_out.append(members[r, c])
    return torch.cat(rows_out), torch.cat(cols_out)


def _weights(feats: _Features, nbr: Tensor, row_max: Tensor, params: RerankParams) -> sp.csr_matrix:
    """V of the textbook, after local query expansion: (N, N) sparse, every row sums to 1."""
    n = len(feats)
    r_full = _reciprocal(nbr, params.k1)
    r_half = _reciprocal(nbr, int(np.around(params.k1 / 2.0)))
    rows, cols = _expanded_sets(r_full, r_half)
    d = feats.pairs(rows, cols).square_().div_(row_max[rows].clamp(min=torch.finfo(torch.float32).tiny))
    w = torch.exp(-d)
    w /= torch.zeros(n, dtype=torch.float32).index_add_(0, rows, w)[rows]
    v = sp.csr_matrix((w.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n), dtype=np.float32)
    if params.k2 == 1:
        return v
    k2 = min(params.k2, nbr.shape[1])  # the textbook averages the min(k2, N) nearest rows
    qe_rows = torch.arange(n).repeat_interleave(k2).numpy()
    qe = sp.csr_matrix((np.full(qe_rows.size, 1.0 / k2, dtype=np.float32),
                        (qe_rows, nbr[:, :k2].reshape(-1).numpy())), shape=(n, n))
    out = (qe @ v).tocsr()
    out.sort_indices()
    return out


class RerankScorer:
    """Re-ranked scores (-d*, higher = closer) of query rows against the whole gallery, chunk by chunk.

    `query`, `gallery`: features (float, 2-D, same width); `metric`: 'cosine' | 'euclidean'. Building it
    does the neighbour pass and V; `__call__(start, stop)` returns the (stop - start, num_gallery) scores.
    """

    def __init__(self, query: Tensor, gallery: Tensor, metric: str = "cosine",
                 params: RerankParams | None = None) -> None:
        self.params = params or RerankParams()
        self.nq, self.ng = int(query.shape[0]), int(gallery.shape[0])
        if self.nq + self.ng < 2:
            raise ValueError("rerank: need at least two images in query + gallery")
        with torch.no_grad():
            self.feats = _Features(torch.cat([query.float().cpu(), gallery.float().cpu()]), metric)
            nbr, self.row_max = _neighbours(self.feats, self.params.k1 + 1)
            v = _weights(self.feats, nbr, self.row_max, self.params)
        self.vq = v[: self.nq]
        g = v[self.nq :].tocsc()  # inverted index: column k -> gallery rows holding it
        self.g_ptr = torch.from_numpy(g.indptr.astype(np.int64))
        self.g_rows = torch.from_numpy(g.indices.astype(np.int64))
        self.g_vals = torch.from_numpy(g.data.astype(np.float32))

    def chunk_size(self) -> int:
        return max(1, _CHUNK_ELEMENTS // max(1, self.ng))

    def __call__(self, start: int, stop: int) -> Tensor:
        with torch.no_grad():
            sim = self._min_sums(start, stop)
            jaccard = 1.0 - sim / (2.0 - sim)
            orig = self.feats.block(slice(start, stop), slice(self.nq, None)).square_()
            orig /= self.row_max[start:stop].clamp(min=torch.finfo(torch.float32).tiny).unsqueeze(1)
            lam = self.params.lambda_value
            return -(jaccard * (1.0 - lam) + orig * lam)

    def _min_sums(self, start: int, stop: int) -> Tensor:
        """S(i, j) = sum_k min(V_ik, V_jk) for query rows start..stop-1 and every gallery row j."""
        b = stop - start
        sim = torch.zeros(b * self.ng, dtype=torch.float32)
        block = self.vq[start:stop]
        rows = torch.from_numpy(np.repeat(np.arange(b), np.diff(block.indptr)))
        cols = torch.from_numpy(block.indices.astype(np.int64))
        vals = torch.from_numpy(block.data.astype(np.float32))
        counts = self.g_ptr[cols + 1] - self.g_ptr[cols]
        ends = torch.cumsum(counts, 0)
        lo = 0
        while lo < cols.numel():  # entries whose inverted lists fit in one pair chunk
            hi = int(torch.searchsorted(ends, int(ends[lo] - counts[lo]) + _PAIR_CHUNK, right=True))
            hi = max(hi, lo + 1)
            c = counts[lo:hi]
            if int(c.sum()):
                entry = torch.repeat_interleave(torch.arange(lo, hi), c)
                first = torch.repeat_interleave(self.g_ptr[cols[lo:hi]] - (torch.cumsum(c, 0) - c), c)
                at = first + torch.arange(entry.numel())
                mins = torch.minimum(vals[entry], self.g_vals[at])
                sim.index_add_(0, rows[entry] * self.ng + self.g_rows[at], mins)
            lo = hi
        return sim.view(b, self.ng)


def rerank_distance(query: Tensor, gallery: Tensor, metric: str = "cosine",
                    params: RerankParams | None = None) -> Tensor:
    """Dense (num_query, num_gallery) re-ranked distance d* (small sets; evaluation uses `RerankScorer`)."""
    scorer = RerankScorer(query, gallery, metric, params)
    step = scorer.chunk_size()
    return torch.cat([-scorer(s, min(s + step, scorer.nq)) for s in range(0, scorer.nq, step)])
