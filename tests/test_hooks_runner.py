"""The hook runner: order, skipped names, environment, timeouts, refusals, failures, dry-run."""

from __future__ import annotations

import os

import psutil
import pytest
from hooks_sandbox import (
    NEW,
    OLD,
    add_hook,
    ctx_for,
    hooks_path,
    make_trusted,
    write_rc_conf,
)

from vmgenc_tools import config, entry, log
from vmgenc_tools.cli import hooks as cli_hooks
from vmgenc_tools.hooks import runner, site, trust
from vmgenc_tools.hooks.base import HookResult

NOBODY = 65534
AS_ROOT = os.geteuid() == 0


@pytest.fixture
def root(kernel_root):
    make_trusted(kernel_root, hooks_clone="hostid site entropy", hooks_restore="site")
    return kernel_root


def names(hooks) -> list[str]:
    return [h.name for h in hooks]


def run_all(hooks, ctx) -> list[HookResult]:
    """Every hook, in order, unconditionally: the runner's part only.

    Whether a failed or refused hook stops the next is the handler's decision
    (``vmgenc_hook_stop_on_failure``), tested through the real reconcile in
    test_handler_hook_failures.py.
    """
    return [h.run(ctx) for h in hooks]


def dead(pid: int) -> bool:
    """Gone, or a zombie waiting for a parent that is not us (pid 1 may not reap here)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def problems_of(root: str, name: str) -> list[str]:
    [hook] = [h for h in runner.site_hooks(config.load(root)) if h.name == "site:" + name]
    return [str(p) for p in hook.problems]


# -- order and names -------------------------------------------------------------------------


def test_plan_order_builtins_then_site_hooks_in_lexical_order(root):
    log_file = os.path.join(root, "ran")
    for n in ("20-b", "10-a", "05-first", "Z-upper", "100-c"):
        add_hook(root, n, f'echo {n} >> "$VMGENC_ROOT/ran"')
    plan = runner.plan(config.load(root), "clone")  # vmgenc_hooks_clone="hostid site entropy"
    assert names(plan) == ["hostid", "entropy", "site:05-first", "site:10-a", "site:100-c",
                           "site:20-b", "site:Z-upper"]
    results = run_all(plan[2:], ctx_for(root))
    assert [r.status for r in results] == ["ok"] * 5
    with open(log_file) as f:
        assert f.read().split() == ["05-first", "10-a", "100-c", "20-b", "Z-upper"]


def test_default_lists_run_builtins_by_name_then_site_hooks(kernel_root):
    make_trusted(kernel_root)  # no vmgenc_hooks_<class>: the shipped defaults
    for n in ("20-b", "10-a"):
        add_hook(kernel_root, n, "true")
    cfg = config.load(kernel_root)
    assert names(runner.plan(cfg, "clone")) == ["sshd_keys", "hostid", "entropy",
                                                "site:10-a", "site:20-b"]
    for cls in ("restore", "platform-restart", "unknown"):
        assert names(runner.plan(cfg, cls)) == ["entropy", "site:10-a", "site:20-b"]
    assert runner.plan(cfg, "first-seen") == []


def test_site_hooks_run_after_the_builtins_wherever_site_stands(root):
    """Design §4.6: built-ins by name, *then* site hooks; ``site`` first changes nothing."""
    write_rc_conf(root, hooks_clone="site sshd_keys", hooks_restore="entropy",
                  hooks_platform_restart="entropy site hostid",
                  hooks_unknown="site entropy site entropy")
    add_hook(root, "10-a", "true")
    add_hook(root, "20-b", "true")
    cfg = config.load(root)
    assert names(runner.plan(cfg, "clone")) == ["sshd_keys", "site:10-a", "site:20-b"]
    # the built-ins keep the order the list gives them, and the site hooks come last
    assert names(runner.plan(cfg, "platform-restart")) == ["entropy", "hostid", "site:10-a",
                                                           "site:20-b"]
    assert names(runner.plan(cfg, "unknown")) == ["entropy", "site:10-a", "site:20-b"]  # once
    assert names(runner.plan(cfg, "restore")) == ["entropy"]  # no ``site``: no site hooks
    assert runner.plan(cfg, "first-seen") == []


def test_skipped_names(root):
    for n in (".hidden", "10-a~", "20-b.sample", "30-c.disabled", "40-d.orig", "50-real",
              "60-sample.sh"):
        add_hook(root, n, 'echo "$0" >> "$VMGENC_ROOT/ran"')
    cfg = config.load(root)
    assert runner.site_names(cfg) == ["50-real", "60-sample.sh"]
    assert names(runner.plan(cfg, "restore")) == ["site:50-real", "site:60-sample.sh"]
    assert runner.skipped(".x") and runner.skipped("x~") and not runner.skipped("x.sh")


def test_missing_hooks_dir_means_no_site_hooks(root):
    write_rc_conf(root, hooks_dir="/nonexistent/hooks.d", hooks_restore="site entropy")
    cfg = config.load(root)
    assert names(runner.plan(cfg, "restore")) == ["entropy"]
    # nothing to refuse, so the runner's own checks are silent; 'hooks validate' is not
    assert runner.validate(cfg) == []
    assert [str(p) for p in cli_hooks.all_problems(cfg)] == [
        "vmgenc_hooks_dir /nonexistent/hooks.d does not exist under the root "
        f"({root}/nonexistent/hooks.d): no site hook will run "
        "(create it, or fix vmgenc_hooks_dir)"]


# -- environment, output, exit status --------------------------------------------------------


def test_clean_environment_stdin_session_and_variables(root, monkeypatch):
    monkeypatch.setenv("VMGENC_TEST_LEAK", "secret")
    monkeypatch.setenv("HOME", "/root-leak")
    add_hook(root, "10-env", """
