"""MPRD's alternating loop: §4.2 training pairs, mini-batch composition, η (Eq. 10), Eq. 7 filtering."""

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import mprd.methods.mprd.algorithm as loop
import mprd.methods.mprd.pairs as pairsets
from mprd.core.neighbors import adaptive_knn
from mprd.core.positive_sets import PositiveSets
from mprd.methods.mprd.algorithm import generator_settings
from mprd.methods.mprd.gcn import GCNLearner
from mprd.methods.mprd.meta import draw_meta_identities, meta_mask
from tests.conftest import compose_cfg

# the real conf/method/mprd.yaml and conf/gcn/paper.yaml, scaled down to 60 images
SMALL = ("method=mprd", "method.neighbors.min_k=4", "method.neighbors.k_max=8", "method.structures.max_label=4",
         "method.meta.num_ids=3", "method.meta.seed=0", "method.loss.neg_ratio=0.05", "gcn.batch_anchors=8",
         "gcn.infer_batch=64")


@pytest.fixture(scope="module", autouse=True)
def _base_cfg(tmp_path_factory) -> None:
    global BASE_CFG
    cfg = compose_cfg(tmp_path_factory.mktemp("cfg"), *SMALL)
    BASE_CFG = generator_settings(cfg.method, OmegaConf.to_container(cfg.gcn, resolve=True))


BASE_CFG: dict = {}


def clustered(n_ids: int = 12, per: int = 5, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pids = torch.arange(n_ids).repeat_interleave(per)
    centres = F.normalize(torch.randn(n_ids, d, generator=g), dim=1)
    mem = F.normalize(centres[pids] + 0.35 * torch.randn(n_ids * per, d, generator=g), dim=1)
    return mem, pids


def test_draw_meta_identities_is_seeded_and_skips_singletons():
    pids = torch.tensor([1, 1, 2, 3, 3, 4, 4, 5])
    a = draw_meta_identities(pids, 3, seed=7)
    assert a == draw_meta_identities(pids, 3, seed=7)
    assert 2 not in a and len(set(a)) == 3 and set(a) <= {1, 3, 4, 5}
    assert draw_meta_identities(pids, 0, 1) == []
    with pytest.raises(ValueError, match="num_ids=5"):
        draw_meta_identities(pids, 5, 0)
    assert meta_mask(pids, [3, 5]).tolist() == [False, False, False, True, True, False, False, True]


def test_perturbation_pairs():
    gen = torch.Generator().manual_seed(0)
    anchors = torch.tensor([0, 3, 5])
    p = pairsets.perturbation_pairs(anchors, torch.tensor([10, 11, 12]), num_slots=6, num_neg=2, gen=gen)
    pos = p.label == 1
    assert p.left[pos].tolist() == [0, 3, 5] and p.right[pos].tolist() == [10, 11, 12]
    neg = ~pos
    assert neg.sum() == 6 and (p.left[neg] != p.right[neg]).all() and (p.right[neg] < 6).all()
    assert torch.equal(p.anchor, p.left)


def test_positive_set_pairs_follow_the_mutual_knn_rule():
    mem, pids = clustered()
    _, nbr, _ = adaptive_knn(mem, 0.6, 4, 8)
    positives = PositiveSets.from_labels(pids)  # |P_i| = 5
    anchors = torch.arange(0, 60, 3)
    p = pairsets.positive_set_pairs(anchors, positives, nbr, torch.Generator().manual_seed(1))
    assert (p.label == 1).all()
    for a in anchors.tolist():
        rows = p.anchor == a
        members = set(positives.row(a).tolist())
        if not rows.any():
            continue
        lefts = set(p.left[rows].tolist())
        assert len(lefts) == 1  # one x_{r_i} drawn per anchor
        r_i = lefts.pop()
        assert r_i in members
        expected = {j for j in members if j != r_i and j in set(nbr[r_i].tolist())}
        assert set(p.right[rows].tolist()) == expected


def test_hard_negative_table_matches_brute_force():
    mem, pids = clustered()
    positives = PositiveSets.from_labels(pids)
    table, counts = pairsets.hard_negative_table(mem, positives, ratio=0.05, chunk=7)
    sims = mem @ mem.T
    for i in range(mem.shape[0]):
        members = set(positives.row(i).tolist())
        order = [j for j in torch.argsort(sims[i], descending=True).tolist() if j not in members]
        r = max(1, int(0.05 * (mem.shape[0] - len(members))))
        assert counts[i] == r
        assert table[i, :r].tolist() == order[:r]


def test_hard_negative_pairs_draw_from_the_table():
    table = torch.tensor([[5, 6, 7], [8, 9, -1]])
    counts = torch.tensor([3, 2])
    p = pairsets.hard_negative_pairs(
        torch.tensor([0, 1]), torch.tensor([4, 2]), table, counts, torch.Generator().manual_seed(0)
    )
    assert (p.label == 0).all() and p.anchor.tolist() == [0, 0, 0, 0, 1, 1]
    assert set(p.right[:4].tolist()) <= {5, 6, 7} and set(p.right[4:].tolist()) <= {8, 9}


def test_meta_pairs():
    pids = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])
    z = torch.tensor([0, 1, 2, 3, 4])  # meta identities 0 and 1
    pool = torch.tensor([5, 6, 7, 8, 9])
    p = pairsets.meta_pairs(z, pids, pool, zx_negatives=True, gen=torch.Generator().manual_seed(0))
    assert p.is_meta.all()
    pos, neg = p.label == 1, p.label == 0
    assert pos.sum() == 5 and (pids[p.left[pos]] == pids[p.right[pos]]).all() and (p.left[pos] != p.right[pos]).all()
    meta_neg = neg & torch.isin(p.right, z)
    zx_neg = neg & ~torch.isin(p.right, z)
    assert meta_neg.sum() == 5 and (pids[p.left[meta_neg]] != pids[p.right[meta_neg]]).all()
    assert zx_neg.sum() == 5 and torch.isin(p.right[zx_neg], pool).all()


