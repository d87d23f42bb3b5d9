#!/usr/bin/env python3
"""Shipped fuzzer (issue 18): hostile inputs against the parsers and the voxelizer.

    scripts/fuzz.py [--targets pointcloud,voxelize,spec,bag] [--inputs N] [--seed S]
                    [--out build/fuzz] [--timeout S] [--jobs J] [--engine random|atheris]
    scripts/fuzz.py --repro build/fuzz/voxelize/crash-1.bin      # one saved input, in-process

Contract per input: the target returns, or raises an ``AdmlopsError`` subclass. Anything else
is a finding, by kind:

- ``exception``: another exception type escaped (KeyError, OverflowError, RecursionError, ...);
- ``crash``: the process died (segfault, abort, os._exit);
- ``timeout``: one input ran longer than ``--timeout`` seconds;
- ``memory``: MemoryError under the worker's address-space limit (``--mem-limit``, RLIMIT_AS);
- ``result``: the call returned but broke a documented guarantee (e.g. non-finite output rows,
  a voxel with more than max_points points, numba and numpy voxelizers disagreeing).

The inputs come from the generators in ``scripts/fuzz_targets.py``; this file is the harness.

Design (engine ``random``, the default; deterministic for a given --seed): input i of target
T is generated from ``random.Random("<seed>:<T>:<i>")`` alone (seeded mutations of fixed
seeds: the shipped spec.yaml, a simulated bag, valid clouds and voxelizer settings), so a
finding is reproducible from (seed, T, i) and the run does not depend on --jobs. Per target
the parent starts --jobs *servers* (``fuzz.py --_server``: imports the package and loads the
seeds once); for each chunk of inputs a server forks a *child* that sets RLIMIT_AS, runs the
inputs and reports one line per input on a pipe. A child that dies (signal) is a crash of the
input after the last one it reported (its Python stack comes from faulthandler); a child
silent for --timeout seconds gets SIGUSR1 (faulthandler dumps where it hangs) and SIGKILL.
Then the server regenerates that input, saves it and forks a new child for the rest of the
chunk (a fork costs milliseconds, no re-import). Findings are deduplicated by (kind, type,
innermost admlops_ros frame); the first input of each is saved as
``<out>/<target>/<kind>-<n>.bin`` (pickle of the generated input, see --repro), plus the raw
file for spec/bag (``.yaml``/``.bag``) and ``<kind>-<n>.txt`` (what happened, traceback,
one-line repro). ``<out>/summary.json`` holds the table and every finding.

Engine ``atheris`` (coverage-guided, needs ``pip install atheris``): libFuzzer mutates a byte
string that drives the same generators (every random choice reads bytes from it), with
admlops_ros/yaml/rosbag/genpy instrumented. Python exceptions are recorded the same way and
fuzzing goes on; a crash / timeout / out-of-memory stops libFuzzer, which writes the input
(``atheris-crash-<sha1>`` etc.); the parent records it and restarts with the next -seed until
--inputs runs are done. Not deterministic (libFuzzer keeps a corpus in <out>/<target>/corpus).

Exit status: 0 no finding, 1 findings, 2 the harness itself failed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_TARGETS = ("pointcloud", "voxelize", "spec", "bag")
KINDS = ("exception", "crash", "timeout", "memory", "result")
PICKLE_MAGIC = "admlops-fuzz-input-1"
PKG_DIR = str(REPO / "admlops_ros") + os.sep
STARTUP_TIMEOUT_S = 180.0


sys.path.insert(0, str(Path(__file__).resolve().parent))  # fuzz_targets.py beside it
from fuzz_targets import (BytesRandom, ContractViolation, Target,  # noqa: E402
                          input_rng, make_target, rel)


def _where(tb_frames: Sequence[traceback.FrameSummary]) -> str:
    """Innermost admlops_ros frame, plus the innermost frame when that is a library's."""
    if not tb_frames:
        return "?"
    last = tb_frames[-1]
    if last.filename == __file__ or last.filename.endswith(os.sep + "fuzz.py"):
        return "scripts/fuzz.py:%d (harness)" % (last.lineno or 0)
    inner = "%s:%d" % (Path(last.filename).name, last.lineno or 0)
    repo = str(REPO) + os.sep
    for prefix in (PKG_DIR, repo):
        for fr in reversed(tb_frames):
            if fr.filename.startswith(prefix) and "/.venv/" not in fr.filename and \
                    not fr.filename.endswith(os.sep + "fuzz.py"):
                here = "%s:%d" % (rel(Path(fr.filename)), fr.lineno or 0)
                return here if fr is last else "%s > %s" % (here, inner)
    return inner


