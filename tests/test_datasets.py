"""Dataset parsers on tiny fake trees (hand-counted), error paths, statistics check, lazy image loading."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from mprd.data.datasets import (
    DATASETS,
    PUBLISHED_STATS,
    check_statistics,
    expected_statistics,
    load_dataset,
    load_image,
    parse_market_name,
)
from mprd.data.records import DatasetError, ReIDData


def _jpeg_bytes(color=(200, 30, 30), size=(4, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _write(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(JPEG)  # parsers never decode, so one tiny JPEG serves every name


MARKET_TRAIN = ["0007_c3s1_000100_00.jpg", "0002_c1s1_000451_03.jpg", "0002_c2s1_000500_01.png",
                "0007_c6s2_000001_01.jpeg"]
MARKET_QUERY = ["0002_c1s1_000001_00.jpg", "0007_c4s1_000002_00.jpg"]
MARKET_GALLERY = ["0002_c2s1_000010_01.jpg", "0007_c5s1_000011_01.jpg", "0000_c1s1_000012_01.jpg",
                  "-1_c2s1_000013_01.jpg", "-1_c4s1_000014_01.jpg"]


def make_market(root: Path, gallery: list[str] | None = None) -> Path:
    _write(root / "bounding_box_train", MARKET_TRAIN)
    _write(root / "query", MARKET_QUERY)
    _write(root / "bounding_box_test", MARKET_GALLERY if gallery is None else gallery)
    (root / "bounding_box_train" / "Thumbs.db").write_bytes(b"not an image")  # as in the Market release
    (root / "bounding_box_train" / "sub").mkdir()
    _write(root / "bounding_box_train" / "sub", ["0099_c1s1_000001_00.jpg"])  # nested: not part of the split
    return root


# ---------------------------------------------------------------------------------------------------------
# Market layout
# ---------------------------------------------------------------------------------------------------------
def test_parse_market_name():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_market_name("-1_c3s1_000451_03.jpg") == (-1, 3)
    assert parse_market_name("0001_c2_f0046182.jpg") == (1, 2)
    assert parse_market_name("img_0001.jpg") is None


def test_market_counts_order_and_fields(tmp_path):
    data = load_dataset("market1501", make_market(tmp_path / "m"))
    assert isinstance(data, ReIDData) and data.name == "market1501"
    assert data.root == str(tmp_path / "m")
    # sorted by name, index = position, camid 0-based, pids not relabelled
    assert [(Path(r.path).name, r.pid, r.camid, r.index) for r in data.train] == [
        ("0002_c1s1_000451_03.jpg", 2, 0, 0),
        ("0002_c2s1_000500_01.png", 2, 1, 1),
        ("0007_c3s1_000100_00.jpg", 7, 2, 2),
        ("0007_c6s2_000001_01.jpeg", 7, 5, 3),
    ]
    assert all(os.path.isfile(r.path) for r in data.train + data.query + data.gallery)
    assert [(r.pid, r.camid) for r in data.query] == [(2, 0), (7, 3)]
    # default: junk dropped, distractor pid 0 kept
    assert sorted(r.pid for r in data.gallery) == [0, 2, 7]
    assert [r.index for r in data.gallery] == [0, 1, 2]
    assert data.camstyle == {}
    assert data.statistics()["gallery"] == {"images": 3, "ids": 3, "cameras": 3}


def test_market_keep_junk_only_in_gallery(tmp_path):
    root = make_market(tmp_path / "m")
    _write(root / "query", ["-1_c2s1_000003_00.jpg"])
    _write(root / "bounding_box_train", ["-1_c2s1_000004_00.jpg"])
    for keep in (False, True):
        data = load_dataset("market1501", root, keep_junk=keep)
        assert all(r.pid != -1 for r in data.train + data.query)
        assert len(data.train) == 4 and len(data.query) == 2
    data = load_dataset("market1501", root, keep_junk=True)
    assert sorted(r.pid for r in data.gallery) == [-1, -1, 0, 2, 7]
    assert [r.index for r in data.gallery] == list(range(5))
    assert data.statistics()["gallery"]["ids"] == 4


def test_duke_cameras_and_range(tmp_path):
    root = tmp_path / "d"
    _write(root / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c8_f0000001.jpg", "0005_c1_f0000002.jpg"])
    _write(root / "query", ["0010_c7_f0000003.jpg"])
    _write(root / "bounding_box_test", ["0010_c3_f0000004.jpg", "0011_c8_f0000005.jpg"])
    data = load_dataset("dukemtmc", root)
    assert [(r.pid, r.camid) for r in data.train] == [(1, 1), (1, 7), (5, 0)]
    assert data.statistics()["train"] == {"images": 3, "ids": 2, "cameras": 3}
    _write(root / "query", ["0012_c9_f0000006.jpg"])  # Duke has 8 cameras
    with pytest.raises(DatasetError, match=r"0012_c9_f0000006\.jpg.*camera"):
        load_dataset("dukemtmc", root)
    # Market allows only 6 cameras: same tree without c9 but with c7/c8 fails as Market
    (root / "query" / "0012_c9_f0000006.jpg").unlink()
    with pytest.raises(DatasetError, match="camera in 1..6"):
        load_dataset("market1501", root)


def test_synthetic_and_cuhk03np_use_market_layout(tmp_path):
    root = make_market(tmp_path / "s")
    synth = load_dataset("synthetic", root)
    market = load_dataset("market1501", root)
    assert synth.name == "synthetic"
    assert [(r.path, r.pid, r.camid) for r in synth.train] == [(r.path, r.pid, r.camid) for r in market.train]
    with pytest.raises(DatasetError, match="camera in 1..2"):  # CUHK03-NP: camera 1|2 within a pair
        load_dataset("cuhk03np", root)


# ---------------------------------------------------------------------------------------------------------
# CamStyle
# ---------------------------------------------------------------------------------------------------------
def test_camstyle_maps_to_source_index(tmp_path):
    root = make_market(tmp_path / "m")
    cs = root / "bounding_box_train_camstyle"
    _write(cs, ["0002_c1s1_000451_03_fake_1to3.jpg", "0002_c1s1_000451_03_fake_1to2.jpg",
                "0007_c6s2_000001_01_fake_6to1.jpg"])
    data = load_dataset("market1501", root)
    src0 = data.train[0]
    assert Path(src0.path).name == "0002_c1s1_000451_03.jpg"
    assert data.camstyle[0] == [str(cs / "0002_c1s1_000451_03_fake_1to2.jpg"),
                                str(cs / "0002_c1s1_000451_03_fake_1to3.jpg")]
    assert data.camstyle[3] == [str(cs / "0007_c6s2_000001_01_fake_6to1.jpg")]
    assert data.camstyle[1] == [] and data.camstyle[2] == []
    assert set(data.camstyle) == {0, 1, 2, 3}
    assert data.statistics()["camstyle"]["images"] == 3
    assert load_dataset("market1501", root, camstyle=False).camstyle == {}


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("0003_c1s1_000001_00_fake_1to2.jpg", "no source image '0003_c1s1_000001_00'"),
        ("0002_c1s1_000451_03_fake_4to2.jpg", "source camera 4"),
        ("0002_c1s1_000451_03_style2.jpg", "cannot parse CamStyle file name"),
    ],
)
def test_camstyle_errors_name_the_file(tmp_path, name, pattern):
    root = make_market(tmp_path / "m")
    _write(root / "bounding_box_train_camstyle", [name])
    with pytest.raises(DatasetError, match=pattern) as err:
        load_dataset("market1501", root)
    assert name in str(err.value)


# ---------------------------------------------------------------------------------------------------------
# MSMT17
# ---------------------------------------------------------------------------------------------------------
MSMT_LISTS = {
    "train": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_03_0303noon_0020_1.jpg 0",
              "0001/0001_000_15_0113morning_0001_0.jpg 1"],
    "val": ["0001/0001_001_02_0114noon_0007_0.jpg 1"],
    "query": ["0000/0000_000_05_0302afternoon_0101_0.jpg 0"],
    "gallery": ["0000/0000_001_07_0302noon_0102_0.jpg 0", "0001/0001_000_05_0302noon_0103_2.jpg 1"],
}


def make_msmt(root: Path, version: str = "v1") -> Path:
    train_dir, test_dir = {"v1": ("train", "test"), "v2": ("mask_train_v2", "mask_test_v2")}[version]
    for split, lines in MSMT_LISTS.items():
        folder = root / (train_dir if split in ("train", "val") else test_dir)
        for line in lines:
            rel = line.split()[0]
            _write(folder / rel.split("/")[0], [rel.split("/")[1]])
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_msmt17_v1_lists_and_combine(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V1")
    data = load_dataset("msmt17", root)
    assert data.name == "msmt17"
    # list order kept, train then val; camera = third '_' field, 0-based; pid from the list
    assert [(Path(r.path).name, r.pid, r.camid, r.index) for r in data.train] == [
        ("0000_000_01_0303morning_0015_0.jpg", 0, 0, 0),
        ("0000_001_03_0303noon_0020_1.jpg", 0, 2, 1),
        ("0001_000_15_0113morning_0001_0.jpg", 1, 14, 2),
        ("0001_001_02_0114noon_0007_0.jpg", 1, 1, 3),
    ]
    assert data.train[0].path == str(root / "train" / "0000" / "0000_000_01_0303morning_0015_0.jpg")
    assert data.query[0].path.startswith(str(root / "test"))
    assert [(r.pid, r.camid) for r in data.gallery] == [(0, 6), (1, 4)]
    only_train = load_dataset("msmt17", root, combine_train_val=False)
    assert len(only_train.train) == 3 and [r.index for r in only_train.train] == [0, 1, 2]


def test_msmt17_version_detection(tmp_path):
    v2 = make_msmt(tmp_path / "MSMT17_V2", "v2")
    data = load_dataset("msmt17", v2)
    assert "mask_train_v2" in data.train[0].path and len(data.train) == 4
    with pytest.raises(DatasetError, match=r"lacks train, test"):
        load_dataset("msmt17", v2, version="v1")
    make_msmt(v2, "v1")
    with pytest.raises(DatasetError, match="both V1 and V2"):
        load_dataset("msmt17", v2)
    assert "mask_test_v2" in load_dataset("msmt17", v2, version="v2").query[0].path
    with pytest.raises(DatasetError, match="version='v3'"):
        load_dataset("msmt17", v2, version="v3")
    # a folder above MSMT17_V2/ descends into it (and finds both versions there)
    with pytest.raises(DatasetError, match="MSMT17_V2 holds both V1 and V2"):
        load_dataset("msmt17", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither"):
        load_dataset("msmt17", tmp_path / "empty")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("0000/0000_002_01_0303morning_0016_0.jpg 0", r"does not exist"),
        ("0000/0000_000_01_0303morning_0015_0.jpg", r"expected '<relative path> <pid>'"),
        ("0000/0000_000_01_0303morning_0015_0.jpg zero", r"expected '<relative path> <pid>'"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", r"cannot read the camera"),
        ("0000/badname.jpg 0", r"cannot read the camera"),
    ],
)
def test_msmt17_bad_list_line(tmp_path, line, pattern):
    root = make_msmt(tmp_path / "MSMT17_V1")
    (root / "list_query.txt").write_text(MSMT_LISTS["query"][0] + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=pattern) as err:
        load_dataset("msmt17", root)
    assert "list_query.txt line 2" in str(err.value)


def test_msmt17_missing_list_and_camstyle(tmp_path):
    root = make_msmt(tmp_path / "MSMT17_V1")
    cs = root / "bounding_box_train_camstyle"
    _write(cs, ["0001_001_02_0114noon_0007_0_fake_2to5.jpg", "0000_000_01_0303morning_0015_0_fake_1to4.jpg"])
    data = load_dataset("msmt17", root)
    assert data.camstyle[3] == [str(cs / "0001_001_02_0114noon_0007_0_fake_2to5.jpg")]
    assert data.camstyle[0] == [str(cs / "0000_000_01_0303morning_0015_0_fake_1to4.jpg")]
    # val renders are skipped (not errors) when val is left out of train
    only_train = load_dataset("msmt17", root, combine_train_val=False)
    assert set(only_train.camstyle) == {0, 1, 2} and sum(map(len, only_train.camstyle.values())) == 1
    _write(cs, ["0009_000_01_0303morning_0015_0_fake_1to4.jpg"])
    with pytest.raises(DatasetError, match="0009_000_01_0303morning_0015_0_fake_1to4"):
        load_dataset("msmt17", root)
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetError, match="lacks list_val.txt"):
        load_dataset("msmt17", root)


# ---------------------------------------------------------------------------------------------------------
# Bad input (Market layout) and registry
# ---------------------------------------------------------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist.*expected folders bounding_box_train"):
        load_dataset("market1501", tmp_path / "nowhere")


def test_wrong_layout_names_missing_folder(tmp_path):
    root = make_market(tmp_path / "m")
    (root / "query" / MARKET_QUERY[0]).unlink()
    (root / "query" / MARKET_QUERY[1]).unlink()
    (root / "query").rmdir()
    with pytest.raises(DatasetError, match=r"lacks query \(expected folders"):
        load_dataset("market1501", root)


def test_empty_split(tmp_path):
    root = make_market(tmp_path / "m")
    for name in MARKET_QUERY:
        (root / "query" / name).unlink()
    with pytest.raises(DatasetError, match=r"query holds no images"):
        load_dataset("market1501", root)


def test_only_junk_split(tmp_path):
    root = make_market(tmp_path / "m", gallery=["-1_c1s1_000001_00.jpg"])
    with pytest.raises(DatasetError, match="only junk"):
        load_dataset("market1501", root)
    assert len(load_dataset("market1501", root, keep_junk=True).gallery) == 1


def test_unparsable_file_name(tmp_path):
    root = make_market(tmp_path / "m")
    _write(root / "bounding_box_test", ["frame_0001.jpg"])
    with pytest.raises(DatasetError, match=r"cannot parse file name .*bounding_box_test.frame_0001\.jpg"):
        load_dataset("market1501", root)


def test_registry_names_and_options(tmp_path):
    assert set(DATASETS) == {"market1501", "dukemtmc", "msmt17", "cuhk03np", "synthetic"}
    with pytest.raises(DatasetError, match="unknown dataset 'viper'"):
        load_dataset("viper", tmp_path)
    with pytest.raises(DatasetError, match="unknown option.*combine_train_val"):
        load_dataset("market1501", make_market(tmp_path / "m"), combine_train_val=True)


# ---------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------
def test_published_stats_are_self_consistent():
    m = PUBLISHED_STATS["market1501"]
    assert m["train"]["images"] + expected_statistics("market1501", keep_junk=True)["gallery"]["images"] == 32668
    assert expected_statistics("market1501", keep_junk=True)["gallery"] == {"images": 19732, "ids": 752,
                                                                             "cameras": 6}
    assert m["gallery"]["images"] == 15913  # torchreid's count after dropping junk
    s = PUBLISHED_STATS["msmt17"]
    assert s["train"]["images"] + s["query"]["images"] + s["gallery"]["images"] == 126441
    assert expected_statistics("msmt17", combine_train_val=False)["train"]["images"] == 30248
    assert PUBLISHED_STATS["msmt17"]["train"]["images"] == 32621  # the table itself is not mutated
    c = PUBLISHED_STATS["cuhk03np"]
    assert sum(c[s]["images"] for s in ("train", "query", "gallery")) == 14097
    assert expected_statistics("synthetic") == {}


def test_check_statistics_reports_mismatches(tmp_path):
    data = load_dataset("market1501", make_market(tmp_path / "m"))
    exact = {"train": {"images": 4, "ids": 2, "cameras": 4}, "query": {"images": 2, "ids": 2},
             "gallery": {"images": 3, "ids": 3}}
    assert check_statistics(data, exact) == []
    problems = check_statistics(data, {"train": {"images": 5, "ids": 2}, "gallery": {"ids": 752}})
    assert len(problems) == 2
    assert "train images: found 4" in problems[0] and "published 5" in problems[0]
    assert "gallery ids: found 3" in problems[1] and "published 752" in problems[1]
    assert len(check_statistics(data, expected_statistics("market1501"))) == 9


# ---------------------------------------------------------------------------------------------------------
# Lazy image loading
# ---------------------------------------------------------------------------------------------------------
def test_load_image_ok_and_converts_to_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (5, 9), 77).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (5, 9) and img.getpixel((2, 3)) == (77, 77, 77)
    jpg = tmp_path / "a.jpg"
    jpg.write_bytes(_jpeg_bytes((0, 0, 255), (64, 128)))
    assert load_image(jpg).size == (64, 128)


@pytest.mark.parametrize("content", ["truncated", "garbage", "missing"])
def test_load_image_bad_file(tmp_path, content):
    path = tmp_path / "0001_c1s1_000001_00.jpg"
    if content == "truncated":
        path.write_bytes(_jpeg_bytes((10, 200, 10), (64, 128))[:300])
    elif content == "garbage":
        path.write_bytes(b"\x00not a jpeg at all" * 10)
    with pytest.raises(DatasetError, match=r"cannot read image .*0001_c1s1_000001_00\.jpg"):
        load_image(path)


# ---------------------------------------------------------------------------------------------------------
# Real data
# ---------------------------------------------------------------------------------------------------------
def _cuhk03_root() -> Path:
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cuhk03-np-detected"
    return Path(os.environ.get("MPRD_CUHK03_ROOT", default))


@pytest.mark.realdata
def test_cuhk03np_matches_published_numbers():
    root = _cuhk03_root()
    if not (root / "bounding_box_train").is_dir():
        pytest.skip(f"CUHK03-NP not found at {root}")
    data = load_dataset("cuhk03np", root)
    assert check_statistics(data, expected_statistics("cuhk03np")) == []
    assert data.statistics()["train"] == {"images": 7365, "ids": 767, "cameras": 2}
    # no identity in both train and test; every query id has gallery images
    train_ids = {r.pid for r in data.train}
    assert not train_ids & {r.pid for r in data.query + data.gallery}
    assert {r.pid for r in data.query} <= {r.pid for r in data.gallery}
    assert load_image(data.query[0].path).size == (64, 128)


# ---------------------------------------------------------------------------------------------------------
# Ecosystem conventions: roots above the official folder, key aliases, MSMT17 in Market style
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15"])
def test_root_above_the_official_folder_is_descended(tmp_path, sub, caplog):
    import logging

    inner = make_market(tmp_path / sub)
    with caplog.at_level(logging.INFO, logger="mprd.data.datasets"):
        data = load_dataset("market1501", tmp_path)
    assert data.root == str(inner) and len(data.train) == 4
    assert f"holds the official folder {sub}" in caplog.text


def test_two_official_folders_are_ambiguous(tmp_path):
    make_msmt(tmp_path / "MSMT17_V1", "v1")
    make_msmt(tmp_path / "MSMT17_V2", "v2")
    with pytest.raises(DatasetError, match=r"holds 2 copies .*MSMT17_V1.*MSMT17_V2.*set dataset.root"):
        load_dataset("msmt17", tmp_path)
    assert load_dataset("msmt17", tmp_path / "MSMT17_V2").root == str(tmp_path / "MSMT17_V2")


def test_cuhk03np_detected_folder_and_aliases(tmp_path):
    det = tmp_path / "cuhk03-np" / "detected"
    _write(det / "bounding_box_train", ["0001_c1s1_000001_00.jpg", "0001_c2s1_000002_00.jpg"])
    _write(det / "query", ["0002_c1s2_000001_00.jpg"])
    _write(det / "bounding_box_test", ["0002_c2s2_000002_00.jpg"])
    (tmp_path / "cuhk03-np" / "labeled").mkdir()
    for alias in ("cuhk03np", "cuhk03-np", "CUHK03_NP"):
        data = load_dataset(alias, tmp_path)
        assert data.name == "cuhk03np" and data.root == str(tmp_path / "cuhk03-np" / "detected")
    duke = tmp_path / "d" / "DukeMTMC-reID"
    make_market(duke, gallery=["0002_c8_f0000001.jpg"])  # Market names with cameras <= 8 parse as Duke
    assert load_dataset("dukemtmcreid", tmp_path / "d").name == "dukemtmc"
    with pytest.raises(DatasetError, match="unknown dataset 'viper'.*alias: .*dukemtmcreid"):
        load_dataset("viper", tmp_path)


def test_msmt17_market_style_with_fake_copies(tmp_path):
    root = tmp_path / "msmt17" / "MSMT17_V1"
    _write(root / "bounding_box_train", ["0000_c1_0000.jpg", "0000_c14_0001.jpg", "0001_c15_0002.jpg",
                                         "0000_c1_0000_fake_3.jpg", "0001_c15_0002_fake_1.jpg"])
    _write(root / "query", ["0000_c2_0000.jpg"])
    _write(root / "bounding_box_test", ["0000_c5_0001.jpg", "0003_c9_0002.jpg"])
    _write(root / "bounding_box_train_camstyle", ["0000_c14_0001_fake_2.jpg", "0000_c1_0000_fake_1to7.jpg"])
    data = load_dataset("msmt17", tmp_path)  # descends msmt17/MSMT17_V1, detects the Market style
    assert data.root == str(root)
    # the _fake_ copies in bounding_box_train are CamStyle, not train images; cameras up to 15
    assert [(Path(r.path).name, r.pid, r.camid) for r in data.train] == [
        ("0000_c14_0001.jpg", 0, 13), ("0000_c1_0000.jpg", 0, 0), ("0001_c15_0002.jpg", 1, 14)]
    names = {i: [Path(p).name for p in v] for i, v in data.camstyle.items()}
    assert names == {0: ["0000_c14_0001_fake_2.jpg"],
                     1: ["0000_c1_0000_fake_3.jpg", "0000_c1_0000_fake_1to7.jpg"],  # sorted by path
                     2: ["0001_c15_0002_fake_1.jpg"]}
    assert load_dataset("msmt17", root, camstyle=False).camstyle == {}
    assert [r.camid for r in load_dataset("msmt17", root, version="market").gallery] == [4, 8]
    _write(root / "bounding_box_train", ["0000_c16_0003.jpg"])
    with pytest.raises(DatasetError, match=r"0000_c16_0003\.jpg has pid 0 / camera 16 .*camera in 1..15"):
        load_dataset("msmt17", root)


def test_hydra_alias_config_dukemtmcreid():
    from hydra import compose, initialize_config_dir

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=dukemtmcreid", "dataset.root=/data/x"])
    assert (cfg.dataset.name, cfg.dataset.root, cfg.run_name) == ("dukemtmc", "/data/x", "knn-dukemtmc")