def make_generator(cfg=None, d=16, n_ids=12, per=5):
    mem, pids = clustered(n_ids, per, d)
    cfg = {**BASE_CFG, **(cfg or {})}
    gcn = GCNLearner(feat_dim=d, num_labels=cfg["structures"]["max_label"] + 1, hidden=(8, 8), agg_channels=8,
                    mlp_hidden=8, optimizer="adam", lr=1e-2)
    return loop.MPRDGenerator(gcn, pids, cfg, seed=0), mem, pids


def test_schedule_has_half_meta_half_unlabeled_anchors_and_covers_every_unlabeled_pair():
    gen, mem, pids = make_generator()
    g = torch.Generator().manual_seed(0)
    pairs = pairsets.perturbation_pairs(torch.arange(60), 60 + torch.arange(60), 60, 1, g)
    steps = gen._schedule(pairs, 120, 15, g)
    assert len(steps) == 60 // 4  # one pass over the 60 unlabeled anchors, n'/2 = 4 per step
    seen = torch.cat([rows for rows, _ in steps])
    assert sorted(seen.tolist()) == list(range(len(pairs)))  # every unlabeled pair exactly once
    for rows, meta_pos in steps:
        assert torch.unique(pairs.anchor[rows]).numel() <= 4
        assert meta_pos.numel() == 4 and (meta_pos < 15).all()
    # the 15 meta images are cycled: each appears 60 / 15 = 4 times over the epoch
    counts = torch.bincount(torch.cat([m for _, m in steps]), minlength=15)
    assert counts.tolist() == [4] * 15


def test_step_pairs_draw_fresh_meta_pairs_and_one_zx_negative_per_unlabeled_anchor():
    gen, mem, pids = make_generator()
    is_meta = meta_mask(pids, gen.meta_ids)
    meta_images, pool = torch.nonzero(is_meta).flatten(), torch.nonzero(~is_meta).flatten()
    g = torch.Generator().manual_seed(0)
    anchors = pool[:4]
    unl = pairsets.perturbation_pairs(anchors, 60 + torch.arange(4), 60, 1, g)
    draws = [gen._step_pairs(unl, torch.arange(4), meta_images, pool, g) for _ in range(20)]
    for p in draws:
        m = p.is_meta
        zx = m & ~torch.isin(p.right, meta_images)
        assert sorted(p.right[zx].tolist()) == sorted(anchors.tolist())  # one (z, x_i) per unlabeled anchor
        assert torch.isin(p.left[zx], meta_images).all() and (p.label[zx] == 0).all()
        same = m & torch.isin(p.right, meta_images) & (p.label == 1)
        assert (pids[p.left[same]] == pids[p.right[same]]).all() and same.sum() == 4
        assert torch.equal(p.select(~m).left, unl.left)  # the unlabeled pairs pass through unchanged
    keys = {tuple(t) for p in draws for t in torch.stack([p.left, p.right, p.label.long()], 1)[p.is_meta].tolist()}
    assert len(keys) > 3 * 4  # fresh draws: more distinct meta pairs than one fixed draw could give


