"""Issue 8, property-based tests (hypothesis): image decoding and the feature/match message codec.
Random shapes, encodings, row paddings, byte orders and descriptor sizes round-trip exactly, and
arbitrary (inconsistent) messages either decode to an image of the stated size or fail with the
node's "skip this frame" error, never anything else."""
import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from superpoint_ros.image import ImageError, to_grayscale_float
from superpoint_ros.io.image_decoding import ENCODINGS, ImageDecodingError, decode_compressed_image, decode_image
from superpoint_ros.io.messages import (
    CloudLayoutError, decode_features, decode_stereo_matches, decode_temporal_matches, pack_features,
    pack_stereo_matches, pack_temporal_matches, to_pointcloud2, unpack)
from superpoint_ros.stamps import stamp_ns_from_seconds as ns

pytestmark = pytest.mark.ros

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: encoding -> (numpy dtype, channels, expected decoder output from the pixel array)
EXACT = {
    "mono8": ("u1", 1, lambda a: a), "8UC1": ("u1", 1, lambda a: a),
    "mono16": ("u2", 1, lambda a: a), "16UC1": ("u2", 1, lambda a: a),
    "32FC1": ("f4", 1, lambda a: a), "64FC1": ("f8", 1, lambda a: a.astype(np.float32)),
    "bgr8": ("u1", 3, lambda a: a), "8UC3": ("u1", 3, lambda a: a), "rgb8": ("u1", 3, lambda a: a[..., ::-1]),
    "bgra8": ("u1", 4, lambda a: a[..., :3]), "8UC4": ("u1", 4, lambda a: a[..., :3]),
    "rgba8": ("u1", 4, lambda a: a[..., 2::-1]),
    "bgr16": ("u2", 3, lambda a: a), "16UC3": ("u2", 3, lambda a: a), "rgb16": ("u2", 3, lambda a: a[..., ::-1]),
    "bgra16": ("u2", 4, lambda a: a[..., :3]), "rgba16": ("u2", 4, lambda a: a[..., 2::-1]),
}


def pixels(rng, dtype, shape):
    if dtype.kind == "f":
        return rng.uniform(0, 1, shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


@PROPERTY
@given(encoding=st.sampled_from(sorted(EXACT)), height=st.integers(16, 40), width=st.integers(16, 40),
       pad=st.integers(0, 19), big_endian=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_raw_images_round_trip_exactly(encoding, height, width, pad, big_endian, seed):
    code, channels, expected = EXACT[encoding]
    dtype = np.dtype(code)
    array = pixels(np.random.default_rng(seed), dtype, (height, width) if channels == 1 else (height, width, channels))
    wire = array.astype(dtype.newbyteorder(">" if big_endian else "<"))
    rows = np.ascontiguousarray(wire).reshape(height, -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((height, pad), 0xA5, np.uint8)], axis=1)  # any pad, even unaligned
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=padded.shape[1])
    msg.data = padded.tobytes()
    out = decode_image(deserialize_message(serialize_message(msg), Image))
    want = expected(array)
    assert out.shape == want.shape and out.dtype == want.dtype and out.dtype.isnative
    assert np.array_equal(out, want)
    gray = to_grayscale_float(out)  # and the extractor accepts it
    assert gray.shape == (height, width) and np.isfinite(gray).all()


@PROPERTY
@given(encoding=st.one_of(st.sampled_from(sorted(ENCODINGS)), st.text(max_size=12)),
       height=st.integers(0, 48), width=st.integers(0, 48), step=st.integers(0, 400),
       length=st.integers(0, 6000), big_endian=st.booleans(), fill=st.integers(0, 255))
def test_arbitrary_image_messages_decode_or_fail_clearly(encoding, height, width, step, length, big_endian, fill):
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=step)
    msg.data = bytes([fill]) * length
    try:
        out = decode_image(msg)
    except ImageDecodingError as e:
        assert str(e)  # a reason, never an empty message
        return
    assert out.shape[:2] == (height, width)
    try:
        to_grayscale_float(out)
    except ImageError as e:  # e.g. a float image whose bytes are NaN
        assert "NaN" in str(e)