def run_one(target: Target, inp: Any, errors: Tuple[type, ...]) -> Tuple[str, Optional[Dict[str, Any]]]:
    """('o', None) ok, ('e', None) project error, ('x', finding) anything else."""
    try:
        target.run(inp)
        return "o", None
    except errors:
        return "e", None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: B902 - every other exception is the finding
        kind = "memory" if isinstance(exc, MemoryError) else (
            "result" if isinstance(exc, ContractViolation) else "exception")
        frames = traceback.extract_tb(exc.__traceback__)
        where = _where(frames)
        etype = type(exc).__name__ if type(exc).__module__ in ("builtins", "__main__") else \
            "%s.%s" % (type(exc).__module__, type(exc).__qualname__)
        try:
            msg = str(exc)[:400]
        except Exception:  # noqa: B902
            msg = "<str() failed>"
        tb_text = "".join(traceback.format_list(frames[-12:]))
        return "x", {"kind": kind, "etype": etype, "msg": msg, "where": where,
                     "tb": tb_text[-6000:]}
    finally:
        try:
            target.after_input()
        except Exception:  # noqa: B902
            pass


def signature(kind: str, etype: str, where: str) -> str:
    return "%s|%s|%s" % (kind, etype, where)


def set_memory_limit(mib: int) -> None:
    import resource
    if mib > 0:
        lim = mib * (1 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def worker_environment() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1", PYTHONFAULTHANDLER="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def quiet_process() -> None:
    import logging
    import warnings
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def project_errors() -> Tuple[type, ...]:
    from admlops_ros.errors import AdmlopsError
    return (AdmlopsError,)


# ============================================================================ server / child
def server_main(args: argparse.Namespace) -> int:
    """A fork server for one target: setup once, then fork a child per chunk of inputs."""
    proto = os.dup(1)
    os.dup2(2, 1)  # stray prints of the package go to the log, not into the protocol
    quiet_process()
    target = make_target(args._server)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz_%s_" % target.name))
    target.setup(Path(args.out) / "seeds", scratch)
    errors = project_errors()

    def send(line: str) -> None:
        os.write(proto, (line + "\n").encode())

    send("READY")
    try:
        for line in sys.stdin:
            cmd = line.split()
            if not cmd:
                continue
            if cmd[0] == "quit":
                break
            if cmd[0] == "run":
                a, b = int(cmd[1]), int(cmd[2])
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    code = 3
                    try:
                        child_main(target, args, errors, a, b, proto)
                        code = 0
                    except BaseException:  # noqa: B902 - a harness bug: say it, exit 3
                        traceback.print_exc()
                    finally:
                        sys.stderr.flush()
                        os._exit(code)
                _, status = os.waitpid(pid, 0)
                send("X %d" % status)
            elif cmd[0] == "save":
                index, base = int(cmd[1]), Path(cmd[2])
                inp = target.generate(input_rng(args.seed, target.name, index))
                send("S " + json.dumps(save_input(target, inp, base, args.seed, index)))
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    return 0


def child_main(target: Target, args: argparse.Namespace, errors: Tuple[type, ...], a: int,
               b: int, proto: int) -> None:
    import faulthandler
    faulthandler.enable(sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    set_memory_limit(args.mem_limit)
    os.write(proto, ("P %d\n" % os.getpid()).encode())
    for i in range(a, b):
        try:
            inp = target.generate(input_rng(args.seed, target.name, i))
        except Exception:  # noqa: B902 - a generator bug: counted, reported, run goes on
            os.write(proto, ("R %d h %s\n" % (i, json.dumps(traceback.format_exc()[-3000:])))
                     .encode())
            continue
        code, info = run_one(target, inp, errors)
        if info is None:
            os.write(proto, ("R %d %s\n" % (i, code)).encode())
        else:
            os.write(proto, ("R %d x %s\n" % (i, json.dumps(info))).encode())
    os.write(proto, b"D\n")


def save_input(target: Target, inp: Any, base: Path, seed: Optional[int],
               index: Optional[int]) -> Dict[str, Any]:
    base.parent.mkdir(parents=True, exist_ok=True)
    bin_path = base.with_suffix(".bin")
    with open(str(bin_path), "wb") as fh:
        pickle.dump({"magic": PICKLE_MAGIC, "target": getattr(target, "spec", target.name),
                     "seed": seed, "index": index, "input": inp}, fh, protocol=4)
    raw = target.write_raw(inp, base)
    return {"bin": rel(bin_path), "raw": rel(raw) if raw else None,
            "summary": target.describe(inp), "repro": target.repro(inp, bin_path, raw)}


# ============================================================================ parent
class Stats:
    def __init__(self, name: str) -> None:
        self.name = name
        self.inputs = self.ok = self.errors = 0
        self.kinds = {k: 0 for k in KINDS}
        self.harness = 0
        self.seconds = 0.0
        self.findings: Dict[str, Dict[str, Any]] = {}  # signature -> record


class Server:
    """Parent side of one fork server."""

    def __init__(self, target: str, args: argparse.Namespace, slot: int, log_dir: Path) -> None:
        self.target, self.args, self.slot = target, args, slot
        self.log_path = log_dir / ("server-%d.log" % slot)
        self.buf = b""
        self.lines: Deque[str] = deque()
        self.phase = "starting"
        self.started = time.monotonic()
        self.spawn()

    def spawn(self) -> None:
        self.log = open(str(self.log_path), "ab")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_server", self.target,
               "--seed", str(self.args.seed), "--out", str(self.args.out),
               "--mem-limit", str(self.args.mem_limit)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=worker_environment(), cwd=str(REPO),
                                     start_new_session=True)
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.phase, self.started = "starting", time.monotonic()
        self.child_pid: Optional[int] = None
        self.chunk: Optional[Tuple[int, int]] = None
        self.cur = 0
        self.done = False
        self.killed_for_timeout = False
        self.kill_at: Optional[float] = None
        self.deadline = self.started + STARTUP_TIMEOUT_S
        self.saves: Deque[Tuple[int, str, Dict[str, Any]]] = deque()
        self.saving: Optional[Tuple[int, str, Dict[str, Any]]] = None

    def send(self, line: str) -> None:
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def read(self) -> bool:
        """Read what is there; False at EOF."""
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return True
        if not data:
            return False
        self.buf += data
        *complete, self.buf = self.buf.split(b"\n")
        self.lines.extend(x.decode("utf-8", "replace") for x in complete)
        return True

    def log_size(self) -> int:
        self.log.flush()
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(str(self.log_path), "rb") as fh:
                fh.seek(offset)
                return fh.read(40000).decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            self.send("quit")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: B902
            self.kill()
        self.log.close()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: B902
            pass


def dump_location(text: str) -> str:
    """Innermost admlops_ros (else repository) frame of a faulthandler dump (most recent call
    first), plus the innermost frame when that is a library's."""
    frames = [(p, ln) for p, ln, _ in re.findall(r'File "([^"]+)", line (\d+) in (\S+)', text)
              if not p.endswith(os.sep + "fuzz.py")]
    if not frames:
        return "?"
    inner = "%s:%s" % (Path(frames[0][0]).name, frames[0][1])
    repo = str(REPO) + os.sep
    for prefix in (PKG_DIR, repo):
        for k, (path, line) in enumerate(frames):
            if path.startswith(prefix) and "/.venv/" not in path:
                here = "%s:%s" % (rel(Path(path)), line)
                return here if k == 0 else "%s > %s" % (here, inner)
    return inner


def signal_name(status: int) -> str:
    if os.WIFSIGNALED(status):
        try:
            return signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            return "signal %d" % os.WTERMSIG(status)
    return "exit %d" % os.WEXITSTATUS(status)


class Fuzzer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)

    # ------------------------------------------------------------- findings
    def record(self, stats: Stats, index: Any, info: Dict[str, Any],
               server: Optional[Server] = None) -> Optional[Tuple[str, int]]:
        """Count a finding; returns (kind, n) when it is new (its input is to be saved)."""
        kind = info["kind"]
        stats.kinds[kind] += 1
        sig = signature(kind, info["etype"], info["where"])
        rec = stats.findings.get(sig)
        if rec is not None:
            rec["count"] += 1
            return None
        n = sum(1 for r in stats.findings.values() if r["kind"] == kind) + 1
        rec = dict(info, signature=sig, count=1, first_index=index, file=None, raw=None,
                   summary="", repro="", n=n)
        stats.findings[sig] = rec
        if not self.args.quiet:
            print("  [%s] new finding %s-%d: %s %s at %s: %s" % (
                stats.name, kind, n, info["etype"], "", info["where"], info["msg"][:160]),
                flush=True)
        return kind, n

    def write_report(self, stats: Stats, rec: Dict[str, Any], saved: Dict[str, Any]) -> None:
        rec.update(file=saved.get("bin"), raw=saved.get("raw"), summary=saved.get("summary", ""),
                   repro=saved.get("repro", ""))
        base = self.out / stats.name / ("%s-%d" % (rec["kind"], rec["n"]))
        lines = ["target:    %s" % stats.name,
                 "kind:      %s" % rec["kind"],
                 "what:      %s at %s" % (rec["etype"], rec["where"]),
                 "message:   %s" % rec["msg"],
                 "input:     index %s (seed %s)" % (rec["first_index"], self.args.seed),
                 "summary:   %s" % rec["summary"],
                 "repro:     %s" % rec["repro"],
                 "", rec.get("tb", "")]
        base.with_suffix(".txt").write_text("\n".join(lines) + "\n")

    # ------------------------------------------------------------- random engine
    def run_target(self, name: str) -> Stats:
        args = self.args
        target = make_target(name)
        stats = Stats(target.name)
        tdir = self.out / target.name
        tdir.mkdir(parents=True, exist_ok=True)
        for old in tdir.iterdir():
            if old.is_file() and old.name.split("-")[0] in KINDS + ("atheris",):
                old.unlink()
        logs = tdir / ".logs"
        shutil.rmtree(str(logs), ignore_errors=True)
        logs.mkdir()
        target.prepare(self.out / "seeds")
        chunk = args.chunk or target.chunk
        pending: Deque[Tuple[int, int]] = deque(
            (a, min(a + chunk, args.start + args.inputs))
            for a in range(args.start, args.start + args.inputs, chunk))
        t0 = time.monotonic()
        jobs = max(1, min(args.jobs, len(pending) or 1))
        servers = [Server(name, args, k, logs) for k in range(jobs)]
        sel = selectors.DefaultSelector()
        for s in servers:
            sel.register(s.fd, selectors.EVENT_READ, s)
        last_print = t0
        try:
            while True:
                for s in servers:
                    self._advance(s, stats, pending, tdir)
                if not pending and all(s.phase == "idle" for s in servers):
                    break
                now = time.monotonic()
                wait = max(0.0, min([s.deadline for s in servers] + [now + 1.0]) - now)
                for key, _ in sel.select(timeout=min(wait, 1.0)):
                    s = key.data
                    if not s.read():
                        self._server_died(s, stats, pending, sel)
                now = time.monotonic()
                for s in servers:
                    self._handle_lines(s, stats, pending)
                    self._check_deadline(s, stats, now)
                if not args.quiet and now - last_print > 30:
                    last_print = now
                    print("  [%s] %d/%d inputs, %.0f/s" % (
                        stats.name, stats.inputs, args.inputs,
                        stats.inputs / max(now - t0, 1e-9)), flush=True)
        finally:
            for s in servers:
                try:
                    sel.unregister(s.fd)
                except (KeyError, ValueError):
                    pass
                s.stop()
        stats.seconds = time.monotonic() - t0
        return stats

    def _advance(self, s: Server, stats: Stats, pending: Deque[Tuple[int, int]],
                 tdir: Path) -> None:
        if s.phase != "idle":
            return
        if s.saves:
            s.saving = s.saves.popleft()
            index, kind_n, _ = s.saving
            s.send("save %d %s" % (index, tdir / kind_n))
            s.phase, s.deadline = "saving", time.monotonic() + 120.0
            return
        if pending:
            a, b = pending.popleft()
            s.chunk, s.cur, s.done = (a, b), a, False
            s.child_pid, s.killed_for_timeout, s.kill_at = None, False, None
            s.log_offset = s.log_size()
            s.send("run %d %d" % (a, b))
            s.phase = "running"
            s.deadline = time.monotonic() + self.args.timeout + 2.0

    def _handle_lines(self, s: Server, stats: Stats, pending: Deque[Tuple[int, int]]) -> None:
        while s.lines:
            line = s.lines.popleft()
            tag = line[:1] if line != "READY" else ""
            if tag == "R":
                _, idx, code, *rest = line.split(" ", 3)
                i = int(idx)
                stats.inputs += 1
                s.cur = i + 1
                s.deadline = time.monotonic() + self.args.timeout
                if code == "o":
                    stats.ok += 1
                elif code == "e":
                    stats.errors += 1
                elif code == "h":
                    stats.harness += 1
                    if stats.harness == 1:
                        print("fuzz.py: HARNESS BUG generating %s input %d (counted, not a "
                              "finding):\n%s" % (stats.name, i, json.loads(rest[0])),
                              file=sys.stderr, flush=True)
                else:
                    info = json.loads(rest[0])
                    new = self.record(stats, i, info)
                    if new:
                        s.saves.append((i, "%s-%d" % new, info))
            elif tag == "P":
                s.child_pid = int(line.split()[1])
            elif tag == "D":
                s.done = True
            elif tag == "X":
                self._child_exit(s, stats, pending, int(line.split()[1]))
            elif line == "READY":
                s.phase = "idle"
                s.deadline = time.monotonic() + 3600.0
            elif tag == "S":
                saved = json.loads(line[2:])
                index, kind_n, info = s.saving
                rec = next(r for r in stats.findings.values()
                           if "%s-%d" % (r["kind"], r["n"]) == kind_n)
                self.write_report(stats, rec, saved)
                s.saving, s.phase = None, "idle"
                s.deadline = time.monotonic() + 3600.0

    def _child_exit(self, s: Server, stats: Stats, pending: Deque[Tuple[int, int]],
                    status: int) -> None:
        a, b = s.chunk
        clean = s.done and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if not clean:
            i = s.cur
            log = s.log_since(s.log_offset)
            if s.killed_for_timeout:
                info = {"kind": "timeout", "etype": "Timeout", "where": dump_location(log),
                        "msg": "no result after %.1f s" % self.args.timeout, "tb": log[-6000:]}
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) == 3 and "Traceback" in log:
                raise SystemExit("fuzz.py: the harness failed in target %s (input %d):\n%s"
                                 % (stats.name, i, log[-6000:]))
            else:
                info = {"kind": "crash", "etype": signal_name(status),
                        "where": dump_location(log), "msg": "worker died (%s)"
                        % signal_name(status), "tb": log[-6000:]}
            stats.inputs += 1
            new = self.record(stats, i, info)
            if new:
                s.saves.append((i, "%s-%d" % new, info))
            if i + 1 < b:
                pending.appendleft((i + 1, b))
        s.phase, s.chunk, s.child_pid = "idle", None, None
        s.deadline = time.monotonic() + 3600.0

    def _check_deadline(self, s: Server, stats: Stats, now: float) -> None:
        if now < s.deadline:
            return
        if s.phase == "running" and s.child_pid:
            if not s.killed_for_timeout:
                s.killed_for_timeout = True
                try:
                    os.kill(s.child_pid, signal.SIGUSR1)  # faulthandler: where it hangs
                except OSError:
                    pass
                s.deadline = now + 0.5
            else:
                try:
                    os.kill(s.child_pid, signal.SIGKILL)
                except OSError:
                    pass
                s.deadline = now + 30.0
            return
        raise SystemExit("fuzz.py: %s server %d stuck in phase %s; log %s:\n%s"
                         % (stats.name, s.slot, s.phase, s.log_path,
                            s.log_since(max(0, s.log_size() - 4000))))

    def _server_died(self, s: Server, stats: Stats, pending: Deque[Tuple[int, int]],
                     sel: selectors.BaseSelector) -> None:
        sel.unregister(s.fd)
        s.kill()
        if s.phase == "starting":
            raise SystemExit("fuzz.py: the %s server did not start; log %s:\n%s"
                             % (stats.name, s.log_path, s.log_since(0)[-6000:]))
        if s.phase == "running" and s.chunk:
            pending.appendleft((s.cur, s.chunk[1]))
        s.log.close()
        s.spawn()
        sel.register(s.fd, selectors.EVENT_READ, s)

    # ------------------------------------------------------------- atheris engine
    def run_target_atheris(self, name: str) -> Stats:
        args = self.args
        target = make_target(name)
        stats = Stats(target.name)
        tdir = self.out / target.name
        tdir.mkdir(parents=True, exist_ok=True)
        for old in tdir.iterdir():
            if old.is_file() and old.name.split("-")[0] in KINDS + ("atheris",):
                old.unlink()
        (tdir / "corpus").mkdir(exist_ok=True)
        staging = tdir / ".staging"
        shutil.rmtree(str(staging), ignore_errors=True)
        staging.mkdir()
        target.prepare(self.out / "seeds")
        log_path = tdir / "atheris.log"
        t0 = time.monotonic()
        restart = 0
        while stats.inputs < args.inputs:
            rfd, wfd = os.pipe()
            cmd = [sys.executable, str(Path(__file__).resolve()), "--_atheris", name,
                   "--seed", str(args.seed), "--out", str(args.out), "--mem-limit",
                   str(args.mem_limit), "--", "-runs=%d" % (args.inputs - stats.inputs),
                   "-timeout=%d" % max(1, int(math.ceil(args.timeout))),
                   "-rss_limit_mb=%d" % args.mem_limit, "-seed=%d" % (args.seed + restart + 1),
                   "-artifact_prefix=%s/atheris-" % tdir, "-print_final_stats=1",
                   "-max_len=4096", "-len_control=20", str(tdir / "corpus")]
            env = worker_environment()
            env["FUZZ_PROGRESS_FD"] = str(wfd)
            del env["PYTHONFAULTHANDLER"]  # enabled after libFuzzer's handlers, in the child
            with open(str(log_path), "wb") as log:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        env=env, cwd=str(REPO), pass_fds=(wfd,),
                                        start_new_session=True)
            os.close(wfd)
            buf = b""
            last = time.monotonic()
            with os.fdopen(rfd, "rb", buffering=0) as pipe:
                os.set_blocking(rfd, False)
                while True:
                    sel = selectors.DefaultSelector()
                    sel.register(rfd, selectors.EVENT_READ)
                    ready = sel.select(timeout=1.0)
                    sel.close()
                    if ready:
                        try:
                            data = pipe.read(1 << 16)
                        except BlockingIOError:
                            data = b""
                        if data is None:
                            data = b""
                        if not data and proc.poll() is not None:
                            break
                        buf += data
                        *complete, buf = buf.split(b"\n")
                        for raw_line in complete:
                            self._atheris_line(stats, raw_line.decode("utf-8", "replace"),
                                               target, tdir)
                        last = time.monotonic()
                    elif proc.poll() is not None:
                        break
                    elif time.monotonic() - last > args.timeout + STARTUP_TIMEOUT_S:
                        os.killpg(proc.pid, signal.SIGKILL)  # libFuzzer's own watchdog failed
            proc.wait()
            text = log_path.read_text(errors="replace")
            if proc.returncode != 0:
                self._atheris_artifact(stats, text, target, tdir)
            restart += 1
            if restart >= 200 or (proc.returncode == 0 and stats.inputs == 0):
                break
        stats.seconds = time.monotonic() - t0
        return stats

    def _atheris_line(self, stats: Stats, line: str, target: Target, tdir: Path) -> None:
        if not line.startswith("R "):
            return
        _, idx, code, *rest = line.split(" ", 3)
        stats.inputs += 1
        if code == "o":
            stats.ok += 1
        elif code == "e":
            stats.errors += 1
        else:
            info = json.loads(rest[0])
            staged = info.pop("staged", None)
            new = self.record(stats, stats.inputs, info)
            if new and staged:
                dst = tdir / ("%s-%d.bin" % new)
                os.replace(staged, str(dst))
                saved = json.loads(Path(staged + ".json").read_text())
                raw = saved.get("raw")
                if raw:
                    new_raw = tdir / ("%s-%d%s" % (new + (Path(raw).suffix,)))
                    os.replace(str(REPO / raw), str(new_raw))
                    saved["raw"] = rel(new_raw)
                saved["bin"] = rel(dst)
                saved["repro"] = saved["repro"].replace(raw or "\0", saved.get("raw") or "") \
                    .replace(rel(Path(staged)), rel(dst))
                self.write_report(stats, stats.findings[signature(
                    info["kind"], info["etype"], info["where"])], saved)
            elif staged:
                for p in (staged, staged + ".json"):
                    try:
                        os.unlink(p)
                    except OSError:
                        pass

    def _atheris_artifact(self, stats: Stats, text: str, target: Target, tdir: Path) -> None:
        m = re.search(r"Test unit written to (\S+)", text)
        if "ERROR: libFuzzer: timeout" in text or "ALARM: working on the last Unit" in text:
            kind, etype = "timeout", "Timeout"
        elif "out-of-memory" in text or "malloc(" in text:
            kind, etype = "memory", "RSS limit"
        else:
            sig = re.search(r"deadly signal|Segmentation fault|Aborted", text)
            kind, etype = "crash", (sig.group(0) if sig else "libFuzzer exit")
        info = {"kind": kind, "etype": etype, "where": dump_location(text),
                "msg": (m.group(1) if m else "no artifact"), "tb": text[-6000:]}
        stats.inputs += 1
        new = self.record(stats, stats.inputs, info)
        rec = stats.findings[signature(kind, etype, info["where"])]
        if m:  # libFuzzer would run a crashing seed again at once on the restart
            art = Path(m.group(1))
            try:
                blob = art.read_bytes()
                for seed_file in (tdir / "corpus").iterdir():
                    if seed_file.stat().st_size == len(blob) and seed_file.read_bytes() == blob:
                        seed_file.unlink()
            except OSError:
                pass
        if new and m:
            art = Path(m.group(1))
            dst = tdir / ("%s-%d.bin" % new)
            shutil.copyfile(str(art), str(dst))
            self.write_report(stats, rec, {
                "bin": rel(dst), "raw": None,
                "summary": "libFuzzer artifact %s (%d bytes)" % (rel(art), art.stat().st_size),
                "repro": ".venv/bin/python scripts/fuzz.py --repro %s --engine atheris "
                         "--targets %s" % (rel(dst), getattr(target, "spec", target.name))})

    # ------------------------------------------------------------- report
    def main(self) -> int:
        args = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        all_stats = []
        for name in args.targets:
            if not args.quiet:
                print("fuzz: %s, %d inputs from #%d, seed %d, engine %s, jobs %d, timeout %.1f s, "
                      "memory limit %d MiB" % (name, args.inputs, args.start, args.seed,
                                               args.engine, args.jobs, args.timeout,
                                               args.mem_limit),
                      flush=True)
            if args.engine == "atheris":
                all_stats.append(self.run_target_atheris(name))
            else:
                all_stats.append(self.run_target(name))
        print_table(all_stats, args)
        summary = {"seed": args.seed, "start": args.start, "engine": args.engine, "jobs": args.jobs,
                   "timeout_s": args.timeout, "mem_limit_mib": args.mem_limit,
                   "targets": {s.name: {
                       "inputs": s.inputs, "ok": s.ok, "project_errors": s.errors,
                       "harness_errors": s.harness,
                       "findings": dict(s.kinds), "seconds": round(s.seconds, 3),
                       "inputs_per_s": round(s.inputs / max(s.seconds, 1e-9), 1),
                       "unique": sorted(({k: v for k, v in r.items() if k != "tb"}
                                         for r in s.findings.values()),
                                        key=lambda r: (r["kind"], r["n"]))}
                       for s in all_stats}}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
        harness = sum(s.harness for s in all_stats)
        if harness:
            print("fuzz.py: %d input(s) could not be generated (harness bug, see stderr)"
                  % harness, file=sys.stderr)
            return 2
        return 1 if any(sum(s.kinds.values()) for s in all_stats) else 0


