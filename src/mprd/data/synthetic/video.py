"""The video preset: tracklets in the MARS layout (Zheng et al., ECCV 2016), drawn with the image generator's
identities, cameras and renderer.

    bbox_train/<pid>/<pid>C<cam>T<tracklet>F<frame>.jpg     e.g. bbox_train/0003/0003C2T0001F001.jpg
    bbox_test/<pid>/...                                     junk: 00-1/00-1C…, distractors: 0000/0000C…
    info/train_name.txt, info/test_name.txt                 one frame name a line, tracklet after tracklet
    info/tracks_train_info.mat, info/tracks_test_info.mat   track_train_info / track_test_info: N x 4 int32
                                                            [start, end, pid, camid], 1-based, inclusive
    info/query_IDX.mat                                      query_IDX: 1 x Q int32, 1-based rows of test tracks

Integers, because the public MARS loaders slice the name list with the matrix entries and index the test
tracks with query_IDX directly (a double would fail there).

A tracklet is one walk of one identity through one camera: consecutive frames whose walking phase advances,
whose detector box drifts slightly, and which an occluder may cut for a few frames. An identity's pass through a
camera may be split into several tracklets (as MARS's tracker fragments them), each its own walk.
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from mprd.data.synthetic.appearance import sample_identity
from mprd.data.synthetic.config import (
    _K_IDENTITY,
    _K_SPLIT,
    _K_VFRAME,
    _K_VLAYOUT,
    _K_VQUERY,
    _K_VSTRAY,
    _K_VTRACK,
    _SCENE_W,
    DISTRACTOR,
    JUNK,
    LEFT,
    PERSON,
    RIGHT,
    VideoConfig,
    _rng,
)
from mprd.data.synthetic.plan import Plan, Shot, _cameras_of
from mprd.data.synthetic.scenes import Camera, sample_cameras

VIDEO_DIRS = ("bbox_train", "bbox_test", "info")
MARS_NAME_RE = r"^(\d{4}|00-1)C(\d)T(\d{4})F(\d{3})\.jpg$"  # pid (or 00-1), camera, tracklet, frame


@dataclass(frozen=True)
class Tracklet:
    """One tracklet: its label pid (0 distractor, -1 junk), 0-based camera, tracklet number and frames."""

    pid: int
    cam: int
    number: int  # the T field: 1.. per (pid, camera)
    shots: tuple[Shot, ...]


@dataclass
class VideoPlan(Plan):
    """The video dataset before rendering: tracklets per split and the query rows of the test tracks."""

    tracks: dict[str, list[Tracklet]] = field(default_factory=dict)
    query_rows: list[int] = field(default_factory=list)  # 0-based rows of tracks["bbox_test"]

    def counts(self) -> dict[str, int]:
        train, test = self.tracks["bbox_train"], self.tracks["bbox_test"]
        q = set(self.query_rows)
        return {
            "train_ids": len(self.train_pids), "test_ids": len(self.test_pids),
            "train_tracklets": len(train), "train_frames": sum(len(t.shots) for t in train),
            "test_tracklets": len(test), "test_frames": sum(len(t.shots) for t in test),
            "query_tracklets": len(q),
            "gallery_tracklets": len(test) - len(q),
            "distractor_tracklets": sum(t.pid == 0 for t in test),
            "junk_tracklets": sum(t.pid == -1 for t in test),
        }


def mars_name(pid: int, cam: int, number: int, frame: int) -> str:
    """MARS frame name `<pid:04d>C<cam>T<tracklet:04d>F<frame:03d>.jpg` (camera 0-based in, 1-based out;
    junk pid -1 is written '00-1')."""
    head = "00-1" if pid == -1 else f"{pid:04d}"
    return f"{head}C{cam + 1}T{number:04d}F{frame:03d}.jpg"


def _length(cfg: VideoConfig, rng: np.random.Generator) -> int:
    """Frames in a tracklet: min + geometric extra with the configured mean, capped at max."""
    extra = max(0.0, cfg.tracklet_len_mean - cfg.tracklet_len_min)
    n = cfg.tracklet_len_min + (int(rng.geometric(1.0 / (extra + 1.0))) - 1 if extra > 0 else 0)
    return min(cfg.tracklet_len_max, n)


def _walk(cfg: VideoConfig, cam: Camera, rt: np.random.Generator, n: int, view: int) -> tuple[np.ndarray, np.ndarray]:
    """Person x (scene pixels) and walking phase of `n` consecutive frames: one stride per gait cycle."""
    dphase = 2 * math.pi / rt.uniform(*cfg.gait_frames)
    side = view in (LEFT, RIGHT)
    speed = rt.uniform(11, 16) if side else rt.uniform(0.5, 3.0)  # canvas px per frame: across vs along the view
    direction = -1.0 if view == LEFT else 1.0 if view == RIGHT else float(rt.choice([-1, 1]))
    span = direction * (n - 1) * speed
    x0 = float(np.clip(rt.uniform(250, _SCENE_W - 250), 250 - min(0.0, span), _SCENE_W - 250 - max(0.0, span)))
    k = np.arange(n)
    x = x0 + direction * speed * k + np.cumsum(rt.normal(0, 0.8, n))  # small sway
    phase = (rt.uniform(0, 2 * math.pi) + dphase * k) % (2 * math.pi)
    return x, phase


def _occlusion(cam: Camera, rt: np.random.Generator, n: int) -> tuple[int, int]:
    """[start, end) of the frames an occluder cuts (empty for most tracklets): a run of 2..n/2 frames."""
    if n < 4 or rt.random() >= cam.occlusion_prob:
        return 0, 0
    m = int(rt.integers(2, n // 2 + 1))
    s = int(rt.integers(0, n - m + 1))
    return s, s + m


def tracklet_shots(cfg: VideoConfig, cam: Camera, key: tuple[int, ...], n: int, kind: int = PERSON,
                   pid: int = 0) -> list[Shot]:
    """`n` consecutive frames of one walk through `cam`; `key` names the tracklet's random streams."""
    rt = _rng(cfg.seed, _K_VTRACK, *key)
    view = int(rt.choice(4, p=cam.views))
    x, phase = _walk(cfg, cam, rt, n, view)
    scale0 = cam.box_scale * math.exp(rt.normal(0, cfg.box_scale_jitter))
    dx0, dy0 = cam.box_dx + rt.normal(0, cfg.box_jitter), cam.box_dy + rt.normal(0, cfg.box_jitter / 2)
    if kind == JUNK:  # a badly aligned box of a real id, as in the image generator's junk
        dx0, dy0, scale0 = _junk_box(rt, dx0, dy0, scale0)
    drift = np.cumsum(rt.normal(0, 1, (n, 3)), axis=0) * cfg.box_drift  # the detector box wanders slowly
    roll = rt.normal(0, cfg.rotation_deg) + np.cumsum(rt.normal(0, 0.3, n))
    o0, o1 = _occlusion(cam, rt, n) if kind != DISTRACTOR else (0, 0)
    frame_rng = _rng(cfg.seed, _K_VFRAME, *key)
    jit = frame_rng.normal(0, 1, (n, 3)) * cfg.box_drift / 2  # and jitters a little from frame to frame
    shots = []
    for k in range(n):
        shots.append(Shot(
            relpath="", kind=kind, pid=pid, cam=cam.index, style=cam.index, view=view, phase=float(phase[k]),
            x=float(x[k]), box_dx=float(dx0 + drift[k, 0] + jit[k, 0]),
            box_dy=float(dy0 + 0.5 * (drift[k, 1] + jit[k, 1])),
            box_scale=float(scale0 * math.exp(drift[k, 2] + jit[k, 2])), angle=float(roll[k]),
            track_key=(_K_VTRACK, *key), frame_key=(_K_VFRAME, *key, k), video=True,
            scene_dx=float(x[0] - x[k]), occluded=o0 <= k < o1, occluder_dx=float(x[min(o0, n - 1)] - x[k]),
        ))
    return shots


