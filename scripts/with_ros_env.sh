#!/usr/bin/env bash
# Run a command with the catkin devel space sourced (messages, ROS_PACKAGE_PATH) and the venv first.
set -eo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DEVEL="$REPO/build/catkin_ws/devel/setup.bash"
if [ ! -f "$DEVEL" ]; then
  echo "error: $DEVEL not found: run 'make build' first" >&2
  exit 2
fi
set +u
# catkin's setup.bash reads the positional parameters (--extend, ...): a bare `source` would hand
# it this script's arguments (`--help` breaks it), so source it with none and restore them.
args=("$@")
set --
# shellcheck disable=SC1090
source "$DEVEL"
set -- "${args[@]}"
export PATH="$REPO/.venv/bin:$PATH"
export PYTHONPATH="$REPO:${PYTHONPATH:-}"
export ROS_HOME="${ROS_HOME:-$REPO/build/ros_home}"
mkdir -p "$ROS_HOME"
exec "$@"
