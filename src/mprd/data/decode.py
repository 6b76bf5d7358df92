"""Decoding: image files to uint8 tensors at the target size, in threads, with an on-disk cache between runs."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

log = logging.getLogger(__name__)


def decode_image(path: str, size: tuple[int, int] | None = None) -> torch.Tensor:
    """uint8 (3, H, W) tensor of one image file, resized to `size` = (height, width) when given."""
    from mprd.data.datasets import load_image  # lazy: the parsers module is optional at import time

    image = F.pil_to_tensor(load_image(path))
    if size is not None and tuple(image.shape[-2:]) != tuple(size):
        image = F.resize(image, list(size), antialias=True)  # the same op as the transforms' Resize
    return image


def decode_images(paths: Sequence[str], size: tuple[int, int], *, threads: int = 0, what: str = "images"
                  ) -> torch.Tensor:
    """Decode `paths` into one uint8 (N, 3, height, width) tensor, logging progress.

    PIL and torch release the GIL while decoding/resizing, so a thread pool (`threads` > 1; 0 = one per
    CPU core, at most 8) speeds this up without worker processes.
    """
    n = len(paths)
    # a normal tensor even when the first decode happens inside trainer.validate() (inference mode): the
    # worker threads that fill it are not in inference mode
    with torch.inference_mode(False):
        out = torch.empty((n, 3, *size), dtype=torch.uint8)
    threads = threads or min(8, os.cpu_count() or 1)
    start, step, done = time.perf_counter(), max(1, n // 10), 0

    def one(k: int) -> int:
        out[k] = decode_image(paths[k], size)
        return k

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for done, _ in enumerate(pool.map(one, range(n)), start=1):
            if done % step == 0 or done == n:
                log.debug("decoding %s: %d/%d (%.1f s)", what, done, n, time.perf_counter() - start)
    log.info("cached %d %s at %dx%d: %.1f MB in %.1f s", n, what, size[0], size[1], out.numel() / 2**20,
             time.perf_counter() - start)
    return out


def decoded_cache_key(paths: Sequence[str], size: tuple[int, int]) -> str:
    """Hash of the target size and every file's path, byte size and mtime: a changed file changes the key."""
    h = hashlib.sha1(f"decoded-v1 {size[0]}x{size[1]} {len(paths)}\n".encode())
    for path in paths:
        st = os.stat(path)
        h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def decode_images_cached(paths: Sequence[str], size: tuple[int, int], cache_dir: str | os.PathLike | None, *,
                         threads: int = 0, what: str = "images", max_bytes: int = 1 << 30) -> torch.Tensor:
    """`decode_images` with an on-disk copy of the result in `cache_dir` (None: no disk cache).

    Every run of a multirun (and every joblib/SLURM worker) decodes the same JPEGs; the decoded uint8
    tensor is saved once as `<key>.npy` (written to a temporary name, then renamed) and loaded by later
    runs. Tensors above `max_bytes` are not saved. An unreadable cache file is decoded again and replaced.
    """
    nbytes = len(paths) * 3 * size[0] * size[1]
    if cache_dir is None or nbytes > max_bytes or not paths:
        return decode_images(paths, size, threads=threads, what=what)
    folder = Path(cache_dir)
    target = folder / f"{decoded_cache_key(paths, size)}.npy"
    if target.is_file():
        start = time.perf_counter()
        try:
            array = np.load(target, allow_pickle=False)
            if array.shape == (len(paths), 3, *size) and array.dtype == np.uint8:
                log.info("loaded %d decoded %s at %dx%d from %s in %.1f s", len(paths), what, size[0], size[1],
                         target, time.perf_counter() - start)
                return torch.from_numpy(array)
            log.warning("decoded-image cache %s holds shape %s, expected %s: decoding again", target,
                        array.shape, (len(paths), 3, *size))
        except (OSError, ValueError) as err:
            log.warning("decoded-image cache %s is unreadable (%s): decoding again", target, err)
    out = decode_images(paths, size, threads=threads, what=what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{target.name}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            np.save(f, out.numpy(), allow_pickle=False)
        os.replace(tmp, target)
    except OSError as err:  # a read-only data folder must not stop training
        log.warning("could not write the decoded-image cache %s: %s", target, err)
    return out


class Pixels:
    """uint8 images addressed by row: a decoded cache tensor, or the files decoded on demand."""

    def __init__(self, paths: Sequence[str], size: tuple[int, int], cache: torch.Tensor | None = None):
        if cache is not None and cache.shape[0] != len(paths):
            raise ValueError(f"cache holds {cache.shape[0]} images for {len(paths)} paths")
        self.paths, self.size, self.cache = list(paths), size, cache

    def __len__(self) -> int:
        return len(self.paths)

    def one(self, row: int) -> torch.Tensor:
        """(3, H, W) uint8; from disk at the stored size (the transform resizes)."""
        return self.cache[row] if self.cache is not None else decode_image(self.paths[row])

    def many(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, 3, height, width) uint8 at the target size."""
        if self.cache is not None:
            return self.cache[rows]
        return torch.stack([decode_image(self.paths[r], self.size) for r in rows.tolist()])

