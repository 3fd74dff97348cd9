"""Synthetic shapes (superpoint_ros.training.synthetic_shapes): ground truth at the drawn corners."""
import cv2
import numpy as np
import pytest

from superpoint_ros.training import synthetic_shapes as S

CORNER_PRIMITIVES = ["lines", "polygon", "multiple_polygons", "cube", "star", "checkerboard", "stripes"]


def _ideal_corner_response():
    """Shi-Tomasi response at the corner of a square with the weakest contrast the generator allows."""
    square = np.zeros((40, 40), np.float32)
    square[10:30, 10:30] = 50
    response = cv2.cornerMinEigenVal(square / 255, blockSize=3, ksize=3)
    return cv2.dilate(response, np.ones((3, 3), np.uint8))[10, 10]


def _render_on_flat_background(primitive, seed):
    rng = np.random.default_rng([11, seed])
    canvas = S._Canvas(np.zeros((120, 160), np.float32))
    S.PRIMITIVES[primitive](rng, canvas)
    return canvas.result()


@pytest.mark.parametrize("primitive", CORNER_PRIMITIVES)
def test_ground_truth_points_are_drawn_corners(primitive):
    """Every label sits on a corner of what was drawn: a strong Shi-Tomasi (min-eigenvalue) response
    within 1 px; and straight edges, which are no corners, have none."""
    ideal = _ideal_corner_response()
    responses, total = [], 0
    for seed in range(12):
        image, points = _render_on_flat_background(primitive, seed)
        total += len(points)
        response = cv2.cornerMinEigenVal(image / 255, blockSize=3, ksize=3)
        local = cv2.dilate(response, np.ones((3, 3), np.uint8))
        responses.extend(local[int(y), int(x)] / ideal for x, y in points)
        assert np.all(points == np.round(points)), "vertices are drawn at integer pixels"
    assert total >= 12, f"{primitive}: too few points generated ({total})"
    responses = np.array(responses)
    assert np.mean(responses > 0.3) >= 0.95, f"{primitive}: labels off the drawn corners: {np.sort(responses)[:10]}"


@pytest.mark.parametrize("primitive", ["polygon", "multiple_polygons", "cube", "checkerboard", "stripes"])
def test_strong_image_corners_are_labelled(primitive):
    """Conversely, the strongest corners OpenCV finds in the image are (almost all) labelled.
    (A light blur first, as the generator applies: the staircase of an aliased shallow edge is not
    a corner, but Shi-Tomasi fires on it in the raw raster.)"""
    distances = []
    for seed in range(12):
        image, points = _render_on_flat_background(primitive, seed)
        image = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 1.0)
        corners = cv2.goodFeaturesToTrack(image, 100, 0.2, 3, blockSize=5)
        if corners is None or len(points) == 0:
            continue
        d = np.linalg.norm(corners.reshape(-1, 2)[:, None] - points[None], axis=-1).min(axis=1)
        distances.extend(d)
    distances = np.array(distances)
    assert len(distances) > 20
    # a blurred corner's response peaks ~1-2 px inside the shape: 3 px, the evaluation tolerance
    assert np.mean(distances <= 3.0) >= 0.9 and distances.max() <= 6.0, np.percentile(distances, [50, 90, 100])


@pytest.mark.parametrize("primitive", ["ellipses", "noise"])
def test_cornerless_scenes_have_no_points(primitive):
    for seed in range(5):
        _, points = S.generate_scene(np.random.default_rng(seed), primitive, 60, 80)
        assert points.shape == (0, 2)


def test_covered_points_are_removed():
    canvas = S._Canvas(np.zeros((60, 80), np.float32))
    small = np.array([[10, 10], [20, 10], [20, 20], [10, 20]])
    big = np.array([[5, 5], [40, 5], [40, 40], [5, 40]])
    canvas.add(lambda m: cv2.fillPoly(m, [small.astype(np.int32)], 1),
               lambda img: cv2.fillPoly(img, [small.astype(np.int32)], 100), small)
    canvas.add(lambda m: cv2.fillPoly(m, [big.astype(np.int32)], 1),
               lambda img: cv2.fillPoly(img, [big.astype(np.int32)], 200), big)
    _, points = canvas.result()
    assert sorted(map(tuple, points.astype(int))) == sorted(map(tuple, big))


def test_dataset_is_a_pure_function_of_seed_and_index():
    a, b = S.SyntheticShapes({"height": 48, "width": 64}), S.SyntheticShapes({"height": 48, "width": 64})
    for i in (0, 7, 12345):
        x, y = a[i], b[i]
        assert x["image"].shape == (1, 48, 64) and x["points"].shape == (128, 2)
        assert (x["image"] == y["image"]).all() and (x["points"] == y["points"]).all()
    assert not (a[0]["image"] == a[1]["image"]).all()
    other = S.SyntheticShapes({"height": 48, "width": 64, "seed": 1})
    assert not (other[0]["image"] == a[0]["image"]).all()


def test_every_primitive_appears_and_generation_never_fails():
    dataset = S.SyntheticShapes({"height": 40, "width": 48})  # small images stress the placement code
    kinds = {dataset.scene(i)[2] for i in range(300)}
    assert kinds == set(S.PRIMITIVES)
    for i in range(300):
        image, points, _ = dataset.scene(i)
        assert image.dtype == np.uint8 and image.shape == (40, 48)
        assert np.all((points >= 0) & (points < [48, 40]))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="primitives"):
        S.SyntheticShapes({"primitives": {"lines": -1.0}})
    with pytest.raises(ValueError, match="unknown primitive"):
        S.generate_scene(np.random.default_rng(0), "spiral", 32, 32)


def test_cli_dumps_images_and_points(tmp_path):
    S.main(["--out", str(tmp_path), "--num", "3", "--set", "height=32", "width=40"])
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3
    image = cv2.imread(str(pngs[0]), cv2.IMREAD_GRAYSCALE)
    assert image.shape == (32, 40)
    reference, points, _ = S.SyntheticShapes({"height": 32, "width": 40}).scene(0)
    np.testing.assert_array_equal(image, reference)
    np.testing.assert_array_equal(np.load(tmp_path / "0000000.npy"), points)