def _junk_box(rt: np.random.Generator, dx: float, dy: float, scale: float) -> tuple[float, float, float]:
    """Misalign a box the way the image generator's junk does (shifted, zoomed in or out)."""
    mode = int(rt.integers(4))
    if mode == 0:
        return float(rt.choice([-1, 1]) * rt.uniform(0.32, 0.55)), dy, scale
    if mode == 1:
        return dx, float(rt.choice([-1, 1]) * rt.uniform(0.22, 0.4)), scale
    if mode == 2:
        return dx, float(rt.uniform(-0.35, 0.35)), float(rt.uniform(0.45, 0.62))
    return dx, dy, float(rt.uniform(1.45, 1.75))


def _identity_tracklets(cfg: VideoConfig, cams: list[Camera], pid: int) -> dict[int, list[list[Shot]]]:
    """An identity's tracklets by camera: 2..6 cameras, 1 + geometric extra tracklets in each."""
    rng = _rng(cfg.seed, _K_VLAYOUT, pid)
    out = {}
    for c in _cameras_of(cfg, cams, rng):
        extra = int(rng.geometric(1.0 / (cfg.extra_tracklets_mean + 1.0))) - 1 if cfg.extra_tracklets_mean > 0 else 0
        out[c] = [tracklet_shots(cfg, cams[c], (pid, c, t), _length(cfg, rng), PERSON, pid) for t in range(1 + extra)]
    return out


