"""The reconcile step: lock → read all units → compare → classify → record → hooks → settle.

Guarantees (design §4), and how they are kept:

1. *One reconcile at a time per root*: ``flock`` on ``${dbdir}/lock``
   (:class:`RootLock`).  ``check``/boot/``retry`` wait for it; the devd entry
   never waits (devd must not block) — if the lock is busy it leaves its event
   in ``${dbdir}/devd-event`` and returns, and whoever holds the lock re-reads
   the GUIDs after releasing it (:func:`drive`), so the change is not lost.
2. *Pending before hooks, hooks once*: the change is committed ``pending``
   before any hook starts; each hook attempt is committed ``running`` before
   it starts and finished after.  A hook recorded ``ok`` is never run again
   for that change; attempts a killed run left ``running`` become ``failed``
   and are resumed by the next check, boot or ``retry``.
3. *A change during hooks is recorded after this one settles*: pending work is
   always settled first, then the GUIDs are read again, in a loop until they
   stop changing.
4. *devd returns fast*: it records the change and hands the lock and the hooks
   to a detached worker (``setsid``; :mod:`.worker`).
5. *All-zero GUID*: recorded once as a ``no-id`` warning, no hooks, not a
   change.  *First run*: ``first-seen``, which runs no identity hooks by default.

The ``last-guid`` file (see :mod:`.fastcheck`) is removed before anything is
recorded or resumed and written back, atomically, only once everything has
settled, so "file present and equal" always means "nothing to do".

When the database cannot be written, the hooks still run and what happened is
kept in the fallback journal (:class:`.history.Journal`) for the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Callable

from . import exitcodes, log
from .classify import classify
from .config import CLASSES, Config
from .fastcheck import (
    BOOT_CHECKED,
    CACHE_REL,
    fence,
    load_config,
    read_last_guid,
    touch,
)
from .generation import Generation
from .history import (
    JOURNAL_NAME,
    NO_ID,
    Change,
    History,
    HistoryWriteError,
    HookRun,
    Journal,
    ensure_dir,
    read_only_fs,
    utc_now,
)
from .hooks.atomic import fsync_dir
from .hooks.base import STATUSES, Hook, HookContext, HookResult
from .plain import Frozen
from .platform import NoDevice, Snapshot, read_guids, read_snapshot
from .sysctl import Backend, get_backend

Planner = Callable[[Config, str], "list[Hook]"]

WORKERS: list[Worker] = []  # workers started by this process (tests and the demo wait on them)


def default_planner(config: Config, cls: str) -> list[Hook]:
    """The hook runner's plan: built-ins in the configured order, then site hooks."""
    from .hooks.runner import plan

    return list(plan(config, cls))


def guid_line(guids: tuple[Generation, ...] | list[Generation]) -> str:
    """Line 1 of ``last-guid``: every unit's raw GUID as ``sysctl -x`` prints it."""
    return " ".join(g.hex for g in guids)


def covering(latest: Change | None, last_real: Change | None, line: str) -> Change | None:
    """The record that accounts for the live GUIDs ``line``, or None (not recorded yet)."""
    if latest is not None and latest.guids == line:
        return latest
    if latest is not None and latest.is_no_id and last_real is not None \
            and last_real.guids == line:
        return last_real  # the ID came back unchanged after an all-zero spell
    return None


class Paths(Frozen):
    """Files under ``${root}${vmgenc_dbdir}`` (and the second journal, in ``/var/run``)."""

    dbdir: str
    db: str
    lock: str
    last_guid: str
    intent: str
    devd_event: str
    journal: str
    boot_checked: str
    journal_fallback: str

    def __init__(self, dbdir: str, db: str, lock: str, last_guid: str, intent: str,
                 devd_event: str, journal: str, boot_checked: str,
                 journal_fallback: str) -> None:
        self._set(locals())

    @classmethod
    def of(cls, config: Config) -> Paths:
        d = config.path(config.dbdir)
        j = os.path.join
        # where the journal goes when the database's file system refuses it too: the
        # directory of the rc.conf cache, ${root}/var/run/vmgenc
        run = j(config.root, os.path.dirname(CACHE_REL))
        return cls(d, config.db_path, j(d, "lock"), j(d, "last-guid"), j(d, "intent"),
                   j(d, "devd-event"), j(d, JOURNAL_NAME), j(d, BOOT_CHECKED),
                   j(run, JOURNAL_NAME))


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _fsync_dir(path: str) -> None:
    """:func:`hooks.atomic.fsync_dir`, best effort: the write itself already succeeded."""
    with contextlib.suppress(OSError):
        fsync_dir(path)


