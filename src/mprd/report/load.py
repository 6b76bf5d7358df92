"""Loading: the papers' numbers (experiments/paper_numbers.yaml) and our runs' metrics.json files."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mprd.runconfig import run_config

METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
SHOWN = ("rank1", "rank5", "rank10", "mAP")  # columns of the markdown (mINP stays in the CSV)
PAPER_METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP")  # a paper table may list any of these
REQUIRED = ("rank1", "mAP")
METRIC_NAMES = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "rank20": "Rank-20", "mAP": "mAP",
                "mINP": "mINP"}
LABEL_KEYS = {"pair_precision": "labels/pair_precision", "pair_recall": "labels/pair_recall"}
DEFAULT_PAPER = Path(__file__).resolve().parents[3] / "experiments" / "paper_numbers.yaml"


class RunFileError(ValueError):
    """A metrics.json that cannot be used; `path` and `reason` are kept for the report header."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str



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
        "config": (config := run_config(rec, path)),  # to warn when one cell averages runs with different settings
        "split": split_of(config),
    }


def split_of(config: dict[str, Any] | None) -> int | None:
    """The identity split of a PRID2011 / iLIDS-VID run (`dataset.options.split_id`); None elsewhere. A row's
    runs over the 10 splits are averaged as seeds are."""
    options = ((config or {}).get("dataset") or {}).get("options") or {}
    value = options.get("split_id") if isinstance(options, dict) else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


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

