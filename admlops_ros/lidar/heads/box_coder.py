"""mmdet3d DeltaXYZWLHRBBoxCoder: anchor-relative box deltas <-> LiDAR boxes (numpy)."""
from __future__ import annotations

import numpy as np

from admlops_ros.errors import AdmlopsError

__all__ = ["BoxCoderError", "encode", "decode"]


class BoxCoderError(AdmlopsError, ValueError):
    """Raised when anchors and deltas / boxes do not have matching [N, 7+] shapes."""


def _check(anchors: np.ndarray, other: np.ndarray, name: str) -> None:
    if anchors.ndim < 1 or anchors.shape[-1] < 7 or anchors.shape != other.shape:
        raise BoxCoderError(
            f"box coder: anchors and {name} must both be [..., 7+] with the same shape, got "
            f"{anchors.shape} and {other.shape}")


def decode(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply deltas to anchors (mmdet3d ``DeltaXYZWLHRBBoxCoder.decode``).

    With diagonal = sqrt(dx_a^2 + dy_a^2) and anchor centre z_a + dz_a / 2:
    x = tx * diagonal + x_a, y = ty * diagonal + y_a, z_centre = tz * dz_a + z_a + dz_a / 2,
    sizes = exp(t) * anchor sizes, yaw = t_yaw + yaw_a, z = z_centre - dz / 2; columns past 7
    are added to the anchor's.

    Args:
        anchors: [..., 7+] (x, y, z, dx, dy, dz, yaw) bottom-centre LiDAR boxes.
        deltas: [..., 7+] (tx, ty, tz, tdx, tdy, tdz, tyaw, ...), same shape.

    Returns:
        [..., 7+] bottom-centre boxes in the dtype of the inputs' result type.
    """
    a = np.asarray(anchors)
    t = np.asarray(deltas)
    _check(a, t, "deltas")
    xa, ya, za, wa, la, ha, ra = (a[..., i] for i in range(7))
    xt, yt, zt, wt, lt, ht, rt = (t[..., i] for i in range(7))
    za = za + ha / 2
    diagonal = np.sqrt(la ** 2 + wa ** 2)
    out = np.empty(a.shape, dtype=np.result_type(a, t))
    out[..., 0] = xt * diagonal + xa
    out[..., 1] = yt * diagonal + ya
    hg = np.exp(ht) * ha
    out[..., 2] = (zt * ha + za) - hg / 2
    out[..., 3] = np.exp(wt) * wa
    out[..., 4] = np.exp(lt) * la
    out[..., 5] = hg
    out[..., 6] = rt + ra
    if a.shape[-1] > 7:
        out[..., 7:] = t[..., 7:] + a[..., 7:]
    return out


def encode(anchors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Deltas that turn anchors into boxes (mmdet3d ``DeltaXYZWLHRBBoxCoder.encode``).

    Args:
        anchors: [..., 7+] bottom-centre LiDAR boxes (positive sizes).
        boxes: [..., 7+] target bottom-centre boxes, same shape.

    Returns:
        [..., 7+] deltas (tx, ty, tz, tdx, tdy, tdz, tyaw, ...); yaw difference is not wrapped.
    """
    a = np.asarray(anchors)
    g = np.asarray(boxes)
    _check(a, g, "boxes")
    xa, ya, za, wa, la, ha, ra = (a[..., i] for i in range(7))
    xg, yg, zg, wg, lg, hg, rg = (g[..., i] for i in range(7))
    za = za + ha / 2
    zg = zg + hg / 2
    diagonal = np.sqrt(la ** 2 + wa ** 2)
    out = np.empty(a.shape, dtype=np.result_type(a, g))
    out[..., 0] = (xg - xa) / diagonal
    out[..., 1] = (yg - ya) / diagonal
    out[..., 2] = (zg - za) / ha
    out[..., 3] = np.log(wg / wa)
    out[..., 4] = np.log(lg / la)
    out[..., 5] = np.log(hg / ha)
    out[..., 6] = rg - ra
    if a.shape[-1] > 7:
        out[..., 7:] = g[..., 7:] - a[..., 7:]
    return out
