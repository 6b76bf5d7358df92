"""Faults: a killed run, a corrupt checkpoint, a second run in the same folder, bad settings, short splits.

The slow tests run `python -m mprd.train` as real subprocesses on the `tiny` synthetic set; the process
SIGKILLs itself in the middle of an epoch (`debug.sigkill_at`), then a second process resumes it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from mprd.runfolder import (
    LAST,
    PREVIOUS,
    AppendingCSVLogger,
    CheckpointError,
    EpochCheckpoint,
    RunFolderBusy,
    RunFolderLock,
    checkpoint_problem,
    choose_resume_checkpoint,
)
from mprd.settings import SettingsError, settings_problems
from mprd.train import run
from tests.conftest import compose_cfg

REPO = Path(__file__).resolve().parents[1]


def fake_checkpoint(path: Path, epoch: int) -> Path:
    """A minimal file that passes `checkpoint_problem` (the keys Lightning's restore needs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.full((4,), float(epoch))}, "loops": {}, "epoch": epoch, "global_step": 3},
               path)
    return path


# ------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "override, message",
    [
        ("max_epochs=-1", "max_epochs=-1: expected an integer >= 1"),
        ("max_epochs=0", "max_epochs=0: expected an integer >= 1"),
        ("max_epochs=2.5", "max_epochs=2.5: expected an integer >= 1"),
        ("eval_every=0", "eval_every=0: expected an integer >= 1"),
        ("method.loss.neg_ratio=2", "method.loss.neg_ratio=2: expected a number in (0, 1]"),
        ("method.loss.neg_ratio=0", "method.loss.neg_ratio=0: expected a number in (0, 1]"),
        ("recipe.neg_ratio=1.5", "recipe.neg_ratio=1.5: expected a number in (0, 1]"),
        ("diagnostics_every=-1", "diagnostics_every=-1: expected an integer >= 0"),
        ("method=mprd method.mu=abc", "method.mu='abc': expected a number in [0, 1]"),
        ("method=mprd method.mu=1.5", "method.mu=1.5: expected a number in [0, 1]"),
        ("method=mprd method.mu=-0.1", "method.mu=-0.1: expected a number in [0, 1]"),
        ("seed=-3", "seed=-3: expected an integer in [0, 4000000]"),
        ("data.batch_size=0", "data.batch_size=0: expected an integer >= 1"),
        ("data.num_workers=-1", "data.num_workers=-1: expected an integer >= 0"),
        ("data.video.frames_per_tracklet=0", "data.video.frames_per_tracklet=0: expected an integer >= 1"),
        ("data.video.test_frames=0", "data.video.test_frames=0: expected an integer >= 1 or null"),
        ("optim.lr_new=0", "optim.lr_new=0: expected a number > 0"),
        ("optim.momentum=1", "optim.momentum=1: expected a number in [0, 1)"),
        ("optim.lr_gamma=true", "optim.lr_gamma=True: expected a number in (0, 1]"),
        ("optim.milestones=[a]", "optim.milestones=['a']: expected a list of numbers >= 0"),
        ("method.memory.gamma_end=2", "method.memory.gamma_end=2: expected a number in [0, 1]"),
        ("method.labels.refresh_every=0", "method.labels.refresh_every=0: expected an integer >= 1"),
        ("method.generator.k=0", "method.generator.k=0: expected an integer >= 1"),
        ("method=uga method.cvg.threshold=1.2", "method.cvg.threshold=1.2: expected a number in [-1, 1]"),
        ("method=sslr method.soft.lam=nan", "method.soft.lam=nan: expected a number in [0, 1]"),
        ("max_epochs=2 debug.stop_after_epochs=3", "debug.stop_after_epochs=3: expected at most max_epochs=2"),
        ("method=mprd preset=cpu method.neighbors.min_k=16",
         "method.neighbors.min_k=16: expected at most method.neighbors.k_max=8"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, override, message):
    cfg = compose_cfg(tmp_path, *override.split())
    assert message in "\n".join(settings_problems(cfg))
    with pytest.raises(SettingsError, match="invalid settings") as err:
        run(cfg, tmp_path / "run")
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing created, not even the folder


@pytest.mark.parametrize("method", ["knn", "mprd", "mlcr", "sslr", "uga", "super"])
def test_the_shipped_settings_pass(tmp_path, method):
    for preset in ("cpu", "cpu_real", "paper"):
        assert settings_problems(compose_cfg(tmp_path, f"method={method}", f"preset={preset}")) == []


def test_every_problem_is_reported_at_once(tmp_path):
    cfg = compose_cfg(tmp_path, "max_epochs=0", "eval_every=0", "method.loss.neg_ratio=2")
    assert [p.split("=")[0] for p in settings_problems(cfg)] == ["max_epochs", "eval_every", "method.loss.neg_ratio"]


# ------------------------------------------------------------------------------------------------ lock
def test_a_second_run_in_a_locked_folder_fails_at_once_naming_folder_and_pid(data_root, tmp_path):
    folder = tmp_path / "run"
    with RunFolderLock(folder):
        (folder / "metrics.json").write_text('{"mine": 1}')
        cfg = compose_cfg(data_root, "method=knn", "max_epochs=1")
        with pytest.raises(RunFolderBusy) as err:
            run(cfg, folder)
        assert str(folder) in str(err.value) and f"pid {os.getpid()} on {socket.gethostname()} since" in str(err.value)
        assert (folder / "metrics.json").read_text() == '{"mine": 1}'  # untouched
        assert sorted(p.name for p in folder.iterdir()) == [".run.lock", "metrics.json"]
    RunFolderLock(folder).acquire().release()  # released on exit: the folder is usable again


def test_the_lock_is_released_when_its_holder_is_killed(tmp_path):
    code = (f"from mprd.runlock import RunFolderLock; import os, signal; RunFolderLock({str(tmp_path)!r}).acquire(); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO)
    assert proc.returncode == -9
    assert "pid" in (tmp_path / ".run.lock").read_text()  # the file stays, the OS lock does not
    RunFolderLock(tmp_path).acquire().release()


def test_a_held_lock_blocks_another_process(tmp_path):
    with RunFolderLock(tmp_path):
        code = f"from mprd.runlock import RunFolderLock; RunFolderLock({str(tmp_path)!r}).acquire()"
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"run folder {tmp_path} is in use by another run (pid {os.getpid()} on {socket.gethostname()} since" \
        in proc.stderr


# ----------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b[: len(b) // 2], "truncated or not a torch checkpoint"),
        (lambda b: b"", "empty file (0 bytes)"),
        (lambda b: b"not a checkpoint\n", "truncated or not a torch checkpoint"),
        (lambda b: b[:200] + bytes(x ^ 0xFF for x in b[200:260]) + b[260:], "corrupt member"),
    ],
)
def test_a_damaged_checkpoint_is_named_with_what_is_wrong(tmp_path, damage, why):
    good = fake_checkpoint(tmp_path / "good.ckpt", 2)
    assert checkpoint_problem(good) is None
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(damage(good.read_bytes()))
    assert why in checkpoint_problem(bad)


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=f"cannot resume from checkpoint {tmp_path / 'no.ckpt'}: no such file"):
        run(compose_cfg(tmp_path, "method=knn", f"ckpt_path={tmp_path / 'no.ckpt'}"), tmp_path / "run")


