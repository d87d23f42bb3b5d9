"""TensorRT plan cache: plans keyed by compute capability, TensorRT version and precision.

A serialized TensorRT plan only loads where it was built (same TensorRT release, same compute
capability), so a bundle keeps one plan per key next to its ONNX:

    <bundle>/tensorrt/end2end.sm86.trt8.6.1.fp16.plan
    <bundle>/tensorrt/end2end.sm86.trt8.6.1.fp16.json   (sidecar: full key + ONNX sha256)
    <bundle>/tensorrt/end2end.sm86.trt8.6.1.int8.calib  (int8 only: TensorRT calibration cache)

Compatibility rules (`inspect_cache`):
- TensorRT version: major.minor.patch must be equal. TensorRT refuses plans of another release
  ("serialization version mismatch"), patch releases included; the fourth number (build /
  pip `.postN`) is ignored. Version-compatible plans (TensorRT 8.6 lean runtime) are not used.
- Compute capability: must be equal (sm86 plans do not load on sm89 or sm75). Hardware-
  compatible plans are not used.
- Same compute capability, different GPU model (e.g. RTX 3090 vs A40, both sm86): TensorRT loads
  the plan but warns that tactics were timed on another device; accepted with a warning, or
  rejected (and rebuilt if allowed) with `strict_gpu_model=True`.
- Precision (fp32 / fp16 / int8) and the voxel profile (min/opt/max from spec.yaml) must be
  equal.
- int8: a build request (calibration data given) also needs the plan's calibration data sha256
  and fp32 layer list to be equal; a running node (no calibration data) takes any int8 plan.
  The calibration cache beside the plan is reused by rebuilds (calibration runs once) while the
  sidecar vouches for it: same calibration data, same ONNX, same cache bytes. Any other
  calibration cache is deleted before the build.
- The ONNX sha256 recorded at build time must equal the bundle's current end2end.onnx (a plan
  of a replaced ONNX is stale).
A plan counts only with its sidecar; the sidecar is written last, atomically, so a crashed build
leaves nothing selectable. Builds run under an fcntl lock on `<cache_dir>/.build.lock`.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import importlib
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple, Union

from admlops_ros.backends import gpu_info, tensorrt_calibration
from admlops_ros.bundle.files import sha256_file
from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
PLAN_STEM = "end2end"
PLAN_DIR = "tensorrt"
ONNX_FILE = "end2end.onnx"
LOCK_FILE = ".build.lock"
SIDECAR_FORMAT = 1
DEFAULT_LOCK_TIMEOUT_S = 1800.0  # a PointPillars fp16 build takes minutes on small GPUs
_LOCK_POLL_S = 0.2

# build_fn(onnx_path, plan_path, min_voxels, opt_voxels, max_voxels, fp16=..[, workspace=bytes]
#          [, int8=True, calib_dir=.., calib_cache=.., keep_fp32=[..]])
# (backends.tensorrt_backend.build_engine_from_onnx)
BuildFn = Callable[..., Any]


class EngineCacheError(AdmlopsError):
    """No usable plan, a lock not obtained, or a key that cannot be formed (names GPU, versions, fix)."""


@dataclass(frozen=True)
class PlanKey:
    """What a TensorRT plan was built for (or what this machine needs).

    Attributes:
        compute_capability: "major.minor", e.g. "8.6".
        trt_version: "major.minor.patch", e.g. "8.6.1".
        precision: "fp32", "fp16" or "int8".
        onnx_sha256: sha256 of the ONNX the plan is built from.
        profile: (min, opt, max) number of voxels of the optimization profile.
        gpu_name: GPU model name (informational unless strict_gpu_model).
        calibration_sha256: int8: sha256 of the calibration data
            (tensorrt_calibration.CalibrationData.sha256); "" in the key of a running node,
            which accepts any calibration.
        keep_fp32: int8: layer-name substrings kept in fp32 (compared only when
            calibration_sha256 is set).
    """

    compute_capability: str
    trt_version: str
    precision: str
    onnx_sha256: str
    profile: Tuple[int, int, int]
    gpu_name: str = ""
    calibration_sha256: str = ""
    keep_fp32: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineCacheError("precision %r is not one of %s" % (self.precision, PRECISIONS))
        object.__setattr__(self, "keep_fp32", tuple(str(s) for s in self.keep_fp32))
        if self.precision != "int8" and (self.calibration_sha256 or self.keep_fp32):
            raise EngineCacheError("calibration data and fp32 layers belong to int8 plans, not "
                                   "%s" % self.precision)
        gpu_info.sm_tag(self.compute_capability)
        object.__setattr__(self, "trt_version", gpu_info.normalize_trt_version(self.trt_version))
        object.__setattr__(self, "profile", tuple(int(v) for v in self.profile))
        if len(self.profile) != 3 or not 0 < self.profile[0] <= self.profile[1] <= self.profile[2]:
            raise EngineCacheError("TensorRT profile %r must be (min, opt, max) with "
                                   "0 < min <= opt <= max voxels" % (self.profile,))

    @property
    def sm_tag(self) -> str:
        """"sm86"."""
        return gpu_info.sm_tag(self.compute_capability)

    def plan_name(self, stem: str = PLAN_STEM) -> str:
        """File name of the plan, e.g. end2end.sm86.trt8.6.1.fp16.plan."""
        return "%s.%s.trt%s.%s.plan" % (stem, self.sm_tag, self.trt_version, self.precision)

    def describe(self) -> str:
        """One-line human description."""
        gpu = ("%s, " % self.gpu_name) if self.gpu_name else ""
        calibration = ""
        if self.calibration_sha256:
            calibration = ", calibration data %s..., fp32 layers %s" % (
                self.calibration_sha256[:12], _layers_text(self.keep_fp32))
        return "%s%s, TensorRT %s, %s, profile %d/%d/%d voxels%s" % (
            gpu, self.sm_tag, self.trt_version, self.precision, *self.profile, calibration)

    def to_json(self) -> dict:
        """Sidecar content."""
        data = asdict(self)
        data["profile"] = {"min": self.profile[0], "opt": self.profile[1], "max": self.profile[2]}
        return data

    @classmethod
    def from_json(cls, data: dict) -> "PlanKey":
        """Inverse of to_json.

        Raises:
            EngineCacheError: a field is missing or malformed (names it).
        """
        try:
            prof = data["profile"]
            return cls(str(data["compute_capability"]), str(data["trt_version"]),
                       str(data["precision"]), str(data["onnx_sha256"]),
                       (prof["min"], prof["opt"], prof["max"]), str(data.get("gpu_name", "")),
                       str(data.get("calibration_sha256", "")),
                       tuple(data.get("keep_fp32", ())))
        except (KeyError, TypeError, ValueError, gpu_info.GpuInfoError) as exc:
            raise EngineCacheError("sidecar field missing or malformed: %r" % (exc,)) from exc


@dataclass
class CacheDecision:
    """Outcome of looking for a plan.

    Attributes:
        wanted: the key of this machine.
        plan: the selected plan, None when no plan fits.
        rejected: (plan file name, reason) for every plan present that does not fit.
        warnings: accepted-but-noteworthy facts (another GPU model of the same capability).
    """

    wanted: PlanKey
    plan: Optional[Path] = None
    rejected: List[Tuple[str, str]] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)


def _layers_text(keep_fp32: Tuple[str, ...]) -> str:
    return ", ".join(keep_fp32) if keep_fp32 else "none"


def sidecar_path(plan: Path) -> Path:
    """end2end.sm86.trt8.6.1.fp16.plan -> end2end.sm86.trt8.6.1.fp16.json."""
    return plan.with_suffix(".json")


def calibration_cache_path(plan: Path) -> Path:
    """end2end.sm86.trt8.6.1.int8.plan -> end2end.sm86.trt8.6.1.int8.calib."""
    return plan.with_suffix(".calib")


def read_sidecar(plan: Path) -> PlanKey:
    """The key a plan was built for, from its sidecar.

    Raises:
        EngineCacheError: sidecar missing, unreadable or malformed.
    """
    side = sidecar_path(plan)
    try:
        with open(side) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise EngineCacheError("sidecar %s unreadable: %s" % (side.name, exc)) from exc
    return PlanKey.from_json(data.get("key", data))


def _mismatch(found: PlanKey, wanted: PlanKey, strict_gpu_model: bool) -> Optional[str]:
    if found.trt_version != wanted.trt_version:
        return ("built with TensorRT %s, this machine has TensorRT %s (plans only load in the "
                "TensorRT release that built them)" % (found.trt_version, wanted.trt_version))
    if found.compute_capability != wanted.compute_capability:
        return ("built for compute capability %s (%s), this GPU %sis %s" % (
            found.compute_capability, found.gpu_name or "unknown GPU",
            ("'%s' " % wanted.gpu_name) if wanted.gpu_name else "", wanted.compute_capability))
    if found.precision != wanted.precision:
        return "precision %s, wanted %s" % (found.precision, wanted.precision)
    if found.onnx_sha256 != wanted.onnx_sha256:
        return ("stale: built from ONNX sha256 %s..., the bundle's %s is %s..."
                % (found.onnx_sha256[:12], ONNX_FILE, wanted.onnx_sha256[:12]))
    if found.profile != wanted.profile:
        return "profile %d/%d/%d voxels, spec.yaml wants %d/%d/%d" % (*found.profile,
                                                                       *wanted.profile)
    if wanted.calibration_sha256 and found.calibration_sha256 != wanted.calibration_sha256:
        return ("calibrated with other data (sha256 %s..., the calibration directory's is "
                "%s...)" % (found.calibration_sha256[:12] or "unknown",
                            wanted.calibration_sha256[:12]))
    if wanted.calibration_sha256 and found.keep_fp32 != wanted.keep_fp32:
        return "fp32 layers %s, wanted %s" % (_layers_text(found.keep_fp32),
                                              _layers_text(wanted.keep_fp32))
    if strict_gpu_model and found.gpu_name != wanted.gpu_name:
        return ("built on GPU model '%s', this is '%s' (same compute capability; rejected "
                "because strict_gpu_model is on)" % (found.gpu_name, wanted.gpu_name))
    return None


def inspect_cache(cache_dir: Union[str, Path], key: PlanKey,
                  strict_gpu_model: bool = False, stem: str = PLAN_STEM) -> CacheDecision:
    """Find the plan in `cache_dir` that fits `key`, and why every other plan does not.

    Args:
        cache_dir: directory of plans and sidecars (missing directory = empty cache).
        key: this machine's key.
        strict_gpu_model: also require the same GPU model name.
        stem: plan file stem.

    Returns:
        CacheDecision; the exact file name for `key` is preferred when several fit.
    """
    decision = CacheDecision(wanted=key)
    cache = Path(cache_dir)
    if not cache.is_dir():
        return decision
    exact = cache / key.plan_name(stem)
    plans = sorted(cache.glob("%s.*.plan" % stem), key=lambda p: (p != exact, p.name))
    for plan in plans:
        try:
            found = read_sidecar(plan)
        except EngineCacheError as exc:
            decision.rejected.append((plan.name, "%s: cannot tell what it was built for" % exc))
            continue
        reason = _mismatch(found, key, strict_gpu_model)
        if reason is not None:
            decision.rejected.append((plan.name, reason))
            continue
        if decision.plan is None:
            decision.plan = plan
            if found.gpu_name and key.gpu_name and found.gpu_name != key.gpu_name:
                decision.warnings.append(
                    "%s was built on '%s', running on '%s' (same compute capability %s): it "
                    "loads, but TensorRT tuned it for the other GPU; rebuild for best latency"
                    % (plan.name, found.gpu_name, key.gpu_name, key.compute_capability))
    return decision


def select_plan(cache_dir: Union[str, Path], key: PlanKey,
                strict_gpu_model: bool = False) -> Optional[Path]:
    """The plan in `cache_dir` that fits `key`, or None (rules in the module docstring)."""
    return inspect_cache(cache_dir, key, strict_gpu_model).plan


CALIB_DIR_PLACEHOLDER = "CALIB_DIR"


def rebuild_command(bundle_root: Union[str, Path], precision: str,
                    cache_dir: Optional[Union[str, Path]] = None,
                    calib_dir: Optional[Union[str, Path]] = None) -> str:
    """The exact shell command that builds the plan for this machine.

    For int8 without `calib_dir` the command says CALIB_DIR: the directory of calibration
    batches (tensorrt_calibration), which only the person building knows.
    """
    cmd = ["admlops", "build-engine", str(bundle_root), "--target", "tensorrt"]
    if precision == "fp16":
        cmd.append("--fp16")
    if precision == "int8":
        cmd += ["--int8", "--calib-dir", str(calib_dir or CALIB_DIR_PLACEHOLDER)]
    if cache_dir is not None and Path(cache_dir) != Path(bundle_root) / PLAN_DIR:
        cmd += ["--cache-dir", str(cache_dir)]
    return " ".join(shlex.quote(c) for c in cmd)


def _holder_text(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown process"
    if not info:
        return "an unknown process"
    return "pid %s on %s since %s (%s)" % (info.get("pid"), info.get("host"),
                                          info.get("since"), info.get("what", ""))


@contextlib.contextmanager
def build_lock(cache_dir: Union[str, Path], timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
               what: str = "TensorRT build") -> Iterator[Path]:
    """Hold the cache directory's build lock (fcntl.flock, released when the holder dies).

    Args:
        cache_dir: the plan directory (created if missing).
        timeout_s: how long to wait for another holder, seconds.
        what: written into the lock file so a waiting process can say who holds it.

    Raises:
        EngineCacheError: timed out (names the holder) or the directory is not writable.
    """
    cache = Path(cache_dir)
    lock_path = cache / LOCK_FILE
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(lock_path), os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as exc:
        raise EngineCacheError("cannot create the build lock %s (%s): make the directory "
                               "writable or pass another cache directory (--cache-dir / "
                               "parameter cache_dir)" % (lock_path, exc)) from exc
    try:
        deadline = time.monotonic() + timeout_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder_text(lock_path)
                if time.monotonic() >= deadline:
                    raise EngineCacheError(
                        "TensorRT build lock %s still held by %s after %.0f s: wait for that "
                        "build to finish (or stop it); the lock frees itself when its holder "
                        "exits" % (lock_path, holder, timeout_s)) from None
                if not told:
                    LOG.info("waiting for the build lock %s held by %s", lock_path, holder)
                    told = True
                time.sleep(_LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "what": what,
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
            "argv": " ".join(sys.argv)}).encode(), 0)
        try:
            yield lock_path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _default_build_fn() -> BuildFn:
    module = importlib.import_module("admlops_ros.backends.tensorrt_backend")
    return module.build_engine_from_onnx


def _stale_calibration_cache(plan: Path, key: PlanKey) -> Optional[str]:
    """Why the calibration cache beside `plan` must not be reused for `key` (None: reuse it)."""
    cache = calibration_cache_path(plan)
    try:
        data = json.loads(sidecar_path(plan).read_text())
        found = PlanKey.from_json(data.get("key", data))
        recorded = (data.get("calibration") or {}).get("cache_sha256")
    except (OSError, ValueError, AttributeError, EngineCacheError):
        return "no readable sidecar of %s says which data it came from" % plan.name
    if found.calibration_sha256 != key.calibration_sha256:
        return "it came from other calibration data (sha256 %s...)" % (
            found.calibration_sha256[:12] or "unknown")
    if found.onnx_sha256 != key.onnx_sha256:
        return "it came from another ONNX (sha256 %s...)" % found.onnx_sha256[:12]
    if recorded != sha256_file(cache):
        return "its bytes are not the ones the sidecar recorded"
    return None


def _calibration_kwargs(plan: Path, key: PlanKey,
                        calib_dir: Optional[Union[str, Path]]) -> Tuple[dict, bool]:
    """build_fn arguments of an int8 build, after deleting a calibration cache not vouched for.

    Returns:
        (kwargs, whether an existing calibration cache is reused).
    """
    if calib_dir is None or not key.calibration_sha256:
        raise EngineCacheError("an int8 plan is built from calibration data: %s" % (
            rebuild_command(plan.parent.parent, "int8", plan.parent)))
    cache = calibration_cache_path(plan)
    reused = cache.is_file()
    if reused:
        reason = _stale_calibration_cache(plan, key)
        if reason is not None:
            LOG.info("deleting calibration cache %s (%s): calibrating again", cache.name, reason)
            cache.unlink()
            reused = False
    return {"int8": True, "calib_dir": str(calib_dir), "calib_cache": str(cache),
            "keep_fp32": list(key.keep_fp32)}, reused


def build_plan(cache_dir: Union[str, Path], key: PlanKey, onnx_path: Union[str, Path],
               build_fn: Optional[BuildFn] = None, workspace_bytes: Optional[int] = None,
               stem: str = PLAN_STEM, calib_dir: Optional[Union[str, Path]] = None) -> Path:
    """Build the plan for `key` from `onnx_path` (caller holds the lock); sidecar last.

    Args:
        calib_dir: int8: the calibration batches (`key.calibration_sha256` is their hash).

    Raises:
        EngineCacheError: the builder failed (the half-written plan is removed), or an int8
            key without calibration data.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    plan = cache / key.plan_name(stem)
    tmp = plan.with_name(".%s.%d.tmp" % (plan.name, os.getpid()))
    side_tmp = tmp.with_suffix(".json.tmp")
    build = build_fn or _default_build_fn()
    kwargs: dict = {"fp16": key.precision == "fp16"}
    reused = False
    if key.precision == "int8":
        calib_kwargs, reused = _calibration_kwargs(plan, key, calib_dir)
        kwargs.update(calib_kwargs)
    if workspace_bytes is not None:
        kwargs["workspace"] = int(workspace_bytes)
    LOG.info("building TensorRT plan %s (%s) from %s", plan.name, key.describe(), onnx_path)
    start = time.monotonic()
    try:
        build(str(onnx_path), str(tmp), key.profile[0], key.profile[1], key.profile[2], **kwargs)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise EngineCacheError("the TensorRT builder wrote no plan to %s" % tmp)
        side = {"format": SIDECAR_FORMAT, "key": key.to_json(), "plan": plan.name,
                "plan_sha256": sha256_file(tmp), "onnx": os.path.basename(str(onnx_path)),
                "built_at": datetime.datetime.now().isoformat(timespec="seconds"),
                "built_on": socket.gethostname()}
        if key.precision == "int8":
            calib_cache = calibration_cache_path(plan)
            if not calib_cache.is_file():
                raise EngineCacheError("the int8 build wrote no calibration cache %s"
                                       % calib_cache)
            side["calibration"] = {
                "dir": str(calib_dir), "sha256": key.calibration_sha256,
                "cache": calib_cache.name, "cache_sha256": sha256_file(calib_cache),
                "cache_reused": reused}
        side_tmp.write_text(json.dumps(side, indent=2) + "\n")
        if sidecar_path(plan).exists():  # never pair an old sidecar with the new plan
            sidecar_path(plan).unlink()
        os.replace(str(tmp), str(plan))
        os.replace(str(side_tmp), str(sidecar_path(plan)))
    except EngineCacheError:
        raise
    except Exception as exc:
        raise EngineCacheError("building %s from %s failed: %s" % (plan.name, onnx_path,
                                                                   exc)) from exc
    finally:
        for leftover in (tmp, side_tmp):
            if leftover.exists():
                leftover.unlink()
    LOG.info("built %s in %.1f s", plan, time.monotonic() - start)
    return plan


