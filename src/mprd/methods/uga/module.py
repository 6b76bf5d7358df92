"""UGA: Unsupervised Graph Association (ICCV 2019), the tracklet-based seed baseline (`method.family: uga`).

Supervision, stated plainly: UGA learns from tracklets, at most one per person per camera, each with its own
pseudo label inside its camera. On image datasets the paper groups all images of one person in one camera
into one "tracklet", i.e. it uses ground-truth *within-camera* identity grouping (TAUDL/UTAL protocol), a
stronger signal than MPRD, MLCR or SSLR use. `tracklets_from_records` is the one place where this module
reads identities for training ("intra-camera labels" in every report); real tracklets can replace it.

Model (§3, Table 2): backbone → embedding block (the backbone's appended BN → Dropout → FC → BN) →
multi-branch classifier, one bias-free linear branch per camera with one output per tracklet (all
branches are rows of one (M, D) weight matrix). Training (Algorithm 1):

* stage 1, intra-camera: per-camera softmax CE (Eqs. 1-2) on camera-balanced batches;
* transition: tracklet centres (Eq. 3) replace the classifier weights; a fresh Adam starts;
* stage 2, inter-camera: the cross-view graph (CVG, Eqs. 4-5: cross-camera mutual K-NN centres with
  cos > λ, weight = cosine) is rebuilt from the current centre weights at every epoch start, and the
  graph-weighted cross-camera loss with the self-camera term (Eqs. 8-9) trains φ and the centres by
  ordinary gradient descent (Eqs. 10-12 with the sign fixed, spec §5).

Decisions where the paper is silent are in docs/decisions-uga.md (spec UGA.md §8 numbering).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mprd.data.records import DatasetError, ImageRecord
from mprd.core.config import DESCRIPTIVE_KEYS, RunContext, dataclass_from
from mprd.core.reid_module import QueryGalleryEvaluation, eval_mode, progress

SUPERVISION = "intra-camera labels"


# ----------------------------------------------------------------------------------------------------------
# Configuration (method.* in conf/method/uga*.yaml)
# ----------------------------------------------------------------------------------------------------------
@dataclass
class StageConfig:
    intra_epochs: int | None = None  # None: half of max_epochs (the paper: 80 of 160)
    inter: bool = True  # false: stop after stage 1 (the "intra" rows of UGA Tables 2, 4 and 5)


@dataclass
class ModelConfig:
    head: str = "embed"  # embed = R+embed (the paper's) | bn = R+BN | none = R (UGA Table 2)
    embed_dim: int = 1024
    dropout: float = 0.5
    classifier_init_std: float = 0.001


@dataclass
class LogitConfig:
    intra: str = "linear"  # stage 1: linear (W^T φ, Eq. 1) | cosine
    inter: str = "cosine"  # stage 2: cosine (s · cos, spec §8.1 default) | raw (c^T φ, Eq. 7 as printed)
    scale: float = 16.0  # s of the cosine logits (docs/decisions-uga.md)


@dataclass
class CVGConfig:
    k: int = 1  # K of the local K-NN sets (Eq. 4); "K is set to 1 in this paper"
    threshold: float = 0.65  # λ (Eq. 5)


@dataclass
class LossConfig:
    self_weight: float = 1.0  # α of the self-camera term (Eq. 8); 0 = "w/o self-cam" (UGA Table 5)
    edge_weighting: str = "cosine"  # cosine = e(·,·) of Eq. 5 (Eq. 8) | uniform = 1 (Eq. 7)


@dataclass
class NoiseConfig:
    """Noisy tracklets (UGA Table 6), applied per camera to the grouping of `tracklets_from_records`."""

    duplication: float = 0.0  # fraction of tracklets split into several pseudo labels (ID duplication)
    duplication_parts: int = 2  # pseudo labels per split tracklet (at most its number of images)
    mislabeling: float = 0.0  # fraction of tracklets merged into another tracklet of the same camera

    @property
    def active(self) -> bool:
        return self.duplication > 0 or self.mislabeling > 0


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 3.5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4  # network (backbone and embedding block)
    classifier_weight_decay: float = 5e-4  # stage-1 classifier weights
    centre_weight_decay: float = 0.0  # stage-2 centres: Eq. 12 updates them by the loss gradient alone
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of each stage (40, 60 of 80)
    gamma: float = 0.1


@dataclass
class UGAConfig:
    stages: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    logits: LogitConfig = field(default_factory=LogitConfig)
    cvg: CVGConfig = field(default_factory=CVGConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    # keys of method.* that are not UGA settings (read by train.py / reports)
    GENERIC = frozenset({"_target_", *DESCRIPTIVE_KEYS})

    @classmethod
    def from_method(cls, method: Mapping[str, Any]) -> UGAConfig:
        method = dict(method)
        sections = {"stages": StageConfig, "model": ModelConfig, "logits": LogitConfig, "cvg": CVGConfig,
                    "loss": LossConfig, "optim": OptimConfig, "noise": NoiseConfig}
        unknown = sorted(set(method) - set(sections) - cls.GENERIC)
        if unknown:
            raise ValueError(f"method: unknown key(s) {', '.join(unknown)} for family uga (expected "
                             f"{', '.join(sorted(set(sections) | cls.GENERIC))})")
        config = cls(**{k: dataclass_from(c, method.get(k), f"method.{k}") for k, c in sections.items()})
        config.validate()
        return config

    def validate(self) -> None:
        m, lg, g, ls, o, nz = self.model, self.logits, self.cvg, self.loss, self.optim, self.noise
        checks = [
            (m.head in ("embed", "bn", "none"), f"method.model.head={m.head!r}: expected embed, bn or none"),
            (m.embed_dim >= 1, f"method.model.embed_dim={m.embed_dim}: expected >= 1"),
            (0.0 <= m.dropout < 1.0, f"method.model.dropout={m.dropout}: expected a probability in [0, 1)"),
            (lg.intra in ("linear", "cosine"), f"method.logits.intra={lg.intra!r}: expected linear or cosine"),
            (lg.inter in ("cosine", "raw"), f"method.logits.inter={lg.inter!r}: expected cosine or raw"),
            (lg.scale > 0, f"method.logits.scale={lg.scale}: expected > 0"),
            (g.k >= 1, f"method.cvg.k={g.k}: expected >= 1"),
            (-1.0 <= g.threshold <= 1.0, f"method.cvg.threshold={g.threshold}: expected a cosine in [-1, 1]"),
            (ls.self_weight >= 0, f"method.loss.self_weight={ls.self_weight}: expected >= 0"),
            (ls.edge_weighting in ("cosine", "uniform"),
             f"method.loss.edge_weighting={ls.edge_weighting!r}: expected cosine or uniform"),
            (o.name == "adam", f"method.optim.name={o.name!r}: only adam (UGA §4.2) is implemented"),
            (min(o.weight_decay, o.classifier_weight_decay, o.centre_weight_decay) >= 0,
             "method.optim: weight decays must be >= 0"),
            (o.lr > 0 and 0 < o.gamma <= 1, f"method.optim: need lr > 0 and 0 < gamma <= 1, got {o.lr}, {o.gamma}"),
            (all(0 < f <= 1 for f in o.milestones),
             f"method.optim.milestones={list(o.milestones)}: expected fractions of a stage's length in (0, 1]"),
            (0.0 <= nz.duplication <= 1.0,
             f"method.noise.duplication={nz.duplication}: expected a fraction of tracklets in [0, 1]"),
            (nz.duplication_parts >= 2, f"method.noise.duplication_parts={nz.duplication_parts}: expected >= 2"),
            (0.0 <= nz.mislabeling < 1.0,
             f"method.noise.mislabeling={nz.mislabeling}: expected a fraction of tracklets in [0, 1) (merging "
             "every tracklet leaves no tracklet to merge into)"),
            (self.stages.intra_epochs is None or self.stages.intra_epochs >= 1,
             f"method.stages.intra_epochs={self.stages.intra_epochs}: expected >= 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def stage_epochs(self, max_epochs: int) -> tuple[int, int]:
        """(stage-1 epochs, stage-2 epochs) within `max_epochs`; stage 2 is 0 for intra-only runs."""
        intra = self.stages.intra_epochs if self.stages.intra_epochs is not None else max_epochs // 2
        inter = max_epochs - intra if self.stages.inter else 0
        if intra < 1 or intra > max_epochs or (self.stages.inter and inter < 1):
            raise ValueError(f"method.stages.intra_epochs={self.stages.intra_epochs} with max_epochs={max_epochs}: "
                             "need >= 1 epoch for stage 1 and, with stages.inter, >= 1 epoch left for stage 2")
        return intra, inter


# ----------------------------------------------------------------------------------------------------------
# Tracklets (the data unit) — the only place training reads identities
# ----------------------------------------------------------------------------------------------------------
def tracklets_from_records(records: Sequence[ImageRecord], seed: int = 0,
                           noise: NoiseConfig | None = None) -> tuple[Tensor, Tensor]:
    """Group images into per-camera "tracklets": all images of one pid in one camera (UGA §4.1, TAUDL/UTAL).

    This uses ground-truth identities *within* each camera (intra-camera labels), never across cameras.
    Returns (tracklet id per image (N,), camera id per tracklet (M,)). Tracklets are numbered camera by
    camera (ascending camid) and, inside a camera, in a seeded random order (the paper's "unique random
    pseudo label"), so ids carry no identity order. `noise` (UGA Table 6) merges, then splits, a fraction of
    each camera's tracklets (`noisy_tracklets`); inactive noise is the identity. Real tracklets (video
    datasets) can replace this function.
    """
    if len(records) == 0:
        raise ValueError("tracklets_from_records: no records (the train split is empty)")
    pid = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    cam = np.fromiter((r.camid for r in records), dtype=np.int64, count=len(records))
    bad = np.flatnonzero(pid < 0)
    if bad.size:
        r = records[int(bad[0])]
        raise DatasetError(f"tracklets_from_records: train image {r.path} has pid {r.pid}; UGA's tracklets need a "
                           "non-negative identity for every training image (junk/distractors belong to test splits)")
    unit = pid
    if noise is not None and noise.active:
        clean, group = np.unique(np.stack([cam, pid], 1), axis=0, return_inverse=True)
        unit = noisy_tracklets(group.reshape(-1), clean[:, 0], noise, seed)
    pairs, inverse = np.unique(np.stack([cam, unit], 1), axis=0, return_inverse=True)  # sorted by (cam, unit)
    random_key = np.random.default_rng(seed).permutation(len(pairs))
    order = np.lexsort((random_key, pairs[:, 0]))  # camera first, then the random key
    rank = np.empty(len(pairs), dtype=np.int64)
    rank[order] = np.arange(len(pairs))
    return torch.from_numpy(rank[inverse.reshape(-1)]), torch.from_numpy(pairs[order, 0].copy())


def _round_half_up(x: np.ndarray) -> np.ndarray:
    """Counts from fractions, rounded half up; the epsilon absorbs float error (0.15 * 10 = 1.4999999999999998)."""
    return np.floor(x + 0.5 + 1e-9).astype(np.int64)


def _shuffled_within_camera(camera: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, rank, counts): groups sorted by camera then at random, each group's rank inside its camera in
    that order (indexed by group), and the number of groups per camera (indexed by camid)."""
    order = np.lexsort((rng.permutation(camera.size), camera))
    counts = np.bincount(camera, minlength=int(camera.max()) + 1)
    starts = np.cumsum(counts) - counts
    rank = np.empty(camera.size, dtype=np.int64)
    rank[order] = np.arange(camera.size) - starts[camera[order]]
    return order, rank, counts


