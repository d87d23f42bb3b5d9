"""Two Linux network namespaces joined by a bridge: a 'host' at the gateway and a 'container'."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from typing import Dict, List, Optional, Sequence

SUBNET_PREFIX = 16
GATEWAY = "172.28.0.1"      # the host side of the admlops network
CONTAINER_IP = "172.28.0.2"


class NetnsUnavailable(Exception):
    """Namespaces cannot be made here (reason in the message, for pytest.skip)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=check, timeout=20)


class NetnsBridge:
    """Context manager building, and always removing, the namespaces.

    Everything is created INSIDE the new namespaces (the bridge and the host end of the veth live
    in the host-side namespace, the peer is created directly in the container namespace), so the
    real host's interfaces, routes and addresses are never touched. Names are unique per use.

    Attributes:
        host_ns: namespace holding bridge `br0` at GATEWAY/16 (plays the Docker host).
        container_ns: namespace with `eth0` at CONTAINER_IP/16 (plays the container).
    """

    def __init__(self) -> None:
        tag = "%d%s" % (os.getpid() % 100000, uuid.uuid4().hex[:6])
        self.host_ns = "admh%s" % tag
        self.container_ns = "admc%s" % tag
        self._procs: List[subprocess.Popen] = []

    @staticmethod
    def check_available() -> None:
        """Raise NetnsUnavailable with the reason when namespaces cannot be created."""
        if not shutil.which("ip"):
            raise NetnsUnavailable("iproute2 `ip` not installed (apt-get install iproute2)")
        if os.geteuid() != 0:
            raise NetnsUnavailable("creating network namespaces needs root (CAP_SYS_ADMIN)")
        probe = "admprobe%s" % uuid.uuid4().hex[:8]
        res = _ip("netns", "add", probe, check=False)
        if res.returncode != 0:
            raise NetnsUnavailable("`ip netns add` failed: %s" % res.stderr.strip())
        _ip("netns", "del", probe, check=False)

    def __enter__(self) -> "NetnsBridge":
        self.check_available()
        try:
            self._build()
        except subprocess.CalledProcessError as exc:
            self.close()
            raise NetnsUnavailable("building the namespaces failed: %s: %s"
                                   % (" ".join(exc.cmd), (exc.stderr or "").strip())) from exc
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        h, c = self.host_ns, self.container_ns
        _ip("netns", "add", h)
        _ip("netns", "add", c)
        for ns in (h, c):
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", h, "link", "add", "br0", "type", "bridge")
        _ip("-n", h, "link", "add", "veth0", "type", "veth", "peer", "name", "eth0",
            "netns", c)
        _ip("-n", h, "link", "set", "veth0", "master", "br0")
        _ip("-n", h, "addr", "add", "%s/%d" % (GATEWAY, SUBNET_PREFIX), "dev", "br0")
        _ip("-n", c, "addr", "add", "%s/%d" % (CONTAINER_IP, SUBNET_PREFIX), "dev", "eth0")
        for ns, dev in ((h, "br0"), (h, "veth0"), (c, "eth0")):
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", c, "route", "add", "default", "via", GATEWAY)

    def popen(self, ns: str, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
              **kwargs: object) -> subprocess.Popen:
        """Start `argv` inside namespace `ns` in its own process group (killed by close())."""
        proc = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), env=env,
                                start_new_session=True, **kwargs)  # type: ignore[arg-type]
        self._procs.append(proc)
        return proc

    def run(self, ns: str, argv: Sequence[str], env: Optional[Dict[str, str]] = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run `argv` inside `ns` to completion, capturing text output."""
        proc = self.popen(ns, argv, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._stop(proc)
            out, err = proc.communicate()
            return subprocess.CompletedProcess(proc.args, -9, out, err + "\n[timeout]")
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    @staticmethod
    def _stop(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
        if proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):  # rosmaster ignores SIGINT
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is not None:
                return

    def close(self) -> None:
        """Stop every process started here, then delete both namespaces (idempotent)."""
        for proc in reversed(self._procs):  # SIGTERM all groups first, then wait once
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self._procs):
            self._stop(proc)
        self._procs = []
        for ns in (self.container_ns, self.host_ns):
            _ip("netns", "del", ns, check=False)

    def exists(self) -> bool:
        """True while either namespace is still listed."""
        names = _ip("netns", "list", check=False).stdout
        return any(line.split()[0] in (self.host_ns, self.container_ns)
                   for line in names.splitlines() if line.strip())
