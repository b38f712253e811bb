"""What the handler reads about the machine, through a sysctl backend.

The GUIDs of all vmgenc units are the primary signal; the rest are the
secondary signals the classifier weighs (design §4.5): ``kern.vm_guest``,
kenv ``smbios.system.uuid``, ``kern.hostuuid``, the MAC set and the boot time.
"""

from __future__ import annotations

import struct

from .generation import Generation
from .plain import Frozen
from .sysctl import Backend, SysctlError, read_bytes, read_string, vmgenc_units
from .sysctl.errors import LOAD_HINT, NoSuchOid


class NoDevice(RuntimeError):
    """No vmgenc unit is attached."""


class Snapshot(Frozen):
    """The machine as seen at one moment."""

    guids: tuple[Generation, ...]
    vm_guest: str | None
    smbios_uuid: str | None
    hostuuid: str | None
    macs: tuple[str, ...]
    boot_time: int | None

    def __init__(self, guids: tuple[Generation, ...], vm_guest: str | None = None,
                 smbios_uuid: str | None = None, hostuuid: str | None = None,
                 macs: tuple[str, ...] = (), boot_time: int | None = None) -> None:
        self._set(locals())

    @property
    def generation(self) -> Generation:
        """Unit 0's generation: the one the history is keyed on."""
        return self.guids[0]


def read_guids(backend: Backend) -> tuple[Generation, ...]:
    """The generation of every vmgenc unit, unit 0 first; raises :class:`NoDevice`."""
    units = vmgenc_units(backend)
    if not units:
        raise NoDevice("no vmgenc device: " + LOAD_HINT)
    try:
        return tuple(Generation(read_bytes(backend, f"dev.vmgenc.{u}.guid")) for u in units)
    except NoSuchOid as e:
        raise NoDevice(str(e)) from None


def _optional_string(backend: Backend, name: str) -> str | None:
    try:
        return read_string(backend, name) or None
    except SysctlError:
        return None


def _boot_time(backend: Backend) -> int | None:
    """``kern.boottime`` seconds (a struct timeval: two native longs)."""
    try:
        raw = read_bytes(backend, "kern.boottime")
    except SysctlError:
        return None
    if len(raw) >= 16:
        return struct.unpack("=q", raw[:8])[0]
    return None


def read_snapshot(backend: Backend) -> Snapshot:
    """All signals at once (the GUIDs must be present; the rest may be missing)."""
    guids = read_guids(backend)
    macs = tuple(sorted({m.lower() for m in backend.interfaces().values()
                         if m and m != "00:00:00:00:00:00"}))
    return Snapshot(
        guids=guids,
        vm_guest=_optional_string(backend, "kern.vm_guest"),
        smbios_uuid=(backend.kenv_get("smbios.system.uuid") or None),
        hostuuid=_optional_string(backend, "kern.hostuuid"),
        macs=macs,
        boot_time=_boot_time(backend),
    )
