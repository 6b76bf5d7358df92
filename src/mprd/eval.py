"""Evaluate a trained model: `python -m mprd.eval ckpt=PATH [dataset=... dataset.root=...]` (Hydra).

Loads a run's `last.ckpt` or an exported backbone `.pth` (`mprd.inference`), extracts query and gallery
features with the test options (`test.feature`, `test.flip`, `test.metric`), evaluates (Rank-1/5/10, mAP,
mINP; `mprd.core.evaluation`) and, with `rerank=true`, also after k-reciprocal re-ranking (`mprd.rerank`).
Writes `metrics.json` into its own run folder (`logs/eval/runs/eval-<dataset>/<timestamp>/`) and prints
the numbers. The training run's folder is never written to.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from mprd.core.evaluation import ReIDMetrics, evaluate
from mprd.inference import LoadedModel, extract_loader, load_model, pick_device
from mprd.rerank import RerankParams

log = logging.getLogger("mprd.eval")
KEYS = ("rank1", "rank5", "rank10", "mAP", "mINP")


def build_eval_datamodule(cfg: DictConfig, model: LoadedModel):
    """The training data module (`mprd.train.build_datamodule`) at the model's input size, set up for testing."""
    from mprd.train import build_datamodule

    cfg = OmegaConf.merge(cfg, {"data": {"height": model.height, "width": model.width}})
    datamodule = build_datamodule(cfg, model.mean, model.std)
    if getattr(datamodule, "is_video", False):
        raise ValueError(f"dataset={cfg.dataset.name} is a video dataset: evaluating a saved model on tracklets is "
                         "not wired into mprd.eval/mprd.visualize yet; mprd.train writes the tracklet-level metrics")
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def split_ids(records) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([r.pid for r in records]), torch.tensor([r.camid for r in records])


def query_gallery_features(cfg: DictConfig, model: LoadedModel, datamodule) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, gallery) L2-normalised test features in record order."""
    device = pick_device(cfg.get("device"))
    flip = bool(cfg.test.flip)
    feats = []
    for split in ("query", "gallery"):
        n = len(getattr(datamodule.data, split))
        feats.append(extract_loader(model.backbone, datamodule.feature_dataloader(split), n, device, flip))
    return feats[0], feats[1]


def rerank_params(cfg: DictConfig) -> RerankParams:
    opts = OmegaConf.to_container(cfg.rerank_options, resolve=True) if cfg.get("rerank_options") else {}
    unknown = sorted(set(opts) - {"k1", "k2", "lambda_value"})
    if unknown:
        raise ValueError(f"rerank_options: unknown key(s) {unknown} (expected k1, k2, lambda_value)")
    return RerankParams(**opts)


def check_test_options(cfg: DictConfig) -> None:
    metric = cfg.test.metric
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"test.metric={metric!r}: expected 'cosine' or 'euclidean'")


def metrics_record(m: ReIDMetrics, seconds: float) -> dict[str, Any]:
    out = {k: v for k, v in m.as_dict(percent=True).items() if k in KEYS}
    return {**out, "num_valid": m.num_valid, "num_skipped": m.num_skipped, "seconds": seconds}


def run(cfg: DictConfig, output_dir: str | Path) -> dict[str, Any]:
    """Evaluate `cfg.ckpt` on `cfg.dataset`; returns (and writes) the record."""
    from mprd.train import git_commit

    check_test_options(cfg)
    params = rerank_params(cfg) if cfg.get("rerank") else None
    model = load_model(cfg)
    datamodule = build_eval_datamodule(cfg, model)
    data = datamodule.data
    t0 = time.perf_counter()
    qf, gf = query_gallery_features(cfg, model, datamodule)
    t_feat = time.perf_counter() - t0
    qp, qc = split_ids(data.query)
    gp, gc = split_ids(data.gallery)
    t0 = time.perf_counter()
    plain = evaluate(qf, gf, qp, qc, gp, gc, metric=cfg.test.metric)
    record: dict[str, Any] = {
        "ckpt": str(Path(str(cfg.ckpt)).resolve()),
        "source": model.source,
        "dataset": data.name,
        "dataset_root": data.root,
        "backbone": model.backbone.name,
        "input_size": [model.height, model.width],
        "test": {"feature": model.backbone.test_feature, "flip": bool(cfg.test.flip), "metric": cfg.test.metric},
        "final": metrics_record(plain, time.perf_counter() - t0),
        "rerank": None,
        "feature_seconds": t_feat,
        "dataset_statistics": data.statistics(),
        "commit": git_commit(),
    }
    if params is not None:
        t0 = time.perf_counter()
        reranked = evaluate(qf, gf, qp, qc, gp, gc, metric=cfg.test.metric, rerank=params)
        record["rerank"] = {"k1": params.k1, "k2": params.k2, "lambda_value": params.lambda_value,
                            **metrics_record(reranked, time.perf_counter() - t0)}
    write_new(Path(output_dir) / "metrics.json", json.dumps(record, indent=2))
    print(summary_table(record))
    return record


def write_new(path: Path, text: str) -> None:
    """Write `path`; an existing file is kept under a timestamped name first (never overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        keep = path.with_name(f"{path.stem}.{int(path.stat().st_mtime)}{path.suffix}")
        path.rename(keep)
        log.warning("kept the earlier %s as %s", path.name, keep)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def summary_table(record: dict[str, Any]) -> str:
    rows = [("plain", record["final"])] + ([("re-ranked", record["rerank"])] if record["rerank"] else [])
    head = f"{'':10s}" + "".join(f"{k:>9s}" for k in KEYS)
    lines = [f"{record['dataset']} ({record['test']['feature']}, flip={record['test']['flip']}, "
             f"{record['test']['metric']}): {record['ckpt']}", head]
    lines += [f"{name:10s}" + "".join(f"{m[k]:9.2f}" for k in KEYS) for name, m in rows]
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path="../../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    record = run(cfg, Path(cfg.paths.output_dir))
    return float(record["final"]["mAP"])


if __name__ == "__main__":
    main()
