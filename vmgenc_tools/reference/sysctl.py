"""The simulated kernel's sysctl tree: OID creation, ``sysctlbyname`` and sysctl(8).

The tree itself is ``kernel.tab`` (:mod:`vmgenc_tools.simstate`) and the
``sysctlbyname(3)`` semantics are those of the ``sim`` backend
(:class:`vmgenc_tools.sysctl.sim.SimBackend`: ENOENT, EISDIR, ENOMEM with
``*oldlenp`` unchanged, the NULL-buffer size query, EPERM on a read-only OID).
This module adds what the kernel adds on top:

- the ``SYSCTL_ADD_*`` calls drivers use to create OIDs;
- :func:`sysctlbyname_c`, the same call with C-shaped ``oldp``/``oldlenp``, where
  what ENOMEM does to the caller's buffer and ``*oldlenp`` shows;
- OID handlers with rules of their own (``hw.bus.devctl_queue`` only accepts 0
  at run time: ``sysctl_devctl_queue``);
- :class:`Sysctl8`, the output of ``sysctl(8)`` (``sbin/sysctl/sysctl.c``
  ``parse``/``show_var``/``sysctl_all``): an opaque OID with an unknown format
  prints nothing, ``-x`` dumps it, ``-o`` dumps at most 16 bytes and appends
  ``...`` when the ``size_t`` loop counter wraps (exactly 16 bytes), ``-b`` writes
  the raw bytes.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from dataclasses import dataclass

from .. import simstate
from ..sysctl.errors import SysctlError, error_for
from ..sysctl.sim import SimBackend

DEVCTL_QUEUE_OID = "hw.bus.devctl_queue"

# CTLTYPE_* numbers (sys/sysctl.h), used in sysctl(8)'s "is type %d" message.
CTLTYPE = {"node": 1, "int": 2, "string": 3, "opaque": 5, "uint": 6, "long": 7, "ulong": 8}
TYPENAME = {"node": "node", "int": "integer", "string": "string", "opaque": "opaque",
            "uint": "unsigned integer", "long": "long integer", "ulong": "unsigned long"}
_SIGNED = {"int": True, "long": True, "uint": False, "ulong": False}
_KNOWN_STRUCTS = ("S,timeval",)


# -- OID creation (the kernel side) ---------------------------------------------------------

def SYSCTL_ADD_NODE(kernel: simstate.KernelState, name: str, descr: str = "") -> None:  # noqa: N802
    """A node without a handler (reads give EISDIR)."""
    kernel.set(name, "node", descr=descr)


def SYSCTL_ADD_OPAQUE(kernel: simstate.KernelState, name: str, value: bytes,  # noqa: N802
                      fmt: str, descr: str, access: str = "rd") -> None:
    """``CTLTYPE_OPAQUE``, handler ``sysctl_handle_opaque``: exports the bytes as they are."""
    kernel.set(name, "opaque", value, fmt=fmt, access=access, descr=descr)


def SYSCTL_ADD_STRING(kernel: simstate.KernelState, name: str, value: str,  # noqa: N802
                      descr: str = "", access: str = "rd") -> None:
    kernel.set(name, "string", simstate.encode_string(value), fmt="A", access=access,
               descr=descr)


def SYSCTL_ADD_INT(kernel: simstate.KernelState, name: str, value: int,  # noqa: N802
                   descr: str = "", access: str = "rd") -> None:
    kernel.set(name, "int", simstate.encode_int("int", value), fmt="I", access=access,
               descr=descr)


def SYSCTL_ADD_ULONG(kernel: simstate.KernelState, name: str, value: int,  # noqa: N802
                     descr: str = "", access: str = "rd") -> None:
    kernel.set(name, "ulong", simstate.encode_int("ulong", value), fmt="LU", access=access,
               descr=descr)


def sysctl_remove_subtree(kernel: simstate.KernelState, name: str) -> None:
    """``sysctl_ctx_free`` of a device's context: drop ``name`` and everything below it."""
    for n in [n for n in kernel.nodes if n == name or n.startswith(name + ".")]:
        del kernel.nodes[n]


# -- sysctlbyname with the kernel's OID handlers ------------------------------------------

def check_handler(kernel: simstate.KernelState, name: str, new: bytes | None) -> None:
    """Rules of OID handlers beyond the generic ones (raise the handler's errno)."""
    if new is None or name != DEVCTL_QUEUE_OID or DEVCTL_QUEUE_OID not in kernel.nodes:
        return
    if len(new) != 4:
        raise error_for(errno.EINVAL, name)
    q = simstate.decode_int("int", new)
    # sysctl_devctl_queue: negative → EINVAL, and at run time only 0 (disable) is accepted.
    if q != 0:
        raise error_for(errno.EINVAL, name)


