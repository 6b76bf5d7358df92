"""After training: load a trained backbone and compute test features (shared by eval, visualize, extract, export).

A model comes from one of two files (`ckpt=PATH`):

* a training run's Lightning checkpoint (`<run>/checkpoints/last.ckpt`): the `backbone.*` entries of its
  state_dict. The run's resolved config (`<run>/.hydra/config.yaml`) supplies the architecture
  (`backbone.name`) and the input size (`data.height`, `data.width`) when present (`use_run_config=true`);
* an exported backbone (`mprd.export`): a plain state_dict plus `<file>.json` (architecture, input size,
  mean, std, the key of the head BN).

The test feature is pool-5 or the head BN output (`test.feature`), optionally averaged with the feature of
the horizontally flipped image (`test.flip`), then L2-normalised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from mprd.core.backbone import ReIDBackbone, build_backbone

log = logging.getLogger("mprd.inference")

EXPORT_FORMAT = "mprd-backbone-v1"
TEST_FEATURES = ("pool5", "bn")


@dataclass
class LoadedModel:
    """A backbone ready for inference and what it expects as input."""

    backbone: ReIDBackbone
    height: int
    width: int
    source: str  # 'checkpoint' | 'export'
    run_config: DictConfig | None = None

    @property
    def mean(self) -> tuple[float, ...]:
        return self.backbone.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.backbone.std


def ckpt_path(cfg: DictConfig) -> Path:
    """cfg.ckpt as an existing file; one clear error otherwise."""
    value = cfg.get("ckpt")
    if value in (None, "", "???"):
        raise ValueError("ckpt: required; expected ckpt=PATH to a run's checkpoints/last.ckpt or a .pth written by "
                         "mprd.export")
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise ValueError(f"ckpt={str(value)!r}: no such file (expected a run's checkpoints/last.ckpt or a .pth "
                         "written by mprd.export)")
    return path


def run_config_of(ckpt: Path) -> DictConfig | None:
    """The resolved config of the run a checkpoint belongs to (`<run>/.hydra/config.yaml`), or None."""
    for folder in (ckpt.parent.parent, ckpt.parent):
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return OmegaConf.load(candidate)
    return None


def export_meta_path(weights: Path) -> Path:
    """`backbone.pth` -> `backbone.json` (the preprocessing and architecture beside the weights)."""
    return weights.with_suffix(".json")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - Lightning checkpoints may hold plain Python objects; they are the user's own
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"ckpt={str(path)!r}: cannot read it with torch.load ({err})") from err


def _lightning_backbone_state(obj: Any, path: Path) -> dict[str, Tensor]:
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"ckpt={str(path)!r}: expected a Lightning checkpoint (a dict with 'state_dict') or a .pth "
                         f"written by mprd.export with {export_meta_path(path).name} beside it")
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    if not backbone:
        sample = ", ".join(list(state)[:3])
        raise ValueError(f"ckpt={str(path)!r}: its state_dict has no 'backbone.*' entries (keys start: {sample}, ...)")
    return backbone


def _load_strict(backbone: ReIDBackbone, state: dict[str, Tensor], path: Path, name: str) -> None:
    result = backbone.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"ckpt={str(path)!r}: its weights do not fit backbone.name={name!r} (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); set backbone.name to the architecture it was trained with")


def _shape_errors(backbone: ReIDBackbone, state: dict[str, Tensor], path: Path, name: str) -> None:
    own = backbone.state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise ValueError(f"ckpt={str(path)!r}: {key!r} has shape {tuple(tensor.shape)} but backbone.name={name!r} "
                             f"expects {tuple(own[key].shape)}; set backbone.name to the architecture it was trained "
                             "with")


def load_model(cfg: DictConfig) -> LoadedModel:
    """The backbone of `cfg.ckpt` (a run checkpoint or an exported .pth), in eval mode, on the CPU."""
    path = ckpt_path(cfg)
    meta_path = export_meta_path(path)
    if path.suffix != ".ckpt" and meta_path.is_file():
        return _load_export(path, meta_path, cfg)
    obj = _read_checkpoint(path)
    state = _lightning_backbone_state(obj, path)
    run_cfg = run_config_of(path) if cfg.get("use_run_config", True) else None
    name, height, width = str(cfg.backbone.name), int(cfg.data.height), int(cfg.data.width)
    if run_cfg is not None:
        run_name = str(run_cfg.backbone.name)
        run_size = (int(run_cfg.data.height), int(run_cfg.data.width))
        if (run_name, *run_size) != (name, height, width):
            log.info("using the run's backbone %s at %dx%d (from %s; use_run_config=false to override)",
                     run_name, *run_size, path.parent.parent / ".hydra")
        name, (height, width) = run_name, run_size
    backbone = build_backbone(name, pretrained="none", test_feature=_test_feature(cfg, run_cfg))
    _shape_errors(backbone, state, path, name)
    _load_strict(backbone, state, path, name)
    return LoadedModel(backbone.eval(), height, width, "checkpoint", run_cfg)


def _test_feature(cfg: DictConfig, run_cfg: DictConfig | None) -> str:
    """test.feature, else the run's backbone.test_feature, else the composed backbone.test_feature."""
    value = (cfg.get("test") or {}).get("feature")
    if value is None:
        value = (run_cfg or cfg).backbone.get("test_feature", "pool5")
    if value not in TEST_FEATURES:
        raise ValueError(f"test.feature={value!r}: expected 'pool5', 'bn' or null (the run's choice)")
    return str(value)


