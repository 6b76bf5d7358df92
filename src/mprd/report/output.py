"""Output: report files (kept as `.bak` when they differ) and the wandb table of a report."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mprd.report.artefacts import TITLES
from mprd.report.load import SHOWN, Skipped
from mprd.report.markdown import _fmt_x, render_markdown, to_csv
from mprd.report.plots import render_png

_DATE_FIELD = re.compile(rb"\*\*Date:\*\* [0-9-]+")


def write_output(path: str | Path, data: bytes) -> str:
    """Write `data`; an existing different file is first renamed to `<name>.<YYYYmmdd-HHMMSS>.bak`.

    Returns a one-line status for stdout. A markdown file differing only in its Date field is left as is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        old = path.read_bytes()
        if _DATE_FIELD.sub(b"", old) == _DATE_FIELD.sub(b"", data):
            return f"unchanged {path}"
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        backup, i = path.with_name(f"{path.name}.{stamp}.bak"), 1
        while backup.exists():
            backup, i = path.with_name(f"{path.name}.{stamp}-{i}.bak"), i + 1
        path.rename(backup)
        path.write_bytes(data)
        return f"wrote {path} (it existed and differed: previous version kept as {backup})"
    path.write_bytes(data)
    return f"wrote {path}"


def write_report(
    df: pd.DataFrame, out: str | Path, skipped: Sequence[Skipped] = (), runs_dir: Any = None, png: bool = True
) -> list[str]:
    """Write `<out>/<artefact>-<dataset>.{md,csv,png}`; returns the status lines."""
    out = Path(out)
    stem = f"{df.attrs['artefact']}-{df.attrs['dataset']}"
    status = [
        write_output(out / f"{stem}.md", render_markdown(df, skipped, runs_dir).encode()),
        write_output(out / f"{stem}.csv", to_csv(df).encode()),
    ]
    if png:
        status.append(write_output(out / f"{stem}.png", render_png(df)))
    return status


WANDB_COLUMNS = (
    ["key", "display", "x", "in_paper", "literature", "uses", "n", "seeds"]
    + [f"{m}_{s}" for m in SHOWN for s in ("mean", "std")]
    + [f"paper_{m}" for m in SHOWN]
)


def wandb_table_data(df: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the report's wandb.Table: our means/stds, the paper's numbers, the uses column.

    NaN becomes None (an empty wandb cell); sweeps keep their swept value in `x`.
    """
    columns = [c for c in WANDB_COLUMNS if c != "x" or df.attrs["kind"] == "sweep"]
    rows = []
    for _, rec in df.iterrows():
        row = []
        for c in columns:
            value = rec[c]
            if isinstance(value, float) and math.isnan(value):
                value = None
            elif isinstance(value, np.generic):
                value = value.item()
            row.append(value)
        rows.append(row)
    return columns, rows


def log_to_wandb(
    df: pd.DataFrame, png: bytes | None, project: str = "mprd", mode: str = "offline", directory: Any = None
) -> str:
    """Log the aggregated report as a wandb.Table (+ its PNG as a wandb.Image) in a run of job_type "report"
    in the artefact's group (`<artefact>-<dataset>`, the group of its training runs). Returns the run's name."""
    import io

    import wandb
    from PIL import Image

    a = df.attrs
    group = f"{a['artefact']}-{a['dataset']}"
    columns, rows = wandb_table_data(df)
    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        name=f"report-{group}",
        tags=[a["artefact"], "report"],
        mode=mode,
        dir=str(directory) if directory is not None else None,
        config={k: a[k] for k in ("artefact", "dataset", "reference_dataset", "presets", "seeds", "commits", "n_runs")},
    )
    payload: dict[str, Any] = {"report/table": wandb.Table(columns=columns, data=rows)}
    if png is not None:
        payload["report/plot"] = wandb.Image(Image.open(io.BytesIO(png)), caption=TITLES[a["artefact"]])
    run.log(payload)
    for _, rec in df[df["n"] > 0].iterrows():  # one summary cell per row and metric, for the runs table
        point = rec["key"] if a["kind"] == "table" else f"{rec['key']}@{_fmt_x(rec['x'])}"
        for m in SHOWN:
            if not math.isnan(rec[f"{m}_mean"]):
                run.summary[f"{point}/{m}"] = float(rec[f"{m}_mean"])
    name = run.name
    run.finish()
    return name
