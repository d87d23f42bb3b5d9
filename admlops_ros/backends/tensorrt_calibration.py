"""INT8 calibration data for TensorRT: batch files on disk and their host-side iteration (numpy).

A calibration directory holds one ``NNNN.npz`` per batch, each with the engine's named input
arrays exactly as the runtime feeds them (a voxel engine: ``voxels`` [V, M, C] float32,
``num_points`` [V] int32, ``coors`` [V, 4] int32, V varying per batch):

    calib/0000.npz
    calib/0001.npz

TensorRT calibrates a network with a dynamic voxel axis at ONE fixed shape (the opt shape of
the calibration profile; TensorRT >= 8.5 with `set_calibration_profile`). `CalibrationStream`
therefore fits every batch to that shape by tiling its rows (row i of the result is row
i mod V): every voxel appears, each about as often as the others, and the copies scatter the
same pillar feature into the same canvas cell, so everything after the scatter sees exactly
the real frame (the runtime's own padding of small frames relies on the same property).

Nothing here imports tensorrt; the TensorRT calibrator (backends.tensorrt_backend) wraps a
`CalibrationStream` and only adds the device copies.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import (Any, Collection, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import numpy as np

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

# Layer-name substrings kept in fp32 in INT8 plans: the pillar front (`voxel_encoder`, also
# matching mmdet3d 0.x `pts_voxel_encoder`), whose inputs mix absolute coordinates (tens of
# metres) with centimetre offsets, and the head (`bbox_head` / `pts_bbox_head`), whose box
# regressions and class logits lose most from 8-bit scales.
DEFAULT_KEEP_FP32 = ("voxel_encoder", "bbox_head")
BATCH_SUFFIX = ".npz"
_BATCH_NAME = re.compile(r"\d+\.npz")

PathLike = Union[str, Path]


class CalibrationError(AdmlopsError):
    """Calibration batches missing, malformed or not fitting the network (names file and fix)."""


def batch_name(index: int) -> str:
    """File name of batch `index`: 0 -> 0000.npz."""
    return "%04d%s" % (index, BATCH_SUFFIX)


def batch_files(directory: PathLike) -> List[Path]:
    """The batch files of a calibration directory, in batch order.

    Raises:
        CalibrationError: not a directory, no batch in it, or an .npz not named NNNN.npz.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CalibrationError("calibration directory %s does not exist: write calibration "
                               "batches (NNNN.npz) with tensorrt_calibration."
                               "write_calibration_batches or `admlops optimize`" % root)
    files = sorted(root.glob("*" + BATCH_SUFFIX))
    odd = [p.name for p in files if not _BATCH_NAME.fullmatch(p.name)]
    if odd:
        raise CalibrationError("calibration directory %s holds %s: batch files are named "
                               "NNNN.npz (move other .npz files elsewhere)"
                               % (root, ", ".join(odd[:3])))
    if not files:
        raise CalibrationError("calibration directory %s holds no calibration batches "
                               "(NNNN.npz): write them with tensorrt_calibration."
                               "write_calibration_batches or `admlops optimize`" % root)
    return sorted(files, key=lambda p: int(p.stem))


