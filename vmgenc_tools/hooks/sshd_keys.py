"""Built-in hook ``sshd_keys``: new SSH host keys for a clone, with no moment without a key.

What peers got wrong (peers.md §3 D/E): deleting the keys first and
generating later (sshd starting in between has no key), recreating fewer
types than were deleted, ignoring ``HostKey`` lines that name other paths.
Here, for each configured type (``vmgenc_ssh_keytypes``):

1. the key files to replace are found: the ``HostKey`` lines of
   ``${root}${vmgenc_sshd_config}`` (``Include`` followed; paths mapped under
   the root), plus the default ``/etc/ssh/ssh_host_<type>_key`` if it exists
   (a clone must not keep the original's private key even in an unused file),
   or is sshd's default because no ``HostKey`` line exists;
2. stale temp files of an interrupted run are removed;
3. every new pair is generated *in parallel* by the real ``ssh-keygen``
   into temp files in the target's own directory, fsync'ed;
4. as soon as *its* ``ssh-keygen`` has finished (an Ed25519 key does not wait
   for RSA: sshd loads host keys for every connection, so it serves the new
   key from then on), each private key, then its public key, is renamed over
   the old one (an atomic replace: the name always points at a whole key, old
   or new), modes 0600 / 0644, and the directory is fsync'ed; a type whose
   ``ssh-keygen`` fails keeps its old key and the hook fails; past
   ``vmgenc_hook_timeout`` the ``ssh-keygen`` still running are terminated
   (then killed), their keys stay as they were and the hook is recorded
   ``timeout``; the pairs already live are still reported and sshd reloaded;
5. keys of types not configured are left alone (with a warning: the clone
   still shares them) unless ``vmgenc_ssh_remove_other=YES``; even then a key
   that a ``HostKey`` line names is kept, with a warning naming that line:
   sshd cannot load a named key that is gone (``Unable to load host key``, and
   no start at all when it was the last one), WALinuxAgent's mistake
   (peers.md §3 E, WAA-353).  Only keys no ``HostKey`` line names (sshd's
   defaults when there is no ``HostKey`` line, or stray files) are removed;
6. sshd is sent SIGHUP only if the pid in ``${root}${vmgenc_sshd_pidfile}``
   is a running sshd that would not serve the new keys otherwise
   (:func:`reload_needed`): OpenSSH before 9.8 re-executes itself for every
   connection and loads the host keys from disk there, so the renames are
   enough, and a SIGHUP would only make sshd close its listening socket and
   re-execute, refusing connections meanwhile; OpenSSH 9.8 and later hands
   the listener's keys to ``sshd-session``, and an sshd started with ``-r``
   (no re-execution) loaded them once, so those are reloaded, as is an sshd
   whose version cannot be read;
7. the new fingerprints (``ssh-keygen -l``) go to syslog at notice, to the
   hook's output (the history; stderr when run from a terminal or at boot) and
   to ``${root}/dev/console`` (the detached devd worker has no terminal).
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

from ..plain import Plain
from . import atomic
from .base import HookContext
from .builtin import BuiltinHook, HookFailed, HookTimeout, Report, shown, to_console
from .site import KILL_GRACE_S, SAFE_PATH

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
SSH_DIR = "/etc/ssh"
DEFAULT_KEY = SSH_DIR + "/ssh_host_{}_key"
_NAME_TYPE = re.compile(r"ssh_host_(rsa|dsa|ecdsa|ed25519)_key\Z")
_PUB_TYPES = {
    "ssh-rsa": ("rsa", None), "ssh-dss": ("dsa", None), "ssh-ed25519": ("ed25519", None),
    "ecdsa-sha2-nistp256": ("ecdsa", 256), "ecdsa-sha2-nistp384": ("ecdsa", 384),
    "ecdsa-sha2-nistp521": ("ecdsa", 521),
}
_FP_TYPES = {"RSA": "rsa", "DSA": "dsa", "ECDSA": "ecdsa", "ED25519": "ed25519"}
MAX_INCLUDE_DEPTH = 16
# the console block, in cloud-init's keys_to_console form so that console scrapers find it
CONSOLE_BEGIN = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
CONSOLE_END = "-----END SSH HOST KEY FINGERPRINTS-----"


class KeyFile(Plain):
    """One host key file: its real path, its type (None if unknown), ECDSA curve size.

    ``named_by`` is the ``HostKey`` line that names the file (None: no line does).
    """

    def __init__(self, path: str, ktype: str | None = None, bits: int | None = None,
                 named_by: str | None = None) -> None:
        self.path = path
        self.ktype = ktype
        self.bits = bits
        self.named_by = named_by


class SshdConfig(Plain):
    """What sshd_config says about host keys.

    ``origins`` maps each ``host_keys`` path to the first line naming it, as
    ``"<text>" (<file> line <n>)`` (the file as the system sees it).
    """

    def __init__(self, host_keys: list[str], certificates: list[str],
                 origins: dict[str, str] | None = None) -> None:
        self.host_keys = host_keys
        self.certificates = certificates
        self.origins = {} if origins is None else origins


def _map(ctx: HookContext, p: str) -> str:
    """A path from sshd_config under the root (left alone if it already is under it)."""
    root = ctx.root.rstrip("/")
    if root and (p == root or p.startswith(root + "/")):
        return p
    return ctx.config.path(p if p.startswith("/") else "/" + p)


def _split(rest: str) -> list[str]:
    try:
        return shlex.split(rest, comments=True)
    except ValueError:
        return rest.split()


def read_sshd_config(ctx: HookContext, path: str | None = None, depth: int = 0) -> SshdConfig:
    """``HostKey`` and ``HostCertificate`` lines, following ``Include``, up to ``Match``."""
    out = SshdConfig([], [])
    path = path or ctx.config.path(ctx.config.sshd_config)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return out
    for number, line in enumerate(lines, 1):
        m = re.match(r"\s*([A-Za-z]+)(?:\s*=\s*|\s+)(.*)", line)
        if not m or line.lstrip().startswith("#"):
            continue
        key, args = m.group(1).lower(), _split(m.group(2))
        if key == "match":
            break
        if key == "hostkey" and args:
            mapped = _map(ctx, args[0])
            out.host_keys.append(mapped)
            where = f"{shown(ctx, path)} line {number}"
            out.origins.setdefault(mapped, f'"{line.strip()}" ({where})')
        elif key == "hostcertificate" and args:
            out.certificates.append(_map(ctx, args[0]))
        elif key == "include" and depth < MAX_INCLUDE_DEPTH:
            for pattern in args:
                full = _map(ctx, pattern if pattern.startswith("/") else f"{SSH_DIR}/{pattern}")
                for inc in sorted(glob.glob(full)):
                    sub = read_sshd_config(ctx, inc, depth + 1)
                    out.host_keys += sub.host_keys
                    out.certificates += sub.certificates
                    for k, origin in sub.origins.items():
                        out.origins.setdefault(k, origin)
    return out


def key_type(path: str, keygen: str | None) -> tuple[str | None, int | None]:
    """The key type of ``path`` (from its .pub, its name, or ``ssh-keygen -l``)."""
    try:
        with open(path + ".pub", encoding="ascii", errors="replace") as f:
            first = f.read(200).split()
        if first and first[0] in _PUB_TYPES:
            return _PUB_TYPES[first[0]]
    except OSError:
        pass
    m = _NAME_TYPE.search(os.path.basename(path))
    if m:
        return m.group(1), None
    if keygen and os.path.isfile(path):
        r = subprocess.run([keygen, "-l", "-f", path], capture_output=True, text=True,
                           timeout=30, check=False, stdin=subprocess.DEVNULL)
        m = re.search(r"\((\w+)\)\s*$", r.stdout.strip())
        if r.returncode == 0 and m and m.group(1) in _FP_TYPES:
            bits = int(r.stdout.split()[0]) if m.group(1) == "ECDSA" else None
            return _FP_TYPES[m.group(1)], bits
    return None, None


def _which(name: str, path: str | None) -> str | None:
    """``shutil.which`` for one command name (shutil costs the worker 4 ms of imports)."""
    for d in (path if path is not None else os.defpath).split(os.pathsep):
        exe = os.path.join(d, name)
        if d and os.access(exe, os.X_OK) and not os.path.isdir(exe):
            return exe
    return None


def find_keygen() -> str:
    exe = _which("ssh-keygen", SAFE_PATH) or _which("ssh-keygen", os.environ.get("PATH"))
    if exe is None:
        raise HookFailed("ssh-keygen not found (install OpenSSH; looked in " + SAFE_PATH + ")")
    return exe


def _same_file(a: str, b: str) -> bool:
    """``a`` and ``b`` name one file (same path once normalised, or same inode)."""
    if os.path.normpath(a) == os.path.normpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (or cannot be looked at)
        return False


def named_by(conf: SshdConfig, path: str) -> str | None:
    """The ``HostKey`` line that names ``path`` (by any spelling, link or hard link), if any."""
    if path in conf.origins:
        return conf.origins[path]
    for p in conf.host_keys:
        if _same_file(path, p):
            return conf.origins.get(p, p)
    return None


def plan_keys(ctx: HookContext, report: Report, keygen: str | None
              ) -> tuple[list[KeyFile], list[KeyFile]]:
    """``(to replace, of other types)``: the key files this run deals with."""
    types = ctx.config.ssh_keytypes
    conf = read_sshd_config(ctx)
    seen: set[str] = set()
    replace: list[KeyFile] = []
    other: list[KeyFile] = []

    def add(path: str, listed: bool) -> None:
        if path in seen:
            return
        seen.add(path)
        kt, bits = key_type(path, keygen)
        if kt is None:
            if listed:
                report.warn(f"HostKey {shown(ctx, path)}: type unknown (no key, no .pub, "
                            "no ssh_host_<type>_key name): left alone")
            return
        (replace if kt in types else other).append(KeyFile(path, kt, bits,
                                                           named_by(conf, path)))

    for p in conf.host_keys:
        add(p, True)
    for t in types:
        default = ctx.config.path(DEFAULT_KEY.format(t))
        if not conf.host_keys or os.path.exists(default):
            add(default, False)
    for p in sorted(glob.glob(ctx.config.path(SSH_DIR + "/ssh_host_*_key"))):
        add(p, False)
    for t in types:
        if not any(k.ktype == t for k in replace):
            report.say(f"no {t} key: sshd_config names no {t} HostKey, none created")
    missing_dir = [k for k in replace if not os.path.isdir(os.path.dirname(k.path))]
    for k in missing_dir:
        report.say(f"{shown(ctx, os.path.dirname(k.path))} does not exist: no {k.ktype} key")
    replace = [k for k in replace if k not in missing_dir]
    for cert in conf.certificates:
        report.warn(f"HostCertificate {shown(ctx, cert)} certifies a key being replaced: "
                    "sign the new key and replace the certificate")
    return replace, other


def keygen_command(keygen: str, k: KeyFile, tmp: str, ctx: HookContext) -> list[str]:
    cmd = [keygen, "-q", "-t", str(k.ktype), "-N", "", "-C", f"root@{os.uname().nodename}"]
    if k.ktype == "rsa":
        cmd += ["-b", str(ctx.config.ssh_rsa_bits)]
    elif k.ktype == "ecdsa" and k.bits in (384, 521):
        cmd += ["-b", str(k.bits)]
    return cmd + ["-f", tmp]


def generate(keygen: str, keys: list[KeyFile], ctx: HookContext,
             ready: Callable[[KeyFile, str], None]) -> list[str]:
    """Run one ``ssh-keygen`` per key, all at once; hand each pair to ``ready`` as it is made.

    ``ready(key, temp path)`` runs as soon as that key's ``ssh-keygen`` has
    exited 0, while the others still run: an Ed25519 key (milliseconds) goes
    live without waiting for RSA (up to seconds).  Returns one message per
    failed ``ssh-keygen`` (that key stays as it was).  An exception from
    ``ready``, or the hook timeout (:class:`HookTimeout`), stops the others
    (terminated, then killed after :data:`KILL_GRACE_S`); temp files never
    outlive this call.
    """
    import selectors

    deadline = time.monotonic() + ctx.config.hook_timeout
    sel = selectors.DefaultSelector()
    temps: dict[str, str] = {}
    procs: list[subprocess.Popen] = []
    errors: list[str] = []
    try:
        for k in sorted(keys, key=lambda k: k.ktype == "rsa"):  # the slow type last
            temps[k.path] = atomic.temp_path(k.path)
            p = subprocess.Popen(keygen_command(keygen, k, temps[k.path], ctx),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, env={"PATH": SAFE_PATH})
            procs.append(p)
            sel.register(p.stdout, selectors.EVENT_READ, (k, p, []))  # type: ignore[arg-type]
        while sel.get_map():
            left = deadline - time.monotonic()
            events = sel.select(max(0.0, left)) if left > 0 else []
            if not events:
                raise HookTimeout(f"ssh-keygen did not finish within {ctx.config.hook_timeout} s:"
                                  " stopped, the keys it was making were left as they were")
            for key, _ in events:
                k, p, out = key.data
                chunk = os.read(key.fd, 65536)
                if chunk:
                    out.append(chunk)
                    continue
                sel.unregister(key.fileobj)
                p.stdout.close()
                p.wait()
                if p.returncode == 0:
                    ready(k, temps[k.path])
                    continue
                msg = b"".join(out).decode(errors="replace").strip().splitlines()
                errors.append(f"ssh-keygen -t {k.ktype}: exit {p.returncode}"
                              + (f": {msg[-1]}" if msg else ""))
    finally:
        sel.close()
        stop(procs)
        for p in procs:
            if p.stdout and not p.stdout.closed:
                p.stdout.close()
        remove_pairs(temps.values())
    return errors


def stop(procs: list[subprocess.Popen]) -> None:
    """Terminate the ``ssh-keygen`` processes still running, then kill what outlives the grace."""
    running = [p for p in procs if p.poll() is None]
    for p in running:
        p.terminate()
    deadline = time.monotonic() + KILL_GRACE_S
    for p in running:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def remove_pairs(paths: Iterable[str]) -> None:
    """Unlink key files and their ``.pub`` (missing ones are fine)."""
    for path in list(paths):
        for f in (path, path + ".pub"):
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass


def settle(target: str, tmp: str) -> None:
    """Modes, owner and fsync of a generated pair before it goes live."""
    for src, old, mode in ((tmp, target, PRIVATE_MODE), (tmp + ".pub", target + ".pub",
                                                         PUBLIC_MODE)):
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            os.fchmod(fd, mode)
            atomic.match_owner(fd, old)
            os.fsync(fd)
        finally:
            os.close(fd)


def fingerprint(keygen: str, pub: str) -> str:
    r = subprocess.run([keygen, "-l", "-f", pub], capture_output=True, text=True, timeout=30,
                       check=False, stdin=subprocess.DEVNULL)
    return r.stdout.strip() or f"(no fingerprint: {r.stderr.strip()})"


def sshd_pid(ctx: HookContext) -> tuple[int | None, str]:
    """The pid of the running sshd from its pidfile, or None and why not."""
    import psutil

    pidfile = ctx.config.path(ctx.config.sshd_pidfile)
    try:
        with open(pidfile) as f:
            pid = int(f.readline().strip())
    except FileNotFoundError:
        return None, f"sshd not running (no {ctx.config.sshd_pidfile})"
    except (OSError, ValueError):
        return None, f"sshd not running ({ctx.config.sshd_pidfile} unreadable)"
    try:
        proc = psutil.Process(pid)
        names = [proc.name()] + proc.cmdline()[:1]
        if proc.status() == psutil.STATUS_ZOMBIE:
            raise psutil.NoSuchProcess(pid)
    except psutil.NoSuchProcess:
        return None, f"sshd not running (stale {ctx.config.sshd_pidfile}: no pid {pid})"
    except psutil.Error:
        names = []
    if names and not any("sshd" in os.path.basename(n) for n in names):
        return None, f"pid {pid} in {ctx.config.sshd_pidfile} is {names[0]!r}, not sshd"
    return pid, f"sshd pid {pid}"


# OpenSSH 9.8 split sshd: the listener loads the host keys and sshd-session gets them
# from it, so a key renamed into place is served only after a SIGHUP.
KEYS_FROM_LISTENER = (9, 8)


def reload_decision(cmdline: list[str], version_text: str) -> tuple[bool, str]:
    """From sshd's command line and its ``-V`` output: SIGHUP needed?, and why.

    The words are split again: on FreeBSD the listener rewrites its process
    title and psutil returns it as one string (``sshd: /usr/sbin/sshd -r
    [listener] …``); ``-r`` may also stand in a cluster (``-Dr``).  A value
    that looks like a cluster with an ``r`` only errs towards a reload.
    """
    words = [w for arg in cmdline for w in arg.split()]
    if any(re.fullmatch(r"-[A-Za-z]*r[A-Za-z]*", w) for w in words[1:]):
        return True, "sshd runs with -r (no re-execution: host keys loaded once)"
    m = re.search(r"OpenSSH_(\d+)\.(\d+)", version_text)
    if m is None:
        return True, "its version cannot be read"
    major, minor = int(m.group(1)), int(m.group(2))
    if (major, minor) >= KEYS_FROM_LISTENER:
        return True, f"OpenSSH {major}.{minor} hands the listener's host keys to sshd-session"
    return False, (f"OpenSSH {major}.{minor} loads host keys for every connection: the new "
                   "keys are served already (a SIGHUP would refuse connections while sshd "
                   "restarts)")


def reload_needed(pid: int) -> tuple[bool, str]:
    """Whether sshd ``pid`` needs a SIGHUP to serve new host keys, and why."""
    import psutil

    try:
        proc = psutil.Process(pid)
        cmdline = proc.cmdline()
        exe = proc.exe() or (cmdline[0] if cmdline else "")
    except psutil.Error:
        return True, "sshd's command line cannot be read"
    try:
        out = subprocess.run([exe, "-V"], capture_output=True, text=True, timeout=10,
                             stdin=subprocess.DEVNULL)
        text = out.stderr + out.stdout
    except (OSError, subprocess.SubprocessError):
        text = ""
    return reload_decision(cmdline, text)


class SshdKeysHook(BuiltinHook):
    """Replace the SSH host keys atomically, then reload sshd if it runs."""

    name = "sshd_keys"

    def apply(self, ctx: HookContext, report: Report) -> None:
        keygen = find_keygen()
        replace, other = plan_keys(ctx, report, keygen)
        remove: list[KeyFile] = []
        if other and not ctx.config.ssh_remove_other:
            report.warn("left alone (vmgenc_ssh_remove_other=NO), still shared with the "
                        "original: " + ", ".join(shown(ctx, k.path) for k in other))
        elif other:
            remove = [k for k in other if k.named_by is None]
            for k in other:
                if k.named_by is not None:  # sshd would fail to load it (WAA-353)
                    report.warn(f"{shown(ctx, k.path)} ({k.ktype}, not in "
                                "vmgenc_ssh_keytypes) is kept despite vmgenc_ssh_remove_other"
                                f"=YES: named by {k.named_by}, and sshd fails to load a "
                                "named key that is gone; it is still shared "
                                f"with the original: add {k.ktype} to vmgenc_ssh_keytypes, or "
                                "remove that HostKey line")
        if ctx.dry_run:
            pid, why = sshd_pid(ctx)
            self._dry_run(ctx, report, replace, remove, pid, why)
            return
        for k in replace:
            atomic.clean_stale(k.path)
        done: list[KeyFile] = []

        def go_live(k: KeyFile, tmp: str) -> None:
            """This pair is whole: make it the key (sshd serves it from the next connection)."""
            settle(k.path, tmp)
            atomic.fsync_dir(os.path.dirname(k.path))
            os.replace(tmp, k.path)
            os.replace(tmp + ".pub", k.path + ".pub")
            done.append(k)

        aborted: Exception | None = None
        try:
            errors = generate(keygen, replace, ctx, go_live) if replace else []
        except (HookFailed, OSError) as e:  # the pairs already live are reported below
            errors, aborted = [], e
        if aborted is not None:
            remove = []  # the configured types did not all make it: keep the others
        for k in remove:
            remove_pairs([k.path])
            report.say(f"removed {shown(ctx, k.path)} ({k.ktype}, not in vmgenc_ssh_keytypes,"
                       " named by no HostKey line)")
        for d in sorted({os.path.dirname(k.path) for k in done + remove}):
            atomic.fsync_dir(d)
        prints: list[str] = []
        for k in done:
            fp = fingerprint(keygen, k.path + ".pub")
            report.notice(f"new {k.ktype} host key {shown(ctx, k.path)}: {fp}")
            prints.append(f"{fp} {shown(ctx, k.path)}")
        if prints and to_console(ctx, [CONSOLE_BEGIN, *prints, CONSOLE_END]):
            report.say("new fingerprints written to the console")
        if not replace:
            report.say("no host keys to replace")
        pid, why = sshd_pid(ctx)
        if pid is None:
            report.say(f"{why}: not reloaded")
        elif done or remove:
            needed, why = reload_needed(pid)
            if needed:
                os.kill(pid, signal.SIGHUP)
                report.say(f"reloaded sshd (SIGHUP to pid {pid}: {why})")
            else:
                report.say(f"sshd pid {pid} not reloaded: {why}")
        if aborted is not None:
            raise aborted
        if errors:
            raise HookFailed("; ".join(errors))

    @staticmethod
    def _dry_run(ctx: HookContext, report: Report, replace: list[KeyFile],
                 remove: list[KeyFile], pid: int | None, why: str) -> None:
        for k in replace:
            for stale in atomic.stale_files(k.path):
                report.would(f"remove {shown(ctx, stale)} (left by an interrupted run)")
            verb = "replace" if os.path.exists(k.path) else "create"
            size = f" {ctx.config.ssh_rsa_bits}-bit" if k.ktype == "rsa" else ""
            report.would(f"{verb} {shown(ctx, k.path)}(.pub) with a new{size} {k.ktype} key")
        for k in remove:
            report.would(f"remove {shown(ctx, k.path)}(.pub) ({k.ktype} not configured, "
                         "named by no HostKey line)")
        if pid is None:
            report.would(f"not reload sshd: {why}")
        else:
            needed, why = reload_needed(pid)
            if needed:
                report.would(f"reload sshd (SIGHUP to pid {pid}: {why})")
            else:
                report.would(f"not reload sshd pid {pid}: {why}")
