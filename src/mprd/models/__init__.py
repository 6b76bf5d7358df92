"""Backbones, the CNN and GCN LightningModules."""
