"""Sensor poses of clouds in a fixed frame from tf2, once per cloud (multi-sweep ego motion)."""
from __future__ import annotations

from typing import Any, Optional

from admlops_ros.errors import AdmlopsError
from admlops_ros.lidar.sweeps import SensorPose, SweepError

#: How long (s) a lookup waits for a transform that has not arrived yet (tf usually trails
#: the cloud by a few ms). A frame tf never publishes costs this much per cloud.
TF_TIMEOUT_S = 0.05
TF_CACHE_S = 30.0


class PoseError(AdmlopsError):
    """A cloud's pose in the fixed frame is not available (no tf, or a non-finite transform)."""


def transform_to_pose(transform: Any) -> SensorPose:
    """SensorPose of a geometry_msgs/Transform (``T_fixed<-sensor``), checked to be finite.

    Raises:
        PoseError: a non-finite value (the message names the field) or a zero quaternion.
    """
    t, q = transform.translation, transform.rotation
    pose = SensorPose((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
    try:
        pose.matrix()
    except SweepError as exc:
        raise PoseError(str(exc)) from None
    return pose


class TfPoses:
    """``poses(frame_id, stamp) -> SensorPose`` of a cloud's frame in ``fixed_frame`` via tf2.

    Args:
        fixed_frame: the frame poses are expressed in (odom, map).
        timeout_s: wait for a transform that is not in the buffer yet.
        buffer: a tf2_ros.Buffer (tests); None creates one fed by a TransformListener on
            /tf and /tf_static (needs rospy.init_node first).
    """

    def __init__(self, fixed_frame: str, timeout_s: float = TF_TIMEOUT_S,
                 buffer: Optional[Any] = None) -> None:
        import rospy  # noqa: WPS433
        import tf2_ros  # noqa: WPS433 (Debian python3-tf2-ros)

        self.fixed_frame = str(fixed_frame)
        self.timeout = rospy.Duration(float(timeout_s))
        self._errors = (tf2_ros.LookupException, tf2_ros.ConnectivityException,
                        tf2_ros.ExtrapolationException, tf2_ros.TransformException)
        if buffer is None:
            buffer = tf2_ros.Buffer(cache_time=rospy.Duration(TF_CACHE_S), debug=False)
            self.listener = tf2_ros.TransformListener(buffer)
        self.buffer = buffer

    def __call__(self, frame_id: str, stamp: Any) -> SensorPose:
        """The pose of ``frame_id`` at ``stamp`` (rospy.Time) in the fixed frame.

        Raises:
            PoseError: no transform (the message names both frames and the stamp).
        """
        try:
            tf = self.buffer.lookup_transform(self.fixed_frame, frame_id, stamp, self.timeout)
        except self._errors as exc:
            raise PoseError(f"no tf {self.fixed_frame!r} <- {frame_id!r} at "
                            f"{stamp.to_sec():.3f}: {str(exc).strip()}") from None
        try:
            return transform_to_pose(tf.transform)
        except PoseError as exc:
            raise PoseError(f"tf {self.fixed_frame!r} <- {frame_id!r} at {stamp.to_sec():.3f}: "
                            f"{exc}") from None


__all__ = ["TF_TIMEOUT_S", "PoseError", "TfPoses", "transform_to_pose"]
