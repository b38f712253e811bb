"""No-change reconcile: devd entry and `vmgenctl check`, GUID unchanged, vs `python3 -c pass`.

Target (issue 9; design §3): each ≤ 1.5× a bare start of the same interpreter,
median of the per-pair ratios, measured alternately in one run.  What runs is
what devd and scripts run: the console scripts, on a booted simulated VM whose
GUID has not changed since (a spurious notify, a script's fence).
"""

from __future__ import annotations

import subprocess
import sys

from common import (
    PYTHON,
    VGEN,
    VMGENC_DEVD,
    VMGENCTL,
    bench_env,
    pairs,
    prepare,
    print_rows,
    remove,
    row,
    sim_vm,
)

PAIRS = 21


def main() -> int:
    prepare()
    root = sim_vm()
    env = bench_env(root)
    try:
        def devd() -> None:
            subprocess.run([VMGENC_DEVD, VGEN, "1767225600.000000"], env=env, check=True,
                           stdout=subprocess.DEVNULL)

        def check() -> None:
            subprocess.run([VMGENCTL, "check"], env=env, check=True, stdout=subprocess.DEVNULL)

        def base() -> None:
            subprocess.run([PYTHON, "-c", "pass"], env=env, check=True)

        rows = [row("devd entry (vmgenc-devd), GUID unchanged", *pairs(devd, base, n=PAIRS), 1.5),
                row("vmgenctl check, GUID unchanged", *pairs(check, base, n=PAIRS), 1.5)]
        ok = print_rows("1. No-change reconcile", rows, "python3 -c pass")
        return 0 if ok else 1
    finally:
        remove(root)


if __name__ == "__main__":
    sys.exit(main())
