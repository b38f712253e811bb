"""Run every benchmark (``make bench``): each prints its table; exit 1 if any target is missed.

The scripts run one after another, each in its own interpreter (they measure
process start-up, so nothing may be left warm between them), from this
directory so that ``common`` imports.  A script that fails or misses a target
does not stop the others; the summary at the end names it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = (
    "bench_nochange.py",       # 1. no-change reconcile vs python3 -c pass
    "bench_boot.py",           # 2. rc.d boot fast path vs sh + one sysctl -x
    "bench_devd_latency.py",   # 3. devd action latency while the hooks take seconds
    "bench_divergence.py",     # 4. clone -> new SSH host keys served by a real sshd
    "bench_history.py",        # 5. history and reconcile at 10, 10^4, 10^6 changes
    "bench_memory.py",         # 6. peak RSS vs python3 -c pass
)


def main(argv: list[str]) -> int:
    """Run the scripts named in ``argv`` (default: all), then print a summary."""
    chosen = argv or list(SCRIPTS)
    unknown = [s for s in chosen if s not in SCRIPTS]
    if unknown:
        print(f"run_all: unknown benchmark {unknown[0]!r}; one of: {' '.join(SCRIPTS)}",
              file=sys.stderr)
        return 2
    results: list[tuple[str, int, float]] = []
    for script in chosen:
        t0 = time.monotonic()
        rc = subprocess.run([sys.executable, os.path.join(HERE, script)], cwd=HERE).returncode
        results.append((script, rc, time.monotonic() - t0))
    print("\nSummary")
    for script, rc, took in results:
        print(f"  {script:<24} {'ok' if rc == 0 else f'FAILED (exit {rc})':<16} {took:6.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
