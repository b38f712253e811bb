"""The history store: one SQLite database of changes and hook runs.

``${root}${vmgenc_dbdir}/history.db`` (directory 0750, file 0640), WAL mode,
``synchronous=FULL`` so a committed row survives power loss.  The schema
version is ``PRAGMA user_version``; :data:`MIGRATIONS` moves an older file
forward, one step per version, each in its own transaction.  A file from a
newer release is refused rather than guessed at.

Tables:

- ``changes``: one row per change (or per all-zero "no-id" warning), with the
  GUIDs of every unit, the class, ``pending|done|failed`` and the secondary
  signals the classifier saw;
- ``hook_runs``: one row per attempt of one hook for one change.  The row is
  committed as ``running`` *before* the hook starts and finished after, so an
  interrupted attempt is visible as such (the next run marks it failed and
  resumes) and a hook recorded ``ok`` is never run again for that change;
- ``class_counts``: changes per class, kept in the same transaction as the
  insert (metrics read it in O(1));
- ``imported``: tokens of fallback-journal entries already imported.

When the database cannot be written (disk full, read-only) the handler still
runs the hooks and appends what happened to a small fallback journal
(:class:`Journal`, ``unrecorded.jsonl`` beside the database, or in
``${root}/var/run/vmgenc/`` when that cannot be written either): the change as
``pending`` before its first hook, each hook's result as it ends.  The next run
imports both files, so the change is recorded and a hook that finished ``ok``
is not run again.  The second file outlives a killed run, not a reboot:
``rc.d/cleanvar`` empties ``/var/run`` at boot, before the boot check, so
after a power loss the hooks it alone held run again (idempotent hooks are
the rule, vmgenc-hooks(5)).

Every query that lists changes is bounded by an index: the last N rows cost
the same at ten rows and at a million.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator

from .hooks.atomic import fsync_dir
from .hooks.base import HookResult
from .plain import Plain

DB_NAME = "history.db"
JOURNAL_NAME = "unrecorded.jsonl"
DIR_MODE = 0o750
DB_MODE = 0o640
CHANGE_STATUSES = ("pending", "done", "failed")
RUN_STATUSES = ("running", "ok", "failed", "timeout", "skipped", "refused")
NO_ID = "no-id"
OUTPUT_TAIL = 4096

MIGRATIONS: list[list[str]] = [
    # version 1
    [
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            detected_at TEXT NOT NULL,
            settled_at TEXT,
            source TEXT NOT NULL,
            class TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
            old_raw BLOB,
            old_text TEXT,
            new_raw BLOB NOT NULL,
            new_text TEXT NOT NULL,
            guids TEXT NOT NULL,
            smbios_uuid TEXT,
            hostuuid TEXT,
            macs TEXT NOT NULL DEFAULT '',
            vm_guest TEXT,
            boot_time INTEGER,
            acpi_path TEXT,
            devd_timestamp TEXT,
            forced TEXT,
            intent_sig TEXT,
            reason TEXT,
            warning TEXT
        )""",
        "CREATE INDEX changes_detected_at ON changes(detected_at)",
        "CREATE INDEX changes_pending ON changes(id) WHERE status = 'pending'",
        """CREATE TABLE hook_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            change_id INTEGER NOT NULL REFERENCES changes(id),
            name TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN
                ('running', 'ok', 'failed', 'timeout', 'skipped', 'refused')),
            exit_code INTEGER,
            duration_s REAL,
            output TEXT NOT NULL DEFAULT '',
            started_at TEXT NOT NULL,
            finished_at TEXT
        )""",
        "CREATE INDEX hook_runs_change ON hook_runs(change_id, name, attempt)",
        "CREATE TABLE class_counts (class TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE imported (token TEXT PRIMARY KEY) WITHOUT ROWID",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


class HistoryError(RuntimeError):
    """The history database is unusable (exit 8); the message says how to recover."""


class HistoryWriteError(HistoryError):
    """A write failed (disk full, read-only file system or file): hooks still run."""


