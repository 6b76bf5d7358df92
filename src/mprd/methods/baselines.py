"""Table 1's simple rows: Single, Super., KNN and SS, each a pseudo-label generator over the memory.

Plus one row of ours, `super_knn` (Super. restricted to the K nearest neighbours): the ceiling of every rule
that only chooses among an image's memory neighbours (KNN, MPRD's Eq. 7), reported after the paper's rows.

The rows share the CNN phase (`mprd.core.cnn_module`); only P_i differs. `conf/method/<row>.yaml` names
its generator with `_target_` and `mprd.core.cnn_module.memory_method` builds the module around it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mprd.core.cnn_module import CNNModule, memory_method
from mprd.core.config import RunContext
from mprd.core.generator import PseudoLabelGenerator
from mprd.core.neighbors import count_above, knn
from mprd.core.positive_sets import PositiveSets


class SingleGenerator(PseudoLabelGenerator):
    """P_i = {i}: images as their own class (Table 1 "Single", the lower bound)."""

    name = "single"

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        return PositiveSets.singletons(memory.shape[0])


class SuperGenerator(PseudoLabelGenerator):
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


class KNNGenerator(PseudoLabelGenerator):
    """P_i = {i} ∪ NN_K(i) in memory space, K = 8 (Table 1 "KNN")."""

    name = "knn"

    def __init__(self, k: int = 8, backend: str = "auto") -> None:
        self.k = k
        self.backend = backend

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        _, idx = knn(memory, memory, self.k, exclude_self=True, backend=self.backend)  # type: ignore[arg-type]
        return PositiveSets.from_neighbors(idx)


class SuperKNNGenerator(PseudoLabelGenerator):
    """P_i = {i} ∪ {j ∈ NN_K(i) : y_j = y_i}: a perfect filter of KNN's candidates (not a paper row).

    What MPRD's GCN would keep if it never erred, so its mAP bounds every method that selects positives
    among the K memory neighbours (MPRD with k_max = K, KNN). Reads the training identities, like Super.
    """

    name = "super_knn"

    def __init__(self, labels: Tensor, k: int = 8, backend: str = "auto") -> None:
        if int(k) < 1:
            raise ValueError(f"super_knn: method.generator.k must be >= 1, got {k}")
        self.labels = torch.as_tensor(labels).long()
        self.k = int(k)
        self.backend = backend

    def refresh(self, memory: Tensor, **context: Any) -> PositiveSets:
        if self.labels.numel() != memory.shape[0]:
            raise ValueError(f"super_knn: {self.labels.numel()} labels for {memory.shape[0]} memory slots")
        _, idx = knn(memory, memory, self.k, exclude_self=True, backend=self.backend)  # type: ignore[arg-type]
        labels = self.labels.to(idx.device)
        return PositiveSets.from_neighbors(idx, labels[idx] == labels.unsqueeze(1))


class SimilarityGenerator(PseudoLabelGenerator):
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


# ---------------------------------------------------------------- the rows' `_target_`s (conf/method/*.yaml)


def single_row(run: RunContext, *, generator: dict[str, Any], labels: dict, memory: dict, loss: dict) -> CNNModule:
    """Table 1 "Single" (`generator` takes no setting)."""
    return memory_method(run, SingleGenerator(**generator), labels=labels, memory=memory, loss=loss)


def super_row(run: RunContext, *, generator: dict[str, Any], labels: dict, memory: dict, loss: dict) -> CNNModule:
    """Table 1 "Super.": the generator receives the training identities."""
    return memory_method(run, SuperGenerator(run.train_pids(), **generator), labels=labels, memory=memory, loss=loss)


def super_knn_row(
    run: RunContext, *, generator: dict[str, Any], labels: dict, memory: dict, loss: dict
) -> CNNModule:
    """Our ceiling row "Super@KNN": the training identities filter the K memory neighbours."""
    gen = SuperKNNGenerator(run.train_pids(), **generator)
    return memory_method(run, gen, labels=labels, memory=memory, loss=loss)


def knn_row(run: RunContext, *, generator: dict[str, Any], labels: dict, memory: dict, loss: dict) -> CNNModule:
    """Table 1 "KNN"."""
    return memory_method(run, KNNGenerator(**generator), labels=labels, memory=memory, loss=loss)


def ss_row(run: RunContext, *, generator: dict[str, Any], labels: dict, memory: dict, loss: dict) -> CNNModule:
    """Table 1 "SS"."""
    return memory_method(run, SimilarityGenerator(**generator), labels=labels, memory=memory, loss=loss)


def build_generator(name: str, *, train_labels: Tensor | None = None, **kwargs: Any) -> PseudoLabelGenerator:
    """A baseline (or MPLP) generator by row name, for scripts and tests; training builds them through the
    method configs' `_target_`s above."""
    if name == "single":
        return SingleGenerator()
    if name == "super":
        if train_labels is None:
            raise ValueError("method 'super' needs the training identities (train_labels)")
        return SuperGenerator(train_labels)
    if name == "super_knn":
        if train_labels is None:
            raise ValueError("method 'super_knn' needs the training identities (train_labels)")
        return SuperKNNGenerator(train_labels, **kwargs)
    if name == "knn":
        return KNNGenerator(**kwargs)
    if name == "ss":
        return SimilarityGenerator(**kwargs)
    if name == "mplp":
        from mprd.methods.mlcr.mplp import MPLPGenerator

        return MPLPGenerator(**kwargs)
    raise ValueError(f"unknown pseudo-label method {name!r}; expected single, super, super_knn, knn, ss or mplp")
