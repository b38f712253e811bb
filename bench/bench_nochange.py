"""No-change reconcile: the devd entry and `vmgenctl check`, GUID unchanged, vs `python3 -c pass`.

Target (issue 9): each ≤ 1.5× a bare interpreter start, measured pair by pair in one run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from common import VMGENC_DEVD, VMGENCTL, pairs, print_rows, row, sim_vm


def main() -> int:
    root = sim_vm()
    env = dict(os.environ, VMGENC_ROOT=root)
    try:
        def devd() -> None:
            subprocess.run([VMGENC_DEVD, "\\_SB_.VGEN", "1767225600.000000"], env=env,
                           check=True, stdout=subprocess.DEVNULL)

        def check() -> None:
            subprocess.run([VMGENCTL, "check"], env=env, check=True, stdout=subprocess.DEVNULL)

        def base() -> None:
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)

        rows = [row("devd entry, GUID unchanged", *pairs(devd, base, n=21), 1.5),
                row("vmgenctl check, GUID unchanged", *pairs(check, base, n=21), 1.5)]
        return 0 if print_rows("No-change reconcile vs python3 -c pass", rows) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
