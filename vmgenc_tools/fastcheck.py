"""The light entry points: ``vmgenctl check`` and the devd action (``vmgenc-devd``).

Both are called often and usually find nothing to do (a boot with the same
GUID, a spurious notify, a script's fence), so the common case must cost
little more than starting Python:

1. the rc.conf knobs come from a cache keyed on the rc.conf files' identity
   (:func:`config_vars`), not from a ``/bin/sh`` run;
2. the live GUIDs of every unit are compared with the ``last-guid`` file the
   handler writes when a change has settled (line 1: the raw GUIDs as
   ``sysctl -x`` prints them, line 2: ``done`` or ``failed``);
3. equal → exit at once: no click, no psutil, no sqlite3, no database write.

Anything else hands over to :mod:`.handler`.  Expected errors print one line
and exit with the contract's code (:mod:`.exitcodes`).
"""

from __future__ import annotations

import os
import stat
import sys

from . import __version__, exitcodes

CACHE_REL = "var/run/vmgenc/config.cache"
CACHE_MAGIC = "vmgenc config cache 1"
RC_FILES = ("etc/defaults/rc.conf", "etc/rc.conf", "etc/rc.conf.local",
            "etc/rc.conf.d/vmgenc", "usr/local/etc/rc.conf.d/vmgenc")
RACY_NS = 2_000_000_000  # files younger than this are not trusted to an mtime key
SOURCES = ("boot", "devd", "manual")
# Touched by every boot check (rc.d/vmgenc's shell fast path too): its mtime tells a
# later manual check that this boot's check saw the recorded generation (classify).
BOOT_CHECKED = "boot-checked"


class UsageError(ValueError):
    """Bad command line (exit 2)."""


def under(root: str, path: str) -> str:
    """``path`` under ``root``, as if ``root`` were ``/``: a ``..`` stops at the root
    (``/../etc`` is ``${root}/etc``, as on the real system it is ``/etc``)."""
    if root in ("", "/"):
        return path
    return os.path.join(root, os.path.normpath("/" + path).lstrip("/"))


# -- the rc.conf cache ------------------------------------------------------------------


