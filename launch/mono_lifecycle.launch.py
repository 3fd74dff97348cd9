"""superpoint_lifecycle_node on one camera, as a managed node.

    ros2 launch superpoint_ros mono_lifecycle.launch.py image:=/camera/image_raw
    ros2 launch superpoint_ros mono_lifecycle.launch.py image:=/camera/image_raw autostart:=false

autostart:=true (default): launch itself configures the node and activates it once it is inactive.
autostart:=false: the node waits unconfigured for a lifecycle manager (e.g. Nav2's
nav2_lifecycle_manager with node_names: [superpoint/superpoint_node]) or `ros2 lifecycle set`;
docs/node.md shows both. Outputs as in mono.launch.py.
"""
import os

import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState


def generate_launch_description():
    share = get_package_share_directory("superpoint_ros")
    node = LifecycleNode(
        package="superpoint_ros",
        executable="superpoint_lifecycle_node",
        name="superpoint_node",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file")],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"])],
        output="screen",
    )
    autostart = IfCondition(LaunchConfiguration("autostart"))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE),
                          condition=autostart)
    activate_when_inactive = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE))]),
        condition=autostart)
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="input image topic"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "superpoint_mono.yaml"),
                              description="node parameters (docs/node.md)"),
        DeclareLaunchArgument("namespace", default_value="superpoint", description="namespace of the outputs"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate at launch (false: a lifecycle manager does)"),
        DeclareLaunchArgument("fastdds_profile", default_value=os.path.join(share, "config", "fastdds_shm.xml"),
                              description="Fast DDS XML profile (shared memory, 16 MB segment)"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE", LaunchConfiguration("fastdds_profile")),
        activate_when_inactive,  # registered before the configure event is emitted
        node,
        configure,
    ])
