import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from superpoint_ros import FeatureExtractor, ImageError
from superpoint_ros.image import to_grayscale_float


#: plain decoding (pixel-grid keypoints, no uniform grid): the network's own behaviour
PLAIN = {"uniform_cell": None, "subpixel": False}


@pytest.fixture(scope="module")
def extractor(random_weights):
    return FeatureExtractor(weights=random_weights, device="cpu", max_keypoints=-1,
                            detection_threshold=0.0155, remove_borders=0, **PLAIN)


def as_set(kpts, offset=(0, 0), box=None):
    pts = {(int(x) + offset[0], int(y) + offset[1]) for x, y in kpts}
    if box:
        x0, y0, x1, y1 = box
        pts = {p for p in pts if x0 <= p[0] < x1 and y0 <= p[1] < y1}
    return pts


def test_shift_by_one_cell_shifts_keypoints_by_8px(extractor, camera_image):
    a = camera_image[40:240, 40:280]
    b = camera_image[48:248, 48:288]   # b(x, y) = a(x + 8, y + 8)
    fa, fb = extractor(a), extractor(b)
    assert len(fa) > 50
    box = (48, 48, 200, 150)           # far from both images' borders (receptive field)
    sa = as_set(fa.keypoints, box=box)
    sb = as_set(fb.keypoints, offset=(8, 8), box=box)
    assert len(sa) > 20
    assert sa == sb
    # descriptors move with them
    ia = {p: i for i, p in enumerate(as_set_list(fa.keypoints))}
    ib = {p: i for i, p in enumerate(as_set_list(fb.keypoints, (8, 8)))}
    common = sorted(sa)
    da = fa.descriptors[[ia[p] for p in common]]
    db = fb.descriptors[[ib[p] for p in common]]
    assert np.allclose(da, db, atol=1e-4)


def as_set_list(kpts, offset=(0, 0)):
    return [(int(x) + offset[0], int(y) + offset[1]) for x, y in kpts]


def test_odd_size_maps_back_to_original_pixels(random_weights, camera_image):
    ex = FeatureExtractor(weights=random_weights, device="cpu", max_keypoints=-1, detection_threshold=0.0155,
                          remove_borders=0, nms_radius=2, **PLAIN)
    odd = camera_image[:101, :203]
    f = ex(odd)
    assert f.image_size == (101, 203)
    assert len(f) > 10
    assert (f.keypoints[:, 0] <= 202).all() and (f.keypoints[:, 1] <= 100).all()
    assert (f.keypoints >= 0).all()
    # the same pixels padded by hand give the same detections away from the padded edge
    padded = cv2.copyMakeBorder(odd, 0, 3, 0, 5, cv2.BORDER_REPLICATE)
    fp = ex(padded)
    box = (0, 0, 203 - 3, 101 - 3)
    assert as_set(f.keypoints, box=box) == as_set(fp.keypoints, box=box)


def test_batch_equals_one_by_one(extractor, camera_image, astronaut_bgr):
    a = camera_image[:240, :320]
    b = astronaut_bgr[100:340, 50:370]
    batch = extractor.extract_batch([a, b])
    for image, fb in zip([a, b], batch):
        f1 = extractor(image)
        # batched convolutions may round differently in the last bit, which can reorder the
        # near-ties of a random network: compare as sets, and descriptors of shared points
        common = as_set(f1.keypoints) & as_set(fb.keypoints)
        assert len(common) >= 0.97 * max(len(f1), len(fb))
        i1 = {p: i for i, p in enumerate(as_set_list(f1.keypoints))}
        ib = {p: i for i, p in enumerate(as_set_list(fb.keypoints))}
        shared = sorted(common)
        assert np.allclose(f1.descriptors[[i1[p] for p in shared]], fb.descriptors[[ib[p] for p in shared]], atol=1e-4)


def test_input_types_agree(extractor, camera_image):
    gray = camera_image[:120, :160]
    ref = extractor(gray)
    variants = [
        gray.astype(np.float32) / 255.0,
        np.repeat(gray[..., None], 3, axis=2),            # BGR with equal channels
        np.dstack([gray, gray, gray, np.full_like(gray, 7)]),  # BGRA, alpha ignored
        gray.astype(np.uint16) * 257,                     # 16-bit
        gray[..., None],
    ]
    for v in variants:
        assert np.allclose(to_grayscale_float(v), gray / 255.0, atol=1e-5)
        f = extractor(v)
        # last-bit rounding of the luma weights may reorder near-ties of the random network
        common = as_set(f.keypoints) & as_set(ref.keypoints)
        assert len(common) >= 0.95 * len(ref)


