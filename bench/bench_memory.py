"""Peak RSS of the devd entry and of `vmgenctl history -n 20` vs a bare `python3 -c pass`.

Target (issue 9): ≤ 2× the bare interpreter (reported as a ratio of peak RSS).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys

from common import VMGENC_DEVD, VMGENCTL, Row, print_rows, sim_vm

_PROBE = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], "
          "stdout=subprocess.DEVNULL); "
          "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_kib(cmd: list[str], env: dict[str, str]) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, *cmd], env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(out.strip())


def main() -> int:
    root = sim_vm()
    env = dict(os.environ, VMGENC_ROOT=root)
    try:
        base = statistics.median(peak_kib([sys.executable, "-c", "pass"], env) for _ in range(5))
        rows = []
        for name, cmd in (("devd entry", [VMGENC_DEVD, "\\_SB_.VGEN", "1.0"]),
                          ("vmgenctl history -n 20", [VMGENCTL, "history", "-n", "20"])):
            ours = statistics.median(peak_kib(cmd, env) for _ in range(5))
            rows.append(Row(f"{name} (peak RSS, KiB as ms column)", ours / 1000, base / 1000,
                            ours / base, 2.0))
        return 0 if print_rows("Peak RSS vs python3 -c pass", rows) else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
