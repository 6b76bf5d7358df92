"""Export a trained backbone: `python -m mprd.export ckpt=PATH out=backbone.pth [torchscript=true]` (Hydra).

Writes, without overwriting anything that exists:

* `backbone.pth`: a plain state_dict that loads into the same torchvision / timm architecture **without
  this package**: the body's own keys (torchvision ResNet without `fc`; timm with `num_classes=0`) plus the
  appended head BatchNorm1d stored under the architecture's classifier attribute (`fc` for torchvision
  ResNets, timm's `pretrained_cfg["classifier"]`, e.g. `classifier` for EfficientNet). Replacing that
  classifier by a BatchNorm1d(d) makes `model(x)` return the BN feature; pool-5 is the input of that layer;
* `backbone.json`: the architecture, feature dimension, test feature, input size, mean and std, and the
  lines of Python that load the weights (also read back by `mprd.eval ckpt=backbone.pth`);
* with `torchscript=true`, `backbone.ts`: a traced module returning the L2-normalised test feature.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mprd.core.backbone import ReIDBackbone
from mprd.inference import EXPORT_FORMAT, LoadedModel, export_meta_path, load_model

log = logging.getLogger("mprd.export")


def head_key(backbone: ReIDBackbone) -> str:
    """The classifier attribute of the architecture, where the head BN goes (a top-level attribute)."""
    if not backbone.name.startswith("timm:"):
        return "fc"
    name = str(getattr(backbone.body, "pretrained_cfg", {}).get("classifier") or "")
    if not name or "." in name:
        raise ValueError(f"backbone {backbone.name!r}: timm names no top-level classifier attribute ({name!r}); "
                         "export supports architectures whose classifier is a direct attribute")
    return name


def plain_state_dict(backbone: ReIDBackbone) -> dict[str, Tensor]:
    """Body keys as the library names them, plus the head BN under `head_key`."""
    key = head_key(backbone)
    body = {k: v.detach().clone() for k, v in backbone.body.state_dict().items()}
    clash = [k for k in body if k.split(".")[0] == key]
    if clash:
        raise ValueError(f"backbone {backbone.name!r}: its body already has {clash[0]!r}; cannot store the head BN "
                         f"under {key!r}")
    return {**body, **{f"{key}.{k}": v.detach().clone() for k, v in backbone.bn.state_dict().items()}}


def loading_snippet(backbone: ReIDBackbone, key: str, weights: str) -> str:
    """Python that rebuilds the exported model with torchvision / timm alone."""
    if backbone.name.startswith("timm:"):
        build = f"model = timm.create_model({backbone.name[5:]!r}, pretrained=False, num_classes=0)"
        imports = "import timm, torch"
    else:
        build = f"model = torchvision.models.{backbone.name}()"
        imports = "import torch, torchvision"
    return "\n".join([
        imports,
        build,
        f"model.{key} = torch.nn.BatchNorm1d({backbone.out_dim})  # the re-ID head BN",
        f"model.load_state_dict(torch.load({weights!r}, map_location='cpu'))",
        "model.eval()  # model(x) = BN feature; pool-5 = the input of model." + key,
    ])


def export_meta(model: LoadedModel, key: str, weights: Path) -> dict[str, Any]:
    b = model.backbone
    return {
        "format": EXPORT_FORMAT,
        "backbone": b.name,
        "library": "timm" if b.name.startswith("timm:") else "torchvision",
        "architecture": b.name[5:] if b.name.startswith("timm:") else b.name,
        "head_bn_key": key,
        "dim": b.out_dim,
        "test_feature": b.test_feature,
        "height": model.height,
        "width": model.width,
        "mean": list(b.mean),
        "std": list(b.std),
        "input": "RGB, resized to height x width, scaled to [0, 1], normalised by mean/std",
        "load": loading_snippet(b, key, weights.name),
    }


class _Extractor(nn.Module):
    def __init__(self, backbone: ReIDBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.extract(x)


def check_out(out: Any, torchscript: bool) -> list[Path]:
    """The files export will write; an error naming `out` when it is unset, misnamed or already present."""
    if out in (None, ""):
        raise ValueError("out: required; expected out=PATH.pth (the JSON is written beside it)")
    path = Path(str(out)).expanduser()
    if path.suffix not in (".pth", ".pt"):
        raise ValueError(f"out={str(out)!r}: expected a .pth or .pt file name")
    targets = [path, export_meta_path(path)] + ([path.with_suffix(".ts")] if torchscript else [])
    present = [str(p) for p in targets if p.exists()]
    if present:
        raise ValueError(f"out={str(out)!r}: {', '.join(present)} already exist(s); choose another name (nothing "
                         "is overwritten)")
    return targets


def export(cfg: DictConfig) -> list[Path]:
    """Write the files of the module docstring; returns their paths."""
    targets = check_out(cfg.get("out"), bool(cfg.get("torchscript")))
    model = load_model(cfg)
    key = head_key(model.backbone)
    state = plain_state_dict(model.backbone)
    targets[0].parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, targets[0])
    targets[1].write_text(json.dumps(export_meta(model, key, targets[0]), indent=2))
    if cfg.get("torchscript"):
        example = torch.zeros(1, 3, model.height, model.width)
        with warnings.catch_warnings():  # the shape check in forward_features is constant for a fixed input size
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(_Extractor(model.backbone).eval(), example)
        traced.save(str(targets[2]))
    for path in targets:
        log.info("wrote %s", path)
    return targets


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    for path in export(cfg):
        print(path)


if __name__ == "__main__":
    main()
