"""Benchmark: build pairwise structures + DRNL (Eq. 4) for the N·k candidate pairs and run PairGCN (Eq. 5) on them.

Random neighbour table of N rows with k_i uniform in [k_min, k_max] (distinct ids, no self, -1 padding), pairs
(i, j ∈ NN(i)) as in Eq. 7. Example:
    python benchmarks/bench_structures.py --num-nodes 12936 --pairs 100000 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from mprd.methods.mprd.gcn import PairGCN, predict_pairs
from mprd.methods.mprd.structures import iter_structure_chunks


def random_neighbor_table(num: int, k_min: int, k_max: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for start in range(0, num, 1024):
        scores = torch.rand(min(1024, num - start), num, generator=g)
        scores[torch.arange(scores.shape[0]), torch.arange(start, start + scores.shape[0])] = -1.0  # no self
        rows.append(scores.topk(k_max, dim=1).indices)
    idx = torch.cat(rows)
    k = torch.randint(k_min, k_max + 1, (num,), generator=g)
    return idx.masked_fill(torch.arange(k_max)[None] >= k[:, None], -1).to(device)


def candidate_pairs(table: torch.Tensor, num_pairs: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    left = torch.arange(table.shape[0], device=table.device).repeat_interleave(table.shape[1])
    right = table.reshape(-1)
    keep = right >= 0
    left, right = left[keep], right[keep]
    if num_pairs is not None and num_pairs < left.numel():
        pick = torch.randperm(left.numel(), generator=torch.Generator().manual_seed(seed))[:num_pairs]
        left, right = left[pick.to(left.device)], right[pick.to(left.device)]
    return left, right


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-nodes", type=int, default=12936)
    parser.add_argument("--k-min", type=int, default=8)
    parser.add_argument("--k-max", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=100000, help="number of candidate pairs; 0 = all N·k")
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--topology", choices=["pair", "induced"], default="pair")
    parser.add_argument("--feat-dim", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--max-label", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    table = random_neighbor_table(args.num_nodes, args.k_min, args.k_max, args.seed, device)
    left, right = candidate_pairs(table, args.pairs or None, args.seed)
    print(f"N={args.num_nodes} k∈[{args.k_min},{args.k_max}] pairs={left.numel()} topology={args.topology} "
          f"chunk={args.chunk_size} threads={args.threads} device={device}")

    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    widths, real = [], 0
    for _, s in iter_structure_chunks(
        table, left, right, chunk_size=args.chunk_size, topology=args.topology, max_label=args.max_label
    ):
        widths.append(s.num_nodes)
        real += int(s.mask.sum())
    _sync(device)
    t_build, c_build = time.perf_counter() - t0, time.process_time() - c0
    print(f"structures + DRNL: {t_build:.2f} s wall, {c_build:.2f} s CPU (padded width {min(widths)}..{max(widths)}, "
          f"mean real nodes {real / left.numel():.1f})")

    gcn = PairGCN(feat_dim=args.feat_dim, num_labels=args.max_label + 1, hidden=(args.hidden, args.hidden)).to(device)
    memory = torch.nn.functional.normalize(torch.randn(args.num_nodes, args.feat_dim, device=device), dim=1)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        node_table = gcn.project(memory)
    _sync(device)
    t_proj = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    probs = predict_pairs(
        gcn, table, left, right, node_table, batch_size=args.chunk_size, topology=args.topology
    )
    _sync(device)
    t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
    print(f"project memory ({args.num_nodes}x{args.feat_dim} -> {args.hidden}): {t_proj:.2f} s wall")
    print(f"predict_pairs (structures + GCN inference): {t_all:.2f} s wall, {c_all:.2f} s CPU "
          f"-> GCN alone ≈ {t_all - t_build:.2f} s wall, {c_all - c_build:.2f} s CPU")
    # CPU seconds / threads approximates the wall time on an otherwise idle machine
    print(f"g_ij mean {float(probs.mean()):.4f}")


if __name__ == "__main__":
    main()
