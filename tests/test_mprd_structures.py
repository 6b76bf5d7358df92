"""Pairwise neighbourhood structures (MPRD Eq. 4) and DRNL labels vs a plain per-pair reference."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from mprd.core.neighbors import adaptive_knn
from mprd.methods.mprd.structures import (
    PairStructures,
    build_pair_structures,
    drnl_from_distances,
    drnl_labels,
    iter_structure_chunks,
)

TOPOLOGIES = ("pair", "induced")
TARGET_EDGES = ("always", "never", "natural")


# ------------------------------------------------------------------------------------------ reference
def _nn(table: torch.Tensor, v: int) -> list[int]:
    return [int(a) for a in table[v].tolist() if a >= 0]


def _bfs(adj: dict[int, set[int]], source: int, removed: int) -> dict[int, int]:
    dist = {source: 0}
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for w in adj[u]:
            if w != removed and w not in dist:
                dist[w] = dist[u] + 1
                queue.append(w)
    return dist


def reference_structure(table, i, j, topology, target_edge, max_label):
    """Plain Python: (node set, edge set of frozensets of ids, {node: DRNL label})."""
    nodes = {i, j} | set(_nn(table, i)) | set(_nn(table, j))
    edges = set()
    owners = [i, j] if topology == "pair" else sorted(nodes)
    for b in owners:
        for a in _nn(table, b):
            if a in nodes and a != b:
                edges.add(frozenset((a, b)))
    if target_edge == "always":
        edges.add(frozenset((i, j)))
    elif target_edge == "never":
        edges.discard(frozenset((i, j)))
    adj = {v: set() for v in nodes}
    for e in edges:
        a, b = tuple(e)
        adj[a].add(b)
        adj[b].add(a)
    di, dj = _bfs(adj, i, removed=j), _bfs(adj, j, removed=i)
    labels = {}
    for v in nodes:
        if v in (i, j):
            labels[v] = 1
        elif v in di and v in dj:
            d = di[v] + dj[v]
            labels[v] = min(max_label, 1 + min(di[v], dj[v]) + (d // 2) * ((d // 2) + (d % 2) - 1))
        else:
            labels[v] = 0
    return nodes, edges, labels


def unpack(s: PairStructures, p: int):
    ids = s.node_ids[p].tolist()
    n_real = int(s.mask[p].sum())
    real = ids[:n_real]
    edges = {frozenset((real[a], real[b])) for a, b in (s.adj[p] > 0).nonzero().tolist()}
    labels = {real[a]: int(s.drnl[p, a]) for a in range(n_real)}
    return ids, n_real, edges, labels


def assert_matches_reference(table, left, right, topology, target_edge, max_label=10, chunk_size=None):
    s = build_pair_structures(
        table, left, right, topology=topology, target_edge=target_edge, max_label=max_label, chunk_size=chunk_size
    )
    assert s.adj.shape == (len(left), s.num_nodes, s.num_nodes)
    assert torch.equal(s.adj, s.adj.transpose(1, 2))
    assert float(s.adj.diagonal(dim1=1, dim2=2).abs().sum()) == 0.0
    for p, (i, j) in enumerate(zip(left.tolist(), right.tolist(), strict=True)):
        nodes, edges, labels = reference_structure(table, i, j, topology, target_edge, max_label)
        ids, n_real, got_edges, got_labels = unpack(s, p)
        # order: i, j, then the rest ascending; padding is -1 with mask False, no edges, label 0
        assert ids[:n_real] == [i, j] + sorted(nodes - {i, j})
        assert all(v == -1 for v in ids[n_real:]) and not bool(s.mask[p, n_real:].any())
        assert bool(s.mask[p, :n_real].all())
        assert float(s.adj[p, n_real:].abs().sum()) == 0.0
        assert int(s.drnl[p, n_real:].abs().sum()) == 0
        assert got_edges == edges, (i, j)
        assert got_labels == labels, (i, j)
    return s


def random_table(num: int, width: int, generator: torch.Generator, k_min: int = 0) -> torch.Tensor:
    """Neighbour table with variable k in [k_min, width], distinct ids, no self, -1 padding."""
    rows = []
    for v in range(num):
        k = int(torch.randint(k_min, width + 1, (1,), generator=generator))
        others = torch.tensor([u for u in torch.randperm(num, generator=generator).tolist() if u != v][:k])
        rows.append(torch.cat([others, torch.full((width - k,), -1)]).long())
    return torch.stack(rows)


def random_pairs(table: torch.Tensor, num_pairs: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Half candidate pairs (j ∈ NN(i), as in Eq. 7), half random pairs i != j."""
    num = table.shape[0]
    left = torch.randint(0, num, (num_pairs,), generator=generator)
    right = (left + torch.randint(1, num, (num_pairs,), generator=generator)) % num
    for p in range(0, num_pairs, 2):
        nn_ = _nn(table, int(left[p]))
        if nn_:
            right[p] = nn_[int(torch.randint(0, len(nn_), (1,), generator=generator))]
    return left, right


