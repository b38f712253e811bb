"""The ACPI namespace as ACPICA presents it to FreeBSD (the parts vmgenc(4) touches).

Objects live under normalised paths (``\\_SB_.VGEN.ADDR``: every name segment is
four characters, short ones padded with ``_``, as ``AcpiNsBuildNormalizedPath``
renders them).  A device is a ``device`` object; ``_HID``, ``_CID``, ``_UID``,
``_STA`` and ``ADDR`` are ``name`` or ``method`` objects below it, exactly as the
hypervisor's AML declares them.  Values are small JSON terms (so the namespace
persists with the simulated VM)::

    ["int", n]  ["str", s]  ["buf", hex]  ["pkg", [term, ...]]  ["eisaid", "XEN0000"]
    ["ref", name]              value of a Name / result of a Method (AML search rules)
    ["refof", path]            an object reference (ACPI_TYPE_LOCAL_REFERENCE)
    ["add", t1, t2]            integer addition
    ["sta_if", t]              0x0F when t is non-zero, else 0 (QEMU's and Xen's _STA)
    ["notify", path, value]    AML Notify()
    ["seq", [term, ...]]       statements in order; the value is the last one's
    ["fail", "AE_..."]         the method aborts with that status

Functions keep ACPICA's names (``AcpiEvaluateObject``, ``AcpiGetName``,
``AcpiGetObjectInfo``, ``AcpiInstallNotifyHandler``) and its observable rules:
the caller's return buffer is checked for size (``AE_BUFFER_OVERFLOW``), the
predefined-name repair uppercases ``_HID``/``_CID`` strings (``AcpiNsRepair_HID``),
device notifies (0x80-0xFF) go to device handlers, system ones (0x00-0x7F) do not.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

# ACPI_OBJECT_TYPE values (actypes.h).
ACPI_TYPE_ANY = 0x00
ACPI_TYPE_INTEGER = 0x01
ACPI_TYPE_STRING = 0x02
ACPI_TYPE_BUFFER = 0x03
ACPI_TYPE_PACKAGE = 0x04
ACPI_TYPE_DEVICE = 0x06
ACPI_TYPE_METHOD = 0x08
ACPI_TYPE_LOCAL_REFERENCE = 0x14

ACPI_OBJECT_SIZE = 24        # sizeof(ACPI_OBJECT) on LP64 (the Processor member is largest)
ACPI_MAX_SYS_NOTIFY = 0x7F   # 0x00-0x7F: system notifies; 0x80-0xFF: device notifies
ACPI_STA_PRESENT = 0x01
ACPI_STA_FUNCTIONAL = 0x08
ACPI_STA_DEFAULT = 0xFFFFFFFF  # no _STA: ACPICA reports every bit set

_SEG_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,3}$")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class AcpiError(Exception):
    """An ACPICA status other than AE_OK (``status`` is its name, e.g. ``AE_NOT_FOUND``)."""

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(f"{status}{': ' + detail if detail else ''}")
        self.status = status


def AcpiFormatException(status: str) -> str:  # noqa: N802 - ACPICA's name
    """The text FreeBSD prints for a status: ACPICA returns the exception's name."""
    return status


@dataclass(frozen=True)
class AcpiObject:
    """An evaluated object as ACPICA copies it into the caller's ACPI_OBJECT buffer."""

    type: int
    value: object

    @property
    def elements(self) -> tuple[AcpiObject, ...]:
        return self.value if self.type == ACPI_TYPE_PACKAGE else ()  # type: ignore[return-value]

    def external_size(self) -> int:
        """Bytes ACPICA needs to copy this object out (AcpiUtGetObjectSize, LP64) [D]."""
        if self.type == ACPI_TYPE_STRING:
            return ACPI_OBJECT_SIZE + _round8(len(str(self.value)) + 1)
        if self.type == ACPI_TYPE_BUFFER:
            return ACPI_OBJECT_SIZE + _round8(len(self.value))  # type: ignore[arg-type]
        if self.type == ACPI_TYPE_PACKAGE:
            return ACPI_OBJECT_SIZE + sum(e.external_size() for e in self.elements)
        return ACPI_OBJECT_SIZE


