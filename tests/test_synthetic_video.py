"""The synthetic video preset: MARS layout and names, info/ matrices, query rows, walking frames, determinism.

The MARS parser is tested against this layout after the merge; here a small reader (loadmat + name lists, as
the public MARS loaders do) checks that the files say what the frames are.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from mprd.data.synthetic import VIDEO_PRESETS, build_video_plan, ensure_synthetic, make_config, read_info

NAME_RE = re.compile(r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3})\.jpg$")  # <pid>C<cam>T<tracklet>F<frame>.jpg


@pytest.fixture(scope="module")
def vtiny(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("vsyn"), "video-tiny", 0, workers=1)


def _pid(head: str) -> int:
    return -1 if head == "00-1" else int(head)


def _read(root: Path) -> dict:
    """What a MARS loader reads: name lists, track matrices (rows [start, end, pid, camid], 1-based) and
    query rows (0-based after the usual `- 1`)."""
    info = root / "info"
    out = {}
    for split in ("train", "test"):
        out[f"{split}_names"] = (info / f"{split}_name.txt").read_text().splitlines()
        mat = scipy.io.loadmat(info / f"tracks_{split}_info.mat")[f"track_{split}_info"]
        out[f"{split}_tracks"] = mat
    out["query"] = scipy.io.loadmat(info / "query_IDX.mat")["query_IDX"].squeeze() - 1
    return out


def _tracklets(names: list[str], mat: np.ndarray) -> list[tuple[int, int, list[str]]]:
    return [(int(p), int(c), names[int(s) - 1 : int(e)]) for s, e, p, c in mat]


def _frames(root: Path, split: str, names: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / f"bbox_{split}" / n[:4] / n), np.float32) for n in names])


# ---------------------------------------------------------------------------------------------------- layout
def test_layout_and_names(vtiny: Path) -> None:
    """bbox_train/<pid>/<name>, bbox_test/<pid>/<name>; every file name parses, sits in its pid folder, is a
    64x128 RGB JPEG and is listed exactly once in its split's name list."""
    data = _read(vtiny)
    assert sorted(p.name for p in vtiny.iterdir()) == ["bbox_test", "bbox_train", "info", "synthetic.json"]
    for split in ("train", "test"):
        files = sorted(p.relative_to(vtiny / f"bbox_{split}") for p in (vtiny / f"bbox_{split}").rglob("*.jpg"))
        for rel in files:
            m = NAME_RE.match(rel.name)
            assert m is not None and str(rel.parent) == m.group(1) == rel.name[:4], rel
            assert 1 <= int(m.group(2)) <= 6 and int(m.group(4)) >= 1
        assert sorted(data[f"{split}_names"]) == sorted(r.name for r in files)
        assert len(set(data[f"{split}_names"])) == len(files)
    img = Image.open(next((vtiny / "bbox_train").rglob("*.jpg")))
    assert img.size == (64, 128) and img.mode == "RGB" and img.format == "JPEG"
    train_heads = {p.name for p in (vtiny / "bbox_train").iterdir()}
    assert "0000" not in train_heads and "00-1" not in train_heads  # strays are gallery-only, as in MARS
    assert {"0000", "00-1"} <= {p.name for p in (vtiny / "bbox_test").iterdir()}


def test_info_matrices_match_the_name_lists(vtiny: Path) -> None:
    """Each row [start, end, pid, camid] covers the frames F001..Fn of one tracklet of that pid and camera, in
    order; rows are consecutive and cover every name once (no overlaps, no gaps)."""
    data = _read(vtiny)
    for split in ("train", "test"):
        names, mat = data[f"{split}_names"], data[f"{split}_tracks"]
        assert mat.ndim == 2 and mat.shape[1] == 4 and mat.dtype == np.int32  # loaders slice with it
        assert mat[0, 0] == 1 and mat[-1, 1] == len(names)
        assert names[mat[0, 0] - 1 : mat[0, 1]] and mat[[0], :].shape == (1, 4)  # usable as loaders use it
        assert np.all(mat[1:, 0] == mat[:-1, 1] + 1) and np.all(mat[:, 1] >= mat[:, 0])
        seen = set()
        for pid, cam, frames in _tracklets(names, mat):
            assert 1 <= cam <= 6
            parsed = [NAME_RE.match(n).groups() for n in frames]
            assert {(_pid(h), int(c), t) for h, c, t, _ in parsed} == {(pid, cam, parsed[0][2])}
            assert [int(f) for *_, f in parsed] == list(range(1, len(frames) + 1))
            assert (pid, cam, parsed[0][2]) not in seen
            seen.add((pid, cam, parsed[0][2]))
    assert data["train_tracks"][:, 2].min() >= 1


