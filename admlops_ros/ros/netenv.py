"""ROS1 master/slave environment: ROS_MASTER_URI, ROS_IP from the route to the master, reachability."""
from __future__ import annotations

import argparse
import errno
import http.client
import ipaddress
import logging
import os
import re
import shlex
import socket
import subprocess
import sys
import xmlrpc.client
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

from admlops_ros.errors import AdmlopsError
from admlops_ros.ros.master_watch import TimeoutTransport

LOG = logging.getLogger(__name__)

# The admlops bridge network (scripts/setup_network.sh, docker/docker-compose.yml): the host owns
# the gateway address, so a master started on the host is reachable from every container on it.
DEFAULT_MASTER_URI = "http://172.28.0.1:11311"
DEFAULT_TIMEOUT_S = 1.5
# Environment overrides, strongest first after an explicit argument. A pre-set ROS_MASTER_URI is
# NOT honoured on purpose: ROS setup.bash always exports http://localhost:11311.
ENV_MASTER_URI = "ADMLOPS_ROS_MASTER_URI"
ENV_ROS_IP = "ADMLOPS_ROS_IP"

# Problem codes of MasterStatus.problem.
OK = "ok"
BAD_URI = "bad_uri"
UNRESOLVABLE = "unresolvable"
NO_ROUTE = "no_route"
REFUSED = "refused"
TIMEOUT = "timeout"
NOT_A_MASTER = "not_a_master"


class NetEnvError(AdmlopsError):
    """A master URI or address that cannot be used (says which value and how to fix it)."""


@dataclass(frozen=True)
class MasterStatus:
    """Outcome of the reachability check of a ROS master.

    Attributes:
        problem: one of ok, bad_uri, unresolvable, no_route, refused, timeout, not_a_master.
        detail: what was observed (errno text, XML-RPC answer).
        fix: what the user should do; empty when ok.
    """

    problem: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """True when a ROS master answered."""
        return self.problem == OK


@dataclass(frozen=True)
class RosEnv:
    """The environment a ROS1 node needs to talk to the master across the bridge.

    Attributes:
        master_uri: ROS_MASTER_URI.
        master_ip: the master's IPv4 address (resolved).
        ros_ip: this machine's address on the interface that routes to the master; exported as
            ROS_IP and ROS_HOSTNAME (ROS_HOSTNAME wins over ROS_IP in ROS, so both carry the
            address and no stale host name can shadow it).
        interface: the interface the route goes out of (None when unknown).
        status: the master reachability check (None when not checked).
    """

    master_uri: str
    master_ip: str
    ros_ip: str
    interface: Optional[str]
    status: Optional[MasterStatus] = None

    def variables(self) -> Dict[str, str]:
        """The variables to export."""
        return {"ROS_MASTER_URI": self.master_uri, "ROS_IP": self.ros_ip,
                "ROS_HOSTNAME": self.ros_ip}

    def shell_exports(self) -> str:
        """POSIX `export` lines (bash and zsh)."""
        return "".join("export %s=%s\n" % (k, shlex.quote(v)) for k, v in self.variables().items())


def parse_master_uri(uri: str) -> Tuple[str, int]:
    """Split a ROS master URI into (host, port).

    Raises:
        NetEnvError: not of the form http://HOST:PORT.
    """
    parsed = urlparse(uri.strip())
    if parsed.scheme != "http" or not parsed.hostname:
        raise NetEnvError("ROS master URI %r is not http://HOST:PORT (e.g. %s)"
                          % (uri, DEFAULT_MASTER_URI))
    try:
        port = parsed.port or 11311
    except ValueError as exc:
        raise NetEnvError("ROS master URI %r has a bad port: %s" % (uri, exc)) from exc
    return parsed.hostname, port


def resolve_ipv4(host: str) -> str:
    """The IPv4 address of `host` (a literal address is returned as is).

    Raises:
        NetEnvError: the name does not resolve to an IPv4 address.
    """
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NetEnvError("ROS master host %r does not resolve (%s): use its IP address in "
                          "ROS_MASTER_URI, e.g. %s" % (host, exc, DEFAULT_MASTER_URI)) from exc
    return infos[0][4][0]


