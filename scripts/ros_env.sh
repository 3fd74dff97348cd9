# Source me: keeps DDS on this machine and gives rclpy a writable log dir.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-${TMPDIR:-/tmp}/superpoint_ros_logs}"
