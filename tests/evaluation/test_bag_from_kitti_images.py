"""bag-from-kitti with image_2: images, CameraInfo (P2), 2D ground truth round trip; camera eval."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import numpy as np
import pytest

from admlops_ros.evaluation import bags, camera_bags
from admlops_ros.evaluation.metrics2d import ImageGT
from admlops_ros.evaluation.rosbag_io import BagError
from tests.paths import REPO_ROOT

KITTI = (REPO_ROOT / ".." / "shared" / "data" / "kitti" / "training").resolve()
FRAMES = sorted(p.stem for p in (KITTI / "image_2").glob("*.png")) if KITTI.is_dir() else []


pytestmark = pytest.mark.usefixtures("bag_messages")


needs_kitti = pytest.mark.skipif(
    not FRAMES, reason=f"no KITTI frames under {KITTI} (image_2, label_2, calib, velodyne): "
                       f"the real-data tests need ../shared/data/kitti/training")


@pytest.fixture(scope="module")
def kitti_bag(tmp_path_factory):
    if not FRAMES:
        pytest.skip(f"no KITTI frames under {KITTI}")
    out = tmp_path_factory.mktemp("kitti") / "kitti.bag"
    assert bags.bag_from_kitti(KITTI, FRAMES, out, progress=False) == len(FRAMES)
    return out


@needs_kitti
def test_images_camera_info_and_2d_gt_round_trip(kitti_bag):
    import cv2
    import rosbag

    from admlops_ros.evaluation import kitti_io
    summary, frames = camera_bags.read_camera_bag(kitti_bag)
    assert summary.image_topic == camera_bags.IMAGE_TOPIC
    assert summary.gt_topic == camera_bags.IMAGE_GT_TOPIC
    assert summary.num_images == summary.num_gt == len(FRAMES)
    frames = list(frames)
    for frame_id, fr in zip(FRAMES, frames):
        ref = cv2.imread(str(KITTI / "image_2" / f"{frame_id}.png"), cv2.IMREAD_COLOR)
        assert np.array_equal(fr.image, ref)
        objs = kitti_io.read_label(KITTI / "label_2" / f"{frame_id}.txt")
        care = [o for o in objs if o.type != "DontCare"]
        np.testing.assert_allclose(fr.gt.boxes, [o.bbox for o in care], atol=1e-9)
        assert list(fr.gt.names) == [o.type for o in care]
        assert fr.gt.occluded.tolist() == [o.occluded for o in care]
        np.testing.assert_allclose(fr.gt.truncated, [o.truncated for o in care])
        assert len(fr.gt.dontcare) == sum(o.type == "DontCare" for o in objs)
        assert not fr.gt.ignore.any()
    with rosbag.Bag(str(kitti_bag)) as bag:
        infos = [m for _, m, _ in bag.read_messages(topics=[camera_bags.CAMERA_INFO_TOPIC])]
        clouds = [m.header.stamp for _, m, _ in bag.read_messages(topics=[bags.POINTS_TOPIC])]
    assert len(infos) == len(FRAMES)
    for frame_id, info, stamp, fr in zip(FRAMES, infos, clouds, frames):
        p2 = kitti_io.read_calib(KITTI / "calib" / f"{frame_id}.txt").P2
        np.testing.assert_allclose(np.reshape(info.P, (3, 4)), p2)
        assert (info.width, info.height) == (fr.image.shape[1], fr.image.shape[0])
        assert info.header.stamp == stamp and info.header.frame_id == "camera"
        assert fr.stamp_ns == stamp.to_nsec()  # image, info, gt and cloud share the stamp


@needs_kitti
def test_lidar_side_of_the_bag_is_unchanged(kitti_bag, tmp_path):
    plain = tmp_path / "plain.bag"
    bags.bag_from_kitti(KITTI, FRAMES, plain, progress=False, images="none")
    sa, fa = bags.read_bag(kitti_bag)
    sb, fb = bags.read_bag(plain)
    assert (sa.points_topic, sa.gt_topic, sa.num_clouds) == (sb.points_topic, sb.gt_topic,
                                                              sb.num_clouds)
    for a, b in zip(fa, fb):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.gt.boxes, b.gt.boxes)
        assert list(a.gt.names) == list(b.gt.names)
    with pytest.raises(BagError, match="image topics"):
        camera_bags.read_camera_bag(plain)


@needs_kitti
def test_png_images_are_lossless(tmp_path):
    import cv2
    out = tmp_path / "png.bag"
    bags.bag_from_kitti(KITTI, FRAMES[:1], out, progress=False, images="png")
    summary, frames = camera_bags.read_camera_bag(out)
    assert summary.image_topic == camera_bags.COMPRESSED_TOPIC
    fr = next(iter(frames))
    ref = cv2.imread(str(KITTI / "image_2" / f"{FRAMES[0]}.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(fr.image, ref)


def test_gt_message_round_trip_keeps_ignore_and_dontcare():
    from std_msgs.msg import Header
    gt = ImageGT([[10, 20, 110, 80], [5, 5, 30, 20]], ["Car", "Van"],
                 occluded=np.array([1, 3]), truncated=np.array([0.1, 0.6]),
                 ignore=np.array([True, False]), dontcare=[[200, 10, 260, 40]])
    msg = camera_bags.image_gt_to_msg(gt, Header(frame_id="camera"), bags.messages())
    assert [o.label for o in msg.objects] == [camera_bags.IGNORED, -1, -1]
    back = camera_bags.image_gt_from_msg(msg)
    np.testing.assert_allclose(back.boxes, gt.boxes)
    assert back.occluded.tolist() == [1, 3] and back.ignore.tolist() == [True, False]
    np.testing.assert_allclose(back.truncated, [0.1, 0.6])
    np.testing.assert_allclose(back.dontcare, gt.dontcare)


def test_image_encodings_decode_to_bgr():
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (7, 9, 3), dtype=np.uint8)
    msg = camera_bags.image_to_msg(img, Header())
    assert np.array_equal(camera_bags.msg_to_image(msg), img)
    rgb = Image(height=7, width=9, encoding="rgb8", step=27, data=img[:, :, ::-1].tobytes())
    assert np.array_equal(camera_bags.msg_to_image(rgb), img)
    with pytest.raises(BagError, match="encoding"):
        camera_bags.msg_to_image(Image(height=7, width=9, encoding="16UC1", step=18,
                                       data=b"\0" * 126))
    with pytest.raises(BagError, match="does not fit"):
        camera_bags.msg_to_image(Image(height=7, width=9, encoding="bgr8", step=27, data=b"12"))


class _OracleDetector:
    """Returns the ground truth as detections (by stamp order), with fixed timings."""

    class_names = ("Car", "Pedestrian", "Cyclist")
    backend_name = "oracle"

    def __init__(self, gts: List[ImageGT]) -> None:
        self._gts = list(gts)

    def detect(self, image: np.ndarray) -> Any:
        from admlops_ros.camera.detections import Detections2D
        gt = self._gts.pop(0)
        keep = [i for i, n in enumerate(gt.names) if n in self.class_names]
        return Detections2D(gt.boxes[keep].astype(np.float32),
                            np.linspace(0.9, 0.5, len(keep)).astype(np.float32),
                            np.array([self.class_names.index(gt.names[i]) for i in keep],
                                     np.int64), self.class_names,
                            {"preprocess": 1.0, "inference": 5.0, "postprocess": 0.5,
                             "total": 6.5}, image.shape[:2])


@needs_kitti
def test_camera_eval_scores_an_oracle_at_one(kitti_bag, tmp_path):
    from admlops_ros.evaluation import camera_eval, report
    _, frames = camera_bags.read_camera_bag(kitti_bag)
    gts = [f.gt for f in frames]
    res = camera_eval.run_camera_offline(kitti_bag, detector=_OracleDetector(gts),
                                         progress=False)
    assert len(res.gts) == len(FRAMES) and len(res.samples) == min(4, len(FRAMES))
    results, ev = camera_eval.summarize_camera(res)
    for k, c in enumerate(ev.classes):
        if ev.coco.num_gt[k]:
            assert ev.coco.ap(c) == pytest.approx(1.0)
    assert ev.kitti is not None
    assert results["metrics_2d"]["coco"]["AP50"] == pytest.approx(1.0)
    assert results["latency_ms"]["p50"] == pytest.approx(6.5)
    json.dumps(results, default=str)
    html = report.write_camera_report(tmp_path / "report.html", results, ev, res.records,
                                      res.samples, 0.3)
    text = html.read_text()
    assert "Precision-recall" in text and "KITTI 2D AP|R40" in text


@needs_kitti
def test_admlops_eval_camera_bundle_cli(kitti_bag, tmp_path, monkeypatch, capsys):
    """`admlops eval BAG --camera-bundle DIR` writes results.json, report.html, figures/."""
    from admlops_ros.cli import main
    from admlops_ros.evaluation import camera_eval
    _, frames = camera_bags.read_camera_bag(kitti_bag)
    gts = [f.gt for f in frames]
    seen: Dict[str, Any] = {}

    def fake_open(bundle, backend="auto", score_threshold=None):
        seen.update(bundle=bundle, backend=backend)
        return _OracleDetector(gts)

    monkeypatch.setattr(camera_eval, "open_camera_detector", fake_open)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "spec.yaml").write_text("version: 1\nmodality: camera\n")
    assert camera_eval.is_camera_bundle(bundle)
    out = tmp_path / "out"
    # auto: --engine pointing at a camera bundle selects the camera mode
    assert main(["eval", str(kitti_bag), "--engine", str(bundle), "--backend", "openvino-f32",
                 "--out", str(out), "--no-progress"]) == 0
    assert seen == {"bundle": str(bundle), "backend": "openvino-f32"}
    printed = capsys.readouterr().out
    assert "COCO AP" in printed and "KITTI 2D AP|R40" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["mode"] == "camera-offline"
    assert results["metrics_2d"]["coco"]["mAP"] == pytest.approx(1.0)
    assert (out / "report.html").is_file() and (out / "figures" / "pr_curves_2d.png").is_file()


def test_bag_from_sim_with_rendered_images(tmp_path):
    pytest.importorskip("admlops_ros.simulation.camera",
                        reason="the camera renderer (simulation/camera.py) is not there yet")
    from admlops_ros.simulation.camera import render_frame
    out = tmp_path / "sim.bag"
    assert bags.bag_from_sim(out, 2, seed=1_000_000, progress=False, images="raw") == 2
    summary, frames = camera_bags.read_camera_bag(out)
    assert summary.num_images == summary.num_gt == 2
    lidar, clouds = bags.read_bag(out)
    stamps = [c.stamp_ns for c in clouds]
    for i, fr in enumerate(frames):
        cam = render_frame(1_000_000 + i)
        assert np.array_equal(fr.image, cam.image) and fr.stamp_ns == stamps[i]
        np.testing.assert_allclose(fr.gt.boxes, cam.boxes2d, atol=1e-4)
        assert list(fr.gt.names) == list(cam.names)
        assert fr.gt.occluded.tolist() == np.asarray(cam.occlusion_level).tolist()


def test_bag_from_sim_with_images_carries_the_static_camera_transform(tmp_path):
    from admlops_ros.camera.projection import transform_matrix
    from admlops_ros.evaluation.rosbag_io import open_bag
    from admlops_ros.simulation.camera import CameraConfig
    out = tmp_path / "sim.bag"
    bags.bag_from_sim(out, 2, seed=1_000_000, progress=False, images="raw")
    bag, _ = open_bag(out)
    with bag:
        msgs = list(bag.read_messages(topics=[camera_bags.TF_STATIC_TOPIC],
                                      return_connection_header=True))
    assert len(msgs) == 1  # once, latched: rosbag play latches it for late subscribers
    _, msg, _, header = msgs[0]
    assert header["latching"] in ("1", b"1")
    (tf,) = msg.transforms
    assert (tf.header.frame_id, tf.child_frame_id) == (bags.LIDAR_FRAME_ID,
                                                      camera_bags.CAMERA_FRAME_ID)
    t, q = tf.transform.translation, tf.transform.rotation
    camera_to_lidar = transform_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
    np.testing.assert_allclose(np.linalg.inv(camera_to_lidar), CameraConfig().lidar_to_cam,
                               atol=1e-9)
