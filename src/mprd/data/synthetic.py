"""Synthetic person re-ID benchmark in the exact Market-1501 layout (the suite's embedded default dataset).

Real re-ID data cannot be downloaded here, so this module renders one: drawn people (head, hair or hat, torso
with a pattern, arms, legs, shoes, bag) walking past six cameras, each with its own scene, illumination, white
balance, blur, noise, resolution, viewpoint distribution and detector habits. The split rules and the per-id
statistics follow Market-1501 (Zheng et al., ICCV 2015), and `bounding_box_train_camstyle/` holds CamStyle
copies (Zhong et al., CVPR 2018): the same person, pose and frame rendered in every other camera's style.
What is modelled, and why, is documented in `docs/synthetic.md`.

Everything is deterministic from the seed: each image draws its randomness from a `SeedSequence` keyed by
(seed, purpose, ids), so the bytes do not depend on the number of worker processes.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mprd.data.records import DatasetError

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


# --------------------------------------------------------------------------------------------- configuration
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
        if problems:
            raise ValueError("SyntheticConfig: " + "; ".join(problems))

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

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


def make_config(preset: str = "small", seed: int = 0, overrides: dict | None = None) -> SyntheticConfig:
    """The preset's config with `seed` and `overrides` applied; unknown names raise a ValueError."""
    if preset not in PRESETS:
        raise ValueError(f"synthetic preset {preset!r} is unknown; expected one of {sorted(PRESETS)}")
    overrides = dict(overrides or {})
    names = {f.name for f in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(
            f"synthetic overrides {unknown} are not SyntheticConfig fields; expected some of {sorted(names)}"
        )
    if "preset" in overrides or "seed" in overrides:
        raise ValueError("synthetic overrides may not set 'preset' or 'seed'; pass them as arguments")
    base = PRESETS[preset]
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


# -------------------------------------------------------------------------------------------------- palettes
# (name, RGB, weight): skewed like street clothing, dark colours most common, so many ids share main colours.
_UPPER = [
    ("black", (28, 28, 31), 0.20), ("charcoal", (62, 62, 66), 0.10), ("navy", (32, 40, 72), 0.09),
    ("white", (226, 226, 220), 0.12), ("light grey", (165, 165, 163), 0.07), ("blue", (52, 92, 168), 0.06),
    ("light blue", (142, 176, 214), 0.05), ("red", (172, 38, 42), 0.05), ("dark green", (42, 72, 48), 0.04),
    ("olive", (104, 102, 58), 0.03), ("brown", (98, 68, 46), 0.03), ("beige", (204, 184, 148), 0.04),
    ("yellow", (222, 192, 62), 0.03), ("pink", (226, 152, 172), 0.04), ("purple", (96, 62, 122), 0.02),
    ("orange", (226, 122, 48), 0.02), ("teal", (42, 122, 126), 0.01),
]
_LOWER = [
    ("black", (26, 26, 29), 0.30), ("dark denim", (36, 46, 78), 0.20), ("denim", (72, 98, 142), 0.12),
    ("grey", (112, 112, 114), 0.10), ("khaki", (182, 162, 122), 0.08), ("white", (214, 214, 208), 0.04),
    ("brown", (92, 66, 46), 0.05), ("dark green", (52, 62, 46), 0.03), ("beige", (206, 190, 160), 0.05),
    ("red", (150, 40, 46), 0.01), ("pink", (210, 150, 165), 0.02),
]
_SHOES = [
    ("black", (24, 24, 24), 0.35), ("white", (232, 232, 228), 0.30), ("grey", (120, 120, 122), 0.12),
    ("brown", (98, 64, 40), 0.10), ("blue", (50, 70, 140), 0.05), ("red", (170, 40, 40), 0.04),
    ("beige", (200, 180, 150), 0.04),
]
_HAIR = [
    ("black", (20, 18, 18), 0.55), ("dark brown", (48, 32, 24), 0.25), ("brown", (92, 62, 40), 0.10),
    ("blond", (196, 160, 100), 0.04), ("grey", (150, 148, 146), 0.03), ("auburn", (120, 50, 30), 0.03),
]
_SKIN = [
    ("light", (236, 202, 178), 0.22), ("fair", (222, 182, 152), 0.30), ("medium", (200, 156, 122), 0.24),
    ("tan", (172, 122, 90), 0.12), ("brown", (132, 90, 64), 0.08), ("dark", (94, 64, 46), 0.04),
]
_BAG = [
    ("black", (26, 26, 28), 0.45), ("dark grey", (70, 70, 72), 0.12), ("navy", (34, 42, 76), 0.10),
    ("brown", (110, 72, 46), 0.10), ("red", (170, 40, 46), 0.05), ("beige", (200, 178, 140), 0.06),
    ("blue", (60, 100, 170), 0.05), ("pink", (220, 140, 160), 0.04), ("green", (50, 100, 60), 0.03),
]
_PATTERNS = ("solid", "stripes", "checks", "logo")
_PATTERN_P = (0.60, 0.14, 0.10, 0.16)
_LOWER_TYPES = ("trousers", "shorts", "skirt")
_HAIR_STYLES = ("short", "long", "ponytail", "cropped")
_BAGS = ("none", "backpack", "shoulder", "handbag")


_CUM: dict[tuple, list[float]] = {}  # cumulative probabilities per weight tuple


def _choose(rng: np.random.Generator, probs: Sequence[float]) -> int:
    """Index drawn with the given (unnormalised) probabilities; cheaper than `rng.choice(p=...)`."""
    key = tuple(probs)
    if key not in _CUM:
        c = np.cumsum(probs)
        _CUM[key] = (c / c[-1]).tolist()
    return min(bisect.bisect_right(_CUM[key], rng.random()), len(probs) - 1)


def _pick(rng: np.random.Generator, palette: list, skew: float, jitter: float, exclude: str | None = None):
    """Draw (name, RGB) from a weighted palette; weights**skew controls how dominant the common colours are."""
    items = [p for p in palette if p[0] != exclude]
    name, rgb, _ = items[_choose(rng, [p[2] ** skew for p in items])]
    z = rng.standard_normal(4)
    f = math.exp(0.07 * z[3])
    return name, tuple(int(min(255.0, max(0.0, c * f + jitter * z[i]))) for i, c in enumerate(rgb))


@dataclass(frozen=True)
class Identity:
    """Appearance attributes of one person (also used for crowd people and distractor bodies)."""

    height: float
    width: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    hat: tuple[int, int, int] | None
    upper: tuple[int, int, int]
    upper_name: str
    upper2: tuple[int, int, int]  # pattern / logo colour
    pattern: str
    stripes: int
    short_sleeves: bool
    lower: tuple[int, int, int]
    lower_name: str
    lower_type: str
    tights: tuple[int, int, int] | None  # under a skirt / shorts: None means bare legs
    shoes: tuple[int, int, int]
    bag: str
    bag_colour: tuple[int, int, int]
    bag_side: int  # +1: the person's right side, -1: left


def sample_identity(rng: np.random.Generator, cfg: SyntheticConfig) -> Identity:
    """One person's attributes from the shared skewed palettes (look-alikes arise by construction)."""
    sk, jit = cfg.palette_skew, cfg.colour_jitter
    fem = rng.random() < 0.5  # a latent that correlates hair length, skirts, handbags and build
    upper_name, upper = _pick(rng, _UPPER, sk, jit)
    _, upper2 = _pick(rng, _UPPER, sk, jit, exclude=upper_name)
    lower_name, lower = _pick(rng, _LOWER, sk, jit)
    lower_type = _LOWER_TYPES[_choose(rng, (0.62, 0.18, 0.20) if fem else (0.78, 0.22, 0.0))]
    hair_style = _HAIR_STYLES[_choose(rng, (0.25, 0.45, 0.25, 0.05) if fem else (0.75, 0.04, 0.01, 0.20))]
    bag_p = (0.35, 0.22, 0.20, 0.23) if fem else (0.52, 0.30, 0.15, 0.03)
    bag = _BAGS[_choose(rng, bag_p)]
    pattern = _PATTERNS[_choose(rng, [q**sk for q in _PATTERN_P])]
    tights = None
    if lower_type == "skirt" and rng.random() < 0.35:
        tights = _pick(rng, _LOWER[:2], 1.0, 4.0)[1]
    return Identity(
        height=min(1.08, max(0.85, (0.95 if fem else 1.0) + 0.035 * rng.standard_normal())),
        width=min(1.25, max(0.75, (0.92 if fem else 1.0) + 0.07 * rng.standard_normal())),
        skin=_pick(rng, _SKIN, 1.0, 5.0)[1],
        hair=_pick(rng, _HAIR, sk, 5.0)[1],
        hair_style=hair_style,
        hat=_pick(rng, _BAG, sk, jit)[1] if rng.random() < 0.08 else None,
        upper=upper,
        upper_name=upper_name,
        upper2=upper2,
        pattern=pattern,
        stripes=int(rng.integers(4, 8)),
        short_sleeves=bool(rng.random() < 0.45),
        lower=lower,
        lower_name=lower_name,
        lower_type=lower_type,
        tights=tights,
        shoes=_pick(rng, _SHOES, sk, 6.0)[1],
        bag=bag,
        bag_colour=_pick(rng, _BAG, sk, jit)[1],
        bag_side=1 if rng.random() < 0.5 else -1,
    )


# --------------------------------------------------------------------------------------------------- cameras
_SCENES = ("street", "park", "mall", "plaza", "parking", "walkway")
# Colour casts of the camera's white balance (R, G, B gains): warm, cool, green, magenta, neutral, yellow.
_CASTS = ((1.10, 1.0, 0.84), (0.86, 0.98, 1.14), (0.94, 1.07, 0.92), (1.06, 0.92, 1.06), (1.0, 1.0, 1.0),
          (1.10, 1.04, 0.78))
# Viewpoint distributions (front, back, left, right): along a walkway, across it, oblique.
_VIEW_MODES = ((0.42, 0.38, 0.10, 0.10), (0.08, 0.08, 0.42, 0.42), (0.30, 0.20, 0.30, 0.20))


@dataclass(frozen=True)
class Camera:
    """A camera's style (scene, colour, optics) and habits (viewpoints, detector box, crowd, occlusion)."""

    index: int
    scene: str
    horizon: float  # scene y where the floor meets the backdrop
    gain: float
    gamma: float
    contrast: float
    white_balance: tuple[float, float, float]
    saturation: float
    haze: float
    light: float  # -1: light from the image left, +1: from the right
    shade: float  # strength of the body shading on the dark side
    blur: float
    noise: float
    resolution: float
    jpeg_quality: int
    box_scale: float
    box_dx: float
    box_dy: float
    views: tuple[float, float, float, float]
    crowd_rate: float
    occlusion_prob: float
    traffic: float  # relative chance that an identity passes this camera


def sample_cameras(cfg: SyntheticConfig) -> list[Camera]:
    """Cameras of one generator seed; scenes, casts and gains are stratified so every camera differs visibly."""
    rng = _rng(cfg.seed, _K_CAMERAS)
    n = cfg.num_cameras
    scenes = [_SCENES[i % len(_SCENES)] for i in rng.permutation(max(n, len(_SCENES)))[:n]]
    casts = [_CASTS[i % len(_CASTS)] for i in rng.permutation(max(n, len(_CASTS)))[:n]]
    gains = cfg.exposure * np.exp(np.linspace(-0.2, 0.2, n)[rng.permutation(n)] * cfg.camera_gap)
    views = rng.permutation(np.arange(n) % len(_VIEW_MODES))
    low_res = set(range(n - cfg.low_res_cameras, n))  # the last camera(s), like Market's c6
    cams = []
    for c in range(n):
        wb = 1.0 + cfg.camera_gap * (0.55 * (np.array(casts[c]) - 1.0) + rng.normal(0, 0.015, 3))
        v = np.array(_VIEW_MODES[views[c]]) * np.exp(rng.normal(0, 0.2, 4))
        cams.append(
            Camera(
                index=c,
                scene=scenes[c],
                horizon=float(rng.uniform(150, 235)),
                gain=float(gains[c] * math.exp(rng.normal(0, 0.03))),
                gamma=float(math.exp(cfg.camera_gap * rng.uniform(-0.18, 0.15))),
                contrast=float(rng.uniform(1.05, 1.35)),
                white_balance=tuple(float(x) for x in wb / wb.mean()),
                saturation=float(cfg.saturation * math.exp(cfg.camera_gap * rng.uniform(-0.35, 0.35))),
                haze=float(cfg.camera_gap * rng.uniform(0.0, 0.05)),
                light=float(rng.uniform(-1, 1)),
                shade=float(rng.uniform(0.12, 0.38)),
                blur=float(0.35 * cfg.max_blur if c in low_res else rng.uniform(0, cfg.max_blur)),
                noise=float(rng.uniform(0.25, 1.0) * cfg.max_noise),
                resolution=cfg.low_res_scale if c in low_res else 1.0,
                jpeg_quality=int(rng.integers(70, 96)),
                box_scale=float(rng.uniform(0.92, 1.04)),
                box_dx=float(rng.uniform(-0.05, 0.05)),
                box_dy=float(rng.uniform(-0.035, 0.035)),
                views=tuple(float(x) for x in v / v.sum()),
                crowd_rate=float(cfg.crowd_rate * rng.uniform(0.3, 1.7)),
                occlusion_prob=float(min(0.9, cfg.occlusion_prob * rng.uniform(0.5, 1.5))),
                traffic=float(rng.uniform(0.6, 1.4)),
            )
        )
    return cams


# ---------------------------------------------------------------------------------------------------- scenes
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over `cell` pixels (a small Gaussian field upsampled bicubically)."""
    small = rng.normal(0, 1, (max(2, shape[0] // cell), max(2, shape[1] // cell))).astype(np.float32)
    img = Image.fromarray(small).resize((shape[1], shape[0]), Image.BICUBIC)  # float32 -> mode "F"
    return np.asarray(img, np.float32)


def _scene_texture(rng: np.random.Generator) -> np.ndarray:
    """Multiplicative texture: stains and uneven light (coarse), wear and foliage (medium), grit (fine)."""
    shape = (_SCENE_H, _SCENE_W)
    tex = 0.07 * _smooth_noise(rng, shape, 24) + 0.06 * _smooth_noise(rng, shape, 4)
    tex += 0.045 * rng.standard_normal(shape, dtype=np.float32)
    return (1 + tex)[..., None]


def _jit(rng: np.random.Generator, rgb: Sequence[int], s: float = 12) -> tuple[int, int, int]:
    return tuple(int(c) for c in np.clip(np.array(rgb) + rng.normal(0, s, 3), 0, 255))


def _floor_lines(d: ImageDraw.ImageDraw, rng, hz: float, col, spacing: float, vx: float) -> None:
    """Tile joints in perspective: rows get wider apart towards the camera, columns meet at a vanishing point."""
    y, step = hz + spacing * 0.3, spacing * 0.3
    while y < _SCENE_H:
        d.line([(0, y), (_SCENE_W, y)], fill=col, width=2)
        step *= 1.35
        y += step
    for x in np.arange(-3 * _SCENE_W, 4 * _SCENE_W, spacing * 3):
        d.line([(vx + (x - vx) * 0.08, hz), (x, _SCENE_H)], fill=col, width=2)


def _draw_clutter(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, n: int) -> None:
    """Poles, bins, benches, bicycles and signs standing on the floor line."""
    for _ in range(n):
        x = rng.uniform(0, _SCENE_W)
        kind = rng.integers(5)
        col = _jit(rng, [(60, 60, 62), (40, 80, 50), (150, 150, 150), (110, 70, 40), (30, 50, 90)][rng.integers(5)])
        base = hz + rng.uniform(5, 40)
        if kind == 0:  # pole / lamp post
            d.rectangle([x, base - 300, x + 9, base], fill=col)
        elif kind == 1:  # bin
            d.rectangle([x, base - 70, x + 44, base], fill=col)
            d.ellipse([x - 3, base - 80, x + 47, base - 62], fill=_jit(rng, col, 20))
        elif kind == 2:  # bench
            d.rectangle([x, base - 45, x + 150, base - 36], fill=col)
            d.rectangle([x, base - 75, x + 150, base - 62], fill=col)
            for lx in (x + 10, x + 135):
                d.rectangle([lx, base - 36, lx + 6, base], fill=(40, 40, 40))
        elif kind == 3:  # bicycle
            for wx in (x, x + 80):
                d.ellipse([wx - 28, base - 56, wx + 28, base], outline=(30, 30, 30), width=4)
            d.line([(x, base - 28), (x + 40, base - 60), (x + 80, base - 28), (x + 30, base - 28), (x + 40, base - 60)],
                   fill=col, width=5)
        else:  # sign board
            d.rectangle([x + 18, base - 140, x + 24, base], fill=(90, 90, 90))
            d.rectangle([x, base - 200, x + 44, base - 140], fill=_jit(rng, (200, 200, 190), 40))


def _scene_street(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """A facade with windows above a paved walkway."""
    facade = _jit(rng, [(150, 82, 62), (192, 176, 150), (142, 142, 140), (212, 206, 196)][rng.integers(4)])
    d.rectangle([0, 0, _SCENE_W, hz], fill=facade)
    win = _jit(rng, (44, 52, 62))
    for y0 in np.arange(20, hz - 60, 95):
        for x0 in np.arange(rng.uniform(0, 40), _SCENE_W, 110):
            d.rectangle([x0, y0, x0 + 58, y0 + 62], fill=_jit(rng, (200, 200, 195), 8))
            d.rectangle([x0 + 5, y0 + 5, x0 + 53, y0 + 57], fill=_jit(rng, win, 10))
    d.rectangle([0, hz - 14, _SCENE_W, hz], fill=_jit(rng, (90, 90, 90)))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, (150, 150, 146)))
    _floor_lines(d, rng, hz, (120, 120, 118, 255), 60, vx)


def _scene_park(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """Trees and a lawn behind a gravel path."""
    d.rectangle([0, 0, _SCENE_W, hz], fill=_jit(rng, (205, 212, 215)))
    d.rectangle([0, hz - 45, _SCENE_W, hz], fill=_jit(rng, (88, 128, 62)))
    for _ in range(40):
        x, r = rng.uniform(-50, _SCENE_W), rng.uniform(40, 95)
        d.rectangle([x - 6, hz - 90, x + 6, hz - 30], fill=(70, 52, 38))
        d.ellipse([x - r, hz - 60 - 2.2 * r, x + r, hz - 60], fill=_jit(rng, (52, 88, 48), 14))
    for _ in range(20):
        x = rng.uniform(0, _SCENE_W)
        d.ellipse([x - 50, hz - 40, x + 50, hz + 8], fill=_jit(rng, (62, 100, 52), 12))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, (188, 172, 140)))


def _scene_mall(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """A glass shop front with mullions, reflections and signs over a polished tiled floor."""
    d.rectangle([0, 0, _SCENE_W, hz], fill=_jit(rng, (62, 78, 88)))
    for x0 in np.arange(rng.uniform(0, 60), _SCENE_W, 125):
        d.rectangle([x0, 0, x0 + 10, hz], fill=(190, 192, 195))
        d.polygon([(x0 + 30, 0), (x0 + 60, 0), (x0 + 20, hz), (x0 + 12, hz)], fill=(255, 255, 255, 28))
    for x0 in np.arange(rng.uniform(0, 200), _SCENE_W, 330):
        sign = [(200, 40, 40), (240, 200, 40), (40, 90, 180)][rng.integers(3)]
        d.rectangle([x0, 20, x0 + 160, 55], fill=_jit(rng, sign, 20))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, (214, 208, 198)))
    _floor_lines(d, rng, hz, (170, 165, 158, 255), 110, vx)


def _scene_plaza(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """A concrete wall with stairs and planters over large slabs."""
    d.rectangle([0, 0, _SCENE_W, hz], fill=_jit(rng, (172, 168, 160)))
    for y in np.arange(hz - 120, hz, 14):  # stairs behind
        d.line([(0, y), (_SCENE_W, y)], fill=_jit(rng, (120, 118, 112), 5), width=3)
    for x0 in np.arange(rng.uniform(0, 100), _SCENE_W, 260):
        d.rectangle([x0, hz - 60, x0 + 90, hz + 10], fill=_jit(rng, (130, 120, 100)))
        d.ellipse([x0 - 10, hz - 110, x0 + 100, hz - 40], fill=_jit(rng, (60, 100, 50), 15))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, (192, 190, 182)))
    _floor_lines(d, rng, hz, (150, 148, 140, 255), 150, vx)


def _scene_parking(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """Parked cars and painted bays on asphalt in front of a low building."""
    d.rectangle([0, 0, _SCENE_W, hz], fill=_jit(rng, (160, 166, 170)))
    d.rectangle([0, 30, _SCENE_W, hz - 50], fill=_jit(rng, (120, 112, 104)))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, (84, 84, 86)))
    for x0 in np.arange(rng.uniform(0, 80), _SCENE_W, 230):
        line = [(x0 - 90, _SCENE_H), (x0 - 70, hz + 20), (x0 - 62, hz + 20), (x0 - 78, _SCENE_H)]
        d.polygon(line, fill=(220, 220, 210))
        car = [(180, 30, 30), (220, 220, 220), (30, 30, 35), (40, 70, 140), (150, 150, 150)][rng.integers(5)]
        car = _jit(rng, car, 15)
        d.rounded_rectangle([x0, hz - 95, x0 + 200, hz + 5], radius=25, fill=car)
        d.rounded_rectangle([x0 + 35, hz - 135, x0 + 165, hz - 80], radius=20, fill=car)
        d.rectangle([x0 + 48, hz - 125, x0 + 152, hz - 88], fill=(40, 50, 60))
        for wx in (x0 + 40, x0 + 160):
            d.ellipse([wx - 22, hz - 20, wx + 22, hz + 22], fill=(20, 20, 20))


def _scene_walkway(d: ImageDraw.ImageDraw, rng: np.random.Generator, hz: float, vx: float) -> None:
    """A covered walkway with pillars and a railing, as on many campus cameras."""
    d.rectangle([0, 0, _SCENE_W, hz], fill=_jit(rng, (150, 150, 148)))
    d.rectangle([0, 0, _SCENE_W, 60], fill=_jit(rng, (56, 56, 60)))
    for x in np.arange(0, _SCENE_W, 9):
        d.line([(x, hz - 85), (x, hz)], fill=(95, 95, 98), width=2)
    d.rectangle([0, hz - 92, _SCENE_W, hz - 82], fill=(110, 110, 112))
    for x0 in np.arange(rng.uniform(0, 100), _SCENE_W, 380):
        d.rectangle([x0, 0, x0 + 70, hz + 20], fill=_jit(rng, (196, 194, 188)))
    d.rectangle([0, hz, _SCENE_W, _SCENE_H], fill=_jit(rng, [(150, 96, 82), (128, 128, 130)][rng.integers(2)]))
    _floor_lines(d, rng, hz, (105, 80, 70, 255), 50, vx)


_SCENE_PAINTERS = {"street": _scene_street, "park": _scene_park, "mall": _scene_mall, "plaza": _scene_plaza,
                   "parking": _scene_parking, "walkway": _scene_walkway}


def _render_scene(cam: Camera, seed: int) -> Image.Image:
    """The camera's backdrop (wide, so each track walks across a different part of it)."""
    rng = _rng(seed, _K_SCENE, cam.index)
    img = Image.new("RGB", (_SCENE_W, _SCENE_H))
    d = ImageDraw.Draw(img, "RGBA")
    vx = rng.uniform(0.2, 0.8) * _SCENE_W  # vanishing point of the floor joints
    _SCENE_PAINTERS[cam.scene](d, rng, cam.horizon, vx)
    _draw_clutter(d, rng, cam.horizon, int(rng.integers(4, 10)))
    if rng.random() < 0.5:  # a cast shadow across the floor
        x0, hz = rng.uniform(0, _SCENE_W), cam.horizon
        d.polygon([(x0, hz), (x0 + 400, hz), (x0 + 900, _SCENE_H), (x0 + 200, _SCENE_H)], fill=(0, 0, 0, 60))
    arr = np.asarray(img, np.float32) * _scene_texture(rng)
    # Built environments are mostly grey: pull the scene towards grey (the camera adds its own cast), and let
    # the light vary along the walkway (shade of trees and buildings) so one camera's backdrops differ too.
    lum = arr @ np.array([0.299, 0.587, 0.114], np.float32)
    arr = lum[..., None] + rng.uniform(0.2, 0.5) * (arr - lum[..., None])
    arr *= rng.uniform(100, 150) / max(1.0, float(lum.mean()))  # scenes differ, but none is black or white
    knots = np.exp(rng.normal(0, 0.25, 14))
    light = np.interp(np.arange(_SCENE_W), np.linspace(0, _SCENE_W, 14), knots).astype(np.float32)
    return Image.fromarray((arr * light[None, :, None]).clip(0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------- people
def _mul(c: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, x * f))) for x in c)