def import_plan(cache_dir: Union[str, Path], key: PlanKey, plan_src: Union[str, Path],
                stem: str = PLAN_STEM, source: str = "imported") -> Path:
    """Put a plan built elsewhere on THIS machine (e.g. mmdeploy's end2end.engine) in the cache.

    Args:
        cache_dir: plan directory.
        key: the key it was built for: this machine's GPU / TensorRT, the precision used and
            the sha256 of the ONNX it was built from.
        plan_src: the serialized engine.
        source: recorded in the sidecar (e.g. "mmdeploy tools/deploy.py").

    Raises:
        EngineCacheError: plan_src missing.
    """
    src = Path(plan_src)
    if not src.is_file():
        raise EngineCacheError("no TensorRT plan at %s to import" % src)
    if key.precision == "int8":
        raise EngineCacheError("int8 plans are not imported (their calibration data is "
                               "unknown): build one with `%s`"
                               % rebuild_command(Path(cache_dir).parent, "int8", cache_dir))

    def copy(onnx_path: str, plan_path: str, *args: Any, **kwargs: Any) -> None:
        shutil.copyfile(str(src), plan_path)

    with build_lock(cache_dir, what="importing %s" % src):
        plan = build_plan(cache_dir, key, src, copy, stem=stem)
    side = sidecar_path(plan)
    data = json.loads(side.read_text())
    data["source"] = source
    side.write_text(json.dumps(data, indent=2) + "\n")
    return plan