env | sort > "$VMGENC_ROOT/env.out"
if read line; then echo "stdin:data"; else echo "stdin:eof"; fi > "$VMGENC_ROOT/stdin.out"
python3 -c 'import os; print(os.getsid(0) == os.getppid(), os.getpgid(0) == os.getppid())' \\
    > "$VMGENC_ROOT/sid.out"
""")
    [hook] = runner.plan(config.load(root), "restore")
    result = hook.run(ctx_for(root, cls="restore", source="devd"))
    assert result.status == "ok", result.output
    with open(os.path.join(root, "env.out")) as f:
        env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    assert env["PATH"] == "/sbin:/bin:/usr/sbin:/usr/bin:/usr/local/sbin:/usr/local/bin"
    assert env["VMGENC_OLD_GUID"] == OLD
    assert env["VMGENC_NEW_GUID"] == NEW
    assert env["VMGENC_CLASS"] == "restore"
    assert env["VMGENC_SOURCE"] == "devd"
    assert env["VMGENC_ROOT"] == root
    assert "VMGENC_DRY_RUN" not in env
    assert "VMGENC_TEST_LEAK" not in env and "HOME" not in env
    # what sh itself may add (PWD, SHLVL, _) is all there is besides ours
    assert set(env) - {"PATH", "PWD", "SHLVL", "_", "OLDPWD"} == {
        "VMGENC_OLD_GUID", "VMGENC_NEW_GUID", "VMGENC_CLASS", "VMGENC_SOURCE", "VMGENC_ROOT"}
    with open(os.path.join(root, "stdin.out")) as f:
        assert f.read().strip() == "stdin:eof"
    with open(os.path.join(root, "sid.out")) as f:
        assert f.read().split() == ["True", "True"]  # own session, own process group


def test_first_seen_old_guid_is_empty(root):
    add_hook(root, "10-env", 'printf "[%s]" "$VMGENC_OLD_GUID" > "$VMGENC_ROOT/old.out"')
    ctx = ctx_for(root)
    ctx = type(ctx)(ctx.config, new_guid=NEW, old_guid=None, cls="first-seen", source="boot")
    assert runner.run_site_hook(hooks_path(root, "10-env"), ctx).status == "ok"
    with open(os.path.join(root, "old.out")) as f:
        assert f.read() == "[]"


def test_output_tail_kept_and_every_line_logged(root):
    add_hook(root, "10-chatty", 'i=1; while [ $i -le 50 ]; do echo "line $i"; i=$((i+1)); done\n'
                                'echo "to stderr" >&2; exit 0')
    sink = log.capture()
    try:
        result = runner.run_site_hook(hooks_path(root, "10-chatty"), ctx_for(root))
    finally:
        log.stop_capture(sink)
    assert result.status == "ok" and result.exit_code == 0
    kept = result.output.splitlines()
    assert len(kept) == site.TAIL_LINES
    assert kept[-1] == "to stderr" and kept[-2] == "line 50" and kept[0] == "line 32"
    logged = [m for lvl, m in sink if lvl == "debug" and m.startswith("hook site:10-chatty: ")]
    assert len(logged) == 51
    assert logged[0].endswith(": line 1")


def test_a_failing_hook_is_failed_with_its_exit_code_and_output(root):
    """The runner's side only; that it does not stop the next is test_handler_hook_failures."""
    add_hook(root, "10-fail", 'echo "broken"; exit 3')
    add_hook(root, "20-next", 'touch "$VMGENC_ROOT/next-ran"')
    results = run_all(runner.plan(config.load(root), "restore"), ctx_for(root, cls="restore"))
    assert [(r.name, r.status, r.exit_code) for r in results] == [
        ("site:10-fail", "failed", 3), ("site:20-next", "ok", 0)]
    assert "broken" in results[0].output
    assert config.load(root).hook_stop_on_failure is False
    write_rc_conf(root, hooks_restore="site", hook_stop_on_failure="YES")
    assert config.load(root).hook_stop_on_failure is True  # exposed; the handler applies it


