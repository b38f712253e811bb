"""sysctl(3) and kenv(2) for the handler: one small backend interface, two backends.

A backend offers three calls:

- ``sysctlbyname(name, oldlen, new) -> (data, oldlenp)``: the syscall's
  semantics (``oldlen`` None is a NULL ``oldp``), errors raised from
  :mod:`.errors`;
- ``kenv_get(name) -> str | None`` (ENOENT is None, not an error);
- ``interfaces() -> {ifname: mac}``.

``libc`` (:mod:`.libc`, the only module that imports ctypes) calls FreeBSD's
C library, or the library named by ``VMGENC_LIBC``; ``sim`` (:mod:`.sim`)
reads a simulated VM's state.  The typed helpers below are written once, on
top of that interface.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from .. import simstate
from .errors import (
    BackendError,
    BufferTooSmall,
    IsANode,
    NoSuchOid,
    SysctlError,
    error_for,
)

__all__ = [
    "Backend", "BackendError", "get_backend", "read_bytes", "read_string", "read_int",
    "write_string", "write_ulong", "vmgenc_units", "SysctlError", "NoSuchOid", "IsANode",
]


TYPE_CHECKING = False  # typing costs ~6 ms of imports on the fast path
if TYPE_CHECKING:
    from typing import Protocol

    class Backend(Protocol):
        name: str

        def sysctlbyname(
            self, name: str, oldlen: int | None, new: bytes | None = None
        ) -> tuple[bytes | None, int]: ...

        def kenv_get(self, name: str) -> str | None: ...

        def interfaces(self) -> dict[str, str]: ...
else:
    class Backend:
        """What a backend offers (see the module docstring); a Protocol for type checkers."""


NOT_FREEBSD = "not FreeBSD: use `vmgenctl --root DIR sim init` to try the simulation"


def get_backend(root: str = "/", name: str | None = None) -> Backend:
    """Pick the backend: ``name`` > ``VMGENC_SYSCTL_BACKEND`` > ``sim`` for a simulated
    ``root`` > ``libc`` on FreeBSD (or with ``VMGENC_LIBC`` set) > ``NOT_FREEBSD`` error."""
    name = name or os.environ.get("VMGENC_SYSCTL_BACKEND") or None
    if name is None:
        if simstate.is_simulated(root):
            name = "sim"
        elif sys.platform.startswith("freebsd") or os.environ.get("VMGENC_LIBC"):
            name = "libc"
        else:
            raise BackendError(NOT_FREEBSD)
    if name == "sim":
        from .sim import SimBackend

        return SimBackend(root)
    if name == "libc":
        from .libc import LibcBackend

        return LibcBackend(os.environ.get("VMGENC_LIBC") or None)
    raise BackendError(f"unknown sysctl backend {name!r}: use 'libc' or 'sim'")


def read_bytes(backend: Backend, name: str) -> bytes:
    """Read a value of any size: ask the size, then grow and retry on ENOMEM.

    ``*oldlenp`` is not trusted after ENOMEM (FreeBSD 13+ leaves it unchanged).
    """
    _, size = backend.sysctlbyname(name, None)
    size = max(size, 16)
    for _ in range(8):
        try:
            data, n = backend.sysctlbyname(name, size)
            return (data or b"")[:n]
        except BufferTooSmall:
            size *= 2
    raise error_for(errno.ENOMEM, name)


def read_string(backend: Backend, name: str) -> str:
    """A string value, up to its first NUL."""
    return read_bytes(backend, name).split(b"\0", 1)[0].decode("utf-8", "replace")


def read_int(backend: Backend, name: str, signed: bool = False) -> int:
    """An integer value of 1, 2, 4 or 8 bytes, in the machine's byte order."""
    raw = read_bytes(backend, name)
    if len(raw) not in (1, 2, 4, 8):
        raise SysctlError(errno.EINVAL, name, f"sysctl {name}: {len(raw)} bytes is not an integer")
    return int.from_bytes(raw, sys.byteorder, signed=signed)


def write_string(backend: Backend, name: str, value: str) -> None:
    """Set a string OID (the kernel stores it up to the first NUL)."""
    backend.sysctlbyname(name, None, value.encode())


def write_ulong(backend: Backend, name: str, value: int) -> None:
    """Set an unsigned long OID: a C ``unsigned long`` in native size and order."""
    size = struct.calcsize("L")
    backend.sysctlbyname(name, None, int(value).to_bytes(size, sys.byteorder, signed=False))


def vmgenc_units(backend: Backend) -> list[int]:
    """Units present: probe ``dev.vmgenc.0``, ``.1``, … until one is missing.

    newbus numbers vmgenc units contiguously (a failed attach frees its unit,
    and the driver has no detach), so the first ENOENT ends the list.
    """
    units: list[int] = []
    while True:
        n = len(units)
        try:
            backend.sysctlbyname(f"dev.vmgenc.{n}", None)
        except IsANode:
            pass
        except NoSuchOid:
            return units
        units.append(n)
