"""SYNTHETIC.md's neighbour-statistics check: precision of the 8 nearest neighbours of training images,
overall and split into same-camera vs cross-camera neighbours, for a backbone (initial or trained).

    .venv/bin/python benchmarks/neighbor_stats.py --dataset synthetic --root data            # ImageNet Lite0
    .venv/bin/python benchmarks/neighbor_stats.py --dataset synthetic --root data \
        --checkpoint experiments/results/runs/table1-synthetic/super-seed0/checkpoints/last.ckpt
    .venv/bin/python benchmarks/neighbor_stats.py --dataset cuhk03np --root /path/to/cuhk03-np-detected \
        --height 128 --width 64
"""

from __future__ import annotations

import argparse

import torch

from mprd.diagnostics import neighbour_precision


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--root", default="data")
    p.add_argument("--preset", default="small", help="synthetic preset")
    p.add_argument("--seed", type=int, default=0, help="synthetic generator seed")
    p.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    p.add_argument("--checkpoint", default=None, help="a run's last.ckpt (its backbone weights are used)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--override", action="append", default=[], metavar="NAME=VALUE",
                   help="synthetic generator override (repeatable), as in `python -m mprd.data.synthetic`")
    p.add_argument("--eval", action="store_true", help="also evaluate the same features on query/gallery")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mprd.core.backbone import build_backbone
    from mprd.data.datamodule import ReIDDataModule

    bb = build_backbone(args.backbone, pretrained="none" if args.checkpoint else "imagenet").eval()
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        bb.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    overrides = dict(o.split("=", 1) for o in args.override)
    syn = {"preset": args.preset, "seed": args.seed, "overrides": overrides} if args.dataset == "synthetic" else None
    dm = ReIDDataModule(name=args.dataset, root=args.root, synthetic=syn, height=args.height, width=args.width,
                        mean=bb.mean, std=bb.std, in_memory=True, test_batch_size=256)
    dm.prepare_data()
    dm.setup("fit")
    def extract(split: str) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([bb.extract(b["image"]) for b in dm.feature_dataloader(split)])

    feats = extract("train")
    pids = torch.tensor([r.pid for r in dm.data.train])
    cams = torch.tensor([r.camid for r in dm.data.train])
    stats = neighbour_precision(feats, pids, cams)
    print(f"{args.dataset} ({args.checkpoint or 'ImageNet ' + args.backbone}): 8-NN precision "
          + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    if args.eval:
        from mprd.core.evaluation import evaluate

        q, g = dm.data.query, dm.data.gallery
        m = evaluate(extract("query"), extract("gallery"), [r.pid for r in q], [r.camid for r in q],
                     [r.pid for r in g], [r.camid for r in g])
        print(f"  query/gallery with these features: Rank-1 {100 * m.rank1:.1f}, mAP {100 * m.mAP:.1f}")


if __name__ == "__main__":
    main()
