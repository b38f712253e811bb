"""Shared bench plumbing: alternate our command and its baseline, report the median ratio.

Absolute times vary by machine; the ratio against a baseline measured in the same
run, pair by pair, is the claim.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
VMGENCTL = os.path.join(BIN, "vmgenctl")
VMGENC_DEVD = os.path.join(BIN, "vmgenc-devd")


@dataclass
class Row:
    name: str
    ours_s: float
    base_s: float
    ratio: float
    target: float
    better: str = "lower"  # the ratio must be <= target

    @property
    def ok(self) -> bool:
        return self.ratio <= self.target


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run_quiet(cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   env=env)


def pairs(ours: Callable[[], object], base: Callable[[], object], n: int = 15,
          warmup: int = 2) -> tuple[list[float], list[float]]:
    """Run ours and base alternately ``n`` times (after ``warmup`` of each)."""
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


def row(name: str, a: list[float], b: list[float], target: float) -> Row:
    ratios = [x / y for x, y in zip(a, b)]
    return Row(name, statistics.median(a), statistics.median(b), statistics.median(ratios),
               target)


def print_rows(title: str, rows: list[Row]) -> bool:
    print(f"\n{title}")
    print(f"  {'measure':<46} {'ours':>9} {'baseline':>9} {'ratio':>7} {'target':>7}")
    for r in rows:
        mark = "ok" if r.ok else "MISSED"
        print(f"  {r.name:<46} {r.ours_s * 1000:>7.1f}ms {r.base_s * 1000:>7.1f}ms "
              f"{r.ratio:>6.2f}x {r.target:>6.2f}x  {mark}")
    return all(r.ok for r in rows)


def sim_vm(hypervisor: str = "qemu", boot: bool = True) -> str:
    """A fresh simulated VM in a temp dir, booted once (first-seen recorded)."""
    root = tempfile.mkdtemp(prefix="vmgenc-bench.")
    env = dict(os.environ, VMGENC_ROOT=root)
    run_quiet([VMGENCTL, "sim", "init", "--hypervisor", hypervisor, "--guid",
               "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"], env)
    if boot:
        run_quiet([VMGENCTL, "sim", "boot"], env)
    return root
