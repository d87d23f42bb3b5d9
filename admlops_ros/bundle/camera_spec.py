"""CameraSpec: spec.yaml of a camera (mmdet 2D detection) bundle, and loading it with sha256 checks.

Same ideas as :mod:`admlops_ros.bundle.spec`: frozen dataclasses whose fields carry their kind
and documentation, checked when built; ``modality: camera`` tells the file apart from a lidar
spec. The engine contract is mmdeploy's mmdet end2end export: input ``input`` [1, 3, H, W]
float32, outputs ``dets`` [1, N, 5] (x1, y1, x2, y2, score; network-input pixels) and
``labels`` [1, N], NMS inside the engine.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import yaml

from admlops_ros.bundle.files import (MAX_SPEC_BYTES, ONNX_FILE, OPENVINO_XML, sha256_file,
                                      spec_path, verified_files)
from admlops_ros.bundle.schema import (Boolean, Choice, Integer, Names, Nullable, Number,
                                       Numbers, PositiveInts, Section, SpecError, Text,
                                       check_fields, dump_section, invalid, parse_section,
                                       spec_field)
from admlops_ros.bundle.spec import SPEC_FILE, _FileHashes

__all__ = ["CAMERA_SPEC_VERSION", "MODALITY", "CameraInputSpec", "ResizeSpec", "PadSpec",
           "NormalizeSpec", "PreprocessSpec", "CameraPostprocessSpec", "NmsSpec",
           "CameraEngineSpec", "CameraSpec", "CameraBundle", "is_camera_spec_data",
           "read_camera_spec", "write_camera_spec", "load_camera_bundle", "SDK_FILES"]

CAMERA_SPEC_VERSION = 1
MODALITY = "camera"
CHANNEL_ORDERS = ("rgb", "bgr")
PRECISIONS = ("fp32", "fp16", "int8")
PAD_STAGES = ("normalized", "raw")
# The mmdeploy SDK model files a camera bundle may carry beside end2end.onnx.
SDK_FILES = ("deploy.json", "pipeline.json", "detail.json")


@dataclass(frozen=True)
class CameraInputSpec:
    """The engine input tensor ``[1, 3, height, width]`` float32."""

    height: int = spec_field(Integer(lo=1, hi=16384), "network input height, pixels (the "
                             "padded size when the engine is static; the largest expected "
                             "when dynamic_shape)")
    width: int = spec_field(Integer(lo=1, hi=16384), "network input width, pixels")
    channel_order: str = spec_field(Choice(CHANNEL_ORDERS), "channel order of the engine "
                                    "input (rgb: the image was converted from OpenCV's bgr)",
                                    default="rgb")
    dynamic_shape: bool = spec_field(Boolean(), "the engine takes any H, W (keep-ratio "
                                     "resize padded to a divisor); false: exactly height x "
                                     "width", default=False)

    def __post_init__(self) -> None:
        check_fields(self, "input")


@dataclass(frozen=True)
class ResizeSpec:
    """mmcv ``Resize``: to ``scale`` (w, h), or within it keeping the aspect ratio."""

    scale: Tuple[int, int] = spec_field(PositiveInts(2, "[w, h] positive integers"),
                                        "target (w, h), pixels (mmdet 3.x Resize scale)")
    keep_ratio: bool = spec_field(Boolean(), "mmcv.imrescale: scale factor = min(long/long "
                                  "edge, short/short edge), new size int(w*s+0.5); false: "
                                  "mmcv.imresize to exactly scale", default=True)
    interpolation: str = spec_field(Choice(("bilinear",)), "cv2.INTER_LINEAR",
                                    default="bilinear")

    def __post_init__(self) -> None:
        check_fields(self, "preprocessing.resize")


@dataclass(frozen=True)
class PadSpec:
    """Bottom/right padding of the normalised image (mmdet 3.x DetDataPreprocessor)."""

    size_divisor: Optional[int] = spec_field(Nullable(Integer(lo=1)), "pad H and W up to a "
                                             "multiple of this (pad_size_divisor)",
                                             default=None)
    size: Optional[Tuple[int, int]] = spec_field(
        Nullable(PositiveInts(2, "[w, h] positive integers")), "pad to exactly (w, h)",
        default=None)
    pad_val: float = spec_field(Number(), "value of the padded pixels (stage normalized: "
                                "DetDataPreprocessor pad_value, 0; stage raw: a 0-255 pixel "
                                "value, e.g. 114)", default=0.0)
    stage: str = spec_field(Choice(PAD_STAGES), "normalized: pad after (x-mean)/std (mmdet "
                            "3.x data_preprocessor pad_size_divisor); raw: pad the resized "
                            "image before normalising (a Pad transform of the test_pipeline)",
                            default="normalized")

    def __post_init__(self) -> None:
        check_fields(self, "preprocessing.pad")
        if (self.size_divisor is None) == (self.size is None):
            raise SpecError("preprocessing.pad needs exactly one of size_divisor and size")


@dataclass(frozen=True)
class NormalizeSpec:
    """(x - mean) / std per channel, after the optional bgr -> rgb swap."""

    mean: Tuple[float, float, float] = spec_field(Numbers(3), "per-channel mean, in the "
                                                  "order after to_rgb (0-255 pixel values)")
    std: Tuple[float, float, float] = spec_field(Numbers(3, positive=True),
                                                 "per-channel std, same order")
    to_rgb: bool = spec_field(Boolean(), "swap OpenCV's bgr to rgb first (bgr_to_rgb)",
                              default=True)

    def __post_init__(self) -> None:
        check_fields(self, "preprocessing.normalize")


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize -> bgr->rgb -> normalise -> pad -> NCHW float32 (mmdet 3.x test order)."""

    resize: ResizeSpec = spec_field(Section(ResizeSpec), "Resize of the test pipeline")
    normalize: NormalizeSpec = spec_field(Section(NormalizeSpec), "data_preprocessor mean/std")
    pad: Optional[PadSpec] = spec_field(Nullable(Section(PadSpec)), "padding (absent: none)",
                                        default=None)

    def __post_init__(self) -> None:
        check_fields(self, "preprocessing")


