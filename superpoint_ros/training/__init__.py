"""Offline training tools: synthetic shapes, MagicPoint, homographic adaptation, SuperPoint, export.

Each tool is a console entry point with a YAML config (defaults in ``config/train/``). Nothing here
imports rclpy; the trained models are ordinary ``superpoint_ros`` checkpoints.
"""
