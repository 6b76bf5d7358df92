"""Lightning data module for video re-ID (MARS, DukeMTMC-VideoReID, PRID2011, iLIDS-VID, the synthetic video set).

The training unit is the **tracklet**: training items are ``{"image": (B, S, 3, H, W), "index", "camid"}``
with ``index`` the tracklet's memory slot (`TrackletRecord.index`) and S = ``video.frames_per_tracklet``
frames drawn at random within the tracklet (`items.random_frames`, the global torch RNG seeded as for
images); the module turns them into one feature per tracklet by temporal average pooling
(`core.reid_module.temporal_pool`). Everything else works as `ReIDDataModule`'s image path does: the same
per-epoch shuffle (of tracklets), DDP shares, transforms (applied frame by frame), in-memory decoding (of
every frame of the split) and device augmentation.

Feature passes yield frames, ``{"image": (F, 3, H, W), "index": position}``, in tracklet order;
`pooling_offsets(split)` gives the CSR offsets with which `core.video_evaluation.tracklet_features` pools
them into one feature per tracklet. Which frames: ``video.train_frames`` (the train features pass: memory
initialisation, label refreshes, diagnostics; default 8, sampled evenly, to keep it cheap) and
``video.test_frames`` (query/gallery; default null = every frame, SSLR's and UGA's protocol); k = sampled
evenly as `core.video_evaluation.even_frame_indices` does. Only the selected query/gallery frames are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mprd.core.config import dataclass_from
from mprd.data.datamodule import SPLITS, ReIDDataModule, _plain
from mprd.data.decode import Pixels
from mprd.data.items import SelectedFrames, TrackletDraws, TrainDraws
from mprd.data.records import DatasetError, TrackletRecord, VideoReIDData
from mprd.data.samplers import CameraBalancedSampler, EpochShuffle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSettings:
    """`data.video`: frames drawn per training tracklet, and frames per tracklet in the feature passes."""

    frames_per_tracklet: int = 4  # S frames per tracklet per training step, drawn at random within it
    train_frames: int | None = 8  # train features pass: k frames sampled evenly (null = all)
    test_frames: int | None = None  # query/gallery: null = all frames (the papers' protocol), k = k sampled evenly

    def __post_init__(self) -> None:
        if int(self.frames_per_tracklet) < 1:
            raise ValueError(f"data.video.frames_per_tracklet={self.frames_per_tracklet}: expected an integer >= 1")
        for key in ("train_frames", "test_frames"):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise ValueError(f"data.video.{key}={value}: expected an integer >= 1 or null (all frames)")


def frame_offsets(records: Sequence[TrackletRecord]) -> torch.Tensor:
    """(T + 1,) CSR offsets of the tracklets' frames, concatenated in record order."""
    lengths = torch.tensor([r.num_frames for r in records], dtype=torch.long)
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])


def select_frames(offsets: torch.Tensor, num_frames: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(frame rows, pooling offsets): every frame (None), or `num_frames` per tracklet sampled evenly
    (`even_frame_indices`); the offsets group the selected rows by tracklet, in the rows' order."""
    if num_frames is None:
        return torch.arange(int(offsets[-1])), offsets
    from mprd.core.video_evaluation import even_frame_indices

    rows, owner = even_frame_indices(offsets, int(num_frames))
    counts = torch.bincount(owner, minlength=offsets.numel() - 1)
    return rows, torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])