def utc_now() -> str:
    """Now as UTC ISO-8601 with microseconds: fixed width, so text order is time order.

    (``datetime.now(timezone.utc).isoformat(timespec="microseconds")``, without
    importing datetime on the devd path.)
    """
    sec, ns = divmod(time.time_ns(), 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{ns // 1000:06d}+00:00"


class HookRun(Plain):
    """One attempt of one hook for one change."""

    change_id: int
    name: str
    attempt: int
    status: str
    exit_code: int | None
    duration_s: float | None
    output: str
    started_at: str
    finished_at: str | None
    id: int | None

    def __init__(self, change_id: int, name: str, attempt: int, status: str,
                 exit_code: int | None = None, duration_s: float | None = None,
                 output: str = "", started_at: str = "", finished_at: str | None = None,
                 id: int | None = None) -> None:
        self.change_id = change_id
        self.name = name
        self.attempt = attempt
        self.status = status
        self.exit_code = exit_code
        self.duration_s = duration_s
        self.output = output
        self.started_at = started_at
        self.finished_at = finished_at
        self.id = id

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "status": self.status, "exit_code": self.exit_code,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
            "attempt": self.attempt, "output": self.output,
        }


class Change(Plain):
    """One recorded change (``id`` is None until stored)."""

    detected_at: str
    source: str
    cls: str
    status: str
    new_raw: bytes
    new_text: str
    guids: str
    old_raw: bytes | None
    old_text: str | None
    smbios_uuid: str | None
    hostuuid: str | None
    macs: tuple[str, ...]
    vm_guest: str | None
    boot_time: int | None
    acpi_path: str | None
    devd_timestamp: str | None
    forced: str | None
    intent_sig: str | None
    reason: str | None
    warning: str | None
    settled_at: str | None
    id: int | None
    hooks: list[HookRun]

    def __init__(self, detected_at: str, source: str, cls: str, status: str, new_raw: bytes,
                 new_text: str, guids: str, old_raw: bytes | None = None,
                 old_text: str | None = None, smbios_uuid: str | None = None,
                 hostuuid: str | None = None, macs: tuple[str, ...] = (),
                 vm_guest: str | None = None, boot_time: int | None = None,
                 acpi_path: str | None = None, devd_timestamp: str | None = None,
                 forced: str | None = None, intent_sig: str | None = None,
                 reason: str | None = None, warning: str | None = None,
                 settled_at: str | None = None, id: int | None = None,
                 hooks: list[HookRun] | None = None) -> None:
        self.detected_at = detected_at
        self.source = source
        self.cls = cls
        self.status = status
        self.new_raw = new_raw
        self.new_text = new_text
        self.guids = guids
        self.old_raw = old_raw
        self.old_text = old_text
        self.smbios_uuid = smbios_uuid
        self.hostuuid = hostuuid
        self.macs = macs
        self.vm_guest = vm_guest
        self.boot_time = boot_time
        self.acpi_path = acpi_path
        self.devd_timestamp = devd_timestamp
        self.forced = forced
        self.intent_sig = intent_sig
        self.reason = reason
        self.warning = warning
        self.settled_at = settled_at
        self.id = id
        self.hooks = [] if hooks is None else hooks

    @property
    def is_no_id(self) -> bool:
        return self.cls == NO_ID

    def latest_hooks(self) -> list[HookRun]:
        """The last attempt of each hook, in the order the hooks first ran."""
        last: dict[str, HookRun] = {}
        order: dict[str, int] = {}
        for run in self.hooks:
            order.setdefault(run.name, len(order))
            if run.name not in last or run.attempt >= last[run.name].attempt:
                last[run.name] = run
        return sorted(last.values(), key=lambda r: order[r.name])

    def ok_names(self) -> set[str]:
        return {r.name for r in self.hooks if r.status == "ok"}

    def as_dict(self) -> dict[str, object]:
        """The JSON record of design §3 (plus the signals and details)."""
        return {
            "id": self.id,
            "detected_at": self.detected_at,
            "source": self.source,
            "old_guid": self.old_text,
            "new_guid": self.new_text,
            "class": self.cls,
            "status": self.status,
            "hooks": [r.as_dict() for r in self.latest_hooks()],
            "old_guid_hex": None if self.old_raw is None else "0x" + self.old_raw.hex(),
            "new_guid_hex": "0x" + self.new_raw.hex(),
            "guids_hex": self.guids.split(),
            "settled_at": self.settled_at,
            "signals": {
                "smbios_uuid": self.smbios_uuid, "hostuuid": self.hostuuid,
                "macs": list(self.macs), "vm_guest": self.vm_guest, "boot_time": self.boot_time,
            },
            "devd": (None if self.acpi_path is None and self.devd_timestamp is None
                     else {"acpi_path": self.acpi_path, "timestamp": self.devd_timestamp}),
            "forced": self.forced,
            "reason": self.reason,
            "warning": self.warning,
        }


_CHANGE_COLS = (
    "id", "detected_at", "settled_at", "source", "class", "status", "old_raw", "old_text",
    "new_raw", "new_text", "guids", "smbios_uuid", "hostuuid", "macs", "vm_guest", "boot_time",
    "acpi_path", "devd_timestamp", "forced", "intent_sig", "reason", "warning",
)
_RUN_COLS = ("id", "change_id", "name", "attempt", "status", "exit_code", "duration_s",
             "output", "started_at", "finished_at")
_SELECT_CHANGE = f"SELECT {', '.join(_CHANGE_COLS)} FROM changes"
_SELECT_RUN = f"SELECT {', '.join(_RUN_COLS)} FROM hook_runs"


def _change_from_row(row: tuple) -> Change:
    d = dict(zip(_CHANGE_COLS, row))
    return Change(
        id=d["id"], detected_at=d["detected_at"], settled_at=d["settled_at"],
        source=d["source"], cls=d["class"], status=d["status"],
        old_raw=None if d["old_raw"] is None else bytes(d["old_raw"]), old_text=d["old_text"],
        new_raw=bytes(d["new_raw"]), new_text=d["new_text"], guids=d["guids"],
        smbios_uuid=d["smbios_uuid"], hostuuid=d["hostuuid"],
        macs=tuple(d["macs"].split()), vm_guest=d["vm_guest"], boot_time=d["boot_time"],
        acpi_path=d["acpi_path"], devd_timestamp=d["devd_timestamp"], forced=d["forced"],
        intent_sig=d["intent_sig"], reason=d["reason"], warning=d["warning"],
    )


def _run_from_row(row: tuple) -> HookRun:
    d = dict(zip(_RUN_COLS, row))
    return HookRun(**d)


def _tail(text: str) -> str:
    """The last lines of ``text`` that fit in :data:`OUTPUT_TAIL` characters.

    The cut falls on a line boundary when the kept part has one, so the stored
    output never starts with half a line.
    """
    if len(text) <= OUTPUT_TAIL:
        return text
    kept = text[-OUTPUT_TAIL:]
    if text[-OUTPUT_TAIL - 1] == "\n":
        return kept
    nl = kept.find("\n")
    return kept[nl + 1:] if 0 <= nl < len(kept) - 1 else kept


_WRITE_FAILURES = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_READONLY", "SQLITE_CANTOPEN")
_WRITE_FAILURE_TEXT = ("disk is full", "disk i/o error", "readonly database",
                       "unable to open database file")


def cannot_write(e: sqlite3.Error) -> bool:
    """The file system refused (full, I/O error, read-only), as opposed to a damaged file."""
    name = getattr(e, "sqlite_errorname", None)
    if name:
        return str(name).startswith(_WRITE_FAILURES)
    return any(t in str(e).lower() for t in _WRITE_FAILURE_TEXT)


def fs_hint(path: str) -> str:
    """`` (no space left on device)`` or `` (read-only file system)`` when that is why."""
    try:
        st = os.statvfs(path)
    except OSError:
        return ""
    if st.f_flag & os.ST_RDONLY:
        return " (read-only file system)"
    if st.f_bavail == 0:
        return " (no space left on device)"
    return ""


def read_only_fs(path: str) -> bool:
    """True if ``path`` (a directory) is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def ensure_dir(path: str) -> None:
    """Create ``path`` (mode 0750) if missing."""
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, mode=DIR_MODE)
        os.chmod(path, DIR_MODE)
    except FileExistsError:
        pass
    except OSError as e:
        raise HistoryError(f"cannot create {path}: {e.strerror} (run as root, or set "
                           "vmgenc_dbdir to a writable directory)") from None


class History:
    """An open history database (read-write unless opened with :meth:`open_readonly`)."""

    def __init__(self, conn: sqlite3.Connection, path: str, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str) -> History:
        """Open (creating directory and file with their modes) and migrate.

        On a file system mounted read-only an existing database raises
        :class:`HistoryWriteError` (the caller may go on degraded, reading it
        with :meth:`open_readonly`); a missing one is a :class:`HistoryError`.
        """
        directory = os.path.dirname(path)
        ensure_dir(directory)
        if read_only_fs(directory) and os.path.exists(path):
            raise HistoryWriteError(f"cannot record anything in {path}: read-only file system")
        try:
            if not os.path.exists(path):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DB_MODE)
                os.fchmod(fd, DB_MODE)
                os.close(fd)
        except FileExistsError:
            pass
        except OSError as e:
            raise HistoryError(f"cannot create {path}: {e.strerror}") from None
        try:
            conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise HistoryError(f"cannot open {path}: {e}") from None
        self = cls(conn, path, readonly=False)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except HistoryError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            if cannot_write(e):
                raise HistoryWriteError(f"cannot record anything in {path}: {e}"
                                        f"{fs_hint(directory)}") from None
            raise HistoryError(
                f"history database {path} is unusable ({e}): move it aside "
                "(a new one is started on the next check) or restore it from backup"
            ) from None
        return self

    @classmethod
    def open_readonly(cls, path: str) -> History | None:
        """Open for reading only; None when there is no history yet.

        A WAL database needs its ``-shm`` file even to be read.  When that file
        cannot be created (a file system mounted read-only, or full), the
        database is read as ``immutable`` — but only when no write-ahead log
        with content is left beside it (rows in it would be missed).
        """
        if not os.path.exists(path):
            return None
        from urllib.parse import quote

        def connect(query: str) -> tuple[sqlite3.Connection, int]:
            conn = sqlite3.connect(f"file:{quote(path)}?{query}", uri=True, timeout=30,
                                   isolation_level=None)
            try:
                conn.execute("PRAGMA busy_timeout = 30000")
                return conn, conn.execute("PRAGMA user_version").fetchone()[0]
            except BaseException:
                conn.close()
                raise

        try:
            try:
                conn, version = connect("mode=ro")
            except sqlite3.OperationalError as e:
                wal = path + "-wal"
                if not cannot_write(e) or (os.path.exists(wal) and os.path.getsize(wal) > 0):
                    raise
                conn, version = connect("mode=ro&immutable=1")
        except sqlite3.Error as e:
            raise HistoryError(f"history database {path} is unusable ({e}): move it "
                               "aside or restore it from backup") from None
        if version == 0:
            conn.close()
            return None
        if version > SCHEMA_VERSION:
            conn.close()
            raise HistoryError(f"{path} has schema version {version}, newer than this "
                               f"vmgenc-tools understands ({SCHEMA_VERSION}): upgrade")
        if version < SCHEMA_VERSION:
            conn.close()
            raise HistoryError(f"{path} has schema version {version}: run 'vmgenctl check' "
                               "as root once to upgrade it")
        return cls(conn, path, readonly=True)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise HistoryError(f"{self.path} has schema version {version}, newer than this "
                               f"vmgenc-tools understands ({SCHEMA_VERSION}): upgrade")
        while version < SCHEMA_VERSION:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                current = self.conn.execute("PRAGMA user_version").fetchone()[0]
                if current == version:
                    for stmt in MIGRATIONS[version]:
                        self.conn.execute(stmt)
                    self.conn.execute(f"PRAGMA user_version = {version + 1}")
                self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One durable transaction; any SQLite failure becomes :class:`HistoryWriteError`."""
        if self.readonly:
            raise HistoryWriteError(f"{self.path} is open read-only")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise HistoryWriteError(f"cannot record {what} in {self.path}: {e}") from e

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.conn.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise HistoryError(f"cannot read {self.path} ({e}): move it aside or "
                               "restore it from backup") from None

    # -- writes ------------------------------------------------------------------------

    def add_change(self, ch: Change) -> int:
        """Insert ``ch`` and count its class; returns the id.

        ``ch.id`` is set only once the transaction has committed: a commit that
        fails (disk full) leaves it None, so the caller knows it is not recorded.
        """
        with self._write("the change") as c:
            cid = self._insert_change(c, ch)
        ch.id = cid
        return cid

    def _insert_change(self, c: sqlite3.Connection, ch: Change) -> int:
        cur = c.execute(
            "INSERT INTO changes (detected_at, settled_at, source, class, status, old_raw, "
            "old_text, new_raw, new_text, guids, smbios_uuid, hostuuid, macs, vm_guest, "
            "boot_time, acpi_path, devd_timestamp, forced, intent_sig, reason, warning) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (ch.detected_at, ch.settled_at, ch.source, ch.cls, ch.status, ch.old_raw,
             ch.old_text, ch.new_raw, ch.new_text, ch.guids, ch.smbios_uuid, ch.hostuuid,
             " ".join(ch.macs), ch.vm_guest, ch.boot_time, ch.acpi_path, ch.devd_timestamp,
             ch.forced, ch.intent_sig, ch.reason, ch.warning),
        )
        cid = int(cur.lastrowid)
        c.execute("INSERT INTO class_counts (class, n) VALUES (?, 1) "
                  "ON CONFLICT(class) DO UPDATE SET n = n + 1", (ch.cls,))
        for run in ch.hooks:
            self._insert_run(c, cid, run)
        return cid

    @staticmethod
    def _insert_run(c: sqlite3.Connection, change_id: int, run: HookRun) -> int:
        cur = c.execute(
            "INSERT INTO hook_runs (change_id, name, attempt, status, exit_code, duration_s, "
            "output, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (change_id, run.name, run.attempt, run.status, run.exit_code, run.duration_s,
             _tail(run.output), run.started_at, run.finished_at),
        )
        return int(cur.lastrowid)

    def start_hook(self, change_id: int, name: str) -> HookRun:
        """Commit a ``running`` attempt before the hook starts."""
        with self._write(f"the start of hook {name}") as c:
            (n,) = c.execute("SELECT COALESCE(MAX(attempt), 0) FROM hook_runs "
                             "WHERE change_id = ? AND name = ?", (change_id, name)).fetchone()
            run = HookRun(change_id, name, n + 1, "running", started_at=utc_now())
            run.id = self._insert_run(c, change_id, run)
            return run

    def finish_hook(self, run: HookRun, result: HookResult) -> None:
        run.status, run.exit_code = result.status, result.exit_code
        run.duration_s, run.output = result.duration_s, _tail(result.output or "")
        run.finished_at = utc_now()
        with self._write(f"the result of hook {run.name}") as c:
            c.execute("UPDATE hook_runs SET status = ?, exit_code = ?, duration_s = ?, "
                      "output = ?, finished_at = ? WHERE id = ?",
                      (run.status, run.exit_code, run.duration_s, run.output,
                       run.finished_at, run.id))

    def add_hook_result(self, change_id: int, result: HookResult) -> HookRun:
        """Record a hook that was not started (``skipped``) as one finished attempt."""
        with self._write(f"the result of hook {result.name}") as c:
            (n,) = c.execute("SELECT COALESCE(MAX(attempt), 0) FROM hook_runs "
                             "WHERE change_id = ? AND name = ?",
                             (change_id, result.name)).fetchone()
            now = utc_now()
            run = HookRun(change_id, result.name, n + 1, result.status, result.exit_code,
                          result.duration_s, result.output or "", now, now)
            run.id = self._insert_run(c, change_id, run)
        return run

    def mark_interrupted(self, change_id: int) -> int:
        """Attempts left ``running`` by a killed run become ``failed``; returns how many."""
        with self._write("interrupted hook runs") as c:
            cur = c.execute(
                "UPDATE hook_runs SET status = 'failed', finished_at = ?, output = "
                "'interrupted before it finished (killed, crashed or power lost)' "
                "WHERE change_id = ? AND status = 'running'", (utc_now(), change_id))
            return cur.rowcount

    def set_status(self, change_id: int, status: str) -> None:
        if status not in CHANGE_STATUSES:
            raise ValueError(status)
        settled = None if status == "pending" else utc_now()
        with self._write("the change's status") as c:
            c.execute("UPDATE changes SET status = ?, settled_at = ? WHERE id = ?",
                      (status, settled, change_id))

    def import_journal(self, journal: Journal) -> int:
        """Move the fallback journal's entries (both files) into the database; returns how many.

        A change the journal alone knew comes in as it was left: ``pending``
        with the hooks that finished, if the run that kept it was killed, so
        the caller resumes only the hooks not yet ``ok``.
        """
        entries = journal.read()
        if not entries:  # empty: an append that failed (disk full) and took itself back
            with contextlib.suppress(OSError):
                journal.remove()
            return 0
        done = 0
        refs: dict[str, int] = {}  # token of a journalled change -> its row
        with self._write("the fallback journal") as c:
            for e in changes_first(entries):
                token = e.get("token")
                seen = c.execute("SELECT 1 FROM imported WHERE token = ?", (token,)).fetchone()
                if e.get("kind") == "change":
                    ch = change_from_json(e["change"])
                    if not seen:
                        refs[str(token)] = self._insert_change(c, ch)
                    else:  # imported before (the file outlived the commit): find its row
                        row = c.execute("SELECT id FROM changes WHERE detected_at = ? AND "
                                        "guids = ? ORDER BY id DESC LIMIT 1",
                                        (ch.detected_at, ch.guids)).fetchone()
                        if row:
                            refs[str(token)] = int(row[0])
                if seen:
                    continue
                if e.get("kind") == "hooks":
                    ref = e.get("change_ref")
                    cid = refs.get(str(ref)) if ref is not None else int(e["change_id"])
                    if cid is not None and c.execute("SELECT 1 FROM changes WHERE id = ?",
                                                     (cid,)).fetchone():
                        c.execute("UPDATE hook_runs SET status = 'failed', finished_at = ?, "
                                  "output = 'interrupted: the database could not be written' "
                                  "WHERE change_id = ? AND status = 'running'", (utc_now(), cid))
                        for run in e.get("hooks", ()):
                            self._insert_run(c, cid, _run_from_json(cid, run))
                        if e.get("status"):  # None: hooks finished, the change not settled yet
                            c.execute("UPDATE changes SET status = ?, settled_at = ? "
                                      "WHERE id = ?", (e["status"], e.get("settled_at"), cid))
                    # (no such change: its own line was torn, or the database was replaced)
                c.execute("INSERT INTO imported (token) VALUES (?)", (token,))
                done += 1
        journal.remove()
        return done

    # -- reads -------------------------------------------------------------------------

    def _with_hooks(self, changes: list[Change]) -> list[Change]:
        if not changes:
            return changes
        by_id = {c.id: c for c in changes}
        marks = ", ".join("?" * len(by_id))
        for row in self._read(f"{_SELECT_RUN} WHERE change_id IN ({marks}) ORDER BY id",
                              tuple(by_id)):
            run = _run_from_row(row)
            by_id[run.change_id].hooks.append(run)
        return changes

    def get(self, change_id: int) -> Change | None:
        rows = self._read(f"{_SELECT_CHANGE} WHERE id = ?", (change_id,))
        return self._with_hooks([_change_from_row(rows[0])])[0] if rows else None

    def last_change(self, *, real_only: bool = False) -> Change | None:
        """The newest row; ``real_only`` skips the all-zero "no-id" warnings."""
        where = f" WHERE class != '{NO_ID}'" if real_only else ""
        rows = self._read(f"{_SELECT_CHANGE}{where} ORDER BY id DESC LIMIT 1")
        return self._with_hooks([_change_from_row(rows[0])])[0] if rows else None

    def pending(self) -> list[Change]:
        """Changes whose hooks have not settled, oldest first."""
        rows = self._read(f"{_SELECT_CHANGE} WHERE status = 'pending' ORDER BY id")
        return self._with_hooks([_change_from_row(r) for r in rows])

    def listing(self, *, last: int | None = None, since: str | None = None) -> list[Change]:
        """Changes oldest first: all, the ``last`` N, and/or those detected at ``since`` on."""
        where, args = "", ()
        if since is not None:
            where, args = " INDEXED BY changes_detected_at WHERE detected_at >= ?", (since,)
        if last is not None:
            rows = self._read(f"{_SELECT_CHANGE}{where} ORDER BY id DESC LIMIT ?",
                              (*args, max(0, int(last))))
            rows.reverse()
        else:
            rows = self._read(f"{_SELECT_CHANGE}{where} ORDER BY id", args)
        return self._with_hooks([_change_from_row(r) for r in rows])

    def class_counts(self) -> dict[str, int]:
        return dict(self._read("SELECT class, n FROM class_counts"))

    def integrity_ok(self) -> bool:
        return self._read("PRAGMA integrity_check")[0][0] == "ok"