class _Pen:
    """Maps body coordinates (u across, v down from the head top, both in person heights) to canvas pixels.

    Side views are drawn facing +u and mirrored for LEFT, so one drawing serves both walking directions.
    """

    def __init__(self, d: ImageDraw.ImageDraw, cx: float, top: float, h: float, mirror: int) -> None:
        self.d, self.cx, self.top, self.h, self.m = d, cx, top, h, mirror

    def pt(self, u: float, v: float) -> tuple[float, float]:
        return (self.cx + self.m * u * self.h, self.top + v * self.h)

    def poly(self, pts: Sequence[tuple[float, float]], fill) -> None:
        self.d.polygon([self.pt(u, v) for u, v in pts], fill=fill)

    def ellipse(self, cu: float, cv: float, hu: float, hv: float, fill) -> None:
        (x0, y0), (x1, y1) = self.pt(cu - hu, cv - hv), self.pt(cu + hu, cv + hv)
        self.d.ellipse([min(x0, x1), y0, max(x0, x1), y1], fill=fill)

    def limb(self, p0: tuple[float, float], p1: tuple[float, float], w0: float, w1: float, fill) -> None:
        """A tapered segment with rounded ends (upper arm, shin, ...)."""
        du, dv = p1[0] - p0[0], p1[1] - p0[1]
        n = math.hypot(du, dv) or 1.0
        nu, nv = -dv / n, du / n
        self.poly(
            [(p0[0] + nu * w0 / 2, p0[1] + nv * w0 / 2), (p1[0] + nu * w1 / 2, p1[1] + nv * w1 / 2),
             (p1[0] - nu * w1 / 2, p1[1] - nv * w1 / 2), (p0[0] - nu * w0 / 2, p0[1] - nv * w0 / 2)],
            fill,
        )
        self.ellipse(p0[0], p0[1], w0 / 2, w0 / 2, fill)
        self.ellipse(p1[0], p1[1], w1 / 2, w1 / 2, fill)


