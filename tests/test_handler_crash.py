"""Reliability: kill -9 at random points, and many processes reconciling at once.

Children are forked processes running the real reconcile (real SQLite, real
flock, real files); the parent kills them with SIGKILL after a random delay
spread over the length of a whole run, so kills land before, inside and after
SQLite commits and hook runs.  ``bench/``-style longer runs can raise TRIALS.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections import Counter

import pytest
from conftest import set_guid
from handler_hooks import CommitFails, RecordingHook, make_config, read_log

from vmgenc_tools import exitcodes, handler
from vmgenc_tools.history import History, Journal

TRIALS = int(os.environ.get("VMGENC_CRASH_TRIALS", "200"))
KILLS_PER_CHANGE = 4
HOOKS = ("a", "b", "c")


def _plan_for(logfile):
    def plan(config, cls):
        return [RecordingHook(n, logfile, sleep=0.002) for n in HOOKS]

    return plan


def _fork_check(root, cfg, plan, *, gate_fd: int | None = None) -> int:
    pid = os.fork()
    if pid == 0:  # child: the real reconcile, then leave without pytest's teardown
        code = 70
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            if gate_fd is not None:
                os.read(gate_fd, 1)
            code = handler.check(root, config=cfg, planner=plan)
        except BaseException:  # noqa: BLE001
            code = 71
        finally:
            os._exit(code)
    return pid


def _integrity(db: str) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def _verify(cfg, logfile, expected_guids):
    """After a clean run: every change recorded once, settled, every hook ok exactly once."""
    h = History.open_readonly(cfg.db_path)
    try:
        rows = h.listing()
    finally:
        h.close()
    assert [c.new_text for c in rows] == expected_guids
    assert all(c.status == "done" for c in rows)
    lines = Counter((g, n) for g, _, n in read_log(logfile))
    for ch in rows[1:]:
        by_name: dict[str, list] = {}
        for r in ch.hooks:
            by_name.setdefault(r.name, []).append(r)
        assert sorted(by_name) == sorted(HOOKS)
        for name, runs in by_name.items():
            assert [r.status for r in runs].count("ok") == 1, runs
            assert max(runs, key=lambda r: r.attempt).status == "ok", runs  # nothing after ok
            assert all(r.status != "running" for r in runs)
            # each execution left one log line and had its attempt row committed first
            assert 1 <= lines[(ch.new_text, name)] <= len(runs), (name, runs)


def _state_of(cfg, guid) -> str:
    """Where the killed run got to for ``guid``: unrecorded, pending+N ok, done."""
    h = History.open_readonly(cfg.db_path)
    try:
        last = h.last_change()
    finally:
        h.close()
    if last is None or last.new_text != guid:
        return "unrecorded"
    if last.status == "pending":
        return f"pending+{len(last.ok_names())}ok"
    return last.status


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_kill_9_at_random_points(kernel_root, tmp_path):
    rng = random.Random(int(os.environ.get("VMGENC_CRASH_SEED", "5")))
    logfile = str(tmp_path / "hooks.log")
    cfg = make_config(kernel_root)
    plan = _plan_for(logfile)
    assert handler.check(kernel_root, config=cfg, planner=plan) == 0
    expected = [rows.new_text for rows in History.open_readonly(cfg.db_path).listing()]

    # how long one full run takes here, to spread the kills over it
    set_guid(kernel_root, str(uuid.uuid4()))
    t0 = time.monotonic()
    pid = _fork_check(kernel_root, cfg, plan)
    assert os.waitpid(pid, 0)[1] == 0
    span = max(time.monotonic() - t0, 0.02)
    expected.append(History.open_readonly(cfg.db_path).last_change().new_text)

    outcomes: Counter = Counter()
    states: Counter = Counter()
    while outcomes["killed"] < TRIALS:
        guid = str(uuid.uuid4())
        set_guid(kernel_root, guid)
        expected.append(guid)
        for _ in range(KILLS_PER_CHANGE):
            pid = _fork_check(kernel_root, cfg, plan)
            time.sleep(rng.uniform(0, span * 1.1))
            os.kill(pid, signal.SIGKILL)
            _, st = os.waitpid(pid, 0)
            assert _integrity(cfg.db_path) == "ok"
            if not os.WIFSIGNALED(st):
                outcomes["finished"] += 1
                break  # settled before the kill: on to the next change
            outcomes["killed"] += 1
            states[_state_of(cfg, guid)] += 1
        pid = _fork_check(kernel_root, cfg, plan)  # the next check/boot resumes
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
        _verify(cfg, logfile, expected)
        with open(handler.Paths.of(cfg).last_guid) as f:
            assert f.read() == handler.guid_line(
                (handler.Generation.parse(guid),)) + "\ndone\n"
    # the kills landed all over the run, not only before or after it
    assert len(states) >= 3, states
    print(f"kill -9 trials: {dict(outcomes)} over a {span * 1000:.0f} ms run; states after "
          f"the kill: {dict(states)}", file=sys.stderr)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_twenty_processes_reconcile_the_same_change_once(kernel_root, tmp_path):
    logfile = str(tmp_path / "hooks.log")
    cfg = make_config(kernel_root)
    plan = _plan_for(logfile)
    handler.check(kernel_root, config=cfg, planner=plan)
    guid = str(uuid.uuid4())
    set_guid(kernel_root, guid)
    r, w = os.pipe()
    pids = [_fork_check(kernel_root, cfg, plan, gate_fd=r) for _ in range(20)]
    os.close(r)
    os.write(w, b"x" * 20)  # release them all at once
    os.close(w)
    codes = [os.waitpid(p, 0)[1] for p in pids]
    assert all(os.WIFEXITED(c) and os.WEXITSTATUS(c) == 0 for c in codes), codes
    rows = History.open_readonly(cfg.db_path).listing()
    assert [c.new_text for c in rows][-1] == guid and len(rows) == 2
    assert sorted(n for g, _, n in read_log(logfile) if g == guid) == sorted(HOOKS)
    assert all(len(c.hooks) == len(HOOKS) for c in rows[1:])


def _commits_fail(mocker):
    """Every History opened from now on (also in forked children) fails its COMMITs."""
    real = History.open.__func__

    def open_failing(cls, path):
        h = real(cls, path)
        h.conn = CommitFails(h.conn)
        return h

    return mocker.patch.object(History, "open", classmethod(open_failing))


def _wait_for(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("next_run", ["writable", "still-failing"])
def test_kill_9_between_hooks_of_a_degraded_run_reruns_none_that_ended(kernel_root, tmp_path,
                                                                       mocker, next_run):
    """The change's own COMMIT fails; SIGKILL once hook a ended and b started: a never reruns."""
    logfile = str(tmp_path / "hooks.log")
    gate = str(tmp_path / "never")  # hook b waits for it: the kill lands inside b
    cfg = make_config(kernel_root)
    paths = handler.Paths.of(cfg)
    assert paths.journal_fallback.startswith(kernel_root + os.sep)  # never the real /var
    names = ("a", "b", "c", "d")

    def plan(config, cls):
        return [RecordingHook(n, logfile, gate=gate if n == "b" else None) for n in names]

    assert handler.check(kernel_root, config=cfg, planner=plan) == 0
    guid = str(uuid.uuid4())
    set_guid(kernel_root, guid)
    failing = _commits_fail(mocker)
    pid = _fork_check(kernel_root, cfg, plan)
    _wait_for(lambda: [n for _, _, n in read_log(logfile)] == ["a", "b"], "hook b to start")
    os.kill(pid, signal.SIGKILL)
    _, st = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(st) and os.WTERMSIG(st) == signal.SIGKILL

    journal = Journal(paths.journal, paths.journal_fallback)
    ((_, kept),) = journal.changes()  # the database never got it; the journal did
    assert (kept.new_text, kept.status) == (guid, "pending")
    assert [(r.name, r.status) for r in kept.hooks] == [("a", "ok")]
    assert [c.new_text for c in History.open_readonly(cfg.db_path).listing()][-1] != guid

    open(gate, "w").close()
    if next_run == "still-failing":  # the next run cannot record either: resumes from the journal
        pid = _fork_check(kernel_root, cfg, plan)
        _, st = os.waitpid(pid, 0)
        assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == exitcodes.STATE
        assert [n for _, _, n in read_log(logfile)] == ["a", "b", "b", "c", "d"]
        ((_, kept),) = journal.changes()
        assert kept.status == "done"
    mocker.stop(failing)
    pid = _fork_check(kernel_root, cfg, plan)  # writable again: imports, resumes the rest
    _, st = os.waitpid(pid, 0)
    assert os.WIFEXITED(st) and os.WEXITSTATUS(st) == 0
    assert [n for _, _, n in read_log(logfile)] == ["a", "b", "b", "c", "d"]
    assert not journal.exists()
    assert _integrity(cfg.db_path) == "ok"
    rows = History.open_readonly(cfg.db_path).listing()
    assert [c.new_text for c in rows].count(guid) == 1
    ch = rows[-1]
    assert (ch.new_text, ch.status) == (guid, "done")
    assert [(r.name, r.status) for r in ch.latest_hooks()] == [(n, "ok") for n in names]
    assert [r.name for r in ch.hooks if r.status == "ok"] == list(names)  # each ok once
    with open(paths.last_guid) as f:
        assert f.read() == handler.guid_line((handler.Generation.parse(guid),)) + "\ndone\n"
