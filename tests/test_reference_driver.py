"""vmgenc(4) branch by branch: one test per branch of sys/dev/vmgenc/vmgenc_acpi.c.

Each test names the C function it mirrors.  The kernel is built in memory (no
files): an ACPI namespace, guest memory, a sysctl tree, the driver.
"""

from __future__ import annotations

import errno

import pytest

from vmgenc_tools import simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.reference import acpibus, driver
from vmgenc_tools.reference.acpi import AcpiNamespace
from vmgenc_tools.reference.acpibus import BUS_PROBE_DEFAULT, BUS_PROBE_LOW_PRIORITY, ENXIO
from vmgenc_tools.reference.eventhandler import EVENTHANDLER_DEREGISTER, EVENTHANDLER_REGISTER
from vmgenc_tools.reference.hypervisor import PRESETS
from vmgenc_tools.reference.kernel import Device, Kernel, empty_model
from vmgenc_tools.reference.random import RANDOM_ATTACH, RANDOM_PURE_VMGENID
from vmgenc_tools.reference.sysctl import SYSCTL_ADD_INT, sysctlbyname
from vmgenc_tools.sysctl.errors import SysctlError

A = Generation.from_text("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")
B = Generation.from_text("9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910")
C = Generation.from_text("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")
VGEN = "\\_SB_.VGEN"
QEMU = PRESETS["qemu"]
CHANGE_LINE = "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00\n"


def make_kernel(ns: AcpiNamespace | None = None, guid: Generation = A,
                kenv: dict[str, str] | None = None, units: int = 1) -> Kernel:
    """A booted-enough kernel: namespace (QEMU's by default) and the GUID in memory."""
    ks = simstate.KernelState()
    ks.kenv.update(kenv or {})
    SYSCTL_ADD_INT(ks, "hw.bus.devctl_queue", 1000, access="rw")
    k = Kernel(empty_model(), ks, [driver.VMGENC_DRIVER])
    k.ns = ns if ns is not None else QEMU.build_namespace(units)
    for unit in range(units):
        k.memory.write(QEMU.guid_address(unit), guid.raw)
    return k


def attached(k: Kernel) -> list[Device]:
    k.acpi_probe_children()
    return [d for d in k.devices if d.state == "attached"]


def vgen_ns(hid: str | None = None, cids: list[str] | None = None,
            addr: list | None = None, addr_kind: str = "method") -> AcpiNamespace:
    """One device at \\_SB_.VGEN with the given IDs and ADDR term."""
    ns = AcpiNamespace()
    ns.add_device(VGEN)
    if hid is not None:
        ns.add_name(f"{VGEN}._HID", ["str", hid])
    for cid in cids or []:
        ns.add_name(f"{VGEN}._CID", ["str", cid])
    if addr is not None:
        (ns.add_method if addr_kind == "method" else ns.add_name)(f"{VGEN}.ADDR", addr)
    return ns


def probe(k: Kernel) -> tuple[int, Device]:
    dev = Device(handle=VGEN, driver="vmgenc", unit=0)
    return driver.vmgenc_probe(k, dev), dev


# -- vmgenc_probe ------------------------------------------------------------------------

@pytest.mark.parametrize("disabled", ["vmgenc", "all", "hostres vmgenc", "vm"])
def test_vmgenc_probe_acpi_disabled_returns_enxio(disabled):
    rv, dev = probe(make_kernel(kenv={"debug.acpi.disabled": disabled}))
    assert rv == ENXIO and dev.desc is None


def test_vmgenc_probe_acpi_disabled_compares_only_the_words_length():
    """acpi_disabled uses strncmp(word, subsys, strlen(word)): "vmgencx" does not disable."""
    rv, _ = probe(make_kernel(kenv={"debug.acpi.disabled": "vmgencx"}))
    assert rv == BUS_PROBE_LOW_PRIORITY


def test_vmgenc_probe_cid_match_is_low_priority_and_sets_desc():
    rv, dev = probe(make_kernel())              # QEMU: _CID "VM_Gen_Counter" (repaired)
    assert rv == BUS_PROBE_LOW_PRIORITY
    assert dev.desc == "VM Generation Counter"


