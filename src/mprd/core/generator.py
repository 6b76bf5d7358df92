"""The pseudo-label generator base class: memory → positive sets P_i, one subclass per Table-1 row.

`refresh` runs once per refresh point on one rank (the caller broadcasts). The hooks below are declared
with no-op defaults, so the CNN module calls them unconditionally: a generator with state (MPRD's GCN)
overrides `state_dict`/`load_state_dict`, one that owns rows (MLCR(+5id)) overrides `override`, and one
that measures itself sets `last_stats` after each refresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from torch import Tensor

from mprd.core.positive_sets import PositiveSets


class PseudoLabelGenerator:
    """Maps the (L2-normalised) memory to positive sets; subclasses implement `refresh`."""

    name: str = "generator"
    #: statistics of the last refresh, logged by the CNN module (read-only empty default)
    last_stats: Mapping[str, float] = MappingProxyType({})

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        """Positive sets for every memory slot (or only `anchors=` where a generator supports it)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume (empty: nothing beyond the memory and P_i)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict`'s output (nothing to restore by default)."""

    def override(self, positives: PositiveSets) -> PositiveSets:
        """Replace rows the generator owns, at every epoch (none by default)."""
        return positives
