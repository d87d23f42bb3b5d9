"""admlops export / import-labels: bag -> KITTI -> bag round trips, images, pre-annotations with
scores, the stamps filter, a bag without ground truth, serial == process pool, label import."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

from admlops_ros.data import export as ex
from admlops_ros.data import mmdet3d_infos as infos
from admlops_ros.evaluation import bags, kitti_io
from admlops_ros.evaluation.protocol import kitti_difficulty
from tests.paths import REPO_ROOT

DET_TOPIC = "/detection/lidar_detector/objects"


pytestmark = pytest.mark.usefixtures("bag_messages")


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sim.bag"
    bags.bag_from_sim(path, 3, seed=5, progress=False)
    return path


@pytest.fixture(scope="module")
def image_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sim_images.bag"
    bags.bag_from_sim(path, 2, seed=11, progress=False, images="raw")
    return path


def _frames(path: Path) -> List[bags.BagFrame]:
    _, frames = bags.read_bag(path)
    return list(frames)


def _tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_round_trip_bag_kitti_bag_keeps_clouds_boxes_names(sim_bag, tmp_path):
    summary = ex.export_dataset([sim_bag], tmp_path / "ds", workers=1)
    assert summary.ok and len(summary.frames) == 3
    ids = [f.frame for f in summary.frames]
    assert ids == ["000000", "000001", "000002"]
    back = tmp_path / "back.bag"
    bags.bag_from_kitti(tmp_path / "ds" / "training", ids, back, progress=False)
    calib = kitti_io.nominal_calib()
    matched = total = 0
    for a, b in zip(_frames(sim_bag), _frames(back)):
        assert a.stamp_ns == summary.frames[a.index].stamp_ns
        np.testing.assert_array_equal(a.points, b.points)            # bit-exact clouds
        assert list(a.gt.names) == list(b.gt.names)
        np.testing.assert_allclose(b.gt.boxes[:, :6], a.gt.boxes[:, :6], atol=2e-4)
        dyaw = (b.gt.boxes[:, 6] - a.gt.boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi
        np.testing.assert_allclose(dyaw, 0.0, atol=2e-4)
        # difficulty: kept where KITTI's rule can express it; outside image 2 it is -1, and
        # where the 2D box is too small / truncated for the bag's level it is the box's level
        proj, trunc, visible = kitti_io.project_boxes_to_image(a.gt.boxes, calib)
        geometric = kitti_difficulty(proj, np.zeros(len(proj)), trunc)
        for k in range(len(a.gt)):
            got, want = int(b.gt.difficulty[k]), int(a.gt.difficulty[k])
            total += 1
            matched += got == want
            if not visible[k]:
                assert got == -1
            elif got != want:
                assert got == geometric[k], (k, got, want, geometric[k])
    assert total > 20 and matched >= 0.5 * total


def test_round_trip_from_kitti_keeps_difficulty(tmp_path):
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    src = tmp_path / "kitti" / "training"
    for i in range(2):
        kitti_io.write_frame(src, i, simulate_frame(70 + i, SceneConfig(),
                                                    SensorConfig.preset("hdl64")))
    bag_a, bag_b = tmp_path / "a.bag", tmp_path / "b.bag"
    bags.bag_from_kitti(src, ["000000", "000001"], bag_a, progress=False)
    summary = ex.export_dataset([bag_a], tmp_path / "ds", workers=1)
    bags.bag_from_kitti(tmp_path / "ds" / "training", [f.frame for f in summary.frames], bag_b,
                        progress=False)
    for a, b in zip(_frames(bag_a), _frames(bag_b)):
        np.testing.assert_array_equal(a.points, b.points)
        assert list(a.gt.names) == list(b.gt.names) and len(a.gt) > 0
        np.testing.assert_allclose(b.gt.boxes, a.gt.boxes, atol=2e-4)
        np.testing.assert_array_equal(b.gt.difficulty, a.gt.difficulty)


def test_images_exported_with_their_2d_labels(image_bag, tmp_path):
    from admlops_ros.evaluation.camera_bags import read_camera_bag
    summary = ex.export_dataset([image_bag], tmp_path / "ds", workers=1)
    training = tmp_path / "ds" / "training"
    _, cams = read_camera_bag(image_bag)
    cams = list(cams)
    assert len(cams) == len(summary.frames) == 2
    import cv2
    for fr, cam in zip(summary.frames, cams):
        assert fr.image == "/camera/image_raw" and fr.stamp_ns == cam.stamp_ns
        png = cv2.imread(str(training / "image_2" / f"{fr.frame}.png"), cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(png, cam.image)
        assert fr.calib.startswith("bag:/tf_static velodyne->camera + CameraInfo P")
        objects = kitti_io.read_label(training / "label_2" / f"{fr.frame}.txt")
        boxes2d = {tuple(np.round(b, 2)) for b in cam.gt.boxes}
        from_bag = [o for o in objects if tuple(np.round(o.bbox, 2)) in boxes2d]
        assert from_bag, "no label carries the bag's 2D box"
    info = pickle.loads((tmp_path / "ds" / "kitti_infos_train.pkl").read_bytes())
    cam2 = info["data_list"][0]["images"]["CAM2"]
    assert (cam2["height"], cam2["width"]) == cams[0].image.shape[:2]


def _detections_bag(path: Path, scores: List[np.ndarray]) -> List[int]:
    from admlops_ros.lidar.detections import Detections
    from admlops_ros.ros.conversions import detections_to_msg
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    stamps = []
    with bags.BagWriter(path) as writer:
        for i, sc in enumerate(scores):
            frame = simulate_frame(90 + i, SceneConfig(), SensorConfig.preset("hdl64"))
            stamps.append(int(round(writer.write(frame.points, None) * 1e9)))
            n = len(sc)  # class indices of a 3-class model: the names come from label_name
            dets = Detections(frame.boxes[:n], sc, np.arange(n, dtype=np.int64)[::-1] % 3,
                              ("Car", "Pedestrian", "Cyclist"))
            writer.write_message(DET_TOPIC, detections_to_msg(dets, writer.last_header,
                                                              writer.messages))
    return stamps


def test_pre_annotations_from_a_detections_topic_keep_scores(tmp_path):
    scores = [np.array([0.91, 0.42, 0.3]), np.array([0.77])]
    bag = tmp_path / "dets.bag"
    _detections_bag(bag, scores)
    summary = ex.export_dataset([bag], tmp_path / "ds", labels="detections", workers=1)
    assert [f.labels for f in summary.frames] == [f"detections:{DET_TOPIC}"] * 2
    for fr, sc in zip(summary.frames, scores):
        lines = (tmp_path / "ds" / "training" / "label_2" / f"{fr.frame}.txt").read_text()
        cols = [line.split() for line in lines.splitlines()]
        assert all(len(c) == 16 for c in cols)
        np.testing.assert_allclose([float(c[15]) for c in cols], sc, atol=5e-5)
        want = [("Car", "Pedestrian", "Cyclist")[k] for k in np.arange(len(sc))[::-1] % 3]
        assert [c[0] for c in cols] == want
    info = pickle.loads((tmp_path / "ds" / "kitti_infos_train.pkl").read_bytes())
    np.testing.assert_allclose([i["score"] for i in info["data_list"][0]["instances"]],
                               scores[0], atol=5e-5)


def test_stamps_filter_exports_only_those_frames(sim_bag, tmp_path):
    wanted = _frames(sim_bag)[1].stamp_ns
    summary = ex.export_dataset([sim_bag], tmp_path / "ds",
                                stamps={str(sim_bag): [wanted, 123]}, workers=1)
    assert [(f.frame, f.stamp_ns) for f in summary.frames] == [("000000", wanted)]
    assert any("1 requested stamps have no cloud" in p for p in summary.problems)
    lineage = ex.read_lineage(tmp_path / "ds")
    assert [(r.frame, r.stamp_ns, r.bag) for r in lineage] == [("000000", wanted, str(sim_bag))]
    sha, size, _ = ex.file_digest(sim_bag)
    assert (lineage[0].bag_sha256, lineage[0].bag_size) == (sha, size)


def test_bag_without_gt_topic_is_named_and_others_exported(sim_bag, tmp_path, capsys):
    from admlops_ros.cli import main
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    bare = tmp_path / "bare.bag"
    with bags.BagWriter(bare) as writer:
        writer.write(simulate_frame(3, SceneConfig(), SensorConfig.preset("hdl64")).points, None)
    out = tmp_path / "ds"
    code = main(["export", str(bare), str(sim_bag), "-o", str(out), "--workers", "1"])
    assert code == 1
    line = capsys.readouterr().out
    assert "exported 3 frames from 1 of 2 bags" in line
    assert f"failed: {bare}" in line and "/ground_truth/objects" in line
    assert "--labels detections, engine or none" in line
    assert sorted(p.name for p in (out / "training" / "velodyne").iterdir()) == [
        "000000.bin", "000001.bin", "000002.bin"]
    assert {r.bag for r in ex.read_lineage(out)} == {str(sim_bag)}
    # the same bag as a labelling batch without labels
    summary = ex.export_dataset([bare], tmp_path / "batch", labels="none", workers=1)
    assert summary.ok and [f.objects for f in summary.frames] == [0]


def test_serial_and_process_pool_write_the_same_bytes(sim_bag, image_bag, tmp_path):
    serial = ex.export_dataset([image_bag, sim_bag], tmp_path / "serial", workers=1,
                               val_fraction=0.4, seed=3)
    pool = ex.export_dataset([image_bag, sim_bag], tmp_path / "pool", workers=2,
                             val_fraction=0.4, seed=3)
    assert len(serial.frames) == 5 and serial.val == pool.val and len(serial.val) == 2
    assert [f.bag for f in serial.frames] == [str(image_bag)] * 2 + [str(sim_bag)] * 3
    a, b = _tree(tmp_path / "serial"), _tree(tmp_path / "pool")
    assert a.keys() == b.keys() and a == b
    assert not (tmp_path / "serial" / ex.STAGING).exists()
    sets = tmp_path / "serial" / "ImageSets"
    assert sets.joinpath("val.txt").read_text().split() == serial.val
    assert sets.joinpath("test.txt").read_text() == ""


def test_existing_dataset_is_not_overwritten(sim_bag, tmp_path):
    ex.export_dataset([sim_bag], tmp_path / "ds", workers=1)
    with pytest.raises(ex.ExportError, match="already holds a dataset"):
        ex.export_dataset([sim_bag], tmp_path / "ds", workers=1)
    with pytest.raises(ex.ExportError, match="--labels 'bogus' unknown"):
        ex.export_dataset([sim_bag], tmp_path / "other", labels="bogus")


def _check_error(tmp_path: Path, line: str) -> str:
    path = tmp_path / "check.txt"
    path.write_text(line + "\n")
    with pytest.raises(ex.ExportError, match=r"check.txt:1: ") as err:
        ex.check_label_file(path)
    return str(err.value)


def test_import_labels_replaces_valid_files_and_names_bad_lines(sim_bag, tmp_path, capsys):
    from admlops_ros.cli import main
    ds = tmp_path / "ds"
    ex.export_dataset([sim_bag], ds, labels="none", workers=1)
    company = tmp_path / "company"
    company.mkdir()
    gt = ds / "gt"
    ex.export_dataset([sim_bag], gt, workers=1)
    for frame in ("000000", "000001"):
        shutil.copy(gt / "training" / "label_2" / f"{frame}.txt", company / f"{frame}.txt")
    bad = (gt / "training" / "label_2" / "000002.txt").read_text().splitlines()
    bad[1] = "Car 0.00 0 oops"
    (company / "000002.txt").write_text("\n".join(bad) + "\n")
    (company / "000042.txt").write_text("")
    assert "type 'car' is not a KITTI class" in _check_error(tmp_path, "car 0 0 0 1 2 3 4 "
                                                             "1.5 1.6 3.9 1 1.6 20 0")
    assert "dimensions" in _check_error(tmp_path, "Car 0 0 0 1 2 3 4 0 1.6 3.9 1 1.6 20 0")
    code = main(["import-labels", str(company), "-d", str(ds)])
    assert code == 1
    out = capsys.readouterr()
    assert "imported 2 label files" in out.out
    assert f"{company / '000002.txt'}:2" in out.out and "000042" in out.out
    label_2 = ds / "training" / "label_2"
    assert label_2.joinpath("000000.txt").read_bytes() == (company / "000000.txt").read_bytes()
    assert label_2.joinpath("000002.txt").read_text() == ""            # not imported
    rows = ex.read_lineage(ds)
    assert [r.labels for r in rows] == [f"import:{company}"] * 2 + ["none"]
    n0 = len(kitti_io.read_label(company / "000000.txt"))
    assert rows[0].objects == n0 > 0
    data = pickle.loads(infos.info_path(ds, "train").read_bytes())["data_list"]
    assert len(data[0]["instances"]) == n0 and data[2]["instances"] == []


def test_pre_annotations_from_an_engine(sim_bag, tmp_path):
    engine = REPO_ROOT / "engines" / "pointpillars_sim_3class"
    if not (engine / "spec.yaml").is_file() and not any(engine.glob("*.onnx")):
        pytest.skip("shipped engine bundle missing")
    summary = ex.export_dataset([sim_bag], tmp_path / "ds", labels="engine", engine=str(engine),
                                backend="onnxruntime", stamps={str(sim_bag): [
                                    _frames(sim_bag)[0].stamp_ns]}, workers=1)
    assert summary.ok and summary.frames[0].labels.startswith("engine:")
    cols = [line.split() for line in (tmp_path / "ds" / "training" / "label_2" /
                                      "000000.txt").read_text().splitlines()]
    assert cols and all(len(c) == 16 for c in cols)


def test_fov_camera_keeps_only_objects_image_2_sees(sim_bag, tmp_path):
    every = ex.export_dataset([sim_bag], tmp_path / "all", workers=1)
    camera = ex.export_dataset([sim_bag], tmp_path / "camera", workers=1, fov="camera")
    assert sum(f.objects for f in camera.frames) < sum(f.objects for f in every.frames)
    for fr in camera.frames:
        for obj in kitti_io.read_label(tmp_path / "camera" / "training" / "label_2" /
                                       f"{fr.frame}.txt"):
            assert obj.bbox[2] > obj.bbox[0] and obj.bbox[3] > obj.bbox[1]


def test_calib_from_camera_info_and_tf_static(tmp_path):
    """A recorded-style bag: CameraInfo P and /tf_static base_link -> velodyne, base_link ->
    camera; the calib joins them (lidar -> camera = the renderer's own extrinsic)."""
    import genpy
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage

    from admlops_ros.camera.projection import matrix_to_quaternion
    from admlops_ros.evaluation import camera_bags
    from admlops_ros.evaluation.frames import FrameGT
    from admlops_ros.simulation import SceneConfig, SensorConfig, simulate_frame
    from admlops_ros.simulation.camera import render_frame
    sensor = SensorConfig.preset("hdl64")
    frame = simulate_frame(21, SceneConfig(), sensor)
    cam = render_frame(21, SceneConfig(), mount_height=sensor.mount_height)
    base_to_lidar = np.eye(4)
    base_to_lidar[:3, 3] = (1.2, 0.0, 1.7)                 # lidar -> base_link
    lidar_to_cam = cam.config.lidar_to_cam
    base_to_cam = base_to_lidar @ np.linalg.inv(lidar_to_cam)   # camera -> base_link

    def stamped(parent, child, mat):
        tf = TransformStamped()
        tf.header.frame_id, tf.child_frame_id = parent, child
        tf.header.stamp = genpy.Time(1_600_000_000)
        tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = \
            mat[:3, 3]
        q = matrix_to_quaternion(mat[:3, :3])
        r = tf.transform.rotation
        r.x, r.y, r.z, r.w = q
        return tf

    bag = tmp_path / "recorded.bag"
    with bags.BagWriter(bag) as writer:
        writer.write(frame.points, FrameGT(frame.boxes, frame.names,
                                           difficulty=np.asarray(frame.difficulty)))
        camera_bags.write_camera(writer, cam.image, cam.config.P, None)
        writer.write_message("/tf_static", TFMessage([
            stamped("base_link", "velodyne", base_to_lidar),
            stamped("base_link", "camera", base_to_cam)]))
    summary = ex.export_dataset([bag], tmp_path / "ds", workers=1)
    fr = summary.frames[0]
    assert fr.calib == "bag:/tf_static velodyne->camera + CameraInfo P, R0_rect identity"
    calib = kitti_io.read_calib(tmp_path / "ds" / "training" / "calib" / "000000.txt")
    np.testing.assert_allclose(calib.lidar2cam, lidar_to_cam, atol=1e-9)
    np.testing.assert_allclose(calib.P2, cam.config.P)
    np.testing.assert_allclose(calib.R0_rect, np.eye(3))


def test_bag_cut_short_exports_the_frames_before_the_cut(sim_bag, tmp_path):
    cut = tmp_path / "cut.bag"
    data = sim_bag.read_bytes()
    cut.write_bytes(data[:int(len(data) * 0.7)])
    summary = ex.export_dataset([cut], tmp_path / "ds", workers=1)
    assert summary.ok and 0 < len(summary.frames) < 3
    assert any("not indexed" in p for p in summary.problems)
    full = _frames(sim_bag)
    for fr in summary.frames:
        points = kitti_io.read_velodyne(tmp_path / "ds" / "training" / "velodyne" /
                                        f"{fr.frame}.bin")
        np.testing.assert_array_equal(points, full[int(fr.frame)].points)


def test_calib_per_frame_from_a_kitti_bag(tmp_path):
    """bag-from-kitti writes each frame's lidar -> camera on /tf; export writes it back."""
    kitti = REPO_ROOT.parent / "shared" / "data" / "kitti" / "training"
    if not (kitti / "calib").is_dir():
        pytest.skip(f"the real KITTI frames are not at {kitti} (../shared absent)")
    from admlops_ros.evaluation.bags import bag_from_kitti
    frames = sorted(p.stem for p in (kitti / "calib").glob("*.txt"))[:2]
    bag = tmp_path / "kitti.bag"
    bag_from_kitti(kitti, frames, bag, progress=False, images="none")
    summary = ex.export_dataset([bag], tmp_path / "ds", workers=1)
    for i, frame in enumerate(frames):
        assert summary.frames[i].calib.startswith("bag:/tf per frame")
        back = kitti_io.read_calib(tmp_path / "ds" / "training" / "calib" / f"{i:06d}.txt")
        real = kitti_io.read_calib(kitti / "calib" / f"{frame}.txt")
        # a quaternion holds only the orthonormal part of KITTI's (not quite orthonormal)
        # R0_rect @ Tr_velo_to_cam: ~2e-5 relative
        np.testing.assert_allclose(back.lidar2img, real.lidar2img, rtol=1e-4, atol=1e-3)
