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

Implementation (exact, no per-query sort of the gallery): a positive's rank is 1 + the number of kept
gallery items ranked above it. Per query, the score range between its worst and best positive is cut
into equal bins by one monotone float map (score -> row * width + bin, clamped to the row); an item in a
higher bin scores strictly higher, so a per-row histogram of bins counts most items, and only the few
items sharing a bin with a positive are compared exactly, by one sort of int64 keys packing (row, score,
gallery index). The removed same-pid/same-camera items come from a pid -> gallery-items index (no
query x gallery mask) and are sent below every positive. Work is chunked over queries, and the chunk-sized
buffers are reused from chunk to chunk; peak extra memory is about 14 bytes x chunk_size x num_gallery.
At Market-1501 scale this adds about 0.2x the query x gallery matmul (one thread; a full argsort would add
~1.3x; `benchmarks/bench_evaluation.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from mprd.rerank import RerankParams

__all__ = ["JUNK_PID", "ReIDMetrics", "default_chunk_size", "evaluate", "pairwise_scores"]

Metric = Literal["cosine", "euclidean"]
JUNK_PID = -1
# Auto chunk: chunk_size * num_gallery <= this many elements (~12 B each at the peak -> ~200 MB).
_CHUNK_ELEMENTS = 1 << 24
_MAX_BIN_IDS = 1 << 24  # global bin ids are computed in float32, exact below 2^24


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
    """Queries per chunk so that one chunk's (query x gallery) working memory stays near 200 MB."""
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
    for name, feats in (("query_feats", qf), ("gallery_feats", gf)):
        # A finite float64 sum (one cheap pass) proves every entry finite; only otherwise look closer.
        if not bool(torch.isfinite(feats.sum(dtype=torch.float64))) and not bool(torch.isfinite(feats).all()):
            raise ValueError(f"evaluate: {name} contain NaN or inf")


def _prepare_features(qf: Tensor, gf: Tensor, metric: Metric) -> tuple[Tensor, Tensor, Tensor | None]:
    """float32 (query, gallery, -0.5*|g|^2 or None); cosine rows are L2-normalised here."""
    qf, gf = qf.float(), gf.float()
    if metric == "cosine":
        return torch.nn.functional.normalize(qf, dim=1), torch.nn.functional.normalize(gf, dim=1), None
    # ||q-g||^2 = ||q||^2 + ||g||^2 - 2 q.g; ||q||^2 is constant per query, so rank by q.g - ||g||^2 / 2.
    # Sum of squares over row blocks: no second gallery-sized temporary at MSMT scale.
    sq = torch.cat([(block * block).sum(1) for block in gf.split(1 << 14)])
    return qf, gf, sq.mul_(-0.5)


def pairwise_scores(query: Tensor, gallery: Tensor, half_sq_norms: Tensor | None, out: Tensor | None = None
                    ) -> Tensor:
    """Ranking scores (higher = closer) of prepared features: cosine, or q.g - |g|^2/2 (squared Euclidean)."""
    if half_sq_norms is None:
        return torch.mm(query, gallery.T, out=out)
    return torch.addmm(half_sq_norms.unsqueeze(0), query, gallery.T, out=out)


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


def _num_bins(num_gallery: int) -> int:
    """Score bins per query: ~16 gallery items per bin, at most 4096 (the histogram stays small)."""
    return min(4096, max(16, num_gallery // 16))


class _Workspace:
    """Chunk-sized buffers reused from chunk to chunk: a fresh (chunk x gallery) tensor is new memory from
    the OS each time (page faults on first touch), a cost comparable to the arithmetic done in it."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, numel: int, dtype: torch.dtype, device: torch.device, zero: bool = False) -> Tensor:
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = (torch.zeros if zero else torch.empty)(numel, dtype=dtype, device=device)
            self._buffers[name] = buf
        return buf[:numel]


def _chunk_positive_ranks(scores: Tensor, pos_rows: Tensor, pos_cols: Tensor, rm_rows: Tensor, rm_cols: Tensor,
                          work: _Workspace | None = None) -> tuple[Tensor, Tensor]:
    """(row, rank) of every positive of a chunk, sorted by row then rank; rank is 1-based among kept items.

    rank = 1 + #(kept items ranked above), found without sorting the rows:
    1. each row's score range [worst positive, best positive] is cut into equal bins; the float map
       score -> bin is monotone, so an item in a higher bin scores strictly higher (exact, not approximate);
       items below / above the range fall into one bottom / top bin;
    2. a per-row histogram of the bins counts the items in bins above each positive's bin;
    3. only items sharing a bin with a positive (few) are compared exactly: one sort of their
       (row, score, gallery index) keys, in which each (row, bin) is a contiguous run (bins are monotone
       in the score within a row).
    Removed same-camera items get score -inf: bottom bin, never above a positive. Consumes `scores`.
    `work`: buffers to reuse across calls (a new one when None).
    """
    work = work or _Workspace()
    b, g = scores.shape
    dev = scores.device
    pos_flat = pos_rows * g + pos_cols
    flat_scores = scores.view(-1)
    pos_scores = flat_scores[pos_flat]
    scores[rm_rows, rm_cols] = float("-inf")
    nb = _num_bins(g)
    width = nb + 3  # bins: bottom, 0..nb, top
    row_bits, col_bits = max(1, (b - 1).bit_length()), max(1, (g - 1).bit_length())
    if b * width >= _MAX_BIN_IDS or row_bits + 32 + col_bits > 62:
        raise ValueError(f"evaluate: chunk_size {b} is too large for a gallery of {g} (packed bin ids / keys)")
    inf = torch.full((b,), float("inf"), device=dev)
    lo = inf.scatter_reduce(0, pos_rows, pos_scores, "amin")  # +inf for rows without positives: all bottom
    hi = (-inf).scatter_reduce(0, pos_rows, pos_scores, "amax")
    span = hi - lo
    # 0 < scale < inf always, so score * scale is never 0 * inf = NaN (huge or zero spans included).
    scale = torch.where(span > 0, nb / span, torch.full_like(span, 2.0**40)).clamp_(2.0**-100, 2.0**40)
    # Global bin id in one float pass: row * width + 1 + (score - lo) * scale, clamped to the row's
    # [bottom, top] = [row * width, row * width + nb + 2]. Every step (product, sum, clamp, truncation) is
    # monotone in the score, which is all exactness needs: an item in a higher bin of its row scores higher.
    # (Rounding may move a bin edge; it never breaks the order. Ids < 2^24 are exact in float32.)
    first = torch.arange(b, device=dev, dtype=torch.float32) * width
    shift = first + 1 - lo * scale  # -inf where lo = +inf (no positive): every item of the row to the bottom
    x = work.get("x", b * g, torch.float32, dev).view(b, g)
    torch.addcmul(shift.unsqueeze(1), scores, scale.unsqueeze(1), out=x)
    x.clamp_(first.unsqueeze(1), (first + nb + 2).unsqueeze(1))
    flat = work.get("bins", b * g, torch.int32, dev)
    flat.copy_(x.view(-1))  # truncation: monotone too
    counts = torch.bincount(flat, minlength=b * width).view(b, width)
    above_bin = (counts.flip(1).cumsum(1).flip(1) - counts).view(-1)  # items of the row in strictly higher bins
    pos_bin = flat[pos_flat].long()
    pos_bin_table = torch.zeros(b * width, dtype=torch.bool, device=dev)
    pos_bin_table[pos_bin] = True
    near = torch.index_select(pos_bin_table, 0, flat, out=work.get("near", b * g, torch.bool, dev))
    cand = near.nonzero().squeeze(1)  # flat (row, col) of the items sharing a bin with a positive
    cand_bin = flat[cand].long()
    cand_rows = cand // g
    # key: (row, score ascending, gallery index descending); larger key within a row = better rank
    sbits = flat_scores[cand].add(0.0).view(torch.int32).to(torch.int64)  # + 0.0: -0.0 -> +0.0 (they tie)
    sbits = torch.where(sbits < 0, sbits ^ 0x7FFFFFFF, sbits) + 2**31  # unsigned, in the order of the floats
    key = (cand_rows << (32 + col_bits)) | (sbits << col_bits) | (g - 1 - (cand - cand_rows * g))
    order = torch.argsort(key)
    sorted_bin = cand_bin[order]  # non-decreasing: within a row, the bin is monotone in the score
    is_pos = work.get("is_pos", b * g, torch.bool, dev, zero=True)  # all False between calls
    is_pos[pos_flat] = True
    at = torch.nonzero(is_pos[cand[order]]).squeeze(1)  # sorted positions of the positives
    is_pos[pos_flat] = False
    p_bin = sorted_bin[at]
    above_in_bin = torch.searchsorted(sorted_bin, p_bin, right=True) - at - 1  # same bin, larger key
    ranks = 1 + above_bin[p_bin] + above_in_bin
    p_rows = p_bin // width
    order = torch.argsort(p_rows * (1 << 32) + ranks)
    return p_rows[order], ranks[order]


def _query_stats(rows: Tensor, ranks: Tensor, num_pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-query (first-hit rank, AP, INP) for queries with num_pos > 0; (rows, ranks) sorted by row, rank."""
    row_start = torch.cumsum(num_pos, 0) - num_pos
    j = torch.arange(rows.numel(), device=rows.device) - row_start[rows] + 1  # j-th hit of its query
    prec_sum = torch.zeros(num_pos.numel(), dtype=torch.float64, device=rows.device)
    prec_sum.index_add_(0, rows, j.double() / ranks.double())  # AP: precision at each correct hit
    has = num_pos > 0
    first = ranks[row_start[has]]
    last = ranks[(row_start + num_pos - 1)[has]]
    return first, prec_sum[has] / num_pos[has].double(), num_pos[has].double() / last.double()


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
    rerank: RerankParams | None = None,
) -> ReIDMetrics:
    """CMC / mAP / mINP of the single-query protocol (module docstring). Exact, chunked over queries.

    Runs on the device of `query_feats` (CPU for numpy input); features are compared in float32.
    `metric`: 'cosine' (rows L2-normalised here) or 'euclidean' (squared distance). `chunk_size`:
    queries per chunk (None: `default_chunk_size(num_gallery)`, ~200 MB of working memory).
    `rerank`: rank by the k-reciprocal re-ranked distance (`mprd.rerank`, on CPU) instead of the metric.
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
    work = _Workspace()
    if rerank is not None:
        from mprd.rerank import RerankScorer

        scorer = RerankScorer(qf, gf, metric, rerank)
        qp, qc, gp, gc = qp.cpu(), qc.cpu(), gp.cpu(), gc.cpu()
        num_query, num_gallery = qf.shape[0], gf.shape[0]
    else:
        q_all, g_all, half_sq = _prepare_features(qf, gf, metric)
        num_query, num_gallery = q_all.shape[0], g_all.shape[0]

        def scorer(start: int, stop: int) -> Tensor:
            out = work.get("scores", (stop - start) * num_gallery, torch.float32, q_all.device)
            return pairwise_scores(q_all[start:stop], g_all, half_sq, out.view(stop - start, num_gallery))

    index = _PidIndex(gp)
    # a chunk's global bin ids must stay below 2^24 (float32-exact); results never depend on the chunking
    bin_cap = max(1, (_MAX_BIN_IDS - 1) // (_num_bins(num_gallery) + 3))
    chunk = min(chunk_size or default_chunk_size(num_gallery), bin_cap)

    firsts, aps, inps = [], [], []
    num_skipped = 0
    with torch.no_grad():
        for start in range(0, num_query, chunk):
            stop = min(start + chunk, num_query)
            rows, cols = index.pairs(qp[start:stop])
            same_cam = gc[cols] == qc[start:stop][rows]
            pos_rows, pos_cols = rows[~same_cam], cols[~same_cam]
            num_pos = torch.bincount(pos_rows, minlength=stop - start)
            has = num_pos > 0
            num_skipped += int((~has).sum())
            if not bool(has.any()):
                continue
            scores = scorer(start, stop)
            pos_rows_sorted, ranks_sorted = _chunk_positive_ranks(scores, pos_rows, pos_cols, rows[same_cam],
                                                                  cols[same_cam], work)
            del scores
            first, ap, inp = _query_stats(pos_rows_sorted, ranks_sorted, num_pos)
            firsts.append(first)
            aps.append(ap)
            inps.append(inp)
    if not firsts:
        raise ValueError(f"evaluate: none of the {num_query} queries has a valid match in the gallery "
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
