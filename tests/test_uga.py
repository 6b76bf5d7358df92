"""UGA (ICCV 2019): tracklet grouping, camera-balanced sampling, multi-branch CE, the CVG, the stage-2 loss,
the stage state in checkpoints, and short end-to-end runs on the tiny synthetic set."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mprd.data.records import DatasetError, ImageRecord
from mprd.data.samplers import CameraBalancedSampler
from mprd.methods.uga.config import NoiseConfig, UGAConfig
from mprd.methods.uga.cvg import (
    CrossViewGraph,
    build_cvg,
    cvg_curve,
    cvg_statistics,
    edge_precision_recall,
    undirected_edges,
)
from mprd.methods.uga.inter_camera import inter_camera_loss, tracklet_centres
from mprd.methods.uga.intra_camera import branch_columns, class_logits, intra_camera_loss
from mprd.methods.uga.model import UGAEncoder
from mprd.methods.uga.module import UGAModule, milestone_epochs
from mprd.methods.uga.tracklets import tracklet_pids, tracklets_from_records
from tests.conftest import compose_cfg


def records(pairs: list[tuple[int, int]]) -> list[ImageRecord]:
    return [ImageRecord(f"img{i}.jpg", pid, cam, i) for i, (pid, cam) in enumerate(pairs)]


# ------------------------------------------------------------------------------------------ tracklets
def test_tracklets_group_person_and_camera():
    # (pid, camid): pid 7 in cams 0 and 2, pid 3 in cam 0 (twice) and cam 1, pid 5 in cam 2
    recs = records([(7, 0), (3, 0), (7, 2), (3, 1), (3, 0), (5, 2), (7, 0), (7, 2)])
    tracklet, camera = tracklets_from_records(recs, seed=1)
    assert tracklet.dtype == torch.long and camera.dtype == torch.long
    key = [(r.pid, r.camid) for r in recs]
    for i, j in itertools.combinations(range(len(recs)), 2):
        assert (tracklet[i] == tracklet[j]) == (key[i] == key[j])
    assert sorted(camera.tolist()) == camera.tolist() == [0, 0, 1, 2, 2]  # numbered camera by camera
    for i, r in enumerate(recs):
        assert camera[tracklet[i]] == r.camid
    assert Counter(camera.tolist()) == {0: 2, 1: 1, 2: 2}  # M_t = distinct pids seen by camera t
    assert torch.equal(tracklet_pids(recs, tracklet)[tracklet], torch.tensor([r.pid for r in recs]))


def test_tracklet_order_inside_a_camera_is_seeded_not_by_pid():
    recs = records([(pid, 0) for pid in range(40)])
    a, _ = tracklets_from_records(recs, seed=0)
    assert torch.equal(a, tracklets_from_records(recs, seed=0)[0])
    assert not torch.equal(a, torch.arange(40))  # a random permutation, not the pid order
    assert sorted(a.tolist()) == list(range(40))
    assert not torch.equal(a, tracklets_from_records(recs, seed=1)[0])


def test_tracklets_reject_junk_and_empty():
    with pytest.raises(DatasetError, match="img1.jpg"):
        tracklets_from_records(records([(1, 0), (-1, 1)]))
    with pytest.raises(ValueError, match="empty"):
        tracklets_from_records([])


# ---------------------------------------------------------------------------- noisy tracklets (Table 6)
def noise_records() -> list[ImageRecord]:
    """Camera 0: pids 0-5, 3 images each; camera 1: pids 0-4 with 2, 3, 4, 5, 6 images; camera 2: pid 9 with
    2 images; camera 3: pid 8 with 1 image."""
    pairs = [(p, 0) for p in range(6) for _ in range(3)]
    pairs += [(p, 1) for p in range(5) for _ in range(p + 2)]
    return records(pairs + [(9, 2)] * 2 + [(8, 3)])


def clean_members(recs: list[ImageRecord], tracklet: torch.Tensor) -> dict[int, set[tuple[int, int]]]:
    """Noisy label -> the clean (pid, camera) tracklets its images come from."""
    out: dict[int, set[tuple[int, int]]] = {}
    for r, t in zip(recs, tracklet.tolist(), strict=True):
        out.setdefault(t, set()).add((r.pid, r.camid))
    return out


def check_within_camera(recs: list[ImageRecord], tracklet: torch.Tensor, camera: torch.Tensor) -> None:
    assert torch.equal(camera[tracklet], torch.tensor([r.camid for r in recs]))  # every label in one camera
    assert sorted(set(tracklet.tolist())) == list(range(camera.numel()))  # ids 0..M-1, none empty
    assert camera.tolist() == sorted(camera.tolist())  # still numbered camera by camera


def test_zero_noise_is_the_identity():
    recs = noise_records()
    clean = tracklets_from_records(recs, seed=4)
    for noise in (NoiseConfig(), NoiseConfig(duplication=0.0, duplication_parts=5, mislabeling=0.0)):
        noisy = tracklets_from_records(recs, seed=4, noise=noise)
        assert torch.equal(noisy[0], clean[0]) and torch.equal(noisy[1], clean[1])


def test_id_duplication_exact_counts():
    recs = noise_records()
    # 50 %: round(3) of camera 0's 6 tracklets and round(2.5) = 3 of camera 1's 5 get 2 labels each; camera 2's
    # only tracklet (round(0.5) = 1) too; camera 3's is chosen as well but has 1 image, so it keeps 1 label
    tracklet, camera = tracklets_from_records(recs, seed=0, noise=NoiseConfig(duplication=0.5))
    check_within_camera(recs, tracklet, camera)
    assert Counter(camera.tolist()) == {0: 6 + 3, 1: 5 + 3, 2: 2, 3: 1}
    assert all(len(m) == 1 for m in clean_members(recs, tracklet).values())  # a split never mixes tracklets
    # 100 % into 3 parts: every tracklet of n images becomes min(n, 3) labels, its images dealt out evenly
    tracklet, camera = tracklets_from_records(recs, seed=0, noise=NoiseConfig(duplication=1.0, duplication_parts=3))
    check_within_camera(recs, tracklet, camera)
    assert Counter(camera.tolist()) == {0: 6 * 3, 1: 2 + 3 + 3 + 3 + 3, 2: 2, 3: 1}
    sizes = Counter(tracklet.tolist())
    for clean, labels in _labels_of_clean(recs, tracklet).items():
        parts = sorted(sizes[t] for t in labels)
        assert parts[-1] - parts[0] <= 1, clean  # images dealt out round-robin


def _labels_of_clean(recs: list[ImageRecord], tracklet: torch.Tensor) -> dict[tuple[int, int], set[int]]:
    out: dict[tuple[int, int], set[int]] = {}
    for r, t in zip(recs, tracklet.tolist(), strict=True):
        out.setdefault((r.pid, r.camid), set()).add(t)
    return out


def test_mislabeling_exact_counts_and_merges_inside_a_camera():
    recs = noise_records()
    # 40 %: round(2.4) = 2 of camera 0's 6 merged, round(2.0) = 2 of camera 1's 5; a camera with one
    # tracklet has nothing to merge into and keeps it
    tracklet, camera = tracklets_from_records(recs, seed=0, noise=NoiseConfig(mislabeling=0.4))
    check_within_camera(recs, tracklet, camera)
    assert Counter(camera.tolist()) == {0: 4, 1: 3, 2: 1, 3: 1}
    assert all(len(labels) == 1 for labels in _labels_of_clean(recs, tracklet).values())  # merged whole
    members = clean_members(recs, tracklet)
    for cam, moved in ((0, 2), (1, 2)):
        groups = [m for t, m in members.items() if camera[t] == cam]
        assert sum(len(m) - 1 for m in groups) == moved  # exactly `moved` tracklets lost their own label
    # the majority pid of a merged label is the pid with most images (diagnostic only)
    pids = tracklet_pids(recs, tracklet)
    for t, _ in members.items():
        sizes = Counter(r.pid for r, tt in zip(recs, tracklet.tolist(), strict=True) if tt == t)
        assert pids[t] == min(p for p, n in sizes.items() if n == max(sizes.values()))
    # combined: merge (6 -> 4, 5 -> 3), then split round(0.5 * M_t) of the merged tracklets (all >= 2 images)
    tracklet, camera = tracklets_from_records(recs, seed=0, noise=NoiseConfig(duplication=0.5, mislabeling=0.4))
    check_within_camera(recs, tracklet, camera)
    assert Counter(camera.tolist()) == {0: 4 + 2, 1: 3 + 2, 2: 2, 3: 1}


def test_noise_is_seeded():
    recs = records([(p, c) for p in range(30) for c in range(2) for _ in range(2)])
    noise = NoiseConfig(duplication=0.3, mislabeling=0.3)
    a = tracklets_from_records(recs, seed=1, noise=noise)[0]
    assert torch.equal(a, tracklets_from_records(recs, seed=1, noise=noise)[0])
    def partition(t: torch.Tensor) -> set[frozenset[int]]:  # label ids aside: which images share a label
        return {frozenset(torch.nonzero(t == label).flatten().tolist()) for label in t.unique()}

    clean = partition(tracklets_from_records(recs, seed=1)[0])
    assert partition(a) != clean
    assert partition(tracklets_from_records(recs, seed=2, noise=noise)[0]) != partition(a)


def test_noise_config_validation():
    assert UGAConfig.from_method({"noise": {"duplication": 1.0, "mislabeling": 0.5}}).noise.active
    with pytest.raises(ValueError, match="method.noise.mislabeling"):
        UGAConfig.from_method({"noise": {"mislabeling": 1.0}})
    with pytest.raises(ValueError, match="method.noise.duplication="):
        UGAConfig.from_method({"noise": {"duplication": 1.5}})
    with pytest.raises(ValueError, match="method.noise.duplication_parts"):
        UGAConfig.from_method({"noise": {"duplication": 0.5, "duplication_parts": 1}})


def test_tracklet_pids_majority_and_ties():
    recs = records([(5, 0), (5, 0), (7, 0), (3, 1), (9, 1), (4, 2)])
    assert tracklet_pids(recs, torch.tensor([0, 0, 0, 1, 1, 2])).tolist() == [5, 3, 4]


# ---------------------------------------------------------------------------------------- sampler
def _per_camera(sampler: CameraBalancedSampler, camids: torch.Tensor, epoch: int) -> torch.Tensor:
    batches = sampler.batches(epoch)
    return torch.stack([torch.bincount(camids[torch.tensor(b)], minlength=len(sampler.cameras)) for b in batches])


def test_camera_balanced_equal_when_divisible():
    camids = torch.tensor([0] * 50 + [1] * 20 + [2] * 35)
    sampler = CameraBalancedSampler(camids, batch_size=12, seed=0)
    counts = _per_camera(sampler, camids, 0)
    assert counts.shape == (105 // 12, 3) and bool((counts == 4).all())
    flat = list(iter(sampler))
    assert len(flat) == len(sampler) == 8 * 12


def test_camera_balanced_seven_or_eight_of_sixty_over_eight_cameras():
    camids = torch.arange(8).repeat_interleave(torch.tensor([90, 70, 80, 60, 75, 85, 65, 95]))
    sampler = CameraBalancedSampler(camids, batch_size=60, seed=3)
    for epoch in range(2):
        counts = _per_camera(sampler, camids, epoch)
        assert bool((counts.sum(1) == 60).all())
        assert set(counts.flatten().tolist()) == {7, 8}
        assert torch.equal((counts == 8).sum(1), torch.full((counts.shape[0],), 4))
        # the extra images rotate: over two consecutive batches every camera gets 15
        pairs = counts[: counts.shape[0] // 2 * 2].view(-1, 2, 8).sum(1)
        assert bool((pairs == 15).all())


def test_camera_balanced_reaches_every_image_and_depends_only_on_seed_epoch():
    camids = torch.tensor([0] * 7 + [1] * 30 + [2] * 11)
    sampler = CameraBalancedSampler(camids, batch_size=9, seed=5)
    seen: set[int] = set()
    per_epoch = 5 * 3  # 48 // 9 = 5 batches x 3 per camera
    for epoch in range(math.ceil(30 / per_epoch)):  # the largest camera's cycle
        sampler.set_epoch(epoch)
        order = list(iter(sampler))
        assert order == [i for b in CameraBalancedSampler(camids, 9, seed=5).batches(epoch) for i in b]
        seen |= set(order)
    assert seen == set(range(48))
    # within a camera, images come in full cycles: the first 7 draws of camera 0 are its 7 images
    stream0 = [i for e in range(2) for b in sampler.batches(e) for i in b if camids[i] == 0]
    assert sorted(stream0[:7]) == list(range(7))
    assert sampler.batches(0) != CameraBalancedSampler(camids, 9, seed=6).batches(0)


def test_camera_balanced_rejects_bad_sizes():
    with pytest.raises(ValueError, match="batch_size=2"):
        CameraBalancedSampler(torch.tensor([0, 1, 2, 0, 1, 2]), batch_size=2, seed=0)
    with pytest.raises(ValueError, match="training images"):
        CameraBalancedSampler(torch.tensor([0, 1, 0]), batch_size=4, seed=0)


# ------------------------------------------------------------------------------------ multi-branch CE
def test_intra_camera_loss_equals_per_camera_cross_entropy():
    g = torch.Generator().manual_seed(0)
    branch = torch.tensor([1, 0, 2, 1, 0, 1, 2, 0, 1])  # 9 tracklets over 3 cameras, interleaved ids
    columns, valid = branch_columns(branch, 3)
    logits = torch.randn(6, 9, generator=g)
    tracklet = torch.tensor([0, 1, 2, 5, 7, 8])
    loss = intra_camera_loss(logits, tracklet, branch, columns, valid)
    for n in range(6):
        cam = branch[tracklet[n]]
        own = torch.nonzero(branch == cam).flatten()  # branch f_t: only camera t's classes
        target = (own == tracklet[n]).nonzero().item()
        expected = F.cross_entropy(logits[n, own][None], torch.tensor([target]))
        assert loss[n].item() == pytest.approx(expected.item(), rel=1e-6)


def test_branch_columns_lists_each_camera():
    branch = torch.tensor([2, 0, 2, 2, 1])
    columns, valid = branch_columns(branch, 3)
    assert [columns[t][valid[t]].tolist() for t in range(3)] == [[1], [4], [0, 2, 3]]


def test_centres_are_tracklet_means():
    feats = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0], [5.0, 0.0]])
    centres = tracklet_centres(feats, torch.tensor([1, 0, 1, 1]), 2)
    assert torch.allclose(centres, torch.tensor([[3.0, 2.0], [2.0, 5.0 / 3]]))


# -------------------------------------------------------------------------------------------- CVG
def brute_force_cvg(centres: torch.Tensor, branch: torch.Tensor, k: int, lam: float,
                    mutual: bool = True) -> torch.Tensor:
    """Dense (M, M) edge weights by Eqs. 4-5, pair by pair (self edges excluded); without `mutual`, the directed
    K-NN relation (row i holds i's own K nearest centres of each other camera)."""
    unit = F.normalize(centres, dim=1)
    num = centres.shape[0]
    cos = unit @ unit.t()

    def knn(i: int, cam: int) -> set[int]:
        others = [j for j in range(num) if branch[j] == cam]
        return set(sorted(others, key=lambda j: -cos[i, j].item())[:k])

    dense = torch.zeros(num, num)
    for i, j in itertools.product(range(num), repeat=2):
        if branch[i] == branch[j]:
            continue
        linked = j in knn(i, int(branch[j])) and (i in knn(j, int(branch[i])) or not mutual)
        if linked and cos[i, j] > lam:
            dense[i, j] = cos[i, j]
    return dense


def dense(graph: CrossViewGraph) -> torch.Tensor:
    num = graph.neighbors.shape[0]
    out = torch.zeros(num, num)
    src, dst, w = graph.edges()
    out[src, dst] = w
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_cvg_equals_brute_force(k):
    g = torch.Generator().manual_seed(k)
    ids = torch.randn(6, 8, generator=g)  # 6 hidden people seen by 3 cameras, with noise and distractors
    branch = torch.tensor([0] * 6 + [1] * 5 + [2] * 7)
    who = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 0, 1, 2, 3, 5, 4, 1])
    centres = ids[who] + 0.8 * torch.randn(18, 8, generator=g)
    mutual_only = brute_force_cvg(centres, branch, k, -1.0)
    lam = mutual_only[mutual_only > 0].median().item()  # a threshold that removes some mutual pairs
    expected = brute_force_cvg(centres, branch, k, lam)
    graph = build_cvg(centres, branch, k=k, threshold=lam)
    assert torch.allclose(dense(graph), expected, atol=1e-6)
    assert torch.allclose(dense(build_cvg(centres, branch, k=k, threshold=-1.0)), mutual_only, atol=1e-6)
    # the test is meaningful: edges exist, the threshold removed some, mutuality removed one-sided K-NN pairs
    assert 0 < (expected > 0).sum() < (mutual_only > 0).sum() < 18 * 2 * k
    assert torch.allclose(dense(graph), dense(graph).t())  # mutual -> undirected
    src, dst, _ = graph.edges()
    assert bool((branch[src] != branch[dst]).all())  # cross-camera only, no self edges
    assert bool((graph.neighbors[torch.arange(18), branch] == -1).all())


