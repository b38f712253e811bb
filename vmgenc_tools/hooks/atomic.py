"""Crash-safe file replacement for the built-in hooks: temp file → fsync → rename → fsync dir.

Temp files live next to their target (same file system, so the rename is
atomic) and carry a recognisable name, ``.vmgenc-tmp-<target>.<8 hex>``
(plus ``.pub`` for an SSH public key), so that files left by a crash
(power loss, SIGKILL) are found and removed on the next run.
"""

from __future__ import annotations

import errno
import os
import re
import stat

TMP_MARK = ".vmgenc-tmp-"


def temp_path(target: str) -> str:
    """A fresh temp name in ``target``'s directory."""
    d, base = os.path.split(target)
    return os.path.join(d, f"{TMP_MARK}{base}.{os.urandom(4).hex()}")


def _stale_re(base: str) -> re.Pattern[str]:
    return re.compile(re.escape(TMP_MARK + base) + r"\.[0-9a-f]{8}(\.pub)?\Z")


def clean_stale(target: str) -> list[str]:
    """Remove temp files an earlier, interrupted run left for ``target``; return them."""
    d, base = os.path.split(target)
    pattern = _stale_re(base)
    removed: list[str] = []
    try:
        entries = list(os.scandir(d or "."))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for e in entries:
        if pattern.match(e.name) and not e.is_dir(follow_symlinks=False):
            try:
                os.unlink(e.path)
                removed.append(e.path)
            except FileNotFoundError:
                pass
    return removed


def stale_files(target: str) -> list[str]:
    """The temp files :func:`clean_stale` would remove (for dry-run reports)."""
    d, base = os.path.split(target)
    pattern = _stale_re(base)
    try:
        return sorted(os.path.join(d, n) for n in os.listdir(d or ".") if pattern.match(n))
    except (FileNotFoundError, NotADirectoryError):
        return []


def fsync_path(path: str) -> None:
    """fsync a file's data (opened read-only: fsync works on any descriptor)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on a directory
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def match_owner(fd: int, target: str) -> None:
    """Give the new file the old one's owner and group (root only; best effort)."""
    if os.geteuid() != 0:
        return
    try:
        st = os.stat(target, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        os.fchown(fd, st.st_uid, st.st_gid)


def set_nodump(fd: int) -> None:
    """``chflags nodump`` where the OS has it (rc.d/random does this for seed files)."""
    chflags = getattr(os, "chflags", None)
    flag = getattr(stat, "UF_NODUMP", None)
    if chflags is None or flag is None or not hasattr(os, "fstat"):
        return
    try:
        os.fchflags(fd, os.fstat(fd).st_flags | flag)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass


def write_atomic(target: str, data: bytes, mode: int, *, nodump: bool = False) -> None:
    """Replace ``target`` with ``data`` so that a reader sees the old or the new file, whole.

    On any error the temp file is removed and ``target`` is untouched.
    """
    tmp = temp_path(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        try:
            os.fchmod(fd, mode)
            match_owner(fd, target)
            if nodump:
                set_nodump(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(os.path.dirname(target))
