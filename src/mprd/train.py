"""Train one method: `python -m mprd.train method=knn dataset=synthetic` (Hydra).

Writes into the Hydra run directory: `metrics.json` (final and per-epoch Rank-1/5/10, mAP, mINP, and the
resolved config), `checkpoints/last.ckpt` (after every epoch) and `previous.ckpt`, the resolved config
(`.hydra/`), CSV logs and an offline wandb run. Faults (kills, corrupt checkpoints, a second run in the same
folder, bad settings): `mprd.runfolder`, `mprd.settings` and the README's "Reliability" section.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from mprd.core.config import build_method
from mprd.runconfig import resolved_config
from mprd.runfolder import (
    LAST,
    PREVIOUS,
    AppendingCSVLogger,
    CheckpointError,
    EpochCheckpoint,
    RunFolderBusy,
    RunFolderLock,
    choose_resume_checkpoint,
    is_main_process,
    keep_aside,
    require_checkpoint,
    scalar_metrics,
    write_text_atomically,
)
from mprd.settings import SettingsError, validate_settings
from mprd.supervision import supervision_label, uses_besides_images

log = logging.getLogger("mprd.train")
logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing is noise
# frozen body BN layers are in eval mode on purpose (backbone.freeze_bn); Lightning warns about them at fit start
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# under DDP every rank evaluates the gathered query/gallery (identical metrics); epoch-level training logs are
# rank 0's share of the global batch. Lightning's per-key advice to add sync_dist would only repeat this
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


def build_datamodule(cfg: DictConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> L.LightningDataModule:
    from mprd.data.datamodule import instantiate_datamodule

    return instantiate_datamodule(cfg, mean, std, camstyle=resolve_camstyle(cfg))


def resolve_camstyle(cfg: DictConfig) -> bool:
    """data.camstyle: true (required), false, or auto (used when the dataset has CamStyle images).

    MPRD# (method.camstyle=false) removes CamStyle whatever the data config says.
    """
    if not cfg.method.get("camstyle", True):
        return False
    value = cfg.data.camstyle
    if str(value).lower() != "auto":
        return bool(value)
    if cfg.dataset.name == "synthetic":
        return True  # the generator always renders CamStyle copies
    from mprd.data.video_datasets import is_video_dataset

    if is_video_dataset(cfg.dataset.name):
        return False  # no video dataset has CamStyle copies
    from mprd.data.datasets import CAMSTYLE_DIR, resolve_root

    # the root may hold the official folder
    return (resolve_root(cfg.dataset.name, str(cfg.dataset.root)) / CAMSTYLE_DIR).is_dir()


def build_loggers(cfg: DictConfig, output_dir: Path) -> list[Any]:
    from lightning.pytorch.loggers import WandbLogger

    loggers: list[Any] = []
    if cfg.logger.get("csv", True):  # csv/metrics.csv, appended across resumes (column `attempt`)
        loggers.append(AppendingCSVLogger(save_dir=str(output_dir)))
    wb = cfg.logger.get("wandb")
    if wb and wb.get("enabled", False):
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(
            WandbLogger(
                project=wb.project,
                name=cfg.run_name,
                group=wandb_group(cfg),
                tags=wandb_tags(cfg),
                save_dir=str(output_dir),
                mode=wb.mode,
                config=OmegaConf.to_container(cfg, resolve=True),
            )
        )
    return loggers


def wandb_group(cfg: DictConfig) -> str:
    """logger.wandb.group, else one group per paper artefact (`<artefact>-<dataset>`, the reproduction targets'
    runs folder and the report's group), else the run name."""
    group = cfg.logger.wandb.get("group")
    if group:
        return str(group)
    return f"{cfg.artefact}-{cfg.dataset.name}" if cfg.get("artefact") else str(cfg.run_name)


def wandb_tags(cfg: DictConfig) -> list[str]:
    """logger.wandb.tags plus the artefact, `row:<row>` and `seed:<seed>` (filters of the wandb runs table)."""
    tags = [str(t) for t in cfg.logger.wandb.get("tags") or []]
    tags += [str(cfg.artefact)] if cfg.get("artefact") else []
    tags += [f"row:{cfg.get('row') or cfg.method.name}", f"seed:{cfg.seed}"]
    return list(dict.fromkeys(t[:64] for t in tags))  # wandb caps a tag at 64 characters


def finish_wandb(trainer: L.Trainer, record: dict[str, Any]) -> None:
    """Set the wandb summary explicitly (`final/rank1`, ... = the final Rank-1/5/10/mAP/mINP, not the last logged
    value of a key; `uses` = what the run uses besides images), then finish the run."""
    for lg in trainer.loggers:
        if lg.__class__.__name__ == "WandbLogger":
            experiment = lg.experiment
            for key, value in record["final"].items():
                experiment.summary[f"final/{key}"] = value
            experiment.summary["uses"] = " + ".join(record.get("uses") or [])
            experiment.finish()


class SigkillAt(L.Callback):
    """`debug.sigkill_at=[epoch, batch]`: the process sends itself SIGKILL after that training batch (0-based),
    in the middle of an epoch; nothing runs after it (no hook, no finally), as with an OOM kill or `kill -9`."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = int(epoch), int(batch)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)


class StopAfterEpochs(L.Callback):
    """Stop training cleanly after `n` epochs (last.ckpt is written at train end; exits without metrics.json)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.n:
            trainer.should_stop = True


class InitialEvaluation(L.Callback):
    """Evaluate the untrained network once at the start of a fresh run (not on resume): the "ImageNet
    (untrained)" row of every report, and the epoch-0 point of every learning curve."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.ckpt_path is None and not any(r.get("epoch") == 0 for r in pl_module.history):
            metrics = pl_module.evaluate_initial()
            log.info("untrained network: %s", {k: round(v, 2) for k, v in metrics.items()})


def ddp_callbacks(cfg: DictConfig) -> list[Any]:
    """Rank 0's buffers on every rank at epoch starts and validations (a no-op on one process), and with
    `+debug.ddp_probe=<folder>` the per-rank records the DDP tests compare (`mprd.ddp`)."""
    from mprd.ddp import DDPProbe, SyncBuffersFromRankZero

    callbacks: list[Any] = [SyncBuffersFromRankZero()]
    probe = cfg.get("debug", {}).get("ddp_probe")
    if probe:
        callbacks.append(DDPProbe(probe))
    return callbacks


def planned_world_size(trainer_cfg: Any) -> int:
    """Processes the trainer config asks for, as Lightning counts them: devices (an int, a list of ids, "auto" or
    -1 = every visible GPU, one CPU process) x num_nodes."""
    devices, nodes = trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1) or 1)
    gpu = str(trainer_cfg.get("accelerator", "auto")) in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if devices in ("auto", -1):
        count = torch.cuda.device_count() if gpu else 1
    elif isinstance(devices, int):
        count = devices
    elif isinstance(devices, str):  # "0,1" (device ids)
        count = len([d for d in devices.split(",") if d.strip()])
    else:
        count = len(list(devices))
    return max(count, 1) * nodes


def check_trainer(cfg: DictConfig, world_size: int) -> None:
    """Refuse, before any process is launched, what the trainer cannot run as asked: a multi-process run of a
    method without a DDP path, a global batch that does not split over the processes, bf16 on a GPU without it."""
    precision = str(cfg.trainer.get("precision", "32-true"))
    if (
        precision.startswith("bf16")
        and torch.cuda.is_available()
        and str(cfg.trainer.get("accelerator")) in ("gpu", "cuda", "auto")
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        raise SettingsError(
            f"trainer.precision={precision}: {torch.cuda.get_device_name()} has no native bf16; use "
            "trainer.precision=16-mixed (fp16 autocast with loss scaling) or 32-true"
        )
    if world_size > 1 and cfg.trainer.get("sync_batchnorm") and str(cfg.trainer.get("accelerator")) == "cpu":
        raise SettingsError(
            "trainer.sync_batchnorm=true with trainer.accelerator=cpu: torch's SyncBatchNorm runs on GPUs only; use "
            "trainer=ddp_cpu (global-batch BN through mprd.ddp.GatheredBatchNorm) or trainer.sync_batchnorm=false"
        )
    if world_size > 1 and cfg.method.get("family") == "uga":
        raise SettingsError(
            f"method.family=uga with {world_size} processes (trainer.devices x trainer.num_nodes): UGA has no DDP "
            "path (its camera-balanced batches, multi-branch classifier rows and cross-view graph assume one "
            "process holds every camera's samples); use trainer.devices=1 trainer.num_nodes=1, and run seeds or "
            "rows in parallel with the launcher (docs/cluster.md)"
        )
    if world_size > 1 and cfg.data.batch_size % world_size:
        raise SettingsError(
            f"data.batch_size={cfg.data.batch_size}: the global batch must split evenly over the {world_size} "
            "DDP processes (trainer.devices x trainer.num_nodes); use a multiple of " + str(world_size)
        )


def git_commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run(cfg: DictConfig, output_dir: str | Path, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; returns (and writes) the metrics record.

    Settings are validated first, then the folder is locked for this run (`RunFolderBusy` when another run
    holds it); `callbacks` are added to the trainer's (tests).
    """
    validate_settings(cfg)
    output_dir = Path(output_dir)
    if not is_main_process():  # DDP's extra ranks share rank 0's folder, lock and records
        return _run(cfg, output_dir, callbacks or [], main=False)
    try:
        lock = RunFolderLock(output_dir).acquire()
    except RunFolderBusy:
        restore_hydra_config(output_dir)  # Hydra wrote this run's config over the running one's: put it back
        raise
    try:
        snapshot_hydra_config(output_dir)
        return _run(cfg, output_dir, callbacks or [])
    finally:
        lock.release()


HYDRA_SNAPSHOTS = Path(".hydra") / "attempts"


def snapshot_hydra_config(output_dir: Path) -> Path | None:
    """Copy `.hydra/*.yaml` (written by Hydra for this start) to `.hydra/attempts/<time>-pid<pid>/`: every
    start keeps its own config and overrides, whatever later starts in the same folder write."""
    import shutil

    files = sorted((output_dir / ".hydra").glob("*.yaml"))
    if not files:
        return None
    target = output_dir / HYDRA_SNAPSHOTS / f"{time.strftime('%Y%m%d-%H%M%S')}-pid{os.getpid()}"
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, target / f.name)
    return target


