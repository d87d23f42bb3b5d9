"""Bundle directories on disk: read spec.yaml, load with sha256 checks, write, re-hash."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from admlops_ros.bundle.spec import REHASH_HINT, SPEC_FILE, ModelSpec, SpecError

LOG = logging.getLogger(__name__)

PathLike = Union[str, Path]
# Where write_bundle puts the engine files (relative to the bundle root).
ONNX_FILE = "end2end.onnx"
OPENVINO_XML = "openvino/end2end.xml"
TENSORRT_PLAN = "end2end.engine"
STANDARD_FILES = (ONNX_FILE, OPENVINO_XML, "openvino/end2end.bin", TENSORRT_PLAN)
ENGINE_SUFFIXES = (".onnx", ".xml", ".engine", ".plan")
MAX_SPEC_BYTES = 1 << 20  # a spec.yaml is a few kB; anything near this is not one
# The pure-Python loader on purpose: libyaml's CSafeLoader (7x faster) overflows the C stack on
# deeply nested input and kills the process (found by scripts/fuzz.py); this one raises
# RecursionError, which read_spec reports.
_SAFE_LOADER = yaml.SafeLoader


@dataclass(frozen=True)
class EngineBundle:
    """A bundle directory: its spec and the absolute paths of its (verified) files."""

    root: Path
    spec: ModelSpec
    files: Dict[str, Path]

    def _first(self, suffixes: Tuple[str, ...]) -> Optional[Path]:
        for rel, path in self.files.items():
            if rel.lower().endswith(suffixes):
                return path
        return None

    @property
    def onnx_path(self) -> Optional[Path]:
        return self._first((".onnx",))

    @property
    def openvino_xml(self) -> Optional[Path]:
        return self._first((".xml",))

    @property
    def tensorrt_plan(self) -> Optional[Path]:
        return self._first((".engine", ".plan"))


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def spec_path(path: PathLike) -> Path:
    """``path`` itself, or ``path/spec.yaml`` when it is a bundle directory."""
    p = Path(path)
    return p / SPEC_FILE if p.is_dir() else p


def read_spec(path: PathLike) -> ModelSpec:
    """Parse and check a spec.yaml (a file, or a bundle directory holding one).

    Raises:
        SpecError: no such file, not YAML text, or an invalid spec.
    """
    path = spec_path(path)
    if not path.is_file():
        raise SpecError(f"no {SPEC_FILE} at {path}: a bundle directory holds spec.yaml "
                        "(write one with `admlops spec-from-config CONFIG -o spec.yaml`)")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {path.stat().st_size} bytes is not a spec.yaml (at most "
                        f"{MAX_SPEC_BYTES}); give the bundle's spec.yaml")
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_SAFE_LOADER)
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                        "give the bundle's spec.yaml") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise SpecError(f"{path}: YAML nested too deeply to be a spec.yaml") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors raise these for tagged values (!!int 1.5, !!bool maybe, ...)
        raise SpecError(f"{path}: not valid YAML: a value cannot be read "
                        f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if isinstance(data, dict) and data.get("modality") == "camera":
        raise SpecError(f"{path}: a camera spec (modality: camera), not a lidar one; load it "
                        "with admlops_ros.bundle.camera_spec.load_camera_bundle or "
                        "CameraDetector.from_bundle")
    return ModelSpec.from_dict(data if data is not None else {}, source=str(path))


def write_spec(spec: ModelSpec, path: PathLike) -> Path:
    """Write a spec as YAML (the canonical form of ``ModelSpec.to_dict``); returns the path."""
    path = Path(path)
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=100)
    path.write_text(text)
    return path


def load_bundle(path: PathLike, verify_hashes: bool = True) -> EngineBundle:
    """Load a bundle directory (or its spec.yaml), checking every listed file's sha256.

    Raises:
        SpecError: invalid spec, a listed file missing, or a hash mismatch.
    """
    path = spec_path(path)
    spec = read_spec(path)
    return EngineBundle(path.parent, spec, verified_files(path, spec.files, verify_hashes))


def verified_files(path: Path, hashes: Mapping[str, str],
                   verify_hashes: bool = True) -> Dict[str, Path]:
    """The absolute paths of the files a spec.yaml at ``path`` lists (``hashes``: relative path
    -> sha256), each checked to exist and (``verify_hashes``) to have its hash; an engine
    (.onnx, .xml, .engine, .plan) must be among them. Shared by every modality's bundle.

    Raises:
        SpecError: no engine listed, a listed file missing, or a hash mismatch.
    """
    root = path.parent
    if not any(rel.lower().endswith(ENGINE_SUFFIXES) for rel in hashes):
        raise SpecError(f"{path}: files lists no engine (.onnx, .xml, .engine or .plan); "
                        f"put end2end.onnx in {root} and run `admlops bundle --rehash {root}`")
    files: Dict[str, Path] = {}
    for rel, expected in hashes.items():
        p = root / rel
        if not p.is_file():
            raise SpecError(f"{path}: files.{rel} is listed but {p} does not exist; copy it "
                            f"there or remove it from spec.yaml and {REHASH_HINT}")
        if verify_hashes:
            actual = sha256_file(p)
            if actual != expected:
                raise SpecError(f"{path}: sha256 mismatch for {rel}: spec.yaml expects "
                                f"{expected}, the file has {actual}; the file changed since the "
                                f"bundle was written ({REHASH_HINT})")
        files[rel] = p
    return files


def as_model_spec(spec: Union[ModelSpec, Mapping[str, Any]], source: str) -> ModelSpec:
    """A ModelSpec as given, or built from a spec.yaml mapping (its ``files`` are ignored)."""
    if isinstance(spec, ModelSpec):
        return spec
    return ModelSpec.from_dict({k: v for k, v in dict(spec).items() if k != "files"},
                               source=source)


def write_bundle(out_dir: PathLike, spec: Union[ModelSpec, Mapping[str, Any]],
                 onnx_path: PathLike, openvino_xml: Optional[PathLike] = None,
                 tensorrt_plan: Optional[PathLike] = None,
                 extra_files: Optional[Mapping[str, PathLike]] = None) -> EngineBundle:
    """Write a bundle: copy the engine files, hash them and write spec.yaml.

    Args:
        out_dir: bundle directory (created).
        spec: the spec, or a spec.yaml mapping; its ``files`` are replaced by the copies'.
        onnx_path: the mmdeploy ``end2end.onnx`` (copied to ``end2end.onnx``).
        openvino_xml: optional OpenVINO IR; its ``.bin`` beside it is copied too.
        tensorrt_plan: optional serialized TensorRT engine (GPU/TensorRT-version specific).
        extra_files: more files, relative destination -> source.

    Returns:
        The loaded (verified) bundle.

    Raises:
        SpecError: an invalid spec (before anything is copied) or a missing source file.
    """
    root = Path(out_dir)
    spec = as_model_spec(spec, "spec")
    copies: List[Tuple[str, Path]] = [(ONNX_FILE, Path(onnx_path))]
    if openvino_xml is not None:
        xml = Path(openvino_xml)
        copies += [(OPENVINO_XML, xml), (OPENVINO_XML[:-4] + ".bin", xml.with_suffix(".bin"))]
    if tensorrt_plan is not None:
        copies.append((TENSORRT_PLAN, Path(tensorrt_plan)))
    copies += [(rel, Path(src)) for rel, src in (extra_files or {}).items()]
    for rel, src in copies:
        if not src.is_file():
            raise SpecError(f"write_bundle: {src} (for {rel}) does not exist")
    root.mkdir(parents=True, exist_ok=True)
    files: Dict[str, str] = {}
    for rel, src in copies:
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != dst.resolve():
            shutil.copyfile(src, dst)
        files[rel] = sha256_file(dst)
    write_spec(dataclasses.replace(spec, files=files), root / SPEC_FILE)
    return load_bundle(root)


def update_file_hashes(bundle_dir: PathLike, rel_paths: Sequence[str]) -> Dict[str, str]:
    """Add or refresh the sha256 of the given bundle files in spec.yaml (others untouched).

    Returns the new ``files`` mapping.

    Raises:
        SpecError: invalid spec, or one of ``rel_paths`` does not exist.
    """
    path = spec_path(bundle_dir)
    spec = read_spec(path)
    files = dict(spec.files)
    for rel in rel_paths:
        p = path.parent / rel
        if not p.is_file():
            raise SpecError(f"{path}: cannot record files.{rel}: {p} does not exist")
        files[str(rel)] = sha256_file(p)
    write_spec(dataclasses.replace(spec, files=files), path)
    return files


def rehash_bundle(bundle_dir: PathLike) -> Dict[str, str]:
    """Recompute the sha256 of every listed file (and add standard files present).

    Rewrites spec.yaml in place in the current format (comments are not kept). Returns the new
    ``files``.

    Raises:
        SpecError: invalid spec, or a listed file is missing.
    """
    path = spec_path(bundle_dir)
    spec = read_spec(path)
    root = path.parent
    rels = list(spec.files) + [r for r in STANDARD_FILES
                               if r not in spec.files and (root / r).is_file()]
    files: Dict[str, str] = {}
    for rel in rels:
        p = root / rel
        if not p.is_file():
            raise SpecError(f"{path}: files.{rel} is listed but {p} does not exist; "
                            "remove it from spec.yaml or put the file back")
        files[rel] = sha256_file(p)
        if spec.files.get(rel) not in (None, files[rel]):
            LOG.info("%s: %s changed, new sha256 %s", path, rel, files[rel])
    write_spec(dataclasses.replace(spec, files=files), path)
    return files
