"""The simulated kernel's sysctl: sysctlbyname(3) errno cases and sysctl(8) renderings."""

from __future__ import annotations

import errno
import struct
import sys
import time

import pytest

from vmgenc_tools import simstate
from vmgenc_tools.reference.sysctl import Sysctl8, sysctlbyname, sysctlbyname_c
from vmgenc_tools.reference.vm import SimulatedVM
from vmgenc_tools.sysctl.errors import SysctlError

QEMU_GUID = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
QEMU_DUMP = "0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"


@pytest.fixture
def root(tmp_path):
    r = str(tmp_path / "vm")
    SimulatedVM(r).init("qemu", guid=QEMU_GUID, ssh_keys=False)
    return r


def sysctl8(root: str, flags: str, *names: str):
    return Sysctl8(root, flags).run(list(names))


# -- sysctlbyname(3) ---------------------------------------------------------------------

def errno_of(root, name, oldlen, new=None):
    with pytest.raises(SysctlError) as e:
        sysctlbyname(root, name, oldlen, new)
    return e.value.errno


def test_sysctlbyname_reads_the_raw_guid_bytes(root):
    data, n = sysctlbyname(root, "dev.vmgenc.0.guid", 16)
    assert (data, n) == (bytes.fromhex(QEMU_DUMP[2:]), 16)


def test_sysctlbyname_null_buffer_is_a_size_query(root):
    assert sysctlbyname(root, "dev.vmgenc.0.guid", None) == (None, 16)


@pytest.mark.parametrize("name", ["dev.vmgenc.9.guid", "dev.vmgenc.0.guid.more", "dev.vmgen"])
def test_sysctlbyname_enoent(root, name):
    assert errno_of(root, name, 16) == errno.ENOENT


@pytest.mark.parametrize("name", ["dev.vmgenc.0", "dev.vmgenc", "dev"])
def test_sysctlbyname_eisdir_for_a_node_without_handler(root, name):
    assert errno_of(root, name, 16) == errno.EISDIR


def test_sysctlbyname_enomem_for_a_short_buffer(root):
    assert errno_of(root, "dev.vmgenc.0.guid", 15) == errno.ENOMEM


def test_sysctlbyname_eperm_writing_a_read_only_oid(root):
    assert errno_of(root, "dev.vmgenc.0.guid", None, bytes(16)) == errno.EPERM
    assert errno_of(root, "kern.vm_guest", None, b"xen") == errno.EPERM


def test_sysctlbyname_writable_kern_nodes(root):
    sysctlbyname(root, "kern.hostuuid", None, b"8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d")
    sysctlbyname(root, "kern.hostid", None, (0x1234).to_bytes(8, sys.byteorder))
    st = simstate.load(root)
    assert st.nodes["kern.hostuuid"].value == b"8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d\0"
    assert simstate.decode_int("ulong", st.nodes["kern.hostid"].value) == 0x1234


def test_sysctlbyname_devctl_queue_only_accepts_zero_at_run_time(root):
    assert errno_of(root, "hw.bus.devctl_queue", None, (500).to_bytes(4, sys.byteorder)) \
        == errno.EINVAL
    sysctlbyname(root, "hw.bus.devctl_queue", None, (0).to_bytes(4, sys.byteorder))
    vm = SimulatedVM(root)
    vm.drain_devctl()
    assert vm.clone().records == []          # length 0: every new record is dropped
    assert vm.drain_devctl() == []


# -- sysctl(8) -----------------------------------------------------------------------------

def test_sysctl8_plain_opaque_prints_nothing_and_succeeds(root):
    res = sysctl8(root, "", "dev.vmgenc.0.guid")
    assert (res.stdout, res.stderr, res.status) == (b"", "", 0)


def test_sysctl8_x_dumps_the_qemu_example(root):
    res = sysctl8(root, "x", "dev.vmgenc.0.guid")
    assert res.stdout == f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}\n".encode()


def test_sysctl8_b_writes_raw_bytes_without_newline(root):
    assert sysctl8(root, "b", "dev.vmgenc.0.guid").stdout == bytes.fromhex(QEMU_DUMP[2:])


def test_sysctl8_o_appends_dots_for_exactly_16_bytes(root):
    res = sysctl8(root, "o", "dev.vmgenc.0.guid")
    assert res.stdout == f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}...\n".encode()


