"""Tracklet-level (video) re-ID evaluation: frame features -> tracklet features -> CMC / mAP.

Protocol decisions (issue 18; SSLR spec §6.1 and §8, UGA spec §8.1 and §10):

* **Tracklet feature** = mean of its frame features, then L2-normalised (`normalize=True`), as the image path
  L2-normalises every test feature (`Backbone.extract`); the frame features are averaged as given (they
  are unit vectors already when they come from `extract`). Under `metric="cosine"` the final
  normalisation does not change any ranking; under `"euclidean"` it puts tracklets on the unit sphere
  like images.
* **Frames: all of them by default** (`num_frames=None`). SSLR's spec (§5: "average of all frame features
  in the tracklet"; BUC's code evaluates on all frames) and UGA's (§8.1: centres from all frames) say so,
  as do the common video baselines' test-time "all"/"dense" modes. torchreid's data manager defaults to
  `seq_len=15` frames sampled "evenly" for its loaders, a batching convenience, not the papers' protocol;
  it is available as `num_frames=k`: the k frames at positions floor(j (n-1) / (k-1)), j = 0..k-1, of a
  tracklet of n > k frames (`np.linspace(0, n-1, k)` rounded down, computed exactly in integers; first
  and last frame always in, deterministic); a tracklet of n <= k frames uses all n (no padding by
  repetition, so no frame weighs more than another).
* **MARS / DukeMTMC-VideoReID** (`evaluate_video`): the image protocol of `core.evaluation.evaluate`
  applied to tracklets, unchanged: same identity on the same camera removed per query, junk (pid -1)
  removed for every query, distractors (pid 0, gallery only) kept as negatives, ties broken by gallery
  index; Rank-1/5/10/20, mAP and mINP. This is the MARS release's evaluation rule. A query that shares a
  tracklet with the gallery (MARS' gallery may hold the query tracklets) is removed from its own ranking
  by the same-camera rule.
* **PRID2011 / iLIDS-VID** (`evaluate_splits`): per split, probe = first-camera tracklets of the test
  identities, gallery = second-camera tracklets of the test identities (`cross_camera_split`), exactly one
  true match per probe (checked); single-gallery-shot CMC = the rank of that match, ties by gallery index.
  Rank-k and the CMC curve are averaged over the splits with equal weight (the usual 10 splits);
  per-split values are kept.

Memory: pooling walks the frames in chunks (`chunk_frames` rows) and accumulates per-tracklet sums with
`index_add_` (no frame x tracklet matrix); ranking is `evaluate`'s, chunked over queries. On CUDA the
float atomics of `index_add_` may change the last bit of a sum from run to run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mprd.core.evaluation import Metric, ReIDMetrics, _to_tensor, evaluate

__all__ = ["VIDEO_RANKS", "SplitCMC", "SplitFeatures", "cross_camera_split", "evaluate_splits", "evaluate_video",
           "even_frame_indices", "single_shot_cmc", "tracklet_features"]

VIDEO_RANKS = (1, 5, 10, 20)
_CHUNK_ELEMENTS = 1 << 24  # frame rows per pooling chunk x feature width (~64 MB of float32)

ArrayLike = Tensor | np.ndarray | Sequence[int]


# ------------------------------------------------------------------------------------------------ pooling
def _check_offsets(offsets: ArrayLike, num_frames_total: int, device: torch.device) -> Tensor:
    """CSR offsets as int64 on `device`: 1-D, offsets[0] = 0, offsets[-1] = #frames, every tracklet non-empty."""
    off = _to_tensor(offsets, device)
    if off.dim() != 1 or off.numel() < 2:
        raise ValueError(f"tracklet offsets must be 1-D with num_tracklets + 1 >= 2 entries, got shape "
                         f"{tuple(off.shape)}")
    if off.is_floating_point() or off.is_complex() or off.dtype == torch.bool:
        raise ValueError(f"tracklet offsets must hold integers, got dtype {off.dtype}")
    off = off.long()
    if int(off[0]) != 0 or int(off[-1]) != num_frames_total:
        raise ValueError(f"tracklet offsets must run from 0 to the number of frame features "
                         f"({num_frames_total}), got {int(off[0])} .. {int(off[-1])}")
    bad = torch.nonzero(off[1:] <= off[:-1]).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"tracklet {i} is empty or its offsets decrease (offsets[{i}] = {int(off[i])}, "
                         f"offsets[{i + 1}] = {int(off[i + 1])}); every tracklet needs at least one frame")
    return off


