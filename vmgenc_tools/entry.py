"""Console entry points, kept light: ``check`` and the devd entry never import click or psutil.

``vmgenctl check`` is what scripts call as a fence and what devd/boot paths
run, so it is dispatched here, before the click app (``cli/``) is loaded.
"""

from __future__ import annotations

import os
import sys

BACKENDS = ("libc", "sim")


def split_root(argv: list[str]) -> tuple[str | None, list[str]]:
    """Take the global options off the front of ``argv``: ``(--root DIR, the rest)``.

    ``--sysctl-backend NAME`` is taken too and put in ``VMGENC_SYSCTL_BACKEND``
    (so the detached worker and devd actions of a simulated VM inherit it);
    a name that is not a backend is left for the parser to refuse.
    """
    root = None
    rest = list(argv)
    while rest:
        name, eq, value = rest[0].partition("=")
        if name not in ("--root", "--sysctl-backend"):
            break
        if not eq:
            if len(rest) < 2:
                break
            value, rest = rest[1], rest[2:]
        else:
            rest = rest[1:]
        if name == "--root":
            root = value
        elif value in BACKENDS:
            os.environ["VMGENC_SYSCTL_BACKEND"] = value
        else:
            return root, [f"--sysctl-backend={value}", *rest]
    return root, rest


def interrupted(prog: str) -> int:
    """^C: one line, and the exit status sh gives a command killed by SIGINT."""
    print(f"{prog}: interrupted", file=sys.stderr)
    from . import exitcodes

    return exitcodes.INTERRUPTED


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    root, rest = split_root(argv)
    try:
        if rest[:1] == ["check"] and not any(a in ("--help", "-h") for a in rest):
            from .fastcheck import run_check

            return run_check(root or os.environ.get("VMGENC_ROOT") or "/", rest[1:])
        from .cli import run

        return run(argv)
    except KeyboardInterrupt:
        return interrupted("vmgenctl")


def devd_main(argv: list[str] | None = None) -> int:
    """What devd's action runs: ``vmgenc-devd $type $timestamp`` (see devd/vmgenc.conf)."""
    from .fastcheck import run_devd

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return run_devd(os.environ.get("VMGENC_ROOT") or "/", argv)
    except KeyboardInterrupt:
        return interrupted("vmgenc-devd")
