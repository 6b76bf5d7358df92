"""Train every `conf/method/*.yaml` on the `tiny` synthetic set (seed 0, 2 epochs; SSLR 3) and write each
run's final metrics to a JSON file: the check that a refactoring changed no number.

    PYTHONPATH=src python benchmarks/tiny_finals.py --out before.json          # on the old commit
    PYTHONPATH=src python benchmarks/tiny_finals.py --out after.json           # on the new one
    python benchmarks/tiny_finals.py --compare before.json after.json          # exact equality per method

Runs on one thread (about 10 minutes for the 17 methods on one core). `--data-root` keeps the generated set
between calls; the run folders are temporary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SSLR = ["max_epochs=3", "method.schedule.stage0_epochs=1", "method.schedule.epochs_per_iteration=1"]
EXTRA = {
    "mlcr": ["method.labels.start_epoch=1"],
    "mlcr_5id": ["method.labels.start_epoch=1"],
    "sslr": SSLR, "sslr_cce": SSLR, "sslr_global": SSLR,
    "sslr_baseline": ["max_epochs=2", "method.schedule.stage0_epochs=2"],
    "uga": ["data.batch_size=12"], "uga_intra": ["data.batch_size=12"],
}


def finals(methods: list[str], data_root: Path) -> dict[str, dict[str, float]]:
    """{method: metrics.json `final`} for each method, trained with this checkout's code and config."""
    import torch
    from hydra import compose, initialize_config_dir

    from mprd.train import run

    torch.set_num_threads(1)
    out = {}
    for method in methods:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[
                f"paths.root_dir={data_root}", "paths.output_dir=unused", "dataset.synthetic.preset=tiny",
                "logger.wandb.enabled=false", "trainer.enable_progress_bar=false",
                "trainer.enable_model_summary=false", "data.test_batch_size=64", f"method={method}",
                "max_epochs=2", "eval_every=1", "seed=0", "data.batch_size=16", *EXTRA.get(method, [])])
        with tempfile.TemporaryDirectory() as tmp:
            out[method] = run(cfg, Path(tmp) / "run")["final"]
        print(method, out[method], flush=True)
    return out


def compare(before: dict, after: dict) -> list[str]:
    """Methods whose finals differ (any key, exact equality) or that only one file has."""
    return sorted(m for m in set(before) | set(after) if before.get(m) != after.get(m))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="JSON file to write")
    parser.add_argument("--methods", nargs="*", help="default: every conf/method/*.yaml")
    parser.add_argument("--data-root", type=Path, help="where the tiny set is generated (default: a temp dir)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        diff = compare(before, after)
        print(f"{len(set(before) | set(after)) - len(diff)} identical; differ: {', '.join(diff) or 'none'}")
        return 1 if diff else 0
    if args.out is None:
        parser.error("--out is required unless --compare is given")
    if args.out.exists():
        parser.error(f"{args.out} exists: choose another name (results are never overwritten)")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    methods = args.methods or sorted(p.stem for p in (REPO / "conf" / "method").glob("*.yaml"))
    with tempfile.TemporaryDirectory() as tmp:
        result = finals(methods, args.data_root or Path(tmp))
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
