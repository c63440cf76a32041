# -*- test-case-name: test.unit.test_turn_fastpath,test.interop.test_fastpath -*-
"""The few libbpf calls the fast path needs, through C{ctypes} on Debian's C{libbpf1}.

There is no maintained Python binding of libbpf on PyPI (BCC's compiles C at run time
with LLVM, hundreds of MB); the calls used here are eight, all of the stable libbpf 1.x
API, so they are declared below (docs/architecture.md, "Dependencies").

The program is attached with a tcx link (Linux 6.6 and newer): the link belongs to this
process's file descriptor, so when the process ends, however it ends, the kernel detaches
the program and frees its maps. Nothing is pinned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

__all__ = ["BpfError", "BpfObject", "Map", "TCX_EGRESS", "TCX_INGRESS", "library"]

#: C{enum bpf_attach_type} values of the tcx hooks (uapi/linux/bpf.h, Linux 6.6).
TCX_INGRESS = 46
TCX_EGRESS = 47

_LIBRARY: Any = None
_messages: list[str] = []


class BpfError(Exception):
    """A libbpf call failed; the message says which and why."""


def library() -> Any:
    """libbpf, loaded once; L{BpfError} if it is not installed."""
    global _LIBRARY
    if _LIBRARY is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise BpfError(f"libbpf is not installed ({e})") from None
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        for fname, restype, argtypes in (
            ("bpf_object__open_file", vp, [cp, vp]),
            ("bpf_object__load", ci, [vp]),
            ("bpf_object__close", None, [vp]),
            ("bpf_object__find_program_by_name", vp, [vp, cp]),
            ("bpf_object__find_map_fd_by_name", ci, [vp, cp]),
            ("bpf_program__fd", ci, [vp]),
            ("bpf_map_update_elem", ci, [ci, vp, vp, ctypes.c_uint64]),
            ("bpf_map_delete_elem", ci, [ci, vp]),
            ("bpf_map_lookup_elem", ci, [ci, vp, vp]),
            ("bpf_link_create", ci, [ci, ci, ctypes.c_int, vp]),
            ("libbpf_get_error", ctypes.c_long, [vp]),
        ):
            function = getattr(lib, fname)
            function.restype, function.argtypes = restype, argtypes
        _silence(lib)
        _LIBRARY = lib
    return _LIBRARY


# libbpf's messages (a verifier log, a missing feature) go to this list instead of the
# process's standard error; the last ones make the error text.
_PRINT = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


@_PRINT
def _printer(level: int, fmt: bytes, args: Any) -> int:
    _messages.append(fmt.decode(errors="replace").strip())
    del _messages[:-20]
    return 0


def _silence(lib: Any) -> None:
    lib.libbpf_set_print.restype = ctypes.c_void_p
    lib.libbpf_set_print.argtypes = [_PRINT]
    lib.libbpf_set_print(_printer)


def _fail(what: str, code: int) -> BpfError:
    reason = os.strerror(abs(code)) if code else "failed"
    return BpfError(f"{what}: {reason}")


class Map:
    """A BPF map of fixed key and value sizes, by file descriptor."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    def update(self, key: bytes, value: bytes) -> None:
        """Insert or replace C{key}."""
        rc = library().bpf_map_update_elem(self.fd, key, value, 0)
        if rc:
            raise _fail(f"updating map {self.name}", rc)

    def delete(self, key: bytes) -> bool:
        """Remove C{key}; C{False} if it was not there."""
        return library().bpf_map_delete_elem(self.fd, key) == 0

    def lookup(self, key: bytes, size: int) -> bytes | None:
        """The value of C{key} (C{size} bytes), or C{None}."""
        value = ctypes.create_string_buffer(size)
        if library().bpf_map_lookup_elem(self.fd, key, value):
            return None
        return value.raw


class BpfObject:
    """A compiled BPF object file, loaded into the kernel (its programs verified and its
    maps created); L{close} frees whatever no link holds."""

    def __init__(self, path: str) -> None:
        lib = library()
        _messages.clear()
        obj = lib.bpf_object__open_file(path.encode(), None)
        if not obj or lib.libbpf_get_error(obj):
            raise BpfError(f"cannot open {path}")
        self._obj = obj
        rc = lib.bpf_object__load(obj)
        if rc:
            detail = next((m for m in reversed(_messages) if m), "")
            self.close()
            raise BpfError(f"the kernel refused {os.path.basename(path)}: "
                           f"{os.strerror(abs(rc))}" + (f" ({detail})" if detail else ""))
        self._links: list[int] = []

    def map(self, name: str) -> Map:
        """The map called C{name}."""
        fd = library().bpf_object__find_map_fd_by_name(self._obj, name.encode())
        if fd < 0:
            raise BpfError(f"no map {name}")
        return Map(fd, name)

    def attachTcx(self, program: str, ifindex: int, attachType: int = TCX_INGRESS) -> int:
        """Attach C{program} to interface C{ifindex}'s tcx hook; the link's descriptor
        (closing it detaches)."""
        lib = library()
        prog = lib.bpf_object__find_program_by_name(self._obj, program.encode())
        if not prog:
            raise BpfError(f"no program {program}")
        link = lib.bpf_link_create(lib.bpf_program__fd(prog), ifindex, attachType, None)
        if link < 0:
            raise _fail(f"attaching {program} to interface {ifindex}",
                        ctypes.get_errno() or link)
        self._links.append(link)
        return int(link)

    def close(self) -> None:
        """Detach every link made here and free the object."""
        for link in getattr(self, "_links", []):
            os.close(link)
        self._links = []
        if self._obj:
            library().bpf_object__close(self._obj)
            self._obj = None
