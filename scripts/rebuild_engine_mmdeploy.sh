#!/usr/bin/env bash
# Inside the admlops deploy container: mmdeploy tools/deploy.py (voxel-detection deploy configs)
# from an mmdet3d 1.x config + checkpoint, then pack the result into an engine bundle
# (spec.yaml from the model config, end2end.onnx, OpenVINO IR, TensorRT plan in the cache).
#
#   scripts/rebuild_engine_mmdeploy.sh --config CFG.py --checkpoint CKPT.pth --name NAME \
#       [--backends onnxruntime,tensorrt,openvino] [--profile kitti-32x4|nus-20x5|nus-64x4] \
#       [--pcd SAMPLE.bin] [--device cuda:0] [--out /opt/admlops/engines] [--work-dir DIR] \
#       [--fp16] [--intensity-scale S]
#
# Example (KITTI 3-class PointPillars, checkpoint from the mmdet3d model zoo in checkpoints/):
#   scripts/rebuild_engine_mmdeploy.sh \
#     --config /opt/admlops/checkpoints/pointpillars_hv_secfpn_8xb6-160e_kitti-3d-3class.py \
#     --checkpoint /opt/admlops/checkpoints/hv_pointpillars_secfpn_6x8_160e_kitti-3d-3class.pth \
#     --name pointpillars_kitti_3class
#
# The TensorRT profile (min/opt/max voxels) is read from the mmdeploy deploy config and written
# into spec.yaml, so `admlops build-engine` and the node's plan cache rebuild with the same one.
# TensorRT needs an NVIDIA GPU: without one use --backends onnxruntime,openvino.
set -euo pipefail

MMDEPLOY_DIR="${MMDEPLOY_DIR:-/opt/mmdeploy}"
ADMLOPS_HOME="${ADMLOPS_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
PY="${PYTHON:-python3}"
CONFIG="" CHECKPOINT="" NAME="" PCD="" FP16=0
BACKENDS="onnxruntime,tensorrt,openvino"
PROFILE="kitti-32x4"
DEVICE="cuda:0"
OUT="${ADMLOPS_HOME}/engines"
WORK=""
ISCALE="1.0"

die() { echo "[rebuild] ERROR: $*" >&2; exit 2; }
usage() { sed -n '2,17p' "$0"; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --config) CONFIG=$2; shift ;;
    --checkpoint) CHECKPOINT=$2; shift ;;
    --name) NAME=$2; shift ;;
    --backends) BACKENDS=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    --pcd) PCD=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --work-dir) WORK=$2; shift ;;
    --fp16) FP16=1 ;;
    --intensity-scale) ISCALE=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "[rebuild] unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
[ -n "$CONFIG" ] && [ -f "$CONFIG" ] || die "--config: mmdet3d model config (.py) not found: '${CONFIG}'"
[ -n "$CHECKPOINT" ] && [ -f "$CHECKPOINT" ] || die "--checkpoint: .pth not found: '${CHECKPOINT}'"
[ -n "$NAME" ] || NAME=$(basename "$CONFIG" .py)
[ -f "$MMDEPLOY_DIR/tools/deploy.py" ] || die "mmdeploy not at MMDEPLOY_DIR=$MMDEPLOY_DIR (run inside the admlops deploy image, docker/Dockerfile)"
[ -n "$WORK" ] || WORK=$(mktemp -d "/tmp/mmdeploy_${NAME}.XXXXXX")
mkdir -p "$WORK" "$OUT"
CFG_DIR="$MMDEPLOY_DIR/configs/mmdet3d/voxel-detection"

deploy_cfg() {  # backend -> mmdeploy deploy config
  case "$1" in
    onnxruntime) echo "$CFG_DIR/voxel-detection_onnxruntime_dynamic.py" ;;
    tensorrt) echo "$CFG_DIR/voxel-detection_tensorrt_dynamic-${PROFILE}.py" ;;
    openvino) echo "$CFG_DIR/voxel-detection_openvino_dynamic-${PROFILE}.py" ;;
    *) die "unknown backend '$1' (onnxruntime, tensorrt, openvino)" ;;
  esac
}