def _round8(n: int) -> int:
    return (n + 7) & ~7


def normalize_path(path: str) -> str:
    """``\\_SB.PCI0.ISA.VGID`` → ``\\_SB_.PCI0.ISA_.VGID`` (AcpiNsBuildNormalizedPath)."""
    if not path.startswith("\\"):
        raise ValueError(f"ACPI path {path!r} is not absolute (must start with '\\')")
    body = path[1:]
    if not body:
        return "\\"
    segs = []
    for seg in body.split("."):
        if not _SEG_RE.match(seg):
            raise ValueError(f"ACPI name segment {seg!r} in {path!r} is not a NameSeg")
        segs.append(seg.ljust(4, "_"))
    return "\\" + ".".join(segs)


def parent_of(path: str) -> str:
    head, _, _ = path.rpartition(".")
    return head if head else "\\"


def eisaid_encode(text: str) -> int:
    """ASL ``EisaId("PNP0A03")`` → the compressed 32-bit EISA ID (0x030AD041)."""
    if not re.match(r"^[A-Z]{3}[0-9A-F]{4}$", text):
        raise ValueError(f"not an EISA ID: {text!r} (three letters, four hex digits)")
    c = [ord(ch) - 0x40 for ch in text[:3]]
    vendor = (c[0] << 10) | (c[1] << 5) | c[2]
    product = int(text[3:], 16)
    be = (vendor << 16) | product
    return int.from_bytes(be.to_bytes(4, "big"), "little")


def AcpiExEisaIdToString(value: int) -> str:  # noqa: N802 - ACPICA's name
    """The compressed EISA ID back to its 7-character string."""
    be = int.from_bytes((value & 0xFFFFFFFF).to_bytes(4, "little"), "big")
    vendor, product = be >> 16, be & 0xFFFF
    letters = "".join(chr(((vendor >> s) & 0x1F) + 0x40) for s in (10, 5, 0))
    return f"{letters}{product:04X}"


def AcpiNsRepair_HID(value: str) -> str:  # noqa: N802 - ACPICA's name
    """``_HID``/``_CID`` string repair: drop one leading ``*``, uppercase with the C
    library's ``toupper`` (ASCII letters only) (nsrepair2.c)."""
    if not value:
        return value  # ACPICA warns about a zero-length ID and leaves it alone
    if value.startswith("*"):
        value = value[1:]
    return value.translate(_ASCII_UPPER)


@dataclass(frozen=True)
class DeviceInfo:
    """What ``AcpiGetObjectInfo`` returns for a device (only the fields FreeBSD reads here)."""

    hid: str | None
    uid: str | None
    cids: tuple[str, ...]
    sta: int


NotifyHook = Callable[[str, int], None]


