"""`admlops record` without a master: profiles, raw messages, split and ring buffer, triggers, sidecars.

The rospy adapter (:mod:`admlops_ros.data.recorder_node`) turns every received message into a
:class:`RawMessage` (the serialized bytes and the connection header's type, md5sum and
definition, never deserialized) and hands it, from one thread, to a :class:`ContinuousRecorder`
or a :class:`TriggeredRecorder`. Both write bags through :class:`BagFile`: ``PREFIX_0000.bag``,
``PREFIX_0001.bag``, ... (``.bag.active`` while open), each with a sidecar ``PREFIX_0000.yaml``
(:func:`sidecar_path`) saying what the bag holds, which engine ran, when, and, for a triggered
capture, why it was written.

Times: ``t_ns`` is the ROS time a message was received (the bag's record time, as ``rosbag
record`` writes it); header stamps are kept in the serialized bytes unchanged. Trigger windows
are ``[stamp - pre, stamp + post]`` on the record time.
"""
from __future__ import annotations

import datetime
import logging
import math
import os
import re
import struct
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from admlops_ros.errors import AdmlopsError

LOG = logging.getLogger(__name__)

PROFILES_FILE = "record_profiles.yaml"
SENSORS = ("lidar", "camera", "camera_info", "tf", "detections", "stats", "diagnostics",
           "ground_truth", "other")
SIDECAR_FORMAT = "admlops-record/1"
MODES = ("continuous", "trigger")
TRIGGER_KINDS = ("service", "low_confidence", "flicker", "diagnostics")
DIAG_WARN = 1  # diagnostic_msgs/DiagnosticStatus levels: OK 0, WARN 1, ERROR 2, STALE 3
DIAG_LEVELS = {"warn": 1, "error": 2, "stale": 3}
#: The ring buffer keeps this much more than --pre: a detection trigger's stamp (the cloud's)
#: lags the moment it fires by the node's latency and, for a flicker, one frame.
TRIGGER_LATENCY_S = 1.0
RECORD_OVERHEAD_BYTES = 30  # a message data record's header in the bag (op, conn, time, sizes)
MAX_MERGED_EVENTS = 20      # triggers folded into a capture in progress listed in its sidecar
_NS = 1_000_000_000


class RecordError(AdmlopsError, ValueError):
    """A bad profile, topic, option or output directory of ``admlops record``."""


# ---------------------------------------------------------------------------------------------
# Profiles

@dataclass(frozen=True)
class TopicSpec:
    """One topic to record and the sensor it carries (one of :data:`SENSORS`)."""

    topic: str
    sensor: str = "other"


@dataclass(frozen=True)
class Profile:
    """A named list of topics (config/record_profiles.yaml)."""

    name: str
    topics: Tuple[TopicSpec, ...]
    description: str = ""


def default_profiles_path() -> Path:
    """config/record_profiles.yaml of the package."""
    from admlops_ros.paths import package_root
    return package_root() / "config" / PROFILES_FILE


def _check_topic_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"/[A-Za-z0-9_~/]*[A-Za-z0-9_]", name) \
            or "//" in name:
        raise RecordError(f"{where}: {name!r} is not a topic name; give an absolute name such "
                          f"as /points_raw")
    return name


def _topic_entry(entry: Any, where: str) -> TopicSpec:
    if isinstance(entry, str):
        return TopicSpec(_check_topic_name(entry, where))
    if not isinstance(entry, Mapping):
        raise RecordError(f"{where}: must be a topic name or a mapping with 'topic' and "
                          f"'sensor', got {entry!r}")
    unknown = sorted(set(entry) - {"topic", "sensor"})
    if unknown:
        raise RecordError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; an entry "
                          f"has 'topic' and optionally 'sensor'")
    if "topic" not in entry:
        raise RecordError(f"{where}: 'topic' is missing")
    sensor = entry.get("sensor", "other")
    if sensor not in SENSORS:
        raise RecordError(f"{where}.sensor: {sensor!r} is not one of {', '.join(SENSORS)}")
    return TopicSpec(_check_topic_name(entry["topic"], f"{where}.topic"), sensor)


