"""sensor_msgs/Image decoding: encodings, row padding, byte order, bad messages; rclpy and rosbags."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from superpoint_ros.image import ImageError, to_grayscale_float
from superpoint_ros.io.image_decoding import ImageDecodingError, decode_compressed_image, decode_image

pytestmark = pytest.mark.ros


def make_msg(array: np.ndarray, encoding: str, pad: int = 0, big_endian: bool = False) -> Image:
    """An rclpy Image with ``pad`` garbage bytes at the end of every row."""
    array = np.ascontiguousarray(array)
    if big_endian:
        array = array.astype(array.dtype.newbyteorder(">"))
    rows = array.reshape(array.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=int(big_endian),
                step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


@pytest.fixture(scope="module")
def bgr(astronaut_bgr):
    return np.ascontiguousarray(astronaut_bgr[:64, :80])


@pytest.mark.parametrize("pad", [0, 3, 64])
def test_mono8_with_row_padding_is_exact(camera_image, pad):
    img = camera_image[:50, :70]
    out = decode_image(make_msg(img, "mono8", pad))
    assert out.dtype == np.uint8 and np.array_equal(out, img)


@pytest.mark.parametrize("encoding, convert", [
    ("bgr8", lambda b: b), ("rgb8", lambda b: b[..., ::-1]),
    ("bgra8", lambda b: np.dstack([b, np.full(b.shape[:2], 7, np.uint8)])),
    ("rgba8", lambda b: np.dstack([b[..., ::-1], np.full(b.shape[:2], 7, np.uint8)])),
])
def test_colour_encodings_come_out_bgr(bgr, encoding, convert):
    out = decode_image(make_msg(convert(bgr), encoding, pad=5))
    assert out.shape == bgr.shape and np.array_equal(out, bgr)


@pytest.mark.parametrize("big_endian", [False, True])
def test_16_bit_in_either_byte_order(camera_image, big_endian):
    img = camera_image[:40, :40].astype(np.uint16) * 257 + 1
    out = decode_image(make_msg(img, "mono16", pad=2, big_endian=big_endian))
    assert out.dtype == np.uint16 and out.dtype.isnative and np.array_equal(out, img)


def test_float_image_big_endian_and_nan_is_refused_by_the_extractor():
    img = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    out = decode_image(make_msg(img, "32FC1", big_endian=True))
    assert np.array_equal(out, img)
    img[3, 4] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        to_grayscale_float(decode_image(make_msg(img, "32FC1")))


def test_bayer_and_yuv422_become_gray(bgr):
    b, g, r = (bgr[..., i] for i in range(3))
    mosaic = np.empty(bgr.shape[:2], np.uint8)  # RGGB: R at (even, even), B at (odd, odd)
    mosaic[0::2, 0::2], mosaic[0::2, 1::2], mosaic[1::2, 0::2], mosaic[1::2, 1::2] = \
        r[0::2, 0::2], g[0::2, 1::2], g[1::2, 0::2], b[1::2, 1::2]
    gray = decode_image(make_msg(mosaic, "bayer_rggb8"))
    reference = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    assert gray.shape == reference.shape
    assert np.median(np.abs(gray.astype(int) - reference)[2:-2, 2:-2]) <= 12
    y = reference
    yuyv = np.stack([y, np.full_like(y, 128)], axis=-1).reshape(y.shape[0], -1)  # Y U Y V ...
    assert np.array_equal(decode_image(_yuv_msg(yuyv, y.shape)), y)


def _yuv_msg(interleaved, shape):
    msg = Image(height=shape[0], width=shape[1], encoding="yuyv", is_bigendian=0, step=shape[1] * 2)
    msg.data = interleaved.tobytes()
    return msg


@pytest.mark.parametrize("change, message", [
    (dict(encoding="32SC4"), "unsupported image encoding '32SC4'"),
    (dict(height=8, width=8, step=8), "too small"),
    (dict(step=10), "shorter than a row"),
    (dict(data=b""), "has 0 bytes, expected step*height"),
    (dict(height=41), "expected step*height"),
])
def test_bad_messages_name_the_problem(camera_image, change, message):
    msg = make_msg(camera_image[:40, :40], "mono8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageDecodingError) as info:
        decode_image(msg)
    assert message in str(info.value)
    assert isinstance(info.value, ImageError)  # the node's "skip this frame" path


def test_rosbags_messages_decode_too(camera_image):
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    RosbagsImage, Header, Time = (store.types[n] for n in
                                  ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    img = camera_image[:30, :50]
    padded = np.concatenate([img, np.zeros((30, 14), np.uint8)], axis=1)
    msg = RosbagsImage(header=Header(stamp=Time(sec=1, nanosec=2), frame_id="cam"), height=30, width=50,
                       encoding="mono8", is_bigendian=0, step=64, data=padded.reshape(-1))
    assert np.array_equal(decode_image(msg), img)


def test_compressed_png_jpeg_and_garbage(camera_image, bgr):
    ok, png = cv2.imencode(".png", camera_image[:60, :60])
    msg = CompressedImage(format="mono8; png compressed ")
    msg.data = png.tobytes()
    assert np.array_equal(decode_compressed_image(msg), camera_image[:60, :60])
    ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
    msg.data = jpg.tobytes()
    out = decode_compressed_image(msg)
    assert out.shape == bgr.shape and np.abs(out.astype(int) - bgr).mean() < 5
    msg.data = b"not an image at all"
    with pytest.raises(ImageDecodingError, match="cannot decode"):
        decode_compressed_image(msg)
    msg.data = b""
    with pytest.raises(ImageDecodingError, match="no data"):
        decode_compressed_image(msg)