def atomic_write(path: str, data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """temp file, (fsync), rename, (fsync the directory): readers see old or new, never half."""
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        try:
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(os.path.dirname(path))


def _ref(ch: Change) -> str:
    return f"#{ch.id}" if ch.id is not None else "(not recorded)"


# -- the lock ----------------------------------------------------------------------------


class RootLock:
    """``flock(LOCK_EX)`` on ``${dbdir}/lock``; the file holds the holder's pid."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def acquire(cls, path: str, *, blocking: bool = True) -> RootLock | None:
        """Take the lock (None if ``blocking`` is off and another process holds it).

        On a file system mounted read-only the lock file is opened for reading
        (``flock`` does not need write access), or, if it was never created,
        the directory itself is locked: every process there falls back alike.
        """
        ensure_dir(os.path.dirname(path))
        fd = cls._open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        lock = cls(fd, path)
        lock.note_holder()
        return lock

    @staticmethod
    def _open(path: str) -> int:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            if e.errno != errno.EROFS:
                raise
        try:
            return os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return os.open(os.path.dirname(path), os.O_RDONLY)

    @classmethod
    def adopt(cls, fd: int, path: str) -> RootLock:
        """Take over a descriptor that already holds the lock (the devd → worker handoff)."""
        os.set_inheritable(fd, False)
        lock = cls(fd, path)
        lock.note_holder()
        return lock

    def note_holder(self) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1

    def handed_off(self) -> None:
        """Close our copy after a worker inherited the lock (it stays held; pid untouched)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder_pid(path: str) -> int | None:
    """The pid of the process holding the lock, if one is alive (read without locking)."""
    try:
        with open(path, encoding="ascii") as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


# -- the reconciler ----------------------------------------------------------------------


class Reconciler:
    """One reconcile run for one root (the caller holds the lock)."""

    def __init__(self, config: Config, *, planner: Planner | None = None,
                 backend: Backend | None = None) -> None:
        self.config = config
        self.paths = Paths.of(config)
        self.planner = planner or default_planner
        self.backend = backend if backend is not None else get_backend(config.root)
        self.journal = Journal(self.paths.journal, self.paths.journal_fallback)
        self._journal_noted: str | None = None  # the journal file the log has named
        self._unjournalled: list[HookRun] = []  # hook results no journal file took (yet)
        self._lost_logged = False
        self.degraded: str | None = None
        self.intent_problem: str | None = None  # an intent file that names no class
        self.handled: list[Change] = []
        self.settled_line: str | None = None
        self.current: Change | None = None
        self._cache_gone = False

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return read_snapshot(self.backend)

    def open_history(self) -> History:
        """The database for this run; read-only and degraded if it cannot be written at all.

        (A file system mounted read-only: the hooks still run, the failure is
        reported, and the first run that can write records the change.)
        """
        try:
            return History.open(self.paths.db)
        except HistoryWriteError as e:
            hist = History.open_readonly(self.paths.db)
            if hist is None:
                raise
            self._degrade(e)
            return hist

    def latest(self, hist: History | None, *, real_only: bool = False) -> Change | None:
        if self.degraded:
            changes = [c for _, c in self.journal.changes()
                       if not (real_only and c.is_no_id)]
            if changes:
                return changes[-1]
        return hist.last_change(real_only=real_only) if hist is not None else None

    def plan(self, cls: str) -> list[Hook]:
        if cls == NO_ID or not self.config.hooks_for(cls):
            return []
        return list(self.planner(self.config, cls))

    def _read_intent(self, hist: History | None) -> tuple[str, str] | None:
        """A class forced by the admin in ``${dbdir}/intent``, with the file's signature."""
        path = self.paths.intent
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8", errors="replace") as f:
                words = f.read().split()
        except FileNotFoundError:
            return None
        except OSError as e:
            log.warning(f"cannot read {path}: {e.strerror}: ignored")
            return None
        sig = f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
        last = self.latest(hist, real_only=True)
        if last is not None and last.intent_sig == sig:
            return None  # consumed already (a crash came between record and unlink)
        cls = words[0] if words else ""
        if cls not in CLASSES:
            self.intent_problem = (f"{path}: {cls!r} is not a class, so it was ignored and "
                                   f"left in place (use one of {', '.join(CLASSES)})")
            log.warning(self.intent_problem)
            return None
        return cls, sig

    def _devd_event(self, snap: Snapshot, line: str) -> tuple[str, str] | None:
        """``(acpi_path, timestamp)`` left by a devd entry for exactly these GUIDs, this boot."""
        try:
            with open(self.paths.devd_event, encoding="utf-8") as f:
                fields = f.read().rstrip("\n").split("\t")
        except (OSError, UnicodeDecodeError):
            return None
        if len(fields) == 4 and fields[0] == line and fields[1] == str(snap.boot_time):
            return fields[2], fields[3]
        return None

    def detect(self, hist: History | None, snap: Snapshot, source: str, *,
               forced: str | None = None,
               devd: tuple[str, str] | None = None) -> Change | None:
        """The change from the last record to ``snap``, classified; None if there is none."""
        line = guid_line(snap.guids)
        latest = self.latest(hist)
        if latest is not None and latest.guids == line:
            return None
        gen = snap.generation
        now = utc_now()
        common = dict(detected_at=now, new_raw=gen.raw, new_text=gen.text, guids=line,
                      smbios_uuid=snap.smbios_uuid, hostuuid=snap.hostuuid, macs=snap.macs,
                      vm_guest=snap.vm_guest, boot_time=snap.boot_time)
        if gen.is_zero:
            return Change(
                source=source, cls=NO_ID, status="done", settled_at=now,
                old_raw=latest.new_raw if latest else None,
                old_text=latest.new_text if latest else None,
                reason="all-zero generation ID",
                warning="the hypervisor presents an all-zero VM generation ID (no ID): "
                        "nothing to compare, no hooks run", **common)
        prev = self.latest(hist, real_only=True)
        if prev is not None and prev.guids == line:
            return None
        src, acpi, stamp = source, None, None
        if devd is not None:
            acpi, stamp = devd
        else:
            seen = self._devd_event(snap, line)
            if seen is not None:
                src, (acpi, stamp) = "devd", seen
        forced_by, intent_sig = None, None
        if forced:
            forced_by = "cli"
        else:
            intent = self._read_intent(hist)
            if intent is not None:
                (forced, intent_sig), forced_by = intent, "intent"
        verdict = classify(prev, snap, src, runtime_class=self.config.runtime_class,
                           forced=forced, boot_checked_at=_mtime(self.paths.boot_checked))
        return Change(
            source=src, cls=verdict.cls, status="pending",
            old_raw=prev.new_raw if prev else None, old_text=prev.new_text if prev else None,
            acpi_path=acpi, devd_timestamp=stamp, forced=forced_by, intent_sig=intent_sig,
            reason=verdict.reason, warning=self.intent_problem, **common)

    # -- the loop ------------------------------------------------------------------------

    def run(self, hist: History, *, source: str, forced: str | None = None,
            devd: tuple[str, str] | None = None, record_only: bool = False,
            retry: bool = False) -> bool:
        """Settle pending work, record new changes, until stable.

        With ``record_only`` (devd), stop as soon as there is pending work and
        return True: the caller hands it to a worker.
        """
        self._import_journal(hist)
        if retry:
            self._reopen_last(hist)
        done_ids: set[int] = set()
        done_refs: set[str] = set()
        while True:
            pending = [c for c in hist.pending() if c.id not in done_ids]
            if self.degraded:  # what the journal settled is settled
                settled = self.journal.settled()
                pending = [c for c in pending if c.id not in settled]
            if pending:
                if record_only and not self.degraded:
                    return True
                for ch in pending:
                    self.run_hooks(hist, ch)
                    done_ids.add(int(ch.id or 0))
                continue
            if self.degraded and self._resume_journalled(hist, done_refs):
                continue
            snap = self.snapshot()
            ch = self.detect(hist, snap, source, forced=forced, devd=devd)
            if ch is None:
                self.settled_line = guid_line(snap.guids)
                return False
            forced, devd = None, None
            self.record(hist, ch)
            if self.degraded:
                return False

    def _import_journal(self, hist: History) -> None:
        present = [p for p in self.journal.paths if os.path.exists(p)]
        if not present:
            return
        try:
            n = hist.import_journal(self.journal)
        except HistoryWriteError as e:
            self._degrade(e)
            return
        if n:
            log.notice(f"recorded {n} entries kept in {' and '.join(present)} while the "
                       "database could not be written")

    def _resume_journalled(self, hist: History, done: set[str]) -> bool:
        """Still degraded: resume the changes only the journal knows that a kill left pending."""
        left = [(t, c) for t, c in self.journal.changes()
                if c.status == "pending" and t not in done]
        for token, ch in left:
            done.add(token)
            log.warning(f"change {_ref(ch)}: resuming hooks after an interrupted run")
            self.run_hooks(hist, ch, ref=token)
        return bool(left)

    def _reopen_last(self, hist: History) -> None:
        last = hist.last_change(real_only=True)
        if last is None or last.status != "failed" or self.degraded:
            return
        self._invalidate_cache()
        try:
            hist.set_status(int(last.id or 0), "pending")
        except HistoryWriteError as e:
            self._degrade(e)
            return
        log.info(f"retrying the hooks of change #{last.id} that did not succeed")

    def _degrade(self, e: Exception) -> None:
        if not self.degraded:
            self.degraded = str(e)
            log.error(f"{e}: hooks run anyway; what happened is kept in {self._journal_at()} "
                      "until the database can be written")

    def _journal_at(self) -> str:
        """The journal file in use, or the one that will be tried first."""
        j = self.journal
        if j.used:
            return j.used
        if j.fallback and read_only_fs(os.path.dirname(j.path)):
            return j.fallback
        return j.path

    def _keep(self, append: Callable[..., str], *args: object) -> str | None:
        """Append to the journal (its token), or None when no journal file takes it.

        The first entry of the run logs, once, which file keeps what could not be
        recorded (and why the one beside the database did not).
        """
        try:
            token = append(*args)
        except OSError:
            return None
        self._note_journal()
        return token

    def _note_journal(self) -> None:
        j = self.journal
        if j.used is not None and j.used != self._journal_noted:
            self._journal_noted = j.used
            refused = j.errors.get(j.path)
            if j.used != j.path and refused is not None:
                log.warning(f"cannot write {j.path} ({refused.strerror}): what could not be "
                            f"recorded is kept in {j.used}")
            else:
                log.notice(f"what could not be recorded is kept in {j.used}")

    def _journal_refused(self, e: OSError) -> str:
        """``cannot write <journal> either (<why>)``, naming the second file when it failed too."""
        text = f"cannot write {self.journal.path} either ({e.strerror})"
        other = self.journal.fallback
        err = self.journal.errors.get(other) if other else None
        if other and err is not None:
            text = (f"cannot write {self.journal.path} either ({e.strerror}), nor {other} "
                    f"({err.strerror})")
        return text

    def _invalidate_cache(self) -> None:
        """Remove ``last-guid`` before anything is recorded: present ⇒ settled."""
        if self._cache_gone:
            return
        try:
            os.unlink(self.paths.last_guid)
        except FileNotFoundError:
            pass
        except OSError as e:  # read-only: it names the old GUID, so it cannot say "settled"
            log.warning(f"cannot remove {self.paths.last_guid}: {e.strerror}")
        else:
            _fsync_dir(self.paths.dbdir)
        self._cache_gone = True

    def record(self, hist: History, ch: Change) -> None:
        """Commit ``ch`` (pending, or done for no-id) before any hook runs."""
        self._invalidate_cache()
        if not self.degraded:
            try:
                hist.add_change(ch)
            except HistoryWriteError as e:
                self._degrade(e)
        self._log_change(ch)
        if ch.id is not None:
            self._consume(ch)
            if ch.status != "pending":
                self.handled.append(ch)
            return
        if ch.status == "pending":
            # the journal stands in for the database: pending before any hook runs
            token = self._keep(self.journal.append_change, ch)
            self.run_hooks(hist, ch, ref=token)
            if token is not None:
                self._consume(ch)
                return
        else:
            self.handled.append(ch)
        try:  # no-id, or no journal took the pending change: keep it now, hooks and all
            self.journal.append_change(ch)
        except OSError as e:
            log.error(f"{self._journal_refused(e)}: the next run "
                      "will record this change and run its hooks again")
            return
        self._note_journal()
        self._consume(ch)

    def _consume(self, ch: Change) -> None:
        if ch.forced == "intent":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.intent)
        try:
            with open(self.paths.devd_event, encoding="utf-8") as f:
                if f.read().split("\t", 1)[0] == ch.guids:
                    os.unlink(self.paths.devd_event)
        except (OSError, UnicodeDecodeError):
            pass

    # -- hooks ---------------------------------------------------------------------------

    def _call(self, hook: Hook, ctx: HookContext) -> HookResult:
        t0 = time.monotonic()
        try:
            result = hook.run(ctx)
        except Exception as e:  # noqa: BLE001 - a hook's bug is that hook's failure
            log.exception(f"hook {hook.name} raised", e)
            return HookResult(hook.name, "failed", None, time.monotonic() - t0,
                              f"{type(e).__name__}: {e}")
        if not isinstance(result, HookResult) or result.status not in STATUSES:
            return HookResult(hook.name, "failed", None, time.monotonic() - t0,
                              f"hook returned an invalid result: {result!r}")
        result.name = hook.name
        return result

    def run_hooks(self, hist: History, ch: Change, *, ref: str | None = None) -> None:
        """Run the hooks of ``ch`` not yet ``ok``, then mark it done or failed.

        Degraded, each hook's result goes to the journal as soon as the hook ends,
        filed under the change's id or, for a change only the journal holds, under
        ``ref`` (the token of its journal entry; None: not journalled at all).
        """
        recorded = ch.id is not None
        if recorded and not self.degraded:
            self._invalidate_cache()
            try:
                if hist.mark_interrupted(int(ch.id or 0)):
                    ch = hist.get(int(ch.id or 0)) or ch
                    log.warning(f"change #{ch.id}: resuming hooks after an interrupted run")
            except HistoryWriteError as e:
                self._degrade(e)
        key: int | str | None = int(ch.id or 0) if recorded else ref
        ok = ch.ok_names() | (self.journal.ok_names(key) if key is not None else set())
        ctx = HookContext(self.config, new_guid=ch.new_text, old_guid=ch.old_text, cls=ch.cls,
                          source=ch.source)
        unrecorded: list[HookRun] = []
        self._unjournalled, self._lost_logged = [], False
        failed: list[str] = []
        stop = False
        try:
            hooks = self.plan(ch.cls)
        except Exception as e:  # noqa: BLE001 - a broken plan fails the change, not the run
            log.exception(f"change {_ref(ch)}: cannot plan the {ch.cls} hooks", e)
            self._store(hist, ch, None, HookResult("plan", "failed", None, 0.0,
                                                   f"{type(e).__name__}: {e}"), unrecorded,
                        ref)
            failed.append("plan")
            hooks = []
        for hook in hooks:
            if hook.name in ok:
                continue
            if stop:
                result = HookResult(hook.name, "skipped", output="not run: an earlier hook "
                                    "failed and vmgenc_hook_stop_on_failure is on")
                self._store(hist, ch, None, result, unrecorded, ref)
                failed.append(hook.name)
                continue
            run = None
            if recorded and not self.degraded:
                try:
                    run = hist.start_hook(int(ch.id or 0), hook.name)
                except HistoryWriteError as e:
                    self._degrade(e)
            result = self._call(hook, ctx)
            self._store(hist, ch, run, result, unrecorded, ref)
            self._log_hook(ch, result)
            if result.status != "ok":
                failed.append(hook.name)
                stop = self.config.hook_stop_on_failure
        planned = {h.name for h in hooks} if "plan" not in failed else None
        for gone in [r for r in ch.latest_hooks() if planned is not None
                     and r.status not in ("ok", "skipped") and r.name not in planned]:
            # A hook that failed before and is no longer planned (taken out of the class's
            # list, or its file removed): say so, or the record reads "done" beside "failed".
            self._store(hist, ch, None, HookResult(gone.name, "skipped", output=(
                "no longer planned: removed from the hook list or the hooks directory")),
                unrecorded, ref)
        status = "failed" if failed else "done"
        ch.status, ch.settled_at = status, utc_now()
        if recorded and not self.degraded:
            try:
                hist.set_status(int(ch.id or 0), status)
            except HistoryWriteError as e:
                self._degrade(e)
        if self.degraded:
            if key is not None:  # settle it (with any result an earlier append lost)
                try:
                    self.journal.append_hooks(key, self._unjournalled, status)
                except OSError as e:
                    self._journal_lost(ch, e)
                else:
                    self._note_journal()
            ch.hooks.extend(unrecorded)  # (what ran, for the summary; journalled as it ended)
        self.handled.append(ch)
        if failed:
            log.warning(f"change {_ref(ch)}: {ch.cls} hooks failed: {', '.join(failed)}")
        else:
            log.info(f"change {_ref(ch)}: {ch.cls} settled, hooks done")

    def _store(self, hist: History, ch: Change, run: HookRun | None, result: HookResult,
               unrecorded: list[HookRun], ref: str | None = None) -> None:
        if not self.degraded and ch.id is not None:
            try:
                if run is not None:
                    hist.finish_hook(run, result)
                    ch.hooks.append(run)
                else:
                    ch.hooks.append(hist.add_hook_result(int(ch.id), result))
                return
            except HistoryWriteError as e:
                self._degrade(e)
        if run is not None:
            attempt = run.attempt
        else:
            attempt = 1 + max((r.attempt for r in ch.hooks + unrecorded
                               if r.name == result.name), default=0)
        now = utc_now()
        done = HookRun(int(ch.id or 0), result.name, attempt, result.status, result.exit_code,
                       result.duration_s, result.output or "", now, now)
        unrecorded.append(done)
        key = ch.id if ch.id is not None else ref
        if key is None:
            return  # not journalled at all: the caller keeps the change whole at the end
        try:  # now, not after the last hook: a kill between hooks loses nothing that ended
            self.journal.append_hooks(key, [*self._unjournalled, done], None)
        except OSError as e:
            self._unjournalled.append(done)
            self._journal_lost(ch, e)
        else:
            self._unjournalled.clear()
            self._note_journal()

    def _journal_lost(self, ch: Change, e: OSError) -> None:
        if not self._lost_logged:
            self._lost_logged = True
            log.error(f"{self._journal_refused(e)}: hooks of change {_ref(ch)} that ran may "
                      "run again")

    # -- logging -------------------------------------------------------------------------

    def _log_change(self, ch: Change) -> None:
        if ch.is_no_id:
            log.warning(f"change {_ref(ch)}: {ch.warning}")
            return
        old = ch.old_text or "(none)"
        log.notice(f"generation change {_ref(ch)}: {old} -> {ch.new_text} class {ch.cls} "
                   f"source {ch.source} ({ch.reason})")

    @staticmethod
    def _log_hook(ch: Change, r: HookResult) -> None:
        msg = f"change {_ref(ch)}: hook {r.name}: {r.status}"
        if r.exit_code not in (None, 0):
            msg += f" (exit {r.exit_code})"
        msg += f" in {r.duration_s:.2f} s"
        if r.status == "ok":
            log.info(msg)
        else:
            tail = (r.output or "").strip().splitlines()
            log.warning(msg + (f": {tail[-1]}" if tail else ""))

    # -- settling ------------------------------------------------------------------------

    def finish(self, hist: History) -> None:
        """Write ``last-guid`` (only when everything settled) and the metrics."""
        if self.settled_line is not None and not self.degraded:
            self.current = covering(hist.last_change(), hist.last_change(real_only=True),
                                    self.settled_line)
            if self.current is not None and not hist.pending():
                status = "done" if self.current.status == "done" else "failed"
                want = (self.settled_line, status)
                try:
                    if read_last_guid(self.paths.last_guid) != want:
                        atomic_write(self.paths.last_guid,
                                     f"{want[0]}\n{want[1]}\n".encode())
                except OSError as e:  # a cache only: the next boot check starts Python
                    log.warning(f"cannot write {self.paths.last_guid}: {e.strerror}")
                else:
                    self._cache_gone = False  # back: the next record must remove it again
        if self.config.metrics_file:
            try:
                from . import metrics

                metrics.write(self.config, hist)
            except (OSError, HistoryWriteError) as e:
                log.warning(f"cannot write metrics to {self.config.metrics_file}: {e}")

    def exit_code(self) -> int:
        if self.degraded:
            return exitcodes.STATE
        if any(c.status != "done" for c in self.handled):
            return exitcodes.PENDING_OR_FAILED
        if self.current is not None and self.current.status != "done":
            return exitcodes.PENDING_OR_FAILED
        return exitcodes.OK


