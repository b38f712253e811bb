"""History scale: `vmgenctl history -n 20 --json` and one reconcile at 10, 10^4 and 10^6 changes.

Target (issue 9): the 10^6 / 10 ratio ≤ 1.2 for both (median of per-pair
ratios; the 10^4 rows are reported).  Every query that lists changes is bounded
by an index (vmgenc_tools/history.py), so a long history must not cost more.

Each VM's history is built with the database's own schema (``History.open``
creates and migrates it) and one ``executemany`` of synthetic past changes,
one hook run each, with the class counts kept consistent; then the VM boots,
which records one real change on top.  No hooks are configured, so "one
reconcile" is what ``vmgenctl check`` does after a GUID change: lock, read
every unit, compare with the newest row, classify, record, settle, rewrite the
``last-guid`` cache.  Before each timed check the reference model clones the
VM (a new GUID, not delivered to devd); the clone is not timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from common import (
    VMGENCTL,
    bench_env,
    pairs,
    prepare,
    print_rows,
    remove,
    row,
    run_quiet,
    write_rc_conf,
)

from vmgenc_tools.generation import Generation
from vmgenc_tools.history import History, utc_now

SIZES = (10, 10_000, 1_000_000)
PAIRS = 15
NO_HOOKS = {f"vmgenc_hooks_{c}": "" for c in ("first_seen", "clone", "restore",
                                               "platform_restart", "unknown")}
CLASSES = ("clone", "restore", "platform-restart", "unknown")
INSERT_CHANGE = (
    "INSERT INTO changes (id, detected_at, settled_at, source, class, status, old_raw, "
    "old_text, new_raw, new_text, guids, smbios_uuid, hostuuid, macs, vm_guest, boot_time, "
    "reason) VALUES (?, ?, ?, ?, ?, 'done', ?, ?, ?, ?, ?, ?, ?, ?, 'kvm', ?, ?)")
INSERT_RUN = (
    "INSERT INTO hook_runs (change_id, name, attempt, status, exit_code, duration_s, output, "
    "started_at, finished_at) VALUES (?, 'entropy', 1, 'ok', 0, 0.004, '', ?, ?)")


def iso(t: float) -> str:
    us = int(t * 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) \
        + f".{us % 1_000_000:06d}+00:00"


def build_history(db: str, n: int) -> float:
    """``n`` past changes (one a minute, ending an hour ago) in ``db``; returns seconds taken."""
    t0 = time.perf_counter()
    start = time.time() - 3600 - 60 * n
    gens = [Generation(os.urandom(16)) for _ in range(min(n, 4096) + 1)]
    counts = dict.fromkeys(CLASSES, 0)

    def changes():  # noqa: ANN202 - a row generator for executemany
        for i in range(1, n + 1):
            old, new = gens[(i - 1) % (len(gens) - 1)], gens[i % (len(gens) - 1) or 1]
            cls = CLASSES[i % len(CLASSES)]
            counts[cls] += 1
            when = iso(start + 60 * i)
            yield (i, when, when, "devd" if i % 3 else "boot", cls, old.raw, old.text, new.raw,
                   new.text, new.hex, "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d",
                   "00000000-0000-0000-0000-000000000000", "52:54:00:12:34:56",
                   int(start) + 60 * i, "bench: synthetic past change")

    def runs():  # noqa: ANN202
        for i in range(1, n + 1):
            when = iso(start + 60 * i)
            yield (i, when, when)

    with History.open(db) as hist:
        c = hist.conn
        c.execute("PRAGMA synchronous = OFF")  # the build only; the measured runs use FULL
        c.execute("BEGIN IMMEDIATE")
        c.executemany(INSERT_CHANGE, changes())
        c.executemany(INSERT_RUN, runs())
        c.executemany("INSERT INTO class_counts (class, n) VALUES (?, ?) "
                      "ON CONFLICT(class) DO UPDATE SET n = n + excluded.n", counts.items())
        c.execute("COMMIT")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return time.perf_counter() - t0


def make_vm(n: int) -> tuple[str, float]:
    """A simulated VM with ``n`` recorded changes before its boot; ``(root, build seconds)``."""
    import tempfile

    root = tempfile.mkdtemp(prefix=f"vmgenc-bench-hist{n}.")
    env = bench_env(root)
    run_quiet([VMGENCTL, "sim", "init", "--hypervisor", "qemu"], env)
    write_rc_conf(root, **NO_HOOKS)
    took = build_history(os.path.join(root, "var", "db", "vmgenc", "history.db"), n)
    run_quiet([VMGENCTL, "sim", "boot"], env)  # records change n + 1, writes last-guid
    return root, took


def main() -> int:
    prepare()
    vms: dict[int, str] = {}
    try:
        for n in SIZES:
            vms[n], took = make_vm(n)
            print(f"  built a history of {n:>9,} changes in {took:5.1f} s (at {utc_now()})")
        for n, root in vms.items():
            out = subprocess.run([VMGENCTL, "history", "-n", "20", "--json"], env=bench_env(root),
                                 check=True, capture_output=True, text=True).stdout
            want = min(20, n + 1)  # the synthetic changes plus the boot's own
            if out.count('"detected_at"') != want:
                raise SystemExit(f"bench_history: history -n 20 --json at {n} changes "
                                 f"does not list {want}")

        def history(n: int):  # noqa: ANN202
            env = bench_env(vms[n])

            def run() -> None:
                subprocess.run([VMGENCTL, "history", "-n", "20", "--json"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
            return run

        def reconcile(n: int, times: list[float]):  # noqa: ANN202
            from vmgenc_tools.reference.vm import SimulatedVM

            env = bench_env(vms[n])
            vm = SimulatedVM(vms[n])

            def run() -> None:
                vm.clone()  # a new GUID (not timed)
                t = time.perf_counter()
                subprocess.run([VMGENCTL, "check"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
                times.append(time.perf_counter() - t)
            return run

        rows = []
        for n in SIZES[1:]:
            target = 1.2 if n == SIZES[-1] else None
            rows.append(row(f"history -n 20 --json, {n:,} vs 10 changes",
                            *pairs(history(n), history(10), n=PAIRS), target))
        for n in SIZES[1:]:
            a: list[float] = []
            b: list[float] = []
            pairs(reconcile(n, a), reconcile(10, b), n=PAIRS)
            target = 1.2 if n == SIZES[-1] else None
            rows.append(row(f"reconcile after a GUID change, {n:,} vs 10 changes",
                            a[2:], b[2:], target))
        ok = print_rows("5. History scale", rows, "the same command on a 10-change history")
        return 0 if ok else 1
    finally:
        for root in vms.values():
            remove(root)


if __name__ == "__main__":
    sys.exit(main())
