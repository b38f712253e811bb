"""hostid: a fresh software UUID, rc.d/hostid's md5 rule, placeholders and SMBIOS avoided."""

from __future__ import annotations

import errno
import os
import re
import stat
import subprocess
import uuid

import pytest
from conftest import write_kernel
from hooks_sandbox import ctx_for, make_trusted, read_bytes, temp_leftovers

from vmgenc_tools import simstate
from vmgenc_tools.hooks import hostid, runner
from vmgenc_tools.hooks.builtin import HookFailed
from vmgenc_tools.sysctl import get_backend, read_int, read_string

SMBIOS = "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
FIXED = ["00000000-0000-0000-0000-000000000001", "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87",
         "8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d", "ffffffff-0000-4000-8000-000000000000"]


@pytest.fixture
def root(kernel_root):
    make_trusted(kernel_root)
    for name, text in (("hostid", SMBIOS + "\n"), ("machine-id", SMBIOS.replace("-", "") + "\n")):
        with open(os.path.join(kernel_root, "etc", name), "w") as f:
            f.write(text)
    with simstate.transaction(kernel_root) as st:
        st.nodes["kern.hostuuid"].value = simstate.encode_string(SMBIOS)
    return kernel_root


# rc.d/hostid's hostid_set, with md5sum (and its " -" suffix cut) standing in for /sbin/md5
HOSTID_SET = r"""
uuid=$1
id=`printf %s $uuid | md5sum`; id=${id%% *}
id="0x${id%????????????????????????}"
echo $id
"""