def test_vmgenc_probe_hid_match_is_default_priority():
    rv, dev = probe(make_kernel(vgen_ns(hid="VM_GEN_COUNTER")))
    assert rv == BUS_PROBE_DEFAULT and dev.desc == "VM Generation Counter"


def test_vmgenc_probe_matches_lowercase_cid_only_through_acpica_repair():
    rv, _ = probe(make_kernel(vgen_ns(hid="ABCD0001", cids=["vm_gen_counter"])))
    assert rv == BUS_PROBE_LOW_PRIORITY


def test_vmgenc_probe_no_match_returns_enxio_without_desc():
    rv, dev = probe(make_kernel(vgen_ns(hid="ABCD0001", cids=["VMGENCTR"])))
    assert rv == ENXIO and dev.desc is None    # FreeBSD does not list "VMGENCTR"


# -- acpi_GetPackedUINT64 -------------------------------------------------------------

def attach_messages(addr: list | None, addr_kind: str = "method") -> tuple[Kernel, list[str]]:
    k = make_kernel(vgen_ns(cids=["VM_Gen_Counter"], addr=addr, addr_kind=addr_kind))
    devs = attached(k)
    assert devs == []
    return k, k.model["console"]


def test_acpi_GetPackedUINT64_evaluate_failure_prints_acpi_status():
    k, console = attach_messages(None)
    assert console == [
        "vmgenc0: <VM Generation Counter> on acpi0",
        "vmgenc0: acpi_GetPackedUINT64(\\_SB_.VGEN::ADDR()): AE_NOT_FOUND",
        "device_attach: vmgenc0 attach returned 6",
    ]


def test_acpi_GetPackedUINT64_method_failure_prints_its_status():
    _, console = attach_messages(["fail", "AE_AML_DIVIDE_BY_ZERO"])
    assert console[1] == "vmgenc0: acpi_GetPackedUINT64(\\_SB_.VGEN::ADDR()): " \
                         "AE_AML_DIVIDE_BY_ZERO"


def test_acpi_GetPackedUINT64_package_larger_than_param3_overflows_the_buffer():
    """A 3-element package does not fit ``ACPI_OBJECT param[3]``.  AE_BUFFER_OVERFLOW
    (the first message, not "Wrong number of results") is the model's assumption:
    inferred, not checked against ACPICA (facts §1.3 [U], §9)."""
    _, console = attach_messages(["pkg", [["int", 0x1000], ["int", 0], ["int", 0]]])
    assert console[1].endswith("::ADDR()): AE_BUFFER_OVERFLOW")


@pytest.mark.parametrize("term, typ", [(["int", 0x1000], "0x1"), (["str", "x"], "0x2")])
def test_acpi_GetPackedUINT64_wrong_type(term, typ):
    _, console = attach_messages(term)
    assert console[1] == f"vmgenc0: acpi_GetPackedUINT64(\\_SB_.VGEN::ADDR()): Wrong type {typ}"


@pytest.mark.parametrize("count", [0, 1])
def test_acpi_GetPackedUINT64_wrong_number_of_results(count):
    _, console = attach_messages(["pkg", [["int", 0x1000]] * count])
    assert console[1].endswith(f"::ADDR()): Wrong number of results {count}")


def test_acpi_GetPackedUINT64_wrong_type_results():
    _, console = attach_messages(["pkg", [["pkg", []], ["int", 0]]])
    assert console[1].endswith("::ADDR()): Wrong type results 0x4, 0x1")


def test_acpi_GetPackedUINT64_zero_address_is_enxio_without_message():
    k, console = attach_messages(["pkg", [["int", 0], ["int", 0]]])
    assert console == ["vmgenc0: <VM Generation Counter> on acpi0",
                       "device_attach: vmgenc0 attach returned 6"]
    assert "dev.vmgenc.0.guid" not in k.sysctl.nodes


def test_acpi_GetPackedUINT64_masks_the_low_element_only():
    k = make_kernel(vgen_ns(cids=["VM_Gen_Counter"], addr=["pkg", [["int", 0xAB_0000_1028],
                                                                    ["int", 0x2]]]))
    dev = Device(handle=VGEN, driver="vmgenc", unit=0)
    assert driver.acpi_GetPackedUINT64(k, dev, VGEN, "ADDR") == (0, 0x2_0000_1028)


