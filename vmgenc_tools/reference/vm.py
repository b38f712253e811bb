"""SimulatedVM(root): a FreeBSD guest with vmgenc(4), on a hypervisor preset, under a root.

State, shared by every process that opens the same root:

- ``${root}/.vmgenc-sim/kernel.tab``: what user space sees (sysctl OIDs, kenv,
  interfaces) — :mod:`vmgenc_tools.simstate`; ``dev.vmgenc.N.guid`` there *is*
  the driver's cache;
- ``${root}/.vmgenc-sim/vm.json``: the rest of the model (preset and hypervisor
  state, ACPI namespace, guest memory, devices and softcs, pending ACPI tasks,
  the devctl queue, harvested entropy, EVENTHANDLER counts, console, history).

A power-off (``boot`` of a running VM, ``reboot``, ``shutdown``, ``cold_clone``) first
kills what runs inside the guest, as a real one does (:func:`kill_guest_processes`).

Every operation takes the flock on ``${root}/.vmgenc-sim/lock``, loads both,
runs the kernel model and replaces both files atomically, so concurrent
processes (a ``sim clone`` next to the handler that devd started) never see a
torn state.  The devctl records an operation queues stay in the queue until a
consumer reads them (:meth:`SimulatedVM.drain_devctl`, one record per read, as
``/dev/devctl``) and hands them to devd (:meth:`SimulatedVM.deliver`).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import exitcodes, simstate
from ..generation import Generation, GenerationError
from ..hooks.hostid import hostid_of, valid_hostid  # rc.d/hostid rules, shared
from . import sysctl as ksysctl
from .devctl_queue import DEVCTL_DEFAULT_QUEUE_LEN, QUEUE_OID
from .driver import VMGENC_DRIVER, cache_guid
from .hypervisor import PRESETS, Preset, get_preset
from .kernel import Kernel, empty_model
from .memory import GuestMemory
from .random import RANDOM_PURE_VMGENID

if TYPE_CHECKING:
    from .devd import Dispatch

STATE_FILE = "vm.json"
STATE_VERSION = 1
HISTORY_MAX = 1000
SSH_KEY_TYPES = ("rsa", "ecdsa", "ed25519")
ENTROPY_BYTES = 4096
ZERO_UUID = "00000000-0000-0000-0000-000000000000"
SANDBOX_DIRS = ("etc", "etc/ssh", "var", "var/db", "var/run", "var/log", "boot", "tmp",
                "usr/local/etc/devd", "usr/local/etc/rc.d")
# What the port installs empty (pkg-plist "@dir etc/vmgenc/hooks.d"), 0755 whatever the umask:
# hooks validate and the runner refuse a group/world-writable chain.
HOOKS_DIRS = ("usr/local/etc/vmgenc", "usr/local/etc/vmgenc/hooks.d")


class SimError(RuntimeError):
    """An expected problem with a simulated VM: a one-line message and an exit code."""

    def __init__(self, message: str, code: int = exitcodes.STATE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ChangeResult:
    """What one scenario operation did."""

    op: str
    old: list[Generation]            # the driver's cached GUID per unit, before
    new: list[Generation]            # the driver's cached GUID per unit, after
    live: list[Generation]           # what the hypervisor wrote to guest memory
    records: list[str] = field(default_factory=list)   # devctl records queued
    console: list[str] = field(default_factory=list)   # console lines printed

    @property
    def changed(self) -> bool:
        return self.old != self.new


# -- rc.d/hostid and rc.d/hostid_save (libexec/rc/rc.d) ------------------------------------

def _random_guid_text() -> str:
    return str(uuid.uuid4())


def _random_mac(oui: str) -> str:
    return oui + ":" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


class SimulatedVM:
    """One simulated VM under ``root`` (created by :meth:`init`)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    # -- state ---------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return os.path.join(simstate.sim_dir(self.root), STATE_FILE)

    def exists(self) -> bool:
        return os.path.isfile(self.state_path)

    def _read_model(self) -> dict:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                model = json.load(f)
        except FileNotFoundError:
            raise SimError(f"no simulated VM under {self.root}: run "
                           f"'vmgenctl --root {self.root} sim init' first") from None
        except (OSError, ValueError) as e:
            raise SimError(f"simulated VM state {self.state_path} is unreadable ({e}): "
                           f"remove {simstate.sim_dir(self.root)} and run 'sim init'") from None
        if model.get("version") != STATE_VERSION:
            raise SimError(f"simulated VM state {self.state_path} has version "
                           f"{model.get('version')!r}, expected {STATE_VERSION}: run 'sim init' "
                           "in a fresh root")
        return model

    def model(self) -> dict:
        """A snapshot of the model state (read without the lock: files are replaced atomically)."""
        return self._read_model()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Kernel]:
        """Lock, load vm.json + kernel.tab, yield the kernel, commit both atomically."""
        with simstate.locked(self.root):
            model = self._read_model()
            kernel_tab = simstate.load(self.root) if simstate.is_simulated(self.root) \
                else simstate.KernelState()
            k = Kernel(model, kernel_tab, [VMGENC_DRIVER])
            yield k
            k.commit()
            self._write_model(model)
            simstate.save(self.root, k.sysctl)

    def _write_model(self, model: dict) -> None:
        os.makedirs(simstate.sim_dir(self.root), exist_ok=True)
        data = json.dumps(model, indent=1, sort_keys=True).encode()
        simstate.atomic_write(self.state_path, data)

    def preset(self) -> Preset:
        return PRESETS[self._read_model()["preset"]]

    # -- creation ------------------------------------------------------------------------
    def init(self, hypervisor: str = "qemu", guid: str | None = None,
             smbios_uuid: str | None = None, units: int = 1, ssh_keys: bool = True) -> None:
        """Create the VM: sandbox tree, host keys, configs, then the first power-on."""
        try:
            preset = get_preset(hypervisor)
        except ValueError as e:
            raise SimError(str(e), exitcodes.USAGE) from None
        first = self._parse_guid(guid) if guid else None
        smbios = self._parse_uuid(smbios_uuid, "--smbios-uuid") if smbios_uuid \
            else _random_guid_text()
        if not 1 <= units <= 8:
            raise SimError(f"--units {units}: a VM has 1 to 8 vmgenc devices", exitcodes.USAGE)
        os.makedirs(self.root, exist_ok=True)
        with simstate.locked(self.root):
            if self.exists():
                raise SimError(f"a simulated VM already exists under {self.root}: use another "
                               f"--root, or remove {simstate.sim_dir(self.root)} to start over")
            self._make_sandbox(ssh_keys)
            model = self._new_model(preset, first, smbios, units)
            self._write_model(model)
        with self._transaction() as k:
            self._power_on(k, "start", first_guids=[first] if first else None)

    @staticmethod
    def _parse_guid(text: str) -> Generation:
        try:
            return Generation.parse(text)
        except GenerationError as e:
            raise SimError(str(e), exitcodes.USAGE) from None

    @staticmethod
    def _parse_uuid(text: str, what: str) -> str:
        try:
            return str(uuid.UUID(text.strip()))
        except ValueError:
            raise SimError(f"{what} {text!r} is not a UUID (8-4-4-4-12 hex digits)",
                           exitcodes.USAGE) from None

    def _new_model(self, preset: Preset, first: Generation | None, smbios: str,
                   units: int) -> dict:
        prop = "auto"
        if preset.name == "qemu" and first is not None:
            prop = first.text
        return {
            "version": STATE_VERSION,
            "preset": preset.name,
            "power": "off",
            "boot_count": 0,
            "boot_time": 0,
            "hypervisor": {
                "units": units,
                "guid_property": prop,          # qemu's -device vmgenid,guid=
                "guids": [],                    # raw hex per unit, as last written
                "pending": None,                # GUIDs a cold clone set for the next start
                "smbios_uuid": smbios,
                "macs": {f"{preset.nic}0": _random_mac(preset.oui)},
                "tunables": {},                 # loader.conf-style kenv for the next boot
            },
            "history": [],
            **empty_model(),
        }

    def _make_sandbox(self, ssh_keys: bool) -> None:
        for d in SANDBOX_DIRS:
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        for d in HOOKS_DIRS:
            path = os.path.join(self.root, d)
            if not os.path.isdir(path):
                os.makedirs(path)
                os.chmod(path, 0o755)
        rc_conf = os.path.join(self.root, "etc", "rc.conf")
        if not os.path.exists(rc_conf):
            with open(rc_conf, "w", encoding="utf-8") as f:
                f.write('hostname="vmgenc-sim"\nvmgenc_enable="YES"\n')
        for rel in ("boot/entropy", "entropy"):
            path = os.path.join(self.root, rel)
            if not os.path.exists(path):
                simstate.atomic_write(path, os.urandom(ENTROPY_BYTES), 0o600)
                os.chmod(path, 0o600)
        if ssh_keys:
            generate_host_keys(os.path.join(self.root, "etc", "ssh"))
        install_devd_and_rc(self.root)

    # -- power -----------------------------------------------------------------------------
    def _next_guids(self, k: Kernel, preset: Preset, reason: str,
                    first: list[Generation] | None) -> list[bytes]:
        """The GUID bytes the hypervisor writes for this start/reboot, per unit."""
        hv = k.model["hypervisor"]
        units = hv["units"]
        old = [bytes.fromhex(h) for h in hv["guids"]]
        if first:
            return [first[0].raw] + [os.urandom(16) for _ in range(units - 1)]
        if hv.get("pending"):
            pending = [bytes.fromhex(h) for h in hv["pending"]]
            hv["pending"] = None
            return pending
        if reason == "reboot" and not preset.new_guid_on_reboot and len(old) == units:
            return old
        if preset.name == "qemu":
            prop = hv["guid_property"]
            text = _random_guid_text() if prop == "auto" else prop
            return [Generation.from_text(text).raw] + (
                old[1:] if len(old) == units and prop != "auto"
                else [os.urandom(16) for _ in range(units - 1)])
        if preset.new_guid_on_start or len(old) != units:
            return [os.urandom(16) for _ in range(units)]
        return old

    def _power_on(self, k: Kernel, reason: str,
                  first_guids: list[Generation] | None = None) -> None:
        """The hypervisor starts the VM; FreeBSD boots: ACPI probe/attach, rc.d/hostid."""
        model = k.model
        preset = PRESETS[model["preset"]]
        hv = model["hypervisor"]
        guids = self._next_guids(k, preset, reason, first_guids)
        hv["guids"] = [g.hex() for g in guids]
        # A fresh VM: firmware tables, zeroed memory, a new kernel.
        k.ns = preset.build_namespace(hv["units"])
        k.memory = GuestMemory()
        for unit, raw in enumerate(guids):
            k.memory.write(preset.guid_address(unit), raw)
        self._reset_kernel(k, preset)
        k.acpi_probe_children()
        self._rc_hostid(k)
        model["power"] = "running"
        model["boot_count"] += 1

    def _reset_kernel(self, k: Kernel, preset: Preset) -> None:
        model, hv = k.model, k.model["hypervisor"]
        now = time.time()
        model.update(power="booting", boot_time=now, devices=[], taskq=[],
                     devctl={}, random={}, eventhandler={})
        model["console"].append("---<<BOOT>>---")
        ks = simstate.KernelState()
        ks.kenv.update(hv["tunables"])
        ks.kenv["smbios.system.uuid"] = hv["smbios_uuid"]
        try:
            qlen = int(ks.kenv.get(QUEUE_OID, DEVCTL_DEFAULT_QUEUE_LEN))
        except ValueError:
            qlen = DEVCTL_DEFAULT_QUEUE_LEN
        # In OID-number order: KERN_OSTYPE, KERN_HOSTID, KERN_BOOTTIME, KERN_HOSTUUID, auto.
        ksysctl.SYSCTL_ADD_STRING(ks, "kern.ostype", "FreeBSD", "Operating system type")
        ksysctl.SYSCTL_ADD_ULONG(ks, "kern.hostid", 0, "Host ID", access="rw")
        ksysctl.SYSCTL_ADD_OPAQUE(ks, "kern.boottime",
                                  struct.pack("=qq", int(now), int((now % 1) * 1e6)),
                                  "S,timeval", "System boottime")
        ksysctl.SYSCTL_ADD_STRING(ks, "kern.hostuuid", ZERO_UUID, "Host UUID", access="rw")
        ksysctl.SYSCTL_ADD_STRING(ks, "kern.vm_guest", preset.vm_guest,
                                  "Virtual machine guest detected?")
        ksysctl.SYSCTL_ADD_INT(ks, QUEUE_OID, max(qlen, 0), "devctl queue length", access="rw")
        ks.ifaces.update(hv["macs"])
        k.rebind(ks)

    def _rc_hostid(self, k: Kernel) -> None:
        """rc.d/hostid start, then rc.d/hostid_save (files under the root)."""
        hostid_file = os.path.join(self.root, "etc", "hostid")
        machine_id_file = os.path.join(self.root, "etc", "machine-id")
        current = ""
        with contextlib.suppress(OSError):
            with open(hostid_file, encoding="utf-8") as f:
                current = f.readline().strip()
        if valid_hostid(current):
            new_uuid = current
        else:
            smbios = (k.kenv_get("smbios.system.uuid") or "").lower()
            if valid_hostid(smbios):
                new_uuid = smbios
            else:
                k.printf("hostid: unable to figure out a UUID from DMI data, "
                         "generating a new one")
                new_uuid = _random_guid_text()
        k.sysctl.nodes["kern.hostuuid"].value = simstate.encode_string(new_uuid)
        k.sysctl.nodes["kern.hostid"].value = simstate.encode_int("ulong", hostid_of(new_uuid))
        if current != new_uuid:
            simstate.atomic_write(hostid_file, (new_uuid + "\n").encode())
        machine_id = new_uuid.replace("-", "") + "\n"
        old_mid = ""
        with contextlib.suppress(OSError):
            with open(machine_id_file, encoding="utf-8") as f:
                old_mid = f.read()
        if old_mid != machine_id:
            simstate.atomic_write(machine_id_file, machine_id.encode(), 0o444)

    def _shutdown(self, k: Kernel) -> None:
        """Power off: the guest's processes die first (SIGKILL, no clean-up), then the kernel."""
        kill_guest_processes(self.root)
        up = int(time.time() - k.model.get("boot_time", 0))
        k.printf(f"Uptime: {up}s")
        k.model["power"] = "off"

    def _require_running(self, k: Kernel, what: str) -> None:
        if k.model["power"] != "running":
            raise SimError(f"cannot {what}: the simulated VM is powered off "
                           "(run 'vmgenctl sim boot' first)")

    # -- scenario operations ---------------------------------------------------------------
    def _snapshot(self, k: Kernel) -> tuple[list[Generation], int, int]:
        cached = [Generation(cache_guid(k, d)) for d in self._attached(k)]
        return cached, k.devctl.state.get("total", 0), len(k.model["console"])

    @staticmethod
    def _attached(k: Kernel) -> list:
        return sorted((d for d in k.devices if d.state == "attached"), key=lambda d: d.unit)

    def _result(self, k: Kernel, op: str,
                before: tuple[list[Generation], int, int]) -> ChangeResult:
        old, total0, con0 = before
        preset = PRESETS[k.model["preset"]]
        new = [Generation(cache_guid(k, d)) for d in self._attached(k)]
        live = [Generation(k.memory.read(preset.guid_address(u), 16))
                for u in range(k.model["hypervisor"]["units"])]
        n_new = k.devctl.state.get("total", 0) - total0
        queue = k.devctl.records
        records = list(queue[len(queue) - min(n_new, len(queue)):]) if n_new else []
        console = [c for c in k.model["console"][con0:] if c != "---<<BOOT>>---"]
        hist = k.model["history"]
        hist.append({"op": op, "at": datetime.datetime.now(datetime.timezone.utc)
                     .strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "boot": k.model["boot_count"],
                     "old": [g.hex for g in old], "new": [g.hex for g in new],
                     "live": [g.hex for g in live], "records": records})
        del hist[:-HISTORY_MAX]
        return ChangeResult(op, old, new, live, records, console)

    def boot(self) -> ChangeResult:
        """Power cycle (or power on): the preset's start semantics, then FreeBSD boots."""
        with self._transaction() as k:
            before = (self._snapshot(k)[0], 0, len(k.model["console"]))  # the queue restarts
            if k.model["power"] == "running":
                self._shutdown(k)
            self._power_on(k, "start")
            return self._result(k, "boot", before)

    def reboot(self) -> ChangeResult:
        """A guest-initiated reboot: the preset's reboot semantics (bhyve restarts)."""
        with self._transaction() as k:
            self._require_running(k, "reboot")
            before = (self._snapshot(k)[0], 0, len(k.model["console"]))  # the queue restarts
            self._shutdown(k)
            self._power_on(k, "reboot")
            return self._result(k, "reboot", before)

    def shutdown(self) -> None:
        with self._transaction() as k:
            if k.model["power"] == "running":
                self._shutdown(k)

    def clone(self, guid: str | None = None, run_tasks: bool = True) -> ChangeResult:
        """Run-time clone: the copy resumes with a new GUID and the hypervisor notifies."""
        return self._runtime_change("clone", guid, run_tasks)

    def restore(self, guid: str | None = None, run_tasks: bool = True) -> ChangeResult:
        """Restore of a snapshot into a running VM: new GUID, notify."""
        return self._runtime_change("restore", guid, run_tasks)

    def _runtime_change(self, op: str, guid: str | None, run_tasks: bool) -> ChangeResult:
        gen = self._parse_guid(guid) if guid else None
        with self._transaction() as k:
            self._require_running(k, op)
            preset = PRESETS[k.model["preset"]]
            if not preset.runtime_notify:
                raise SimError(
                    f"{preset.name} never notifies a running guest (no run-time {op}): use "
                    "'vmgenctl sim cold-clone' then 'vmgenctl sim boot' (a new GUID at every "
                    "start)", exitcodes.USAGE)
            before = self._snapshot(k)
            hv = k.model["hypervisor"]
            text = gen.text if gen else _random_guid_text()
            raws = [Generation.from_text(text).raw if preset.name == "qemu" or gen
                    else os.urandom(16)] + [os.urandom(16) for _ in range(hv["units"] - 1)]
            if preset.name == "qemu" and hv["guid_property"] != "auto":
                hv["guid_property"] = Generation(raws[0]).text
            self._hypervisor_write(k, preset, raws)
            self._hypervisor_notify(k, preset)
            if run_tasks:
                k.run_tasks()
            return self._result(k, op, before)

    def _hypervisor_write(self, k: Kernel, preset: Preset, raws: list[bytes]) -> None:
        hv = k.model["hypervisor"]
        for unit, raw in enumerate(raws):
            k.memory.write(preset.guid_address(unit), raw)
        hv["guids"] = [r.hex() for r in raws]

    def _hypervisor_notify(self, k: Kernel, preset: Preset) -> None:
        if preset.notify_method:
            k.run_gpe(preset.notify_method)
        else:
            for unit in range(k.model["hypervisor"]["units"]):
                k.ns.notify(preset.unit_path(unit), 0x80, k.dispatch_notify)

    def write_guid(self, guid: str, unit: int = 0) -> None:
        """Low level: the hypervisor writes a GUID into guest memory, without notifying."""
        gen = self._parse_guid(guid)
        with self._transaction() as k:
            self._require_running(k, "write a GUID")
            preset = PRESETS[k.model["preset"]]
            raws = [bytes.fromhex(h) for h in k.model["hypervisor"]["guids"]]
            raws[unit] = gen.raw
            self._hypervisor_write(k, preset, raws)

    def raise_gpe(self, run_tasks: bool = False) -> ChangeResult:
        """Low level: the hypervisor's notify path (GPE/GED/Notify 0x80), tasks optional."""
        with self._transaction() as k:
            self._require_running(k, "raise a notify")
            before = self._snapshot(k)
            self._hypervisor_notify(k, PRESETS[k.model["preset"]])
            if run_tasks:
                k.run_tasks()
            return self._result(k, "gpe", before)

    def run_tasks(self) -> ChangeResult:
        """Let the ACPI task threads run what is queued."""
        with self._transaction() as k:
            before = self._snapshot(k)
            k.run_tasks()
            return self._result(k, "tasks", before)

    def notify(self, value: int = 0x80, run_tasks: bool = True) -> ChangeResult:
        """AML ``Notify(dev, value)`` on every vmgenc device, the GUID unchanged."""
        if not 0 <= value <= 0xFF:
            raise SimError(f"notify value {value:#x} is out of range (0x00-0xff)",
                           exitcodes.USAGE)
        with self._transaction() as k:
            self._require_running(k, "notify")
            before = self._snapshot(k)
            preset = PRESETS[k.model["preset"]]
            for unit in range(k.model["hypervisor"]["units"]):
                k.ns.notify(preset.unit_path(unit), value, k.dispatch_notify)
            if run_tasks:
                k.run_tasks()
            return self._result(k, f"notify {value:#04x}", before)

    def cold_clone(self, guid: str | None = None, smbios_uuid: str | None = None) -> ChangeResult:
        """Offline copy: powered off, new GUID/SMBIOS UUID/MACs for the next start, no event."""
        gen = self._parse_guid(guid) if guid else None
        smbios = self._parse_uuid(smbios_uuid, "--smbios-uuid") if smbios_uuid \
            else _random_guid_text()
        with self._transaction() as k:
            before = self._snapshot(k)
            if k.model["power"] == "running":
                self._shutdown(k)
            preset = PRESETS[k.model["preset"]]
            hv = k.model["hypervisor"]
            text = gen.text if gen else _random_guid_text()
            raws = [Generation.from_text(text).raw] + [os.urandom(16)
                                                       for _ in range(hv["units"] - 1)]
            if preset.name == "qemu" and hv["guid_property"] != "auto":
                hv["guid_property"] = Generation(raws[0]).text
            hv["pending"] = [r.hex() for r in raws]
            hv["smbios_uuid"] = smbios
            hv["macs"] = {name: _random_mac(preset.oui) for name in hv["macs"]}
            result = self._result(k, "cold-clone", before)
            result.live = [Generation(r) for r in raws]
            k.model["history"][-1]["live"] = [g.hex for g in result.live]
            return result

    def set_tunable(self, name: str, value: str | None) -> None:
        """A loader.conf(5) tunable (kenv at the next boot), e.g. ``debug.acpi.disabled``."""
        with simstate.locked(self.root):
            model = self._read_model()
            tun = model["hypervisor"]["tunables"]
            if value is None:
                tun.pop(name, None)
            else:
                tun[name] = value
            self._write_model(model)

    # -- consumers ---------------------------------------------------------------------------
    def drain_devctl(self) -> list[str]:
        """Read /dev/devctl until it is empty: one record per read, oldest first."""
        out: list[str] = []
        with self._transaction() as k:
            while (rec := k.devctl.devread()) is not None:
                out.append(rec)
        return out

    def deliver(self, records: list[str] | None = None) -> list[tuple[str, Dispatch]]:
        """Hand devctl records to the devd model (``reference.devd``), one by one.

        devd parses its configuration first (a broken one stops it: the records
        stay queued, :class:`SimError`); then, with ``records`` None, the queue is
        drained.  Returns ``(record, devd's Dispatch)`` pairs.
        """
        from .devd import DevdError, load_devd

        try:
            devd = load_devd(self.root)
        except DevdError as e:
            raise SimError(f"{e} (the devctl records stay queued)", exitcodes.CONFIG) from None
        if records is None:
            records = self.drain_devctl()
        return [(rec, devd.dispatch(rec, run=True)) for rec in records]

    # -- observation ---------------------------------------------------------------------------
    def dmesg(self) -> str:
        """Console messages since the last boot."""
        lines = self._read_model()["console"]
        if "---<<BOOT>>---" in lines:
            lines = lines[len(lines) - 1 - lines[::-1].index("---<<BOOT>>---") + 1:]
        return "".join(line + "\n" for line in lines)

    def cached_guids(self) -> list[Generation]:
        """``dev.vmgenc.N.guid`` of every unit, as the driver exports them."""
        ks = simstate.load(self.root)
        out = []
        unit = 0
        while f"dev.vmgenc.{unit}.guid" in ks.nodes:
            out.append(Generation(ks.nodes[f"dev.vmgenc.{unit}.guid"].value))
            unit += 1
        return out

    def live_guids(self) -> list[Generation]:
        """The GUID bytes in guest memory (what the hypervisor last wrote), per unit."""
        model = self._read_model()
        preset = PRESETS[model["preset"]]
        mem = GuestMemory.from_json(model["memory"])
        return [Generation(mem.read(preset.guid_address(u), 16))
                for u in range(model["hypervisor"]["units"])]

    def harvested(self, source: str = RANDOM_PURE_VMGENID) -> list[bytes]:
        return [bytes.fromhex(h["data"]) for h in self._read_model()["random"].get("harvest", [])
                if h["source"] == source]

    def eventhandler_count(self, name: str = "acpi_vmgenc_event") -> int:
        return int(self._read_model()["eventhandler"].get(name, 0))

    def pending_tasks(self) -> int:
        return len(self._read_model()["taskq"])

    def info(self) -> dict:
        """A summary for ``sim info``."""
        model = self._read_model()
        preset = PRESETS[model["preset"]]
        hv = model["hypervisor"]
        cached = self.cached_guids() if model["power"] == "running" else []
        return {
            "root": self.root, "hypervisor": preset.name, "description": preset.description,
            "power": model["power"], "boot_count": model["boot_count"],
            "device_paths": [preset.unit_path(u) for u in range(hv["units"])],
            "guid_property": hv["guid_property"] if preset.name == "qemu" else None,
            "cached_guids": [g.text for g in cached],
            "cached_raw": [g.hex for g in cached],
            "live_guids": [Generation(bytes.fromhex(h)).text for h in hv["guids"]],
            "smbios_uuid": hv["smbios_uuid"], "macs": hv["macs"],
            "devctl_queued": len(model["devctl"].get("queue", [])),
            "pending_tasks": len(model["taskq"]),
        }


