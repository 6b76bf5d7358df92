"""MMCL (MLCR Eqs. 16-17): a hand-computed case, a plain per-anchor reference on random data, gradients."""

from __future__ import annotations

import pytest
import torch

from mprd.core.positive_sets import PositiveSets
from mprd.methods.mlcr.mmcl import hard_negative_counts, mmcl_loss, mmcl_terms


def reference_mmcl(features, memory, batch_index, positives, delta, r):
    """Eq. 17 one anchor at a time: δ/|P| Σ_P (c−1)² + 1/|N| Σ_N (c+1)², N = top ⌊r·#neg⌋ (≥ 1) negatives."""
    losses = []
    for b in range(features.shape[0]):
        pos = set(positives.row(int(batch_index[b])).tolist())
        scores = memory.detach() @ features[b]
        pos_loss = sum((scores[j] - 1) ** 2 for j in pos) / len(pos)
        negatives = [j for j in range(memory.shape[0]) if j not in pos]
        negatives.sort(key=lambda j: -float(scores[j].detach()))
        count = max(1, int(r * len(negatives) + 1e-9)) if negatives else 0
        neg_loss = sum((scores[j] + 1) ** 2 for j in negatives[:count]) / count if count else 0.0
        losses.append(delta * pos_loss + neg_loss)
    return sum(losses) / len(losses)


def _hand_case() -> tuple[torch.Tensor, torch.Tensor, PositiveSets]:
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # P_0 = {0, 3}, P_1 = {1}, P_2 = {2}, P_3 = {0, 3}
    positives = PositiveSets.from_mask_rows(torch.tensor([0, 3]), torch.tensor([3, 0]), 4)
    return features, memory, positives


def test_hand_computed_values() -> None:
    features, memory, positives = _hand_case()
    batch = torch.tensor([0, 1])
    # anchor slot 0: scores [1, 0, -1, 0.6]; pos = ((1-1)² + (0.6-1)²)/2 = 0.08; negatives {1: 0, 2: -1}
    # anchor slot 1: scores [0, 1, 0, 0.8]; pos = 0; negatives {0: 0, 2: 0, 3: 0.8}
    pos, neg = mmcl_terms(features, memory, batch, positives, r=0.5)
    # r = 0.5: |N_0| = ⌊0.5·2⌋ = 1 -> slot 1: (0+1)² = 1; |N_1| = ⌊0.5·3⌋ = 1 -> slot 3: 1.8² = 3.24
    assert torch.allclose(pos, torch.tensor([0.08, 0.0]))
    assert torch.allclose(neg, torch.tensor([1.0, 3.24]))
    assert mmcl_loss(features, memory, batch, positives, delta=5.0, r=0.5).item() == pytest.approx((1.4 + 3.24) / 2)
    # r = 1: all negatives: anchor 0: (1 + 0)/2 = 0.5; anchor 1: (1 + 1 + 3.24)/3
    expected = ((5 * 0.08 + 0.5) + (5.24 / 3)) / 2
    assert mmcl_loss(features, memory, batch, positives, delta=5.0, r=1.0).item() == pytest.approx(expected)
    # r = 1 %: ⌊0.02⌋ = 0 is raised to one hard negative -> same as r = 0.5 here
    assert mmcl_loss(features, memory, batch, positives, delta=5.0, r=0.01).item() == pytest.approx((1.4 + 3.24) / 2)


@pytest.mark.parametrize(("r", "delta"), [(0.01, 5.0), (0.05, 5.0), (0.3, 2.0), (1.0, 1.0)])
def test_matches_per_anchor_reference(r: float, delta: float) -> None:
    g = torch.Generator().manual_seed(0)
    num, dim, batch = 300, 16, 24
    memory = torch.nn.functional.normalize(torch.randn(num, dim, generator=g), dim=1)
    labels = torch.randint(0, 40, (num,), generator=g)
    positives = PositiveSets.from_labels(labels)
    batch_index = torch.randperm(num, generator=g)[:batch]
    features = torch.nn.functional.normalize(
        memory[batch_index] + 0.5 * torch.randn(batch, dim, generator=g), dim=1
    ).requires_grad_(True)
    loss = mmcl_loss(features, memory, batch_index, positives, delta=delta, r=r)
    (grad,) = torch.autograd.grad(loss, features)
    ref_features = features.detach().clone().requires_grad_(True)
    ref = reference_mmcl(ref_features, memory, batch_index, positives, delta, r)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad, ref_features.grad, atol=1e-6)


def test_gradients_reach_only_features() -> None:
    features, memory, positives = _hand_case()
    features = features.clone().requires_grad_(True)
    memory = memory.clone().requires_grad_(True)  # even a memory that tracks grad stays a constant
    mmcl_loss(features, memory, torch.tensor([0, 1]), positives, r=0.5).backward()
    assert memory.grad is None
    assert features.grad is not None and features.grad.abs().sum() > 0
    # Eq. 16 gradient by hand, anchor 0 (batch mean 1/2): δ/2 · 2(0.6−1)·M3 + 2(0+1)·M1, then /2
    expected0 = (5.0 / 2 * 2 * (0.6 - 1) * torch.tensor([0.6, 0.8]) + 2 * 1.0 * torch.tensor([0.0, 1.0])) / 2
    assert torch.allclose(features.grad[0], expected0)


def test_all_positive_anchor_has_no_negative_term() -> None:
    memory = torch.nn.functional.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    positives = PositiveSets.from_labels(torch.zeros(6, dtype=torch.long))
    pos, neg = mmcl_terms(memory[:2], memory, torch.tensor([0, 1]), positives)
    assert torch.equal(neg, torch.zeros(2))
    expected = ((memory[:2] @ memory.T - 1) ** 2).mean(dim=1)
    assert torch.allclose(pos, expected)


def test_hard_negative_counts() -> None:
    n = torch.tensor([12935, 16521, 32620, 100, 50, 0])
    # Market / Duke / MSMT17 with |P| = 1 (spec item 21: ≈ 129 / 165 / 326); 0.29 · 100 must floor to 29
    assert hard_negative_counts(n[:3], 0.01).tolist() == [129, 165, 326]
    assert hard_negative_counts(torch.tensor([100]), 0.29).tolist() == [29]
    assert hard_negative_counts(n[4:], 0.01).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"r": 0.0}, "r is the hard-negative fraction"), ({"r": 1.5}, "r is the hard-negative fraction")],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    features, memory, positives = _hand_case()
    with pytest.raises(ValueError, match=match):
        mmcl_loss(features, memory, torch.tensor([0, 1]), positives, **kwargs)


def test_shape_mismatch_raises() -> None:
    features, memory, positives = _hand_case()
    with pytest.raises(ValueError, match="batch_index"):
        mmcl_loss(features, memory, torch.tensor([0]), positives)
    with pytest.raises(ValueError, match="positives cover"):
        mmcl_loss(features, memory[:3], torch.tensor([0, 1]), positives)
    with pytest.raises(ValueError, match="features"):
        mmcl_loss(features[:, :1], memory, torch.tensor([0, 1]), positives)
