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

