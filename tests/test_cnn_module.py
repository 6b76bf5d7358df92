"""CNNModule pieces that need no Trainer: per-batch positive sets (MLCR's release) and their meta override."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mprd.core.backbone import build_backbone
from mprd.core.cnn_module import CNNModule
from mprd.core.positive_sets import PositiveSets
from mprd.methods.mlcr.mplp import MPLPGenerator, mplp_positive_sets
from mprd.methods.mprd.meta import MetaGroundTruth


def _module(generator, per_batch: bool, start_epoch: int = 0) -> CNNModule:
    backbone = build_backbone("resnet18", "none")
    return CNNModule(backbone, num_train=60, generator=generator, max_epochs=2,
                     labels={"start_epoch": start_epoch, "per_batch": per_batch})


def _memory(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(12).repeat_interleave(5)
    centres = F.normalize(torch.randn(12, 512, generator=g), dim=1)
    return F.normalize(centres[pids] + 0.03 * torch.randn(60, 512, generator=g), dim=1), pids


def test_per_batch_positives_come_from_the_memory_as_it_is_now() -> None:
    mem, _ = _memory()
    module = _module(MPLPGenerator(threshold=0.6, variant="release"), per_batch=True)
    module.memory.initialise(mem)
    index = torch.tensor([3, 17, 42])
    got = module.batch_positives(index)
    expected = mplp_positive_sets(mem, threshold=0.6, variant="release")
    for i in index.tolist():
        assert sorted(got.row(i).tolist()) == sorted(expected.row(i).tolist())
        assert got.row(i).numel() > 1
    # a later write moves slot 17 to slot 3's cluster: the next step's labels see it at once
    module.memory.update(torch.tensor([17]), mem[3:4], gamma=1.0)
    assert 17 in module.batch_positives(torch.tensor([3])).row(3).tolist()
    assert 17 not in module.positives.row(3).tolist()  # the epoch's sets (singletons here) are untouched


def test_per_batch_off_or_before_start_epoch_uses_the_epoch_sets() -> None:
    mem, _ = _memory()
    for module in (_module(MPLPGenerator(), per_batch=False), _module(MPLPGenerator(), per_batch=True, start_epoch=1)):
        module.memory.initialise(mem)
        module.positives = PositiveSets.singletons(60)
        assert module.batch_positives(torch.tensor([3])) is module.positives


def test_per_batch_positives_keep_the_meta_ground_truth_override() -> None:
    mem, pids = _memory()
    wrapped = MetaGroundTruth(MPLPGenerator(threshold=0.99), pids, num_ids=2, seed=0)  # t = 0.99: MPLP finds nobody
    module = _module(wrapped, per_batch=True)
    module.memory.initialise(mem)
    meta_image = int(torch.nonzero(torch.isin(pids, torch.tensor(wrapped.meta_ids)))[0])
    other = int(torch.nonzero(~torch.isin(pids, torch.tensor(wrapped.meta_ids)))[0])
    got = module.batch_positives(torch.tensor([meta_image, other]))
    assert sorted(got.row(meta_image).tolist()) == torch.nonzero(pids == pids[meta_image]).flatten().tolist()
    assert got.row(other).tolist() == [other]


def test_excluded_anchors_carry_no_loss_and_are_never_positives_or_negatives() -> None:
    from mprd.methods.baselines import SingleGenerator

    mem, pids = _memory()
    excluded = pids < 2
    module = CNNModule(build_backbone("resnet18", "none"), num_train=60, generator=SingleGenerator(), max_epochs=2,
                       loss={"neg_ratio": 0.1}, excluded_slots=excluded)
    module.memory.initialise(mem)
    module.positives = PositiveSets.from_labels(pids)
    feats = F.normalize(torch.randn(4, 512, generator=torch.Generator().manual_seed(1)), dim=1)
    index = torch.tensor([0, 20, 33, 7])  # 0 and 7 are excluded anchors
    loss, _ = module._loss(feats, index)
    reference = CNNModule(build_backbone("resnet18", "none"), num_train=60, generator=SingleGenerator(), max_epochs=2,
                          loss={"neg_ratio": 0.1})
    keep = ~excluded
    reference.memory = type(module.memory)(int(keep.sum()), 512)
    reference.memory.initialise(mem[keep])
    reference.positives = PositiveSets.from_labels(pids[keep])
    new = torch.cumsum(keep.long(), 0) - 1
    expected, _ = reference._loss(feats[[1, 2]], new[index[[1, 2]]])
    assert torch.allclose(loss, expected, atol=1e-5)
    only_excluded, _ = module._loss(feats[[0, 3]], index[[0, 3]])
    assert only_excluded.item() == 0.0



def test_dead_units_counts_constant_columns_at_zero_and_at_the_relu6_ceiling():
    """Columns that are 0 everywhere or 6 everywhere are dead; a varying column or one with variance just
    above the threshold is not; the count ignores the column's level (docs/dynamics.md cause 7)."""
    from mprd.diagnostics import dead_units

    n = 10
    varying = torch.linspace(0.0, 6.0, n)
    tiny = torch.tensor([0.0, 0.1] * (n // 2))  # population variance 0.0025 > 1e-3
    almost = torch.tensor([3.0, 3.02] * (n // 2))  # population variance 1e-4 < 1e-3
    pool5 = torch.stack([torch.zeros(n), torch.full((n,), 6.0), varying, tiny, almost], dim=1)
    assert dead_units(pool5) == 3
    assert dead_units(pool5, min_var=1e-5) == 2
    with pytest.raises(ValueError, match="expected an"):
        dead_units(torch.zeros(2, 3, 4))
