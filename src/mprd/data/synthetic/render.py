"""Rendering: one planned shot on its camera's scene (crowd, occluders, detector box), and its CamStyle copies."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from mprd.data.synthetic.appearance import sample_identity
from mprd.data.synthetic.config import (
    _BASE_HEIGHT,
    _BOX_H,
    _BOX_W,
    _PERSON_Y,
    _SCENE_H,
    _SCENE_W,
    _SS,
    DISTRACTOR,
    IMAGE_H,
    IMAGE_W,
    _rng,
)
from mprd.data.synthetic.person import _mul, draw_person
from mprd.data.synthetic.plan import Plan, Shot
from mprd.data.synthetic.scenes import Camera, _jit


def _shadow(d: ImageDraw.ImageDraw, x: float, feet: float, h: float) -> None:
    d.ellipse([x - 0.17 * h, feet - 0.025 * h, x + 0.17 * h, feet + 0.02 * h], fill=(0, 0, 0, 70))


_VIDEO_JITTER = 0.15  # video frames: scale of the per-frame randomness (stills: 1)


def _crowd(plan: Plan, shot: Shot, rt, rf, feet: float, extra: int = 0) -> list[tuple]:
    """Background people: smaller (farther), standing between the horizon and the main person's feet."""
    cam = plan.cameras[shot.cam]
    j = _VIDEO_JITTER if shot.video else 1.0
    people = []
    for _ in range(int(rt.poisson(cam.crowd_rate)) + extra):
        s = rt.uniform(0.4, 0.85)
        ident = sample_identity(rt, plan.config)
        view, phase, dx = int(rt.integers(4)), rt.uniform(0, 2 * math.pi), rt.uniform(-1.4, 1.4) * _BOX_W
        phase = phase + rf.normal(0, 0.8 * j)  # (draw order kept: phase jitter, then position jitter)
        x = shot.x + shot.scene_dx + dx + rf.normal(0, 30 * j)  # video: they stand still while the person walks
        people.append((s, ident, view, phase, x,
                       cam.horizon + s * (feet - cam.horizon), _BASE_HEIGHT * s * ident.height))
    return sorted(people, key=lambda t: t[0])  # far ones first


def _draw_occluder(d, plan: Plan, shot: Shot, rt, rf, feet: float, bw: float, ox: float, oy: float, cw: int) -> None:
    """Another person passing in front, or an object (bollard, railing, bicycle, pole) cutting the body."""
    side = float(rt.choice([-1, 1]))
    if rt.random() < 0.5:
        s = rt.uniform(1.0, 1.12)
        ident = sample_identity(rt, plan.config)
        x = shot.x + shot.occluder_dx + side * rt.uniform(0.5, 0.85) * bw + rf.normal(0, 5)
        draw_person(d, ident, int(rt.integers(4)), rt.uniform(0, 2 * math.pi), x - ox, feet + (s - 1) * 150 - oy,
                    _BASE_HEIGHT * s * ident.height)
        return
    kind = int(rt.integers(4))
    col = _jit(rt, [(70, 70, 72), (150, 150, 145), (40, 60, 110), (120, 80, 50), (190, 60, 40)][int(rt.integers(5))])
    x, f = shot.x + shot.occluder_dx - ox + side * rt.uniform(0.15, 0.45) * bw, feet - oy + rt.uniform(5, 30)
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
    j = _VIDEO_JITTER if shot.video else 1.0
    illum = np.exp(rt.normal(0, 0.12) + rt.normal(0, 0.035, 3) + rf.normal(0, 0.07 * j))
    x0, y0, x1, y1 = region
    bw, bh = box[2], box[3]
    layer = Image.new("RGBA", (x1 - x0, y1 - y0), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer, "RGBA")
    feet = _PERSON_Y + _BASE_HEIGHT / 2
    rb = rt if shot.video else rf  # a video's distractor keeps its kind and body over the tracklet
    mode = int(rb.integers(3)) if shot.kind == DISTRACTOR else -1  # background, partial body, distant crowd
    crowd = _crowd(plan, shot, rt, rf, feet, extra=3 if mode == 2 else 0)
    main = None
    if shot.kind != DISTRACTOR:
        ident = plan.identities[shot.pid]
        main = (ident, shot.view, shot.phase, shot.x, feet, _BASE_HEIGHT * ident.height * math.exp(rf.normal(0, 0.01)))
    elif mode == 1:  # a body cut by the box edge
        s = rb.uniform(0.9, 1.6)
        dx = float(rb.choice([-1, 1]) * rb.uniform(0.45, 0.75) * bw)
        main = (sample_identity(rb, cfg), int(rb.integers(4)), rb.uniform(0, 2 * math.pi) + shot.video * shot.phase,
                shot.x + dx, feet + (s - 1) * 150 + rb.uniform(-0.2, 0.4) * bh, _BASE_HEIGHT * s)
    # Shadows first: PIL writes (does not blend) alpha inks on an RGBA layer, so nothing may be drawn under them.
    for t in crowd + ([main] if main else []):
        _shadow(d, t[-3] - x0, t[-2] - y0, t[-1])
    for _, ident, view, phase, x, f, h in crowd:
        draw_person(d, ident, view, phase, x - x0, f - y0, h)
    if main:
        ident, view, phase, x, f, h = main
        draw_person(d, ident, view, phase, x - x0, f - y0, h)
    if shot.kind != DISTRACTOR and (shot.occluded if shot.video else rt.random() < cam.occlusion_prob):
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
    fold = plan.noise(shot.frame_key + (-1,))[:16, :8, 0]
    if shot.video:  # mostly the tracklet's folds, slowly changing
        fold = 0.85 * plan.noise(shot.track_key + (-1,))[:16, :8, 0] + 0.5 * fold
    folds = Image.fromarray(fold.copy()).resize((w, h), Image.BICUBIC)
    fg_rgb = fg[..., :3] * light * (1.0 + 0.1 * np.asarray(folds, np.float32))[..., None]
    out = []
    source_backdrop = plan.config.camstyle_backdrop == "source"
    for st in styles:
        sty = plan.cameras[st]
        scene = plan.scene(shot.cam if source_backdrop else st)
        bg = scene.transform((w, h), Image.AFFINE, scene_data, resample=Image.BILINEAR, fillcolor=(120, 120, 120))
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
