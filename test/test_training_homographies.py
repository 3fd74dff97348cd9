"""Homography sampling and warping (superpoint_ros.training.homographies)."""
import cv2
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings, strategies as st

from superpoint_ros.training.homographies import (
    HomographyParams, homography_from_points, image_frame, points_to_map, sample_homography, warp_images,
    warp_keypoint_maps, warp_points)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), height=st.integers(16, 300), width=st.integers(16, 300),
       angle=st.floats(0, 90), perspective=st.floats(0, 0.3), scale_min=st.floats(0.3, 1.0), shrink=st.booleans())
@example(seed=144042, height=58, width=16, angle=59.0, perspective=0.28125, scale_min=0.3125, shrink=False)  # horizon crosses
def test_sampled_homographies_are_valid_and_keep_content_in_view(seed, height, width, angle, perspective, scale_min,
                                                                 shrink):
    params = HomographyParams(scale_min=scale_min, scale_max=1.0, max_angle_deg=angle, perspective=perspective,
                              shrink_to_fit=shrink)
    h = sample_homography(np.random.default_rng(seed), (height, width), params)
    assert h.shape == (3, 3) and np.isfinite(h).all()
    assert abs(np.linalg.det(h)) > 1e-9
    assert np.linalg.cond(h) < 1e8
    # the warped frame shows a quad of the source that lies inside the source (no empty borders)
    quad = warp_points(np.linalg.inv(h), image_frame(height, width))
    assert quad[:, 0].min() >= -0.5 - 1e-6 and quad[:, 0].max() <= width - 0.5 + 1e-6
    assert quad[:, 1].min() >= -0.5 - 1e-6 and quad[:, 1].max() <= height - 0.5 + 1e-6
    # what is shown is never split by the horizon: the denominator of the warped -> source map keeps
    # its sign over the whole warped frame (source pixels outside the quad may lie beyond the
    # horizon of h, which is harmless: they map outside the warped frame)
    ys, xs = np.mgrid[0:height:7, 0:width:7]
    grid = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], -1)
    denominator = np.concatenate([grid, np.c_[image_frame(height, width), np.ones(4)]]) @ np.linalg.inv(h)[2]
    assert np.all(denominator > 0) or np.all(denominator < 0)
    edges = np.roll(quad, -1, 0) - quad
    cross = edges[:, 0] * np.roll(edges, -1, 0)[:, 1] - edges[:, 1] * np.roll(edges, -1, 0)[:, 0]
    assert np.all(cross > 0), "the source quad must be convex and keep its orientation"


def test_sampling_is_reproducible_and_varied():
    a = [sample_homography(np.random.default_rng(3), (60, 80)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    b = sample_homography(np.random.default_rng(4), (60, 80))
    assert not np.allclose(a[0], b)


def _rotation_and_scale(h, shape):
    """In-plane rotation (deg) and isotropic scale of ``h``'s local affine map at the image centre."""
    height, width = shape
    c = np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    p = h @ c
    jacobian = (h[:2, :2] * p[2] - np.outer(p[:2], h[2, :2])) / p[2] ** 2
    angle = np.degrees(np.arctan2(jacobian[1, 0] - jacobian[0, 1], jacobian[0, 0] + jacobian[1, 1]))
    return angle, np.sqrt(abs(np.linalg.det(jacobian)))


def test_shrink_to_fit_samples_the_whole_rotation_range():
    """Rejection sampling (v1) under-samples large angles at large scales; shrinking does not."""
    shape, n = (240, 320), 400
    angles = {}
    for shrink in (False, True):
        rng = np.random.default_rng(0)
        params = HomographyParams(max_angle_deg=60.0, perspective=0.0, max_aspect_change=0.0, shrink_to_fit=shrink)
        # the source -> warped map rotates by minus the quad's angle
        angles[shrink] = np.abs([_rotation_and_scale(sample_homography(rng, shape, params), shape)[0]
                                 for _ in range(n)])
    beyond_45 = {k: float(np.mean(v > 45)) for k, v in angles.items()}
    assert beyond_45[True] == pytest.approx(0.25, abs=0.06)  # uniform in +-60: a quarter beyond 45
    assert beyond_45[False] < beyond_45[True] / 2


def test_v2_pair_warps_cover_large_rotation_and_scale():
    """The relative warp of a training pair under config/train/v2_superpoint.yaml spans +-60 deg and
    about 0.5-2x scale, where the v1 config stays within 0.65-1.5x."""
    import yaml
    from pathlib import Path

    conf = yaml.safe_load((Path(__file__).resolve().parents[1] / "config/train/v2_superpoint.yaml").read_text())
    shape = (240, 320)
    stats = {}
    for name, params in (("v2", HomographyParams.from_dict(conf["homography"])),
                         ("v1", HomographyParams(max_angle_deg=30.0))):
        rng = np.random.default_rng(1)
        pairs = [(sample_homography(rng, shape, params), sample_homography(rng, shape, params)) for _ in range(500)]
        rel = np.array([_rotation_and_scale(h1 @ np.linalg.inv(h0), shape) for h0, h1 in pairs])
        stats[name] = (np.abs(rel[:, 0]), rel[:, 1])
    rotation, scale = stats["v2"]
    assert rotation.max() <= 61 and np.percentile(rotation, 95) > 40
    assert scale.min() < 0.55 and scale.max() > 1.9
    assert np.mean((scale > 1.5) | (scale < 1 / 1.5)) > 0.12
    assert np.mean((stats["v1"][1] > 1.5) | (stats["v1"][1] < 1 / 1.5)) < 0.02


def test_homography_from_points_matches_opencv():
    rng = np.random.default_rng(0)
    src = image_frame(40, 50)
    dst = src + rng.uniform(-5, 5, src.shape)
    ours = homography_from_points(src, dst)
    theirs = cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32))
    np.testing.assert_allclose(ours / ours[2, 2], theirs / theirs[2, 2], rtol=1e-4, atol=1e-6)


