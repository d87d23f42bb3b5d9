"""spec.yaml files a hostile or careless user could write: each is one SpecError, fast and small."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from admlops_ros.bundle.files import read_spec
from admlops_ros.bundle.spec import ModelSpec, SpecError
from admlops_ros.paths import default_bundle_path
from tests.paths import REPO_ROOT

SHIPPED = yaml.safe_load((default_bundle_path() / "spec.yaml").read_text())


def _spec_file(tmp_path, text):
    path = tmp_path / "spec.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _read_in_subprocess(path, memory_bytes=1 << 30, timeout=120):
    """read_spec in a child with a memory limit: a blow-up is a MemoryError there, not here."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (%d, %d)); "
            "from admlops_ros.bundle.files import read_spec; from admlops_ros.errors import "
            "AdmlopsError\ntry:\n    read_spec(sys.argv[1])\nexcept AdmlopsError as exc:\n"
            "    print('SpecError:', exc)\n" % (memory_bytes, memory_bytes))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_yaml_alias_bomb_is_refused_without_blowing_up(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    lines += ["version: 2", "name: *a8"]
    res = _read_in_subprocess(_spec_file(tmp_path, "\n".join(lines) + "\n"))
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.strip()
    assert out.startswith("SpecError:") and "\n" not in out and len(out) < 1000, out


def test_binary_file(tmp_path):
    with pytest.raises(SpecError, match="not UTF-8 text"):
        read_spec(_spec_file(tmp_path, bytes(range(256)) * 8))


def test_deep_nesting(tmp_path):
    res = _read_in_subprocess(_spec_file(tmp_path, "[" * 100000))
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("SpecError:") and "nested too deeply" in res.stdout


def test_oversized_file(tmp_path):
    with pytest.raises(SpecError, match="is not a spec.yaml"):
        read_spec(_spec_file(tmp_path, "# " + "x" * (2 << 20)))


@pytest.mark.parametrize("section,key,value,needle", [
    ("voxelization", "max_points", 10 ** 400, "voxelization.max_points must be an integer"),
    ("voxelization", "voxel_size", [10 ** 400, 0.32, 4], "voxel_size must be 3 positive"),
    ("test_cfg", "nms_thr", -10 ** 400, "test_cfg.nms_thr must be a number"),
    ("voxelization", "max_voxels", 10 ** 12, "max_voxels 1000000000000 is above"),
    ("voxelization", "max_points", 100000, "max_points 100000 per voxel is above"),
    ("voxelization", "voxel_size", [1e-7, 1e-7, 1e-7], "voxel_size is far too small"),
])
def test_absurd_numbers_fail_at_load_not_at_the_first_frame(section, key, value, needle):
    data = yaml.safe_load(yaml.safe_dump(SHIPPED))
    data[section][key] = value
    with pytest.raises(SpecError) as err:
        ModelSpec.from_dict(data)
    assert needle in str(err.value) and len(str(err.value)) < 1000


def test_max_voxels_times_max_points_is_bounded():
    data = yaml.safe_load(yaml.safe_dump(SHIPPED))
    data["voxelization"].update(max_voxels=1 << 22, max_points=1 << 12)
    with pytest.raises(SpecError, match=r"take 256.0 GiB"):
        ModelSpec.from_dict(data)
