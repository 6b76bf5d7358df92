"""Mixed precision on CPU (bf16 autocast): what must stay fp32 does, and the BD loss and its hard-negative set
equal the fp32 ones.

Decisions (docs/performance.md, "Mixed precision"): under autocast the body's convolutions run in bf16, while
the head (pool-5 + BN), the memory, the loss similarities s_ij, the margins they are compared with and the
hard-negative ranking stay fp32; the GCN phase and kNN run outside the training step (no autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mprd.core.backbone import ReIDBackbone
from mprd.core.memory import FeatureMemory
from mprd.core.positive_sets import PositiveSets
from mprd.methods.mlcr.mmcl import mmcl_terms
from mprd.methods.mprd.losses import binomial_deviance_loss, hard_negative_mask, memory_scores, num_hard_negatives

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _problem(seed: int = 0, b: int = 32, n: int = 600, d: int = 256):
    """Random unit features and memory, where the memory holds noisy copies of the batch (realistic close
    scores), and random positive sets of 1-4 slots per anchor."""
    g = torch.Generator().manual_seed(seed)
    memory = F.normalize(torch.randn(n, d, generator=g), dim=1)
    index = torch.randperm(n, generator=g)[:b]
    feats = F.normalize(memory[index] + 0.7 * torch.randn(b, d, generator=g), dim=1)
    labels = torch.randint(0, n // 3, (n,), generator=g)
    return feats, memory, index, PositiveSets.from_labels(labels)


def _hard_set(scores: torch.Tensor, positives: PositiveSets, index: torch.Tensor, ratio: float) -> torch.Tensor:
    pos = positives.batch_mask(index, scores.shape[1])
    return hard_negative_mask(scores, pos, num_hard_negatives(scores.shape[1], pos.sum(1), ratio))


def test_memory_scores_stay_fp32_under_bf16_autocast():
    feats, memory, _, _ = _problem()
    with torch.autocast(**BF16):
        naive = feats @ memory.T
        kept = memory_scores(feats, memory)
    assert naive.dtype == torch.bfloat16  # what the loss computed before: the matmul follows autocast
    assert kept.dtype == torch.float32 and torch.equal(kept, feats @ memory.T)


def test_bd_loss_and_hard_negatives_under_bf16_autocast_equal_fp32():
    """Tolerance: 1e-6 on the loss (equal in practice: the loss runs in fp32 with autocast off) and the same
    hard-negative set. The bf16 matmul it replaces changes the set on this random data, so the test can fail."""
    for seed in range(3):
        feats, memory, index, positives = _problem(seed)
        feats.requires_grad_(True)
        ref, ref_terms = binomial_deviance_loss(feats, memory, index, positives, neg_ratio=0.02)
        (ref_grad,) = torch.autograd.grad(ref, feats)
        with torch.autocast(**BF16):
            amp, amp_terms = binomial_deviance_loss(feats, memory, index, positives, neg_ratio=0.02)
            hard_amp = _hard_set(memory_scores(feats, memory), positives, index, 0.02)
            hard_naive = _hard_set((feats @ memory.T).float(), positives, index, 0.02)
        (amp_grad,) = torch.autograd.grad(amp, feats)  # outside autocast, as Lightning runs backward
        hard_ref = _hard_set(memory_scores(feats, memory), positives, index, 0.02)
        assert amp.dtype == torch.float32
        assert abs(amp.item() - ref.item()) <= 1e-6
        assert torch.allclose(amp_grad, ref_grad, atol=1e-7)
        for key in ref_terms:
            assert abs(amp_terms[key].item() - ref_terms[key].item()) <= 1e-6
        assert torch.equal(hard_amp, hard_ref)
        assert not torch.equal(hard_naive, hard_ref), "bf16 scores should reorder some hard negatives"


def test_mmcl_terms_under_bf16_autocast_equal_fp32():
    feats, memory, index, positives = _problem(4)
    ref_pos, ref_neg = mmcl_terms(feats, memory, index, positives, r=0.02)
    with torch.autocast(**BF16):
        pos, neg = mmcl_terms(feats, memory, index, positives, r=0.02)
    assert pos.dtype == neg.dtype == torch.float32
    assert torch.allclose(pos, ref_pos, atol=1e-6) and torch.allclose(neg, ref_neg, atol=1e-6)


def _tiny_backbone() -> ReIDBackbone:
    torch.manual_seed(0)
    body = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 64, 3, stride=2)
    )
    return ReIDBackbone(body, 64, name="tiny", mean=(0.5,) * 3, std=(0.5,) * 3)


def test_backbone_head_is_fp32_under_autocast_and_the_memory_stays_fp32():
    net = _tiny_backbone().train()
    x = torch.randn(8, 3, 16, 8)
    with torch.autocast(**BF16):
        fmap = net.body(x)
        pool5, bn = net.forward_features(x)
    assert fmap.dtype == torch.bfloat16  # the body follows autocast
    assert pool5.dtype == bn.dtype == torch.float32
    ref_pool5, ref_bn = net.forward_features(x)
    # the head itself adds no rounding: only the bf16 body's rounding remains (relative ~2^-8 per value)
    assert F.cosine_similarity(pool5, ref_pool5).min() > 0.999
    memory = FeatureMemory(8, 64)
    memory.initialise(torch.randn(8, 64))
    with torch.autocast(**BF16):
        memory.update(torch.arange(8), bn.bfloat16(), gamma=0.5)
    assert memory.features.dtype == torch.float32
    assert torch.allclose(memory.features.norm(dim=1), torch.ones(8), atol=1e-6)


def test_whole_loss_from_a_bf16_body_stays_close_to_fp32():
    """End to end through a bf16 body: the features move by the body's rounding, so the loss moves a little
    (stated tolerance: 1 % relative) and the hard-negative sets mostly agree (>= 90 % of their members)."""
    net = _tiny_backbone().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(32, 3, 16, 8, generator=g)
    memory = F.normalize(torch.randn(400, 64, generator=g), dim=1)
    index = torch.randperm(400, generator=g)[:32]
    positives = PositiveSets.from_labels(torch.randint(0, 130, (400,), generator=g))
    ref_feats = F.normalize(net(x), dim=1)
    with torch.autocast(**BF16):
        amp_feats = F.normalize(net(x), dim=1)
        amp, _ = binomial_deviance_loss(amp_feats, memory, index, positives, neg_ratio=0.05)
        hard_amp = _hard_set(memory_scores(amp_feats, memory), positives, index, 0.05)
    ref, _ = binomial_deviance_loss(ref_feats, memory, index, positives, neg_ratio=0.05)
    hard_ref = _hard_set(memory_scores(ref_feats, memory), positives, index, 0.05)
    assert abs(amp.item() - ref.item()) <= 0.01 * abs(ref.item())
    agree = (hard_amp & hard_ref).sum() / hard_ref.sum()
    assert agree >= 0.9, float(agree)
