"""The file plan: which identity is shot by which camera, when, under which Market-1501 file name."""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mprd.data.records import DatasetError
from mprd.data.synthetic.appearance import Identity, sample_identity
from mprd.data.synthetic.config import (
    _K_DISTRACTOR,
    _K_FRAME,
    _K_IDENTITY,
    _K_JUNK,
    _K_LAYOUT,
    _K_NOISE,
    _K_SPLIT,
    _K_TRACK,
    _SCENE_W,
    _SS,
    DISTRACTOR,
    IMAGE_H,
    IMAGE_W,
    JUNK,
    LEFT,
    PERSON,
    RIGHT,
    SyntheticConfig,
    _rng,
)
from mprd.data.synthetic.scenes import Camera, _render_scene, sample_cameras


@dataclass(frozen=True)
class Shot:
    """Everything that fixes one image: who, which camera's geometry, which camera's style, pose, box.

    A CamStyle copy is the same Shot with another `style` camera (same person, pose, frame and layout).
    """

    relpath: str
    kind: int  # PERSON, DISTRACTOR or JUNK
    pid: int  # dataset identity (1..); 0 for a distractor
    cam: int  # capture camera, 0-based: viewpoint, box habits, crowd and occluders
    style: int  # camera whose scene / colour / optics are rendered
    view: int
    phase: float
    x: float  # person centre in scene coordinates
    box_dx: float  # box offset, fraction of the box width
    box_dy: float  # box offset, fraction of the box height
    box_scale: float
    angle: float  # degrees
    track_key: tuple[int, ...]  # crowd / occluder layout shared by the frames of one track
    frame_key: tuple[int, ...]
    # Video frames (the MARS-layout preset): per-frame randomness is damped, background people stand at
    # shot.x + scene_dx (fixed in the scene while the person walks), the occluder is set per frame by the plan.
    video: bool = False
    scene_dx: float = 0.0
    occluded: bool = False
    occluder_dx: float = 0.0  # occluder offset added to the person's x: keeps it in place during its run


@dataclass
class Plan:
    """The whole dataset before rendering: identities, cameras and the shots of every split folder."""

    config: SyntheticConfig
    identities: dict[int, Identity]
    cameras: list[Camera]
    train_pids: list[int]
    test_pids: list[int]
    splits: dict[str, list[Shot]] = field(default_factory=dict)
    _scenes: dict[int, Image.Image] = field(default_factory=dict, repr=False)
    _noise: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def scene(self, cam: int) -> Image.Image:
        """The camera's backdrop at the stored resolution (drawn at twice that and averaged down)."""
        if cam not in self._scenes:
            self._scenes[cam] = _render_scene(self.cameras[cam], self.config.seed).reduce(_SS)
        return self._scenes[cam]

    def noise(self, key: tuple[int, ...]) -> np.ndarray:
        """Standard normal noise of one image: a slice of a per-seed bank at an offset hashed from `key`."""
        if "bank" not in self._noise:
            self._noise["bank"] = _rng(self.config.seed, _K_NOISE).standard_normal(1 << 20, dtype=np.float32)
        bank, n = self._noise["bank"], IMAGE_W * IMAGE_H * 3
        off = zlib.crc32(np.array(key, np.int64).tobytes()) % (bank.size - n)
        return bank[off : off + n].reshape(IMAGE_H, IMAGE_W, 3)

    def counts(self) -> dict[str, int]:
        out = {k: len(v) for k, v in self.splits.items()}
        gal = self.splits.get("bounding_box_test", [])
        out["distractors"] = sum(s.kind == DISTRACTOR for s in gal)
        out["junk"] = sum(s.kind == JUNK for s in gal)
        out["train_ids"], out["test_ids"] = len(self.train_pids), len(self.test_pids)
        return out


def _market_name(pid: int, cam: int, seq: int, frame: int, bb: int) -> str:
    """Market-1501 file name: pid -1 is written '-1', every other pid with 4 digits."""
    head = "-1" if pid == -1 else f"{pid:04d}"
    return f"{head}_c{cam + 1}s{seq}_{frame:06d}_{bb:02d}"


