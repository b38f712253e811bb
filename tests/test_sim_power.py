"""A simulated power-off kills the guest's processes, as pulling the plug does.

``sim boot`` (the power cycle), ``sim cold-clone``, ``reboot`` and ``shutdown``
first SIGKILL what runs "inside" the VM — the holder of the root's lock (the
detached hook worker) and its hooks — and wait until it is gone; the boot check
then resumes the killed run's unfinished hooks (design §4.2) and catches the
cold clone itself (class clone, source boot).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from vmgenc_tools.fastcheck import load_config
from vmgenc_tools.handler import Paths, holder_pid
from vmgenc_tools.reference.vm import (
    SimulatedVM,
    guest_processes,
    kill_guest_processes,
)

VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
HOOKS = "usr/local/etc/vmgenc/hooks.d"


def ctl(root: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def lock_path(root: str) -> str:
    return Paths.of(load_config(root)).lock


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def lock_is_free(path: str) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def trusted_site_hooks(root: str) -> str:
    """Two trusted site hooks for clones: 10-fast, then 50-slow, which sleeps a minute the
    first time it ever runs (and writes its pid); every run of either is logged."""
    hooks = os.path.join(root, HOOKS)
    os.makedirs(hooks, exist_ok=True)
    path = root
    os.chmod(path, 0o755)
    for part in HOOKS.split("/"):
        path = os.path.join(path, part)
        os.chmod(path, 0o755)
    log = os.path.join(root, "hooks.log")
    for name, body in (
            ("10-fast", f'echo "fast $VMGENC_SOURCE $VMGENC_NEW_GUID" >> "{log}"\n'),
            ("50-slow", f'echo "slow-start $VMGENC_SOURCE $VMGENC_NEW_GUID" >> "{log}"\n'
                        f'if [ ! -e "{root}/slow-once" ]; then\n'
                        f'  echo $$ > "{root}/slow.pid"; : > "{root}/slow-once"; sleep 60\n'
                        'fi\n'
                        f'echo "slow-end $VMGENC_SOURCE $VMGENC_NEW_GUID" >> "{log}"\n')):
        hook = os.path.join(hooks, name)
        with open(hook, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(hook, 0o755)
    with open(os.path.join(root, "etc/rc.conf"), "a") as f:
        f.write(f'vmgenc_hooks_owner_uid="{os.getuid()}"\n'
                'vmgenc_hooks_clone="hostid entropy site"\n')
    return log


def history(root: str) -> list[dict]:
    p = ctl(root, "history", "--json")
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def hooks_of(record: dict) -> list[tuple[str, str, int]]:
    return [(h["name"], h["status"], h["attempt"]) for h in record["hooks"]]


@pytest.mark.parametrize("power_off", ["cold-clone", "boot"])
def test_power_off_kills_the_hook_worker_and_boot_resumes_it(tmp_path, power_off):
    """clone with a slow hook; power off while it runs (cold-clone, or the power cycle of
    sim boot); the worker and its hook are gone; the boot check finishes the clone's hooks
    (only those not yet ok) and, after a cold clone, records the copy as a boot clone."""
    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init").returncode == 0
    assert ctl(root, "sim", "boot").returncode == 0                 # #1 first-seen
    log = trusted_site_hooks(root)
    try:
        _power_off_while_hooks_run(root, log, power_off)
    finally:  # a failure must not leave the slow hook's worker behind
        kill_guest_processes(root)


def _power_off_while_hooks_run(root: str, log: str, power_off: str) -> None:
    clone = ctl(root, "sim", "clone")
    assert clone.returncode == 0, clone.stderr
    guid2 = history(root)[-1]["new_guid"]
    wait_for(lambda: os.path.exists(os.path.join(root, "slow.pid")), "the slow hook")
    with open(os.path.join(root, "slow.pid")) as f:
        hook_pid = int(f.read())
    worker = holder_pid(lock_path(root))
    assert worker is not None and alive(worker) and alive(hook_pid)
    assert psutil.Process(worker).environ()["VMGENC_ROOT"] == root   # "inside" this VM
    hook_children = [c.pid for c in psutil.Process(hook_pid).children()]  # the sleep
    assert history(root)[-1]["status"] == "pending"

    if power_off == "cold-clone":
        off = ctl(root, "sim", "cold-clone")
        assert off.returncode == 0, off.stderr
        # powered off: nothing of the guest runs any more, and the lock is free
        assert not alive(worker) and not alive(hook_pid)
        assert not any(alive(pid) for pid in hook_children)
        assert lock_is_free(lock_path(root)) and not guest_processes(root)
    boot = ctl(root, "sim", "boot")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert not alive(worker) and not alive(hook_pid)

    records = history(root)
    summary = [(r["id"], r["source"], r["class"], r["status"]) for r in records]
    if power_off == "cold-clone":
        assert summary == [(1, "boot", "first-seen", "done"), (2, "devd", "clone", "done"),
                           (3, "boot", "clone", "done")]
        assert hooks_of(records[2]) == [("hostid", "ok", 1), ("entropy", "ok", 1),
                                        ("site:10-fast", "ok", 1), ("site:50-slow", "ok", 1)]
        guid3 = records[2]["new_guid"]
        assert records[2]["old_guid"] == guid2
        assert f"#3 clone: {guid2} -> {guid3}: done" in boot.stdout
    else:  # qemu, guid=auto: a power cycle is a new GUID, the same SMBIOS UUID and MACs
        assert summary[:2] == [(1, "boot", "first-seen", "done"), (2, "devd", "clone", "done")]
        assert [(r["source"], r["class"]) for r in records[2:]] == [("boot", "platform-restart")]
    # #2: resumed and settled — the hooks that had finished ok did not run again
    assert hooks_of(records[1]) == [("hostid", "ok", 1), ("entropy", "ok", 1),
                                    ("site:10-fast", "ok", 1), ("site:50-slow", "ok", 2)]
    assert f"#2 clone: {records[0]['new_guid']} -> {guid2}: done" in boot.stdout
    ran = lines(log)
    assert ran.count(f"fast devd {guid2}") == 1
    assert ran.count(f"slow-start devd {guid2}") == 2               # killed once, resumed once
    assert ran.count(f"slow-end devd {guid2}") == 1
    assert ctl(root, "status").returncode == 0


# Python code that takes the lock named by argv[1] and writes its pid there, as RootLock does.
TAKE_LOCK = ("import fcntl, os, sys\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
             "fcntl.flock(fd, fcntl.LOCK_EX)\n"
             "os.ftruncate(fd, 0); os.pwrite(fd, f'{os.getpid()}\\n'.encode(), 0)\n")


def _holder(lock: str, env_root: str | None, *args: str, cwd: str = "/") -> subprocess.Popen:
    """Another process that takes ``lock`` and writes its pid there, as RootLock does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    if env_root is not None:
        env["VMGENC_ROOT"] = env_root
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    code = (TAKE_LOCK + "import time\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code, lock, *args], env=env,
                         stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert p.stdout is not None and p.stdout.readline() == "locked\n"
    return p


@pytest.fixture
def vm(tmp_path):
    v = SimulatedVM(str(tmp_path / "vm"))
    v.init("qemu", ssh_keys=False)
    return v


@pytest.mark.parametrize("op", ["shutdown", "reboot", "boot", "cold_clone"])
def test_every_power_off_kills_the_lock_holder_of_this_root(vm, op):
    lock = lock_path(vm.root)
    holder = _holder(lock, vm.root)
    try:
        getattr(vm, op)()
        assert holder.wait(timeout=10) == -9                    # SIGKILL: no clean-up
        assert lock_is_free(lock)
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_that_names_the_root_only_relatively_is_killed_too(vm, tmp_path):
    """'cd /tmp && vmgenctl --root vm …': no VMGENC_ROOT in its start environment, a
    relative --root; the lock file it has open is what makes it a process of this VM."""
    lock = lock_path(vm.root)
    holder = _holder(lock, None, "--root", os.path.basename(vm.root),
                     cwd=os.path.dirname(vm.root))
    try:
        vm.reboot()
        assert holder.wait(timeout=10) == -9
    finally:
        holder.kill()
        holder.wait()


def test_a_process_of_another_root_is_never_killed(vm, tmp_path):
    """Another VM's lock holder lives; so does a bystander whose pid this root's lock file
    names (a reused pid) but who has the file not open: only the real holder dies."""
    other = SimulatedVM(str(tmp_path / "other"))
    other.init("qemu", ssh_keys=False)
    theirs = _holder(lock_path(other.root), other.root)
    lock = lock_path(vm.root)
    ours = _holder(lock, vm.root)
    env = dict(os.environ, VMGENC_ROOT=vm.root)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 env=env)
    try:
        with open(lock, "r+") as f:  # the file names the bystander, the flock is ours'
            f.write(f"{bystander.pid}\n")
        assert holder_pid(lock) == bystander.pid
        vm.boot()
        assert ours.wait(timeout=10) == -9
        assert theirs.poll() is None and alive(theirs.pid)
        assert bystander.poll() is None and alive(bystander.pid)
    finally:
        for p in (theirs, ours, bystander):
            p.kill()
            p.wait()


