"""Image -> engine input: mmcv 2.x resize, bgr->rgb, (x-mean)/std, pad, NCHW float32."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from admlops_ros.bundle.camera_spec import CameraSpec, PreprocessSpec
from admlops_ros.errors import AdmlopsError


class PreprocessError(AdmlopsError, ValueError):
    """An image the pipeline cannot take (wrong shape or dtype); names what was given."""


@dataclass(frozen=True)
class ImageMeta:
    """How the original image maps into the network input.

    Attributes:
        ori_shape: (height, width) of the original image.
        img_shape: (height, width) after resizing (before padding).
        pad_shape: (height, width) of the network input.
        scale_factor: (w_scale, h_scale) = new size / old size (mmdet ``scale_factor``).
    """

    ori_shape: Tuple[int, int]
    img_shape: Tuple[int, int]
    pad_shape: Tuple[int, int]
    scale_factor: Tuple[float, float]


def rescaled_size(width: int, height: int, scale: Tuple[int, int],
                  keep_ratio: bool) -> Tuple[int, int]:
    """(new_w, new_h) of mmcv 2.x ``imrescale`` (keep_ratio) or ``imresize`` to ``scale``.

    keep_ratio: s = min(max(scale) / max(h, w), min(scale) / min(h, w)), new size
    (int(w * s + 0.5), int(h * s + 0.5)); else exactly ``scale`` (w, h).
    """
    if not keep_ratio:
        return int(scale[0]), int(scale[1])
    long_edge, short_edge = max(scale), min(scale)
    s = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(width * float(s) + 0.5), int(height * float(s) + 0.5)


def padded_size(width: int, height: int, pre: PreprocessSpec) -> Tuple[int, int]:
    """(w, h) of the network input after padding the resized image."""
    pad = pre.pad
    if pad is None:
        return width, height
    if pad.size is not None:
        return int(pad.size[0]), int(pad.size[1])
    d = int(pad.size_divisor)
    return -(-width // d) * d, -(-height // d) * d


class Preprocessor:
    """The preprocessing of a camera spec, with the per-channel constants computed once.

    Args:
        spec: the camera spec (``preprocessing`` and ``input``).
    """

    def __init__(self, spec: CameraSpec) -> None:
        self.spec = spec
        pre = spec.preprocessing
        self.pre = pre
        norm = pre.normalize
        # source channel of each output channel (OpenCV images are bgr)
        self._src = (2, 1, 0) if norm.to_rgb else (0, 1, 2)
        self._mean = np.asarray(norm.mean, np.float32)
        self._inv_std = (1.0 / np.asarray(norm.std, np.float64)).astype(np.float32)
        self._std = np.asarray(norm.std, np.float32)
        if pre.pad is None:
            fill = np.zeros(3, np.float32)
        elif pre.pad.stage == "raw":
            fill = (np.float32(pre.pad.pad_val) - self._mean) / self._std
        else:
            fill = np.full(3, pre.pad.pad_val, np.float32)
        self._fill = fill.astype(np.float32)

    def meta(self, height: int, width: int) -> ImageMeta:
        """The geometry of an image of ``height`` x ``width`` pixels."""
        rs = self.pre.resize
        new_w, new_h = rescaled_size(width, height, rs.scale, rs.keep_ratio)
        pad_w, pad_h = padded_size(new_w, new_h, self.pre)
        if pad_w < new_w or pad_h < new_h:
            raise PreprocessError(f"preprocessing.pad.size {[pad_w, pad_h]} is smaller than the "
                                  f"resized image {[new_w, new_h]} (w, h) of a {width}x{height} "
                                  "input")
        return ImageMeta((height, width), (new_h, new_w), (pad_h, pad_w),
                         (new_w / width, new_h / height))

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, ImageMeta]:
        """The engine input of one image.

        Args:
            image: [H, W, 3] uint8, bgr (OpenCV order).

        Returns:
            (input [1, 3, H', W'] float32 C-contiguous, its ImageMeta).

        Raises:
            PreprocessError: not an [H, W, 3] uint8 array, or an empty one.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or \
                image.dtype != np.uint8:
            got = f"{list(image.shape)} {image.dtype}" if isinstance(image, np.ndarray) else \
                type(image).__name__
            raise PreprocessError(f"camera image must be [H, W, 3] uint8 bgr, got {got}")
        h, w = image.shape[:2]
        if h == 0 or w == 0:
            raise PreprocessError(f"camera image is empty ({w}x{h})")
        meta = self.meta(h, w)
        new_h, new_w = meta.img_shape
        if (new_h, new_w) != (h, w):
            resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        else:
            resized = image
        pad_h, pad_w = meta.pad_shape
        out = np.empty((1, 3, pad_h, pad_w), np.float32)
        for c, src in enumerate(self._src):
            plane = out[0, c]
            view = plane[:new_h, :new_w]
            np.subtract(resized[:, :, src], self._mean[c], out=view, dtype=np.float32)
            np.divide(view, self._std[c], out=view)
            if pad_h > new_h:
                plane[new_h:, :] = self._fill[c]
            if pad_w > new_w:
                plane[:new_h, new_w:] = self._fill[c]
        return out, meta
