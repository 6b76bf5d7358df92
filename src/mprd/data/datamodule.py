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

import inspect
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mprd.data.decode import Pixels, decode_images_cached
from mprd.data.items import KeepUint8, SplitImages, TrainDraws, passthrough_collate
from mprd.data.records import DatasetError, ReIDData
from mprd.data.samplers import (
    CameraBalancedSampler,
    EpochShuffle,
    GlobalBatchShard,
    distributed_context,
    per_rank_batch,
)
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


def _plain(value: Any) -> Any:
    """Hydra passes DictConfig/ListConfig; turn them into dicts/lists."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_arguments(target: Callable[..., Any], given: Mapping[str, Any], group: str) -> None:
    """SettingsError naming `<group>.<key>` for every key of `given` that `target` does not take."""
    from mprd.settings import SettingsError

    taken = accepted_arguments(target)
    unknown = sorted(k for k in given if not k.startswith("_") and k not in taken)
    if unknown:
        names = ", ".join(f"{group}.{k}" for k in unknown)
        raise SettingsError(f"{names}: unknown setting(s) of {getattr(target, '__name__', target)} (it takes "
                            f"{', '.join(k for k in taken if k != 'self')})")


def accepted_arguments(target: Callable[..., Any]) -> list[str]:
    """The keyword arguments `target` takes; a class whose `__init__` passes `**kwargs` on to its base
    (`VideoDataModule`) takes its bases' arguments too."""
    if not inspect.isclass(target):
        return list(inspect.signature(target).parameters)
    taken: list[str] = []
    for cls in target.__mro__:
        if "__init__" not in vars(cls):
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters.values()
        taken += [p.name for p in params
                  if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in taken and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return taken


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

    is_video = False  # VideoDataModule: tracklets, pooled from frames

    def pooling_offsets(self, split: str) -> torch.Tensor | None:
        """None: one feature per image, nothing to pool (`VideoDataModule` returns its tracklets' frame offsets)."""
        return None

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
        dataset = TrainDraws(self._pixels("train"), n, self._offsets, camids, **self._train_transforms())
        sampler, size = self._sharded(EpochShuffle(n, self.seed), self.batch_size)
        return self._loader(dataset, size, sampler=sampler, drop_last=self.drop_last, seed_offset=1)

    def _train_transforms(self) -> dict[str, Any]:
        """The training draws' transform argument: per image, per batch, or none yet (`device_augment`: uint8
        batches; `augment_batch` runs after the transfer to the device)."""
        if self.device_augment:
            return {"batch_transform": KeepUint8()}
        if self.batched_augment:
            return {"batch_transform": self.train_batch_augment}
        return {"transform": self.train_transform}

    def camera_balanced_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Training draws as `train_dataloader` gives them, in camera-balanced batches (`CameraBalancedSampler`).

        UGA's sampling (§4.2): the same number of images per camera in every batch; no pids.
        """
        data = self._require_data()
        size = int(batch_size or self.batch_size)
        camids = torch.tensor([r.camid for r in data.train], dtype=torch.long)
        dataset = TrainDraws(self._pixels("train"), len(data.train), self._offsets, camids, **self._train_transforms())
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


RUN_SETTINGS = ("audit_images",)  # data.* keys that `mprd.train` reads itself: not data-module arguments


def instantiate_datamodule(cfg: Any, mean: Sequence[float], std: Sequence[float], camstyle: bool) -> ReIDDataModule:
    """`hydra.utils.instantiate(cfg.data)` given the dataset (`cfg.dataset`), the backbone's normalisation,
    the resolved `camstyle` (data.camstyle may say auto) and the run's seed; unknown data.* keys are refused.

    `data._target_` defaults to the dataset config's `datamodule` (video datasets name
    `mprd.data.video_datamodule.VideoDataModule`), else `ReIDDataModule`; `data.video` goes only to a class
    that takes it."""
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(cfg.data, resolve=True)
    settings = {k: v for k, v in settings.items() if k not in RUN_SETTINGS}
    if "_target_" not in settings:
        raise ValueError("data._target_ is missing: the data config names its class (conf/data/default.yaml)")
    target = get_class(settings["_target_"])
    if "video" not in accepted_arguments(target):  # data.video applies to video data modules only
        settings.pop("video", None)
    check_arguments(target, settings, "data")
    ds = cfg.dataset
    return instantiate(
        settings,
        name=ds.name,
        root=str(ds.root),
        options=OmegaConf.to_container(ds.options, resolve=True) if ds.get("options") else None,
        synthetic=OmegaConf.to_container(ds.synthetic, resolve=True) if ds.get("synthetic") else None,
        mean=tuple(mean),
        std=tuple(std),
        camstyle=camstyle,
        seed=cfg.seed,
        _convert_="all",
    )