def _bilinear(q: Sequence[tuple[float, float]], a: float, b: float) -> tuple[float, float]:
    """Point at (a across, b down) of quad q = (top-left, top-right, bottom-right, bottom-left)."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = q
    tx, ty = x0 + a * (x1 - x0), y0 + a * (y1 - y0)
    bx, by = x3 + a * (x2 - x3), y3 + a * (y2 - y3)
    return (tx + b * (bx - tx), ty + b * (by - ty))


def _cell(q, a0: float, a1: float, b0: float, b1: float) -> list[tuple[float, float]]:
    return [_bilinear(q, a0, b0), _bilinear(q, a1, b0), _bilinear(q, a1, b1), _bilinear(q, a0, b1)]


def _torso(pen: _Pen, p: Identity, q, view: int) -> None:
    """Upper-body garment with its pattern: stripes, checks, or a print seen from the front only."""
    pen.poly(q, p.upper)
    if p.pattern == "stripes":
        n = 2 * p.stripes
        for i in range(1, n, 2):
            pen.poly(_cell(q, 0, 1, i / n, (i + 1) / n), p.upper2)
    elif p.pattern == "checks":
        nb, na = p.stripes + 2, 4
        mix = tuple(int(0.4 * a + 0.6 * b) for a, b in zip(p.upper, p.upper2, strict=True))
        for i in range(nb):
            for j in range(na):
                if (i + j) % 2:
                    pen.poly(_cell(q, j / na, (j + 1) / na, i / nb, (i + 1) / nb), mix)
    elif p.pattern == "logo" and view == FRONT:
        if p.stripes % 2:
            pen.poly(_cell(q, 0.3, 0.7, 0.2, 0.42), p.upper2)
        else:  # a round print
            pts = [(0.5 + 0.2 * math.cos(t), 0.32 + 0.11 * math.sin(t)) for t in np.linspace(0, 2 * math.pi, 12)]
            pen.poly([_bilinear(q, a, b) for a, b in pts], p.upper2)


_HEAD_V, _HEAD_S = 0.068, 0.9  # head centre (v) and size relative to the drawing units below


def _head(pen: _Pen, p: Identity, view: int, cu: float) -> None:
    """Head, face, hair and hat; `cu` is the head centre (shifted forward in side views)."""

    def ell(du: float, dv: float, hu: float, hv: float, col) -> None:  # offsets from the head centre
        pen.ellipse(cu + du * _HEAD_S, _HEAD_V + dv * _HEAD_S, hu * _HEAD_S, hv * _HEAD_S, col)

    def poly(pts, col) -> None:
        pen.poly([(cu + du * _HEAD_S, _HEAD_V + dv * _HEAD_S) for du, dv in pts], col)

    hair = p.hair
    if view == BACK:
        ell(0, 0, 0.053, 0.07, hair)
        if p.hair_style == "ponytail":
            ell(0, 0.06, 0.022, 0.05, hair)
    elif view == FRONT:
        ell(0, -0.003, 0.054, 0.072, hair)
        drop = 0.02 if p.hair_style == "cropped" else 0.012 if p.hair_style == "short" else 0.016
        ell(0, drop, 0.045, 0.062 - drop / 2, p.skin)
        for sgn in (-1, 1):
            ell(sgn * 0.019, 0.007, 0.006, 0.005, _mul(p.skin, 0.45))
        if p.hair_style == "long":
            for sgn in (-1, 1):
                poly([(sgn * 0.04, 0.005), (sgn * 0.062, 0.005), (sgn * 0.072, 0.2), (sgn * 0.035, 0.2)], hair)
    else:
        ell(0, -0.001, 0.054, 0.071, hair)
        drop = 0.02 if p.hair_style == "cropped" else 0.014
        ell(0.016, 0.003 + drop, 0.042, 0.06 - drop / 2, p.skin)
        ell(0.04, 0.007, 0.005, 0.005, _mul(p.skin, 0.45))
        if p.hair_style == "long":
            poly([(-0.055, -0.015), (-0.01, -0.015), (-0.012, 0.21), (-0.06, 0.19)], hair)
        elif p.hair_style == "ponytail":
            ell(-0.065, 0.035, 0.02, 0.045, hair)
    if p.hat is not None:
        (x0, y0) = pen.pt(cu - 0.058 * _HEAD_S, _HEAD_V - 0.08 * _HEAD_S)
        (x1, y1) = pen.pt(cu + 0.058 * _HEAD_S, _HEAD_V + 0.045 * _HEAD_S)
        pen.d.chord([min(x0, x1), y0, max(x0, x1), y1], 180, 360, fill=p.hat)
        if view in (LEFT, RIGHT):
            poly([(0.02, -0.025), (0.11, -0.017), (0.1, -0.007), (0.02, -0.009)], _mul(p.hat, 0.8))
        elif view == FRONT:
            poly([(-0.058, -0.023), (0.058, -0.023), (0.05, -0.011), (-0.05, -0.011)], _mul(p.hat, 0.8))


def _legs_front(p: Identity, phase: float) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(hip, ankle) per leg in front/back view; the forward foot lands a little lower in the image."""
    a = 0.018 * math.sin(phase)
    w = p.width
    return [((-0.062 * w, 0.5), (-0.07 * w, 0.955 + a)), ((0.062 * w, 0.5), (0.07 * w, 0.955 - a))]


