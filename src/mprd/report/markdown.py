"""Markdown and CSV renderings of a report frame (header, honest note, table, ordering or shape, legend)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mprd.report.aggregation import DELTA_METRICS
from mprd.report.artefacts import PARAM_NAMES, TITLES
from mprd.report.load import METRIC_NAMES, SHOWN, Skipped

USES_HEADER = "Uses besides images"


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
    shown = a.get("shown", SHOWN)
    cols += [(METRIC_NAMES[m], lambda r, m=m: _fmt(r[f"{m}_mean"], r[f"{m}_std"])) for m in shown]
    if ref is not None and (a["kind"] == "table" or df[[f"paper_{m}" for m in shown]].notna().any().any()):
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
            lines.append("  - Paper, same rows: " + " > ".join(_cell(d) for d in paper_order) + tau_text)
    lines += _gap_closed(df) + _gap_closed(df, "super_knn") + _ceiling_share(df)
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
    name = _cell(by_key.loc[row, "display"])
    return [f"- {name} closes {100 * ours:.0f} % of our Single → Super. mAP gap{paper_text}."]


def _ceiling_share(df: pd.DataFrame, row: str = "mprd", floor: str = "knn", ceiling: str = "super_knn") -> list[str]:
    """MPRD's place between KNN (keeps all k candidates) and super_knn (keeps exactly the right ones): every rule
    that filters the memory's k-NN, Eq. 7 included, lies below that ceiling (docs/dynamics.md)."""
    by_key = df.set_index("key")
    keys = [row, floor, ceiling]
    if not set(keys) <= set(by_key.index) or not (by_key.loc[keys, "n"] > 0).all():
        return []
    x, lo, hi = (by_key.loc[k, "mAP_mean"] for k in keys)
    if hi == lo:
        return []
    names = [_cell(by_key.loc[k, "display"]) for k in keys]
    return [f"- {names[0]} goes {100 * (x - lo) / (hi - lo):.0f} % of the way from {names[1]} to {names[2]} "
            f"(the same candidates filtered with the identity labels) in mAP."]


def _shape(df: pd.DataFrame) -> list[str]:
    """Per swept row: where Rank-1 and mAP peak (Figure 4's claim is a peak near μ = 0.5)."""
    lines = []
    name = PARAM_NAMES.get(df.attrs["param"], df.attrs["param"])
    for _, group in df[df["n"] > 0].groupby("key", sort=True):
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