def test_a_folder_is_not_a_checkpoint(tmp_path):
    assert checkpoint_problem(tmp_path) == "a folder, not a checkpoint file"


def test_a_checkpoint_without_training_state_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "weights.ckpt")
    why = checkpoint_problem(tmp_path / "weights.ckpt")
    assert why == "not a training checkpoint (lacks loops, epoch, global_step)"


def test_choose_resume_checkpoint_falls_back_to_previous(tmp_path):
    last, previous = tmp_path / LAST, fake_checkpoint(tmp_path / PREVIOUS, 1)
    assert choose_resume_checkpoint(tmp_path) == (previous, [])
    fake_checkpoint(last, 2)
    assert choose_resume_checkpoint(tmp_path) == (last, [])
    last.write_bytes(last.read_bytes()[:100])
    chosen, unreadable = choose_resume_checkpoint(tmp_path)
    assert chosen == previous and [p for p, _ in unreadable] == [last]
    previous.write_bytes(b"")
    assert choose_resume_checkpoint(tmp_path)[0] is None


def test_an_explicit_corrupt_checkpoint_is_one_clear_error_and_changes_nothing(data_root, tmp_path):
    folder = tmp_path / "run"
    ckpt = folder / "checkpoints" / LAST
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 truncated")
    (folder / "metrics.json").write_text("{}")
    (folder / "csv").mkdir()
    (folder / "csv" / "metrics.csv").write_text("epoch,step\n0,1\n")
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=f"cannot resume from checkpoint {ckpt}: truncated"):
        run(compose_cfg(data_root, "method=knn", "max_epochs=1", f"ckpt_path={ckpt}"), folder)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".run.lock"}
    assert after == before


