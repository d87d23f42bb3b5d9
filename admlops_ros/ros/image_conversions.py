"""sensor_msgs/Image and CompressedImage <-> HxWx3 uint8 BGR arrays through the Debian cv_bridge."""
from __future__ import annotations

import re
import struct
from typing import Any, Dict, Optional, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

#: Encodings the camera node takes, with their bytes per pixel (8 bits per channel).
#: yuv422 is UYVY (2 bytes per pixel), converted by cv_bridge itself.
SUPPORTED_ENCODINGS: Dict[str, int] = {
    "bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4,
    "bayer_rggb8": 1, "bayer_bggr8": 1, "bayer_gbrg8": 1, "bayer_grbg8": 1,
    "yuv422": 2,
}
#: Default largest image (pixels) the node converts: 4096 x 4096 (an 8K frame is refused).
DEFAULT_MAX_PIXELS = 4096 * 4096
_SUPPORTED_TEXT = ", ".join(SUPPORTED_ENCODINGS)


class ImageError(AdmlopsError, ValueError):
    """An image message the camera node refuses (encoding, size, data length, decoding)."""


def _bridge() -> Any:
    import cv_bridge  # noqa: WPS433 (Debian python3-cv-bridge, in the ROS environment)

    global _BRIDGE
    if _BRIDGE is None:
        _BRIDGE = cv_bridge.CvBridge()
    return _BRIDGE


_BRIDGE: Any = None


def _why_unsupported(encoding: str) -> str:
    enc = encoding.lower()
    if not enc:
        return "has no encoding"
    if re.search(r"(16|32|64)", enc):
        kind = "a floating-point" if "fc" in enc else "a more-than-8-bit"
        return f"has {kind} encoding {encoding!r} (only 8-bit images are detected)"
    if re.match(r"8[us]c", enc):
        return f"has the channel-layout-only encoding {encoding!r} (no colour order)"
    return f"has the unsupported encoding {encoding!r}"


def check_image(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Checks a sensor_msgs/Image before any conversion.

    Args:
        msg: sensor_msgs/Image (height, width, encoding, step, data).
        max_pixels: largest width * height accepted.

    Returns:
        The row length without padding (bytes).

    Raises:
        ImageError: zero size, too large, unknown encoding, step too small, data length not
            step * height (truncated or oversized data); one line naming the field and the fix.
    """
    height, width = int(msg.height), int(msg.width)
    encoding = str(msg.encoding)
    if height <= 0 or width <= 0:
        raise ImageError(f"image has zero size ({width} x {height} pixels); the camera driver "
                         "published an empty image")
    if width * height > max_pixels:
        raise ImageError(f"image of {width} x {height} pixels is larger than ~max_pixels "
                         f"{max_pixels}; downscale it (image_proc resize) or raise ~max_pixels")
    bpp = SUPPORTED_ENCODINGS.get(encoding)
    if bpp is None:
        raise ImageError(f"image {_why_unsupported(encoding)}; publish one of {_SUPPORTED_TEXT}")
    row = width * bpp
    step = int(msg.step)
    if step < row:
        raise ImageError(f"image step {step} bytes < width {width} x {bpp} bytes per pixel of "
                         f"{encoding}; the driver's step or encoding is wrong")
    size = len(msg.data)
    if size != step * height:
        what = "truncated" if size < step * height else "too long"
        raise ImageError(f"image data is {what}: {size} bytes != step {step} x height {height} "
                         f"= {step * height}; the message is corrupt")
    return row


def _as_buffer(data: Any) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return data
    try:
        return bytes(data)  # a list of ints (messages built in Python)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"image data is not bytes ({type(data).__name__}: {exc})") from None


def image_to_bgr(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 BGR (OpenCV order) through ``cv_bridge.CvBridge``.

    Row padding (step > width * bytes per pixel) is removed before cv_bridge, which assumes
    packed rows. A bgr8 image without padding comes back as a read-only view of the message data
    (no copy).

    Raises:
        ImageError: see :func:`check_image`, or cv_bridge refuses the conversion.
    """
    row = check_image(msg, max_pixels)
    data = _as_buffer(msg.data)
    step = int(msg.step)
    if step != row or data is not msg.data:
        packed = np.frombuffer(data, np.uint8).reshape(int(msg.height), step)[:, :row]
        msg = _shallow_image(msg, np.ascontiguousarray(packed).tobytes(), row)
    import cv_bridge  # noqa: WPS433

    # bgr8 -> bgr8 in cv_bridge's cvtColor2 is an identity copy costing 2-6 ms per 1242x375
    # frame (measured, scripts/bench_ros_camera.py): passthrough is the same array, no copy.
    desired = "passthrough" if msg.encoding == "bgr8" else "bgr8"
    try:
        out = _bridge().imgmsg_to_cv2(msg, desired)
    except (cv_bridge.CvBridgeError, TypeError, ValueError) as exc:
        raise ImageError(f"cv_bridge cannot convert {msg.encoding} to bgr8: {exc}") from None
    return _check_bgr(out, msg.encoding)


def _shallow_image(msg: Any, data: bytes, step: int) -> Any:
    from sensor_msgs.msg import Image  # noqa: WPS433

    return Image(header=msg.header, height=msg.height, width=msg.width, encoding=msg.encoding,
                 is_bigendian=msg.is_bigendian, step=step, data=data)


def _check_bgr(image: Any, what: str) -> np.ndarray:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
            and image.shape[2] == 3):
        shape = getattr(image, "shape", None)
        raise ImageError(f"{what} converted to {shape} {getattr(image, 'dtype', '')}, not "
                         "HxWx3 uint8 BGR")
    return image


