"""node_exporter textfile metrics: off by default, atomic, right numbers."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import set_guid
from handler_hooks import RecordingHook, make_config

from vmgenc_tools import handler, log, metrics
from vmgenc_tools.history import History

G2 = "11111111-2222-3333-4444-555555555555"
LINE = re.compile(r'^([a-z_]+)(\{class="[a-z-]+"\})? (-?[0-9.]+)$')
PROM = "/var/tmp/node_exporter/vmgenc.prom"


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@pytest.fixture
def mroot(kernel_root):
    os.makedirs(os.path.join(kernel_root, "var/tmp/node_exporter"))
    return kernel_root


def test_off_by_default(mroot):
    cfg = make_config(mroot)
    handler.check(mroot, config=cfg, planner=lambda c, k: [])
    assert os.listdir(os.path.join(mroot, "var/tmp/node_exporter")) == []
    with History.open(cfg.db_path) as h:
        assert metrics.write(cfg, h) is None


def test_written_after_every_reconcile(mroot, tmp_path):
    cfg = make_config(mroot, metrics_file=PROM)
    logfile = str(tmp_path / "l")
    fail = [True]

    def plan(config, cls):
        return [RecordingHook("a", logfile), RecordingHook("b", logfile, fail=fail[0])]

    handler.check(mroot, config=cfg, planner=plan)
    path = os.path.join(mroot, PROM.lstrip("/"))
    m = parse(read(path))
    assert m['vmgenc_generation_changes_total{class="first-seen"}'] == 1
    assert m['vmgenc_generation_changes_total{class="clone"}'] == 0
    assert m["vmgenc_pending"] == 0 and m["vmgenc_hooks_failed"] == 0 and m["vmgenc_no_id"] == 0
    set_guid(mroot, G2)
    handler.check(mroot, config=cfg, planner=plan)
    m = parse(read(path))
    assert m['vmgenc_generation_changes_total{class="clone"}'] == 1
    assert m["vmgenc_hooks_failed"] == 1
    with History.open(cfg.db_path) as h:
        last = h.last_change()
    ts = datetime.fromisoformat(last.detected_at).timestamp()
    assert abs(m["vmgenc_last_change_timestamp_seconds"] - ts) < 1e-3
    fail[0] = False
    handler.retry(mroot, config=cfg, planner=plan)
    assert parse(read(path))["vmgenc_hooks_failed"] == 0
    assert sorted(os.listdir(os.path.dirname(path))) == ["vmgenc.prom"]  # no temp files left
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_every_metric_has_help_and_type():
    text = metrics.render({"clone": 2}, 1700000000.5, 0, 1, False)
    names = {ln.split()[0].split("{")[0] for ln in text.splitlines() if not ln.startswith("#")}
    for n in names:
        assert f"# HELP {n} " in text and f"# TYPE {n} " in text
    assert parse(text)["vmgenc_pending"] == 1


def test_a_failed_write_leaves_the_old_file_and_no_temp(mroot, mocker):
    path = os.path.join(mroot, PROM.lstrip("/"))
    metrics.write_file(path, "old 1\n")
    mocker.patch("vmgenc_tools.metrics.os.fsync", side_effect=OSError(errno.ENOSPC, "full"))
    with pytest.raises(OSError):
        metrics.write_file(path, "new 2\n")
    assert read(path) == "old 1\n"
    assert os.listdir(os.path.dirname(path)) == ["vmgenc.prom"]


def test_unwritable_metrics_do_not_fail_the_reconcile(kernel_root):
    cfg = make_config(kernel_root, metrics_file="/no/such/dir/vmgenc.prom")
    sink = log.capture()
    try:
        assert handler.check(kernel_root, config=cfg, planner=lambda c, k: []) == 0
    finally:
        log.stop_capture(sink)
    assert any(level == "warning" and "metrics" in m for level, m in sink)


def test_short_writes_are_completed_and_mode_ignores_umask(mroot, mocker):
    path = os.path.join(mroot, PROM.lstrip("/"))
    real_write = os.write
    calls = []

    def short(fd, data):
        calls.append(len(data))
        return real_write(fd, bytes(data[:7]))  # a pipe-like partial write

    text = metrics.render({"clone": 3}, 1700000000.0, 2, 1, False)
    old = os.umask(0o077)
    try:
        mocker.patch("vmgenc_tools.metrics.os.write", side_effect=short)
        metrics.write_file(path, text)
    finally:
        os.umask(old)
    assert len(calls) > 1 and read(path) == text
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


VMGENCTL = os.path.join(os.path.dirname(sys.executable), "vmgenctl")


@pytest.mark.parametrize("knob", [None, PROM])
def test_console_script_check_writes_metrics_only_when_configured(kernel_root, knob):
    """Through ``vmgenctl check`` and rc.conf, as an admin would turn it on."""
    os.makedirs(os.path.join(kernel_root, "var/tmp/node_exporter"))
    lines = ['vmgenc_hooks_first_seen=""']
    if knob:
        lines.append(f'vmgenc_metrics_file="{knob}"')
    os.makedirs(os.path.join(kernel_root, "etc"), exist_ok=True)
    with open(os.path.join(kernel_root, "etc/rc.conf"), "w") as f:
        f.write("\n".join(lines) + "\n")
    p = subprocess.run([VMGENCTL, "--root", kernel_root, "check"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    proms = [os.path.join(d, f) for d, _, fs in os.walk(kernel_root) for f in fs
             if f.endswith(".prom")]
    if knob is None:
        assert proms == []
        return
    assert proms == [os.path.join(kernel_root, knob.lstrip("/"))]
    m = parse(read(proms[0]))
    for name in ('vmgenc_generation_changes_total{class="first-seen"}',
                 "vmgenc_last_change_timestamp_seconds", "vmgenc_hooks_failed",
                 "vmgenc_pending"):
        assert name in m, name
    assert m['vmgenc_generation_changes_total{class="first-seen"}'] == 1
    assert m["vmgenc_last_change_timestamp_seconds"] > 0
