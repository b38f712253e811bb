"""``vmgenctl hooks list [--json]`` and ``vmgenctl hooks validate`` (design §3).

Both exit 0 when every configured hook could run and 1 when any problem was
found (a refused site hook, an untrusted hooks directory, a missing tool).
"""

from __future__ import annotations

import json

import click

from .. import exitcodes
from ..config import CLASSES, Config, load
from .common import Ctx, finish


def _describe(config: Config) -> dict[str, object]:
    """What ``hooks list --json`` prints."""
    from ..hooks.runner import hooks_dir, plan, validate

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
        "problems": [str(p) for p in validate(config)],
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
    from ..hooks.runner import site_names, validate

    config = load(obj.root)
    problems = validate(config)
    for p in problems:
        click.echo(str(p))
    if problems:
        finish(exitcodes.PENDING_OR_FAILED)
    click.echo(f"ok: {len(site_names(config))} site hook(s) checked, no problems")
    finish(exitcodes.OK)


COMMANDS = [hooks]
