"""The ``vmgenctl`` click app (design §3).  Imported only by the CLI, never on a fast path.

Each command group lives in its own module (``COMMANDS``; ``SIM_COMMANDS`` join the
``sim`` group) and is registered below.
"""

from __future__ import annotations

import os

import click

from .. import __version__, exitcodes
from ..entry import BACKENDS
from ..fastcheck import missing_root
from .common import App, Ctx, Fail, run_app


@click.group("vmgenctl", cls=App, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "root", envvar="VMGENC_ROOT", default="/", show_default=True,
              type=click.Path(file_okay=False), help="Prefix for every path (a sandbox).")
@click.option("--sysctl-backend", "backend", type=click.Choice(BACKENDS), default=None,
              help="Where sysctl/kenv values come from (default: sim for a simulated VM's "
                   "root, libc on FreeBSD); sets VMGENC_SYSCTL_BACKEND.")
@click.version_option(__version__, prog_name="vmgenctl")
@click.pass_context
def app(ctx: click.Context, root: str, backend: str | None) -> None:
    """React to VM Generation ID changes seen by FreeBSD's vmgenc(4).

    Shell completion: eval "$(_VMGENCTL_COMPLETE=bash_source vmgenctl)" (or zsh_source,
    fish_source); see vmgenctl(8).
    """
    root = os.path.abspath(root)
    if ctx.invoked_subcommand != "sim" and not os.path.isdir(root):
        # A missing root would quietly report on nothing (an empty history, no hooks).
        # The sim group says the same itself, but lets "sim init" create its root.
        raise Fail(missing_root(root), exitcodes.USAGE)
    os.environ["VMGENC_ROOT"] = root
    if backend:
        os.environ["VMGENC_SYSCTL_BACKEND"] = backend
    ctx.obj = Ctx(root=root)


def _register() -> None:
    import importlib

    sim_extra = []
    for mod in ("status", "hooks", "sim", "sim_devd", "watch"):
        m = importlib.import_module(f"{__name__}.{mod}")
        for cmd in getattr(m, "COMMANDS", ()):
            app.add_command(cmd)
        sim_extra += getattr(m, "SIM_COMMANDS", ())
    sim = app.commands.get("sim")
    if isinstance(sim, click.Group):
        for cmd in sim_extra:
            sim.add_command(cmd)


_register()


def run(argv: list[str]) -> int:
    return run_app(app, argv)