def _legs_side(phase: float) -> list[tuple[tuple[float, float], tuple[float, float], tuple[float, float]]]:
    """(hip, knee, ankle) for the far and the near leg in a side view; the swinging leg bends its knee."""
    out = []
    for sign in (-1, 1):  # far leg, near leg
        th = 0.42 * sign * math.sin(phase)
        bend = 0.6 * max(0.0, sign * math.cos(phase))
        knee = (0.24 * math.sin(th), 0.5 + 0.24 * math.cos(th))
        ankle = (knee[0] + 0.225 * math.sin(th - bend), knee[1] + 0.225 * math.cos(th - bend))
        out.append(((0.0, 0.5), knee, ankle))
    return out


def _leg_colours(p: Identity) -> tuple[tuple, tuple, float]:
    """(upper-leg colour, lower-leg colour, v where the garment ends) for trousers, shorts or a skirt."""
    bare = p.tights if p.tights is not None else p.skin
    if p.lower_type == "trousers":
        return p.lower, p.lower, 2.0
    if p.lower_type == "shorts":
        return p.lower, bare, 0.68
    return bare, bare, 0.0


def draw_person(d: ImageDraw.ImageDraw, p: Identity, view: int, phase: float, cx: float, feet_y: float,
                h: float) -> None:
    """Draw one walking person standing at (cx, feet_y), `h` pixels tall, seen from `view`."""
    side = view in (LEFT, RIGHT)
    mirror = -1 if view == LEFT else 1
    if side:
        legs = _legs_side(phase)
        low = max(leg[2][1] for leg in legs) + 0.035
    else:
        legs_f = _legs_front(p, phase)
        low = max(leg[1][1] for leg in legs_f) + 0.04
    pen = _Pen(d, cx, feet_y - h * low, h, mirror)
    up_col, low_col, cut = _leg_colours(p)
    w = p.width
    if side:
        _draw_side(pen, p, phase, legs, up_col, low_col, cut)
    else:
        _draw_front_back(pen, p, view, phase, legs_f, up_col, low_col, cut, w)


