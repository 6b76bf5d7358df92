"""Single-query re-ID evaluation: CMC Rank-k, mAP and mINP (Market-1501 / torchreid protocol).

Protocol, per query q (pid p, camera c):

* gallery items with pid == p **and** camera == c are removed (same view of the same person);
* gallery items with pid -1 (junk) are removed for every query;
* every other gallery item stays. Pid 0 is *not* special: Market-1501's distractors carry pid 0 and no
  query does, so they are never a match and only push true matches down; MSMT17, whose pids start at 0,
  is evaluated correctly because 0 is an ordinary identity there.
* The remaining items are ranked by decreasing similarity. **Ties** are broken by gallery index (the
  earlier gallery item ranks first), i.e. the order of a stable sort; results are deterministic and do
  not depend on `chunk_size` or on the device.
* Positives = remaining items with pid == p. A query with no positive is skipped and counted.

Per valid query, with r_1 < ... < r_P the 1-based ranks of its P positives:
CMC(k) = [r_1 <= k];  AP = (1/P) * sum_j j / r_j  (precision at each correct hit, the standard
definition — not MLCR's trapezoid/AUC variant);  INP = P / r_P (Ye et al., AGW, "mINP").
Rank-k, mAP and mINP are means over the valid queries.

Implementation: no full argsort. Each (score, gallery index) pair is packed into one int64 key whose
order is the ranking order, so keys are unique. A positive's rank is then 1 + the number of remaining
gallery items with a larger key, which one `searchsorted` of every item key against the query's sorted
positive keys (a bucket index), a per-row histogram of the buckets and a suffix sum give exactly. The
few removed same-pid/same-camera items are found from a pid -> gallery-items index and subtracted from
the histogram, so no (query x gallery) mask is ever built. Work is chunked over queries; peak extra
memory is about 16 bytes x chunk_size x num_gallery (scores + int64 keys). At Market scale this costs
~0.5x the query x gallery matmul on top of it, against ~1.3x for a full per-row argsort.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["JUNK_PID", "ReIDMetrics", "default_chunk_size", "evaluate", "pairwise_scores"]

Metric = Literal["cosine", "euclidean"]
JUNK_PID = -1
# Auto chunk: chunk_size * num_gallery <= this many elements (~16 B each at the peak -> ~270 MB).
_CHUNK_ELEMENTS = 1 << 24
_INT64_MAX = torch.iinfo(torch.int64).max
_LOW_BITS = (1 << 32) - 1


@dataclass
class ReIDMetrics:
    """Evaluation result; rates are fractions in [0, 1]. `cmc[k-1]` = Rank-k for k <= max_rank."""

    rank1: float
    rank5: float
    rank10: float
    mAP: float
    mINP: float
    cmc: Tensor
    num_valid: int
    num_skipped: int
    ranks: dict[int, float] = field(default_factory=dict)

    def as_dict(self, percent: bool = True) -> dict[str, float]:
        """Flat dict for logging: rank1, rank5, rank10 (plus any other requested rank k), mAP, mINP."""
        scale = 100.0 if percent else 1.0
        out = {"rank1": self.rank1, "rank5": self.rank5, "rank10": self.rank10}
        out.update({f"rank{k}": v for k, v in sorted(self.ranks.items())})
        out.update(mAP=self.mAP, mINP=self.mINP)
        return {k: float(v) * scale for k, v in out.items()}


def default_chunk_size(num_gallery: int) -> int:
    """Queries per chunk so that one chunk's (query x gallery) working memory stays near 270 MB."""
    return max(1, _CHUNK_ELEMENTS // max(1, num_gallery))


def _to_tensor(x: Tensor | np.ndarray | Sequence, device: torch.device | None) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    return t.detach().to(device) if device is not None else t.detach()


def _check_inputs(qf: Tensor, gf: Tensor, qp: Tensor, qc: Tensor, gp: Tensor, gc: Tensor) -> None:
    if qf.dim() != 2 or gf.dim() != 2 or qf.shape[1] != gf.shape[1]:
        raise ValueError(f"evaluate: expected 2-D query/gallery features of equal width, got "
                         f"{tuple(qf.shape)} and {tuple(gf.shape)}")
    for name, ids, n in (("query_pids", qp, qf.shape[0]), ("query_camids", qc, qf.shape[0]),
                         ("gallery_pids", gp, gf.shape[0]), ("gallery_camids", gc, gf.shape[0])):
        if ids.dim() != 1 or ids.shape[0] != n:
            raise ValueError(f"evaluate: {name} must be 1-D with {n} entries (one per feature row), "
                             f"got shape {tuple(ids.shape)}")
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"evaluate: {name} must hold integers, got dtype {ids.dtype}")
    if qf.shape[0] == 0 or gf.shape[0] == 0:
        raise ValueError(f"evaluate: empty query ({qf.shape[0]}) or gallery ({gf.shape[0]}) set")
    if bool((qp < 0).any()):
        raise ValueError("evaluate: query_pids must be >= 0 (pid -1 marks gallery junk, never a query)")
    if bool((gp < JUNK_PID).any()):
        raise ValueError("evaluate: gallery_pids must be >= -1 (-1 = junk, 0 = distractor or a real id)")
    if not bool(torch.isfinite(qf).all()) or not bool(torch.isfinite(gf).all()):
        raise ValueError("evaluate: features contain NaN or inf")


