"""Benchmark of `mprd.core.evaluation.evaluate` at Market-1501 and MSMT17 scale on random features.

(a) `--scale market`: 3,368 queries x 15,913 gallery, d = 2048, pids/cameras in Market proportions
    (750 test ids, 6 cameras, 2,793 distractors with pid 0). Times `evaluate` end to end and the bare
    query x gallery matmul in the same process, and prints the ratio (goal <= 1.5x).
(b) `--scale msmt`: 11,659 x 82,161, d = 2048, 3,060 ids, 15 cameras. Prints wall time and the peak RSS
    of the process (goal < 4 GB; the features alone take ~770 MB).

Run: `python benchmarks/bench_evaluation.py --scale market` (or `msmt`, or `both`). Uses 2 torch threads.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import dataclass

import torch

from mprd.core.evaluation import default_chunk_size, evaluate


@dataclass(frozen=True)
class Scale:
    name: str
    num_query: int
    num_gallery: int
    num_ids: int
    num_cams: int
    num_distractors: int  # gallery items with pid 0 (Market's detector false alarms)


SCALES = {
    "market": Scale("market", 3_368, 15_913, 750, 6, 2_793),
    "msmt": Scale("msmt", 11_659, 82_161, 3_060, 15, 0),
}


def random_features(n: int, dim: int, gen: torch.Generator, chunk: int = 8192) -> torch.Tensor:
    """float32 (n, dim) standard normal, filled chunk-wise so no float64 / second copy is ever made."""
    out = torch.empty(n, dim)
    for start in range(0, n, chunk):
        out[start : start + chunk] = torch.randn(min(chunk, n - start), dim, generator=gen)
    return out


def make_split(scale: Scale, dim: int, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    # MSMT17 pids start at 0 (a real id); Market's real ids are >= 1 and pid 0 marks distractors.
    first_id = 0 if scale.num_distractors == 0 else 1
    qp = torch.randint(first_id, first_id + scale.num_ids, (scale.num_query,), generator=gen)
    qc = torch.randint(0, scale.num_cams, (scale.num_query,), generator=gen)
    gp = torch.randint(first_id, first_id + scale.num_ids, (scale.num_gallery,), generator=gen)
    gp[torch.randperm(scale.num_gallery, generator=gen)[: scale.num_distractors]] = 0
    gc = torch.randint(0, scale.num_cams, (scale.num_gallery,), generator=gen)
    qf = random_features(scale.num_query, dim, gen)
    gf = random_features(scale.num_gallery, dim, gen)
    return qf, gf, qp, qc, gp, gc


def _timed(fn) -> tuple[float, float, object]:
    """(wall s, process CPU s, result); CPU time is the steadier figure on a shared machine."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def time_market(split: tuple[torch.Tensor, ...], repeats: int, chunk_size: int | None) -> dict[str, object]:
    """Best-of wall / CPU times of `evaluate` and of the bare normalised query x gallery^T product.

    The two are interleaved, repeat by repeat, so that load from other processes hits both alike.
    """
    qn = torch.nn.functional.normalize(split[0], dim=1)
    gn = torch.nn.functional.normalize(split[1], dim=1)
    best = {"eval_wall": float("inf"), "eval_cpu": float("inf"), "mm_wall": float("inf"), "mm_cpu": float("inf")}
    metrics = None
    for _ in range(repeats):
        wall, cpu, s = _timed(lambda: qn @ gn.T)
        del s
        best["mm_wall"], best["mm_cpu"] = min(best["mm_wall"], wall), min(best["mm_cpu"], cpu)
        wall, cpu, metrics = _timed(lambda: evaluate(*split, metric="cosine", chunk_size=chunk_size))
        best["eval_wall"], best["eval_cpu"] = min(best["eval_wall"], wall), min(best["eval_cpu"], cpu)
    return {**best, "metrics": metrics}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def run_market(args: argparse.Namespace) -> list[tuple[str, str]]:
    scale = SCALES["market"]
    split = make_split(scale, args.dim, args.seed)
    res = time_market(split, args.repeats, args.chunk_size)
    m = res["metrics"]
    chunk = args.chunk_size or default_chunk_size(scale.num_gallery)
    return [
        ("scale", f"market {scale.num_query} x {scale.num_gallery}, d={args.dim}, chunk={chunk}"),
        ("evaluate: wall / CPU (s)", f"{res['eval_wall']:.3f} / {res['eval_cpu']:.3f}"),
        ("bare matmul: wall / CPU (s)", f"{res['mm_wall']:.3f} / {res['mm_cpu']:.3f}"),
        ("ratio wall / CPU (goal <= 1.5)", f"{res['eval_wall'] / res['mm_wall']:.2f} / "
                                         f"{res['eval_cpu'] / res['mm_cpu']:.2f}"),
        ("valid / skipped", f"{m.num_valid} / {m.num_skipped}"),
        ("R1 / mAP / mINP (%)", f"{100 * m.rank1:.2f} / {100 * m.mAP:.2f} / {100 * m.mINP:.3f}"),
        ("peak RSS (GB)", f"{peak_rss_gb():.2f}"),
    ]


def run_msmt(args: argparse.Namespace) -> list[tuple[str, str]]:
    scale = SCALES["msmt"]
    split = make_split(scale, args.dim, args.seed)
    rss_data = peak_rss_gb()
    t_eval, t_cpu, m = _timed(lambda: evaluate(*split, metric="cosine", chunk_size=args.chunk_size))
    chunk = args.chunk_size or default_chunk_size(scale.num_gallery)
    return [
        ("scale", f"msmt {scale.num_query} x {scale.num_gallery}, d={args.dim}, chunk={chunk}"),
        ("evaluate: wall / CPU (s)", f"{t_eval:.2f} / {t_cpu:.2f}"),
        ("valid / skipped", f"{m.num_valid} / {m.num_skipped}"),
        ("R1 / mAP / mINP (%)", f"{100 * m.rank1:.3f} / {100 * m.mAP:.3f} / {100 * m.mINP:.4f}"),
        ("peak RSS after features (GB)", f"{rss_data:.2f}"),
        ("peak RSS (GB, goal < 4)", f"{peak_rss_gb():.2f}"),
    ]


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=["market", "msmt", "both"], default="market")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="best-of repeats (market only)")
    parser.add_argument("--chunk-size", type=int, default=None, help="queries per chunk (default: auto)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # ru_maxrss is a process-lifetime peak: with 'both', the MSMT figure includes the Market run's peak.
    for name in (["market", "msmt"] if args.scale == "both" else [args.scale]):
        print(f"[{name}] torch {torch.__version__}, {torch.get_num_threads()} threads")
        print_table(run_market(args) if name == "market" else run_msmt(args))


if __name__ == "__main__":
    main()
