import itertools

import pytest
import torch
import torch.nn.functional as F

from mprd.core.neighbors import adaptive_k, adaptive_knn, knn
from mprd.core.positive_sets import PositiveSets
from mprd.methods.baselines import build_generator


def rows(p: PositiveSets) -> list[list[int]]:
    return [p.row(i).tolist() for i in range(len(p))]


def test_positive_sets_builders_and_queries():
    p = PositiveSets.from_labels(torch.tensor([7, 3, 7, 5, 3]))
    assert rows(p) == [[0, 2], [1, 4], [0, 2], [3], [1, 4]]
    assert p.sizes.tolist() == [2, 2, 2, 1, 2]
    b, j = p.batch_pairs(torch.tensor([3, 0]))
    assert b.tolist() == [0, 1, 1] and j.tolist() == [3, 0, 2]
    mask = p.batch_mask(torch.tensor([1]))
    assert mask.tolist() == [[False, True, False, False, True]]
    q = PositiveSets.from_neighbors(torch.tensor([[1, -1], [0, 0], [-1, -1]]))
    assert rows(q) == [[0, 1], [0, 1], [2]]  # self added, duplicates merged, padding ignored
    assert rows(PositiveSets.from_state(q.to_state())) == rows(q)


def test_pair_precision_recall_hand_computed():
    labels = torch.tensor([0, 0, 0, 1])
    # predicted off-diagonal ordered pairs: (0,1) true, (0,3) false, (1,0) true
    p = PositiveSets.from_mask_rows(torch.tensor([0, 0, 1]), torch.tensor([1, 3, 0]), 4)
    precision, recall = p.pair_precision_recall(labels)
    assert precision == pytest.approx(2 / 3)
    assert recall == pytest.approx(2 / 6)  # 3 same-label images -> 6 ordered pairs


@pytest.fixture
def clustered():
    # three tight clusters of 4 on the unit sphere + 2 isolated points
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(3, 32), dim=1)
    pts = [F.normalize(c + 0.05 * torch.randn(4, 32), dim=1) for c in centres]
    pts.append(F.normalize(torch.randn(2, 32), dim=1))
    return torch.cat(pts), torch.tensor([0] * 4 + [1] * 4 + [2] * 4 + [3, 4])


def test_single_super_knn_ss_on_hand_made_features(clustered):
    memory, labels = clustered
    assert rows(build_generator("single").refresh(memory)) == [[i] for i in range(14)]
    sup = rows(build_generator("super", train_labels=labels).refresh(memory))
    assert sup[0] == [0, 1, 2, 3] and sup[12] == [12]
    knn3 = build_generator("knn", k=3).refresh(memory)
    assert rows(knn3)[:12] == [list(range(4 * (i // 4), 4 * (i // 4) + 4)) for i in range(12)]
    ss = rows(build_generator("ss", threshold=0.6).refresh(memory))
    brute = (memory @ memory.T) > 0.6
    assert ss == [torch.nonzero(brute[i]).flatten().tolist() for i in range(14)]
    with pytest.raises(ValueError, match="train_labels"):
        build_generator("super")


@pytest.mark.parametrize("exclude_self", [False, True])
def test_knn_backends_agree(exclude_self):
    torch.manual_seed(3)
    x = F.normalize(torch.randn(500, 24), dim=1)
    s1, i1 = knn(x, x, 10, exclude_self=exclude_self, backend="faiss")
    s2, i2 = knn(x, x, 10, exclude_self=exclude_self, backend="torch", chunk_size=77)
    assert torch.equal(i1, i2)
    assert torch.allclose(s1, s2, atol=1e-5)
    if exclude_self:
        assert not (i1 == torch.arange(500).unsqueeze(1)).any()
    else:
        assert torch.equal(i1[:, 0], torch.arange(500))
    brute = torch.topk(x @ x.T - (2 * torch.eye(500) if exclude_self else 0), 10).indices
    assert torch.equal(i2, brute)


def test_adaptive_k_rule():
    # MPRD §3.4: k_i = max(8, #{j != i : cos > 0.6}) (self excluded), capped by k_max
    torch.manual_seed(4)
    x = F.normalize(torch.randn(12, 3), dim=1)
    x[:10] = F.normalize(torch.tensor([1.0, 0.0, 0.0]) + 0.01 * torch.randn(10, 3), dim=1)
    k = adaptive_k(x, 0.6, 8)
    sims = x @ x.T
    expected = [max(8, sum(1 for j in range(12) if j != i and sims[i, j] > 0.6)) for i in range(12)]
    assert k.tolist() == expected and k[0] == 9
    assert adaptive_k(x, 0.6, 8, k_max=8).max() == 8
    _, idx, kk = adaptive_knn(x, 0.6, 8, 64)
    for i, c in itertools.product(range(12), range(idx.shape[1])):
        assert (idx[i, c] >= 0) == (c < kk[i])


def test_ss_cap_keeps_the_most_similar_images_above_the_threshold(clustered):
    """recipe.k_max: P_i = {i} + at most max_k images above t, the most similar first; the cap never adds
    images below t, and `max_k=None` is the paper's uncapped rule."""
    memory, _ = clustered
    sims = memory @ memory.T
    capped = build_generator("ss", threshold=0.6, max_k=2).refresh(memory)
    for i in range(14):
        order = [j for j in torch.argsort(sims[i], descending=True).tolist() if j != i]
        above = [j for j in order if sims[i, j] > 0.6]
        assert sorted(capped.row(i).tolist()) == sorted([i] + above[:2])
    assert capped.sizes[:12].tolist() == [3] * 12 and capped.sizes[12:].tolist() == [1, 1]
    uncapped = build_generator("ss", threshold=0.6, max_k=None).refresh(memory)
    assert uncapped.sizes[:12].tolist() == [4] * 12
    with pytest.raises(ValueError, match="max_k"):
        build_generator("ss", max_k=0)


def test_super_knn_keeps_exactly_the_same_identity_neighbours():
    """Our ceiling row: P_i = {i} + the members of NN_K(i) (brute force, self excluded) with i's identity."""
    torch.manual_seed(5)
    memory = F.normalize(torch.randn(60, 8), dim=1)
    labels = torch.randint(0, 6, (60,))
    p = build_generator("super_knn", train_labels=labels, k=5).refresh(memory)
    nn5 = torch.topk(memory @ memory.T - 2 * torch.eye(60), 5).indices
    for i in range(60):
        expected = {i} | {j for j in nn5[i].tolist() if labels[j] == labels[i]}
        assert set(p.row(i).tolist()) == expected
    # a subset of both KNN's and Super's sets; precision 1 and recall below Super's
    knn5 = build_generator("knn", k=5).refresh(memory)
    sup = build_generator("super", train_labels=labels).refresh(memory)
    for i in range(60):
        row = set(p.row(i).tolist())
        assert row <= set(knn5.row(i).tolist()) and row <= set(sup.row(i).tolist())
    precision, recall = p.pair_precision_recall(labels)
    assert precision == 1.0 and 0 < recall < 1
    with pytest.raises(ValueError, match="train_labels"):
        build_generator("super_knn", k=5)
    with pytest.raises(ValueError, match="generator.k"):
        build_generator("super_knn", train_labels=labels, k=0)
    with pytest.raises(ValueError, match="3 labels for 60"):
        build_generator("super_knn", train_labels=labels[:3]).refresh(memory)