def even_frame_indices(offsets: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """(frame index, tracklet index) of the frames kept by even sampling, grouped by tracklet.

    A tracklet of n > k = `num_frames` frames keeps positions floor(j (n-1) / (k-1)), j = 0..k-1 (k = 1:
    its first frame); one of n <= k frames keeps all n. `offsets`: valid CSR offsets (int64).
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 or None (all frames), got {num_frames}")
    lengths = offsets[1:] - offsets[:-1]
    kept = lengths.clamp(max=num_frames)
    tracklet = torch.repeat_interleave(torch.arange(lengths.numel(), device=offsets.device), kept)
    j = torch.arange(tracklet.numel(), device=offsets.device) - (torch.cumsum(kept, 0) - kept)[tracklet]
    n = lengths[tracklet]
    pos = torch.where(n > num_frames, j * (n - 1) // max(num_frames - 1, 1), j)
    return offsets[tracklet] + pos, tracklet


def tracklet_features(
    frame_feats: Tensor | np.ndarray,
    offsets: ArrayLike,
    *,
    num_frames: int | None = None,
    normalize: bool = True,
    chunk_frames: int | None = None,
) -> Tensor:
    """(T, d) tracklet features: the mean of each tracklet's frame features, L2-normalised if `normalize`.

    `frame_feats` (F, d): frames grouped by tracklet; tracklet t owns rows offsets[t] .. offsets[t+1]-1
    (`offsets`: T + 1 CSR offsets, 0 .. F, no empty tracklet). `num_frames`: None = all frames (default),
    k = k frames sampled evenly (module docstring). Accumulates in float32 (float64 for float64 input) on
    the device of `frame_feats`, `chunk_frames` rows at a time (None: ~64 MB chunks).
    """
    feats = _to_tensor(frame_feats, None)
    if feats.dim() != 2 or feats.shape[0] == 0:
        raise ValueError(f"frame features must be a non-empty 2-D (frames x dim) array, got {tuple(feats.shape)}")
    if chunk_frames is not None and chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1 or None, got {chunk_frames}")
    dev = feats.device
    off = _check_offsets(offsets, feats.shape[0], dev)
    acc = torch.float64 if feats.dtype == torch.float64 else torch.float32
    sums = torch.zeros(off.numel() - 1, feats.shape[1], dtype=acc, device=dev)
    if num_frames is None:
        frames, owner, counts = None, None, off[1:] - off[:-1]
        total = feats.shape[0]
    else:
        frames, owner = even_frame_indices(off, num_frames)
        counts = torch.bincount(owner, minlength=sums.shape[0])
        total = frames.numel()
    chunk = chunk_frames or max(1, _CHUNK_ELEMENTS // max(1, feats.shape[1]))
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        if frames is None:  # contiguous rows: a view, owners by binary search in the offsets
            block = feats[start:stop]
            rows = torch.searchsorted(off, torch.arange(start, stop, device=dev), right=True) - 1
        else:
            block, rows = feats[frames[start:stop]], owner[start:stop]
        sums.index_add_(0, rows, block.to(acc))
    means = sums.div_(counts.unsqueeze(1).to(acc))
    return torch.nn.functional.normalize(means, dim=1) if normalize else means


# ------------------------------------------------------------------------------- MARS / Duke-video protocol
def evaluate_video(
    query_feats: Tensor | np.ndarray,
    gallery_feats: Tensor | np.ndarray,
    query_pids: ArrayLike,
    query_camids: ArrayLike,
    gallery_pids: ArrayLike,
    gallery_camids: ArrayLike,
    *,
    metric: Metric = "cosine",
    ranks: Sequence[int] = VIDEO_RANKS,
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> ReIDMetrics:
    """MARS / DukeMTMC-VideoReID protocol on tracklet features (one row per tracklet): `evaluate`'s rules
    (same-identity-same-camera removal, junk -1 removed, distractors 0 kept), Rank-1/5/10/20, mAP, mINP."""
    return evaluate(query_feats, gallery_feats, query_pids, query_camids, gallery_pids, gallery_camids,
                    metric=metric, ranks=ranks, max_rank=max_rank, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------ PRID / iLIDS-VID
class SplitFeatures(NamedTuple):
    """One PRID2011 / iLIDS-VID split: probe (first camera) and gallery (second camera) tracklet features."""

    probe_feats: Tensor | np.ndarray
    gallery_feats: Tensor | np.ndarray
    probe_pids: ArrayLike
    gallery_pids: ArrayLike


@dataclass
class SplitCMC:
    """CMC averaged over splits (fractions in [0, 1]); `cmc[k-1]` = mean Rank-k; per-split values kept."""

    ranks: dict[int, float]
    cmc: Tensor  # (max_rank,) float64, mean over splits
    per_split: list[ReIDMetrics]

    @property
    def per_split_ranks(self) -> list[dict[int, float]]:
        return [dict(m.ranks) for m in self.per_split]

    def as_dict(self, percent: bool = True) -> dict[str, float]:
        """Flat dict for logging: rank1, rank5, rank10, rank20 (the requested ranks), means over the splits."""
        scale = 100.0 if percent else 1.0
        return {f"rank{k}": float(v) * scale for k, v in sorted(self.ranks.items())}


def cross_camera_split(
    feats: Tensor | np.ndarray,
    pids: ArrayLike,
    camids: ArrayLike,
    test_pids: ArrayLike,
    *,
    probe_camid: int = 0,
    gallery_camid: int = 1,
) -> SplitFeatures:
    """The split's probe (camera `probe_camid`) and gallery (camera `gallery_camid`) tracklets of the test
    identities, picked from every tracklet's feature / pid / camid (tracklet order kept)."""
    f = _to_tensor(feats, None)
    p, c, test = (_to_tensor(x, f.device).long() for x in (pids, camids, test_pids))
    if f.dim() != 2 or p.shape != (f.shape[0],) or c.shape != (f.shape[0],):
        raise ValueError(f"cross_camera_split: expected (T, d) features with T pids and camids, got "
                         f"{tuple(f.shape)}, {tuple(p.shape)}, {tuple(c.shape)}")
    in_test = torch.isin(p, test.flatten())
    probe, gallery = in_test & (c == probe_camid), in_test & (c == gallery_camid)
    return SplitFeatures(f[probe], f[gallery], p[probe], p[gallery])


def _check_single_match(probe_pids: Tensor, gallery_pids: Tensor) -> None:
    """Every probe pid occurs exactly once in the gallery (single-gallery-shot CMC)."""
    uniq, counts = torch.unique(gallery_pids, return_counts=True)
    pos = torch.searchsorted(uniq, probe_pids).clamp_(max=uniq.numel() - 1)
    matches = torch.where(uniq[pos] == probe_pids, counts[pos], torch.zeros_like(pos))
    bad = torch.nonzero(matches != 1).flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(f"single-shot CMC: probe {i} (pid {int(probe_pids[i])}) has {int(matches[i])} true "
                         "matches in the gallery; each probe needs exactly one")


def single_shot_cmc(
    probe_feats: Tensor | np.ndarray,
    gallery_feats: Tensor | np.ndarray,
    probe_pids: ArrayLike,
    gallery_pids: ArrayLike,
    *,
    metric: Metric = "cosine",
    ranks: Sequence[int] = VIDEO_RANKS,
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> ReIDMetrics:
    """One split's single-gallery-shot CMC: probe and gallery are different cameras and every probe has
    exactly one true match (ValueError otherwise). `mAP` is then the mean reciprocal rank of that match."""
    qp, gp = _to_tensor(probe_pids, None), _to_tensor(gallery_pids, None)
    if qp.dim() != 1 or gp.dim() != 1:
        raise ValueError(f"single-shot CMC: pids must be 1-D, got {tuple(qp.shape)} and {tuple(gp.shape)}")
    if qp.numel() and gp.numel():
        _check_single_match(qp.long(), gp.long())
    # cameras 0 / 1: nothing is removed by the same-camera rule; `evaluate` checks shapes and features
    return evaluate(probe_feats, gallery_feats, qp, torch.zeros_like(qp), gp, torch.ones_like(gp),
                    metric=metric, ranks=ranks, max_rank=max_rank, chunk_size=chunk_size)


def evaluate_splits(
    splits: Sequence[SplitFeatures | tuple],
    *,
    metric: Metric = "cosine",
    ranks: Sequence[int] = VIDEO_RANKS,
    max_rank: int = 50,
    chunk_size: int | None = None,
) -> SplitCMC:
    """PRID2011 / iLIDS-VID protocol: `single_shot_cmc` per split, Rank-k and CMC averaged over the splits."""
    if len(splits) == 0:
        raise ValueError("evaluate_splits: no splits given")
    per_split = []
    for i, split in enumerate(splits):
        try:
            per_split.append(single_shot_cmc(*SplitFeatures(*split), metric=metric, ranks=ranks,
                                             max_rank=max_rank, chunk_size=chunk_size))
        except ValueError as err:
            raise ValueError(f"split {i}: {err}") from err
    cmc = torch.stack([m.cmc for m in per_split]).mean(0)
    mean_ranks = {int(k): float(np.mean([m.ranks[int(k)] for m in per_split])) for k in ranks}
    return SplitCMC(ranks=mean_ranks, cmc=cmc, per_split=per_split)