@dataclass(frozen=True)
class CameraPostprocessSpec:
    """What the runner applies to the engine's dets."""

    score_threshold: float = spec_field(Number(lo=0.0, hi=1.0), "keep detections with score "
                                        "> this (mmdeploy SDK ResizeBBox score_thr)",
                                        default=0.3)

    def __post_init__(self) -> None:
        check_fields(self, "postprocess")


@dataclass(frozen=True)
class NmsSpec:
    """The in-graph multiclass NMS the engine was exported with (information)."""

    iou_threshold: float = spec_field(Number(lo=0.0, hi=1.0), "ONNX NonMaxSuppression IoU",
                                      default=0.5)
    score_threshold: float = spec_field(Number(lo=0.0, hi=1.0), "ONNX NonMaxSuppression "
                                        "score threshold", default=0.05)
    pre_top_k: int = spec_field(Integer(lo=1, also=(-1,)), "candidates by max class score "
                                "before NMS (-1: all)", default=5000)
    keep_top_k: int = spec_field(Integer(lo=1), "detections kept after NMS (N of dets)",
                                 default=100)
    max_per_class: int = spec_field(Integer(lo=1), "NonMaxSuppression "
                                    "max_output_boxes_per_class", default=200)

    def __post_init__(self) -> None:
        check_fields(self, "engine.nms")


@dataclass(frozen=True)
class CameraEngineSpec:
    """Tensor names and precision of the engine."""

    input_name: str = spec_field(Text(), "engine input", default="input")
    output_names: Tuple[str, ...] = spec_field(Names("two distinct names (dets, labels)",
                                                     lambda v: len(v) == 2, min_items=2),
                                               "engine outputs: dets [1,N,5], labels [1,N]",
                                               default=("dets", "labels"))
    precision: str = spec_field(Choice(PRECISIONS), "numeric precision of the engine files",
                                default="fp32")
    nms: Optional[NmsSpec] = spec_field(Nullable(Section(NmsSpec)), "in-graph NMS settings",
                                        default=None)

    def __post_init__(self) -> None:
        check_fields(self, "engine")