# -- power loss: the processes running "inside" the VM --------------------------------------

POWER_LOSS_WAIT_S = 10.0


def _opens(proc: object, st: os.stat_result) -> bool:
    """Whether the process has the file ``st`` open (the root's lock: its holder, a
    process that inherited it, or one waiting for it)."""
    import psutil

    p: psutil.Process = proc  # type: ignore[assignment]
    try:
        files = p.open_files()
    except psutil.Error:
        return False
    for f in files:
        try:
            fst = os.stat(f.path)
        except OSError:
            continue
        if (fst.st_dev, fst.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _lock_is_held(path: str) -> bool:
    """Whether some process holds the flock on ``path`` (tested without creating anything)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lock if we got it
    return False


def guest_lock_path(root: str) -> str:
    """The root's reconcile lock (``${vmgenc_dbdir}/lock``); the default dbdir if the
    configuration cannot be read (the handler cannot run then either)."""
    from ..config import Config
    from ..fastcheck import load_config
    from ..handler import Paths

    try:
        config = load_config(root)
    except Exception:  # noqa: BLE001 - a broken rc.conf: the default place
        config = Config(root=root)
    return Paths.of(config).lock


def guest_processes(root: str) -> list:
    """The processes running "inside" the VM under ``root``: those that have the root's
    lock file open (the holder, the worker that inherited it, a check waiting for it),
    their descendants (the hooks, in sessions of their own), and the rest of a worker's
    session.  The lock file itself tells who they are, not a pid in it or a command
    line (a reused pid, a relative ``--root``).  Never this process; an ancestor of
    this process among them (a hook that powers its own VM off) is an error."""
    import psutil

    path = guest_lock_path(root)
    if not _lock_is_held(path):  # the usual case, and cheap: nothing runs inside
        return []
    try:
        st = os.stat(path)
    except OSError:
        return []
    me = psutil.Process()
    ancestors = {p.pid for p in me.parents()}
    holders = [p for p in psutil.process_iter() if p.pid != me.pid and _opens(p, st)]
    inside = [p.pid for p in holders if p.pid in ancestors]
    if inside:
        raise SimError(f"cannot power off the simulated VM under {root} from inside it: "
                       f"pid {inside[0]}, which runs this command, holds {path} (run it "
                       "from outside the VM's hooks)", exitcodes.USAGE)
    spared = {me.pid, *ancestors}
    found: dict[int, psutil.Process] = {p.pid: p for p in holders}
    for holder in holders:
        with contextlib.suppress(psutil.Error):
            for child in holder.children(recursive=True):
                found.setdefault(child.pid, child)
        with contextlib.suppress(OSError):
            if os.getsid(holder.pid) == holder.pid and os.getsid(0) != holder.pid:
                for p in psutil.process_iter():  # the worker leads its session
                    with contextlib.suppress(OSError):
                        if os.getsid(p.pid) == holder.pid:
                            found.setdefault(p.pid, p)
    return [p for p in found.values() if p.pid not in spared]


def _alive(p: object) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.Error:
        return False


def kill_guest_processes(root: str, timeout: float = POWER_LOSS_WAIT_S) -> list[int]:
    """Power loss for the VM under ``root``: SIGKILL its processes and wait until they are
    gone (a zombie is gone: its descriptors, the lock among them, are closed).

    The tree is stopped first, then looked at again, so nothing it forks in between
    survives.  Returns the pids killed.
    """
    import psutil

    seen: dict[int, psutil.Process] = {}
    for _ in range(3):
        new = [p for p in guest_processes(root) if p.pid not in seen]
        for p in [q for q in seen.values() if _alive(q)]:
            with contextlib.suppress(psutil.Error):
                new += [c for c in p.children(recursive=True)
                        if c.pid not in seen and c.pid not in {n.pid for n in new}]
        if not new:
            break
        for p in new:
            try:
                p.send_signal(signal.SIGSTOP)
            except psutil.NoSuchProcess:
                continue
            except psutil.AccessDenied:
                for q in seen.values():  # leave things as they were
                    with contextlib.suppress(psutil.Error):
                        q.send_signal(signal.SIGCONT)
                raise SimError(f"power-off: cannot kill pid {p.pid}, which runs inside the "
                               f"simulated VM under {root} (run as its owner)",
                               exitcodes.ENVIRONMENT) from None
            seen[p.pid] = p
    for p in seen.values():
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while (alive := [p.pid for p in seen.values() if _alive(p)]) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    if alive:
        raise SimError(f"power-off: pid(s) {', '.join(map(str, alive))} of the simulated VM "
                       f"under {root} still run {timeout:g} s after SIGKILL",
                       exitcodes.ENVIRONMENT)
    return sorted(seen)


# -- sandbox files -----------------------------------------------------------------------------

def generate_host_keys(ssh_dir: str, types: tuple[str, ...] = SSH_KEY_TYPES) -> list[str]:
    """Real host keys, as ``sshd_keygen_alg`` makes them: only the missing ones, in parallel."""
    exe = shutil.which("ssh-keygen")
    if exe is None:
        raise SimError("ssh-keygen not found: install OpenSSH (e.g. 'apt-get install "
                       "openssh-client')", exitcodes.ENVIRONMENT)
    os.makedirs(ssh_dir, exist_ok=True)
    procs = []
    for alg in types:
        keyfile = os.path.join(ssh_dir, f"ssh_host_{alg}_key")
        if os.path.exists(keyfile):
            continue
        bits = ["-b", "2048"] if alg == "rsa" else []   # 2048: fast enough for a sandbox
        cmd = [exe, "-q", "-t", alg, *bits, "-f", keyfile, "-N", ""]
        procs.append((keyfile, subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    made = []
    for keyfile, p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SimError(f"ssh-keygen failed for {keyfile}: {err.decode().strip()}",
                           exitcodes.ENVIRONMENT)
        made.append(keyfile)
    return made


def install_devd_and_rc(root: str) -> list[str]:
    """Stock-like devd.conf and the devd snippet (devd model), and the rc.d script."""
    from .. import shipped
    from .devd import install_configs

    installed = install_configs(root)
    path = os.path.join(root, "usr/local/etc/rc.d/vmgenc")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    simstate.atomic_write(path, shipped.install_text("rc.d/vmgenc").encode(), 0o555)
    os.chmod(path, 0o555)
    return installed + [path]
