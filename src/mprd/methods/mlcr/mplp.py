"""MPLP: Memory-based Positive Label Prediction (MLCR, Eqs. 7-11), vectorised.

For every memory slot i (memory rows L2-normalised, s_ij = M_i . M_j, Eq. 8):
- R_i: all slots sorted by decreasing s_ij (Eq. 7); R_i[1] = i.
- P_i = R_i[1:k_i] with k_i = #{j : s_ij > t} (Eq. 9; i itself counts).
- Cycle consistency (Eq. 10): walk P_i head to tail; candidate c passes when i is in c's top-w_i list;
  the walk stops at the first failure, P*_i = the passed prefix (Eq. 11 turns it into +-1 labels).

Two readings (MLCR spec §3.2 [code], ambiguity 5):
- 'paper': window w_i = k_i; l = number of consecutive passes from the head.
- 'release' (kennethwdk/MLCReID `mplp.py`): window max(k_i, 10) + 1 (the `pos > topk` test on a 0-based
  position), l = min(max(2, run), k_i) (the loop counter starts at 1, so the top-1 neighbour above t is
  kept even if it fails).
In both, i is always positive (also when k_i = 0, e.g. an all-zero memory row).

Vectorisation: one k-NN table (N x W, self included) from `mprd.core.neighbors.knn`; the test "i in the first
w_i entries of c's list" becomes a lookup of the pair key c*N + i in the table's sorted pair keys
(`searchsorted`), which costs O(N*K) queries instead of a B x K x W gather; the stop-at-first-failure walk
is a `cumprod` along the candidate axis.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from mprd.core.cnn_module import CNNModule, memory_method
from mprd.core.config import RunContext
from mprd.core.generator import PseudoLabelGenerator
from mprd.core.neighbors import Backend, knn
from mprd.core.positive_sets import PositiveSets
from mprd.methods.mprd.meta import MetaGroundTruth

Variant = Literal["paper", "release"]
_VARIANTS = ("paper", "release")
_RELEASE_MIN_WINDOW = 10  # release: topk = max(k_i, 10)
_INITIAL_WIDTH = 64  # first k-NN width when candidates are uncapped; doubled until no row is truncated


def _check_args(memory: Tensor, threshold: float, variant: str, max_candidates: int | None, chunk_size: int) -> None:
    if memory.dim() != 2 or memory.shape[0] < 1:
        raise ValueError(f"mplp: memory must be a non-empty (N, d) tensor, got shape {tuple(memory.shape)}")
    if not memory.is_floating_point():
        raise ValueError(f"mplp: memory must be floating point, got {memory.dtype}")
    if not -1.0 <= threshold < 1.0:
        raise ValueError(f"mplp: threshold t must lie in [-1, 1) (cosine similarity), got {threshold}")
    if variant not in _VARIANTS:
        raise ValueError(f"mplp: variant must be one of {_VARIANTS}, got {variant!r}")
    if max_candidates is not None and max_candidates < 1:
        raise ValueError(f"mplp: max_candidates must be None (uncapped) or >= 1, got {max_candidates}")
    if chunk_size < 1:
        raise ValueError(f"mplp: chunk_size must be >= 1, got {chunk_size}")
    norms = memory.detach().float().norm(dim=1)
    bad = ~(((norms - 1).abs() < 1e-2) | (norms < 1e-6))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"mplp: memory rows must be L2-normalised (or all-zero before their first write); "
            f"row {i} has norm {float(norms[i]):.4f}"
        )


def _window(k: Tensor, variant: str, num: int) -> Tensor:
    """Reciprocal window w_i: i must be within the first w_i entries of a candidate's rank list (Eq. 10)."""
    if variant == "paper":
        w = k
    else:
        # release: `pos > max(k_i, 10)` on a 0-based position breaks, so positions 0..max(k_i, 10) pass
        w = torch.clamp(k, min=_RELEASE_MIN_WINDOW) + 1
    return torch.clamp(w, max=num)


