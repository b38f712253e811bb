"""The default classification policy (design §4.5), rule by rule."""

from __future__ import annotations

import pytest

from vmgenc_tools.classify import classify
from vmgenc_tools.generation import Generation
from vmgenc_tools.history import Change
from vmgenc_tools.platform import Snapshot

OLD = Generation(bytes(range(16)))
NEW = Generation(bytes(range(1, 17)))
UUID_A = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
UUID_B = "0b3c55a0-2f4e-4a7d-8f61-3c2b1a0f9e8d"
MAC_A = ("52:54:00:12:34:56",)
MAC_B = ("52:54:00:ab:cd:ef",)


def prev(smbios: str | None = UUID_A, macs: tuple[str, ...] = MAC_A,
         boot_time: int | None = 1000) -> Change:
    return Change(detected_at="2024-01-01T00:00:00.000000+00:00", source="boot",
                  cls="first-seen", status="done", new_raw=OLD.raw, new_text=OLD.text,
                  guids=OLD.hex, smbios_uuid=smbios, macs=macs, boot_time=boot_time)


def snap(smbios: str | None = UUID_A, macs: tuple[str, ...] = MAC_A,
         boot_time: int | None = 1000) -> Snapshot:
    return Snapshot(guids=(NEW,), vm_guest="kvm", smbios_uuid=smbios, macs=macs,
                    boot_time=boot_time)


def test_forced_class_wins_over_everything():
    assert classify(None, snap(), "boot", forced="restore").cls == "restore"
    assert classify(prev(), snap(smbios=UUID_B), "boot", forced="platform-restart").cls == \
        "platform-restart"
    with pytest.raises(ValueError):
        classify(prev(), snap(), "boot", forced="bogus")


def test_no_previous_record_is_first_seen():
    assert classify(None, snap(), "devd").cls == "first-seen"
    assert classify(None, snap(), "boot").cls == "first-seen"


@pytest.mark.parametrize("source", ["devd", "manual"])
def test_run_time_change_follows_the_runtime_policy(source):
    # same boot (manual) or a devd event: the running state was duplicated
    assert classify(prev(), snap(), source).cls == "clone"
    assert classify(prev(), snap(), source, runtime_class="restore").cls == "restore"


def test_devd_is_run_time_even_across_boot_times():
    assert classify(prev(boot_time=1), snap(boot_time=2), "devd").cls == "clone"


def test_boot_with_same_smbios_and_macs_is_platform_restart():
    """bhyve, Azure deallocate, QEMU guid=auto: a new GUID at every start, nothing copied."""
    v = classify(prev(), snap(), "boot")
    assert v.cls == "platform-restart"
    assert "SMBIOS UUID unchanged" in v.reason


def test_boot_with_new_smbios_uuid_is_clone():
    v = classify(prev(), snap(smbios=UUID_B), "boot")
    assert v.cls == "clone" and "SMBIOS" in v.reason


def test_smbios_comparison_ignores_case():
    assert classify(prev(), snap(smbios=UUID_A.upper()), "boot").cls == "platform-restart"


def test_boot_with_disjoint_macs_is_clone_even_if_smbios_copied():
    """vm-bhyve clones used to keep the UUID; new MACs still give them away."""
    assert classify(prev(), snap(macs=MAC_B), "boot").cls == "clone"


def test_boot_with_one_mac_in_common_is_not_clone():
    assert classify(prev(), snap(macs=MAC_A + MAC_B), "boot").cls == "platform-restart"


def test_boot_with_only_macs_comparable():
    assert classify(prev(smbios=None), snap(smbios=None), "boot").cls == "platform-restart"
    assert classify(prev(smbios=None), snap(smbios=UUID_B, macs=MAC_B), "boot").cls == "clone"


def test_boot_with_nothing_to_compare_is_unknown():
    assert classify(prev(smbios=None, macs=()), snap(smbios=UUID_A, macs=()), "boot").cls == \
        "unknown"


def test_manual_check_after_a_reboot_uses_the_boot_rules():
    assert classify(prev(boot_time=1), snap(boot_time=2), "manual").cls == "platform-restart"
    assert classify(prev(boot_time=1), snap(boot_time=2, smbios=UUID_B), "manual").cls == "clone"


def test_manual_check_after_this_boots_check_saw_no_change_is_run_time():
    """The boot check of this boot (boot-checked at 2.5 > boot time 2) saw the recorded
    generation: the GUID changed while running, and devd missed it."""
    assert classify(prev(boot_time=1), snap(boot_time=2), "manual",
                    boot_checked_at=2.5).cls == "clone"
    assert classify(prev(boot_time=1), snap(boot_time=2), "manual", boot_checked_at=2.5,
                    runtime_class="restore").cls == "restore"
    # a boot-checked left from an earlier boot says nothing about this one
    assert classify(prev(boot_time=1), snap(boot_time=2), "manual",
                    boot_checked_at=1.5).cls == "platform-restart"
    # at boot, the boot rules whatever the marker says
    assert classify(prev(boot_time=1), snap(boot_time=2), "boot",
                    boot_checked_at=2.5).cls == "platform-restart"


def test_manual_check_without_boot_times_is_unknown():
    assert classify(prev(boot_time=None), snap(), "manual").cls == "unknown"
    assert classify(prev(), snap(boot_time=None), "manual").cls == "unknown"
