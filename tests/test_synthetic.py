"""The synthetic re-ID benchmark: Market-1501 layout and naming, split rules, determinism, caching, realism."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mprd.data.records import DatasetError
from mprd.data.synthetic import (
    GENERATOR_VERSION,
    PRESETS,
    build_plan,
    camstyle_name,
    contact_sheet,
    ensure_synthetic,
    make_config,
    read_info,
    render_shot,
    render_styles,
    sample_identity,
)

MARKET_RE = re.compile(r"([-\d]+)_c(\d)")  # the regex every Market-1501 parser uses
FULL_NAME = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
CAMSTYLE = re.compile(r"^(\d{4}_c(\d)s\d_\d{6}_\d{2})_fake_(\d)to(\d)\.jpg$")
SMALL = {"num_train_ids": 4, "num_test_ids": 4, "camstyle": False}  # a quick regeneration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("syn"), "tiny", 0, workers=1)


def _parse(folder: Path) -> list[tuple[str, int, int]]:
    """(name, pid, camera 1-based) of every image in a folder, with the Market regex."""
    out = []
    for p in sorted(folder.iterdir()):
        m = MARKET_RE.search(p.name)
        assert m is not None, p.name
        out.append((p.name, int(m.group(1)), int(m.group(2))))
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.jpg"))
    }


# ------------------------------------------------------------------------------------------------- layout
def test_layout_names_and_image_size(tiny: Path) -> None:
    info = read_info(tiny)
    assert tiny.name == "synthetic-tiny-seed0"
    assert info["generator_version"] == GENERATOR_VERSION and info["config_hash"] == make_config("tiny").digest()
    counts = info["counts"]
    for folder in ("bounding_box_train", "query", "bounding_box_test", "bounding_box_train_camstyle"):
        names = sorted(p.name for p in (tiny / folder).iterdir())
        assert len(names) == counts[folder] > 0, folder
        pattern = CAMSTYLE if folder.endswith("camstyle") else FULL_NAME
        bad = [n for n in names if not pattern.match(n) or not MARKET_RE.search(n)]
        assert not bad, (folder, bad[:3])
    # pid 0 is written 0000, pid -1 as -1, every pid with 4 digits
    gallery = [n for n, _, _ in _parse(tiny / "bounding_box_test")]
    assert sum(n.startswith("0000_c") for n in gallery) == counts["distractors"] == round(2793 / 750 * 12)
    assert sum(n.startswith("-1_c") for n in gallery) == counts["junk"] == round(3819 / 750 * 12)
    for p in list((tiny / "query").iterdir())[:20] + list((tiny / "bounding_box_train_camstyle").iterdir())[:20]:
        with Image.open(p) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 128)), p.name


def test_split_rules(tiny: Path) -> None:
    train, query, gallery = (_parse(tiny / f) for f in ("bounding_box_train", "query", "bounding_box_test"))
    cfg = make_config("tiny")
    train_ids = {p for _, p, _ in train}
    test_ids = {p for _, p, _ in query}
    assert len(train_ids) == cfg.num_train_ids and len(test_ids) == cfg.num_test_ids
    assert 0 not in train_ids | test_ids and -1 not in train_ids | test_ids  # distractors / junk: gallery only
    assert not train_ids & test_ids
    assert {p for _, p, _ in gallery} == test_ids | {0, -1}
    # exactly one query per (test id, camera) where the id appears, and the camera keeps a gallery image
    q_pairs = Counter((p, c) for _, p, c in query)
    g_pairs = {(p, c) for _, p, c in gallery if p > 0}
    assert set(q_pairs.values()) == {1}
    assert set(q_pairs) == g_pairs
    # every id in >= 2 cameras, so every query has a cross-camera match in the gallery
    for records in (train, [r for r in gallery if r[1] > 0]):
        cams = defaultdict(set)
        for _, p, c in records:
            cams[p].add(c)
        assert min(len(v) for v in cams.values()) >= 2
        assert max(len(v) for v in cams.values()) <= cfg.num_cameras


def test_camstyle_copies(tiny: Path) -> None:
    train = {n: c for n, _, c in _parse(tiny / "bounding_box_train")}
    copies = defaultdict(list)
    for p in (tiny / "bounding_box_train_camstyle").iterdir():
        m = CAMSTYLE.match(p.name)
        stem, c_name, c1, c2 = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
        assert stem + ".jpg" in train and train[stem + ".jpg"] == c1 == c_name  # source camera in the name
        copies[stem + ".jpg"].append(c2)
    n_cams = make_config("tiny").num_cameras
    assert set(copies) == set(train)
    for name, targets in copies.items():
        assert sorted(targets) == sorted(set(range(1, n_cams + 1)) - {train[name]}), name
    assert camstyle_name("0002_c1s1_000451_03.jpg", 0, 1) == "0002_c1s1_000451_03_fake_1to2.jpg"


# ------------------------------------------------------------------------------------- structure statistics
def test_market_preset_matches_market_statistics() -> None:
    """Plans only (no rendering): the `market` preset reproduces Market-1501's counts within a few percent."""
    counts = build_plan(make_config("market", seed=0)).counts()
    assert (counts["train_ids"], counts["test_ids"]) == (751, 750)
    assert counts["bounding_box_train"] == pytest.approx(12936, rel=0.04)
    assert counts["query"] == pytest.approx(3368, rel=0.04)
    assert counts["bounding_box_test"] == pytest.approx(19732, rel=0.04)
    assert (counts["distractors"], counts["junk"]) == (2793, 3819)
    assert counts["bounding_box_train_camstyle"] == 5 * counts["bounding_box_train"]