def parse_profiles(data: Any, source: str) -> Dict[str, Profile]:
    """Profiles from the parsed YAML of a profiles file.

    Raises:
        RecordError: the layout is wrong; the message names the file, profile and field.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("profiles"), Mapping) \
            or not data["profiles"]:
        raise RecordError(f"{source}: must hold a non-empty mapping 'profiles: {{NAME: "
                          f"{{topics: [...]}}}}'")
    unknown = sorted(set(data) - {"profiles"})
    if unknown:
        raise RecordError(f"{source}: unknown top-level key(s) {', '.join(map(str, unknown))}; "
                          f"only 'profiles'")
    profiles: Dict[str, Profile] = {}
    for name, body in data["profiles"].items():
        where = f"{source}: profiles.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
            raise RecordError(f"{where}: a profile name is letters, digits, '_' or '-'")
        if not isinstance(body, Mapping):
            raise RecordError(f"{where}: must be a mapping with 'topics' (and 'description')")
        unknown = sorted(set(body) - {"topics", "description"})
        if unknown:
            raise RecordError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; a "
                              f"profile has 'topics' and 'description'")
        topics = body.get("topics")
        if not isinstance(topics, list) or not topics:
            raise RecordError(f"{where}.topics: must be a non-empty list of topics")
        specs = tuple(_topic_entry(t, f"{where}.topics[{i}]") for i, t in enumerate(topics))
        seen = [s.topic for s in specs]
        dup = sorted({t for t in seen if seen.count(t) > 1})
        if dup:
            raise RecordError(f"{where}.topics: {', '.join(dup)} listed twice")
        description = body.get("description", "")
        if not isinstance(description, str):
            raise RecordError(f"{where}.description: must be text")
        profiles[name] = Profile(name, specs, " ".join(description.split()))
    return profiles


def load_profiles(path: Optional[os.PathLike] = None) -> Dict[str, Profile]:
    """Read and check a profiles file (default: config/record_profiles.yaml).

    Raises:
        RecordError: the file is missing, not YAML, or a profile is malformed.
    """
    import yaml
    path = Path(path) if path is not None else default_profiles_path()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"profiles file {path} cannot be read: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecordError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    return parse_profiles(data, str(path))


def select_topics(profiles: Mapping[str, Profile], name: str,
                  replace: Optional[Sequence[str]] = None,
                  add: Optional[Sequence[str]] = None) -> Tuple[TopicSpec, ...]:
    """The topics of profile ``name``, replaced by ``replace`` and/or extended by ``add``.

    A topic given on the command line takes the sensor any profile gives it (else "other");
    ``TOPIC:SENSOR`` names it explicitly.

    Raises:
        RecordError: unknown profile (the known ones are listed), a bad topic or sensor.
    """
    if name not in profiles:
        raise RecordError(f"unknown profile {name!r}; the profiles are "
                          f"{', '.join(sorted(profiles))} (config/{PROFILES_FILE}, or "
                          f"--profiles FILE)")
    known = {s.topic: s.sensor for p in profiles.values() for s in p.topics}

    def parse(text: str, option: str) -> TopicSpec:
        topic, _, sensor = text.partition(":")
        topic = _check_topic_name(topic, option)
        sensor = sensor or known.get(topic, "other")
        if sensor not in SENSORS:
            raise RecordError(f"{option} {text}: sensor {sensor!r} is not one of "
                              f"{', '.join(SENSORS)}")
        return TopicSpec(topic, sensor)

    topics = ([parse(t, "--topics") for t in replace] if replace
              else list(profiles[name].topics))
    for text in add or ():
        spec = parse(text, "--add-topic")
        if all(spec.topic != s.topic for s in topics):
            topics.append(spec)
    out: Dict[str, TopicSpec] = {}
    for spec in topics:
        out.setdefault(spec.topic, spec)
    return tuple(out.values())


# ---------------------------------------------------------------------------------------------
# Raw messages

@lru_cache(maxsize=256)
def first_field_is_header(definition: str) -> bool:
    """Whether a message definition's first field is ``Header header`` (std_msgs/Header)."""
    for line in definition.splitlines():
        parts = line.split("#", 1)[0].split()
        if not parts or "=" in "".join(parts):  # blank, comment, or a constant
            continue
        return len(parts) == 2 and parts[0] in ("Header", "std_msgs/Header")
    return False


def header_stamp_ns(definition: str, data: bytes) -> Optional[int]:
    """The header stamp (ns) read from the serialized bytes, or None without a header."""
    if len(data) < 12 or not first_field_is_header(definition):
        return None
    secs, nsecs = struct.unpack_from("<II", data, 4)  # after uint32 seq
    return secs * _NS + nsecs


@dataclass
class RawMessage:
    """One received message, still serialized.

    Attributes:
        topic: where it was received.
        datatype, md5sum, definition: from the publisher's connection header.
        data: the serialized message (ROS1 wire format).
        t_ns: ROS time of receipt (ns), the bag's record time.
        callerid: the publishing node; latching: a latched topic (/tf_static).
        wall_ns: wall-clock time of receipt (ns); 0 = not known (the time it is written).
    """

    topic: str
    datatype: str
    md5sum: str
    definition: str
    data: bytes
    t_ns: int
    callerid: str = ""
    latching: bool = False
    wall_ns: int = 0

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def stamp_ns(self) -> Optional[int]:
        """The header stamp (ns), or None for a message without a header."""
        return header_stamp_ns(self.definition, self.data)

    @classmethod
    def from_message(cls, topic: str, msg: Any, t_ns: int, latching: bool = False,
                     callerid: str = "") -> "RawMessage":
        """Serialize a genpy message (tests, in-process recording)."""
        import io
        buf = io.BytesIO()
        msg.serialize(buf)
        return cls(topic, msg._type, msg._md5sum, msg._full_text, buf.getvalue(), int(t_ns),
                   callerid, latching)

    def connection_header(self) -> Dict[str, str]:
        header = {"topic": self.topic, "type": self.datatype, "md5sum": self.md5sum,
                  "message_definition": self.definition}
        if self.callerid:
            header["callerid"] = self.callerid
        if self.latching:
            header["latching"] = "1"
        return header


_CLASSES: Dict[Tuple[str, str], Any] = {}