# ------------------------------------------------------------------------------------------ hand cases
# Neighbour table used by the hand-drawn cases (pair (0, 1)):
#   NN(0) = {1, 2, 3}, NN(1) = {0, 3, 4}, NN(2) = {3}, NN(3) = {}, NN(4) = {2}, NN(5) = {0}
HAND = torch.tensor(
    [[1, 2, 3], [0, 3, 4], [3, -1, -1], [-1, -1, -1], [2, -1, -1], [0, -1, -1]],
    dtype=torch.long,
)


def test_hand_double_star_drnl():
    # Eq. 4 (pair topology): edges 0-1, 0-2, 0-3, 1-3, 1-4. Node 5 points at 0 but is no neighbour of 0 or 1,
    # so it is not in the structure. DRNL, SEAL-style:
    #   d_0 (node 1 removed): 2 -> 1, 3 -> 1, 4 unreachable (only linked to 1)
    #   d_1 (node 0 removed): 3 -> 1, 4 -> 1, 2 unreachable
    #   node 3 (common): d = 2 -> 1 + 1 + 1*(1 + 0 - 1) = 2;  nodes 2, 4 (one side unreachable) -> 0
    s = build_pair_structures(HAND, torch.tensor([0]), torch.tensor([1]), topology="pair")
    assert s.node_ids.tolist() == [[0, 1, 2, 3, 4]]
    assert s.drnl.tolist() == [[1, 1, 0, 2, 0]]
    expected = torch.zeros(5, 5)
    for a, b in [(0, 1), (0, 2), (0, 3), (1, 3), (1, 4)]:
        expected[a, b] = expected[b, a] = 1
    assert torch.equal(s.adj[0], expected)


def test_hand_induced_drnl():
    # Induced variant adds 2-3 (NN(2) = {3}) and 4-2 (NN(4) = {2}).
    #   d_0 (1 removed): 2 -> 1, 3 -> 1, 4 -> 2 (via 2)
    #   d_1 (0 removed): 3 -> 1, 4 -> 1, 2 -> 2 (via 3 or 4)
    #   node 2: (1, 2), d = 3 -> 1 + 1 + 1*(1 + 1 - 1) = 3; node 3: (1, 1) -> 2; node 4: (2, 1) -> 3
    s = build_pair_structures(HAND, torch.tensor([0]), torch.tensor([1]), topology="induced")
    assert s.drnl.tolist() == [[1, 1, 3, 2, 3]]
    assert int(s.adj[0].sum()) == 2 * 7


def test_hand_drnl_long_path_and_clipping():
    # i = 0 with NN(0) = {2, 3, 4, 5}, j = 1 with NN(1) = {5}; induced chain 2-3-4-5.
    # d_0 = 1 for all of 2..5 (direct). d_1 (0 removed): 5 -> 1, 4 -> 2, 3 -> 3, 2 -> 4.
    #   5: (1,1) d=2 -> 2;  4: (1,2) d=3 -> 3;  3: (1,3) d=4 -> 1+1+2*(2+0-1) = 4;  2: (1,4) d=5 -> 1+1+2*(2+1-1) = 6
    table = torch.tensor(
        [[2, 3, 4, 5], [5, -1, -1, -1], [3, -1, -1, -1], [4, -1, -1, -1], [5, -1, -1, -1], [-1] * 4],
        dtype=torch.long,
    )
    s = build_pair_structures(table, torch.tensor([0]), torch.tensor([1]), topology="induced", max_label=10)
    assert s.node_ids.tolist() == [[0, 1, 2, 3, 4, 5]]
    assert s.drnl.tolist() == [[1, 1, 6, 4, 3, 2]]
    clipped = build_pair_structures(table, torch.tensor([0]), torch.tensor([1]), topology="induced", max_label=5)
    assert clipped.drnl.tolist() == [[1, 1, 5, 4, 3, 2]]
    # pair topology of the same table: only 5 is common -> 2; the others see just i -> 0
    star = build_pair_structures(table, torch.tensor([0]), torch.tensor([1]), topology="pair")
    assert star.drnl.tolist() == [[1, 1, 0, 0, 0, 2]]


def test_drnl_formula_table():
    # SEAL's table: (1,1)=2, (1,2)=3, (1,3)=4, (2,2)=5, (2,3)=7, (3,3)=10; -1 (unreachable) -> 0
    d_i = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 1, -1]])
    d_j = torch.tensor([[0, 0, 1, 2, 3, 2, 3, 3, -1, 2]])
    got = drnl_from_distances(d_i, d_j, max_label=100)
    assert got.tolist() == [[1, 1, 2, 3, 4, 5, 7, 10, 0, 0]]