@pytest.mark.parametrize("k", [1, 2])
def test_cvg_without_mutual_rule_equals_brute_force(k):
    g = torch.Generator().manual_seed(10 + k)
    branch = torch.tensor([0] * 6 + [1] * 5 + [2] * 7)
    centres = torch.randn(18, 8, generator=g)
    one_sided = brute_force_cvg(centres, branch, k, -1.0, mutual=False)
    lam = one_sided[one_sided != 0].median().item()
    for threshold in (-1.0, lam):
        graph = build_cvg(centres, branch, k=k, threshold=threshold, mutual=False)
        expected = brute_force_cvg(centres, branch, k, threshold, mutual=False)
        assert torch.allclose(dense(graph), expected, atol=1e-6)
        mutual = dense(build_cvg(centres, branch, k=k, threshold=threshold))
        assert bool(((mutual != 0) <= (expected != 0)).all())  # the mutual graph is a subgraph
    assert not torch.equal(one_sided != 0, one_sided.t() != 0)  # the test covers one-sided pairs
    # undirected edges: a pair linked in either direction counts once
    pairs = undirected_edges(build_cvg(centres, branch, k=k, threshold=-1.0, mutual=False))
    either = torch.triu((one_sided != 0) | (one_sided.t() != 0), diagonal=1)
    assert sorted(map(tuple, pairs.tolist())) == sorted(map(tuple, either.nonzero().tolist()))


