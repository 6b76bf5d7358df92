"""Every experiment preset composes against the real config; launchers compose; Table 1 rows run (slow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mprd.report.artefacts import get
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(
    str(p.relative_to(CONF / "experiment").with_suffix("")) for p in (CONF / "experiment").rglob("*.yaml")
)
TABLE1 = get("table1").rows()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert cfg.method.name and cfg.row
    if experiment.startswith(("table1/", "table2/", "table3/")):
        assert cfg.artefact == experiment.split("/")[0] and cfg.row == experiment.split("/")[1]
        assert cfg.method.name == cfg.row


@pytest.mark.parametrize(
    ("preset", "iterations", "epochs"), [("cpu", 2, 6), ("cpu_real", 2, 4), ("cpu_long", 2, 18), ("paper", 20, 65)]
)
def test_reproduce_table3_rows(tmp_path, preset, iterations, epochs):
    """`make reproduce-table3` (dry run): MPRD, MLCR, SSLR (the paper's rows) and UGA (extra), all in table3;
    SSLR's stage 0 + iterations fill max_epochs (the CPU presets' length; SSLR's own 25 + 20 x 2 on the GPU
    preset), so its row uses camera IDs through CCE."""
    import shlex
    import subprocess

    from mprd.methods.sslr.schedule import Schedule
    from mprd.supervision import describe, uses_besides_images

    stamp = tmp_path / "installed"
    stamp.touch()  # newer than requirements.txt: make sees the venv as installed and only prints the targets
    dry = subprocess.run(["make", "-n", "-s", "reproduce-table3", f"PRESET={preset}", f"STAMP={stamp}"],
                         cwd=CONF.parent, capture_output=True, text=True, check=True).stdout
    commands = [shlex.split(line) for line in dry.replace("\\\n", " ").splitlines() if "mprd.train --multirun" in line]
    rows = {}
    for args in commands:
        overrides = [a for a in args[args.index("--multirun") + 1 :] if not a.startswith(("hydra.", "experiment="))]
        overrides = [a for a in overrides if not a.startswith(("dataset=", "logger."))]  # compose_cfg's tiny set
        (experiments,) = [a.removeprefix("experiment=") for a in args if a.startswith("experiment=")]
        for experiment in experiments.split(","):
            cfg = compose_cfg(tmp_path, f"experiment={experiment}", *overrides)
            assert cfg.artefact == "table3" and cfg.preset_name == preset and "table3" in cfg.tags
            rows[cfg.row] = cfg
    assert sorted(rows) == ["mlcr", "mprd", "sslr", "uga"]
    assert Schedule.resolve(rows["sslr"].method.schedule, rows["sslr"].max_epochs).iterations == iterations
    assert rows["sslr"].max_epochs == epochs
    assert describe(uses_besides_images(rows["sslr"])) == "camera IDs (CCE)"


def test_table1_rows_differ_only_in_what_the_paper_changes(tmp_path):
    cfgs = {row: compose_cfg(tmp_path, f"experiment=table1/{row}") for row in TABLE1}
    for _, cfg in cfgs.items():  # every row: the same CNN, BD loss and optimiser (MPRD Table 1 caption)
        assert cfg.method.loss.name == "bd" and cfg.method.loss.delta == 5.0
        assert cfg.optim == cfgs["knn"].optim and cfg.backbone == cfgs["knn"].backbone
    assert cfgs["mprd_nocam"].method.camstyle is False and cfgs["mprd"].method.get("camstyle", True)
    assert cfgs["mprd_wo"].method.unlabeled.enabled is False and cfgs["mprd"].method.unlabeled.enabled


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("submitit_slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_submitit_takes_partition_gpus_and_time_from_config():
    overrides = ["launcher=submitit_slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90",
                 "hydra.launcher.gpus_per_node=2"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
        default = compose("train", overrides=["launcher=submitit_slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 90, 2)
    assert default.hydra.launcher.partition is None and default.hydra.launcher.timeout_min == 720


@pytest.mark.slow
def test_joblib_multirun_on_tiny(tmp_path):
    """`launcher=joblib`: a Hydra multirun of 2 jobs (seeds 0, 1) in parallel; each writes its metrics.json."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    sweep = tmp_path / "multirun"
    cmd = [
        sys.executable, "-m", "mprd.train", "--multirun", "launcher=joblib", "hydra.launcher.n_jobs=2",
        "experiment=table1/knn", "seed=0,1", "max_epochs=1", "eval_every=1", "dataset.synthetic.preset=tiny",
        f"paths.root_dir={tmp_path}", "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "data.test_batch_size=64", f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir=${row}-seed${seed}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        job = sweep / f"knn-seed{seed}"
        record = json.loads((job / "metrics.json").read_text())
        assert (record["row"], record["artefact"], record["seed"], record["method"]) == ("knn", "table1", seed, "knn")
        # epoch 0 is the untrained network (eval_initial), then the one trained epoch
        assert [e["epoch"] for e in record["per_epoch"]] == [0, 1] and 0 <= record["final"]["mAP"] <= 100
        hydra_cfg = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["launcher"]["_target_"].endswith("JoblibLauncher") and hydra_cfg["launcher"]["n_jobs"] == 2
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["knn-seed0", "knn-seed1"]


@pytest.mark.slow
@pytest.mark.parametrize("row", TABLE1)
def test_table1_row_trains_one_epoch_on_tiny(row, tmp_path):
    from mprd.train import run

    cfg = compose_cfg(tmp_path, f"experiment=table1/{row}", "max_epochs=1", "eval_every=1")
    record = run(cfg, tmp_path / "run")
    assert record["row"] == row and record["artefact"] == "table1"
    assert 0 <= record["final"]["mAP"] <= 100


TABLE3_TINY = {  # the shortest schedule of each row on `tiny` (SSLR: stage 0 + one iteration, so CCE is used)
    "table3/mprd": ("max_epochs=1",),
    "table3/mlcr": ("max_epochs=1",),
    "sslr/table3": ("max_epochs=2", "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=1"),
    "uga/table3": ("max_epochs=2", "data.batch_size=12"),
}


@pytest.mark.slow
def test_table3_rows_train_on_tiny_and_report(tmp_path):
    """The reproduce-table3 rows end to end: each run records what it uses; the report shows it per row,
    the paper's rows first and UGA after them, marked as our extra row."""
    from mprd import report
    from mprd.train import run

    for experiment, overrides in TABLE3_TINY.items():
        cfg = compose_cfg(tmp_path, f"experiment={experiment}", "eval_every=1", *overrides)
        record = run(cfg, tmp_path / "runs" / experiment.replace("/", "-"))
        assert record["artefact"] == "table3" and 0 <= record["final"]["rank10"] <= 100
    out = tmp_path / "out"
    assert report.main(["table3", "--runs", str(tmp_path / "runs"), "--out", str(out), "--no-plot"]) == 0
    csv = pd.read_csv(out / "table3-synthetic.csv")
    # UGA (our extra row) after the paper's rows, then the untrained network's row (docs/dynamics.md)
    assert list(csv["key"])[-2:] == ["uga", "untrained"] and not csv["in_paper"].iloc[-2:].any()
    uses = csv.set_index("key")["uses"]
    assert uses["mprd"] == "5 meta IDs + CamStyle (camera IDs)" and uses["mlcr"] == "CamStyle (camera IDs)"
    assert uses["sslr"] == "camera IDs (CCE)"
    assert uses["uga"] == "intra-camera labels + camera IDs (per-camera classifiers)"
    assert (csv.set_index("key").loc[["mprd", "mlcr", "sslr", "uga"], "n"] == 1).all()
    text = (out / "table3-synthetic.md").read_text()
    assert "‡ | 1 |" in text and "| Uses besides images |" in text


SSLR_SWEEPS = {  # make target = report artefact (SSLR Fig. 4(b)-(f)) -> (sweep key, config key, the paper's value)
    "sweep-sslr-lam": ("lam", "method.soft.lam", 0.6),
    "sweep-sslr-k": ("k", "method.soft.k", 4),
    "sweep-sslr-lambda-c": ("lambda_c", "method.similarity.lambda_c", 0.02),
    "sweep-sslr-lambda-p": ("lambda_p", "method.similarity.lambda_p", 0.5),
    "sweep-sslr-parts": ("parts", "method.similarity.parts", 8),
}


def _make_dry_run(target: str, *variables: str) -> list[str]:
    """The `mprd.train` argv that `make <target> [VAR=value ...]` would run (make -n; the install stamp counts as
    fresh)."""
    import shlex
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make not installed")
    root = CONF.parent
    out = subprocess.run(["make", "-n", "-W", ".venv/.installed", target, *variables], cwd=root, capture_output=True,
                         text=True, check=True).stdout.replace("\\\n", " ")  # join continued recipe lines
    (line,) = [ln for ln in out.splitlines() if "-m mprd.train" in ln]
    argv = shlex.split(line)
    return argv[argv.index("mprd.train") + 1 :]


@pytest.mark.parametrize("target", list(SSLR_SWEEPS))
def test_sslr_sweep_targets_compose_and_feed_their_report(target, tmp_path):
    """Every value of each `make sweep-sslr-*` multirun composes, records {key: value} in `sweep`, and the
    report artefact of the same name reads that key (SSLR Fig. 4(b)-(f)); the grid holds the paper's value."""
    from mprd.report.aggregation import _sweep_value
    from mprd.report.artefacts import SWEEP_ARTEFACTS, TITLES
    from mprd.report.load import load_paper

    key, config_key, chosen = SSLR_SWEEPS[target]
    argv = _make_dry_run(target)
    assert "--multirun" in argv and f"artefact={target}" in argv and "experiment=sslr/sweep" in argv
    grid = list(get(target).values(config_key))  # the Makefile's default grid (tests/test_artefacts.py)
    (paper_value,) = [v for v in grid if float(v) == chosen]
    assert len(grid) >= 5
    fixed = [a for a in argv if a != "--multirun" and not a.startswith(("hydra.", f"{config_key}="))]
    spec = load_paper()["sweeps"][target]
    assert target in SWEEP_ARTEFACTS and target in TITLES and spec["param"] == key and spec["chosen"] == chosen
    for text in (grid[0], paper_value, grid[-1]):
        cfg = compose_cfg(tmp_path, *fixed, f"{config_key}={text}")
        assert cfg.artefact == target and cfg.row == "sslr" and cfg.method.family == "sslr"
        assert dict(cfg.sweep) == {key: float(text)} and OmegaConf.select(cfg, config_key) == float(text)
        run = {"sweep": dict(cfg.sweep), "artefact": target}
        assert _sweep_value(run, target, spec["aliases"])[:2] == (True, cfg.sweep[key])


@pytest.mark.parametrize(
    ("preset", "k_max", "clip", "warmup", "init"),
    [
        ("cpu", 8, 5.0, 1, "forward"),
        ("cpu_real", 8, 5.0, 1, "forward"),
        ("cpu_long", 8, 5.0, 2, "forward"),
        ("paper", 32, None, 5, "zeros"),
        ("paper_mlcr", 32, None, 5, "zeros"),
    ],
)
def test_one_recipe_caps_every_threshold_rule_and_clips_only_on_cpu(tmp_path, preset, k_max, clip, warmup, init):
    """recipe.k_max reaches MPRD's k_i, SS's P_i, MPLP*'s and MLCR's k_i alike (docs/dynamics.md causes 5-6, "Table 2");
    MLCR's single-label warm-up follows the preset's schedule (5 of 60 epochs on the paper presets) and its memory
    starts from zeros (the release) only there, from the initial CNN on cpu ("Table 2"); the CPU presets
    clip the gradient norm (cause 7), the paper presets do not."""
    from mprd.methods.baselines import build_generator

    caps = {}
    for row in ("mprd", "ss", "mplp", "knn", "single"):
        cfg = compose_cfg(tmp_path, f"experiment=table1/{row}", f"preset={preset}")
        assert cfg.trainer.get("gradient_clip_val") == clip
        caps[row] = cfg.method
    assert caps["mprd"].neighbors.k_max == k_max
    assert caps["ss"].generator.max_k == k_max and caps["mplp"].generator.max_candidates == k_max
    gen = build_generator("ss", **OmegaConf.to_container(caps["ss"].generator, resolve=True))
    assert gen.max_k == k_max
    for row in ("table2/mlcr", "table2/mlcr_5id", "table3/mlcr"):
        mlcr = compose_cfg(tmp_path, f"experiment={row}", f"preset={preset}")
        assert mlcr.method.generator.max_candidates == k_max and mlcr.method.labels.start_epoch == warmup
        assert mlcr.method.memory.init == init and mlcr.method.memory.write == "after_loss"
    assert compose_cfg(tmp_path, "experiment=table1/mprd", f"preset={preset}").method.labels.start_epoch == 0
    literal = compose_cfg(tmp_path, "experiment=table1/ss", f"preset={preset}", "method.generator.max_k=null")
    assert literal.method.generator.max_k is None


@pytest.mark.parametrize(("preset", "scale"), [("cpu", 0.3), ("cpu_real", 0.3), ("cpu_long", 0.3),
                                               ("paper", 1.0), ("paper_uga", 1.0)])
def test_uga_network_lr_scale_follows_the_preset_recipe(tmp_path, preset, scale):
    """UGA's network lr is 0.3 x its classifier's on the frozen-BN CPU presets, where Adam at 3.5e-4 kills Lite0's
    pool-5 units (docs/dynamics.md, "UGA's network lr"); the paper presets keep UGA's single lr."""
    from mprd.methods.uga.config import UGAConfig

    for row in ("uga/uga", "uga/intra", "video/uga"):
        cfg = compose_cfg(tmp_path, f"experiment={row}", f"preset={preset}")
        method = OmegaConf.to_container(cfg.method, resolve=True)
        assert UGAConfig.from_method(method).optim.network_lr_scale == scale


def test_cpu_long_is_cpu_with_a_longer_schedule(tmp_path):
    """preset=cpu_long changes the schedule only (epochs, lr step, SSLR's split), so its curves extend cpu's."""
    short = OmegaConf.to_container(compose_cfg(tmp_path, "experiment=table1/mprd", "preset=cpu"), resolve=True)
    long = OmegaConf.to_container(compose_cfg(tmp_path, "experiment=table1/mprd", "preset=cpu_long"), resolve=True)
    assert (long["max_epochs"], long["optim"]["milestones"], long["preset_name"]) == (18, [12], "cpu_long")
    sslr = long["sslr_schedule"]
    assert sslr["stage0_epochs"] + 2 * sslr["epochs_per_iteration"] == 18
    for cfg in (short, long):
        for key in ("max_epochs", "optim", "sslr_schedule", "preset_name", "trainer", "paths", "hydra"):
            cfg.pop(key, None)
        # MLCR's warm-up is schedule too
        assert cfg["recipe"]["mlcr"].pop("warmup_epochs") == (1 if cfg is short else 2)
    assert short == long


@pytest.mark.slow
def test_super_knn_ceiling_row_trains_on_exact_labels_within_the_knn(tmp_path):
    """The ceiling row (docs/dynamics.md): its pseudo positives are all true (precision 1) but, limited to the
    memory's k-NN, find only part of each identity (recall < 1)."""
    from mprd.train import run

    cfg = compose_cfg(tmp_path, "experiment=table1/super_knn", "max_epochs=1", "eval_every=1")
    record = run(cfg, tmp_path / "run")
    log = record["train_log"]
    assert record["row"] == "super_knn" and record["uses"][0] == "identity labels (within the 8-NN)"
    assert log["labels/pair_precision"] == pytest.approx(1.0) and 0 < log["labels/pair_recall"] < 1


def test_reproduce_uga_takes_row_names_or_experiment_names(tmp_path):
    """UGA_ROWS=uga_intra,noself runs experiments uga/intra and uga/noself, which write rows uga_intra and
    uga_noself (a user copies row names from the report; the experiments are named without the prefix)."""
    argv = _make_dry_run("reproduce-uga", "UGA_ROWS=uga_intra,noself", "SEEDS=0")
    (experiments,) = [a.split("=", 1)[1] for a in argv if a.startswith("experiment=")]
    assert experiments == "uga/intra,uga/noself"
    for name, row in (("intra", "uga_intra"), ("noself", "uga_noself")):
        assert compose_cfg(tmp_path, f"experiment=uga/{name}").row == row
