"""DDP support: what keeps the ranks' replicas identical, and a probe that records them (tests).

What is replicated and how (docs/cluster.md, "DDP semantics"):
- parameters: DDP averages the gradients, so every rank takes the same optimiser step;
- the feature memory (`FeatureMemory`): every rank applies every rank's all-gathered writes, so the replicas stay
  identical by construction; it is never broadcast (N x d per step would dominate multi-node traffic);
- positive sets, the GCN and SSLR's reliable sets: computed on rank 0 and broadcast;
- every other buffer (BatchNorm running statistics): `SyncBuffersFromRankZero` copies rank 0's at each
  training-epoch start and before each validation, so feature passes (memory refresh, evaluation) run the
  model rank 0 checkpoints on every rank. The strategy runs with `forward_sync_buffers=False`
  (conf/trainer/ddp.yaml); without it DDP would also broadcast the memory before every forward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from mprd.core.memory import FeatureMemory


def replicated_buffer_names(module: nn.Module) -> set[str]:
    """Buffers kept identical by all-gathered writes (every `FeatureMemory`), which are never broadcast."""
    names = set()
    for prefix, sub in module.named_modules():
        if isinstance(sub, FeatureMemory):
            names.update(f"{prefix}.{n}" if prefix else n for n, _ in sub.named_buffers())
    return names


def broadcast_buffers(module: nn.Module, strategy: Any) -> int:
    """Copy rank 0's buffers (except the replicated memories) to every rank; returns how many were sent."""
    skip = replicated_buffer_names(module)
    buffers = [(n, b) for n, b in module.named_buffers() if n not in skip]
    received = strategy.broadcast({n: b.detach().cpu() for n, b in buffers}, src=0)
    with torch.no_grad():
        for name, buf in buffers:
            buf.copy_(received[name].to(buf.device))
    return len(buffers)


class SyncBuffersFromRankZero(L.Callback):
    """Rank 0's BatchNorm statistics (and other buffers) on every rank before each epoch and each validation.

    Callbacks' `on_train_epoch_start` runs before the module's, so the memory refresh and pseudo labels of the
    epoch see rank 0's network on every rank. A no-op on one process.
    """

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            broadcast_buffers(pl_module, trainer.strategy)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            broadcast_buffers(pl_module, trainer.strategy)


class DDPProbe(L.Callback):
    """`+debug.ddp_probe=<folder>`: per rank and epoch, write what must agree across ranks to
    `<folder>/rank<r>-epoch<e>.pt`: the memory replicas and parameters at the epoch end, the positive sets the
    epoch trained with, the generator's state (MPRD's GCN), the epoch-level refreshes this rank ran and the
    slot indices of every batch this rank trained on. For tests; costs a copy of the state per epoch."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.refreshes: list[int] = []
        self.batches: list[list[int]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        generator = getattr(pl_module, "generator", None)
        if generator is None:
            return
        inner = generator.refresh

        def counted(memory: Tensor, **context: Any) -> Any:
            if context.get("anchors") is None:  # per-batch refreshes (MLCR) run on every rank by design
                self.refreshes.append(int(context.get("epoch", -1)))
            return inner(memory, **context)

        generator.refresh = counted

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.batches = []

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append([int(i) for i in batch["index"].tolist()])

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record: dict[str, Any] = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "epoch": trainer.current_epoch,
            "batches": self.batches,
            "refreshes": list(self.refreshes),
            "memories": {n: b.detach().cpu().clone() for n, b in pl_module.named_buffers()
                         if n in replicated_buffer_names(pl_module)},
            "parameters": {n: p.detach().cpu().clone() for n, p in pl_module.named_parameters()},
            "history": [dict(r) for r in getattr(pl_module, "history", [])],  # evaluations so far
        }
        positives = getattr(pl_module, "positives", None)
        if positives is not None:
            record["positives"] = positives.to_state()
        reliable = getattr(pl_module, "reliable", None)
        if isinstance(reliable, Tensor):
            record["reliable"] = reliable.detach().cpu().clone()
        generator = getattr(pl_module, "generator", None)
        if generator is not None and generator.state_dict():
            record["generator"] = generator.state_dict()
        torch.save(record, self.folder / f"rank{trainer.global_rank}-epoch{trainer.current_epoch}.pt")


# ------------------------------------------------------------------------------------- global-batch BN
class _GatherRows(torch.autograd.Function):
    """All ranks' rows, concatenated in rank order (every rank's tensor has the same shape); the gradient of
    each rank's rows is the sum over ranks (all-reduce), which gloo supports (unlike reduce-scatter)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        import torch.distributed as dist

        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        import torch.distributed as dist

        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def _gathered_forward(self: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """Train-mode BN over the whole global batch: this rank's rows of BN(all ranks' rows). Running statistics
    then update identically on every rank; eval mode (and frozen BN) is the plain layer."""
    if not (self.training and _distributed()):
        return type(self).__mro__[1].forward(self, x)
    full = _GatherRows.apply(x)
    out = type(self).__mro__[1].forward(self, full)
    rank = torch.distributed.get_rank()
    return out[rank * x.shape[0]:(rank + 1) * x.shape[0]]


class GatheredBatchNorm1d(nn.BatchNorm1d):
    forward = _gathered_forward


class GatheredBatchNorm2d(nn.BatchNorm2d):
    forward = _gathered_forward


_GATHERED = {nn.BatchNorm1d: GatheredBatchNorm1d, nn.BatchNorm2d: GatheredBatchNorm2d}


class GatheredBatchNorm(L.pytorch.plugins.LayerSync):
    """Lightning `LayerSync` plugin: batch statistics over the global batch on any backend (gloo included).

    torch's SyncBatchNorm (`trainer.sync_batchnorm=true`) runs on GPUs only, so CPU DDP (`trainer=ddp_cpu`) uses
    this to normalise as one process with the whole global batch does. It all-gathers each BN layer's input:
    cheap for the re-ID head BN (B x d), costly for the body's feature maps on a GPU, where SyncBatchNorm
    should be used instead. Layers keep their state; `revert` restores the plain classes.
    """

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if type(module) in _GATHERED:
                module.__class__ = _GATHERED[type(module)]
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        plain = {v: k for k, v in _GATHERED.items()}
        for module in model.modules():
            if type(module) in plain:
                module.__class__ = plain[type(module)]
        return model