def test_cvg_rejects_one_sided_nearest_neighbours():
    # camera 0: a, b; camera 1: c. c's NN in camera 0 is a, b's NN in camera 1 is c but not mutual
    centres = torch.tensor([[1.0, 0.0], [0.9, 0.44], [0.99, 0.1]])
    graph = build_cvg(centres, torch.tensor([0, 0, 1]), k=1, threshold=0.5)
    assert graph.neighbors[:, :, 0].tolist() == [[-1, 2], [-1, -1], [0, -1]]
    cos = F.cosine_similarity(centres[0], centres[2], dim=0)
    assert graph.weights[0, 1, 0].item() == pytest.approx(cos.item(), rel=1e-6)


def test_edge_precision_recall_on_a_hand_made_case():
    # tracklets: pid 1 in cams 0, 1, 2 and again in cam 0 (a duplicated tracklet); pid 2 in cams 0, 1; pid 3
    pid = torch.tensor([1, 1, 2, 2, 1, 3, 1])
    branch = torch.tensor([0, 1, 0, 1, 2, 2, 0])
    # true cross-camera pairs: pid 1 has 2 + 1 + 1 tracklets over cams 0, 1, 2 -> (4^2 - 2^2 - 1 - 1) / 2 = 5;
    # pid 2: 1; the same-camera pair (0, 6) cannot be an edge and is not counted
    pairs = torch.tensor([[0, 1], [1, 2], [2, 3], [0, 4]])  # right, wrong (pid 1 vs 2), right, right
    precision, recall = edge_precision_recall(pairs, pid, branch)
    assert precision == pytest.approx(3 / 4) and recall == pytest.approx(3 / 6)
    empty = edge_precision_recall(torch.zeros(0, 2, dtype=torch.long), pid, branch)
    assert math.isnan(empty[0]) and empty[1] == 0.0


