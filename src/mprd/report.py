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
import datetime as dt
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from mprd.runconfig import run_config, settings_notes

METRICS = ("rank1", "rank5", "rank10", "mAP", "mINP")
SHOWN = ("rank1", "rank5", "rank10", "mAP")  # columns of the markdown (mINP stays in the CSV)
REQUIRED = ("rank1", "mAP")
METRIC_NAMES = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP", "mINP": "mINP"}
DELTA_METRICS = ("rank1", "mAP")
USES_HEADER = "Uses besides images"
ANCHORS = ("single", "super")  # Table 1's lower and upper bounds: the yardsticks of our own numbers
LABEL_KEYS = {"pair_precision": "labels/pair_precision", "pair_recall": "labels/pair_recall"}

TABLE_ARTEFACTS = ("table1", "table2", "table3", "table4", "baselines")
SSLR_SWEEPS = ("sweep-sslr-lam", "sweep-sslr-k", "sweep-sslr-lambda-c", "sweep-sslr-lambda-p", "sweep-sslr-parts")
UGA_SWEEPS = ("sweep-uga-lambda", "sweep-uga-noise")  # UGA Tables 3 and 6
SWEEP_ARTEFACTS = ("fig4", "sweep-mu", "sweep-k", "sweep-delta", "sweep-meta-ids") + SSLR_SWEEPS + UGA_SWEEPS
ARTEFACTS = TABLE_ARTEFACTS + SWEEP_ARTEFACTS
# Table 4 is Table 3 on MSMT17: without --dataset it is only written for MSMT17 runs
ONLY_DATASETS = {"table4": ("msmt17",)}
REFERENCE_DATASET = "market1501"  # the paper's reference columns on a dataset it does not use
TITLES = {
    "table1": "MPRD Table 1: pseudo-label generators (all with the BD loss)",
    "table2": "MPRD Table 2: effect of the meta data",
    "table3": "MPRD Table 3: comparison with the state of the art",
    "table4": "MPRD Table 4: MSMT17",
    "baselines": "Seed baselines (SSLR, UGA, MLCR) and other runs",
    "fig4": "MPRD Figure 4: likelihood threshold μ of the GCN (Eq. 7)",
    "sweep-mu": "Sweep of μ (Eq. 7)",
    "sweep-k": "Sweep of k (neighbour count)",
    "sweep-delta": "Sweep of δ (BD loss, Eq. 2)",
    "sweep-meta-ids": "Sweep of the number of meta identities",
    "sweep-sslr-lam": "SSLR Figure 4(b): own-class weight λ of the softened target (Eq. 3)",
    "sweep-sslr-k": "SSLR Figure 4(c): number of reliable images k",
    "sweep-sslr-lambda-c": "SSLR Figure 4(d): cross-camera encouragement λ_c (Eq. 6)",
    "sweep-sslr-lambda-p": "SSLR Figure 4(e): part-distance weight λ_p (Eq. 7)",
    "sweep-sslr-parts": "SSLR Figure 4(f): number of parts p (Eq. 5)",
    "sweep-uga-lambda": "UGA Table 3: CVG threshold λ (intra-camera labels)",
    "sweep-uga-noise": "UGA Table 6: noisy tracklets, stage 1 (intra-camera labels)",
}
PARAM_NAMES = {
    "mu": "μ", "k": "k", "delta": "δ", "meta_ids": "meta IDs",
    "lam": "λ", "lambda_c": "λ_c", "lambda_p": "λ_p", "parts": "p (parts)",  # SSLR Fig. 4
    "lambda": "λ (CVG threshold)", "rate": "noise rate",  # UGA Tables 3 and 6
}
DEFAULT_PAPER = Path(__file__).resolve().parents[2] / "experiments" / "paper_numbers.yaml"
_DATE_FIELD = re.compile(rb"\*\*Date:\*\* [0-9-]+")
COLUMNS = (
    ["key", "x", "display", "in_paper", "literature", "uses", "n", "seeds", "presets", "commits"]
    + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    + list(LABEL_KEYS)
    + [f"paper_{m}" for m in SHOWN]
    + [f"d_{a}_{m}" for a in ANCHORS for m in DELTA_METRICS]
    + ["d_untrained_mAP", "beats_untrained"]
)
UNTRAINED = "untrained"  # the derived row: every run's epoch-0 evaluation of the initial network


