"""Reports: our finished runs beside the papers' own numbers (MPRD Tables 1-4, Figure 4, sweeps, baselines).

    python -m mprd.report <artefact> --runs <dir> [--dataset NAME] [--preset NAME] [--out experiments/results]
                          [--wandb]   (also log the table + plot to wandb, job_type "report", artefact's group)

`<dir>` is searched recursively for `metrics.json` files (written by `mprd.train`). Each report is written as
`<out>/<artefact>-<dataset>.md`, `.csv` and `.png`. Our numbers are mean ± std over seeds (std with ddof = 1);
the paper's numbers come from `experiments/paper_numbers.yaml`. On a dataset the paper does not use (the
synthetic set, CUHK03-NP) the paper's Market-1501 numbers are shown as reference and the report says plainly
that only orderings and gaps are comparable. An existing output that differs is kept as `<name>.<time>.bak`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mprd.report.aggregation import aggregate
from mprd.report.artefacts import ARTEFACTS, ONLY_DATASETS
from mprd.report.load import Skipped, collect_runs, load_paper
from mprd.report.output import log_to_wandb, write_report
from mprd.report.plots import render_png


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mprd.report", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("artefact", choices=ARTEFACTS)
    parser.add_argument("--runs", required=True, type=Path, nargs="+",
                        help="folder(s) searched recursively for metrics.json; missing folders are skipped when "
                             "another one exists (the baselines report reads the SSLR and UGA folders)")
    parser.add_argument("--dataset", help="dataset name (default: one report per dataset found)")
    parser.add_argument("--preset", help="use only runs of this preset")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--paper", type=Path, default=None, help="paper_numbers.yaml (default: the repo's)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--wandb", action="store_true",
                        help="also log the table and plot to wandb (job_type 'report', in the artefact's group)")
    parser.add_argument("--wandb-project", default="mprd")
    parser.add_argument("--wandb-mode", default=None, choices=("offline", "online", "disabled"),
                        help="default: $WANDB_MODE, else offline (upload later with `wandb sync`)")
    args = parser.parse_args(argv)
    try:
        paper = load_paper(args.paper)
        skipped: list[Skipped] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped files are listed below and in the report header
            folders = [f for f in args.runs if f.is_dir()] or args.runs[:1]  # none there: the error names one
            runs = [run for folder in folders for run in collect_runs(folder, skipped)]
        runs_label = ", ".join(str(f) for f in folders)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for s in skipped:
        print(f"skipped {s.path}: {s.reason}", file=sys.stderr)
    if args.preset:
        runs = [r for r in runs if r["preset"] == args.preset]
    datasets = [args.dataset] if args.dataset else sorted({r["dataset"] for r in runs})
    if not args.dataset and args.artefact in ONLY_DATASETS:
        datasets = [d for d in datasets if d in ONLY_DATASETS[args.artefact]]
    written = 0
    for dataset in datasets:
        df = aggregate(runs, args.artefact, dataset, paper)
        if df.attrs["n_runs"] == 0 and not args.dataset:
            continue
        if df.attrs["n_runs"] == 0:
            print(f"note: no runs for {args.artefact} on {dataset}; the report lists the paper's rows only")
        for line in write_report(df, args.out, skipped, runs_label, png=not args.no_plot):
            print(line)
        if args.wandb:
            mode = args.wandb_mode or os.environ.get("WANDB_MODE", "offline")
            png = None if args.no_plot else render_png(df)
            name = log_to_wandb(df, png, args.wandb_project, mode, directory=folders[0])
            print(f"logged the {args.artefact} table to wandb ({mode} run {name}, folder {folders[0]}/wandb)")
        written += 1
    if not written:
        print(f"error: no run under {runs_label} belongs to {args.artefact}; pass --dataset to write an empty report",
              file=sys.stderr)
        return 1
    return 0
