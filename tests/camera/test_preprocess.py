"""Preprocessing and rescale against straightforward references (loops, plain formulas)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from admlops_ros.bundle.camera_spec import CameraSpec
from admlops_ros.camera.postprocess import postprocess
from admlops_ros.camera.preprocess import PreprocessError, Preprocessor, rescaled_size
from admlops_ros.training.camera_export import preprocess_spec


def make_spec(keep_ratio, scale, pad=None, to_rgb=True, mean=(123.675, 116.28, 103.53),
              std=(58.395, 57.12, 57.375)) -> CameraSpec:
    pre = dict(keep_ratio=keep_ratio, scale=scale, mean=mean, std=std, to_rgb=to_rgb)
    pre.update(pad or {})
    p = preprocess_spec(pre, (scale[1], scale[0]))
    w, h = scale
    if p.pad is not None and p.pad.size is not None:
        w, h = p.pad.size
    elif p.pad is not None:
        d = p.pad.size_divisor
        w, h = -(-w // d) * d, -(-h // d) * d
    return CameraSpec(name="t", class_names=("a", "b", "c"),
                      input={"height": h, "width": w, "dynamic_shape": keep_ratio,
                             "channel_order": "rgb" if to_rgb else "bgr"},
                      preprocessing=p)


def ref_size(w, h, scale, keep_ratio):
    """mmcv 2.x rescale_size / imresize, written out."""
    if not keep_ratio:
        return scale
    max_long, max_short = max(scale), min(scale)
    factor = min(max_long / max(h, w), max_short / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5)


def ref_bilinear(img, new_w, new_h):
    """Bilinear resize with OpenCV's pixel-centre convention, one pixel at a time."""
    h, w = img.shape[:2]
    out = np.zeros((new_h, new_w, 3), np.float64)
    for y in range(new_h):
        sy = max((y + 0.5) * h / new_h - 0.5, 0.0)
        y0 = min(int(sy), h - 1)
        y1, fy = min(y0 + 1, h - 1), sy - int(sy)
        for x in range(new_w):
            sx = max((x + 0.5) * w / new_w - 0.5, 0.0)
            x0 = min(int(sx), w - 1)
            x1, fx = min(x0 + 1, w - 1), sx - int(sx)
            out[y, x] = (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x1] * fx * (1 - fy) +
                         img[y1, x0] * (1 - fx) * fy + img[y1, x1] * fx * fy)
    return out


def ref_preprocess(img, spec):
    pre = spec.preprocessing
    h, w = img.shape[:2]
    nw, nh = ref_size(w, h, pre.resize.scale, pre.resize.keep_ratio)
    resized = np.round(ref_bilinear(img.astype(np.float64), nw, nh))
    pw, ph = nw, nh
    if pre.pad is not None and pre.pad.size is not None:
        pw, ph = pre.pad.size
    elif pre.pad is not None:
        d = pre.pad.size_divisor
        pw, ph = -(-nw // d) * d, -(-nh // d) * d
    order = [2, 1, 0] if pre.normalize.to_rgb else [0, 1, 2]
    out = np.zeros((1, 3, ph, pw))
    for c in range(3):
        mean, std = pre.normalize.mean[c], pre.normalize.std[c]
        for y in range(ph):
            for x in range(pw):
                if y < nh and x < nw:
                    out[0, c, y, x] = (resized[y, x, order[c]] - mean) / std
                elif pre.pad.stage == "raw":
                    out[0, c, y, x] = (pre.pad.pad_val - mean) / std
                else:
                    out[0, c, y, x] = pre.pad.pad_val
    return out, (nw / w, nh / h)


@pytest.mark.parametrize("w,h,scale,keep", [
    (1242, 375, (640, 384), True), (1242, 375, (1333, 800), True), (375, 1242, (640, 384), True),
    (640, 480, (640, 640), True), (1242, 375, (640, 192), False), (1000, 1000, (333, 111), True),
    (7, 3, (640, 384), True), (1920, 1080, (1216, 384), False)])
def test_rescaled_size_matches_mmcv_formula(w, h, scale, keep):
    assert rescaled_size(w, h, scale, keep) == tuple(ref_size(w, h, scale, keep))


@pytest.mark.parametrize("case", ["keep_divisor", "no_keep", "keep_raw_pad_bgr"])
def test_preprocess_matches_reference(case):
    spec = {"keep_divisor": make_spec(True, (96, 64), {"size_divisor": 32}),
            "no_keep": make_spec(False, (80, 40)),
            "keep_raw_pad_bgr": make_spec(True, (96, 64), {"pad_size": (112, 64),
                                                           "pad_val": 114.0,
                                                           "pad_stage": "raw"},
                                          to_rgb=False)}[case]
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 124, 3), dtype=np.uint8)
    tensor, meta = Preprocessor(spec)(img)
    ref, (ws, hs) = ref_preprocess(img, spec)
    assert tensor.dtype == np.float32 and tensor.flags.c_contiguous
    assert tensor.shape == ref.shape
    assert meta.scale_factor == pytest.approx((ws, hs), abs=0)
    # OpenCV's uint8 bilinear uses 11-bit fixed-point weights: at most 1 grey level apart
    tol = 1.0 / min(spec.preprocessing.normalize.std) + 1e-5
    assert np.abs(tensor - ref).max() <= tol
    assert np.mean(np.abs(tensor - ref) > 1e-4) < 0.2


