"""`method.*` of `conf/method/uga*.yaml` as dataclasses, one per section, checked in one place
(`UGAConfig.validate`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mprd.core.config import DESCRIPTIVE_KEYS, dataclass_from


@dataclass
class StageConfig:
    intra_epochs: int | None = None  # None: half of max_epochs (the paper: 80 of 160)
    inter: bool = True  # false: stop after stage 1 (the "intra" rows of UGA Tables 2, 4 and 5)


@dataclass
class ModelConfig:
    head: str = "embed"  # embed = R+embed (the paper's) | bn = R+BN | none = R (UGA Table 2)
    embed_dim: int = 1024
    dropout: float = 0.5
    classifier_init_std: float = 0.001


@dataclass
class LogitConfig:
    intra: str = "linear"  # stage 1: linear (W^T φ, Eq. 1) | cosine
    inter: str = "cosine"  # stage 2: cosine (s · cos, spec §8.1 default) | raw (c^T φ, Eq. 7 as printed)
    scale: float = 16.0  # s of the cosine logits (docs/decisions-uga.md)


@dataclass
class CVGConfig:
    k: int = 1  # K of the local K-NN sets (Eq. 4); "K is set to 1 in this paper"
    threshold: float = 0.65  # λ (Eq. 5)


@dataclass
class LossConfig:
    self_weight: float = 1.0  # α of the self-camera term (Eq. 8); 0 = "w/o self-cam" (UGA Table 5)
    edge_weighting: str = "cosine"  # cosine = e(·,·) of Eq. 5 (Eq. 8) | uniform = 1 (Eq. 7)


@dataclass
class NoiseConfig:
    """Noisy tracklets (UGA Table 6), applied per camera to the grouping of `tracklets_from_records`."""

    duplication: float = 0.0  # fraction of tracklets split into several pseudo labels (ID duplication)
    duplication_parts: int = 2  # pseudo labels per split tracklet (at most its number of images)
    mislabeling: float = 0.0  # fraction of tracklets merged into another tracklet of the same camera

    @property
    def active(self) -> bool:
        return self.duplication > 0 or self.mislabeling > 0


@dataclass
class VideoConfig:
    """Real tracklets (video datasets): which train tracklets UGA learns from (§4.1)."""

    # one_per_camera = one tracklet per (person, camera) drawn at random, the rest dropped (UGA on MARS; reads
    # identities) | all = every real tracklet its own class in its camera (no identity knowledge at all)
    tracklets: str = "one_per_camera"


@dataclass
class OptimConfig:
    name: str = "adam"
    lr: float = 3.5e-4
    # the network's (backbone and embedding block) lr = lr x this; the classifier keeps lr. 1 = the paper (one lr)
    network_lr_scale: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4  # network (backbone and embedding block)
    classifier_weight_decay: float = 5e-4  # stage-1 classifier weights
    centre_weight_decay: float = 0.0  # stage-2 centres: Eq. 12 updates them by the loss gradient alone
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of each stage (40, 60 of 80)
    gamma: float = 0.1


@dataclass
class UGAConfig:
    stages: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    logits: LogitConfig = field(default_factory=LogitConfig)
    cvg: CVGConfig = field(default_factory=CVGConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    video: VideoConfig = field(default_factory=VideoConfig)

    # keys of method.* that are not UGA settings (read by train.py / reports)
    GENERIC = frozenset({"_target_", *DESCRIPTIVE_KEYS})

    @classmethod
    def from_method(cls, method: Mapping[str, Any]) -> UGAConfig:
        method = dict(method)
        sections = {"stages": StageConfig, "model": ModelConfig, "logits": LogitConfig, "cvg": CVGConfig,
                    "loss": LossConfig, "optim": OptimConfig, "noise": NoiseConfig,
                    "video": VideoConfig}
        unknown = sorted(set(method) - set(sections) - cls.GENERIC)
        if unknown:
            raise ValueError(f"method: unknown key(s) {', '.join(unknown)} for family uga (expected "
                             f"{', '.join(sorted(set(sections) | cls.GENERIC))})")
        config = cls(**{k: dataclass_from(c, method.get(k), f"method.{k}") for k, c in sections.items()})
        config.validate()
        return config

    def validate(self) -> None:
        m, lg, g, ls, o, nz = self.model, self.logits, self.cvg, self.loss, self.optim, self.noise
        checks = [
            (m.head in ("embed", "bn", "none"), f"method.model.head={m.head!r}: expected embed, bn or none"),
            (m.embed_dim >= 1, f"method.model.embed_dim={m.embed_dim}: expected >= 1"),
            (0.0 <= m.dropout < 1.0, f"method.model.dropout={m.dropout}: expected a probability in [0, 1)"),
            (lg.intra in ("linear", "cosine"), f"method.logits.intra={lg.intra!r}: expected linear or cosine"),
            (lg.inter in ("cosine", "raw"), f"method.logits.inter={lg.inter!r}: expected cosine or raw"),
            (lg.scale > 0, f"method.logits.scale={lg.scale}: expected > 0"),
            (g.k >= 1, f"method.cvg.k={g.k}: expected >= 1"),
            (-1.0 <= g.threshold <= 1.0, f"method.cvg.threshold={g.threshold}: expected a cosine in [-1, 1]"),
            (ls.self_weight >= 0, f"method.loss.self_weight={ls.self_weight}: expected >= 0"),
            (ls.edge_weighting in ("cosine", "uniform"),
             f"method.loss.edge_weighting={ls.edge_weighting!r}: expected cosine or uniform"),
            (o.name == "adam", f"method.optim.name={o.name!r}: only adam (UGA §4.2) is implemented"),
            (min(o.weight_decay, o.classifier_weight_decay, o.centre_weight_decay) >= 0,
             "method.optim: weight decays must be >= 0"),
            (o.lr > 0 and 0 < o.gamma <= 1, f"method.optim: need lr > 0 and 0 < gamma <= 1, got {o.lr}, {o.gamma}"),
            (o.network_lr_scale > 0, f"method.optim.network_lr_scale={o.network_lr_scale}: expected > 0"),
            (all(0 < f <= 1 for f in o.milestones),
             f"method.optim.milestones={list(o.milestones)}: expected fractions of a stage's length in (0, 1]"),
            (0.0 <= nz.duplication <= 1.0,
             f"method.noise.duplication={nz.duplication}: expected a fraction of tracklets in [0, 1]"),
            (nz.duplication_parts >= 2, f"method.noise.duplication_parts={nz.duplication_parts}: expected >= 2"),
            (0.0 <= nz.mislabeling < 1.0,
             f"method.noise.mislabeling={nz.mislabeling}: expected a fraction of tracklets in [0, 1) (merging "
             "every tracklet leaves no tracklet to merge into)"),
            (self.video.tracklets in ("one_per_camera", "all"),
             f"method.video.tracklets={self.video.tracklets!r}: expected one_per_camera or all"),
            (self.stages.intra_epochs is None or self.stages.intra_epochs >= 1,
             f"method.stages.intra_epochs={self.stages.intra_epochs}: expected >= 1 or null"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def stage_epochs(self, max_epochs: int) -> tuple[int, int]:
        """(stage-1 epochs, stage-2 epochs) within `max_epochs`; stage 2 is 0 for intra-only runs."""
        intra = self.stages.intra_epochs if self.stages.intra_epochs is not None else max_epochs // 2
        inter = max_epochs - intra if self.stages.inter else 0
        if intra < 1 or intra > max_epochs or (self.stages.inter and inter < 1):
            raise ValueError(f"method.stages.intra_epochs={self.stages.intra_epochs} with max_epochs={max_epochs}: "
                             "need >= 1 epoch for stage 1 and, with stages.inter, >= 1 epoch left for stage 2")
        return intra, inter
