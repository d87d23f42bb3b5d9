#!/usr/bin/env bash
# Idempotent machine set-up: Debian ROS1 packages, the .venv (system site packages) and pip packages.
# Usage: scripts/setup_env.sh [--no-apt]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

APT_PACKAGES="ros-core python3-rospy python3-roslaunch python3-rosmaster python3-rosbag python3-rostest \
 python3-sensor-msgs python3-visualization-msgs python3-geometry-msgs python3-std-msgs \
 python3-diagnostic-msgs catkin python3-catkin-pkg python3-genpy python3-genmsg \
 ros-sensor-msgs ros-visualization-msgs ros-geometry-msgs ros-std-msgs ros-diagnostic-msgs \
 rosbash rospack-tools ros-message-generation ros-message-runtime libstd-msgs-dev \
 libsensor-msgs-dev libgeometry-msgs-dev libvisualization-msgs-dev libdiagnostic-msgs-dev \
 librostest-dev python3-nose python3-numpy python3-venv iproute2 python3-tf2-ros \
 python3-cv-bridge python3-opencv python3-image-geometry python3-std-srvs"

if [ "${1:-}" != "--no-apt" ]; then
  missing=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
    echo "[setup] apt-get install:$missing"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "[setup] apt packages present"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv (from /usr/bin/python3, with system site packages for rospy)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt requirements-train.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] pip install (requirements.txt, requirements-train.txt)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -r requirements.txt
  .venv/bin/pip install -q -r requirements-train.txt
  echo "$want" > "$stamp"
else
  echo "[setup] .venv up to date"
fi