def test_cvg_curve_matches_the_graphs_and_thins_with_lambda():
    g = torch.Generator().manual_seed(3)
    ids = torch.randn(8, 16, generator=g)
    who = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 0, 2, 4, 6, 7])
    branch = torch.tensor([0] * 8 + [1] * 6 + [2] * 5)
    centres = ids[who] + 0.9 * torch.randn(19, 16, generator=g)
    lams = [0.1, 0.3, 0.5, 0.7, 0.9]
    rows = cvg_curve(centres, branch, who, lams)
    assert [(r["mutual"], r["lambda"]) for r in rows] == [(m, lam) for m in (True, False) for lam in lams]
    by = {(r["mutual"], r["lambda"]): r for r in rows}
    for lam in lams:
        mutual, one_sided = by[(True, lam)], by[(False, lam)]
        expected = brute_force_cvg(centres, branch, 1, lam, mutual=False)
        assert one_sided["edges"] == int(torch.triu((expected != 0) | (expected.t() != 0), 1).sum())
        assert mutual["edges"] <= one_sided["edges"]
        assert mutual["recall"] <= one_sided["recall"]  # the mutual edges are a subset
        pairs = undirected_edges(build_cvg(centres, branch, k=1, threshold=lam))
        assert (mutual["precision"], mutual["recall"]) == pytest.approx(edge_precision_recall(pairs, who, branch),
                                                                        nan_ok=True)
    for m in (True, False):
        edges = [by[(m, lam)]["edges"] for lam in lams]
        assert edges == sorted(edges, reverse=True) and edges[0] > 0


