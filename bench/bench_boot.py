"""Boot fast path: `rc.d/vmgenc start` on an unchanged GUID vs `sh -c true` plus one `sysctl -x`.

Target (issue 9): no Python process is started, and the script costs ≤ 3× the
baseline (median of per-pair ratios).  The script is the shipped one, installed
as the tests install it (tests/test_rcd.py): ``/usr/local/bin/`` replaced by a
trap directory and ``. /etc/rc.subr`` pointed at the rc.subr stand-in
(tests/rc/rc.subr).  sysctl(8) is the test stand-in (tests/fakes/sysctl, POSIX
sh and awk) reading the simulated VM's kernel; the baseline reads the same node
through the same stand-in.

"No Python" is checked twice: a PATH trap (``python``, ``python3``,
``python3.N`` and the ``vmgenctl`` the script would exec are recording shims)
and, when strace(1) is installed, every execve(2) of one extra run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from common import REPO, pairs, prepare, print_rows, remove, row, sim_vm

from vmgenc_tools import shipped

STANDIN = os.path.join(REPO, "tests", "rc", "rc.subr")
FAKES = os.path.join(REPO, "tests", "fakes")
PAIRS = 21


def _shim(path: str, body: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)


def install(work: str) -> tuple[str, str, str]:
    """The script, its PATH trap directory and the trap's log: ``(script, trap, log)``."""
    trap = os.path.join(work, "trap")
    os.makedirs(trap)
    log = os.path.join(work, "trap.log")
    for name in ("python", "python3", f"python3.{sys.version_info[1]}", "vmgenctl"):
        _shim(os.path.join(trap, name), f'echo "{name} $*" >> "{log}"\nexit 99\n')
    text = shipped.install_text("rc.d/vmgenc", trap)
    if text.count("\n. /etc/rc.subr\n") != 1:
        raise SystemExit("bench_boot: rc.d/vmgenc no longer sources /etc/rc.subr once")
    script = os.path.join(work, "vmgenc")
    with open(script, "w", encoding="utf-8") as f:
        f.write(text.replace("\n. /etc/rc.subr\n", f"\n. {STANDIN}\n"))
    os.chmod(script, 0o755)
    return script, trap, log


def execs_under_strace(cmd: list[str], env: dict[str, str], work: str) -> list[str] | None:
    """Every program one run executes (strace -f -e execve), or None without strace."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = os.path.join(work, "execve.log")
    proc = subprocess.run([strace, "-f", "-qq", "-e", "trace=execve", "-o", out, *cmd],
                          env=env, capture_output=True)
    if proc.returncode != 0 or not os.path.exists(out):
        return None  # strace not permitted here (ptrace): the PATH trap still holds
    with open(out, encoding="utf-8", errors="replace") as f:
        return [line.split('"')[1] for line in f if "execve(" in line and '"' in line]


def main() -> int:
    prepare()
    root = sim_vm()
    work = tempfile.mkdtemp(prefix="vmgenc-bench-boot.")
    try:
        script, trap, log = install(work)
        env = {"PATH": f"{trap}:{FAKES}:/usr/bin:/bin", "HOME": root, "VMGENC_ROOT": root}
        start = ["/bin/sh", script, "start"]
        first = subprocess.run(start, env=env, capture_output=True, text=True)
        if first.returncode != 0 or first.stdout or first.stderr:
            print(f"bench_boot: rc.d/vmgenc start did not take the fast path: exit "
                  f"{first.returncode}, {first.stdout!r} {first.stderr!r}")
            return 1

        def ours() -> None:
            subprocess.run(start, env=env, check=True)

        def base() -> None:
            subprocess.run(["/bin/sh", "-c", "true"], env=env, check=True)
            subprocess.run(["sysctl", "-x", "dev.vmgenc.0.guid"], env=env, check=True,
                           stdout=subprocess.DEVNULL)

        rows = [row("rc.d/vmgenc start, GUID unchanged", *pairs(ours, base, n=PAIRS), 3.0)]
        ok = print_rows("2. Boot fast path", rows, "sh -c true + one sysctl -x")
        trapped: list[str] = []
        if os.path.exists(log):
            with open(log, encoding="utf-8") as f:
                trapped = f.read().splitlines()
        execs = execs_under_strace(start, env, work)
        pythons = [e for e in execs or [] if "python" in os.path.basename(e)
                   or os.path.basename(e) in ("vmgenctl", "vmgenc-devd")]
        seen = "PATH trap" + (f" + strace ({len(execs)} execve)" if execs is not None else "")
        print(f"  Python processes started ({seen}): {len(trapped) + len(pythons)}"
              f"  target 0  {'ok' if not trapped and not pythons else 'MISSED'}")
        for line in trapped + pythons:
            print(f"    {line}")
        return 0 if ok and not trapped and not pythons else 1
    finally:
        remove(work)
        remove(root)


if __name__ == "__main__":
    sys.exit(main())
