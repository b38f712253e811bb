"""The detached hook worker: ``python -m vmgenc_tools.worker --root R [--lock-fd N]``.

Started by the devd entry — forked from it (:func:`.handler.spawn_worker`, which
calls :func:`main` in the child) — in a new session (``setsid``) with the
descriptor that holds the root's lock (``--lock-fd``): the lock passes from the
devd entry to the worker without a gap, and the worker keeps it while it runs the
pending hooks, records any change that arrives meanwhile, and settles.
Without ``--lock-fd`` it takes the lock itself.  Its output goes to syslog.

``--planner MODULE:FUNCTION`` replaces the hook runner's plan (tests).
"""

from __future__ import annotations

import importlib
import os
import sys

from . import exitcodes, log


def _parse(argv: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    it = iter(argv)
    for a in it:
        if a in ("--root", "--lock-fd", "--source", "--planner"):
            try:
                opts[a[2:]] = next(it)
            except StopIteration:
                raise SystemExit(f"vmgenc worker: {a} needs a value") from None
        else:
            raise SystemExit(f"vmgenc worker: unknown argument {a!r}")
    return opts


def _planner(spec: str | None):  # -> handler.Planner | None
    if not spec:
        return None
    mod, _, attr = spec.partition(":")
    return getattr(importlib.import_module(mod), attr)


def main(argv: list[str] | None = None) -> int:
    opts = _parse(sys.argv[1:] if argv is None else list(argv))
    root = os.path.abspath(opts.get("root") or os.environ.get("VMGENC_ROOT") or "/")
    log.set_stderr(False, prog="vmgenc-worker")
    try:
        from .handler import run_worker

        fd = int(opts["lock-fd"]) if "lock-fd" in opts else None
        return run_worker(root, lock_fd=fd, source=opts.get("source", "devd"),
                          planner=_planner(opts.get("planner")))
    except Exception as e:  # noqa: BLE001 - detached: every error goes to syslog
        from .fastcheck import exit_code_for

        code = exit_code_for(e)
        if code is None:
            log.exception("worker: unexpected error", e)
            return exitcodes.ENVIRONMENT if isinstance(e, OSError) else 70
        log.error(f"worker: {e}")
        return code


if __name__ == "__main__":
    sys.exit(main())
