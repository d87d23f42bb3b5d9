"""CameraSpec from an mmdeploy SDK model directory (pipeline.json, deploy.json) or an mmdet 3.x
config (test_pipeline, data_preprocessor, test_cfg)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from admlops_ros.bundle.camera_spec import (CameraEngineSpec, CameraInputSpec,
                                            CameraPostprocessSpec, CameraSpec, NmsSpec,
                                            NormalizeSpec, PadSpec, PreprocessSpec, ResizeSpec)
from admlops_ros.bundle.mmdet3d_config import load_config
from admlops_ros.errors import AdmlopsError

PathLike = Union[str, Path]
# transforms that carry no number the runtime needs (loading, packing, annotations)
_PASSIVE = ("LoadImageFromFile", "LoadImageFromNDArray", "LoadAnnotations", "PackDetInputs",
            "DefaultFormatBundle", "ImageToTensor", "Collect", "ToTensor")


class CameraConfigError(AdmlopsError, ValueError):
    """A pipeline.json / mmdet config this tool cannot turn into a camera spec."""


def _wh(value: Any, key: str) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    raise CameraConfigError(f"{key} must be [w, h] positive integers, got {value!r}")


def _pad_val(value: Any) -> float:
    if isinstance(value, Mapping):
        value = value.get("img", 0)
    if isinstance(value, (list, tuple)):
        if len(set(value)) > 1:
            raise CameraConfigError(f"Pad pad_val {list(value)} differs per channel; the "
                                    "runtime pads with one value")
        value = value[0]
    return float(value)


def _unsupported(names: Sequence[str], where: str) -> CameraConfigError:
    return CameraConfigError(f"{where}: unsupported transform(s) {', '.join(names)}; supported: "
                             "Resize (scale/size, keep_ratio), Pad (size_divisor or size, "
                             "pad_val), Normalize (mean, std, to_rgb) and the loading/packing "
                             "ones")


def _input_for(pre: PreprocessSpec, to_rgb: bool) -> CameraInputSpec:
    w, h = pre.resize.scale
    dynamic = pre.resize.keep_ratio and (pre.pad is None or pre.pad.size is None)
    if pre.pad is not None and pre.pad.size is not None:
        w, h = pre.pad.size
    elif pre.pad is not None:
        d = pre.pad.size_divisor
        w, h = -(-w // d) * d, -(-h // d) * d
    return CameraInputSpec(height=h, width=w, channel_order="rgb" if to_rgb else "bgr",
                           dynamic_shape=dynamic)


def _class_names(names: Optional[Sequence[str]], count: Optional[int], where: str
                 ) -> Tuple[str, ...]:
    if names:
        if count is not None and len(names) != count:
            raise CameraConfigError(f"{where}: {len(names)} class names given but the model "
                                    f"has {count} classes")
        return tuple(names)
    if count is None:
        raise CameraConfigError(f"{where}: no class names found; give --classes NAME ...")
    return tuple(f"class{i}" for i in range(count))


# ----------------------------------------------------------------------------- mmdeploy SDK
def camera_spec_from_sdk_dir(path: PathLike, class_names: Optional[Sequence[str]] = None,
                             name: Optional[str] = None,
                             score_threshold: Optional[float] = None) -> CameraSpec:
    """Read an mmdeploy 1.x SDK model directory's pipeline.json (and deploy.json,
    detail.json when there) into a CameraSpec (without ``files``).

    pipeline.json tasks: Preprocess transforms (Resize size [w, h] + keep_ratio; Normalize
    mean/std/to_rgb; Pad size_divisor or size [w, h], pad_val, applied to raw pixels when it
    comes before Normalize), Net input_map img -> engine input, mmdet ResizeBBox score_thr.

    Raises:
        CameraConfigError: missing files, an unsupported transform (one line naming them all),
            or missing class names.
    """
    root = Path(path)
    where = str(root / "pipeline.json")
    try:
        pipeline = json.loads((root / "pipeline.json").read_text())
        deploy = json.loads((root / "deploy.json").read_text())
    except (OSError, ValueError) as exc:
        raise CameraConfigError(f"{root}: cannot read pipeline.json / deploy.json: {exc}") \
            from None
    detail: Dict[str, Any] = {}
    if (root / "detail.json").is_file():
        detail = json.loads((root / "detail.json").read_text())
    if deploy.get("task") != "Detector":
        raise CameraConfigError(f"{root}/deploy.json: task {deploy.get('task')!r} is not "
                                "'Detector' (mmdet object detection)")
    tasks = pipeline.get("pipeline", {}).get("tasks", [])
    prep = next((t for t in tasks if t.get("module") == "Transform"), None)
    net = next((t for t in tasks if t.get("module") == "Net"), None)
    post = next((t for t in tasks if t.get("module") == "mmdet"), None)
    if prep is None or net is None:
        raise CameraConfigError(f"{where}: needs a Transform task and a Net task")
    resize = normalize = None
    pad: Optional[Dict[str, Any]] = None
    pad_before_norm = False
    bad: List[str] = []
    for t in prep.get("transforms", []):
        kind = t.get("type")
        if kind == "Resize":
            resize = ResizeSpec(scale=_wh(t.get("size"), "Resize size"),
                                keep_ratio=bool(t.get("keep_ratio", False)))
            if t.get("interpolation", "bilinear") != "bilinear":
                bad.append(f"Resize(interpolation={t['interpolation']})")
        elif kind == "Normalize":
            normalize = NormalizeSpec(mean=t["mean"], std=t["std"],
                                      to_rgb=bool(t.get("to_rgb", False)))
        elif kind == "Pad":
            # mmdeploy 1.x always inserts Pad(size_divisor=<pad_size_divisor or 1>) after
            # Normalize: a divisor-1 Pad pads nothing and must not hide a pipeline Pad
            if "size" not in t and (t.get("size_divisor") or 1) <= 1:
                continue
            if pad is not None:
                bad.append("a second effective Pad")
                continue
            pad = t
            pad_before_norm = normalize is None
        elif kind not in _PASSIVE:
            bad.append(str(kind))
    if bad:
        raise _unsupported(bad, where)
    if resize is None or normalize is None:
        raise CameraConfigError(f"{where}: Preprocess needs a Resize and a Normalize transform")
    pad_spec = None
    if pad is not None:
        size = _wh(pad["size"], "Pad size") if "size" in pad else None
        divisor = pad.get("size_divisor") if size is None else None
        if size is not None or (divisor or 1) > 1:
            pad_spec = PadSpec(size_divisor=divisor, size=size, pad_val=_pad_val(
                pad.get("pad_val", 0.0)), stage="raw" if pad_before_norm else "normalized")
    pre = PreprocessSpec(resize=resize, normalize=normalize, pad=pad_spec)
    onnx_cfg = detail.get("onnx_config", {})
    post_cfg = detail.get("codebase_config", {}).get("post_processing", {})
    outputs = tuple(onnx_cfg.get("output_names", ("dets", "labels")))[:2]
    nms = None
    if post_cfg:
        nms = NmsSpec(iou_threshold=post_cfg.get("iou_threshold", 0.5),
                      score_threshold=post_cfg.get("score_threshold", 0.05),
                      pre_top_k=post_cfg.get("pre_top_k", 5000),
                      keep_top_k=post_cfg.get("keep_top_k", 100),
                      max_per_class=post_cfg.get("max_output_boxes_per_class", 200))
    thr = score_threshold
    if thr is None:
        thr = float((post or {}).get("params", {}).get("score_thr", 0.3))
    models = deploy.get("models") or [{}]
    return CameraSpec(
        name=name or root.name, class_names=_class_names(class_names, None, where),
        input=_input_for(pre, normalize.to_rgb), preprocessing=pre,
        postprocess=CameraPostprocessSpec(score_threshold=thr),
        engine=CameraEngineSpec(input_name=net.get("input_map", {}).get("img", "input"),
                                output_names=outputs, nms=nms),
        source=f"mmdeploy SDK {deploy.get('version', '?')} model dir {root} "
               f"({models[0].get('name', '?')}, {models[0].get('backend', '?')})")


# ----------------------------------------------------------------------------- mmdet config
def _num_classes(model: Mapping[str, Any]) -> Optional[int]:
    for key in ("bbox_head", "roi_head"):
        head = model.get(key) or {}
        if key == "roi_head":
            head = head.get("bbox_head") or {}
            if isinstance(head, list):
                head = head[-1]
        if isinstance(head, Mapping) and "num_classes" in head:
            return int(head["num_classes"])
    return None


def camera_spec_from_mmdet_config(path: PathLike, class_names: Optional[Sequence[str]] = None,
                                  name: Optional[str] = None,
                                  score_threshold: Optional[float] = None) -> CameraSpec:
    """Read an mmdet 3.x config (.py, ``_base_`` chain merged) into a CameraSpec.

    test pipeline (``test_dataloader.dataset.pipeline`` or ``test_pipeline``): Resize
    scale (w, h) + keep_ratio, Pad (size (w, h) or size_divisor, pad_val: raw pixels);
    ``model.data_preprocessor``: mean, std, bgr_to_rgb, pad_size_divisor / pad_value (padding
    after normalisation); ``model.test_cfg``: score_thr, nms.iou_threshold, nms_pre,
    max_per_img; class names from ``metainfo.classes`` (else ``--classes``, else class<i>).

    Raises:
        CameraConfigError: no test pipeline, an unsupported transform (one line naming them
            all), or mean/std missing.
    """
    path = Path(path)
    cfg = load_config(path)
    where = str(path)
    dataset = (cfg.get("test_dataloader") or {}).get("dataset") or {}
    pipeline = dataset.get("pipeline") or cfg.get("test_pipeline")
    if not pipeline:
        raise CameraConfigError(f"{where}: no test_dataloader.dataset.pipeline or "
                                "test_pipeline")
    model = cfg.get("model") or {}
    dp = model.get("data_preprocessor") or {}
    resize = None
    pad_spec = None
    bad: List[str] = []
    for t in pipeline:
        kind = t.get("type")
        if kind == "Resize":
            resize = ResizeSpec(scale=_wh(t.get("scale"), "Resize scale"),
                                keep_ratio=bool(t.get("keep_ratio", False)))
            if t.get("interpolation", "bilinear") != "bilinear":
                bad.append(f"Resize(interpolation={t['interpolation']})")
        elif kind == "Pad":
            size = _wh(t["size"], "Pad size") if t.get("size") else None
            if t.get("pad_to_square"):
                if resize is None or len(set(resize.scale)) != 1 or not resize.keep_ratio:
                    bad.append("Pad(pad_to_square) after other than a square keep-ratio Resize")
                    continue
                size = resize.scale  # the keep-ratio image's long side is the square's side
            pad_spec = PadSpec(size=size, size_divisor=None if size else t.get("size_divisor"),
                               pad_val=_pad_val(t.get("pad_val", 0)), stage="raw")
        elif kind not in _PASSIVE:
            bad.append(str(kind))
    if bad:
        raise _unsupported(bad, f"{where} test pipeline")
    if resize is None:
        raise CameraConfigError(f"{where}: the test pipeline has no Resize")
    if "mean" not in dp or "std" not in dp:
        raise CameraConfigError(f"{where}: model.data_preprocessor has no mean/std")
    divisor = int(dp.get("pad_size_divisor", 1) or 1)
    if divisor > 1:
        if pad_spec is not None:
            raise CameraConfigError(f"{where}: both a Pad transform and data_preprocessor "
                                    "pad_size_divisor; the runtime pads once")
        pad_spec = PadSpec(size_divisor=divisor, pad_val=float(dp.get("pad_value", 0)),
                           stage="normalized")
    to_rgb = bool(dp.get("bgr_to_rgb", False))
    pre = PreprocessSpec(resize=resize, normalize=NormalizeSpec(mean=dp["mean"], std=dp["std"],
                                                                to_rgb=to_rgb), pad=pad_spec)
    test_cfg = dict(model.get("test_cfg") or {})
    if "rcnn" in test_cfg:
        test_cfg = dict(test_cfg["rcnn"])
    nms_cfg = test_cfg.get("nms") or {}
    thr = score_threshold if score_threshold is not None else \
        float(test_cfg.get("score_thr", 0.3))
    nms = NmsSpec(iou_threshold=float(nms_cfg.get("iou_threshold", 0.5)),
                  score_threshold=0.05, pre_top_k=int(test_cfg.get("nms_pre", 5000)),
                  keep_top_k=int(test_cfg.get("max_per_img", 100)), max_per_class=200)
    meta = cfg.get("metainfo") or dataset.get("metainfo") or {}
    names = class_names or meta.get("classes")
    return CameraSpec(
        name=name or path.stem, class_names=_class_names(names, _num_classes(model), where),
        input=_input_for(pre, to_rgb), preprocessing=pre,
        postprocess=CameraPostprocessSpec(score_threshold=thr),
        engine=CameraEngineSpec(nms=nms), source=f"mmdet config {path.name}")


def camera_spec_from_source(path: PathLike, **kwargs: Any) -> CameraSpec:
    """An SDK model directory (pipeline.json inside) or an mmdet config file."""
    p = Path(path)
    if p.is_dir():
        return camera_spec_from_sdk_dir(p, **kwargs)
    return camera_spec_from_mmdet_config(p, **kwargs)