def _load_export(path: Path, meta_path: Path, cfg: DictConfig) -> LoadedModel:
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{meta_path}: cannot read the export's JSON ({err})") from err
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {EXPORT_FORMAT!r} (written by "
                         "mprd.export)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    head = meta["head_bn_key"] + "."
    mapped = {("bn." + k[len(head):]) if k.startswith(head) else ("body." + k): v for k, v in state.items()}
    backbone = build_backbone(meta["backbone"], pretrained="none",
                              test_feature=_test_feature(cfg, OmegaConf.create({"backbone": meta})))
    _shape_errors(backbone, mapped, path, meta["backbone"])
    _load_strict(backbone, mapped, path, meta["backbone"])
    backbone.mean, backbone.std = tuple(meta["mean"]), tuple(meta["std"])
    return LoadedModel(backbone.eval(), int(meta["height"]), int(meta["width"]), "export")


def pick_device(value: str | None) -> torch.device:
    """'auto' (CUDA when available) | 'cpu' | 'cuda' | 'cuda:N'."""
    value = str(value or "auto")
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except RuntimeError as err:
        raise ValueError(f"device={value!r}: expected 'auto', 'cpu' or 'cuda[:N]'") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={value!r}: CUDA is not available on this machine (use device=cpu or auto)")
    return device


def features_of(backbone: ReIDBackbone, images: Tensor, flip: bool = False) -> Tensor:
    """L2-normalised test features of a normalised image batch; `flip` averages with the mirrored image."""
    pick = 0 if backbone.test_feature == "pool5" else 1
    feats = backbone.forward_features(images)[pick]
    if flip:
        feats = feats + backbone.forward_features(torch.flip(images, dims=[3]))[pick]
    return F.normalize(feats, dim=1)


@torch.no_grad()
def extract_loader(backbone: ReIDBackbone, batches: Iterable[dict[str, Tensor]], n: int, device: torch.device,
                   flip: bool = False) -> Tensor:
    """(n, d) features of every item of a feature loader (`{"image", "index"}` batches), in index order."""
    backbone.to(device).eval()
    out = torch.empty(n, backbone.out_dim)
    for batch in batches:
        feats = features_of(backbone, batch["image"].to(device), flip).float().cpu()
        out[torch.as_tensor(batch["index"]).long()] = feats
    return out
