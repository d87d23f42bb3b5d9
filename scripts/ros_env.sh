# Source me (bash or zsh): sets ROS_MASTER_URI / ROS_IP / ROS_HOSTNAME for the admlops bridge.
#
#   source scripts/ros_env.sh [MASTER_URI] [--no-check] [--timeout S] [--ros-ip ADDR]
#
# Master: MASTER_URI, else $ADMLOPS_ROS_MASTER_URI, else http://172.28.0.1:11311 (the host, at
# the gateway of the `admlops` Docker network). ROS_IP (and ROS_HOSTNAME, same value) is the source
# address of the kernel route to the master (`ip route get`), or $ADMLOPS_ROS_IP. Then checks
# that a master answers and says what is wrong (no route / refused / timeout) and how to fix it.
# The logic lives in admlops_ros/ros/netenv.py; this wrapper never changes shell options and
# never exits your shell. Returns 0 ok, 3 master not reachable (variables still set), 2 error.
# From inside a script or function: bash hands that script's "$@" to a `source` without
# arguments, so pass them explicitly (`source scripts/ros_env.sh --no-check`) or `set --` first.

__admlops_ros_env() {
  local here py out rc
  if [ -n "${ZSH_VERSION:-}" ]; then
    eval 'here=${${(%):-%x}:A:h}'
  else
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  fi
  py="${ADMLOPS_PYTHON:-}"
  if [ -z "$py" ]; then
    if [ -x "$here/../.venv/bin/python" ]; then py="$here/../.venv/bin/python"; else py=python3; fi
  fi
  out=$(PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}" "$py" -m admlops_ros.ros.netenv "$@")
  rc=$?
  if [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]; then
    eval "$out"
  fi
  if [ -n "${BASH_VERSION:-}" ] && [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "[ros_env] run with 'source $0': executed, it cannot change your shell" >&2
  fi
  unset -f __admlops_ros_env
  return "$rc"
}
__admlops_ros_env "$@"
