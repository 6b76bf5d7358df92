"""Video dataset parsers on tiny fake trees (hand-counted): MARS, DukeMTMC-VideoReID, PRID2011, iLIDS-VID.

Frames are empty files: the parsers only list names, they never decode a frame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from mprd.data.datasets import check_statistics, load_dataset
from mprd.data.records import DatasetError, TrackletRecord, VideoReIDData
from mprd.data.video_datasets import (
    NUM_SPLITS,
    VIDEO_DATASETS,
    expected_video_statistics,
    is_video_dataset,
    load_video_dataset,
    make_identity_splits,
)

CONF = Path(__file__).resolve().parents[1] / "conf"


def _touch(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def _tracks(*frames: tuple[str, int]) -> list[str]:
    """Frame names of consecutive tracklets: (prefix '<pid>C<cam>T<tracklet>', frame count) each."""
    return [f"{prefix}F{i:03d}.jpg" for prefix, count in frames for i in range(1, count + 1)]


# ---------------------------------------------------------------------------------------------------------
# MARS
# ---------------------------------------------------------------------------------------------------------
MARS_TRAIN_NAMES = _tracks(("0001C1T0001", 3), ("0001C2T0001", 2), ("0003C4T0002", 1))
MARS_TRAIN_INFO = [[1, 3, 1, 1], [4, 5, 1, 2], [6, 6, 3, 4]]
MARS_TEST_NAMES = _tracks(("0002C1T0001", 2), ("0002C3T0001", 3), ("0000C2T0001", 1), ("00-1C5T0001", 2),
                          ("0004C6T0003", 1), ("0004C1T0001", 1))
MARS_TEST_INFO = [[1, 2, 2, 1], [3, 5, 2, 3], [6, 6, 0, 2], [7, 8, -1, 5], [9, 9, 4, 6], [10, 10, 4, 1]]
MARS_QUERY_IDX = [5, 1]  # 1-based rows of the test tracks; the rest (2, 3, 4, 6) is the gallery


def make_mars(root: Path, train_names=None, train_info=None, test_names=None, test_info=None,
              query_idx=None) -> Path:
    train_names = MARS_TRAIN_NAMES if train_names is None else train_names
    test_names = MARS_TEST_NAMES if test_names is None else test_names
    for split, names in (("bbox_train", train_names), ("bbox_test", test_names)):
        for name in names:
            _touch(root / split / name[:4], [name])
    info = root / "info"
    info.mkdir(parents=True)
    (info / "train_name.txt").write_text("\n".join(train_names) + "\n")
    (info / "test_name.txt").write_text("\n".join(test_names) + "\n")
    savemat(info / "tracks_train_info.mat",
            {"track_train_info": np.array(MARS_TRAIN_INFO if train_info is None else train_info, dtype=float)})
    savemat(info / "tracks_test_info.mat",
            {"track_test_info": np.array(MARS_TEST_INFO if test_info is None else test_info, dtype=float)})
    savemat(info / "query_IDX.mat", {"query_IDX": np.array([MARS_QUERY_IDX if query_idx is None else query_idx])})
    return root


def _summary(records: list[TrackletRecord]) -> list[tuple[int, int, int, int, int]]:
    return [(r.pid, r.camid, r.tracklet, r.num_frames, r.index) for r in records]


def test_mars_counts_order_and_fields(tmp_path):
    root = make_mars(tmp_path / "mars")
    data = load_video_dataset("mars", root)
    assert isinstance(data, VideoReIDData) and data.name == "mars" and data.root == str(root)
    assert data.split_id is None
    # (pid, 0-based camera, tracklet number, frames, index in split)
    assert _summary(data.train) == [(1, 0, 1, 3, 0), (1, 1, 1, 2, 1), (3, 3, 2, 1, 2)]
    assert _summary(data.query) == [(4, 5, 3, 1, 0), (2, 0, 1, 2, 1)]  # query_IDX order
    assert _summary(data.gallery) == [(2, 2, 1, 3, 0), (0, 1, 1, 1, 1), (4, 0, 1, 1, 2)]  # junk dropped, pid 0 kept
    first = data.train[0].paths
    assert first == tuple(str(root / "bbox_train" / "0001" / f"0001C1T0001F00{i}.jpg") for i in (1, 2, 3))
    assert all(os.path.isfile(p) for r in data.train + data.query + data.gallery for p in r.paths)
    assert data.statistics() == {
        "train": {"tracklets": 3, "ids": 2, "cameras": 3, "frames": 6},
        "query": {"tracklets": 2, "ids": 2, "cameras": 2, "frames": 3},
        "gallery": {"tracklets": 3, "ids": 3, "cameras": 3, "frames": 5},
    }
    assert data.num_train == 3 and data.num_cameras == 5


def test_mars_keep_junk_and_min_seq_len(tmp_path):
    root = make_mars(tmp_path / "mars")
    data = load_video_dataset("mars", root, keep_junk=True)
    assert [(r.pid, r.camid, r.num_frames) for r in data.gallery] == [(2, 2, 3), (0, 1, 1), (-1, 4, 2), (4, 0, 1)]
    assert [r.index for r in data.gallery] == [0, 1, 2, 3]
    assert all(r.pid != -1 for r in data.train + data.query)
    short = load_video_dataset("mars", root, min_seq_len=2)
    assert [r.num_frames for r in short.train] == [3, 2]  # the 1-frame train tracklet is dropped
    assert [r.num_frames for r in short.query] == [1, 2]  # query/gallery are never filtered
    assert len(short.gallery) == 3
    with pytest.raises(DatasetError, match=r"train \(min_seq_len=4\).*holds no tracklets"):
        load_video_dataset("mars", root, min_seq_len=4)


def test_mars_root_above_official_folder(tmp_path):
    make_mars(tmp_path / "data" / "MARS")
    data = load_video_dataset("mars", tmp_path / "data")
    assert data.root == str(tmp_path / "data" / "MARS") and len(data.train) == 3


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"train_info": [[1, 3, 1, 1], [4, 5, 1, 2], [6, 7, 3, 4]]},
         r"tracks_train_info\.mat row 3 \[6, 7, 3, 4\] points past the 6 frame names of .*train_name\.txt"),
        ({"test_info": [[0, 2, 2, 1]] + MARS_TEST_INFO[1:]}, r"tracks_test_info\.mat row 1 .* points past"),
        ({"train_info": [[1, 3, 1, 1], [5, 4, 1, 2], [6, 6, 3, 4]]},
         r"tracks_train_info\.mat row 2 \[5, 4, 1, 2\] is an empty tracklet"),
        ({"train_names": MARS_TRAIN_NAMES[:5] + ["0003C4T0002Fxyz.jpg"]},
         r"cannot parse frame name '0003C4T0002Fxyz\.jpg' \(entry 6 of .*info.train_name\.txt"),
        ({"test_names": ["frame_0001.jpg"] + MARS_TEST_NAMES[1:]}, r"cannot parse frame name 'frame_0001\.jpg'"),
        ({"train_info": [[1, 4, 1, 1], [5, 5, 1, 2], [6, 6, 3, 4]]},
         r"row 1 \[1, 4, 1, 1\] covers frame '0001C2T0001F001\.jpg' \(entry 4 .*expected one tracklet's frames"),
        ({"train_info": [[1, 3, 1, 1], [4, 5, 1, 7], [6, 6, 3, 4]]}, r"row 2 .* camera in 1\.\.6"),
        ({"train_info": [[1, 3, 1, 1]]}, None),  # a subset of the rows is fine
        ({"train_info": np.zeros((0, 4))}, r"tracks_train_info\.mat holds a 0x4 matrix"),
        ({"query_idx": [5, 7]}, r"query_IDX\.mat entry 2 = 7 points past the 6 test tracks"),
        ({"query_idx": [5, 5]}, r"query_IDX\.mat lists a test track twice"),
    ],
)
def test_mars_bad_info(tmp_path, change, pattern):
    root = make_mars(tmp_path / "mars", **change)
    if pattern is None:
        assert len(load_video_dataset("mars", root).train) == 1
        return
    with pytest.raises(DatasetError, match=pattern) as err:
        load_video_dataset("mars", root)
    assert str(root) in str(err.value)


def test_mars_missing_root_folder_and_info_file(tmp_path):
    with pytest.raises(DatasetError, match=r"mars: dataset root .*nowhere does not exist .*bbox_train, bbox_test"):
        load_video_dataset("mars", tmp_path / "nowhere")
    root = make_mars(tmp_path / "mars")
    (root / "info" / "query_IDX.mat").unlink()
    with pytest.raises(DatasetError, match=r"mars: .*info lacks query_IDX\.mat \(expected the MARS info files"):
        load_video_dataset("mars", root)
    (root / "info").rename(root / "information")
    with pytest.raises(DatasetError, match=r"mars: .*mars lacks info \(expected folders bbox_train"):
        load_video_dataset("mars", root)


def test_mars_missing_pid_folder_and_bad_mat(tmp_path):
    root = make_mars(tmp_path / "mars")
    for name in os.listdir(root / "bbox_test" / "0004"):
        (root / "bbox_test" / "0004" / name).unlink()
    (root / "bbox_test" / "0004").rmdir()
    with pytest.raises(DatasetError, match=r"bbox_test.0004 does not exist \(expected the frames of test_name\.txt"):
        load_video_dataset("mars", root)
    root = make_mars(tmp_path / "mars2")
    (root / "info" / "tracks_test_info.mat").write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=r"cannot read .*tracks_test_info\.mat"):
        load_video_dataset("mars", root)
    root = make_mars(tmp_path / "mars3")
    (root / "info" / "train_name.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"name list .*train_name\.txt is empty"):
        load_video_dataset("mars", root)


# ---------------------------------------------------------------------------------------------------------
# DukeMTMC-VideoReID
# ---------------------------------------------------------------------------------------------------------
def _duke_tracklet(root: Path, split: str, pid: int, tracklet: int, cam: int, frames: int) -> Path:
    folder = root / split / f"{pid:04d}" / f"{tracklet:04d}"
    _touch(folder, [f"{pid:04d}_C{cam}_F{f:04d}_X{tracklet:05d}.jpg" for f in range(1, frames + 1)])
    return folder


def make_duke_video(root: Path) -> Path:
    _duke_tracklet(root, "train", 1, 1, 1, 2)
    _duke_tracklet(root, "train", 1, 2, 3, 1)
    _duke_tracklet(root, "train", 5, 1, 8, 3)
    _duke_tracklet(root, "query", 10, 1, 2, 1)
    _duke_tracklet(root, "gallery", 10, 2, 4, 2)
    _duke_tracklet(root, "gallery", 11, 1, 5, 1)
    (root / "train" / "0001" / "0001" / "Thumbs.db").write_bytes(b"")  # not a frame
    return root


def test_duke_video_counts_and_fields(tmp_path):
    root = make_duke_video(tmp_path / "DukeMTMC-VideoReID")
    data = load_video_dataset("dukemtmcvidreid", tmp_path)  # torchreid's key; root above the official folder
    assert data.name == "dukemtmcvideoreid" and data.root == str(root)
    assert _summary(data.train) == [(1, 0, 1, 2, 0), (1, 2, 2, 1, 1), (5, 7, 1, 3, 2)]
    assert _summary(data.query) == [(10, 1, 1, 1, 0)]
    assert _summary(data.gallery) == [(10, 3, 2, 2, 0), (11, 4, 1, 1, 1)]
    assert data.train[0].paths == (str(root / "train" / "0001" / "0001" / "0001_C1_F0001_X00001.jpg"),
                                   str(root / "train" / "0001" / "0001" / "0001_C1_F0002_X00001.jpg"))
    assert data.statistics()["train"] == {"tracklets": 3, "ids": 2, "cameras": 3, "frames": 6}
    assert [r.num_frames for r in load_video_dataset("dukemtmcvideoreid", root, min_seq_len=2).train] == [2, 3]


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        (lambda r: (r / "train" / "0005" / "0002").mkdir(), r"tracklet folder .*train.0005.0002 is empty"),
        (lambda r: _touch(r / "gallery" / "0011" / "0001", ["frame_0001.jpg"]),
         r"cannot parse frame name .*gallery.0011.0001.frame_0001\.jpg"),
        (lambda r: _touch(r / "train" / "0005" / "0001", ["0005_C7_F0009_X00001.jpg"]),
         r"tracklet folder .*train.0005.0001 mixes .*expected one pid and one camera"),
        (lambda r: _duke_tracklet(r, "query", 12, 1, 9, 1), r"0012_C9_F0001_X00001\.jpg has pid 12 / camera 9"),
        (lambda r: _touch(r / "query" / "0013" / "0001", ["0014_C1_F0001_X1.jpg"]),
         r"has pid 14 / camera 1 \(expected the pid of its folder, 13"),
        (lambda r: _touch(r / "query" / "abc" / "0001", ["0014_C1_F0001_X1.jpg"]), r"cannot parse tracklet folder"),
    ],
)
def test_duke_video_bad_input(tmp_path, damage, pattern):
    root = make_duke_video(tmp_path / "d")
    damage(root)
    with pytest.raises(DatasetError, match=pattern):
        load_video_dataset("dukemtmcvideoreid", root)


def test_duke_video_missing_split_and_empty_split(tmp_path):
    root = make_duke_video(tmp_path / "d")
    for name in os.listdir(root / "query" / "0010" / "0001"):
        (root / "query" / "0010" / "0001" / name).unlink()
    (root / "query" / "0010" / "0001").rmdir()
    with pytest.raises(DatasetError, match=r"query split of .*d.query holds no tracklets"):
        load_video_dataset("dukemtmcvideoreid", root)
    (root / "query" / "0010").rmdir()
    (root / "query").rmdir()
    with pytest.raises(DatasetError, match=r"lacks query \(expected folders train, query, gallery"):
        load_video_dataset("dukemtmcvideoreid", root)


# ---------------------------------------------------------------------------------------------------------
# PRID2011 and iLIDS-VID
# ---------------------------------------------------------------------------------------------------------
PRID_A = {1: 3, 2: 1, 3: 5, 4: 2, 5: 4, 6: 2}  # person -> frames in cam_a
PRID_B = {1: 2, 2: 4, 3: 5, 4: 3, 7: 2, 8: 1, 9: 6}  # persons 1-4 are in both cameras


def make_prid(root: Path) -> Path:
    for cam, persons in (("cam_a", PRID_A), ("cam_b", PRID_B)):
        for person, frames in persons.items():
            _touch(root / "multi_shot" / cam / f"person_{person:04d}", [f"{f:04d}.png" for f in range(1, frames + 1)])
    (root / "single_shot").mkdir()  # ignored
    return root


def make_ilids(root: Path, persons=(1, 2, 3)) -> Path:
    for cam in ("cam1", "cam2"):
        for person in persons:
            folder = root / "sequences" / cam / f"person{person:03d}"
            _touch(folder, [f"{cam}_person{person:03d}_{f:05d}.png" for f in range(1, 4)])
    return root


def test_prid_both_camera_rule_and_protocol(tmp_path):
    root = make_prid(tmp_path / "prid_2011")
    data = load_video_dataset("prid2011", root)
    assert data.split_id == 0
    train_ids, test_ids = {r.pid for r in data.train}, {r.pid for r in data.query}
    assert len(train_ids) == 2 and len(test_ids) == 2 and train_ids | test_ids == {1, 2, 3, 4}  # both cameras only
    assert not train_ids & test_ids
    assert sorted((r.pid, r.camid) for r in data.train) == sorted((p, c) for p in train_ids for c in (0, 1))
    assert [r.camid for r in data.query] == [0, 0] and [r.camid for r in data.gallery] == [1, 1]
    assert [r.pid for r in data.query] == [r.pid for r in data.gallery]
    by_cam = {(r.pid, r.camid): r for r in data.train + data.query + data.gallery}
    assert by_cam[(1, 0)].paths == tuple(str(root / "multi_shot" / "cam_a" / "person_0001" / f"000{i}.png")
                                         for i in (1, 2, 3))
    assert by_cam[(1, 1)].num_frames == 2 and all(r.tracklet == 1 for r in by_cam.values())
    assert data.statistics()["train"] == {"tracklets": 4, "ids": 2, "cameras": 2,
                                          "frames": sum(PRID_A[p] + PRID_B[p] for p in train_ids)}


def test_prid_min_seq_len_selects_persons(tmp_path):
    root = make_prid(tmp_path / "p")
    data = load_video_dataset("prid2011", root, min_seq_len=2, split_file="splits_min2.json")
    persons = {r.pid for r in data.train + data.query}
    assert persons == {1, 3, 4}  # person 2 has a 1-frame sequence in cam_a
    assert len({r.pid for r in data.train}) == 1 and len(data.query) == 2  # odd count: test gets the extra
    with pytest.raises(DatasetError, match=r"has 0 person\(s\) in both cameras with at least 6 frames"):
        load_video_dataset("prid2011", root, min_seq_len=6, split_file="splits_min6.json")


def test_split_file_written_deterministic_and_reused(tmp_path):
    root = make_prid(tmp_path / "p")
    split_file = root / "splits_prid2011.json"
    data = load_video_dataset("prid2011", root, split_id=3)
    written = json.loads(split_file.read_text())
    assert (written["dataset"], written["seed"], written["min_seq_len"]) == ("prid2011", 0, 0)
    splits = written["splits"]
    assert len(splits) == NUM_SPLITS
    assert all(sorted(s["train"] + s["test"]) == [f"person_{i:04d}" for i in range(1, 5)] for s in splits)
    assert len({tuple(s["train"]) for s in splits}) > 1  # the splits differ
    assert sorted(r.pid for r in data.query) == sorted(int(p[-4:]) for p in splits[3]["test"])
    # deterministic: the same seed draws the same file
    split_file.rename(root / "first.json")
    load_video_dataset("prid2011", root, split_id=3)
    assert split_file.read_text() == (root / "first.json").read_text()
    assert splits == make_identity_splits([f"person_{i:04d}" for i in range(1, 5)], NUM_SPLITS, 0)
    assert make_identity_splits(list("abcdef"), 3, seed=1) != make_identity_splits(list("abcdef"), 3, seed=2)
    # an existing file is read, never overwritten: a hand-made torchreid-style list is used as it is
    custom = [{"train": ["person_0001", "person_0002"], "test": ["person_0003", "person_0004"]}]
    split_file.write_text(json.dumps(custom))
    data = load_video_dataset("prid2011", root, split_id=0, seed=5)
    assert {r.pid for r in data.train} == {1, 2} and [r.pid for r in data.query] == [3, 4]
    assert json.loads(split_file.read_text()) == custom


@pytest.mark.parametrize(
    ("content", "options", "pattern"),
    [
        (None, {"split_id": 10}, r"split_id=10 is out of range \(expected 0\.\.9: .*splits_prid2011\.json holds 10"),
        (None, {"split_id": -1}, r"split_id=-1 is out of range"),
        (None, {"seed": 1}, r"splits_prid2011\.json was written for \{'seed': 0, 'min_seq_len': 0\}, not "
                            r"\{'seed': 1, 'min_seq_len': 0\} \(delete it"),
        ("{not json", {}, r"cannot read split file .*splits_prid2011\.json"),
        ('{"splits": 3, "seed": 0, "min_seq_len": 0}', {}, r"split file .* is malformed"),
        (json.dumps([{"train": ["person_0001"], "test": ["person_0005"]}]), {},
         r"names person 'person_0005' \(1 in all\), which is not in both cameras"),
        (json.dumps([{"train": ["person_0001"], "test": ["person_0001"]}]), {}, r"persons in both train and test"),
    ],
)
def test_split_file_errors(tmp_path, content, options, pattern):
    root = make_prid(tmp_path / "p")
    if content is None:
        load_video_dataset("prid2011", root)  # writes the default file (seed 0)
    else:
        (root / "splits_prid2011.json").write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        load_video_dataset("prid2011", root, **options)


def test_prid_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"prid2011: dataset root .* does not exist .*multi_shot/cam_a"):
        load_video_dataset("prid2011", tmp_path / "none")
    root = make_prid(tmp_path / "p")
    (root / "multi_shot" / "cam_b" / "person_0003" / "0001.png").unlink()
    for name in os.listdir(root / "multi_shot" / "cam_b" / "person_0003"):
        (root / "multi_shot" / "cam_b" / "person_0003" / name).unlink()
    with pytest.raises(DatasetError, match=r"tracklet folder .*cam_b.person_0003 is empty"):
        load_video_dataset("prid2011", root)
    root = make_prid(tmp_path / "q")
    (root / "multi_shot" / "cam_a" / "someone").mkdir()
    with pytest.raises(DatasetError, match=r"cannot parse person folder .*cam_a.someone \(expected person_<number>"):
        load_video_dataset("prid2011", root)


def test_ilids_root_above_and_split(tmp_path):
    folder = make_ilids(tmp_path / "ilids-vid" / "i-LIDS-VID")
    data = load_video_dataset("iLIDS-VID", tmp_path / "ilids-vid", split_id=9)
    assert data.name == "ilidsvid" and data.root == str(folder) and data.split_id == 9
    assert (folder / "splits_ilidsvid.json").is_file()
    assert len(data.train) == 2 and len(data.query) == 2 and len(data.gallery) == 2
    assert data.query[0].paths[0].endswith(f"cam1{os.sep}person{data.query[0].pid:03d}{os.sep}"
                                           f"cam1_person{data.query[0].pid:03d}_00001.png")
    assert {r.camid for r in data.gallery} == {1}
    (tmp_path / "other" / "sequences" / "cam1" / "person001").mkdir(parents=True)
    (tmp_path / "other" / "sequences" / "cam2" / "person002").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no person folder is in both .*cam1 and .*cam2"):
        load_video_dataset("ilidsvid", tmp_path / "other")


# ---------------------------------------------------------------------------------------------------------
# Registry, configs, statistics
# ---------------------------------------------------------------------------------------------------------
def test_registry_aliases_and_options(tmp_path):
    assert set(VIDEO_DATASETS) == {"mars", "dukemtmcvideoreid", "prid2011", "ilidsvid", "synthetic_video"}
    assert is_video_dataset("MARS") and is_video_dataset("prid") and not is_video_dataset("market1501")
    with pytest.raises(DatasetError, match="unknown video dataset 'viper'"):
        load_video_dataset("viper", tmp_path)
    with pytest.raises(DatasetError, match=r"mars: unknown option\(s\) split_id"):
        load_video_dataset("mars", tmp_path, split_id=1)
    with pytest.raises(DatasetError, match="'mars' is a video dataset: read it with .*load_video_dataset"):
        load_dataset("mars", tmp_path)


@pytest.mark.parametrize(("config", "make"), [("mars", make_mars), ("dukemtmcvideoreid", make_duke_video),
                                              ("prid2011", make_prid), ("ilidsvid", make_ilids)])
def test_hydra_configs_load(tmp_path, config, make):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    root = make(tmp_path / config)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"dataset={config}", f"dataset.root={root}"])
    options = OmegaConf.to_container(cfg.dataset.options, resolve=True)
    options["min_seq_len"] = 0  # PRID2011's default (22, DVR's rule) needs longer sequences than the fake tree's
    data = load_video_dataset(cfg.dataset.name, cfg.dataset.root, **options)
    assert data.name == config and len(data.train) > 0


def test_published_statistics(tmp_path):
    assert expected_video_statistics("mars")["gallery"] == {"tracklets": 9330}
    assert expected_video_statistics("mars", keep_junk=True)["gallery"] == {"tracklets": 10200}
    assert expected_video_statistics("prid2011", min_seq_len=22)["train"] == {"tracklets": 178, "ids": 89,
                                                                              "cameras": 2}
    assert expected_video_statistics("prid2011", min_seq_len=5) == {}
    assert expected_video_statistics("dukemtmcvidreid")["train"] == {"tracklets": 2196, "ids": 702}
    data = load_video_dataset("mars", make_mars(tmp_path / "mars"))
    problems = check_statistics(data, expected_video_statistics("mars"))
    assert "mars train tracklets: found 3 under" in problems[0] and "published 8,298" in problems[0]
    assert len(problems) == 5
    assert check_statistics(data, {"train": {"tracklets": 3, "frames": 6}}) == []
