"""The ``sim`` backend: sysctlbyname(3)/kenv(2) semantics over a simulated VM's state.

The semantics mirror the kernel's (facts §4.2) and the C test library's, so
the same test matrix passes against both backends.
"""

from __future__ import annotations

import errno
import os

from .. import simstate
from .errors import error_for

MAX_NEWLEN = 1024
KENV_MNAMELEN = 128  # sys/kenv.h: longest name kenv(2) accepts


def _caller_is_root() -> bool:
    """The simulated caller's credential: root unless ``VMGENC_SIM_UID`` names another uid.

    A simulated VM belongs to whoever made it, so its processes are root in it;
    ``VMGENC_SIM_UID=1001`` plays an unprivileged caller (the C stand-in reads
    the same variable).
    """
    return os.environ.get("VMGENC_SIM_UID", "0") in ("", "0")


class SimBackend:
    """Answers from ``${root}/.vmgenc-sim/kernel.tab``."""

    name = "sim"

    def __init__(self, root: str) -> None:
        self.root = root

    def sysctlbyname(
        self, name: str, oldlen: int | None, new: bytes | None = None
    ) -> tuple[bytes | None, int]:
        """Mirror of ``sysctlbyname(name, oldp, oldlenp, newp, newlen)``.

        ``oldlen`` None means ``oldp == NULL``.  Returns the bytes copied out
        (None when ``oldp`` is NULL) and ``*oldlenp`` after the call.  On a
        short buffer raises ENOMEM, leaving ``*oldlenp`` as it was (the
        FreeBSD 13+ ``__sysctlbyname`` rule).
        """
        if oldlen is not None and oldlen < 0:
            raise ValueError(f"oldlen must be >= 0, not {oldlen}")
        if new is None:
            return self._read(self._node(simstate.load(self.root), name), name, oldlen)
        with simstate.locked(self.root):
            state = simstate.load(self.root)
            node = self._node(state, name)
            # sysctl_root checks both before the handler runs: a read-only OID, then
            # priv_check(PRIV_SYSCTL_WRITE) for a caller that is not root.
            if not node.writable or not _caller_is_root():
                raise error_for(errno.EPERM, name)
            out = self._read(node, name, oldlen) if oldlen is not None else (None, 0)
            self._write(node, name, bytes(new))
            simstate.save(self.root, state)
            return out

    @staticmethod
    def _node(state: simstate.KernelState, name: str) -> simstate.Node:
        if not name:  # kern___sysctlbyname: a name of length 0 is EINVAL
            raise error_for(errno.EINVAL, name)
        node = state.lookup(name)
        if node is None:
            raise error_for(errno.ENOENT, name)
        if node.kind == "node":
            raise error_for(errno.EISDIR, name)
        return node

    @staticmethod
    def _read(node: simstate.Node, name: str, oldlen: int | None) -> tuple[bytes | None, int]:
        value = node.value
        if oldlen is None:
            return None, len(value)
        if oldlen < len(value):
            raise error_for(errno.ENOMEM, name)
        return value, len(value)

    @staticmethod
    def _write(node: simstate.Node, name: str, new: bytes) -> None:
        size = simstate.KINDS[node.kind]
        if size:  # sysctl_handle_int/long: SYSCTL_IN of exactly size bytes; more are ignored
            if len(new) < size:
                raise error_for(errno.EINVAL, name)
            node.value = new[:size]
        elif node.kind == "string":
            if len(new) >= MAX_NEWLEN:
                raise error_for(errno.EINVAL, name)
            node.value = new.split(b"\0", 1)[0] + b"\0"
        else:
            node.value = new

    def kenv_get(self, name: str) -> str | None:
        """``kenv(KENV_GET, name, …)``: None when unset, ENAMETOOLONG for a long name."""
        if "\0" in name:
            return None
        if len(name.encode()) > KENV_MNAMELEN:
            raise error_for(errno.ENAMETOOLONG, name, "kenv")
        return simstate.load(self.root).kenv.get(name)

    def interfaces(self) -> dict[str, str]:
        """Interface name → MAC, as the simulated VM lists them."""
        return dict(simstate.load(self.root).ifaces)

    def children(self, name: str) -> list[str]:
        """Immediate child components of the node ``name``."""
        return simstate.load(self.root).children(name)
