"""Hypervisor presets: the ACPI objects each one declares and when its GUID changes.

======  =====================  ======================  ===========================  ======
preset  device path            _HID                    _CID(s)                      ADDR
======  =====================  ======================  ===========================  ======
qemu    \\_SB_.VGEN            QEMUVGID                VM_Gen_Counter               Method
bhyve   \\_SB_.GENC            Bhyve_V_Gen_Counter_V1  VM_Gen_Counter               Name
xen     \\_SB_.PCI0.ISA_.VGID  EisaId("XEN0000")       VM_Gen_Counter               Method
hyperv  \\_SB_.GENC [U]        MSFT1002 [U]            VM_Gen_Counter, VMGENCTR, …  Method
fc      \\_SB_.VGEN            FCVMGID                 VM_Gen_Counter               Name
======  =====================  ======================  ===========================  ======

(fc = firecracker.  [U]: an assumption of this model, not verified; see below.)

Sources: QEMU ``hw/acpi/vmgenid.c`` (``VGIA``, ``ADDR`` = ``Package(2){VGIA+40, 0}``,
``_STA`` 0 while ``VGIA`` is 0, ``\\_GPE._E05`` → ``Notify(\\_SB.VGEN, 0x80)``);
bhyve ``usr.sbin/bhyve/vmgenc.c`` (``_HID`` is a Method, ``ADDR`` a Name, a new
random GUID from ``getentropy`` at every start, the GPE raise is ``#if 0``);
Xen ``tools/libacpi/dsdt.asl``; Firecracker ``src/vmm/src/devices/acpi/vmgenid.rs``
(``ADDR`` a Name, new GUID at every create and snapshot load).  Hyper-V: only
its two CIDs ``VM_Gen_Counter`` and ``VMGENCTR`` are sourced (Linux commit
"virt: vmgenid: Recognize new CID added by Hyper-V"); Hyper-V's DSDT was not read.

Not verified [U] (assumptions of this model, facts §6.4 and §9):

- Hyper-V's ACPI path ``\\_SB_.GENC``, its ``_HID "MSFT1002"``, the third CID
  ``Hyper_V_Gen_Counter_V1``, the ``GCAL``/``GCAH`` names ``ADDR`` reads and the
  GPE ``\\_GPE._E00`` that notifies the device: stand-in names, not values taken
  from a Hyper-V DSDT;
- Xen's and Firecracker's notify AML (modelled as a direct ``Notify(dev, 0x80)``
  and a GED ``_EVT`` method);
- the guest-physical addresses, which are plausible values, not the hypervisors'
  exact ones.

GUID-change rules (``start``: the hypervisor process starts; ``reboot``: the
guest reboots; ``runtime``: clone/restore of a running VM raises a notify):

- qemu: ``guid=auto`` (default) → new GUID at every QEMU start; a fixed ``guid=``
  keeps it; a guest reboot keeps the process, so the GUID; restore/migration
  writes the restoring process's ``guid=`` and raises the GPE;
- bhyve: new random GUID at every start (a guest reboot restarts bhyve), never a
  run-time notify;
- firecracker: new GUID at every create and every snapshot load; a guest reboot
  ends the microVM, the next start is a new create;
- xen, hyperv: the GUID changes only when the VM is cloned or restored (an
  assumption [U]: the facts source neither hypervisor's change rule).
"""

from __future__ import annotations

from dataclasses import dataclass

from .acpi import AcpiNamespace

VMGENID_GUID_OFFSET = 40     # QEMU: the "OVMF SDT Header Probe Suppressor"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    vm_guest: str                  # kern.vm_guest
    device_path: str               # unit 0's ACPI path (normalised)
    nic: str                       # interface driver name (unit 0 = <nic>0)
    oui: str                       # MAC prefix the hypervisor uses
    new_guid_on_start: bool | None     # None: qemu's guid property decides
    new_guid_on_reboot: bool
    runtime_notify: bool
    notify_method: str | None      # AML method a notify runs (GPE/GED), None: direct Notify
    guid_page: int                 # guest-physical page holding the GUID(s)

    def guid_address(self, unit: int) -> int:
        """Where unit ``unit``'s 16 GUID bytes live in guest memory."""
        if self.name == "qemu":
            return self.guid_page + unit * 0x1000 + VMGENID_GUID_OFFSET
        return self.guid_page + unit * 0x1000

    def unit_path(self, unit: int) -> str:
        """Unit 0 is the real device; further units (a test aid) get sibling names."""
        if unit == 0:
            return self.device_path
        head, _, _ = self.device_path.rpartition(".")
        return f"{head}.VGN{unit}"

    def build_namespace(self, units: int) -> AcpiNamespace:
        """The ACPI objects the hypervisor's tables declare for ``units`` devices."""
        ns = AcpiNamespace()
        paths = [self.unit_path(u) for u in range(units)]
        for unit, path in enumerate(paths):
            _BUILDERS[self.name](self, ns, unit, path)
        if self.notify_method:
            ns.add_method(self.notify_method,
                          ["seq", [["notify", p, 0x80] for p in paths]])
        return ns


def _lohi(addr: int) -> list:
    return ["pkg", [["int", addr & 0xFFFFFFFF], ["int", addr >> 32]]]


