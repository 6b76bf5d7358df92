"""Which settings differ between runs averaged into one report cell (an ad-hoc run left in a runs folder).

A run's config is the `config` that `mprd.train` stores in metrics.json, else its `.hydra/config.yaml`.
Keys that may differ between seeds of one cell are ignored (`IGNORED`, and any key named `seed`), and so is
the identity split of PRID2011 / iLIDS-VID (`dataset.options.split_id`): a cell averages its splits like seeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# bookkeeping, paths and display: they never change what a run computes
IGNORED = ("paths", "hydra", "logger", "run_name", "tags", "ckpt_path", "auto_resume", "skip_if_done", "debug",
           "dataset.root", "data.num_workers", "data.decode_cache_dir", "trainer.enable_progress_bar",
           "trainer.enable_model_summary", "trainer.log_every_n_steps", "row", "artefact", "sweep",
           "dataset.options.split_id")


def run_config(rec: Mapping[str, Any], metrics_path: Path) -> dict[str, Any] | None:
    """The run's config: metrics.json's `config`, else the `.hydra/config.yaml` beside it (resolved as far as
    it can be outside Hydra), else None."""
    if isinstance(rec.get("config"), dict):
        return rec["config"]
    stored = Path(metrics_path).parent / ".hydra" / "config.yaml"
    if not stored.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        return resolved_config(OmegaConf.load(stored), Path(metrics_path).parent)
    except Exception:  # an unreadable or unparsable file: nothing to compare
        return None


def resolved_config(cfg: Any, output_dir: Path) -> dict[str, Any]:
    """`cfg` as plain data, interpolations resolved; `paths.output_dir` (Hydra's runtime) set to `output_dir`.
    Left unresolved when another interpolation needs Hydra's runtime."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(data.get("paths"), dict):
        data["paths"]["output_dir"] = str(output_dir)
    try:
        return OmegaConf.to_container(OmegaConf.create(data), resolve=True)  # type: ignore[return-value]
    except Exception:
        return data  # type: ignore[return-value]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a.b': leaf} for every leaf (lists stay whole)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _ignored(key: str) -> bool:
    return key.rsplit(".", 1)[-1] == "seed" or any(key == p or key.startswith(f"{p}.") for p in IGNORED)


def differing_settings(configs: Iterable[Mapping[str, Any] | None]) -> dict[str, list[Any]]:
    """{key: [value per run]} for every compared key whose value is not the same in all runs with a config.

    Only keys every config has are compared: a key that a later version of the suite added (with a default)
    is not a difference between the runs' settings."""
    flat = [flatten(c) for c in configs if c]
    if len(flat) < 2:
        return {}
    keys = sorted(k for k in set.intersection(*(set(f) for f in flat)) if not _ignored(k))
    return {k: [f[k] for f in flat] for k in keys if len({repr(f[k]) for f in flat}) > 1}


def settings_notes(key: str, runs: Sequence[Mapping[str, Any]], show: int = 4) -> list[str]:
    """One report warning when the runs averaged as `key` differ in settings (runs carry `config`, `path`)."""
    diff = differing_settings(r.get("config") for r in runs)
    if not diff:
        return []
    shown = "; ".join(f"{k} = {', '.join(map(str, dict.fromkeys(map(str, v))))}" for k, v in list(diff.items())[:show])
    more = f" (+{len(diff) - show} more)" if len(diff) > show else ""
    paths = ", ".join(str(r.get("path")) for r in runs)
    return [f"row {key} averages runs with different settings: {shown}{more} ({paths})"]