def sysctlbyname(root: str, name: str, oldlen: int | None,
                 new: bytes | None = None) -> tuple[bytes | None, int]:
    """``sysctlbyname(3)`` on the simulated VM (see :meth:`SimBackend.sysctlbyname`)."""
    if new is not None:
        check_handler(simstate.load(root), name, new)
    return SimBackend(root).sysctlbyname(name, oldlen, new)


def sysctlbyname_c(root: str, name: str, oldp: bytearray | None, oldlenp: list[int] | None,
                   newp: bytes | None = None) -> int:
    """``__sysctlbyname(2)`` with C-shaped arguments; returns 0 or the errno.

    ``oldp`` is the caller's buffer (filled in place), ``oldlenp[0]`` is
    ``*oldlenp`` (None: a NULL ``oldlenp``, i.e. no room).  Like the kernel:
    ``oldp`` NULL sets ``*oldlenp`` to the size needed; a short buffer gets the
    bytes that fit (``sysctl_old_user``) and ENOMEM, and ``*oldlenp`` keeps its
    value because ``sys___sysctlbyname`` returns before its ``copyout`` (FreeBSD
    13+; the numeric-MIB ``__sysctl`` would update it); any other error leaves
    both untouched.  A successful write with ``oldp`` NULL still sets
    ``*oldlenp`` to the old value's size (the handler's ``SYSCTL_OUT`` counts it).
    """
    oldlen = oldlenp[0] if oldlenp is not None else 0
    if oldp is not None and not 0 <= oldlen <= len(oldp):
        raise ValueError(f"*oldlenp {oldlen} does not fit the {len(oldp)}-byte buffer")
    before = simstate.load(root).lookup(name)
    try:
        data, size = sysctlbyname(root, name, None if oldp is None else oldlen, newp)
    except SysctlError as e:
        if e.errno == errno.ENOMEM and oldp is not None and before is not None:
            oldp[:oldlen] = before.value[:oldlen]
        return e.errno
    if data is not None and oldp is not None:
        oldp[:len(data)] = data
    if oldp is None and before is not None:
        size = len(before.value)
    if oldlenp is not None:
        oldlenp[0] = size
    return 0


# -- sysctl(8) ----------------------------------------------------------------------------

@dataclass
class Sysctl8Result:
    stdout: bytes
    stderr: str
    status: int


def _c_alt_hex(value: int, width: int) -> str:
    """printf ``%#0*jx``: ``0x`` + zero padding, except that 0 gets no ``0x`` (C rule)."""
    if value == 0:
        return "0" * width
    digits = f"{value:x}"
    return "0x" + digits.rjust(width - 2, "0")


