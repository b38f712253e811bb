"""A simulated clone, end to end: devd → handler → hooks → history, under a sandbox root."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hooks_sandbox import HOOKS_DIR, add_hook, make_trusted, read_bytes

VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
IDENTITY = ("etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_ecdsa_key",
            "etc/ssh/ssh_host_ed25519_key", "etc/hostid", "etc/machine-id", "entropy",
            "boot/entropy")


def vmgenctl(root: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_simulated_clone_rotates_identity_and_runs_site_hooks(tmp_path):
    if not os.access(VMGENCTL, os.X_OK):
        pytest.skip("vmgenctl console script not installed in this venv")
    root = str(tmp_path / "root")
    r = vmgenctl(root, "sim", "init")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(root, "etc", "rc.conf")) as f:
        rc_conf = f.read()
    make_trusted(root)  # trusted hooks dir chain + our uid as the trusted owner
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write(rc_conf + 'vmgenc_ssh_rsa_bits="1024"\n')
    add_hook(root, "50-record", 'echo "$VMGENC_CLASS $VMGENC_SOURCE $VMGENC_NEW_GUID" '
                                '> "$VMGENC_ROOT/site-hook.out"; echo recorded')
    add_hook(root, "60-untrusted", 'touch "$VMGENC_ROOT/untrusted-ran"', mode=0o777)
    assert vmgenctl(root, "sim", "boot").returncode == 0  # first-seen: no identity hooks
    before = {p: read_bytes(os.path.join(root, p)) for p in IDENTITY}
    old_guid = json.loads(vmgenctl(root, "status", "--json").stdout)["guid"]

    r = vmgenctl(root, "sim", "clone")
    assert r.returncode == 0, r.stderr
    r = vmgenctl(root, "wait", "--since", old_guid, "--timeout", "120")
    assert r.returncode == 0, r.stdout + r.stderr  # settled (wait: 0 · 5)...
    assert "hooks failed" in r.stderr  # ...with a refused (failed) hook, and says so

    changed = [p for p in IDENTITY if read_bytes(os.path.join(root, p)) != before[p]]
    assert changed == list(IDENTITY)
    history = json.loads(vmgenctl(root, "history", "--json").stdout)
    last = history[-1]
    assert last["class"] == "clone" and last["source"] == "devd"
    hooks = {h["name"]: h["status"] for h in last["hooks"]}
    assert hooks == {"sshd_keys": "ok", "hostid": "ok", "entropy": "ok",
                     "site:50-record": "ok", "site:60-untrusted": "refused"}
    assert last["status"] == "failed"  # a refused hook is reported, not ignored
    out = {h["name"]: h["output"] for h in last["hooks"]}  # the tail each hook left
    assert out["site:50-record"] == "recorded\n"
    assert out["site:60-untrusted"].startswith("refused, not run:")
    for t in ("rsa", "ecdsa", "ed25519"):
        assert f"new {t} host key /etc/ssh/ssh_host_{t}_key: " in out["sshd_keys"]
    with open(os.path.join(root, "etc", "hostid")) as f:
        uuid_text = f.read().strip()
    assert f"-> {uuid_text}" in out["hostid"]
    assert read_bytes(os.path.join(root, "etc", "machine-id")) == \
        (uuid_text.replace("-", "") + "\n").encode()
    assert "refreshed /boot/entropy (4096 bytes, mode 0600)" in out["entropy"]
    with open(os.path.join(root, "site-hook.out")) as f:
        assert f.read().split() == ["clone", "devd", last["new_guid"]]
    assert not os.path.exists(os.path.join(root, "untrusted-ran"))
    v = vmgenctl(root, "hooks", "validate")
    assert v.returncode == 1
    assert v.stdout.strip().endswith("60-untrusted: group/world writable (mode 0777): chmod go-w")
    assert HOOKS_DIR in v.stdout
