"""The handler's configuration: rc.conf files under --root, evaluated by the real /bin/sh."""

from __future__ import annotations

import os

import pytest

from vmgenc_tools import config, exitcodes, fastcheck
from vmgenc_tools.config import KNOBS, ConfigError

FILES = ("etc/defaults/rc.conf", "etc/rc.conf", "etc/rc.conf.local", "etc/rc.conf.d/vmgenc",
         "usr/local/etc/rc.conf.d/vmgenc")


def put(root: str, rel: str, text: str) -> str:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_every_file_is_read_in_rc_order_under_the_root(tmp_path):
    root = str(tmp_path)
    for i, rel in enumerate(FILES):  # each file overrides the ones before it
        put(root, rel, f'vmgenc_hook_timeout="{10 + i}"\nvmgenc_from_{i}="{rel}"\n')
    values = config.read_vars(root)
    assert values["vmgenc_hook_timeout"] == str(10 + len(FILES) - 1)
    assert [values[f"vmgenc_from_{i}"] for i in range(len(FILES))] == list(FILES)
    for n in range(len(FILES) - 1, 0, -1):  # take the last file away: the one before wins
        os.unlink(os.path.join(root, FILES[n]))
        assert config.read_vars(root)["vmgenc_hook_timeout"] == str(10 + n - 1)


def test_defaults_file_is_optional_and_knob_defaults_apply(tmp_path):
    root = str(tmp_path)
    assert config.read_vars(root) == {}
    cfg = config.load(root)
    assert (cfg.hook_timeout, cfg.dbdir, cfg.devd_detach) == (300, "/var/db/vmgenc", True)
    assert cfg.hooks_for("clone") == ("sshd_keys", "hostid", "entropy", "site")
    assert cfg.hooks_for("first-seen") == ()
    assert cfg.db_path == os.path.join(root, "var/db/vmgenc/history.db")


def test_the_files_are_shell_not_key_value_text(tmp_path):
    """Expansion, command substitution, conditionals, comments, continuation lines."""
    root = str(tmp_path)
    put(root, "etc/rc.conf", """# comment
base="entropy"
vmgenc_hooks_restore="${base} site"   # trailing comment
vmgenc_hook_timeout=$(( 6 * 7 ))
if [ -n "$base" ]; then vmgenc_log_level=notice; fi
vmgenc_ssh_keytypes="ed25519 \\
ecdsa"
""")
    put(root, "etc/rc.conf.local", 'vmgenc_hooks_restore="${vmgenc_hooks_restore} hostid"\n')
    cfg = config.load(root)
    assert cfg.hooks_for("restore") == ("entropy", "site", "hostid")
    assert cfg.hook_timeout == 42 and cfg.log_level == "notice"
    assert cfg.ssh_keytypes == ("ed25519", "ecdsa")


def test_rc_conf_d_may_be_a_directory_of_files(tmp_path):
    root = str(tmp_path)
    put(root, "etc/rc.conf", 'vmgenc_hook_timeout="10"\n')
    put(root, "usr/local/etc/rc.conf.d/vmgenc/10-timeout", 'vmgenc_hook_timeout="20"\n')
    put(root, "usr/local/etc/rc.conf.d/vmgenc/20-level", 'vmgenc_log_level="debug"\n')
    cfg = config.load(root)
    assert (cfg.hook_timeout, cfg.log_level) == (20, "debug")


def test_files_outside_the_root_are_not_read(tmp_path):
    outside = str(tmp_path / "host")
    root = str(tmp_path / "vm")
    put(outside, "etc/rc.conf", 'vmgenc_hook_timeout="99"\n')
    put(root, "etc/rc.conf", 'vmgenc_log_level="err"\n')
    assert config.read_vars(root) == {"vmgenc_log_level": "err"}


@pytest.mark.parametrize("var,value", [
    ("vmgenc_enable", "perhaps"),
    ("vmgenc_devd_detach", "maybe"),
    ("vmgenc_hook_stop_on_failure", "2"),
    ("vmgenc_ssh_remove_other", "sure"),
    ("vmgenc_hook_timeout", "soon"),
    ("vmgenc_hook_timeout", "0"),
    ("vmgenc_ssh_rsa_bits", "512"),
    ("vmgenc_hooks_owner_uid", "-1"),
    ("vmgenc_hooks_clone", "sshd_keys teleport"),
    ("vmgenc_hooks_first_seen", "reboot"),
    ("vmgenc_ssh_keytypes", "rsa dsa"),
    ("vmgenc_log_level", "loud"),
    ("vmgenc_runtime_class", "platform-restart"),
    ("vmgenc_dbdir", "var/db/vmgenc"),
    ("vmgenc_hooks_dir", "hooks.d"),
    ("vmgenc_sshd_config", "sshd_config"),
    ("vmgenc_sshd_pidfile", "sshd.pid"),
    ("vmgenc_metrics_file", "metrics.prom"),
])
def test_a_bad_value_names_its_variable_and_exits_6(kernel_root, capsys, var, value):
    assert var in KNOBS
    with pytest.raises(ConfigError, match=var):
        config.from_vars({var: value}, kernel_root)
    put(kernel_root, "etc/rc.conf", f'{var}="{value}"\n')
    assert fastcheck.run_check(kernel_root, []) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert err.startswith("vmgenctl: ") and f"${var}" in err and err.count("\n") == 1


def test_a_shell_error_in_rc_conf_is_one_line_exit_6(kernel_root, capsys):
    put(kernel_root, "etc/rc.conf", 'vmgenc_hook_timeout="10"\nif then fi (\n')
    assert fastcheck.run_check(kernel_root, []) == exitcodes.CONFIG
    err = capsys.readouterr().err
    assert "rc.conf could not be read by /bin/sh" in err and err.count("\n") == 1


def test_unknown_vmgenc_variables_are_collected_not_fatal(tmp_path):
    root = str(tmp_path)
    put(root, "etc/rc.conf", 'vmgenc_hook_timout="5"\nsshd_enable="YES"\n')
    cfg = config.load(root)
    assert cfg.unknown == ("vmgenc_hook_timout",) and cfg.hook_timeout == 300


def test_every_knob_has_a_default_and_a_meaning():
    assert set(KNOBS) >= {"vmgenc_enable", "vmgenc_hooks_dir", "vmgenc_hook_timeout",
                          "vmgenc_ssh_keytypes", "vmgenc_dbdir", "vmgenc_devd_detach",
                          "vmgenc_log_level"}
    for cls in config.CLASSES:
        assert "vmgenc_hooks_" + cls.replace("-", "_") in KNOBS
    assert config.from_vars({}, "/") == config.from_vars(
        {k: d for k, (d, _) in KNOBS.items()}, "/")
    assert all(meaning for _, meaning in KNOBS.values())