def test_preprocess_refuses_bad_images():
    pre = Preprocessor(make_spec(False, (80, 40)))
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                np.zeros((0, 10, 3), np.uint8), np.zeros((10, 10, 4), np.uint8)):
        with pytest.raises(PreprocessError, match="camera image"):
            pre(bad)


def test_preprocess_fast_enough_for_kitti_frames():
    pre = Preprocessor(make_spec(True, (1242, 375), {"size_divisor": 32}))
    img = np.random.default_rng(0).integers(0, 256, (375, 1242, 3), dtype=np.uint8)
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        pre(img)
        times.append(time.perf_counter() - t0)
    assert np.median(times) * 1e3 < 10.0  # the target is 3 ms (scripts/bench_camera.py)


def ref_postprocess(dets, labels, scale_factor, ori_hw, thr, num_classes):
    out = []
    ws, hs = scale_factor
    h, w = ori_hw
    for (x1, y1, x2, y2, s), lab in zip(dets[0], labels[0]):
        if not s > thr or not 0 <= lab < num_classes:
            continue
        box = [min(max(x1 / ws, 0), w), min(max(y1 / hs, 0), h),
               min(max(x2 / ws, 0), w), min(max(y2 / hs, 0), h)]
        out.append((box, s, lab))
    return out


@pytest.mark.parametrize("keep", [True, False])
def test_rescale_matches_reference(keep):
    spec = make_spec(keep, (640, 384) if keep else (640, 192),
                     {"size_divisor": 32} if keep else None)
    pre = Preprocessor(spec)
    meta = pre.meta(375, 1242)
    rng = np.random.default_rng(1)
    n = 40
    xy = rng.uniform(-40, 700, (n, 2))
    wh = rng.uniform(1, 120, (n, 2))
    dets = np.concatenate([xy, xy + wh, rng.uniform(0, 1, (n, 1))], 1)[None].astype(np.float32)
    dets[0, -3:, 4] = 0.0  # padded rows
    labels = rng.integers(-1, 4, (1, n))
    out = postprocess(dets, labels, meta, 0.3, ("a", "b", "c"))
    ref = ref_postprocess(dets.astype(np.float64), labels, meta.scale_factor, (375, 1242),
                          0.3, 3)
    assert len(out) == len(ref) > 5
    np.testing.assert_allclose(out.boxes, np.array([r[0] for r in ref]), rtol=1e-6, atol=1e-3)
    np.testing.assert_array_equal(out.labels, [r[2] for r in ref])
    assert out.image_size == (375, 1242)
    if keep:
        assert meta.img_shape == (193, 640) and meta.pad_shape == (224, 640)
    else:
        assert meta.img_shape == (192, 640) and meta.pad_shape == (192, 640)
