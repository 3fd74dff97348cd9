"""Detector and descriptor losses (superpoint_ros.training.losses)."""
import math

import pytest
import torch
import torch.nn.functional as F

from superpoint_ros.keypoints import logits_to_heatmap
from superpoint_ros.training.losses import (
    cell_centres, correspondence_matrix, descriptor_loss, detector_loss, keypoint_map_to_labels,
    sparse_descriptor_loss)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_labels_follow_the_depth_to_space_layout_of_the_heatmap():
    keypoint_map = torch.zeros(1, 16, 24)
    keypoint_map[0, 8 + 3, 16 + 5] = 1  # cell (1, 2), pixel (row 3, col 5) inside it
    labels = keypoint_map_to_labels(keypoint_map)
    assert labels.shape == (1, 2, 3)
    assert labels[0, 1, 2] == 3 * 8 + 5
    assert (labels.flatten() == 64).sum() == 5  # every other cell is the dustbin
    # a one-hot logit at that label decodes to a heatmap peak at the same pixel
    logits = F.one_hot(labels, 65).permute(0, 3, 1, 2).float() * 20
    heat = logits_to_heatmap(logits)[0]
    assert tuple((heat == heat.max()).nonzero()[0].tolist()) == (11, 21)


def test_a_cell_with_several_points_picks_one_of_them():
    keypoint_map = torch.zeros(1, 8, 8)
    keypoint_map[0, 1, 1] = keypoint_map[0, 6, 2] = 1
    seen = {int(keypoint_map_to_labels(keypoint_map, torch.Generator().manual_seed(s))[0, 0, 0]) for s in range(30)}
    assert seen == {1 * 8 + 1, 6 * 8 + 2}


def test_detector_loss_is_low_for_correct_logits_and_ignores_invalid_cells():
    keypoint_map = torch.zeros(2, 16, 16)
    keypoint_map[0, 2, 3] = keypoint_map[1, 12, 9] = 1
    labels = keypoint_map_to_labels(keypoint_map)
    good = F.one_hot(labels, 65).permute(0, 3, 1, 2).float() * 30
    assert detector_loss(good, keypoint_map) < 1e-6
    assert abs(detector_loss(torch.zeros_like(good), keypoint_map) - math.log(65)) < 1e-5
    bad = good.clone()
    bad[0, :, 0, 0] = 0  # wrong in one cell only ...
    valid = torch.ones(2, 16, 16)
    valid[0, :8, :8] = 0  # ... which is masked out
    assert detector_loss(bad, keypoint_map, valid) < 1e-6
    assert detector_loss(bad, keypoint_map) > 0.1


def test_correspondences_of_an_eight_pixel_shift_are_the_neighbouring_cells():
    shift = torch.tensor([[[1.0, 0, 8], [0, 1, 0], [0, 0, 1]]], dtype=torch.float64)
    positive = correspondence_matrix(shift, 2, 3, radius=7.5)[0]
    expected = torch.zeros(6, 6, dtype=torch.bool)
    for row in range(2):
        for col in range(2):
            expected[row * 3 + col, row * 3 + col + 1] = True
    assert torch.equal(positive, expected)
    assert torch.allclose(cell_centres(1, 2), torch.tensor([[3.5, 3.5], [11.5, 3.5]]))


def _one_hot_descriptors(hc, wc, dim):
    d = torch.eye(dim)[: hc * wc].t().reshape(1, dim, hc, wc)
    return d


def test_descriptor_loss_is_zero_for_perfect_descriptors_and_positive_otherwise():
    identity = torch.eye(3, dtype=torch.float64)[None]
    d = _one_hot_descriptors(2, 3, 8)  # orthogonal per cell: positives dot 1, negatives dot 0
    assert descriptor_loss(d, d, identity) < 1e-7
    same = F.normalize(torch.ones(1, 8, 2, 3), dim=1)  # all cells identical: every negative violates
    assert descriptor_loss(same, same, identity) > 0.7
    random = F.normalize(torch.randn(1, 8, 2, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert descriptor_loss(random, random.flip(-1), identity) > 0.1


def test_sparse_loss_with_every_cell_equals_the_dense_loss():
    g = torch.Generator().manual_seed(1)
    d0 = F.normalize(torch.randn(2, 16, 4, 5, generator=g), dim=1)
    d1 = F.normalize(torch.randn(2, 16, 4, 5, generator=g), dim=1)
    h = torch.tensor([[1.0, 0.05, 3], [0.02, 0.98, -2], [0, 0, 1]], dtype=torch.float64)[None].repeat(2, 1, 1)
    dense = descriptor_loss(d0, d1, h)
    sparse = sparse_descriptor_loss(d0, d1, h, num_samples=20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(dense, sparse, atol=1e-6)
    fewer = sparse_descriptor_loss(d0, d1, h, num_samples=5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(fewer) and fewer > 0
