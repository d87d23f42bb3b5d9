"""sensor_msgs/PointCloud2 <-> (N, C) float32 point arrays, vectorized and ROS-free."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

__all__ = [
    "DEFAULT_FIELDS",
    "POINTFIELD_DTYPES",
    "CloudConversion",
    "PointCloudError",
    "PointCloud2Like",
    "PointFieldLike",
    "array_to_pointcloud2",
    "convert_pointcloud2",
    "pointcloud2_to_array",
]

LOGGER = logging.getLogger(__name__)

DEFAULT_FIELDS: Tuple[str, ...] = ("x", "y", "z", "intensity")

#: sensor_msgs/PointField datatype constant -> numpy type code (byte order added per message).
POINTFIELD_DTYPES: Dict[int, str] = {
    1: "i1",  # INT8
    2: "u1",  # UINT8
    3: "i2",  # INT16
    4: "u2",  # UINT16
    5: "i4",  # INT32
    6: "u4",  # UINT32
    7: "f4",  # FLOAT32
    8: "f8",  # FLOAT64
}
_FLOAT32 = 7
_MISSING_MODES = ("error", "zeros")
PADDING_FIELD = "_"  # PCL names padding fields "_" (pcl::toROSMsg of aligned point types)


class PointCloudError(AdmlopsError, ValueError):
    """A PointCloud2 message cannot be converted (bad layout, missing field, bad data size)."""


@dataclass(frozen=True)
class PointFieldLike:
    """Duck-typed sensor_msgs/PointField used when sensor_msgs is not importable."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass
class PointCloud2Like:
    """Duck-typed sensor_msgs/PointCloud2 used when sensor_msgs is not importable."""

    header: Any = None
    height: int = 1
    width: int = 0
    fields: List[PointFieldLike] = field(default_factory=list)
    is_bigendian: bool = False
    point_step: int = 0
    row_step: int = 0
    data: bytes = b""
    is_dense: bool = True


@dataclass
class CloudConversion:
    """Result of `convert_pointcloud2`.

    Attributes:
        points: (N, C) float32, columns in the requested field order, only finite rows.
        num_input: number of points in the message (height * width).
        num_dropped: rows dropped because a requested field was NaN or +-inf.
        zero_filled: requested fields absent from the message and filled with zeros.
    """

    points: np.ndarray
    num_input: int
    num_dropped: int
    zero_filled: Tuple[str, ...] = ()


