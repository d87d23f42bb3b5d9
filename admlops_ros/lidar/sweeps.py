"""Multi-sweep input: the last N clouds in the newest cloud's sensor frame, with a time-lag column.

Semantics of mmdet3d 1.x ``LoadPointsFromMultiSweeps`` (test mode, ``remove_close=True``):

- the newest cloud comes first, unchanged, its time column 0;
- then the past sweeps, most recent first; each is moved into the newest cloud's sensor frame
  and its time column is ``newest stamp - sweep stamp`` in seconds;
- points of a past sweep with ``|x| < r and |y| < r`` in *its own* sensor frame (r = 1 m, a
  square, as mmdet3d's ``_remove_close``) are removed before it is moved: the ego vehicle's
  own returns. The newest cloud keeps them.

Ego motion is compensated as Autoware's ``pointcloud_densification`` does it: every cloud
carries its sensor pose in a fixed frame (e.g. ``odom``), ``T_fixed<-sensor``, looked up once
when it arrives; a past sweep goes to the newest frame by ``inv(T_fixed<-newest) @
T_fixed<-past``. Past sweeps are stored once, already filtered, in their own frame (float32,
plus a constant-1 column); per frame only the composed transforms change, and each sweep is
moved, its time lag written and copied into the output by one float32 matrix product
``[x y z f.. 1] @ M`` (in single-threaded chunks) into a preallocated buffer. The 4x4
algebra runs in float64, so a fixed frame far from its origin costs no precision.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

#: mmdet3d ``LoadPointsFromMultiSweeps._remove_close`` default radius (m), a square in x, y.
REMOVE_CLOSE_M = 1.0
TIME_FEATURE = "time"
_GROWTH = 1.25
#: Multiply-adds per matrix product: below OpenBLAS's threading threshold (m*n*k < 65536 * 4),
#: so each product runs on the calling thread. A threaded product of a whole sweep measured
#: 1.2 ms idle but 8-10 ms median while other processes loaded the second core (its threads
#: wait for each other); in chunks it stays ~1 ms either way.
_CHUNK_MACS = 200000


class SweepError(AdmlopsError, ValueError):
    """A cloud or pose the sweep accumulator cannot take (columns, non-finite pose, settings)."""


@dataclass(frozen=True)
class SensorPose:
    """Pose of a cloud's sensor frame in the fixed frame: ``T_fixed<-sensor``.

    Attributes:
        translation: (x, y, z) metres, the sensor origin in the fixed frame.
        rotation: unit quaternion (x, y, z, w), as geometry_msgs/Quaternion.
    """

    translation: Tuple[float, float, float]
    rotation: Tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)

    def matrix(self) -> np.ndarray:
        """The 4x4 float64 homogeneous transform (quaternion normalized).

        Raises:
            SweepError: a non-finite value (the message names the field) or a zero quaternion.
        """
        values = list(zip(("translation.x", "translation.y", "translation.z"),
                          self.translation))
        values += list(zip(("rotation.x", "rotation.y", "rotation.z", "rotation.w"),
                           self.rotation))
        if len(values) != 7:
            raise SweepError(f"pose needs 3 translation and 4 rotation values, got "
                             f"{len(self.translation)} and {len(self.rotation)}")
        for name, value in values:
            if not math.isfinite(float(value)):
                raise SweepError(f"pose {name} is {float(value)}; the cloud's pose in the fixed "
                                 "frame must be finite (check the tf publisher)")
        x, y, z, w = (float(v) for v in self.rotation)
        norm = math.sqrt(x * x + y * y + z * z + w * w)
        if norm < 1e-9:
            raise SweepError("pose rotation is the zero quaternion; publish a unit quaternion")
        x, y, z, w = x / norm, y / norm, z / norm, w / norm
        out = np.eye(4)
        out[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                       [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                       [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
        out[:3, 3] = [float(v) for v in self.translation]
        return out


@dataclass(frozen=True)
class SkippedSweep:
    """A past sweep left out of a frame: its stamp (s), sensor frame and why."""

    stamp_s: float
    frame_id: str
    reason: str


@dataclass
class Accumulated:
    """Result of :meth:`SweepAccumulator.add`.

    Attributes:
        points: [M, C] float32 in the newest cloud's sensor frame, newest cloud first, then
            past sweeps most recent first. A view of the accumulator's buffer: valid until the
            next ``add`` (copy it to keep it).
        num_sweeps: clouds in ``points`` (1 = the newest alone).
        skipped: past sweeps in the window that were left out (no pose).
        reset: why the buffer was emptied before this cloud ("" when it was not).
    """

    points: np.ndarray
    num_sweeps: int
    skipped: Tuple[SkippedSweep, ...] = ()
    reset: str = ""


class _Slot:
    """One stored past sweep: filtered points in its own frame plus a constant-1 column."""

    __slots__ = ("storage", "count", "stamp_s", "pose", "frame_id")

    def __init__(self, columns: int) -> None:
        self.storage = np.ones((0, columns + 1), np.float32)
        self.count = 0
        self.stamp_s = 0.0
        self.pose: Optional[np.ndarray] = None
        self.frame_id = ""

    def rows(self) -> np.ndarray:
        return self.storage[:self.count]


class SweepAccumulator:
    """The last ``num_sweeps`` clouds merged into the newest cloud's frame (see module doc)."""

    def __init__(self, num_sweeps: int, num_columns: int, time_column: Optional[int] = None,
                 remove_close_m: float = REMOVE_CLOSE_M, pad_empty: bool = False) -> None:
        """Args:
            num_sweeps: clouds per frame including the newest (mmdet3d's ``sweeps_num`` + 1;
                1 passes the cloud through with its time column zeroed).
            num_columns: C, point columns (x, y, z first); every cloud must have C.
            time_column: index of the time-lag column, or None when the model has none.
            remove_close_m: half side (m) of the square around a past sweep's sensor whose
                points are dropped; 0 keeps all.
            pad_empty: when no past sweep can be used (the first cloud, or none with a pose),
                the newest cloud, remove-close applied, stands in for each of the
                ``num_sweeps - 1`` past ones with time lag 0 (mmdet3d ``pad_empty_sweeps``).

        Raises:
            SweepError: num_sweeps < 1, fewer than 3 columns, time_column outside 3..C-1.
        """
        if int(num_sweeps) < 1:
            raise SweepError(f"num_sweeps must be >= 1, got {num_sweeps}")
        if int(num_columns) < 3:
            raise SweepError(f"clouds need at least x, y, z columns, got {num_columns}")
        if time_column is not None and not 3 <= int(time_column) < int(num_columns):
            raise SweepError(f"time_column {time_column} must be a column after x, y, z "
                             f"(3..{int(num_columns) - 1})")
        if not remove_close_m >= 0:
            raise SweepError(f"remove_close_m must be >= 0, got {remove_close_m}")
        self.num_sweeps = int(num_sweeps)
        self.num_columns = int(num_columns)
        self.time_column = None if time_column is None else int(time_column)
        self.remove_close_m = float(remove_close_m)
        self.pad_empty = bool(pad_empty)
        self._slots = [_Slot(self.num_columns) for _ in range(self.num_sweeps - 1)]
        self._head = 0          # index of the most recent past sweep
        self._stored = 0        # valid slots
        self._last_stamp: Optional[float] = None
        self._buffer = np.zeros((0, self.num_columns), np.float32)
        # [x y z f.. 1] @ mixer: rows 0-2 rotation (transposed), last row translation and lag
        c = self.num_columns
        self._mixer = np.zeros((c + 1, c), np.float32)
        for j in range(3, c):
            self._mixer[j, j] = 0.0 if j == self.time_column else 1.0

    @classmethod
    def for_features(cls, num_sweeps: int, point_features: Sequence[str],
                     remove_close_m: float = REMOVE_CLOSE_M,
                     pad_empty: bool = False) -> "SweepAccumulator":
        """An accumulator for a model's point columns; the time lag goes to ``"time"``."""
        names = list(point_features)
        return cls(num_sweeps, len(names),
                   names.index(TIME_FEATURE) if TIME_FEATURE in names else None,
                   remove_close_m, pad_empty)

    def __len__(self) -> int:
        """Stored past sweeps (at most num_sweeps - 1)."""
        return self._stored

    def clear(self) -> None:
        """Forget every stored sweep (the buffers are kept)."""
        self._stored = 0
        self._last_stamp = None

    def add(self, points: np.ndarray, stamp_s: float, pose: Optional[SensorPose],
            frame_id: str = "") -> Accumulated:
        """Merge a new cloud with the stored past sweeps, then store it for the next frames.

        Args:
            points: [N, C] float32 in the cloud's sensor frame (finite rows), C = num_columns;
                its time column (if any) is ignored and written as 0.
            stamp_s: the cloud's header stamp, seconds.
            pose: the cloud's sensor pose in the fixed frame; None when unknown (no past sweep
                can then be placed in its frame, and it is skipped in later frames).
            frame_id: the cloud's sensor frame, for :class:`SkippedSweep` reports.

        Returns:
            Accumulated (points are a view of an internal buffer, see there).

        Raises:
            SweepError: wrong column count or dimensions, or a non-finite pose.
        """
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 2 or points.shape[1] != self.num_columns:
            raise SweepError(f"cloud has shape {tuple(points.shape)}, the accumulator holds "
                             f"{self.num_columns} columns; convert every cloud with the same "
                             "point features")
        stamp_s = float(stamp_s)
        if not math.isfinite(stamp_s):
            raise SweepError(f"cloud stamp is {stamp_s}; it must be finite")
        current = None if pose is None else pose.matrix()
        reset = ""
        if self._last_stamp is not None and stamp_s <= self._last_stamp:
            how = "repeats" if stamp_s == self._last_stamp else "is older than"
            reset = (f"cloud stamp {stamp_s:.6f} {how} the previous {self._last_stamp:.6f} "
                     f"(bag loop or clock jump): dropped {self._stored} past sweeps")
            LOG.warning("sweeps reset: %s", reset)
            self.clear()
        used, skipped = self._place(current, stamp_s)
        n = len(points)
        pads = self.num_sweeps - 1 if self.pad_empty and not used else 0
        close = self._close(points) if pads else None
        pad_rows = 0 if close is None else int(n - np.count_nonzero(close))
        total = n + pads * pad_rows + sum(slot.count for slot, _ in used)
        out = self._output(total)
        out[:n] = points
        if self.time_column is not None:
            out[:n, self.time_column] = 0.0
        row = n
        if pads:  # the newest cloud (lag 0, remove-close applied) as each missing past sweep
            pad = out[:n][~close] if close.any() else out[:n]
            for _ in range(pads):
                out[row:row + pad_rows] = pad
                row += pad_rows
        mixer = self._mixer
        chunk = max(256, _CHUNK_MACS // mixer.size)
        for slot, relative in used:
            mixer[:3, :3] = relative[:3, :3].T
            mixer[-1, :3] = relative[:3, 3]
            if self.time_column is not None:
                mixer[-1, self.time_column] = stamp_s - slot.stamp_s
            rows = slot.rows()
            for start in range(0, slot.count, chunk):
                stop = min(start + chunk, slot.count)
                np.matmul(rows[start:stop], mixer, out=out[row + start:row + stop])
            row += slot.count
        self._store(points, stamp_s, current, frame_id)
        return Accumulated(out[:total], 1 + max(len(used), pads), tuple(skipped), reset)

    def _place(self, current: Optional[np.ndarray], stamp_s: float
               ) -> Tuple[List[Tuple[_Slot, np.ndarray]], List[SkippedSweep]]:
        """Past sweeps with their transform into the newest frame, most recent first."""
        used: List[Tuple[_Slot, np.ndarray]] = []
        skipped: List[SkippedSweep] = []
        inverse = None
        if current is not None:
            inverse = np.eye(4)
            inverse[:3, :3] = current[:3, :3].T
            inverse[:3, 3] = -current[:3, :3].T @ current[:3, 3]
        for k in range(self._stored):
            slot = self._slots[(self._head + k) % len(self._slots)]
            if inverse is None:
                skipped.append(SkippedSweep(slot.stamp_s, slot.frame_id,
                                            "the newest cloud has no pose"))
            elif slot.pose is None:
                skipped.append(SkippedSweep(slot.stamp_s, slot.frame_id, "no pose"))
            else:
                used.append((slot, inverse @ slot.pose))
        return used, skipped

    def _close(self, points: np.ndarray) -> np.ndarray:
        """[N] bool: inside the remove-close square (|x| < r and |y| < r; none when r = 0)."""
        r = self.remove_close_m
        if r <= 0 or not len(points):
            return np.zeros(len(points), bool)
        return (np.abs(points[:, 0]) < r) & (np.abs(points[:, 1]) < r)

    def _output(self, rows: int) -> np.ndarray:
        if len(self._buffer) < rows:
            self._buffer = np.empty((int(rows * _GROWTH) + 1, self.num_columns), np.float32)
        return self._buffer

    def _store(self, points: np.ndarray, stamp_s: float, pose: Optional[np.ndarray],
               frame_id: str) -> None:
        self._last_stamp = stamp_s
        if not self._slots:
            return
        self._head = (self._head - 1) % len(self._slots)  # overwrites the oldest when full
        self._stored = min(self._stored + 1, len(self._slots))
        slot = self._slots[self._head]
        # whole rows move as opaque records (one copy each way, not one per column)
        c = self.num_columns
        records = np.ascontiguousarray(points).view(f"V{4 * c}").reshape(-1)
        close = self._close(points)
        kept = records[~close] if close.any() else records
        if len(slot.storage) < len(kept):
            slot.storage = np.ones((int(len(kept) * _GROWTH) + 1, c + 1), np.float32)
        storage = slot.storage
        np.ndarray((len(kept),), kept.dtype, buffer=storage,
                   strides=(storage.strides[0],))[:] = kept     # column c stays 1
        slot.count = len(kept)
        slot.stamp_s = stamp_s
        slot.pose = pose
        slot.frame_id = str(frame_id)


__all__: Sequence[str] = ("REMOVE_CLOSE_M", "TIME_FEATURE", "Accumulated", "SensorPose",
                          "SkippedSweep", "SweepAccumulator", "SweepError")