def test_small_preset_scales_market_proportions() -> None:
    counts = build_plan(make_config("small", seed=3)).counts()
    ratio = 150 / 750
    assert counts["bounding_box_train"] / 150 == pytest.approx(12936 / 751, rel=0.1)  # ~17 images per id
    assert counts["query"] == pytest.approx(3368 * ratio, rel=0.1)
    assert counts["distractors"] == round(2793 / 750 * 150) and counts["junk"] == round(3819 / 750 * 150)


def test_palettes_make_look_alikes() -> None:
    """Dark upper clothes are the most common (~40 %), so many identity pairs share their main colours."""
    cfg = make_config("small")
    ids = [sample_identity(np.random.default_rng(i), cfg) for i in range(1500)]
    dark = np.mean([p.upper_name in ("black", "charcoal", "navy") for p in ids])
    assert 0.33 < dark < 0.45
    uppers, lowers = Counter(p.upper_name for p in ids), Counter(p.lower_name for p in ids)
    assert uppers.most_common(1)[0][0] == "black" and lowers.most_common(1)[0][0] == "black"
    # P(two random ids share upper and lower colour names) is far above uniform palettes' 1/(17*11)
    share = sum((uppers[u] / 1500) ** 2 for u in uppers) * sum((lowers[v] / 1500) ** 2 for v in lowers)
    assert share > 3 / (17 * 11)
    skewed = [sample_identity(np.random.default_rng(i), make_config("small", overrides={"palette_skew": 2.0}))
              for i in range(600)]
    assert np.mean([p.upper_name == "black" for p in skewed]) > np.mean([p.upper_name == "black" for p in ids[:600]])


# ---------------------------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_any_worker_count(tiny: Path, tmp_path: Path) -> None:
    again = ensure_synthetic(tmp_path, "tiny", 0, workers=2)
    a, b = _digests(tiny), _digests(again)
    assert len(a) == sum(read_info(tiny)["counts"][k] for k in ("bounding_box_train", "query", "bounding_box_test",
                                                                 "bounding_box_train_camstyle"))
    assert a == b


def test_different_seed_differs() -> None:
    p0, p1 = build_plan(make_config("tiny", seed=0)), build_plan(make_config("tiny", seed=1))
    assert [c.scene for c in p0.cameras] != [c.scene for c in p1.cameras] or p0.cameras != p1.cameras
    names0 = {s.relpath for s in p0.splits["bounding_box_train"]}
    names1 = {s.relpath for s in p1.splits["bounding_box_train"]}
    assert names0 != names1
    s0, s1 = p0.splits["bounding_box_train"][0], p1.splits["bounding_box_train"][0]
    assert np.abs(render_shot(p0, s0).astype(int) - render_shot(p1, s1).astype(int)).mean() > 10
    # and the same seed re-plans and re-renders identically
    p0b = build_plan(make_config("tiny", seed=0))
    assert np.array_equal(render_shot(p0, s0), render_shot(p0b, p0b.splits["bounding_box_train"][0]))


def test_camstyle_render_is_the_same_shot_in_another_style() -> None:
    """A CamStyle copy = rendering the train shot with another camera's style; the person stays in place."""
    plan = build_plan(make_config("tiny", seed=0))
    shot = plan.splits["bounding_box_train"][0]
    copies = [s for s in plan.splits["bounding_box_train_camstyle"] if s.relpath.startswith(shot.relpath[:-4])]
    assert len(copies) == plan.config.num_cameras - 1
    together = render_styles(plan, shot, [shot.cam] + [c.style for c in copies])
    assert np.array_equal(together[0], render_shot(plan, shot))
    for arr, c in zip(together[1:], copies, strict=True):
        assert np.array_equal(arr, render_shot(plan, c))
        assert np.abs(arr.astype(int) - together[0].astype(int)).mean() > 3  # the style changed


