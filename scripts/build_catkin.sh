#!/usr/bin/env bash
# Build the catkin workspace build/catkin_ws (src/admlops_ros -> this repo), idempotently.
# Usage: scripts/build_catkin.sh [extra catkin_make args, e.g. run_tests]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WS="$REPO/build/catkin_ws"
PY="${PYTHON_EXECUTABLE:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=/usr/bin/python3

mkdir -p "$WS/src"
link="$WS/src/admlops_ros"
if [ ! -L "$link" ] || [ "$(readlink "$link")" != "$REPO" ]; then
  rm -rf "$link"
  ln -s "$REPO" "$link"
fi

cd "$WS"
# PATH without pyenv shims: catkin's CMake must find Debian's Python modules (catkin_pkg).
PATH="$(dirname "$PY"):/usr/bin:/bin:$PATH" \
  catkin_make -DPYTHON_EXECUTABLE="$PY" -DCATKIN_ENABLE_TESTING=ON "$@" > "$WS/catkin_make.log" 2>&1 || {
    tail -n 40 "$WS/catkin_make.log" >&2
    echo "[build] catkin_make failed; full log: $WS/catkin_make.log" >&2
    exit 1
  }
echo "[build] catkin workspace ready: $WS"
echo "[build] use it with:  source $WS/devel/setup.bash"
echo "[build]          or:  scripts/with_ros_env.sh <command>   (e.g. rosmsg show admlops_ros/DetectedObjectArray)"
