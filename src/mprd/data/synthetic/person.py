"""People: drawing one identity (head, hair or hat, torso pattern, arms, legs, shoes, bag) in a pose and view."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import ImageDraw

from mprd.data.synthetic.appearance import Identity
from mprd.data.synthetic.config import BACK, FRONT, LEFT, RIGHT


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