# -- driving a run: lock, loop, release, re-check ----------------------------------------


def drive(r: Reconciler, lock: RootLock, *, source: str, forced: str | None = None,
          devd: tuple[str, str] | None = None, retry: bool = False,
          handoff: Callable[[RootLock], None] | None = None) -> None:
    """Reconcile while holding ``lock``; after releasing it, read the GUIDs once more.

    A devd entry that found the lock busy returned at once, trusting the holder
    to notice its change: hence the re-read after release, and another round if
    the GUIDs moved and the lock is free.  With ``handoff`` (devd mode), pending
    hooks go to a worker that inherits the lock.
    """
    first = {"forced": forced, "devd": devd, "retry": retry}
    try:
        while True:
            with r.open_history() as hist:
                left = r.run(hist, source=source, record_only=handoff is not None, **first)
                if not (left and handoff is not None):
                    r.finish(hist)
            if left and handoff is not None:  # the database is closed: nothing shared
                handoff(lock)
                lock.handed_off()
                return
            first = {"forced": None, "devd": None, "retry": False}
            lock.release()
            if r.degraded or r.settled_line is None:
                return
            try:
                if guid_line(read_guids(r.backend)) == r.settled_line:
                    return
            except NoDevice:
                return
            again = RootLock.acquire(r.paths.lock, blocking=False)
            if again is None:
                return
            lock = again
    finally:
        lock.release()


