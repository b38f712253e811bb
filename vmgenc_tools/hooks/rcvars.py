"""Base-system rc.conf variables a built-in hook must respect (``entropy_file``, ``hostid_file``…).

Read the way rc.subr's ``load_rc_config`` would for a service: the files are
sourced by /bin/sh, never parsed by hand.  Unset variables take FreeBSD's
defaults (``/etc/defaults/rc.conf``), given by the caller.
"""

from __future__ import annotations

import subprocess

_SH = r"""
r=$1; svc=$2; shift 2
_src() { if [ -d "$1" ]; then for _f in "$1"/*; do [ -f "$_f" ] && . "$_f"; done
         elif [ -r "$1" ]; then . "$1"; fi; }
_src "$r/etc/defaults/rc.conf"
_src "$r/etc/rc.conf"
_src "$r/etc/rc.conf.local"
_src "$r/etc/rc.conf.d/$svc"
_src "$r/usr/local/etc/rc.conf.d/$svc"
for _v; do eval "if [ -n \"\${$_v+x}\" ]; then printf '%s=%s\0' \"\$_v\" \"\$$_v\"; fi"; done
"""


def read(root: str, service: str, defaults: dict[str, str]) -> dict[str, str]:
    """The values of ``defaults``' variables for ``service``; a failing rc.conf keeps defaults."""
    values = dict(defaults)
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", _SH, "sh", root.rstrip("/") or "", service, *defaults],
            capture_output=True, timeout=30, check=False, cwd="/",
            env={"PATH": "/sbin:/bin:/usr/sbin:/usr/bin"},
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return values
    for item in out.decode(errors="replace").split("\0"):
        if "=" in item:
            k, v = item.split("=", 1)
            if k in values:
                values[k] = v
    return values


def disabled(value: str) -> bool:
    """rc.d scripts treat ``NO`` (any case) as "do not use this file"."""
    return value.strip().lower() == "no" or not value.strip()

