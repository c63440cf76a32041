# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""Loading the fast path's BPF program and attaching it (L{loadKernelFastPath}).

The object file C{turn_fastpath.bpf.o} is built from C{turn_fastpath.bpf.c} next to this
module by C{make fastpath} (Debian's clang and libbpf headers; C{make run} and C{make
test} build it). The program is attached to the tcx ingress hook of every interface of
the host, loopback included: a client's datagram may arrive on any of them, and the
program leaves alone whatever its maps do not name.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

from p2pnet.codecs.fastpath_maps import (
    COUNTERS_SIZE,
    STATS,
    Counters,
    allocationKey,
    unpackCounters,
)
from p2pnet.fastpath.libbpf import BpfError, BpfObject, Map

__all__ = ["OBJECT_FILE", "FastPathUnavailable", "KernelFastPath", "loadKernelFastPath"]

#: The compiled program (built by C{make fastpath}).
OBJECT_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "turn_fastpath.bpf.o")
PROGRAM = "turn_fastpath"


class FastPathUnavailable(Exception):
    """The fast path cannot run here; the message says why, in one line."""


def _possibleCpus() -> int:
    """How many CPUs a per-CPU map has a slot for (C{/sys/devices/system/cpu/possible})."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            text = f.read().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


class KernelFastPath:
    """The loaded program, its maps, and its links to the interfaces.

    @ivar forward: the C{fwd} map (client ChannelData -> peer).
    @ivar reverse: the C{rev} map (peer datagram -> client ChannelData).
    @ivar interfaces: the names of the interfaces it is attached to.
    """

    def __init__(self, obj: BpfObject, interfaces: list[str]) -> None:
        self._obj = obj
        self.forward: Map = obj.map("fwd")
        self.reverse: Map = obj.map("rev")
        self._counters = obj.map("alloc_counters")
        self._stats = obj.map("stats")
        self._cpus = _possibleCpus()
        self.interfaces = interfaces

    def track(self, allocation: int) -> None:
        """Start counting for allocation number C{allocation}."""
        self._counters.update(allocationKey(allocation), bytes(COUNTERS_SIZE))

    def counters(self, allocation: int) -> Counters:
        """What the program forwarded for C{allocation} so far."""
        value = self._counters.lookup(allocationKey(allocation), COUNTERS_SIZE)
        return unpackCounters(value) if value is not None else Counters(0, 0, 0, 0)

    def untrack(self, allocation: int) -> None:
        """Stop counting for C{allocation}."""
        self._counters.delete(allocationKey(allocation))

    def stats(self) -> dict[str, int]:
        """The program's own counters (every CPU's added), by name."""
        totals = {}
        for index, name in enumerate(STATS):
            value = self._stats.lookup(struct.pack("=I", index), 8 * self._cpus)
            totals[name] = sum(struct.unpack(f"={self._cpus}Q", value)) if value else 0
        return totals

    def close(self) -> None:
        """Detach from every interface and free the program and its maps."""
        self._obj.close()


def loadKernelFastPath(path: str = OBJECT_FILE) -> KernelFastPath:
    """Load the program and attach it to every interface.

    @raise FastPathUnavailable: not Linux, not built, no libbpf, no privilege, a kernel
        without BPF or tcx (before 6.6): the message says which.
    """
    if not sys.platform.startswith("linux"):
        raise FastPathUnavailable("needs Linux")
    if not os.path.exists(path):
        raise FastPathUnavailable(f"{os.path.basename(path)} is not built (make fastpath "
                                  "builds it; it needs clang and libbpf-dev)")
    try:
        obj = BpfObject(path)
    except BpfError as e:
        text = str(e)
        if "Operation not permitted" in text or "Permission denied" in text:
            text = ("no privilege to load BPF programs (run as root, or with CAP_BPF and "
                    "CAP_NET_ADMIN)")
        raise FastPathUnavailable(text) from None
    names = []
    try:
        for index, name in socket.if_nameindex():
            obj.attachTcx(PROGRAM, index)
            names.append(name)
    except BpfError as e:
        obj.close()
        raise FastPathUnavailable(f"{e} (tcx needs Linux 6.6 or newer)") from None
    return KernelFastPath(obj, names)
