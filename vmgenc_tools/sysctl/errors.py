"""One errno → exception table for sysctlbyname(3) and kenv(2).

Every backend (``libc`` through ctypes, ``sim`` over the simulated VM's
state) raises through :func:`error_for`, so callers see the same exceptions
and the same one-line messages whichever backend answered.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

LOAD_HINT = ("'kldload vmgenc' or vmgenc_load=\"YES\" in /boot/loader.conf, "
             "and the VM needs a VM Generation ID device")
VMGENC_HINT = "the vmgenc driver is not attached: " + LOAD_HINT


class BackendError(RuntimeError):
    """No usable sysctl backend (wrong OS, unknown backend name, missing library)."""


class SysctlError(OSError):
    """A sysctl(3)/kenv(2) call failed; ``errno`` and ``name`` say which and why."""

    def __init__(self, err: int, name: str, message: str) -> None:
        super().__init__(err, message)
        self.name = name

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class NoSuchOid(SysctlError):
    """ENOENT: the name does not exist."""


class IsANode(SysctlError):
    """EISDIR: the name is a node with no value (e.g. ``dev.vmgenc.0``)."""


class BufferTooSmall(SysctlError):
    """ENOMEM: the buffer was too small (callers grow and retry)."""


class NotPermitted(SysctlError):
    """EPERM/EACCES: not root, or a read-only node."""


class InvalidValue(SysctlError):
    """EINVAL: the new value has the wrong size or form."""


class NotADirectory(SysctlError):
    """ENOTDIR: the name goes on past a leaf."""


def _noent(name: str, what: str) -> str:
    msg = f"no {what} {name}"
    if what == "sysctl" and (name + ".").startswith("dev.vmgenc."):
        msg += f" ({VMGENC_HINT})"
    return msg


_TABLE: dict[int, tuple[type[SysctlError], Callable[[str, str], str] | str]] = {
    errno.ENOENT: (NoSuchOid, _noent),
    errno.EISDIR: (IsANode, "{what} {name} is a node, not a value: name a leaf below it"),
    errno.ENOMEM: (BufferTooSmall, "{what} {name}: buffer too small"),
    errno.EPERM: (NotPermitted, "{what} {name}: not permitted (read-only, or not root)"),
    errno.EACCES: (NotPermitted, "{what} {name}: permission denied (run as root)"),
    errno.EINVAL: (InvalidValue, "{what} {name}: invalid value"),
    errno.ENOTDIR: (NotADirectory, "{what} {name}: the name goes on past a leaf"),
}


def error_for(err: int, name: str, what: str = "sysctl") -> SysctlError:
    """The exception for ``err`` raised by a ``what`` (sysctl, kenv) call on ``name``."""
    cls, fmt = _TABLE.get(err, (SysctlError, "{what} {name}: {strerror}"))
    if callable(fmt):
        msg = fmt(name, what)
    else:
        msg = str(fmt).format(what=what, name=name, strerror=os.strerror(err))
    return cls(err, name, msg)
