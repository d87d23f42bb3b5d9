#!/usr/bin/env bash
# Train a PointPillars model with mmdet3d's own tools/train.py (for users with the mmdet3d 1.x
# environment or the official container; not needed for, and not run by, this project's CPU path).
#
# Usage:
#   scripts/train_mmdet3d.sh <mmdet3d checkout> [config] [work dir] [extra tools/train.py args...]
# Defaults: config configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py,
#           work dir build/mmdet3d_work. GPUS=<n> (default 1) uses tools/dist_train.sh.
# Data: KITTI prepared as in the mmdet3d docs (data/kitti with kitti_infos_*.pkl and the
#   gt database: `python tools/create_data.py kitti --root-path ./data/kitti --out-dir
#   ./data/kitti --extra-tag kitti` inside the checkout).
# Afterwards, convert with mmdeploy (configs/mmdet3d/voxel-detection/
#   voxel-detection_onnxruntime_dynamic.py) or load the checkpoint's state_dict into this
#   project's reference network and export it (it loads with strict=True):
#   .venv/bin/python scripts/export_onnx.py --config kitti_3class \
#       --checkpoint <work dir>/epoch_80.pth --bundle engines/pointpillars_kitti_3class
set -euo pipefail
if [[ $# -lt 1 ]]; then
    sed -n '2,18p' "$0"; exit 2
fi
MMDET3D=$(cd "$1" && pwd)
CONFIG=${2:-configs/pointpillars/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py}
WORK_DIR=$(mkdir -p "${3:-build/mmdet3d_work}" && cd "${3:-build/mmdet3d_work}" && pwd)
shift $(( $# < 3 ? $# : 3 ))
GPUS=${GPUS:-1}
PYTHON=${PYTHON:-python}
cd "$MMDET3D"
"$PYTHON" -c "import mmdet3d, mmcv, mmengine; print('mmdet3d', mmdet3d.__version__, 'mmcv', mmcv.__version__)" \
    || { echo "mmdet3d/mmcv/mmengine not importable by $PYTHON: activate the mmdet3d env or container" >&2; exit 1; }
if [[ "$GPUS" -gt 1 ]]; then
    exec bash tools/dist_train.sh "$CONFIG" "$GPUS" --work-dir "$WORK_DIR" "$@"
fi
exec "$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "$@"
