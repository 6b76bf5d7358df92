"""SSLR §3.2, softened similarity learning: the softened target (Eq. 3) and its cross-entropy (Eqs. 2, 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def softened_target(index: Tensor, reliable: Tensor | None, num_classes: int, lam: float) -> Tensor:
    """Eq. 3 as a dense (B, N) distribution (reference / inspection; the loss never builds it)."""
    target = torch.zeros(index.numel(), num_classes)
    rows = torch.arange(index.numel())
    if reliable is None or reliable.shape[1] == 0:
        target[rows, index.long()] = 1.0
        return target
    k = reliable.shape[1]
    target[rows.unsqueeze(1).expand(-1, k), reliable.long()] = (1.0 - lam) / k
    target[rows, index.long()] = lam
    return target


def softened_cross_entropy(logits: Tensor, index: Tensor, reliable: Tensor | None, lam: float) -> Tensor:
    """Eq. 4 averaged over the batch (Eq. 2 with the per-sample target t_i of Eq. 3).

    -lam log p(y_i | x_i) - (1 - lam) / k sum_j log p(y_i^j | x_i); `reliable` (B, k) holds the classes of
    the reliable images of each sample. `reliable=None` (or k = 0) is the one-hot baseline target.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    own = log_p.gather(1, index.view(-1, 1).long()).squeeze(1)
    if reliable is None or reliable.shape[1] == 0:
        return -own.mean()
    soft = log_p.gather(1, reliable.long()).mean(dim=1)  # (1/k) sum_j log p(y_i^j | x_i)
    return -(lam * own + (1.0 - lam) * soft).mean()
