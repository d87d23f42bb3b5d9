"""Image/CompressedImage -> BGR through the real cv_bridge: every encoding, malformed refused."""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
cv_bridge = pytest.importorskip("cv_bridge", reason="needs Debian python3-cv-bridge")
sensor_msgs = pytest.importorskip("sensor_msgs.msg")

from admlops_ros.ros.image_conversions import (  # noqa: E402
    ImageError, bgr_to_image, compressed_size, compressed_to_bgr, image_to_bgr, to_bgr)

Image, CompressedImage = sensor_msgs.Image, sensor_msgs.CompressedImage


def _bgr(h=6, w=8):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _msg(array, encoding):
    return cv_bridge.CvBridge().cv2_to_imgmsg(np.ascontiguousarray(array), encoding)


def test_bgr8_rgb8_round_trip_exact():
    bgr = _bgr()
    np.testing.assert_array_equal(image_to_bgr(_msg(bgr, "bgr8")), bgr)
    np.testing.assert_array_equal(image_to_bgr(_msg(bgr[..., ::-1], "rgb8")), bgr)
    back = bgr_to_image(bgr)
    assert back.encoding == "bgr8" and back.step == 24
    np.testing.assert_array_equal(image_to_bgr(back), bgr)


def test_alpha_and_mono():
    bgr = _bgr()
    bgra = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 7, np.uint8)], axis=2)
    np.testing.assert_array_equal(image_to_bgr(_msg(bgra, "bgra8")), bgr)
    rgba = np.ascontiguousarray(bgra[..., [2, 1, 0, 3]])
    np.testing.assert_array_equal(image_to_bgr(_msg(rgba, "rgba8")), bgr)
    grey = bgr[..., 0]
    out = image_to_bgr(_msg(grey, "mono8"))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("pattern, code", [("rggb", "COLOR_BayerRG2BGR"),
                                           ("bggr", "COLOR_BayerBG2BGR"),
                                           ("gbrg", "COLOR_BayerGB2BGR"),
                                           ("grbg", "COLOR_BayerGR2BGR")])
def test_bayer_same_as_opencv_demosaic(pattern, code):
    raw = _bgr(8, 10)[..., 1]
    msg = _msg(raw, "mono8")
    msg.encoding = f"bayer_{pattern}8"
    out = image_to_bgr(msg)
    assert out.shape == (8, 10, 3)
    # cv_bridge maps ROS names (first row RG...) onto OpenCV codes itself; a constant field
    # demosaics to that constant for every pattern, and some code of OpenCV's matches exactly.
    codes = [getattr(cv2, c) for c in ("COLOR_BayerRG2BGR", "COLOR_BayerBG2BGR",
                                       "COLOR_BayerGB2BGR", "COLOR_BayerGR2BGR")]
    assert any(np.array_equal(out, cv2.cvtColor(raw, c)) for c in codes)
    flat = msg
    flat.data = bytes([90]) * (8 * 10)
    np.testing.assert_array_equal(image_to_bgr(flat), 90)


def test_yuv422_through_cv_bridge():
    bgr = np.full((4, 6, 3), (30, 120, 200), np.uint8)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV)
    uyvy = np.empty((4, 6, 2), np.uint8)
    uyvy[..., 1] = yuv[..., 0]
    uyvy[:, 0::2, 0] = yuv[:, 0::2, 1]
    uyvy[:, 1::2, 0] = yuv[:, 0::2, 2]
    msg = Image(height=4, width=6, encoding="yuv422", step=12, data=uyvy.tobytes())
    out = image_to_bgr(msg)   # yuv422 is UYVY: cv_bridge's conversion is OpenCV's
    np.testing.assert_array_equal(out, cv2.cvtColor(uyvy, cv2.COLOR_YUV2BGR_UYVY))
    assert np.abs(out.astype(int) - bgr).max() <= 40   # video-range Y'CbCr vs full range


def test_row_padding_and_list_data():
    bgr = _bgr(5, 7)
    padded = np.zeros((5, 7 * 3 + 11), np.uint8)
    padded[:, :21] = bgr.reshape(5, 21)
    msg = Image(height=5, width=7, encoding="bgr8", step=32, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_bgr(msg), bgr)
    msg = Image(height=5, width=7, encoding="bgr8", step=21, data=list(bgr.tobytes()))
    np.testing.assert_array_equal(image_to_bgr(msg), bgr)


@pytest.mark.parametrize("encoding, words", [
    ("mono16", "more-than-8-bit"), ("bgr16", "more-than-8-bit"), ("32FC1", "floating-point"),
    ("64FC3", "floating-point"), ("bayer_rggb16", "more-than-8-bit"),
    ("8UC3", "channel-layout-only"), ("nv12", "unsupported"), ("", "no encoding")])
def test_refused_encodings_one_line(encoding, words):
    msg = Image(height=2, width=2, encoding=encoding, step=12, data=bytes(24))
    with pytest.raises(ImageError) as info:
        image_to_bgr(msg)
    text = str(info.value)
    assert words in text and "publish one of bgr8" in text and "\n" not in text


@pytest.mark.parametrize("fields, words", [
    (dict(height=0, width=8, step=24, data=b""), "zero size"),
    (dict(height=6, width=0, step=0, data=b""), "zero size"),
    (dict(height=6, width=8, step=24, data=bytes(100)), "truncated"),
    (dict(height=6, width=8, step=24, data=bytes(200)), "too long"),
    (dict(height=6, width=8, step=20, data=bytes(120)), "step 20 bytes < width 8"),
    (dict(height=4320, width=7680, step=7680 * 3, data=b""), "larger than ~max_pixels"),
])
def test_malformed_images_refused_before_conversion(fields, words):
    msg = Image(encoding="bgr8", **fields)
    with pytest.raises(ImageError, match=words):
        image_to_bgr(msg)


def test_compressed_png_jpeg_grey_and_refusals():
    bgr = _bgr(16, 24)
    png = CompressedImage(format="png", data=cv2.imencode(".png", bgr)[1].tobytes())
    np.testing.assert_array_equal(compressed_to_bgr(png), bgr)
    assert compressed_size(png.data) == (16, 24)
    jpg = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", bgr)[1].tobytes())
    assert compressed_size(jpg.data) == (16, 24)
    assert to_bgr(jpg).shape == (16, 24, 3)
    grey = CompressedImage(format="png", data=cv2.imencode(".png", bgr[..., 0])[1].tobytes())
    np.testing.assert_array_equal(compressed_to_bgr(grey)[..., 2], bgr[..., 0])
    deep = CompressedImage(format="png", data=cv2.imencode(
        ".png", bgr.astype(np.uint16) * 200)[1].tobytes())
    with pytest.raises(ImageError, match="8-bit"):
        compressed_to_bgr(deep)
    with pytest.raises(ImageError, match="no data"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(ImageError, match="cannot be decoded"):
        compressed_to_bgr(CompressedImage(format="jpeg", data=b"\x00garbage" * 10))
    big = cv2.imencode(".png", np.zeros((4320, 7680), np.uint8))[1].tobytes()
    with pytest.raises(ImageError, match="7680 x 4320 pixels is larger"):
        compressed_to_bgr(CompressedImage(format="png", data=big))
    with pytest.raises(ImageError, match="larger than ~max_pixels 100"):
        compressed_to_bgr(jpg, max_pixels=100)
