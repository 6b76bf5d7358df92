import math

import torch
import torch.nn.functional as F

from mprd.core.positive_sets import PositiveSets
from mprd.methods.mprd.losses import binomial_deviance_loss, num_hard_negatives


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def reference_bd(feats, memory, batch_index, pos_lists, delta, alpha, l1, l2, ratio):
    """Eq. 2 evaluated anchor by anchor with Python loops (Eq. 3 hard negatives by sorting)."""
    n, num = feats.shape[0], memory.shape[0]
    total = 0.0
    for b in range(n):
        s = [float(feats[b] @ memory[j]) for j in range(num)]
        pos = pos_lists[int(batch_index[b])]
        negs = sorted((j for j in range(num) if j not in pos), key=lambda j: -s[j])
        r = max(1, math.floor(ratio * (num - len(pos))))
        hard = negs[:r]
        pos_term = sum(softplus(alpha * (l1 - s[j])) for j in pos) / len(pos)
        neg_term = sum(softplus(alpha * (s[j] - l2)) for j in hard) / len(hard)
        total += delta * pos_term + neg_term
    return total / n


def test_bd_hand_made_case():
    # 4 memory slots in 2-D; anchor = slot 0 with P_0 = {0, 1}; ratio 0.5 -> r = floor(0.5 * 2) = 1
    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])
    feat = torch.tensor([[0.8, 0.6]])
    pos = PositiveSets.from_mask_rows(torch.tensor([0]), torch.tensor([1]), 4)
    loss, _ = binomial_deviance_loss(feat, memory, torch.tensor([0]), pos, delta=5, alpha=4, neg_ratio=0.5)
    # s = [0.8, 0.96, 0.6, -0.8]; hardest negative is slot 2 (0.6)
    expected = 5 * (softplus(4 * (0.2 - 0.8)) + softplus(4 * (0.2 - 0.96))) / 2 + softplus(4 * (0.6 - 0.2))
    assert abs(loss.item() - expected) < 1e-5


def test_bd_matches_per_anchor_reference_on_random_data():
    torch.manual_seed(1)
    num, d = 300, 16
    memory = F.normalize(torch.randn(num, d), dim=1)
    labels = torch.randint(0, 40, (num,))
    pos = PositiveSets.from_labels(labels)
    batch_index = torch.randperm(num)[:12]
    feats = F.normalize(torch.randn(12, d), dim=1)
    loss, _ = binomial_deviance_loss(feats, memory, batch_index, pos, delta=5, alpha=4, neg_ratio=0.01)
    lists = [set(pos.row(i).tolist()) for i in range(num)]
    ref = reference_bd(feats, memory, batch_index, lists, 5, 4, 0.2, 0.2, 0.01)
    assert abs(loss.item() - ref) < 1e-4


def test_bd_gradient_flows_only_into_features():
    torch.manual_seed(2)
    memory = F.normalize(torch.randn(50, 8), dim=1).requires_grad_(True)
    raw = torch.randn(4, 8, requires_grad=True)
    loss, _ = binomial_deviance_loss(F.normalize(raw, dim=1), memory, torch.arange(4), PositiveSets.singletons(50))
    loss.backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0
    assert memory.grad is None


def test_num_hard_negatives():
    assert num_hard_negatives(12936, torch.tensor([1, 29]), 0.01).tolist() == [129, 129]
    assert num_hard_negatives(10, torch.tensor([9]), 0.01).tolist() == [1]
    assert num_hard_negatives(10, torch.tensor([10]), 0.01).tolist() == [0]  # every slot positive


def test_bd_without_negatives_has_no_negative_term():
    memory = F.normalize(torch.randn(3, 4), dim=1)
    pos = PositiveSets.from_labels(torch.zeros(3, dtype=torch.long))
    feat = memory[:1].clone()
    loss, terms = binomial_deviance_loss(feat, memory, torch.tensor([0]), pos, delta=1.0)
    s = (feat @ memory.T)[0]
    expected = sum(softplus(4 * (0.2 - float(v))) for v in s) / 3
    assert abs(loss.item() - expected) < 1e-5 and terms["loss_neg"].item() == 0.0


def test_bd_with_excluded_slots_equals_the_loss_on_the_memory_without_them():
    """exclude_slots (MPRD's X without the meta images): same value as removing those rows from the memory
    and from every P_i, with r_i counted over the remaining slots."""
    torch.manual_seed(2)
    num, d = 300, 16
    memory = F.normalize(torch.randn(num, d), dim=1)
    labels = torch.randint(0, 40, (num,))
    excluded = torch.isin(labels, torch.tensor([3, 7]))
    pos = PositiveSets.from_labels(labels)
    kept = torch.nonzero(~excluded).flatten()
    batch_index = kept[torch.randperm(kept.numel())[:12]]
    feats = F.normalize(torch.randn(12, d), dim=1)
    loss, _ = binomial_deviance_loss(feats, memory, batch_index, pos, neg_ratio=0.05, exclude_slots=excluded)
    new_id = torch.full((num,), -1)
    new_id[kept] = torch.arange(kept.numel())
    lists = [{int(new_id[j]) for j in pos.row(int(i)).tolist() if not excluded[j]} for i in kept]
    ref = reference_bd(feats, memory[kept], new_id[batch_index], lists, 5, 4, 0.2, 0.2, 0.05)
    assert abs(loss.item() - ref) < 1e-4