def test_acpi_GetPackedUINT64_reads_addr_given_as_a_name():
    """Firecracker and bhyve declare ADDR with Name(), not Method()."""
    k = make_kernel(vgen_ns(cids=["VM_Gen_Counter"], addr=["pkg", [["int", 0x5000],
                                                                    ["int", 0]]],
                            addr_kind="name"))
    dev = Device(handle=VGEN, driver="vmgenc", unit=0)
    assert driver.acpi_GetPackedUINT64(k, dev, VGEN, "ADDR") == (0, 0x5000)


# -- vmgenc_attach ----------------------------------------------------------------------

def test_vmgenc_attach_success():
    k = make_kernel()
    (dev,) = attached(k)
    node = k.sysctl.nodes["dev.vmgenc.0.guid"]
    assert (node.kind, node.fmt, node.access) == ("opaque", "", "rd")
    assert node.descr == "latest cached VM generation counter (128-bit UUID)"
    assert node.value == A.raw                                   # cache = guest memory
    assert dev.softc["vmg_pguid"] == QEMU.guid_address(0)
    assert k.random.state["sources"] == [{"ident": "VM Generation ID",
                                          "source": RANDOM_PURE_VMGENID}]
    assert k.random.chunks(RANDOM_PURE_VMGENID) == [A.raw[:8], A.raw[8:]]
    assert len(k.random.chunks(RANDOM_ATTACH)) == 1              # device_attach's own
    assert k.ns.handlers == {VGEN: "vmgenc0"}
    assert k.model["console"] == ["vmgenc0: <VM Generation Counter> on acpi0",
                                  "random: registering fast source VM Generation ID"]
    # No VMGenerationCounter event at attach; newbus queues the attach record.
    assert k.devctl.records == [
        "+vmgenc0 at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER on acpi0\n"]
    strings = {n: k.sysctl.nodes[f"dev.vmgenc.0.{n}"].value.rstrip(b"\0").decode()
               for n in ("%desc", "%driver", "%location", "%pnpinfo", "%parent")}
    assert strings == {"%desc": "VM Generation Counter", "%driver": "vmgenc",
                       "%location": "handle=\\_SB_.VGEN",
                       "%pnpinfo": "_HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER",
                       "%parent": "acpi0"}


def test_vmgenc_attach_failure_frees_the_unit_and_its_sysctl_tree():
    ns = QEMU.build_namespace(2)
    ns.remove(f"{VGEN}.ADDR")                 # unit 0's device cannot attach
    k = make_kernel(ns, units=2)
    devs = attached(k)
    assert [(d.handle, d.nameunit) for d in devs] == [("\\_SB_.VGN1", "vmgenc0")]
    assert "device_attach: vmgenc0 attach returned 6" in k.model["console"]
    assert k.sysctl.nodes["dev.vmgenc.0.%location"].value == b"handle=\\_SB_.VGN1\0"


def test_vmgenc_attach_not_probed_when_sta_says_absent():
    """QEMU's _STA returns 0 while VGIA is 0: the device stays disabled (acpi_probe_child)."""
    ns = QEMU.build_namespace(1)
    ns.set_name("\\VGIA", ["int", 0])
    k = make_kernel(ns)
    assert attached(k) == []
    assert k.model["console"] == [] and k.devctl.records == []


def test_vmgenc_attach_two_units():
    k = make_kernel(units=2)
    devs = attached(k)
    assert [d.nameunit for d in devs] == ["vmgenc0", "vmgenc1"]
    assert k.sysctl.nodes["dev.vmgenc.1.guid"].value == A.raw
    assert len(k.random.state["sources"]) == 2


def sysctl_errno(root: str, name: str) -> int | None:
    """``sysctlbyname(name)`` with a 16-byte buffer: its errno, or None on success."""
    try:
        sysctlbyname(root, name, 16)
    except SysctlError as e:
        return e.errno
    return None


