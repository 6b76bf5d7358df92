"""Plots: grouped bars (ours vs the paper) for tables; Rank-1 and mAP against the swept value for sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mprd.report.artefacts import PARAM_NAMES, TITLES
from mprd.report.load import METRIC_NAMES


def plot(df: pd.DataFrame, path: str | Path) -> Path:
    """PNG: grouped bars (ours vs paper) for tables; Rank-1 and mAP vs the swept value for sweeps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_png(df))
    return path


def render_png(df: pd.DataFrame) -> bytes:
    """The figure of `plot` as PNG bytes (deterministic: no software/date metadata)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = df.attrs
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 1.1 * len(df) + 3) if a["kind"] == "table" else 10.0, 4.2))
    ref = a["reference_dataset"]
    ref_name = a["dataset_names"].get(ref, ref)
    for ax, m in zip(axes, ("rank1", "mAP"), strict=True):
        if a["kind"] == "table":
            _bars(ax, df, m, a["dataset"], ref_name)
        else:
            # paper points only on the paper's own dataset: elsewhere they would only squash the curve's scale
            _lines(ax, df, m, a["param"], ref_name if ref == a["dataset"] else None, a.get("chosen"))
        ax.set_title(METRIC_NAMES[m])
        ax.set_ylabel(f"{METRIC_NAMES[m]} (%)")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{TITLES[a['artefact']]} — {a['dataset']}", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _bars(ax: Any, df: pd.DataFrame, m: str, dataset: str, ref_name: str | None) -> None:
    x = np.arange(len(df))
    ours = df[f"{m}_mean"].to_numpy(float)
    err = np.nan_to_num(df[f"{m}_std"].to_numpy(float))
    ax.bar(x - 0.2, np.nan_to_num(ours), 0.4, yerr=err, capsize=3, label=f"ours ({dataset})", color="tab:blue")
    if ref_name is not None:
        paper = df[f"paper_{m}"].to_numpy(float)
        ax.bar(x + 0.2, np.nan_to_num(paper), 0.4, label=f"paper ({ref_name})", color="tab:gray", alpha=0.7)
    for i in np.flatnonzero(np.isnan(ours)):
        ax.text(x[i] - 0.2, 0.5, "not run", rotation=90, ha="center", va="bottom", fontsize=7, color="tab:blue")
    ax.set_xticks(x, df["display"], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)


def _lines(ax: Any, df: pd.DataFrame, m: str, param: str, ref_name: str | None, chosen: Any = None) -> None:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in df["x"])
    labels = sorted({str(v) for v in df["x"]}, key=lambda s: s)
    for _, group in df[df["n"] > 0].groupby("key", sort=True):
        xs = group["x"].astype(float) if numeric else [labels.index(str(v)) for v in group["x"]]
        ax.errorbar(xs, group[f"{m}_mean"], yerr=group[f"{m}_std"].fillna(0), marker="o", capsize=3,
                    label=group["display"].iloc[0])
        ref = group[f"paper_{m}"].notna()
        if ref.any() and ref_name is not None:
            ax.plot(np.asarray(xs)[ref.to_numpy()], group.loc[ref, f"paper_{m}"], "k*", markersize=10,
                    label=f"paper ({ref_name})")
    if not numeric:
        ax.set_xticks(range(len(labels)), labels)
    elif chosen is not None:
        ax.axvline(float(chosen), color="k", linestyle=":", linewidth=1, label=f"paper's choice ({chosen})")
    ax.set_xlabel(PARAM_NAMES.get(param, param))
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one "paper" entry however many rows have one
    if unique:
        ax.legend(unique.values(), unique.keys(), fontsize=8)