# -- fallback journal --------------------------------------------------------------------


def change_to_json(ch: Change) -> dict[str, object]:
    d = ch.fields()
    d["old_raw"] = None if ch.old_raw is None else ch.old_raw.hex()
    d["new_raw"] = ch.new_raw.hex()
    d["macs"] = list(ch.macs)
    d["hooks"] = [r.fields() for r in ch.hooks]
    return d


def change_from_json(d: dict) -> Change:
    d = dict(d)
    d["old_raw"] = None if d.get("old_raw") is None else bytes.fromhex(d["old_raw"])
    d["new_raw"] = bytes.fromhex(d["new_raw"])
    d["macs"] = tuple(d.get("macs") or ())
    hooks = d.pop("hooks", None) or []
    d.pop("id", None)
    ch = Change(**d)
    ch.hooks = [_run_from_json(0, h) for h in hooks]
    return ch


def _run_from_json(change_id: int, d: dict) -> HookRun:
    d = dict(d)
    d.pop("id", None)
    d["change_id"] = change_id
    return HookRun(**d)


def changes_first(entries: list[dict]) -> list[dict]:
    """The change entries, then the rest, each in their order.

    A hooks entry names its change by token, and the two may sit in different
    files whose interleaving by the ``at`` times a clock step can reverse; so
    every change is known before any hooks entry is applied to it.
    """
    return ([e for e in entries if e.get("kind") == "change"]
            + [e for e in entries if e.get("kind") != "change"])