@dataclass(frozen=True)
class CameraSpec:
    """Every number of a camera bundle (spec.yaml with ``modality: camera``)."""

    name: str = spec_field(Text(), "bundle name, e.g. camera_sim_3class")
    class_names: Tuple[str, ...] = spec_field(Names("a non-empty list of distinct names"),
                                              "class name per label index")
    input: CameraInputSpec = spec_field(Section(CameraInputSpec), "engine input tensor")
    preprocessing: PreprocessSpec = spec_field(Section(PreprocessSpec), "image -> input")
    postprocess: CameraPostprocessSpec = spec_field(Section(CameraPostprocessSpec),
                                                    "dets -> detections",
                                                    default=CameraPostprocessSpec())
    engine: CameraEngineSpec = spec_field(Section(CameraEngineSpec), "engine tensors",
                                          default=CameraEngineSpec())
    files: Dict[str, str] = spec_field(_FileHashes(), "bundle-relative path -> sha256 of "
                                       "every file, checked at load", factory=dict)
    notes: Optional[str] = spec_field(Nullable(Text(allow_empty=True)), "free text",
                                      default=None)
    source: Optional[str] = spec_field(Nullable(Text(allow_empty=True)),
                                       "where the spec came from (free text)", default=None)

    def __post_init__(self) -> None:
        check_fields(self, "")
        pre, inp = self.preprocessing, self.input
        fixed = not pre.resize.keep_ratio or (pre.pad is not None and pre.pad.size is not None)
        if not inp.dynamic_shape and fixed:
            out_w, out_h = self.static_input_wh()
            if (out_w, out_h) != (inp.width, inp.height):
                raise SpecError(
                    f"input is static {inp.width}x{inp.height} (w x h) but preprocessing gives "
                    f"{out_w}x{out_h}: use keep_ratio false, or pad.size [{inp.width}, "
                    f"{inp.height}], or set input.dynamic_shape true")
        if pre.normalize.to_rgb != (inp.channel_order == "rgb"):
            raise SpecError(f"preprocessing.normalize.to_rgb {pre.normalize.to_rgb} disagrees "
                            f"with input.channel_order {inp.channel_order!r}")

    def static_input_wh(self) -> Tuple[int, int]:
        """(w, h) of the input when it does not depend on the image (else the bound)."""
        pre = self.preprocessing
        w, h = pre.resize.scale
        if pre.pad is not None and pre.pad.size is not None:
            return pre.pad.size
        if pre.pad is not None and pre.pad.size_divisor:
            d = pre.pad.size_divisor
            return -(-w // d) * d, -(-h // d) * d
        return w, h

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def score_threshold(self) -> float:
        return self.postprocess.score_threshold

    @classmethod
    def from_dict(cls, data: Any, source: str = SPEC_FILE) -> "CameraSpec":
        """Check a parsed spec.yaml mapping and build the spec.

        Raises:
            SpecError: "<source>: <field> must be <expected>, got <value>", an unknown or
                missing key, another modality or a newer version.
        """
        if not isinstance(data, Mapping):
            raise SpecError(f"{source}: must be a YAML mapping, got {type(data).__name__}")
        body = dict(data)
        try:
            modality = body.pop("modality", None)
            if modality != MODALITY:
                raise invalid("modality", f"{MODALITY!r} for a camera spec", modality)
            version = body.pop("version", None)
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise invalid("version", f"an integer from 1 to {CAMERA_SPEC_VERSION}",
                              version)
            if version > CAMERA_SPEC_VERSION:
                raise SpecError(f"version {version} is newer than this admlops_ros reads "
                                f"(camera spec {CAMERA_SPEC_VERSION}); upgrade admlops_ros")
            return parse_section(cls, body, "")
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None

    def to_dict(self) -> Dict[str, Any]:
        """YAML-ready data: version and modality first."""
        out: Dict[str, Any] = {"version": CAMERA_SPEC_VERSION, "modality": MODALITY}
        out.update(dump_section(self))
        return out


@dataclass(frozen=True)
class CameraBundle:
    """A camera bundle directory: its spec and the absolute paths of its (verified) files."""

    root: Path
    spec: CameraSpec
    files: Dict[str, Path]

    @property
    def onnx_path(self) -> Optional[Path]:
        return next((p for r, p in self.files.items() if r.lower().endswith(".onnx")), None)

    @property
    def openvino_xml(self) -> Optional[Path]:
        return next((p for r, p in self.files.items() if r.lower().endswith(".xml")), None)

    @property
    def tensorrt_plan(self) -> Optional[Path]:
        return next((p for r, p in self.files.items()
                     if r.lower().endswith((".engine", ".plan"))), None)

    @property
    def has_sdk_files(self) -> bool:
        """deploy.json, pipeline.json and detail.json are there (an mmdeploy SDK model dir)."""
        return all((self.root / f).is_file() for f in SDK_FILES)

    def model_paths(self) -> Dict[str, Any]:
        """The mapping ``backends.create_backend`` takes (onnx, openvino_xml, tensorrt_plan)."""
        return {"onnx": self.onnx_path, "openvino_xml": self.openvino_xml,
                "tensorrt_plan": self.tensorrt_plan}


def is_camera_spec_data(data: Any) -> bool:
    """A parsed spec.yaml that declares ``modality: camera``."""
    return isinstance(data, Mapping) and data.get("modality") == MODALITY


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise SpecError(f"no {SPEC_FILE} at {path}: a camera bundle directory holds spec.yaml "
                        "(write one with `admlops camera-spec-from-config`)")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size} bytes is not a spec.yaml")
    try:
        return yaml.load(path.read_bytes().decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML nested too deeply to be a spec.yaml") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise SpecError(f"{path}: not valid YAML: a value cannot be read "
                        f"({type(exc).__name__})") from None


