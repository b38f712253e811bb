"""Built-in hook ``entropy``: new seed files for the next boot, like ``service random saveseed``.

rc.d/random (``random_stop``, which ``saveseed`` runs) writes, with umask 077,
4096 bytes from /dev/random to ``${entropy_file}`` (default ``/entropy``;
``/var/db/entropy-file`` when that cannot be created, e.g. a read-only root)
and to ``${entropy_boot_file}`` (default ``/boot/entropy``), mode 0600,
``chflags nodump``, fsync'ed.  ``NO`` disables either file.  A clone would
otherwise boot from the same seed as its original.

Here each file is replaced atomically (temp + fsync + rename), so a crash
leaves the previous seed, never a short one.

What the kernel got (freebsd-facts.md §1.3-§1.5): at attach and on each real
change vmgenc(4) harvests the 16-byte GUID into random(4) as two 8-byte
``RANDOM_PURE_VMGENID`` events (``random_harvest_direct``), which Fortuna
sends to pool 0 "for immediate next use".  That is input to the pools, not
a proof that the generator has been rekeyed by the time this hook runs; and
the GUID is no secret (the hypervisor chose it and can read it): it makes a
clone's state differ from its original's, it does not make it unpredictable.

Where the seed comes from: the running kernel's ``/dev/random`` (never
``${root}/dev/random``, a file in the tree being handled), as rc.d/random's
``dd`` reads it; ``os.urandom`` (the same kernel generator) only where that
device node does not exist.  Nothing is derived from the GUID here.

Why it is right to write it now all the same: the seed on disk is a copy of
the original's and so shared with every clone of it, for certain; the new one
is drawn from a generator that has at least the new GUID, and what it has
harvested since this machine was resumed or booted, in its pools.  It is read
at the next boot, where it is mixed with that boot's own harvest, including
the GUID again at attach.  At worst (no reseed yet and nothing else
harvested) it is as good as the old one; in every other case it is better.
"""

from __future__ import annotations

import errno
import os

from . import atomic, rcvars
from .base import HookContext
from .builtin import BuiltinHook, HookFailed, Report, shown

SEED_BYTES = 4096
SEED_MODE = 0o600
RANDOM_DEVICE = "/dev/random"
DEFAULTS = {"entropy_file": "/entropy", "entropy_boot_file": "/boot/entropy"}
FALLBACK_FILE = "/var/db/entropy-file"
_FALLBACK_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)


def random_bytes(n: int = SEED_BYTES) -> bytes:
    """``n`` bytes from the kernel's random device (as ``dd if=/dev/random`` reads)."""
    try:
        fd = os.open(RANDOM_DEVICE, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return os.urandom(n)
    try:
        out = bytearray()
        while len(out) < n:
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise OSError(errno.EIO, "short read", RANDOM_DEVICE)
            out += chunk
        return bytes(out)
    finally:
        os.close(fd)


def seed_files(ctx: HookContext, report: Report) -> list[tuple[str, str, str | None]]:
    """``(path as configured, real path, fallback real path)`` for each seed file to refresh."""
    cfg = ctx.config
    # rc.d/random reads them as ${entropy_file:=/entropy}: set but empty means the default
    v = {k: val or DEFAULTS[k] for k, val in rcvars.read(ctx.root, "random", DEFAULTS).items()}
    out: list[tuple[str, str, str | None]] = []
    if rcvars.disabled(v["entropy_file"]):
        report.say("entropy_file=NO: no entropy file to refresh")
    else:
        fallback = cfg.path(FALLBACK_FILE)
        usable = os.path.isdir(os.path.dirname(fallback))
        out.append((v["entropy_file"], cfg.path(v["entropy_file"]), fallback if usable else None))
    boot = v["entropy_boot_file"]
    if rcvars.disabled(boot):
        report.say("entropy_boot_file=NO: no early-boot entropy file to refresh")
    elif not os.path.isdir(os.path.dirname(cfg.path(boot))):
        report.say(f"{os.path.dirname(boot)} does not exist: {boot} not written")
    else:
        out.append((boot, cfg.path(boot), None))
    return out


class EntropyHook(BuiltinHook):
    """Refresh /entropy and /boot/entropy."""

    name = "entropy"

    def apply(self, ctx: HookContext, report: Report) -> None:
        failures: list[str] = []
        for name, path, fallback in seed_files(ctx, report):
            if ctx.dry_run:
                for stale in atomic.stale_files(path):
                    report.would(f"remove {shown(ctx, stale)} (left by an interrupted run)")
                report.would(f"write {SEED_BYTES} bytes from {RANDOM_DEVICE} to {name} "
                             f"(mode {SEED_MODE:04o}), atomically")
                continue
            try:
                written = self._refresh(path, fallback)
            except OSError as e:
                failures.append(f"{name}: {e.strerror}")
                report.warn(f"cannot write {name}: {e.strerror}")
                continue
            report.say(f"refreshed {shown(ctx, written)} ({SEED_BYTES} bytes, mode "
                       f"{SEED_MODE:04o})")
        if failures:
            raise HookFailed("seed files not refreshed: " + "; ".join(failures))

    @staticmethod
    def _refresh(path: str, fallback: str | None) -> str:
        atomic.clean_stale(path)
        try:
            atomic.write_atomic(path, random_bytes(), SEED_MODE, nodump=True)
            return path
        except OSError as e:
            if fallback is None or e.errno not in _FALLBACK_ERRNOS:
                raise
        atomic.clean_stale(fallback)
        atomic.write_atomic(fallback, random_bytes(), SEED_MODE, nodump=True)
        return fallback
