"""rc.d/vmgenc under the real /bin/sh, with the rc.subr stand-in (tests/rc/rc.subr)
and the fake sysctl (tests/fakes/sysctl) answering from the simulated VM.

The shipped script is never edited: each test installs it as ``sim init`` does
(``shipped.install_text``: /usr/local/bin/ → a bin dir) into a temp dir and points
its ``. /etc/rc.subr`` at the stand-in.  "No Python started" is checked with a
PATH trap: ``python``/``python3`` shims first in PATH, and the vmgenctl the
script calls is a recording shim."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import QEMU_GUID, set_guid, write_kernel

from vmgenc_tools import shipped, simstate
from vmgenc_tools.config import KNOBS
from vmgenc_tools.generation import Generation

TESTS = Path(__file__).resolve().parent
STANDIN = TESTS / "rc" / "rc.subr"
FAKES = TESTS / "fakes"
SCRIPT = Path(shipped.find("rc.d/vmgenc"))
NEW_GUID = "0b5a8f3e-9d41-4c6b-8e2f-1a7c3d9e5f60"
UNIT1_GUID = "6f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
REFUSAL = ("Cannot '{0}' vmgenc. Set vmgenc_enable to YES in /etc/rc.conf "
           "or use 'one{0}' instead of '{0}'.")


def dump(text: str) -> str:
    """A GUID as ``sysctl -x`` prints the opaque node: 0x + the raw bytes."""
    return "0x" + Generation.parse(text).raw.hex()


def _shim(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def install_script(dest: Path, bindir: str | None) -> Path:
    """rc.d/vmgenc as ``sim init`` installs it, sourcing the stand-in rc.subr."""
    text = shipped.install_text("rc.d/vmgenc", bindir)
    assert text.count("\n. /etc/rc.subr\n") == 1
    path = dest / "vmgenc"
    path.write_text(text.replace("\n. /etc/rc.subr\n", f"\n. {STANDIN}\n"))
    path.chmod(0o755)
    return path


class RcEnv:
    """A sandbox root, a PATH trap, and the installed script."""

    def __init__(self, tmp: Path, root: str) -> None:
        self.root = root
        self.trap = tmp / "trap"
        self.trap.mkdir()
        self.python_log = tmp / "python.log"
        self.ctl_log = tmp / "vmgenctl.log"
        for name in ("python", "python3", f"python3.{sys.version_info[1]}"):
            _shim(self.trap / name, f'echo "$0 $*" >> "{self.python_log}"\nexit 99\n')
        _shim(self.trap / "vmgenctl",
              f'echo "$*" >> "{self.ctl_log}"\nexit "${{VMGENCTL_SHIM_EXIT:-0}}"\n')
        self.script = install_script(tmp, str(self.trap))
        self.path = f"{self.trap}:{FAKES}:/usr/bin:/bin"

    def rc_conf(self, text: str) -> None:
        os.makedirs(os.path.join(self.root, "etc"), exist_ok=True)
        Path(self.root, "etc", "rc.conf").write_text(text)

    def cache(self, line1: str, state: str = "done") -> Path:
        path = Path(self.root, "var/db/vmgenc/last-guid")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{line1}\n{state}\n")
        return path

    def run(self, *args: str, script: Path | None = None,
            **env: str) -> subprocess.CompletedProcess:
        full = {"PATH": self.path, "HOME": self.root, "VMGENC_ROOT": self.root, **env}
        return subprocess.run(["/bin/sh", str(script or self.script), *args], env=full,
                              capture_output=True, text=True, timeout=60)

    def calls(self) -> list[str]:
        return self.ctl_log.read_text().splitlines() if self.ctl_log.exists() else []

    def pythons(self) -> list[str]:
        return self.python_log.read_text().splitlines() if self.python_log.exists() else []


@pytest.fixture
def rc(tmp_path, kernel_root):
    env = RcEnv(tmp_path, kernel_root)
    env.rc_conf('vmgenc_enable="YES"\n')
    return env


# -- the file itself ---------------------------------------------------------------------


def _shells() -> list[str]:
    found = [s for s in ("dash", "/bin/sh") if shutil.which(s)]
    assert "dash" in found, "dash is needed to check the script is plain POSIX sh"
    return found


@pytest.mark.parametrize("path", [SCRIPT, STANDIN, FAKES / "sysctl"], ids=lambda p: p.name)
def test_sh_n_under_dash(path):
    for shell in _shells():
        proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{shell} -n {path}: {proc.stderr}"


@pytest.mark.parametrize("path", [SCRIPT, STANDIN, FAKES / "sysctl"], ids=lambda p: p.name)
def test_shellcheck_posix_sh_clean(path):
    assert shutil.which("shellcheck"), "shellcheck is missing: run 'make deps'"
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout


def test_checkbashisms_clean(tmp_path):
    exe = shutil.which("checkbashisms")
    assert exe, "checkbashisms is missing: run 'make deps' (Debian package devscripts)"
    bashy = tmp_path / "bashy"
    bashy.write_text('#!/bin/sh\nif [[ "$1" == x ]]; then echo -n x; fi\n')
    control = subprocess.run([exe, "-p", "-x", str(bashy)], capture_output=True, text=True)
    assert control.returncode != 0 and "possible bashism" in control.stderr  # it does look
    for path in (SCRIPT, STANDIN, FAKES / "sysctl"):
        proc = subprocess.run([exe, "-f", "-p", "-x", str(path)], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "bashism" not in proc.stdout + proc.stderr


def test_rcorder_header_is_one_exact_block():
    lines = SCRIPT.read_text().splitlines()
    i = lines.index("# PROVIDE: vmgenc")
    assert lines[i:i + 4] == [
        "# PROVIDE: vmgenc",
        "# REQUIRE: FILESYSTEMS hostid_save",
        "# BEFORE: devd sshd",
        "# KEYWORD: nojail",
    ]
    keywords = [x for x in lines if re.match(r"# (PROVIDE|REQUIRE|BEFORE|KEYWORD):", x)]
    assert len(keywords) == 4


def test_rc_subr_idiom():
    text = SCRIPT.read_text()
    for needle in ('\n. /etc/rc.subr\n', '\nname="vmgenc"\n', '\nrcvar="vmgenc_enable"\n',
                   '\nload_rc_config "$name"\n', '\nstop_cmd=":"\n',
                   '\nextra_commands="check retry history"\n'):
        assert needle in text
    assert text.rstrip().endswith('run_rc_command "$@"')
    assert "/usr/local/bin/vmgenctl" in text
    code = "\n".join(x for x in text.splitlines() if not x.lstrip().startswith("#"))
    assert not re.search(r"\bpython", code, re.I)  # the programs are called by path


def test_knob_defaults_are_those_of_config_py():
    found = dict(re.findall(r'^: "\$\{(vmgenc_\w+):=(.*)\}"$', SCRIPT.read_text(), re.M))
    assert found == {k: default for k, (default, _) in KNOBS.items()}


def test_fake_sysctl_answers_like_sysctl(rc):
    env = {"PATH": rc.path, "VMGENC_ROOT": rc.root}
    x = subprocess.run(["sysctl", "-x", "dev.vmgenc.0.guid"], env=env, capture_output=True)
    assert x.stdout == f"dev.vmgenc.0.guid: Format: Length:16 Dump:{dump(QEMU_GUID)}\n".encode()
    b = subprocess.run(["sysctl", "-b", "dev.vmgenc.0.guid"], env=env, capture_output=True)
    assert b.stdout == Generation.parse(QEMU_GUID).raw
    plain = subprocess.run(["sysctl", "dev.vmgenc.0.guid"], env=env, capture_output=True)
    assert (plain.returncode, plain.stdout) == (0, b"")  # opaque, no format: nothing
    n = subprocess.run(["sysctl", "-n", "kern.vm_guest"], env=env, capture_output=True)
    assert n.stdout == b"kvm\n"
    gone = subprocess.run(["sysctl", "-x", "dev.vmgenc.1.guid"], env=env, capture_output=True)
    assert gone.returncode == 1
    assert gone.stderr == b"sysctl: unknown oid 'dev.vmgenc.1.guid'\n"


# -- start: the boot check -----------------------------------------------------------------


def test_start_unchanged_guid_starts_no_python(rc):
    rc.cache(dump(QEMU_GUID))
    proc = rc.run("start")
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout, proc.stderr) == ("", "")  # no "no device" warning: sysctl answered
    assert rc.pythons() == []
    assert rc.calls() == []


def test_start_unchanged_leaves_the_boot_checked_mark(rc):
    """The shell fast path touches ${dbdir}/boot-checked (classify: a later manual check
    then knows this boot saw the recorded generation); a read-only dbdir is no error."""
    mark = Path(rc.root, "var/db/vmgenc/boot-checked")
    rc.cache(dump(QEMU_GUID))
    assert not mark.exists()
    assert rc.run("start").returncode == 0
    assert mark.exists()
    os.utime(mark, (1, 1))
    assert rc.run("start").returncode == 0
    assert mark.stat().st_mtime > 1
    mark.unlink()
    mark.mkdir()  # cannot be written: still silent, still no Python
    proc = rc.run("start")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert rc.pythons() == []


def test_start_unchanged_with_two_units_starts_no_python(rc):
    write_kernel(rc.root, [QEMU_GUID, UNIT1_GUID])
    rc.cache(f"{dump(QEMU_GUID)} {dump(UNIT1_GUID)}")
    proc = rc.run("start")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert rc.pythons() == [] and rc.calls() == []


def test_units_past_the_first_missing_one_are_ignored(rc):
    write_kernel(rc.root, [QEMU_GUID, UNIT1_GUID, NEW_GUID])
    with simstate.transaction(rc.root) as st:
        for name in [n for n in st.nodes if n.startswith("dev.vmgenc.1.")] + ["dev.vmgenc.1"]:
            del st.nodes[name]
    rc.cache(dump(QEMU_GUID))
    proc = rc.run("start")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert rc.calls() == []


def test_start_changed_guid_runs_the_check_from_boot(rc):
    rc.cache(dump(QEMU_GUID))
    set_guid(rc.root, NEW_GUID)
    proc = rc.run("start")
    assert proc.returncode == 0, proc.stderr
    assert rc.calls() == [f"--root {rc.root} check --source boot"]
    assert rc.pythons() == []
    assert "changed" in proc.stdout


def test_start_second_unit_changed_runs_the_check(rc):
    write_kernel(rc.root, [QEMU_GUID, UNIT1_GUID])
    rc.cache(f"{dump(QEMU_GUID)} {dump(UNIT1_GUID)}")
    set_guid(rc.root, NEW_GUID, unit=1)
    proc = rc.run("start")
    assert proc.returncode == 0
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


def test_sourced_into_rcs_own_shell_boot_goes_on(rc):
    """rc_fast_and_loose: rc(8) sources the script instead of running it in a subshell;
    a changed GUID must not take rc's shell away (no exec)."""
    rc.cache(dump(QEMU_GUID))
    set_guid(rc.root, NEW_GUID)
    proc = subprocess.run(["/bin/sh", "-c", 'set -- start; . "$0"; echo "rc goes on: $?"',
                           str(rc.script)], capture_output=True, text=True, timeout=60,
                          env={"PATH": rc.path, "VMGENC_ROOT": rc.root})
    assert proc.stdout.splitlines()[-1] == "rc goes on: 0", proc.stdout + proc.stderr
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


