"""rc.conf knobs, evaluated by /bin/sh exactly as rc.subr would source them.

Files, in order, all under ``--root``: ``/etc/defaults/rc.conf`` (if
present), ``/etc/rc.conf``, ``/etc/rc.conf.local``, ``/etc/rc.conf.d/vmgenc``
and ``/usr/local/etc/rc.conf.d/vmgenc`` (each a file, or a directory whose
files are all read).  The files are shell; they are never hand-parsed.

Every knob, its default and meaning is in :data:`KNOBS` (the table the man
page and README repeat).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from .fastcheck import under
from .plain import Frozen

CLASSES = ("first-seen", "clone", "restore", "platform-restart", "unknown")
BUILTIN_HOOKS = ("sshd_keys", "hostid", "entropy")
SITE = "site"
LOG_LEVELS = ("debug", "info", "notice", "warning", "err")

# name → (default, meaning)
KNOBS: dict[str, tuple[str, str]] = {
    "vmgenc_enable": ("NO", "run the boot check (rc.d/vmgenc start)"),
    "vmgenc_dbdir": ("/var/db/vmgenc", "history.db, last-guid cache, intent, lock"),
    "vmgenc_hooks_dir": ("/usr/local/etc/vmgenc/hooks.d", "site hooks, run in lexical order"),
    "vmgenc_hooks_first_seen": ("", "hooks for the first generation ever seen"),
    "vmgenc_hooks_clone": ("sshd_keys hostid entropy site", "hooks for a clone"),
    "vmgenc_hooks_restore": ("entropy site", "hooks for a snapshot restore"),
    "vmgenc_hooks_platform_restart": ("entropy site", "hooks for a new GUID from a restart"),
    "vmgenc_hooks_unknown": ("entropy site", "hooks when the class cannot be told"),
    "vmgenc_runtime_class": ("clone", "class of a run-time change: clone or restore"),
    "vmgenc_hook_timeout": ("300", "seconds before a hook's process tree is killed"),
    "vmgenc_hook_stop_on_failure": ("NO", "stop the remaining hooks after a failure"),
    "vmgenc_hooks_owner_uid": ("0", "uid trusted, besides root, to own hooks and their "
                                    "directories"),
    "vmgenc_ssh_keytypes": ("rsa ecdsa ed25519", "host key types sshd_keys regenerates"),
    "vmgenc_ssh_rsa_bits": ("3072", "RSA host key size"),
    "vmgenc_ssh_remove_other": ("NO", "remove host keys of types not listed"),
    "vmgenc_sshd_config": ("/etc/ssh/sshd_config", "read for HostKey lines"),
    "vmgenc_sshd_pidfile": ("/var/run/sshd.pid", "sshd to reload (SIGHUP) if running"),
    "vmgenc_devd_detach": ("YES", "devd entry returns at once; hooks run in a worker"),
    "vmgenc_log_level": ("info", "syslog level: debug info notice warning err"),
    "vmgenc_metrics_file": ("", "node_exporter textfile to write; empty = off"),
}

_YES = ("yes", "true", "on", "1")
_NO = ("no", "false", "off", "0")

_SH = r"""
r=$1; svc=$2; shift 2
_src() { if [ -d "$1" ]; then for _f in "$1"/*; do [ -f "$_f" ] && . "$_f"; done
         elif [ -r "$1" ]; then . "$1"; fi; }
_src "$r/etc/defaults/rc.conf"
_src "$r/etc/rc.conf"
_src "$r/etc/rc.conf.local"
_src "$r/etc/rc.conf.d/$svc"
_src "$r/usr/local/etc/rc.conf.d/$svc"
[ $# -gt 0 ] || set -- $(set | sed -n "s/^\(${svc}_[A-Za-z0-9_]*\)=.*/\1/p")
for _v; do eval "if [ -n \"\${$_v+x}\" ]; then printf '%s=%s\0' \"\$_v\" \"\$$_v\"; fi"; done
"""


class ConfigError(ValueError):
    """A knob has a value that cannot be used; the message names the variable."""


def checkyesno(var: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _YES:
        return True
    if v in _NO:
        return False
    raise ConfigError(f"${var} is not set properly: {value!r} (use YES or NO) - see rc.conf(5)")


def _int(var: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = lo - 1
    if not lo <= n <= hi:
        raise ConfigError(f"${var}={value!r}: expected a whole number from {lo} to {hi}")
    return n


class Config(Frozen):
    """The knobs, validated; paths are as written (not yet under the root)."""

    root: str
    enable: bool
    dbdir: str
    hooks_dir: str
    hooks: dict[str, tuple[str, ...]]
    runtime_class: str
    hook_timeout: int
    hook_stop_on_failure: bool
    hooks_owner_uid: int
    ssh_keytypes: tuple[str, ...]
    ssh_rsa_bits: int
    ssh_remove_other: bool
    sshd_config: str
    sshd_pidfile: str
    devd_detach: bool
    log_level: str
    metrics_file: str
    unknown: tuple[str, ...]

    def __init__(self, root: str = "/", enable: bool = False, dbdir: str = "/var/db/vmgenc",
                 hooks_dir: str = "/usr/local/etc/vmgenc/hooks.d",
                 hooks: dict[str, tuple[str, ...]] | None = None, runtime_class: str = "clone",
                 hook_timeout: int = 300, hook_stop_on_failure: bool = False,
                 hooks_owner_uid: int = 0,
                 ssh_keytypes: tuple[str, ...] = ("rsa", "ecdsa", "ed25519"),
                 ssh_rsa_bits: int = 3072, ssh_remove_other: bool = False,
                 sshd_config: str = "/etc/ssh/sshd_config",
                 sshd_pidfile: str = "/var/run/sshd.pid", devd_detach: bool = True,
                 log_level: str = "info", metrics_file: str = "",
                 unknown: tuple[str, ...] = ()) -> None:
        hooks = {} if hooks is None else hooks
        self._set(locals())

    def path(self, p: str) -> str:
        """``p`` under the root (``--root``): :func:`fastcheck.under`."""
        return under(self.root, p)

    @property
    def db_path(self) -> str:
        return self.path(os.path.join(self.dbdir, "history.db"))

    def hooks_for(self, cls: str) -> tuple[str, ...]:
        return self.hooks.get(cls, ())


def source_rc_conf(root: str, service: str, names: Iterable[str] = ()) -> dict[str, str]:
    """The variables set after sourcing the rc.conf files for ``service`` with /bin/sh.

    ``names`` empty means every ``${service}_*`` variable; unset ones are left out.
    """
    import subprocess

    try:
        out = subprocess.run(
            ["/bin/sh", "-c", _SH, "sh", root.rstrip("/"), service, *names],
            capture_output=True, check=True, timeout=30, cwd="/",
        ).stdout
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(
            "rc.conf could not be read by /bin/sh: "
            + (err[-1] if err else f"exit {e.returncode}")
            + " - fix the file, then 'sh -n' it"
        ) from None
    pairs = (item.split("=", 1) for item in out.decode(errors="replace").split("\0") if item)
    return {k: v for k, v in pairs}


def read_vars(root: str) -> dict[str, str]:
    """All ``vmgenc_*`` variables after sourcing the rc.conf files."""
    return source_rc_conf(root, "vmgenc")


def from_vars(values: dict[str, str], root: str = "/") -> Config:
    """Validate ``values`` (missing knobs take their defaults)."""
    v = {k: d for k, (d, _) in KNOBS.items()}
    v.update(values)
    hooks: dict[str, tuple[str, ...]] = {}
    for cls in CLASSES:
        var = "vmgenc_hooks_" + cls.replace("-", "_")
        names = tuple(v[var].split())
        for n in names:
            if n not in BUILTIN_HOOKS and n != SITE:
                raise ConfigError(
                    f"${var}: unknown hook {n!r} (use {', '.join(BUILTIN_HOOKS)} or {SITE})"
                )
        hooks[cls] = names
    for var in ("vmgenc_dbdir", "vmgenc_hooks_dir", "vmgenc_sshd_config", "vmgenc_sshd_pidfile"):
        if not v[var].startswith("/"):
            raise ConfigError(f"${var}={v[var]!r}: expected an absolute path")
    if v["vmgenc_metrics_file"] and not v["vmgenc_metrics_file"].startswith("/"):
        raise ConfigError(f"$vmgenc_metrics_file={v['vmgenc_metrics_file']!r}: "
                          "expected an absolute path, or empty for off")
    keytypes = tuple(v["vmgenc_ssh_keytypes"].split())
    for t in keytypes:
        if t not in ("rsa", "ecdsa", "ed25519"):
            raise ConfigError(f"$vmgenc_ssh_keytypes: unknown key type {t!r} "
                              "(use rsa, ecdsa, ed25519)")
    level = v["vmgenc_log_level"].strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"$vmgenc_log_level={level!r}: use one of {' '.join(LOG_LEVELS)}")
    rclass = v["vmgenc_runtime_class"].strip()
    if rclass not in ("clone", "restore"):
        raise ConfigError(f"$vmgenc_runtime_class={rclass!r}: use clone or restore")
    return Config(
        root=root,
        enable=checkyesno("vmgenc_enable", v["vmgenc_enable"]),
        dbdir=v["vmgenc_dbdir"],
        hooks_dir=v["vmgenc_hooks_dir"],
        hooks=hooks,
        runtime_class=rclass,
        hook_timeout=_int("vmgenc_hook_timeout", v["vmgenc_hook_timeout"], 1, 86400),
        hook_stop_on_failure=checkyesno(
            "vmgenc_hook_stop_on_failure", v["vmgenc_hook_stop_on_failure"]),
        hooks_owner_uid=_int("vmgenc_hooks_owner_uid", v["vmgenc_hooks_owner_uid"], 0, 2**31),
        ssh_keytypes=keytypes,
        ssh_rsa_bits=_int("vmgenc_ssh_rsa_bits", v["vmgenc_ssh_rsa_bits"], 1024, 16384),
        ssh_remove_other=checkyesno("vmgenc_ssh_remove_other", v["vmgenc_ssh_remove_other"]),
        sshd_config=v["vmgenc_sshd_config"],
        sshd_pidfile=v["vmgenc_sshd_pidfile"],
        devd_detach=checkyesno("vmgenc_devd_detach", v["vmgenc_devd_detach"]),
        log_level=level,
        metrics_file=v["vmgenc_metrics_file"],
        unknown=tuple(sorted(k for k in values if k not in KNOBS)),
    )


def load(root: str = "/") -> Config:
    """Read and validate the knobs for ``root``."""
    return from_vars(read_vars(root), root)