class RunFileError(ValueError):
    """A metrics.json that cannot be used; `path` and `reason` are kept for the report header."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


# --------------------------------------------------------------------------------------------- loading


def load_paper(path: str | Path | None = None) -> dict[str, Any]:
    """Read paper_numbers.yaml; ValueError naming the file when it is missing or malformed."""
    path = Path(path) if path is not None else DEFAULT_PAPER
    if not path.is_file():
        raise ValueError(f"paper numbers not found at {path}: pass --paper experiments/paper_numbers.yaml")
    paper = yaml.safe_load(path.read_text())
    if not isinstance(paper, dict) or not isinstance(paper.get("tables"), dict):
        raise ValueError(f"{path}: expected a mapping with a 'tables' section")
    for name, table in paper["tables"].items():
        rows = table.get("rows") if isinstance(table, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) and "key" in r for r in rows):
            raise ValueError(f"{path}: tables.{name}.rows must be a list of mappings with a 'key'")
        keys = [r["key"] for r in rows]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{path}: tables.{name} repeats a row key: {keys}")
    return paper


def _number(value: Any, where: str, path: Path) -> float:
    """A metric value in percent: a finite number in [0, 100] (None -> NaN)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RunFileError(path, f"{where} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 100.0:
        raise RunFileError(path, f"{where} = {value} is outside [0, 100] (metrics are in percent)")
    return float(value)


def load_run(path: str | Path) -> dict[str, Any]:
    """Read and normalise one metrics.json; RunFileError (a ValueError) naming the file when unusable."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFileError(path, f"not valid JSON ({err.msg}, line {err.lineno})") from err
    except OSError as err:
        raise RunFileError(path, f"unreadable ({err.strerror})") from err
    if not isinstance(rec, dict):
        raise RunFileError(path, f"expected a JSON object, got {type(rec).__name__}")
    for key in ("method", "dataset"):
        if not isinstance(rec.get(key), str) or not rec[key]:
            raise RunFileError(path, f"'{key}' must be a non-empty string")
    seed = rec.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RunFileError(path, f"'seed' must be an integer, got {seed!r}")
    final = rec.get("final")
    if not isinstance(final, dict):
        raise RunFileError(path, "no 'final' metrics (partial run?)")
    missing = [m for m in REQUIRED if m not in final]
    if missing:
        raise RunFileError(path, f"'final' lacks {', '.join(missing)} (partial run?)")
    sweep = rec.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise RunFileError(path, f"'sweep' must be a mapping of swept parameters, got {sweep!r}")
    row = rec.get("row") or rec["method"]
    if not isinstance(row, str):
        raise RunFileError(path, f"'row' must be a string, got {row!r}")
    train_log = rec.get("train_log") or {}
    labels = {}
    for name, key in LABEL_KEYS.items():
        value = train_log.get(key) if isinstance(train_log, dict) else None
        labels[name] = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    return {
        "path": path,
        "row": row,
        "method": rec["method"],
        "dataset": rec["dataset"],
        "seed": seed,
        "commit": str(rec.get("commit") or "unknown"),
        "preset": rec.get("preset"),
        "backbone": rec.get("backbone"),
        "artefact": rec.get("artefact"),
        "sweep": sweep,
        "final": {m: _number(final.get(m), f"final.{m}", path) for m in METRICS},
        "initial": _initial(rec.get("initial"), path),
        "labels": labels,
        "uses": run_uses(rec, path),
        "config": run_config(rec, path),  # to warn when one cell averages runs with different settings
    }


def _initial(value: Any, path: Path) -> dict[str, float] | None:
    """The run's evaluation of the untrained network (`initial` in metrics.json), or None for older runs."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RunFileError(path, f"'initial' must be a mapping of metrics, got {value!r}")
    return {m: _number(value.get(m), f"initial.{m}", path) for m in METRICS}


def run_uses(rec: dict[str, Any], path: Path) -> str | None:
    """What a run uses besides unlabeled images (`mprd.supervision`), as one report cell.

    metrics.json's `uses` (written by mprd.train), else derived from the run's `.hydra/config.yaml` (runs
    older than the field), else its `supervision` field; None when unknown.
    """
    from mprd.supervision import describe, uses_besides_images

    uses = rec.get("uses")
    if uses is not None:
        if isinstance(uses, str) or (isinstance(uses, list) and all(isinstance(u, str) for u in uses)):
            return describe(uses)
        raise RunFileError(path, f"'uses' must be a list of strings, got {uses!r}")
    stored = path.parent / ".hydra" / "config.yaml"
    if stored.is_file():
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            return describe(uses_besides_images(OmegaConf.load(stored)))
        except (OmegaConfBaseException, yaml.YAMLError, ValueError, TypeError) as err:
            warnings.warn(f"{stored}: cannot derive 'uses' ({err})", stacklevel=2)
    supervision = rec.get("supervision")
    return str(supervision) if supervision else None


def collect_runs(runs_dir: str | Path, skipped: list[Skipped] | None = None) -> list[dict[str, Any]]:
    """Every usable metrics.json under `runs_dir` (recursive, sorted by path).

    Unusable files are skipped with a warning and appended to `skipped` when a list is given.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise ValueError(f"--runs {root}: not a directory")
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            runs.append(load_run(path))
        except RunFileError as err:
            warnings.warn(f"skipping {err}", stacklevel=2)
            if skipped is not None:
                skipped.append(Skipped(err.path, err.reason))
    return runs


# ----------------------------------------------------------------------------------------- aggregation


def _display_names(paper: dict[str, Any]) -> dict[str, str]:
    """Row key -> display name; Table 1/2 names win over the literature names of Tables 3/4."""
    names: dict[str, str] = {}
    for table in reversed(list(paper["tables"].values())):
        for row in table["rows"]:
            names[row["key"]] = str(row.get("display", row["key"]))
    return names


def reference_dataset(paper: dict[str, Any], datasets: Sequence[str], dataset: str) -> str | None:
    """The paper dataset whose numbers sit beside ours: the same one, else Market-1501, else the table's only."""
    paper_sets = set(paper.get("datasets", {}))
    if dataset in paper_sets:
        return dataset if dataset in datasets else None
    if REFERENCE_DATASET in datasets:
        return REFERENCE_DATASET
    return datasets[0] if datasets else None


def _table_datasets(rows: Sequence[dict[str, Any]]) -> list[str]:
    seen: list[str] = []
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dict) and key not in seen:
                seen.append(key)
    return seen


