"""SSLR (Lin et al., CVPR 2020): unsupervised re-ID by softened similarity learning, method family `sslr`.

Stage 0 trains an instance classifier over a non-parametric lookup table V (Eq. 1, one class per training
image) with one-hot targets (Eq. 2). Each iteration s = 1..S then (1) extracts the L2-normalised global and
p part features of every training image, (2) builds the dissimilarity D (Eqs. 5-7: global distance, part
distance, cross-camera encouragement) and takes each image's reliable set = its k smallest-D images, self
excluded, and (3) fine-tunes with the softened target (Eqs. 3-4). Everything runs inside one Lightning fit:
epochs [0, stage0_epochs) are stage 0 and iteration s spans the next `epochs_per_iteration` epochs.

Spec decisions (SSLR.md §6.1; docs/decisions-sslr.md): embedding pool-5 -> FC -> BN -> L2-normalise ->
dropout 0.5 feeds Eq. 1 and the table; V_y <- normalise(V_y / 2 + v / 2) after each batch, V initialised
from the initial network; D on L2-normalised pool-5 and part features, not squared; camera IDs are used
(CCE), identity labels never (they only feed the reliable-set precision diagnostic).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mprd.core.config import DESCRIPTIVE_KEYS, RunContext, unknown_keys
from mprd.core.memory import FeatureMemory
from mprd.core.reid_module import QueryGalleryEvaluation, eval_mode, log_epoch_timing, progress
from mprd.core.neighbors import knn
from mprd.core.positive_sets import PositiveSets

# ------------------------------------------------------------------------------------------------ losses


def instance_logits(features: Tensor, table: Tensor, tau: float) -> Tensor:
    """Eq. 1 before the softmax: V_j^T v / tau for every class j; (B, d) x (N, d) -> (B, N)."""
    return features @ table.to(features.dtype).T / tau


def softened_cross_entropy(logits: Tensor, index: Tensor, reliable: Tensor | None, lam: float) -> Tensor:
    """Eq. 4 averaged over the batch (Eq. 2 with the per-sample target t_i of Eq. 3).

    -lam log p(y_i | x_i) - (1 - lam) / k sum_j log p(y_i^j | x_i); `reliable` (B, k) holds the classes of
    the reliable images of each sample. `reliable=None` (or k = 0) is the one-hot baseline target.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    own = log_p.gather(1, index.view(-1, 1).long()).squeeze(1)
    if reliable is None or reliable.shape[1] == 0:
        return -own.mean()
    soft = log_p.gather(1, reliable.long()).mean(dim=1)  # (1/k) sum_j log p(y_i^j | x_i)
    return -(lam * own + (1.0 - lam) * soft).mean()


def softened_target(index: Tensor, reliable: Tensor | None, num_classes: int, lam: float) -> Tensor:
    """Eq. 3 as a dense (B, N) distribution (reference / inspection; the loss never builds it)."""
    target = torch.zeros(index.numel(), num_classes)
    rows = torch.arange(index.numel())
    if reliable is None or reliable.shape[1] == 0:
        target[rows, index.long()] = 1.0
        return target
    k = reliable.shape[1]
    target[rows.unsqueeze(1).expand(-1, k), reliable.long()] = (1.0 - lam) / k
    target[rows, index.long()] = lam
    return target


# --------------------------------------------------------------------------------- similarity (Eqs. 5-7)


def part_features(feature_map: Tensor, parts: int) -> Tensor:
    """p horizontal stripes of a (B, C, H, W) map, average-pooled and L2-normalised -> (B, p, C) (Eq. 5).

    Adaptive pooling, so any p works (Fig. 4(f) sweeps 1..10); p = 1 is the normalised pool-5 feature.
    """
    if parts < 1:
        raise ValueError(f"method.similarity.parts={parts}: expected >= 1 horizontal stripes")
    pooled = F.adaptive_avg_pool2d(feature_map, (parts, 1)).squeeze(-1)  # (B, C, p)
    return F.normalize(pooled.transpose(1, 2), dim=2)


def _euclidean_into(out: Tensor, a: Tensor, b: Tensor, a_sq: Tensor, b_sq: Tensor) -> Tensor:
    """out <- ||a_r - b_c|| for all (r, c), from one matmul, in place (no extra b x N buffer)."""
    torch.mm(a, b.T, out=out)
    return out.mul_(-2.0).add_(a_sq.unsqueeze(1)).add_(b_sq.unsqueeze(0)).clamp_(min=0.0).sqrt_()