def _prepare_features(qf: Tensor, gf: Tensor, metric: Metric) -> tuple[Tensor, Tensor, Tensor | None]:
    """float32 (query, gallery, -0.5*|g|^2 or None); cosine rows are L2-normalised here."""
    qf, gf = qf.float(), gf.float()
    if metric == "cosine":
        return torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1), None
    # ||q-g||^2 = ||q||^2 + ||g||^2 - 2 q.g; ||q||^2 is constant per query, so rank by q.g - ||g||^2 / 2.
    # Sum of squares over row blocks: no second gallery-sized temporary at MSMT scale.
    sq = torch.cat([(block * block).sum(1) for block in gf.split(1 << 14)])
    return qf, gf, sq.mul_(-0.5)


def pairwise_scores(query: Tensor, gallery: Tensor, half_sq_norms: Tensor | None) -> Tensor:
    """Ranking scores (higher = closer) of prepared features: cosine, or q.g - |g|^2/2 (squared Euclidean)."""
    if half_sq_norms is None:
        return query @ gallery.T
    return torch.addmm(half_sq_norms.unsqueeze(0), query, gallery.T)


def _rank_keys(scores: Tensor) -> Tensor:
    """int64 keys ordered like (score descending, gallery index ascending): larger key = better rank.

    High 32 bits: the float32 bit pattern mapped to a signed int of the same order; low 32 bits:
    (2^32 - 1 - gallery index), the stable-sort tie-break. Consumes `scores`.
    """
    scores.add_(0.0)  # -0.0 -> +0.0, so that both zeros tie as floats compare
    bits = scores.view(torch.int32)
    flip = bits >> 31  # -1 for negative floats, 0 otherwise
    flip &= 0x7FFFFFFF
    bits ^= flip  # negative floats: reverse magnitude order -> signed-int order == float order
    del flip
    keys = bits.to(torch.int64)
    keys <<= 32
    keys += _LOW_BITS - torch.arange(scores.shape[1], device=scores.device, dtype=torch.int64)
    return keys


