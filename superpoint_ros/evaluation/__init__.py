"""Offline evaluation: the HPatches-style homography benchmark (``superpoint-eval``), the dataset
builder (``superpoint-make-dataset``), rosbag I/O and replay evaluation (``superpoint-eval-bag``)
and the sample bag with ground truth used by the demo.

Nothing here imports rclpy: bags are read and written with ``rosbags``.
"""
