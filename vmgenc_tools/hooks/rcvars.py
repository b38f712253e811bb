"""Base-system rc.conf variables a built-in hook must respect (``entropy_file``, ``hostid_file``…).

Read the way rc.subr's ``load_rc_config`` would for a service: the files are
sourced by /bin/sh, never parsed by hand.  Unset variables take FreeBSD's
defaults (``/etc/defaults/rc.conf``), given by the caller.
"""

from __future__ import annotations

from ..config import ConfigError, source_rc_conf


def read(root: str, service: str, defaults: dict[str, str]) -> dict[str, str]:
    """The values of ``defaults``' variables for ``service``; a failing rc.conf keeps defaults."""
    try:
        return {**defaults, **source_rc_conf(root, service, list(defaults))}
    except (ConfigError, OSError):
        return dict(defaults)


def disabled(value: str) -> bool:
    """rc.d scripts treat ``NO`` (any case) as "do not use this file"."""
    return value.strip().lower() == "no" or not value.strip()