@pytest.mark.parametrize("case", ["acpi_disabled", "zero_addr"])
def test_vmgenc_not_attached_guid_and_unit_oids_are_enoent(tmp_path, case):
    """No attach, no ``SYSCTL_ADD_OPAQUE`` (facts §8: ENOENT if not attached).

    - ``debug.acpi.disabled=vmgenc``: ``vmgenc_probe`` returns ENXIO, no driver
      claims the device, ``device_attach`` never runs: ``dev.vmgenc`` never exists.
    - ADDR ``Package{0, 0}``: ``vmgenc_attach`` returns ENXIO after
      ``device_sysctl_init``; ``device_sysctl_fini`` frees ``dev.vmgenc.0``, but the
      devclass node ``devclass_sysctl_init`` made stays (``subr_bus.c``) [D]: EISDIR.
    """
    if case == "acpi_disabled":
        k = make_kernel(kenv={"debug.acpi.disabled": "vmgenc"})
    else:
        k = make_kernel(vgen_ns(cids=["VM_Gen_Counter"], addr=["pkg", [["int", 0], ["int", 0]]]))
    assert attached(k) == []
    root = str(tmp_path / "root")
    simstate.save(root, k.sysctl)
    assert sysctl_errno(root, "hw.bus.devctl_queue") is None       # the tree is readable
    assert sysctl_errno(root, "dev.vmgenc.0.guid") == errno.ENOENT
    assert sysctl_errno(root, "dev.vmgenc.0") == errno.ENOENT
    assert sysctl_errno(root, "dev.vmgenc") == (errno.ENOENT if case == "acpi_disabled"
                                                 else errno.EISDIR)


def test_vmgenc_two_units_a_change_of_unit_1_touches_only_unit_1():
    """``vmgenc_notify`` on unit 1 → ``vmgenc_status_changed(vmgenc1)``: one devctl line
    naming unit 1's path, unit 1's cache updated, one harvest (2×8 bytes) and one
    ``EVENTHANDLER_INVOKE``; unit 0's cache is untouched."""
    k = make_kernel(units=2)
    dev0, dev1 = attached(k)
    path1 = QEMU.unit_path(1)
    assert (dev1.nameunit, dev1.handle, path1) == ("vmgenc1", "\\_SB_.VGN1", "\\_SB_.VGN1")
    k.devctl.records.clear()
    harvested = len(k.random.chunks(RANDOM_PURE_VMGENID))
    calls = []
    tag = EVENTHANDLER_REGISTER("acpi_vmgenc_event", calls.append, "arg")
    try:
        k.memory.write(QEMU.guid_address(1), B.raw)
        k.ns.notify(path1, 0x80, k.dispatch_notify)   # AML Notify(\_SB_.VGN1, 0x80)
        assert k.model["taskq"] == [{"func": "vmgenc_status_changed", "dev": "vmgenc1"}]
        assert k.run_tasks() == 1
    finally:
        EVENTHANDLER_DEREGISTER("acpi_vmgenc_event", tag)
    assert k.devctl.records == [
        "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGN1 notify=0x00\n"]
    assert driver.cache_guid(k, dev1) == B.raw
    assert driver.cache_guid(k, dev0) == A.raw
    assert k.random.chunks(RANDOM_PURE_VMGENID)[harvested:] == [B.raw[:8], B.raw[8:]]
    assert calls == ["arg"] and k.model["eventhandler"] == {"acpi_vmgenc_event": 1}


# -- vmgenc_notify ------------------------------------------------------------------------

def test_vmgenc_notify_status_changed_queues_a_task():
    k = make_kernel()
    (dev,) = attached(k)
    k.memory.write(QEMU.guid_address(0), B.raw)
    driver.vmgenc_notify(k, VGEN, 0x80, dev)
    assert k.model["taskq"] == [{"func": "vmgenc_status_changed", "dev": "vmgenc0"}]
    assert k.sysctl.nodes["dev.vmgenc.0.guid"].value == A.raw   # nothing until the task runs
    assert k.run_tasks() == 1
    assert k.sysctl.nodes["dev.vmgenc.0.guid"].value == B.raw


@pytest.mark.parametrize("value, text", [(0x81, "0x81"), (0xFF, "0xff")])
def test_vmgenc_notify_other_value_prints_unknown_notify(value, text):
    k = make_kernel()
    (dev,) = attached(k)
    driver.vmgenc_notify(k, VGEN, value, dev)
    assert k.model["console"][-1] == f"vmgenc0: unknown notify {text}"
    assert k.model["taskq"] == []


