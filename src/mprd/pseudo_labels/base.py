"""The pseudo-label generator protocol and the four generators that need no GCN (Table 1).

Every generator maps the memory to positive sets P_i; KNN, SS, MPLP and MPRD's GCN are then
interchangeable by config. `refresh` runs once per refresh point on one rank; the caller broadcasts.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mprd.neighbors import count_above, knn
from mprd.pseudo_labels.positive_sets import PositiveSets


@runtime_checkable
class PseudoLabelGenerator(Protocol):
    name: str

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        """Positive sets for every memory slot from the (L2-normalised) memory."""
        ...


class SingleGenerator:
    """P_i = {i}: images as their own class (Table 1 "Single", the lower bound)."""

    name = "single"

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        return PositiveSets.singletons(memory.shape[0])


class SuperGenerator:
    """P_i = all training images of i's identity (Table 1 "Super.", the upper bound).

    The only generator that reads training identities; they are handed to it at construction.
    """

    name = "super"

    def __init__(self, labels: Tensor) -> None:
        self.labels = torch.as_tensor(labels).long()

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        if self.labels.numel() != memory.shape[0]:
            raise ValueError(f"super: {self.labels.numel()} labels for {memory.shape[0]} memory slots")
        return PositiveSets.from_labels(self.labels)


class KNNGenerator:
    """P_i = {i} ∪ NN_K(i) in memory space, K = 8 (Table 1 "KNN")."""

    name = "knn"

    def __init__(self, k: int = 8, backend: str = "auto") -> None:
        self.k = k
        self.backend = backend

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        _, idx = knn(memory, memory, self.k, exclude_self=True, backend=self.backend)  # type: ignore[arg-type]
        return PositiveSets.from_neighbors(idx)


class SimilarityGenerator:
    """P_i = {i} ∪ {j : cos(M̃_i, M̃_j) > t}, t = 0.6 (Table 1 "SS").

    Searched as top-`width` neighbours filtered by the threshold, so no N x N matrix is held; the width is
    the largest count above the threshold, so no neighbour above t is cut, unless `max_k` caps it (not in
    the paper; `recipe.k_max`): a fixed t degenerates once a short-schedule network puts most pairs above
    it, and the cap keeps P_i at most the max_k most similar images above t (docs/dynamics.md cause 6).
    """

    name = "ss"

    def __init__(self, threshold: float = 0.6, max_k: int | None = None, backend: str = "auto") -> None:
        if max_k is not None and int(max_k) < 1:
            raise ValueError(f"ss: method.generator.max_k must be null (uncapped) or >= 1, got {max_k}")
        self.threshold = threshold
        self.max_k = None if max_k is None else int(max_k)
        self.backend = backend

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        width = int(count_above(memory, self.threshold).max())
        if self.max_k is not None:
            width = min(width, self.max_k)
        if width == 0:
            return PositiveSets.singletons(memory.shape[0])
        sims, idx = knn(memory, memory, width, exclude_self=True, backend=self.backend)  # type: ignore[arg-type]
        return PositiveSets.from_neighbors(idx, sims > self.threshold)


def build_generator(name: str, *, train_labels: Tensor | None = None, **kwargs: Any) -> PseudoLabelGenerator:
    """Generator by config name; `train_labels` is consumed only by `super`."""
    if name == "single":
        return SingleGenerator()
    if name == "super":
        if train_labels is None:
            raise ValueError("method 'super' needs the training identities (train_labels)")
        return SuperGenerator(train_labels)
    if name == "knn":
        return KNNGenerator(**kwargs)
    if name == "ss":
        return SimilarityGenerator(**kwargs)
    if name == "mplp":
        from mprd.pseudo_labels.mplp import MPLPGenerator

        return MPLPGenerator(**kwargs)
    raise ValueError(f"unknown pseudo-label method {name!r}; expected single, super, knn, ss or mplp")