class _FakeStrategy:
    def barrier(self, *_: object) -> None:
        pass


class _FakeTrainer:
    """What EpochCheckpoint._save touches; `save_checkpoint` writes half a file and dies when `die` is set."""

    def __init__(self, step: int, die: bool = False) -> None:
        self.global_step, self.die, self.sanity_checking, self.is_global_zero = step, die, False, True
        self.callback_metrics: dict = {}
        self.strategy = _FakeStrategy()

    def save_checkpoint(self, path: Path) -> None:
        fake_checkpoint(Path(path), self.global_step)
        if self.die:
            Path(path).write_bytes(Path(path).read_bytes()[:50])
            raise KeyboardInterrupt  # the process dies in the middle of the write


def test_a_killed_checkpoint_write_never_replaces_a_good_file(tmp_path):
    cb = EpochCheckpoint(tmp_path)
    cb._save(_FakeTrainer(step=10))
    cb._save(_FakeTrainer(step=20))
    assert torch.load(tmp_path / LAST)["epoch"] == 20 and torch.load(tmp_path / PREVIOUS)["epoch"] == 10
    kept = {p.name: p.read_bytes() for p in (tmp_path / LAST, tmp_path / PREVIOUS)}
    with pytest.raises(KeyboardInterrupt):
        cb._save(_FakeTrainer(step=30, die=True))
    assert {p.name: p.read_bytes() for p in (tmp_path / LAST, tmp_path / PREVIOUS)} == kept
    assert choose_resume_checkpoint(tmp_path) == (tmp_path / LAST, [])


def test_the_csv_log_is_appended_across_attempts(tmp_path):
    for attempt, (step, values) in enumerate([(0, {"a": 1.0}), (5, {"a": 2.0, "b": 3.0})], start=1):
        logger = AppendingCSVLogger(save_dir=str(tmp_path))
        logger.log_metrics(values, step=step)
        logger.save()
        assert logger.experiment.attempt == attempt
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = [(r["attempt"], r["step"], r["a"], r["b"]) for r in rows]
    assert got == [("1", "0", "1.0", ""), ("2", "5", "2.0", "3.0")]  # the header widened, old rows kept


# ------------------------------------------------------------------------------------------ split sizes
def test_split_sizes_differing_from_the_published_ones_are_warned(tmp_path, caplog):
    from mprd.data.datasets import load_dataset
    from mprd.train import warn_on_split_sizes

    names = {"bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c3s1_000001_01.jpg"],
             "query": ["0003_c1s1_000001_01.jpg"], "bounding_box_test": ["0003_c2s1_000001_01.jpg"]}
    for folder, files in names.items():
        (tmp_path / folder).mkdir()
        for name in files:
            (tmp_path / folder / name).write_bytes(b"")
    data = load_dataset("market1501", tmp_path)
    with caplog.at_level(logging.WARNING, logger="mprd.train"):
        problems = warn_on_split_sizes(data, {})
    assert len(problems) == 9  # images, ids, cameras of three splits
    assert f"market1501 train images: found 3 under {tmp_path}, published 12,936" in problems
    assert f"market1501 train ids: found 2 under {tmp_path}, published 751" in problems
    assert f"market1501 query cameras: found 1 under {tmp_path}, published 6" in problems
    assert sum("split size differs from the published one" in r.message for r in caplog.records) == 9


