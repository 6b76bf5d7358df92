"""benchmarks/gpu_check.py: the projection arithmetic (fast) and a CPU smoke run of the whole script (slow), so the
prepared GPU measurement cannot rot before a lease."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_projection_counts_startup_epochs_and_evaluations():
    gc = _gpu_check()
    watch = gc.Stopwatch()
    watch.fit_start, watch.first_epoch_start = 100.0, 130.0  # 30 s memory init
    watch.epochs = [{"epoch_start_work_s": 99.0, "train_s": 99.0},  # epoch 0 (warm-up) is not projected
                    {"epoch_start_work_s": 5.0, "train_s": 55.0}]
    watch.evals = [20.0, 30.0]
    p = gc.project(watch, epochs=40, eval_every=5)
    assert p["evaluations"] == 8  # epochs 5, 10, ..., 40 (the last one is also the final evaluation)
    assert p["projected_40_epochs_s"] == pytest.approx(30 + 40 * 60 + 8 * 25)
    assert gc.project(watch, epochs=12, eval_every=5)["evaluations"] == 3  # 5, 10 and the final 12


@pytest.mark.slow
def test_gpu_check_smoke_run_on_cpu(tmp_path):
    gc = _gpu_check()
    assert gc.main(["--root", str(tmp_path / "root"), "--out", str(tmp_path / "out"), "--smoke"]) == 0
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert [e["epoch"] for e in result["epochs"]] == [0.0, 1.0] and len(result["evaluations_s"]) == 1
    last = result["epochs"][-1]
    assert last["images"] == 48 and last["images_per_s"] > 0  # tiny: 3 batches of 16
    assert 0 < last["refresh_s"] <= last["epoch_start_work_s"]
    assert "projected 40-epoch MPRD wall time" in (tmp_path / "out" / "gpu_check.md").read_text()
