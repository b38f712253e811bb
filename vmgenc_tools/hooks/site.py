"""Site hooks: executables in the hooks directory, run with a clean environment and a timeout.

Each runs in its own session (so its process group is its own), with stdin
``/dev/null``, stdout and stderr captured together: every line goes to
syslog at debug, the last :data:`TAIL_LINES` are kept in the history.  On
timeout the whole process tree is frozen (SIGSTOP), enumerated with psutil,
sent SIGTERM, resumed, and whatever is still alive after
:data:`KILL_GRACE_S` gets SIGKILL.

In dry-run a site hook is not run at all (nothing guarantees that a script
honours a dry-run flag): its result is ``skipped``, with the path it would run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque

from .. import log
from ..plain import Plain
from .base import HookContext, HookResult
from .trust import Problem, check_hook

SAFE_PATH = "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
TAIL_LINES = 20
MAX_LINE = 4096
KILL_GRACE_S = 5.0
DRAIN_S = 2.0  # after the hook exits, how long a background child may keep its output open


def hook_env(ctx: HookContext) -> dict[str, str]:
    """The whole environment of a site hook: a fixed PATH plus the VMGENC_* variables."""
    return {"PATH": SAFE_PATH, **ctx.env()}


class _Output(threading.Thread):
    """Reads the hook's output pipe: each line to syslog (debug), the tail kept."""

    def __init__(self, fd: int, name: str) -> None:
        super().__init__(name=f"hook-output-{name}", daemon=True)
        self.fd = fd
        self.hook = name
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.lock = threading.Lock()
        self.partial = b""

    def run(self) -> None:
        try:
            while True:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self._feed(chunk)
        except OSError:
            pass
        finally:
            if self.partial:
                self._line(self.partial)
            os.close(self.fd)

    def _feed(self, chunk: bytes) -> None:
        parts = (self.partial + chunk).split(b"\n")
        self.partial = parts.pop()
        if len(self.partial) > MAX_LINE:
            parts.append(self.partial)
            self.partial = b""
        for p in parts:
            self._line(p)

    def _line(self, raw: bytes) -> None:
        text = raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r")
        with self.lock:
            self.lines.append(text)
        log.debug(f"hook {self.hook}: {text}")

    def tail(self) -> list[str]:
        with self.lock:
            return list(self.lines)


def _alive(p: object) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.Error:
        return False


def _wait_gone(procs: list, timeout: float) -> list:
    """Wait until every process has exited (a zombie counts as gone); return survivors."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.02)


def _signal_all(procs: list, pgid: int, sig: int) -> None:
    import psutil

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass


def kill_tree(proc: subprocess.Popen, grace: float | None = None) -> list[int]:
    """Terminate ``proc`` and all its descendants, then kill survivors; return every pid seen.

    The tree is frozen first so that nothing forks between enumeration and
    the signal; the hook leads its own process group, which catches
    descendants that were re-parented away from the tree too.
    """
    import psutil

    grace = KILL_GRACE_S if grace is None else grace
    pgid = proc.pid
    try:
        top = psutil.Process(proc.pid)
    except psutil.Error:
        proc.wait()
        return [proc.pid]
    seen: dict[int, psutil.Process] = {}
    for _ in range(3):  # stop what we know, then look again for what forked meanwhile
        try:
            found = [top] + top.children(recursive=True)
        except psutil.Error:
            found = [top]
        new = [p for p in found if p.pid not in seen]
        if not new:
            break
        for p in new:
            seen[p.pid] = p
        _signal_all(new, pgid, signal.SIGSTOP)
    procs = list(seen.values())
    _signal_all(procs, pgid, signal.SIGTERM)
    _signal_all(procs, pgid, signal.SIGCONT)
    survivors = _wait_gone(procs, grace)
    if survivors:
        _signal_all(survivors, pgid, signal.SIGKILL)
        _wait_gone(survivors, grace)
    proc.wait()
    return list(seen)


def execute(name: str, exe: str, ctx: HookContext, timeout: float,
            grace: float | None = None) -> HookResult:
    """Run one site hook executable and report how it ended."""
    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            [exe], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env=hook_env(ctx), cwd=ctx.root if os.path.isdir(ctx.root) else "/",
            start_new_session=True, close_fds=True,
        )
    except OSError as e:
        return HookResult(name, "failed", None, time.monotonic() - t0,
                          f"cannot execute {exe}: {e.strerror} (is the #! line right?)\n")
    assert proc.stdout is not None
    reader = _Output(os.dup(proc.stdout.fileno()), name)
    proc.stdout.close()
    reader.start()
    exit_code: int | None
    try:
        exit_code = proc.wait(timeout=timeout)
        status = "ok" if exit_code == 0 else "failed"
    except subprocess.TimeoutExpired:
        kill_tree(proc, grace)
        exit_code, status = None, "timeout"
    reader.join(DRAIN_S)
    lines = reader.tail()
    if status == "timeout":
        lines.append(f"timed out after {timeout:g} s: process tree terminated")
    elif exit_code is not None and exit_code < 0:
        lines.append(f"killed by signal {-exit_code}")
    output = "\n".join(lines) + "\n" if lines else ""
    return HookResult(name, status, exit_code, time.monotonic() - t0, output)


class SiteHook(Plain):
    """One entry of the hooks directory; ``problems`` non-empty means refused, never run."""

    def __init__(self, name: str, path: str, problems: list[Problem] | None = None,
                 kind: str = "site") -> None:
        self.name = name
        self.path = path
        self.problems: list[Problem] = [] if problems is None else problems
        self.kind = kind

    @property
    def refused(self) -> bool:
        return bool(self.problems)

    def _refusal(self, problems: list[Problem]) -> HookResult:
        text = "refused, not run:\n" + "".join(f"{p}\n" for p in problems)
        return HookResult(self.name, "refused", None, 0.0, text)

    def run(self, ctx: HookContext, timeout: float | None = None) -> HookResult:
        """Run the hook (``timeout`` overrides ``vmgenc_hook_timeout``)."""
        if self.problems:
            return self._refusal(self.problems)
        # checked again right before exec: the plan may be older than the file
        exe, problems = check_hook(self.path, ctx.root, ctx.config.hooks_owner_uid)
        if problems or exe is None:
            return self._refusal(problems)
        if ctx.dry_run:
            # a site hook cannot be trusted to honour a dry-run flag: it is not run at all
            return HookResult(self.name, "skipped", output=f"would run {exe}\n")
        return execute(self.name, exe, ctx,
                       ctx.config.hook_timeout if timeout is None else timeout)