def dissimilarity_rows(
    start: int,
    stop: int,
    global_feats: Tensor,
    part_feats: Tensor | None,
    camids: Tensor,
    lambda_p: float,
    lambda_c: float,
    squared_norms: tuple[Tensor, Tensor | None] | None = None,
) -> Tensor:
    """Rows [start, stop) of D (Eq. 7) against all N images, (stop - start, N).

    D = (1 - lambda_p) d + lambda_p d_part + CCE: d is the Euclidean distance of the global features,
    d_part (Eq. 5) the mean Euclidean distance of corresponding parts (`part_feats` (N, p, C)), CCE (Eq. 6)
    adds lambda_c to same-camera pairs. The p part blocks are accumulated in place. `squared_norms`:
    precomputed `_squared_norms(global_feats, part_feats)` (computed here when None). `part_feats` may be
    stored in float16 (half the memory): each stripe is upcast to the global features' dtype for its matmul.
    """
    g = global_feats
    g_sq, p_sq = squared_norms if squared_norms is not None else _squared_norms(global_feats, part_feats)
    out = torch.empty(stop - start, g.shape[0], device=g.device, dtype=g.dtype)
    _euclidean_into(out, g[start:stop], g, g_sq[start:stop], g_sq)
    if part_feats is not None and lambda_p > 0:
        assert p_sq is not None
        out.mul_(1.0 - lambda_p)
        parts = part_feats.shape[1]
        tmp = torch.empty_like(out)
        for i in range(parts):  # a loop over p stripes, each a (b x N) matmul; .to() is a no-op for fp32
            # the upcast stripe lives only for this call (one (N x C) copy at a time for float16 storage)
            _euclidean_into(tmp, part_feats[start:stop, i].to(g.dtype), part_feats[:, i].to(g.dtype),
                            p_sq[start:stop, i], p_sq[:, i])
            out.add_(tmp, alpha=lambda_p / parts)
        del tmp
    if lambda_c:  # Eq. 6 as an in-place rank-(#cameras) update lambda_c 1[c_a = c_b]: no (b x N) mask or copy
        onehot = F.one_hot(torch.unique(camids, return_inverse=True)[1]).to(out.dtype)  # (N, #cameras), exact 0/1
        out.addmm_(onehot[start:stop], onehot.T, alpha=lambda_c)
    return out


