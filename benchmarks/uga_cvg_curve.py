"""UGA Fig. 4: precision and recall of the cross-view graph's edges as λ goes from 0.1 to 0.9, with and without
the mutual-NN (symmetry) constraint of Eq. 4, from one trained model. Diagnostic only: the hidden identities
score the edges and feed nothing back.

    # a finished run (its .hydra/config.yaml and checkpoints/last.ckpt), e.g. the stage-1 model:
    .venv/bin/python benchmarks/uga_cvg_curve.py --run experiments/results/runs/uga-synthetic/uga_intra-seed0
    # no checkpoint: the initial (ImageNet) network of a composed config (Hydra overrides as arguments)
    .venv/bin/python benchmarks/uga_cvg_curve.py experiment=uga/intra dataset.synthetic.preset=tiny

Tracklet centres are Eq. 3 (means of the embedding over each tracklet's images, eval mode, test transform)
over the clean tracklets (the run's noise options, UGA Table 6, are not applied). Writes
`<out>/<name>.csv` (mutual, lambda, edges, precision, recall) and `<out>/<name>.png`.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

CONF = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_LAMBDAS = tuple(round(0.1 + 0.05 * i, 2) for i in range(17))  # 0.1, 0.15, ..., 0.9
PAPER_LAMBDA = 0.65


def load_config(run: Path | None, overrides: Sequence[str]) -> Any:
    """The run's stored config (`<run>/.hydra/config.yaml`), else the suite's config composed with `overrides`."""
    from omegaconf import OmegaConf

    if run is not None:
        stored = run / ".hydra" / "config.yaml"
        if not stored.is_file():
            raise ValueError(f"--run {run}: no .hydra/config.yaml (not a run folder of mprd.train)")
        cfg = OmegaConf.load(stored)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    else:
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="train", overrides=["experiment=uga/intra", *overrides])
    if cfg.method.get("family") != "uga":
        raise ValueError(f"method.family={cfg.method.get('family')!r}: the CVG curve needs a UGA config")
    return cfg


def tracklet_centres_of(cfg: Any, checkpoint: Path | None, device: str) -> tuple[torch.Tensor, ...]:
    """(centres (M, D), branch per tracklet, hidden pid per tracklet) of the clean tracklets under the network
    of `checkpoint` (None: the initial network, seeded by the config's seed)."""
    import lightning as L
    from omegaconf import OmegaConf

    from mprd.core.backbone import build_backbone
    from mprd.methods.uga.config import UGAConfig
    from mprd.methods.uga.inter_camera import tracklet_centres
    from mprd.methods.uga.model import UGAEncoder, embed_images
    from mprd.methods.uga.tracklets import tracklet_pids, tracklets_from_records
    from mprd.train import build_datamodule

    L.seed_everything(int(cfg.seed), verbose=False)
    config = UGAConfig.from_method(OmegaConf.to_container(cfg.method, resolve=True))
    backbone = build_backbone(cfg.backbone.name, pretrained=str(cfg.backbone.pretrained),
                              test_feature=cfg.backbone.test_feature,
                              freeze_bn=bool(cfg.backbone.get("freeze_bn", False)))
    encoder = UGAEncoder(backbone, config.model.head, config.model.embed_dim, config.model.dropout)
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
        encoder.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")})
    encoder.to(device)
    datamodule = build_datamodule(cfg, backbone.mean, backbone.std)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if getattr(datamodule, "is_video", False):
        raise SystemExit(f"uga_cvg_curve.py: {cfg.dataset.name} is a video dataset; the curve is wired for images only")
    records = datamodule.data.train
    tracklet, camera = tracklets_from_records(records, seed=int(cfg.seed))
    feats = embed_images(encoder, datamodule.feature_dataloader("train"), len(records), device).cpu()
    _, branch = torch.unique(camera, sorted=True, return_inverse=True)
    return tracklet_centres(feats, tracklet, camera.numel()), branch, tracklet_pids(records, tracklet)


def render_png(rows: Sequence[dict[str, Any]], title: str) -> bytes:
    """Precision (blue) and recall (orange) vs λ; solid = mutual NN (Eq. 4), dashed = without it (a λ without
    edges has no precision point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for mutual, style, name in ((True, "-", "mutual"), (False, "--", "no mutual")):
        part = [r for r in rows if r["mutual"] == mutual]
        lams = [r["lambda"] for r in part]
        ax.plot(lams, [r["precision"] for r in part], style, marker="o", color="tab:blue", label=f"precision ({name})")
        ax.plot(lams, [r["recall"] for r in part], style, marker="s", color="tab:orange", label=f"recall ({name})")
    ax.axvline(PAPER_LAMBDA, color="k", linestyle=":", linewidth=1, label=f"paper's λ ({PAPER_LAMBDA})")
    ax.set_xlabel("λ (cosine threshold of Eq. 5)")
    ax.set_ylabel("CVG edges: precision / recall")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"  # precision without edges is undefined: an empty cell


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["mutual,lambda,edges,precision,recall"]
    lines += [f"{str(r['mutual']).lower()},{r['lambda']:g},{r['edges']},{_fmt(r['precision'])},{_fmt(r['recall'])}"
              for r in rows]
    return "\n".join(lines) + "\n"


def parse_lambdas(text: str | None) -> tuple[float, ...]:
    if not text:
        return DEFAULT_LAMBDAS
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--lambdas {text!r}: expected comma-separated numbers") from err
    if not all(-1.0 <= v <= 1.0 for v in values):
        raise ValueError(f"--lambdas {text!r}: thresholds are cosines in [-1, 1]")
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value); without --run, Hydra overrides")
    parser.add_argument("--run", type=Path, help="run folder: its config and checkpoints/last.ckpt")
    parser.add_argument("--ckpt", type=Path,
                        help="checkpoint (default: <run>/checkpoints/last.ckpt; none without --run)")
    parser.add_argument("--initial", action="store_true", help="with --run: ignore its checkpoint (initial network)")
    parser.add_argument("--lambdas", help="comma-separated λ values (default 0.1, 0.15, ..., 0.9)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--name", help="output stem (default uga-cvg-curve-<dataset>-<run folder or 'initial'>)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        lambdas = parse_lambdas(args.lambdas)
        cfg = load_config(args.run, args.overrides)
        ckpt = args.ckpt or (args.run / "checkpoints" / "last.ckpt" if args.run and not args.initial else None)
        if ckpt is not None and not ckpt.is_file():
            raise ValueError(f"checkpoint {ckpt} not found (pass --initial for the initial network)")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from mprd.methods.uga.cvg import cvg_curve
    from mprd.report import write_output

    centres, branch, pids = tracklet_centres_of(cfg, ckpt, args.device)
    rows = cvg_curve(centres, branch, pids, lambdas, k=int(cfg.method.cvg.k))
    source = "initial" if ckpt is None else (args.run.name if args.run is not None else ckpt.parent.parent.name)
    name = args.name or f"uga-cvg-curve-{cfg.dataset.name}-{source}"
    title = (f"UGA Fig. 4 — CVG edges vs λ, {cfg.dataset.name}, {source} "
             f"({centres.shape[0]} tracklets, {int(branch.max()) + 1} cameras, K = {int(cfg.method.cvg.k)})")
    print(write_output(args.out / f"{name}.csv", to_csv(rows).encode()))
    print(write_output(args.out / f"{name}.png", render_png(rows, title)))
    for r in rows:
        if abs(r["lambda"] - PAPER_LAMBDA) < 1e-9:
            print(f"λ = {PAPER_LAMBDA}, mutual={r['mutual']}: {r['edges']} edges, precision {r['precision']:.3f}, "
                  f"recall {r['recall']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
