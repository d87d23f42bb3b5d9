"""Bag files: open a rosbag for reading (recovering the index of one cut short) and copy one."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, Tuple

from admlops_ros.errors import AdmlopsError

__all__ = ["BagError", "open_bag", "write_indexed_copy"]


class BagError(AdmlopsError):
    """A bag cannot be written or read (missing file / topic, corrupt data, no messages)."""


# Unindexed bags (issue 18). A recording cut short (crash, kill -9, full disk, power loss)
# leaves a bag whose file header still says index_pos 0, with no connection / chunk-info
# records at the end, and whose last chunk is usually *unterminated*: rosbag writes each chunk
# header with a placeholder size of 0 and fills it in only when the chunk is closed. The
# options and why none of them is used as is:
# - ``rosbag.Bag(path, allow_unindexed=True)`` opens it but with an empty index: 0 messages.
# - ``Bag.reindex()`` / ``rosbag reindex`` need the bag opened for appending (they truncate
#   it), hence a writable copy (this module used to leave one in /tmp per eval), and they stop
#   at the first chunk that does not parse -- the unterminated last chunk, which for a short
#   recording holds every message: 0 frames again.
# - PyPI ``rosbags``' Reader refuses unindexed bags ("reindex before reading").
# So the bag is opened read-only with allow_unindexed=True and its chunks are read directly:
# every connection and message record that is complete on disk is indexed in memory (an
# unterminated or cut chunk is scanned up to the last complete record), and the index is
# handed to that rosbag.Bag, whose read_messages / get_type_and_topic_info then work as on an
# indexed bag. No copy, nothing written, no temporary file. The index goes into the private
# attributes Bag.reindex() itself fills (_connections, _connection_indexes, _chunks,
# _chunk_headers, with rosbag.bag's _ConnectionInfo / _ChunkInfo / _ChunkHeader /
# _IndexEntry200): rosbag 1.x (Noetic, the last ROS 1) is frozen, and tests/evaluation/
# test_bags.py reads crashed and cut bags through it. An open chunk of a compressed bag is
# still in the recorder's compressor, not on disk: only the closed chunks can come back.

_BAG_MAGIC = b"#ROSBAG V2.0\n"
_OP_MSG_DATA, _OP_FILE_HEADER, _OP_INDEX_DATA, _OP_CHUNK, _OP_CONNECTION = 2, 3, 4, 5, 7


class _CorruptRecord(AdmlopsError):
    """A record header that fits in the file but does not parse (internal: never escapes)."""


def _fields(raw: bytes) -> Dict[str, bytes]:
    """``name=value`` fields of a record header (each prefixed by its uint32 length)."""
    out: Dict[str, bytes] = {}
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise _CorruptRecord("header field length cut")
        (size,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        name, sep, value = raw[pos:pos + size].partition(b"=")
        if pos + size > len(raw) or not sep:
            raise _CorruptRecord("malformed header field")
        out[name.decode("latin-1")] = value
        pos += size
    return out


def _u32(fields: Dict[str, bytes], name: str) -> int:
    value = fields.get(name)
    if value is None or len(value) != 4:
        raise _CorruptRecord(f"field {name!r} missing or not a uint32")
    return struct.unpack("<I", value)[0]


def _record_at(f: Any, end: int) -> Optional[Tuple[Dict[str, bytes], int, int]]:
    """(header fields, data offset, data length) of the record at ``f.tell()``.

    None when its header does not fit before ``end`` (the record is cut); the data may still
    run past ``end``, the caller checks.
    """
    start = f.tell()
    if start + 4 > end:
        return None
    (header_len,) = struct.unpack("<I", f.read(4))
    if start + 8 + header_len > end:
        return None
    fields = _fields(f.read(header_len))
    (data_len,) = struct.unpack("<I", f.read(4))
    if "op" not in fields or len(fields["op"]) != 1:
        raise _CorruptRecord("record without an op code")
    return fields, start + 8 + header_len, data_len


@dataclass
class _Scan:
    """What reading the chunks of an unindexed bag found (rosbag's index structures)."""

    connections: Dict[int, Any]
    entries: Dict[int, List[Any]]  # connection id -> _IndexEntry200, file order
    chunks: List[Any]  # _ChunkInfo of chunks holding messages
    chunk_headers: Dict[int, Any]  # chunk position -> _ChunkHeader
    messages: int = 0
    dropped_bytes: int = 0  # cut / unreadable bytes at the end of the file
    dropped_at: int = -1  # offset of the first dropped byte
    dropped_what: str = ""  # what the dropped bytes were
    notes: List[str] = field(default_factory=list)


def _scan_records(f: Any, begin: int, end: int, chunk_pos: int, scan: _Scan,
                  unterminated: bool) -> Tuple[int, str]:
    """Index the connection and message records of one chunk's data, ``[begin, end)`` of f.

    Returns (end of the last complete record, why it stopped: "end", "cut" (a record runs
    past ``end``), "corrupt", or "foreign" (a record that does not belong in a chunk: the end
    of an unterminated chunk)).
    """
    import genpy
    from rosbag.bag import _ChunkInfo, _ConnectionInfo, _IndexEntry200
    pos = begin
    info = None
    while pos < end:
        f.seek(pos)
        try:
            rec = _record_at(f, end)
        except (_CorruptRecord, struct.error):
            return pos, "corrupt"
        if rec is None:
            return pos, "cut"
        fields, data_pos, data_len = rec
        if data_pos + data_len > end:
            return pos, "cut"
        op = fields["op"][0]
        try:
            if op == _OP_CONNECTION:
                conn = _u32(fields, "conn")
                topic = fields.get("topic", b"").decode()
                if conn not in scan.connections:
                    scan.connections[conn] = _ConnectionInfo(conn, topic,
                                                             _fields(f.read(data_len)))
            elif op == _OP_MSG_DATA:
                conn = _u32(fields, "conn")
                raw_time = fields.get("time", b"")
                if len(raw_time) != 8:
                    raise _CorruptRecord("message record without a time")
                t = genpy.Time(*struct.unpack("<II", raw_time))
                if info is None:
                    info = _ChunkInfo(chunk_pos, t, t)
                    scan.chunks.append(info)
                info.start_time, info.end_time = min(info.start_time, t), max(info.end_time, t)
                info.connection_counts[conn] = info.connection_counts.get(conn, 0) + 1
                scan.entries.setdefault(conn, []).append(_IndexEntry200(t, chunk_pos,
                                                                        pos - begin))
                scan.messages += 1
            elif unterminated:
                return pos, "foreign"
        except Exception:  # noqa: B902 - _CorruptRecord, rosbag's format errors, bad UTF-8
            return pos, "corrupt"
        pos = data_pos + data_len
    return pos, "end"


def _drop_tail(scan: _Scan, at: int, size: int, what: str) -> None:
    scan.dropped_at, scan.dropped_bytes, scan.dropped_what = at, size - at, what


def _scan_chunks(path: Path) -> _Scan:
    """Read an unindexed v2.0 bag's chunks directly (read-only); see the note above."""
    import bz2
    import io

    from rosbag.bag import _ChunkHeader
    scan = _Scan({}, {}, [], {})
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(len(_BAG_MAGIC)) != _BAG_MAGIC:
            raise BagError(f"bag {path} is not a ROS bag of format 2.0 and has no index; "
                           f"convert or reindex it with `rosbag reindex {path}`")
        rec = _record_at(f, size)
        if rec is None or rec[0]["op"][0] != _OP_FILE_HEADER:
            raise BagError(f"bag {path} has no readable file header; it cannot be recovered")
        if rec[0].get("encryptor"):
            raise BagError(f"bag {path} is encrypted and not indexed; reindex it first with "
                           f"`rosbag reindex {path}`")
        pos = rec[1] + rec[2]
        while pos < size:
            f.seek(pos)
            try:
                rec = _record_at(f, size)
            except (_CorruptRecord, struct.error):
                _drop_tail(scan, pos, size, "an unreadable record after the last chunk")
                break
            if rec is None:  # a record header cut by the end of the file
                _drop_tail(scan, pos, size, "a record header cut mid-way, no message lost")
                break
            fields, data_pos, data_len = rec
            op = fields["op"][0]
            if op != _OP_CHUNK:  # index data, connection / chunk-info copies: rebuilt
                if data_pos + data_len > size:
                    _drop_tail(scan, pos, size, "index records only, no message lost")
                    break
                pos = data_pos + data_len
                continue
            compression = fields.get("compression", b"none").decode("latin-1")
            unterminated = data_len == 0  # the size placeholder of a chunk still open
            if not unterminated and data_pos + data_len <= size:  # a complete chunk
                if compression == "none":
                    end, why = _scan_records(f, data_pos, data_pos + data_len, pos, scan, False)
                    good = end - data_pos
                    scan.chunk_headers[pos] = _ChunkHeader("none", data_len, data_len, data_pos)
                else:
                    f.seek(data_pos)
                    try:
                        data = _decompress(compression, f.read(data_len), bz2)
                    except Exception as exc:  # noqa: B902
                        scan.notes.append(f"{compression} chunk at offset {pos} skipped: {exc}")
                        pos = data_pos + data_len
                        continue
                    good, why = _scan_records(io.BytesIO(data), 0, len(data), pos, scan, False)
                    scan.chunk_headers[pos] = _ChunkHeader(compression, data_len, len(data),
                                                           data_pos)
                if why != "end":
                    scan.notes.append(f"chunk at offset {pos}: its records from chunk offset "
                                      f"{good} on are unreadable ({why}) and were skipped")
                pos = data_pos + data_len
                continue
            # unterminated, or cut by the end of the file: read up to the last whole record
            if compression != "none":  # a cut compressed stream cannot be indexed
                _drop_tail(scan, pos, size, f"a {compression} chunk still open, which "
                           f"cannot be decompressed")
                break
            end, why = _scan_records(f, data_pos, size, pos, scan, unterminated)
            if end > data_pos:
                scan.chunk_headers[pos] = _ChunkHeader("none", end - data_pos, end - data_pos,
                                                       data_pos)
            if unterminated and why == "foreign":  # the chunk ended; top-level records follow
                pos = end
                continue
            if end < size:
                _drop_tail(scan, end, size, "an unreadable record" if why == "corrupt" else
                           "a record cut mid-way; every message before it is kept")
            break
    # the index: messages in file order per connection, sorted by time as rosbag keeps it
    # (a stable sort: equal times stay in file order); messages whose connection record was
    # lost cannot be decoded and are counted
    orphans = sum(len(v) for c, v in scan.entries.items() if c not in scan.connections)
    if orphans:
        scan.notes.append(f"{orphans} messages without a connection record skipped")
        scan.messages -= orphans
    scan.entries = {c: sorted(v, key=lambda e: e.time.to_nsec())
                    for c, v in scan.entries.items() if c in scan.connections}
    scan.connections = {c: i for c, i in scan.connections.items() if c in scan.entries}
    return scan


def _decompress(compression: str, data: bytes, bz2: ModuleType) -> bytes:
    if compression == "bz2":
        return bz2.decompress(data)
    if compression == "lz4":
        import roslz4
        return roslz4.decompress(data)
    raise BagError(f"unknown chunk compression {compression!r}")


def _recover_index(bag: Any, path: Path) -> List[str]:
    """Fill the (empty) index of ``bag``, opened with allow_unindexed, from its chunks.

    Returns the problems to report (at least one line saying the bag was not indexed).
    """
    scan = _scan_chunks(path)
    if not scan.messages:
        raise BagError(f"bag {path} is not indexed and holds no complete message "
                       f"({path.stat().st_size} bytes); it cannot be recovered")
    bag._clear_index()
    bag._connections = scan.connections
    bag._connection_indexes = scan.entries
    bag._chunks = scan.chunks
    bag._chunk_headers = scan.chunk_headers
    bag._connection_indexes_read = True
    problems = [f"bag {path} is not indexed (recording cut short?): read {scan.messages} "
                f"messages from {len(scan.chunk_headers)} chunk(s) directly"]
    if scan.dropped_bytes:
        problems.append(f"bag {path}: dropped the last {scan.dropped_bytes} bytes from offset "
                        f"{scan.dropped_at} ({scan.dropped_what})")
    problems += [f"bag {path}: {note}" for note in scan.notes]
    return problems


def open_bag(path: Path) -> Tuple[Any, List[str]]:
    """rosbag.Bag for reading and the problems found opening it.

    An unindexed bag is indexed in memory from its chunks (no copy; see the note above).
    """
    import rosbag
    if not path.is_file():
        raise BagError(f"bag {path} does not exist")
    try:
        return rosbag.Bag(str(path), "r"), []
    except rosbag.ROSBagUnindexedException:
        pass
    except Exception as exc:  # noqa: B902 - rosbag raises ROSBagException, struct.error, ...
        raise BagError(f"bag {path} cannot be opened: {exc}") from exc
    try:
        bag = rosbag.Bag(str(path), "r", allow_unindexed=True)
    except Exception as exc:  # noqa: B902
        raise BagError(f"bag {path} is not indexed and cannot be opened: {exc}") from exc
    try:
        if bag.version != 200:
            raise BagError(f"bag {path} (format {bag.version / 100:.1f}) is not indexed; "
                           f"reindex it with `rosbag reindex {path}`")
        return bag, _recover_index(bag, path)
    except BaseException as exc:  # the bag must not stay open, even on Ctrl-C
        bag.close()
        if isinstance(exc, (BagError, KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise BagError(f"bag {path} is not indexed and could not be recovered: {exc}") from exc


def write_indexed_copy(path: os.PathLike, out: os.PathLike,
                       topics: Optional[Sequence[str]] = None) -> int:
    """Copy the messages of a bag (e.g. an unindexed one) to a new, indexed bag ``out``.

    For tools that need the index on disk (``rosbag play``); returns the messages written.

    Raises:
        BagError: the bag cannot be opened / recovered, or ``out`` cannot be written.
    """
    import rosbag
    src, _ = open_bag(Path(path))
    count = 0
    try:
        with rosbag.Bag(str(out), "w") as dst:
            for topic, raw, t, conn in src.read_messages(
                    topics=list(topics) if topics else None, raw=True,
                    return_connection_header=True):
                dst.write(topic, raw, t, raw=True, connection_header=conn)
                count += 1
    except (OSError, rosbag.ROSBagException, ValueError) as exc:
        raise BagError(f"cannot write an indexed copy of {path} to {out}: {exc}") from exc
    finally:
        src.close()
    return count
