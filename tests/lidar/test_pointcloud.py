"""PointCloud2 <-> array conversion against sensor_msgs.point_cloud2.read_points."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
import pytest

from admlops_ros.lidar.pointcloud import (
    POINTFIELD_DTYPES,
    PointCloud2Like,
    PointCloudError,
    PointFieldLike,
    array_to_pointcloud2,
    convert_pointcloud2,
    pointcloud2_to_array,
)

INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)

# (name, datatype, offset): a layout; point_step None -> packed
Layout = Sequence[Tuple[str, int, int]]


def make_values(rng: np.random.Generator, datatype: int, shape: Tuple[int, ...]) -> np.ndarray:
    """Random values representable in the PointField datatype."""
    code = POINTFIELD_DTYPES[datatype]
    if code.startswith("f"):
        return (rng.standard_normal(shape) * 40.0).astype(code)
    info = np.iinfo(code)
    return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=np.int64).astype(code)


def make_cloud(
    layout: Layout,
    width: int,
    height: int = 1,
    point_step: Optional[int] = None,
    row_pad: int = 0,
    bigendian: bool = False,
    seed: int = 0,
    values: Optional[dict] = None,
    msg_cls: Optional[type] = None,
):
    """Build a PointCloud2 (or PointCloud2Like) with an arbitrary layout and random values.

    Returns:
        (msg, values): values maps field name -> (height, width) array of the stored values.
    """
    rng = np.random.default_rng(seed)
    order = ">" if bigendian else "<"
    end = max(off + int(POINTFIELD_DTYPES[dt][1]) for _, dt, off in layout)
    step = end if point_step is None else point_step
    dtype = np.dtype({
        "names": [name for name, _, _ in layout],
        "formats": [order + POINTFIELD_DTYPES[dt] for _, dt, _ in layout],
        "offsets": [off for _, _, off in layout],
        "itemsize": step,
    })
    rec = np.zeros((height, width), dtype)
    vals = {}
    for name, dt, _ in layout:
        v = values[name] if values and name in values else make_values(rng, dt, (height, width))
        rec[name] = v
        vals[name] = rec[name].copy()
    row_step = step * width + row_pad
    rows = np.zeros((height, row_step), np.uint8)
    rows[:, : step * width] = rec.view(np.uint8).reshape(height, step * width)
    rows[:, step * width:] = 0xAB  # garbage in the row padding
    if msg_cls is None:
        from sensor_msgs.msg import PointCloud2, PointField

        fields = [PointField(name, off, dt, 1) for name, dt, off in layout]
        msg = PointCloud2(height=height, width=width, fields=fields, is_bigendian=bigendian,
                          point_step=step, row_step=row_step, data=rows.tobytes(),
                          is_dense=False)
    else:
        fields = [PointFieldLike(name, off, dt, 1) for name, dt, off in layout]
        msg = msg_cls(height=height, width=width, fields=fields, is_bigendian=bigendian,
                      point_step=step, row_step=row_step, data=rows.tobytes(), is_dense=False)
    return msg, vals


def reference(msg, fields: Sequence[str]) -> np.ndarray:
    """read_points (skip_nans, then inf filtered) reordered to the requested field order."""
    pc2 = pytest.importorskip("sensor_msgs.point_cloud2")
    by_offset = sorted((f for f in msg.fields if f.name in fields), key=lambda f: f.offset)
    names = [f.name for f in by_offset]
    rows = list(pc2.read_points(msg, field_names=list(fields), skip_nans=True))
    arr = np.array(rows, dtype=np.float64).reshape(len(rows), len(names))
    arr = arr[:, [names.index(n) for n in fields]].astype(np.float32)
    return arr[np.isfinite(arr).all(axis=1)]


XYZI = (("x", FLOAT32, 0), ("y", FLOAT32, 4), ("z", FLOAT32, 8), ("intensity", FLOAT32, 12))

LAYOUTS = {
    "packed16": dict(layout=XYZI),
    "padded32": dict(layout=XYZI, point_step=32),
    "reordered": dict(layout=(("intensity", FLOAT32, 0), ("z", FLOAT32, 4), ("x", FLOAT32, 12),
                              ("y", FLOAT32, 16)), point_step=24),
    "ouster_like": dict(layout=(("x", FLOAT32, 0), ("y", FLOAT32, 4), ("z", FLOAT32, 8),
                                ("intensity", FLOAT32, 16), ("t", UINT32, 20),
                                ("reflectivity", UINT16, 24), ("ring", UINT16, 26),
                                ("ambient", UINT16, 28), ("range", UINT32, 32)),
                        point_step=48, height=16, row_pad=0),
    "organized_row_pad": dict(layout=XYZI, point_step=20, height=8, row_pad=36),
    "bigendian": dict(layout=XYZI, bigendian=True, point_step=20),
    "bigendian_rows": dict(layout=(("x", FLOAT64, 0), ("y", FLOAT64, 8), ("z", FLOAT64, 16),
                                   ("intensity", UINT16, 24)), bigendian=True, height=4,
                           row_pad=6),
    "float64": dict(layout=(("x", FLOAT64, 0), ("y", FLOAT64, 8), ("z", FLOAT64, 16),
                            ("intensity", FLOAT64, 24))),
    "uint8_intensity": dict(layout=(("x", FLOAT32, 0), ("y", FLOAT32, 4), ("z", FLOAT32, 8),
                                    ("intensity", UINT8, 12)), point_step=16),
    "uint16_intensity_unaligned": dict(layout=(("intensity", UINT16, 0), ("x", FLOAT32, 2),
                                               ("y", FLOAT32, 6), ("z", FLOAT32, 10))),
    "int_fields": dict(layout=(("x", INT16, 0), ("y", INT32, 2), ("z", INT8, 6),
                               ("intensity", UINT32, 8), ("ring", UINT16, 12)),
                       point_step=16, height=3, row_pad=4),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_matches_read_points(name):
    spec = dict(LAYOUTS[name])
    layout = spec.pop("layout")
    msg, _ = make_cloud(layout, width=97, seed=len(name), **spec)
    ours = pointcloud2_to_array(msg)
    ref = reference(msg, ("x", "y", "z", "intensity"))
    assert ours.dtype == np.float32 and ours.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(ours, ref)


def test_other_field_selection_and_order():
    msg, vals = make_cloud(LAYOUTS["ouster_like"]["layout"], width=50, height=2, point_step=48)
    ours = pointcloud2_to_array(msg, fields=("ring", "x", "t"))
    np.testing.assert_array_equal(ours, reference(msg, ("ring", "x", "t")))
    np.testing.assert_array_equal(ours[:, 0], vals["ring"].reshape(-1).astype(np.float32))


def test_duck_typed_message_with_list_data():
    msg, vals = make_cloud(XYZI, width=10, height=3, row_pad=8, msg_cls=PointCloud2Like)
    msg.data = list(msg.data)
    ours = pointcloud2_to_array(msg)
    expected = np.stack([vals[n].reshape(-1) for n in ("x", "y", "z", "intensity")], axis=1)
    np.testing.assert_array_equal(ours, expected)
    msg.data = memoryview(bytes(msg.data))
    np.testing.assert_array_equal(pointcloud2_to_array(msg), expected)


@pytest.mark.parametrize("name", ["packed16", "int_fields", "bigendian"])
def test_drops_nonfinite_rows(name):
    spec = dict(LAYOUTS[name])
    layout = spec.pop("layout")
    width = 40
    bad = {}
    for fname, dt, _ in layout:
        if POINTFIELD_DTYPES[dt].startswith("f"):
            v = make_values(np.random.default_rng(1), dt, (spec.get("height", 1), width))
            flat = v.reshape(-1)
            if fname == "x":
                flat[3] = np.nan
                flat[7] = np.inf
            if fname == "intensity":
                flat[11] = -np.inf
            if fname == "z":
                flat[3] = np.nan  # same row twice: counted once
            bad[fname] = v
    msg, _ = make_cloud(layout, width=width, values=bad, **spec)
    conv = convert_pointcloud2(msg)
    ref = reference(msg, ("x", "y", "z", "intensity"))
    np.testing.assert_array_equal(conv.points, ref)
    assert conv.num_input == width * spec.get("height", 1)
    assert conv.num_dropped == conv.num_input - len(ref)
    if bad:
        assert conv.num_dropped == (3 if "intensity" in bad else 2)


def test_nan_in_unrequested_field_is_kept():
    layout = XYZI + (("extra", FLOAT32, 16),)
    extra = np.full((1, 5), np.nan, np.float32)
    msg, _ = make_cloud(layout, width=5, values={"extra": extra})
    assert pointcloud2_to_array(msg).shape == (5, 4)


def test_huge_finite_values_are_kept():
    big = np.full((1, 4), 3.0e38, np.float32)
    msg, _ = make_cloud(XYZI, width=4, values={"x": big, "y": big, "z": big})
    conv = convert_pointcloud2(msg)
    assert conv.num_dropped == 0 and conv.points.shape == (4, 4)


def test_missing_field_error_names_field_and_fix():
    layout = XYZI[:3] + (("ring", UINT16, 12),)
    msg, _ = make_cloud(layout, width=6)
    with pytest.raises(PointCloudError) as err:
        pointcloud2_to_array(msg)
    text = str(err.value)
    assert "'intensity'" in text and "x, y, z, ring" in text and "zeros" in text


def test_missing_field_zeros():
    layout = (("x", FLOAT32, 0), ("y", FLOAT32, 4), ("z", FLOAT32, 8))
    msg, vals = make_cloud(layout, width=6)
    conv = convert_pointcloud2(msg, missing="zeros")
    assert conv.zero_filled == ("intensity",)
    assert conv.points.shape == (6, 4)
    np.testing.assert_array_equal(conv.points[:, 3], 0.0)
    np.testing.assert_array_equal(conv.points[:, 0], vals["x"].reshape(-1))


def test_bad_missing_mode():
    msg, _ = make_cloud(XYZI, width=2)
    with pytest.raises(PointCloudError, match="missing"):
        pointcloud2_to_array(msg, missing="ignore")


def test_count_greater_than_one_rejected():
    msg, _ = make_cloud(XYZI, width=3, point_step=24)
    msg.fields[3].count = 2
    with pytest.raises(PointCloudError, match="count 2"):
        pointcloud2_to_array(msg)


def test_unknown_datatype_rejected():
    msg, _ = make_cloud(XYZI, width=3)
    msg.fields[3].datatype = 9
    with pytest.raises(PointCloudError, match="datatype 9"):
        pointcloud2_to_array(msg)


@pytest.mark.parametrize("mutate,match", [
    (lambda m: setattr(m, "data", m.data[:-1]), "truncated"),
    (lambda m: setattr(m, "data", m.data + b"\0" * 16), "truncated"),
    (lambda m: setattr(m, "height", 2), "truncated"),
    (lambda m: setattr(m, "row_step", 8), "row_step"),
    (lambda m: setattr(m.fields[1], "offset", 2), "overlap"),
    (lambda m: setattr(m.fields[3], "offset", 14), "outside point_step"),
    (lambda m: setattr(m, "point_step", 12), "outside point_step"),
])
def test_inconsistent_messages_rejected(mutate, match):
    msg, _ = make_cloud(XYZI, width=8)
    mutate(msg)
    with pytest.raises(PointCloudError, match=match):
        pointcloud2_to_array(msg)


def test_row_step_zero_for_unorganized_cloud():
    msg, vals = make_cloud(XYZI, width=8)
    msg.row_step = 0
    np.testing.assert_array_equal(pointcloud2_to_array(msg)[:, 1], vals["y"].reshape(-1))


def test_empty_cloud():
    msg, _ = make_cloud(XYZI, width=0)
    out = pointcloud2_to_array(msg)
    assert out.shape == (0, 4) and out.dtype == np.float32


def test_round_trip_ros_message():
    pytest.importorskip("sensor_msgs.msg")
    from std_msgs.msg import Header

    pts = np.random.default_rng(3).standard_normal((1000, 4)).astype(np.float32)
    header = Header(seq=7, frame_id="lidar")
    msg = array_to_pointcloud2(pts, header)
    assert type(msg).__name__ == "PointCloud2" and msg.header.frame_id == "lidar"
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 1000, 16, 16000)
    assert msg.is_dense and not msg.is_bigendian and isinstance(msg.data, bytes)
    np.testing.assert_array_equal(pointcloud2_to_array(msg), pts)
    np.testing.assert_array_equal(reference(msg, ("x", "y", "z", "intensity")), pts)
    # serializes like any ROS message
    from io import BytesIO

    buf = BytesIO()
    msg.serialize(buf)
    back = type(msg)()
    back.deserialize(buf.getvalue())
    np.testing.assert_array_equal(pointcloud2_to_array(back), pts)


def test_round_trip_custom_fields_and_float64_input():
    pts = np.arange(15, dtype=np.float64).reshape(5, 3)
    msg = array_to_pointcloud2(pts, None, fields=("a", "b", "c"))
    np.testing.assert_array_equal(pointcloud2_to_array(msg, fields=("c", "a")), pts[:, [2, 0]])


def test_array_to_pointcloud2_shape_error():
    with pytest.raises(PointCloudError, match="fields"):
        array_to_pointcloud2(np.zeros((3, 3), np.float32), None)


def test_fallback_without_sensor_msgs(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("sensor_msgs") or name.startswith("std_msgs"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    pts = np.ones((3, 4), np.float32)
    msg = array_to_pointcloud2(pts, header="h")
    assert isinstance(msg, PointCloud2Like) and msg.header == "h"
    np.testing.assert_array_equal(pointcloud2_to_array(msg), pts)



def test_pcl_padding_fields_are_ignored():
    """issue 18: Ouster / pcl_ros clouds carry several padding fields named '_'."""
    from sensor_msgs.msg import PointField
    layout = [("x", FLOAT32, 0), ("y", FLOAT32, 4), ("z", FLOAT32, 8), ("intensity", FLOAT32, 16),
              ("t", UINT32, 20), ("ring", UINT16, 24)]
    msg, vals = make_cloud(layout, width=10, point_step=48)
    msg.fields.insert(3, PointField("_", 12, UINT8, 4))      # PCL aligns xyz to 16 bytes
    msg.fields.append(PointField("_", 26, UINT8, 22))        # and pads the point to 48
    got = pointcloud2_to_array(msg)
    expect = np.stack([vals[n].reshape(-1) for n in ("x", "y", "z", "intensity")], axis=1)
    np.testing.assert_array_equal(got, expect.astype(np.float32))
    with pytest.raises(PointCloudError, match="two fields named 'x'"):
        msg.fields.append(PointField("x", 40, FLOAT32, 1))
        pointcloud2_to_array(msg)


def test_zero_points_with_data_is_a_header_error():
    msg, _ = make_cloud(XYZI, width=8)
    msg.height = 0
    with pytest.raises(PointCloudError, match="0 points .* but 128 bytes of data"):
        pointcloud2_to_array(msg)
    msg.data = b""
    assert pointcloud2_to_array(msg).shape == (0, 4)


def test_generated_fields_are_zero_never_read_and_not_reported():
    pts = np.array([[1, 2, 3, 4, 0.07], [5, 6, 7, 8, np.nan]], np.float32)
    msg = array_to_pointcloud2(pts, fields=("x", "y", "z", "intensity", "time"))
    # a driver's per-point "time" (here NaN in one row) is not the multi-sweep lag
    conv = convert_pointcloud2(msg, ("x", "y", "z", "intensity", "time"), generated=("time",))
    np.testing.assert_array_equal(conv.points, [[1, 2, 3, 4, 0], [5, 6, 7, 8, 0]])
    assert conv.zero_filled == () and conv.num_dropped == 0
    no_time = array_to_pointcloud2(pts[:, :4])
    conv = convert_pointcloud2(no_time, ("x", "y", "z", "intensity", "time"), missing="error",
                               generated=("time",))
    assert conv.points.shape == (2, 5) and not conv.points[:, 4].any()
