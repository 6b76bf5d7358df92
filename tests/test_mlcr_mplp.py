"""MPLP (MLCR Eqs. 7-11): hand-made cases for both variants, and exact agreement with a plain per-image
reference (Python loops over full rank lists) on random features."""

from __future__ import annotations

import math

import pytest
import torch

from mprd.core.positive_sets import PositiveSets
from mprd.methods.mlcr.mplp import MPLPGenerator, mplp_positive_sets


# ------------------------------------------------------------------------------------------- reference
def reference_mplp(memory: torch.Tensor, t: float, variant: str, cap: int | None = None) -> list[set[int]]:
    """Per-image MPLP written plainly from the paper (Eqs. 7-11) and, for 'release', the release's loop."""
    sims = memory.float() @ memory.float().T
    order = torch.argsort(sims, dim=1, descending=True).tolist()
    num = memory.shape[0]
    result = []
    for i in range(num):
        k = int((sims[i] > t).sum())
        if cap is not None:
            k = min(k, cap)
        if variant == "paper":
            length = 0
            for c in order[i][:k]:  # walk P_i head to tail, stop at the first hard negative (Eq. 10)
                if c == i or i in order[c][:k]:
                    length += 1
                else:
                    break
            positives = set(order[i][:length])
        else:
            window = max(k, 10)
            step = 1  # the release's loop: counter starts at 1, breaks when i sits at 0-based pos > window
            for j in range(min(window, num)):
                c = order[i][j]
                if order[c].index(i) > window:
                    break
                step = max(step, j)
            step = min(step + 1, k)
            positives = set(order[i][:step]) if step > 0 else set()
        result.append(positives | {i})
    return result


def as_sets(ps: PositiveSets) -> list[set[int]]:
    return [set(ps.row(i).tolist()) for i in range(len(ps))]


def random_memory(num: int, dim: int, seed: int, clusters: int | None = None, noise: float = 0.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, dim, generator=g)
    if clusters is not None:
        centres = torch.randn(clusters, dim, generator=g)
        x = centres[torch.randint(clusters, (num,), generator=g)] + noise * x
    return torch.nn.functional.normalize(x, dim=1)


# ------------------------------------------------------------------------------------------- hand-made cases
def _unit(azimuth_deg: float) -> list[float]:
    a = math.radians(azimuth_deg)
    return [math.cos(a), math.sin(a), 0.0]


def _window_case(cluster: int) -> torch.Tensor:
    """Slot 0 = i at 0°, slot 1 = a at -20°, slot 2 = c at 50°, then `cluster` points at 55°, 55.5°, ...

    With t = 0.6 (53.13°): P_0 = [0, 1, 2] (k_0 = 3). R_1 = [1, 0, ...] so a passes. In R_2 the cluster
    points (5°-10° from c) come before i (50°), so i sits at 0-based position cluster + 1.
    """
    pts = [_unit(0), _unit(-20), _unit(50)] + [_unit(55 + 0.5 * m) for m in range(cluster)]
    return torch.tensor(pts)


def test_hand_made_window_paper_vs_release() -> None:
    # paper: window k_0 = 3, i at position >= 10 in R_2 -> c fails, walk stops: P*_0 = {0, 1}
    for cluster in (9, 10):
        assert as_sets(mplp_positive_sets(_window_case(cluster), variant="paper", backend="torch"))[0] == {0, 1}
    # release: window max(3, 10) = 10 on a 0-based position, i.e. positions 0..10 pass
    assert as_sets(mplp_positive_sets(_window_case(9), variant="release", backend="torch"))[0] == {0, 1, 2}
    assert as_sets(mplp_positive_sets(_window_case(10), variant="release", backend="torch"))[0] == {0, 1}


