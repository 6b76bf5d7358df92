"""Tests for mprd.core.video_evaluation: tracklet pooling, MARS-style and PRID-style protocols, against plain
loop references, hand-computed cases, chunking and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mprd.core.video_evaluation import (
    VIDEO_RANKS,
    SplitFeatures,
    cross_camera_split,
    evaluate_splits,
    evaluate_video,
    even_frame_indices,
    single_shot_cmc,
    tracklet_features,
)


# --------------------------------------------------------------------------------------------------
# Plain references: loops over tracklets, queries and probes.
# --------------------------------------------------------------------------------------------------
def reference_pool(frames, lengths, num_frames=None, normalize=True):
    out, start = [], 0
    for n in lengths:
        if num_frames is None or n <= num_frames:
            picked = list(range(n))
        else:  # np.linspace rounded down (the epsilon only absorbs linspace's float error)
            picked = np.floor(np.linspace(0, n - 1, num_frames) + 1e-9).astype(int).tolist()
        mean = np.mean([frames[start + i] for i in picked], axis=0, dtype=np.float64)
        if normalize:
            mean = mean / np.linalg.norm(mean)
        out.append(mean)
        start += n
    return np.array(out)


def reference_ranks(qf, gf, metric):
    """dist matrix: smaller = closer; cosine on normalised rows, else squared Euclidean."""
    qf, gf = np.asarray(qf, np.float64), np.asarray(gf, np.float64)
    if metric == "cosine":
        qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        return -(qf @ gf.T)
    return ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)


def reference_mars(qf, gf, qp, qc, gp, gc, metric, max_rank=50):
    dist = reference_ranks(qf, gf, metric)
    firsts, aps, inps = [], [], []
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")
        removed = ((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gp[order] == -1)
        hits = np.flatnonzero((gp[order] == qp[i])[~removed]) + 1
        if len(hits) == 0:
            continue
        firsts.append(hits[0])
        aps.append(np.mean([(j + 1) / r for j, r in enumerate(hits)]))
        inps.append(len(hits) / hits[-1])
    firsts = np.array(firsts)
    return {"ranks": {k: np.mean(firsts <= k) for k in VIDEO_RANKS}, "mAP": np.mean(aps), "mINP": np.mean(inps),
            "cmc": np.array([np.mean(firsts <= k) for k in range(1, max_rank + 1)]), "num_valid": len(firsts)}


def reference_single_shot(pf, gf, pp, gp, metric, max_rank=50):
    dist = reference_ranks(pf, gf, metric)
    true_ranks = []
    for i in range(len(pp)):
        order = np.argsort(dist[i], kind="stable")
        true_ranks.append(int(np.flatnonzero(gp[order] == pp[i])[0]) + 1)
    true_ranks = np.array(true_ranks)
    return np.array([np.mean(true_ranks <= k) for k in range(1, max_rank + 1)])


def random_frames(rng, lengths, d, centres=None, tracklet_ids=None):
    """Frame features: a centre (its identity's, if given), a tracklet offset (the averaging keeps it) and
    noise on every frame (the averaging shrinks it)."""
    frames = []
    for t, n in enumerate(lengths):
        base = centres[tracklet_ids[t]] if centres is not None else rng.standard_normal(d)
        frames.append(base + rng.standard_normal(d) + 1.2 * rng.standard_normal((n, d)))
    return np.concatenate(frames).astype(np.float32)


def offsets_of(lengths):
    return np.concatenate([[0], np.cumsum(lengths)])


# --------------------------------------------------------------------------------------------------
# Pooling.
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_frames", [None, 1, 2, 4, 15])
@pytest.mark.parametrize("normalize", [True, False])
def test_pooling_matches_reference(num_frames, normalize):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, 50)
    lengths[:4] = [1, 4, 15, 16]  # n < k, n = k, n = k + 1 cases for k = 4, 15
    frames = random_frames(rng, lengths, 8)
    ref = reference_pool(frames, lengths, num_frames, normalize)
    out = tracklet_features(frames, offsets_of(lengths), num_frames=num_frames, normalize=normalize)
    assert out.shape == (50, 8) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    if normalize:
        np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_even_sampling_hand_computed():
    # lengths 3, 7, 1, 19 with k = 4: 3 -> all {0,1,2}; 7 -> floor(j*6/3) = 0,2,4,6; 1 -> {0};
    # 19 -> floor(j*18/3) = 0,6,12,18. Global indices add the offsets 0, 3, 10, 11.
    frames, owner = even_frame_indices(torch.tensor([0, 3, 10, 11, 30]), 4)
    assert frames.tolist() == [0, 1, 2, 3, 5, 7, 9, 10, 11, 17, 23, 29]
    assert owner.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3]
    assert even_frame_indices(torch.tensor([0, 3, 10]), 1)[0].tolist() == [0, 3]  # k = 1: first frame
    # the integer formula equals np.linspace(0, n-1, k) rounded down, for every n, k tried
    for n in range(2, 200):
        for k in (2, 3, 7, 15):
            got = even_frame_indices(torch.tensor([0, n]), k)[0].numpy()
            want = np.arange(n) if n <= k else np.floor(np.linspace(0, n - 1, k) + 1e-9).astype(int)
            assert got.tolist() == want.tolist(), (n, k)


def test_pooling_hand_computed_mean():
    # Tracklet 0: frames (1, 0), (3, 0) -> mean (2, 0); tracklet 1: (0, 1), (0, 3), (0, 8) -> mean (0, 4).
    frames = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 8.0]])
    raw = tracklet_features(frames, [0, 2, 5], normalize=False)
    assert raw.tolist() == [[2.0, 0.0], [0.0, 4.0]]
    assert tracklet_features(frames, [0, 2, 5]).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    # 2 frames evenly from the 3-frame tracklet: first and last -> (0, 4.5)
    assert tracklet_features(frames, [0, 2, 5], num_frames=2, normalize=False)[1].tolist() == [0.0, 4.5]


@pytest.mark.parametrize("num_frames", [None, 5])
def test_pooling_chunk_invariant_and_dtypes(num_frames):
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 30, 40)
    frames = random_frames(rng, lengths, 6)
    off = offsets_of(lengths)
    outs = [tracklet_features(frames, off, num_frames=num_frames, chunk_frames=c) for c in (1, 7, 64, None)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=0)
    as_tensors = tracklet_features(torch.from_numpy(frames).double(), torch.from_numpy(off).int(),
                                   num_frames=num_frames)
    assert as_tensors.dtype == torch.float64
    np.testing.assert_allclose(as_tensors.numpy(), reference_pool(frames, lengths, num_frames), atol=1e-12)


def test_pooling_bad_input():
    frames = np.ones((5, 3), np.float32)
    with pytest.raises(ValueError, match="tracklet 1 is empty"):
        tracklet_features(frames, [0, 2, 2, 5])
    with pytest.raises(ValueError, match="offsets decrease"):
        tracklet_features(frames, [0, 3, 2, 5])
    with pytest.raises(ValueError, match=r"from 0 to the number of frame features \(5\)"):
        tracklet_features(frames, [0, 2, 4])  # one frame left over: lengths do not match
    with pytest.raises(ValueError, match=r"from 0 to the number of frame features \(5\)"):
        tracklet_features(frames, [1, 2, 5])
    with pytest.raises(ValueError, match="1-D"):
        tracklet_features(frames, [0])
    with pytest.raises(ValueError, match="integers"):
        tracklet_features(frames, np.array([0.0, 5.0]))
    with pytest.raises(ValueError, match="2-D"):
        tracklet_features(np.ones(5), [0, 5])
    with pytest.raises(ValueError, match="num_frames"):
        tracklet_features(frames, [0, 5], num_frames=0)
    with pytest.raises(ValueError, match="chunk_frames"):
        tracklet_features(frames, [0, 5], chunk_frames=0)


# --------------------------------------------------------------------------------------------------
# MARS / DukeMTMC-VideoReID protocol.
# --------------------------------------------------------------------------------------------------
def mars_like(rng, num_ids=25, num_cams=6, nq=40, ng=150, d=16):
    """Tracklet-level pids/cams with junk (-1) and distractors (0) in the gallery, frames per tracklet."""
    qp = rng.integers(1, num_ids + 1, nq)
    qc = rng.integers(0, num_cams, nq)
    gp = rng.integers(1, num_ids + 1, ng)
    gp[rng.random(ng) < 0.1] = 0
    gp[rng.random(ng) < 0.1] = -1
    gc = rng.integers(0, num_cams, ng)
    centres = 0.9 * rng.standard_normal((num_ids + 1, d))
    q_len, g_len = rng.integers(1, 25, nq), rng.integers(1, 25, ng)
    qfr = random_frames(rng, q_len, d, centres, qp)
    gfr = random_frames(rng, g_len, d, centres, np.maximum(gp, 0))
    return qfr, q_len, gfr, g_len, qp, qc, gp, gc


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("num_frames", [None, 4])
def test_mars_protocol_matches_reference(metric, num_frames):
    rng = np.random.default_rng(2)
    qfr, q_len, gfr, g_len, qp, qc, gp, gc = mars_like(rng)
    qf = tracklet_features(qfr, offsets_of(q_len), num_frames=num_frames)
    gf = tracklet_features(gfr, offsets_of(g_len), num_frames=num_frames)
    ref = reference_mars(reference_pool(qfr, q_len, num_frames), reference_pool(gfr, g_len, num_frames),
                         qp, qc, gp, gc, metric)
    assert 0.05 < ref["mAP"] < 0.95 and ref["num_valid"] < len(qp)  # not degenerate; some queries skipped
    for chunk in (1, 9, None):
        m = evaluate_video(qf, gf, qp, qc, gp, gc, metric=metric, chunk_size=chunk)
        assert m.num_valid == ref["num_valid"] and m.num_valid + m.num_skipped == len(qp)
        for k in VIDEO_RANKS:
            assert m.ranks[k] == pytest.approx(ref["ranks"][k], abs=1e-9), k
        assert m.rank1 == pytest.approx(ref["ranks"][1]) and m.rank10 == pytest.approx(ref["ranks"][10])
        assert m.mAP == pytest.approx(ref["mAP"], abs=1e-6) and m.mINP == pytest.approx(ref["mINP"], abs=1e-6)
        np.testing.assert_allclose(m.cmc.numpy(), ref["cmc"], atol=1e-9)
    assert set(m.as_dict()) == {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}


def test_mars_hand_computed_rules():
    # 1-D tracklet features (each the mean of its frames), euclidean. Query: pid 1, camera 0, at 0.0.
    # Gallery frames: g0 = mean(0.0, 0.2), g5 = mean(0.7, 0.5), the others one frame each.
    # Gallery tracklets, by distance: g0 0.1 (pid 1, cam 0: same id same camera -> removed),
    # g1 0.2 (junk -1 -> removed), g2 0.3 (distractor 0 -> a negative), g3 0.4 (pid 1 cam 2 -> positive),
    # g4 0.5 (pid 7 -> negative), g5 0.6 (pid 1 cam 3 -> positive).
    # Kept ranking g2 g3 g4 g5: positives at ranks 2 and 4 -> Rank-1 0, Rank-5 1, AP (1/2 + 2/4)/2 = 1/2.
    g_frames = np.array([[0.0], [0.2], [0.2], [0.3], [0.4], [0.5], [0.7], [0.5]])
    g_off = [0, 2, 3, 4, 5, 6, 8]
    gf = tracklet_features(g_frames, g_off, normalize=False)
    np.testing.assert_allclose(gf.flatten().numpy(), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], atol=1e-7)
    m = evaluate_video(np.zeros((1, 1)), gf, [1], [0], [1, -1, 0, 1, 7, 1], [0, 1, 1, 2, 0, 3], metric="euclidean")
    assert m.rank1 == 0.0 and m.ranks[5] == 1.0 and m.ranks[20] == 1.0
    assert m.mAP == pytest.approx(0.5) and m.mINP == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# PRID2011 / iLIDS-VID protocol.
# --------------------------------------------------------------------------------------------------
def test_single_shot_hand_computed_ranks_1_2_5():
    # Gallery on a line at 0..5 with pids 10..15 (euclidean). Probe pid 10 at 0.0: g0 nearest -> rank 1.
    # Probe pid 12 at 1.4: distances g1 0.4, g2 0.6, g0 1.4, ... -> rank 2. Probe pid 14 at 0.9: order
    # g1 (0.1), g0 (0.9), g2 (1.1), g3 (2.1), g4 (3.1) -> rank 5.
    # True-match ranks 1, 2, 5: Rank-1 = 1/3, Rank-5 = Rank-10 = Rank-20 = 1.
    gf = np.arange(6.0)[:, None]
    pf = np.array([[0.0], [1.4], [0.9]])
    m = single_shot_cmc(pf, gf, [10, 12, 14], [10, 11, 12, 13, 14, 15], metric="euclidean", max_rank=6)
    assert m.ranks == {1: pytest.approx(1 / 3), 5: 1.0, 10: 1.0, 20: 1.0}
    np.testing.assert_allclose(m.cmc.numpy(), [1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    assert m.mAP == pytest.approx((1 + 1 / 2 + 1 / 5) / 3)  # mean reciprocal rank


def test_splits_hand_computed_average():
    # Split A: the case above (true ranks 1, 2, 5); split B: two probes, each matched at rank 1.
    # Mean Rank-1 = (1/3 + 1)/2 = 2/3; Rank-5 = 1; the mean CMC averages the curves split by split
    # (split-weighted, not probe-weighted: 3 + 2 probes pooled would give Rank-1 3/5).
    gf = np.arange(6.0)[:, None]
    split_a = SplitFeatures(np.array([[0.0], [1.4], [0.9]]), gf, [10, 12, 14], [10, 11, 12, 13, 14, 15])
    split_b = (np.array([[0.0], [1.0]]), np.array([[0.1], [0.9]]), [3, 4], [3, 4])
    r = evaluate_splits([split_a, split_b], metric="euclidean", max_rank=6)
    assert r.ranks[1] == pytest.approx(2 / 3) and r.ranks[5] == 1.0 and r.ranks[20] == 1.0
    assert r.per_split_ranks[0][1] == pytest.approx(1 / 3) and r.per_split_ranks[1][1] == 1.0
    np.testing.assert_allclose(r.cmc.numpy(), [2 / 3, 5 / 6, 5 / 6, 5 / 6, 1.0, 1.0])
    assert r.as_dict() == {"rank1": pytest.approx(200 / 3), "rank5": 100.0, "rank10": 100.0, "rank20": 100.0}


def prid_like(rng, num_persons=40, d=12, num_splits=10):
    """Every person has one tracklet on camera 0 and one on camera 1; 10 seeded 50/50 identity splits."""
    centres = rng.standard_normal((num_persons, d))
    pids = np.repeat(np.arange(num_persons), 2)
    camids = np.tile([0, 1], num_persons)
    lengths = rng.integers(5, 30, 2 * num_persons)
    frames = random_frames(rng, lengths, d, 0.8 * centres, pids)
    splits = [rng.permutation(num_persons)[: num_persons // 2] for _ in range(num_splits)]
    return frames, lengths, pids, camids, splits


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_prid_protocol_matches_reference(metric):
    rng = np.random.default_rng(4)
    frames, lengths, pids, camids, splits = prid_like(rng)
    feats = tracklet_features(frames, offsets_of(lengths))
    ref_feats = reference_pool(frames, lengths)
    ref_curves = []
    for test_pids in splits:  # plain selection: camera 0 of the test ids -> probe, camera 1 -> gallery
        probe = [t for t in range(len(pids)) if pids[t] in test_pids and camids[t] == 0]
        gallery = [t for t in range(len(pids)) if pids[t] in test_pids and camids[t] == 1]
        ref_curves.append(reference_single_shot(ref_feats[probe], ref_feats[gallery], pids[probe], pids[gallery],
                                                metric))
    ref_cmc = np.mean(ref_curves, axis=0)
    assert 0.1 < ref_cmc[0] < 0.95  # not degenerate
    for chunk in (1, 6, None):
        r = evaluate_splits([cross_camera_split(feats, pids, camids, s) for s in splits], metric=metric,
                            chunk_size=chunk)
        np.testing.assert_allclose(r.cmc.numpy(), ref_cmc, atol=1e-9)
        for k in VIDEO_RANKS:
            assert r.ranks[k] == pytest.approx(ref_cmc[k - 1], abs=1e-9)
        for m, curve in zip(r.per_split, ref_curves, strict=True):
            np.testing.assert_allclose(m.cmc.numpy(), curve, atol=1e-9)
        assert len(r.per_split) == 10 and all(m.num_skipped == 0 for m in r.per_split)


def test_cross_camera_split_selects_test_ids_per_camera():
    feats = np.arange(12.0).reshape(6, 2)
    pids, camids = [5, 5, 6, 6, 7, 7], [0, 1, 1, 0, 0, 1]
    s = cross_camera_split(feats, pids, camids, [7, 6])
    assert s.probe_pids.tolist() == [6, 7] and s.gallery_pids.tolist() == [6, 7]
    assert s.probe_feats.tolist() == [[6.0, 7.0], [8.0, 9.0]] and s.gallery_feats.tolist() == [[4.0, 5.0], [10.0, 11.0]]
    swapped = cross_camera_split(feats, pids, camids, [5], probe_camid=1, gallery_camid=0)
    assert swapped.probe_feats.tolist() == [[2.0, 3.0]] and swapped.gallery_feats.tolist() == [[0.0, 1.0]]
    with pytest.raises(ValueError, match="T pids and camids"):
        cross_camera_split(feats, pids[:5], camids, [5])


def test_splits_bad_input():
    gf, pf = np.arange(3.0)[:, None], np.zeros((2, 1))
    with pytest.raises(ValueError, match="no splits"):
        evaluate_splits([])
    with pytest.raises(ValueError, match=r"split 1: .*probe 1 \(pid 9\) has 0 true matches"):
        evaluate_splits([(pf, gf, [0, 1], [0, 1, 2]), (pf, gf, [0, 9], [0, 1, 2])])
    with pytest.raises(ValueError, match=r"probe 0 \(pid 1\) has 2 true matches"):
        single_shot_cmc(pf, gf, [1, 2], [1, 1, 2])
    with pytest.raises(ValueError, match="gallery_pids must be 1-D with 3"):
        single_shot_cmc(pf, gf, [0, 1], [0, 1])  # one pid short for three gallery tracklets
    with pytest.raises(ValueError, match="query_pids must be 1-D with 2"):
        single_shot_cmc(pf, gf, [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="equal width"):
        single_shot_cmc(np.zeros((2, 2)), gf, [0, 1], [0, 1, 2])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    qfr, q_len, gfr, g_len, qp, qc, gp, gc = mars_like(rng)
    cpu = [tracklet_features(f, offsets_of(n), num_frames=k) for f, n in ((qfr, q_len), (gfr, g_len))
           for k in (None, 4)]
    gpu = [tracklet_features(torch.from_numpy(f).cuda(), offsets_of(n), num_frames=k, chunk_frames=50)
           for f, n in ((qfr, q_len), (gfr, g_len)) for k in (None, 4)]
    for a, b in zip(cpu, gpu, strict=True):
        assert b.is_cuda
        torch.testing.assert_close(b.cpu(), a, atol=1e-5, rtol=0)
    m_cpu = evaluate_video(cpu[0], cpu[2], qp, qc, gp, gc)
    m_gpu = evaluate_video(gpu[0], gpu[2], qp, qc, gp, gc, chunk_size=7)
    assert m_gpu.ranks == pytest.approx(m_cpu.ranks) and m_gpu.mAP == pytest.approx(m_cpu.mAP, abs=1e-6)
