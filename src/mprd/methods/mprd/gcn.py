"""The pair-relation GCN of MPRD (Eq. 5): two graph-conv layers, aggregation, MLP → g_ij (plain torch).

Per structure G_ij with node inputs V = [DRNL one-hot ‖ feature] (spec §3.4):
    Y^(l+1) = ReLU( D^-1 (A + I) Y^(l) Θ_l ),   D = degree matrix of A + I  (spec fix 2: mean aggregation)
then aggregation Θ_a and an MLP Θ_m with a sigmoid output.

Decisions (spec §3.5 / §6.11):
- Aggregation order: node-wise Conv1d (kernel 1) + ReLU first, then a global max-pool over the real nodes.
  The paper lists "max-pooling and 1-D conv"; pooling last keeps the readout permutation-invariant and
  independent of the (variable) node count.
- `concat_layers=True` (default): the aggregation sees the concatenation of all graph-conv outputs (the DGCNN /
  SEAL habit), so first-layer (local) evidence reaches the readout directly; False uses the last layer only.
- Every linear map carries a bias (propagation is row-stochastic, so a bias commutes with D^-1(A+I)).

Cost trick: V Θ_1 = onehot · Θ_1a + f · Θ_1b, and propagation is linear, so the 2048-d features are projected
once per node id (`project`) instead of once per (structure, node). At inference the whole memory is projected
once per refresh and gathered by node id (`node_table`); in training only the unique ids of the batch are
projected from raw features so gradients reach Θ_1b.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mprd.methods.mprd.losses import mixed_gcn_loss
from mprd.methods.mprd.structures import PairStructures, TargetEdge, Topology, iter_structure_chunks

SIMILARITY_CHANNELS = ("cos_sum", "cos_absdiff", "cos_pair")


def normalized_adjacency(adj: Tensor, mask: Tensor) -> Tensor:
    """D^-1 (A + I) restricted to real nodes (Eq. 5 with D the degree matrix of A + I); padded rows/cols are 0."""
    m = mask.to(adj.dtype)
    a = adj * m[:, :, None] * m[:, None, :] + torch.diag_embed(m)
    deg = a.sum(dim=2, keepdim=True).clamp_(min=1.0)
    return a / deg


class PairGCN(nn.Module):
    """G(G_ij) → logit of g_ij, the likelihood that x_i and x_j share an identity (Eq. 5)."""

    def __init__(
        self,
        feat_dim: int = 2048,
        num_labels: int = 11,
        hidden: Sequence[int] = (256, 256),
        agg_channels: int = 128,
        mlp_hidden: int = 128,
        dropout: float = 0.0,
        concat_layers: bool = True,
        pair_similarity: bool = False,
        node_features: bool = True,
    ) -> None:
        super().__init__()
        hidden = tuple(int(h) for h in hidden)
        if not hidden or min(hidden) < 1:
            raise ValueError(f"PairGCN: hidden={hidden}; expected one positive width per graph-conv layer")
        if num_labels < 2 or feat_dim < 1:
            raise ValueError(f"PairGCN: need num_labels >= 2 and feat_dim >= 1, got {num_labels}, {feat_dim}")
        self.feat_dim = feat_dim
        self.num_labels = num_labels
        self.hidden = hidden
        self.concat_layers = concat_layers
        self.pair_similarity = pair_similarity
        self.node_features = node_features
        # Θ_1 split into the DRNL rows (an embedding = one-hot · Θ_1a) and the feature rows Θ_1b
        self.label_weight = nn.Parameter(torch.empty(num_labels, hidden[0]))
        self.feat_proj = nn.Linear(feat_dim, hidden[0], bias=False)
        self.bias0 = nn.Parameter(torch.zeros(hidden[0]))
        # optional node channels [cos(v,i) + cos(v,j), |cos(v,i) - cos(v,j)|, cos(i,j)] (docs/decisions-mprd.md)
        self.sim_weight = nn.Linear(len(SIMILARITY_CHANNELS), hidden[0], bias=False) if pair_similarity else None
        self.convs = nn.ModuleList(nn.Linear(hidden[i - 1], hidden[i]) for i in range(1, len(hidden)))
        agg_in = sum(hidden) if concat_layers else hidden[-1]
        self.agg = nn.Conv1d(agg_in, agg_channels, kernel_size=1)
        self.mlp = nn.Sequential(
            nn.Linear(agg_channels, mlp_hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, 1)
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Θ_1 as one (num_labels + feat_dim) x hidden0 matrix with the usual Linear init
        bound = 1.0 / (self.num_labels + self.feat_dim) ** 0.5
        nn.init.uniform_(self.label_weight, -bound, bound)
        nn.init.uniform_(self.feat_proj.weight, -bound, bound)
        nn.init.uniform_(self.bias0, -bound, bound)
        if self.sim_weight is not None:
            self.sim_weight.reset_parameters()

    def first_layer_weight(self) -> Tensor:
        """Θ_1 as the (num_labels + feat_dim, hidden0) matrix acting on [one-hot ‖ feature]."""
        return torch.cat([self.label_weight, self.feat_proj.weight.T], dim=0)

    def project(self, features: Tensor) -> Tensor:
        """f Θ_1b for every row: (M, feat_dim) → (M, hidden0); the node table for inference."""
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"PairGCN.project: expected (M, {self.feat_dim}) features, got {tuple(features.shape)}")
        if not self.node_features:  # the feature embedding is left out of V (only DRNL + similarity channels)
            return features.new_zeros(features.shape[0], self.hidden[0], dtype=self.feat_proj.weight.dtype)
        return self.feat_proj(features.to(self.feat_proj.weight.dtype))

    def similarity_channels(self, s: PairStructures, unit_features: Tensor) -> Tensor:
        """(P, n, 3): per node v, [cos(v,i) + cos(v,j), |cos(v,i) − cos(v,j)|, cos(i,j)] (symmetric in i, j)."""
        unit = unit_features.to(self.label_weight.dtype)
        ids = s.node_ids.clamp(min=0)
        step = max(1, 2**24 // max(1, ids.shape[1] * unit.shape[1]))  # bounds the (chunk, n, d) gather
        out = []
        for c in range(0, ids.shape[0], step):
            f = unit[ids[c : c + step]]
            out.append(torch.bmm(f, f[:, :2].transpose(1, 2)))  # (chunk, n, 2): cos(v, i), cos(v, j)
        cos = torch.cat(out) if out else unit.new_zeros(0, ids.shape[1], 2)
        ci, cj = cos[..., 0], cos[..., 1]
        return torch.stack([ci + cj, (ci - cj).abs(), ci[:, 1:2].expand_as(ci)], dim=-1)

    def _input_projection(
        self, s: PairStructures, node_table: Tensor | None, features: Tensor | None, unit_features: Tensor | None
    ) -> Tensor:
        """V Θ_1 + b per (structure, node): (P, n, hidden0).

        With `pair_similarity`, the similarity channels are read from `unit_features` (the L2-normalised table
        whose dot products are cosines; default: `features`).

        Padding rows hold finite junk (row 0 of the table); they never reach real nodes because the columns of
        D^-1(A+I) at padding are zero, so no masking pass over this large tensor is needed.
        """
        if (node_table is None) == (features is None):
            raise ValueError("PairGCN: pass exactly one of node_table (projected) or features (raw)")
        if s.drnl.numel() and (int(s.drnl.min()) < 0 or int(s.drnl.max()) >= self.num_labels):
            raise ValueError(
                f"PairGCN: DRNL labels must lie in [0, {self.num_labels}); build structures with "
                f"max_label <= {self.num_labels - 1}"
            )
        mask = s.mask
        ids = s.node_ids.clamp(min=0)
        dtype = self.label_weight.dtype
        if node_table is not None:
            if node_table.dim() != 2 or node_table.shape[1] != self.hidden[0]:
                raise ValueError(f"PairGCN: node_table must be (M, {self.hidden[0]}), got {tuple(node_table.shape)}")
            x = node_table.to(dtype)[ids]
        else:
            # project each distinct node once; the batch shares many nodes across structures
            uniq, inv = torch.unique(ids[mask], return_inverse=True)
            proj = self.project(features[uniq])
            x = torch.zeros(*ids.shape, self.hidden[0], dtype=dtype, device=proj.device)
            x[mask] = proj[inv]
        x = x + (self.label_weight + self.bias0)[s.drnl]  # one-hot · Θ_1a + b as a row lookup
        if self.sim_weight is not None:
            unit = features if unit_features is None else unit_features
            if unit is None:
                raise ValueError("PairGCN(pair_similarity=True): pass unit_features (the memory) with node_table")
            x = x + self.sim_weight(self.similarity_channels(s, unit))
        return x

    def embed_nodes(
        self,
        s: PairStructures,
        node_table: Tensor | None = None,
        features: Tensor | None = None,
        unit_features: Tensor | None = None,
    ) -> list[Tensor]:
        """Outputs Y^(1..L) of the graph-conv layers (Eq. 5), each (P, n, hidden_l); padding rows are 0."""
        prop = normalized_adjacency(s.adj.to(self.label_weight.dtype), s.mask)
        y = torch.bmm(prop, self._input_projection(s, node_table, features, unit_features)).relu_()
        outs = [y]
        for conv in self.convs:
            y = torch.bmm(prop, conv(y)).relu_()
            outs.append(y)
        return outs

    def _aggregate(self, outs: list[Tensor], mask: Tensor) -> Tensor:
        """Θ_a: node-wise Conv1d (kernel 1) + ReLU, then max-pool over real nodes → (P, agg_channels).

        A kernel-1 Conv1d over [Y^1 ‖ ... ‖ Y^L] is a per-node linear map; it is applied as a sum of per-layer
        matmuls on the (P, n, C) layout, which avoids both the concatenation and a transpose copy.
        """
        weight = self.agg.weight.squeeze(2)
        if not self.concat_layers:
            h = torch.nn.functional.linear(outs[-1], weight, self.agg.bias)
        else:
            h = torch.nn.functional.linear(outs[0], weight[:, : self.hidden[0]], self.agg.bias)
            start = self.hidden[0]
            for y, width in zip(outs[1:], self.hidden[1:], strict=True):
                h = h + torch.nn.functional.linear(y, weight[:, start : start + width])
                start += width
        h = h.relu_().masked_fill(~mask[:, :, None], float("-inf"))
        return h.amax(dim=1)

    def forward(
        self,
        s: PairStructures,
        node_table: Tensor | None = None,
        features: Tensor | None = None,
        unit_features: Tensor | None = None,
    ) -> Tensor:
        """Logits (P,) of g_ij. Give `node_table` = project(memory) (inference) or raw `features` (training)."""
        outs = self.embed_nodes(s, node_table, features, unit_features)
        return self.mlp(self._aggregate(outs, s.mask)).squeeze(1)

    def predict_proba(
        self,
        s: PairStructures,
        node_table: Tensor | None = None,
        features: Tensor | None = None,
        unit_features: Tensor | None = None,
    ) -> Tensor:
        """g_ij = sigmoid(logit) ∈ (0, 1)."""
        return torch.sigmoid(self.forward(s, node_table, features, unit_features))


@torch.no_grad()
def predict_pairs(
    gcn: PairGCN,
    neighbors: Tensor,
    left: Tensor,
    right: Tensor,
    node_table: Tensor,
    batch_size: int = 4096,
    *,
    topology: Topology = "pair",
    target_edge: TargetEdge = "always",
    max_label: int | None = None,
    sort_by_size: bool = True,
    unit_features: Tensor | None = None,
) -> Tensor:
    """g_ij for many pairs (e.g. all N·k candidates of Eq. 7), chunked, in eval mode; returns (P,) on CPU.

    Structures are built on `node_table.device` (neighbors/left/right are moved there). `max_label` defaults to
    the network's `num_labels - 1`. The module's train/eval mode is restored afterwards. `unit_features` (the
    memory) feeds the similarity channels of a `pair_similarity` network.
    """
    device = node_table.device
    max_label = gcn.num_labels - 1 if max_label is None else max_label
    out = torch.empty(left.numel(), dtype=torch.float32)
    was_training = gcn.training
    gcn.eval()
    try:
        chunks = iter_structure_chunks(
            neighbors.to(device),
            left.to(device),
            right.to(device),
            chunk_size=batch_size,
            sort_by_size=sort_by_size,
            topology=topology,
            target_edge=target_edge,
            max_label=max_label,
        )
        for idx, s in chunks:
            out[idx.cpu()] = gcn.predict_proba(s, node_table=node_table, unit_features=unit_features).float().cpu()
    finally:
        gcn.train(was_training)
    return out


# ---------------------------------------------------------------------------- training (Eqs. 6, 10)


@dataclass
class GCNBatch:
    """One GCN mini-batch: structures, their labels (1 = same identity), anchors, meta flags, η."""

    structures: PairStructures
    labels: Tensor  # (P,) float
    anchor: Tensor  # (P,) long
    is_meta: Tensor  # (P,) bool
    eta: float


class GCNLearner(nn.Module):
    """G (Eq. 5) with its loss step (Eq. 6 BCE, Eq. 10 meta weighting) and its optimiser (SGD, §5.2).

    A plain module, not a LightningModule: Algorithm 1's GCN phase (`mprd.methods.mprd.algorithm`) drives
    it inside the CNN module's epoch start, so one checkpoint holds both networks.
    """

    def __init__(
        self,
        feat_dim: int,
        num_labels: int,
        hidden: tuple[int, ...] = (256, 256),
        agg_channels: int = 128,
        mlp_hidden: int = 128,
        dropout: float = 0.0,
        pair_similarity: bool = False,
        node_features: bool = True,
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
            pair_similarity=pair_similarity,
            node_features=node_features,
        )
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"gcn.optimizer={optimizer!r}; expected 'sgd' or 'adam'")
        self.optimizer_name = optimizer
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay

    def loss_step(self, batch: GCNBatch, features: Tensor) -> tuple[Tensor, dict[str, float]]:
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

    def make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            self.net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )
