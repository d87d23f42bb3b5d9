"""INT8 calibration data (no GPU needed): batch files, their hash, and the calibrator's host side.

The device side (the IInt8EntropyCalibrator2 subclass, an INT8 build) needs TensorRT and a GPU:
`test_int8_plan_on_gpu` runs it there and is skipped everywhere else.
"""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.backends import create_backend
from admlops_ros.backends import tensorrt_calibration as tc
from admlops_ros.backends.tensorrt_backend import tensorrt_available
from admlops_ros.lidar.engine import INPUT_NAMES
from tests.fixtures.tiny_model import make_tiny_onnx, random_voxels

CALIB_ROWS = 96  # the tiny model's max voxels (8 x 12 canvas)
SHAPES = {"voxels": (CALIB_ROWS, 5, 4), "num_points": (CALIB_ROWS,), "coors": (CALIB_ROWS, 4)}
DTYPES = {"voxels": np.float32, "num_points": np.int32, "coors": np.int32}


def feed(v, seed=0):
    return dict(zip(INPUT_NAMES, random_voxels(v, seed=seed)))


def stream(data, shapes=SHAPES, dynamic=INPUT_NAMES):
    return tc.CalibrationStream(data, shapes, DTYPES, dynamic)


def test_write_then_read_round_trip(tmp_path):
    feeds = [feed(v, seed=v) for v in (7, 30, 96)]
    files = tc.write_calibration_batches(feeds, tmp_path / "calib")
    assert [p.name for p in files] == ["0000.npz", "0001.npz", "0002.npz"]
    data = tc.open_calibration_dir(tmp_path / "calib")
    assert data.files == tuple(files) and data.names == ("coors", "num_points", "voxels")
    assert data.dtypes == {"voxels": np.float32, "num_points": np.int32, "coors": np.int32}
    assert data.trailing == {"voxels": (5, 4), "num_points": (), "coors": (4,)}
    assert data.max_rows == {"voxels": 96, "num_points": 96, "coors": 96}
    for (path, arrays), want in zip(data.batches(), feeds):
        assert set(arrays) == set(want)
        for name in want:
            np.testing.assert_array_equal(arrays[name], want[name], err_msg=str(path))
            assert arrays[name].dtype == want[name].dtype


def test_hash_follows_the_arrays_not_the_zip_files(tmp_path):
    feeds = [feed(10, seed=1), feed(20, seed=2)]
    tc.write_calibration_batches(feeds, tmp_path / "a")
    tc.write_calibration_batches(feeds, tmp_path / "b")
    sha = tc.open_calibration_dir(tmp_path / "a").sha256
    assert tc.open_calibration_dir(tmp_path / "b").sha256 == sha
    feeds[1]["voxels"][0, 0, 0] += 1.0
    tc.write_calibration_batches(feeds, tmp_path / "a", overwrite=True)
    assert tc.open_calibration_dir(tmp_path / "a").sha256 != sha


def test_batches_are_read_in_numeric_order(tmp_path):
    feeds = [feed(3 + i, seed=i) for i in range(11)]
    tc.write_calibration_batches(feeds, tmp_path)
    (tmp_path / "0010.npz").rename(tmp_path / "10.npz")  # "10" sorts before "2" as text
    assert [p.stem for p in tc.batch_files(tmp_path)][-3:] == ["0008", "0009", "10"]


