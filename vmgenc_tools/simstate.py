"""The kernel-visible state of a simulated VM, in one small text file.

This module sits at the bottom of the house: the reference model
(``reference/``) writes it, the ``sim`` sysctl backend reads it, and the C
test library (``tests/csrc/fakesysctl.c``) and the test ``sysctl`` stand-in
(``tests/fakes/sysctl``) parse the same format.  Production code never imports
``reference/``; it only reads this state.

Layout under a sandbox root::

    ${root}/.vmgenc-sim/kernel.tab   sysctl nodes, kenv, interfaces (this format)
    ${root}/.vmgenc-sim/vm.json      the reference model's private state
    ${root}/.vmgenc-sim/lock         flock(2) target for writers

``kernel.tab`` format, version 1: UTF-8 lines, fields separated by one TAB::

    # vmgenc-sim kernel.tab v1
    S <name> <kind> <fmt> <access> <hex> <descr>    a sysctl OID
    K <name> <hex>                                   a kenv(2) variable (no NUL)
    I <ifname> <mac>                                 a network interface

``kind`` is ``node`` (no handler: reads give EISDIR), ``opaque``, ``string``,
``int``/``uint`` (4 bytes) or ``long``/``ulong`` (8 bytes), native byte order.
``access`` is ``rd`` or ``rw``.  ``hex`` is the value exactly as sysctl(3)
copies it out (a string includes its NUL).  A name that is not listed but is a
prefix of a listed one (``dev`` for ``dev.vmgenc.0.guid``) is a node too.
Writers hold an exclusive flock on ``lock`` and replace the file atomically
(temp file, fsync, rename); readers need no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
from collections.abc import Iterator

SIM_DIR = ".vmgenc-sim"
KERNEL_TAB = "kernel.tab"
HEADER = "# vmgenc-sim kernel.tab v1"
# Value sizes of the fixed-size kinds; a ``long`` is the machine's C long (8 bytes on LP64
# amd64/arm64, 4 on i386/armv7), as ``sizeof(long)`` is in the C stand-in library.
KINDS = {"node": 0, "opaque": 0, "string": 0, "int": 4, "uint": 4,
         "long": struct.calcsize("l"), "ulong": struct.calcsize("L")}


class SimStateError(RuntimeError):
    """The simulated VM's state is missing or unreadable."""


class Node:
    """One sysctl OID of the simulated kernel (a plain class: dataclasses cost the fast path
    ~18 ms of imports)."""

    __slots__ = ("name", "kind", "fmt", "access", "value", "descr")

    def __init__(self, name: str, kind: str, fmt: str = "", access: str = "rd",
                 value: bytes = b"", descr: str = "") -> None:
        self.name, self.kind, self.fmt = name, kind, fmt
        self.access, self.value, self.descr = access, value, descr

    def _key(self) -> tuple:
        return (self.name, self.kind, self.fmt, self.access, self.value, self.descr)

    def __eq__(self, other: object) -> bool:
        return self._key() == other._key() if isinstance(other, Node) else NotImplemented

    def __repr__(self) -> str:
        return "Node(" + ", ".join(f"{k}={v!r}" for k, v in zip(self.__slots__, self._key())) + ")"

    @property
    def writable(self) -> bool:
        return self.access == "rw"


class KernelState:
    """Everything the simulated kernel exposes to user space."""

    def __init__(self, nodes: dict[str, Node] | None = None, kenv: dict[str, str] | None = None,
                 ifaces: dict[str, str] | None = None) -> None:
        self.nodes: dict[str, Node] = {} if nodes is None else nodes
        self.kenv: dict[str, str] = {} if kenv is None else kenv
        self.ifaces: dict[str, str] = {} if ifaces is None else ifaces

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KernelState):
            return NotImplemented
        return (self.nodes, self.kenv, self.ifaces) == (other.nodes, other.kenv, other.ifaces)

    def __repr__(self) -> str:
        return f"KernelState(nodes={self.nodes!r}, kenv={self.kenv!r}, ifaces={self.ifaces!r})"

    def lookup(self, name: str) -> Node | None:
        """The node for ``name``; an unlisted prefix of a listed name is a ``node``.

        Like the kernel's ``name2oid``, one trailing ``.`` is ignored
        (``dev.vmgenc.0.`` is ``dev.vmgenc.0``); two are not.
        """
        if name.endswith(".") and not name.endswith(".."):
            name = name[:-1]
        node = self.nodes.get(name)
        if node is not None:
            return node
        prefix = name + "."
        if name and any(n.startswith(prefix) for n in self.nodes):
            return Node(name, "node")
        return None

    def children(self, name: str) -> list[str]:
        """Immediate child components under ``name`` (``dev.vmgenc`` → ``['0', '1']``)."""
        prefix = name + "."
        seen: dict[str, None] = {}
        for n in self.nodes:
            if n.startswith(prefix):
                seen.setdefault(n[len(prefix):].split(".", 1)[0], None)
        return list(seen)

    def set(self, name: str, kind: str, value: bytes = b"", *, fmt: str = "",
            access: str = "rd", descr: str = "") -> Node:
        if kind not in KINDS:
            raise ValueError(f"unknown sysctl kind {kind!r}")
        node = Node(name, kind, fmt, access, bytes(value), descr)
        self.nodes[name] = node
        return node


