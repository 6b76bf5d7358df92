"""MPRD: Meta Pairwise Relationship Distillation for unsupervised person re-ID, and its baselines."""

__version__ = "0.1.0"
