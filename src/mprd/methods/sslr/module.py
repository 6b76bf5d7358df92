"""SSLR's training algorithm (Fig. 2) in one Lightning fit: epochs [0, stage0_epochs) are stage 0 and
iteration s spans the next `epochs_per_iteration` epochs; the reliable sets are rebuilt at the first epoch of
each iteration. `build_module` is the `_target_` of the `sslr*` rows."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mprd.core.config import RunContext
from mprd.core.memory import FeatureMemory
from mprd.core.positive_sets import PositiveSets
from mprd.core.reid_module import (
    QueryGalleryEvaluation,
    eval_mode,
    log_epoch_timing,
    pooling_offsets,
    progress,
    temporal_pool,
)
from mprd.methods.sslr.baseline import EmbeddingHead, instance_logits
from mprd.methods.sslr.config import PART_DTYPES, SSLRConfig, config_from_method
from mprd.methods.sslr.schedule import Schedule, lr_factor_fn
from mprd.methods.sslr.similarity import part_features, reliable_sets
from mprd.methods.sslr.softened import softened_cross_entropy


class SSLRModule(QueryGalleryEvaluation):
    """Stage 0 + S softened-similarity iterations in one fit; see the module docstring."""

    def __init__(
        self,
        backbone: nn.Module,
        camids: Tensor,
        *,
        max_epochs: int,
        config: dict | SSLRConfig | None = None,
        optim: dict | None = None,
        diagnostic_labels: Tensor | None = None,
        eval_metric: str = "cosine",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.cfg = config if isinstance(config, SSLRConfig) else SSLRConfig(**dict(config or {}))
        self.backbone = backbone
        self.max_epochs = int(max_epochs)
        self.schedule = Schedule.resolve(self.cfg.schedule, self.max_epochs)
        self.camids = torch.as_tensor(camids).long().cpu()
        num = self.camids.numel()
        if self.schedule.iterations and not self.cfg.soft.k < num:
            raise ValueError(f"method.soft.k={self.cfg.soft.k}: needs fewer reliable images than N = {num}")
        self.optim_cfg = {"lr_backbone": 0.01, "lr_new": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                          "nesterov": False, "milestones": [], "lr_gamma": 0.1, **dict(optim or {})}
        if self.cfg.head == "fc_bn":
            if getattr(backbone, "test_feature", "pool5") != "pool5":
                raise ValueError("method.head=fc_bn trains its own FC+BN, so the backbone's appended BN stays "
                                 "untrained: set backbone.test_feature=pool5 (SSLR tests on pool-5)")
            self.head: nn.Module | None = EmbeddingHead(backbone.out_dim, self.cfg.embed_dim or backbone.out_dim)
            dim = self.cfg.embed_dim or backbone.out_dim
            # the backbone's appended BN is unused (not in the loss, not in the optimiser): marked frozen, so DDP
            # does not wait for gradients that never come
            backbone.bn.requires_grad_(False)
        else:
            self.head, dim = None, backbone.out_dim
        self.dropout = nn.Dropout(self.cfg.dropout)
        self.table = FeatureMemory(num, dim)  # V of Eq. 1, a buffer (checkpointed); no gradient reaches it
        self.eval_metric = eval_metric
        self.seed = int(seed)
        self._diagnostic_labels = None if diagnostic_labels is None else torch.as_tensor(diagnostic_labels).long()
        self.reliable: Tensor | None = None  # (N, k) reliable sets of iteration `reliable_iteration`
        self.reliable_iteration = 0
        self._reliable_stats: dict[str, float] = {}
        self._pending: tuple[Tensor, Tensor] | None = None
        self._epoch_t0 = 0.0
        self._epoch_images = 0

    # -------------------------------------------------------------------------------------- features
    @property
    def num_train(self) -> int:
        return self.camids.numel()

    def embed(self, pool5: Tensor) -> Tensor:
        """The L2-normalised embedding (before dropout)."""
        out = self.head(pool5) if self.head is not None else self.backbone.bn(pool5)
        return F.normalize(out, dim=1)

    def _trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.backbone.body(x)
        return fmap, self.backbone.pool(fmap).flatten(1)

    @torch.no_grad()
    def extract_train_features(self, parts: int | None) -> tuple[Tensor, Tensor | None, Tensor]:
        """Eval-mode pass over the training set (test transform) -> (normalised pool-5 (N, C), normalised
        parts (N, p, C, stored as `similarity.part_dtype`) or None, normalised embedding (N, d))."""
        dm = self.trainer.datamodule
        offsets = pooling_offsets(dm, "train")
        if offsets is not None:
            return self._extract_tracklet_features(parts, offsets)
        n, c = self.num_train, self.backbone.out_dim
        g = torch.zeros(n, c, device=self.device)
        emb = torch.zeros(n, self.table.features.shape[1], device=self.device)
        part_dtype = PART_DTYPES[self.cfg.similarity.part_dtype]
        pf = torch.zeros(n, parts, c, device=self.device, dtype=part_dtype) if parts else None
        with eval_mode(self):
            for batch in progress(dm.feature_dataloader("train"), "sslr features", self):
                index = batch["index"].to(self.device)
                fmap, pool5 = self._trunk(batch["image"].to(self.device))
                g[index] = F.normalize(pool5.float(), dim=1)
                emb[index] = self.embed(pool5).float()
                if pf is not None:
                    pf[index] = part_features(fmap.float(), parts).to(part_dtype)
        return g, pf, emb

    @torch.no_grad()
    def _extract_tracklet_features(self, parts: int | None, offsets: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """`extract_train_features` on video: a tracklet's pool-5 = the mean of its frames' pool-5 (as in
        training, `temporal_pool`), its embedding = the head on that mean, its part features = the mean of its
        frames' normalised part features, re-normalised (spec §6.12: "part features of a tracklet are the frame
        average"). Accumulated per tracklet, so memory is O(tracklets), not O(frames)."""
        dm = self.trainer.datamodule
        offsets = offsets.to(self.device)
        counts = (offsets[1:] - offsets[:-1]).float()
        owner = torch.repeat_interleave(torch.arange(counts.numel(), device=self.device), (offsets[1:] - offsets[:-1]))
        pool5_sum = torch.zeros(counts.numel(), self.backbone.out_dim, device=self.device)
        part_sum = torch.zeros(counts.numel(), parts, self.backbone.out_dim, device=self.device) if parts else None
        with eval_mode(self):
            for batch in progress(dm.feature_dataloader("train"), "sslr tracklet features", self):
                tracklet = owner[batch["index"].to(self.device)]
                fmap, pool5 = self._trunk(batch["image"].to(self.device))
                pool5_sum.index_add_(0, tracklet, pool5.float())
                if part_sum is not None:
                    part_sum.index_add_(0, tracklet, part_features(fmap.float(), parts))
            pool5 = pool5_sum / counts[:, None]
            emb = torch.cat([self.embed(chunk).float() for chunk in pool5.split(4096)])
        pf = None
        if part_sum is not None:
            pf = F.normalize(part_sum, dim=2).to(PART_DTYPES[self.cfg.similarity.part_dtype])
        return F.normalize(pool5, dim=1), pf, emb

    # ------------------------------------------------------------------------------------- lifecycle
    def on_fit_start(self) -> None:
        if not bool(self.table.initialised):
            if self.cfg.table.init == "zeros":
                self.table.initialised.fill_(True)
            else:  # V initialised with the embeddings of the initial network (spec §6.1)
                self.table.initialise(self.extract_train_features(None)[2])

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        # reseed per epoch: a resumed run draws what an uninterrupted run draws (dropout, augmentation)
        L.seed_everything(self.seed * 1000 + epoch, workers=True, verbose=False)
        iteration = self.schedule.iteration_of(epoch)
        if iteration >= 1 and (self.reliable is None or self.reliable_iteration != iteration):
            self._refresh_reliable(iteration)  # the first epoch of an iteration (or a checkpoint without sets)
        if self.reliable is not None:
            self.reliable = self.reliable.to(self.device)
        self.log("sslr/iteration", float(iteration), on_epoch=True, on_step=False)
        for key, value in self._reliable_stats.items():
            if iteration >= 1:
                self.log(key, value, on_epoch=True, on_step=False)
        self._epoch_t0 = time.perf_counter()
        self._epoch_images = 0

    def _refresh_reliable(self, iteration: int) -> None:
        """Steps 1-2 of an iteration: features of the current network, D (Eq. 7), reliable sets."""
        t0 = time.perf_counter()
        sim = self.cfg.similarity
        reliable = None
        if self.trainer.is_global_zero:
            parts = sim.parts if sim.lambda_p > 0 else None
            g, pf, _ = self.extract_train_features(parts)
            t1 = time.perf_counter()
            previous = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")  # TF32 would blur D by ~1e-3, on the scale of lambda_c
            try:
                reliable = reliable_sets(g, pf, self.camids.to(g.device), self.cfg.soft.k, lambda_p=sim.lambda_p,
                                         lambda_c=sim.lambda_c, block_rows=sim.block_rows).cpu()
            finally:
                torch.set_float32_matmul_precision(previous)
            self.log("time/extract_s", t1 - t0, on_epoch=True, on_step=False)
            del g, pf
        reliable = self.trainer.strategy.broadcast(reliable, src=0)
        self.reliable = reliable.to(self.device)
        self.reliable_iteration = iteration
        self._reliable_stats = self.reliable_statistics(self.reliable)
        self.log("time/reliable_s", time.perf_counter() - t0, on_epoch=True, on_step=False)

    def reliable_statistics(self, reliable: Tensor) -> dict[str, float]:
        """Cross-camera share of the reliable pairs and, against the hidden pids, their pair precision /
        recall (a diagnostic only: pids never reach the loss)."""
        reliable = reliable.cpu()
        cross = (self.camids.unsqueeze(1) != self.camids[reliable]).float().mean().item()
        stats = {"sslr/reliable_cross_camera": cross}
        if self._diagnostic_labels is not None:
            precision, recall = PositiveSets.from_neighbors(reliable).pair_precision_recall(self._diagnostic_labels)
            stats.update({"sslr/reliable_precision": precision, "labels/pair_precision": precision,
                          "labels/pair_recall": recall})
        return stats

    # -------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, index = batch["image"], batch["index"]
        pool5 = temporal_pool(lambda frames: self._trunk(frames)[1], x)  # video: the mean of the S frames' pool-5
        clean = self.embed(pool5)
        v = self.dropout(clean)  # spec §6.1: normalise, then dropout, feeds Eq. 1 and the table
        logits = instance_logits(v, self.table.features, self.cfg.tau)
        iteration = self.schedule.iteration_of(self.current_epoch)
        reliable = self.reliable[index] if iteration >= 1 and self.reliable is not None else None
        loss = softened_cross_entropy(logits, index, reliable, self.cfg.soft.lam)
        written = (v if self.cfg.table.write == "dropped" else clean).detach().float()
        if self.trainer.world_size > 1:  # every rank applies every rank's writes (replicas stay identical)
            index = self.all_gather(index).reshape(-1)
            written = self.all_gather(written).reshape(-1, written.shape[1])
        # V is written after the optimiser step: autograd still holds the V this loss was computed with
        self._pending = (index, written)
        self._epoch_images += x.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            self.write_table(*self._pending)
            self._pending = None

    @torch.no_grad()
    def write_table(self, index: Tensor, features: Tensor) -> None:
        """V_y <- normalise(m V_y + (1 - m) v) for each sample's own class y = its index (m = 0.5)."""
        self.table.update(index, features, 1.0 - self.cfg.table.momentum)

    def on_train_epoch_end(self) -> None:
        log_epoch_timing(self, self._epoch_t0, self._epoch_images)
        epoch = self.current_epoch
        done = bool(self.history) and self.history[-1]["epoch"] == epoch + 1  # Lightning validated already
        if self.cfg.schedule.eval_at_iteration_ends and self.schedule.ends_iteration(epoch) and not done:
            self.evaluate_now()

    @torch.no_grad()
    def evaluate_now(self) -> None:
        """Query/gallery evaluation outside Lightning's validation loop (Fig. 4(a): one point per iteration)."""
        dm = self.trainer.datamodule
        with eval_mode(self):
            for loader_idx, split in enumerate(("query", "gallery")):
                for batch_idx, batch in enumerate(dm.feature_dataloader(split)):
                    batch = {"image": batch["image"].to(self.device), "index": batch["index"].to(self.device)}
                    self.validation_step(batch, batch_idx, loader_idx)
            self.on_validation_epoch_end()

    def on_validation_epoch_end(self) -> None:
        before = len(self.history)
        super().on_validation_epoch_end()
        if len(self.history) > before:  # tag the entry with its stage / iteration
            record = self.history[-1]
            epoch = int(record["epoch"]) - 1
            iteration = self.schedule.iteration_of(epoch)
            record["iteration"] = iteration
            record["iteration_end"] = self.schedule.ends_iteration(epoch)
            if iteration >= 1 and "sslr/reliable_precision" in self._reliable_stats:
                record["reliable_precision"] = self._reliable_stats["sslr/reliable_precision"]

    # ------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        c = self.optim_cfg
        new = list(self.head.parameters()) if self.head is not None else list(self.backbone.bn.parameters())
        groups = [
            {"name": "backbone", "params": list(self.backbone.body.parameters()), "lr": c["lr_backbone"]},
            {"name": "new", "params": new, "lr": c["lr_new"]},
        ]
        optimizer = torch.optim.SGD(groups, lr=c["lr_backbone"], momentum=c["momentum"],
                                    weight_decay=c["weight_decay"], nesterov=c["nesterov"])
        factor = lr_factor_fn(self.schedule.stage0, list(c["milestones"]), float(c["lr_gamma"]),
                              float(self.cfg.schedule.iteration_lr_scale))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sslr"] = {
            "reliable": None if self.reliable is None else self.reliable.cpu().clone(),
            "reliable_iteration": self.reliable_iteration,
            "history": list(self.history),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("sslr")
        if state is None:
            return
        self.reliable = state["reliable"]
        self.reliable_iteration = int(state["reliable_iteration"])
        self.history = list(state.get("history", []))
        self._reliable_stats = {} if self.reliable is None else self.reliable_statistics(self.reliable)


def build_module(run: RunContext, **method: Any) -> SSLRModule:
    """The `_target_` of the SSLR rows; `method.*` is checked by `config_from_method`."""
    cfg, train = run.cfg, run.train
    return SSLRModule(
        run.backbone,
        torch.tensor([r.camid for r in train], dtype=torch.long),  # camera IDs: explicit in SSLR (CCE)
        max_epochs=int(cfg.max_epochs),
        config=config_from_method(method),
        optim=run.section("optim"),
        diagnostic_labels=torch.tensor([r.pid for r in train], dtype=torch.long),  # reliable-set precision only
        eval_metric=cfg.eval_metric,
        seed=int(cfg.seed),
    )
