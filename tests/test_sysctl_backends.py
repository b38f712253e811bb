"""One test matrix, two backends: ``sim`` (Python over kernel.tab) and ``libc`` (ctypes
calling the compiled C stand-in tests/csrc/fakesysctl.c, which serves the same file)."""

from __future__ import annotations

import errno
import gc
import os
import struct
import sys
import tracemalloc

import psutil
import pytest
from cbuild import fakesysctl_lib  # noqa: F401  (session fixture)
from conftest import write_kernel

from vmgenc_tools import simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.platform import NoDevice, read_guids, read_snapshot
from vmgenc_tools.reference.vm import SimulatedVM
from vmgenc_tools.sysctl import (
    Backend,
    read_bytes,
    read_int,
    read_string,
    vmgenc_units,
    write_string,
    write_ulong,
)
from vmgenc_tools.sysctl import libc as libc_module
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


@pytest.mark.parametrize("count", [1, 3, 12])
def test_units_are_listed_without_a_fixed_count(backend, root, count):
    guids = [f"{u:08x}-1111-4222-8333-444455556666" for u in range(count)]
    write_kernel(root, guids)
    assert vmgenc_units(backend) == list(range(count))
    assert read_guids(backend) == tuple(Generation.parse(g) for g in guids)


@pytest.mark.parametrize("name", ["dev.vmgenc.0", "dev.vmgenc", "dev", "kern"])
def test_a_node_is_not_a_value(backend, name):
    with pytest.raises(IsANode) as exc:
        backend.sysctlbyname(name, None)
    assert exc.value.errno == errno.EISDIR
    assert f"sysctl {name} is a node" in str(exc.value)
    with pytest.raises(IsANode):
        read_bytes(backend, name)


@pytest.mark.parametrize("name", [
    "dev.vmgenc.0.guid.x", "dev.vmgenc.2.guid", "kern.hostid.0", "kern.nosuch", "dev.vmgenc.0..",
    ".", ".dev", "dev..vmgenc", "dev.vmgenc.0\0.guid",
])
def test_unknown_or_past_leaf_names(backend, name):
    with pytest.raises(NoSuchOid) as exc:
        backend.sysctlbyname(name, None)
    assert exc.value.errno == errno.ENOENT
    assert ("kldload vmgenc" in str(exc.value)) == name.startswith("dev.vmgenc")


def test_an_empty_name_is_einval(backend):
    """kern___sysctlbyname: ``namelen == 0`` is EINVAL, before any lookup."""
    with pytest.raises(InvalidValue) as exc:
        backend.sysctlbyname("", None)
    assert exc.value.errno == errno.EINVAL


@pytest.mark.parametrize("name,value", [
    ("dev.vmgenc.0.guid.", Generation.parse(G0).raw), ("kern.vm_guest.", b"kvm\0"),
])
def test_one_trailing_dot_is_ignored(backend, name, value):
    """name2oid skips one ``.`` after the last component: the OID before it answers."""
    assert read_bytes(backend, name) == value
    with pytest.raises(IsANode):
        backend.sysctlbyname("dev.vmgenc.0.", None)


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


class GrowingValue:
    """A backend whose ``kern.hostuuid`` grows after each call (as a value may between
    the size query and the read): the read sees ENOMEM with ``*oldlenp`` unchanged."""

    def __init__(self, inner: Backend, root: str, grow_every_call: bool) -> None:
        self.inner, self.root, self.every = inner, root, grow_every_call
        self.name = inner.name
        self.calls: list[tuple[int | None, str]] = []

    def sysctlbyname(self, name: str, oldlen: int | None,
                     new: bytes | None = None) -> tuple[bytes | None, int]:
        try:
            out = self.inner.sysctlbyname(name, oldlen, new)
            self.calls.append((oldlen, "ok"))
            return out
        except BufferTooSmall:
            self.calls.append((oldlen, "ENOMEM"))
            raise
        finally:
            if self.every or len(self.calls) == 1:
                with simstate.transaction(self.root) as st:
                    node = st.nodes["kern.hostuuid"]
                    node.value = b"x" * (3 * len(node.value)) + b"\0"


def test_read_grows_the_buffer_and_retries_after_enomem(backend, root):
    grow = GrowingValue(backend, root, grow_every_call=False)
    value = read_bytes(grow, "kern.hostuuid")
    assert value == b"x" * (3 * 37) + b"\0"  # 112 bytes, found after the size query said 37
    assert grow.calls == [(None, "ok"), (37, "ENOMEM"), (74, "ENOMEM"), (148, "ok")]


def test_read_gives_up_on_a_value_that_never_fits(backend, root):
    grow = GrowingValue(backend, root, grow_every_call=True)
    with pytest.raises(BufferTooSmall) as exc:
        read_bytes(grow, "kern.hostuuid")
    assert exc.value.errno == errno.ENOMEM and "buffer too small" in str(exc.value)
    assert grow.calls[0] == (None, "ok")
    assert [r for _, r in grow.calls[1:]] == ["ENOMEM"] * 8


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


