"""superpoint_node on one camera.

    ros2 launch superpoint_ros mono.launch.py image:=/camera/image_raw
    ros2 launch superpoint_ros mono.launch.py image:=/camera/image_raw params_file:=/path/my.yaml

Outputs (in the node's namespace): features, temporal_matches, debug_image, /diagnostics.
The Fast DDS shared-memory profile is set for the node; export FASTDDS_DEFAULT_PROFILES_FILE in
the camera driver's shell too (docs/node.md).
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
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="input image topic"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "superpoint_mono.yaml"),
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
            remappings=[("image", LaunchConfiguration("image")),
                        ("image/compressed", [LaunchConfiguration("image"), "/compressed"])],
            output="screen",
        ),
    ])
