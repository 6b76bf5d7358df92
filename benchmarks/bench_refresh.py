"""Pseudo-label refresh at Market / MSMT scale, as ratios to the bare kNN search of the same run.

MPRD (Eq. 7): k_i rule + kNN + structures + DRNL + GCN inference for all N·k candidate pairs.
MPLP (MLCR Eqs. 7-11): label prediction for every memory slot.

    .venv/bin/python benchmarks/bench_refresh.py --n 12936 --hidden 64     # CPU-preset GCN
    .venv/bin/python benchmarks/bench_refresh.py --n 12936 --hidden 256    # paper widths
    .venv/bin/python benchmarks/bench_refresh.py --n 32621 --skip-mplp     # MSMT17 scale
"""

from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.nn.functional as F


def memory_features(n: int, d: int, ids: int, seed: int) -> torch.Tensor:
    """Unit features in identity clusters, so k_i and the structures are as varied as on trained memories."""
    g = torch.Generator().manual_seed(seed)
    pids = torch.randint(0, ids, (n,), generator=g)
    centres = F.normalize(torch.randn(ids, d, generator=g), dim=1)
    return F.normalize(centres[pids] + 1.2 * torch.randn(n, d, generator=g) / d**0.5 * 8, dim=1)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12936)
    p.add_argument("--d", type=int, default=2048)
    p.add_argument("--ids", type=int, default=751)
    p.add_argument("--hidden", type=int, default=64, help="GCN widths (64 = CPU preset, 256 = paper)")
    p.add_argument("--k-max", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-mplp", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mprd.core.neighbors import adaptive_knn, knn
    from mprd.core.positive_sets import PositiveSets
    from mprd.methods.mlcr.mplp import mplp_positive_sets
    from mprd.methods.mprd.gcn import PairGCN, predict_pairs

    mem = memory_features(args.n, args.d, args.ids, 0).to(args.device)
    backend = "torch" if args.device != "cpu" else "auto"
    knn(mem[:100], mem, 8, backend=backend)  # warm-up (faiss/BLAS initialisation)
    _, t_knn = timed(lambda: knn(mem, mem, 8, exclude_self=True, backend=backend))

    def mprd_refresh() -> PositiveSets:
        _, nbr, _ = adaptive_knn(mem, 0.6, 8, args.k_max, backend=backend)
        nbr = nbr.cpu()
        gcn = PairGCN(feat_dim=args.d, num_labels=7, hidden=(args.hidden, args.hidden), agg_channels=args.hidden,
                      mlp_hidden=args.hidden).to(args.device).eval()
        valid = nbr >= 0
        left = torch.arange(nbr.shape[0]).unsqueeze(1).expand_as(nbr)[valid]
        with torch.no_grad():
            table = gcn.project(mem)
        probs = predict_pairs(gcn, nbr, left, nbr[valid], table, batch_size=4096, max_label=6)
        keep = torch.zeros_like(valid)
        keep[valid] = probs > 0.5
        mprd_refresh.pairs = int(valid.sum())  # type: ignore[attr-defined]
        return PositiveSets.from_neighbors(nbr, keep)

    _, t_mprd = timed(mprd_refresh)
    rows = [("bare kNN search (k=8, FAISS)", t_knn, 1.0),
            (f"MPRD refresh: k_i + kNN + structures + DRNL + GCN({args.hidden}) on {mprd_refresh.pairs:,} pairs",
             t_mprd, t_mprd / t_knn)]
    if not args.skip_mplp:
        _, t_mplp = timed(lambda: mplp_positive_sets(mem, backend=backend))
        rows.append(("MPLP label prediction (t = 0.6, paper variant)", t_mplp, t_mplp / t_knn))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"N = {args.n:,}, d = {args.d}, device = {args.device}, threads = {args.threads}")
    for name, seconds, ratio in rows:
        print(f"  {name:<90s} {seconds:8.2f} s   x{ratio:6.2f}")
    print(f"  peak RSS {peak:.2f} GB")


if __name__ == "__main__":
    main()
