"""What GPU and TensorRT this machine has (name, compute capability, versions); None without them."""
from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import List, Optional

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)


class GpuInfoError(AdmlopsError):
    """A version or capability string that cannot be parsed (names the value)."""


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device.

    Attributes:
        index: CUDA device ordinal.
        name: marketing name, e.g. "NVIDIA GeForce RTX 3090".
        compute_capability: "major.minor", e.g. "8.6".
        driver_version: NVIDIA driver version, None when unknown.
        source: how it was found ("cuda-python" or "nvidia-smi").
    """

    index: int
    name: str
    compute_capability: str
    driver_version: Optional[str] = None
    source: str = ""

    @property
    def sm_tag(self) -> str:
        """"sm86" for compute capability 8.6."""
        return sm_tag(self.compute_capability)


def sm_tag(compute_capability: str) -> str:
    """"8.6" -> "sm86".

    Raises:
        GpuInfoError: not "major.minor".
    """
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", compute_capability or "")
    if not match:
        raise GpuInfoError("compute capability %r is not 'major.minor' (e.g. '8.6')"
                           % (compute_capability,))
    return "sm%s%s" % (match.group(1), match.group(2))


def normalize_trt_version(version: str) -> str:
    """TensorRT version reduced to major.minor.patch: "8.6.1.post1" / "8.6.1.6" -> "8.6.1".

    The fourth component is a build / packaging number (the pip wheel says .post1 where the
    library says .6 for the same release), so it is not part of the compatibility key.

    Raises:
        GpuInfoError: fewer than three numeric components.
    """
    match = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", version or "")
    if not match:
        raise GpuInfoError("TensorRT version %r is not major.minor.patch (e.g. '8.6.1')"
                           % (version,))
    return "%s.%s.%s" % match.groups()


def tensorrt_version() -> Optional[str]:
    """The importable TensorRT's version ("8.6.1"), None when the tensorrt module is missing."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError:
        return None
    return normalize_trt_version(getattr(trt, "__version__", ""))


def _query_cuda_python() -> List[GpuInfo]:
    try:  # cuda-python >= 12.6 moved the driver API; older ones have cuda.cuda
        drv = importlib.import_module("cuda.bindings.driver")
    except ImportError:
        try:
            drv = importlib.import_module("cuda.cuda")
        except ImportError:
            return []
    (err,) = drv.cuInit(0)
    if int(err) != 0:
        LOG.debug("cuInit failed: %s", err)
        return []
    err, count = drv.cuDeviceGetCount()
    attr = drv.CUdevice_attribute
    found = []
    for index in range(int(count) if int(err) == 0 else 0):
        _, dev = drv.cuDeviceGet(index)
        _, raw = drv.cuDeviceGetName(256, dev)
        _, major = drv.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev)
        _, minor = drv.cuDeviceGetAttribute(
            attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev)
        name = raw.split(b"\0", 1)[0].decode(errors="replace").strip()
        found.append(GpuInfo(index, name, "%d.%d" % (major, minor), None, "cuda-python"))
    return found


def parse_nvidia_smi(text: str) -> List[GpuInfo]:
    """Parse `nvidia-smi --query-gpu=index,name,compute_cap,driver_version --format=csv,noheader`."""
    found = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4 or not parts[0].isdigit():
            continue
        try:
            sm_tag(parts[2])
        except GpuInfoError:
            LOG.debug("nvidia-smi line without compute capability: %r", line)
            continue
        found.append(GpuInfo(int(parts[0]), parts[1], parts[2], parts[3], "nvidia-smi"))
    return found


def _query_nvidia_smi() -> List[GpuInfo]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, "--query-gpu=index,name,compute_cap,driver_version",
                               "--format=csv,noheader"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.debug("nvidia-smi failed: %s", exc)
        return []
    if proc.returncode != 0:  # old drivers lack compute_cap
        LOG.debug("nvidia-smi exit %d: %s", proc.returncode, proc.stderr.strip())
        return []
    return parse_nvidia_smi(proc.stdout)


def list_gpus() -> List[GpuInfo]:
    """All CUDA devices: cuda-python when importable, else nvidia-smi; [] on machines without."""
    try:
        gpus = _query_cuda_python()
    except Exception as exc:  # a broken driver install must not crash a CPU-only caller
        LOG.debug("cuda-python query failed: %s", exc)
        gpus = []
    return gpus or _query_nvidia_smi()


def query_gpu(index: int = 0) -> Optional[GpuInfo]:
    """The CUDA device `index`, None when there is no such device (or no GPU at all).

    nvidia-smi numbers physical devices; a numeric CUDA_VISIBLE_DEVICES list maps the CUDA
    ordinal `index` to the physical one.
    """
    gpus = list_gpus()
    wanted = index
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if gpus and gpus[0].source == "nvidia-smi" and re.fullmatch(r"\d+(,\d+)*", visible):
        order = [int(v) for v in visible.split(",")]
        if index >= len(order):
            return None
        wanted = order[index]
    for gpu in gpus:
        if gpu.index == wanted:
            return gpu
    return None
