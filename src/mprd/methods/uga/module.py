"""UGA's Algorithm 1 in one Lightning fit with manual optimisation: stage 1 (intra-camera), the transition
(centres replace the classifier weights, a fresh Adam), stage 2 (inter-camera, the CVG rebuilt at every
epoch start), each stage with its own step-decayed lr. `build_module` is the `_target_` of the `uga*` rows."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from mprd.core.config import RunContext
from mprd.core.reid_module import QueryGalleryEvaluation, pooling_offsets, progress
from mprd.methods.uga.config import UGAConfig
from mprd.methods.uga.cvg import CrossViewGraph, build_cvg, cvg_statistics
from mprd.methods.uga.inter_camera import inter_camera_loss, tracklet_centres
from mprd.methods.uga.intra_camera import branch_columns, class_logits, intra_camera_loss
from mprd.methods.uga.model import UGAEncoder, embed_images
from mprd.methods.uga.tracklets import one_tracklet_per_camera, tracklet_pids, tracklets_from_records


def milestone_epochs(fractions: Sequence[float], length: int) -> list[int]:
    """Epochs (counted from the stage start) where the lr drops: fractions of the stage, rounded half up,
    at least 1 (UGA §4.2: 0.5 and 0.75 of 80 = epochs 40 and 60)."""
    return [max(1, math.floor(f * length + 0.5)) for f in fractions]


class UGAModule(QueryGalleryEvaluation):
    """Two-stage UGA training (Algorithm 1) with manual optimisation: one Adam per stage."""

    def __init__(
        self,
        encoder: UGAEncoder,
        tracklet_of_image: Tensor,
        camera_of_tracklet: Tensor,
        *,
        config: UGAConfig,
        max_epochs: int,
        eval_metric: str = "cosine",
        seed: int = 0,
        diagnostic_pids: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.gradient_clip_val: float | None = None  # set by mprd.train from trainer.gradient_clip_val
        self.backbone = encoder  # the name QueryGalleryEvaluation uses (`.extract`)
        self.config = config
        self.intra_epochs, self.inter_epochs = config.stage_epochs(int(max_epochs))
        # an intra-only run ends (and is reported) after stage 1
        self.max_epochs = self.intra_epochs + self.inter_epochs
        self.eval_metric, self.seed = eval_metric, int(seed)
        cams, branch = torch.unique(camera_of_tracklet.long(), sorted=True, return_inverse=True)
        self.camids = cams.tolist()
        self.num_tracklets, self.num_branches = int(branch.numel()), len(self.camids)
        if int(tracklet_of_image.max()) >= self.num_tracklets or int(tracklet_of_image.min()) < 0:
            raise ValueError("tracklet_of_image must hold ids in [0, len(camera_of_tracklet))")
        columns, valid = branch_columns(branch, self.num_branches)
        self.register_buffer("tracklet_of_image", tracklet_of_image.long().clone(), persistent=False)
        self.register_buffer("branch_of_tracklet", branch, persistent=False)
        self.register_buffer("columns", columns, persistent=False)
        self.register_buffer("columns_valid", valid, persistent=False)
        pids = diagnostic_pids.long() if diagnostic_pids is not None else torch.full((self.num_tracklets,), -1)
        self.register_buffer("diagnostic_pids", pids, persistent=False)  # CVG precision only, never a loss
        self._has_diagnostics = diagnostic_pids is not None
        # the multi-branch classifier: rows of branch t are camera t's tracklets; stage 2 holds the centres
        init = torch.randn(self.num_tracklets, encoder.out_dim) * config.model.classifier_init_std
        self.classifier = nn.Parameter(init)
        self.stage = 1
        self.graph: CrossViewGraph | None = None
        self._epoch_t0, self._epoch_images = 0.0, 0

    # ------------------------------------------------------------------------------------ stage logic
    def stage_of_epoch(self, epoch: int) -> int:
        return 1 if epoch < self.intra_epochs else 2

    def on_fit_start(self) -> None:
        if self.trainer.world_size > 1:
            raise ValueError(f"method.family=uga with {self.trainer.world_size} processes: UGA has no DDP path (its "
                             "camera-balanced batches, multi-branch classifier rows and cross-view graph assume one "
                             "process holds every camera's samples); use trainer.devices=1 trainer.num_nodes=1 and "
                             "run seeds or rows in parallel with the launcher (docs/cluster.md)")

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if epoch >= self.max_epochs:  # a finished intra-only run resumed from its checkpoint
            self.trainer.should_stop = True
            return
        if self.stage_of_epoch(epoch) == 2 and self.stage == 1:
            self.transition()
        if self.stage == 2:  # CVG refresh from the current centre weights (spec §8.1: every epoch)
            self.refresh_graph()
        self._set_learning_rates(epoch)
        self.log("uga/stage", float(self.stage), on_epoch=True, on_step=False)
        # reseed last: a resumed run then draws what an uninterrupted run draws
        L.seed_everything(self.seed * 1000 + epoch, workers=True, verbose=False)
        self._epoch_t0, self._epoch_images = time.perf_counter(), 0

    @torch.no_grad()
    def extract_train_features(self) -> tuple[Tensor, Tensor]:
        """(φ (eval mode, test transform, unnormalised), tracklet of each row) over the train features pass:
        every training image in record order; on video the pass's frames (`data.video.train_frames` of each
        tracklet; the UGA video experiments set null = every frame, as the centres of Eq. 3 ask)."""
        dm = self.trainer.datamodule
        loader = progress(dm.feature_dataloader("train"), "tracklet centres", self)
        offsets = pooling_offsets(dm, "train")
        if offsets is None:
            feats = embed_images(self.backbone, loader, self.tracklet_of_image.numel(), self.device)
            return feats, self.tracklet_of_image
        feats = embed_images(self.backbone, loader, int(offsets[-1]), self.device)
        return feats, self.tracklet_of_image[dm.feature_rows("train").to(self.device)]

    @torch.no_grad()
    def transition(self) -> None:
        """Stage 1 → 2: centres (Eq. 3) replace the classifier weights; stage 1's Adam state is dropped."""
        t0 = time.perf_counter()
        centres = tracklet_centres(*self.extract_train_features(), self.num_tracklets)
        self.classifier.copy_(centres.to(self.classifier))
        self.stage = 2
        optimizers = self.optimizers()
        if isinstance(optimizers, list):
            optimizers[0].optimizer.state.clear()
        self.log("time/transition_s", time.perf_counter() - t0, on_epoch=True, on_step=False)

    def refresh_graph(self) -> None:
        g = self.config.cvg
        self.graph = build_cvg(self.classifier.detach(), self.branch_of_tracklet, k=g.k, threshold=g.threshold)
        stats = cvg_statistics(self.graph, self.diagnostic_pids if self._has_diagnostics else None,
                               self.branch_of_tracklet)
        for key, value in stats.items():
            self.log(key, value, on_epoch=True, on_step=False)

    def _stage_optimizer(self) -> Any:
        optimizers = self.optimizers()
        return optimizers[self.stage - 1] if isinstance(optimizers, list) else optimizers

    def _set_learning_rates(self, epoch: int) -> None:
        """Step decay inside each stage: ×gamma at each milestone (a fraction of the stage, rounded)."""
        o = self.config.optim
        start, length = (0, self.intra_epochs) if self.stage == 1 else (self.intra_epochs, self.inter_epochs)
        passed = sum(epoch - start >= m for m in milestone_epochs(o.milestones, length))
        lr = o.lr * o.gamma**passed
        for group in self._stage_optimizer().param_groups:
            group["lr"] = lr * (o.network_lr_scale if group.get("name") == "network" else 1.0)
        self.log("lr/stage", lr, on_epoch=True, on_step=False)

    # --------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, index = batch["image"], batch["index"]
        tracklet = self.tracklet_of_image[index]  # video: index = frame row, tracklet_of_image is per frame
        feats = self.backbone(x)
        lg = self.config.logits
        if self.stage == 1:
            logits = class_logits(feats, self.classifier, lg.intra, lg.scale)
            loss = intra_camera_loss(logits, tracklet, self.branch_of_tracklet, self.columns, self.columns_valid).mean()
            self.log("train/loss_intra", loss.detach(), on_step=False, on_epoch=True)
        else:
            if self.graph is None:
                self.refresh_graph()
            logits = class_logits(feats, self.classifier, lg.inter, lg.scale)
            self_term, cross = inter_camera_loss(
                logits, tracklet, self.branch_of_tracklet, self.graph, self.columns, self.columns_valid,
                self_weight=self.config.loss.self_weight, uniform=self.config.loss.edge_weighting == "uniform",
            )
            loss = (self_term + cross).mean()
            self.log("train/loss_self", self_term.mean().detach(), on_step=False, on_epoch=True)
            self.log("train/loss_cross", cross.mean().detach(), on_step=False, on_epoch=True)
        optimizer = self._stage_optimizer()
        optimizer.zero_grad()
        self.manual_backward(loss)
        if self.gradient_clip_val:  # the preset's trainer.gradient_clip_val, which manual optimisation must apply
            self.clip_gradients(optimizer, gradient_clip_val=self.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()
        self._epoch_images += x.shape[0]
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True)
        return loss.detach()

    def on_train_epoch_end(self) -> None:
        elapsed = time.perf_counter() - self._epoch_t0
        self.log("time/epoch_s", elapsed, on_epoch=True, on_step=False)
        self.log("time/images_per_s", self._epoch_images / max(elapsed, 1e-9), on_epoch=True, on_step=False)
        if self.current_epoch + 1 >= self.max_epochs:
            self.trainer.should_stop = True  # intra-only runs stop before the trainer's max_epochs

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        # the final validate() of train.py may repeat the last epoch: keep one record per epoch
        if len(self.history) >= 2 and self.history[-1]["epoch"] == self.history[-2]["epoch"]:
            del self.history[-2]

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Two Adams over the same parameters: stage 1's, and the fresh one that Algorithm 1's reset starts."""
        o = self.config.optim

        def adam(classifier_decay: float) -> torch.optim.Optimizer:
            groups = [
                {"name": "network", "params": list(self.backbone.parameters()), "weight_decay": o.weight_decay,
                 "lr": o.lr * o.network_lr_scale},
                {"name": "classifier", "params": [self.classifier], "weight_decay": classifier_decay},
            ]
            return torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas))

        return [adam(o.classifier_weight_decay), adam(o.centre_weight_decay)]

    # ------------------------------------------------------------------------------------ checkpoints
    def stage_state(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "graph": None if self.graph is None else self.graph.to_state(),
            "tracklet_of_image": self.tracklet_of_image.cpu(),
            "history": list(self.history),
        }

    def load_stage_state(self, state: Mapping[str, Any]) -> None:
        saved = state["tracklet_of_image"]
        if saved.shape != self.tracklet_of_image.shape or not torch.equal(saved.cpu(), self.tracklet_of_image.cpu()):
            raise ValueError("checkpoint: its tracklets differ from this run's (another dataset, split or seed?)")
        self.stage = int(state["stage"])
        self.graph = None if state["graph"] is None else CrossViewGraph.from_state(state["graph"]).to(self.device)
        self.history = list(state.get("history", []))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["uga"] = self.stage_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "uga" in checkpoint:
            self.load_stage_state(checkpoint["uga"])


def build_module(run: RunContext, **method: Any) -> UGAModule:
    """The `_target_` of the UGA rows: tracklets from the train split, camera-balanced batches, the two-stage
    module; `method.*` is checked by `UGAConfig.from_method`."""
    cfg, datamodule, backbone = run.cfg, run.datamodule, run.backbone
    config = UGAConfig.from_method(method)
    video = bool(getattr(datamodule, "is_video", False))
    if video:
        _restrict_video_tracklets(datamodule, config, int(cfg.seed))
    records = datamodule.data.train
    # video: one tracklet id per train frame (the camera-balanced loader's index is the frame row)
    tracklet, camera = tracklets_from_records(records, seed=int(cfg.seed), noise=config.noise, real=video)
    # UGA's batches hold the same number of images per camera (§4.2); Lightning takes the data module's
    # train_dataloader, so this instance's loader is pointed at the camera-balanced one
    datamodule.train_dataloader = functools.partial(datamodule.camera_balanced_dataloader)
    encoder = UGAEncoder(backbone, config.model.head, config.model.embed_dim, config.model.dropout)
    return UGAModule(
        encoder,
        tracklet,
        camera,
        config=config,
        max_epochs=int(cfg.max_epochs),
        eval_metric=cfg.eval_metric,
        seed=int(cfg.seed),
        diagnostic_pids=tracklet_pids(records, tracklet),
    )


def _restrict_video_tracklets(datamodule: Any, config: UGAConfig, seed: int) -> None:
    """Real tracklets (§4.1): with `method.video.tracklets=one_per_camera` (the paper's MARS protocol), one
    tracklet per (person, camera) drawn at random, the others dropped from training; a no-op on PRID2011 and
    iLIDS-VID, which hold one per person and camera."""
    records = datamodule.data.train
    if config.video.tracklets == "one_per_camera":
        keep = one_tracklet_per_camera(records, seed)
        if len(keep) < len(records):
            datamodule.restrict_train(keep)