def test_no_shebang_fails_with_a_message(root):
    add_hook(root, "10-noshebang", "echo hi", shebang="")
    result = runner.run_site_hook(hooks_path(root, "10-noshebang"), ctx_for(root))
    assert result.status == "failed"
    assert "cannot execute" in result.output


def test_killed_by_signal_is_a_failure(root):
    add_hook(root, "10-sig", "kill -KILL $$")
    result = runner.run_site_hook(hooks_path(root, "10-sig"), ctx_for(root))
    assert result.status == "failed" and result.exit_code == -9
    assert "killed by signal 9" in result.output


def test_dry_run_names_a_site_hook_without_running_it(root):
    add_hook(root, "10-dry", 'touch "$VMGENC_ROOT/ran"; echo ran')
    result = runner.run_site_hook(hooks_path(root, "10-dry"), ctx_for(root, dry_run=True))
    assert result.status == "skipped" and result.exit_code is None
    assert result.output == f"would run {hooks_path(root, '10-dry')}\n"
    assert not os.path.exists(os.path.join(root, "ran"))
    assert runner.run_site_hook(hooks_path(root, "10-dry"), ctx_for(root)).output == "ran\n"
    assert os.path.exists(os.path.join(root, "ran"))


def test_a_daemon_started_by_a_hook_is_left_running(root, monkeypatch):
    """A hook may start a service; only the hook itself is waited for (output drained briefly)."""
    monkeypatch.setattr(site, "DRAIN_S", 0.2)
    add_hook(root, "10-daemon", 'sleep 300 &\necho $! > "$VMGENC_ROOT/daemon.pid"\necho started')
    result = runner.run_site_hook(hooks_path(root, "10-daemon"), ctx_for(root))
    assert result.status == "ok" and result.output == "started\n"
    with open(os.path.join(root, "daemon.pid")) as f:
        pid = int(f.read())
    try:
        assert not dead(pid)
    finally:
        os.kill(pid, 9)


# -- timeout ---------------------------------------------------------------------------------


def test_timeout_kills_the_whole_process_tree(root):
    write_rc_conf(root, hooks_restore="site", hook_timeout="1")
    add_hook(root, "10-hang", """
sleep 300 &
echo $! > "$VMGENC_ROOT/child.pid"
(sleep 300 & echo $! > "$VMGENC_ROOT/orphan.pid")
echo started
echo $$ > "$VMGENC_ROOT/hook.pid"
wait
""")
    [hook] = runner.plan(config.load(root), "restore")
    result = hook.run(ctx_for(root, cls="restore"))
    assert result.status == "timeout" and result.exit_code is None
    assert "started" in result.output and "timed out after 1 s" in result.output
    pids = {}
    for n in ("child", "orphan", "hook"):
        with open(os.path.join(root, f"{n}.pid")) as f:
            pids[n] = int(f.read())
    # the child was in the tree; the orphan had been re-parented away, the group caught it
    assert all(dead(p) for p in pids.values()), pids