def _qemu(p: Preset, ns: AcpiNamespace, unit: int, path: str) -> None:
    vgia = "\\VGIA" if unit == 0 else f"\\VGI{unit}"
    ns.add_name(vgia, ["int", p.guid_address(unit) - VMGENID_GUID_OFFSET])
    ns.add_device(path)
    ns.add_name(f"{path}._HID", ["str", "QEMUVGID"])
    ns.add_name(f"{path}._CID", ["str", "VM_Gen_Counter"])
    ns.add_name(f"{path}._DDN", ["str", "VM_Gen_Counter"])
    ns.add_method(f"{path}._STA", ["sta_if", ["ref", vgia]])
    ns.add_method(f"{path}.ADDR", ["pkg", [["add", ["ref", vgia], ["int", VMGENID_GUID_OFFSET]],
                                           ["int", 0]]])


def _bhyve(p: Preset, ns: AcpiNamespace, unit: int, path: str) -> None:
    ns.add_device(path)
    ns.add_name(f"{path}._CID", ["str", "VM_Gen_Counter"])
    ns.add_method(f"{path}._HID", ["str", "Bhyve_V_Gen_Counter_V1"])
    ns.add_name(f"{path}._UID", ["int", 0])
    ns.add_name(f"{path}._DDN", ["str", "VM_Gen_Counter"])
    ns.add_name(f"{path}.ADDR", _lohi(p.guid_address(unit)))


def _xen(p: Preset, ns: AcpiNamespace, unit: int, path: str) -> None:
    vgia = "\\_SB_.VGIA" if unit == 0 else f"\\_SB_.VGI{unit}"
    ns.add_name(vgia, ["int", p.guid_address(unit)])
    ns.add_device(path)
    ns.add_name(f"{path}._HID", ["eisaid", "XEN0000"])
    ns.add_name(f"{path}._UID", ["int", 0])
    ns.add_name(f"{path}._CID", ["str", "VM_Gen_Counter"])
    ns.add_name(f"{path}._DDN", ["str", "VM_Gen_Counter"])
    ns.add_method(f"{path}._STA", ["sta_if", ["ref", vgia]])
    ns.add_method(f"{path}.ADDR", ["pkg", [["ref", vgia], ["int", 0]]])


def _hyperv(p: Preset, ns: AcpiNamespace, unit: int, path: str) -> None:
    # Only the CIDs "VM_Gen_Counter" and "VMGENCTR" are sourced.  The _HID, the
    # third CID, the path and the GCAL/GCAH names are assumptions [U]: Hyper-V's
    # DSDT was not read (facts §6.4, §9).
    lo, hi = ("\\GCAL", "\\GCAH") if unit == 0 else (f"\\GCL{unit}", f"\\GCH{unit}")
    addr = p.guid_address(unit)
    ns.add_name(lo, ["int", addr & 0xFFFFFFFF])
    ns.add_name(hi, ["int", addr >> 32])
    ns.add_device(path)
    ns.add_name(f"{path}._HID", ["str", "MSFT1002"])
    ns.add_name(f"{path}._CID", ["pkg", [["str", "VM_Gen_Counter"], ["str", "VMGENCTR"],
                                         ["str", "Hyper_V_Gen_Counter_V1"]]])
    ns.add_name(f"{path}._UID", ["int", 0])
    ns.add_name(f"{path}._DDN", ["str", "VM_Gen_Counter"])
    ns.add_method(f"{path}.ADDR", ["pkg", [["ref", lo], ["ref", hi]]])


def _firecracker(p: Preset, ns: AcpiNamespace, unit: int, path: str) -> None:
    ns.add_device(path)
    ns.add_name(f"{path}._HID", ["str", "FCVMGID"])
    ns.add_name(f"{path}._CID", ["str", "VM_Gen_Counter"])
    ns.add_name(f"{path}._DDN", ["str", "VM_Gen_Counter"])
    ns.add_name(f"{path}.ADDR", _lohi(p.guid_address(unit)))


_BUILDERS = {"qemu": _qemu, "bhyve": _bhyve, "xen": _xen, "hyperv": _hyperv,
             "firecracker": _firecracker}

PRESETS: dict[str, Preset] = {
    "qemu": Preset("qemu", "QEMU/KVM with -device vmgenid", "kvm", "\\_SB_.VGEN",
                   "vtnet", "52:54:00", None, False, True, "\\_GPE._E05", 0x7FFF0000),
    "bhyve": Preset("bhyve", "FreeBSD bhyve", "bhyve", "\\_SB_.GENC", "vtnet", "58:9c:fc",
                    True, True, False, "\\_GPE._E00", 0xFFBF0000),
    "xen": Preset("xen", "Xen HVM (hvmloader/libacpi)", "xen", "\\_SB_.PCI0.ISA_.VGID",
                  "xn", "00:16:3e", False, False, True, None, 0xFC00A000),
    # Hyper-V: the path \_SB_.GENC and the GPE \_GPE._E00 are assumptions [U].
    "hyperv": Preset("hyperv", "Microsoft Hyper-V / Azure", "hv", "\\_SB_.GENC", "hn",
                     "00:15:5d", False, False, True, "\\_GPE._E00", 0xF7FD0000),
    "firecracker": Preset("firecracker", "Firecracker microVM", "kvm", "\\_SB_.VGEN",
                          "vtnet", "06:00:ac", True, True, True, "\\_SB_.GED_._EVT",
                          0x000C0000),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown hypervisor {name!r}: use one of {', '.join(PRESETS)}"
        ) from None
