"""UGA's data unit (§4.1): per-camera tracklets, the only place training reads identities, and the noisy
tracklets of UGA Table 6 (mislabeling, ID duplication)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mprd.data.records import DatasetError, ImageRecord, TrackletRecord
from mprd.methods.uga.config import NoiseConfig


def tracklets_from_records(records: Sequence[ImageRecord] | Sequence[TrackletRecord], seed: int = 0,
                           noise: NoiseConfig | None = None, real: bool = False) -> tuple[Tensor, Tensor]:
    """Group images into per-camera "tracklets": all images of one pid in one camera (UGA §4.1, TAUDL/UTAL).

    This uses ground-truth identities *within* each camera (intra-camera labels), never across cameras.
    Returns (tracklet id per image (N,), camera id per tracklet (M,)). Tracklets are numbered camera by
    camera (ascending camid) and, inside a camera, in a seeded random order (the paper's "unique random
    pseudo label"), so ids carry no identity order. `noise` (UGA Table 6) merges, then splits, a fraction of
    each camera's tracklets (`noisy_tracklets`); inactive noise is the identity. Real tracklets (video
    datasets, `real=True`): the units are the **frames** of the tracklet records, in record then frame order
    (the data module's train frame rows), and each record is its own tracklet (no pid is read); the noise then
    merges whole tracklets and deals a split tracklet's frames out.
    """
    if len(records) == 0:
        raise ValueError("tracklets_from_records: no records (the train split is empty)")
    cam = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    if real:  # one group per record, one unit per frame: no identity is read
        lengths = np.fromiter((r.num_frames for r in records), dtype=np.int64, count=len(records))
        owner, cam = np.repeat(np.arange(len(records), dtype=np.int64), lengths), np.repeat(cam, lengths)
    else:
        owner = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
        bad = np.flatnonzero(owner < 0)
        if bad.size:
            r = records[int(bad[0])]
            where = f"image {r.path}" if isinstance(r, ImageRecord) else f"tracklet of {r.paths[0]}"
            raise DatasetError(f"tracklets_from_records: train {where} has pid {r.pid}; UGA's tracklets need "
                               "a non-negative identity for every training image (junk/distractors belong to test "
                               "splits)")
    unit = owner
    if noise is not None and noise.active:
        clean, group = np.unique(np.stack([cam, owner], 1), axis=0, return_inverse=True)
        unit = noisy_tracklets(group.reshape(-1), clean[:, 0], noise, seed)
    pairs, inverse = np.unique(np.stack([cam, unit], 1), axis=0, return_inverse=True)  # sorted by (cam, unit)
    random_key = np.random.default_rng(seed).permutation(len(pairs))
    order = np.lexsort((random_key, pairs[:, 0]))  # camera first, then the random key
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[order] = np.arange(len(pairs))
    return torch.from_numpy(rank[inverse.reshape(-1)]), torch.from_numpy(pairs[order, 0].copy())


def one_tracklet_per_camera(records: Sequence[TrackletRecord], seed: int = 0) -> list[int]:
    """UGA on MARS (§4.1): "we randomly sample one tracklet for a person in one camera" -> the positions of the
    kept train tracklets, ascending; the others are dropped. Reads the identities (the choice needs to know
    which tracklets share a person), seeded by the run's seed on a stream of its own."""
    if len(records) == 0:
        raise ValueError("one_tracklet_per_camera: no records (the train split is empty)")
    pid = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    cam = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    key = np.random.default_rng([int(seed), 0x4D415253]).permutation(len(records))  # "MARS"
    order = np.lexsort((key, cam, pid))  # by (pid, camera), random inside each pair
    first = np.ones(order.size, dtype=bool)
    first[1:] = (pid[order[1:]] != pid[order[:-1]]) | (cam[order[1:]] != cam[order[:-1]])
    return sorted(order[first].tolist())


def _round_half_up(x: np.ndarray) -> np.ndarray:
    """Counts from fractions, rounded half up; the epsilon absorbs float error (0.15 * 10 = 1.4999999999999998)."""
    return np.floor(x + 0.5 + 1e-9).astype(np.int64)


def _shuffled_within_camera(camera: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, rank, counts): groups sorted by camera then at random, each group's rank inside its camera in
    that order (indexed by group), and the number of groups per camera (indexed by camid)."""
    order = np.lexsort((rng.permutation(camera.size), camera))
    counts = np.bincount(camera, minlength=int(camera.max()) + 1)
    starts = np.cumsum(counts) - counts
    rank = np.empty(camera.size, dtype=np.int64)
    rank[order] = np.arange(camera.size) - starts[camera[order]]
    return order, rank, counts


def merge_tracklets(group: np.ndarray, camera_of_group: np.ndarray, fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Mislabeling (UGA Table 6): in each camera with M_t tracklets, n_t = round(fraction · M_t) (at most
    M_t - 1) tracklets chosen at random take the label of a random *unchosen* tracklet of the same camera,
    so camera t keeps exactly M_t - n_t labels. Returns the new group id of every image."""
    order, rank, counts = _shuffled_within_camera(camera_of_group, rng)
    moved = np.minimum(_round_half_up(fraction * counts), np.maximum(counts - 1, 0))
    source = rank < moved[camera_of_group]  # by group
    starts = np.cumsum(counts) - counts
    cam = camera_of_group[source]
    # a uniform position among the camera's unchosen tracklets (sorted positions moved_t .. M_t - 1)
    pick = starts[cam] + moved[cam] + np.floor(rng.random(cam.size) * (counts[cam] - moved[cam])).astype(np.int64)
    mapping = np.arange(camera_of_group.size)
    mapping[np.flatnonzero(source)] = order[pick]
    return mapping[group]


def split_tracklets(group: np.ndarray, camera_of_group: np.ndarray, fraction: float, parts: int,
                    rng: np.random.Generator) -> np.ndarray:
    """ID duplication (UGA Table 6): in each camera, round(fraction · M_t) tracklets chosen at random are split
    into `parts` pseudo labels, their images dealt out in a random order (a tracklet of n < parts images gets
    n labels). Returns the new group id of every image (group · parts + part)."""
    _, rank, counts = _shuffled_within_camera(camera_of_group, rng)
    chosen = rank < _round_half_up(fraction * counts)[camera_of_group]  # by group
    by_group = np.lexsort((rng.permutation(group.size), group))  # images grouped, random inside a group
    sizes = np.bincount(group, minlength=camera_of_group.size)
    position = np.empty(group.size, dtype=np.int64)
    position[by_group] = np.arange(group.size) - (np.cumsum(sizes) - sizes)[group[by_group]]
    return group * parts + np.where(chosen[group], position % parts, 0)


def noisy_tracklets(group: np.ndarray, camera_of_group: np.ndarray, noise: NoiseConfig, seed: int) -> np.ndarray:
    """UGA Table 6's noise on the clean tracklets (group id per image, camera per group): mislabeling
    (`merge_tracklets`), then ID duplication (`split_tracklets`) of the merged tracklets. Deterministic given
    `seed` (a random stream of its own). Returns a group id per image; the ids stay inside one camera."""
    rng = np.random.default_rng([int(seed), 0x7461626C6536])  # "table6": independent of the label order
    if noise.mislabeling > 0:
        group = merge_tracklets(group, camera_of_group, noise.mislabeling, rng)
        kept, group = np.unique(group, return_inverse=True)
        camera_of_group = camera_of_group[kept]
    if noise.duplication > 0:
        group = split_tracklets(group.reshape(-1), camera_of_group, noise.duplication, noise.duplication_parts, rng)
    return group.reshape(-1)


def tracklet_pids(records: Sequence[ImageRecord] | Sequence[TrackletRecord], tracklet: Tensor) -> Tensor:
    """Hidden pid of each tracklet (the pid of most of its images, the smallest on ties; a mislabeled tracklet
    mixes pids) — for the CVG precision/recall diagnostic only, never for a loss. `tracklet` has one entry per
    image, or per frame of tracklet records (as `tracklets_from_records(..., real=True)` returns it)."""
    pid = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    if records and isinstance(records[0], TrackletRecord):
        pid = np.repeat(pid, [r.num_frames for r in records])
    pairs, counts = np.unique(np.stack([tracklet.numpy(), pid], 1), axis=0, return_counts=True)
    best = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per tracklet: most images first, then smallest pid
    first = np.ones(best.size, dtype=bool)
    first[1:] = pairs[best[1:], 0] != pairs[best[:-1], 0]
    out = torch.full((int(tracklet.max()) + 1,), -1, dtype=torch.long)
    out[torch.from_numpy(pairs[best[first], 0])] = torch.from_numpy(pairs[best[first], 1])
    return out
