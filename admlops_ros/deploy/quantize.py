"""INT8 post-training quantization of voxel engines: NNCF for OpenVINO IR, QDQ for ONNX Runtime.

Both quantize from calibration feeds, the engine inputs (``voxels``, ``num_points``, ``coors``)
of real clouds voxelized by the runtime's own :class:`LidarDetector` preprocessing, so
calibration sees exactly what inference sees. Layers whose node names contain one of
``float_layers`` stay fp32. Node names carry mmdet3d's module paths in both mmdeploy's and this
project's exports (``/voxel_encoder/...``, ``/bbox_head/conv_reg/...``; ``pts_`` prefixes in
the nuScenes models), so the patterns work on user engines too.

Why the pillar front always stays fp32: its input rows mix absolute coordinates (0..70 m) with
centimetre offsets to the pillar centre in one tensor, so a per-tensor int8 scale erases the
offsets (plain PTQ of everything gives 3D mAP near 0 on the shipped model).
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from admlops_ros.backends.base import BackendError
from admlops_ros.bundle.files import OPENVINO_XML, EngineBundle, write_bundle
from admlops_ros.bundle.spec import ModelSpec, QuantizationSpec
from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.engine import INPUT_NAMES, VOXEL_AXES

LOG = logging.getLogger(__name__)

Feed = Dict[str, np.ndarray]

#: Layer groups by mmdet3d module name; ``pts_*`` (MVX models) contain the same substrings.
PILLAR_FRONT = ("voxel_encoder", "middle_encoder")
HEAD = ("bbox_head",)
#: ONNX opset that per-channel QDQ needs (DequantizeLinear's axis attribute).
QDQ_MIN_OPSET = 13


class QuantizationError(AdmlopsError, RuntimeError):
    """Quantization could not run (missing tool, bad calibration data, unconvertible model)."""


def _nncf():
    try:
        import nncf
    except ImportError as exc:
        raise QuantizationError("INT8 for OpenVINO needs NNCF: pip install nncf "
                                "(it is in requirements.txt)") from exc
    nncf.set_log_level(logging.ERROR)
    return nncf


def check_feeds(feeds: Sequence[Feed]) -> None:
    """Raise QuantizationError unless every feed holds the three engine inputs, V >= 1."""
    if not feeds:
        raise QuantizationError("no calibration clouds: give a bag with clouds in the model's "
                                "range (--calib-bag) or more --calib-frames")
    for i, feed in enumerate(feeds):
        missing = [n for n in INPUT_NAMES if n not in feed]
        if missing or len(feed["num_points"]) == 0:
            raise QuantizationError(f"calibration feed {i} lacks {missing or 'voxels (V = 0)'}; "
                                    f"feeds hold {list(INPUT_NAMES)} with V >= 1")


def rewrite_strided_deconvolutions(model) -> int:
    """Replace each ConvolutionBackpropData with kernel == stride (>= 2), no padding, no groups
    by a 1x1 Convolution to C_out * s * s channels and DepthToSpace(depth_first, s).

    Exact (each output pixel has one contribution, so the sums are the same), and the CPU
    plugin runs the rewritten form in int8, while it runs an int8 deconvolution of stride 4 in
    fp32 (the SECOND FPN's upsampling). Returns the number of layers rewritten.
    """
    from openvino import opset13 as ops
    count = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ConvolutionBackpropData" or op.get_input_size() != 2:
            continue
        weights = op.input_value(1).get_node()
        if weights.get_type_name() != "Constant":
            continue
        attrs = op.get_attributes()
        w = weights.get_data()  # [C_in, C_out, kh, kw]
        stride = list(attrs["strides"])
        if w.ndim != 4 or list(w.shape[2:]) != stride or stride[0] != stride[1] or \
                stride[0] < 2 or any(attrs["pads_begin"]) or any(attrs["pads_end"]) or \
                any(attrs.get("output_padding", [])) or any(d != 1 for d in attrs["dilations"]):
            continue
        s, (c_in, c_out) = stride[0], w.shape[:2]
        # depth_first: output channel o at (i, j) of the block reads input channel o*s*s + i*s + j
        w1x1 = np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(c_out * s * s, c_in, 1, 1))
        conv = ops.convolution(op.input_value(0), ops.constant(w1x1), [1, 1], [0, 0], [0, 0],
                               [1, 1])
        d2s = ops.depth_to_space(conv, "depth_first", s)
        d2s.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(d2s.output(0))
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def read_openvino_model(bundle: EngineBundle):
    """The bundle's float model for OpenVINO (its IR, else its ONNX), voxel axis dynamic."""
    import openvino as ov
    from admlops_ros.backends.openvino_backend import make_axes_dynamic
    source = bundle.openvino_xml or bundle.onnx_path
    if source is None:
        raise QuantizationError(f"{bundle.root}: no OpenVINO IR or ONNX file to quantize")
    model = ov.Core().read_model(str(source))
    make_axes_dynamic(ov, model, VOXEL_AXES)
    return model


def quantize_openvino(bundle: EngineBundle, feeds: Sequence[Feed],
                      float_layers: Sequence[str] = PILLAR_FRONT):
    """NNCF post-training quantization (symmetric int8, fast bias correction) of the bundle's
    model, after :func:`rewrite_strided_deconvolutions`. Deterministic for the same feeds.

    Returns:
        the quantized ``openvino.Model``.
    """
    nncf = _nncf()
    check_feeds(feeds)
    model = read_openvino_model(bundle)
    rewrite_strided_deconvolutions(model)
    from admlops_ros.backends.openvino_backend import port_name
    order = [port_name(p) for p in model.inputs]
    dataset = nncf.Dataset(list(feeds), lambda feed: [feed[name] for name in order])
    ignored = nncf.IgnoredScope(patterns=[f".*{re.escape(p)}.*" for p in float_layers],
                                validate=False)
    try:
        return nncf.quantize(model, dataset, subset_size=len(feeds), ignored_scope=ignored,
                             preset=nncf.QuantizationPreset.PERFORMANCE)
    except Exception as exc:  # NNCF raises its own and RuntimeErrors
        raise QuantizationError(f"NNCF could not quantize {bundle.root}: {exc}") from exc


def quantize_onnx(onnx_path: Union[str, Path], out_path: Union[str, Path],
                  feeds: Sequence[Feed], float_layers: Sequence[str] = PILLAR_FRONT) -> Path:
    """ONNX Runtime static quantization to QDQ (per-channel int8 weights, uint8 activations,
    MinMax calibration) of the Conv/ConvTranspose layers; an opset below 13 is converted first.
    Layers that make an engine output stay fp32 as well.
    """
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    check_feeds(feeds)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(onnx_path))
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    if opset < QDQ_MIN_OPSET:
        model = version_converter.convert_version(model, QDQ_MIN_OPSET)
    staged = out.with_name(out.stem + ".float.onnx")
    onnx.save(model, str(staged))
    # A quantized layer that makes an engine output would quantize that output itself (the
    # raw class logits and box deltas to uint8): those stay fp32 too.
    outputs = {o.name for o in model.graph.output}
    excluded = [n.name for n in model.graph.node
                if any(p in n.name for p in float_layers) or outputs.intersection(n.output)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self):
            feed = next(self._feeds, None)
            return None if feed is None else {n: feed[n] for n in INPUT_NAMES}

    try:
        quantize_static(str(staged), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        op_types_to_quantize=["Conv", "ConvTranspose"])
    except Exception as exc:  # onnxruntime raises many kinds
        raise QuantizationError(f"ONNX Runtime could not quantize {onnx_path}: {exc}") from exc
    finally:
        staged.unlink(missing_ok=True)
    return out


