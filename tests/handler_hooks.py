"""Simple Hook objects for the handler tests (the issue's "test with simple ones").

Also imported by worker subprocesses through ``--planner handler_hooks:env_plan``
(PYTHONPATH = this directory), configured by environment variables.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Callable

from vmgenc_tools.config import Config, from_vars
from vmgenc_tools.hooks.base import HookContext, HookResult


class RecordingHook:
    """Appends ``<new_guid> <class> <name>`` to ``logfile`` when it starts; may wait or fail.

    In a dry run it only says so, as every hook must.
    """

    def __init__(self, name: str, logfile: str, *, sleep: float = 0.0, fail: bool = False,
                 gate: str | None = None,
                 action: Callable[[HookContext], None] | None = None) -> None:
        self.name = name
        self.logfile = logfile
        self.sleep = sleep
        self.fail = fail
        self.gate = gate
        self.action = action

    def run(self, ctx: HookContext) -> HookResult:
        if ctx.dry_run:
            return HookResult(self.name, "skipped", output=f"would log to {self.logfile}\n")
        t0 = time.monotonic()
        fd = os.open(self.logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.new_guid} {ctx.cls} {self.name}\n".encode())
        finally:
            os.close(fd)
        if self.action is not None:
            self.action(ctx)
        if self.gate:
            deadline = time.monotonic() + 60
            while not os.path.exists(self.gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail:
            return HookResult(self.name, "failed", 1, time.monotonic() - t0, "boom\nit broke\n")
        return HookResult(self.name, "ok", 0, time.monotonic() - t0, "fine\n")


def names_planner(logfile: str, **kw: object) -> Callable[[Config, str], list]:
    """A planner that follows the configured per-class list (sshd_keys, hostid, entropy, site)."""

    def plan(config: Config, cls: str) -> list:
        return [RecordingHook(n, logfile, **kw) for n in config.hooks_for(cls)]  # type: ignore[arg-type]

    return plan


def env_plan(config: Config, cls: str) -> list:
    """For worker subprocesses: log file, delay and gate file from the environment."""
    return [RecordingHook(n, os.environ["VMGENC_TEST_HOOKLOG"],
                          sleep=float(os.environ.get("VMGENC_TEST_HOOKSLEEP", "0")),
                          gate=os.environ.get("VMGENC_TEST_GATE") or None)
            for n in config.hooks_for(cls)]


def read_log(logfile: str) -> list[tuple[str, str, str]]:
    try:
        with open(logfile) as f:
            return [tuple(line.split()) for line in f if line.strip()]  # type: ignore[misc]
    except FileNotFoundError:
        return []


def make_config(root: str, **knobs: str) -> Config:
    """A validated Config without running /bin/sh (``vmgenc_`` prefix optional)."""
    values = {(k if k.startswith("vmgenc_") else "vmgenc_" + k): v for k, v in knobs.items()}
    return from_vars(values, root)


class CommitFails:
    """A connection whose COMMIT fails as on a full disk (everything else is real SQLite)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)
