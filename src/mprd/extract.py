"""Extract features of a folder: `python -m mprd.extract ckpt=PATH images=FOLDER out=FILE.npz|.pt` (Hydra).

Every image under `images` (any names, searched recursively; .jpg/.jpeg/.png) goes through the model's test
preprocessing (resize to the model's input size, normalise) and the test feature (`test.feature`,
`test.flip`, as in `mprd.eval`). The output holds `features` (N x d float32, L2-normalised), `paths` (relative
to `images`, sorted) and `skipped` (unreadable files, each also logged by name). `.npz`: numpy arrays;
`.pt`: a dict of a tensor and lists. An existing `out` is never overwritten.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from mprd.data.datasets import IMAGE_EXTENSIONS, load_image
from mprd.data.records import DatasetError
from mprd.data.transforms import build_test_transform
from mprd.inference import features_of, load_model, pick_device

log = logging.getLogger("mprd.extract")
OUT_SUFFIXES = (".npz", ".pt")


def list_images(folder: Path) -> list[str]:
    """Sorted paths (relative to `folder`, '/'-separated) of every image below it; hidden entries skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(folder)
        found += [(rel / n).as_posix() for n in filenames
                  if not n.startswith(".") and n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


class FolderImages(Dataset):
    """Test-transformed images of a folder; an unreadable file yields its error message instead."""

    def __init__(self, root: Path, rel_paths: list[str], height: int, width: int, mean, std) -> None:
        self.root, self.paths = root, rel_paths
        self.transform = build_test_transform(height, width, mean, std)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, self.transform(load_image(self.root / self.paths[i])), None
        except DatasetError as err:
            return i, None, str(err)


def _collate(items: list[tuple[int, torch.Tensor | None, str | None]]) -> dict[str, Any]:
    good = [(i, x) for i, x, _ in items if x is not None]
    return {"index": [i for i, _ in good], "image": torch.stack([x for _, x in good]) if good else None,
            "failed": [(i, e) for i, _, e in items if e is not None]}


def check_inputs(cfg: DictConfig) -> tuple[Path, Path, list[str]]:
    """(images folder, out file, relative image paths); one error naming the setting otherwise."""
    if cfg.get("images") in (None, ""):
        raise ValueError("images: required; expected images=FOLDER (searched recursively for .jpg/.jpeg/.png)")
    folder = Path(str(cfg.images)).expanduser()
    if not folder.is_dir():
        raise ValueError(f"images={str(cfg.images)!r}: not a folder (expected a folder of images)")
    if cfg.get("out") in (None, ""):
        raise ValueError("out: required; expected out=FILE.npz or FILE.pt")
    out = Path(str(cfg.out)).expanduser()
    if out.suffix not in OUT_SUFFIXES:
        raise ValueError(f"out={str(cfg.out)!r}: expected a .npz or .pt file name")
    if out.exists():
        raise ValueError(f"out={str(cfg.out)!r}: already exists; choose another name (nothing is overwritten)")
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"images={str(cfg.images)!r}: no .jpg/.jpeg/.png file below it")
    if int(cfg.get("batch_size", 128)) < 1:
        raise ValueError(f"batch_size={cfg.batch_size}: expected >= 1")
    return folder, out, paths


def _progress(loader: DataLoader, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        return loader
    return tqdm(loader, total=total, desc="extract", unit="batch")


@torch.no_grad()
def extract(cfg: DictConfig) -> dict[str, Any]:
    """Features of every readable image of `cfg.images`, written to `cfg.out`; returns what was written."""
    folder, out, paths = check_inputs(cfg)
    model = load_model(cfg)
    device = pick_device(cfg.get("device"))
    backbone = model.backbone.to(device).eval()
    dataset = FolderImages(folder, paths, model.height, model.width, model.mean, model.std)
    loader = DataLoader(dataset, batch_size=int(cfg.get("batch_size", 128)), shuffle=False,
                        num_workers=int(cfg.data.num_workers), collate_fn=_collate)
    feats = torch.zeros(len(paths), backbone.out_dim)
    ok = torch.zeros(len(paths), dtype=torch.bool)
    skipped: list[str] = []
    for batch in _progress(loader, len(loader)):
        for i, message in batch["failed"]:
            log.warning("skipped %s: %s", paths[i], message)
            skipped.append(paths[i])
        if batch["image"] is not None:
            idx = torch.tensor(batch["index"])
            feats[idx] = features_of(backbone, batch["image"].to(device), bool(cfg.test.flip)).float().cpu()
            ok[idx] = True
    if not bool(ok.any()):
        raise ValueError(f"images={str(cfg.images)!r}: none of the {len(paths)} images could be read")
    if skipped:
        log.warning("skipped %d unreadable image(s) of %d", len(skipped), len(paths))
    kept = [p for p, good in zip(paths, ok.tolist(), strict=True) if good]
    result = {"features": feats[ok], "paths": kept, "skipped": sorted(skipped),
              "feature": backbone.test_feature, "flip": bool(cfg.test.flip), "ckpt": str(cfg.ckpt)}
    save(result, out)
    log.info("wrote %d features (%d-d) to %s", len(kept), backbone.out_dim, out)
    return result


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".npz":
        with open(tmp, "wb") as handle:
            np.savez(handle, features=result["features"].numpy(), paths=np.array(result["paths"], dtype=str),
                     skipped=np.array(result["skipped"], dtype=str), feature=result["feature"],
                     flip=result["flip"], ckpt=result["ckpt"])
    else:
        torch.save(result, tmp)
    tmp.replace(out)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="extract")
def main(cfg: DictConfig) -> None:
    result = extract(cfg)
    print(f"{len(result['paths'])} features -> {cfg.out}; skipped {len(result['skipped'])}")


if __name__ == "__main__":
    main()