class AcpiNamespace:
    """Named objects, notify handlers and the AML interpreter for the terms above."""

    def __init__(self, objects: dict[str, dict] | None = None,
                 handlers: dict[str, str] | None = None) -> None:
        self.objects: dict[str, dict] = dict(objects or {})
        self.handlers: dict[str, str] = dict(handlers or {})

    # -- building (what the hypervisor's AML tables declare) -------------------------
    def _add(self, path: str, obj: dict) -> str:
        path = normalize_path(path)
        parent = parent_of(path)
        if parent != "\\" and parent not in self.objects:
            self.objects[parent] = {"kind": "scope"}
        self.objects[path] = obj
        return path

    def add_device(self, path: str) -> str:
        return self._add(path, {"kind": "device"})

    def add_name(self, path: str, term: list) -> str:
        return self._add(path, {"kind": "name", "term": term})

    def add_method(self, path: str, term: list) -> str:
        return self._add(path, {"kind": "method", "term": term})

    def set_name(self, path: str, term: list) -> None:
        """Store a new value in a Name (the hypervisor or firmware updating it)."""
        path = normalize_path(path)
        if self.objects.get(path, {}).get("kind") != "name":
            raise KeyError(f"no Name object {path}")
        self.objects[path]["term"] = term

    def remove(self, path: str) -> None:
        path = normalize_path(path)
        for p in [p for p in self.objects if p == path or p.startswith(path + ".")]:
            del self.objects[p]

    def devices(self) -> list[str]:
        """Device paths in namespace walk order (parents first, declaration order)."""
        devs = [p for p, o in self.objects.items() if o["kind"] == "device"]
        return sorted(devs, key=lambda p: (p.count("."), list(self.objects).index(p)))

    def to_json(self) -> dict:
        return {"objects": copy.deepcopy(self.objects), "handlers": dict(self.handlers)}

    @classmethod
    def from_json(cls, data: dict) -> AcpiNamespace:
        return cls(copy.deepcopy(data.get("objects", {})), data.get("handlers", {}))

    # -- lookups ---------------------------------------------------------------------
    def _lookup(self, scope: str, name: str, upsearch: bool) -> str:
        """Resolve ``name`` from ``scope``: absolute, dotted-relative, or a single NameSeg
        searched upward towards the root (ACPI namespace search rules)."""
        if name.startswith("\\"):
            path = normalize_path(name)
            if path in self.objects:
                return path
            raise AcpiError("AE_NOT_FOUND", name)
        segs = [s.ljust(4, "_") for s in name.split(".")]
        here = scope
        while True:
            cand = ("\\" if here == "\\" else here + ".") + ".".join(segs)
            if cand in self.objects:
                return cand
            if not upsearch or len(segs) > 1 or here == "\\":
                raise AcpiError("AE_NOT_FOUND", f"{scope}.{name}")
            here = parent_of(here)

    def AcpiGetName(self, handle: str) -> str:  # noqa: N802 - ACPICA's name
        """``AcpiGetName(handle, ACPI_FULL_PATHNAME)``: the normalised path, ``_`` padding kept."""
        if handle not in self.objects and handle != "\\":
            raise AcpiError("AE_BAD_PARAMETER", handle)
        return handle

    def object_type(self, handle: str) -> int:
        kind = self.objects.get(handle, {}).get("kind")
        return {"device": ACPI_TYPE_DEVICE, "method": ACPI_TYPE_METHOD}.get(kind, ACPI_TYPE_ANY)

    # -- evaluation ------------------------------------------------------------------
    def AcpiEvaluateObject(self, handle: str, pathname: str, buffer_length: int,  # noqa: N802
                           on_notify: NotifyHook | None = None) -> AcpiObject:
        """Evaluate ``pathname`` relative to ``handle`` into a caller buffer of
        ``buffer_length`` bytes.  Raises :class:`AcpiError` (AE_NOT_FOUND,
        AE_BUFFER_OVERFLOW, or the status a method failed with)."""
        path = self._lookup(handle, pathname, upsearch=False)
        obj = self._evaluate_node(path, on_notify)
        if obj.external_size() > buffer_length:
            raise AcpiError("AE_BUFFER_OVERFLOW",
                            f"{path} needs {obj.external_size()} bytes, buffer has {buffer_length}")
        return obj

    def run_method(self, path: str, on_notify: NotifyHook | None = None) -> None:
        """Execute a control method for its effects (a GPE ``_Exx``/``_EVT`` handler)."""
        self._evaluate_node(normalize_path(path), on_notify)

    def _evaluate_node(self, path: str, on_notify: NotifyHook | None) -> AcpiObject:
        node = self.objects[path]
        if node["kind"] not in ("name", "method"):
            raise AcpiError("AE_TYPE", f"{path} is a {node['kind']}, not a data object")
        scope = path if node["kind"] == "method" else parent_of(path)
        return self._eval(node["term"], scope, on_notify)

    def _eval(self, term: list, scope: str, on_notify: NotifyHook | None) -> AcpiObject:
        op, args = term[0], term[1:]
        if op == "int":
            return AcpiObject(ACPI_TYPE_INTEGER, int(args[0]) & 0xFFFFFFFFFFFFFFFF)
        if op == "str":
            return AcpiObject(ACPI_TYPE_STRING, str(args[0]))
        if op == "buf":
            return AcpiObject(ACPI_TYPE_BUFFER, bytes.fromhex(args[0]))
        if op == "eisaid":
            return AcpiObject(ACPI_TYPE_INTEGER, eisaid_encode(args[0]))
        if op == "pkg":
            return AcpiObject(ACPI_TYPE_PACKAGE,
                              tuple(self._eval(t, scope, on_notify) for t in args[0]))
        if op == "ref":
            return self._evaluate_node(self._lookup(scope, args[0], upsearch=True), on_notify)
        if op == "refof":
            return AcpiObject(ACPI_TYPE_LOCAL_REFERENCE, self._lookup(scope, args[0], True))
        if op == "add":
            a, b = (self._integer(self._eval(t, scope, on_notify)) for t in args[:2])
            return AcpiObject(ACPI_TYPE_INTEGER, (a + b) & 0xFFFFFFFFFFFFFFFF)
        if op == "sta_if":
            v = self._integer(self._eval(args[0], scope, on_notify))
            return AcpiObject(ACPI_TYPE_INTEGER, 0x0F if v else 0)
        if op == "notify":
            target = self._lookup(scope, args[0], upsearch=True)
            self.notify(target, int(args[1]), on_notify)
            return AcpiObject(ACPI_TYPE_INTEGER, 0)
        if op == "seq":
            result = AcpiObject(ACPI_TYPE_INTEGER, 0)
            for t in args[0]:
                result = self._eval(t, scope, on_notify)
            return result
        if op == "fail":
            raise AcpiError(str(args[0]))
        raise ValueError(f"unknown AML term {op!r}")

    @staticmethod
    def _integer(obj: AcpiObject) -> int:
        if obj.type != ACPI_TYPE_INTEGER:
            raise AcpiError("AE_AML_OPERAND_TYPE", f"type {obj.type:#x} is not an integer")
        return int(obj.value)  # type: ignore[call-overload]

    # -- device identification ---------------------------------------------------------
    def _optional(self, handle: str, name: str) -> AcpiObject | None:
        """A predefined object's value, or None when it is missing or fails to evaluate
        (AcpiGetObjectInfo then leaves that field invalid)."""
        try:
            return self.AcpiEvaluateObject(handle, name, 1 << 16)
        except AcpiError:
            return None

    def AcpiGetObjectInfo(self, handle: str) -> DeviceInfo:  # noqa: N802 - ACPICA's name
        """_HID, _UID, _CID list (strings repaired, EISA IDs converted) and _STA."""
        def idstr(obj: AcpiObject) -> str | None:
            if obj.type == ACPI_TYPE_INTEGER:
                return AcpiExEisaIdToString(int(obj.value))  # type: ignore[call-overload]
            if obj.type == ACPI_TYPE_STRING:
                return AcpiNsRepair_HID(str(obj.value))
            return None

        hid_obj = self._optional(handle, "_HID")
        hid = idstr(hid_obj) if hid_obj else None
        uid_obj = self._optional(handle, "_UID")
        uid = None
        if uid_obj is not None:
            uid = str(uid_obj.value) if uid_obj.type in (ACPI_TYPE_INTEGER,
                                                         ACPI_TYPE_STRING) else None
        cid_obj = self._optional(handle, "_CID")
        cids: list[str] = []
        if cid_obj is not None:
            items = cid_obj.elements if cid_obj.type == ACPI_TYPE_PACKAGE else (cid_obj,)
            cids = [c for c in (idstr(i) for i in items) if c is not None]
        sta_obj = self._optional(handle, "_STA")
        sta = int(sta_obj.value) if sta_obj and sta_obj.type == ACPI_TYPE_INTEGER \
            else ACPI_STA_DEFAULT  # type: ignore[call-overload]
        return DeviceInfo(hid, uid, tuple(cids), sta)

    # -- notifications -----------------------------------------------------------------
    def AcpiInstallNotifyHandler(self, handle: str, owner: str) -> None:  # noqa: N802
        """Install a device notify handler (``ACPI_DEVICE_NOTIFY``) owned by ``owner``."""
        self.handlers[handle] = owner

    def notify(self, path: str, value: int, on_notify: NotifyHook | None) -> None:
        """AML ``Notify(path, value)``: device values reach the installed device handler;
        system values (<= 0x7F) and devices without a handler are ignored."""
        if value <= ACPI_MAX_SYS_NOTIFY or path not in self.handlers:
            return
        if on_notify is not None:
            on_notify(path, value)