def test_output_types_and_defaults(random_weights, astronaut_bgr):
    ex = FeatureExtractor(weights=random_weights, device="cpu", max_keypoints=100, detection_threshold=0.0)
    f = ex(astronaut_bgr)
    assert f.keypoints.dtype == np.float32 and f.keypoints.shape == (100, 2)
    assert f.scores.dtype == np.float32 and np.all(np.diff(f.scores) <= 0)
    assert f.descriptors.shape == (100, 256)
    assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    # border of 4 px respected
    assert f.keypoints.min() >= 4 and f.keypoints[:, 0].max() <= 511 - 4


def test_uniform_grid_and_subpixel_options(random_weights, camera_image):
    ex = FeatureExtractor(weights=random_weights, device="cpu", max_keypoints=-1, detection_threshold=0.0,
                          uniform_cell=64, max_per_cell=3, subpixel=True)
    f = ex(camera_image)
    cells = np.floor(f.keypoints / 64).astype(int)
    _, counts = np.unique(cells[:, 1] * 100 + cells[:, 0], return_counts=True)
    assert counts.max() == 3 and len(counts) == 64
    assert not np.allclose(f.keypoints, np.round(f.keypoints))  # refined off the integer grid


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 10), np.uint8), "empty"),
    (np.zeros((10, 10, 2), np.uint8), "shape"),
    (np.zeros((10, 10), np.int32), "dtype"),
    (np.full((10, 10), np.nan, np.float32), "NaN"),
    ("image.png", "numpy"),
])
def test_bad_images_get_specific_errors(extractor, bad, message):
    with pytest.raises(ImageError, match=message):
        extractor(bad)


def test_mixed_size_batch_is_rejected(extractor):
    with pytest.raises(ImageError, match="one size"):
        extractor.extract_batch([np.zeros((16, 16), np.uint8), np.zeros((24, 16), np.uint8)])


def test_tiny_image_gives_no_keypoints_not_a_crash(extractor):
    f = extractor(np.full((5, 7), 128, np.uint8))
    assert f.keypoints.shape[1] == 2 and f.image_size == (5, 7)


def test_cuda_request_without_cuda_is_a_clear_error(random_weights):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        FeatureExtractor(weights=random_weights, device="cuda")


def test_grayscale_conversion_uses_bgr_luma():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR order
    assert np.allclose(to_grayscale_float(bgr), 0.299, atol=1e-6)
    assert np.allclose(to_grayscale_float(bgr, "rgb"), 0.114, atol=1e-6)


