"""Feature memory M (MPRD Eq. 1, inherited from MLCR): one L2-normalised slot per training image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gamma_schedule(epoch: int, max_epochs: int, start: float = 1.0, end: float = 0.5) -> float:
    """γ(t): weight of the **new** feature, linear from `start` at the first epoch to `end` at the last.

    `epoch` is 0-based (MPRD §5.2: γ = 1 at epoch 1 → 0.5 at epoch 40; spec ambiguity 6).
    """
    if max_epochs <= 1:
        return start
    t = min(max(epoch, 0), max_epochs - 1)
    return start + (end - start) * t / (max_epochs - 1)


class FeatureMemory(nn.Module):
    """N x d buffer (saved in checkpoints); written per batch without gradient.

    Under DDP the caller passes all-gathered (indices, features), so every rank applies the same writes
    and the replicas stay identical without a broadcast.
    """

    def __init__(self, num_slots: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(num_slots, dim))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def num_slots(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def initialise(self, features: Tensor) -> None:
        """Fill every slot from a forward pass of the initial network (MPRD spec ambiguity 12)."""
        if features.shape != self.features.shape:
            raise ValueError(f"memory initialise: expected {tuple(self.features.shape)}, got {tuple(features.shape)}")
        self.features.copy_(F.normalize(features.to(self.features), dim=1))
        self.initialised.fill_(True)

    @torch.no_grad()
    def update(self, indices: Tensor, features: Tensor, gamma: float) -> None:
        """Eq. 1: M[i] ← γ·F̃(x_i) + (1 − γ)·M̃[i], then re-normalise.

        Duplicate indices within one write (possible after an all-gather with CamStyle copies) are
        averaged first so the result does not depend on write order.
        """
        indices = indices.to(self.features.device).long()
        new = F.normalize(features.detach().to(self.features), dim=1)
        uniq, inverse = torch.unique(indices, return_inverse=True)
        if uniq.numel() != indices.numel():
            summed = torch.zeros(uniq.numel(), new.shape[1], device=new.device, dtype=new.dtype)
            summed.index_add_(0, inverse, new)
            new = F.normalize(summed, dim=1)
            indices = uniq
        mixed = gamma * new + (1.0 - gamma) * self.features[indices]
        self.features[indices] = F.normalize(mixed, dim=1)