def _arm(pen: _Pen, p: Identity, pts: Sequence[tuple[float, float]], f: float) -> None:
    """Upper arm, forearm and hand; short sleeves leave the lower arm bare."""
    sleeve, skin = _mul(p.upper, f), _mul(p.skin, f)
    (s, e, wr) = pts
    if p.short_sleeves:
        mid = (s[0] + 0.55 * (e[0] - s[0]), s[1] + 0.55 * (e[1] - s[1]))
        pen.limb(s, e, 0.062, 0.053, skin)
        pen.limb(e, wr, 0.053, 0.045, skin)
        pen.limb(s, mid, 0.078, 0.07, sleeve)
    else:
        pen.limb(s, e, 0.074, 0.064, sleeve)
        pen.limb(e, wr, 0.064, 0.054, sleeve)
    hand = (wr[0] + 0.3 * (wr[0] - e[0]), wr[1] + 0.3 * (wr[1] - e[1]))
    pen.ellipse(hand[0], hand[1], 0.025, 0.028, skin)


def _handbag(pen: _Pen, p: Identity, hand: tuple[float, float]) -> None:
    """A small bag hanging from the hand, with its handle."""
    u, v = hand
    pen.poly([(u - 0.04, v + 0.05), (u + 0.04, v + 0.05), (u + 0.05, v + 0.14), (u - 0.05, v + 0.14)], p.bag_colour)
    pen.limb((u - 0.02, v + 0.05), (u, v + 0.01), 0.01, 0.01, _mul(p.bag_colour, 0.7))


def _draw_front_back(pen: _Pen, p: Identity, view: int, phase: float, legs, up_col, low_col, cut: float,
                     w: float) -> None:
    """Front or back view: legs, hips, torso, bag, arms, head (back: a backpack shows, a logo does not)."""
    front = view == FRONT
    sh, hw = 0.15 * w, 0.124 * w  # half widths of shoulders and hips
    for hip, ank in legs:
        top_w, bot_w = 0.115 * w, 0.075
        if cut >= 1.5:
            pen.limb(hip, ank, top_w, bot_w, up_col)
        else:
            pen.limb(hip, ank, 0.085, 0.062, low_col)
            if cut > 0:
                knee = (hip[0] + (ank[0] - hip[0]) * 0.38, cut)
                pen.limb(hip, knee, top_w, 0.09 * w, up_col)
        pen.ellipse(ank[0], ank[1] + 0.018, 0.04, 0.025, p.shoes)
    if p.lower_type == "skirt":
        pen.poly([(-hw, 0.46), (hw, 0.46), (hw * 1.5, 0.7), (-hw * 1.5, 0.7)], p.lower)
    else:
        pen.poly([(-hw, 0.45), (hw, 0.45), (hw * 1.04, 0.57), (-hw * 1.04, 0.57)], p.lower)
    pen.poly([(-0.022, 0.12), (0.022, 0.12), (0.024, 0.19), (-0.024, 0.19)], _mul(p.skin, 0.85))
    q = [(-sh, 0.205), (sh, 0.205), (hw, 0.49), (-hw, 0.49)]
    # sloping shoulders from the collar (the pattern starts below them, like a yoke)
    pen.poly([(-0.06, 0.163), (0.06, 0.163), (sh * 0.9, 0.18), (sh, 0.21), (-sh, 0.21), (-sh * 0.9, 0.18)], p.upper)
    _torso(pen, p, q, view)
    bag_u = p.bag_side * (-1 if front else 1)  # the person's right is on the image left when facing us
    if p.bag == "backpack":
        if front:
            for s in (-1, 1):
                pen.limb((s * 0.075, 0.175), (s * 0.095, 0.34), 0.02, 0.018, p.bag_colour)
        else:
            bw = 0.115 * w
            pen.d.rounded_rectangle(_box(pen, -bw, 0.19, bw, 0.45), radius=pen.h * 0.03, fill=p.bag_colour)
            pen.poly([(-bw, 0.2), (bw, 0.2), (bw, 0.28), (-bw, 0.28)], _mul(p.bag_colour, 0.75))  # flap
    elif p.bag == "shoulder":
        pen.limb((-bag_u * 0.09, 0.18), (bag_u * 0.15, 0.43), 0.016, 0.016, _mul(p.bag_colour, 0.8))
    swing = 0.03 * math.sin(phase)
    hands = []
    for s in (-1, 1):
        k = max(0.0, s * swing)  # an arm swung towards or away from the camera looks shorter
        pts = [(s * (sh - 0.03), 0.2), (s * (sh - 0.006), 0.34 - k), (s * (sh - 0.016), 0.48 - 1.5 * k)]
        _arm(pen, p, pts, 0.86)  # sleeves a shade darker than the chest: the arms turn away from the light
        hands.append(pts[2])
    if p.bag == "shoulder":
        box = _box(pen, bag_u * 0.12, 0.42, bag_u * 0.23, 0.54)
        pen.d.rounded_rectangle(box, radius=pen.h * 0.01, fill=p.bag_colour)
    elif p.bag == "handbag":
        _handbag(pen, p, hands[0] if bag_u < 0 else hands[1])
    _head(pen, p, view, 0.0)
    if view == BACK and p.hair_style == "long":
        pen.poly([(-0.055, 0.08), (0.055, 0.08), (0.06, 0.27), (-0.06, 0.27)], p.hair)


