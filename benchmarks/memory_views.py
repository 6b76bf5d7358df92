"""What an Eq. 1 write puts in the memory: 8-NN precision of the training set's memory as written from each
kind of view, for the initial network (or a checkpoint). docs/dynamics.md, "the memory collapse".

    .venv/bin/python benchmarks/memory_views.py                          # synthetic `small`, ImageNet Lite0
    .venv/bin/python benchmarks/memory_views.py --dataset cuhk03np --root /path/to/cuhk03-np-detected \
        --height 128 --width 64 --pad 5

Each variant fills an N x d memory with one feature per image (γ = 1, the first epoch of the paper's
schedule) and reports the precision of its 8 nearest neighbours overall and across cameras:
- clean / eval: test transform, eval mode (the memory init; head BN calibrated on the training set);
- clean / train-mode BN: test transform, head BN on batch statistics (the mode of every training write);
- augmented: the training augmentation (crop, flip, rotation, jitter, erasing), no CamStyle;
- CamStyle only: a uniform draw among {real, CamStyle copies}, no other augmentation;
- augmented + CamStyle: what a training write stores.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from mprd.diagnostics import neighbour_precision

PLAIN = {"pad": 0, "rotation": 0.0, "jitter": [0.0, 0.0, 0.0, 0.0], "erasing_p": 0.0, "flip_p": 0.0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--root", default="data")
    p.add_argument("--preset", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    p.add_argument("--checkpoint", default=None, help="a run's last.ckpt (default: the ImageNet network)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--pad", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from mprd.core.backbone import build_backbone
    from mprd.data.datamodule import ReIDDataModule

    bb = build_backbone(args.backbone, pretrained="none" if args.checkpoint else "imagenet", freeze_bn=True)
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        bb.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})

    def module(camstyle: bool, augment: dict) -> ReIDDataModule:
        syn = {"preset": args.preset, "seed": args.seed} if args.dataset == "synthetic" else None
        dm = ReIDDataModule(name=args.dataset, root=args.root, synthetic=syn, height=args.height, width=args.width,
                            mean=bb.mean, std=bb.std, in_memory=True, batched_augment=True, camstyle=camstyle,
                            augment=augment, batch_size=32, test_batch_size=256, num_workers=0, seed=args.seed)
        dm.prepare_data()
        dm.setup("fit")
        return dm

    full = {**PLAIN, "pad": args.pad, "rotation": 10.0, "jitter": [0.2, 0.2, 0.2, 0.0], "erasing_p": 0.5, "flip_p": 0.5}
    dm = module(False, full)
    pids = torch.tensor([r.pid for r in dm.data.train])
    cams = torch.tensor([r.camid for r in dm.data.train])
    n = len(pids)

    @torch.no_grad()
    def clean_pool5() -> torch.Tensor:
        bb.eval()
        return torch.cat([bb.forward_features(b["image"])[0] for b in dm.feature_dataloader("train")])

    @torch.no_grad()
    def written(loader, train_mode: bool = True) -> torch.Tensor:
        bb.train(train_mode)
        memory = torch.zeros(n, bb.out_dim)
        for b in loader:
            memory[b["index"]] = F.normalize(bb(b["image"]), dim=1)
        return memory

    pool5 = clean_pool5()
    bb.calibrate_head_bn(pool5)
    rows = {"clean / eval (memory init)": F.normalize(bb.bn.eval()(pool5), dim=1)}
    rows["clean / train-mode BN"] = written(dm.feature_dataloader("train", batch_size=32))
    rows["augmented, no CamStyle"] = written(dm.train_dataloader())
    has_camstyle = args.dataset == "synthetic" or dm._offsets[-1] > 0
    if has_camstyle:
        rows["CamStyle only"] = written(module(True, PLAIN).train_dataloader())
        rows["augmented + CamStyle (a training write)"] = written(module(True, full).train_dataloader())
    source = args.checkpoint or "ImageNet " + args.backbone
    print(f"{args.dataset}: 8-NN precision of a memory written from each view ({source})")
    print("| view | overall | same-camera | cross-camera | cross-camera share |")
    print("|---|---|---|---|---|")
    for name, feats in rows.items():
        s = neighbour_precision(feats, pids, cams)
        print(
            f"| {name} | {s['overall']:.3f} | {s['same-camera']:.3f} | {s['cross-camera']:.3f} "
            f"| {s['cross-camera share']:.2f} |"
        )


if __name__ == "__main__":
    main()
