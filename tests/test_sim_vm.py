"""SimulatedVM: the sandbox it creates, boot-time userland, scenarios, shared state."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import struct
import subprocess
import sys

import pytest

from vmgenc_tools import exitcodes, simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.reference.eventhandler import EVENTHANDLER_DEREGISTER, EVENTHANDLER_REGISTER
from vmgenc_tools.reference.sysctl import sysctlbyname
from vmgenc_tools.reference.vm import SimError, SimulatedVM, hostid_of, valid_hostid
from vmgenc_tools.sysctl import get_backend, read_bytes, read_int, read_string, write_string
from vmgenc_tools.sysctl.errors import SysctlError

SMBIOS = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def vm(tmp_path):
    v = SimulatedVM(str(tmp_path / "vm"))
    v.init("qemu", smbios_uuid=SMBIOS, ssh_keys=False)
    return v


def test_init_builds_the_sandbox_with_real_host_keys(tmp_path):
    vm = SimulatedVM(str(tmp_path / "vm"))
    vm.init("qemu", smbios_uuid=SMBIOS)
    root = vm.root
    for d in ("etc", "var", "var/run", "boot", "usr/local/etc/devd", "usr/local/etc/rc.d"):
        assert os.path.isdir(os.path.join(root, d)), d
    for alg in ("rsa", "ecdsa", "ed25519"):
        key = os.path.join(root, "etc", "ssh", f"ssh_host_{alg}_key")
        out = subprocess.run(["ssh-keygen", "-l", "-f", key + ".pub"], capture_output=True,
                             text=True, check=True).stdout
        assert f"({alg.upper()})" in out
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    for rel in ("boot/entropy", "entropy"):
        st = os.stat(os.path.join(root, rel))
        assert st.st_size == 4096 and stat.S_IMODE(st.st_mode) == 0o600
    with open(os.path.join(root, "etc", "rc.conf")) as f:
        assert 'vmgenc_enable="YES"' in f.read().splitlines()
    for d in ("usr/local/etc/vmgenc", "usr/local/etc/vmgenc/hooks.d"):  # as the port installs
        assert stat.S_IMODE(os.stat(os.path.join(root, d)).st_mode) == 0o755, d
    assert os.listdir(os.path.join(root, "usr/local/etc/vmgenc/hooks.d")) == []


def test_first_boot_writes_hostid_files_as_hostid_save_does(vm):
    with open(os.path.join(vm.root, "etc", "hostid")) as f:
        assert f.read() == SMBIOS + "\n"             # a valid SMBIOS UUID is used
    with open(os.path.join(vm.root, "etc", "machine-id")) as f:
        assert f.read() == SMBIOS.replace("-", "") + "\n"
    be = get_backend(vm.root)
    assert read_string(be, "kern.hostuuid") == SMBIOS
    assert read_int(be, "kern.hostid") == int(hashlib.md5(SMBIOS.encode()).hexdigest()[:8], 16)
    assert hostid_of(SMBIOS) == read_int(be, "kern.hostid")


def test_valid_hostid_rejects_placeholders():
    assert valid_hostid(SMBIOS)
    for bad in ("00000000-0000-0000-0000-000000000000", "03000200-0400-0500-0006-000700080009",
                "12345678-ffff-ffff-ffff-ffffffffffff", SMBIOS.upper(), "not-a-uuid"):
        assert not valid_hostid(bad)


def test_placeholder_smbios_uuid_makes_rc_hostid_generate_one(tmp_path):
    vm = SimulatedVM(str(tmp_path / "vm"))
    vm.init("qemu", smbios_uuid="03000200-0400-0500-0006-000700080009", ssh_keys=False)
    assert "hostid: unable to figure out a UUID from DMI data, generating a new one" \
        in vm.dmesg()
    uuid_text = read_string(get_backend(vm.root), "kern.hostuuid")
    assert valid_hostid(uuid_text) and uuid_text != "03000200-0400-0500-0006-000700080009"


def test_boot_sets_boottime_and_a_new_boot_resets_the_kernel(vm):
    be = get_backend(vm.root)
    t1 = struct.unpack("=qq", read_bytes(be, "kern.boottime"))
    vm.notify(0x81)
    assert "unknown notify" in vm.dmesg()
    vm.boot()
    t2 = struct.unpack("=qq", read_bytes(be, "kern.boottime"))
    assert t2 > t1
    assert "unknown notify" not in vm.dmesg()
    assert vm.dmesg().splitlines() == ["vmgenc0: <VM Generation Counter> on acpi0",
                                       "random: registering fast source VM Generation ID"]
    assert vm.model()["boot_count"] == 2


def test_clone_runs_the_whole_chain(vm):
    vm.drain_devctl()
    calls = []
    tag = EVENTHANDLER_REGISTER("acpi_vmgenc_event", calls.append)
    try:
        res = vm.clone(guid="9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910")
    finally:
        EVENTHANDLER_DEREGISTER("acpi_vmgenc_event", tag)
    new = Generation.from_text("9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910")
    assert res.new == [new] == vm.cached_guids() == vm.live_guids()
    assert vm.harvested()[-2:] == [new.raw[:8], new.raw[8:]]
    assert calls == [None] and vm.eventhandler_count() == 1
    assert vm.drain_devctl() == [
        "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00\n"]


def test_spurious_and_unknown_notifies(vm):
    vm.drain_devctl()
    res = vm.notify(0x80)
    assert not res.changed and res.records == [] and res.console == []
    res = vm.notify(0x81)
    assert res.console == ["vmgenc0: unknown notify 0x81"]
    assert vm.notify(0x02).console == []               # a system notify: not for the driver
    with pytest.raises(SimError) as e:
        vm.notify(0x100)
    assert e.value.code == exitcodes.USAGE


def test_coalescing_through_the_hypervisor_path(vm):
    vm.drain_devctl()
    old = vm.cached_guids()[0]
    vm.write_guid("9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910")
    vm.raise_gpe()
    vm.write_guid(old.text)
    vm.raise_gpe()
    assert vm.pending_tasks() == 2
    res = vm.run_tasks()
    assert res.records == [] and vm.cached_guids() == [old]


def test_cold_clone_changes_identity_but_not_the_files(vm):
    hostid_before = read_string(get_backend(vm.root), "kern.hostuuid")
    macs_before = simstate.load(vm.root).ifaces
    res = vm.cold_clone()
    assert vm.model()["power"] == "off" and res.records == []
    with pytest.raises(SimError) as e:
        vm.clone()
    assert "powered off" in str(e.value) and e.value.code == exitcodes.STATE
    vm.boot()
    be = get_backend(vm.root)
    assert be.kenv_get("smbios.system.uuid") != SMBIOS
    assert be.interfaces() != macs_before
    assert read_string(be, "kern.hostuuid") == hostid_before   # /etc/hostid was copied
    assert vm.cached_guids() == res.live


def test_debug_acpi_disabled_tunable_keeps_the_driver_off(vm):
    vm.set_tunable("debug.acpi.disabled", "vmgenc")
    vm.boot()
    assert vm.cached_guids() == []
    assert vm.drain_devctl() == ["? at handle=\\_SB_.VGEN _HID=QEMUVGID _UID=0 "
                                 "_CID=VM_GEN_COUNTER on acpi0\n"]


@pytest.mark.parametrize("name", ["dev.vmgenc.0.guid", "dev.vmgenc.0", "dev.vmgenc"])
def test_debug_acpi_disabled_boot_leaves_no_vmgenc_oid(vm, name):
    """Facts §8: ENOENT when the driver is not attached.  The previous boot's OIDs
    (the driver was attached) do not survive into the disabled boot."""
    assert simstate.load(vm.root).lookup(name) is not None          # attached at init
    vm.set_tunable("debug.acpi.disabled", "vmgenc")
    vm.boot()
    with pytest.raises(SysctlError) as e:
        sysctlbyname(vm.root, name, 16)
    assert e.value.errno == errno.ENOENT


def test_devctl_queue_tunable_bounds_the_queue(vm):
    vm.set_tunable("hw.bus.devctl_queue", "2")
    vm.boot()
    assert read_int(get_backend(vm.root), "hw.bus.devctl_queue", signed=True) == 2
    first = vm.clone().records
    vm.clone()
    queued = vm.drain_devctl()
    assert len(queued) == 2 and queued[0] == first[0]   # the "+vmgenc0" record was reused


def test_init_refuses_an_existing_vm_and_bad_arguments(vm, tmp_path):
    with pytest.raises(SimError) as e:
        SimulatedVM(vm.root).init("qemu", ssh_keys=False)
    assert e.value.code == exitcodes.STATE and "already exists" in str(e.value)
    for kw in ({"hypervisor": "vmware"}, {"guid": "nope"}, {"smbios_uuid": "nope"}):
        with pytest.raises(SimError) as e:
            SimulatedVM(str(tmp_path / "other")).init(ssh_keys=False, **kw)
        assert e.value.code == exitcodes.USAGE


def test_missing_vm_is_a_one_line_error(tmp_path):
    with pytest.raises(SimError) as e:
        SimulatedVM(str(tmp_path / "none")).clone()
    assert "sim init" in str(e.value)


def test_atomic_write_completes_short_writes_and_leaves_no_temp_file(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    path = tmp_path / "state"
    simstate.atomic_write(str(path), b"0123456789abcdef", 0o600)
    monkeypatch.undo()
    assert path.read_bytes() == b"0123456789abcdef"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["state"]


def test_kernel_tab_keeps_unusual_text_and_refuses_tab_or_newline_fields():
    st = simstate.KernelState()
    st.set("debug.x", "string", simstate.encode_string("a\u2028b\x85c"), descr="d\u2028e\rf")
    st.kenv["smbios.x"] = "multi\nline\tvalue"          # values are hex-encoded
    assert simstate.parse(simstate.format_state(st)) == st
    for spoil in (lambda s: s.kenv.update({"a\nb": "v"}),
                  lambda s: s.ifaces.update({"em0": "x\ty"}),
                  lambda s: s.set("debug.y", "node", descr="two\nlines")):
        bad = simstate.KernelState()
        spoil(bad)
        with pytest.raises(ValueError, match="TAB or newline"):
            simstate.format_state(bad)


# -- shared state across processes -----------------------------------------------------------

def _py(code: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, check=True)


def test_another_process_reads_what_the_model_wrote(vm):
    res = vm.clone()
    out = _py("import sys; from vmgenc_tools.sysctl import get_backend, read_bytes; "
              "print(read_bytes(get_backend(sys.argv[1]), 'dev.vmgenc.0.guid').hex())",
              vm.root).stdout.strip()
    assert out == res.new[0].raw.hex()


def test_a_sysctl_write_by_another_process_survives_model_operations(vm):
    write_string(get_backend(vm.root), "kern.hostuuid", "11111111-2222-4333-8444-555555555555")
    vm.clone()
    vm.notify(0x80)
    assert read_string(get_backend(vm.root), "kern.hostuuid") == \
        "11111111-2222-4333-8444-555555555555"


def test_two_processes_cloning_one_vm_do_not_corrupt_it(vm):
    vm.drain_devctl()
    code = ("import sys; from vmgenc_tools.reference.vm import SimulatedVM\n"
            "vm = SimulatedVM(sys.argv[1])\n"
            "for _ in range(15): vm.clone()\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    procs = [subprocess.Popen([sys.executable, "-c", code, vm.root], env=env)
             for _ in range(2)]
    assert [p.wait() for p in procs] == [0, 0]
    model = vm.model()
    clones = [h for h in model["history"] if h["op"] == "clone"]
    assert len(clones) == 30
    # Each clone saw the previous one's result: the history is one unbroken chain.
    assert all(a["new"] == b["old"] for a, b in zip(clones, clones[1:]))
    assert vm.cached_guids() == vm.live_guids()
    assert len(vm.drain_devctl()) == 30
    with open(vm.state_path) as f:
        json.load(f)
