"""The simulated kernel: its services and the newbus steps around a driver.

:class:`Kernel` bundles what vmgenc(4) calls into — the ACPI namespace
(ACPICA), guest memory, the sysctl tree (``kernel.tab``), the random(4) harvest
queue, EVENTHANDLER lists, the devctl queue, the ACPI task queue
(``AcpiOsExecute``) and the console (``printf``/``device_printf``, read back as
dmesg).  It is rebuilt from the VM's saved state for every operation and
written back by :mod:`.vm` under the state lock.

Newbus (``sys/kern/subr_bus.c``) is modelled where it shows: ``device_attach``
creates the device's sysctl tree (``%desc``, ``%driver``, ``%location``,
``%pnpinfo``, ``%parent``), prints ``vmgenc0: <VM Generation Counter> on acpi0``
*before* calling the driver's attach, prints ``device_attach: vmgenc0 attach
returned 6`` and frees the unit when attach fails, and on success harvests the
attach time (``RANDOM_ATTACH``) and queues the ``+vmgenc0 at … on acpi0`` record.
A device that no driver claims gets a ``?`` nomatch record once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import simstate
from . import acpibus
from . import sysctl as ksysctl
from .acpi import AcpiNamespace
from .devctl_queue import DevctlQueue
from .eventhandler import EVENTHANDLER_INVOKE
from .memory import GuestMemory
from .random import RANDOM_ATTACH, HarvestQueue

ACPI_MAX_TASKS_DEFAULT = 4096   # MAX(32, MAXCPU * 4) with MAXCPU 1024 (amd64) [D]
CONSOLE_MAX = 2000


def empty_model() -> dict:
    """The kernel-side part of a VM's saved state, empty (a machine before boot)."""
    return {"acpi": {}, "memory": {}, "devices": [], "taskq": [], "devctl": {},
            "random": {}, "eventhandler": {}, "console": []}


@dataclass
class Device:
    """A newbus ``device_t`` under acpi0 (only the fields the model needs)."""

    handle: str
    driver: str | None = None
    unit: int | None = None
    desc: str | None = None
    state: str = "notpresent"        # notpresent | alive | attached
    enabled: bool = True
    donenomatch: bool = False
    softc: dict = field(default_factory=dict)
    parent: str = "acpi0"

    @property
    def nameunit(self) -> str:
        return f"{self.driver}{self.unit}" if self.driver is not None else "(null)"

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict) -> Device:
        return cls(**data)


@dataclass(frozen=True)
class DriverEntry:
    """``driver_t``: the methods newbus calls, plus the task and notify entry points."""

    name: str
    probe: Callable[[Kernel, Device], int]
    attach: Callable[[Kernel, Device], int]
    notify: Callable[[Kernel, str, int, Device], None]
    tasks: dict[str, Callable[[Kernel, Device], None]]