def _edges(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32).mean(2)
    return np.hypot(np.diff(grey, axis=0)[:, :-1], np.diff(grey, axis=1)[:-1, :]).ravel()


def test_camstyle_source_backdrop_keeps_the_capture_cameras_geometry() -> None:
    """camstyle_backdrop=source: a copy keeps the source scene's layout (edges) in the style camera's colours, as
    a CycleGAN copy does; the default pastes the person onto the style camera's scene."""
    target = build_plan(make_config("tiny", seed=0))
    source = build_plan(make_config("tiny", seed=0, overrides={"camstyle_backdrop": "source"}))
    assert "camstyle_backdrop" not in target.config.to_json()  # the default leaves cached copies' hash unchanged
    assert source.config.digest() != target.config.digest()
    closer = 0
    shots = target.splits["bounding_box_train"][:12]
    for shot in shots:
        other = (shot.cam + 1) % target.config.num_cameras
        own = render_shot(target, shot)
        pasted, kept = render_styles(target, shot, [other])[0], render_styles(source, shot, [other])[0]
        assert np.array_equal(render_styles(source, shot, [shot.cam])[0], own)  # its own camera: unchanged
        assert np.abs(kept.astype(int) - own.astype(int)).mean() > 3  # the style still changes
        e = _edges(own)
        closer += np.corrcoef(_edges(kept), e)[0, 1] > np.corrcoef(_edges(pasted), e)[0, 1]
    assert closer >= 11  # measured 12 of 12 (edge correlation 0.50-0.84 kept vs 0.21-0.66 pasted)
    with pytest.raises(ValueError, match="camstyle_backdrop must be 'target' or 'source'"):
        make_config("tiny", overrides={"camstyle_backdrop": "style"})


