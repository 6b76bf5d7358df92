"""The artefact registry (mprd.report.artefacts): configs and paper numbers behind every row; the Makefile reads it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from mprd.report.artefacts import REGISTRY, SWEEP_ARTEFACTS, TITLES, answer, get, main
from mprd.report.load import load_paper
from tests.conftest import compose_cfg

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted({(a.name, e) for a in REGISTRY.values() for e in a.experiments})


@pytest.mark.parametrize(("artefact", "experiment"), EXPERIMENTS)
def test_every_row_has_its_config_and_its_paper_entry(artefact, experiment, tmp_path):
    """Each row is `conf/experiment/<path>.yaml`, of the artefact's folder; a table row is in the paper's table
    (paper_numbers.yaml `tables.<artefact>`) unless the registry marks it as our extra row."""
    assert (ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    spec = get(artefact)
    cfg = compose_cfg(tmp_path, f"experiment={experiment}")
    assert cfg.artefact in (artefact, experiment.split("/")[0], "sweep", "sweep-sslr")
    if spec.kind == "table":
        keys = {row["key"] for row in load_paper()["tables"][artefact]["rows"]}
        assert (cfg.row in keys) == (experiment not in spec.extra), (cfg.row, sorted(keys))


@pytest.mark.parametrize("artefact", list(REGISTRY))
def test_every_artefact_has_paper_numbers_a_title_and_a_grid_holding_the_papers_choice(artefact):
    spec = get(artefact)
    paper = load_paper()
    assert artefact in paper[spec.paper_section] and TITLES[artefact]
    assert bool(spec.grid) == (artefact in SWEEP_ARTEFACTS)
    chosen = paper[spec.paper_section][artefact].get("chosen")
    if chosen is not None:
        assert any(float(v) == chosen for values in spec.grid.values() for v in values)


def test_cli_prints_rows_experiments_and_values(capsys):
    assert answer(["rows", "table1"]) == "super,knn,ss,mplp,mprd_wo,mprd_nocam,mprd,single"
    assert answer(["rows", "baselines", "uga"]) == "intra,noself,uga"
    assert answer(["experiments", "table3"]) == "table3/mprd,table3/mlcr,sslr/table3,uga/table3"
    assert answer(["values", "fig4", "method.mu"]) == ",".join(f"0.{i}" for i in range(1, 10))
    assert main(["rows", "table9"]) == 2 and "unknown artefact 'table9'" in capsys.readouterr().err
    assert main(["values", "fig4", "method.lr"]) == 2 and "method.mu" in capsys.readouterr().err


def _make_dry_run(target: str, *variables: str) -> list[list[str]]:
    """The argv of every `mprd.train` command `make <target>` would run (make -n; the install stamp counts as fresh)."""
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    out = subprocess.run(["make", "-n", "-W", ".venv/.installed", target, *variables], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return [shlex.split(ln) for ln in out.replace("\\\n", " ").splitlines() if "-m mprd.train" in ln]


def _arg(argv: list[str], key: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"{key}=")]
    return value


@pytest.mark.parametrize(("target", "artefact"), [("reproduce-table1", "table1"), ("reproduce-table2", "table2"),
                                                  ("reproduce-sslr", "baselines"), ("reproduce-uga", "baselines")])
def test_make_runs_the_registry_rows(target, artefact):
    (argv,) = _make_dry_run(target)
    folder = target.removeprefix("reproduce-")
    assert _arg(argv, "experiment").split(",") == [f"{folder}/{r}" for r in get(artefact).rows(folder)]


@pytest.mark.parametrize("artefact", [a for a in SWEEP_ARTEFACTS if a != "sweep-uga-noise"])
def test_make_sweeps_the_registry_grid(artefact):
    target = "reproduce-fig4" if artefact == "fig4" else artefact
    (argv,) = _make_dry_run(target)
    for key, values in get(artefact).grid.items():
        assert _arg(argv, key).split(",") == list(values)


def test_make_uga_noise_and_table3_follow_the_registry():
    runs = _make_dry_run("sweep-uga-noise")
    grid = get("sweep-uga-noise").grid
    assert [_arg(a, k).split(",") for a, k in zip(runs, grid, strict=True)] == [list(v) for v in grid.values()]
    experiments = [e for argv in _make_dry_run("reproduce-table3") for e in _arg(argv, "experiment").split(",")]
    assert sorted(experiments) == sorted(get("table3").experiments)


def test_command_line_overrides_the_registry_defaults():
    (argv,) = _make_dry_run("reproduce-table1", "TABLE1_ROWS=mprd,single")
    assert _arg(argv, "experiment") == "table1/mprd,table1/single"
    (argv,) = _make_dry_run("reproduce-fig4", "MU_VALUES=0.3,0.5")
    assert _arg(argv, "method.mu") == "0.3,0.5"


def _report_argv(target: str, *variables: str) -> list[str]:
    out = subprocess.run(["make", "-n", "-W", ".venv/.installed", target, *variables], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    (line,) = [ln for ln in out.splitlines() if "-m mprd.report " in ln]
    return shlex.split(line)


def _ledger_argv(target: str, *variables: str) -> list[str]:
    out = subprocess.run(["make", "-n", "-W", ".venv/.installed", target, *variables], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    (line,) = [ln for ln in out.splitlines() if "-m mprd.report.ledger archive" in ln]
    return shlex.split(line)


@pytest.mark.parametrize(("preset", "folder", "out"), [
    ("cpu", "table1-synthetic", "experiments/results"),
    ("cpu_long", "table1-synthetic-cpu_long", "experiments/results/cpu_long"),
])
def test_a_non_standard_preset_has_its_own_runs_folder_and_report(preset, folder, out):
    """PRESET=cpu_long must neither skip the cpu rows' finished runs nor be reported together with them."""
    (argv,) = _make_dry_run("reproduce-table1", f"PRESET={preset}")
    assert _arg(argv, "hydra.sweep.dir") == f"experiments/results/runs/{folder}" and _arg(argv, "preset") == preset
    report = _report_argv("reproduce-table1", f"PRESET={preset}")
    assert report[report.index("--runs") + 1] == f"experiments/results/runs/{folder}"
    assert report[report.index("--preset") + 1] == preset and report[report.index("--out") + 1] == out
    assert _ledger_argv("reproduce-table1", f"PRESET={preset}")[-1] == f"experiments/results/runs/{folder}"


def test_reproduce_video_runs_each_family_with_its_schedule():
    sslr, uga, other = _make_dry_run("reproduce-video", "SEEDS=0 1")
    assert [_arg(a, "experiment") for a in (sslr, uga, other)] == ["video/sslr", "video/uga_intra,video/uga",
                                                                    "video/sslr_baseline,video/super"]
    assert all(_arg(a, "dataset") == "synthetic_video" and _arg(a, "preset") == "cpu" for a in (sslr, uga, other))
    assert not any(a.startswith("max_epochs=") for a in sslr + uga)  # the cpu preset's own schedule
    gpu = _make_dry_run("reproduce-video", "VIDEO_DATASET=prid2011", "DATA_ROOT=/data/prid")
    assert [_arg(a, "max_epochs") for a in gpu[:2]] == ["130", "160"] and _arg(gpu[0], "preset") == "paper"
    assert all(_arg(a, "dataset.options.split_id") == "0,1,2,3,4,5,6,7,8,9" for a in gpu)
    assert "-split${dataset.options.split_id}-" in _arg(gpu[0], "hydra.sweep.subdir")