class Kernel:
    """The kernel services of one simulated VM, over its saved state."""

    def __init__(self, model: dict, kernel_tab: simstate.KernelState,
                 drivers: list[DriverEntry]) -> None:
        self.model = model
        self.sysctl = kernel_tab
        self.ns = AcpiNamespace.from_json(model["acpi"])
        self.memory = GuestMemory.from_json(model["memory"])
        self.random = HarvestQueue(model["random"], self.printf)
        self.devctl = DevctlQueue(model["devctl"], kernel_tab)
        self.devices = [Device.from_json(d) for d in model["devices"]]
        self.drivers = {d.name: d for d in drivers}

    def rebind(self, kernel_tab: simstate.KernelState) -> None:
        """A new boot: services start over on fresh state (the model dicts were reset)."""
        self.sysctl = kernel_tab
        self.random = HarvestQueue(self.model["random"], self.printf)
        self.devctl = DevctlQueue(self.model["devctl"], kernel_tab)
        self.devices = []

    def commit(self) -> None:
        """Write the services' state back into the model dict."""
        self.model["acpi"] = self.ns.to_json()
        self.model["memory"] = self.memory.to_json()
        self.model["devices"] = [d.to_json() for d in self.devices]

    # -- console -----------------------------------------------------------------------
    def printf(self, msg: str) -> None:
        lines = self.model["console"]
        lines.append(msg)
        del lines[:-CONSOLE_MAX]

    def device_printf(self, dev: Device, msg: str) -> None:
        self.printf(f"{dev.nameunit}: {msg}")

    # -- kenv ----------------------------------------------------------------------------
    def kenv_get(self, name: str) -> str | None:
        return self.sysctl.kenv.get(name)

    # -- EVENTHANDLER ----------------------------------------------------------------------
    def eventhandler_invoke(self, name: str) -> None:
        EVENTHANDLER_INVOKE(name, self.model["eventhandler"])

    # -- the ACPI task queue (OsdSchedule.c) ---------------------------------------------
    def AcpiOsExecute(self, func: str, dev: Device) -> bool:  # noqa: N802 - ACPICA's name
        """Queue ``func(dev)`` on the ACPI task queue; False when no task slot is free."""
        try:
            max_tasks = int(self.kenv_get("debug.acpi.max_tasks") or ACPI_MAX_TASKS_DEFAULT)
        except ValueError:
            max_tasks = ACPI_MAX_TASKS_DEFAULT
        if len(self.model["taskq"]) >= max_tasks:
            self.printf("AcpiOsExecute: failed to enqueue task, consider increasing "
                        "the debug.acpi.max_tasks tunable")
            return False
        self.model["taskq"].append({"func": func, "dev": dev.nameunit})
        return True

    def run_tasks(self) -> int:
        """Let the ``acpi_task`` threads run every queued task, in order; returns how many."""
        n = 0
        while self.model["taskq"]:
            task = self.model["taskq"].pop(0)
            dev = self.device_by_name(task["dev"])
            if dev is not None and dev.driver is not None:
                self.drivers[dev.driver].tasks[task["func"]](self, dev)
            n += 1
        return n

    # -- ACPI notify dispatch ---------------------------------------------------------------
    def device_by_name(self, nameunit: str) -> Device | None:
        return next((d for d in self.devices if d.nameunit == nameunit
                     and d.state == "attached"), None)

    def dispatch_notify(self, path: str, value: int) -> None:
        """ACPICA calling the device notify handler installed on ``path``."""
        dev = self.device_by_name(self.ns.handlers.get(path, ""))
        if dev is not None and dev.driver is not None:
            self.drivers[dev.driver].notify(self, path, value, dev)

    def run_gpe(self, method_path: str) -> None:
        """A GPE (or GED interrupt) fired: run its AML method; Notify()s reach handlers."""
        self.ns.run_method(method_path, self.dispatch_notify)

    # -- newbus ---------------------------------------------------------------------------
    def acpi_probe_children(self) -> None:
        """Add a child for every ACPI device; probe and attach the present ones."""
        self.devices = []
        for h in self.ns.devices():
            dev = Device(handle=h)
            self.devices.append(dev)
            if not acpibus.acpi_DeviceIsPresent(self.ns, h):
                dev.enabled = False       # device_disable(child): never probed
                continue
            self.device_probe_and_attach(dev)

    def _free_unit(self, name: str, dev: Device) -> int:
        """``devclass_alloc_unit``: the lowest unit no other device of the class holds."""
        used = {d.unit for d in self.devices
                if d is not dev and d.driver == name and d.unit is not None}
        unit = 0
        while unit in used:
            unit += 1
        return unit

    def device_probe_and_attach(self, dev: Device) -> int:
        """``device_probe`` (best non-positive probe value wins) then ``device_attach``."""
        best: tuple[int, DriverEntry] | None = None
        for drv in self.drivers.values():
            dev.driver, dev.unit = drv.name, self._free_unit(drv.name, dev)
            rv = drv.probe(self, dev)
            if rv <= 0 and (best is None or rv > best[0]):
                best = (rv, drv)
        if best is None:
            dev.driver = dev.unit = None
            dev.desc = None
            if not dev.donenomatch:
                dev.donenomatch = True
                self.devctl.devaddq("?", "", acpibus.acpi_child_location(self.ns, dev.handle),
                                    acpibus.acpi_pnpinfo(self.ns, dev.handle), dev.parent)
            return acpibus.ENXIO
        drv = best[1]
        dev.driver, dev.unit = drv.name, self._free_unit(drv.name, dev)
        drv.probe(self, dev)                 # re-run the winner, as device_probe_child does
        dev.state = "alive"
        return self.device_attach(dev)

    def device_sysctl_init(self, dev: Device) -> None:
        """``dev.<driver>`` and ``dev.<driver>.<unit>`` with the %-strings."""
        if f"dev.{dev.driver}" not in self.sysctl.nodes:
            ksysctl.SYSCTL_ADD_NODE(self.sysctl, f"dev.{dev.driver}")
        base = f"dev.{dev.driver}.{dev.unit}"
        ksysctl.SYSCTL_ADD_NODE(self.sysctl, base, "device_index")
        for leaf, value, descr in (
            ("%desc", dev.desc or "", "device description"),
            ("%driver", dev.driver or "", "device driver name"),
            ("%location", acpibus.acpi_child_location(self.ns, dev.handle), "device location"),
            ("%pnpinfo", acpibus.acpi_pnpinfo(self.ns, dev.handle), "device identification"),
            ("%parent", dev.parent, "parent device"),
        ):
            ksysctl.SYSCTL_ADD_STRING(self.sysctl, f"{base}.{leaf}", value, descr)

    def device_attach(self, dev: Device) -> int:
        self.device_sysctl_init(dev)
        self.printf(f"{dev.nameunit}: <{dev.desc}> on {dev.parent}")
        drv = self.drivers[dev.driver or ""]
        error = drv.attach(self, dev)
        if error != 0:
            self.printf(f"device_attach: {dev.nameunit} attach returned {error}")
            ksysctl.sysctl_remove_subtree(self.sysctl, f"dev.{dev.driver}.{dev.unit}")
            dev.driver = dev.unit = None     # devclass_delete_device: the unit is free again
            dev.softc = {}
            dev.state = "notpresent"
            return error
        self.random.random_harvest_direct(os.urandom(2), 2, RANDOM_ATTACH)
        dev.state = "attached"
        dev.donenomatch = False
        self.devctl.devaddq("+", dev.nameunit, acpibus.acpi_child_location(self.ns, dev.handle),
                            acpibus.acpi_pnpinfo(self.ns, dev.handle), dev.parent)
        return 0
