"""UGA §3 (Fig. 2, Table 2): the encoder φ, backbone -> embedding block, and its feature pass."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mprd.core.reid_module import eval_mode


class UGAEncoder(nn.Module):
    """φ (§3, Table 2): 'embed' = backbone → [its appended BN → Dropout → FC (no bias) → BN]; 'bn' = R+BN
    (the backbone's BN feature); 'none' = R (pool-5). `extract` is the L2-normalised output (test feature)."""

    def __init__(self, backbone: nn.Module, head: str = "embed", dim: int = 1024, dropout: float = 0.5) -> None:
        super().__init__()
        if head not in ("embed", "bn", "none"):
            raise ValueError(f"method.model.head={head!r}: expected embed, bn or none")
        self.trunk, self.head = backbone, head
        self.embed: nn.Module | None = None
        self.out_dim = int(backbone.out_dim)
        if head == "embed":  # the first BN of the block is the backbone's appended BN (same layer, no copy)
            self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(backbone.out_dim, dim, bias=False),
                                       nn.BatchNorm1d(dim))
            self.out_dim = int(dim)

    def forward(self, x: Tensor) -> Tensor:
        pool5, bn = self.trunk.forward_features(x)
        if self.head == "none":
            return pool5
        return bn if self.embed is None else self.embed(bn)

    def extract(self, x: Tensor) -> Tensor:
        return F.normalize(self(x), dim=1)


@torch.no_grad()
def embed_images(encoder: UGAEncoder, loader: Any, num: int, device: torch.device | str) -> Tensor:
    """φ of the `num` images of a feature loader ({"image", "index"}) in eval mode, (num, D) unnormalised;
    the encoder's train/eval mode is restored."""
    feats = torch.zeros(num, encoder.out_dim, device=device)
    with eval_mode(encoder):
        for batch in loader:
            feats[batch["index"].to(device)] = encoder(batch["image"].to(device)).float()
    return feats
