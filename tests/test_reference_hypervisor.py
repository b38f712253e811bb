"""Hypervisor presets: ACPI paths and IDs as FreeBSD sees them, and when each changes the GUID."""

from __future__ import annotations

import pytest

from vmgenc_tools import exitcodes, simstate
from vmgenc_tools.reference.hypervisor import PRESETS
from vmgenc_tools.reference.vm import SimError, SimulatedVM

# Path, %pnpinfo, kern.vm_guest, NIC, OUI per preset: these pin the model.  For
# Hyper-V only the CIDs are sourced (facts §6.4); its path \_SB_.GENC and _HID
# MSFT1002 below pin the model's assumption [U], not a verified fact (facts §9).
IDS = {
    "qemu": ("\\_SB_.VGEN", "_HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER", "kvm", "vtnet0",
             "52:54:00"),
    "bhyve": ("\\_SB_.GENC", "_HID=BHYVE_V_GEN_COUNTER_V1 _UID=0 _CID=VM_GEN_COUNTER", "bhyve",
              "vtnet0", "58:9c:fc"),
    "xen": ("\\_SB_.PCI0.ISA_.VGID", "_HID=XEN0000 _UID=0 _CID=VM_GEN_COUNTER", "xen", "xn0",
            "00:16:3e"),
    "hyperv": ("\\_SB_.GENC", "_HID=MSFT1002 _UID=0 _CID=VM_GEN_COUNTER", "hv", "hn0",
               "00:15:5d"),                       # path and _HID: assumptions [U]
    "firecracker": ("\\_SB_.VGEN", "_HID=FCVMGID _UID=0 _CID=VM_GEN_COUNTER", "kvm", "vtnet0",
                    "06:00:ac"),
}


def make_vm(tmp_path, hv: str, **kw) -> SimulatedVM:
    vm = SimulatedVM(str(tmp_path / hv))
    vm.init(hv, ssh_keys=False, **kw)
    return vm


def string_oid(root: str, name: str) -> str:
    return simstate.load(root).nodes[name].value.rstrip(b"\0").decode()


@pytest.mark.parametrize("hv", sorted(IDS))
def test_preset_path_ids_and_attach_record(tmp_path, hv):
    """The ``+vmgenc0`` record and %location/%pnpinfo (facts §2.4) for each preset's IDS
    row; for hyperv the path and ``_HID=MSFT1002`` pin the model's assumption [U]."""
    path, pnp, vm_guest, nic, oui = IDS[hv]
    vm = make_vm(tmp_path, hv)
    assert vm.drain_devctl() == [f"+vmgenc0 at handle={path} {pnp} on acpi0\n"]
    assert string_oid(vm.root, "dev.vmgenc.0.%location") == f"handle={path}"
    assert string_oid(vm.root, "dev.vmgenc.0.%pnpinfo") == pnp
    assert string_oid(vm.root, "kern.vm_guest") == vm_guest
    ifaces = simstate.load(vm.root).ifaces
    assert list(ifaces) == [nic] and ifaces[nic].startswith(oui + ":")


@pytest.mark.parametrize("hv", [h for h in sorted(IDS) if PRESETS[h].runtime_notify])
def test_preset_runtime_change_line_names_the_device_path(tmp_path, hv):
    vm = make_vm(tmp_path, hv)
    res = vm.restore()
    assert res.changed
    assert res.records == [f"!system=ACPI subsystem=VMGenerationCounter type={IDS[hv][0]} "
                           "notify=0x00\n"]


def test_hyperv_declares_both_cids(tmp_path):
    """VM_Gen_Counter and VMGENCTR are sourced (facts §6.4, Linux's "Recognize new CID
    added by Hyper-V"); the path and the third CID pin the model's assumption [U]."""
    ns = PRESETS["hyperv"].build_namespace(1)
    assert ns.AcpiGetObjectInfo("\\_SB_.GENC").cids == (
        "VM_GEN_COUNTER", "VMGENCTR", "HYPER_V_GEN_COUNTER_V1")


