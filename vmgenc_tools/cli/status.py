"""``vmgenctl status | history | check | retry | wait`` (design §3).

``check`` here only documents the options: it hands the arguments to
:func:`vmgenc_tools.fastcheck.run_check`, the same code the console script
reaches without loading click, so both behave identically.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from datetime import datetime, timezone
from typing import Callable, TypeVar

import click

from .. import exitcodes
from ..config import CLASSES
from .common import Ctx, Fail

T = TypeVar("T")


def _guard(fn: Callable[[], T]) -> T:
    """Expected errors → one line and the contract's exit code (also under CliRunner)."""
    from ..fastcheck import exit_code_for, message_for

    try:
        return fn()
    except Fail:
        raise
    except Exception as e:  # noqa: BLE001 - bugs are re-raised below
        code = exit_code_for(e)
        if code is None:
            raise
        raise Fail(message_for(e), code) from None


def local_time(iso: str | None) -> str:
    """A stored UTC time as local time for people (``--json`` keeps UTC)."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def parse_since(text: str) -> str:
    """``--since``: ISO-8601; without an offset it is local time.  Returns UTC ISO."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        raise Fail(f"--since {text!r}: not an ISO-8601 time (e.g. 2024-05-01, "
                   "2024-05-01T12:00, 2024-05-01T12:00:00Z)", exitcodes.USAGE) from None
    if dt.tzinfo is None:
        dt = dt.astimezone()
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _hooks_summary(hooks: list[dict]) -> str:
    if not hooks:
        return "-"
    counts: dict[str, int] = {}
    for h in hooks:
        counts[str(h["status"])] = counts.get(str(h["status"]), 0) + 1
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def _hooks_detail(hooks: list[dict]) -> str:
    out = []
    for h in hooks:
        s = f"{h['name']} {h['status']}"
        if h.get("exit_code") not in (None, 0):
            s += f" (exit {h['exit_code']})"
        out.append(s)
    return ", ".join(out) or "none"


# -- status ----------------------------------------------------------------------------------


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON document (times in UTC).")
@click.pass_context
def status_cmd(ctx: click.Context, as_json: bool) -> None:
    """Current generation, last change, hook outcomes, pending work.

    Exit 0 settled, 1 hooks pending or failed (or not yet recorded), 3 no vmgenc device.
    """
    from ..status import status

    obj: Ctx = ctx.obj
    st = _guard(lambda: status(obj.root))
    code = int(st.pop("exit_code"))  # type: ignore[call-overload]
    if as_json:
        click.echo(json.dumps(st, indent=2))
        ctx.exit(code)
    units = st["guids"]
    assert isinstance(units, list)
    for i, g in enumerate(units):
        click.echo(f"vmgenc{i}: {g}" + ("  (no ID: all zero)" if st["no_id"] and i == 0 else ""))
    last = st["last_change"]
    if isinstance(last, dict):
        click.echo(f"last change: #{last['id']} {last['class']} via {last['source']} at "
                   f"{local_time(str(last['detected_at']))}: {last['status']}")
        click.echo(f"  {last['old_guid'] or '(first seen)'} -> {last['new_guid']}")
        if last.get("warning"):
            click.echo(f"  warning: {last['warning']}")
        click.echo(f"  hooks: {_hooks_detail(list(last['hooks']))}")
    else:
        click.echo("last change: none recorded")
    state = st["state"]
    pending = st["pending"]
    msg = {
        "settled": "settled",
        "failed": "hooks failed: fix the cause, then 'vmgenctl retry'",
        "pending": "hooks pending"
        + (f" (running, pid {st['running_pid']})" if st["running_pid"] else
           " (interrupted: the next check resumes them)"),
        "unrecorded": "the current generation is not recorded yet: run 'vmgenctl check'",
    }[str(state)]
    click.echo(f"state: {msg}")
    if isinstance(pending, list) and pending:
        click.echo("pending: " + ", ".join(f"#{p['id']} ({p['class']})" for p in pending))
    ctx.exit(code)


# -- history -----------------------------------------------------------------------------------