def test_sysctl8_o_loop_quirk_for_other_lengths(root):
    """``while (len-- && p < val + 16)``: 20 bytes stop at 16 with len 3 (no dots)."""
    with simstate.transaction(root) as st:
        st.set("debug.blob20", "opaque", bytes(range(20)))
        st.set("debug.blob8", "opaque", bytes(range(8)))
    assert sysctl8(root, "o", "debug.blob20").stdout == \
        b"debug.blob20: Format: Length:20 Dump:0x" + bytes(range(16)).hex().encode() + b"\n"
    assert sysctl8(root, "o", "debug.blob8").stdout == \
        b"debug.blob8: Format: Length:8 Dump:0x0001020304050607...\n"


def test_sysctl8_strings_and_integers(root):
    out = sysctl8(root, "", "kern.vm_guest", "hw.bus.devctl_queue", "dev.vmgenc.0.%location")
    assert out.stdout.decode().splitlines() == [
        "kern.vm_guest: kvm", "hw.bus.devctl_queue: 1000",
        "dev.vmgenc.0.%location: handle=\\_SB_.VGEN"]
    assert sysctl8(root, "n", "kern.vm_guest").stdout == b"kvm\n"
    assert sysctl8(root, "x", "hw.bus.devctl_queue").stdout == b"hw.bus.devctl_queue: 0x000003e8\n"
    hostid = sysctl8(root, "n", "kern.hostid").stdout.decode().strip()
    assert hostid.isdigit()


def test_sysctl8_timeval(root):
    sec = int.from_bytes(simstate.load(root).nodes["kern.boottime"].value[:8], sys.byteorder)
    usec = struct.unpack("=q", simstate.load(root).nodes["kern.boottime"].value[8:])[0]
    assert sysctl8(root, "", "kern.boottime").stdout.decode() == \
        f"kern.boottime: {{ sec = {sec}, usec = {usec} }} {time.ctime(sec)}\n"


def test_sysctl8_unknown_oid(root):
    res = sysctl8(root, "", "dev.vmgenc.7.guid")
    assert (res.stdout, res.stderr, res.status) == \
        (b"", "sysctl: unknown oid 'dev.vmgenc.7.guid'\n", 1)
    assert sysctl8(root, "q", "dev.vmgenc.7.guid").stderr == ""


def test_sysctl8_node_lists_newbus_oids_newest_first(root):
    res = sysctl8(root, "", "dev.vmgenc.0")
    assert res.stdout.decode().splitlines() == [
        "dev.vmgenc.0.%parent: acpi0",
        "dev.vmgenc.0.%pnpinfo: _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER",
        "dev.vmgenc.0.%location: handle=\\_SB_.VGEN",
        "dev.vmgenc.0.%driver: vmgenc",
        "dev.vmgenc.0.%desc: VM Generation Counter"]     # guid: an opaque, prints nothing


@pytest.mark.parametrize("given", ["dev.vmgenc.0", "dev.vmgenc.0."])
def test_sysctl8_node_with_one_trailing_dot_lists_canonical_names(root, given):
    """name2oid ignores one trailing dot; the listing names the OIDs as the kernel does."""
    res = sysctl8(root, "x", given)
    lines = res.stdout.decode().splitlines()
    assert (res.status, res.stderr) == (0, "")
    assert lines[0] == f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}"
    assert lines[1:] == [
        "dev.vmgenc.0.%parent: acpi0",
        "dev.vmgenc.0.%pnpinfo: _HID=QEMUVGID _UID=0 _CID=VM_GEN_COUNTER",
        "dev.vmgenc.0.%location: handle=\\_SB_.VGEN",
        "dev.vmgenc.0.%driver: vmgenc",
        "dev.vmgenc.0.%desc: VM Generation Counter"]


@pytest.mark.parametrize("flags,expected", [
    ("x", f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}\n"),
    ("", ""),                                           # plain opaque: nothing, as without it
    ("d", "dev.vmgenc.0.guid: latest cached VM generation counter (128-bit UUID)\n"),
    ("t", "dev.vmgenc.0.guid: opaque\n"),
    ("N", "dev.vmgenc.0.guid\n"),
    ("ex", f"dev.vmgenc.0.guid=Format: Length:16 Dump:{QEMU_DUMP}\n"),
])
def test_sysctl8_leaf_with_a_trailing_dot_prints_the_canonical_name(root, flags, expected):
    res = sysctl8(root, flags, "dev.vmgenc.0.guid.")
    assert (res.stdout.decode(), res.stderr, res.status) == (expected, "", 0)


