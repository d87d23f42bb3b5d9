"""ROS env helper: master URI parsing, route source, reachability diagnosis, ros_env.sh wrapper."""
from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from xmlrpc.server import SimpleXMLRPCServer

import pytest

from admlops_ros.ros import netenv
from tests.paths import REPO_ROOT as REPO

ROS_ENV = REPO / "scripts" / "ros_env.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def fake_master():
    server = SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.register_function(lambda caller: [1, "", 4242], "getPid")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture()
def silent_server():
    """Accepts TCP and answers garbage: something that is not a ROS master."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.sendall(b"SSH-2.0-nope\r\n")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d" % srv.getsockname()[1]
    stop.set()
    thread.join(2)
    srv.close()


def test_parse_master_uri():
    assert netenv.parse_master_uri("http://172.28.0.1:11311") == ("172.28.0.1", 11311)
    assert netenv.parse_master_uri("http://master/") == ("master", 11311)
    with pytest.raises(netenv.NetEnvError, match="not http://HOST:PORT"):
        netenv.parse_master_uri("172.28.0.1:11311")
    with pytest.raises(netenv.NetEnvError, match="bad port"):
        netenv.parse_master_uri("http://h:99999")


def test_parse_route_get():
    out = "172.28.0.1 dev eth0 src 172.28.0.5 uid 0 \\    cache "
    assert netenv.parse_route_get(out) == ("172.28.0.5", "eth0")
    local = "local 172.28.0.1 dev lo table local src 172.28.0.1 uid 0 \\    cache <local> "
    assert netenv.parse_route_get(local) == ("172.28.0.1", "lo")
    assert netenv.parse_route_get("") == (None, None)


def test_loopback_route_source():
    assert netenv.route_source("127.0.0.1")[0] == "127.0.0.1"


def test_resolve():
    assert netenv.resolve_ipv4("10.1.2.3") == "10.1.2.3"
    assert netenv.resolve_ipv4("localhost").startswith("127.")
    with pytest.raises(netenv.NetEnvError, match="does not resolve"):
        netenv.resolve_ipv4("no-such-host.invalid")


def test_check_master_ok(fake_master):
    status = netenv.check_master(fake_master, timeout_s=2)
    assert status.ok and "pid 4242" in status.detail


def test_check_master_refused():
    status = netenv.check_master("http://127.0.0.1:%d" % free_port(), timeout_s=1)
    assert status.problem == netenv.REFUSED and "start `roscore`" in status.fix


def test_check_master_not_a_master(silent_server):
    status = netenv.check_master(silent_server, timeout_s=1)
    assert status.problem == netenv.NOT_A_MASTER and "not a ROS master" in status.fix


def test_check_master_bad_uri():
    assert netenv.check_master("ftp://x").problem == netenv.BAD_URI
    assert netenv.check_master("http://no-such-host.invalid:11311").problem == \
        netenv.UNRESOLVABLE


def test_ros_environment_defaults_and_overrides(fake_master):
    env = netenv.ros_environment(check=False, environ={}, ros_ip="10.0.0.7")
    assert env.master_uri == netenv.DEFAULT_MASTER_URI and env.status is None
    assert env.variables() == {"ROS_MASTER_URI": "http://172.28.0.1:11311",
                               "ROS_IP": "10.0.0.7", "ROS_HOSTNAME": "10.0.0.7"}
    env = netenv.ros_environment(environ={netenv.ENV_MASTER_URI: fake_master})
    assert env.master_uri == fake_master and env.ros_ip == "127.0.0.1" and env.status.ok
    # a ROS_MASTER_URI already exported (ROS setup.bash sets localhost) does not override
    env = netenv.ros_environment(check=False, ros_ip="10.0.0.7",
                                 environ={"ROS_MASTER_URI": "http://localhost:11311"})
    assert env.master_uri == netenv.DEFAULT_MASTER_URI
    with pytest.raises(netenv.NetEnvError, match="not an IPv4"):
        netenv.ros_environment(check=False, ros_ip="eth0", environ={})
    assert "export ROS_IP=10.0.0.7\n" in netenv.ros_environment(
        check=False, ros_ip="10.0.0.7", environ={}).shell_exports()


def _shell(shell: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([shell, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30, cwd="/")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_ros_env_sh_sourced_keeps_shell_options(shell, fake_master):
    if not shutil.which(shell):
        pytest.skip("%s not installed" % shell)
    script = ('set -u; before="$-"; source "%s" %s; rc=$?; '
              'echo "rc=$rc $ROS_MASTER_URI $ROS_IP $ROS_HOSTNAME"; '
              '[ "$before" = "$-" ] && echo same-options; '
              'typeset -f __admlops_ros_env >/dev/null || echo no-leftover-function'
              % (ROS_ENV, fake_master))
    res = _shell(shell, script)
    assert "rc=0 %s 127.0.0.1 127.0.0.1" % fake_master in res.stdout, res.stderr
    assert "same-options" in res.stdout and "no-leftover-function" in res.stdout
    assert "master OK" in res.stderr


def test_ros_env_sh_failure_does_not_exit_shell():
    res = _shell("bash", 'set +e; source "%s" http://127.0.0.1:%d; echo "after rc=$?"; '
                 'source "%s" not-a-uri; echo "after2 rc=$?"'
                 % (ROS_ENV, free_port(), ROS_ENV))
    assert "after rc=3" in res.stdout and "after2 rc=2" in res.stdout
    assert "refused" in res.stderr and "not http://HOST:PORT" in res.stderr


def test_ros_env_cli_subcommand(fake_master, capsys):
    from admlops_ros.cli import main

    assert main(["ros-env", fake_master]) == 0
    assert "export ROS_MASTER_URI=%s" % fake_master in capsys.readouterr().out
