"""``vmgenctl watch`` against a small server that behaves as devd does with its
seqpacket clients (freebsd-facts §3.8): the exact kernel bytes, one record per
packet with MSG_EOR, every client gets every record, a client whose send() comes
up short is dropped, a restart closes every client and removes the socket."""

from __future__ import annotations

import errno
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable

import pytest

from vmgenc_tools import exitcodes, shipped
from vmgenc_tools.devctl import VMGENC_LINE
from vmgenc_tools.watch import (
    RECV_MAX,
    DevdNotRunning,
    DevdWatcher,
    event_from_packet,
    socket_path,
)

BATTERY = "!system=ACPI subsystem=CMBAT type=\\_SB_.BAT0 notify=0x80"
USB_ATTACH = "+uhub0 at bus=0 hubaddr=1 port=1 devaddr=2 on usbus0"
ALIAS = "!system=VMGENC subsystem=vmgenc0 type=GENERATION_CHANGED"
WAIT = 20  # seconds; a bound against hangs, never an assertion about speed


class FakeDevd:
    """devd's seqpacket side, in the test's thread: no accept thread, no timers."""

    def __init__(self, path: str, client_sndbuf: int | None = None) -> None:
        self.path = path
        self.client_sndbuf = client_sndbuf
        self.listener: socket.socket | None = None
        self.clients: list[socket.socket] = []
        self.dropped = 0

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.bind(self.path)
        os.chmod(self.path, 0o666)
        sock.listen(10)
        self.listener = sock

    def _accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        conn.shutdown(socket.SHUT_RD)  # devd never reads from clients
        if self.client_sndbuf:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.client_sndbuf)
        self.clients.append(conn)

    def wait_clients(self, n: int) -> None:
        """Accept until ``n`` clients are connected."""
        while len(self.clients) < n:
            ready, _, _ = select.select([self.listener], [], [], WAIT)
            assert ready, f"no client connected within {WAIT}s"
            self._accept()

    def emit(self, line: str | bytes) -> int:
        """Send one record to every client as devd does; return how many were dropped."""
        data = (line.encode() if isinstance(line, str) else line)
        if not data.endswith(b"\n"):
            data += b"\n"
        dropped = 0
        for conn in list(self.clients):
            try:
                sent = conn.send(data, socket.MSG_EOR | socket.MSG_DONTWAIT)
            except OSError:
                sent = -1
            if sent != len(data):  # "dropping unresponsive client"
                conn.close()
                self.clients.remove(conn)
                dropped += 1
        self.dropped += dropped
        return dropped

    def stop(self) -> None:
        """devd exits: every client closed, the socket file removed."""
        for conn in self.clients:
            conn.close()
        self.clients.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        os.unlink(self.path)


class Consumer(threading.Thread):
    """Iterates a watcher in the background; events land in ``self.events``."""

    def __init__(self, watcher: DevdWatcher) -> None:
        super().__init__(daemon=True)
        self.watcher = watcher
        self.events: queue.Queue = queue.Queue()

    def run(self) -> None:
        for event in self.watcher:
            self.events.put(event)
        self.events.put(None)  # the watcher was closed

    def next_raw(self) -> str:
        event = self.events.get(timeout=WAIT)
        assert event is not None, "the watcher ended"
        return event.raw


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    r.mkdir()
    return str(r)


@pytest.fixture
def devd(root):
    server = FakeDevd(socket_path(root))
    server.start()
    yield server
    if server.listener is not None:
        server.stop()


def _notes() -> tuple[list[str], threading.Event, Callable[[str], None]]:
    notes: list[str] = []
    failed = threading.Event()

    def notify(message: str) -> None:
        notes.append(message)
        if "failed" in message:
            failed.set()

    return notes, failed, notify


def test_socket_path_is_under_the_root(root):
    assert socket_path("/") == "/var/run/devd.seqpacket.pipe"
    assert socket_path(root) == os.path.join(root, "var/run/devd.seqpacket.pipe")


