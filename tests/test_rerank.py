"""k-reciprocal re-ranking: the sparse implementation equals the textbook dense one on small random cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mprd.core.evaluation import evaluate
from mprd.rerank import RerankParams, RerankScorer, rerank_distance


def dense_reference(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Zhong et al.'s `re_ranking` (person-re-ranking / torchreid), loop for loop, on dense matrices."""
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    v = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original, kind="stable").astype(np.int32)
    num_q, num_all = q_g.shape[0], q_g.shape[0] + q_g.shape[1]
    for i in range(num_all):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        k_rec = forward[np.where(backward == i)[0]]
        expansion = k_rec
        for cand in k_rec:
            half = int(np.around(k1 / 2.0))
            c_forward = initial_rank[cand, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_rec = c_forward[np.where(c_backward == cand)[0]]
            if len(np.intersect1d(c_rec, k_rec)) > 2.0 / 3 * len(c_rec):
                expansion = np.append(expansion, c_rec)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        v[i, expansion] = 1.0 * weight / np.sum(weight)
    original = original[:num_q]
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(num_all)]).astype(np.float32)
    inv_index = [np.where(v[:, i] != 0)[0] for i in range(num_all)]
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(num_q):
        temp_min = np.zeros((1, num_all), dtype=np.float32)
        nonzero = np.where(v[i, :] != 0)[0]
        for ind in nonzero:
            images = inv_index[ind]
            temp_min[0, images] += np.minimum(v[i, ind], v[images, ind])
        jaccard[i] = 1 - temp_min / (2.0 - temp_min)
    final = jaccard * (1 - lam) + original * lam
    return final[:num_q, num_q:]


def distances(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """torchreid's distances: cosine 1 - cos of L2-normalised rows, euclidean squared, both clamped at 0."""
    if metric == "cosine":
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        return np.clip(1.0 - a @ b.T, 0, None)
    return np.clip((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0, None)


CASES = [  # (num_query, num_gallery, dim, k1, k2, lambda, metric, seed)
    (7, 53, 8, 20, 6, 0.3, "cosine", 0),
    (12, 40, 5, 6, 3, 0.5, "euclidean", 1),
    (5, 30, 4, 4, 1, 0.0, "cosine", 2),  # no query expansion, pure Jaccard
    (3, 9, 3, 20, 6, 0.3, "euclidean", 3),  # fewer items than k1 + 1: every list is the whole set
]


@pytest.mark.parametrize("nq,ng,dim,k1,k2,lam,metric,seed", CASES)
def test_sparse_rerank_equals_the_dense_textbook(nq, ng, dim, k1, k2, lam, metric, seed):
    rng = np.random.default_rng(seed)
    # clustered features, so that reciprocal sets and their expansions are non-trivial
    centres = rng.normal(size=(6, dim))
    q = (centres[rng.integers(0, 6, nq)] + 0.6 * rng.normal(size=(nq, dim))).astype(np.float32)
    g = (centres[rng.integers(0, 6, ng)] + 0.6 * rng.normal(size=(ng, dim))).astype(np.float32)
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    want = dense_reference(distances(q64, g64, metric), distances(q64, q64, metric), distances(g64, g64, metric),
                           k1, k2, lam)
    got = rerank_distance(torch.from_numpy(q), torch.from_numpy(g), metric, RerankParams(k1, k2, lam))
    assert got.shape == (nq, ng)
    np.testing.assert_allclose(got.numpy(), want, atol=2e-5)
    # re-ranking changes the order somewhere (else the comparison above would be weak)
    if lam < 1:
        assert not np.array_equal(np.argsort(want, 1), np.argsort(distances(q64, g64, metric), 1))


def test_lambda_one_keeps_the_original_order():
    rng = np.random.default_rng(4)
    q, g = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(25, 6)).astype(np.float32)
    got = rerank_distance(torch.from_numpy(q), torch.from_numpy(g), "cosine", RerankParams(5, 2, 1.0)).numpy()
    d = distances(q.astype(np.float64), g.astype(np.float64), "cosine")
    assert np.array_equal(np.argsort(got, 1, kind="stable"), np.argsort(d, 1, kind="stable"))


def test_chunked_scores_match_one_chunk(monkeypatch):
    """Query chunks and pair chunks of any size give the same scores."""
    import mprd.rerank as rr

    rng = np.random.default_rng(5)
    q, g = torch.from_numpy(rng.normal(size=(9, 4)).astype(np.float32)), torch.from_numpy(
        rng.normal(size=(31, 4)).astype(np.float32))
    whole = rerank_distance(q, g, "cosine", RerankParams(6, 3, 0.3))
    monkeypatch.setattr(rr, "_CHUNK_ELEMENTS", 40)
    monkeypatch.setattr(rr, "_PAIR_CHUNK", 7)
    scorer = RerankScorer(q, g, "cosine", RerankParams(6, 3, 0.3))
    parts = torch.cat([-scorer(s, min(s + 2, 9)) for s in range(0, 9, 2)])
    assert torch.allclose(parts, whole, atol=1e-6)


def test_evaluate_with_rerank_uses_the_reranked_order():
    """evaluate(rerank=...) equals evaluating the dense re-ranked distance by hand (CMC / AP from ranks)."""
    rng = np.random.default_rng(6)
    ids = rng.integers(0, 5, 40)
    centres = rng.normal(size=(5, 6))
    feats = (centres[ids] + 0.9 * rng.normal(size=(40, 6))).astype(np.float32)
    cams = rng.integers(0, 3, 40)
    qf, gf = torch.from_numpy(feats[:8]), torch.from_numpy(feats[8:])
    qp, qc, gp, gc = ids[:8], cams[:8], ids[8:], cams[8:]
    params = RerankParams(6, 3, 0.3)
    dist = rerank_distance(qf, gf, "cosine", params).numpy()
    aps, hits = [], []
    for i in range(8):
        keep = ~((gp == qp[i]) & (gc == qc[i]))
        order = np.argsort(dist[i][keep], kind="stable")
        match = (gp[keep] == qp[i])[order]
        if not match.any():
            continue
        r = np.flatnonzero(match) + 1
        aps.append(np.mean(np.arange(1, len(r) + 1) / r))
        hits.append(r[0] == 1)
    got = evaluate(qf, gf, qp, qc, gp, gc, rerank=params)
    assert got.mAP == pytest.approx(np.mean(aps), abs=1e-9)
    assert got.rank1 == pytest.approx(np.mean(hits), abs=1e-9)
    plain = evaluate(qf, gf, qp, qc, gp, gc)
    assert (got.mAP, got.rank1) != (plain.mAP, plain.rank1)


@pytest.mark.parametrize("kwargs,message", [
    ({"k1": 0}, "k1 and k2 must be >= 1"),
    ({"k1": 4, "k2": 6}, r"k2=6 must be <= k1 \+ 1"),
    ({"lambda_value": 1.5}, "lambda_value must lie in"),
])
def test_bad_parameters_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RerankParams(**kwargs)


def test_bad_metric_is_named():
    with pytest.raises(ValueError, match="rerank: metric must be 'cosine' or 'euclidean', got 'l1'"):
        RerankScorer(torch.zeros(2, 3), torch.ones(4, 3), "l1")
