"""Who may have written a site hook: the checks that decide whether it may run at all.

A hook runs only if the executable and every directory that leads to it —
from the root (``--root``; ``/`` on a real system) down, including the
directories a symlink passes through — is owned by root or by the trusted uid
(``vmgenc_hooks_owner_uid``, root by default) and is writable by neither its
group nor others.  Root is always trusted (``/`` and ``/usr`` are root's on
every system); anyone else who could write one of them could make the handler
run code as root.

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


class NotFound(FileNotFoundError):
    """A lookup under the root found no such file.

    ``wanted``: the whole path it was looking for, under the root (the missing
    name and what was left to look up after it); ``links``: the text of every
    symlink followed from the last name of the path on (the path's own link,
    then its target's), in order.
    """

    def __init__(self, path: str, wanted: str, links: tuple[str, ...]) -> None:
        super().__init__(errno.ENOENT, os.strerror(errno.ENOENT), path)
        self.wanted = wanted
        self.links = links


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _join_in_root(cur: str, names: list[str], root: str) -> str:
    """``cur`` + ``names``, lexically, with ``..`` stopping at the root (no lookups)."""
    for name in names:
        if name == "..":
            if cur != root:
                cur = os.path.dirname(cur)
        else:
            cur = os.path.join(cur, name)
    return cur


def resolve_in_root(path: str, root: str) -> Resolved:
    """Resolve ``path`` (a path under ``root``) as if ``root`` were ``/``.

    Raises OSError (ENOENT, ENOTDIR, ELOOP) like the kernel's lookup would; for
    ENOENT, a :class:`NotFound` naming the path that was looked for.
    """
    root = os.path.realpath(root)
    rel = os.path.relpath(os.path.abspath(path), root)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise OSError(errno.ENOENT, "not under the root " + root, path)
    pending = deque(_parts(rel))
    own = len(pending)  # how many of ``pending`` are still names of ``path`` itself
    cur = root
    dirs: list[str] = []
    hops = 0
    links: list[str] = []
    while pending:
        name = pending.popleft()
        if len(pending) < own:  # the popped name was one of ``path``'s own
            own = len(pending)
        if name == "..":
            if cur != root:
                cur = os.path.dirname(cur)
            continue
        if cur not in dirs:
            dirs.append(cur)
        nxt = os.path.join(cur, name)
        try:
            st = os.lstat(nxt)
        except FileNotFoundError:
            raise NotFound(path, _join_in_root(nxt, list(pending), root),
                           tuple(links)) from None
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            link = os.readlink(nxt)
            if not own:
                links.append(link)
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


def _owners(uid: int) -> str:
    """Who may own a hook or its directories, for a message."""
    return "root" if uid == 0 else f"root or the trusted uid {uid}"


def trusted_owner(owner: int, uid: int) -> bool:
    """Root, or the trusted uid ``vmgenc_hooks_owner_uid``."""
    return owner in (0, uid)


def dir_problems(dirs: tuple[str, ...] | list[str], uid: int) -> list[Problem]:
    """Directories owned by neither root nor ``uid``, or writable by group/others."""
    out: list[Problem] = []
    for d in dirs:
        try:
            st = os.stat(d)
        except OSError as e:
            out.append(Problem(d, f"cannot stat directory: {e.strerror}"))
            continue
        if not trusted_owner(st.st_uid, uid):
            out.append(Problem(d, f"directory owned by uid {st.st_uid}, not {_owners(uid)} "
                                  "(vmgenc_hooks_owner_uid)"))
        if _writable_by_others(st.st_mode):
            out.append(Problem(d, f"directory is group/world writable (mode "
                                  f"{stat.S_IMODE(st.st_mode):04o}): chmod go-w"))
    return out


def file_problems(path: str, uid: int) -> list[Problem]:
    """The hook file itself: regular, executable, owned by root or ``uid``, not writable by
    group/others."""
    try:
        st = os.stat(path)
    except OSError as e:
        return [Problem(path, f"cannot stat: {e.strerror}")]
    if not stat.S_ISREG(st.st_mode):
        return [Problem(path, "not a regular file")]
    out: list[Problem] = []
    if not st.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        out.append(Problem(path, "not executable: chmod +x, or rename it *.disabled"))
    if not trusted_owner(st.st_uid, uid):
        out.append(Problem(path, f"owned by uid {st.st_uid}, not {_owners(uid)} "
                                 "(vmgenc_hooks_owner_uid)"))
    if _writable_by_others(st.st_mode):
        out.append(Problem(path, f"group/world writable (mode {stat.S_IMODE(st.st_mode):04o}): "
                                 "chmod go-w"))
    return out


def _not_found(e: NotFound, root: str) -> str:
    """Why a hook path did not resolve: the target looked for, in the root and on disk."""
    if not e.links:
        return f"does not exist ({e.wanted})"
    real = os.path.realpath(root)
    rel = os.path.relpath(e.wanted, real)
    inside = "/" if rel == os.curdir else "/" + rel
    chain = " -> ".join(e.links)
    last = e.links[-1]
    if not (last.startswith("/") and os.path.normpath(last) == inside):
        chain += f", i.e. {inside}"  # a relative link, or one the root's symlinks redirect
    where = "" if real == "/" else f" under the root ({e.wanted})"
    return f"symlink to {chain}, which does not exist{where}"


def check_hook(path: str, root: str, uid: int) -> tuple[str | None, list[Problem]]:
    """``(file to execute, problems)``; the file is None when ``path`` cannot be resolved.

    The hook may run only when the problem list is empty.
    """
    try:
        res = resolve_in_root(path, root)
    except NotFound as e:
        return None, [Problem(path, _not_found(e, root))]
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
