"""Transforms (per-image v2 and BatchAugment) and ReIDDataModule on tiny generated image trees."""

from __future__ import annotations

import itertools
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from mprd.data.datamodule import EpochShuffle, ReIDDataModule
from mprd.data.records import DatasetError, ImageRecord, ReIDData
from mprd.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    batch_color_op,
    batch_erase,
    batch_gaussian_blur,
    batch_geometric,
    build_perturbed_transform,
    build_test_transform,
    build_train_transform,
)

H, W = 32, 16  # target size; files are stored at 40x20 so every path resizes
STORED = (20, 40)  # PIL (width, height)
NO_AUG = {"pad": 0, "rotation": 0.0, "jitter": (0, 0, 0, 0), "erasing_p": 0.0, "flip_p": 0.0}
# well separated constant colours (JPEG keeps a flat colour within a few levels)
COLOURS = list(itertools.product((40, 120, 200), repeat=3))
MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Data work runs single-threaded (as in DataLoader workers); tiny ops with 2 OpenMP threads on a busy
    2-core machine spend most of their time waiting at barriers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _save(path: Path, colour: tuple[int, int, int] | None, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if colour is None:  # textured image
        arr = np.random.default_rng(seed).integers(0, 256, (STORED[1], STORED[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(path, quality=95)
    else:
        Image.new("RGB", STORED, colour).save(path, quality=95)
    return str(path)


def make_data(root: Path, *, textured: bool = False, camstyle: dict[int, int] | None = None) -> ReIDData:
    """7 train (pids 1-3, 2 cameras), 2 query, 3 gallery images; CamStyle copies per `camstyle` counts."""
    colours = iter(COLOURS)

    def split(folder: str, spec: list[tuple[int, int]]) -> list[ImageRecord]:
        out = []
        for i, (pid, cam) in enumerate(spec):
            name = f"{pid:04d}_c{cam + 1}s1_{i:06d}_00.jpg"
            colour = None if textured else next(colours)
            out.append(ImageRecord(_save(root / folder / name, colour, seed=hash(name) % 1000), pid, cam, i))
        return out

    train = split("bounding_box_train", [(1, 0), (1, 1), (2, 0), (2, 1), (3, 0), (3, 1), (3, 0)])
    query = split("query", [(4, 0), (5, 0)])
    gallery = split("bounding_box_test", [(4, 1), (5, 1), (0, 0)])
    styles: dict[int, list[str]] = {}
    for i, count in (camstyle or {}).items():
        stem = Path(train[i].path).stem
        src = train[i].camid + 1
        targets = [c for c in range(1, 7) if c != src][:count]  # renders into other cameras' styles
        styles[i] = [_save(root / "bounding_box_train_camstyle" / f"{stem}_fake_{src}to{c}.jpg", next(colours))
                     for c in targets]
    return ReIDData("tiny", str(root), train, query, gallery, styles)


def _module(data: ReIDData, **kw) -> ReIDDataModule:
    args = {"height": H, "width": W, "batch_size": 3, "test_batch_size": 4, "num_workers": 0, "seed": 0, **kw}
    module = ReIDDataModule.from_data(data, **args)
    module.setup()
    return module


def _denorm(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def _colour_of(x: torch.Tensor) -> tuple[float, ...]:
    return tuple((_denorm(x).mean(dim=(1, 2)) * 255).tolist())


def _nearest_file(colour: tuple[float, ...], files: dict[str, tuple[int, int, int]]) -> str:
    return min(files, key=lambda f: sum((a - b) ** 2 for a, b in zip(colour, files[f], strict=True)))


def _colour_map(data: ReIDData) -> dict[str, tuple[int, int, int]]:
    paths = [r.path for r in data.train + data.query + data.gallery] + [p for v in data.camstyle.values() for p in v]
    return {p: tuple(np.asarray(Image.open(p).convert("RGB"))[STORED[1] // 2, STORED[0] // 2].tolist())
            for p in paths}


# ----------------------------------------------------------------------------------------------------------
# transforms
# ----------------------------------------------------------------------------------------------------------
def test_transforms_accept_pil_and_tensor_and_output_float_chw(tmp_path):
    pil = Image.open(_save(tmp_path / "a.jpg", None)).convert("RGB")
    tensor = F.pil_to_tensor(pil)
    for build in (build_train_transform, build_perturbed_transform, build_test_transform):
        t = build(H, W, IMAGENET_MEAN, IMAGENET_STD)
        for inp in (pil, tensor):
            out = t(inp)
            assert type(out) is torch.Tensor and out.dtype == torch.float32 and out.shape == (3, H, W)
    test = build_test_transform(H, W)
    assert torch.equal(test(pil), test(tensor))  # PIL is converted first, so both take the tensor path


def test_test_transform_normalises_constant_image():
    c = torch.tensor([10, 128, 250], dtype=torch.uint8)
    image = c.view(3, 1, 1).expand(3, 50, 30).clone()  # not the target size: resize of a constant stays constant
    out = build_test_transform(H, W)(image)
    expected = (c.float() / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert out.shape == (3, H, W)
    assert torch.allclose(out, expected.view(3, 1, 1).expand(3, H, W), atol=1e-6)
    # also on a batch (used for cached splits)
    batch = build_test_transform(H, W)(image.unsqueeze(0).repeat(2, 1, 1, 1))
    assert torch.allclose(batch, out.unsqueeze(0).expand(2, 3, H, W), atol=1e-6)


@pytest.mark.parametrize("flip,dx,dy,angle", [(False, 0, 0, 7.3), (True, 3, -2, -10.0), (False, -10, 10, 4.0),
                                              (True, 10, 0, 0.0), (False, 0, 0, 0.0)])
def test_batch_geometric_equals_torchvision_flip_crop_rotate(flip, dx, dy, angle):
    torch.manual_seed(0)
    img = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
    ref = F.horizontal_flip(img) if flip else img
    ref = F.crop(F.pad(ref, [10], fill=0), 10 + dy, 10 + dx, H, W)
    ref = F.rotate(ref, angle, interpolation=F.InterpolationMode.NEAREST, fill=0)
    out = batch_geometric(img, torch.tensor([flip]), torch.tensor([dx]), torch.tensor([dy]), torch.tensor([angle]))
    assert torch.equal(out, ref)


def test_batch_colour_blur_match_torchvision_kernels():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 12, 8)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0])
    ref = torch.stack([F.gaussian_blur(x[i], [5, 5], [float(sigma[i])] * 2) for i in range(4)])
    assert torch.allclose(batch_gaussian_blur(x, 5, sigma), ref, atol=1e-6)
    kernels = {0: F.adjust_brightness, 1: F.adjust_contrast, 2: F.adjust_saturation, 3: F.adjust_hue}
    for op, kernel in kernels.items():
        factor = torch.tensor([0.1, -0.2, 0.0, 0.3]) if op == 3 else torch.tensor([0.8, 1.1, 1.25, 0.6])
        ref = torch.stack([kernel(x[i], float(factor[i])) for i in range(4)])
        assert torch.allclose(batch_color_op(x, op, factor), ref, atol=1e-6), op


def test_batch_augment_equals_per_image_pipeline_for_fixed_parameters():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (5, 3, 40, 20), dtype=torch.uint8)
    fixed = {"pad": 0, "rotation": 0.0, "flip_p": 1.0, "jitter": (0, 0, (1.3, 1.3), 0), "erasing_p": 0.0}
    per_image = build_train_transform(H, W, **fixed)
    expected = torch.stack([per_image(im) for im in images])
    assert torch.allclose(BatchAugment(H, W, **fixed)(images), expected, atol=1e-5)


def test_batch_erasing_rate_and_rectangles():
    torch.manual_seed(1)
    n = 400
    images = torch.full((n, 3, H, W), 255, dtype=torch.uint8)  # normalised value > 0 everywhere
    out = BatchAugment(H, W, **{**NO_AUG, "erasing_p": 0.5})(images)
    zero = (out == 0).all(dim=1)
    erased = zero.flatten(1).any(1)
    assert 0.4 < erased.float().mean() < 0.6  # p = 0.5, n = 400: ±4 sigma
    for mask in zero[erased][:50]:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all() and box.sum() == mask.sum()  # one filled rectangle
        assert 0.01 <= mask.float().mean() <= 0.4  # area fraction in ~[0.02, 0.33] up to rounding
    direct = batch_erase(torch.ones(1, 1, 4, 4), torch.tensor([1]), torch.tensor([2]), torch.tensor([2]),
                         torch.tensor([1]))
    assert direct[0, 0].eq(0).nonzero().tolist() == [[1, 2], [2, 2]]


def test_bad_transform_settings_raise():
    with pytest.raises(ValueError, match="erasing_p"):
        build_train_transform(H, W, erasing_p=1.5)
    with pytest.raises(ValueError, match="blur_kernel"):
        build_perturbed_transform(H, W, blur_kernel=4)
    with pytest.raises(ValueError, match="jitter"):
        BatchAugment(H, W, jitter=(0.2, 0.2))
    with pytest.raises(ValueError, match="augment: unknown key"):
        ReIDDataModule(augment={"rotate": 5})


# ----------------------------------------------------------------------------------------------------------
# data module
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [False, True])
def test_train_items_have_no_pid_and_cover_each_slot_once(tmp_path, batched):
    data = make_data(tmp_path)
    module = _module(data, drop_last=False, batched_augment=batched)
    batches = list(module.train_dataloader())
    assert all(set(b) == {"image", "index", "camid"} for b in batches)  # no "pid"
    assert batches[0]["image"].shape == (3, 3, H, W) and batches[0]["image"].dtype == torch.float32
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(7))
    camid = torch.cat([b["camid"] for b in batches])
    assert camid.tolist() == [data.train[i].camid for i in index.tolist()]
    module.drop_last = True
    kept = torch.cat([b["index"] for b in module.train_dataloader()])
    assert len(kept) == 6 and len(set(kept.tolist())) == 6 and module.steps_per_epoch() == 2


def test_shuffle_is_seeded_per_epoch_and_same_with_workers(tmp_path):
    data = make_data(tmp_path)

    def orders(seed: int, workers: int, batched: bool = False) -> list[list[int]]:
        loader = _module(data, seed=seed, num_workers=workers, drop_last=False, batched_augment=batched
                         ).train_dataloader()
        return [torch.cat([b["index"] for b in loader]).tolist() for _ in range(3)]

    base = orders(0, 0)
    assert all(sorted(o) == list(range(7)) for o in base)
    assert len({tuple(o) for o in base}) > 1  # epochs differ
    assert orders(0, 1) == base  # a worker process changes nothing about the order
    assert orders(0, 1, batched=True) == base
    assert orders(0, 0) == base and orders(1, 0) != base
    sampler = EpochShuffle(7, seed=0)
    sampler.set_epoch(2)
    assert list(sampler) == base[2]  # epoch e's permutation depends only on (seed, e)


@pytest.mark.parametrize("batched", [False, True])
def test_camstyle_draws_every_variant_and_only_own_copies(tmp_path, batched):
    data = make_data(tmp_path, camstyle={0: 2, 3: 1})
    colours = _colour_map(data)
    module = _module(data, camstyle=True, augment=NO_AUG, drop_last=False, batched_augment=batched)
    torch.manual_seed(0)
    seen: dict[int, Counter] = {i: Counter() for i in range(7)}
    for _ in range(60):
        for b in module.train_dataloader():
            for img, i in zip(b["image"], b["index"].tolist(), strict=True):
                seen[i][_nearest_file(_colour_of(img), colours)] += 1
    for i in range(7):
        allowed = [data.train[i].path] + data.camstyle.get(i, [])
        assert set(seen[i]) == set(allowed)  # all variants drawn, nothing from another slot
        freq = np.array([seen[i][p] for p in allowed]) / 60
        assert np.all(np.abs(freq - 1 / len(allowed)) < 0.22)  # uniform: 60 draws, about ±3.5 sigma


def test_camstyle_requested_but_missing_raises(tmp_path):
    with pytest.raises(DatasetError, match="camstyle=True"):
        _module(make_data(tmp_path), camstyle=True)


@pytest.mark.parametrize("batched", [False, True])
def test_perturbed_view_is_grayscale_sometimes_and_differs_from_test_view(tmp_path, batched):
    data = make_data(tmp_path)  # flat colours with R != G != B for most images
    module = _module(data, augment=NO_AUG, batched_augment=batched)
    torch.manual_seed(0)
    colours = _colour_map(data)
    rows = [i for i in range(7) if len(set(colours[data.train[i].path])) == 3]
    gray, total = 0, 0
    loader = module.perturbed_dataloader(rows, batch_size=4)
    for _ in range(30):
        for b in loader:
            assert set(b) == {"image", "index"}
            assert b["index"].tolist() == rows[: len(b["index"])] or b["index"].tolist() == rows[4:]
            rgb = _denorm(b["image"])
            gray += int(((rgb.amax(1) - rgb.amin(1)).flatten(1).amax(1) < 1e-4).sum())
            total += len(b["index"])
    assert 0.09 < gray / total < 0.31  # p = 0.2 over 180 views: about ±3.7 sigma
    textured = make_data(tmp_path / "t", textured=True)
    module = _module(textured, batched_augment=batched)  # default augmentation + perturbation
    test_view = next(iter(module.feature_dataloader("train", batch_size=7)))["image"]
    for _ in range(3):
        view = next(iter(module.perturbed_dataloader(batch_size=7)))
        assert view["index"].tolist() == list(range(7))
        assert ((view["image"] - test_view).abs().flatten(1).amax(1) > 0.1).all()


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_feature_loader_follows_record_order_and_cache_matches_disk(tmp_path, split):
    data = make_data(tmp_path, textured=True)
    on_disk = _module(data, in_memory=False)
    cached = _module(data, in_memory=True)
    records = getattr(data, split)
    outs = []
    for module in (on_disk, cached):
        batches = list(module.feature_dataloader(split))
        assert all(set(b) == {"image", "index"} for b in batches)
        assert torch.cat([b["index"] for b in batches]).tolist() == [r.index for r in records]
        outs.append(torch.cat([b["image"] for b in batches]))
    assert torch.equal(outs[0], outs[1])  # identical bits: both resize the same uint8 tensor the same way
    test = build_test_transform(H, W)
    expected = torch.stack([test(Image.open(r.path).convert("RGB")) for r in records])
    assert torch.equal(outs[0], expected)
    assert cached._pixels(split).cache.shape == (len(records), 3, H, W)


def test_workers_deliver_same_multiset_for_every_loader(tmp_path):
    data = make_data(tmp_path)
    module = _module(data, in_memory=True, batched_augment=True, num_workers=1, drop_last=False)
    assert sorted(torch.cat([b["index"] for b in module.train_dataloader()]).tolist()) == list(range(7))
    assert torch.cat([b["index"] for b in module.perturbed_dataloader([5, 1, 3])]).tolist() == [5, 1, 3]
    feats = torch.cat([b["image"] for b in module.feature_dataloader("gallery")])
    module.num_workers = 0
    assert torch.equal(feats, torch.cat([b["image"] for b in module.feature_dataloader("gallery")]))


def test_corrupt_image_error_names_the_file(tmp_path):
    data = make_data(tmp_path)
    bad = Path(data.query[1].path)
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=bad.name):  # on disk: when the batch is read
        list(_module(data).feature_dataloader("query"))
    cached = _module(data, in_memory=True)  # the train split is fine
    with pytest.raises(DatasetError, match=bad.name):  # in memory: when the split is cached
        cached.feature_dataloader("query")
    bad_train = Path(data.train[2].path)
    bad_train.write_bytes(b"")
    with pytest.raises(DatasetError, match=bad_train.name):
        _module(data, in_memory=True)


def test_bad_split_and_indices_raise(tmp_path):
    module = _module(make_data(tmp_path))
    with pytest.raises(ValueError, match="split must be one of"):
        module.feature_dataloader("test")
    with pytest.raises(ValueError, match="outside the train split"):
        module.perturbed_dataloader([0, 7])
    with pytest.raises(ValueError, match="batch_size 8"):
        _module(make_data(tmp_path / "b"), batch_size=8).train_dataloader()


def test_load_dataset_path_with_camstyle_folder(tmp_path):
    """Through the real parser: Market names, a CamStyle folder, and Hydra-style DictConfig arguments."""
    data = make_data(tmp_path, camstyle={1: 2})
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"_target_": "mprd.data.datamodule.ReIDDataModule", "name": "market1501",
                            "root": str(tmp_path), "height": H, "width": W, "mean": list(IMAGENET_MEAN),
                            "std": list(IMAGENET_STD), "batch_size": 2, "camstyle": True,
                            "augment": NO_AUG | {"jitter": [0, 0, 0, 0]}, "options": {"keep_junk": False}})
    module = instantiate(cfg)
    module.setup()
    assert [r.path for r in module.data.train] == sorted(r.path for r in data.train)
    assert sum(len(v) for v in module.data.camstyle.values()) == 2
    assert module._train_pixels is not None and len(module._train_pixels) == 9  # 7 real + 2 CamStyle