@PROPERTY
@given(encoding=st.sampled_from([e for e in ENCODINGS if e.startswith(("bayer", "uyvy", "yuv", "yuyv"))]),
       height=st.integers(16, 41), width=st.integers(16, 41), pad=st.integers(0, 9), seed=st.integers(0, 1000))
def test_bayer_and_yuv_of_any_size_become_gray_of_that_size(encoding, height, width, pad, seed):
    code, channels, _ = ENCODINGS[encoding]
    dtype = np.dtype(code)
    array = pixels(np.random.default_rng(seed), dtype, (height, width * channels))
    rows = array.view(np.uint8).reshape(height, -1)
    padded = np.concatenate([rows, np.zeros((height, pad), np.uint8)], axis=1)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=padded.shape[1])
    msg.data = padded.tobytes()
    try:
        out = decode_image(msg)
    except ImageDecodingError as e:  # allowed only with a reason (e.g. odd widths of a 4:2:2 image)
        assert encoding in str(e)
        return
    assert out.shape == (height, width) and out.dtype == dtype


@PROPERTY
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jpeg", "png", "bgr8; jpeg compressed bgr8", ""]))
def test_arbitrary_compressed_bytes_decode_or_fail_clearly(data, fmt):
    msg = CompressedImage(format=fmt)
    msg.data = data
    try:
        out = decode_compressed_image(msg)
    except ImageDecodingError as e:
        assert str(e)
        return
    assert out.ndim in (2, 3) and min(out.shape[:2]) >= 16


@PROPERTY
@given(height=st.integers(16, 48), width=st.integers(16, 48), colour=st.booleans(), sixteen=st.booleans())
def test_png_round_trips(height, width, colour, sixteen):
    rng = np.random.default_rng(height * 100 + width)
    image = pixels(rng, np.dtype(np.uint16 if sixteen else np.uint8), (height, width, 3) if colour else (height, width))
    ok, png = cv2.imencode(".png", image)
    msg = CompressedImage(format="png")
    msg.data = png.tobytes()
    assert np.array_equal(decode_compressed_image(msg), image)


# --- the feature / match message codec ---------------------------------------------------------
def finite_f32(rng, shape, scale=1e4):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def header(sec, nanosec, frame_id="cam"):
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


@PROPERTY
@given(n=st.integers(0, 80), dim=st.integers(1, 300), seed=st.integers(0, 2 ** 32 - 1),
       sec=st.integers(0, 2 ** 31 - 1), nanosec=st.integers(0, 999_999_999))
def test_features_round_trip_bit_exact_for_any_size(n, dim, seed, sec, nanosec):
    rng = np.random.default_rng(seed)
    kp, scores, desc = finite_f32(rng, (n, 2)), finite_f32(rng, n, 1.0), finite_f32(rng, (n, dim), 1.0)
    ids = rng.integers(0, 2 ** 53, n, dtype=np.int64)
    lengths = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    msg = wire(to_pointcloud2(header(sec, nanosec), pack_features(kp, scores, desc, ids, lengths)))
    d = decode_features(msg)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sec, nanosec)
    assert d.descriptors.shape == (n, dim)
    for got, want in ((d.keypoints, kp), (d.scores, scores), (d.descriptors, desc), (d.track_ids, ids),
                      (d.track_lengths, lengths)):
        assert got.dtype == want.dtype and np.array_equal(got, want)


@PROPERTY
@given(m=st.integers(0, 60), seed=st.integers(0, 2 ** 32 - 1), sec=st.integers(-2 ** 31, 2 ** 31 - 1),
       nanosec=st.integers(0, 999_999_999))
