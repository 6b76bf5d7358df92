"""Meta identities Z (MPRD §4.2): M labeled training identities, drawn once from a seed.

Shared by MPRD (GCN training only) and MLCR(+5id) so that the same seed gives the same identities
(Table 2 control: "MLCR(+5id)* and MPRD must use the same 5 IDs").
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def draw_meta_identities(train_pids: Tensor, num_ids: int, seed: int) -> list[int]:
    """`num_ids` identities drawn uniformly (without replacement) among those with ≥ 2 training images.

    Identities with one image cannot give a same-identity pair, so they are never drawn.
    """
    if num_ids < 0:
        raise ValueError(f"meta.num_ids={num_ids}; expected >= 0")
    if num_ids == 0:
        return []
    pids, counts = torch.unique(torch.as_tensor(train_pids), return_counts=True)
    eligible = sorted(int(p) for p in pids[counts >= 2])
    if num_ids > len(eligible):
        raise ValueError(f"meta.num_ids={num_ids} but only {len(eligible)} training identities have >= 2 images")
    rng = np.random.default_rng(seed)
    return sorted(int(p) for p in rng.choice(eligible, size=num_ids, replace=False))


def meta_mask(train_pids: Tensor, meta_ids: list[int]) -> Tensor:
    """Bool mask over training images that belong to a meta identity."""
    pids = torch.as_tensor(train_pids)
    if not meta_ids:
        return torch.zeros(pids.numel(), dtype=torch.bool)
    return torch.isin(pids, torch.tensor(meta_ids, dtype=pids.dtype))
