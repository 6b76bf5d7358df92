"""Is a dataset's camera gap a colour gap? Untrained-network retrieval with and without per-image colour
standardisation (a diagnostic: nothing trains; identities are read only to score).

Each image's RGB channels are moved to the training set's mean per-image channel mean and std (Reinhard-style,
per channel). If the camera gap were mostly a colour cast, cross-camera 8-NN precision of the training images and
test mAP would rise; then a colour-transfer stand-in for CamStyle (no CycleGAN) would be worth training with.

    python benchmarks/colour_gap.py --dataset cuhk03np --root ../shared/data/cuhk03-np-detected

docs/dynamics.md ("CUHK03-NP") has the numbers (about 10 minutes on one core at 128x64).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def load_images(records, height: int, width: int) -> np.ndarray:
    """(N, H, W, 3) float32 in [0, 1]."""
    return np.stack([np.asarray(Image.open(r.path).convert("RGB").resize((width, height), Image.BILINEAR),
                                dtype=np.float32) / 255 for r in records])


def channel_stats(imgs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image channel mean and std, each (N, 3)."""
    return imgs.mean((1, 2)), imgs.std((1, 2)) + 1e-6


def transfer(imgs: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Move every image's channel statistics to `mean`/`std` (broadcast to (N, 3)), clipped to [0, 1]."""
    m, s = channel_stats(imgs)
    return np.clip((imgs - m[:, None, None]) / s[:, None, None] * std[..., None, None, :] + mean[..., None, None, :],
                   0, 1).astype(np.float32)


def physical_camera(path: str) -> str:
    """CUHK03-NP's names carry the camera pair (`_c1s3_`): 10 physical cameras behind its 2 camera ids."""
    m = re.search(r"_c(\d)s(\d)_", path)
    return f"pair {m.group(2)} cam {m.group(1)}" if m else "?"


def main(argv: list[str] | None = None) -> int:
    from mprd.core.backbone import build_backbone
    from mprd.core.evaluation import evaluate
    from mprd.data.datasets import load_dataset
    from mprd.diagnostics import neighbour_precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = load_dataset(args.dataset, args.root)
    net = build_backbone(args.backbone, "imagenet", "pool5").eval()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (net.mean, net.std))

    @torch.no_grad()
    def features(imgs: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2)
        return F.normalize(torch.cat([net.extract((b - mean) / std) for b in x.split(256)]), dim=1)

    start = time.time()
    train, query, gallery = (load_images(s, args.height, args.width) for s in (data.train, data.query, data.gallery))
    m, s = channel_stats(train)
    cams = np.array([physical_camera(r.path) for r in data.train])
    print("camera: images, mean RGB of the per-image channel means / stds")
    for cam in sorted(set(cams)):
        rows = cams == cam
        print(f"  {cam}: {rows.sum()}, {m[rows].mean(0).round(3)} / {s[rows].mean(0).round(3)}")
    target_m, target_s = m.mean(0), s.mean(0)
    views: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "raw": lambda x: x, "colour-standardised": lambda x: transfer(x, target_m, target_s)}
    pids = torch.tensor([r.pid for r in data.train])
    camids = torch.tensor([r.camid for r in data.train])
    labels = [[getattr(r, f) for r in recs] for recs in (data.query, data.gallery) for f in ("pid", "camid")]
    qp, qc, gp, gc = labels
    for name, view in views.items():
        knn = neighbour_precision(features(view(train)), pids, camids, 8)
        ev = evaluate(features(view(query)), features(view(gallery)), qp, qc, gp, gc).as_dict()
        print(f"{name:20s} train 8-NN: " + "  ".join(f"{k} {v:.3f}" for k, v in knn.items())
              + f" | test mAP {ev['mAP']:.2f} Rank-1 {ev['rank1']:.2f} ({time.time() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
