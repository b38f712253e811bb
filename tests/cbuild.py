"""Build the C test library (tests/csrc/fakesysctl.c) with the system C compiler.

Test modules import the session fixture::

    from cbuild import fakesysctl_lib, fakesysctl_probe  # noqa: F401  (fixtures)

``fakesysctl_lib`` is the path of ``libfakesysctl.so`` and ``fakesysctl_probe`` that of a
program calling it directly; both are built once per session into temp dirs.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
CFLAGS = ["-O2", "-Wall", "-Wextra", "-Werror"]


def compiler() -> str:
    """The system C compiler (``$CC``, else ``cc``); fails the test run if there is none."""
    cc = os.environ.get("CC") or "cc"
    path = shutil.which(cc)
    if path is None:
        pytest.fail(f"no C compiler {cc!r} on PATH: install one (e.g. 'apt-get install gcc')")
    return path


def build(outdir: str, output: str, sources: list[str], *, shared: bool,
          extra: tuple[str, ...] = ()) -> str:
    """Compile ``sources`` (names under tests/csrc) into ``outdir/output``; return its path."""
    out = os.path.join(outdir, output)
    cmd = [compiler(), *(["-shared", "-fPIC"] if shared else []), *CFLAGS, *extra, "-o", out]
    cmd += [os.path.join(CSRC, s) for s in sources]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return out


@pytest.fixture(scope="session")
def fakesysctl_lib(tmp_path_factory) -> str:
    """Path of the freshly built ``libfakesysctl.so``."""
    outdir = str(tmp_path_factory.mktemp("cbuild"))
    return build(outdir, "libfakesysctl.so", ["fakesysctl.c"], shared=True)


@pytest.fixture(scope="session")
def fakesysctl_probe(tmp_path_factory) -> str:
    """Path of a program that calls the C stand-in directly (tests/csrc/fakesysctl_probe.c)."""
    outdir = str(tmp_path_factory.mktemp("cbuild"))
    return build(outdir, "fakesysctl-probe", ["fakesysctl_probe.c", "fakesysctl.c"],
                 shared=False)
