"""catkin_python_setup() entry: exposes the admlops_ros Python package to the catkin workspace."""
from setuptools import find_packages, setup

from catkin_pkg.python_setup import generate_distutils_setup

setup(**generate_distutils_setup(
    packages=find_packages(include=["admlops_ros", "admlops_ros.*"],
                           exclude=["admlops_ros.training", "admlops_ros.training.*"]),
    package_dir={"": "."},
))
