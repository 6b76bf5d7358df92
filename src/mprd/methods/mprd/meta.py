"""Meta identities Z (MPRD §4.2): M labeled training identities, drawn once from a seed.

Shared by MPRD (GCN training only) and MLCR(+5id) so that the same seed gives the same identities
(Table 2 control: "MLCR(+5id)* and MPRD must use the same 5 IDs").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from mprd.core.generator import PseudoLabelGenerator
from mprd.core.positive_sets import PositiveSets


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


class MetaGroundTruth(PseudoLabelGenerator):
    """Wraps a generator: rows of meta images get their ground-truth positives (MLCR(+5id), Table 2).

    "whenever the input training data belong to the labeled meta dataset, the pseudo labels are replaced
    by ground-truth labels" — applied at every refresh and during the single-label warm-up alike.
    """

    def __init__(self, base: PseudoLabelGenerator, train_pids: Tensor, num_ids: int, seed: int) -> None:
        self.base = base
        self.name = f"{base.name}+{num_ids}id"
        self._pids = torch.as_tensor(train_pids).long()
        self.meta_ids = draw_meta_identities(self._pids, num_ids, seed)
        self._truth = PositiveSets.from_labels(self._pids)
        self._rows = torch.nonzero(meta_mask(self._pids, self.meta_ids)).flatten()

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        return self.base.refresh(memory, **context)

    def override(self, positives: PositiveSets) -> PositiveSets:
        """Replace the rows of meta images by the same-identity sets; keep every other row."""
        if self._rows.numel() == 0:
            return positives
        num = len(positives)
        keep_rows = ~torch.isin(torch.arange(num), self._rows)
        b_all, j_all = positives.batch_pairs(torch.arange(num))
        keep = keep_rows[b_all]
        b_meta, j_meta = self._truth.batch_pairs(self._rows)
        rows = torch.cat([b_all[keep], self._rows[b_meta]])
        cols = torch.cat([j_all[keep], j_meta])
        return PositiveSets.from_mask_rows(rows, cols, num)

    # the wrapped generator's state and statistics are this generator's
    @property
    def last_stats(self) -> Any:  # type: ignore[override]
        return self.base.last_stats

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state: Any) -> None:
        self.base.load_state_dict(state)