class Worker:
    """A detached worker forked by this process: ``pid``, ``poll()``, ``wait()``, ``returncode``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Reap the worker; TimeoutError if it runs longer than ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"worker pid {self.pid} still runs after {timeout} s")
            time.sleep(0.01)
        return int(self.returncode or 0)


def spawn_worker(root: str, lock: RootLock, *, source: str = "devd",
                 planner_spec: str | None = None) -> int:
    """Start the detached hook worker in a new session, handing it the locked descriptor.

    A fork of this process, not a new interpreter: the devd entry has already
    paid for Python and most imports, so the hooks start some 50 ms sooner.
    The child runs :func:`.worker.main` (the same code as ``python -m
    vmgenc_tools.worker``) with stdio on /dev/null and exits without running
    the parent's clean-up.  Returns once the child has its own session.
    """
    argv = ["--root", root, "--lock-fd", str(lock.fd), "--source", source]
    if planner_spec:
        argv += ["--planner", planner_spec]
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker
        code = 70
        try:
            os.close(ready_r)
            os.setsid()
            os.close(ready_w)  # the parent may go on: we are detached
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if null > 2:
                os.close(null)
            os.chdir("/")
            log.after_fork()
            from .worker import main as worker_main

            code = worker_main(argv)
        except BaseException:  # noqa: BLE001 - nothing may escape into the parent's code
            code = 70
        finally:
            os._exit(code)
    os.close(ready_w)
    try:
        os.read(ready_r, 1)  # EOF once the child has called setsid()
    finally:
        os.close(ready_r)
    WORKERS.append(Worker(pid))
    return pid


def wait_workers(timeout: float | None = None) -> None:
    """Wait for the workers this process started (tests; the demo)."""
    while WORKERS:
        WORKERS.pop().wait(timeout)


def _acquire_waiting(path: str) -> RootLock:
    lock = RootLock.acquire(path, blocking=False)
    if lock is not None:
        return lock
    pid = holder_pid(path)
    log.info(f"waiting for another vmgenc run{f' (pid {pid})' if pid else ''} to finish")
    lock = RootLock.acquire(path, blocking=True)
    assert lock is not None
    return lock


# -- entry points ------------------------------------------------------------------------


def summary(ch: Change) -> str:
    """One line per handled change for ``check``/``retry`` output."""
    ref = _ref(ch)
    if ch.is_no_id:
        return f"{ref} no-id: {ch.warning}"
    hooks = ", ".join(f"{r.name} {r.status}" for r in ch.latest_hooks())
    return (f"{ref} {ch.cls}: {ch.old_text or '(first seen)'} -> {ch.new_text}: {ch.status}"
            + (f" ({hooks})" if hooks else ""))


def _setup(root: str, config: Config | None) -> Config:
    config = config or load_config(root)
    log.set_level(config.log_level)
    for name in config.unknown:
        log.warning(f"rc.conf sets ${name}, which is not a vmgenc knob: ignored "
                    "(misspelt? see 'vmgenctl hooks validate')")
    return config


def check(root: str, *, source: str = "manual", expect: Generation | None = None,
          dry_run: bool = False, forced: str | None = None, planner: Planner | None = None,
          config: Config | None = None) -> int:
    """``vmgenctl check`` past the fast path: reconcile now and report."""
    config = _setup(root, config)
    if dry_run:  # the fence holds for a dry run too: it only reads
        code = dry_run_report(config, source=source, forced=forced, planner=planner)
        now = read_guids(get_backend(config.root))[0] if expect is not None else None
        return fence(now, expect, code)
    r = Reconciler(config, planner=planner)
    drive(r, _acquire_waiting(r.paths.lock), source=source, forced=forced)
    if source == "boot" and not r.degraded:
        # The boot check is through: any change it found is recorded with this boot's
        # time; otherwise it saw the recorded generation.  Either way a later manual check
        # that finds a new GUID in this boot is looking at a run-time change (classify).
        touch(r.paths.boot_checked)
    for ch in r.handled:
        print(summary(ch))
        if ch.warning and not ch.is_no_id:
            print(f"vmgenctl: warning: {ch.warning}", file=sys.stderr)
    if forced and not any(c.forced == "cli" for c in r.handled):
        print("vmgenctl: no change to classify: --class was not used", file=sys.stderr)
    if r.degraded:
        print(f"vmgenctl: {r.degraded}: the hooks ran; the next check records the change",
              file=sys.stderr)
    code = r.exit_code()
    if expect is None:
        return code
    line = r.settled_line or guid_line(read_guids(r.backend))
    return fence(Generation.from_hex(line.split()[0]), expect, code)


def retry(root: str, *, planner: Planner | None = None, config: Config | None = None) -> int:
    """``vmgenctl retry``: re-run the hooks of the last change that failed or never finished."""
    config = _setup(root, config)
    r = Reconciler(config, planner=planner)
    drive(r, _acquire_waiting(r.paths.lock), source="manual", retry=True)
    for ch in r.handled:
        print(summary(ch))
    if not r.handled:
        print("nothing to retry: the last change has settled")
    return r.exit_code()


def devd_event(root: str, acpi_path: str, timestamp: str, *, planner: Planner | None = None,
               planner_spec: str | None = None, config: Config | None = None) -> int:
    """devd's action past the fast path: record the change, leave the hooks to a worker."""
    config = _setup(root, config)
    r = Reconciler(config, planner=planner)
    snap = r.snapshot()
    line = guid_line(snap.guids)
    ensure_dir(r.paths.dbdir)
    with contextlib.suppress(OSError):
        atomic_write(r.paths.devd_event,  # a hint for the lock holder: no fsync needed
                     f"{line}\t{snap.boot_time}\t{acpi_path}\t{timestamp}\n".encode(), 0o640,
                     durable=False)
    lock = RootLock.acquire(r.paths.lock, blocking=False)
    if lock is None:
        log.debug("devd event: another vmgenc run holds the lock and will see this change")
        return exitcodes.OK
    devd = (acpi_path, timestamp)
    if not config.devd_detach:
        drive(r, lock, source="devd", devd=devd)
        return r.exit_code()

    def handoff(held: RootLock) -> None:
        pid = spawn_worker(config.root, held, planner_spec=planner_spec)
        log.info(f"devd event: hooks handed to worker pid {pid}")

    drive(r, lock, source="devd", devd=devd, handoff=handoff)
    return exitcodes.STATE if r.degraded else exitcodes.OK


