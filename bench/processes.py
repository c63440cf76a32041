"""What the benchmarks in C{bench/} share: reading a process's CPU time, threads and
memory from C{/proc}, free loopback ports, CPU pinning, and starting and stopping the
servers they measure (p2pnet under C{twistd}, coturn's C{turnserver}).

The scripts run as C{python bench/X.py}, so C{bench/} is C{sys.path[0]} and they import
this module as C{processes}. Linux only (C{/proc}, C{sched_setaffinity}).
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

LOOPBACK = "127.0.0.1"
#: Clock ticks per second: the unit of the CPU times in C{/proc/<pid>/stat}.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- /proc ----------------------------------------------------------------------------------


def cpuTimes(pid: int) -> tuple[float, float]:
    """C{(user, system)} CPU seconds of process C{pid} so far, every thread, from
    C{/proc/<pid>/stat}."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpuSeconds(pid: int) -> float:
    """User + system CPU seconds of process C{pid} so far, every thread."""
    user, system = cpuTimes(pid)
    return user + system


def _status(pid: int, key: str) -> str:
    """The value of line C{key:} of C{/proc/<pid>/status}."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
    raise RuntimeError(f"no {key} in /proc/{pid}/status (has the process exited?)")


def threadCount(pid: int) -> int:
    """Threads of process C{pid}."""
    return int(_status(pid, "Threads"))


def rssKiB(pid: int) -> int:
    """Resident set size of process C{pid} in KiB (C{VmRSS})."""
    return int(_status(pid, "VmRSS").split()[0])


def rssBytes(pid: int) -> int:
    """Resident set size of process C{pid} in bytes (C{VmRSS}, so a multiple of 1024)."""
    return rssKiB(pid) * 1024


# -- ports and CPUs -------------------------------------------------------------------------


def freePort(above: int = 0) -> int:
    """A port free on 127.0.0.1 for both UDP and TCP a moment ago, greater than C{above}
    (e.g. above a relay port range the server under test allocates from)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = udp.getsockname()[1]
            if port <= above:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def splitCpus(pin: bool = True) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """C{(server CPUs, load CPUs)}: the first CPU this process may use for the server and
    the others for the load generator, when C{pin} and there are at least two; otherwise
    C{((), ())}, i.e. not pinned."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin and len(cpus) >= 2:
        return (cpus[0],), tuple(cpus[1:])
    return (), ()


def pinSelf(cpus: Iterable[int]) -> None:
    """Restrict this process (and the threads and processes it makes from now on) to
    C{cpus}; nothing when C{cpus} is empty or pinning is not possible."""
    cpus = tuple(cpus)
    if not cpus:
        return
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError):
        pass


def pinTo(cpus: tuple[int, ...]) -> Callable[[], None] | None:
    """A C{preexec_fn} restricting the child (and every thread it makes) to C{cpus};
    C{None} (no restriction) when C{cpus} is empty."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def raiseFileLimit(want: int = 65536) -> None:
    """Raise this process's soft open-file limit to C{want} (or the hard limit, if lower);
    e.g. 10,000 TURN allocations need 10,000 sockets on each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _preexec(cpus: tuple[int, ...], files: int) -> Callable[[], None] | None:
    """A C{preexec_fn}: pin to C{cpus} and raise the open-file limit to C{files} (0: as
    it is)."""
    pin = pinTo(cpus)
    if not files:
        return pin

    def preexec() -> None:
        raiseFileLimit(files)
        if pin is not None:
            pin()

    return preexec


# -- servers --------------------------------------------------------------------------------


def twistdCommand() -> list[str]:
    """This Python's twistd (the venv's when run with .venv/bin/python)."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [sys.executable, script]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def startP2pnet(tmp: str, options: list[str], cpus: tuple[int, ...] = (),
                files: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """Start C{twistd -n p2pnet OPTIONS} (no pid file, log in C{tmp}, working directory
    C{tmp}, output discarded); it does not wait for the server to listen (L{waitUntil}).

    @param options: the p2pnet plugin's options (C{--services}, C{--listen}, ports,
        C{--data-dir}: give one inside C{tmp}).
    @param cpus: CPUs to pin the server to (empty: not pinned).
    @param files: open-file limit to give the server (0: inherited).
    @return: C{(process, log file)}.
    """
    log = os.path.join(tmp, "p2pnet.log")
    argv = [*twistdCommand(), "-n", "--pidfile=", f"--logfile={log}", "p2pnet", *options]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=tmp, preexec_fn=_preexec(cpus, files))
    return proc, log


def startCoturn(tmp: str, turnserver: str, port: int, options: list[str],
                cpus: tuple[int, ...] = (), files: int = 0) -> tuple[subprocess.Popen[bytes], str]:
    """Start coturn's C{turnserver} on 127.0.0.1:C{port} (relaying from 127.0.0.1) without
    TLS, DTLS or CLI, with its log, pid file and user database in C{tmp}, output
    discarded; it does not wait (L{waitUntil}).

    @param options: more C{turnserver} options (C{--stun-only}, C{--lt-cred-mech}, ...).
    @param cpus: CPUs to pin it to (empty: not pinned).
    @param files: open-file limit to give it (0: inherited).
    @return: C{(process, log file)}.
    """
    log = os.path.join(tmp, "coturn.log")
    argv = [turnserver, "-n", "--listening-ip", LOOPBACK, "--relay-ip", LOOPBACK,
            "--listening-port", str(port), "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", log, "--simple-log", "--pidfile", os.path.join(tmp, "coturn.pid"),
            "--userdb", os.path.join(tmp, "turndb"), *options]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, cwd=tmp, preexec_fn=_preexec(cpus, files))
    return proc, log


def coturnVersion(turnserver: str) -> str:
    """C{turnserver --version}, e.g. C{4.6.1}."""
    return subprocess.run([turnserver, "--version"], capture_output=True, text=True,
                          timeout=10).stdout.strip()


def waitUntil(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: str,
              timeout: float = 20.0, what: str = "the server") -> None:
    """Call C{ready()} (which should return within a second or so) until it returns true.

    If C{proc} exits or C{timeout} seconds pass first, stop C{proc} and exit with the end
    of its C{log}.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if ready():
            return
    status = proc.poll()
    stop(proc)
    why = (f"exited with status {status}" if status is not None
           else f"was not ready within {timeout:g} s")
    try:
        with open(log, errors="replace") as f:
            tail = f.read()[-4000:]
    except OSError:
        tail = "(no log)"
    sys.exit(f"{what} {why}; its log {log}:\n{tail}")


def tcpListening(port: int) -> Callable[[], bool]:
    """A C{ready} for L{waitUntil}: something accepts TCP connections on 127.0.0.1:C{port}."""

    def ready() -> bool:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
            return False

    return ready


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 10 s; waits for the process either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
