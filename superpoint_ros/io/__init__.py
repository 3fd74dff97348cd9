"""Data in and out, without rclpy: the node's message codec, rosbag reading/writing and image decoding.

- ``messages``: the node's ``sensor_msgs/PointCloud2`` layouts (features, stereo and temporal
  matches) packed and unpacked with numpy, bit-exact both ways; builds rclpy or ``rosbags`` messages.
- ``bags``: rosbag2 (sqlite3, mcap) and ROS 1 bag reading and rosbag2 writing with ``rosbags``
  (pure Python, imported on first use: ``pip install rosbags rosbags-image``).
- ``image_decoding``: ``sensor_msgs/Image`` and ``CompressedImage`` (rclpy or ``rosbags``) to numpy.

Layering (checked by test/test_layers.py): this package imports only the ROS-free core
(``superpoint_ros/*.py``); ``ros/`` (rclpy glue), ``evaluation/`` and ``training/`` build on it.
"""
