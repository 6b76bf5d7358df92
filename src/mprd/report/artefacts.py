"""The one registry of the paper's artefacts: which runs make each table or sweep, its title and default grid.

The Makefile reads its row lists and grids from here (values overridable on the make command line):

    python -m mprd.report.artefacts rows table1              super,knn,ss,mplp,mprd_wo,mprd_nocam,mprd,single
    python -m mprd.report.artefacts rows baselines uga       intra,noself,uga   (the experiments under uga/)
    python -m mprd.report.artefacts experiments table3       table3/mprd,table3/mlcr,sslr/table3,uga/table3
    python -m mprd.report.artefacts values fig4 method.mu    0.1,0.2,...,0.9
    python -m mprd.report.artefacts list                     every artefact, one per line

Each artefact's rows are experiment configs (`conf/experiment/<path>.yaml`); the papers' own numbers live in
`experiments/paper_numbers.yaml` under `tables.<name>` or `sweeps.<name>` (the same name as here).
This module imports the standard library only, so the Makefile can call it before anything is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Artefact:
    """One report: a table (rows in the paper's order) or a sweep (one line per row and swept value)."""

    name: str  # report artefact (`python -m mprd.report <name>`) and key in paper_numbers.yaml
    title: str
    kind: Literal["table", "sweep"]
    experiments: tuple[str, ...] = ()  # conf/experiment/<path>.yaml: the runs `make` launches for it
    extra: tuple[str, ...] = ()  # of those, rows the paper's table lacks (shown after its rows, marked ‡)
    grid: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # swept config key -> default values
    only_datasets: tuple[str, ...] = ()  # without --dataset, a report is written for these datasets only

    @property
    def paper_section(self) -> str:
        """The section of paper_numbers.yaml holding this artefact's numbers (`tables` or `sweeps`)."""
        return "tables" if self.kind == "table" else "sweeps"

    def rows(self, folder: str | None = None) -> list[str]:
        """Names of the experiments under `conf/experiment/<folder>/` (default: the artefact's own folder)."""
        folder = folder or self.name
        return [e.split("/", 1)[1] for e in self.experiments if e.startswith(f"{folder}/")]

    def values(self, key: str) -> tuple[str, ...]:
        """The default grid of one swept config key; KeyError naming the known keys."""
        if key not in self.grid:
            raise KeyError(f"{self.name} sweeps no {key!r}; its keys: {', '.join(self.grid) or 'none'}")
        return self.grid[key]


MU = tuple(f"0.{i}" for i in range(1, 10))
_TABLES = (
    Artefact("table1", "MPRD Table 1: pseudo-label generators (all with the BD loss)", "table",
             tuple(f"table1/{r}" for r in ("super", "knn", "ss", "mplp", "mprd_wo", "mprd_nocam", "mprd", "single"))),
    Artefact("table2", "MPRD Table 2: effect of the meta data", "table",
             tuple(f"table2/{r}" for r in ("mlcr", "mlcr_5id", "mprd_0id", "mprd"))),
    Artefact("table3", "MPRD Table 3: comparison with the state of the art", "table",
             ("table3/mprd", "table3/mlcr", "sslr/table3", "uga/table3"), extra=("uga/table3",)),
    Artefact("table4", "MPRD Table 4: MSMT17", "table", only_datasets=("msmt17",)),  # Table 3 on MSMT17
    Artefact("baselines", "Seed baselines (SSLR, UGA, MLCR) and other runs", "table",
             ("sslr/sslr_baseline", "sslr/sslr_global", "sslr/sslr_cce", "sslr/sslr",
              "uga/intra", "uga/noself", "uga/uga")),
    Artefact("video", "Video re-ID: SSLR Table 2 and UGA Tables 4 and 8 (tracklets)", "table",
             tuple(f"video/{r}" for r in ("sslr_baseline", "sslr", "uga_intra", "uga", "super")),
             extra=("video/sslr_baseline", "video/super"),
             only_datasets=("synthetic_video", "mars", "dukemtmcvideoreid", "prid2011", "ilidsvid")),
)
_MPRD_SWEEPS = (
    Artefact("fig4", "MPRD Figure 4: likelihood threshold μ of the GCN (Eq. 7)", "sweep", ("fig4/mprd",),
             grid={"method.mu": MU}),
    Artefact("sweep-mu", "Sweep of μ (Eq. 7)", "sweep", ("sweep",), grid={"method.mu": MU}),
    Artefact("sweep-k", "Sweep of k (neighbour count)", "sweep", ("sweep",),
             grid={"method.neighbors.min_k": ("4", "8", "16"), "method.neighbors.threshold": ("0.5", "0.6", "0.7")}),
    Artefact("sweep-delta", "Sweep of δ (BD loss, Eq. 2)", "sweep", ("sweep",),
             grid={"method.loss.delta": ("1", "3", "5", "7")}),
    Artefact("sweep-meta-ids", "Sweep of the number of meta identities", "sweep", ("sweep",),
             grid={"method.meta.num_ids": ("0", "1", "3", "5", "10", "20")}),
    # ours, not the paper's: the best any rule that filters the memory's k-NN (KNN, MPLP*, Eq. 7) could do
    Artefact("sweep-ceiling", "Ceiling of a neighbour filter: identity labels within the memory's k-NN (ours)",
             "sweep", ("table1/super_knn",), grid={"method.generator.k": ("8", "16", "32")}),
    # ours: does Eq. 7 use a wider candidate list (the ceiling rises with k) when μ is raised with it?
    Artefact("sweep-kmax", "MPRD's candidate cap k_max with μ (ours)", "sweep", ("sweep",),
             grid={"recipe.k_max": ("16", "32"), "method.mu": ("0.5", "0.7", "0.9")}),
)
_SSLR_SWEEPS = (  # SSLR Fig. 4(b)-(f): one multirun of experiment sslr/sweep per parameter
    Artefact("sweep-sslr-lam", "SSLR Figure 4(b): own-class weight λ of the softened target (Eq. 3)", "sweep",
             ("sslr/sweep",), grid={"method.soft.lam": MU}),
    Artefact("sweep-sslr-k", "SSLR Figure 4(c): number of reliable images k", "sweep", ("sslr/sweep",),
             grid={"method.soft.k": ("1", "2", "3", "4", "5", "6", "8", "10")}),
    Artefact("sweep-sslr-lambda-c", "SSLR Figure 4(d): cross-camera encouragement λ_c (Eq. 6)", "sweep",
             ("sslr/sweep",), grid={"method.similarity.lambda_c": ("0", "0.01", "0.02", "0.03", "0.04", "0.05")}),
    Artefact("sweep-sslr-lambda-p", "SSLR Figure 4(e): part-distance weight λ_p (Eq. 7)", "sweep", ("sslr/sweep",),
             grid={"method.similarity.lambda_p": ("0", *MU, "1.0")}),
    Artefact("sweep-sslr-parts", "SSLR Figure 4(f): number of parts p (Eq. 5)", "sweep", ("sslr/sweep",),
             grid={"method.similarity.parts": tuple(str(p) for p in range(1, 11))}),
)
_UGA_SWEEPS = (  # UGA Tables 3 and 6
    Artefact("sweep-uga-lambda", "UGA Table 3: CVG threshold λ (intra-camera labels)", "sweep", ("uga/uga",),
             grid={"method.cvg.threshold": ("0.55", "0.6", "0.65", "0.7", "0.75")}),
    Artefact("sweep-uga-noise", "UGA Table 6: noisy tracklets, stage 1 (intra-camera labels)", "sweep", ("uga/intra",),
             grid={"method.noise.duplication": ("0.0", "0.2", "0.5", "1.0"),
                   "method.noise.mislabeling": ("0.0", "0.2", "0.5")}),
)
REGISTRY: dict[str, Artefact] = {a.name: a for a in _TABLES + _MPRD_SWEEPS + _SSLR_SWEEPS + _UGA_SWEEPS}

TABLE_ARTEFACTS = tuple(a.name for a in REGISTRY.values() if a.kind == "table")
SWEEP_ARTEFACTS = tuple(a.name for a in REGISTRY.values() if a.kind == "sweep")
ARTEFACTS = TABLE_ARTEFACTS + SWEEP_ARTEFACTS
TITLES = {a.name: a.title for a in REGISTRY.values()}
ONLY_DATASETS = {a.name: a.only_datasets for a in REGISTRY.values() if a.only_datasets}
PARAM_NAMES = {  # display names of the swept parameters (paper_numbers.yaml `sweeps.<name>.param`)
    "mu": "μ", "k": "k", "delta": "δ", "meta_ids": "meta IDs",
    "lam": "λ", "lambda_c": "λ_c", "lambda_p": "λ_p", "parts": "p (parts)",  # SSLR Fig. 4
    "lambda": "λ (CVG threshold)", "rate": "noise rate",  # UGA Tables 3 and 6
}


def get(name: str) -> Artefact:
    """The registered artefact `name`; KeyError listing the known ones."""
    if name not in REGISTRY:
        raise KeyError(f"unknown artefact {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def answer(argv: Sequence[str]) -> str:
    """The CLI's output for `argv` (see the module docstring); KeyError/ValueError on a bad query."""
    match list(argv):
        case ["list"]:
            return "\n".join(REGISTRY)
        case ["rows", name, *folder] if len(folder) <= 1:
            return ",".join(get(name).rows(*folder))
        case ["experiments", name]:
            return ",".join(get(name).experiments)
        case ["values", name, key]:
            return ",".join(get(name).values(key))
    raise ValueError("usage: python -m mprd.report.artefacts list | rows NAME [FOLDER] | experiments NAME | "
                     "values NAME CONFIG_KEY")


def main(argv: Sequence[str] | None = None) -> int:
    """Print one registry answer; exit status 2 with a message on stderr when the query is wrong."""
    try:
        print(answer(sys.argv[1:] if argv is None else argv))
    except (KeyError, ValueError) as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
