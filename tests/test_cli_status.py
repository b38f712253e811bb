"""vmgenctl status, history, check, retry, wait: via click's runner and the console script."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from conftest import set_guid, write_kernel
from handler_hooks import RecordingHook

from vmgenc_tools import config, exitcodes, handler
from vmgenc_tools.cli import app
from vmgenc_tools.generation import Generation

G0 = "324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87"
G2 = "11111111-2222-3333-4444-555555555555"
G3 = "66666666-7777-4888-9999-aaaaaaaaaaaa"
VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")
RECORD_FIELDS = {"id", "detected_at", "source", "old_guid", "new_guid", "class", "status",
                 "hooks"}
HOOK_FIELDS = {"name", "status", "exit_code", "duration_s"}


@pytest.fixture
def root(kernel_root, trusted_rc_conf):
    """A root whose per-class hook lists are empty, so no hook runner is needed."""
    trusted_rc_conf(kernel_root, vmgenc_hooks_clone="", vmgenc_hooks_restore="",
                    vmgenc_hooks_platform_restart="", vmgenc_hooks_unknown="")
    return kernel_root


def cli(root, *args, env=None):
    return CliRunner().invoke(app, ["--root", root, *args], env=env)


def script(root, *args, **kw):
    return subprocess.run([VMGENCTL, "--root", root, *args], capture_output=True, text=True,
                          timeout=60, **kw)


def fail_change(root, guid=G2):
    """Record ``guid`` as a clone whose one hook failed (the in-process handler, simple hooks)."""
    set_guid(root, guid)
    cfg = config.from_vars({"vmgenc_hooks_clone": "site"}, root)
    log = os.path.join(root, "hooks.log")
    return handler.check(root, config=cfg, planner=lambda c, k: [
        RecordingHook("ok1", log), RecordingHook("bad", log, fail=True)])


def assert_record(rec):
    assert set(rec) >= RECORD_FIELDS
    assert isinstance(rec["id"], int)
    t = datetime.fromisoformat(rec["detected_at"])
    assert t.utcoffset() == timedelta(0)
    assert rec["source"] in ("boot", "devd", "manual")
    assert rec["status"] in ("pending", "done", "failed")
    assert rec["class"] in config.CLASSES + ("no-id",)
    Generation.from_text(rec["new_guid"])
    if rec["class"] == "first-seen":
        assert rec["old_guid"] is None
    else:
        Generation.from_text(rec["old_guid"])
    for h in rec["hooks"]:
        assert set(h) >= HOOK_FIELDS
        assert h["status"] in ("ok", "failed", "timeout", "skipped", "refused", "running")


# -- status ---------------------------------------------------------------------------------


def test_status_before_any_check_is_unrecorded_exit_1(root):
    r = cli(root, "status")
    assert r.exit_code == 1
    assert f"vmgenc0: {G0}" in r.output and "not recorded yet" in r.output


def test_status_settled_text_and_json(root):
    assert cli(root, "check").exit_code == 0
    r = cli(root, "status")
    assert r.exit_code == 0 and "state: settled" in r.output and "first-seen" in r.output
    r = cli(root, "status", "--json")
    assert r.exit_code == 0
    st = json.loads(r.output)
    assert st["state"] == "settled" and st["guid"] == G0 and st["guids"] == [G0]
    assert st["guid_hex"] == Generation.parse(G0).hex and st["pending"] == []
    assert_record(st["last_change"])


def test_status_failed_and_pending_exit_1(root):
    cli(root, "check")
    assert fail_change(root) == 1
    st = json.loads(cli(root, "status", "--json").output)
    assert st["state"] == "failed"
    assert cli(root, "status").exit_code == 1
    assert "vmgenctl retry" in cli(root, "status").output
    set_guid(root, G3)  # changed, not yet checked
    r = cli(root, "status", "--json")
    assert r.exit_code == 1 and json.loads(r.output)["state"] == "unrecorded"


def test_status_pending_after_an_interrupted_run(root):
    cli(root, "check")
    set_guid(root, G2)

    class Killed(BaseException):
        pass

    def die(ctx):
        raise Killed()

    cfg = config.from_vars({"vmgenc_hooks_clone": "site"}, root)
    with pytest.raises(Killed):
        handler.check(root, config=cfg, planner=lambda c, k: [
            RecordingHook("a", os.path.join(root, "l"), action=die)])
    r = cli(root, "status")
    assert r.exit_code == 1 and "interrupted" in r.output
    st = json.loads(cli(root, "status", "--json").output)
    assert st["state"] == "pending" and [p["new_guid"] for p in st["pending"]] == [G2]


def test_status_json_shows_a_hook_running_then_its_attempt_and_output(root):
    """vmgenctl(8): ``running`` while a reconcile runs the hook; ``attempt`` and ``output``."""
    cli(root, "check")
    set_guid(root, G2)
    seen = []

    def look(ctx):
        r = cli(root, "status", "--json")
        seen.append((r.exit_code, json.loads(r.stdout)))

    cfg = config.from_vars({"vmgenc_hooks_clone": "site"}, root)
    log = os.path.join(root, "hooks.log")
    assert handler.check(root, config=cfg, planner=lambda c, k: [
        RecordingHook("a", log, action=look), RecordingHook("bad", log, fail=True)]) == 1
    (code, st), = seen
    assert code == exitcodes.PENDING_OR_FAILED and st["state"] == "pending"
    (hook,) = st["last_change"]["hooks"]
    assert (hook["name"], hook["status"], hook["attempt"]) == ("a", "running", 1)
    assert hook["exit_code"] is None and hook["duration_s"] is None
    assert [p["id"] for p in st["pending"]] == [st["last_change"]["id"]]
    rec = json.loads(cli(root, "history", "--json").output)[-1]
    assert [(h["name"], h["status"], h["attempt"]) for h in rec["hooks"]] == [
        ("a", "ok", 1), ("bad", "failed", 1)]
    assert rec["warning"] is None
    assert [h["output"] for h in rec["hooks"]] == ["fine\n", "boom\nit broke\n"]
    assert handler.retry(root, config=cfg, planner=lambda c, k: [
        RecordingHook("a", log), RecordingHook("bad", log, fail=True)]) == 1
    rec = json.loads(cli(root, "history", "--json").output)[-1]
    assert [(h["name"], h["attempt"]) for h in rec["hooks"]] == [("a", 1), ("bad", 2)]


def test_status_no_device_exit_3_one_line(tmp_path):
    r0 = str(tmp_path / "r")
    os.makedirs(r0)
    write_kernel(r0, [])
    p = script(r0, "status")
    assert p.returncode == exitcodes.NO_DEVICE
    assert p.stderr.startswith("vmgenctl: ") and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr
    assert cli(r0, "status").exit_code == exitcodes.NO_DEVICE


def test_status_bad_config_exit_6(kernel_root, trusted_rc_conf):
    trusted_rc_conf(kernel_root, vmgenc_runtime_class="sometimes")
    p = script(kernel_root, "status")
    assert p.returncode == exitcodes.CONFIG and "vmgenc_runtime_class" in p.stderr
    assert "Traceback" not in p.stderr


# -- history --------------------------------------------------------------------------------


def _three_changes(root):
    cli(root, "check")
    set_guid(root, G2)
    cli(root, "check")
    set_guid(root, G3)
    cli(root, "check", "--class", "restore")


def test_history_json_fields_oldest_first(root):
    _three_changes(root)
    r = cli(root, "history", "--json")
    assert r.exit_code == 0
    recs = json.loads(r.output)
    assert [x["new_guid"] for x in recs] == [G0, G2, G3]
    assert [x["class"] for x in recs] == ["first-seen", "clone", "restore"]
    assert recs[1]["old_guid"] == G0 and recs[2]["old_guid"] == G2
    for rec in recs:
        assert_record(rec)
    assert [x["new_guid"] for x in json.loads(cli(root, "history", "-n", "2",
                                                  "--json").output)] == [G2, G3]


def test_history_since(root):
    _three_changes(root)
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    assert json.loads(cli(root, "history", "--since", future, "--json").output) == []
    assert len(json.loads(cli(root, "history", "--since", "2000-01-01", "--json").output)) == 3
    assert len(json.loads(cli(root, "history", "--since", "2000-01-01T00:00:00Z",
                              "--json").output)) == 3
    r = cli(root, "history", "--since", "yesterday")
    assert r.exit_code == exitcodes.USAGE and "ISO-8601" in r.output


@pytest.mark.parametrize("since", ["", "  ", "yesterday", "9999-12-31T23:59:59-23:00"])
def test_history_since_empty_or_unparsable_is_a_usage_error(root, since):
    """Never silently ignored (an empty --since used to list everything); out of range once
    in UTC is the same one-line usage error, not a traceback."""
    _three_changes(root)
    want = (f"vmgenctl: --since: not an ISO-8601 time: {since!r} (e.g. 2024-05-01, "
            "2024-05-01T12:00 or 2024-05-01T12:00:00Z)\n")
    r = cli(root, "history", "--since", since, "--json")
    assert (r.exit_code, r.stdout, r.stderr) == (exitcodes.USAGE, "", want)
    p = script(root, "history", "--since", since)
    assert (p.returncode, p.stdout, p.stderr) == (exitcodes.USAGE, "", want)


@pytest.mark.parametrize("n", ["0", "-1", "two"])
def test_history_last_must_be_a_whole_number_from_1(root, n):
    _three_changes(root)
    for args in (["-n", n], [f"--last={n}"]):
        r = cli(root, "history", *args)
        assert r.exit_code == exitcodes.USAGE and r.stdout == "", (args, r.output)
        assert "no changes recorded" not in r.output
        assert r.stderr.startswith("vmgenctl: ") and r.stderr.count("\n") == 1
        assert "'-n' / '--last'" in r.stderr and "vmgenctl history --help" in r.stderr
    p = script(root, "history", "-n", n)
    assert p.returncode == exitcodes.USAGE and p.stdout == "" and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr
    assert [x["new_guid"] for x in json.loads(cli(root, "history", "-n", "1",
                                                  "--json").output)] == [G3]


def _table_changes(root):
    """first-seen, a clone whose hooks partly failed, a restore: the widest usual rows."""
    cli(root, "check")
    fail_change(root, G2)
    set_guid(root, G3)
    cli(root, "check", "--class", "restore")


def test_history_table_local_time_and_terminal_width(root):
    _three_changes(root)
    wide = cli(root, "history", env={"COLUMNS": "200"})
    assert wide.exit_code == 0
    lines = wide.output.splitlines()
    assert lines[0].split()[:6] == ["ID", "DETECTED", "SOURCE", "CLASS", "STATUS", "HOOKS"]
    assert f"{G0} -> {G2}" in wide.output
    h = json.loads(cli(root, "history", "--json").output)
    local = datetime.fromisoformat(h[0]["detected_at"]).astimezone().strftime(
        "%Y-%m-%d %H:%M:%S")
    assert local in lines[1]


# The narrowest rows with whole GUIDs for _table_changes: "ID  CLASS  STATUS  NEW GUID" is
# 2+2 + 10+2 ("first-seen") + 6+2 ("failed") + 36 = 60 columns.  Below that the GUID is cut.
MIN_WHOLE_GUID_WIDTH = 60


@pytest.mark.parametrize("columns,head", [
    (100, ["ID", "DETECTED", "CLASS", "STATUS", "HOOKS", "NEW", "GUID"]),
    (86, ["ID", "DETECTED", "CLASS", "STATUS", "HOOKS", "NEW", "GUID"]),  # HOOKS abbreviated
    (80, ["ID", "DETECTED", "CLASS", "STATUS", "NEW", "GUID"]),
    (MIN_WHOLE_GUID_WIDTH, ["ID", "CLASS", "STATUS", "NEW", "GUID"]),
])
@pytest.mark.parametrize("via", ["click", "script"])
def test_history_table_fits_the_width_with_whole_guids(root, columns, head, via):
    """Other columns give way (seconds, SOURCE, HOOKS, the time) so GUIDs stay whole."""
    _table_changes(root)
    env = {"COLUMNS": str(columns)}
    if via == "click":
        r = cli(root, "history", env=env)
        code, out = r.exit_code, r.output
    else:
        p = script(root, "history", env=dict(os.environ, **env))
        code, out = p.returncode, p.stdout
    assert code == 0, out
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0].split() == head, out
    assert all(len(ln) <= columns for ln in lines), [len(ln) for ln in lines]
    for line, guid in zip(lines[1:], (G0, G2, G3)):
        assert line.endswith(f"  {guid}"), line
    assert "~" not in out
    if "DETECTED" in head:  # without seconds once SOURCE has to go
        t = json.loads(cli(root, "history", "--json").output)[1]["detected_at"]
        local = datetime.fromisoformat(t).astimezone()
        assert f"  {local:%Y-%m-%d %H:%M}  clone" in lines[2]
    if "HOOKS" in head:
        assert ("1/2 ok" if columns < 94 else "1 ok, 1 failed") in lines[2]


def test_history_table_cuts_guids_only_below_the_minimum(root):
    _table_changes(root)
    r = cli(root, "history", env={"COLUMNS": str(MIN_WHOLE_GUID_WIDTH - 1)})
    lines = r.output.splitlines()
    assert all(len(ln) <= MIN_WHOLE_GUID_WIDTH - 1 for ln in lines), r.output
    assert G3 not in r.output and lines[3].endswith(f"  {G3[:34]}~")
    r = cli(root, "history", env={"COLUMNS": "20"})  # the GUID keeps 8 columns: wider than 20
    assert r.output.splitlines()[3].endswith(f"  {G3[:7]}~")


def test_history_csv(root):
    _three_changes(root)
    r = cli(root, "history", "--csv")
    rows = list(csv.DictReader(io.StringIO(r.output)))
    assert [x["new_guid"] for x in rows] == [G0, G2, G3]
    assert rows[0]["old_guid"] == "" and rows[1]["new_guid_hex"] == Generation.parse(G2).hex
    assert cli(root, "history", "--csv", "--json").exit_code == exitcodes.USAGE


def test_history_empty_and_unusable(root):
    r = cli(root, "history")
    assert r.exit_code == 0 and "no changes recorded" in r.output
    assert json.loads(cli(root, "history", "--json").output) == []
    d = os.path.join(root, "var/db/vmgenc")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "history.db"), "wb") as f:
        f.write(b"rubbish" * 999)
    p = script(root, "history")
    assert p.returncode == exitcodes.STATE and p.stderr.count("\n") == 1
    assert "Traceback" not in p.stderr


# -- check, retry, wait ---------------------------------------------------------------------


def test_check_through_click_and_the_console_script_agree(root):
    r = cli(root, "check")
    assert r.exit_code == 0 and "first-seen" in r.output
    for args, code in ((["check"], 0), (["check", "--expect", G0], 0),
                       (["check", "--expect", G2], 4), (["check", "--expect", "zz"], 2),
                       (["check", "--source", "boot", "--dry-run"], 0)):
        via_click = cli(root, *args)
        via_script = script(root, *args)
        assert (via_click.exit_code, via_script.returncode) == (code, code), args
    p = script(root, "check", "--expect", G2)
    assert p.stderr == f"vmgenctl: the generation is {G0}, not {G2}\n"


def test_check_records_and_dry_run(root):
    cli(root, "check")
    set_guid(root, G2)
    r = cli(root, "check", "--dry-run")
    assert r.exit_code == 0 and f"-> {G2} as clone" in r.output
    r = cli(root, "check", "--source", "boot", "--class", "unknown")
    assert r.exit_code == 0 and "#2 unknown" in r.output
    assert cli(root, "check", "--class", "bogus").exit_code == exitcodes.USAGE


def test_check_env_root(root):
    p = subprocess.run([VMGENCTL, "check"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, VMGENC_ROOT=root))
    assert p.returncode == 0 and "first-seen" in p.stdout


def test_retry(root):
    cli(root, "check")
    r = cli(root, "retry")
    assert r.exit_code == 0 and "nothing to retry" in r.output
    fail_change(root)
    # the configured hook list for clone is empty here: retry finds nothing left to fail
    r = cli(root, "retry")
    assert r.exit_code == 0 and "#2 clone" in r.output and ": done" in r.output
    assert json.loads(cli(root, "status", "--json").output)["state"] == "settled"


def test_retry_still_failing_is_exit_1(root):
    cli(root, "check")
    fail_change(root)
    cfg = config.from_vars({"vmgenc_hooks_clone": "site"}, root)
    assert handler.retry(root, config=cfg, planner=lambda c, k: [
        RecordingHook("bad", os.path.join(root, "l"), fail=True)]) == 1


def test_wait_timeout_and_settle(root):
    cli(root, "check")
    r = cli(root, "wait", "--timeout", "0.2")
    assert r.exit_code == exitcodes.TIMEOUT

    def later():
        time.sleep(0.3)
        set_guid(root, G2)
        time.sleep(0.2)
        handler.check(root, config=config.from_vars({"vmgenc_hooks_clone": ""}, root))

    t = threading.Thread(target=later)
    t.start()
    try:
        r = cli(root, "wait", "--timeout", "30")
    finally:
        t.join()
    assert r.exit_code == 0
    assert cli(root, "wait", "--since", G0, "--timeout", "5").exit_code == 0
    assert cli(root, "wait", "--since", Generation.parse(G0).hex, "--timeout", "0").exit_code == 0
    assert cli(root, "wait", "--since", G2, "--timeout", "0").exit_code == exitcodes.TIMEOUT
    assert cli(root, "wait", "--since", "nope").exit_code == exitcodes.USAGE


@pytest.mark.parametrize("since", ["nope", ""])
def test_wait_bad_since_names_the_option(root, since):
    """An empty --since is not "the current one": it is a bad GUID too."""
    cli(root, "check")
    want = (f"vmgenctl: --since: not a GUID: {since!r} (expected 8-4-4-4-12 hex digits, "
            "e.g. 324e6eaf-d1d1-4bf6-bf41-b9bb6c91fb87)\n")
    r = cli(root, "wait", "--since", since, "--timeout", "0")
    assert (r.exit_code, r.stdout, r.stderr) == (exitcodes.USAGE, "", want)
    p = script(root, "wait", "--since", since, "--timeout", "0")
    assert (p.returncode, p.stdout, p.stderr) == (exitcodes.USAGE, "", want)


def test_wait_settles_on_failed_hooks_exit_0_with_a_note(root):
    """Settled is settled (design §3: 0 or 5): failed hooks are a note on stderr from wait
    and exit 1 from status."""
    cli(root, "check")
    fail_change(root)
    r = cli(root, "wait", "--since", G0, "--timeout", "1")
    p = script(root, "wait", "--since", G0, "--timeout", "1")
    for code, out, err in ((r.exit_code, r.stdout, r.stderr), (p.returncode, p.stdout, p.stderr)):
        assert (code, out) == (exitcodes.OK, "")
        assert err.startswith("vmgenctl: ") and err.count("\n") == 1, err
        assert G2 in err and "hooks failed" in err and "vmgenctl retry" in err
    assert cli(root, "status").exit_code == exitcodes.PENDING_OR_FAILED


def test_wait_console_script_timeout(root):
    cli(root, "check")
    p = script(root, "wait", "--timeout", "0.1")
    assert p.returncode == exitcodes.TIMEOUT
    assert p.stderr.startswith("vmgenctl: timed out after 0.1 s: still generation ")
    assert p.stderr.count("\n") == 1


def failing_site_hook(root: str, trusted_rc_conf) -> str:
    """A trusted site hook, run for clones, that fails until ``fixed`` exists; returns it."""
    hooks = os.path.join(root, "usr/local/etc/vmgenc/hooks.d")
    os.makedirs(hooks)
    for d in (root, *(os.path.join(root, *hooks[len(root) + 1:].split("/")[:i])
                      for i in range(1, 6))):
        os.chmod(d, 0o755)
    hook = os.path.join(hooks, "20-needs-fix")
    with open(hook, "w") as f:
        f.write(f'#!/bin/sh\n[ -e "{root}/fixed" ] || {{ echo "not fixed"; exit 9; }}\n')
    os.chmod(hook, 0o755)
    trusted_rc_conf(root, vmgenc_hooks_clone="site", vmgenc_hooks_first_seen="")
    return hook


@pytest.mark.parametrize("via", ["click", "script"])
def test_check_and_retry_exit_1_while_a_hook_fails(kernel_root, trusted_rc_conf, via):
    failing_site_hook(kernel_root, trusted_rc_conf)

    def run(*args):
        if via == "click":
            r = cli(kernel_root, *args)
            return r.exit_code, r.output
        p = script(kernel_root, *args)
        return p.returncode, p.stdout + p.stderr

    assert run("check")[0] == 0                               # first-seen: no hooks
    set_guid(kernel_root, G2)
    code, out = run("check")
    assert code == exitcodes.PENDING_OR_FAILED and "failed" in out
    assert run("check")[0] == exitcodes.PENDING_OR_FAILED     # settled as failed: still 1
    assert run("retry")[0] == exitcodes.PENDING_OR_FAILED
    code, out = run("status")
    assert code == exitcodes.PENDING_OR_FAILED and "site:20-needs-fix failed (exit 9)" in out
    rec = json.loads(run("history", "--json")[1])[-1]
    assert_record(rec)
    assert [(h["name"], h["status"], h["exit_code"]) for h in rec["hooks"]][-1] == (
        "site:20-needs-fix", "failed", 9)
    open(os.path.join(kernel_root, "fixed"), "w").close()
    assert run("retry")[0] == exitcodes.OK
    assert run("check")[0] == exitcodes.OK
    assert run("status")[0] == exitcodes.OK


def test_status_shows_every_unit_in_the_hypervisors_form(tmp_path):
    """Two units: text GUIDs (bytes_le, as QEMU's guid=) in the terminal, raw hex in --json."""
    r0 = str(tmp_path / "r")
    os.makedirs(r0)
    write_kernel(r0, [G0, G2])
    r = cli(r0, "status")
    assert r.exit_code == 1
    assert f"vmgenc0: {G0}\nvmgenc1: {G2}\n" in r.output
    st = json.loads(cli(r0, "status", "--json").output)
    assert st["guids"] == [G0, G2] and st["guid_hex"] == "0x" + Generation.parse(G0).raw.hex()
