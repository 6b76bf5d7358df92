"""Query/gallery evaluation for any re-ID LightningModule (one place for every method).

The module provides `backbone.extract(x)` (the L2-normalised test feature) and a `max_epochs`; Lightning's
validation loop feeds `[query, gallery]` loaders (the data module's `val_dataloader`). Under DDP Lightning
gives each rank a share of query and gallery (padded with repeats); the ranks' (index, feature) rows are
all-gathered and de-duplicated by index, so every rank evaluates the whole query/gallery and reports the
numbers one process would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from torch import Tensor

from mprd.core.evaluation import evaluate


class QueryGalleryEvaluation(L.LightningModule):
    """Mixin: collects query/gallery features in validation and logs Rank-1/5/10, mAP, mINP (Market protocol)."""

    eval_metric: str = "cosine"
    max_epochs: int = 1

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._val_feats: dict[int, list[Tensor]] = {}
        self.history: list[dict[str, float]] = []

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        # fp32: the slot index rides in column 0 (bf16 holds integers exactly only up to 256)
        feats = self.backbone.extract(batch["image"]).float()
        rows = torch.cat([batch["index"].unsqueeze(1).to(feats), feats], 1)
        self._val_feats.setdefault(dataloader_idx, []).append(rows)

    def on_validation_epoch_end(self) -> None:
        if len(self._val_feats) < 2:
            self._val_feats = {}
            return
        q, g = (_ordered(self._gather_rows(torch.cat(self._val_feats[i]))) for i in (0, 1))
        self._val_feats = {}
        metrics = self._query_gallery_metrics(q, g)
        for key, value in metrics.items():
            self.log(f"eval/{key}", float(value), on_epoch=True, prog_bar=key in ("rank1", "mAP"))
        # after fit, current_epoch == max_epochs: the final validate() belongs to the last epoch
        record = {"epoch": min(self.current_epoch + 1, self.max_epochs), **metrics}
        self.history.append(record)

    def _gather_rows(self, rows: Tensor) -> Tensor:
        """Every rank's (index, feature) rows under DDP (this rank's alone otherwise); ranks may hold unequal counts."""
        if self.trainer.world_size <= 1:
            return rows
        counts = self.all_gather(torch.tensor([rows.shape[0]], device=rows.device)).reshape(-1)
        padded = torch.zeros(int(counts.max()), rows.shape[1], device=rows.device, dtype=rows.dtype)
        padded[: rows.shape[0]] = rows
        gathered = self.all_gather(padded)  # (world, max count, 1 + d)
        return torch.cat([gathered[r, : int(n)] for r, n in enumerate(counts.tolist())])

    def _query_gallery_metrics(self, q: Tensor, g: Tensor) -> dict[str, float]:
        dm = self.trainer.datamodule
        if getattr(dm, "is_video", False):
            return video_metrics(dm, q, g, self.eval_metric)
        qp, qc = _ids(dm.data.query)
        gp, gc = _ids(dm.data.gallery)
        metrics = evaluate(q, g, qp, qc, gp, gc, metric=self.eval_metric).as_dict(percent=True)
        return {k: float(v) for k, v in metrics.items()}

    @torch.no_grad()
    def evaluate_initial(self) -> dict[str, float]:
        """Evaluate the network before any training step ("ImageNet (untrained)", MLCR Table 2's first row);
        recorded as epoch 0 of `history`. Mode is restored afterwards."""
        feats = []
        with eval_mode(self):
            for loader in self.trainer.datamodule.val_dataloader():
                rows = []
                for batch in loader:
                    f = self.backbone.extract(batch["image"].to(self.device))
                    rows.append(torch.cat([batch["index"].unsqueeze(1).to(f), f], 1))
                feats.append(_ordered(rows))
        metrics = self._query_gallery_metrics(*feats)
        self.history.insert(0, {"epoch": 0, **metrics})
        return metrics


def _ordered(chunks: list[Tensor] | Tensor) -> Tensor:
    """Features in record order; a row repeated (DDP's padding of the last share) is kept once."""
    rows = torch.cat(chunks) if isinstance(chunks, list) else chunks
    rows = rows[torch.argsort(rows[:, 0], stable=True)]
    first = torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    first[1:] = rows[1:, 0] != rows[:-1, 0]
    return rows[first, 1:]


def _ids(records) -> tuple[Tensor, Tensor]:
    return torch.tensor([r.pid for r in records]), torch.tensor([r.camid for r in records])


def temporal_pool(forward: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """`forward(x)` for images (B, C, H, W); for tracklets (B, S, C, H, W) the mean over S of the frames'
    features (temporal average pooling, SSLR §3): one (B·S, C, H, W) forward pass, reshaped, averaged."""
    if x.dim() != 5:
        return forward(x)
    frames = forward(x.flatten(0, 1))
    return frames.reshape(x.shape[0], x.shape[1], *frames.shape[1:]).mean(dim=1)


def pooling_offsets(datamodule: Any, split: str) -> Tensor | None:
    """The data module's tracklet offsets over its `feature_dataloader(split)` frames; None for images."""
    offsets = getattr(datamodule, "pooling_offsets", None)
    return None if offsets is None else offsets(split)


def video_metrics(datamodule: Any, query_frames: Tensor, gallery_frames: Tensor, metric: str) -> dict[str, float]:
    """Tracklet-level metrics from the feature passes' frame features (in pass order): pooled per tracklet
    (`tracklet_features`, the data module's offsets), then the MARS / DukeMTMC-VideoReID protocol
    (`evaluate_video`), or for a dataset with identity splits (PRID2011, iLIDS-VID: `data.split_id`) the
    single-gallery-shot CMC of that one split (`single_shot_cmc`; averaging over the splits is done over runs)."""
    from mprd.core.video_evaluation import evaluate_video, single_shot_cmc, tracklet_features

    data = datamodule.data
    q = tracklet_features(query_frames, datamodule.pooling_offsets("query").to(query_frames.device))
    g = tracklet_features(gallery_frames, datamodule.pooling_offsets("gallery").to(gallery_frames.device))
    (qp, qc), (gp, gc) = _ids(data.query), _ids(data.gallery)
    if getattr(data, "split_id", None) is not None:
        result = single_shot_cmc(q, g, qp, gp, metric=metric)  # type: ignore[arg-type]
    else:
        result = evaluate_video(q, g, qp, qc, gp, gc, metric=metric)  # type: ignore[arg-type]
    return {k: float(v) for k, v in result.as_dict(percent=True).items()}


def log_epoch_timing(module: L.LightningModule, epoch_start: float, images: int) -> None:
    """Per-epoch wall time, images/s and the lr of every optimiser param group (all methods log these)."""
    import time

    elapsed = time.perf_counter() - epoch_start
    module.log("time/epoch_s", elapsed, on_epoch=True, on_step=False)
    module.log("time/images_per_s", images / max(elapsed, 1e-9), on_epoch=True, on_step=False)
    for i, group in enumerate(module.optimizers().param_groups):
        module.log(f"lr/group{i}", group["lr"], on_epoch=True, on_step=False)


def progress(iterable: Any, desc: str, module: L.LightningModule | None = None, **tqdm_options: Any) -> Any:
    """A tqdm bar over `iterable`: with `module`, only on rank 0 and when the trainer shows a progress bar
    (feature extraction is otherwise silent); without one, always."""
    if module is not None:
        trainer = getattr(module, "_trainer", None)
        if trainer is None or not trainer.is_global_zero or trainer.progress_bar_callback is None:
            return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True, **tqdm_options)


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """`module` in eval mode for a feature pass (BN running statistics, no dropout); its mode is restored."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