@pytest.mark.parametrize("uid", ["1001", "65534"])
def test_a_caller_that_is_not_root_cannot_write(backend, root, monkeypatch, uid):
    """sysctl_root: priv_check(PRIV_SYSCTL_WRITE) fails for a non-root caller: EPERM."""
    before = tab_bytes(root)
    monkeypatch.setenv("VMGENC_SIM_UID", uid)
    with pytest.raises(NotPermitted) as exc:
        write_ulong(backend, "kern.hostid", 1)
    assert exc.value.errno == errno.EPERM and "not root" in str(exc.value)
    with pytest.raises(NotPermitted):
        write_string(backend, "kern.hostuuid", "9b2e0c7a-51d4-4e3f-8a6b-2c1d0e9f8a7b")
    assert tab_bytes(root) == before
    assert read_int(backend, "kern.hostid") == 0  # reading needs no privilege
    monkeypatch.setenv("VMGENC_SIM_UID", "0")
    write_ulong(backend, "kern.hostid", 1)
    assert read_int(backend, "kern.hostid") == 1


@pytest.mark.parametrize("new,err", [
    (bytes(struct.calcsize("L") - 1), errno.EINVAL), (b"\x01" * struct.calcsize("L"), None),
    (b"\x02" * struct.calcsize("L") + b"\xff", None),
])
def test_an_unsigned_long_takes_its_size_and_ignores_the_rest(backend, new, err):
    """sysctl_handle_long: SYSCTL_IN of sizeof(long) bytes: fewer is EINVAL, more are unread."""
    size = struct.calcsize("L")
    if err is not None:
        with pytest.raises(InvalidValue):
            backend.sysctlbyname("kern.hostid", None, new)
        return
    backend.sysctlbyname("kern.hostid", None, new)
    assert read_bytes(backend, "kern.hostid") == new[:size]


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
    # A leaked C buffer (the ~1 KiB kernel.tab copy, 2 calls a read) would be ~20 MiB.
    assert grown < 4 * 1024 * 1024, f"RSS grew by {grown} bytes over 10^4 reads"
    # Smaller leaks hide in RSS pages: the Python heap must not grow either (a ctypes
    # buffer or a tuple kept per read is >= 32 bytes, >= 64 KiB over 2000 reads).
    tracemalloc.start()
    try:
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(2_000):
            read_bytes(backend, GUID)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] - traced_before
    finally:
        tracemalloc.stop()
    assert traced < 16 * 1024, f"Python heap grew by {traced} bytes over 2000 reads"


def outcome(b: Backend, name: str, oldlen: int | None, new: bytes | None = None) -> object:
    """What one call gives: its result, or the exception's class, errno and message."""
    try:
        return b.sysctlbyname(name, oldlen, new)
    except SysctlError as e:
        return type(e).__name__, e.errno, str(e)


def kenv_outcome(b: Backend, name: str) -> object:
    """What ``kenv_get`` gives: the value or None, or the exception's class, errno and message."""
    try:
        return b.kenv_get(name)
    except SysctlError as e:
        return type(e).__name__, e.errno, str(e)


def test_both_backends_agree_on_every_case(make_backend):
    sim, libc = make_backend("sim"), make_backend("libc")
    names = [GUID, "dev.vmgenc.1.guid", "dev.vmgenc.0", "dev.vmgenc.0.guid.x", "dev.vmgenc.9",
             "kern.vm_guest", "kern.hostuuid", "kern.hostid", "kern.boottime", "kern", "nope",
             "dev.vmgenc.0.%driver", "smbios.system.uuid", "x" * 128, "x" * 129, "",
             "dev.vmgenc.0.", "dev.vmgenc.0.guid.", "dev.vmgenc.0..", "."]

    for name in names:
        for oldlen in (None, 0, 1, 3, 4, 7, 8, 15, 16, 17, 37, 38, 64):
            assert outcome(sim, name, oldlen) == outcome(libc, name, oldlen), (name, oldlen)
        assert kenv_outcome(sim, name) == kenv_outcome(libc, name), name
    assert kenv_outcome(libc, "x" * 129) == (
        "SysctlError", errno.ENAMETOOLONG, f"kenv {'x' * 129}: {os.strerror(errno.ENAMETOOLONG)}")


@pytest.mark.parametrize("name,new", [
    (GUID, bytes(16)), ("kern.vm_guest", b"xen\0"), ("kern.hostuuid", b"abc"),
    ("kern.hostuuid", b""), ("kern.hostuuid", b"a\0b"), ("kern.hostuuid", b"a" * 1024),
    ("kern.hostid", bytes(4)), ("kern.hostid", b"\x01" * 8), ("kern.hostid", bytes(9)),
    ("dev.vmgenc.0", b"x"), ("dev.vmgenc.0.guid.x", b"x"), ("nope", b"x"),
])
@pytest.mark.parametrize("oldlen", [None, 0, 4, 64])
def test_both_backends_agree_on_every_write(make_backend, root, name, new, oldlen):
    pristine, results = tab_bytes(root), []
    for kind in ("sim", "libc"):
        with open(simstate.tab_path(root), "wb") as f:
            f.write(pristine)
        results.append((outcome(make_backend(kind), name, oldlen, new),
                        simstate.format_state(simstate.load(root))))
    assert results[0] == results[1]


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