def _as_buffer(data: Any) -> Any:
    """Return something np.frombuffer accepts for bytes/bytearray/memoryview/array/list data."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    try:
        return np.asarray(data, dtype=np.uint8)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PointCloudError(
            "cloud data of type %s is not bytes-like nor a list of 0..255 ints: %s"
            % (type(data).__name__, exc)
        ) from exc


def _validate_layout(msg: Any, point_step: int) -> Dict[str, Any]:
    """Check the field table; return {name: PointField} of the fields (padding left out)."""
    by_name: Dict[str, Any] = {}
    spans: List[Tuple[int, int, str]] = []
    for f in msg.fields:
        name = str(f.name)
        if name == PADDING_FIELD:
            continue  # PCL's padding bytes (pcl_ros, Ouster): any number of them, never read
        if name in by_name:
            raise PointCloudError(
                "cloud has two fields named %r; fix the publisher's PointField list" % name
            )
        by_name[name] = f
        code = POINTFIELD_DTYPES.get(int(f.datatype))
        if code is None:
            continue  # unknown datatypes are only an error when requested
        count = max(int(f.count), 1)
        size = int(code[1]) * count
        start = int(f.offset)
        if start < 0 or start + size > point_step:
            raise PointCloudError(
                "field %r (offset %d, %d bytes) lies outside point_step %d; the cloud's "
                "PointField offsets or point_step are wrong" % (name, start, size, point_step)
            )
        spans.append((start, start + size, name))
    spans.sort()
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            raise PointCloudError(
                "fields %r and %r overlap (offsets %d < %d); the cloud's PointField offsets "
                "are wrong" % (name_a, name_b, start_b, end_a)
            )
    return by_name


def _row_step(msg: Any, width: int, height: int, point_step: int) -> int:
    row_step = int(msg.row_step)
    if row_step == 0 and height <= 1:
        return width * point_step  # some publishers leave row_step unset for unorganized clouds
    if row_step < width * point_step:
        raise PointCloudError(
            "row_step %d is smaller than width * point_step = %d * %d; the cloud header is "
            "inconsistent" % (row_step, width, point_step)
        )
    return row_step


def convert_pointcloud2(
    msg: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    missing: str = "error",
    generated: Sequence[str] = (),
) -> CloudConversion:
    """Convert a PointCloud2 message to an (N, C) float32 array plus conversion counters.

    Reads any field order/offset, padded point_step, organized clouds (height > 1) with row
    padding, either byte order and the datatypes INT8..FLOAT64. Rows where any requested
    field is NaN or +-inf are dropped. Values are not scaled (intensity stays as published).

    Args:
        msg: sensor_msgs/PointCloud2 or any object with the same attributes (height, width,
            fields[name, offset, datatype, count], is_bigendian, point_step, row_step, data).
        fields: names of the output columns, in order.
        missing: "error" raises on a requested field the cloud lacks; "zeros" fills it with 0.
        generated: requested fields the caller fills itself (e.g. the multi-sweep "time" lag):
            their columns are 0, never read from the message (a driver's per-point "time" is
            another quantity) and not reported in ``zero_filled``.

    Returns:
        CloudConversion with points (N, len(fields)) float32 (C-contiguous) and counters.

    Raises:
        PointCloudError: missing field (with missing="error"), count != 1, unknown datatype,
            fields overlapping or outside point_step, data size inconsistent with the header.
    """
    if missing not in _MISSING_MODES:
        raise PointCloudError("missing=%r; use one of %s" % (missing, ", ".join(_MISSING_MODES)))
    fields = tuple(str(name) for name in fields)
    if not fields:
        raise PointCloudError("no fields requested; pass e.g. fields=('x', 'y', 'z')")
    if len(set(fields)) != len(fields):
        raise PointCloudError("requested fields %s contain duplicates" % (fields,))
    width, height = int(msg.width), int(msg.height)
    point_step = int(msg.point_step)
    if width < 0 or height < 0:
        raise PointCloudError("cloud has negative width %d or height %d" % (width, height))
    num = width * height
    by_name = _validate_layout(msg, point_step)
    generated = tuple(str(name) for name in generated)
    by_name = {name: f for name, f in by_name.items() if name not in generated}

    missing_names = [name for name in fields if name not in by_name and name not in generated]
    if missing_names and missing == "error":
        name = missing_names[0]
        present = ", ".join(str(f.name) for f in msg.fields) or "none"
        raise PointCloudError(
            "cloud has no %r field (fields: %s); publish %r, or convert with missing='zeros' "
            "to fill it with zeros" % (name, present, name)
        )
    for name in fields:
        if name in by_name:
            f = by_name[name]
            if int(f.datatype) not in POINTFIELD_DTYPES:
                raise PointCloudError(
                    "field %r has unknown PointField datatype %d (expected 1..8: INT8..FLOAT64)"
                    % (name, int(f.datatype))
                )
            if int(f.count) > 1:
                raise PointCloudError(
                    "field %r has count %d; only scalar fields (count 1) can be point "
                    "features: publish it as separate fields" % (name, int(f.count))
                )

    out_cols = len(fields)
    if num == 0:
        size = len(msg.data) if hasattr(msg.data, "__len__") else 0
        if size:
            raise PointCloudError(
                "cloud has 0 points (width %d x height %d) but %d bytes of data; its header "
                "is wrong" % (width, height, size))
        return CloudConversion(np.zeros((0, out_cols), np.float32), 0, 0, tuple(missing_names))
    if point_step <= 0:
        raise PointCloudError("point_step is %d for a cloud of %d points" % (point_step, num))
    row_step = _row_step(msg, width, height, point_step)
    raw = np.frombuffer(_as_buffer(msg.data), dtype=np.uint8)
    nbytes = raw.size
    if nbytes != row_step * height:
        raise PointCloudError(
            "cloud data has %d bytes but height * row_step = %d * %d = %d (width %d, "
            "point_step %d); the message is truncated or its header is wrong"
            % (nbytes, height, row_step, row_step * height, width, point_step)
        )

    order = ">" if bool(msg.is_bigendian) else "<"
    native_f32 = np.dtype(order + "f4") == np.dtype(np.float32)
    present = [(j, by_name[name]) for j, name in enumerate(fields) if name in by_name]
    offsets = [int(f.offset) for _, f in present]
    contiguous_f32 = (
        native_f32
        and len(present) == out_cols
        and all(int(f.datatype) == _FLOAT32 for _, f in present)
        and offsets == list(range(offsets[0], offsets[0] + 4 * out_cols, 4))
    )

    def strided(dtype: np.dtype, offset: int) -> np.ndarray:
        return np.ndarray(
            shape=(height, width), dtype=dtype, buffer=raw, offset=offset,
            strides=(row_step, point_step),
        )

    if contiguous_f32:
        # Fast path: the requested columns are one run of native float32: copy each point's
        # run as one opaque record (a single strided memcpy-like copy), then reinterpret.
        records = strided(np.dtype("V%d" % (4 * out_cols)), offsets[0])
        out = records.copy().view(np.float32).reshape(num, out_cols)
    else:
        # General path: one strided view per field, converted while copied into the output.
        out = np.zeros((num, out_cols), np.float32)
        grid = out.reshape(height, width, out_cols)
        for j, f in present:
            grid[:, :, j] = strided(np.dtype(order + POINTFIELD_DTYPES[int(f.datatype)]),
                                    int(f.offset))

    num_dropped = 0
    if not np.isfinite(out).all():
        # Row sums are non-finite for every row holding NaN/inf (and, rarely, for huge finite
        # rows that overflow): check only those candidate rows element by element.
        sums = out[:, 0].copy()
        for j in range(1, out_cols):
            sums += out[:, j]
        keep = np.isfinite(sums)
        cand = np.flatnonzero(~keep)
        if cand.size:
            finite = np.isfinite(out[cand])
            ok = finite[:, 0].copy()
            for j in range(1, out_cols):
                ok &= finite[:, j]
            keep[cand] = ok
        num_dropped = int(num - np.count_nonzero(keep))
        if num_dropped:
            out = np.compress(keep, out, axis=0)
    return CloudConversion(out, num, num_dropped, tuple(missing_names))


def pointcloud2_to_array(
    msg: Any,
    fields: Sequence[str] = DEFAULT_FIELDS,
    missing: str = "error",
) -> np.ndarray:
    """Convert a PointCloud2 message to an (N, C) float32 array (non-finite rows dropped).

    Same as `convert_pointcloud2(...).points`; use that function to also get how many rows
    were dropped and which fields were zero-filled.

    Args:
        msg: sensor_msgs/PointCloud2 or a duck-typed equivalent.
        fields: names of the output columns, in order (default x, y, z, intensity).
        missing: "error" (default) or "zeros" for requested fields the cloud lacks.

    Returns:
        (N, len(fields)) float32 array, C-contiguous, sensor frame of the message, metres.

    Raises:
        PointCloudError: see `convert_pointcloud2`.
    """
    return convert_pointcloud2(msg, fields=fields, missing=missing).points


def array_to_pointcloud2(
    points: np.ndarray,
    header: Any = None,
    fields: Sequence[str] = DEFAULT_FIELDS,
) -> Any:
    """Build an unorganized float32 PointCloud2 (height 1, is_dense) from an (N, C) array.

    Args:
        points: (N, C) array, cast to little-endian float32; C == len(fields).
        header: std_msgs/Header copied into the message (None -> default header).
        fields: field names for the C columns, in order; offsets are 4 * column.

    Returns:
        sensor_msgs.msg.PointCloud2, or `PointCloud2Like` when sensor_msgs is not importable.

    Raises:
        PointCloudError: points is not 2-D or its column count differs from len(fields).
    """
    fields = tuple(str(name) for name in fields)
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != len(fields):
        raise PointCloudError(
            "points has shape %s but %d fields %s were given; pass an (N, %d) array"
            % (arr.shape, len(fields), fields, len(fields))
        )
    data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
    num, cols = arr.shape
    point_step = 4 * cols
    try:
        from sensor_msgs.msg import PointCloud2, PointField  # noqa: WPS433 (optional ROS)
        from std_msgs.msg import Header
    except ImportError:
        return PointCloud2Like(
            header=header,
            height=1,
            width=num,
            fields=[PointFieldLike(name, 4 * j, _FLOAT32, 1) for j, name in enumerate(fields)],
            is_bigendian=False,
            point_step=point_step,
            row_step=point_step * num,
            data=data,
            is_dense=True,
        )
    return PointCloud2(
        header=header if header is not None else Header(),
        height=1,
        width=num,
        fields=[PointField(name, 4 * j, PointField.FLOAT32, 1) for j, name in enumerate(fields)],
        is_bigendian=False,
        point_step=point_step,
        row_step=point_step * num,
        data=data,
        is_dense=True,
    )

