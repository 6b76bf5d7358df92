"""Seed baselines with their own LightningModules (`method.family`): `mprd.methods.<family>.build_module`."""
