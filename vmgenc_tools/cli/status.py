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
from .common import Ctx, Fail, guid_option

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


def local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """A stored UTC time as local time for people (``--json`` keeps UTC)."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime(fmt)


def parse_since(text: str) -> str:
    """``--since``: ISO-8601; without an offset it is local time.  Returns UTC ISO."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
        if dt.tzinfo is None:
            dt = dt.astimezone()
        return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")
    except (ValueError, OverflowError):  # empty, not ISO, or out of range once in UTC
        raise Fail(f"--since: not an ISO-8601 time: {text!r} (e.g. 2024-05-01, "
                   "2024-05-01T12:00 or 2024-05-01T12:00:00Z)", exitcodes.USAGE) from None


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


def _hooks_short(hooks: list[dict]) -> str:
    """``HOOKS`` abbreviated: how many of the hooks are ``ok`` (``1/2 ok``)."""
    if not hooks:
        return "-"
    return f"{sum(1 for h in hooks if h['status'] == 'ok')}/{len(hooks)} ok"


_COLUMNS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "id": ("ID", lambda r: str(r["id"])),
    "detected": ("DETECTED", lambda r: local_time(r["detected_at"])),
    "detected_min": ("DETECTED", lambda r: local_time(r["detected_at"], "%Y-%m-%d %H:%M")),
    "date": ("DATE", lambda r: local_time(r["detected_at"], "%Y-%m-%d")),
    "source": ("SOURCE", lambda r: str(r["source"])),
    "class": ("CLASS", lambda r: str(r["class"])),
    "status": ("STATUS", lambda r: str(r["status"])),
    "hooks": ("HOOKS", lambda r: _hooks_summary(r["hooks"])),
    "hooks_short": ("HOOKS", lambda r: _hooks_short(r["hooks"])),
}

# Richest first; the first layout whose rows fit the terminal is used.  The GUID is never cut
# while a layout fits: the other columns are shortened or dropped, in this order.
_LAYOUTS: tuple[tuple[tuple[str, ...], bool], ...] = (
    (("id", "detected", "source", "class", "status", "hooks"), True),  # OLD -> NEW
    (("id", "detected", "source", "class", "status", "hooks"), False),  # NEW GUID only
    (("id", "detected_min", "source", "class", "status", "hooks"), False),
    (("id", "detected_min", "class", "status", "hooks"), False),
    (("id", "detected_min", "class", "status", "hooks_short"), False),
    (("id", "detected_min", "class", "status"), False),
    (("id", "date", "class", "status"), False),
    (("id", "class", "status"), False),
)
GAP = "  "


def _table(records: list[dict], width: int) -> list[str]:
    """Rows at most ``width`` wide, with whole GUIDs (the hypervisor's form, to be copied).

    Both GUIDs when they fit; then the new one only, with the other columns shortened or
    dropped (see :data:`_LAYOUTS`); only when even ``ID CLASS STATUS NEW GUID`` does not fit
    is the GUID cut (``~`` marks it), and never below 8 characters.
    """
    def pair(r: dict) -> str:
        return f"{r['old_guid'] or '-'} -> {r['new_guid']}"

    def new(r: dict) -> str:
        return str(r["new_guid"])

    for names, both in _LAYOUTS:
        cols = [_COLUMNS[n] for n in names]
        cells = [[f(r) for _, f in cols] for r in records]
        widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _) in enumerate(cols)]
        head, last = ("OLD -> NEW", pair) if both else ("NEW GUID", new)
        guids = [last(r) for r in records]
        used = sum(widths) + len(GAP) * len(widths)
        if used + max([len(head), *map(len, guids)]) <= width:
            break
    else:  # the last resort: cut the GUID (rows stay wider than ``width`` below 8 of it)
        n = max(8, width - used)
        guids = [g if len(g) <= n else g[: n - 1] + "~" for g in guids]
    lines = [GAP.join(h.ljust(w) for (h, _), w in zip(cols, widths)) + GAP + head]
    for c, g in zip(cells, guids):
        lines.append(GAP.join(x.ljust(w) for x, w in zip(c, widths)) + GAP + g)
    return [ln.rstrip() for ln in lines]


CSV_FIELDS = ("id", "detected_at", "source", "class", "status", "old_guid", "new_guid",
              "old_guid_hex", "new_guid_hex", "hooks", "reason", "warning")


@click.command("history")
@click.option("-n", "--last", "last", type=click.IntRange(min=1), default=None, metavar="N",
              help="Only the last N changes (N >= 1).")
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
    since_utc = parse_since(since) if since is not None else None  # "" is an error too

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

    Exit 0 once settled, whatever the hooks' outcome ('vmgenctl status' exits 1 if one
    failed), 5 timeout.
    """
    from ..status import wait

    obj: Ctx = ctx.obj
    base = guid_option("--since", since) if since is not None else None  # "" is an error too
    ctx.exit(_guard(lambda: wait(obj.root, base, timeout)))


COMMANDS = [status_cmd, history_cmd, check_cmd, retry_cmd, wait_cmd]
