"""Video training wiring: tracklet draws and temporal pooling, tracklet-ordered feature passes, end-to-end runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mprd.core.reid_module import temporal_pool, video_metrics
from mprd.core.video_evaluation import evaluate_video, single_shot_cmc
from mprd.data.datamodule import instantiate_datamodule
from mprd.data.items import random_frames
from mprd.data.records import TrackletRecord, VideoReIDData
from mprd.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from mprd.data.video_datamodule import VideoDataModule
from mprd.settings import SettingsError
from mprd.train import run
from tests.conftest import compose_cfg

VIDEO = ("dataset=synthetic_video", "dataset.synthetic.preset=video-tiny")


@pytest.fixture(scope="module")
def video_root(data_root) -> Path:
    """`paths.data_dir` of the session: the `video-tiny` set is generated there once."""
    return data_root / "data"


def _module(root: Path, **kwargs) -> VideoDataModule:
    settings = {"name": "synthetic_video", "root": str(root), "synthetic": {"preset": "video-tiny", "seed": 0},
                "height": 32, "width": 16, "batch_size": 8, "test_batch_size": 16, "num_workers": 0, **kwargs}
    dm = VideoDataModule(**settings)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class _FrameNet(nn.Module):
    """A small deterministic feature extractor (conv -> global pool -> BN in eval mode)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn = nn.Conv2d(3, 6, 3), nn.BatchNorm1d(6)
        self.bn.running_mean.uniform_(-0.1, 0.1)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x).relu().mean(dim=(2, 3)))


# ------------------------------------------------------------------------------------------ training draws
def test_random_frames_stay_in_their_tracklet_distinct_when_long_enough_and_sorted() -> None:
    offsets = torch.tensor([0, 2, 9, 10, 14])  # lengths 2, 7, 1, 4
    index = torch.tensor([1, 0, 2, 3, 1])
    torch.manual_seed(0)
    rows = random_frames(offsets, index, 4)
    assert rows.shape == (5, 4)
    start, end = offsets[index][:, None], offsets[index + 1][:, None]
    assert bool(((rows >= start) & (rows < end)).all())
    assert bool((rows[:, 1:] >= rows[:, :-1]).all())  # temporal order
    for r, n in zip(rows, (end - start).flatten().tolist(), strict=True):
        assert len(set(r.tolist())) == min(n, 4)  # n >= 4: distinct; shorter: every frame, then repeats
    drawn = torch.cat([random_frames(offsets, torch.tensor([1]), 4) for _ in range(200)]).flatten()
    assert set(drawn.tolist()) == set(range(2, 9))  # every frame of a long tracklet can be drawn


def test_tracklet_batches_have_frames_per_tracklet_and_pool_to_the_mean_of_the_frames(video_root) -> None:
    dm = _module(video_root, in_memory=True, batched_augment=True)
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (8, 4, 3, 32, 16) and batch["image"].dtype == torch.float32
    records = dm.data.train
    assert batch["camid"].tolist() == [records[i].camid for i in batch["index"].tolist()]
    assert len(dm.train_dataloader()) == dm.steps_per_epoch() == len(records) // 8  # the unit is the tracklet

    net = _FrameNet()
    with torch.no_grad():
        pooled = temporal_pool(net, batch["image"])
        separately = torch.stack([net(batch["image"][:, s]) for s in range(4)], 1).mean(1)
    assert pooled.shape == (8, 6)
    torch.testing.assert_close(pooled, separately, rtol=1e-5, atol=1e-6)
    image = torch.rand(5, 3, 32, 16)
    assert torch.equal(temporal_pool(net, image), net(image))  # images pass through unchanged

    dm6 = _module(video_root, in_memory=True, batched_augment=False, device_augment=True,
                  video={"frames_per_tracklet": 6})
    raw = next(iter(dm6.train_dataloader()))
    assert raw["image"].shape == (8, 6, 3, 32, 16) and raw["image"].dtype == torch.uint8
    assert dm6.augment_batch(raw)["image"].shape == (8, 6, 3, 32, 16)


def test_training_draws_are_seeded_like_the_image_loader(video_root) -> None:
    dm = _module(video_root, in_memory=True, batched_augment=True, seed=4)

    def first_batch() -> dict:
        torch.manual_seed(11)
        return next(iter(dm.train_dataloader()))

    a, b = first_batch(), first_batch()
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])


