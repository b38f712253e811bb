"""Built-in hook ``hostid``: a fresh software UUID for the clone, as rc.d/hostid would set it.

Facts (freebsd-facts §5.3/§5.4, rc.d/hostid and rc.d/hostid_save):

- ``hostid reset`` prefers ``kenv smbios.system.uuid``, which a clone often
  shares with its original, so it would give the *same* identity back.  This
  hook always draws a software UUID (``uuidgen -r`` style: random, lowercase)
  and never takes the SMBIOS one, nor the current ``kern.hostuuid``, nor a
  value rc.d/hostid's ``valid_hostid`` would reject (its list of bogus firmware UUIDs).
- ``kern.hostuuid`` = the UUID text; ``kern.hostid`` = the first 8 hex digits
  of md5 over that text (``echo -n $uuid | /sbin/md5``).
- ``${hostid_file}`` (``/etc/hostid``) holds the dashed UUID and a newline;
  ``${machine_id_file}`` (``/etc/machine-id``) the 32 hex digits and a newline.

The files are written first (atomically, mode 0644), then the kernel values,
so that an interruption never leaves a next boot with the old identity while
the running kernel already has the new one.  ZFS pools with ``multihost=on``
use the hostid for their multi-import protection: the hook warns about them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable

from ..sysctl import SysctlError, get_backend, read_string, write_string, write_ulong
from . import atomic, rcvars
from .base import HookContext
from .builtin import BuiltinHook, HookFailed, Report, shown

TYPE_CHECKING = False  # typing's would be an import
if TYPE_CHECKING:
    import uuid

# rc.d/hostid valid_hostid(): bogus values firmware writes instead of a real UUID.
BLACKLIST = frozenset({
    "00000000-0000-0000-0000-000000000000",
    "00020003-0004-0005-0006-000700080009",
    "03000200-0400-0500-0006-000700080009",
    "07090201-0103-0301-0807-060504030201",
    "11111111-1111-1111-1111-111111111111",
    "11111111-2222-3333-4444-555555555555",
    "4c4c4544-0000-2010-8020-80c04f202020",
    "58585858-5858-5858-5858-585858585858",
    "890e2d14-cacd-45d1-ae66-bc80e8bfeb0f",
    "8e275844-178f-44a8-aceb-a7d7e5178c63",
    "dc698397-fa54-4cf2-82c8-b1b5307a6a7f",
    "fefefefe-fefe-fefe-fefe-fefefefefefe",
})
BLACKLIST_SUFFIX = "-ffff-ffff-ffff-ffffffffffff"
_FORM = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
FILE_MODE = 0o644
DEFAULTS = {"hostid_file": "/etc/hostid", "machine_id_file": "/etc/machine-id"}
ZPOOL_PATHS = ("/sbin/zpool", "/usr/local/sbin/zpool", "/usr/sbin/zpool")


def valid_hostid(text: str) -> bool:
    """rc.d/hostid's ``valid_hostid``: lowercase 8-4-4-4-12 hex, not a known bogus value."""
    return (bool(_FORM.match(text)) and text not in BLACKLIST
            and not text.endswith(BLACKLIST_SUFFIX))


def hostid_of(text: str) -> int:
    """``kern.hostid`` for a hostuuid: first 4 bytes of md5 over the UUID text."""
    import hashlib  # here, not at the top: the worker plans this hook before sshd_keys runs

    return int(hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:8], 16)


def machine_id_of(text: str) -> str:
    """``/etc/machine-id`` content without the newline: the UUID without its dashes."""
    return text.replace("-", "")


def new_uuid(avoid: Iterable[str | None] = (),
             draw: Callable[[], uuid.UUID] | None = None) -> str:
    """A random lowercase UUID that passes :func:`valid_hostid` and is none of ``avoid``."""
    import uuid

    draw = draw or uuid.uuid4
    banned = {a.strip().lower() for a in avoid if a}
    for _ in range(64):
        text = str(draw()).lower()
        if valid_hostid(text) and text not in banned:
            return text
    raise HookFailed("could not draw a usable UUID (the random source keeps repeating)")


def multihost_pools(ctx: HookContext) -> list[str] | None:
    """Pools with ``multihost=on``; None when there is no ``zpool`` command (no ZFS)."""
    exe = next((ctx.config.path(p) for p in ZPOOL_PATHS
                if os.access(ctx.config.path(p), os.X_OK)), None)
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "get", "-H", "-o", "name,value", "multihost"],
                           capture_output=True, text=True, timeout=30, check=False,
                           stdin=subprocess.DEVNULL, env={"PATH": "/sbin:/bin:/usr/sbin:/usr/bin"})
    except (OSError, subprocess.SubprocessError):
        return []
    pools = []
    for line in r.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) >= 2 and fields[1].strip() == "on":
            pools.append(fields[0])
    return pools


class HostidHook(BuiltinHook):
    """New kern.hostuuid / kern.hostid, /etc/hostid, /etc/machine-id."""

    name = "hostid"

    def apply(self, ctx: HookContext, report: Report) -> None:
        backend = get_backend(ctx.root)
        smbios = backend.kenv_get("smbios.system.uuid")
        try:
            old = read_string(backend, "kern.hostuuid")
        except SysctlError:
            old = None
        text = new_uuid([smbios, old])
        hid = hostid_of(text)
        files = rcvars.read(ctx.root, "hostid", DEFAULTS)
        pools = multihost_pools(ctx)
        if pools:
            report.warn(f"ZFS pool(s) {', '.join(pools)} have multihost=on: their multi-import "
                        "protection records the hostid, and changing it under imported pools "
                        "is not known to be safe - check 'zpool status' before the next reboot")
        targets = [(files["hostid_file"], f"{text}\n"),
                   (files["machine_id_file"], f"{machine_id_of(text)}\n")]
        targets = [(p, data) for p, data in targets if not rcvars.disabled(p)]
        if ctx.dry_run:
            report.would(f"set kern.hostuuid to a new random UUID (now {old or 'unset'}; "
                         f"never the SMBIOS UUID {smbios or '(none)'}) and kern.hostid to "
                         "the first 4 bytes of its md5")
            for p, _ in targets:
                report.would(f"rewrite {p} (mode {FILE_MODE:04o}), atomically")
            return
        for p, data in targets:
            path = ctx.config.path(p)
            atomic.clean_stale(path)
            atomic.write_atomic(path, data.encode(), FILE_MODE)
            report.say(f"wrote {shown(ctx, path)}")
        write_string(backend, "kern.hostuuid", text)
        write_ulong(backend, "kern.hostid", hid)
        report.notice(f"kern.hostuuid: {old or '(unset)'} -> {text}")
        report.notice(f"kern.hostid: 0x{hid:08x}")
