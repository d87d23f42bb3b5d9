"""FOV filter (evaluation/fov.py) against projections checked by hand on a real KITTI frame.

Frame: ../shared/data/kitti/training 000001 (image_2 1242 x 375). Its calib gives, with
lidar2cam = pad4(R0_rect) @ pad4(Tr_velo_to_cam) and lidar2img = P2 @ lidar2cam:

    lidar2cam = [[ 0.000235 -0.999944 -0.010563 -0.002797]
                 [ 0.010449  0.010565 -0.999890 -0.075109]
                 [ 0.999945  0.000124  0.010451 -0.272133]]
    lidar2img = [[ 609.695409 -721.421597   -1.251259 -123.041806]
                 [ 180.384202    7.644798 -719.651474 -101.016688]
                 [   0.999945    0.000124    0.010451   -0.269387]]

A point (x, y, z) projects to u = row0 . (x, y, z, 1) / d, v = row1 . (x, y, z, 1) / d with
depth d = row2 . (x, y, z, 1). The numbers below were worked out once from these products
(boxes: the 8 corners, bottom four then top four, depth clamped to 0.1 m as the project's
KITTI result writer does; 2D box = min / max over the corners).
"""
from __future__ import annotations

import numpy as np
import pytest

from admlops_ros.evaluation import fov
from admlops_ros.evaluation.frames import FrameGT, FramePred
from tests.paths import REPO_ROOT

KITTI = (REPO_ROOT / ".." / "shared" / "data" / "kitti" / "training").resolve()
needs_kitti = pytest.mark.skipif(
    not (KITTI / "calib" / "000001.txt").is_file(),
    reason=f"no KITTI frame 000001 under {KITTI} (calib, label_2): the hand-checked "
           f"projections need ../shared/data/kitti/training")
IMAGE = (375, 1242)  # image_2/000001.png (height, width)
PCR = (0.0, -39.68, -3.0, 69.12, 39.68, 1.0)  # the shipped model's point-cloud range

# LiDAR boxes (x, y, z_bottom, dx, dy, dz, yaw) and what the hand projection says.
BOXES = {
    # label_2 Car (x_cam -16.53, y 2.39, z 58.49): inverse(lidar2cam) gives the LiDAR box
    # below; corners: u 387.72 .. 423.77, v 181.57 .. 203.17, depth 56.64 .. 60.35 > 0; the
    # label's own 2D box is 387.63 181.54 423.81 203.12. Inside.
    "label_car": ((58.7808, 16.559633, -1.676111, 3.69, 1.87, 1.67, -3.140796),
                  True, (387.72, 181.57, 423.77, 203.17)),
    # label_2 Truck (z_cam 69.44): u 599.50 .. 629.82, v 156.46 .. 189.27: in the image, but
    # its LiDAR x = 69.72 m lies beyond the model's range (x < 69.12): removed by the range.
    "label_truck": ((69.724792, -0.447565, -0.841348, 12.34, 2.63, 2.85, -0.010796),
                    True, (599.50, 156.46, 629.82, 189.27)),
    # Behind: centre depth 0.999945 * -10 + 0.010451 * -1.7 + ... = -10.29 < 0: removed.
    # (Without the depth clamp, as mmdet3d's points_cam2img divides, the corners flip to
    # u 524.8 .. 683.1, v 37.9 .. 173.5 inside the image: mmdet3d relies on x > 0 there.)
    "behind": ((-10.0, 0.0, -1.7, 4.0, 1.8, 1.5, 0.0), False, None),
    # Straddling the left edge: centre u = -6.48 / 7.71 * 721.5 + 609.6 ... corners u from
    # -315.27 (rear right, depth 5.71) to 199.33 (front right, depth 9.71) > 0, v 194.23 ..
    # 395.78: overlaps the image; clipped 2D box 0, 194.23, 199.33, 375. Inside.
    "left_edge": ((8.0, 6.5, -1.7, 4.0, 1.8, 1.5, 0.0), True, (0.0, 194.23, 199.33, 375.0)),
    # Further left: corners u -1009.62 .. -209.02 < 0: removed.
    "left_out": ((8.0, 12.0, -1.7, 4.0, 1.8, 1.5, 0.0), False, None),
    # Alongside, half behind the camera: centre depth 0.21 > 0, but the front corners
    # (depth 2.21) project to u 1308.9 .. 1906.2 and the rear ones (depth clamped) further
    # right: min u 1308.92 > 1242: removed.
    "alongside": ((0.5, -3.0, -1.7, 4.0, 1.8, 1.5, 0.0), False, None),
}

# Points (x, y, z) LiDAR -> (u, v, depth) by the products above, and inside?
POINTS = [
    ((10.0, 0.0, 0.0), True),     # u 613.96, v 175.01, d 9.73
    ((10.0, 0.0, 5.0), False),    # v -193.76 < 0 (above the image)
    ((-10.0, 0.0, 0.0), False),   # d -10.27 (u 605.7, v 185.5 would be inside: behind)
    ((10.0, 8.0, 0.0), True),     # u 20.81, v 181.27
    ((10.0, 8.5, 0.0), False),    # u -16.25 < 0
    ((20.0, -13.0, -1.5), True),  # u 1088.22, v 227.61, d 19.71
]


@pytest.fixture(scope="module")
def calib():
    from admlops_ros.evaluation import kitti_io
    return fov.FrameCalib.from_kitti(kitti_io.read_calib(KITTI / "calib" / "000001.txt"), IMAGE)


@needs_kitti
def test_lidar2img_is_the_hand_matrix(calib):
    np.testing.assert_allclose(calib.lidar2img[:3], [
        [609.695409, -721.421597, -1.251259, -123.041806],
        [180.384202, 7.644798, -719.651474, -101.016688],
        [0.999945, 0.000124, 0.010451, -0.269387]], atol=2e-6 * 1000, rtol=1e-6)


@needs_kitti
def test_boxes_in_fov_agree_with_the_hand_projections(calib):
    names = list(BOXES)
    boxes = np.array([BOXES[n][0] for n in names])
    keep, bbox = fov.boxes_in_fov(boxes, calib)
    assert dict(zip(names, keep.tolist())) == {n: BOXES[n][1] for n in names}
    for i, n in enumerate(names):
        if BOXES[n][2] is not None:
            np.testing.assert_allclose(bbox[i], BOXES[n][2], atol=0.01, err_msg=n)
    keep_range, _ = fov.boxes_in_fov(boxes, calib, PCR)
    expected = {n: BOXES[n][1] and n != "label_truck" for n in names}
    assert dict(zip(names, keep_range.tolist())) == expected


@needs_kitti
def test_label_boxes_of_the_real_frames_are_all_in_view():
    """Every label_2 object (KITTI labels only objects seen in image 2) passes the filter."""
    from admlops_ros.evaluation import bags, kitti_io
    for frame in sorted(p.stem for p in (KITTI / "label_2").glob("*.txt")):
        _, gt = bags.kitti_frame_gt(KITTI, frame)
        size = bags._png_size(KITTI / "image_2" / f"{frame}.png")
        c = fov.FrameCalib.from_kitti(kitti_io.read_calib(KITTI / "calib" / f"{frame}.txt"),
                                      size)
        keep, _ = fov.boxes_in_fov(gt.boxes, c)
        assert keep.all(), frame


@needs_kitti
def test_points_in_fov_agree_with_the_hand_projections(calib):
    pts = np.array([p for p, _ in POINTS])
    assert fov.points_in_fov(pts, calib).tolist() == [ok for _, ok in POINTS]


@needs_kitti
def test_filter_frame_removes_predictions_and_gt_outside(calib):
    names = list(BOXES)
    boxes = np.array([BOXES[n][0] for n in names])
    pred = FramePred(boxes, np.linspace(0.9, 0.4, len(names)), ["Car"] * len(names))
    gt = FrameGT(boxes[:3], ["Car"] * 3, difficulty=[0, 1, 2])
    stats = fov.FovStats("camera")
    g2, p2 = fov.filter_frame(gt, pred, calib, PCR, "camera", stats)
    assert len(p2) == 2 and p2.bbox2d.shape == (2, 4)     # label_car, left_edge
    np.testing.assert_allclose(p2.scores, pred.scores[[0, 3]])
    assert g2.difficulty.tolist() == [0, 1]                # ground truth: no range test
    assert (stats.predictions_removed, stats.gt_removed, stats.frames_with_calib) == (4, 1, 1)
    g3, p3 = fov.filter_frame(gt, pred, calib, PCR, "all")
    assert p3 is pred and g3 is gt
    g4, p4 = fov.filter_frame(gt, pred, None, PCR, "camera")  # no calibration: unchanged
    assert p4 is pred and g4 is gt
    with pytest.raises(fov.BagError, match="camera, all"):
        fov.filter_frame(gt, pred, calib, PCR, "image")
    merged = fov.merge_stats([stats.to_dict(), {}, stats.to_dict()])
    assert (merged["mode"], merged["frames"], merged["predictions_removed"]) == ("camera", 2, 8)
    assert fov.merge_stats([{}]) == {}


def test_chain_transform_joins_and_inverts():
    a = np.eye(4)
    a[:3, 3] = (1.0, 2.0, 3.0)            # child "camera" in parent "base"
    b = np.eye(4)
    b[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    b[:3, 3] = (0.5, 0.0, 0.0)            # child "velodyne" in parent "base"
    edges = [("base", "camera", a), ("base", "velodyne", b)]
    m = fov.chain_transform(edges, "velodyne", "camera")
    np.testing.assert_allclose(m, np.linalg.inv(a) @ b)
    assert fov.chain_transform(edges, "velodyne", "radar") is None