def test_records_arrive_one_per_packet_and_vmgenc_is_recognised(root, devd):
    watcher = DevdWatcher(devd.path)
    watcher.connect()
    devd.wait_clients(1)
    for line in (BATTERY, VMGENC_LINE, USB_ATTACH, ALIAS):
        assert devd.emit(line) == 0
    it = iter(watcher)
    got = [next(it) for _ in range(4)]
    watcher.close()
    assert [e.raw for e in got] == [BATTERY, VMGENC_LINE, USB_ATTACH, ALIAS]
    assert [e.vmgenc for e in got] == [False, True, False, True]
    assert got[1].record.type == "\\_SB_.VGEN"  # the backslash survives
    assert got[2].record.kind_name == "attach"
    assert got[2].record.device_name == "uhub0"


def test_every_client_gets_every_record_byte_for_byte(root, devd):
    """devd copies each record to every client, matched by a rule or not."""
    first, second = DevdWatcher(devd.path), DevdWatcher(devd.path)
    first.connect()
    second.connect()
    devd.wait_clients(2)
    for line in (USB_ATTACH, VMGENC_LINE):
        assert devd.emit(line) == 0
    for watcher in (first, second):
        packets = watcher.packets()
        assert [next(packets) for _ in range(2)] == [
            (USB_ATTACH.encode() + b"\n", False), (VMGENC_LINE.encode() + b"\n", False)]
        watcher.close()


def test_no_socket_is_devd_not_running(root):
    watcher = DevdWatcher(socket_path(root))
    with pytest.raises(DevdNotRunning) as info:
        watcher.connect()
    assert info.value.errno == errno.ENOENT
    assert "devd is not running" in str(info.value)


def test_stale_socket_file_is_devd_not_running(root, devd):
    devd.listener.close()  # devd died without removing its socket
    devd.listener = None
    with pytest.raises(DevdNotRunning) as info:
        DevdWatcher(devd.path).connect()
    assert info.value.errno == errno.ECONNREFUSED
    os.unlink(devd.path)


def test_devd_restart_the_client_reconnects_with_backoff(root, devd):
    notes, failed, notify = _notes()
    watcher = DevdWatcher(devd.path, backoff_initial=0.01, backoff_max=0.05, notify=notify)
    watcher.connect()
    devd.wait_clients(1)
    consumer = Consumer(watcher)
    consumer.start()
    devd.emit("!system=IFNET subsystem=vtnet0 type=LINK_UP")
    assert consumer.next_raw() == "!system=IFNET subsystem=vtnet0 type=LINK_UP"

    devd.stop()  # the client sees EOF; the socket is gone: ENOENT while devd is down
    assert failed.wait(WAIT), notes
    devd.start()
    devd.wait_clients(1)
    devd.emit(VMGENC_LINE)
    assert consumer.next_raw() == VMGENC_LINE
    assert watcher.reconnects == 1
    assert any("devd closed the connection" in n for n in notes)
    assert any(n.startswith("reconnected to ") for n in notes)
    watcher.close()  # from another thread: wakes the blocked read, no reconnecting
    consumer.join(WAIT)
    assert not consumer.is_alive() and consumer.events.get_nowait() is None


def test_slow_client_is_dropped_then_reconnects(root):
    server = FakeDevd(socket_path(root), client_sndbuf=4096)
    server.start()
    try:
        watcher = DevdWatcher(server.path, backoff_initial=0.01, backoff_max=0.05)
        watcher.connect()
        server.wait_clients(1)
        # The client does not read: devd's send() comes up short and it drops the client.
        sent = []
        for i in range(100_000):
            line = f"!system=ACPI subsystem=CMBAT type=\\_SB_.BAT0 notify=0x80 seq={i}"
            if server.emit(line):
                break
            sent.append(line)
        assert server.dropped == 1 and sent
        consumer = Consumer(watcher)
        consumer.start()
        # What was queued before the drop still arrives, in order, then EOF → reconnect.
        assert [consumer.next_raw() for _ in sent] == sent
        server.wait_clients(1)
        server.emit(VMGENC_LINE)
        assert consumer.next_raw() == VMGENC_LINE
        assert watcher.reconnects == 1
        watcher.close()
        consumer.join(WAIT)
        assert not consumer.is_alive()
    finally:
        server.stop()