def test_hand_made_release_keeps_failing_top1() -> None:
    """k_0 = 2 (i at 0°, c at 50°), 12 points at 55°-60.5° sit between c and i in R_c (i at position 13).

    Paper: c fails -> P*_0 = {0}. Release: position 13 > 10 fails too, but the loop counter starting at 1
    keeps the top-1 candidate: l = min(max(2, run = 1), k = 2) = 2 -> {0, 1}.
    """
    mem = torch.tensor([_unit(0), _unit(50)] + [_unit(55 + 0.5 * m) for m in range(12)])
    assert as_sets(mplp_positive_sets(mem, variant="paper", backend="torch"))[0] == {0}
    assert as_sets(mplp_positive_sets(mem, variant="release", backend="torch"))[0] == {0, 1}


def _unit3(azimuth_deg: float, elevation_deg: float) -> list[float]:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return [math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]


def test_stop_at_first_failure_excludes_later_passing_candidates() -> None:
    """i at 0°; a at azimuth 45° (s = 0.707); b at -50° (s = 0.643); two points above a (azimuth 45°,
    elevation 40° and 41°: s with i = 0.54 and 0.53 < t, s with a = 0.77 and 0.75 > 0.707).

    P_0 = [i, a, b], k_0 = 3. R_a = [a, p1, p2, i, ...]: i at 0-based position 3 -> a fails the paper's
    top-3 test, and the walk stops although b would pass (R_b = [b, i, ...]): P*_0 = {i}.
    Release: position 3 <= 10 passes, all three pass: {i, a, b}.
    """
    mem = torch.tensor([_unit3(0, 0), _unit3(45, 0), _unit3(-50, 0), _unit3(45, 40), _unit3(45, 41)])
    sims = mem @ mem.T
    assert int((sims[0] > 0.6).sum()) == 3 and torch.argsort(sims[2], descending=True)[1] == 0
    assert as_sets(mplp_positive_sets(mem, variant="paper", backend="torch"))[0] == {0}
    assert as_sets(mplp_positive_sets(mem, variant="release", backend="torch"))[0] == {0, 1, 2}


def test_all_zero_rows_are_singletons() -> None:
    # the memory starts at zero (MLCR §3.1): k_i = 0, and i is still positive
    mem = torch.zeros(5, 4)
    for variant in ("paper", "release"):
        ps = mplp_positive_sets(mem, variant=variant, backend="torch")
        assert as_sets(ps) == [{i} for i in range(5)]
        ps = mplp_positive_sets(mem, variant=variant, backend="torch", anchors=torch.tensor([1, 3]))
        assert as_sets(ps) == [{i} for i in range(5)]


# ------------------------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize("variant", ["paper", "release"])
@pytest.mark.parametrize(
    ("num", "dim", "seed", "clusters", "t"),
    [(240, 6, 0, None, 0.6), (300, 16, 1, 12, 0.6), (200, 8, 2, 5, 0.4), (150, 5, 3, None, 0.8)],
)
def test_matches_reference_on_random_features(
    num: int, dim: int, seed: int, clusters: int | None, t: float, variant: str
) -> None:
    mem = random_memory(num, dim, seed, clusters)
    got = as_sets(mplp_positive_sets(mem, threshold=t, variant=variant, backend="torch", chunk_size=37))
    assert got == reference_mplp(mem, t, variant)


def test_fixture_exercises_both_outcomes() -> None:
    """The random fixtures above are not trivial: some walks stop early, some keep every candidate."""
    mem = random_memory(240, 6, 0)
    sims = mem @ mem.T
    k = (sims > 0.6).sum(1)
    sizes = mplp_positive_sets(mem, variant="paper", backend="torch").sizes
    assert bool((sizes < k).any()) and bool(((sizes == k) & (k > 3)).any())


def test_uncapped_widens_beyond_initial_width() -> None:
    """Clusters of ~100 give k_i > 64 (the first k-NN width): the table must grow to stay exact (Eq. 9)."""
    mem = random_memory(300, 8, 4, clusters=3, noise=0.25)
    k = ((mem @ mem.T) > 0.6).sum(1)
    assert int(k.max()) > 64
    for variant in ("paper", "release"):
        assert as_sets(mplp_positive_sets(mem, variant=variant, backend="torch")) == reference_mplp(mem, 0.6, variant)


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_max_candidates_caps_k(variant: str) -> None:
    mem = random_memory(300, 8, 4, clusters=3, noise=0.25)
    got = as_sets(mplp_positive_sets(mem, variant=variant, max_candidates=20, backend="torch"))
    assert got == reference_mplp(mem, 0.6, variant, cap=20)
    assert max(len(s) for s in got) <= 20