def run_worker(root: str, *, lock_fd: int | None, source: str = "devd",
               planner: Planner | None = None, config: Config | None = None) -> int:
    """The detached worker: take over (or take) the lock, settle everything, release."""
    config = _setup(root, config)
    r = Reconciler(config, planner=planner)
    if lock_fd is not None:
        lock = RootLock.adopt(lock_fd, r.paths.lock)
    else:
        lock = _acquire_waiting(r.paths.lock)
    drive(r, lock, source=source)
    return r.exit_code()


def dry_run_report(config: Config, *, source: str, forced: str | None = None,
                   planner: Planner | None = None) -> int:
    """What ``check`` would do, without the lock and without writing anything."""
    r = Reconciler(config, planner=planner)
    hist = History.open_readonly(config.db_path)
    try:
        snap = r.snapshot()
        for ch in hist.pending() if hist else []:
            names = [h.name for h in r.plan(ch.cls) if h.name not in ch.ok_names()]
            print(f"would resume change #{ch.id} ({ch.cls}): "
                  f"{' '.join(names) or 'no hooks left'}")
        ch = r.detect(hist, snap, source, forced=forced)
        if ch is None:
            print(f"no change: generation {snap.generation} is recorded")
        elif ch.is_no_id:
            print(f"would record a no-id warning: {ch.warning}")
        else:
            hooks = r.plan(ch.cls)
            print(f"would record: {ch.old_text or '(first seen)'} -> {ch.new_text} as "
                  f"{ch.cls} ({ch.reason}); hooks: {' '.join(h.name for h in hooks) or 'none'}")
            ctx = HookContext(config, new_guid=ch.new_text, old_guid=ch.old_text, cls=ch.cls,
                              source=ch.source, dry_run=True)
            for hook in hooks:
                res = hook.run(ctx)
                for line in res.output.splitlines() or [res.status]:
                    print(f"  {hook.name}: {line}")
    finally:
        if hist is not None:
            hist.close()
    return exitcodes.OK
