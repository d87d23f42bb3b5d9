"""admlops_ros: ROS1 deployment runtime for mmdet3d/mmdeploy lidar detectors."""

__version__ = "0.1.0"
