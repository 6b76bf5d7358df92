"""A run folder that keeps its records through faults.

- `RunFolderLock` (`mprd.runlock`, re-exported): one run per folder at a time.
- `EpochCheckpoint`: `checkpoints/last.ckpt` at the end of every training epoch, written to a temporary
  file and moved into place (`os.replace`), so a killed write never replaces a good file; the one before
  it stays as `checkpoints/previous.ckpt`.
- `checkpoint_problem` / `choose_resume_checkpoint`: a corrupt or truncated checkpoint is detected before
  anything in the folder changes; auto-resume falls back to `previous.ckpt` or starts over, saying so.
- `AppendingCSVLogger`: `csv/metrics.csv` grows across resumes (an `attempt` column tells them apart).
"""

from __future__ import annotations

import csv
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from mprd.runlock import RunFolderBusy, RunFolderLock  # noqa: F401  (re-exported)

log = logging.getLogger("mprd.train")

LAST, PREVIOUS = "last.ckpt", "previous.ckpt"
REQUIRED_KEYS = ("state_dict", "loops", "epoch", "global_step")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be resumed from; the message names the file."""


def is_main_process() -> bool:
    """False in the extra ranks of a DDP run (they share rank 0's folder and lock): the processes Lightning
    starts itself (LOCAL_RANK / NODE_RANK / RANK) and, in a SLURM allocation of several tasks (submitit, srun),
    every task but SLURM_PROCID 0, which SLURM starts before Lightning sets any rank variable."""
    if any(os.environ.get(k, "0") != "0" for k in ("LOCAL_RANK", "NODE_RANK", "RANK")):
        return False
    slurm_tasks = os.environ.get("SLURM_NTASKS", "1")
    return not (slurm_tasks.isdigit() and int(slurm_tasks) > 1 and os.environ.get("SLURM_PROCID", "0") != "0")


# ---------------------------------------------------------------------------------------- checkpoints
def checkpoint_problem(path: Path) -> str | None:
    """None when `path` is a complete, loadable Lightning checkpoint; else what is wrong with it."""
    import torch

    path = Path(path)
    if not path.is_file():
        return "a folder, not a checkpoint file" if path.is_dir() else "no such file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()  # reads every member and checks its CRC
        if bad is not None:
            return f"corrupt member {bad}"
    except zipfile.BadZipFile:
        return "truncated or not a torch checkpoint (no zip central directory)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # pickle and torch raise many types
        return f"cannot be loaded ({type(err).__name__}: {err})"
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    return f"not a training checkpoint (lacks {', '.join(missing)})" if missing else None


def require_checkpoint(path: str | Path) -> Path:
    """`path` when it can be resumed from, else `CheckpointError` naming it."""
    problem = checkpoint_problem(Path(path))
    if problem:
        raise CheckpointError(f"cannot resume from checkpoint {path}: {problem}")
    return Path(path)


def choose_resume_checkpoint(ckpt_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest good checkpoint among last.ckpt and previous.ckpt or None, [(unreadable file, why)]).

    Reads only; the caller decides what to move aside once it knows.
    """
    unreadable = []
    for name in (LAST, PREVIOUS):
        path = ckpt_dir / name
        if not path.is_file():
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            return path, unreadable
        unreadable.append((path, problem))
    return None, unreadable


def keep_aside(path: Path, tag: str) -> Path:
    """Rename `path` to `<stem>.<tag>[.n]<suffix>` beside it (never overwriting) and return the new path."""
    for n in range(1000):
        target = path.with_name(f"{path.stem}.{tag}{'' if n == 0 else f'.{n}'}{path.suffix}")
        if not target.exists():
            path.rename(target)
            return target
    raise FileExistsError(f"cannot keep {path} aside: too many kept copies")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomically(tmp: Path, target: Path, previous: Path | None = None) -> None:
    """Move complete `tmp` onto `target` (the old `target` becomes `previous` when given)."""
    _fsync(tmp)
    if previous is not None and target.is_file():
        os.replace(target, previous)
    os.replace(tmp, target)
    try:
        _fsync(target.parent)  # the rename itself reaches the disk
    except OSError:
        pass


def write_text_atomically(path: Path, text: str) -> None:
    """`path` appears complete or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    replace_atomically(tmp, path)


class EpochCheckpoint(Checkpoint):
    """`checkpoints/last.ckpt` after every training epoch, and at the end of training.

    The end-of-epoch checkpoint is written when the next epoch starts (before any of its work), once
    Lightning has stepped the epoch schedulers and closed the epoch: a checkpoint written inside
    `on_train_epoch_end` holds the scheduler state from before its step, and a resume would skip that step.
    Its loop state is recorded as "epoch finished" (Lightning has already marked the next one ready; resumed
    as such, it would treat the new epoch as restarted with all its batches done and skip it), i.e. exactly
    the state a run stopped after that epoch saves at train end. Also carries the training time and the last
    epoch's logged values across attempts (`state_dict`).
    """

    def __init__(self, dirpath: Path) -> None:
        self.dirpath = Path(dirpath)
        self.elapsed_before = 0.0  # training seconds of the attempts this run resumed from
        self.train_log: dict[str, float] = {}  # the last finished epoch's logged scalars
        self._t0 = time.perf_counter()
        self._saved_step = -1
        self._at_epoch_start = False

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()  # before the method's own start-up (e.g. the memory's feature pass)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # nothing new to save before the first step

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_epoch_start = True
        try:
            self._save(trainer)
        finally:
            self._at_epoch_start = False

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._at_epoch_start:  # undo the new epoch's "ready": the checkpoint is the previous epoch's end
            for counts in checkpoint["loops"]["fit_loop"]["epoch_progress"].values():
                counts["ready"] = counts["started"]

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.global_step == self._saved_step or trainer.sanity_checking:
            return
        self.train_log = scalar_metrics(trainer)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        tmp = self.dirpath / (LAST + ".tmp")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            replace_atomically(tmp, self.dirpath / LAST, self.dirpath / PREVIOUS)
        trainer.strategy.barrier("mprd_checkpoint")
        self._saved_step = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed_s": self.elapsed, "train_log": dict(self.train_log)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before = float(state_dict.get("elapsed_s", 0.0))
        self.train_log = dict(state_dict.get("train_log", {}))


def scalar_metrics(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


# -------------------------------------------------------------------------------------------- CSV log
class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer without its deletion of an existing metrics.csv: rows are appended (the header
    widens when new columns appear, old rows kept) and each row records its `attempt` (1, 2, ... per start)."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self.attempt = 1
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                rows = list(csv.DictReader(f))
                header = list(rows[0].keys()) if rows else []
            self.metrics_keys = sorted(header)
            attempts = [int(float(r["attempt"])) for r in rows if r.get("attempt")]
            self.attempt = max(attempts) + 1 if attempts else (2 if rows else 1)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        pass

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        super().log_metrics({**metrics_dict, "attempt": self.attempt}, step)


class AppendingCSVLogger(CSVLogger):
    """CSVLogger(save_dir, name="csv", version="") writing `csv/metrics.csv` through `_AppendingWriter`."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="csv", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir)
        return self._experiment
