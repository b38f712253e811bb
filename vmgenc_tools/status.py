"""What ``status`` and ``wait`` report: is the current generation recorded and settled?

Both only read: the live GUIDs through the sysctl backend and the history
database opened read-only.  Neither takes the lock (a reader must never make
the devd entry think a reconcile is running).

States: ``settled`` (the current generation is recorded and its hooks are
done), ``failed`` (recorded, some hooks did not succeed: ``vmgenctl retry``),
``pending`` (hooks not finished: running, or interrupted), ``unrecorded`` (the
live GUIDs are not in the history yet: no check has run since the change).
"""

from __future__ import annotations

import sys
import time

from . import exitcodes
from .config import Config
from .fastcheck import RETRY_HINT, load_config
from .generation import Generation
from .handler import Paths, covering, guid_line, holder_pid
from .history import History
from .platform import read_guids
from .sysctl import Backend, get_backend

EXIT_FOR_STATE = {"settled": exitcodes.OK, "failed": exitcodes.PENDING_OR_FAILED,
                  "pending": exitcodes.PENDING_OR_FAILED,
                  "unrecorded": exitcodes.PENDING_OR_FAILED}


def _state(hist: History | None, line: str) -> tuple[str, dict[str, object]]:
    latest = hist.last_change() if hist else None
    last_real = hist.last_change(real_only=True) if hist else None
    pending = hist.pending() if hist else []
    current = covering(latest, last_real, line)
    if pending:
        state = "pending"
    elif current is None:
        state = "unrecorded"
    elif current.status == "failed":
        state = "failed"
    else:
        state = "settled"
    return state, {
        "last_change": latest.as_dict() if latest else None,
        "current_change_id": current.id if current else None,
        "pending": [c.as_dict() for c in pending],
    }


def status(root: str, *, config: Config | None = None,
           backend: Backend | None = None) -> dict[str, object]:
    """The status document (``status --json``); ``exit_code`` is the CLI's exit code."""
    config = config or load_config(root)
    backend = backend if backend is not None else get_backend(root)
    guids = read_guids(backend)
    line = guid_line(guids)
    paths = Paths.of(config)
    hist = History.open_readonly(paths.db)
    try:
        state, details = _state(hist, line)
    finally:
        if hist is not None:
            hist.close()
    doc: dict[str, object] = {
        "state": state,
        "exit_code": EXIT_FOR_STATE[state],
        "guid": guids[0].text,
        "guid_hex": guids[0].hex,
        "guids": [g.text for g in guids],
        "no_id": guids[0].is_zero,
        "running_pid": holder_pid(paths.lock),
    }
    doc.update(details)
    return doc


def settled_for(config: Config, line: str) -> str:
    """The state of ``line`` in the history (see the module docstring)."""
    hist = History.open_readonly(config.db_path)
    try:
        return _state(hist, line)[0]
    finally:
        if hist is not None:
            hist.close()


def wait(root: str, since: Generation | None = None, timeout: float | None = None, *,
         interval: float = 0.1, config: Config | None = None,
         backend: Backend | None = None) -> int:
    """Block until unit 0's generation differs from ``since`` (default: the current one)
    and its hooks have settled: 0 settled (done, or failed: a line on stderr says so,
    ``status`` exits 1) · 5 timeout (design §3)."""
    config = config or load_config(root)
    backend = backend if backend is not None else get_backend(root)
    base = since if since is not None else read_guids(backend)[0]
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        guids = read_guids(backend)
        if guids[0] != base:
            state = settled_for(config, guid_line(guids))
            if state == "settled":
                return exitcodes.OK
            if state == "failed":
                print(f"vmgenctl: generation {guids[0]} settled, but hooks failed: "
                      f"{RETRY_HINT}", file=sys.stderr)
                return exitcodes.OK
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            what = (f"still generation {base}" if guids[0] == base
                    else f"the hooks of generation {guids[0]} have not settled")
            print(f"vmgenctl: timed out after {timeout:g} s: {what} (a longer --timeout, or "
                  "'vmgenctl status')", file=sys.stderr)
            return exitcodes.TIMEOUT
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))
