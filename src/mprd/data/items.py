"""Batch items: torch Datasets over decoded pixels (training draws with CamStyle, ordered split images).

Each returns whole batches through ``__getitems__``, so a batched transform runs once per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from mprd.data.decode import Pixels

Batch = dict[str, torch.Tensor]


class KeepUint8:
    """Batch "transform" of `device_augment`: the uint8 batch (already at the target size) as it is."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images


def passthrough_collate(batch: Batch) -> Batch:
    """The datasets below collate themselves (``__getitems__``); the DataLoader must not re-collate."""
    return batch


class TrainDraws(Dataset):
    """Training draws: slot i → a uniform pick among {real image, its CamStyle copies}, augmented.

    `pixels` rows 0..N-1 are the real images; the CamStyle copies of slot i are rows
    N + offsets[i] .. N + offsets[i + 1] - 1.
    """

    def __init__(self, pixels: Pixels, num_real: int, offsets: torch.Tensor, camids: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if (transform is None) == (batch_transform is None):
            raise ValueError("give exactly one of transform (per image) and batch_transform")
        self.pixels, self.num_real, self.offsets, self.camids = pixels, num_real, offsets, camids
        self.transform, self.batch_transform = transform, batch_transform

    def __len__(self) -> int:
        return self.num_real

    def draw_rows(self, index: torch.Tensor) -> torch.Tensor:
        """Pixel row of one uniform draw among {real, copies} per slot in `index`."""
        start, count = self.offsets[index], self.offsets[index + 1] - self.offsets[index]
        pick = (torch.rand(index.shape[0]) * (count + 1)).long().clamp_(max=count)  # 0 = real
        return torch.where(pick == 0, index, self.num_real + start + pick - 1)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rows = self.draw_rows(torch.tensor([i]))
        if self.transform is not None:
            image = self.transform(self.pixels.one(int(rows[0])))
        else:  # batched mode asked for one item: a batch of one
            assert self.batch_transform is not None
            image = self.batch_transform(self.pixels.many(rows))[0]
        return {"image": image, "index": i, "camid": int(self.camids[i])}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        if self.batch_transform is None:
            return default_collate([self[i] for i in indices])
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.batch_transform(self.pixels.many(self.draw_rows(index)))
        return {"image": images, "index": index, "camid": self.camids[index]}


class SplitImages(Dataset):
    """Fixed order images of one split → ``{"image", "index"}``; `rows[k]` is the record index of item k."""

    def __init__(self, pixels: Pixels, rows: Sequence[int], transform: Callable[[torch.Tensor], torch.Tensor],
                 batched: bool):
        self.pixels, self.rows = pixels, torch.as_tensor(list(rows), dtype=torch.long)
        self.transform, self.batched = transform, batched

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, k: int) -> dict[str, Any]:
        row = int(self.rows[k])
        return {"image": self.transform(self.pixels.one(row)), "index": row}

    def __getitems__(self, ks: Sequence[int]) -> Batch:
        if not self.batched:
            return default_collate([self[k] for k in ks])
        rows = self.rows[torch.as_tensor(ks, dtype=torch.long)]
        return {"image": self.transform(self.pixels.many(rows)), "index": rows}



# --------------------------------------------------------------------------------------------------- video
def random_frames(offsets: torch.Tensor, index: torch.Tensor, count: int) -> torch.Tensor:
    """(B, count) frame rows for the tracklets `index`: `count` frames drawn at random within each tracklet.

    Tracklet t owns rows offsets[t] .. offsets[t+1]-1. One of n >= count frames gives `count` distinct frames
    (uniform without replacement); a shorter one gives all its n frames plus count - n drawn with replacement.
    Each row is sorted (temporal order). Uses the global torch RNG, as `TrainDraws.draw_rows` does.
    """
    start, n = offsets[index], offsets[index + 1] - offsets[index]
    width = max(int(n.max()), count)
    keys = torch.rand(index.shape[0], width)
    keys[torch.arange(width)[None] >= n[:, None]] = 2.0  # past the tracklet's end: sorted last
    pos = keys.argsort(dim=1)[:, :count]
    extra = (torch.rand(index.shape[0], count) * n[:, None]).long()
    pos = torch.where(torch.arange(count)[None] < n[:, None], pos, extra)
    return start[:, None] + pos.sort(dim=1).values


class TrackletDraws(Dataset):
    """Video training draws: tracklet t → `frames` frames drawn at random within it (`random_frames`), augmented
    frame by frame → ``{"image": (B, S, 3, H, W), "index": tracklet, "camid"}``; the module pools over S.

    `pixels` holds every frame of the split, tracklet after tracklet (`offsets`, CSR). A DataLoader's sampler
    gives the tracklet indices (a shuffle for training; a list of indices for perturbed views).
    """

    def __init__(self, pixels: Pixels, offsets: torch.Tensor, camids: torch.Tensor, frames: int,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if (transform is None) == (batch_transform is None):
            raise ValueError("give exactly one of transform (per image) and batch_transform")
        if frames < 1:
            raise ValueError(f"frames per tracklet must be >= 1, got {frames}")
        self.pixels, self.offsets, self.camids, self.frames = pixels, offsets, camids, int(frames)
        self.transform, self.batch_transform = transform, batch_transform

    def __len__(self) -> int:
        return int(self.offsets.numel()) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.__getitems__([i])
        return {"image": batch["image"][0], "index": i, "camid": int(self.camids[i])}

    def __getitems__(self, indices: Sequence[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        rows = random_frames(self.offsets, index, self.frames).reshape(-1)
        if self.batch_transform is not None:
            images = self.batch_transform(self.pixels.many(rows))
        else:
            images = torch.stack([self.transform(self.pixels.one(int(r))) for r in rows.tolist()])  # type: ignore[misc]
        return {"image": images.reshape(index.shape[0], self.frames, *images.shape[1:]), "index": index,
                "camid": self.camids[index]}


class SelectedFrames(SplitImages):
    """Frames `rows` of a split, in that order → ``{"image", "index"}`` with index = position k in `rows`:
    the order in which `core.video_evaluation.tracklet_features` pools them (and DDP's gather sorts them)."""

    def __getitem__(self, k: int) -> dict[str, Any]:
        return {**super().__getitem__(k), "index": k}

    def __getitems__(self, ks: Sequence[int]) -> Batch:
        return {**super().__getitems__(ks), "index": torch.as_tensor(list(ks), dtype=torch.long)}
