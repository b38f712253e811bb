"""The light entry points: no click/psutil/sqlite3 and no DB write when nothing changed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
from conftest import set_guid, write_kernel
from handler_hooks import RecordingHook

from vmgenc_tools import config, exitcodes, fastcheck, handler
from vmgenc_tools.config import ConfigError
from vmgenc_tools.generation import Generation
from vmgenc_tools.history import History

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
G2 = "11111111-2222-3333-4444-555555555555"
BIN = os.path.dirname(sys.executable)
HEAVY = ("click", "psutil", "sqlite3", "_sqlite3")


@pytest.fixture
def root(kernel_root, trusted_rc_conf):
    """A settled root whose hook lists are empty (the real runner is not needed)."""
    trusted_rc_conf(kernel_root, vmgenc_hooks_clone="", vmgenc_hooks_restore="",
                    vmgenc_hooks_platform_restart="", vmgenc_hooks_unknown="")
    assert fastcheck.run_check(kernel_root, []) == 0
    return kernel_root


def age(path: str, seconds: float = 10) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def db_files(root: str) -> dict[str, tuple[int, int]]:
    d = os.path.join(root, "var", "db", "vmgenc")
    return {n: (os.stat(os.path.join(d, n)).st_mtime_ns, os.stat(os.path.join(d, n)).st_size)
            for n in sorted(os.listdir(d))}


def imported(cmd: list[str], root: str) -> tuple[int, set[str], str]:
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1", VMGENC_ROOT=root)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    mods = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    return p.returncode, mods, p.stderr


@pytest.mark.parametrize("script,args", [
    ("vmgenctl", ["check"]),
    ("vmgenctl", ["check", "--source", "boot", "--expect", G0]),
    ("vmgenc-devd", ["\\_SB_.VGEN", "1700000000"]),
])
def test_no_change_imports_no_click_psutil_sqlite3_and_writes_nothing(root, script, args):
    age(os.path.join(root, "etc", "rc.conf"))
    fastcheck.config_vars(root)  # the rc.conf cache is warm, as it is after the first boot
    before = db_files(root)
    rc, mods, err = imported([os.path.join(BIN, script)] + args, root)
    assert rc == 0, err
    assert "vmgenc_tools.fastcheck" in mods
    assert not set(HEAVY) & mods, sorted(set(HEAVY) & mods)
    assert "vmgenc_tools.config" not in mods  # the cache answered: no /bin/sh run
    after = db_files(root)
    if "boot" in args:  # the boot check leaves its mark (classify: boot-checked), no more
        assert "boot-checked" in after
        after.pop("boot-checked")
    assert after == before


def test_slow_path_when_the_cache_file_is_missing(root):
    d = os.path.join(root, "var", "db", "vmgenc")
    os.unlink(os.path.join(d, "last-guid"))
    assert fastcheck.run_check(root, []) == 0
    with open(os.path.join(d, "last-guid")) as f:
        assert f.read() == Generation.parse(G0).hex + "\ndone\n"
    assert len(History.open_readonly(os.path.join(d, "history.db")).listing()) == 1


def test_a_change_goes_to_the_handler(root):
    set_guid(root, G2)
    assert fastcheck.run_check(root, []) == 0
    last = History.open_readonly(os.path.join(root, "var/db/vmgenc/history.db")).last_change()
    assert (last.new_text, last.cls) == (G2, "clone")


def test_class_flag_and_intent_file_force_the_next_change(root, capsys):
    """``check --class C`` (this change) and ``${dbdir}/intent`` (the next one, used once)."""
    db = os.path.join(root, "var/db/vmgenc/history.db")
    assert fastcheck.run_check(root, ["--class", "restore"]) == 0  # nothing changed
    assert "--class was not used" in capsys.readouterr().err
    set_guid(root, G2)
    assert fastcheck.run_check(root, ["--class=restore"]) == 0
    last = History.open_readonly(db).last_change()
    assert (last.new_text, last.cls, last.forced) == (G2, "restore", "cli")
    intent = os.path.join(root, "var/db/vmgenc/intent")
    with open(intent, "w") as f:
        f.write("platform-restart\n")
    assert fastcheck.run_check(root, []) == 0  # no change yet: the intent waits
    assert os.path.exists(intent)
    set_guid(root, G0)
    assert fastcheck.run_check(root, []) == 0
    last = History.open_readonly(db).last_change()
    assert (last.new_text, last.cls, last.forced) == (G0, "platform-restart", "intent")
    assert not os.path.exists(intent)  # used once
    set_guid(root, G2)
    assert fastcheck.run_check(root, []) == 0
    last = History.open_readonly(db).last_change()
    assert (last.cls, last.forced) == ("clone", None)


def test_an_intent_that_names_no_class_is_said_and_recorded(root, capsys):
    """A typo (``restor``) must not pass unseen: the change keeps its own class (a clone
    here), the record and check's stderr say why the intent was not used, and the file
    stays for the admin to fix."""
    intent = os.path.join(root, "var/db/vmgenc/intent")
    with open(intent, "w") as f:
        f.write("restor\n")
    set_guid(root, G2)
    assert fastcheck.run_check(root, []) == 0
    last = History.open_readonly(os.path.join(root, "var/db/vmgenc/history.db")).last_change()
    assert (last.cls, last.forced) == ("clone", None)
    assert last.warning and "'restor' is not a class" in last.warning
    err = capsys.readouterr().err
    assert err.startswith("vmgenctl: warning: ") and "'restor' is not a class" in err
    assert "use one of first-seen" in err and os.path.exists(intent)


def test_expect_on_the_fast_path(root, capsys):
    assert fastcheck.run_check(root, ["--expect", G0]) == 0
    assert fastcheck.run_check(root, ["--expect=" + Generation.parse(G0).hex]) == 0
    assert fastcheck.run_check(root, ["--expect", G2]) == exitcodes.EXPECT_FAILED
    assert capsys.readouterr().err == f"vmgenctl: the generation is {G0}, not {G2}\n"


def test_failed_state_is_exit_1_on_the_fast_path(root):
    set_guid(root, G2)
    cfg = config.from_vars({"vmgenc_hooks_clone": "site"}, root)
    handler.check(root, config=cfg,
                  planner=lambda c, k: [RecordingHook("x", os.path.join(root, "l"), fail=True)])
    assert fastcheck.settled_state(root, cfg.dbdir, fastcheck.live_line(root)) == "failed"
    assert fastcheck.run_check(root, []) == exitcodes.PENDING_OR_FAILED


@pytest.mark.parametrize("args,needle", [
    (["--bogus"], "unknown argument '--bogus'"),
    (["--source"], "--source needs a value"),
    (["--source", "cron"], "use boot, devd or manual"),
    (["--class", "teleport"], "use one of first-seen"),
    (["--expect", "not-a-guid"], "vmgenctl: --expect: not a GUID"),
])
def test_bad_arguments_are_one_line_exit_2(root, capsys, args, needle):
    assert fastcheck.run_check(root, args) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and err.startswith("vmgenctl: ")


def test_no_device_is_exit_3(tmp_path, capsys):
    r = str(tmp_path / "r")
    os.makedirs(r)
    write_kernel(r, [])
    assert fastcheck.run_check(r, []) == exitcodes.NO_DEVICE
    err = capsys.readouterr().err
    assert "vmgenc" in err and err.count("\n") == 1


def test_bad_config_is_exit_6(kernel_root, trusted_rc_conf, capsys):
    trusted_rc_conf(kernel_root, vmgenc_hook_timeout="soon")
    assert fastcheck.run_check(kernel_root, []) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert "vmgenc_hook_timeout" in err and err.count("\n") == 1


def test_no_backend_is_exit_7(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("VMGENC_SYSCTL_BACKEND", raising=False)
    monkeypatch.delenv("VMGENC_LIBC", raising=False)
    if sys.platform.startswith("freebsd"):
        pytest.skip("FreeBSD has a real backend")
    assert fastcheck.run_check(str(tmp_path), []) == exitcodes.ENVIRONMENT
    assert "sim init" in capsys.readouterr().err


def test_unusable_database_is_exit_8(kernel_root, capsys):
    d = os.path.join(kernel_root, "var", "db", "vmgenc")
    os.makedirs(d)
    with open(os.path.join(d, "history.db"), "wb") as f:
        f.write(b"not sqlite" * 500)
    assert fastcheck.run_check(kernel_root, []) == exitcodes.STATE
    err = capsys.readouterr().err
    assert "move it aside" in err and err.count("\n") == 1


def test_boot_checked_only_after_a_boot_check_that_got_through(kernel_root, capsys):
    """The mark means "this boot's check saw the recorded generation": a boot check that
    fails (an unusable history, no device) must not leave it; one that works does."""
    d = os.path.join(kernel_root, "var", "db", "vmgenc")
    mark = os.path.join(d, fastcheck.BOOT_CHECKED)
    os.makedirs(d)
    with open(os.path.join(d, "history.db"), "wb") as f:
        f.write(b"not sqlite" * 500)
    assert fastcheck.run_check(kernel_root, ["--source", "boot"]) == exitcodes.STATE
    assert not os.path.exists(mark)
    os.unlink(os.path.join(d, "history.db"))
    write_kernel(kernel_root, [])
    assert fastcheck.run_check(kernel_root, ["--source", "boot"]) == exitcodes.NO_DEVICE
    assert not os.path.exists(mark)
    write_kernel(kernel_root, [G0])
    assert fastcheck.run_check(kernel_root, ["--source", "boot"]) == exitcodes.OK  # records
    assert os.path.exists(mark)
    os.unlink(mark)
    assert fastcheck.run_check(kernel_root, ["--source", "boot"]) == exitcodes.OK  # fast path
    assert os.path.exists(mark)
    os.unlink(mark)
    assert fastcheck.run_check(kernel_root, ["--source", "manual"]) == exitcodes.OK
    assert not os.path.exists(mark)
    capsys.readouterr()


# -- the rc.conf cache ------------------------------------------------------------------------


def _cache_file(root: str) -> str:
    return os.path.join(root, fastcheck.CACHE_REL)


def test_config_cache_is_used_and_follows_rc_conf(kernel_root, trusted_rc_conf, monkeypatch):
    rc = trusted_rc_conf(kernel_root, vmgenc_dbdir="/var/db/one")
    age(rc)
    assert fastcheck.config_vars(kernel_root)[1] == "/var/db/one"
    assert stat.S_IMODE(os.stat(_cache_file(kernel_root)).st_mode) == 0o600
    real = config.read_vars

    def no_shell(root):
        raise AssertionError("/bin/sh was run although the cache is valid")

    monkeypatch.setattr(config, "read_vars", no_shell)
    values, dbdir = fastcheck.config_vars(kernel_root)
    assert dbdir == "/var/db/one" and values["vmgenc_dbdir"] == "/var/db/one"
    assert fastcheck.load_config(kernel_root).dbdir == "/var/db/one"
    trusted_rc_conf(kernel_root, vmgenc_dbdir="/var/db/two")  # sysrc edits rc.conf
    age(rc, 5)
    with pytest.raises(AssertionError):
        fastcheck.config_vars(kernel_root)
    monkeypatch.setattr(config, "read_vars", real)
    assert fastcheck.config_vars(kernel_root)[1] == "/var/db/two"


def test_config_cache_follows_other_files_and_environment(kernel_root, trusted_rc_conf,
                                                          monkeypatch):
    age(trusted_rc_conf(kernel_root))
    assert fastcheck.config_vars(kernel_root)[1] == "/var/db/vmgenc"
    d = os.path.join(kernel_root, "usr/local/etc/rc.conf.d")
    os.makedirs(d)
    with open(os.path.join(d, "vmgenc"), "w") as f:
        f.write('vmgenc_dbdir="/var/db/local"\n')
    age(os.path.join(d, "vmgenc"))
    assert fastcheck.config_vars(kernel_root)[1] == "/var/db/local"
    monkeypatch.setenv("vmgenc_hook_timeout", "7")
    assert fastcheck.config_vars(kernel_root)[0]["vmgenc_hook_timeout"] == "7"


def test_fresh_files_and_invalid_config_are_not_cached(kernel_root, trusted_rc_conf):
    trusted_rc_conf(kernel_root)  # written just now: its mtime may not yet tell edits apart
    fastcheck.config_vars(kernel_root)
    assert not os.path.exists(_cache_file(kernel_root))
    age(trusted_rc_conf(kernel_root, vmgenc_devd_detach="maybe"))
    with pytest.raises(ConfigError):
        fastcheck.config_vars(kernel_root)
    assert not os.path.exists(_cache_file(kernel_root))


def test_a_cache_others_could_write_is_ignored(kernel_root, trusted_rc_conf, monkeypatch):
    age(trusted_rc_conf(kernel_root, vmgenc_dbdir="/var/db/one"))
    fastcheck.config_vars(kernel_root)
    os.chmod(_cache_file(kernel_root), 0o620)
    calls = []
    real = config.read_vars
    monkeypatch.setattr(config, "read_vars", lambda r: calls.append(r) or real(r))
    assert fastcheck.config_vars(kernel_root)[1] == "/var/db/one"
    assert calls == [kernel_root]


def test_os_errors_are_one_readable_line():
    import errno

    e = PermissionError(errno.EACCES, "Permission denied", "/var/db/vmgenc/lock")
    assert fastcheck.message_for(e) == "/var/db/vmgenc/lock: Permission denied (run as root)"
    assert fastcheck.exit_code_for(e) == exitcodes.ENVIRONMENT