def _rc_key(root: str) -> tuple[str, int]:
    """Identity of everything /bin/sh would read, and the newest rc.conf mtime."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = [root, __version__]
    newest = 0
    paths = [os.path.join(here, "config.py")] + [os.path.join(root, r) for r in RC_FILES]
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            parts.append(f"{p}:-")
            continue
        entries = [(p, st)]
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(p)):
                try:
                    entries.append((os.path.join(p, name), os.stat(os.path.join(p, name))))
                except OSError:
                    continue
        for q, s in entries:
            parts.append(f"{q}:{s.st_ino}:{s.st_size}:{s.st_mtime_ns}:{s.st_ctime_ns}")
            if p != paths[0]:
                newest = max(newest, s.st_mtime_ns)
    parts.append(repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("vmgenc_"))))
    return repr(parts), newest


def _read_cache(path: str, key: str) -> tuple[dict[str, str], str] | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        data = b""
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        magic, ckey, dbdir, body = data.decode().split("\n", 3)
    except (UnicodeDecodeError, ValueError):
        return None
    if magic != CACHE_MAGIC or ckey != key:
        return None
    pairs = (item.split("=", 1) for item in body.split("\0") if "=" in item)
    return {k: v for k, v in pairs}, dbdir


def _write_cache(path: str, key: str, values: dict[str, str], dbdir: str) -> None:
    body = "\0".join(f"{k}={v}" for k, v in values.items())
    data = f"{CACHE_MAGIC}\n{key}\n{dbdir}\n{body}".encode()
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        pass  # a cache only: not being able to write it costs speed, nothing else


def config_vars(root: str) -> tuple[dict[str, str], str]:
    """The ``vmgenc_*`` variables as /bin/sh sees them, and the effective ``vmgenc_dbdir``.

    Cached in ``${root}/var/run/vmgenc/config.cache`` (owner-only), keyed on
    (path, inode, size, mtime, ctime) of every rc.conf file and directory entry,
    the package version and ``vmgenc_*`` environment variables.  Files modified
    in the last two seconds are not cached (timestamps are coarse: a second
    same-size edit in the same tick would look unchanged), and an invalid
    configuration is never cached.
    """
    import time

    key, newest = _rc_key(root)
    path = os.path.join(root, CACHE_REL)
    cached = _read_cache(path, key)
    if cached is not None:
        return cached
    from . import config

    values = config.read_vars(root)
    conf = config.from_vars(values, root)
    if time.time_ns() - newest > RACY_NS:
        _write_cache(path, key, values, conf.dbdir)
    return values, conf.dbdir


def load_config(root: str):  # -> config.Config (not imported here: keep this module light)
    """The validated configuration, through the cache."""
    from . import config

    values, _ = config_vars(root)
    return config.from_vars(values, root)


# -- live GUIDs and the last-guid file ---------------------------------------------------


def live_line(root: str) -> str:
    """Every unit's raw GUID as ``sysctl -x`` prints it, unit 0 first (NoDevice if none).

    Straight through the sysctl helpers (``platform`` and ``generation`` cost
    imports); on any irregularity ``platform.read_guids`` raises the same error
    the slow path would.
    """
    from .sysctl import get_backend, read_bytes, vmgenc_units
    from .sysctl.errors import SysctlError

    backend = get_backend(root)
    try:
        units = vmgenc_units(backend)
        raws = [read_bytes(backend, f"dev.vmgenc.{u}.guid") for u in units]
    except SysctlError:
        raws = []
    if not raws or any(len(r) != 16 for r in raws):
        from .platform import read_guids

        return " ".join(g.hex for g in read_guids(backend))
    return " ".join("0x" + r.hex() for r in raws)


def read_last_guid(path: str) -> tuple[str, str] | None:
    """``(line 1, line 2)`` of the last-guid file, or None."""
    try:
        with open(path, encoding="ascii") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError):
        return None
    if len(lines) < 2:
        return None
    return lines[0].strip(), lines[1].strip()


def settled_state(root: str, dbdir: str, line: str) -> str | None:
    """``done``/``failed`` if ``line`` is what the handler last settled, else None."""
    cached = read_last_guid(os.path.join(under(root, dbdir), "last-guid"))
    if cached and cached[0] == line and cached[1] in ("done", "failed"):
        return cached[1]
    return None


# -- errors ------------------------------------------------------------------------------


def exit_code_for(exc: BaseException) -> int | None:
    """The contract's exit code for an expected error, or None for a bug."""
    from .config import ConfigError
    from .generation import GenerationError
    from .platform import NoDevice
    from .simstate import SimStateError
    from .sysctl import BackendError
    from .sysctl.errors import NoSuchOid, SysctlError

    table: list[tuple[type[BaseException], int]] = [
        (UsageError, exitcodes.USAGE),
        (GenerationError, exitcodes.USAGE),
        (ConfigError, exitcodes.CONFIG),
        (NoDevice, exitcodes.NO_DEVICE),
        (NoSuchOid, exitcodes.NO_DEVICE),
        (SimStateError, exitcodes.STATE),
        (BackendError, exitcodes.ENVIRONMENT),
        (SysctlError, exitcodes.ENVIRONMENT),
    ]
    try:
        from .history import HistoryError

        table.insert(0, (HistoryError, exitcodes.STATE))
    except ImportError:
        pass
    for cls, code in table:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, OSError):
        return exitcodes.ENVIRONMENT
    return None


def message_for(exc: BaseException) -> str:
    """The one-line message: plain OSErrors as ``path: reason`` with a hint."""
    from .sysctl.errors import SysctlError

    if isinstance(exc, OSError) and not isinstance(exc, SysctlError) and exc.strerror:
        import errno

        where = f"{exc.filename}: " if exc.filename else ""
        hint = " (run as root)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
        return f"{where}{exc.strerror}{hint}"
    return str(exc)


def report(exc: BaseException, prog: str, *, to_syslog: bool = False) -> int:
    """One line on stderr (and syslog) for an expected error; re-raise a bug."""
    code = exit_code_for(exc)
    if to_syslog or code is None:
        from . import log

        if code is None:
            log.exception(f"{prog}: unexpected error", exc)
        else:
            log.error(message_for(exc))
    if code is None:
        raise exc
    print(f"{prog}: {message_for(exc)}", file=sys.stderr)
    return code


# -- check -------------------------------------------------------------------------------


