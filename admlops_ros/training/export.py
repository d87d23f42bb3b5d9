"""Export the PyTorch PointPillars to ONNX (mmdeploy 1.2+ names) and OpenVINO IR; torch only."""
from __future__ import annotations

import logging
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from admlops_ros.errors import AdmlopsError
from admlops_ros.training.configs import PointPillarsConfig, to_model_spec
from admlops_ros.training.deploy_graph import deploy_model
from admlops_ros.training.network import PointPillars, build_model

__all__ = [
    "ExportError",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "OPSET",
    "random_voxels",
    "export_onnx",
    "export_openvino",
    "run_onnxruntime",
    "run_openvino",
    "run_torch",
    "load_checkpoint",
    "export_bundle",
]

LOG = logging.getLogger(__name__)

INPUT_NAMES = ("voxels", "num_points", "coors")
OUTPUT_NAMES = ("cls_score0", "bbox_pred0", "dir_cls_pred0")  # mmdeploy >= 1.2, one level
OPSET = 11
PathLike = Union[str, Path]
Inputs = Tuple[np.ndarray, np.ndarray, np.ndarray]


class ExportError(AdmlopsError, RuntimeError):
    """Export or checkpoint problems; the message names the file and the fix."""


def random_voxels(config: PointPillarsConfig, num_voxels: int, seed: int = 0) -> Inputs:
    """Random but valid engine inputs: distinct pillars, points inside their pillar.

    Args:
        config: model config (grid, voxel size, range, max_points, C).
        num_voxels: V (<= number of pillars of the grid).
        seed: RNG seed.

    Returns:
        voxels [V, M, C] float32 (zero padded), num_points [V] int32, coors [V, 4] int32
        (0, z, y, x).
    """
    rng = np.random.default_rng(seed)
    nx, ny = config.grid_size
    m, c = config.max_points, config.in_channels
    flat = rng.choice(nx * ny, size=num_voxels, replace=False)
    ys, xs = flat // nx, flat % nx
    coors = np.stack([np.zeros_like(xs), np.zeros_like(xs), ys, xs], axis=1).astype(np.int32)
    num_points = rng.integers(1, m + 1, size=num_voxels).astype(np.int32)
    vs, r = config.voxel_size, config.point_cloud_range
    frac = rng.random((num_voxels, m, 3))
    pts = np.empty((num_voxels, m, c), np.float32)
    pts[:, :, 0] = r[0] + (xs[:, None] + frac[:, :, 0]) * vs[0]
    pts[:, :, 1] = r[1] + (ys[:, None] + frac[:, :, 1]) * vs[1]
    pts[:, :, 2] = r[2] + frac[:, :, 2] * vs[2]
    if c > 3:
        pts[:, :, 3:] = rng.random((num_voxels, m, c - 3))
    pts[np.arange(m)[None, :] >= num_points[:, None]] = 0.0
    return pts, num_points, coors


def _as_torch(inputs: Inputs) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    v, n, c = inputs
    return (torch.from_numpy(np.ascontiguousarray(v, np.float32)),
            torch.from_numpy(np.ascontiguousarray(n, np.int32)),
            torch.from_numpy(np.ascontiguousarray(c, np.int32)))


def run_torch(model: PointPillars, inputs: Inputs) -> Dict[str, np.ndarray]:
    """Eval-mode PyTorch outputs keyed by the ONNX output names."""
    model.eval()
    with torch.no_grad():
        outs = model(*_as_torch(inputs))
    return {name: o.numpy() for name, o in zip(OUTPUT_NAMES, outs)}


