"""devd mode: record, hand the hooks (and the lock) to a detached worker, return."""

from __future__ import annotations

import os
import time

import pytest
from conftest import set_guid
from handler_hooks import RecordingHook, names_planner, read_log

from vmgenc_tools import exitcodes, fastcheck, handler
from vmgenc_tools.generation import Generation
from vmgenc_tools.history import History
from vmgenc_tools.status import status, wait

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
G2 = "11111111-2222-3333-4444-555555555555"
G3 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
PLANNER = "handler_hooks:env_plan"
VGEN = "\\_SB_.VGEN"


@pytest.fixture
def devd_env(kernel_root, tmp_path, monkeypatch, trusted_rc_conf):
    here = os.path.dirname(os.path.abspath(__file__))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (here, os.environ.get("PYTHONPATH")) if p))
    logfile = str(tmp_path / "hooks.log")
    gate = str(tmp_path / "gate")
    monkeypatch.setenv("VMGENC_TEST_HOOKLOG", logfile)
    monkeypatch.setenv("VMGENC_TEST_GATE", gate)
    trusted_rc_conf(kernel_root)
    cfg = fastcheck.load_config(kernel_root)
    handler.check(kernel_root, config=cfg, planner=names_planner(logfile))
    yield type("Env", (), {"root": kernel_root, "log": logfile, "gate": gate, "cfg": cfg,
                           "paths": handler.Paths.of(cfg)})
    open(gate, "w").close()
    handler.wait_workers(60)


def _rows(env):
    h = History.open_readonly(env.paths.db)
    try:
        return h.listing()
    finally:
        h.close()


def _wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_devd_records_pending_and_a_detached_worker_runs_the_hooks(devd_env):
    env = devd_env
    set_guid(env.root, G2)
    assert handler.devd_event(env.root, VGEN, "1700000000", planner_spec=PLANNER) == 0
    # back in devd: the change is recorded, the hooks are the worker's business
    ch = _rows(env)[-1]
    assert (ch.new_text, ch.status, ch.source, ch.cls) == (G2, "pending", "devd", "clone")
    assert (ch.acpi_path, ch.devd_timestamp) == (VGEN, "1700000000")
    worker = handler.WORKERS[-1]
    assert worker.poll() is None
    assert os.getsid(worker.pid) == worker.pid  # its own session (setsid)
    _wait_for(lambda: read_log(env.log))  # the first hook is running (held at the gate)
    st = status(env.root, config=env.cfg)
    assert st["state"] == "pending" and st["exit_code"] == 1
    assert st["running_pid"] == worker.pid  # the worker holds the lock
    assert handler.RootLock.acquire(env.paths.lock, blocking=False) is None
    open(env.gate, "w").close()
    handler.wait_workers(60)
    assert worker.returncode == 0
    ch = _rows(env)[-1]
    assert ch.status == "done"
    assert [n for _, _, n in read_log(env.log)] == ["sshd_keys", "hostid", "entropy", "site"]
    st = status(env.root, config=env.cfg)
    assert (st["state"], st["running_pid"]) == ("settled", None)
    assert fastcheck.settled_state(env.root, env.cfg.dbdir,
                                   fastcheck.live_line(env.root)) == "done"


def test_devd_event_while_the_lock_is_busy_is_recorded_by_the_holder(devd_env):
    env = devd_env
    set_guid(env.root, G2)
    handler.devd_event(env.root, VGEN, "1700000000", planner_spec=PLANNER)
    _wait_for(lambda: read_log(env.log))
    set_guid(env.root, G3)  # a second change while the worker runs the first one's hooks
    assert handler.devd_event(env.root, VGEN, "1700000042", planner_spec=PLANNER) == 0
    assert len(handler.WORKERS) == 1  # nobody new: the holder will see it
    assert os.path.exists(env.paths.devd_event)
    open(env.gate, "w").close()
    handler.wait_workers(60)
    second, third = _rows(env)[-2:]
    assert (second.new_text, second.status) == (G2, "done")
    assert (third.old_text, third.new_text, third.status) == (G2, G3, "done")
    assert (third.source, third.acpi_path, third.devd_timestamp) == ("devd", VGEN, "1700000042")
    assert [g for g, _, _ in read_log(env.log)] == [G2] * 4 + [G3] * 4
    assert not os.path.exists(env.paths.devd_event)


