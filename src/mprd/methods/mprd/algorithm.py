"""Algorithm 1 of MPRD: alternate the GCN phase (G trained with F fixed) and the CNN phase (F with G fixed).

The CNN phase is the CNN LightningModule's epoch. At the start of every epoch it asks its pseudo-label
generator for P_i. For MPRD the generator is `MPRDGenerator`, which runs one step of Algorithm 1:
1. the GCN phase (lines 3-7): it builds labelled pairs (§4.2), turns them into pairwise neighbourhood
   structures (Eq. 4 + DRNL), and takes SGD steps on L^u + η L^m (Eqs. 6, 9, 10);
2. the Eq. 7 filtering: g_ij for every candidate j ∈ NN_k(i), and P_i = {i} ∪ {j : g_ij > μ}.

The whole state lives in one checkpoint: both networks, the GCN optimiser, the meta identities, the
memory and P_i. Every random draw of the GCN phase comes from a generator seeded by (seed, epoch), so a
resumed run draws exactly what an uninterrupted one would. Decisions: docs/decisions-mprd.md.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mprd.core.cnn_module import CNNModule, memory_method
from mprd.core.config import RunContext
from mprd.core.generator import PseudoLabelGenerator
from mprd.core.neighbors import adaptive_knn, knn
from mprd.core.positive_sets import PositiveSets
from mprd.core.reid_module import eval_mode, progress, temporal_pool
from mprd.methods.mprd.gcn import GCNBatch, GCNLearner, predict_pairs
from mprd.methods.mprd.meta import draw_meta_identities, meta_mask
from mprd.methods.mprd.pairs import (
    PairSet,
    hard_negative_pairs,
    hard_negative_table,
    meta_candidate_pairs,
    meta_pairs,
    perturbation_pairs,
    positive_set_pairs,
)
from mprd.methods.mprd.structures import build_pair_structures


class MPRDGenerator(PseudoLabelGenerator):
    """P_i from the GCN (Eq. 7), after training the GCN for one pass (the GCN phase of Algorithm 1)."""

    name = "mprd"

    def __init__(self, gcn: GCNLearner, train_pids: Tensor, cfg: dict[str, Any], seed: int) -> None:
        self.gcn = gcn
        self.cfg = cfg
        self.seed = int(seed)
        meta_cfg = cfg["meta"]
        # ground-truth identities: read only to draw and label the meta data Z (never reaches the CNN)
        self._pids = torch.as_tensor(train_pids).long()
        self.meta_ids = draw_meta_identities(self._pids, int(meta_cfg["num_ids"]), int(meta_cfg["seed"]))
        self.optimizer = gcn.make_optimizer()
        self.last_stats: dict[str, float] = {}

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"gcn": self.gcn.state_dict(), "optimizer": self.optimizer.state_dict(), "meta_ids": list(self.meta_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gcn.load_state_dict(state["gcn"])
        self.optimizer.load_state_dict(state["optimizer"])
        if list(state["meta_ids"]) != self.meta_ids:
            raise ValueError(f"checkpoint meta identities {state['meta_ids']} differ from this run's {self.meta_ids}")

    # -- one step of Algorithm 1 ----------------------------------------------------------------------
    def refresh(self, memory: Tensor, *, epoch: int, module: Any = None, **_: Any) -> PositiveSets:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        nb = self.cfg["neighbors"]
        t0 = time.perf_counter()
        _, neighbors, k = adaptive_knn(memory, nb["threshold"], nb["min_k"], nb["k_max"])
        neighbors, k = neighbors.cpu(), k.cpu()
        previous = module.positives if module is not None else PositiveSets.singletons(memory.shape[0])
        pairs, table, ext_neighbors, n_virtual = self._training_pairs(
            memory, neighbors, k, previous, epoch, module, gen
        )
        t1 = time.perf_counter()
        train_stats = self._train(pairs, table, ext_neighbors, gen)
        t2 = time.perf_counter()
        positives, g_stats = self._filter(memory, neighbors)
        t3 = time.perf_counter()
        self.last_stats = {
            **{f"gcn/{k_}": v for k_, v in train_stats.items()},
            **g_stats,
            "gcn/k_mean": float(k.float().mean()),
            # k_max is not in the paper: the share of rows at the cap shows how often it binds (an upper bound)
            "gcn/k_at_cap_frac": float((k >= int(nb["k_max"])).float().mean()) if nb.get("k_max") else 0.0,
            "gcn/virtual_nodes": float(n_virtual),
            "time/gcn_pairs_s": t1 - t0,
            "time/gcn_train_s": t2 - t1,
            "time/gcn_infer_s": t3 - t2,
        }
        return positives

    def _training_pairs(
        self,
        memory: Tensor,
        neighbors: Tensor,
        k: Tensor,
        previous: PositiveSets,
        epoch: int,
        module: Any,
        gen: torch.Generator,
    ) -> tuple[PairSet, Tensor, Tensor, int]:
        """§4.2 unlabeled-data pairs (L^u), the node feature table (memory + perturbed copies) and its neighbour
        table. The meta pairs (L^m) are drawn per GCN step in `_train`."""
        num = memory.shape[0]
        is_meta = meta_mask(self._pids, self.meta_ids)
        parts: list[PairSet] = []
        table, ext_neighbors, n_virtual = memory, neighbors, 0
        if self.cfg["unlabeled"]["enabled"]:
            anchors = torch.arange(num)
            if self.cfg["meta"].get("exclude_from_cnn", False):
                anchors = anchors[~is_meta]
            sizes = previous.sizes[anchors]
            grown = anchors[sizes > 1] if epoch > 0 else anchors[:0]
            lone = anchors[sizes <= 1] if epoch > 0 else anchors
            # perturbed copies x'_i (a CNN forward on the perturbed view) are virtual nodes num.. num+|lone|-1
            if lone.numel():
                pf = perturbed_features(module, lone).to(memory)
                _, p_idx = knn(pf, memory, neighbors.shape[1])
                p_idx = p_idx.cpu().masked_fill(torch.arange(neighbors.shape[1]) >= k[lone].unsqueeze(1), -1)
                table = torch.cat([memory, pf])
                ext_neighbors = torch.cat([neighbors, p_idx])
                n_virtual = lone.numel()
                virtual = num + torch.arange(lone.numel())
                if epoch == 0:
                    parts.append(
                        perturbation_pairs(lone, virtual, num, int(self.cfg["unlabeled"]["first_epoch_negatives"]), gen)
                    )
                else:
                    parts.append(PairSet.make(lone, virtual, 1.0, lone, False))
            if epoch > 0:
                hard, hard_counts = hard_negative_table(memory, previous, float(self.cfg.get("neg_ratio", 0.01)))
                parts.append(positive_set_pairs(grown, previous, neighbors, gen))
                parts.append(hard_negative_pairs(anchors, previous.sizes[anchors], hard, hard_counts, gen))
        return PairSet.cat(parts), table, ext_neighbors, n_virtual

    def _schedule(
        self, pairs: PairSet, num_slots: int, num_meta: int, gen: torch.Generator
    ) -> list[tuple[Tensor, Tensor]]:
        """GCN steps of n'/2 unlabeled + n'/2 meta anchors (§4.2): (rows of `pairs`, positions of meta anchors).

        One pass over the unlabeled anchors; the meta images are cycled (reshuffled each cycle) as often as
        needed. Without unlabeled anchors (MPRD w/o) the step count is that of a pass over all N images.
        """
        half = max(1, int(self.cfg["gcn"]["batch_anchors"]) // 2)
        u_anchors = torch.unique(pairs.anchor)
        steps = self.cfg["gcn"].get("steps_per_epoch") or max(
            1, math.ceil(max(u_anchors.numel(), num_slots * (u_anchors.numel() == 0)) / half)
        )
        steps = int(steps)
        u_order = u_anchors[torch.randperm(u_anchors.numel(), generator=gen)] if u_anchors.numel() else u_anchors
        reps = math.ceil(steps * half / num_meta) if num_meta else 0
        m_order = (
            torch.cat([torch.randperm(num_meta, generator=gen) for _ in range(reps)])
            if reps
            else torch.empty(0, dtype=torch.long)
        )
        u_step = torch.full((max(num_slots, int(pairs.anchor.max()) + 1 if len(pairs) else 0),), -1, dtype=torch.long)
        u_step[u_order] = torch.arange(u_order.numel()) // half
        step_of_pair = u_step[pairs.anchor]
        order = torch.argsort(step_of_pair, stable=True)
        bounds = torch.searchsorted(step_of_pair[order], torch.arange(steps + 1))
        return [(order[bounds[s] : bounds[s + 1]], m_order[s * half : (s + 1) * half]) for s in range(steps)]

    def _step_pairs(
        self,
        unlabeled: PairSet,
        meta_pos: Tensor,
        meta_images: Tensor,
        pool: Tensor,
        gen: torch.Generator,
        neighbors: Tensor | None = None,
    ) -> PairSet:
        """One GCN step's pairs: its unlabeled pairs plus freshly drawn meta pairs for its meta anchors, with a
        (z, x) negative for each of its unlabeled anchors that is not a meta image (Algorithm 1 lines 3-4), and
        with `gcn.meta_candidate_pairs` each meta anchor's NN_k candidates (`meta_candidate_pairs`)."""
        if not meta_images.numel():
            return unlabeled
        half = max(1, int(self.cfg["gcn"]["batch_anchors"]) // 2)
        xs = torch.unique(unlabeled.anchor)
        xs = xs[~torch.isin(xs, meta_images)]
        if not xs.numel() and pool.numel():  # MPRD w/o: random non-meta images stand in for the x_i
            xs = pool[torch.floor(torch.rand(half, generator=gen) * pool.numel()).long()]
        zx = bool(self.cfg["meta"]["zx_negatives"])
        meta = meta_pairs(meta_images, self._pids, pool, zx, gen, anchors=meta_images[meta_pos], zx_images=xs)
        parts = [unlabeled, meta]
        if self.cfg["gcn"].get("meta_candidate_pairs", False) and neighbors is not None:
            parts.append(meta_candidate_pairs(meta_images[meta_pos], neighbors, self._pids, meta_images))
        return PairSet.cat(parts)

    def _train(self, pairs: PairSet, table: Tensor, ext_neighbors: Tensor, gen: torch.Generator) -> dict[str, float]:
        st = self.cfg["structures"]
        is_meta = meta_mask(self._pids, self.meta_ids)
        meta_images, pool = torch.nonzero(is_meta).flatten(), torch.nonzero(~is_meta).flatten()
        if len(pairs) == 0 and not meta_images.numel():
            return {"loss": float("nan"), "structures": 0.0}
        device = table.device
        gcn = self.gcn.to(device)
        gcn.train()
        totals: dict[str, list[float]] = {}
        steps = self._schedule(pairs, ext_neighbors.shape[0], meta_images.numel(), gen)
        n_pairs, n_pos, meta_keys = 0, 0.0, []
        for rows, meta_pos in progress(steps, "GCN phase", mininterval=1.0):
            p = self._step_pairs(pairs.select(rows), meta_pos, meta_images, pool, gen, ext_neighbors)
            if not len(p):
                continue
            n_pairs, n_pos = n_pairs + len(p), n_pos + float(p.label.sum())
            m = p.is_meta
            meta_keys.append((p.left[m] * table.shape[0] + p.right[m]) * 2 + p.label[m].long())
            eta = self._eta(int(m.sum()), int((~m).sum()))
            s = build_pair_structures(
                ext_neighbors,
                p.left,
                p.right,
                topology=st["topology"],
                target_edge=st["target_edge"],
                max_label=st["max_label"],
            ).to(device)
            # meta anchors get ids shifted by the table size so an image that is both a meta and an unlabeled
            # anchor keeps two separate Eq. 6 terms
            anchor = p.anchor + m.long() * table.shape[0]
            batch = GCNBatch(s, p.label.to(device), anchor.to(device), m.to(device), eta)
            loss, stats = gcn.loss_step(batch, table.detach())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
        out = {key: float(torch.tensor(v).nanmean()) for key, v in totals.items()}
        out["steps"] = float(len(steps))
        out["pairs"] = float(n_pairs)
        out["pairs_pos_frac"] = n_pos / max(n_pairs, 1)
        # distinct meta pairs seen this epoch: drawn per step, so they grow with the step count
        out["meta_distinct"] = float(torch.unique(torch.cat(meta_keys)).numel()) if meta_keys else 0.0
        return out

    def _eta(self, n_meta: int, n_unl: int) -> float:
        """η of Eq. 10: #meta / #unlabeled structures in the mini-batch (spec §3.8), or a constant."""
        e = self.cfg["eta"]
        if e["mode"] == "constant":
            return float(e["value"])
        if e["mode"] != "ratio":
            raise ValueError(f"method.eta.mode={e['mode']!r}; expected 'ratio' or 'constant'")
        return n_meta / n_unl if n_unl else float(e["value"])

    @torch.no_grad()
    def _filter(self, memory: Tensor, neighbors: Tensor) -> tuple[PositiveSets, dict[str, float]]:
        """Eq. 7: P_i = {i} ∪ {j ∈ NN_k(i) : g_ij > μ} for all N·k candidates at once."""
        st, g = self.cfg["structures"], self.cfg["gcn"]
        valid = neighbors >= 0
        left = torch.arange(neighbors.shape[0]).unsqueeze(1).expand_as(neighbors)[valid]
        right = neighbors[valid]
        self.gcn.eval()
        node_table = self.gcn.net.project(memory)
        probs = predict_pairs(
            self.gcn.net, neighbors, left, right, node_table, batch_size=int(g["infer_batch"]),
            topology=st["topology"], target_edge=st["target_edge"], max_label=st["max_label"], unit_features=memory,
        )
        keep = torch.zeros_like(valid)
        keep[valid] = probs > float(self.cfg["mu"])
        stats = {
            "gcn/g_mean": float(probs.mean()),
            "gcn/candidates": float(probs.numel()),
            "gcn/kept_frac": float(keep[valid].float().mean()),
        }
        return PositiveSets.from_neighbors(neighbors, keep), stats


@torch.no_grad()
def perturbed_features(module: Any, indices: Tensor) -> Tensor:
    """F̃(x'_i) for the perturbed views (grayscale + blur on top of the augmentation) of `indices`."""
    if module is None:
        raise ValueError("MPRD's first GCN phase needs the CNN module to embed perturbed images")
    dm = module.trainer.datamodule
    out = torch.zeros(indices.numel(), module.backbone.out_dim, device=module.device)
    row_of = torch.full((int(indices.max()) + 1,), -1, dtype=torch.long)  # slot id -> row of `out`
    row_of[indices] = torch.arange(indices.numel())
    with eval_mode(module):
        for batch in dm.perturbed_dataloader(indices.tolist()):
            f = F.normalize(temporal_pool(module.backbone, batch["image"].to(module.device)), dim=1)
            out[row_of[batch["index"].long()].to(module.device)] = f
    return out


GENERATOR_KEYS = ("neighbors", "structures", "mu", "meta", "unlabeled", "eta")


def generator_settings(method: Any, gcn: dict[str, Any]) -> dict[str, Any]:
    """`MPRDGenerator`'s settings from the composed `method` and `gcn` sections (hard negatives: `loss.neg_ratio`)."""
    from omegaconf import OmegaConf

    m = OmegaConf.to_container(method, resolve=True) if not isinstance(method, dict) else method
    return {**{k: m[k] for k in GENERATOR_KEYS}, "gcn": gcn, "neg_ratio": m["loss"]["neg_ratio"]}


def build(
    run: RunContext,
    *,
    neighbors: dict[str, Any],
    structures: dict[str, Any],
    mu: float,
    meta: dict[str, Any],
    unlabeled: dict[str, Any],
    eta: dict[str, Any],
    labels: dict[str, Any],
    memory: dict[str, Any],
    loss: dict[str, Any],
    generator: dict[str, Any] | None = None,
) -> CNNModule:
    """The `_target_` of the MPRD rows: the GCN G (`cfg.gcn`), `MPRDGenerator` around it, and the CNN module
    that calls it at every epoch start (the two phases of Algorithm 1)."""
    if generator:
        raise ValueError(f"method.generator: MPRD takes no generator settings, got {sorted(generator)}")
    g = run.section("gcn")
    gcn = GCNLearner(
        feat_dim=run.backbone.out_dim,
        num_labels=int(structures["max_label"]) + 1,
        hidden=tuple(g["hidden"]),
        agg_channels=g["agg_channels"],
        mlp_hidden=g["mlp_hidden"],
        dropout=g["dropout"],
        pair_similarity=bool(g.get("pair_similarity", False)),
        node_features=bool(g.get("node_features", True)),
        optimizer=g["optimizer"],
        lr=g["lr"],
        momentum=g["momentum"],
        weight_decay=g["weight_decay"],
    )
    method = {"neighbors": neighbors, "structures": structures, "mu": mu, "meta": meta, "unlabeled": unlabeled,
              "eta": eta, "loss": loss}
    cfg = generator_settings(method, g)
    pids = run.train_pids()
    mprd = MPRDGenerator(gcn, pids, cfg, seed=int(run.cfg.seed))
    # X = the training set without the meta images (spec ambiguity 14), when asked
    excluded = meta_mask(pids, mprd.meta_ids) if meta.get("exclude_from_cnn", False) else None
    return memory_method(run, mprd, labels=labels, memory=memory, loss=loss, excluded_slots=excluded)
