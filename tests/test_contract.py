"""The ⚑ command-line contract (design §3), walked through the installed console script and
through click's own test runner (the same rows, the same exit codes).

Each row: a command line, the exit code the contract gives it, and something its output must
say.  Other test files go deeper per command; this one keeps the table itself honest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vmgenc_tools import __version__, exitcodes
from vmgenc_tools.cli import app

VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
HISTORY_FIELDS = {"id", "detected_at", "source", "old_guid", "new_guid", "class", "status",
                  "hooks"}
HOOK_FIELDS = {"name", "status", "exit_code", "duration_s"}


def ctl(root: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=120, env=env, input=stdin)


def via_click(root: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command line through click's CliRunner, shaped like a subprocess result."""
    r = CliRunner().invoke(app, ["--root", root, *args], env={"VMGENC_ROOT": None})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


DRIVERS = {"script": ctl, "click": via_click}


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    """A QEMU guest booted once, then cloned at run time with a failing site hook."""
    root = str(tmp_path_factory.mktemp("contract") / "vm")
    assert ctl(root, "sim", "init", "--guid", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
               ).returncode == 0
    assert ctl(root, "sim", "boot").returncode == 0
    return root


def test_version():
    p = subprocess.run([VMGENCTL, "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == f"vmgenctl, version {__version__}\n"
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout == p.stdout


@pytest.mark.parametrize("args,code,says", [
    (["status"], exitcodes.OK, "settled"),
    (["history"], exitcodes.OK, "first-seen"),
    (["history", "-n", "1", "--csv"], exitcodes.OK, "id,detected_at"),
    (["check"], exitcodes.OK, ""),
    (["check", "--source", "boot", "--expect", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"],
     exitcodes.OK, ""),
    (["check", "--expect", "9f0c5b8e-3a1d-4e6f-8b2a-1c4d5e6f7a8b"], exitcodes.EXPECT_FAILED,
     "9f0c5b8e"),
    (["check", "--dry-run"], exitcodes.OK, "no change"),
    (["retry"], exitcodes.OK, ""),
    (["wait", "--timeout", "0.3"], exitcodes.TIMEOUT, ""),
    (["hooks", "list"], exitcodes.OK, "clone"),
    (["hooks", "list", "--json"], exitcodes.OK, '"platform-restart": ['),
    (["status", "--json"], exitcodes.OK, '"state": "settled"'),
    (["history", "--json"], exitcodes.OK, '"class": "first-seen"'),
    (["watch", "--json", "--count", "1"], exitcodes.ENVIRONMENT, "devd is not running"),
    (["hooks", "validate"], exitcodes.OK, "ok"),
    (["sim", "sysctl", "-x", "dev.vmgenc.0.guid"], exitcodes.OK,
     "dev.vmgenc.0.guid: Format: Length:16 Dump:0xaf6e4e32d1d1f64bbf41b9bb6c91fb87"),
    (["sim", "sysctl", "dev.vmgenc.0.guid"], exitcodes.OK, ""),
    (["sim", "sysctl", "dev.vmgenc.7.guid"], 1, "unknown oid 'dev.vmgenc.7.guid'"),
    (["sim", "devd", "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00"],
     exitcodes.OK, "vmgenc-devd $'\\\\_SB_.VGEN'"),
    (["sim", "notify"], exitcodes.OK, ""),
    (["sim", "notify", "--value", "0x81"], exitcodes.OK, ""),
    (["watch", "--count", "1"], exitcodes.ENVIRONMENT, "devd is not running"),
    (["history", "--since", "not-a-time"], exitcodes.USAGE, "ISO-8601"),
    (["check", "--source", "cron"], exitcodes.USAGE, "cron"),
    (["sim", "sysctl", "-x", "no.such.oid"], 1, "unknown oid 'no.such.oid'"),
    (["hooks", "frobnicate"], exitcodes.USAGE, "frobnicate"),
])
@pytest.mark.parametrize("driver", DRIVERS)
def test_contract_row(vm, driver, args, code, says):
    p = DRIVERS[driver](vm, *args)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert says in p.stdout + p.stderr
    if code not in (exitcodes.OK, exitcodes.EXPECT_FAILED, exitcodes.TIMEOUT, 1):
        assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_sim_sysctl_b_is_the_raw_bytes(vm):
    p = subprocess.run([VMGENCTL, "--root", vm, "sim", "sysctl", "-b", "dev.vmgenc.0.guid"],
                       capture_output=True)
    assert p.returncode == 0 and p.stdout == bytes.fromhex("af6e4e32d1d1f64bbf41b9bb6c91fb87")


def test_sim_devd_json_and_parse_error(vm, tmp_path):
    line = "!system=ACPI subsystem=VMGenerationCounter type=\\_SB_.VGEN notify=0x00"
    p = ctl(vm, "sim", "devd", "--json", line)
    (doc,) = json.loads(p.stdout)
    assert p.returncode == 0 and set(doc) >= {"event", "match", "commands"}
    assert set(doc["match"]) == {"file", "line", "priority"} and doc["match"]["priority"] == 100
    bad = tmp_path / "bad.conf"
    bad.write_text('notify 0 { match "system" "ACPI" };\n')
    p = ctl(vm, "sim", "devd", "-f", str(bad), line)
    assert p.returncode == 1 and "Cannot parse" in p.stderr


def test_no_device_is_exit_3(tmp_path):
    from vmgenc_tools.reference.vm import SimulatedVM

    root = str(tmp_path / "vm")
    assert ctl(root, "sim", "init").returncode == 0
    SimulatedVM(root).set_tunable("debug.acpi.disabled", "vmgenc")  # loader.conf tunable
    assert ctl(root, "sim", "boot").returncode == exitcodes.NO_DEVICE
    for args in (["status"], ["check"]):
        p = ctl(root, *args)
        assert p.returncode == exitcodes.NO_DEVICE, (args, p.stdout, p.stderr)
        assert "kldload vmgenc" in p.stderr


def test_runtime_changes_history_json_and_failed_hooks(vm):
    hooks = os.path.join(vm, "usr/local/etc/vmgenc/hooks.d")
    os.makedirs(hooks, exist_ok=True)
    with open(os.path.join(vm, "etc/rc.conf"), "a") as f:
        f.write(f'vmgenc_hooks_owner_uid="{os.getuid()}"\nvmgenc_hooks_restore="site"\n'
                'vmgenc_runtime_class="restore"\n')
    hook = os.path.join(hooks, "10-fails")
    with open(hook, "w") as f:
        f.write("#!/bin/sh\necho cannot; exit 3\n")
    os.chmod(hook, 0o755)
    for p in (ctl(vm, "sim", "restore"),):
        assert p.returncode == 0, p.stderr
    p = ctl(vm, "wait", "--since", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87", "--timeout", "60")
    assert p.returncode == exitcodes.OK                         # wait: 0 once settled...
    assert p.stderr.count("\n") == 1 and "hooks failed" in p.stderr  # ...saying how
    assert ctl(vm, "status").returncode == 1
    assert ctl(vm, "retry").returncode == 1
    for driver in DRIVERS.values():                             # check: 1 hooks failed
        p = driver(vm, "check")
        assert p.returncode == exitcodes.PENDING_OR_FAILED
        assert p.stderr.startswith("vmgenctl: ") and "vmgenctl retry" in p.stderr
        assert driver(vm, "retry").returncode == exitcodes.PENDING_OR_FAILED
    os.chmod(hook, 0o644)                                       # not executable → refused
    assert ctl(vm, "hooks", "validate").returncode == 1
    os.remove(hook)
    p = ctl(vm, "retry")
    assert p.returncode == 0
    assert p.stdout.rstrip().endswith(": done (site:10-fails skipped)"), p.stdout  # as recorded
    assert ctl(vm, "status").returncode == 0
    for driver in DRIVERS.values():                             # wait: 0 settled
        p = driver(vm, "wait", "--since", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87",
                   "--timeout", "10")
        assert p.returncode == exitcodes.OK, p.stderr
    records = json.loads(ctl(vm, "history", "--json").stdout)
    assert [r["class"] for r in records] == ["first-seen", "restore"]
    # the removed hook is not left reading "failed" beside a record that reads "done"
    assert records[-1]["status"] == "done"
    assert [(h["name"], h["status"]) for h in records[-1]["hooks"]] == [
        ("site:10-fails", "skipped")]
    for r in records:
        assert set(r) >= HISTORY_FIELDS
        assert r["status"] in ("pending", "done", "failed")
        assert r["source"] in ("boot", "devd", "manual")
        for h in r["hooks"]:
            assert set(h) >= HOOK_FIELDS
    assert records[0]["old_guid"] is None and records[1]["source"] == "devd"
    assert json.loads(ctl(vm, "history", "-n", "1", "--json").stdout)[0]["id"] == records[1]["id"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_sim_lifecycle_clone_and_cold_clone(tmp_path, driver):
    """sim init/boot/clone/cold-clone exit 0 (boot: as check) and end as the contract says."""
    run = DRIVERS[driver]
    root = str(tmp_path / "vm")
    assert run(root, "sim", "init", "--hypervisor", "qemu").returncode == 0
    assert run(root, "sim", "boot").returncode == 0
    before = json.loads(run(root, "status", "--json").stdout)["guid"]
    p = run(root, "sim", "clone")
    assert p.returncode == 0 and "type=\\_SB_.VGEN notify=0x00" in p.stdout, p.stderr
    assert run(root, "wait", "--since", before, "--timeout", "60").returncode == 0
    assert run(root, "sim", "cold-clone").returncode == 0
    assert run(root, "sim", "boot").returncode == 0
    records = json.loads(run(root, "history", "--json").stdout)
    assert [(r["source"], r["class"], r["status"]) for r in records] == [
        ("boot", "first-seen", "done"), ("devd", "clone", "done"), ("boot", "clone", "done")]
    assert run(root, "status").returncode == 0


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("args,code", [
    (["status"], exitcodes.USAGE), (["history"], exitcodes.USAGE),
    (["hooks", "list"], exitcodes.USAGE), (["wait", "--timeout", "0"], exitcodes.USAGE),
    (["check"], exitcodes.USAGE), (["check", "--dry-run"], exitcodes.USAGE),
    (["check", "--source", "boot"], exitcodes.USAGE),
    # every sim command but "sim init" (which creates its root): usage too (vmgenctl(8))
    (["sim", "boot"], exitcodes.USAGE), (["sim", "clone"], exitcodes.USAGE),
    (["sim", "restore"], exitcodes.USAGE), (["sim", "cold-clone"], exitcodes.USAGE),
    (["sim", "notify"], exitcodes.USAGE), (["sim", "sysctl", "dev.vmgenc.0.guid"],
                                           exitcodes.USAGE),
    (["sim", "devd", "!system=ACPI subsystem=VMGenerationCounter"], exitcodes.USAGE),
    (["sim", "info"], exitcodes.USAGE), (["sim", "dmesg"], exitcodes.USAGE),
    (["sim", "reboot"], exitcodes.USAGE),
])
def test_missing_root_is_one_line_and_creates_nothing(tmp_path, driver, args, code):
    """A mistyped --root must not read as an empty history, nor grow a directory tree."""
    from vmgenc_tools.fastcheck import missing_root

    root = str(tmp_path / "no" / "such")
    p = DRIVERS[driver](root, *args)
    assert p.returncode == code, (p.stdout, p.stderr)
    assert p.stderr.startswith("vmgenctl: ") and p.stderr.count("\n") == 1
    assert p.stderr == f"vmgenctl: {missing_root(root)}\n"
    assert root in p.stderr and "sim init" in p.stderr
    assert not os.path.exists(tmp_path / "no")


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("args,says", [
    (["bogus"], "No such command 'bogus': see 'vmgenctl --help'"),
    (["status", "--bogus"], "No such option '--bogus': see 'vmgenctl status --help'"),
    (["sim", "init", "--hypervisor", "vmware"], "'vmware' is not one of"),
    (["history", "-n", "-3"], "see 'vmgenctl history --help'"),
])
def test_usage_errors_are_one_line_exit_2(vm, driver, args, says):
    p = DRIVERS[driver](vm, *args)
    assert p.returncode == exitcodes.USAGE
    assert p.stderr.startswith("vmgenctl: ") and p.stderr.count("\n") == 1, p.stderr
    assert says in p.stderr and p.stdout == ""


def test_vmgenc_root_environment_for_every_kind_of_command(vm):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMGENC_")}
    env["VMGENC_ROOT"] = vm
    for args in (["status", "--json"], ["history", "--json"], ["check"],
                 ["sim", "sysctl", "-x", "dev.vmgenc.0.guid"]):
        p = subprocess.run([VMGENCTL, *args], capture_output=True, text=True, env=env,
                           timeout=60)
        assert p.returncode in (0, 1) and p.stderr == "", (args, p.stderr)
        assert p.stdout.strip() or args == ["check"], args  # check is silent when settled
    r = CliRunner().invoke(app, ["history", "--json"], env={"VMGENC_ROOT": vm})
    assert r.exit_code == 0 and json.loads(r.stdout)[0]["class"] == "first-seen"


# -- shell completion (click's, for bash, zsh and fish; sh has none) -----------------------


def complete(shell: str, words: str, cword: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, _VMGENCTL_COMPLETE=f"{shell}_complete", COMP_WORDS=words,
               COMP_CWORD=str(cword))
    return subprocess.run([VMGENCTL], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F _vmgenctl_completion"),
                                          ("zsh", "#compdef vmgenctl"),
                                          ("fish", "complete --no-files --command vmgenctl")])
def test_completion_scripts(shell, marker):
    p = subprocess.run([VMGENCTL], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, _VMGENCTL_COMPLETE=f"{shell}_source"))
    assert p.returncode == 0 and marker in p.stdout and p.stderr == ""


def test_completion_answers_commands_subcommands_and_choices():
    p = complete("bash", "vmgenctl si", 1)
    assert p.returncode == 0 and p.stdout.split() == ["plain,sim"]
    p = complete("bash", "vmgenctl sim c", 2)
    assert p.stdout.split() == ["plain,clone", "plain,cold-clone"]
    p = complete("bash", "vmgenctl check --source ", 3)
    assert p.stdout.split() == ["plain,boot", "plain,devd", "plain,manual"]
    p = complete("bash", "vmgenctl sim init --hypervisor ", 4)
    assert p.stdout.split() == [f"plain,{h}" for h in
                                ("qemu", "bhyve", "xen", "hyperv", "firecracker")]
    p = complete("zsh", "vmgenctl hooks ", 2)
    assert [ln for ln in p.stdout.splitlines()[1::3]] == ["list", "validate"]


@pytest.mark.skipif(not os.path.exists("/bin/bash") and not os.path.exists("/usr/local/bin/bash"),
                    reason="bash not installed")
def test_completion_in_a_real_bash():
    """What README and vmgenctl(8) say to put in ~/.bashrc really completes."""
    bash = "/bin/bash" if os.path.exists("/bin/bash") else "/usr/local/bin/bash"
    script = ('eval "$(_VMGENCTL_COMPLETE=bash_source vmgenctl)"\n'
              'COMP_WORDS=(vmgenctl hooks v); COMP_CWORD=2\n'
              '_vmgenctl_completion vmgenctl v vmgenctl\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = dict(os.environ, PATH=os.path.dirname(VMGENCTL) + os.pathsep + os.environ["PATH"])
    p = subprocess.run([bash, "--norc", "-c", script], capture_output=True, text=True,
                       env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.split() == ["validate"], p.stdout + p.stderr


@pytest.mark.parametrize("value,says", [("sh_source", "no completion for sh"),
                                        ("tcsh_source", "no completion for shell 'tcsh'"),
                                        ("bash_sauce", "expected SHELL_source")])
def test_completion_for_an_unsupported_shell_is_one_line_exit_2(value, says):
    p = subprocess.run([VMGENCTL], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, _VMGENCTL_COMPLETE=value))
    assert p.returncode == exitcodes.USAGE and p.stdout == ""
    assert p.stderr.startswith("vmgenctl: ") and says in p.stderr
    assert p.stderr.count("\n") == 1
    assert "bash_source" in p.stderr
    r = CliRunner().invoke(app, [], env={"_VMGENCTL_COMPLETE": value})
    assert r.exit_code == exitcodes.USAGE and says in r.stderr


@pytest.mark.parametrize("driver", DRIVERS)
def test_check_dry_run_keeps_the_expect_fence(vm, driver):
    """``--dry-run`` changes nothing, but ``--expect`` still answers 4 for another GUID."""
    other = "00000000-0000-4000-8000-000000000001"
    p = DRIVERS[driver](vm, "check", "--dry-run", "--expect", other)
    assert p.returncode == exitcodes.EXPECT_FAILED, (p.stdout, p.stderr)
    assert f"not {other}" in p.stderr and p.stderr.count("\n") == 1
    now = json.loads(ctl(vm, "status", "--json").stdout)["guids"][0]
    assert DRIVERS[driver](vm, "check", "--dry-run", "--expect", now).returncode == exitcodes.OK


@pytest.mark.parametrize("args", [["check", "--class", "clone"], ["retry"]])
def test_interrupt_is_one_line_exit_130(vm, args):
    """^C while waiting for the lock another run holds: no traceback, sh's 130."""
    import signal
    import time

    from vmgenc_tools.fastcheck import load_config
    from vmgenc_tools.handler import Paths, RootLock

    lock = RootLock.acquire(Paths.of(load_config(vm)).lock, blocking=False)
    assert lock is not None
    try:
        p = subprocess.Popen([VMGENCTL, "--root", vm, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # started, and waiting on the lock
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        lock.release()
    assert p.returncode == exitcodes.INTERRUPTED, (out, err)
    assert err.lstrip("\n") == "vmgenctl: interrupted\n"  # (click first ends the ^C line)


@pytest.mark.parametrize("args", [["hooks", "list"], ["history"], ["sim", "sysctl", "kern"]])
def test_a_reader_that_goes_away_is_no_error(vm, args):
    """``vmgenctl … | head -1``: the pipe closes; no "Broken pipe" error, no traceback,
    and the exit status sh gives a command killed by SIGPIPE."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    try:
        p = subprocess.run([VMGENCTL, "--root", vm, *args], stdout=w, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    finally:
        os.close(w)
    assert (p.returncode, p.stderr) == (exitcodes.STDOUT_CLOSED, "")
