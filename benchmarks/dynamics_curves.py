"""Per-epoch learning curves of one or more runs, from their `csv/metrics.csv` (docs/dynamics.md figures).

    .venv/bin/python benchmarks/dynamics_curves.py --out docs/dynamics_knn.png \
        knn-old=logs/train/runs/knn-synthetic/2026-... knn=experiments/results/runs/table1-synthetic/knn-seed0

Panels: query/gallery mAP (epoch 0 = the untrained network, from metrics.json), pair precision of the
pseudo-positive sets, and the 8-NN precision of the memory and of clean training features (test
transform) at each epoch start. Everything that reads identities here is a diagnostic.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

PANELS = (
    ("mAP (%)", [("eval/mAP", "-")]),
    ("pseudo-label pair precision", [("labels/pair_precision", "-")]),
    ("8-NN precision (— clean, -- memory)", [("diag/clean/knn8_prec", "-"), ("diag/memory/knn8_prec", "--")]),
    ("cross-camera 8-NN precision of clean features", [("diag/clean/knn8_prec_cross", "-")]),
)


def read_curves(folder: Path) -> dict[str, dict[float, float]]:
    """{key: {epochs trained: value}}. Eval rows of Lightning epoch e describe e + 1 epochs of training;
    label and diagnostic rows logged at the start of epoch e describe e epochs."""
    curves: dict[str, dict[float, float]] = {}
    log = folder / "csv" / "metrics.csv"  # absent for a run restored from the ledger (metrics.json only)
    for row in csv.DictReader(open(log)) if log.is_file() else ():
        if not row.get("epoch"):
            continue
        epoch = int(row["epoch"])
        for key, value in row.items():
            if not value or key in ("epoch", "step"):
                continue
            x = epoch + 1 if key.startswith("eval/") else epoch
            curves.setdefault(key, {})[x] = float(value)
    # Single's P_i = {i}: precision 1 at recall 0 says nothing, so it is left out of the precision panel
    recall = curves.get("labels/pair_recall", {})
    for x in [x for x, r in recall.items() if r == 0]:
        curves.get("labels/pair_precision", {}).pop(x, None)
    metrics = folder / "metrics.json"
    if metrics.is_file():
        rec = json.loads(metrics.read_text())
        for r in rec.get("per_epoch", []):
            curves.setdefault("eval/mAP", {})[r["epoch"]] = r["mAP"]
        for d in rec.get("diagnostics", []):
            for key, value in d.items():
                if key != "epoch":
                    curves.setdefault(f"diag/{key}", {})[d["epoch"]] = value
    return curves


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="label=run_folder; labels 'row:seed' share the row's colour")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.4))
    group_colours: dict[str, str] = {}  # "knn:seed1" and "knn:seed2" share knn's colour and legend entry
    for spec in args.runs:
        label, folder = spec.rsplit("=", 1)
        curves = read_curves(Path(folder))
        group = label.split(":", 1)[0]
        color = group_colours.get(group)
        label = label if ":" not in label else (None if color else group)
        for ax, (title, keys) in zip(axes, PANELS, strict=True):
            for key, style in keys:
                points = sorted((x, y) for x, y in curves.get(key, {}).items() if not math.isnan(y))
                if points:
                    line = ax.plot(*zip(*points, strict=True), style, marker="o", ms=3, color=color,
                                   label=label if style == "-" else None)[0]
                    color = group_colours.setdefault(group, line.get_color())
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("epochs trained")
    axes[0].legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