def _box(pen: _Pen, u0: float, v0: float, u1: float, v1: float) -> list[float]:
    (x0, y0), (x1, y1) = pen.pt(u0, v0), pen.pt(u1, v1)
    return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _draw_side(pen: _Pen, p: Identity, phase: float, legs, up_col, low_col, cut: float) -> None:
    """Side view facing +u: far limbs darker and behind, a backpack sticks out behind, a shoulder bag at the hip."""
    w = p.width
    near_side = 1 if pen.m == 1 else -1  # walking right shows the person's right side
    bag_near = p.bag_side == near_side
    far_f = 0.72
    arm_sw = [-0.34 * s * math.sin(phase) for s in (-1, 1)]  # arms swing against the legs

    def arm_pts(a: float) -> list[tuple[float, float]]:
        s = (0.0, 0.195)
        e = (s[0] + 0.16 * math.sin(a), s[1] + 0.16 * math.cos(a))
        fa = a + 0.25 + 0.25 * max(0.0, math.sin(a))
        return [s, e, (e[0] + 0.15 * math.sin(fa), e[1] + 0.15 * math.cos(fa))]

    far_arm = arm_pts(arm_sw[0])
    _arm(pen, p, far_arm, far_f)
    if p.bag == "handbag" and not bag_near:
        _handbag(pen, p, far_arm[2])
    if p.bag == "backpack":
        pen.d.rounded_rectangle(_box(pen, -0.17 * w, 0.19, -0.05, 0.43), radius=pen.h * 0.025, fill=p.bag_colour)
    if p.bag == "shoulder" and not bag_near:
        pen.d.rounded_rectangle(_box(pen, -0.07, 0.42, 0.05, 0.53), radius=pen.h * 0.01, fill=_mul(p.bag_colour, far_f))
    for (hip, knee, ank), f in zip(legs, (far_f, 1.0), strict=True):
        if cut >= 1.5:
            pen.limb(hip, knee, 0.115 * w, 0.088, _mul(up_col, f))
            pen.limb(knee, ank, 0.088, 0.068, _mul(up_col, f))
        else:
            pen.limb(hip, knee, 0.085, 0.068, _mul(low_col, f))
            pen.limb(knee, ank, 0.068, 0.055, _mul(low_col, f))
            if cut > 0:
                pen.limb(hip, knee, 0.105 * w, 0.085, _mul(up_col, f))
        pen.poly([(ank[0] - 0.025, ank[1] - 0.012), (ank[0] + 0.06, ank[1] + 0.012), (ank[0] + 0.06, ank[1] + 0.032),
                  (ank[0] - 0.03, ank[1] + 0.032)], _mul(p.shoes, f))
    if p.lower_type == "skirt":
        pen.poly([(-0.075 * w, 0.46), (0.06 * w, 0.46), (0.11, 0.7), (-0.12, 0.7)], p.lower)
    else:
        pen.ellipse(-0.005, 0.51, 0.088 * w, 0.06, p.lower)
    pen.poly([(-0.005, 0.12), (0.035, 0.12), (0.03, 0.19), (-0.015, 0.19)], _mul(p.skin, 0.85))
    q = [(-0.09 * w + 0.012, 0.175), (0.08 * w + 0.012, 0.175), (0.07 * w, 0.49), (-0.085 * w, 0.49)]
    pen.ellipse(0.0, 0.2, 0.087 * w, 0.035, p.upper)
    _torso(pen, p, q, RIGHT)
    if p.bag == "shoulder":
        pen.limb((0.0, 0.18), (-0.01, 0.43), 0.015, 0.015, _mul(p.bag_colour, 0.8))
        if bag_near:
            pen.d.rounded_rectangle(_box(pen, -0.07, 0.42, 0.05, 0.53), radius=pen.h * 0.01, fill=p.bag_colour)
    elif p.bag == "backpack":
        pen.limb((0.03, 0.18), (0.0, 0.34), 0.018, 0.016, _mul(p.bag_colour, 0.8))
    near_arm = arm_pts(arm_sw[1])
    _arm(pen, p, near_arm, 1.0)
    if p.bag == "handbag" and bag_near:
        _handbag(pen, p, near_arm[2])
    _head(pen, p, RIGHT, 0.012)


# ------------------------------------------------------------------------------------------------ the plan
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


# ------------------------------------------------------------------------------------------------- rendering
def _shadow(d: ImageDraw.ImageDraw, x: float, feet: float, h: float) -> None:
    d.ellipse([x - 0.17 * h, feet - 0.025 * h, x + 0.17 * h, feet + 0.02 * h], fill=(0, 0, 0, 70))


def _crowd(plan: Plan, shot: Shot, rt, rf, feet: float, extra: int = 0) -> list[tuple]:
    """Background people: smaller (farther), standing between the horizon and the main person's feet."""
    cam = plan.cameras[shot.cam]
    people = []
    for _ in range(int(rt.poisson(cam.crowd_rate)) + extra):
        s = rt.uniform(0.4, 0.85)
        ident = sample_identity(rt, plan.config)
        view, phase, dx = int(rt.integers(4)), rt.uniform(0, 2 * math.pi), rt.uniform(-1.4, 1.4) * _BOX_W
        people.append((s, ident, view, phase + rf.normal(0, 0.8), shot.x + dx + rf.normal(0, 30),
                       cam.horizon + s * (feet - cam.horizon), _BASE_HEIGHT * s * ident.height))
    return sorted(people, key=lambda t: t[0])  # far ones first


def _draw_occluder(d, plan: Plan, shot: Shot, rt, rf, feet: float, bw: float, ox: float, oy: float, cw: int) -> None:
    """Another person passing in front, or an object (bollard, railing, bicycle, pole) cutting the body."""
    side = float(rt.choice([-1, 1]))
    if rt.random() < 0.5:
        s = rt.uniform(1.0, 1.12)
        ident = sample_identity(rt, plan.config)
        x = shot.x + side * rt.uniform(0.5, 0.85) * bw + rf.normal(0, 5)
        draw_person(d, ident, int(rt.integers(4)), rt.uniform(0, 2 * math.pi), x - ox, feet + (s - 1) * 150 - oy,
                    _BASE_HEIGHT * s * ident.height)
        return
    kind = int(rt.integers(4))
    col = _jit(rt, [(70, 70, 72), (150, 150, 145), (40, 60, 110), (120, 80, 50), (190, 60, 40)][int(rt.integers(5))])
    x, f = shot.x - ox + side * rt.uniform(0.15, 0.45) * bw, feet - oy + rt.uniform(5, 30)
    if kind == 0:  # bollard / bin
        w, h = rt.uniform(0.25, 0.4) * bw, rt.uniform(0.6, 1.0) * bw
        d.rectangle([x - w / 2, f - h, x + w / 2, f], fill=col)
        d.ellipse([x - w / 2, f - h - w * 0.25, x + w / 2, f - h + w * 0.25], fill=_mul(col, 1.2))
    elif kind == 1:  # railing across the legs
        y0 = f - rt.uniform(0.5, 0.9) * bw
        d.rectangle([0, y0, cw, y0 + 8], fill=col)
        d.rectangle([0, y0 + 40, cw, y0 + 46], fill=col)
        for px in np.arange(x % 70, cw, 70):
            d.rectangle([px, y0, px + 7, f], fill=col)
    elif kind == 2:  # bicycle wheel and frame
        r = rt.uniform(0.3, 0.42) * bw
        d.ellipse([x - r, f - 2 * r, x + r, f], outline=(25, 25, 25), width=6)
        d.line([(x, f - r), (x + side * 1.6 * r, f - 2.2 * r), (x + side * 2.4 * r, f - r)], fill=col, width=8)
    else:  # pole in front of the body
        w = rt.uniform(0.07, 0.14) * bw
        d.rectangle([x - w / 2, 0, x + w / 2, f], fill=col)


