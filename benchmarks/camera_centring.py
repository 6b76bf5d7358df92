"""Does centring each camera's memory features on that camera's mean make kNN neighbourhoods cross cameras?

Reads the final Eq. 1 memory of finished runs (`memory.features` in `checkpoints/last.ckpt`) and prints the 8-NN
precision and cross-camera share against the hidden identities (a diagnostic; nothing trains), raw and centred:

    python benchmarks/camera_centring.py --dataset cuhk03np --root ../shared/data/cuhk03-np-detected \\
        experiments/results/runs/table1-cuhk03np/{single,knn,mprd,super}-seed0
    python benchmarks/camera_centring.py --dataset synthetic --root data/synthetic-small-seed0 \\
        experiments/results/runs/table1-synthetic/{mprd_nocam,mprd}-seed0

docs/dynamics.md ("CUHK03-NP") has the numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor


def centre_per_camera(feats: Tensor, cams: Tensor) -> Tensor:
    """Each camera's rows minus that camera's mean row, L2-normalised."""
    out = feats.clone()
    for cam in cams.unique():
        rows = cams == cam
        out[rows] = feats[rows] - feats[rows].mean(0, keepdim=True)
    return F.normalize(out, dim=1)


def main(argv: list[str] | None = None) -> int:
    from mprd.data.datasets import load_dataset
    from mprd.diagnostics import neighbour_precision

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders holding checkpoints/last.ckpt")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("-k", type=int, default=8)
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, args.root)
    pids = torch.tensor([r.pid for r in data.train])
    cams = torch.tensor([r.camid for r in data.train])
    for run in args.runs:
        state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        memory = state["memory.features"].float()[: len(pids)]  # real images first (CamStyle slots, if any, after)
        for name, feats in (("raw", memory), ("centred", centre_per_camera(memory, cams))):
            stats = neighbour_precision(feats, pids, cams, args.k)
            print(f"{run.name:24s} {name:8s} " + "  ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
