"""Losses: binomial deviance (MPRD Eqs. 2-3), MMCL (MLCR Eqs. 16-17), pairwise BCE (MPRD Eqs. 6, 10)."""
