"""SSLR §3.1, the baseline (stage 0): instance classification over a non-parametric lookup table V.

The embedding (pool-5 -> FC -> BN, SSLR.md §6.1) is L2-normalised and dropped out by the module before it
meets V; the one-hot loss (Eq. 2) is `softened.softened_cross_entropy` without reliable sets.
"""

from __future__ import annotations

from torch import Tensor, nn


def instance_logits(features: Tensor, table: Tensor, tau: float) -> Tensor:
    """Eq. 1 before the softmax: V_j^T v / tau for every class j; (B, d) x (N, d) -> (B, N)."""
    return features @ table.to(features.dtype).T / tau


class EmbeddingHead(nn.Module):
    """pool-5 -> FC -> BN (SSLR.md §6.1, BUC's embedding); the caller L2-normalises and applies dropout."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        nn.init.kaiming_normal_(self.fc.weight, mode="fan_out")
        nn.init.zeros_(self.fc.bias)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, pool5: Tensor) -> Tensor:
        return self.bn(self.fc(pool5))
