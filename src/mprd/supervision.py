"""What a run uses besides the unlabeled training images, derived from its composed config.

The reports' "Uses besides images" column (MPRD Table 3 mixes settings: MPRD uses labeled meta IDs, SSLR
camera IDs through CCE, MLCR and MPRD CamStyle, UGA intra-camera labels). `mprd.train` stores the result in
`metrics.json` (`uses`); `mprd.report` re-derives it from a run's `.hydra/config.yaml` when an older
`metrics.json` lacks the field. Evaluation-time camera filtering (the standard protocol) and the diagnostics
(pseudo-label precision against the hidden identities) are not training signals and are not listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NONE = "none"
CAMSTYLE = "CamStyle (camera IDs)"
CAMSTYLE_AUTO = "CamStyle if the dataset has it (auto)"


def _get(cfg: Any, dotted: str, default: Any = None) -> Any:
    """`cfg.a.b` for a DictConfig or a plain mapping; `default` when a level is missing or null."""
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) and not hasattr(node, "get"):
            return default
        node = node.get(part)
        if node is None:
            return default
    return node


def camstyle_setting(cfg: Any) -> bool | None:
    """data.camstyle as a stored config says it, without looking at the disk (None: `auto` on a real dataset).

    Mirrors `mprd.train.resolve_camstyle`: method.camstyle=false (MPRD#, SSLR, UGA) wins; the synthetic
    generator always renders CamStyle copies; video datasets have none.
    """
    if _get(cfg, "method.camstyle", True) is False:
        return False
    value = _get(cfg, "data.camstyle", "auto")
    if str(value).lower() != "auto":
        return bool(value)
    if is_video_config(cfg):
        return False  # no video dataset has CamStyle copies
    return True if _get(cfg, "dataset.name") == "synthetic" else None


def _meta_ids(n: int) -> str:
    return f"{n} meta ID{'' if n == 1 else 's'}"


def _sslr_iterations(cfg: Any) -> int:
    """S of SSLR's schedule: method.schedule.iterations, or (max_epochs - stage0) // epochs_per_iteration."""
    schedule = _get(cfg, "method.schedule", {})
    if schedule.get("iterations") is not None:
        return int(schedule["iterations"])
    rest = int(_get(cfg, "max_epochs", 0)) - int(schedule.get("stage0_epochs", 0))
    return max(rest, 0) // max(int(schedule.get("epochs_per_iteration", 1)), 1)


UGA_VIDEO_PICK = "identities (one tracklet kept per person and camera)"
UGA_VIDEO_ALL = "real tracklets (every tracklet its own class)"


def is_video_config(cfg: Any) -> bool:
    """The run trains on a video dataset (its config names the video data module)."""
    return str(_get(cfg, "dataset.datamodule", "")).endswith("VideoDataModule")


def supervision_label(cfg: Any) -> str | None:
    """`method.supervision` (UGA's "intra-camera labels" on images); on video UGA learns from real tracklets,
    and what it reads is how they are chosen (`method.video.tracklets`): the paper's MARS protocol keeps one per
    (person, camera), picked with the identities; `all` reads none."""
    if _get(cfg, "method.family") == "uga" and is_video_config(cfg):
        return UGA_VIDEO_PICK if _get(cfg, "method.video.tracklets", "one_per_camera") == "one_per_camera" \
            else UGA_VIDEO_ALL
    value = _get(cfg, "method.supervision")
    return str(value) if value else None


def uses_besides_images(cfg: Any, camstyle: bool | None = None) -> list[str]:
    """The training signals a run uses besides unlabeled images, e.g. `["5 meta IDs", "CamStyle (camera IDs)"]`.

    - `super`: the training identity labels (Table 1's upper bound); `super_knn`: the same, read only for
      each image's K memory neighbours (our ceiling row for neighbour filters);
    - MPRD rows: `method.meta.num_ids` labeled meta identities (GCN training, §3.3), none for MPRD(0id);
    - MLCR(+5id): the same meta identities as ground-truth multi-labels (`method.meta_ground_truth`);
    - SSLR: camera IDs through CCE (Eq. 6) when λ_c > 0 and at least one iteration runs;
    - UGA: `method.supervision` (intra-camera labels) and camera IDs (one classifier per camera);
    - CamStyle (built from camera IDs: one style per camera) when the run draws CamStyle copies.
    `camstyle`: what the run actually used (`resolve_camstyle`); None reads it from the config
    (`camstyle_setting`), which cannot tell `auto` on a real dataset and says so.
    Returns `["none"]` when the run uses nothing else.
    """
    method = _get(cfg, "method", {})
    family = method.get("family") or "memory"
    name = str(method.get("name", ""))
    uses: list[str] = []
    if name == "super":
        uses.append("identity labels (all)")
    elif name == "super_knn":
        uses.append(f"identity labels (within the {int(_get(cfg, 'method.generator.k', 8))}-NN)")
    num_ids = int(_get(cfg, "method.meta.num_ids", 0))  # MPRD's labeled meta identities (only its rows have meta)
    if num_ids > 0:
        uses.append(_meta_ids(num_ids))
    meta_gt = _get(cfg, "method.meta_ground_truth")
    if meta_gt and int(meta_gt.get("num_ids", 0)) > 0:
        uses.append(_meta_ids(int(meta_gt["num_ids"])))
    label = supervision_label(cfg)
    if label:
        uses.append(label)
    if family == "uga":
        uses.append("camera IDs (per-camera classifiers)")
    if family == "sslr" and float(_get(cfg, "method.similarity.lambda_c", 0.0)) > 0 and _sslr_iterations(cfg) > 0:
        uses.append("camera IDs (CCE)")
    camstyle = camstyle_setting(cfg) if camstyle is None else camstyle
    if camstyle is None:
        uses.append(CAMSTYLE_AUTO)
    elif camstyle:
        uses.append(CAMSTYLE)
    return uses or [NONE]


def describe(uses: list[str] | str | None) -> str:
    """One cell of the reports: the items joined by " + "; "—" when unknown."""
    if uses is None:
        return "—"
    return uses if isinstance(uses, str) else " + ".join(uses)