def _rank_table(
    query: Tensor, memory: Tensor, threshold: float, variant: str, max_candidates: int | None, backend: Backend
) -> tuple[Tensor, Tensor]:
    """Rank lists of the query rows (self included, by decreasing s) wide enough for k_i and w_i; and k_i.

    With a cap C the width is fixed; uncapped, the width doubles until no row's candidates are cut off,
    so k_i equals the exact count of Eq. 9.
    """
    num = memory.shape[0]
    if max_candidates is not None:
        width = int(_window(torch.tensor([max_candidates]), variant, num).item())
        width = min(num, max(width, max_candidates))
    else:
        width = min(num, _INITIAL_WIDTH)
    while True:
        sims, idx = knn(query, memory, width, backend=backend)
        count = (sims > threshold).sum(dim=1)
        if max_candidates is not None:
            return idx, torch.clamp(count, max=max_candidates)
        # a row whose whole list is above t may have more candidates beyond the table: widen
        if width == num or bool((count < width).all()):
            needed = int(_window(count, variant, num).max())
            if needed <= width:
                return idx, count
            width = needed
        else:
            width = min(num, 2 * width)


def _pair_keys(table: Tensor, num: int) -> tuple[Tensor, Tensor]:
    """Globally sorted keys row*N + j for every table entry (row, j), and the rank of j in that row's list."""
    sorted_j, rank = torch.sort(table, dim=1)
    rows = torch.arange(table.shape[0], device=table.device).unsqueeze(1)
    # rows increase and each row's j are sorted, so the flattened keys are sorted
    return (rows * num + sorted_j).reshape(-1), rank.reshape(-1)


def _rank_of(keys: Tensor, ranks: Tensor, table_row: Tensor, anchor: Tensor, num: int) -> Tensor:
    """Position of `anchor` in the rank list stored in `table_row` (elementwise); `num` if not in the table."""
    query = table_row * num + anchor
    pos = torch.searchsorted(keys, query.reshape(-1)).reshape(query.shape)
    pos = torch.clamp(pos, max=keys.numel() - 1)
    found = keys[pos] == query
    return torch.where(found, ranks[pos], torch.full_like(pos, num))


def _positive_length(
    cand: Tensor,
    table_row: Tensor,
    anchor: Tensor,
    k: Tensor,
    window: Tensor,
    lookup: tuple[Tensor, Tensor],
    variant: str,
    num: int,
) -> Tensor:
    """l_i of Eq. 10 for a chunk of anchors: the length of the passing prefix of P_i (release rule in module doc)."""
    anchor = anchor.unsqueeze(1).expand_as(cand)
    rank = _rank_of(lookup[0], lookup[1], table_row, anchor, num)
    # i itself always passes (Eq. 10 holds trivially since R_i[1] = i; also under exact ties)
    passed = (rank < window.unsqueeze(1)) | (cand == anchor)
    in_p = torch.arange(cand.shape[1], device=cand.device).unsqueeze(0) < k.unsqueeze(1)
    run = torch.cumprod((passed & in_p).long(), dim=1).sum(dim=1)
    if variant == "paper":
        return run
    return torch.minimum(torch.clamp(run, min=2), k)


def _check_anchors(anchors: Tensor, num: int) -> Tensor:
    anchors = anchors.reshape(-1).long()
    if anchors.numel() and (int(anchors.min()) < 0 or int(anchors.max()) >= num):
        raise ValueError(
            f"mplp: anchors must be memory slots in [0, {num}), got range [{int(anchors.min())}, {int(anchors.max())}]"
        )
    return anchors


