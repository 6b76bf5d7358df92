"""Appearance: clothing, hair, skin and bag palettes, and the identities drawn from them."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mprd.data.synthetic.config import SyntheticConfig

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
