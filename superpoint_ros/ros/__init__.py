"""Everything that imports rclpy: the node (``node.py``), bag replay and the demo.

rclpy glue only: the message codec, rosbag I/O and image decoding it uses live in
``superpoint_ros.io`` (no rclpy), so the rosbag tools share them without a ROS installation.
Nothing outside this subpackage imports it.
"""
