"""A failed or refused hook and the hooks after it, through the real reconcile (design §4.6).

Unlike test_hooks_runner.py, which runs hooks one by one, these tests drive
``handler.check`` with the default planner (the hook runner) on a simulated VM:
real site hooks in a trusted hooks directory, the real history, and
``vmgenc_hook_stop_on_failure`` applied by the handler.
"""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner
from conftest import set_guid
from hooks_sandbox import add_hook, make_trusted, write_rc_conf

from vmgenc_tools import config, exitcodes, handler
from vmgenc_tools.cli import app
from vmgenc_tools.history import History

G2 = "11111111-2222-3333-4444-555555555555"
NEXT = 'touch "$VMGENC_ROOT/next-ran"'
STOP_MSG = "not run: an earlier hook failed and vmgenc_hook_stop_on_failure is on"


@pytest.fixture
def root(kernel_root):
    """A trusted hooks directory; clones run the site hooks only; first-seen runs none."""
    make_trusted(kernel_root, hooks_clone="site", hooks_first_seen="")
    return kernel_root


def first_hook(root: str, kind: str) -> None:
    """``10-first``: exits 3 (``failed``) or is group-writable (``refused``, never run)."""
    if kind == "failed":
        add_hook(root, "10-first", 'touch "$VMGENC_ROOT/first-ran"; echo "broken"; exit 3')
    else:
        add_hook(root, "10-first", 'touch "$VMGENC_ROOT/first-ran"', mode=0o775)


def clone(root: str) -> int:
    """First-seen, then a run-time change (a clone), both through the real handler."""
    assert handler.check(root) == exitcodes.OK  # first-seen: no hooks
    assert not os.path.exists(os.path.join(root, "first-ran"))
    set_guid(root, G2)
    return handler.check(root)


def last_change(root: str):  # noqa: ANN201 - history.Change
    h = History.open_readonly(handler.Paths.of(config.load(root)).db)
    assert h is not None
    try:
        return h.listing()[-1]
    finally:
        h.close()


def history_json(root: str) -> dict:
    r = CliRunner().invoke(app, ["--root", root, "history", "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)[-1]


def ran(root: str, name: str) -> bool:
    return os.path.exists(os.path.join(root, name))


@pytest.mark.parametrize("kind,exit_code", [("failed", 3), ("refused", None)])
def test_a_failed_or_refused_hook_does_not_stop_the_next(root, capsys, kind, exit_code):
    first_hook(root, kind)
    add_hook(root, "20-next", NEXT)
    assert config.load(root).hook_stop_on_failure is False  # the default
    capsys.readouterr()
    assert clone(root) == exitcodes.PENDING_OR_FAILED
    assert ran(root, "next-ran")
    assert ran(root, "first-ran") is (kind == "failed")  # a refused hook is never executed
    ch = last_change(root)
    assert (ch.cls, ch.status, ch.new_text) == ("clone", "failed", G2)
    runs = ch.latest_hooks()
    assert [(r.name, r.status, r.exit_code) for r in runs] == [
        ("site:10-first", kind, exit_code), ("site:20-next", "ok", 0)]
    if kind == "failed":
        assert "broken" in runs[0].output
    else:
        assert runs[0].output.startswith("refused, not run:")
        assert "group/world writable (mode 0775)" in runs[0].output
    rec = history_json(root)
    assert rec["status"] == "failed"
    assert [(h["name"], h["status"]) for h in rec["hooks"]] == [
        ("site:10-first", kind), ("site:20-next", "ok")]
    assert f"failed (site:10-first {kind}, site:20-next ok)" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["failed", "refused"])
def test_stop_on_failure_skips_the_next_and_retry_runs_it(root, capsys, kind):
    write_rc_conf(root, hooks_clone="site", hooks_first_seen="", hook_stop_on_failure="YES")
    first_hook(root, kind)
    add_hook(root, "20-next", NEXT)
    assert clone(root) == exitcodes.PENDING_OR_FAILED
    assert not ran(root, "next-ran")
    ch = last_change(root)
    assert ch.status == "failed"
    runs = ch.latest_hooks()
    assert [(r.name, r.status, r.exit_code) for r in runs] == [
        ("site:10-first", kind, 3 if kind == "failed" else None),
        ("site:20-next", "skipped", None)]
    assert runs[1].output == STOP_MSG
    assert [(h["name"], h["status"]) for h in history_json(root)["hooks"]] == [
        ("site:10-first", kind), ("site:20-next", "skipped")]
    # skipped is not ok: once the first hook is fixed, retry runs both
    add_hook(root, "10-first", "true")
    capsys.readouterr()
    assert handler.retry(root) == exitcodes.OK
    assert ran(root, "next-ran")
    ch = last_change(root)
    assert ch.status == "done"
    assert [(r.name, r.status, r.attempt) for r in ch.latest_hooks()] == [
        ("site:10-first", "ok", 2), ("site:20-next", "ok", 2)]
    assert "done (site:10-first ok, site:20-next ok)" in capsys.readouterr().out