def _png_size(data: bytes) -> Optional[Tuple[int, int]]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    return None


_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    if data[:2] != b"\xff\xd8":
        return None
    pos, end = 2, len(data)
    while pos + 9 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return height, width
        pos += 2 + length
    return None


def compressed_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) read from a PNG or JPEG header without decoding; None for other formats."""
    head = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    return _png_size(head) or _jpeg_size(head)


def compressed_to_bgr(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg, png, ...) -> HxWx3 uint8 BGR through cv_bridge.

    The size in a PNG/JPEG header is checked before decoding (an 8K frame is refused without
    allocating it); grey and BGRA images are converted to BGR; 16-bit images are refused.

    Raises:
        ImageError: empty data, too large, undecodable, or not 8-bit.
    """
    data = _as_buffer(msg.data)
    fmt = str(getattr(msg, "format", "")) or "?"
    if not len(data):
        raise ImageError(f"compressed image ({fmt}) has no data; the driver published an "
                         "empty message")
    size = compressed_size(data)
    if size is not None:
        height, width = size
        if height <= 0 or width <= 0:
            raise ImageError(f"compressed image ({fmt}) header says zero size "
                             f"({width} x {height} pixels)")
        if width * height > max_pixels:
            raise ImageError(f"compressed image ({fmt}) of {width} x {height} pixels is larger "
                             f"than ~max_pixels {max_pixels}; downscale it or raise ~max_pixels")
    import cv2  # noqa: WPS433

    if data is not msg.data:
        from sensor_msgs.msg import CompressedImage  # noqa: WPS433

        msg = CompressedImage(header=msg.header, format=msg.format, data=data)
    image = _bridge().compressed_imgmsg_to_cv2(msg, "passthrough")
    if image is None:
        raise ImageError(f"compressed image ({fmt}, {len(data)} bytes) cannot be decoded by "
                         "OpenCV; the data is corrupt or not jpeg/png")
    if image.dtype != np.uint8:
        raise ImageError(f"compressed image ({fmt}) decodes to {image.dtype}; only 8-bit images "
                         "are detected")
    height, width = image.shape[:2]
    if width * height > max_pixels:
        raise ImageError(f"compressed image ({fmt}) of {width} x {height} pixels is larger "
                         f"than ~max_pixels {max_pixels}; downscale it or raise ~max_pixels")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return _check_bgr(image, f"compressed image ({fmt})")


def to_bgr(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Image or CompressedImage (told apart by the ``format`` field) -> HxWx3 uint8 BGR."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_bgr(msg, max_pixels)
    return image_to_bgr(msg, max_pixels)


def bgr_to_image(image: np.ndarray, header: Any = None) -> Any:
    """HxWx3 uint8 BGR -> sensor_msgs/Image (bgr8) with ``header`` (e.g. the input header).

    Raises:
        ImageError: not an HxWx3 uint8 array.
    """
    image = _check_bgr(image, "annotated image")
    return _bridge().cv2_to_imgmsg(np.ascontiguousarray(image), "bgr8", header=header)


__all__ = ["SUPPORTED_ENCODINGS", "DEFAULT_MAX_PIXELS", "ImageError", "check_image",
           "image_to_bgr", "compressed_to_bgr", "compressed_size", "to_bgr", "bgr_to_image"]
