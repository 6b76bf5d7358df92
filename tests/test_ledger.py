"""The run ledger (mprd.report.ledger): metrics.json only, into and back out of git's copy, never over a run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mprd.report.ledger import archive, main, restore

ROOT = Path(__file__).resolve().parents[1]


def _run(folder: Path, mAP: float) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (folder / "train.log").write_text("log")
    path = folder / "metrics.json"
    path.write_text(json.dumps({"row": folder.name, "final": {"mAP": mAP}}))
    return path


def test_archive_copies_metrics_only_and_restore_fills_only_absent_runs(tmp_path):
    runs, ledger = tmp_path / "runs", tmp_path / "ledger"
    _run(runs / "table1-synthetic" / "knn-seed0", 9.9)
    _run(runs / "table1-synthetic" / "mprd-seed0", 12.8)
    _run(runs / "fig4-synthetic" / "mu0.5-seed0", 12.8)
    out = archive(runs / "table1-synthetic", ledger, runs)
    assert len(out.copied) == 2 and not out.unchanged
    files = sorted(str(p.relative_to(ledger)) for p in ledger.rglob("*") if p.is_file())
    assert files == ["table1-synthetic/knn-seed0/metrics.json", "table1-synthetic/mprd-seed0/metrics.json"]
    assert len(archive(runs / "table1-synthetic", ledger, runs).unchanged) == 2  # idempotent
    # a rerun replaces its ledger record (git keeps the old one)
    (runs / "table1-synthetic" / "knn-seed0" / "metrics.json").write_text(json.dumps({"final": {"mAP": 10.1}}))
    assert len(archive(runs / "table1-synthetic", ledger, runs).copied) == 1
    assert json.loads((ledger / "table1-synthetic/knn-seed0/metrics.json").read_text())["final"]["mAP"] == 10.1

    fresh = tmp_path / "fresh_runs"  # a fresh clone: no runs at all
    mine = _run(fresh / "table1-synthetic" / "mprd-seed0", 13.3)  # ... but the user has rerun MPRD seed 0
    back = restore(ledger, fresh)
    assert [p.relative_to(fresh).as_posix() for p in back.copied] == ["table1-synthetic/knn-seed0/metrics.json"]
    assert back.kept == [mine] and json.loads(mine.read_text())["final"]["mAP"] == 13.3  # never overwritten
    assert "1 left as they are" in back.summary("restored:")


def test_archive_refuses_a_folder_outside_the_runs_root(tmp_path):
    _run(tmp_path / "elsewhere" / "knn-seed0", 1.0)
    with pytest.raises(ValueError, match="not inside the runs folder"):
        archive(tmp_path / "elsewhere", tmp_path / "ledger", tmp_path / "runs")
    assert main(["archive", str(tmp_path / "elsewhere"), "--runs", str(tmp_path / "runs"),
                 "--ledger", str(tmp_path / "ledger")]) == 2


def test_make_reproduce_archives_after_the_report_and_restore_runs_is_a_target(tmp_path):
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than requirements.txt: make only prints the commands
    dry = subprocess.run(["make", "-n", "-s", "reproduce-table1", "SEEDS=0", f"STAMP={stamp}"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    report = next(i for i, line in enumerate(dry) if "-m mprd.report table1" in line)
    assert "-m mprd.report.ledger archive" in dry[report + 1]
    assert dry[report + 1].rstrip().endswith("experiments/results/runs/table1-synthetic")
    restore_cmd = subprocess.run(["make", "-n", "-s", "restore-runs", f"STAMP={stamp}"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
    expected = "-m mprd.report.ledger restore --runs experiments/results/runs --ledger experiments/results/ledger"
    assert expected in restore_cmd
