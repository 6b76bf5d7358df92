"""UGA stage 1 on a dataset, watched every few steps: does intra-camera training keep or destroy the features?

A diagnostic (identities are read only to score). It builds the run exactly as `python -m mprd.train` does
from the same overrides, trains stage 1 for `--epochs` epochs of at most `--steps` batches, and every `--every`
steps extracts a fixed subset of training images (test transform, eval mode) and prints: the intra loss, the
8-NN precision of the pool-5 and of the embedded features (overall and cross-camera, hidden identities), and the
health of Lite0's ReLU6 pool-5 units (share near 0, share near the ceiling 6, mean per-unit std).

    python benchmarks/uga_stage1_probe.py --steps 200 -- experiment=uga/intra dataset=cuhk03np \\
        dataset.root=../shared/data/cuhk03-np-detected preset=cpu_real seed=0 [more overrides]

docs/dynamics.md ("Table 3 ...", CUHK03-NP) has the numbers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor


def subset(pids: Tensor, num: int, seed: int = 0) -> Tensor:
    """`num` training images of whole identities (so each keeps its neighbours), in a fixed random order."""
    g = torch.Generator().manual_seed(seed)
    chosen, out = torch.unique(pids)[torch.randperm(len(torch.unique(pids)), generator=g)], []
    for pid in chosen.tolist():
        out.extend(torch.nonzero(pids == pid).flatten().tolist())
        if len(out) >= num:
            break
    return torch.tensor(sorted(out))


@torch.no_grad()
def features(module, loader, rows: Tensor) -> tuple[Tensor, Tensor]:
    """(pool5, embedded) features of the training images `rows`, eval mode; the mode is restored."""
    from mprd.core.reid_module import eval_mode

    keep = set(rows.tolist())
    pool, emb, order = [], [], []
    with eval_mode(module.backbone):
        for batch in loader:
            mask = torch.tensor([int(i) in keep for i in batch["index"]])
            if not mask.any():
                continue
            x = batch["image"][mask].to(module.device)
            p5, bn = module.backbone.trunk.forward_features(x)
            pool.append(p5.float().cpu())
            emb.append(module.backbone(x).float().cpu())
            order.append(batch["index"][mask])
    idx = torch.argsort(torch.cat(order))
    return torch.cat(pool)[idx], torch.cat(emb)[idx]


class Probe(L.Callback):
    def __init__(self, datamodule, rows: Tensor, every: int) -> None:
        from mprd.diagnostics import neighbour_precision

        self.precision = neighbour_precision
        self.loader = datamodule.feature_dataloader("train")
        train = datamodule.data.train
        self.rows, self.every = rows, every
        self.pids = torch.tensor([train[i].pid for i in rows])
        self.cams = torch.tensor([train[i].camid for i in rows])
        self.losses: list[float] = []
        self.t0 = time.time()

    def report(self, module, step: int) -> None:
        pool, emb = features(module, self.loader, self.rows)
        cells = [f"step {step:4d}", f"loss {sum(self.losses) / max(len(self.losses), 1):.3f}"]
        for name, f in (("pool5", pool), ("embed", emb)):
            p = self.precision(F.normalize(f, dim=1), self.pids, self.cams, k=8)
            cells.append(f"{name} 8-NN {p['overall']:.3f} x-cam {p['cross-camera']:.3f} "
                         f"(share {p['cross-camera share']:.2f})")
        cells.append(f"pool5 ~0 {float((pool < 1e-3).float().mean()):.2f} ~6 {float((pool > 5.99).float().mean()):.2f} "
                     f"unit std {float(pool.std(0).mean()):.3f}")
        cells.append(f"{time.time() - self.t0:.0f}s")
        print(" | ".join(cells), flush=True)
        self.losses = []

    def on_train_start(self, trainer, module) -> None:
        self.report(module, 0)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))
        if trainer.global_step % self.every == 0:
            self.report(module, trainer.global_step)


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mprd.core.backbone import build_backbone
    from mprd.core.config import build_method
    from mprd.train import build_datamodule

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="batches per epoch at most")
    parser.add_argument("--epochs", type=int, default=1, help="epochs (the stage's lr milestones count them)")
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--images", type=int, default=1200, help="training images watched (whole identities)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("train", overrides=args.overrides)
    L.seed_everything(cfg.seed, workers=True)
    backbone = build_backbone(cfg.backbone.name, pretrained=str(cfg.backbone.pretrained),
                              test_feature=cfg.backbone.test_feature,
                              freeze_bn=bool(cfg.backbone.get("freeze_bn", False)))
    datamodule = build_datamodule(cfg, backbone.mean, backbone.std)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = build_method(cfg, datamodule, backbone)
    if cfg.trainer.get("gradient_clip_val"):
        module.gradient_clip_val = float(cfg.trainer.gradient_clip_val)  # as mprd.train does for UGA
    pids = torch.tensor([r.pid for r in datamodule.data.train])
    probe = Probe(datamodule, subset(pids, args.images), args.every)
    print("overrides:", " ".join(args.overrides), "| optim:", OmegaConf.to_container(cfg.method.optim), flush=True)
    trainer = L.Trainer(max_epochs=args.epochs, limit_train_batches=args.steps, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, callbacks=[probe], accelerator="cpu", devices=1)
    trainer.fit(module, datamodule=datamodule)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