def test_perturbed_views_are_one_pooled_item_per_tracklet(video_root) -> None:
    dm = _module(video_root, in_memory=True, batched_augment=True)
    batches = list(dm.perturbed_dataloader([5, 0, 7], batch_size=2))
    assert [b["index"].tolist() for b in batches] == [[5, 0], [7]]
    assert batches[0]["image"].shape == (2, 4, 3, 32, 16)


# ------------------------------------------------------------------------------------------ feature passes
def _test_frame(path: str, dm: VideoDataModule) -> torch.Tensor:
    from mprd.data.decode import decode_image

    return dm.test_transform(decode_image(path))


def _brute_force(records: list[TrackletRecord], dm: VideoDataModule, net: nn.Module, k: int | None) -> torch.Tensor:
    """Per tracklet: its frames (every one, or k at np.linspace positions), one by one, mean, L2-normalised."""
    out = []
    with torch.no_grad():
        for r in records:
            n = len(r.paths)
            keep = range(n) if k is None or n <= k else np.linspace(0, n - 1, k).astype(int).tolist()
            feats = torch.stack([net(_test_frame(r.paths[j], dm)[None])[0] for j in keep])
            out.append(nn.functional.normalize(feats.mean(0), dim=0))
    return torch.stack(out)


def _pooled_pass(dm: VideoDataModule, split: str, net: nn.Module) -> torch.Tensor:
    from mprd.core.video_evaluation import tracklet_features

    frames, positions = [], []
    with torch.no_grad():
        for batch in dm.feature_dataloader(split, batch_size=7):
            frames.append(net(batch["image"]))
            positions.append(batch["index"])
    assert torch.equal(torch.cat(positions), torch.arange(sum(p.numel() for p in positions)))  # pass order
    return tracklet_features(torch.cat(frames), dm.pooling_offsets(split))


@pytest.mark.parametrize("in_memory", [True, False])
def test_query_and_gallery_give_one_feature_per_tracklet_in_order(video_root, in_memory) -> None:
    dm = _module(video_root, in_memory=in_memory)
    net = _FrameNet()
    for split in ("query", "gallery"):
        records = getattr(dm.data, split)
        pooled = _pooled_pass(dm, split, net)
        assert pooled.shape == (len(records), 6)
        torch.testing.assert_close(pooled, _brute_force(records, dm, net, None), rtol=1e-4, atol=1e-5)


def test_test_frames_and_train_frames_sample_evenly(video_root) -> None:
    dm = _module(video_root, in_memory=True, video={"test_frames": 3, "train_frames": 2})
    net = _FrameNet()
    assert len(dm._pixels("query")) == sum(min(r.num_frames, 3) for r in dm.data.query)  # only those decoded
    torch.testing.assert_close(_pooled_pass(dm, "query", net), _brute_force(dm.data.query, dm, net, 3),
                               rtol=1e-4, atol=1e-5)
    train = _pooled_pass(dm, "train", net)
    assert train.shape[0] == len(dm.data.train)
    torch.testing.assert_close(train, _brute_force(dm.data.train, dm, net, 2), rtol=1e-4, atol=1e-5)


def _records(pids: list[int], camids: list[int], frames: list[int]) -> list[TrackletRecord]:
    return [TrackletRecord(tuple(f"f{i}_{j}" for j in range(n)), p, c, i) for i, (p, c, n)
            in enumerate(zip(pids, camids, frames, strict=True))]


def test_video_metrics_pool_then_follow_the_mars_or_the_split_protocol() -> None:
    """MARS-like data: `evaluate_video` on pooled features; data with a split_id (PRID2011, iLIDS-VID): the
    single-gallery-shot CMC of that split."""
    from mprd.data.video_datamodule import frame_offsets

    torch.manual_seed(0)
    query = _records([1, 2, 3], [0, 0, 0], [2, 3, 1])
    gallery = _records([1, 2, 3], [1, 1, 1], [1, 2, 4])
    qf, gf = torch.randn(6, 5), torch.randn(7, 5)
    pooled_q = nn.functional.normalize(torch.stack([qf[0:2].mean(0), qf[2:5].mean(0), qf[5]]), dim=1)
    pooled_g = nn.functional.normalize(torch.stack([gf[0], gf[1:3].mean(0), gf[3:7].mean(0)]), dim=1)
    ids = {"query_pids": [1, 2, 3], "gallery_pids": [1, 2, 3]}
    for split_id in (None, 4):
        data = VideoReIDData("x", "/x", query, query, gallery, split_id=split_id)
        dm = SimpleNamespace(data=data, pooling_offsets=lambda s, d=data: frame_offsets(getattr(d, s)))
        got = video_metrics(dm, qf, gf, "cosine")
        if split_id is None:
            want = evaluate_video(pooled_q, pooled_g, ids["query_pids"], [0, 0, 0], ids["gallery_pids"], [1, 1, 1])
        else:
            want = single_shot_cmc(pooled_q, pooled_g, ids["query_pids"], ids["gallery_pids"])
        assert got == pytest.approx(want.as_dict(percent=True))
        assert "rank20" in got