def _no_plan_message(decision: CacheDecision, cache_dir: Path, bundle_root: Path,
                     allow_build: bool) -> str:
    key = decision.wanted
    lines = ["no usable TensorRT plan in %s for this machine: %s" % (cache_dir, key.describe())]
    if decision.rejected:
        lines.append("plans found:")
        lines += ["  %s: %s" % item for item in decision.rejected]
    else:
        lines.append("no plans found there")
    if not allow_build:
        lines.append("building from ONNX is not allowed here (parameter allow_build false)")
    elif key.precision == "int8":
        lines.append("an int8 plan is built only with calibration data, which was not given")
    lines.append("rebuild on this machine with:  %s" % rebuild_command(bundle_root,
                                                                        key.precision, cache_dir))
    if key.precision == "int8":
        lines.append("(%s: a directory of calibration batches NNNN.npz, written by `admlops "
                     "optimize` or tensorrt_calibration.write_calibration_batches)"
                     % CALIB_DIR_PLACEHOLDER)
    return "\n".join(lines)


def ensure_plan(cache_dir: Union[str, Path], key: PlanKey, onnx_path: Union[str, Path],
                allow_build: bool, build_fn: Optional[BuildFn] = None,
                bundle_root: Optional[Union[str, Path]] = None, force: bool = False,
                strict_gpu_model: bool = False, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                workspace_bytes: Optional[int] = None,
                calib_dir: Optional[Union[str, Path]] = None) -> Path:
    """The plan for `key`: selected from the cache, else built from ONNX when allowed.

    Args:
        cache_dir: plan directory.
        key: this machine's key (see `machine_key`).
        onnx_path: the bundle's end2end.onnx.
        allow_build: build when no plan fits (under the lock; another process that built it
            meanwhile is picked up instead of building twice).
        build_fn: the builder (default backends.tensorrt_backend.build_engine_from_onnx).
        bundle_root: for the rebuild command in messages (default: cache_dir's parent).
        force: rebuild even when a plan fits (provisioning).
        strict_gpu_model: reject plans of another GPU model of the same capability.
        lock_timeout_s: how long to wait for another builder, seconds.
        workspace_bytes: TensorRT builder workspace (None = builder default).
        calib_dir: int8: calibration batches (needed to build; `key.calibration_sha256` is
            their hash).

    Raises:
        EngineCacheError: no plan fits and building is not allowed or failed (names the GPU, the
            versions found and needed, and the rebuild command).
    """
    cache = Path(cache_dir)
    root = Path(bundle_root) if bundle_root is not None else cache.parent
    decision = inspect_cache(cache, key, strict_gpu_model)
    if decision.plan is not None and not force:
        for warning in decision.warnings:
            LOG.warning(warning)
        LOG.info("using TensorRT plan %s", decision.plan)
        return decision.plan
    if not allow_build or (key.precision == "int8" and calib_dir is None):
        raise EngineCacheError(_no_plan_message(decision, cache, root, allow_build))
    for name, reason in decision.rejected:
        LOG.info("not using %s: %s", name, reason)
    with build_lock(cache, lock_timeout_s, what="building %s" % key.plan_name()):
        if not force:
            decision = inspect_cache(cache, key, strict_gpu_model)
            if decision.plan is not None:
                LOG.info("another process built %s meanwhile: using it", decision.plan.name)
                return decision.plan
        return build_plan(cache, key, onnx_path, build_fn, workspace_bytes, calib_dir=calib_dir)


