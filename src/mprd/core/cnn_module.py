"""The CNN side of MPRD (§3.1, §4.1) as a LightningModule: backbone → memory (Eq. 1) → BD loss (Eqs. 2-3).

The pseudo-label generator is pluggable (single / super / knn / ss / mplp / mprd's GCN). Positive sets
are refreshed at epoch starts on rank 0 and broadcast (spec ambiguity 22: per-epoch refresh; Algorithm 1
refreshes per image, per-epoch is the cheaper approximation, recorded in docs/decisions-mprd.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mprd.core.config import RunContext
from mprd.core.generator import PseudoLabelGenerator
from mprd.core.memory import FeatureMemory, gamma_schedule
from mprd.core.positive_sets import PositiveSets
from mprd.core.reid_module import (
    QueryGalleryEvaluation,
    eval_mode,
    log_epoch_timing,
    pooling_offsets,
    progress,
    temporal_pool,
)
from mprd.methods.mlcr.mmcl import mmcl_terms
from mprd.methods.mprd.losses import binomial_deviance_loss


@dataclass
class LossConfig:
    name: str = "bd"  # bd = binomial deviance (MPRD Eq. 2) | mmcl (MLCR Eq. 17)
    delta: float = 5.0
    alpha: float = 4.0
    margin_pos: float = 0.2
    margin_neg: float = 0.2
    neg_ratio: float = 0.01


@dataclass
class OptimConfig:
    lr_backbone: float = 0.01
    lr_new: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    milestones: list[int] = field(default_factory=lambda: [20])
    lr_gamma: float = 0.1


@dataclass
class LabelConfig:
    start_epoch: int = 0  # epochs before this use P_i = {i}
    refresh_every: int = 1  # epochs between refreshes
    # recompute the batch anchors' P_i from the current memory at every step (MLCR's release calls MPLP per
    # iteration); the per-epoch refresh still runs for the label statistics. Needs a generator with `anchors`.
    per_batch: bool = False


@dataclass
class MemoryConfig:
    init: str = "forward"  # forward = features of the initial CNN (MPRD) | zeros (MLCR §3.1)
    write: str = "before_loss"  # MPRD §4.1 writes before the loss; MLCR's release after it
    gamma_start: float = 1.0  # weight of the new feature at the first epoch (Eq. 1)
    gamma_end: float = 0.5  # ... at the last epoch
    # set the head BN's running statistics to the training set's pool-5 statistics before the init pass,
    # so init slots and train-mode writes (batch-statistics BN) live in one centred feature space
    calibrate_bn: bool = True
    # none = Eq. 1 writes only (the paper) | clean = at every label refresh, re-set each slot to the current
    # network's feature of the un-augmented image, so labels are not read from augmented train-mode views
    # written up to an epoch earlier (docs/dynamics.md, the memory collapse)
    refresh: str = "none"

    def __post_init__(self) -> None:
        if self.init not in ("forward", "zeros"):
            raise ValueError(f"method.memory.init={self.init!r}; expected 'forward' or 'zeros'")
        if self.write not in ("before_loss", "after_loss"):
            raise ValueError(f"method.memory.write={self.write!r}; expected 'before_loss' or 'after_loss'")
        if self.refresh not in ("none", "clean"):
            raise ValueError(f"method.memory.refresh={self.refresh!r}; expected 'none' or 'clean'")


class CNNModule(QueryGalleryEvaluation):
    def __init__(
        self,
        backbone: nn.Module,
        num_train: int,
        generator: PseudoLabelGenerator,
        *,
        max_epochs: int,
        loss: dict | LossConfig | None = None,
        optim: dict | OptimConfig | None = None,
        labels: dict | LabelConfig | None = None,
        memory: dict | MemoryConfig | None = None,
        diagnostic_labels: Tensor | None = None,
        diagnostic_cams: Tensor | None = None,
        diagnostics_every: int = 1,
        excluded_slots: Tensor | None = None,
        eval_metric: str = "cosine",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.memory = FeatureMemory(num_train, backbone.out_dim)
        self.generator = generator
        self.max_epochs = max_epochs
        self.loss_cfg = _as(LossConfig, loss)
        self.optim_cfg = _as(OptimConfig, optim)
        self.label_cfg = _as(LabelConfig, labels)
        self.memory_cfg = _as(MemoryConfig, memory)
        if self.loss_cfg.name not in ("bd", "mmcl"):
            raise ValueError(f"method.loss.name={self.loss_cfg.name!r}; expected 'bd' or 'mmcl'")
        self.eval_metric = eval_metric
        self.seed = int(seed)
        self._pending_write: tuple[Tensor, Tensor] | None = None
        # hidden ground truth, for the pseudo-label precision/recall diagnostic only; never used in a loss
        self._diagnostic_labels = None if diagnostic_labels is None else torch.as_tensor(diagnostic_labels).long()
        self._diagnostic_cams = None if diagnostic_cams is None else torch.as_tensor(diagnostic_cams).long()
        self.diagnostics_every = int(diagnostics_every)
        self.diag_history: list[dict[str, float]] = []
        # slots the CNN never learns from (MPRD's meta images under method.meta.exclude_from_cnn): their
        # features are still written (the GCN's meta structures need them), but they carry no loss and are
        # never a positive or a hard negative of another image
        self.excluded_slots = None if excluded_slots is None else torch.as_tensor(excluded_slots).bool()
        if self.excluded_slots is not None and self.loss_cfg.name != "bd":
            raise ValueError("method.meta.exclude_from_cnn needs method.loss.name=bd (MPRD's loss)")
        self.positives = PositiveSets.singletons(num_train)
        self.gamma = gamma_schedule(0, max_epochs, self.memory_cfg.gamma_start, self.memory_cfg.gamma_end)
        self._epoch_t0 = 0.0
        self._epoch_images = 0
        self.dead_units = 0  # pool-5 units without variance at the last clean extraction (docs/dynamics.md cause 7)

    # ------------------------------------------------------------------------------------------ setup
    def on_fit_start(self) -> None:
        if not bool(self.memory.initialised):
            if self.memory_cfg.init == "zeros":  # MLCR: "initialized to all zeros"
                self.memory.initialised.fill_(True)
                self._record_diagnostics(0)
            else:
                clean = self.extract_train_features(calibrate_bn=self.memory_cfg.calibrate_bn)
                self.memory.initialise(clean)
                self._record_diagnostics(0, clean)

    @torch.no_grad()
    def extract_train_features(self, calibrate_bn: bool = False) -> Tensor:
        """Forward pass over the whole training set (test transform, eval mode) → N x d L2-normalised BN features.

        With `calibrate_bn` the head BN's running mean/variance are first set to the pool-5 statistics of the
        whole training set. Without it an untrained head BN is an identity in eval mode, so the slots would
        hold non-negative pool-5 features (almost every pair at a high cosine) while every train-mode write
        is centred by batch statistics: two feature spaces in one memory (docs/dynamics.md, cause A).
        """
        dm = self.trainer.datamodule
        with eval_mode(self):
            offsets = pooling_offsets(dm, "train")  # video: frames of every tracklet, pooled below
            rows = self.memory.num_slots if offsets is None else int(offsets[-1])
            pool5 = torch.zeros(rows, self.backbone.out_dim, device=self.device)
            for batch in progress(dm.feature_dataloader("train"), "train features", self):
                x = batch["image"].to(self.device)
                pool5[batch["index"].to(self.device)] = self.backbone.forward_features(x)[0]
            if calibrate_bn:
                self.backbone.calibrate_head_bn(pool5)
            from mprd.diagnostics import dead_units

            self.dead_units = dead_units(pool5)  # no identities read: logged with the diagnostics
            feats = self.backbone.bn(pool5)
            if offsets is not None:  # a tracklet's feature = the mean of its frames' BN features (as in training)
                from mprd.core.video_evaluation import tracklet_features

                feats = tracklet_features(feats, offsets.to(feats.device), normalize=False)
            return F.normalize(feats, dim=1)

    def _diagnostics_due(self, epochs_trained: int) -> bool:
        if self._diagnostic_labels is None or self._diagnostic_cams is None or self.diagnostics_every <= 0:
            return False
        return epochs_trained % self.diagnostics_every == 0 or epochs_trained == self.max_epochs

    def _record_diagnostics(self, epochs_trained: int, clean: Tensor | None = None) -> None:
        """8-NN precision (same/cross camera) of the memory and of clean training features (test transform).

        Reads the hidden ground truth: logged and kept in `diag_history` (metrics.json), never used in training.
        """
        if not self._diagnostics_due(epochs_trained):
            return
        from mprd.diagnostics import knn_precision_logs

        if clean is None:
            clean = self.extract_train_features()
        pids, cams = self._diagnostic_labels, self._diagnostic_cams
        record: dict[str, float] = {"epoch": float(epochs_trained)}
        record.update(knn_precision_logs("clean", clean, pids, cams))
        record["clean/dead_units"] = float(self.dead_units)
        if bool(self.memory.features.abs().sum() > 0):  # MLCR's zero memory has no neighbours yet
            record.update(knn_precision_logs("memory", self.memory.features, pids, cams))
        self.diag_history.append(record)
        if epochs_trained > 0:  # logging is only allowed inside the training loop
            for key, value in record.items():
                if key != "epoch":
                    self.log(f"diag/{key}", value, on_epoch=True, on_step=False)

    # ----------------------------------------------------------------------------------- pseudo labels
    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        # reseed per epoch: a run resumed from a checkpoint then draws what an uninterrupted run draws
        L.seed_everything(self.seed * 1000 + epoch, workers=True, verbose=False)
        self.gamma = gamma_schedule(epoch, self.max_epochs, self.memory_cfg.gamma_start, self.memory_cfg.gamma_end)
        cfg = self.label_cfg
        due = epoch >= cfg.start_epoch and (epoch - cfg.start_epoch) % max(cfg.refresh_every, 1) == 0
        clean = None
        refresh_clean = due and self.memory_cfg.refresh == "clean"
        if epoch > 0 and (refresh_clean or self._diagnostics_due(epoch)):
            clean = self.extract_train_features()
        if epoch > 0:
            self._record_diagnostics(epoch, clean)  # the state after `epoch` epochs, before any refresh
        if refresh_clean and clean is not None:
            self.memory.initialise(clean)
        if due:
            t0 = time.perf_counter()
            positives, state = None, None
            if self.trainer.is_global_zero:
                positives = self.generator.refresh(self.memory.features, epoch=epoch, module=self)
                if self.trainer.world_size > 1 and self.generator.state_dict():
                    # MPRD's GCN, trained on rank 0 only; sent from the CPU so no rank unpickles onto rank 0's GPU
                    state = L.pytorch.utilities.move_data_to_device(self.generator.state_dict(), "cpu")
            positives, state = self.trainer.strategy.broadcast((positives, state), src=0)
            if state is not None and not self.trainer.is_global_zero:
                self.generator.load_state_dict(state)  # every rank holds rank 0's GCN (and checkpoints agree)
            self.positives = self.generator.override(positives)
            self.log("time/refresh_s", time.perf_counter() - t0, on_epoch=True, on_step=False)
            for key, value in self.generator.last_stats.items():
                self.log(key, float(value), on_epoch=True, on_step=False)
        elif epoch < cfg.start_epoch:
            self.positives = self.generator.override(PositiveSets.singletons(self.memory.num_slots))
        self._log_label_statistics()
        self._epoch_t0 = time.perf_counter()
        self._epoch_images = 0

    def _log_label_statistics(self) -> None:
        sizes = self.positives.sizes.float()
        stats = {"labels/P_mean": sizes.mean().item(), "labels/P_median": sizes.median().item(), "gamma": self.gamma}
        if self._diagnostic_labels is not None:
            precision, recall = self.positives.pair_precision_recall(self._diagnostic_labels)
            stats.update({"labels/pair_precision": precision, "labels/pair_recall": recall})
        for key, value in stats.items():
            self.log(key, value, on_epoch=True, on_step=False)

    # --------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, index = batch["image"], batch["index"]
        feats = F.normalize(temporal_pool(self.backbone, x), dim=1)  # video: (B, S, ...) frames -> one per tracklet
        # Eq. 1 before the loss (§4.1 steps 1-3); all ranks write all ranks' batches (DDP-ready)
        all_index, all_feats = index, feats.detach()
        if self.trainer.world_size > 1:
            all_index = self.all_gather(index).reshape(-1)
            all_feats = self.all_gather(feats.detach()).reshape(-1, feats.shape[1])
        if self.memory_cfg.write == "before_loss":
            self.memory.update(all_index, all_feats, self.gamma)
        else:  # MLCR: the loss sees the memory as it was before this batch; written after the step
            self._pending_write = (all_index, all_feats)
        loss, terms = self._loss(feats, index)
        self._epoch_images += x.shape[:-3].numel()  # frames, for video
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        for key, value in terms.items():
            self.log(f"train/{key}", value, on_step=False, on_epoch=True)
        return loss

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        # before any clipping (trainer.gradient_clip_val): the norm the loss asked for, a collapse early warning
        norms = [p.grad.detach().norm() for p in self.parameters() if p.grad is not None]
        if norms:
            self.log("train/grad_norm", torch.stack(norms).norm(), on_step=False, on_epoch=True)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after backward and the optimiser step: an in-place write before backward would corrupt the graph
        pending, self._pending_write = self._pending_write, None
        if pending is not None:
            self.memory.update(*pending, self.gamma)

    def batch_positives(self, index: Tensor) -> PositiveSets:
        """P_i for this step: the epoch's sets, or (labels.per_batch) the batch anchors' sets from the memory as
        it is now. Every rank holds the same memory replica, so under DDP each computes its own batch alike."""
        if not self.label_cfg.per_batch or self.current_epoch < self.label_cfg.start_epoch:
            return self.positives
        fresh = self.generator.refresh(
            self.memory.features, anchors=index.detach(), epoch=self.current_epoch, module=self
        )
        return self.generator.override(fresh)

    def _loss(self, feats: Tensor, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.loss_cfg
        if self.excluded_slots is not None:
            keep = ~self.excluded_slots.to(index.device)[index]
            if not bool(keep.any()):  # a batch of excluded images only: no CNN signal
                zero = feats.sum() * 0.0
                return zero, {"loss_pos": zero.detach(), "loss_neg": zero.detach()}
            feats, index = feats[keep], index[keep]
        positives = self.batch_positives(index)
        if c.name == "mmcl":
            pos, neg = mmcl_terms(feats, self.memory.features, index, positives, r=c.neg_ratio)
            loss = (c.delta * pos + neg).mean()
            return loss, {"loss_pos": pos.mean().detach(), "loss_neg": neg.mean().detach()}
        return binomial_deviance_loss(
            feats,
            self.memory.features,
            index,
            positives,
            delta=c.delta,
            alpha=c.alpha,
            margin_pos=c.margin_pos,
            margin_neg=c.margin_neg,
            neg_ratio=c.neg_ratio,
            exclude_slots=self.excluded_slots,
        )

    def on_train_epoch_end(self) -> None:
        log_epoch_timing(self, self._epoch_t0, self._epoch_images)
        if self.current_epoch + 1 == self.max_epochs:  # earlier epochs are measured at the next epoch start
            self._record_diagnostics(self.max_epochs)

    # ------------------------------------------------------------------------------------- optimiser
    def configure_optimizers(self) -> Any:
        cfg = self.optim_cfg
        groups = self.backbone.param_groups(cfg.lr_backbone, cfg.lr_new)
        optimizer = torch.optim.SGD(
            groups, lr=cfg.lr_backbone, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.lr_gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    # ------------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pseudo_labels"] = {
            "positives": self.positives.to_state(),
            "history": list(self.history),
            "diag_history": list(self.diag_history),
        }
        generator_state = self.generator.state_dict()
        if generator_state:  # generators without state (every row but MPRD) add nothing
            checkpoint["pseudo_labels"]["generator"] = generator_state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("pseudo_labels")
        if state is None:
            return
        self.positives = PositiveSets.from_state(state["positives"])
        self.history = list(state.get("history", []))
        self.diag_history = list(state.get("diag_history", []))
        if "generator" in state:
            self.generator.load_state_dict(state["generator"])


def _as(cls: type, value: Any) -> Any:
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls(**dict(value))


def memory_method(
    run: RunContext,
    generator: PseudoLabelGenerator,
    *,
    labels: dict[str, Any],
    memory: dict[str, Any],
    loss: dict[str, Any],
    excluded_slots: Tensor | None = None,
) -> CNNModule:
    """The CNN module of a memory-trained row (Table 1, MLCR, MPRD) around its generator; `labels`,
    `memory` and `loss` are the row's `method.*` sections, the rest comes from the run's config."""
    cfg = run.cfg
    train_labels = run.train_pids()
    return CNNModule(
        run.backbone,
        num_train=len(run.train),
        generator=generator,
        max_epochs=cfg.max_epochs,
        loss=loss,
        optim=run.section("optim"),
        labels=labels,
        memory=memory,
        diagnostic_labels=train_labels,  # pseudo-label precision/recall and kNN diagnostics only
        diagnostic_cams=run.train_camids(),
        diagnostics_every=int(cfg.get("diagnostics_every", 1)),
        excluded_slots=excluded_slots,
        eval_metric=cfg.eval_metric,
        seed=int(cfg.seed),
    )