def decode(msg: RawMessage) -> Any:
    """Deserialize with a class generated from the message's own definition (genpy).

    Raises:
        RecordError: the bytes do not match the definition.
    """
    key = (msg.datatype, msg.md5sum)
    cls = _CLASSES.get(key)
    if cls is None:
        import genpy.dynamic
        cls = genpy.dynamic.generate_dynamic(msg.datatype, msg.definition)[msg.datatype]
        _CLASSES[key] = cls
    try:
        return cls().deserialize(msg.data)
    except Exception as exc:  # noqa: B902 - genpy raises DeserializationError, struct.error, ...
        raise RecordError(f"a {msg.datatype} message on {msg.topic} cannot be decoded: "
                          f"{exc}") from exc


# ---------------------------------------------------------------------------------------------
# Ring buffer and split policy

class RingBuffer:
    """The last ``keep_s`` seconds of messages (by record time), at most ``max_bytes`` bytes.

    The newest message sets the clock: older than ``newest - keep_s`` is evicted, then the
    oldest go until the bytes fit. ``evicted_for_bytes`` counts the messages the byte bound
    dropped (the window then holds less than ``keep_s``).
    """

    def __init__(self, keep_s: float, max_bytes: int) -> None:
        if keep_s < 0 or max_bytes <= 0:
            raise RecordError(f"ring buffer: keep {keep_s} s and {max_bytes} bytes must be "
                              f">= 0 and > 0")
        self.keep_ns = int(round(keep_s * _NS))
        self.max_bytes = int(max_bytes)
        self._items: Deque[RawMessage] = deque()
        self.nbytes = 0
        self.newest_ns = 0
        self.evicted_for_bytes = 0
        self.last_byte_eviction_ns: Optional[int] = None  # record time of the last one dropped

    def __len__(self) -> int:
        return len(self._items)

    def push(self, msg: RawMessage) -> None:
        self._items.append(msg)
        self.nbytes += msg.size
        self.newest_ns = max(self.newest_ns, msg.t_ns)
        horizon = self.newest_ns - self.keep_ns
        while self._items and self._items[0].t_ns < horizon:
            self.nbytes -= self._items.popleft().size
        while self.nbytes > self.max_bytes and len(self._items) > 1:
            old = self._items.popleft()
            self.nbytes -= old.size
            self.evicted_for_bytes += 1
            self.last_byte_eviction_ns = old.t_ns

    def since(self, t_ns: int) -> List[RawMessage]:
        """Buffered messages received at or after ``t_ns``, oldest first."""
        return [m for m in self._items if m.t_ns >= t_ns]

    @property
    def oldest_ns(self) -> Optional[int]:
        return self._items[0].t_ns if self._items else None


