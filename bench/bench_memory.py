"""Peak RSS of the devd entry and of `vmgenctl history -n 20` vs a bare `python3 -c pass`.

Target (issue 9): each ≤ 2× the bare interpreter's peak RSS (median of per-pair
ratios).  Peak RSS is ``ru_maxrss`` from wait4(2), taken by a small C launcher
(bench/peakrss.c, built here with the system compiler): Linux counts a
process's peak from before its execve(2), so a command forked straight from
Python would start with Python's own RSS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from common import (
    PYTHON,
    VGEN,
    VMGENC_DEVD,
    VMGENCTL,
    bench_env,
    prepare,
    print_rows,
    remove,
    row,
    sim_vm,
    wait_settled,
)

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = 11  # issue 9: at least 10 pairs per measure


def build_peakrss(outdir: str) -> str:
    cc = os.environ.get("CC") or "cc"
    if shutil.which(cc) is None:
        raise SystemExit(f"bench_memory: no C compiler {cc!r} (run 'make deps')")
    out = os.path.join(outdir, "peakrss")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", out,
                    os.path.join(HERE, "peakrss.c")], check=True)
    return out


def main() -> int:
    prepare()
    root = sim_vm(vmgenc_hooks_clone="")  # a change records and settles without hooks
    env = bench_env(root)
    work = tempfile.mkdtemp(prefix="vmgenc-bench-rss.")
    try:
        peakrss = build_peakrss(work)

        def kib(cmd: list[str]) -> float:
            out = subprocess.run([peakrss, *cmd], env=env, check=True, capture_output=True,
                                 text=True).stdout
            return float(out.split()[-1])

        def alternate(cmd: list[str], before=None) -> tuple[list[float], list[float]]:  # noqa: ANN001
            a: list[float] = []
            b: list[float] = []
            for _ in range(PAIRS):
                if before is not None:
                    before()
                a.append(kib(cmd))
                b.append(kib([PYTHON, "-c", "pass"]))
            return a, b

        def new_guid() -> None:
            from vmgenc_tools.reference.vm import SimulatedVM

            wait_settled(root)
            vm = SimulatedVM(root)
            vm.clone()
            vm.drain_devctl()  # the devd model is not involved: the entry is run directly

        devd = [VMGENC_DEVD, VGEN, "1767225600.000000"]
        rows = [
            row("devd entry, GUID unchanged", *alternate(devd), 2.0, scale=1, unit="KiB"),
            row("devd entry, GUID changed (records, forks worker)",
                *alternate(devd, new_guid), 2.0, scale=1, unit="KiB"),
            row("vmgenctl history -n 20", *alternate([VMGENCTL, "history", "-n", "20"]), 2.0,
                scale=1, unit="KiB"),
        ]
        wait_settled(root)
        ok = print_rows("6. Memory (peak RSS)", rows, "python3 -c pass")
        return 0 if ok else 1
    finally:
        remove(work)
        remove(root)


if __name__ == "__main__":
    sys.exit(main())
