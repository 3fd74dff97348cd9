"""The one mutual nearest-neighbour matcher (temporal, stereo, track re-finding)."""
import re

import numpy as np
import pytest
import torch

from superpoint_ros import match_descriptors


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_mutual_nn_on_permuted_set_recovers_the_permutation():
    rng = np.random.default_rng(0)
    d0 = unit(rng.normal(size=(50, 32))).astype(np.float32)
    perm = rng.permutation(50)
    d1 = unit(d0[perm] + 0.01 * rng.normal(size=(50, 32))).astype(np.float32)
    m = match_descriptors(d0, d1)
    assert len(m) == 50
    # d1[k] = d0[perm[k]]: so index0 == perm[index1]
    assert np.array_equal(m.indices[:, 0], perm[m.indices[:, 1]])
    assert m.distances.max() < 0.1 and m.indices.dtype == np.int64


def test_non_mutual_pairs_are_dropped():
    d0 = unit(np.array([[1.0, 0.0], [0.9, 0.1]], np.float32))
    d1 = unit(np.array([[1.0, 0.02]], np.float32))
    m = match_descriptors(d0, d1)   # both of d0 prefer d1[0]; d1[0] prefers d0[0]
    assert m.indices.tolist() == [[0, 0]]


def test_ratio_test_and_max_distance():
    d0 = unit(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32))
    d1 = unit(np.array([[1.0, 0.05, 0.0], [1.0, -0.06, 0.0], [0.0, 1.0, 0.5]], np.float32))
    assert len(match_descriptors(d0, d1)) == 2
    # d0[0] has two near-equal candidates: ambiguous, removed by the ratio test
    assert match_descriptors(d0, d1, ratio_test=0.8).indices.tolist() == [[1, 2]]
    # d0[1] <-> d1[2] are ~0.47 apart: removed by max_distance
    m = match_descriptors(d0, d1, max_distance=0.2)
    assert m.indices.tolist() == [[0, 0]] and m.distances[0] < 0.2


def test_torch_inputs_and_empty_sets():
    d = torch.nn.functional.normalize(torch.randn(10, 8), dim=1)
    assert len(match_descriptors(d, d)) == 10
    empty = match_descriptors(d[:0], d)
    assert empty.indices.shape == (0, 2) and empty.distances.shape == (0,)


# --- the one matcher against a brute-force reference ---------------------------------------------

def reference_matches(d0, d1, ratio_test=None, max_distance=None, allowed=None):
    """Mutual nearest neighbours by loops over float64 distances: rows ``(i, j)`` and distances.

    Ties go to the lower index; the ratio test compares with the second-best allowed candidate
    of the row (none: it passes)."""
    d0, d1 = np.asarray(d0, np.float64), np.asarray(d1, np.float64)
    n, m = len(d0), len(d1)
    allowed = np.ones((n, m), bool) if allowed is None else np.asarray(allowed)
    dist = np.linalg.norm(d0[:, None] - d1[None], axis=2) if n and m else np.zeros((n, m))
    rows, dists = [], []
    for i in range(n):
        candidates = np.flatnonzero(allowed[i])
        if len(candidates) == 0:
            continue
        j = candidates[np.argmin(dist[i, candidates])]
        partners = np.flatnonzero(allowed[:, j])
        if partners[np.argmin(dist[partners, j])] != i:
            continue
        others = candidates[candidates != j]
        if ratio_test is not None and len(others) and not dist[i, j] < ratio_test * dist[i, others].min():
            continue
        if max_distance is not None and dist[i, j] > max_distance:
            continue
        rows.append((i, j))
        dists.append(dist[i, j])
    return np.asarray(rows, np.int64).reshape(-1, 2), np.asarray(dists)


def _noisy_pair(seed, n, m, dim=16):
    """Two unit descriptor sets where part of set 1 are noisy copies of set 0 (real matches)."""
    rng = np.random.default_rng(seed)
    d0 = unit(rng.normal(size=(n, dim)))
    d1 = unit(rng.normal(size=(m, dim)))
    shared = min(n, m) // 2
    d1[:shared] = unit(d0[rng.permutation(n)[:shared]] + 0.3 * rng.normal(size=(shared, dim)))
    return d0.astype(np.float32), d1.astype(np.float32)


@pytest.mark.parametrize("ratio_test", [None, 0.8, 1.0])
@pytest.mark.parametrize("max_distance", [None, 0.9])
@pytest.mark.parametrize("masked", [False, "mask", "pairs"])
def test_matches_equal_the_brute_force_reference(ratio_test, max_distance, masked):
    for seed in range(4):
        d0, d1 = _noisy_pair(seed, 40, 55)
        allowed = np.random.default_rng(100 + seed).random((40, 55)) < 0.3 if masked else None
        if masked == "pairs":  # the same pairs as (i, j) rows, shuffled, some twice
            pairs = np.argwhere(allowed)
            pairs = np.random.default_rng(seed).permutation(np.concatenate([pairs, pairs[::7]]))
            m = match_descriptors(d0, d1, ratio_test, max_distance, candidates=pairs)
        else:
            m = match_descriptors(d0, d1, ratio_test, max_distance, allowed)
        rows, dists = reference_matches(d0, d1, ratio_test, max_distance, allowed)
        assert m.indices.tolist() == rows.tolist()
        assert np.allclose(m.distances, dists, atol=1e-5) and m.distances.dtype == np.float32
        if masked:
            assert allowed[m.indices[:, 0], m.indices[:, 1]].all()


