"""SSLR and UGA on video (issue 18): tracklet classes and pooled features for SSLR, real tracklets for UGA
(one per person and camera on MARS-like data), camera-balanced tracklet batches, the video experiments and
their report."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mprd.core.backbone import ReIDBackbone
from mprd.data.decode import decode_image
from mprd.data.records import DatasetError, TrackletRecord
from mprd.data.video_datamodule import VideoDataModule
from mprd.methods.sslr.module import SSLRModule
from mprd.methods.sslr.similarity import part_features
from mprd.methods.uga.config import NoiseConfig, UGAConfig
from mprd.methods.uga.inter_camera import tracklet_centres
from mprd.methods.uga.model import UGAEncoder
from mprd.methods.uga.module import UGAModule
from mprd.methods.uga.tracklets import one_tracklet_per_camera, tracklet_pids, tracklets_from_records
from mprd.supervision import UGA_VIDEO_ALL, UGA_VIDEO_PICK, supervision_label, uses_besides_images
from mprd.train import run
from tests.conftest import compose_cfg

VIDEO = ("dataset=synthetic_video", "dataset.synthetic.preset=video-tiny")


def _record(index: int, pid: int, camid: int, tracklet: int = 1) -> TrackletRecord:
    return TrackletRecord(paths=(f"f{index}a.jpg", f"f{index}b.jpg"), pid=pid, camid=camid, index=index,
                          tracklet=tracklet)


# (pid, camera) of 8 tracklets: person 1 has three tracklets in camera 0, person 2 two in camera 0
PAIRS = [(1, 0), (1, 0), (2, 0), (1, 1), (1, 0), (2, 0), (2, 2), (3, 1)]


def test_one_tracklet_per_camera_keeps_one_per_person_and_camera_at_random() -> None:
    records = [_record(i, p, c, t) for i, ((p, c), t) in enumerate(zip(PAIRS, [1, 2, 1, 1, 3, 2, 1, 1], strict=True))]
    picks = [one_tracklet_per_camera(records, seed) for seed in range(30)]
    for keep in picks:
        assert keep == sorted(keep)
        assert sorted(PAIRS[i] for i in keep) == sorted(set(PAIRS))  # every pair once
    assert picks[3] == one_tracklet_per_camera(records, 3)  # seeded
    chosen_for_1_0 = {next(i for i in keep if PAIRS[i] == (1, 0)) for keep in picks}
    assert chosen_for_1_0 == {0, 1, 4}  # any of person 1's camera-0 tracklets can be kept
    with pytest.raises(ValueError, match="no records"):
        one_tracklet_per_camera([], 0)


def test_real_tracklets_label_their_frames_each_record_a_class_of_its_own() -> None:
    records = [_record(i, p, c) for i, (p, c) in enumerate(PAIRS)] + [_record(8, -1, 2)]  # 2 frames each
    tracklet, camera = tracklets_from_records(records, seed=5, real=True)
    assert tracklet.shape == (18,)  # one id per frame, record then frame order
    assert torch.equal(tracklet[0::2], tracklet[1::2])  # a record's frames share its class
    assert sorted(tracklet[0::2].tolist()) == list(range(9))  # no two records share one; pids are not read
    assert [int(camera[t]) for t in tracklet[0::2].tolist()] == [r.camid for r in records]
    assert camera.tolist() == sorted(camera.tolist())  # camera by camera
    assert tracklet_pids(records, tracklet)[tracklet[0]] == 1 and tracklet_pids(records, tracklet)[tracklet[16]] == -1
    grouped, _ = tracklets_from_records(records[:8], seed=5)  # images: grouped by (pid, camera)
    assert grouped[0] == grouped[1] == grouped[4] and grouped[2] == grouped[5]
    with pytest.raises(DatasetError, match="tracklet of f8a.jpg has pid -1"):
        tracklets_from_records(records, seed=5)


def test_noise_on_real_tracklets_merges_records_and_deals_frames_out() -> None:
    records = [TrackletRecord(paths=tuple(f"r{i}f{j}.jpg" for j in range(4)), pid=i, camid=i % 2, index=i)
               for i in range(10)]
    split, _ = tracklets_from_records(records, seed=1, noise=NoiseConfig(duplication=1.0), real=True)
    assert all(len(set(split[4 * i: 4 * i + 4].tolist())) == 2 for i in range(10))  # every tracklet in 2 labels
    merged, camera = tracklets_from_records(records, seed=1, noise=NoiseConfig(mislabeling=0.4), real=True)
    assert len(set(merged.tolist())) == 6 and all(len(set(merged[4 * i: 4 * i + 4].tolist())) == 1 for i in range(10))
    assert [int(camera[merged[4 * i]]) for i in range(10)] == [i % 2 for i in range(10)]  # merges stay in a camera


# ---------------------------------------------------------------------------------------------- data module
@pytest.fixture(scope="module")
def video_root(data_root) -> Path:
    return data_root / "data"


def _module(root: Path, **kwargs) -> VideoDataModule:
    settings = {"name": "synthetic_video", "root": str(root), "synthetic": {"preset": "video-tiny", "seed": 0},
                "height": 32, "width": 16, "batch_size": 8, "test_batch_size": 16, "num_workers": 0,
                "in_memory": True, "batched_augment": True, **kwargs}
    dm = VideoDataModule(**settings)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_restrict_train_keeps_the_chosen_tracklets_with_their_frames(video_root) -> None:
    dm = _module(video_root)
    before = list(dm.data.train)
    offsets = dm._frame_offsets["train"].clone()
    cache = dm._pixels("train").cache.clone()
    dm.restrict_train([9, 0, 5, 9])
    assert [r.index for r in dm.data.train] == [0, 1, 2]
    assert [r.paths for r in dm.data.train] == [before[i].paths for i in (0, 5, 9)]
    frames = torch.cat([cache[offsets[i]:offsets[i + 1]] for i in (0, 5, 9)])
    assert torch.equal(dm._pixels("train").cache, frames)
    assert dm._pixels("train").paths == [p for i in (0, 5, 9) for p in before[i].paths]
    lengths = [before[i].num_frames for i in (0, 5, 9)]
    assert dm._frame_offsets["train"].tolist() == [0, *np.cumsum(lengths).tolist()]
    assert dm.pooling_offsets("train").numel() == 4  # the feature pass pools three tracklets
    with pytest.raises(ValueError, match=r"restrict_train: expected positions in \[0, 3\)"):
        dm.restrict_train([3])


def test_camera_balanced_frame_batches(video_root) -> None:
    """UGA on video classifies frames: camera-balanced batches of train frames, an epoch = one pass over them."""
    dm = _module(video_root)
    dm.restrict_train([0, 3, 5, 8, 13, 21, 34])
    cams = sorted({r.camid for r in dm.data.train})
    frame_cams = torch.tensor([r.camid for r in dm.data.train for _ in r.paths])
    size = 2 * len(cams)
    batches = list(dm.camera_balanced_dataloader(batch_size=size))
    assert len(batches) == frame_cams.numel() // size
    cache = dm._pixels("train").cache
    for batch in batches:
        assert batch["image"].shape == (size, 3, 32, 16)
        assert torch.bincount(batch["camid"], minlength=max(cams) + 1)[cams].tolist() == [2] * len(cams)
        assert torch.equal(batch["camid"], frame_cams[batch["index"]])  # index = the frame row
    assert cache.shape[0] == frame_cams.numel()


# ------------------------------------------------------------------------------------------- tracklet features
def _tiny_backbone() -> ReIDBackbone:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    return ReIDBackbone(body, 4, name="tiny", mean=(0.5,) * 3, std=(0.5,) * 3)


def _attach(module: nn.Module, dm: VideoDataModule) -> None:
    """What the feature passes read of a trainer: its data module, rank 0, no progress bar."""
    module._trainer = SimpleNamespace(datamodule=dm, is_global_zero=True, progress_bar_callback=None)


def _frames(dm: VideoDataModule, record: TrackletRecord, k: int | None) -> torch.Tensor:
    """The tracklet's frames of the train features pass (k at np.linspace positions, or all), test-transformed."""
    n = record.num_frames
    keep = range(n) if k is None or n <= k else np.linspace(0, n - 1, k).astype(int).tolist()
    return torch.stack([dm.test_transform(decode_image(record.paths[j])) for j in keep])