def test_timeout_terminates_before_it_kills(root):
    """SIGTERM first: a hook that cleans up on TERM gets to do it (no SIGKILL needed)."""
    write_rc_conf(root, hooks_restore="site", hook_timeout="1")
    add_hook(root, "10-tidy", """
trap 'echo "cleaned up" > "$VMGENC_ROOT/tidy.out"; exit 0' TERM
sleep 300 &
echo $! > "$VMGENC_ROOT/child.pid"
wait
""")
    [hook] = runner.plan(config.load(root), "restore")
    result = hook.run(ctx_for(root, cls="restore"))
    assert result.status == "timeout" and result.exit_code is None
    with open(os.path.join(root, "tidy.out")) as f:
        assert f.read() == "cleaned up\n"
    with open(os.path.join(root, "child.pid")) as f:
        assert dead(int(f.read()))


def test_timeout_kills_survivors_that_ignore_sigterm(root, monkeypatch):
    monkeypatch.setattr(site, "KILL_GRACE_S", 0.3)
    write_rc_conf(root, hooks_restore="site", hook_timeout="1")
    add_hook(root, "10-stubborn", """
trap '' TERM
echo $$ > "$VMGENC_ROOT/hook.pid"
while :; do sleep 1; done
""")
    [hook] = runner.plan(config.load(root), "restore")
    assert hook.run(ctx_for(root, cls="restore")).status == "timeout"
    with open(os.path.join(root, "hook.pid")) as f:
        assert dead(int(f.read()))


# -- refusals --------------------------------------------------------------------------------


def assert_refused(root: str, name: str, marker: str = "ran") -> HookResult:
    """Planned, refused when run, and really not executed."""
    [hook] = [h for h in runner.plan(config.load(root), "restore") if h.name == "site:" + name]
    assert hook.refused
    result = hook.run(ctx_for(root, cls="restore"))
    assert result.status == "refused"
    assert result.output.startswith("refused, not run:")
    assert not os.path.exists(os.path.join(root, marker))
    return result


MARK = 'touch "$VMGENC_ROOT/ran"'


def test_refused_not_a_regular_file(root):
    os.mkdir(hooks_path(root, "10-dir"), 0o755)
    os.mkfifo(hooks_path(root, "20-fifo"), 0o700)
    assert_refused(root, "10-dir")
    assert_refused(root, "20-fifo")
    assert problems_of(root, "10-dir") == [f"{hooks_path(root, '10-dir')}: not a regular file"]


def test_refused_not_executable(root):
    add_hook(root, "10-noexec", MARK, mode=0o644)
    assert "not executable" in assert_refused(root, "10-noexec").output


@pytest.mark.parametrize("mode,what", [(0o775, "group"), (0o757, "world"), (0o777, "both")])
def test_refused_group_or_world_writable(root, mode, what):
    add_hook(root, "10-w", MARK, mode=mode)
    out = assert_refused(root, "10-w").output
    assert f"group/world writable (mode {mode:04o})" in out


def test_refused_not_owned_by_trusted_uid(root):
    path = add_hook(root, "10-owner", MARK)
    if AS_ROOT:
        os.chown(path, NOBODY, NOBODY)
        expect = f"owned by uid {NOBODY}, not root (vmgenc_hooks_owner_uid)"
    else:  # cannot give a file away: distrust our own uid instead
        write_rc_conf(root, hooks_restore="site", hooks_owner_uid=str(os.getuid() + 1))
        expect = (f"owned by uid {os.getuid()}, not root or the trusted uid {os.getuid() + 1} "
                  "(vmgenc_hooks_owner_uid)")
    assert f"{path}: {expect}" in assert_refused(root, "10-owner").output


@pytest.mark.parametrize("level", ["hooks.d", "usr", "root"])
def test_refused_in_a_writable_directory_within_the_root(root, level):
    add_hook(root, "10-a", MARK)
    d = {"hooks.d": hooks_path(root), "usr": os.path.join(root, "usr"), "root": root}[level]
    os.chmod(d, 0o777)
    out = assert_refused(root, "10-a").output
    assert f"{d}: directory is group/world writable (mode 0777)" in out


