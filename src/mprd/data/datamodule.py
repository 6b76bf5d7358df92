"""Lightning data module: training draws (with CamStyle), MPRD's perturbed views, and feature passes.

Training items are ``{"image", "index", "camid"}``: ``index`` is the memory slot (`ImageRecord.index`);
identity labels never reach a training batch (callers that may read pids, e.g. the `super` baseline or
the meta set, take them from ``self.data``). Sampling is uniform without replacement per epoch
(spec MPRD §6 item 20: no P×K sampler, the loss uses the memory); the permutation of epoch e depends only
on (seed, e). With CamStyle on, each draw of slot i picks uniformly among {real image, its CamStyle
copies} (spec MPRD §6 item 19; MLCR: "each M[i] combines features of different augmented samples of x_i").

Speed: ``in_memory=True`` decodes every needed image once into a uint8 tensor per split, already resized
to (height, width) (the first step of every transform, so the output is unchanged; images of varied
stored sizes, e.g. DukeMTMC, then stack). ``batched_augment=True`` replaces the per-image v2 pipeline of
training/perturbed draws by `BatchAugment` on whole batches (same operations, see transforms.py);
``device_augment=True`` instead ships uint8 training batches and runs `BatchAugment` after the transfer
to the accelerator (Lightning's `on_after_batch_transfer`). Measured in ``benchmarks/bench_dataloader.py``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, default_collate
from torchvision.transforms.v2 import functional as F

from mprd.data.records import DatasetError, ReIDData
from mprd.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PERTURB_KEYS,
    TRAIN_KEYS,
    BatchAugment,
    build_perturbed_transform,
    build_test_transform,
    build_train_transform,
)

log = logging.getLogger(__name__)

SPLITS = ("train", "query", "gallery")
Batch = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------------------
def decode_image(path: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (3, H, W) tensor of one image file, resized to `size` = (height, width) when given."""
    from mprd.data.datasets import load_image  # lazy: the parsers module is optional at import time

    image = F.pil_to_tensor(load_image(path))
    if size is not None and tuple(image.shape[-2:]) != tuple(size):
        image = F.resize(image, list(size), antialias=True)  # the same op as the transforms' Resize
    return image


def decode_images(paths: Sequence[str], size: tuple[int, int], *, threads: int = 0, what: str = "images"
                  ) -> torch.Tensor:
    """Decode `paths` into one uint8 (N, 3, height, width) tensor, logging progress.

    PIL and torch release the GIL while decoding/resizing, so a thread pool (`threads` > 1; 0 = one per
    CPU core, at most 8) speeds this up without worker processes.
    """
    n = len(paths)
    # a normal tensor even when the first decode happens inside trainer.validate() (inference mode): the
    # worker threads that fill it are not in inference mode
    with torch.inference_mode(False):
        out = torch.empty((n, 3, *size), dtype=torch.uint8)
    threads = threads or min(8, os.cpu_count() or 1)
    start, step, done = time.perf_counter(), max(1, n // 10), 0

    def one(k: int) -> int:
        out[k] = decode_image(paths[k], size)
        return k

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, _ in enumerate(pool.map(one, range(n)), start=1):
            if done % step == 0 or done == n:
                log.debug("decoding %s: %d/%d (%.1f s)", what, done, n, time.perf_counter() - start)
    log.info("cached %d %s at %dx%d: %.1f MB in %.1f s", n, what, size[0], size[1], out.numel() / 2**20,
             time.perf_counter() - start)
    return out


def decoded_cache_key(paths: Sequence[str], size: tuple[int, int]) -> str:
    """Hash of the target size and every file's path, byte size and mtime: a changed file changes the key."""
    h = hashlib.sha1(f"decoded-v1 {size[0]}x{size[1]} {len(paths)}\n".encode())
    for path in paths:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode_images_cached(paths: Sequence[str], size: tuple[int, int], cache_dir: str | os.PathLike | None, *,
                         threads: int = 0, what: str = "images", max_bytes: int = 1 << 30) -> torch.Tensor:
    """`decode_images` with an on-disk copy of the result in `cache_dir` (None: no disk cache).

    Every run of a multirun (and every joblib/SLURM worker) decodes the same JPEGs; the decoded uint8
    tensor is saved once as `<key>.npy` (written to a temporary name, then renamed) and loaded by later
    runs. Tensors above `max_bytes` are not saved. An unreadable cache file is decoded again and replaced.
    """
    nbytes = len(paths) * 3 * size[0] * size[1]
    if cache_dir is None or nbytes > max_bytes or not paths:
        return decode_images(paths, size, threads=threads, what=what)
    folder = Path(cache_dir)
    target = folder / f"{decoded_cache_key(paths, size)}.npy"
    if target.is_file():
        start = time.perf_counter()
        try:
            array = np.load(target, allow_pickle=False)
            if array.shape == (len(paths), 3, *size) and array.dtype == np.uint8:
                log.info("loaded %d decoded %s at %dx%d from %s in %.1f s", len(paths), what, size[0], size[1],
                         target, time.perf_counter() - start)
                return torch.from_numpy(array)
            log.warning("decoded-image cache %s holds shape %s, expected %s: decoding again", target,
                        array.shape, (len(paths), 3, *size))
        except (OSError, ValueError) as err:
            log.warning("decoded-image cache %s is unreadable (%s): decoding again", target, err)
    out = decode_images(paths, size, threads=threads, what=what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, out.numpy(), allow_pickle=False)
        os.replace(tmp, target)
    except OSError as err:  # a read-only data folder must not stop training
        log.warning("could not write the decoded-image cache %s: %s", target, err)
    return out


class Pixels:
    """uint8 images addressed by row: a decoded cache tensor, or the files decoded on demand."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int], cache: torch.Tensor | None = None):
        if cache is not None and cache.shape[0] != len(paths):
            raise ValueError(f"cache holds {cache.shape[0]} images for {len(paths)} paths")
        self.paths, self.size, self.cache = list(paths), size, cache

    def __len__(self) -> int:
        return len(self.paths)

    def one(self, row: int) -> torch.Tensor:
        """(3, H, W) uint8; from disk at the stored size (the transform resizes)."""
        return self.cache[row] if self.cache is not None else decode_image(self.paths[row])

    def many(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, 3, height, width) uint8 at the target size."""
        if self.cache is not None:
            return self.cache[rows]
        return torch.stack([decode_image(self.paths[r], self.size) for r in rows.tolist()])


# ----------------------------------------------------------------------------------------------------------
# Datasets (each returns whole batches through __getitems__, so a batched transform can run once per batch)
# ----------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------
# Data module
# ----------------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """Hydra passes DictConfig/ListConfig; turn them into dicts/lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _check_keys(setting: str, given: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ValueError(f"{setting}: unknown key(s) {', '.join(unknown)} (expected a subset of "
                         f"{', '.join(sorted(allowed))})")
    return dict(given)