def machine_key(onnx_sha256: str, profile: Tuple[int, int, int], precision: str,
                device_index: int = 0, bundle_root: Optional[Union[str, Path]] = None,
                calibration_sha256: str = "", keep_fp32: Tuple[str, ...] = ()) -> PlanKey:
    """This machine's key from the GPU and the importable TensorRT.

    Args:
        calibration_sha256, keep_fp32: int8 build requests (see PlanKey).

    Raises:
        EngineCacheError: no NVIDIA GPU or no TensorRT (TensorRT runs only on NVIDIA machines).
    """
    gpu = gpu_info.query_gpu(device_index)
    trt = gpu_info.tensorrt_version()
    if gpu is None or trt is None:
        missing = " and ".join(m for m, absent in (("an NVIDIA GPU (CUDA device %d)"
                                                    % device_index, gpu is None),
                                                   ("the tensorrt Python module", trt is None))
                               if absent)
        raise EngineCacheError("the TensorRT backend needs %s; this machine has none. Use "
                               "backend onnxruntime or openvino here, or run in the admlops "
                               "GPU container (docs/deployment.md)%s" % (
                                   missing, "" if bundle_root is None else
                                   "; bundle %s" % bundle_root))
    return PlanKey(gpu.compute_capability, trt, precision, onnx_sha256, profile, gpu.name,
                   calibration_sha256, keep_fp32)


