"""What the built-in hooks share: timing, the report they build, expected errors → ``failed``."""

from __future__ import annotations

import os
import stat
import subprocess
import time

from .. import log
from ..sysctl import BackendError, SysctlError
from .base import HookContext, HookResult


class HookFailed(Exception):
    """An expected failure of a built-in hook; the message is the one line users see."""


class HookTimeout(HookFailed):
    """A built-in hook ran past ``vmgenc_hook_timeout``; recorded ``timeout``, like a site hook."""


class Report:
    """Lines for the hook's output (the console and the history), mirrored to syslog."""

    def __init__(self, hook: str, dry_run: bool) -> None:
        self.hook = hook
        self.dry_run = dry_run
        self.lines: list[str] = []

    def say(self, msg: str) -> None:
        """A result worth showing (syslog info)."""
        self.lines.append(msg)
        log.info(f"{self.hook}: {msg}")

    def notice(self, msg: str) -> None:
        """What the admin must see (syslog notice), e.g. new fingerprints."""
        self.lines.append(msg)
        log.notice(f"{self.hook}: {msg}")

    def warn(self, msg: str) -> None:
        self.lines.append(f"warning: {msg}")
        log.warning(f"{self.hook}: {msg}")

    def would(self, msg: str) -> None:
        """Dry-run: what would happen."""
        self.lines.append(f"would {msg}")
        log.info(f"{self.hook}: dry-run: would {msg}")

    def text(self) -> str:
        return "".join(f"{line}\n" for line in self.lines)


class BuiltinHook:
    """Base class: subclasses set ``name`` and implement :meth:`apply`."""

    name = ""
    kind = "built-in"
    refused = False

    def apply(self, ctx: HookContext, report: Report) -> None:
        raise HookFailed(f"{self.name}: no action defined")

    def run(self, ctx: HookContext) -> HookResult:
        t0 = time.monotonic()
        report = Report(self.name, ctx.dry_run)
        try:
            self.apply(ctx, report)
        except HookTimeout as e:
            report.lines.append(f"timeout: {e}")
            log.error(f"{self.name}: {e}")
            return HookResult(self.name, "timeout", None, time.monotonic() - t0, report.text())
        except HookFailed as e:
            report.lines.append(f"error: {e}")
            log.error(f"{self.name}: {e}")
            return HookResult(self.name, "failed", 1, time.monotonic() - t0, report.text())
        except (OSError, SysctlError, BackendError, subprocess.SubprocessError) as e:
            msg = _describe(e)
            report.lines.append(f"error: {msg}")
            log.error(f"{self.name}: {msg}")
            return HookResult(self.name, "failed", 1, time.monotonic() - t0, report.text())
        return HookResult(self.name, "ok", 0, time.monotonic() - t0, report.text())


def shown(ctx: HookContext, path: str) -> str:
    """``path`` as the system sees it: without the ``--root`` prefix."""
    root = ctx.root.rstrip("/")
    return path[len(root):] if root and path.startswith(root + "/") else path


CONSOLE = "/dev/console"


def to_console(ctx: HookContext, lines: list[str]) -> bool:
    """Write ``lines`` to the system console (``${root}/dev/console``); True if written.

    Best effort and never blocking: no console, a console that cannot take the
    text now, or a console that is already this process's stderr (at boot rc's
    output goes there, and the log echoes to it) writes nothing.
    """
    flags = os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(ctx.config.path(CONSOLE), flags)
    except OSError:  # missing (a sandbox, a jail) or a FIFO nobody reads
        return False
    try:
        st = os.fstat(fd)
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            return False
        if stat.S_ISCHR(st.st_mode) and _is_stderr(st):
            return False
        data = "".join(f"{line}\n" for line in lines).encode("utf-8", "replace")
        return os.write(fd, data) == len(data)
    except OSError:
        return False
    finally:
        os.close(fd)


def _is_stderr(console: os.stat_result) -> bool:
    try:
        err = os.fstat(2)
    except OSError:
        return False
    return stat.S_ISCHR(err.st_mode) and err.st_rdev == console.st_rdev


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.filename}: {e.strerror}" if e.filename else e.strerror
    if isinstance(e, subprocess.TimeoutExpired):
        return f"{e.cmd[0] if isinstance(e.cmd, list) else e.cmd}: timed out after {e.timeout} s"
    return str(e) or type(e).__name__