def test_query_rows_and_splits(vtiny: Path) -> None:
    """query_IDX holds 1-based rows of the test tracks: one tracklet per (test id, camera) for a subset of the
    id's cameras (never all of them), each with a same-id gallery tracklet in another camera; no strays."""
    data = _read(vtiny)
    mat, q = data["test_tracks"], data["query"]
    raw = scipy.io.loadmat(vtiny / "info" / "query_IDX.mat")["query_IDX"]
    assert raw.shape == (1, len(q)) and raw.dtype == np.int32 and len(set(q.tolist())) == len(q)
    assert q.min() >= 0 and q.max() < len(mat)
    query = mat[q]
    assert np.all(query[:, 2] > 0)
    assert len({(int(p), int(c)) for _, _, p, c in query}) == len(query)  # one per (id, camera)
    gallery = np.delete(mat, q, axis=0)
    cams_of = defaultdict(set)
    for _, _, p, c in mat:
        cams_of[int(p)].add(int(c))
    for _, _, p, c in query:
        assert any(g[2] == p and g[3] != c for g in gallery)
        assert len({int(x) for x in query[query[:, 2] == p, 3]}) < len(cams_of[int(p)])
    train_ids = set(data["train_tracks"][:, 2].astype(int))
    test_ids = set(mat[:, 2].astype(int)) - {0, -1}
    assert not train_ids & test_ids
    counts = read_info(vtiny)["counts"]
    assert counts["train_tracklets"] == len(data["train_tracks"]) and counts["test_tracklets"] == len(mat)
    assert counts["query_tracklets"] == len(q) and counts["train_frames"] == len(data["train_names"])
    assert counts["train_ids"] == len(train_ids) == 8 and counts["test_ids"] == len(test_ids) == 8


def test_multi_tracklet_identities_distractors_and_junk(vtiny: Path) -> None:
    """Like MARS: some (id, camera) pairs have several tracklets, and the gallery holds distractor (0) and junk
    (-1) tracklets; every id appears in at least two cameras."""
    data = _read(vtiny)
    per_cam = Counter((int(p), int(c)) for _, _, p, c in data["train_tracks"])
    assert max(per_cam.values()) >= 2
    assert any(v >= 2 for k, v in Counter((int(p), int(c)) for _, _, p, c in data["test_tracks"]).items() if k[0] > 0)
    pids = Counter(int(p) for p in data["test_tracks"][:, 2])
    assert pids[0] >= 2 and pids[-1] >= 1
    for split in ("train", "test"):
        cams = defaultdict(set)
        for _, _, p, c in data[f"{split}_tracks"]:
            cams[int(p)].add(int(c))
        assert all(len(v) >= 2 for p, v in cams.items() if p > 0)


# ---------------------------------------------------------------------------------------------------- frames
def test_consecutive_frames_differ_but_are_similar(vtiny: Path) -> None:
    """Frames of a tracklet move (walking phase, box drift): consecutive frames are never identical, yet much
    closer than frames of other identities in the same camera."""
    data = _read(vtiny)
    names, tracks = data["train_names"], _tracklets(data["train_names"], data["train_tracks"])
    consec, other = [], []
    by_cam = defaultdict(list)
    for pid, cam, frames in tracks:
        by_cam[cam].append((pid, frames[0]))
        imgs = _frames(vtiny, "train", frames)
        diffs = np.abs(imgs[1:] - imgs[:-1]).mean(axis=(1, 2, 3))
        assert np.all(diffs > 1.0), frames
        consec += diffs.tolist()
    for items in by_cam.values():
        for i, (p, a) in enumerate(items):
            for q, b in items[i + 1 :]:
                if p != q:
                    other.append(float(np.abs(_frames(vtiny, "train", [a]) - _frames(vtiny, "train", [b])).mean()))
    assert len(names) > 0 and len(other) > 10
    assert np.median(consec) < 0.6 * np.median(other), (np.median(consec), np.median(other))