# ----------------------------------------------------------------------------------------- end to end
def test_auto_resume_reports_where_it_starts(data_root, tmp_path, caplog):
    folder = tmp_path / "run"
    common = ("method=knn", "max_epochs=1", "eval_every=1", "auto_resume=true")
    with caplog.at_level(logging.INFO, logger="mprd.train"):
        run(compose_cfg(data_root, *common), folder)
    assert f"auto_resume: no checkpoint in {folder / 'checkpoints'}: starting from scratch" in caplog.text
    (folder / "checkpoints" / LAST).write_bytes(b"")
    (folder / "checkpoints" / PREVIOUS).write_bytes(b"x")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mprd.train"):
        record = run(compose_cfg(data_root, *common), folder)
    assert f"auto_resume: no readable checkpoint in {folder / 'checkpoints'}: starting over" in caplog.text
    kept = sorted(p.name for p in (folder / "checkpoints").iterdir())
    assert kept[0] == LAST and len(kept) == 3 and all(".unreadable-" in k for k in kept[1:])  # both kept aside
    assert len(list(folder.glob("metrics.*.json"))) == 1 and record["resumed_from"] is None


def test_a_finished_run_resumed_keeps_its_log_and_time(data_root, tmp_path):
    folder = tmp_path / "run"
    common = ("method=knn", "max_epochs=2", "eval_every=1")
    first = run(compose_cfg(data_root, *common), folder)
    again = run(compose_cfg(data_root, *common, "auto_resume=true"), folder)
    assert again["final"] == first["final"]
    assert again["train_log"]["labels/pair_precision"] == first["train_log"]["labels/pair_precision"]
    assert again["wall_time_s"] >= first["wall_time_s"] * 0.5  # the training time of the first attempt, not ~0
    kept = json.loads(next(folder.glob("metrics.*.json")).read_text())
    assert kept["final"] == first["final"] and kept["config"]["max_epochs"] == 2  # kept with its own config
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["attempt"] for r in rows} == {"1"}  # a finished run resumed trains and logs nothing more
    run(compose_cfg(data_root, *common[:2], "max_epochs=1"), folder)  # a fresh start: the earlier records stay
    assert len(list(folder.glob("metrics.*.json"))) == 2
    (old_csv,) = (folder / "csv").glob("metrics.*.csv")
    with open(old_csv, newline="") as f:
        assert list(csv.DictReader(f)) == rows
    assert len(list((folder / "checkpoints").glob("last.*.ckpt"))) == 1
    assert len(list((folder / "checkpoints").glob("previous.*.ckpt"))) == 1