_SRC_RE = re.compile(r"\bsrc\s+(\d+\.\d+\.\d+\.\d+)")
_DEV_RE = re.compile(r"\bdev\s+(\S+)")


def parse_route_get(output: str) -> Tuple[Optional[str], Optional[str]]:
    """(src address, device) from the output of `ip route get ADDR`; None where absent."""
    src = _SRC_RE.search(output)
    dev = _DEV_RE.search(output)
    return (src.group(1) if src else None), (dev.group(1) if dev else None)


def route_source(master_ip: str) -> Tuple[Optional[str], Optional[str]]:
    """This machine's source address and interface for packets to `master_ip`.

    Uses the kernel's route decision (`ip -o route get`), falling back to the address of a
    connected UDP socket (same decision, no packet is sent) when iproute2 is missing.

    Returns:
        (address, interface): address None when no route exists; interface None when unknown.
    """
    try:
        proc = subprocess.run(["ip", "-o", "route", "get", master_ip], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        LOG.debug("ip route get unavailable (%s): using a UDP socket", exc)
    else:
        if proc.returncode != 0:
            LOG.debug("ip route get %s: %s", master_ip, proc.stderr.strip())
            return None, None
        src, dev = parse_route_get(proc.stdout)
        if src:
            return src, dev
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((master_ip, 9))
        return sock.getsockname()[0], None
    except OSError:
        return None, None
    finally:
        sock.close()


def _fix_for(problem: str, host: str, port: int) -> str:
    on_bridge = host == DEFAULT_MASTER_URI.split("//")[1].split(":")[0]
    net_hint = ("run scripts/setup_network.sh on the host and attach the container to the "
                "'admlops' network (docker compose does; else `docker network connect admlops "
                "CONTAINER`)" if on_bridge else "check the address in ROS_MASTER_URI")
    if problem == NO_ROUTE:
        return "no route to %s: %s" % (host, net_hint)
    if problem == REFUSED:
        return ("nothing listens on %s:%d: start `roscore` on the master machine (on the host "
                "with ROS_IP=%s), or fix the port in ROS_MASTER_URI" % (host, port, host))
    if problem == TIMEOUT:
        return ("%s:%d does not answer: a firewall drops the traffic (allow tcp/%d from the "
                "bridge, e.g. `iptables -I INPUT -i br-admlops -j ACCEPT`) or the address "
                "belongs to no running machine; %s" % (host, port, port, net_hint))
    if problem == NOT_A_MASTER:
        return "something on %s:%d is not a ROS master: fix the port in ROS_MASTER_URI" % (
            host, port)
    return ""


def check_master(master_uri: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> MasterStatus:
    """Check a ROS master answers at `master_uri` without rosnode (TCP connect, then XML-RPC).

    Args:
        master_uri: http://HOST:PORT.
        timeout_s: per step, seconds.

    Returns:
        MasterStatus naming the problem (no route, refused, timeout, ...) and its fix.
    """
    try:
        host, port = parse_master_uri(master_uri)
        ip = resolve_ipv4(host)
    except NetEnvError as exc:
        return MasterStatus(BAD_URI if "not http" in str(exc) or "port" in str(exc)
                            else UNRESOLVABLE, str(exc), "set a valid ROS_MASTER_URI")
    try:
        with socket.create_connection((ip, port), timeout=timeout_s):
            pass
    except socket.timeout:
        return MasterStatus(TIMEOUT, "no answer within %.1f s" % timeout_s,
                            _fix_for(TIMEOUT, ip, port))
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            problem = REFUSED
        elif exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL):
            problem = NO_ROUTE
        elif exc.errno == errno.ETIMEDOUT:
            problem = TIMEOUT
        else:
            problem = NO_ROUTE
        return MasterStatus(problem, os.strerror(exc.errno) if exc.errno else str(exc),
                            _fix_for(problem, ip, port))
    proxy = xmlrpc.client.ServerProxy("http://%s:%d/" % (ip, port),
                                      transport=TimeoutTransport(timeout_s))
    try:
        code, msg, pid = proxy.getPid("/admlops_env_check")
    except (OSError, xmlrpc.client.Error, http.client.HTTPException, ValueError) as exc:
        return MasterStatus(NOT_A_MASTER, "XML-RPC getPid failed: %s" % exc,
                            _fix_for(NOT_A_MASTER, ip, port))
    if code != 1:
        return MasterStatus(NOT_A_MASTER, "getPid answered %r" % (msg,),
                            _fix_for(NOT_A_MASTER, ip, port))
    return MasterStatus(OK, "ROS master pid %s at %s:%d" % (pid, ip, port))


def ros_environment(master_uri: Optional[str] = None, ros_ip: Optional[str] = None,
                    check: bool = True, timeout_s: float = DEFAULT_TIMEOUT_S,
                    environ: Optional[Dict[str, str]] = None) -> RosEnv:
    """Work out ROS_MASTER_URI / ROS_IP / ROS_HOSTNAME for this machine or container.

    Args:
        master_uri: explicit master; else $ADMLOPS_ROS_MASTER_URI; else DEFAULT_MASTER_URI.
        ros_ip: explicit own address; else $ADMLOPS_ROS_IP; else the source address of the
            kernel route to the master (not `hostname -I`, which lists every interface).
        check: also check the master answers (status is None otherwise).
        timeout_s: reachability timeout per step, seconds.
        environ: environment to read overrides from (default os.environ).

    Raises:
        NetEnvError: bad URI, unresolvable master, or no route to the master (with the fix).
    """
    env = os.environ if environ is None else environ
    uri = master_uri or env.get(ENV_MASTER_URI) or DEFAULT_MASTER_URI
    host, port = parse_master_uri(uri)
    master_ip = resolve_ipv4(host)
    own = ros_ip or env.get(ENV_ROS_IP)
    dev = None
    if own:
        try:
            ipaddress.IPv4Address(own)
        except ValueError as exc:
            raise NetEnvError("ROS_IP override %r is not an IPv4 address" % own) from exc
    else:
        own, dev = route_source(master_ip)
        if not own:
            raise NetEnvError("no route to the ROS master %s (%s): %s"
                              % (master_ip, uri, _fix_for(NO_ROUTE, master_ip, port)))
    status = check_master(uri, timeout_s) if check else None
    return RosEnv(uri, master_ip, own, dev, status)


def main(argv: Optional[List[str]] = None) -> int:
    """Print `export` lines for the shell (stdout) and diagnostics (stderr).

    Exit codes: 0 environment found and master reachable (or not checked); 3 environment found
    but the master does not answer (the exports are still printed); 2 no usable environment.
    """
    parser = argparse.ArgumentParser(prog="netenv", description=__doc__)
    parser.add_argument("master_uri", nargs="?", default=None,
                        help="ROS master URI (default $%s or %s)" % (ENV_MASTER_URI,
                                                                      DEFAULT_MASTER_URI))
    parser.add_argument("--ros-ip", default=None, help="own address (default: route source)")
    parser.add_argument("--no-check", action="store_true", help="skip the master check")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
    args = parser.parse_args(argv)
    try:
        env = ros_environment(args.master_uri, args.ros_ip, check=not args.no_check,
                              timeout_s=args.timeout)
    except NetEnvError as exc:
        sys.stderr.write("[ros_env] ERROR: %s\n" % exc)
        return 2
    sys.stdout.write(env.shell_exports())
    via = (" via %s" % env.interface) if env.interface else ""
    sys.stderr.write("[ros_env] ROS_MASTER_URI=%s ROS_IP=ROS_HOSTNAME=%s%s\n"
                     % (env.master_uri, env.ros_ip, via))
    if env.status is None:
        return 0
    if env.status.ok:
        sys.stderr.write("[ros_env] master OK: %s\n" % env.status.detail)
        return 0
    sys.stderr.write("[ros_env] master NOT reachable (%s: %s)\n[ros_env] fix: %s\n"
                     % (env.status.problem, env.status.detail, env.status.fix))
    return 3


if __name__ == "__main__":
    sys.exit(main())
