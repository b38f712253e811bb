"""``vmgenctl sim devd``: offline devd — which block a devctl record runs, and the
exact command string devd hands to ``sh -c`` (design §3).

Uses the devd model (``vmgenc_tools.reference.devd``), imported inside the command.
"""

from __future__ import annotations

import json
import os
import sys

import click

from .. import exitcodes
from .common import Ctx, Fail, finish


def _records(lines: tuple[str, ...]) -> list[str | bytes]:
    """The records to look at: the arguments, ``-`` meaning one per stdin line."""
    out: list[str | bytes] = []
    for line in lines:
        if line == "-":
            data = sys.stdin.buffer.read()
            out += [rec for rec in data.split(b"\n") if rec.strip()]
        else:
            out.append(line)
    return out


def _show(answer) -> None:  # noqa: ANN001 - a reference.devd.Dispatch
    click.echo(f"event: {answer.event}")
    if answer.ignored:
        click.echo(f"ignored: {answer.ignored}")
    elif answer.match is None:
        click.echo("block: none matches")
    else:
        m = answer.match
        click.echo(f"block: {m.file} line {m.line} ({m.kind} {m.priority})")
        if not answer.commands:
            click.echo("command: none (the block has no action: the event stops here)")
        for i, command in enumerate(answer.commands):
            click.echo(f"command: {command}")
            if answer.statuses is not None:
                click.echo(f"exit: {answer.statuses[i]}")


@click.command("devd")
@click.option("-f", "files", multiple=True, metavar="CONF",
              help="Parse CONF instead of the root's /etc/devd.conf (like devd -f; "
                   "repeatable); its directory options still apply, under --root.")
@click.option("--run", is_flag=True,
              help="Run each command through sh -c, as devd does, with VMGENC_ROOT set.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON list of {event, match, commands}.")
@click.option("--timestamp", metavar="SEC.USEC",
              help="Value of $timestamp (default: the current time, as devd).")
@click.argument("lines", nargs=-1, metavar="[LINE… | -]")
@click.pass_obj
def devd_command(ctx: Ctx | None, files: tuple[str, ...], run: bool, as_json: bool,
                 timestamp: str | None, lines: tuple[str, ...]) -> None:
    """Offline devd: for each devctl record LINE ("-": one per stdin line), the
    block that would run (file, line, priority) and the command devd hands to sh.

    Without LINE, only parse the configuration.  Detach records (starting with
    "-") go after "--".  Exit 1 when the configuration does not parse, with
    devd's own message; exit 1 too, with a "model limit" message, when it holds
    something this model cannot reproduce (real devd may accept it).
    """
    from ..reference.devd import DevdConfigError, DevdModelLimit, DevdShellError, load_devd

    root = ctx.root if ctx is not None else os.path.abspath(os.environ.get("VMGENC_ROOT", "/"))
    try:
        devd = load_devd(root, list(files) if files else None)
    except DevdModelLimit as e:
        # Not a devd error: the configuration may well be valid for the real devd.
        for line in e.lines:
            click.echo(f"vmgenctl: model limit: {line} (a limit of this devd model, "
                       "not a devd error: real devd may accept this configuration)",
                       err=True)
        finish(1)
    except DevdConfigError as e:
        for line in e.lines:
            click.echo(line, err=True)
        finish(1)
    for warning in devd.warnings:
        click.echo(f"warning: {warning}", err=True)
    records = _records(lines)
    if not records:
        total = sum(len(b) for b in devd.blocks.values())
        click.echo(f"parsed {len(devd.files)} file(s), {total} block(s): "
                   + ", ".join(devd.files))
        finish(exitcodes.OK)
    out = 2 if as_json and run else None  # keep stdout for the JSON document
    answers = []
    for record in records:
        try:
            answer = devd.dispatch(record, run=run, timestamp=timestamp, stdout=out)
        except DevdShellError as e:
            raise Fail(str(e), exitcodes.ENVIRONMENT) from None
        answers.append(answer)
        if not as_json:
            if len(answers) > 1:
                click.echo("")
            _show(answer)
    if as_json:
        click.echo(json.dumps([a.to_json() for a in answers], indent=2))
    finish(exitcodes.OK)


SIM_COMMANDS = [devd_command]
