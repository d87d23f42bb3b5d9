"""TensorRT (>= 8.6) engine runner and ONNX -> plan builder; tensorrt is imported lazily.

Written against the documented TensorRT Python API: the name-based I/O API (num_io_tensors,
set_input_shape, set_tensor_address, execute_async_v3; TensorRT 8.5+, the only one in 10.x)
when present, the binding API of 8.x otherwise. Device buffers come from cuda-python (cudart)
or pycuda, whichever imports. INT8 plans use implicit quantization with an entropy calibrator
(IInt8EntropyCalibrator2; deprecated since TensorRT 10.1 in favour of explicit Q/DQ ONNX, still
supported). Not runnable on machines without an NVIDIA GPU.
"""
from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from admlops_ros.backends import tensorrt_calibration as calib
from admlops_ros.backends.base import Backend, BackendError, TensorInfo

LOG = logging.getLogger(__name__)

MIN_VERSION = (8, 6)
INSTALL_HINT = ("the TensorRT backend needs an NVIDIA GPU, TensorRT >= 8.6 with its Python "
                "package (`pip install tensorrt` or the JetPack python3-libnvinfer package) and "
                "`pip install cuda-python` (or pycuda); on CPU-only machines use backend "
                "'openvino' or 'onnxruntime'")


def import_tensorrt() -> Any:
    """Import ``tensorrt`` and check its version.

    Raises:
        BackendError: with installation instructions when missing or too old.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(f"cannot import tensorrt ({exc}): {INSTALL_HINT}") from exc
    version = tuple(int(p) for p in trt.__version__.split(".")[:2] if p.isdigit())
    if version < MIN_VERSION:
        raise BackendError(f"TensorRT {trt.__version__} is too old: mmdeploy engines need "
                           f">= {MIN_VERSION[0]}.{MIN_VERSION[1]} (ScatterND, dynamic shapes)")
    return trt


# ----------------------------------------------------------------------------- CUDA memory
class _Cuda:
    """Minimal device memory / stream API over cuda-python's cudart or pycuda."""

    def __init__(self, device: int = 0) -> None:
        self.kind = ""
        self._ctx = None
        try:
            try:
                from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
            except ImportError:
                from cuda import cudart  # older cuda-python
            self.cudart = cudart
            self.kind = "cuda-python"
            self._check(cudart.cudaSetDevice(device))
            self.stream = self._check(cudart.cudaStreamCreate())
            return
        except ImportError:
            pass
        try:
            import pycuda.driver as cuda
        except ImportError as exc:
            raise BackendError(f"no CUDA Python bindings ({exc}): {INSTALL_HINT}") from exc
        cuda.init()
        self.cuda = cuda
        self.kind = "pycuda"
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        self.stream = cuda.Stream()

    def _check(self, result: Any) -> Any:
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise BackendError(f"CUDA runtime error {err}")
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        if self.kind == "pycuda":
            return self.stream.handle
        try:
            return int(self.stream)
        except TypeError:
            return int(self.stream.getPtr())

    def malloc(self, nbytes: int) -> Any:
        if self.kind == "pycuda":
            return self.cuda.mem_alloc(max(nbytes, 1))
        return self._check(self.cudart.cudaMalloc(max(nbytes, 1)))

    @staticmethod
    def ptr(buf: Any) -> int:
        return int(buf)

    def free(self, buf: Any) -> None:
        if self.kind == "pycuda":
            buf.free()
        else:
            self._check(self.cudart.cudaFree(buf))

    def htod(self, buf: Any, host: np.ndarray) -> None:
        if self.kind == "pycuda":
            self.cuda.memcpy_htod_async(buf, host, self.stream)
        else:
            self._check(self.cudart.cudaMemcpyAsync(
                buf, host.ctypes.data, host.nbytes,
                self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def dtoh(self, host: np.ndarray, buf: Any) -> None:
        if self.kind == "pycuda":
            self.cuda.memcpy_dtoh_async(host, buf, self.stream)
        else:
            self._check(self.cudart.cudaMemcpyAsync(
                host.ctypes.data, buf, host.nbytes,
                self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def synchronize(self) -> None:
        if self.kind == "pycuda":
            self.stream.synchronize()
        else:
            self._check(self.cudart.cudaStreamSynchronize(self.stream))

    def close(self) -> None:
        if self.kind == "pycuda":
            if self._ctx is not None:
                self._ctx.pop()
                self._ctx = None
        elif self.kind:
            self._check(self.cudart.cudaStreamDestroy(self.stream))
        self.kind = ""


def _load_plugins(trt: Any, logger: Any, plugins: Sequence[Union[str, Path]]) -> None:
    """Load plugin libraries (e.g. mmdeploy's libmmdeploy_tensorrt_ops.so) and the built-ins."""
    for lib in plugins:
        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise BackendError(f"cannot load TensorRT plugin library {lib}: {exc}") from exc
    trt.init_libnvinfer_plugins(logger, "")


# ----------------------------------------------------------------------------- runner
class TensorRTBackend(Backend):
    """Runs a serialized TensorRT engine (plan); dynamic inputs follow its profile 0.

    Args:
        plan_path: serialized engine (``end2end.engine``), built for this GPU and TensorRT.
        device: CUDA device index.
        plugins: plugin libraries to load first (mmdeploy v0.11-0.14 engines need
            ``libmmdeploy_tensorrt_ops.so`` for TRTBatchedBEVNMS).
        precision: the precision the plan was built with ("f32" or "f16"; informational).
        dynamic_axes: accepted so every backend takes the same options; the plan's profile
            says which axes are dynamic.
    """

    name = "tensorrt"

    def __init__(self, plan_path: Union[str, Path], device: int = 0,
                 plugins: Sequence[Union[str, Path]] = (), precision: str = "f32",
                 dynamic_axes: Optional[Any] = None) -> None:
        super().__init__()
        trt = import_tensorrt()
        self.trt = trt
        path = Path(plan_path)
        if not path.is_file():
            raise BackendError(f"tensorrt: no plan at {path}; build one with "
                               "build_engine_from_onnx()")
        self._logger = trt.Logger(trt.Logger.WARNING)
        _load_plugins(trt, self._logger, plugins)
        self._cuda = _Cuda(device)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            self._cuda.close()
            raise BackendError(f"tensorrt {trt.__version__} could not deserialize {path}: plans "
                               "only load on the GPU model and TensorRT version that built them; "
                               "rebuild it from the ONNX with build_engine_from_onnx()")
        self._context = self._engine.create_execution_context()
        self._named = hasattr(self._engine, "num_io_tensors") and \
            hasattr(self._context, "execute_async_v3")
        self._buffers: Dict[str, Tuple[Any, int]] = {}  # name -> (device buffer, capacity bytes)
        self.path = path
        self.precision = precision
        self._read_io()
        LOG.info("tensorrt %s: %s (%s API, %s buffers), profile %s", trt.__version__, path,
                 "name-based" if self._named else "binding", self._cuda.kind, self.profile)

    def _read_io(self) -> None:
        trt, eng = self.trt, self._engine
        if self._named:
            for i in range(eng.num_io_tensors):
                name = eng.get_tensor_name(i)
                shape = tuple(d if d >= 0 else None for d in eng.get_tensor_shape(name))
                info = TensorInfo(name, shape, np.dtype(trt.nptype(eng.get_tensor_dtype(name))))
                if eng.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    self.inputs.append(info)
                    if None in shape:
                        self.profile[name] = tuple(tuple(s) for s in
                                                   eng.get_tensor_profile_shape(name, 0))
                else:
                    self.outputs.append(info)
        else:
            self._binding_index: Dict[str, int] = {}
            for i in range(eng.num_bindings):
                name = eng.get_binding_name(i)
                self._binding_index[name] = i
                shape = tuple(d if d >= 0 else None for d in eng.get_binding_shape(i))
                info = TensorInfo(name, shape, np.dtype(trt.nptype(eng.get_binding_dtype(i))))
                if eng.binding_is_input(i):
                    self.inputs.append(info)
                    if None in shape:
                        self.profile[name] = tuple(tuple(s) for s in eng.get_profile_shape(0, i))
                else:
                    self.outputs.append(info)

    def _device_buffer(self, name: str, nbytes: int) -> Any:
        """The device buffer of a tensor, grown (never shrunk) to hold ``nbytes``."""
        buf, cap = self._buffers.get(name, (None, 0))
        if buf is None or cap < nbytes:
            if buf is not None:
                self._cuda.free(buf)
            cap = max(nbytes, int(cap * 1.5))
            buf = self._cuda.malloc(cap)
            self._buffers[name] = (buf, cap)
        return buf

    def _check_profile(self, hosts: Dict[str, np.ndarray]) -> None:
        for name, (lo, _, hi) in self.profile.items():
            shape = hosts[name].shape
            if any(not a <= d <= b for d, a, b in zip(shape, lo, hi)):
                raise BackendError(f"tensorrt: input {name} has shape {list(shape)}, outside the "
                                   f"plan's optimization profile (min {list(lo)}, max "
                                   f"{list(hi)}); rebuild the plan with a profile that covers it")

    def _run(self, hosts: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        self._check_profile(hosts)
        ctx, cuda = self._context, self._cuda
        bindings: List[int] = [0] * (len(self.inputs) + len(self.outputs))
        for name, host in hosts.items():
            buf = self._device_buffer(name, host.nbytes)
            cuda.htod(buf, host)
            if self._named:
                ctx.set_input_shape(name, host.shape)
                ctx.set_tensor_address(name, cuda.ptr(buf))
            else:
                idx = self._binding_index[name]
                ctx.set_binding_shape(idx, host.shape)
                bindings[idx] = cuda.ptr(buf)
        results: Dict[str, np.ndarray] = {}
        for t in self.outputs:
            if self._named:
                shape = tuple(ctx.get_tensor_shape(t.name))
            else:
                shape = tuple(ctx.get_binding_shape(self._binding_index[t.name]))
            if any(d < 0 for d in shape):
                raise BackendError(f"tensorrt: output {t.name} has unresolved shape {shape}")
            host = np.empty(shape, dtype=t.dtype)
            buf = self._device_buffer(t.name, host.nbytes)
            if self._named:
                ctx.set_tensor_address(t.name, cuda.ptr(buf))
            else:
                bindings[self._binding_index[t.name]] = cuda.ptr(buf)
            results[t.name] = host
        if self._named:
            ok = ctx.execute_async_v3(cuda.stream_handle)
        else:
            ok = ctx.execute_async_v2(bindings=bindings, stream_handle=cuda.stream_handle)
        if not ok:
            raise BackendError("tensorrt: execution failed (see the TensorRT log above)")
        for name, host in results.items():
            cuda.dtoh(host, self._buffers[name][0])
        cuda.synchronize()
        return results

    def close(self) -> None:
        if getattr(self, "_cuda", None) is not None and self._cuda.kind:
            for buf, _ in self._buffers.values():
                self._cuda.free(buf)
            self._buffers.clear()
            self._context = None
            self._engine = None
            self._cuda.close()
        super().close()


def tensorrt_available() -> bool:
    """True when tensorrt >= 8.6 and CUDA bindings import and a GPU is visible."""
    try:
        import_tensorrt()
        cuda = _Cuda(0)
        cuda.close()
        return True
    except Exception as exc:  # any missing piece means "not available"
        LOG.debug("tensorrt unavailable: %s", exc)
        return False


# ----------------------------------------------------------------------------- INT8
def make_int8_calibrator(trt: Any, stream: calib.CalibrationStream,
                         cache_path: Union[str, Path], device: int = 0) -> Any:
    """A ``trt.IInt8EntropyCalibrator2`` feeding `stream`'s batches from device buffers.

    Defined here, inside a function, so that importing this module never needs tensorrt.
    The buffers hold one calibration batch (the calibration profile's shape); TensorRT reads
    them right after ``get_batch`` returns, so the copies are synchronized first. An error
    inside ``get_batch`` (called from TensorRT's C++) is kept in ``.error`` and ends the
    calibration (``None``); the builder raises it after the build.

    Args:
        trt: the imported tensorrt module.
        stream: host-side batches (tensorrt_calibration.CalibrationStream).
        cache_path: TensorRT's calibration cache: read when present (calibration is then
            skipped), written when calibration finishes. The caller removes a stale one.
        device: CUDA device.
    """
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.error: Optional[BaseException] = None
            self.cache_path = Path(cache_path)
            self.cache_read = False
            self._cuda = _Cuda(device)
            self._buffers: Dict[str, Any] = {}
            try:
                for name, nbytes in stream.nbytes().items():
                    self._buffers[name] = self._cuda.malloc(nbytes)
            except BaseException:
                self.close()
                raise

        def get_batch_size(self) -> int:
            return 1  # explicit-batch network: the batch is the tensors' own first axis

        def get_batch(self, names: List[str], *_: Any) -> Optional[List[int]]:
            try:
                hosts = stream.next_batch(list(names))
                if hosts is None:
                    LOG.info("tensorrt: calibrated with %d batches", stream.count)
                    return None
                for name, host in zip(names, hosts):
                    self._cuda.htod(self._buffers[name], host)
                self._cuda.synchronize()
                return [self._cuda.ptr(self._buffers[name]) for name in names]
            except Exception as exc:  # raising into TensorRT's C++ would abort the process
                LOG.error("tensorrt: calibration batch failed: %s", exc)
                self.error = exc
                return None

        def read_calibration_cache(self) -> Optional[bytes]:
            if self.cache_path.is_file():
                LOG.info("tensorrt: reusing calibration cache %s", self.cache_path)
                self.cache_read = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            tmp = self.cache_path.with_name(".%s.tmp" % self.cache_path.name)
            try:
                tmp.write_bytes(bytes(cache))
                tmp.replace(self.cache_path)
            except OSError as exc:
                LOG.error("tensorrt: cannot write calibration cache %s: %s", self.cache_path,
                          exc)
                self.error = exc

        def close(self) -> None:
            if self._cuda.kind:
                for buf in self._buffers.values():
                    self._cuda.free(buf)
                self._buffers.clear()
                self._cuda.close()

    return EntropyCalibrator()


def keep_layers_fp32(trt: Any, network: Any, substrings: Sequence[str]) -> Dict[str, int]:
    """Pin layers whose name contains one of `substrings` to fp32 (precision and outputs).

    Only layers with floating-point outputs are pinned (shape, index and plugin layers keep
    their types). The builder must also set ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.

    Returns:
        substring -> number of layers it pinned (0: the network has no such layer name).
    """
    floats = (trt.float32, trt.float16)
    skip = tuple(getattr(trt.LayerType, t) for t in ("SHAPE", "CONSTANT", "PLUGIN", "PLUGIN_V2",
                                                    "PLUGIN_V3")
                 if hasattr(trt.LayerType, t))
    counts = {s: 0 for s in substrings}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        hits = [s for s in substrings if s in layer.name]
        if not hits or layer.type in skip:
            continue
        outputs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outputs or any(t.dtype not in floats for t in outputs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        for s in hits:
            counts[s] += 1
    return counts


def _configure_int8(trt: Any, builder: Any, network: Any, config: Any, calib_dir: Any,
                    calib_cache: Any, keep_fp32: Sequence[str], calib_rows: int,
                    device: int) -> Any:
    """INT8 flags, precision constraints, calibration profile and calibrator; returns it."""
    if not getattr(builder, "platform_has_fast_int8", True):
        raise BackendError("tensorrt: this GPU has no fast INT8 (compute capability below "
                           "6.1); build an fp16 or fp32 plan instead")
    if calib_dir is None or calib_cache is None:
        raise BackendError("an INT8 build needs calib_dir (calibration batches) and "
                           "calib_cache (where TensorRT's calibration cache goes)")
    data = calib.open_calibration_dir(calib_dir)
    config.set_flag(trt.BuilderFlag.INT8)
    if builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)  # layers without INT8 kernels fall back to fp16
    shapes, dtypes, dynamic = {}, {}, []
    calib_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        dtypes[inp.name] = np.dtype(trt.nptype(inp.dtype))
        if shape and shape[0] < 0:
            shape[0] = calib_rows
            calib_profile.set_shape(inp.name, shape, shape, shape)
            dynamic.append(inp.name)
        shapes[inp.name] = tuple(shape)
    if dynamic:
        # TensorRT >= 8.5 calibrates a dynamic network at the calibration profile's opt shape
        config.set_calibration_profile(calib_profile)
    stream = calib.CalibrationStream(data, shapes, dtypes, dynamic)
    if keep_fp32:
        counts = keep_layers_fp32(trt, network, keep_fp32)
        for sub, n in counts.items():
            if n == 0:
                LOG.warning("tensorrt: no layer name contains %r, nothing kept in fp32 for it "
                            "(layer names look like %s)", sub,
                            ", ".join(repr(network.get_layer(i).name)
                                      for i in range(min(3, network.num_layers))))
        if any(counts.values()):
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        LOG.info("tensorrt: fp32 layers: %s", ", ".join("%s x%d" % kv for kv in counts.items()))
    calibrator = make_int8_calibrator(trt, stream, calib_cache, device)
    config.int8_calibrator = calibrator
    LOG.info("tensorrt: INT8 with %d calibration batches from %s (calibrated at %d rows), "
             "cache %s", len(data.files), calib_dir, calib_rows, calib_cache)
    return calibrator


# ----------------------------------------------------------------------------- builder
def build_engine_from_onnx(onnx_path: Union[str, Path], plan_path: Union[str, Path],
                           min_voxels: int = 2000, opt_voxels: int = 5000,
                           max_voxels: int = 9000, fp16: bool = False,
                           workspace: int = 1 << 30,
                           plugins: Sequence[Union[str, Path]] = (), int8: bool = False,
                           calib_dir: Optional[Union[str, Path]] = None,
                           calib_cache: Optional[Union[str, Path]] = None,
                           keep_fp32: Sequence[str] = calib.DEFAULT_KEEP_FP32,
                           device: int = 0) -> Path:
    """Build a TensorRT plan; inputs with a dynamic first axis get one optimization profile.

    Defaults are mmdeploy's KITTI voxel profile (2000/5000/9000 voxels, 1 GiB workspace,
    fp32); a model with static inputs (e.g. a camera engine) needs no profile.

    Args:
        onnx_path: mmdeploy ``end2end.onnx``, e.g. a voxel engine with inputs voxels
            [V, M, C], num_points [V], coors [V, 4]; only the first axis may be dynamic.
        plan_path: where to write the serialized engine.
        min_voxels, opt_voxels, max_voxels: the profile of V.
        fp16: allow fp16 kernels (if the GPU has fast fp16).
        workspace: builder workspace limit in bytes.
        plugins: plugin libraries to load first.
        int8: INT8 with entropy calibration (plus fp16 fallback where the GPU has fast fp16).
            Calibration runs at V = max_voxels, each batch's voxels tiled up to it.
        calib_dir: calibration batches (tensorrt_calibration; int8 only).
        calib_cache: TensorRT's calibration cache file: reused when present, else written.
        keep_fp32: layer-name substrings kept in fp32 in an INT8 plan (default: the pillar
            encoder and the head); empty: everything may be INT8.
        device: CUDA device of the calibration buffers.

    Returns:
        ``plan_path``.

    Raises:
        BackendError: TensorRT missing, the ONNX not parsable, bad calibration data, or the
            build failed.
    """
    if not 1 <= min_voxels <= opt_voxels <= max_voxels:
        raise BackendError(f"profile must satisfy 1 <= min <= opt <= max, got {min_voxels}, "
                           f"{opt_voxels}, {max_voxels}")
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    _load_plugins(trt, logger, plugins)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    else:
        config.max_workspace_size = int(workspace)
    if fp16:
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            LOG.warning("tensorrt: fp16 requested but this GPU has no fast fp16; building fp32")
    profile = builder.create_optimization_profile()
    dynamic = 0
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = list(inp.shape)
        if all(d >= 0 for d in shape):
            continue  # a static input needs no profile
        if any(d < 0 for d in shape[1:]):
            raise BackendError(f"input {inp.name} {shape}: only the first axis (the voxel axis "
                               "of voxel engines) may be dynamic; export with fixed other axes")
        shapes = [[v] + shape[1:] for v in (min_voxels, opt_voxels, max_voxels)]
        profile.set_shape(inp.name, *shapes)
        dynamic += 1
    if dynamic:
        config.add_optimization_profile(profile)
    calibrator = None
    try:
        if int8:
            try:
                calibrator = _configure_int8(trt, builder, network, config, calib_dir,
                                             calib_cache, tuple(keep_fp32), max_voxels, device)
            except calib.CalibrationError as exc:
                raise BackendError(f"INT8 calibration data: {exc}") from exc
        serialized = builder.build_serialized_network(network, config)
        if calibrator is not None and calibrator.error is not None:
            raise BackendError(f"INT8 calibration failed: {calibrator.error}")
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see log)")
    plan = Path(plan_path)
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    LOG.info("tensorrt: wrote %s (voxels %d/%d/%d, %s)", plan, min_voxels, opt_voxels,
             max_voxels, "int8" if int8 else "fp16" if fp16 else "fp32")
    return plan