def _squared_norms(global_feats: Tensor, part_feats: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """||g_i||^2 (N,) and ||part_i^s||^2 (N, p): exact distances even for an all-zero (unnormalisable) row.

    Part norms are taken stripe by stripe in the global dtype (of the stored values, fp16 included): never an
    N x p x C temporary."""
    dtype = global_feats.dtype
    parts = None
    if part_feats is not None:
        parts = torch.stack([torch.linalg.vector_norm(part_feats[:, i].to(dtype), dim=1)
                             for i in range(part_feats.shape[1])], dim=1).square_()
    return torch.linalg.vector_norm(global_feats, dim=1).square_(), parts


def default_block_rows(num: int, budget_elements: int = 2**26) -> int:
    """Rows per block so one (rows x N) fp32 buffer stays near 256 MB (3 buffers live at once)."""
    return max(1, min(num, budget_elements // max(num, 1)))


@torch.no_grad()
def reliable_sets(
    global_feats: Tensor,
    part_feats: Tensor | None,
    camids: Tensor,
    k: int,
    *,
    lambda_p: float = 0.5,
    lambda_c: float = 0.02,
    block_rows: int | None = None,
) -> Tensor:
    """X_i^reliable for every i: the k images with the smallest D(x_i, .) (Eq. 7), self excluded -> (N, k).

    Sorted by increasing D. Computed in row blocks, never an N x N matrix. Without part and camera terms
    D is the global Euclidean distance, whose order on unit vectors is the cosine order: the suite's kNN.
    Memory: the features, 2-3 (block x N) buffers and, for float16 parts, one upcast (N x C) stripe; at
    MSMT17 scale (N = 32,621, p = 8, C = 2048) float16 parts halve the 2.1 GB of fp32 part features.
    """
    num = global_feats.shape[0]
    if not 1 <= k < num:
        raise ValueError(f"method.soft.k={k}: expected 1 <= k < N = {num} (the reliable set excludes the image)")
    if camids.numel() != num:
        raise ValueError(f"reliable_sets: {camids.numel()} camera ids for {num} features")
    use_parts = part_feats is not None and lambda_p > 0
    if not use_parts and lambda_c == 0:
        backend = "torch" if global_feats.is_cuda else "auto"
        return knn(global_feats, global_feats, k, exclude_self=True, backend=backend)[1]
    block = block_rows or default_block_rows(num)
    camids = camids.to(global_feats.device)
    parts = part_feats if use_parts else None
    norms = _squared_norms(global_feats, parts)
    out = torch.empty(num, k, dtype=torch.long, device=global_feats.device)
    for start in range(0, num, block):
        stop = min(start + block, num)
        d = dissimilarity_rows(start, stop, global_feats, parts, camids, lambda_p, lambda_c, norms)
        rows = torch.arange(stop - start, device=d.device)
        d[rows, rows + start] = math.inf  # the image itself is never its own reliable image
        out[start:stop] = torch.topk(d, k, dim=1, largest=False).indices
        del d  # else the old block stays alive while the next one is built
    return out


# ------------------------------------------------------------------------------------------------ config

PART_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class TableConfig:
    init: str = "forward"  # forward = embeddings of the initial network | zeros (BUC)
    momentum: float = 0.5  # V_y <- normalise(momentum V_y + (1 - momentum) v)
    write: str = "dropped"  # dropped = the Eq. 1 input after dropout (BUC) | clean = before dropout

    def __post_init__(self) -> None:
        if self.init not in ("forward", "zeros"):
            raise ValueError(f"method.table.init={self.init!r}; expected 'forward' or 'zeros'")
        if self.write not in ("dropped", "clean"):
            raise ValueError(f"method.table.write={self.write!r}; expected 'dropped' or 'clean'")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"method.table.momentum={self.momentum}; expected a value in [0, 1)")


@dataclass
class ScheduleConfig:
    stage0_epochs: int = 25
    epochs_per_iteration: int = 2
    iterations: int | None = None  # None: (max_epochs - stage0_epochs) / epochs_per_iteration
    iteration_lr_scale: float = 0.1  # iteration lr = base lr x this (0.01 on the new layers)
    eval_at_iteration_ends: bool = True


@dataclass
class SoftConfig:
    lam: float = 0.6  # lambda of Eq. 3
    k: int = 4  # reliable set size

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"method.soft.lam={self.lam}; expected lambda in [0, 1] (Eq. 3)")
        if self.k < 1:
            raise ValueError(f"method.soft.k={self.k}; expected k >= 1 reliable images")


@dataclass
class SimilarityConfig:
    lambda_p: float = 0.5  # Eq. 7 weight of the part distance
    lambda_c: float = 0.02  # Eq. 6 CCE strength
    parts: int = 8  # p horizontal stripes
    block_rows: int | None = None  # rows of D per block (None: ~256 MB per buffer)
    part_dtype: str = "float32"  # storage of the N x p x C part features: float32 | float16 (half the memory)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_p <= 1.0:
            raise ValueError(f"method.similarity.lambda_p={self.lambda_p}; expected a value in [0, 1] (Eq. 7)")
        if self.lambda_c < 0:
            raise ValueError(f"method.similarity.lambda_c={self.lambda_c}; expected >= 0 (Eq. 6)")
        if self.parts < 1:
            raise ValueError(f"method.similarity.parts={self.parts}; expected >= 1")
        if self.block_rows is not None and self.block_rows < 1:
            raise ValueError(f"method.similarity.block_rows={self.block_rows}; expected >= 1 or null")
        if self.part_dtype not in PART_DTYPES:
            raise ValueError(f"method.similarity.part_dtype={self.part_dtype!r}; expected one of {sorted(PART_DTYPES)}")


@dataclass
class SSLRConfig:
    tau: float = 0.1
    dropout: float = 0.5
    head: str = "fc_bn"  # fc_bn: pool-5 -> FC -> BN (spec §6.1) | bn: the backbone's appended BN only
    embed_dim: int | None = None  # FC width (None: the pool-5 width)
    table: TableConfig = field(default_factory=TableConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    soft: SoftConfig = field(default_factory=SoftConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def __post_init__(self) -> None:
        for name, cls in (("table", TableConfig), ("schedule", ScheduleConfig), ("soft", SoftConfig),
                          ("similarity", SimilarityConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        if self.tau <= 0:
            raise ValueError(f"method.tau={self.tau}; expected a positive temperature (Eq. 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"method.dropout={self.dropout}; expected a rate in [0, 1)")
        if self.head not in ("fc_bn", "bn"):
            raise ValueError(f"method.head={self.head!r}; expected 'fc_bn' or 'bn'")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"method.embed_dim={self.embed_dim}; expected a positive width or null")


@dataclass(frozen=True)
class Schedule:
    """Stage 0 = epochs [0, stage0); iteration s >= 1 = epochs [stage0 + (s-1) e, stage0 + s e)."""

    stage0: int
    per_iteration: int
    iterations: int

    @classmethod
    def resolve(cls, cfg: ScheduleConfig, max_epochs: int) -> Schedule:
        """Check the schedule against `max_epochs` (= stage0 + S x epochs_per_iteration); S may be derived."""
        stage0, per = int(cfg.stage0_epochs), int(cfg.epochs_per_iteration)
        if stage0 < 0 or per < 1:
            raise ValueError(
                f"method.schedule: stage0_epochs={stage0} must be >= 0 and epochs_per_iteration={per} >= 1"
            )
        rest = max_epochs - stage0
        if cfg.iterations is None:
            if rest < 0 or rest % per:
                raise ValueError(
                    f"max_epochs={max_epochs} does not fit the SSLR schedule: it must be method.schedule."
                    f"stage0_epochs ({stage0}) + S x epochs_per_iteration ({per}); e.g. max_epochs={stage0 + 16 * per}"
                    " for S = 16, or set method.schedule.stage0_epochs"
                )
            return cls(stage0, per, rest // per)
        total = stage0 + int(cfg.iterations) * per
        if int(cfg.iterations) < 0 or total != max_epochs:
            raise ValueError(
                f"method.schedule.iterations={cfg.iterations} with stage0_epochs={stage0} and epochs_per_iteration="
                f"{per} needs max_epochs={total}, but max_epochs={max_epochs}"
            )
        return cls(stage0, per, int(cfg.iterations))

    @property
    def total_epochs(self) -> int:
        return self.stage0 + self.iterations * self.per_iteration

    def iteration_of(self, epoch: int) -> int:
        """0 during stage 0, else the iteration s >= 1 that 0-based `epoch` belongs to."""
        return 0 if epoch < self.stage0 else (epoch - self.stage0) // self.per_iteration + 1

    def ends_iteration(self, epoch: int) -> bool:
        """Whether 0-based `epoch` is the last epoch of stage 0 or of an iteration."""
        if epoch < self.stage0:
            return epoch == self.stage0 - 1
        return (epoch - self.stage0 + 1) % self.per_iteration == 0


# ------------------------------------------------------------------------------------------------ module


class EmbeddingHead(nn.Module):
    """pool-5 -> FC -> BN (SSLR.md §6.1, BUC's embedding); the caller L2-normalises and applies dropout."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        nn.init.zeros_(self.fc.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, pool5: Tensor) -> Tensor:
        return self.bn(self.fc(pool5))


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
        _, pool5 = self._trunk(x)
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


def lr_factor_fn(stage0: int, milestones: list[int], gamma: float, iteration_scale: float) -> Callable[[int], float]:
    """Per-epoch lr factor: stage 0 steps by `gamma` at each milestone (paper: 0.1 -> 0.01 after 15
    epochs); every iteration epoch uses the constant `iteration_scale` (spec §6.1: lr 0.01)."""
    marks = sorted(int(m) for m in milestones)

    def factor(epoch: int) -> float:
        if epoch >= stage0:
            return iteration_scale
        return gamma ** sum(1 for m in marks if m <= epoch)

    return factor


# ------------------------------------------------------------------------------------------------- build

_SECTIONS = {"table": TableConfig, "schedule": ScheduleConfig, "soft": SoftConfig, "similarity": SimilarityConfig}
_IGNORED = ("_target_", *DESCRIPTIVE_KEYS)  # read by mprd.train, not by the module


def config_from_method(method: DictConfig | dict) -> SSLRConfig:
    """`cfg.method` -> SSLRConfig; an unknown key is a ValueError naming it (a typo must not be ignored)."""
    raw = OmegaConf.to_container(method, resolve=True) if isinstance(method, DictConfig) else dict(method)
    assert isinstance(raw, dict)
    raw = {k: v for k, v in raw.items() if k not in _IGNORED}
    allowed = {f for f in SSLRConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - allowed)
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"method.{name}: expected a mapping, got {section!r}")
        unknown += unknown_keys(cls, section, prefix=f"{name}.")
    if unknown:
        raise ValueError(f"method (sslr): unknown key(s) {', '.join(unknown)}; see conf/method/sslr.yaml")
    for name, cls in _SECTIONS.items():
        raw[name] = cls(**(raw.get(name) or {}))
    return SSLRConfig(**raw)



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
