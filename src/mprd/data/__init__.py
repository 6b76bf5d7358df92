"""Datasets, the synthetic benchmark, transforms and the Lightning data module."""
