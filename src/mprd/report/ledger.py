"""The run ledger: every finished run's metrics.json, kept in git so a report can be rebuilt or extended later.

Run folders (`experiments/results/runs/`, checkpoints and logs) stay out of git; their metrics.json files
(final and per-epoch metrics, label statistics and the full config) are all a report reads. `make reproduce-*`
copies them into `experiments/results/ledger/<runs folder>/<run>/metrics.json` after writing the report;
`make restore-runs` copies them back, so on a fresh clone `make reproduce-table1 TABLE1_ROWS=<new row>`
runs only the new row (finished rows are skipped) and rewrites the report with every row.

    python -m mprd.report.ledger archive experiments/results/runs/table1-synthetic [--ledger DIR]
    python -m mprd.report.ledger restore [--ledger DIR] [--runs DIR]

Standard library only (the Makefile may call it before anything is installed).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

METRICS = "metrics.json"
RESULTS = Path("experiments/results")


@dataclass
class Outcome:
    copied: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # restore only: a different metrics.json already there

    def summary(self, verb: str) -> str:
        text = f"{verb} {len(self.copied)} metrics.json, {len(self.unchanged)} already identical"
        if self.kept:
            text += f", {len(self.kept)} left as they are (a different run already there: " + ", ".join(
                str(p) for p in self.kept[:5]) + (" ..." if len(self.kept) > 5 else "") + ")"
        return text


def _records(root: Path) -> list[Path]:
    """metrics.json files under `root`, relative to it (sorted); [] when root does not exist."""
    return sorted(p.relative_to(root) for p in root.rglob(METRICS)) if root.is_dir() else []


def archive(runs_folder: Path, ledger: Path, runs_root: Path) -> Outcome:
    """Copy the metrics.json of every run under `runs_folder` (a folder inside `runs_root`) into `ledger`,
    at the same path relative to `runs_root`. A ledger record is replaced by the run's newer one: the ledger
    is tracked by git, so the replaced record stays in history."""
    runs_folder, runs_root = Path(runs_folder), Path(runs_root)
    try:
        prefix = runs_folder.resolve().relative_to(runs_root.resolve())
    except ValueError as err:
        raise ValueError(f"ledger archive: {runs_folder} is not inside the runs folder {runs_root}") from err
    out = Outcome()
    for rel in _records(runs_folder):
        src, dst = runs_folder / rel, Path(ledger) / prefix / rel
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            out.unchanged.append(dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.copied.append(dst)
    return out


def restore(ledger: Path, runs_root: Path) -> Outcome:
    """Copy every ledger record into `runs_root` where that run has no metrics.json yet; a run folder that
    already holds a different metrics.json is never overwritten (it is listed in `kept`)."""
    out = Outcome()
    for rel in _records(Path(ledger)):
        src, dst = Path(ledger) / rel, Path(runs_root) / rel
        if dst.is_file():
            (out.unchanged if filecmp.cmp(src, dst, shallow=False) else out.kept).append(dst)
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        out.copied.append(dst)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mprd.report.ledger", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    arc = sub.add_parser("archive", help="copy the metrics.json of one runs folder (or all) into the ledger")
    arc.add_argument("folders", nargs="*", type=Path, help="runs folders (default: every one under --runs)")
    res = sub.add_parser("restore", help="copy the ledger's records into the runs folders where absent")
    for p in (arc, res):
        p.add_argument("--ledger", type=Path, default=RESULTS / "ledger")
        p.add_argument("--runs", type=Path, default=RESULTS / "runs", help="root of the runs folders")
    args = parser.parse_args(argv)
    try:
        if args.command == "archive":
            every = sorted(p for p in args.runs.iterdir() if p.is_dir()) if args.runs.is_dir() else []
            folders = args.folders or every
            for folder in folders:
                print(f"{folder}: " + archive(folder, args.ledger, args.runs).summary(f"archived into {args.ledger}:"))
        else:
            print(restore(args.ledger, args.runs).summary(f"restored into {args.runs}:"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
