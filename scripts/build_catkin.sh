#!/usr/bin/env bash
# Build the catkin workspace build/catkin_ws (src/admlops_ros -> this repo), idempotently.
# Usage: scripts/build_catkin.sh [extra catkin_make args, e.g. run_tests]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WS="$REPO/build/catkin_ws"
PY="${PYTHON_EXECUTABLE:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=/usr/bin/python3

# src/admlops_ros is a real directory of symlinks to the repo's top-level entries (not a symlink
# to the repo itself: that would loop through build/ when roslaunch/rospack search the package).
PKG="$WS/src/admlops_ros"
[ -L "$PKG" ] && rm -f "$PKG"
mkdir -p "$PKG"
for entry in "$REPO"/*; do
  name=$(basename "$entry")
  case "$name" in build|catkin_ws|out) continue ;; esac
  [ "$(readlink "$PKG/$name" 2>/dev/null)" = "$entry" ] || ln -sfn "$entry" "$PKG/$name"
done
for link in "$PKG"/*; do  # entries removed from the repo
  [ -L "$link" ] && [ ! -e "$link" ] && rm -f "$link"
done

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