def test_sticky_world_writable_directory_is_refused_too(root):
    add_hook(root, "10-a", MARK)
    os.chmod(os.path.join(root, "usr", "local"), 0o1777)
    assert "directory is group/world writable (mode 1777)" in assert_refused(root, "10-a").output


def test_refused_in_a_directory_owned_by_someone_else(root):
    add_hook(root, "10-a", MARK)
    d = os.path.join(root, "usr", "local", "etc")
    if AS_ROOT:
        os.chown(d, NOBODY, NOBODY)
        owner, trusted = NOBODY, "root"
    else:  # cannot give a directory away: distrust our own uid instead
        write_rc_conf(root, hooks_restore="site", hooks_owner_uid=str(os.getuid() + 1))
        owner, trusted = os.getuid(), f"root or the trusted uid {os.getuid() + 1}"
    out = assert_refused(root, "10-a").output
    assert f"{d}: directory owned by uid {owner}, not {trusted} (vmgenc_hooks_owner_uid)" in out
    if AS_ROOT:  # only that directory is reported: the rule is per directory
        assert out.count("directory owned by") == 1


TRUSTED = 1000  # vmgenc_hooks_owner_uid in the acceptance test: a deploy user, not root
STRANGER = 1001


@pytest.mark.skipif(not AS_ROOT, reason="needs chown: giving files to uid 1000")
def test_the_trusted_uid_may_own_hooks_in_root_owned_directories(root):
    """/ and /usr are root's on every system: with vmgenc_hooks_owner_uid=1000 a hook and a
    hooks directory owned by 1000 under root-owned parents run; a third uid is refused."""
    write_rc_conf(root, hooks_restore="site", hooks_owner_uid=str(TRUSTED))
    path = add_hook(root, "10-deploy", MARK)
    os.chown(path, TRUSTED, TRUSTED)
    os.chown(hooks_path(root), TRUSTED, TRUSTED)
    assert os.stat(os.path.join(root, "usr")).st_uid == 0  # the parents stay root's
    add_hook(root, "20-root", 'touch "$VMGENC_ROOT/root-ran"')  # root is always trusted
    plan = runner.plan(config.load(root), "restore")
    assert [(h.name, h.problems) for h in plan] == [("site:10-deploy", []), ("site:20-root", [])]
    assert [r.status for r in run_all(plan, ctx_for(root, cls="restore"))] == ["ok", "ok"]
    assert os.path.exists(os.path.join(root, "ran"))
    assert os.path.exists(os.path.join(root, "root-ran"))
    assert runner.validate(config.load(root)) == []

    os.chown(path, STRANGER, STRANGER)
    d = os.path.join(root, "usr", "local", "etc")
    os.chown(d, STRANGER, STRANGER)
    os.remove(os.path.join(root, "ran"))
    out = assert_refused(root, "10-deploy").output
    why = f"not root or the trusted uid {TRUSTED} (vmgenc_hooks_owner_uid)"
    assert out == (f"refused, not run:\n{path}: owned by uid {STRANGER}, {why}\n"
                   f"{d}: directory owned by uid {STRANGER}, {why}\n")


def test_root_owned_directories_are_trusted_whatever_the_owner_uid():
    """The real / and /usr (only read): root's, and trusted with any vmgenc_hooks_owner_uid."""
    for d in ("/", "/usr"):
        st = os.stat(d)
        if st.st_uid != 0 or st.st_mode & 0o022:
            pytest.skip(f"{d} is not root's, or is group/world writable, on this machine")
    assert trust.check_dir("/usr", "/", TRUSTED) == []
    assert trust.check_dir("/usr", "/", 0) == []
    assert trust.dir_problems(["/usr"], TRUSTED) == []


def test_directories_above_the_root_are_not_checked(root):
    above = os.path.dirname(root)
    os.chmod(above, 0o777)
    try:
        add_hook(root, "10-a", MARK)
        [hook] = runner.plan(config.load(root), "restore")
        assert not hook.refused
        assert hook.run(ctx_for(root, cls="restore")).status == "ok"
        assert os.path.exists(os.path.join(root, "ran"))
    finally:
        os.chmod(above, 0o755)