def test_give_up_after_ends_the_iteration(root, devd):
    notes, _failed, notify = _notes()
    watcher = DevdWatcher(devd.path, backoff_initial=0.001, backoff_max=0.001,
                          notify=notify, give_up_after=0.0)
    watcher.connect()
    devd.wait_clients(1)
    devd.stop()
    assert list(watcher) == []
    assert any("failed" in n for n in notes)


def test_oversized_packet_is_flagged_truncated(root, devd):
    watcher = DevdWatcher(devd.path)
    watcher.connect()
    devd.wait_clients(1)
    devd.emit("!system=X subsystem=Y type=" + "Z" * RECV_MAX)
    devd.emit(BATTERY)
    it = iter(watcher)
    big, after = next(it), next(it)
    watcher.close()
    assert big.truncated and len(big.raw) == RECV_MAX
    assert after.raw == BATTERY and not after.truncated


def test_a_record_devctl_rejects_is_still_shown():
    event = event_from_packet(b"#not a devctl record\n", received_at=0.0)
    assert event.record is None and not event.vmgenc
    as_json = event.to_json()
    assert as_json["kind"] is None and "error" in as_json
    assert as_json["raw"] == "#not a devctl record"
    assert as_json["received_at"] == "1970-01-01T00:00:00.000000Z"


# -- the command ------------------------------------------------------------------------


def _run_cli(argv: list[str]) -> int:
    from vmgenc_tools.cli import run

    return run(argv)


def test_cli_no_devd_one_line_error_and_exit_code(root, capsys, monkeypatch):
    monkeypatch.setenv("VMGENC_ROOT", root)
    rc = _run_cli(["--root", root, "watch"])
    err = capsys.readouterr().err
    assert rc == exitcodes.ENVIRONMENT
    assert err.count("\n") == 1
    assert "devd is not running" in err and "service devd start" in err
    assert "Traceback" not in err


def test_cli_json_count(root, devd, capsys, monkeypatch):
    monkeypatch.setenv("VMGENC_ROOT", root)
    result: dict[str, int] = {}
    cli = threading.Thread(
        target=lambda: result.setdefault("rc", _run_cli(
            ["--root", root, "watch", "--json", "--count", "3"])), daemon=True)
    cli.start()
    devd.wait_clients(1)
    for line in (BATTERY, VMGENC_LINE, USB_ATTACH):
        devd.emit(line)
    cli.join(WAIT)
    assert not cli.is_alive()
    assert result["rc"] == 0
    objs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["raw"] for o in objs] == [BATTERY, VMGENC_LINE, USB_ATTACH]
    assert [o["vmgenc"] for o in objs] == [False, True, False]
    assert objs[1]["kind"] == "notify"
    assert objs[1]["variables"] == {"system": "ACPI", "subsystem": "VMGenerationCounter",
                                    "type": "\\_SB_.VGEN", "notify": "0x00"}
    assert objs[2]["variables"]["device-name"] == "uhub0"


def _vmgenctl() -> list[str]:
    exe = os.path.join(shipped.bindir(), "vmgenctl")
    if os.access(exe, os.X_OK):
        return [exe]
    return [sys.executable, "-c", "import sys; from vmgenc_tools.entry import main; "
            "sys.exit(main())"]


def test_cli_marks_vmgenc_and_ctrl_c_exits_0(root, devd):
    env = dict(os.environ, VMGENC_ROOT=root)
    proc = subprocess.Popen([*_vmgenctl(), "--root", root, "watch"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        devd.wait_clients(1)
        devd.emit(BATTERY)
        devd.emit(VMGENC_LINE)
        first, second = proc.stdout.readline(), proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert first.split(None, 1)[1].rstrip("\n") == BATTERY  # "HH:MM:SS  <record>"
    assert second.split()[1] == "*" and VMGENC_LINE in second
    assert "\x1b[" not in first + second  # no colour when stdout is not a terminal


def test_highlight_on_a_terminal():
    from vmgenc_tools.cli.watch import _line

    vm = _line(event_from_packet(VMGENC_LINE.encode() + b"\n"))
    other = _line(event_from_packet(BATTERY.encode() + b"\n"))
    assert "\x1b[" in vm and VMGENC_LINE in vm
    assert "\x1b[" not in other