def test_cvg_statistics_against_hidden_pids():
    graph = CrossViewGraph(torch.tensor([[[-1], [2]], [[-1], [3]], [[0], [-1]], [[1], [-1]]]),
                           torch.tensor([[[0.0], [0.9]], [[0.0], [0.7]], [[0.9], [0.0]], [[0.7], [0.0]]]))
    stats = cvg_statistics(graph, torch.tensor([5, 6, 5, 8]))  # edge 0-2 right, 1-3 wrong; pid 6 alone
    assert stats["cvg/edges"] == 2 and stats["cvg/precision"] == 0.5 and stats["cvg/recall"] == 1.0
    assert stats["cvg/mean_weight"] == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------- stage-2 loss
def test_inter_camera_loss_on_a_hand_made_case():
    # tracklets 0, 1 in camera 0; 2, 3 in camera 1; 4 in camera 2; edges 0-2 (0.8) and 0-4 (0.7)
    branch = torch.tensor([0, 0, 1, 1, 2])
    columns, valid = branch_columns(branch, 3)
    nb = torch.full((5, 3, 1), -1)
    w = torch.zeros(5, 3, 1)
    for a, b, e in [(0, 2, 0.8), (0, 4, 0.7)]:
        nb[a, branch[b], 0], nb[b, branch[a], 0], w[a, branch[b], 0], w[b, branch[a], 0] = b, a, e, e
    graph = CrossViewGraph(nb, w)
    z = torch.tensor([[2.0, 0.5, 1.0, -1.0, 0.3], [0.1, 1.5, 0.0, 2.0, -0.5]])
    tracklet = torch.tensor([0, 1])

    def ce(row: int, cols: list[int], target: int) -> float:
        return -math.log(math.exp(z[row, target]) / sum(math.exp(z[row, c]) for c in cols))

    self_term, cross = inter_camera_loss(z, tracklet, branch, graph, columns, valid, self_weight=1.0)
    assert self_term.tolist() == pytest.approx([ce(0, [0, 1], 0), ce(1, [0, 1], 1)], rel=1e-6)
    assert cross.tolist() == pytest.approx([0.8 * ce(0, [2, 3], 2) + 0.7 * ce(0, [4], 4), 0.0], abs=1e-6)
    # Eq. 7 (uniform weights) and the "w/o self-cam" ablation
    s0, c0 = inter_camera_loss(z, tracklet, branch, graph, columns, valid, self_weight=0.0, uniform=True)
    assert s0.tolist() == [0.0, 0.0]
    assert c0[0].item() == pytest.approx(ce(0, [2, 3], 2) + ce(0, [4], 4), rel=1e-6)


def test_inter_camera_gradient_pulls_the_neighbour_centre_to_the_image():
    """Eqs. 10-12 with the sign fixed: -dl/dc_a = e (1[a = target] - p_a) phi, so descent moves c_target to phi."""
    branch = torch.tensor([0, 1, 1, 1])
    columns, valid = branch_columns(branch, 2)
    graph = CrossViewGraph(torch.tensor([[[-1], [2]], [[-1], [-1]], [[0], [-1]], [[-1], [-1]]]),
                           torch.tensor([[[0.0], [0.6]], [[0.0], [0.0]], [[0.6], [0.0]], [[0.0], [0.0]]]))
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(1, 5, generator=g)
    centres = torch.randn(4, 5, generator=g, requires_grad=True)
    logits = class_logits(phi, centres, "raw", 1.0)
    _, cross = inter_camera_loss(logits, torch.tensor([0]), branch, graph, columns, valid, self_weight=0.0)
    cross.sum().backward()
    p = torch.softmax((centres[1:] @ phi[0]).detach(), 0)
    for a, pa in zip([1, 2, 3], p, strict=True):
        err = float(a == 2) - pa
        assert torch.allclose(-centres.grad[a], 0.6 * err * phi[0], atol=1e-6)
    assert torch.count_nonzero(centres.grad[0]) == 0  # camera 0 is not in the cross term


