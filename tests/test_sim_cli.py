"""``vmgenctl sim …``: the command-line face of the simulated VM (design §3)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from vmgenc_tools import exitcodes, simstate
from vmgenc_tools.cli import run
from vmgenc_tools.reference.vm import SimulatedVM

QEMU_GUID = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
QEMU_DUMP = "0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"
DEVD_CONF = """\
notify 10 {
\tmatch "system" "ACPI";
\tmatch "subsystem" "VMGenerationCounter";
\taction "printf '%s %s\\n' $type $notify >> ${VMGENC_ROOT}/seen";
};
"""


@pytest.fixture
def root(tmp_path):
    """A QEMU VM made by the model (no host keys: the CLI init test makes real ones)."""
    r = str(tmp_path / "vm")
    SimulatedVM(r).init("qemu", guid=QEMU_GUID, ssh_keys=False)
    return r


def sim(root: str, *args: str) -> int:
    return run(["--root", root, "sim", *args])


def test_sim_init_creates_an_attached_vm(tmp_path, capsys):
    r = str(tmp_path / "vm")
    assert sim(r, "init", "--hypervisor", "xen", "--guid", QEMU_GUID) == 0
    out = capsys.readouterr().out
    assert f"\\_SB_.PCI0.ISA_.VGID: {QEMU_GUID}  ({QEMU_DUMP})" in out
    assert simstate.is_simulated(r)
    assert os.path.exists(os.path.join(r, "etc", "ssh", "ssh_host_ed25519_key"))


@pytest.mark.parametrize("preset", ["qemu", "bhyve", "xen", "hyperv", "firecracker"])
def test_sim_init_names_the_hypervisor_once(tmp_path, capsys, preset):
    from vmgenc_tools.reference.hypervisor import PRESETS

    r = str(tmp_path / "vm")
    assert sim(r, "init", "--hypervisor", preset) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"simulated VM under {r}: {PRESETS[preset].description}"
    assert not re.search(r"\bVM VM\b|microVM VM", first)


def test_sim_init_rejects_an_unknown_hypervisor(tmp_path, capsys):
    assert sim(str(tmp_path / "vm"), "init", "--hypervisor", "vmware") == exitcodes.USAGE
    assert not os.path.exists(str(tmp_path / "vm" / ".vmgenc-sim"))


@pytest.mark.parametrize("guid", ["nonsense", "", "324e6eaf-d1d1-4bf6-bf41"])
def test_sim_init_bad_guid_names_the_option(tmp_path, capsys, guid):
    """As ``--smbios-uuid`` does; an empty ``--guid`` is not "random"; nothing is created."""
    r = str(tmp_path / "vm")
    assert sim(r, "init", "--guid", guid) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert err == (f"vmgenctl: --guid: not a GUID: {guid!r} (expected 8-4-4-4-12 hex digits, "
                   "e.g. 324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87)\n")
    assert not os.path.exists(r)
    assert sim(r, "init", "--smbios-uuid", "nonsense") == exitcodes.USAGE
    assert capsys.readouterr().err.startswith("vmgenctl: --smbios-uuid 'nonsense' ")


def test_sim_init_bad_guid_via_the_console_script(tmp_path):
    vmgenctl = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
    p = subprocess.run([vmgenctl, "--root", str(tmp_path / "vm"), "sim", "init", "--guid",
                        "nonsense"], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout) == (exitcodes.USAGE, "")
    assert p.stderr.startswith("vmgenctl: --guid: not a GUID: 'nonsense' (expected ")
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


@pytest.mark.parametrize("command", ["clone", "restore", "cold-clone"])
def test_sim_change_bad_guid_names_the_option(root, capsys, command):
    before = SimulatedVM(root).cached_guids()
    assert sim(root, command, "--guid", "zz") == exitcodes.USAGE
    assert capsys.readouterr().err.startswith("vmgenctl: --guid: not a GUID: 'zz' (expected ")
    assert SimulatedVM(root).cached_guids() == before


def test_sim_sysctl_renderings(root, capfdbinary):
    assert sim(root, "sysctl", "dev.vmgenc.0.guid") == 0
    assert capfdbinary.readouterr().out == b""
    assert sim(root, "sysctl", "-x", "dev.vmgenc.0.guid") == 0
    assert capfdbinary.readouterr().out == \
        f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}\n".encode()
    assert sim(root, "sysctl", "-b", "dev.vmgenc.0.guid") == 0
    assert capfdbinary.readouterr().out == bytes.fromhex(QEMU_DUMP[2:])
    assert sim(root, "sysctl", "-o", "dev.vmgenc.0.guid") == 0
    assert capfdbinary.readouterr().out.endswith(b"...\n")


def test_sim_sysctl_trailing_dot_prints_canonical_names(root, capfdbinary):
    assert sim(root, "sysctl", "-x", "dev.vmgenc.0.guid.") == 0
    assert capfdbinary.readouterr().out == \
        f"dev.vmgenc.0.guid: Format: Length:16 Dump:{QEMU_DUMP}\n".encode()
    assert sim(root, "sysctl", "dev.vmgenc.0.") == 0
    lines = capfdbinary.readouterr().out.decode().splitlines()
    assert lines[0] == "dev.vmgenc.0.%parent: acpi0" and len(lines) == 5
    assert all(line.startswith("dev.vmgenc.0.%") for line in lines)


def test_sim_sysctl_unknown_oid_exits_1(root, capfd):
    assert sim(root, "sysctl", "dev.vmgenc.3.guid") == 1
    assert capfd.readouterr().err == "sysctl: unknown oid 'dev.vmgenc.3.guid'\n"


def test_sim_clone_hands_the_devctl_line_to_devd(root, capsys):
    with open(os.path.join(root, "etc", "devd.conf"), "w") as f:
        f.write(DEVD_CONF)
    SimulatedVM(root).drain_devctl()
    assert sim(root, "clone") == 0
    out = capsys.readouterr().out
    assert f"vmgenc0: {QEMU_GUID} -> " in out
    assert "devctl: !system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00" \
        in out
    with open(os.path.join(root, "seen")) as f:
        assert f.read() == "\\_SB_.VGEN 0x00\n"      # devd's $'…' quoting, decoded by sh
    assert SimulatedVM(root).drain_devctl() == []


def test_sim_restore_with_a_broken_devd_conf_keeps_the_record(root, capsys):
    with open(os.path.join(root, "etc", "devd.conf"), "w") as f:
        f.write("notify 10 { match ; };\n")
    SimulatedVM(root).drain_devctl()
    assert sim(root, "restore") == exitcodes.CONFIG
    assert "syntax error" in capsys.readouterr().err
    assert len(SimulatedVM(root).drain_devctl()) == 1


@pytest.mark.parametrize("command", ["boot", "reboot"])
def test_sim_boot_runs_the_boot_check_and_returns_its_status(root, capsys, command):
    """The fixture's init runs no check, so this boot's check is the first: the GUID is
    ``first-seen``, which runs no identity hooks by default, so it settles ``done``, exit 0."""
    assert os.path.exists(os.path.join(root, "etc", "rc.conf"))
    assert not os.path.exists(os.path.join(root, "var", "db", "vmgenc", "last-guid"))
    rc = sim(root, command)
    with open(os.path.join(root, "var", "db", "vmgenc", "last-guid")) as f:
        line1, line2 = f.read().splitlines()[:2]
    live = SimulatedVM(root).cached_guids()[0]
    assert line1 == live.hex == QEMU_DUMP             # qemu guid fixed: same GUID, recorded
    assert (rc, line2) == (exitcodes.OK, "done")
    assert f"first-seen: (first seen) -> {QEMU_GUID}: done" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["boot", "reboot"])
def test_sim_boot_skips_the_check_when_vmgenc_is_disabled(root, capsys, command):
    """rc.d/vmgenc does not run at boot with vmgenc_enable=NO: the power cycle happens,
    devd still gets the attach, but nothing is checked or recorded."""
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write('vmgenc_enable="NO"\n')
    boots = SimulatedVM(root).model()["boot_count"]
    assert sim(root, command) == exitcodes.OK
    out = capsys.readouterr().out.splitlines()
    assert "vmgenc_enable is NO: rc.d/vmgenc does not run; no boot check" in out
    assert not any(line.startswith("#") for line in out)          # no change summary
    assert any(line.startswith("devd <- +vmgenc0 at ") for line in out)
    assert SimulatedVM(root).model()["boot_count"] == boots + 1
    assert not os.path.exists(os.path.join(root, "var", "db", "vmgenc"))
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:   # sysrc vmgenc_enable=YES
        f.write('vmgenc_enable="YES"\n')
    assert sim(root, command) == exitcodes.OK
    out = capsys.readouterr().out
    assert "vmgenc_enable is NO" not in out and "first-seen: (first seen) -> " in out


def test_sim_init_enables_vmgenc_as_an_installed_system_would(root):
    from vmgenc_tools.fastcheck import load_config

    assert load_config(root).enable is True


def test_sim_cold_clone_then_clone_refused_until_boot(root, capsys):
    assert sim(root, "cold-clone", "--guid", "9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910") == 0
    out = capsys.readouterr().out
    assert "-> 9b8c3a4e-1f2d-4c5b-8a7e-6d5c4b3a2910 at next boot" in out
    assert sim(root, "clone") == exitcodes.STATE
    assert "powered off" in capsys.readouterr().err


def test_sim_notify_values(root, capsys):
    assert sim(root, "notify") == 0
    assert "notify 0x80: no change, no event" in capsys.readouterr().out
    assert sim(root, "notify", "--value", "0x81") == 0
    assert "console: vmgenc0: unknown notify 0x81" in capsys.readouterr().out
    assert sim(root, "notify", "--value", "eighty") == exitcodes.USAGE


def test_sim_clone_on_bhyve_is_refused(tmp_path, capsys):
    r = str(tmp_path / "bhyve")
    SimulatedVM(r).init("bhyve", ssh_keys=False)
    assert sim(r, "clone") == exitcodes.USAGE
    err = capsys.readouterr().err
    assert err.startswith("vmgenctl: bhyve never notifies") and err.count("\n") == 1


def test_sim_dmesg_and_info(root, capsys):
    assert sim(root, "dmesg") == 0
    assert capsys.readouterr().out.startswith("vmgenc0: <VM Generation Counter> on acpi0\n")
    assert sim(root, "info", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["hypervisor"] == "qemu" and info["cached_raw"] == [QEMU_DUMP]


@pytest.mark.parametrize("command", [["clone"], ["boot"], ["info"], ["sysctl", "kern"]])
def test_sim_commands_without_a_vm(tmp_path, capsys, command):
    """A --root that does not exist is a usage error (as for status); an existing
    directory without a VM is a state error; neither creates anything."""
    missing = tmp_path / "none"
    assert sim(str(missing), *command) == exitcodes.USAGE
    assert capsys.readouterr().err == (
        f"vmgenctl: --root {missing}: no such directory (check the path; "
        f"'vmgenctl --root {missing} sim init' creates a simulated VM there)\n")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sim(str(empty), *command) == exitcodes.STATE
    assert capsys.readouterr().err == (
        f"vmgenctl: no simulated VM under {empty}: run 'vmgenctl --root {empty} sim init' "
        "first\n")
    assert list(empty.iterdir()) == []


# -- make demo -------------------------------------------------------------------------------

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_TOOLS = ("bash", "ssh-keygen", "ssh-keyscan", "sshd", "shellcheck", "mandoc", "sqlite3", "cc")


def _demo_command(venv: str) -> list[str]:
    """``make demo`` when make would neither reinstall the venv nor install packages,
    else the script it runs (a test must not reach the network or apt-get)."""
    make = shutil.which("make")
    fresh = make is not None and subprocess.run(
        [make, "-q", f"VENV={venv}", f"{venv}/.installed"], cwd=TOP,
        capture_output=True).returncode == 0
    tools = all(shutil.which(t) or os.access(f"/usr/sbin/{t}", os.X_OK) for t in DEMO_TOOLS)
    if fresh and tools:
        return [make, "-s", f"VENV={venv}", "demo"]
    return ["sh", os.path.join(TOP, "tools", "demo")]


def test_make_demo_tells_the_story_fast_and_stays_in_its_sandbox(tmp_path):
    """As a new user runs it: no DEMO_ROOT (the sandbox comes from mktemp under $TMPDIR),
    under a minute, every step headed, and nothing written outside the sandbox."""
    tmpdir, home = tmp_path / "tmp", tmp_path / "home"
    tmpdir.mkdir()
    home.mkdir()
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VMGENC_", "DEMO_", "MAKE")) and k != "BIN"}
    env.update(TMPDIR=str(tmpdir), HOME=str(home), BIN=os.path.dirname(sys.executable))
    t0 = time.monotonic()
    p = subprocess.run(_demo_command(venv), capture_output=True, text=True, timeout=300,
                       env=env, cwd=TOP)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
    out = p.stdout
    headings = re.findall(r"^== (.+) ==$", out, re.M)
    assert len(headings) == 8, headings
    for words in ("QEMU", "First boot", "Live clone", "bhyve", "not a clone", "Cold clone",
                  "history", "Identity"):
        assert any(words in h for h in headings), words
    assert "sim init --hypervisor qemu" in out and "devd <- !system=ACPI " \
        "subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00" in out
    assert re.search(r"^#\d+ platform-restart: .*: done", out, re.M)
    assert re.search(r"^3\s.*\sboot\s+clone\s+done\s", out, re.M)  # the cold clone, at boot
    ids = re.findall(r"^(.+?)\s+hostid (\S+)\s+ed25519 (SHA256:\S+)$", out, re.M)
    assert len(ids) == 5
    (_, h0, f0), (_, h1, f1), (_, h2, f2), (_, h3, f3), (_, h4, f4) = ids
    assert len({h0, h1, h4}) == 3 and len({f0, f1, f4}) == 3  # QEMU guest: rotated twice
    assert (h2, f2) == (h3, f3)                               # bhyve restarts: untouched
    sandbox = re.search(r"^sandbox: (\S+) ", out, re.M).group(1)
    assert os.path.dirname(sandbox) == str(tmpdir)
    assert os.listdir(tmpdir) == [os.path.basename(sandbox)]
    assert os.listdir(home) == []
    assert sorted(os.listdir(tmp_path)) == ["home", "tmp"]
    assert sorted(os.listdir(sandbox)) == ["bhyve-vm", "identities", "qemu-vm"]
