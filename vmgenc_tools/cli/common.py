"""Shared CLI plumbing: the context object and one place that turns expected errors into
one-line messages with distinct exit codes (never a traceback)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from .. import exitcodes


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


def expected_errors() -> dict[type[BaseException], int]:
    """Exception type → exit code for errors a user can cause and fix."""
    from ..config import ConfigError
    from ..generation import GenerationError
    from ..simstate import SimStateError
    from ..sysctl import BackendError
    from ..sysctl.errors import NoSuchOid, SysctlError

    table: dict[type[BaseException], int] = {
        ConfigError: exitcodes.CONFIG,
        GenerationError: exitcodes.USAGE,
        SimStateError: exitcodes.STATE,
        BackendError: exitcodes.ENVIRONMENT,
        NoSuchOid: exitcodes.NO_DEVICE,
        SysctlError: exitcodes.ENVIRONMENT,
    }
    try:
        from ..history import HistoryError

        table[HistoryError] = exitcodes.STATE
    except ImportError:
        pass
    return table


def run_app(app: click.Group, argv: list[str]) -> int:
    try:
        rv = app.main(args=argv, prog_name="vmgenctl", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("vmgenctl: aborted", err=True)
        return 130
    except Exception as e:  # noqa: BLE001 - mapped below, re-raised if unexpected
        for cls, code in expected_errors().items():
            if isinstance(e, cls):
                click.echo(f"vmgenctl: {e}", err=True)
                return code
        raise
    sys.stdout.flush()
    return rv if isinstance(rv, int) else 0
