"""The ACPI namespace model: paths, IDs, evaluation rules, notify routing (ACPICA's side)."""

from __future__ import annotations

import pytest

from vmgenc_tools.reference.acpi import (
    ACPI_STA_DEFAULT,
    ACPI_TYPE_INTEGER,
    ACPI_TYPE_LOCAL_REFERENCE,
    ACPI_TYPE_PACKAGE,
    AcpiError,
    AcpiExEisaIdToString,
    AcpiNamespace,
    AcpiNsRepair_HID,
    eisaid_encode,
    normalize_path,
)
from vmgenc_tools.reference.acpibus import acpi_pnpinfo


def test_normalized_path_keeps_underscore_padding():
    assert normalize_path("\\_SB.VGEN") == "\\_SB_.VGEN"
    assert normalize_path("\\_SB.PCI0.ISA.VGID") == "\\_SB_.PCI0.ISA_.VGID"
    assert normalize_path("\\") == "\\"


@pytest.mark.parametrize("bad", ["_SB.VGEN", "\\_SB.TOOLONG", "\\_SB.vgen", "\\1ABC"])
def test_normalized_path_rejects_non_namesegs(bad):
    with pytest.raises(ValueError):
        normalize_path(bad)


def test_eisaid_round_trip_and_known_value():
    assert eisaid_encode("PNP0A03") == 0x030AD041
    assert AcpiExEisaIdToString(0x030AD041) == "PNP0A03"
    assert AcpiExEisaIdToString(eisaid_encode("XEN0000")) == "XEN0000"


def test_hid_repair_uppercases_and_drops_one_asterisk():
    assert AcpiNsRepair_HID("VM_Gen_Counter") == "VM_GEN_COUNTER"
    assert AcpiNsRepair_HID("*pnp0c0a") == "PNP0C0A"
    assert AcpiNsRepair_HID("") == ""
    assert AcpiNsRepair_HID("vm_gen_straße") == "VM_GEN_STRAßE"   # toupper: ASCII only


def _ns() -> AcpiNamespace:
    ns = AcpiNamespace()
    ns.add_name("\\VGIA", ["int", 0x1000])
    ns.add_device("\\_SB.VGEN")
    ns.add_name("\\_SB.VGEN._HID", ["str", "QEMUVGID"])
    ns.add_name("\\_SB.VGEN._CID", ["pkg", [["str", "VM_Gen_Counter"], ["eisaid", "PNP0C02"]]])
    ns.add_method("\\_SB.VGEN._STA", ["sta_if", ["ref", "VGIA"]])
    return ns


def test_object_info_repairs_ids_and_converts_eisa_ids():
    info = _ns().AcpiGetObjectInfo("\\_SB_.VGEN")
    assert info.hid == "QEMUVGID"
    assert info.cids == ("VM_GEN_COUNTER", "PNP0C02")
    assert info.uid is None
    assert info.sta == 0x0F


def test_sta_follows_a_name_through_upward_search_and_defaults_when_missing():
    ns = _ns()
    ns.set_name("\\VGIA", ["int", 0])
    assert ns.AcpiGetObjectInfo("\\_SB_.VGEN").sta == 0
    ns.remove("\\_SB.VGEN._STA")
    assert ns.AcpiGetObjectInfo("\\_SB_.VGEN").sta == ACPI_STA_DEFAULT


def test_evaluate_missing_object_is_ae_not_found_without_upward_search():
    ns = _ns()
    with pytest.raises(AcpiError) as e:
        ns.AcpiEvaluateObject("\\_SB_.VGEN", "VGIA", 72)  # exists at \, but no upsearch
    assert e.value.status == "AE_NOT_FOUND"


def test_evaluate_checks_the_callers_buffer_size():
    ns = _ns()
    ns.add_method("\\_SB.VGEN.ADDR", ["pkg", [["int", 1], ["int", 2]]])
    obj = ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)   # package + 2 integers: 3 * 24
    assert obj.type == ACPI_TYPE_PACKAGE and [e.value for e in obj.elements] == [1, 2]
    ns.add_method("\\_SB.VGEN.ADDR", ["pkg", [["int", 1], ["int", 2], ["int", 3]]])
    with pytest.raises(AcpiError) as e:
        ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)
    assert e.value.status == "AE_BUFFER_OVERFLOW"
    ns.add_method("\\_SB.VGEN.ADDR", ["pkg", [["str", ""], ["int", 2]]])  # string data too
    with pytest.raises(AcpiError):
        ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)


def test_method_failure_status_and_references():
    ns = _ns()
    ns.add_method("\\_SB.VGEN.ADDR", ["fail", "AE_AML_DIVIDE_BY_ZERO"])
    with pytest.raises(AcpiError) as e:
        ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)
    assert e.value.status == "AE_AML_DIVIDE_BY_ZERO"
    ns.add_method("\\_SB.VGEN.ADDR", ["pkg", [["refof", "VGIA"], ["add", ["ref", "\\VGIA"],
                                                                    ["int", 40]]]])
    obj = ns.AcpiEvaluateObject("\\_SB_.VGEN", "ADDR", 72)
    assert obj.elements[0].type == ACPI_TYPE_LOCAL_REFERENCE
    assert obj.elements[1].type == ACPI_TYPE_INTEGER and obj.elements[1].value == 0x1028


def test_notify_reaches_only_device_handlers_with_device_values():
    ns = _ns()
    seen = []
    ns.add_method("\\_GPE._E05", ["seq", [["notify", "\\_SB.VGEN", 0x80],
                                          ["notify", "\\_SB.VGEN", 0x02]]])
    ns.run_method("\\_GPE._E05", lambda p, v: seen.append((p, v)))
    assert seen == []                          # no handler installed yet
    ns.AcpiInstallNotifyHandler("\\_SB_.VGEN", "vmgenc0")
    ns.run_method("\\_GPE._E05", lambda p, v: seen.append((p, v)))
    assert seen == [("\\_SB_.VGEN", 0x80)]     # 0x02 is a system notify


def test_namespace_round_trips_through_json():
    ns = _ns()
    ns.AcpiInstallNotifyHandler("\\_SB_.VGEN", "vmgenc0")
    again = AcpiNamespace.from_json(ns.to_json())
    assert again.AcpiGetObjectInfo("\\_SB_.VGEN") == ns.AcpiGetObjectInfo("\\_SB_.VGEN")
    assert again.handlers == {"\\_SB_.VGEN": "vmgenc0"}
    assert again.devices() == ["\\_SB_.VGEN"]


@pytest.mark.parametrize("uid, shown", [
    (["int", 7], "7"), (["str", "12abc"], "12"), (["str", " 010"], "10"),
    (["str", "0x10"], "0"), (["str", "VGEN"], "0"), (["str", "-1"], "18446744073709551615"),
    (["str", "99999999999999999999999"], "18446744073709551615"), (None, "0"),
])
def test_pnpinfo_prints_uid_as_strtoul_base_10(uid, shown):
    """acpi_pnpinfo: ``_UID=%lu`` of ``strtoul(UniqueId, NULL, 10)``; 0 without a _UID."""
    ns = _ns()
    if uid is not None:
        ns.add_name("\\_SB.VGEN._UID", uid)
    assert acpi_pnpinfo(ns, "\\_SB_.VGEN") == f"_HID=QEMUVGID _UID={shown} _CID=VM_GEN_COUNTER"
