import numpy as np
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