class ReIDDataModule(L.LightningDataModule):
    """Re-ID data for all methods: shuffled training draws, perturbed views and ordered feature passes.

    Arguments are plain types so Hydra can instantiate it; `options` go to `load_dataset`, `synthetic`
    (name == 'synthetic') to `ensure_synthetic(root, **synthetic)`, `augment` to `build_train_transform`
    and `perturb` (added on top of `augment`) to `build_perturbed_transform`.
    """

    def __init__(
        self,
        name: str = "synthetic",
        root: str = "data",
        options: dict[str, Any] | None = None,
        synthetic: dict[str, Any] | None = None,
        height: int = 256,
        width: int = 128,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        batch_size: int = 32,
        test_batch_size: int = 128,
        num_workers: int = 0,
        camstyle: bool = False,
        augment: dict[str, Any] | None = None,
        perturb: dict[str, Any] | None = None,
        in_memory: bool = False,
        seed: int = 0,
        drop_last: bool = True,
        batched_augment: bool = False,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        decode_threads: int = 0,
        device_augment: bool = False,
        decode_cache_dir: str | None = None,
    ):
        super().__init__()
        self.name, self.root = str(name), str(root)
        self.options = dict(_plain(options) or {})
        self.synthetic = dict(_plain(synthetic) or {})
        self.height, self.width = int(height), int(width)
        self.mean, self.std = tuple(_plain(mean)), tuple(_plain(std))
        if batch_size < 1 or test_batch_size < 1 or num_workers < 0:
            raise ValueError(f"need batch_size >= 1, test_batch_size >= 1, num_workers >= 0; got {batch_size}, "
                             f"{test_batch_size}, {num_workers}")
        self.batch_size, self.test_batch_size = int(batch_size), int(test_batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)
        self.camstyle, self.in_memory, self.drop_last = bool(camstyle), bool(in_memory), bool(drop_last)
        self.batched_augment, self.pin_memory = bool(batched_augment), bool(pin_memory)
        self.persistent_workers, self.decode_threads = bool(persistent_workers), int(decode_threads)
        self.device_augment = bool(device_augment)
        self.decode_cache_dir = None if decode_cache_dir in (None, "", "null") else str(decode_cache_dir)
        self.augment = _check_keys("augment", _plain(augment) or {}, TRAIN_KEYS)
        self.perturb = _check_keys("perturb", _plain(perturb) or {}, PERTURB_KEYS)
        # build once now so a bad setting fails at construction, not in a worker
        self.train_transform = build_train_transform(self.height, self.width, self.mean, self.std, **self.augment)
        self.perturbed_transform = build_perturbed_transform(self.height, self.width, self.mean, self.std,
                                                             **self.augment, **self.perturb)
        self.test_transform = build_test_transform(self.height, self.width, self.mean, self.std)
        self.train_batch_augment = BatchAugment(self.height, self.width, self.mean, self.std, **self.augment)
        self.perturbed_batch_augment = BatchAugment.perturbed(self.height, self.width, self.mean, self.std,
                                                              **self.augment, **self.perturb)
        self.data: ReIDData | None = None
        self._given: ReIDData | None = None
        self._train_pixels: Pixels | None = None
        self._split_pixels: dict[str, Pixels] = {}
        self._offsets = torch.zeros(1, dtype=torch.long)

    @classmethod
    def from_data(cls, data: ReIDData, **kwargs: Any) -> ReIDDataModule:
        """A data module over an already parsed `ReIDData` (tests, notebooks, other callers)."""
        module = cls(name=data.name, root=data.root, **kwargs)
        module._given = data
        return module

    # -- loading --------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.name == "synthetic" and self._given is None:
            from mprd.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.synthetic)

    def _load(self) -> ReIDData:
        from mprd.data.datasets import load_dataset

        if self.name == "synthetic":
            from mprd.data.synthetic import ensure_synthetic

            return load_dataset("synthetic", ensure_synthetic(self.root, **self.synthetic), **self.options)
        return load_dataset(self.name, self.root, **self.options)

    def setup(self, stage: str | None = None) -> None:
        """Parse the dataset once; for fitting (stage None/'fit') with `in_memory`, decode the train images.

        Query/gallery images (and train images for other stages) are decoded when a loader first needs them.
        """
        if self.data is None:
            data = self._given if self._given is not None else self._load()
            if not data.train:
                raise DatasetError(f"{data.name}: the train split under {data.root} is empty")
            n_styles = sum(len(v) for v in data.camstyle.values())
            if self.camstyle and n_styles == 0:
                raise DatasetError(f"{data.name}: camstyle=True but no CamStyle images were found for {data.root} "
                                   "(expected bounding_box_train_camstyle/; set camstyle=false for the no-CamStyle "
                                   "setting, MPRD#)")
            self.data = data
            log.info("%s (%s): %s", data.name, data.root, data.statistics())
        if stage in (None, "fit"):
            self._pixels("train")

    def _build_train_pixels(self) -> Pixels:
        data = self._require_data()
        n = len(data.train)
        styles = [data.camstyle.get(i, []) if self.camstyle else [] for i in range(n)]
        counts = torch.tensor([len(s) for s in styles], dtype=torch.long)
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        paths = [r.path for r in data.train] + [p for s in styles for p in s]
        cache = self._decode(paths, "train images" + (" (+ CamStyle)" if self.camstyle else ""))
        return Pixels(paths, (self.height, self.width), cache)

    def _decode(self, paths: Sequence[str], what: str) -> torch.Tensor | None:
        if not self.in_memory:
            return None
        return decode_images_cached(paths, (self.height, self.width), self.decode_cache_dir,
                                    threads=self.decode_threads, what=what)

    def _require_data(self) -> ReIDData:
        if self.data is None:
            raise RuntimeError("ReIDDataModule: call setup() before asking for data or loaders")
        return self.data

    def _pixels(self, split: str) -> Pixels:
        """Real images of a split (train: the first N rows of the training pixels, shared)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        data = self._require_data()
        if split == "train":
            if self._train_pixels is None:
                self._train_pixels = self._build_train_pixels()
            return self._train_pixels
        if split not in self._split_pixels:
            paths = [r.path for r in getattr(data, split)]
            self._split_pixels[split] = Pixels(paths, (self.height, self.width), self._decode(paths, f"{split} images"))
        return self._split_pixels[split]

    # -- loaders --------------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, batch_size: int, *, sampler: Sampler | None, drop_last: bool,
                seed_offset: int) -> DataLoader:
        workers = self.num_workers
        rank, _ = distributed_context(getattr(self, "trainer", None))
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=drop_last,
            num_workers=workers, collate_fn=passthrough_collate, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers and workers > 0,
            # seeds the workers' RNGs (augmentation) reproducibly; advances once per pass
            # (+ the rank under DDP, so worker streams differ between ranks; rank 0 = the one-process seed)
            generator=torch.Generator().manual_seed(self.seed * 1000 + seed_offset + 100_003 * rank),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) training draws ``{"image", "index", "camid"}``; no pids.

        With `device_augment`, "image" is the un-augmented uint8 batch; Lightning's
        `on_after_batch_transfer` (or a manual loop via `augment_batch`) augments it on the device.
        """
        data = self._require_data()
        n = len(data.train)
        if self.drop_last and n < self.batch_size:
            raise ValueError(f"{data.name}: {n} training images < batch_size {self.batch_size} with drop_last=True "
                             "(no batch would be produced)")
        camids = torch.tensor([r.camid for r in data.train], dtype=torch.long)
        if self.device_augment:  # uint8 batches; `augment_batch` runs after the transfer to the device
            transforms: dict[str, Any] = {"batch_transform": KeepUint8()}
        elif self.batched_augment:
            transforms = {"batch_transform": self.train_batch_augment}
        else:
            transforms = {"transform": self.train_transform}
        dataset = TrainDraws(self._pixels("train"), n, self._offsets, camids, **transforms)
        sampler, size = self._sharded(EpochShuffle(n, self.seed), self.batch_size)
        return self._loader(dataset, size, sampler=sampler, drop_last=self.drop_last, seed_offset=1)

    def camera_balanced_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Training draws as `train_dataloader` gives them, in camera-balanced batches (`CameraBalancedSampler`).

        UGA's sampling (§4.2): the same number of images per camera in every batch; no pids.
        """
        data = self._require_data()
        size = int(batch_size or self.batch_size)
        camids = torch.tensor([r.camid for r in data.train], dtype=torch.long)
        if self.device_augment:
            transforms: dict[str, Any] = {"batch_transform": KeepUint8()}
        elif self.batched_augment:
            transforms = {"batch_transform": self.train_batch_augment}
        else:
            transforms = {"transform": self.train_transform}
        dataset = TrainDraws(self._pixels("train"), len(data.train), self._offsets, camids, **transforms)
        # one process only (UGA refuses DDP, mprd.train.check_trainer): a batch is grouped by camera, so halving
        # it would hand each rank other cameras
        sampler = CameraBalancedSampler(camids, size, self.seed)
        return self._loader(dataset, size, sampler=sampler, drop_last=True, seed_offset=4)

    def _sharded(self, base: Sampler[int], batch_size: int) -> tuple[Sampler[int], int]:
        """(sampler, loader batch size): `base` itself on one process; under DDP this rank's share of every
        global batch of `batch_size` (`GlobalBatchShard`), so the recipe's batch does not move with the GPU count."""
        rank, world = distributed_context(getattr(self, "trainer", None))
        if world == 1:
            return base, batch_size
        if not self.drop_last:
            raise ValueError("ReIDDataModule: DDP training needs drop_last=True (only whole global batches are split)")
        per_rank = per_rank_batch(batch_size, world)
        return GlobalBatchShard(base, per_rank, rank, world), per_rank

    def perturbed_dataloader(self, indices: Sequence[int] | None = None, batch_size: int | None = None
                             ) -> DataLoader:
        """MPRD's perturbed views x'_i (§4.2) of the real train images `indices` (default all), in order.

        Default batch size: `test_batch_size` (the views feed a no-grad forward pass).
        """
        n = len(self._require_data().train)
        rows = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in rows if not 0 <= i < n]
        if bad:
            raise ValueError(f"perturbed_dataloader: indices {bad[:5]} outside the train split [0, {n})")
        transform = self.perturbed_batch_augment if self.batched_augment else self.perturbed_transform
        dataset = SplitImages(self._pixels("train"), rows, transform, batched=self.batched_augment)
        return self._loader(dataset, batch_size or self.test_batch_size, sampler=None, drop_last=False,
                            seed_offset=2)

    def feature_dataloader(self, split: str = "train", batch_size: int | None = None) -> DataLoader:
        """Test-transformed images of `split` in record order, ``{"image", "index"}``; pids stay in `data`."""
        pixels = self._pixels(split)
        n = len(getattr(self._require_data(), split))
        # the test transform is deterministic, so a cached split is transformed a whole batch at a time
        dataset = SplitImages(pixels, range(n), self.test_transform, batched=pixels.cache is not None)
        return self._loader(dataset, batch_size or self.test_batch_size, sampler=None, drop_last=False,
                            seed_offset=3)

    def augment_batch(self, batch: Any) -> Any:
        """Apply `BatchAugment` to a uint8 training batch (`device_augment`), on the batch's device.

        Batches whose "image" is already float (every loader without `device_augment`) pass unchanged.
        """
        if isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) \
                and batch["image"].dtype == torch.uint8:
            batch = {**batch, "image": self.train_batch_augment(batch["image"])}
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Lightning hook: augment `device_augment` training batches on the accelerator."""
        return self.augment_batch(batch)

    def val_dataloader(self) -> list[DataLoader]:
        """[query, gallery] feature loaders (dataloader_idx 0 = query, 1 = gallery)."""
        return [self.feature_dataloader("query"), self.feature_dataloader("gallery")]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def steps_per_epoch(self) -> int:
        """Training batches per epoch."""
        n = len(self._require_data().train)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
