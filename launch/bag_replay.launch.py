"""Replay a rosbag2 (sqlite3 or mcap) through superpoint_node: superpoint-bag-play + the node.

    ros2 launch superpoint_ros bag_replay.launch.py bag:=out/demo/cache/sample_480x640_40f_10hz_s0_sqlite3/bag
    ros2 launch superpoint_ros bag_replay.launch.py bag:=my_bag stereo:=false image:=/cam/image_raw rate:=0.5

The player waits until the node subscribes, then publishes with the bag's timing / ``rate``.
Keep DDS on this machine with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (scripts/ros_env.sh).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import ExecutableInPackage


def generate_launch_description():
    share = get_package_share_directory("superpoint_ros")
    stereo = LaunchConfiguration("stereo")
    common = dict(package="superpoint_ros", executable="superpoint_node", name="superpoint_node",
                  namespace=LaunchConfiguration("namespace"), output="screen")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="rosbag2 folder or file to replay"),
        DeclareLaunchArgument("rate", default_value="1.0", description="replay speed factor"),
        DeclareLaunchArgument("stereo", default_value="true", description="stereo pair (true) or one image (false)"),
        DeclareLaunchArgument("image", default_value="/stereo/left/image_rect", description="mono: image topic"),
        DeclareLaunchArgument("left", default_value="/stereo/left/image_rect", description="stereo: left topic"),
        DeclareLaunchArgument("right", default_value="/stereo/right/image_rect", description="stereo: right topic"),
        DeclareLaunchArgument("mono_params_file", default_value=os.path.join(share, "config", "superpoint_mono.yaml")),
        DeclareLaunchArgument("stereo_params_file",
                              default_value=os.path.join(share, "config", "superpoint_stereo.yaml")),
        DeclareLaunchArgument("namespace", default_value="superpoint", description="namespace of the outputs"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml")),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        Node(condition=IfCondition(stereo), parameters=[LaunchConfiguration("stereo_params_file")],
             remappings=[("left/image_rect", LaunchConfiguration("left")),
                         ("right/image_rect", LaunchConfiguration("right"))], **common),
        Node(condition=UnlessCondition(stereo), parameters=[LaunchConfiguration("mono_params_file")],
             remappings=[("image", LaunchConfiguration("image"))], **common),
        ExecuteProcess(
            cmd=[ExecutableInPackage(executable="superpoint-bag-play", package="superpoint_ros"),
                 LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"), "--wait-for-subscribers", "1"],
            output="screen",
        ),
    ])
