"""Time one pass of `ReIDDataModule.train_dataloader()` over a Market-layout dataset folder.

For every combination of image size, num_workers, in_memory and batched_augment it reports
  * img/s (wall clock) — depends on how busy the machine is;
  * CPU ms per image (main process + worker processes, from getrusage) — the cost the loader takes away
    from training on a machine with few cores, largely independent of other load;
plus the one-off decode time of the in-memory cache and the per-image cost of the bare transforms.

Example:
  python benchmarks/bench_dataloader.py /path/to/cuhk03-np-detected --name cuhk03np
"""

from __future__ import annotations

import argparse
import itertools
import logging
import resource
import time

import torch

from mprd.data.datamodule import ReIDDataModule
from mprd.data.datasets import load_dataset
from mprd.data.transforms import BatchAugment, build_train_transform


def cpu_seconds() -> float:
    """User + system CPU time of this process and its reaped children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def one_pass(module: ReIDDataModule) -> tuple[int, float, float]:
    """(images, wall s, CPU s) of one full pass of the training loader."""
    loader = module.train_dataloader()
    cpu0, wall0, n = cpu_seconds(), time.perf_counter(), 0
    for batch in loader:
        n += int(batch["index"].shape[0])
    del loader  # workers are joined (and their CPU time reaped) when the iterator finishes
    return n, time.perf_counter() - wall0, cpu_seconds() - cpu0


def bare_transforms(height: int, width: int, reps: int = 256) -> tuple[float, float]:
    """CPU ms per image of the per-image v2 pipeline and of BatchAugment (batches of 32), no I/O."""
    per_image, batched = build_train_transform(height, width), BatchAugment(height, width)
    image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
    batch = torch.randint(0, 256, (32, 3, height, width), dtype=torch.uint8)
    cpu0 = time.process_time()
    for _ in range(reps):
        per_image(image)
    a = (time.process_time() - cpu0) / reps * 1e3
    cpu0 = time.process_time()
    for _ in range(max(1, reps // 32)):
        batched(batch)
    b = (time.process_time() - cpu0) / (max(1, reps // 32) * 32) * 1e3
    return a, b


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="dataset folder (Market layout)")
    parser.add_argument("--name", default="cuhk03np", help="parser name for load_dataset (default cuhk03np)")
    parser.add_argument("--sizes", default="128x64,64x32", help="HxW list (default 128x64,64x32)")
    parser.add_argument("--workers", default="0,1,2", help="num_workers list (default 0,1,2)")
    parser.add_argument("--in-memory", default="0,1", help="in_memory settings (default 0,1)")
    parser.add_argument("--batched", default="0,1", help="batched_augment settings (default 0,1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N train images (0: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    data = load_dataset(args.name, args.root)
    if args.limit:
        data.train = data.train[: args.limit]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    flags = [[int(v) for v in opt.split(",")] for opt in (args.workers, args.in_memory, args.batched)]
    print(f"{args.name}: {len(data.train)} train images, batch {args.batch_size}, torch threads {args.threads}")
    print(f"{'size':>7} {'workers':>7} {'in_mem':>6} {'batched':>7} {'img/s':>8} {'cpu ms/img':>10}")
    for height, width in sizes:
        a, b = bare_transforms(height, width)
        print(f"{height}x{width}: bare transforms, CPU ms/img: per-image v2 {a:.3f}, BatchAugment {b:.3f}")
        for in_memory in flags[1]:
            module = ReIDDataModule.from_data(data, height=height, width=width, batch_size=args.batch_size,
                                              in_memory=bool(in_memory), seed=0)
            cpu0, wall0 = cpu_seconds(), time.perf_counter()
            module.setup()
            if in_memory:
                print(f"{height}x{width}: cache decode {time.perf_counter() - wall0:.1f} s wall, "
                      f"{cpu_seconds() - cpu0:.1f} s CPU")
            for workers, batched in itertools.product(flags[0], flags[2]):
                module.num_workers, module.batched_augment = workers, bool(batched)
                n, wall, cpu = one_pass(module)
                print(f"{height}x{width:<3} {workers:>7} {in_memory:>6} {batched:>7} {n / wall:>8.0f} "
                      f"{cpu / n * 1e3:>10.3f}", flush=True)


if __name__ == "__main__":
    main()
