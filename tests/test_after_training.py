"""After training: mprd.eval, export, extract and visualize on a checkpoint trained one epoch on synthetic `tiny`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from mprd import eval as mprd_eval
from mprd.core.backbone import build_backbone
from mprd.core.evaluation import evaluate
from mprd.data.records import ImageRecord
from mprd.export import export
from mprd.inference import features_of, load_model
from mprd.train import run as train_run
from mprd.visualize import BORDER, GAP, GREEN, GREY, RED, TITLE_H, ranked_list, render, visualize

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_eval(root: Path, *overrides: str, config: str = "eval"):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name=config, overrides=[
            f"paths.root_dir={root}", "paths.output_dir=unused", "dataset.synthetic.preset=tiny",
            "data.test_batch_size=64", *overrides])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_root) -> tuple[Path, Path, dict]:
    """(data root, last.ckpt, the run's metrics record) of `knn` trained 1 epoch with the CPU preset."""
    root = data_root  # the session's tiny set
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"paths.root_dir={root}", "paths.output_dir=unused", "dataset.synthetic.preset=tiny",
            "logger.wandb.enabled=false", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
            "data.test_batch_size=64", "method=knn", "max_epochs=1", "eval_every=1"])
    run_dir = tmp_path_factory.mktemp("after") / "run"
    # the run's resolved config, where Hydra would write it (eval reads the architecture from it)
    (run_dir / ".hydra").mkdir(parents=True)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml", resolve=False)
    record = train_run(cfg, run_dir)
    return root, run_dir / "checkpoints" / "last.ckpt", record


def test_eval_reproduces_the_training_runs_final_numbers(trained, tmp_path):
    root, ckpt, record = trained
    got = mprd_eval.run(compose_eval(root, f"ckpt={ckpt}"), tmp_path / "ev")
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert got["final"][key] == pytest.approx(record["final"][key], abs=1e-6)
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["final"] == got["final"] and saved["rerank"] is None
    assert saved["backbone"] == "timm:tf_efficientnet_lite0" and saved["input_size"] == [64, 32]
    assert not (ckpt.parent.parent / "metrics.1.json").exists()  # the training run's folder is not touched


def test_eval_never_overwrites_an_earlier_metrics_file(trained, tmp_path):
    root, ckpt, _ = trained
    (tmp_path / "metrics.json").write_text("mine")
    mprd_eval.run(compose_eval(root, f"ckpt={ckpt}"), tmp_path)
    kept = [p for p in tmp_path.glob("metrics.*.json")]
    assert len(kept) == 1 and kept[0].read_text() == "mine"


def test_eval_rerank_reports_both(trained, tmp_path):
    root, ckpt, _ = trained
    got = mprd_eval.run(compose_eval(root, f"ckpt={ckpt}", "rerank=true", "rerank_options.k1=6",
                                     "rerank_options.k2=3"), tmp_path)
    rr = got["rerank"]
    assert (rr["k1"], rr["k2"], rr["lambda_value"]) == (6, 3, 0.3)
    assert rr["num_valid"] == got["final"]["num_valid"]
    assert rr["mAP"] != got["final"]["mAP"]  # a different ordering of the same features


def test_test_options_flip_and_bn(trained):
    root, ckpt, _ = trained
    model = load_model(compose_eval(root, f"ckpt={ckpt}"))
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        mirrored = torch.flip(x, dims=[3])
        # flip averaging makes the feature invariant to mirroring the input; without it, it is not
        assert torch.allclose(features_of(model.backbone, x, True), features_of(model.backbone, mirrored, True),
                              atol=1e-5)
        assert not torch.allclose(features_of(model.backbone, x), features_of(model.backbone, mirrored), atol=1e-3)
        bn_model = load_model(compose_eval(root, f"ckpt={ckpt}", "test.feature=bn"))
        want = torch.nn.functional.normalize(model.backbone.forward_features(x)[1], dim=1)
        assert torch.allclose(features_of(bn_model.backbone, x), want, atol=1e-6)