export PYTHONPATH="$ADMLOPS_HOME${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "$PCD" ]; then  # mmdeploy traces and checks on one cloud: random points in the range
  PCD="$WORK/sample.bin"
  "$PY" - "$CONFIG" "$PCD" <<'EOF'
import sys
import numpy as np
from admlops_ros.bundle.mmdet3d_config import load_config
cfg = load_config(sys.argv[1])
r = np.asarray(cfg["point_cloud_range"], np.float32)
rng = np.random.default_rng(0)
n = 20000
pts = np.zeros((n, 4), np.float32)
pts[:, :3] = r[:3] + (r[3:] - r[:3]) * rng.random((n, 3), dtype=np.float32)
pts[:, 3] = rng.random(n, dtype=np.float32)
pts.tofile(sys.argv[2])
EOF
  echo "[rebuild] sample cloud: $PCD (random points in the model's range)"
fi

IFS=',' read -r -a backend_list <<<"$BACKENDS"
for backend in "${backend_list[@]}"; do
  cfg=$(deploy_cfg "$backend")
  [ -f "$cfg" ] || die "deploy config $cfg not in mmdeploy $MMDEPLOY_DIR (profile '$PROFILE'?)"
  echo "[rebuild] $backend: $PY $MMDEPLOY_DIR/tools/deploy.py $cfg $CONFIG $CHECKPOINT $PCD --work-dir $WORK/$backend --device $DEVICE"
  (cd "$MMDEPLOY_DIR" && "$PY" tools/deploy.py "$cfg" "$CONFIG" "$CHECKPOINT" "$PCD" \
      --work-dir "$WORK/$backend" --device "$DEVICE" --log-level INFO)
done

# Pack: spec from the model config (+ the TensorRT profile of the deploy config), ONNX, IR, plan.
"$PY" - "$CONFIG" "$NAME" "$OUT/$NAME" "$WORK" "$(deploy_cfg tensorrt)" "$ISCALE" "$BACKENDS" <<'EOF'
import sys
from pathlib import Path
from admlops_ros.bundle.from_mmdet3d import spec_from_mmdet3d_config
from admlops_ros.bundle.mmdet3d_config import load_config
from admlops_ros.bundle.files import load_bundle, write_bundle
from admlops_ros.backends import tensorrt_cache

config, name, out, work, trt_cfg, iscale, backends = sys.argv[1:8]
work = Path(work)
backends = backends.split(",")
shapes = load_config(trt_cfg)["backend_config"]["model_inputs"][0]["input_shapes"]["voxels"]
profile = [int(shapes[k][0]) for k in ("min_shape", "opt_shape", "max_shape")]
spec = spec_from_mmdet3d_config(config, name=name, intensity_scale=float(iscale),
                                tensorrt_profile=profile)
# The bundle's ONNX is the one the TensorRT engine was built from when there is one.
onnx_dir = next(work / b for b in ("tensorrt", "onnxruntime", "openvino")
                if b in backends and (work / b / "end2end.onnx").is_file())
xml = work / "openvino" / "end2end.xml"
bundle = write_bundle(out, spec, onnx_dir / "end2end.onnx",
                      openvino_xml=xml if xml.is_file() else None)
engine = work / "tensorrt" / "end2end.engine"
if "tensorrt" in backends and engine.is_file():
    key = tensorrt_cache.machine_key(tensorrt_cache.sha256_file(bundle.root / "end2end.onnx"),
                                   tuple(profile), "fp32", bundle_root=bundle.root)
    plan = tensorrt_cache.import_plan(bundle.root / tensorrt_cache.PLAN_DIR, key, engine,
                                    source="mmdeploy tools/deploy.py")
    print("[rebuild] TensorRT plan:", plan)
print("[rebuild] bundle:", load_bundle(out).root, "files:", ", ".join(bundle.files))
EOF

if [ "$FP16" = "1" ]; then
  "$PY" -m admlops_ros build-engine "$OUT/$NAME" --target tensorrt --fp16
fi
echo "[rebuild] done: $OUT/$NAME (work dir $WORK)"