def spec_profile(spec: Any) -> Tuple[int, int, int]:
    """(min, opt, max) voxels from a ModelSpec (attributes) or a spec.yaml mapping.

    Raises:
        EngineCacheError: engine.tensorrt_profile missing or incomplete.
    """
    def get(obj: Any, name: str) -> Any:
        if isinstance(obj, dict):
            return obj.get(name)
        return getattr(obj, name, None)

    prof = get(get(spec, "engine"), "tensorrt_profile")
    if prof is None:
        prof = get(spec, "tensorrt_profile")
    values = tuple(get(prof, k) for k in ("min", "opt", "max")) if prof is not None else ()
    if len(values) != 3 or any(v is None for v in values):
        raise EngineCacheError("spec.yaml has no engine.tensorrt_profile {min, opt, max}: add "
                               "it (kitti-32x4: {min: 2000, opt: 5000, max: 9000})")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _load_bundle(bundle: Any) -> Tuple[Path, Any]:
    if isinstance(bundle, (str, Path)):
        from admlops_ros.bundle.files import load_bundle
        bundle = load_bundle(bundle)
    return Path(bundle.root), bundle.spec


def resolve_tensorrt_plan(bundle: Any, precision: str = "fp32", allow_build: bool = False,
                          cache_dir: Optional[Union[str, Path]] = None, device_index: int = 0,
                          force: bool = False, strict_gpu_model: bool = False,
                          lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
                          workspace_bytes: Optional[int] = None,
                          build_fn: Optional[BuildFn] = None,
                          key: Optional[PlanKey] = None,
                          calib_dir: Optional[Union[str, Path]] = None,
                          keep_fp32: Optional[Tuple[str, ...]] = None) -> Path:
    """What the node calls at start: the plan for this GPU / TensorRT / precision.

    `build_only` provisioning = this with allow_build=True, then exit.

    Args:
        bundle: an EngineBundle (spec.load_bundle) or a bundle directory.
        precision: "fp32", "fp16" or "int8".
        allow_build: build from the bundle's ONNX when no plan fits.
        cache_dir: plan directory (default <bundle>/tensorrt; use a writable one when the bundle
            is mounted read-only).
        device_index: CUDA device.
        force, strict_gpu_model, lock_timeout_s, workspace_bytes, build_fn: see ensure_plan.
        key: override the machine key (tests; default from gpu_info).
        calib_dir: int8: calibration batches; checked and hashed first (before the GPU), and
            a plan of other calibration data is rebuilt. Without it any int8 plan is taken.
        keep_fp32: int8: layer-name substrings kept in fp32 (default
            tensorrt_calibration.DEFAULT_KEEP_FP32).

    Raises:
        EngineCacheError: see ensure_plan and machine_key.
        CalibrationError: calib_dir missing, empty or malformed.
    """
    root, spec = _load_bundle(bundle)
    onnx_path = root / ONNX_FILE
    if not onnx_path.is_file():
        raise EngineCacheError("bundle %s has no %s to build TensorRT plans from"
                               % (root, ONNX_FILE))
    cache = Path(cache_dir) if cache_dir is not None else root / PLAN_DIR
    calibration_sha256 = ""
    keep: Tuple[str, ...] = ()
    if calib_dir is not None:
        if precision != "int8":
            raise EngineCacheError("calibration data is for int8 plans, not %s" % precision)
        calibration_sha256 = tensorrt_calibration.open_calibration_dir(calib_dir).sha256
        keep = tuple(tensorrt_calibration.DEFAULT_KEEP_FP32 if keep_fp32 is None else keep_fp32)
    if key is None:
        key = machine_key(sha256_file(onnx_path), spec_profile(spec), precision, device_index,
                          root, calibration_sha256, keep)
    return ensure_plan(cache, key, onnx_path, allow_build, build_fn, root, force,
                       strict_gpu_model, lock_timeout_s, workspace_bytes, calib_dir)
