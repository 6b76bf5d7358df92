"""Training diagnostics. Most read the hidden ground truth; all are logged, never fed to a loss or a label."""

from __future__ import annotations

from torch import Tensor


def neighbour_precision(feats: Tensor, pids: Tensor, cams: Tensor, k: int = 8) -> dict[str, float]:
    """Fraction of same-identity neighbours among the k nearest (self excluded), overall and split by camera."""
    from mprd.core.neighbors import knn

    _, idx = knn(feats, feats, k, exclude_self=True)
    idx = idx.cpu()
    same_id = pids[idx] == pids[:, None]
    same_cam = cams[idx] == cams[:, None]
    out = {"overall": float(same_id.float().mean())}
    for name, mask in (("same-camera", same_cam), ("cross-camera", ~same_cam)):
        out[name] = float(same_id[mask].float().mean()) if mask.any() else float("nan")
        out[f"{name} share"] = float(mask.float().mean())
    return out


def knn_precision_logs(prefix: str, feats: Tensor, pids: Tensor, cams: Tensor, k: int = 8) -> dict[str, float]:
    """`neighbour_precision` as flat log keys: <prefix>/knn{k}_prec, _prec_cross, _prec_same, _cross_share."""
    stats = neighbour_precision(feats, pids, cams, k)
    return {
        f"{prefix}/knn{k}_prec": stats["overall"],
        f"{prefix}/knn{k}_prec_cross": stats["cross-camera"],
        f"{prefix}/knn{k}_prec_same": stats["same-camera"],
        f"{prefix}/knn{k}_cross_share": stats["cross-camera share"],
    }


def dead_units(pool5: Tensor, min_var: float = 1e-3) -> int:
    """Number of pool-5 units whose variance over the given images is below `min_var`.

    Such a unit is dead (always 0) or stuck at an activation ceiling (Lite0's ReLU6 at 6): it carries no
    signal, and a train-mode BN after it amplifies whatever is left (docs/dynamics.md cause 7). Reads no identity.
    """
    if pool5.dim() != 2:
        raise ValueError(f"dead_units: expected an (N, d) tensor, got shape {tuple(pool5.shape)}")
    return int((pool5.float().var(0, unbiased=False) < min_var).sum())
