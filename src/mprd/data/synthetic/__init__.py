"""Synthetic person re-ID benchmark in the exact Market-1501 layout (the suite's embedded default dataset).

Real re-ID data cannot be downloaded here, so this package renders one: drawn people (head, hair or hat, torso
with a pattern, arms, legs, shoes, bag) walking past six cameras, each with its own scene, illumination, white
balance, blur, noise, resolution, viewpoint distribution and detector habits. The split rules and the per-id
statistics follow Market-1501 (Zheng et al., ICCV 2015), and `bounding_box_train_camstyle/` holds CamStyle
copies (Zhong et al., CVPR 2018): the same person, pose and frame rendered in every other camera's style.
What is modelled, and why, is documented in `docs/synthetic.md`.

Everything is deterministic from the seed: each image draws its randomness from a `SeedSequence` keyed by
(seed, purpose, ids), so the bytes do not depend on the number of worker processes.

Modules: `config` (SyntheticConfig, presets), `appearance` (palettes, identities), `scenes` (cameras and their
backdrops), `person` (drawing a person), `plan` (the file plan), `render` (one shot and its CamStyle copies),
`build` (a dataset folder and its cached copy), `contact` (contact sheets), `__main__` (the CLI), and `video`
(the `video-tiny` / `video-small` presets: tracklets in the MARS layout with its `info/` files).
"""

from mprd.data.synthetic.appearance import Identity, sample_identity
from mprd.data.synthetic.build import dataset_dir, default_workers, ensure_synthetic, generate, read_info
from mprd.data.synthetic.config import (
    GENERATOR_VERSION,
    IMAGE_H,
    IMAGE_W,
    MARKET_NAME_RE,
    PRESETS,
    SPLIT_DIRS,
    VIDEO_PRESETS,
    SyntheticConfig,
    VideoConfig,
    make_config,
)
from mprd.data.synthetic.contact import contact_sheet
from mprd.data.synthetic.person import draw_person
from mprd.data.synthetic.plan import Plan, Shot, build_plan, camstyle_name
from mprd.data.synthetic.render import render_shot, render_styles
from mprd.data.synthetic.scenes import Camera, sample_cameras
from mprd.data.synthetic.video import MARS_NAME_RE, Tracklet, VideoPlan, build_video_plan, mars_name

__all__ = [
    "GENERATOR_VERSION", "IMAGE_H", "IMAGE_W", "MARKET_NAME_RE", "MARS_NAME_RE", "PRESETS", "SPLIT_DIRS",
    "VIDEO_PRESETS", "Camera", "Identity", "Plan", "Shot", "SyntheticConfig", "Tracklet", "VideoConfig", "VideoPlan",
    "build_plan", "build_video_plan", "camstyle_name", "contact_sheet", "dataset_dir", "default_workers",
    "draw_person", "ensure_synthetic", "generate", "make_config", "mars_name", "read_info", "render_shot",
    "render_styles", "sample_cameras", "sample_identity",
]