def load_batch(path: PathLike) -> Dict[str, np.ndarray]:
    """The named arrays of one batch file.

    Raises:
        CalibrationError: unreadable or not an .npz of arrays.
    """
    try:
        with np.load(str(path), allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationError("calibration batch %s is unreadable (%s): write the directory "
                               "again" % (path, exc)) from exc


def _check_feed(feed: Mapping[str, np.ndarray], where: str,
                first: Optional[Mapping[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    arrays = {str(k): np.asarray(v) for k, v in feed.items()}
    if not arrays:
        raise CalibrationError("%s has no arrays" % where)
    for name, arr in arrays.items():
        if arr.ndim == 0 or len(arr) == 0:
            raise CalibrationError("%s: %s has shape %s; every input needs at least one row "
                                   "(skip empty frames)" % (where, name, list(arr.shape)))
        if arr.dtype.kind not in "biuf":
            raise CalibrationError("%s: %s has dtype %s; calibration inputs are numeric"
                                   % (where, name, arr.dtype))
    if first is not None:
        if set(arrays) != set(first):
            raise CalibrationError("%s has inputs %s, the first batch %s: every batch holds "
                                   "the same inputs" % (where, sorted(arrays), sorted(first)))
        for name, arr in arrays.items():
            ref = first[name]
            if arr.dtype != ref.dtype or arr.shape[1:] != ref.shape[1:]:
                raise CalibrationError(
                    "%s: %s is %s %s, the first batch's is %s %s: only the first axis may "
                    "differ between batches" % (where, name, arr.dtype, list(arr.shape),
                                                ref.dtype, list(ref.shape)))
    return arrays


def write_calibration_batches(feeds: Iterable[Mapping[str, np.ndarray]], directory: PathLike,
                              overwrite: bool = False) -> List[Path]:
    """Write engine feeds as a calibration directory (NNNN.npz each), for an INT8 build.

    Args:
        feeds: named input arrays per frame, as the engine is fed (voxel engines: voxels
            [V, M, C] float32, num_points [V] int32, coors [V, 4] int32). Every feed has the
            same names, dtypes and shapes except the first axis.
        directory: created if missing.
        overwrite: replace batches already in `directory` (all of them: no old batch is left
            to mix with the new ones); without it existing batches are an error.

    Returns:
        The files written, in order.

    Raises:
        CalibrationError: no feed, inconsistent feeds, or batches already there.
    """
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    existing = [p for p in root.glob("*" + BATCH_SUFFIX) if _BATCH_NAME.fullmatch(p.name)]
    if existing and not overwrite:
        raise CalibrationError("%s already holds %d calibration batches: pass overwrite=True "
                               "to replace them, or write to an empty directory"
                               % (root, len(existing)))
    first: Optional[Dict[str, np.ndarray]] = None
    arrays_list = []
    for index, feed in enumerate(feeds):  # check everything before touching old batches
        arrays = _check_feed(feed, "calibration feed %d" % index, first)
        if first is None:
            first = arrays
        arrays_list.append(arrays)
    if not arrays_list:
        raise CalibrationError("no calibration feeds to write to %s: calibrate with frames "
                               "of the deployment data (a few hundred)" % root)
    for old in existing:
        old.unlink()
    written = []
    for index, arrays in enumerate(arrays_list):
        path = root / batch_name(index)
        tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
            os.replace(str(tmp), str(path))
        finally:
            if tmp.exists():
                tmp.unlink()
        written.append(path)
    LOG.info("wrote %d calibration batches to %s (inputs %s)", len(written), root,
             ", ".join(sorted(arrays_list[0])))
    return written


@dataclass(frozen=True)
class CalibrationData:
    """A checked calibration directory.

    Attributes:
        directory: the directory.
        files: batch files in order.
        dtypes: input name -> dtype (the same in every batch).
        trailing: input name -> shape after the first axis.
        max_rows: input name -> largest first axis over the batches.
        sha256: hash of the arrays (names, dtypes, shapes, bytes; not of the zip files, whose
            timestamps change when the same data is written again).
    """

    directory: Path
    files: Tuple[Path, ...]
    dtypes: Dict[str, np.dtype]
    trailing: Dict[str, Tuple[int, ...]]
    max_rows: Dict[str, int]
    sha256: str

    @property
    def names(self) -> Tuple[str, ...]:
        """Input names, sorted."""
        return tuple(sorted(self.dtypes))

    def batches(self) -> Iterator[Tuple[Path, Dict[str, np.ndarray]]]:
        """(file, arrays) per batch, loaded one at a time."""
        for path in self.files:
            yield path, load_batch(path)


def _hash_arrays(digest: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        digest.update(("%s %s %s\n" % (name, arr.dtype.str, list(arr.shape))).encode())
        digest.update(arr.tobytes())


def open_calibration_dir(directory: PathLike) -> CalibrationData:
    """Read and check every batch of a calibration directory (one at a time) and hash them.

    Raises:
        CalibrationError: missing or empty directory, an unreadable batch, or batches that do
            not agree (names the file).
    """
    files = batch_files(directory)
    digest = hashlib.sha256()
    first: Optional[Dict[str, np.ndarray]] = None
    max_rows: Dict[str, int] = {}
    for path in files:
        arrays = _check_feed(load_batch(path), "calibration batch %s" % path, first)
        if first is None:
            first = arrays
        for name, arr in arrays.items():
            max_rows[name] = max(max_rows.get(name, 0), len(arr))
        digest.update(path.name.encode() + b"\n")
        _hash_arrays(digest, arrays)
    assert first is not None  # batch_files never returns an empty list
    return CalibrationData(Path(directory), tuple(files),
                           {k: v.dtype for k, v in first.items()},
                           {k: tuple(v.shape[1:]) for k, v in first.items()}, max_rows,
                           digest.hexdigest())


def tile_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` with its first axis tiled (or cut) to `rows`: row i is row i mod len(array)."""
    if len(array) == rows:
        return array
    return array[np.arange(rows) % len(array)]


class CalibrationStream:
    """Host side of a TensorRT INT8 calibrator: one batch per call, fitted to the network.

    Args:
        data: the checked calibration directory.
        shapes: network input name -> the exact shape TensorRT calibrates with (for an input
            with a dynamic first axis: that axis set to the calibration profile's rows).
        dtypes: network input name -> numpy dtype of the network input.
        dynamic: names of the inputs whose first axis is dynamic (their rows are tiled up to
            shapes[name][0]; all of them must have the same rows in a batch).

    Raises:
        CalibrationError: an input the batches lack, other trailing dimensions, a dtype that
            does not cast safely, or batches with more rows than the calibration shape.
    """

    def __init__(self, data: CalibrationData, shapes: Mapping[str, Sequence[int]],
                 dtypes: Mapping[str, np.dtype], dynamic: Collection[str] = ()) -> None:
        self.data = data
        self.shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
        self.dtypes = {k: np.dtype(v) for k, v in dtypes.items()}
        self.dynamic = frozenset(dynamic)
        self._files = iter(data.files)
        self.count = 0
        missing = sorted(set(self.shapes) - set(data.dtypes))
        if missing:
            raise CalibrationError("calibration batches in %s have inputs %s but the network "
                                   "also takes %s: write the batches from the engine's feeds"
                                   % (data.directory, list(data.names), missing))
        for name, shape in self.shapes.items():
            if data.trailing[name] != shape[1:]:
                raise CalibrationError("calibration input %s has shape [N, %s], the network "
                                       "takes %s" % (name, ", ".join(map(str, data.trailing[
                                           name])), list(shape)))
            if not np.can_cast(data.dtypes[name], self.dtypes[name], casting="same_kind"):
                raise CalibrationError("calibration input %s is %s, the network takes %s"
                                       % (name, data.dtypes[name], self.dtypes[name]))
            if name in self.dynamic and data.max_rows[name] > shape[0]:
                raise CalibrationError(
                    "calibration batches in %s have up to %d rows of %s, above the %d of the "
                    "TensorRT profile: write batches of at most %d (the spec's "
                    "voxelization.max_voxels must not exceed the profile max)"
                    % (data.directory, data.max_rows[name], name, shape[0], shape[0]))

    def nbytes(self) -> Dict[str, int]:
        """Device bytes per input for one calibration batch."""
        return {name: int(np.prod(shape)) * self.dtypes[name].itemsize
                for name, shape in self.shapes.items()}

    def fit(self, arrays: Mapping[str, np.ndarray], where: str) -> Dict[str, np.ndarray]:
        """One batch's arrays as the network is calibrated with (tiled rows, network dtypes).

        Raises:
            CalibrationError: dynamic inputs with different rows, or a static input of
                another shape.
        """
        missing = sorted(set(self.shapes) - set(arrays))
        if missing:
            raise CalibrationError("%s lacks inputs %s (changed since it was checked?): write "
                                   "the directory again" % (where, missing))
        rows = {name: len(arrays[name]) for name in self.shapes if name in self.dynamic}
        if len(set(rows.values())) > 1:
            raise CalibrationError("%s: inputs %s have different first axes; a batch is one "
                                   "frame's feed" % (where, rows))
        fitted = {}
        for name, shape in self.shapes.items():
            arr = arrays[name]
            if name in self.dynamic:
                arr = tile_rows(arr, shape[0])
            elif tuple(arr.shape) != shape:
                raise CalibrationError("%s: %s has shape %s, the network takes %s"
                                       % (where, name, list(arr.shape), list(shape)))
            fitted[name] = np.ascontiguousarray(arr, dtype=self.dtypes[name])
        return fitted

    def next_batch(self, names: Sequence[str]) -> Optional[List[np.ndarray]]:
        """The next batch's arrays in the order of `names`, None after the last batch.

        Raises:
            CalibrationError: a name that is not a network input, or a batch that does not fit.
        """
        unknown = [n for n in names if n not in self.shapes]
        if unknown:
            raise CalibrationError("TensorRT asked for inputs %s; the calibration stream "
                                   "has %s" % (unknown, sorted(self.shapes)))
        path = next(self._files, None)
        if path is None:
            return None
        fitted = self.fit(load_batch(path), "calibration batch %s" % path)
        self.count += 1
        return [fitted[n] for n in names]