def test_the_libc_prototypes_are_exact(make_backend):
    """sysctlbyname(const char *, void *, size_t *, const void *, size_t) and
    kenv(int, const char *, char *, int), both returning int (facts §4.2)."""
    ct = libc_module.ctypes  # this test module does not import ctypes itself
    libc = make_backend("libc")
    assert libc._sysctlbyname.restype is ct.c_int
    assert libc._sysctlbyname.argtypes == [
        ct.c_char_p, ct.c_void_p, ct.POINTER(ct.c_size_t), ct.c_void_p, ct.c_size_t]
    assert ct.sizeof(ct.c_size_t) == ct.sizeof(ct.c_void_p)  # size_t *, not int *
    assert libc._kenv.restype is ct.c_int
    assert libc._kenv.argtypes == [ct.c_int, ct.c_char_p, ct.c_char_p, ct.c_int]
    for fn in (libc._sysctlbyname, libc._kenv):  # loaded with CDLL(..., use_errno=True)
        assert fn._flags_ & ct._FUNCFLAG_USE_ERRNO


def test_errno_is_read_per_call(make_backend):
    """use_errno=True: every failure reports its own errno, never a stale one."""
    libc = make_backend("libc")
    for name, err in [("nope", errno.ENOENT), ("dev.vmgenc.0", errno.EISDIR),
                      ("nope", errno.ENOENT)] * 3:
        with pytest.raises(SysctlError) as exc:
            libc.sysctlbyname(name, None)
        assert exc.value.errno == err
        with pytest.raises(FileNotFoundError):
            os.stat("/nonexistent/vmgenc")  # the thread's C errno is now ENOENT
    with pytest.raises(BufferTooSmall):
        libc.sysctlbyname(GUID, 1)
    assert libc.sysctlbyname(GUID, 16) == (Generation.parse(G0).raw, 16)


@pytest.mark.parametrize("kind", ["sim", "libc"])
def test_a_reference_model_vm_through_both_backends(tmp_path, monkeypatch, fakesysctl_lib,  # noqa: F811
                                                    kind):
    """The C library serves the reference model's own state: QEMU's example GUID gives the
    facts' Dump bytes, a clone changes them, and a VM without the driver has no unit."""
    vm = SimulatedVM(str(tmp_path / "vm"))
    vm.init("qemu", guid=G0, smbios_uuid=SMBIOS, units=2, ssh_keys=False)
    monkeypatch.setenv("VMGENC_ROOT", vm.root)
    b = SimBackend(vm.root) if kind == "sim" else LibcBackend(fakesysctl_lib)
    assert read_bytes(b, GUID).hex() == "af6e4e32d1d1f64bbf41b9bb6c91fb87"
    assert vmgenc_units(b) == [0, 1]
    assert read_guids(b) == tuple(vm.cached_guids())
    assert b.kenv_get("smbios.system.uuid") == SMBIOS
    assert read_string(b, "kern.hostuuid") == SMBIOS
    vm.clone(guid=G1)
    assert read_bytes(b, GUID) == Generation.parse(G1).raw
    write_string(b, "kern.hostuuid", "11111111-2222-4333-8444-555555555555")
    assert read_string(SimBackend(vm.root), "kern.hostuuid") == \
        "11111111-2222-4333-8444-555555555555"
    vm.set_tunable("debug.acpi.disabled", "vmgenc")
    vm.boot()
    assert vmgenc_units(b) == []
    with pytest.raises(NoDevice, match="kldload vmgenc"):
        read_guids(b)


def test_both_backends_agree_on_every_oid_of_a_reference_model_vm(tmp_path, monkeypatch,
                                                                  fakesysctl_lib):  # noqa: F811
    vm = SimulatedVM(str(tmp_path / "vm"))
    vm.init("qemu", guid=G0, units=2, ssh_keys=False)
    monkeypatch.setenv("VMGENC_ROOT", vm.root)
    sim, libc = SimBackend(vm.root), LibcBackend(fakesysctl_lib)
    state = simstate.load(vm.root)
    names = set(state.nodes)
    names |= {n.rsplit(".", 1)[0] for n in state.nodes if "." in n}  # unlisted nodes
    assert len(names) > 20
    for name in sorted(names):
        for oldlen in (None, 0, 1, 15, 16, 4096):
            assert outcome(sim, name, oldlen) == outcome(libc, name, oldlen), (name, oldlen)
    for name in state.kenv:
        assert sim.kenv_get(name) == libc.kenv_get(name) == state.kenv[name]
