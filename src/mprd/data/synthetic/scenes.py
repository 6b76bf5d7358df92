"""Cameras and scenes: per-camera backdrop, illumination, colour cast, blur, noise and viewpoint habits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from mprd.data.synthetic.config import _K_CAMERAS, _K_SCENE, _SCENE_H, _SCENE_W, SyntheticConfig, _rng

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
