"""Where the package's files live: the source tree, or the catkin share space when installed."""
from __future__ import annotations

from pathlib import Path

from admlops_ros.errors import AdmlopsError

PACKAGE = "admlops_ros"
DEFAULT_ENGINE = "pointpillars_sim_3class"  # engines/<name>: the shipped default bundle


class PackagePathError(AdmlopsError):
    """The package directory (config/, engines/, launch/) cannot be found."""


def package_root() -> Path:
    """The directory holding package.xml, config/, engines/ and launch/.

    In a source checkout (or a catkin devel space, which runs the sources) it is the directory
    above this package; in a catkin install space the Python package lives in dist-packages, so
    the share directory is found with rospkg (ROS_PACKAGE_PATH from the workspace's setup.bash).

    Raises:
        PackagePathError: neither exists.
    """
    source = Path(__file__).resolve().parents[1]
    if (source / "package.xml").is_file() and (source / "config").is_dir():
        return source
    try:
        import rospkg  # only needed in an install space

        return Path(rospkg.RosPack().get_path(PACKAGE))
    except Exception as exc:  # rospkg missing, or the package not on ROS_PACKAGE_PATH
        raise PackagePathError(
            f"cannot find the {PACKAGE} package directory: {source} has no package.xml and "
            f"rospkg failed ({exc}); source the catkin workspace's setup.bash") from exc


def default_bundle_path() -> Path:
    """The engine bundle shipped with the package (``engines/pointpillars_sim_3class``)."""
    return package_root() / "engines" / DEFAULT_ENGINE