def test_warp_images_agrees_with_cv2_warp_perspective():
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.uniform(0, 1, (48, 64)).astype(np.float32), (0, 0), 1.0)
    hs = np.stack([sample_homography(rng, image.shape) for _ in range(4)])
    ours = warp_images(torch.from_numpy(image)[None, None].expand(4, -1, -1, -1).contiguous(),
                       torch.from_numpy(hs)).numpy()
    for h, out in zip(hs, ours):
        ref = cv2.warpPerspective(image, h, (64, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        # cv2 interpolates with 5-bit fixed-point weights: agreement to ~1/32 of the local gradient
        np.testing.assert_allclose(out[0], ref, atol=0.01)



def test_warped_points_land_where_the_warped_image_puts_them():
    rng = np.random.default_rng(2)
    image = np.zeros((96, 128), np.float32)
    points = np.array([[20, 30], [100, 70], [64, 48], [40, 80]], np.float64)
    for x, y in points.astype(int):
        image[y, x] = 1.0
    image = cv2.GaussianBlur(image, (0, 0), 2.0)  # smooth blobs so the peak survives interpolation
    for _ in range(5):
        h = sample_homography(rng, image.shape, HomographyParams(scale_min=0.8))
        warped = cv2.warpPerspective(image, h, (128, 96), flags=cv2.INTER_LINEAR)
        expected = warp_points(h, points)
        for (x, y) in expected:
            if not (3 <= x < 125 and 3 <= y < 93):
                continue
            xi, yi = int(round(x)), int(round(y))
            window = warped[yi - 3:yi + 4, xi - 3:xi + 4]
            dy, dx = np.unravel_index(np.argmax(window), window.shape)
            assert abs(dx - 3) <= 1 and abs(dy - 3) <= 1, "blob peak must be at the warped point (+-1 px)"


def test_warp_points_numpy_and_torch_agree_and_invert():
    rng = np.random.default_rng(5)
    h = sample_homography(rng, (50, 70))
    pts = rng.uniform(0, 50, (20, 2))
    out_np = warp_points(h, pts)
    out_t = warp_points(torch.from_numpy(h), torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(out_np, out_t, atol=1e-9)
    np.testing.assert_allclose(warp_points(np.linalg.inv(h), out_np), pts, atol=1e-8)
    batched = warp_points(torch.from_numpy(np.stack([h, np.eye(3)])), torch.from_numpy(np.stack([pts, pts])))
    np.testing.assert_allclose(batched[1].numpy(), pts)


def test_keypoint_maps_drop_points_outside_and_padding():
    points = torch.tensor([[[1.2, 2.6], [9.0, 3.0], [-1.0, 0.0], [4.0, 4.0]]])
    valid = torch.tensor([[True, True, True, False]])
    m = points_to_map(points, valid, (5, 8))
    assert m.shape == (1, 5, 8) and m.sum() == 1 and m[0, 3, 1] == 1
    shift = torch.tensor([[[1.0, 0, 2], [0, 1, 1], [0, 0, 1]]], dtype=torch.float64)
    warped = warp_keypoint_maps(points, valid, shift, (5, 8))
    # (1.2, 2.6) -> (3, 4); (9, 3) -> (11, 4) leaves the image; (-1, 0) -> (1, 1) enters it
    assert warped.sum() == 2 and warped[0, 4, 3] == 1 and warped[0, 1, 1] == 1


@pytest.mark.parametrize("bad", [{"unknown": 1}])
def test_params_reject_unknown_keys(bad):
    with pytest.raises(ValueError, match="unknown"):
        HomographyParams.from_dict(bad)


def test_adjugate_inverse_matches_linalg_inverse_up_to_scale():
    from superpoint_ros.training.homographies import invert_homographies

    rng = np.random.default_rng(8)
    hs = torch.from_numpy(np.stack([sample_homography(rng, (60, 80)) * rng.uniform(0.1, 10) for _ in range(6)]))
    ours = invert_homographies(hs)
    reference = torch.linalg.inv(hs)
    ours = ours / ours[:, 2:, 2:]
    reference = reference / reference[:, 2:, 2:]
    torch.testing.assert_close(ours, reference, atol=1e-9, rtol=1e-9)
    pts = torch.from_numpy(rng.uniform(0, 60, (6, 10, 2)))
    torch.testing.assert_close(warp_points(invert_homographies(hs), warp_points(hs, pts)), pts)
