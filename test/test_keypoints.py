import pytest
import torch

from superpoint_ros.keypoints import (detect_keypoints, logits_to_heatmap, nms, refine_subpixel, remove_border,
                                      sample_descriptors, select_uniform)


def test_heatmap_depth_to_space_places_each_channel_at_its_pixel():
    logits = torch.full((1, 65, 2, 3), -20.0)
    logits[0, 64] = 0.0                      # dustbin wins everywhere...
    logits[0, 5 * 8 + 2, 1, 2] = 20.0        # ...except channel (r=5, s=2) of cell (i=1, j=2)
    heat = logits_to_heatmap(logits)
    assert heat.shape == (1, 16, 24)
    row, col = divmod(int(heat[0].argmax()), 24)
    assert (row, col) == (8 + 5, 16 + 2)
    assert heat[0, row, col] > 0.99 and heat.sum() < 1.01


def test_nms_keeps_local_maxima_and_suppresses_within_radius():
    heat = torch.zeros(1, 40, 40)
    heat[0, 10, 10] = 0.9
    heat[0, 12, 13] = 0.5    # within radius 4 of the stronger point: suppressed
    heat[0, 10, 16] = 0.6    # 6 px away in x: survives
    heat[0, 30, 30] = 0.2    # isolated: survives
    out = nms(heat, radius=4)
    kept = {tuple(p) for p in torch.nonzero(out[0]).tolist()}
    assert kept == {(10, 10), (10, 16), (30, 30)}
    assert out[0, 10, 10] == pytest.approx(0.9)


def test_nms_recovers_point_whose_suppressor_was_suppressed():
    heat = torch.zeros(1, 30, 30)
    heat[0, 10, 10] = 1.0
    heat[0, 10, 14] = 0.8   # suppressed by (10,10)
    heat[0, 10, 18] = 0.7   # only near the suppressed (10,14): a true maximum once that is gone
    kept = {tuple(p) for p in torch.nonzero(nms(heat, 4)[0]).tolist()}
    assert kept == {(10, 10), (10, 18)}


def test_remove_border_and_top_k():
    heat = torch.rand(1, 20, 30) * 0.5 + 0.1
    out = remove_border(heat, 3)
    assert out[0, :3].abs().sum() == 0 and out[0, :, -3:].abs().sum() == 0
    assert torch.equal(out[0, 3:-3, 3:-3], heat[0, 3:-3, 3:-3])
    kpts, scores = detect_keypoints(out[0], 0.0, max_keypoints=7)
    assert kpts.shape == (7, 2) and scores.shape == (7,)
    assert torch.all(scores[:-1] >= scores[1:])
    assert scores[0] == out.max()
    # xy order: x is the column
    assert out[0, int(kpts[0, 1]), int(kpts[0, 0])] == scores[0]


def test_uniform_selection_caps_points_per_cell():
    torch.manual_seed(0)
    kpts = torch.cat([torch.rand(50, 2) * 15, torch.rand(3, 2) * 15 + torch.tensor([32.0, 32.0])])
    scores = torch.rand(53)
    keep = select_uniform(kpts, scores, cell_size=16, max_per_cell=2, image_size=(64, 64))
    cells = [(int(y) // 16, int(x) // 16) for x, y in kpts[keep].tolist()]
    assert sorted(cells) == [(0, 0), (0, 0), (2, 2), (2, 2)]
    # the two best of the crowded cell are the ones kept
    assert set(keep[:4].tolist()) >= set(torch.topk(scores[:50], 2).indices.tolist())


def blob(shape, centre, sigma=1.0):
    ys, xs = torch.meshgrid(torch.arange(float(shape[0])), torch.arange(float(shape[1])), indexing="ij")
    return torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))


@pytest.mark.parametrize("true", [(5.3, 4.8), (5.0, 5.0), (4.6, 5.45)])
def test_subpixel_refinement_finds_the_centre_of_a_peak(true):
    heat = blob((11, 11), true)  # a peak a few px wide, as the network's are
    refined = refine_subpixel(heat, torch.tensor([[5, 5]]))
    assert refined[0].tolist() == pytest.approx(list(true), abs=0.02)


def test_subpixel_refinement_at_the_border_and_on_empty_windows():
    heat = blob((11, 11), (0.3, 9.6))  # the peak's window reaches outside the image
    refined = refine_subpixel(heat, torch.tensor([[0, 10]]))
    # outside pixels weigh nothing (as if the image were zero-padded), they do not repeat edge values
    padded = refine_subpixel(torch.nn.functional.pad(heat, (3, 3, 3, 3)), torch.tensor([[3, 13]])) - 3
    assert refined[0].tolist() == pytest.approx(padded[0].tolist(), abs=1e-6)
    assert 0.0 < refined[0, 0].item() < 1.0 and 9.0 < refined[0, 1].item() < 10.0
    empty = refine_subpixel(torch.zeros(11, 11), torch.tensor([[4, 6]]))
    assert empty[0].tolist() == [4.0, 6.0]
    assert refine_subpixel(heat, torch.zeros((0, 2), dtype=torch.long)).shape == (0, 2)


def test_descriptor_at_cell_centre_is_that_cells_descriptor():
    torch.manual_seed(1)
    desc = torch.nn.functional.normalize(torch.randn(16, 3, 5), dim=0)
    kpts = torch.tensor([[8 * j + 3.5, 8 * i + 3.5] for i in range(3) for j in range(5)])
    sampled = sample_descriptors(desc, kpts)
    expected = desc.permute(1, 2, 0).reshape(-1, 16)
    assert torch.allclose(sampled, expected, atol=1e-6)
    assert torch.allclose(sampled.norm(dim=1), torch.ones(15))
    # between two cell centres: the normalised mean of both
    mid = sample_descriptors(desc, torch.tensor([[7.5, 3.5]]))
    assert torch.allclose(mid[0], torch.nn.functional.normalize(desc[:, 0, 0] + desc[:, 0, 1], dim=0), atol=1e-6)


def test_empty_detections_are_well_formed():
    kpts, scores = detect_keypoints(torch.zeros(16, 16), 0.5, 10)
    assert kpts.shape == (0, 2) and scores.shape == (0,)
    assert sample_descriptors(torch.randn(8, 2, 2), kpts).shape == (0, 8)
