"""Who may have written a site hook: the checks that decide whether it may run at all.

A hook runs only if the executable and every directory that leads to it —
from the root (``--root``; ``/`` on a real system) down, including the
directories a symlink passes through — is owned by the trusted uid
(``vmgenc_hooks_owner_uid``, root by default) and writable by nobody else.
Anyone else who could write one of them could make the handler run code as
root.

Symlinks are resolved the way a chroot at ``--root`` would resolve them
(absolute targets start again at the root, ``..`` stops there), so the
path that is checked is the path that is executed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque

from ..plain import Frozen

MAX_SYMLINKS = 32  # MAXSYMLINKS on FreeBSD


class Problem(Frozen):
    """One reason a hook (or the hooks directory) cannot be trusted."""

    path: str
    reason: str

    def __init__(self, path: str, reason: str) -> None:
        self._set(locals())

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Resolved(Frozen):
    """``target``: the file a path finally names; ``dirs``: every directory looked into."""

    target: str
    dirs: tuple[str, ...]

    def __init__(self, target: str, dirs: tuple[str, ...]) -> None:
        self._set(locals())


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(path: str, root: str) -> Resolved:
    """Resolve ``path`` (a path under ``root``) as if ``root`` were ``/``.

    Raises OSError (ENOENT, ENOTDIR, ELOOP) like the kernel's lookup would.
    """
    root = os.path.realpath(root)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise OSError(errno.ENOENT, "not under the root " + root, path)
    pending = deque(_parts(rel))
    cur = root
    dirs: list[str] = []
    hops = 0
    while pending:
        name = pending.popleft()
        if name == "..":
            if cur != root:
                cur = os.path.dirname(cur)
            continue
        if cur not in dirs:
            dirs.append(cur)
        nxt = os.path.join(cur, name)
        st = os.lstat(nxt)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            link = os.readlink(nxt)
            if link.startswith("/"):
                cur = root
            pending.extendleft(reversed(_parts(link)))
            continue
        if pending and not stat.S_ISDIR(st.st_mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), nxt)
        cur = nxt
    if cur == root and not dirs:
        dirs.append(root)
    return Resolved(cur, tuple(dirs))


def _writable_by_others(mode: int) -> bool:
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def dir_problems(dirs: tuple[str, ...] | list[str], uid: int) -> list[Problem]:
    """Directories not owned by ``uid`` or writable by group/others."""
    out: list[Problem] = []
    for d in dirs:
        try:
            st = os.stat(d)
        except OSError as e:
            out.append(Problem(d, f"cannot stat directory: {e.strerror}"))
            continue
        if st.st_uid != uid:
            out.append(Problem(d, f"directory owned by uid {st.st_uid}, not the trusted uid "
                                  f"{uid} (vmgenc_hooks_owner_uid)"))
        if _writable_by_others(st.st_mode):
            out.append(Problem(d, f"directory is group/world writable (mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}): chmod go-w"))
    return out


def file_problems(path: str, uid: int) -> list[Problem]:
    """The hook file itself: regular, executable, owned by ``uid``, not writable by others."""
    try:
        st = os.stat(path)
    except OSError as e:
        return [Problem(path, f"cannot stat: {e.strerror}")]
    if not stat.S_ISREG(st.st_mode):
        return [Problem(path, "not a regular file")]
    out: list[Problem] = []
    if not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        out.append(Problem(path, "not executable: chmod +x, or rename it *.disabled"))
    if st.st_uid != uid:
        out.append(Problem(path, f"owned by uid {st.st_uid}, not the trusted uid {uid} "
                                 "(vmgenc_hooks_owner_uid)"))
    if _writable_by_others(st.st_mode):
        out.append(Problem(path, f"group/world writable (mode {stat.S_IMODE(st.st_mode):04o}): "
                                 "chmod go-w"))
    return out


def check_hook(path: str, root: str, uid: int) -> tuple[str | None, list[Problem]]:
    """``(file to execute, problems)``; the file is None when ``path`` cannot be resolved.

    The hook may run only when the problem list is empty.
    """
    try:
        res = resolve_in_root(path, root)
    except OSError as e:
        return None, [Problem(path, f"cannot resolve: {e.strerror}")]
    problems = file_problems(res.target, uid)
    if res.target != os.path.abspath(path):
        problems = [Problem(path, f"symlink target {p.path}: {p.reason}") for p in problems]
    problems += dir_problems(res.dirs, uid)
    return res.target, problems


def check_dir(path: str, root: str, uid: int) -> list[Problem]:
    """The hooks directory and every directory above it, up to and including the root."""
    try:
        res = resolve_in_root(path, root)
    except FileNotFoundError:
        return []
    except OSError as e:
        return [Problem(path, f"cannot resolve: {e.strerror}")]
    if not os.path.isdir(res.target):
        return [Problem(path, "the hooks directory is not a directory")]
    return dir_problems(list(res.dirs) + [res.target], uid)