def merge_tracklets(group: np.ndarray, camera_of_group: np.ndarray, fraction: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Mislabeling (UGA Table 6): in each camera with M_t tracklets, n_t = round(fraction · M_t) (at most
    M_t - 1) tracklets chosen at random take the label of a random *unchosen* tracklet of the same camera,
    so camera t keeps exactly M_t - n_t labels. Returns the new group id of every image."""
    order, rank, counts = _shuffled_within_camera(camera_of_group, rng)
    moved = np.minimum(_round_half_up(fraction * counts), np.maximum(counts - 1, 0))
    source = rank < moved[camera_of_group]  # by group
    starts = np.cumsum(counts) - counts
    cam = camera_of_group[source]
    # a uniform position among the camera's unchosen tracklets (sorted positions moved_t .. M_t - 1)
    pick = starts[cam] + moved[cam] + np.floor(rng.random(cam.size) * (counts[cam] - moved[cam])).astype(np.int64)
    mapping = np.arange(camera_of_group.size)
    mapping[np.flatnonzero(source)] = order[pick]
    return mapping[group]


def split_tracklets(group: np.ndarray, camera_of_group: np.ndarray, fraction: float, parts: int,
                    rng: np.random.Generator) -> np.ndarray:
    """ID duplication (UGA Table 6): in each camera, round(fraction · M_t) tracklets chosen at random are split
    into `parts` pseudo labels, their images dealt out in a random order (a tracklet of n < parts images gets
    n labels). Returns the new group id of every image (group · parts + part)."""
    _, rank, counts = _shuffled_within_camera(camera_of_group, rng)
    chosen = rank < _round_half_up(fraction * counts)[camera_of_group]  # by group
    by_group = np.lexsort((rng.permutation(group.size), group))  # images grouped, random inside a group
    sizes = np.bincount(group, minlength=camera_of_group.size)
    position = np.empty(group.size, dtype=np.int64)
    position[by_group] = np.arange(group.size) - (np.cumsum(sizes) - sizes)[group[by_group]]
    return group * parts + np.where(chosen[group], position % parts, 0)


def noisy_tracklets(group: np.ndarray, camera_of_group: np.ndarray, noise: NoiseConfig, seed: int) -> np.ndarray:
    """UGA Table 6's noise on the clean tracklets (group id per image, camera per group): mislabeling
    (`merge_tracklets`), then ID duplication (`split_tracklets`) of the merged tracklets. Deterministic given
    `seed` (a random stream of its own). Returns a group id per image; the ids stay inside one camera."""
    rng = np.random.default_rng([int(seed), 0x7461626C6536])  # "table6": independent of the label order
    if noise.mislabeling > 0:
        group = merge_tracklets(group, camera_of_group, noise.mislabeling, rng)
        kept, group = np.unique(group, return_inverse=True)
        camera_of_group = camera_of_group[kept]
    if noise.duplication > 0:
        group = split_tracklets(group.reshape(-1), camera_of_group, noise.duplication, noise.duplication_parts, rng)
    return group.reshape(-1)


def tracklet_pids(records: Sequence[ImageRecord], tracklet: Tensor) -> Tensor:
    """Hidden pid of each tracklet (the pid of most of its images, the smallest on ties; a mislabeled tracklet
    mixes pids) — for the CVG precision/recall diagnostic only, never for a loss."""
    pid = np.fromiter((r.pid for r in records), dtype=np.int64, count=len(records))
    pairs, counts = np.unique(np.stack([tracklet.numpy(), pid], 1), axis=0, return_counts=True)
    best = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))  # per tracklet: most images first, then smallest pid
    first = np.ones(best.size, dtype=bool)
    first[1:] = pairs[best[1:], 0] != pairs[best[:-1], 0]
    out = torch.full((int(tracklet.max()) + 1,), -1, dtype=torch.long)
    out[torch.from_numpy(pairs[best[first], 0])] = torch.from_numpy(pairs[best[first], 1])
    return out


def branch_columns(branch_of_tracklet: Tensor, num_branches: int) -> tuple[Tensor, Tensor]:
    """(T, max M_t) tracklet ids of each branch, padded with 0, and the mask of real entries."""
    counts = torch.bincount(branch_of_tracklet, minlength=num_branches)
    order = torch.argsort(branch_of_tracklet, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    branch = branch_of_tracklet[order]
    position = torch.arange(order.numel(), device=order.device) - starts[branch]
    columns = torch.zeros(num_branches, int(counts.max()), dtype=torch.long, device=order.device)
    valid = torch.zeros_like(columns, dtype=torch.bool)
    columns[branch, position] = order
    valid[branch, position] = True
    return columns, valid


def milestone_epochs(fractions: Sequence[float], length: int) -> list[int]:
    """Epochs (counted from the stage start) where the lr drops: fractions of the stage, rounded half up,
    at least 1 (UGA §4.2: 0.5 and 0.75 of 80 = epochs 40 and 60)."""
    return [max(1, math.floor(f * length + 0.5)) for f in fractions]


def tracklet_centres(features: Tensor, tracklet: Tensor, num_tracklets: int) -> Tensor:
    """c_t^i = mean of the features of the tracklet's images (Eq. 3), (M, D)."""
    sums = torch.zeros(num_tracklets, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, tracklet, features)
    counts = torch.bincount(tracklet, minlength=num_tracklets).clamp(min=1).to(features)
    return sums / counts[:, None]


# ----------------------------------------------------------------------------------------------------------
# Losses (Eqs. 1-2, 7-9)
# ----------------------------------------------------------------------------------------------------------
def class_logits(features: Tensor, weights: Tensor, mode: str, scale: float) -> Tensor:
    """(B, M) logits against every tracklet: W^T φ (linear / raw) or s · cos(W, φ) (cosine)."""
    if mode in ("linear", "raw"):
        return features @ weights.t()
    return scale * (F.normalize(features, dim=1) @ F.normalize(weights, dim=1).t())


def branch_logsumexp(logits: Tensor, columns: Tensor, valid: Tensor) -> Tensor:
    """(B, T) log-partition of every camera branch: the softmax of Eqs. 1 and 7 runs over one camera only."""
    z = logits.float()[:, columns].masked_fill(~valid, float("-inf"))  # (B, T, max M_t)
    return torch.logsumexp(z, dim=2)


def intra_camera_loss(logits: Tensor, tracklet: Tensor, branch_of_tracklet: Tensor, columns: Tensor,
                      valid: Tensor) -> Tensor:
    """Per-image CE through its own camera's branch, target = its tracklet (Eq. 1); Eq. 2 is the mean."""
    lse = branch_logsumexp(logits, columns, valid)
    own = branch_of_tracklet[tracklet]
    return lse.gather(1, own[:, None]).squeeze(1) - logits.float().gather(1, tracklet[:, None]).squeeze(1)


@dataclass
class CrossViewGraph:
    """The CVG as fixed-size tables: slot (s, m, k) holds the k-th kept neighbour of tracklet s in camera
    branch m (or -1) and its edge weight e (Eq. 5); own-camera slots stay empty (self edges live in the loss)."""

    neighbors: Tensor  # (M, T, K) long
    weights: Tensor  # (M, T, K) float

    def edges(self) -> tuple[Tensor, Tensor, Tensor]:
        """Directed edges (src, dst, weight); every undirected edge appears in both directions."""
        src = torch.arange(self.neighbors.shape[0], device=self.neighbors.device)[:, None, None]
        keep = self.neighbors >= 0
        return src.expand_as(self.neighbors)[keep], self.neighbors[keep], self.weights[keep]

    def to_state(self) -> dict[str, Tensor]:
        return {"neighbors": self.neighbors.cpu(), "weights": self.weights.cpu()}

    @classmethod
    def from_state(cls, state: Mapping[str, Tensor]) -> CrossViewGraph:
        return cls(state["neighbors"].long(), state["weights"].float())

    def to(self, device: torch.device | str) -> CrossViewGraph:
        return CrossViewGraph(self.neighbors.to(device), self.weights.to(device))


@torch.no_grad()
def build_cvg(centres: Tensor, branch_of_tracklet: Tensor, *, k: int = 1, threshold: float = 0.65,
              mutual: bool = True) -> CrossViewGraph:
    """Eqs. 4-5: for every camera pair, keep (c_t^i, c_m^j) when each is among the other's K nearest centres in
    the other camera (mutual) and cos > λ; the edge weight is the cosine. One matmul per camera pair.

    `mutual=False` drops Eq. 4's symmetry (UGA Fig. 4, "without the symmetry constraint"): slot (i, m) keeps
    i's own K nearest centres of camera m with cos > λ, so the tables are no longer symmetric.
    """
    num, branches = centres.shape[0], int(branch_of_tracklet.max()) + 1
    unit = F.normalize(centres.float(), dim=1)
    neighbors = torch.full((num, branches, k), -1, dtype=torch.long, device=centres.device)
    weights = torch.zeros(num, branches, k, device=centres.device)
    members = [torch.nonzero(branch_of_tracklet == t).flatten() for t in range(branches)]
    for t in range(branches):
        for m in range(t + 1, branches):
            a, b = members[t], members[m]
            if a.numel() == 0 or b.numel() == 0:
                continue
            sim = unit[a] @ unit[b].t()  # (M_t, M_m) cosines
            k_row, k_col = min(k, b.numel()), min(k, a.numel())
            row_top = sim.topk(k_row, dim=1).indices  # {c_t^i}^m_K
            col_top = sim.topk(k_col, dim=0).indices  # {c_m^j}^t_K
            in_row = torch.zeros_like(sim, dtype=torch.bool).scatter_(1, row_top, True)
            in_col = torch.zeros_like(sim, dtype=torch.bool).scatter_(0, col_top, True)
            above = sim > threshold  # Eq. 5
            keep = in_row & in_col & above  # Eq. 4 (mutual) and Eq. 5 (threshold)
            kept = keep.gather(1, row_top) if mutual else above.gather(1, row_top)
            neighbors[a, m, :k_row] = torch.where(kept, b[row_top], -1)
            weights[a, m, :k_row] = torch.where(kept, sim.gather(1, row_top), 0.0)
            kept = keep.gather(0, col_top) if mutual else above.gather(0, col_top)
            neighbors[b, t, :k_col] = torch.where(kept, a[col_top], -1).t()
            weights[b, t, :k_col] = torch.where(kept, sim.gather(0, col_top), 0.0).t()
    return CrossViewGraph(neighbors, weights)


def inter_camera_loss(logits: Tensor, tracklet: Tensor, branch_of_tracklet: Tensor, graph: CrossViewGraph,
                      columns: Tensor, valid: Tensor, *, self_weight: float = 1.0, uniform: bool = False
                      ) -> tuple[Tensor, Tensor]:
    """Eq. 8 per image of tracklet s, as (self term, cross term):

    self = α ℓ_ce(I, s) and cross = Σ_{a ∈ N(s) \\ s} e(c_s, c_a) ℓ_ce(I, a), each ℓ_ce (Eq. 7) a softmax over
    the target's own camera; `uniform` uses e = 1 (Eq. 7). Eq. 9 is the batch mean of their sum.
    """
    z = logits.float()
    lse = branch_logsumexp(z, columns, valid)  # (B, T)
    own = branch_of_tracklet[tracklet]
    self_term = self_weight * (lse.gather(1, own[:, None]).squeeze(1) - z.gather(1, tracklet[:, None]).squeeze(1))
    nb = graph.neighbors[tracklet]  # (B, T, K): slot m holds neighbours in camera m
    has = nb >= 0
    weight = has.to(z) if uniform else graph.weights[tracklet].to(z)
    target = z.gather(1, nb.clamp(min=0).flatten(1)).view_as(nb).to(z)
    ce = lse[:, :, None] - target
    cross = torch.where(has, weight * ce, torch.zeros_like(ce)).sum(dim=(1, 2))
    return self_term, cross


def undirected_edges(graph: CrossViewGraph) -> Tensor:
    """(E, 2) distinct undirected edges (i < j) of the graph: an edge of either direction counts once."""
    src, dst, _ = graph.edges()
    pairs = torch.stack([torch.minimum(src, dst), torch.maximum(src, dst)], 1)
    return torch.unique(pairs, dim=0) if pairs.numel() else pairs.reshape(0, 2)


def edge_precision_recall(pairs: Tensor, pid_of_tracklet: Tensor, branch_of_tracklet: Tensor) -> tuple[float, float]:
    """Diagnostic only (hidden pids): precision = fraction of the undirected edges `pairs` (E, 2) that join two
    tracklets of one pid (NaN without edges); recall = those correct edges over all cross-camera tracklet pairs
    of one pid."""
    pid = pid_of_tracklet.to(pairs.device)
    correct = float((pid[pairs[:, 0]] == pid[pairs[:, 1]]).sum()) if pairs.numel() else 0.0
    known = pid >= 0
    cells = torch.unique(torch.stack([pid[known], branch_of_tracklet.to(pid.device)[known]], 1), dim=0,
                         return_counts=True)
    per_pid = torch.zeros(int(pid.max()) + 1 if known.any() else 0, dtype=torch.float64, device=pid.device)
    per_pid.index_add_(0, cells[0][:, 0], cells[1].double())  # tracklets per pid
    squares = torch.zeros_like(per_pid).index_add_(0, cells[0][:, 0], cells[1].double() ** 2)
    true_pairs = float(((per_pid**2 - squares) / 2).sum())  # pairs of one pid in two different cameras
    precision = correct / pairs.shape[0] if pairs.shape[0] else math.nan
    return precision, (correct / true_pairs if true_pairs else 0.0)


def cvg_statistics(graph: CrossViewGraph, pid_of_tracklet: Tensor | None,
                   branch_of_tracklet: Tensor | None = None) -> dict[str, float]:
    """#edges (undirected), mean weight, node coverage and — against the hidden pids, diagnostic only — the
    precision and recall of the edges over all true cross-camera tracklet pairs (`edge_precision_recall`;
    without `branch_of_tracklet`, every tracklet of a pid is taken to lie in its own camera)."""
    src, _, w = graph.edges()
    pairs = undirected_edges(graph)
    num = graph.neighbors.shape[0]
    stats = {
        "cvg/edges": float(pairs.shape[0]),
        "cvg/mean_weight": float(w.mean()) if w.numel() else 0.0,
        "cvg/node_coverage": float(torch.unique(src).numel() / max(num, 1)),
    }
    if pid_of_tracklet is not None:
        branch = branch_of_tracklet if branch_of_tracklet is not None else torch.arange(num)
        precision, stats["cvg/recall"] = edge_precision_recall(pairs, pid_of_tracklet, branch)
        stats["cvg/precision"] = precision if pairs.shape[0] else 0.0  # logged: 0 for an empty graph
    return stats


def cvg_curve(centres: Tensor, branch_of_tracklet: Tensor, pid_of_tracklet: Tensor, thresholds: Sequence[float],
              *, k: int = 1) -> list[dict[str, float]]:
    """UGA Fig. 4: CVG edge precision and recall (hidden pids, diagnostic only) for every λ, with and without
    the mutual-NN constraint (Eq. 4), from one set of tracklet centres. One record per (mutual, λ)."""
    rows = []
    for mutual in (True, False):
        for lam in thresholds:
            graph = build_cvg(centres, branch_of_tracklet, k=k, threshold=float(lam), mutual=mutual)
            pairs = undirected_edges(graph)
            precision, recall = edge_precision_recall(pairs, pid_of_tracklet, branch_of_tracklet)
            rows.append({"mutual": mutual, "lambda": float(lam), "edges": int(pairs.shape[0]),
                         "precision": precision, "recall": recall})
    return rows


# ----------------------------------------------------------------------------------------------------------
# Network and LightningModule
# ----------------------------------------------------------------------------------------------------------
class UGAEncoder(nn.Module):
    """φ (§3, Table 2): 'embed' = backbone → [its appended BN → Dropout → FC (no bias) → BN]; 'bn' = R+BN
    (the backbone's BN feature); 'none' = R (pool-5). `extract` is the L2-normalised output (test feature)."""

    def __init__(self, backbone: nn.Module, head: str = "embed", dim: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        if head not in ("embed", "bn", "none"):
            raise ValueError(f"method.model.head={head!r}: expected embed, bn or none")
        self.trunk, self.head = backbone, head
        self.embed: nn.Module | None = None
        self.out_dim = int(backbone.out_dim)
        if head == "embed":  # the first BN of the block is the backbone's appended BN (same layer, no copy)
            self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.out_dim, dim, bias=False),
                                       nn.BatchNorm1d(dim))
            self.out_dim = int(dim)

    def forward(self, x: Tensor) -> Tensor:
        pool5, bn = self.trunk.forward_features(x)
        if self.head == "none":
            return pool5
        return bn if self.embed is None else self.embed(bn)

    def extract(self, x: Tensor) -> Tensor:
        return F.normalize(self(x), dim=1)


