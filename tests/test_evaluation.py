"""Tests for mprd.core.evaluation: hand-computed cases, a brute-force reference, ties, chunking, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mprd.core.evaluation import ReIDMetrics, _chunk_positive_ranks, default_chunk_size, evaluate


# --------------------------------------------------------------------------------------------------
# Brute-force reference: one query at a time, full stable sort, the textbook definitions.
# --------------------------------------------------------------------------------------------------
def reference_eval(qf, gf, qp, qc, gp, gc, metric, max_rank):
    qf, gf = np.asarray(qf, np.float64), np.asarray(gf, np.float64)
    if metric == "cosine":
        qf = qf / np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
        gf = gf / np.maximum(np.linalg.norm(gf, axis=1, keepdims=True), 1e-12)
        dist = -(qf @ gf.T)
    else:
        dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    firsts, aps, inps, skipped = [], [], [], 0
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")  # ties: lower gallery index first
        removed = ((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gp[order] == -1)
        matches = (gp[order] == qp[i])[~removed]
        if not matches.any():
            skipped += 1
            continue
        hit_ranks = np.flatnonzero(matches) + 1
        num_pos = len(hit_ranks)
        firsts.append(hit_ranks[0])
        aps.append(sum((j + 1) / r for j, r in enumerate(hit_ranks)) / num_pos)
        inps.append(num_pos / hit_ranks[-1])
    firsts = np.array(firsts)
    return {
        "rank1": np.mean(firsts <= 1), "rank5": np.mean(firsts <= 5), "rank10": np.mean(firsts <= 10),
        "mAP": np.mean(aps), "mINP": np.mean(inps),
        "cmc": np.array([np.mean(firsts <= k) for k in range(1, max_rank + 1)]),
        "num_valid": len(firsts), "num_skipped": skipped,
    }


def assert_matches_reference(m: ReIDMetrics, ref: dict) -> None:
    for key in ("rank1", "rank5", "rank10", "mAP", "mINP"):
        assert getattr(m, key) == pytest.approx(ref[key], abs=1e-6), key
    np.testing.assert_allclose(m.cmc.numpy(), ref["cmc"], atol=1e-6)
    assert (m.num_valid, m.num_skipped) == (ref["num_valid"], ref["num_skipped"])


def random_split(rng, nq, ng, d, num_ids, num_cams, continuous=True):
    """Random features; gallery pids include junk (-1) and distractors (0); some queries lack a match."""
    qp = rng.integers(1, num_ids + 3, nq)  # ids num_ids+1, +2 are absent from the gallery: skipped queries
    qc = rng.integers(0, num_cams, nq)
    gp = rng.integers(1, num_ids + 1, ng)
    gp[rng.random(ng) < 0.1] = 0
    gp[rng.random(ng) < 0.1] = -1
    gc = rng.integers(0, num_cams, ng)
    if continuous:
        qf, gf = rng.standard_normal((nq, d)), rng.standard_normal((ng, d))
        # queries near their identity's centre so that the metrics are not all ~0
        centres = rng.standard_normal((num_ids + 3, d))
        qf += 1.5 * centres[qp]
        gf += 1.5 * centres[np.maximum(gp, 0)]
    else:  # +-1 entries, d = 4: norms are exactly 2, every score is exact in float32, ties are frequent
        qf, gf = rng.choice([-1.0, 1.0], (nq, d)), rng.choice([-1.0, 1.0], (ng, d))
    return qf.astype(np.float32), gf.astype(np.float32), qp, qc, gp, gc


# --------------------------------------------------------------------------------------------------
# Hand-computed cases (1-D features, euclidean, so the ranking is read off a number line).
# --------------------------------------------------------------------------------------------------
def test_hand_computed_protocol_rules():
    # One query: pid 1, camera 0, feature 0.0. Gallery (index: feature, pid, cam), sorted by distance:
    #   g0: 0.1, pid 1, cam 0 -> same pid AND same camera: removed
    #   g1: 0.2, pid -1       -> junk: removed
    #   g2: 0.3, pid 0        -> distractor: kept, a negative
    #   g3: 0.4, pid 1, cam 1 -> positive
    #   g4: 0.5, pid 2        -> negative
    #   g5: 0.6, pid 1, cam 2 -> positive
    #   g6: 0.7, pid 0        -> distractor negative
    #   g7: 0.8, pid 3, cam 1 -> negative
    # Kept ranking: g2 g3 g4 g5 g6 g7 -> positives at ranks 2 and 4. (Keeping junk would give ranks 3, 5;
    # dropping distractors 1, 3; keeping g0 1, 3, 5: each rule changes the numbers below.)
    # Rank-1 = 0, Rank-5 = 1; AP = (1/2 + 2/4) / 2 = 0.5; INP = 2 / 4 = 0.5.
    # Query 2: pid 3, camera 1, only g7 (pid 3, cam 1) shares its pid -> no valid match: skipped.
    gfeat = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])[:, None]
    gp = [1, -1, 0, 1, 2, 1, 0, 3]
    gc = [0, 1, 1, 1, 0, 2, 3, 1]
    m = evaluate(np.array([[0.0], [0.0]]), gfeat, [1, 3], [0, 1], gp, gc, metric="euclidean", max_rank=6)
    assert (m.num_valid, m.num_skipped) == (1, 1)
    assert m.rank1 == 0.0 and m.rank5 == 1.0 and m.rank10 == 1.0
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)
    assert m.cmc.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_hand_computed_two_queries_means():
    # Gallery on a line: g0 = 0 (pid 1 cam 1), g1 = 1 (pid 2 cam 1), g2 = 2 (pid 1 cam 2), g3 = 3 (pid 2 cam 2).
    # Query A at 0.4, pid 1, cam 0: order g0 g1 g2 g3 -> positives (pid 1) at ranks 1, 3:
    #   AP = (1/1 + 2/3)/2 = 5/6, INP = 2/3, first hit 1.
    # Query B at 0.4, pid 2, cam 1: g1 (pid 2, cam 1) removed; order g0 g2 g3 -> positive at rank 3:
    #   AP = 1/3, INP = 1/3, first hit 3.
    # mAP = (5/6 + 1/3)/2 = 7/12; mINP = (2/3 + 1/3)/2 = 1/2; Rank-1 = 1/2; Rank-5 = 1.
    gfeat = np.array([[0.0], [1.0], [2.0], [3.0]])
    m = evaluate(np.array([[0.4], [0.4]]), gfeat, [1, 2], [0, 1], [1, 2, 1, 2], [1, 1, 2, 2],
                 metric="euclidean", max_rank=3)
    assert m.mAP == pytest.approx(7 / 12) and m.mINP == pytest.approx(0.5)
    assert m.rank1 == 0.5 and m.rank5 == 1.0
    assert m.cmc.tolist() == [0.5, 0.5, 1.0]
    d = m.as_dict()
    assert set(d) == {"rank1", "rank5", "rank10", "mAP", "mINP"}
    assert d["mAP"] == pytest.approx(100 * 7 / 12) and m.as_dict(percent=False)["rank1"] == 0.5


def test_hand_computed_cosine_uses_direction_not_length():
    # Cosine ignores the length: g0 = (10, 1) is almost parallel to the query (1, 0); g1 = (1, 1) is 45 deg
    # away although closer in Euclidean terms. Query pid 1 cam 0; g0 is pid 2, g1 pid 1 cam 1.
    # cosine: order g0 g1 -> positive at rank 2: AP = 1/2.  euclidean: |q-g1|^2 = 1 < |q-g0|^2 = 82 -> AP = 1.
    q, g = np.array([[1.0, 0.0]]), np.array([[10.0, 1.0], [1.0, 1.0]])
    assert evaluate(q, g, [1], [0], [2, 1], [0, 1], metric="cosine").mAP == pytest.approx(0.5)
    assert evaluate(q, g, [1], [0], [2, 1], [0, 1], metric="euclidean").mAP == pytest.approx(1.0)


def test_ties_break_by_gallery_index():
    # All gallery items at the same distance: the stable order is the gallery order.
    # Query pid 1 cam 0; gallery pids [2, 1, 2, 1], cams 1 -> positives at indices 1, 3 = ranks 2, 4.
    # AP = (1/2 + 2/4)/2 = 1/2. Reversing the gallery puts them at indices 0, 2: AP = (1 + 2/3)/2 = 5/6.
    q, g = np.zeros((1, 3)), np.ones((4, 3))
    m = evaluate(q, g, [1], [0], [2, 1, 2, 1], [1] * 4, metric="euclidean")
    assert m.mAP == pytest.approx(0.5) and m.rank1 == 0.0 and m.mINP == pytest.approx(0.5)
    m = evaluate(q, g, [1], [0], [1, 2, 1, 2], [1] * 4, metric="euclidean")
    assert m.mAP == pytest.approx(5 / 6) and m.rank1 == 1.0
    # Same for cosine, including -0.0 vs +0.0 scores (orthogonal vectors of either sign): they tie.
    q = np.array([[1.0, 0.0]])
    g = np.array([[0.0, 1.0], [-0.0, -1.0], [0.0, 1.0]])
    m = evaluate(q, g, [1], [0], [2, 1, 2], [1, 1, 1], metric="cosine")
    assert m.mAP == pytest.approx(0.5)


def test_ties_deterministic_and_equal_reference():
    # ±1 features -> many exact ties; results equal the stable-sort reference, for every chunk.
    rng = np.random.default_rng(7)
    data = random_split(rng, 40, 150, 4, num_ids=12, num_cams=3, continuous=False)
    for metric in ("cosine", "euclidean"):
        ref = reference_eval(*data, metric, 20)
        results = [evaluate(*data, metric=metric, max_rank=20, chunk_size=c) for c in (1, 7, 40)]
        for m in results:
            assert_matches_reference(m, ref)
        assert len({(m.mAP, m.mINP, m.rank1) for m in results}) == 1
        # The ties matter here: reversing the gallery order changes the result (and still equals the reference).
        qf, gf, qp, qc, gp, gc = data
        rev = (gf[::-1].copy(), gp[::-1].copy(), gc[::-1].copy())
        m_rev = evaluate(qf, rev[0], qp, qc, rev[1], rev[2], metric=metric, max_rank=20, chunk_size=7)
        assert_matches_reference(m_rev, reference_eval(qf, rev[0], qp, qc, rev[1], rev[2], metric, 20))
        assert abs(m_rev.mAP - results[0].mAP) > 1e-3


# --------------------------------------------------------------------------------------------------
# Brute-force reference on random data.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("chunk_size", [1, 13, 64, None])
def test_matches_bruteforce_reference(metric, chunk_size):
    rng = np.random.default_rng(0)
    data = random_split(rng, 64, 400, 16, num_ids=30, num_cams=4)
    ref = reference_eval(*data, metric, 50)
    assert ref["num_skipped"] > 0 and 0.05 < ref["mAP"] < 0.95  # the case is not degenerate
    m = evaluate(*data, metric=metric, chunk_size=chunk_size)
    assert_matches_reference(m, ref)


def test_larger_gallery_many_bins_matches_reference():
    # 3,000 gallery items -> 187 score bins per query: most items are counted by bin, few compared exactly.
    rng = np.random.default_rng(11)
    data = random_split(rng, 40, 3000, 16, num_ids=60, num_cams=5)
    for metric in ("cosine", "euclidean"):
        assert_matches_reference(evaluate(*data, metric=metric, chunk_size=9), reference_eval(*data, metric, 50))


def _score_matrix(kind: str, rng, b: int, g: int) -> np.ndarray:
    if kind == "ties":
        return rng.choice(np.float32([-1.0, -0.0, 0.0, 0.25, 1.0]), (b, g))
    if kind == "outliers":  # huge dynamic range: a few +-1e30 among N(0, 1)
        s = rng.standard_normal((b, g)).astype(np.float32)
        s[rng.random((b, g)) < 0.05] = np.float32(1e30)
        s[rng.random((b, g)) < 0.05] = np.float32(-1e30)
        return s
    if kind == "huge":  # the positives' score span overflows float32 (3e38 - -3e38 = inf)
        return rng.choice(np.float32([-3e38, -1.0, 0.0, 2.0, 3e38]), (b, g))
    if kind == "ulp":  # values one float32 ulp apart and denormals: bins cannot separate them
        base = np.float32([1.0, np.nextafter(np.float32(1.0), np.float32(2.0)), 1e-40, -1e-40, 0.5])
        return rng.choice(base, (b, g))
    return rng.standard_normal((b, g)).astype(np.float32)


@pytest.mark.parametrize("kind", ["ties", "outliers", "huge", "ulp", "normal"])
def test_positive_ranks_exact_on_adversarial_scores(kind):
    # The binned counting must equal a stable sort of the very same float32 scores, whatever their spread.
    rng = np.random.default_rng(len(kind))
    b, g = 12, 300
    scores = _score_matrix(kind, rng, b, g)
    label = rng.choice([0, 1, 2], (b, g), p=[0.85, 0.1, 0.05])  # 0 negative, 1 positive, 2 removed
    label[0] = 0  # a row without positives
    label[1] = 0
    label[1, 5] = 1  # a row with a single positive
    expected = []
    for i in range(b):
        kept = np.flatnonzero(label[i] != 2)
        order = kept[np.argsort(-scores[i, kept].astype(np.float64), kind="stable")]
        expected += [(i, r + 1) for r in np.flatnonzero(label[i, order] == 1)]
    pos_r, pos_c = (torch.from_numpy(x) for x in np.nonzero(label == 1))
    rm_r, rm_c = (torch.from_numpy(x) for x in np.nonzero(label == 2))
    rows, ranks = _chunk_positive_ranks(torch.from_numpy(scores.copy()), pos_r, pos_c, rm_r, rm_c)
    assert list(zip(rows.tolist(), ranks.tolist(), strict=True)) == expected


def test_tensor_inputs_and_extra_ranks():
    rng = np.random.default_rng(3)
    qf, gf, qp, qc, gp, gc = random_split(rng, 30, 200, 8, num_ids=10, num_cams=3)
    ref = reference_eval(qf, gf, qp, qc, gp, gc, "cosine", 30)
    m = evaluate(torch.from_numpy(qf).double(), torch.from_numpy(gf), torch.from_numpy(qp).int(),
                 torch.from_numpy(qc), list(gp), torch.from_numpy(gc), ranks=(1, 3, 20), max_rank=30)
    assert_matches_reference(m, ref)
    assert m.ranks[3] == pytest.approx(ref["cmc"][2]) and m.ranks[20] == pytest.approx(ref["cmc"][19])
    assert set(m.as_dict()) == {"rank1", "rank3", "rank5", "rank10", "rank20", "mAP", "mINP"}


def test_msmt_style_pid_zero_is_a_real_identity():
    # MSMT17 pids start at 0: a query with pid 0 matches gallery pid 0 on another camera.
    # Gallery: g0 pid 5 (closest), g1 pid 0 cam 1 -> positive at rank 2 -> AP 1/2.
    m = evaluate(np.array([[0.0]]), np.array([[0.1], [0.2]]), [0], [0], [5, 0], [0, 1], metric="euclidean")
    assert m.num_valid == 1 and m.mAP == pytest.approx(0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(1)
    data = random_split(rng, 50, 300, 16, num_ids=20, num_cams=4)
    ref = reference_eval(*data, "cosine", 50)
    qf, gf = (torch.from_numpy(x).cuda() for x in data[:2])
    m = evaluate(qf, gf, *data[2:], chunk_size=17)
    assert_matches_reference(m, ref)


# --------------------------------------------------------------------------------------------------
# Errors and helpers.
# --------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    q, g = np.zeros((2, 4)), np.ones((3, 4))
    ok = dict(query_pids=[1, 2], query_camids=[0, 0], gallery_pids=[1, 2, 3], gallery_camids=[1, 1, 1])
    with pytest.raises(ValueError, match="metric"):
        evaluate(q, g, *ok.values(), metric="l1")
    with pytest.raises(ValueError, match="equal width"):
        evaluate(q, np.ones((3, 5)), *ok.values())
    with pytest.raises(ValueError, match="gallery_pids must be 1-D with 3"):
        evaluate(q, g, [1, 2], [0, 0], [1, 2], [1, 1, 1])
    with pytest.raises(ValueError, match="query_pids must be >= 0"):
        evaluate(q, g, [-1, 2], [0, 0], [1, 2, 3], [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate(np.full((2, 4), np.nan), g, *ok.values())
    with pytest.raises(ValueError, match="chunk_size"):
        evaluate(q, g, *ok.values(), chunk_size=0)
    with pytest.raises(ValueError, match="no(ne)? .*valid match"):
        evaluate(q, g, [7, 8], [0, 0], [1, 2, 3], [1, 1, 1])
    with pytest.raises(ValueError, match="only junk"):
        evaluate(q, g, [1, 2], [0, 0], [-1, -1, -1], [1, 1, 1])


def test_default_chunk_bounds_memory():
    # MSMT17 gallery: chunk * gallery * ~12-16 B stays a few hundred MB; tiny galleries get big chunks.
    c = default_chunk_size(82_161)
    assert c >= 1 and 100e6 < c * 82_161 * 16 < 400e6
    assert default_chunk_size(10) == (1 << 24) // 10
    assert math.isclose(default_chunk_size(1 << 30), 1)
