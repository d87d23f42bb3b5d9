"""Input generators of scripts/fuzz.py: one Target per fuzzed entry point, deterministic per
(seed, target, index); the harness (crash, timeout and memory handling) is in fuzz.py."""
from __future__ import annotations

import math
import os
import random
import re
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SPEC_SEED = REPO / "engines" / "pointpillars_sim_3class" / "spec.yaml"


class ContractViolation(Exception):
    """A call returned but broke a documented guarantee of its result (kind ``result``)."""


# ============================================================================ randomness
def input_rng(seed: int, target: str, index: int) -> random.Random:
    """The generator of input ``index`` (string seeds hash with sha512: stable everywhere)."""
    return random.Random("%d:%s:%d" % (seed, target, index))


class BytesRandom(random.Random):
    """random.Random whose every choice reads the next bytes of ``data`` (zeros once used up).

    The atheris engine hands libFuzzer's byte string to the generators through this class, so
    coverage feedback steers the same structured generators the random engine uses.
    """

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0
        super().__init__(0)

    def getrandbits(self, k: int) -> int:
        n = (k + 7) // 8
        chunk = self._data[self._pos:self._pos + n]
        self._pos += n
        return int.from_bytes(chunk.ljust(n, b"\0"), "little") & ((1 << k) - 1)

    def random(self) -> float:  # 16 bits: a choice costs libFuzzer 2 bytes, not 7
        return self.getrandbits(16) / 65536.0


def pick(rng: random.Random, items: Sequence[Any], weights: Optional[Sequence[float]] = None) -> Any:
    if weights is None:
        return items[rng.randrange(len(items))]
    return rng.choices(items, weights)[0]


def rand_bytes(rng: random.Random, n: int) -> bytes:
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n > 0 else b""


def np_rng(rng: random.Random) -> Any:
    import numpy as np
    return np.random.default_rng(rng.getrandbits(64))


