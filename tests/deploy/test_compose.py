"""docker/docker-compose.yml against the published compose-spec JSON schema, plus our own rules."""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Dict

import jsonschema
import pytest
import yaml

from tests.paths import REPO_ROOT as REPO

DOCKER = REPO / "docker"
SCHEMA = DOCKER / "schema" / "compose-spec.json"
SUBNET = ipaddress.ip_network("172.28.0.0/16")
GATEWAY = "172.28.0.1"

_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|"
                  r"([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(text: str, env: Dict[str, str]) -> str:
    """Compose-spec interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}."""
    def sub(match: "re.Match[str]") -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4)
        value = env.get(name)
        unset_or_empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else value
        if op in (":?", "?"):
            if unset_or_empty:
                raise ValueError("required variable %s: %s" % (name, arg))
            return value
        return value or ""
    return _VAR.sub(sub, text)


def read_env_file(path: Path) -> Dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def load(env: Dict[str, str]) -> dict:
    return yaml.safe_load(interpolate((DOCKER / "docker-compose.yml").read_text(), env))


@pytest.mark.parametrize("env_source", ["defaults", "env-example"])
def test_compose_validates_against_compose_spec(validator, env_source):
    env = {} if env_source == "defaults" else read_env_file(DOCKER / ".env.example")
    doc = load(env)
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join("%s: %s" % (list(e.path), e.message) for e in errors)
    raw = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())  # before interpolation
    assert not list(validator.iter_errors(raw))


def test_schema_is_strict_enough_to_catch_typos(validator):
    doc = load({})
    doc["services"]["deploy"]["networks"]["admlops"]["ipv4_adress"] = "172.28.0.10"
    assert list(validator.iter_errors(doc))
    doc = load({})
    doc["services"]["deploy"]["deploy"]["resources"]["reservations"]["devices"][0]["gpus"] = 1
    assert list(validator.iter_errors(doc))


def test_services_on_external_bridge_with_gpu_ros_env_and_volumes():
    env = read_env_file(DOCKER / ".env.example")
    doc = load(env)
    assert doc["networks"]["admlops"]["external"] is True
    seen_ips = set()
    for name, svc in doc["services"].items():
        ip = svc["networks"]["admlops"]["ipv4_address"]
        assert ipaddress.ip_address(ip) in SUBNET and ip != GATEWAY, (name, ip)
        assert ip not in seen_ips
        seen_ips.add(ip)
        envs = svc["environment"]
        assert envs["ROS_MASTER_URI"] == "http://%s:11311" % GATEWAY
        assert envs["ROS_IP"] == envs["ROS_HOSTNAME"] == ip
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
        targets = {v["target"] for v in svc["volumes"]}
        assert {"/opt/admlops/engines", "/opt/admlops/checkpoints",
                "/opt/admlops/data"} <= targets
    assert doc["services"]["deploy"]["build"]["dockerfile"] == "docker/Dockerfile"
    # the variables of .env.example are exactly the ones the compose file uses (+ compose's own)
    used = set(m.group(2) or m.group(5) for m in _VAR.finditer(
        (DOCKER / "docker-compose.yml").read_text()) if not m.group(1))
    assert used == set(env) - {"COMPOSE_PROJECT_NAME"}


def test_env_example_addresses_fit_the_network():
    env = read_env_file(DOCKER / ".env.example")
    assert env["ADMLOPS_MASTER_IP"] == GATEWAY
    script = (REPO / "scripts" / "setup_network.sh").read_text()
    assert 'SUBNET="${ADMLOPS_SUBNET:-%s}"' % SUBNET in script
    assert 'GATEWAY="${ADMLOPS_GATEWAY:-%s}"' % GATEWAY in script


def test_interpolation_rules():
    env = {"A": "x", "E": ""}
    assert interpolate("$A ${A} ${B:-d} ${E:-d} ${E-d} $$A", env) == "x x d d  $A"
    with pytest.raises(ValueError, match="required variable B"):
        interpolate("${B:?set B}", env)


def test_dockerfile_pins_and_args():
    text = (DOCKER / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    assert args["MMDEPLOY_VERSION"] == "1.3.1"
    assert args["MMDET3D_VERSION"] == "1.4.0"
    assert args["MMCV_VERSION"].startswith("2.")
    major, minor = (int(v) for v in args["TENSORRT_VERSION"].split(".")[:2])
    assert (major, minor) >= (8, 6)
    assert "ubuntu20.04" in args["BASE_IMAGE"]  # ROS Noetic is focal-only
    assert "cuda:%s." % args["TENSORRT_VERSION"].split("+cuda")[1] in args["BASE_IMAGE"]
    assert args["CUDA_TAG"] == "cu" + args["TENSORRT_VERSION"].split("+cuda")[1].replace(".", "")
    assert "-DMMDEPLOY_TARGET_BACKENDS=trt" in text and "catkin build" in text
    entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]', text, re.M).group(1)
    assert entry == "/opt/admlops/docker/entrypoint.sh"
    assert (DOCKER / "entrypoint.sh").stat().st_mode & 0o111


def test_every_roslaunch_argument_of_the_compose_file_is_a_launch_arg():
    """roslaunch drops unknown name:=value pairs silently (tensorrt_allow_build was lost)."""
    import xml.etree.ElementTree as ET
    declared = {a.get("name") for a in
                ET.parse(REPO / "launch" / "lidar_detection.launch").getroot().iter("arg")}
    for name, service in load(read_env_file(DOCKER / ".env.example"))["services"].items():
        command = service.get("command") or []
        if "roslaunch" not in command:
            continue
        passed = [c.split(":=")[0] for c in command if ":=" in str(c)]
        assert passed, name
        assert set(passed) <= declared, f"{name}: {sorted(set(passed) - declared)} not declared"
