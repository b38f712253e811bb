"""What kind of change a new VM Generation ID is: the default policy (design §4.5).

A new GUID says only that *something* happened to the VM's state; hypervisors
also hand out new GUIDs when nothing was duplicated.  The evidence behind the
rules below:

- bhyve writes a new random GUID every time the bhyve process starts and never
  notifies at run time (``usr.sbin/bhyve/vmgenc.c``: "It is basically harmless
  to always generate a random ID when starting a VM"; the GPE is compiled
  out).  Wrappers restart bhyve on every guest reboot, so a bhyve guest sees a
  new GUID on *every boot*.
- Azure resets the generation ID when a VM is deallocated (portal shutdown)
  and on Site Recovery failovers: a plain stop/start, not a copy.
- QEMU's ``vmgenid`` ``guid`` property defaults to ``auto``: every new QEMU
  process without an explicit ``guid=`` gets a random GUID, so every cold start
  under libvirt/QEMU defaults looks like a new generation.
- LXD restores a snapshot with a new generation ID but keeps the SMBIOS UUID
  (``volatile.uuid``); a copy changes both: the SMBIOS UUID separates "the same
  machine, an older state" from "another machine".
- A cold (offline) clone made by virt-clone, vm-bhyve ``clone``/``generalise``
  or a cloud image pipeline gets a new SMBIOS UUID and new MAC addresses
  (duplicate MACs on one network do not work), and boots with a new GUID but
  no event: only the boot check sees it.
- The kernel only sends the devctl event when the GUID changes *while the
  guest runs*, and the specification keeps the ID constant across
  pause/resume, reboot and live migration.  A change within one boot therefore
  means the running state was restored or duplicated (snapshot revert, live
  clone, fork of a microVM snapshot).  Whether that is a clone or a restore
  cannot be told from inside; ``vmgenc_runtime_class`` (default ``clone``, the
  safe side) is the admin's answer for the host.

The rules, in order:

1. A class forced by the admin (``${vmgenc_dbdir}/intent`` or
   ``check --class``) wins: platforms whose signals lie.
2. No previous record → ``first-seen`` (no identity hooks by default).
3. At boot (source ``boot``, or a manual check after a reboot since the last
   record that the boot check of this boot did not see) → ``clone`` if the
   SMBIOS UUID changed or the MAC set shares no address with the recorded one;
   ``platform-restart`` if the signals that can be compared agree; ``unknown``
   if none can be compared.
4. At run time (a devd event; a manual check in the same boot as the last
   record; or a manual check after the boot check of this boot found the
   recorded generation unchanged — devd missed the event) →
   ``vmgenc_runtime_class``.
5. Anything else (boot time unknown for a manual check) → ``unknown``.

Two recorded signals are kept for the admin, not compared: ``kern.hostuuid``
(our own ``hostid`` hook rotates it after a clone, and rc.d/hostid copies it
from the SMBIOS UUID, which is compared already) and ``kern.vm_guest`` (the
hypervisor type: a copy runs under the same one, so it separates nothing).
"""

from __future__ import annotations

from .config import CLASSES
from .history import Change
from .plain import Frozen
from .platform import Snapshot

SOURCES = ("boot", "devd", "manual")


class Verdict(Frozen):
    """The class and a short reason (stored with the change)."""

    cls: str
    reason: str

    def __init__(self, cls: str, reason: str) -> None:
        self._set(locals())


def _at_boot(prev: Change, snap: Snapshot, source: str,
             boot_checked_at: float | None) -> bool | None:
    """True at boot, False at run time, None if it cannot be told.

    ``boot_checked_at`` is when the boot check last ran (the ``boot-checked``
    file's mtime): if that was during this boot and the last record is older,
    the boot check saw the recorded generation, so the GUID changed since.
    """
    if source == "boot":
        return True
    if source == "devd":
        return False
    if prev.boot_time is None or snap.boot_time is None:
        return None
    if prev.boot_time == snap.boot_time:
        return False
    return boot_checked_at is None or boot_checked_at < snap.boot_time


def classify(prev: Change | None, snap: Snapshot, source: str, *, runtime_class: str = "clone",
             forced: str | None = None, boot_checked_at: float | None = None) -> Verdict:
    """Decide the class of the change from ``prev`` (the last real record) to ``snap``."""
    if forced:
        if forced not in CLASSES:
            raise ValueError(f"unknown class {forced!r}")
        return Verdict(forced, f"forced to {forced}")
    if prev is None:
        return Verdict("first-seen", "no earlier generation recorded")
    when = _at_boot(prev, snap, source, boot_checked_at)
    if when is None:
        return Verdict("unknown", "manual check with no boot time to tell boot from run time")
    if not when:
        return Verdict(runtime_class, f"changed at run time ({source}): the running state "
                                      f"was duplicated or restored; policy {runtime_class}")
    evidence = []
    if prev.smbios_uuid and snap.smbios_uuid:
        if prev.smbios_uuid.lower() != snap.smbios_uuid.lower():
            return Verdict("clone", f"at boot: SMBIOS UUID changed ({prev.smbios_uuid} -> "
                                    f"{snap.smbios_uuid})")
        evidence.append("SMBIOS UUID unchanged")
    if prev.macs and snap.macs:
        if not set(prev.macs) & set(snap.macs):
            return Verdict("clone", "at boot: no MAC address in common with the last record")
        evidence.append("MAC addresses in common")
    if not evidence:
        return Verdict("unknown", "at boot: no SMBIOS UUID or MAC addresses to compare")
    return Verdict("platform-restart", "at boot: " + ", ".join(evidence)
                   + " (new GUID from a hypervisor restart)")
