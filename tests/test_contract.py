"""The ⚑ command-line contract (design §3), walked through the installed console script.

Each row: a command line, the exit code the contract gives it, and something its output must
say.  Other test files go deeper per command; this one keeps the table itself honest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from vmgenc_tools import __version__, exitcodes

VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
HISTORY_FIELDS = {"id", "detected_at", "source", "old_guid", "new_guid", "class", "status",
                  "hooks"}
HOOK_FIELDS = {"name", "status", "exit_code", "duration_s"}


def ctl(root: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=120, env=env, input=stdin)


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    """A QEMU guest booted once, then cloned at run time with a failing site hook."""
    root = str(tmp_path_factory.mktemp("contract") / "vm")
    assert ctl(root, "sim", "init", "--guid", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
               ).returncode == 0
    assert ctl(root, "sim", "boot").returncode == 0
    return root


def test_version():
    p = subprocess.run([VMGENCTL, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and __version__ in p.stdout


@pytest.mark.parametrize("args,code,says", [
    (["status"], exitcodes.OK, "settled"),
    (["history"], exitcodes.OK, "first-seen"),
    (["history", "-n", "1", "--csv"], exitcodes.OK, "id,detected_at"),
    (["check"], exitcodes.OK, ""),
    (["check", "--source", "boot", "--expect", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"],
     exitcodes.OK, ""),
    (["check", "--expect", "9f0c5b8e-3a1d-4e6f-8b2a-1c4d5e6f7a8b"], exitcodes.EXPECT_FAILED,
     "9f0c5b8e"),
    (["check", "--dry-run"], exitcodes.OK, "no change"),
    (["retry"], exitcodes.OK, ""),
    (["wait", "--timeout", "0.3"], exitcodes.TIMEOUT, ""),
    (["hooks", "list"], exitcodes.OK, "clone"),
    (["hooks", "validate"], exitcodes.OK, "ok"),
    (["sim", "sysctl", "-x", "dev.vmgenc.0.guid"], exitcodes.OK,
     "dev.vmgenc.0.guid: Format: Length:16 Dump:0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"),
    (["sim", "sysctl", "dev.vmgenc.0.guid"], exitcodes.OK, ""),
    (["sim", "sysctl", "dev.vmgenc.7.guid"], 1, "unknown oid 'dev.vmgenc.7.guid'"),
    (["sim", "devd", "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00"],
     exitcodes.OK, "vmgenc-devd $'\\\\_SB_.VGEN'"),
    (["sim", "notify"], exitcodes.OK, ""),
    (["sim", "notify", "--value", "0x81"], exitcodes.OK, ""),
    (["watch", "--count", "1"], exitcodes.ENVIRONMENT, "devd is not running"),
    (["history", "--since", "not-a-time"], exitcodes.USAGE, "ISO-8601"),
    (["check", "--source", "cron"], exitcodes.USAGE, "cron"),
])
def test_contract_row(vm, args, code, says):
    p = ctl(vm, *args)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert says in p.stdout + p.stderr
    if code not in (exitcodes.OK, exitcodes.EXPECT_FAILED, exitcodes.TIMEOUT, 1):
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_sim_sysctl_b_is_the_raw_bytes(vm):
    p = subprocess.run([VMGENCTL, "--root", vm, "sim", "sysctl", "-b", "dev.vmgenc.0.guid"],
                       capture_output=True)
    assert p.returncode == 0 and p.stdout == bytes.fromhex("af6e4e32d1d1f64bbf41b9bb6c91fb87")


def test_sim_devd_json_and_parse_error(vm, tmp_path):
    line = "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00"
    p = ctl(vm, "sim", "devd", "--json", line)
    (doc,) = json.loads(p.stdout)
    assert p.returncode == 0 and set(doc) >= {"event", "match", "commands"}
    assert set(doc["match"]) == {"file", "line", "priority"} and doc["match"]["priority"] == 100
    bad = tmp_path / "bad.conf"
    bad.write_text('notify 0 { match "system" "ACPI" };\n')
    p = ctl(vm, "sim", "devd", "-f", str(bad), line)
    assert p.returncode == 1 and "Cannot parse" in p.stderr


def test_no_device_is_exit_3(tmp_path):
    from vmgenc_tools.reference.vm import SimulatedVM

    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init").returncode == 0
    SimulatedVM(root).set_tunable("debug.acpi.disabled", "vmgenc")  # loader.conf tunable
    assert ctl(root, "sim", "boot").returncode == exitcodes.NO_DEVICE
    for args in (["status"], ["check"]):
        p = ctl(root, *args)
        assert p.returncode == exitcodes.NO_DEVICE, (args, p.stdout, p.stderr)
        assert "kldload vmgenc" in p.stderr


def test_runtime_changes_history_json_and_failed_hooks(vm):
    hooks = os.path.join(vm, "usr/local/etc/vmgenc/hooks.d")
    os.makedirs(hooks, exist_ok=True)
    with open(os.path.join(vm, "etc/rc.conf"), "a") as f:
        f.write(f'vmgenc_hooks_owner_uid="{os.getuid()}"\nvmgenc_hooks_restore="site"\n'
                'vmgenc_runtime_class="restore"\n')
    hook = os.path.join(hooks, "10-fails")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\necho cannot; exit 3\n")
    os.chmod(hook, 0o755)
    for p in (ctl(vm, "sim", "restore"),):
        assert p.returncode == 0, p.stderr
    assert ctl(vm, "wait", "--since", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87",
               "--timeout", "60").returncode == 1            # settled, hooks failed
    assert ctl(vm, "status").returncode == 1
    assert ctl(vm, "retry").returncode == 1
    os.chmod(hook, 0o644)                                       # not executable → refused
    assert ctl(vm, "hooks", "validate").returncode == 1
    os.remove(hook)
    assert ctl(vm, "retry").returncode == 0
    assert ctl(vm, "status").returncode == 0
    records = json.loads(ctl(vm, "history", "--json").stdout)
    assert [r["class"] for r in records] == ["first-seen", "restore"]
    for r in records:
        assert set(r) >= HISTORY_FIELDS
        assert r["status"] in ("pending", "done", "failed")
        assert r["source"] in ("boot", "devd", "manual")
        for h in r["hooks"]:
            assert set(h) >= HOOK_FIELDS
    assert records[0]["old_guid"] is None and records[1]["source"] == "devd"
    assert json.loads(ctl(vm, "history", "-n", "1", "--json").stdout)[0]["id"] == records[1]["id"]
