"""Start-up validation of numeric settings: a wrong value fails before anything is built or written,
with one message per bad key naming the key, its value and the allowed range.

`RULES` is the table; a key absent from a run's config (another method's setting) is not checked, and
`null` passes only where a rule allows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

_ABSENT = object()


class SettingsError(ValueError):
    """One or more settings are out of range; the message lists every one of them."""


@dataclass(frozen=True)
class Rule:
    key: str
    low: float = -math.inf
    high: float = math.inf
    integer: bool = False
    low_open: bool = False  # (low, ...: low itself excluded
    high_open: bool = False  # ..., high): high itself excluded
    nullable: bool = False
    why: str = ""

    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.high == math.inf:
            return f"{kind} {'>' if self.low_open else '>='} {_fmt(self.low)}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{kind} in {left}{_fmt(self.low)}, {_fmt(self.high)}{right}"

    def problem(self, value: Any) -> str | None:
        """None when `value` is allowed, else the message."""
        if value is None and self.nullable:
            return None
        ok = _is_number(value) and (not self.integer or float(value).is_integer())
        if ok:
            v = float(value)
            above = v > self.low if self.low_open else v >= self.low
            below = v < self.high if self.high_open else v <= self.high
            ok = above and below
        if ok:
            return None
        extra = " or null" if self.nullable else ""
        why = f" ({self.why})" if self.why else ""
        return f"{self.key}={value!r}: expected {self.allowed()}{extra}{why}"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_INF = math.inf
RULES: tuple[Rule, ...] = (
    # run
    Rule("max_epochs", 1, integer=True),
    Rule("eval_every", 1, integer=True, why="evaluate every N epochs"),
    Rule("seed", 0, 4_000_000, integer=True, why="epoch seeds are seed*1000+epoch, 32-bit"),
    Rule("debug.stop_after_epochs", 1, integer=True, nullable=True),
    Rule("diagnostics_every", 0, integer=True, why="0 = off"),
    Rule("recipe.neg_ratio", 0, 1, low_open=True, why="fraction of the memory used as hard negatives"),
    Rule("recipe.k_max", 1, integer=True),
    # data
    Rule("data.batch_size", 1, integer=True),
    Rule("data.test_batch_size", 1, integer=True),
    Rule("data.num_workers", 0, integer=True),
    Rule("data.height", 1, integer=True),
    Rule("data.width", 1, integer=True),
    Rule("data.video.frames_per_tracklet", 1, integer=True),
    Rule("data.video.train_frames", 1, integer=True, nullable=True, why="null = every frame"),
    Rule("data.video.test_frames", 1, integer=True, nullable=True, why="null = every frame"),
    # CNN optimiser
    Rule("optim.lr_backbone", 0, low_open=True),
    Rule("optim.lr_new", 0, low_open=True),
    Rule("optim.momentum", 0, 1, high_open=True),
    Rule("optim.weight_decay", 0),
    Rule("optim.lr_gamma", 0, 1, low_open=True),
    # memory methods (Table 1/2)
    Rule("method.loss.neg_ratio", 0, 1, low_open=True, why="fraction of the memory used as hard negatives"),
    Rule("method.loss.delta", 0, low_open=True),
    Rule("method.loss.alpha", 0, low_open=True),
    Rule("method.mu", 0, 1, why="threshold on the GCN's likelihood g_ij, Eq. 7"),
    Rule("method.memory.gamma_start", 0, 1),
    Rule("method.memory.gamma_end", 0, 1),
    Rule("method.labels.start_epoch", 0, integer=True),
    Rule("method.labels.refresh_every", 1, integer=True),
    Rule("method.generator.k", 1, integer=True),
    Rule("method.generator.threshold", -1, 1, why="a cosine similarity"),
    Rule("method.neighbors.threshold", -1, 1, why="a cosine similarity"),
    Rule("method.neighbors.min_k", 1, integer=True),
    Rule("method.neighbors.k_max", 1, integer=True),
    Rule("method.meta.num_ids", 0, integer=True),
    Rule("gcn.lr", 0, low_open=True),
    # SSLR
    Rule("method.tau", 0, low_open=True),
    Rule("method.dropout", 0, 1, high_open=True),
    Rule("method.table.momentum", 0, 1),
    Rule("method.soft.lam", 0, 1),
    Rule("method.soft.k", 1, integer=True),
    Rule("method.similarity.lambda_p", 0, 1),
    Rule("method.similarity.parts", 1, integer=True),
    # UGA
    Rule("method.cvg.k", 1, integer=True),
    Rule("method.cvg.threshold", -1, 1, why="a cosine similarity"),
    Rule("method.model.dropout", 0, 1, high_open=True),
    Rule("method.noise.duplication", 0, 1),
    Rule("method.noise.mislabeling", 0, 1, high_open=True),
    Rule("method.optim.lr", 0, low_open=True),
    Rule("method.optim.gamma", 0, 1, low_open=True),
)


def _list_problems(cfg: DictConfig, key: str, low: int) -> list[str]:
    value = OmegaConf.select(cfg, key, default=_ABSENT)
    if value is _ABSENT or value is None:
        return []
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or not all(_is_number(v) and float(v) >= low for v in items):
        return [f"{key}={OmegaConf.to_container(value) if OmegaConf.is_config(value) else value!r}: "
                f"expected a list of numbers >= {low}"]
    return []


def settings_problems(cfg: DictConfig) -> list[str]:
    """Every out-of-range setting of `cfg`, one message each (empty when all are valid)."""
    problems = []
    for rule in RULES:
        try:
            value = OmegaConf.select(cfg, rule.key, default=_ABSENT, throw_on_resolution_failure=True)
        except Exception as err:  # an interpolation that does not resolve
            problems.append(f"{rule.key}: cannot be resolved ({err})")
            continue
        if value is not _ABSENT and (message := rule.problem(value)) is not None:
            problems.append(message)
    problems += _list_problems(cfg, "optim.milestones", 0)
    stop = OmegaConf.select(cfg, "debug.stop_after_epochs", default=None)
    max_epochs = OmegaConf.select(cfg, "max_epochs", default=None)
    if _is_number(stop) and _is_number(max_epochs) and stop > max_epochs:
        problems.append(f"debug.stop_after_epochs={stop}: expected at most max_epochs={max_epochs}")
    problems += _min_k_problems(cfg)
    return problems


def _min_k_problems(cfg: DictConfig) -> list[str]:
    """MPRD's k_i = max(min_k, #{cos > t}) is capped at k_max: a min_k above the cap would silently run as k_max."""
    min_k = OmegaConf.select(cfg, "method.neighbors.min_k", default=None)
    k_max = OmegaConf.select(cfg, "method.neighbors.k_max", default=None)
    if _is_number(min_k) and _is_number(k_max) and min_k > k_max:
        return [f"method.neighbors.min_k={min_k}: expected at most method.neighbors.k_max={k_max} (the cap, "
                f"recipe.k_max of this preset; every k_i would be {k_max}): raise recipe.k_max or lower min_k "
                f"(on the CPU presets the cap is the candidate count: `make sweep-kmax` sweeps it)"]
    return []


def validate_settings(cfg: DictConfig) -> None:
    """Raise `SettingsError` listing every out-of-range setting."""
    problems = settings_problems(cfg)
    if problems:
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems))