def test_gcn_epoch_sees_more_distinct_meta_pairs_than_one_draw(monkeypatch):
    """Algorithm 1 draws meta pairs per step: over an epoch the distinct meta pairs exceed 3 per meta image
    (what one draw per epoch, reused in every batch, gave)."""
    monkeypatch.setattr(loop, "perturbed_features", lambda module, idx: F.normalize(mem[idx] + 0.01, dim=1))
    gen, mem, pids = make_generator()
    n_meta = int(meta_mask(pids, gen.meta_ids).sum())

    class Module:
        positives = PositiveSets.singletons(mem.shape[0])

    gen.refresh(mem, epoch=0, module=Module)
    assert gen.last_stats["gcn/meta_distinct"] > 3 * n_meta


def test_eta_modes():
    gen, _, _ = make_generator()
    assert gen._eta(30, 20) == 1.5  # Eq. 10 ratio, not clipped
    assert gen._eta(30, 0) == 1.0  # no unlabeled structure: the configured value
    const, _, _ = make_generator({"eta": {"mode": "constant", "value": 0.0}})
    assert const._eta(30, 20) == 0.0


def test_eq7_filter_keeps_neighbours_above_mu(monkeypatch):
    gen, mem, _ = make_generator()
    _, nbr, _ = adaptive_knn(mem, 0.6, 4, 8)
    # a fake GCN output: g_ij = 0.9 when i + j is even, 0.1 otherwise
    monkeypatch.setattr(
        loop, "predict_pairs", lambda net, n, left, right, table, **kw: ((left + right) % 2 == 0).float() * 0.8 + 0.1
    )
    positives, stats = gen._filter(mem, nbr.cpu())
    for i in range(mem.shape[0]):
        expected = {i} | {j for j in nbr[i].tolist() if j >= 0 and (i + j) % 2 == 0}
        assert set(positives.row(i).tolist()) == expected
    assert 0 < stats["gcn/kept_frac"] < 1


def test_refresh_trains_the_gcn_and_is_reproducible(monkeypatch):
    """Two generators with one seed give identical P_i and GCN weights (what resume relies on)."""

    def fake_perturbed(module, idx):  # deterministic stand-in for the CNN forward on perturbed views
        return F.normalize(mem[idx] + 0.01, dim=1)

    monkeypatch.setattr(loop, "perturbed_features", fake_perturbed)
    results = []
    for _ in range(2):
        torch.manual_seed(0)  # the GCN's initial weights (train.py seeds everything before building)
        gen, mem, pids = make_generator()

        class Module:
            positives = PositiveSets.singletons(mem.shape[0])

        before = [p.detach().clone() for p in gen.gcn.parameters()]
        out0 = gen.refresh(mem, epoch=0, module=Module)
        Module.positives = out0
        out1 = gen.refresh(mem, epoch=1, module=Module)
        assert any(not torch.equal(a, b) for a, b in zip(before, gen.gcn.parameters(), strict=True))
        assert gen.last_stats["gcn/steps"] > 0 and gen.last_stats["gcn/structures"] > 0
        results.append((out1, [p.detach().clone() for p in gen.gcn.parameters()]))
    (p_a, w_a), (p_b, w_b) = results
    assert torch.equal(p_a.indices, p_b.indices) and torch.equal(p_a.offsets, p_b.offsets)
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b, strict=True))


def test_mprd_wo_has_no_unlabeled_pairs_and_0id_no_meta(monkeypatch):
    monkeypatch.setattr(loop, "perturbed_features", lambda module, idx: F.normalize(torch.ones(len(idx), 16), dim=1))
    wo, mem, pids = make_generator({"unlabeled": {"enabled": False, "first_epoch_negatives": 1}})
    pairs, *_ = wo._training_pairs(
        mem, *adaptive_knn(mem, 0.6, 4, 8)[1:], PositiveSets.singletons(60), 0, None, torch.Generator()
    )
    assert len(pairs) == 0  # L^u = 0; the meta pairs are drawn per GCN step
    stats = wo._train(pairs, mem, adaptive_knn(mem, 0.6, 4, 8)[1].cpu(), torch.Generator().manual_seed(0))
    assert stats["steps"] == 60 // 4 and stats["pairs"] > 0 and stats["meta_distinct"] > 0
    zero, mem, pids = make_generator({"meta": {**BASE_CFG["meta"], "num_ids": 0}})
    assert zero.meta_ids == []
    pairs, *_ = zero._training_pairs(
        mem, *adaptive_knn(mem, 0.6, 4, 8)[1:], PositiveSets.singletons(60), 0, None, torch.Generator()
    )
    assert len(pairs) > 0 and not pairs.is_meta.any()


