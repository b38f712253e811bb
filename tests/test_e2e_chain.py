"""End to end through the installed console script: the whole chain on every hypervisor preset.

sim clone → guest memory → Notify 0x80 → vmgenc task → devctl line → devd model with the
shipped devd/vmgenc.conf → real shell → vmgenc-devd → history → detached worker → hooks.
No mock sits between the devctl line and the handler.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

BIN = os.path.dirname(sys.executable)
VMGENCTL = os.path.join(BIN, "vmgenctl")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ctl(root: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=timeout)


def gated_site_hook(root: str) -> str:
    """A trusted site hook that waits for a gate file: the hooks outlast the devd action."""
    hooks = os.path.join(root, "usr/local/etc/vmgenc/hooks.d")
    os.makedirs(hooks, exist_ok=True)
    path = root
    for part in ("usr", "local", "etc", "vmgenc", "hooks.d"):
        path = os.path.join(path, part)
        os.chmod(path, 0o755)
    os.chmod(root, 0o755)
    gate = os.path.join(root, "gate")
    hook = os.path.join(hooks, "50-gated")
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\n'
                'echo "gated $VMGENC_CLASS $VMGENC_NEW_GUID"\n')
    os.chmod(hook, 0o755)
    with open(os.path.join(root, "etc/rc.conf"), "a") as f:
        f.write(f'vmgenc_hooks_owner_uid="{os.getuid()}"\n'
                'vmgenc_hooks_clone="hostid entropy site"\n')
    return gate


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def history(root: str) -> list[dict]:
    p = ctl(root, "history", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("preset", ["qemu", "xen", "hyperv", "firecracker"])
def test_runtime_clone_through_devd_per_preset(tmp_path, preset):
    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init", "--hypervisor", preset).returncode == 0
    boot = ctl(root, "sim", "boot")
    assert boot.returncode == 0, boot.stderr
    gate = gated_site_hook(root)
    old_hostid = read(os.path.join(root, "etc/hostid"))

    clone = ctl(root, "sim", "clone")
    assert clone.returncode == 0, clone.stderr
    assert "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_." in clone.stdout
    assert "vmgenc.conf" in clone.stdout and "-> exit 0" in clone.stdout
    # the devd action has returned while the site hook still waits at its gate
    assert ctl(root, "status").returncode == 1
    pending = history(root)[-1]
    assert (pending["source"], pending["class"], pending["status"]) == ("devd", "clone", "pending")

    open(gate, "w").close()
    assert ctl(root, "wait", "--since", pending["old_guid"], "--timeout", "60").returncode == 0
    assert ctl(root, "status").returncode == 0
    done = history(root)[-1]
    assert done["status"] == "done" and done["id"] == pending["id"]
    assert [(h["name"], h["status"]) for h in done["hooks"]] == [
        ("hostid", "ok"), ("entropy", "ok"), ("site:50-gated", "ok")]
    assert read(os.path.join(root, "etc/hostid")) != old_hostid


@pytest.mark.parametrize("preset", ["qemu", "bhyve", "xen", "hyperv", "firecracker"])
def test_cold_clone_is_caught_by_the_boot_check_not_by_devd(tmp_path, preset):
    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init", "--hypervisor", preset).returncode == 0
    assert ctl(root, "sim", "boot").returncode == 0
    before = len(history(root))
    cold = ctl(root, "sim", "cold-clone")
    assert cold.returncode == 0 and "VMGenerationCounter" not in cold.stdout
    assert len(history(root)) == before  # powered off: nothing happened in the guest
    boot = ctl(root, "sim", "boot")
    assert boot.returncode == 0, boot.stderr
    # devd gets the boot-time attach record, which no vmgenc rule takes: no action runs
    assert "devd <- +vmgenc0 " in boot.stdout and "Executing" not in boot.stdout
    last = history(root)[-1]
    assert (last["source"], last["class"], last["status"]) == ("boot", "clone", "done")
    assert [(h["name"], h["status"]) for h in last["hooks"]] == [
        ("sshd_keys", "ok"), ("hostid", "ok"), ("entropy", "ok")]
    assert ctl(root, "status").returncode == 0


def test_runtime_restore_through_devd(tmp_path):
    """sim restore runs the shipped snippet's action too; with the restore policy only
    the entropy refresh runs and the identity stays."""
    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init").returncode == 0
    assert ctl(root, "sim", "boot").returncode == 0
    with open(os.path.join(root, "etc/rc.conf"), "a") as f:
        f.write('vmgenc_runtime_class="restore"\n')
    old_hostid = read(os.path.join(root, "etc/hostid"))
    old_key = read(os.path.join(root, "etc/ssh/ssh_host_ed25519_key.pub"))
    before = history(root)[-1]

    restore = ctl(root, "sim", "restore")
    assert restore.returncode == 0, restore.stderr
    assert "devd <- !system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN" \
        in restore.stdout
    assert "vmgenc.conf" in restore.stdout and "-> exit 0" in restore.stdout
    assert ctl(root, "wait", "--since", before["new_guid"], "--timeout", "60").returncode == 0
    last = history(root)[-1]
    assert (last["source"], last["class"], last["status"]) == ("devd", "restore", "done")
    assert last["old_guid"] == before["new_guid"]
    assert [(h["name"], h["status"]) for h in last["hooks"]] == [("entropy", "ok")]
    assert read(os.path.join(root, "etc/hostid")) == old_hostid
    assert read(os.path.join(root, "etc/ssh/ssh_host_ed25519_key.pub")) == old_key
    assert ctl(root, "status").returncode == 0


SITECUSTOMIZE = """\
import os
with open(os.environ["PYTHON_STARTS"], "a") as f:
    f.write(" ".join(__import__("sys").argv) + "\\n")