# -------------------------------------------------------------------------------------------------- caching
def test_cache_reuse_and_regeneration(tiny: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(tiny, root / tiny.name)
    target = root / tiny.name
    stamp = {p: p.stat().st_mtime_ns for p in (target / "synthetic.json", next((target / "query").iterdir()))}
    assert ensure_synthetic(root, "tiny", 0) == target
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp  # nothing rewritten
    # a changed override regenerates in place (the old generated copy is replaced)
    assert ensure_synthetic(root, "tiny", 0, overrides=SMALL) == target
    info = read_info(target)
    assert info["config_hash"] == make_config("tiny", 0, SMALL).digest() != make_config("tiny").digest()
    assert info["counts"]["train_ids"] == 4 and not (target / "bounding_box_train_camstyle").exists()
    assert len({p for _, p, _ in _parse(target / "bounding_box_train")}) == 4
    assert sorted(p.name for p in root.iterdir()) == [".synthetic-tiny-seed0.lock", target.name]  # no temp left


def test_refuses_to_replace_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "synthetic-tiny-seed0"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")
    with pytest.raises(DatasetError, match="synthetic.json"):
        ensure_synthetic(tmp_path, "tiny", 0, overrides=SMALL)
    assert (foreign / "precious.txt").read_text() == "mine"


def test_ignores_and_cleans_a_half_written_copy(tmp_path: Path) -> None:
    stale = tmp_path / ".synthetic-tiny-seed0.tmp-dead"  # as left by a killed generator
    (stale / "query").mkdir(parents=True)
    out = ensure_synthetic(tmp_path, "tiny", 0, overrides=SMALL)
    assert read_info(out)["counts"]["train_ids"] == 4 and not stale.exists()


def _call(root: str, queue) -> None:
    path = ensure_synthetic(root, "tiny", 0, overrides=SMALL, workers=1)
    queue.put((str(path), read_info(path)["generation_seconds"], os.stat(path / "synthetic.json").st_ino))


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_concurrent_callers_generate_once(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_call, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert results[0] == results[1]  # same folder, same synthetic.json: the second caller reused the first's copy
    assert sorted(p.name for p in tmp_path.iterdir()) == [".synthetic-tiny-seed0.lock", "synthetic-tiny-seed0"]


def test_bad_settings_name_the_problem() -> None:
    with pytest.raises(ValueError, match="preset 'huge'"):
        make_config("huge")
    with pytest.raises(ValueError, match="num_train_idz"):
        make_config("tiny", overrides={"num_train_idz": 3})
    with pytest.raises(ValueError, match="num_cameras"):
        make_config("tiny", overrides={"num_cameras": 12})
    with pytest.raises(ValueError, match="num_train_ids=2.5"):
        make_config("tiny", overrides={"num_train_ids": 2.5})
    with pytest.raises(ValueError, match="camstyle"):
        make_config("tiny", overrides={"camstyle": "yes"})
    with pytest.raises(ValueError, match="'preset' or 'seed'"):
        make_config("tiny", overrides={"seed": 3})
    # overrides are cast to the field types, so equal settings hash alike (no needless regeneration)
    a = make_config("tiny", overrides={"cameras_per_id_weights": [1, 1], "camera_gap": 1, "num_train_ids": 5.0})
    b = make_config("tiny", overrides={"cameras_per_id_weights": (1.0, 1.0), "camera_gap": 1.0, "num_train_ids": 5})
    assert a == b and a.digest() == b.digest() != make_config("tiny").digest()
    assert set(PRESETS) == {"tiny", "small", "market"}


# -------------------------------------------------------------------------------------------------- realism
def test_same_id_same_camera_closer_than_cross_camera_closer_than_other_ids(tiny: Path) -> None:
    """Raw pixels: within-camera redundancy < same id across cameras < different ids; colour histograms:
    same-camera pairs (same or different id) are closer than cross-camera ones (the camera gap).

    Ratios to the different-id cross-camera mean, real CUHK03-NP (detected) vs this generator, are in
    docs/synthetic.md (pixels: 0.77 / 0.97 real).
    """
    records = [r for f in ("bounding_box_train", "bounding_box_test") for r in _parse(tiny / f) if r[1] > 0]
    folders = {n: f for f in ("bounding_box_train", "bounding_box_test") for n in os.listdir(tiny / f)}
    imgs = [Image.open(tiny / folders[n] / n).convert("RGB") for n, _, _ in records]
    pixels = np.stack([np.asarray(im.resize((16, 32), Image.BILINEAR), np.float32).ravel() / 255 for im in imgs])
    q = [np.asarray(im, np.int64) // 64 for im in imgs]  # 4 levels per channel -> 64 colour bins
    hists = np.stack([np.bincount((b[..., 0] * 16 + b[..., 1] * 4 + b[..., 2]).ravel(), minlength=64) / b[..., 0].size
                      for b in q])
    pid = np.array([r[1] for r in records])
    cam = np.array([r[2] for r in records])
    iu = np.triu_indices(len(records), 1)
    same_id, same_cam = (pid[:, None] == pid[None])[iu], (cam[:, None] == cam[None])[iu]

    def means(feats: np.ndarray) -> tuple[float, float, float, float]:
        d = np.sqrt(((feats[:, None] - feats[None]) ** 2).sum(-1))[iu]
        return tuple(float(d[m].mean()) for m in (same_id & same_cam, same_id & ~same_cam,
                                                   ~same_id & same_cam, ~same_id & ~same_cam))

    ss, sc, ds, dc = means(pixels)
    assert ss < 0.8 * sc and sc < 0.98 * dc, (ss, sc, dc)
    assert ds < dc  # different people also look more alike within one camera
    ss, sc, ds, dc = means(hists)
    assert ss < 0.6 * sc and ds < 0.95 * dc, (ss, sc, ds, dc)


def test_cameras_differ_visibly() -> None:
    """The same shot rendered in each camera's style: every pair of cameras differs by a visible margin."""
    plan = build_plan(make_config("tiny", seed=0))
    shots = plan.splits["bounding_box_train"][:6]
    n = plan.config.num_cameras
    per_cam = np.stack([np.stack(render_styles(plan, s, range(n))) for s in shots], 1).astype(np.float32)  # (C,S,H,W,3)
    gap = np.abs(per_cam[:, None] - per_cam[None]).mean(axis=(2, 3, 4, 5))
    off = gap[~np.eye(n, dtype=bool)]
    assert off.min() > 8.0, gap.round(1)  # mean absolute difference in 0..255 units


def test_contact_sheet(tiny: Path, tmp_path: Path) -> None:
    out = contact_sheet(tiny, tmp_path / "sheet.png", n_ids=3)
    with Image.open(out) as im:
        n_cams = json.loads((tiny / "synthetic.json").read_text())["config"]["num_cameras"]
        assert im.size[0] > n_cams * 128 and im.size[1] > 6 * 256  # 3 ids + CamStyle + distractors + junk rows