def encode_int(kind: str, value: int) -> bytes:
    """An integer as the kernel copies it out for ``kind``."""
    size = KINDS[kind]
    signed = kind in ("int", "long")
    return int(value).to_bytes(size, sys.byteorder, signed=signed)


def decode_int(kind: str, raw: bytes) -> int:
    return int.from_bytes(raw, sys.byteorder, signed=kind in ("int", "long"))


def encode_string(text: str) -> bytes:
    return text.encode() + b"\0"


def sim_dir(root: str) -> str:
    return os.path.join(root, SIM_DIR)


def tab_path(root: str) -> str:
    return os.path.join(root, SIM_DIR, KERNEL_TAB)


def is_simulated(root: str) -> bool:
    """True when ``root`` holds a simulated VM (``vmgenctl sim init`` ran there)."""
    return os.path.isfile(tab_path(root))


def parse(text: str) -> KernelState:
    state = KernelState()
    for lineno, line in enumerate(text.split("\n"), 1):  # only "\n" ends a line
        if not line or line.startswith("#"):
            continue
        f = line.split("\t")
        try:
            if f[0] == "S":
                state.nodes[f[1]] = Node(f[1], f[2], f[3], f[4], bytes.fromhex(f[5]), f[6])
                if f[2] not in KINDS or f[4] not in ("rd", "rw"):
                    raise ValueError(line)
            elif f[0] == "K":
                state.kenv[f[1]] = bytes.fromhex(f[2]).decode()
            elif f[0] == "I":
                state.ifaces[f[1]] = f[2]
            else:
                raise ValueError(line)
        except (IndexError, ValueError) as e:
            raise SimStateError(f"{KERNEL_TAB} line {lineno} is malformed") from e
    return state


def _fields(*fields: str) -> str:
    """One kernel.tab line; a field holding TAB or newline would corrupt the file."""
    for f in fields:
        if "\t" in f or "\n" in f:
            raise ValueError(f"kernel.tab field {f!r} may not hold TAB or newline")
    return "\t".join(fields)


def format_state(state: KernelState) -> str:
    out = [HEADER]
    for n in state.nodes.values():
        out.append(_fields("S", n.name, n.kind, n.fmt, n.access, n.value.hex(), n.descr))
    for k, v in state.kenv.items():
        out.append(_fields("K", k, v.encode().hex()))
    for k, v in state.ifaces.items():
        out.append(_fields("I", k, v))
    return "\n".join(out) + "\n"


def load(root: str) -> KernelState:
    """Read the state (no lock needed: writers replace the file atomically)."""
    try:
        with open(tab_path(root), encoding="utf-8") as f:
            return parse(f.read())
    except FileNotFoundError:
        raise SimStateError(
            f"no simulated VM under {root}: run 'vmgenctl --root {root} sim init' first"
        ) from None


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` via a temp file, fsync and rename."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]  # write(2) may write less than asked
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def save(root: str, state: KernelState) -> None:
    """Replace the state file atomically; the caller holds :func:`locked`."""
    os.makedirs(sim_dir(root), exist_ok=True)
    atomic_write(tab_path(root), format_state(state).encode())


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """Hold the simulated VM's writer lock."""
    os.makedirs(sim_dir(root), exist_ok=True)
    fd = os.open(os.path.join(sim_dir(root), "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def transaction(root: str) -> Iterator[KernelState]:
    """Lock, load, let the caller change the state, save."""
    with locked(root):
        state = load(root) if is_simulated(root) else KernelState()
        yield state
        save(root, state)
