"""vmgenc(4), function by function: ``sys/dev/vmgenc/vmgenc_acpi.c``.

Every function below carries the name of the C function it mirrors and takes
the same arguments, plus ``k``, the :class:`~.kernel.Kernel` whose services the C
code reaches through globals.  The softc is ``dev.softc``: ``vmg_pguid`` is the
guest-physical address the driver mapped; ``vmg_cache_guid`` *is* the opaque
sysctl ``dev.vmgenc.N.guid`` (``SYSCTL_ADD_OPAQUE`` points the OID at the softc
array, so the cache and the exported value are the same bytes).
"""

from __future__ import annotations

from . import acpibus
from . import sysctl as ksysctl
from .acpi import ACPI_TYPE_INTEGER, ACPI_TYPE_PACKAGE, AcpiError, AcpiFormatException
from .acpibus import ENXIO
from .kernel import Device, DriverEntry, Kernel
from .memory import AcpiOsMapMemory
from .random import HE_ENTROPY_BYTES, RANDOM_PURE_VMGENID

ACPI_NOTIFY_STATUS_CHANGED = 0x80
GUID_BYTES = 16
vmgenc_ids = ["VM_GEN_COUNTER"]
GUID_DESCR = "latest cached VM generation counter (128-bit UUID)"
RANDOM_VMGENID_IDENT = "VM Generation ID"
PARAM_BUFFER = 3 * 24            # ACPI_OBJECT param[3]; buf.Length = sizeof(param)
UINT32_MAX = 0xFFFFFFFF
UINT64_MASK = 0xFFFFFFFFFFFFFFFF


def _c_hash_x(n: int) -> str:
    """printf ``%#x``: ``0x``-prefixed hex, but plain ``0`` for zero."""
    return f"{n:#x}" if n else "0"


def _guid_oid(dev: Device) -> str:
    return f"dev.{dev.driver}.{dev.unit}.guid"


def cache_guid(k: Kernel, dev: Device) -> bytes:
    """``sc->vmg_cache_guid``: the bytes the opaque OID exports."""
    return k.sysctl.nodes[_guid_oid(dev)].value


def _set_cache_guid(k: Kernel, dev: Device, guid: bytes) -> None:
    k.sysctl.nodes[_guid_oid(dev)].value = bytes(guid)


def vmgenc_harvest_all(k: Kernel, p: bytes, sz: int) -> None:
    """``vmgenc_harvest_all``: feed ``sz`` bytes in ``sizeof(he_entropy)`` chunks."""
    off = 0
    while sz > 0:
        nbytes = min(sz, HE_ENTROPY_BYTES)
        k.random.random_harvest_direct(p[off:off + nbytes], nbytes, RANDOM_PURE_VMGENID)
        off += nbytes
        sz -= nbytes


def vmgenc_status_changed(k: Kernel, dev: Device) -> None:
    """``vmgenc_status_changed`` (task context): spurious check, then cache, harvest,
    ``EVENTHANDLER_INVOKE(acpi_vmgenc_event)`` and the devctl notification."""
    mapping = AcpiOsMapMemory(k.memory, dev.softc["vmg_pguid"], GUID_BYTES)
    guid = mapping.read()
    if guid == cache_guid(k, dev):
        return  # No change.
    _set_cache_guid(k, dev, guid)
    vmgenc_harvest_all(k, cache_guid(k, dev), GUID_BYTES)
    k.eventhandler_invoke("acpi_vmgenc_event")
    acpibus.acpi_UserNotify(k, "VMGenerationCounter", dev.handle, 0)


def vmgenc_notify(k: Kernel, h: str, notify: int, dev: Device) -> None:
    """``vmgenc_notify``: 0x80 kicks the work to a task; anything else is logged."""
    if notify == ACPI_NOTIFY_STATUS_CHANGED:
        k.AcpiOsExecute("vmgenc_status_changed", dev)
    else:
        k.device_printf(dev, f"unknown notify {_c_hash_x(notify)}")


