"""Reports: our finished runs beside the papers' own numbers (MPRD Tables 1-4, Figure 4, sweeps, baselines).

Modules: `artefacts` (the one registry of artefacts: rows, titles, grids), `load` (paper numbers and
metrics.json files), `aggregation` (the report frame), `markdown`, `plots`, `output` (files, wandb), `cli`
(`python -m mprd.report`). The public API below is imported on first use, so that
`python -m mprd.report.artefacts` (called by the Makefile) imports no pandas.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_API = {
    "ARTEFACTS": "artefacts", "SWEEP_ARTEFACTS": "artefacts", "TABLE_ARTEFACTS": "artefacts", "TITLES": "artefacts",
    "RunFileError": "load", "Skipped": "load", "collect_runs": "load", "load_paper": "load", "load_run": "load",
    "aggregate": "aggregation", "honest_note": "markdown", "render_markdown": "markdown", "to_csv": "markdown",
    "plot": "plots", "render_png": "plots", "write_output": "output", "write_report": "output",
    "log_to_wandb": "output", "wandb_table_data": "output", "main": "cli",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    """A public name of the package, from the module that defines it."""
    if name not in _API:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_API[name]}"), name)