@pytest.mark.parametrize("target_edge", TARGET_EDGES)
def test_target_edge_options(target_edge):
    # pair (2, 5): neither is in the other's NN list, so the natural structure has no 2-5 edge; (0, 1) has one
    s = build_pair_structures(HAND, torch.tensor([2, 0]), torch.tensor([5, 1]), target_edge=target_edge)
    expected = {"always": [1.0, 1.0], "never": [0.0, 0.0], "natural": [0.0, 1.0]}[target_edge]
    assert s.adj[:, 0, 1].tolist() == expected and s.adj[:, 1, 0].tolist() == expected
    # DRNL ignores the target edge (distances are measured with the other endpoint removed)
    ref = build_pair_structures(HAND, torch.tensor([2, 0]), torch.tensor([5, 1]), target_edge="always")
    assert torch.equal(s.drnl, ref.drnl)


# ------------------------------------------------------------------------------------------ brute force
@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("target_edge", TARGET_EDGES)
def test_random_tables_match_reference(topology, target_edge):
    g = torch.Generator().manual_seed(7)
    table = random_table(40, 6, g)  # k in [0, 6], including rows with no neighbours
    left, right = random_pairs(table, 120, g)
    s = assert_matches_reference(table, left, right, topology, target_edge, max_label=4, chunk_size=37)
    # the pair topology uses a closed form for DRNL; the generic batched BFS must agree with it
    assert torch.equal(drnl_labels(s.adj > 0, s.mask, max_label=4), s.drnl)


@pytest.mark.parametrize("topology", TOPOLOGIES)
@pytest.mark.parametrize("target_edge", TARGET_EDGES)
def test_real_knn_graph_matches_reference(topology, target_edge):
    g = torch.Generator().manual_seed(3)
    # clustered features so adaptive k varies (threshold rule) and neighbourhoods overlap
    centres = torch.randn(6, 16, generator=g)
    feats = centres[torch.randint(0, 6, (60,), generator=g)] + 0.6 * torch.randn(60, 16, generator=g)
    feats = torch.nn.functional.normalize(feats, dim=1)
    _, idx, k = adaptive_knn(feats, threshold=0.7, min_k=3, k_max=9, backend="torch")
    assert int(k.min()) < int(k.max())  # the test exercises -1 padding
    left, right = random_pairs(idx, 100, g)
    assert_matches_reference(idx, left, right, topology, target_edge)


def test_virtual_rows_extend_the_table():
    # a perturbed copy x'_0 gets row N (its neighbours searched against the memory); nobody points at it
    g = torch.Generator().manual_seed(11)
    table = random_table(30, 5, g, k_min=2)
    virtual = torch.tensor([[0, 3, 7, -1, -1]])
    ext = torch.cat([table, virtual])
    left, right = torch.tensor([0, 30, 5]), torch.tensor([30, 0, 30])
    s = assert_matches_reference(ext, left, right, "induced", "always")
    assert s.node_ids[0, :2].tolist() == [0, 30]


def test_chunked_equals_unchunked_and_iterator_covers_all():
    g = torch.Generator().manual_seed(5)
    table = random_table(50, 7, g)
    left, right = random_pairs(table, 90, g)
    full = build_pair_structures(table, left, right, topology="induced")
    chunked = build_pair_structures(table, left, right, topology="induced", chunk_size=8)
    assert torch.equal(full.node_ids, chunked.node_ids)
    assert torch.equal(full.adj, chunked.adj) and torch.equal(full.drnl, chunked.drnl)
    seen = torch.zeros(90, dtype=torch.long)
    for idx, s in iter_structure_chunks(table, left, right, chunk_size=16, topology="induced"):
        seen[idx] += 1
        ref = full[idx]
        n = ref.num_nodes
        s = s.pad_to(n)
        assert torch.equal(s.node_ids, ref.node_ids) and torch.equal(s.drnl, ref.drnl)
        assert torch.equal(s.adj, ref.adj)
    assert seen.tolist() == [1] * 90


def test_structures_to_device_and_empty():
    s = build_pair_structures(HAND, torch.tensor([0]), torch.tensor([1])).to("cpu")
    assert s.adj.dtype == torch.float32 and s.drnl.dtype == torch.long and s.mask.dtype == torch.bool
    empty = build_pair_structures(HAND, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
    assert len(empty) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"topology": "full"}, "topology"),
        ({"target_edge": "sometimes"}, "target_edge"),
        ({"max_label": 0}, "max_label"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_pair_structures(HAND, torch.tensor([0]), torch.tensor([1]), **kwargs)


def test_bad_pairs_raise():
    with pytest.raises(ValueError, match="differ"):
        build_pair_structures(HAND, torch.tensor([2]), torch.tensor([2]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        build_pair_structures(HAND, torch.tensor([0]), torch.tensor([6]))
    with pytest.raises(ValueError, match="int64"):
        build_pair_structures(HAND.float(), torch.tensor([0]), torch.tensor([1]))
