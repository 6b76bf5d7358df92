"""Benchmark of k-reciprocal re-ranking (`mprd.rerank`, via `evaluate(rerank=...)`) against plain evaluation.

Random features in the proportions of `bench_evaluation.py`:
(a) `--scale market`: 3,368 queries x 15,913 gallery, d = 2048. Wall time and peak RSS of plain `evaluate` and
    of `evaluate(rerank=RerankParams())` (k1 = 20, k2 = 6, lambda = 0.3), each in a fresh child process so
    that each peak is its own, and their ratios.
(b) `--scale msmt`: 11,659 x 82,161, d = 2048: the same for re-ranking only (goal: peak RSS < 8 GB; the
    textbook dense version needs a (q+g)^2 float32 matrix, 35 GB, several times over). `--dim` lowers d
    (the features are then smaller; the sparse structures do not depend on d).

Run: `python benchmarks/bench_rerank.py --scale market [--threads 2]`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import torch

from bench_evaluation import SCALES, make_split, print_table
from mprd.core.evaluation import evaluate
from mprd.rerank import RerankParams


def _child(scale: str, dim: int, seed: int, rerank: bool, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    split = make_split(SCALES[scale], dim, seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    w0, c0 = time.perf_counter(), time.process_time()
    m = evaluate(*split, metric="cosine", rerank=RerankParams() if rerank else None)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    queue.put({"wall": wall, "cpu": cpu, "rss_data": rss_data, "rss": peak, "mAP": m.mAP, "rank1": m.rank1})


def measure(scale: str, dim: int, seed: int, rerank: bool, threads: int) -> dict[str, float]:
    """Run one evaluation in a fresh process (spawned: no inherited memory) and return its numbers."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(scale, dim, seed, rerank, threads, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["market", "msmt"], default="market")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    s = SCALES[args.scale]
    rows = [("scale", f"{args.scale} {s.num_query} x {s.num_gallery}, d={args.dim}, {args.threads} threads")]
    rr = measure(args.scale, args.dim, args.seed, True, args.threads)
    rows += [("re-ranked: wall / CPU (s)", f"{rr['wall']:.1f} / {rr['cpu']:.1f}"),
             ("re-ranked: peak RSS (GB; features alone)", f"{rr['rss']:.2f} ({rr['rss_data']:.2f})"),
             ("re-ranked: R1 / mAP (%)", f"{100 * rr['rank1']:.2f} / {100 * rr['mAP']:.2f}")]
    if args.scale == "market":
        plain = measure(args.scale, args.dim, args.seed, False, args.threads)
        rows += [("plain: wall / CPU (s)", f"{plain['wall']:.1f} / {plain['cpu']:.1f}"),
                 ("plain: peak RSS (GB)", f"{plain['rss']:.2f}"),
                 ("plain: R1 / mAP (%)", f"{100 * plain['rank1']:.2f} / {100 * plain['mAP']:.2f}"),
                 ("ratio re-ranked / plain: wall, CPU, peak RSS",
                  f"{rr['wall'] / plain['wall']:.1f}, {rr['cpu'] / plain['cpu']:.1f}, {rr['rss'] / plain['rss']:.2f}")]
    print_table(rows)


if __name__ == "__main__":
    main()
