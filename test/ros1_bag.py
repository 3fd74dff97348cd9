"""Test helper: ROS 1 ``.bag`` files as EuRoC-style datasets ship them (ROS 1 serialisation,
``Header.seq``, CameraInfo with ROS 1 field names ``K``/``D``/``R``/``P``)."""
import numpy as np


def write_ros1_bag(path, frames, stamps_ns, K, image_topic="/cam0/image_raw", info_topic="/cam0/camera_info",
                   frame_id="cam0", receive_delay_ns=1000):
    """mono8 ``frames`` (``(H, W)`` uint8) with header stamps ``stamps_ns``, each with a CameraInfo."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ros1 = get_typestore(Stores.ROS1_NOETIC)
    Header, Time = ros1.types["std_msgs/msg/Header"], ros1.types["builtin_interfaces/msg/Time"]
    Image, CameraInfo = ros1.types["sensor_msgs/msg/Image"], ros1.types["sensor_msgs/msg/CameraInfo"]
    RegionOfInterest = ros1.types["sensor_msgs/msg/RegionOfInterest"]
    K = np.asarray(K, np.float64)
    with Writer(path) as writer:
        image_conn = writer.add_connection(image_topic, "sensor_msgs/msg/Image", typestore=ros1)
        info_conn = writer.add_connection(info_topic, "sensor_msgs/msg/CameraInfo", typestore=ros1)
        for seq, (frame, stamp) in enumerate(zip(frames, stamps_ns)):
            header = Header(seq=seq, stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id=frame_id)
            h, w = frame.shape
            roi = RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = CameraInfo(header=header, height=h, width=w, distortion_model="plumb_bob", D=np.zeros(5),
                              K=K.reshape(-1), R=np.eye(3).reshape(-1),
                              P=np.hstack([K, np.zeros((3, 1))]).reshape(-1), binning_x=0, binning_y=0, roi=roi)
            image = Image(header=header, height=h, width=w, encoding="mono8", is_bigendian=0, step=w,
                          data=np.ascontiguousarray(frame, np.uint8).reshape(-1))
            writer.write(info_conn, stamp + receive_delay_ns, ros1.serialize_ros1(info, "sensor_msgs/msg/CameraInfo"))
            writer.write(image_conn, stamp + receive_delay_ns, ros1.serialize_ros1(image, "sensor_msgs/msg/Image"))