def _foreground(plan: Plan, shot: Shot, box: tuple[float, float, float, float], region: tuple[int, int, int, int]):
    """People and occluders on a transparent layer, shaded by the capture camera's light.

    Drawn once per shot and pasted onto every style camera's scene: CamStyle copies keep the content and the
    geometry and change only the camera style, as CycleGAN-made copies do.
    """
    cfg, cam = plan.config, plan.cameras[shot.cam]
    rt, rf = _rng(cfg.seed, *shot.track_key), _rng(cfg.seed, *shot.frame_key)
    # Light changes over the day: a brightness and a slight tint per pass, a flicker per frame (RGB gains).
    illum = np.exp(rt.normal(0, 0.12) + rt.normal(0, 0.035, 3) + rf.normal(0, 0.07))
    x0, y0, x1, y1 = region
    bw, bh = box[2], box[3]
    layer = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer, "RGBA")
    feet = _PERSON_Y + _BASE_HEIGHT / 2
    mode = int(rf.integers(3)) if shot.kind == DISTRACTOR else -1  # background, partial body, distant crowd
    crowd = _crowd(plan, shot, rt, rf, feet, extra=3 if mode == 2 else 0)
    main = None
    if shot.kind != DISTRACTOR:
        ident = plan.identities[shot.pid]
        main = (ident, shot.view, shot.phase, shot.x, feet, _BASE_HEIGHT * ident.height * math.exp(rf.normal(0, 0.01)))
    elif mode == 1:  # a body cut by the box edge
        s = rf.uniform(0.9, 1.6)
        dx = float(rf.choice([-1, 1]) * rf.uniform(0.45, 0.75) * bw)
        main = (sample_identity(rf, cfg), int(rf.integers(4)), rf.uniform(0, 2 * math.pi), shot.x + dx,
                feet + (s - 1) * 150 + rf.uniform(-0.2, 0.4) * bh, _BASE_HEIGHT * s)
    # Shadows first: PIL writes (does not blend) alpha inks on an RGBA layer, so nothing may be drawn under them.
    for t in crowd + ([main] if main else []):
        _shadow(d, t[-3] - x0, t[-2] - y0, t[-1])
    for _, ident, view, phase, x, f, h in crowd:
        draw_person(d, ident, view, phase, x - x0, f - y0, h)
    if main:
        ident, view, phase, x, f, h = main
        draw_person(d, ident, view, phase, x - x0, f - y0, h)
    if shot.kind != DISTRACTOR and rt.random() < cam.occlusion_prob:
        _draw_occluder(d, plan, shot, rt, rf, feet, bw, x0, y0, layer.size[0])
    return layer, illum


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Small Gaussian blur of an (H, W, C) array: a 3-tap kernel [t, 1-2t, t] per axis has variance 2t."""
    t = min(1 / 3, sigma * sigma / 2)
    for axis in (0, 1):
        x = np.moveaxis(a, axis, 0)
        out = (1 - 2 * t) * x
        out[1:] += t * x[:-1]
        out[:-1] += t * x[1:]
        out[0] += t * x[0]  # edge: repeat the border pixel
        out[-1] += t * x[-1]
        a = np.moveaxis(out, 0, axis)
    return a


def _style(a: np.ndarray, cam: Camera, illum: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The camera's optics and colour: blur, saturation, then per-channel white balance, gain, gamma, contrast, haze
    (one lookup table per channel), then sensor noise; `noise` is standard normal of a's shape."""
    if cam.blur > 0.05:
        a = _blur(a, cam.blur)
    lum = (a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114)[..., None]
    idx = np.clip(lum + cam.saturation * (a - lum), 0, 255).astype(np.uint8)
    v = np.arange(256, dtype=np.float32) / 255.0
    out = np.empty(a.shape, np.float32)
    for c in range(3):
        x = np.clip(v * (cam.white_balance[c] * cam.gain * illum[c]), 0, 1) ** cam.gamma
        x = np.clip(0.5 + cam.contrast * (x - 0.5), 0, 1)
        lut = 255.0 * (cam.haze + (1 - cam.haze) * x)
        out[..., c] = lut[idx[..., c]]
    out += (noise[..., :1] + 0.3 * noise) * (255.0 * cam.noise / 1.1)  # mostly luminance, as after JPEG
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _geometry(plan: Plan, shot: Shot) -> tuple[tuple[float, float, float, float], tuple[int, int, int, int]]:
    """Detector box (centre x, centre y, width, height) in scene pixels and the canvas region around it."""
    ident = plan.identities.get(shot.pid)
    hfac = ident.height if ident is not None else 1.0
    feet = _PERSON_Y + _BASE_HEIGHT / 2
    bw, bh = _BOX_W * shot.box_scale * hfac, _BOX_H * shot.box_scale * hfac
    if bh > _SCENE_H - 8:
        bw, bh = bw * (_SCENE_H - 8) / bh, _SCENE_H - 8.0
    bcx = float(np.clip(shot.x + shot.box_dx * bw, bw / 2 + 2, _SCENE_W - bw / 2 - 2))
    bcy = float(np.clip(feet - _BASE_HEIGHT * hfac / 2 + shot.box_dy * bh, bh / 2 + 2, _SCENE_H - bh / 2 - 2))
    m = 0.06 * bh + 6  # room for the rotation
    region = (max(0, int(bcx - bw / 2 - m)), max(0, int(bcy - bh / 2 - m)),
              min(_SCENE_W, int(math.ceil(bcx + bw / 2 + m))), min(_SCENE_H, int(math.ceil(bcy + bh / 2 + m))))
    return (bcx, bcy, bw, bh), region


def render_styles(plan: Plan, shot: Shot, styles: Sequence[int]) -> list[np.ndarray]:
    """Render `shot` in each style camera: (128, 64, 3) uint8 arrays, before JPEG encoding.

    The foreground (drawn at twice the resolution) and each camera's backdrop are mapped straight into the
    output box (scale + rotation about the box centre in one affine map) and composited there, premultiplied.
    """
    box, region = _geometry(plan, shot)
    layer, illum = _foreground(plan, shot, box, region)
    bcx, bcy, bw, bh = box
    x0, y0 = region[0], region[1]
    sx, sy = bw / _SS / IMAGE_W, bh / _SS / IMAGE_H  # canvas pixels (at 1x) per output pixel
    k = max(1, int(math.ceil(max(sx, sy) / 1.4)))  # oversample big boxes, then average down (no aliasing)
    th = math.radians(shot.angle)
    ca, sa = math.cos(th), math.sin(th)
    cx, cy = (bcx - x0) / _SS, (bcy - y0) / _SS
    w, h = IMAGE_W * k, IMAGE_H * k
    a, b, dd, e = ca * sx / k, -sa * sy / k, sa * sx / k, ca * sy / k
    data = (a, b, cx - a * w / 2 - b * h / 2, dd, e, cy - dd * w / 2 - e * h / 2)
    scene_data = (a, b, data[2] + x0 / _SS, dd, e, data[5] + y0 / _SS)
    fg = np.asarray(layer.convert("RGBa").reduce(_SS).transform((w, h), Image.AFFINE, data, resample=Image.BILINEAR),
                    np.float32)
    alpha = fg[..., 3:] / 255.0
    # Side light from the capture camera: people darken on the side away from it.
    px = (shot.x - bcx) / (bw / w) + w / 2
    xs = (np.arange(w, dtype=np.float32) - px) * (bw / w) / (0.05 * _BASE_HEIGHT)
    cam = plan.cameras[shot.cam]
    light = (1.0 - cam.shade / (1.0 + np.exp(np.sign(cam.light) * xs)))[None, :, None]
    # Folds and creases: a smooth brightness field over the people that changes from frame to frame.
    folds = Image.fromarray(plan.noise(shot.frame_key + (-1,))[:16, :8, 0].copy()).resize((w, h), Image.BICUBIC)
    fg_rgb = fg[..., :3] * light * (1.0 + 0.1 * np.asarray(folds, np.float32))[..., None]
    out = []
    for st in styles:
        sty = plan.cameras[st]
        bg = plan.scene(st).transform((w, h), Image.AFFINE, scene_data, resample=Image.BILINEAR,
                                      fillcolor=(120, 120, 120))
        arr = np.asarray(bg, np.float32) * (1.0 - alpha) + fg_rgb
        if k > 1 or sty.resolution < 1.0:  # average down, then (low-resolution camera) back up
            small = (max(8, round(IMAGE_W * sty.resolution)), max(16, round(IMAGE_H * sty.resolution)))
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize(small, Image.BILINEAR)
            arr = np.asarray(img.resize((IMAGE_W, IMAGE_H), Image.BILINEAR), np.float32)
        out.append(_style(arr, sty, illum, plan.noise(shot.frame_key + (st,))))
    return out


def render_shot(plan: Plan, shot: Shot) -> np.ndarray:
    """Render one shot (its own style camera) as a (128, 64, 3) uint8 array."""
    return render_styles(plan, shot, [shot.style])[0]


# ------------------------------------------------------------------------------------------------ generation
_PLAN: Plan | None = None  # per worker process


def _worker_init(cfg: SyntheticConfig) -> None:
    global _PLAN
    if _PLAN is None or _PLAN.config != cfg:  # inherited as is under fork; rebuilt under spawn
        _PLAN = build_plan(cfg)


def _render_units(args: tuple[str, list[tuple[Shot, list[tuple[int, str]]]]]) -> int:
    """Render and save a chunk of (shot, [(style camera, relative path)]) units; returns the image count."""
    out_dir, units = args
    plan, n = _PLAN, 0
    for shot, outputs in units:
        arrays = render_styles(plan, shot, [st for st, _ in outputs])
        for (st, rel), arr in zip(outputs, arrays, strict=True):
            Image.fromarray(arr).save(os.path.join(out_dir, rel), "JPEG", quality=plan.cameras[st].jpeg_quality)
            n += 1
    return n


def _units(plan: Plan) -> list[tuple[Shot, list[tuple[int, str]]]]:
    """A train shot and its CamStyle copies form one unit: the people are drawn once for all styles."""
    cs = plan.config.camstyle
    units = []
    for s in plan.splits["bounding_box_train"]:
        outs = [(s.cam, f"bounding_box_train/{s.relpath}")]
        if cs:
            outs += [(c2, f"bounding_box_train_camstyle/{camstyle_name(s.relpath, s.cam, c2)}")
                     for c2 in range(plan.config.num_cameras) if c2 != s.cam]
        units.append((s, outs))
    for folder in ("query", "bounding_box_test"):
        units += [(s, [(s.style, f"{folder}/{s.relpath}")]) for s in plan.splits[folder]]
    return units