def test_synthetic_name_calls_ensure_synthetic(tmp_path, monkeypatch):
    make_data(tmp_path / "generated")
    calls = []

    def fake_ensure(root, preset="small", seed=0, overrides=None):
        calls.append((str(root), preset, seed, overrides))
        return tmp_path / "generated"

    fake = types.ModuleType("mprd.data.synthetic")
    fake.ensure_synthetic = fake_ensure
    monkeypatch.setitem(sys.modules, "mprd.data.synthetic", fake)
    module = ReIDDataModule(name="synthetic", root=str(tmp_path / "cache"), synthetic={"preset": "tiny", "seed": 3},
                            height=H, width=W, batch_size=2)
    module.prepare_data()
    module.setup()
    assert calls == [(str(tmp_path / "cache"), "tiny", 3, None)] * 2
    assert module.data.name == "synthetic" and len(module.data.train) == 7


@pytest.mark.realdata
def test_real_cuhk03_cache_matches_disk(cuhk03):
    from mprd.data.datasets import load_dataset

    data = load_dataset("cuhk03np", cuhk03)
    data.train, data.query, data.gallery = data.train[:40], data.query[:8], data.gallery[:8]
    outs = []
    for in_memory in (False, True):
        module = ReIDDataModule.from_data(data, height=64, width=32, in_memory=in_memory, test_batch_size=16)
        module.setup()
        outs.append(torch.cat([b["image"] for b in module.feature_dataloader("train")]))
        batch = next(iter(module.train_dataloader()))
        assert batch["image"].shape == (32, 3, 64, 32) and "pid" not in batch
    assert torch.equal(outs[0], outs[1])


