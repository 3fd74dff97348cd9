"""superpoint_ros: a SuperPoint visual front-end for SLAM (ROS-free core).

Nothing in this package imports rclpy except the ``superpoint_ros.ros`` subpackage.
"""
from .extractor import FeatureExtractor, Features, default_conf
from .image import ImageError
from .matching import Matches, match_descriptors
from .model import SMALL, SuperPointConfig, SuperPointNet
from .weights import WeightsError, load_model, load_weights, save_checkpoint

__version__ = "0.1.0"
__all__ = [
    "FeatureExtractor", "Features", "default_conf", "ImageError", "Matches", "match_descriptors",
    "SMALL", "SuperPointConfig", "SuperPointNet", "WeightsError", "load_model", "load_weights",
    "save_checkpoint",
]