# ------------------------------------------------------------------------------------ model and state
def make_module(max_epochs: int = 4, **method) -> UGAModule:
    from mprd.core.backbone import build_backbone

    backbone = build_backbone("resnet18", pretrained="none")
    recs = records([(p, c) for p in range(5) for c in range(3) if (p + c) % 4])
    tracklet, camera = tracklets_from_records(recs)
    encoder = UGAEncoder(backbone, "embed", 16, 0.5)
    config = UGAConfig.from_method({"family": "uga", "name": "uga", **method})
    return UGAModule(encoder, tracklet, camera, config=config, max_epochs=max_epochs,
                     diagnostic_pids=tracklet_pids(recs, tracklet))


def test_encoder_is_bn_dropout_fc_bn():
    module = make_module()
    enc = module.backbone.eval()
    x = torch.randn(3, 3, 64, 32)
    with torch.no_grad():
        _, bn = enc.trunk.forward_features(x)
        expected = enc.embed[2](enc.embed[1](bn))  # dropout is the identity in eval mode
        assert torch.allclose(enc(x), expected, atol=1e-5)
        assert torch.allclose(enc.extract(x).norm(dim=1), torch.ones(3), atol=1e-5)
    assert enc.embed[1].in_features == 512 and enc.embed[1].out_features == 16 and enc.embed[1].bias is None
    assert module.classifier.shape == (module.num_tracklets, 16)


def test_stage_state_round_trip(tmp_path):
    a = make_module()
    a.stage = 2
    a.graph = build_cvg(torch.randn(a.num_tracklets, 16), a.branch_of_tracklet, k=1, threshold=-1.0)
    a.history = [{"epoch": 2, "rank1": 10.0}]
    torch.save({"uga": a.stage_state()}, tmp_path / "state.pt")
    b = make_module()
    assert b.stage == 1 and b.graph is None
    b.on_load_checkpoint(torch.load(tmp_path / "state.pt", weights_only=True))
    assert b.stage == 2 and b.history == a.history
    assert torch.equal(b.graph.neighbors, a.graph.neighbors) and torch.equal(b.graph.weights, a.graph.weights)
    other = {"uga": {**a.stage_state(), "tracklet_of_image": a.tracklet_of_image.flip(0)}}
    with pytest.raises(ValueError, match="tracklets differ"):
        b.on_load_checkpoint(other)


def test_milestones_are_fractions_of_a_stage():
    assert milestone_epochs([0.5, 0.75], 80) == [40, 60]  # UGA §4.2
    assert milestone_epochs([0.5, 0.75], 6) == [3, 5]
    assert milestone_epochs([0.5], 1) == [1]  # never before the stage's first epoch ends


def test_network_lr_scale_applies_to_the_network_group_in_every_stage_and_milestone():
    module = make_module(max_epochs=4, optim={"network_lr_scale": 0.1})
    opt1, opt2 = module.configure_optimizers()
    for opt in (opt1, opt2):
        lrs = {g["name"]: g["lr"] for g in opt.param_groups}
        assert lrs == pytest.approx({"network": 3.5e-5, "classifier": 3.5e-4})
    module._stage_optimizer = lambda: opt1  # no trainer here
    module.log = lambda *args, **kwargs: None
    module._set_learning_rates(1)  # stage 1 = epochs 0-1; milestones [0.5, 0.75] x 2 = epochs 1, 2: one drop
    assert {g["name"]: g["lr"] for g in opt1.param_groups} == pytest.approx({"network": 3.5e-6, "classifier": 3.5e-5})
    assert UGAConfig.from_method({}).optim.network_lr_scale == 1.0  # the paper: one lr for everything
    with pytest.raises(ValueError, match="method.optim.network_lr_scale"):
        UGAConfig.from_method({"optim": {"network_lr_scale": 0.0}})


def test_config_validation_and_stage_lengths():
    assert UGAConfig.from_method({}).stage_epochs(160) == (80, 80)
    assert UGAConfig.from_method({"stages": {"inter": False}}).stage_epochs(160) == (80, 0)
    assert UGAConfig.from_method({"stages": {"intra_epochs": 3}}).stage_epochs(5) == (3, 2)
    with pytest.raises(ValueError, match="method.model.head"):
        UGAConfig.from_method({"model": {"head": "mlp"}})
    with pytest.raises(ValueError, match="method.cvg: unknown key"):
        UGAConfig.from_method({"cvg": {"lambda": 0.6}})
    with pytest.raises(ValueError, match="intra_epochs"):
        UGAConfig.from_method({"stages": {"intra_epochs": 5}}).stage_epochs(5)


# -------------------------------------------------------------------------------------- end to end
UGA_TINY = ("max_epochs=2", "eval_every=1", "data.batch_size=12", "data.test_batch_size=128")


