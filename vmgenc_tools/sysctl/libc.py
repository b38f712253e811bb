"""The ``libc`` backend: sysctlbyname(3) and kenv(2) through ctypes.

This is the only module of the project that imports ctypes.  It loads
FreeBSD's C library, or the library named by ``libpath`` (``VMGENC_LIBC``):
the test suite points it at ``tests/csrc/fakesysctl.c`` built as a shared
library, so the marshalling below runs for real on any OS.

Prototypes are declared exactly (facts §4.2)::

    int sysctlbyname(const char *, void *, size_t *, const void *, size_t);
    int kenv(int action, const char *name, char *value, int len);

Every failure goes through :func:`.errors.error_for`.  After ENOMEM the
partial copy and ``*oldlenp`` are not trusted (FreeBSD 13+ leaves
``*oldlenp`` unchanged): :class:`.errors.BufferTooSmall` is raised and
callers (``read_bytes``) grow the buffer and retry.
"""

from __future__ import annotations

import ctypes
import errno

from .errors import BackendError, error_for

TYPE_CHECKING = False  # not typing's: the fast path does not import typing
if TYPE_CHECKING:
    from typing import Any

KENV_GET = 0
KENV_MVALLEN = 128  # sys/kenv.h: longest value, without its NUL
_KENV_MAX_BUFFER = 1 << 16
_FAKE_IFACES = "vmgenc_fake_interfaces"

_SIZE_P = ctypes.POINTER(ctypes.c_size_t)
_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "sysctlbyname": (
        ctypes.c_int,
        [ctypes.c_char_p, ctypes.c_void_p, _SIZE_P, ctypes.c_void_p, ctypes.c_size_t],
    ),
    "kenv": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]),
    _FAKE_IFACES: (ctypes.c_int, [ctypes.c_char_p, _SIZE_P]),
}


def _bind(lib: ctypes.CDLL, path: str, symbol: str, required: bool = True) -> Any:
    """``symbol`` from ``lib`` with its exact prototype (None if optional and absent)."""
    try:
        fn = getattr(lib, symbol)
    except AttributeError:
        if not required:
            return None
        raise BackendError(
            f"{path} has no {symbol}(): not FreeBSD's C library "
            "(on another OS use `vmgenctl --root DIR sim init` to try the simulation)"
        ) from None
    fn.restype, fn.argtypes = _PROTOTYPES[symbol]
    return fn


def _errno() -> int:
    return ctypes.get_errno() or errno.EIO


# The C library's soname where it is stable (FreeBSD since 7.0, glibc): tried before
# ctypes.util.find_library, which on FreeBSD runs ldconfig(8) at every start.
_LIBC_SONAMES = ("libc.so.7", "libc.so.6")


def _find_libc() -> str | None:
    for name in _LIBC_SONAMES:
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    from ctypes.util import find_library

    return find_library("c")


class LibcBackend:
    """sysctlbyname(3)/kenv(2) from a C library loaded with ctypes."""

    name = "libc"

    def __init__(self, libpath: str | None = None) -> None:
        path = libpath or _find_libc()
        if not path:
            raise BackendError("cannot find the C library: set VMGENC_LIBC to its path")
        try:
            # A private handle (RTLD_LOCAL): the library's own symbols are the
            # ones called, even if another loaded library exports the same names.
            self._lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise BackendError(f"cannot load the C library {path}: {e}") from None
        self.libpath = path
        self._sysctlbyname = _bind(self._lib, path, "sysctlbyname")
        self._kenv = _bind(self._lib, path, "kenv")
        self._fake_interfaces = _bind(self._lib, path, _FAKE_IFACES, required=False)

    def __repr__(self) -> str:
        return f"LibcBackend({self.libpath!r})"

    def sysctlbyname(
        self, name: str, oldlen: int | None, new: bytes | None = None
    ) -> tuple[bytes | None, int]:
        """``sysctlbyname(name, oldp, oldlenp, newp, newlen)``; see :class:`..Backend`.

        ``oldlen`` None passes a NULL ``oldp`` (a size query; for a pure write
        ``oldlenp`` is NULL too and the size returned is 0).
        """
        if oldlen is not None and oldlen < 0:
            raise ValueError(f"oldlen must be >= 0, not {oldlen}")
        if "\0" in name:
            raise error_for(errno.ENOENT, name)
        size = ctypes.c_size_t(oldlen or 0)
        if oldlen is None:
            oldp = None
            sizep = None if new is not None else ctypes.byref(size)
        else:
            oldp = ctypes.create_string_buffer(max(oldlen, 1))
            sizep = ctypes.byref(size)
        newp, newlen = None, 0
        if new is not None:
            data = bytes(new)
            newp, newlen = ctypes.create_string_buffer(data, max(len(data), 1)), len(data)
        rc = self._sysctlbyname(name.encode(), oldp, sizep, newp, newlen)
        if rc != 0:
            raise error_for(_errno(), name)
        if oldp is None or oldlen is None:
            return None, size.value if sizep is not None else 0
        return oldp.raw[: min(size.value, oldlen)], size.value

    def kenv_get(self, name: str) -> str | None:
        """``kenv(KENV_GET, name, …)``; None when the variable is not set (ENOENT)."""
        if "\0" in name:
            return None
        bufsize = KENV_MVALLEN + 1
        while True:
            buf = ctypes.create_string_buffer(bufsize)
            n = self._kenv(KENV_GET, name.encode(), buf, bufsize)
            if n < 0:
                err = _errno()
                if err == errno.ENOENT:
                    return None
                raise error_for(err, name, "kenv")
            raw = buf.raw[: min(n, bufsize)]
            # n == bufsize with no NUL: the copy was truncated (the kernel's
            # kenv_mvallen is a tunable, so a value may exceed KENV_MVALLEN): grow, retry.
            if b"\0" in raw or n < bufsize or bufsize >= _KENV_MAX_BUFFER:
                return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            bufsize *= 4

    def interfaces(self) -> dict[str, str]:
        """Interface name → MAC (link-level address)."""
        if self._fake_interfaces is not None:
            return self._interfaces_from_test_library()
        import psutil

        out: dict[str, str] = {}
        for ifname, addrs in psutil.net_if_addrs().items():
            for addr in addrs:
                if addr.family == psutil.AF_LINK and addr.address:
                    out[ifname] = addr.address
                    break
        return out

    def _interfaces_from_test_library(self) -> dict[str, str]:
        """The stand-in library's list: ``ifname\\tmac\\n`` lines, sized like a sysctl."""
        size = ctypes.c_size_t(0)
        if self._fake_interfaces(None, ctypes.byref(size)) != 0:
            raise error_for(_errno(), _FAKE_IFACES)
        bufsize = max(size.value, 64)
        for _ in range(8):
            buf = ctypes.create_string_buffer(bufsize)
            size = ctypes.c_size_t(bufsize)
            if self._fake_interfaces(buf, ctypes.byref(size)) == 0:
                text = buf.raw[: size.value].decode("utf-8", "replace")
                pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
                return {ifname: mac for ifname, mac in pairs}
            err = _errno()
            if err != errno.ENOMEM:
                raise error_for(err, _FAKE_IFACES)
            bufsize *= 2
        raise error_for(errno.ENOMEM, _FAKE_IFACES)