def restore_hydra_config(output_dir: Path) -> None:
    """Put the newest snapshot (the running run's) back into `.hydra/` after a refused start overwrote it."""
    import shutil

    snapshots = sorted((output_dir / HYDRA_SNAPSHOTS).glob("*"), key=lambda p: p.stat().st_mtime)
    if snapshots:
        for f in snapshots[-1].glob("*.yaml"):
            shutil.copy2(f, output_dir / ".hydra" / f.name)
        log.warning("restored %s/.hydra from %s (the running run's)", output_dir, snapshots[-1])


def resume_checkpoint(cfg: DictConfig, ckpt_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The checkpoint to resume from and the unreadable ones found on the way; reads only.

    An explicit `ckpt_path` must be readable (`CheckpointError` naming it otherwise). With `auto_resume`,
    last.ckpt, else previous.ckpt, else none (start over).
    """
    if cfg.ckpt_path is not None:
        return require_checkpoint(str(cfg.ckpt_path)), []
    if not cfg.get("auto_resume"):
        return None, []
    chosen, unreadable = choose_resume_checkpoint(ckpt_dir)
    for path, why in unreadable:
        log.warning("auto_resume: checkpoint %s is unreadable (%s)", path, why)
    if chosen is not None:
        log.info("auto_resume: resuming from %s%s", chosen, " (the previous good checkpoint)" if unreadable else "")
    elif unreadable:
        log.warning("auto_resume: no readable checkpoint in %s: starting over", ckpt_dir)
    else:
        log.info("auto_resume: no checkpoint in %s: starting from scratch", ckpt_dir)
    return chosen, unreadable


def prepare_folder(output_dir: Path, ckpt: Path | None, unreadable: list[tuple[Path, str]]) -> None:
    """Keep aside (rename, never delete) what this run would otherwise overwrite, once it is known to start.

    A forced rerun keeps metrics.json; a run that does not continue this folder's own checkpoints keeps
    them and the CSV log; unreadable checkpoints are kept as `*.unreadable-<time>.ckpt`.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path, _ in unreadable:
        log.warning("kept the unreadable checkpoint as %s", keep_aside(path, f"unreadable-{stamp}"))
    metrics_file = output_dir / "metrics.json"
    if metrics_file.is_file():  # a forced rerun: keep the earlier result (with its config inside) beside the new one
        log.warning("kept the earlier metrics as %s", keep_aside(metrics_file, str(int(metrics_file.stat().st_mtime))))
    ckpt_dir = output_dir / "checkpoints"
    continues_here = ckpt is not None and ckpt.resolve().parent == ckpt_dir.resolve()
    if continues_here:
        return
    for path in (ckpt_dir / LAST, ckpt_dir / PREVIOUS, output_dir / "csv" / "metrics.csv"):
        if path.is_file():  # an earlier run's: keep it, never overwrite it
            log.warning("kept the earlier %s as %s", path.name, keep_aside(path, str(int(path.stat().st_mtime))))


def warn_on_split_sizes(data: Any, options: dict[str, Any]) -> list[str]:
    """Log (as warnings) and return every split size that differs from the dataset's published numbers."""
    from mprd.data.datasets import check_statistics, expected_statistics
    from mprd.data.records import VideoReIDData
    from mprd.data.video_datasets import expected_video_statistics

    expected = expected_video_statistics if isinstance(data, VideoReIDData) else expected_statistics
    problems = check_statistics(data, expected(data.name, **options))
    for message in problems:
        log.warning("split size differs from the published one: %s (incomplete download or another version?)", message)
    return problems


def warn_on_suspicious_images(data: Any) -> list[str]:
    """Log (as warnings) and return `audit_images`'s messages: tiny images and byte-identical files."""
    from mprd.data.datasets import audit_images

    problems = audit_images(data)
    for message in problems:
        log.warning("%s", message)
    return problems


def _run(cfg: DictConfig, output_dir: Path, extra_callbacks: list[Any], main: bool = True) -> dict[str, Any]:
    from mprd.core.backbone import build_backbone

    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = output_dir / "metrics.json"
    if cfg.get("skip_if_done") and metrics_file.is_file():
        log.info("%s already holds metrics.json: skipping (FORCE=1 reruns it)", output_dir)
        return json.loads(metrics_file.read_text())
    ckpt_path, unreadable = resume_checkpoint(cfg, output_dir / "checkpoints")
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")

    backbone = build_backbone(
        cfg.backbone.name,
        pretrained=str(cfg.backbone.pretrained),
        test_feature=cfg.backbone.test_feature,
        freeze_bn=bool(cfg.backbone.get("freeze_bn", False)),
    )
    datamodule = build_datamodule(cfg, backbone.mean, backbone.std)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stats = datamodule.data.statistics()
    log.info("dataset %s: %s", cfg.dataset.name, stats)
    options = OmegaConf.to_container(cfg.dataset.options, resolve=True) if cfg.dataset.get("options") else {}
    warn_on_split_sizes(datamodule.data, options)
    if cfg.data.get("audit_images", True) and not getattr(datamodule, "is_video", False):
        warn_on_suspicious_images(datamodule.data)  # images only: MARS' 1.2 M frame headers would take minutes

    model = build_method(cfg, datamodule, backbone)  # hydra.utils.instantiate on method._target_
    # last.ckpt after every training epoch (atomically; previous.ckpt keeps the one before), so a kill loses <= 1 epoch
    checkpoint = EpochCheckpoint(output_dir / "checkpoints")
    callbacks: list[Any] = [checkpoint, *extra_callbacks]
    if cfg.get("eval_initial", True):
        callbacks.append(InitialEvaluation())
    stop_after = cfg.get("debug", {}).get("stop_after_epochs")
    if stop_after:  # simulates an interrupted run (tests of resume)
        callbacks.append(StopAfterEpochs(int(stop_after)))
    sigkill_at = cfg.get("debug", {}).get("sigkill_at")
    if sigkill_at:
        callbacks.append(SigkillAt(*sigkill_at))
    callbacks.extend(ddp_callbacks(cfg))
    check_trainer(cfg, planned_world_size(cfg.trainer))  # before the folder changes: a refused start changes nothing
    if main:  # only now, once the data and the model are built: a failed start leaves the folder as it was
        prepare_folder(output_dir, ckpt_path, unreadable)
    trainer_cfg = cfg.trainer
    if not model.automatic_optimization and trainer_cfg.get("gradient_clip_val"):
        # Lightning refuses a trainer clip under manual optimisation (UGA): the module clips its own steps
        model.gradient_clip_val = float(trainer_cfg.gradient_clip_val)
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"gradient_clip_val": None})
    trainer: L.Trainer = hydra.utils.instantiate(
        trainer_cfg, logger=build_loggers(cfg, output_dir), callbacks=callbacks, default_root_dir=str(output_dir)
    )
    log.info(
        "training %s (artefact %s, row %s, seed %s) -> %s",
        cfg.method.name,
        cfg.get("artefact"),
        cfg.get("row"),
        cfg.seed,
        output_dir,
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    if stop_after and trainer.current_epoch < cfg.max_epochs:
        return {"interrupted_after_epochs": trainer.current_epoch}
    wall_time = checkpoint.elapsed  # training time of every attempt up to the checkpoint resumed from, and this one
    if not model.history or model.history[-1]["epoch"] != cfg.max_epochs:
        trainer.validate(model, datamodule=datamodule, verbose=False)  # the final epoch is always reported
    # the last epoch's logged values (kept in the checkpoint: a finished run resumed trains no epoch)
    train_log = {**checkpoint.train_log, **scalar_metrics(trainer)}

    record = {
        "method": cfg.method.name,
        "dataset": cfg.dataset.name,
        "row": cfg.get("row") or cfg.method.name,
        "artefact": cfg.get("artefact"),
        "preset": cfg.get("preset_name"),
        "sweep": OmegaConf.to_container(cfg.sweep, resolve=True) if cfg.get("sweep") else None,
        "backbone": cfg.backbone.name,
        "supervision": supervision_label(cfg),  # e.g. UGA's "intra-camera labels", shown in reports
        "uses": uses_besides_images(cfg, resolve_camstyle(cfg)),  # the reports' "Uses besides images"
        "wall_time_s": wall_time,
        "wall_time_this_attempt_s": time.perf_counter() - t0,
        "resumed_from": str(ckpt_path) if ckpt_path else None,
        "seed": int(cfg.seed),
        "commit": git_commit(),
        "final": {k: v for k, v in model.history[-1].items() if k != "epoch"},
        "initial": next(({k: v for k, v in r.items() if k != "epoch"} for r in model.history if r["epoch"] == 0), None),
        "per_epoch": model.history,
        "diagnostics": getattr(model, "diag_history", []),
        "train_log": train_log,
        "dataset_statistics": stats,
        **trained_on(datamodule, stats),
        "config": resolved_config(cfg, output_dir),  # a kept metrics.<time>.json keeps its own config
        "overrides": _hydra_overrides(),
    }
    if main:
        write_text_atomically(metrics_file, json.dumps(record, indent=2))
    log.info("final: %s", record["final"])
    finish_wandb(trainer, record)
    return record


def trained_on(datamodule: Any, stats: dict[str, Any]) -> dict[str, Any]:
    """`{"trained_on": train statistics}` when the method trained on part of the train split (UGA on MARS keeps
    one tracklet per person and camera); empty otherwise."""
    train = datamodule.data.statistics()["train"]
    return {} if train == stats["train"] else {"trained_on": train}


def _hydra_overrides() -> list[str] | None:
    """The command line's overrides under Hydra (None when `run` is called directly)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return None


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    try:
        record = run(cfg, Path(cfg.paths.output_dir))
    except (SettingsError, CheckpointError, RunFolderBusy) as err:  # one clear message, no traceback
        log.error("%s", err)
        raise SystemExit(f"error: {err}") from None
    return float(record.get("final", {}).get("mAP", 0.0))  # an interrupted run (debug.stop_after_epochs) has none


if __name__ == "__main__":
    main()
