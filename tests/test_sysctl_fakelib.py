"""The C stand-in (tests/csrc/fakesysctl.c) at the C level: the bytes it writes into the
caller's buffer, ``*oldlenp`` after ENOMEM, kenv truncation, atomic writes under the lock."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import threading

import psutil
import pytest
from cbuild import build, fakesysctl_lib, fakesysctl_probe  # noqa: F401  (session fixtures)
from conftest import write_kernel

from vmgenc_tools import simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.sysctl import read_int, read_string, write_string, write_ulong
from vmgenc_tools.sysctl.libc import LibcBackend
from vmgenc_tools.sysctl.sim import SimBackend

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
RAW = Generation.parse(G0).raw
SMBIOS = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
GUARD = "a5" * 4


def read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture
def root(tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    write_kernel(root, [G0], smbios_uuid=SMBIOS)
    return root


@pytest.fixture
def probe(root, fakesysctl_probe):  # noqa: F811
    """Run the probe against ``root``; returns its output fields as a dict."""

    def run(*args: str) -> dict[str, str]:
        env = dict(os.environ, VMGENC_ROOT=root)
        out = subprocess.run([fakesysctl_probe, *args], env=env, capture_output=True,
                             text=True, check=True).stdout
        return dict(kv.split("=", 1) for kv in out.split())

    return run


def test_null_oldp_sets_oldlenp_to_the_size(probe):
    assert probe("sysctl", "dev.vmgenc.0.guid", "-") == {
        "rc": "0", "errno": "0", "oldlen": "16", "buf": ""}


@pytest.mark.parametrize("oldlen", [0, 1, 4, 15])
def test_short_buffer_copies_what_fits_and_leaves_oldlenp_unchanged(probe, oldlen):
    r = probe("sysctl", "dev.vmgenc.0.guid", str(oldlen))
    assert (r["rc"], int(r["errno"]), r["oldlen"]) == ("-1", errno.ENOMEM, str(oldlen))
    assert r["buf"] == RAW[:oldlen].hex() + GUARD


@pytest.mark.parametrize("oldlen", [16, 20])
def test_enough_room_copies_the_value_and_nothing_more(probe, oldlen):
    r = probe("sysctl", "dev.vmgenc.0.guid", str(oldlen))
    assert (r["rc"], r["errno"], r["oldlen"]) == ("0", "0", "16")
    assert r["buf"] == RAW.hex() + "a5" * (oldlen - 16) + GUARD


@pytest.mark.parametrize("name,err", [
    ("dev.vmgenc.0", errno.EISDIR), ("dev", errno.EISDIR), ("dev.vmgenc.0.guid.x", errno.ENOENT),
    ("dev.vmgenc.1.guid", errno.ENOENT), ("", errno.EINVAL),
])
def test_lookup_errors_touch_nothing(probe, name, err):
    r = probe("sysctl", name, "8")
    assert (r["rc"], int(r["errno"]), r["oldlen"], r["buf"]) == ("-1", err, "8", "a5" * 12)


def test_errors_on_write(probe):
    r = probe("sysctl", "dev.vmgenc.0.guid", "-", "00" * 16)
    assert (r["rc"], int(r["errno"]), r["oldlen"]) == ("-1", errno.EPERM, "999")
    r = probe("sysctl", "kern.hostid", "-", "00" * 4)
    assert int(r["errno"]) == errno.EINVAL


def test_write_returns_the_old_size_and_rewrites_one_field(probe, root):
    path = simstate.tab_path(root)
    with open(path, "a", encoding="utf-8") as f:  # lines the Python writer would not produce
        f.write("# a comment kept as is\n\nS\tx.y\tint\tI\trw\t01000000\tdescr with  spaces\n")
    before = read_lines(path)
    r = probe("sysctl", "kern.hostuuid", "-", b"hello".hex())
    assert (r["rc"], r["oldlen"]) == ("0", "37")  # oldp NULL: *oldlenp is the old size
    after = read_lines(path)
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(before) == len(after) and len(changed) == 1
    old, new = changed[0]
    assert old.split("\t")[:5] == new.split("\t")[:5] and old.split("\t")[6:] == new.split("\t")[6:]
    assert new.split("\t")[5] == b"hello\0".hex()
    assert os.path.exists(os.path.join(simstate.sim_dir(root), "lock"))
    assert [n for n in os.listdir(simstate.sim_dir(root)) if ".tmp." in n] == []


@pytest.mark.parametrize("length,rc,copied", [
    (0, 0, b""), (1, 1, SMBIOS[:1].encode()), (5, 5, SMBIOS[:5].encode()),
    (36, 36, SMBIOS.encode()), (37, 37, SMBIOS.encode() + b"\0"),
    (129, 37, SMBIOS.encode() + b"\0"),
])
def test_kenv_get_copies_like_sys_kenv(probe, length, rc, copied):
    r = probe("kenv", "smbios.system.uuid", str(length))
    assert (int(r["rc"]), r["errno"]) == (rc, "0")
    assert r["buf"] == copied.hex() + "a5" * (length - len(copied)) + GUARD


def test_kenv_errors(probe):
    assert int(probe("kenv", "smbios.system.serial", "129")["errno"]) == errno.ENOENT
    assert int(probe("kenv", "x" * 129, "129")["errno"]) == errno.ENAMETOOLONG
    assert int(probe("kenv", "smbios.system.uuid", "-1")["errno"]) == errno.EINVAL


@pytest.mark.parametrize("content", [
    "S\tkern.x\tint\t\trw\t0100\n",            # 6 fields
    "S\tkern.x\tfloat\t\trw\t01000000\td\n",   # unknown kind
    "S\tkern.x\tint\t\two\t01000000\td\n",     # bad access
    "S\tkern.x\tint\t\trw\t0g000000\td\n",     # bad hex
    "K\tsmbios.system.uuid\t123\n",            # odd hex
    "Z\twhat\n",                               # unknown record
])
def test_a_malformed_kernel_tab_is_eio(probe, root, content):
    with open(simstate.tab_path(root), "a", encoding="utf-8") as f:
        f.write(content)
    with pytest.raises(simstate.SimStateError):
        simstate.load(root)  # the Python parser rejects it too
    assert int(probe("sysctl", "dev.vmgenc.0.guid", "-")["errno"]) == errno.EIO
    assert int(probe("kenv", "smbios.system.uuid", "129")["errno"]) == errno.EIO


def test_writes_wait_for_the_sim_lock(probe, root, fakesysctl_probe):  # noqa: F811
    env = dict(os.environ, VMGENC_ROOT=root)
    with simstate.locked(root):
        proc = subprocess.Popen([fakesysctl_probe, "sysctl", "kern.hostuuid", "-",
                                 b"locked".hex()], env=env, stdout=subprocess.PIPE, text=True)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        assert read_string(SimBackend(root), "kern.hostuuid").startswith("00000000")
    out, _ = proc.communicate(timeout=30)
    assert "rc=0" in out
    assert read_string(SimBackend(root), "kern.hostuuid") == "locked"


def test_concurrent_writers_through_both_backends(root, fakesysctl_lib, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VMGENC_ROOT", root)
    sim, libc = SimBackend(root), LibcBackend(fakesysctl_lib)
    errors: list[BaseException] = []

    def writer(fn) -> None:
        try:
            for i in range(60):
                fn(i)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [
        threading.Thread(target=writer, args=(lambda i: write_ulong(libc, "kern.hostid", i),)),
        threading.Thread(target=writer,
                         args=(lambda i: write_string(sim, "kern.hostuuid", f"u{i}"),)),
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        simstate.load(root)  # readers always see a whole file
    for t in threads:
        t.join()
    assert errors == []
    for b in (sim, libc):
        assert read_int(b, "kern.hostid") == 59
        assert read_string(b, "kern.hostuuid") == "u59"


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_no_leak_or_invalid_access_under_valgrind(root, fakesysctl_probe):  # noqa: F811
    env = dict(os.environ, VMGENC_ROOT=root)
    base = ["valgrind", "-q", "--leak-check=full", "--show-leak-kinds=all",
            "--errors-for-leak-kinds=all", "--error-exitcode=99", fakesysctl_probe]
    script = [["loop", "dev.vmgenc.0.guid", "200"],
              ["sysctl", "dev.vmgenc.0.guid", "4"],
              ["sysctl", "kern.hostuuid", "64", b"valgrind".hex()],
              ["sysctl", "dev.vmgenc.0.guid", "-", "00"],
              ["sysctl", "dev.vmgenc.0", "8"],
              ["kenv", "smbios.system.uuid", "5"],
              ["kenv", "nope", "129"]]
    args = [a for cmd in script for a in [";", *cmd]][1:]
    proc = subprocess.run(base + args, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("rc=") == len(script) - 1
    assert read_string(SimBackend(root), "kern.hostuuid") == "valgrind"


def test_without_the_test_export_interfaces_come_from_psutil(root, tmp_path, monkeypatch):
    """FreeBSD's libc has no vmgenc_fake_interfaces: the backend asks psutil (AF_LINK)."""
    lib = build(str(tmp_path), "libnoifaces.so", ["fakesysctl.c"], shared=True,
                extra=("-DFAKESYSCTL_NO_INTERFACES",))
    monkeypatch.setenv("VMGENC_ROOT", root)
    ifaces = LibcBackend(lib).interfaces()
    assert "vtnet0" not in ifaces  # the simulated list is not consulted
    expected = {name: a.address for name, addrs in psutil.net_if_addrs().items()
                for a in addrs if a.family == psutil.AF_LINK and a.address}
    assert ifaces == expected
    assert all(re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2})+", m) for m in ifaces.values())
