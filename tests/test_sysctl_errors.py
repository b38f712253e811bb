"""The one errno → exception table (vmgenc_tools/sysctl/errors.py) both backends raise through."""

from __future__ import annotations

import errno
import os

import pytest

from vmgenc_tools.sysctl.errors import (
    VMGENC_HINT,
    BufferTooSmall,
    InvalidValue,
    IsANode,
    NoSuchOid,
    NotADirectory,
    NotPermitted,
    SysctlError,
    error_for,
)


@pytest.mark.parametrize("err,cls,message", [
    (errno.ENOENT, NoSuchOid, "no sysctl kern.nosuch"),
    (errno.EISDIR, IsANode, "sysctl kern.nosuch is a node, not a value: name a leaf below it"),
    (errno.ENOMEM, BufferTooSmall, "sysctl kern.nosuch: buffer too small"),
    (errno.EPERM, NotPermitted, "sysctl kern.nosuch: not permitted (read-only, or not root)"),
    (errno.EACCES, NotPermitted, "sysctl kern.nosuch: permission denied (run as root)"),
    (errno.EINVAL, InvalidValue, "sysctl kern.nosuch: invalid value"),
    (errno.ENOTDIR, NotADirectory, "sysctl kern.nosuch: the name goes on past a leaf"),
    (errno.EIO, SysctlError, f"sysctl kern.nosuch: {os.strerror(errno.EIO)}"),
    (errno.EFAULT, SysctlError, f"sysctl kern.nosuch: {os.strerror(errno.EFAULT)}"),
])
def test_each_errno_has_its_exception_and_one_line_message(err, cls, message):
    exc = error_for(err, "kern.nosuch")
    assert type(exc) is cls
    assert isinstance(exc, OSError)
    assert (exc.errno, exc.name, str(exc)) == (err, "kern.nosuch", message)
    assert "\n" not in str(exc)


@pytest.mark.parametrize("name", ["dev.vmgenc.0.guid", "dev.vmgenc.1", "dev.vmgenc"])
def test_enoent_under_dev_vmgenc_says_how_to_attach_the_driver(name):
    msg = str(error_for(errno.ENOENT, name))
    assert msg == f"no sysctl {name} ({VMGENC_HINT})"
    assert "kldload vmgenc" in msg and 'vmgenc_load="YES"' in msg and "loader.conf" in msg
    assert "VM Generation ID device" in msg


@pytest.mark.parametrize("name,what", [("kern.hostuuid", "sysctl"), ("dev.acpi", "sysctl"),
                                       ("dev.vmgencx.0", "sysctl"),
                                       ("dev.vmgenc.0.guid", "kenv")])
def test_other_enoents_carry_no_driver_hint(name, what):
    assert str(error_for(errno.ENOENT, name, what)) == f"no {what} {name}"


def test_kenv_errors_name_kenv():
    exc = error_for(errno.ENAMETOOLONG, "x" * 129, "kenv")
    assert type(exc) is SysctlError
    assert str(exc) == f"kenv {'x' * 129}: {os.strerror(errno.ENAMETOOLONG)}"
    assert str(error_for(errno.EPERM, "a", "kenv")) == \
        "kenv a: not permitted (read-only, or not root)"
