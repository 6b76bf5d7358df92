"""Every experiment preset composes against the real config; launchers compose; Table 1 rows run (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.test_train import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml"))
TABLE1 = ["super", "knn", "ss", "mplp", "mprd_wo", "mprd_nocam", "mprd", "single"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert cfg.method.name and cfg.row
    if experiment.startswith(("table1/", "table2/")):
        assert cfg.artefact == experiment.split("/")[0] and cfg.row == experiment.split("/")[1]
        assert cfg.method.name == cfg.row


def test_table1_rows_differ_only_in_what_the_paper_changes(tmp_path):
    cfgs = {row: compose_cfg(tmp_path, f"experiment=table1/{row}") for row in TABLE1}
    for row, cfg in cfgs.items():  # every row: the same CNN, BD loss and optimiser (MPRD Table 1 caption)
        assert cfg.method.loss.name == "bd" and cfg.method.loss.delta == 5.0
        assert cfg.optim == cfgs["knn"].optim and cfg.backbone == cfgs["knn"].backbone
    assert cfgs["mprd_nocam"].method.camstyle is False and cfgs["mprd"].method.get("camstyle", True)
    assert cfgs["mprd_wo"].method.unlabeled.enabled is False and cfgs["mprd"].method.unlabeled.enabled


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.slow
@pytest.mark.parametrize("row", TABLE1)
def test_table1_row_trains_one_epoch_on_tiny(row, tmp_path):
    from mprd.train import run

    cfg = compose_cfg(tmp_path, f"experiment=table1/{row}", "max_epochs=1", "eval_every=1")
    record = run(cfg, tmp_path / "run")
    assert record["row"] == row and record["artefact"] == "table1"
    assert 0 <= record["final"]["mAP"] <= 100