def test_start_without_cache_runs_the_check(rc):
    proc = rc.run("start")
    assert proc.returncode == 0
    assert rc.calls() == [f"--root {rc.root} check --source boot"]
    assert "No VM Generation ID recorded yet" in proc.stdout


def test_start_exit_status_is_the_checks(rc):
    proc = rc.run("start", VMGENCTL_SHIM_EXIT="1")
    assert proc.returncode == 1
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


def test_start_on_a_real_system_passes_no_root(rc, tmp_path):
    # VMGENC_ROOT empty, as at boot: the cache is the real /var/db path (absent
    # here, so the check runs) and vmgenctl gets no --root.  The fake sysctl
    # needs the sandbox, so it is pointed there through a wrapper.
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    _shim(wrap / "sysctl", f'VMGENC_ROOT="{rc.root}" exec "{FAKES}/sysctl" "$@"\n')
    proc = rc.run("onestart", VMGENC_ROOT="", PATH=f"{rc.trap}:{wrap}:/usr/bin:/bin")
    assert proc.returncode == 0, proc.stderr
    assert rc.calls() == ["check --source boot"]


def test_start_failed_hooks_warn_without_python(rc):
    rc.cache(dump(QEMU_GUID), state="failed")
    proc = rc.run("start")
    assert proc.returncode == 0
    assert "hooks failed" in proc.stderr and "service vmgenc retry" in proc.stderr
    assert rc.pythons() == [] and rc.calls() == []


