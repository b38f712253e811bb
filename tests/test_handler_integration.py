"""End to end with the real hook runner: site hook scripts run by /bin/sh, console scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import set_guid

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
G2 = "11111111-2222-3333-4444-555555555555"
BIN = os.path.dirname(sys.executable)
RECORD = """#!/bin/sh
echo "$VMGENC_CLASS $VMGENC_SOURCE ${VMGENC_OLD_GUID:-none} $VMGENC_NEW_GUID" \
    >> "$VMGENC_ROOT/record.out"
echo recorded
"""


def put_hook(root: str, name: str, text: str, mode: int = 0o755) -> str:
    d = os.path.join(root, "usr/local/etc/vmgenc/hooks.d")
    os.makedirs(d, mode=0o755, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def run(root: str, *args: str, prog: str = "vmgenctl") -> subprocess.CompletedProcess:
    cmd = [os.path.join(BIN, prog)] + (["--root", root] if prog == "vmgenctl" else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, VMGENC_ROOT=root))


def history(root: str) -> list[dict]:
    return json.loads(run(root, "history", "--json").stdout)


def recorded(root: str) -> list[str]:
    try:
        with open(os.path.join(root, "record.out")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


@pytest.fixture
def root(kernel_root, trusted_rc_conf):
    for d in ("usr", "usr/local", "usr/local/etc", "usr/local/etc/vmgenc"):
        os.makedirs(os.path.join(kernel_root, d), mode=0o755, exist_ok=True)
    trusted_rc_conf(kernel_root, vmgenc_hooks_clone="site", vmgenc_hooks_restore="site")
    put_hook(kernel_root, "10-record", RECORD)
    assert run(kernel_root, "check").returncode == 0  # first-seen: no hooks
    assert recorded(kernel_root) == []
    return kernel_root


def test_site_hook_runs_once_with_the_change_in_its_environment(root):
    set_guid(root, G2)
    p = run(root, "check")
    assert p.returncode == 0, p.stderr
    assert recorded(root) == [f"clone manual {G0} {G2}"]
    last = history(root)[-1]
    assert last["status"] == "done"
    assert [(h["name"], h["status"], h["exit_code"]) for h in last["hooks"]] == [
        ("site:10-record", "ok", 0)]
    assert "recorded" in last["hooks"][0]["output"]
    assert run(root, "check").returncode == 0 and len(recorded(root)) == 1


def test_failing_site_hook_then_retry_reruns_only_it(root):
    bad = put_hook(root, "20-flaky", "#!/bin/sh\necho 'cannot reach the CMDB' >&2\nexit 3\n")
    set_guid(root, G2)
    p = run(root, "check")
    assert p.returncode == 1
    last = history(root)[-1]
    assert last["status"] == "failed"
    hooks = {h["name"]: h for h in last["hooks"]}
    assert hooks["site:20-flaky"]["exit_code"] == 3
    assert "cannot reach the CMDB" in hooks["site:20-flaky"]["output"]
    st = run(root, "status")
    assert st.returncode == 1 and "retry" in st.stdout
    put_hook(root, "20-flaky", "#!/bin/sh\nexit 0\n")
    p = run(root, "retry")
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(recorded(root)) == 1  # 10-record was ok: not run again
    assert history(root)[-1]["status"] == "done"
    assert run(root, "status").returncode == 0
    os.unlink(bad)


def test_untrusted_site_hook_is_refused_never_run(root):
    put_hook(root, "30-writable", "#!/bin/sh\ntouch \"$VMGENC_ROOT/ran\"\n", mode=0o777)
    set_guid(root, G2)
    assert run(root, "check").returncode == 1
    hooks = {h["name"]: h["status"] for h in history(root)[-1]["hooks"]}
    assert hooks == {"site:10-record": "ok", "site:30-writable": "refused"}
    assert not os.path.exists(os.path.join(root, "ran"))


def test_devd_entry_then_wait(root):
    set_guid(root, G2)
    p = run(root, "\\_SB_.VGEN", "1700000000", prog="vmgenc-devd")
    assert p.returncode == 0, p.stderr
    w = run(root, "wait", "--since", G0, "--timeout", "60")
    assert w.returncode == 0, w.stderr
    assert recorded(root) == [f"clone devd {G0} {G2}"]
    last = history(root)[-1]
    assert (last["source"], last["devd"]["acpi_path"]) == ("devd", "\\_SB_.VGEN")


def test_twenty_console_scripts_at_once(root):
    set_guid(root, G2)
    procs = [subprocess.Popen([os.path.join(BIN, "vmgenctl"), "--root", root, "check"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    codes = [p.wait(120) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0] * 20
    assert [h["new_guid"] for h in history(root)] == [G0, G2]
    assert recorded(root) == [f"clone manual {G0} {G2}"]