def _query_cameras(cfg: VideoConfig, pid: int, cams: list[int]) -> list[int]:
    """Cameras that give one query tracklet of a test id: each with `query_camera_prob`, at least one, and never
    all (a query-free camera keeps the id's tracklets in the gallery, so every query has a cross-camera match)."""
    r = _rng(cfg.seed, _K_VQUERY, pid)
    chosen = [c for c in cams if r.random() < cfg.query_camera_prob]
    if not chosen:
        chosen = [cams[int(r.integers(len(cams)))]]
    if len(chosen) == len(cams):
        chosen.pop(int(r.integers(len(chosen))))
    return chosen


def _strays(cfg: VideoConfig, cams: list[Camera], test_tracks: dict[int, dict[int, list]], kind: int,
            count: int) -> list[tuple[int, int, list[Shot]]]:
    """Distractor tracklets (pid 0: background, partial bodies, crowds) or junk ones (pid -1: misaligned boxes of
    test ids in a camera they pass); (label pid, camera, shots)."""
    traffic = np.array([c.traffic for c in cams])
    test_pids = sorted(test_tracks)
    out = []
    for i in range(count):
        r = _rng(cfg.seed, _K_VSTRAY, kind, i)
        n = _length(cfg, r)
        if kind == JUNK:
            pid = test_pids[int(r.integers(len(test_pids)))]
            c = int(r.choice(sorted(test_tracks[pid])))
            out.append((-1, c, tracklet_shots(cfg, cams[c], (-2 - kind, i), n, JUNK, pid)))
        else:
            c = int(r.choice(len(cams), p=traffic / traffic.sum()))
            out.append((0, c, tracklet_shots(cfg, cams[c], (-2 - kind, i), n, DISTRACTOR, 0)))
    return out


def _number(folder: str, items: list[tuple[int, int, list[Shot], bool]]) -> list[Tracklet]:
    """Name every frame (T = 1.. per (pid, camera), F = 1.. per tracklet) and sort the tracklets by name, which
    groups the name list tracklet after tracklet (junk '00-1' first, then '0000', then the ids)."""
    seen: dict[tuple[int, int], int] = {}
    out = []
    for pid, cam, shots, _ in items:
        t = seen[(pid, cam)] = seen.get((pid, cam), 0) + 1
        head = "00-1" if pid == -1 else f"{pid:04d}"
        named = tuple(dataclasses.replace(s, relpath=f"{folder}/{head}/{mars_name(pid, cam, t, k + 1)}")
                      for k, s in enumerate(shots))
        out.append(Tracklet(pid, cam, t, named))
    return out


