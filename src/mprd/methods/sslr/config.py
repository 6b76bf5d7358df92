"""`method.*` of `conf/method/sslr*.yaml` as dataclasses, one per section, and the mapper that rejects
unknown keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig, OmegaConf

from mprd.core.config import DESCRIPTIVE_KEYS, unknown_keys

PART_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class TableConfig:
    init: str = "forward"  # forward = embeddings of the initial network | zeros (BUC)
    momentum: float = 0.5  # V_y <- normalise(momentum V_y + (1 - momentum) v)
    write: str = "dropped"  # dropped = the Eq. 1 input after dropout (BUC) | clean = before dropout

    def __post_init__(self) -> None:
        if self.init not in ("forward", "zeros"):
            raise ValueError(f"method.table.init={self.init!r}; expected 'forward' or 'zeros'")
        if self.write not in ("dropped", "clean"):
            raise ValueError(f"method.table.write={self.write!r}; expected 'dropped' or 'clean'")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"method.table.momentum={self.momentum}; expected a value in [0, 1)")


@dataclass
class ScheduleConfig:
    stage0_epochs: int = 25
    epochs_per_iteration: int = 2
    iterations: int | None = None  # None: (max_epochs - stage0_epochs) / epochs_per_iteration
    iteration_lr_scale: float = 0.1  # iteration lr = base lr x this (0.01 on the new layers)
    eval_at_iteration_ends: bool = True


@dataclass
class SoftConfig:
    lam: float = 0.6  # lambda of Eq. 3
    k: int = 4  # reliable set size

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"method.soft.lam={self.lam}; expected lambda in [0, 1] (Eq. 3)")
        if self.k < 1:
            raise ValueError(f"method.soft.k={self.k}; expected k >= 1 reliable images")


@dataclass
class SimilarityConfig:
    lambda_p: float = 0.5  # Eq. 7 weight of the part distance
    lambda_c: float = 0.02  # Eq. 6 CCE strength
    parts: int = 8  # p horizontal stripes
    block_rows: int | None = None  # rows of D per block (None: ~256 MB per buffer)
    part_dtype: str = "float32"  # storage of the N x p x C part features: float32 | float16 (half the memory)

    def __post_init__(self) -> None:
        if not 0.0 <= self.lambda_p <= 1.0:
            raise ValueError(f"method.similarity.lambda_p={self.lambda_p}; expected a value in [0, 1] (Eq. 7)")
        if self.lambda_c < 0:
            raise ValueError(f"method.similarity.lambda_c={self.lambda_c}; expected >= 0 (Eq. 6)")
        if self.parts < 1:
            raise ValueError(f"method.similarity.parts={self.parts}; expected >= 1")
        if self.block_rows is not None and self.block_rows < 1:
            raise ValueError(f"method.similarity.block_rows={self.block_rows}; expected >= 1 or null")
        if self.part_dtype not in PART_DTYPES:
            raise ValueError(f"method.similarity.part_dtype={self.part_dtype!r}; expected one of {sorted(PART_DTYPES)}")


@dataclass
class SSLRConfig:
    tau: float = 0.1
    dropout: float = 0.5
    head: str = "fc_bn"  # fc_bn: pool-5 -> FC -> BN (spec §6.1) | bn: the backbone's appended BN only
    embed_dim: int | None = None  # FC width (None: the pool-5 width)
    table: TableConfig = field(default_factory=TableConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    soft: SoftConfig = field(default_factory=SoftConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def __post_init__(self) -> None:
        for name, cls in (("table", TableConfig), ("schedule", ScheduleConfig), ("soft", SoftConfig),
                          ("similarity", SimilarityConfig)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))
        if self.tau <= 0:
            raise ValueError(f"method.tau={self.tau}; expected a positive temperature (Eq. 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"method.dropout={self.dropout}; expected a rate in [0, 1)")
        if self.head not in ("fc_bn", "bn"):
            raise ValueError(f"method.head={self.head!r}; expected 'fc_bn' or 'bn'")
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"method.embed_dim={self.embed_dim}; expected a positive width or null")


_SECTIONS = {"table": TableConfig, "schedule": ScheduleConfig, "soft": SoftConfig, "similarity": SimilarityConfig}
_IGNORED = ("_target_", *DESCRIPTIVE_KEYS)  # read by mprd.train, not by the module


def config_from_method(method: DictConfig | dict) -> SSLRConfig:
    """`cfg.method` -> SSLRConfig; an unknown key is a ValueError naming it (a typo must not be ignored)."""
    raw = OmegaConf.to_container(method, resolve=True) if isinstance(method, DictConfig) else dict(method)
    assert isinstance(raw, dict)
    raw = {k: v for k, v in raw.items() if k not in _IGNORED}
    allowed = {f for f in SSLRConfig.__dataclass_fields__}
    unknown = sorted(set(raw) - allowed)
    for name, cls in _SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"method.{name}: expected a mapping, got {section!r}")
        unknown += unknown_keys(cls, section, prefix=f"{name}.")
    if unknown:
        raise ValueError(f"method (sslr): unknown key(s) {', '.join(unknown)}; see conf/method/sslr.yaml")
    for name, cls in _SECTIONS.items():
        raw[name] = cls(**(raw.get(name) or {}))
    return SSLRConfig(**raw)
