"""Shared CLI plumbing: the context object, the app's group class, and one place that turns
expected errors into one-line messages with distinct exit codes (never a traceback).

The mapping (exception → exit code, message) is :mod:`vmgenc_tools.fastcheck`'s, so the
click commands and the click-free ``check`` path answer the same error the same way.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import exitcodes

if TYPE_CHECKING:
    from ..generation import Generation

COMPLETE_VAR = "_VMGENCTL_COMPLETE"


@dataclass
class Ctx:
    root: str


class Fail(click.ClickException):
    """An expected error: one line on stderr, a contract exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code

    def show(self, file=None) -> None:  # noqa: ANN001 - click's signature
        click.echo(f"vmgenctl: {self.format_message()}", err=True)


def guid_option(option: str, text: str) -> Generation:
    """The GUID given to ``option`` (text or raw hex); a usage error naming the option if not.

    The message is the parser's, prefixed: ``--since: not a GUID: 'x' (expected …)``.
    """
    from ..generation import Generation, GenerationError

    try:
        return Generation.parse(text)
    except GenerationError as e:
        raise Fail(f"{option}: {e}", exitcodes.USAGE) from None


def as_fail(exc: BaseException) -> Fail | None:
    """The :class:`Fail` for an expected error (config, device, state, I/O), None for a bug."""
    from ..fastcheck import exit_code_for, message_for

    code = exit_code_for(exc)
    return None if code is None else Fail(message_for(exc), code)


class App(click.Group):
    """The ``vmgenctl`` group: every error, of click or of a command, is one line with the
    contract's exit code.

    Done in :meth:`main` rather than around it so that click's own runner
    (standalone mode, as the tests use it) and the console script
    (:func:`run_app`) answer alike.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # not an OSError past here: click would exit 1 for it
            raise StdoutClosed() from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as e:  # noqa: BLE001 - re-raised below unless expected
            fail = as_fail(e)
            if fail is None:
                raise
            raise fail from None

    def main(self, args: Any = None, prog_name: str | None = None,  # type: ignore[override]
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        code = self._run(args, prog_name or "vmgenctl", complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: Any, prog_name: str, complete_var: str | None, **extra: Any) -> int:
        instruction = os.environ.get(complete_var or COMPLETE_VAR)
        if instruction:
            problem = completion_problem(instruction)
            if problem is not None:
                click.echo(f"vmgenctl: {problem}", err=True)
                return exitcodes.USAGE
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()
        except (BrokenPipeError, StdoutClosed):
            return stdout_closed()
        except click.exceptions.Exit as e:
            return e.exit_code
        except click.UsageError as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a bare group: its help is the answer
                e.show()
            else:
                click.echo(f"vmgenctl: {usage_line(e)}", err=True)
            return e.exit_code
        except click.ClickException as e:
            e.show()
            return e.exit_code
        except click.exceptions.Abort:
            click.echo("vmgenctl: interrupted", err=True)
            return exitcodes.INTERRUPTED
        return rv if isinstance(rv, int) else 0


class StdoutClosed(Exception):
    """Standard output's reader went away (carried past click, which exits 1 on EPIPE)."""


def stdout_closed() -> int:
    """The reader of our output went away (``| head``): stop quietly, as a C tool killed
    by SIGPIPE would, and keep the interpreter's last flush from complaining."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return exitcodes.STDOUT_CLOSED


def usage_line(e: click.UsageError) -> str:
    """click's usage error as one line, with where to read more."""
    message = " ".join(e.format_message().split()).rstrip(".")
    where = e.ctx.command_path if e.ctx is not None else "vmgenctl"
    return f"{message}: see '{where} --help'"


def finish(code: int) -> NoReturn:
    """End the current command with ``code`` (honoured by click in every mode)."""
    click.get_current_context().exit(code)


def completion_problem(instruction: str) -> str | None:
    """Why ``_VMGENCTL_COMPLETE=instruction`` cannot work, or None if click can serve it."""
    from click.shell_completion import get_completion_class

    shell, _, action = instruction.partition("_")
    fix = (f"use {COMPLETE_VAR}=bash_source (bash), zsh_source (zsh) or fish_source (fish); "
           "see vmgenctl(8)")
    if get_completion_class(shell) is None:
        if shell == "sh":
            return f"no completion for sh: sh(1) has no programmable completion; {fix}"
        return f"no completion for shell {shell!r}: {fix}"
    if action not in ("source", "complete"):
        return f"{COMPLETE_VAR}={instruction!r}: expected SHELL_source; {fix}"
    return None


def run_app(app: click.Group, argv: list[str]) -> int:
    """Run the click app as the console script does; returns the exit code."""
    try:
        rv = app.main(args=argv, prog_name="vmgenctl", standalone_mode=False)
    except Exception as e:  # noqa: BLE001 - a plain click.Group: mapped here
        fail = as_fail(e)
        if fail is None:
            raise
        fail.show()
        return fail.exit_code
    return rv if isinstance(rv, int) else 0
