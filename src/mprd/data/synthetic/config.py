"""Configuration: the generator version, the Market-1501 layout constants, `SyntheticConfig` and its presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = "1.0"
IMAGE_W, IMAGE_H = 64, 128  # stored size of every crop (W x H), as Market-1501 is distributed
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test", "bounding_box_train_camstyle")
MARKET_NAME_RE = re.compile(r"([-\d]+)_c(\d)")

# Drawing happens at twice the stored resolution and is averaged down (anti-aliasing for free).
_SS = 2
_BOX_W, _BOX_H = IMAGE_W * _SS, IMAGE_H * _SS  # nominal detector box on the canvas
_SCENE_W, _SCENE_H = 1536, 480  # per-camera backdrop the person walks across
_PERSON_Y = 240.0  # vertical centre of the main person in scene coordinates
_BASE_HEIGHT = 0.92 * _BOX_H  # person height in a nominal box (Market boxes are tight around the body)

FRONT, BACK, LEFT, RIGHT = 0, 1, 2, 3
PERSON, DISTRACTOR, JUNK = 0, 1, 2


@dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the generator; `synthetic.json` stores it and its hash.

    Structure defaults follow Market-1501 (751/750 ids, 2-6 cameras per id, ~17.2 train images per id,
    3.72 distractors and 5.09 junk images per test id); appearance knobs set the sources of difficulty
    listed in the spec (look-alikes, camera gap, viewpoint, misalignment/occlusion, redundancy).
    """

    preset: str = "small"
    seed: int = 0
    # -- structure
    num_train_ids: int = 150
    num_test_ids: int = 150
    num_cameras: int = 6
    cameras_per_id_weights: tuple[float, ...] = (0.08, 0.14, 0.22, 0.28, 0.28)  # P(2, 3, 4, 5, 6 cameras)
    train_extra_frames_mean: float = 2.8  # train: images per (id, camera) = 1 + geometric extra
    test_extra_frames_mean: float = 3.05  # test: 2 + extra, so a camera keeps a gallery image after its query
    max_frames_per_camera: int = 14
    second_track_prob: float = 0.15  # an id passes a camera twice (other viewpoint, other place)
    distractors_per_test_id: float = 2793 / 750  # Market: pid 0, detector false alarms
    junk_per_test_id: float = 3819 / 750  # Market: pid -1, badly aligned boxes of real ids
    camstyle: bool = True
    # backdrop of a CamStyle copy: target = the style camera's scene (the default since the first version) |
    # source = the capture camera's scene passed through the style camera's colour and optics, which is what a
    # CycleGAN copy keeps (its background geometry; docs/synthetic.md, "CamStyle backdrop")
    camstyle_backdrop: str = "target"
    # -- look-alikes
    palette_skew: float = 1.0  # exponent on palette weights: > 1 makes common (dark) colours more common
    colour_jitter: float = 9.0  # per-identity RGB jitter around the palette colour
    # -- camera gap
    camera_gap: float = 1.0  # scales white balance / gain / saturation differences between cameras
    exposure: float = 0.82  # mean camera gain: surveillance crops are dim (CUHK03 mean grey level ~90/255)
    saturation: float = 0.5  # mean colour saturation: surveillance colour is muted
    low_res_cameras: int = 1  # like Market's SD camera: rendered at `low_res_scale` and upsampled
    low_res_scale: float = 0.45
    max_blur: float = 0.75  # Gaussian sigma in stored pixels (at most 0.8)
    max_noise: float = 0.035  # sensor noise std (fraction of full scale)
    # -- misalignment / occlusion / crowd
    box_jitter: float = 0.04  # per-frame box offset std, fraction of the box size
    box_scale_jitter: float = 0.05
    rotation_deg: float = 2.5
    occlusion_prob: float = 0.22  # per track: another person or an object in front
    crowd_rate: float = 0.7  # mean number of background people per track (camera-dependent)

    def __post_init__(self) -> None:
        problems = []
        if self.num_train_ids < 1 or self.num_test_ids < 1:
            problems.append("num_train_ids and num_test_ids must be >= 1")
        if not 2 <= self.num_cameras <= 9:
            problems.append(f"num_cameras must be in 2..9 (one digit in Market names), got {self.num_cameras}")
        if len(self.cameras_per_id_weights) < 1 or min(self.cameras_per_id_weights) < 0:
            problems.append("cameras_per_id_weights must be non-negative weights for 2, 3, ... cameras")
        elif 1 + len(self.cameras_per_id_weights) > self.num_cameras and any(
            w > 0 for w in self.cameras_per_id_weights[self.num_cameras - 1 :]
        ):
            problems.append("cameras_per_id_weights gives weight to more cameras than num_cameras")
        if self.num_train_ids + self.num_test_ids > 9999:
            problems.append("at most 9999 identities fit Market's 4-digit pid")
        if self.max_frames_per_camera < 2:
            problems.append("max_frames_per_camera must be >= 2 (a test camera needs a query and a gallery image)")
        if not 0 < self.low_res_scale <= 1:
            problems.append(f"low_res_scale must be in (0, 1], got {self.low_res_scale}")
        if not 0 <= self.max_blur <= 0.8:
            problems.append(f"max_blur must be in [0, 0.8] stored pixels, got {self.max_blur}")
        if not 0 <= self.low_res_cameras <= self.num_cameras:
            problems.append("low_res_cameras must be in 0..num_cameras")
        if self.camstyle_backdrop not in ("target", "source"):
            problems.append(f"camstyle_backdrop must be 'target' or 'source', got {self.camstyle_backdrop!r}")
        if problems:
            raise ValueError("SyntheticConfig: " + "; ".join(problems))

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        if out["camstyle_backdrop"] == "target":  # added later: left out at its default, so cached copies stay valid
            del out["camstyle_backdrop"]
        return out

    def digest(self) -> str:
        """Hash of the config and generator version: a cached copy is reused only when it matches."""
        blob = json.dumps({"config": self.to_json(), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


PRESETS: dict[str, SyntheticConfig] = {
    # Tests: a dozen ids each side, few frames, fewer cameras per id; generates in a few seconds.
    "tiny": SyntheticConfig(
        preset="tiny",
        num_train_ids=12,
        num_test_ids=12,
        cameras_per_id_weights=(0.4, 0.4, 0.2),
        train_extra_frames_mean=1.2,
        test_extra_frames_mean=0.6,
        max_frames_per_camera=4,
    ),
    # The default (CPU training, CI): Market's per-id statistics with a fifth of its identities.
    "small": SyntheticConfig(preset="small", num_train_ids=150, num_test_ids=150),
    # Market-1501 scale: 751 train ids (~12.9k images), 750 test ids.
    "market": SyntheticConfig(preset="market", num_train_ids=751, num_test_ids=750),
}


@dataclass(frozen=True)
class VideoConfig(SyntheticConfig):
    """A video preset (MARS layout): the image generator's identities, cameras and rendering, shot as tracklets.

    Tracklets per (id, camera) are 1 + geometric extra (MARS fragments a walk into ~3.6 tracklets per id and
    camera; fewer here to keep the frame budget); `distractors_per_test_id` / `junk_per_test_id` count tracklets.
    """

    tracklet_len_min: int = 4  # frames per tracklet: min + geometric extra, capped at max (MARS: 2..920, ~59)
    tracklet_len_mean: float = 10.0
    tracklet_len_max: int = 24
    extra_tracklets_mean: float = 0.8  # tracklets per (id, camera) = 1 + geometric extra (a fragmented track)
    gait_frames: tuple[float, float] = (9.0, 15.0)  # frames per gait cycle (uniform): the walk phase advances
    box_drift: float = 0.012  # per-frame random walk of the detector box offset (fraction of the box)
    query_camera_prob: float = 0.6  # a test id's camera gives a query tracklet (never all of its cameras)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.tracklet_len_min <= self.tracklet_len_max <= 999:
            raise ValueError("VideoConfig: need 1 <= tracklet_len_min <= tracklet_len_max <= 999 (F is 3 digits)")
        if len(self.gait_frames) != 2 or not 2 <= self.gait_frames[0] <= self.gait_frames[1]:
            raise ValueError("VideoConfig: gait_frames must be (low, high) frames per gait cycle, 2 <= low <= high")


VIDEO_PRESETS: dict[str, VideoConfig] = {
    # Tests: eight ids each side, short tracklets; generates in about a second.
    "video-tiny": VideoConfig(
        preset="video-tiny",
        num_train_ids=8,
        num_test_ids=8,
        cameras_per_id_weights=(0.4, 0.4, 0.2),
        tracklet_len_min=3,
        tracklet_len_mean=5.0,
        tracklet_len_max=8,
        camstyle=False,
        distractors_per_test_id=0.5,
        junk_per_test_id=0.25,
    ),
    # The video default (CPU): a fifth of MARS's identities (625 train / 636 test), short tracklets.
    "video-small": VideoConfig(
        preset="video-small",
        num_train_ids=125,
        num_test_ids=125,
        tracklet_len_mean=8.0,
        camstyle=False,
        distractors_per_test_id=0.5,
        junk_per_test_id=0.15,
    ),
}


def make_config(preset: str = "small", seed: int = 0, overrides: dict | None = None) -> SyntheticConfig:
    """The preset's config with `seed` and `overrides` applied; unknown names raise a ValueError."""
    presets = {**PRESETS, **VIDEO_PRESETS}
    if preset not in presets:
        raise ValueError(f"synthetic preset {preset!r} is unknown; expected one of {sorted(presets)}")
    base = presets[preset]
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"synthetic overrides {unknown} are not {type(base).__name__} fields; expected some of {sorted(names)}"
        )
    if "preset" in overrides or "seed" in overrides:
        raise ValueError("synthetic overrides may not set 'preset' or 'seed'; pass them as arguments")
    for key, value in overrides.items():
        overrides[key] = _coerce(key, value, getattr(base, key))
    return dataclasses.replace(base, seed=int(seed), **overrides)


def _coerce(key: str, value: object, default: object) -> object:
    """Cast an override to its field's type, so 1 and 1.0 (or a Hydra ListConfig and a tuple) hash alike."""
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, tuple):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError
            return tuple(float(v) for v in value)
        if isinstance(default, int):
            if float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        if isinstance(default, float):
            return float(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"synthetic override {key}={value!r}: expected a {type(default).__name__} like {default!r}"
        ) from None
    return value


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent stream per (seed, purpose, ids): results never depend on generation order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(k) & 0xFFFFFFFF for k in keys]]))


# Stream purposes (first key after the seed).
_K_CAMERAS, _K_IDENTITY, _K_LAYOUT, _K_TRACK, _K_FRAME, _K_DISTRACTOR, _K_JUNK, _K_SPLIT, _K_SCENE, _K_NOISE = range(10)
_K_VLAYOUT, _K_VTRACK, _K_VFRAME, _K_VSTRAY, _K_VQUERY = range(10, 15)  # the video preset's streams
