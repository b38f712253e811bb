"""Where the files we ship beside the package are: ``devd/vmgenc.conf``, ``rc.d/vmgenc``.

In a source checkout (``make demo``, the tests) they sit next to the package;
after ``make install`` they are under ``$PREFIX/etc``.  ``sim init`` installs
them into a sandbox root the way ``make install`` does.
"""

from __future__ import annotations

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_TREE = os.path.dirname(_HERE)
INSTALLED = {"devd/vmgenc.conf": "etc/devd/vmgenc.conf", "rc.d/vmgenc": "etc/rc.d/vmgenc"}


def find(rel: str) -> str:
    """The path of a shipped file (``devd/vmgenc.conf`` or ``rc.d/vmgenc``)."""
    candidates = [os.path.join(SOURCE_TREE, rel)]
    if rel in INSTALLED:
        candidates += [os.path.join(p, INSTALLED[rel]) for p in (sys.prefix, "/usr/local")]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise FileNotFoundError(f"shipped file {rel} not found (looked in {', '.join(candidates)})")


def bindir() -> str:
    """Where this installation's console scripts (``vmgenctl``, ``vmgenc-devd``) are."""
    d = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(d, "vmgenc-devd")):
        return d
    import shutil

    found = shutil.which("vmgenc-devd")
    return os.path.dirname(found) if found else d


def install_text(rel: str, prefix_bindir: str | None = None) -> str:
    """The shipped file's text as installed: ``/usr/local/bin`` → this installation's bindir."""
    with open(find(rel), encoding="utf-8") as f:
        text = f.read()
    return text.replace("/usr/local/bin/", (prefix_bindir or bindir()).rstrip("/") + "/")