class VideoDataModule(ReIDDataModule):
    """Video re-ID data: tracklet training draws (S random frames each), perturbed tracklet views, and frame
    feature passes in tracklet order with their pooling offsets. Arguments: `ReIDDataModule`'s plus `video`
    (`VideoSettings`); `synthetic` (the `video-*` presets) generates the dataset on first use."""

    is_video = True

    def __init__(self, *, video: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.video = dataclass_from(VideoSettings, _plain(video) or {}, "data.video")
        if self.camstyle:
            raise DatasetError(f"{self.name}: camstyle=True, but video datasets have no CamStyle copies; set "
                               "data.camstyle=false (or auto)")
        preset = str(self.synthetic.get("preset", "")) if self.synthetic else ""
        if self.synthetic and not preset.startswith("video-"):
            raise DatasetError(f"dataset.synthetic.preset={preset!r} is an image preset: the video data module reads "
                               "the video presets (video-tiny, video-small)")
        self.data: VideoReIDData | None = None  # type: ignore[assignment]
        self._given: VideoReIDData | None = None  # type: ignore[assignment]
        self._frame_offsets: dict[str, torch.Tensor] = {}

    # -- loading --------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.synthetic and self._given is None:
            self._dataset_root()

    def _dataset_root(self) -> Path | str:
        """The generated folder of `synthetic` (created on first use), else `root`."""
        if not self.synthetic:
            return self.root
        from mprd.data.synthetic import ensure_synthetic

        return ensure_synthetic(self.root, **self.synthetic)

    def _load(self) -> VideoReIDData:  # type: ignore[override]
        from mprd.data.video_datasets import load_video_dataset

        return load_video_dataset(self.name, self._dataset_root(), **self.options)

    def setup(self, stage: str | None = None) -> None:
        """Parse the dataset once; for fitting (stage None/'fit') with `in_memory`, decode every train frame."""
        if self.data is None:
            data = self._given if self._given is not None else self._load()
            if not data.train:
                raise DatasetError(f"{data.name}: the train split under {data.root} is empty")
            self.data = data
            self._frame_offsets = {split: frame_offsets(getattr(data, split)) for split in SPLITS}
            log.info("%s (%s): %s", data.name, data.root, data.statistics())
        if stage in (None, "fit"):
            self._pixels("train")

    def _require_data(self) -> VideoReIDData:  # type: ignore[override]
        if self.data is None:
            raise RuntimeError("VideoDataModule: call setup() before asking for data or loaders")
        return self.data

    def _selection(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(frame rows of the split, pooling offsets) of a feature pass over `split`."""
        self._require_data()
        k = self.video.train_frames if split == "train" else self.video.test_frames
        return select_frames(self._frame_offsets[split], k)

    def pooling_offsets(self, split: str) -> torch.Tensor:
        """(T + 1,) offsets grouping `feature_dataloader(split)`'s frames (index order) by tracklet."""
        return self._selection(split)[1]

    def _split_paths(self, split: str) -> list[str]:
        return [p for r in getattr(self._require_data(), split) for p in r.paths]

    def _build_train_pixels(self) -> Pixels:
        paths = self._split_paths("train")
        return Pixels(paths, (self.height, self.width), self._decode(paths, "train frames"))

    def _pixels(self, split: str) -> Pixels:
        """Train: every frame (training draws pick any); query/gallery: the frames `test_frames` selects."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "train":
            if self._train_pixels is None:
                self._train_pixels = self._build_train_pixels()
            return self._train_pixels
        if split not in self._split_pixels:
            paths = self._split_paths(split)
            rows = self._selection(split)[0].tolist()
            chosen = [paths[r] for r in rows]
            self._split_pixels[split] = Pixels(chosen, (self.height, self.width),
                                               self._decode(chosen, f"{split} frames"))
        return self._split_pixels[split]

    # -- loaders --------------------------------------------------------------------------------------
    def _tracklet_draws(self, transforms: dict[str, Any]) -> TrackletDraws:
        data = self._require_data()
        camids = torch.tensor([r.camid for r in data.train], dtype=torch.long)
        return TrackletDraws(self._pixels("train"), self._frame_offsets["train"], camids,
                             self.video.frames_per_tracklet, **transforms)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) tracklet draws ``{"image": (B, S, 3, H, W), "index", "camid"}``; no pids."""
        data = self._require_data()
        n = len(data.train)
        if self.drop_last and n < self.batch_size:
            raise ValueError(f"{data.name}: {n} training tracklets < batch_size {self.batch_size} with "
                             "drop_last=True (no batch would be produced)")
        dataset = self._tracklet_draws(self._train_transforms())
        sampler, size = self._sharded(EpochShuffle(n, self.seed), self.batch_size)
        return self._loader(dataset, size, sampler=sampler, drop_last=self.drop_last, seed_offset=1)

    def camera_balanced_dataloader(self, batch_size: int | None = None) -> DataLoader:
        """Train **frames** in camera-balanced batches (UGA §4.2: the same number of images per camera; UGA
        classifies images, and on video a frame is an image of its tracklet): ``{"image": (B, 3, H, W), "index":
        frame row (train frames in record order), "camid"}``; an epoch = one pass over the train frames."""
        data = self._require_data()
        size = int(batch_size or self.batch_size)
        camids = torch.tensor([r.camid for r in data.train], dtype=torch.long)
        frame_camids = camids.repeat_interleave(self._frame_offsets["train"].diff())
        frames = int(frame_camids.numel())
        dataset = TrainDraws(self._pixels("train"), frames, torch.zeros(frames + 1, dtype=torch.long), frame_camids,
                             **self._train_transforms())  # no CamStyle copies: each frame is its own draw
        sampler = CameraBalancedSampler(frame_camids, size, self.seed)  # one process only, as for images
        return self._loader(dataset, size, sampler=sampler, drop_last=True, seed_offset=4)

    def feature_rows(self, split: str) -> torch.Tensor:
        """The frame rows of the split (record then frame order) that `feature_dataloader(split)` yields, in order."""
        return self._selection(split)[0]

    def restrict_train(self, keep: Sequence[int]) -> None:
        """Keep only the train tracklets at positions `keep` (UGA on MARS: one tracklet per person and camera),
        re-indexed 0 .. len(keep) - 1 in their order; frame offsets and decoded frames follow. Call after
        `setup` and before any loader is built."""
        data = self._require_data()
        rows = sorted({int(i) for i in keep})
        if not rows or rows[0] < 0 or rows[-1] >= len(data.train):
            raise ValueError(f"restrict_train: expected positions in [0, {len(data.train)}), got "
                             f"{len(rows)} position(s) from {rows[:1]} to {rows[-1:]}")
        old = self._frame_offsets["train"]
        frames = torch.cat([torch.arange(int(old[i]), int(old[i + 1])) for i in rows])
        self.data = replace(data, train=[replace(data.train[i], index=j) for j, i in enumerate(rows)])
        self._frame_offsets["train"] = frame_offsets(self.data.train)
        if self._train_pixels is not None:
            pixels = self._train_pixels
            cache = None if pixels.cache is None else pixels.cache[frames]
            self._train_pixels = Pixels([pixels.paths[r] for r in frames.tolist()], pixels.size, cache)
        log.info("%s: training on %d of %d train tracklets (%d frames)", data.name, len(rows), len(data.train),
                 frames.numel())

    def perturbed_dataloader(self, indices: Sequence[int] | None = None, batch_size: int | None = None
                             ) -> DataLoader:
        """MPRD's perturbed views of the train tracklets `indices` (default all), in order: S random frames each,
        perturbed frame by frame; ``index`` = the tracklet."""
        n = len(self._require_data().train)
        rows = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in rows if not 0 <= i < n]
        if bad:
            raise ValueError(f"perturbed_dataloader: indices {bad[:5]} outside the train split [0, {n})")
        key = "batch_transform" if self.batched_augment else "transform"
        transform = self.perturbed_batch_augment if self.batched_augment else self.perturbed_transform
        dataset = self._tracklet_draws({key: transform})
        return self._loader(dataset, batch_size or self.test_batch_size, sampler=rows, drop_last=False,  # type: ignore[arg-type]
                            seed_offset=2)

    def feature_dataloader(self, split: str = "train", batch_size: int | None = None) -> DataLoader:
        """Test-transformed frames of `split` in tracklet order, ``{"image", "index"}`` (index = position in the
        pass; `pooling_offsets(split)` groups them); pids stay in `data`."""
        pixels = self._pixels(split)
        rows = self._selection(split)[0] if split == "train" else torch.arange(len(pixels))
        dataset = SelectedFrames(pixels, rows.tolist(), self.test_transform, batched=pixels.cache is not None)
        return self._loader(dataset, batch_size or self.test_batch_size, sampler=None, drop_last=False,
                            seed_offset=3)

    def augment_batch(self, batch: Any) -> Any:
        """`ReIDDataModule.augment_batch` on the frames of a uint8 (B, S, 3, H, W) tracklet batch."""
        image = batch.get("image") if isinstance(batch, dict) else None
        if isinstance(image, torch.Tensor) and image.dim() == 5:
            flat = super().augment_batch({**batch, "image": image.flatten(0, 1)})
            return {**flat, "image": flat["image"].reshape(*image.shape[:2], *flat["image"].shape[1:])}
        return super().augment_batch(batch)