class Sysctl8:
    """``sysctl [-bdenNoqtx] name[=value] ...`` over a simulated VM's kernel.tab."""

    def __init__(self, root: str, flags: str = "") -> None:
        self.root = root
        self.f = set(flags)
        self.out = bytearray()
        self.err: list[str] = []

    def _print(self, text: str) -> None:
        self.out += text.encode()

    def _warnx(self, msg: str) -> None:
        self.err.append(f"sysctl: {msg}")

    def run(self, args: list[str]) -> Sysctl8Result:
        """Run over the operands as sysctl(8) does: status = number of failed operands."""
        kernel = simstate.load(self.root)
        warncount = sum(self.parse(kernel, a) for a in args)
        return Sysctl8Result(bytes(self.out), "".join(e + "\n" for e in self.err), warncount)

    # parse(): one operand
    def parse(self, kernel: simstate.KernelState, string: str) -> int:
        name, sep, value = string.partition("=")
        if not sep:
            name, sep, value = string.partition(":")
        name = name.rstrip()
        newval: str | None = None
        if sep:
            value = value.lstrip()
            if value[:1] in ("'", '"'):
                if value.endswith(value[0]) and len(value) > 1:
                    value = value[:-1]
                value = value[1:]
            newval = value
        node = kernel.lookup(name)  # name2oid: one trailing "." is ignored
        if node is None:
            if "i" in self.f:
                return 0
            if "q" not in self.f:
                self._warnx(f"unknown oid '{name}'")
            return 1
        # What is printed is the OID's own name (show_var asks the kernel for it), the
        # warnings repeat the operand as given.
        oid = node.name
        if newval is None or "d" in self.f:
            if node.kind == "node":
                if "d" in self.f:
                    self._show_and_newline(kernel, oid)
                self.sysctl_all(kernel, oid)
            else:
                self._show_and_newline(kernel, oid)
            return 0
        return self._set(kernel, oid, node, string, newval, given=name)

    def _show_and_newline(self, kernel: simstate.KernelState, name: str) -> int:
        i = self.show_var(kernel, name)
        if not i and "b" not in self.f:
            self._print("\n")
        return i

    def _set(self, kernel: simstate.KernelState, name: str, node: simstate.Node,
             string: str, newval: str, given: str | None = None) -> int:
        given = name if given is None else given
        if node.kind == "node":
            self._warnx(f"oid '{given}' isn't a leaf node")
            return 1
        if not node.writable:
            self._warnx(f"oid '{given}' is read only")
            return 1
        if node.kind in _SIGNED:
            if not newval:
                self._warnx("empty numeric value")
                return 1
            try:
                num = int(newval, 0)
            except ValueError:
                self._warnx(f"invalid {TYPENAME[node.kind]} '{newval}'")
                return 1
            size = simstate.KINDS[node.kind]
            raw = (num & ((1 << (8 * size)) - 1)).to_bytes(size, sys.byteorder)
        elif node.kind == "string":
            raw = newval.encode()
        else:
            self._warnx(f"oid '{given}' is type {CTLTYPE[node.kind]}, cannot set that")
            return 1
        i = self.show_var(kernel, name)
        try:
            sysctlbyname(self.root, name, None, raw)
        except SysctlError as e:
            if not i and "b" not in self.f:
                self._print("\n")
            self._warnx(f"{string}: {os.strerror(e.errno)}")
            return 1
        if "b" not in self.f:
            self._print(" -> ")
        kernel = simstate.load(self.root)
        saved = set(self.f)
        self.f.add("n")
        j = self.show_var(kernel, name)
        self.f = saved
        if not j and "b" not in self.f:
            self._print("\n")
        return 0

    # sysctl_all(): every leaf below a node, in OID-number order
    def sysctl_all(self, kernel: simstate.KernelState, name: str) -> None:
        children = kernel.children(name)
        if name == "dev" or name.startswith("dev."):
            # Newbus OIDs are OID_AUTO, numbered downwards (newoid_start is decremented),
            # so the newest comes first: a driver's own OIDs, then %parent ... %desc [D].
            children.reverse()
        for child in children:
            full = f"{name}.{child}"
            node = kernel.lookup(full)
            if node is None:
                continue
            if node.kind == "node":
                self.sysctl_all(kernel, full)
                continue
            self._show_and_newline(kernel, full)

    # show_var(): 0 when something was printed, 1 when nothing was
    def show_var(self, kernel: simstate.KernelState, name: str) -> int:
        node = kernel.lookup(name)
        assert node is not None
        if "N" in self.f:
            self._print(name)
            return 0
        sep = "=" if "e" in self.f else ": "
        if self.f & {"t", "d"}:
            if "n" not in self.f:
                self._print(f"{name}{sep}")
            self._print(TYPENAME[node.kind] if "t" in self.f else node.descr)
            return 0
        if node.kind == "opaque" and node.fmt not in _KNOWN_STRUCTS \
                and not self.f & {"b", "o", "x"}:
            return 1  # "don't fetch opaques that we don't know how to print"
        val = node.value
        if node.kind == "node" or (not val and node.kind != "string"):
            return 1
        if "b" in self.f:
            self.out += val
            return 0
        prefix = "" if "n" in self.f else f"{name}{sep}"
        if node.kind == "string":
            self._print(prefix + val.split(b"\0", 1)[0].decode("utf-8", "replace"))
            return 0
        if node.kind in _SIGNED:
            self._print(prefix + self._ints(node.kind, val))
            return 0
        if node.fmt == "S,timeval":
            return self._timeval(prefix, val)
        return self._dump(prefix, node.fmt, val)

    def _ints(self, kind: str, val: bytes) -> str:
        size = simstate.KINDS[kind]
        hexlen = 2 + (size * 8 + 3) // 4
        parts = []
        for off in range(0, len(val) - size + 1, size):
            chunk = val[off:off + size]
            if "x" in self.f:
                parts.append(_c_alt_hex(int.from_bytes(chunk, sys.byteorder), hexlen))
            else:
                parts.append(str(int.from_bytes(chunk, sys.byteorder, signed=_SIGNED[kind])))
        return " ".join(parts)

    def _timeval(self, prefix: str, val: bytes) -> int:
        if len(val) != 16:
            self._warnx(f"S_timeval {len(val)} != 16")
            return 1
        sec = int.from_bytes(val[:8], sys.byteorder, signed=True)
        usec = int.from_bytes(val[8:], sys.byteorder, signed=True)
        self._print(f"{prefix}{{ sec = {sec}, usec = {usec} }} {time.ctime(sec)}")
        return 0

    def _dump(self, prefix: str, fmt: str, val: bytes) -> int:
        """``Format:%s Length:%zu Dump:0x`` then ``while (len-- && (xflag || p < val + 16))``."""
        xflag = "x" in self.f
        out = [f"{prefix}Format:{fmt} Length:{len(val)} Dump:0x"]
        length, p = len(val), 0
        while True:
            was = length
            length = (length - 1) % (1 << 64)          # size_t post-decrement wraps at 0
            if not (was and (xflag or p < 16)):
                break
            out.append(f"{val[p]:02x}")
            p += 1
        if not xflag and length > 16:
            out.append("...")
        self._print("".join(out))
        return 0