class Journal:
    """Append-only JSON lines for what could not be written to the database.

    ``path`` is the file beside the database; ``fallback`` (the handler passes
    ``${root}/var/run/vmgenc/unrecorded.jsonl``), if given, takes an entry that
    ``path`` refuses (read-only file system, disk full).  Reading, importing and
    removing cover both files; entries are read back in the order appended.

    While degraded the handler appends a change as ``pending`` *before* its
    first hook runs, then one ``hooks`` entry as each hook ends and one that
    settles the change, so a kill between hooks loses no finished hook.  A
    change the database never got is referred to by its entry's token
    (``change_ref``), one it has by ``change_id``.
    """

    def __init__(self, path: str, fallback: str | None = None) -> None:
        self.path = path
        self.fallback = fallback if fallback != path else None
        self.used: str | None = None  # where this object's last append went
        self.errors: dict[str, OSError] = {}  # why a file refused that append (or the last)

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.fallback is None else (self.path, self.fallback)

    def exists(self) -> bool:
        return any(os.path.exists(p) for p in self.paths)

    def append(self, entry: dict[str, object]) -> str:
        """Append one entry durably, as one whole line; returns its token.

        The file that took the last entry is tried first, then the other.  When
        every file refuses, the OSError of :attr:`path` is raised (:attr:`errors`
        holds each file's).
        """
        import json

        entry = {"token": os.urandom(16).hex(), "at": utc_now(), **entry}
        data = (json.dumps(entry, sort_keys=True) + "\n").encode()
        order = [p for p in self.paths if p == self.used] + \
                [p for p in self.paths if p != self.used]
        errors: dict[str, OSError] = {}
        for path in order:
            try:
                self._append_to(path, data)
            except OSError as e:
                errors[path] = e
                continue
            self.used, self.errors = path, errors
            return str(entry["token"])
        self.errors = errors
        raise errors.get(self.path) or next(iter(errors.values()))

    def _append_to(self, path: str, data: bytes) -> None:
        if path != self.path:  # ${root}/var/run/vmgenc may not exist yet (as fastcheck makes it)
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, DB_MODE)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            if start and os.pread(fd, 1, start - 1) != b"\n":
                data = b"\n" + data  # a line torn by a crash stays apart from this one
            try:
                done = 0
                while done < len(data):
                    done += os.write(fd, data[done:])
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # no half entry (disk full) to glue onto later
                raise
        finally:
            os.close(fd)
        if not start:  # a new file: its directory entry must survive power loss too
            with contextlib.suppress(OSError):
                fsync_dir(os.path.dirname(path))

    def append_change(self, ch: Change) -> str:
        """The change as it is now (``pending`` before its hooks); returns its token."""
        return self.append({"kind": "change", "change": change_to_json(ch)})

    def append_hooks(self, change: int | str, runs: list[HookRun],
                     status: str | None) -> str:
        """Finished hook runs of a change (its id, or the token of its journal entry).

        ``status`` ``done``/``failed`` settles the change; None: more may follow.
        """
        key: dict[str, object] = ({"change_ref": change} if isinstance(change, str)
                                  else {"change_id": change})
        return self.append({"kind": "hooks", **key, "status": status,
                            "settled_at": utc_now() if status else None,
                            "hooks": [r.fields() for r in runs]})

    @staticmethod
    def _read_one(path: str) -> list[dict]:
        import json

        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def read(self) -> list[dict]:
        """Complete entries of both files, oldest first (a torn line from a crash is ignored).

        Each file keeps its own order; the two are interleaved by append time.
        """
        lists = [self._read_one(p) for p in self.paths]
        if len(lists) == 1 or not all(lists):
            return [e for entries in lists for e in entries]
        import heapq

        return list(heapq.merge(*lists, key=lambda e: str(e.get("at") or "")))

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def changes(self) -> list[tuple[str, Change]]:
        """``(token, change)`` for every change only the journal knows, oldest first.

        Each change carries the hook runs journalled for it, and the status of
        the entry that settled it (``pending`` if none did: a killed run).
        """
        out: dict[str, Change] = {}
        for e in changes_first(self.read()):
            if e.get("kind") == "change":
                try:
                    out[str(e.get("token"))] = change_from_json(e["change"])
                except (KeyError, TypeError, ValueError):
                    continue
            elif e.get("kind") == "hooks" and str(e.get("change_ref")) in out:
                ch = out[str(e.get("change_ref"))]
                ch.hooks.extend(_run_from_json(0, h) for h in e.get("hooks", ()))
                if e.get("status"):
                    ch.status, ch.settled_at = str(e["status"]), e.get("settled_at")
        return list(out.items())

    def last_change(self) -> Change | None:
        """The newest change that only the journal knows (for comparing while degraded)."""
        changes = self.changes()
        return changes[-1][1] if changes else None

    def settled(self) -> dict[int, str]:
        """``{change_id: status}`` for recorded changes that a journal entry settled."""
        out: dict[int, str] = {}
        for e in self.read():
            if e.get("kind") == "hooks" and e.get("change_id") is not None and e.get("status"):
                out[int(e["change_id"])] = str(e["status"])
        return out

    def ok_names(self, change: int | str) -> set[str]:
        """Hooks recorded ``ok`` here for a change (its id, or its entry's token)."""
        names: set[str] = set()
        for e in self.read():
            if e.get("kind") == "hooks" and (e.get("change_ref") == change
                                             if isinstance(change, str)
                                             else e.get("change_id") == change):
                names |= {h["name"] for h in e.get("hooks", ()) if h.get("status") == "ok"}
            elif e.get("kind") == "change" and e.get("token") == change:
                names |= {h["name"] for h in e["change"].get("hooks") or ()
                          if h.get("status") == "ok"}
        return names