def test_sslr_tracklet_features_pool_the_frames(video_root) -> None:
    dm = _module(video_root, video={"train_frames": 3})
    camids = torch.tensor([r.camid for r in dm.data.train])
    module = SSLRModule(_tiny_backbone(), camids, max_epochs=3,
                        config={"schedule": {"stage0_epochs": 1, "epochs_per_iteration": 1}, "soft": {"k": 2},
                                "embed_dim": 5})
    _attach(module, dm)
    g, pf, emb = module.extract_train_features(parts=2)
    assert g.shape == (len(camids), 4) and pf.shape == (len(camids), 2, 4) and emb.shape == (len(camids), 5)
    module.eval()
    with torch.no_grad():
        for t in (0, 7, len(camids) - 1):
            fmap, pool5 = module._trunk(_frames(dm, dm.data.train[t], 3))
            mean = pool5.mean(0, keepdim=True)
            torch.testing.assert_close(g[t], nn.functional.normalize(mean, dim=1)[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(emb[t], module.embed(mean)[0], rtol=1e-4, atol=1e-5)
            parts = nn.functional.normalize(part_features(fmap, 2).mean(0), dim=1)
            torch.testing.assert_close(pf[t], parts, rtol=1e-4, atol=1e-5)
    assert module.training is False  # eval_mode restores the mode the module was in


@pytest.mark.parametrize("train_frames", [None, 2])
def test_uga_centre_features_on_video_are_the_frames_of_the_pass_with_their_tracklets(video_root, train_frames) -> None:
    dm = _module(video_root, video={"train_frames": train_frames})
    records = dm.data.train
    tracklet, camera = tracklets_from_records(records, real=True)
    encoder = UGAEncoder(_tiny_backbone(), "embed", 6, 0.5)
    module = UGAModule(encoder, tracklet, camera, config=UGAConfig(), max_epochs=2)
    _attach(module, dm)
    feats, owners = module.extract_train_features()
    frames = [min(r.num_frames, train_frames or r.num_frames) for r in records]
    assert feats.shape == (sum(frames), 6) and owners.shape == (sum(frames),)
    centres = tracklet_centres(feats, owners, int(camera.numel()))
    encoder.eval()
    start = np.cumsum([0, *[r.num_frames for r in records]])
    with torch.no_grad():
        for t in (0, 11, len(records) - 1):
            own = tracklet[start[t]]
            assert bool((owners[sum(frames[:t]): sum(frames[:t + 1])] == own).all())
            torch.testing.assert_close(centres[own], encoder(_frames(dm, records[t], train_frames)).mean(0),
                                       rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------- configs and runs
def test_video_experiments_compose_with_the_papers_video_schedule(tmp_path) -> None:
    cpu = compose_cfg(tmp_path, "experiment=video/sslr")
    assert cpu.dataset.name == "synthetic_video" and cpu.artefact == "video" and cpu.row == "sslr"
    assert (cpu.method.schedule.stage0_epochs, cpu.method.schedule.epochs_per_iteration) == (2, 2)  # cpu preset
    gpu = compose_cfg(tmp_path, "experiment=video/sslr", "preset=paper")
    assert (gpu.method.schedule.stage0_epochs, gpu.method.schedule.epochs_per_iteration) == (30, 5)  # spec §6.1
    baseline = compose_cfg(tmp_path, "experiment=video/sslr_baseline", "preset=paper")
    assert baseline.max_epochs == 30 and baseline.row == "sslr_baseline"
    uga = compose_cfg(tmp_path, "experiment=video/uga")
    assert uga.data.video.train_frames is None and uga.method.video.tracklets == "one_per_camera"
    assert supervision_label(uga) == UGA_VIDEO_PICK
    assert uses_besides_images(uga) == [UGA_VIDEO_PICK, "camera IDs (per-camera classifiers)"]
    every = compose_cfg(tmp_path, "experiment=video/uga", "method.video.tracklets=all")
    assert supervision_label(every) == UGA_VIDEO_ALL
    image = compose_cfg(tmp_path, "experiment=uga/uga")
    assert supervision_label(image) == "intra-camera labels"  # images: the (person, camera) grouping
    from mprd.report.artefacts import get

    assert get("video").rows() == ["sslr_baseline", "sslr", "uga_intra", "uga", "super"]


def test_sslr_trains_on_video_tracklets(data_root, tmp_path) -> None:
    cfg = compose_cfg(data_root, *VIDEO, "method=sslr", "max_epochs=2", "eval_every=1", "data.batch_size=8",
                      "sslr_schedule.stage0_epochs=1", "sslr_schedule.epochs_per_iteration=1", "method.soft.k=2")
    record = run(cfg, tmp_path / "run")
    assert [e["epoch"] for e in record["per_epoch"]] == [0, 1, 2]
    assert record["final"]["iteration"] == 1 and 0.0 <= record["final"]["reliable_precision"] <= 1.0
    assert all(0.0 <= e["rank1"] <= e["rank20"] <= 100.0 for e in record["per_epoch"])
    assert "trained_on" not in record  # every train tracklet is a class
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["sslr"]["reliable"].shape == (46, 2)  # k reliable tracklets per train tracklet
    assert ckpt["state_dict"]["table.features"].shape[0] == 46


def test_uga_trains_on_one_real_tracklet_per_person_and_camera(data_root, tmp_path) -> None:
    cfg = compose_cfg(data_root, *VIDEO, "method=uga", "max_epochs=2", "eval_every=1", "data.batch_size=8")
    record = run(cfg, tmp_path / "run")
    train = record["dataset_statistics"]["train"]
    pairs = json.loads((tmp_path / "run" / "metrics.json").read_text())["trained_on"]
    assert pairs["tracklets"] < train["tracklets"] == 46 and pairs["ids"] == train["ids"]
    assert record["supervision"] == UGA_VIDEO_PICK and record["uses"][0] == UGA_VIDEO_PICK
    assert [e["epoch"] for e in record["per_epoch"]] == [0, 1, 2]
    assert "cvg/edges" in record["train_log"] or any(k.startswith("cvg/") for k in record["train_log"])



def _video_run(root: Path, name: str, row: str, seed: int, rank1: float, mAP: float, split: int | None = None):
    folder = root / name
    folder.mkdir(parents=True)
    rec = {"method": row, "row": row, "artefact": "video", "dataset": "synthetic_video", "seed": seed,
           "preset": "cpu", "final": {"rank1": rank1, "rank5": rank1 + 5, "rank10": rank1 + 8,
                                      "rank20": rank1 + 9, "mAP": mAP},
           "config": {"dataset": {"options": {"split_id": split}}}}
    (folder / "metrics.json").write_text(json.dumps(rec))


def test_video_report_shows_rank20_beside_mars_and_averages_splits(tmp_path) -> None:
    from mprd.report import aggregate, collect_runs, render_markdown

    _video_run(tmp_path, "uga-s0", "uga", 0, 40.0, 30.0)
    _video_run(tmp_path, "uga-s1", "uga", 1, 50.0, 34.0)
    df = aggregate(collect_runs(tmp_path), "video")
    uga = df.set_index("key").loc["uga"]
    assert (uga["n"], uga["rank20_mean"], uga["paper_rank20"], uga["paper_mAP"]) == (2, 54.0, 81.4, 39.3)
    assert df.attrs["reference_dataset"] == "mars" and "rank20" in df.attrs["shown"]
    text = render_markdown(df, [], tmp_path, date="2000-01-01")
    assert "| Rank-10 | Rank-20 | mAP | Paper Rank-1 (MARS) |" in text and "| Paper Rank-20 (MARS) |" in text

    splits = tmp_path / "splits"
    for split in (0, 1):
        _video_run(splits, f"uga-split{split}", "uga", 0, 60.0 + split, 50.0, split=split)
    assert aggregate(collect_runs(splits), "video").attrs["warnings"] == []  # two splits of seed 0: replicates
    _video_run(splits, "uga-split1-again", "uga", 0, 70.0, 50.0, split=1)
    warnings = aggregate(collect_runs(splits), "video").attrs["warnings"]
    assert any("seed 0 on split 1 2 times" in w for w in warnings)