_AUTO_NAME = re.compile(r"^([A-Za-z]+)_\d+(?=/|$)")


def stable_node_names(model) -> int:
    """Rename nodes OpenVINO named from its process-wide counter (``Constant_126768``, also as
    the prefix of ``Convolution_7626/fq_weights_1``) by their position in the graph, so the
    same quantization writes the same IR bytes (and sha256) in every process.

    Returns the count renamed.
    """
    count = 0
    for index, op in enumerate(model.get_ordered_ops()):
        name = op.get_friendly_name()
        stable = _AUTO_NAME.sub(lambda m: f"{m.group(1)}_n{index}", name, count=1)
        if stable != name:
            op.set_friendly_name(stable)
            count += 1
    return count


def write_int8_bundle(bundle: EngineBundle, out_dir: Union[str, Path], feeds: Sequence[Feed],
                      float_layers: Sequence[str], calibration_bag: str, seed: int,
                      name: Optional[str] = None) -> EngineBundle:
    """Quantize a float bundle for OpenVINO and ONNX Runtime into a new bundle.

    The new bundle holds the QDQ ``end2end.onnx`` and the int8 ``openvino/end2end.xml``, and
    its spec says ``engine.precision: int8`` with the calibration in ``engine.quantization``.
    The rest of the spec (model numbers) is the source's.
    """
    import openvino as ov
    if bundle.spec.engine.precision == "int8":
        raise QuantizationError(f"{bundle.root} is already int8; quantize its fp32 original")
    if bundle.onnx_path is None:
        raise QuantizationError(f"{bundle.root}: no end2end.onnx to quantize for ONNX Runtime")
    out = Path(out_dir)
    staging = out.with_name(out.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        qmodel = quantize_openvino(bundle, feeds, float_layers)
        xml = staging / OPENVINO_XML
        xml.parent.mkdir(parents=True, exist_ok=True)
        stable_node_names(qmodel)
        ov.save_model(qmodel, str(xml), compress_to_fp16=False)
        onnx_int8 = quantize_onnx(bundle.onnx_path, staging / "int8.onnx", feeds, float_layers)
        spec = _int8_spec(bundle.spec, name or f"{bundle.spec.name}_int8", QuantizationSpec(
            method="nncf-ptq (OpenVINO IR), ort-qdq (ONNX)", calibration_bag=calibration_bag,
            calibration_frames=len(feeds), seed=int(seed), float_layers=tuple(float_layers)))
        shutil.rmtree(out, ignore_errors=True)
        result = write_bundle(out, spec, onnx_int8, openvino_xml=xml)
    except BackendError as exc:
        raise QuantizationError(str(exc)) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("wrote int8 bundle %s (fp32 layers: %s)", out, ", ".join(float_layers) or "none")
    return result


def _int8_spec(spec: ModelSpec, name: str, quantization: QuantizationSpec) -> ModelSpec:
    engine = replace(spec.engine, precision="int8", quantization=quantization)
    notes = f"int8 of {spec.name}" + (f"; {spec.notes}" if spec.notes else "")
    return replace(spec, name=name, engine=engine, notes=notes, files={})


__all__: List[str] = ["QuantizationError", "PILLAR_FRONT", "HEAD", "check_feeds",
                      "rewrite_strided_deconvolutions", "stable_node_names",
                      "quantize_openvino", "quantize_onnx", "write_int8_bundle",
                      "read_openvino_model"]