def export_onnx(model: PointPillars, path: PathLike, num_voxels: int = 2000,
                opset: int = OPSET, fold: bool = True) -> Path:
    """Write ``end2end.onnx`` with mmdeploy 1.2+ I/O names and a dynamic voxel axis.

    Args:
        model: the network; exported in eval mode, on CPU.
        path: output file.
        num_voxels: V of the tracing example (any V works at run time).
        opset: ONNX opset (mmdeploy uses 11).
        fold: export :func:`admlops_ros.training.deploy_graph.deploy_model` (pillar front
            folded, same outputs); False traces the module as it is, as mmdeploy does.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = deploy_model(model) if fold else model.cpu().eval()
    example = _as_torch(random_voxels(model.config, num_voxels, seed=0))
    dynamic_axes = {name: {0: "num_voxels"} for name in INPUT_NAMES}
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    import onnx
    model_proto = onnx.load(str(path))
    _zero_constants_as_nodes(model_proto)
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(path))
    LOG.info("wrote %s (opset %d, inputs %s, outputs %s)", path, opset, INPUT_NAMES,
             OUTPUT_NAMES)
    return path


def _zero_constants_as_nodes(model_proto, min_bytes: int = 1 << 16) -> int:
    """Replace large all-zero ``Constant`` nodes (the scatter canvas) by ``ConstantOfShape``.

    Tracing folds ``torch.zeros(C, ny * nx)`` into a constant of C*ny*nx floats (6.9 MB for
    the small model); ``ConstantOfShape`` makes the same tensor at load time, so the file
    holds only the weights. Returns the number of nodes replaced.
    """
    from onnx import helper, numpy_helper
    replaced = 0
    for node in model_proto.graph.node:
        if node.op_type != "Constant" or not node.attribute or node.attribute[0].name != "value":
            continue
        tensor = node.attribute[0].t
        array = numpy_helper.to_array(tensor)
        if array.nbytes < min_bytes or array.any():
            continue
        fill = helper.make_tensor("value", tensor.data_type, [1], [0])
        shape = numpy_helper.from_array(np.asarray(array.shape, np.int64))
        shape_node = helper.make_node("Constant", [], [node.output[0] + "_shape"], value=shape)
        new = helper.make_node("ConstantOfShape", [shape_node.output[0]], list(node.output),
                               name=node.name, value=fill)
        node.CopyFrom(new)
        # the shape constant must come before its user; insert at the front of the graph
        model_proto.graph.node.insert(0, shape_node)
        replaced += 1
    return replaced


def export_openvino(onnx_path: PathLike, xml_path: PathLike) -> Path:
    """Convert the ONNX file to OpenVINO IR (fp32 weights; precision is chosen at run time)."""
    from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
    return convert_onnx_to_ir(onnx_path, xml_path, compress_to_fp16=False)


def run_onnxruntime(path: PathLike, inputs: Inputs) -> Dict[str, np.ndarray]:
    """Outputs of the ONNX file on onnxruntime CPU."""
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = dict(zip(INPUT_NAMES, inputs))
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def run_openvino(path: PathLike, inputs: Inputs, precision: str = "f32") -> Dict[str, np.ndarray]:
    """Outputs of an ONNX or IR file on OpenVINO CPU at ``precision`` (f32 / bf16)."""
    import openvino as ov
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    res = compiled(dict(zip(INPUT_NAMES, inputs)))
    return {out.get_any_name(): np.asarray(res[out]) for out in compiled.outputs}


def load_checkpoint(model: PointPillars, path: PathLike) -> PointPillars:
    """Load a plain state_dict (or an mmdet3d checkpoint's ``state_dict``) with strict=True.

    Raises:
        ExportError: the file is missing or its keys do not match the config.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist; train first (scripts/train.py)")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # e.g. mmengine objects in an mmdet3d checkpoint's meta
        raise ExportError(
            f"checkpoint {path} holds objects besides tensors, so it is not loaded "
            "(torch.load weights_only=True); if you trust the file, save its weights alone: "
            f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c.get('state_dict', c), 'weights.pth')\" and pass weights.pth") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ExportError(f"checkpoint {path} does not fit config {model.config.name}: {exc}; "
                          "pass the --config it was trained with") from exc
    return model


