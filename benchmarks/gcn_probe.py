"""Which GCN inputs and training pairs let MPRD's GCN rank kNN candidates better than their cosine?

Freezes the Eq. 1 memory of a finished run (`checkpoints/last.ckpt`), trains a fresh `PairGCN` on it for a
number of steps and scores the NN_8 candidate pairs of images outside the training identities, against the
hidden identities (a diagnostic: nothing here feeds a training run). Prints the ROC AUC of g and of the cosine
over those pairs, and the precision of the pairs with g > 0.5 beside that of the same number of top-cosine pairs.

Supervision (`--pairs`):
- `truth`: every (i, j ∈ NN_8(i)) pair of the images of half of the identities, labelled by identity (an upper
  bound: what the GCN could learn with many labelled identities);
- `meta`: the paper's meta pairs of `--num-ids` identities (a random positive, a random meta negative and a
  (z, x) negative per meta anchor, `pairs.meta_pairs`);
- `meta+candidates`: those plus each meta anchor's own NN_8 candidates (`pairs.meta_candidate_pairs`).

Network (`--inputs`): `features` = V = [DRNL ‖ memory feature] (the paper); `features+similarity` adds the
similarity channels; `similarity` = DRNL + similarity channels only (`gcn.node_features=false`).

    python benchmarks/gcn_probe.py experiments/results/runs/table1-synthetic/mprd-seed0 \\
        --dataset synthetic --root data/synthetic-small-seed0 --pairs meta+candidates --inputs similarity

docs/dynamics.md (cause 8) has the numbers. ~10-70 s per call on one core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

INPUTS = {"features": (False, True), "features+similarity": (True, True), "similarity": (True, False)}


def main(argv: list[str] | None = None) -> int:
    from gcn_ranking import roc_auc
    from mprd.core.neighbors import knn
    from mprd.data.datasets import load_dataset
    from mprd.methods.mprd.gcn import PairGCN, predict_pairs
    from mprd.methods.mprd.pairs import meta_candidate_pairs, meta_pairs
    from mprd.methods.mprd.structures import build_pair_structures

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder holding checkpoints/last.ckpt")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--pairs", choices=("truth", "meta", "meta+candidates"), default="meta+candidates")
    parser.add_argument("--inputs", choices=tuple(INPUTS), default="similarity")
    parser.add_argument("--num-ids", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("-k", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_dataset(args.dataset, args.root)
    pids = torch.tensor([r.pid for r in data.train])
    ckpt = torch.load(args.run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    memory = ckpt["state_dict"]["memory.features"].float()[: len(pids)]
    _, nbr = knn(memory, memory, args.k + 1)
    nbr = nbr[:, 1:].cpu()  # NN_k without self
    gen = torch.Generator().manual_seed(args.seed)
    ids = pids.unique()
    ids = ids[torch.randperm(ids.numel(), generator=gen)]
    train_ids = ids[: ids.numel() // 2] if args.pairs == "truth" else ids[: args.num_ids]
    in_train = torch.isin(pids, train_ids)
    labelled, others = torch.nonzero(in_train).flatten(), torch.nonzero(~in_train).flatten()

    torch.manual_seed(args.seed)
    sim, feats = INPUTS[args.inputs]
    net = PairGCN(feat_dim=memory.shape[1], num_labels=7, hidden=(64, 64), agg_channels=64, mlp_hidden=64,
                  pair_similarity=sim, node_features=feats)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=5e-4)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        if args.pairs == "truth":
            a = labelled[torch.randint(labelled.numel(), (64,), generator=gen)]
            left, right = a.repeat_interleave(args.k), nbr[a].flatten()
            label = (pids[left] == pids[right]).float()
        else:
            z = labelled[torch.randint(labelled.numel(), (16,), generator=gen)]
            xs = others[torch.randint(others.numel(), (16,), generator=gen)]
            parts = [meta_pairs(labelled, pids, others, True, gen, anchors=z, zx_images=xs)]
            if args.pairs == "meta+candidates":
                parts.append(meta_candidate_pairs(z, nbr, pids, labelled))
            left = torch.cat([p.left for p in parts])
            right = torch.cat([p.right for p in parts])
            label = torch.cat([p.label for p in parts])
        s = build_pair_structures(nbr, left, right, max_label=6)
        loss = F.binary_cross_entropy_with_logits(net(s, features=memory), label)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    left, right = others.repeat_interleave(args.k), nbr[others].flatten()
    g = predict_pairs(net, nbr, left, right, net.project(memory), max_label=6, unit_features=memory)
    cos = (memory[left] * memory[right]).sum(1)
    same = pids[left] == pids[right]
    kept = g > 0.5
    n_kept = int(kept.sum())
    top_cos = same[torch.topk(cos, n_kept).indices].float().mean() if n_kept else torch.tensor(float("nan"))
    print(
        f"{args.run.name} pairs={args.pairs} inputs={args.inputs} ids={train_ids.numel()} steps={args.steps}: "
        f"candidate precision {same.float().mean():.3f}  AUC g {roc_auc(g, same):.3f} cos {roc_auc(cos, same):.3f}  "
        f"kept {n_kept / len(g):.2f} at precision {same[kept].float().mean():.3f} (cosine, same count: "
        f"{top_cos:.3f})  [{time.perf_counter() - t0:.0f} s]",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
