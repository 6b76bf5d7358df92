"""Pseudo-label generators: one per Table-1 row (single, super, knn, ss, mplp, mprd's GCN, Eq. 7)."""

from mprd.pseudo_labels.base import PseudoLabelGenerator, build_generator
from mprd.pseudo_labels.positive_sets import PositiveSets

__all__ = ["PositiveSets", "PseudoLabelGenerator", "build_generator"]
