"""superpoint_node on a rectified stereo pair.

    ros2 launch superpoint_ros stereo.launch.py left:=/stereo/left/image_rect right:=/stereo/right/image_rect

Outputs (in the node's namespace): features, features_right, stereo_matches, temporal_matches,
debug_image, /diagnostics. Images must be rectified (matches are constrained to the same row).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("superpoint_ros")
    return LaunchDescription([
        DeclareLaunchArgument("left", default_value="/stereo/left/image_rect", description="left rectified image"),
        DeclareLaunchArgument("right", default_value="/stereo/right/image_rect", description="right rectified image"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "superpoint_stereo.yaml"),
                              description="node parameters (docs/node.md)"),
        DeclareLaunchArgument("namespace", default_value="superpoint", description="namespace of the outputs"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile (shared memory, 16 MB segment)"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        Node(
            package="superpoint_ros",
            executable="superpoint_node",
            name="superpoint_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file")],
            remappings=[("left/image_rect", LaunchConfiguration("left")),
                        ("right/image_rect", LaunchConfiguration("right")),
                        ("left/image_rect/compressed", [LaunchConfiguration("left"), "/compressed"]),
                        ("right/image_rect/compressed", [LaunchConfiguration("right"), "/compressed"])],
            output="screen",
        ),
    ])
