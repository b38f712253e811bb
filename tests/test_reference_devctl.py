"""The devctl(4) queue (sys/kern/kern_devctl.c): record format, size limit, queue length."""

from __future__ import annotations

from vmgenc_tools import simstate
from vmgenc_tools.reference.devctl_queue import DEVCTL_BUFFER, DevctlQueue
from vmgenc_tools.reference.sysctl import SYSCTL_ADD_INT


def queue(length: int = 1000) -> DevctlQueue:
    ks = simstate.KernelState()
    SYSCTL_ADD_INT(ks, "hw.bus.devctl_queue", length, access="rw")
    return DevctlQueue({}, ks)


def test_devctl_notify_line_format():
    q = queue()
    q.devctl_notify("ACPI", "VMGenerationCounter", "\\_SB_.VGEN", "notify=0x00")
    q.devctl_notify("ACPI", "X", "T", None)
    q.devctl_notify(None, "X", "T", None)          # a NULL argument: nothing
    assert q.records == ["!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN "
                         "notify=0x00\n", "!system=ACPI subsystem=X type=T\n"]


def test_devaddq_line_format():
    q = queue()
    q.devaddq("+", "vmgenc0", "handle=\\_SB_.VGEN", "_HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER",
              "acpi0")
    q.devaddq("?", "", "handle=\\_SB_.X", "_HID=none _UID=0 _CID=none", None)
    assert q.records == [
        "+vmgenc0 at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER on acpi0\n",
        "? at handle=\\_SB_.X _HID=none _UID=0 _CID=none on .\n"]


def test_record_that_overflows_devctl_buffer_is_dropped():
    q = queue()
    fixed = len("!system=S subsystem=S type=T \n")
    q.devctl_notify("S", "S", "T", "x" * (DEVCTL_BUFFER - 1 - fixed))    # 1015 bytes: fits
    q.devctl_notify("S", "S", "T", "x" * (DEVCTL_BUFFER - fixed))        # 1016: dropped
    assert [len(r) for r in q.records] == [DEVCTL_BUFFER - 1]
    assert q.state["dropped"] == 1


def test_full_queue_reuses_the_oldest_record():
    q = queue(3)
    for i in range(5):
        q.devctl_notify("S", "S", f"T{i}", None)
    assert [r.split("type=")[1] for r in q.records] == ["T2\n", "T3\n", "T4\n"]
    assert q.state["dropped"] == 2


def test_full_queue_loses_its_oldest_record_even_to_an_overflowing_one():
    """devctl_alloc_dei reuses the oldest record's buffer before the sbuf overflows."""
    q = queue(2)
    q.devctl_notify("S", "S", "A", None)
    q.devctl_notify("S", "S", "B", None)
    q.devctl_notify("S", "S", "T", "x" * DEVCTL_BUFFER)
    assert q.records == ["!system=S subsystem=S type=B\n"]
    assert q.state["dropped"] == 2 and q.state["total"] == 2


def test_queue_length_zero_drops_every_record():
    q = queue(0)
    q.devctl_notify("S", "S", "T", None)
    assert q.records == [] and q.state["dropped"] == 1


def test_devread_returns_one_record_per_read():
    q = queue()
    q.devctl_notify("S", "S", "A", None)
    q.devctl_notify("S", "S", "B", None)
    assert q.devread() == "!system=S subsystem=S type=A\n"
    assert q.devread() == "!system=S subsystem=S type=B\n"
    assert q.devread() is None                     # EAGAIN on an empty queue