def parse_check_args(args: list[str]) -> dict[str, object]:
    """``check [--source boot|devd|manual] [--expect GUID] [--dry-run] [--class C]``."""
    opts: dict[str, object] = {"source": "manual", "expect": None, "dry_run": False,
                               "cls": None}
    names = {"--source": "source", "--expect": "expect", "--class": "cls"}
    i = 0
    while i < len(args):
        a = args[i]
        key, sep, val = a.partition("=")
        if a == "--dry-run":
            opts["dry_run"] = True
        elif key in names:
            if not sep:
                i += 1
                if i >= len(args):
                    raise UsageError(f"option {key} needs a value")
                val = args[i]
            opts[names[key]] = val
        else:
            raise UsageError(f"check: unknown argument {a!r} (see 'vmgenctl check --help')")
        i += 1
    if opts["source"] not in SOURCES:
        raise UsageError(f"--source {opts['source']!r}: use boot, devd or manual")
    if opts["cls"] is not None:
        from .config import CLASSES

        if opts["cls"] not in CLASSES:
            raise UsageError(f"--class {opts['cls']!r}: use one of {', '.join(CLASSES)}")
    if opts["expect"] is not None:
        from .generation import Generation, GenerationError

        try:
            opts["expect"] = Generation.parse(str(opts["expect"]))
        except GenerationError as e:  # named as click names the other options' GUIDs
            raise UsageError(f"--expect: {e}") from None
    return opts


def touch(path: str) -> None:
    """Create or update ``path`` (a marker; a missing directory means no history yet)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o640))
        os.utime(path)
    except OSError:
        pass


RETRY_HINT = "see 'vmgenctl status'; 'vmgenctl retry' runs them again"


def fence(now: object, expect: object, code: int) -> int:
    """``check --expect``: ``code``, or EXPECT_FAILED with one line when the generation
    ``now`` is not ``expect`` (None: no fence)."""
    if expect is None or now == expect:
        return code
    print(f"vmgenctl: the generation is {now}, not {expect}", file=sys.stderr)
    return exitcodes.EXPECT_FAILED


def missing_root(root: str) -> str:
    """The one-line complaint about a ``--root`` that is not a directory."""
    return (f"--root {root}: no such directory (check the path; "
            f"'vmgenctl --root {root} sim init' creates a simulated VM there)")


def run_check(root: str, args: list[str]) -> int:
    """``vmgenctl check``: the fast path first, the handler when something may have changed."""
    root = os.path.abspath(root)
    if not os.path.isdir(root):  # a mistyped --root must not grow a tree or read as empty
        print(f"vmgenctl: {missing_root(root)}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        opts = parse_check_args(list(args))
        values, dbdir = config_vars(root)
        if not opts["dry_run"] and opts["cls"] is None:
            line = live_line(root)
            state = settled_state(root, dbdir, line)
            if state is not None:
                if opts["source"] == "boot":  # this boot saw the recorded generation
                    touch(os.path.join(under(root, dbdir), BOOT_CHECKED))
                expect = opts["expect"]
                if expect is not None and line.split()[0] != expect.hex:
                    from .generation import Generation

                    return fence(Generation.from_hex(line.split()[0]), expect, exitcodes.OK)
                if state == "done":
                    return exitcodes.OK
                print(f"vmgenctl: the hooks of the current generation failed: {RETRY_HINT}",
                      file=sys.stderr)
                return exitcodes.PENDING_OR_FAILED
        from .config import from_vars
        from .handler import check

        return check(root, source=str(opts["source"]), expect=opts["expect"],
                     dry_run=bool(opts["dry_run"]), forced=opts["cls"],
                     config=from_vars(values, root))
    except Exception as e:  # noqa: BLE001 - expected errors become exit codes; bugs re-raise
        return report(e, "vmgenctl")


# -- devd --------------------------------------------------------------------------------


def run_devd(root: str, argv: list[str]) -> int:
    """devd's action (``vmgenc-devd $type $timestamp``): record, hand hooks to a worker, return."""
    root = os.path.abspath(root)
    acpi_path = argv[0] if argv else ""
    timestamp = argv[1] if len(argv) > 1 else ""
    try:
        values, dbdir = config_vars(root)
        line = live_line(root)
        if settled_state(root, dbdir, line) is not None:
            return exitcodes.OK  # a spurious notify, or a change already handled
        from .config import from_vars
        from .handler import devd_event

        return devd_event(root, acpi_path, timestamp, config=from_vars(values, root))
    except Exception as e:  # noqa: BLE001
        return report(e, "vmgenc-devd", to_syslog=True)
