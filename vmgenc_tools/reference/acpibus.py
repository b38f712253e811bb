"""FreeBSD's acpi(4) bus glue that vmgenc(4) calls (``sys/dev/acpica/acpi.c``, ``Osd/``).

Each function keeps the C name and mirrors its rules:

- ``acpi_disabled``: kenv ``debug.acpi.disabled`` is ``all`` or a space-separated
  list; each word is compared with ``strncmp(word, subsys, strlen(word))``, so a
  word that is a *prefix* of the subsystem (``vm``) disables it too;
- ``acpi_MatchHid`` / ``acpi_device_id_probe``: ``strcmp`` against ``_HID`` then
  every ``_CID``; a ``_HID`` match probes at ``BUS_PROBE_DEFAULT``, a ``_CID`` match
  at ``BUS_PROBE_LOW_PRIORITY``; only devices (and processors) are probed;
- ``acpi_DeviceIsPresent``: no ``_STA`` (or a failing one) means present;
- ``acpi_pnpinfo``: ``_UID`` printed as ``strtoul(_UID, NULL, 10)``;
- ``acpi_UserNotify``: ``devctl_notify("ACPI", subsystem, <full path>, "notify=0x%02x")``;
- the bus's location and PnP strings used by the ``+``/``-``/``?`` devctl records and
  the ``%location``/``%pnpinfo`` sysctls.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .acpi import (
    ACPI_STA_FUNCTIONAL,
    ACPI_STA_PRESENT,
    ACPI_TYPE_DEVICE,
    AcpiError,
    AcpiNamespace,
)

if TYPE_CHECKING:
    from .kernel import Device, Kernel

ENXIO = 6
ULONG_MAX = 0xFFFFFFFFFFFFFFFF
BUS_PROBE_DEFAULT = -20
BUS_PROBE_LOW_PRIORITY = -40
ACPI_MATCHHID_NOMATCH = 0
ACPI_MATCHHID_HID = 1
ACPI_MATCHHID_CID = 2


def acpi_disabled(k: Kernel, subsys: str) -> bool:
    """True when kenv ``debug.acpi.disabled`` disables ``subsys`` (prefix quirk included)."""
    env = k.kenv_get("debug.acpi.disabled")
    if env is None:
        return False
    if env == "all":
        return True
    # strncmp(cp, subsys, len) == 0 for each word: a word that is a prefix matches too.
    return any(subsys[:len(word)] == word for word in env.split())


def acpi_MatchHid(ns: AcpiNamespace, h: str | None, hid: str | None) -> int:  # noqa: N802
    """ACPI_MATCHHID_HID, ACPI_MATCHHID_CID (not a _HID match) or ACPI_MATCHHID_NOMATCH."""
    if hid is None or h is None:
        return ACPI_MATCHHID_NOMATCH
    try:
        info = ns.AcpiGetObjectInfo(h)
    except AcpiError:
        return ACPI_MATCHHID_NOMATCH
    if info.hid is not None and hid == info.hid:
        return ACPI_MATCHHID_HID
    if hid in info.cids:
        return ACPI_MATCHHID_CID
    return ACPI_MATCHHID_NOMATCH


def acpi_device_id_probe(k: Kernel, dev: Device, ids: list[str]) -> int:
    """``ACPI_ID_PROBE(parent, dev, ids, NULL)``: the first id that matches decides."""
    h = dev.handle
    if not ids or h is None:
        return ENXIO
    if k.ns.object_type(h) != ACPI_TYPE_DEVICE:
        return ENXIO
    for hid in ids:
        rv = acpi_MatchHid(k.ns, h, hid)
        if rv == ACPI_MATCHHID_NOMATCH:
            continue
        return BUS_PROBE_DEFAULT if rv == ACPI_MATCHHID_HID else BUS_PROBE_LOW_PRIORITY
    return ENXIO


def acpi_DeviceIsPresent(ns: AcpiNamespace, h: str) -> bool:  # noqa: N802
    """Present unless ``_STA`` evaluates with neither the present nor the functional bit."""
    try:
        sta = ns.AcpiGetObjectInfo(h).sta
    except AcpiError:
        return True
    return bool(sta & (ACPI_STA_PRESENT | ACPI_STA_FUNCTIONAL))


def acpi_name(ns: AcpiNamespace, h: str | None) -> str:
    """``AcpiGetName(h, ACPI_FULL_PATHNAME)`` or ``(unknown)``."""
    if h is None:
        return "(unknown)"
    try:
        return ns.AcpiGetName(h)
    except AcpiError:
        return "(unknown)"


def acpi_child_location(ns: AcpiNamespace, h: str) -> str:
    """The bus location string: ``handle=\\_SB_.VGEN``."""
    return f"handle={acpi_name(ns, h)}"


def strtoul10(text: str) -> int:
    """``strtoul(text, NULL, 10)`` on LP64: leading space, a sign, then the decimal digits
    that follow; 0 when there are none, ``ULONG_MAX`` on overflow, a minus sign wraps."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?)([0-9]*)", text)
    assert m is not None  # the pattern matches any text
    if not m.group(2):
        return 0
    value = int(m.group(2))
    if value > ULONG_MAX:
        return ULONG_MAX
    return (-value) & ULONG_MAX if m.group(1) == "-" else value


def acpi_pnpinfo(ns: AcpiNamespace, h: str) -> str:
    """``_HID=%s _UID=%lu _CID=%s``: the first _CID only; ``none`` when missing; _UID 0."""
    try:
        info = ns.AcpiGetObjectInfo(h)
    except AcpiError:
        return "unknown"
    uid = strtoul10(info.uid) if info.uid is not None else 0
    cid = info.cids[0] if info.cids else "none"
    return f"_HID={info.hid or 'none'} _UID={uid} _CID={cid}"


def acpi_UserNotify(k: Kernel, subsystem: str | None, h: str, notify: int) -> None:  # noqa: N802
    """Send ``!system=ACPI subsystem=<subsystem> type=<path> notify=0x%02x`` to devctl;
    nothing when the handle has no path (``AcpiNsHandleToPathname`` fails)."""
    if subsystem is None:
        return
    try:
        path = k.ns.AcpiGetName(h)
    except AcpiError:
        return
    k.devctl.devctl_notify("ACPI", subsystem, path, f"notify=0x{notify & 0xFF:02x}")