def test_vmgenc_notify_task_queue_full():
    k = make_kernel(kenv={"debug.acpi.max_tasks": "1"})
    (dev,) = attached(k)
    driver.vmgenc_notify(k, VGEN, 0x80, dev)
    driver.vmgenc_notify(k, VGEN, 0x80, dev)
    assert len(k.model["taskq"]) == 1
    assert k.model["console"][-1] == ("AcpiOsExecute: failed to enqueue task, consider "
                                      "increasing the debug.acpi.max_tasks tunable")


# -- vmgenc_status_changed -----------------------------------------------------------

def test_vmgenc_status_changed_spurious_does_nothing():
    k = make_kernel()
    (dev,) = attached(k)
    harvested, records = len(k.random.state["harvest"]), list(k.devctl.records)
    driver.vmgenc_status_changed(k, dev)
    assert k.devctl.records == records
    assert len(k.random.state["harvest"]) == harvested
    assert k.model["eventhandler"] == {}


def test_vmgenc_status_changed_updates_cache_harvests_invokes_and_notifies():
    k = make_kernel()
    (dev,) = attached(k)
    k.devctl.records.clear()
    calls = []
    tag = EVENTHANDLER_REGISTER("acpi_vmgenc_event", calls.append, "arg")
    try:
        k.memory.write(QEMU.guid_address(0), B.raw)
        driver.vmgenc_status_changed(k, dev)
    finally:
        EVENTHANDLER_DEREGISTER("acpi_vmgenc_event", tag)
    assert k.sysctl.nodes["dev.vmgenc.0.guid"].value == B.raw
    assert k.random.chunks(RANDOM_PURE_VMGENID)[-2:] == [B.raw[:8], B.raw[8:]]
    assert calls == ["arg"]
    assert k.model["eventhandler"] == {"acpi_vmgenc_event": 1}
    assert k.devctl.records == [CHANGE_LINE]


def test_vmgenc_status_changed_tasks_coalesce_a_b_a():
    """A→B→A before the task runs: both tasks see no change; no event."""
    k = make_kernel()
    (dev,) = attached(k)
    k.devctl.records.clear()
    for g in (B, A):
        k.memory.write(QEMU.guid_address(0), g.raw)
        k.run_gpe("\\_GPE._E05")
    assert len(k.model["taskq"]) == 2
    k.run_tasks()
    assert k.devctl.records == []
    assert k.sysctl.nodes["dev.vmgenc.0.guid"].value == A.raw


def test_vmgenc_status_changed_two_changes_one_task_window_one_event():
    k = make_kernel()
    (dev,) = attached(k)
    k.devctl.records.clear()
    for g in (B, C):
        k.memory.write(QEMU.guid_address(0), g.raw)
        k.run_gpe("\\_GPE._E05")
    k.run_tasks()
    assert k.devctl.records == [CHANGE_LINE]     # the second task is spurious
    assert k.sysctl.nodes["dev.vmgenc.0.guid"].value == C.raw


def test_acpi_UserNotify_line_uint8_notify_and_silent_failures():
    """acpi_UserNotify: NULL subsystem or a handle without a path sends nothing."""
    k = make_kernel()
    acpibus.acpi_UserNotify(k, "VMGenerationCounter", VGEN, 0)
    acpibus.acpi_UserNotify(k, "X", VGEN, 0x1234)            # uint8_t notify: 0x34
    acpibus.acpi_UserNotify(k, None, VGEN, 0)
    acpibus.acpi_UserNotify(k, "X", "\\_SB_.NONE", 0)
    assert k.devctl.records == [CHANGE_LINE,
                                "!system=ACPI subsystem=X type=\\_SB_.VGEN notify=0x34\n"]


# -- vmgenc_harvest_all and vmgenc_acpi_getname ---------------------------------------

@pytest.mark.parametrize("size, chunks", [(16, [8, 8]), (20, [8, 8, 4]), (3, [3])])
def test_vmgenc_harvest_all_chunks_of_he_entropy(size, chunks):
    k = make_kernel()
    data = bytes(range(size))
    driver.vmgenc_harvest_all(k, data, size)
    got = k.random.chunks(RANDOM_PURE_VMGENID)
    assert [len(c) for c in got] == chunks and b"".join(got) == data


def test_vmgenc_acpi_getname():
    k = make_kernel()
    assert driver.vmgenc_acpi_getname(k, VGEN) == "\\_SB_.VGEN"
    assert driver.vmgenc_acpi_getname(k, "\\_SB_.NONE") == "(unknown)"