def md5_rule(text: str) -> int:
    """``kern.hostid`` as rc.d/hostid's own shell code computes it for ``text``."""
    out = subprocess.run(["sh", "-c", HOSTID_SET, "sh", text],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert re.fullmatch(r"0x[0-9a-f]{8}", out), out
    return int(out, 16)


def kernel_values(root: str) -> tuple[str, int]:
    b = get_backend(root)
    return read_string(b, "kern.hostuuid"), read_int(b, "kern.hostid")


@pytest.mark.parametrize("text", FIXED)
def test_md5_rule_matches_rc_d_hostid(text):
    assert hostid.hostid_of(text) == md5_rule(text)


@pytest.mark.parametrize("text,expected", [
    ("00000000-0000-0000-0000-000000000001", 0xc96589ee),
    ("324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87", 0x5ec5c9ee),
    ("8a5d2c1e-4b7f-4c3a-9e21-7d6b5a4f3e2d", 0xe69159b6),
])
def test_md5_rule_on_fixed_inputs(text, expected):
    """Known values (md5 of the UUID text, first 4 bytes): no tool in the loop."""
    assert hostid.hostid_of(text) == expected == md5_rule(text)


def test_hook_sets_kernel_and_files(root):
    result = runner.builtin("hostid").run(ctx_for(root))
    assert result.status == "ok", result.output
    text, hid = kernel_values(root)
    assert UUID_RE.match(text) and text != SMBIOS
    assert hid == md5_rule(text) == hostid.hostid_of(text)
    hostid_file = os.path.join(root, "etc", "hostid")
    machine_id = os.path.join(root, "etc", "machine-id")
    assert read_bytes(hostid_file) == f"{text}\n".encode()
    assert read_bytes(machine_id) == (text.replace("-", "") + "\n").encode()
    assert re.fullmatch(rb"[0-9a-f]{32}\n", read_bytes(machine_id))
    for p in (hostid_file, machine_id):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o644
    assert temp_leftovers(os.path.join(root, "etc")) == []
    assert f"kern.hostuuid: {SMBIOS} -> {text}" in result.output
    assert f"kern.hostid: 0x{hid:08x}" in result.output


def test_each_run_draws_a_new_identity(root):
    seen = set()
    for _ in range(3):
        assert runner.builtin("hostid").run(ctx_for(root)).status == "ok"
        seen.add(kernel_values(root)[0])
    assert len(seen) == 3


def test_valid_hostid_matches_rc_d_hostid():
    for bad in sorted(hostid.BLACKLIST):
        assert not hostid.valid_hostid(bad)
    assert not hostid.valid_hostid("12345678-ffff-ffff-ffff-ffffffffffff")
    assert hostid.valid_hostid("12345678-9abc-def0-ffff-ffffffffffff")
    assert not hostid.valid_hostid(FIXED[1].upper())
    assert not hostid.valid_hostid(FIXED[1][:-1])
    assert not hostid.valid_hostid(FIXED[1] + "\n")
    assert hostid.valid_hostid(FIXED[1])
    assert "03000200-0400-0500-0006-000700080009" in hostid.BLACKLIST
    assert len(hostid.BLACKLIST) == 12


def test_new_uuid_skips_placeholders_smbios_and_the_current_value():
    draws = iter([uuid.UUID("03000200-0400-0500-0006-000700080009"),
                  uuid.UUID("12345678-ffff-ffff-ffff-ffffffffffff"),
                  uuid.UUID(SMBIOS), uuid.UUID(FIXED[1]), uuid.UUID(FIXED[3])])
    got = hostid.new_uuid([SMBIOS.upper(), FIXED[1], None], draw=lambda: next(draws))
    assert got == FIXED[3]


def test_new_uuid_gives_up_on_a_broken_source():
    with pytest.raises(HookFailed):
        hostid.new_uuid([SMBIOS], draw=lambda: uuid.UUID(SMBIOS))


def test_hook_never_takes_the_smbios_uuid(root, mocker):
    other = "5b1e0c9a-7d3f-4a2b-9c8d-0e1f2a3b4c5d"
    mocker.patch("uuid.uuid4", side_effect=[uuid.UUID(SMBIOS), uuid.UUID(other)])
    assert runner.builtin("hostid").run(ctx_for(root)).status == "ok"
    assert kernel_values(root) == (other, hostid.hostid_of(other))


def test_dry_run_changes_nothing(root):
    before = (kernel_values(root), read_bytes(os.path.join(root, "etc", "hostid")),
              read_bytes(os.path.join(root, "etc", "machine-id")))
    result = runner.builtin("hostid").run(ctx_for(root, dry_run=True))
    assert result.status == "ok"
    assert (kernel_values(root), read_bytes(os.path.join(root, "etc", "hostid")),
            read_bytes(os.path.join(root, "etc", "machine-id"))) == before
    assert "would rewrite /etc/hostid (mode 0644), atomically" in result.output
    assert f"never the SMBIOS UUID {SMBIOS}" in result.output


def test_failed_write_keeps_old_files_and_kernel(root, mocker):
    before = (kernel_values(root), read_bytes(os.path.join(root, "etc", "hostid")))
    mocker.patch("os.replace", side_effect=OSError(errno.ENOSPC, "No space left on device"))
    result = runner.builtin("hostid").run(ctx_for(root))
    assert result.status == "failed" and "No space left on device" in result.output
    assert (kernel_values(root), read_bytes(os.path.join(root, "etc", "hostid"))) == before
    assert temp_leftovers(os.path.join(root, "etc")) == []


def test_kernel_refusing_the_new_values_fails_the_hook_files_already_new(root, mocker):
    """EPERM from sysctl (a jail, securelevel): failed, reported; the next boot gets the new id."""
    from vmgenc_tools.sysctl.errors import NotPermitted

    mocker.patch.object(hostid, "write_string", side_effect=NotPermitted(
        errno.EPERM, "kern.hostuuid", "Operation not permitted"))
    result = runner.builtin("hostid").run(ctx_for(root))
    assert result.status == "failed" and "Operation not permitted" in result.output
    assert kernel_values(root)[0] == SMBIOS
    saved = read_bytes(os.path.join(root, "etc", "hostid")).decode().strip()
    assert UUID_RE.match(saved) and saved != SMBIOS  # files first: rc.d/hostid sets it at boot


def test_rc_conf_file_names_are_honoured(root):
    with open(os.path.join(root, "etc", "rc.conf"), "a") as f:
        f.write('hostid_file="/etc/hostid.custom"\nmachine_id_file="NO"\n')
    before = read_bytes(os.path.join(root, "etc", "machine-id"))
    assert runner.builtin("hostid").run(ctx_for(root)).status == "ok"
    text, _ = kernel_values(root)
    assert read_bytes(os.path.join(root, "etc", "hostid.custom")) == f"{text}\n".encode()
    assert read_bytes(os.path.join(root, "etc", "machine-id")) == before


def test_multihost_pools_are_warned_about(root):
    os.makedirs(os.path.join(root, "sbin"), exist_ok=True)
    zpool = os.path.join(root, "sbin", "zpool")
    with open(zpool, "w") as f:
        f.write('#!/bin/sh\n[ "$*" = "get -H -o name,value multihost" ] || exit 2\n'
                'printf "tank\\ton\\nbackup\\toff\\nvault\\ton\\n"\n')
    os.chmod(zpool, 0o755)
    result = runner.builtin("hostid").run(ctx_for(root))
    assert result.status == "ok"
    assert "warning: ZFS pool(s) tank, vault have multihost=on" in result.output
    assert "backup" not in result.output


def test_no_zpool_no_warning(root):
    result = runner.builtin("hostid").run(ctx_for(root))
    assert "multihost" not in result.output


def test_no_smbios_uuid_still_works(kernel_root):
    make_trusted(kernel_root)
    write_kernel(kernel_root, smbios_uuid=None)
    assert runner.builtin("hostid").run(ctx_for(kernel_root)).status == "ok"
    text, hid = kernel_values(kernel_root)
    assert UUID_RE.match(text) and hid == hostid.hostid_of(text)
