"""One test matrix, two backends: ``sim`` (Python over kernel.tab) and ``libc`` (ctypes
calling the compiled C stand-in tests/csrc/fakesysctl.c, which serves the same file)."""

from __future__ import annotations

import errno
import gc
import os
import sys

import psutil
import pytest
from cbuild import fakesysctl_lib  # noqa: F401  (session fixture)
from conftest import write_kernel

from vmgenc_tools import simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.platform import NoDevice, read_guids, read_snapshot
from vmgenc_tools.sysctl import (
    read_bytes,
    read_int,
    read_string,
    vmgenc_units,
    write_string,
    write_ulong,
)
from vmgenc_tools.sysctl.errors import (
    BufferTooSmall,
    InvalidValue,
    IsANode,
    NoSuchOid,
    NotPermitted,
    SysctlError,
)
from vmgenc_tools.sysctl.libc import LibcBackend
from vmgenc_tools.sysctl.sim import SimBackend

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
G1 = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SMBIOS = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
GUID = "dev.vmgenc.0.guid"


def tab_bytes(root: str) -> bytes:
    with open(simstate.tab_path(root), "rb") as f:
        return f.read()


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A simulated kernel with two vmgenc units; VMGENC_ROOT points the C library at it."""
    root = str(tmp_path / "root")
    os.makedirs(root)
    write_kernel(root, [G0, G1])
    monkeypatch.setenv("VMGENC_ROOT", root)
    return root


@pytest.fixture
def make_backend(root, fakesysctl_lib):  # noqa: F811
    def make(kind: str):
        return SimBackend(root) if kind == "sim" else LibcBackend(fakesysctl_lib)

    return make


@pytest.fixture(params=["sim", "libc"])
def backend(request, make_backend):
    return make_backend(request.param)


@pytest.fixture
def other(backend, make_backend):
    """The other backend, over the same root."""
    return make_backend("libc" if backend.name == "sim" else "sim")


def test_reads_the_guid_of_every_unit(backend):
    assert read_bytes(backend, GUID) == Generation.parse(G0).raw
    assert read_bytes(backend, "dev.vmgenc.1.guid") == Generation.parse(G1).raw
    assert vmgenc_units(backend) == [0, 1]
    assert read_string(backend, "dev.vmgenc.1.%driver") == "vmgenc"
    assert read_string(backend, "kern.vm_guest") == "kvm"
    assert read_int(backend, "kern.hostid") == 0


def test_missing_driver_names_the_fix(backend, root):
    write_kernel(root, [])
    assert vmgenc_units(backend) == []
    with pytest.raises(NoSuchOid) as exc:
        read_bytes(backend, GUID)
    assert exc.value.errno == errno.ENOENT
    assert "no sysctl dev.vmgenc.0.guid" in str(exc.value)
    assert "kldload vmgenc" in str(exc.value) and 'vmgenc_load="YES"' in str(exc.value)
    with pytest.raises(NoDevice, match="kldload vmgenc"):
        read_guids(backend)


@pytest.mark.parametrize("name", ["dev.vmgenc.0", "dev.vmgenc", "dev", "kern"])
def test_a_node_is_not_a_value(backend, name):
    with pytest.raises(IsANode) as exc:
        backend.sysctlbyname(name, None)
    assert exc.value.errno == errno.EISDIR
    assert f"sysctl {name} is a node" in str(exc.value)
    with pytest.raises(IsANode):
        read_bytes(backend, name)


@pytest.mark.parametrize("name", [
    "dev.vmgenc.0.guid.x", "dev.vmgenc.2.guid", "kern.hostid.0", "kern.nosuch", "dev.vmgenc.0.",
    "", "dev.vmgenc.0\0.guid",
])
def test_unknown_or_past_leaf_names(backend, name):
    with pytest.raises(NoSuchOid) as exc:
        backend.sysctlbyname(name, None)
    assert exc.value.errno == errno.ENOENT
    assert ("kldload vmgenc" in str(exc.value)) == name.startswith("dev.vmgenc")


def test_size_query_with_null_buffer(backend):
    assert backend.sysctlbyname(GUID, None) == (None, 16)
    assert backend.sysctlbyname("kern.vm_guest", None) == (None, len(b"kvm\0"))
    assert backend.sysctlbyname("kern.hostid", None) == (None, 8)
    assert backend.sysctlbyname("kern.boottime", None) == (None, 16)


@pytest.mark.parametrize("oldlen", [0, 1, 4, 15])
def test_short_buffer_is_enomem(backend, oldlen):
    with pytest.raises(BufferTooSmall) as exc:
        backend.sysctlbyname(GUID, oldlen)
    assert exc.value.errno == errno.ENOMEM
    assert read_bytes(backend, GUID) == Generation.parse(G0).raw


@pytest.mark.parametrize("oldlen", [16, 17, 4096])
def test_big_enough_buffer_returns_the_value_and_its_size(backend, oldlen):
    assert backend.sysctlbyname(GUID, oldlen) == (Generation.parse(G0).raw, 16)


def test_negative_oldlen_is_a_programming_error(backend):
    with pytest.raises(ValueError):
        backend.sysctlbyname(GUID, -1)


def test_write_hostuuid_and_hostid_then_read_back(backend, other, root):
    uuid = "9b2e0c7a-51d4-4e3f-8a6b-2c1d0e9f8a7b"
    write_string(backend, "kern.hostuuid", uuid)
    write_ulong(backend, "kern.hostid", 0xDEADBEEF)
    for b in (backend, other):
        assert read_string(b, "kern.hostuuid") == uuid
        assert read_bytes(b, "kern.hostuuid") == uuid.encode() + b"\0"
        assert read_int(b, "kern.hostid") == 0xDEADBEEF
    # the other backend writes; this one sees it
    write_ulong(other, "kern.hostid", 2**64 - 1)
    write_string(other, "kern.hostuuid", "")
    assert read_int(backend, "kern.hostid") == 2**64 - 1
    assert read_bytes(backend, "kern.hostuuid") == b"\0"
    # everything else is as it was
    state = simstate.load(root)
    assert state.nodes[GUID].value == Generation.parse(G0).raw
    assert state.kenv == {"smbios.system.uuid": SMBIOS}
    assert not [n for n in os.listdir(simstate.sim_dir(root)) if ".tmp." in n]


def test_a_string_is_stored_up_to_its_first_nul(backend, other):
    backend.sysctlbyname("kern.hostuuid", None, b"abc\0def")
    assert read_bytes(other, "kern.hostuuid") == b"abc\0"


def test_a_write_can_return_the_old_value(backend):
    old = backend.sysctlbyname("kern.hostuuid", 64, b"new")
    assert old == (b"00000000-0000-0000-0000-000000000000\0", 37)
    assert read_string(backend, "kern.hostuuid") == "new"


def test_a_write_with_a_short_old_buffer_changes_nothing(backend, root):
    before = tab_bytes(root)
    with pytest.raises(BufferTooSmall):
        backend.sysctlbyname("kern.hostuuid", 4, b"new")
    assert tab_bytes(root) == before


@pytest.mark.parametrize("name", [GUID, "kern.vm_guest", "kern.boottime"])
def test_read_only_oids_refuse_writes(backend, root, name):
    before = tab_bytes(root)
    with pytest.raises(NotPermitted) as exc:
        backend.sysctlbyname(name, None, bytes(16))
    assert exc.value.errno == errno.EPERM
    assert "read-only" in str(exc.value)
    # EPERM is checked before the old value is copied out
    with pytest.raises(NotPermitted):
        backend.sysctlbyname(name, 1, bytes(16))
    assert tab_bytes(root) == before


def test_invalid_new_values(backend, root):
    before = tab_bytes(root)
    with pytest.raises(InvalidValue):
        backend.sysctlbyname("kern.hostid", None, (7).to_bytes(4, sys.byteorder))
    with pytest.raises(InvalidValue):
        write_string(backend, "kern.hostuuid", "x" * 1024)
    with pytest.raises(IsANode):
        backend.sysctlbyname("dev.vmgenc.0", None, b"x")
    with pytest.raises(NoSuchOid):
        write_string(backend, "kern.nosuch", "x")
    assert tab_bytes(root) == before
    write_string(backend, "kern.hostuuid", "x" * 1023)
    assert read_string(backend, "kern.hostuuid") == "x" * 1023


def test_kenv_present_and_absent(backend, root):
    assert backend.kenv_get("smbios.system.uuid") == SMBIOS
    assert backend.kenv_get("smbios.system.serial") is None
    assert backend.kenv_get("smbios.system") is None
    assert backend.kenv_get("smbios.system.uuid\0x") is None
    write_kernel(root, [G0], smbios_uuid=None)
    assert backend.kenv_get("smbios.system.uuid") is None


def test_kenv_value_longer_than_kenv_mvallen(backend, root):
    with simstate.transaction(root) as st:
        st.kenv["long"] = "v" * 300
        st.kenv["exact"] = "w" * 128
    assert backend.kenv_get("long") == "v" * 300
    assert backend.kenv_get("exact") == "w" * 128


def test_interfaces(backend, root):
    assert backend.interfaces() == {"vtnet0": "52:54:00:12:34:56"}
    macs = {f"vtnet{i}": f"52:54:00:00:00:{i:02x}" for i in range(40)}
    write_kernel(root, [G0], macs=macs)
    assert backend.interfaces() == macs


def test_no_memory_growth_over_ten_thousand_reads(backend):
    proc = psutil.Process()
    raw = Generation.parse(G0).raw
    for _ in range(500):
        read_bytes(backend, GUID)
    gc.collect()
    before = proc.memory_info().rss
    for _ in range(10_000):
        assert read_bytes(backend, GUID) == raw
    gc.collect()
    grown = proc.memory_info().rss - before
    # A leaked file buffer (~1 KiB a call, 2 calls a read) would be ~20 MiB.
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes over 10^4 reads"


def test_both_backends_agree_on_every_case(make_backend):
    sim, libc = make_backend("sim"), make_backend("libc")
    names = [GUID, "dev.vmgenc.1.guid", "dev.vmgenc.0", "dev.vmgenc.0.guid.x", "dev.vmgenc.9",
             "kern.vm_guest", "kern.hostuuid", "kern.hostid", "kern.boottime", "kern", "nope",
             "dev.vmgenc.0.%driver"]

    def outcome(b, name, oldlen):
        try:
            return b.sysctlbyname(name, oldlen)
        except SysctlError as e:
            return type(e).__name__, e.errno, str(e)

    for name in names:
        for oldlen in (None, 0, 1, 3, 4, 7, 8, 15, 16, 17, 37, 38, 64):
            assert outcome(sim, name, oldlen) == outcome(libc, name, oldlen), (name, oldlen)
        assert sim.kenv_get(name) == libc.kenv_get(name)


def test_read_snapshot_is_the_same_over_both_backends(make_backend):
    snaps = [read_snapshot(make_backend(kind)) for kind in ("sim", "libc")]
    assert snaps[0] == snaps[1]
    snap = snaps[1]
    assert snap.guids == (Generation.parse(G0), Generation.parse(G1))
    assert snap.generation == Generation.parse(G0)
    assert snap.vm_guest == "kvm"
    assert snap.smbios_uuid == SMBIOS
    assert snap.hostuuid == "00000000-0000-0000-0000-000000000000"
    assert snap.macs == ("52:54:00:12:34:56",)
    assert isinstance(snap.boot_time, int) and snap.boot_time > 0


def test_a_missing_kernel_tab_is_an_io_error_for_the_c_library(make_backend, root):
    libc = make_backend("libc")
    os.unlink(simstate.tab_path(root))
    with pytest.raises(SysctlError) as exc:
        libc.sysctlbyname(GUID, None)
    assert exc.value.errno == errno.EIO
    assert str(exc.value) == f"sysctl {GUID}: {os.strerror(errno.EIO)}"
    with pytest.raises(SysctlError) as exc:
        libc.kenv_get("smbios.system.uuid")
    assert str(exc.value).startswith("kenv smbios.system.uuid: ")
