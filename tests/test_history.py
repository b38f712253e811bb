"""The history store: schema, modes, durability settings, queries, migrations, journal."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat

import pytest
from handler_hooks import CommitFails

from vmgenc_tools import history
from vmgenc_tools.history import (
    Change,
    History,
    HistoryError,
    HistoryWriteError,
    HookRun,
    Journal,
    utc_now,
)
from vmgenc_tools.hooks.base import HookResult

RAW_A = bytes(range(16))
RAW_B = bytes(range(16, 32))


def mkchange(raw: bytes = RAW_B, cls: str = "clone", status: str = "pending",
             detected_at: str | None = None, **kw: object) -> Change:
    return Change(detected_at=detected_at or utc_now(), source="manual", cls=cls,
                  status=status, new_raw=raw, new_text=raw.hex(), guids="0x" + raw.hex(),
                  old_raw=RAW_A, old_text=RAW_A.hex(), macs=("52:54:00:00:00:01",), **kw)


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "var" / "db" / "vmgenc" / "history.db")


def test_new_database_has_modes_wal_full_sync_and_schema(db):
    old = os.umask(0o077)
    try:
        h = History.open(db)
    finally:
        os.umask(old)
    with h:
        assert stat.S_IMODE(os.stat(os.path.dirname(db)).st_mode) == 0o750
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o640
        assert h.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert h.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert h.conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        assert h.integrity_ok()


def test_wal_and_shm_files_share_the_database_mode(db):
    old = os.umask(0o077)
    try:
        with History.open(db) as h:
            h.add_change(mkchange())
            side = [p for p in (db + "-wal", db + "-shm") if os.path.exists(p)]
            assert side  # WAL mode keeps them while a connection is open
            for p in side:
                assert stat.S_IMODE(os.stat(p).st_mode) == 0o640, p
    finally:
        os.umask(old)


def test_change_and_hook_runs_round_trip(db):
    with History.open(db) as h:
        cid = h.add_change(mkchange(smbios_uuid="u-1", boot_time=123, acpi_path="\\_SB_.VGEN",
                                    devd_timestamp="1700000000", reason="why"))
        run = h.start_hook(cid, "sshd_keys")
        assert run.status == "running" and run.attempt == 1
        h.finish_hook(run, HookResult("sshd_keys", "ok", 0, 0.25, "x" * 10000))
        h.add_hook_result(cid, HookResult("site", "skipped", None, 0.0, "not run"))
        h.set_status(cid, "done")
        ch = h.get(cid)
    assert ch is not None and ch.status == "done" and ch.settled_at
    d = ch.as_dict()
    assert d["id"] == cid and d["class"] == "clone" and d["source"] == "manual"
    assert d["old_guid"] == RAW_A.hex() and d["new_guid"] == RAW_B.hex()
    assert d["signals"]["smbios_uuid"] == "u-1" and d["signals"]["boot_time"] == 123
    assert d["signals"]["macs"] == ["52:54:00:00:00:01"]
    assert d["devd"] == {"acpi_path": "\\_SB_.VGEN", "timestamp": "1700000000"}
    assert [(x["name"], x["status"], x["exit_code"]) for x in d["hooks"]] == [
        ("sshd_keys", "ok", 0), ("site", "skipped", None)]
    assert len(ch.hooks[0].output) == history.OUTPUT_TAIL  # the tail only
    assert d["detected_at"].endswith("+00:00")


def test_output_keeps_the_last_whole_lines(db):
    lines = [f"line {i:05d}" for i in range(2000)]
    with History.open(db) as h:
        cid = h.add_change(mkchange())
        h.finish_hook(h.start_hook(cid, "chatty"),
                      HookResult("chatty", "failed", 1, 0.1, "\n".join(lines) + "\n"))
        (run,) = h.get(cid).hooks
    assert len(run.output) <= history.OUTPUT_TAIL
    kept = run.output.splitlines()
    assert kept[-1] == "line 01999" and kept[0] in lines  # no half line at the start
    assert kept == lines[-len(kept):]
    assert len(run.output) > history.OUTPUT_TAIL - len(lines[0]) - 2  # no more cut than that


def test_status_values_are_constrained(db):
    with History.open(db) as h:
        with pytest.raises(HistoryWriteError):
            h.add_change(mkchange(status="weird"))
        with pytest.raises(ValueError):
            h.set_status(1, "weird")


def test_latest_hooks_takes_last_attempt_in_first_run_order(db):
    with History.open(db) as h:
        cid = h.add_change(mkchange())
        for name, status in (("a", "failed"), ("b", "ok"), ("a", "ok")):
            h.finish_hook(h.start_hook(cid, name), HookResult(name, status, 0, 0.1))
        ch = h.get(cid)
    assert [(r.name, r.status, r.attempt) for r in ch.latest_hooks()] == [
        ("a", "ok", 2), ("b", "ok", 1)]
    assert ch.ok_names() == {"a", "b"}


def test_interrupted_attempts_become_failed(db):
    with History.open(db) as h:
        cid = h.add_change(mkchange())
        h.start_hook(cid, "hostid")
        assert h.mark_interrupted(cid) == 1
        (run,) = h.get(cid).hooks
    assert run.status == "failed" and "interrupted" in run.output and run.finished_at


def test_queries_last_since_pending_and_counts(db):
    with History.open(db) as h:
        ids = [h.add_change(mkchange(bytes([i]) * 16, cls=c, status=s,
                                     detected_at=f"2024-01-0{i + 1}T00:00:00.000000+00:00"))
               for i, (c, s) in enumerate([("first-seen", "done"), ("clone", "failed"),
                                           ("no-id", "done"), ("restore", "pending"),
                                           ("clone", "pending")])]
        assert [c.id for c in h.listing()] == ids
        assert [c.id for c in h.listing(last=2)] == ids[-2:]
        assert [c.id for c in h.listing(since="2024-01-04T00:00:00.000000+00:00")] == ids[3:]
        assert [c.id for c in h.listing(last=1, since="2024-01-02")] == ids[-1:]
        assert h.last_change().id == ids[-1]
        assert h.last_change(real_only=True).id == ids[-1]
        assert [c.id for c in h.pending()] == ids[3:]
        assert h.class_counts() == {"first-seen": 1, "clone": 2, "no-id": 1, "restore": 1}
        h.set_status(ids[4], "done")
        h.set_status(ids[3], "done")
        assert h.pending() == []


def test_last_real_change_skips_no_id_rows(db):
    with History.open(db) as h:
        a = h.add_change(mkchange(cls="first-seen", status="done"))
        h.add_change(mkchange(bytes(16), cls="no-id", status="done"))
        assert h.last_change().cls == "no-id"
        assert h.last_change(real_only=True).id == a


def _count_steps(conn: sqlite3.Connection, fn) -> int:
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(tick, 1)
    try:
        fn()
    finally:
        conn.set_progress_handler(None, 1)
    return steps[0]


def _fill(h: History, n: int) -> None:
    rows = [(f"2024-01-01T00:00:{i // 1000000:02d}.{i % 1000000:06d}+00:00", "boot",
             "platform-restart", "done", RAW_A, "a", i.to_bytes(16, "big"), "b", "0x00", "")
            for i in range(n)]
    with h.conn:
        h.conn.execute("BEGIN")
        h.conn.executemany(
            "INSERT INTO changes (detected_at, source, class, status, old_raw, old_text, "
            "new_raw, new_text, guids, macs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        h.conn.execute("COMMIT")


def test_queries_cost_the_same_at_10_and_100000_rows(tmp_path):
    """SQLite VM steps, not time: last N, pending, last change, counts, a recent --since."""
    small = History.open(str(tmp_path / "s" / "h.db"))
    big = History.open(str(tmp_path / "b" / "h.db"))
    _fill(small, 10)
    _fill(big, 100_000)
    for h in (small, big):
        h.add_change(mkchange(status="pending"))
    costs = {}
    for label, h in (("small", small), ("big", big)):
        costs[label] = (
            _count_steps(h.conn, lambda h=h: h.listing(last=5)),
            _count_steps(h.conn, lambda h=h: h.pending()),
            _count_steps(h.conn, lambda h=h: h.last_change()),
            _count_steps(h.conn, lambda h=h: h.last_change(real_only=True)),
            _count_steps(h.conn, lambda h=h: h.class_counts()),
            _count_steps(h.conn, lambda h=h: h.listing(since="2024-01-02")),
        )
    assert [len(c.hooks) for c in big.listing(last=5)] == [0] * 5
    for s, b in zip(costs["small"], costs["big"]):
        assert b <= s + 20, costs
    small.close()
    big.close()


def _plans(h: History, fn) -> list[tuple[str, list[str]]]:
    """Every statement ``fn`` runs, with SQLite's query plan for it."""
    sqls: list[str] = []
    h.conn.set_trace_callback(sqls.append)
    try:
        fn()
    finally:
        h.conn.set_trace_callback(None)
    out = []
    for sql in sqls:
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE")):
            plan = [row[3] for row in h.conn.execute("EXPLAIN QUERY PLAN " + sql)]
            out.append((sql, plan))
    return out