def test_start_custom_dbdir(rc):
    rc.rc_conf('vmgenc_enable="YES"\nvmgenc_dbdir="/var/vmgenc-alt"\n')
    path = Path(rc.root, "var/vmgenc-alt/last-guid")
    path.parent.mkdir(parents=True)
    path.write_text(f"{dump(QEMU_GUID)}\ndone\n")
    rc.cache(dump(NEW_GUID))  # the default location is not read
    proc = rc.run("start")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert rc.calls() == []


def test_no_device_warns_and_boot_goes_on(rc):
    write_kernel(rc.root, [])
    proc = rc.run("start")
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "WARNING" in lines[0] and "no vmgenc(4) device" in lines[0]
    assert rc.calls() == [] and rc.pythons() == []


# -- rc.subr contract ----------------------------------------------------------------------


@pytest.mark.parametrize("enable", [None, "NO", "off"])
def test_disabled_start_is_refused_with_rc_subr_text(rc, enable):
    rc.rc_conf("" if enable is None else f'vmgenc_enable="{enable}"\n')
    proc = rc.run("start")
    assert proc.returncode == 0
    assert proc.stdout == REFUSAL.format("start") + "\n"
    assert rc.calls() == []


@pytest.mark.parametrize("verb", ["check", "retry", "history", "restart"])
def test_disabled_extra_commands_are_refused_too(rc, verb):
    rc.rc_conf('vmgenc_enable="NO"\n')
    proc = rc.run(verb)
    assert proc.returncode == 0
    assert proc.stdout == REFUSAL.format(verb) + "\n"
    assert rc.calls() == []