def test_uga_tiny_run_writes_metrics_and_cvg_logs(data_root, tmp_path):
    cfg = compose_cfg(data_root, "experiment=uga/uga", *UGA_TINY, "eval_initial=false")  # epochs 1, 2 only
    assert cfg.method.supervision == "intra-camera labels"
    record = run_cfg(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["row"] == "uga" and saved["artefact"] == "uga"
    assert [e["epoch"] for e in saved["per_epoch"]] == [1, 2]
    assert saved["final"] == record["final"]
    assert saved["final"]["rank1"] <= saved["final"]["rank5"] <= saved["final"]["rank10"] <= 100.0
    log = saved["train_log"]
    assert log["uga/stage"] == 2.0
    for key in ("cvg/edges", "cvg/precision", "cvg/recall", "train/loss_self", "train/loss_cross", "train/loss_intra"):
        assert key in log
    assert 0.0 <= log["cvg/precision"] <= 1.0
    assert log["lr/stage"] == pytest.approx(3.5e-4)  # stage 2's fresh schedule starts at the base lr
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    assert state["uga"]["stage"] == 2 and state["uga"]["graph"] is not None


def test_camera_balanced_loader_of_the_datamodule(data_root):
    from mprd.data.datamodule import ReIDDataModule

    dm = ReIDDataModule(name="synthetic", root=str(data_root / "data"), synthetic={"preset": "tiny"}, height=32,
                        width=16, batch_size=12, in_memory=False, batched_augment=True)
    dm.prepare_data()
    dm.setup("fit")
    camids = torch.tensor([r.camid for r in dm.data.train])
    batches = list(dm.camera_balanced_dataloader())
    assert len(batches) == len(camids) // 12
    for batch in batches:
        assert set(batch) == {"image", "index", "camid"}  # never a pid
        assert batch["image"].shape == (12, 3, 32, 16)
        assert torch.equal(batch["camid"], camids[batch["index"]])
        assert torch.bincount(batch["camid"], minlength=6).tolist() == [2] * 6


def run_cfg(cfg, out: Path) -> dict:
    from mprd.train import run

    return run(cfg, out)


@pytest.mark.slow
def test_uga_resume_across_the_transition_matches_a_straight_run(data_root, tmp_path):
    """Interrupt at the end of stage 1, resume (transition then happens after loading) and end where a
    straight run ends; then an intra-only run equals the straight run's stage-1 model."""
    common = ("experiment=uga/uga", "max_epochs=2", "eval_every=2", "data.batch_size=12", "seed=2")
    straight = run_cfg(compose_cfg(data_root, *common), tmp_path / "straight")
    first = run_cfg(compose_cfg(data_root, *common, "debug.stop_after_epochs=1"), tmp_path / "resumed")
    assert first == {"interrupted_after_epochs": 1}
    ckpt = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=False)["uga"]["stage"] == 1
    resumed = run_cfg(compose_cfg(data_root, *common, f"ckpt_path={ckpt}"), tmp_path / "resumed")
    assert resumed["final"] == pytest.approx(straight["final"], abs=1e-6)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(ckpt, weights_only=False)
    assert torch.allclose(a["state_dict"]["classifier"], b["state_dict"]["classifier"], atol=1e-6)
    assert torch.equal(a["uga"]["graph"]["neighbors"], b["uga"]["graph"]["neighbors"])

    # eval_every=1: the query/gallery caches are then first decoded during fit (see the report: decoding them
    # first inside train.py's final trainer.validate() fails under inference mode)
    intra = run_cfg(compose_cfg(data_root, *common[1:], "experiment=uga/intra", "eval_every=1",
                                  "eval_initial=false"), tmp_path / "intra")
    assert [e["epoch"] for e in intra["per_epoch"]] == [1]
    assert intra["row"] == "uga_intra"


# ------------------------------------------------------------------- rows, sweeps and reports (Tables 3-6)
def test_issue_rows_and_the_table5_pair(tmp_path):
    rows = {e: compose_cfg(tmp_path, f"experiment=uga/{e}") for e in ("intra", "noself", "uga", "noself_lambda070",
                                                                      "lambda070", "table3")}
    assert [rows[e].row for e in ("intra", "noself", "uga")] == ["uga_intra", "uga_noself", "uga"]
    full, noself = rows["uga"], rows["noself"]
    assert noself.method.loss.self_weight == 0.0 and full.method.loss.self_weight == 1.0
    # uga_noself differs from uga in the alpha term only; the paper's lambda = 0.7 pair is a separate row
    assert {**noself.method, "loss": None} == {**full.method, "loss": None}
    pair = rows["noself_lambda070"], rows["lambda070"]
    assert [c.method.cvg.threshold for c in pair] == [0.7, 0.7] and pair[0].row == "uga_noself_lambda0.7"
    assert rows["table3"].artefact == "table3" and "intra-camera-labels" in rows["table3"].tags
    from mprd.report.artefacts import get  # `make reproduce-uga` runs these rows (tests/test_artefacts.py)

    assert get("baselines").rows("uga") == ["intra", "noself", "uga"]