def test_query_plans_use_indexes_and_never_sort_the_whole_table(tmp_path):
    """EXPLAIN QUERY PLAN of every statement the queries and hook bookkeeping run.

    A table is only ever walked in rowid order from the newest row with a LIMIT
    (that stops after N rows); everything else is an index or key search.
    """
    h = History.open(str(tmp_path / "h.db"))
    _fill(h, 1000)
    cid = h.add_change(mkchange(status="pending"))
    run = h.start_hook(cid, "a")
    calls = {
        "last N": lambda: h.listing(last=5),
        "since": lambda: h.listing(since="2024-01-01T00:00:00.000500+00:00"),
        "last change": h.last_change,
        "last real change": lambda: h.last_change(real_only=True),
        "pending": h.pending,
        "one change": lambda: h.get(cid),
        "hook attempt": lambda: h.start_hook(cid, "b"),
        "hook result": lambda: h.finish_hook(run, HookResult("a", "ok", 0, 0.1)),
        "interrupted": lambda: h.mark_interrupted(cid),
    }
    for label, fn in calls.items():
        plans = _plans(h, fn)
        assert plans, label
        for sql, plan in plans:
            text = " | ".join(plan)
            for step in plan:
                if step.startswith("SCAN") and "USING" not in step:
                    assert "class_counts" in step or (
                        "ORDER BY id DESC LIMIT" in sql and "TEMP B-TREE" not in text
                    ), (label, sql, plan)
            if "FROM changes" in sql and "TEMP B-TREE" in text:
                # only a --since window is sorted, and it is found through its index
                assert "USING INDEX changes_detected_at" in text, (label, sql, plan)
    (since_sql, since_plan), *_ = _plans(h, lambda: h.listing(since="2024-01-02"))
    assert any("SEARCH changes USING INDEX changes_detected_at" in p for p in since_plan)
    (pending_sql, pending_plan), *_ = _plans(h, h.pending)
    assert pending_plan == ["SCAN changes USING INDEX changes_pending"]
    h.close()


