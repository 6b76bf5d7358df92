"""One prepared GPU measurement of MPRD (called by benchmarks/gpu_check.sh; docs/performance.md).

Trains `method=mprd` for a few epochs on a synthetic set (default `market`: 751 ids, ~12.9 k training images,
Market-1501's statistics) with `preset=paper` (ResNet-50, 256x128, batch 32, bf16 autocast) and measures:
- training images/s (the training batches alone, the last epoch: no warm-up);
- the label refresh at an epoch start (kNN + pairs + GCN phase + Eq. 7 on all N·k pairs; `time/refresh_s`)
  and the whole epoch-start work (refresh + the clean memory re-set of the recipe);
- one evaluation (query + gallery features and the metrics);
- the peak GPU memory (torch.cuda.max_memory_allocated);
- the projected wall time of a 40-epoch run: start-up + 40 x (epoch start + training) + evaluations.

    python benchmarks/gpu_check.py --root /tmp/gpu --out results/            # the GPU check
    python benchmarks/gpu_check.py --root /tmp/cpu --out /tmp/o --smoke      # CPU smoke test (tiny, cpu preset)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

REPO = Path(__file__).resolve().parents[1]


class Stopwatch(L.Callback):
    """Wall times of each phase. Callbacks' hooks run before the module's, so the span from
    `on_train_epoch_start` to the first batch holds the module's epoch-start work (refresh, memory re-set)."""

    def __init__(self) -> None:
        self.fit_start = 0.0
        self.first_epoch_start: float | None = None
        self.epochs: list[dict[str, float]] = []
        self.evals: list[float] = []
        self._t: dict[str, float] = {}

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self.fit_start = self._now()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t = {"epoch_start": self._now(), "images": 0.0}
        if self.first_epoch_start is None:
            self.first_epoch_start = self._t["epoch_start"]

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            self._t["first_batch"] = self._now()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._t["images"] += batch["index"].numel() * trainer.world_size
        self._t["last_batch_end"] = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t["eval_start"] = self._now()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evals.append(self._now() - self._t["eval_start"])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        t = self._t
        train_s = t["last_batch_end"] - t["first_batch"]
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("time/")}
        self.epochs.append({
            "epoch": float(trainer.current_epoch),
            "epoch_start_work_s": t["first_batch"] - t["epoch_start"],
            "refresh_s": metrics.get("time/refresh_s", float("nan")),
            "gcn_pairs_s": metrics.get("time/gcn_pairs_s", float("nan")),
            "gcn_train_s": metrics.get("time/gcn_train_s", float("nan")),
            "gcn_infer_s": metrics.get("time/gcn_infer_s", float("nan")),
            "train_s": train_s,
            "images": t["images"],
            "images_per_s": t["images"] / max(train_s, 1e-9),
        })


def compose(root: Path, smoke: bool, extra: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [f"paths.root_dir={root}", "paths.output_dir=unused", "method=mprd", "logger.wandb.enabled=false",
                 "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "eval_initial=false",
                 "diagnostics_every=0", "backbone.pretrained=none"]
    if smoke:
        overrides += ["dataset.synthetic.preset=tiny", "max_epochs=2", "eval_every=2", "data.batch_size=16"]
    else:
        overrides += ["preset=paper", "dataset.synthetic.preset=market", "max_epochs=2", "eval_every=2",
                      "data.num_workers=8"]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides + extra)


def project(watch: Stopwatch, epochs: int = 40, eval_every: int = 5) -> dict[str, float]:
    """40-epoch wall time from the last measured epoch (steady state) and the measured start-up and evaluation."""
    last = watch.epochs[-1]
    startup = (watch.first_epoch_start or watch.fit_start) - watch.fit_start  # memory init pass
    evals = len({*range(eval_every, epochs + 1, eval_every), epochs})
    eval_s = sum(watch.evals) / max(len(watch.evals), 1)
    per_epoch = last["epoch_start_work_s"] + last["train_s"]
    total = startup + epochs * per_epoch + evals * eval_s
    return {"startup_s": startup, "per_epoch_s": per_epoch, "evaluations": float(evals), "eval_s": eval_s,
            "projected_40_epochs_s": total, "projected_40_epochs_h": total / 3600}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="paths.root_dir: the synthetic data is generated under <root>/data")
    ap.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test: tiny set, cpu preset, 2 epochs")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. trainer.precision=16-mixed")
    args = ap.parse_args(argv)
    from mprd.train import run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose(Path(args.root), args.smoke, args.overrides)
    watch = Stopwatch()
    t0 = time.perf_counter()
    record = run(cfg, out / "run", callbacks=[watch])
    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__,
        "precision": str(cfg.trainer.precision),
        "dataset": f"synthetic-{cfg.dataset.synthetic.preset}",
        "train_images": (
            record["dataset_statistics"].get("train_images")
            if isinstance(record.get("dataset_statistics"), dict)
            else None
        ),
        "backbone": cfg.backbone.name,
        "input": f"{cfg.data.height}x{cfg.data.width}",
        "batch_size": int(cfg.data.batch_size),
        "epochs": watch.epochs,
        "evaluations_s": watch.evals,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "projection": project(watch),
        "script_wall_s": time.perf_counter() - t0,
        "final": record.get("final"),
    }
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    (out / "gpu_check.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict[str, Any]) -> str:
    last, p = r["epochs"][-1], r["projection"]
    peak = "n/a" if r["peak_gpu_memory_gib"] is None else f"{r['peak_gpu_memory_gib']:.1f} GiB"
    rows = [
        ("device", r["device"]),
        ("precision", r["precision"]),
        ("data", f"{r['dataset']}, {r['input']}, batch {r['batch_size']}"),
        ("training images/s (last epoch, batches only)", f"{last['images_per_s']:.0f}"),
        ("refresh (time/refresh_s, last epoch)", f"{last['refresh_s']:.2f} s"),
        (
            "  of which GCN pairs / train / infer",
            f"{last['gcn_pairs_s']:.2f} / {last['gcn_train_s']:.2f} / {last['gcn_infer_s']:.2f} s",
        ),
        ("epoch-start work (refresh + clean memory re-set)", f"{last['epoch_start_work_s']:.2f} s"),
        ("evaluation (query + gallery)", f"{p['eval_s']:.2f} s"),
        ("peak GPU memory", peak),
        ("start-up (memory init pass)", f"{p['startup_s']:.1f} s"),
        (
            "projected 40-epoch MPRD wall time",
            f"{p['projected_40_epochs_s'] / 60:.1f} min ({p['evaluations']:.0f} evaluations)",
        ),
    ]
    return "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