def test_symlink_to_a_trusted_target_runs_the_target_inside_the_root(root):
    os.makedirs(os.path.join(root, "opt"), mode=0o755)
    target = os.path.join(root, "opt", "tool")
    with open(target, "w") as f:
        f.write('#!/bin/sh\necho "tool ran as $0"\n')
    os.chmod(target, 0o755)
    # an absolute link means the root's /opt/tool, as in a chroot: never the host's /opt
    os.symlink("/opt/tool", hooks_path(root, "10-link"))
    result = runner.run_site_hook(hooks_path(root, "10-link"), ctx_for(root))
    assert result.status == "ok"
    assert result.output == f"tool ran as {target}\n"


def test_dotdot_in_a_symlink_stops_at_the_root(root):
    os.makedirs(os.path.join(root, "opt"), mode=0o755)
    target = os.path.join(root, "opt", "tool")
    with open(target, "w") as f:
        f.write("#!/bin/sh\necho inside\n")
    os.chmod(target, 0o755)
    os.symlink("../" * 12 + "opt/tool", hooks_path(root, "10-link"))
    assert runner.run_site_hook(hooks_path(root, "10-link"), ctx_for(root)).output == "inside\n"


def test_symlink_to_an_untrusted_target_is_refused(root):
    tmp = os.path.join(root, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)
    target = os.path.join(tmp, "evil")
    with open(target, "w") as f:
        f.write(f"#!/bin/sh\n{MARK}\n")
    os.chmod(target, 0o755)
    os.symlink("../../../../../tmp/evil", hooks_path(root, "10-link"))
    out = assert_refused(root, "10-link").output
    assert f"{tmp}: directory is group/world writable" in out


def test_symlink_to_a_writable_target_file_is_refused(root):
    os.makedirs(os.path.join(root, "opt"), mode=0o755)
    target = os.path.join(root, "opt", "tool")
    with open(target, "w") as f:
        f.write(f"#!/bin/sh\n{MARK}\n")
    os.chmod(target, 0o777)
    os.symlink("/opt/tool", hooks_path(root, "10-link"))
    out = assert_refused(root, "10-link").output
    assert f"symlink target {target}: group/world writable (mode 0777)" in out


def test_dangling_and_looping_symlinks_are_refused(root):
    os.symlink("/nowhere", hooks_path(root, "10-dangling"))
    os.symlink("20-loop", hooks_path(root, "20-loop"))
    assert assert_refused(root, "10-dangling").output == (
        f"refused, not run:\n{hooks_path(root, '10-dangling')}: symlink to /nowhere, "
        f"which does not exist under the root ({root}/nowhere)\n")
    assert "cannot resolve: Too many levels of symbolic links" in \
        assert_refused(root, "20-loop").output


def test_a_dangling_symlink_names_the_target_it_looked_for(root):
    """Under the root, as a chroot would look: the host's /bin/true does not count."""
    assert os.path.exists("/bin/true")
    os.symlink("/bin/true", hooks_path(root, "90-link"))
    os.symlink("../../../../../opt/tool", hooks_path(root, "80-rel"))  # .. stops at the root
    os.symlink("80-rel", hooks_path(root, "70-chain"))
    link = hooks_path(root, "90-link")
    expect = f"symlink to /bin/true, which does not exist under the root ({root}/bin/true)"
    assert problems_of(root, "90-link") == [f"{link}: {expect}"]
    result = runner.run_site_hook(link, ctx_for(root))  # the runner's own check, at run time
    assert (result.status, result.output) == ("refused", f"refused, not run:\n{link}: {expect}\n")
    rel = f"which does not exist under the root ({root}/opt/tool)"
    assert problems_of(root, "80-rel") == [
        f"{hooks_path(root, '80-rel')}: symlink to ../../../../../opt/tool, i.e. /opt/tool, {rel}"]
    assert problems_of(root, "70-chain") == [
        f"{hooks_path(root, '70-chain')}: symlink to 80-rel -> ../../../../../opt/tool, "
        f"i.e. /opt/tool, {rel}"]
    os.makedirs(os.path.join(root, "opt"), mode=0o755)
    with open(os.path.join(root, "opt", "tool"), "w") as f:
        f.write("#!/bin/sh\necho fixed\n")
    os.chmod(os.path.join(root, "opt", "tool"), 0o755)
    assert runner.run_site_hook(hooks_path(root, "70-chain"), ctx_for(root)).output == "fixed\n"


