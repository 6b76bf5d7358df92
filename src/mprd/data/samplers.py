"""Samplers: the per-epoch shuffle, UGA's camera-balanced batches, and DDP's share of every global batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler


class EpochShuffle(Sampler[int]):
    """Uniform random permutation per epoch that depends only on (seed, epoch).

    Lightning calls `set_epoch` before each epoch; a loop that does not gets the next epoch automatically
    (each `__iter__` advances the epoch), so consecutive passes always differ.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0]
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(int(state))).tolist()
        self.epoch += 1
        return iter(order)


class CameraBalancedSampler(Sampler[int]):
    """Camera-balanced batches (UGA §4.2 "equably sampling"), flattened for a DataLoader of the same batch size.

    Every batch takes ``batch_size // T`` images from each of the T cameras; the ``batch_size % T`` extra ones
    rotate over the cameras from batch to batch, continuing across epochs (UGA spec §8.1: 7-8 per camera for 60
    images and 8 cameras). Within a camera, images come from an endless stream of seeded random permutations
    of that camera's images, so each image is reached once per cycle of its camera. An epoch has
    ``len(camids) // batch_size`` batches and depends only on (seed, epoch); `set_epoch` as `EpochShuffle`.
    """

    def __init__(self, camids: Sequence[int] | torch.Tensor, batch_size: int, seed: int):
        camids = torch.as_tensor(camids, dtype=torch.long).reshape(-1)
        self.cameras, inverse = torch.unique(camids, sorted=True, return_inverse=True)
        self.members = [torch.nonzero(inverse == t).flatten() for t in range(len(self.cameras))]
        n, cams = int(camids.numel()), len(self.cameras)
        if batch_size < max(cams, 1):
            raise ValueError(f"camera-balanced sampling: batch_size={batch_size} is smaller than the number of "
                             f"training cameras ({cams}); expected batch_size >= {cams}")
        if n // batch_size == 0:
            raise ValueError(f"camera-balanced sampling: {n} training images < batch_size {batch_size} "
                             "(no batch would be produced)")
        self.batch_size, self.seed, self.epoch = int(batch_size), int(seed), 0
        self.num_batches = n // self.batch_size
        self.base, self.extra = divmod(self.batch_size, cams)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def quotas(self, epoch: int) -> torch.Tensor:
        """(num_batches, T) images per camera in each batch of `epoch`; every row sums to batch_size."""
        cams = len(self.cameras)
        first = epoch * self.num_batches  # global index of the epoch's first batch
        slots = (first + torch.arange(self.num_batches))[:, None] * self.extra + torch.arange(self.extra)[None]
        extra = torch.zeros(self.num_batches, cams, dtype=torch.long)
        extra.scatter_add_(1, slots % cams, torch.ones_like(slots))
        return self.base + extra

    def _stream(self, t: int, start: int, count: int) -> torch.Tensor:
        """Positions [start, start + count) of camera t's stream of per-cycle random permutations."""
        members = self.members[t]
        size = int(members.numel())
        cycles = range(start // size, (start + count - 1) // size + 1) if count else range(0)
        perms = []
        for cycle in cycles:
            state = np.random.SeedSequence([self.seed, t, cycle]).generate_state(1, dtype=np.uint64)[0]
            perms.append(torch.randperm(size, generator=torch.Generator().manual_seed(int(state))))
        stream = torch.cat(perms) if perms else torch.zeros(0, dtype=torch.long)
        offset = start - (start // size) * size
        return members[stream[offset:offset + count]]

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches (lists of record indices, grouped by camera) of `epoch`."""
        cams = len(self.cameras)
        quotas = self.quotas(epoch)
        first = epoch * self.num_batches
        slots_before = first * self.extra  # extra images handed out before this epoch, in camera order
        chunks = []
        for t in range(cams):
            start = first * self.base + slots_before // cams + int(t < slots_before % cams)
            drawn = self._stream(t, start, int(quotas[:, t].sum()))
            chunks.append(torch.split(drawn, quotas[:, t].tolist()))
        return [torch.cat([chunks[t][b] for t in range(cams)]).tolist() for b in range(self.num_batches)]

    def __iter__(self):
        order = [i for batch in self.batches(self.epoch) for i in batch]
        self.epoch += 1
        return iter(order)


class GlobalBatchShard(DistributedSampler):
    """One rank's share of every global batch of `base` (DDP): rank r of W gets items [r·b, (r+1)·b) of each
    global batch of W·b items, in `base`'s order; the incomplete last global batch is dropped.

    So W ranks with per-rank batch b see, batch for batch, exactly the images that one process with batch
    W·b sees (the per-rank sets are disjoint and their union is that process's epoch), and an epoch still
    depends only on (seed, epoch). A `DistributedSampler` subclass, so Lightning uses it as it is instead of
    wrapping the base sampler in its own (which would pad, re-split and lose the per-epoch order).
    """

    def __init__(self, base: Sampler[int], per_rank: int, rank: int, world_size: int):
        if world_size < 1 or not 0 <= rank < world_size or per_rank < 1:
            raise ValueError(f"GlobalBatchShard: need world_size >= 1, 0 <= rank < world_size and per_rank >= 1; "
                             f"got rank={rank}, world_size={world_size}, per_rank={per_rank}")
        # DistributedSampler's own state is unused; the explicit rank/world size keep it from asking torch.distributed
        super().__init__(range(len(base)), num_replicas=world_size, rank=rank, shuffle=False)  # type: ignore[arg-type]
        self.base, self.per_rank = base, int(per_rank)
        self.global_batch = self.per_rank * world_size

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return (len(self.base) // self.global_batch) * self.per_rank

    def __iter__(self):
        order = list(self.base)
        decorrelate_rank_streams(self.rank)
        start = self.rank * self.per_rank
        mine = [order[b + start:b + start + self.per_rank]
                for b in range(0, len(order) - self.global_batch + 1, self.global_batch)]
        return iter([i for chunk in mine for i in chunk])


def decorrelate_rank_streams(rank: int) -> None:
    """Move rank r onto its own global torch random stream, derived from the stream every rank shares.

    Every rank reseeds alike at each epoch start (so a resumed run draws what an uninterrupted one draws);
    without this, rank r's k-th image of each batch would get the same random augmentation as rank 0's k-th.
    Called when a rank's training epoch starts iterating (deterministic in (seed, epoch, rank)).
    """
    shared = int(torch.randint(0, 2**62, (1,)))
    torch.manual_seed(shared + 1_000_003 * rank)


def distributed_context(trainer: Any) -> tuple[int, int]:
    """(global rank, world size) of the Lightning trainer, else of torch.distributed, else (0, 1)."""
    if trainer is not None and getattr(trainer, "world_size", 1) > 1:
        return int(trainer.global_rank), int(trainer.world_size)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def per_rank_batch(batch_size: int, world_size: int, setting: str = "data.batch_size") -> int:
    """`batch_size` is the global batch (what one process uses); each of `world_size` ranks takes an equal share."""
    if batch_size % world_size:
        raise ValueError(f"{setting}={batch_size} is the global batch and must split evenly over the {world_size} "
                         f"DDP processes (trainer.devices x trainer.num_nodes); use a multiple of {world_size}")
    return batch_size // world_size