def test_a_hook_that_powers_off_its_own_vm_is_refused(vm):
    """A process inside the VM (here: the lock holder's child, as a hook is the worker's)
    asks for a power-off: it would wait for the lock its own parent holds. One line,
    exit 2, and the VM's processes live on."""
    lock = lock_path(vm.root)
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    code = (TAKE_LOCK + "import subprocess\n"
            "p = subprocess.run([sys.argv[2], '--root', sys.argv[3], 'sim', 'boot'],\n"
            "                   capture_output=True, text=True, timeout=60)\n"
            "print(p.returncode); print(p.stderr, end='')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    p = subprocess.run([sys.executable, "-c", code, lock, VMGENCTL, vm.root],
                       capture_output=True, text=True, timeout=90, env=env)
    assert p.stdout, p.stderr
    rc, *err = p.stdout.splitlines()
    assert int(rc) == 2, p.stdout
    assert len(err) == 1 and err[0].startswith("vmgenctl: cannot power off the simulated VM")
    assert "from inside it" in err[0]


def test_a_stale_pid_whose_lock_is_free_is_left_alone(vm):
    """The lock file names a live process of this root, but nobody holds the lock (its
    holder died and the pid was reused): nothing is killed."""
    lock = lock_path(vm.root)
    env = dict(os.environ, VMGENC_ROOT=vm.root)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 env=env)
    try:
        os.makedirs(os.path.dirname(lock), exist_ok=True)
        with open(lock, "w") as f:
            f.write(f"{bystander.pid}\n")
        assert holder_pid(lock) == bystander.pid
        vm.reboot()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
