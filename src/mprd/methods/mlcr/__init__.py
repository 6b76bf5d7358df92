"""MLCR (CVPR 2020): MPLP (mplp, the pseudo labels) and MMCL (mmcl, the loss)."""