# --------------------------------------------------------------------------------------------------- config
def test_a_video_dataset_config_instantiates_the_video_data_module(data_root) -> None:
    cfg = compose_cfg(data_root, *VIDEO, "data.video.frames_per_tracklet=3")
    dm = instantiate_datamodule(cfg, IMAGENET_MEAN, IMAGENET_STD, camstyle=False)
    assert isinstance(dm, VideoDataModule) and dm.video.frames_per_tracklet == 3 and dm.video.test_frames is None
    image = instantiate_datamodule(compose_cfg(data_root), IMAGENET_MEAN, IMAGENET_STD, camstyle=False)
    assert not image.is_video and image.pooling_offsets("query") is None  # data.video does not reach it
    # errors raised in the constructor reach the caller wrapped by hydra.utils.instantiate, message kept
    with pytest.raises(Exception, match=r"data\.video: unknown key\(s\) frames"):
        instantiate_datamodule(compose_cfg(data_root, *VIDEO, "+data.video.frames=3"), IMAGENET_MEAN,
                               IMAGENET_STD, camstyle=False)
    with pytest.raises(SettingsError, match=r"data\.colour: unknown setting"):
        instantiate_datamodule(compose_cfg(data_root, *VIDEO, "+data.colour=red"), IMAGENET_MEAN, IMAGENET_STD,
                               camstyle=False)
    with pytest.raises(ValueError, match="frames_per_tracklet=0"):
        VideoDataModule(name="synthetic_video", video={"frames_per_tracklet": 0})
    with pytest.raises(Exception, match="image preset"):
        instantiate_datamodule(compose_cfg(data_root, "dataset=synthetic_video"), IMAGENET_MEAN, IMAGENET_STD,
                               camstyle=False)  # compose_cfg's tiny image preset
    with pytest.raises(Exception, match="no CamStyle"):
        instantiate_datamodule(cfg, IMAGENET_MEAN, IMAGENET_STD, camstyle=True)


# ---------------------------------------------------------------------------------------------- end to end
def _check_video_record(run_dir: Path, record: dict, num_train: int) -> None:
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["final"] == record["final"] and saved["dataset"] == "synthetic_video"
    assert [e["epoch"] for e in saved["per_epoch"]] == [0, 1, 2]
    for entry in saved["per_epoch"]:
        assert all(0.0 <= entry[k] <= 100.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP"))
        assert entry["rank1"] <= entry["rank5"] <= entry["rank10"] <= entry["rank20"]
    assert saved["dataset_statistics"]["train"]["tracklets"] == num_train
    assert sorted(int(d["epoch"]) for d in saved["diagnostics"]) == [0, 1, 2]  # per-tracklet kNN diagnostics
    assert saved["uses"] != ["CamStyle (camera IDs)"]


def test_knn_trains_and_evaluates_on_video_tiny(data_root, tmp_path) -> None:
    cfg = compose_cfg(data_root, *VIDEO, "method=knn", "max_epochs=2", "eval_every=1", "data.batch_size=16")
    record = run(cfg, tmp_path / "run")
    _check_video_record(tmp_path / "run", record, 46)
    assert record["uses"] == ["none"] and "labels/pair_precision" in record["train_log"]


@pytest.mark.slow
def test_mprd_trains_and_evaluates_on_video_tiny(data_root, tmp_path) -> None:
    """MPRD's GCN phase embeds perturbed tracklet views (pooled frames) and its meta identities are tracklet pids."""
    cfg = compose_cfg(data_root, *VIDEO, "method=mprd", "max_epochs=2", "eval_every=1", "data.batch_size=16")
    record = run(cfg, tmp_path / "run")
    _check_video_record(tmp_path / "run", record, 46)
    assert record["uses"] == ["5 meta IDs"]
