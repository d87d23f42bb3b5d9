"""admlops_ros: ROS1 deployment runtime for mmdet3d/mmdeploy lidar detectors."""

__version__ = "0.1.0"

# Let the catkin devel space's generated ``admlops_ros.msg`` be found beside this source tree.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
