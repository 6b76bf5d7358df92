"""SSLR reliable sets (Eqs. 5-7 + top-k, `mprd.methods.sslr.similarity.reliable_sets`) as ratios to the bare global kNN.

(a) `--scale market`: N = 12,936 images, C = 2048, p = 8 part features of 2048-d each, cameras 1..6, k = 4;
    random L2-normalised features. Times, in one process, the suite's kNN search on the global features
    (`mprd.core.neighbors.knn`, k = 4, self excluded: the denominator) and the reliable sets with D = d (the kNN path),
    D = d + CCE, and the full Eq. 7 with the part features stored in float32 and in float16, and prints how
    often the float16 sets equal the float32 ones, plus the peak RSS of the process.
(b) `--scale msmt`: N = 32,621, 15 cameras. Times the kNN search and the full Eq. 7 with the part features in
    `--part-dtype` (default float16: in float32 they alone take 2.1 GB) and prints the peak RSS (goal < 4 GB).

Run: `python benchmarks/bench_reliable_set.py --scale market` (or `msmt`). Uses 2 torch threads.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mprd.core.neighbors import knn
from mprd.methods.sslr.config import PART_DTYPES
from mprd.methods.sslr.similarity import default_block_rows, reliable_sets


@dataclass(frozen=True)
class Scale:
    name: str
    num: int
    num_cams: int


SCALES = {"market": Scale("market", 12_936, 6), "msmt": Scale("msmt", 32_621, 15)}


def unit_features(shape: tuple[int, ...], gen: torch.Generator, dtype: torch.dtype, chunk: int = 2048) -> torch.Tensor:
    """Standard normal rows L2-normalised over the last dim, filled chunk-wise straight into `dtype` storage
    (never a full float32 copy of a float16 tensor)."""
    out = torch.empty(shape, dtype=dtype)
    for start in range(0, shape[0], chunk):
        block = torch.randn(min(chunk, shape[0] - start), *shape[1:], generator=gen)
        out[start : start + chunk] = torch.nn.functional.normalize(block, dim=-1).to(dtype)
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall s, process CPU s, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - w0, time.process_time() - c0, out


def same_sets(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of images whose reliable sets hold the same images (order ignored)."""
    return (a.sort(dim=1).values == b.sort(dim=1).values).all(dim=1).float().mean().item()


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    scale = SCALES[args.scale]
    n, c, p, k = args.num or scale.num, args.dim, args.parts, args.k
    gen = torch.Generator().manual_seed(args.seed)
    g = unit_features((n, c), gen, torch.float32)
    cams = torch.randint(1, scale.num_cams + 1, (n,), generator=gen)
    dtypes = ["float32", "float16"] if args.scale == "market" else [args.part_dtype]
    parts = {dtypes[0]: unit_features((n, p, c), gen, PART_DTYPES[dtypes[0]])}
    if len(dtypes) > 1:  # the same values, stored in float16
        parts["float16"] = torch.empty(n, p, c, dtype=torch.float16)
        for start in range(0, n, 2048):
            parts["float16"][start : start + 2048] = parts["float32"][start : start + 2048]
    rss_features = peak_rss_gb()

    knn(g[:100], g, k)  # warm-up (faiss / BLAS initialisation)
    t_knn, cpu_knn, _ = timed(lambda: knn(g, g, k, exclude_self=True))
    rows = [(f"bare kNN search (suite's knn, k={k}, self excluded): wall / CPU s", f"{t_knn:.2f} / {cpu_knn:.2f}")]

    def add(name: str, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        wall, cpu, out = timed(fn)
        rows.append((f"{name}: wall / CPU s, x kNN wall", f"{wall:.2f} / {cpu:.2f}   x{wall / t_knn:.2f}"))
        return out

    if args.scale == "market":
        add("reliable sets, D = d (kNN path)", lambda: reliable_sets(g, None, cams, k, lambda_p=0.0, lambda_c=0.0))
        add("reliable sets, D = d + CCE", lambda: reliable_sets(g, None, cams, k, lambda_p=0.0, lambda_c=0.02))
    sets = {}
    for dtype in dtypes:
        sets[dtype] = add(f"reliable sets, full Eq. 7, parts in {dtype}",
                          lambda d=dtype: reliable_sets(g, parts[d], cams, k, lambda_p=0.5, lambda_c=0.02))
    if len(sets) > 1:
        rows.append(("float16-part sets equal to float32-part sets (share of images)",
                     f"{same_sets(sets['float16'], sets['float32']):.5f}"))
    part_gb = {d: parts[d].numel() * parts[d].element_size() / 1e9 for d in dtypes}
    return [
        ("scale", f"{scale.name}: N={n:,}, C={c}, p={p}, cameras 1..{scale.num_cams}, k={k}, "
                  f"block rows={default_block_rows(n)}, threads={torch.get_num_threads()}"),
        ("part features (GB)", ", ".join(f"{d} {gb:.2f}" for d, gb in part_gb.items())),
        *rows,
        ("peak RSS after features (GB)", f"{rss_features:.2f}"),
        ("peak RSS (GB, goal < 4 at MSMT17 scale)", f"{peak_rss_gb():.2f}"),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="market")
    parser.add_argument("--num", type=int, default=None, help="N (default: the scale's; small values: smoke test)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--parts", type=int, default=8)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--part-dtype", choices=sorted(PART_DTYPES), default="float16", help="msmt only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:  # FAISS's OpenMP pool: the same thread count as torch
        import faiss  # type: ignore

        faiss.omp_set_num_threads(args.threads)
    except ImportError:  # pragma: no cover
        pass
    print(f"[{args.scale}] torch {torch.__version__}")
    rows = run(args)
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")


if __name__ == "__main__":
    main()
