"""Report generator (mprd.report) and the transcribed paper numbers (experiments/paper_numbers.yaml)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from mprd import report
from mprd.report import RunFileError, Skipped, aggregate, collect_runs, load_paper, load_run, render_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paper() -> dict:
    return load_paper()


def rows_of(paper: dict, table: str) -> dict[str, dict]:
    return {row["key"]: row for row in paper["tables"][table]["rows"]}


def write_run(root: Path, name: str, row: str | None, seed: int, rank1: float, mAP: float, **extra) -> Path:
    """A fake run folder with a metrics.json in the format written by mprd.train."""
    folder = root / name
    folder.mkdir(parents=True)
    rec = {
        "method": extra.pop("method", row or "knn"),
        "dataset": extra.pop("dataset", "synthetic"),
        "seed": seed,
        "commit": extra.pop("commit", "abc1234"),
        "final": {"rank1": rank1, "rank5": rank1 + 10, "rank10": rank1 + 20, "mAP": mAP, "mINP": mAP / 2},
        "per_epoch": [],
        "train_log": extra.pop("train_log", {}),
        "dataset_statistics": {},
        "preset": extra.pop("preset", "cpu"),
    }
    if row is not None:
        rec["row"] = row
    rec.update(extra)
    (folder / "metrics.json").write_text(json.dumps(rec))
    return folder / "metrics.json"


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    """knn x2 seeds (hand-computable mean/std), single, super, mprd; mprd_nocam missing; one malformed file."""
    root = tmp_path / "runs"
    log0 = {"labels/pair_precision": 0.6, "labels/pair_recall": 0.3}
    log1 = {"labels/pair_precision": 0.8, "labels/pair_recall": 0.5}
    write_run(root, "knn/s0", "knn", 0, 40.0, 20.0, train_log=log0, artefact="table1")
    write_run(root, "knn/s1", "knn", 1, 44.0, 23.0, train_log=log1, artefact="table1")
    write_run(root, "single/s0", "single", 0, 10.0, 5.0)
    write_run(root, "super/s0", "super", 0, 70.0, 50.0)
    write_run(root, "mprd/s0", None, 0, 55.0, 30.0, method="mprd")  # no `row`: falls back to `method`
    write_run(root, "fig4/mu0.3/s0", "mprd", 0, 48.0, 26.0, artefact="fig4", sweep={"mu": 0.3})
    write_run(root, "fig4/mu0.3/s1", "mprd", 1, 50.0, 28.0, artefact="fig4", sweep={"mu": 0.3})
    write_run(root, "fig4/mu0.7/s0", "mprd", 0, 45.0, 25.0, artefact="fig4", sweep={"method.mu": 0.7})
    bad = root / "broken" / "metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"method": "ss", "final": {"rank1": 3')
    return root


# ------------------------------------------------------------------------------------ paper numbers


def test_table1_values_match_spec(paper: dict) -> None:
    t1 = rows_of(paper, "table1")
    assert list(t1) == ["super", "knn", "ss", "mplp", "mprd_wo", "mprd_nocam", "mprd", "single"]
    displays = ["Super.", "KNN", "SS", "MPLP*", "MPRD w/o", "MPRD#", "MPRD", "Single"]
    assert [r["display"] for r in t1.values()] == displays
    assert t1["mprd"]["market1501"] == {"rank1": 83.0, "mAP": 51.1}
    assert t1["single"]["market1501"] == {"rank1": 46.1, "mAP": 15.5}
    assert t1["super"]["market1501"] == {"rank1": 87.0, "mAP": 68.5}
    assert t1["mprd"]["dukemtmc"] == {"rank1": 67.4, "mAP": 43.7}
    assert t1["mprd_nocam"]["dukemtmc"] == {"rank1": 57.4, "mAP": 36.7}


def test_table2_and_table4_values(paper: dict) -> None:
    t2 = rows_of(paper, "table2")
    assert list(t2) == ["mlcr", "mlcr_5id", "mprd_0id", "mprd"]
    assert t2["mlcr_5id"]["display"] == "MLCR(+5id)*"
    assert t2["mprd_0id"]["dukemtmc"] == {"rank1": 65.6, "mAP": 40.1}
    t4 = rows_of(paper, "table4")
    assert list(t4) == ["mlcr", "jvtc", "mprd"]
    assert t4["mprd"]["msmt17"] == {"rank1": 37.7, "rank5": 51.3, "rank10": 57.1, "mAP": 14.6}


def test_cross_table_consistency(paper: dict) -> None:
    """Invariants stated by the papers: shared rows carry the same numbers in every table."""
    t1, t2, t3, t4 = (rows_of(paper, t) for t in ("table1", "table2", "table3", "table4"))
    base = rows_of(paper, "baselines")
    for ds in ("market1501", "dukemtmc"):
        for m in ("rank1", "mAP"):
            assert t3["mprd"][ds][m] == t1["mprd"][ds][m] == t2["mprd"][ds][m]
        assert t3["sslr"][ds] == base["sslr"][ds]  # MPRD Tab. 3 SSLR = SSLR Tab. 1 "Ours"
        assert t3["mlcr"][ds] == base["mlcr"][ds]  # MPRD Tab. 3 MLCR = MLCR Tab. 4 "Ours"
    assert t4["mlcr"]["msmt17"] == base["mlcr"]["msmt17"]  # MPRD Tab. 4 MLCR = MLCR Tab. 5
    ref = paper["sweeps"]["fig4"]["reference_points"][0]
    assert (ref["row"], ref["x"]) == ("mprd", 0.5) and ref["market1501"] == t1["mprd"]["market1501"]


def test_table3_rows_and_literature_flags(paper: dict) -> None:
    t3 = rows_of(paper, "table3")
    assert list(t3) == ["lomo", "bow", "buc", "dbc", "tssl", "sslr", "mlcr", "jvtc", "mprd"]
    assert [k for k, r in t3.items() if not r.get("literature")] == ["mprd"]
    assert t3["tssl"]["market1501"] == {"rank1": 71.2, "rank5": None, "rank10": None, "mAP": 43.3}
    assert t3["jvtc"]["dukemtmc"] == {"rank1": 67.6, "rank5": 78.0, "rank10": 81.6, "mAP": 42.2}


# ------------------------------------------------------------------------------------------ loading


def test_collect_runs_skips_malformed_with_reason(runs_dir: Path) -> None:
    skipped: list[Skipped] = []
    with pytest.warns(UserWarning, match="broken"):
        runs = collect_runs(runs_dir, skipped)
    assert len(runs) == 8
    assert [s.path for s in skipped] == [runs_dir / "broken" / "metrics.json"]
    assert "not valid JSON" in skipped[0].reason
    assert {r["row"] for r in runs} == {"knn", "single", "super", "mprd"}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"method": "knn", "dataset": "synthetic", "seed": 0}, "no 'final' metrics"),
        ({"method": "knn", "dataset": "synthetic", "seed": 0, "final": {"rank1": 3.0}}, "lacks mAP"),
        ({"method": "knn", "dataset": "synthetic", "seed": 0, "final": {"rank1": 150.0, "mAP": 1.0}}, "outside"),
        ({"method": "knn", "dataset": "synthetic", "seed": "0", "final": {"rank1": 1.0, "mAP": 1.0}}, "'seed'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_load_run_errors_name_the_file(tmp_path: Path, payload: object, reason: str) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(RunFileError, match=reason) as info:
        load_run(path)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------- aggregation


def _runs(runs_dir: Path) -> list[dict]:
    with pytest.warns(UserWarning):
        return collect_runs(runs_dir)


def test_table1_aggregate_against_hand_values(runs_dir: Path, paper: dict) -> None:
    df = aggregate(_runs(runs_dir), "table1", paper=paper).set_index("key")
    assert list(df.index) == ["super", "knn", "ss", "mplp", "mprd_wo", "mprd_nocam", "mprd", "single"]
    knn = df.loc["knn"]
    assert knn["n"] == 2 and knn["seeds"] == "0,1"
    assert knn["rank1_mean"] == pytest.approx(42.0) and knn["rank1_std"] == pytest.approx(math.sqrt(8.0))
    assert knn["mAP_mean"] == pytest.approx(21.5) and knn["mAP_std"] == pytest.approx(math.sqrt(4.5))
    assert knn["pair_precision"] == pytest.approx(0.7) and knn["pair_recall"] == pytest.approx(0.4)
    # Δ to our own Single (10 / 5) and Super (70 / 50)
    assert knn["d_single_rank1"] == pytest.approx(32.0) and knn["d_super_mAP"] == pytest.approx(-28.5)
    # synthetic: the reference columns are the paper's Market-1501 numbers
    assert df.attrs["reference_dataset"] == "market1501"
    assert knn["paper_rank1"] == 72.7 and knn["paper_mAP"] == 35.2 and math.isnan(knn["paper_rank5"])
    # a row we did not run stays, empty; the row-less run falls back to its method; sweep runs stay out
    assert df.loc["mprd_nocam", "n"] == 0 and math.isnan(df.loc["mprd_nocam", "rank1_mean"])
    assert df.loc["mprd", "n"] == 1 and df.loc["mprd", "rank1_mean"] == 55.0 and math.isnan(df.loc["mprd", "rank1_std"])
    assert df.attrs["n_runs"] == 5 and df.attrs["seeds"] == [0, 1] and df.attrs["presets"] == ["cpu"]


def test_shared_mprd_row_feeds_table2_and_table3(runs_dir: Path, paper: dict) -> None:
    runs = _runs(runs_dir)
    t2 = aggregate(runs, "table2", paper=paper).set_index("key")
    assert list(t2.index) == ["mlcr", "mlcr_5id", "mprd_0id", "mprd"]
    assert t2.loc["mprd", "n"] == 1 and t2.loc["mprd", "paper_mAP"] == 51.1
    assert t2.loc["mprd", "d_single_rank1"] == pytest.approx(45.0)  # anchors come from Table-1 runs
    t3 = aggregate(runs, "table3", paper=paper).set_index("key")
    assert t3.loc["mprd", "paper_rank10"] == 93.6 and t3.loc["lomo", "literature"]
    assert t3.loc["mprd", "rank10_mean"] == 75.0


def test_paper_dataset_uses_its_own_columns(tmp_path: Path, paper: dict) -> None:
    write_run(tmp_path, "a", "mprd", 0, 60.0, 40.0, dataset="dukemtmc", preset="paper")
    df = aggregate(collect_runs(tmp_path), "table1", paper=paper).set_index("key")
    assert df.attrs["reference_dataset"] == "dukemtmc" and df.loc["mprd", "paper_rank1"] == 67.4
    text = render_markdown(df.reset_index(), date="2000-01-01")
    assert "not absolute values" not in text and "| Paper Rank-1 |" in text


def test_baselines_appends_unknown_rows(tmp_path: Path, paper: dict) -> None:
    write_run(tmp_path, "u", "uga", 0, 60.0, 40.0)
    write_run(tmp_path, "f", "foo", 0, 20.0, 10.0)
    write_run(tmp_path, "k", "knn", 0, 20.0, 10.0)  # claimed by Table 1: not a baseline
    df = aggregate(collect_runs(tmp_path), "baselines", paper=paper)
    keys = list(df["key"])
    assert keys[-1] == "foo" and "knn" not in keys
    assert keys[: len(paper["tables"]["baselines"]["rows"])] == [r["key"] for r in paper["tables"]["baselines"]["rows"]]
    uga = df.set_index("key").loc["uga"]
    assert uga["n"] == 1 and uga["paper_rank1"] == 87.2 and uga["paper_mAP"] == 70.3


def test_fig4_sweep_points_and_default(runs_dir: Path, paper: dict) -> None:
    df = aggregate(_runs(runs_dir), "fig4", paper=paper)
    assert list(df["x"]) == [0.3, 0.5, 0.7]  # 0.5 = the Table-1 MPRD run (no sweep dict)
    assert list(df["n"]) == [2, 1, 1]
    assert df["rank1_mean"].tolist() == pytest.approx([49.0, 55.0, 45.0])
    assert df.loc[0, "rank1_std"] == pytest.approx(math.sqrt(2.0))
    assert df.loc[1, "paper_rank1"] == 83.0 and math.isnan(df.loc[0, "paper_rank1"])
    assert any("0.5" in n for n in df.attrs["notes"])
    text = render_markdown(df, date="2000-01-01")
    assert "best Rank-1 at μ = 0.5" in text


def test_mixed_datasets_need_a_choice(runs_dir: Path, paper: dict) -> None:
    write_run(runs_dir, "duke", "knn", 0, 1.0, 1.0, dataset="dukemtmc")
    with pytest.raises(ValueError, match="span datasets"):
        aggregate(_runs(runs_dir), "table1", paper=paper)


# ---------------------------------------------------------------------------------------- rendering


def test_markdown_header_note_and_cells(runs_dir: Path, paper: dict) -> None:
    skipped: list[Skipped] = []
    with pytest.warns(UserWarning):
        runs = collect_runs(runs_dir, skipped)
    text = render_markdown(aggregate(runs, "table1", paper=paper), skipped, runs_dir, date="2000-01-01")
    assert "compare orderings and gaps, not absolute values" in text
    assert "**1 run skipped:**" in text and str(runs_dir / "broken" / "metrics.json") in text
    assert "**Seeds:** 0, 1" in text and "abc1234" in text and "2000-01-01" in text and "cpu" in text
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    assert "| 2 | 42.0 ± 2.8 |" in lines["| KNN"] and "| 72.7 | 35.2 |" in lines["| KNN"]
    assert lines["| MPRD#"].startswith("| MPRD# | 0 | — | — | — | — | 73.0 | 39.3 |")
    assert "0.700 | 0.400 |" in lines["| KNN"]  # pair precision / recall columns
    table_rows = [k for k in lines if k not in ("| Row",)]
    assert table_rows == ["| Super.", "| KNN", "| SS", "| MPLP\\*", "| MPRD w/o", "| MPRD#", "| MPRD", "| Single"]


# -------------------------------------------------------------------------------------- files & CLI


def test_write_output_keeps_differing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.md"
    assert report.write_output(path, b"- **Date:** 2000-01-01\nA\n").startswith("wrote")
    assert "unchanged" in report.write_output(path, b"- **Date:** 2001-02-03\nA\n")  # only the date moved
    assert list(tmp_path.glob("*.bak")) == []
    status = report.write_output(path, b"- **Date:** 2001-02-03\nB\n")
    (backup,) = tmp_path.glob("r.md.*.bak")
    assert str(backup) in status and backup.read_bytes() == b"- **Date:** 2000-01-01\nA\n"
    assert path.read_bytes().endswith(b"B\n")
    report.write_output(path, b"C\n")  # a second change in the same second gets its own backup
    assert len(list(tmp_path.glob("r.md.*.bak"))) == 2


def test_main_writes_md_csv_png_and_backs_up(runs_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "results"
    assert report.main(["table1", "--runs", str(runs_dir), "--out", str(out)]) == 0
    md, csv, png = (out / f"table1-synthetic.{ext}" for ext in ("md", "csv", "png"))
    assert "not absolute values" in md.read_text()
    table = pd.read_csv(csv).set_index("key")
    assert table.loc["knn", "rank1_mean"] == pytest.approx(42.0) and table.loc["knn", "paper_rank1"] == 72.7
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC)
    import matplotlib.pyplot as plt

    height, width = plt.imread(png).shape[:2]
    assert width > 600 and height > 300
    capsys.readouterr()
    # a new run changes the report: the old files are kept as .bak and stdout says so
    write_run(runs_dir, "ss/s0", "ss", 0, 30.0, 15.0)
    assert report.main(["table1", "--runs", str(runs_dir), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "previous version kept as" in printed
    assert len(list(out.glob("table1-synthetic.md.*.bak"))) == 1
    assert len(list(out.glob("table1-synthetic.csv.*.bak"))) == 1


def test_main_sweep_plot_and_empty_artefact(runs_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    assert report.main(["fig4", "--runs", str(runs_dir), "--out", str(out)]) == 0
    assert (out / "fig4-synthetic.png").read_bytes().startswith(PNG_MAGIC)
    assert report.main(["table4", "--runs", str(runs_dir), "--out", str(out)]) == 1  # nothing ran for it
    assert report.main(["table4", "--runs", str(runs_dir), "--out", str(out), "--dataset", "msmt17"]) == 0
    text = (out / "table4-msmt17.md").read_text()
    assert "| MPRD | 0 | — | — | — | — | 37.7 | 51.3 | 57.1 | 14.6 |" in text


def test_duplicate_seed_and_mixed_presets_are_flagged(tmp_path: Path, paper: dict) -> None:
    write_run(tmp_path, "a", "knn", 0, 40.0, 20.0, preset="cpu")
    write_run(tmp_path, "b", "knn", 0, 42.0, 22.0, preset="paper")
    df = aggregate(collect_runs(tmp_path), "table1", paper=paper)
    text = render_markdown(df, date="2000-01-01")
    assert "row knn mixes presets cpu, paper" in text
    assert "row knn has seed 0 2 times" in text
    out = tmp_path / "out"
    assert report.main(["table1", "--runs", str(tmp_path), "--out", str(out), "--preset", "paper", "--no-plot"]) == 0
    knn = pd.read_csv(out / "table1-synthetic.csv").set_index("key").loc["knn"]
    assert knn["n"] == 1 and knn["rank1_mean"] == 42.0
    assert not (out / "table1-synthetic.png").exists()


def test_load_paper_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "paper.yaml"
    bad.write_text("tables:\n  table1:\n    rows:\n      - {display: X}\n")
    with pytest.raises(ValueError, match=f"{bad}.*'key'"):
        load_paper(bad)
    with pytest.raises(ValueError, match="not found"):
        load_paper(tmp_path / "missing.yaml")


def test_sweep_k_with_a_second_swept_key_splits_rows(tmp_path: Path, paper: dict) -> None:
    """`make sweep-k` writes sweep={min_k, threshold}: x = min_k, one curve per threshold."""
    for k, t, r1 in ((4, 0.6, 30.0), (8, 0.6, 35.0), (8, 0.7, 20.0)):
        write_run(tmp_path, f"k{k}-t{t}", "mprd", 0, r1, 10.0, artefact="sweep-k", sweep={"min_k": k, "threshold": t})
    df = aggregate(collect_runs(tmp_path), "sweep-k", paper=paper)
    assert list(zip(df["key"], df["x"], df["rank1_mean"], strict=True)) == [
        ("mprd[threshold=0.6]", 4, 30.0),
        ("mprd[threshold=0.6]", 8, 35.0),
        ("mprd[threshold=0.7]", 8, 20.0),
    ]
    assert df["paper_rank1"].tolist()[1] == 83.0 and df["paper_rank1"].isna().sum() == 2
    assert report.render_png(df).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("dataset", "preset", "phrase", "ref"),
    [
        ("cuhk03np", "cpu_real", "cuhk03np is not a dataset of the paper", "market1501"),
        ("synthetic", "cpu", "read each row against the untrained network and over seeds", "market1501"),
        ("market1501", "cpu_real", "Preset cpu_real is not the paper's configuration", "market1501"),
        ("market1501", "paper", "Same dataset and configuration as the paper", "market1501"),
    ],
)
def test_honest_note_per_dataset(tmp_path: Path, paper: dict, dataset: str, preset: str, phrase: str, ref: str) -> None:
    write_run(tmp_path, "a", "mprd", 0, 60.0, 40.0, dataset=dataset, preset=preset)
    df = aggregate(collect_runs(tmp_path), "table1", paper=paper)
    assert df.attrs["reference_dataset"] == ref
    assert phrase in render_markdown(df, date="2000-01-01")


# ------------------------------------------------------------------------- uses besides images, Table 3


def _table3_runs(root: Path) -> Path:
    """Fabricated Table 3 runs: MPRD x2 seeds, MLCR, SSLR (camera IDs), UGA (not a row of the paper's Table 3)."""
    uses_mprd = ["5 meta IDs", "CamStyle (camera IDs)"]
    write_run(root, "mprd-seed0", "mprd", 0, 50.0, 30.0, artefact="table3", uses=uses_mprd)
    write_run(root, "mprd-seed1", "mprd", 1, 54.0, 34.0, artefact="table3", uses=uses_mprd)
    write_run(root, "mlcr-seed0", "mlcr", 0, 40.0, 20.0, artefact="table3", uses=["CamStyle (camera IDs)"])
    write_run(root, "sslr-seed0", "sslr", 0, 30.0, 15.0, artefact="table3", uses=["camera IDs (CCE)"])
    write_run(root, "uga-seed0", "uga", 0, 60.0, 40.0, artefact="table3", supervision="intra-camera labels",
              uses=["intra-camera labels", "camera IDs (per-camera classifiers)"])
    return root


def test_table3_uses_column_and_extra_row(tmp_path: Path, paper: dict) -> None:
    df = aggregate(collect_runs(_table3_runs(tmp_path / "runs")), "table3", paper=paper)
    paper_keys = [r["key"] for r in paper["tables"]["table3"]["rows"]]
    assert "uga" not in paper_keys and list(df["key"]) == paper_keys + ["uga"]  # extra rows after the paper's
    t = df.set_index("key")
    assert t.loc["mprd", "uses"] == "5 meta IDs + CamStyle (camera IDs)" and t.loc["mprd", "rank5_mean"] == 62.0
    assert t.loc["sslr", "uses"] == "camera IDs (CCE)" and t.loc["sslr", "paper_rank10"] == 87.4
    assert t.loc["uga", "uses"] == "intra-camera labels + camera IDs (per-camera classifiers)"
    assert not t.loc["uga", "in_paper"] and math.isnan(t.loc["uga", "paper_rank1"])
    assert t.loc["lomo", "n"] == 0 and pd.isna(t.loc["lomo", "uses"])
    text = render_markdown(df, date="2000-01-01")
    lines = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    header = lines["| Row"].split(" | ")
    assert header[-1] == "Uses besides images |" and "Paper Rank-5 (Market-1501)" in header
    assert lines["| MPRD"].startswith("| MPRD | 2 | 52.0 ± 2.8 | 62.0 ± 2.8 | 72.0 ± 2.8 | 32.0 ± 2.8 | 83.0 | 91.3 |")
    assert lines["| MPRD"].endswith("| 5 meta IDs + CamStyle (camera IDs) |")
    assert lines["| SSLR [15] (CVPR20) †"].endswith("| camera IDs (CCE) |")
    assert lines["| LOMO [12] (CVPR15) †"].endswith("| — |")
    uga = [line for line in text.splitlines() if line.startswith("| UGA")]
    assert len(uga) == 1 and " ‡ | 1 | 60.0 | 70.0 | 80.0 | 40.0 |" in uga[0] and "| — | — | — | — |" in uga[0]
    assert "‡ Not a row of the paper's table" in text and "Uses besides images:" in text
    assert list(df["key"]).index("uga") == len(df) - 1


def test_uses_in_csv_and_differing_runs(tmp_path: Path) -> None:
    root = _table3_runs(tmp_path / "runs")
    uses = ["5 meta IDs", "CamStyle (camera IDs)"]
    write_run(root, "mlcr-seed1", "mlcr", 1, 40.0, 20.0, artefact="table3", uses=uses)
    out = tmp_path / "out"
    assert report.main(["table3", "--runs", str(root), "--out", str(out), "--no-plot"]) == 0
    csv = pd.read_csv(out / "table3-synthetic.csv").set_index("key")
    assert csv.loc["mprd", "uses"] == "5 meta IDs + CamStyle (camera IDs)"
    assert csv.loc["mlcr", "uses"] == "5 meta IDs + CamStyle (camera IDs) | CamStyle (camera IDs)"  # both settings
    assert pd.isna(csv.loc["buc", "uses"])


def test_uses_fallbacks_for_older_runs(tmp_path: Path) -> None:
    """No `uses` field: derived from the run's .hydra/config.yaml, else its `supervision`, else unknown."""
    path = write_run(tmp_path, "old", "mprd_nocam", 0, 50.0, 30.0)
    hydra = path.parent / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(
        "max_epochs: 6\nseed: 3\ndataset: {name: synthetic}\ndata: {camstyle: auto}\n"
        "method: {name: mprd_nocam, camstyle: false, meta: {num_ids: 5, seed: '${seed}'}}\n"
        "paths: {output_dir: '${hydra:runtime.output_dir}'}\n"  # unresolvable outside Hydra: never read
    )
    assert load_run(path)["uses"] == "5 meta IDs"
    sup = write_run(tmp_path, "uga", "uga", 0, 50.0, 30.0, supervision="intra-camera labels")
    assert load_run(sup)["uses"] == "intra-camera labels"
    assert load_run(write_run(tmp_path, "bare", "knn", 0, 5.0, 5.0))["uses"] is None
    bad = write_run(tmp_path, "bad", "knn", 0, 5.0, 5.0, uses=[1, 2])
    with pytest.raises(RunFileError, match="'uses' must be a list of strings"):
        load_run(bad)


# ------------------------------------------------------------------------------------------- wandb


class FakeWandb:
    """Stands in for the `wandb` module: records init kwargs, logged payloads, summary and finish."""

    class Table:
        def __init__(self, columns: list[str], data: list[list]) -> None:
            self.columns, self.data = columns, data

    class Image:
        def __init__(self, image, caption: str = "") -> None:
            self.size, self.caption = image.size, caption

    def __init__(self) -> None:
        self.inits: list[dict] = []
        self.logged: list[dict] = []
        self.summary: dict = {}
        self.finished = 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            name = kwargs["name"]
            summary = fake.summary

            def log(self, payload: dict) -> None:
                fake.logged.append(payload)

            def finish(self) -> None:
                fake.finished += 1

        return Run()


def test_report_logged_to_wandb_as_table_and_image(tmp_path: Path, monkeypatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(__import__("sys").modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    root = _table3_runs(tmp_path / "runs")
    assert report.main(["table3", "--runs", str(root), "--out", str(tmp_path / "out"), "--wandb"]) == 0
    (init,) = fake.inits
    assert init["group"] == "table3-synthetic" and init["job_type"] == "report" and init["mode"] == "offline"
    assert init["dir"] == str(root) and init["config"]["n_runs"] == 5 and init["config"]["seeds"] == [0, 1]
    (payload,) = fake.logged
    table = payload["report/table"]
    assert table.columns[:3] == ["key", "display", "in_paper"] and "x" not in table.columns
    assert {"uses", "rank1_mean", "rank1_std", "paper_rank10", "paper_mAP"} <= set(table.columns)
    rows = {r[0]: dict(zip(table.columns, r, strict=True)) for r in table.data}
    assert list(rows)[-1] == "uga" and len(rows) == len(report.load_paper()["tables"]["table3"]["rows"]) + 1
    assert rows["mprd"]["rank1_mean"] == 52.0 and rows["mprd"]["rank1_std"] == pytest.approx(2.0 ** 1.5)
    assert rows["mprd"]["paper_rank1"] == 83.0 and rows["mprd"]["uses"] == "5 meta IDs + CamStyle (camera IDs)"
    assert rows["lomo"]["rank1_mean"] is None and rows["lomo"]["n"] == 0  # NaN -> empty cell
    assert rows["uga"]["paper_rank1"] is None and rows["uga"]["in_paper"] is False
    assert payload["report/plot"].size[0] > 600  # the report's PNG
    assert fake.summary["mprd/rank1"] == 52.0 and fake.summary["uga/mAP"] == 40.0 and "lomo/rank1" not in fake.summary
    assert fake.finished == 1


def test_sweep_report_to_wandb_keeps_the_swept_value(runs_dir: Path, tmp_path: Path, monkeypatch) -> None:
    fake = FakeWandb()
    monkeypatch.setitem(__import__("sys").modules, "wandb", fake)
    df = aggregate(_runs(runs_dir), "fig4")
    assert report.log_to_wandb(df, None, mode="disabled") == "report-fig4-synthetic"
    table = fake.logged[0]["report/table"]
    assert "report/plot" not in fake.logged[0] and fake.inits[0]["mode"] == "disabled"
    xs = [r[table.columns.index("x")] for r in table.data]
    assert xs == [0.3, 0.5, 0.7] and fake.summary["mprd@0.3/rank1"] == 49.0


def test_sslr_lambda_c_sweep_report_and_plot(tmp_path: Path, paper: dict) -> None:
    """`make sweep-sslr-lambda-c` runs (sweep={lambda_c: v}) -> one point per value, SSLR Fig. 4(d)'s text numbers
    beside ours on Market-1501 (65.4 at 0, Table 1 "Ours" 71.7 / 37.8 at 0.02), md + csv + png from main."""
    runs = tmp_path / "runs"
    points = {0: (40.0, 20.0), 0.01: (44.0, 22.0), 0.02: (46.0, 23.0), 0.05: (41.0, 19.0)}
    for x, (r1, m) in points.items():
        write_run(runs, f"lambda_c{x}-seed0", "sslr", 0, r1, m, method="sslr", dataset="market1501",
                  preset="paper_sslr", artefact="sweep-sslr-lambda-c", sweep={"lambda_c": x})
    write_run(runs, "lambda_c0.02-seed1", "sslr", 1, 48.0, 25.0, method="sslr", dataset="market1501",
              preset="paper_sslr", artefact="sweep-sslr-lambda-c", sweep={"lambda_c": 0.02})
    df = aggregate(collect_runs(runs), "sweep-sslr-lambda-c", paper=paper)
    assert df.attrs["param"] == "lambda_c" and df.attrs["chosen"] == 0.02
    assert list(df["x"]) == [0, 0.01, 0.02, 0.05] and list(df["n"]) == [1, 1, 2, 1]
    assert df["rank1_mean"].tolist() == pytest.approx([40.0, 44.0, 47.0, 41.0])
    assert df.loc[2, "rank1_std"] == pytest.approx(math.sqrt(2.0))
    assert df.loc[0, "paper_rank1"] == 65.4 and math.isnan(df.loc[0, "paper_mAP"])  # the text gives no mAP
    assert (df.loc[2, "paper_rank1"], df.loc[2, "paper_mAP"]) == (71.7, 37.8)
    assert df["paper_rank1"].isna().tolist() == [False, True, False, True]
    text = render_markdown(df, date="2000-01-01")
    assert "best Rank-1 at λ_c = 0.02" in text and "SSLR Figure 4(d)" in text
    out = tmp_path / "out"
    assert report.main(["sweep-sslr-lambda-c", "--runs", str(runs), "--out", str(out)]) == 0
    csv = pd.read_csv(out / "sweep-sslr-lambda-c-market1501.csv")
    assert csv["x"].tolist() == [0, 0.01, 0.02, 0.05]
    png = out / "sweep-sslr-lambda-c-market1501.png"
    assert png.read_bytes().startswith(PNG_MAGIC)
    import matplotlib.pyplot as plt

    height, width = plt.imread(png).shape[:2]
    assert width > 600 and height > 300


def test_main_reads_several_runs_folders_and_skips_missing_ones(tmp_path: Path) -> None:
    """`make reproduce-sslr` and `reproduce-uga` write one baselines report from both folders."""
    sslr, uga, out = tmp_path / "sslr", tmp_path / "uga", tmp_path / "results"
    write_run(sslr, "sslr-seed0", "sslr", 0, 30.0, 12.0, artefact="sslr")
    assert report.main(["baselines", "--runs", str(sslr), str(uga), "--out", str(out)]) == 0
    table = pd.read_csv(out / "baselines-synthetic.csv").set_index("key")
    assert table.loc["sslr", "n"] == 1 and table.loc["uga", "n"] == 0
    write_run(uga, "uga-seed0", "uga", 0, 20.0, 10.0, artefact="uga")
    assert report.main(["baselines", "--runs", str(sslr), str(uga), "--out", str(out)]) == 0
    table = pd.read_csv(out / "baselines-synthetic.csv").set_index("key")
    assert (table.loc["sslr", "rank1_mean"], table.loc["uga", "rank1_mean"]) == (30.0, 20.0)
    assert f"{sslr}, {uga}" in (out / "baselines-synthetic.md").read_text()
    assert report.main(["baselines", "--runs", str(tmp_path / "none"), "--out", str(out)]) == 2


def test_untrained_row_from_epoch0_evaluations_and_beats_marks(tmp_path: Path, paper: dict) -> None:
    """The "ImageNet (untrained)" row averages one epoch-0 evaluation per seed; ΔmAP vs untrained marks a row
    ✓ only when its mean exceeds the untrained mean by more than 2 of its own seed stds."""
    root = tmp_path / "runs"
    init = lambda m: {"rank1": 2 * m, "rank5": 0.0, "rank10": 0.0, "mAP": m, "mINP": 0.0}  # noqa: E731
    write_run(root, "single-0", "single", 0, 5.0, 3.0, initial=init(2.0))
    write_run(root, "single-1", "single", 1, 5.0, 3.2, initial=init(2.2))
    write_run(root, "knn-0", "knn", 0, 9.0, 2.0, initial=init(2.0))
    write_run(root, "knn-1", "knn", 1, 9.0, 6.0, initial=init(2.2))
    write_run(root, "super-0", "super", 0, 50.0, 30.0)  # an older run without `initial`
    df = aggregate(collect_runs(root), "table1", paper=paper).set_index("key")
    u = df.loc["untrained"]
    assert df.index[-1] == "untrained" and u["display"] == "ImageNet (untrained)" and not u["in_paper"]
    assert u["n"] == 2 and u["mAP_mean"] == pytest.approx(2.1) and u["rank1_mean"] == pytest.approx(4.2)
    assert u["paper_rank1"] == 7.8 and u["paper_mAP"] == 2.1  # MLCR Table 2, Market-1501
    # single: 3.1 ± 0.141 -> +1.0 > 2 std; knn: 4.0 ± 2.83 -> +1.9 < 2 std
    assert df.loc["single", "d_untrained_mAP"] == pytest.approx(1.0) and df.loc["single", "beats_untrained"] is True
    assert df.loc["knn", "d_untrained_mAP"] == pytest.approx(1.9) and df.loc["knn", "beats_untrained"] is False
    assert df.loc["super", "beats_untrained"] is None  # one seed: no claim
    md = render_markdown(df.reset_index())
    assert "| ImageNet (untrained) †" in md and "ΔmAP vs untrained" in md and "+1.0 ✓" in md and "+1.9 ✗" in md
    # Kendall τ is taken over the paper's own rows only, never the derived untrained row
    tau_line = next(line for line in md.splitlines() if "Kendall" in line)
    assert "over these 3 rows" in tau_line
    assert "MPRD closes" not in md  # no MPRD run: no gap line


def test_gap_closed_line_ours_and_paper(runs_dir: Path, paper: dict) -> None:
    md = render_markdown(aggregate(_runs(runs_dir), "table1", paper=paper))
    # fixture: single mAP 5, super 50, mprd 30 -> 25 / 45 = 56 %; paper Market: (51.1 - 15.5) / (68.5 - 15.5) = 67 %
    assert "- MPRD closes 56 % of our Single → Super. mAP gap (paper: 67 %)." in md
    assert "super_knn" not in md and "of the way" not in md  # no ceiling run: no ceiling lines


def test_ceiling_lines_place_mprd_between_knn_and_super_knn(runs_dir: Path, paper: dict) -> None:
    write_run(runs_dir, "super_knn/s0", "super_knn", 0, 60.0, 33.5, artefact="table1")
    df = aggregate(_runs(runs_dir), "table1", paper=paper)
    md = render_markdown(df)
    # super_knn (33.5 - 5) / (50 - 5) = 63 %, no paper number; MPRD (30 - 21.5) / (33.5 - 21.5) = 71 % (knn mean 21.5)
    assert "- super_knn closes 63 % of our Single → Super. mAP gap." in md
    assert "- MPRD goes 71 % of the way from KNN to super_knn (the same candidates filtered" in md


@pytest.mark.parametrize("preset", ["cpu", "cpu_long"])
def test_honest_note_states_the_epochs_of_the_cpu_preset_it_used(preset):
    """The synthetic report's note names the preset and its epoch count as conf/preset/<name>.yaml sets it
    (cpu_long must not be mistaken for cpu)."""
    import yaml

    preset_file = Path(__file__).parents[1] / "conf" / "preset" / f"{preset}.yaml"
    epochs = yaml.safe_load(preset_file.read_text())["max_epochs"]
    df = pd.DataFrame()
    df.attrs.update(dataset="synthetic", dataset_names={}, reference_dataset="market1501", presets=[preset])
    note = report.honest_note(df)
    assert f"The `{preset}` preset is {epochs} epochs" in note and note.count("preset is") == 1


def test_ceiling_sweep_takes_table1_super_knn_as_its_k8_point_and_ignores_other_rows(tmp_path: Path, paper) -> None:
    """`make sweep-ceiling CEILING_K=16,32` reports over its own folder and Table 1's: Table 1's super_knn runs
    (no sweep) are the k = 8 point, its other rows only anchor the Δ columns."""
    sweep, table1 = tmp_path / "sweep-ceiling", tmp_path / "table1"
    for k, seed, m in ((16, 0, 17.0), (16, 1, 19.0), (32, 0, 20.0)):
        write_run(sweep, f"k{k}-seed{seed}", "super_knn", seed, 30.0, m, artefact="sweep-ceiling", sweep={"k": k})
    write_run(table1, "super_knn-seed0", "super_knn", 0, 30.0, 15.0, artefact="table1")
    write_run(table1, "single-seed0", "single", 0, 20.0, 10.0, artefact="table1")
    write_run(table1, "super-seed0", "super", 0, 50.0, 40.0, artefact="table1")
    write_run(table1, "mprd-seed0", "mprd", 0, 25.0, 12.0, artefact="table1")
    df = aggregate(collect_runs(sweep) + collect_runs(table1), "sweep-ceiling", paper=paper)
    assert list(zip(df["key"], df["x"], df["n"], df["mAP_mean"], strict=True)) == [
        ("super_knn", 8, 1, 15.0), ("super_knn", 16, 2, 18.0), ("super_knn", 32, 1, 20.0)]
    assert df["d_single_mAP"].tolist() == pytest.approx([5.0, 8.0, 10.0])  # against Single's 10


def test_kmax_sweep_splits_rows_by_k_max_and_takes_table1_mprd_as_the_k8_mu05_point(tmp_path: Path, paper) -> None:
    """`make sweep-kmax` writes sweep={k_max, mu}: x = μ, one curve per k_max; Table 1's MPRD runs (no sweep) are
    the `k_max=8` curve's μ = 0.5 point (the default's variant), and no other Table 1 row becomes a point."""
    sweep, table1 = tmp_path / "sweep-kmax", tmp_path / "table1"
    for k, mu, m in ((16, 0.5, 11.0), (16, 0.7, 13.0), (32, 0.9, 14.0)):
        write_run(sweep, f"kmax{k}-mu{mu}-seed0", "mprd", 0, 30.0, m, artefact="sweep-kmax",
                  sweep={"k_max": k, "mu": mu})
    write_run(table1, "mprd-seed0", "mprd", 0, 25.0, 12.0, artefact="table1")
    write_run(table1, "mprd-seed1", "mprd", 1, 27.0, 10.0, artefact="table1")
    write_run(table1, "knn-seed0", "knn", 0, 20.0, 9.0, artefact="table1")
    df = aggregate(collect_runs(sweep) + collect_runs(table1), "sweep-kmax", paper=paper)
    assert list(zip(df["key"], df["x"], df["n"], df["mAP_mean"], strict=True)) == [
        ("mprd[k_max=16]", 0.5, 1, 11.0), ("mprd[k_max=16]", 0.7, 1, 13.0), ("mprd[k_max=32]", 0.9, 1, 14.0),
        ("mprd[k_max=8]", 0.5, 2, 11.0)]
    assert any("k_max=8" in info for info in df.attrs["notes"])


@pytest.mark.parametrize(("artefact", "key", "values"), [("sweep-delta", "delta", (1, 3, 7)),
                                                        ("sweep-meta-ids", "meta_ids", (0, 10))])
def test_delta_and_meta_id_sweeps_take_table1_mprd_as_their_x5_point(tmp_path: Path, paper, artefact: str, key: str,
                                                                     values: tuple[int, ...]) -> None:
    """`make sweep-delta` / `sweep-meta-ids` read Table 1's runs too: its MPRD runs (δ = 5, 5 meta identities, no
    sweep dict) fill the x = 5 point between the swept values; Table 1's other rows are no points."""
    sweep, table1 = tmp_path / artefact, tmp_path / "table1"
    for i, x in enumerate(values):
        write_run(sweep, f"x{x}-seed0", "mprd", 0, 20.0 + i, 10.0 + i, artefact=artefact, sweep={key: x})
    write_run(table1, "mprd-seed0", "mprd", 0, 25.0, 12.0, artefact="table1")
    write_run(table1, "mprd-seed1", "mprd", 1, 27.0, 14.0, artefact="table1")
    write_run(table1, "single-seed0", "single", 0, 10.0, 5.0, artefact="table1")
    df = aggregate(collect_runs(sweep) + collect_runs(table1), artefact, paper=paper)
    assert sorted(df["x"]) == sorted((*values, 5)) and set(df["key"]) == {"mprd"}
    five = df.set_index("x").loc[5]
    assert five["n"] == 2 and five["mAP_mean"] == pytest.approx(13.0) and five["paper_mAP"] == 51.1
    assert five["d_single_mAP"] == pytest.approx(8.0)  # the anchor is Table 1's Single