def _table(records: list[dict], width: int) -> list[str]:
    """Rows sized to ``width``: full GUIDs when they fit, then the new one only, then short."""
    fixed = [("ID", lambda r: str(r["id"])),
             ("DETECTED", lambda r: local_time(r["detected_at"])),
             ("SOURCE", lambda r: str(r["source"])),
             ("CLASS", lambda r: str(r["class"])),
             ("STATUS", lambda r: str(r["status"])),
             ("HOOKS", lambda r: _hooks_summary(r["hooks"]))]
    cells = [[f(r) for _, f in fixed] for r in records]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(fixed)]
    used = sum(widths) + 2 * len(widths)

    def guid(g: str | None, n: int | None) -> str:
        g = g or "-"
        return g if n is None or len(g) <= n else g[: n - 1] + "~"

    if used + 36 * 2 + 4 <= width:
        head, fmt = "OLD -> NEW", lambda r: f"{guid(r['old_guid'], None)} -> {r['new_guid']}"
    elif used + 36 <= width:
        head, fmt = "NEW GUID", lambda r: str(r["new_guid"])
    else:
        n = max(8, width - used)
        head, fmt = "NEW GUID", lambda r: guid(r["new_guid"], n)
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(fixed, widths)) + "  " + head]
    for r, c in zip(records, cells):
        lines.append("  ".join(x.ljust(w) for x, w in zip(c, widths)) + "  " + fmt(r))
    return [ln.rstrip() for ln in lines]


CSV_FIELDS = ("id", "detected_at", "source", "class", "status", "old_guid", "new_guid",
              "old_guid_hex", "new_guid_hex", "hooks", "reason", "warning")


@click.command("history")
@click.option("-n", "--last", "last", type=click.IntRange(min=0), default=None,
              help="Only the last N changes.")
@click.option("--since", default=None, metavar="ISO",
              help="Only changes detected at or after this time (local unless an offset is given).")
@click.option("--json", "as_json", is_flag=True, help="A JSON list (times in UTC).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row (times in UTC).")
@click.pass_obj
def history_cmd(obj: Ctx, last: int | None, since: str | None, as_json: bool,
                as_csv: bool) -> None:
    """Recorded changes, oldest first."""
    from ..fastcheck import load_config
    from ..history import History

    if as_json and as_csv:
        raise Fail("--json and --csv exclude each other: pick one", exitcodes.USAGE)
    since_utc = parse_since(since) if since else None

    def read() -> list[dict]:
        config = load_config(obj.root)
        h = History.open_readonly(config.db_path)
        if h is None:
            return []
        try:
            return [c.as_dict() for c in h.listing(last=last, since=since_utc)]
        finally:
            h.close()

    records = _guard(read)
    if as_json:
        click.echo(json.dumps(records, indent=2))
    elif as_csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(CSV_FIELDS)
        for r in records:
            row = dict(r, hooks=";".join(f"{h['name']}:{h['status']}" for h in r["hooks"]))
            w.writerow(["" if row.get(k) is None else row[k] for k in CSV_FIELDS])
    elif not records:
        click.echo("no changes recorded")
    else:
        for line in _table(records, shutil.get_terminal_size((120, 24)).columns):
            click.echo(line)


# -- check, retry, wait --------------------------------------------------------------------------


@click.command("check")
@click.option("--source", type=click.Choice(["boot", "devd", "manual"]), default="manual",
              show_default=True, help="What woke us (boot changes are judged by SMBIOS/MACs).")
@click.option("--expect", default=None, metavar="GUID",
              help="Exit 4 unless the current generation is GUID (text or raw hex).")
@click.option("--dry-run", is_flag=True, help="Say what would happen; change nothing.")
@click.option("--class", "cls", type=click.Choice(CLASSES), default=None,
              help="Force the class of a change found now.")
@click.pass_context
def check_cmd(ctx: click.Context, source: str, expect: str | None, dry_run: bool,
              cls: str | None) -> None:
    """Reconcile now: record a new generation and run its hooks.

    Exit 0, 1 hooks failed, 4 expectation failed (see also 3, 6, 7, 8).
    """
    from ..fastcheck import run_check

    args = ["--source", source]
    if expect is not None:
        args += ["--expect", expect]
    if dry_run:
        args.append("--dry-run")
    if cls is not None:
        args += ["--class", cls]
    obj: Ctx = ctx.obj
    ctx.exit(run_check(obj.root, args))


@click.command("retry")
@click.pass_context
def retry_cmd(ctx: click.Context) -> None:
    """Re-run the hooks that failed or never finished for the last change.  Exit 0 or 1."""
    from ..handler import retry

    obj: Ctx = ctx.obj
    ctx.exit(_guard(lambda: retry(obj.root)))


@click.command("wait")
@click.option("--since", "since", default=None, metavar="GUID",
              help="Wait for a generation other than GUID (default: the current one).")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Give up after S seconds (exit 5).")
@click.pass_context
def wait_cmd(ctx: click.Context, since: str | None, timeout: float | None) -> None:
    """Block until the generation changes and its hooks have settled.

    Exit 0 settled, 1 settled with failed hooks, 5 timeout.
    """
    from ..generation import Generation
    from ..status import wait

    obj: Ctx = ctx.obj
    base = _guard(lambda: Generation.parse(since)) if since else None
    ctx.exit(_guard(lambda: wait(obj.root, base, timeout)))


COMMANDS = [status_cmd, history_cmd, check_cmd, retry_cmd, wait_cmd]
