"""The reconcile guarantees of design §4 on a simulated VM, with simple hooks."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import syslog
import uuid
from types import SimpleNamespace

import pytest
from conftest import set_guid, write_kernel
from handler_hooks import RecordingHook, make_config, names_planner, read_log

from vmgenc_tools import exitcodes, handler, log, simstate
from vmgenc_tools.generation import Generation
from vmgenc_tools.history import History, HistoryWriteError, Journal

G2 = "11111111-2222-3333-4444-555555555555"
G3 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
ZERO = "00000000-0000-0000-0000-000000000000"
CLONE_HOOKS = ["sshd_keys", "hostid", "entropy", "site"]


@pytest.fixture
def env(kernel_root, tmp_path):
    logfile = str(tmp_path / "hooks.log")
    cfg = make_config(kernel_root)
    return SimpleNamespace(root=kernel_root, log=logfile, cfg=cfg,
                           plan=names_planner(logfile), paths=handler.Paths.of(cfg))


@pytest.fixture
def logged():
    sink = log.capture()
    yield sink
    log.stop_capture(sink)


def check(env, **kw):
    kw.setdefault("config", env.cfg)
    kw.setdefault("planner", env.plan)
    return handler.check(env.root, **kw)


def changes(env):
    h = History.open_readonly(env.paths.db)
    try:
        return h.listing() if h else []
    finally:
        if h:
            h.close()


def cache(env):
    with open(env.paths.last_guid) as f:
        return f.read()


def hexline(*texts):
    return " ".join(Generation.parse(t).hex for t in texts)


def set_boot_time(root, t):
    with simstate.transaction(root) as st:
        st.nodes["kern.boottime"].value = struct.pack("=qq", t, 0)


# -- first run, no change, run-time change ------------------------------------------------


def test_first_run_records_first_seen_and_runs_no_identity_hooks(env, logged):
    assert check(env) == 0
    (ch,) = changes(env)
    assert (ch.cls, ch.status, ch.old_text, ch.source) == ("first-seen", "done", None, "manual")
    assert read_log(env.log) == []
    assert cache(env) == hexline("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87") + "\ndone\n"
    assert stat.S_IMODE(os.stat(env.paths.last_guid).st_mode) == 0o644
    assert any("generation change #1: (none) -> 324e6eaf" in m for _, m in logged)


def test_second_run_with_the_same_guid_records_nothing(env):
    check(env)
    assert check(env) == 0
    assert len(changes(env)) == 1


def test_run_time_change_is_a_clone_with_the_clone_hooks_once(env, logged):
    check(env)
    set_guid(env.root, G2)
    assert check(env) == 0
    first, ch = changes(env)
    assert (ch.cls, ch.status, ch.old_text, ch.new_text) == ("clone", "done", first.new_text, G2)
    assert [r.name for r in ch.latest_hooks()] == CLONE_HOOKS
    assert read_log(env.log) == [(G2, "clone", n) for n in CLONE_HOOKS]
    assert cache(env) == hexline(G2) + "\ndone\n"
    assert any(f"generation change #2: {first.new_text} -> {G2} class clone" in m
               for _, m in logged)
    assert check(env) == 0 and len(read_log(env.log)) == 4


def test_runtime_class_restore_runs_the_restore_hooks(env):
    env.cfg = make_config(env.root, runtime_class="restore")
    check(env)
    set_guid(env.root, G2)
    check(env)
    assert changes(env)[-1].cls == "restore"
    assert [n for _, _, n in read_log(env.log)] == ["entropy", "site"]


# -- ordering and durability --------------------------------------------------------------


def test_change_is_pending_before_any_hook_runs_and_cache_is_gone(env):
    check(env)
    seen = []

    def look(ctx):
        h = History.open_readonly(env.paths.db)
        last = h.last_change()
        seen.append((last.status, [(r.name, r.status) for r in last.hooks],
                     os.path.exists(env.paths.last_guid)))
        h.close()

    def plan(config, cls):
        return [RecordingHook("a", env.log, action=look), RecordingHook("b", env.log, action=look)]

    set_guid(env.root, G2)
    check(env, planner=plan)
    assert seen == [("pending", [("a", "running")], False),
                    ("pending", [("a", "ok"), ("b", "running")], False)]
    assert changes(env)[-1].status == "done"


def test_lock_is_held_while_hooks_run(env):
    check(env)
    tries = []

    def try_lock(ctx):
        other = handler.RootLock.acquire(env.paths.lock, blocking=False)
        tries.append(other)
        if other:
            other.release()
        tries.append(handler.holder_pid(env.paths.lock))

    set_guid(env.root, G2)
    check(env, planner=lambda c, k: [RecordingHook("a", env.log, action=try_lock)])
    assert tries == [None, os.getpid()]
    assert handler.holder_pid(env.paths.lock) is None  # cleared on release


class Killed(BaseException):
    """The run is killed (not an Exception: nothing in the handler catches it)."""


def killed_at_b_once(env):
    """Hooks a, b, c; the run dies inside b the first time b runs."""
    dying = [True]

    def die(ctx):
        if dying:
            dying.clear()
            raise Killed()

    def plan(config, cls):
        return [RecordingHook("a", env.log), RecordingHook("b", env.log, action=die),
                RecordingHook("c", env.log)]

    return plan


def test_interrupted_hooks_are_resumed_and_ok_hooks_never_rerun(env, logged):
    check(env)
    plan = killed_at_b_once(env)
    set_guid(env.root, G2)
    with pytest.raises(Killed):
        check(env, planner=plan)
    ch = changes(env)[-1]
    assert ch.status == "pending"
    assert [(r.name, r.status) for r in ch.hooks] == [("a", "ok"), ("b", "running")]
    assert not os.path.exists(env.paths.last_guid)
    assert check(env, planner=plan) == 0
    ch = changes(env)[-1]
    assert ch.status == "done"
    assert [(r.name, r.attempt, r.status) for r in ch.hooks] == [
        ("a", 1, "ok"), ("b", 1, "failed"), ("b", 2, "ok"), ("c", 1, "ok")]
    assert "interrupted" in ch.hooks[1].output
    assert [n for _, _, n in read_log(env.log)] == ["a", "b", "b", "c"]
    assert any("resuming hooks" in m for _, m in logged)


def test_change_during_hooks_is_recorded_after_this_one_settles(env):
    check(env)
    moved = []

    def bump(ctx):
        if not moved:
            moved.append(ctx.new_guid)
            set_guid(env.root, G3)

    def plan(config, cls):
        return [RecordingHook("a", env.log, action=bump), RecordingHook("b", env.log)]

    set_guid(env.root, G2)
    assert check(env, planner=plan) == 0
    _, second, third = changes(env)
    assert (second.new_text, second.status) == (G2, "done")
    assert (third.old_text, third.new_text, third.status) == (G2, G3, "done")
    assert second.settled_at <= third.detected_at
    assert read_log(env.log) == [(G2, "clone", "a"), (G2, "clone", "b"),
                                 (G3, "clone", "a"), (G3, "clone", "b")]
    assert cache(env) == hexline(G3) + "\ndone\n"


# -- failures and retry -------------------------------------------------------------------


def test_failed_hook_fails_the_change_and_retry_reruns_only_it(env, capsys):
    check(env)
    broken = {"b": True}

    def plan(config, cls):
        return [RecordingHook("a", env.log), RecordingHook("b", env.log, fail=broken["b"])]

    set_guid(env.root, G2)
    assert check(env, planner=plan) == exitcodes.PENDING_OR_FAILED
    assert changes(env)[-1].status == "failed"
    assert cache(env) == hexline(G2) + "\nfailed\n"
    assert check(env, planner=plan) == exitcodes.PENDING_OR_FAILED  # settled, still failed
    assert [n for _, _, n in read_log(env.log)] == ["a", "b"]
    broken["b"] = False
    capsys.readouterr()
    assert handler.retry(env.root, config=env.cfg, planner=plan) == 0
    assert "done (a ok, b ok)" in capsys.readouterr().out
    ch = changes(env)[-1]
    assert ch.status == "done" and [(r.name, r.attempt) for r in ch.latest_hooks()] == [
        ("a", 1), ("b", 2)]
    assert [n for _, _, n in read_log(env.log)] == ["a", "b", "b"]
    assert cache(env) == hexline(G2) + "\ndone\n"
    assert handler.retry(env.root, config=env.cfg, planner=plan) == 0
    assert "nothing to retry" in capsys.readouterr().out


def test_stop_on_failure_skips_the_rest(env):
    env.cfg = make_config(env.root, hook_stop_on_failure="YES")
    check(env)

    def plan(config, cls):
        return [RecordingHook("a", env.log, fail=True), RecordingHook("b", env.log),
                RecordingHook("c", env.log)]

    set_guid(env.root, G2)
    assert check(env, planner=plan) == 1
    ch = changes(env)[-1]
    assert [(r.name, r.status) for r in ch.latest_hooks()] == [
        ("a", "failed"), ("b", "skipped"), ("c", "skipped")]
    assert [n for _, _, n in read_log(env.log)] == ["a"]


def test_a_hook_that_raises_is_a_failed_hook(env, logged):
    check(env)

    class Buggy:
        name = "buggy"

        def run(self, ctx):
            raise RuntimeError("kaputt")

    set_guid(env.root, G2)
    assert check(env, planner=lambda c, k: [Buggy(), RecordingHook("b", env.log)]) == 1
    runs = {r.name: r for r in changes(env)[-1].hooks}
    assert runs["buggy"].status == "failed" and "kaputt" in runs["buggy"].output
    assert runs["b"].status == "ok"
    assert any(level == "err" and "hook buggy raised" in m for level, m in logged)


def test_a_planner_that_raises_fails_the_change_instead_of_wedging_it(env):
    check(env)

    def broken(config, cls):
        raise KeyError("no such built-in")

    set_guid(env.root, G2)
    assert check(env, planner=broken) == 1
    ch = changes(env)[-1]
    assert ch.status == "failed" and [(r.name, r.status) for r in ch.hooks] == [
        ("plan", "failed")]
    assert handler.retry(env.root, config=env.cfg, planner=env.plan) == 0
    assert changes(env)[-1].status == "done" and len(read_log(env.log)) == 4


# -- no ID, forced classes, signals --------------------------------------------------------


def test_all_zero_guid_is_a_warning_row_without_hooks(env, logged):
    write_kernel(env.root, [ZERO])
    assert check(env) == 0
    (row,) = changes(env)
    assert (row.cls, row.status) == ("no-id", "done") and "all-zero" in row.warning
    assert check(env) == 0 and len(changes(env)) == 1
    assert any(level == "warning" and "no ID" in m for level, m in logged)
    set_guid(env.root, G2)  # an ID appears: the first real generation
    check(env)
    assert [c.cls for c in changes(env)] == ["no-id", "first-seen"]
    assert read_log(env.log) == []


def test_zero_spell_then_same_id_is_no_change(env):
    check(env)
    set_guid(env.root, ZERO)
    check(env)
    set_guid(env.root, "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")
    assert check(env) == 0
    assert [c.cls for c in changes(env)] == ["first-seen", "no-id"]
    assert cache(env).endswith("\ndone\n")
    set_guid(env.root, G2)
    check(env)
    last = changes(env)[-1]
    assert (last.cls, last.old_text) == ("clone", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")


def test_intent_file_forces_the_next_change_only(env):
    check(env)
    with open(env.paths.intent, "w") as f:
        f.write("restore\n")
    set_guid(env.root, G2)
    check(env)
    assert (changes(env)[-1].cls, changes(env)[-1].forced) == ("restore", "intent")
    assert not os.path.exists(env.paths.intent)
    set_guid(env.root, G3)
    check(env)
    assert (changes(env)[-1].cls, changes(env)[-1].forced) == ("clone", None)


def test_an_intent_left_by_a_crash_after_commit_is_not_reused(env):
    check(env)
    with open(env.paths.intent, "w") as f:
        f.write("restore\n")
    keep = env.paths.intent + ".keep"
    os.link(env.paths.intent, keep)
    set_guid(env.root, G2)
    check(env)
    os.link(keep, env.paths.intent)  # the same file again: as if unlink never happened
    set_guid(env.root, G3)
    check(env)
    assert changes(env)[-1].cls == "clone"


def test_an_invalid_intent_is_ignored_with_a_warning(env, logged):
    check(env)
    with open(env.paths.intent, "w") as f:
        f.write("teleport\n")
    set_guid(env.root, G2)
    check(env)
    assert changes(env)[-1].cls == "clone"
    assert any("'teleport' is not a class" in m for _, m in logged)


def test_check_class_forces_this_change(env, capsys):
    check(env)
    set_guid(env.root, G2)
    check(env, forced="platform-restart")
    assert (changes(env)[-1].cls, changes(env)[-1].forced) == ("platform-restart", "cli")
    capsys.readouterr()
    check(env, forced="clone")
    assert "--class was not used" in capsys.readouterr().err


def test_signals_are_recorded(env):
    check(env)
    (ch,) = changes(env)
    assert ch.smbios_uuid == "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
    assert ch.macs == ("52:54:00:12:34:56",) and ch.vm_guest == "kvm"
    assert ch.hostuuid and isinstance(ch.boot_time, int)


def test_every_unit_is_compared(env):
    write_kernel(env.root, [G2, G3])
    check(env)
    assert cache(env) == hexline(G2, G3) + "\ndone\n"
    set_guid(env.root, "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87", unit=1)
    check(env)
    ch = changes(env)[-1]
    assert ch.guids == hexline(G2, "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87")
    assert ch.new_text == G2 and ch.cls == "clone"


# -- boots: bhyve and cold clones ----------------------------------------------------------


def test_bhyve_ten_boots_are_platform_restarts_and_a_cold_clone_is_one_clone(env):
    smbios, macs = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d", {"vtnet0": "58:9c:fc:00:00:01"}
    write_kernel(env.root, vm_guest="bhyve", smbios_uuid=smbios, macs=macs)
    check(env, source="boot")
    for _ in range(10):  # bhyve: a new GUID at every start, same SMBIOS UUID and MACs
        write_kernel(env.root, [str(uuid.uuid4())], vm_guest="bhyve", smbios_uuid=smbios,
                     macs=macs)
        assert check(env, source="boot") == 0
    rows = changes(env)
    assert [c.cls for c in rows] == ["first-seen"] + ["platform-restart"] * 10
    names = [n for _, _, n in read_log(env.log)]
    assert "sshd_keys" not in names and "hostid" not in names
    assert names == ["entropy", "site"] * 10
    clone_guid = str(uuid.uuid4())
    write_kernel(env.root, [clone_guid], vm_guest="bhyve",
                 smbios_uuid=str(uuid.uuid4()), macs={"vtnet0": "58:9c:fc:00:00:99"})
    assert check(env, source="boot") == 0
    assert [c.cls for c in changes(env)].count("clone") == 1
    assert [n for g, _, n in read_log(env.log) if g == clone_guid] == CLONE_HOOKS


def test_manual_check_after_reboot_uses_boot_rules(env):
    set_boot_time(env.root, 1000)
    check(env)
    set_guid(env.root, G2)
    set_boot_time(env.root, 2000)
    check(env)
    assert changes(env)[-1].cls == "platform-restart"


# -- expect, dry run ------------------------------------------------------------------------


def test_expect(env, capsys):
    check(env)
    set_guid(env.root, G2)
    assert check(env, expect=Generation.parse(G3)) == exitcodes.EXPECT_FAILED
    assert f"the generation is {G2}, not {G3}" in capsys.readouterr().err
    assert check(env, expect=Generation.parse(G2)) == 0
    assert check(env, expect=Generation.parse(Generation.parse(G2).hex)) == 0


def test_dry_run_writes_nothing(env, capsys):
    assert check(env, dry_run=True) == 0
    assert "would record: (first seen) -> 324e6eaf" in capsys.readouterr().out
    assert not os.path.exists(env.paths.db)
    check(env)
    before = cache(env)
    set_guid(env.root, G2)
    check(env, dry_run=True)
    out = capsys.readouterr().out
    assert f"-> {G2} as clone" in out and "hooks: sshd_keys hostid entropy site" in out
    assert "  sshd_keys: would log to " in out
    assert len(changes(env)) == 1 and cache(env) == before and read_log(env.log) == []


# -- the database cannot be written ---------------------------------------------------------


def test_disk_full_hooks_still_run_and_the_next_run_records_without_rerunning(env, mocker,
                                                                               capsys):
    check(env)
    set_guid(env.root, G2)
    full = mocker.patch.object(History, "_insert_change",
                               side_effect=sqlite3.OperationalError("database or disk is full"))
    assert check(env) == exitcodes.STATE
    assert "database or disk is full" in capsys.readouterr().err
    assert read_log(env.log) == [(G2, "clone", n) for n in CLONE_HOOKS]
    assert not os.path.exists(env.paths.last_guid)
    assert os.path.exists(env.paths.journal)
    assert len(changes(env)) == 1
    mocker.stop(full)
    assert check(env) == 0
    ch = changes(env)[-1]
    assert (ch.new_text, ch.cls, ch.status) == (G2, "clone", "done")
    assert [r.status for r in ch.latest_hooks()] == ["ok"] * 4
    assert len(read_log(env.log)) == 4  # not run again
    assert cache(env) == hexline(G2) + "\ndone\n"
    assert not os.path.exists(env.paths.journal)


def test_database_turning_read_only_during_hooks(env, mocker):
    check(env)
    broken = []
    real = History._write

    @contextlib.contextmanager
    def write(self, what):
        if broken:
            raise HistoryWriteError(f"cannot record {what} in {self.path}: "
                                    "attempt to write a readonly database")
        with real(self, what) as c:
            yield c

    mocker.patch.object(History, "_write", write)

    def plan(config, cls):
        return [RecordingHook("a", env.log, action=lambda ctx: broken.append(1)),
                RecordingHook("b", env.log)]

    set_guid(env.root, G2)
    assert check(env, planner=plan) == exitcodes.STATE
    ch = changes(env)[-1]
    assert ch.status == "pending" and [(r.name, r.status) for r in ch.hooks] == [
        ("a", "running")]
    broken.clear()
    assert check(env, planner=plan) == 0
    ch = changes(env)[-1]
    assert ch.status == "done" and [(r.name, r.status) for r in ch.latest_hooks()] == [
        ("a", "ok"), ("b", "ok")]
    assert [n for _, _, n in read_log(env.log)] == ["a", "b"]


def test_while_still_unwritable_the_journal_stands_in_for_the_database(env, mocker):
    check(env)
    set_guid(env.root, G2)
    mocker.patch.object(History, "_insert_change",
                        side_effect=sqlite3.OperationalError("database or disk is full"))
    assert check(env) == exitcodes.STATE
    assert check(env) == exitcodes.STATE  # still full: nothing new, nothing rerun
    assert len(read_log(env.log)) == 4
    mocker.stopall()
    assert check(env) == 0 and len(read_log(env.log)) == 4
    assert [c.new_text for c in changes(env)][-1] == G2 and len(changes(env)) == 2


def test_when_even_the_journal_fails_the_next_run_handles_the_change_again(env, mocker,
                                                                          logged):
    check(env)
    set_guid(env.root, G2)
    mocker.patch.object(History, "_insert_change",
                        side_effect=sqlite3.OperationalError("database or disk is full"))
    mocker.patch.object(Journal, "append", side_effect=OSError(errno.ENOSPC, "No space left"))
    assert check(env) == exitcodes.STATE
    assert any("run its hooks again" in m for _, m in logged)
    mocker.stopall()
    assert check(env) == 0
    assert changes(env)[-1].status == "done"
    assert len(read_log(env.log)) == 8


def _journal(env):
    return Journal(env.paths.journal, env.paths.journal_fallback)


def test_degraded_the_change_is_journalled_pending_before_hooks_and_each_hook_as_it_ends(
        env, mocker):
    check(env)
    mocker.patch.object(History, "_insert_change",
                        side_effect=sqlite3.OperationalError("database or disk is full"))
    seen = []

    def look(ctx):
        seen.append([(c.status, [(r.name, r.status) for r in c.hooks])
                     for _, c in _journal(env).changes()])

    def plan(config, cls):
        return [RecordingHook(n, env.log, action=look) for n in ("a", "b", "c")]

    set_guid(env.root, G2)
    assert check(env, planner=plan) == exitcodes.STATE
    assert seen == [[("pending", [])],
                    [("pending", [("a", "ok")])],
                    [("pending", [("a", "ok"), ("b", "ok")])]]
    ((_, kept),) = _journal(env).changes()
    assert (kept.new_text, kept.status) == (G2, "done")
    assert [r.name for r in kept.hooks] == ["a", "b", "c"]


@pytest.mark.parametrize("next_run", ["writable", "still-full"])
def test_a_degraded_run_killed_between_hooks_is_resumed_without_the_finished_ones(
        env, mocker, next_run):
    check(env)
    full = mocker.patch.object(History, "_insert_change",
                               side_effect=sqlite3.OperationalError("database or disk is full"))
    plan = killed_at_b_once(env)
    set_guid(env.root, G2)
    with pytest.raises(Killed):
        check(env, planner=plan)
    ((_, kept),) = _journal(env).changes()
    assert kept.status == "pending" and [(r.name, r.status) for r in kept.hooks] == [
        ("a", "ok")]
    if next_run == "still-full":  # resumed from the journal alone
        assert check(env, planner=plan) == exitcodes.STATE
        assert [n for _, _, n in read_log(env.log)] == ["a", "b", "b", "c"]
        ((_, kept),) = _journal(env).changes()
        assert kept.status == "done"
        assert check(env, planner=plan) == exitcodes.STATE  # settled: nothing runs again
    mocker.stop(full)
    assert check(env, planner=plan) == 0
    assert [n for _, _, n in read_log(env.log)] == ["a", "b", "b", "c"]
    ch = changes(env)[-1]
    assert (ch.new_text, ch.status) == (G2, "done")
    assert [(r.name, r.attempt, r.status) for r in ch.hooks] == [
        ("a", 1, "ok"), ("b", 1, "ok"), ("c", 1, "ok")]
    assert not _journal(env).exists()
    assert check(env, planner=plan) == 0 and len(read_log(env.log)) == 4


def test_when_the_journal_beside_the_database_refuses_the_second_one_takes_it(env, mocker,
                                                                             logged):
    check(env)
    real = Journal._append_to

    def refuse_beside_the_db(self, path, data):
        if path == env.paths.journal:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real(self, path, data)

    ro = mocker.patch.object(Journal, "_append_to", refuse_beside_the_db)
    full = mocker.patch.object(History, "_insert_change",
                               side_effect=sqlite3.OperationalError("database or disk is full"))
    set_guid(env.root, G2)
    assert check(env) == exitcodes.STATE
    assert len(read_log(env.log)) == 4
    assert [(c.new_text, c.status) for _, c in Journal(env.paths.journal_fallback).changes()] \
        == [(G2, "done")]
    said = [m for _, m in logged if "what could not be recorded is kept in" in m]
    assert said == [f"cannot write {env.paths.journal} (Read-only file system): what could "
                    f"not be recorded is kept in {env.paths.journal_fallback}"]
    assert not os.path.exists(env.paths.journal)
    assert check(env) == exitcodes.STATE and len(read_log(env.log)) == 4  # read back too
    mocker.stop(ro)
    mocker.stop(full)
    assert check(env) == 0
    assert len(read_log(env.log)) == 4
    ch = changes(env)[-1]
    assert (ch.new_text, ch.status) == (G2, "done")
    assert [r.status for r in ch.latest_hooks()] == ["ok"] * 4
    assert not os.path.exists(env.paths.journal_fallback)
    assert any(f"kept in {env.paths.journal_fallback} while the database" in m
               for _, m in logged)


def test_unusable_database_is_exit_8_and_runs_nothing(env):
    os.makedirs(env.paths.dbdir, exist_ok=True)
    with open(env.paths.db, "wb") as f:
        f.write(b"garbage" * 1000)
    from vmgenc_tools.fastcheck import exit_code_for
    from vmgenc_tools.history import HistoryError

    with pytest.raises(HistoryError) as e:
        check(env)
    assert exit_code_for(e.value) == exitcodes.STATE
    assert read_log(env.log) == []


# -- logging ------------------------------------------------------------------------------


def test_log_lines_are_single_and_go_to_stderr_when_asked(capsys):
    log.set_stderr(True, prog="vmgenc")
    try:
        log.info("one\ntwo")
        log.warning("careful")
        log.debug("not on stderr")
    finally:
        log.set_stderr(None)
    assert capsys.readouterr().err == "vmgenc: one two\nvmgenc: warning: careful\n"


def test_not_a_tty_means_no_stderr(capsys):
    log.set_stderr(None)
    log.error("syslog only")
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError):
        log.set_level("loud")


# -- the bhyve preset of the reference model -------------------------------------------------


def test_bhyve_preset_ten_reboots_no_identity_hooks_then_one_cold_clone(tmp_path):
    """The simulated bhyve VM: a new GUID at every start, the same SMBIOS UUID and MACs."""
    from vmgenc_tools.reference.vm import SimulatedVM

    root = str(tmp_path / "bhyve")
    vm = SimulatedVM(root)
    vm.init("bhyve", ssh_keys=False)
    logfile = str(tmp_path / "hooks.log")
    cfg, plan = make_config(root), names_planner(logfile)

    def boot_check() -> int:
        return handler.check(root, source="boot", config=cfg, planner=plan)

    assert boot_check() == 0
    guids = []
    for _ in range(10):
        result = vm.reboot()
        assert result.changed  # a new GUID, and only the attach record: no change event
        assert not [r for r in result.records if "VMGenerationCounter" in r], result.records
        guids.append(vm.cached_guids()[0].text)
        assert boot_check() == 0
    h = History.open_readonly(cfg.db_path)
    rows = h.listing()
    h.close()
    assert [c.cls for c in rows] == ["first-seen"] + ["platform-restart"] * 10
    assert [c.new_text for c in rows[1:]] == guids and len(set(guids)) == 10
    assert all(c.source == "boot" and c.status == "done" for c in rows)
    names = [n for _, _, n in read_log(logfile)]
    assert "sshd_keys" not in names and "hostid" not in names
    assert names == ["entropy", "site"] * 10

    vm.cold_clone()
    vm.boot()
    assert boot_check() == 0
    h = History.open_readonly(cfg.db_path)
    rows = h.listing()
    h.close()
    assert [c.cls for c in rows].count("clone") == 1 and rows[-1].cls == "clone"
    assert "SMBIOS UUID changed" in (rows[-1].reason or "")
    assert [n for g, _, n in read_log(logfile) if g == rows[-1].new_text] == CLONE_HOOKS


# -- the last-guid cache as rc.d reads it ----------------------------------------------------


def test_last_guid_line_is_what_sysctl_x_dumps_and_rcd_sh_compares_it(env):
    """rc.d/vmgenc takes ``${out##*Dump:}`` of ``sysctl -x`` per unit and compares it in sh."""
    from vmgenc_tools.reference.sysctl import Sysctl8

    write_kernel(env.root, [G2, G3])
    check(env)
    with open(env.paths.last_guid, "rb") as f:
        raw = f.read()
    assert re.fullmatch(rb"0x[0-9a-f]{32} 0x[0-9a-f]{32}\ndone\n", raw), raw
    dumps = []
    for unit in (0, 1):
        res = Sysctl8(env.root, "x").run([f"dev.vmgenc.{unit}.guid"])
        assert res.status == 0
        dumps.append(res.stdout.decode())
    script = r'''
live=""
for out in "$@"; do live="${live}${live:+ }${out##*Dump:}"; done
live=$(printf '%s' "$live" | tr -d '\n')
{ read -r cached; read -r state; } < "$CACHE"
[ "$live" = "$cached" ] && [ "$state" = done ] && echo same
'''
    p = subprocess.run(["/bin/sh", "-c", script, "sh", *dumps], capture_output=True,
                       text=True, env=dict(os.environ, CACHE=env.paths.last_guid), timeout=30)
    assert p.stdout == "same\n", (dumps, raw, p.stderr)
    set_guid(env.root, G3, unit=0)  # the GUIDs moved: sh must see a difference
    dumps[0] = Sysctl8(env.root, "x").run(["dev.vmgenc.0.guid"]).stdout.decode()
    p = subprocess.run(["/bin/sh", "-c", script, "sh", *dumps], capture_output=True,
                       text=True, env=dict(os.environ, CACHE=env.paths.last_guid), timeout=30)
    assert p.stdout == ""


# -- a read-only file system under the database -------------------------------------------------

_RO_MOUNT = ('mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" || exit 99; '
             'shift; exec "$@"')
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _in_private_mounts(script: str, args: list[str], code: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` after /bin/sh ``script`` in a private mount namespace (or skip)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) for a private mount namespace")
    flags = "-m" if os.geteuid() == 0 else "-Urm"
    p = subprocess.run([unshare, flags, "/bin/sh", "-c", script, "sh", *args, sys.executable,
                        "-c", code], capture_output=True, text=True, timeout=120)
    if p.returncode == 99 or p.stderr.startswith("unshare:"):
        pytest.skip(f"cannot mount in a private namespace here: {p.stderr.strip()}")
    return p


def test_read_only_file_system_hooks_still_run_and_the_next_run_records(env):
    check(env)
    set_guid(env.root, G2)
    code = f"""
import sys
sys.path.insert(0, {TESTS_DIR!r})
from handler_hooks import make_config, names_planner
from vmgenc_tools import handler, status
cfg = make_config({env.root!r})
code = handler.check({env.root!r}, config=cfg, planner=names_planner({env.log!r}))
print("state", status.status({env.root!r}, config=cfg)["state"])
sys.exit(code)
"""
    p = _in_private_mounts(_RO_MOUNT, [env.paths.dbdir], code)
    assert p.returncode == exitcodes.STATE, p.stderr
    assert "read-only file system" in p.stderr and "the hooks ran" in p.stderr
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "state unrecorded" in p.stdout  # status still reads the database
    assert read_log(env.log) == [(G2, "clone", n) for n in CLONE_HOOKS]
    assert [c.new_text for c in changes(env)][-1] != G2
    # nothing could be written beside the database: the journal went to ${root}/var/run
    assert not os.path.exists(env.paths.journal)
    assert env.paths.journal_fallback.startswith(env.root + "/var/run/vmgenc/")
    kept = Journal(env.paths.journal_fallback).changes()
    assert [(c.new_text, c.status, [r.status for r in c.hooks]) for _, c in kept] == [
        (G2, "done", ["ok"] * 4)]
    # writable again: the next run records the change without running its hooks again
    assert check(env) == 0
    last = changes(env)[-1]
    assert (last.new_text, last.cls, last.status) == (G2, "clone", "done")
    assert [r.status for r in last.latest_hooks()] == ["ok"] * 4
    assert len(read_log(env.log)) == 4
    assert not os.path.exists(env.paths.journal_fallback)
    assert cache(env) == hexline(G2) + "\ndone\n"


def test_read_only_file_system_kill_9_after_the_first_hook_reruns_only_the_rest(env, tmp_path):
    """Real EROFS (no fakes): the journal goes to ${root}/var/run; SIGKILL while hook b runs."""
    check(env)
    set_guid(env.root, G2)
    gate = str(tmp_path / "gate")
    code = f"""
import os, signal, sys, time
sys.path.insert(0, {TESTS_DIR!r})
from handler_hooks import RecordingHook, make_config, read_log
from vmgenc_tools import handler
cfg = make_config({env.root!r})
def plan(config, cls):
    return [RecordingHook(n, {env.log!r}, gate={gate!r} if n == "b" else None) for n in "abcd"]
pid = os.fork()
if pid == 0:
    code = 70
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        code = handler.check({env.root!r}, config=cfg, planner=plan)
    finally:
        os._exit(code)
deadline = time.monotonic() + 30
while [n for _, _, n in read_log({env.log!r})] != ["a", "b"]:
    assert time.monotonic() < deadline, read_log({env.log!r})
    time.sleep(0.005)
os.kill(pid, signal.SIGKILL)
print("KILLED", os.waitpid(pid, 0)[1] & 0x7f == signal.SIGKILL)
"""
    p = _in_private_mounts(_RO_MOUNT, [env.paths.dbdir], code)
    assert p.returncode == 0 and "KILLED True" in p.stdout, p.stderr
    assert not os.path.exists(env.paths.journal)
    ((_, kept),) = Journal(env.paths.journal_fallback).changes()
    assert (kept.new_text, kept.status, [(r.name, r.status) for r in kept.hooks]) == (
        G2, "pending", [("a", "ok")])
    open(gate, "w").close()

    def plan(config, cls):
        return [RecordingHook(n, env.log) for n in "abcd"]

    assert check(env, planner=plan) == 0  # writable again: imports, resumes b, c, d only
    assert [n for _, _, n in read_log(env.log)] == ["a", "b", "b", "c", "d"]
    ch = changes(env)[-1]
    assert (ch.new_text, ch.status) == (G2, "done")
    assert [(r.name, r.status) for r in ch.hooks] == [(n, "ok") for n in "abcd"]
    assert not os.path.exists(env.paths.journal_fallback)


_FULL_TMPFS = (
    'd=$1; shift; save=$(mktemp -d) || exit 99; cp -a "$d"/. "$save"/ || exit 99; '
    'mount -t tmpfs -o size=256k,mode=0750 tmpfs "$d" || exit 99; '
    'cp -a "$save"/. "$d"/ && rm -rf "$save" || exit 98; '
    'dd if=/dev/zero of="$d/filler" bs=4096 2>/dev/null; '
    'size=$(wc -c < "$d/filler"); truncate -s $((size - $1)) "$d/filler" || exit 98; '
    'shift; exec "$@"')


@pytest.mark.parametrize("left", [0, 40960, 65536], ids=["full", "40k-left", "64k-left"])
def test_a_full_disk_still_runs_the_hooks_and_the_next_run_records(env, left):
    """A tiny tmpfs under the database, filled up: real ENOSPC from SQLite.

    Depending on what is left, SQLite fails at a different step (mapping its
    ``-shm`` file at open, committing the change, committing a hook's start);
    each must end the same way.
    """
    check(env)
    set_guid(env.root, G2)
    code = f"""
import json, os, sys
sys.path.insert(0, {TESTS_DIR!r})
from handler_hooks import make_config, names_planner, read_log
from vmgenc_tools import handler
from vmgenc_tools.history import History
cfg = make_config({env.root!r})
paths = handler.Paths.of(cfg)
first = handler.check({env.root!r}, config=cfg, planner=names_planner({env.log!r}))
ran = len(read_log({env.log!r}))
journal = [p for p in (paths.journal, paths.journal_fallback)
           if os.path.exists(p) and os.path.getsize(p) > 0]
print("NOTE first run done", file=sys.stderr, flush=True)
os.unlink(os.path.join(paths.dbdir, "filler"))
second = handler.check({env.root!r}, config=cfg, planner=names_planner({env.log!r}))
h = History.open_readonly(paths.db)
rows = [(c.new_text, c.cls, c.status, [r.status for r in c.latest_hooks()])
        for c in h.listing()]
print("RESULT", json.dumps(dict(first=first, ran=ran, journal=journal, second=second,
                                 rows=rows, integrity=h.integrity_ok(),
                                 cache=open(paths.last_guid).read())))
"""
    p = _in_private_mounts(_FULL_TMPFS, [env.paths.dbdir, str(left)], code)
    assert p.returncode == 0, p.stderr
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
    import json

    res = json.loads(line[7:])
    first_err = p.stderr.split("NOTE first run done")[0]
    assert res["first"] == exitcodes.STATE
    assert ("database or disk is full" in first_err
            or "(no space left on device)" in first_err), first_err
    assert "the hooks ran" in first_err
    assert res["ran"] == 4  # every clone hook ran although nothing could be recorded
    assert res["second"] == 0 and res["integrity"] is True
    assert res["rows"][-1] == [G2, "clone", "done", ["ok"] * 4]
    assert [r[0] for r in res["rows"]].count(G2) == 1
    assert res["cache"] == hexline(G2) + "\ndone\n"
    # what ran was kept in the journal: beside the database while a page was left for
    # it, otherwise in ${root}/var/run/vmgenc; so nothing ran twice
    assert res["journal"], p.stderr
    assert len(read_log(env.log)) == 4


# -- syslog: facility daemon, ident vmgenc; stderr only when interactive -----------------------

_DEV_TMPFS = 'mount -t tmpfs -o size=64k tmpfs /dev || exit 99; exec "$@"'


def test_syslog_gets_one_daemon_line_per_change_from_ident_vmgenc(env):
    """A private /dev with our own socket as /dev/log: what syslogd would receive."""
    check(env)
    set_guid(env.root, G2)
    code = f"""
import socket, sys
sys.path.insert(0, {TESTS_DIR!r})
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
s.setblocking(False)
from handler_hooks import make_config, names_planner
from vmgenc_tools import handler
cfg = make_config({env.root!r}, log_level="notice")
handler.check({env.root!r}, config=cfg, planner=names_planner({env.log!r}))
while True:
    try:
        print("DGRAM", repr(s.recv(8192)))
    except BlockingIOError:
        break
"""
    p = _in_private_mounts(_DEV_TMPFS, [], code)
    assert p.returncode == 0, p.stderr
    import ast

    datagrams = [ast.literal_eval(line[6:]).decode() for line in p.stdout.splitlines()
                 if line.startswith("DGRAM ")]
    assert datagrams, p.stderr
    for d in datagrams:  # <facility * 8 + severity>timestamp ident[pid]: message
        m = re.match(r"<(\d+)>\w{3} [ \d]\d \d\d:\d\d:\d\d vmgenc\[\d+\]: (.*)\Z", d)
        assert m, d
        assert int(m.group(1)) >> 3 == syslog.LOG_DAEMON >> 3
        assert int(m.group(1)) & 7 <= syslog.LOG_NOTICE  # vmgenc_log_level=notice
        assert "\n" not in m.group(2)
    first = Generation.parse("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87").text
    change = [d for d in datagrams if "generation change" in d]
    assert len(change) == 1
    assert f"{first} -> {G2} class clone" in change[0]
    assert int(change[0][1:].split(">")[0]) & 7 == syslog.LOG_NOTICE


def test_stderr_echo_only_when_stderr_is_a_terminal():
    code = "from vmgenc_tools import log; log.info('hello from the handler')"
    master, slave = os.openpty()
    try:
        p = subprocess.run([sys.executable, "-c", code], stderr=slave, stdout=subprocess.PIPE,
                           timeout=60)
        os.close(slave)
        slave = -1
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert p.returncode == 0
    assert out.replace(b"\r\n", b"\n") == b"vmgenc: hello from the handler\n"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert piped.returncode == 0 and piped.stderr == b""


# -- configuration problems the handler reports ----------------------------------------------


def test_an_unknown_knob_is_warned_about_and_ignored(env, logged):
    cfg = make_config(env.root, vmgenc_hook_timout="5")
    assert cfg.unknown == ("vmgenc_hook_timout",)
    assert handler.check(env.root, config=cfg, planner=env.plan) == 0
    assert any(level == "warning" and "$vmgenc_hook_timout" in m and "not a vmgenc knob" in m
               for level, m in logged)
