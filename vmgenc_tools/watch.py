"""A client of devd's ``SOCK_SEQPACKET`` socket: live devctl records (``vmgenctl watch``).

devd (freebsd-facts §3.8) hands every client every event it reads from
``/dev/devctl`` -- matched by a rule or not -- as the exact kernel bytes
(leading ``!``/``+``/``-``/``?``, trailing newline), one event per packet
(``MSG_EOR``).  The socket is ``/var/run/devd.seqpacket.pipe``; the client only
reads (devd shuts down its own read side).  devd drops a client whose
``send()`` comes up short, and a devd restart closes every client; either way
the client sees end-of-file and reconnects here, with a growing delay while
the socket is missing or refuses connections.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .devctl import DevctlError, Record, is_vmgenc_change, parse

SEQPACKET_PIPE = "/var/run/devd.seqpacket.pipe"
#: devctl records are at most ~1 KiB (kern_devctl.c); a packet longer than this
#: is read truncated and flagged.
RECV_MAX = 65536
BACKOFF_INITIAL = 0.1
BACKOFF_MAX = 5.0

_NOT_LISTENING = (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)


class DevdNotRunning(OSError):
    """Nothing listens at devd's socket (no socket file, or a stale one)."""


@dataclass(frozen=True)
class DevctlEvent:
    """One packet from devd: the record's text and what it says."""

    raw: str                    # the record without its trailing newline
    record: Record | None       # None when devctl.parse rejects the text
    vmgenc: bool                # a vmgenc generation change (or its alias)
    received_at: float          # time.time() when read
    truncated: bool = False     # longer than RECV_MAX: only the start was read
    error: str | None = None    # why devctl.parse rejected it

    def to_json(self) -> dict[str, object]:
        """The event as one JSON object (``vmgenctl watch --json``)."""
        out: dict[str, object] = {
            "received_at": _iso_utc(self.received_at),
            "raw": self.raw,
            "vmgenc": self.vmgenc,
        }
        if self.record is not None:
            out["kind"] = self.record.kind_name
            out["variables"] = self.record.variables()
        else:
            out["kind"] = None
            out["error"] = self.error
        if self.truncated:
            out["truncated"] = True
        return out


def _iso_utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def socket_path(root: str = "/") -> str:
    """devd's seqpacket socket under ``root``."""
    if root in ("", "/"):
        return SEQPACKET_PIPE
    return os.path.join(root, SEQPACKET_PIPE.lstrip("/"))


def event_from_packet(data: bytes, *, truncated: bool = False,
                      received_at: float | None = None) -> DevctlEvent:
    """Read one packet as devd sent it (kernel bytes, newline included)."""
    text = data.decode("utf-8", "surrogateescape").rstrip("\n")
    shown = data.decode("utf-8", "replace").rstrip("\n")
    when = time.time() if received_at is None else received_at
    try:
        record = parse(text, kernel_limit=None)
    except DevctlError as e:
        return DevctlEvent(shown, None, False, when, truncated, str(e))
    return DevctlEvent(shown, record, is_vmgenc_change(record), when, truncated)


def connect(path: str) -> socket.socket:
    """Connect to devd's seqpacket socket; :class:`DevdNotRunning` if nothing listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        if e.errno in _NOT_LISTENING:
            raise DevdNotRunning(e.errno, f"devd is not running (nothing listens at {path})",
                                 path) from None
        raise
    return sock


class DevdWatcher:
    """Iterate over devd's events, reconnecting when devd closes the connection.

    ``notify(message)`` is told about disconnects and reconnect attempts (the
    CLI prints them on stderr).  ``give_up_after`` (seconds without a
    connection) ends the iteration instead of waiting for devd forever.
    :meth:`close` (from any thread) ends it for good.
    """

    def __init__(self, path: str, *, backoff_initial: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX,
                 notify: Callable[[str], None] | None = None,
                 give_up_after: float | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = path
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.notify = notify or (lambda message: None)
        self.give_up_after = give_up_after
        self.sleep = sleep
        self.sock: socket.socket | None = None
        self.reconnects = 0
        self.closed = False

    def connect(self) -> None:
        """Connect now (raises :class:`DevdNotRunning`), so a caller can fail early."""
        if self.sock is None:
            self.sock = connect(self.path)

    def _drop(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        """Stop: no more reads, no reconnecting."""
        self.closed = True
        self._drop()

    def __enter__(self) -> DevdWatcher:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reconnect(self) -> bool:
        """Wait for devd to listen again; False once ``give_up_after`` has passed."""
        delay = self.backoff_initial
        started = time.monotonic()
        attempt = 0
        while not self.closed:
            attempt += 1
            try:
                self.sock = connect(self.path)
            except OSError as e:
                self.notify(f"reconnect attempt {attempt} failed: {e.strerror or e}")
                if (self.give_up_after is not None
                        and time.monotonic() - started >= self.give_up_after):
                    return False
                self.sleep(delay)
                delay = min(delay * 2, self.backoff_max)
                continue
            self.reconnects += 1
            self.notify(f"reconnected to {self.path}")
            return True
        return False

    def packets(self) -> Iterator[tuple[bytes, bool]]:
        """Raw packets ``(data, truncated)``, across reconnects."""
        if self.closed:
            return
        self.connect()
        while True:
            sock = self.sock
            if sock is None:
                return
            try:
                data, _anc, flags, _addr = sock.recvmsg(RECV_MAX)
            except ConnectionResetError:
                data, flags = b"", 0
            except OSError:
                if self.closed:
                    return
                raise
            if data:
                yield data, bool(flags & socket.MSG_TRUNC)
                continue
            if self.closed:
                return
            self._drop()
            self.notify("devd closed the connection (devd restarted, or this client "
                        "fell behind and was dropped); reconnecting")
            if not self._reconnect():
                return

    def __iter__(self) -> Iterator[DevctlEvent]:
        for data, truncated in self.packets():
            yield event_from_packet(data, truncated=truncated)