def test_a_change_right_at_release_is_picked_up(devd_env, monkeypatch):
    """The post-release re-read: a devd entry that bailed just before the unlock."""
    env = devd_env
    real = handler.RootLock.release
    fired = []

    def release(self):
        real(self)
        if not fired:
            fired.append(1)
            set_guid(env.root, G3)

    monkeypatch.setattr(handler.RootLock, "release", release)
    set_guid(env.root, G2)
    open(env.gate, "w").close()
    seen = []

    def look(ctx):  # the second round must also remove last-guid before its hooks
        seen.append((ctx.new_guid, os.path.exists(env.paths.last_guid)))

    def plan(config, cls):
        return [RecordingHook("a", env.log, action=look)]

    handler.check(env.root, config=env.cfg, planner=plan)
    assert [c.new_text for c in _rows(env)][-2:] == [G2, G3]
    assert _rows(env)[-1].status == "done"
    assert seen == [(G2, False), (G3, False)]
    assert fastcheck.settled_state(env.root, env.cfg.dbdir,
                                   fastcheck.live_line(env.root)) == "done"


def test_devd_inline_when_detach_is_off(devd_env, trusted_rc_conf):
    env = devd_env
    trusted_rc_conf(env.root, vmgenc_devd_detach="NO")
    cfg = fastcheck.load_config(env.root)
    open(env.gate, "w").close()
    set_guid(env.root, G2)
    assert handler.devd_event(env.root, VGEN, "1", config=cfg,
                              planner=names_planner(env.log)) == 0
    assert handler.WORKERS == []
    assert _rows(env)[-1].status == "done" and len(read_log(env.log)) == 4


def test_run_devd_end_to_end_through_the_light_entry(devd_env, trusted_rc_conf):
    env = devd_env
    trusted_rc_conf(env.root, vmgenc_hooks_clone="")  # no hooks: the runner is not needed
    set_guid(env.root, G2)
    assert fastcheck.run_devd(env.root, [VGEN, "1700000000"]) == 0
    handler.wait_workers(60)
    ch = _rows(env)[-1]
    assert (ch.new_text, ch.status, ch.source) == (G2, "done", "devd")


def test_spurious_notify_takes_the_fast_path(devd_env):
    env = devd_env
    before = [os.stat(p) for p in (env.paths.db, env.paths.last_guid)]
    assert fastcheck.run_devd(env.root, [VGEN, "1700000000"]) == 0
    after = [os.stat(p) for p in (env.paths.db, env.paths.last_guid)]
    assert [(s.st_mtime_ns, s.st_size) for s in before] == [
        (s.st_mtime_ns, s.st_size) for s in after]
    assert handler.WORKERS == [] and not os.path.exists(env.paths.devd_event)
    assert len(_rows(env)) == 1


def test_devd_without_device_exits_3_and_logs(tmp_path, capsys):
    from conftest import write_kernel

    root = str(tmp_path / "r")
    os.makedirs(root)
    write_kernel(root, [])
    assert fastcheck.run_devd(root, [VGEN, "1"]) == exitcodes.NO_DEVICE
    assert capsys.readouterr().err.count("\n") == 1


def test_wait_library_reports_timeout_pending_settled_and_failed(devd_env, capsys):
    """``status.wait``: 5 until the generation moved *and* its hooks settled; 0 done; 1 failed."""
    env = devd_env
    g0 = Generation.parse(G0)
    assert wait(env.root, timeout=0.2, interval=0.02, config=env.cfg) == exitcodes.TIMEOUT
    set_guid(env.root, G2)  # changed, but no check has recorded it yet
    assert status(env.root, config=env.cfg)["state"] == "unrecorded"
    assert wait(env.root, since=g0, timeout=0.2, interval=0.02,
                config=env.cfg) == exitcodes.TIMEOUT
    handler.devd_event(env.root, VGEN, "1700000000", planner_spec=PLANNER)
    _wait_for(lambda: read_log(env.log))  # recorded, hooks held at the gate
    assert wait(env.root, since=g0, timeout=0.2, interval=0.02,
                config=env.cfg) == exitcodes.TIMEOUT
    open(env.gate, "w").close()
    assert wait(env.root, since=g0, timeout=60, interval=0.02, config=env.cfg) == exitcodes.OK
    handler.wait_workers(60)
    set_guid(env.root, G3)
    broken = [RecordingHook("x", env.log, fail=True)]
    assert handler.check(env.root, config=env.cfg,
                         planner=lambda c, k: broken) == exitcodes.PENDING_OR_FAILED
    # settled, if with failed hooks: wait is done (design §3: 0 · 5); status says "failed"
    assert wait(env.root, since=Generation.parse(G2), timeout=60, interval=0.02,
                config=env.cfg) == exitcodes.OK
    assert "hooks failed" in capsys.readouterr().err
    assert status(env.root, config=env.cfg)["state"] == "failed"
