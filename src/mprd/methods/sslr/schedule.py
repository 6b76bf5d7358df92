"""SSLR §4 (Fig. 2): stage 0 for `stage0_epochs`, then S iterations of `epochs_per_iteration` epochs each,
and the per-epoch learning-rate factor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mprd.methods.sslr.config import ScheduleConfig


@dataclass(frozen=True)
class Schedule:
    """Stage 0 = epochs [0, stage0); iteration s >= 1 = epochs [stage0 + (s-1) e, stage0 + s e)."""

    stage0: int
    per_iteration: int
    iterations: int

    @classmethod
    def resolve(cls, cfg: ScheduleConfig, max_epochs: int) -> Schedule:
        """Check the schedule against `max_epochs` (= stage0 + S x epochs_per_iteration); S may be derived."""
        stage0, per = int(cfg.stage0_epochs), int(cfg.epochs_per_iteration)
        if stage0 < 0 or per < 1:
            raise ValueError(
                f"method.schedule: stage0_epochs={stage0} must be >= 0 and epochs_per_iteration={per} >= 1"
            )
        rest = max_epochs - stage0
        if cfg.iterations is None:
            if rest < 0 or rest % per:
                raise ValueError(
                    f"max_epochs={max_epochs} does not fit the SSLR schedule: it must be method.schedule."
                    f"stage0_epochs ({stage0}) + S x epochs_per_iteration ({per}); e.g. max_epochs={stage0 + 16 * per}"
                    " for S = 16, or set method.schedule.stage0_epochs"
                )
            return cls(stage0, per, rest // per)
        total = stage0 + int(cfg.iterations) * per
        if int(cfg.iterations) < 0 or total != max_epochs:
            raise ValueError(
                f"method.schedule.iterations={cfg.iterations} with stage0_epochs={stage0} and epochs_per_iteration="
                f"{per} needs max_epochs={total}, but max_epochs={max_epochs}"
            )
        return cls(stage0, per, int(cfg.iterations))

    @property
    def total_epochs(self) -> int:
        return self.stage0 + self.iterations * self.per_iteration

    def iteration_of(self, epoch: int) -> int:
        """0 during stage 0, else the iteration s >= 1 that 0-based `epoch` belongs to."""
        return 0 if epoch < self.stage0 else (epoch - self.stage0) // self.per_iteration + 1

    def ends_iteration(self, epoch: int) -> bool:
        """Whether 0-based `epoch` is the last epoch of stage 0 or of an iteration."""
        if epoch < self.stage0:
            return epoch == self.stage0 - 1
        return (epoch - self.stage0 + 1) % self.per_iteration == 0


def lr_factor_fn(stage0: int, milestones: list[int], gamma: float, iteration_scale: float) -> Callable[[int], float]:
    """Per-epoch lr factor: stage 0 steps by `gamma` at each milestone (paper: 0.1 -> 0.01 after 15
    epochs); every iteration epoch uses the constant `iteration_scale` (spec §6.1: lr 0.01)."""
    marks = sorted(int(m) for m in milestones)

    def factor(epoch: int) -> float:
        if epoch >= stage0:
            return iteration_scale
        return gamma ** sum(1 for m in marks if m <= epoch)

    return factor