def test_meta_ground_truth_overrides_only_meta_rows():
    from mprd.methods.baselines import SingleGenerator
    from mprd.methods.mprd.meta import MetaGroundTruth

    pids = torch.tensor([4, 4, 4, 7, 7, 9, 9, 9])
    wrapped = MetaGroundTruth(SingleGenerator(), pids, num_ids=1, seed=3)
    assert wrapped.meta_ids == draw_meta_identities(pids, 1, 3)  # the same ids MPRD draws for this seed
    base = PositiveSets.from_mask_rows(torch.tensor([0, 5]), torch.tensor([5, 0]), 8)
    out = wrapped.override(base)
    meta = set(torch.nonzero(meta_mask(pids, wrapped.meta_ids)).flatten().tolist())
    for i in range(8):
        if i in meta:
            assert set(out.row(i).tolist()) == {j for j in range(8) if pids[j] == pids[i]}
        else:
            assert out.row(i).tolist() == base.row(i).tolist()


def test_meta_candidate_pairs_label_from_meta_identities_only():
    # 6 images; meta images 0, 1 (pid 7) and 2 (pid 8); 3..5 are unlabeled (their pids must not matter)
    pids = torch.tensor([7, 7, 8, 7, 9, 9])
    neighbors = torch.tensor([[1, 3, 2], [0, 4, -1], [5, 0, 1], [0, 1, 2], [5, 3, 0], [4, 2, 1]])
    meta = torch.tensor([0, 1, 2])
    p = pairsets.meta_candidate_pairs(torch.tensor([0, 2]), neighbors, pids, meta)
    got = {(int(a), int(b)): float(y) for a, b, y in zip(p.left, p.right, p.label, strict=True)}
    # image 3 carries pid 7 like image 0 but is not a meta image: a negative, as a (z, x) pair
    assert got == {(0, 1): 1.0, (0, 3): 0.0, (0, 2): 0.0, (2, 5): 0.0, (2, 0): 0.0, (2, 1): 0.0}
    assert bool(p.is_meta.all()) and torch.equal(p.anchor, p.left)
    shuffled = pids.clone()
    shuffled[3:] = torch.tensor([8, 7, 7])
    q = pairsets.meta_candidate_pairs(torch.tensor([0, 2]), neighbors, shuffled, meta)
    assert torch.equal(q.label, p.label) and torch.equal(q.right, p.right)


def test_step_pairs_add_each_meta_anchors_candidates_when_asked():
    gen, mem, pids = make_generator({"gcn": {**BASE_CFG["gcn"], "meta_candidate_pairs": True}})
    plain, _, _ = make_generator({"gcn": {**BASE_CFG["gcn"], "meta_candidate_pairs": False}})
    is_meta = meta_mask(pids, gen.meta_ids)
    meta_images, pool = torch.nonzero(is_meta).flatten(), torch.nonzero(~is_meta).flatten()
    _, neighbors, _ = adaptive_knn(mem, 0.6, 4, 8)
    unl = pairsets.perturbation_pairs(pool[:4], 60 + torch.arange(4), 60, 1, torch.Generator().manual_seed(0))
    meta_pos = torch.arange(4)
    with_c = gen._step_pairs(unl, meta_pos, meta_images, pool, torch.Generator().manual_seed(1), neighbors)
    without = plain._step_pairs(unl, meta_pos, meta_images, pool, torch.Generator().manual_seed(1), neighbors)
    extra = len(with_c) - len(without)
    assert extra == int((neighbors[meta_images[meta_pos]] >= 0).sum())  # every candidate of every meta anchor
    cand = with_c.select(torch.arange(len(with_c)) >= len(without))
    assert cand.is_meta.all() and torch.isin(cand.left, meta_images[meta_pos]).all()
    assert torch.equal(cand.label.bool(), is_meta[cand.right] & (pids[cand.left] == pids[cand.right]))


def test_cpu_presets_use_the_similarity_gcn_and_the_paper_preset_its_literal_input(tmp_path):
    for preset, expect in (("cpu", True), ("cpu_long", True), ("cpu_real", True), ("paper", False)):
        g = compose_cfg(tmp_path, "method=mprd", f"preset={preset}").gcn
        assert (g.pair_similarity, not g.node_features, g.meta_candidate_pairs) == (expect,) * 3, preset