def test_sysctl8_trailing_dot_when_setting_and_two_dots_unknown(root):
    res = sysctl8(root, "", "kern.hostuuid.=8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d")
    assert res.status == 0 and res.stdout.decode().startswith("kern.hostuuid: ")
    assert res.stdout.decode().endswith(" -> 8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d\n")
    res = sysctl8(root, "", "dev.vmgenc.0.guid.=0")      # the warning repeats the operand
    assert (res.stderr, res.status) == ("sysctl: oid 'dev.vmgenc.0.guid.' is read only\n", 1)
    res = sysctl8(root, "x", "dev.vmgenc.0.guid..")
    assert (res.stdout, res.stderr, res.status) == (
        b"", "sysctl: unknown oid 'dev.vmgenc.0.guid..'\n", 1)


def test_sysctl8_description_and_type(root):
    assert sysctl8(root, "d", "dev.vmgenc.0.guid").stdout == \
        b"dev.vmgenc.0.guid: latest cached VM generation counter (128-bit UUID)\n"
    assert sysctl8(root, "t", "dev.vmgenc.0.guid").stdout == b"dev.vmgenc.0.guid: opaque\n"


def test_sysctl8_refuses_to_set_a_read_only_oid(root):
    res = sysctl8(root, "", "dev.vmgenc.0.guid=0")
    assert (res.stderr, res.status) == ("sysctl: oid 'dev.vmgenc.0.guid' is read only\n", 1)


def test_sysctl8_sets_a_writable_oid_and_reports_handler_errors(root):
    res = sysctl8(root, "", "kern.hostuuid=8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d")
    assert res.status == 0
    assert res.stdout.decode().endswith(" -> 8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d\n")
    res = sysctl8(root, "", "hw.bus.devctl_queue=5")
    assert res.stdout == b"hw.bus.devctl_queue: 1000\n"
    assert (res.stderr, res.status) == ("sysctl: hw.bus.devctl_queue=5: Invalid argument\n", 1)


# -- sysctlbyname(3) with C-shaped oldp/oldlenp ---------------------------------------------

GUARD = 0xA5


def c_call(root, name, size, oldlen, new=None):
    buf = None if size is None else bytearray([GUARD] * size)
    lenp = None if oldlen is None else [oldlen]
    rc = sysctlbyname_c(root, name, buf, lenp, new)
    return rc, buf, None if lenp is None else lenp[0]


def test_c_call_reads_the_guid_and_sets_oldlenp(root):
    rc, buf, n = c_call(root, "dev.vmgenc.0.guid", 20, 20)
    assert (rc, n) == (0, 16)
    assert bytes(buf) == bytes.fromhex(QEMU_DUMP[2:]) + bytes([GUARD] * 4)


def test_c_call_null_oldp_is_a_size_query(root):
    assert c_call(root, "dev.vmgenc.0.guid", None, 999) == (0, None, 16)


@pytest.mark.parametrize("oldlen", [0, 1, 8, 15])
def test_c_call_enomem_copies_what_fits_and_leaves_oldlenp_unchanged(root, oldlen):
    """FreeBSD 13+: sys___sysctlbyname returns ENOMEM before copying *oldlenp out."""
    rc, buf, n = c_call(root, "dev.vmgenc.0.guid", 16, oldlen)
    assert (rc, n) == (errno.ENOMEM, oldlen)
    assert bytes(buf) == bytes.fromhex(QEMU_DUMP[2:])[:oldlen] + bytes([GUARD] * (16 - oldlen))


@pytest.mark.parametrize("name, new, err", [
    ("dev.vmgenc.9.guid", None, errno.ENOENT),
    ("dev.vmgenc.0", None, errno.EISDIR),
    ("dev.vmgenc.0.guid", bytes(16), errno.EPERM),
])
def test_c_call_other_errors_touch_neither_buffer_nor_oldlenp(root, name, new, err):
    assert c_call(root, name, 16, 16, new) == (err, bytearray([GUARD] * 16), 16)


def test_c_call_write_with_null_oldp_reports_the_old_size(root):
    before = len(simstate.load(root).nodes["kern.hostuuid"].value)
    rc, _, n = c_call(root, "kern.hostuuid", None, 0, b"8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d")
    assert (rc, n) == (0, before)
    assert simstate.load(root).nodes["kern.hostuuid"].value == \
        b"8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d\0"