def vmgenc_probe(k: Kernel, dev: Device) -> int:
    """``vmgenc_probe``: ENXIO when disabled, else ``ACPI_ID_PROBE`` on ``vmgenc_ids``."""
    if acpibus.acpi_disabled(k, "vmgenc"):
        return ENXIO
    rv = acpibus.acpi_device_id_probe(k, dev, vmgenc_ids)
    if rv <= 0:
        dev.desc = "VM Generation Counter"
    return rv


def vmgenc_acpi_getname(k: Kernel, handle: str) -> str:
    """``vmgenc_acpi_getname``: the full path, or ``(unknown)``."""
    try:
        return k.ns.AcpiGetName(handle)
    except AcpiError:
        return "(unknown)"


def acpi_GetPackedUINT64(k: Kernel, dev: Device, handle: str,  # noqa: N802 - C name
                         path: str) -> tuple[int, int]:
    """``acpi_GetPackedUINT64``: evaluate ``path`` into ``ACPI_OBJECT param[3]`` and
    combine a 2-integer package into an address.  Returns ``(error, address)``."""
    func = "acpi_GetPackedUINT64"
    try:
        param0 = k.ns.AcpiEvaluateObject(handle, path, PARAM_BUFFER, k.dispatch_notify)
    except AcpiError as e:
        k.device_printf(dev, f"{func}({vmgenc_acpi_getname(k, handle)}::{path}()): "
                             f"{AcpiFormatException(e.status)}")
        return ENXIO, 0
    if param0.type != ACPI_TYPE_PACKAGE:
        k.device_printf(dev, f"{func}({vmgenc_acpi_getname(k, handle)}::{path}()): "
                             f"Wrong type {_c_hash_x(param0.type)}")
        return ENXIO, 0
    elements = param0.elements
    if len(elements) != 2:
        k.device_printf(dev, f"{func}({vmgenc_acpi_getname(k, handle)}::{path}()): "
                             f"Wrong number of results {len(elements)}")
        return ENXIO, 0
    if elements[0].type != ACPI_TYPE_INTEGER or elements[1].type != ACPI_TYPE_INTEGER:
        k.device_printf(dev, f"{func}({vmgenc_acpi_getname(k, handle)}::{path}()): "
                             f"Wrong type results {_c_hash_x(elements[0].type)}, "
                             f"{_c_hash_x(elements[1].type)}")
        return ENXIO, 0
    out = ((int(elements[0].value) & UINT32_MAX)  # type: ignore[call-overload]
           | (int(elements[1].value) << 32)) & UINT64_MASK  # type: ignore[call-overload]
    if out == 0:
        return ENXIO, out
    return 0, out


def vmgenc_attach(k: Kernel, dev: Device) -> int:
    """``vmgenc_attach``: ADDR → opaque sysctl → map → cache → entropy → notify handler.

    No ``VMGenerationCounter`` event here: only a run-time change sends one.
    """
    h = dev.handle
    error, guid_physaddr = acpi_GetPackedUINT64(k, dev, h, "ADDR")
    if error != 0:
        return error
    ksysctl.SYSCTL_ADD_OPAQUE(k.sysctl, _guid_oid(dev), bytes(GUID_BYTES), "", GUID_DESCR)
    dev.softc["vmg_pguid"] = guid_physaddr
    mapping = AcpiOsMapMemory(k.memory, guid_physaddr, GUID_BYTES)
    _set_cache_guid(k, dev, mapping.read())
    k.random.random_source_register(RANDOM_VMGENID_IDENT, RANDOM_PURE_VMGENID)
    vmgenc_harvest_all(k, cache_guid(k, dev), GUID_BYTES)
    k.ns.AcpiInstallNotifyHandler(h, dev.nameunit)
    return 0


VMGENC_DRIVER = DriverEntry(
    name="vmgenc",
    probe=vmgenc_probe,
    attach=vmgenc_attach,
    notify=vmgenc_notify,
    tasks={"vmgenc_status_changed": vmgenc_status_changed},
)