def read_camera_spec(path: Union[str, Path]) -> CameraSpec:
    """Parse and check a camera spec.yaml (a file, or a bundle directory holding one).

    Raises:
        SpecError: no such file, not YAML, not a camera spec, or an invalid value.
    """
    path = spec_path(path)
    data = _read_yaml(path)
    return CameraSpec.from_dict(data if data is not None else {}, source=str(path))


def write_camera_spec(spec: CameraSpec, path: Union[str, Path]) -> Path:
    """Write the spec as YAML; returns the path."""
    path = Path(path)
    path.write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None,
                                   width=100))
    return path


def load_camera_bundle(path: Union[str, Path], verify_hashes: bool = True) -> CameraBundle:
    """Load a camera bundle directory (or its spec.yaml), checking every listed file's sha256.

    Raises:
        SpecError: invalid spec, no engine listed, a listed file missing, or a hash mismatch.
    """
    path = spec_path(path)
    spec = read_camera_spec(path)
    return CameraBundle(path.parent, spec, verified_files(path, spec.files, verify_hashes))


def hash_camera_bundle(root: Union[str, Path], spec: CameraSpec) -> CameraBundle:
    """Hash the standard files present in ``root`` (engine, IR, SDK json) into spec.yaml.

    Returns the loaded (verified) bundle.
    """
    root = Path(root)
    rels = [ONNX_FILE, OPENVINO_XML, OPENVINO_XML[:-4] + ".bin", "end2end.engine"] + \
        list(SDK_FILES) + [r for r in spec.files]
    files = {r: sha256_file(root / r) for r in dict.fromkeys(rels) if (root / r).is_file()}
    write_camera_spec(dataclasses.replace(spec, files=files), root / SPEC_FILE)
    return load_camera_bundle(root)
