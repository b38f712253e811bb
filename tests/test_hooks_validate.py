"""``vmgenctl hooks validate`` (and ``hooks list``): the knobs whose value silently turns
something off — a hooks directory that does not exist, a metrics file that cannot be
written — and a dangling symlink hook named by its target."""

from __future__ import annotations

import json
import os

import pytest
from hooks_sandbox import HOOKS_DIR, add_hook, hooks_path, make_trusted, write_rc_conf

from vmgenc_tools import config, entry, exitcodes, metrics

AS_ROOT = os.geteuid() == 0
PROM = "/var/tmp/node_exporter/vmgenc.prom"


def validate(root: str, capsys) -> tuple[int, list[str]]:
    code = entry.main(["--root", root, "hooks", "validate"])
    return code, capsys.readouterr().out.splitlines()


def missing_dir_line(root: str, d: str) -> str:
    return (f"vmgenc_hooks_dir {d} does not exist under the root ({root}{d}): "
            "no site hook will run (create it, or fix vmgenc_hooks_dir)")


@pytest.fixture
def root(kernel_root):
    make_trusted(kernel_root)
    return kernel_root


# -- the hooks directory ---------------------------------------------------------------------


def test_a_misspelt_hooks_dir_is_a_problem_when_a_class_runs_site(root, capsys):
    typo = "/usr/local/etc/vmgenc/hook.d"
    add_hook(root, "10-good", "true")  # in the real directory, which is not the one named
    write_rc_conf(root, hooks_dir=typo)  # default lists: clone, restore… contain ``site``
    assert validate(root, capsys) == (exitcodes.PENDING_OR_FAILED,
                                      [missing_dir_line(root, typo)])
    assert entry.main(["--root", root, "hooks", "list", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["problems"] == [missing_dir_line(root, typo)]
    assert [h["name"] for h in doc["classes"]["restore"]] == ["entropy"]  # indeed none runs
    write_rc_conf(root)  # the right name again
    assert validate(root, capsys) == (0, ["ok: 1 site hook(s) checked, no problems"])


@pytest.mark.parametrize("lists", [
    {"hooks_clone": "sshd_keys hostid entropy site", "hooks_restore": "entropy"},
    {"hooks_unknown": "site"},
    {"hooks_first_seen": "entropy site"},
])
def test_any_one_class_with_site_is_enough(root, capsys, lists):
    off = {k: "entropy" for k in ("hooks_first_seen", "hooks_clone", "hooks_restore",
                                  "hooks_platform_restart", "hooks_unknown")}
    write_rc_conf(root, hooks_dir="/nonexistent", **{**off, **lists})
    assert validate(root, capsys) == (1, [missing_dir_line(root, "/nonexistent")])


def test_a_missing_hooks_dir_is_no_problem_when_no_class_runs_site(root, capsys):
    write_rc_conf(root, hooks_dir="/nonexistent", hooks_first_seen="", hooks_clone="hostid",
                  hooks_restore="entropy", hooks_platform_restart="entropy",
                  hooks_unknown="")
    assert validate(root, capsys) == (0, ["ok: 0 site hook(s) checked, no problems"])


def test_the_message_on_a_real_system_names_the_directory_as_configured(root):
    from vmgenc_tools.cli.hooks import all_problems

    cfg = config.load(root)
    real = config.Config(root="/", hooks_dir="/no/such/vmgenc-test/hooks.d", hooks=cfg.hooks)
    assert not os.path.exists("/no/such/vmgenc-test")
    assert [str(p) for p in all_problems(real) if "vmgenc_hooks_dir" in str(p)] == [
        "vmgenc_hooks_dir /no/such/vmgenc-test/hooks.d does not exist: no site hook will run "
        "(create it, or fix vmgenc_hooks_dir)"]


# -- sim init and the README flow ------------------------------------------------------------


def ctl(root: str, capsys, *args: str) -> tuple[int, str]:
    code = entry.main(["--root", root, *args])
    return code, capsys.readouterr().out


@pytest.fixture
def sim_root(tmp_path, capsys):
    root = str(tmp_path / "vm")
    assert ctl(root, capsys, "sim", "init")[0] == 0
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write(f'vmgenc_hooks_owner_uid="{os.getuid()}"\n')  # as conftest: also not as root
    return root


def test_sim_init_then_the_readme_flow_validates(sim_root, capsys):
    """sim init makes no hooks directory (make install and the port do): created here, as
    they would, then the README's 'Write a hook' steps validate with exit 0."""
    hooks = os.path.join(sim_root, HOOKS_DIR.lstrip("/"))
    if not os.path.isdir(hooks):  # what sim init gives today
        assert ctl(sim_root, capsys, "hooks", "validate") == (
            1, missing_dir_line(sim_root, HOOKS_DIR) + "\n")
        os.makedirs(hooks, mode=0o755)
        for d in ("usr/local/etc/vmgenc", "usr/local/etc/vmgenc/hooks.d"):
            os.chmod(os.path.join(sim_root, d), 0o755)
    assert ctl(sim_root, capsys, "hooks", "validate") == (
        0, "ok: 0 site hook(s) checked, no problems\n")
    hook = os.path.join(hooks, "50-salt-minion")  # install -m 755 50-salt-minion hooks.d/
    with open(hook, "w") as f:
        f.write('#!/bin/sh\n[ "$VMGENC_CLASS" = clone ] || exit 0\necho reset\n')
    os.chmod(hook, 0o755)
    assert ctl(sim_root, capsys, "hooks", "validate") == (
        0, "ok: 1 site hook(s) checked, no problems\n")
    code, out = ctl(sim_root, capsys, "hooks", "list")
    assert code == 0 and "site:50-salt-minion" in out


# -- vmgenc_metrics_file ---------------------------------------------------------------------


def metrics_line(root: str, d: str, what: str, fix: str = "create the directory") -> str:
    return (f"vmgenc_metrics_file directory {d} {what} under the root ({root}{d}): "
            f"{PROM} is never written ({fix}, or fix vmgenc_metrics_file)")


def test_a_metrics_file_in_a_missing_directory_is_a_problem(root, capsys):
    write_rc_conf(root, metrics_file=PROM)
    d = os.path.dirname(PROM)
    assert validate(root, capsys) == (1, [metrics_line(root, d, "does not exist")])
    cfg = config.load(root)
    with pytest.raises(FileNotFoundError):  # what the handler would meet, and only log
        metrics.write_file(cfg.path(cfg.metrics_file), "x\n")
    os.makedirs(os.path.join(root, d.lstrip("/")))
    assert validate(root, capsys) == (0, ["ok: 0 site hook(s) checked, no problems"])
    metrics.write_file(cfg.path(cfg.metrics_file), "x\n")
    with open(cfg.path(cfg.metrics_file)) as f:
        assert f.read() == "x\n"


def test_a_metrics_directory_that_is_a_file_is_a_problem(root, capsys):
    write_rc_conf(root, metrics_file=PROM)
    os.makedirs(os.path.join(root, "var", "tmp"), exist_ok=True)
    open(os.path.join(root, "var", "tmp", "node_exporter"), "w").close()
    d = os.path.dirname(PROM)
    line = (f"vmgenc_metrics_file directory {d} is not a directory under the root ({root}{d}): "
            f"{PROM} is never written (fix vmgenc_metrics_file)")
    assert validate(root, capsys) == (1, [line])


@pytest.mark.skipif(AS_ROOT, reason="root may write any directory: nothing to report")
def test_a_metrics_directory_we_cannot_write_is_a_problem(root, capsys):
    write_rc_conf(root, metrics_file=PROM)
    d = os.path.dirname(PROM)
    real = os.path.join(root, d.lstrip("/"))
    os.makedirs(real)
    os.chmod(real, 0o555)
    try:
        with pytest.raises(PermissionError):
            metrics.write_file(os.path.join(real, "vmgenc.prom"), "x\n")
        assert validate(root, capsys) == (1, [metrics_line(
            root, d, f"is not writable by uid {os.getuid()}",
            "fix the directory's owner or mode")])
    finally:
        os.chmod(real, 0o755)


def test_dot_dot_in_a_knob_stops_at_the_root(root, capsys):
    """``/../../../etc`` is ``/etc`` on the real system, so ``${root}/etc`` in a sandbox:
    nothing of the host's /etc is looked at (or reported)."""
    cfg = config.Config(root=root)
    assert cfg.path("/../../../etc") == os.path.join(root, "etc")
    assert cfg.path("/var/db/../db/vmgenc") == os.path.join(root, "var/db/vmgenc")
    write_rc_conf(root, hooks_dir="/../../../usr/local/etc/vmgenc/hooks.d")
    add_hook(root, "10-good", "true")
    assert validate(root, capsys) == (0, ["ok: 1 site hook(s) checked, no problems"])


def test_metrics_off_is_not_checked(root, capsys):
    write_rc_conf(root, metrics_file="")
    assert validate(root, capsys) == (0, ["ok: 0 site hook(s) checked, no problems"])


# -- a dangling symlink hook -----------------------------------------------------------------


def test_validate_names_the_target_of_a_dangling_symlink(root, capsys):
    os.symlink("/bin/true", hooks_path(root, "90-link"))
    assert validate(root, capsys) == (1, [
        f"{hooks_path(root, '90-link')}: symlink to /bin/true, which does not exist under "
        f"the root ({root}/bin/true)"])
