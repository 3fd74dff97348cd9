"""Everything that imports rclpy: the node (``node.py``), bag replay and the demo.

``image_decoding`` and ``messages`` are plain numpy (no rclpy import at module level) so the
rosbag tools can decode and write the node's messages without a ROS installation.
"""
