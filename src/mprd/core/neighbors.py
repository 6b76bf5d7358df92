"""k-nearest-neighbour search on L2-normalised features (inner product = cosine), and MPRD's k_i rule.

One function, two backends: FAISS (`IndexFlatIP`, on GPU when faiss was built with GPU support and the
tensors live on CUDA) and chunked torch matmul + topk. Both return neighbours sorted by decreasing
similarity; rows never hold more than one copy of an index.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

Backend = Literal["auto", "faiss", "torch"]

try:  # faiss is a hard dependency, but keep the torch path usable without it
    import faiss  # type: ignore

    _HAS_FAISS = True
except ImportError:  # pragma: no cover - exercised only on broken installs
    faiss = None
    _HAS_FAISS = False


def _faiss_has_gpu() -> bool:
    return _HAS_FAISS and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _knn_torch(query: Tensor, base: Tensor, k: int, chunk_size: int) -> tuple[Tensor, Tensor]:
    sims, idx = [], []
    for start in range(0, query.shape[0], chunk_size):
        s = query[start : start + chunk_size] @ base.T
        v, i = torch.topk(s, k, dim=1)
        sims.append(v)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _knn_faiss(query: Tensor, base: Tensor, k: int) -> tuple[Tensor, Tensor]:
    device = query.device
    q = np.ascontiguousarray(query.detach().float().cpu().numpy())
    b = np.ascontiguousarray(base.detach().float().cpu().numpy())
    index = faiss.IndexFlatIP(b.shape[1])
    if device.type == "cuda" and _faiss_has_gpu():  # pragma: no cover - GPU hosts only
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, device.index or 0, index)
    index.add(b)
    sims, idx = index.search(q, k)
    return torch.from_numpy(sims).to(device), torch.from_numpy(idx).long().to(device)


def knn(
    query: Tensor,
    base: Tensor,
    k: int,
    *,
    exclude_self: bool = False,
    backend: Backend = "auto",
    chunk_size: int = 2048,
) -> tuple[Tensor, Tensor]:
    """Top-k inner-product neighbours of each query row among the base rows.

    With `exclude_self`, query row i is base row i (same set) and i is removed from its own list.
    Returns (similarities, indices), each (num_query, k), sorted by decreasing similarity.
    """
    if query.dim() != 2 or base.dim() != 2 or query.shape[1] != base.shape[1]:
        raise ValueError(
            f"knn: expected 2-D query/base with equal width, got {tuple(query.shape)} and {tuple(base.shape)}"
        )
    if exclude_self and query.shape[0] != base.shape[0]:
        raise ValueError("knn: exclude_self needs query and base to be the same set")
    extra = 1 if exclude_self else 0
    kk = min(k + extra, base.shape[0])
    if backend == "auto":
        backend = "faiss" if _HAS_FAISS else "torch"
    if backend == "faiss":
        if not _HAS_FAISS:
            raise RuntimeError("knn: backend='faiss' requested but faiss is not installed")
        sims, idx = _knn_faiss(query, base, kk)
    elif backend == "torch":
        sims, idx = _knn_torch(query.float(), base.float(), kk, chunk_size)
    else:
        raise ValueError(f"knn: unknown backend {backend!r}; expected 'auto', 'faiss' or 'torch'")
    if exclude_self:
        sims, idx = _drop_self(sims, idx, k)
    return sims, idx


def _drop_self(sims: Tensor, idx: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Remove row i's own index from row i (wherever ties put it) and keep k columns."""
    rows = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1)
    is_self = idx == rows
    # rows without self in the list (possible under exact ties) drop their last column instead
    no_self = ~is_self.any(dim=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    kk = idx.shape[1] - 1
    sims = sims[keep].reshape(-1, kk)[:, :k]
    idx = idx[keep].reshape(-1, kk)[:, :k]
    return sims, idx


def count_above(features: Tensor, threshold: float, chunk_size: int = 2048) -> Tensor:
    """#{j != i : <f_i, f_j> > threshold} per row, chunked so no N x N matrix is held."""
    counts = []
    for start in range(0, features.shape[0], chunk_size):
        s = features[start : start + chunk_size] @ features.T
        c = (s > threshold).sum(dim=1)
        # remove self (cos(i, i) = 1 > threshold for any threshold < 1)
        self_sim = (features[start : start + chunk_size] * features[start : start + chunk_size]).sum(1)
        c = c - (self_sim > threshold).long()
        counts.append(c)
    return torch.cat(counts)


def adaptive_k(features: Tensor, threshold: float = 0.6, min_k: int = 8, k_max: int | None = None) -> Tensor:
    """MPRD §3.4: k_i = max(min_k, #{j != i : cos(M_i, M_j) > threshold}), capped at k_max (self excluded)."""
    k = torch.clamp(count_above(features, threshold), min=min_k)
    if k_max is not None:
        k = torch.clamp(k, max=k_max)
    return torch.clamp(k, max=features.shape[0] - 1)


def adaptive_knn(
    features: Tensor,
    threshold: float = 0.6,
    min_k: int = 8,
    k_max: int = 64,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """NN_{k_i}(x_i) for every memory slot, padded to max(k_i) columns.

    Returns (sims, idx, k): idx[i, c] is the c-th neighbour of i for c < k[i] and -1 beyond; sims
    likewise (padding = -inf).
    """
    k = adaptive_k(features, threshold, min_k, k_max)
    width = int(k.max())
    sims, idx = knn(features, features, width, exclude_self=True, backend=backend)
    pad = torch.arange(width, device=idx.device).unsqueeze(0) >= k.to(idx.device).unsqueeze(1)
    idx = idx.masked_fill(pad, -1)
    sims = sims.masked_fill(pad, float("-inf"))
    return sims, idx, k