@dataclass(frozen=True)
class SplitPolicy:
    """When a continuous recording starts its next bag.

    Attributes:
        duration_s: a bag spans at most this long (record time of its first message + S).
        size_mb: a bag holds at most this many MB (1e6 bytes; messages and record headers).
    """

    duration_s: Optional[float] = None
    size_mb: Optional[float] = None

    def __post_init__(self) -> None:
        for name, value in (("--split-duration", self.duration_s),
                            ("--split-size", self.size_mb)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise RecordError(f"{name} must be a positive number, got {value}")

    def reason(self, stats: "BagStats", msg: RawMessage) -> Optional[str]:
        """Why ``msg`` goes to a new bag ("duration", "size"), or None: it fits this one."""
        if not stats.messages:
            return None
        if self.duration_s is not None and \
                msg.t_ns - stats.first_t_ns >= int(round(self.duration_s * _NS)):
            return "duration"
        if self.size_mb is not None and \
                stats.bytes + msg.size + RECORD_OVERHEAD_BYTES > self.size_mb * 1e6:
            return "size"
        return None


# ---------------------------------------------------------------------------------------------
# Bags and sidecars

@dataclass
class TopicCount:
    datatype: str = ""
    messages: int = 0
    bytes: int = 0


@dataclass
class BagStats:
    """What went into one bag: per topic type, counts and bytes; record and header times."""

    topics: Dict[str, TopicCount] = field(default_factory=dict)
    messages: int = 0
    bytes: int = 0
    first_t_ns: int = 0
    last_t_ns: int = 0
    first_stamp_ns: Optional[int] = None
    last_stamp_ns: Optional[int] = None
    first_wall_ns: Optional[int] = None
    last_wall_ns: Optional[int] = None

    def add(self, msg: RawMessage, t_ns: int) -> None:
        count = self.topics.setdefault(msg.topic, TopicCount())
        count.datatype = count.datatype or msg.datatype
        count.messages += 1
        count.bytes += msg.size
        if not self.messages:
            self.first_t_ns = t_ns
        self.first_t_ns, self.last_t_ns = min(self.first_t_ns, t_ns), max(self.last_t_ns, t_ns)
        self.messages += 1
        self.bytes += msg.size + RECORD_OVERHEAD_BYTES
        if t_ns == msg.t_ns:  # not a latched message retimed to the bag's start
            wall = msg.wall_ns or time.time_ns()
            self.first_wall_ns = wall if self.first_wall_ns is None else \
                min(self.first_wall_ns, wall)
            self.last_wall_ns = wall if self.last_wall_ns is None else max(self.last_wall_ns, wall)
        stamp = msg.stamp_ns
        if stamp:
            self.first_stamp_ns = stamp if self.first_stamp_ns is None else \
                min(self.first_stamp_ns, stamp)
            self.last_stamp_ns = stamp if self.last_stamp_ns is None else \
                max(self.last_stamp_ns, stamp)


def sidecar_path(bag: os.PathLike) -> Path:
    """The metadata file of a bag: ``NAME.yaml`` beside ``NAME.bag``."""
    return Path(bag).with_suffix(".yaml")


def _time_entry(ros_ns: int, wall_ns: Optional[int]) -> Dict[str, Any]:
    wall_s = (wall_ns if wall_ns is not None else time.time_ns()) / _NS
    wall = datetime.datetime.fromtimestamp(wall_s, datetime.timezone.utc)
    return {"ros_ns": int(ros_ns), "ros_s": round(ros_ns / _NS, 9), "wall_s": round(wall_s, 6),
            "wall": wall.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


def write_sidecar(path: os.PathLike, data: Mapping[str, Any]) -> Path:
    """Write a sidecar (YAML) atomically: a reader never sees half of one."""
    import yaml
    path = Path(path)
    text = yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, width=100)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_sidecar(path: os.PathLike) -> Dict[str, Any]:
    """A sidecar written by :func:`write_sidecar` (give the bag or the .yaml).

    Raises:
        RecordError: missing, not YAML, or not a sidecar of this format.
    """
    import yaml
    path = Path(path)
    if path.suffix == ".bag":
        path = sidecar_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecordError(f"sidecar {path} cannot be read: {' '.join(str(exc).split())}") \
            from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise RecordError(f"{path} is not an admlops record sidecar (format {SIDECAR_FORMAT})")
    return data


class _RawType:
    """What rosbag's raw write asks of a message class: its md5sum and full definition."""

    def __init__(self, msg: RawMessage) -> None:
        self._md5sum = msg.md5sum
        self._full_text = msg.definition
        self._type = msg.datatype


class BagFile:
    """One bag being written: ``NAME.bag.active`` until :meth:`close` renames it ``NAME.bag``
    and writes its sidecar.

    Args:
        path: the final bag path.
        topics: the requested topics (the sidecar lists them all, with zero counts for those
            that sent nothing).
        compression: rosbag chunk compression: none, bz2 or lz4.
    """

    def __init__(self, path: Path, topics: Sequence[TopicSpec],
                 compression: str = "none") -> None:
        import rosbag
        self.path = Path(path)
        self.active = self.path.with_name(self.path.name + ".active")
        self.topics = tuple(topics)
        try:
            self._bag = rosbag.Bag(str(self.active), "w", compression=compression)
        except (OSError, ValueError, rosbag.ROSBagException) as exc:
            raise RecordError(f"cannot write bag {self.active}: {exc}") from exc
        self.stats = BagStats()
        self.problems: List[str] = []
        self.closed: Optional[Dict[str, Any]] = None

    def write(self, msg: RawMessage, t_ns: Optional[int] = None) -> None:
        """Append ``msg`` at record time ``t_ns`` (default: when it was received)."""
        import genpy
        t_ns = msg.t_ns if t_ns is None else int(t_ns)
        stamp = genpy.Time(t_ns // _NS, t_ns % _NS)
        self._bag.write(msg.topic, (msg.datatype, msg.data, msg.md5sum, _RawType(msg)), stamp,
                        raw=True, connection_header=msg.connection_header())
        self.stats.add(msg, t_ns)

    def close(self, meta: Mapping[str, Any]) -> Dict[str, Any]:
        """Close the bag, rename it, write its sidecar (``meta`` plus what it holds).

        Returns the sidecar. Closing twice returns the first sidecar.
        """
        if self.closed is not None:
            return self.closed
        self._bag.close()
        os.replace(self.active, self.path)
        st = self.stats
        topics, missing = [], []
        for spec in self.topics:
            count = st.topics.get(spec.topic, TopicCount())
            topics.append({"topic": spec.topic, "type": count.datatype or None,
                           "sensor": spec.sensor, "messages": count.messages,
                           "bytes": count.bytes})
            if not count.messages:
                missing.append(spec.topic)
        problems = list(self.problems) + [f"no message on {t} in this bag" for t in missing]
        side: Dict[str, Any] = {"format": SIDECAR_FORMAT, "bag": self.path.name}
        side.update(meta)
        side.update({
            "sensors": sorted({s.sensor for s in self.topics
                               if st.topics.get(s.topic, TopicCount()).messages}),
            "topics": topics,
            "missing_topics": missing,
            "messages": st.messages,
            "bytes": self.path.stat().st_size,
            "start": _time_entry(st.first_t_ns, st.first_wall_ns),
            "end": _time_entry(st.last_t_ns, st.last_wall_ns),
            "header_stamps": (None if st.first_stamp_ns is None else
                              {"first_ns": st.first_stamp_ns, "last_ns": st.last_stamp_ns,
                               "first_s": round(st.first_stamp_ns / _NS, 9),
                               "last_s": round(st.last_stamp_ns / _NS, 9)}),
            "problems": problems,
        })
        write_sidecar(sidecar_path(self.path), side)
        self.closed = side
        LOG.info("wrote %s: %d messages, %.1f MB, %.1f s", self.path, st.messages,
                 side["bytes"] / 1e6, (st.last_t_ns - st.first_t_ns) / _NS)
        return side


class BagNamer:
    """``DIR/PREFIX_0000.bag``, ``_0001``, ...; never reuses a number already in ``DIR``."""

    def __init__(self, out_dir: os.PathLike, prefix: str) -> None:
        if not prefix or "/" in prefix:
            raise RecordError(f"--prefix {prefix!r}: must be a non-empty file name prefix")
        self.out_dir = Path(out_dir)
        self.prefix = prefix
        pattern = re.compile(re.escape(prefix) + r"_(\d{4,})\.(bag|bag\.active|yaml)$")
        used = [int(m.group(1)) for m in map(pattern.match, os.listdir(self.out_dir)) if m]
        self.index = max(used) + 1 if used else 0

    def next(self) -> Tuple[int, Path]:
        index, self.index = self.index, self.index + 1
        return index, self.out_dir / f"{self.prefix}_{index:04d}.bag"


def check_output_dir(out_dir: os.PathLike) -> Path:
    """Create ``out_dir`` if needed and prove it writable (a probe file, valid as root too).

    Raises:
        RecordError: it cannot be created or written, with the reason.
    """
    path = Path(out_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".admlops_record_probe", dir=str(path))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RecordError(f"output directory {path} is not writable ({exc.strerror or exc}); "
                          f"pass -o a directory you can write") from None
    return path


def project_info() -> Dict[str, str]:
    """Name and version of the package that recorded (admlops_ros.__version__)."""
    import admlops_ros
    return {"name": "admlops_ros", "version": str(admlops_ros.__version__)}


def engine_info(bundle_dir: os.PathLike) -> Dict[str, Any]:
    """The engine bundle a recording ran with: name, modality, the sha256 of its spec.yaml
    (which lists the sha256 of every engine file) and those files' sha256, all verified.

    Raises:
        RecordError: not a bundle, or a file does not match its sha256 (the SpecError text).
    """
    import yaml

    from admlops_ros.bundle import camera_spec
    from admlops_ros.bundle.files import load_bundle, sha256_file, spec_path
    from admlops_ros.bundle.spec import SpecError
    path = spec_path(bundle_dir)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        if camera_spec.is_camera_spec_data(data):
            bundle: Any = camera_spec.load_camera_bundle(path)
            modality = camera_spec.MODALITY
        else:
            bundle = load_bundle(path)
            modality = "lidar"
    except (SpecError, OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecordError(f"--engine {bundle_dir}: {' '.join(str(exc).split())}") from None
    return {"name": bundle.spec.name, "modality": modality, "path": str(bundle.root),
            "spec_sha256": sha256_file(path), "files": dict(bundle.spec.files)}


# ---------------------------------------------------------------------------------------------
# Continuous recording

class _Latched:
    """The last message of each latched topic, written again at the start of every bag (a
    split bag or a capture would otherwise lack /tf_static)."""

    def __init__(self) -> None:
        self._last: Dict[Tuple[str, str], RawMessage] = {}

    def keep(self, msg: RawMessage) -> None:
        if msg.latching:
            self._last[(msg.topic, msg.callerid)] = msg

    def write(self, bag: BagFile, t_ns: int, skip: Iterable[RawMessage] = ()) -> None:
        skipped = {id(m) for m in skip}
        for msg in self._last.values():
            if id(msg) not in skipped:
                bag.write(msg, t_ns)  # retimed to the bag's start; the header is unchanged


class ContinuousRecorder:
    """Every message into numbered bags, a new bag whenever the :class:`SplitPolicy` says.

    Args:
        namer: where the bags go.
        topics: the requested topics.
        policy: when to split.
        meta: sidecar fields common to every bag (profile, project, engine, ...).
    """

    def __init__(self, namer: BagNamer, topics: Sequence[TopicSpec], policy: SplitPolicy,
                 meta: Mapping[str, Any], compression: str = "none") -> None:
        self.namer, self.topics, self.policy = namer, tuple(topics), policy
        self.meta, self.compression = dict(meta), compression
        self.bag: Optional[BagFile] = None
        self.index = -1
        self.written: List[Path] = []
        self._latched = _Latched()
        self._pending_problems: List[str] = []

    def note(self, problem: str) -> None:
        """A problem for the sidecar of the bag being written (or the next one)."""
        (self.bag.problems if self.bag else self._pending_problems).append(problem)

    def _open(self, t_ns: int, msg: RawMessage) -> None:
        self.index, path = self.namer.next()
        self.bag = BagFile(path, self.topics, self.compression)
        self.bag.problems.extend(self._pending_problems)
        self._pending_problems = []
        self._latched.write(self.bag, t_ns, skip=(msg,))

    def _close(self, reason: str) -> None:
        if self.bag is None:
            return
        meta = dict(self.meta, mode="continuous", index=self.index,
                    split={"reason": reason, "duration_s": self.policy.duration_s,
                           "size_mb": self.policy.size_mb})
        self.bag.close(meta)
        self.written.append(self.bag.path)
        self.bag = None

    def handle(self, msg: RawMessage) -> None:
        self._latched.keep(msg)
        if self.bag is not None:
            reason = self.policy.reason(self.bag.stats, msg)
            if reason:
                self._close(reason)
        if self.bag is None:
            self._open(msg.t_ns, msg)
        self.bag.write(msg)

    def tick(self, now_ns: int) -> None:
        """Nothing is time-driven in a continuous recording (splits come with messages)."""

    def close(self, reason: str = "stopped") -> List[Path]:
        """Close the open bag; returns every bag written."""
        self._close(reason)
        return list(self.written)


# ---------------------------------------------------------------------------------------------
# Triggers

@dataclass(frozen=True)
class TriggerEvent:
    """Why a capture is written: ``kind`` (:data:`TRIGGER_KINDS`), a human reason, the ROS
    time (ns) the window is centred on."""

    kind: str
    reason: str
    stamp_ns: int

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": self.kind, "reason": self.reason, "stamp_ns": int(self.stamp_ns),
                "stamp_s": round(self.stamp_ns / _NS, 9)}


@dataclass
class DetectionFrame:
    """The objects of one DetectedObjectArray as arrays.

    Attributes:
        stamp_ns: header stamp (the cloud's).
        centres: [N, 3] float64 box centres (m, sensor frame).
        scores: [N] float64.
        names: class name per object.
    """

    stamp_ns: int
    centres: np.ndarray
    scores: np.ndarray
    names: Tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.scores)


def detection_frame(msg: Any) -> DetectionFrame:
    """A DetectionFrame from an admlops_ros/DetectedObjectArray (any class with its fields)."""
    objs = list(msg.objects)
    centres = np.array([[o.pose.position.x, o.pose.position.y, o.pose.position.z]
                        for o in objs], np.float64).reshape(-1, 3)
    scores = np.array([o.score for o in objs], np.float64)
    stamp = msg.header.stamp
    return DetectionFrame(int(stamp.secs) * _NS + int(stamp.nsecs), centres, scores,
                          tuple(str(o.label_name) for o in objs))


def diagnostic_statuses(msg: Any) -> List[Tuple[str, int, str]]:
    """(name, level, message) of each status of a diagnostic_msgs/DiagnosticArray."""
    return [(str(s.name), _level(s.level), str(s.message)) for s in msg.status]


def _level(level: Any) -> int:
    if isinstance(level, (bytes, bytearray)):  # 'byte' fields read as int; bytes if built so
        return int(level[0]) if level else 0
    return int(level)


def _unmatched(a: np.ndarray, b: np.ndarray, gate_m: float) -> np.ndarray:
    """[len(a)] bool: no centre of ``b`` within ``gate_m`` (m, in the x-y plane) of a's."""
    if not len(a):
        return np.zeros(0, bool)
    if not len(b):
        return np.ones(len(a), bool)
    d2 = ((a[:, None, :2] - b[None, :, :2]) ** 2).sum(-1)
    return d2.min(axis=1) > gate_m * gate_m


class LowConfidenceTrigger:
    """Objects the node published with a score just above its threshold: in
    ``[threshold, threshold + band)``; fires when at least ``min_objects`` are."""

    kind = "low_confidence"

    def __init__(self, threshold: float, band: float = 0.1, min_objects: int = 1) -> None:
        if not (0.0 <= threshold <= 1.0) or not (0.0 < band <= 1.0) or min_objects < 1:
            raise RecordError(f"low-confidence trigger: threshold {threshold} in [0, 1], band "
                              f"{band} in (0, 1], min objects {min_objects} >= 1 expected")
        self.threshold, self.band, self.min_objects = threshold, band, int(min_objects)

    def __call__(self, frame: DetectionFrame) -> Optional[TriggerEvent]:
        low = (frame.scores >= self.threshold) & (frame.scores < self.threshold + self.band)
        n = int(low.sum())
        if n < self.min_objects:
            return None
        which = ", ".join(f"{frame.names[i] if i < len(frame.names) else '?'} "
                          f"{frame.scores[i]:.2f}" for i in np.flatnonzero(low)[:5])
        return TriggerEvent(self.kind, f"{n} object(s) scored in [{self.threshold:.2f}, "
                            f"{self.threshold + self.band:.2f}): {which}", frame.stamp_ns)


class FlickerTrigger:
    """Objects that flicker between consecutive frames, by nearest-centre matching within
    ``gate_m``: one that appears in frame k-1 (nothing near it in k-2) and is gone in k
    ("blip"), or one present in k-2 and k but missing in k-1 ("dropout"). The event carries the
    stamp of frame k-1. Frames more than ``max_gap_s`` apart restart the history (a dropped
    cloud is not a flicker).
    """

    kind = "flicker"

    def __init__(self, gate_m: float = 2.0, max_gap_s: float = 1.0) -> None:
        if not (gate_m > 0 and max_gap_s > 0):
            raise RecordError(f"flicker trigger: gate {gate_m} m and max gap {max_gap_s} s "
                              f"must be positive")
        self.gate_m, self.max_gap_ns = gate_m, int(max_gap_s * _NS)
        self._history: Deque[DetectionFrame] = deque(maxlen=3)

    def __call__(self, frame: DetectionFrame) -> Optional[TriggerEvent]:
        hist = self._history
        if hist and not (0 < frame.stamp_ns - hist[-1].stamp_ns <= self.max_gap_ns):
            hist.clear()
        hist.append(frame)
        if len(hist) < 3:
            return None
        a, b, c = hist
        blip = _unmatched(b.centres, a.centres, self.gate_m) & \
            _unmatched(b.centres, c.centres, self.gate_m)
        dropout = ~_unmatched(a.centres, c.centres, self.gate_m) & \
            _unmatched(a.centres, b.centres, self.gate_m)
        parts = []
        if blip.any():
            parts.append(f"{int(blip.sum())} object(s) seen in one frame only: " + ", ".join(
                f"{b.names[i] if i < len(b.names) else '?'} at ({b.centres[i, 0]:.1f}, "
                f"{b.centres[i, 1]:.1f})" for i in np.flatnonzero(blip)[:5]))
        if dropout.any():
            parts.append(f"{int(dropout.sum())} object(s) missing for one frame: " + ", ".join(
                f"{a.names[i] if i < len(a.names) else '?'} at ({a.centres[i, 0]:.1f}, "
                f"{a.centres[i, 1]:.1f})" for i in np.flatnonzero(dropout)[:5]))
        if not parts:
            return None
        return TriggerEvent(self.kind, "; ".join(parts) + f" (gate {self.gate_m:g} m)",
                            b.stamp_ns)


class DiagnosticsTrigger:
    """A /diagnostics status at ``min_level`` or worse (WARN 1, ERROR 2, STALE 3) whose name
    starts with one of ``names`` (the detection nodes: "lidar_detection", ...)."""

    kind = "diagnostics"

    def __init__(self, names: Sequence[str], min_level: int = DIAG_WARN) -> None:
        if min_level not in DIAG_LEVELS.values():
            raise RecordError(f"diagnostics trigger: level {min_level} is not one of "
                              f"{sorted(DIAG_LEVELS.values())} (WARN, ERROR, STALE)")
        self.names, self.min_level = tuple(names), int(min_level)

    def __call__(self, stamp_ns: int,
                 statuses: Sequence[Tuple[str, int, str]]) -> Optional[TriggerEvent]:
        bad = [(n, lvl, m) for n, lvl, m in statuses if lvl >= self.min_level
               and (not self.names or any(n.startswith(p) for p in self.names))]
        if not bad:
            return None
        level_names = {v: k.upper() for k, v in DIAG_LEVELS.items()}
        return TriggerEvent(self.kind, "; ".join(f"{n} {level_names.get(lvl, lvl)}: {m}"
                                                 for n, lvl, m in bad[:5]), stamp_ns)


class TriggerSet:
    """The enabled triggers, each kind with a cooldown: after an event, events of that kind
    within ``cooldown_s`` (ROS time of their stamps) are suppressed, so one event writes one
    bag. A service call has no cooldown (a person asked for it)."""

    def __init__(self, cooldown_s: float, low_confidence: Optional[LowConfidenceTrigger] = None,
                 flicker: Optional[FlickerTrigger] = None,
                 diagnostics: Optional[DiagnosticsTrigger] = None,
                 service: bool = True) -> None:
        if not cooldown_s >= 0:
            raise RecordError(f"--cooldown must be >= 0 s, got {cooldown_s}")
        self.cooldown_ns = int(round(cooldown_s * _NS))
        self.low_confidence, self.flicker, self.diagnostics = low_confidence, flicker, diagnostics
        self.service = service
        self._last: Dict[str, int] = {}
        self.suppressed: Dict[str, int] = {}

    @property
    def kinds(self) -> List[str]:
        return [k for k, on in (("service", self.service),
                                ("low_confidence", self.low_confidence),
                                ("flicker", self.flicker),
                                ("diagnostics", self.diagnostics)) if on]

    def _gate(self, event: Optional[TriggerEvent]) -> List[TriggerEvent]:
        if event is None:
            return []
        last = self._last.get(event.kind)
        if last is not None and event.stamp_ns - last < self.cooldown_ns:
            self.suppressed[event.kind] = self.suppressed.get(event.kind, 0) + 1
            return []
        self._last[event.kind] = event.stamp_ns
        return [event]

    def on_detections(self, frame: DetectionFrame) -> List[TriggerEvent]:
        out: List[TriggerEvent] = []
        if self.low_confidence is not None:
            out += self._gate(self.low_confidence(frame))
        if self.flicker is not None:
            out += self._gate(self.flicker(frame))
        return out

    def on_diagnostics(self, stamp_ns: int,
                       statuses: Sequence[Tuple[str, int, str]]) -> List[TriggerEvent]:
        if self.diagnostics is None:
            return []
        return self._gate(self.diagnostics(stamp_ns, statuses))

    def manual(self, now_ns: int, reason: str = "~capture service call") -> TriggerEvent:
        return TriggerEvent("service", reason, now_ns)

    def describe(self) -> Dict[str, Any]:
        """The trigger settings for the sidecar."""
        out: Dict[str, Any] = {"kinds": self.kinds, "cooldown_s": self.cooldown_ns / _NS}
        if self.low_confidence is not None:
            lc = self.low_confidence
            out["low_confidence"] = {"score_threshold": lc.threshold, "band": lc.band,
                                     "min_objects": lc.min_objects}
        if self.flicker is not None:
            out["flicker"] = {"gate_m": self.flicker.gate_m,
                              "max_gap_s": self.flicker.max_gap_ns / _NS}
        if self.diagnostics is not None:
            out["diagnostics"] = {"names": list(self.diagnostics.names),
                                  "min_level": self.diagnostics.min_level}
        return out


# ---------------------------------------------------------------------------------------------
# Triggered capture

@dataclass
class _Capture:
    bag: BagFile
    index: int
    event: TriggerEvent
    start_ns: int
    end_ns: int
    merged: List[TriggerEvent] = field(default_factory=list)


class TriggeredRecorder:
    """Keeps the last ``pre_s`` seconds in a :class:`RingBuffer`; :meth:`fire` writes them and
    the next ``post_s`` seconds to one bag whose sidecar names the trigger.

    A trigger while a capture is being written joins it (listed in the sidecar as ``merged``)
    rather than starting a second bag.
    """

    def __init__(self, namer: BagNamer, topics: Sequence[TopicSpec], pre_s: float,
                 post_s: float, max_bytes: int, meta: Mapping[str, Any],
                 compression: str = "none") -> None:
        for name, value in (("--pre", pre_s), ("--post", post_s)):
            if not (math.isfinite(value) and value >= 0):
                raise RecordError(f"{name} must be a number of seconds >= 0, got {value}")
        self.namer, self.topics = namer, tuple(topics)
        self.pre_ns, self.post_ns = int(round(pre_s * _NS)), int(round(post_s * _NS))
        self.buffer = RingBuffer(pre_s + TRIGGER_LATENCY_S, max_bytes)
        self.meta, self.compression = dict(meta), compression
        self.capture: Optional[_Capture] = None
        self.written: List[Path] = []
        self._latched = _Latched()
        self._problems: List[str] = []

    def note(self, problem: str) -> None:
        (self.capture.bag.problems if self.capture else self._problems).append(problem)

    def handle(self, msg: RawMessage) -> None:
        self._latched.keep(msg)
        if self.capture is not None and msg.t_ns > self.capture.end_ns:
            self._close(complete=True)
        self.buffer.push(msg)
        if self.capture is not None:
            self.capture.bag.write(msg)

    def fire(self, event: TriggerEvent) -> Path:
        """Start a capture around ``event.stamp_ns`` (or join the one in progress); returns the
        bag it goes to (complete once the post window has passed)."""
        if self.capture is not None:
            if len(self.capture.merged) < MAX_MERGED_EVENTS:
                self.capture.merged.append(event)
            LOG.info("trigger %s (%s) joins the capture %s", event.kind, event.reason,
                     self.capture.bag.path.name)
            return self.capture.bag.path
        start, end = event.stamp_ns - self.pre_ns, event.stamp_ns + self.post_ns
        index, path = self.namer.next()
        bag = BagFile(path, self.topics, self.compression)
        bag.problems.extend(self._problems)
        self._problems = []
        buffered = self.buffer.since(start)
        first_t = buffered[0].t_ns if buffered else event.stamp_ns
        self._latched.write(bag, first_t, skip=buffered)
        for msg in buffered:
            bag.write(msg)
        evicted = self.buffer.last_byte_eviction_ns
        if evicted is not None and evicted >= start:
            bag.problems.append(f"the pre window holds {(event.stamp_ns - first_t) / _NS:.2f} s, "
                                f"not {self.pre_ns / _NS:g} s: the ring buffer reached "
                                f"--buffer-mb {self.buffer.max_bytes / 1e6:g}")
        self.capture = _Capture(bag, index, event, start, end)
        LOG.info("trigger %s: %s -> %s", event.kind, event.reason, path)
        return path

    def tick(self, now_ns: int) -> None:
        """Close the capture once its post window has passed (no message needs to arrive)."""
        if self.capture is not None and now_ns > self.capture.end_ns:
            self._close(complete=True)

    def _close(self, complete: bool) -> None:
        cap = self.capture
        if cap is None:
            return
        self.capture = None
        trigger = cap.event.to_dict()
        trigger.update(pre_s=self.pre_ns / _NS, post_s=self.post_ns / _NS,
                       window_ns=[cap.start_ns, cap.end_ns], complete=complete,
                       merged=[e.to_dict() for e in cap.merged])
        if not complete:
            cap.bag.problems.append("recording stopped before the post window ended")
        cap.bag.close(dict(self.meta, mode="trigger", index=cap.index, trigger=trigger))
        self.written.append(cap.bag.path)

    def close(self, reason: str = "stopped") -> List[Path]:
        """Close a capture in progress (its sidecar says it is incomplete); returns every bag."""
        self._close(complete=False)
        return list(self.written)


# ---------------------------------------------------------------------------------------------
# Topics that never send

class TopicWatch:
    """Says once per topic when a requested topic has sent nothing ``warn_after_s`` after the
    start (the recording goes on with the others)."""

    def __init__(self, topics: Iterable[str], start_ns: int, warn_after_s: float = 5.0) -> None:
        self._silent = set(topics)
        self._deadline = start_ns + int(warn_after_s * _NS)

    def seen(self, topic: str) -> None:
        self._silent.discard(topic)

    def due(self, now_ns: int) -> List[str]:
        """The topics to warn about now (each returned once)."""
        if now_ns < self._deadline or not self._silent:
            return []
        out, self._silent = sorted(self._silent), set()
        return out


__all__ = ["BagFile", "BagNamer", "BagStats", "ContinuousRecorder", "DetectionFrame",
           "DiagnosticsTrigger", "FlickerTrigger", "LowConfidenceTrigger", "Profile",
           "RawMessage", "RecordError", "RingBuffer", "SplitPolicy", "TopicSpec", "TopicWatch",
           "TriggerEvent", "TriggerSet", "TriggeredRecorder", "check_output_dir", "decode",
           "default_profiles_path", "detection_frame", "diagnostic_statuses", "engine_info",
           "first_field_is_header", "header_stamp_ns", "load_profiles", "parse_profiles",
           "project_info", "read_sidecar", "select_topics", "sidecar_path", "write_sidecar"]
