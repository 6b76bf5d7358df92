"""PairGCN (MPRD Eq. 5) vs hand computations and a naive per-structure implementation; GCN loss (Eq. 6, 10)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mprd.methods.mprd.gcn import PairGCN, normalized_adjacency, predict_pairs
from mprd.methods.mprd.losses import eta_from_counts, mixed_gcn_loss, pair_bce
from mprd.methods.mprd.structures import PairStructures, build_pair_structures


def random_table(num: int, width: int, g: torch.Generator) -> torch.Tensor:
    scores = torch.rand(num, num, generator=g)
    scores.fill_diagonal_(-1.0)
    idx = scores.topk(width, dim=1).indices
    k = torch.randint(1, width + 1, (num,), generator=g)
    return idx.masked_fill(torch.arange(width)[None] >= k[:, None], -1)


def random_batch(g: torch.Generator, num: int = 30, width: int = 5, pairs: int = 12, topology: str = "pair"):
    table = random_table(num, width, g)
    left = torch.randint(0, num, (pairs,), generator=g)
    right = (left + torch.randint(1, num, (pairs,), generator=g)) % num
    return table, left, right, build_pair_structures(table, left, right, topology=topology, max_label=4)


def naive_logits(gcn: PairGCN, s: PairStructures, features: torch.Tensor) -> torch.Tensor:
    """Eq. 5 written out per structure: V = [one-hot ‖ f], D^-1 (A + I) V Θ_1, ..., conv1d, max-pool, MLP."""
    outs = []
    for p in range(len(s)):
        real = s.mask[p]
        ids = s.node_ids[p][real]
        v = torch.cat([F.one_hot(s.drnl[p][real], gcn.num_labels).to(features.dtype), features[ids]], dim=1)
        a = s.adj[p][real][:, real] + torch.eye(len(ids))
        prop = torch.diag(1.0 / a.sum(dim=1)) @ a
        y = torch.relu(prop @ (v @ gcn.first_layer_weight() + gcn.bias0))
        ys = [y]
        for conv in gcn.convs:
            y = torch.relu(prop @ (y @ conv.weight.T + conv.bias))
            ys.append(y)
        h = torch.cat(ys, dim=1) if gcn.concat_layers else ys[-1]
        h = torch.relu(h @ gcn.agg.weight[:, :, 0].T + gcn.agg.bias)
        outs.append(gcn.mlp(h.max(dim=0).values))
    return torch.cat(outs)


# ------------------------------------------------------------------------------------------ GCN
def test_first_layer_on_hand_path_graph():
    # path i - a - j: positions 0 = i (id 10), 1 = j (id 11), 2 = a (id 12); DRNL [1, 1, 2]
    s = PairStructures(
        node_ids=torch.tensor([[10, 11, 12]]),
        mask=torch.ones(1, 3, dtype=torch.bool),
        adj=torch.tensor([[[0.0, 0, 1], [0, 0, 1], [1, 1, 0]]]),
        drnl=torch.tensor([[1, 1, 2]]),
    )
    gcn = PairGCN(feat_dim=2, num_labels=3, hidden=(2, 2), agg_channels=2, mlp_hidden=2)
    with torch.no_grad():
        gcn.label_weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        gcn.feat_proj.weight.copy_(torch.eye(2))
        gcn.bias0.zero_()
    features = torch.zeros(13, 2)
    features[10] = torch.tensor([1.0, 2.0])
    features[11] = torch.tensor([-9.0, -4.0])
    features[12] = torch.tensor([0.0, 6.0])
    # V Θ_1: i = [1,0]+[1,2] = [2,2]; j = [1,0]+[-9,-4] = [-8,-4]; a = [0,1]+[0,6] = [0,7]
    # D^-1(A+I): degrees of A+I are 2, 2, 3 -> rows [1/2,0,1/2], [0,1/2,1/2], [1/3,1/3,1/3]
    expected_prop = torch.tensor([[0.5, 0.0, 0.5], [0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(normalized_adjacency(s.adj, s.mask)[0], expected_prop)
    # i: ([2,2]+[0,7])/2 = [1, 4.5]; j: ([-8,-4]+[0,7])/2 = [-4, 1.5] -> ReLU [0, 1.5]
    # a: ([2,2]+[-8,-4]+[0,7])/3 = [-2, 5/3] -> ReLU [0, 5/3]
    expected = torch.tensor([[1.0, 4.5], [0.0, 1.5], [0.0, 5.0 / 3.0]])
    for kwargs in ({"features": features}, {"node_table": gcn.project(features)}):
        y1 = gcn.embed_nodes(s, **kwargs)[0][0]
        assert torch.allclose(y1, expected, atol=1e-6)


@pytest.mark.parametrize("topology", ["pair", "induced"])
@pytest.mark.parametrize("concat_layers", [True, False])
def test_fast_paths_match_naive(topology, concat_layers):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    table, _, _, s = random_batch(g, topology=topology)
    features = torch.randn(table.shape[0], 24, generator=g)
    gcn = PairGCN(feat_dim=24, num_labels=5, hidden=(16, 8), agg_channels=12, mlp_hidden=6, concat_layers=concat_layers)
    expected = naive_logits(gcn, s, features).detach()
    assert float(expected.std()) > 1e-4  # not a constant network
    by_features = gcn(s, features=features)
    by_table = gcn(s, node_table=gcn.project(features))
    assert torch.allclose(by_features, expected, atol=1e-5)
    assert torch.allclose(by_table, expected, atol=1e-5)
    assert torch.allclose(gcn.predict_proba(s, features=features), torch.sigmoid(expected), atol=1e-5)


def test_feature_path_gradients_match_naive():
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    table, _, _, s = random_batch(g)
    features = torch.randn(table.shape[0], 10, generator=g)
    gcn = PairGCN(feat_dim=10, num_labels=5, hidden=(16, 16), agg_channels=16, mlp_hidden=16)
    gcn(s, features=features).sum().backward()
    fast = {n: p.grad.clone() for n, p in gcn.named_parameters()}
    gcn.zero_grad()
    naive_logits(gcn, s, features).sum().backward()
    for name, p in gcn.named_parameters():
        assert torch.allclose(fast[name], p.grad, atol=1e-5), name
    assert float(fast["feat_proj.weight"].abs().sum()) > 0  # Θ_1b is trained through the feature path


def test_padding_with_garbage_changes_nothing():
    g = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    table, _, _, s = random_batch(g, topology="induced")
    num = table.shape[0]
    # garbage rows appended to the feature table; padded slots point at them, carry edges and labels
    features = torch.cat([torch.randn(num, 12, generator=g), 1e4 * torch.randn(5, 12, generator=g)])
    gcn = PairGCN(feat_dim=12, num_labels=5, hidden=(16, 16), agg_channels=16, mlp_hidden=16)
    extra = 3
    padded = s.pad_to(s.num_nodes + extra)
    n = padded.num_nodes
    padded.node_ids[:, -extra:] = torch.randint(num, num + 5, (len(s), extra), generator=g)
    padded.drnl[:, -extra:] = torch.randint(0, 5, (len(s), extra), generator=g)
    junk = torch.zeros(len(s), n, n)
    junk[:, -extra:, :] = 1.0
    junk[:, :, -extra:] = 1.0
    padded.adj = padded.adj + junk
    for kwargs in ({"features": features}, {"node_table": gcn.project(features)}):
        out = gcn(s, **kwargs)
        assert float(out.detach().std()) > 1e-4  # the network is not constant (dead ReLUs would make this vacuous)
        assert torch.allclose(gcn(padded, **kwargs), out, atol=1e-6)


def test_permuting_non_endpoint_nodes_is_invariant():
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    table, _, _, s = random_batch(g, topology="induced")
    features = torch.randn(table.shape[0], 12, generator=g)
    gcn = PairGCN(feat_dim=12, num_labels=5, hidden=(16, 16), agg_channels=16, mlp_hidden=16)
    n = s.num_nodes
    perm = torch.cat([torch.tensor([0, 1]), 2 + torch.randperm(n - 2, generator=g)])  # padding gets mixed in
    shuffled = PairStructures(s.node_ids[:, perm], s.mask[:, perm], s.adj[:, perm][:, :, perm], s.drnl[:, perm])
    out = gcn(s, features=features)
    assert float(out.detach().std()) > 1e-4
    assert torch.allclose(gcn(shuffled, features=features), out, atol=1e-6)


def test_predict_pairs_matches_direct_and_restores_mode():
    g = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    table = random_table(40, 6, g)
    left = torch.arange(40).repeat_interleave(6)
    right = table.reshape(-1)
    keep = right >= 0  # the N·k candidates of Eq. 7
    left, right = left[keep], right[keep]
    features = torch.randn(40, 16, generator=g)
    gcn = PairGCN(feat_dim=16, num_labels=4, hidden=(16, 16), agg_channels=16, mlp_hidden=16, dropout=0.5)
    gcn.train()
    table_proj = gcn.project(features).detach()
    probs = predict_pairs(gcn, table, left, right, table_proj, batch_size=17)
    assert gcn.training
    gcn.eval()
    with torch.no_grad():
        s = build_pair_structures(table, left, right, max_label=3)
        direct = gcn.predict_proba(s, node_table=table_proj)
    assert probs.shape == (len(left),) and float(probs.std()) > 1e-5
    assert torch.allclose(probs, direct, atol=1e-6)


def test_gcn_bad_inputs_raise():
    s = build_pair_structures(torch.tensor([[1], [0]]), torch.tensor([0]), torch.tensor([1]), max_label=10)
    gcn = PairGCN(feat_dim=4, num_labels=3, hidden=(4, 4))
    feats = torch.randn(2, 4)
    with pytest.raises(ValueError, match="exactly one"):
        gcn(s)
    with pytest.raises(ValueError, match="exactly one"):
        gcn(s, node_table=gcn.project(feats), features=feats)
    s.drnl[0, 0] = 7
    with pytest.raises(ValueError, match="max_label"):
        gcn(s, features=feats)


# ------------------------------------------------------------------------------------------ loss
def test_pair_bce_hand_values():
    # anchor 7: positives logits 0 and ln 3 (g = 1/2, 3/4), negative logit 0 (g = 1/2)
    # anchor 9: one negative, logit ln 3 (g = 3/4), no positives -> its positive term is skipped
    # L = -1/2 [ (ln 1/2 + ln 3/4)/2 + ln 1/2  +  ln 1/4 ]
    ln3 = torch.log(torch.tensor(3.0))
    logits = torch.stack([torch.tensor(0.0), ln3, torch.tensor(0.0), ln3])
    labels = torch.tensor([1, 1, 0, 0])
    anchor = torch.tensor([7, 7, 7, 9])
    expected = -0.5 * ((torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.75))) / 2
                       + torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.25)))
    assert torch.allclose(pair_bce(logits, labels, anchor), expected, atol=1e-6)


def test_pair_bce_weights_and_stability():
    # weighted mean inside a group: positives with g = 1/2 (w = 3) and g = 3/4 (w = 1), no negatives
    ln3 = torch.log(torch.tensor(3.0))
    logits = torch.stack([torch.tensor(0.0), ln3])
    got = pair_bce(logits, torch.tensor([1, 1]), torch.tensor([0, 0]), weight=torch.tensor([3.0, 1.0]))
    expected = -(3 * torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.75))) / 4
    assert torch.allclose(got, expected, atol=1e-6)
    # extreme logits stay finite: -log sigmoid(-200) = 200 for a positive
    big = pair_bce(torch.tensor([-200.0]), torch.tensor([1]), torch.tensor([0]))
    assert torch.isfinite(big) and abs(float(big) - 200.0) < 1e-3


def test_pair_bce_empty_and_bad_labels():
    logits = torch.zeros(0, requires_grad=True)
    out = pair_bce(logits, torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert float(out.detach()) == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="0 .* or 1"):
        pair_bce(torch.zeros(2), torch.tensor([0.0, 0.5]), torch.tensor([0, 0]))


def test_mixed_loss_parts_and_gradient():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(10, generator=g, requires_grad=True)
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 0])
    anchor = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 3, 3])
    is_meta = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=torch.bool)
    eta = 0.7
    total, loss_u, loss_m = mixed_gcn_loss(logits, labels, anchor, is_meta, eta)
    assert torch.allclose(loss_u, pair_bce(logits[:5], labels[:5], anchor[:5]))
    assert torch.allclose(loss_m, pair_bce(logits[5:], labels[5:], anchor[5:]))
    (grad_total,) = torch.autograd.grad(total, logits, retain_graph=True)
    (grad_u,) = torch.autograd.grad(loss_u, logits, retain_graph=True)
    (grad_m,) = torch.autograd.grad(loss_m, logits)
    assert torch.allclose(grad_total, grad_u + eta * grad_m)  # Eq. 10
    assert float(grad_m[:5].abs().sum()) == 0.0 and float(grad_u[5:].abs().sum()) == 0.0


def test_mixed_loss_empty_part():
    logits = torch.tensor([0.0, 1.0])
    labels, anchor, is_meta = torch.tensor([1, 0]), torch.tensor([0, 0]), torch.tensor([True, True])
    total, loss_u, loss_m = mixed_gcn_loss(logits, labels, anchor, is_meta, 2.0)
    assert float(loss_u) == 0.0
    assert torch.allclose(total, 2.0 * loss_m)


def test_eta_from_counts():
    assert eta_from_counts(24, 16) == 1.5  # not clipped (spec §3.8)
    assert eta_from_counts(16, 64) == 0.25
    assert eta_from_counts(10, 0) == 1.0 and eta_from_counts(10, 0, cap=3.0) == 3.0
    with pytest.raises(ValueError, match=">= 0"):
        eta_from_counts(-1, 3)


# ------------------------------------------------------------------------------ similarity channels
def test_similarity_channels_match_hand_cosines():
    g = torch.Generator().manual_seed(3)
    feats = F.normalize(torch.randn(30, 6, generator=g), dim=1)
    _, left, right, s = random_batch(g)
    gcn = PairGCN(feat_dim=6, num_labels=5, hidden=(4, 4), pair_similarity=True)
    ch = gcn.similarity_channels(s, feats)
    for p in range(len(s)):
        i, j = int(left[p]), int(right[p])
        for n in torch.nonzero(s.mask[p]).flatten().tolist():
            v = int(s.node_ids[p, n])
            ci, cj = float(feats[v] @ feats[i]), float(feats[v] @ feats[j])
            expect = torch.tensor([ci + cj, abs(ci - cj), float(feats[i] @ feats[j])])
            assert torch.allclose(ch[p, n], expect, atol=1e-5)


def test_similarity_only_gcn_depends_on_features_only_through_cosines():
    # node_features=False: a rotation of every feature leaves all cosines, hence every g_ij, unchanged;
    # the default network (feature embedding in V) is not rotation invariant
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(30, 8, generator=g), dim=1)
    rot, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    _, _, _, s = random_batch(g)
    torch.manual_seed(0)
    sim_only = PairGCN(feat_dim=8, num_labels=5, hidden=(16, 16), pair_similarity=True, node_features=False)
    assert torch.allclose(sim_only(s, features=feats), sim_only(s, features=feats @ rot), atol=1e-5)
    # and the inference path (projected node table + unit_features) equals the training path
    by_table = sim_only(s, node_table=sim_only.project(feats), unit_features=feats)
    assert torch.allclose(by_table, sim_only(s, features=feats), atol=1e-6)
    both = PairGCN(feat_dim=8, num_labels=5, hidden=(16, 16), pair_similarity=True)
    assert not torch.allclose(both(s, features=feats), both(s, features=feats @ rot), atol=1e-4)
    with pytest.raises(ValueError, match="unit_features"):
        both(s, node_table=both.project(feats))


def test_predict_pairs_passes_the_memory_to_the_similarity_channels():
    g = torch.Generator().manual_seed(5)
    feats = F.normalize(torch.randn(30, 8, generator=g), dim=1)
    table, left, right, s = random_batch(g)
    gcn = PairGCN(feat_dim=8, num_labels=5, hidden=(16, 16), pair_similarity=True).eval()
    probs = predict_pairs(gcn, table, left, right, gcn.project(feats), batch_size=5, max_label=4,
                          unit_features=feats)
    assert torch.allclose(probs, torch.sigmoid(gcn(s, features=feats)), atol=1e-6)
