"""``vmgenctl watch``: live devctl records from devd's seqpacket socket (design §3).

Every record devd reads is shown, matched by a devd rule or not; vmgenc
generation changes are marked (and highlighted on a terminal).  Ctrl-C ends it
with exit status 0; ``--count N`` ends it after N records.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from .. import exitcodes
from ..watch import DevctlEvent, DevdNotRunning, DevdWatcher, socket_path
from .common import Ctx, Fail, finish

VMGENC_MARK = "*"


def _line(event: DevctlEvent) -> str:
    """Human form: local time, a mark for vmgenc records, the record as sent."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event.received_at))
    mark = VMGENC_MARK if event.vmgenc else " "
    text = f"{stamp} {mark} {event.raw}"
    if event.truncated:
        text += "  [truncated]"
    if event.vmgenc:
        # click.echo drops the colour when stdout is not a terminal.
        return click.style(text + "  <- VM generation changed", fg="yellow", bold=True)
    return text


def _quiet_broken_pipe() -> None:
    """The reader went away (``| head``): stop quietly, as a filter should."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


@click.command("watch")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line, with a \"vmgenc\": true/false field.")
@click.option("--count", type=click.IntRange(min=1), metavar="N",
              help="Stop after N records.")
@click.pass_obj
def watch_command(ctx: Ctx | None, as_json: bool, count: int | None) -> None:
    """Show devctl records live, as devd sees them; vmgenc changes are marked."""
    root = ctx.root if ctx else "/"
    path = socket_path(root)

    def notify(message: str) -> None:
        click.echo(f"vmgenctl watch: {message}", err=True)

    watcher = DevdWatcher(path, notify=notify)
    try:
        watcher.connect()
    except DevdNotRunning:
        raise Fail(f"devd is not running (no listener at {path}): service devd start",
                   exitcodes.ENVIRONMENT) from None
    except PermissionError:
        raise Fail(f"permission denied connecting to {path}: devd creates it 0666; "
                   "check the socket's mode and its directory", exitcodes.ENVIRONMENT) from None
    seen = 0
    try:
        for event in watcher:
            if as_json:
                click.echo(json.dumps(event.to_json(), sort_keys=True))
            else:
                click.echo(_line(event))
            sys.stdout.flush()
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _quiet_broken_pipe()
    finally:
        watcher.close()
    finish(exitcodes.OK)


COMMANDS = [watch_command]