def _write_metrics(folder: Path, row: str, artefact: str, sweep: dict, rank1: float, mAP: float) -> None:
    folder.mkdir(parents=True)
    rec = {"method": row, "row": row, "artefact": artefact, "dataset": "synthetic", "seed": 0, "preset": "cpu",
           "sweep": sweep, "final": {"rank1": rank1, "rank5": rank1 + 5, "rank10": rank1 + 8, "mAP": mAP}}
    (folder / "metrics.json").write_text(json.dumps(rec))


def test_noise_sweep_report_splits_the_two_kinds(tmp_path):
    from mprd import report

    for kind, rates in (("duplication", (0.0, 0.2, 0.5, 1.0)), ("mislabeling", (0.0, 0.2, 0.5))):
        for rate in rates:
            _write_metrics(tmp_path / f"{kind}{rate}", "uga_intra", "sweep-uga-noise", {"rate": rate, "kind": kind},
                           50.0 - 10 * rate, 30.0 - 10 * rate)
    df = report.aggregate(report.collect_runs(tmp_path), "sweep-uga-noise", "synthetic")
    assert df.attrs["param"] == "rate" and df.attrs["reference_dataset"] == "mars"
    got = {(r.key, r.x): (r.rank1_mean, r.paper_rank1, r.paper_rank5, r.paper_mAP) for r in df.itertuples()}
    assert len(got) == 7
    assert got[("uga_intra[kind=duplication]", 0.2)] == (48.0, 54.1, 68.9, 31.9)  # UGA Table 6
    assert got[("uga_intra[kind=duplication]", 1.0)] == (40.0, 48.8, 64.2, 27.2)
    assert got[("uga_intra[kind=mislabeling]", 0.5)] == (45.0, 45.7, 61.4, 26.8)
    assert got[("uga_intra[kind=mislabeling]", 0.0)][1:] == (55.1, 74.6, 35.1)


def test_lambda_sweep_report_files(tmp_path):
    from mprd import report

    for lam in (0.55, 0.6, 0.65, 0.7, 0.75):
        _write_metrics(tmp_path / "runs" / f"lambda{lam}", "uga", "sweep-uga-lambda", {"lambda": lam}, 40 + lam, 20.0)
    assert report.main(["sweep-uga-lambda", "--runs", str(tmp_path / "runs"), "--dataset", "synthetic",
                        "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "sweep-uga-lambda-synthetic.md").read_text()
    assert text.startswith("# UGA Table 3: CVG threshold λ (intra-camera labels)")
    line = next(row for row in text.splitlines() if row.startswith("| UGA") and "| 0.7 |" in row)
    assert "| 40.7 |" in line and "| 87.9 | 71.0 |" in line  # ours, then Market-1501's Table 3 row
    assert (tmp_path / "out" / "sweep-uga-lambda-synthetic.png").stat().st_size > 0


def test_build_module_applies_the_noise_options(tmp_path):
    from types import SimpleNamespace

    from mprd.core.backbone import build_backbone
    from mprd.core.config import build_method

    recs = noise_records()
    dm = SimpleNamespace(data=SimpleNamespace(train=recs), camera_balanced_dataloader=lambda: None)
    cfg = compose_cfg(tmp_path, "experiment=uga/intra", "method.noise.mislabeling=0.4", "method.model.embed_dim=8")
    module = build_method(cfg, dm, build_backbone("resnet18", pretrained="none"))
    assert module.num_tracklets == 4 + 3 + 1 + 1
    expected = tracklets_from_records(recs, seed=int(cfg.seed), noise=NoiseConfig(mislabeling=0.4))[0]
    assert torch.equal(module.tracklet_of_image, expected)


def test_cvg_curve_cli_on_tiny(data_root, tmp_path):
    """benchmarks/uga_cvg_curve.py with no checkpoint (the initial network) on the tiny set: one CSV row per
    (mutual, λ), mutual edges never more than one-sided ones, and the PNG."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "uga_cvg_curve.py"
    spec = importlib.util.spec_from_file_location("uga_cvg_curve", path)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = [f"paths.root_dir={data_root}", "dataset.synthetic.preset=tiny", "logger.wandb.enabled=false",
            "data.test_batch_size=128", "--lambdas", "0.1,0.5,0.65,0.9", "--out", str(tmp_path), "--device", "cpu"]
    assert cli.main(args) == 0
    lines = (tmp_path / "uga-cvg-curve-synthetic-initial.csv").read_text().splitlines()
    assert lines[0] == "mutual,lambda,edges,precision,recall" and len(lines) == 1 + 2 * 4
    rows = [line.split(",") for line in lines[1:]]
    assert [(r[0], float(r[1])) for r in rows] == [(m, lam) for m in ("true", "false") for lam in (0.1, 0.5, 0.65, 0.9)]
    edges = {(r[0], r[1]): int(r[2]) for r in rows}
    assert all(edges[("true", lam)] <= edges[("false", lam)] for lam in ("0.1", "0.5", "0.65", "0.9"))
    assert edges[("true", "0.1")] > 0 and all(0.0 <= float(r[4]) <= 1.0 for r in rows)
    assert (tmp_path / "uga-cvg-curve-synthetic-initial.png").read_bytes()[:4] == b"\x89PNG"
    assert cli.main(["--run", str(tmp_path / "missing")]) == 2  # clear error, no traceback
