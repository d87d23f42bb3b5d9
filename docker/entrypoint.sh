#!/usr/bin/env bash
# Container entrypoint: ROS Noetic + the admlops catkin workspace, ROS_MASTER_URI/ROS_IP from the
# route to the master (scripts/ros_env.sh), then the command. A master that is not up yet only
# warns: roslaunch/rospy wait for it.
set -eo pipefail
set +u
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO:-noetic}/setup.bash"
# shellcheck disable=SC1091
[ -f "${ADMLOPS_WS:-/opt/admlops_ws}/devel/setup.bash" ] && source "${ADMLOPS_WS:-/opt/admlops_ws}/devel/setup.bash"
export ROS_HOME="${ROS_HOME:-/tmp/ros_home}"
mkdir -p "$ROS_HOME"
if [ "${ADMLOPS_SKIP_ROS_ENV:-0}" != "1" ]; then
  set +e
  ADMLOPS_PYTHON=/usr/bin/python3 source "${ADMLOPS_HOME:-/opt/admlops}/scripts/ros_env.sh" \
    --timeout "${ADMLOPS_MASTER_TIMEOUT:-1.5}"
  rc=$?
  set -e
  if [ "$rc" -eq 2 ]; then
    echo "[entrypoint] ROS environment unusable (see above); continuing with ROS_MASTER_URI=${ROS_MASTER_URI:-unset}" >&2
  fi
fi
exec "$@"