def mplp_positive_sets(
    memory: Tensor,
    threshold: float = 0.6,
    variant: Variant = "paper",
    max_candidates: int | None = None,
    backend: Backend = "auto",
    chunk_size: int = 4096,
    anchors: Tensor | None = None,
) -> PositiveSets:
    """P*_i for every memory slot (MLCR Eqs. 7-11); row i always contains i.

    `max_candidates` caps k_i (None = exact Eq. 9); `chunk_size` bounds the anchors processed at once.
    `anchors` restricts the prediction to those slots (e.g. a batch, as the release does every iteration);
    the other rows are returned as singletons {i}.
    """
    _check_args(memory, threshold, variant, max_candidates, chunk_size)
    memory = memory.detach()
    num = memory.shape[0]
    rows = torch.arange(num) if anchors is None else _check_anchors(anchors, num)
    rows = rows.to(memory.device)
    if rows.numel() == 0:
        return PositiveSets.singletons(num)
    query = memory if anchors is None else memory[rows]
    idx, k = _rank_table(query, memory, threshold, variant, max_candidates, backend)
    rows = rows.to(idx.device)
    k = k.to(idx.device)
    if int(k.max()) == 0:  # e.g. an all-zero memory: no candidate anywhere
        return PositiveSets.singletons(num)
    window = _window(k, variant, num)
    width_p = max(int(k.max()), 1)
    cand = idx[:, :width_p].contiguous()
    in_p = torch.arange(width_p, device=idx.device).unsqueeze(0) < k.unsqueeze(1)
    if anchors is None:
        # every slot is an anchor, so the anchors' own lists (already >= every w_i wide) serve as the table
        table, table_row = idx, cand
    else:
        # rank lists of the anchors' candidates only, each max_i w_i wide
        members = torch.unique(cand[in_p])
        width = max(int(window.max()), 1)
        table = knn(memory[members.to(memory.device)], memory, width, backend=backend)[1].to(idx.device)
        table_row = torch.clamp(torch.searchsorted(members, cand), max=members.numel() - 1)
    lookup = _pair_keys(table, num)
    lengths = []
    for start in range(0, rows.numel(), chunk_size):
        sl = slice(start, start + chunk_size)
        lengths.append(_positive_length(cand[sl], table_row[sl], rows[sl], k[sl], window[sl], lookup, variant, num))
    keep = torch.arange(width_p, device=idx.device).unsqueeze(0) < torch.cat(lengths).unsqueeze(1)
    return PositiveSets.from_mask_rows(rows.unsqueeze(1).expand_as(cand)[keep], cand[keep], num)


class MPLPGenerator(PseudoLabelGenerator):
    """Pseudo-label generator wrapping `mplp_positive_sets` (MLCR's MPLP; MPRD Table 1 row MPLP*)."""

    name = "mplp"

    def __init__(
        self,
        threshold: float = 0.6,
        variant: Variant = "paper",
        max_candidates: int | None = None,
        backend: Backend = "auto",
        chunk_size: int = 4096,
    ) -> None:
        if variant not in _VARIANTS:
            raise ValueError(f"MPLPGenerator: variant must be one of {_VARIANTS}, got {variant!r}")
        self.threshold = threshold
        self.variant = variant
        self.max_candidates = max_candidates
        self.backend = backend
        self.chunk_size = chunk_size

    def refresh(self, memory: Tensor, anchors: Tensor | None = None, **ctx: Any) -> PositiveSets:
        """Recompute P*_i from the memory bank (L2-normalised rows, N x d), for all slots or only `anchors`.

        Other context (epoch, ...) is accepted and ignored.
        """
        return mplp_positive_sets(
            memory,
            threshold=self.threshold,
            variant=self.variant,
            max_candidates=self.max_candidates,
            backend=self.backend,
            chunk_size=self.chunk_size,
            anchors=anchors,
        )


def build(
    run: RunContext,
    *,
    generator: dict[str, Any],
    labels: dict[str, Any],
    memory: dict[str, Any],
    loss: dict[str, Any],
    meta_ground_truth: dict[str, Any] | None = None,
) -> CNNModule:
    """The `_target_` of MPLP* (BD loss) and MLCR* (MMCL loss, `loss.name`); with `meta_ground_truth`,
    MLCR(+5id): ground-truth multi-labels for the images of MPRD's meta identities (same seed, same ids)."""
    gen: PseudoLabelGenerator = MPLPGenerator(**generator)
    if meta_ground_truth:
        gen = MetaGroundTruth(gen, run.train_pids(), int(meta_ground_truth["num_ids"]), int(meta_ground_truth["seed"]))
    return memory_method(run, gen, labels=labels, memory=memory, loss=loss)