def test_temporal_and_stereo_matches_round_trip(m, seed, sec, nanosec):
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, 2 ** 32, (m, 2), dtype=np.uint64).astype(np.int64)
    distances, inliers = finite_f32(rng, m, 1.0), rng.integers(0, 2, m).astype(bool)
    t = decode_temporal_matches(wire(to_pointcloud2(header(1, 2), pack_temporal_matches(indices, distances, inliers,
                                                                                         (sec, nanosec)))))
    assert np.array_equal(t["indices"], indices) and np.array_equal(t["distances"], distances)
    assert np.array_equal(t["inliers"], inliers)
    assert t["previous_stamp"] == ((sec, nanosec) if m else None)
    n_left, n_right = int(rng.integers(1, 50)), int(rng.integers(1, 50))
    left, right = finite_f32(rng, (n_left, 2)), finite_f32(rng, (n_right, 2))
    pairs = np.stack([rng.integers(0, n_left, m), rng.integers(0, n_right, m)], axis=1)
    s = decode_stereo_matches(wire(to_pointcloud2(header(1, 2), pack_stereo_matches(pairs, distances, left, right))))
    assert np.array_equal(s["indices"], pairs) and np.array_equal(s["left_keypoints"], left[pairs[:, 0]])
    assert np.array_equal(s["disparities"], left[pairs[:, 0], 0] - right[pairs[:, 1], 0])


@PROPERTY
@given(n=st.integers(1, 30), dim=st.integers(1, 64), cut=st.integers(1, 200), seed=st.integers(0, 1000))
def test_truncated_clouds_fail_with_a_layout_error(n, dim, cut, seed):
    rng = np.random.default_rng(seed)
    msg = to_pointcloud2(header(0, 0), pack_features(finite_f32(rng, (n, 2)), finite_f32(rng, n), finite_f32(rng, (n, dim)),
                                                     np.arange(n)))
    assume(cut <= len(msg.data))
    msg.data = bytes(msg.data)[:-cut]
    with pytest.raises(CloudLayoutError, match="does not hold"):
        decode_features(msg)


@PROPERTY
@given(n=st.integers(1, 10), dim=st.integers(1, 16), shrink=st.integers(1, 40))
def test_a_point_step_shorter_than_the_fields_fails_with_a_layout_error(n, dim, shrink):
    rng = np.random.default_rng(n)
    msg = to_pointcloud2(header(0, 0), pack_features(finite_f32(rng, (n, 2)), finite_f32(rng, n), finite_f32(rng, (n, dim)),
                                                     np.arange(n)))
    assume(shrink < msg.point_step)
    msg.point_step -= shrink
    msg.row_step = msg.point_step * n
    with pytest.raises(CloudLayoutError):
        unpack(msg)


@given(track_id=st.one_of(st.integers(-2 ** 63, -1), st.integers(2 ** 53, 2 ** 63 - 1)))
@settings(max_examples=30, deadline=None)
def test_track_ids_that_would_not_travel_exactly_are_refused(track_id):
    with pytest.raises(ValueError, match=r"\[0, 2\*\*53\)"):
        pack_features(np.zeros((1, 2)), np.zeros(1), np.zeros((1, 4)), np.array([track_id], np.int64))


# --- any image size through the Frontend ----------------------------------------------------------
@pytest.fixture(scope="module")
def small_frontend(random_weights):
    from superpoint_ros.frontend import Frontend

    return Frontend({"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 50,
                     "extractor.detection_threshold": 0.0})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(height=st.integers(1, 72), width=st.integers(1, 72), channels=st.sampled_from([0, 1, 3, 4]),
       dtype=st.sampled_from(["u1", "u2", "f4"]), max_size=st.sampled_from([0, 24, 40]), seed=st.integers(0, 99))
def test_any_image_size_gives_valid_features_or_a_clear_error(small_frontend, height, width, channels, dtype,
                                                              max_size, seed):
    frontend = small_frontend
    frontend.update({"image.max_size": max_size})
    shape = (height, width) if channels == 0 else (height, width, channels)
    image = pixels(np.random.default_rng(seed), np.dtype(dtype), shape)
    frontend.reset()
    try:
        result = frontend.process_mono(image, ns(1.0), "cam")
    except ImageError as e:
        assert f"{width}x{height}" in str(e) or "px" in str(e), str(e)
        return
    f = result.features
    assert f.image_size == (height, width)
    assert np.isfinite(f.keypoints).all() and np.isfinite(f.descriptors).all()
    if len(f):  # inside the image, in input pixels (also after a resize)
        assert (f.keypoints >= -0.5).all() and (f.keypoints[:, 0] <= width - 0.5).all()
        assert (f.keypoints[:, 1] <= height - 0.5).all()
        assert np.allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-3)