def export_bundle(config: PointPillarsConfig, bundle_dir: PathLike,
                  checkpoint: Optional[PathLike] = None, intensity_scale: float = 1.0,
                  check_voxels: Tuple[int, ...] = (500, 3000),
                  notes: Optional[str] = None, fold: bool = True) -> Path:
    """Export a model to ``engines/<name>/`` (spec.yaml, end2end.onnx, openvino/end2end.*).

    The ONNX and IR are checked against PyTorch on random inputs for each V in
    ``check_voxels`` (max abs difference logged; > 1e-3 raises).

    Args:
        config: the model config.
        bundle_dir: output directory.
        checkpoint: state_dict file; None exports random weights (for tests).
        intensity_scale: spec input.intensity_scale.
        check_voxels: voxel counts to check the exported graphs with.
        notes: free text stored in spec.yaml.
        fold: see :func:`export_onnx`.

    Returns:
        The bundle directory.
    """
    model = build_model(config)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    model.eval()
    return write_checked_bundle(bundle_dir, to_model_spec(config, intensity_scale, notes=notes),
                                lambda path: export_onnx(model, path, fold=fold), config,
                                lambda inputs: run_torch(model, inputs), check_voxels)


def write_checked_bundle(bundle_dir: PathLike, spec: Any, export: Callable[[Path], Path],
                         config: Any, reference: Callable[[Inputs], Dict[str, np.ndarray]],
                         check_voxels: Sequence[int], tolerance: float = 1e-3) -> Path:
    """Export the ONNX (``export(path)``) and its OpenVINO IR, check both against the PyTorch
    ``reference`` on random voxels of each count in ``check_voxels`` (of ``config``'s
    shapes), and write the bundle with ``spec``.

    Raises:
        ExportError: a backend's outputs differ from the reference by more than ``tolerance``.
    """
    from admlops_ros.bundle.files import write_bundle
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export(Path(tmp) / "end2end.onnx")
        xml_path = export_openvino(onnx_path, Path(tmp) / "openvino" / "end2end.xml")
        for v in check_voxels:
            inputs = random_voxels(config, v, seed=v)
            ref = reference(inputs)
            for backend, outs in (("onnxruntime", run_onnxruntime(onnx_path, inputs)),
                                  ("openvino", run_openvino(xml_path, inputs))):
                diff = max(float(np.abs(outs[k] - ref[k]).max()) for k in ref)
                LOG.info("check V=%d %s: max abs diff vs torch %.2e", v, backend, diff)
                if diff > tolerance:
                    raise ExportError(f"{backend} output differs from PyTorch by {diff:.3g} at "
                                      f"V={v}; the export is broken")
        write_bundle(bundle_dir, spec, onnx_path, openvino_xml=xml_path)
    LOG.info("bundle written to %s", bundle_dir)
    return Path(bundle_dir)


def average_weights(start: PathLike, tuned: PathLike, weight: float, out: PathLike) -> Path:
    """``weight`` x tuned + (1 - weight) x start for every floating-point tensor (integer ones,
    e.g. BatchNorm's batch counter, from ``tuned``): weight-space ensembling of a fine-tuned
    model with the one it started from (WiSE-FT). Both are state_dicts of one network.

    Raises:
        ExportError: a file is missing, or the two are not the same network.
    """
    for path in (start, tuned):
        if not Path(path).is_file():
            raise ExportError(f"checkpoint {path} does not exist")
    if not 0.0 <= float(weight) <= 1.0:
        raise ExportError(f"--weight {weight} must be in [0, 1]")
    a = torch.load(str(start), map_location="cpu", weights_only=True)
    b = torch.load(str(tuned), map_location="cpu", weights_only=True)
    if set(a) != set(b) or any(a[k].shape != b[k].shape for k in b):
        raise ExportError(f"{start} and {tuned} are not the same network: their tensors differ")
    mixed = {k: (weight * b[k] + (1.0 - weight) * a[k]) if b[k].is_floating_point() else b[k]
             for k in b}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(mixed, str(out))
    return out