def test_masked_matching_prefers_allowed_pairs_and_skips_rows_without_any():
    d = unit(np.random.default_rng(0).normal(size=(6, 32))).astype(np.float32)
    allowed = np.zeros((6, 6), bool)
    allowed[0, 0] = allowed[1, 1] = allowed[2, 3] = True  # 2 may only pair with a wrong partner
    m = match_descriptors(d, d, allowed=allowed)
    assert {tuple(p) for p in m.indices.tolist()} == {(0, 0), (1, 1), (2, 3)}
    assert match_descriptors(d, d, allowed=np.zeros((6, 6), bool)).indices.shape == (0, 2)
    assert {tuple(p) for p in match_descriptors(d, d, candidates=np.argwhere(allowed)).indices.tolist()} == \
        {(0, 0), (1, 1), (2, 3)}
    assert match_descriptors(d, d, candidates=np.zeros((0, 2), np.int64)).indices.shape == (0, 2)


def test_ratio_test_uses_the_second_best_allowed_candidate():
    d0 = unit(np.array([[1.0, 0.0, 0.0]], np.float32))
    d1 = unit(np.array([[1.0, 0.05, 0.0], [1.0, -0.06, 0.0], [0.0, 0.0, 1.0]], np.float32))
    assert len(match_descriptors(d0, d1, ratio_test=0.8)) == 0  # d1[1] is a near-equal runner-up
    # geometry rules d1[1] out: the runner-up is now the far d1[2], and the match passes
    allowed = np.array([[True, False, True]])
    assert match_descriptors(d0, d1, ratio_test=0.8, allowed=allowed).indices.tolist() == [[0, 0]]
    # no second allowed candidate at all: unambiguous, passes
    only = np.array([[True, False, False]])
    assert match_descriptors(d0, d1, ratio_test=0.8, allowed=only).indices.tolist() == [[0, 0]]
    for mask in (allowed, only):  # the same as candidate pairs
        assert match_descriptors(d0, d1, ratio_test=0.8, candidates=np.argwhere(mask)).indices.tolist() == [[0, 0]]
    assert len(match_descriptors(d0, d1, ratio_test=0.8, candidates=[[0, 0], [0, 1]])) == 0


def test_exact_ties_go_to_the_lower_index_and_fail_the_ratio_test():
    # entries exact in float32: the duplicated rows' similarities are bitwise equal
    e0, e1, half = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]
    d0 = np.array([e0, half], np.float32)
    d1 = np.array([e0, e0, e1], np.float32)
    every_pair = np.argwhere(np.ones((2, 3), bool))
    for options in ({}, {"allowed": np.ones((2, 3), bool)}, {"candidates": every_pair}):
        assert match_descriptors(d0, d1, **options).indices.tolist() == [[0, 0]]
        assert match_descriptors(d0, d1, ratio_test=1.0, **options).indices.tolist() == []
        rows, _ = reference_matches(d0, d1, 1.0, None, options.get("allowed"))
        assert rows.tolist() == []
    # two rows tie for one column: the column's nearest is the lower row
    assert match_descriptors(np.array([e0, e0], np.float32), np.array([e0], np.float32)).indices.tolist() == [[0, 0]]
    # the mask breaks the tie the other way; column 0, now free, goes to its only partner (a tie of three)
    allowed = np.array([[False, True, True], [True, True, True]])
    assert match_descriptors(d0, d1, allowed=allowed).indices.tolist() == [[0, 1], [1, 0]]
    assert match_descriptors(d0, d1, candidates=np.argwhere(allowed)).indices.tolist() == [[0, 1], [1, 0]]
    assert reference_matches(d0, d1, allowed=allowed)[0].tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("n, m", [(0, 5), (5, 0), (0, 0)])
def test_empty_sets_give_no_matches_with_every_option(n, m):
    d0, d1 = _noisy_pair(0, 5, 5)
    result = match_descriptors(d0[:n], d1[:m], ratio_test=0.9, max_distance=1.0, allowed=np.ones((n, m), bool))
    assert result.indices.shape == (0, 2) and result.distances.shape == (0,)
    result = match_descriptors(d0[:n], d1[:m], ratio_test=0.9, candidates=np.argwhere(np.ones((n, m), bool)))
    assert result.indices.shape == (0, 2) and result.distances.shape == (0,)


@pytest.mark.parametrize("options, message", [
    ({"ratio_test": 0.0}, "ratio_test must be in (0, 1]"),
    ({"ratio_test": 1.5}, "ratio_test must be in (0, 1]"),
    ({"ratio_test": float("nan")}, "ratio_test must be in (0, 1]"),
    ({"max_distance": -0.1}, "max_distance must be >= 0"),
    ({"allowed": np.ones((3, 4), bool)}, "allowed must be an (4, 3) bool mask"),
    ({"allowed": np.ones((4, 3), np.uint8)}, "allowed must be an (4, 3) bool mask"),
    ({"candidates": np.zeros((5, 3), np.int64)}, "candidates must be (P, 2) integer pairs"),
    ({"candidates": np.zeros((5, 2), np.float32)}, "candidates must be (P, 2) integer pairs"),
    ({"candidates": [[0, 3]]}, "candidates index outside the (4, 3) descriptor sets"),
    ({"candidates": [[-1, 0]]}, "candidates index outside the (4, 3) descriptor sets"),
    ({"candidates": [[0, 0]], "allowed": np.ones((4, 3), bool)}, "not both"),
])
def test_out_of_range_options_raise_clear_errors(options, message):
    d0, d1 = _noisy_pair(0, 4, 3)
    with pytest.raises(ValueError, match=re.escape(message)):
        match_descriptors(d0, d1, **options)