class _Names:
    """Unique Market names within one folder (bumps the detection index on a clash)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, pid: int, cam: int, seq: int, frame: int, bb: int) -> str:
        while (name := _market_name(pid, cam, seq, frame, bb % 100)) in self.used:
            bb += 1
        self.used.add(name)
        return name


def _cameras_of(cfg: SyntheticConfig, cams: list[Camera], rng: np.random.Generator) -> list[int]:
    """2..num_cameras distinct cameras, busier cameras more likely (Market: every id in 2-6 cameras)."""
    w = np.array(cfg.cameras_per_id_weights[: cfg.num_cameras - 1], float)
    n = 2 + int(rng.choice(len(w), p=w / w.sum()))
    traffic = np.array([c.traffic for c in cams])
    return sorted(int(c) for c in rng.choice(len(cams), size=n, replace=False, p=traffic / traffic.sum()))


def _track_shots(cfg: SyntheticConfig, cam: Camera, pid: int, t: int, n: int, names: _Names) -> list[Shot]:
    """`n` near-consecutive frames of one pass of `pid` through `cam` (within-camera redundancy)."""
    c = cam.index
    rt = _rng(cfg.seed, _K_TRACK, pid, c, t)
    view = int(rt.choice(4, p=cam.views))
    step = rt.uniform(20, 45) if view in (LEFT, RIGHT) else rt.uniform(10, 25)
    direction = -1.0 if view == LEFT else 1.0 if view == RIGHT else float(rt.choice([-1, 1]))
    x0 = rt.uniform(250, _SCENE_W - 250)
    span = direction * (n - 1) * step  # keep the whole pass inside the scene
    x0 = float(np.clip(x0, 250 - min(0.0, span), _SCENE_W - 250 - max(0.0, span)))
    phase0, dphase = rt.uniform(0, 2 * math.pi), rt.uniform(1.0, 2.4)
    scale = cam.box_scale * math.exp(rt.normal(0, cfg.box_scale_jitter))
    dx, dy = cam.box_dx + rt.normal(0, cfg.box_jitter), cam.box_dy + rt.normal(0, cfg.box_jitter / 2)
    seq, frame0, dframe = int(rt.integers(1, 7)), int(rt.integers(1, 150000)), int(rt.integers(4, 30))
    bb = int(rt.integers(0, 9))
    shots = []
    jit = rt.standard_normal((n, 5))  # per-frame position, box offsets, scale and roll
    for k in range(n):
        shots.append(
            Shot(
                relpath=names.take(pid, c, seq, frame0 + k * dframe, bb) + ".jpg",
                kind=PERSON, pid=pid, cam=c, style=c, view=view,
                phase=float((phase0 + k * dphase) % (2 * math.pi)),
                x=float(x0 + direction * k * step + 3 * jit[k, 0]),
                box_dx=float(dx + 0.8 * cfg.box_jitter * jit[k, 1]),
                box_dy=float(dy + 0.5 * cfg.box_jitter * jit[k, 2]),
                box_scale=float(scale * math.exp(cfg.box_scale_jitter / 3 * jit[k, 3])),
                angle=float(cfg.rotation_deg * jit[k, 4]),
                track_key=(_K_TRACK, pid, c, t),
                frame_key=(_K_FRAME, pid, c, t, k),
            )
        )
    return shots


def _identity_shots(cfg: SyntheticConfig, cams: list[Camera], pid: int, test: bool,
                    names: _Names) -> dict[int, list[Shot]]:
    """All shots of one identity, by camera: train ids 1 + extra frames per camera, test ids 2 + extra."""
    rng = _rng(cfg.seed, _K_LAYOUT, pid)
    mean, base = (cfg.test_extra_frames_mean, 2) if test else (cfg.train_extra_frames_mean, 1)
    out = {}
    for c in _cameras_of(cfg, cams, rng):
        n = min(cfg.max_frames_per_camera, base + int(rng.geometric(1.0 / (mean + 1.0))) - 1)
        split = n >= 4 and rng.random() < cfg.second_track_prob
        sizes = [n // 2, n - n // 2] if split else [n]
        out[c] = [s for t, m in enumerate(sizes) for s in _track_shots(cfg, cams[c], pid, t, m, names)]
    return out


def _stray_shot(cfg: SyntheticConfig, cams: list[Camera], i: int, kind: int, plan_pids: list[int], names: _Names,
                pid_cams: dict[int, list[int]]) -> Shot:
    """A distractor (pid 0: background or partial bodies) or a junk box (pid -1: a badly aligned real id)."""
    key = _K_DISTRACTOR if kind == DISTRACTOR else _K_JUNK
    r = _rng(cfg.seed, key, i)
    traffic = np.array([c.traffic for c in cams])
    pid = 0
    if kind == JUNK:
        pid = int(plan_pids[int(r.integers(len(plan_pids)))])
        c = int(r.choice(pid_cams[pid]))
    else:
        c = int(r.choice(len(cams), p=traffic / traffic.sum()))
    cam = cams[c]
    dx, dy, scale = cam.box_dx + r.normal(0, 0.1), cam.box_dy + r.normal(0, 0.05), cam.box_scale * r.uniform(0.8, 1.3)
    if kind == JUNK:  # misaligned by a lot: Market's junk boxes overlap the person by less than half
        mode = int(r.integers(4))
        if mode == 0:
            dx = float(r.choice([-1, 1]) * r.uniform(0.32, 0.55))
        elif mode == 1:
            dy = float(r.choice([-1, 1]) * r.uniform(0.22, 0.4))
        elif mode == 2:
            scale, dy = float(r.uniform(0.45, 0.62)), float(r.uniform(-0.35, 0.35))
        else:
            scale = float(r.uniform(1.45, 1.75))
    seq, frame, bb = int(r.integers(1, 7)), int(r.integers(1, 150000)), int(r.integers(0, 9))
    name = names.take(-1 if kind == JUNK else 0, c, seq, frame, bb)
    return Shot(
        relpath=name + ".jpg", kind=kind, pid=pid, cam=c, style=c, view=int(r.choice(4, p=cam.views)),
        phase=float(r.uniform(0, 2 * math.pi)), x=float(r.uniform(350, _SCENE_W - 350)), box_dx=float(dx),
        box_dy=float(dy), box_scale=float(scale), angle=float(r.normal(0, cfg.rotation_deg)),
        track_key=(key, i), frame_key=(key, i, 1),
    )


def build_plan(cfg: SyntheticConfig) -> Plan:
    """Identities, cameras and every shot of the four folders (cheap; rendering is separate)."""
    cams = sample_cameras(cfg)
    n_ids = cfg.num_train_ids + cfg.num_test_ids
    perm = _rng(cfg.seed, _K_SPLIT).permutation(np.arange(1, n_ids + 1))  # pids interleave, as in Market
    train_pids, test_pids = sorted(perm[: cfg.num_train_ids].tolist()), sorted(perm[cfg.num_train_ids :].tolist())
    ids = {p: sample_identity(_rng(cfg.seed, _K_IDENTITY, p), cfg) for p in range(1, n_ids + 1)}
    plan = Plan(cfg, ids, cams, train_pids, test_pids)
    train_names, query_names, test_names = _Names(), _Names(), _Names()
    train: list[Shot] = []
    for p in train_pids:
        for shots in _identity_shots(cfg, cams, p, False, train_names).values():
            train += shots
    query, gallery, pid_cams = [], [], {}
    for p in test_pids:
        by_cam = _identity_shots(cfg, cams, p, True, test_names)
        pid_cams[p] = sorted(by_cam)
        for c, shots in by_cam.items():
            q = int(_rng(cfg.seed, _K_SPLIT, p, c).integers(len(shots)))  # one query per (test id, camera)
            name = query_names.take(*_parse_stem(shots[q].relpath)) + ".jpg"
            query.append(dataclasses.replace(shots[q], relpath=name))
            gallery += shots[:q] + shots[q + 1 :]
    n_dis = int(round(cfg.distractors_per_test_id * cfg.num_test_ids))
    n_junk = int(round(cfg.junk_per_test_id * cfg.num_test_ids))
    gallery += [_stray_shot(cfg, cams, i, DISTRACTOR, test_pids, test_names, pid_cams) for i in range(n_dis)]
    gallery += [_stray_shot(cfg, cams, i, JUNK, test_pids, test_names, pid_cams) for i in range(n_junk)]
    camstyle = []
    if cfg.camstyle:
        for s in train:
            camstyle += [dataclasses.replace(s, style=c2, relpath=camstyle_name(s.relpath, s.cam, c2))
                         for c2 in range(cfg.num_cameras) if c2 != s.cam]
    plan.splits = {"bounding_box_train": train, "query": query, "bounding_box_test": gallery,
                   "bounding_box_train_camstyle": camstyle}
    return plan


def camstyle_name(relpath: str, cam: int, style: int) -> str:
    """CamStyle copy name: `<original stem>_fake_<c1>to<c2>.jpg` (1-based cameras, as in CamStyle's Market copy)."""
    return f"{Path(relpath).stem}_fake_{cam + 1}to{style + 1}.jpg"


_STEM_RE = re.compile(r"^(-1|\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})")


def _parse_stem(relpath: str) -> tuple[int, int, int, int, int]:
    m = _STEM_RE.match(relpath)
    if m is None:
        raise DatasetError(f"{relpath!r} is not a Market-1501 name PPPP_cCsS_FFFFFF_BB.jpg")
    pid, cam, seq, frame, bb = (int(g) for g in m.groups())
    return pid, cam - 1, seq, frame, bb