def test_a_hook_made_writable_after_planning_is_refused_when_run(root):
    path = add_hook(root, "10-a", MARK)
    [hook] = runner.plan(config.load(root), "restore")
    assert not hook.refused
    os.chmod(path, 0o777)
    assert hook.run(ctx_for(root, cls="restore")).status == "refused"
    assert not os.path.exists(os.path.join(root, "ran"))


def test_a_refused_hook_is_planned_and_a_trusted_one_beside_it_is_not(root):
    """Refusal is per file; that it does not stop the next is test_handler_hook_failures."""
    add_hook(root, "10-bad", MARK, mode=0o777)
    add_hook(root, "20-good", 'touch "$VMGENC_ROOT/good"')
    plan = runner.plan(config.load(root), "restore")
    assert [(h.name, h.refused) for h in plan] == [("site:10-bad", True), ("site:20-good", False)]
    results = run_all(plan, ctx_for(root, cls="restore"))
    assert [r.status for r in results] == ["refused", "ok"]
    assert os.path.exists(os.path.join(root, "good"))
    assert not os.path.exists(os.path.join(root, "ran"))


# -- validate and the CLI --------------------------------------------------------------------


def test_validate_reports_each_problem(root):
    bad = add_hook(root, "10-bad", MARK, mode=0o666)
    add_hook(root, "20-good", "true")
    problems = [str(p) for p in runner.validate(config.load(root))]
    assert problems == [f"{bad}: not executable: chmod +x, or rename it *.disabled",
                        f"{bad}: group/world writable (mode 0666): chmod go-w"]
    os.chmod(hooks_path(root), 0o775)
    problems = [str(p) for p in runner.validate(config.load(root))]
    dir_problem = f"{hooks_path(root)}: directory is group/world writable (mode 0775)"
    assert problems.count(dir_problem + ": chmod go-w") == 1  # once, not once per hook


def cli(root: str, *args: str) -> int:
    return entry.main(["--root", root, "hooks", *args])


def test_cli_validate_exit_codes(root, capsys):
    add_hook(root, "10-good", "true")
    assert cli(root, "validate") == 0
    assert "ok: 1 site hook(s) checked, no problems" in capsys.readouterr().out
    bad = add_hook(root, "20-bad", "true", mode=0o757)
    assert cli(root, "validate") == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{bad}: group/world writable (mode 0757): chmod go-w"]


def test_cli_list(root, capsys):
    import json

    add_hook(root, "10-good", "true")
    add_hook(root, "20-bad", "true", mode=0o775)
    assert cli(root, "list", "--json") == 1
    doc = json.loads(capsys.readouterr().out)
    clone = doc["classes"]["clone"]
    assert [(h["name"], h["kind"], h["status"]) for h in clone] == [
        ("hostid", "built-in", "enabled"), ("entropy", "built-in", "enabled"),
        ("site:10-good", "site", "enabled"), ("site:20-bad", "site", "refused")]
    assert doc["classes"]["first-seen"] == []
    assert len(doc["problems"]) == 1 and "20-bad" in doc["problems"][0]
    assert cli(root, "list") == 1
    text = capsys.readouterr().out
    assert "site:20-bad" in text and "refused" in text and "first-seen: (no hooks)" in text
    os.chmod(hooks_path(root, "20-bad"), 0o755)
    assert cli(root, "list") == 0


def test_cli_config_error_is_one_line(root, capsys):
    write_rc_conf(root, hooks_clone="sshd_keys bogus")
    assert cli(root, "validate") == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown hook 'bogus'" in err



def test_validate_reports_a_misspelt_knob(root):
    write_rc_conf(root, hook_timout="60")
    problems = [str(p) for p in runner.validate(config.load(root))]
    assert "rc.conf: unknown variable vmgenc_hook_timout: not a vmgenc knob " \
           "(misspelt? see vmgenc-hooks(5))" in problems