def test_enable_not_set_properly_warns_and_refuses(rc):
    rc.rc_conf('vmgenc_enable="maybe"\n')
    proc = rc.run("start")
    assert "$vmgenc_enable is not set properly - see rc.conf(5)." in proc.stderr
    assert proc.stdout == REFUSAL.format("start") + "\n"


def test_quietstart_disabled_says_nothing(rc):
    rc.rc_conf('vmgenc_enable="NO"\n')
    proc = rc.run("quietstart")
    assert (proc.returncode, proc.stdout) == (0, "")


@pytest.mark.parametrize("verb", ["onestart", "forcestart"])
def test_onestart_works_when_disabled(rc, verb):
    rc.rc_conf('vmgenc_enable="NO"\n')
    set_guid(rc.root, NEW_GUID)
    rc.cache(dump(QEMU_GUID))
    proc = rc.run(verb)
    assert proc.returncode == 0, proc.stderr
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


def test_forcestart_of_a_failing_check_runs_and_returns_its_status(rc):
    """§5.1 force: the rcvar check is skipped, but a failing method is not made a
    success: with no postcmd, rc.subr returns the method's own status."""
    rc.rc_conf('vmgenc_enable="NO"\n')
    proc = rc.run("forcestart", VMGENCTL_SHIM_EXIT="1")
    assert proc.returncode == 1
    assert REFUSAL.format("start") not in proc.stdout
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


@pytest.mark.parametrize("verb, precmd, ran, postcmd, status", [
    ("start", "false", False, False, 1),       # a failing precmd stops start
    ("forcestart", "false", True, True, 0),    # force goes on past it
    ("start", "true", True, False, 1),         # a failing method: no postcmd
    ("forcestart", "true", True, True, 0),     # force: postcmd runs; its status is returned
])
def test_force_ignores_precmd_and_method_failures(rc, verb, precmd, ran, postcmd, status):
    """§5.1: a failing precmd stops the command, and a failing method skips the postcmd,
    unless force.  The hooks come from rc.conf (rc.d/vmgenc sets none); the check fails."""
    rc.rc_conf(f'vmgenc_enable="YES"\nstart_precmd="{precmd}"\n'
               'start_postcmd="echo postcmd ran"\n')
    proc = rc.run(verb, VMGENCTL_SHIM_EXIT="1")
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert rc.calls() == ([f"--root {rc.root} check --source boot"] if ran else [])
    assert ("postcmd ran" in proc.stdout.splitlines()) == postcmd


def test_enable_from_rc_conf_d(rc):
    rc.rc_conf("")
    d = Path(rc.root, "usr/local/etc/rc.conf.d")
    d.mkdir(parents=True)
    (d / "vmgenc").write_text('vmgenc_enable="YES"\n')
    proc = rc.run("start")
    assert REFUSAL.format("start") not in proc.stdout
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


