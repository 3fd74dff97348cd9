"""Offline evaluation: the HPatches-style homography benchmark (``superpoint-eval``), the dataset
builder (``superpoint-make-dataset``), replay evaluation of rosbags (``superpoint-eval-bag``)
and the sample bag with ground truth used by the demo.

Nothing here imports rclpy or ``superpoint_ros.ros``: bags are read and written with
``superpoint_ros.io.bags`` (``rosbags``).
"""
