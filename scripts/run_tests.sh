#!/usr/bin/env bash
# The project's test command (README, `make test`, .ci/run): every pytest test incl. real-roscore ones.
set -eo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
bash scripts/with_ros_env.sh "$REPO/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