@pytest.mark.parametrize("verb", ["check", "retry", "history"])
def test_extra_commands_delegate_to_vmgenctl(rc, verb):
    proc = rc.run(verb)
    assert proc.returncode == 0, proc.stderr
    assert rc.calls() == [f"--root {rc.root} {verb}"]


def test_extra_command_arguments_are_passed_on(rc):
    rc.run("history", "-n", "5")
    rc.run("onecheck", "--dry-run")
    assert rc.calls() == [f"--root {rc.root} history -n 5",
                          f"--root {rc.root} check --dry-run"]


def test_extra_command_exit_status_is_vmgenctls(rc):
    proc = rc.run("retry", VMGENCTL_SHIM_EXIT="1")
    assert proc.returncode == 1


def test_status_delegates_to_vmgenctl(rc):
    proc = rc.run("status", VMGENCTL_SHIM_EXIT="1")
    assert proc.returncode == 1  # vmgenctl status: 1 = hooks pending or failed
    assert rc.calls() == [f"--root {rc.root} status"]


def test_disabled_status_is_refused_and_onestatus_works(rc):
    """§5.1: only rcvar, describe (and stop of a running service) skip the rcvar check."""
    rc.rc_conf("")
    proc = rc.run("status")
    assert (proc.returncode, proc.stdout) == (0, REFUSAL.format("status") + "\n")
    assert rc.calls() == []
    proc = rc.run("onestatus")
    assert proc.returncode == 0
    assert rc.calls() == [f"--root {rc.root} status"]


def test_disabled_rcvar_and_describe_still_answer(rc):
    rc.rc_conf('vmgenc_enable="NO"\n')
    assert rc.run("rcvar").stdout.splitlines()[2] == 'vmgenc_enable="NO"'
    assert "VM Generation ID" in rc.run("describe").stdout
    assert rc.calls() == []


def test_stop_is_a_no_op(rc):
    proc = rc.run("stop")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert rc.calls() == [] and rc.pythons() == []


def test_restart_is_stop_then_start(rc):
    rc.cache(dump(QEMU_GUID))
    set_guid(rc.root, NEW_GUID)
    proc = rc.run("restart")
    assert proc.returncode == 0
    assert rc.calls() == [f"--root {rc.root} check --source boot"]


def test_rcvar_describe_extracommands(rc):
    assert rc.run("rcvar").stdout.splitlines()[:3] == [
        "# vmgenc : React to VM Generation ID changes (vmgenc(4))", "#",
        'vmgenc_enable="YES"']
    assert rc.run("extracommands").stdout == "check retry history\n"
    assert "VM Generation ID" in rc.run("describe").stdout


def test_unknown_verb_prints_usage(rc):
    proc = rc.run("reload")
    assert proc.returncode == 1
    assert "unknown directive 'reload'" in proc.stderr
    assert "Usage:" in proc.stderr and "check|retry|history" in proc.stderr


# -- end to end with the real vmgenctl -------------------------------------------------------


def test_boot_check_end_to_end_with_real_vmgenctl(tmp_path, kernel_root, trusted_rc_conf):
    trusted_rc_conf(kernel_root, vmgenc_enable="YES", vmgenc_hooks_first_seen="",
                    vmgenc_hooks_clone="", vmgenc_hooks_restore="",
                    vmgenc_hooks_platform_restart="", vmgenc_hooks_unknown="")
    trap_env = RcEnv(tmp_path, kernel_root)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = install_script(real_dir, None)  # /usr/local/bin/ → this venv's bin dir
    assert os.access(os.path.join(shipped.bindir(), "vmgenctl"), os.X_OK)
    env = {"PATH": f"{FAKES}:/usr/bin:/bin"}
    cache = Path(kernel_root, "var/db/vmgenc/last-guid")

    # First boot: nothing recorded → the real check records the first generation.
    first = trap_env.run("start", script=real, **env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert cache.read_text().splitlines() == [dump(QEMU_GUID), "done"]

    # Next boot, same GUID: the fast path, no Python at all.
    again = trap_env.run("start")
    assert (again.returncode, again.stderr) == (0, "")
    assert trap_env.pythons() == [] and trap_env.calls() == []

    # Cold clone: a new GUID at boot → the real check records it.
    set_guid(kernel_root, NEW_GUID)
    changed = trap_env.run("start", script=real, **env)
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert cache.read_text().splitlines() == [dump(NEW_GUID), "done"]
    mode = stat.S_IMODE(os.stat(cache).st_mode)
    assert not mode & 0o022