def print_table(all_stats: Sequence[Stats], args: argparse.Namespace) -> None:
    head = ("target", "inputs", "ok", "proj.err", "exception", "crash", "timeout", "memory",
            "result", "unique", "inputs/s")
    rows = [head]
    for s in all_stats:
        rows.append((s.name, str(s.inputs), str(s.ok), str(s.errors)) +
                    tuple(str(s.kinds[k]) for k in KINDS) +
                    (str(len(s.findings)), "%.0f" % (s.inputs / max(s.seconds, 1e-9))))
    widths = [max(len(r[c]) for r in rows) for c in range(len(head))]
    print()
    for k, r in enumerate(rows):
        print("  ".join(v.rjust(w) if c else v.ljust(w) for c, (v, w) in
                        enumerate(zip(r, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    for s in all_stats:
        if not s.findings:
            continue
        print("\n%s: %d unique finding(s) (saved in %s/%s)" % (s.name, len(s.findings),
                                                              args.out, s.name))
        for r in sorted(s.findings.values(), key=lambda r: (r["kind"], r["n"])):
            print("  %s-%d x%d: %s at %s: %s" % (r["kind"], r["n"], r["count"], r["etype"],
                                                 r["where"], r["msg"][:150].replace("\n", " ")))
            if r.get("summary"):
                print("      input: %s" % r["summary"][:300])
            if r.get("repro"):
                print("      repro: %s" % r["repro"])
    sys.stdout.flush()


# ============================================================================ atheris child
def atheris_main(args: argparse.Namespace, libfuzzer_args: List[str]) -> int:
    import atheris
    quiet_process()
    target = make_target(args._atheris)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz_%s_" % target.name))
    with atheris.instrument_imports(include=list(target.instrument),
                                    exclude=list(target.instrument_exclude)):
        target.setup(Path(args.out) / "seeds", scratch)
        errors = project_errors()
    set_memory_limit(args.mem_limit)
    progress = int(os.environ["FUZZ_PROGRESS_FD"])
    staging = Path(args.out) / target.name / ".staging"
    seen: set = set()
    count = [0]

    def one_input(data: bytes) -> None:
        if not count[0]:  # now libFuzzer's signal handlers are in place: chain in front of them
            import faulthandler
            faulthandler.enable(sys.stderr, all_threads=False)
        count[0] += 1
        inp = target.generate(BytesRandom(data))
        code, info = run_one(target, inp, errors)
        if info is None:
            os.write(progress, ("R %d %s\n" % (count[0], code)).encode())
            return
        sig = signature(info["kind"], info["etype"], info["where"])
        if sig not in seen:
            seen.add(sig)
            base = staging / ("%d-%d" % (os.getpid(), count[0]))
            saved = save_input(target, inp, base, None, None)
            Path(str(base) + ".bin.json").write_text(json.dumps(saved))
            info["staged"] = str(base) + ".bin"
        os.write(progress, ("R %d x %s\n" % (count[0], json.dumps(info))).encode())

    atheris.Setup([sys.argv[0]] + libfuzzer_args, one_input)
    atheris.Fuzz()
    return 0


# ============================================================================ repro / CLI
def repro_main(args: argparse.Namespace) -> int:
    path = Path(args.repro)
    blob = path.read_bytes()
    try:
        saved = pickle.loads(blob)
        ok = isinstance(saved, dict) and saved.get("magic") == PICKLE_MAGIC
    except Exception:  # noqa: B902
        ok = False
    if ok:
        name, inp = saved["target"], saved["input"]
        target = make_target(name)
        seeds = Path(args.out) / "seeds"
    else:  # a raw libFuzzer artifact: regenerate the input from its bytes
        name = args.targets[0] if args.targets_given else path.resolve().parent.name
        target = make_target(name)
        seeds = Path(args.out) / "seeds"
        target.prepare(seeds)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz_repro_"))
    quiet_process()
    target.setup(seeds, scratch)
    if not ok:
        inp = target.generate(BytesRandom(blob))
    print("target %s: %s" % (name, target.describe(inp)), flush=True)
    from admlops_ros.errors import AdmlopsError
    set_memory_limit(args.mem_limit)
    import faulthandler
    faulthandler.enable()
    try:
        target.run(inp)
    except AdmlopsError as exc:
        print("project error (fine): %s: %s" % (type(exc).__name__, exc))
        return 0
    finally:
        shutil.rmtree(str(scratch), ignore_errors=True)
    print("ok: no exception")
    return 0


def parse_args(argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: List[str] = []
    if "--" in argv:
        k = argv.index("--")
        argv, extra = argv[:k], argv[k + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help="comma-separated: %s, or module:function (called with random bytes)"
                   % ",".join(DEFAULT_TARGETS))
    p.add_argument("--inputs", type=int, default=10000, help="inputs per target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", type=int, default=0,
                   help="index of the first input (inputs are seeded by index: resumes a run)")
    p.add_argument("--out", default=str(REPO / "build" / "fuzz"))
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per input")
    p.add_argument("--mem-limit", type=int, default=4096,
                   help="MiB of address space per worker (RLIMIT_AS); 0: none")
    p.add_argument("--jobs", type=int, default=1, help="parallel workers per target")
    p.add_argument("--chunk", type=int, default=0, help="inputs per forked child (0: per target)")
    p.add_argument("--engine", choices=("random", "atheris"), default="random")
    p.add_argument("--repro", metavar="FILE", help="run one saved input in this process")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--_server", help=argparse.SUPPRESS)
    p.add_argument("--_atheris", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.targets_given = any(a.startswith("--targets") for a in argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.out = str(Path(args.out).resolve())
    return args, extra


def main(argv: Optional[Sequence[str]] = None) -> int:
    args, extra = parse_args(argv)
    if args._server:
        return server_main(args)
    if args._atheris:
        return atheris_main(args, extra)
    if args.repro:
        return repro_main(args)
    if args.engine == "atheris":
        if args.start:
            print("fuzz.py: --start needs --engine random (atheris inputs are not seeded by "
                  "index)", file=sys.stderr)
            return 2
        try:
            import atheris  # noqa: F401  (only: is it installed)
        except ImportError:
            print("fuzz.py: --engine atheris needs `pip install atheris`", file=sys.stderr)
            return 2
    for name in args.targets:
        make_target(name)  # unknown names fail before any work
    if args.inputs < 0 or args.start < 0 or args.jobs < 1 or args.timeout <= 0:
        print("fuzz.py: --inputs >= 0, --start >= 0, --jobs >= 1, --timeout > 0", file=sys.stderr)
        return 2
    try:
        return Fuzzer(args).main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
