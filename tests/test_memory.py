import pytest
import torch
import torch.nn.functional as F

from mprd.core.memory import FeatureMemory, gamma_schedule


def test_gamma_schedule_matches_paper_endpoints():
    # MPRD §5.2: gamma = 1 at epoch 1, linearly to 0.5 at epoch 40 (0-based epochs here)
    assert gamma_schedule(0, 40) == 1.0
    assert gamma_schedule(39, 40) == pytest.approx(0.5)
    assert gamma_schedule(13, 40) == pytest.approx(1 - 0.5 * 13 / 39)
    assert gamma_schedule(0, 1) == 1.0


def test_update_is_eq1_and_normalised():
    torch.manual_seed(0)
    mem = FeatureMemory(5, 4)
    init = torch.randn(5, 4)
    mem.initialise(init)
    assert torch.allclose(mem.features, F.normalize(init, dim=1))
    new = torch.randn(2, 4, requires_grad=True)
    before = mem.features.clone()
    mem.update(torch.tensor([1, 3]), new, gamma=0.7)
    expected = F.normalize(0.7 * F.normalize(new.detach(), dim=1) + 0.3 * before[[1, 3]], dim=1)
    assert torch.allclose(mem.features[[1, 3]], expected, atol=1e-6)
    # untouched slots unchanged; no graph attached to the buffer
    assert torch.equal(mem.features[[0, 2, 4]], before[[0, 2, 4]])
    assert not mem.features.requires_grad
    # gamma = 1 overwrites with the new feature
    mem.update(torch.tensor([0]), new[:1], gamma=1.0)
    assert torch.allclose(mem.features[0], F.normalize(new.detach()[0], dim=0), atol=1e-6)


def test_duplicate_indices_average_independent_of_order():
    mem_a, mem_b = FeatureMemory(3, 2), FeatureMemory(3, 2)
    mem_a.initialise(torch.eye(3, 2) + 0.1)
    mem_b.initialise(torch.eye(3, 2) + 0.1)
    f = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mem_a.update(torch.tensor([2, 2]), f, 0.5)
    mem_b.update(torch.tensor([2, 2]), f.flip(0), 0.5)
    assert torch.allclose(mem_a.features, mem_b.features)


def test_memory_is_saved_in_state_dict():
    mem = FeatureMemory(4, 3)
    mem.initialise(torch.randn(4, 3))
    clone = FeatureMemory(4, 3)
    clone.load_state_dict(mem.state_dict())
    assert torch.equal(clone.features, mem.features) and bool(clone.initialised)
