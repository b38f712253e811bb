"""Logging for the handler: syslog (facility daemon, ident ``vmgenc``) plus stderr when interactive.

Deliberately not :mod:`logging` (slow to import, and its default handlers print
tracebacks): one call per message, one line per message.  Expected errors are
logged as one line; only :func:`exception` (for bugs) adds a traceback, and
only to syslog at debug level.

Levels are syslog's: ``debug info notice warning err``; ``vmgenc_log_level``
sets the threshold for syslog, stderr shows ``info`` and above.
"""

from __future__ import annotations

import sys
import syslog

_PRIORITY = {
    "debug": syslog.LOG_DEBUG,
    "info": syslog.LOG_INFO,
    "notice": syslog.LOG_NOTICE,
    "warning": syslog.LOG_WARNING,
    "err": syslog.LOG_ERR,
}
_RANK = {name: i for i, name in enumerate(("debug", "info", "notice", "warning", "err"))}


class _State:
    opened = False
    threshold = "info"
    stderr: bool | None = None  # None: decide by isatty()
    prog = "vmgenc"
    sinks: list[list[tuple[str, str]]] = []


def set_level(level: str) -> None:
    """The syslog threshold (``vmgenc_log_level``)."""
    if level not in _RANK:
        raise ValueError(f"unknown log level {level!r}")
    _State.threshold = level


def set_stderr(enabled: bool | None, prog: str | None = None) -> None:
    """Echo to stderr: True, False, or None (only when stderr is a terminal)."""
    _State.stderr = enabled
    if prog:
        _State.prog = prog


def capture() -> list[tuple[str, str]]:
    """Start collecting ``(level, message)`` pairs in a list (for tests and the demo)."""
    sink: list[tuple[str, str]] = []
    _State.sinks.append(sink)
    return sink


def stop_capture(sink: list[tuple[str, str]]) -> None:
    if sink in _State.sinks:
        _State.sinks.remove(sink)


def after_fork() -> None:
    """In a forked child (the hook worker): its own syslog connection, no inherited sinks."""
    syslog.closelog()
    _State.opened = False
    _State.sinks = []


def _to_stderr() -> bool:
    if _State.stderr is not None:
        return _State.stderr
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def emit(level: str, message: str) -> None:
    """Log one message (newlines are folded: syslog lines stay single)."""
    line = " ".join(str(message).split("\n"))
    for sink in _State.sinks:
        sink.append((level, line))
    if _RANK[level] >= _RANK[_State.threshold]:
        if not _State.opened:
            syslog.openlog("vmgenc", syslog.LOG_PID, syslog.LOG_DAEMON)
            _State.opened = True
        try:
            syslog.syslog(_PRIORITY[level], line)
        except OSError:
            pass
    if _RANK[level] >= _RANK["info"] and _to_stderr():
        try:
            prefix = "" if level in ("info", "notice") else f"{level}: "
            print(f"{_State.prog}: {prefix}{line}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass


def debug(message: str) -> None:
    emit("debug", message)


def info(message: str) -> None:
    emit("info", message)


def notice(message: str) -> None:
    emit("notice", message)


def warning(message: str) -> None:
    emit("warning", message)


def error(message: str) -> None:
    emit("err", message)


def exception(message: str, exc: BaseException) -> None:
    """An unexpected error: one line at ``err``; the traceback only at ``debug``."""
    import traceback

    error(f"{message}: {type(exc).__name__}: {exc}")
    for chunk in traceback.format_exception(type(exc), exc, exc.__traceback__):
        for line in chunk.rstrip().splitlines():
            debug(line)