@torch.no_grad()
def embed_images(encoder: UGAEncoder, loader: Any, num: int, device: torch.device | str) -> Tensor:
    """φ of the `num` images of a feature loader ({"image", "index"}) in eval mode, (num, D) unnormalised;
    the encoder's train/eval mode is restored."""
    feats = torch.zeros(num, encoder.out_dim, device=device)
    with eval_mode(encoder):
        for batch in loader:
            feats[batch["index"].to(device)] = encoder(batch["image"].to(device)).float()
    return feats


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
    def extract_train_features(self) -> Tensor:
        """φ of every training image (eval mode, test transform), record order, (N, D) unnormalised."""
        loader = progress(self.trainer.datamodule.feature_dataloader("train"), "tracklet centres", self)
        return embed_images(self.backbone, loader, self.tracklet_of_image.numel(), self.device)

    @torch.no_grad()
    def transition(self) -> None:
        """Stage 1 → 2: centres (Eq. 3) replace the classifier weights; stage 1's Adam state is dropped."""
        t0 = time.perf_counter()
        centres = tracklet_centres(self.extract_train_features(), self.tracklet_of_image, self.num_tracklets)
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
            group["lr"] = lr
        self.log("lr/stage", lr, on_epoch=True, on_step=False)

    # --------------------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, index = batch["image"], batch["index"]
        tracklet = self.tracklet_of_image[index]
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
                {"name": "network", "params": list(self.backbone.parameters()), "weight_decay": o.weight_decay},
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


