"""Aggregation: one report frame per artefact and dataset (our mean ± std over seeds beside the paper's numbers)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mprd.report.artefacts import ARTEFACTS, TABLE_ARTEFACTS
from mprd.report.load import LABEL_KEYS, METRICS, PAPER_METRICS, SHOWN, load_paper
from mprd.runconfig import settings_notes

DELTA_METRICS = ("rank1", "mAP")
ANCHORS = ("single", "super")  # Table 1's lower and upper bounds: the yardsticks of our own numbers
REFERENCE_DATASET = "market1501"  # the paper's reference columns on a dataset it does not use
COLUMNS = (
    ["key", "x", "display", "in_paper", "literature", "uses", "n", "seeds", "presets", "commits"]
    + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    + list(LABEL_KEYS)
    + [f"paper_{m}" for m in PAPER_METRICS]
    + [f"d_{a}_{m}" for a in ANCHORS for m in DELTA_METRICS]
    + ["d_untrained_mAP", "beats_untrained"]
)
UNTRAINED = "untrained"  # the derived row: every run's epoch-0 evaluation of the initial network


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
    return {f"paper_{m}": float(values[m]) if values.get(m) is not None else math.nan for m in PAPER_METRICS}


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
    # a replicate is a (seed, identity split) pair: PRID2011 / iLIDS-VID rows average their splits like seeds
    replicates = pd.Series([(r["seed"], r.get("split")) for r in runs], dtype=object).value_counts()
    for (seed, split), count in replicates[replicates > 1].items():
        paths = ", ".join(str(r["path"]) for r in runs if (r["seed"], r.get("split")) == (seed, split))
        where = f"seed {seed}" if split is None else f"seed {seed} on split {split}"
        notes.append(f"row {key} has {where} {count} times, all averaged ({paths})")
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
        # our columns: the usual four, plus any other metric the paper's table lists (Rank-20 of UGA Table 8)
        "shown": [m for m in PAPER_METRICS if m in SHOWN or m in table.get("metrics", ())],
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
        key = row + (f"[{default['variant']}]" if default.get("variant") else "")  # the other swept keys' defaults
        swept_rows = {k.split("[")[0] for k, _ in points}
        if row in swept_rows and (key, x) not in points:
            plain = [r for r in runs if r["row"] == row and not r["sweep"]]
            if plain:
                points[(key, x)] = plain
                infos.append(f"{param} = {x} point of {key}: its {len(plain)} run(s) without a sweep (the default)")
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
