"""Sandbox helpers for the hook tests: a trusted root, site hook files, contexts, real SSH keys."""

from __future__ import annotations

import os
import subprocess

from vmgenc_tools import config
from vmgenc_tools.hooks.base import HookContext

HOOKS_DIR = "/usr/local/etc/vmgenc/hooks.d"
OLD = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
NEW = "9f0c5b8e-3a1d-4e6f-8b2a-1c4d5e6f7a8b"


def write_rc_conf(root: str, **knobs: str) -> None:
    """rc.conf trusting the uid running the tests, plus ``vmgenc_<knob>`` settings."""
    lines = [f'vmgenc_hooks_owner_uid="{os.getuid()}"']
    lines += [f'vmgenc_{k}="{v}"' for k, v in knobs.items()]
    os.makedirs(os.path.join(root, "etc"), exist_ok=True)
    with open(os.path.join(root, "etc", "rc.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")


def make_trusted(root: str, **knobs: str) -> str:
    """A root whose hooks dir chain is owned by us and not group/world writable."""
    hooks = os.path.join(root, HOOKS_DIR.lstrip("/"))
    os.makedirs(hooks, exist_ok=True)
    path = root
    os.chmod(path, 0o755)
    for part in HOOKS_DIR.strip("/").split("/"):
        path = os.path.join(path, part)
        os.chmod(path, 0o755)
    for d in ("etc", "etc/ssh", "boot", "var/run", "var/db"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    write_rc_conf(root, **knobs)
    return hooks


def hooks_path(root: str, name: str = "") -> str:
    d = os.path.join(root, HOOKS_DIR.lstrip("/"))
    return os.path.join(d, name) if name else d


def add_hook(root: str, name: str, body: str, mode: int = 0o755,
             shebang: str = "#!/bin/sh\n") -> str:
    path = hooks_path(root, name)
    with open(path, "w") as f:
        f.write(shebang + body + "\n")
    os.chmod(path, mode)
    return path


def ctx_for(root: str, cls: str = "clone", dry_run: bool = False,
            source: str = "manual") -> HookContext:
    return HookContext(config.load(root), new_guid=NEW, old_guid=OLD, cls=cls, source=source,
                       dry_run=dry_run)


def keygen(path: str, ktype: str, bits: int | None = None) -> None:
    """A real host key pair at ``path`` (replacing one that exists)."""
    for f in (path, path + ".pub"):
        if os.path.exists(f):
            os.unlink(f)
    cmd = ["ssh-keygen", "-q", "-t", ktype, "-N", "", "-C", "test", "-f", path]
    if bits:
        cmd[4:4] = ["-b", str(bits)]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL)


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def temp_leftovers(directory: str) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.startswith(".vmgenc-tmp-"))