def default_workers(n_images: int) -> int:
    """Two processes (this suite's CPU budget) once there is enough work to pay for the pool."""
    return 1 if n_images < 3000 else max(1, min(2, os.cpu_count() or 1))


def generate(cfg: SyntheticConfig, out_dir: str | Path, workers: int | None = None) -> dict:
    """Render the whole dataset into `out_dir` (which must exist) and return its `synthetic.json` record."""
    global _PLAN
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    plan = build_plan(cfg)
    for d in SPLIT_DIRS:
        if d != "bounding_box_train_camstyle" or cfg.camstyle:
            (out_dir / d).mkdir(parents=True, exist_ok=True)
    units = _units(plan)
    n_images = sum(len(o) for _, o in units)
    workers = default_workers(n_images) if workers is None else max(1, int(workers))
    chunks = [(str(out_dir), units[i : i + 48]) for i in range(0, len(units), 48)]
    _PLAN = plan  # forked workers inherit it; spawned ones rebuild it in _worker_init
    try:
        if workers == 1:
            written = sum(map(_render_units, chunks))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg,)) as pool:
                written = sum(pool.map(_render_units, chunks))
    finally:
        _PLAN = None  # free the scenes and the noise bank
    if written != n_images:
        raise RuntimeError(f"synthetic generation wrote {written} images, expected {n_images}")
    return {
        "generator": "mprd.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "config_hash": cfg.digest(),
        "config": cfg.to_json(),
        "counts": plan.counts(),
        "cameras": [dataclasses.asdict(c) for c in plan.cameras],
        "workers": workers,
        "generation_seconds": round(time.perf_counter() - t0, 2),
    }


def dataset_dir(root: str | Path, preset: str = "small", seed: int = 0) -> Path:
    """Where `ensure_synthetic` keeps a preset / seed: `root/synthetic-<preset>-seed<seed>/`."""
    return Path(root) / f"synthetic-{preset}-seed{int(seed)}"


def read_info(folder: str | Path) -> dict | None:
    """The `synthetic.json` of a generated copy, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def _is_current(folder: Path, cfg: SyntheticConfig) -> bool:
    info = read_info(folder)
    return bool(info) and info.get("config_hash") == cfg.digest() and info.get("generator_version") == GENERATOR_VERSION


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (flock); the lock file stays, so no process can lock a deleted inode."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: exclusive-create lock file
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                time.sleep(0.2)
        try:
            yield
        finally:
            os.close(fd)
            os.unlink(path)
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_synthetic(root: str | Path, preset: str = "small", seed: int = 0, overrides: dict | None = None,
                     *, workers: int | None = None) -> Path:
    """Return `root/synthetic-<preset>-seed<seed>/`, generating it first when absent or generated from another
    config (hash in `synthetic.json`).

    Generation writes into a temporary folder that is renamed into place only when complete, under a file lock,
    so concurrent callers never see a half-written copy. Only a previous generated copy (one with a
    `synthetic.json`) is ever replaced; any other existing folder raises a `DatasetError`.
    """
    cfg = make_config(preset, seed, overrides)
    target = dataset_dir(root, preset, seed)
    if _is_current(target, cfg):
        return target
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{target.name}.lock"):
        if _is_current(target, cfg):  # another process generated it while we waited
            return target
        if target.exists() and not (target / "synthetic.json").is_file():
            raise DatasetError(
                f"{target} exists but has no synthetic.json, so it is not a generated synthetic copy; refusing to "
                "replace it. Move it away or choose another root."
            )
        for stale in root.glob(f".{target.name}.tmp-*"):  # left by a killed generator (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            info = generate(cfg, tmp, workers)
            (tmp / "synthetic.json").write_text(json.dumps(info, indent=1, sort_keys=True))  # written last
            if target.exists():
                old = root / f".{target.name}.tmp-old-{os.getpid()}"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


# --------------------------------------------------------------------------------------------- contact sheet
def _label(img: Image.Image, xy: tuple[int, int], text: str, fill=(20, 20, 20)) -> None:
    ImageDraw.Draw(img).text(xy, text, fill=fill)


def contact_sheet(folder: str | Path, out_png: str | Path, n_ids: int = 5, real_dir: str | Path | None = None,
                  scale: int = 2) -> Path:
    """A PNG of a generated copy: a few train ids in every camera, one image with its CamStyle copies,
    distractors and junk, and (optionally) a row of real crops from `real_dir` for comparison."""
    folder = Path(folder)
    info = read_info(folder)
    if info is None:
        raise DatasetError(f"{folder} has no readable synthetic.json; expected a folder made by ensure_synthetic")
    n_cams = int(info["config"]["num_cameras"])
    train = sorted((folder / "bounding_box_train").glob("*.jpg"))
    by_id: dict[int, dict[int, Path]] = {}
    for p in train:
        m = MARKET_NAME_RE.search(p.name)
        by_id.setdefault(int(m.group(1)), {}).setdefault(int(m.group(2)), p)
    ids = sorted(by_id, key=lambda i: (-len(by_id[i]), i))[:n_ids]
    rows: list[tuple[str, list[Path | None]]] = [
        (f"id {i}", [by_id[i].get(c) for c in range(1, n_cams + 1)]) for i in ids
    ]
    first = by_id[ids[0]]
    src = next(iter(first.values()))
    cs = sorted((folder / "bounding_box_train_camstyle").glob(src.stem + "_fake_*.jpg"))
    style_row: list[Path | None] = [None] * n_cams
    style_row[int(MARKET_NAME_RE.search(src.name).group(2)) - 1] = src
    for p in cs:
        style_row[int(p.stem.rsplit("to", 1)[1]) - 1] = p
    rows.append(("CamStyle", style_row))
    gallery = sorted((folder / "bounding_box_test").glob("*.jpg"))
    for name, prefix in (("distractor 0", "0000_"), ("junk -1", "-1_")):
        found = [p for p in gallery if p.name.startswith(prefix)]
        rows.append((name, found[:: max(1, len(found) // n_cams)][:n_cams]))
    if real_dir is not None:
        real = sorted(Path(real_dir).glob("*.jpg"))
        rows.append(("real", real[:: max(1, len(real) // n_cams)][:n_cams]))
    lw, pad, head = 84, 4, 16
    cell_w, cell_h = IMAGE_W * scale, IMAGE_H * scale
    sheet = Image.new("RGB", (lw + n_cams * (cell_w + pad), head + len(rows) * (cell_h + pad)), (245, 245, 245))
    for c in range(n_cams):
        _label(sheet, (lw + c * (cell_w + pad) + cell_w // 2 - 8, 3), f"c{c + 1}")
    for r, (name, cells) in enumerate(rows):
        y = head + r * (cell_h + pad)
        _label(sheet, (4, y + cell_h // 2 - 6), name)
        for c, p in enumerate(cells[:n_cams]):
            if p is not None:
                im = Image.open(p).convert("RGB").resize((cell_w, cell_h), Image.NEAREST)
                sheet.paste(im, (lw + c * (cell_w + pad), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out_png, optimize=True)  # a 256-colour palette halves the PNG (noise compresses badly)
    return out_png


# ------------------------------------------------------------------------------------------------------- CLI
def _parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--override {text!r}: expected NAME=VALUE (VALUE as JSON, e.g. 0.3)")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mprd.data.synthetic", description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="data", help="folder that receives synthetic-<preset>-seed<seed>/")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--override", type=_parse_override, action="append", default=[], metavar="NAME=VALUE",
                    help="SyntheticConfig field to change (repeatable)")
    ap.add_argument("--workers", type=int, default=None, help="render processes (default: 2 for big presets)")
    ap.add_argument("--contact-sheet", default=None, metavar="PNG", help="also write a contact sheet here")
    ap.add_argument("--real-crops", default=None, metavar="DIR", help="real crops to show on the contact sheet")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    path = ensure_synthetic(args.root, args.preset, args.seed, dict(args.override), workers=args.workers)
    info = read_info(path)
    print(f"{path}  ({time.perf_counter() - t0:.1f} s; generation took {info['generation_seconds']} s "
          f"with {info['workers']} worker(s) when made)")
    print(json.dumps(info["counts"], sort_keys=True))
    if args.contact_sheet:
        print(contact_sheet(path, args.contact_sheet, real_dir=args.real_crops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