def test_cli_writes_npz_and_png(tmp_path, random_weights, astronaut_bgr):
    image = tmp_path / "astronaut.png"
    cv2.imwrite(str(image), astronaut_bgr)
    result = subprocess.run([sys.executable, "-m", "superpoint_ros.cli", str(image), "--weights", random_weights,
                             "-o", str(tmp_path / "out"), "--max-keypoints", "50", "--detection-threshold", "0"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = np.load(tmp_path / "out" / "astronaut.npz")
    assert data["keypoints"].shape == (50, 2) and data["descriptors"].shape == (50, 256)
    vis = cv2.imread(str(tmp_path / "out" / "astronaut_features.png"))
    assert vis.shape == astronaut_bgr.shape
    bad = subprocess.run([sys.executable, "-m", "superpoint_ros.cli", str(image), "--weights", str(tmp_path / "x.pt")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr


def test_cli_never_overwrites_outputs_of_images_sharing_a_name(tmp_path, random_weights, astronaut_bgr, camera_image):
    from superpoint_ros import cli

    for folder, image in (("d1", astronaut_bgr), ("d2", camera_image)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "x.png"), image)
    cv2.imwrite(str(tmp_path / "d1" / "x.jpg"), camera_image)
    out = tmp_path / "out"
    common = ["--weights", random_weights, "-o", str(out), "--max-keypoints", "40", "--detection-threshold", "0"]
    assert cli.main([str(tmp_path / "d1" / "x.png"), str(tmp_path / "d2" / "x.png"), *common]) == 0
    first, second = np.load(out / "d1" / "x.npz"), np.load(out / "d2" / "x.npz")
    assert first["image_size"].tolist() == [512, 512] and not np.array_equal(first["keypoints"], second["keypoints"])
    assert (out / "d1" / "x_features.png").is_file() and not (out / "x.npz").exists()
    # same folder and name, another extension
    assert cli.main([str(tmp_path / "d1" / "x.png"), str(tmp_path / "d1" / "x.jpg"), *common, "--no-image"]) == 0
    assert (out / "x_png.npz").is_file() and (out / "x_jpg.npz").is_file()
    # one image alone keeps its plain name
    assert cli.main([str(tmp_path / "d2" / "x.png"), *common, "--no-image"]) == 0 and (out / "x.npz").is_file()


def test_cli_refuses_the_same_image_twice(tmp_path, capsys):
    from superpoint_ros import cli

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((16, 16), np.uint8))
    assert cli.main([str(image), str(tmp_path / "." / "x.png"), "-o", str(tmp_path / "out")]) == 2
    assert "image given more than once" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --- 16-bit images from 10/12-bit cameras (image.bit_depth) ----------------------------------------
@pytest.fixture(scope="module")
def trained_extractor():
    """The shipped model, float32 (counts compared below must not depend on the CPU's int8 path)."""
    return FeatureExtractor(device="cpu", precision="fp32", max_keypoints=-1)


def test_a_12_bit_photo_in_uint16_keeps_the_8_bit_photos_keypoints(trained_extractor, camera_image):
    photo = camera_image
    twelve_bit = np.round(photo.astype(np.float64) * (4095 / 255)).astype(np.uint16)  # what a 12-bit camera sends
    eight = len(trained_extractor(photo))
    auto = trained_extractor(twelve_bit)                            # bit_depth 0: white = 4095 from the maximum
    stated = FeatureExtractor(device="cpu", precision="fp32", max_keypoints=-1, bit_depth=12)(twelve_bit)
    msb_aligned = trained_extractor(twelve_bit << 4)                # the same camera, data in the top 12 bits
    as_16_bit = FeatureExtractor(device="cpu", precision="fp32", max_keypoints=-1, bit_depth=16)(twelve_bit)
    assert eight > 200
    for features in (auto, stated, msb_aligned):
        assert abs(len(features) - eight) <= 0.05 * eight, (len(features), eight)
    assert len(as_16_bit) < 0.6 * eight  # the old /65535 scaling: a nearly black image (measured 132 vs 301)


def test_white_level_of_16_bit_data():
    from superpoint_ros.image import white_level

    assert white_level(np.array([[0, 4095]], np.uint16)) == 4095          # 12-bit
    assert white_level(np.array([[0, 4096]], np.uint16)) == 8191          # a 13th bit is set
    assert white_level(np.array([[0, 1023]], np.uint16)) == 1023          # 10-bit
    assert white_level(np.array([[0, 17]], np.uint16)) == 255             # never below 8 bits
    assert white_level(np.array([[0, 65535]], np.uint16)) == 65535
    assert white_level(np.array([[0, 17]], np.uint16), bit_depth=16) == 65535
    assert white_level(np.zeros((2, 2), np.uint8), bit_depth=12) == 255   # 8-bit data ignores it
    gray = to_grayscale_float(np.array([[1000, 5000]], np.uint16), bit_depth=12)
    assert np.allclose(gray, [[1000 / 4095, 1.0]], atol=1e-7)              # above the stated bits: clipped
    with pytest.raises(ValueError, match="bit_depth must be 0"):
        FeatureExtractor(device="cpu", bit_depth=4)


# --- huge images: resized before the network (max_size) -------------------------------------------
def test_a_huge_image_is_resized_before_the_network_keypoints_in_input_pixels(random_weights, camera_image, caplog):
    ex = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32", max_size=512)
    huge = np.repeat(np.repeat(camera_image, 8, axis=0), 8, axis=1)  # 4096x4096: exactly 8x, the area filter undoes it
    reference = ex(camera_image)
    with caplog.at_level("WARNING", logger="superpoint_ros.extractor"):
        first, second = ex(huge), ex(huge)
    assert reference.resized_to is None and first.resized_to == (512, 512) and first.image_size == (4096, 4096)
    assert len(reference) > 50
    assert np.allclose(first.keypoints, (reference.keypoints + 0.5) * 8 - 0.5, atol=1e-3)
    assert np.array_equal(first.descriptors, reference.descriptors)
    assert np.array_equal(second.keypoints, first.keypoints)
    notes = [r.getMessage() for r in caplog.records if "resized" in r.getMessage()]
    assert notes == ["images of 4096x4096 px are larger than max_size=512 px: resized to 512x512 px for the network "
                     "(keypoints still in input pixels)"]  # once per input size, not per frame


def test_the_16_bit_white_level_is_read_before_resizing(random_weights, camera_image):
    """Resizing averages away the brightest pixels; the brightness must not change with it."""
    ex = FeatureExtractor(weights=random_weights, device="cpu", precision="fp32", max_size=256)
    image = camera_image.astype(np.uint16) * 8  # 11-bit data...
    image[:2, :2] = 0
    image[0, 0] = 4095  # ...but for one 12-bit white pixel, which the area filter averages to 1024
    prepared = ex.prepare([image])
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    assert prepared.scale == (2.0, 2.0) and small.max() < 2048
    assert np.allclose(prepared.grays[0], small / 4095.0, atol=1e-6)
