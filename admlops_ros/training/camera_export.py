"""Export a 2D detector to a camera bundle in mmdeploy's mmdet end2end contract (NMS in-graph).

``model(x [1, 3, H, W]) -> (boxes [1, M, 4] x1y1x2y2 network-input pixels, scores [1, M, C]
in [0, 1])`` is traced to ONNX (opset 11), then mmdeploy's ``_multiclass_nms_single`` (ONNX
Runtime backend) is appended as ONNX nodes: pre_top_k by the max class score,
``NonMaxSuppression`` per class (center_point_box 0), gather, one zero row appended, TopK
keep_top_k by score -> ``dets [1, N, 5]``, ``labels [1, N]`` int64. The bundle also gets the
OpenVINO IR (fp32), spec.yaml and the mmdeploy SDK files (deploy.json, pipeline.json,
detail.json) so the directory is an SDK model directory too.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from admlops_ros.bundle.camera_spec import (CameraBundle, CameraEngineSpec, CameraInputSpec,
                                            CameraPostprocessSpec, CameraSpec, NmsSpec,
                                            NormalizeSpec, PadSpec, PreprocessSpec, ResizeSpec,
                                            hash_camera_bundle)
from admlops_ros.bundle.files import ONNX_FILE, OPENVINO_XML
from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

OPSET = 11
SDK_VERSION = "1.3.1"  # the mmdeploy version whose SDK json format is written
INPUT_NAME, OUTPUT_NAMES = "input", ("dets", "labels")
_RAW = ("raw_boxes", "raw_scores")


class CameraExportError(AdmlopsError, ValueError):
    """An export that cannot be done as asked; names the argument and the fix."""


# ----------------------------------------------------------------------------- preprocessing
def preprocess_spec(preprocessing: Union[PreprocessSpec, Mapping[str, Any]],
                    input_size: Tuple[int, int]) -> PreprocessSpec:
    """A PreprocessSpec from itself, a spec-format mapping (resize/normalize/pad sections) or
    a flat mapping: keep_ratio, scale (w, h; default input_size reversed), size_divisor,
    pad_size (w, h), pad_val, pad_stage, mean, std, to_rgb."""
    if isinstance(preprocessing, PreprocessSpec):
        return preprocessing
    p = dict(preprocessing)
    if "resize" in p or "normalize" in p:
        return PreprocessSpec(**{k: (v if not isinstance(v, Mapping) else
                                     {"resize": ResizeSpec, "normalize": NormalizeSpec,
                                      "pad": PadSpec}[k](**v)) for k, v in p.items()})
    h, w = input_size
    resize = ResizeSpec(scale=tuple(p.pop("scale", (w, h))), keep_ratio=p.pop("keep_ratio", True))
    normalize = NormalizeSpec(mean=p.pop("mean", (123.675, 116.28, 103.53)),
                              std=p.pop("std", (58.395, 57.12, 57.375)),
                              to_rgb=p.pop("to_rgb", True))
    pad = None
    size_divisor, pad_size = p.pop("size_divisor", None), p.pop("pad_size", None)
    pad_val, stage = p.pop("pad_val", 0.0), p.pop("pad_stage", "normalized")
    if size_divisor is not None or pad_size is not None:
        pad = PadSpec(size_divisor=size_divisor, size=None if pad_size is None else
                      tuple(pad_size), pad_val=pad_val, stage=stage)
    if p:
        raise CameraExportError(f"preprocessing: unknown key(s) {sorted(p)}; known: scale, "
                                "keep_ratio, mean, std, to_rgb, size_divisor, pad_size, "
                                "pad_val, pad_stage")
    return PreprocessSpec(resize=resize, normalize=normalize, pad=pad)


# ----------------------------------------------------------------------------- NMS graph
def append_multiclass_nms(model_proto, nms: NmsSpec) -> None:
    """Append mmdeploy's single-batch multiclass NMS to a graph with outputs raw_boxes
    [1, M, 4] and raw_scores [1, M, C]; the graph's outputs become dets [1, N, 5] float32 and
    labels [1, N] int64 (N = min(keep_top_k, selected + 1), sorted by score; the appended
    row is zeros)."""
    from onnx import TensorProto, helper, numpy_helper

    g = model_proto.graph
    nodes: List[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> str:
        nodes.append(helper.make_node(op, list(inputs), list(outputs),
                                      name=f"nms/{outputs[0]}", **attrs))
        return outputs[0]

    def imin(out: str, a: str, b: str) -> str:
        """min of two int64 [1] tensors (Min takes no int64 before opset 12; mmdeploy's topk
        rewrite uses Where too)."""
        node("Less", [a, b], [out + "_less"])
        return node("Where", [out + "_less", a, b], [out])

    boxes, scores = _RAW
    i64 = np.int64
    if nms.pre_top_k > 0:
        node("ReduceMax", [scores], ["nms_max_scores"], axes=[2], keepdims=0)  # [1, M]
        node("Shape", [scores], ["nms_scores_shape"])
        node("Gather", ["nms_scores_shape", const("nms_c1", np.array([1], i64))], ["nms_m"],
             axis=0)
        imin("nms_k1", const("nms_pre_top_k", np.array([nms.pre_top_k], i64)), "nms_m")
        node("TopK", ["nms_max_scores", "nms_k1"], ["nms_top_vals", "nms_top_inds"], axis=1,
             largest=1, sorted=1)
        node("Squeeze", ["nms_top_inds"], ["nms_inds"], axes=[0])  # [K]
        node("Gather", [boxes, "nms_inds"], ["nms_boxes"], axis=1)  # [1, K, 4]
        node("Gather", [scores, "nms_inds"], ["nms_scores_k"], axis=1)  # [1, K, C]
        boxes, scores = "nms_boxes", "nms_scores_k"
    node("Transpose", [scores], ["nms_scores_t"], perm=[0, 2, 1])  # [1, C, K]
    node("NonMaxSuppression",
         [boxes, "nms_scores_t", const("nms_max_out", np.array([nms.max_per_class], i64)),
          const("nms_iou", np.array([nms.iou_threshold], np.float32)),
          const("nms_score", np.array([nms.score_threshold], np.float32))],
         ["nms_selected"], center_point_box=0)  # [S, 3] (batch, class, box)
    node("Gather", ["nms_selected", const("nms_c12", np.array([1, 2], i64))], ["nms_cb"],
         axis=1)  # [S, 2]
    node("Squeeze", ["nms_scores_t"], ["nms_scores_ck"], axes=[0])  # [C, K]
    node("GatherND", ["nms_scores_ck", "nms_cb"], ["nms_sel_scores"])  # [S]
    node("Gather", ["nms_selected", const("nms_c1s", np.array(1, i64))], ["nms_cls"], axis=1)
    node("Gather", ["nms_selected", const("nms_c2s", np.array(2, i64))], ["nms_box"], axis=1)
    node("Squeeze", [boxes], ["nms_boxes_k"], axes=[0])  # [K, 4]
    node("Gather", ["nms_boxes_k", "nms_box"], ["nms_sel_boxes"], axis=0)  # [S, 4]
    node("Unsqueeze", ["nms_sel_scores"], ["nms_sel_scores1"], axes=[1])
    node("Concat", ["nms_sel_boxes", "nms_sel_scores1"], ["nms_dets_s"], axis=1)  # [S, 5]
    node("Concat", ["nms_dets_s", const("nms_zero_row", np.zeros((1, 5), np.float32))],
         ["nms_dets_p"], axis=0)  # [S+1, 5]
    node("Concat", ["nms_cls", const("nms_zero_label", np.zeros(1, i64))], ["nms_labels_p"],
         axis=0)  # [S+1]
    node("Shape", ["nms_dets_p"], ["nms_dets_shape"])
    node("Gather", ["nms_dets_shape", const("nms_c0", np.array([0], i64))], ["nms_n"], axis=0)
    imin("nms_k2", const("nms_keep_top_k", np.array([nms.keep_top_k], i64)), "nms_n")
    node("Gather", ["nms_dets_p", const("nms_c4s", np.array(4, i64))], ["nms_score_col"],
         axis=1)  # [S+1]
    node("TopK", ["nms_score_col", "nms_k2"], ["nms_keep_vals", "nms_keep"], axis=0,
         largest=1, sorted=1)
    node("Gather", ["nms_dets_p", "nms_keep"], ["nms_dets_k"], axis=0)
    node("Gather", ["nms_labels_p", "nms_keep"], ["nms_labels_k"], axis=0)
    node("Unsqueeze", ["nms_dets_k"], [OUTPUT_NAMES[0]], axes=[0])
    node("Unsqueeze", ["nms_labels_k"], [OUTPUT_NAMES[1]], axes=[0])
    g.node.extend(nodes)
    while len(g.output):
        g.output.pop()
    g.output.extend([
        helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.FLOAT, [1, "num_dets", 5]),
        helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.INT64, [1, "num_dets"])])


def export_end2end_onnx(model: nn.Module, path: Union[str, Path], input_size: Tuple[int, int],
                        nms: NmsSpec, dynamic_shape: bool, opset: int = OPSET) -> Path:
    """Trace ``model`` and append the NMS; writes ``path`` (checked by onnx.checker)."""
    import onnx
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = input_size
    example = torch.zeros(1, 3, h, w)
    axes = {INPUT_NAME: {2: "height", 3: "width"}} if dynamic_shape else None
    model = model.cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.no_grad():
            torch.onnx.export(model, example, str(raw), opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(_RAW),
                              dynamic_axes=axes, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(raw))
    outs = [o.name for o in proto.graph.output]
    if outs != list(_RAW):
        raise CameraExportError(f"model outputs traced as {outs}; the model must return "
                                "(boxes [1, M, 4], scores [1, M, C])")
    append_multiclass_nms(proto, nms)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


# ----------------------------------------------------------------------------- SDK files
def sdk_transforms(pre: PreprocessSpec) -> List[Dict[str, Any]]:
    """The mmdeploy SDK Preprocess transforms of a PreprocessSpec (mmdeploy 1.3 names; Resize
    and Pad size are [w, h] as mmdeploy_runtime 1.3.1 reads them: a Pad size [h, w] of a
    non-square input pads negatively and aborts the SDK process)."""
    rs, norm, pad = pre.resize, pre.normalize, pre.pad
    out: List[Dict[str, Any]] = [
        {"type": "LoadImageFromFile"},
        {"type": "Resize", "keep_ratio": rs.keep_ratio, "size": list(rs.scale),
         "interpolation": rs.interpolation}]
    normalize = {"type": "Normalize", "mean": list(norm.mean), "std": list(norm.std),
                 "to_rgb": norm.to_rgb}
    pad_t: Optional[Dict[str, Any]] = None
    if pad is not None:
        pad_t = {"type": "Pad", "pad_val": {"img": [pad.pad_val] * 3}}
        if pad.size is not None:
            pad_t["size"] = list(pad.size)
        else:
            pad_t["size_divisor"] = pad.size_divisor
    if pad_t is not None and pad.stage == "raw":
        out += [pad_t, normalize]
    else:
        out += [normalize] + ([pad_t] if pad_t is not None else [])
    out += [{"type": "DefaultFormatBundle"},
            {"type": "Collect", "keys": ["img"],
             "meta_keys": ["filename", "ori_filename", "ori_shape", "img_shape", "pad_shape",
                           "scale_factor", "flip", "flip_direction", "img_norm_cfg",
                           "valid_ratio"]}]
    return out


def sdk_json_files(spec: CameraSpec, model_name: str = "end2end") -> Dict[str, Dict[str, Any]]:
    """deploy.json, pipeline.json and detail.json of an mmdeploy 1.3 SDK model directory
    holding ``end2end.onnx`` on the ONNX Runtime backend."""
    nms = spec.engine.nms or NmsSpec()
    post = {"score_threshold": nms.score_threshold, "confidence_threshold": 0.005,
            "iou_threshold": nms.iou_threshold, "max_output_boxes_per_class": nms.max_per_class,
            "pre_top_k": nms.pre_top_k, "keep_top_k": nms.keep_top_k,
            "background_label_id": -1}
    deploy = {"version": SDK_VERSION, "task": "Detector",
              "models": [{"name": model_name, "net": ONNX_FILE, "weights": "",
                          "backend": "onnxruntime", "precision": "FP32", "batch_size": 1,
                          "dynamic_shape": False}],
              "customs": []}
    pipeline = {"pipeline": {
        "input": ["img"], "output": ["post_output"],
        "tasks": [
            {"type": "Task", "module": "Transform", "name": "Preprocess", "input": ["img"],
             "output": ["prep_output"], "transforms": sdk_transforms(spec.preprocessing)},
            {"name": model_name, "type": "Task", "module": "Net", "is_batched": False,
             "input": ["prep_output"], "output": ["infer_output"],
             "input_map": {"img": spec.engine.input_name}, "output_map": {}},
            {"type": "Task", "module": "mmdet", "name": "postprocess",
             "component": "ResizeBBox",
             "params": {"score_thr": spec.score_threshold, "min_bbox_size": 0,
                        "nms": {"type": "nms", "iou_threshold": nms.iou_threshold},
                        "max_per_img": nms.keep_top_k, "nms_pre": nms.pre_top_k},
             "output": ["post_output"], "input": ["prep_output", "infer_output"]}]}}
    dynamic = {INPUT_NAME: {"0": "batch", "2": "height", "3": "width"},
               OUTPUT_NAMES[0]: {"0": "batch", "1": "num_dets"},
               OUTPUT_NAMES[1]: {"0": "batch", "1": "num_dets"}}
    detail = {"version": SDK_VERSION,
              "codebase": {"task": "ObjectDetection", "codebase": "mmdet", "version": "3.3.0",
                           "pth": "", "config": spec.source or ""},
              "codebase_config": {"type": "mmdet", "task": "ObjectDetection",
                                  "model_type": "end2end", "post_processing": post},
              "onnx_config": {"type": "onnx", "export_params": True,
                              "keep_initializers_as_inputs": False, "opset_version": OPSET,
                              "save_file": ONNX_FILE, "input_names": [INPUT_NAME],
                              "output_names": list(OUTPUT_NAMES),
                              "input_shape": None if spec.input.dynamic_shape else
                              [spec.input.width, spec.input.height],
                              "optimize": True,
                              **({"dynamic_axes": dynamic} if spec.input.dynamic_shape else {})},
              "backend_config": {"type": "onnxruntime"},
              "calib_config": {}}
    return {"deploy.json": deploy, "pipeline.json": pipeline, "detail.json": detail}


def write_sdk_files(spec: CameraSpec, root: Union[str, Path]) -> List[Path]:
    """Write the three SDK json files into ``root``; returns their paths."""
    root = Path(root)
    paths = []
    for name, data in sdk_json_files(spec).items():
        p = root / name
        p.write_text(json.dumps(data, indent=4) + "\n")
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------- the bundle
def export_camera_bundle(model: nn.Module, out_dir: Union[str, Path], *,
                         input_size: Tuple[int, int], class_names: Sequence[str],
                         preprocessing: Union[PreprocessSpec, Mapping[str, Any]],
                         score_threshold: float = 0.3, iou_threshold: float = 0.5,
                         max_per_image: int = 100, pre_top_k: int = 1000,
                         nms_score_threshold: float = 0.05,
                         max_per_class: Optional[int] = None,
                         dynamic_shape: Optional[bool] = None, name: Optional[str] = None,
                         openvino: bool = True, sdk_files: bool = True,
                         notes: Optional[str] = None, source: Optional[str] = None
                         ) -> Path:
    """Write a camera bundle: end2end.onnx (NMS in-graph), OpenVINO IR, SDK json, spec.yaml.

    Args:
        model: ``model(x [1, 3, H, W]) -> (boxes [1, M, 4], scores [1, M, C])``.
        out_dir: bundle directory (created; existing engine files are replaced).
        input_size: (H, W) of the traced input (the network input of a static engine).
        class_names: name per class index (C of them).
        preprocessing: PreprocessSpec or a mapping (see :func:`preprocess_spec`).
        score_threshold: the runner's threshold (spec postprocess, SDK ResizeBBox score_thr).
        iou_threshold, nms_score_threshold, pre_top_k, max_per_image (keep_top_k),
            max_per_class (default 2 * max_per_image): the in-graph NMS (mmdeploy
            post_processing names in parentheses).
        dynamic_shape: engine H, W dynamic; default: keep-ratio resize without a fixed pad
            size.
        name: bundle name (default: the directory name).
        openvino: also write the OpenVINO IR (fp32 weights).
        sdk_files: also write deploy.json, pipeline.json, detail.json.

    Returns:
        The bundle directory.

    Raises:
        CameraExportError / SpecError: inconsistent arguments (before anything is written).
    """
    root = Path(out_dir)
    h, w = (int(v) for v in input_size)
    pre = preprocess_spec(preprocessing, (h, w))
    if dynamic_shape is None:
        dynamic_shape = pre.resize.keep_ratio and (pre.pad is None or pre.pad.size is None)
    nms = NmsSpec(iou_threshold=iou_threshold, score_threshold=nms_score_threshold,
                  pre_top_k=pre_top_k, keep_top_k=max_per_image,
                  max_per_class=max_per_class or 2 * max_per_image)
    spec = CameraSpec(
        name=name or root.name, class_names=tuple(class_names),
        input=CameraInputSpec(height=h, width=w,
                              channel_order="rgb" if pre.normalize.to_rgb else "bgr",
                              dynamic_shape=dynamic_shape),
        preprocessing=pre, postprocess=CameraPostprocessSpec(score_threshold=score_threshold),
        engine=CameraEngineSpec(input_name=INPUT_NAME, output_names=OUTPUT_NAMES,
                                precision="fp32", nms=nms),
        notes=notes, source=source)
    root.mkdir(parents=True, exist_ok=True)
    onnx_path = export_end2end_onnx(model, root / ONNX_FILE, (h, w), nms, dynamic_shape)
    xml = root / OPENVINO_XML
    if openvino:
        from admlops_ros.backends.openvino_backend import convert_onnx_to_ir
        convert_onnx_to_ir(onnx_path, xml, compress_to_fp16=False)
    elif xml.parent.is_dir():
        shutil.rmtree(xml.parent)
    if sdk_files:
        write_sdk_files(spec, root)
    bundle: CameraBundle = hash_camera_bundle(root, spec)
    LOG.info("wrote camera bundle %s (%s)", root, ", ".join(bundle.files))
    return root


# ----------------------------------------------------------------------------- test network
class TinyCameraNet(nn.Module):
    """A tiny deterministic detector for tests and benches (not trained).

    Cells of ``stride`` pixels; class c scores the mean of normalised input channel c
    against the other two (red, green, blue blobs light up classes 0, 1, 2 of an rgb
    model); boxes are ``box_size`` squares around the cell centre, grown by the cell's mean
    brightness. ``noise`` adds seeded random weights so scores are never exactly tied.
    """

    def __init__(self, num_classes: int = 3, stride: int = 16, box_size: float = 48.0,
                 gain: float = 6.0, bias: float = 4.0, noise: float = 0.05,
                 seed: int = 0) -> None:
        super().__init__()
        self.stride, self.box_size = stride, float(box_size)
        gen = torch.Generator().manual_seed(seed)
        weight = torch.full((num_classes, 3), -0.5 * gain)
        for c in range(num_classes):
            weight[c, c % 3] = gain
        weight += noise * torch.randn(num_classes, 3, generator=gen)
        self.cls = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.cls.weight.copy_(weight.view(num_classes, 3, 1, 1))
            self.cls.bias.fill_(-bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        s = self.stride
        f = nn.functional.avg_pool2d(x, s, s, ceil_mode=True)  # [1, 3, h, w]
        scores = torch.sigmoid(self.cls(f)).flatten(2).transpose(1, 2)  # [1, M, C]
        h, w = f.shape[2], f.shape[3]
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) * s
        cy = ys.view(-1, 1).expand(h, w).reshape(1, -1)
        cx = xs.view(1, -1).expand(h, w).reshape(1, -1)
        half = 0.5 * self.box_size * (1.0 + 0.25 * torch.tanh(f.mean(1).reshape(1, -1)))
        boxes = torch.stack([cx - half, cy - half, cx + half, cy + half], dim=2)  # [1, M, 4]
        return boxes, scores


def blob_image(height: int, width: int, blobs: Sequence[Tuple[float, float, float, int]],
               seed: int = 0) -> np.ndarray:
    """A dark bgr test image with Gaussian colour blobs (cx, cy, sigma px, class 0/1/2 = red,
    green, blue in rgb), plus faint noise; [H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    img = rng.normal(30.0, 4.0, (height, width, 3))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    for cx, cy, sigma, cls in blobs:
        g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma ** 2))
        img[:, :, 2 - (cls % 3)] += 220.0 * g  # bgr channel of rgb channel cls
    return np.clip(img, 0, 255).astype(np.uint8)