"""


@pytest.mark.parametrize("preset", ["qemu", "bhyve", "xen", "hyperv", "firecracker"])
def test_cold_clone_through_the_installed_rc_d_script(tmp_path, preset):
    """The boot path through the file ``sim init`` installed (usr/local/etc/rc.d/vmgenc),
    under the real /bin/sh with the rc.subr stand-in and the fake sysctl, calling the real
    vmgenctl, on every hypervisor preset.  Any Python start is seen through
    sitecustomize (the vmgenctl path is absolute, so a PATH trap alone would miss it)."""
    from vmgenc_tools.reference.vm import SimulatedVM

    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init", "--hypervisor", preset).returncode == 0
    with open(os.path.join(root, "etc/rc.conf"), "a") as f:
        f.write('vmgenc_ssh_keytypes="ed25519"\n')  # no RSA keygen: keeps 5 presets fast
    installed = os.path.join(root, "usr/local/etc/rc.d/vmgenc")
    with open(installed) as f:
        text = f.read()
    assert text.count("\n. /etc/rc.subr\n") == 1
    script = tmp_path / "vmgenc"
    script.write_text(text.replace("\n. /etc/rc.subr\n",
                                   f"\n. {os.path.join(REPO, 'tests/rc/rc.subr')}\n"))
    trap = tmp_path / "trap"
    trap.mkdir()
    (trap / "sitecustomize.py").write_text(SITECUSTOMIZE)
    starts = tmp_path / "python-starts"
    env = {"PATH": f"{os.path.join(REPO, 'tests/fakes')}:/usr/bin:/bin", "HOME": root,
           "VMGENC_ROOT": root, "PYTHONPATH": str(trap), "PYTHON_STARTS": str(starts)}

    def boot_script() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(script), "start"], env=env, capture_output=True,
                              text=True, timeout=120)

    def pythons() -> list[str]:
        return starts.read_text().splitlines() if starts.exists() else []

    vm = SimulatedVM(root)
    assert history(root) == []
    initial = boot_script()  # nothing recorded yet: the real check records the generation
    assert initial.returncode == 0, initial.stdout + initial.stderr
    assert "No VM Generation ID recorded yet" in initial.stdout
    assert any("vmgenctl" in p for p in pythons())  # the trap does see Python
    first = history(root)
    assert [(c["source"], c["class"]) for c in first] == [("boot", "first-seen")]

    os.remove(starts)
    unchanged = boot_script()
    assert (unchanged.returncode, unchanged.stdout, unchanged.stderr) == (0, "", "")
    assert pythons() == []

    assert ctl(root, "sim", "cold-clone").returncode == 0
    vm.boot()  # power on; the boot check is the script's job here, not sim boot's
    changed = boot_script()
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "changed since it was last recorded" in changed.stdout
    assert any("vmgenctl" in p for p in pythons())
    last = history(root)[-1]
    assert (last["source"], last["class"], last["status"]) == ("boot", "clone", "done")
    assert last["old_guid"] == first[-1]["new_guid"]
    assert last["new_guid"] == vm.cached_guids()[0].text
    delivered = vm.deliver()  # then devd starts: it gets the attach, which runs no action
    attach = [rec for rec, _answer in delivered if rec.startswith("+vmgenc0 at ")]
    assert len(attach) == 1, [rec for rec, _answer in delivered]
    for _record, answer in delivered:
        assert answer.match is None or "vmgenc-devd" not in " ".join(answer.commands)

    os.remove(starts)
    again = boot_script()  # next boot, same GUID: the fast path, no Python at all
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert pythons() == []


def test_bhyve_restarts_are_not_clones(tmp_path):
    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init", "--hypervisor", "bhyve").returncode == 0
    for _ in range(3):
        assert ctl(root, "sim", "boot").returncode == 0
    classes = [c["class"] for c in history(root)]
    assert classes == ["first-seen", "platform-restart", "platform-restart"]
    assert ctl(root, "sim", "clone").returncode != 0  # bhyve never notifies at run time


def test_make_demo_story_runs_to_completion(tmp_path):
    env = dict(os.environ, DEMO_ROOT=str(tmp_path / "demo"), BIN=BIN)
    env.pop("VMGENC_ROOT", None)
    p = subprocess.run(["sh", os.path.join(REPO, "tools", "demo")], capture_output=True,
                       text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for heading in ("First boot", "Live clone", "bhyve", "Cold clone", "history", "Identity"):
        assert heading in p.stdout, heading
    ids = [ln for ln in p.stdout.splitlines() if "hostid" in ln and "ed25519 SHA256:" in ln]
    fingerprints = [ln.split("ed25519 ")[1] for ln in ids]
    assert len(ids) == 5
    # first boot → live clone → (bhyve ×2, unchanged) → cold clone: QEMU identity rotated twice
    assert fingerprints[0] != fingerprints[1] != fingerprints[4]
    assert fingerprints[2] == fingerprints[3]
    assert sorted(os.listdir(tmp_path)) == ["demo"]  # nothing left outside the sandbox


@pytest.mark.parametrize("marker", [True, False], ids=["boot-checked", "no-boot-check"])
def test_a_run_time_change_devd_missed_is_not_taken_for_a_restart(tmp_path, marker):
    """Reboot with the same GUID, then a live clone whose event nobody read (devd down).

    The next manual check sees a new boot time since the last record; only the boot
    check's mark (``boot-checked``, left by this boot's check) tells it that the GUID
    was still the recorded one at this boot, so the change happened at run time.
    """
    from vmgenc_tools.reference.vm import SimulatedVM

    root = str(tmp_path / "vm")
    fixed = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
    assert ctl(root, "sim", "init", "--guid", fixed).returncode == 0
    with open(os.path.join(root, "etc/rc.conf"), "a") as f:
        f.write('vmgenc_hooks_clone=""\nvmgenc_hooks_platform_restart=""\n')
    assert ctl(root, "sim", "boot").returncode == 0            # first-seen
    time.sleep(1.05)  # kern.boottime has whole seconds: the reboot must be a later one
    assert ctl(root, "sim", "boot").returncode == 0            # guid= fixed: no change
    mark = os.path.join(root, "var/db/vmgenc/boot-checked")
    assert os.path.exists(mark)
    if not marker:
        os.unlink(mark)
    vm = SimulatedVM(root)
    vm.clone()
    assert vm.drain_devctl()                                   # the event, read by nobody
    p = ctl(root, "check")
    assert p.returncode == 0, p.stderr
    rec = history(root)[-1]
    assert rec["source"] == "manual"
    assert rec["class"] == ("clone" if marker else "platform-restart"), rec["reason"]