def test_writer_refuses_bad_feeds_and_old_batches(tmp_path):
    with pytest.raises(tc.CalibrationError, match="no calibration feeds"):
        tc.write_calibration_batches([], tmp_path)
    other = feed(5)
    del other["coors"]
    with pytest.raises(tc.CalibrationError, match="feed 1 has inputs .* the same inputs"):
        tc.write_calibration_batches([feed(5), other], tmp_path)
    wide = feed(5)
    wide["voxels"] = np.zeros((5, 5, 3), np.float32)
    with pytest.raises(tc.CalibrationError, match="only the first axis may differ"):
        tc.write_calibration_batches([feed(5), wide], tmp_path)
    empty = {k: v[:0] for k, v in feed(5).items()}
    with pytest.raises(tc.CalibrationError, match="at least one row"):
        tc.write_calibration_batches([empty], tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written by a refused call
    tc.write_calibration_batches([feed(5), feed(6), feed(7)], tmp_path)
    with pytest.raises(tc.CalibrationError, match="already holds 3 calibration batches"):
        tc.write_calibration_batches([feed(8)], tmp_path)
    tc.write_calibration_batches([feed(8)], tmp_path, overwrite=True)
    assert [p.name for p in tc.batch_files(tmp_path)] == ["0000.npz"]  # no old batch left


def test_reader_errors_name_the_directory_or_file(tmp_path):
    with pytest.raises(tc.CalibrationError, match="does not exist"):
        tc.open_calibration_dir(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not a batch")
    with pytest.raises(tc.CalibrationError, match="holds no calibration batches"):
        tc.open_calibration_dir(tmp_path)
    tc.write_calibration_batches([feed(5), feed(6)], tmp_path)
    (tmp_path / "0001.npz").write_bytes(b"not a zip")
    with pytest.raises(tc.CalibrationError, match="0001.npz is unreadable"):
        tc.open_calibration_dir(tmp_path)
    (tmp_path / "0001.npz").unlink()
    (tmp_path / "frame.npz").write_bytes(b"")
    with pytest.raises(tc.CalibrationError, match="holds frame.npz"):
        tc.open_calibration_dir(tmp_path)


def test_stream_tiles_each_batch_to_the_calibration_rows(tmp_path):
    feeds = [feed(v, seed=v) for v in (7, 96, 40)]
    tc.write_calibration_batches(feeds, tmp_path)
    s = stream(tc.open_calibration_dir(tmp_path))
    assert s.nbytes() == {"voxels": 96 * 5 * 4 * 4, "num_points": 96 * 4, "coors": 96 * 16}
    names = ["coors", "voxels", "num_points"]  # TensorRT's order, not the file's
    for want in feeds:
        got = dict(zip(names, s.next_batch(names)))
        v = len(want["voxels"])
        for name in names:
            assert got[name].shape == SHAPES[name] and got[name].dtype == DTYPES[name]
            assert got[name].flags["C_CONTIGUOUS"]
            np.testing.assert_array_equal(got[name], want[name][np.arange(CALIB_ROWS) % v])
    assert s.next_batch(names) is None and s.count == 3
    assert s.next_batch(names) is None


def test_tiled_batch_gives_the_network_output_of_the_real_frame(tmp_path):
    """Tiled voxels scatter the same pillar features into the same cells: what the layers
    after the scatter see while calibrating is the real frame."""
    onnx = make_tiny_onnx(tmp_path / "end2end.onnx")
    real = feed(13, seed=5)
    tiled = {k: tc.tile_rows(v, CALIB_ROWS) for k, v in real.items()}
    with create_backend("onnxruntime", {"onnx": onnx}) as ort:
        want, got = ort.run(real), ort.run(tiled)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)


def test_stream_checks_batches_against_the_network(tmp_path):
    tc.write_calibration_batches([feed(5), feed(20)], tmp_path)
    data = tc.open_calibration_dir(tmp_path)
    with pytest.raises(tc.CalibrationError, match="up to 20 rows of .* above the 16"):
        stream(data, {k: (16,) + v[1:] for k, v in SHAPES.items()})
    with pytest.raises(tc.CalibrationError, match=r"also takes \['intensity'\]"):
        stream(data, dict(SHAPES, intensity=(96,)))
    with pytest.raises(tc.CalibrationError, match=r"voxels has shape \[N, 5, 4\], the network "
                                                  r"takes \[96, 5, 3\]"):
        stream(data, dict(SHAPES, voxels=(96, 5, 3)))
    tc.CalibrationStream(data, SHAPES, dict(DTYPES, coors=np.int64), INPUT_NAMES)  # widening
    floats = feed(5)
    floats["num_points"] = floats["num_points"].astype(np.float32)
    tc.write_calibration_batches([floats], tmp_path / "floats")
    with pytest.raises(tc.CalibrationError, match="num_points is float32, the network takes "
                                                  "int32"):
        stream(tc.open_calibration_dir(tmp_path / "floats"))
    with pytest.raises(tc.CalibrationError, match="asked for inputs"):
        stream(data).next_batch(["points"])


def test_stream_refuses_a_batch_of_mixed_frames(tmp_path):
    mixed = feed(10)
    mixed["coors"] = feed(12)["coors"]
    tc.write_calibration_batches([mixed], tmp_path)
    with pytest.raises(tc.CalibrationError, match="different first axes"):
        stream(tc.open_calibration_dir(tmp_path)).next_batch(list(INPUT_NAMES))


def test_static_inputs_are_fed_as_they_are(tmp_path):
    image = {"image": np.ones((1, 3, 4, 4), np.float32)}
    tc.write_calibration_batches([image], tmp_path)
    data = tc.open_calibration_dir(tmp_path)
    s = tc.CalibrationStream(data, {"image": (1, 3, 4, 4)}, {"image": np.float32})
    (got,) = s.next_batch(["image"])
    np.testing.assert_array_equal(got, image["image"])
    other = tc.CalibrationStream(data, {"image": (2, 3, 4, 4)}, {"image": np.float32})
    with pytest.raises(tc.CalibrationError, match=r"image has shape \[1, 3, 4, 4\], the "
                                                  r"network takes \[2, 3, 4, 4\]"):
        other.next_batch(["image"])


@pytest.mark.skipif(not tensorrt_available(), reason="needs TensorRT >= 8.6, CUDA Python "
                    "bindings and an NVIDIA GPU (INT8 plans are exercised only on NVIDIA "
                    "machines)")
def test_int8_plan_on_gpu(tmp_path):  # pragma: no cover - runs only on NVIDIA machines
    from admlops_ros.backends.tensorrt_backend import build_engine_from_onnx

    onnx = make_tiny_onnx(tmp_path / "end2end.onnx")
    tc.write_calibration_batches([feed(v, seed=v) for v in range(8, 96, 8)], tmp_path / "calib")
    plan, cache = tmp_path / "tiny.int8.plan", tmp_path / "tiny.int8.calib"
    build_engine_from_onnx(onnx, plan, 1, 40, CALIB_ROWS, int8=True, calib_dir=tmp_path / "calib",
                           calib_cache=cache, keep_fp32=())
    assert plan.stat().st_size > 0 and cache.stat().st_size > 0
    stamp = cache.stat().st_mtime_ns
    build_engine_from_onnx(onnx, plan, 1, 40, CALIB_ROWS, int8=True, calib_dir=tmp_path / "calib",
                           calib_cache=cache)  # calibration cache reused, not rewritten
    assert cache.stat().st_mtime_ns == stamp
    inputs = feed(30, seed=99)
    with create_backend("onnxruntime", {"onnx": onnx}) as ort, \
            create_backend("tensorrt", {"tensorrt_plan": plan}) as trt:
        want, got = ort.run(inputs), trt.run(inputs)
    for name in want:
        scale = float(np.abs(want[name]).max()) or 1.0
        assert float(np.abs(got[name] - want[name]).max()) <= 0.1 * scale, name
