"""``vmgenctl hooks list [--json]`` and ``vmgenctl hooks validate`` (design §3).

Both exit 0 when every configured hook could run and 1 when any problem was
found (a refused site hook, an untrusted hooks directory, a missing tool, a
hooks directory that does not exist while a class runs ``site``, a metrics
file whose directory cannot be written).
"""

from __future__ import annotations

import json
import os

import click

from .. import exitcodes
from ..config import CLASSES, SITE, Config, load
from ..hooks.trust import Problem
from .common import Ctx, finish


class KnobProblem(Problem):
    """A knob whose value means that something is silently never done: ``<knob> <reason>``."""

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


def _under(config: Config, path: str) -> str:
    """`` under the root (<root><path>)`` for a sandbox, nothing on a real system."""
    return "" if config.root in ("", "/") else f" under the root ({config.path(path)})"


def _hooks_dir_problems(config: Config) -> list[Problem]:
    """A hooks directory that does not exist while some class runs ``site``.

    The runner then finds no site hook and runs none, without a word: a typo in
    ``vmgenc_hooks_dir`` would disable every site hook for good.
    """
    from ..hooks.trust import NotFound, resolve_in_root

    if not any(SITE in config.hooks_for(cls) for cls in CLASSES):
        return []
    try:
        resolve_in_root(config.path(config.hooks_dir), config.root)
    except NotFound:
        return [KnobProblem("vmgenc_hooks_dir",
                            f"{config.hooks_dir} does not exist{_under(config, config.hooks_dir)}"
                            ": no site hook will run (create it, or fix vmgenc_hooks_dir)")]
    except OSError:
        pass  # check_dir (runner.validate) reports what else is wrong with it
    return []


def _metrics_problems(config: Config) -> list[Problem]:
    """A ``vmgenc_metrics_file`` that cannot be written (the handler only logs it, to syslog)."""
    if not config.metrics_file:
        return []
    knob, shown = "vmgenc_metrics_file", config.metrics_file
    path = config.path(shown)
    d = os.path.dirname(shown) or "/"
    real_d = os.path.dirname(path) or "/"
    fix = f": {shown} is never written (create the directory, or fix {knob})"
    if not os.path.exists(real_d):
        return [KnobProblem(knob, f"directory {d} does not exist{_under(config, d)}{fix}")]
    if not os.path.isdir(real_d):
        return [KnobProblem(knob, f"directory {d} is not a directory{_under(config, d)}"
                                  f": {shown} is never written (fix {knob})")]
    if os.geteuid() != 0 and config.root in ("", "/"):
        return []  # the handler runs as root (devd, rc.d): this uid's access says nothing
    if not os.access(real_d, os.W_OK | os.X_OK):
        return [KnobProblem(knob, f"directory {d} is not writable by uid {os.getuid()}"
                                  f"{_under(config, d)}: {shown} is never written "
                                  f"(fix the directory's owner or mode, or fix {knob})")]
    if os.path.isdir(path):
        return [KnobProblem(knob, f"{shown} is a directory{_under(config, shown)}: "
                                  f"it is never written (fix {knob})")]
    return []


def all_problems(config: Config) -> list[Problem]:
    """Everything ``hooks validate`` reports: the runner's checks, and the knobs whose value
    silently turns something off (a missing hooks directory, an unwritable metrics file)."""
    from ..hooks.runner import validate

    return _hooks_dir_problems(config) + validate(config) + _metrics_problems(config)


def _describe(config: Config) -> dict[str, object]:
    """What ``hooks list --json`` prints."""
    from ..hooks.runner import hooks_dir, plan

    classes: dict[str, list[dict[str, object]]] = {}
    for cls in CLASSES:
        rows = []
        for h in plan(config, cls):
            refused = bool(getattr(h, "refused", False))
            problems = [str(p) for p in getattr(h, "problems", [])]
            rows.append({
                "name": h.name,
                "kind": getattr(h, "kind", "built-in"),
                "status": "refused" if refused else "enabled",
                "path": getattr(h, "path", None),
                "problems": problems,
            })
        classes[cls] = rows
    return {
        "hooks_dir": hooks_dir(config),
        "owner_uid": config.hooks_owner_uid,
        "timeout_s": config.hook_timeout,
        "stop_on_failure": config.hook_stop_on_failure,
        "classes": classes,
        "problems": [str(p) for p in all_problems(config)],
    }


@click.group("hooks")
def hooks() -> None:
    """Built-in and site hooks: run order per class, and why a hook would be refused."""


@hooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON document.")
@click.pass_obj
def list_cmd(obj: Ctx, as_json: bool) -> None:
    """Hooks per class, in run order, enabled or refused (exit 1 if any problem)."""
    config = load(obj.root)
    info = _describe(config)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"hooks dir: {info['hooks_dir']} (trusted owner uid {config.hooks_owner_uid}, "
                   f"timeout {config.hook_timeout} s, stop on failure: "
                   f"{'yes' if config.hook_stop_on_failure else 'no'})")
        classes = info["classes"]
        assert isinstance(classes, dict)
        explained: set[str] = set()
        for cls in CLASSES:
            rows = classes[cls]
            if not rows:
                click.echo(f"{cls}: (no hooks)")
                continue
            click.echo(f"{cls}:")
            for n, row in enumerate(rows, 1):
                click.echo(f"  {n:2d}. {row['name']:<24} {row['kind']:<9} {row['status']}")
                if row["name"] not in explained:  # why: once, where it first appears
                    explained.add(str(row["name"]))
                    for p in row["problems"]:
                        click.echo(f"        {p}")
        problems = info["problems"]
        assert isinstance(problems, list)
        if problems:
            click.echo(f"{len(problems)} problem(s): see 'vmgenctl hooks validate'")
    finish(exitcodes.PENDING_OR_FAILED if info["problems"] else exitcodes.OK)


@hooks.command("validate")
@click.pass_obj
def validate_cmd(obj: Ctx) -> None:
    """Report every reason a hook would be refused, one per line (exit 1 if any)."""
    from ..hooks.runner import site_names

    config = load(obj.root)
    found = all_problems(config)
    for p in found:
        click.echo(str(p))
    if found:
        finish(exitcodes.PENDING_OR_FAILED)
    click.echo(f"ok: {len(site_names(config))} site hook(s) checked, no problems")
    finish(exitcodes.OK)


COMMANDS = [hooks]