class _PidIndex:
    """Gallery items grouped by pid, to list each query's same-pid items without a dense mask."""

    def __init__(self, pids: Tensor) -> None:
        self.order = torch.argsort(pids, stable=True)
        self.uniq, counts = torch.unique_consecutive(pids[self.order], return_counts=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts

    def pairs(self, query_pids: Tensor) -> tuple[Tensor, Tensor]:
        """(row, gallery col) for every gallery item sharing the pid of query row `row`; rows ascending."""
        pos = torch.searchsorted(self.uniq, query_pids).clamp_(max=self.uniq.numel() - 1)
        found = self.uniq[pos] == query_pids
        lens = torch.where(found, self.counts[pos], torch.zeros_like(pos))
        rows = torch.repeat_interleave(torch.arange(query_pids.numel(), device=lens.device), lens)
        first = torch.repeat_interleave(self.starts[pos] - (torch.cumsum(lens, 0) - lens), lens)
        cols = self.order[first + torch.arange(rows.numel(), device=lens.device)]
        return rows, cols


def _chunk_positive_ranks(keys: Tensor, rows: Tensor, pos_cols: Tensor, rm_rows: Tensor, rm_cols: Tensor,
                          num_pos: Tensor) -> Tensor:
    """1-based ranks of each query's positives among its kept gallery items, (B, maxP) ascending, 0-padded.

    `rows`/`pos_cols`: positive (row, col) pairs, rows ascending; `rm_*`: removed same-camera pairs.
    """
    b = keys.shape[0]
    max_p = int(num_pos.max()) if num_pos.numel() else 0
    if max_p == 0:
        return torch.zeros(b, 0, dtype=torch.int64, device=keys.device)
    row_start = torch.cumsum(num_pos, 0) - num_pos
    slot = torch.arange(rows.numel(), device=keys.device) - row_start[rows]
    pos_keys = torch.full((b, max_p), _INT64_MAX, dtype=torch.int64, device=keys.device)
    pos_keys[rows, slot] = keys[rows, pos_cols]
    pos_keys = pos_keys.sort(dim=1).values  # ascending; padding (INT64_MAX > any key) at the end
    # bucket[i, g] = number of positives of query i with key < key[i, g]; then the number of kept items
    # above positive m (m-th smallest key) = number of kept items in buckets > m.
    width = max_p + 1
    small = b * width < 2**31  # int32 buckets halve the memory traffic of the two passes below
    bucket = torch.searchsorted(pos_keys, keys, out_int32=small)
    bucket += (torch.arange(b, device=keys.device, dtype=bucket.dtype) * width).unsqueeze(1)
    hist = torch.bincount(bucket.view(-1), minlength=b * width)
    if rm_rows.numel():
        hist -= torch.bincount(bucket[rm_rows, rm_cols], minlength=b * width)
    del bucket
    hist = hist.view(b, width)
    above = hist.flip(1).cumsum(1).flip(1)[:, 1:]  # above[:, m] = sum_{t > m} hist[:, t]
    ranks = above + 1  # ranks[:, m]: rank of the positive with the m-th smallest key (worst first)
    valid = torch.arange(max_p, device=keys.device).unsqueeze(0) < num_pos.unsqueeze(1)
    # Reorder best-first (ascending rank) within each row: reverse the first num_pos[i] entries.
    idx = (num_pos.unsqueeze(1) - 1 - torch.arange(max_p, device=keys.device).unsqueeze(0)).clamp_(min=0)
    return torch.where(valid, ranks.gather(1, idx), torch.zeros_like(ranks))


def _query_stats(ranks: Tensor, num_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-query (first-hit rank, AP, INP) from best-first positive ranks (0-padded)."""
    j = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64).unsqueeze(0)
    valid = ranks > 0
    prec = torch.where(valid, j / ranks.clamp(min=1).double(), torch.zeros((), dtype=torch.float64,
                                                                        device=ranks.device))
    ap = prec.sum(1) / num_pos.double()
    last = ranks.gather(1, (num_pos - 1).unsqueeze(1)).squeeze(1)
    inp = num_pos.double() / last.double()
    return ranks[:, 0], ap, inp


def evaluate(
    query_feats: Tensor | np.ndarray,
    gallery_feats: Tensor | np.ndarray,
    query_pids: Tensor | np.ndarray | Sequence[int],
    query_camids: Tensor | np.ndarray | Sequence[int],
    gallery_pids: Tensor | np.ndarray | Sequence[int],
    gallery_camids: Tensor | np.ndarray | Sequence[int],
    *,
    metric: Metric = "cosine",
    ranks: Sequence[int] = (1, 5, 10),
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> ReIDMetrics:
    """CMC / mAP / mINP of the single-query protocol (module docstring). Exact, chunked over queries.

    Runs on the device of `query_feats` (CPU for numpy input); features are compared in float32.
    `metric`: 'cosine' (rows L2-normalised here) or 'euclidean' (squared distance). `chunk_size`:
    queries per chunk (None: `default_chunk_size(num_gallery)`, ~200 MB of working memory).
    Raises ValueError on malformed input or when no query has a valid match.
    """
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"evaluate: metric must be 'cosine' or 'euclidean', got {metric!r}")
    if max_rank < 1 or any(int(k) < 1 for k in ranks):
        raise ValueError(f"evaluate: max_rank and ranks must be >= 1, got max_rank={max_rank}, ranks={ranks}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"evaluate: chunk_size must be >= 1 or None, got {chunk_size}")
    qf = _to_tensor(query_feats, None)
    device = qf.device
    gf = _to_tensor(gallery_feats, device)
    qp, qc, gp, gc = (_to_tensor(x, device) for x in (query_pids, query_camids, gallery_pids, gallery_camids))
    _check_inputs(qf, gf, qp, qc, gp, gc)
    qp, qc, gp, gc = qp.long(), qc.long(), gp.long(), gc.long()
    keep = gp != JUNK_PID
    if not bool(keep.all()):  # junk is removed for every query: drop it once (order, hence ties, kept)
        gf, gp, gc = gf[keep], gp[keep], gc[keep]
        if gf.shape[0] == 0:
            raise ValueError("evaluate: the gallery holds only junk (pid -1) items")
    q_all, g_all, half_sq = _prepare_features(qf, gf, metric)
    index = _PidIndex(gp)
    chunk = chunk_size or default_chunk_size(g_all.shape[0])

    firsts, aps, inps = [], [], []
    num_skipped = 0
    with torch.no_grad():
        for start in range(0, q_all.shape[0], chunk):
            stop = min(start + chunk, q_all.shape[0])
            rows, cols = index.pairs(qp[start:stop])
            same_cam = gc[cols] == qc[start:stop][rows]
            pos_rows, pos_cols = rows[~same_cam], cols[~same_cam]
            num_pos = torch.bincount(pos_rows, minlength=stop - start)
            has = num_pos > 0
            num_skipped += int((~has).sum())
            if not bool(has.any()):
                continue
            keys = _rank_keys(pairwise_scores(q_all[start:stop], g_all, half_sq))
            pos_ranks = _chunk_positive_ranks(keys, pos_rows, pos_cols, rows[same_cam], cols[same_cam], num_pos)
            del keys
            first, ap, inp = _query_stats(pos_ranks[has], num_pos[has])
            firsts.append(first)
            aps.append(ap)
            inps.append(inp)
    if not firsts:
        raise ValueError(f"evaluate: none of the {q_all.shape[0]} queries has a valid match in the gallery "
                         "(same pid on another camera); check the query/gallery split")
    return _summarise(torch.cat(firsts), torch.cat(aps), torch.cat(inps), num_skipped, ranks, max_rank)


def _summarise(first: Tensor, ap: Tensor, inp: Tensor, num_skipped: int, ranks: Sequence[int],
               max_rank: int) -> ReIDMetrics:
    first = first.cpu()
    ks = torch.arange(1, max_rank + 1)
    cmc = (first.unsqueeze(0) <= ks.unsqueeze(1)).double().mean(1)

    def rank_at(k: int) -> float:
        return float((first <= k).double().mean())

    return ReIDMetrics(
        rank1=rank_at(1), rank5=rank_at(5), rank10=rank_at(10),
        mAP=float(ap.double().mean()), mINP=float(inp.double().mean()), cmc=cmc,
        num_valid=int(first.numel()), num_skipped=num_skipped,
        ranks={int(k): rank_at(int(k)) for k in ranks},
    )
