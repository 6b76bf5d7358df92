"""Building a dataset folder: parallel rendering of the plan, `synthetic.json`, and the cached copy under a root."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from mprd.data.records import DatasetError
from mprd.data.synthetic.config import GENERATOR_VERSION, SPLIT_DIRS, SyntheticConfig, VideoConfig, make_config
from mprd.data.synthetic.plan import Plan, Shot, build_plan, camstyle_name
from mprd.data.synthetic.render import render_styles
from mprd.data.synthetic.video import build_video_plan, make_video_dirs, video_units, write_video_info

# ------------------------------------------------------------------------------------------------ generation
_PLAN: Plan | None = None  # per worker process


def _worker_init(cfg: SyntheticConfig) -> None:
    global _PLAN
    if _PLAN is None or _PLAN.config != cfg:  # inherited as is under fork; rebuilt under spawn
        _PLAN = _make_plan(cfg)


def _make_plan(cfg: SyntheticConfig) -> Plan:
    """The image plan (Market layout) or, for a video preset, the tracklet plan (MARS layout)."""
    return build_video_plan(cfg) if isinstance(cfg, VideoConfig) else build_plan(cfg)


def _render_units(args: tuple[str, list[tuple[Shot, list[tuple[int, str]]]]]) -> int:
    """Render and save a chunk of (shot, [(style camera, relative path)]) units; returns the image count."""
    out_dir, units = args
    plan, n = _PLAN, 0
    for shot, outputs in units:
        arrays = render_styles(plan, shot, [st for st, _ in outputs])
        for (st, rel), arr in zip(outputs, arrays, strict=True):
            Image.fromarray(arr).save(os.path.join(out_dir, rel), "JPEG", quality=plan.cameras[st].jpeg_quality)
            n += 1
    return n


def _units(plan: Plan) -> list[tuple[Shot, list[tuple[int, str]]]]:
    """A train shot and its CamStyle copies form one unit: the people are drawn once for all styles."""
    cs = plan.config.camstyle
    units = []
    for s in plan.splits["bounding_box_train"]:
        outs = [(s.cam, f"bounding_box_train/{s.relpath}")]
        if cs:
            outs += [(c2, f"bounding_box_train_camstyle/{camstyle_name(s.relpath, s.cam, c2)}")
                     for c2 in range(plan.config.num_cameras) if c2 != s.cam]
        units.append((s, outs))
    for folder in ("query", "bounding_box_test"):
        units += [(s, [(s.style, f"{folder}/{s.relpath}")]) for s in plan.splits[folder]]
    return units


def default_workers(n_images: int) -> int:
    """Two processes (this suite's CPU budget) once there is enough work to pay for the pool."""
    return 1 if n_images < 3000 else max(1, min(2, os.cpu_count() or 1))


def generate(cfg: SyntheticConfig, out_dir: str | Path, workers: int | None = None) -> dict:
    """Render the whole dataset into `out_dir` (which must exist) and return its `synthetic.json` record."""
    global _PLAN
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    plan = _make_plan(cfg)
    video = isinstance(cfg, VideoConfig)
    if video:
        make_video_dirs(plan, out_dir)
    for d in () if video else SPLIT_DIRS:
        if d != "bounding_box_train_camstyle" or cfg.camstyle:
            (out_dir / d).mkdir(parents=True, exist_ok=True)
    units = video_units(plan) if video else _units(plan)
    n_images = sum(len(o) for _, o in units)
    workers = default_workers(n_images) if workers is None else max(1, int(workers))
    chunks = [(str(out_dir), units[i : i + 48]) for i in range(0, len(units), 48)]
    _PLAN = plan  # forked workers inherit it; spawned ones rebuild it in _worker_init
    try:
        if workers == 1:
            written = sum(map(_render_units, chunks))
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(cfg,)) as pool:
                written = sum(pool.map(_render_units, chunks))
    finally:
        _PLAN = None  # free the scenes and the noise bank
    if written != n_images:
        raise RuntimeError(f"synthetic generation wrote {written} images, expected {n_images}")
    if video:
        write_video_info(plan, out_dir)
    return {
        "generator": "mprd.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "preset": cfg.preset,
        "seed": cfg.seed,
        "config_hash": cfg.digest(),
        "config": cfg.to_json(),
        "counts": plan.counts(),
        "cameras": [dataclasses.asdict(c) for c in plan.cameras],
        "workers": workers,
        "generation_seconds": round(time.perf_counter() - t0, 2),
    }


def dataset_dir(root: str | Path, preset: str = "small", seed: int = 0) -> Path:
    """Where `ensure_synthetic` keeps a preset / seed: `root/synthetic-<preset>-seed<seed>/`."""
    return Path(root) / f"synthetic-{preset}-seed{int(seed)}"


def read_info(folder: str | Path) -> dict | None:
    """The `synthetic.json` of a generated copy, or None when absent or unreadable."""
    try:
        return json.loads((Path(folder) / "synthetic.json").read_text())
    except (OSError, ValueError):
        return None


def _is_current(folder: Path, cfg: SyntheticConfig) -> bool:
    info = read_info(folder)
    return bool(info) and info.get("config_hash") == cfg.digest() and info.get("generator_version") == GENERATOR_VERSION


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (flock); the lock file stays, so no process can lock a deleted inode."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: exclusive-create lock file
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                time.sleep(0.2)
        try:
            yield
        finally:
            os.close(fd)
            os.unlink(path)
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_synthetic(root: str | Path, preset: str = "small", seed: int = 0, overrides: dict | None = None,
                     *, workers: int | None = None) -> Path:
    """Return `root/synthetic-<preset>-seed<seed>/`, generating it first when absent or generated from another
    config (hash in `synthetic.json`).

    Generation writes into a temporary folder that is renamed into place only when complete, under a file lock,
    so concurrent callers never see a half-written copy. Only a previous generated copy (one with a
    `synthetic.json`) is ever replaced; any other existing folder raises a `DatasetError`.
    """
    cfg = make_config(preset, seed, overrides)
    target = dataset_dir(root, preset, seed)
    if _is_current(target, cfg):
        return target
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{target.name}.lock"):
        if _is_current(target, cfg):  # another process generated it while we waited
            return target
        if target.exists() and not (target / "synthetic.json").is_file():
            raise DatasetError(
                f"{target} exists but has no synthetic.json, so it is not a generated synthetic copy; refusing to "
                "replace it. Move it away or choose another root."
            )
        for stale in root.glob(f".{target.name}.tmp-*"):  # left by a killed generator (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            info = generate(cfg, tmp, workers)
            (tmp / "synthetic.json").write_text(json.dumps(info, indent=1, sort_keys=True))  # written last
            if target.exists():
                old = root / f".{target.name}.tmp-old-{os.getpid()}"
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