def test_walk_phase_advances_and_box_drifts() -> None:
    """In the plan: the phase advances by 2*pi / (9..15 frames) per frame, the box offset moves by small steps,
    and a few frames of some tracklets are occluded."""
    plan = build_video_plan(make_config("video-tiny", 0))
    steps, drifts, occluded = [], [], []
    for t in plan.tracks["bbox_train"]:
        ph = np.unwrap([s.phase for s in t.shots])
        steps += np.diff(ph).tolist()
        drifts += np.abs(np.diff([s.box_dx for s in t.shots])).tolist()
        occluded.append(sum(s.occluded for s in t.shots))
    steps = np.array(steps)
    assert np.all(steps > 2 * np.pi / 15 - 1e-9) and np.all(steps < 2 * np.pi / 9 + 1e-9)
    assert 0 < np.median(drifts) < 0.05
    assert any(0 < k < len(t.shots) for k, t in zip(occluded, plan.tracks["bbox_train"], strict=True))


# ----------------------------------------------------------------------------------------------- determinism
def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(vtiny: Path, tmp_path: Path) -> None:
    """Same seed => identical info files and frames (1 or 2 workers); another seed => other tracks."""
    again = ensure_synthetic(tmp_path, "video-tiny", 0, workers=2)
    for f in sorted((vtiny / "info").iterdir()):
        assert _digest(f) == _digest(again / "info" / f.name), f.name
    frames = sorted(p.relative_to(vtiny) for p in vtiny.rglob("*.jpg"))
    assert frames == sorted(p.relative_to(again) for p in again.rglob("*.jpg"))
    for rel in frames[:: max(1, len(frames) // 25)]:
        assert _digest(vtiny / rel) == _digest(again / rel), rel
    other = build_video_plan(make_config("video-tiny", 1))
    first = build_video_plan(make_config("video-tiny", 0))
    assert [s.relpath for s in other.splits["bbox_test"]] != [s.relpath for s in first.splits["bbox_test"]]


def test_presets_and_config() -> None:
    """The video presets are listed, overrides of video fields work, and bad tracklet lengths are refused."""
    assert set(VIDEO_PRESETS) == {"video-tiny", "video-small"}
    cfg = make_config("video-tiny", 3, {"tracklet_len_max": 6.0})
    assert cfg.tracklet_len_max == 6 and cfg.seed == 3
    with pytest.raises(ValueError, match="tracklet_len"):
        make_config("video-tiny", 0, {"tracklet_len_min": 9, "tracklet_len_max": 5})
    with pytest.raises(ValueError, match="not VideoConfig fields"):
        make_config("video-tiny", 0, {"frames": 3})
    small = build_video_plan(make_config("video-small", 0)).counts()
    assert small["train_ids"] == small["test_ids"] == 125
    assert 10_000 < small["train_frames"] + small["test_frames"] < 40_000


# ------------------------------------------------------------------------------- parser + evaluation, together
def test_the_mars_parser_reads_the_video_preset_and_an_oracle_scores_100(vtiny: Path) -> None:
    """The MARS parser reads the generated tree unchanged (same tracklets as the info files say, junk dropped,
    0-based cameras), and features that encode the identity score Rank-1 = mAP = 100 under the MARS protocol:
    every query keeps a cross-camera match after the same-identity-same-camera rule."""
    from mprd.core.video_evaluation import evaluate_video, tracklet_features
    from mprd.data.video_datasets import load_mars_layout

    data, raw = load_mars_layout(vtiny, "synthetic-video", num_cameras=None), _read(vtiny)
    train = [t for t in _tracklets(raw["train_names"], raw["train_tracks"]) if t[0] != -1]
    test = _tracklets(raw["test_names"], raw["test_tracks"])
    query_rows = set(raw["query"].tolist())
    gallery = [t for i, t in enumerate(test) if i not in query_rows and t[0] != -1]
    query = [test[i] for i in raw["query"]]
    for records, expected in ((data.train, train), (data.query, query), (data.gallery, gallery)):
        assert [(r.pid, r.camid + 1, [Path(p).name for p in r.paths]) for r in records] == expected

    def pooled(records) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        pids = np.array([r.pid for r in records])
        frames = torch.nn.functional.one_hot(torch.from_numpy(np.repeat(pids, [len(r.paths) for r in records])),
                                             int(pids.max()) + 1).float()
        offsets = np.concatenate([[0], np.cumsum([len(r.paths) for r in records])])
        return tracklet_features(frames, offsets), pids, np.array([r.camid for r in records])

    qf, qp, qc = pooled(data.query)
    gf, gp, gc = pooled(data.gallery)
    width = max(qf.shape[1], gf.shape[1])
    qf, gf = (torch.nn.functional.pad(f, (0, width - f.shape[1])) for f in (qf, gf))
    metrics = evaluate_video(qf, gf, qp, qc, gp, gc)
    assert metrics.num_valid == len(data.query) and metrics.rank1 == 1.0 and metrics.mAP == pytest.approx(1.0)