def _train(out: Path, data_root: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "mprd.train", f"paths.root_dir={data_root}", f"hydra.run.dir={out}",
            "dataset.synthetic.preset=tiny", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "data.test_batch_size=64", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_bad_setting_exits_with_one_line_naming_it(data_root, tmp_path):
    proc = _train(tmp_path / "run", data_root, "method.loss.neg_ratio=2")
    assert proc.returncode == 1
    assert "method.loss.neg_ratio=2: expected a number in (0, 1]" in proc.stderr
    assert "Traceback" not in proc.stderr


# The kill/resume rows: (method, overrides). 3 epochs, killed after batch 1 (0-based) of epoch index 1, in its
# middle (tiny: 3 batches of 16 per epoch, 4 of 12 for UGA).
KILL_ROWS = {
    "knn": ("method=knn", "data.batch_size=16", "optim.milestones=[2]"),  # a lost scheduler step would move the lr drop
    "mprd": ("method=mprd", "data.batch_size=16"),
    "mlcr": ("method=mlcr", "method.labels.start_epoch=1", "data.batch_size=16"),
    "sslr": ("experiment=sslr/sslr", "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=2",
             "data.batch_size=16"),
    "uga": ("experiment=uga/uga", "data.batch_size=12"),
}


@pytest.mark.slow
@pytest.mark.parametrize("row", list(KILL_ROWS))
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(data_root, tmp_path, row):
    common = (*KILL_ROWS[row], "max_epochs=3", "eval_every=1", "seed=1")
    straight = _train(tmp_path / "straight", data_root, *common)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    proc = _train(killed, data_root, *common, "debug.sigkill_at=[1,1]")
    assert proc.returncode == -9, proc.stderr[-3000:]  # SIGKILL: no hook, no finally ran
    state = torch.load(killed / "checkpoints" / LAST, weights_only=False, map_location="cpu")
    assert state["epoch"] == 1  # written when epoch 1 started, i.e. after epoch 0 finished
    assert not (killed / "metrics.json").exists()
    resumed = _train(killed, data_root, *common, "auto_resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    # tolerance: 1e-6 (the float32 round-off of metrics in percent); the resumed run recomputes every epoch
    # from the same state and the same per-epoch seeds, on the same machine and thread count
    assert b["final"] == pytest.approx(a["final"], abs=1e-6)
    assert [e["epoch"] for e in b["per_epoch"]] == [0, 1, 2, 3]  # 0: the untrained network
    for ea, eb in zip(a["per_epoch"], b["per_epoch"], strict=True):
        assert eb == pytest.approx(ea, abs=1e-6)
    for da, db in zip(a.get("diagnostics", []), b.get("diagnostics", []), strict=True):  # kNN diagnostics too
        assert db == pytest.approx(da, abs=1e-6)
    assert b["resumed_from"] == str(killed / "checkpoints" / LAST)
    with open(killed / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    attempts = {r["attempt"] for r in rows}
    assert attempts == {"1", "2"}  # the killed attempt's rows are kept
    batches_per_epoch = torch.load(killed / "checkpoints" / LAST, weights_only=False)["global_step"] // 3
    assert batches_per_epoch >= 3  # batch 1 of epoch 1 was in the middle of that epoch
    if row == "knn":  # the milestone's lr step survived the resume: the same lr per epoch, two distinct values
        with open(tmp_path / "straight" / "csv" / "metrics.csv", newline="") as f:
            straight_lrs = {r["epoch"]: r["lr/group0"] for r in csv.DictReader(f) if r.get("lr/group0")}
        lrs = {r["epoch"]: r["lr/group0"] for r in rows if r.get("lr/group0")}  # the last attempt's row wins
        assert lrs == straight_lrs and len(set(lrs.values())) == 2


# ------------------------------------------------------------------------------- train/eval modes
class ModeRecorder(L.Callback):
    """`.training` of every module at the first training batch of each epoch, before and after its step,
    and the names of the body's BatchNorm layers."""

    def __init__(self) -> None:
        self.modes: dict[tuple[int, str], dict[str, bool]] = {}
        self.body_bn: list[str] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.modes[(trainer.current_epoch, "before")] = {n: m.training for n, m in pl_module.named_modules()}
            self.body_bn = [n for n, m in pl_module.named_modules()
                            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and ".body." in f".{n}."]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.modes[(trainer.current_epoch, "after")] = {n: m.training for n, m in pl_module.named_modules()}


MODE_ROWS = {
    "knn": ("method=knn",),
    "mlcr": ("method=mlcr", "method.labels.start_epoch=1"),
    "mprd": pytest.param(("method=mprd",), marks=pytest.mark.slow),
    "sslr": pytest.param(("experiment=sslr/sslr", "method.schedule.stage0_epochs=1",
                          "method.schedule.epochs_per_iteration=1"), marks=pytest.mark.slow),
    "uga": pytest.param(("experiment=uga/uga", "data.batch_size=12"), marks=pytest.mark.slow),
}


@pytest.mark.parametrize("overrides", list(MODE_ROWS.values()), ids=list(MODE_ROWS))
def test_module_modes_after_resume_equal_an_uninterrupted_run(data_root, tmp_path, overrides):
    """Every module's train/eval mode, frozen body BN included, at each epoch's first batch: a run resumed after
    epoch 1 equals a straight one, and with `backbone.freeze_bn` (the CPU preset) the body BN stays in eval."""
    common = (*overrides, "max_epochs=2", "eval_every=1", "seed=4")
    if "data.batch_size=12" not in overrides:
        common = (*common, "data.batch_size=16")
    straight, resumed = ModeRecorder(), ModeRecorder()
    run(compose_cfg(data_root, *common), tmp_path / "straight", callbacks=[straight])
    run(compose_cfg(data_root, *common, "debug.stop_after_epochs=1"), tmp_path / "resumed", callbacks=[resumed])
    run(compose_cfg(data_root, *common, "auto_resume=true"), tmp_path / "resumed", callbacks=[resumed])
    assert sorted(resumed.modes) == sorted(straight.modes) and len(straight.modes) == 4  # 2 epochs x before/after
    for key, modes in straight.modes.items():
        assert resumed.modes[key] == modes, key
    cfg = compose_cfg(data_root, *common)
    assert cfg.backbone.freeze_bn  # the CPU preset freezes the body's BN
    for (epoch, _), modes in straight.modes.items():
        assert straight.body_bn and not any(modes[n] for n in straight.body_bn), epoch
        assert modes[""]  # the LightningModule itself trains


def test_a_symbolic_link_loop_is_a_dataset_error_naming_it(tmp_path):
    from mprd.data.datasets import load_dataset
    from mprd.data.records import DatasetError

    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "0002_c1s1_000451_03.jpg").write_bytes(b"")
    loop = tmp_path / "query" / "0003_c1s1_000001_01.jpg"
    loop.symlink_to(loop)
    with pytest.raises(DatasetError, match=f"cannot read {loop}: Too many levels of symbolic links"):
        load_dataset("market1501", tmp_path)


@pytest.mark.slow
def test_a_second_process_in_a_busy_folder_fails_at_once_and_leaves_the_first_runs_records(data_root, tmp_path):
    import time

    folder = tmp_path / "run"
    common = ["method=knn", "eval_every=1", "data.batch_size=16"]
    args = [sys.executable, "-m", "mprd.train", f"paths.root_dir={data_root}", f"hydra.run.dir={folder}",
            "dataset.synthetic.preset=tiny", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
            "data.test_batch_size=64", *common, "max_epochs=4", "seed=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = folder / ".run.lock"
        deadline = time.time() + 300
        while not (lock.is_file() and lock.read_text().strip()) and time.time() < deadline:
            time.sleep(0.2)
        overrides_first = (folder / ".hydra" / "overrides.yaml").read_text()
        t0 = time.perf_counter()
        second = _train(folder, data_root, *common, "max_epochs=2", "seed=1")
        refused_in = time.perf_counter() - t0
        assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    finally:
        _, err = first.communicate(timeout=600)
    assert second.returncode == 1
    assert f"run folder {folder} is in use by another run (pid {first.pid} on" in second.stderr
    assert refused_in < 60  # at once: before the dataset or the model is built (start-up only)
    assert first.returncode == 0, err[-3000:]
    record = json.loads((folder / "metrics.json").read_text())
    assert record["seed"] == 0 and [e["epoch"] for e in record["per_epoch"]] == [0, 1, 2, 3, 4]
    assert (folder / ".hydra" / "overrides.yaml").read_text() == overrides_first  # restored after the refusal
    assert "seed=0" in overrides_first and record["overrides"] == [o for o in record["overrides"] if "seed=1" not in o]
    with open(folder / "csv" / "metrics.csv", newline="") as f:
        assert {r["attempt"] for r in csv.DictReader(f)} == {"1"}  # only the first run's rows


@pytest.mark.parametrize(
    "override, value",
    [
        ("dataset.root=/data/my set", "/data/my set"),  # spaces: shell quoting is enough
        ("dataset.root='/data/Märkt 1501'", "/data/Märkt 1501"),  # non-ASCII: quote the value for Hydra
        ("dataset.root='/data/a,b=(1)'", "/data/a,b=(1)"),  # , = ( ): quote the value for Hydra
    ],
)
def test_documented_path_quoting(override, value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert OverridesParser.create().parse_override(override).value() == value


def test_unquoted_non_ascii_and_commas_are_not_paths():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    with pytest.raises(Exception, match="ä"):  # Hydra's lexer refuses it
        parser.parse_override("dataset.root=/data/Märkt-1501")
    assert parser.parse_override("dataset.root=/data/a,b").is_sweep_override()  # a comma makes a sweep


def test_auto_resume_falls_back_to_the_previous_checkpoint_and_ends_where_a_straight_run_ends(data_root, tmp_path):
    folder = tmp_path / "run"
    common = ("method=knn", "max_epochs=2", "eval_every=1", "data.batch_size=16", "seed=5")
    straight = run(compose_cfg(data_root, *common), folder)
    ckpts = folder / "checkpoints"
    assert torch.load(ckpts / PREVIOUS, weights_only=False)["epoch"] == 1  # written as epoch 2 started
    (folder / "metrics.json").unlink()  # as if killed before metrics.json was written
    (ckpts / LAST).write_bytes((ckpts / LAST).read_bytes()[:1000])  # and last.ckpt truncated
    resumed = run(compose_cfg(data_root, *common, "auto_resume=true"), folder)
    assert resumed["resumed_from"] == str(ckpts / PREVIOUS)
    assert resumed["final"] == pytest.approx(straight["final"], abs=1e-6)
    assert len(list(ckpts.glob("last.unreadable-*.ckpt"))) == 1  # kept, not deleted
    assert checkpoint_problem(ckpts / LAST) is None


def test_tiny_and_duplicate_images_are_warned(tmp_path, caplog):
    from PIL import Image

    from mprd.data.datasets import load_dataset
    from mprd.train import warn_on_suspicious_images

    def save(folder: str, name: str, size: tuple[int, int], colour: int) -> Path:
        (tmp_path / folder).mkdir(exist_ok=True)
        Image.new("RGB", size, (colour, 0, 0)).save(tmp_path / folder / name)
        return tmp_path / folder / name

    save("bounding_box_train", "0001_c1s1_000001_01.jpg", (32, 64), 10)
    tiny = save("bounding_box_train", "0001_c2s1_000001_01.jpg", (1, 1), 20)
    a = save("query", "0002_c1s1_000001_01.jpg", (32, 64), 200)
    b = save("bounding_box_test", "0002_c2s1_000001_01.jpg", (32, 64), 200)  # the same bytes as the query
    save("bounding_box_test", "0003_c2s1_000001_01.jpg", (32, 64), 90)
    with caplog.at_level(logging.WARNING, logger="mprd.train"):
        problems = warn_on_suspicious_images(load_dataset("market1501", tmp_path))
    assert problems == [
        f"market1501: 1 image(s) smaller than 8px on a side under {tmp_path}, e.g. {tiny} (1x1)",
        f"market1501: 1 group(s) of byte-identical images (2 files) under {tmp_path}, e.g. {a} = {b}",
    ]
    assert [r.message for r in caplog.records] == problems


@pytest.mark.slow
def test_stop_after_epochs_exits_0_without_metrics_and_resumes(data_root, tmp_path):
    folder = tmp_path / "run"
    common = ("method=knn", "max_epochs=2", "eval_every=1", "data.batch_size=16")
    stopped = _train(folder, data_root, *common, "debug.stop_after_epochs=1")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not (folder / "metrics.json").exists()
    assert torch.load(folder / "checkpoints" / LAST, weights_only=False)["epoch"] == 1
    resumed = _train(folder, data_root, *common, "auto_resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((folder / "metrics.json").read_text())
    assert [e["epoch"] for e in record["per_epoch"]] == [0, 1, 2]  # 0: the untrained network
    assert "max_epochs=2" in record["overrides"] and len(list((folder / ".hydra" / "attempts").iterdir())) == 2


def test_a_failed_start_leaves_the_folder_as_it_was(data_root, tmp_path):
    folder = tmp_path / "run"
    run(compose_cfg(data_root, "method=knn", "max_epochs=1", "eval_every=1"), folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".run.lock"}
    with pytest.raises(ValueError, match="unknown key.* nope"):  # fails once the data are loaded
        run(compose_cfg(data_root, "method=knn", "max_epochs=1", "+method.nope=1"), folder)
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".run.lock"}
    assert after == before  # metrics.json, checkpoints and the CSV log stay where they were


# ----------------------------------------------------------------------------------------------- report
def test_the_report_flags_a_cell_that_averages_runs_with_different_settings(tmp_path):
    from mprd.report import aggregate, collect_runs, load_paper, render_markdown
    from mprd.runconfig import differing_settings

    def write(name: str, seed: int, config: dict | None, hydra: dict | None = None) -> Path:
        folder = tmp_path / name
        (folder / ".hydra").mkdir(parents=True)
        rec = {"method": "knn", "row": "knn", "dataset": "synthetic", "seed": seed, "preset": "cpu",
               "final": {"rank1": 40.0, "rank5": 50.0, "rank10": 60.0, "mAP": 20.0, "mINP": 10.0}}
        if config is not None:
            rec["config"] = config
        (folder / "metrics.json").write_text(json.dumps(rec))
        if hydra is not None:
            (folder / ".hydra" / "config.yaml").write_text(json.dumps(hydra))  # JSON is YAML
        return folder

    base = {"max_epochs": 6, "seed": 0, "paths": {"output_dir": "/a"}, "method": {"meta": {"seed": 0}, "mu": 0.5}}
    other_seed = {**base, "seed": 1, "paths": {"output_dir": "/b"}, "method": {"meta": {"seed": 1}, "mu": 0.5}}
    assert differing_settings([base, other_seed]) == {}  # seeds and paths may differ within a cell
    assert differing_settings([base, {**base, "audit_images": True}]) == {}  # a key only newer runs have
    adhoc = {**base, "max_epochs": 2, "method": {"meta": {"seed": 2}, "mu": 0.9}}
    assert differing_settings([base, other_seed, adhoc]) == {"max_epochs": [6, 6, 2], "method.mu": [0.5, 0.5, 0.9]}

    write("a", 0, base)
    write("b", 1, None, hydra=other_seed)  # an older run: its .hydra/config.yaml is read
    paper = load_paper()
    text = render_markdown(aggregate(collect_runs(tmp_path), "table1", paper=paper), date="2000-01-01")
    assert "different settings" not in text
    write("c", 2, adhoc)
    text = render_markdown(aggregate(collect_runs(tmp_path), "table1", paper=paper), date="2000-01-01")
    assert "row knn averages runs with different settings: max_epochs = 6, 2; method.mu = 0.5, 0.9" in text


# A training process that SIGKILLs itself half-way through writing its second end-of-epoch checkpoint (the
# one written as epoch index 2 starts): Lightning's writer is wrapped, nothing in mprd is changed.
_KILL_IN_WRITE = """
import io, os, signal, sys
import lightning.fabric.plugins.io.torch_io as tio
import torch

def half_write_then_die(checkpoint, path):
    if checkpoint["epoch"] == 2:
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        with open(path, "wb") as f:
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    original(checkpoint, path)

original, tio._atomic_save = tio._atomic_save, half_write_then_die
import runpy
runpy.run_module("mprd.train", run_name="__main__", alter_sys=True)  # as `python -m mprd.train`
"""


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_keeps_the_good_one(data_root, tmp_path):
    common = ("method=knn", "max_epochs=3", "eval_every=1", "seed=1", "data.batch_size=16")
    straight = _train(tmp_path / "straight", data_root, *common)
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = tmp_path / "killed"
    args = [sys.executable, "-c", _KILL_IN_WRITE, f"paths.root_dir={data_root}", f"hydra.run.dir={killed}",
            "dataset.synthetic.preset=tiny", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
            "data.test_batch_size=64", *common]
    proc = subprocess.run(args, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-3000:]
    ckpts = killed / "checkpoints"
    assert checkpoint_problem(ckpts / (LAST + ".tmp")) is not None  # the half-written file
    assert torch.load(ckpts / LAST, weights_only=False)["epoch"] == 1  # the good one, untouched
    resumed = _train(killed, data_root, *common, "auto_resume=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["final"] == pytest.approx(a["final"], abs=1e-6) and b["resumed_from"] == str(ckpts / LAST)
