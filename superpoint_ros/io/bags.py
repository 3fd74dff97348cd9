"""ROS 2 bag reading and writing with ``rosbags`` (pure Python: no ROS install, no rclpy).

Both rosbag2 storage formats are supported: ``sqlite3`` (``.db3``) and ``mcap``. Reading also
accepts ROS 1 bags (``AnyReader``). Messages are the ``rosbags`` dataclasses of the ROS 2 Kilted
type store; raw CDR bytes (e.g. from ``rclpy.serialization.serialize_message``) can be written
as they are.

>>> with BagWriter("out/my_bag", storage="mcap") as bag:
...     bag.write("/cam/image_raw", image_message(gray, stamp_ns, "cam"), stamp_ns)
>>> for item in read_messages("out/my_bag", ["/cam/image_raw"]):
...     image = message_image(item.message)           # numpy, as encoded (mono8 -> (H, W) uint8)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np

STORAGE_FORMATS = ("sqlite3", "mcap")
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class BagError(ValueError):
    """A bag that cannot be used as asked (missing, wrong topic, wrong type), with the reason."""


@lru_cache(maxsize=1)
def typestore():
    """The ROS 2 Kilted message definitions (what the node's rclpy messages are)."""
    from rosbags.typesys import Stores, get_typestore  # rosbags (optional, pure Python): imported on use

    return get_typestore(Stores.ROS2_KILTED)


def msg_class(msgtype: str):
    try:
        return typestore().types[msgtype]
    except KeyError:
        raise BagError(f"unknown message type {msgtype!r}") from None


def header(stamp_ns: int, frame_id: str):
    """A std_msgs/Header for a stamp in integer nanoseconds."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0:
        raise BagError(f"negative stamp {stamp_ns} ns")
    Time = msg_class("builtin_interfaces/msg/Time")
    return msg_class("std_msgs/msg/Header")(stamp=Time(sec=stamp_ns // 1_000_000_000,
                                                       nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)


def stamp_ns(message) -> int:
    """Header stamp of a message as integer nanoseconds."""
    stamp = message.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


_ENCODINGS = {(np.dtype(np.uint8), 1): "mono8", (np.dtype(np.uint8), 3): "bgr8", (np.dtype(np.uint8), 4): "bgra8",
              (np.dtype(np.uint16), 1): "mono16", (np.dtype(np.float32), 1): "32FC1"}


def image_message(image: np.ndarray, stamp_ns_: int, frame_id: str, encoding: Optional[str] = None):
    """numpy ``(H, W)`` / ``(H, W, C)`` -> sensor_msgs/Image (little-endian, no row padding).

    The encoding follows dtype and channels (uint8 gray ``mono8``, uint8 3-channel ``bgr8``,
    uint16 ``mono16``, float32 ``32FC1``) unless ``encoding`` says otherwise (e.g. ``rgb8``).
    """
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    if encoding is None:
        encoding = _ENCODINGS.get((image.dtype, channels))
        if encoding is None:
            raise BagError(f"no default encoding for a {image.dtype} image with {channels} channels")
    height, width = image.shape[:2]
    data = image.astype(image.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1)
    return msg_class("sensor_msgs/msg/Image")(header=header(stamp_ns_, frame_id), height=height, width=width,
                                             encoding=encoding, is_bigendian=0,
                                             step=int(width * channels * image.dtype.itemsize), data=data)


def camera_info_message(k: np.ndarray, image_size: Tuple[int, int], stamp_ns_: int, frame_id: str,
                        p: Optional[np.ndarray] = None, d: Optional[np.ndarray] = None):
    """sensor_msgs/CameraInfo of a (rectified) pinhole camera. ``k``: 3x3 intrinsics; ``p``: 3x4
    projection (default ``[K | 0]``; for the right camera of a rectified pair ``P[0, 3] = -fx *
    baseline``); ``image_size``: ``(height, width)``; ``d``: plumb_bob coefficients (default zero)."""
    k = np.asarray(k, np.float64).reshape(3, 3)
    p = np.hstack([k, np.zeros((3, 1))]) if p is None else np.asarray(p, np.float64).reshape(3, 4)
    d = np.zeros(5) if d is None else np.asarray(d, np.float64).reshape(-1)
    roi = msg_class("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg_class(CAMERA_INFO_TYPE)(header=header(stamp_ns_, frame_id), height=int(image_size[0]),
                                       width=int(image_size[1]), distortion_model="plumb_bob", d=d,
                                       k=k.reshape(-1), r=np.eye(3).reshape(-1), p=p.reshape(-1),
                                       binning_x=0, binning_y=0, roi=roi)


def message_image(message) -> np.ndarray:
    """sensor_msgs/Image or CompressedImage -> numpy as encoded (row padding, endianness and
    Bayer/YUV handled by ``rosbags-image``)."""
    from rosbags.image import message_to_cvimage

    return message_to_cvimage(message)


class BagWriter:
    """Write a rosbag2 (``storage`` ``sqlite3`` or ``mcap``). Topics are added on first write.

    The output folder must not exist yet (rosbag2 never overwrites); ``overwrite=True`` removes an
    existing one first.
    """

    def __init__(self, path: Union[str, Path], storage: str = "sqlite3", overwrite: bool = False):
        from rosbags.rosbag2 import StoragePlugin, Writer  # rosbags: imported on use, as everywhere here

        if storage not in STORAGE_FORMATS:
            raise BagError(f"storage must be one of {STORAGE_FORMATS}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f"output bag {self.path} already exists")
            shutil.rmtree(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=9, storage_plugin=plugin)
        self._connections: Dict[str, Any] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc) -> None:
        self._writer.close()

    def connection(self, topic: str, msgtype: str):
        conn = self._connections.get(topic)
        if conn is None:
            conn = self._writer.add_connection(topic, msgtype, typestore=typestore())
            self._connections[topic] = conn
        elif conn.msgtype != msgtype:
            raise BagError(f"topic {topic} already has type {conn.msgtype}, cannot write {msgtype}")
        return conn

    def write(self, topic: str, message, log_time_ns: int) -> None:
        """Serialise a rosbags message to CDR and write it with receive time ``log_time_ns``."""
        conn = self.connection(topic, message.__msgtype__)
        self._writer.write(conn, int(log_time_ns), typestore().serialize_cdr(message, message.__msgtype__))

    def write_raw(self, topic: str, msgtype: str, cdr: bytes, log_time_ns: int) -> None:
        """Write already-serialised CDR bytes (e.g. ``rclpy.serialization.serialize_message``)."""
        self._writer.write(self.connection(topic, msgtype), int(log_time_ns), bytes(cdr))


@dataclass
class BagMessage:
    """One message: ``topic``, ``msgtype`` (``pkg/msg/Name``), ``log_time_ns`` (bag receive time),
    ``raw`` CDR bytes, and ``message`` (deserialised, or None when not requested)."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes
    message: Any = None


def _check_path(path: Union[str, Path]) -> Path:
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    return path


def topics(path: Union[str, Path]) -> Dict[str, Tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` of a bag."""
    from rosbags.highlevel import AnyReader

    with AnyReader([_check_path(path)], default_typestore=typestore()) as reader:
        return {name: (info.msgtype, info.msgcount) for name, info in reader.topics.items()}


def read_messages(path: Union[str, Path], topic_names: Optional[Sequence[str]] = None,
                  deserialize: bool = True) -> Iterator[BagMessage]:
    """Messages of ``topic_names`` (all topics when None) in bag (log-time) order, from a rosbag2
    (sqlite3, mcap) or a ROS 1 ``.bag`` (messages converted to ROS 2: ``raw`` is always CDR).

    Raises BagError naming the available topics when a requested topic is not in the bag.
    """
    from rosbags.highlevel import AnyReader

    with AnyReader([_check_path(path)], default_typestore=typestore()) as reader:
        available = {c.topic for c in reader.connections}
        if topic_names is not None:
            missing = sorted(set(topic_names) - available)
            if missing:
                raise BagError(f"{path}: topic(s) {', '.join(missing)} not in the bag "
                               f"(available: {', '.join(sorted(available)) or 'none'})")
            connections = [c for c in reader.connections if c.topic in set(topic_names)]
        else:
            connections = list(reader.connections)
        ros1 = not reader.is2
        cache: dict = {}
        for conn, log_time, raw in reader.messages(connections=connections):
            if ros1:  # ROS 1 bag: the ROS 2 message (no Header.seq, CameraInfo d/k/r/p) and its CDR
                message = _ros1_to_ros2(reader, conn.msgtype, raw, cache)
                raw = typestore().serialize_cdr(message, conn.msgtype)
            else:
                message = reader.deserialize(raw, conn.msgtype) if deserialize else None
            yield BagMessage(conn.topic, conn.msgtype, int(log_time), bytes(raw), message if deserialize else None)


def _ros1_to_ros2(reader, msgtype: str, raw: bytes, cache: dict):
    """A ROS 1 message (serialised, as in a ``.bag``) -> the same message as a ROS 2 Kilted object,
    fields matched by name and type (rosbags' own ROS 1 -> 2 migration)."""
    from rosbags.convert.converter import migrate_message

    if msgtype not in typestore().types:
        raise BagError(f"message type {msgtype} of a ROS 1 bag has no ROS 2 equivalent")
    source = reader.deserialize(raw, msgtype)
    return migrate_message(reader.typestore, typestore(), msgtype, msgtype, cache, source)


def check_image_topics(path: Union[str, Path], image_topics: Iterable[str]) -> Dict[str, Tuple[str, int]]:
    """Raise BagError unless every topic exists and carries Image or CompressedImage."""
    found = topics(path)
    for topic in image_topics:
        if topic not in found:
            raise BagError(f"{path}: image topic {topic} not in the bag (available: "
                           f"{', '.join(f'{t} [{m}]' for t, (m, _) in sorted(found.items())) or 'none'})")
        if found[topic][0] not in IMAGE_TYPES:
            raise BagError(f"{path}: topic {topic} has type {found[topic][0]}, expected an image type")
    return found
