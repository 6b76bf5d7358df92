"""The shared core every method plugs into: memory (Eq. 1), neighbours, evaluation, positive sets, the
pseudo-label generator base class, the ReID LightningModule base and the CNN module of the memory rows."""