@pytest.mark.parametrize("variant", ["paper", "release"])
def test_faiss_backend_agrees_with_torch(variant: str) -> None:
    mem = random_memory(200, 12, 5, clusters=10)
    a = mplp_positive_sets(mem, variant=variant, backend="faiss")
    b = mplp_positive_sets(mem, variant=variant, backend="torch")
    assert torch.equal(a.offsets, b.offsets) and torch.equal(a.indices, b.indices)


def test_release_contains_paper_when_uncapped() -> None:
    """Window k_i <= max(k_i, 10) + 1 and l >= run: the release's P*_i is a superset of the paper's."""
    mem = random_memory(300, 16, 1, clusters=12)
    paper = as_sets(mplp_positive_sets(mem, variant="paper", backend="torch"))
    release = as_sets(mplp_positive_sets(mem, variant="release", backend="torch"))
    assert all(p <= r for p, r in zip(paper, release, strict=True))
    assert any(p < r for p, r in zip(paper, release, strict=True))


@pytest.mark.parametrize(("variant", "cap"), [("paper", None), ("release", None), ("paper", 20), ("release", 20)])
def test_anchors_match_full_prediction(variant: str, cap: int | None) -> None:
    """Per-batch use (the release predicts only the batch's slots): anchor rows equal the full run, others {i}."""
    mem = random_memory(300, 8, 4, clusters=3, noise=0.25)  # k_i up to > 64: widening on the anchor side too
    anchors = torch.tensor([5, 17, 17, 120, 299, 0, 64])
    full = as_sets(mplp_positive_sets(mem, variant=variant, max_candidates=cap, backend="torch"))
    part = as_sets(mplp_positive_sets(mem, variant=variant, max_candidates=cap, backend="torch", anchors=anchors))
    chosen = set(anchors.tolist())
    assert all(part[i] == (full[i] if i in chosen else {i}) for i in range(300))
    assert any(len(full[i]) > 1 for i in chosen)


# ------------------------------------------------------------------------------------------- API and errors
def test_generator_refresh_matches_function() -> None:
    mem = random_memory(120, 6, 6)
    gen = MPLPGenerator(threshold=0.6, variant="release", backend="torch")
    assert gen.name == "mplp"
    ps = gen.refresh(mem, epoch=7)
    ref = mplp_positive_sets(mem, 0.6, "release", backend="torch")
    assert torch.equal(ps.offsets, ref.offsets) and torch.equal(ps.indices, ref.indices)
    batch = torch.tensor([3, 9])
    ps = gen.refresh(mem, anchors=batch)
    ref = mplp_positive_sets(mem, 0.6, "release", backend="torch", anchors=batch)
    assert torch.equal(ps.offsets, ref.offsets) and torch.equal(ps.indices, ref.indices)
    assert all(i in ps.row(i).tolist() for i in range(len(ps)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variant": "code"}, "variant"),
        ({"threshold": 1.0}, "threshold"),
        ({"max_candidates": 0}, "max_candidates"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mplp_positive_sets(random_memory(10, 4, 0), **kwargs)


def test_out_of_range_anchor_raises() -> None:
    with pytest.raises(ValueError, match="anchors"):
        mplp_positive_sets(random_memory(10, 4, 0), anchors=torch.tensor([3, 10]))


def test_unnormalised_memory_raises() -> None:
    with pytest.raises(ValueError, match="L2-normalised"):
        mplp_positive_sets(torch.randn(10, 4) * 3)
    with pytest.raises(ValueError, match="variant"):
        MPLPGenerator(variant="Paper")
