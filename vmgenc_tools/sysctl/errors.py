"""One errno → exception table for sysctlbyname(3) and kenv(2).

Every backend (``libc`` through ctypes, ``sim`` over the simulated VM's
state) raises through :func:`raise_for_errno`, so callers see the same
exceptions and the same one-line messages whichever backend answered.
"""

from __future__ import annotations

import errno
import os

VMGENC_HINT = (
    "the vmgenc driver is not attached: 'kldload vmgenc' or vmgenc_load=\"YES\" in "
    "/boot/loader.conf, and the VM needs a VM Generation ID device"
)


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


def _noent(name: str) -> str:
    msg = f"no sysctl {name}"
    if name.startswith("dev.vmgenc"):
        msg += f" ({VMGENC_HINT})"
    return msg


_TABLE: dict[int, tuple[type[SysctlError], object]] = {
    errno.ENOENT: (NoSuchOid, _noent),
    errno.EISDIR: (IsANode, "sysctl {name} is a node, not a value: name a leaf below it"),
    errno.ENOMEM: (BufferTooSmall, "sysctl {name}: buffer too small"),
    errno.EPERM: (NotPermitted, "sysctl {name}: not permitted (read-only, or not root)"),
    errno.EACCES: (NotPermitted, "sysctl {name}: permission denied (run as root)"),
    errno.EINVAL: (InvalidValue, "sysctl {name}: invalid value"),
    errno.ENOTDIR: (NotADirectory, "sysctl {name}: the name goes on past a leaf"),
}


def error_for(err: int, name: str) -> SysctlError:
    """The exception for ``err`` raised by a call on ``name``."""
    cls, fmt = _TABLE.get(err, (SysctlError, "sysctl {name}: {strerror}"))
    msg = fmt(name) if callable(fmt) else str(fmt).format(name=name, strerror=os.strerror(err))
    return cls(err, name, msg)


def raise_for_errno(err: int, name: str) -> None:
    raise error_for(err, name)