def _summary(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and std (ddof = 1) of each metric over seeds; pair precision/recall means."""
    out: dict[str, Any] = {"n": len(runs)}
    out["seeds"] = ",".join(str(s) for s in sorted(r["seed"] for r in runs))
    out["presets"] = ",".join(sorted({str(r["preset"]) for r in runs if r["preset"] is not None}))
    out["commits"] = ",".join(sorted({r["commit"] for r in runs}))
    uses = sorted({r["uses"] for r in runs if r.get("uses")})
    out["uses"] = " | ".join(uses) if uses else None  # differing runs of one row show every setting
    for m in METRICS:
        values = pd.Series([r["final"][m] for r in runs], dtype=float)
        out[f"{m}_mean"] = values.mean() if values.notna().any() else math.nan
        out[f"{m}_std"] = values.std(ddof=1) if values.notna().sum() >= 2 else math.nan
    for name in LABEL_KEYS:
        values = pd.Series([r["labels"][name] for r in runs], dtype=float)
        out[name] = values.mean() if values.notna().any() else math.nan
    return out


def _paper_values(entry: dict[str, Any] | None, ref: str | None) -> dict[str, float]:
    values = (entry or {}).get(ref) if ref else None
    values = values if isinstance(values, dict) else {}
    return {f"paper_{m}": float(values[m]) if values.get(m) is not None else math.nan for m in SHOWN}


def _anchor_means(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Our Single / Super means (non-sweep runs), the yardsticks for the Δ columns."""
    means = {}
    for anchor in ANCHORS:
        group = [r for r in runs if r["row"] == anchor and not r["sweep"]]
        if group:
            s = _summary(group)
            means[anchor] = {m: s[f"{m}_mean"] for m in DELTA_METRICS}
    return means


def _add_deltas(records: list[dict[str, Any]], anchors: dict[str, dict[str, float]]) -> None:
    for rec in records:
        for anchor in ANCHORS:
            for m in DELTA_METRICS:
                base = anchors.get(anchor, {}).get(m, math.nan)
                rec[f"d_{anchor}_{m}"] = rec[f"{m}_mean"] - base if rec["n"] else math.nan


def _group_warnings(key: str, runs: Sequence[dict[str, Any]]) -> list[str]:
    notes = []
    presets = sorted({str(r["preset"]) for r in runs})
    if len(presets) > 1:
        notes.append(f"row {key} mixes presets {', '.join(presets)}")
    seeds = pd.Series([r["seed"] for r in runs]).value_counts()
    for seed, count in seeds[seeds > 1].items():
        paths = ", ".join(str(r["path"]) for r in runs if r["seed"] == seed)
        notes.append(f"row {key} has seed {seed} {count} times, all averaged ({paths})")
    return notes + settings_notes(key, runs)


def _select_table_runs(runs: Sequence[dict[str, Any]], artefact: str, paper: dict[str, Any]) -> list[dict]:
    """Non-sweep runs whose row belongs to the table (a shared row such as MPRD feeds Tables 1-3)."""
    keys = {row["key"] for row in paper["tables"][artefact]["rows"]}
    if artefact == "baselines":  # plus anything no MPRD table claims
        claimed = {row["key"] for name, t in paper["tables"].items() if name != "baselines" for row in t["rows"]}
        return [r for r in runs if not r["sweep"] and (r["row"] in keys or r["row"] not in claimed)]
    return [r for r in runs if not r["sweep"] and (r["row"] in keys or r["artefact"] == artefact)]


def _aggregate_table(runs: list[dict], artefact: str, dataset: str, paper: dict[str, Any]) -> pd.DataFrame:
    table = paper["tables"][artefact]
    names = _display_names(paper)
    ref = reference_dataset(paper, _table_datasets(table["rows"]), dataset)
    selected = _select_table_runs(runs, artefact, paper)
    paper_keys = [row["key"] for row in table["rows"]]
    extra = sorted({r["row"] for r in selected} - set(paper_keys))
    entries = {row["key"]: row for row in table["rows"]}
    records, notes = [], []
    for key in paper_keys + extra:
        group = [r for r in selected if r["row"] == key]
        entry = entries.get(key)
        rec = {
            "key": key,
            "x": math.nan,
            "display": str(entry.get("display", key)) if entry else names.get(key, key),
            "in_paper": entry is not None,
            "literature": bool(entry and entry.get("literature", False)),
        }
        rec.update(_summary(group))
        rec.update(_paper_values(entry, ref))
        records.append(rec)
        notes += _group_warnings(key, group)
    untrained = _untrained_record(selected, paper, ref)
    if untrained is not None:
        records.append(untrained)
    _add_deltas(records, _anchor_means(runs))
    _add_untrained_deltas(records, untrained)
    attrs = {
        "kind": "table",
        "source": table.get("source", ""),
        "caption": table.get("caption", ""),
        "paper_note": table.get("note", ""),
        "paper_metrics": list(table.get("metrics", SHOWN)),
        "reference_dataset": ref,
        "param": None,
        "notes": [],
    }
    return _finish(records, selected, artefact, dataset, paper, attrs, notes)


def _untrained_record(runs: Sequence[dict[str, Any]], paper: dict[str, Any], ref: str | None) -> dict[str, Any] | None:
    """The "ImageNet (untrained)" row: each seed's epoch-0 evaluation (identical across the rows of one seed
    and preset, so one value per seed), with MLCR Table 2's "ImageNet Pre-trained" numbers beside it."""
    per_seed: dict[int, list[dict[str, float]]] = {}
    for r in runs:
        if r.get("initial") is not None:
            per_seed.setdefault(r["seed"], []).append(r["initial"])
    if not per_seed:
        return None
    pseudo = [
        {**runs[0], "seed": seed, "final": {m: float(pd.Series([v[m] for v in values]).mean()) for m in METRICS},
         "labels": {k: math.nan for k in LABEL_KEYS}, "uses": None, "preset": runs[0]["preset"],
         "commit": runs[0]["commit"]}
        for seed, values in sorted(per_seed.items())
    ]
    entry = paper.get("untrained") or {}
    rec = {"key": UNTRAINED, "x": math.nan, "display": str(entry.get("display", "ImageNet (untrained)")),
           "in_paper": False, "literature": bool(entry)}
    rec.update(_summary(pseudo))
    rec["presets"] = ",".join(sorted({str(r["preset"]) for r in runs if r["preset"] is not None}))
    rec["commits"] = ",".join(sorted({r["commit"] for r in runs}))
    rec.update(_paper_values(entry, ref))
    return rec


def _add_untrained_deltas(records: list[dict[str, Any]], untrained: dict[str, Any] | None) -> None:
    """ΔmAP vs the untrained network, and whether a row beats it by more than 2 of its own seed stds."""
    for rec in records:
        if untrained is None or not rec["n"] or rec["key"] == UNTRAINED:
            rec["d_untrained_mAP"], rec["beats_untrained"] = math.nan, None
            continue
        delta = rec["mAP_mean"] - untrained["mAP_mean"]
        std = rec["mAP_std"] if not math.isnan(rec["mAP_std"]) else math.nan
        rec["d_untrained_mAP"] = delta
        rec["beats_untrained"] = None if math.isnan(std) else bool(delta > 2 * std)


def _sweep_value(run: dict[str, Any], artefact: str, aliases: Sequence[str]) -> tuple[bool, Any, str]:
    """(belongs, x, variant): the swept value and the other swept keys of a run (they split its row)."""
    sweep = run["sweep"]
    matches = [k for k in sweep if str(k).split(".")[-1] in aliases]
    if not matches and run["artefact"] == artefact and len(sweep) == 1:
        matches = list(sweep)
    if len(matches) != 1:
        return False, None, ""
    x = sweep[matches[0]]
    if isinstance(x, list | dict):  # keep grouping keys hashable
        x = json.dumps(x, sort_keys=True)
    variant = ",".join(f"{k}={sweep[k]}" for k in sorted(sweep) if k != matches[0])
    return True, x, variant


def _x_order(x: Any) -> tuple[int, float, str]:
    return (0, float(x), "") if isinstance(x, int | float) and not isinstance(x, bool) else (1, 0.0, str(x))


def _aggregate_sweep(runs: list[dict], artefact: str, dataset: str, paper: dict[str, Any]) -> pd.DataFrame:
    spec = paper.get("sweeps", {}).get(artefact, {})
    param = spec.get("param", artefact.removeprefix("sweep-").replace("-", "_"))
    aliases = tuple(spec.get("aliases", [param]))
    names = _display_names(paper)
    points: dict[tuple[str, Any], list[dict]] = {}
    notes: list[str] = []
    infos: list[str] = []
    for run in runs:
        belongs, x, variant = _sweep_value(run, artefact, aliases)
        if belongs:
            points.setdefault((run["row"] + (f"[{variant}]" if variant else ""), x), []).append(run)
        elif run["sweep"] and run["artefact"] == artefact:
            notes.append(f"{run['path']}: sweep {run['sweep']} has no single '{param}' value; not used")
    default = spec.get("default")
    if default:  # e.g. Table-1 MPRD runs are Figure 4's mu = 0.5 point (OVERVIEW §3)
        row, x = default["row"], default["x"]
        swept_rows = {k for k, _ in points}
        if row in swept_rows and (row, x) not in points:
            plain = [r for r in runs if r["row"] == row and not r["sweep"]]
            if plain:
                points[(row, x)] = plain
                infos.append(f"{param} = {x} point of {row}: its {len(plain)} run(s) without a sweep (the default)")
    refs = spec.get("reference_points", [])
    ref = reference_dataset(paper, _table_datasets(refs), dataset) if refs else None
    records = []
    for key, x in sorted(points, key=lambda kx: (kx[0], _x_order(kx[1]))):
        base = key.split("[")[0]
        entry = next((p for p in refs if p["row"] == key and _x_order(p["x"]) == _x_order(x)), None)
        rec = {"key": key, "x": x, "display": names.get(base, base) + key[len(base) :]}
        rec.update({"in_paper": entry is not None, "literature": False})
        rec.update(_summary(points[(key, x)]))
        rec.update(_paper_values(entry, ref))
        records.append(rec)
        notes += _group_warnings(f"{key} at {param} = {x}", points[(key, x)])
    _add_deltas(records, _anchor_means(runs))
    attrs = {
        "kind": "sweep",
        "source": spec.get("source", "not in the paper (our sweep)"),
        "caption": spec.get("caption", ""),
        "paper_note": spec.get("note", ""),
        "paper_metrics": list(spec.get("metrics", ["rank1", "mAP"])),
        "reference_dataset": ref,
        "param": param,
        "chosen": spec.get("chosen"),
        "notes": infos,
    }
    used = [r for group in points.values() for r in group]
    return _finish(records, used, artefact, dataset, paper, attrs, notes)


def _finish(
    records: list[dict[str, Any]],
    used: Sequence[dict[str, Any]],
    artefact: str,
    dataset: str,
    paper: dict[str, Any],
    attrs: dict[str, Any],
    notes: list[str],
) -> pd.DataFrame:
    """The report frame (COLUMNS, stable for the CSV) with the shared metadata in `df.attrs`."""
    df = pd.DataFrame.from_records(records, columns=COLUMNS)
    unique = {id(r): r for r in used}.values()
    df.attrs.update(attrs)
    df.attrs.update(
        {
            "artefact": artefact,
            "dataset": dataset,
            "paper_dataset": dataset in paper.get("datasets", {}),
            "dataset_names": {k: v.get("display", k) for k, v in paper.get("datasets", {}).items()},
            "n_runs": len(unique),
            "seeds": sorted({r["seed"] for r in unique}),
            "presets": sorted({str(r["preset"]) for r in unique if r["preset"] is not None}),
            "commits": sorted({r["commit"] for r in unique}),
            "backbones": sorted({str(r["backbone"]) for r in unique if r.get("backbone")}),
            "warnings": notes,
        }
    )
    return df


def aggregate(
    runs: Sequence[dict[str, Any]], artefact: str, dataset: str | None = None, paper: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One row per report line: our mean/std per metric, n seeds, paper numbers, Δ to our Single/Super.

    Table artefacts keep the paper's row order (rows we did not run have n = 0, then our extra rows);
    sweep artefacts have one row per (row, swept value). Metadata (dataset, presets, seeds...) is in
    `df.attrs`. `dataset=None` requires the runs to share one dataset.
    """
    if artefact not in ARTEFACTS:
        raise ValueError(f"unknown artefact {artefact!r}; expected one of {', '.join(ARTEFACTS)}")
    paper = paper if paper is not None else load_paper()
    if dataset is None:
        found = sorted({r["dataset"] for r in runs})
        if len(found) != 1:
            raise ValueError(f"runs span datasets {found or 'none'}: pass dataset=")
        dataset = found[0]
    runs = [r for r in runs if r["dataset"] == dataset]
    if artefact in TABLE_ARTEFACTS:
        if artefact not in paper["tables"]:
            raise ValueError(f"paper numbers have no tables.{artefact} section")
        return _aggregate_table(runs, artefact, dataset, paper)
    return _aggregate_sweep(runs, artefact, dataset, paper)


# -------------------------------------------------------------------------------------------- markdown


def _fmt(mean: float, std: float = math.nan) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _fmt_signed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:+.1f}"


def _fmt_x(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _fmt_frac(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _escape(text: str) -> str:
    """Markdown-safe text: the papers' "*" marks (MPLP*, MLCR*) must not turn into emphasis."""
    return text.replace("*", "\\*")


def _cell(text: Any) -> str:
    return _escape(str(text).replace("|", "\\|"))


def honest_note(df: pd.DataFrame) -> str:
    """The plain statement of what the comparison with the paper can and cannot show."""
    a = df.attrs
    ref_name = a["dataset_names"].get(a["reference_dataset"], a["reference_dataset"]) or "reference"
    if a["dataset"] == "synthetic":
        return (
            "**Synthetic data: compare orderings and gaps, not absolute values.** Our runs use a small generated "
            f"toy dataset; the paper's {ref_name} numbers (real images, ResNet-50, full schedule) are shown "
            "only as a reference for which rows should win and by how much."
            + "".join(
                f" **The `{name}` preset is {epochs} epochs of EfficientNet-Lite0 at 64×32**, far shorter than the "
                "paper's schedule; read each row against the untrained network and over seeds. `docs/dynamics.md` "
                "gives the training recipe and its learning curves."
                for name, epochs in (("cpu", 6), ("cpu_long", 18)) if name in a["presets"]
            )
        )
    if not a["paper_dataset"]:
        return (
            f"**{a['dataset']} is not a dataset of the paper: compare orderings and gaps, not absolute values.** "
            f"The paper columns show its {ref_name} numbers for reference."
        )
    off = [p for p in a["presets"] if p != "paper"]
    if off:
        return (
            f"**Preset {', '.join(off)} is not the paper's configuration** (smaller backbone/input/schedule): "
            "absolute values are not expected to match the paper; compare orderings and gaps."
        )
    if a["reference_dataset"] is None:
        return "The paper reports no numbers for this dataset in this artefact."
    return "Same dataset and configuration as the paper. The paper reports single runs; ours are over seeds."


def _header(df: pd.DataFrame, skipped: Sequence[Skipped], runs_dir: Any, date: str) -> list[str]:
    a = df.attrs
    ds_name = a["dataset_names"].get(a["dataset"], a["dataset"])
    ref = a["reference_dataset"]
    ref_name = a["dataset_names"].get(ref, ref) if ref else "none"
    lines = [f"# {TITLES[a['artefact']]} — {ds_name}", ""]
    lines += [f"Source: {a['source']}", ""]
    if a["caption"]:
        lines += ["> " + _escape(" ".join(str(a["caption"]).split())), ""]
    lines.append(f"- **Dataset:** {a['dataset']}; paper columns: {ref_name}")
    lines.append(f"- {honest_note(df)}")
    backbones = f" · **Backbone(s):** {', '.join(a['backbones'])}" if a["backbones"] else ""
    lines.append(f"- **Preset(s):** {', '.join(a['presets']) or 'not recorded'}{backbones}")
    seeds = ", ".join(str(s) for s in a["seeds"]) or "none"
    commits = ", ".join(a["commits"]) or "—"
    lines.append(f"- **Seeds:** {seeds} · **Runs used:** {a['n_runs']} · **Commit(s):** {commits}")
    lines.append(f"- **Date:** {date}" + (f" · **Runs folder:** `{runs_dir}`" if runs_dir is not None else ""))
    if skipped:
        listed = "; ".join(f"{s.path} ({s.reason})" for s in skipped)
        lines.append(f"- **{len(skipped)} run{'s' if len(skipped) != 1 else ''} skipped:** {listed}")
    if a["paper_note"]:
        lines.append(f"- **About the paper's numbers:** {_escape(' '.join(str(a['paper_note']).split()))}")
    lines += [f"- Note: {n}" for n in a["notes"]]
    lines += [f"- **Warning:** {w}" for w in a["warnings"]]
    return lines + [""]


def _columns(df: pd.DataFrame) -> list[tuple[str, Any]]:
    """(header, function of a row -> cell) for the markdown table; all-empty optional columns are dropped."""
    a = df.attrs
    ref = a["reference_dataset"]
    suffix = "" if ref == a["dataset"] else f" ({a['dataset_names'].get(ref, ref)})"
    extra = "" if a["kind"] == "sweep" else " ‡"  # table rows the paper lacks (e.g. UGA in Table 3)
    cols: list[tuple[str, Any]] = [
        ("Row", lambda r: r["display"] + (" †" if r["literature"] else "") + ("" if r["in_paper"] else extra))
    ]
    if a["kind"] == "sweep":
        cols.append((PARAM_NAMES.get(a["param"], a["param"]), lambda r: _fmt_x(r["x"])))
    cols.append(("n", lambda r: int(r["n"])))
    cols += [(METRIC_NAMES[m], lambda r, m=m: _fmt(r[f"{m}_mean"], r[f"{m}_std"])) for m in SHOWN]
    if ref is not None and (a["kind"] == "table" or df[[f"paper_{m}" for m in SHOWN]].notna().any().any()):
        for m in a["paper_metrics"]:
            cols.append((f"Paper {METRIC_NAMES[m]}{suffix}", lambda r, m=m: _fmt(r[f"paper_{m}"])))
    for anchor, name in (("single", "Single"), ("super", "Super.")):
        for m in DELTA_METRICS:
            if df[f"d_{anchor}_{m}"].notna().any():
                cols.append((f"Δ{METRIC_NAMES[m]} vs {name}", lambda r, c=f"d_{anchor}_{m}": _fmt_signed(r[c])))
    if "d_untrained_mAP" in df and df["d_untrained_mAP"].notna().any():
        cols.append(("ΔmAP vs untrained", lambda r: _fmt_signed(r["d_untrained_mAP"]) + _beats_mark(r)))
    for name, label in (("pair_precision", "Pair precision"), ("pair_recall", "Pair recall")):
        if df[name].notna().any():
            cols.append((label, lambda r, c=name: _fmt_frac(r[c])))
    if df["uses"].notna().any():
        cols.append((USES_HEADER, lambda r: r["uses"] if isinstance(r["uses"], str) else "—"))
    return cols


def _beats_mark(row: Any) -> str:
    value = row.get("beats_untrained")
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else (" ✓" if value else " ✗")


def _ordering(df: pd.DataFrame) -> list[str]:
    """Our ranking of the rows against the paper's, with Kendall's tau (what synthetic data can test)."""
    from scipy.stats import kendalltau

    lines = []
    for m in ("mAP", "rank1"):
        ours = df[df["n"] > 0].sort_values(f"{m}_mean", ascending=False)
        if len(ours) < 2:
            continue
        both = ours[ours[f"paper_{m}"].notna() & ours["in_paper"].astype(bool)]  # the paper's own rows
        lines.append(f"- By our {METRIC_NAMES[m]}: " + " > ".join(_cell(d) for d in ours["display"]))
        if len(both) >= 2:
            paper_order = both.sort_values(f"paper_{m}", ascending=False)["display"]
            tau = kendalltau(both[f"{m}_mean"], both[f"paper_{m}"]).statistic if len(both) >= 3 else math.nan
            tau_text = f" (Kendall τ with ours over these {len(both)} rows: {tau:+.2f})" if not math.isnan(tau) else ""
            lines.append(f"  - Paper, same rows: " + " > ".join(_cell(d) for d in paper_order) + tau_text)
    lines += _gap_closed(df)
    return ["## Ordering", ""] + lines + [""] if lines else []


def _gap_closed(df: pd.DataFrame, row: str = "mprd") -> list[str]:
    """How much of the Single → Super. mAP gap a row closes, ours beside the paper's (MPRD: 67 % on Market)."""
    by_key = df.set_index("key")
    if not {row, "single", "super"} <= set(by_key.index) or not (by_key.loc[[row, "single", "super"], "n"] > 0).all():
        return []

    def share(prefix: str) -> float:
        lo, hi, x = (by_key.loc[k, f"{prefix}mAP{'_mean' if not prefix else ''}"] for k in ("single", "super", row))
        return (x - lo) / (hi - lo) if hi != lo else math.nan

    ours, paper = share(""), share("paper_")
    paper_text = f" (paper: {100 * paper:.0f} %)" if not math.isnan(paper) else ""
    return [f"- {_cell(by_key.loc[row, 'display'])} closes {100 * ours:.0f} % of our Single → Super. mAP gap{paper_text}."]


def _shape(df: pd.DataFrame) -> list[str]:
    """Per swept row: where Rank-1 and mAP peak (Figure 4's claim is a peak near μ = 0.5)."""
    lines = []
    name = PARAM_NAMES.get(df.attrs["param"], df.attrs["param"])
    for key, group in df[df["n"] > 0].groupby("key", sort=True):
        if len(group) < 2:
            continue
        best = {m: group.loc[group[f"{m}_mean"].idxmax(), "x"] for m in ("rank1", "mAP")}
        lines.append(
            f"- {_cell(group['display'].iloc[0])}: best Rank-1 at {name} = {best['rank1']}, best mAP at "
            f"{name} = {best['mAP']} ({len(group)} values)"
        )
    return ["## Shape", ""] + lines + [""] if lines else []


def render_markdown(
    df: pd.DataFrame, skipped: Sequence[Skipped] = (), runs_dir: Any = None, date: str | None = None
) -> str:
    """The report: header (dataset, presets, seeds, commits, date, honest note, skipped runs), table, notes."""
    date = date or dt.date.today().isoformat()
    lines = _header(df, skipped, runs_dir, date)
    cols = _columns(df)
    lines.append("| " + " | ".join(h for h, _ in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(f(row)) for _, f in cols) + " |")
    lines.append("")
    lines += _ordering(df) if df.attrs["kind"] == "table" else _shape(df)
    order = (
        "Rows follow the paper's order; rows the paper lacks come after it."
        if df.attrs["kind"] == "table"
        else "Rows are sorted by row key, then by the swept value."
    )
    lines.append(
        "Values in percent. Ours: mean ± std over seeds (std with ddof = 1; n = number of runs; one run shows "
        f"no ±); — = not run or not reported. {order}"
    )
    if df["literature"].any():
        lines.append("† Literature numbers the paper copied from other work.")
    if df.attrs["kind"] == "table" and not df["in_paper"].all():
        lines.append("‡ Not a row of the paper's table: our extra run, shown after the paper's rows.")
    if any(h == USES_HEADER for h, _ in cols):
        lines.append(
            f"{USES_HEADER}: what our runs of the row use for training besides the unlabeled images, derived from "
            "each run's config (identity labels, labeled meta IDs, camera IDs, intra-camera labels, CamStyle, "
            "whose style transfer is built from camera IDs); — = not run."
        )
    if any(h.startswith("Δ") for h, _ in cols):
        lines.append("Δ columns: our row's mean minus our own Single / Super. mean on this dataset.")
    if any(h == "ΔmAP vs untrained" for h, _ in cols):
        lines.append(
            "ImageNet (untrained): the initial network of the same runs evaluated before training (epoch 0; one "
            "value per seed); paper column: MLCR (CVPR 2020) Table 2 \"ImageNet Pre-trained\" (ResNet-50). "
            "ΔmAP vs untrained: ✓ = above it by more than 2 standard deviations of the row's seeds, ✗ = not; "
            "no mark with one seed."
        )
    if any(h.startswith("Pair") for h, _ in cols):
        lines.append(
            "Pair precision / recall: final-epoch precision and recall of the pseudo-positive pairs P_i against "
            "the hidden identities (train_log `labels/pair_precision`, `labels/pair_recall`; fractions, mean over "
            "seeds)."
        )
    return "\n".join(lines) + "\n"


def to_csv(df: pd.DataFrame) -> str:
    """Machine-readable report: every column of `aggregate`, floats rounded to 4 decimals."""
    return df.to_csv(index=False, float_format="%.4f", lineterminator="\n")


# ---------------------------------------------------------------------------------------------- plots


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
    for key, group in df[df["n"] > 0].groupby("key", sort=True):
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


# ---------------------------------------------------------------------------------------------- files


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


if __name__ == "__main__":
    sys.exit(main())
