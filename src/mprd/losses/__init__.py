"""Losses: binomial deviance (MPRD Eqs. 2-3), MMCL (MLCR Eqs. 16-17), pairwise BCE (MPRD Eqs. 6, 10)."""

from mprd.losses.binomial_deviance import binomial_deviance_loss
from mprd.losses.gcn_bce import mixed_gcn_loss, pair_bce
from mprd.losses.mmcl import mmcl_loss

__all__ = ["binomial_deviance_loss", "mixed_gcn_loss", "mmcl_loss", "pair_bce"]