def mutate_bytes(rng: random.Random, data: bytes, tokens: Sequence[bytes],
                 max_ops: int = 8, text: bool = False) -> bytes:
    """Stacked byte-level mutations: bit flips, random/token inserts, deletes, copies, cuts."""
    b = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(9)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            p = min(pos, len(b) - 1)
            b[p] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(32, 127) if text and rng.random() < 0.9 \
                else rng.randrange(256)
        elif op == 2:
            b[pos:pos] = pick(rng, tokens)
        elif op == 3:
            n = rng.randint(1, max(1, min(64, len(b) // 4 + 1)))
            del b[pos:pos + n]
        elif op == 4 and b:
            start = rng.randrange(len(b))
            n = rng.randint(1, min(256, len(b) - start))
            b[pos:pos] = b[start:start + n]
        elif op == 5 and rng.random() < 0.3:
            del b[pos:]
        elif op == 6 and (not text or rng.random() < 0.2):
            b[pos:pos] = pick(rng, [b"\x00", b"\xff", b"\xef\xbb\xbf", b"\t", b"\r", b"\x80",
                                    b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"])
        elif op == 7:
            chunk = rand_bytes(rng, rng.randint(1, 8))
            if text and rng.random() < 0.9:
                chunk = bytes(32 + c % 95 for c in chunk)
            b[pos:pos] = chunk
        elif op == 8:
            lines = bytes(b).split(b"\n")
            if len(lines) > 2:
                i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
                lines[i], lines[j] = lines[j], lines[i]
                b = bytearray(b"\n".join(lines))
    return bytes(b)


def py_snippet(value: Any) -> str:
    """repr() that pastes into Python (nan / inf spelled through float())."""
    if isinstance(value, float):
        if math.isnan(value):
            return "float('nan')"
        if math.isinf(value):
            return "float('%sinf')" % ("-" if value < 0 else "")
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(py_snippet(v) for v in value)
        return "[%s]" % inner if isinstance(value, list) else "(%s%s)" % (
            inner, "," if len(value) == 1 else "")
    return repr(value)


def short(value: Any, n: int = 120) -> str:
    import reprlib
    r = reprlib.Repr()
    r.maxlist = r.maxtuple = r.maxdict = 6
    r.maxstring = r.maxother = 50
    r.maxlong = 30
    text = r.repr(value)
    return text if len(text) <= n else text[:n - 4] + " ..."


# ============================================================================ targets
class Target:
    """One fuzz target: how to make an input from an rng and how to run it."""

    name = ""
    chunk = 200  # inputs per forked child (smaller for slow targets)
    instrument = ("admlops_ros", "yaml")  # modules atheris instruments
    instrument_exclude = ("admlops_ros.lidar.voxelize", "admlops_ros.lidar.geometry")

    def __init__(self) -> None:
        self.scratch = Path(tempfile.gettempdir())

    def prepare(self, seeds_dir: Path) -> None:
        """In the parent, before any server starts: write seed files (idempotent)."""

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        """In each server (and --repro): imports, seeds loaded, warm-up."""
        self.scratch = scratch

    def generate(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def run(self, inp: Any) -> None:
        raise NotImplementedError

    def describe(self, inp: Any) -> str:
        return short(inp, 300)

    def write_raw(self, inp: Any, base: Path) -> Optional[Path]:
        """Write the input as the file the package reads (spec.yaml, .bag), if it is one."""
        return None

    def repro(self, inp: Any, bin_path: Path, raw: Optional[Path]) -> str:
        return ".venv/bin/python scripts/fuzz.py --repro %s" % rel(bin_path)

    def after_input(self) -> None:
        """Clean up after one input (temp files)."""


def rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------- pointcloud
_PC_NAMES = ["x", "y", "z", "intensity", "ring", "time", "_", "rgb", "", "x ", "X", "\u00e9"]
_DT_SIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 8: 8}
_U32 = (1 << 32) - 1


class PointcloudTarget(Target):
    """convert_pointcloud2 / pointcloud2_to_array on random PointCloud2-like messages."""

    name = "pointcloud"
    chunk = 500

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        super().setup(seeds_dir, scratch)
        import numpy as np
        from admlops_ros.lidar import pointcloud
        self.np, self.pc = np, pointcloud

    def generate(self, rng: random.Random) -> Dict[str, Any]:
        duck = rng.random() < 0.1  # values a genpy message could not hold (negative, > uint32)
        if rng.random() < 0.6:
            names = ["x", "y", "z", "intensity"][:pick(rng, [3, 4, 4, 4, 2])]
            extras = ["ring", "time", "_", "rgb", "t", "reflectivity"]
            names += rng.sample(extras, pick(rng, [0, 0, 1, 2, 3]))
            if rng.random() < 0.05:
                names.append(pick(rng, names + ["_"]))  # a duplicate name
        else:
            names = rng.sample(_PC_NAMES, pick(rng, [0, 1, 2, 3, 4, 5, 6, 8]))
            if names and rng.random() < 0.15:
                names.append(pick(rng, names))
        fields: List[List[Any]] = []
        off = 0
        for name in names:
            r = rng.random()
            dt = 7 if r < 0.6 else (rng.randint(1, 8) if r < 0.9 else pick(
                rng, [0, 9, 10, 255] + ([-1, 2 ** 31, 2 ** 32 + 7] if duck else [])))
            count = 1 if rng.random() < 0.85 else pick(rng, [0, 2, 3, 4] + (
                [2 ** 31, -3] if duck else []))
            if rng.random() < 0.1:
                off += pick(rng, [1, 2, 3, 4, 8])
            fields.append([name, off, dt, count])
            off += _DT_SIZE.get(dt, 4) * min(max(count, 1), 4)
        point_step = off + (pick(rng, [1, 2, 4, 16]) if rng.random() < 0.2 else 0)
        width = pick(rng, [0, 1, 2, 3, 5, 16, 64, 100, 1000, 1 << 14],
                     [3, 10, 8, 6, 8, 8, 6, 4, 2, 1])
        height = pick(rng, [1, 0, 2, 3, 16], [20, 2, 3, 2, 1])
        row_step = pick(rng, [width * point_step, 0, width * point_step + pick(rng, [1, 4, 7])],
                        [6, 2, 2])
        bigendian = rng.random() < 0.2
        data_delta = 0
        huge = [2 ** 31 - 1, 2 ** 31, _U32] + ([2 ** 32, 2 ** 63, -1, -(2 ** 31)] if duck else [])
        for _ in range(pick(rng, [0, 1, 2, 3], [4, 3, 2, 1])):
            op = rng.randrange(8)
            if op == 0 and fields:
                f = pick(rng, fields)
                f[1] = pick(rng, [0, max(point_step - 1, 0), point_step, f[1] + 1, f[1] + 2]
                            + huge[:2] + ([-1] if duck else []))
            elif op == 1 and fields:
                pick(rng, fields)[2] = pick(rng, [1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 200])
            elif op == 2 and fields:
                fields.insert(rng.randrange(len(fields) + 1), list(pick(rng, fields)))
            elif op == 3:
                point_step = pick(rng, [0, 1, max(point_step - 1, 0), point_step + 1] + huge)
            elif op == 4:
                row_step = pick(rng, [0, 1, max(row_step - 1, 0), row_step + 1] + huge)
            elif op == 5:
                if rng.random() < 0.5:
                    width = pick(rng, [0, 1] + huge)
                else:
                    height = pick(rng, [0, 2, 7] + huge)
            elif op == 6:
                data_delta = pick(rng, [-1, 1, -4, 4, -point_step, point_step, 3])
            else:
                bigendian = not bigendian
        eff_row = row_step if (row_step or height > 1) else width * point_step
        length = eff_row * height if 0 <= eff_row * height <= (1 << 20) else rng.randint(0, 256)
        length = length + data_delta
        if not 0 <= length <= (1 << 20):
            length = rng.randint(0, 256)
        payload = pick(rng, ["random", "floats", "special", "zeros"], [4, 3, 2, 1])
        if rng.random() < 0.6:
            fields_req: Any = ("x", "y", "z", "intensity")
        elif rng.random() < 0.9:
            pool = names + _PC_NAMES[:6] if rng.random() < 0.7 else list(_PC_NAMES)
            fields_req = tuple(rng.sample(sorted(set(pool)), rng.randint(1, 4)))
            if rng.random() < 0.1:
                fields_req += (pick(rng, fields_req),)
        else:
            fields_req = ()
        return {
            "msg_class": "like" if rng.random() < 0.7 else "namespace",
            "fields": [tuple(f) for f in fields],
            "width": width, "height": height, "point_step": point_step, "row_step": row_step,
            "is_bigendian": bigendian,
            "data": self._payload(rng, length, payload),
            "container": pick(rng, ["bytes", "bytearray", "memoryview", "list", "u8", "f4", "i2"],
                              [75, 5, 5, 5, 5, 3, 2]),
            "request": fields_req,
            "missing": pick(rng, ["error", "zeros", "", "Zeros", None], [40, 56, 1, 1, 2]),
            "api": pick(rng, ["convert", "to_array"]),
        }

    def _payload(self, rng: random.Random, length: int, kind: str) -> bytes:
        if length <= 0:
            return b""
        if kind == "zeros":
            return bytes(length)
        if kind == "random" or length < 4:
            return rand_bytes(rng, length)
        np = self.np
        g = np_rng(rng)
        n = (length + 3) // 4
        vals = g.normal(0.0, 30.0, n).astype(np.float32)
        if kind == "special":
            specials = np.array([np.nan, np.inf, -np.inf, -0.0, 3.4e38, -3.4e38, 1e-45, 0.0],
                                np.float32)
            mask = g.random(n) < pick(rng, [0.01, 0.2, 0.7, 1.0])
            vals[mask] = specials[g.integers(0, len(specials), int(mask.sum()))]
        raw = vals.tobytes()[:length]
        return raw + bytes(length - len(raw))

    def build(self, inp: Dict[str, Any]) -> Any:
        np, pc = self.np, self.pc
        if inp["msg_class"] == "like":
            fields = [pc.PointFieldLike(*f) for f in inp["fields"]]
        else:
            fields = [SimpleNamespace(name=f[0], offset=f[1], datatype=f[2], count=f[3])
                      for f in inp["fields"]]
        raw = inp["data"]
        kind = inp["container"]
        if kind == "bytearray":
            data: Any = bytearray(raw)
        elif kind == "memoryview":
            data = memoryview(raw)
        elif kind == "list" and len(raw) <= 4096:
            data = list(raw)
        elif kind == "u8":
            data = np.frombuffer(raw, np.uint8).copy()
        elif kind == "f4" and len(raw) % 4 == 0:
            data = np.frombuffer(raw, np.float32).copy()
        elif kind == "i2" and len(raw) % 2 == 0:
            data = np.frombuffer(raw, np.int16).copy()
        else:
            data = raw
        attrs = dict(height=inp["height"], width=inp["width"], fields=fields,
                     is_bigendian=inp["is_bigendian"], point_step=inp["point_step"],
                     row_step=inp["row_step"], data=data, is_dense=False)
        if inp["msg_class"] == "like":
            return pc.PointCloud2Like(header=None, **attrs)
        return SimpleNamespace(header=None, **attrs)

    def run(self, inp: Dict[str, Any]) -> None:
        np, pc = self.np, self.pc
        msg = self.build(inp)
        req = inp["request"]
        if inp["api"] == "convert":
            res = pc.convert_pointcloud2(msg, fields=req, missing=inp["missing"])
            pts = res.points
            num = int(msg.width) * int(msg.height)
            if res.num_input != num or res.num_dropped != num - len(pts):
                raise ContractViolation("counters num_input=%d num_dropped=%d for %d points in, "
                                        "%d out" % (res.num_input, res.num_dropped, num, len(pts)))
        else:
            pts = pc.pointcloud2_to_array(msg, fields=req, missing=inp["missing"])
        if not (isinstance(pts, np.ndarray) and pts.dtype == np.float32 and pts.ndim == 2
                and pts.shape[1] == len(req) and pts.flags.c_contiguous):
            raise ContractViolation("points not an (N, %d) C-contiguous float32 array: %s %s"
                                    % (len(req), getattr(pts, "dtype", type(pts)),
                                       getattr(pts, "shape", "")))
        if pts.size and not np.isfinite(pts).all():
            raise ContractViolation("non-finite values in the output rows")

    def describe(self, inp: Dict[str, Any]) -> str:
        return ("%s width=%s height=%s point_step=%s row_step=%s bigendian=%s data=%d bytes "
                "(%s) fields=%s request=%s missing=%r api=%s"
                % (inp["msg_class"], inp["width"], inp["height"], inp["point_step"],
                   inp["row_step"], inp["is_bigendian"], len(inp["data"]), inp["container"],
                   short(inp["fields"], 200), inp["request"], inp["missing"], inp["api"]))


# ---------------------------------------------------------------------------- voxelize
_NAN, _INF = float("nan"), float("inf")
_SANE_VS = [[0.16, 0.16, 4.0], [0.32, 0.32, 4.0], [0.2, 0.2, 0.2], [0.05, 0.05, 0.1],
            [1.0, 1.0, 1.0], [0.5, 0.5, 8.0], [1, 1, 1], [2, 2, 4]]
_SANE_PCR = [[0.0, -39.68, -3.0, 69.12, 39.68, 1.0], [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0],
             [0, 0, 0, 10, 10, 10], [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0],
             [0.0, -40.0, -3.0, 70.4, 40.0, 1.0]]
_SPECIAL_F = [0.0, -0.0, -1.0, -0.16, _NAN, _INF, -_INF, 1e-30, 1e-45, 5e-324, 1e-6, 1e-3,
              1e30, 1e39, 3.4e38, 2.0 ** 22, 2.0 ** 24, 2.0 ** 31, 1.0, 0.5, 2 ** 22]
_P22, _P31 = 2 ** 22, 2 ** 31
_SPECIAL_PCR = [[0, 0, 0, _P22, _P22, _P22], [-_P22, -_P22, -_P22, _P22, _P22, _P22],
                [0, 0, 0, _P31, _P31, _P31], [0, 0, 0, 2 ** 21, 2 ** 21, 2 ** 21],
                [0, 0, 0, 1e30, 1e30, 1e30], [-1e38, -1e38, -1e38, 1e38, 1e38, 1e38],
                [10, 10, 10, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, _P22, 1, 1],
                [0, 0, 0, 2 ** 24, 2 ** 24, 1], [0, -_P22, 0, _P22, _P22, 4],
                [0, 0, 0, 65536, 65536, 65536], [0, 0, 0, 4096, 4096, 4096]]
_MAXP = [1, 2, 4, 5, 16, 32, 100, 0, -1, -5, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 40, 10 ** 20]
_MAXP_W = [10, 8, 12, 6, 12, 8, 4, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5]
_MAXV = [1, 2, 10, 100, 1000, 12000, 40000, 0, -1, 2 ** 31 - 1, 2 ** 31, 2 ** 40, 10 ** 20]
_MAXV_W = [6, 6, 12, 12, 12, 8, 4, 1, 1, 0.5, 0.5, 0.5, 0.5]


class VoxelizeTarget(Target):
    """voxelize() / Voxelizer with random parameters and point arrays."""

    name = "voxelize"
    chunk = 100

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        super().setup(seeds_dir, scratch)
        import numpy as np
        from admlops_ros.lidar import voxelize
        self.np, self.vx = np, voxelize
        # load the numba kernel (cache) once in the server, not in every child
        voxelize.Voxelizer([0.32, 0.32, 4.0], _SANE_PCR[0], 16, 100).warmup()

    def generate(self, rng: random.Random) -> Dict[str, Any]:
        np = self.np
        r = rng.random()
        vs = list(pick(rng, _SANE_VS))
        if r >= 0.75:
            for k in rng.sample(range(3), pick(rng, [1, 2, 3]) if r < 0.95 else 3):
                vs[k] = pick(rng, _SPECIAL_F)
        r = rng.random()
        if r < 0.55:
            pcr = list(pick(rng, _SANE_PCR))
        elif r < 0.8:
            pcr = list(pick(rng, _SPECIAL_PCR))
        else:
            pcr = list(pick(rng, _SANE_PCR))
            for k in rng.sample(range(6), pick(rng, [1, 2])):
                pcr[k] = pick(rng, _SPECIAL_F + [-v for v in (1e30, 2 ** 22, 1e-30)])
        if rng.random() < 0.03:
            vs = vs[:2] if rng.random() < 0.5 else vs + [1.0]
        if rng.random() < 0.03:
            pcr = pcr[:5] if rng.random() < 0.5 else pcr + [1.0]
        max_points = pick(rng, _MAXP, _MAXP_W)
        max_voxels = pick(rng, _MAXV, _MAXV_W)
        as_np_int = rng.random() < 0.1
        container = pick(rng, ["list", "tuple", "f32", "f64"], [8, 1, 1, 1])
        # points
        g = np_rng(rng)
        n = pick(rng, [0, 1, 2, 3, 5, 10, 50, 200, 1000, 5000], [2, 6, 3, 3, 4, 5, 5, 4, 2, 1])
        c = pick(rng, [4, 3, 5, 0, 1, 2, 7], [70, 8, 8, 2, 2, 3, 3])
        lo = np.array(pcr[:3] if len(pcr) >= 3 else [0, 0, 0], np.float64)
        hi = np.array(pcr[3:6] if len(pcr) >= 6 else [1, 1, 1], np.float64)
        with np.errstate(all="ignore"):
            span = hi - lo
            ok = np.isfinite(lo) & np.isfinite(span) & (np.abs(span) < 1e30)
            base = np.where(ok, lo, -50.0)
            span = np.where(ok, span, 100.0)
            pts = g.random((n, c)) * 1.2 - 0.1
            if c:
                k = min(3, c)
                pts[:, :k] = base[:k] + span[:k] * pts[:, :k]
        p_special = pick(rng, [0.0, 0.01, 0.2, 1.0], [6, 2, 1, 0.5])
        if p_special and pts.size:
            specials = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 3.4e38, 1e39, 1e-40,
                                 -0.0] + list(hi) + list(lo))
            mask = g.random(pts.shape) < p_special
            pts[mask] = specials[g.integers(0, len(specials), int(mask.sum()))]
        dtype = pick(rng, ["float32", "float64", "float16", "longdouble", "int32", "int64",
                           "uint8", "bool", "complex64", "object"],
                     [70, 10, 3, 3, 3, 3, 2, 2, 2, 2])
        with np.errstate(all="ignore"):
            if dtype in ("int32", "int64", "uint8"):
                arr = np.nan_to_num(pts, nan=0, posinf=0, neginf=0).clip(-1e6, 1e6).astype(dtype)
            else:
                arr = pts.astype(dtype)
        shape = pick(rng, ["2d", "1d", "3d", "0d"], [90, 4, 4, 1])
        if shape == "1d":
            arr = arr.reshape(-1)
        elif shape == "3d":
            arr = arr.reshape(n, c, 1)
        elif shape == "0d":
            arr = arr.reshape(-1)[:1].reshape(()) if arr.size else np.array(1.0)
        layout = pick(rng, ["c", "fortran", "strided"], [85, 8, 7])
        api = pick(rng, ["function", "class"], [4, 6])
        return {
            "voxel_size": vs, "point_cloud_range": pcr, "container": container,
            "max_points": max_points, "max_voxels": max_voxels, "np_int": as_np_int,
            "points": arr, "layout": layout if shape == "2d" else "c", "api": api,
            "num_features": pick(rng, [None, c, c + 1, 0, 3, -1], [60, 20, 5, 2, 10, 3]),
            "backend": pick(rng, ["auto", "numba", "numpy", "gpu"], [50, 20, 25, 5]),
            "calls": pick(rng, [1, 2], [8, 2]),
            "compare": rng.random() < 0.3,
        }

    def _params(self, inp: Dict[str, Any]) -> Tuple[Any, Any, Any, Any]:
        np = self.np
        conv: Dict[str, Callable[[Any], Any]] = {
            "list": list, "tuple": tuple,
            "f32": lambda v: np.asarray(v, np.float32), "f64": lambda v: np.asarray(v, np.float64)}
        cvt = conv[inp["container"]]
        mp, mv = inp["max_points"], inp["max_voxels"]
        if inp["np_int"] and -2 ** 63 <= mp < 2 ** 63 and -2 ** 63 <= mv < 2 ** 63:
            mp, mv = np.int64(mp), np.int64(mv)
        return cvt(inp["voxel_size"]), cvt(inp["point_cloud_range"]), mp, mv

    def _points(self, inp: Dict[str, Any]) -> Any:
        np = self.np
        arr = inp["points"]
        if inp["layout"] == "fortran":
            return np.asfortranarray(arr)
        if inp["layout"] == "strided":
            big = np.repeat(arr, 2, axis=0)
            return big[::2]
        return arr

    def run(self, inp: Dict[str, Any]) -> None:
        vx = self.vx
        vs, pcr, mp, mv = self._params(inp)
        points = self._points(inp)
        if inp["api"] == "function":
            result = vx.voxelize(points, vs, pcr, mp, mv)
            self._check(result, inp, points)
            return
        v = vx.Voxelizer(vs, pcr, mp, mv, num_features=inp["num_features"],
                         backend=inp["backend"])
        results = [v(points) for _ in range(inp["calls"])]
        for res in results:
            self._check(res, inp, points, v.grid_size)
        if len(results) == 2:
            self._same(results[0], results[1], "second call of the same Voxelizer")
        if inp["compare"] and v.backend == "numba":
            other = vx.Voxelizer(vs, pcr, mp, mv, num_features=inp["num_features"],
                                 backend="numpy")
            self._same(results[0], other(points), "numba vs numpy backend")

    def _check(self, res: Any, inp: Dict[str, Any], points: Any, grid: Any = None) -> None:
        np = self.np
        mp, mv = int(inp["max_points"]), int(inp["max_voxels"])
        vox, num, coors = res.voxels, res.num_points, res.coors
        nv = len(num)
        c = points.shape[1]
        problems = []
        if vox.dtype != np.float32 or vox.shape != (nv, mp, c):
            problems.append("voxels %s %s, expected (%d, %d, %d) float32"
                            % (vox.dtype, vox.shape, nv, mp, c))
        if coors.shape != (nv, 3) or num.dtype != np.int32 or coors.dtype != np.int32:
            problems.append("coors %s %s / num_points %s" % (coors.dtype, coors.shape, num.dtype))
        if nv > mv:
            problems.append("%d voxels > max_voxels %d" % (nv, mv))
        if nv and (num.min() < 1 or num.max() > mp):
            problems.append("num_points outside 1..%d: %d..%d" % (mp, num.min(), num.max()))
        if grid is not None and nv:
            g = np.asarray(grid)[::-1]  # (z, y, x)
            if (coors < 0).any() or (coors >= g).any():
                problems.append("coors outside the grid %s" % list(grid))
        if res.dropped_points < 0 or res.num_points_in_range > len(points):
            problems.append("dropped_points %d, num_points_in_range %d of %d"
                            % (res.dropped_points, res.num_points_in_range, len(points)))
        if problems:
            raise ContractViolation("; ".join(problems))

    def _same(self, a: Any, b: Any, what: str) -> None:
        np = self.np
        same = (np.array_equal(a.num_points, b.num_points) and np.array_equal(a.coors, b.coors)
                and np.array_equal(a.voxels, b.voxels, equal_nan=True)
                and a.dropped_voxels == b.dropped_voxels
                and a.num_points_in_range == b.num_points_in_range)
        if not same:
            raise ContractViolation("%s differ: %d vs %d voxels, in range %d vs %d"
                                    % (what, a.num_voxels, b.num_voxels, a.num_points_in_range,
                                       b.num_points_in_range))

    def describe(self, inp: Dict[str, Any]) -> str:
        pts = inp["points"]
        np = self.np
        with np.errstate(all="ignore"):
            finite = (bool(np.isfinite(pts).all()) if pts.dtype.kind in "fc"
                      else "n/a") if pts.size else "empty"
        return ("%s voxel_size=%s point_cloud_range=%s max_points=%s max_voxels=%s "
                "num_features=%s backend=%s calls=%d compare=%s; points %s %s %s finite=%s"
                % (inp["api"], py_snippet(inp["voxel_size"]),
                   py_snippet(inp["point_cloud_range"]), inp["max_points"], inp["max_voxels"],
                   inp["num_features"], inp["backend"], inp["calls"], inp["compare"],
                   pts.dtype, pts.shape, inp["layout"], finite))

    def repro(self, inp: Dict[str, Any], bin_path: Path, raw: Optional[Path]) -> str:
        pts = inp["points"]
        base = super().repro(inp, bin_path, raw)
        if (pts.ndim != 2 or pts.size > 16 or pts.dtype.kind != "f" or inp["layout"] != "c"
                or inp["container"] != "list" or inp["np_int"]):
            return base
        arr = "np.array(%s, np.%s)" % (py_snippet(pts.tolist()), pts.dtype)
        if pts.shape[0] == 0:
            arr = "np.zeros(%s, np.%s)" % (pts.shape, pts.dtype)
        args = "%s, %s, %s, %s" % (py_snippet(inp["voxel_size"]),
                                   py_snippet(inp["point_cloud_range"]),
                                   inp["max_points"], inp["max_voxels"])
        if inp["api"] == "function":
            call = "voxelize(%s, %s)" % (arr, args)
        else:
            call = "Voxelizer(%s, num_features=%r, backend=%r)(%s)" % (
                args, inp["num_features"], inp["backend"], arr)
        return ("%s -c \"import numpy as np; from admlops_ros.lidar.voxelize import voxelize, "
                "Voxelizer; %s\"   (or: %s)" % (".venv/bin/python", call, base))


# ---------------------------------------------------------------------------- spec
_YAML_TOKENS = [b":", b": ", b"- ", b"[", b"]", b"{", b"}", b",", b"&a ", b"*a", b"!!", b"? ",
                b"<<: ", b"---\n", b"...\n", b"%YAML 1.1\n", b"#", b"'", b'"', b"|", b">",
                b"\n  ", b"~", b".nan", b".inf", b"-.inf", b"0x", b"0o", b"1e400", b"!!binary ",
                b"!!python/object:os.system ", b"!!set ", b"!!timestamp ", b"9" * 400,
                b"\\u", b"\\x", b"\"\\ud800\"", b"1:2:3", b"null", b"true", b"yes", b"=",
                b"!!float ", b"!!int ", b"!!str ", b"!!omap ", b"!!pairs ", b"!custom "]
_DEEP = "\x00deep\x00"


def _huge_int_text(rng: random.Random) -> str:
    digits = pick(rng, [19, 20, 40, 400, 4300, 4301, 5000, 100000])
    sign = pick(rng, ["", "-", "+"])
    form = pick(rng, ["dec", "hex", "oct", "bin", "under", "sexa"], [6, 1, 1, 1, 1, 1])
    if form == "hex":
        return sign + "0x" + "f" * digits
    if form == "oct":
        return sign + "0o" + "7" * digits
    if form == "bin":
        return sign + "0b" + "1" * digits
    if form == "under":
        return sign + "_".join(["999"] * max(1, digits // 3))
    if form == "sexa":
        return sign + "1" + ":59" * max(1, digits // 2)
    return sign + "9" * digits


def _alias_bomb(rng: random.Random, name: str = "b") -> Tuple[str, str]:
    """(anchors block as a flow list, alias of the biggest level)."""
    levels, width = rng.randint(3, 10), rng.randint(2, 10)
    parts = ["&%s0 [%s]" % (name, ", ".join(["lol"] * width))]
    for k in range(1, levels):
        parts.append("&%s%d [%s]" % (name, k, ", ".join(["*%s%d" % (name, k - 1)] * width)))
    return "[%s]" % ", ".join(parts), "*%s%d" % (name, levels - 1)


class SpecTarget(Target):
    """read_spec on mutated spec.yaml files and ModelSpec.from_dict on mutated mappings."""

    name = "spec"
    chunk = 100

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        super().setup(seeds_dir, scratch)
        import yaml
        from admlops_ros.bundle.files import read_spec
        from admlops_ros.bundle.spec import ModelSpec
        self.yaml, self.read_spec, self.ModelSpec = yaml, read_spec, ModelSpec
        self.seed_text = SPEC_SEED.read_bytes()
        self.seed_dict = yaml.safe_load(self.seed_text.decode())
        self.dir = scratch / "bundle"
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------- generation
    def generate(self, rng: random.Random) -> Dict[str, Any]:
        mode = pick(rng, ["bytes", "tree", "template", "dict"], [25, 35, 20, 20])
        if mode == "dict":
            data = self._mutate_tree(rng, self._seed_copy(), python_values=True)
            return {"mode": mode, "data": data}
        if mode == "bytes":
            text = mutate_bytes(rng, self.seed_text, _YAML_TOKENS, max_ops=12, text=True)
        elif mode == "tree":
            data = self._mutate_tree(rng, self._seed_copy(), python_values=False)
            text = self._dump(rng, data)
            if rng.random() < 0.2:
                text = mutate_bytes(rng, text, _YAML_TOKENS, max_ops=3, text=True)
        else:
            text = self._template(rng)
        return {"mode": mode, "text": text, "as_dir": rng.random() < 0.2}

    def _seed_copy(self) -> Any:
        import copy
        return copy.deepcopy(self.seed_dict)

    def _dump(self, rng: random.Random, data: Any) -> bytes:
        try:
            text = self.yaml.safe_dump(data, sort_keys=rng.random() < 0.3,
                                       default_flow_style=pick(rng, [None, True, False]),
                                       width=pick(rng, [80, 10 ** 6]),
                                       allow_unicode=rng.random() < 0.5)
        except Exception:  # noqa: B902 - a value YAML cannot write: keep the seed
            return self.seed_text
        return text.encode("utf-8", "surrogatepass")

    def _rand_value(self, rng: random.Random, python_values: bool, depth: int = 0) -> Any:
        kinds = ["int", "bigint", "float", "special", "bool", "none", "str", "list", "dict",
                 "date", "bytes"]
        weights = [10, 6, 8, 8, 4, 4, 10, 6, 5, 1, 1]
        if python_values:
            kinds += ["tuple", "set", "complex", "npscalar", "nparray", "cycle", "deep",
                      "decimal", "fraction", "intkey"]
            weights += [4, 2, 1, 4, 2, 1, 2, 1, 1, 2]
        kind = pick(rng, kinds, weights)
        if kind == "int":
            return pick(rng, [0, 1, -1, 2, 3, 7, 16, 100, 2 ** 31, 2 ** 63 - 1, 2 ** 63, -2 ** 63])
        if kind == "bigint":
            return int("9" * pick(rng, [20, 40, 400, 4000])) * pick(rng, [1, -1])
        if kind == "float":
            return pick(rng, [0.0, -0.0, 0.1, 0.5, 1.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308,
                              -1.5, 3.14159])
        if kind == "special":
            return pick(rng, [_NAN, _INF, -_INF])
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "none":
            return None
        if kind == "str":
            return pick(rng, ["", "x", "y", "z", "intensity", "Car", "pointpillars", "auto",
                              "mmdeploy-1.2", "DeltaXYZWLHRBBoxCoder", "../etc/passwd", "/abs",
                              "a" * (100000 if rng.random() < 0.1 else 300), "\u0000",
                              "\ud800" if python_values else "\u00e9",
                              "1", "nan", "true", "end2end.onnx"])
        if kind == "list" and depth < 3:
            return [self._rand_value(rng, python_values, depth + 1)
                    for _ in range(pick(rng, [0, 1, 2, 3, 6, 7, 100]))]
        if kind == "dict" and depth < 3:
            return {pick(rng, ["min", "opt", "max", "x", "", "type", "a"]):
                    self._rand_value(rng, python_values, depth + 1)
                    for _ in range(pick(rng, [0, 1, 2, 3]))}
        if kind == "date":
            import datetime
            return datetime.date(2001, 12, 14)
        if kind == "bytes":
            return b"\x00\xffbinary"
        if kind == "tuple":
            return tuple(self._rand_value(rng, python_values, depth + 1) if depth < 3 else 1
                         for _ in range(pick(rng, [0, 2, 3, 6])))
        if kind == "set":
            return pick(rng, [{1, 2, 3}, frozenset(["x", "y", "z"]), set()])
        if kind == "complex":
            return complex(1, 2)
        if kind == "npscalar":
            import numpy as np
            return pick(rng, [np.float32(0.32), np.float64(_NAN), np.int64(7), np.int32(-1),
                              np.bool_(True), np.float16(1.0), np.uint64(2 ** 64 - 1)])
        if kind == "nparray":
            import numpy as np
            return pick(rng, [np.array([0.32, 0.32, 4.0]), np.zeros((2, 3)), np.array(["x", "y"]),
                              np.array([], np.float32)])
        if kind == "cycle":
            loop: List[Any] = [1.0, 2.0]
            loop.append(loop)
            return loop
        if kind == "deep":
            return (_DEEP, pick(rng, [100, 1000, 5000, 100000]), pick(rng, ["list", "dict"]))
        if kind == "decimal":
            import decimal
            return decimal.Decimal(pick(rng, ["0.32", "NaN", "1e400"]))
        if kind == "fraction":
            import fractions
            return fractions.Fraction(1, 3)
        if kind == "intkey":
            return {1: "x", (2, 3): "y", None: 0}
        return 0

    def _mutate_tree(self, rng: random.Random, data: Any, python_values: bool) -> Any:
        for _ in range(pick(rng, [1, 2, 3, 4, 6], [4, 3, 2, 1, 1])):
            data = self._mutate_once(rng, data, python_values)
        return data

    def _mutate_once(self, rng: random.Random, data: Any, python_values: bool) -> Any:
        # walk to a random container
        parent, key, node = None, None, data
        while isinstance(node, (dict, list)) and node and rng.random() < (
                0.95 if parent is None else 0.75):
            k = pick(rng, list(node)) if isinstance(node, dict) else rng.randrange(len(node))
            child = node[k]
            if not isinstance(child, (dict, list)) or rng.random() < 0.3:
                parent, key, node = node, k, child
                break
            parent, key, node = node, k, child
        op = pick(rng, ["replace", "delete", "insert", "rename", "retype", "dup"],
                  [45, 20, 15, 5, 10, 5])
        value = self._rand_value(rng, python_values)
        if parent is None:  # the root itself
            if op == "replace" and rng.random() < 0.1:
                return value
            parent_like = data
            if isinstance(parent_like, dict):
                parent_like[pick(rng, ["extra", "version", "format_version", "files",
                                       "name"], [2, 3, 1, 3, 3])] = value
            return data
        if op == "replace":
            parent[key] = value
        elif op == "delete":
            del parent[key]
        elif op == "insert":
            if isinstance(parent, dict):
                parent[pick(rng, ["unknown", "min", "max", "version", "x", 1, "<<"])] = value
            else:
                parent.insert(rng.randrange(len(parent) + 1), value)
        elif op == "rename" and isinstance(parent, dict):
            parent[str(key).upper() if rng.random() < 0.5 else str(key) + "_"] = parent.pop(key)
        elif op == "retype":
            if isinstance(node, list):
                parent[key] = {str(i): v for i, v in enumerate(node)}
            elif isinstance(node, dict):
                parent[key] = list(node.values())
            elif isinstance(node, (int, float)) and not isinstance(node, bool):
                whole = node if isinstance(node, int) else (
                    int(node) if math.isfinite(node) else node)
                parent[key] = pick(rng, [str(node), [node], {"v": node}, whole, True])
            else:
                parent[key] = [node]
        elif op == "dup":
            if isinstance(parent, list):
                parent.extend([parent[key]] * pick(rng, [1, 5, 100], [5, 4, 1]))
            else:
                parent[key] = [parent[key]] * pick(rng, [2, 7])
        return data

    def _template(self, rng: random.Random) -> bytes:
        seed = self.seed_text.decode()
        kind = pick(rng, ["bomb", "deep", "bigint", "tag", "encoding", "structure", "big"],
                    [15, 15, 20, 15, 10, 15, 1])
        fields = ["class_names", "voxel_size", "point_cloud_range", "max_points", "max_voxels",
                  "rotations", "feature_map_size", "nms_thr", "notes", "files", "name",
                  "point_features", "sizes", "ranges", "tensorrt_profile", "version"]
        target = pick(rng, fields)

        def replace_value(text: str, key: str, new: str) -> str:
            m = re.search(r"(?m)^(\s*)%s:.*$" % re.escape(key), text)
            if m is None:
                return text + "\n%s: %s\n" % (key, new)
            if key in ("ranges", "sizes"):  # block lists: drop the following '- ' lines
                end = m.end()
                rest = text[end:]
                m2 = re.match(r"(\n\s*- .*)*", rest)
                return text[:m.start()] + "%s%s: %s" % (m.group(1), key, new) + \
                    rest[m2.end() if m2 else 0:]
            return text[:m.start()] + "%s%s: %s" % (m.group(1), key, new) + text[m.end():]

        if kind == "bomb":
            block, alias = _alias_bomb(rng)
            where = pick(rng, ["field", "inline", "root", "notes"])
            if where == "field":
                return (replace_value(seed, "notes", block) if rng.random() < 0.5 else
                        "bomb: %s\n" % block + seed).replace(
                    "%s:" % target, "%s: %s\n_was_%s:" % (target, alias, target), 1).encode()
            if where == "inline":
                return replace_value(seed, target, "[%s, %s]" % (block, alias)).encode()
            if where == "notes":
                return replace_value(seed, "notes", "[%s, %s]" % (block, alias)).encode()
            return ("%s\n" % block).encode()
        if kind == "deep":
            n = pick(rng, [50, 500, 1000, 3000, 10000, 100000], [3, 3, 3, 2, 2, 1])
            opener, closer = pick(rng, [("[", "]"), ("{", "}"), ("{a: ", "}"), ("[{a: ", "}]")])
            body = opener * n + (closer * n if rng.random() < 0.7 else "")
            if rng.random() < 0.2:
                body = "\n".join("  " * i + "- " for i in range(min(n, 3000)))
                return body.encode()
            if rng.random() < 0.3:
                return body.encode()
            return replace_value(seed, target, body).encode()
        if kind == "bigint":
            return replace_value(seed, target, _huge_int_text(rng)).encode()
        if kind == "tag":
            tag = pick(rng, ["!!python/object/apply:os.system [\"true\"]", "!!binary aGVsbG8=",
                             "!!timestamp 2001-12-14", "!!set {a, b}", "!!omap [a: 1, b: 2]",
                             "!!pairs [a: 1]", "!!str 1", "!!int \"12\"", "!!float \"x\"",
                             "!!int \"0x\"", "!!float \"\"", "!!bool \"maybe\"", "!!null x",
                             "!custom 1", "!!map [1]", "!!seq {a: 1}", "!!int 1.5",
                             "!!timestamp 2001-13-45", "!!binary \"!!!\"", "!!float .nan",
                             "!!int 1:2:3", "!!merge x"])
            return replace_value(seed, target, tag).encode()
        if kind == "encoding":
            enc = pick(rng, ["bom", "utf16", "latin1", "nul", "surrogate", "crlf", "tabs"])
            if enc == "bom":
                return b"\xef\xbb\xbf" + self.seed_text
            if enc == "utf16":
                return seed.encode("utf-16")
            if enc == "latin1":
                return replace_value(seed, "name", "caf\xe9").encode("latin-1")
            if enc == "nul":
                return self.seed_text.replace(b"\n", b"\x00\n", 1)
            if enc == "surrogate":
                return replace_value(seed, "name", '"\\ud800\\udfff\\U0010ffff"').encode()
            if enc == "crlf":
                return self.seed_text.replace(b"\n", b"\r\n")
            return self.seed_text.replace(b"  ", b"\t")
        if kind == "structure":
            s = pick(rng, ["empty", "doc", "docs", "list", "scalar", "merge", "complexkey",
                           "dupkey", "directive", "anchorkey", "nullkey", "longline"])
            if s == "empty":
                return pick(rng, [b"", b"\n", b"# only a comment\n", b"~\n"])
            if s == "doc":
                return b"---\n" + self.seed_text + b"...\n"
            if s == "docs":
                return self.seed_text + b"---\nversion: 2\n"
            if s == "list":
                return b"- " + self.seed_text.replace(b"\n", b"\n  ")
            if s == "scalar":
                return pick(rng, [b"42\n", b"'spec'\n", b".nan\n", b"[1, 2]\n"])
            if s == "merge":
                return (b"base: &base {max_points: 16, max_voxels: 7000}\n" +
                        self.seed_text.replace(b"  max_points: 16\n", b"  <<: *base\n"))
            if s == "complexkey":
                return self.seed_text + b"? [a, b]\n: 1\n"
            if s == "dupkey":
                return self.seed_text + b"version: 3\nname: twice\n"
            if s == "directive":
                return b"%YAML 1.2\n%TAG ! tag:example.com,2000:\n---\n" + self.seed_text
            if s == "anchorkey":
                return self.seed_text + b"&k files: *k\n"
            if s == "nullkey":
                return self.seed_text + b"~: 1\n? \n: 2\n"
            return replace_value(seed, "notes", "x" * pick(rng, [1000, 900000], [9, 1])).encode()
        return self.seed_text + b"#" + b"x" * (1 << 20)  # over MAX_SPEC_BYTES

    # ------------------------------------------------------------- running
    def _materialize(self, value: Any, seen: Optional[set] = None) -> Any:
        """Expand the deep-nesting recipes of a from_dict input (built iteratively)."""
        if isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str) and \
                value[0] == _DEEP:
            depth, kind = value[1], value[2]
            out: Any = 1.0
            for _ in range(depth):
                out = [out] if kind == "list" else {"a": out}
            return out
        seen = set() if seen is None else seen
        if isinstance(value, (list, dict)):
            if id(value) in seen:
                return value
            seen.add(id(value))
        if isinstance(value, dict):
            for k in list(value):
                value[k] = self._materialize(value[k], seen)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                value[i] = self._materialize(v, seen)
        return value

    def run(self, inp: Dict[str, Any]) -> None:
        if inp["mode"] == "dict":
            import copy
            data = self._materialize(copy.deepcopy(inp["data"]))
            self.ModelSpec.from_dict(data, source="fuzz")
            return
        path = self.dir / "spec.yaml"
        path.write_bytes(inp["text"])
        self.read_spec(self.dir if inp["as_dir"] else path)

    def describe(self, inp: Dict[str, Any]) -> str:
        if inp["mode"] == "dict":
            return "ModelSpec.from_dict on a mutated mapping: %s" % short(inp["data"], 400)
        text = inp["text"]
        head = text[:160]
        return "read_spec(%s) on %d bytes (%s mutation), first bytes %r" % (
            "bundle dir" if inp["as_dir"] else "spec.yaml", len(text), inp["mode"], head)

    def write_raw(self, inp: Dict[str, Any], base: Path) -> Optional[Path]:
        if inp["mode"] == "dict":
            return None
        path = base.with_suffix(".yaml")
        path.write_bytes(inp["text"])
        return path

    def repro(self, inp: Dict[str, Any], bin_path: Path, raw: Optional[Path]) -> str:
        base = super().repro(inp, bin_path, raw)
        if raw is None:
            return base
        return ("%s -c \"from admlops_ros.bundle.files import read_spec; read_spec('%s')\"   "
                "(or: %s)" % (".venv/bin/python", rel(raw), base))


# ---------------------------------------------------------------------------- bag
_BAG_MAGIC = b"#ROSBAG V2.0\n"
_INTERESTING_U32 = [0, 1, 2, 3, 4, 7, 8, 0x7F, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x7FFFFFFF,
                    0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


def bag_fields(data: bytes) -> List[Tuple[int, int, str]]:
    """(offset, size, what) of every length field and header value of a rosbag v2 file,
    descending into uncompressed chunks: the places structure-aware mutations hit."""
    out: List[Tuple[int, int, str]] = []

    def records(start: int, end: int, depth: int) -> None:
        pos = start
        while pos + 4 <= end:
            hlen = struct.unpack_from("<I", data, pos)[0]
            out.append((pos, 4, "header_len"))
            hstart = pos + 4
            if hstart + hlen + 4 > end:
                return
            p, op, compression = hstart, None, None
            while p + 4 <= hstart + hlen:
                flen = struct.unpack_from("<I", data, p)[0]
                out.append((p, 4, "field_len"))
                field = data[p + 4:p + 4 + flen]
                eq = field.find(b"=")
                if eq < 0 or p + 4 + flen > hstart + hlen:
                    break
                name = field[:eq].decode("latin-1")
                vpos = p + 4 + eq + 1
                out.append((vpos, flen - eq - 1, name))
                if name == "op":
                    op = field[eq + 1:eq + 2]
                if name == "compression":
                    compression = field[eq + 1:]
                p += 4 + flen
            dpos = hstart + hlen
            dlen = struct.unpack_from("<I", data, dpos)[0]
            out.append((dpos, 4, "data_len"))
            if op == b"\x05" and compression == b"none" and depth == 0:
                records(dpos + 4, min(dpos + 4 + dlen, end), 1)
            pos = dpos + 4 + dlen

    if data.startswith(_BAG_MAGIC):
        records(len(_BAG_MAGIC), len(data), 0)
    return out


class BagTarget(Target):
    """read_bag (and iterating its frames) on mutated / truncated / spliced bag files."""

    name = "bag"
    chunk = 250
    instrument = ("admlops_ros", "rosbag", "genpy", "yaml")

    def prepare(self, seeds_dir: Path) -> None:
        seeds_dir.mkdir(parents=True, exist_ok=True)
        big, small = seeds_dir / "seed.bag", seeds_dir / "seed_small.bag"
        if big.is_file() and small.is_file():
            return
        import logging
        logging.disable(logging.WARNING)
        from admlops_ros.evaluation.bags import BagWriter, bag_from_sim, read_bag
        tmp_big, tmp_small = big.with_suffix(".tmp"), small.with_suffix(".tmp")
        bag_from_sim(tmp_big, count=3, seed=1000000, progress=False)
        # the same 3 frames with 64 points each: most mutations then hit the bag structure
        _, frames = read_bag(tmp_big)
        with BagWriter(tmp_small) as writer:
            for frame in frames:
                writer.write(frame.points[:64], frame.gt)
        os.replace(tmp_big, big)
        os.replace(tmp_small, small)
        logging.disable(logging.NOTSET)

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        super().setup(seeds_dir, scratch)
        from admlops_ros.evaluation import bags
        self.bags = bags
        names = ("seed_small.bag", "seed.bag")  # only generate() needs them (not --repro)
        self.seeds = [(seeds_dir / n).read_bytes() if (seeds_dir / n).is_file() else _BAG_MAGIC
                      for n in names]
        self.fields = [bag_fields(s) for s in self.seeds]
        self.tmp = scratch / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(self.tmp)  # read_bag's reindex copies land here and are wiped
        self.path = scratch / "input.bag"
        bags.messages()
        # rosbag caches message classes by md5sum for the process, so a bag whose message
        # definition is damaged reads fine after an intact one. Every input starts from the same
        # cache (the intact seeds' classes): its outcome must not depend on the inputs before it
        import rosbag.bag
        self._message_types = rosbag.bag._message_types
        for name in names:
            if (seeds_dir / name).is_file():
                list(bags.read_bag(seeds_dir / name)[1])
        self._intact_types = dict(self._message_types)

    def generate(self, rng: random.Random) -> Dict[str, Any]:
        which = 0 if rng.random() < 0.85 else 1
        data = bytearray(self.seeds[which])
        fields = self.fields[which]
        ops = []
        for _ in range(pick(rng, [1, 2, 3, 4, 8], [4, 3, 2, 1, 1])):
            op = pick(rng, ["field", "flip", "bytes", "truncate", "splice", "delete", "dup",
                            "compression"], [30, 20, 10, 15, 8, 7, 5, 5])
            if op == "field" and fields:
                off, size, what = pick(rng, fields)
                if off + size > len(data):
                    continue
                if size == 4 or what.endswith("_len"):
                    val = pick(rng, _INTERESTING_U32 + [rng.getrandbits(32)])
                    if rng.random() < 0.3:
                        old = struct.unpack_from("<I", data, off)[0]
                        val = (old + pick(rng, [-1, 1, -4, 4, 16, -16])) & 0xFFFFFFFF
                    struct.pack_into("<I", data, off, val)
                elif size == 8:
                    struct.pack_into("<Q", data, off, pick(rng, [0, 1, 2 ** 63 - 1, 2 ** 64 - 1,
                                                                 2 ** 32, rng.getrandbits(64)]))
                elif size >= 1:
                    data[off + rng.randrange(size)] = pick(rng, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFF,
                                                                 rng.randrange(256)])
                ops.append("%s@%d" % (what, off))
            elif op == "flip" and data:
                for _ in range(rng.randint(1, 16)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                ops.append("flip")
            elif op == "bytes" and data:
                pos = rng.randrange(len(data))
                data[pos:pos + 4] = rand_bytes(rng, 4)
                ops.append("bytes@%d" % pos)
            elif op == "truncate" and data:
                pos = rng.randrange(len(data))
                del data[pos:]
                ops.append("truncate@%d" % pos)
            elif op == "splice" and data:
                other = self.seeds[rng.randrange(2)]
                a = rng.randrange(len(other))
                n = rng.randint(1, min(4096, len(other) - a))
                pos = rng.randrange(len(data))
                data[pos:pos] = other[a:a + n]
                ops.append("splice%d@%d" % (n, pos))
            elif op == "delete" and data:
                pos = rng.randrange(len(data))
                n = rng.randint(1, 512)
                del data[pos:pos + n]
                ops.append("delete%d@%d" % (n, pos))
            elif op == "dup" and data:
                a = rng.randrange(len(data))
                n = rng.randint(1, min(2048, len(data) - a))
                data[a:a] = data[a:a + n]
                ops.append("dup%d@%d" % (n, a))
            elif op == "compression":
                idx = bytes(data).find(b"compression=none")
                if idx >= 0:
                    data[idx + 12:idx + 16] = pick(rng, [b"bz2\x00", b"lz4\x00", b"zzzz",
                                                         b"NONE"])
                ops.append("compression")
        topics = pick(rng, [(None, None), ("/points_raw", None), ("/nope", None),
                            ("/ground_truth/objects", None), (None, "/points_raw")],
                      [85, 5, 3, 4, 3])
        return {"seed": ["small", "big"][which], "ops": ops, "data": bytes(data),
                "points_topic": topics[0], "gt_topic": topics[1]}

    def run(self, inp: Dict[str, Any]) -> None:
        from admlops_ros.errors import AdmlopsError
        self.path.write_bytes(inp["data"])
        summary, frames = self.bags.read_bag(self.path, points_topic=inp["points_topic"],
                                             gt_topic=inp["gt_topic"])
        if summary.num_clouds < 1:
            raise ContractViolation("read_bag returned a summary with %d clouds"
                                    % summary.num_clouds)
        try:
            for frame in frames:
                if frame.points is not None and frame.points.ndim != 2:
                    raise ContractViolation("frame points of shape %s" % (frame.points.shape,))
        except AdmlopsError as exc:  # documented: iteration never raises after the bag opened
            raise ContractViolation("iterating the frames raised %s: %s"
                                    % (type(exc).__name__, exc)) from exc

    def after_input(self) -> None:
        self._message_types.clear()
        self._message_types.update(self._intact_types)
        for entry in os.listdir(str(self.tmp)):
            shutil.rmtree(str(self.tmp / entry), ignore_errors=True)

    def describe(self, inp: Dict[str, Any]) -> str:
        return "%s seed bag, %d bytes after %s; points_topic=%r gt_topic=%r" % (
            inp["seed"], len(inp["data"]), ", ".join(inp["ops"]) or "no-op",
            inp["points_topic"], inp["gt_topic"])

    def write_raw(self, inp: Dict[str, Any], base: Path) -> Optional[Path]:
        path = base.with_suffix(".bag")
        path.write_bytes(inp["data"])
        return path

    def repro(self, inp: Dict[str, Any], bin_path: Path, raw: Optional[Path]) -> str:
        return ("%s -c \"from admlops_ros.evaluation.bags import read_bag; s, f = read_bag('%s', "
                "%r, %r); list(f)\"   (or: %s)" % (".venv/bin/python", rel(raw), inp["points_topic"],
                                                  inp["gt_topic"], super().repro(inp, bin_path, raw)))


# ---------------------------------------------------------------------------- custom
class CallableTarget(Target):
    """``module:function``: the function is called with random bytes (0..64 of them)."""

    chunk = 50

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", spec.replace(":", "."))
        self.instrument = (spec.partition(":")[0], "admlops_ros")

    def setup(self, seeds_dir: Path, scratch: Path) -> None:
        super().setup(seeds_dir, scratch)
        import importlib
        module, _, func = self.spec.partition(":")
        self.fn = getattr(importlib.import_module(module), func)

    def generate(self, rng: random.Random) -> bytes:
        if isinstance(rng, BytesRandom):  # atheris: the function gets libFuzzer's bytes as such
            return rng._data
        return rand_bytes(rng, rng.randint(0, 64))

    def run(self, inp: bytes) -> None:
        self.fn(inp)

    def repro(self, inp: bytes, bin_path: Path, raw: Optional[Path]) -> str:
        module, _, func = self.spec.partition(":")
        return "%s -c \"from %s import %s; %s(%r)\"" % (".venv/bin/python", module, func, func,
                                                        inp)


def make_target(name: str) -> Target:
    if ":" in name:
        return CallableTarget(name)
    classes = {"pointcloud": PointcloudTarget, "voxelize": VoxelizeTarget, "spec": SpecTarget,
               "bag": BagTarget}
    if name not in classes:
        raise SystemExit("fuzz.py: unknown target %r (choose from %s, or module:function)"
                         % (name, ", ".join(classes)))
    return classes[name]()


# ============================================================================ one input
