"""The GCN G of MPRD as a LightningModule: Eq. 5 network, Eq. 6 BCE with Eq. 10 meta weighting, SGD (§5.2).

Its phase of Algorithm 1 is driven by the alternating loop (`mprd.loop`), which calls `training_step`
with the optimiser from `configure_optimizers`; this keeps one checkpoint holding both networks.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor

from mprd.losses.gcn_bce import mixed_gcn_loss
from mprd.models.gcn import PairGCN
from mprd.structures import PairStructures


@dataclass
class GCNBatch:
    """One GCN mini-batch: structures, their labels (1 = same identity), anchors, meta flags, η."""

    structures: PairStructures
    labels: Tensor  # (P,) float
    anchor: Tensor  # (P,) long
    is_meta: Tensor  # (P,) bool
    eta: float


class GCNModule(L.LightningModule):
    def __init__(
        self,
        feat_dim: int,
        num_labels: int,
        hidden: tuple[int, ...] = (256, 256),
        agg_channels: int = 128,
        mlp_hidden: int = 128,
        dropout: float = 0.0,
        optimizer: str = "sgd",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__()
        self.net = PairGCN(
            feat_dim=feat_dim,
            num_labels=num_labels,
            hidden=tuple(hidden),
            agg_channels=agg_channels,
            mlp_hidden=mlp_hidden,
            dropout=dropout,
        )
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"gcn.optimizer={optimizer!r}; expected 'sgd' or 'adam'")
        self.optimizer_name = optimizer
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def training_step(self, batch: GCNBatch, features: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Loss of one batch (Eq. 10: L^u + η L^m) and its statistics; `features` = node feature table."""
        logits = self.net(batch.structures, features=features)
        total, loss_u, loss_m = mixed_gcn_loss(logits, batch.labels, batch.anchor, batch.is_meta, batch.eta)
        correct = ((logits > 0).float() == batch.labels).float()
        stats = {
            "loss": float(total.detach()),
            "loss_u": float(loss_u.detach()),
            "loss_m": float(loss_m.detach()),
            "acc": float(correct.mean()),
            "acc_u": float(correct[~batch.is_meta].mean()) if (~batch.is_meta).any() else float("nan"),
            "acc_m": float(correct[batch.is_meta].mean()) if batch.is_meta.any() else float("nan"),
            "eta": float(batch.eta),
            "structures": float(len(batch.labels)),
        }
        return total, stats

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(self.net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