def test_future_schema_is_refused(db):
    History.open(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {history.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(HistoryError, match="newer"):
        History.open(db)
    with pytest.raises(HistoryError, match="newer"):
        History.open_readonly(db)


def test_forward_migration_keeps_rows(db, monkeypatch):
    with History.open(db) as h:
        cid = h.add_change(mkchange())
    extra = ["ALTER TABLE changes ADD COLUMN note TEXT",
             "UPDATE changes SET note = 'migrated'"]
    monkeypatch.setattr(history, "MIGRATIONS", history.MIGRATIONS + [extra])
    monkeypatch.setattr(history, "SCHEMA_VERSION", len(history.MIGRATIONS))
    # a reader does not migrate; it says how to
    with pytest.raises(HistoryError, match="vmgenctl check"):
        History.open_readonly(db)
    with History.open(db) as h:
        assert h.conn.execute("PRAGMA user_version").fetchone()[0] == history.SCHEMA_VERSION
        assert h.conn.execute("SELECT note FROM changes WHERE id = ?", (cid,)).fetchone() == (
            "migrated",)
        assert h.get(cid).new_raw == RAW_B


def test_garbage_file_is_unusable_with_a_hint(db):
    os.makedirs(os.path.dirname(db))
    with open(db, "wb") as f:
        f.write(b"this is not a database" * 100)
    with pytest.raises(HistoryError, match="move it aside"):
        History.open(db)
    with pytest.raises(HistoryError, match="move it aside"):
        History.open_readonly(db)


def test_readonly_open(db):
    assert History.open_readonly(db) is None
    with History.open(db) as h:
        h.add_change(mkchange())
    ro = History.open_readonly(db)
    assert ro is not None and ro.last_change() is not None
    with pytest.raises(HistoryWriteError):
        ro.add_change(mkchange())
    ro.close()


def test_journal_import_is_idempotent_and_ignores_torn_lines(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    ch = mkchange(status="done", settled_at=utc_now())
    ch.hooks = [HookRun(0, "entropy", 1, "ok", 0, 0.1, "out", utc_now(), utc_now())]
    j.append_change(ch)
    with open(j.path) as f:
        saved = f.read()
    with open(j.path, "a") as f:
        f.write('{"kind": "change", "change": {"trunc')  # a crash mid-append
    with History.open(db) as h:
        assert h.import_journal(j) == 1
        assert not os.path.exists(j.path)
        # a crash between COMMIT and unlink leaves the file: importing again changes nothing
        with open(j.path, "w") as f:
            f.write(saved)
        assert h.import_journal(j) == 0
        (got,) = h.listing()
        assert got.status == "done" and [(r.name, r.status) for r in got.hooks] == [
            ("entropy", "ok")]


def test_journal_hook_results_settle_a_recorded_change(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    with History.open(db) as h:
        cid = h.add_change(mkchange())
        h.start_hook(cid, "a")  # left running when the database stopped taking writes
        j.append_hooks(cid, [HookRun(cid, "a", 1, "ok", 0, 0.1, "", utc_now(), utc_now())],
                       "done")
        assert j.ok_names(cid) == {"a"}
        h.import_journal(j)
        ch = h.get(cid)
    assert ch.status == "done"
    assert [(r.status, r.attempt) for r in ch.hooks] == [("failed", 1), ("ok", 1)]
    assert [r.status for r in ch.latest_hooks()] == ["ok"]


def test_a_change_whose_commit_fails_has_no_id_and_no_row(db, mocker):
    with History.open(db) as h:
        mocker.patch.object(h, "conn", CommitFails(h.conn))
        ch = mkchange()
        with pytest.raises(HistoryWriteError, match="disk is full"):
            h.add_change(ch)
        assert ch.id is None  # the handler relies on it: not recorded, keep it elsewhere
        mocker.stopall()
        assert h.listing() == [] and h.class_counts() == {}
        assert h.add_change(ch) == ch.id == 1


def test_journal_appends_stay_whole_lines(tmp_path, mocker):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    j.append_change(mkchange(status="done"))
    with open(j.path, "a") as f:
        f.write('{"kind": "change", "chan')  # torn by a crash: no newline
    j.append_change(mkchange(RAW_A, status="done"))
    assert [e["change"]["new_raw"] for e in j.read()] == [RAW_B.hex(), RAW_A.hex()]
    size = os.path.getsize(j.path)
    real = os.write

    def short_then_full(fd, data):  # half the entry goes out, then the disk is full
        if data.startswith(b"{") and len(data) > 8:
            real(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    mocker.patch("os.write", side_effect=short_then_full)
    with pytest.raises(OSError):
        j.append_change(mkchange(status="done"))
    mocker.stopall()
    assert os.path.getsize(j.path) == size  # taken back
    j.append_change(mkchange(bytes(16), status="done"))
    assert [e["change"]["new_raw"] for e in j.read()] == [
        RAW_B.hex(), RAW_A.hex(), bytes(16).hex()]


def test_an_empty_journal_is_removed_on_import(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    open(j.path, "w").close()  # what a failed, taken-back append leaves
    with History.open(db) as h:
        assert h.import_journal(j) == 0
    assert not os.path.exists(j.path)


def _run(name: str, status: str = "ok", attempt: int = 1) -> HookRun:
    return HookRun(0, name, attempt, status, 0, 0.1, "", utc_now(), utc_now())


def _two(tmp_path) -> Journal:
    """The handler's pair: beside the database, and ${root}/var/run/vmgenc (not made yet)."""
    return Journal(str(tmp_path / "var" / "db" / "vmgenc" / "unrecorded.jsonl"),
                   str(tmp_path / "var" / "run" / "vmgenc" / "unrecorded.jsonl"))


def test_a_journal_change_pending_with_hooks_as_they_end_imports_pending(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    ref = j.append_change(mkchange())  # pending, before the first hook
    j.append_hooks(ref, [_run("a")], None)  # a ended; then the run was killed
    ((token, kept),) = j.changes()
    assert token == ref and kept.status == "pending"
    assert [r.name for r in kept.hooks] == ["a"] and j.ok_names(ref) == {"a"}
    with History.open(db) as h:
        assert h.import_journal(j) == 2
        (ch,) = h.pending()
    assert [(r.name, r.status) for r in ch.hooks] == [("a", "ok")]
    assert ch.ok_names() == {"a"}  # the handler resumes b, c...: not a


def test_a_journal_change_settled_by_ref_imports_settled(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    ref = j.append_change(mkchange())
    j.append_hooks(ref, [_run("a")], None)
    j.append_hooks(ref, [_run("b", "failed")], None)
    j.append_hooks(ref, [], "failed")
    assert [c.status for _, c in j.changes()] == ["failed"]
    with History.open(db) as h:
        assert h.import_journal(j) == 4
        (ch,) = h.listing()
    assert ch.status == "failed" and ch.settled_at
    assert [(r.name, r.status) for r in ch.hooks] == [("a", "ok"), ("b", "failed")]


def test_journal_settling_a_recorded_change_is_seen_before_import(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    j.append_hooks(7, [_run("a")], None)
    assert j.settled() == {} and j.ok_names(7) == {"a"}
    j.append_hooks(7, [], "done")
    assert j.settled() == {7: "done"} and j.changes() == []


def test_the_second_journal_takes_what_the_first_refuses_and_both_are_read(tmp_path):
    j = _two(tmp_path)  # the first one's directory does not exist: ENOENT
    ref = j.append_change(mkchange())
    assert j.used == j.fallback and os.path.exists(j.fallback)
    assert j.errors[j.path].errno == errno.ENOENT
    assert stat.S_IMODE(os.stat(j.fallback).st_mode) == 0o640
    os.makedirs(os.path.dirname(j.path))
    j.append_hooks(ref, [_run("a")], None)  # sticks to the file that took the last entry
    assert not os.path.exists(j.path)
    j.used = None  # a new run: the one beside the database first again
    j.append_hooks(ref, [_run("b")], None)
    assert os.path.exists(j.path) and j.used == j.path
    ((_, kept),) = j.changes()  # read across both files, in append order
    assert [r.name for r in kept.hooks] == ["a", "b"]
    assert j.ok_names(ref) == {"a", "b"}
    assert [e["kind"] for e in Journal(j.fallback).read()] == ["change", "hooks"]
    j.remove()
    assert not j.exists()


def test_a_clock_stepped_back_does_not_orphan_a_hooks_entry(db, tmp_path, mocker):
    """The change in the second file, its hooks entry in the first with an earlier ``at``
    (the clock was stepped back between the runs): the hook still counts, and imports."""
    j = _two(tmp_path)
    mocker.patch("vmgenc_tools.history.utc_now", return_value="2026-12-04T10:00:00+00:00")
    ref = j.append_change(mkchange())  # the first's directory is missing: the second takes it
    os.makedirs(os.path.dirname(j.path))
    j.used = None
    mocker.patch("vmgenc_tools.history.utc_now", return_value="2026-12-04T09:00:00+00:00")
    j.append_hooks(ref, [_run("a")], None)
    mocker.stopall()
    assert j.used == j.path
    assert [e["kind"] for e in j.read()] == ["hooks", "change"]  # as the clock has it
    ((_, kept),) = j.changes()
    assert [r.name for r in kept.hooks] == ["a"] and j.ok_names(ref) == {"a"}
    with History.open(db) as h:
        assert h.import_journal(j) == 2
        (ch,) = h.pending()
    assert ch.ok_names() == {"a"}


def test_when_both_journals_refuse_the_first_ones_error_is_raised(tmp_path):
    j = _two(tmp_path)
    open(tmp_path / "var", "w").close()  # neither directory can be made
    with pytest.raises(OSError) as e:
        j.append_change(mkchange())
    assert e.value.filename == j.path
    assert set(j.errors) == {j.path, j.fallback} and j.used is None


def test_import_reads_both_journals_in_one_transaction(db, tmp_path):
    j = _two(tmp_path)
    os.makedirs(os.path.dirname(j.path))
    ref = j.append_change(mkchange())
    j.append_hooks(ref, [_run("a")], None)
    j.used = j.fallback  # as if the first had refused the rest
    j.append_hooks(ref, [_run("b")], None)
    j.append_hooks(ref, [], "done")
    assert os.path.exists(j.fallback)
    with History.open(db) as h:
        assert h.import_journal(j) == 4
        (ch,) = h.listing()
    assert ch.status == "done" and [r.name for r in ch.hooks] == ["a", "b"]
    assert not os.path.exists(j.path) and not os.path.exists(j.fallback)


def test_an_entry_added_after_an_import_whose_file_outlived_it_finds_its_change(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    ref = j.append_change(mkchange())
    j.append_hooks(ref, [_run("a")], None)
    with open(j.path) as f:
        saved = f.read()
    with History.open(db) as h:
        assert h.import_journal(j) == 2
        with open(j.path, "w") as f:  # the unlink after COMMIT never happened
            f.write(saved)
        j.append_hooks(ref, [_run("b")], "done")
        assert h.import_journal(j) == 1
        (ch,) = h.listing()
    assert ch.status == "done" and [r.name for r in ch.hooks] == ["a", "b"]


def test_hook_results_for_a_change_the_database_lacks_are_dropped_not_fatal(db, tmp_path):
    j = Journal(str(tmp_path / "unrecorded.jsonl"))
    j.append_hooks(42, [_run("a")], "done")  # the database was moved aside meanwhile
    j.append_hooks("no-such-token", [_run("b")], "done")  # its change line was torn
    with History.open(db) as h:
        assert h.import_journal(j) == 2
        assert h.listing() == []
