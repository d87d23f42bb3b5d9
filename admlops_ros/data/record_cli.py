"""`admlops record`: profile topics into split bags with sidecars, or triggered captures."""
from __future__ import annotations

import argparse
import datetime
import logging
from typing import Any, Dict, List, Optional

from admlops_ros.argtypes import FRACTION, POSITIVE, POSITIVE_INT, float_in

LOG = logging.getLogger(__name__)

NON_NEGATIVE = float_in(0.0)
DEFAULT_PROFILE = "perception"
DEFAULTS = {"pre": 10.0, "post": 5.0, "cooldown": 15.0, "buffer_mb": 1024.0, "low_band": 0.1,
            "flicker_gate": 2.0}

EPILOG = """\
Continuous: every message of the profile's topics into OUT/PREFIX_0000.bag, _0001, ... (split by
--split-duration / --split-size), each with a sidecar OUT/PREFIX_0000.yaml: sensors, topics with
types and counts, engine bundle name and sha256, project version, start/end (ROS and wall clock).

--trigger: keep the last --pre seconds in memory; a trigger writes them plus the next --post
seconds to one bag whose sidecar names the trigger (kind, reason, stamp). Triggers (--triggers):
  service         rosservice call /<node>/capture (std_srvs/Trigger); the answer is the bag path
  low_confidence  objects on --detections-topic scored in [threshold, threshold + --low-band)
  flicker         an object seen in one frame only, or missing for one frame (centres matched
                  within --flicker-gate m between consecutive frames)
  diagnostics     a /diagnostics status of a detection node at --diagnostics-level or worse
Each automatic kind waits --cooldown seconds before it fires again. SIGINT / SIGTERM close the
open bag properly.
"""


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `record`."""
    p = subparsers.add_parser(
        "record", help="record a topic profile to split bags with metadata sidecars, or "
                       "triggered captures (ring buffer around an event)",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", help="output directory (created)")
    p.add_argument("--profile", default=DEFAULT_PROFILE,
                   help=f"topic profile of config/record_profiles.yaml (default "
                        f"{DEFAULT_PROFILE}; --list-profiles shows them)")
    p.add_argument("--profiles", metavar="FILE", help="another profiles file")
    p.add_argument("--list-profiles", action="store_true", help="print the profiles and exit")
    p.add_argument("--topics", nargs="+", metavar="TOPIC",
                   help="record these topics instead of the profile's (TOPIC or TOPIC:SENSOR)")
    p.add_argument("--add-topic", action="append", default=[], metavar="TOPIC",
                   help="record this topic too (repeatable; TOPIC or TOPIC:SENSOR)")
    p.add_argument("--prefix", help="bag name prefix (default rec_YYYYmmdd_HHMMSS, UTC)")
    p.add_argument("--engine", metavar="BUNDLE_DIR",
                   help="the engine bundle the vehicle runs: its name and sha256 go into every "
                        "sidecar (verified now); also the score threshold's source when "
                        "config/lidar_detection.yaml leaves it to the spec")
    p.add_argument("--compression", choices=("none", "bz2", "lz4"), default="none")
    p.add_argument("--split-duration", type=POSITIVE, metavar="S",
                   help="start a new bag every S seconds")
    p.add_argument("--split-size", type=POSITIVE, metavar="MB",
                   help="start a new bag before one exceeds MB megabytes")
    p.add_argument("--duration", type=POSITIVE, metavar="S",
                   help="stop after S seconds (default: until SIGINT / SIGTERM)")
    t = p.add_argument_group("triggered capture")
    t.add_argument("--trigger", action="store_true",
                   help="write only the seconds around triggers (see below)")
    t.add_argument("--pre", type=NON_NEGATIVE, default=DEFAULTS["pre"], metavar="S",
                   help=f"seconds before the trigger (default {DEFAULTS['pre']:g})")
    t.add_argument("--post", type=NON_NEGATIVE, default=DEFAULTS["post"], metavar="S",
                   help=f"seconds after the trigger (default {DEFAULTS['post']:g})")
    t.add_argument("--buffer-mb", type=POSITIVE, default=DEFAULTS["buffer_mb"], metavar="MB",
                   help=f"memory bound of the ring buffer (default {DEFAULTS['buffer_mb']:g}); "
                        f"when reached it holds fewer than --pre seconds (the sidecar says so)")
    t.add_argument("--triggers", default=None, metavar="KINDS",
                   help="comma-separated kinds to enable (default: all: service,"
                        "low_confidence,flicker,diagnostics)")
    t.add_argument("--cooldown", type=NON_NEGATIVE, default=DEFAULTS["cooldown"], metavar="S",
                   help=f"seconds before an automatic trigger kind fires again (default "
                        f"{DEFAULTS['cooldown']:g})")
    t.add_argument("--detections-topic", metavar="TOPIC",
                   help="DetectedObjectArray input of the detection triggers (default: the "
                        "lidar node's objects_topic, config/lidar_detection.yaml)")
    t.add_argument("--score-threshold", type=FRACTION,
                   help="the node's score threshold (default: config/lidar_detection.yaml "
                        "score_threshold, or the engine spec's when that is negative)")
    t.add_argument("--low-band", type=float_in(0.0, 1.0, lo_open=True),
                   default=DEFAULTS["low_band"],
                   help=f"low confidence = score in [threshold, threshold + band) (default "
                        f"{DEFAULTS['low_band']:g})")
    t.add_argument("--low-min-objects", type=POSITIVE_INT, default=1,
                   help="low-confidence objects in one frame needed to fire (default 1)")
    t.add_argument("--flicker-gate", type=POSITIVE, default=DEFAULTS["flicker_gate"],
                   metavar="M", help=f"centre distance (m) within which objects of consecutive "
                                     f"frames match (default {DEFAULTS['flicker_gate']:g})")
    t.add_argument("--diagnostics-topic", default="/diagnostics", metavar="TOPIC")
    t.add_argument("--diagnostics-level", choices=("warn", "error", "stale"), default="warn")
    t.add_argument("--diagnostics-names", nargs="+", metavar="PREFIX",
                   help="status names that count (default: the detection nodes', "
                        "lidar_detection and camera_detection)")
    p.add_argument("--node-name", default=None,
                   help="ROS node name (default admlops_record; the service is "
                        "/<name>/capture)")
    p.add_argument("--queue-mb", type=POSITIVE, default=512.0,
                   help="messages waiting for the writer beyond this are dropped and counted "
                        "(default 512)")
    p.set_defaults(func=cmd_record)


def _list_profiles(profiles: Dict[str, Any]) -> str:
    lines = []
    for name, prof in profiles.items():
        lines.append(f"{name}: {prof.description}")
        lines += [f"  {s.topic} ({s.sensor})" for s in prof.topics]
    return "\n".join(lines)


def _score_threshold(args: argparse.Namespace) -> float:
    """--score-threshold, else the node's configured one (the spec's when it is negative)."""
    if args.score_threshold is not None:
        return float(args.score_threshold)
    from admlops_ros.bundle.files import read_spec
    from admlops_ros.bundle.spec import SpecError
    from admlops_ros.data.record import RecordError
    from admlops_ros.paths import default_bundle_path
    from admlops_ros.ros.params import load_defaults
    value = float(load_defaults().get("score_threshold", -1.0))
    if value >= 0:
        return value
    bundle = args.engine or default_bundle_path()
    try:
        return float(read_spec(bundle).score_threshold)
    except SpecError as exc:
        raise RecordError(f"--score-threshold not given and the engine spec cannot give it: "
                          f"{exc}") from None


def _triggers(args: argparse.Namespace) -> Any:
    from admlops_ros.data import record
    text = record.TRIGGER_KINDS if args.triggers is None else args.triggers.split(",")
    kinds = [k.strip() for k in text if k.strip()]
    unknown = [k for k in kinds if k not in record.TRIGGER_KINDS]
    if unknown or not kinds:
        raise record.RecordError(f"--triggers {args.triggers!r}: {', '.join(unknown) or 'empty'}"
                                 f"; choose from {', '.join(record.TRIGGER_KINDS)}")
    low = flicker = diag = None
    if "low_confidence" in kinds:
        low = record.LowConfidenceTrigger(_score_threshold(args), args.low_band,
                                          args.low_min_objects)
    if "flicker" in kinds:
        flicker = record.FlickerTrigger(args.flicker_gate)
    if "diagnostics" in kinds:
        names = args.diagnostics_names
        if not names:
            from admlops_ros.ros import camera_node, node
            names = [node.NODE_NAME, camera_node.NODE_NAME]
        diag = record.DiagnosticsTrigger(names, record.DIAG_LEVELS[args.diagnostics_level])
    return record.TriggerSet(args.cooldown, low, flicker, diag, service="service" in kinds)


def build_session(args: argparse.Namespace) -> Any:
    """Check every option and build the RecordSession (no ROS yet): a bad profile, topic,
    output directory or engine fails here, before anything subscribes.

    Raises:
        RecordError / UsageError: with the option and the fix.
    """
    from admlops_ros.data import record
    from admlops_ros.data.recorder_node import NODE_NAME, RecordSession
    from admlops_ros.errors import UsageError
    profiles = record.load_profiles(args.profiles)
    topics = record.select_topics(profiles, args.profile, args.topics, args.add_topic)
    if not args.output:
        raise UsageError("record: -o/--output DIR is required")
    if args.trigger and (args.split_duration or args.split_size):
        raise UsageError("--split-duration / --split-size split a continuous recording; a "
                         "--trigger capture is one bag per trigger")
    out = record.check_output_dir(args.output)
    meta: Dict[str, Any] = {"profile": args.profile if not args.topics else
                            f"{args.profile} (--topics)", "project": record.project_info(),
                            "engine": record.engine_info(args.engine) if args.engine else None}
    prefix = args.prefix or datetime.datetime.now(datetime.timezone.utc).strftime(
        "rec_%Y%m%d_%H%M%S")
    namer = record.BagNamer(out, prefix)
    triggers = None
    detections_topic: Optional[str] = None
    if args.trigger:
        triggers = _triggers(args)
        if triggers.low_confidence or triggers.flicker:
            if args.detections_topic:
                detections_topic = args.detections_topic
            else:
                from admlops_ros.ros.params import load_defaults
                detections_topic = str(load_defaults()["objects_topic"])
        meta["triggers"] = triggers.describe()
        if detections_topic:
            meta["triggers"]["detections_topic"] = detections_topic
        recorder: Any = record.TriggeredRecorder(namer, topics, args.pre, args.post,
                                                 int(args.buffer_mb * 1e6), meta,
                                                 args.compression)
    else:
        policy = record.SplitPolicy(args.split_duration, args.split_size)
        recorder = record.ContinuousRecorder(namer, topics, policy, meta, args.compression)
    return RecordSession(
        topics, recorder, triggers, detections_topic,
        args.diagnostics_topic if triggers is not None and triggers.diagnostics else None,
        args.duration, args.node_name or NODE_NAME, args.queue_mb)


def cmd_record(args: argparse.Namespace) -> int:
    from admlops_ros.data import record
    if args.list_profiles:
        print(_list_profiles(record.load_profiles(args.profiles)))
        return 0
    session = build_session(args)
    from admlops_ros.data.recorder_node import run
    written: List[Any] = run(session)
    for path in written:
        print(path)
    if not written:
        LOG.warning("no bag written (%s)", "no trigger fired" if session.triggers is not None
                    else "no message received on any topic")
    return 0