def test_bhyve_hid_is_a_method_and_addr_a_name():
    ns = PRESETS["bhyve"].build_namespace(1)
    assert ns.objects["\\_SB_.GENC._HID"]["kind"] == "method"
    assert ns.objects["\\_SB_.GENC.ADDR"]["kind"] == "name"
    assert PRESETS["firecracker"].build_namespace(1).objects["\\_SB_.VGEN.ADDR"]["kind"] \
        == "name"


def test_qemu_addr_points_40_bytes_into_the_vgia_blob():
    p = PRESETS["qemu"]
    ns = p.build_namespace(1)
    addr = ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)
    assert addr.elements[0].value == ns.AcpiEvaluateObject("\\", "VGIA", 72).value + 40
    assert addr.elements[0].value == p.guid_address(0)


# -- GUID-change semantics ------------------------------------------------------------------

def cached(vm: SimulatedVM):
    return vm.cached_guids()[0]


def test_qemu_guid_auto_is_new_at_every_start_kept_over_reboot(tmp_path):
    vm = make_vm(tmp_path, "qemu")
    g0 = cached(vm)
    vm.reboot()
    assert cached(vm) == g0
    vm.boot()
    assert cached(vm) != g0


def test_qemu_fixed_guid_survives_restarts(tmp_path):
    vm = make_vm(tmp_path, "qemu", guid="324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")
    assert cached(vm).hex == "0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"
    vm.boot()
    vm.reboot()
    assert cached(vm).text == "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"


def test_bhyve_new_guid_every_start_including_reboot_and_never_a_notify(tmp_path):
    vm = make_vm(tmp_path, "bhyve")
    seen = {cached(vm)}
    vm.reboot()
    seen.add(cached(vm))
    vm.boot()
    seen.add(cached(vm))
    assert len(seen) == 3
    path, pnp = IDS["bhyve"][:2]
    # Each start restarts the devctl queue: only the last boot's attach record is left.
    assert vm.drain_devctl() == [f"+vmgenc0 at handle={path} {pnp} on acpi0\n"]
    for op in (vm.clone, vm.restore):
        with pytest.raises(SimError) as e:
            op()
        assert e.value.code == exitcodes.USAGE and "cold-clone" in str(e.value)


def test_firecracker_new_guid_at_every_create_and_snapshot_load(tmp_path):
    vm = make_vm(tmp_path, "firecracker")
    g0 = cached(vm)
    vm.boot()
    g1 = cached(vm)
    res = vm.restore()
    assert len({g0, g1, cached(vm)}) == 3 and res.records


def test_firecracker_reboot_is_a_new_create_with_a_new_guid(tmp_path):
    """Facts §6.4: a new GUID "at each create or restore".  A guest reboot ends the
    microVM ("Firecracker exits on CPU reset", docs/api_requests/actions.md; not in the
    facts), so the next start is a create: a new GUID, and no VMGenerationCounter event."""
    vm = make_vm(tmp_path, "firecracker")
    g0 = cached(vm)
    res = vm.reboot()
    assert res.old == [g0] and res.new == [cached(vm)] != [g0]
    assert vm.live_guids() == vm.cached_guids()
    path, pnp = IDS["firecracker"][:2]
    assert vm.drain_devctl() == [f"+vmgenc0 at handle={path} {pnp} on acpi0\n"]


@pytest.mark.parametrize("hv", ["xen", "hyperv"])
def test_xen_and_hyperv_change_only_on_clone_or_restore(tmp_path, hv):
    vm = make_vm(tmp_path, hv)
    g0 = cached(vm)
    vm.boot()
    vm.reboot()
    assert cached(vm) == g0
    vm.clone()
    g1 = cached(vm)
    vm.restore()
    assert len({g0, g1, cached(vm)}) == 3


@pytest.mark.parametrize("hv", sorted(IDS))
def test_cold_clone_changes_guid_at_next_start_without_an_event(tmp_path, hv):
    vm = make_vm(tmp_path, hv)
    vm.drain_devctl()
    g0 = cached(vm)
    res = vm.cold_clone(guid="9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910")
    assert res.records == []
    vm.boot()
    assert cached(vm).text == "9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910" != g0.text
    assert [r[0] for r in vm.drain_devctl()] == ["+"]     # no VMGenerationCounter line