@pytest.mark.parametrize("overrides,message", [
    (["ckpt=/nonexistent/last.ckpt"], "ckpt='/nonexistent/last.ckpt': no such file"),
    (["test.metric=l1"], "test.metric='l1': expected 'cosine' or 'euclidean'"),
    (["rerank=true", "+rerank_options.k3=1"], r"rerank_options: unknown key\(s\) \['k3'\]"),
    (["test.feature=fc"], "test.feature='fc': expected 'pool5', 'bn'"),
    (["use_run_config=false", "backbone.name=resnet18"], "do not fit backbone.name='resnet18'|expects"),
])
def test_eval_bad_input_is_named(trained, tmp_path, overrides, message):
    root, ckpt, _ = trained
    cfg = compose_eval(root, f"ckpt={ckpt}", *overrides)
    with pytest.raises(ValueError, match=message):
        mprd_eval.run(cfg, tmp_path)


def test_eval_rejects_a_file_that_is_not_a_checkpoint(trained, tmp_path):
    root, _, _ = trained
    bad = tmp_path / "weights.pth"
    torch.save({"layer.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="expected a Lightning checkpoint"):
        mprd_eval.run(compose_eval(root, f"ckpt={bad}"), tmp_path)
    torch.save({"state_dict": {"memory.features": torch.zeros(2)}}, bad)
    with pytest.raises(ValueError, match="no 'backbone.\\*' entries"):
        mprd_eval.run(compose_eval(root, f"ckpt={bad}"), tmp_path)


# ----------------------------------------------------------------------------------------------------------------
# Export
LOAD_WITHOUT_MPRD = r"""
import json, sys
sys.modules["mprd"] = None  # this package must not be needed
import torch
meta_path, inputs_path, out_path = sys.argv[1:4]
meta = json.load(open(meta_path))
weights = meta_path[: -len(".json")] + ".pth"
namespace = {}
exec(meta["load"].replace(repr(weights.rsplit("/", 1)[-1]), repr(weights)), namespace)
model = namespace["model"]
head = getattr(model, meta["head_bn_key"])
pool5 = []
head.register_forward_hook(lambda m, i, o: pool5.append(i[0]))
x = torch.load(inputs_path)
with torch.no_grad():
    bn = model(x)
torch.save({"pool5": pool5[0], "bn": bn}, out_path)
"""


def _check_loads_without_this_package(meta: Path, backbone, tmp_path: Path, height: int, width: int) -> None:
    x = torch.randn(2, 3, height, width)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load.py"
    script.write_text(LOAD_WITHOUT_MPRD)
    subprocess.run([sys.executable, str(script), str(meta), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                   check=True, cwd=tmp_path, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    got = torch.load(tmp_path / "y.pt")
    with torch.no_grad():
        pool5, bn = backbone.eval().forward_features(x)
    assert torch.allclose(got["pool5"], pool5, atol=1e-5) and torch.allclose(got["bn"], bn, atol=1e-4)


def test_export_of_the_timm_run_loads_into_timm_alone(trained, tmp_path):
    root, ckpt, record = trained
    out = tmp_path / "exp" / "backbone.pth"
    paths = export(compose_eval(root, f"ckpt={ckpt}", f"out={out}", "torchscript=true"))
    assert paths == [out, out.with_suffix(".json"), out.with_suffix(".ts")]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert (meta["height"], meta["width"], meta["head_bn_key"], meta["dim"]) == (64, 32, "classifier", 1280)
    model = load_model(compose_eval(root, f"ckpt={ckpt}"))
    _check_loads_without_this_package(out.with_suffix(".json"), model.backbone, tmp_path, 64, 32)
    # TorchScript returns the L2-normalised test feature
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(out.with_suffix(".ts")))(x), model.backbone.extract(x), atol=1e-5)
    # and mprd.eval reads the export back to the same numbers
    again = mprd_eval.run(compose_eval(root, f"ckpt={out}"), tmp_path / "ev")
    assert again["final"]["mAP"] == pytest.approx(record["final"]["mAP"], abs=1e-6)
    assert again["source"] == "export"


def test_export_of_a_torchvision_resnet_loads_into_torchvision_alone(trained, tmp_path):
    root, _, _ = trained
    backbone = build_backbone("resnet18", pretrained="none")
    with torch.no_grad():  # a head BN with non-trivial statistics, so the test sees whether it is carried
        backbone.bn.running_mean.normal_()
        backbone.bn.running_var.uniform_(0.5, 2.0)
        backbone.bn.weight.uniform_(0.5, 1.5)
    ckpt = tmp_path / "r18.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, ckpt)
    out = tmp_path / "r18.pth"
    export(compose_eval(root, f"ckpt={ckpt}", f"out={out}", "backbone=resnet18", "use_run_config=false"))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["library"] == "torchvision" and meta["head_bn_key"] == "fc"
    _check_loads_without_this_package(out.with_suffix(".json"), backbone, tmp_path, 64, 32)


def test_export_never_overwrites(trained, tmp_path):
    root, ckpt, _ = trained
    out = tmp_path / "b.pth"
    out.with_suffix(".json").write_text("mine")
    with pytest.raises(ValueError, match=r"b\.json already exist"):
        export(compose_eval(root, f"ckpt={ckpt}", f"out={out}"))
    assert out.with_suffix(".json").read_text() == "mine" and not out.exists()
    with pytest.raises(ValueError, match="out: required"):
        export(compose_eval(root, f"ckpt={ckpt}"))
    with pytest.raises(ValueError, match=r"out='.*b\.onnx': expected a \.pth"):
        export(compose_eval(root, f"ckpt={ckpt}", f"out={tmp_path / 'b.onnx'}"))


# ----------------------------------------------------------------------------------------------------------------
# Extract
def test_extract_a_folder_recursively_skipping_unreadable_images(trained, tmp_path, caplog):
    from mprd.data.datasets import load_image
    from mprd.data.transforms import build_test_transform
    from mprd.extract import extract

    root, ckpt, _ = trained
    folder = tmp_path / "imgs"
    (folder / "sub" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["b.jpg", "sub/a.png", "sub/deeper/c.JPEG"]
    for name in names:
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(folder / name)
    (folder / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "f.npz"
    result = extract(compose_eval(root, f"ckpt={ckpt}", f"images={folder}", f"out={out}", "batch_size=2"))
    saved = np.load(out)
    assert list(saved["paths"]) == ["b.jpg", "sub/a.png", "sub/deeper/c.JPEG"]
    assert list(saved["skipped"]) == ["sub/broken.jpg"]
    assert "sub/broken.jpg" in caplog.text and "skipped 1 unreadable image(s) of 4" in caplog.text
    # each row is the model's test feature of that file
    model = load_model(compose_eval(root, f"ckpt={ckpt}"))
    transform = build_test_transform(64, 32, model.mean, model.std)
    x = torch.stack([transform(load_image(folder / n)) for n in saved["paths"]])
    with torch.no_grad():
        assert np.allclose(saved["features"], model.backbone.extract(x).numpy(), atol=1e-5)
    assert torch.equal(result["features"], torch.from_numpy(saved["features"]))
    with pytest.raises(ValueError, match=r"f\.npz': already exists"):
        extract(compose_eval(root, f"ckpt={ckpt}", f"images={folder}", f"out={out}"))
    pt = tmp_path / "f.pt"
    extract(compose_eval(root, f"ckpt={ckpt}", f"images={folder}", f"out={pt}"))
    assert torch.load(pt)["paths"] == list(saved["paths"])


@pytest.mark.parametrize("images,out,message", [
    (None, "f.npz", "images: required"),
    ("missing", "f.npz", "images='.*missing': not a folder"),
    ("empty", "f.npz", "no .jpg/.jpeg/.png file below it"),
    ("empty", "f.csv", r"out='.*f\.csv': expected a \.npz or \.pt"),
])
def test_extract_bad_input_is_named(trained, tmp_path, images, out, message):
    from mprd.extract import extract

    root, ckpt, _ = trained
    (tmp_path / "empty").mkdir()
    args = [f"ckpt={ckpt}", f"out={tmp_path / out}"] + ([f"images={tmp_path / images}"] if images else [])
    with pytest.raises(ValueError, match=message):
        extract(compose_eval(root, *args))


# ----------------------------------------------------------------------------------------------------------------
# Visualize
def _records(folder, ids_cams):
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (pid, cam) in enumerate(ids_cams):
        path = folder / f"{i}.png"
        Image.new("RGB", (16, 32), (i * 20 % 255, 90, 90)).save(path)
        out.append(ImageRecord(str(path), pid, cam, i))
    return out


def test_ranked_list_by_hand(tmp_path):
    # query: id 5 on camera 0. Gallery by decreasing score: g3 (id 5, cam 0: excluded), g0 (id 7: wrong),
    # g4 (junk: excluded), g1 (id 5, cam 1: match), g2 (id 5, cam 2: match), g5 (id 8: wrong)
    query = _records(tmp_path / "q", [(5, 0)])
    gallery = _records(tmp_path / "g", [(7, 1), (5, 1), (5, 2), (5, 0), (-1, 1), (8, 2)])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.85, 0.1])
    got = ranked_list(scores, query[0], gallery, top_k=3)
    assert [(i.gallery_index, i.status, i.rank) for i in got.items] == [
        (3, "excluded", None), (0, "wrong", 1), (4, "excluded", None), (1, "match", 2), (2, "match", 3)]
    assert got.ap == pytest.approx((1 / 2 + 2 / 3) / 2)  # hits at ranks 2 and 3 among the kept items
    image = render(got, query, gallery)
    tile_w = (image.width - 2 * GAP) // 6 - GAP
    colours = []
    for k in range(1, 6):
        x = GAP + k * (tile_w + GAP) + GAP + 1
        colours.append(image.getpixel((x, TITLE_H + BORDER + 20)))
    assert colours == [GREY, RED, GREY, GREEN, GREEN]
    assert ranked_list(scores, ImageRecord("q", 9, 0, 0), gallery, 3) is None  # no valid match


def test_visualize_end_to_end_ap_matches_the_evaluation(trained, tmp_path):
    from mprd.eval import build_eval_datamodule, query_gallery_features
    from mprd.inference import load_model

    root, ckpt, _ = trained
    cfg = compose_eval(root, f"ckpt={ckpt}", "num_queries=4", "top_k=5", config="visualize")
    written = visualize(cfg, tmp_path)
    assert len(written) == 4 and all(p.is_file() for p, _ in written)
    assert {p.parent for p, _ in written} == {tmp_path / "ranked_lists"}
    model = load_model(cfg)
    dm = build_eval_datamodule(cfg, model)
    qf, gf = query_gallery_features(cfg, model, dm)
    gp = [g.pid for g in dm.data.gallery]
    gc = [g.camid for g in dm.data.gallery]
    for _, ranked in written:
        q = dm.data.query[ranked.query_index]
        one = evaluate(qf[ranked.query_index : ranked.query_index + 1], gf, [q.pid], [q.camid], gp, gc)
        assert ranked.ap == pytest.approx(one.mAP, abs=1e-9)
        assert sum(i.rank is not None for i in ranked.items) == 5
    with pytest.raises(ValueError, match="already exists"):
        visualize(cfg, tmp_path)


@pytest.mark.parametrize("override,message", [("num_queries=0", "num_queries=0: expected an integer >= 1"),
                                              ("top_k=0", "top_k=0: expected an integer >= 1")])
def test_visualize_bad_options(trained, tmp_path, override, message):
    root, ckpt, _ = trained
    with pytest.raises(ValueError, match=message):
        visualize(compose_eval(root, f"ckpt={ckpt}", override, config="visualize"), tmp_path)


def test_eval_command_line(trained, tmp_path):
    """`python -m mprd.eval ckpt=...` as the README shows it: prints the table, writes its own metrics.json."""
    root, ckpt, record = trained
    args = [sys.executable, "-m", "mprd.eval", f"ckpt={ckpt}", f"paths.root_dir={root}",
            "dataset.synthetic.preset=tiny", f"hydra.run.dir={tmp_path / 'cli'}"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert saved["final"]["mAP"] == pytest.approx(record["final"]["mAP"], abs=1e-6)
    assert f"{record['final']['mAP']:9.2f}" in done.stdout
    bad = subprocess.run(args[:3] + ["ckpt=/nowhere.ckpt"] + args[4:], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "ckpt='/nowhere.ckpt': no such file" in bad.stderr
