"""Does MPRD's GCN rank a memory's kNN candidates better than their cosine similarity does?

Eq. 7 keeps the candidates j ∈ NN_k(i) with g_ij > μ. The GCN adds something over KNN only if g orders the
candidate pairs better than the cosine that produced them. This reads a finished MPRD run (`checkpoints/
last.ckpt`: the Eq. 1 memory and the GCN of the last refresh), scores every candidate pair both ways and prints,
against the hidden identities (a diagnostic; nothing trains):

- the ROC AUC of g and of the cosine over all N·k candidate pairs (global threshold: what μ acts on);
- the mean per-anchor AUC (ranking among one image's own candidates);
- the precision of the pairs Eq. 7 keeps at μ, beside the precision of the same number of pairs kept by
  cosine (the top pairs globally).

    python benchmarks/gcn_ranking.py --dataset synthetic --root data/synthetic-small-seed0 \\
        experiments/results/runs/table1-synthetic/mprd-seed{0,1,2}

The memory holds the features of the last epoch's end, the GCN the one trained at that epoch's start, so the
scores describe the labels the next epoch would have used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Probability that a random positive scores above a random negative (ties count ½), via ranks."""
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # average ranks over ties
    uniq, inverse = torch.unique(scores, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_anchor_auc(scores: Tensor, labels: Tensor) -> float:
    """Mean over anchors with both classes among their candidates of the within-row AUC; `scores` (N, k)."""
    s, y = scores.unsqueeze(2), labels.bool()
    greater = (s > scores.unsqueeze(1)).double() + 0.5 * (s == scores.unsqueeze(1)).double()  # [i, a, b]: a above b
    pair = y.unsqueeze(2) & ~y.unsqueeze(1)  # a positive, b negative
    n = pair.sum((1, 2))
    valid = n > 0
    return float(((greater * pair).sum((1, 2))[valid] / n[valid]).mean())


def score_run(run: Path, pids: Tensor) -> dict[str, float]:
    from mprd.core.neighbors import adaptive_knn
    from mprd.methods.mprd.gcn import GCNLearner, predict_pairs

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    memory = ckpt["state_dict"]["memory.features"].float()[: len(pids)]
    g, st, nb = cfg.gcn, cfg.method.structures, cfg.method.neighbors
    learner = GCNLearner(
        feat_dim=memory.shape[1], num_labels=int(st.max_label) + 1, hidden=tuple(g.hidden),
        agg_channels=g.agg_channels, mlp_hidden=g.mlp_hidden, dropout=g.dropout,
        pair_similarity=bool(g.get("pair_similarity", False)), node_features=bool(g.get("node_features", True)),
    )
    learner.load_state_dict(ckpt["pseudo_labels"]["generator"]["gcn"])
    sims, neighbors, _ = adaptive_knn(memory, float(nb.threshold), int(nb.min_k), nb.k_max and int(nb.k_max))
    valid = neighbors >= 0
    left = torch.arange(len(pids)).unsqueeze(1).expand_as(neighbors)[valid]
    right = neighbors[valid]
    learner.net.eval()
    probs = predict_pairs(
        learner.net, neighbors, left, right, learner.net.project(memory),
        topology=st.topology, target_edge=st.target_edge, max_label=int(st.max_label), unit_features=memory,
    )
    cos = (memory[left] * memory[right]).sum(1)
    same = pids[left] == pids[right]
    kept = probs > float(cfg.method.mu)
    n_kept = int(kept.sum())
    top_cos = torch.topk(cos, n_kept).indices if n_kept else torch.empty(0, dtype=torch.long)
    g_grid = torch.full(neighbors.shape, -1.0)
    g_grid[valid] = probs
    c_grid = torch.full(neighbors.shape, -2.0)
    c_grid[valid] = cos
    y_grid = torch.zeros(neighbors.shape, dtype=torch.bool)
    y_grid[valid] = same
    return {
        "candidates": float(len(cos)),
        "cand_precision": float(same.float().mean()),
        "auc_g": roc_auc(probs, same),
        "auc_cos": roc_auc(cos, same),
        "anchor_auc_g": per_anchor_auc(g_grid, y_grid & valid),
        "anchor_auc_cos": per_anchor_auc(c_grid, y_grid & valid),
        "kept_frac": n_kept / max(len(cos), 1),
        "kept_precision_g": float(same[kept].float().mean()) if n_kept else float("nan"),
        "kept_precision_cos": float(same[top_cos].float().mean()) if n_kept else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    from mprd.data.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="MPRD run folders holding checkpoints/last.ckpt")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True)
    args = parser.parse_args(argv)
    data = load_dataset(args.dataset, args.root)
    pids = torch.tensor([r.pid for r in data.train])
    for run in args.runs:
        stats = score_run(run, pids)
        print(f"{run.name:20s} " + "  ".join(f"{k} {v:.3f}" for k, v in stats.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