def test_device_augment_ships_uint8_and_lightning_hook_augments(tmp_path):
    """Through a real Trainer: float batches reach training_step, and epoch e's order is EpochShuffle(seed, e)."""
    import lightning as L

    data = make_data(tmp_path)
    module = _module(data, device_augment=True, augment=NO_AUG, in_memory=True, seed=5)
    raw = next(iter(module.train_dataloader()))
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (3, 3, H, W)
    out = module.augment_batch(raw)
    expected = torch.stack([build_test_transform(H, W)(im) for im in raw["image"]])
    assert torch.allclose(out["image"], expected, atol=1e-6)  # NO_AUG: augmentation = normalisation only

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen: list[tuple[int, torch.dtype, list[int]]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch["image"].dtype, batch["index"].tolist()))
            return (self.w * batch["image"].mean()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    probe = Probe()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(probe, datamodule=module)
    assert all(dtype == torch.float32 for _, dtype, _ in probe.seen)
    for epoch in (0, 1):
        order = [i for e, _, idx in probe.seen if e == epoch for i in idx]
        sampler = EpochShuffle(7, seed=5)
        sampler.set_epoch(epoch)
        assert order == list(sampler)[:6]  # drop_last: 2 batches of 3


def test_data_config_instantiates_the_module_and_refuses_unknown_keys(tmp_path):
    """conf/data carries `_target_`: mprd.train instantiates it with the dataset, mean/std, camstyle and seed."""
    from mprd.data.datamodule import instantiate_datamodule
    from mprd.settings import SettingsError
    from tests.conftest import compose_cfg

    cfg = compose_cfg(tmp_path, "seed=3")
    module = instantiate_datamodule(cfg, IMAGENET_MEAN, IMAGENET_STD, camstyle=True)
    assert isinstance(module, ReIDDataModule) and (module.name, module.seed, module.camstyle) == ("synthetic", 3, True)
    assert (module.batch_size, module.height, module.synthetic["preset"]) == (
        cfg.data.batch_size,
        cfg.data.height,
        "tiny",
    )
    with pytest.raises(SettingsError, match=r"data\.colour: unknown setting"):
        instantiate_datamodule(compose_cfg(tmp_path, "+data.colour=red"), IMAGENET_MEAN, IMAGENET_STD, camstyle=False)
