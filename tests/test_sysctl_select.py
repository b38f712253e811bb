"""Backend selection (explicit > VMGENC_SYSCTL_BACKEND > sim root > libc on FreeBSD > error),
library loading errors, and the rule that only vmgenc_tools/sysctl/ imports ctypes."""

from __future__ import annotations

import ast
import os
import sys

import pytest
from cbuild import fakesysctl_lib  # noqa: F401  (session fixture)
from conftest import write_kernel

from vmgenc_tools.simstate import SimStateError
from vmgenc_tools.sysctl import BackendError, get_backend
from vmgenc_tools.sysctl.libc import LibcBackend
from vmgenc_tools.sysctl.sim import SimBackend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ON_FREEBSD = sys.platform.startswith("freebsd")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("VMGENC_SYSCTL_BACKEND", "VMGENC_LIBC", "VMGENC_ROOT"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sim_root(tmp_path):
    root = str(tmp_path / "sim")
    os.makedirs(root)
    write_kernel(root)
    return root


@pytest.fixture
def plain_root(tmp_path):
    root = str(tmp_path / "plain")
    os.makedirs(root)
    return root


def test_explicit_name_beats_the_environment(sim_root, monkeypatch):
    monkeypatch.setenv("VMGENC_SYSCTL_BACKEND", "libc")
    backend = get_backend(sim_root, "sim")
    assert isinstance(backend, SimBackend) and backend.root == sim_root


def test_environment_beats_a_simulated_root(sim_root, fakesysctl_lib, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VMGENC_SYSCTL_BACKEND", "libc")
    monkeypatch.setenv("VMGENC_LIBC", fakesysctl_lib)
    backend = get_backend(sim_root)
    assert isinstance(backend, LibcBackend) and backend.libpath == fakesysctl_lib


def test_a_simulated_root_selects_sim(sim_root, monkeypatch):
    monkeypatch.setattr(sys, "platform", "freebsd14")
    assert isinstance(get_backend(sim_root), SimBackend)


def test_libc_on_freebsd(plain_root, fakesysctl_lib, monkeypatch):  # noqa: F811
    monkeypatch.setattr(sys, "platform", "freebsd14")
    monkeypatch.setenv("VMGENC_LIBC", fakesysctl_lib)
    backend = get_backend(plain_root)
    assert isinstance(backend, LibcBackend) and backend.libpath == fakesysctl_lib


@pytest.mark.skipif(ON_FREEBSD, reason="checks a non-FreeBSD C library")
def test_freebsd_selection_with_this_os_libc_names_the_missing_symbol(plain_root, monkeypatch):
    monkeypatch.setattr(sys, "platform", "freebsd14")
    with pytest.raises(BackendError, match=r"has no sysctlbyname\(\): not FreeBSD's C library"):
        get_backend(plain_root)


@pytest.mark.skipif(ON_FREEBSD, reason="the error is for other systems")
def test_another_os_without_a_simulation_is_a_clear_error(plain_root):
    with pytest.raises(BackendError) as exc:
        get_backend(plain_root)
    assert str(exc.value) == \
        "not FreeBSD: use `vmgenctl --root DIR sim init` to try the simulation"


@pytest.mark.skipif(ON_FREEBSD, reason="checks another OS")
def test_vmgenc_libc_alone_selects_libc_on_another_os(plain_root, fakesysctl_lib,  # noqa: F811
                                                      monkeypatch):
    monkeypatch.setenv("VMGENC_LIBC", fakesysctl_lib)
    backend = get_backend(plain_root)
    assert isinstance(backend, LibcBackend) and backend.libpath == fakesysctl_lib


def test_a_simulated_root_beats_vmgenc_libc(sim_root, fakesysctl_lib, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VMGENC_LIBC", fakesysctl_lib)
    assert isinstance(get_backend(sim_root), SimBackend)


def test_the_environment_forces_sim_on_a_plain_root(plain_root, monkeypatch):
    """Forced ``sim`` on a root without a simulated VM: the simulation's own error."""
    monkeypatch.setenv("VMGENC_SYSCTL_BACKEND", "sim")
    backend = get_backend(plain_root)
    assert isinstance(backend, SimBackend)
    with pytest.raises(SimStateError, match="sim init"):
        backend.sysctlbyname("dev.vmgenc.0.guid", None)


def test_an_unknown_backend_name(plain_root, monkeypatch):
    with pytest.raises(BackendError, match="unknown sysctl backend 'bsd'"):
        get_backend(plain_root, "bsd")
    monkeypatch.setenv("VMGENC_SYSCTL_BACKEND", "kernel")
    with pytest.raises(BackendError, match="unknown sysctl backend 'kernel'"):
        get_backend(plain_root)


def test_a_library_that_cannot_be_loaded(tmp_path):
    missing = str(tmp_path / "nope.so")
    with pytest.raises(BackendError, match=f"cannot load the C library {missing}"):
        LibcBackend(missing)
    not_elf = tmp_path / "text.so"
    not_elf.write_text("not a library\n")
    with pytest.raises(BackendError, match="cannot load the C library"):
        LibcBackend(str(not_elf))


@pytest.mark.skipif(ON_FREEBSD, reason="checks a non-FreeBSD C library")
def test_this_os_libc_exports_neither_sysctlbyname_nor_kenv(fakesysctl_lib):  # noqa: F811
    """glibc has no sysctlbyname, so nothing can shadow the test library's; and loading the
    test library (RTLD_LOCAL) does not put its symbols in the global namespace."""
    LibcBackend(fakesysctl_lib)
    with pytest.raises(BackendError, match=r"has no sysctlbyname\(\)"):
        LibcBackend(None)


def _imports_ctypes(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
                a.name.split(".")[0] == "ctypes" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ctypes":
            return True
        if isinstance(node, ast.Call) and any(
                isinstance(a, ast.Constant) and a.value == "ctypes" for a in node.args):
            return True  # __import__("ctypes"), importlib.import_module("ctypes")
    return False


def test_only_the_libc_backend_imports_ctypes():
    skip = {".venv", ".git", "build", "dist", "node_modules", "__pycache__"}
    importers = []
    for dirpath, dirnames, filenames in os.walk(REPO):
        dirnames[:] = [d for d in dirnames if d not in skip and not d.endswith(".egg-info")]
        for fn in filenames:
            if fn.endswith(".py") and _imports_ctypes(os.path.join(dirpath, fn)):
                importers.append(os.path.relpath(os.path.join(dirpath, fn), REPO))
    assert importers == [os.path.join("vmgenc_tools", "sysctl", "libc.py")]


VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")


@pytest.mark.parametrize("args", [["check"], ["status"]])
@pytest.mark.parametrize("form", ["separate", "joined"])
def test_the_command_line_option_beats_the_environment(tmp_path, args, form):
    """``vmgenctl --sysctl-backend sim`` (the fast check path and the click app alike) wins
    over ``VMGENC_SYSCTL_BACKEND=libc``, which on its own fails on this root."""
    import subprocess

    root = str(tmp_path / "vm")
    assert subprocess.run([VMGENCTL, "--root", root, "sim", "init"], capture_output=True,
                          timeout=60).returncode == 0
    env = dict(os.environ, VMGENC_SYSCTL_BACKEND="libc")
    env.pop("VMGENC_LIBC", None)
    env.pop("VMGENC_ROOT", None)
    if not ON_FREEBSD:  # FreeBSD's libc would answer; elsewhere libc alone cannot
        alone = subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True,
                               text=True, env=env, timeout=60)
        assert alone.returncode == 7 and "sysctlbyname" in alone.stderr, alone.stderr
    opt = (["--sysctl-backend", "sim"] if form == "separate" else ["--sysctl-backend=sim"])
    for before in ([*opt, "--root", root], ["--root", root, *opt]):
        p = subprocess.run([VMGENCTL, *before, *args], capture_output=True, text=True,
                           env=env, timeout=60)
        assert p.returncode in (0, 1) and p.stderr == "", (before, p.stderr)
    bad = subprocess.run([VMGENCTL, "--sysctl-backend", "bsd", "--root", root, *args],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("vmgenctl: ") and "'bsd' is not one of" in bad.stderr
