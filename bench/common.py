"""Shared bench plumbing: alternate our command and its baseline, report the median ratio.

Absolute times vary by machine; the ratio against a baseline measured in the same
run, pair by pair, is the claim.  Every script measures ``ours`` and its baseline
alternately (``pairs``: A B, B A, A B, …), takes the median of the per-pair ratios
(``row``), prints a table (``print_rows``) and exits 1 when a target is missed.

Fair conditions for Python start-up (:func:`prepare`): the package is byte-compiled
once and ``PYTHONDONTWRITEBYTECODE`` is dropped from the environment of everything
measured, so no run recompiles modules (an installed package ships its ``.pyc``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PYTHON = sys.executable  # the interpreter of the console scripts (their #! line)
VMGENCTL = os.path.join(BIN, "vmgenctl")
VMGENC_DEVD = os.path.join(BIN, "vmgenc-devd")
FIRST_GUID = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
VGEN = "\\_SB_.VGEN"  # QEMU's vmgenid device path, as devd passes $type


class Row:
    """One measured line of a table.

    ``target`` limits the ratio (``limit="ratio"``) or our own median
    (``limit="ours"``, in the row's unit); None reports without a target.
    """

    def __init__(self, name: str, ours: float, base: float, ratio: float,
                 target: float | None, *, unit: str = "ms", limit: str = "ratio",
                 n: int = 0) -> None:
        self.name, self.ours, self.base, self.ratio = name, ours, base, ratio
        self.target, self.unit, self.limit, self.n = target, unit, limit, n

    @property
    def ok(self) -> bool:
        if self.target is None:
            return True
        return (self.ratio if self.limit == "ratio" else self.ours) <= self.target

    def target_text(self) -> str:
        if self.target is None:
            return "(report)"
        if self.limit == "ratio":
            return f"<= {self.target:.2f}x"
        return f"<= {self.target:g} {self.unit}"


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pairs(ours: Callable[[], object], base: Callable[[], object], n: int = 15,
          warmup: int = 2) -> tuple[list[float], list[float]]:
    """Run ours and base alternately ``n`` times (after ``warmup`` of each), in seconds.

    The order flips every pair (A B, B A, …) so neither side always runs second.
    """
    for _ in range(warmup):
        ours()
        base()
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if i % 2:
            b.append(timed(base))
            a.append(timed(ours))
        else:
            a.append(timed(ours))
            b.append(timed(base))
    return a, b


def row(name: str, a: list[float], b: list[float], target: float | None, *,
        limit: str = "ratio", scale: float = 1000.0, unit: str = "ms") -> Row:
    """Medians of ``a`` and ``b`` (times ``scale``) and the median of the per-pair ratios."""
    if len(a) != len(b) or not a:
        raise ValueError("row() needs as many measurements of ours as of the baseline")
    ratios = [x / y for x, y in zip(a, b)]
    return Row(name, statistics.median(a) * scale, statistics.median(b) * scale,
               statistics.median(ratios), target, unit=unit, limit=limit, n=len(a))


def print_rows(title: str, rows: list[Row], baseline: str = "") -> bool:
    """Print a table; True when every target holds."""
    print(f"\n{title}" + (f"  (baseline: {baseline})" if baseline else ""))
    print(f"  {'measure':<50} {'ours':>11} {'baseline':>11} {'ratio':>7} {'target':>11}"
          f" {'pairs':>5}")
    for r in rows:
        mark = "" if r.target is None else ("ok" if r.ok else "MISSED")
        print(f"  {r.name:<50} {r.ours:>8.1f} {r.unit:<2} {r.base:>8.1f} {r.unit:<2} "
              f"{r.ratio:>6.2f}x {r.target_text():>11} {r.n:>5}  {mark}")
    sys.stdout.flush()
    return all(r.ok for r in rows)


# -- fair conditions -------------------------------------------------------------------------


def prepare() -> None:
    """Byte-compile the package once; measured processes must not recompile it."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(REPO, "vmgenc_tools")],
                   check=True, stdout=subprocess.DEVNULL)


def bench_env(root: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of measured commands: no PYTHONDONTWRITEBYTECODE, VMGENC_ROOT."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if root is not None:
        env["VMGENC_ROOT"] = root
    env.update(extra)
    return env


def run_quiet(cmd: Sequence[str], env: dict[str, str] | None = None,
              check: bool = True) -> int:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          check=check, env=env).returncode


# -- simulated VMs ---------------------------------------------------------------------------


def age_rc_conf(root: str, seconds: float = 3600.0) -> None:
    """Date the sandbox's rc.conf files back, as on a machine nobody is configuring.

    The handler caches the rc.conf knobs keyed on the files' identity but never
    trusts files changed in the last two seconds (a same-size edit within one
    timestamp tick would look unchanged), so a freshly written rc.conf would be
    re-read by /bin/sh on every run.
    """
    when = time.time() - seconds
    for rel in ("etc/defaults/rc.conf", "etc/rc.conf", "etc/rc.conf.local",
                "etc/rc.conf.d/vmgenc", "usr/local/etc/rc.conf.d/vmgenc"):
        path = os.path.join(root, rel)
        if os.path.isfile(path):
            os.utime(path, (when, when))


def write_rc_conf(root: str, **knobs: str) -> None:
    """Append knobs to the sandbox's rc.conf, then date it back (:func:`age_rc_conf`)."""
    path = os.path.join(root, "etc", "rc.conf")
    with open(path, "a", encoding="utf-8") as f:
        for k, v in knobs.items():
            f.write(f'{k}="{v}"\n')
    age_rc_conf(root)


def sim_vm(hypervisor: str = "qemu", boot: bool = True, **knobs: str) -> str:
    """A fresh simulated VM in a temp dir: rc.conf knobs set, booted once (first-seen).

    The boot's ``vmgenctl check`` also fills the rc.conf cache, as the first
    boot of a real machine does.
    """
    root = tempfile.mkdtemp(prefix="vmgenc-bench.")
    env = bench_env(root)
    run_quiet([VMGENCTL, "sim", "init", "--hypervisor", hypervisor, "--guid", FIRST_GUID], env)
    write_rc_conf(root, **knobs)
    if boot:
        run_quiet([VMGENCTL, "sim", "boot"], env)
    return root


def remove(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


def settled(root: str) -> bool:
    """The handler has settled the live GUIDs (``last-guid`` says done or failed)."""
    from vmgenc_tools import fastcheck

    values, dbdir = fastcheck.config_vars(root)
    return fastcheck.settled_state(root, dbdir, fastcheck.live_line(root)) is not None


def wait_settled(root: str, timeout: float = 120.0) -> None:
    """Poll until the hooks of the last change have settled (not a measurement)."""
    deadline = time.monotonic() + timeout
    while not settled(root):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {root} did not settle within {timeout:.0f} s")
        time.sleep(0.02)
