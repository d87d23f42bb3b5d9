"""`python -m admlops_ros` runs the admlops CLI."""
import sys

from admlops_ros.cli import main

sys.exit(main())