# ----------------------------------------------------------------------------------------------------------
# Entry point (train.build_method)
# ----------------------------------------------------------------------------------------------------------
def build_module(run: RunContext, **method: Any) -> UGAModule:
    """The `_target_` of the UGA rows: tracklets from the train split, camera-balanced batches, the two-stage
    module; `method.*` is checked by `UGAConfig.from_method`."""
    cfg, datamodule, backbone = run.cfg, run.datamodule, run.backbone
    config = UGAConfig.from_method(method)
    records = datamodule.data.train
    tracklet, camera = tracklets_from_records(records, seed=int(cfg.seed), noise=config.noise)
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


__all__ = [
    "SUPERVISION",
    "CrossViewGraph",
    "NoiseConfig",
    "UGAConfig",
    "UGAEncoder",
    "UGAModule",
    "branch_columns",
    "branch_logsumexp",
    "build_cvg",
    "build_module",
    "class_logits",
    "cvg_curve",
    "cvg_statistics",
    "edge_precision_recall",
    "embed_images",
    "inter_camera_loss",
    "intra_camera_loss",
    "merge_tracklets",
    "milestone_epochs",
    "noisy_tracklets",
    "split_tracklets",
    "tracklet_centres",
    "tracklet_pids",
    "tracklets_from_records",
    "undirected_edges",
]