def build_video_plan(cfg: VideoConfig) -> VideoPlan:
    """Identities, cameras, every tracklet of both splits and the query rows (cheap; rendering is separate)."""
    cams = sample_cameras(cfg)
    n_ids = cfg.num_train_ids + cfg.num_test_ids
    perm = _rng(cfg.seed, _K_SPLIT).permutation(np.arange(1, n_ids + 1))
    train_pids, test_pids = sorted(perm[: cfg.num_train_ids].tolist()), sorted(perm[cfg.num_train_ids :].tolist())
    ids = {p: sample_identity(_rng(cfg.seed, _K_IDENTITY, p), cfg) for p in range(1, n_ids + 1)}
    plan = VideoPlan(cfg, ids, cams, train_pids, test_pids)
    train = [(p, c, s, False) for p in train_pids for c, ts in _identity_tracklets(cfg, cams, p).items() for s in ts]
    test_tracks = {p: _identity_tracklets(cfg, cams, p) for p in test_pids}
    test = []
    for p, by_cam in test_tracks.items():
        query_cams = set(_query_cameras(cfg, p, sorted(by_cam)))
        for c, ts in by_cam.items():
            q = int(_rng(cfg.seed, _K_VQUERY, p, c).integers(len(ts))) if c in query_cams else -1
            test += [(p, c, s, t == q) for t, s in enumerate(ts)]
    n_dis = int(round(cfg.distractors_per_test_id * cfg.num_test_ids))
    n_junk = int(round(cfg.junk_per_test_id * cfg.num_test_ids))
    test += [(p, c, s, False) for p, c, s in _strays(cfg, cams, test_tracks, DISTRACTOR, n_dis)]
    test += [(p, c, s, False) for p, c, s in _strays(cfg, cams, test_tracks, JUNK, n_junk)]
    train_tracks, test_named = _number("bbox_train", train), _number("bbox_test", test)
    order = sorted(range(len(test_named)), key=lambda i: test_named[i].shots[0].relpath)
    plan.tracks = {"bbox_train": sorted(train_tracks, key=lambda t: t.shots[0].relpath),
                   "bbox_test": [test_named[i] for i in order]}
    plan.query_rows = [row for row, i in enumerate(order) if test[i][3]]
    plan.splits = {k: [s for t in v for s in t.shots] for k, v in plan.tracks.items()}
    return plan


def video_units(plan: VideoPlan) -> list[tuple[Shot, list[tuple[int, str]]]]:
    """(shot, [(style camera, relative path)]) render units, one per frame."""
    return [(s, [(s.style, s.relpath)]) for k in ("bbox_train", "bbox_test") for s in plan.splits[k]]


def make_video_dirs(plan: VideoPlan, out_dir: Path) -> None:
    """The split folders and one folder per pid label."""
    (out_dir / "info").mkdir(parents=True, exist_ok=True)
    for s in plan.splits["bbox_train"] + plan.splits["bbox_test"]:
        (out_dir / s.relpath).parent.mkdir(parents=True, exist_ok=True)


def _track_matrix(tracks: list[Tracklet]) -> np.ndarray:
    """N x 4 int32 [start, end, pid, camid]: 1-based inclusive rows of the name list, camera 1-based."""
    rows, start = [], 1
    for t in tracks:
        rows.append((start, start + len(t.shots) - 1, t.pid, t.cam + 1))
        start += len(t.shots)
    return np.array(rows, np.int32).reshape(-1, 4)


def write_video_info(plan: VideoPlan, out_dir: Path) -> None:
    """info/: the name lists, the track matrices and the query rows, with MARS's file and variable names."""
    info = out_dir / "info"
    for split, name in (("bbox_train", "train"), ("bbox_test", "test")):
        lines = [Path(s.relpath).name for t in plan.tracks[split] for s in t.shots]
        (info / f"{name}_name.txt").write_text("\n".join(lines) + "\n")
        _savemat(info / f"tracks_{name}_info.mat", f"track_{name}_info", _track_matrix(plan.tracks[split]))
    _savemat(info / "query_IDX.mat", "query_IDX", np.array([r + 1 for r in plan.query_rows], np.int32)[None, :])


def _savemat(path: Path, name: str, value: np.ndarray) -> None:
    """A MATLAB 5 file holding one variable, with a fixed header text (scipy's holds the time: not reproducible)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {name: value})
    data = bytearray(buf.getvalue())
    data[:116] = b"MATLAB 5.0 MAT-file, written by mprd.data.synthetic (MARS layout)".ljust(116)
    path.write_bytes(bytes(data))
